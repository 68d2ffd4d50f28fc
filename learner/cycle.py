"""One training cycle, resumable stage by stage (docs/architecture.md, "What the service does").

Why one file (over 400 lines): the stages are steps of one resumable state machine; each reads
and writes the same checkpoint, and the resume rule (which stage runs next) must sit beside them.

    snapshot -> [sft on new corrections] -> reward model (all comparisons) -> gate accuracy
             -> PPO from the current published version -> evaluate -> gates -> publish
             -> announce (adapter.published) -> done

A reward model the gate can neither certify nor show worse than chance ("uncertain",
learner.gates.classify_reward_model) goes on, with the canary on and an independent evaluation
reward model, as a *guarded* cycle: its version starts as a guarded canary (learner.canary).

Every stage boundary saves a ``CycleCheckpoint`` (learner.checkpoint) holding the store
snapshot (offsets + seq high-water mark) the cycle trains on, the adapter directories finished
stages produced, and the next stage. After SIGKILL the daemon resumes the same cycle at that
stage on the same snapshot: no event is trained twice or skipped, and publishing is made
idempotent by reserving the version number in the checkpoint and recognising a version that
already carries this cycle's id.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from common.embedded_model import model_dir_sha256
from learner import crash_points, gates, metrics
from learner.canary import start_canary
from learner.checkpoint import (
    STAGES,
    CycleCheckpoint,
    Stage,
    load_checkpoint,
    save_checkpoint,
)
from learner.data import Prompt
from learner.publish import AdapterStore
from learner.publish.manifest import offset_ranges
from learner.publish.publisher import Publisher
from learner.settings import LearnerSettings
from learner.store import Snapshot, TrainingStore
from learner.store.queries import split_prompts
from learner.trainers import EvalJob, PPOJob, RewardJob, SFTJob, Trainers
from learner.trainers.factory import ppo_overrides
from schemas.versions import BASE, AdapterVersion

logger = logging.getLogger(__name__)

_RUNNABLE_STAGES: tuple[str, ...] = STAGES[:-1]  # "done" is where a cycle ends, not a stage


class CycleRunner:
    def __init__(
        self,
        settings: LearnerSettings,
        store: TrainingStore,
        adapters: AdapterStore,
        trainers: Trainers,
        base_model_dir: Path,
    ) -> None:
        self.s = settings
        self.store = store
        self.adapters = adapters
        self.trainers = trainers
        self.base = base_model_dir
        self.data_dir = Path(settings.data_dir)
        self._base_sha: str | None = None
        self.publisher = Publisher(settings, adapters, self.base_sha)
        self.started_at = time.time()
        metrics.CYCLE_TRIGGER.set(settings.min_new_comparisons)
        metrics.set_running_stage(None, _RUNNABLE_STAGES)

    # ---- when -------------------------------------------------------------------------------

    def pending(self) -> CycleCheckpoint | None:
        """The unfinished cycle a previous process left behind, if any."""
        ckpt = load_checkpoint(self.data_dir)
        return ckpt if ckpt is not None and ckpt.stage != "done" else None

    def new_comparisons(self) -> int:
        return self.store.count_new_comparisons(self.store.last_cycle_seq())

    def due(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        new = self.new_comparisons()
        metrics.NEW_COMPARISONS.set(new)
        if new >= self.s.min_new_comparisons:
            return True
        finished = [c["finished"] for c in self.store.cycles(1) if c["finished"]]
        since = finished[0] if finished else self.started_at
        period = self.s.cycle_period_seconds
        return new >= 1 and period > 0 and now - since >= period

    # ---- run --------------------------------------------------------------------------------

    def begin(self) -> CycleCheckpoint:
        snap = self.store.snapshot()
        prev = self.adapters.latest()
        prev_snap = prev.config.get("store_snapshot") if prev else None
        parent = prev.version if prev else None
        if self.s.canary:
            # Train on from what the users accepted: a rolled-back canary is not a parent.
            record = self.adapters.promoted()
            parent = record.version if record else None
        last = load_checkpoint(self.data_dir)
        cycle_id = max(self.store.next_cycle_id(), (last.cycle_id + 1) if last else 1)
        ckpt = CycleCheckpoint(
            cycle_id=cycle_id,
            snapshot=snap.to_json(),
            previous_snapshot=prev_snap,
            previous_max_seq=int(prev_snap["max_seq"]) if prev_snap else 0,
            parent_version=parent,
        )
        save_checkpoint(self.data_dir, ckpt)
        logger.info(
            "cycle %d: snapshot seq<=%d, parent %s",
            cycle_id,
            snap.max_seq,
            ckpt.parent_version or "base",
        )
        crash_points.crash_point("cycle.after_snapshot")
        return ckpt

    def run(self, ckpt: CycleCheckpoint | None = None) -> CycleCheckpoint:
        ckpt = ckpt or self.pending() or self.begin()
        self.store.record_cycle_start(ckpt.cycle_id, Snapshot.from_json(ckpt.snapshot).max_seq)
        started = time.perf_counter()
        bar = tqdm(
            total=len(STAGES) - 1,
            initial=STAGES.index(ckpt.stage),
            desc=f"cycle {ckpt.cycle_id}",
            unit="stage",
            mininterval=0,
        )
        try:
            while ckpt.stage != "done":
                stage: Stage = ckpt.stage
                bar.set_postfix_str(stage)
                metrics.set_running_stage(stage, _RUNNABLE_STAGES)
                logger.info("cycle %d: stage %s", ckpt.cycle_id, stage)
                t0 = time.perf_counter()
                ckpt = self._run_stage(stage, ckpt)
                metrics.STAGE_SECONDS.labels(stage).observe(time.perf_counter() - t0)
                save_checkpoint(self.data_dir, ckpt)
                bar.update(STAGES.index(ckpt.stage) - bar.n)
        finally:
            bar.close()
            metrics.set_running_stage(None, _RUNNABLE_STAGES)
        metrics.CYCLE_SECONDS.observe(time.perf_counter() - started)
        logger.info("cycle %d %s: %s", ckpt.cycle_id, ckpt.outcome, ckpt.reason)
        return ckpt

    def _stages(self) -> dict[Stage, Callable[[CycleCheckpoint], CycleCheckpoint]]:
        """Each stage and the step that runs it (``STAGES`` gives the order)."""
        return {
            "sft": self._sft,
            "reward": self._reward,
            "ppo": self._ppo,
            "evaluate": self._evaluate,
            "publish": self._publish,
            "announce": self._announce,
        }

    def _run_stage(self, stage: Stage, ckpt: CycleCheckpoint) -> CycleCheckpoint:
        try:
            return self._stages()[stage](ckpt)
        except Exception as exc:
            if stage == "announce":
                raise  # the version is published; only the event is missing: retry later
            # A trainer that fails on this snapshot would fail again on resume: reject the
            # cycle (kept for inspection) instead of looping on it.
            logger.exception("cycle %d: stage %s failed", ckpt.cycle_id, stage)
            return self._reject(ckpt, f"stage {stage} failed: {exc!r}"[:500])

    # ---- stages -----------------------------------------------------------------------------

    def workdir(self, ckpt: CycleCheckpoint) -> Path:
        return self.data_dir / "cycles" / f"cycle-{ckpt.cycle_id}"

    def _fresh(self, ckpt: CycleCheckpoint, name: str) -> Path:
        out = self.workdir(ckpt) / name
        if out.exists():  # a previous run of this stage died half way: start it over
            shutil.rmtree(out)
        out.mkdir(parents=True)
        return out

    def _parent_dir(self, ckpt: CycleCheckpoint) -> Path | None:
        if ckpt.parent_version is None:
            return None
        dest = self.workdir(ckpt) / "parent"
        if not (dest / "adapter_config.json").exists():
            self.adapters.download(AdapterVersion.parse(ckpt.parent_version).number, dest)
        return dest

    def _max_seq(self, ckpt: CycleCheckpoint) -> int:
        return Snapshot.from_json(ckpt.snapshot).max_seq

    def _sft(self, ckpt: CycleCheckpoint) -> CycleCheckpoint:
        examples = self.store.sft_examples(self._max_seq(ckpt), ckpt.previous_max_seq)
        if not (self.s.sft_on_corrections and examples):
            return ckpt.model_copy(update={"stage": "reward"})
        logger.info("cycle %d: SFT on %d new correction(s)", ckpt.cycle_id, len(examples))
        job = SFTJob(self.base, examples, self._fresh(ckpt, "sft"), self._parent_dir(ckpt))
        res = self.trainers.sft(job)
        crash_points.crash_point("cycle.after_sft")
        return ckpt.model_copy(
            update={
                "stage": "reward",
                "sft_adapter": str(res.adapter_dir),
                "metrics": ckpt.metrics | _prefixed("sft", res.metrics),
                "history": ckpt.history | {"sft": res.history},
            }
        )

    def _reward(self, ckpt: CycleCheckpoint) -> CycleCheckpoint:
        comparisons = self.store.comparisons(self._max_seq(ckpt))
        if not comparisons:
            return self._reject(ckpt, "no comparisons in the snapshot")
        ratings = self.store.ratings(self._max_seq(ckpt))
        logger.info(
            "cycle %d: reward model on %d comparison(s) and %d rating(s)",
            ckpt.cycle_id,
            len(comparisons),
            len(ratings),
        )
        res = self.trainers.reward(
            RewardJob(self.base, comparisons, self._fresh(ckpt, "reward"), ratings)
        )
        accuracy = res.metrics.get("accuracy")
        if accuracy is not None:
            metrics.LAST_RM_ACCURACY.set(accuracy)
        ckpt = ckpt.model_copy(
            update={
                "metrics": ckpt.metrics
                | _prefixed("reward", res.metrics)
                | {
                    "reward/comparisons": float(len(comparisons)),
                    "reward/ratings": float(len(ratings)),
                },
                "history": ckpt.history | {"reward": res.history},
            }
        )
        verdict = self._classify("reward_accuracy", res.metrics)
        if verdict.outcome == "contradicted":
            return self._reject(ckpt, verdict.reason)
        if verdict.outcome == "uncertain":
            closed = self._guarded_route_closed()
            if closed:
                return self._reject(ckpt, f"{verdict.reason}; {closed}")
            if not gates.leans_toward(res.metrics):
                why = "its held-out votes lean against it: no guarded canary"
                return self._reject(ckpt, f"{verdict.reason}; {why}")
            logger.warning(
                "cycle %d: reward model uncertain (%s): on as a guarded canary, the users' "
                "votes decide",
                ckpt.cycle_id,
                verdict.reason,
            )
            ckpt = ckpt.model_copy(update={"guarded": True})
        kept = _install(res.adapter_dir, self.data_dir / "reward" / f"v{ckpt.cycle_id}")
        judge: str | None = None
        if self.s.eval_reward_model == "independent":
            out = self._fresh(ckpt, "reward-eval")
            other = self.trainers.reward(
                RewardJob(self.base, comparisons, out, ratings, seed_offset=1)
            )
            dest = self.data_dir / "reward" / f"v{ckpt.cycle_id}-eval"
            judge = str(_install(other.adapter_dir, dest))
            ckpt = ckpt.model_copy(
                update={"metrics": ckpt.metrics | _prefixed("reward_eval", other.metrics)}
            )
            if ckpt.guarded:
                # The judge of the reward gain is all the gates have left: it must not be
                # shown worse than chance either.
                judged = self._classify("reward_eval_accuracy", other.metrics)
                if judged.outcome == "contradicted":
                    return self._reject(ckpt, f"independent reward model: {judged.reason}")
        crash_points.crash_point("cycle.after_reward")
        return ckpt.model_copy(
            update={
                "stage": "ppo",
                "reward_adapter": str(kept),
                "reward_eval_adapter": judge,
                "reward_version": str(AdapterVersion("reward", ckpt.cycle_id)),
            }
        )

    def _classify(self, gate: str, values: dict[str, float]) -> gates.RewardVerdict:
        verdict = gates.classify_reward_model_on(
            values, self.s.rm_min_accuracy, self.s.rm_gate_confidence
        )
        gates.count_reward_verdict(gate, verdict)
        return verdict

    def _guarded_route_closed(self) -> str | None:
        """Why an uncertain reward model may not go on to a guarded canary, or None.

        The canary is what judges such a model's policy, and the independent member's reward
        gain is the one evaluation gate that does not read the model PPO optimised."""
        needs = {
            "LEARNER_RM_GATE_UNCERTAIN=canary": self.s.rm_gate_uncertain == "canary",
            "LEARNER_CANARY=true": self.s.canary,
            "LEARNER_EVAL_REWARD_MODEL=independent": self.s.eval_reward_model == "independent",
        }
        missing = [name for name, ok in needs.items() if not ok]
        if not missing:
            return None
        return (
            "an uncertain reward model goes to a guarded canary only with the canary on and an "
            f"independent evaluation reward model (missing: {', '.join(missing)})"
        )

    def _ppo(self, ckpt: CycleCheckpoint) -> CycleCheckpoint:
        assert ckpt.reward_adapter is not None
        train, _ = self._prompt_split(ckpt)
        rng = random.Random(self.s.seed * 1_000_003 + ckpt.cycle_id)
        prompts = rng.sample(train, min(self.s.ppo_num_prompts, len(train)))
        init = Path(ckpt.sft_adapter) if ckpt.sft_adapter else self._parent_dir(ckpt)
        logger.info(
            "cycle %d: PPO on %d prompt(s) from %s",
            ckpt.cycle_id,
            len(prompts),
            "SFT adapter" if ckpt.sft_adapter else ckpt.parent_version or "base",
        )
        steps = self._ppo_steps(ckpt)
        out = self._fresh(ckpt, "ppo")
        res = self.trainers.ppo(
            PPOJob(self.base, Path(ckpt.reward_adapter), prompts, out, init, steps)
        )
        crash_points.crash_point("cycle.after_ppo")
        return ckpt.model_copy(
            update={
                "stage": "evaluate",
                "policy_adapter": str(res.adapter_dir),
                "metrics": ckpt.metrics
                | _prefixed("ppo", res.metrics)
                | {"ppo/prompts": float(len(prompts))},
                "history": ckpt.history | {"ppo": res.history},
            }
        )

    def _ppo_steps(self, ckpt: CycleCheckpoint) -> int | None:
        """PPO iterations in proportion to the new comparisons (None: the configured count).

        A cycle on little new feedback moves the policy a little: its reward model knows
        less, and optimising a weak reward model hard over-optimises it (Gao, Schulman, Hilton,
        "Scaling Laws for Reward Model Overoptimization", ICML 2023); it also keeps the time
        from the N-th comparison to the new version short when N is small.
        """
        per_step = self.s.ppo_comparisons_per_step
        if per_step <= 0:
            return None
        from learner.ppo.config import PPOConfig  # here: it imports torch

        new = len(self.store.comparisons(self._max_seq(ckpt), ckpt.previous_max_seq))
        cap = int(self.s.ppo_config.get("num_steps", PPOConfig.num_steps))
        return max(min(self.s.ppo_min_steps, cap), min(cap, -(-new // per_step)))

    def _prompt_split(self, ckpt: CycleCheckpoint) -> tuple[list[Prompt], list[Prompt]]:
        """Logged real prompts split by a stable hash: PPO never sees the held-out ones."""
        prompts = self.store.prompts(self._max_seq(ckpt))
        train, held = split_prompts(prompts, self.s.eval_prompt_fraction)
        if train is held:  # too few distinct prompts to split: the metrics say so
            logger.warning("only %d distinct prompt(s): evaluation is not held out", len(prompts))
        return train, held

    def _evaluate(self, ckpt: CycleCheckpoint) -> CycleCheckpoint:
        assert ckpt.policy_adapter and ckpt.reward_adapter
        train, held = self._prompt_split(ckpt)
        prompts = held[: self.s.eval_num_prompts]
        out = self.trainers.evaluate(
            EvalJob(
                self.base,
                Path(ckpt.policy_adapter),
                Path(ckpt.reward_eval_adapter or ckpt.reward_adapter),
                prompts,
                self.s.sanity_prompts,
            )
        )
        metrics.LAST_KL.set(out.kl)
        metrics.LAST_REWARD_GAIN.set(out.reward_gain)
        ckpt = ckpt.model_copy(
            update={
                "metrics": ckpt.metrics
                | _prefixed("eval", out.metrics)
                | {
                    "eval/heldout": float(train is not held),
                    "eval/independent_reward_model": float(ckpt.reward_eval_adapter is not None),
                }
            }
        )
        decisions = gates.eval_gates(
            out.reward_gain, out.kl, self.s.kl_budget, out.sanity_failures, self.s.min_reward_gain
        )
        failed = gates.first_failure(decisions)
        if failed:
            return self._reject(ckpt, failed.reason)
        crash_points.crash_point("cycle.after_evaluate")
        return ckpt.model_copy(update={"stage": "publish"})

    def _publish(self, ckpt: CycleCheckpoint) -> CycleCheckpoint:
        assert ckpt.policy_adapter is not None
        if ckpt.guarded and not self.s.canary and ckpt.version is None:
            # Restarted with the canary off: nothing would judge this policy. Once a version
            # is reserved, publishing it stays idempotent instead.
            return self._reject(ckpt, "guarded cycle, but the canary is now off")
        number = self._reserve_version(ckpt)
        version = self.publisher.version_name(number)
        if number in self.adapters.versions():  # published before a crash: keep it as is
            logger.info("cycle %d: %s already in the store", ckpt.cycle_id, version)
            data = self.adapters.manifest_bytes(number)
            return ckpt.model_copy(
                update={
                    "stage": "announce",
                    "version": version,
                    "uri": self.adapters.uri(number),
                    "manifest_sha256": hashlib.sha256(data).hexdigest(),
                }
            )
        self.adapters.cleanup_temp()
        snap = Snapshot.from_json(ckpt.snapshot)
        uri, sha = self.publisher.store(
            Path(ckpt.policy_adapter),
            version,
            parent_version=ckpt.parent_version,
            reward_model_version=ckpt.reward_version,
            offsets=offset_ranges(ckpt.previous_snapshot, snap),
            event_count=self.store.events_between(ckpt.previous_max_seq, snap.max_seq),
            metrics=ckpt.metrics,
            config=self._manifest_config(ckpt),
        )
        return ckpt.model_copy(
            update={"stage": "announce", "version": version, "uri": uri, "manifest_sha256": sha}
        )

    def _reserve_version(self, ckpt: CycleCheckpoint) -> int:
        """N = last visible version + 1, written to the checkpoint before any file is."""
        if ckpt.version is not None:
            number = AdapterVersion.parse(ckpt.version).number
            if number not in self.adapters.versions() or self._is_ours(number, ckpt):
                return number
        number = self.publisher.next_number()
        ckpt.version = self.publisher.version_name(number)
        save_checkpoint(self.data_dir, ckpt)
        return number

    def _is_ours(self, number: int, ckpt: CycleCheckpoint) -> bool:
        return self.adapters.manifest(number).config.get("cycle_id") == ckpt.cycle_id

    def _manifest_config(self, ckpt: CycleCheckpoint) -> dict[str, Any]:
        max_seq = int(ckpt.snapshot["max_seq"])
        return {
            "cycle_id": ckpt.cycle_id,
            # Every erasure consumed before this snapshot was honoured: the data this version
            # trained on holds none of those users' rows.
            "erasures_honoured": self.store.erasures(0, max_seq),
            "store_snapshot": ckpt.snapshot,
            "offset_epochs": {
                f"{p['topic']}[{p['partition']}]": p["epoch"] for p in ckpt.snapshot["positions"]
            },
            "sft_applied": ckpt.sft_adapter is not None,
            "gates": {
                "rm_min_accuracy": self.s.rm_min_accuracy,
                "rm_gate_confidence": self.s.rm_gate_confidence,
                # The reward model was uncertain: the users' votes judge this version.
                "guarded": ckpt.guarded,
                "kl_budget": self.s.kl_budget,
            },
            "trainers": self.s.trainers,
            "reward_config": self.s.reward_config,
            # The overrides PPO ran with, the KL stop derived from the budget included.
            "ppo_config": ppo_overrides(self.s),
            "sft_config": self.s.sft_config,
            "eval_config": self.s.eval_config,
            "ppo_num_prompts": self.s.ppo_num_prompts,
            "seed": self.s.seed,
        }

    def _announce(self, ckpt: CycleCheckpoint) -> CycleCheckpoint:
        assert ckpt.version and ckpt.uri and ckpt.manifest_sha256
        if self.s.canary:
            # The users' votes promote it (learner.canary); until then the parent serves.
            record = self.adapters.promoted()
            baseline = record.version if record else BASE
            start_canary(self.store, ckpt.version, baseline, guarded=ckpt.guarded)
        else:
            # The store's record first: a replica starting while Kafka is down serves it.
            self.publisher.record_promoted(ckpt.version)
        crash_points.crash_point("publish.before_event")
        # Deterministic event id: a re-announce after a crash is the same event to consumers.
        event_id = hashlib.sha256(f"{ckpt.version}:{ckpt.manifest_sha256}".encode())
        self.publisher.announce(
            ckpt.version,
            ckpt.uri,
            ckpt.manifest_sha256,
            canary=self.s.canary,
            event_id=event_id.hexdigest()[:32],
        )
        metrics.LAST_VERSION.set(AdapterVersion.parse(ckpt.version).number)
        how = " as a guarded canary" if ckpt.guarded and self.s.canary else ""
        return self._finish(ckpt, "published", f"published {ckpt.version}{how}")

    def _reject(self, ckpt: CycleCheckpoint, reason: str) -> CycleCheckpoint:
        logger.warning("cycle %d rejected: %s", ckpt.cycle_id, reason)
        # Decision first (durable), files second: a crash in between leaves a stray work dir
        # (removed at the next start), never a re-run of a stage whose inputs were moved away.
        ckpt = self._finish(ckpt, "rejected", reason)
        dest = self.data_dir / "rejected" / f"cycle-{ckpt.cycle_id}"
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if self.workdir(ckpt).exists():
            shutil.move(str(self.workdir(ckpt)), dest)
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "reason.json").write_text(ckpt.model_dump_json(indent=2))
        return ckpt

    def _finish(self, ckpt: CycleCheckpoint, outcome: str, reason: str) -> CycleCheckpoint:
        ckpt = ckpt.model_copy(update={"outcome": outcome, "reason": reason, "stage": "done"})
        self.store.record_cycle_end(
            ckpt.cycle_id,
            outcome,
            reason,
            ckpt.version if outcome == "published" else None,
            ckpt.metrics,
        )
        metrics.CYCLES.labels(outcome).inc()
        try:
            from learner.report import write_report

            write_report(self.data_dir, ckpt, self.store)
        except Exception:  # a plot must never stop the learner; logged with its stack
            logger.exception("report for cycle %d failed", ckpt.cycle_id)
        crash_points.crash_point("cycle.before_done")
        save_checkpoint(self.data_dir, ckpt)
        if outcome == "published" and self.workdir(ckpt).exists():
            shutil.rmtree(self.workdir(ckpt))
        return ckpt

    def cleanup_workdirs(self) -> int:
        """Remove work dirs of finished cycles (left by a crash right after the decision)."""
        pending = self.pending()
        keep = self.workdir(pending).name if pending else None
        root = self.data_dir / "cycles"
        stale = [d for d in root.glob("cycle-*") if d.name != keep] if root.exists() else []
        for d in stale:
            shutil.rmtree(d)
        return len(stale)

    def base_sha(self) -> str:
        if self._base_sha is None:
            self._base_sha = model_dir_sha256(self.base)
        return self._base_sha


def _prefixed(prefix: str, values: dict[str, float]) -> dict[str, float]:
    return {
        f"{prefix}/{k}": float(v)
        for k, v in values.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def _install(src: Path, dest: Path) -> Path:
    """Copy ``src`` to ``dest`` via a temp dir + rename (replacing a stale ``dest``)."""
    tmp = dest.with_name(f".tmp-{dest.name}-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(src, tmp)
    if dest.exists():
        shutil.rmtree(dest)
    os.rename(tmp, dest)
    return dest
