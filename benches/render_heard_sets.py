#!/usr/bin/env python3
"""Makes "heard" copies of written call sets: each call is spoken by a synthetic voice, put
through the 8 kHz mu-law telephone channel with noise (`audio-samples/speech_tools.sh`,
`sample_call`, as the sample and held-out sets are made) and transcribed by `vishguard
transcribe`. The call model (`benches/train_call_model.py`) trains on these beside the
written text, because the recogniser's errors ("Officer Daniel Dress with the Oracle Avenue
Service") made the model trained on text alone veto real scams heard by Whisper.

    benches/render_heard_sets.py SET... [--model base] [--every N --offset K] [--voices V,V]
                                        [--out DIR] [--pitch CENTS,...]

SET is an `ID|LABEL|TYPE|TEXT` file; the language is its name's prefix or suffix (`en_`,
`_zh`, ...) or `--lang`. Every Nth call from the Kth is rendered (cost: base transcribes this machine's
telephone audio at about 12 audio seconds per wall second on 2 cores, an English call of the
written sets is ~50 s). Voices are drawn in turn from `--voices` (default: English espeak-ng
voices that neither `audio-samples/` nor `benches/heldout_voices.sh` use, so those stay
unheard; Mandarin: the recorded man of gcin-voice, the only Mandarin voice base recognises
through the channel, at the pitches of `--pitch`). Writes `OUT/STEM.MODEL.txt` in the set's
format, IDs suffixed `_heard`, the transcript as TEXT; sox dithers at random, so a second run
hears a little differently (the files are committed, so training does not depend on that).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "vishguard")
# Not in audio-samples/make_samples.sh (flite slt/rms/kal/awb, espeak en-us+m1, en-us+f3,
# en-gb+m2) nor in benches/heldout_voices.sh (festival slt, en-gb-scotland, en-029, en-us-nyc).
EN_VOICES = [
    "espeak:en-gb-x-rp+m3",
    "espeak:en-us+f4",
    "espeak:en-gb-x-gbclan+m6",
    "espeak:en-us+m5",
    "espeak:en-gb-x-gbcwmd+f5",
    "espeak:en-gb-x-rp+f1",
    "espeak:en-us+m7",
]
ZH_VOICES = ["gcin:3"]
# espeak words per minute, in turn with the voices (a call centre talks at 140-180).
RATES = [150, 165, 140, 175, 155]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sets", nargs="+")
    ap.add_argument("--model", default="base")
    ap.add_argument("--lang")
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--voices")
    ap.add_argument("--pitch", default="0,150,-100", help="Mandarin: sox pitch shifts in cents, in turn")
    ap.add_argument("--out", default=os.path.join(ROOT, "benches", "call_model_data", "heard"))
    ap.add_argument("--audio", default=os.path.join(ROOT, "target", "heard_audio"))
    a = ap.parse_args()
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} is missing: cargo build --release")
    os.makedirs(a.out, exist_ok=True)
    for path in a.sets:
        stem = os.path.splitext(os.path.basename(path))[0]
        lang = a.lang or next((l for l in ("en", "zh") if stem.startswith(l + "_") or stem.endswith("_" + l)), None)
        if lang not in ("en", "zh"):
            sys.exit(f"{path}: cannot tell the language from the name; give --lang en|zh")
        voices = a.voices.split(",") if a.voices else (EN_VOICES if lang == "en" else ZH_VOICES)
        pitches = [int(x) for x in a.pitch.split(",")]
        rows = []
        with open(path) as f:
            for i, line in enumerate(line for line in f if line.strip() and not line.startswith("#")):
                parts = line.rstrip("\n").split("|", 3)
                if len(parts) == 4 and i % a.every == a.offset:
                    rows.append(parts)
        audio = os.path.join(a.audio, f"{stem}.{a.model}")
        os.makedirs(audio, exist_ok=True)
        wavs = []
        with tempfile.TemporaryDirectory() as tmp:
            for n, (cid, label, kind, text) in enumerate(rows):
                wav = os.path.join(audio, cid + ".wav")
                voice = voices[n % len(voices)]
                env = dict(os.environ, tmp=tmp, SPEAK_RATE=str(RATES[n % len(RATES)]))
                # The written sets mark turns with "..."; a pause is what a listener hears.
                spoken = text.replace("...", ",")
                script = f'source "{ROOT}/audio-samples/speech_tools.sh"; sample_call "$1" "$2" "$3" "$4"'
                if lang == "zh":
                    # A pitch shift (and 5% tempo) makes the one recorded man sound like others.
                    shift = pitches[n % len(pitches)]
                    script = (
                        f'source "{ROOT}/audio-samples/speech_tools.sh"; speak "$1" "$3" "$tmp/s.wav"; '
                        f'sox "$tmp/s.wav" "$tmp/p.wav" pitch {shift} tempo 1.05; '
                        'noisy "$tmp/p.wav" "$tmp/mix.wav"; telephone "$tmp/mix.wav" "$4"'
                    )
                subprocess.run(["bash", "-c", script, "-", voice, lang, spoken, wav], env=env, check=True)
                wavs.append(wav)
        heard = subprocess.run(
            [BIN, "transcribe", "--model", a.model, "--format", "json"]
            + (["--language", lang] if a.model != "tiny.en" else [])
            + wavs,
            stdout=subprocess.PIPE,
            check=True,
            text=True,
        ).stdout
        texts = {}
        for line in heard.splitlines():
            r = json.loads(line)
            texts[os.path.basename(r["file"])[:-4]] = "".join(s["text"] for s in r["segments"]).strip()
        out = os.path.join(a.out, f"{stem}.{a.model}.txt")
        with open(out, "w") as o:
            for cid, label, kind, _ in rows:
                words = " ".join(texts.get(cid, "").split()).replace("|", " ")
                o.write(f"{cid}_heard|{label}|{kind}|{words}\n")
        print(f"{out}: {len(rows)} calls", file=sys.stderr)


if __name__ == "__main__":
    main()
