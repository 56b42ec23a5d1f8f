"""`poise report`: one self-contained HTML file of a discovery run.

Everything is inside the file: the genealogy tree is inline SVG, the learning curves are PNGs in data
URIs, the styles are inline, and there is no script. A Content-Security-Policy forbids the page any
request, so it opens the same offline, from a mail attachment or from a CI artefact. Every string from
the archive (names, proposals, code, reflections: LLM-written ones too) is escaped.
"""

from __future__ import annotations

import base64
import html
import math
import re
import time
from pathlib import Path

from poise.backends.base import BackendSpec
from poise.discovery.archive import IN_FLIGHT
from poise.report.plots import plot_lineage
from poise.report.tree import layout
from poise.report.view import Candidate, RunView, pm

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_STATUS_COLOUR = {"rejected": "#bbbbbb", "failed": "#d62728"}  # in flight: hollow (white)

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1400px; padding: 0 16px 48px; color: #222; }
h1 { font-size: 22px; margin: 20px 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; }
h3 { font-size: 15px; margin: 0; display: inline; }
.meta { color: #555; } .note { color: #555; font-size: 12.5px; max-width: 900px; }
.unjailed { color: #b00; border: 1px solid #b00; padding: 6px 10px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 3px 8px; border-bottom: 1px solid #eee; text-align: right; }
th { background: #f5f5f5; } td.l, th.l { text-align: left; }
#leaderboard td { white-space: nowrap; } #leaderboard { font-size: 12.5px; }
tr.pareto td:first-child { border-left: 3px solid #2ca02c; }
.badge { display: inline-block; padding: 0 6px; border-radius: 8px; font-size: 12px; color: #fff; background: #777; }
.evaluated { background: #2ca02c; } .rejected { background: #999; } .failed { background: #d62728; }
.proposed, .verified, .evaluating { background: #1f77b4; }
.discovery { color: #2ca02c; font-weight: 600; } .notconf { color: #b36b00; }
details.cand { border: 1px solid #ddd; border-radius: 6px; margin: 8px 0; padding: 6px 10px; }
details.cand > summary { cursor: pointer; }
pre { background: #f8f8f8; padding: 8px; overflow-x: auto; font-size: 12px; line-height: 1.35; }
pre .add { background: #e6ffec; display: block; } pre .del { background: #ffebe9; display: block; }
pre .hunk { color: #6f42c1; display: block; }
.ok { color: #2ca02c; } .bad { color: #d62728; }
svg text { font: 11px system-ui, sans-serif; }
dl { display: grid; grid-template-columns: max-content auto; gap: 2px 12px; margin: 6px 0; }
dt { color: #555; } dd { margin: 0; white-space: pre-wrap; }
"""


def esc(x) -> str:
    return html.escape(str(x), quote=True)


def _f(x, digits: int = 1, sign: bool = False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _ci(d: dict | None, sign: bool = False) -> str:
    """mean [lo, hi] of a CI dict; just the mean where the interval is undefined."""
    if not d:
        return "–"
    lo, hi = d.get("lo"), d.get("hi")
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return _f(d["mean"], sign=sign)
    return f"{_f(d['mean'], sign=sign)} [{_f(lo, sign=sign)}, {_f(hi, sign=sign)}]"


class _Colours:
    """Objective score -> colour (viridis over the run's range of scores)."""

    def __init__(self, scores: list[float]):
        import matplotlib
        self.cmap = matplotlib.colormaps["viridis"]
        self.to_hex = matplotlib.colors.to_hex
        self.lo, self.hi = (min(scores), max(scores)) if scores else (0.0, 1.0)

    def __call__(self, s: float) -> str:
        t = 0.5 if self.hi <= self.lo else (s - self.lo) / (self.hi - self.lo)
        return self.to_hex(self.cmap(0.15 + 0.8 * t))

    def legend(self) -> str:
        stops = "".join(f'<stop offset="{i / 10:.1f}" stop-color="{self(self.lo + (self.hi - self.lo) * i / 10)}"/>'
                        for i in range(11))
        return (f'<svg width="420" height="34" role="img" aria-label="legend"><defs><linearGradient id="g">{stops}'
                f'</linearGradient></defs><rect x="0" y="4" width="160" height="10" fill="url(#g)"/>'
                f'<text x="0" y="28">{_f(self.lo, 2)}</text><text x="160" y="28" text-anchor="end">{_f(self.hi, 2)}'
                f'</text><text x="170" y="13">objective score</text><circle cx="290" cy="9" r="6" '
                f'fill="{_STATUS_COLOUR["failed"]}"/><text x="300" y="13">failed</text><rect x="345" y="3" width="12" '
                f'height="12" fill="{_STATUS_COLOUR["rejected"]}"/><text x="361" y="13">rejected</text></svg>')


def tree_svg(view: RunView, colours: _Colours) -> str:
    """The genealogy: one node per entry, an edge from each parent; evaluated nodes coloured by score,
    failed ones red, rejected ones grey squares, those in flight hollow. Each links to its section."""
    pos = layout({c.id: c.entry.parent_id for c in view.candidates})
    dx, dy, pad = 120, 96, 60  # room for a label of up to three lines under each node
    width = int(max(x for x, _ in pos.values()) * dx + 2 * pad)
    height = int(max(d for _, d in pos.values()) * dy + 2 * pad)
    xy = {i: (pad + x * dx, pad + d * dy) for i, (x, d) in pos.items()}
    out = [f'<svg id="tree" width="{max(width, 300)}" height="{height}" role="img" aria-label="genealogy tree">']
    for c in view.candidates:
        p = c.entry.parent_id
        if p in xy:
            (x0, y0), (x1, y1) = xy[p], xy[c.id]
            out.append(f'<line x1="{x0:.0f}" y1="{y0:.0f}" x2="{x1:.0f}" y2="{y1:.0f}" stroke="#999"/>')
    for c in view.candidates:
        x, y = xy[c.id]
        tip = f"#{c.id} {c.name} · {c.status}" + (f" · score {c.score:.2f}" if c.score is not None else "")
        if c.entry.status_reason:
            tip += " · " + c.entry.status_reason.splitlines()[0][:160]
        out.append(f'<a href="#cand-{c.id}" class="node" data-id="{c.id}" data-status="{esc(c.status)}">'
                   f'<title>{esc(tip)}</title>')
        if c.status == "rejected":
            out.append(f'<rect x="{x - 8:.0f}" y="{y - 8:.0f}" width="16" height="16" fill="{_STATUS_COLOUR["rejected"]}" '
                       f'stroke="#666"/>')
        else:
            fill = colours(c.score) if c.score is not None else _STATUS_COLOUR.get(c.status, "#ffffff")
            ring = ' stroke-width="3" stroke="#2ca02c"' if c.pareto else ' stroke="#333"'
            dash = ' stroke-dasharray="3,2"' if c.status in IN_FLIGHT else ""
            out.append(f'<circle cx="{x:.0f}" cy="{y:.0f}" r="11" fill="{fill}"{ring}{dash}/>')
        lines = _label_lines(f"#{c.id} {c.name}")
        spans = "".join(f'<tspan x="{x:.0f}" dy="{0 if k == 0 else 12}">{esc(ln)}</tspan>' for k, ln in enumerate(lines))
        out.append(f'<text x="{x:.0f}" y="{y + 26:.0f}" text-anchor="middle">{spans}</text>')
        if c.score is not None:
            out.append(f'<text x="{x:.0f}" y="{y - 15:.0f}" text-anchor="middle" fill="#555">{c.score:.1f}</text>')
        out.append("</a>")
    out.append("</svg>")
    return "".join(out)


def _leaderboard(view: RunView) -> str:
    base = view.baseline.search
    bc = view.baseline_confirm
    rows = []
    for rank, c in enumerate(view.leaderboard(), 1):
        s = c.search
        conf = c.confirmation
        if c.id == 0 and bc:
            ctext = [pm(bc["overall"]), "", "", "baseline"]
        elif conf is not None:
            cls = "discovery" if conf.verdict == "discovery" else "notconf"
            read = (f" (Δ {esc(conf.accuracy)} {_ci(conf.d_accuracy, True)})"
                    if conf.accuracy != "overall" and conf.d_accuracy else "")  # what the verdict read
            ctext = [pm(conf.overall), _ci(conf.d_overall, True), _ci(conf.d_length, True),
                     f'<span class="{cls}">{esc(conf.verdict)}</span>{read}']
        else:
            ctext = ["", "", "", ""]
        d_ov = s["overall"] - base["overall"] if base else None
        d_len = 100 * (s["length"] / base["length"] - 1) if base and base.get("length") else None
        rows.append(
            f'<tr class="{"pareto" if c.pareto else ""}" data-id="{c.id}"><td>{rank}</td>'
            f'<td class="l"><a href="#cand-{c.id}">#{c.id} {esc(c.name)}</a></td>'
            f'<td>{"" if c.entry.parent_id is None else c.entry.parent_id}</td><td>{c.entry.generation}</td>'
            f'<td>{_f(c.score, 2)}</td><td>{_f(s["overall"])}</td><td>{"" if c.id == 0 else _f(d_ov, sign=True)}</td>'
            f'<td>{_f(s["hard_pass1"])}</td><td>{_f(s["length"])}</td>'
            f'<td>{"" if c.id == 0 else _f(d_len, sign=True) + "%"}</td><td>{_f(s["validity"])}</td>'
            f'<td>{"✓" if c.pareto else ""}</td>' + "".join(f"<td>{t}</td>" for t in ctext) + "</tr>")
    cfg = view.config
    noise = view.noise()
    seeds = sorted(view.confirm_seeds)
    note = (f"Search columns: one training seed (seed {cfg.get('eval_seed', 0)}) per candidate, the same for all, "
            f"scored on the search held-out set, which is what selected them: optimistic numbers, no interval. ")
    if noise is not None:
        note += (f"GRPO's own seed-to-seed 95% half-width on Overall is ±{noise:.1f} ({len(seeds)} seeds), so gaps "
                 f"smaller than that are noise. ")
    note += ("Confirmation columns: re-trained on fresh seeds"
             + (f" ({', '.join(map(str, seeds))})" if seeds else "")
             + ", scored on a second held-out set disjoint from the search set: mean ± 95% t-interval, and the "
               "difference from GRPO with a Welch 95% interval (length in tokens). The search set's Δ length is in % of "
               "GRPO's. "
               "A green bar marks the Pareto front of the objective.")
    needs = view.discovery_rule()
    if needs:
        note += f" A discovery needs, over the whole 95% interval: {needs}."
    head = ("<tr><th>rank</th><th class=l>candidate</th><th>parent</th><th>gen</th><th>objective</th>"
            "<th>Overall</th><th>Δ GRPO</th><th>hard pass@1</th><th>length</th><th>Δ length</th><th>validity</th>"
            "<th>Pareto</th><th>Overall</th><th>Δ Overall [95% CI]</th><th>Δ length [95% CI]</th>"
            "<th>verdict</th></tr>")
    return (f'<table id="leaderboard"><thead><tr><th colspan="12">search set</th><th colspan="4">confirmation '
            f'set, fresh seeds</th></tr>{head}</thead><tbody>{"".join(rows)}</tbody></table>'
            f'<p class="note">{esc(note)}</p>')


def _not_trained(view: RunView) -> str:
    rows = [f'<tr><td><a href="#cand-{c.id}">#{c.id}</a></td><td class=l>{esc(c.name)}</td>'
            f'<td>{"" if c.entry.parent_id is None else c.entry.parent_id}</td>'
            f'<td class=l><span class="badge {esc(c.status)}">{esc(c.status)}</span></td>'
            f'<td class=l>{esc((c.entry.status_reason or "").splitlines()[0][:220] if c.entry.status_reason else "")}'
            f'</td></tr>' for c in view.candidates if c.score is None and c.id != 0]
    if not rows:
        return "<p>Every proposal was trained.</p>"
    return ('<table id="others"><tr><th>id</th><th class=l>name</th><th>parent</th><th class=l>status</th>'
            f'<th class=l>why</th></tr>{"".join(rows)}</table>')


def _diff(view: RunView, c: Candidate) -> str:
    if view.parent(c) is None:
        return f"<pre>{esc(c.entry.code)}</pre>"
    lines = view.code_diff(c)
    if not lines:
        return "<p>The code is the same as its parent's.</p>"
    out = []
    for ln in lines:
        cls = ("hunk" if ln.startswith("@@") else "add" if ln.startswith("+") else "del" if ln.startswith("-")
               else "")
        out.append(f'<span class="{cls}">{esc(ln)}</span>' if cls else esc(ln) + "\n")
    return "<pre>" + "".join(out) + "</pre>"


def _dl(pairs) -> str:
    items = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in pairs if v not in (None, "", []))
    return f"<dl>{items}</dl>" if items else ""


def _verification(c: Candidate) -> str:
    v = c.entry.verification
    if not v:
        return "<p>Not verified yet.</p>"
    rows = "".join(f'<tr><td class=l>{esc(ch.get("name", ""))}</td><td class="l {"ok" if ch.get("ok") else "bad"}">'
                   f'{"passed" if ch.get("ok") else "FAILED"}</td><td class=l>{esc(ch.get("message", ""))}</td></tr>'
                   for ch in v.get("checks", []))
    attempts = v.get("attempts") or []
    att = "".join(f'<li>attempt {a.get("attempt")}: {esc(a.get("stage", ""))}'
                  + (f' — {esc("; ".join(map(str, a.get("errors", [])))[:400])}' if a.get("errors") else "") + "</li>"
                  for a in attempts)
    iso = ", ".join(v.get("isolation", []))
    verdict = "<span class=ok>passed</span>" if v.get("ok") else f'<span class=bad>failed</span> at {esc(v.get("stage"))}'
    return (f"<p>{verdict}" + (f"; isolation: {esc(iso)}" if iso else "") + "</p>"
            + (f"<table>{rows}</table>" if rows else "") + (f"<ul>{att}</ul>" if len(attempts) > 1 else ""))


def _reflection(c: Candidate) -> str:
    r = c.entry.reflection
    if not r:
        return "<p>No reflection yet.</p>"
    findings = "".join(f'<li><b>{esc(f.get("tag", ""))}</b> ({_f(f.get("severity"), 2)}): {esc(f.get("evidence", ""))}'
                       f"</li>" for f in r.get("findings", []))
    return (_dl([("verdict", r.get("verdict")), ("summary", r.get("summary")), ("diagnosis", r.get("diagnosis")),
                 ("suggestions", ", ".join(map(str, r.get("suggestions", [])))),
                 ("LLM error", r.get("llm_error"))])
            + (f"<ul>{findings}</ul>" if findings else ""))


def _curves(view: RunView, c: Candidate) -> str:
    groups = view.curves(c)
    if not groups:
        return ""
    png = base64.b64encode(plot_lineage(groups)).decode()
    return f'<img class="curves" alt="learning curves of #{c.id}" src="data:image/png;base64,{png}">'


def _candidate(view: RunView, c: Candidate) -> str:
    e, p = c.entry, c.entry.proposal or {}
    parent = view.parent(c)
    cost = e.cost or {}
    evals = "".join(f"<li>{esc(v.purpose)} seed {v.seed} ({esc(v.fidelity)}): Overall {_f(v.metrics.get('overall'))}, "
                    f"length {_f(v.metrics.get('length'))}, {v.wall_s / 60:.1f} min</li>" for v in e.evaluations)
    llm = [r for r in view.llm_calls if r.get("entry_id") == c.id]
    cost_text = ", ".join(f"{k} {_f(v, 2) if isinstance(v, float) else v}" for k, v in sorted(cost.items()))
    head = (f'<summary><h3>#{c.id} {esc(c.name)}</h3> <span class="badge {esc(c.status)}">{esc(c.status)}</span> '
            f'gen {e.generation}' + (f' · parent <a href="#cand-{parent.id}">#{parent.id} {esc(parent.name)}</a>'
                                     if parent else "")
            + (f" · objective {c.score:.2f}" if c.score is not None else "") + "</summary>")
    body = [
        "<h4>Proposal</h4>",
        _dl([("hypothesis", p.get("hypothesis")), ("mechanism", p.get("mechanism")), ("math", p.get("math")),
             ("expected dynamics", p.get("expected_dynamics")), ("claims", ", ".join(map(str, p.get("claims", [])))),
             ("rationale", p.get("rationale")), ("author", p.get("author")), ("status reason", e.status_reason)]),
        "<h4>Learning curves</h4>" + (_curves(view, c) or "<p>Not trained.</p>"),
        "<h4>Evaluations</h4>" + (f"<ul>{evals}</ul>" if evals else "<p>None.</p>"),
        "<h4>Verification</h4>" + _verification(c),
        "<h4>Reflection</h4>" + _reflection(c),
        f"<h4>Code{' (diff against its parent)' if parent else ''}</h4>" + _diff(view, c),
        "<h4>Cost</h4><p>" + esc(cost_text or "–") + (f"; {len(llm)} LLM call(s)" if llm else "") + "</p>",
    ]
    # the link target sits inside the <details>, so following a link from the tree or the leaderboard opens it
    return (f'<details class="cand" id="sec-{c.id}"{" open" if c.id == 0 else ""}>{head}'
            f'<div class="body" id="cand-{c.id}">{"".join(body)}</div></details>')


def _llm_table(view: RunView) -> str:
    usage = view.llm_usage()
    if not usage:
        return ""
    rows = "".join(f"<tr><td class=l>{esc(role)}</td><td>{u['calls']}</td><td>{u['cached']}</td><td>{u['failed']}</td>"
                   f"<td>{u['tokens_in']:,}</td><td>{u['tokens_out']:,}</td>"
                   f"<td>{'$%.4f' % u['usd'] if u['price_known'] else 'unknown'}</td><td>{u['seconds']:.1f}</td></tr>"
                   for role, u in sorted(usage.items(), key=lambda kv: kv[0] == "total"))
    return ("<h2>LLM use</h2><table id='llm'><tr><th class=l>role</th><th>calls</th><th>from cache</th><th>failed</th>"
            f"<th>tokens in</th><th>tokens out</th><th>cost</th><th>seconds</th></tr>{rows}</table>")


def _label_lines(label: str, width: int = 16, most: int = 3) -> list[str]:
    """A node's label in lines of about ``width`` characters, broken after hyphens (names are acronyms
    like DACE-VM-LOO-GRPO) or spaces; a label longer than ``most`` lines ends with … (the tooltip has it whole)."""
    parts = re.findall(r"[^\s-]+-?|\s+", label)
    lines, cur = [], ""
    for p in parts:
        if p.isspace():
            p = " "
        if cur and len(cur) + len(p.rstrip()) > width:
            lines.append(cur.rstrip())
            cur = p.lstrip()
        else:
            cur += p
    if cur.strip():
        lines.append(cur.rstrip())
    lines = [ln if len(ln) <= width + 2 else ln[:width + 1] + "…" for ln in lines]
    return lines if len(lines) <= most else lines[:most - 1] + [lines[most - 1][:width] + "…"]


def _promotion(view: RunView) -> str:
    """The cascade: the promoted entries on both backends, and how well the cheap ranking predicted the real one."""
    target = view.config.get("promote")
    if not target:
        return ""
    rows = []
    for c in sorted((c for c in view.candidates if c.promoted), key=lambda c: -c.search.get("overall", 0)):
        conf = c.confirmation.overall if c.confirmation else (view.baseline_confirm.get("overall") if c.id == 0 else None)
        p = c.promoted
        rows.append(f'<tr><td class="l">#{c.id} {esc(c.name)}</td><td>{_f(c.search.get("overall"))}</td>'
                    f'<td>{pm(conf)}</td><td>{pm(p["overall"])}</td><td>{pm(p["hard_pass1"])}</td>'
                    f'<td>{pm(p["length"])}</td></tr>')
    agree = view.run.rank_agreement()
    if agree is None:
        said = "The rank agreement needs two or more promoted entries."
    else:
        ci = (f" [{agree['lo']:+.2f}, {agree['hi']:+.2f}] (95%, Fisher's z)" if agree["lo"] == agree["lo"]
              else " (no interval below 4 entries)")
        said = (f"Cheap → {target} rank agreement, Spearman's ρ between the search Overall (what selected them) and "
                f"the {target} Overall: {agree['rho']:+.2f}{ci} over {agree['n']} entries.")
    head = (f"<tr><th class=l>entry</th><th>search Overall</th><th>confirmation Overall</th><th>{esc(target)} Overall"
            f"</th><th>{esc(target)} hard pass@1</th><th>{esc(target)} length</th></tr>")
    return (f"<h2>Promoted to {esc(target)}</h2><table>{head}{''.join(rows)}</table>"
            f'<p class="note">Trained again on the {esc(target)} backend on the confirmation seeds and scored on its '
            f"confirmation split: mean ± 95% t-interval (seeds). {esc(said)}</p>")


def render(view: RunView) -> str:
    """The whole report as one HTML string."""
    cfg, b = view.config, view.budget()
    scores = [c.score for c in view.candidates if c.score is not None]
    colours = _Colours(scores)
    counts = view.counts()
    front = ", ".join(f"#{c.id} {c.name}" for c in view.pareto_front()) or "–"
    title = f"poise discovery run · {view.name or view.root.name}"
    when = view.period()
    ran = ("ran " + time.strftime("%Y-%m-%d %H:%M", time.localtime(when[0])) + " to "
           + time.strftime("%Y-%m-%d %H:%M", time.localtime(when[1]))) if when else "no events logged"
    failures = view.agent_failures()
    fail_html = ""
    if failures:
        items = "".join(f"<li>{esc(ev.payload.get('role', ''))}: {esc(str(ev.payload.get('reason', ''))[:300])}</li>"
                        for ev in failures[-20:])
        fail_html = f"<h2>Agent steps that failed ({len(failures)})</h2><ul>{items}</ul>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{esc(title)}</h1>
<p class="meta">{esc(str(view.root))} · directive: {esc(cfg.get("directive") or "(none: accuracy)")} ·
{esc(BackendSpec(cfg.get("backend", "tiny"), cfg.get("fidelity", "?")).describe)} ·
strategy {esc(cfg.get("strategy", "?"))} ·
trained {b["trained"]}/{b["budget"]} · proposals {b["proposals"]}/{b["max_proposals"]} ·
{" · ".join(f"{n} {esc(s)}" for s, n in sorted(counts.items()))} · training time {b["train_s"] / 60:.1f} min ·
{ran} · report made {time.strftime("%Y-%m-%d %H:%M")}</p>
<p class="meta">{esc(view.objective.describe())} · run: <b>{esc(view.state())}</b></p>
{f'<p class="unjailed"><b>{esc(view.unjailed_note)}</b></p>' if view.unjailed_note else ""}
<h2>Genealogy</h2>
<p class="note">Each node is an archive entry under its parent. Colour: objective score on the search set; a green
ring: the Pareto front; red: failed in training; grey squares: rejected by the verifier; hollow: in flight.
Click a node for its section; hover for its status and reason.</p>
{colours.legend()}
<div style="overflow-x:auto">{tree_svg(view, colours)}</div>
<h2>Leaderboard</h2>
<p>Pareto front: {esc(front)}</p>
<div style="overflow-x:auto">{_leaderboard(view)}</div>
{_promotion(view)}
<h2>Not trained, or failed</h2>
{_not_trained(view)}
{_llm_table(view)}
{fail_html}
<h2>Candidates</h2>
<p class="note">Each candidate's proposal, its curves beside its parent's (search seed), its evaluations, the
verifier's report, the reflection and its code as a diff against its parent.</p>
{"".join(_candidate(view, c) for c in view.candidates)}
</body></html>
"""


def write_report(view: RunView, path: Path) -> Path:
    """Write the report next to nothing else: the one file is all there is."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render(view), encoding="utf-8")
    tmp.replace(path)  # a reader never sees half a report
    return path
