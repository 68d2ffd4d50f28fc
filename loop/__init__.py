"""Closed loop around the service: simulated users, efficacy evaluation, the live demo.

Talks to serving and learner only over their public contracts (HTTP API, Kafka topics, the
``serve`` / ``learner`` command lines and their ``SERVING_*`` / ``LEARNER_*`` settings); imports
``schemas`` and ``common`` but never ``serving`` or ``learner`` (see docs/loop.md).
"""
