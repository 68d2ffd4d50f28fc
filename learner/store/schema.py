"""SQLite schema of the training store.

``events.seq`` (an AUTOINCREMENT rowid) is the store's clock: a snapshot is "every row whose
seq is <= N", which is what makes a training cycle's data set exact and replayable. Votes are
keyed by (pair, user) so a later vote replaces an earlier one (last-vote-wins); comparisons
are derived from votes when read, so a replaced vote can never leave a stale comparison.
``offsets.last_digest`` is the sha256 of the last consumed message's bytes: on restart the
consumer re-reads that message to prove the broker still holds the same log (see
learner.ingest.consumer).

Tables are created if missing; a column added to a table after its first release is listed in
``ADDED_COLUMNS`` too, and added to an older database when it opens (learner.store.db), with a
default that says what the older rows were. Version 2: ``canaries.guarded`` (1: a canary whose
reward model the gate could not certify, decided by stricter rules; learner.canary).
"""

SCHEMA_VERSION = 2

DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS offsets (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
    epoch INTEGER NOT NULL DEFAULT 0, epoch_start INTEGER NOT NULL DEFAULT 0,
    last_digest TEXT, PRIMARY KEY (topic, partition));
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE, kind TEXT NOT NULL,
    ts REAL NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
    epoch INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS served (
    response_id TEXT PRIMARY KEY, pair_id TEXT, idx INTEGER, user_id TEXT NOT NULL,
    messages TEXT NOT NULL, text TEXT NOT NULL, adapter_version TEXT NOT NULL,
    seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS pairs (
    pair_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, messages TEXT NOT NULL,
    response_ids TEXT NOT NULL, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS held (
    event_id TEXT PRIMARY KEY, ref_id TEXT NOT NULL, kind TEXT NOT NULL, payload TEXT NOT NULL,
    ts REAL NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
    seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS held_ref ON held (ref_id);
CREATE TABLE IF NOT EXISTS votes (
    pair_id TEXT NOT NULL, user_id TEXT NOT NULL, event_id TEXT NOT NULL, ts REAL NOT NULL,
    offset INTEGER NOT NULL, choice TEXT, ranking TEXT, seq INTEGER NOT NULL,
    PRIMARY KEY (pair_id, user_id));
CREATE TABLE IF NOT EXISTS ratings (
    response_id TEXT NOT NULL, user_id TEXT NOT NULL, event_id TEXT NOT NULL, ts REAL NOT NULL,
    offset INTEGER NOT NULL, rating TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (response_id, user_id));
CREATE TABLE IF NOT EXISTS corrections (
    event_id TEXT PRIMARY KEY, response_id TEXT NOT NULL, user_id TEXT NOT NULL,
    messages TEXT NOT NULL, text TEXT NOT NULL, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS erased_users (
    user_id TEXT PRIMARY KEY, event_id TEXT NOT NULL, ts REAL NOT NULL, seq INTEGER NOT NULL,
    rows_deleted INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS canaries (
    version TEXT PRIMARY KEY, baseline TEXT NOT NULL, started REAL NOT NULL, decided REAL,
    outcome TEXT, evidence TEXT, guarded INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT NOT NULL, label TEXT NOT NULL, value INTEGER NOT NULL,
    PRIMARY KEY (name, label));
CREATE TABLE IF NOT EXISTS cycles (
    cycle_id INTEGER PRIMARY KEY, started REAL NOT NULL, finished REAL, outcome TEXT,
    reason TEXT, version TEXT, max_seq INTEGER NOT NULL, metrics TEXT NOT NULL DEFAULT '{}');
"""

# (table, column, definition) of columns added after their table first shipped.
ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("canaries", "guarded", "INTEGER NOT NULL DEFAULT 0"),
)
