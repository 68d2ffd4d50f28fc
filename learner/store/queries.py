"""Read side of the store: training examples as of a snapshot (``min_seq < seq <= max_seq``).

Preferences become ``learner.data.Comparison``: "a"/"b" give one comparison; a ranking of K
answers gives all C(K, 2) ordered pairs, each weighted 1/C(K, 2) so one ranking counts as much
as one pairwise vote (InstructGPT, Ouyang et al. 2022, sec. 3.5: "we train on all C(K,2)
comparisons from each prompt as a single batch element"). A "tie" is a comparison with target
0.5 (the two rewards should be equal). "both_bad" says nothing about the order, so it becomes
two thumbs-down ``Rating`` rows instead, beside the users' own thumbs up/down.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from itertools import combinations
from typing import Any

from learner.data import Comparison, Prompt, Rating, SFTExample
from schemas.events import ChatMessage


def _prompt(messages_json: str) -> Prompt:
    return tuple(ChatMessage(**m) for m in json.loads(messages_json))


def _seq_filter(min_seq: int, max_seq: int | None, col: str = "seq") -> tuple[str, list[int]]:
    if max_seq is None:
        return f"{col} > ?", [min_seq]
    return f"{col} > ? AND {col} <= ?", [min_seq, max_seq]


def _rows_in(
    conn: sqlite3.Connection, sql: str, min_seq: int, max_seq: int | None, col: str = "seq"
) -> list[Any]:
    """The rows of ``sql`` whose ``col`` is in (min_seq, max_seq]: its ``{where}`` is filled
    with that condition, the bounds passed as parameters."""
    where, params = _seq_filter(min_seq, max_seq, col)
    return conn.execute(sql.format(where=where), params).fetchall()


def comparisons(conn: sqlite3.Connection, min_seq: int, max_seq: int | None) -> list[Comparison]:
    rows = _rows_in(
        conn,
        "SELECT v.pair_id, v.choice, v.ranking, p.messages, p.response_ids, v.user_id "
        "FROM votes v JOIN pairs p ON p.pair_id = v.pair_id WHERE {where} "
        "ORDER BY v.seq, v.pair_id, v.user_id",
        min_seq,
        max_seq,
        "v.seq",
    )
    out: list[Comparison] = []
    for pair_id, choice, ranking_json, msgs, ids_json, user in rows:
        ids = json.loads(ids_json)
        if ranking_json is not None:
            order = json.loads(ranking_json)
        elif choice in ("a", "b"):
            order = [ids[0], ids[1]] if choice == "a" else [ids[1], ids[0]]
        elif choice == "tie" and len(ids) == 2:
            texts = _texts(conn, ids)
            out.append(
                Comparison(pair_id, _prompt(msgs), texts[ids[0]], texts[ids[1]], 1.0, 0.5, user)
            )
            continue
        else:
            continue  # both_bad: a rating of each answer, see ratings()
        texts = _texts(conn, order)
        weight = 1.0 / (len(order) * (len(order) - 1) / 2)
        prompt = _prompt(msgs)
        for better, worse in combinations(order, 2):
            out.append(Comparison(pair_id, prompt, texts[better], texts[worse], weight, 1.0, user))
    return out


def ratings(conn: sqlite3.Connection, min_seq: int, max_seq: int | None) -> list[Rating]:
    """Thumbs up/down on served answers, and both answers of each "both bad" vote as down."""
    rows = _rows_in(
        conn,
        "SELECT COALESCE(s.pair_id, s.response_id), s.messages, s.text, r.rating FROM ratings r "
        "JOIN served s ON s.response_id = r.response_id WHERE {where} ORDER BY r.seq, r.user_id",
        min_seq,
        max_seq,
        "r.seq",
    )
    out = [Rating(ref, _prompt(msgs), text, rating == "up") for ref, msgs, text, rating in rows]
    rows = _rows_in(
        conn,
        "SELECT v.pair_id, p.messages, p.response_ids FROM votes v "
        "JOIN pairs p ON p.pair_id = v.pair_id WHERE {where} AND v.choice = 'both_bad' "
        "ORDER BY v.seq, v.user_id",
        min_seq,
        max_seq,
        "v.seq",
    )
    for pair_id, msgs, ids_json in rows:
        texts = _texts(conn, json.loads(ids_json))
        out += [Rating(pair_id, _prompt(msgs), text, False) for text in texts.values()]
    return out


def count_comparisons(conn: sqlite3.Connection, min_seq: int) -> int:
    """``len(comparisons(conn, min_seq, None))`` without materialising them (daemon trigger)."""
    row = conn.execute(
        "SELECT COALESCE(SUM(CASE WHEN ranking IS NOT NULL "
        "THEN json_array_length(ranking) * (json_array_length(ranking) - 1) / 2 "
        "WHEN choice IN ('a', 'b', 'tie') THEN 1 ELSE 0 END), 0) FROM votes WHERE seq > ?",
        (min_seq,),
    ).fetchone()
    return int(row[0])


def _texts(conn: sqlite3.Connection, ids: list[str]) -> dict[str, str]:
    marks = ",".join("?" * len(ids))
    rows = conn.execute(f"SELECT response_id, text FROM served WHERE response_id IN ({marks})", ids)
    return dict(rows.fetchall())


def sft_examples(conn: sqlite3.Connection, min_seq: int, max_seq: int | None) -> list[SFTExample]:
    rows = _rows_in(
        conn, "SELECT messages, text FROM corrections WHERE {where} ORDER BY seq", min_seq, max_seq
    )
    return [SFTExample(_prompt(m), t) for m, t in rows]


def prompts(conn: sqlite3.Connection, max_seq: int | None) -> list[Prompt]:
    """Distinct logged real prompts (from pairs and single responses), in first-seen order."""
    rows = _rows_in(
        conn,
        "SELECT messages, MIN(seq) AS first FROM served WHERE {where} GROUP BY messages "
        "ORDER BY first",
        0,
        max_seq,
    )
    return [_prompt(m) for m, _ in rows]


def is_heldout(prompt: Prompt, fraction: float) -> bool:
    """Stable train/held-out split by prompt hash: a prompt never moves between the two."""
    key = json.dumps([m.model_dump() for m in prompt], sort_keys=True).encode()
    bucket = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2.0**64
    return bucket < fraction


def split_prompts(prompts: list[Prompt], fraction: float) -> tuple[list[Prompt], list[Prompt]]:
    """(train, held-out) by :func:`is_heldout`. Too few distinct prompts to split: all of them
    on both sides (the caller says the evaluation is then not held out)."""
    flags = [is_heldout(p, fraction) for p in prompts]  # one hash per prompt
    held = [p for p, out in zip(prompts, flags, strict=True) if out]
    train = [p for p, out in zip(prompts, flags, strict=True) if not out]
    if not train or not held:
        return prompts, prompts
    return train, held
