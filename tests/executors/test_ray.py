"""The Ray executor on a real local Ray cluster (`ray.cluster_utils.Cluster`: a head that runs nothing and
worker nodes with logical GPUs declared on the CPU), driving the real loop at smoke fidelity."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

if not os.environ.get("POISE_REQUIRE_RAY"):  # CI installs Ray: there these tests must run, never skip
    pytest.importorskip("ray")
import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from poise.backends import BackendSpec  # noqa: E402
from poise.backends.worker import AlgorithmSpec, EvalFailure  # noqa: E402
from poise.discovery.archive import Archive  # noqa: E402
from poise.discovery.loop import DiscoverConfig, Loop  # noqa: E402
from poise.executors import EvalJob  # noqa: E402
from poise.executors.ray import RayConfig, RayExecutor  # noqa: E402

SMOKE = BackendSpec("tiny", "smoke")
HANG = "def compute_advantages(batch, cfg):\n    while True:\n        pass\n"


def _cfg(**kw):
    base = dict(budget=2, fidelity="smoke", reeval_top=1, reeval_seeds=(1001,), threads=1, verify_timeout_s=8,
                race_seeds=1, workers=1)
    base.update(kw)
    return DiscoverConfig(**base)


def _cluster(nodes: int) -> Cluster:
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    for _ in range(nodes):
        c.add_node(num_cpus=1, num_gpus=1)
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    return c


@pytest.fixture(scope="module")
def cluster():
    c = _cluster(2)
    yield c
    ray.shutdown()
    c.shutdown()


def content(path) -> dict:
    """What an archive says, without when and where: entries and their evaluations, timings left out."""
    a = Archive(path, readonly=True)
    try:
        out = {}
        for e in a.entries():
            d = {k: getattr(e, k) for k in ("name", "parent_ids", "context_ids", "generation", "directive", "proposal",
                                            "code", "code_hash", "behaviour", "status", "reflection")}
            d["verification"] = json.loads(json.dumps(e.verification, default=str)) if e.verification else None
            d["evaluations"] = sorted(
                (v.seed, v.purpose, v.fidelity, json.dumps(v.metrics, sort_keys=True),
                 json.dumps([{k: x for k, x in row.items() if not k.endswith("_s")} for row in v.trajectory],
                            sort_keys=True))
                for v in a.evaluations(e.id))
            out[e.id] = d
        return out
    finally:
        a.close()


def placements(path) -> list[dict]:
    a = Archive(path, readonly=True)
    try:
        return [{**ev.payload, "entry": ev.entry_id} for ev in a.events() if ev.kind == "evaluation"]
    finally:
        a.close()



def test_a_smoke_run_on_ray_gives_the_local_pools_archive(cluster, tmp_path):
    Loop(tmp_path / "local", _cfg()).run()
    ex = RayExecutor(1, RayConfig(gpus_per_eval=1))  # a logical GPU each: one evaluation per node at a time
    Loop(tmp_path / "ray", _cfg(), executor=ex).run()
    local, remote = content(tmp_path / "local" / "archive.db"), content(tmp_path / "ray" / "archive.db")
    for d in list(local.values()) + list(remote.values()):  # the verifier's report carries its own times
        for v in [d["verification"] or {}] + (d["verification"] or {}).get("attempts", []):
            v.pop("wall_s", None)
    assert local.keys() == remote.keys()
    for i in local:  # field by field, so a difference names itself
        for k in local[i]:
            assert local[i][k] == remote[i][k], (i, k)
    kinds = {e["purpose"] for e in placements(tmp_path / "ray" / "archive.db")}
    assert kinds == {"baseline", "search", "reeval"}  # every kind of evaluation went to Ray
    nodes = {n.node_id[:8] for n in cluster.list_all_nodes() if n is not cluster.head_node}
    for p in placements(tmp_path / "ray" / "archive.db"):
        assert p["ran_on"].startswith("ray:") and p["ran_on"].split("/")[-1] in nodes and p["attempts"] == []
    assert {p["ran_on"] for p in placements(tmp_path / "local" / "archive.db")} == {"local"}


def test_a_hung_evaluation_is_cancelled_at_its_limit(cluster):
    ex = RayExecutor(2, RayConfig())
    job = EvalJob(AlgorithmSpec("hang", source=HANG, origin="test:hang"), SMOKE, 0, threads=1, timeout_s=12)
    t = time.monotonic()
    res = ex.submit(job).result(timeout=120)
    took = time.monotonic() - t
    assert isinstance(res, EvalFailure) and res.kind == "timeout", res
    assert 12 <= took < 12 + 30
    # the driver's own cancel, for a task that does not stop itself: the grace made negative, so the driver
    # gives up before the worker process would
    ex.config = RayConfig(grace_s=-30)
    job = EvalJob(AlgorithmSpec("hang", source=HANG, origin="test:hang"), SMOKE, 0, threads=1, timeout_s=45)
    t = time.monotonic()
    res = ex.submit(job).result(timeout=120)
    took = time.monotonic() - t
    assert isinstance(res, EvalFailure) and res.kind == "timeout" and "cancelled" in res.message, res
    assert 15 <= took < 15 + 20
    # both nodes are free again: two evaluations run at once and finish
    futs = [ex.submit(EvalJob(AlgorithmSpec("grpo"), SMOKE, s, threads=1, timeout_s=120)) for s in (0, 1)]
    assert all(not isinstance(f.result(timeout=180), EvalFailure) for f in futs)
    ex.shutdown()


def test_a_killed_executor_cancels_what_is_in_flight(cluster):
    ex = RayExecutor(1, RayConfig())
    steps = []
    fut = ex.submit(EvalJob(AlgorithmSpec("grpo"), SMOKE, 0, threads=1, timeout_s=300), lambda i, r: steps.append(i))
    deadline = time.monotonic() + 120
    while not ex.where and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ex.where
    t = time.monotonic()
    ex.shutdown(kill=True)  # what Ctrl-C and a crash of the loop do
    res = fut.result(timeout=5)
    assert time.monotonic() - t < 15
    assert isinstance(res, EvalFailure) and not steps[3:]


def test_a_node_lost_mid_evaluation_is_retried_elsewhere_and_archived_once(cluster, tmp_path):
    ex = RayExecutor(1, RayConfig(gpus_per_eval=1))
    removed = {}

    def remove_the_busy_node() -> None:  # once the baseline is archived and a candidate runs, lose its node
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not removed:
            busy = set(ex.where.values())
            a = tmp_path / "archive.db"
            if busy and a.exists() and any(p.get("purpose") == "baseline" for p in _safe(placements, a)):
                node = next(iter(busy)).split("/")[-1]
                for n in cluster.list_all_nodes():
                    if n is not cluster.head_node and n.node_id.startswith(node):
                        time.sleep(1.0)  # mid-training
                        cluster.remove_node(n, allow_graceful=False)
                        removed["node"] = node
            time.sleep(0.2)

    t = threading.Thread(target=remove_the_busy_node, daemon=True)
    t.start()
    try:
        Loop(tmp_path, _cfg(budget=2, reeval_top=0), executor=ex).run()
    finally:
        t.join(timeout=5)
        cluster.add_node(num_cpus=1, num_gpus=1)  # the next test's cluster has two nodes again
        cluster.wait_for_nodes()
    assert removed, "no evaluation was seen running"
    a = Archive(tmp_path / "archive.db", readonly=True)
    trained = [e for e in a.entries() if e.id != 0]
    assert len([e for e in trained if e.status == "evaluated"]) == 2
    keys = [(v.entry_id, v.seed) for e in a.entries() for v in a.evaluations(e.id)]
    assert len(keys) == len(set(keys)) == 3  # GRPO and two candidates: nothing lost, nothing twice
    a.close()
    retried = [p for p in placements(tmp_path / "archive.db") if p["attempts"]]
    assert len(retried) == 1
    assert retried[0]["attempts"][0]["node"].endswith(removed["node"])
    assert not retried[0]["ran_on"].endswith(removed["node"])  # it finished elsewhere
    r = subprocess.run([sys.executable, "-m", "poise.cli", "status", str(tmp_path)], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "COLUMNS": "200"})
    said = " ".join(r.stdout.split())
    assert r.returncode == 0 and "evaluations ran on: ray:" in said, r.stdout + r.stderr
    assert f"1 run again after a lost worker or node: #{retried[0]['entry']}" in said and removed["node"] in said


def _safe(f, *a):
    try:
        return f(*a)
    except Exception:  # the archive is being created
        return []


def _wait_for(p, out, n: int, deadline_s: float = 240) -> dict:
    """The archive's finished evaluations once there are ``n`` of them (the run still going)."""
    from tests.discovery.test_loop import _eval_keys

    deadline = time.time() + deadline_s
    while time.time() < deadline:
        time.sleep(0.5)
        if (out / "archive.db").exists():
            try:
                got, _ = _eval_keys(out / "archive.db")
            except Exception:
                continue
            if len(got) >= n:
                return got
        assert p.poll() is None, p.stderr.read().decode()
    raise AssertionError(f"fewer than {n} evaluations after {deadline_s}s")


def test_ctrl_c_and_sigkill_of_the_driver_then_resume_lose_and_repeat_nothing(tmp_path):
    """As with the local pool: Ctrl-C (SIGINT to the foreground group) stops `poise discover --executor ray`
    with the resume command; resumed, a kill -9 of the whole group (its own Ray included) mid-run; resumed
    again, the budget finishes without losing or re-running a finished evaluation."""
    from tests.discovery.test_loop import _eval_keys

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "poise.cli", "discover", "--fidelity", "smoke", "--budget", "4", "--out", str(out),
           "--reeval-top", "0", "--threads", "1", "--workers", "1", "--executor", "ray", "--cpus-per-eval", "1"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # SIGINT's default action, as a terminal gives it (a suite started in the background inherits it ignored)
    p = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _wait_for(p, out, 1)
    os.killpg(p.pid, signal.SIGINT)
    assert p.wait(timeout=90) == 130
    assert "continue with: poise discover --resume --out" in " ".join(p.stderr.read().decode().split())
    first, _ = _eval_keys(out / "archive.db")
    p = subprocess.Popen(cmd + ["--resume"], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         env=env)
    _wait_for(p, out, len(first) + 1)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    before, _ = _eval_keys(out / "archive.db")
    assert len(before) > len(first)
    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    after, _ = _eval_keys(out / "archive.db")
    for k, v in before.items():
        assert after[k] == v  # kept, untouched
    a = Archive(out / "archive.db", readonly=True)
    starts = [(ev.entry_id, ev.payload.get("seed"), ev.ts) for ev in a.events() if ev.kind == "eval_start"]
    for (eid, seed, _fid), (done_at, _) in after.items():  # one in flight at a stop starts over; a finished one never
        assert not [t for i, sd, t in starts if (i, sd) == (eid, seed) and t > done_at], (eid, seed)
    assert len([e for e in a.entries() if e.id != 0 and e.status in ("evaluated", "failed")]) == 4
    assert {p["ran_on"].split(":")[0] for p in placements(out / "archive.db")} == {"ray"}
    a.close()


def test_a_node_with_another_poise_stops_the_run_without_blaming_the_candidate(cluster, tmp_path, monkeypatch):
    from poise.executors import InfraError
    from poise.executors import ray as ray_executor

    monkeypatch.setattr(ray_executor, "code_digest", lambda: "0" * 16)  # the driver's poise, as if another
    with pytest.raises(InfraError, match="runs another poise"):
        Loop(tmp_path, _cfg(budget=1, reeval_top=0), executor=RayExecutor(1, RayConfig())).run()
    a = Archive(tmp_path / "archive.db", readonly=True)
    assert not [e for e in a.entries() if e.status == "failed"] and not a.evaluations(0)
    assert [ev for ev in a.events() if ev.kind == "eval_failed" and "infra" in ev.payload["reason"]]
    a.close()
