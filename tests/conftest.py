"""Shared fixtures. The SFT cache points at one temporary folder for the whole session, so the smoke
warm start is trained once and every test after that starts from the same cached policy."""

import os
import tempfile
from pathlib import Path

import pytest
import torch

_CACHE = Path(tempfile.mkdtemp(prefix="poise-test-cache-"))
os.environ["POISE_CACHE"] = str(_CACHE)
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    return _CACHE


@pytest.fixture(scope="session")
def smoke():
    from poise.evaluation.fidelity import get_fidelity
    return get_fidelity("smoke")


@pytest.fixture(scope="session")
def smoke_policy(smoke):
    from poise.backends.tiny import sft_policy
    return sft_policy(smoke)
