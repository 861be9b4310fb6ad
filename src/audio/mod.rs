//! Audio stages: decoding files, resampling to 16 kHz (whole files and live streams), choosing
//! channels, voice activity, and cutting live streams into utterances.

pub mod decode;
pub mod g711;
pub mod resample;
pub mod utterance;
pub mod vad;

use std::path::Path;

pub use decode::{decode_file, AudioReader, DecodeError, DecodedAudio, SampleRepairs};
pub use resample::{AlignedResampler, StreamResampler, TARGET_RATE};

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

/// Whether a file's channels carry the same signal (a mono call saved as stereo, perhaps
/// through a lossy codec): the energy of each channel's difference from the first, against
/// the first's energy.
struct ChannelLikeness {
    energy: f64,
    difference: Vec<f64>,
}

/// Channels whose difference is 40 dB below the signal are one party. Two parties of a real
/// call differ by far more (each is silent while the other speaks).
const SAME_CHANNEL_RATIO: f64 = 1e-4;

impl ChannelLikeness {
    fn new(n: usize) -> Self {
        Self {
            energy: 0.0,
            difference: vec![0.0; n.saturating_sub(1)],
        }
    }

    fn add(&mut self, chunk: &[Vec<f32>]) {
        let Some((first, rest)) = chunk.split_first() else {
            return;
        };
        self.energy += first.iter().map(|&s| (s as f64).powi(2)).sum::<f64>();
        for (d, c) in self.difference.iter_mut().zip(rest) {
            *d += first
                .iter()
                .zip(c)
                .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
                .sum::<f64>();
        }
    }

    fn same(&self, path: &Path) -> bool {
        if self.difference.is_empty() {
            return false;
        }
        let worst = self.difference.iter().cloned().fold(0.0, f64::max);
        tracing::debug!(
            "{}: channel difference {:.1} dB below the first channel",
            path.display(),
            10.0 * (self.energy / worst.max(1e-30)).log10()
        );
        worst <= SAME_CHANNEL_RATIO * self.energy
    }
}

/// Decodes a file and returns its parties at 16 kHz mono.
///
/// The file is decoded and resampled chunk by chunk, so that memory holds the 16 kHz parties
/// and one chunk at the file's rate, not the whole file at its rate. Channels that are sample
/// for sample identical (a mono call saved as stereo) are one party, heard once.
pub fn load_16k(path: &Path, mode: ChannelMode) -> anyhow::Result<Vec<ChannelAudio>> {
    let mut reader = AudioReader::open(path)?;
    let rate = reader.sample_rate();
    let n = reader.channel_count();
    let mut likeness = ChannelLikeness::new(n);
    // Split: one resampler per channel (merged into one at the end when all are identical);
    // mix (or mono): one.
    let lanes = if mode == ChannelMode::Split { n } else { 1 };
    let mut resamplers = (0..lanes)
        .map(|_| AlignedResampler::new(rate))
        .collect::<Result<Vec<_>, _>>()?;
    let mut outputs = vec![Vec::new(); lanes];
    while let Some(chunk) = reader.next_chunk()? {
        likeness.add(&chunk);
        if lanes == 1 {
            let mono = if n == 1 {
                chunk.into_iter().next().unwrap_or_default()
            } else {
                decode::mix(&chunk)
            };
            resamplers[0].push(&mono, &mut outputs[0])?;
        } else {
            for ((r, out), c) in resamplers.iter_mut().zip(&mut outputs).zip(&chunk) {
                r.push(c, out)?;
            }
        }
    }
    reader.finish()?;
    for (r, out) in resamplers.into_iter().zip(&mut outputs) {
        r.finish(out)?;
    }
    let identical = likeness.same(path);
    if lanes == 1 || identical {
        if identical && lanes > 1 {
            tracing::info!(
                "{}: its {n} channels are identical; heard once as one party",
                path.display()
            );
        }
        outputs.truncate(1);
        let samples = outputs.pop().unwrap_or_default();
        return Ok(vec![ChannelAudio {
            channel: None,
            samples,
        }]);
    }
    Ok(outputs
        .into_iter()
        .enumerate()
        .map(|(i, samples)| ChannelAudio {
            channel: Some(i),
            samples,
        })
        .collect())
}
