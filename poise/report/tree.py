"""Layout of the genealogy tree: where each archive entry sits in the drawing.

A layered tidy layout: depth from the parent links (the root on top), leaves spaced evenly in
depth-first order, each parent centred over its children. Pure, so the drawing is the same every time.
"""

from __future__ import annotations


def layout(parents: dict[int, int | None]) -> dict[int, tuple[float, int]]:
    """{id: (x, depth)} for a forest given as {id: parent id or None}. x is in leaf slots (0, 1, ...);
    an entry whose parent is unknown is drawn as a root."""
    kids: dict[int | None, list[int]] = {}
    for i, p in sorted(parents.items()):
        kids.setdefault(p if p in parents else None, []).append(i)
    pos: dict[int, tuple[float, int]] = {}
    next_leaf = 0.0

    def place(i: int, depth: int) -> float:
        nonlocal next_leaf
        xs = [place(c, depth + 1) for c in kids.get(i, [])]
        if xs:
            x = (xs[0] + xs[-1]) / 2
        else:
            x, next_leaf = next_leaf, next_leaf + 1
        pos[i] = (x, depth)
        return x

    for root in kids.get(None, []):
        place(root, 0)
    return pos
