use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use super::args::{live_config, AsrArgs, DetectorArgs, EngineArgs, SinkArgs};
use crate::audio::ChannelMode;
use crate::config::{Config, SourceConfig};
use crate::engine::SinkSpec;
use crate::sinks::memory::Collector;
use crate::sinks::QueueConfig;
use crate::sources::file::FileSourceConfig;
use crate::sources::{DeviceSourceConfig, Stop};

#[derive(Args, Debug, Default)]
pub struct ListenArgs {
    /// A TOML config of the engine, its sources and sinks (see docs/listen.example.toml);
    /// flags override its settings, and --from-file and the sink flags add to its sources and
    /// sinks.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print the config that would run (the file and the flags together) as TOML, and exit.
    #[arg(long)]
    pub print_config: bool,
    /// List capture devices and exit.
    #[arg(long)]
    pub list_devices: bool,
    #[command(flatten, next_help_heading = "Calls")]
    pub sources: SourceArgs,
    #[command(flatten, next_help_heading = "Where alerts go")]
    pub sinks: SinkArgs,
    #[command(flatten, next_help_heading = "Engine")]
    pub engine: EngineArgs,
    #[command(flatten, next_help_heading = "Recognition")]
    pub asr: AsrArgs,
    #[command(flatten, next_help_heading = "Detection")]
    pub detector: DetectorArgs,
}

/// Where listen's calls come from: recordings, or a sound device.
#[derive(Args, Debug, Default)]
pub struct SourceArgs {
    /// Feed a recording through the live engine as a call (repeat for concurrent calls).
    #[arg(long)]
    pub from_file: Vec<PathBuf>,
    /// With --from-file: play at real speed (for demos and latency measurements).
    #[arg(long)]
    pub realtime: bool,
    /// Capture from this device (default: the system's default input); see --list-devices.
    #[arg(long)]
    pub input_device: Option<String>,
    /// Stop after this many seconds of capture.
    #[arg(long)]
    pub seconds: Option<f64>,
}

impl SourceArgs {
    /// A file source per recording; a device source when asked for, or when nothing else
    /// would be heard.
    fn apply(&self, channels: ChannelMode, config: &mut Config) -> Result<()> {
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
        Ok(())
    }
}

impl ListenArgs {
    /// The config file (or the defaults) with every flag written over it. Errors name a flag
    /// that would have nothing to act on.
    pub fn config(&self) -> Result<Config> {
        let mut config = live_config(
            self.config.as_deref(),
            &self.asr,
            &self.detector,
            &self.engine,
        )?;
        self.sources.apply(self.asr.channels(), &mut config)?;
        self.sinks.apply(&mut config.sinks, true)?;
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
    let collector = Collector::summaries_only();
    let (engine, sources) = super::engine::start(
        &config,
        vec![SinkSpec::new(collector.clone(), QueueConfig::default())],
    )?;
    let stop = Stop::new();
    {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || stop.request());
    }
    let failures = super::engine::run_sources(&engine.ingest(), sources, &stop);
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
    use crate::config::SinkConfig;

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
