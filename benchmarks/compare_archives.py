"""Are two discovery runs the same run? Compares two archives by content: settings, entries (names,
lineage, proposals, code and its hash, verification, behaviour, status, reflection), every evaluation's
metrics and per-step curves, and the event log in order. Timings (wall clocks, time stamps, any
``*_s`` field) are left out: they differ between any two runs. Used to show that a change of code
layout changed no behaviour:

    poise discover --budget 4 --fidelity smoke --out /tmp/before   # on the old code
    poise discover --budget 4 --fidelity smoke --out /tmp/after    # on the new code
    python benchmarks/compare_archives.py /tmp/before/archive.db /tmp/after/archive.db

Exit status 0 when identical, 1 with the first differences listed otherwise.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path

_TIMES = {"ts", "created_at", "updated_at", "finished"}


def _clean(value):
    """Drop timing fields at any depth; parse JSON text so that nested fields are compared, not strings."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            value = json.loads(value)
        except ValueError:
            return value
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in sorted(value.items()) if k not in _TIMES and not k.endswith("_s")}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def snapshot(path: Path) -> dict[str, list]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    out: dict[str, list] = {}
    for table, order in (("meta", "key"), ("entries", "id"), ("evaluations", "entry_id, fidelity, seed"),
                         ("events", "id")):
        rows = [dict(r) for r in db.execute(f"SELECT * FROM {table} ORDER BY {order}")]
        for r in rows:
            if table == "evaluations":
                r.pop("id")  # the row id follows the order evaluations finished in, which workers may change
        out[table] = [_clean({k: v for k, v in r.items() if k not in ("id",) or table == "entries"})
                      for r in rows if not (table == "meta" and r["key"] in _TIMES)]
        for r in out[table]:  # the log of a time-stamp setting carries the time stamp
            if table == "events" and r["kind"] == "meta" and r["payload"].get("key") in _TIMES:
                r["payload"] = {"key": r["payload"]["key"]}
    db.close()
    return out


def differences(a: dict[str, list], b: dict[str, list], limit: int = 20) -> list[str]:
    found = []
    for table in a:
        if len(a[table]) != len(b[table]):
            found.append(f"{table}: {len(a[table])} rows vs {len(b[table])}")
        for i, (ra, rb) in enumerate(zip(a[table], b[table])):
            if ra != rb:
                keys = sorted(k for k in set(ra) | set(rb) if ra.get(k) != rb.get(k))
                found.append(f"{table} row {i}: {', '.join(keys)} differ: "
                             + "; ".join(f"{k}: {json.dumps(ra.get(k))[:200]} vs {json.dumps(rb.get(k))[:200]}"
                                         for k in keys[:3]))
            if len(found) >= limit:
                return found
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    args = ap.parse_args(argv)
    a, b = snapshot(args.before), snapshot(args.after)
    diff = differences(a, b)
    if diff:
        print("the archives differ:\n  " + "\n  ".join(diff))
        return 1
    print("identical: " + ", ".join(f"{len(v)} {k}" for k, v in a.items()) + " (timings left out)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
