"""A full learner cycle with the REAL trainers on the tiny model, through the real broker:
``learner run --max-cycles 1`` consumes served pairs, votes and a correction, runs SFT, the
reward model, PPO and the evaluation, publishes ``policy@v1`` and announces it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from common.embedded_model import model_dir_sha256
from devtools.broker import DevBroker
from learner.publish import AdapterStore
from schemas.codec import decode_event
from schemas.events import AdapterPublished, ChatMessage, EventBase, PairServed, SamplingParams
from tests.events import correction, pref, served
from tests.learner.kafka_helpers import produce
from tests.support.kafka_read import read_topic

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
FILLERS = ["the lazy dog", "have a nice day", "sure here is", "brown fox", "thanks", "hello"]


def traffic(n: int) -> list[EventBase]:
    """Pairs whose users always prefer the answer saying "four!": learnable preferences."""
    rng = random.Random(0)
    out: list[EventBase] = []
    for i in range(n):
        base = rng.choice(FILLERS)
        out.append(
            PairServed(
                pair_id=f"p{i}",
                user_id="u1",
                model="m",
                sampling=SamplingParams(max_tokens=8),
                messages=[ChatMessage(role="user", content=f"question {i % 12}?")],
                responses=[
                    served(f"p{i}-a", f"{base} {rng.choice(FILLERS)}"),
                    served(f"p{i}-b", f"{base} four! four!"),
                ],
                shown_order=[1, 0],
            )
        )
        out.append(pref(f"p{i}", choice="b", t=i))
    out.append(correction("p0-a", "four! four!"))
    return out


def test_one_real_cycle_publishes_a_loadable_version(
    fresh_broker: DevBroker, tmp_path: Path, tiny_model_dir: Path
) -> None:
    produce(fresh_broker.bootstrap, traffic(24))
    env = os.environ | {
        "PYTHONPATH": str(REPO),
        "LEARNER_KAFKA_BOOTSTRAP": fresh_broker.bootstrap,
        "LEARNER_DATA_DIR": str(tmp_path / "data"),
        "LEARNER_ADAPTER_STORE": str(tmp_path / "adapters"),
        "LEARNER_MODEL_DIR": str(tiny_model_dir),
        "LEARNER_MIN_NEW_COMPARISONS": "24",
        # The sanity gate judges the random tiny model's greedy answers, which are whitespace
        # or not by chance of its weights and PPO's samples: float32 keeps the run the one
        # this test was written on (bf16 training is tested in tests/learner/ml).
        "LEARNER_BASE_DTYPE": "float32",
        "LEARNER_METRICS_PORT": "0",
        "LEARNER_RM_MIN_ACCURACY": "0.75",  # the preferences are separable: the RM must learn
        # 6 held-out votes: the test against chance would demand 6 of 6; the threshold suffices.
        "LEARNER_RM_GATE_CONFIDENCE": "0",
        # A tiny random policy barely moves in 3 PPO steps (its held-out gain is often exactly
        # 0) and its KL scale is arbitrary: these two gates are unit-tested with fakes; here
        # they must not hide whether the real trainers run end to end through the service.
        "LEARNER_MIN_REWARD_GAIN": "-1e9",
        "LEARNER_KL_BUDGET": "1e9",
        "LEARNER_PPO_NUM_PROMPTS": "8",
        "LEARNER_EVAL_NUM_PROMPTS": "4",
        "LEARNER_REWARD_CONFIG": json.dumps(
            {"num_epochs": 4, "learning_rate": 5e-3, "eval_fraction": 0.25}
        ),
        "LEARNER_SFT_CONFIG": json.dumps({"num_epochs": 2, "learning_rate": 5e-3}),
        "LEARNER_PPO_CONFIG": json.dumps(
            {
                "num_steps": 3,
                "batch_size": 4,
                "mini_batch_size": 2,
                "max_new_tokens": 6,
                "learning_rate": 1e-2,
            }
        ),
        "LEARNER_EVAL_CONFIG": json.dumps(
            {"max_new_tokens": 6, "sanity_max_new_tokens": 6, "max_repeat_fraction": 1.0}
        ),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "learner.cli", "run", "--max-cycles", "1"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=500,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    store = AdapterStore(str(tmp_path / "adapters"), "policy")
    assert store.versions() == [1], proc.stderr[-3000:]
    assert store.verify(1) == []
    manifest = store.manifest(1)
    assert manifest.base_model_sha256 == model_dir_sha256(tiny_model_dir)
    assert manifest.reward_model_version == "reward@v1"
    assert manifest.event_count == 49 and manifest.config["sft_applied"] is True
    assert manifest.metrics["reward/accuracy"] >= 0.75
    for key in ("ppo/objective/kl", "eval/kl", "eval/reward_gain", "sft/loss"):
        assert key in manifest.metrics, key
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(manifest.files)
    assert list((tmp_path / "data" / "reports").glob("cycle-0001-policy-v1.png"))

    from peft import PeftModel

    from learner.modeling import load_base_model

    PeftModel.from_pretrained(load_base_model(tiny_model_dir), store.version_dir(1))

    ((_, raw),) = read_topic(fresh_broker.bootstrap, "rlhf.adapters", expect=1)
    event = decode_event(raw).event
    assert isinstance(event, AdapterPublished) and event.version == "policy@v1"
    assert event.manifest_sha256 == hashlib.sha256(store.manifest_bytes(1)).hexdigest()
