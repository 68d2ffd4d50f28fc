"""Per-cycle report: a PNG with the reward model's training curve, PPO reward and KL per step,
and accuracy / KL / reward gain across versions, plus the numbers as JSON, in
``{data_dir}/reports/`` (matplotlib, Agg backend: no display needed).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from learner.checkpoint import CycleCheckpoint
from learner.store import TrainingStore

logger = logging.getLogger(__name__)


def _series(rows: list[dict[str, float]], key: str) -> tuple[list[float], list[float]]:
    pts = [(r.get("step", i + 1), r[key]) for i, r in enumerate(rows) if key in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def write_report(data_dir: Path, ckpt: CycleCheckpoint, store: TrainingStore) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = data_dir / "reports"
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"cycle-{ckpt.cycle_id:04d}-" + (ckpt.version or "rejected").replace("@", "-")
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    fig.suptitle(f"cycle {ckpt.cycle_id}: {ckpt.outcome} ({ckpt.reason})", fontsize=10)
    _plot_steps(
        axes[0][0],
        ckpt.history.get("reward", []),
        ["accuracy", "loss"],
        "reward model (train steps)",
    )
    _plot_steps(
        axes[0][1],
        ckpt.history.get("ppo", []),
        ["objective/scores", "objective/rlhf_reward"],
        "PPO reward per step",
    )
    _plot_steps(axes[1][0], ckpt.history.get("ppo", []), ["objective/kl"], "PPO KL per step")
    _plot_versions(axes[1][1], store.cycles(50))
    fig.tight_layout()
    png = out_dir / f"{name}.png"
    fig.savefig(png, dpi=80)
    plt.close(fig)
    (out_dir / f"{name}.json").write_text(json.dumps(ckpt.model_dump(mode="json"), indent=2))
    logger.info("report written to %s", png)
    return png


def _plot_steps(ax: Any, rows: list[dict[str, float]], keys: list[str], title: str) -> None:
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("step")
    drawn = False
    for key in keys:
        xs, ys = _series(rows, key)
        if xs:
            ax.plot(xs, ys, marker=".", label=key)
            drawn = True
    if drawn:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no data (stage not run)", ha="center", transform=ax.transAxes)


def _plot_versions(ax: Any, cycles: list[dict[str, Any]]) -> None:
    from matplotlib.ticker import MaxNLocator

    done = sorted((c for c in cycles if c["finished"]), key=lambda c: c["cycle_id"])
    ax.set_title("across cycles (x = cycle id; o = published)", fontsize=9)
    ax.set_xlabel("cycle")
    for key, label in (
        ("reward/accuracy", "RM held-out accuracy"),
        ("eval/kl", "mean KL"),
        ("eval/reward_gain", "reward gain"),
    ):
        pts = [
            (c["cycle_id"], c["metrics"][key], c["outcome"]) for c in done if key in c["metrics"]
        ]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="x", label=label)
            pub = [p for p in pts if p[2] == "published"]
            ax.scatter(
                [p[0] for p in pub],
                [p[1] for p in pub],
                marker="o",
                facecolors="none",
                edgecolors="black",
            )
    if done:
        ax.legend(fontsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
