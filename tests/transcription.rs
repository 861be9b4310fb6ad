//! Transcription with the real tiny.en and base models on real and synthetic speech.

mod support;

use support::*;
use vishguard::asr::{ComputeType, TranscribeOptions, Transcriber};
use vishguard::audio::{load_16k, ChannelMode};
use vishguard::score::wer::wer;

fn transcribe_file(m: &Transcriber, path: &std::path::Path, opts: &TranscribeOptions) -> String {
    let parties = load_16k(path, ChannelMode::Mix).unwrap();
    m.transcribe(&parties[0].samples, opts).unwrap().text()
}

/// Mean WER over the synthetic clips, clean (16 kHz FLAC).
fn mean_clean_clip_wer(m: &Transcriber) -> f64 {
    let opts = TranscribeOptions {
        language: Some("en".into()),
        ..Default::default()
    };
    let refs = clip_refs();
    let total: f64 = refs
        .iter()
        .map(|(name, reference)| {
            let file = format!("asr/{name}.flac");
            let text = transcribe_file(m, &fixture(&file), &opts);
            let w = wer(reference, &text);
            eprintln!("{} {file}: WER {w:.3}: {text}", m.name);
            w
        })
        .sum();
    total / refs.len() as f64
}

#[test]
fn clean_tts_clips_are_nearly_word_perfect() {
    for m in [tiny_en(), base()] {
        let w = mean_clean_clip_wer(m);
        eprintln!("{} clean mean WER {w:.3}", m.name);
        assert!(w <= 0.12, "{}: clean mean WER {w:.3}", m.name);
    }
}

/// The telephone-channel clips with their scripts: the synthetic clips through a noisy 8 kHz
/// mu-law channel (`tests/fixtures/asr/*_phone.wav`) and the bundled English samples (8 kHz
/// mu-law, other voices).
fn telephone_clips() -> Vec<(std::path::PathBuf, String)> {
    let mut clips: Vec<_> = clip_refs()
        .into_iter()
        .map(|(name, reference)| (fixture(&format!("asr/{name}_phone.wav")), reference))
        .collect();
    #[derive(serde::Deserialize)]
    struct Sample {
        path: String,
        lang: String,
        script: String,
    }
    let samples = repo().join("audio-samples");
    for row in csv::Reader::from_path(samples.join("labels.csv"))
        .unwrap()
        .deserialize()
    {
        let row: Sample = row.expect("labels.csv row");
        if row.lang == "en" {
            clips.push((samples.join(row.path), row.script));
        }
    }
    assert_eq!(clips.len(), 12, "4 channel clips and 8 English samples");
    clips
}

/// WER on the real 30 s call and mean WER on the 12 telephone-channel clips, for one model in
/// F32, in int8 (`--compute-type int8`) and, where the CPU has AMX tiles, in bf16 (the `auto`
/// choice there): each within its bound, and int8 and bf16 no more than 0.01 above F32 on
/// either (the bound issue 16 set). With `other_clips` false, int8 and bf16 are heard on the
/// real call only: their paths are the same code for both models, and base's 12 clips in int8
/// took about 60 s of the suite on 2 cores.
fn real_call_and_telephone_clips_in_f32_int8_bf16(
    name: &str,
    real_bound: f64,
    phone_bound: f64,
    other_clips: bool,
) {
    let (wav, reference) = pyannote_call();
    let opts = TranscribeOptions {
        language: Some("en".into()),
        ..Default::default()
    };
    let mut results = Vec::new();
    let mut computes = vec![ComputeType::F32, ComputeType::Int8];
    if vishguard::asr::amx_bf16::available() {
        computes.push(ComputeType::Bf16);
    } else {
        eprintln!("bf16 not heard: no AMX tiles on this machine");
    }
    for compute in computes {
        let m = load_as(name, compute);
        let text = transcribe_file(&m, &wav, &TranscribeOptions::default());
        let real = wer(&reference, &text);
        eprintln!("{name} {compute:?}: real call WER {real:.3}: {text}");
        assert!(
            real <= real_bound,
            "{name} {compute:?}: WER {real:.3} > {real_bound} on the real call: {text}"
        );
        if compute != ComputeType::F32 && !other_clips {
            results.push((compute, real, None));
            continue;
        }
        // Robotic TTS through a noisy 8 kHz channel is hard (see the notes); these bounds are
        // what the models reach with margin (means of 0.44-0.45 measured for both models and
        // compute types), so a regression in the audio path or decoder shows.
        let clips = telephone_clips();
        let phone = clips
            .iter()
            .map(|(path, reference)| {
                let text = transcribe_file(&m, path, &opts);
                let w = wer(reference, &text);
                eprintln!("{name} {compute:?} {}: WER {w:.3}: {text}", path.display());
                w
            })
            .sum::<f64>()
            / clips.len() as f64;
        eprintln!("{name} {compute:?}: telephone mean WER {phone:.3}");
        assert!(
            phone <= phone_bound,
            "{name} {compute:?}: telephone mean WER {phone:.3} > {phone_bound}"
        );
        results.push((compute, real, Some(phone)));
    }
    let (_, f32_real, f32_phone) = results[0];
    for &(compute, real, phone) in &results[1..] {
        assert!(
            real <= f32_real + 0.01 && phone.zip(f32_phone).is_none_or(|(i, f)| i <= f + 0.01),
            "{name}: {compute:?} WER (real call {real:.3}, telephone {phone:?}) more than 0.01 \
             above F32 (real call {f32_real:.3}, telephone {f32_phone:?})"
        );
    }
}

#[test]
fn tiny_en_real_call_and_telephone_clips_in_f32_int8_and_bf16() {
    real_call_and_telephone_clips_in_f32_int8_bf16("tiny.en", 0.25, 0.50, true);
}

#[test]
fn base_real_call_and_telephone_clips_in_f32_and_real_call_in_int8_and_bf16() {
    real_call_and_telephone_clips_in_f32_int8_bf16("base", 0.25, 0.50, false);
}

fn white_noise(seconds: usize, amplitude: f32) -> Vec<f32> {
    let mut state = 0x2545F4914F6CDD1Du64;
    (0..seconds * 16_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * amplitude
        })
        .collect()
}

#[test]
fn silence_and_noise_give_no_text_with_or_without_vad() {
    let with_vad = TranscribeOptions::default();
    let without_vad = TranscribeOptions {
        vad: None,
        ..Default::default()
    };
    let inputs = [
        ("silence", vec![0.0f32; 12 * 16_000]),
        ("noise", white_noise(12, 0.01)),
    ];
    for m in [tiny_en(), base()] {
        for (what, samples) in &inputs {
            for (mode, opts) in [("vad", &with_vad), ("no vad", &without_vad)] {
                let t = m.transcribe(samples, opts).unwrap();
                assert!(
                    t.text().trim().is_empty(),
                    "{} invented text in {what} ({mode}): {:?}",
                    m.name,
                    t.text()
                );
            }
        }
    }
}

#[test]
fn stereo_mu_law_call_gives_one_transcript_per_party() {
    let parties = load_16k(&fixture("asr/stereo_call_ulaw.wav"), ChannelMode::Split).unwrap();
    assert_eq!(parties.len(), 2);
    let m = tiny_en();
    let opts = TranscribeOptions::default();
    let caller = m.transcribe(&parties[0].samples, &opts).unwrap();
    let callee = m.transcribe(&parties[1].samples, &opts).unwrap();
    assert_eq!(parties[0].channel, Some(0));
    let (a, b) = (caller.text().to_lowercase(), callee.text().to_lowercase());
    assert!(a.contains("revenue") && a.contains("arrest"), "caller: {a}");
    assert!(
        b.contains("pharmacy") && b.contains("pickup"),
        "callee: {b}"
    );
    assert!(
        !a.contains("pharmacy") && !b.contains("revenue"),
        "channels leaked: {a} | {b}"
    );
    // The callee starts speaking 3 s in; the segment times say so.
    let first = callee.segments[0].start_s;
    assert!((2.5..3.6).contains(&first), "callee starts at {first}");
}

#[test]
fn multilingual_model_detects_english_and_english_only_model_refuses_mandarin() {
    let parties = load_16k(&fixture("asr/pharmacy.flac"), ChannelMode::Mix).unwrap();
    let t = base()
        .transcribe(&parties[0].samples, &TranscribeOptions::default())
        .unwrap();
    assert_eq!(t.language.as_deref(), Some("en"));
    let zh = TranscribeOptions {
        language: Some("zh".into()),
        ..Default::default()
    };
    let err = tiny_en().transcribe(&parties[0].samples, &zh).unwrap_err();
    assert!(err.to_string().contains("English-only"), "{err}");
}

#[test]
fn a_short_encoder_window_keeps_short_clips_accurate() {
    // The live engine encodes utterances in 15 s windows instead of 30 s.
    let opts = TranscribeOptions {
        language: Some("en".into()),
        short_context_frames: Some(1500),
        ..Default::default()
    };
    for (name, reference) in clip_refs() {
        let text = transcribe_file(tiny_en(), &fixture(&format!("asr/{name}.flac")), &opts);
        let w = wer(&reference, &text);
        assert!(w <= 0.15, "{name}: WER {w:.3} with a 15 s window: {text}");
    }
}

/// Three clean clips with 4 s of silence between them, heard whole and in pieces of 10 s
/// (at most 20 s) pushed in 1 s chunks: the pieces are cut in the pauses, each clip's words
/// land in its own stretch of time, and the words are those heard whole.
#[test]
fn a_recording_heard_in_pieces_matches_the_whole() {
    let m = tiny_en();
    let opts = TranscribeOptions {
        language: Some("en".into()),
        ..Default::default()
    };
    let mut samples = Vec::new();
    let mut spans = Vec::new();
    for (i, name) in ["gift_cards", "delivery", "pharmacy"].iter().enumerate() {
        if i > 0 {
            samples.resize(samples.len() + 4 * 16_000, 0.0);
        }
        let clip = fixture_speech(&format!("asr/{name}.flac"));
        let start = samples.len() as f64 / 16_000.0;
        samples.extend_from_slice(&clip);
        spans.push((start, samples.len() as f64 / 16_000.0));
    }
    let whole = m.transcribe(&samples, &opts).unwrap();
    let mut long = m.long_recording(&opts).with_piece_s(10.0, 20.0);
    for chunk in samples.chunks(16_000) {
        long.push(chunk).unwrap();
    }
    assert!(
        long.pieces_heard() >= 2,
        "{} pieces cut",
        long.pieces_heard()
    );
    let pieces = long.finish().unwrap();
    eprintln!("whole: {}\npieces: {}", whole.text(), pieces.text());
    assert_eq!(pieces.duration_s, whole.duration_s);
    assert_eq!(pieces.language.as_deref(), Some("en"));
    let w = wer(&whole.text(), &pieces.text());
    assert!(w <= 0.05, "pieces differ from the whole: WER {w:.3}");
    for s in &pieces.segments {
        assert!(
            spans
                .iter()
                .any(|&(a, b)| s.start_s >= a - 0.3 && s.end_s <= b + 0.3),
            "segment {:.2}-{:.2} s lies outside every clip: {:?}",
            s.start_s,
            s.end_s,
            s.text
        );
    }
    // Every clip was heard.
    for &(a, b) in &spans {
        assert!(pieces
            .segments
            .iter()
            .any(|s| s.start_s >= a - 0.3 && s.end_s <= b + 0.3));
    }
}

/// Beam search (`--beam-size 5`) keeps five hypotheses at temperature 0 and returns the one
/// likeliest per token. On Mandarin through the 8 kHz channel, where greedy decoding commits
/// early to a sound-alike, it writes other words with a higher mean log-probability (base on
/// this clip: -0.65 -> -0.58 when written; on the bundled zh_scam_bank_code, -0.74 -> -0.52).
/// Greedy and beam must differ, so the test fails if the beam is ignored.
#[test]
fn beam_search_finds_likelier_words_for_mandarin_telephone_calls() {
    let m = base();
    let greedy = TranscribeOptions {
        language: Some("zh".into()),
        ..Default::default()
    };
    let mut beam = greedy.clone();
    beam.policy.beam_size = 5;
    let mean_logprob = |t: &vishguard::asr::Transcript| {
        assert!(!t.segments.is_empty(), "nothing heard");
        assert!(
            t.segments.iter().all(|s| s.temperature == 0.0),
            "a window fell back to sampling: {}",
            t.text()
        );
        t.segments.iter().map(|s| s.avg_logprob).sum::<f32>() / t.segments.len() as f32
    };
    // One clip: the beam's host-side search runs unoptimised in the test build (about 20 s
    // a clip on 2 cores).
    let clip = fixture("asr/zh_refund_phone.wav");
    let samples = load_16k(&clip, ChannelMode::Mix).unwrap().remove(0).samples;
    let g = m.transcribe(&samples, &greedy).unwrap();
    let b = m.transcribe(&samples, &beam).unwrap();
    let (lg, lb) = (mean_logprob(&g), mean_logprob(&b));
    eprintln!("greedy {lg:.3} {}\nbeam 5 {lb:.3} {}", g.text(), b.text());
    assert_ne!(g.text(), b.text(), "the beam changed nothing");
    assert!(lb > lg, "beam {lb:.3} <= greedy {lg:.3}");
}

/// Options that hear `language` (no detection), the rest as default.
fn in_language(language: &str) -> TranscribeOptions {
    TranscribeOptions {
        language: Some(language.into()),
        ..Default::default()
    }
}

/// Contextual biasing (`--hotwords`) on Mandarin through the 8 kHz channel: where base,
/// unbiased, finishes 支付宝 as a sound-alike, the scam vocabulary list makes it write the
/// phrase; an English call, which begins none of the phrases, is heard word for word as
/// before.
#[test]
fn hotwords_finish_begun_mandarin_phrases_and_leave_english_alone() {
    let mut m = load_as("base", ComputeType::F32);
    let (zh, en) = (in_language("zh"), in_language("en"));
    let clip = fixture("asr/zh_refund_phone.wav");
    let english = fixture("asr/pharmacy_phone.wav");
    let has_alipay = |t: &str| t.contains("支付宝") || t.contains("支付寶");
    let plain = transcribe_file(&m, &clip, &zh);
    let english_plain = transcribe_file(&m, &english, &en);
    let phrases = vishguard::config::read_hotwords(&repo().join("models/hotwords/zh.txt")).unwrap();
    m.set_hotwords(&phrases, vishguard::config::DEFAULT_HOTWORD_BONUS)
        .unwrap();
    let biased = transcribe_file(&m, &clip, &zh);
    eprintln!("plain:  {plain}\nbiased: {biased}");
    assert!(
        !has_alipay(&plain),
        "the clip no longer tests anything: {plain}"
    );
    assert!(has_alipay(&biased), "{biased}");
    assert_eq!(transcribe_file(&m, &english, &en), english_plain);
    // A phrase of one character has nothing to continue, and a bonus must be a number.
    assert!(m.set_hotwords(&["钱".into()], 4.0).is_err());
    assert!(m.set_hotwords(&phrases, f32::NAN).is_err());
}

/// Vocabulary rescoring (`--rescore`) on Mandarin through the 8 kHz channel: base writes
/// 支付宝 as 支付法 and 软件 as 软天 in these two clips; the decoder, teacher-forced over the
/// same audio, finds the listed phrase within 2.2 nats of its own words there, and every other
/// proposal on the two clips 3 nats or more below (涉嫌 -3.2, 屏幕共享 -6.4, 银行卡 -13 to -18).
/// So at 2.65 the two phrases are written and nothing else changes; at 0 nothing does; an
/// English call is heard as before.
#[test]
fn rescoring_writes_listed_phrases_only_where_the_audio_supports_them() {
    let mut m = load_as("base", ComputeType::F32);
    let (zh, en) = (in_language("zh"), in_language("en"));
    let english = fixture("asr/pharmacy_phone.wav");
    let clips = [
        (fixture("asr/zh_refund_phone.wav"), "支付", ["宝", "寶"]),
        (
            repo().join("audio-samples/zh_scam_bank_code.wav"),
            "软",
            ["件", "件"],
        ),
    ];
    let plain: Vec<String> = clips
        .iter()
        .map(|(c, _, _)| transcribe_file(&m, c, &zh))
        .collect();
    let english_plain = transcribe_file(&m, &english, &en);
    let phrases = vishguard::config::read_hotwords(&repo().join("models/hotwords/zh.txt")).unwrap();
    m.set_rescoring(&phrases, 0.0).unwrap();
    for ((c, _, _), p) in clips.iter().zip(&plain) {
        assert_eq!(&transcribe_file(&m, c, &zh), p, "margin 0 changed a word");
    }
    m.set_rescoring(&phrases, 2.65).unwrap();
    for ((c, stem, ends), p) in clips.iter().zip(&plain) {
        let rescored = transcribe_file(&m, c, &zh);
        eprintln!("plain:    {p}\nrescored: {rescored}");
        let has = |t: &str| ends.iter().any(|e| t.contains(&format!("{stem}{e}")));
        assert!(!has(p), "the clip no longer tests anything: {p}");
        assert!(has(&rescored), "{rescored}");
        // One character changed, in place.
        assert_eq!(p.chars().count(), rescored.chars().count(), "{rescored}");
        let changed = p
            .chars()
            .zip(rescored.chars())
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(changed, 1, "{p} -> {rescored}");
    }
    assert_eq!(transcribe_file(&m, &english, &en), english_plain);
    // A phrase is two Chinese characters or more, and a margin a number of nats.
    assert!(m.set_rescoring(&["钱".into()], 2.0).is_err());
    assert!(m.set_rescoring(&["gift card".into()], 2.0).is_err());
    assert!(m.set_rescoring(&phrases, f32::NAN).is_err());
    assert!(m.set_rescoring(&phrases, -1.0).is_err());
}
