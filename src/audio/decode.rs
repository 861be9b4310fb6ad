//! Reads audio files into per-channel float samples: WAV (PCM, float) through `hound`, and
//! everything else symphonia knows (G.711 WAV, FLAC, MP3, Ogg Vorbis).

use std::path::Path;

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::DecoderOptions;
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

/// Decoded audio at its own rate: one `Vec` of samples in [-1, 1] per channel.
#[derive(Debug, Clone)]
pub struct DecodedAudio {
    pub sample_rate: u32,
    pub channels: Vec<Vec<f32>>,
}

impl DecodedAudio {
    /// All channels averaged into one, as long as the shortest channel.
    pub fn mixed(&self) -> Vec<f32> {
        let n = self.channels.len().max(1) as f32;
        let len = self.channels.iter().map(Vec::len).min().unwrap_or(0);
        (0..len)
            .map(|i| self.channels.iter().map(|c| c[i]).sum::<f32>() / n)
            .collect()
    }

    pub fn duration_s(&self) -> f64 {
        self.channels.first().map_or(0.0, |c| c.len() as f64) / self.sample_rate as f64
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    // The cause is in the message, not chained as a source: a chain would print it twice.
    #[error("{path}: cannot open: {cause}")]
    Open { path: String, cause: std::io::Error },
    #[error("{path}: not a supported audio file: {problem}")]
    Unsupported { path: String, problem: String },
    #[error("{path}: corrupt or truncated audio: {problem}")]
    Corrupt { path: String, problem: String },
    #[error("{path}: no audio samples in the file")]
    Empty { path: String },
}

pub fn decode_file(path: &Path) -> Result<DecodedAudio, DecodeError> {
    let name = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|cause| DecodeError::Open {
        path: name.clone(),
        cause,
    })?;
    let is_wav = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("wav") || e.eq_ignore_ascii_case("wave"));
    let audio = if is_wav {
        match hound::WavReader::new(std::io::BufReader::new(file)) {
            Ok(reader) => decode_wav(&name, reader)?,
            // hound reads PCM and float only; G.711 and other codecs in a WAV go to symphonia.
            Err(hound::Error::Unsupported) => decode_with_symphonia(&name, path)?,
            Err(e) => {
                return Err(DecodeError::Corrupt {
                    path: name,
                    problem: e.to_string(),
                })
            }
        }
    } else {
        decode_with_symphonia(&name, path)?
    };
    if audio.channels.iter().all(Vec::is_empty) {
        return Err(DecodeError::Empty { path: name });
    }
    Ok(audio)
}

fn decode_wav<R: std::io::Read>(
    name: &str,
    reader: hound::WavReader<R>,
) -> Result<DecodedAudio, DecodeError> {
    let spec = reader.spec();
    let n_channels = spec.channels as usize;
    if n_channels == 0 || spec.sample_rate == 0 {
        return Err(DecodeError::Unsupported {
            path: name.into(),
            problem: format!("{} channels at {} Hz", spec.channels, spec.sample_rate),
        });
    }
    let corrupt = |e: hound::Error| DecodeError::Corrupt {
        path: name.into(),
        problem: e.to_string(),
    };
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => {
            collect_lenient(reader.into_samples::<f32>(), |s| s).map_err(corrupt)?
        }
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample - 1)) as f32;
            collect_lenient(reader.into_samples::<i32>(), |s| s as f32 * scale).map_err(corrupt)?
        }
    };
    let mut channels = vec![Vec::with_capacity(interleaved.len() / n_channels); n_channels];
    for frame in interleaved.chunks_exact(n_channels) {
        for (c, &s) in frame.iter().enumerate() {
            channels[c].push(s);
        }
    }
    Ok(DecodedAudio {
        sample_rate: spec.sample_rate,
        channels,
    })
}

/// Keeps the samples read before a truncation: a recording cut short mid-write is still worth
/// transcribing. Any other error is reported.
fn collect_lenient<T, I>(samples: I, map: impl Fn(T) -> f32) -> Result<Vec<f32>, hound::Error>
where
    I: Iterator<Item = Result<T, hound::Error>>,
{
    let mut out = Vec::new();
    for s in samples {
        match s {
            Ok(v) => out.push(map(v)),
            Err(hound::Error::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                tracing::warn!(
                    "audio ends early (truncated file); using the {} samples read",
                    out.len()
                );
                break;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

fn decode_with_symphonia(name: &str, path: &Path) -> Result<DecodedAudio, DecodeError> {
    let unsupported = |problem: String| DecodeError::Unsupported {
        path: name.into(),
        problem,
    };
    let file = std::fs::File::open(path).map_err(|cause| DecodeError::Open {
        path: name.into(),
        cause,
    })?;
    let stream = MediaSourceStream::new(Box::new(file), Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    let probed = symphonia::default::get_probe()
        .format(
            &hint,
            stream,
            &FormatOptions::default(),
            &MetadataOptions::default(),
        )
        .map_err(|e| unsupported(e.to_string()))?;
    let mut format = probed.format;
    let track = format
        .default_track()
        .ok_or_else(|| unsupported("no audio track".into()))?;
    let track_id = track.id;
    let params = track.codec_params.clone();
    let mut decoder = symphonia::default::get_codecs()
        .make(&params, &DecoderOptions::default())
        .map_err(|e| unsupported(e.to_string()))?;
    let mut sample_rate = params.sample_rate.unwrap_or(0);
    let mut channels: Vec<Vec<f32>> = Vec::new();
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                break
            }
            Err(SymphoniaError::ResetRequired) => break,
            Err(e) => {
                if channels.first().is_some_and(|c| !c.is_empty()) {
                    tracing::warn!("{name}: stopped reading at a damaged packet ({e}); keeping what was decoded");
                    break;
                }
                return Err(DecodeError::Corrupt {
                    path: name.into(),
                    problem: e.to_string(),
                });
            }
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = match decoder.decode(&packet) {
            Ok(d) => d,
            // One damaged frame loses a few milliseconds, not the call.
            Err(SymphoniaError::DecodeError(e)) => {
                tracing::warn!("{name}: skipping an undecodable frame: {e}");
                continue;
            }
            Err(e) => {
                return Err(DecodeError::Corrupt {
                    path: name.into(),
                    problem: e.to_string(),
                })
            }
        };
        let spec = *decoded.spec();
        sample_rate = spec.rate;
        let n = spec.channels.count();
        if channels.is_empty() {
            channels = vec![Vec::new(); n];
        }
        if n != channels.len() {
            return Err(DecodeError::Corrupt {
                path: name.into(),
                problem: format!("channel count changed from {} to {n}", channels.len()),
            });
        }
        let mut buf = SampleBuffer::<f32>::new(decoded.capacity() as u64, spec);
        buf.copy_interleaved_ref(decoded);
        for frame in buf.samples().chunks_exact(n) {
            for (c, &s) in frame.iter().enumerate() {
                channels[c].push(s);
            }
        }
    }
    if sample_rate == 0 {
        return Err(unsupported("unknown sample rate".into()));
    }
    Ok(DecodedAudio {
        sample_rate,
        channels,
    })
}
