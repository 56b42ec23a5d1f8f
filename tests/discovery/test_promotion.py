import math

from poise.discovery.objective import run_objective
from poise.discovery.state import Candidate, RunState


def _state(pairs):
    cands = []
    for i, (cheap, real) in enumerate(pairs):
        c = Candidate(entry=None, search={"overall": cheap}, score=None)  # type: ignore[arg-type]
        if real is not None:
            c.promoted = {"overall": {"mean": real}}
        cands.append(c)
    return RunState(run_objective({}), "smoke", 1, cands, promote="trl")


def test_rank_agreement_is_spearmans_rho_with_a_fisher_interval():
    perfect = _state([(60, 10), (61, 11), (62, 12), (63, 13), (64, 14)]).rank_agreement()
    assert perfect["rho"] == 1.0 and perfect["n"] == 5 and math.isnan(perfect["lo"])  # no interval at |rho| = 1
    mixed = _state([(60, 11), (61, 10), (62, 14), (63, 12), (64, 13), (65, 15), (66, 16)]).rank_agreement()
    assert 0 < mixed["rho"] < 1 and -1 < mixed["lo"] < mixed["rho"] < mixed["hi"] < 1
    reversed_ = _state([(60, 14), (61, 13), (62, 12), (63, 11), (64, 10)]).rank_agreement()
    assert reversed_["rho"] == -1.0


def test_rank_agreement_needs_two_promoted_entries_and_no_interval_below_four():
    assert _state([(60, 10), (61, None)]).rank_agreement() is None
    few = _state([(60, 10), (61, 12), (62, 11)]).rank_agreement()
    assert few["n"] == 3 and math.isnan(few["lo"]) and math.isnan(few["hi"])


def test_a_promotion_needs_another_backend_and_fresh_seeds(tmp_path):
    import pytest

    from poise.discovery.archive import ArchiveError
    from poise.discovery.loop import DiscoverConfig, Loop

    trl = {"model": {"name": "random"}}
    with pytest.raises(ArchiveError, match="already trains on trl"):
        Loop(tmp_path / "a", DiscoverConfig(budget=1, backend="trl", fidelity="trl", backend_config=trl, promote="trl",
                                            promote_config=trl))
    with pytest.raises(ArchiveError, match="--reeval-seeds 1 or more"):
        Loop(tmp_path / "b", DiscoverConfig(budget=1, fidelity="smoke", promote="trl", promote_config=trl,
                                            reeval_seeds=()))
    # a finished run resumed with a promotion stores it; another promotion setup is refused, naming the flag
    Loop(tmp_path / "c", DiscoverConfig(budget=1, fidelity="smoke")).close()
    Loop(tmp_path / "c", DiscoverConfig(budget=1, fidelity="smoke", promote="trl", promote_config=trl), resume=True,
         given=frozenset({"promote", "promote_config"})).close()
    other = {"model": {"name": "random", "hidden": 16}}
    with pytest.raises(ArchiveError, match="--promote-config differs"):
        Loop(tmp_path / "c", DiscoverConfig(budget=1, fidelity="smoke", promote="trl", promote_config=other),
             resume=True, given=frozenset({"promote_config"}))
