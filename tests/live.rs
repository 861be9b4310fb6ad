//! The live engine with the real model: files at real speed raise alerts on scams only;
//! a webhook that is down at first still gets every alert exactly once; words still being
//! spoken raise the alert before the utterance ends; speech cut at 6 s is heard again with the
//! audio before the cut. (Engine mechanics without weights:
//! `tests/engine.rs`.)

mod support;

use std::collections::HashMap;
use std::sync::Arc;

use support::vishguard;
use vishguard::call::{AudioChunk, Call, CallId, Event, Party};
use vishguard::engine::{Engine, EngineConfig, SinkSpec, WhisperRecogniser};
use vishguard::sinks::memory::Collector;
use vishguard::sinks::QueueConfig;
use vishguard::sources::Ingress;

fn listen_jsonl(sample: &str, realtime: bool) -> Vec<serde_json::Value> {
    listen_jsonl_with("tiny.en", sample, realtime)
}

fn listen_jsonl_with(model: &str, sample: &str, realtime: bool) -> Vec<serde_json::Value> {
    let mut cmd = vishguard();
    cmd.args([
        "listen",
        "--model",
        model,
        "--format",
        "jsonl",
        "--transcripts",
        "--from-file",
    ])
    .arg(support::repo().join("audio-samples").join(sample));
    if realtime {
        cmd.arg("--realtime");
    }
    let out = cmd.output().unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn real_speed_playback_alerts_on_scams_only() {
    for (sample, scam) in [
        ("en_scam_tech_support.wav", true),
        ("en_legit_pharmacy.wav", false),
        ("en_legit_bank_fraud_check.wav", false),
    ] {
        // Real speed for the legitimate calls too: that is when partial hypotheses (words cut
        // mid-utterance) are heard, and they must not raise alerts of their own.
        let events = listen_jsonl(sample, true);
        assert!(events.iter().all(|e| e["schema_version"] == 1));
        assert_eq!(events[0]["event"], "call_started", "{sample}");
        let alerts: Vec<_> = events.iter().filter(|e| e["event"] == "alert").collect();
        let summary = events
            .iter()
            .find(|e| e["event"] == "call_ended")
            .expect("summary");
        assert_eq!(!alerts.is_empty(), scam, "{sample}: {events:?}");
        assert_eq!(summary["risk"] != "none", scam, "{sample}: {summary}");
        let ended_at = events
            .iter()
            .position(|e| e["event"] == "call_ended")
            .unwrap();
        for (at, a) in events
            .iter()
            .enumerate()
            .filter(|(_, e)| e["event"] == "alert")
        {
            // Alerts come while the call plays, before its summary, each saying how long after
            // the words it came. How soon is a speed aim, measured by `cargo bench --bench
            // live` (alert latency p50/p95): a bound here failed once (over 10 s) only because
            // the other live tests shared the 2 cores.
            assert!(at < ended_at, "{sample}: alert after the summary: {a}");
            let latency = a["latency_s"].as_f64().unwrap();
            assert!(latency.is_finite() && latency >= 0.0, "{a}");
            assert!(a["wall_time"].as_str().unwrap().ends_with('Z'));
        }
        let ids: std::collections::HashSet<&str> = alerts
            .iter()
            .map(|a| a["alert_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), alerts.len(), "one alert per piece of evidence");
    }
}

#[test]
fn speech_cut_at_six_seconds_is_heard_again_with_the_audio_before_the_cut() {
    // espeak reads these without a pause, so the live engine cuts them at 6 s and 12 s, inside
    // phrases (验证码 | 告诉我). Heard piece by piece, base flagged neither scam live (scan of
    // the whole files flags both); heard with the 3 s before each cut, the bank scam alerts;
    // the police scam only when the run of speech is heard again joined (a review).
    cut_calls_alert_on_scams_only(&[
        ("zh_scam_bank_code.wav", true),
        ("zh_scam_police_safe_account.wav", true),
        ("zh_legit_checkup.wav", false),
    ]);
}

#[test]
fn a_robotic_8_khz_voice_is_heard_live_as_scan_hears_it() {
    // This call's voice is at the edge of what base hears: live, it was missed until the
    // stream was resampled with the filter `scan` uses (then "Google Play" and "Do not tell
    // anyone" are heard as `scan` hears them) and a window no temperature passes kept its
    // likeliest decode instead of the temperature-1.0 sample. A test of its own, so that it
    // runs beside the real-speed tests, which leave the CPU idle, not after the others.
    cut_calls_alert_on_scams_only(&[("en_scam_irs_warrant.wav", true)]);
}

/// Each sample heard live with base, fed as fast as the engine takes it: transcripts reach
/// back at most the 3 s of context before a cut, and scams alert and end flagged, others not.
fn cut_calls_alert_on_scams_only(samples: &[(&str, bool)]) {
    for &(sample, scam) in samples {
        let events = listen_jsonl_with("base", sample, false);
        let transcripts: Vec<(f64, f64)> = events
            .iter()
            .filter(|e| e["event"] == "transcript")
            .map(|e| (e["start_s"].as_f64().unwrap(), e["end_s"].as_f64().unwrap()))
            .collect();
        assert!(transcripts.len() >= 2, "{sample}: {events:?}");
        for pair in transcripts.windows(2) {
            // Words after a cut reach back at most the 3 s heard again.
            assert!(
                pair[1].0 >= pair[0].1 - 3.0 - 1e-6,
                "{sample}: {transcripts:?}"
            );
            assert!(pair[1].1 > pair[0].1, "{sample}: {transcripts:?}");
        }
        let alerts = events.iter().filter(|e| e["event"] == "alert").count();
        let summary = events
            .iter()
            .find(|e| e["event"] == "call_ended")
            .expect("summary");
        assert_eq!(alerts > 0, scam, "{sample}: {events:?}");
        assert_eq!(summary["risk"] != "none", scam, "{sample}: {summary}");
    }
}

#[test]
fn a_webhook_that_is_down_at_first_gets_every_alert_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    // 503 to the first three requests, then 200.
    let receiver = support::receiver::Receiver::start(|n, _| if n < 3 { 503 } else { 200 });
    let url = receiver.url.clone();
    let alerts_file = dir.path().join("alerts.jsonl");
    let out = vishguard()
        .args([
            "listen",
            "--model",
            "tiny.en",
            "--format",
            "jsonl",
            "--webhook",
            &url,
            "--webhook-outbox",
        ])
        .arg(dir.path().join("outbox"))
        .arg("--alerts-file")
        .arg(&alerts_file)
        .arg("--from-file")
        .arg(support::repo().join("audio-samples/en_scam_safe_account.wav"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written: Vec<serde_json::Value> = std::fs::read_to_string(&alerts_file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!written.is_empty());
    // Played faster than real time: latency in audio time, never negative (the wall clock
    // runs behind the audio).
    for w in &written {
        let latency = w["latency_s"].as_f64().unwrap();
        assert!((0.0..30.0).contains(&latency), "{w}");
    }
    let received: Vec<serde_json::Value> = receiver
        .got
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.body.clone())
        .collect();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for r in &received {
        *counts
            .entry(r["alert_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    for w in &written {
        let id = w["alert_id"].as_str().unwrap();
        assert_eq!(
            counts.get(id),
            Some(&1),
            "{id} delivered {:?} times",
            counts.get(id)
        );
    }
    assert_eq!(counts.len(), written.len());
    assert!(
        receiver.got.lock().unwrap().len() >= 3 + written.len(),
        "the refusals were retried"
    );
}

#[test]
fn words_still_being_spoken_raise_the_alert_before_the_utterance_ends() {
    let classifier = Arc::new(vishguard::detect::Classifier::builtin());
    let mut config = EngineConfig::default();
    // The utterance cannot end while the call is open: only a partial can find the words.
    config.utterances.end_silence_s = 30.0;
    config.utterances.max_utterance_s = 30.0;
    let events = Collector::new();
    let recogniser = Arc::new(WhisperRecogniser::new(
        support::tiny_en_shared(),
        Default::default(),
    ));
    let engine = Engine::start(
        recogniser,
        classifier,
        config,
        vec![SinkSpec::new(events.clone(), QueueConfig::default())],
    )
    .unwrap();
    let ingest = engine.ingest();
    let id = CallId::new("open");
    ingest
        .send(Ingress::Open(Call {
            id: id.clone(),
            parties: vec![Party {
                label: "caller".into(),
                sample_rate: 16_000,
            }],
            metadata: Default::default(),
        }))
        .unwrap();
    let speech = support::fixture_speech("asr/gift_cards.flac");
    for (i, chunk) in speech.chunks(320).enumerate() {
        ingest
            .send_waiting(Ingress::Audio(AudioChunk {
                call: id.clone(),
                party: 0,
                offset_s: i as f64 * 0.02,
                samples: chunk.to_vec(),
            }))
            .unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let early = loop {
        let found = events.events().into_iter().find_map(|e| match e {
            Event::Alert(a) => Some(a),
            _ => None,
        });
        if let Some(a) = found {
            break a;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no alert while the utterance was open"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(early.partial, "{early:?}");
    assert_eq!(early.evidence.category, "unusual_payment", "{early:?}");
    ingest.send(Ingress::Close(id)).unwrap();
    engine.shutdown();
    let events = events.events();
    let transcripts = events
        .iter()
        .filter(|e| matches!(e, Event::Transcript(_)))
        .count();
    assert_eq!(
        transcripts, 1,
        "the finished utterance is still transcribed once"
    );
    let alerts: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Alert(a) => Some(&a.alert_id),
            _ => None,
        })
        .collect();
    let unique: std::collections::HashSet<_> = alerts.iter().collect();
    assert_eq!(
        unique.len(),
        alerts.len(),
        "the final text does not repeat the early alert"
    );
}

/// Hold-music beeps at 16 kHz: a three-note tune, each note 0.4 s on and 0.6 s off.
fn hold_music(seconds: usize) -> Vec<f32> {
    (0..seconds * 16_000)
        .map(|i| {
            let note = [523.0f32, 659.0, 784.0][(i / 16_000) % 3];
            if i % 16_000 < 6_400 {
                0.2 * (2.0 * std::f32::consts::PI * note * i as f32 / 16_000.0).sin()
            } else {
                0.0
            }
        })
        .collect()
}

#[test]
fn hold_music_is_not_speech_live_and_the_scam_after_it_is_flagged_where_it_is_said() {
    // A benign line, 20 s of hold music, then the scam. Before the live cutter checked for
    // tones, base heard each beep as an utterance and the field case of this kind ended
    // "none" (`listen --from-file`). (The benign line is the delivery notice: the pharmacy's
    // "no payment is needed", once heard right, is an honest caller's cue that outweighs the
    // scam after it; and the IRS sample is the one base misses live, see docs/measured.md.)
    let load = |name: &str| {
        vishguard::audio::load_16k(
            &support::repo().join("audio-samples").join(name),
            vishguard::audio::ChannelMode::Mix,
        )
        .unwrap()
        .remove(0)
        .samples
    };
    let mut call = load("en_legit_delivery.wav");
    call.extend(hold_music(20));
    let scam_from_s = call.len() as f64 / 16_000.0;
    call.extend(load("en_scam_safe_account.wav"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hold_music_call.wav");
    support::write_pcm16_wav(&path, 1, 16_000, call.iter().map(|s| (s * 32_767.0) as i16));

    let out = vishguard()
        .args([
            "listen",
            "--model",
            "base",
            "--format",
            "jsonl",
            "--from-file",
        ])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let events: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ended = events.iter().find(|e| e["event"] == "call_ended").unwrap();
    assert!(
        ["suspected", "high"].contains(&ended["risk"].as_str().unwrap()),
        "{ended}"
    );
    let alerts: Vec<&serde_json::Value> = events.iter().filter(|e| e["event"] == "alert").collect();
    assert!(!alerts.is_empty());
    for a in alerts {
        let t = a["t_s"].as_f64().unwrap();
        assert!(
            t >= scam_from_s - 0.3,
            "evidence at {t:.1} s, before the scam starts at {scam_from_s:.1} s: {a}"
        );
    }
}
