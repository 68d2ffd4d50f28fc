"""``learner`` command line: run | sft | train-reward | ppo | status.

Settings come from ``LEARNER_*`` environment variables (learner.settings); flags given on the
command line override them. Output for humans goes to stdout; logs to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

from common.cli import HelpFormatter, service_start
from learner.settings import LearnerSettings
from learner.store.queries import split_prompts
from learner.trainers import PPOJob, RewardJob, SFTJob, TrainOutcome

logger = logging.getLogger(__name__)

# flag -> settings field, for the flags shared by every command
_COMMON = {
    "data_dir": (str, "training store, checkpoints, reports"),
    "adapter_store": (str, "adapter store: directory or fsspec URL"),
    "adapter_name": (str, "adapter family"),
    "model_dir": (str, "'embedded' or a local model directory"),
    "kafka_bootstrap": (str, "host:port of the Kafka broker"),
    "trainers": (str, "'real' or 'fake' (service tests only)"),
    "seed": (int, "random seed"),
}
_RUN = {
    "min_new_comparisons": (int, "start a cycle after this many new comparisons"),
    "cycle_period_seconds": (
        float,
        "or after this many seconds with at least one new comparison (0 = by count only)",
    ),
    "rm_min_accuracy": (float, "reward-model held-out accuracy gate"),
    "rm_gate_confidence": (float, "RM must beat chance at this confidence (0 = off)"),
    "kl_budget": (float, "max mean KL to the reference"),
    "min_reward_gain": (float, "publish only if held-out reward gain > this"),
    "metrics_port": (int, "Prometheus port (0 = off)"),
    "feedback_join_window_seconds": (float, "how long feedback waits for its pair"),
}


def _add(parser: argparse.ArgumentParser, flags: dict[str, tuple[type, str]]) -> None:
    for name, (kind, help_text) in flags.items():
        # Unset flags keep the environment's value; the help names the setting's own default.
        default = LearnerSettings.model_fields[name].default
        help_text = f"{help_text} (default: {default}; env LEARNER_{name.upper()})"
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=kind,
            default=None,
            help=help_text.replace("%", "%%"),  # argparse formats help with %
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="learner", description="RLHF learner service.", formatter_class=HelpFormatter
    )
    parser.add_argument("--log-level", default="INFO", help="logging level")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, help=help_text, description=help_text, formatter_class=HelpFormatter
        )

    run = command("run", "consume events and run training cycles (daemon)")
    _add(run, _COMMON | _RUN)
    run.add_argument(
        "--max-cycles",
        type=int,
        default=None,
        help="exit after N cycles; with LEARNER_CANARY, once the users decided the last "
        "cycle's canary (default: run until SIGTERM or Ctrl-C)",
    )
    sft = command("sft", "supervised fine-tuning on a JSONL file or the corrections")
    _add(sft, _COMMON)
    sft.add_argument(
        "--jsonl",
        type=Path,
        help="demonstrations, one chat per line (default: every correction in the store)",
    )
    sft.add_argument("--out", type=Path, help="output directory (default: DATA_DIR/sft/<time>)")
    sft.add_argument(
        "--init-adapter", type=Path, help="start from this adapter (default: a fresh LoRA)"
    )
    sft.add_argument(
        "--publish", action="store_true", help="publish the result as the next policy version"
    )
    rm = command("train-reward", "train a reward model on all stored comparisons")
    _add(rm, _COMMON)
    rm.add_argument(
        "--out", type=Path, help="output directory (default: DATA_DIR/manual/reward-<time>)"
    )
    ppo = command("ppo", "one PPO run on the stored prompts against a reward model")
    _add(ppo, _COMMON)
    ppo.add_argument("--reward-adapter", type=Path, required=True, help="reward model dir")
    ppo.add_argument(
        "--init-adapter", type=Path, help="start from this policy adapter (default: a fresh LoRA)"
    )
    ppo.add_argument(
        "--out", type=Path, help="output directory (default: DATA_DIR/manual/ppo-<time>)"
    )
    ppo.add_argument(
        "--num-prompts",
        type=int,
        default=None,
        help="prompts to sample from the training split, as a cycle does: held-out prompts "
        "stay out (default: LEARNER_PPO_NUM_PROMPTS)",
    )
    ppo.add_argument(
        "--steps", type=int, default=None, help="PPO iterations (default: the PPO config's)"
    )
    ppo.add_argument(
        "--publish", action="store_true", help="publish the result as the next policy version"
    )
    erase = command(
        "erase", "forget a user: emit user.erased; the running learner deletes their stored data"
    )
    _add(erase, _COMMON)
    erase.add_argument("user_id", help="the user's pseudonymous id (user_id in the events)")
    erase.add_argument("--reason", default="", help="free text kept with the event")
    status = command("status", "store counts, offsets, lag, versions, gates")
    _add(status, _COMMON)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def settings_from(args: argparse.Namespace) -> LearnerSettings:
    fields = set(LearnerSettings.model_fields)
    overrides = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    return LearnerSettings(**overrides)


def main(argv: list[str] | None = None) -> int:
    args, settings = service_start(build_parser(), argv, settings_from)
    if settings is None:
        return 2
    configure_threads(settings, args.command)
    handler = {
        "run": _cmd_run,
        "sft": _cmd_sft,
        "train-reward": _cmd_reward,
        "ppo": _cmd_ppo,
        "status": _cmd_status,
        "erase": _cmd_erase,
    }[args.command]
    return handler(settings, args)


# The commands that train or evaluate in this process (a launched stage sets its own threads:
# learner.trainers.stage_worker).
_TORCH_COMMANDS = frozenset({"run", "sft", "train-reward", "ppo"})


def configure_threads(settings: LearnerSettings, command: str) -> int | None:
    """torch's thread count for a command that trains or evaluates with the real trainers (the
    setting, or the CPUs this process may use: ``common.cpu_budget``); None for the others."""
    if command not in _TORCH_COMMANDS or settings.trainers == "fake":
        return None
    from common.cpu_budget import configure_torch_threads

    return configure_torch_threads(settings.torch_threads)


def _cmd_run(settings: LearnerSettings, args: argparse.Namespace) -> int:
    from learner.daemon import install_signal_handlers, run_until_stopped
    from learner.metrics import serve_metrics

    stop = threading.Event()
    install_signal_handlers(stop)
    serve_metrics(settings.metrics_port)
    return run_until_stopped(settings, stop, args.max_cycles)


def _stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def _print_outcome(res: TrainOutcome, **extra: Any) -> None:
    """What a manual training command made: its adapter directory and metrics (and ``extra``)."""
    print(
        json.dumps({"adapter_dir": str(res.adapter_dir), "metrics": res.metrics, **extra}, indent=2)
    )


def _nothing_to_train(reason: str) -> int:
    print(reason, file=sys.stderr)
    return 1


def _cmd_sft(settings: LearnerSettings, args: argparse.Namespace) -> int:
    from learner.daemon import build_services

    svc = build_services(settings)
    if args.jsonl:
        from learner.sft.data import load_jsonl

        examples = load_jsonl(args.jsonl)
    else:
        examples = svc.store.sft_examples()
    if not examples:
        return _nothing_to_train(
            "no demonstrations (give --jsonl FILE or collect corrections first)"
        )
    out = args.out or Path(settings.data_dir) / "sft" / _stamp()
    res = svc.runner.trainers.sft(SFTJob(svc.runner.base, examples, out, args.init_adapter))
    _print_outcome(res)
    if args.publish:
        version = svc.runner.publisher.publish_manual(
            res.adapter_dir, res.metrics, {"sft": res.config}
        )
        print(f"published {version}")
    return 0


def _cmd_reward(settings: LearnerSettings, args: argparse.Namespace) -> int:
    from learner.daemon import build_services
    from learner.gates import classify_reward_model_on, reward_gate_on

    svc = build_services(settings)
    comparisons = svc.store.comparisons()
    if not comparisons:
        return _nothing_to_train("no comparisons in the store")
    out = args.out or Path(settings.data_dir) / "manual" / f"reward-{_stamp()}"
    res = svc.runner.trainers.reward(RewardJob(svc.runner.base, comparisons, out))
    gate = reward_gate_on(res.metrics, settings.rm_min_accuracy, settings.rm_gate_confidence)
    # What a cycle would do with it: go on (certified), go on guarded (uncertain), or reject.
    verdict = classify_reward_model_on(
        res.metrics, settings.rm_min_accuracy, settings.rm_gate_confidence
    )
    _print_outcome(res, passes_gate=gate.passed, gate=gate.reason, gate_outcome=verdict.outcome)
    return 0


def _cmd_ppo(settings: LearnerSettings, args: argparse.Namespace) -> int:
    from learner.daemon import build_services

    svc = build_services(settings)
    stored = svc.store.prompts()
    if not stored:
        return _nothing_to_train("no logged prompts in the store")
    train, _ = split_prompts(stored, settings.eval_prompt_fraction)
    count = args.num_prompts or settings.ppo_num_prompts
    prompts = random.Random(settings.seed).sample(train, min(count, len(train)))
    out = args.out or Path(settings.data_dir) / "manual" / f"ppo-{_stamp()}"
    job = PPOJob(svc.runner.base, args.reward_adapter, prompts, out, args.init_adapter, args.steps)
    res = svc.runner.trainers.ppo(job)
    _print_outcome(res)
    if args.publish:
        config = {"ppo": res.config, "ppo_init": str(args.init_adapter or "base")}
        version = svc.runner.publisher.publish_manual(res.adapter_dir, res.metrics, config)
        print(f"published {version}")
    return 0


def _cmd_erase(settings: LearnerSettings, args: argparse.Namespace) -> int:
    from learner.publish.announce import produce_event
    from schemas.events import UserErased

    event = UserErased(user_id=args.user_id, requested_by="learner-cli", reason=args.reason)
    # The running learner applies it in order with the feedback it consumes.
    produce_event(settings.kafka_bootstrap, settings.topic_feedback, event)
    print(json.dumps({"event_id": event.event_id, "user_id": event.user_id}))
    return 0


def _cmd_status(settings: LearnerSettings, args: argparse.Namespace) -> int:
    from learner.status import collect_status, format_status

    info: dict[str, Any] = collect_status(settings)
    print(json.dumps(info, indent=2, default=str) if args.json else format_status(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
