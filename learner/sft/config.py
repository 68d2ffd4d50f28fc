"""SFT options (TRL ``SFTConfig`` style: every field has a help string)."""

from __future__ import annotations

from dataclasses import dataclass

from learner.modeling import TrainOptions, option


@dataclass
class SFTConfig(TrainOptions):
    num_epochs: int = option(3, "Passes over the demonstrations.")
    batch_size: int = option(8, "Examples per micro-batch (per process under accelerate).")
    log_every: int = option(10, "Log progress every this many optimiser steps.")
