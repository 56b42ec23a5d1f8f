"""Trusted child processes (the evaluation workers' runner), with real processes: results, progress,
limits and clean-up. Candidate code never runs here; its containment is tested in ``test_hostile_*``."""

import os
from pathlib import Path

import pytest

from poise.isolation.process import Limits, child_env, run_in_child



def test_a_target_runs_streams_messages_and_its_prints_do_not_break_the_protocol():
    msgs = []
    res = run_in_child("tests.isolation.targets:echo", {"x": [1, 2]}, Limits(timeout_s=30), on_message=msgs.append)
    assert res.ok and res.kind == "ok" and res.exit_code == 0
    assert msgs == [{"step": 0}, {"step": 1}, {"step": 2}]
    assert res.value["payload"] == {"x": [1, 2]}
    assert "candidate noise on stdout, {not json}" in res.output
    env, cwd = res.value["env"], res.value["cwd"]
    assert env["HOME"] == env["TMPDIR"] == cwd and env["OMP_NUM_THREADS"] == "1"
    assert not Path(cwd).exists()  # the private folder is deleted afterwards
    with pytest.raises(ProcessLookupError):
        os.killpg(res.pgid, 0)


def test_secret_looking_variables_are_dropped_even_when_asked_for(tmp_path):
    env = child_env(Limits(threads=3), tmp_path, {"OPENAI_API_KEY": "x", "HF_TOKEN": "y", "POISE_CACHE": "/c"})
    assert "OPENAI_API_KEY" not in env and "HF_TOKEN" not in env
    assert env["POISE_CACHE"] == "/c" and env["MKL_NUM_THREADS"] == "3" and env["HOME"] == str(tmp_path)


def test_an_endless_loop_is_killed_with_its_process_group():
    msgs = []
    res = run_in_child("tests.isolation.targets:spin", {}, Limits(timeout_s=3), on_message=msgs.append)
    assert res.kind == "timeout" and "longer than 3s" in res.message and not res.ok
    assert msgs == [{"spinning": True}]  # messages sent before the deadline still arrive
    assert 3 <= res.wall_s < 6
    with pytest.raises(ProcessLookupError):
        os.killpg(res.pgid, 0)


def test_a_cpu_limit_stops_a_busy_child():
    res = run_in_child("tests.isolation.targets:spin", {}, Limits(timeout_s=30, cpu_s=1))
    assert res.kind == "timeout" and "more than its 1 CPU seconds" in res.message
    assert res.wall_s < 10


def test_a_huge_allocation_is_a_memory_failure_not_a_dead_machine():
    # 4 GB: possible on this machine without the limit, refused with 2 GB of headroom
    res = run_in_child("tests.isolation.targets:allocate", {"n": 10**9}, Limits(timeout_s=30, memory_mb=2048))
    assert res.kind == "memory" and "can't allocate memory" in res.message
    assert "targets.py line" in res.message  # the target's own line


def test_an_exception_comes_back_with_its_type_message_and_line():
    res = run_in_child("tests.isolation.targets:fail", {}, Limits(timeout_s=30))
    assert res.kind == "error" and res.message.startswith("ValueError: a bad value from the target (")
    assert "targets.py line" in res.message and "Traceback" in res.traceback


def test_a_child_that_exits_without_a_result_is_a_crash(tmp_path):
    res = run_in_child("tests.isolation.targets:exit_with", {"code": 3}, Limits(timeout_s=30), workdir=tmp_path / "w")
    assert res.kind == "crash" and "exit code 3 without a result" in res.message and res.exit_code == 3
    assert (tmp_path / "w").is_dir()  # a given workdir is kept
