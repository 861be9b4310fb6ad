//! Audio stages: decoding files, resampling to 16 kHz, choosing channels.

pub mod decode;
pub mod resample;
pub mod vad;

use std::path::Path;

pub use decode::{decode_file, DecodeError, DecodedAudio};
pub use resample::TARGET_RATE;

/// How stereo call recordings are treated.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ChannelMode {
    /// Each channel is its own party (agent and customer), transcribed apart.
    Split,
    /// All channels are averaged into one.
    Mix,
}

/// One party's audio at 16 kHz.
#[derive(Debug, Clone)]
pub struct ChannelAudio {
    /// Channel index in the file; `None` for a mix of all channels.
    pub channel: Option<usize>,
    pub samples: Vec<f32>,
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
