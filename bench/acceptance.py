"""Acceptance on the real model (docs/loop.md, "Acceptance run and benchmarks"), as one command.

Why one file (over 400 lines): one acceptance run as one command: rounds, progress lines,
verdict and report share the run's arguments and results.

From the base model, simulated users (noise on) make ``--comparisons`` comparisons in
``--rounds`` equal rounds through the public API; each round's last comparison triggers one
learner cycle (``LEARNER_MIN_NEW_COMPARISONS`` = the round size), and the next round's users
are served by whatever version serving runs by then (online RLHF). Users pause while the
learner trains, so a round's data is complete when its cycle starts and the cycle count is
deterministic. With the canary on (the default, ``--no-canary`` to turn it off), a published
version first serves as a canary and the users keep voting until the learner promotes or rolls
it back from their votes (``bench/acceptance_canary.py``); the next round's users go on until
the learner starts its next cycle. Then a blind paired evaluation of the version that serves in
the end against the base on the held-out prompts (never used for PPO) under the same
preference, through the same API with version pins (``loop.eval``), gives the win rate with
its Wilson 95% interval and the length statistics, beside the users' canary decision; the
manifest gives the KL to the reference and the sanity outcome.

Pass = win rate >= ``--target`` (0.70), interval lower bound > 0.5, KL <= the learner's budget,
sanity prompts passed. Results go to ``--out`` (``bench/results/acceptance.md``) and the data
dir (logs, store, adapters, eval.md/json/png).

Usage: ``.venv/bin/python -m bench.acceptance [--preference concise] [--comparisons 500]``
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import RESULTS
from bench.acceptance_canary import (
    CanaryDecision,
    add_canary_options,
    agreement_line,
    canary_env,
    canary_setup,
    decide_canary,
    serving_in_the_end,
    write_canary_json,
)
from bench.acceptance_canary import markdown as canary_markdown
from bench.acceptance_progress import Progress, ProgressReporter
from bench.acceptance_stages import StageResult, stage_contributions
from bench.acceptance_stages import markdown as stages_markdown
from bench.acceptance_waits import (
    accepted_comparisons,
    collect_until_cycle_starts,
    finished_checkpoint,
    learner_cycle,
    wait_cycle,
    wait_serving,
)
from bench.bench_all import command_line, machine, repo_relative
from common.cli import command_parser
from common.signals import StopSignals, stop_reason
from learner.publish import AdapterStore
from learner.settings import LearnerSettings
from loop.dashboard import running_stage
from loop.demo import Demo, benchmark_config, canary_setting
from loop.eval import run_eval, write_outputs
from loop.labels import label_ceiling, vote_agreement
from loop.monitor import scrape
from loop.preferences import NoiseConfig
from loop.service_options import add_env_option, env_pairs
from loop.user_options import add_max_tokens_option, add_user_options

# Learner settings of the run (on top of the defaults); printed in the report. A cycle starts
# at each round's last comparison and never on the clock: on a slow machine the one-hour
# period would otherwise start a cycle at whatever count the hour reached.
LEARNER_ENV = {"LEARNER_CYCLE_PERIOD_SECONDS": "0"}
# The answer length of the acceptance run, and of the offline studies that predict it
# (bench/ppo_check.py, bench/policy_frontier.py).
ACCEPTANCE_MAX_TOKENS = 128


def _learner_stage(demo: Demo) -> str | None:
    metrics = scrape(f"http://127.0.0.1:{demo.metrics_port}/metrics")
    return running_stage(metrics) if metrics else None


@dataclasses.dataclass
class Round:
    number: int
    comparisons: int  # cumulative
    collect_seconds: float
    outcome: str = "?"
    version: str | None = None
    to_published_seconds: float | None = None
    to_serving_seconds: float | None = None
    manifest_metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    reason: str = ""


def _collect(demo: Demo, total: int) -> None:
    """Let the users run until ``total`` comparisons were issued in all."""
    assert demo.sim is not None
    demo.sim.config = dataclasses.replace(demo.sim.config, comparisons=total)
    asyncio.run(demo.sim.run())


def run_rounds(
    demo: Demo, args: argparse.Namespace, progress: Progress
) -> tuple[list[Round], list[CanaryDecision]]:
    store = AdapterStore(str(demo.data_dir / "adapters"), "policy")
    per_round = args.comparisons // args.rounds
    rounds: list[Round] = []
    decisions: list[CanaryDecision] = []
    # The last round's cycle: with the canary on, the next may start the moment its canary is
    # decided, before this loop looks again.
    before = learner_cycle(demo)[0]
    for number in range(1, args.rounds + 1):
        t0 = time.monotonic()
        progress.phase = f"round {number}/{args.rounds}: users voting"
        if number == 1:  # round 1's users were started by Demo.start()
            demo.wait_users()
        elif demo.canary:
            collect_until_cycle_starts(demo, before, args.cycle_timeout)
        else:
            _collect(demo, per_round * number)
        t_n = time.monotonic()
        progress.phase = f"round {number}/{args.rounds}: learner cycle"
        outcome = wait_cycle(demo, before, args.cycle_timeout)
        before = learner_cycle(demo)[0]
        r = Round(number, accepted_comparisons(demo), t_n - t0, outcome)
        # The finished cycle's checkpoint: its metrics and gate reason, rejected cycles too.
        ckpt = finished_checkpoint(demo.data_dir / "learner" / "checkpoint.json")
        r.manifest_metrics, r.reason = dict(ckpt.get("metrics", {})), ckpt.get("reason", "")
        versions = store.versions()
        if outcome == "published" and versions:
            r.version = store.manifest(versions[-1]).version
            r.to_published_seconds = time.monotonic() - t_n
            progress.phase = f"round {number}/{args.rounds}: serving loads {r.version}"
            wait_serving(demo, r.version, 300, "canary" if demo.canary else "serving")
            r.to_serving_seconds = time.monotonic() - t_n
            r.manifest_metrics |= dict(store.manifest(versions[-1]).metrics)
        rounds.append(r)
        print(
            f"round {number}: {r.comparisons} comparisons, {r.outcome} {r.version or ''}",
            flush=True,
        )
        if demo.canary and (r.version or number < args.rounds):
            # The users vote on: on the canary, and toward the next round's cycle.
            demo.resume_users()
        if demo.canary and r.version:
            decisions.append(decide_canary(demo, number, r.version, args, progress))
            if number == args.rounds:
                demo.pause_users()
    return rounds, decisions


def evaluate(
    demo: Demo, version: str, args: argparse.Namespace, progress: Progress, out_name: str = "eval"
) -> Any:
    config = demo.versus_base(
        version,
        noise=NoiseConfig(args.eval_noise),
        prompts="eval",
        samples=args.eval_samples,
        # None: the server's default (1.0), the temperature the users' pairs were sampled at,
        # so the win is measured on the answers users get.
        temperature=None,
        seed=args.seed,
        concurrency=8,
    )
    progress.phase = f"blind eval of {version} vs base"
    report = asyncio.run(run_eval(config, progress=progress.eval_progress))
    write_outputs(report, demo.data_dir / out_name, config)
    return report


def stage_report(
    demo: Demo, both: Any, version: str, args: argparse.Namespace, progress: Progress
) -> tuple[StageResult, list[StageResult]]:
    """The published version beside SFT alone and PPO alone (bench/acceptance_stages.py)."""
    assert demo.learner is not None
    checkpoint = finished_checkpoint(demo.data_dir / "learner" / "checkpoint.json")

    def say(line: str) -> None:
        progress.phase = line
        progress.eval_done = progress.eval_total = 0  # the last eval's count is not this one's
        print(line, flush=True)

    alone = stage_contributions(
        checkpoint,
        demo.learner.env,
        demo.data_dir / "stages",
        lambda v, name: evaluate(demo, v, args, progress, name),
        lambda v: wait_serving(demo, v, 300),
        say,
    )
    return StageResult("SFT + PPO (published)", version, both), alone


def _preference(name: str) -> str:
    return name if ":" in name else f"loop.preferences:{name}"


def main() -> int:
    p = command_parser(__doc__)
    add_user_options(
        p,
        comparisons=500,
        concurrency=8,
        rate=False,
        preference="concise",
        comparisons_help="comparisons in all rounds",
    )
    p.add_argument("--rounds", type=int, default=2, help="learner cycles over the comparisons")
    p.add_argument("--eval-noise", type=float, default=0.0, help="judge noise in the eval")
    add_max_tokens_option(
        p,
        ACCEPTANCE_MAX_TOKENS,
        why="longer than the default: at 64 most base answer pairs are both cut off and a "
        "length vote carries little signal; see docs/learning.md",
    )
    p.add_argument(
        "--corrections",
        choices=("on", "off"),
        default="off",
        help="off: users never send rewritten answers, so the loop learns from votes alone",
    )
    p.add_argument(
        "--stage-report",
        choices=("auto", "off"),
        default="auto",
        help="auto: with corrections on, also train SFT alone and PPO alone from the base on the "
        "same data and evaluate each (about 30 min more on 2 CPU cores)",
    )
    p.add_argument("--thumbs-rate", type=float, default=0.1, help="share of votes with a thumb")
    p.add_argument(
        "--pair-show-floor",
        type=float,
        default=1.0,
        help="informative pairing (SERVING_PAIR_SHOW_FLOOR): below 1, pairs whose answers differ "
        "little are shown less often, so the same comparisons take more requests; 1 = uniform",
    )
    p.add_argument("--target", type=float, default=0.70, help="win rate the eval must reach")
    p.add_argument(
        "--cycle-timeout", type=float, default=3 * 3600.0, help="seconds one cycle may take"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the blind evaluation")
    p.add_argument(
        "--user-seed",
        type=int,
        default=None,
        help="seed of the simulated users (their prompts, sampling and votes); default: drawn "
        "from the clock, and named in the report",
    )
    p.add_argument(
        "--eval-samples",
        type=int,
        default=3,
        help="answer pairs per held-out prompt in the blind eval (58 prompts x 3 = 174 pairs: "
        "a 95%% interval of about +/-0.07)",
    )
    add_canary_options(p)
    add_env_option(p, "learner")
    p.add_argument(
        "--data-dir", type=Path, default=None, help="run directory (default: var/demo/run-<time>)"
    )
    p.add_argument("--tiny", action="store_true", help="tiny random model: checks the script only")
    p.add_argument(
        "--out",
        type=Path,
        default=RESULTS / "acceptance.md",
        help="where the report goes",
    )
    p.add_argument(
        "--progress-every",
        type=float,
        default=60.0,
        help="seconds between progress lines on stderr (also one at each stage change)",
    )
    args = p.parse_args()
    # The report and the round logic follow the learner's setting: --learner-env may set it.
    args.canary = canary_setting(env_pairs(args.learner_env, "LEARNER_"), args.canary)
    per_round = args.comparisons // args.rounds
    config = benchmark_config(
        args,
        LEARNER_ENV | canary_env(args),
        canary=args.canary,
        # With the canary on, the learner's last cycle is the last round's: it decides that
        # round's canary and exits, so the canary's votes start no cycle of their own.
        learner_max_cycles=args.rounds if args.canary else None,
        preference=_preference(args.preference),
        comparisons=per_round,
        cycle_comparisons=per_round,
        concurrency=args.concurrency,
        noise=args.noise,
        correction_rate=0.05 if args.corrections == "on" else 0.0,
        thumbs_rate=args.thumbs_rate,
        max_tokens=args.max_tokens,
        user_seed=args.user_seed,
        serving_env={"SERVING_PAIR_SHOW_FLOOR": str(args.pair_show_floor)}
        | ({"SERVING_CANARY_SHARE": str(args.canary_share)} if args.canary else {}),
    )
    learner_env = config.learner_env
    args.preference = config.preference
    started = time.monotonic()
    demo = Demo(config)
    verdict: dict[str, Any] = {"passed": False}
    progress = Progress(target=per_round * args.rounds)
    reporter = ProgressReporter(
        progress,
        lambda: accepted_comparisons(demo),
        lambda: _learner_stage(demo),
        args.progress_every,
    ).start()
    # SIGTERM and SIGHUP, like Ctrl-C, end in demo.shutdown: no service outlives the run.
    with StopSignals("the acceptance run") as signals:
        try:
            demo.start()
            rounds, decisions = run_rounds(demo, args, progress)
            verdict = _evaluate_the_end(demo, rounds, decisions, args, progress)
            assert demo.sim is not None
            votes = list(demo.sim.stats.pair_votes)
            verdict["labels"] = (
                label_ceiling([u for u, _ in votes], args.noise),
                vote_agreement(votes),
            )
            sim = demo.sim.stats.snapshot()
            verdict["requests"] = (sim["requests"], sim["pairs"], sim["single"])
            signals.stopping()
            progress.phase = "stopping the services"
            summary = demo.shutdown("acceptance finished")
        except KeyboardInterrupt as exc:
            signals.stopping()
            demo.shutdown(f"acceptance stopped: {stop_reason(exc)}")
            print(f"acceptance stopped ({stop_reason(exc)}); no report written", file=sys.stderr)
            return 130
        except BaseException:
            signals.stopping()
            demo.shutdown("acceptance failed")
            raise
        finally:
            reporter.stop()
    wall = time.monotonic() - started
    args.user_seed = demo.user_seed  # the report names the seed the users ran with
    text = _markdown(rounds, verdict, summary, args, learner_env, wall)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0 if verdict["passed"] else 1


def _evaluate_the_end(
    demo: Demo,
    rounds: list[Round],
    decisions: list[CanaryDecision],
    args: argparse.Namespace,
    progress: Progress,
) -> dict[str, Any]:
    """The blind evaluation of the version that serves in the end (the last promoted canary,
    or without canaries the last published version) and the verdict on it."""
    final = serving_in_the_end(decisions, [r.version for r in rounds if r.version])
    verdict: dict[str, Any] = {"passed": False, "canary": decisions}
    if final != "base":  # else nothing learned serves: the base does not beat itself
        report = evaluate(demo, final, args, progress)
        source = next(r for r in rounds if r.version == final)
        verdict |= _verdict(report, source, demo.config.learner_env, args)
        if args.corrections == "on" and args.stage_report == "auto":
            verdict["stages"] = stage_report(demo, report, final, args, progress)
    if demo.canary:
        write_canary_json(demo.data_dir / "canary.json", decisions, verdict)
    return verdict


def _learner_setting(env: dict[str, str], name: str) -> float:
    """A numeric learner setting as the run set it, else its default."""
    key = f"LEARNER_{name.upper()}"
    if key in env:
        return float(env[key])
    return float(LearnerSettings.model_fields[name].default)


def _kl_budget(env: dict[str, str]) -> float:
    return _learner_setting(env, "kl_budget")


def _verdict(
    report: Any, last: Round, env: dict[str, str], args: argparse.Namespace
) -> dict[str, Any]:
    low, high = report.interval()
    metrics = last.manifest_metrics
    kl = metrics.get("eval/kl", metrics.get("kl"))
    sanity = metrics.get("eval/sanity_passed", metrics.get("sanity_passed"))
    budget = _kl_budget(env)
    checks = {
        f"win rate >= {args.target:.2f}": report.win_rate >= args.target,
        "95% interval above 0.5": low > 0.5,
        f"KL to reference <= budget {budget:g} nats": kl is not None and kl <= budget,
        "sanity prompts answered sensibly": bool(sanity),
    }
    return {
        "passed": all(checks.values()),
        "checks": checks,
        "version": last.version,
        "win_rate": report.win_rate,
        "interval": (low, high),
        "n": report.n,
        "wins": report.wins,
        "losses": report.losses,
        "ties": report.ties,
        "kl": kl,
        "words": (report.a.summary()["mean_words"], report.b.summary()["mean_words"]),
    }


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def _markdown(
    rounds: list[Round],
    verdict: dict[str, Any],
    summary: dict[str, Any],
    args: argparse.Namespace,
    env: dict[str, str],
    wall: float,
) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Acceptance on SmolLM2-135M (CPU)",
        "",
        f"Run {when}: `.venv/bin/python -m bench.acceptance {command_line()}`; "
        f"wall time {wall / 60:.1f} min in all.",
        f"Machine: {machine()}.",
        f"Preference `{args.preference}`, users' Bradley-Terry noise {args.noise}, "
        f"{args.comparisons} comparisons in {args.rounds} rounds, {args.concurrency} users, "
        f"max {args.max_tokens} tokens, corrections {args.corrections}, thumbs on "
        f"{args.thumbs_rate:.0%} of votes, users' seed {args.user_seed}; blind evaluation seed "
        f"{args.seed}, judge noise {args.eval_noise}, "
        f"{args.eval_samples} answer pairs per held-out prompt at the serving temperature; pairing "
        + (
            "uniform."
            if args.pair_show_floor >= 1
            else f"informative (floor {args.pair_show_floor:g})."
        ),
        "Learner overrides: "
        + (", ".join(f"`{k}={v}`" for k, v in env.items()) or "none (defaults)")
        + ".",
        canary_setup(args),
        "",
        "| round | comparisons | collect s | outcome | version | N-th -> published s "
        "| N-th -> serving s | RM acc | reward gain | KL nats | len policy/ref |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rounds:
        m = r.manifest_metrics
        lines.append(
            f"| {r.number} | {r.comparisons} | {r.collect_seconds:.0f} | {r.outcome} "
            f"| {r.version or '-'} | {_fmt(r.to_published_seconds)} "
            f"| {_fmt(r.to_serving_seconds)} | {_fmt(m.get('reward/accuracy'), '.3f')} "
            f"| {_fmt(m.get('eval/reward_gain'), '+.3f')} | {_fmt(m.get('eval/kl'), '.2f')} "
            f"| {_fmt(m.get('eval/length_mean'), '.0f')}/"
            f"{_fmt(m.get('eval/reference_length_mean'), '.0f')} |"
        )
    lines.append("")
    if "labels" in verdict:
        ceiling, agreement = verdict["labels"]
        lines += [
            f"Label quality of the users' pairwise votes: label ceiling {ceiling} (expected "
            f"agreement of one noisy vote with the noise-free ordering); observed agreement "
            f"{agreement}.",
            "",
        ]
    if "requests" in verdict:
        requests, pairs, single = verdict["requests"]
        lines += [
            f"Chat requests: {requests}; {pairs} asked the user for a comparison, {single} were "
            "answered with one answer by informative pairing.",
            "",
        ]
    lines += [f"Round {r.number}: {r.outcome}: {r.reason}" for r in rounds if r.reason]
    lines.append("")
    decisions = verdict.get("canary", [])
    if args.canary:
        confidence = 1 - _learner_setting(env, "canary_alpha")
        lines += canary_markdown(decisions, verdict.get("version"), confidence)
    agreement = agreement_line(decisions, verdict.get("version"), verdict.get("interval"))
    if "win_rate" in verdict:
        low, high = verdict["interval"]
        words_a, words_b = verdict["words"]
        lines += [
            f"Blind eval of {verdict['version']} vs base on the held-out prompts: win rate "
            f"**{verdict['win_rate']:.3f}** (95% Wilson [{low:.3f}, {high:.3f}], n={verdict['n']}: "
            f"{verdict['wins']} wins, {verdict['losses']} losses, {verdict['ties']} ties); "
            f"mean words {_fmt(words_a)} vs {_fmt(words_b)}; KL {_fmt(verdict['kl'], '.2f')} nats.",
            "",
        ]
        lines += [agreement, ""] if agreement else []
        lines += [f"- {'PASS' if ok else 'FAIL'}: {name}" for name, ok in verdict["checks"].items()]
        if "stages" in verdict:
            lines += ["", *stages_markdown(*verdict["stages"])]
    elif decisions:
        lines += [
            "No learned version serves in the end (every canary was rolled back), so there was "
            "nothing to evaluate: FAIL.",
            "",
            agreement,
        ]
    else:
        lines.append("No version was published, so there was nothing to evaluate: FAIL.")
    missing = summary.get("events_missing")
    lines += [
        "",
        f"Verdict: **{'PASSED' if verdict['passed'] else 'FAILED'}**. Events missing from Kafka "
        f"at shutdown: {missing or 'none'}. Data: `{repo_relative(str(summary.get('data_dir')))}`.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
