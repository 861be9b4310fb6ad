use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Result};
use clap::Args;

use super::args::{AsrArgs, DetectorArgs};
use crate::config::{Config, SinkConfig, SourceConfig};
use crate::engine::{Engine, SinkSpec, WhisperRecogniser};
use crate::sinks::alert_file::AlertFileConfig;
use crate::sinks::memory::Collector;
use crate::sinks::stdout::StdoutConfig;
use crate::sinks::terminal::TerminalConfig;
use crate::sinks::webhook::{default_outbox, WebhookConfig};
use crate::sinks::QueueConfig;
use crate::sources::file::FileSourceConfig;
use crate::sources::{DeviceSourceConfig, Stop};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ListenFormat {
    /// Colored lines for a person (the default on a terminal).
    View,
    /// JSON lines (the default when stdout is not a terminal).
    Jsonl,
}

#[derive(Args, Debug, Default)]
pub struct ListenArgs {
    /// A TOML config of the engine, its sources and sinks (see docs/listen.example.toml);
    /// flags fill and override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print the config that would run (the file and the flags together) as TOML, and exit.
    #[arg(long)]
    pub print_config: bool,
    /// List capture devices and exit.
    #[arg(long)]
    pub list_devices: bool,
    /// Capture from this device (default: the system's default input); see --list-devices.
    #[arg(long)]
    pub input_device: Option<String>,
    /// Stop after this many seconds of capture.
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Feed a recording through the live engine as a call (repeat for concurrent calls).
    #[arg(long)]
    pub from_file: Vec<PathBuf>,
    /// With --from-file: play at real speed (for demos and latency measurements).
    #[arg(long)]
    pub realtime: bool,
    #[arg(long, value_enum)]
    pub format: Option<ListenFormat>,
    /// With JSON lines: also print each utterance's transcript.
    #[arg(long)]
    pub transcripts: bool,
    /// Append every alert to this file (synced to disk per alert).
    #[arg(long)]
    pub alerts_file: Option<PathBuf>,
    /// POST every alert to this URL; undelivered alerts wait in --webhook-outbox.
    #[arg(long)]
    pub webhook: Option<String>,
    /// Where undelivered webhook alerts wait [default: vishguard-outbox].
    #[arg(long)]
    pub webhook_outbox: Option<PathBuf>,
    /// Utterances waiting for the recogniser before new ones are dropped [default: 16].
    #[arg(long)]
    pub asr_queue: Option<usize>,
    /// Recogniser threads sharing the model (two get about 1.25x the work of one on 2 cores)
    /// [default: 2].
    #[arg(long)]
    pub asr_workers: Option<usize>,
    /// Hear only finished utterances: no early alerts from words still being spoken (saves
    /// the idle-time work that partial hypotheses take).
    #[arg(long)]
    pub no_partials: bool,
    #[command(flatten)]
    pub asr: AsrArgs,
    #[command(flatten)]
    pub detector: DetectorArgs,
}

impl ListenArgs {
    /// The config file (or the defaults) with every flag written over it. Errors name a flag
    /// that would have nothing to act on.
    pub fn config(&self) -> Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        self.asr.apply(&mut config.asr);
        self.detector.apply(&mut config.detect);
        let engine = &mut config.engine;
        if self.asr.no_vad {
            engine.utterances.vad = false;
        }
        if let Some(n) = self.asr_queue {
            engine.asr_queue = n;
        }
        if let Some(n) = self.asr_workers {
            engine.asr_workers = n;
        }
        if self.no_partials {
            engine.partials = false;
        }
        let channels = self.asr.channels();
        if self.realtime && self.from_file.is_empty() {
            bail!("--realtime plays a recording: it needs --from-file");
        }
        for path in &self.from_file {
            config.sources.push(SourceConfig::File(FileSourceConfig {
                path: path.clone(),
                realtime: self.realtime,
                call_id: None,
                channels,
            }));
        }
        let device_flags = self.input_device.is_some() || self.seconds.is_some();
        if device_flags || config.sources.is_empty() {
            config
                .sources
                .push(SourceConfig::Device(DeviceSourceConfig {
                    name: self.input_device.clone(),
                    seconds: self.seconds,
                    call_id: None,
                    channels,
                }));
        }
        let format = self.format.or_else(|| {
            // With no sink anywhere, what people expect: a view on a terminal, JSON lines
            // into a pipe.
            config.sinks.is_empty().then(|| {
                if std::io::stdout().is_terminal() {
                    ListenFormat::View
                } else {
                    ListenFormat::Jsonl
                }
            })
        });
        match format {
            Some(ListenFormat::View) => config
                .sinks
                .push(SinkConfig::Terminal(TerminalConfig::default())),
            Some(ListenFormat::Jsonl) => config.sinks.push(SinkConfig::Stdout(StdoutConfig {
                transcripts: false,
                queue: QueueConfig::default(),
            })),
            None => {}
        }
        if self.transcripts {
            let mut any = false;
            for s in &mut config.sinks {
                if let SinkConfig::Stdout(c) = s {
                    c.transcripts = true;
                    any = true;
                }
            }
            if !any {
                bail!("--transcripts adds transcripts to JSON lines: it needs --format jsonl (or a stdout sink in the config)");
            }
        }
        if let Some(path) = &self.alerts_file {
            config.sinks.push(SinkConfig::AlertFile(AlertFileConfig {
                path: path.clone(),
                queue: QueueConfig::default(),
            }));
        }
        match (&self.webhook, &self.webhook_outbox) {
            (Some(url), outbox) => config.sinks.push(SinkConfig::Webhook(WebhookConfig {
                url: url.clone(),
                outbox: outbox.clone().unwrap_or_else(default_outbox),
                queue: QueueConfig::default(),
            })),
            (None, Some(_)) => {
                bail!("--webhook-outbox is where --webhook keeps alerts: it needs --webhook")
            }
            (None, None) => {}
        }
        config
            .validate()
            .map_err(|(key, problem)| anyhow::anyhow!("{key}: {problem}"))?;
        Ok(config)
    }
}

pub fn run(args: ListenArgs) -> Result<i32> {
    if args.list_devices {
        return list_devices();
    }
    let config = args.config()?;
    if args.print_config {
        print!("{}", config.to_toml()?);
        return Ok(0);
    }
    // Sources and sinks are built first: a bad path or device fails before models load.
    let sources = config
        .sources
        .iter()
        .map(SourceConfig::build)
        .collect::<Result<Vec<_>>>()?;
    let collector = Collector::summaries_only();
    let mut sinks = vec![SinkSpec::new(collector.clone(), QueueConfig::default())];
    for s in &config.sinks {
        sinks.push(s.build()?);
    }
    let classifier = Arc::new(config.detect.load()?);
    let transcriber = Arc::new(config.asr.load()?);
    let options = config
        .asr
        .options(transcriber.is_multilingual(), &classifier.languages());
    let recogniser = Arc::new(WhisperRecogniser::new(transcriber, options));
    let engine = Engine::start(recogniser, classifier, config.engine.clone(), sinks)?;
    let stop = Stop::new();
    {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || stop.request());
    }
    let failures: Vec<String> = std::thread::scope(|scope| {
        let running: Vec<_> = sources
            .into_iter()
            .map(|source| {
                let (ingest, stop) = (engine.ingest(), stop.clone());
                let name = source.describe();
                (name, scope.spawn(move || source.run(ingest, stop)))
            })
            .collect();
        running
            .into_iter()
            .filter_map(|(name, handle)| match handle.join() {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("{name}: {e:#}")),
                Err(_) => Some(format!("{name}: the source crashed")),
            })
            .collect()
    });
    engine.shutdown();
    for f in &failures {
        eprintln!("error: {f}");
    }
    let flagged = collector.summaries().iter().any(|s| s.risk.is_flagged());
    Ok(if !failures.is_empty() {
        2
    } else if flagged {
        1
    } else {
        0
    })
}

#[cfg(feature = "capture")]
fn list_devices() -> Result<i32> {
    for d in crate::sources::device::devices()? {
        println!("{d}");
    }
    Ok(0)
}

#[cfg(not(feature = "capture"))]
fn list_devices() -> Result<i32> {
    bail!("this build has no sound-device capture: build with `--features capture` (needs libasound2-dev)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen(args: &[&str]) -> Result<Config> {
        use clap::Parser;
        let cli =
            crate::cli::Cli::try_parse_from(["vishguard", "listen"].iter().chain(args).copied())?;
        match cli.command {
            crate::cli::Command::Listen(a) => a.config(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn every_live_flag_lands_in_the_config() {
        let c = listen(&[
            "--from-file",
            "a.wav",
            "--realtime",
            "--no-vad",
            "--short-context-s",
            "10",
            "--format",
            "jsonl",
            "--transcripts",
            "--asr-workers",
            "1",
            "--no-partials",
            "--channels",
            "mix",
            "--alerts-file",
            "alerts.jsonl",
        ])
        .unwrap();
        assert!(
            !c.engine.utterances.vad,
            "--no-vad cuts without voice activity"
        );
        assert_eq!(c.asr.short_context_s, Some(10.0));
        assert_eq!(c.engine.asr_workers, 1);
        assert!(!c.engine.partials);
        assert!(matches!(&c.sources[..], [SourceConfig::File(f)]
            if f.realtime && f.channels == crate::audio::ChannelMode::Mix));
        assert!(c
            .sinks
            .iter()
            .any(|s| matches!(s, SinkConfig::Stdout(o) if o.transcripts)));
        assert!(c
            .sinks
            .iter()
            .any(|s| matches!(s, SinkConfig::AlertFile(_))));
    }

    #[test]
    fn a_flag_with_nothing_to_act_on_is_an_error() {
        for (args, flag) in [
            (&["--realtime"][..], "--realtime"),
            (
                &["--from-file", "a.wav", "--format", "view", "--transcripts"],
                "--transcripts",
            ),
            (
                &["--from-file", "a.wav", "--webhook-outbox", "o"],
                "--webhook-outbox",
            ),
            (
                &["--from-file", "a.wav", "--asr-workers", "0"],
                "asr_workers",
            ),
        ] {
            let e = listen(args).unwrap_err().to_string();
            assert!(e.contains(flag), "{args:?}: {e}");
        }
    }
}
