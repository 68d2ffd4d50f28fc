"""Kafka topic names (configurable per deployment) and which event kinds go where."""

from pydantic import BaseModel, ConfigDict


class Topics(BaseModel):
    """Topic names; both services take these from their settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    interactions: str = "rlhf.interactions"
    feedback: str = "rlhf.feedback"
    adapters: str = "rlhf.adapters"

    def all(self) -> list[str]:
        return [self.interactions, self.feedback, self.adapters]

    def for_kind(self, kind: str) -> str:
        """The topic an event of ``kind`` is produced to."""
        prefix = kind.split(".", 1)[0]
        by_prefix = {
            "pair": self.interactions,
            "response": self.interactions,
            "feedback": self.feedback,
            # Erasures travel with the feedback, which the learner reads in order with it.
            "user": self.feedback,
            "adapter": self.adapters,
        }
        if prefix not in by_prefix:
            raise ValueError(f"no topic for event kind {kind!r}")
        return by_prefix[prefix]


DEFAULT_TOPICS = Topics()
