"""Child-process targets for the tests: poise-owned code that misbehaves on purpose, run by ``run_in_child``."""

import os
import time


def echo(payload, emit):
    print("candidate noise on stdout, {not json}")
    for i in range(3):
        emit({"step": i})
    return {"payload": payload, "cwd": os.getcwd(), "env": dict(os.environ)}


def spin(payload, emit):
    emit({"spinning": True})
    while True:
        pass


def allocate(payload, emit):
    import torch
    x = torch.ones(int(payload["n"]))  # a real allocation: every page touched
    return {"sum": float(x.sum())}


def fail(payload, emit):
    raise ValueError("a bad value from the target")


def exit_with(payload, emit):
    os._exit(payload["code"])


def abort(payload, emit):
    os.abort()


def slow_then_answer(payload, emit):
    time.sleep(payload["sleep_s"])
    return {"done": True}
