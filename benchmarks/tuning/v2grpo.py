import sys, dataclasses, json, time, torch
torch.set_num_threads(1)
sys.path.insert(0, "/work/v2")
import poise; assert poise.__file__.startswith("/work/v2"), poise.__file__
from poise.evaluation.fidelity import get_fidelity
from poise.backends.tiny import evaluate
from poise.algorithms import load_algorithm
lr, budget, seed = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
f = get_fidelity("standard")
f = dataclasses.replace(f, rl=dataclasses.replace(f.rl, lr=lr, max_new_tokens=budget), eval=dataclasses.replace(f.eval, max_new_tokens=budget))
t0 = time.time()
r = evaluate(load_algorithm("grpo"), f, seed)
m = r.metrics
print(f"lr {lr} budget {budget} seed {seed}: Overall {m['overall']:.1f} validity {m['validity']:.1f} wall {time.time()-t0:.0f}s",
      {t: round(v['score'], 1) for t, v in m['tiers'].items()}, flush=True)
