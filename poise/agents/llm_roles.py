"""The agent roles played by an LLM: each role is a class around one shared conversation helper, with
its prompt in ``prompts/<role>.md``.

Every LLM answer is parsed (``parse``); a malformed one goes back once with the parse error, and if the
second answer is no better the step fails with `AgentFailure`, which the loop records with the reason
and the answer. Running out of budget raises `BudgetExhausted` (from ``llm``): the loop stops asking
and keeps what it has.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import re
from importlib import resources
from typing import Any, Callable

from pydantic import BaseModel, Field, ValidationError, field_validator

from poise.agents.llm import LLM, BudgetExhausted, LLMError
from poise.agents.parse import ParseError, extract_code, extract_json
from poise.agents.types import AgentFailure, Proposal, ProposalContext, Usage
from poise.evaluation.keys import CURVE_KEYS

# ---------------------------------------------------------------------------------------------------
# Prompts


@functools.cache  # read once: the files ship with the package and do not change during a run
def load_prompt(role: str) -> tuple[str, str]:
    """(system, user template) of ``prompts/<role>.md``: a '## system' and a '## user' section."""
    text = resources.files("poise.agents").joinpath("prompts", f"{role}.md").read_text()
    m = re.match(r"\s*## system\n(.*?)\n## user\n(.*)", text, re.S)
    if not m:
        raise ValueError(f"prompts/{role}.md needs a '## system' and a '## user' section")
    return m.group(1).strip(), m.group(2).strip()


def render(template: str, **values: Any) -> str:
    """Fill ``{{name}}`` placeholders; a missing value is an error, not a silently empty prompt."""
    missing = sorted(set(re.findall(r"\{\{(\w+)\}\}", template)) - set(values))
    if missing:
        raise KeyError(f"prompt placeholders without a value: {missing}")
    return re.sub(r"\{\{(\w+)\}\}", lambda m: str(values[m.group(1)]), template)


@functools.cache
def literature() -> str:
    return resources.files("poise.agents").joinpath("prompts", "literature.md").read_text().strip()


def claims_text() -> str:
    from poise.verify.properties import CLAIMS
    return "\n".join(f"- {name}: {c.description}" for name, c in CLAIMS.items())


def interface_text() -> str:
    """The algorithm interface as the trainer defines it: base.py's docstring and its two dataclasses."""
    from poise.algorithms import base
    doc = inspect.getdoc(base)
    assert doc is not None  # base.py has a module docstring
    return (doc + "\n\n```python\n" + inspect.getsource(base.RolloutBatch).split("    @property")[0]
            .rstrip() + "\n\n" + inspect.getsource(base.AlgoConfig).rstrip() + "\n```")


def helpers_text() -> str:
    from poise.algorithms import base
    from poise.verify.static import BASE_NAMES
    out = []
    for name in sorted(BASE_NAMES):
        obj = getattr(base, name, None)
        if inspect.isfunction(obj):
            doc = (inspect.getdoc(obj) or "").split("\n")[0]
            out.append(f"- {name}{inspect.signature(obj)}: {doc}")
    return "\n".join(out)


class _LLMProposal(BaseModel):
    name: str = Field(min_length=1, max_length=60)
    hypothesis: str = Field(min_length=1)
    mechanism: str = Field(min_length=1)
    math: str = Field(min_length=1)
    expected_dynamics: str = ""
    claims: list[str] = []
    builds_on: list[int] = []

    @field_validator("builds_on", mode="before")
    @classmethod
    def _ids(cls, v):
        if v is None:
            return []
        v = v if isinstance(v, list) else [v]
        return [int(re.sub(r"\D", "", str(x))) for x in v if re.search(r"\d", str(x))]

    @field_validator("claims", mode="before")
    @classmethod
    def _claims(cls, v):
        return [] if v is None else [str(x) for x in (v if isinstance(v, list) else [v])]

    @field_validator("math", "hypothesis", "mechanism", "expected_dynamics", mode="before")
    @classmethod
    def _text(cls, v):
        return json.dumps(v) if isinstance(v, (dict, list)) else v


# ---------------------------------------------------------------------------------------------------
# The roles


class LLMRole:
    """One role played by ``llm``; its LLM use is booked on the shared ``usage``."""

    role = ""

    def __init__(self, llm: LLM, usage: Usage):
        self.llm, self.usage = llm, usage
        self.label = llm.spec.label

    def _ask(self, user: str, parse: Callable[[str], Any], *, key: str, entry_id: int | None,
             temperature: float, history: list[dict] | None = None) -> tuple[Any, str]:
        """The conversation with one parse retry."""
        role = self.role
        system, _ = load_prompt(role)
        messages = list(history or []) + [{"role": "user", "content": user}]
        answer = ""
        for attempt in (1, 2):
            try:
                reply = self.llm.chat(role, system, messages, key=f"{key}/parse{attempt}", entry_id=entry_id,
                                 temperature=temperature)
            except BudgetExhausted:
                raise
            except LLMError as e:
                if e.kind in ("auth", "not_found", "setup"):
                    raise  # a configuration problem: every later call would fail the same way, so stop the run
                raise AgentFailure(role, f"the LLM call failed: {e}", answer) from None
            self.usage.add(reply)
            answer = reply.text
            try:
                return parse(answer), answer
            except ParseError as e:
                error = str(e)
            if attempt == 1:  # one more chance, told exactly what was wrong
                messages = messages + [{"role": "assistant", "content": answer},
                                       {"role": "user", "content": f"Your answer could not be used: {error}. "
                                                                   f"Answer again in the requested format."}]
        raise AgentFailure(role, f"malformed answer twice: {error}", answer)


class LLMProposer(LLMRole):
    role = "proposer"

    def propose(self, ctx: ProposalContext) -> list[Proposal]:
        _, template = load_prompt("proposer")
        user = render(template, objective=ctx.objective_text, group_size=8, parent=_describe_parent(ctx),
                      references=_describe_refs(ctx) or "(none yet)", literature=literature(), claims=claims_text(),
                      n=ctx.n)
        known_ids = {n.id for n in ctx.nodes}
        taken = {n.name.upper() for n in ctx.nodes}

        def parse(text: str) -> list[Proposal]:
            items = extract_json(text, list)
            out, problems = [], []
            for i, item in enumerate(items[:ctx.n]):
                try:
                    p = _LLMProposal.model_validate(item)
                except ValidationError as e:
                    problems.append(f"proposal {i + 1}: " + "; ".join(f"{'.'.join(map(str, er['loc']))}: {er['msg']}"
                                                                       for er in e.errors()[:4]))
                    continue
                out.append(self._to_proposal(p, ctx, known_ids, taken))
            if not out:
                raise ParseError("no usable proposal (" + ("; ".join(problems) or "the list is empty") + "); each "
                                 "needs name, hypothesis, mechanism and math as strings")
            return out

        props, _ = self._ask(user, parse, key=f"propose/round{ctx.round}/parent{ctx.parent.id}",
                             entry_id=None, temperature=0.8)
        return props

    def _to_proposal(self, p: _LLMProposal, ctx: ProposalContext, known_ids: set[int], taken: set[str]):
        from poise.verify.properties import CLAIMS
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", p.name).strip("-")[:40] or "LLM-GRPO"
        base, k = name, 2
        while name.upper() in taken:
            name, k = f"{base}-{k}", k + 1
        taken.add(name.upper())
        refs = [i for i in p.builds_on if i in known_ids and i != ctx.parent.id]
        dropped = [c for c in p.claims if c not in CLAIMS]
        claims = [c for c in dict.fromkeys(p.claims) if c in CLAIMS]
        return Proposal(
            name=name, hypothesis=p.hypothesis, mechanism=p.mechanism, math=p.math,
            expected_dynamics=p.expected_dynamics, claims=claims, hooks=[], builds_on=[ctx.parent.id] + refs,
            operator="llm", design={}, author=self.label,
            rationale="proposed by " + self.label + (f"; unknown claims dropped: {dropped}" if dropped else ""))


class LLMImplementer(LLMRole):
    role = "implementer"

    def implement(self, proposal: Proposal, feedback: list[str] | None, *, entry_id: int, attempt: int,
                  parent_name: str, parent_code: str, previous_code: str = "") -> tuple[str, Proposal]:
        from poise.verify.static import ALLOWED_IMPORTS
        _, template = load_prompt("implementer")
        user = render(template, interface=interface_text(), imports=", ".join(sorted(ALLOWED_IMPORTS - {"__future__"})),
                      helpers=helpers_text(), parent_name=parent_name, parent_code=parent_code.strip(),
                      name=proposal.name, hypothesis=proposal.hypothesis, mechanism=proposal.mechanism,
                      math=proposal.math, expected_dynamics=proposal.expected_dynamics or "(not stated)",
                      claims=", ".join(proposal.claims) or "(none claimed)", feedback="")
        history = None
        if feedback:  # a repair: the last code and what the verifier said about it, as a conversation
            history = [{"role": "user", "content": user},
                       {"role": "assistant", "content": f"```python\n{previous_code.strip()}\n```" if previous_code
                        else "(no usable code)"}]
            user = ("The checks rejected that module:\n" + "\n".join(f"- {f}" for f in feedback) +
                    "\nFix every problem and answer with the whole corrected module in one ```python block.")
        code, _ = self._ask(user, extract_code, key=f"implement/#{entry_id}/attempt{attempt}",
                            entry_id=entry_id, temperature=0.2, history=history)
        return code, proposal


class LLMReviewer(LLMRole):
    """Reads proposal and code after the property tests pass: does the code implement the stated math?"""

    role = "verifier"

    def review(self, proposal: Proposal, code: str, checks: list[dict], *, entry_id: int,
               attempt: int) -> tuple[bool, list[str]] | None:
        """(matches, reasons)."""
        _, template = load_prompt("verifier")
        check_lines = "\n".join(f"- {c['name']}: {'passed' if c['ok'] else 'FAILED'}" for c in checks) or "(none)"
        user = render(template, name=proposal.name, mechanism=proposal.mechanism, math=proposal.math,
                      claims=", ".join(proposal.claims) or "(none)", code=code.strip(), checks=check_lines)

        def parse(text: str) -> tuple[bool, list[str]]:
            d = extract_json(text, dict)
            verdict = str(d.get("verdict", "")).strip().lower()
            if verdict not in ("match", "mismatch"):
                raise ParseError(f'"verdict" must be "match" or "mismatch", got {d.get("verdict")!r}')
            reasons = d.get("reasons") or []
            reasons = [str(r) for r in (reasons if isinstance(reasons, list) else [reasons])]
            return verdict == "match", reasons

        result, _ = self._ask(user, parse, key=f"review/#{entry_id}/attempt{attempt}",
                              entry_id=entry_id, temperature=0.0)
        return result


class LLMReflector(LLMRole):
    role = "reflector"

    def reflect(self, base_reflection, proposal: dict, trajectories: list[list[dict]], metrics: list[dict],
                parent: dict | None, objective_text: str, *, entry_id: int, name: str):
        """The detectors' reflection with the LLM's diagnosis written over it.
        An LLM failure keeps the detectors' reflection and says why in it."""
        _, template = load_prompt("reflector")
        steps, curves = curve_table(trajectories, parent["trajectory"] if parent else None)
        user = render(template, objective=objective_text or "maximise Overall", name=name,
                      mechanism=proposal.get("mechanism", ""), math=proposal.get("math", ""),
                      expected_dynamics=proposal.get("expected_dynamics", "") or "(not stated)", steps=steps,
                      curves=curves, metrics=_metrics_text(metrics, parent["metrics"] if parent else None),
                      findings="\n".join(f"- {f.tag}: {f.evidence}" for f in base_reflection.findings) or "(none)")

        def parse(text: str) -> dict:
            d = extract_json(text, dict)
            diag = d.get("diagnosis")
            if not isinstance(diag, str) or len(diag.strip()) < 10:
                raise ParseError('"diagnosis" must be a sentence or more of text')
            return d

        try:
            d, _ = self._ask(user, parse, key=f"reflect/#{entry_id}", entry_id=entry_id, temperature=0.3)
        except AgentFailure as e:
            return dataclasses.replace(base_reflection, llm_error=e.reason[:500])
        verdict = str(d.get("verdict", "")).lower()
        as_list = lambda v: [str(x) for x in v] if isinstance(v, list) else ([str(v)] if v else [])
        return dataclasses.replace(
            base_reflection, diagnosis=d["diagnosis"].strip(),
            verdict=verdict if verdict in ("keep", "fix", "drop") else base_reflection.verdict,
            worked=as_list(d.get("worked")) or base_reflection.worked,
            failed=as_list(d.get("failed")) or base_reflection.failed,
            ideas=as_list(d.get("suggestions")), author=self.label)


# ---------------------------------------------------------------------------------------------------
# Context as text


def _metrics_line(m: dict, base: dict | None = None) -> str:
    if not m:
        return "not evaluated"
    parts = []
    for key, label in (("overall", "Overall"), ("hard_pass1", "hard pass@1"), ("length", "length")):
        if key in m:
            s = f"{label} {m[key]:.1f}"
            if base and key in base:
                s += f" ({m[key] - base[key]:+.1f} vs GRPO)"
            parts.append(s)
    return ", ".join(parts)


def _describe_parent(ctx: ProposalContext) -> str:
    p = ctx.parent
    lines = [f"#{p.id} {p.name} ({p.status}): {p.mechanism or 'GRPO'}", f"math: {ctx.parent_math or '(see code)'}",
             f"results: {_metrics_line(p.metrics, ctx.baseline_metrics)}"]
    if p.diagnosis:
        lines.append(f"reflection: {p.diagnosis}")
    if p.ideas:
        lines.append("suggested next: " + "; ".join(p.ideas[:4]))
    lines.append(f"code:\n```python\n{ctx.parent_code.strip()}\n```")
    return "\n".join(lines)


def _describe_refs(ctx: ProposalContext) -> str:
    out = []
    for tier, n in ctx.references:
        line = f"- [{tier}] #{n.id} {n.name} ({n.status}): {n.mechanism or n.operator or '?'}; " \
               f"{_metrics_line(n.metrics, ctx.baseline_metrics)}"
        if n.diagnosis:
            line += f". Reflection: {n.diagnosis[:400]}"
        out.append(line)
    seen = ", ".join(n.name for n in ctx.nodes)
    if seen:
        out.append(f"Already in the archive (do not repeat): {seen}")
    return "\n".join(out)


def curve_table(trajectories: list[list[dict]], parent: list[list[dict]] | None = None,
                points: int = 5) -> tuple[str, str]:
    """The learning curves as numbers: the seed-mean of each curve at ``points`` evenly spaced steps."""
    def at(trajs, key):
        seeds = [t for t in trajs if t]
        if not seeds:
            return None
        n = min(len(t) for t in seeds)
        idx = sorted({round(i * (n - 1) / (points - 1)) for i in range(points)}) if n > 1 else [0]
        vals = []
        for i in idx:
            xs = [t[i].get(key) for t in seeds if isinstance(t[i].get(key), (int, float))]
            vals.append(sum(xs) / len(xs) if xs else float("nan"))
        return [seeds[0][i].get("step", i) for i in idx], vals

    steps_label, lines = "", []
    for key in CURVE_KEYS:
        got = at(trajectories, key)
        if got is None:
            continue
        steps, vals = got
        steps_label = ", ".join(str(s) for s in steps)
        pv = at(parent, key) if parent else None
        cells = [f"{v:.3g}" + (f" [{pv[1][i]:.3g}]" if pv and i < len(pv[1]) else "") for i, v in enumerate(vals)]
        lines.append(f"- {key}: " + ", ".join(cells))
    return steps_label or "(none)", "\n".join(lines) or "(no curves)"


def _metrics_text(metrics: list[dict], parent: list[dict] | None) -> str:
    from poise.evaluation.keys import hard_pass1

    def mean(ms, f):
        xs = [f(m) for m in ms]
        return sum(xs) / len(xs) if xs else float("nan")

    rows = []
    for label, f in (("Overall", lambda m: m["overall"]), ("hard pass@1", hard_pass1),
                     ("length (tokens)", lambda m: m["length"]), ("validity", lambda m: m.get("validity", float("nan")))):
        s = f"- {label}: {mean(metrics, f):.2f}"
        if parent:
            s += f" (parent {mean(parent, f):.2f})"
        rows.append(s)
    rows.append(f"({len(metrics)} seed(s))")
    return "\n".join(rows)
