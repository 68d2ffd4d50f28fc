"""Generation engines behind one small protocol (``serving.engines.protocol.Engine``)."""
