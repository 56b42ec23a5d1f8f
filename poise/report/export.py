"""`poise export`: an archived candidate as a standalone algorithm file.

The file is the candidate's code as the verifier and the trainer ran it, byte for byte below a
docstring that records where it came from: the run, its lineage, the proposal, the verification, and
what it scored (search set, and confirmation on fresh seeds when it was re-evaluated). It has the
built-ins' interface, so `poise train --algorithm FILE` trains it as it stands.
"""

from __future__ import annotations

import ast
import time

from poise.discovery.archive import code_hash
from poise.isolation.text import in_docstring
from poise.report.view import Candidate, RunView


def _docstring_span(code: str) -> tuple[str, int] | None:
    """(text, last line) of the code's own module docstring, if it has one."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    first = tree.body[0] if tree.body else None
    if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)):
        return None
    assert first.end_lineno is not None  # ast.parse sets the end positions of every node
    last = code.splitlines()[first.end_lineno - 1]
    if last.encode()[first.end_col_offset:].strip():  # more code on the docstring's last line: leave it where it is
        return None
    return first.value.value, first.end_lineno


def provenance(view: RunView, c: Candidate) -> list[str]:
    e, p = c.entry, c.entry.proposal or {}
    lineage = [f"#{x.id} {x.name}" for x in view.lineage(c)]
    lines = [f"{c.name}: exported from a poise discovery run.", "",
             f"run:        {view.root}", f"entry:      #{c.id} (generation {e.generation}, status {c.status})",
             f"lineage:    {' <- '.join(lineage)}",
             f"directive:  {view.config.get('directive') or '(none: accuracy)'}",
             f"code hash:  {code_hash(e.code)}", f"exported:   {time.strftime('%Y-%m-%d %H:%M:%S')}", ""]
    for key in ("hypothesis", "mechanism", "math", "expected_dynamics"):
        if p.get(key):
            lines.append(f"{key.replace('_', ' ')}: {p[key]}")
    if p.get("claims"):
        lines.append("claims (tested by the verifier): " + ", ".join(map(str, p["claims"])))
    v = e.verification or {}
    if v:
        state = "passed" if v.get("ok") else f"FAILED at {v.get('stage', '?')}"
        lines.append(f"verification: {state}, {sum(1 for ch in v.get('checks', []) if ch.get('ok'))}/"
                     f"{len(v.get('checks', []))} checks passed")
    if c.search:
        s, b = c.search, view.baseline.search
        lines.append(f"search set (1 training seed, the set that selected it): Overall {s['overall']:.1f} "
                     f"(GRPO {b['overall']:.1f}), length {s['length']:.1f} tokens (GRPO {b['length']:.1f})")
    d = c.confirmation
    if d is not None:
        lines.append(f"confirmation set, {d.overall['n']} fresh seeds: {d.verdict}; {d.reason}")
    elif c.id != 0:
        lines.append("not re-evaluated on fresh seeds: its search result is a single seed, and optimistic")
    if e.status != "evaluated":
        lines.append(f"WARNING: this candidate is {c.status}" + (f": {e.status_reason.splitlines()[0]}"
                                                                 if e.status_reason else ""))
    return lines


def export_source(view: RunView, c: Candidate) -> str:
    """The module text: provenance docstring, then the archived code (its own docstring folded into ours,
    since only the first string of a module is its docstring and `from __future__` must follow it)."""
    code = c.entry.code
    lines = provenance(view, c)
    own = _docstring_span(code)
    if own is not None:
        text, end = own
        lines += ["", "The candidate's own docstring:", "", *text.strip().splitlines()]
        code = "\n".join(code.splitlines()[end:]).lstrip("\n") + ("\n" if code.endswith("\n") else "")
    doc = "\n".join(in_docstring(ln).rstrip() for ln in lines)
    return f'"""{doc}\n"""\n\n{code}' + ("" if code.endswith("\n") else "\n")


def slug(name: str) -> str:
    """A name as a Python identifier part: "DACE-VM-GRPO" -> "dace_vm_grpo"."""
    import re

    return re.sub(r"[^A-Za-z0-9_]+", "_", name.lower()).strip("_") or "candidate"


def verl_plugin(view: RunView, c: Candidate, config: dict, hooks: list[str], trusted: bool) -> tuple[str, str]:
    """(module name, module text) of the verl plugin for ``c``: its provenance, then its code and the call
    that registers it with verl's registries (`poise.backends.verl.launch.plugin_module`). ``config``: the
    candidate's AlgoConfig as a dict; ``hooks``: the functions it defines, as its hook process reported them."""
    from poise.backends.verl.launch import plugin_module

    module = f"poise_{slug(c.name)}"
    lines = provenance(view, c) + ["", f"A verl plugin: verl imports it when VERL_USE_EXTERNAL_MODULES={module}, and it",
                                   f"registers the advantage estimator {module} and the policy loss of the same name"
                                   + ("" if "compute_policy_loss" in hooks else " (poise's PPO clip with its CONFIG)")
                                   + ".",
                                   "compute_score is the reward function to name in verl's custom_reward_function.",
                                   "The candidate runs in poise's jailed hook process, never in verl's own processes.",
                                   f"Its CONFIG: {config}"]
    return module, plugin_module(module, c.entry.code, hooks, trusted, f"poise-export:{view.root}#{c.id}",
                                 "\n".join(lines))
