#!/usr/bin/env python3
"""Makes "heard" copies of written call sets: each call is spoken by a synthetic voice, put
through the 8 kHz mu-law telephone channel with noise (`audio-samples/speech_tools.sh`,
`sample_call`, as the sample and held-out sets are made) and transcribed by `vishguard
transcribe`. The call model (`benches/train_call_model.py`) trains on these beside the
written text, because the recogniser's errors ("Officer Daniel Dress with the Oracle Avenue
Service") made the model trained on text alone veto real scams heard by Whisper.

    benches/render_heard_sets.py SET... [--model base] [--every N --offset K] [--voices V,V]
                                        [--out DIR] [--pitch CENTS,...]

SET is an `ID|LABEL|TYPE|TEXT` file, read as `classify_sets.py` reads it (the language from
the folder or the name, or `--lang`). Every Nth call from the Kth is rendered (cost: base transcribes this machine's
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

from classify_sets import rows_of

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
    pitches = [int(x) for x in a.pitch.split(",")]
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} is missing: cargo build --release")
    os.makedirs(a.out, exist_ok=True)
    for path in a.sets:
        stem = os.path.splitext(os.path.basename(path))[0]
        rows = [r for i, r in enumerate(rows_of(path)) if i % a.every == a.offset]
        if not rows:
            sys.exit(f"{path}: no calls to render")
        lang = a.lang or rows[0]["lang"]
        voices = a.voices.split(",") if a.voices else (EN_VOICES if lang == "en" else ZH_VOICES)
        audio = os.path.join(a.audio, f"{stem}.{a.model}")
        os.makedirs(audio, exist_ok=True)
        wavs = []
        with tempfile.TemporaryDirectory() as tmp:
            for n, r in enumerate(rows):
                wav = os.path.join(audio, r["id"] + ".wav")
                env = dict(os.environ, tmp=tmp, SPEAK_RATE=str(RATES[n % len(RATES)]))
                if lang == "zh":
                    # A pitch shift (and 5% tempo) makes the one recorded man sound like others.
                    env["SPEAK_EFFECTS"] = f"pitch {pitches[n % len(pitches)]} tempo 1.05"
                # The written sets mark turns with "..."; a pause is what a listener hears.
                spoken = r["text"].replace("...", ",")
                script = f'source "{ROOT}/audio-samples/speech_tools.sh"; sample_call "$1" "$2" "$3" "$4"'
                voice = voices[n % len(voices)]
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
            for r in rows:
                words = " ".join(texts.get(r["id"], "").split()).replace("|", " ")
                o.write(f"{r['id']}_heard|{r['label']}|{r['type']}|{words}\n")
        print(f"{out}: {len(rows)} calls", file=sys.stderr)


if __name__ == "__main__":
    main()
