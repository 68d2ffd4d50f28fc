"""Simulated users: drive the public HTTP API as a chat app and its users would, and vote.

Each comparison: a random simulated user sends a random training prompt with ``pair: true``,
reads the K answers, asks the preference function (``module:function``, with Bradley-Terry
noise, see :mod:`loop.preferences`) which is better, and posts the vote to ``/v1/feedback``;
sometimes also a thumbs up/down on one answer and a correction (an answer rewritten toward the
user's taste). Workers run concurrently on asyncio; a token bucket caps the request rate.

CLI: ``python -m loop.sim_cli --base-url http://127.0.0.1:8000 --api-key KEY \
    --preference loop.preferences:concise --comparisons 500 --concurrency 8 --noise 1.0``
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai

from loop.client import Answer, ServiceClient
from loop.preferences import (
    NoiseConfig,
    NoisyPreference,
    PreferenceFn,
    PreferenceOutcome,
    load_preference,
    neutral_for,
    rewrite_for,
    sample_rating,
    word_count,
)
from loop.prompts import Prompt, load_prompts
from loop.user_options import DEFAULT_MAX_TOKENS

logger = logging.getLogger(__name__)
PAIR_VOTES_KEPT = 100_000
# With informative pairing a request may be answered with one answer and ask no comparison; a
# run for N comparisons stops anyway after SINGLE_CAP * N such requests (serving that never
# shows a pair would otherwise keep it asking for ever). Floor 0.2 shows about 60 % of pairs.
SINGLE_CAP = 10


@dataclass
class SimConfig:
    base_url: str = "http://127.0.0.1:8000"
    api_key: str = "none"
    model: str | None = None  # None: the first id /v1/models lists
    preference: str = "loop.preferences:concise"
    comparisons: int = 100  # 0 = until duration / stop
    duration: float = 0.0  # seconds; 0 = no time limit
    concurrency: int = 4
    rate: float = 0.0  # comparisons started per second; 0 = unlimited
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    thumbs_rate: float = 0.1  # chance of also rating one answer up/down
    correction_rate: float = 0.05  # chance of also sending a rewritten answer
    k: int = 2
    max_tokens: int | None = DEFAULT_MAX_TOKENS
    temperature: float | None = None  # None: the server's default
    users: int = 20
    prompts: str = "train"
    seed: int = 0
    # The OpenAI client's automatic retries of a failed chat request. A retry after the server
    # answered (a lost response) serves the request twice; load tests set 0 so that a failure
    # is counted in the errors, not hidden.
    client_retries: int = 3


class SimStats:
    """Counters shared between the workers and whoever displays them (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.requests = 0
        self.pairs = 0
        # Pairs whose two answers came out identical: serving answers them unpaired (nothing to
        # compare), which is not an error.
        self.unpaired = 0
        # Pairs that informative pairing served as one answer (SERVING_PAIR_SHOW_FLOOR < 1): no
        # comparison was asked, so they do not count toward ``comparisons``.
        self.single = 0
        self.votes: Counter[str] = Counter()  # choice / ranking / tie / both_bad
        self.feedback_ok: Counter[str] = Counter()  # preference / rating / correction
        self.feedback_failed: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        # Per adapter version: answers served, sum of noise-free utility, sum of words.
        self.answers: dict[str, list[float]] = {}
        # Pairs whose answers came from two different versions: sorted (v1, v2) -> [score of v1
        # (win 1, tie or both bad 0.5), comparisons].
        self.head_to_head: dict[tuple[str, str], list[float]] = {}
        self.last_version: str | None = None
        # Pairwise votes as (noise-free utilities of the two answers, index voted best or None):
        # the label ceiling and the votes' agreement with the truth (loop.labels). The latest
        # PAIR_VOTES_KEPT only, so a demo left running for days does not grow without bound.
        self.pair_votes: deque[tuple[tuple[float, float], int | None]] = deque(
            maxlen=PAIR_VOTES_KEPT
        )

    def record_answers(self, answers: list[Answer], utilities: tuple[float, ...] | None) -> None:
        with self._lock:
            for i, ans in enumerate(answers):
                version = ans.adapter_version or "?"
                row = self.answers.setdefault(version, [0.0, 0.0, 0.0])
                row[0] += 1
                row[1] += utilities[i] if utilities is not None else 0.0
                row[2] += word_count(ans.text)
                self.last_version = version

    def record_vote(self, answers: list[Answer], outcome: PreferenceOutcome) -> None:
        with self._lock:
            self.votes[outcome.kind] += 1
            us = outcome.utilities
            if us is not None and len(us) == 2:
                self.pair_votes.append(((us[0], us[1]), outcome.best()))
            versions = [a.adapter_version or "?" for a in answers]
            if len(versions) != 2 or versions[0] == versions[1]:
                return
            key = (min(versions), max(versions))
            best = outcome.best()
            score = 0.5 if best is None else float(versions[best] == key[0])
            row = self.head_to_head.setdefault(key, [0.0, 0.0])
            row[0] += score
            row[1] += 1

    def count(self, attr: str, label: str) -> None:
        with self._lock:
            getattr(self, attr)[label] += 1

    def bump(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "elapsed_seconds": round(time.monotonic() - self.started, 2),
                "requests": self.requests,
                "pairs": self.pairs,
                "unpaired": self.unpaired,
                "single": self.single,
                "votes": dict(self.votes),
                "feedback_ok": dict(self.feedback_ok),
                "feedback_failed": dict(self.feedback_failed),
                "errors": dict(self.errors),
                "answers_by_version": {
                    v: {
                        "answers": int(n),
                        "mean_utility": u / n if n else 0.0,
                        "mean_words": w / n if n else 0.0,
                    }
                    for v, (n, u, w) in self.answers.items()
                },
                "head_to_head": {
                    f"{a} vs {b}": {"score_first": s, "n": int(n)}
                    for (a, b), (s, n) in self.head_to_head.items()
                },
                "last_version": self.last_version,
            }


class RateLimiter:
    """Evenly spaced starts: at most ``rate`` per second (0 = unlimited)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next = time.monotonic()
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.interval:
            return
        async with self._lock:
            now = time.monotonic()
            delay = self._next - now
            self._next = max(now, self._next) + self.interval
        if delay > 0:
            await asyncio.sleep(delay)


class Simulator:
    """Runs ``config.concurrency`` simulated-user workers until the budget is spent or stopped."""

    def __init__(
        self,
        config: SimConfig,
        preference: PreferenceFn | None = None,
        prompts: list[Prompt] | None = None,
        stats: SimStats | None = None,
    ) -> None:
        self.config = config
        self.base_preference = preference or load_preference(config.preference)
        self.rng = random.Random(config.seed)
        self.voter = NoisyPreference(
            self.base_preference, config.noise, random.Random(config.seed + 1)
        )
        self.rewrite = rewrite_for(self.base_preference)
        self.neutral = neutral_for(self.base_preference)
        self.prompts = prompts or load_prompts(config.prompts)
        self.stats = stats or SimStats()
        self._issued = 0
        self._stop = threading.Event()
        self._deadline = (time.monotonic() + config.duration) if config.duration > 0 else None

    def request_stop(self) -> None:
        """Thread-safe: no new comparison starts; in-flight ones finish."""
        self._stop.set()

    def resume(self) -> None:
        """Undo ``request_stop`` for the next ``run`` (once the last one returned): the
        acceptance run pauses its users while the learner trains and resumes them after."""
        self._stop.clear()

    def _claim(self) -> bool:
        if self._stop.is_set():
            return False
        if self._deadline is not None and time.monotonic() >= self._deadline:
            return False
        if self.config.comparisons and self._issued >= self.config.comparisons:
            return False
        if self.config.comparisons and self.stats.single >= SINGLE_CAP * self.config.comparisons:
            logger.warning(
                "serving answered %d requests with one answer: stopping before %d comparisons",
                self.stats.single,
                self.config.comparisons,
            )
            return False
        self._issued += 1
        return True

    def _unclaim(self) -> None:
        """A request that asked no comparison (one answer served) gives its claim back, so that
        ``comparisons`` counts the comparisons the users made, not the requests."""
        self._issued -= 1

    def make_client(self) -> ServiceClient:
        """The API client the users share (a test may record through a subclass)."""
        return ServiceClient(
            self.config.base_url, self.config.api_key, max_retries=self.config.client_retries
        )

    async def run(self) -> SimStats:
        client = self.make_client()
        try:
            model = self.config.model or await client.model_id()
            limiter = RateLimiter(self.config.rate)
            await asyncio.gather(
                *(
                    self._worker(client, model, limiter)
                    for _ in range(max(1, self.config.concurrency))
                )
            )
        finally:
            await client.aclose()
        return self.stats

    async def _worker(self, client: ServiceClient, model: str, limiter: RateLimiter) -> None:
        while self._claim():
            await limiter.wait()
            try:
                if not await self.one_comparison(client, model):
                    self._unclaim()
            except openai.APIStatusError as exc:
                self.stats.count("errors", f"chat_{exc.status_code}")
                logger.warning("chat request failed: %s", exc)
            except (openai.APIError, httpx.HTTPError) as exc:
                self.stats.count("errors", type(exc).__name__)
                logger.warning("request failed: %s", exc)
                await asyncio.sleep(0.5)  # the server may be restarting: do not spin

    async def one_comparison(self, client: ServiceClient, model: str) -> bool:
        """One chat request and the user's feedback on it. False when serving answered with
        one answer (informative pairing asked no comparison); True otherwise."""
        cfg = self.config
        user = f"sim-user-{self.rng.randrange(cfg.users):03d}"
        prompt = self.rng.choice(self.prompts).prompt
        self.stats.bump("requests")
        result = await client.chat(
            prompt,
            model=model,
            user=user,
            pair=True,
            k=cfg.k,
            max_tokens=cfg.max_tokens,
            temperature=cfg.temperature,
        )
        if result.pair_token is None and len(result.answers) == 1:
            self.stats.bump("single")
            return False
        if result.pair_token is None and len({a.text for a in result.answers}) == 1:
            self.stats.bump("unpaired")
            return True
        if result.pair_token is None or len(result.answers) < 2:
            self.stats.count("errors", "not_a_pair")
            return True
        self.stats.bump("pairs")
        texts = [a.text for a in result.answers]
        outcome = self.voter(prompt, texts)
        self.stats.record_answers(result.answers, self.base_preference(prompt, texts).utilities)
        self.stats.record_vote(result.answers, outcome)
        await self._send(
            client, "preference", preference_body(result.pair_token, user, result.answers, outcome)
        )
        if self.rng.random() < cfg.thumbs_rate:
            await self._send(client, "rating", self._rating_body(user, result.answers, outcome))
        if self.rewrite is not None and self.rng.random() < cfg.correction_rate:
            body = self._correction_body(prompt, user, result.answers, outcome)
            if body is not None:
                await self._send(client, "correction", body)
        return True

    def _rating_body(
        self, user: str, answers: list[Answer], outcome: PreferenceOutcome
    ) -> dict[str, Any]:
        i = self.rng.randrange(len(answers))
        if outcome.utilities is not None:
            rating = sample_rating(
                outcome.utilities[i], self.neutral, self.config.noise.temperature, self.rng
            )
        else:
            rating = "up" if outcome.best() == i else "down"
        return {"response_id": answers[i].response_id, "rating": rating, "user": user}

    def _correction_body(
        self, prompt: str, user: str, answers: list[Answer], outcome: PreferenceOutcome
    ) -> dict[str, Any] | None:
        assert self.rewrite is not None
        best = outcome.best()
        if best is None:
            best = 0
        text = self.rewrite(prompt, answers[best].text).strip()
        if not text or text == answers[best].text.strip():
            return None  # nothing to teach
        return {"response_id": answers[best].response_id, "correction": text, "user": user}

    async def _send(self, client: ServiceClient, kind: str, body: dict[str, Any]) -> None:
        try:
            resp = await client.feedback(body)
        except httpx.HTTPError as exc:
            self.stats.count("feedback_failed", kind)
            logger.warning("feedback %s failed: %s", kind, exc)
            return
        if resp.is_success:
            self.stats.count("feedback_ok", kind)
        else:
            self.stats.count("feedback_failed", kind)
            logger.warning("feedback %s refused: %d %s", kind, resp.status_code, resp.text[:200])


def preference_body(
    pair_token: str, user: str, answers: list[Answer], outcome: PreferenceOutcome
) -> dict[str, Any]:
    """The /v1/feedback body for a vote; "a"/"b" are positions in the order the API returned."""
    body: dict[str, Any] = {"pair_id": pair_token, "user": user}
    if outcome.kind in ("tie", "both_bad"):
        body["choice"] = outcome.kind
    elif len(answers) == 2:
        best = outcome.best()
        body["choice"] = "ab"[best if best is not None else 0]
    else:
        order = outcome.ranking or tuple(range(len(answers)))
        body["ranking"] = [answers[i].response_id for i in order]
    return body
