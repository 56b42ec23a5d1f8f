from poise.report.tree import layout


def test_parents_sit_over_their_children_and_depth_follows_the_links():
    pos = layout({0: None, 1: 0, 2: 0, 3: 1, 4: 1, 5: 1, 6: 2})
    assert {i: d for i, (_, d) in pos.items()} == {0: 0, 1: 1, 2: 1, 3: 2, 4: 2, 5: 2, 6: 2}
    assert pos[1][0] == (pos[3][0] + pos[5][0]) / 2
    assert pos[0][0] == (pos[1][0] + pos[2][0]) / 2
    assert [pos[i][0] for i in (3, 4, 5, 6)] == [0, 1, 2, 3]  # leaves spaced evenly, depth-first


def test_no_two_nodes_share_a_place():
    parents = {0: None, **{i: (i - 1) // 3 for i in range(1, 40)}}
    pos = layout(parents)
    assert len(pos) == 40 and len(set(pos.values())) == 40


def test_an_unknown_parent_makes_a_second_root():
    pos = layout({0: None, 1: 0, 2: 99})
    assert pos[2][1] == 0 and pos[1][1] == 1
