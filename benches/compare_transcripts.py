"""GPU transcripts against the CPU's, for benches/gpu-check.sh.

    compare_transcripts.py OUT MODEL DEVICE   # OUT/transcripts.MODEL.{cpu.f32,DEVICE.f32,DEVICE.f16}.json
    compare_transcripts.py --smi SMI.csv      # GPU utilisation and memory from nvidia-smi's log

Word error rate counts Chinese characters as words (Chinese is written without spaces).
"""
import json
import sys


def texts(path):
    rows = {}
    try:
        for line in open(path, encoding="utf-8"):
            line = line.strip()
            if line:
                r = json.loads(line)
                key = (r.get("file"), r.get("channel"))
                rows[key] = " ".join(s["text"].strip() for s in r.get("segments", []))
    except (FileNotFoundError, json.JSONDecodeError):
        pass
    return rows


def words(text):
    out = []
    for w in text.lower().split():
        if any("\u4e00" <= c <= "\u9fff" for c in w):
            out.extend(c for c in w if c.strip())
        else:
            out.append(w.strip(".,?!\"'"))
    return [w for w in out if w]


def edits(ref, hyp):
    r, h = words(ref), words(hyp)
    d = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(h) + 1):
            cur = min(d[j] + 1, d[j - 1] + 1, prev + (r[i - 1] != h[j - 1]))
            prev, d[j] = d[j], cur
    return d[len(h)], len(r)


def smi(path):
    rows = [l.split(", ") for l in open(path).read().splitlines()[1:]]
    rows = [r for r in rows if len(r) > 2]
    util = [float(r[1].split()[0]) for r in rows]
    mem = [float(r[2].split()[0]) for r in rows]
    if util:
        print(f"GPU while measuring: utilisation max {max(util):.0f}% mean "
              f"{sum(util) / len(util):.0f}%, memory max {max(mem):.0f} MiB")


def main():
    if sys.argv[1] == "--smi":
        smi(sys.argv[2])
        return
    out, model, device = sys.argv[1:4]
    cpu = texts(f"{out}/transcripts.{model}.cpu.f32.json")
    for kind in (f"{device}.f32", f"{device}.f16"):
        gpu = texts(f"{out}/transcripts.{model}.{kind}.json")
        same = sum(1 for k in cpu if gpu.get(k) == cpu[k])
        errors = total = 0
        for k in cpu:
            e, n = edits(cpu[k], gpu.get(k, ""))
            errors += e
            total += n
        print(f"transcripts {model} {kind} vs cpu.f32: {same}/{len(cpu)} files identical, "
              f"WER {errors / max(total, 1):.4f} over {total} words")


if __name__ == "__main__":
    main()
