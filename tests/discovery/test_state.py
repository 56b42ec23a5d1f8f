"""The run state the loop decides on and every view shows: scores against the baseline, the Pareto
front, and the budget rule (what counts as trained, what a resume goes on with)."""

from poise.discovery.archive import Archive
from poise.discovery.objective import parse_directive
from poise.discovery.state import RunState


def _metrics(overall, length=40.0):
    tiers = {t: {"pass@1": overall / 4, "score": overall} for t in ("aime24", "aime25", "amc")}
    return {"overall": overall, "length": length, "validity": 90.0, "tiers": tiers}


def _archive(tmp_path):
    a = Archive(tmp_path / "a.db")
    a.add_entry("GRPO", "g", {}, [], 0, status="evaluating")
    a.add_evaluation(0, 0, "smoke", [], _metrics(60.0), 1.0, purpose="baseline")
    a.set_status(0, "evaluated")

    def cand(name, status, overall=None, length=40.0):
        first = "evaluating" if overall is not None or status == "evaluating" else "proposed"
        i = a.add_entry(name, name, {}, [0], 1, status=first)
        if overall is not None:
            a.add_evaluation(i, 0, "smoke", [], _metrics(overall, length), 1.0)
        if status != first:
            a.set_status(i, status)
        return i

    cand("BETTER", "evaluated", 64.0)
    cand("WORSE", "evaluated", 58.0, length=30.0)
    cand("BROKEN", "failed")
    cand("TRAINING", "evaluating")
    cand("WAITING", "proposed")
    cand("READY", "verified")
    return a


def test_scores_and_the_pareto_front_against_the_baseline(tmp_path):
    with _archive(tmp_path) as a:
        s = RunState.read(a, parse_directive(None), "smoke", budget=4)
    assert [c.name for c in s.leaderboard()] == ["BETTER", "GRPO", "WORSE"]
    assert s.leaderboard()[0].score == 64.0 and s.find(3).score is None  # failed: no score
    assert [c.name for c in s.top(5)] == ["BETTER", "WORSE"]  # the baseline is never a candidate
    assert {c.name for c in s.candidates if c.pareto} == {"BETTER"}  # accuracy objective: hard pass@1 too
    # "concise" weighs length against the baseline's: 25% shorter at -2 points leads, and joins the front
    with Archive(tmp_path / "a.db", readonly=True) as a:
        c = RunState.read(a, parse_directive("accurate and concise"), "smoke", budget=4)
    assert [x.name for x in c.leaderboard()] == ["WORSE", "BETTER", "GRPO"]
    assert c.leaderboard()[0].score == 58.0 + 0.25 * 25.0
    assert {x.name for x in c.candidates if x.pareto} == {"BETTER", "WORSE"}


def test_the_budget_rule(tmp_path):
    with _archive(tmp_path) as a:
        s = RunState.read(a, parse_directive(None), "smoke", budget=4)
        assert s.finished() == 3  # evaluated twice, failed once
        assert s.trained(live=True) == 4  # a running loop counts what it trains now
        assert s.trained(live=False) == 3  # a stopped run trains it again on resume
        # resume goes on with the one that was training; the two waiting ones only while the budget has room
        assert s.unfinished() == 1 and s.in_flight() == 3
        assert (s.proposals, s.max_proposals) == (6, 12)
        assert RunState.read(a, parse_directive(None), "smoke", budget=5).unfinished() == 2
        assert RunState.read(a, parse_directive(None), "smoke", budget=10).unfinished() == 3


def test_a_raced_candidate_is_compared_with_the_baseline_seed_by_seed(tmp_path):
    # every arm at a seed shares that seed's luck (-4 at seed 1, -3 at seed 2). RACED is truly 1 point above
    # GRPO on all three seeds; LUCKY, trained on seed 0 only, 0.5 above. Raw means put RACED (58.7) below
    # LUCKY (60.5): the pairing through GRPO's own seeds gives each its true place.
    from poise.discovery.confirm import paired_seed_metrics, search_means, search_per_seed

    luck = {0: 0.0, 1: -4.0, 2: -3.0}
    with Archive(tmp_path / "a.db") as a:
        a.add_entry("GRPO", "g", {}, [], 0, status="evaluating")
        for s, x in luck.items():
            a.add_evaluation(0, s, "smoke", [], _metrics(60.0 + x), 1.0, purpose="baseline")
        a.set_status(0, "evaluated")
        raced = a.add_entry("RACED", "r", {}, [0], 1, status="evaluating")
        for s, x in luck.items():
            a.add_evaluation(raced, s, "smoke", [], _metrics(61.0 + x), 1.0)
        a.set_status(raced, "evaluated")
        lucky = a.add_entry("LUCKY", "l", {}, [0], 1, status="evaluating")
        a.add_evaluation(lucky, 0, "smoke", [], _metrics(60.5), 1.0)
        a.set_status(lucky, "evaluated")
        s = RunState.read(a, parse_directive(None), "smoke", budget=4)
        assert [c.name for c in s.leaderboard()] == ["RACED", "LUCKY", "GRPO"]
        assert s.find(raced).search["overall"] == 61.0 + sum(luck.values()) / 3  # GRPO's mean + 1
        assert search_means(a.get(raced))["overall"] < search_means(a.get(lucky))["overall"]  # raw: the wrong order
        assert search_means(a.get(lucky), search_per_seed(a.get(0)))["overall"] == 60.5 + sum(luck.values()) / 3
    # without the baseline on a candidate's seeds, the raw means stand
    per = {0: {"overall": 61.0}, 5: {"overall": 65.0}}
    assert paired_seed_metrics(per, {0: {"overall": 60.0}}) == per


def test_only_runs_whose_arms_share_their_random_numbers_are_paired():
    from poise.discovery.settings import DiscoverConfig

    assert DiscoverConfig().paired  # the sandbox, protocol 2
    assert not DiscoverConfig(backend="trl", fidelity="trl").paired  # HF generate: no common random numbers
    old = DiscoverConfig.from_dict({"budget": 3, "fidelity": "standard"})  # stored before protocol 2
    assert old.protocol == 1 and not old.paired and old.rank_on == "overall"
