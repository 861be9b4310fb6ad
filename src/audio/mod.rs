//! Audio stages: decoding files, resampling to 16 kHz (whole files and live streams), choosing
//! channels, voice activity, and cutting live streams into utterances.

pub mod decode;
pub mod g711;
pub mod resample;
pub mod utterance;
pub mod vad;

use std::path::Path;

pub use decode::{decode_file, DecodeError, DecodedAudio};
pub use resample::{StreamResampler, TARGET_RATE};

/// How stereo call recordings are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelMode {
    /// Each channel is its own party (agent and customer), transcribed apart.
    #[default]
    Split,
    /// All channels are averaged into one.
    Mix,
}

impl ChannelMode {
    /// The names it is written as (in configs and on the command line).
    pub const NAMES: [&'static str; 2] = ["split", "mix"];
}

/// One party's audio at 16 kHz.
#[derive(Debug, Clone)]
pub struct ChannelAudio {
    /// Channel index in the file; `None` for a mix of all channels.
    pub channel: Option<usize>,
    pub samples: Vec<f32>,
}

impl ChannelAudio {
    /// The party's label in call records: "channel N", or "all channels" for a mono file or
    /// a mix.
    pub fn label(&self) -> String {
        party_label(self.channel)
    }
}

/// The label of a party taken from a file or device: "channel N", or "all channels".
pub fn party_label(channel: Option<usize>) -> String {
    match channel {
        Some(c) => format!("channel {c}"),
        None => "all channels".to_owned(),
    }
}

/// Decodes a file and returns its parties at 16 kHz mono.
pub fn load_16k(path: &Path, mode: ChannelMode) -> anyhow::Result<Vec<ChannelAudio>> {
    let decoded = decode_file(path)?;
    prepare(&decoded, mode)
}

pub fn prepare(decoded: &DecodedAudio, mode: ChannelMode) -> anyhow::Result<Vec<ChannelAudio>> {
    let rate = decoded.sample_rate;
    match (mode, decoded.channels.len()) {
        (_, 1) => Ok(vec![ChannelAudio {
            channel: None,
            samples: resample::to_16k(&decoded.channels[0], rate)?,
        }]),
        (ChannelMode::Mix, _) => Ok(vec![ChannelAudio {
            channel: None,
            samples: resample::to_16k(&decoded.mixed(), rate)?,
        }]),
        (ChannelMode::Split, _) => decoded
            .channels
            .iter()
            .enumerate()
            .map(|(i, c)| {
                Ok(ChannelAudio {
                    channel: Some(i),
                    samples: resample::to_16k(c, rate)?,
                })
            })
            .collect(),
    }
}
