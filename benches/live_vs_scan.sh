#!/usr/bin/env bash
# Live as good as scan? Hears the calls of a labelled folder twice with the same model: once
# as `vishguard scan` hears a recording (its speech pieces, in 15 s windows where they fit), once as `vishguard listen` hears
# a live call (cut into utterances at pauses and at 6 s of speech, each heard alone, runs of
# them heard again joined before the close, fed as fast as the engine takes it). Prints recall and false positives of both (live: by the calls'
# summaries, and by any alert during the call), and each call where they disagree with what
# live heard.
# DIR holds labels.csv (`path,label,...`, paths relative to DIR, label scam|legit), as the
# folders benches/mandarin_phone.sh and benches/heldout_voices.sh render.
# Extra arguments go to both commands (e.g. --no-context-check); VISHGUARD_BIN picks the
# binary, TAG=x keeps the results apart (live_x.jsonl, scan_x.jsonl in DIR); SCAN=keep reuses
# the scan results already there and SCAN_TAG=y names them (scan_y.jsonl), to compare several
# live settings with one scan.
# Usage: benches/live_vs_scan.sh DIR [MODEL [args...]]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=$(realpath "$1"); model=${2:-base}; shift $(( $# < 2 ? $# : 2 ))
bin=${VISHGUARD_BIN:-$root/target/release/vishguard}
tag=${TAG:+_$TAG}
scan_tag=${SCAN_TAG-${TAG:-}}; scan_tag=${scan_tag:+_$scan_tag}
files=()
while IFS=, read -r path _; do
  files+=("$dir/$path")
done < <(tail -n +2 "$dir/labels.csv")
from=()
for f in "${files[@]}"; do from+=(--from-file "$f"); done
"$bin" listen --model "$model" --format jsonl --transcripts "${from[@]}" "$@" \
  > "$dir/live$tag.jsonl" 2>"$dir/live$tag.log" || [[ $? == 1 ]]
if [[ ${SCAN:-} != keep || ! -s $dir/scan$scan_tag.jsonl ]]; then
  "$bin" scan --model "$model" --format jsonl "${files[@]}" "$@" \
    > "$dir/scan$scan_tag.jsonl" 2>"$dir/scan$scan_tag.log" || [[ $? == 1 ]]
fi
python3 - "$dir" "$tag" "$scan_tag" <<'PY'
import collections, json, os, sys
d, tag, scan_tag = sys.argv[1], sys.argv[2], sys.argv[3]
key = lambda p: os.path.basename(p)
labels = {}
for line in open(f"{d}/labels.csv").read().split("\n")[1:]:
    if line:
        path, label = line.split(",")[:2]
        labels[key(path)] = label
alerted = set()
def verdicts(name, tag):
    v, heard = {}, collections.defaultdict(list)
    calls = {}
    for line in open(f"{d}/{name}{tag}.jsonl"):
        r = json.loads(line)
        if r.get("event") == "call_started":
            calls[r["id"]] = key(r["metadata"]["file"])
        elif r.get("event") == "transcript":
            heard[calls.get(r["call_id"], "?")].append(r["text"])
        elif r.get("event") == "alert":
            alerted.add(calls.get(r["call_id"], "?"))
        elif r.get("event", "call_ended") == "call_ended" and "risk" in r:
            # listen's call summary, or scan's per-call record (the same fields, no event).
            v[key(r["metadata"]["file"])] = (r["risk"] in ("suspected", "high"), r["score"])
    return v, heard
live, heard = verdicts("live", tag)
scan, _ = verdicts("scan", scan_tag)
scams = [k for k, l in labels.items() if l == "scam"]
legit = [k for k in labels if k not in scams]
for name, v in (("scan", scan), ("live", live)):
    tp = sum(v.get(k, (False,))[0] for k in scams)
    fp = sum(v.get(k, (False,))[0] for k in legit)
    missing = [k for k in labels if k not in v]
    print(f"{name}: scams flagged {tp}/{len(scams)}, legitimate flagged {fp}/{len(legit)}"
          + (f", no verdict for {missing}" if missing else ""))
# What a person watching live sees: any alert during the call, whether or not the call's
# summary bears it out (an early alert can be withdrawn by words that came later).
print(f"live, any alert during the call: scams {sum(k in alerted for k in scams)}/{len(scams)}, "
      f"legitimate {sum(k in alerted for k in legit)}/{len(legit)}")
for k in sorted(labels):
    s, l = scan.get(k, (None, None)), live.get(k, (None, None))
    if s[0] != l[0]:
        print(f"  {k} ({labels[k]}): scan {s[1]}, live {l[1]}: {' | '.join(heard.get(k, []))}")
PY
