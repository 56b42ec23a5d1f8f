"""One training run at the standard fidelity with the RL settings overridden: prints the curves every 10
steps and each tier's score, pass@1, truncation and style mix, and writes metrics and curves to OUT.json.

    python benchmarks/tuning/diag.py ALGO LR BUDGET SEED OUT.json [rl_field=value ...]

ALGO is a built-in name or a .py file (benchmarks/algorithms/null_grpo.py is the coin-flip control).
Environment: T (torch threads, default 1); SFT=path.pt starts from that policy instead of the shipped
warm start; TRAIN=lo-hi trains on chains of lo..hi numbers instead of task.TRAIN_TERMS."""
import dataclasses, json, os, sys, time
from pathlib import Path

import torch

torch.set_num_threads(int(os.environ.get("T", "1")))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import poise.backends.tiny as tiny  # noqa: E402
import poise.sandbox.task as task  # noqa: E402
from poise.algorithms import load_algorithm  # noqa: E402
from poise.evaluation.fidelity import get_fidelity  # noqa: E402

algo, lr, budget, seed, out = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
base = get_fidelity("standard")
extra = {k: type(getattr(base.rl, k))(v) for k, v in (a.split("=") for a in sys.argv[6:])}
fid = dataclasses.replace(base, rl=dataclasses.replace(base.rl, lr=lr, max_new_tokens=budget, **extra),
                          eval=dataclasses.replace(base.eval, max_new_tokens=budget))
if os.environ.get("TRAIN"):
    task.TRAIN_TERMS = tuple(map(int, os.environ["TRAIN"].split("-")))
if os.environ.get("SFT"):
    _load = tiny.sft_policy

    def _sft(f, *a, **k):
        m = _load(f, *a, **k)
        m.load_state_dict(torch.load(os.environ["SFT"], weights_only=True))
        return m
    tiny.sft_policy = _sft


def on_step(i, row):
    if i % 10 == 0:
        print(i, {k: round(v, 3) for k, v in row.items() if isinstance(v, float)}, flush=True)


t0 = time.time()
r = tiny.evaluate(load_algorithm(algo), fid, seed, on_step=on_step)
m = r.metrics
print(f"{algo} lr {lr} budget {budget} seed {seed} {extra}: Overall {m['overall']:.1f} validity {m['validity']:.1f} "
      f"wall {time.time() - t0:.0f}s")
for t, v in m["tiers"].items():
    print(t, round(v["score"], 1), "p1", round(v["pass@1"], 1), "trunc", round(v["truncated"], 1), "styles",
          {k: [round(x, 1) for x in s.values()] for k, s in v["styles"].items()})
Path(out).write_text(json.dumps({"metrics": m, "curves": r.trajectory}))
