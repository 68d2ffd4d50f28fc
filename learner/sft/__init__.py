"""Supervised fine-tuning (LoRA) on demonstrations; the result is the policy's starting adapter."""
