//! How long an encoder window live utterances need: the bundled samples are cut into
//! utterances exactly as the live engine cuts them, then each window size is timed and scored
//! (word error rate in English, character error rate in Mandarin) in the same run.
//!
//! Speech that reaches the maximum utterance length is cut either exactly there or in its
//! quietest gap near it; both are scored with the 15 s window.
//!
//! `cargo bench --bench utterance_window` (env VISHGUARD_BENCH_MODELS, default "tiny.en,base";
//! VISHGUARD_BENCH_ONLY_CUTS=1 compares the two cuts with the 15 s window only).

use std::time::Instant;

#[path = "../tests/support/mod.rs"]
mod support;

use vishguard::asr::{DeviceChoice, TranscribeOptions, Transcriber};
use vishguard::audio::utterance::{UtteranceAudio as Utterance, UtteranceConfig, UtteranceCutter};
use vishguard::audio::{load_16k, ChannelMode};
use vishguard::model_store::ModelStore;
use vishguard::score::wer::wer;

/// The window sizes compared: a fixed number of mel frames, or the utterance plus a margin.
#[derive(Clone, Copy, Debug)]
enum Window {
    Fixed(usize),
    Fit { margin: usize, min: usize },
}

impl Window {
    fn frames(self, utterance: &Utterance) -> usize {
        match self {
            Window::Fixed(f) => f,
            Window::Fit { margin, min } => {
                let content = utterance.samples.len() / 160 + margin;
                content.div_ceil(100).max(min / 100) * 100
            }
        }
    }
}

/// How speech that reaches the maximum length is cut: `cut_search_s` of the segmenter.
const CUTS: [(&str, f64); 2] = [
    ("cut at the maximum", 0.0),
    ("cut in the quietest gap", 1.5),
];

struct Sample {
    name: String,
    lang: String,
    script: String,
    /// One cutting per entry of `CUTS`.
    utterances: Vec<Vec<Utterance>>,
}

fn cut(path: &std::path::Path) -> Vec<Vec<Utterance>> {
    let audio = load_16k(path, ChannelMode::Mix).unwrap().remove(0);
    CUTS.iter()
        .map(|&(_, cut_search_s)| {
            let mut seg = UtteranceCutter::new(UtteranceConfig {
                cut_search_s,
                ..UtteranceConfig::default()
            });
            let mut utterances = seg.push(&audio.samples);
            utterances.extend(seg.flush());
            utterances
        })
        .collect()
}

/// The real two-speaker call of pyannote.audio, as recorded and through a noisy 8 kHz mu-law
/// channel (sox), so the choice is not made on synthetic voices alone.
fn real_call() -> Vec<Sample> {
    let (wav, reference) = support::pyannote_call();
    let phone = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("real_call_phone.wav");
    if !phone.exists() {
        let ok = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "set -e; d=$(mktemp -d); sox -R -n -r 16000 -c 1 -b 16 $d/n.wav synth 31 pinknoise vol 0.02; \
                 sox -m {w} $d/n.wav $d/mix.wav trim 0 30; \
                 sox $d/mix.wav -r 8000 -c 1 -e mu-law -b 8 {p} rate -v 8k sinc 300-3400 gain -n -3",
                w = wav.display(),
                p = phone.display()
            ))
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "sox could not make the telephone version of the real call"
        );
    }
    [("real_call", &wav), ("real_call_phone", &phone)]
        .into_iter()
        .map(|(name, path)| Sample {
            name: name.to_owned(),
            lang: "en".into(),
            script: reference.clone(),
            utterances: cut(path),
        })
        .collect()
}

fn samples() -> Vec<Sample> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("audio-samples");
    let labels = std::fs::read_to_string(dir.join("labels.csv")).unwrap();
    let mut out = Vec::new();
    let mut reader = csv::Reader::from_reader(labels.as_bytes());
    for row in reader.records() {
        let row = row.unwrap();
        let (path, lang, script) = (&row[0], &row[2], &row[5]);
        out.push(Sample {
            name: path.to_owned(),
            lang: lang.to_owned(),
            script: script.to_owned(),
            utterances: cut(&dir.join(path)),
        });
    }
    out
}

/// Transcribes a call's utterances one by one as the live engine does (the party's earlier
/// words as prompt, the first detected language kept); returns the text and seconds spent.
fn hear(m: &Transcriber, s: &Sample, cut: usize, window: Window) -> (String, f64) {
    let mut text = String::new();
    let mut language = None;
    let started = Instant::now();
    for u in &s.utterances[cut] {
        let opts = TranscribeOptions {
            vad: None,
            language: language.clone(),
            candidate_languages: vec!["en".into(), "zh".into()],
            initial_prompt: (!text.is_empty()).then(|| text.clone()),
            short_context_frames: Some(window.frames(u)),
            ..Default::default()
        };
        let t = m.transcribe(&u.samples, &opts).unwrap();
        if language.is_none() {
            language = t.language.clone();
        }
        let said = t.text();
        if !said.trim().is_empty() {
            text.push(' ');
            text.push_str(said.trim());
        }
    }
    (text, started.elapsed().as_secs_f64())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let samples = samples();
    let real_calls = real_call();
    let store = ModelStore::open().unwrap();
    let models = std::env::var("VISHGUARD_BENCH_MODELS").unwrap_or_else(|_| "tiny.en,base".into());
    let only_cuts = std::env::var_os("VISHGUARD_BENCH_ONLY_CUTS").is_some();
    let windows = [
        Window::Fixed(1500),
        Window::Fixed(1000),
        Window::Fixed(800),
        Window::Fit {
            margin: 100,
            min: 400,
        },
        Window::Fit {
            margin: 200,
            min: 600,
        },
    ];
    for name in models.split(',') {
        let files = store.resolve(Some(name)).unwrap();
        let m = Transcriber::load(&files, DeviceChoice::Cpu.open().unwrap()).unwrap();
        let chosen: Vec<&Sample> = samples
            .iter()
            .filter(|s| m.is_multilingual() || s.lang == "en")
            .collect();
        let utterances: usize = chosen.iter().map(|s| s.utterances[0].len()).sum();
        let audio_s: f64 = chosen
            .iter()
            .flat_map(|s| &s.utterances[0])
            .map(|u| u.samples.len() as f64 / 16_000.0)
            .sum();
        println!(
            "{name}: {} calls, {utterances} utterances, {audio_s:.1} s of speech",
            chosen.len()
        );
        let mut reference_time = None;
        let runs = CUTS.iter().enumerate().flat_map(|(c, _)| {
            windows
                .iter()
                .filter(move |w| (c == 0 && !only_cuts) || matches!(w, Window::Fixed(1500)))
                .map(move |&w| (c, w))
        });
        for (c, w) in runs {
            let cut_name = CUTS[c].0;
            let (mut en, mut zh, mut real, mut secs) = (Vec::new(), Vec::new(), Vec::new(), 0.0);
            for s in &real_calls {
                let (text, _) = hear(&m, s, c, w);
                let e = wer(&s.script, &text);
                if std::env::var_os("VISHGUARD_BENCH_VERBOSE").is_some() {
                    println!("  {cut_name} {w:?} {} {e:.3} {text}", s.name);
                }
                real.push(e);
            }
            for s in &chosen {
                let (text, t) = hear(&m, s, c, w);
                secs += t;
                let e = wer(&s.script, &text);
                if std::env::var_os("VISHGUARD_BENCH_VERBOSE").is_some() {
                    println!("  {cut_name} {w:?} {} {e:.3} {text}", s.name);
                }
                if s.lang == "zh" {
                    zh.push(e)
                } else {
                    en.push(e)
                }
            }
            let mean = |v: &[f64]| {
                if v.is_empty() {
                    f64::NAN
                } else {
                    v.iter().sum::<f64>() / v.len() as f64
                }
            };
            let base = *reference_time.get_or_insert(secs);
            println!(
                "{name}: {cut_name}, {w:?}: {secs:.2} s ({:.2}x the first line), RTF {:.3}, samples en WER {:.3} zh CER {:.3}, real call WER {:.3} clean {:.3} phone",
                secs / base,
                secs / audio_s,
                mean(&en),
                mean(&zh),
                real[0],
                real[1]
            );
        }
    }
}
