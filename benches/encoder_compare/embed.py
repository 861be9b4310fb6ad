"""Chunks of N characters of each call (non-overlapping), embedded by EmbeddingGemma-300m;
saves $OUT/chunks_N.json (chunk list) and $OUT/emb_N.npy in order, resumable."""
import json, os, sys, time, torch, numpy as np
OUT = os.environ.get("OUT", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "target", "encoder_compare"))
from sentence_transformers import SentenceTransformer
torch.set_num_threads(2)
N = int(sys.argv[1])
calls = json.load(open(OUT + "/calls.json"))
chunks = []
seen = set()
for g in calls.values():
    for c in g:
        t = "".join(c[1].split())
        for i in range(0, len(t), N):
            s = t[i:i + N]
            if s and s not in seen:
                seen.add(s); chunks.append(s)
json.dump(chunks, open(f"{OUT}/chunks_{N}.json", "w"), ensure_ascii=False)
print(len(chunks), "chunks", sum(map(len, chunks)), "chars", flush=True)
m = SentenceTransformer(os.environ["GEMMA_DIR"], device="cpu")
out = f"{OUT}/emb_{N}.npy"
done = np.load(out) if os.path.exists(out) else np.zeros((0, 768), np.float32)
step = 256
t0 = time.time()
for i in range(len(done), len(chunks), step):
    e = m.encode(chunks[i:i + step], batch_size=32, prompt="task: classification | query: ", convert_to_numpy=True)
    done = np.concatenate([done, e.astype(np.float32)])
    np.save(out + ".tmp.npy", done); os.replace(out + ".tmp.npy", out)
    print(len(done), "/", len(chunks), round(time.time() - t0), "s", flush=True)
