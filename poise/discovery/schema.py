"""The archive's SQLite schema: its tables, and the triggers that back the append-only rules up in
SQLite itself (a write that breaks them aborts, whoever makes it). See `archive` for the rules.

Tables (schema version `SCHEMA_VERSION`, kept in `meta`):
    entries      id (0 = the GRPO baseline), name, parent_ids (JSON list; the first is *the* parent),
                 context_ids (JSON list: the references shown to the proposer, influences that are not
                 parents), generation, directive, proposal (JSON, opaque here: hypothesis,
                 mechanism, math, claims, tags, ...), code, code_hash, behaviour (hash of outputs on a probe
                 batch, or NULL), verification (JSON), status, status_reason, reflection (JSON), cost (JSON),
                 created_at, updated_at
    evaluations  entry_id, seed, purpose ("search" | "reeval" | "baseline"), fidelity, trajectory (JSON list
                 of per-step rows), metrics (JSON, as `evaluate_policy` returns them), wall_s, created_at;
                 UNIQUE(entry_id, seed, fidelity): one row per finished seed
    events       id, ts, entry_id (or NULL), kind, payload (JSON): an append-only log for the CLI
    meta         key, value (JSON): run settings (fidelity, directive, search seed, strategy, ...)
    llm_calls    id, ts, entry_id (or NULL), role, provider, model, cache_key, prompt (JSON messages), response,
                 tokens_in, tokens_out, cost_usd (NULL: price unknown), latency_s, attempts, cached (0/1),
                 ok (0/1), error: one row per LLM call, the run's accounting and its response cache (schema 2;
                 a schema-1 archive gains the table when opened for writing)
"""

from __future__ import annotations

SCHEMA_VERSION = 2
SQLITE_MAGIC = b"SQLite format 3\x00"

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE entries (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    parent_ids TEXT NOT NULL,
    context_ids TEXT NOT NULL DEFAULT '[]',
    generation INTEGER NOT NULL,
    directive TEXT NOT NULL,
    proposal TEXT NOT NULL,
    code TEXT NOT NULL,
    code_hash TEXT NOT NULL,
    behaviour TEXT,
    verification TEXT,
    status TEXT NOT NULL,
    status_reason TEXT NOT NULL DEFAULT '',
    reflection TEXT,
    cost TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX entries_code_hash ON entries(code_hash);
CREATE INDEX entries_behaviour ON entries(behaviour);
CREATE INDEX entries_status ON entries(status);
CREATE TABLE evaluations (
    id INTEGER PRIMARY KEY,
    entry_id INTEGER NOT NULL REFERENCES entries(id),
    seed INTEGER NOT NULL,
    purpose TEXT NOT NULL CHECK (purpose IN ('search', 'reeval', 'baseline')),
    fidelity TEXT NOT NULL,
    trajectory TEXT NOT NULL,
    metrics TEXT NOT NULL,
    wall_s REAL NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (entry_id, seed, fidelity)
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    entry_id INTEGER REFERENCES entries(id),
    kind TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX events_entry ON events(entry_id);
CREATE TRIGGER entries_no_delete BEFORE DELETE ON entries
    BEGIN SELECT RAISE(ABORT, 'poise archive is append-only: entries are never deleted'); END;
CREATE TRIGGER entries_identity BEFORE UPDATE OF id, name, parent_ids, context_ids, generation, directive,
    created_at ON entries
    BEGIN SELECT RAISE(ABORT, 'poise archive is append-only: an entry''s identity never changes'); END;
CREATE TRIGGER entries_code BEFORE UPDATE OF code, code_hash, proposal ON entries WHEN OLD.code != ''
    BEGIN SELECT RAISE(ABORT, 'poise archive is append-only: implemented code never changes'); END;
CREATE TRIGGER evaluations_no_delete BEFORE DELETE ON evaluations
    BEGIN SELECT RAISE(ABORT, 'poise archive is append-only: evaluations are never deleted'); END;
CREATE TRIGGER evaluations_no_update BEFORE UPDATE ON evaluations
    BEGIN SELECT RAISE(ABORT, 'poise archive is append-only: evaluations are never changed'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'poise archive is append-only: events are never deleted'); END;
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'poise archive is append-only: events are never changed'); END;
"""
# added in schema 2; `IF NOT EXISTS` so that it also upgrades a schema-1 archive in place
SCHEMA_LLM = """
CREATE TABLE IF NOT EXISTS llm_calls (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    entry_id INTEGER REFERENCES entries(id),
    role TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    cache_key TEXT NOT NULL,
    prompt TEXT NOT NULL,
    response TEXT NOT NULL,
    tokens_in INTEGER NOT NULL,
    tokens_out INTEGER NOT NULL,
    cost_usd REAL,
    latency_s REAL NOT NULL,
    attempts INTEGER NOT NULL,
    cached INTEGER NOT NULL,
    ok INTEGER NOT NULL,
    error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS llm_calls_key ON llm_calls(cache_key);
CREATE INDEX IF NOT EXISTS llm_calls_entry ON llm_calls(entry_id);
CREATE TRIGGER IF NOT EXISTS llm_calls_no_delete BEFORE DELETE ON llm_calls
    BEGIN SELECT RAISE(ABORT, 'poise archive is append-only: LLM calls are never deleted'); END;
CREATE TRIGGER IF NOT EXISTS llm_calls_no_update BEFORE UPDATE ON llm_calls
    BEGIN SELECT RAISE(ABORT, 'poise archive is append-only: LLM calls are never changed'); END;
"""
LLM_COLUMNS = ("ts", "entry_id", "role", "provider", "model", "cache_key", "prompt", "response", "tokens_in",
                "tokens_out", "cost_usd", "latency_s", "attempts", "cached", "ok", "error")
