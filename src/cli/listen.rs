use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Result;
use clap::Args;

use super::classify::DetectorArgs;
use super::transcribe::AsrArgs;
use crate::live::{CallSummary, Engine, EngineConfig, EventSink, LiveEvent};
use crate::sinks::alerts::{AlertFileSink, JsonLinesSink, TerminalView, WebhookSink};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ListenFormat {
    /// Colored lines for a person (the default on a terminal).
    View,
    /// JSON lines (the default when stdout is not a terminal).
    Jsonl,
}

#[derive(Args, Debug)]
pub struct ListenArgs {
    /// List capture devices and exit.
    #[arg(long)]
    pub list_devices: bool,
    /// Capture device name (default: the system's default input); see --list-devices.
    #[arg(long)]
    pub input_device: Option<String>,
    /// Stop after this many seconds of capture.
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Feed a recording through the live engine instead of a device.
    #[arg(long)]
    pub from_file: Option<PathBuf>,
    /// With --from-file: play at real speed (for demos and latency measurements).
    #[arg(long)]
    pub realtime: bool,
    #[arg(long, value_enum)]
    pub format: Option<ListenFormat>,
    /// With --format jsonl: also print each utterance's transcript.
    #[arg(long)]
    pub transcripts: bool,
    /// Append every alert to this file (synced to disk per alert).
    #[arg(long)]
    pub alerts_file: Option<PathBuf>,
    /// POST every alert to this URL; undelivered alerts wait in --webhook-outbox.
    #[arg(long)]
    pub webhook: Option<String>,
    #[arg(long, default_value = "vishguard-outbox")]
    pub webhook_outbox: PathBuf,
    /// Utterances waiting for the recogniser before new ones are dropped.
    #[arg(long, default_value_t = 16)]
    pub asr_queue: usize,
    /// Recogniser threads sharing the model (two get about 1.25x the work of one on 2 cores).
    #[arg(long, default_value_t = 2)]
    pub asr_workers: usize,
    /// Hear only finished utterances: no early alerts from words still being spoken (saves
    /// the idle-time work that partial hypotheses take).
    #[arg(long)]
    pub no_partials: bool,
    #[command(flatten)]
    pub asr: AsrArgs,
    #[command(flatten)]
    pub detector: DetectorArgs,
}

/// Keeps the call summaries for the exit code.
struct Summaries(Arc<std::sync::Mutex<Vec<CallSummary>>>);

impl EventSink for Summaries {
    fn handle(&mut self, event: &LiveEvent) {
        if let LiveEvent::CallEnded(s) = event {
            self.0.lock().expect("summaries").push(s.clone());
        }
    }
}

pub fn run(args: ListenArgs) -> Result<i32> {
    if args.list_devices {
        return list_devices();
    }
    // The model and classifier serve every call for the life of the process.
    let classifier: &'static _ = Box::leak(Box::new(args.detector.load()?));
    let transcriber: &'static _ = Box::leak(Box::new(args.asr.load()?));
    let format = args.format.unwrap_or(if std::io::stdout().is_terminal() {
        ListenFormat::View
    } else {
        ListenFormat::Jsonl
    });
    let summaries = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut sinks: Vec<Box<dyn EventSink>> = vec![Box::new(Summaries(summaries.clone()))];
    match format {
        ListenFormat::View => sinks.push(Box::new(TerminalView)),
        ListenFormat::Jsonl => sinks.push(Box::new(JsonLinesSink {
            transcripts: args.transcripts,
        })),
    }
    if let Some(path) = &args.alerts_file {
        sinks.push(Box::new(AlertFileSink::open(path)?));
    }
    if let Some(url) = &args.webhook {
        sinks.push(Box::new(WebhookSink::start(url, &args.webhook_outbox)?));
    }
    let mut config = EngineConfig {
        asr_queue: args.asr_queue.max(1),
        asr_workers: args.asr_workers.max(1),
        ..Default::default()
    };
    if args.no_partials {
        config.partial_every_s = None;
    }
    config.options.language = args.asr.language.clone();
    config.options.candidate_languages = args.asr.languages.clone();
    config.options.initial_prompt = args.asr.initial_prompt.clone();
    let engine = Engine::start(transcriber, classifier, config, sinks);
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed));
    }
    let outcome = if let Some(file) = &args.from_file {
        let id = file
            .file_stem()
            .map_or("call".into(), |s| s.to_string_lossy().into_owned());
        crate::sources::file::play(&engine, &id, file, args.asr.channels, args.realtime, &stop)
    } else {
        capture(&engine, &args, &stop)
    };
    engine.shutdown();
    outcome?;
    let flagged = summaries
        .lock()
        .expect("summaries")
        .iter()
        .any(|s| s.risk.is_flagged());
    Ok(if flagged { 1 } else { 0 })
}

#[cfg(feature = "capture")]
fn list_devices() -> Result<i32> {
    for d in crate::sources::capture::devices()? {
        println!("{d}");
    }
    Ok(0)
}

#[cfg(not(feature = "capture"))]
fn list_devices() -> Result<i32> {
    anyhow::bail!("this build has no sound-device capture: build with `--features capture` (needs libasound2-dev)")
}

#[cfg(feature = "capture")]
fn capture(engine: &Engine, args: &ListenArgs, stop: &AtomicBool) -> Result<()> {
    crate::sources::capture::run(
        engine,
        args.input_device.as_deref(),
        args.asr.channels,
        args.seconds,
        stop,
    )
}

#[cfg(not(feature = "capture"))]
fn capture(_: &Engine, _: &ListenArgs, _: &AtomicBool) -> Result<()> {
    anyhow::bail!("this build has no sound-device capture: use --from-file, or build with `--features capture` (needs libasound2-dev)")
}
