"""``LEARNER_SANITY_PROMPTS`` reaches the evaluation as given, the empty list included (the
demo's tiny mode turns sanity prompts off with ``[]``; it used to fall back to the defaults)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from learner import evaluate as ev
from learner.trainers import EvalJob, RealTrainers
from tests.learner.factories import eval_result


def _captured_config(
    monkeypatch: pytest.MonkeyPatch, sanity: list[str], eval_cfg: dict[str, Any]
) -> Any:
    seen: dict[str, Any] = {}

    def fake_evaluate(*args: Any) -> ev.EvalResult:
        config = args[-1]
        seen["config"] = config
        return eval_result()

    monkeypatch.setattr(ev, "evaluate_policy", fake_evaluate)
    trainers = RealTrainers({}, {}, {}, eval_cfg, 0)
    trainers.evaluate(EvalJob(Path("base"), Path("policy"), Path("reward"), [], sanity))
    return seen["config"]


@pytest.mark.parametrize(
    ("sanity", "eval_cfg", "expected"),
    [
        ([], {}, ()),
        (["Hi?"], {}, ("Hi?",)),
        (["Hi?"], {"sanity_prompts": ["Own?"]}, ["Own?"]),  # LEARNER_EVAL_CONFIG wins
    ],
)
def test_sanity_prompts_setting_reaches_the_eval_config(
    monkeypatch: pytest.MonkeyPatch, sanity: list[str], eval_cfg: dict[str, Any], expected: Any
) -> None:
    config = _captured_config(monkeypatch, sanity, eval_cfg)
    assert config.sanity_prompts == expected
