import math
import random
from dataclasses import replace

import numpy as np
import pytest

from poise.discovery.archive import Archive
from poise.discovery.objective import Objective, parse_directive
from poise.discovery.selection import (STRATEGIES, Node, SelectionConfig, acquisition, beta_t, descendant_gains,
                                       diversity, gp_posterior, nodes_from_archive, pareto_ranks, scalar_noise, select,
                                       select_parent, to_race)

ACC = Objective()  # default: Pareto over (overall, hard_pass1), scalar = overall


def node(i, parent, depth, overall, features=(), selected_at=(), length=50.0) -> Node:
    return Node(i, parent, depth, {"overall": overall, "hard_pass1": overall / 2, "length": length, "validity": 99.0},
                tuple(features), len(selected_at), tuple(selected_at))


def by_id(scores):
    return {s.node_id: s for s in scores}


def test_pareto_ranks_by_non_dominated_sorting():
    vectors = [(5, 1), (1, 5), (3, 3), (2, 2), (1, 1), (3, 3), (0, 0)]
    #           front   front  front   2nd     3rd   front (tie) 4th
    assert pareto_ranks(vectors) == [1, 1, 1, 2, 3, 1, 4]
    assert pareto_ranks([]) == []


def test_descendant_gain_on_a_hand_computed_tree():
    #  0 (50) ── 1 (52) ── 3 (60) ── 4 (55)
    #   └─ 2 (47)
    nodes = [node(0, None, 0, 50), node(1, 0, 1, 52), node(2, 0, 1, 47), node(3, 1, 2, 60), node(4, 3, 3, 55)]
    scalars = {n.id: n.metrics["overall"] for n in nodes}
    d = descendant_gains(nodes, scalars, top_k=2, gamma=0.5)
    # 0: gains 1: 0.5^0·2 = 2, 2: -3, 3: 0.5^1·10 = 5, 4: 0.5^2·5 = 1.25 -> top-2 (5, 2) -> 3.5
    # 1: gains 3: 8, 4: 0.5·3 = 1.5 -> top-2 (8, 1.5) -> 4.75
    # 3: gain 4: -5, zero-padded to K=2 -> (-5, 0) -> -2.5
    assert d == {0: pytest.approx(3.5), 1: pytest.approx(4.75), 2: None, 3: pytest.approx(-2.5), 4: None}
    # K = 3 pads with zeros: 1 -> (8 + 1.5 + 0) / 3
    assert descendant_gains(nodes, scalars, top_k=3, gamma=0.5)[1] == pytest.approx(9.5 / 3)


def lineage_case() -> list[Node]:
    """The paper's story (notes §3, §11): the top node T has been the parent three times and its children were
    all worse; a low-scoring node L once produced a strong child D (+13, though still below T), and D's own
    children were poor. Tags: (a, b, c) = L's mechanism, T's mechanism, an add-on. selected_at = rounds.
    Rounds: 1 GRPO -> L, T; 2 L -> D; 3, 4 T -> 4, 5; 5 D -> 6; 6 GRPO -> 7; 7 T -> 8; 8 D -> 9."""
    return [
        node(0, None, 0, 50, (0, 0, 0), (1, 6)),  # GRPO
        node(1, 0, 1, 40, (1, 0, 0), (2,)),  # L
        node(2, 0, 1, 55, (0, 1, 0), (3, 4, 7)),  # T, the top scorer
        node(3, 1, 2, 53, (1, 0, 1), (5, 8)),  # D, L's strong child
        node(4, 2, 2, 42, (0, 1, 0)), node(5, 2, 2, 44, (0, 1, 0)), node(8, 2, 2, 41, (0, 1, 0)),  # T's children
        node(6, 3, 3, 41, (1, 0, 1)), node(9, 3, 3, 40, (1, 0, 1)),  # D's children
        node(7, 0, 1, 43, (0, 1, 0)),  # GRPO's second round
    ]


def test_lineage_picks_the_low_scoring_parent_with_a_strong_descendant_where_greedy_picks_the_top():
    nodes = lineage_case()
    base = nodes[0].metrics
    greedy, _ = select("greedy", nodes, ACC, base)
    chosen, scores = select("lineage", nodes, ACC, base, SelectionConfig(), random.Random(0), round=9)
    s = by_id(scores)
    assert greedy == 2  # T: 55
    assert chosen == 1  # L: 40
    assert s[1].descendant_gain > 0 > s[2].descendant_gain
    assert s[1].gp > s[2].gp and s[1].gp_mean > s[2].gp_mean
    # and it is the GP term that makes the difference: without it the same acquisition picks T
    assert select_parent(nodes, ACC, base, SelectionConfig(w_gp=0.0), round=9)[0] == 2


def test_gp_falls_back_to_an_optimistic_prior_with_fewer_than_two_observations():
    cfg = SelectionConfig()
    lone = [node(0, None, 0, 50)]
    (s,) = acquisition(lone, ACC, lone[0].metrics, cfg)
    assert (s.gp_mean, s.gp_std, s.gp, s.descendant_gain) == (0.0, cfg.gp_prior_std, 0.0, None)
    one = [node(0, None, 0, 50), node(1, 0, 1, 47), node(2, 0, 1, 44)]  # only the root has descendants
    s = by_id(acquisition(one, ACC, one[0].metrics, cfg))
    assert s[0].gp_mean == pytest.approx((-3 - 6 + 0) / 3) and s[0].gp_std == 0.0
    assert (s[1].gp_mean, s[1].gp_std) == (0.0, cfg.gp_prior_std)  # unseen: optimism
    assert s[1].gp == s[2].gp == 1.0 and s[0].gp == 0.0


def test_repeat_penalty_moves_the_choice():
    nodes = [node(0, None, 0, 50), node(1, 0, 1, 53), node(2, 0, 1, 52), node(3, 0, 1, 49)]
    first, _ = select_parent(nodes, ACC, nodes[0].metrics)
    tired = [replace(n, n_selected=6) if n.id == first else n for n in nodes]
    second, scores = select_parent(tired, ACC, nodes[0].metrics)
    assert second != first and by_id(scores)[first].penalty == pytest.approx(0.3)
    assert select_parent(tired, ACC, nodes[0].metrics, SelectionConfig(repeat_penalty=0.0))[0] == first
    capped = SelectionConfig(repeat_penalty=0.0, max_selections=6)
    assert select_parent(tired, ACC, nodes[0].metrics, capped)[0] != first


def test_selection_is_deterministic_and_independent_of_input_order():
    nodes = lineage_case()
    a = select_parent(nodes, ACC, nodes[0].metrics, round=9)
    b = select_parent(list(reversed(nodes)), ACC, nodes[0].metrics, round=9)
    assert a == b
    # exact ties go to the lowest id
    twins = [node(0, None, 0, 50), node(1, 0, 1, 52), node(2, 0, 1, 52)]
    assert select_parent(twins, ACC, twins[0].metrics)[0] == 1
    assert select("greedy", twins, ACC, twins[0].metrics)[0] == 1


@pytest.mark.parametrize("strategy", ["random", "tournament"])
def test_random_and_tournament_are_reproducible_with_a_seeded_rng(strategy):
    nodes = lineage_case()
    cfg = SelectionConfig(tournament_size=3)

    def picks(seed):
        rng = random.Random(seed)
        return [select(strategy, nodes, ACC, nodes[0].metrics, cfg, rng)[0] for _ in range(20)]

    assert picks(1) == picks(1)
    assert picks(1) != picks(2)
    assert len(set(picks(3))) > 2  # it does explore
    with pytest.raises(ValueError, match="needs an rng"):
        select(strategy, nodes, ACC, nodes[0].metrics)


def test_a_tournament_of_everyone_is_greedy():
    nodes = lineage_case()
    cfg = SelectionConfig(tournament_size=len(nodes))
    assert select("tournament", nodes, ACC, nodes[0].metrics, cfg, random.Random(0))[0] == 2


def test_softmax_sampling_is_seeded_and_follows_the_acquisition():
    nodes = lineage_case()
    cfg = SelectionConfig(temperature=0.05)
    draws = [select_parent(nodes, ACC, nodes[0].metrics, cfg, random.Random(s), round=9)[0] for s in range(30)]
    again = [select_parent(nodes, ACC, nodes[0].metrics, cfg, random.Random(s), round=9)[0] for s in range(5)]
    assert draws[:5] == again
    assert max(set(draws), key=draws.count) == 1  # the argmax is the most likely pick
    assert len(set(draws)) > 1


def test_unknown_strategy_names_the_choices():
    nodes = lineage_case()
    with pytest.raises(ValueError, match="unknown selection strategy 'best'.*lineage, greedy, random, tournament"):
        select("best", nodes, ACC, nodes[0].metrics)
    assert STRATEGIES == ("lineage", "greedy", "random", "tournament")
    with pytest.raises(ValueError, match="no evaluated nodes"):
        select_parent([], ACC, None)


def test_diversity_against_recent_parents():
    nodes = [node(0, None, 0, 50, (0, 0), (1,)), node(1, 0, 1, 50, (1, 0), (2,)), node(2, 0, 1, 50, (0, 1)),
             node(3, 0, 1, 50, (1, 1))]
    assert diversity(nodes, SelectionConfig(div_window=1)) == pytest.approx([1, 0, 1, 1 - math.sqrt(0.5)])
    # with the window covering round 1 too, GRPO's empty tag set counts as seen
    assert diversity(nodes, SelectionConfig(div_window=2))[0] == 0.0
    bare = [node(0, None, 0, 50, (), (1,)), node(1, 0, 1, 50)]
    assert diversity(bare, SelectionConfig()) == [1.0, 1.0]
    knn = diversity(nodes, SelectionConfig(div_mode="knn", div_k=1))
    assert knn == pytest.approx([1, 1, 1, 1])


def test_concise_objective_changes_the_front_and_the_greedy_pick():
    nodes = [node(0, None, 0, 50, length=40), node(1, 0, 1, 51, length=40), node(2, 0, 1, 50, length=25)]
    concise = parse_directive("accurate and concise")
    assert select("greedy", nodes, ACC, nodes[0].metrics)[0] == 1
    assert select("greedy", nodes, concise, nodes[0].metrics)[0] == 2
    ranks = {s.node_id: s.pareto_rank for s in acquisition(nodes, concise, nodes[0].metrics)}
    assert ranks == {0: 2, 1: 1, 2: 1}


def test_srinivas_beta_grows_with_rounds():
    cfg = SelectionConfig(beta_schedule="srinivas")
    assert beta_t(SelectionConfig(), 10, 5) == 2.0
    assert beta_t(cfg, 10, 1) == pytest.approx(2 * math.log(10 * math.pi ** 2 / 0.6))
    assert beta_t(cfg, 10, 10) > beta_t(cfg, 10, 2)
    with pytest.raises(ValueError, match="beta_schedule"):
        SelectionConfig(beta_schedule="linear")


def tag_features(entries):
    """A features_fn for the test: 0/1 over the sorted union of `proposal["tags"]` of `entries`."""
    vocab = sorted({str(t) for e in entries for t in (e.proposal.get("tags") or ())})
    index = {t: i for i, t in enumerate(vocab)}

    def fn(entry) -> tuple[float, ...]:
        v = [0.0] * len(vocab)
        for t in entry.proposal.get("tags") or ():
            if str(t) in index:
                v[index[str(t)]] = 1.0
        return tuple(v)
    return fn


def test_nodes_from_a_real_archive(tmp_path):
    m = lambda o: {"overall": o, "length": 30.0, "validity": 90.0,  # noqa: E731
                   "tiers": {t: {"pass@1": o / 2, "score": o} for t in ("aime24", "aime25", "amc")}}
    with Archive(tmp_path / "a.db") as a:
        def evaluated(name, parents, overalls, tags, purpose="search"):
            i = a.add_entry(name, name, {"tags": tags}, parents, len(parents), status="evaluating")
            for seed, o in enumerate(overalls):
                a.add_evaluation(i, seed, "smoke", [], m(o), 1.0, purpose=purpose)
            a.set_status(i, "evaluated")
            return i

        evaluated("GRPO", [], [50, 52], [], purpose="baseline")
        a.log("select", entry_id=0, round=1)
        evaluated("A", [0], [54, 56], ["masking"])
        bad = a.add_entry("B", "B", {"tags": ["entropy"]}, [0], 1)
        a.set_status(bad, "failed", "NaN")
        a.log("select", entry_id=1, round=2)
        evaluated("C", [1], [60], ["masking", "variance"])
        nodes = nodes_from_archive(a, tag_features(a.entries("evaluated")))
        assert [(n.id, n.parent_id, n.depth, n.n_selected) for n in nodes] == [(0, None, 0, 1), (1, 0, 1, 1),
                                                                                (3, 1, 2, 0)]
        assert nodes[1].metrics == {"overall": 55.0, "hard_pass1": 27.5, "length": 30.0, "validity": 90.0}
        # paired (the default): each seed of A through GRPO's on that seed, GRPO itself the reference (its mean
        # at each seed); unpaired, the raw seeds
        assert [m["overall"] for m in nodes[1].seed_metrics] == [55.0, 55.0]
        assert [m["overall"] for m in nodes[0].seed_metrics] == [51.0, 51.0] and nodes[0].metrics["overall"] == 51.0
        raw = nodes_from_archive(a, tag_features(a.entries("evaluated")), paired=False)
        assert [m["overall"] for m in raw[1].seed_metrics] == [54.0, 56.0]
        assert [m["overall"] for m in raw[0].seed_metrics] == [50.0, 52.0]
        assert [n.features for n in nodes] == [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0)]  # tags: masking, variance
        assert nodes[1].selected_at[0] > nodes[0].selected_at[0]
        assert nodes_from_archive(a, tag_features([]), fidelity="standard") == []  # nothing evaluated at that fidelity
        with pytest.raises(TypeError):
            nodes_from_archive(a, None, "smoke")  # fidelity is keyword-only
        chosen, scores = select_parent(nodes, ACC, nodes[0].metrics, round=3)
        assert chosen in {0, 1, 3} and len(scores) == 3


def seeded(n: Node, overalls) -> Node:
    return replace(n, seed_metrics=tuple({**n.metrics, "overall": v} for v in overalls),
                   metrics={**n.metrics, "overall": sum(overalls) / len(overalls)})


def test_racing_picks_the_single_seed_leader_and_a_second_time_parent():
    nodes = [node(0, None, 0, 50), node(1, 0, 1, 58), node(2, 0, 1, 52, selected_at=(3,))]
    cfg = SelectionConfig(race_seeds=3)
    assert to_race(nodes, pick=2, objective=ACC, baseline_metrics=None, cfg=cfg) == [2, 1]  # repeat parent, leader
    assert to_race(nodes, pick=0, objective=ACC, baseline_metrics=None, cfg=cfg) == [1]  # first-time pick: leader only
    nodes[1] = seeded(nodes[1], [58, 55, 57])  # the leader has its seeds: nothing more to race for it
    assert to_race(nodes, pick=0, objective=ACC, baseline_metrics=None, cfg=cfg) == []
    assert to_race(nodes, pick=2, objective=ACC, baseline_metrics=None, cfg=SelectionConfig(race_seeds=1)) == []


def test_scalar_noise_uses_own_seeds_else_the_pooled_spread():
    a = seeded(node(1, 0, 1, 0), [50.0, 52.0])  # var 2
    b = seeded(node(2, 0, 1, 0), [40.0, 44.0, 42.0])  # var 4
    c = node(3, 0, 1, 45)  # one seed: the pooled variance (1*2 + 2*4) / 3
    se = scalar_noise([a, b, c], ACC, None)
    assert se == pytest.approx([math.sqrt(2 / 2), math.sqrt(4 / 3), math.sqrt(10 / 3)])
    assert scalar_noise([node(1, 0, 1, 5), node(2, 0, 1, 6)], ACC, None) == [0.0, 0.0]  # nothing to estimate from
    ref = seeded(node(0, None, 0, 0), [47.0, 47.0, 47.0])  # a paired run's baseline: the reference, no spread
    assert scalar_noise([ref, a, b, c], ACC, None) == pytest.approx([0.0, *se])  # and no part of the pool


def test_the_gp_trusts_a_noisy_observation_less():
    x = np.array([[0.0], [0.5], [1.0], [0.25]])
    obs = {0: 0.0, 1: 4.0, 2: 0.0}
    quiet, _ = gp_posterior(x, obs, SelectionConfig(), {0: 0.01, 1: 0.01, 2: 0.01})
    noisy, _ = gp_posterior(x, obs, SelectionConfig(), {0: 0.01, 1: 25.0, 2: 0.01})
    assert quiet[1] > noisy[1]  # a gain of 4 seen through seed noise of sd 5 is shrunk toward the others
