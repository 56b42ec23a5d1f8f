import pytest

from poise.discovery.confirm import confirm
from poise.discovery.objective import parse_directive
from tests.report.fake_run import metrics


def _ms(overalls, lengths):
    return [metrics(o, n) for o, n in zip(overalls, lengths)]


BASE = _ms([89, 90, 91], [40, 41, 42])


def test_accuracy_needs_the_whole_interval_above_zero():
    up = confirm(1, "UP", _ms([93, 94, 95], [40, 41, 42]), BASE, parse_directive(None), [1, 2, 3])
    assert up.verdict == "discovery" and up.d_overall["lo"] > 0
    near = confirm(2, "NEAR", _ms([89, 91, 93], [40, 41, 42]), BASE, parse_directive(None), [1, 2, 3])
    assert near.d_overall["mean"] == pytest.approx(1.0) and near.verdict == "not confirmed"


def test_concise_needs_shorter_beyond_noise_and_accuracy_within_the_baselines_interval():
    obj = parse_directive("accurate and concise")
    short = confirm(1, "S", _ms([88, 89, 90], [30, 31, 32]), BASE, obj, [1, 2, 3])
    assert short.d_length["hi"] < 0 and short.verdict == "discovery"  # -1 Overall, inside GRPO's ±2.5
    costly = confirm(2, "C", _ms([80, 81, 82], [30, 31, 32]), BASE, obj, [1, 2, 3])
    assert costly.verdict == "not confirmed"  # shorter, but 9 points less accurate
    same = confirm(3, "L", _ms([89, 90, 91], [39, 41, 43]), BASE, obj, [1, 2, 3])
    assert same.verdict == "not confirmed" and "length +0.0" in same.reason
