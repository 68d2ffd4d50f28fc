"""POST /v1/feedback: API order -> canonical order, who may vote, event ids (a new one per vote,
the same one for a retry with the same Idempotency-Key)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from schemas.events import FeedbackCorrection, FeedbackPreference, FeedbackRating, PairServed
from serving.errors import APIError
from serving.idempotency import IdempotencyKeys
from serving.security import IdSigner
from tests.learner.factories import Feeder, new_store
from tests.support.serving import API_KEY, HMAC_KEY, auth, harness, make_settings

pytestmark = pytest.mark.anyio
HELLO = [{"role": "user", "content": "Which is better?"}]


async def _pair(
    h: Any, k: int = 2, user: str = "alice", key: str = API_KEY
) -> tuple[dict[str, Any], PairServed]:
    r = await h.http.post(
        "/v1/chat/completions",
        headers=auth(key),
        json={"messages": HELLO, "pair": True, "k": k, "user": user},
    )
    assert r.status_code == 200, r.text
    event = h.events.of_kind("pair.served")[-1]
    return r.json(), event


async def _vote(h: Any, body: dict[str, Any], key: str = API_KEY) -> Any:
    return await h.http.post("/v1/feedback", json=body, headers=auth(key))


async def _vote_with_key(h: Any, body: dict[str, Any], idempotency_key: str) -> str:
    headers = {**auth(), "Idempotency-Key": idempotency_key}
    r = await h.http.post("/v1/feedback", json=body, headers=headers)
    assert r.status_code == 200, r.text
    event_id: str = r.json()["event_id"]
    return event_id


async def test_choice_a_b_map_to_canonical_order() -> None:
    async with harness() as h:
        seen_orders = set()
        for _ in range(12):  # both display orders occur (p of missing one: 2 * 0.5**12)
            body, served = await _pair(h)
            seen_orders.add(tuple(served.shown_order))
            for shown_choice in ("a", "b"):
                r = await _vote(
                    h, {"pair_id": body["pair_id"], "choice": shown_choice, "user": "alice"}
                )
                assert r.status_code == 200, r.text
                event = h.events.events[-1]
                assert isinstance(event, FeedbackPreference)
                assert event.pair_id == served.pair_id and event.user_id == served.user_id
                # The answer the user saw at that position is the one the event names.
                api_index = 0 if shown_choice == "a" else 1
                shown_text = body["choices"][api_index]["message"]["content"]
                canonical = 0 if event.choice == "a" else 1
                assert served.responses[canonical].text == shown_text
                assert served.shown_order[api_index] == canonical
        assert seen_orders == {(0, 1), (1, 0)}


@pytest.mark.parametrize("choice", ["tie", "both_bad"])
async def test_tie_and_both_bad_pass_through(choice: str) -> None:
    async with harness() as h:
        body, _ = await _pair(h)
        r = await _vote(h, {"pair_id": body["pair_id"], "choice": choice, "user": "alice"})
        assert r.status_code == 200 and r.json()["kind"] == "feedback.preference"
        assert h.events.events[-1].choice == choice


async def test_ranking_of_k() -> None:
    async with harness() as h:
        body, served = await _pair(h, k=3)
        ranking = [c["response_id"] for c in reversed(body["choices"])]
        r = await _vote(h, {"pair_id": body["pair_id"], "ranking": ranking, "user": "alice"})
        assert r.status_code == 200, r.text
        event = h.events.events[-1]
        by_text = {x.response_id: x.text for x in served.responses}
        assert [by_text[i] for i in event.ranking] == [
            c["message"]["content"] for c in reversed(body["choices"])
        ]
        # A choice cannot express a 3-way comparison; a partial ranking is refused.
        r = await _vote(h, {"pair_id": body["pair_id"], "choice": "a", "user": "alice"})
        assert r.status_code == 409 and r.json()["error"]["code"] == "ranking_required"
        r = await _vote(h, {"pair_id": body["pair_id"], "ranking": ranking[:2], "user": "alice"})
        assert r.status_code == 409 and r.json()["error"]["param"] == "ranking"
        other, _ = await _pair(h, k=3)
        mixed = [*ranking[:2], other["choices"][0]["response_id"]]
        r = await _vote(h, {"pair_id": body["pair_id"], "ranking": mixed, "user": "alice"})
        assert r.status_code == 409


async def test_rating_and_correction() -> None:
    async with harness() as h:
        body, served = await _pair(h)
        rid = body["choices"][1]["response_id"]
        canonical = served.responses[served.shown_order[1]]
        r = await _vote(h, {"response_id": rid, "rating": "down", "user": "alice"})
        assert r.status_code == 200
        rating = h.events.events[-1]
        assert isinstance(rating, FeedbackRating)
        assert (rating.response_id, rating.pair_id, rating.rating) == (
            canonical.response_id,
            served.pair_id,
            "down",
        )
        r = await _vote(h, {"response_id": rid, "correction": "A better answer.", "user": "alice"})
        assert r.status_code == 200
        correction = h.events.events[-1]
        assert isinstance(correction, FeedbackCorrection)
        assert correction.text == "A better answer."
        assert correction.response_id == canonical.response_id


async def test_unpaired_response_can_be_rated() -> None:
    async with harness() as h:
        r = await h.http.post(
            "/v1/chat/completions", headers=auth(), json={"messages": HELLO, "user": "alice"}
        )
        rid = r.json()["choices"][0]["response_id"]
        v = await _vote(h, {"response_id": rid, "rating": "up", "user": "alice"})
        assert v.status_code == 200
        served = h.events.of_kind("response.served")[-1]
        assert h.events.events[-1].response_id == served.response.response_id
        assert h.events.events[-1].pair_id is None


async def test_retry_with_the_same_idempotency_key_is_the_same_event() -> None:
    async with harness() as h:
        body, _ = await _pair(h)
        vote = {"pair_id": body["pair_id"], "choice": "a", "user": "alice"}
        first = await _vote_with_key(h, vote, "retry-1")
        again = await _vote_with_key(h, vote, "retry-1")
        other = await _vote_with_key(h, vote, "retry-2")
        assert first == again != other
        rid = body["choices"][0]["response_id"]
        up = {"response_id": rid, "rating": "up", "user": "alice"}
        assert await _vote_with_key(h, up, "k") == await _vote_with_key(h, up, "k")
        # A key names a request of one user: another user's request with it is not a retry.
        body_b, _ = await _pair(h, user="bob")
        bob = await _vote_with_key(
            h, {"pair_id": body_b["pair_id"], "choice": "a", "user": "bob"}, "retry-1"
        )
        assert bob != first


async def test_a_key_reused_with_another_vote_is_a_409_not_a_lost_vote() -> None:
    async with harness() as h:
        body, _ = await _pair(h)
        vote = {"pair_id": body["pair_id"], "choice": "b", "user": "alice"}
        first = await _vote_with_key(h, vote, "k-1")
        assert await _vote_with_key(h, vote, "k-1") == first
        headers = {**auth(), "Idempotency-Key": "k-1"}
        r = await h.http.post("/v1/feedback", json={**vote, "choice": "a"}, headers=headers)
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "idempotency_key_reused"
        assert len(h.events.events) == 3  # pair.served, then b twice: the a is not emitted
        # The same key on another target is another body too.
        rid = body["choices"][0]["response_id"]
        r = await h.http.post(
            "/v1/feedback",
            json={"response_id": rid, "rating": "up", "user": "alice"},
            headers=headers,
        )
        assert r.status_code == 409


async def test_a_reused_key_on_another_replica_is_a_new_event_not_a_duplicate() -> None:
    """Replicas share no memory of keys: there the reuse cannot be refused, but its event id
    differs from the first, so the learner keeps it as the later vote instead of dropping it."""
    async with harness() as h:
        body, _ = await _pair(h)
        vote = {"pair_id": body["pair_id"], "choice": "b", "user": "alice"}
        first = await _vote_with_key(h, vote, "k-1")
        h.app.state.services.idempotency = IdempotencyKeys(3600, 10)  # another replica's memory
        assert await _vote_with_key(h, {**vote, "choice": "a"}, "k-1") != first


def test_idempotency_keys_expire_and_stay_bounded() -> None:
    now = [0.0]
    keys = IdempotencyKeys(ttl_seconds=10, max_keys=2, clock=lambda: now[0])
    keys.claim("u", "k", "body-1")
    with pytest.raises(APIError):
        keys.claim("u", "k", "body-2")
    keys.claim("u", "k", "body-1")  # a retry
    keys.claim("v", "k", "body-2")  # another user's key of the same name
    now[0] = 11.0
    keys.claim("u", "k", "body-2")  # expired: a new first use
    keys.claim("w", "k", "x")
    keys.claim("z", "k", "x")  # the oldest (u) is forgotten past max_keys
    keys.claim("u", "k", "body-3")


async def test_without_a_key_every_vote_is_a_new_event() -> None:
    async with harness() as h:
        body, _ = await _pair(h)
        vote = {"pair_id": body["pair_id"], "choice": "a", "user": "alice"}
        ids = [(await _vote(h, {**vote, "choice": c})).json()["event_id"] for c in "aba"]
        assert len(set(ids)) == 3  # a vote changed back is not a duplicate of the first one
        rid = body["choices"][0]["response_id"]
        up = {"response_id": rid, "rating": "up", "user": "alice"}
        assert (await _vote(h, up)).json()["event_id"] != (await _vote(h, up)).json()["event_id"]


async def test_a_vote_changed_back_wins_in_the_learner_store(tmp_path: Path) -> None:
    async with harness() as h:
        body, served = await _pair(h)
        for choice in "aba":
            vote = {"pair_id": body["pair_id"], "choice": choice, "user": "alice"}
            assert (await _vote(h, vote)).status_code == 200
        feeder = Feeder(new_store(tmp_path))
        feeder.feed(*h.events.events)
    (comparison,) = feeder.store.comparisons()
    shown_first = served.responses[served.shown_order[0]].text
    assert comparison.chosen == shown_first == body["choices"][0]["message"]["content"]


@pytest.mark.parametrize("key", [b"", b"x" * 256, b"has space", "caf\u00e9".encode()])
async def test_bad_idempotency_keys_are_refused(key: bytes) -> None:
    async with harness() as h:
        body, _ = await _pair(h)
        r = await h.http.post(
            "/v1/feedback",
            json={"pair_id": body["pair_id"], "choice": "a", "user": "alice"},
            headers=[(k.encode(), v.encode()) for k, v in auth().items()]
            + [(b"Idempotency-Key", key)],
        )
        assert r.status_code == 400, r.text
        assert not h.events.of_kind("feedback.preference")


async def test_only_the_served_user_may_vote() -> None:
    other_key = "another-api-key-0123456789"
    async with harness(make_settings(api_keys=[API_KEY, other_key])) as h:
        body, _ = await _pair(h, user="alice")
        vote = {"pair_id": body["pair_id"], "choice": "a"}
        for user, key in (("mallory", API_KEY), ("alice", other_key), (None, API_KEY)):
            r = await _vote(h, {**vote, "user": user}, key=key)
            assert r.status_code == 403, (user, key)
            assert r.json()["error"]["code"] == "forged_id"
        rid = body["choices"][0]["response_id"]
        r = await _vote(h, {"response_id": rid, "rating": "up", "user": "mallory"})
        assert r.status_code == 403
        assert not h.events.of_kind("feedback.preference")
        assert not h.events.of_kind("feedback.rating")


async def test_forged_malformed_and_expired_ids() -> None:
    async with harness() as h:
        body, served = await _pair(h)
        forged = IdSigner("not-the-server-key-0123456789", 3600).pair(
            served.pair_id, [0, 1], h.events.events[-1].user_id
        )
        r = await _vote(h, {"pair_id": forged, "choice": "a", "user": "alice"})
        assert r.status_code == 403
        r = await _vote(h, {"pair_id": "garbage", "choice": "a", "user": "alice"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_id"
        expired = IdSigner(HMAC_KEY, -10).pair(served.pair_id, [0, 1], served.user_id)
        r = await _vote(h, {"pair_id": expired, "choice": "a", "user": "alice"})
        assert r.status_code == 410 and r.json()["error"]["code"] == "expired_id"
        # A response id does not pass as a pair id (the MAC binds the id's kind).
        rid = body["choices"][0]["response_id"]
        r = await _vote(h, {"pair_id": rid, "choice": "a", "user": "alice"})
        assert r.status_code == 403


@pytest.mark.parametrize(
    "body",
    [
        {"pair_id": "x"},
        {"pair_id": "x", "choice": "a", "rating": "up"},
        {"choice": "a"},
        {"response_id": "x", "rating": "meh"},
        {"pair_id": "x", "choice": "a", "text": "trust me"},
    ],
)
async def test_bad_feedback_bodies(body: dict[str, Any]) -> None:
    async with harness() as h:
        r = await _vote(h, body)
        assert r.status_code == 400
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}


async def test_feedback_needs_the_api_key() -> None:
    async with harness() as h:
        body, _ = await _pair(h)
        r = await h.http.post("/v1/feedback", json={"pair_id": body["pair_id"], "choice": "a"})
        assert r.status_code == 401
