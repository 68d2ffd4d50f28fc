"""Read the learner's SQLite training store from a test while the learner may be writing it."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any


def query_store(path: Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql``; [] while the store or its tables do not exist yet."""
    if not path.exists():
        return []
    conn = sqlite3.connect(path, timeout=30)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []  # tables not created yet
    finally:
        conn.close()
