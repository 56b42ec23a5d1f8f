"""The genealogical archive M_t: every candidate, its lineage, its evaluations and what was learnt, in SQLite.

One file per discovery run. The loop is the only writer; `poise status` and the report read it while the
loop runs (`Archive(path, readonly=True)`). The archive is the loop's memory *and* its resume point: a
crash loses at most the seed being trained, because every write is its own committed transaction.

Durability: WAL journal with `synchronous=FULL`. WAL with NORMAL already survives a SIGKILL of the
process (a committed transaction is in the OS's page cache); FULL also survives a power cut, and
costs one fsync per commit, which is nothing next to a training run per seed. Readers never block the
writer and see a consistent snapshot (use `snapshot()` to make several reads share one).
A lock file (`<path>.lock`, flock) keeps a second writer out; the OS drops it when a writer dies.

The tables and their columns are described in `schema.py`.

Append-only rules (enforced in Python with clear messages, and by SQLite triggers as a backstop):
entries, evaluations and events are never deleted; an entry's identity (name, parents, context,
generation, directive) never changes; its code and proposal are final once code is set (an entry may be
proposed with code="" and implemented later with `set_code`, once); evaluations never change. Status
only moves forward:
    proposed -> verified -> evaluating -> evaluated
    proposed | verified -> rejected        (never evaluated: failed verification, or a duplicate)
    proposed | verified | evaluating -> failed   (broke: load error, crash, NaN, impossible metrics)
verification, behaviour and reflection are set once each; cost accumulates (`add_cost` adds numbers).
Evaluations are accepted only while an entry is "evaluating" or "evaluated" (re-evaluation), and an
entry becomes "evaluated" only with at least one evaluation.

Every write raises `ArchiveError` naming the entry, the problem and the fix. Reads: `get(id)` (with the
per-step trajectories), `entries(status)`, `in_flight()`, `evaluations(id)`, `find_code` / `find_behaviour`
(the earliest match), `children` / `lineage` / `depth`, `events(since_id, kind)`, `get_meta` / `meta`,
`llm_calls` / `llm_cached` / `llm_spent` (the agents' calls, `poise.agents.llm`); `with archive.snapshot():`
makes several reads see one consistent state. The records (`Entry`, `Evaluation`, `Event`) and the
status rules are in `records.py`, the SQL and its triggers in `schema.py`, the writer lock in
`writer_lock.py`.

Entries from find_code/find_behaviour/children/lineage carry their evaluations without the per-step
trajectories (None); get(id) has everything.

Events written by the archive itself: "entry", "status", "evaluation", "reflection", "meta". The loop
logs one "select" event per round (`log(SELECT_EVENT, entry_id=parent, round=t, ...)`); selection's
`nodes_from_archive` counts them for n_selected and the recency of U_div, so log exactly one per round.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from poise.discovery import writer_lock
from poise.discovery.records import (
    IN_FLIGHT,
    PURPOSES,
    SEARCH_PURPOSES,
    SELECT_EVENT,
    STATUSES,
    TRANSITIONS,
    ArchiveError,
    Entry,
    Evaluation,
    Event,
    code_hash,
)
from poise.discovery.schema import LLM_COLUMNS, SCHEMA, SCHEMA_LLM, SCHEMA_VERSION, SQLITE_MAGIC
from poise.evaluation.keys import check_metrics

__all__ = ["IN_FLIGHT", "PURPOSES", "SEARCH_PURPOSES", "SELECT_EVENT", "STATUSES", "TRANSITIONS", "Archive",
           "ArchiveError", "Entry", "Evaluation", "Event", "check_metrics", "code_hash"]


def _dumps(obj, what: str, allow_nan: bool = True) -> str:
    try:
        return json.dumps(obj, allow_nan=allow_nan)
    except (TypeError, ValueError) as e:
        raise ArchiveError(f"{what} must be JSON-serialisable plain data (dicts, lists, str, numbers): {e}") from e


class Archive:
    """One discovery run's archive file. Writer by default (one process at a time); readonly=True for
    `poise status`, reports and tests. `timeout_s` is how long a call waits for SQLite's lock."""

    def __init__(self, path: Path | str, readonly: bool = False, timeout_s: float = 30.0):
        self.path = Path(path)
        self.readonly = readonly
        self._lock = threading.RLock()  # one connection, shared safely by the loop's threads
        self._depth = 0  # nesting of transactions on this connection
        self._lock_fd: int | None = None
        self._con: sqlite3.Connection | None = None
        self._check_file()
        try:
            if readonly:
                self._con = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=timeout_s,
                                            isolation_level=None, check_same_thread=False)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._lock_fd, self._created_lock = writer_lock.take(self.path)
                self._con = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None,
                                            check_same_thread=False)
            self._con.execute("PRAGMA foreign_keys = ON")
            self._open_schema()
        except BaseException as e:
            self._abandon()
            if isinstance(e, sqlite3.DatabaseError):
                raise ArchiveError(f"{self.path} is not a usable poise archive ({e})") from e
            raise

    # -- opening -------------------------------------------------------------------------------------
    def _check_file(self) -> None:
        if self.path.is_dir():
            raise ArchiveError(f"{self.path} is a directory; give the archive's file path (e.g. {self.path}/archive.db)")
        if not self.path.exists():
            if self.readonly:
                raise ArchiveError(f"no archive at {self.path}; start a run with `poise discover` first")
            return
        with open(self.path, "rb") as f:
            head = f.read(16)
        if head and head != SQLITE_MAGIC:
            raise ArchiveError(f"{self.path} is not a poise archive (not an SQLite database); choose another path")

    def _abandon(self) -> None:
        """Undo a failed open, leaving no lock file beside someone else's file."""
        created = self._lock_fd is not None and self._created_lock
        self.close()
        if created:
            writer_lock.lock_path(self.path).unlink(missing_ok=True)

    writer_pid = staticmethod(writer_lock.writer_pid)

    def _open_schema(self) -> None:
        con = self._con
        assert con is not None  # called by __init__ right after connecting
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            if self.readonly:
                raise ArchiveError(f"{self.path} is an empty database, not a poise archive")
            con.execute("PRAGMA journal_mode = WAL")
            con.execute("PRAGMA synchronous = FULL")
            # executescript commits any open transaction first, so the script carries its own.
            con.executescript(f"BEGIN IMMEDIATE; {SCHEMA}{SCHEMA_LLM}"
                              f"INSERT INTO meta VALUES ('schema_version', '{json.dumps(SCHEMA_VERSION)}');"
                              f"INSERT INTO meta VALUES ('created_at', '{json.dumps(time.time())}'); COMMIT;")
            self._has_llm = True
            return
        row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() if "meta" in tables else None
        if row is None:
            raise ArchiveError(f"{self.path} is an SQLite database but not a poise archive (no schema version; "
                               f"tables: {sorted(tables)}); choose another path")
        version = json.loads(row[0])
        if version > SCHEMA_VERSION:
            raise ArchiveError(f"{self.path} has archive schema {version}, newer than this poise understands "
                               f"({SCHEMA_VERSION}); upgrade poise to read it")
        if not self.readonly:
            con.execute("PRAGMA journal_mode = WAL")
            con.execute("PRAGMA synchronous = FULL")
            if version < SCHEMA_VERSION:  # schema 1 -> 2: the LLM call table, nothing else changes
                con.executescript(f"BEGIN IMMEDIATE; {SCHEMA_LLM}"
                                  f"UPDATE meta SET value = '{json.dumps(SCHEMA_VERSION)}' WHERE key = 'schema_version';"
                                  f"COMMIT;")
        self._has_llm = "llm_calls" in tables or not self.readonly

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None
            if self._lock_fd is not None:
                writer_lock.release(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Archive({str(self.path)!r}{', readonly=True' if self.readonly else ''})"

    # -- transactions ---------------------------------------------------------------------------------
    @contextmanager
    def _tx(self, begin: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._con is None:
                raise ArchiveError(f"{self!r} is closed")
            if self._depth:  # nested: part of the enclosing transaction
                self._depth += 1
                try:
                    yield self._con
                finally:
                    self._depth -= 1
                return
            self._con.execute(begin)
            self._depth = 1
            try:
                yield self._con
            except BaseException:
                self._depth = 0
                self._con.execute("ROLLBACK")
                raise
            self._depth = 0
            try:
                self._con.execute("COMMIT")
            except BaseException:
                if self._con.in_transaction:
                    self._con.execute("ROLLBACK")
                raise

    def _write(self):
        if self.readonly:
            raise ArchiveError(f"{self!r} is read-only; open it without readonly=True to write")
        return self._tx("BEGIN IMMEDIATE")  # take the write lock up front: no upgrade deadlocks

    def snapshot(self):
        """Make several reads see one consistent state: `with archive.snapshot(): ...`."""
        return self._tx("BEGIN")

    # -- entries ------------------------------------------------------------------------------------
    def add_entry(self, name: str, code: str, proposal: dict, parent_ids: list[int] | tuple[int, ...] = (),
                  generation: int = 0, directive: str = "", status: str = "proposed",
                  context_ids: list[int] | tuple[int, ...] = ()) -> int:
        """Append a candidate; returns its id (0 for the first: the GRPO baseline). code="" records a
        proposal not implemented yet (see `set_code`); context_ids are the entries shown to the proposer as
        references (influences, not parents)."""
        if status not in STATUSES:
            raise ArchiveError(f"unknown status {status!r} for new entry {name!r}; choose one of {STATUSES}")
        if not isinstance(proposal, dict):
            raise ArchiveError(f"proposal of {name!r} must be a dict, got {type(proposal).__name__}")
        parents = [int(p) for p in parent_ids]
        context = [int(c) for c in context_ids]
        proposal_json = _dumps(proposal, f"proposal of {name!r}", allow_nan=False)
        now = time.time()
        with self._write() as con:
            for kind, ids in (("parent", parents), ("context entry", context)):
                for p in ids:
                    if con.execute("SELECT 1 FROM entries WHERE id = ?", (p,)).fetchone() is None:
                        raise ArchiveError(f"{kind} {p} of new entry {name!r} is not in the archive; add it first")
            new_id = con.execute("SELECT COALESCE(MAX(id) + 1, 0) FROM entries").fetchone()[0]
            con.execute(
                "INSERT INTO entries (id, name, parent_ids, context_ids, generation, directive, proposal, code, code_hash, "
                "status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (new_id, name, json.dumps(parents), json.dumps(context), int(generation), directive, proposal_json, code,
                 code_hash(code), status, now, now))
            self._log(con, "entry", new_id, {"name": name, "parent_ids": parents, "generation": generation,
                                            "status": status})
        return new_id

    def _status(self, con, entry_id: int) -> str:
        row = con.execute("SELECT status FROM entries WHERE id = ?", (entry_id,)).fetchone()
        if row is None:
            raise ArchiveError(f"entry {entry_id} is not in the archive {self.path}")
        return row[0]

    def set_status(self, entry_id: int, status: str, reason: str = "") -> None:
        """Move an entry forward (see TRANSITIONS); the reason is kept on the entry and in the event log."""
        with self._write() as con:
            current = self._status(con, entry_id)
            if status not in STATUSES:
                raise ArchiveError(f"entry {entry_id}: unknown status {status!r} (current {current!r}); "
                                   f"choose one of {STATUSES}")
            if status not in TRANSITIONS[current]:
                allowed = ", ".join(TRANSITIONS[current]) or "none (it is final)"
                raise ArchiveError(f"entry {entry_id}: cannot move status from {current!r} to {status!r}; status "
                                   f"only moves forward (allowed from {current!r}: {allowed})")
            if status == "evaluated":
                n = con.execute("SELECT COUNT(*) FROM evaluations WHERE entry_id = ?", (entry_id,)).fetchone()[0]
                if n == 0:
                    raise ArchiveError(f"entry {entry_id}: cannot mark 'evaluated' without any evaluation; "
                                       f"add_evaluation first, or mark it 'failed'")
            con.execute("UPDATE entries SET status = ?, status_reason = ?, updated_at = ? WHERE id = ?",
                        (status, reason, time.time(), entry_id))
            self._log(con, "status", entry_id, {"from": current, "to": status, "reason": reason})

    def set_code(self, entry_id: int, code: str, proposal: dict | None = None) -> None:
        """Implement a proposed entry that was added with code="": sets code and code_hash, and optionally the
        proposal as the implementer refined it. Once, and only while the entry is "proposed"."""
        if not code:
            raise ArchiveError(f"entry {entry_id}: set_code needs non-empty code")
        proposal_json = None if proposal is None else _dumps(proposal, f"proposal of entry {entry_id}", allow_nan=False)
        with self._write() as con:
            status = self._status(con, entry_id)
            old = con.execute("SELECT code FROM entries WHERE id = ?", (entry_id,)).fetchone()[0]
            if old:
                raise ArchiveError(f"entry {entry_id} already has code; code is set once (append-only). A new "
                                   f"implementation is a new entry")
            if status != "proposed":
                raise ArchiveError(f"entry {entry_id} is {status!r}; code can only be set while it is 'proposed'")
            con.execute("UPDATE entries SET code = ?, code_hash = ?, proposal = COALESCE(?, proposal), updated_at = ? "
                        "WHERE id = ?", (code, code_hash(code), proposal_json, time.time(), entry_id))

    def _set_once(self, entry_id: int, column: str, value: str, what: str) -> None:
        with self._write() as con:
            self._status(con, entry_id)
            old = con.execute(f"SELECT {column} FROM entries WHERE id = ?", (entry_id,)).fetchone()[0]
            if old is not None:
                raise ArchiveError(f"entry {entry_id} already has a {what}; it is set once (append-only). "
                                   f"Record follow-ups as events with archive.log(...)")
            con.execute(f"UPDATE entries SET {column} = ?, updated_at = ? WHERE id = ?", (value, time.time(), entry_id))
            if column == "reflection":
                self._log(con, "reflection", entry_id, {})

    def set_verification(self, entry_id: int, report: dict) -> None:
        self._set_once(entry_id, "verification", _dumps(report, f"verification of entry {entry_id}"), "verification report")

    def set_behaviour(self, entry_id: int, h: str) -> None:
        self._set_once(entry_id, "behaviour", str(h), "behaviour hash")

    def set_reflection(self, entry_id: int, reflection: dict) -> None:
        self._set_once(entry_id, "reflection", _dumps(reflection, f"reflection of entry {entry_id}"), "reflection")

    def add_cost(self, entry_id: int, **deltas: float) -> dict:
        """Accumulate costs (wall_s=..., tokens=..., attempts=...): cost[k] += v. Returns the new totals."""
        for k, v in deltas.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ArchiveError(f"entry {entry_id}: cost {k}={v!r} must be a finite number (costs add up)")
        with self._write() as con:
            self._status(con, entry_id)
            cost = json.loads(con.execute("SELECT cost FROM entries WHERE id = ?", (entry_id,)).fetchone()[0])
            for k, v in deltas.items():
                cost[k] = cost.get(k, 0) + v
            con.execute("UPDATE entries SET cost = ?, updated_at = ? WHERE id = ?",
                        (json.dumps(cost), time.time(), entry_id))
        return cost

    # -- evaluations --------------------------------------------------------------------------------
    def add_evaluation(self, entry_id: int, seed: int, fidelity: str, trajectory: list[dict], metrics: dict,
                       wall_s: float, purpose: str = "search", placement: dict | None = None) -> int:
        """Record one finished seed; ``placement`` (where it ran: ``ran_on``, and the ``attempts`` lost on a
        cluster) goes into its event. Raises on a duplicate (entry, seed, fidelity), on bad metrics (see
        `check_metrics`), or when the entry is not being evaluated."""
        if purpose not in PURPOSES:
            raise ArchiveError(f"entry {entry_id}: unknown evaluation purpose {purpose!r}; choose one of {PURPOSES}")
        problem = check_metrics(metrics)
        if problem:
            raise ArchiveError(f"entry {entry_id} seed {seed}: impossible metrics ({problem}); mark the candidate "
                               f"failed instead of recording them")
        traj = _dumps(list(trajectory), f"trajectory of entry {entry_id}")  # NaN curves are evidence: kept
        met = _dumps(metrics, f"metrics of entry {entry_id}", allow_nan=False)
        with self._write() as con:
            status = self._status(con, entry_id)
            if status not in ("evaluating", "evaluated"):
                raise ArchiveError(f"entry {entry_id} is {status!r}; set_status(id, 'evaluating') before adding "
                                   f"evaluations")
            try:
                cur = con.execute(
                    "INSERT INTO evaluations (entry_id, seed, purpose, fidelity, trajectory, metrics, wall_s, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (entry_id, int(seed), purpose, fidelity, traj, met, float(wall_s), time.time()))
            except sqlite3.IntegrityError as e:
                raise ArchiveError(f"entry {entry_id} already has an evaluation for seed {seed} at fidelity "
                                   f"{fidelity!r}; evaluations are never overwritten (check has_evaluation first)") from e
            con.execute("UPDATE entries SET updated_at = ? WHERE id = ?", (time.time(), entry_id))
            self._log(con, "evaluation", entry_id, {"seed": int(seed), "fidelity": fidelity, "purpose": purpose,
                                                   "overall": metrics["overall"], "wall_s": float(wall_s),
                                                   **(placement or {})})
            return cur.lastrowid

    def has_evaluation(self, entry_id: int, seed: int, fidelity: str) -> bool:
        with self.snapshot() as con:
            return con.execute("SELECT 1 FROM evaluations WHERE entry_id = ? AND seed = ? AND fidelity = ?",
                               (entry_id, int(seed), fidelity)).fetchone() is not None

    def evaluations(self, entry_id: int, purpose: str | None = None, trajectories: bool = True) -> list[Evaluation]:
        with self.snapshot() as con:
            evs = self._load_evaluations(con, [entry_id], trajectories).get(entry_id, [])
        return [e for e in evs if purpose in (None, e.purpose)]

    def _load_evaluations(self, con, ids: list[int] | None, trajectories: bool) -> dict[int, list[Evaluation]]:
        traj = "trajectory" if trajectories else "NULL"
        sql = f"SELECT id, entry_id, seed, purpose, fidelity, {traj}, metrics, wall_s, created_at FROM evaluations"
        rows = (con.execute(sql + " ORDER BY id") if ids is None else
                con.execute(sql + f" WHERE entry_id IN ({','.join('?' * len(ids))}) ORDER BY id", ids))
        out: dict[int, list[Evaluation]] = {}
        for r in rows:
            out.setdefault(r[1], []).append(Evaluation(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]) if r[5] else None,
                                                       json.loads(r[6]), r[7], r[8]))
        return out

    # -- reading entries ----------------------------------------------------------------------------
    _ENTRY_COLS = ("id, name, parent_ids, context_ids, generation, directive, proposal, code, code_hash, behaviour, "
                   "verification, status, status_reason, reflection, cost, created_at, updated_at")

    @staticmethod
    def _entry(r) -> Entry:
        def j(s):
            return None if s is None else json.loads(s)
        return Entry(r[0], r[1], json.loads(r[2]), json.loads(r[3]), r[4], r[5], json.loads(r[6]), r[7], r[8], r[9],
                     j(r[10]), r[11], r[12], j(r[13]), json.loads(r[14]), r[15], r[16])

    def _select(self, where: str = "", args: tuple = (), trajectories: bool = True) -> list[Entry]:
        with self.snapshot() as con:
            entries = [self._entry(r) for r in con.execute(f"SELECT {self._ENTRY_COLS} FROM entries {where} ORDER BY id",
                                                           args)]
            if entries:
                evs = self._load_evaluations(con, None if not where else [e.id for e in entries], trajectories)
                for e in entries:
                    e.evaluations = evs.get(e.id, [])
        return entries

    def get(self, entry_id: int, trajectories: bool = True) -> Entry:
        found = self._select("WHERE id = ?", (entry_id,), trajectories)
        if not found:
            raise ArchiveError(f"entry {entry_id} is not in the archive {self.path}")
        return found[0]

    def entries(self, status: str | None = None, trajectories: bool = True) -> list[Entry]:
        """All entries (or those with one status), oldest first, with their evaluations. trajectories=False
        skips the per-step curves (what `poise status` needs is the metrics)."""
        if status is None:
            return self._select(trajectories=trajectories)
        if status not in STATUSES:
            raise ArchiveError(f"unknown status {status!r}; choose one of {STATUSES}")
        return self._select("WHERE status = ?", (status,), trajectories)

    def in_flight(self) -> list[Entry]:
        """Entries a resume must re-handle: proposed (verify), verified (evaluate), evaluating (finish the
        seeds that have no evaluation yet)."""
        return self._select(f"WHERE status IN ({','.join('?' * len(IN_FLIGHT))})", IN_FLIGHT)

    def _find(self, column: str, value: str) -> Entry | None:
        found = self._select(f"WHERE id = (SELECT MIN(id) FROM entries WHERE {column} = ?)", (value,), False)
        return found[0] if found else None

    def find_code(self, h: str) -> Entry | None:
        """The earliest entry whose code has this `code_hash` (whatever its status), or None."""
        return self._find("code_hash", h)

    def find_behaviour(self, h: str) -> Entry | None:
        """The earliest entry with this behaviour hash, or None."""
        return self._find("behaviour", h)

    def children(self, entry_id: int) -> list[Entry]:
        """Entries whose first parent is `entry_id` (the genealogy tree), oldest first."""
        return self._select("WHERE json_extract(parent_ids, '$[0]') = ?", (entry_id,), False)

    def lineage(self, entry_id: int) -> list[Entry]:
        """The chain of first parents from the root to `entry_id` (root first)."""
        with self.snapshot() as con:
            chain, cur = [], entry_id
            while cur is not None:
                r = con.execute("SELECT json_extract(parent_ids, '$[0]') FROM entries WHERE id = ?", (cur,)).fetchone()
                if r is None:
                    raise ArchiveError(f"entry {cur} is not in the archive {self.path}")
                chain.append(cur)
                cur = r[0]
            by_id = {e.id: e for e in self._select(f"WHERE id IN ({','.join('?' * len(chain))})", tuple(chain), False)}
        return [by_id[i] for i in reversed(chain)]

    def depth(self, entry_id: int) -> int:
        """Generations below the root along first parents (the baseline has depth 0)."""
        return len(self.lineage(entry_id)) - 1

    # -- events and meta ----------------------------------------------------------------------------
    def _log(self, con, kind: str, entry_id: int | None, payload: dict) -> int:
        cur = con.execute("INSERT INTO events (ts, entry_id, kind, payload) VALUES (?, ?, ?, ?)",
                          (time.time(), entry_id, kind, _dumps(payload, f"payload of event {kind!r}")))
        return cur.lastrowid

    def log(self, kind: str, entry_id: int | None = None, **payload) -> int:
        """Append an event (its own transaction); returns its id."""
        with self._write() as con:
            if entry_id is not None:
                self._status(con, entry_id)
            return self._log(con, kind, entry_id, payload)

    def events(self, since_id: int = 0, kind: str | None = None, entry_id: int | None = None) -> list[Event]:
        """Events with id > since_id, oldest first (poll with the last id seen)."""
        sql = "SELECT id, ts, entry_id, kind, payload FROM events WHERE id > ?"
        args: list[Any] = [since_id]
        if kind is not None:
            sql, args = sql + " AND kind = ?", args + [kind]
        if entry_id is not None:
            sql, args = sql + " AND entry_id = ?", args + [entry_id]
        with self.snapshot() as con:
            return [Event(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in con.execute(sql + " ORDER BY id", args)]

    def get_meta(self, key: str, default: Any = None) -> Any:
        with self.snapshot() as con:
            row = con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_meta(self, key: str, value: Any) -> None:
        """Set a run setting (JSON value). Changing one is allowed (e.g. a larger budget on resume) and logged."""
        if key == "schema_version":
            raise ArchiveError("schema_version is managed by the archive itself")
        val = _dumps(value, f"meta {key!r}", allow_nan=False)
        with self._write() as con:
            row = con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            if row is not None and row[0] == val:
                return
            con.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, val))
            self._log(con, "meta", None, {"key": key, "old": None if row is None else json.loads(row[0]), "new": value})

    def meta(self) -> dict[str, Any]:
        with self.snapshot() as con:
            return {k: json.loads(v) for k, v in con.execute("SELECT key, value FROM meta ORDER BY key")}

    # -- LLM calls ----------------------------------------------------------------------------------
    def add_llm_call(self, **row: Any) -> int:
        """Record one LLM call (see the llm_calls table); every column but ts is required."""
        row.setdefault("ts", time.time())
        missing = set(LLM_COLUMNS) - set(row) - {"entry_id", "cost_usd", "error"}
        unknown = set(row) - set(LLM_COLUMNS)
        if missing or unknown:
            raise ArchiveError(f"LLM call record: missing {sorted(missing)}, unknown {sorted(unknown)}")
        row.setdefault("entry_id", None)
        row.setdefault("cost_usd", None)
        row.setdefault("error", "")
        with self._write() as con:
            if row["entry_id"] is not None:
                self._status(con, row["entry_id"])
            cur = con.execute(f"INSERT INTO llm_calls ({', '.join(LLM_COLUMNS)}) VALUES "
                              f"({', '.join('?' * len(LLM_COLUMNS))})", [row[c] for c in LLM_COLUMNS])
            return cur.lastrowid

    def llm_cached(self, cache_key: str) -> dict | None:
        """The earliest successful, paid-for call with this key (its response is the cached answer)."""
        if not self._has_llm:
            return None
        with self.snapshot() as con:
            r = con.execute(f"SELECT id, {', '.join(LLM_COLUMNS)} FROM llm_calls WHERE cache_key = ? AND ok = 1 "
                            f"AND cached = 0 ORDER BY id LIMIT 1", (cache_key,)).fetchone()
        return None if r is None else dict(zip(("id",) + LLM_COLUMNS, r))

    def llm_calls(self, entry_id: int | None = None) -> list[dict]:
        """Every recorded LLM call (oldest first), or those made for one entry."""
        if not self._has_llm:
            return []
        sql = f"SELECT id, {', '.join(LLM_COLUMNS)} FROM llm_calls"
        args: tuple[int, ...] = ()
        if entry_id is not None:
            sql, args = sql + " WHERE entry_id = ?", (entry_id,)
        with self.snapshot() as con:
            return [dict(zip(("id",) + LLM_COLUMNS, r)) for r in con.execute(sql + " ORDER BY id", args)]

    def llm_spent(self) -> tuple[int, float]:
        """Tokens and dollars paid so far (cached answers cost nothing; unknown prices count as 0 dollars)."""
        if not self._has_llm:
            return 0, 0.0
        with self.snapshot() as con:
            t, usd = con.execute("SELECT COALESCE(SUM(tokens_in + tokens_out), 0), COALESCE(SUM(cost_usd), 0) "
                                 "FROM llm_calls WHERE cached = 0").fetchone()
        return int(t), float(usd)

    def integrity_check(self) -> str:
        """SQLite's own consistency check: "ok", or the problems it found."""
        with self._lock:
            if self._con is None:
                raise ArchiveError(f"{self!r} is closed")
            rows = self._con.execute("PRAGMA integrity_check").fetchall()
        return "\n".join(r[0] for r in rows)
