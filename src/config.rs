//! One TOML config describes what runs: `[asr]` (the recogniser), `[detect]` (the phrase packs
//! and the context check), `[engine]` (queues, workers, utterance cutting), `[[sources]]`,
//! `[[sinks]]` and `[server]`. `listen --config FILE` and `serve --config FILE` read it;
//! command-line flags fill the same struct, so a flag is never silently ignored, and
//! `--print-config` shows what will run.
//!
//! `docs/listen.example.toml` documents every key (a test keeps it valid). Unknown keys and bad
//! values are errors that name the key and its line.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::asr::decode::FallbackPolicy;
use crate::asr::{ComputeType, DeviceChoice, TranscribeOptions, Transcriber};
use crate::detect::script_context::ContextCheck;
use crate::detect::{Classifier, PhrasePack};
use crate::engine::{EngineConfig, SinkSpec};
use crate::model_store::ModelStore;
use crate::relay::{RelayConfig, Role};
use crate::server::ServerConfig;
use crate::sinks::alert_file::{AlertFile, AlertFileConfig};
use crate::sinks::nats::{NatsConfig, NatsSink};
use crate::sinks::redact::Redacted;
use crate::sinks::stdout::{JsonLines, StdoutConfig};
use crate::sinks::terminal::{TerminalConfig, TerminalView};
use crate::sinks::webhook::{WebhookConfig, WebhookSink};
use crate::sinks::Sink;
use crate::sources::file::{FileSource, FileSourceConfig};
use crate::sources::{DeviceSourceConfig, Source};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[asr]`: the recogniser.
    pub asr: AsrConfig,
    /// `[detect]`: the phrase packs and the context check.
    pub detect: DetectConfig,
    /// `[engine]`: queues, workers, partial hypotheses, `[engine.utterances]`.
    pub engine: EngineConfig,
    /// `[[sources]]`: where calls come from; each runs on a thread of its own.
    pub sources: Vec<SourceConfig>,
    /// `[[sinks]]`: where events go; each has its own queue (`[sinks.queue]`).
    pub sinks: Vec<SinkConfig>,
    /// `[server]`: `serve`'s HTTP address, token and limits.
    pub server: ServerConfig,
    /// `[nats]`: the broker that joins `serve --role ingest` and `--role worker` processes.
    #[serde(skip_serializing_if = "RelayConfig::is_unset")]
    pub nats: RelayConfig,
}

/// What a begun hotword's continuation gains (natural-log units). On the Mandarin tuning
/// audio 4 finished more phrases than 2, and 8 flagged no more calls than 4.
pub const DEFAULT_HOTWORD_BONUS: f32 = 4.0;

/// The encoder window (seconds) for audio that fits in it with a second to spare, in place of
/// Whisper's 30 s: what the live engine always used, and since 2026-12-02 `scan`'s and
/// `transcribe`'s default too. Measured with voice activity on (base, 2 cores, one session):
/// the bundled samples scan in 35.0 s instead of 53.1 s with the same verdicts, held-out
/// voices 53.7 s instead of 68.5 s (same verdicts), the real call's WER is unchanged (0.173,
/// tiny.en and base) and the telephone clips' mean moves 0.450 -> 0.446 (base) and 0.429 ->
/// 0.431 (tiny.en), clip by clip both ways. Longer pieces keep the 30 s window.
pub const DEFAULT_SHORT_CONTEXT_S: f64 = 15.0;

/// `[asr]`: which Whisper model, where it runs, and how it listens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AsrConfig {
    /// A catalog name (`vishguard models list`) or a model folder or wheel; default: the
    /// catalog's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `auto` (a GPU when this build and the machine have one, else the CPU), `cpu`, `cuda`,
    /// `cuda:N`, `metal`.
    pub device: DeviceChoice,
    /// `auto` (on the CPU `bf16` where it has AMX tiles, else `f32`; `f16` on a GPU), `f32`,
    /// `int8` (CPU: f32 with the vocabulary projection in q8_0), `f16`, `bf16` (CPU: the
    /// encoder on AMX tiles).
    pub compute_type: ComputeType,
    /// The spoken language ("en", "zh"); detected when not given (multilingual models).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Detection is limited to these; empty: the languages that have phrase packs.
    pub languages: Vec<String>,
    /// Text that conditions the first window (names, vocabulary).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_prompt: Option<String>,
    /// Recordings: transcribe only what voice activity calls speech (live calls are cut by
    /// `[engine.utterances]`, whose `vad` key plays this part).
    pub vad: bool,
    /// Audio shorter than this is encoded in a window this long instead of 30 s (default
    /// [`DEFAULT_SHORT_CONTEXT_S`], for recordings and live utterances alike).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub short_context_s: Option<f64>,
    /// Phrases the decoder is pushed to finish once it has begun one (contextual biasing, see
    /// `asr::bias`): a UTF-8 file, one phrase of two characters or more per line, `#` starts
    /// a comment line. `models/hotwords/zh.txt` lists Mandarin scam vocabulary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hotwords: Option<PathBuf>,
    /// Added to the logits of the tokens that continue a begun phrase (natural-log units).
    pub hotword_bonus: f32,
    /// Phrases tried in place of the spans of each window's transcript that sound partly like
    /// them, each kept when the decoder, rescoring the window, finds it within
    /// `rescore_margin` of what it wrote (see `asr::rescore`): a file as for `hotwords`, each
    /// phrase two Chinese characters or more.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rescore: Option<PathBuf>,
    /// What a rescored transcript may lose against the decoder's own (nats).
    pub rescore_margin: f32,
    /// Hypotheses kept at temperature 0 (beam search; 1 is greedy decoding), 1 to
    /// [`crate::asr::decode::MAX_BEAM_SIZE`].
    pub beam_size: usize,
}

/// A hotword file this large is not a phrase list.
const MAX_HOTWORDS_BYTES: u64 = 1 << 20;

/// The phrases of a hotword file (see [`AsrConfig::hotwords`]).
pub fn read_hotwords(path: &std::path::Path) -> Result<Vec<String>> {
    read_phrase_list(path, "hotwords")
}

/// The phrases of a phrase list file (one per line, `#` starts a comment line), errors named
/// `what` (the key or flag that gave the file: "hotwords", "rescore").
pub fn read_phrase_list(path: &std::path::Path, what: &str) -> Result<Vec<String>> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("{what} {}: cannot read it", path.display()))?;
    if !meta.is_file() {
        anyhow::bail!("{what} {}: not a regular file", path.display());
    }
    if meta.len() > MAX_HOTWORDS_BYTES {
        anyhow::bail!(
            "{what} {}: {} bytes, more than a phrase list of {} bytes",
            path.display(),
            meta.len(),
            MAX_HOTWORDS_BYTES
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{what} {}: not UTF-8 text", path.display()))?;
    let phrases: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    if phrases.is_empty() {
        anyhow::bail!("{what} {}: no phrases in it", path.display());
    }
    Ok(phrases)
}

impl Default for AsrConfig {
    fn default() -> Self {
        Self {
            model: None,
            device: DeviceChoice::Auto,
            compute_type: ComputeType::Auto,
            language: None,
            languages: Vec::new(),
            initial_prompt: None,
            vad: true,
            short_context_s: None,
            hotwords: None,
            hotword_bonus: DEFAULT_HOTWORD_BONUS,
            rescore: None,
            rescore_margin: crate::asr::rescore::DEFAULT_MARGIN,
            beam_size: 1,
        }
    }
}

impl AsrConfig {
    /// Fetches the model on first use (see `model_store`) and loads it.
    pub fn load(&self) -> Result<Transcriber> {
        // A config file is checked when parsed; flags are checked here.
        self.validate().map_err(anyhow::Error::msg)?;
        let store = ModelStore::open()?;
        let files = store.resolve(self.model.as_deref())?;
        let device = self.device.open()?;
        tracing::info!(model = %files.name, dir = %files.dir.display(), device = ?device, "loading model");
        let mut transcriber = Transcriber::load_as(&files, device, self.compute_type)?;
        if let Some(path) = &self.hotwords {
            transcriber
                .set_hotwords(&read_hotwords(path)?, self.hotword_bonus)
                .with_context(|| format!("hotwords {}", path.display()))?;
        }
        if let Some(path) = &self.rescore {
            transcriber
                .set_rescoring(&read_phrase_list(path, "rescore")?, self.rescore_margin)
                .with_context(|| format!("rescore {}", path.display()))?;
        }
        Ok(transcriber)
    }

    /// Decoding options. With a multilingual model and no language chosen, detection is
    /// limited to `pack_languages` (the languages the detector can score).
    pub fn options(&self, multilingual: bool, pack_languages: &[&str]) -> TranscribeOptions {
        let mut candidate_languages = self.languages.clone();
        if multilingual && self.language.is_none() && candidate_languages.is_empty() {
            candidate_languages = pack_languages.iter().map(|l| l.to_string()).collect();
        }
        TranscribeOptions {
            language: self.language.clone(),
            candidate_languages,
            initial_prompt: self.initial_prompt.clone(),
            short_context_frames: Some(
                ((self.short_context_s.unwrap_or(DEFAULT_SHORT_CONTEXT_S) * 50.0).round() as usize)
                    * 2,
            ),
            vad: if self.vad {
                TranscribeOptions::default().vad
            } else {
                None
            },
            policy: FallbackPolicy {
                beam_size: self.beam_size,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn validate(&self) -> std::result::Result<(), String> {
        crate::asr::bias::check_bonus(self.hotword_bonus)
            .map_err(|e| format!("hotword_bonus {e}"))?;
        crate::asr::rescore::check_margin(self.rescore_margin)
            .map_err(|e| format!("rescore_margin: {e}"))?;
        crate::asr::decode::check_beam_size(self.beam_size)?;
        if let Some(s) = self.short_context_s {
            if !(s.is_finite() && s > 0.0 && s <= 30.0) {
                return Err(format!(
                    "short_context_s must be between 0 and 30 seconds, not {s}"
                ));
            }
        }
        Ok(())
    }
}

/// `[detect]`: the phrase packs and the context check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectConfig {
    /// Phrase packs to use instead of the built-in ones (one per language).
    pub packs: Vec<PathBuf>,
    /// The context check's sentence encoder: a catalog name (fetched on first use) or a folder.
    pub encoder: String,
    /// Embed the words around each English match and discount those unlike a scam script
    /// (about 2x fewer false alarms on casual talk about crime or money); off: keywords only.
    pub context_check: bool,
    /// Read the whole call with the packs' call models (they veto flagged calls that read as
    /// honest and lift ones with cues that read as scams; they need the context check, and
    /// do nothing without it). On by default.
    pub call_model: bool,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            packs: Vec::new(),
            encoder: "minilm".into(),
            context_check: true,
            call_model: true,
        }
    }
}

impl DetectConfig {
    pub fn load(&self) -> Result<Classifier> {
        let mut classifier = if self.packs.is_empty() {
            Classifier::builtin()
        } else {
            let loaded = self
                .packs
                .iter()
                .map(|p| PhrasePack::load(p).map_err(anyhow::Error::from))
                .collect::<Result<Vec<_>>>()?;
            Classifier::with_packs(loaded)
        };
        if self.context_check {
            classifier.context_check = Some(Arc::new(ContextCheck::load(Some(&self.encoder))?));
        }
        classifier.call_model = self.call_model;
        Ok(classifier)
    }
}

/// `[[sources]]`, by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceConfig {
    File(FileSourceConfig),
    Device(DeviceSourceConfig),
}

impl SourceConfig {
    pub fn build(&self) -> Result<Box<dyn Source>> {
        match self {
            SourceConfig::File(c) => Ok(Box::new(FileSource::new(c.clone()))),
            SourceConfig::Device(c) => device_source(c),
        }
    }
}

#[cfg(feature = "capture")]
fn device_source(c: &DeviceSourceConfig) -> Result<Box<dyn Source>> {
    Ok(Box::new(crate::sources::device::DeviceSource::new(
        c.clone(),
    )))
}

#[cfg(not(feature = "capture"))]
fn device_source(_: &DeviceSourceConfig) -> Result<Box<dyn Source>> {
    anyhow::bail!("this build has no sound-device capture: use a file source (--from-file), or build with `--features capture` (needs libasound2-dev)")
}

/// `[[sinks]]`, by `type`; each has a `[sinks.queue]` (capacity, overflow = "spill"|"drop").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SinkConfig {
    Stdout(StdoutConfig),
    Terminal(TerminalConfig),
    AlertFile(AlertFileConfig),
    Webhook(WebhookConfig),
    Nats(NatsConfig),
}

impl SinkConfig {
    /// Opens the sink (its file, its outbox and deliverer), redacting when it asks to.
    pub fn build(&self) -> Result<SinkSpec> {
        let (sink, queue, redact): (Box<dyn Sink>, _, _) = match self {
            SinkConfig::Stdout(c) => (Box::new(JsonLines::new(c)), &c.queue, c.redact),
            SinkConfig::Terminal(c) => (Box::new(TerminalView::new()), &c.queue, c.redact),
            SinkConfig::AlertFile(c) => (Box::new(AlertFile::open(&c.path)?), &c.queue, c.redact),
            SinkConfig::Webhook(c) => (Box::new(WebhookSink::start(c)?), &c.queue, c.redact),
            SinkConfig::Nats(c) => (Box::new(NatsSink::start(c)?), &c.queue, c.redact),
        };
        let sink = if redact {
            Box::new(Redacted(sink))
        } else {
            sink
        };
        Ok(SinkSpec {
            sink,
            queue: queue.clone(),
        })
    }

    fn queue_capacity(&self) -> usize {
        match self {
            SinkConfig::Stdout(c) => c.queue.capacity,
            SinkConfig::Terminal(c) => c.queue.capacity,
            SinkConfig::AlertFile(c) => c.queue.capacity,
            SinkConfig::Webhook(c) => c.queue.capacity,
            SinkConfig::Nats(c) => c.queue.capacity,
        }
    }
}

impl Config {
    /// Reads and checks a config file. Errors name the file, the key and its line.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Parses and checks config text.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let written: Written = toml::from_str(text).map_err(|e| e.to_string().trim().to_owned())?;
        let config = Config {
            asr: written.asr,
            detect: written.detect,
            engine: written.engine,
            sources: components(text, "sources", written.sources)?,
            sinks: components(text, "sinks", written.sinks)?,
            server: written.server,
            nats: written.nats,
        };
        config
            .validate()
            .map_err(|(key, problem)| match line_of(text, 0..text.len(), &key) {
                Some(line) => format!("line {line}: {key}: {problem}"),
                None => format!("{key}: {problem}"),
            })?;
        Ok(config)
    }

    /// The first bad value: its key (dotted path) and what is wrong.
    pub fn validate(&self) -> std::result::Result<(), (String, String)> {
        let split = |section: &str, e: String| -> (String, String) {
            match e.split_once(' ') {
                Some((key, rest)) => (format!("{section}.{key}"), rest.to_owned()),
                None => (section.to_owned(), e),
            }
        };
        self.asr.validate().map_err(|e| split("asr", e))?;
        self.engine.validate().map_err(|e| split("engine", e))?;
        self.server.validate().map_err(|e| split("server", e))?;
        // Without servers, the section is unused or the broker comes from a flag (--nats),
        // which `serve` checks for once flags are in.
        if !self.nats.servers.is_empty() {
            self.nats
                .validate()
                .map_err(|(key, problem)| (format!("nats.{key}"), problem))?;
        }
        if self.server.role == Role::Ingest && !self.sinks.is_empty() {
            return Err((
                "sinks".into(),
                "an ingest hears nothing, so it has no sinks: give them to the workers".into(),
            ));
        }
        for (i, s) in self.sinks.iter().enumerate() {
            if s.queue_capacity() == 0 {
                return Err((
                    format!("sinks[{i}].queue.capacity"),
                    "must be at least 1".into(),
                ));
            }
            if let SinkConfig::Nats(n) = s {
                n.validate()
                    .map_err(|(key, problem)| (format!("sinks[{i}].{key}"), problem))?;
            }
            if let SinkConfig::Webhook(w) = s {
                crate::sinks::webhook::check_url(&w.url)
                    .map_err(|problem| (format!("sinks[{i}].url"), problem))?;
            }
        }
        Ok(())
    }

    /// The config as TOML (what `--print-config` shows).
    pub fn to_toml(&self) -> Result<String> {
        Ok(toml::to_string(self)?)
    }
}

/// The config as written: each source and sink kept as a table with its place in the text,
/// so an error inside one names its line (serde's tagged enums lose positions).
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Written {
    asr: AsrConfig,
    detect: DetectConfig,
    engine: EngineConfig,
    sources: Vec<toml::Spanned<toml::Table>>,
    sinks: Vec<toml::Spanned<toml::Table>>,
    server: ServerConfig,
    nats: RelayConfig,
}

/// `[[sources]]` or `[[sinks]]` tables read one by one: an error names the table, the key and
/// the key's line.
fn components<T: serde::de::DeserializeOwned>(
    text: &str,
    kind: &str,
    tables: Vec<toml::Spanned<toml::Table>>,
) -> std::result::Result<Vec<T>, String> {
    tables
        .into_iter()
        .enumerate()
        .map(|(i, table)| {
            // The span may cover only the `[[...]]` header: the table runs to the next header.
            let start = table.span().start.min(text.len());
            let end = text
                .get(start..)
                .and_then(|rest| rest.find("\n["))
                .map_or(text.len(), |i| start + i);
            let span = start..end;
            toml::Value::Table(table.into_inner())
                .try_into::<T>()
                .map_err(|e| {
                    let message = e.message().to_owned();
                    // serde names the offending key between backticks.
                    let key = message.split('`').nth(1).unwrap_or("type");
                    let line = line_of(text, span.clone(), key)
                        .unwrap_or_else(|| text[..span.start].lines().count() + 1);
                    format!("line {line}: {kind}[{i}]: {message}")
                })
        })
        .collect()
}

/// The line (1-based) where `key`'s last component is set within `within` (byte offsets of
/// `text`), for error messages.
fn line_of(text: &str, within: std::ops::Range<usize>, key: &str) -> Option<usize> {
    let last = key.rsplit('.').next()?;
    let last = last.split('[').next()?;
    let before = text[..within.start].lines().count();
    let start_of_line = text[..within.start].ends_with('\n') || within.start == 0;
    let offset = if start_of_line { before } else { before - 1 };
    text[within]
        .lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(last)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| offset + i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_is_valid_and_says_what_it_sets() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/listen.example.toml"),
        )
        .unwrap();
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.engine.asr_workers, 2);
        assert!(matches!(c.sources[0], SourceConfig::File(_)));
        assert!(c
            .sinks
            .iter()
            .any(|s| matches!(s, SinkConfig::Webhook(w) if w.url.starts_with("http"))));
        // What --print-config writes reads back the same.
        let again = Config::parse(&c.to_toml().unwrap()).unwrap();
        assert_eq!(again, c);
        let serve = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/serve.example.toml"),
        )
        .unwrap();
        let s = Config::parse(&serve).unwrap();
        assert_eq!(s.server.rtp_timeout_s, 30.0);
        assert!(matches!(&s.sinks[..], [SinkConfig::AlertFile(_)]));
    }

    #[test]
    fn bad_keys_and_values_are_named_with_their_line() {
        let typo = Config::parse("[engine]\nasr_wokers = 2\n").unwrap_err();
        assert!(
            typo.contains("asr_wokers") && typo.contains("line 2"),
            "{typo}"
        );
        let zero = Config::parse("# workers\n[engine]\nasr_workers = 0\n").unwrap_err();
        assert!(
            zero.contains("engine.asr_workers") && zero.contains("line 3"),
            "{zero}"
        );
        let cut = Config::parse("[engine.utterances]\nmax_utterance_s = -1\n").unwrap_err();
        assert!(cut.contains("engine.utterances.max_utterance_s"), "{cut}");
        let sink = Config::parse("[[sinks]]\ntype = \"carrier_pigeon\"\n").unwrap_err();
        assert!(sink.contains("carrier_pigeon"), "{sink}");
        let field = Config::parse("[[sinks]]\ntype = \"stdout\"\ncolour = true\n").unwrap_err();
        assert!(field.contains("colour"), "{field}");
        // Inside the second of two sinks: its key and line, not the first table's.
        let second = Config::parse(
            "[[sinks]]\ntype = \"stdout\"\n\n[[sinks]]\ntype = \"webhook\"\nurll = \"http://x\"\n",
        )
        .unwrap_err();
        assert!(
            second.contains("line 6") && second.contains("sinks[1]") && second.contains("urll"),
            "{second}"
        );
        let typed = Config::parse("[[sources]]\ntype = \"file\"\npath = 5\n").unwrap_err();
        assert!(
            typed.contains("sources[0]") && typed.contains("line"),
            "{typed}"
        );
        let empty = Config::parse("").unwrap();
        assert_eq!(empty, Config::default());
        // Values a validator had let through to a crash at the first call or at start.
        for (text, key) in [
            // A queue allocated whole per call: 72 PB at the first call.
            (
                "[engine]\ncall_queue_chunks = 1000000000000000\n",
                "call_queue_chunks",
            ),
            // Past what a Duration holds: a panic in the worker's stream setup.
            (
                "[nats]\nservers = [\"nats://b:4222\"]\nevents_max_age_days = 1e300\n",
                "events_max_age_days",
            ),
            (
                "[nats]\nservers = [\"nats://b:4222\"]\nconsumer = \"%s\"\n",
                "consumer",
            ),
            (
                "[nats]\nservers = [\"nats://b:4222\"]\nspool = \"\"\n",
                "spool",
            ),
            (
                "[nats]\nservers = [\"nats://b:4222\"]\nevents_outbox = \"\"\n",
                "events_outbox",
            ),
            (
                "[nats]\nservers = [\"nats://b:4222\"]\ntoken = \"\"\n",
                "token",
            ),
        ] {
            let text = text.replace("%s", &"c".repeat(300));
            let e = Config::parse(&text).unwrap_err();
            assert!(e.contains(key), "{text}: {e}");
        }
    }
}
