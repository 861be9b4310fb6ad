#!/usr/bin/env python3
"""Scores labelled transcript sets with `vishguard classify` and prints, per set, scams flagged,
honest calls flagged, F1 and FPR (flagged = suspected or high).

    benches/classify_sets.py [--bin target/release/vishguard] [--half 0|1] [--show]
                             [--extra "--no-context-check"] SET...

A SET is JSON lines (`id`, `label`, `text`, `lang`; rows without a label count as honest, rows
labelled `unwanted` are left out) or the text form of `benches/english_calls/` and
`benches/mandarin_calls/`: `ID|LABEL|TYPE|TEXT` per line, the language taken from the folder
(`mandarin_calls`) or the file name (`zh`). `--half` keeps one half of the dev set by the same
split as tests/detector.rs (the last byte of the id's SHA-256, odd or even). `--show` lists the
misses and false alarms with their scores and categories.
"""
import argparse, hashlib, json, os, subprocess, sys


def rows_of(path):
    lang = "zh" if ("mandarin" in path or "zh" in os.path.basename(path)) else "en"
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            if path.endswith(".jsonl"):
                r = json.loads(line)
                out.append(dict(id=r["id"], label=r.get("label", "legit"), text=r["text"],
                                lang=r.get("lang", lang)))
            else:
                parts = line.split("|", 3)
                if len(parts) != 4:
                    sys.exit(f"{path}:{n}: expected ID|LABEL|TYPE|TEXT")
                out.append(dict(id=parts[0], label=parts[1], type=parts[2], text=parts[3], lang=lang))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sets", nargs="+")
    ap.add_argument("--bin", default=os.environ.get("VISHGUARD_BIN", "target/release/vishguard"))
    ap.add_argument("--half", type=int, choices=[0, 1])
    ap.add_argument("--show", action="store_true")
    ap.add_argument("--extra", default="", help="more arguments for `classify`")
    a = ap.parse_args()
    for path in a.sets:
        rows = [r for r in rows_of(path) if r["label"] in ("scam", "legit")]
        if a.half is not None:
            rows = [r for r in rows if hashlib.sha256(r["id"].encode()).digest()[31] & 1 == a.half]
        stdin = "".join(json.dumps(dict(id=r["id"], text=r["text"], lang=r["lang"]),
                                   ensure_ascii=False) + "\n" for r in rows)
        p = subprocess.run([a.bin, "classify", *a.extra.split(), "-"], input=stdin.encode(),
                           capture_output=True)
        records = {}
        for line in p.stdout.decode().splitlines():
            d = json.loads(line)
            records[d.get("call_id")] = d
        tp = fp = fn = tn = 0
        for r in rows:
            d = records.get(r["id"])
            if d is None or "error" in d:
                sys.exit(f"{path}: {r['id']}: not scored: {d or p.stderr.decode()[-500:]}")
            flagged = d["risk"] in ("suspected", "high")
            scam = r["label"] == "scam"
            tp += scam and flagged
            fn += scam and not flagged
            fp += (not scam) and flagged
            tn += (not scam) and not flagged
            if a.show and scam != flagged:
                kinds = sorted({e["category"] for e in d["evidence"]})
                print(f"  {'MISS' if scam else 'FA  '} {d['score']:.3f} {r['id']} {kinds}")
        prec, rec = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
        f1 = 2 * prec * rec / max(prec + rec, 1e-9)
        half = "" if a.half is None else f" half {a.half}"
        print(f"{path}{half}: scams {tp}/{tp + fn}, honest flagged {fp}/{fp + tn}, "
              f"F1 {f1:.3f}, FPR {fp / max(fp + tn, 1):.3f}")


if __name__ == "__main__":
    main()
