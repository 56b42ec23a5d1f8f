"""A small discovery run written through the real archive, with every kind of entry the views must show:
the baseline, evaluated children and grandchildren (one re-evaluated on fresh seeds), a rejected one,
one that failed in training, one still in flight, and names and text that would break HTML if they
were not escaped. The numbers are chosen so the expected scores, front and verdicts are known."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from poise.algorithms import builtin_source
from poise.discovery.archive import Archive

REPO = Path(__file__).resolve().parents[2]
# a real 8-candidate run (`poise discover --budget 8 --directive "accurate and concise"`) on the sandbox as it
# was before its retune; the views are tested on it because its entries are known (docs/benchmarks.md,
# "Before the retune"). The example run shipped for users is benchmarks/results/discover_concise.db.
SHIPPED = REPO / "tests" / "fixtures" / "run_before_retune.db"
HOSTILE = '<script>alert("x")</script>&'


def metrics(overall: float, length: float, hard: float = 20.0, validity: float = 99.0) -> dict:
    tiers = {t: {"metric": "pass@32", "pass@1": hard, "score": 95.0, "validity": validity, "length": length}
             for t in ("aime24", "aime25", "amc")}
    tiers.update({t: {"metric": "greedy", "pass@1": overall, "score": overall, "validity": validity, "length": length}
                  for t in ("math500", "minerva", "olympiad")})
    return {"tiers": tiers, "overall": overall, "length": length, "validity": validity}


def trajectory(steps: int = 12, acc0: float = 0.3, slope: float = 0.02) -> list[dict]:
    return [{"step": i, "reward": acc0 + slope * i, "accuracy": acc0 + slope * i, "validity": 1.0,
             "entropy": 0.3 - 0.01 * i, "response_length": 30.0 + i, "kl": 0.001 * i, "clip_frac": 0.0,
             "grad_norm": 0.5} for i in range(steps)]


def _evaluated(a: Archive, name: str, code: str, parent: int | None, gen: int, m: dict, purpose: str = "search",
               proposal: dict | None = None) -> int:
    i = a.add_entry(name, code, proposal or {"name": name, "hypothesis": f"{name} helps", "mechanism": name,
                                              "math": "A_i = r_i - mean(r)", "claims": ["correct_above_wrong"]},
                    [] if parent is None else [parent], gen)
    a.set_verification(i, {"ok": True, "stage": "passed", "errors": [], "checks": [
        {"name": "static", "ok": True, "message": ""}, {"name": "claim: correct_above_wrong", "ok": True,
                                                        "message": "held in 16 groups"}]})
    a.set_status(i, "verified")
    a.set_status(i, "evaluating")
    a.add_evaluation(i, 0, "smoke", trajectory(acc0=m["overall"] / 300), m, 2.0, purpose)
    a.set_status(i, "evaluated")
    a.set_reflection(i, {"verdict": "keep", "summary": f"{name}: fine", "diagnosis": f"{name} moved accuracy",
                         "findings": [{"tag": "plateau", "severity": 0.2, "evidence": "flat after step 8"}],
                         "suggestions": ["length_shaping"]})
    return i


def build(root: Path, directive: str = "") -> Path:
    """Write the run into `root` (a run folder) and return it."""
    root.mkdir(parents=True, exist_ok=True)
    a = Archive(root / "archive.db")
    try:
        cfg = {"budget": 4, "directive": directive, "workers": 1, "fidelity": "smoke", "strategy": "lineage",
               "search_seed": 0, "eval_seed": 0, "reeval_top": 1, "reeval_seeds": [1001, 1002, 1003], "protocol": 2}
        a.set_meta("config", json.dumps(cfg))
        grpo, av = builtin_source("grpo"), builtin_source("av_grpo")
        b = _evaluated(a, "GRPO", grpo, None, 0, metrics(90.0, 40.0), "baseline")
        c1 = _evaluated(a, "AV-GRPO", av, b, 1, metrics(94.0, 41.0, hard=25.0))
        c2 = _evaluated(a, "DACE-GRPO", builtin_source("dace_grpo"), b, 1, metrics(89.0, 30.0))
        _evaluated(a, HOSTILE, builtin_source("vm_av_grpo"), c1, 2, metrics(92.0, 45.0),
                        proposal={"name": HOSTILE, "hypothesis": "</dd><img src=http://example.invalid/x.png>",
                                  "mechanism": "a [/] b", "math": "<b>bold</b> A[i] = [bold]r[/bold]_i",
                                  "claims": []})
        for e, base in ((b, 90.0), (c1, 94.0)):  # fresh seeds, on the confirmation set
            for k, s in enumerate((1001, 1002, 1003)):
                # the same seed's luck in both arms (base - 1 + k), and a candidate that varies on its own
                own = 0.6 if e == c1 and k == 1 else 0.0
                a.add_evaluation(e, s, "smoke/confirm", trajectory(), metrics(base - 1 + k + own, 40.0 + k), 2.0,
                                 "reeval")
        r = a.add_entry("BROKEN-GRPO", "def compute_advantages(batch, cfg):\n    return batch.rewards * 0\n",
                        {"name": "BROKEN-GRPO", "mechanism": "zero"}, [c1], 2)
        a.set_verification(r, {"ok": False, "stage": "claims", "errors": ["claim correct_above_wrong failed"],
                               "checks": [{"name": "claim: correct_above_wrong", "ok": False, "message": "0 of 16"}],
                               "attempts": [{"attempt": 1, "ok": False, "stage": "claims", "errors": ["x"]},
                                            {"attempt": 2, "ok": False, "stage": "claims", "errors": ["y"]}]})
        a.set_status(r, "rejected", "verification failed after 3 attempts: claim correct_above_wrong failed")
        f = a.add_entry("NAN-GRPO", grpo + "\n# NaN at step 3 in real training\n",
                        {"name": "NAN-GRPO", "mechanism": "nan"}, [c2], 2)
        a.set_status(f, "verified")
        a.set_status(f, "evaluating")
        a.set_status(f, "failed", "advantages are NaN at step 3")
        a.add_entry("LATER-GRPO", "", {"name": "LATER-GRPO", "mechanism": "not yet"}, [c2], 2)
        a.log("agent_failed", None, role="proposer", reason="no JSON object in the answer")
    finally:
        a.close()
    return root


def shipped(root: Path) -> Path:
    """A copy of the real 8-candidate run from before the retune, as a run folder."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(SHIPPED, root / "archive.db")
    return root
