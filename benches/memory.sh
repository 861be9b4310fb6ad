#!/usr/bin/env bash
# Peak memory of `vishguard scan` against the length of the recording: 48 kHz stereo FLAC calls
# of 30 minutes and 3 hours (a two-party call: one party's scam call every 5 minutes on the
# left channel, a second call on the right 2.5 minutes later, light noise between), scanned
# with the given model by each binary given, one after another in this run. Prints the peak
# resident set (GNU time's "Maximum resident set size") and the wall time of each, and the
# ratio of each binary's to the first's.
# Usage: benches/memory.sh [MODEL] BINARY [BINARY...]   (e.g. an older build, then target/release/vishguard)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
model=${1:-base}
shift || true
[ $# -ge 1 ] || set -- "$root/target/release/vishguard"
out=${MEMORY_DIR:-$root/target/memory_bench}
mkdir -p "$out"

left="$root/audio-samples/en_scam_irs_warrant.wav"
right="$root/audio-samples/en_legit_pharmacy.wav"
make_call() { # minutes file
  local minutes=$1 file=$2 blocks=$(($1 / 5))
  [ -s "$file" ] && return
  local tmp; tmp=$(mktemp -d)
  # One 5-minute block: the left party's clip at 0 s, the right party's at 150 s.
  sox "$left" -r 48000 -c 1 "$tmp/l.wav" pad 0 "$(echo "300 - $(soxi -D "$left")" | bc)"
  sox "$right" -r 48000 -c 1 "$tmp/r.wav" pad 150 "$(echo "150 - $(soxi -D "$right")" | bc)"
  sox -M "$tmp/l.wav" "$tmp/r.wav" "$tmp/block.wav"
  sox -n -r 48000 -c 2 "$tmp/noise.wav" synth 300 whitenoise vol 0.003
  sox -m -v 1 "$tmp/block.wav" -v 1 "$tmp/noise.wav" "$tmp/noisy.wav"
  local list=()
  for _ in $(seq "$blocks"); do list+=("$tmp/noisy.wav"); done
  sox "${list[@]}" -b 16 "$file"
  rm -rf "$tmp"
}
make_call 30 "$out/call_30min.flac"
make_call 180 "$out/call_3h.flac"

printf '%-40s %-16s %12s %10s %8s\n' binary file peak_rss_MB wall_s ratio
for f in "$out/call_30min.flac" "$out/call_3h.flac"; do
  first=""
  for bin in "$@"; do
    log=$(mktemp)
    /usr/bin/time -v "$bin" scan --model "$model" "$f" >/dev/null 2>"$log" || true
    kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log")
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$log")
    mb=$((kb / 1024))
    [ -n "$first" ] || first=$mb
    printf '%-40s %-16s %12s %10s %8s\n' "$bin" "$(basename "$f")" "$mb" "$wall" \
      "$(echo "scale=2; $mb / $first" | bc)"
    rm -f "$log"
  done
done
