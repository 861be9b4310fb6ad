#!/usr/bin/env python3
"""Writes what base heard of a call set read through the telephone channel as a text set of its
own (a "heard copy", `benches/mandarin_calls/heard/`), for the call model's training
(`benches/train_call_model.py`) and for `classify` without the recogniser.

    benches/heard_copy.py CALLS RENDERING_DIR [--suffix _heard] > heard/STEM.KIND.txt

CALLS is the `ID|LABEL|TYPE|TEXT` set that `benches/mandarin_phone.sh` read; RENDERING_DIR one
of its renderings (`target/mandarin_phone/SET-VOICE-EFFECT/renderingN`, with `transcripts/`
saved by its scan). Each call becomes `ID+SUFFIX|LABEL|TYPE|HEARD`, HEARD the transcript's
segment texts joined as they were written (no separator, as the earlier heard copies were
made). A call without a transcript is an error: a copy that silently lacks calls would train
the model on a different mix than it says.
"""
import argparse
import json
import os
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("calls")
    ap.add_argument("rendering")
    ap.add_argument("--suffix", default="_heard")
    a = ap.parse_args()
    missing = []
    with open(a.calls, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.rstrip("\n").split("|", 3)
            if not line.strip():
                continue
            if len(parts) != 4:
                sys.exit(f"{a.calls}:{n}: not ID|LABEL|TYPE|TEXT")
            call_id, label, kind, _ = parts
            path = os.path.join(a.rendering, "transcripts", call_id + ".json")
            if not os.path.exists(path):
                missing.append(call_id)
                continue
            with open(path, encoding="utf-8") as t:
                segments = json.load(t)["segments"]
            heard = "".join(s["text"] for s in segments).replace("|", " ").replace("\n", " ")
            print(f"{call_id}{a.suffix}|{label}|{kind}|{heard}")
    if missing:
        sys.exit(f"{a.rendering}: no transcript for {len(missing)} calls: {', '.join(missing[:5])}")


if __name__ == "__main__":
    main()
