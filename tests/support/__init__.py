"""Test utilities shared across test packages (TCP proxy, adapter builders, Kafka readers)."""
