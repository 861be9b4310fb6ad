//! Batched recognition hears what unbatched recognition hears: utterances of different calls
//! (different lengths, prompts and languages) through the encoder and the greedy decoder (and
//! beam search) together give the same words as each heard alone, on real speech and both
//! models, in F32.
//! The same holds in bf16 (AMX tiles compute each row alone) and in int8, whose vocabulary
//! projection rounds only its weights; the earlier q8_0 copy also rounded its inputs, so a
//! last-bit difference in a batch could move a value to the next int8 step.

mod support;

use vishguard::asr::{ComputeType, TranscribeOptions, Transcriber, Transcript};
use vishguard::audio::vad::{speech_regions, VadConfig};

/// Utterances as the live engine cuts them: the speech regions of the bundled samples, each
/// a few seconds of 16 kHz audio.
fn utterances(files: &[&str], per_file: usize) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    for f in files {
        let path = support::repo().join("audio-samples").join(f);
        let samples = vishguard::audio::load_16k(&path, vishguard::audio::ChannelMode::Mix)
            .unwrap()
            .remove(0)
            .samples;
        let regions = speech_regions(&samples, &VadConfig::default());
        assert!(!regions.is_empty(), "{f}: no speech found");
        // Pieces of 3 to 9 s, as the utterance cutter makes them (of different lengths, so
        // the batch holds rows with different amounts of speech).
        let mut taken = 0;
        for r in regions {
            let mut start = r.start;
            while start + 16_000 < r.end && taken < per_file {
                let len = (3 + 3 * (out.len() % 3)) * 16_000;
                let end = r.end.min(start + len);
                out.push(samples[start..end].to_vec());
                start = end;
                taken += 1;
            }
        }
    }
    out
}

/// The options the live recogniser hears utterances with, and a prompt of a different length
/// for every other utterance (so rows are padded differently); `beam` hypotheses at
/// temperature 0 (1: greedy).
fn options(n: usize, candidates: &[&str], beam: usize) -> Vec<TranscribeOptions> {
    let prompts = [
        None,
        Some("Hello, this is"),
        Some("Thank you for calling. Before we go on, I need to confirm a few details with you."),
    ];
    (0..n)
        .map(|i| {
            let mut o = TranscribeOptions {
                vad: None,
                short_context_frames: Some(1500),
                candidate_languages: candidates.iter().map(|c| c.to_string()).collect(),
                initial_prompt: prompts[i % prompts.len()].map(str::to_owned),
                ..Default::default()
            };
            o.policy.max_tokens = Some(100);
            o.policy.beam_size = beam;
            o
        })
        .collect()
}

/// Each clip heard alone, then all of them in one batch, with [`options`].
fn alone_and_batched(
    model: &Transcriber,
    clips: &[Vec<f32>],
    candidates: &[&str],
    beam: usize,
) -> (Vec<Transcript>, Vec<Transcript>) {
    heard_alone_and_batched(model, clips, &options(clips.len(), candidates, beam))
}

/// Each clip heard alone with its options, then all of them in one batch.
fn heard_alone_and_batched(
    model: &Transcriber,
    clips: &[Vec<f32>],
    opts: &[TranscribeOptions],
) -> (Vec<Transcript>, Vec<Transcript>) {
    let alone = clips
        .iter()
        .zip(opts)
        .map(|(c, o)| model.transcribe(c, o).unwrap())
        .collect();
    let items: Vec<(&[f32], &TranscribeOptions)> =
        clips.iter().map(|c| c.as_slice()).zip(opts).collect();
    let failed = model.batches_failed();
    let together = model
        .transcribe_batch(&items)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    // A batch that fails falls back to one by one, which gives the same words: the
    // comparison would pass without batching anything.
    assert_eq!(
        model.batches_failed(),
        failed,
        "the batch was not decoded together"
    );
    (alone, together)
}

/// Utterances of four English samples, three of each.
fn english_utterances() -> Vec<Vec<f32>> {
    let clips = utterances(
        &[
            "en_scam_irs_warrant.wav",
            "en_legit_pharmacy.wav",
            "en_scam_safe_account.wav",
            "en_legit_delivery.wav",
        ],
        3,
    );
    assert!(clips.len() >= 8, "{} utterances", clips.len());
    clips
}

/// A greedy window heard alone (`a`) and heard with others (`t`): the same words, language,
/// segments and segment times, and log-probabilities within rounding.
fn same_greedy_hearing(what: &str, a: &Transcript, t: &Transcript) {
    assert_eq!(a.text(), t.text(), "{what}: words differ");
    assert_eq!(a.language, t.language, "{what}: language");
    assert_eq!(a.segments.len(), t.segments.len(), "{what}: segments");
    for (sa, st) in a.segments.iter().zip(&t.segments) {
        assert_eq!((sa.start_s, sa.end_s), (st.start_s, st.end_s), "{what}");
        assert!(
            (sa.avg_logprob - st.avg_logprob).abs() < 1e-3,
            "{what}: log-probability {} vs {}",
            sa.avg_logprob,
            st.avg_logprob
        );
    }
}

fn same_words_batched_and_alone(
    model: &Transcriber,
    clips: &[Vec<f32>],
    candidates: &[&str],
    beam: usize,
) {
    let (alone, together) = alone_and_batched(model, clips, candidates, beam);
    let mut words = 0;
    let mut compared = 0;
    for (i, (a, t)) in alone.iter().zip(&together).enumerate() {
        // A window the policy rejected at temperature 0 was sampled: its words are random
        // (seeded alike, but a rounding difference can tip one draw), so only greedy
        // windows must agree word for word.
        let sampled = |t: &Transcript| t.segments.iter().any(|s| s.temperature > 0.0);
        if sampled(a) {
            // The greedy decode both start with was rejected alike.
            assert!(
                sampled(t) || t.segments.is_empty(),
                "utterance {i}: fell back alone only"
            );
            continue;
        }
        compared += 1;
        same_greedy_hearing(&format!("utterance {i}, batched"), a, t);
        words += a.text().split_whitespace().count();
    }
    // The check means nothing if nothing was heard.
    assert!(
        compared >= 2 && compared * 3 >= clips.len(),
        "only {compared} of {} utterances greedy",
        clips.len()
    );
    assert!(
        words > compared,
        "only {words} words in {compared} utterances"
    );
}

#[test]
fn tiny_en_batched_decoding_gives_the_same_words() {
    let clips = english_utterances();
    same_words_batched_and_alone(
        &support::load_as("tiny.en", ComputeType::F32),
        &clips,
        &[],
        1,
    );
}

/// Beam search keeps several sequences per window, trading rows of the decoder's cache at each
/// step; windows of different lengths and prompts beamed together end where each ends alone.
#[test]
fn tiny_en_beam_search_batched_gives_the_same_words() {
    let clips = utterances(&["en_scam_irs_warrant.wav", "en_legit_pharmacy.wav"], 2);
    same_words_batched_and_alone(
        &support::load_as("tiny.en", ComputeType::F32),
        &clips,
        &[],
        5,
    );
}

/// On AMX tiles (`--compute-type bf16`, `auto` there) each row of a product is computed alone,
/// so batching changes nothing either.
#[test]
fn tiny_en_bf16_batched_decoding_gives_the_same_words() {
    if !vishguard::asr::amx_bf16::available() {
        eprintln!("skipped: no AMX tiles on this machine");
        return;
    }
    let clips = english_utterances();
    same_words_batched_and_alone(
        &support::load_as("tiny.en", ComputeType::Bf16),
        &clips,
        &[],
        1,
    );
}

/// int8's vocabulary projection rounds the weights once at load, not the inputs, so a row's
/// logits are the same alone and in a batch.
#[test]
fn tiny_en_int8_batched_decoding_gives_the_same_words() {
    let clips = english_utterances();
    same_words_batched_and_alone(
        &support::load_as("tiny.en", ComputeType::Int8),
        &clips,
        &[],
        1,
    );
}

#[test]
fn base_batched_decoding_gives_the_same_words_and_languages() {
    let clips = utterances(
        &[
            "zh_scam_bank_code.wav",
            "en_scam_tech_support.wav",
            "zh_legit_takeout.wav",
        ],
        2,
    );
    same_words_batched_and_alone(
        &support::load_as("base", ComputeType::F32),
        &clips,
        &["en", "zh"],
        1,
    );
}

/// A window the policy rejects decodes at all its remaining temperatures at once, from one
/// prompt pass, and keeps what decoding them one after another keeps: the first accepted, or
/// the best when none passes, alone and in a batch. First a threshold no decode passes (all six
/// temperatures decoded, the best kept); then, per utterance, a threshold just above its
/// greedy decode, which a sampled one passes, so the decodes at the temperatures above it stop
/// early.
#[test]
fn tiny_en_fallback_at_once_keeps_what_one_after_another_keeps() {
    let model = support::load_as("tiny.en", ComputeType::F32);
    let clips = utterances(&["en_scam_irs_warrant.wav"], 3);
    let heard = |thresholds: &[f32], at_once: bool| -> (Vec<Transcript>, Vec<Transcript>) {
        let opts: Vec<TranscribeOptions> = options(clips.len(), &[], 1)
            .into_iter()
            .zip(thresholds)
            .map(|(mut o, &th)| {
                o.policy.logprob_threshold = Some(th);
                o.policy.max_tokens = Some(40);
                o.policy.fallback_at_once = at_once;
                o
            })
            .collect();
        heard_alone_and_batched(&model, &clips, &opts)
    };
    let compare = |thresholds: &[f32]| -> Vec<Transcript> {
        let (serial_alone, serial_batch) = heard(thresholds, false);
        let (once_alone, once_batch) = heard(thresholds, true);
        for (kind, serial, once) in [
            ("alone", &serial_alone, &once_alone),
            ("batched", &serial_batch, &once_batch),
        ] {
            for (i, (s, o)) in serial.iter().zip(once).enumerate() {
                let what = format!("threshold {}, {kind}, utterance {i}", thresholds[i]);
                assert_eq!(s.text(), o.text(), "{what}: words differ");
                assert_eq!(s.segments.len(), o.segments.len(), "{what}: segments");
                for (a, b) in s.segments.iter().zip(&o.segments) {
                    assert_eq!(a.temperature, b.temperature, "{what}: temperature kept");
                    assert_eq!((a.start_s, a.end_s), (b.start_s, b.end_s), "{what}");
                    assert!(
                        (a.avg_logprob - b.avg_logprob).abs() < 1e-4,
                        "{what}: log-probability {} vs {}",
                        a.avg_logprob,
                        b.avg_logprob
                    );
                }
            }
        }
        serial_alone
    };
    let none_pass = compare(&vec![0.0; clips.len()]);
    let kept = |t: &Transcript| t.segments.first().map(|s| (s.temperature, s.avg_logprob));
    let sampled = none_pass
        .iter()
        .filter(|t| kept(t).is_some_and(|(temp, _)| temp > 0.0))
        .count();
    // The comparison means something only if windows fell back.
    assert!(
        sampled >= 2,
        "only {sampled} utterances kept a sampled decode"
    );
    // Per utterance, a threshold just above its greedy decode (heard with no threshold): the
    // first sampled decode that beats it is kept, not a later one that does too.
    let greedy = compare(&vec![f32::NEG_INFINITY; clips.len()]);
    let thresholds: Vec<f32> = none_pass
        .iter()
        .zip(&greedy)
        .map(|(best, g)| match (kept(best), kept(g)) {
            (Some((temp, lp)), Some((0.0, g))) if temp > 0.0 && lp > g + 1e-3 => g + 1e-3,
            _ => -1.0,
        })
        .collect();
    let some_pass = compare(&thresholds);
    let mid_way = some_pass
        .iter()
        .zip(&thresholds)
        .filter(|(t, &th)| kept(t).is_some_and(|(temp, lp)| temp > 0.0 && temp < 1.0 && lp >= th))
        .count();
    assert!(
        mid_way >= 1,
        "no window accepted between the first and last temperature"
    );
    // The first decode that passes is kept, even where a later one scored better.
    let first_not_best = some_pass
        .iter()
        .zip(&none_pass)
        .filter(|(got, best)| match (kept(got), kept(best)) {
            (Some((t, _)), Some((best_t, _))) => t > 0.0 && t < best_t,
            _ => false,
        })
        .count();
    assert!(
        first_not_best >= 1,
        "no window kept a first passing decode below its best"
    );
}

/// Continuous batching (`join_running`, the live engine's `joint_decoding`): utterances
/// heard from several threads at staggered times join one running greedy decode, each at
/// the step after it arrives, with prompts of different lengths (rows padded differently,
/// the batch's cache left-padded as rows join and trimmed as they leave) and windows of two
/// lengths, and each gets the words it gets alone.
#[test]
fn tiny_en_utterances_joining_a_running_decode_give_the_same_words() {
    let model = support::load_as("tiny.en", ComputeType::F32);
    let clips = english_utterances();
    let mut opts = options(clips.len(), &[], 1);
    // Two windows of 30 s among the 15 s ones: they cannot join the others' batch, and must
    // start one of their own once it drains.
    for o in opts.iter_mut().skip(2).step_by(5) {
        o.short_context_frames = None;
    }
    let alone: Vec<Transcript> = clips
        .iter()
        .zip(&opts)
        .map(|(c, o)| model.transcribe(c, o).unwrap())
        .collect();
    let joined_before = model.rows_joined();
    let joined: Vec<Transcript> = std::thread::scope(|s| {
        let handles: Vec<_> = clips
            .iter()
            .zip(&opts)
            .enumerate()
            .map(|(i, (c, o))| {
                let model = &model;
                let mut o = o.clone();
                o.join_running = true;
                s.spawn(move || {
                    // Arrivals spread over a few decoder steps' time, as live cuts arrive.
                    std::thread::sleep(std::time::Duration::from_millis(15 * i as u64));
                    model.transcribe(c, &o).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let rows_joined = model.rows_joined() - joined_before;
    assert!(
        rows_joined >= 3,
        "only {rows_joined} utterances joined a running decode"
    );
    let mut compared = 0;
    for (i, (a, j)) in alone.iter().zip(&joined).enumerate() {
        if a.segments.iter().any(|s| s.temperature > 0.0) {
            continue;
        }
        compared += 1;
        same_greedy_hearing(&format!("utterance {i}, joined"), a, j);
    }
    assert!(compared * 3 >= clips.len() * 2, "only {compared} greedy");
}

/// `loop_temperatures` are tried only when every decode so far is a loop: with a gzip-ratio
/// threshold no text meets, every decode counts as a loop and each window (heard alone, then
/// batched) is decoded at the loop temperatures too; with the usual threshold and a
/// log-probability threshold no decode meets, the same windows are rejected on confidence
/// alone and none is.
#[test]
fn tiny_en_loop_temperatures_are_tried_only_after_loops() {
    use vishguard::asr::decode::loop_rounds;
    let model = support::load_as("tiny.en", ComputeType::F32);
    let clips = utterances(&["en_scam_irs_warrant.wav", "en_legit_pharmacy.wav"], 2);
    let heard = |ratio: f32, logprob: f32| -> u64 {
        let opts: Vec<TranscribeOptions> = options(clips.len(), &[], 1)
            .into_iter()
            .map(|mut o| {
                o.policy.temperatures = vec![0.0, 0.2];
                o.policy.loop_temperatures = vec![0.6, 1.0];
                o.policy.compression_ratio_threshold = Some(ratio);
                o.policy.logprob_threshold = Some(logprob);
                o.policy.max_tokens = Some(40);
                o
            })
            .collect();
        let before = loop_rounds();
        heard_alone_and_batched(&model, &clips, &opts);
        loop_rounds() - before
    };
    assert_eq!(heard(2.4, 0.0), 0, "windows that did not loop went on");
    // Heard alone and batched: at least two windows each (a window Whisper hears as silence
    // is accepted as such).
    let went_on = heard(0.01, -1.0);
    assert!(went_on >= 4, "only {went_on} looping windows went on");
}
