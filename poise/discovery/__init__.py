"""The discovery loop's parts: the genealogical archive (archive.py), steering directives (objective.py),
lineage selection (selection.py) and the closed loop (loop.py).

Nothing is imported here on purpose: `poise status` reads the archive without paying for scikit-learn.
"""
