"""LOGO of the zh call model with e5 windows (shipped features), EmbeddingGemma chunks, or both."""
import json, os, sys
OUT = os.environ.get("OUT", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "target", "encoder_compare"))
import numpy as np
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import train_call_model as T
N = int(sys.argv[1]); modes = sys.argv[2:]
calls = json.load(open(OUT + "/calls.json"))
chunks = json.load(open(f"{OUT}/chunks_{N}.json"))
emb = np.load(f"{OUT}/emb_{N}.npy")
index = {c: i for i, c in enumerate(chunks)}
groups, dev1 = T.training_groups("zh")
extra = {f: T.vectors(os.path.join(T.ROOT, f), "zh") for f in calls if f not in groups and f != "dev half 1"}
text_of = {c[0]: c[1] for g in calls.values() for c in g}
def gem(r):
    """EmbeddingGemma's pieces of the call pooled by max and mean; a call that embed.py has
    not embedded (whole) is an error, not zeros."""
    t = "".join(text_of[r["id"]].split())
    ix = [index[t[i:i + N]] for i in range(0, len(t), N)]
    if not ix or max(ix) >= len(emb):
        sys.exit(f"{r['id']}: not embedded (run embed.py {N} to the end)")
    v = emb[ix]
    return np.concatenate([v.max(0), v.mean(0)])
W = {}
for f in [os.path.join(OUT, "e5_128", x) for x in os.listdir(os.path.join(OUT, "e5_128"))]:
    for line in open(f):
        x = json.loads(line)
        if x["vectors"]:
            W[x["id"]] = np.array(x["vectors"], dtype=np.float32)
S = T.pack_settings("zh")
for mode in modes:
    def feat(r):
        e5 = np.concatenate([r["vs"].max(0), r["vs"].mean(0)])
        parts = []
        for m in mode.split("+"):
            if m == "e5":
                parts.append(e5)
            elif m == "e5w":
                v = W[r["id"]]
                parts.append(np.concatenate([v.max(0), v.mean(0)]))
            else:
                parts.append(gem(r))
        return np.concatenate(parts + [[r["score"]]])
    for rs in list(groups.values()) + [dev1] + list(extra.values()):
        for r in rs: r["f_" + mode] = feat(r)
    X = lambda rows: np.array([r["f_" + mode] for r in rows])
    prob = lambda m, rows: 1 / (1 + np.exp(-(X(rows) @ m[0] + m[1])))
    tot = {}
    for g, rows in groups.items():
        rest = [r for h, rs in groups.items() if h != g for r in rs]
        m = T.fit(X(rest), np.array([r["y"] for r in rest]))
        flagged = T.flags(rows, prob(m, rows), S)
        kind = "dev0" if g.startswith("dev") else "cmdata" if "call_model_data" in g else "read"
        parts = {kind: lambda r: True, "all": lambda r: True}
        # The read groups hold each set's text and what base heard of it (ids ending "_heard").
        if kind == "read":
            parts["read text"] = lambda r: not r["id"].endswith("_heard")
            parts["read heard"] = lambda r: r["id"].endswith("_heard")
        for key, sel in parts.items():
            rf = [(r, f) for r, f in zip(rows, flagged) if sel(r)]
            c = T.counts([r for r, _ in rf], [f for _, f in rf])
            tot[key] = tot.get(key, np.zeros(4, int)) + np.array(c)
    everything = [r for rs in groups.values() for r in rs]
    m = T.fit(X(everything), np.array([r["y"] for r in everything]))
    print(f"== {mode}")
    for k, v in tot.items():
        print(f"  LOGO {k:12} {v[0]}/{v[1]} scams, {v[2]}/{v[3]} honest")
    for name, rows in [("dev half 1", dev1)] + list(extra.items()):
        c = T.counts(rows, T.flags(rows, prob(m, rows), S))
        print(f"  held {name.split('/')[-1]:28} {c[0]}/{c[1]} scams, {c[2]}/{c[3]} honest")
