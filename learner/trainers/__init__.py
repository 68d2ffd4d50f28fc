"""The four ML stages (reward model, PPO, SFT, evaluation) behind one small interface, so the
cycle can run them in-process, launched as separate (multi-process) jobs, or faked.

``protocol``: the jobs, outcomes and the ``Trainers`` interface; ``in_process``: the real
trainers; ``launched`` + ``wire`` + ``stage_worker``: the same trainers under a launcher;
``fake``: millisecond stand-ins for tests of the service; ``factory``: which one the settings
ask for.
"""

from learner.trainers.factory import make_trainers
from learner.trainers.fake import FakeTrainers, write_fake_adapter
from learner.trainers.in_process import RealTrainers
from learner.trainers.protocol import (
    EvalJob,
    EvalOutcome,
    PPOJob,
    RewardJob,
    SFTJob,
    Trainers,
    TrainOutcome,
)

__all__ = [
    "EvalJob",
    "EvalOutcome",
    "FakeTrainers",
    "PPOJob",
    "RealTrainers",
    "RewardJob",
    "SFTJob",
    "TrainOutcome",
    "Trainers",
    "make_trainers",
    "write_fake_adapter",
]
