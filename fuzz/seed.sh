#!/usr/bin/env bash
# Seeds the corpora of the fuzz targets that read files and text (the network targets start
# from their own fixtures in the tests). Small inputs of each kind, made offline with sox.
set -euo pipefail
cd "$(dirname "$0")"
src=../tests/fixtures/asr/irs_warrant_phone.wav
a=corpus/audio_file; mkdir -p "$a"
sox "$src" -e signed -b 16 "$a/pcm16.wav" trim 0 0.05
sox "$src" -e u-law "$a/ulaw.wav" trim 0 0.05
sox "$src" -e a-law "$a/alaw.wav" trim 0 0.05
sox "$src" -e floating-point -b 32 -r 11025 "$a/float_11k.wav" trim 0 0.05
sox "$src" -e unsigned -b 8 -c 2 "$a/u8_stereo.wav" trim 0 0.05
sox "$src" -b 24 "$a/s24.wav" trim 0 0.05
sox "$src" -e ima-adpcm "$a/ima.wav" trim 0 0.1
sox "$src" -e ms-adpcm "$a/ms.wav" trim 0 0.1
sox "$src" "$a/clip.flac" trim 0 0.1
head -c 3000 ../tests/fixtures/audio/mp3_content_named.wav > "$a/mp3.bin"
t=corpus/text_inputs; mkdir -p "$t"
{ printf '\0'; cat ../models/phrases/en.toml; } > "$t/pack_en"
{ printf '\0'; cat ../models/phrases/zh.toml; } > "$t/pack_zh"
{ printf '\1'; printf 'id,path,text,label\na,,hello there,scam\nb,x.wav,,0\n'; } > "$t/manifest_csv"
{ printf '\2'; head -3 ../tests/fixtures/labelled/zh.jsonl; } > "$t/manifest_jsonl"
n=0
# A few short transcript lines (long ones make each execution slow).
while IFS= read -r line; do
  n=$((n + 1)); { printf '\3'; printf '%s' "$line"; } > "$t/classify_$n"
done < <(awk 'length($0) < 400' ../tests/fixtures/labelled/en.jsonl ../tests/fixtures/labelled/zh.jsonl | head -12)
mkdir -p corpus/model_files
# A model.bin header: version 6, spec "WhisperSpec", revision 3, one f32 scalar, no aliases.
printf '\x06\x00\x00\x00\x0c\x00WhisperSpec\x00\x03\x00\x00\x00\x01\x00\x00\x00\x02\x00x\x00\x00\x00\x04\x00\x00\x00\x00\x00\x80\x3f\x00\x00\x00\x00' > corpus/model_files/scalar.bin
