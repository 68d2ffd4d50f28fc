"""A preference that is not a surface count: a small language model judges each answer.

The utility of an answer is the judge's log-odds of answering "Yes" rather than "No" when asked
whether the answer is helpful and correct for the question (an LLM-as-a-judge score; Zheng et
al. 2023, "Judging LLM-as-a-Judge", https://arxiv.org/abs/2306.05685). Nothing in the learner
knows this function; it exists to check that the reward-model recipe learns a preference it was
not tuned for. By default the judge is the embedded SmolLM2 (the only model this machine has);
``RLHF_JUDGE_MODEL_DIR`` names another local model directory.

Name it on the command line as ``loop.judge:judge``. It needs torch and transformers, so it is
meant for offline benchmarks (``bench/rm_sweep.py``), not for many concurrent simulated users.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any

from loop.preferences import PreferenceOutcome, outcome_from_utilities

QUESTION = (
    "Here is a question and an answer.\n\nQuestion: {prompt}\n\nAnswer: {answer}\n\n"
    "Is the answer helpful and correct? Reply with Yes or No."
)


class Judge:
    """Utility = log P(Yes) - log P(No) of the judge's first reply token (cached per answer)."""

    name = "judge"
    rewrite = None
    neutral = 0.0

    def __init__(self, model_dir: str | None = None, max_answer_chars: int = 2000) -> None:
        self.model_dir = model_dir or os.environ.get("RLHF_JUDGE_MODEL_DIR", "embedded")
        self.max_answer_chars = max_answer_chars
        self._cache: dict[tuple[str, str], float] = {}

    @cached_property
    def _model(self) -> tuple[Any, Any, int, int]:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from common.embedded_model import resolve_model_dir

        path = resolve_model_dir(self.model_dir)
        tokenizer = AutoTokenizer.from_pretrained(str(Path(path)))
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
        yes = tokenizer("Yes", add_special_tokens=False)["input_ids"][0]
        no = tokenizer("No", add_special_tokens=False)["input_ids"][0]
        return model, tokenizer, yes, no

    def utilities(self, prompt: str, answers: list[str]) -> list[float]:
        missing = [a for a in answers if (prompt, a) not in self._cache]
        if missing:
            for answer, score in zip(missing, self._score(prompt, missing), strict=True):
                self._cache[(prompt, answer)] = score
        return [self._cache[(prompt, a)] for a in answers]

    def _score(self, prompt: str, answers: list[str]) -> list[float]:
        import torch

        model, tokenizer, yes, no = self._model
        texts = [
            tokenizer.apply_chat_template(
                [
                    {
                        "role": "user",
                        "content": QUESTION.format(
                            prompt=prompt, answer=a[: self.max_answer_chars]
                        ),
                    }
                ],
                add_generation_prompt=True,
                tokenize=False,
            )
            for a in answers
        ]
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        positions = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)  # skip left padding
        with torch.no_grad():
            logits = model(**batch, position_ids=positions).logits[:, -1]  # (B, V) next token
        logp = torch.log_softmax(logits.float(), dim=-1)
        return (logp[:, yes] - logp[:, no]).tolist()

    def __call__(self, prompt: str, answers: list[str]) -> PreferenceOutcome:
        return outcome_from_utilities(self.utilities(prompt, answers))


judge = Judge()
