"""Runtime pieces both services use that are not wire contracts: locating/materialising the
model, the development Kafka broker, Kafka client helpers, logging set-up.

Like ``schemas``, this package imports nothing from ``serving`` or ``learner``.
"""
