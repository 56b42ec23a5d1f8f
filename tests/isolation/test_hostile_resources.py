"""Class: exhausting the machine or the trusted side. Memory, CPU time, wall time, open files and the
size of an answer are all bounded; the trusted side kills the jail from outside and says why."""

import time

import pytest

from poise.backends.worker import AlgorithmSpec, run_evaluation
from poise.isolation.hook import HookLimits
from tests.isolation.hostile import attack, call_hook, processes_with

pytestmark = pytest.mark.usefixtures("jail")


def no_hook_left() -> bool:
    time.sleep(0.2)
    return processes_with("poise.isolation._hook_server") == []


def test_a_memory_bomb_is_a_memory_failure():
    res = call_hook(attack("x = [bytearray(1 << 26) for _ in range(1000)]").replace(
        "    except BaseException:\n        pass\n", "    except KeyboardInterrupt:\n        pass\n", 1))
    assert isinstance(res, Exception) and res.kind == "memory", res
    assert no_hook_left()


def test_a_hook_that_never_answers_is_killed_at_its_deadline():
    t0 = time.monotonic()
    res = call_hook(attack("while True:\n    pass"), limits=HookLimits(call_timeout_s=2))
    assert isinstance(res, Exception) and res.kind == "timeout" and "did not answer within 2s" in str(res)
    assert time.monotonic() - t0 < 15 and no_hook_left()


def test_a_cpu_limit_ends_a_busy_hook():
    res = call_hook(attack("while True:\n    pass"), limits=HookLimits(call_timeout_s=60, cpu_s=1))
    assert isinstance(res, Exception) and res.kind == "died", res
    assert "used up the hook process's CPU time (1 s in all)" in str(res) and "SIGXCPU" in str(res)
    assert no_hook_left()


def test_a_flood_of_bytes_is_a_protocol_error_not_an_allocation():
    res = call_hook(attack("""
        import poise.isolation.wire as wire
        real = wire.write_frame
        def flood(fd, header, tensors=None):
            os.write(fd, (1 << 40).to_bytes(8, "little"))
        wire.write_frame = flood
    """))
    assert isinstance(res, Exception) and res.kind == "protocol" and "broke the protocol" in str(res), res
    assert no_hook_left()


def test_a_huge_answer_tensor_is_refused_before_it_is_read():
    res = call_hook(attack("pass").replace("    return _grpo(batch, cfg)\n",
                                           "    return torch.zeros(20_000_000)\n"))
    assert isinstance(res, Exception) and res.kind == "protocol" and "tensor bytes where at most" in str(res), res


def test_open_files_are_capped():
    res = call_hook(attack("""
        fs = []
        try:
            for _ in range(10_000):
                fs.append(open("/tmp/f%d" % len(fs), "w"))
        finally:
            raise RuntimeError(f"opened {len(fs)}")
    """).replace("    except BaseException:\n        pass\n", "    except RuntimeError:\n        raise\n", 1))
    assert isinstance(res, Exception) and "opened" in str(res)
    assert int(str(res).split("opened ")[1].split(" ")[0].rstrip(")")) < 64


def test_an_evaluation_with_a_hanging_hook_fails_as_the_candidates_fault(smoke_policy):
    src = attack("import time\ntime.sleep(600)")
    res = run_evaluation(AlgorithmSpec("hang", src, "hang.py"), "smoke", 0, threads=1, hook_timeout_s=3,
                         timeout_s=120)
    assert res.kind == "candidate" and "compute_advantages did not answer within 3s" in res.message
    assert no_hook_left()


def test_a_hook_that_stops_reading_its_requests_cannot_block_the_trusted_side():
    # after its first answer it never reads again: the next request fills the pipe, and the write, too,
    # gives up at the deadline instead of blocking the trainer or the verifier for ever
    from poise.algorithms.probe import make_probe_batch
    from poise.isolation.hook import HookError, HookProcess

    src = attack("""
        import poise.isolation.wire as wire
        import time
        wire.read_frame = lambda *a, **k: time.sleep(3600)
    """)
    big = make_probe_batch(num_prompts=16, group_size=8, max_len=96, min_len=60)
    t0 = time.monotonic()
    with HookProcess(src, "stall", "stall.py", jailed=True, limits=HookLimits(call_timeout_s=2)) as hook:
        algo = hook.algorithm()
        algo.compute_advantages(big, algo.config)  # answered; it now stops reading
        with pytest.raises(HookError) as e:
            for _ in range(3):
                algo.compute_advantages(big, algo.config)
    assert e.value.kind == "timeout" and time.monotonic() - t0 < 20
    assert no_hook_left()


@pytest.mark.parametrize("fd", ["OUT", "IN"])
def test_a_hook_that_closes_its_pipe_and_lives_on_is_killed_not_waited_for(fd):
    # the jailed process is the only holder of its pipe ends: closing one looks like death to the trusted
    # side, which must not then wait for a process that has no intention of ending
    import sys as _sys
    which = "int(_sys.argv[2])" if fd == "OUT" else "int(_sys.argv[1])"
    src = attack(f"""
        import sys as _sys
        os.close({which})
        time.sleep(3600)
    """, imports="import os\nimport time")
    t0 = time.monotonic()
    res = call_hook(src, limits=HookLimits(call_timeout_s=5))
    assert isinstance(res, Exception) and res.kind in ("protocol", "died", "timeout"), res
    assert time.monotonic() - t0 < 15 and no_hook_left()
    del _sys


def test_memory_and_disk_outside_the_rlimits_are_refused():
    import shutil
    free = shutil.disk_usage("/tmp").free
    res = call_hook(attack("""
        out = []
        for name, fn in (("memfd", lambda: os.memfd_create("x")),
                         ("fallocate", lambda: os.posix_fallocate(1, 0, 512 << 20)),
                         ("fallocate-keep-size", lambda: __import__("fcntl") and os.posix_fallocate(2, 0, 512 << 20))):
            try:
                fn()
                out.append(name + "=ok")
            except OSError as e:
                out.append(f"{name}={e.errno}")
        raise RuntimeError("RESULTS " + " ".join(out))
    """).replace("    except BaseException:\n        pass\n", "    except RuntimeError:\n        raise\n", 1))
    assert isinstance(res, Exception) and "RESULTS" in str(res), res
    assert "=ok" not in str(res), str(res)
    assert shutil.disk_usage("/tmp").free > free - (256 << 20)


def test_float64_outputs_are_checked_as_the_trainer_uses_them():
    # finite in float64, infinite in the float32 the trainer trains with: must fail as non-finite
    from poise.verify import verify
    src = attack("pass", imports="").replace("    return _grpo(batch, cfg)\n", "    return _grpo(batch, cfg).double() * 1e300\n")
    rep = verify(src, "huge", ["correct_above_wrong"])
    assert rep.stage == "runtime" and any("non-finite" in e for e in rep.errors), rep
