"""Development and test infrastructure, not part of either service at run time: the dev
Kafka-protocol broker with its local S3 shim (``rlhf-broker``), and the tiny random models the
tests, benchmarks and fault scenarios load in place of the real one."""
