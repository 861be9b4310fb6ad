#!/usr/bin/env bash
# The GPU check: runs on a GPU host with no Rust and no network, from a copied CUDA build of
# vishguard, a model cache and recordings (README "GPU" says how to build and copy them).
#
#   benches/gpu-check.sh BINARY VISHGUARD_HOME OUT_DIR [REAL_CALL.wav]
#
# 1. transcripts on the GPU against the CPU's on the same host, same weights: the bundled
#    samples and the real call; F32 must be word-exact, F16 within 0.01 WER;
# 2. recognition throughput (audio seconds per wall second) at batch 1, 16, 64, 256;
# 3. concurrent simulated real-time calls through the whole engine, up to the first number
#    at which transcript lag p95 passes 1.5 s or audio is dropped;
# 4. the kernels of kernels/ against the CPU path they replace (`vishguard bench kernels`:
#    largest difference against its bound, audio seconds per second on both; once, not per
#    model).
# Prints one table last. Environment: MODELS (default "tiny.en base"), CALLS_tiny_en,
# CALLS_base (the steps of 3), CALL_SECONDS (20), ASR_WORKERS (4), JOINT (1: step 3 with
# `--joint-decoding`, each worker's batch joining one running decode), SKIP (space-separated:
# transcripts throughput live kernels), PLAN (MODEL:STEP ..., the order), BUDGET (seconds, 480).
set -u
BIN=$(readlink -f "$1"); export VISHGUARD_HOME=$(readlink -f "$2"); OUT=$3; REAL=${4:-}
mkdir -p "$OUT"
MODELS=${MODELS:-"tiny.en base"}
CALL_SECONDS=${CALL_SECONDS:-20}
SKIP=${SKIP:-}
# DEVICE=cpu tries the script itself on a machine without a GPU.
DEV=${DEVICE:-cuda}
HERE=$(cd "$(dirname "$0")/.." && pwd)

# The CUDA libraries the binary links: the driver's libcuda, and cuBLAS, cuRAND, NVRTC and
# the runtime from the host's Python wheels (nvidia/cu13/lib), where they are found.
if [ -z "${CUDA_LIBS:-}" ]; then
  CUDA_LIBS=$(python3 - <<'EOF' 2>/dev/null
import os, nvidia
for root in nvidia.__path__:
    for sub in ("cu13/lib",):
        p = os.path.join(root, sub)
        if os.path.isdir(p):
            print(p)
EOF
)
fi
export LD_LIBRARY_PATH="${CUDA_LIBS:-}:${LD_LIBRARY_PATH:-}"
{
  echo "== host"; date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  nproc; uptime
  echo "CUDA_LIBS=$CUDA_LIBS"
  ldd "$BIN" | grep -E "cuda|cublas|curand|nvrtc|not found"
} 2>&1 | tee "$OUT/host.txt"


en_files=$(ls "$HERE"/audio-samples/en_*.wav)
all_files=$(ls "$HERE"/audio-samples/*.wav)
# One deadline for the whole check (BUDGET seconds): each step gets what is left, at most its
# own cap, so a slow step cannot cost the steps after it their turn.
DEADLINE=$((SECONDS + ${BUDGET:-480}))
cap() { local left=$((DEADLINE - SECONDS - 5)); if [ "$left" -lt "$1" ]; then echo $((left > 1 ? left : 1)); else echo "$1"; fi; }

# GPU load and memory, once a second, while the measurements run.
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 1 \
  >"$OUT/smi.csv" 2>/dev/null &
SMI=$!
trap 'kill $SMI 2>/dev/null' EXIT

transcripts() {
  local m=$1 files=$all_files
  [ "$m" = tiny.en ] && files=$en_files
  [ -n "$REAL" ] && files="$files $REAL"
  for run in "$DEV f32" "$DEV f16" "cpu f32"; do
    set -- $run
    local start=$SECONDS
    timeout "$(cap 150)" "$BIN" transcribe --model "$m" --device "$1" --compute-type "$2" --format json $files \
      > "$OUT/transcripts.$m.$1.$2.json" 2> "$OUT/transcripts.$m.$1.$2.err"
    echo "$m $1 $2: exit $? in $((SECONDS - start)) s"
  done
  python3 "$HERE/benches/compare_transcripts.py" "$OUT" "$m" "$DEV" | tee -a "$OUT/compare.txt"
}

throughput() {
  local m=$1 prefix=""
  [ "$m" = tiny.en ] && prefix="--audio-prefix en_"
  (cd "$HERE" && timeout "$(cap 100)" "$BIN" bench throughput --model "$m" --device "$DEV" $prefix \
    --batch 1,16,64,256 --seconds 4) > "$OUT/throughput.$m.txt" 2> "$OUT/throughput.$m.err"
  cat "$OUT/throughput.$m.txt"
}

live() {
  local m=$1 prefix="" var="CALLS_${1//./_}"
  local calls=${!var:-}
  [ "$m" = tiny.en ] && prefix="--audio-prefix en_"
  [ -z "$calls" ] && { [ "$m" = tiny.en ] && calls=250,1000,3000,6000 || calls=250,1000,2000,4000; }
  (cd "$HERE" && timeout "$(cap 160)" "$BIN" bench live --model "$m" --device "$DEV" $prefix \
    --calls "$calls" --call-seconds "$CALL_SECONDS" --stagger-s 5 --asr-batch 256 \
    --asr-workers "${ASR_WORKERS:-4}" --feeders 16 ${JOINT:+--joint-decoding}) \
    > "$OUT/live.$m.txt" 2> "$OUT/live.$m.err"
  cat "$OUT/live.$m.txt"
}

kernels() {
  # On the CPU the kernels' references are direct sums, far slower than a GPU: fewer rows.
  local rows=1,16,64,256
  [ "$DEV" = cpu ] && rows=1,4
  (cd "$HERE" && timeout "$(cap 90)" "$BIN" bench kernels --device "$DEV" --rows "$rows" \
    --frames 3000 --seconds 2) > "$OUT/kernels.txt" 2> "$OUT/kernels.err"
  echo "kernels: exit $?"
  cat "$OUT/kernels.txt"
}

# PLAN: the steps in order, as MODEL:STEP (default: the kernels, then each model's three
# steps in turn; the kernels take the first model's name but do not use a model).
if [ -z "${PLAN:-}" ]; then
  PLAN="none:kernels"
  for m in $MODELS; do PLAN="$PLAN $m:transcripts $m:throughput $m:live"; done
fi
for item in $PLAN; do
  m=${item%%:*}; step=${item#*:}
  [[ " $SKIP " == *" $step "* ]] && continue
  if [ $((DEADLINE - SECONDS)) -lt 15 ]; then echo "out of time before $step $m"; continue; fi
  echo "== $step $m"
  $step "$m"
done

kill $SMI 2>/dev/null
echo "== table"
python3 "$HERE/benches/compare_transcripts.py" --smi "$OUT/smi.csv" 2>/dev/null
cat "$OUT"/compare.txt 2>/dev/null
if [ -s "$OUT/kernels.txt" ]; then cat "$OUT/kernels.txt"
elif [ -f "$OUT/kernels.err" ]; then echo "(kernels did not finish:)"; tail -n 8 "$OUT/kernels.err"
fi
# A step cut short by its timeout left no table: its progress lines (on stderr) stand in.
for kind in throughput live; do
  for m in $MODELS; do
    if [ -s "$OUT/$kind.$m.txt" ]; then cat "$OUT/$kind.$m.txt"
    elif [ -f "$OUT/$kind.$m.err" ]; then echo "($kind $m did not finish:)"; tail -n 8 "$OUT/$kind.$m.err"
    fi
  done
done
