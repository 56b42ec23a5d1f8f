"""Per chain length n: per-problem sampled correct counts (n_s samples), greedy correctness, validity, truncation,
per-style accuracy. usage: probe2.py MODEL.pt BUDGET OUT.json [nmin nmax]"""
import sys, json, time, random, collections, torch
from poise.sandbox.model import ModelConfig, TinyGPT, generate
from poise.sandbox.trainer import build_prompts
from poise.sandbox.task import decode, grade, make_problem
torch.set_num_threads(int(__import__("os").environ.get("T", "2")))
path, budget, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
nmin, nmax = (int(sys.argv[4]), int(sys.argv[5])) if len(sys.argv) > 5 else (2, 14)
m = TinyGPT(ModelConfig(n_layer=int(__import__("os").environ.get("NL", "3")), n_head=4, n_embd=128, block_size=int(__import__("os").environ.get("BS", "144")))); m.load_state_dict(torch.load(path)); m.eval()
NS, P = 32, 64
def style_of(r):
    if r.startswith('>'): return 'direct'
    head = r.split(';')[0]
    return 'verbose' if ('+' in head or '-' in head) else 'concise'
res = {}

t0 = time.time()
for n in range(nmin, nmax + 1):
    rng = random.Random(f"probe/{n}")
    probs = [make_problem(rng, n, int(__import__("os").environ.get("OP", "9")), 0.4) for _ in range(P)]
    s = generate(m, build_prompts(probs, NS), budget, 1.0, stream=n)
    counts = [0] * P; st = collections.defaultdict(lambda: [0, 0, 0]); valid = trunc = noans = 0
    for r in range(s.tokens.shape[0]):
        txt = decode(s.tokens[r]); fin = bool(s.finished[r]); v, c = grade(txt, fin, probs[r // NS])
        counts[r // NS] += c; valid += v; trunc += not fin; noans += fin and '>' not in txt
        a = st[style_of(txt)]; a[0] += 1; a[1] += c
    g = generate(m, build_prompts(probs, 1), budget, 1.0, greedy=True)
    gc = [grade(decode(g.tokens[i]), bool(g.finished[i]), probs[i])[1] for i in range(P)]
    gs = [style_of(decode(g.tokens[i])) for i in range(P)]
    N = s.tokens.shape[0]
    res[n] = {"counts": counts, "greedy": gc, "greedy_styles": gs, "valid": valid / N, "trunc": trunc / N,
              "noans": noans / N, "len": float(s.lengths.float().mean()),
              "styles": {k: [a[0] / N, a[1] / max(a[0], 1)] for k, a in st.items()}}
    r = res[n]
    print(n, f"p1 {sum(counts)/N*100:5.1f} greedy {100*sum(gc)/P:5.1f} valid {100*r['valid']:5.1f} trunc {100*r['trunc']:4.1f} "
          f"noans {100*r['noans']:4.1f} len {r['len']:5.1f} | " + " ".join(f"{k} {100*v[0]:.0f}% acc {100*v[1]:.1f}" for k, v in sorted(r['styles'].items())),
          f"| greedy-by-style " + " ".join(f"{k} {sum(c for c, t in zip(gc, gs) if t == k)}/{gs.count(k)}" for k in ('verbose','concise','direct')),
          round(time.time() - t0), flush=True)
json.dump(res, open(out, "w"))
