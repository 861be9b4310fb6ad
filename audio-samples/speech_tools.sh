# Shared by the scripts that make test calls offline (source it; needs $tmp set to a scratch
# folder). Needs: espeak-ng, flite, sox; festival + festvox-us-slt-hts for the `festival`
# engine; pip install pypinyin for Mandarin (espeak-ng's cmn voice reads Han characters'
# tone marks aloud, so Mandarin is spoken from pinyin with tone digits).
# SPEAK_RATE (espeak words per minute, default 155) and SPEAK_PAD (silence before and after,
# default "0.5 0.5") let a script keep the audio it made before.

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
    flite) flite -voice "$voice" -t "$2" -o "$tmp/raw.wav" ;;
    festival) echo "$2" | text2wave -eval "(voice_$voice)" -o "$tmp/raw.wav" ;;
    *) echo "unknown speech engine $engine" >&2; return 1 ;;
  esac
  # shellcheck disable=SC2086 # the pad is two numbers
  sox "$tmp/raw.wav" -r 16000 -c 1 -b 16 "$3" rate -v 16k gain -n -20 pad ${SPEAK_PAD:-0.5 0.5}
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
  noisy "$tmp/clean.wav" "$tmp/mix.wav"
  if [[ $2 == zh ]]; then
    # espeak-ng's Mandarin through the 8 kHz channel is past what Whisper base recognises
    # (measured: not one key phrase survives), so the Mandarin calls stay wideband, noisy.
    sox "$tmp/mix.wav" -r 16000 -c 1 -e signed-integer -b 16 "$4" gain -n -3
  else
    telephone "$tmp/mix.wav" "$4"
  fi
}
