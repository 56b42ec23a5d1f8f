"""Compose tiers from per-length probe data. usage: compose.py probe.json 'tiers-json'
tiers: [[name, nmin, nmax, metric], ...]"""
import sys, json
d = {int(k): v for k, v in json.load(open(sys.argv[1])).items()}
tiers = json.loads(sys.argv[2])
W = {"aime24": .2, "aime25": .2, "amc": .15, "math500": .15, "minerva": .15, "olympiad": .15}
ov = 0; allfail = []; vals = []
for name, a, b, metric in tiers:
    ns = range(a, b + 1)
    counts = [c for n in ns for c in d[n]["counts"]]
    p1 = 100 * sum(counts) / (32 * len(counts))
    p32 = 100 * sum(c > 0 for c in counts) / len(counts)
    gr = 100 * sum(g for n in ns for g in d[n]["greedy"]) / sum(len(d[n]["greedy"]) for n in ns)
    val = 100 * sum(d[n]["valid"] for n in ns) / len(ns); tr = 100 * sum(d[n]["trunc"] for n in ns) / len(ns)
    na = 100 * sum(d[n]["noans"] for n in ns) / len(ns)
    af = sum((1 - c / 32) ** 8 for c in counts) / len(counts)
    allfail.append(af); vals.append(val)
    st = {}
    for n in ns:
        for k, (sh, ac) in d[n]["styles"].items():
            s = st.setdefault(k, [0, 0]); s[0] += sh; s[1] += sh * ac
    sts = " ".join(f"{k} {100*v[0]/len(ns):.0f}%:{100*v[1]/max(v[0],1e-9):.1f}" for k, v in sorted(st.items()))
    score = p32 if metric == "pass@k" else gr
    ov += W[name] * score
    print(f"{name:9s} {a}-{b} {metric:6s} score {score:5.1f} p@1 {p1:5.1f} p@32 {p32:5.1f} greedy {gr:5.1f} valid {val:5.1f} trunc {tr:4.1f} noans {na:4.1f} allfail {100*af:4.1f} | {sts}")
print(f"overall {ov:.1f} validity {sum(vals)/len(vals):.1f} all-fail (uniform over tiers) {100*sum(allfail)/len(allfail):.1f}")
