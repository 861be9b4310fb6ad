//! Flag groups shared by several subcommands. Each fills the same config structs a config file
//! does ([`crate::config`]), so what a flag says is what runs.

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::Args;
use serde::de::DeserializeOwned;

use std::io::IsTerminal;

use anyhow::{bail, Result};

use crate::asr::{ComputeType, DeviceChoice};
use crate::audio::ChannelMode;
use crate::config::{AsrConfig, DetectConfig, SinkConfig};
use crate::engine::EngineConfig;
use crate::sinks::alert_file::AlertFileConfig;
use crate::sinks::nats::{self, NatsConfig};
use crate::sinks::stdout::StdoutConfig;
use crate::sinks::terminal::TerminalConfig;
use crate::sinks::webhook::{default_max_pending, default_outbox, WebhookConfig};
use crate::sinks::QueueConfig;

/// A parser for one of the library's named choices, listing them in `--help`: a name reads
/// as it does in a config file (through the enum's serde names).
pub fn choice<T>(names: &'static [&'static str]) -> impl TypedValueParser<Value = T>
where
    T: DeserializeOwned + Clone + Send + Sync + 'static,
{
    PossibleValuesParser::new(names).try_map(|s| parse_name::<T>(&s))
}

fn parse_name<T: DeserializeOwned>(name: &str) -> Result<T, serde_json::Error> {
    serde_json::from_value(serde_json::Value::String(name.to_owned()))
}

/// How many recordings are heard at once (`scan`, `transcribe`; `score` has its own `--jobs`,
/// which also counts text rows).
#[derive(Args, Debug, Clone)]
pub struct FileBatchArgs {
    /// Threads hearing files, each with `--batch` files in flight (default: the number of CPU
    /// cores).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Files each thread hears at once: the next window of each goes through the recogniser
    /// in one batch (results still print in file order, the same as heard alone).
    #[arg(long, default_value_t = super::scan::DEFAULT_FILE_BATCH, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=256))]
    pub batch: usize,
}

impl FileBatchArgs {
    /// `--jobs`, or [`default_jobs`].
    pub fn jobs(&self) -> usize {
        self.jobs.unwrap_or_else(default_jobs)
    }
}

/// Threads for a batch of files or rows when none are asked for: the CPU cores.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Options of every command that runs speech recognition.
#[derive(Args, Debug, Clone, Default)]
pub struct AsrArgs {
    /// Catalog model name (see `vishguard models list`) or a path to a model folder or wheel.
    #[arg(long)]
    pub model: Option<String>,
    /// Where the model runs: auto (a GPU when this build and the machine have one, else the
    /// CPU), cpu, cuda, cuda:N, metal [default: auto].
    #[arg(long, value_parser = clap::builder::ValueParser::new(|s: &str| s.parse::<DeviceChoice>()))]
    pub device: Option<DeviceChoice>,
    /// Precision: auto (on the CPU bf16 where it has AMX tiles, else f32; f16 on a GPU), f32,
    /// int8 (CPU: as auto, with the decoder's vocabulary projection reading int8 weights),
    /// f16, bf16 (CPU: the encoder on AMX tiles) [default: auto].
    #[arg(long, value_parser = choice::<ComputeType>(&ComputeType::NAMES))]
    pub compute_type: Option<ComputeType>,
    /// Stereo recordings: transcribe each channel as its own party, or mix them [default: split].
    #[arg(long, value_parser = choice::<ChannelMode>(&ChannelMode::NAMES))]
    pub channels: Option<ChannelMode>,
    /// Spoken language (e.g. en, zh); detected when not given (multilingual models).
    #[arg(long)]
    pub language: Option<String>,
    /// Restrict language detection to these, comma-separated (e.g. en,zh) [default: the
    /// languages with phrase packs].
    #[arg(long, value_delimiter = ',')]
    pub languages: Vec<String>,
    /// Text that conditions the first window (names, vocabulary).
    #[arg(long)]
    pub initial_prompt: Option<String>,
    /// Transcribe silence and noise too, instead of only what voice activity detection keeps
    /// (live calls: cut into fixed pieces instead of at pauses).
    #[arg(long)]
    pub no_vad: bool,
    /// Encode audio shorter than this many seconds in a window this long instead of 30 s
    /// (faster; Whisper was trained on 30 s windows: 30 turns it off) [default: 15].
    #[arg(long)]
    pub short_context_s: Option<f64>,
    /// Phrases the decoder is pushed to finish once it has begun one (contextual biasing): a
    /// file, one phrase per line (e.g. models/hotwords/zh.txt, Mandarin scam vocabulary).
    #[arg(long)]
    pub hotwords: Option<PathBuf>,
    /// What a begun phrase's continuing tokens gain, added to their logits [default: 4].
    #[arg(long)]
    pub hotword_bonus: Option<f32>,
    /// Phrases tried in place of the spans of the transcript that sound partly like them,
    /// each kept when the decoder, rescoring the window, finds it nearly as likely as what it
    /// wrote: a file, one phrase per line (e.g. models/hotwords/zh.txt).
    #[arg(long)]
    pub rescore: Option<PathBuf>,
    /// What a rescored transcript may lose against the decoder's own, in nats [default: 2].
    #[arg(long)]
    pub rescore_margin: Option<f32>,
    /// Beam search with this many hypotheses at temperature 0 (as faster-whisper's
    /// beam_size; 1 is greedy decoding) [default: 1].
    #[arg(long)]
    pub beam_size: Option<usize>,
}

impl AsrArgs {
    /// Writes every flag that was given over `config`.
    pub fn apply(&self, config: &mut AsrConfig) {
        if let Some(m) = &self.model {
            config.model = Some(m.clone());
        }
        if let Some(d) = self.device {
            config.device = d;
        }
        if let Some(c) = self.compute_type {
            config.compute_type = c;
        }
        if let Some(l) = &self.language {
            config.language = Some(l.clone());
        }
        if !self.languages.is_empty() {
            config.languages = self.languages.clone();
        }
        if let Some(p) = &self.initial_prompt {
            config.initial_prompt = Some(p.clone());
        }
        if self.no_vad {
            config.vad = false;
        }
        if let Some(s) = self.short_context_s {
            config.short_context_s = Some(s);
        }
        if let Some(h) = &self.hotwords {
            config.hotwords = Some(h.clone());
        }
        if let Some(b) = self.hotword_bonus {
            config.hotword_bonus = b;
        }
        if let Some(r) = &self.rescore {
            config.rescore = Some(r.clone());
        }
        if let Some(m) = self.rescore_margin {
            config.rescore_margin = m;
        }
        if let Some(b) = self.beam_size {
            config.beam_size = b;
        }
    }

    /// The defaults with these flags over them.
    pub fn config(&self) -> AsrConfig {
        let mut config = AsrConfig::default();
        self.apply(&mut config);
        config
    }

    pub fn channels(&self) -> ChannelMode {
        self.channels.unwrap_or_default()
    }
}

/// How the detector is built: phrase packs and the sentence encoder of the context check.
#[derive(Args, Debug, Clone, Default)]
pub struct DetectorArgs {
    /// Phrase packs to use instead of the built-in ones (one per language).
    #[arg(long = "pack")]
    pub packs: Vec<PathBuf>,
    /// Sentence encoder of the context check: a catalog name (fetched on first use) or a
    /// model folder [default: minilm].
    #[arg(long)]
    pub encoder: Option<String>,
    /// Keywords only: skip the context check (no encoder is loaded; about 2x more false
    /// alarms on casual talk about crime or money).
    #[arg(long)]
    pub no_context_check: bool,
    /// Leave out the packs' call models, which read the whole call and veto flagged calls that
    /// read as honest (and lift ones with a cue that read as scams; in Mandarin, calls of 10
    /// windows or more with no cue heard too). On by
    /// default: near-domain honest calls flagged 35% -> 5% on a set nobody tuned on, and
    /// short transcripts (under 7 windows, as heard scams often are) are never vetoed
    /// (docs/measured.md, "A model of the whole call").
    #[arg(long, conflicts_with = "call_model")]
    pub no_call_model: bool,
    /// The call models are on by default; kept so that scripts written when they were off
    /// still run.
    #[arg(long, hide = true)]
    pub call_model: bool,
}

impl DetectorArgs {
    pub fn apply(&self, config: &mut DetectConfig) {
        if !self.packs.is_empty() {
            config.packs = self.packs.clone();
        }
        if let Some(e) = &self.encoder {
            config.encoder = e.clone();
        }
        if self.no_context_check {
            config.context_check = false;
        }
        if self.call_model {
            config.call_model = true;
        }
        if self.no_call_model {
            config.call_model = false;
        }
    }

    pub fn config(&self) -> DetectConfig {
        let mut config = DetectConfig::default();
        self.apply(&mut config);
        config
    }
}

/// The config file (or the defaults) with the recognition, detection and engine flags written
/// over it: what `listen` and `serve` start from.
pub fn live_config(
    path: Option<&std::path::Path>,
    asr: &AsrArgs,
    detector: &DetectorArgs,
    engine: &EngineArgs,
) -> Result<crate::config::Config> {
    let mut config = match path {
        Some(path) => crate::config::Config::load(path)?,
        None => crate::config::Config::default(),
    };
    asr.apply(&mut config.asr);
    detector.apply(&mut config.detect);
    engine.apply(&mut config.engine);
    if asr.no_vad {
        // Live calls are cut by the engine: without voice activity, into fixed pieces.
        config.engine.utterances.vad = false;
    }
    Ok(config)
}

/// How the live engine runs (`[engine]`).
#[derive(Args, Debug, Clone, Default)]
pub struct EngineArgs {
    /// Utterances waiting for the recogniser before new ones are dropped [default: 16].
    #[arg(long)]
    pub asr_queue: Option<usize>,
    /// Recogniser threads sharing the model (two get about 1.25x the work of one on 2 cores)
    /// [default: 2].
    #[arg(long)]
    pub asr_workers: Option<usize>,
    /// Utterances of different calls heard together in one batch (pays on a GPU)
    /// [default: 1].
    #[arg(long)]
    pub asr_batch: Option<usize>,
    /// Each utterance's decode joins the running decode of other calls' utterances
    /// (continuous batching; pays where one row leaves the hardware idle, as on a GPU; slower
    /// on a 2-core CPU).
    #[arg(long)]
    pub joint_decoding: bool,
    /// Hear only finished utterances: no early alerts from words still being spoken (saves
    /// the idle-time work that partial hypotheses take).
    #[arg(long)]
    pub no_partials: bool,
    /// Never hear a party's last utterances again as one recording (saves the idle-time
    /// work of reviews; a phrase split by a 6 s cut may then be missed).
    #[arg(long)]
    pub no_reviews: bool,
}

impl EngineArgs {
    pub fn apply(&self, config: &mut EngineConfig) {
        if let Some(n) = self.asr_queue {
            config.asr_queue = n;
        }
        if let Some(n) = self.asr_workers {
            config.asr_workers = n;
        }
        if let Some(n) = self.asr_batch {
            config.asr_batch = n;
        }
        if self.joint_decoding {
            config.joint_decoding = true;
        }
        if self.no_partials {
            config.partials = false;
        }
        if self.no_reviews {
            config.reviews = false;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EventFormat {
    /// Colored lines for a person (the default on a terminal).
    View,
    /// JSON lines (the default when stdout is not a terminal).
    Jsonl,
}

/// Where the live engine's events go (`[[sinks]]`).
#[derive(Args, Debug, Clone, Default)]
pub struct SinkArgs {
    #[arg(long, value_enum)]
    pub format: Option<EventFormat>,
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
    /// Publish call openings, alerts and summaries to NATS JetStream (stream
    /// VISHGUARD_EVENTS, subjects vishguard.events.<call id>): server URLs, comma-separated.
    #[arg(long)]
    pub nats: Option<String>,
    /// Where events not yet stored by JetStream wait [default: vishguard-nats-outbox].
    #[arg(long)]
    pub nats_outbox: Option<PathBuf>,
    /// TLS to NATS: the CA certificates (PEM) the servers must chain to.
    #[arg(long)]
    pub nats_tls_ca: Option<PathBuf>,
}

impl SinkArgs {
    /// Adds the sinks the flags ask for; with `default_output` and no sink anywhere, what
    /// people expect: a view on a terminal, JSON lines into a pipe. Errors name a flag with
    /// nothing to act on.
    pub fn apply(&self, sinks: &mut Vec<SinkConfig>, default_output: bool) -> Result<()> {
        let format = self.format.or_else(|| {
            (default_output && sinks.is_empty()).then(|| {
                if std::io::stdout().is_terminal() {
                    EventFormat::View
                } else {
                    EventFormat::Jsonl
                }
            })
        });
        match format {
            Some(EventFormat::View) => sinks.push(SinkConfig::Terminal(TerminalConfig::default())),
            Some(EventFormat::Jsonl) => sinks.push(SinkConfig::Stdout(StdoutConfig::default())),
            None => {}
        }
        if self.transcripts {
            let mut stdout = sinks.iter_mut().filter_map(|s| match s {
                SinkConfig::Stdout(c) => Some(c),
                _ => None,
            });
            let Some(first) = stdout.next() else {
                bail!("--transcripts adds transcripts to JSON lines: it needs --format jsonl (or a stdout sink in the config)");
            };
            first.transcripts = true;
            stdout.for_each(|c| c.transcripts = true);
        }
        if let Some(path) = &self.alerts_file {
            sinks.push(SinkConfig::AlertFile(AlertFileConfig {
                path: path.clone(),
                queue: QueueConfig::default(),
                redact: false,
            }));
        }
        match (&self.webhook, &self.webhook_outbox) {
            (Some(url), outbox) => sinks.push(SinkConfig::Webhook(WebhookConfig {
                url: url.clone(),
                outbox: outbox.clone().unwrap_or_else(default_outbox),
                max_pending: default_max_pending(),
                queue: QueueConfig::default(),
                redact: false,
            })),
            (None, Some(_)) => {
                bail!("--webhook-outbox is where --webhook keeps alerts: it needs --webhook")
            }
            (None, None) => {}
        }
        match (&self.nats, &self.nats_outbox) {
            (Some(servers), outbox) => {
                let mut c = NatsConfig::for_servers(nats::servers(servers));
                if let Some(o) = outbox {
                    c.outbox = o.clone();
                }
                c.tls_ca = self.nats_tls_ca.clone();
                sinks.push(SinkConfig::Nats(c));
            }
            (None, Some(_)) => {
                bail!("--nats-outbox is where --nats keeps events: it needs --nats")
            }
            (None, None) if self.nats_tls_ca.is_some() => {
                bail!("--nats-tls-ca is for --nats: it needs --nats")
            }
            (None, None) => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::TranscriptFormat;

    #[test]
    fn every_listed_choice_parses() {
        for n in DeviceChoice::NAMES {
            assert!(parse_name::<DeviceChoice>(n).is_ok(), "{n}");
        }
        for n in ChannelMode::NAMES {
            assert!(parse_name::<ChannelMode>(n).is_ok(), "{n}");
        }
        for n in TranscriptFormat::NAMES {
            assert!(parse_name::<TranscriptFormat>(n).is_ok(), "{n}");
        }
        assert!(parse_name::<ChannelMode>("stereo").is_err());
    }
}
