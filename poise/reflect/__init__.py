"""Reflection: read a trained candidate's learning curves and held-out metrics, and write the
mechanism-level diagnosis that the archive stores and later proposals read (paper notes, section 7).

    curves.py    pure detectors over per-step rows
    compare.py   held-out metrics over seeds, and comparisons with a parent
    diagnose.py  the Reflection (verdict, suggestions, diagnosis text) and a digest for proposers
    writing.py   the sentences of the diagnosis
    phase.py     the loop's reflect phase: an entry's reflection, written into the archive
"""

from poise.reflect.compare import compare
from poise.reflect.curves import TAGS, Finding, detect_all
from poise.reflect.diagnose import SUGGESTIONS, Reflection, evidence_digest, reflect

__all__ = ["TAGS", "SUGGESTIONS", "Finding", "Reflection", "compare", "detect_all", "evidence_digest", "reflect"]
