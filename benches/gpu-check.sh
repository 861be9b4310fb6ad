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
#    at which transcript lag p95 passes 1.5 s or audio is dropped.
# Prints one table last. Environment: MODELS (default "tiny.en base"), CALLS_tiny_en,
# CALLS_base (the steps of 3), CALL_SECONDS (20), SKIP (space-separated: transcripts
# throughput live).
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

summary=()
row() { summary+=("$*"); echo "$*"; }

en_files=$(ls "$HERE"/audio-samples/en_*.wav)
all_files=$(ls "$HERE"/audio-samples/*.wav)

if [[ " $SKIP " != *" transcripts "* ]]; then
  for m in $MODELS; do
    files=$all_files; [ "$m" = tiny.en ] && files=$en_files
    [ -n "$REAL" ] && files="$files $REAL"
    for run in "cpu f32" "$DEV f32" "$DEV f16"; do
      set -- $run
      start=$(date +%s.%N)
      timeout 300 "$BIN" transcribe --model "$m" --device "$1" --compute-type "$2" --format json $files \
        > "$OUT/transcripts.$m.$1.$2.json" 2> "$OUT/transcripts.$m.$1.$2.err"
      echo "$m $1 $2: exit $? in $(echo "$(date +%s.%N) - $start" | bc) s"
    done
    python3 - "$OUT" "$m" <<'EOF' | tee -a "$OUT/compare.txt"
import json, sys
out, m = sys.argv[1], sys.argv[2]
def texts(kind):
    rows = {}
    try:
        for line in open(f"{out}/transcripts.{m}.{kind}.json"):
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            key = (r.get("file"), r.get("channel"))
            rows[key] = " ".join(s["text"].strip() for s in r.get("segments", []))
    except FileNotFoundError:
        pass
    return rows
def words(t):
    # Chinese has no spaces: characters are its words.
    out = []
    for w in t.lower().split():
        if any("\u4e00" <= c <= "\u9fff" for c in w):
            out.extend(c for c in w if c.strip())
        else:
            out.append(w.strip(".,?!\"'"))
    return [w for w in out if w]
def wer(ref, hyp):
    r, h = words(ref), words(hyp)
    d = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(h) + 1):
            cur = min(d[j] + 1, d[j - 1] + 1, prev + (r[i - 1] != h[j - 1]))
            prev, d[j] = d[j], cur
    return d[len(h)], len(r)
cpu = texts("cpu.f32")
import os
dev = os.environ.get("DEVICE", "cuda")
for kind in (f"{dev}.f32", f"{dev}.f16"):
    gpu = texts(kind)
    same = sum(1 for k in cpu if gpu.get(k) == cpu[k])
    errs = tot = 0
    for k in cpu:
        e, n = wer(cpu[k], gpu.get(k, ""))
        errs += e; tot += n
    print(f"transcripts {m} {kind} vs cpu.f32: {same}/{len(cpu)} identical, WER {errs / max(tot, 1):.4f} over {tot} words")
EOF
  done
fi

# GPU load and memory, once a second, while the measurements run.
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 1 \
  >"$OUT/smi.csv" 2>/dev/null &
SMI=$!
trap 'kill $SMI 2>/dev/null' EXIT

if [[ " $SKIP " != *" throughput "* ]]; then
  for m in $MODELS; do
    prefix=""; [ "$m" = tiny.en ] && prefix="--audio-prefix en_"
    (cd "$HERE" && timeout 240 "$BIN" bench throughput --model "$m" --device "$DEV" $prefix \
      --batch 1,16,64,256 --seconds 4) > "$OUT/throughput.$m.txt" 2> "$OUT/throughput.$m.err"
    cat "$OUT/throughput.$m.txt"
  done
fi

if [[ " $SKIP " != *" live "* ]]; then
  for m in $MODELS; do
    var="CALLS_${m//./_}"; calls=${!var:-}
    prefix=""; [ "$m" = tiny.en ] && prefix="--audio-prefix en_"
    [ -z "$calls" ] && { [ "$m" = tiny.en ] && calls=500,2000,5000 || calls=250,1000,2000; }
    (cd "$HERE" && timeout 420 "$BIN" bench live --model "$m" --device "$DEV" $prefix \
      --calls "$calls" --call-seconds "$CALL_SECONDS" --stagger-s 5 --asr-batch 256 \
      --asr-workers 2 --feeders 16) > "$OUT/live.$m.txt" 2> "$OUT/live.$m.err"
    cat "$OUT/live.$m.txt"
  done
fi

kill $SMI 2>/dev/null
echo "== table"
python3 - "$OUT/smi.csv" <<'EOF' 2>/dev/null
import sys
rows = [l.split(", ") for l in open(sys.argv[1]).read().splitlines()[1:]]
util = [float(r[1].split()[0]) for r in rows if len(r) > 2]
mem = [float(r[2].split()[0]) for r in rows if len(r) > 2]
if util:
    print(f"GPU while measuring: utilization max {max(util):.0f}% mean {sum(util)/len(util):.0f}%, memory max {max(mem):.0f} MiB")
EOF
cat "$OUT"/compare.txt 2>/dev/null
# A step cut short by its timeout left no table: its progress lines (on stderr) stand in.
for kind in throughput live; do
  for m in $MODELS; do
    if [ -s "$OUT/$kind.$m.txt" ]; then cat "$OUT/$kind.$m.txt"
    elif [ -f "$OUT/$kind.$m.err" ]; then echo "($kind $m did not finish:)"; tail -n 8 "$OUT/$kind.$m.err"
    fi
  done
done
