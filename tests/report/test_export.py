import ast

import pytest
import torch

from poise.algorithms import algorithm_from_source
from poise.algorithms.probe import make_probe_batch
from poise.discovery.archive import Archive, code_hash
from poise.report.export import export_source
from poise.report.view import RunView
from poise.verify.static import static_check
from tests.report import fake_run


def _advantages(source: str, origin: str) -> torch.Tensor:
    algo = algorithm_from_source(source, "x", origin)
    return algo.compute_advantages(make_probe_batch(seed=3), algo.config)


@pytest.mark.parametrize("entry_id", [1, 4, 8])
def test_an_exported_candidate_computes_what_the_archived_code_does(tmp_path, entry_id):
    view = RunView.load(fake_run.shipped(tmp_path / "run"))
    c = view.get(entry_id)
    text = export_source(view, c)
    assert static_check(text, "exported").ok  # what the verifier accepted, it still accepts
    assert torch.equal(_advantages(text, "exported.py"), _advantages(c.entry.code, "archived"))
    doc = ast.get_docstring(ast.parse(text))
    assert f"entry:      #{entry_id}" in doc and code_hash(c.entry.code) in doc
    assert " <- ".join([f"#{x.id} {x.name}" for x in view.lineage(c)]) in doc
    assert c.entry.proposal["math"] in doc and "verification: passed" in doc


def test_provenance_states_the_confirmation_or_its_absence(tmp_path):
    view = RunView.load(fake_run.shipped(tmp_path / "run"))
    # DACE1-GRPO's -1.8 [-2.7, -0.8] tokens was a discovery before the minimum effect (5% of GRPO's length)
    assert "confirmation set, 5 fresh seeds: not confirmed" in export_source(view, view.get(4))
    assert "a discovery needs Δ length < -2.2 tokens" in export_source(view, view.get(4))
    assert "not re-evaluated on fresh seeds" in export_source(view, view.get(3))


def test_the_candidates_own_docstring_is_folded_in_before_a_future_import(tmp_path):
    own = ('"""My estimator.\n\nUses \\\\ and """ quotes carefully."""\nfrom __future__ import annotations\n'
           'import torch\n\n\ndef compute_advantages(batch, cfg):\n    return batch.rewards - batch.rewards.mean()\n')
    own = own.replace('and """ quotes', "and ''' quotes")
    root = fake_run.build(tmp_path / "run")
    a = Archive(root / "archive.db")
    i = a.add_entry("DOC-GRPO", own, {"name": "DOC-GRPO", "math": 'A = r - mean(r), with """ in it'}, [0], 1)
    a.close()
    view = RunView.load(root)
    text = export_source(view, view.get(i))
    compile(text, "exported.py", "exec")  # the future import still comes first after the docstring
    doc = ast.get_docstring(ast.parse(text))
    assert "My estimator." in doc and 'with """ in it' in doc and "WARNING: this candidate is proposed" in doc
    assert text.count("from __future__") == 1 and text.endswith("batch.rewards.mean()\n")


def test_code_after_a_docstring_on_the_same_line_is_kept(tmp_path):
    own = '"""doc"""; import torch\ndef compute_advantages(batch, cfg):\n    return torch.zeros_like(batch.rewards)\n'
    root = fake_run.build(tmp_path / "run")
    a = Archive(root / "archive.db")
    i = a.add_entry("SEMI-GRPO", own, {"name": "SEMI-GRPO"}, [0], 1)
    a.close()
    view = RunView.load(root)
    text = export_source(view, view.get(i))
    assert own in text
    assert torch.equal(_advantages(text, "e.py"), torch.zeros(64))
