"""Serving: the OpenAI-compatible chat API with paired answers, feedback, event logging and
adapter hot-swap. Depends on ``schemas`` and ``common``; never on ``learner``."""
