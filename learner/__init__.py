"""Learner: feedback ingestion, reward model, LoRA PPO, SFT and gated adapter publishing.
Depends on ``schemas`` and ``common``; never on ``serving``."""
