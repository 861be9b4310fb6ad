//! Audio stages: decoding files, resampling to 16 kHz (whole files and live streams), choosing
//! channels, voice activity, and cutting live streams into utterances.

pub mod decode;
pub mod g711;
pub mod g711_batch;
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

/// Decodes a file and returns its parties at 16 kHz mono, whole (see [`PartyStream`] for
/// the same audio in chunks, which `scan`, `score` and `transcribe` use).
pub fn load_16k(path: &Path, mode: ChannelMode) -> anyhow::Result<Vec<ChannelAudio>> {
    let mut stream = PartyStream::open(path, mode)?;
    let parties = stream.parties()?.to_vec();
    let mut outputs = vec![Vec::new(); parties.len()];
    while let Some(chunk) = stream.next_chunk()? {
        for (out, c) in outputs.iter_mut().zip(chunk) {
            out.extend_from_slice(&c);
        }
    }
    stream.finish()?;
    Ok(parties
        .into_iter()
        .zip(outputs)
        .map(|(channel, samples)| ChannelAudio { channel, samples })
        .collect())
}

/// Whether channels are one party is decided on at least this much audio (seconds, at the
/// file's rate) holding some signal ...
const DECIDE_AFTER_S: u64 = 30;
/// ... or on this much, whatever it holds (or on the whole file, when shorter).
const DECIDE_BY_S: u64 = 120;

/// Split mode hears each channel as its own party, at most this many: a file with more
/// distinct channels is a conference bridge or a multitrack session, not a call, and would
/// cost one transcription per channel.
pub const MAX_SPLIT_PARTIES: usize = 8;

/// A file's parties at 16 kHz, decoded and resampled chunk by chunk, so that memory holds a
/// chunk, not the file.
///
/// Channels that carry the same signal (a mono call saved as stereo, perhaps through a lossy
/// codec: their difference 40 dB below the signal) are one party, heard once. That is decided
/// on the first 30 s that hold signal (at most the first 120 s): until then the parties'
/// audio waits in memory (at most 120 s x 64 kB/s per channel).
pub struct PartyStream {
    path: std::path::PathBuf,
    reader: AudioReader,
    channels: usize,
    likeness: ChannelLikeness,
    /// One per lane: each channel in split mode, one for a mono file or a mix.
    resamplers: Vec<AlignedResampler>,
    /// 16 kHz audio resampled and not yet handed out, per lane.
    waiting: Vec<Vec<f32>>,
    /// The parties' channels, once decided (`None`: mono, mix, or identical channels).
    parties: Option<Vec<Option<usize>>>,
    /// Frames read at the file's rate.
    frames_in: u64,
    /// Channels found identical: only the first is heard.
    first_only: bool,
    ended: bool,
}

impl PartyStream {
    /// Opens `path`. Errors: those of [`AudioReader::open`] and [`AlignedResampler::new`].
    pub fn open(path: &Path, mode: ChannelMode) -> anyhow::Result<Self> {
        let reader = AudioReader::open(path)?;
        let channels = reader.channel_count();
        let lanes = if mode == ChannelMode::Split {
            channels
        } else {
            1
        };
        let resamplers = (0..lanes)
            .map(|_| AlignedResampler::new(reader.sample_rate()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            path: path.to_owned(),
            likeness: ChannelLikeness::new(channels),
            channels,
            waiting: vec![Vec::new(); lanes],
            parties: (lanes == 1).then(|| vec![None]),
            resamplers,
            reader,
            frames_in: 0,
            first_only: false,
            ended: false,
        })
    }

    /// The parties' channels, in the order [`next_chunk`](Self::next_chunk) gives their
    /// audio: `None` for a mono file, a mix, or channels found identical. Reads ahead (up to
    /// 120 s) to decide. Errors: the file cannot be decoded, or split mode would hear more
    /// than [`MAX_SPLIT_PARTIES`] distinct channels.
    pub fn parties(&mut self) -> anyhow::Result<&[Option<usize>]> {
        while self.parties.is_none() {
            let rate = self.reader.sample_rate() as u64;
            let seen = self.frames_in;
            let signal = self.likeness.energy >= rate as f64 * 1e-4; // ~1 s at -40 dBFS
            if self.ended || (seen >= DECIDE_AFTER_S * rate && signal) || seen >= DECIDE_BY_S * rate
            {
                let same = self.likeness.same(&self.path) && (signal || self.ended);
                if same {
                    tracing::info!(
                        "{}: its {} channels are identical; heard once as one party",
                        self.path.display(),
                        self.channels
                    );
                    self.resamplers.truncate(1);
                    self.waiting.truncate(1);
                    self.first_only = true;
                    self.parties = Some(vec![None]);
                } else if self.channels > MAX_SPLIT_PARTIES {
                    anyhow::bail!(
                        "{} distinct channels: split mode hears at most {MAX_SPLIT_PARTIES}, one \
                         party each (--channels mix hears them as one)",
                        self.channels
                    );
                } else {
                    self.parties = Some((0..self.channels).map(Some).collect());
                }
            } else {
                self.pull()?;
            }
        }
        Ok(self.parties.as_deref().unwrap_or_default())
    }

    /// The next 16 kHz chunk of each party (all the same length), `None` at the end.
    pub fn next_chunk(&mut self) -> anyhow::Result<Option<Vec<Vec<f32>>>> {
        self.parties()?;
        loop {
            if self.waiting.first().is_some_and(|w| !w.is_empty()) {
                let lanes = self.waiting.len();
                let out = std::mem::replace(&mut self.waiting, vec![Vec::new(); lanes]);
                return Ok(Some(out));
            }
            if self.ended {
                return Ok(None);
            }
            self.pull()?;
        }
    }

    /// Ends the read, after [`next_chunk`](Self::next_chunk) returned `None`: reports the
    /// samples repaired. Errors: the file held no samples.
    pub fn finish(&mut self) -> anyhow::Result<()> {
        self.reader.finish()?;
        Ok(())
    }

    /// Reads one chunk of the file into `waiting`.
    fn pull(&mut self) -> anyhow::Result<()> {
        let Some(chunk) = self.reader.next_chunk()? else {
            for (r, out) in self.resamplers.drain(..).zip(&mut self.waiting) {
                r.finish(out)?;
            }
            self.ended = true;
            return Ok(());
        };
        self.frames_in += chunk.first().map_or(0, Vec::len) as u64;
        if self.parties.is_none() {
            self.likeness.add(&chunk);
        }
        if self.resamplers.len() == 1 {
            let mono = if self.channels == 1 || self.first_only {
                chunk.into_iter().next().unwrap_or_default()
            } else {
                decode::mix(&chunk)
            };
            self.resamplers[0].push(&mono, &mut self.waiting[0])?;
        } else {
            for ((r, out), c) in self
                .resamplers
                .iter_mut()
                .zip(&mut self.waiting)
                .zip(&chunk)
            {
                r.push(c, out)?;
            }
        }
        Ok(())
    }
}
