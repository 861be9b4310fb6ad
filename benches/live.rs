//! Live-engine benchmark: alert latency (from the end of the words that tipped a call over
//! the line to the alert) and how many real-time calls two cores sustain before drops start.
//!
//! `cargo bench --bench live` (release build; takes minutes: calls play at real speed).
//! Env:
//! - VISHGUARD_BENCH_MODELS (default "tiny.en,base");
//! - VISHGUARD_BENCH_COMPUTE: compute types, each measured in the same run (default
//!   "f32,int8");
//! - VISHGUARD_BENCH_ENGINES: recogniser layouts for the concurrency part, `WORKERSxBATCH`
//!   (default "2x1,2x4": two workers hearing one utterance at a time, as `[engine]`'s
//!   default, against two workers hearing batches of up to 4 utterances of different calls);
//! - VISHGUARD_BENCH_MAX_CALLS (default 16); VISHGUARD_BENCH_MAX_LAG_S (default 1.5): the
//!   ramp reports the most calls whose transcript lag p95 stayed within it, and the most
//!   within 3 s (the rule of earlier runs); it ends at the first level that drops anything or
//!   passes both;
//! - VISHGUARD_BENCH_LATENCY=0 skips the alert-latency part;
//! - VISHGUARD_BENCH_CONTEXT_CHECK=0 (keywords only, as `listen --no-context-check`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vishguard::asr::{ComputeType, DeviceChoice, Transcriber};
use vishguard::audio::{load_16k, ChannelMode};
use vishguard::call::{AudioChunk, Call, CallId, Event, Party};
use vishguard::detect::script_context::ContextCheck;
use vishguard::detect::Classifier;
use vishguard::engine::{Engine, EngineConfig, SinkSpec, WhisperRecogniser};
use vishguard::model_store::ModelStore;
use vishguard::sinks::{QueueConfig, Sink};
use vishguard::sources::Ingress;

#[derive(Default)]
struct Record {
    /// call id -> (time the first alert arrived, since the call started)
    first_alert_wall: std::collections::HashMap<String, f64>,
    /// call id -> first_alert_s from the summary
    first_alert_audio: std::collections::HashMap<String, f64>,
    dropped_audio_s: f64,
    dropped_utterances: u64,
    /// For each transcribed utterance: wall time of its transcript minus its end in the audio.
    transcript_lag: Vec<f64>,
}

struct Recorder {
    record: Arc<Mutex<Record>>,
    starts: Starts,
}

impl Sink for Recorder {
    fn describe(&self) -> String {
        "bench recorder".into()
    }

    fn write(&mut self, event: &Event) -> anyhow::Result<()> {
        let mut r = self.record.lock().unwrap();
        let id = event.call_id().to_string();
        match event {
            Event::CallStarted(_) => {}
            Event::Alert(_) => {
                let start = self.starts.lock().unwrap()[&id];
                r.first_alert_wall
                    .entry(id)
                    .or_insert(start.elapsed().as_secs_f64());
            }
            Event::Transcript(u) => {
                let start = self.starts.lock().unwrap()[&id];
                r.transcript_lag
                    .push(start.elapsed().as_secs_f64() - u.end_s);
            }
            Event::CallEnded(s) => {
                if let Some(t) = s.first_alert_s {
                    r.first_alert_audio.insert(id, t);
                }
                let stream = s.stream.clone().unwrap_or_default();
                r.dropped_audio_s += stream.dropped_audio_s;
                r.dropped_utterances += stream.dropped_utterances;
            }
        }
        Ok(())
    }
}

/// One call at real speed, as a live source sends it (a full queue drops the chunk).
fn play(engine: &Engine, id: &str, samples: &[f32], starts: &Starts) {
    let ingest = engine.ingest();
    let call = CallId::new(id);
    let start = Instant::now();
    starts.lock().unwrap().insert(id.to_owned(), start);
    ingest
        .send(Ingress::Open(Call {
            id: call.clone(),
            parties: vec![Party {
                label: "caller".into(),
                sample_rate: 16_000,
            }],
            metadata: Default::default(),
        }))
        .unwrap();
    for (i, chunk) in samples.chunks(320).enumerate() {
        let due = start + Duration::from_secs_f64((i + 1) as f64 * 0.02);
        if let Some(w) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(w);
        }
        let _ = ingest.send(Ingress::Audio(AudioChunk {
            call: call.clone(),
            party: 0,
            offset_s: i as f64 * 0.02,
            samples: chunk.to_vec(),
        }));
    }
    ingest.send(Ingress::Close(call)).unwrap();
}

type Starts = Arc<Mutex<std::collections::HashMap<String, Instant>>>;

/// An engine whose events are recorded for the measurements.
fn recorded_engine(
    m: &Arc<Transcriber>,
    classifier: &Arc<Classifier>,
    config: EngineConfig,
) -> (Engine, Arc<Mutex<Record>>, Starts) {
    let record = Arc::new(Mutex::new(Record::default()));
    let starts: Starts = Arc::new(Mutex::new(Default::default()));
    let sink = Recorder {
        record: record.clone(),
        starts: starts.clone(),
    };
    // As `listen` runs it: detection limited to the languages with packs.
    let languages: Vec<String> = if m.is_multilingual() {
        classifier
            .languages()
            .iter()
            .map(|l| l.to_string())
            .collect()
    } else {
        Vec::new()
    };
    let options = vishguard::asr::TranscribeOptions {
        candidate_languages: languages,
        ..Default::default()
    };
    let recogniser = Arc::new(WhisperRecogniser::new(m.clone(), options));
    let engine = Engine::start(
        recogniser,
        classifier.clone(),
        config,
        vec![SinkSpec::new(sink, QueueConfig::default())],
    )
    .unwrap();
    (engine, record, starts)
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // cargo test --benches asks benches to list themselves.
    }
    // As the binary does at start (see its docs).
    vishguard::asr::allocator::keep_freed_buffers();
    vishguard::asr::threads::settle_cpu_threads(None);
    let samples_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("audio-samples");
    let scams: Vec<(String, Vec<f32>)> = std::fs::read_dir(&samples_dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains("_scam_"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (
                name,
                load_16k(&p, ChannelMode::Mix).unwrap().remove(0).samples,
            )
        })
        .collect();
    // As `vishguard listen` runs by default: keywords and the context check.
    let mut classifier = Classifier::builtin();
    if std::env::var("VISHGUARD_BENCH_CONTEXT_CHECK").as_deref() != Ok("0") {
        classifier.context_check = Some(Arc::new(
            ContextCheck::load(None).expect("sentence encoder (models fetch minilm)"),
        ));
    }
    let classifier = Arc::new(classifier);
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    let models = env("VISHGUARD_BENCH_MODELS", "tiny.en,base");
    let computes: Vec<ComputeType> = env("VISHGUARD_BENCH_COMPUTE", "f32,int8")
        .split(',')
        .map(|c| serde_json::from_value(serde_json::Value::String(c.into())).unwrap())
        .collect();
    let layouts: Vec<(usize, usize)> = env("VISHGUARD_BENCH_ENGINES", "2x1,2x4")
        .split(',')
        .map(|l| {
            let (w, b) = l.split_once('x').expect("WORKERSxBATCH");
            (w.parse().unwrap(), b.parse().unwrap())
        })
        .collect();
    let max_calls: usize = env("VISHGUARD_BENCH_MAX_CALLS", "16").parse().unwrap();
    let max_lag: f64 = env("VISHGUARD_BENCH_MAX_LAG_S", "1.5").parse().unwrap();
    let latency = env("VISHGUARD_BENCH_LATENCY", "1") != "0";
    let (load1, _, _) = load_average();
    println!("load average at start {load1:.2}");
    let store = ModelStore::open().unwrap();
    let mut summary = Vec::new();
    for name in models.split(',') {
        let files = store.resolve(Some(name)).unwrap();
        for &compute in &computes {
            let m = Arc::new(
                Transcriber::load_as(&files, DeviceChoice::Cpu.open().unwrap(), compute).unwrap(),
            );
            let tag = format!("{name} {compute:?}");
            if latency {
                alert_latency(&tag, &m, &classifier, &scams);
            }
            for &(workers, batch) in &layouts {
                let config = EngineConfig {
                    asr_workers: workers,
                    asr_batch: batch,
                    ..EngineConfig::default()
                };
                let tag = format!("{tag} {workers}x{batch}");
                let (n, n3) =
                    concurrency(&tag, &m, &classifier, &scams, config, max_calls, max_lag);
                summary.push(format!(
                    "{tag}: sustained {n} concurrent real-time calls without drops and with transcript lag p95 <= {max_lag} s, {n3} with lag p95 <= 3 s (2 cores)"
                ));
            }
        }
    }
    for line in summary {
        println!("{line}");
    }
    let (load1, _, _) = load_average();
    println!("load average at end {load1:.2}");
}

/// The 1-, 5- and 15-minute load averages of this machine (zeros where unreadable).
fn load_average() -> (f64, f64, f64) {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut v = text
        .split_whitespace()
        .map(|x| x.parse::<f64>().unwrap_or(0.0));
    (
        v.next().unwrap_or(0.0),
        v.next().unwrap_or(0.0),
        v.next().unwrap_or(0.0),
    )
}

type Samples = Vec<(String, Vec<f32>)>;

/// Alert latency: one call at a time, each scam sample played twice, without and with partial
/// hypotheses (the words of an utterance still being spoken).
fn alert_latency(tag: &str, m: &Arc<Transcriber>, classifier: &Arc<Classifier>, scams: &Samples) {
    for (variant, partial_every_s) in [
        ("finished utterances only", None),
        ("with partials", Some(0.25)),
    ] {
        let config = EngineConfig {
            partials: partial_every_s.is_some(),
            partial_every_s: partial_every_s.unwrap_or(0.25),
            ..EngineConfig::default()
        };
        let (engine, record, starts) = recorded_engine(m, classifier, config);
        for round in 0..2 {
            for (id, samples) in scams
                .iter()
                .filter(|(id, _)| m.is_multilingual() || id.starts_with("en"))
            {
                play(&engine, &format!("{id}#{round}"), samples, &starts);
            }
        }
        engine.shutdown();
        let r = record.lock().unwrap();
        let mut lat: Vec<f64> = r
            .first_alert_wall
            .iter()
            .filter_map(|(id, wall)| r.first_alert_audio.get(id).map(|audio| wall - audio))
            .collect();
        let mut each: Vec<String> = r
            .first_alert_wall
            .iter()
            .filter_map(|(id, wall)| {
                r.first_alert_audio
                    .get(id)
                    .map(|a| format!("{id} {:.2}", wall - a))
            })
            .collect();
        each.sort();
        println!("{tag} ({variant}): {}", each.join(", "));
        if lat.is_empty() {
            println!("{tag} ({variant}): no alerts raised");
        } else {
            println!(
                "{tag} ({variant}): alert latency over {} scam calls: p50 {:.2} s, p95 {:.2} s, max {:.2} s",
                lat.len(),
                percentile(&mut lat, 0.5),
                percentile(&mut lat, 0.95),
                lat.iter().cloned().fold(0.0, f64::max)
            );
        }
    }
}

/// Concurrency: N calls at real speed, each ~36 s of speech, N rising until a level drops
/// audio or utterances or its transcript lag p95 passes both `max_lag` and 3 s; returns the
/// most calls kept within `max_lag` and within 3 s.
fn concurrency(
    tag: &str,
    m: &Arc<Transcriber>,
    classifier: &Arc<Classifier>,
    scams: &Samples,
    config: EngineConfig,
    max_calls: usize,
    max_lag: f64,
) -> (usize, usize) {
    let long: Vec<f32> = scams
        .iter()
        .filter(|(id, _)| id.starts_with("en"))
        .take(3)
        .flat_map(|(_, s)| s.clone())
        .collect();
    let (mut sustained, mut sustained_3s) = (0, 0);
    for n in [1, 2, 4, 6, 8, 10, 12, 16, 20, 24, 32]
        .into_iter()
        .filter(|&n| n <= max_calls)
    {
        let (engine, record, starts) = recorded_engine(m, classifier, config.clone());
        std::thread::scope(|s| {
            for i in 0..n {
                let (engine, long, starts) = (&engine, &long, &starts);
                s.spawn(move || play(engine, &format!("c{i}"), long, starts));
            }
        });
        engine.shutdown();
        let mut r = record.lock().unwrap();
        let dropped_now = r.dropped_utterances;
        let drops = r.dropped_audio_s > 0.0 || dropped_now > 0;
        // Keeping up means more than no drops: the transcripts must not fall behind.
        let lag_p95 = percentile(&mut r.transcript_lag, 0.95);
        let lag_p50 = percentile(&mut r.transcript_lag, 0.5);
        println!(
            "{tag}: {n} concurrent real-time calls: {:.1} s audio and {} utterances dropped, transcript lag p50 {lag_p50:.2} s p95 {lag_p95:.2} s, load {:.2}",
            r.dropped_audio_s,
            dropped_now,
            load_average().0,
        );
        if drops || lag_p95 > max_lag.max(3.0) {
            break;
        }
        if lag_p95 <= max_lag && sustained_3s == sustained {
            sustained = n;
        }
        if lag_p95 <= 3.0 {
            sustained_3s = n;
        }
    }
    (sustained, sustained_3s)
}
