//! Flag groups shared by several subcommands. Each fills the same config structs a config file
//! does ([`crate::config`]), so what a flag says is what runs.

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::Args;
use serde::de::DeserializeOwned;

use crate::asr::DeviceChoice;
use crate::audio::ChannelMode;
use crate::config::{AsrConfig, DetectConfig};

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

/// Options of every command that runs speech recognition.
#[derive(Args, Debug, Clone, Default)]
pub struct AsrArgs {
    /// Catalog model name (see `vishguard models list`) or a path to a model folder or wheel.
    #[arg(long)]
    pub model: Option<String>,
    /// Where the model runs [default: cpu].
    #[arg(long, value_parser = choice::<DeviceChoice>(&DeviceChoice::NAMES))]
    pub device: Option<DeviceChoice>,
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
    /// (faster; Whisper was trained on 30 s windows, so check accuracy on your audio)
    /// [default: 30 for recordings, 15 for live utterances].
    #[arg(long)]
    pub short_context_s: Option<f64>,
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
    }

    pub fn config(&self) -> DetectConfig {
        let mut config = DetectConfig::default();
        self.apply(&mut config);
        config
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
