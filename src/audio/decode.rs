//! Reads audio files into per-channel float samples, chunk by chunk.
//!
//! The format is found from the content, never from the file's name: an MP3 named `.wav` is
//! an MP3. symphonia reads first (WAV in all its variants: PCM, float, G.711, IMA and MS ADPCM,
//! WAVE_FORMAT_EXTENSIBLE scaled by its container; FLAC, MP3, Ogg Vorbis, Matroska); a RIFF
//! file it refuses is tried with `hound` before giving up, and the error then names both
//! readers' reasons. What the readers cannot know is fixed here: a damaged packet or a
//! truncated last sample ends the audio instead of losing it, and samples that are not finite
//! or lie outside [-1, 1] (a float WAV with one sample of 1e30 would otherwise flatten the
//! whole log-mel spectrogram to its floor) are replaced or clipped and reported once.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{Decoder, DecoderOptions};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::{MediaSource, MediaSourceStream};
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
        mix(&self.channels)
    }

    pub fn duration_s(&self) -> f64 {
        self.channels.first().map_or(0.0, |c| c.len() as f64) / self.sample_rate as f64
    }
}

/// All channels averaged into one, as long as the shortest channel.
pub fn mix(channels: &[Vec<f32>]) -> Vec<f32> {
    let n = channels.len().max(1) as f32;
    let len = channels.iter().map(Vec::len).min().unwrap_or(0);
    (0..len)
        .map(|i| channels.iter().map(|c| c[i]).sum::<f32>() / n)
        .collect()
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

/// Reads a whole file. Errors: see [`AudioReader::open`] and [`AudioReader::next_chunk`];
/// [`DecodeError::Empty`] when it holds no samples.
pub fn decode_file(path: &Path) -> Result<DecodedAudio, DecodeError> {
    let mut reader = AudioReader::open(path)?;
    let mut channels = vec![Vec::new(); reader.channel_count()];
    while let Some(chunk) = reader.next_chunk()? {
        for (all, part) in channels.iter_mut().zip(chunk) {
            all.extend_from_slice(&part);
        }
    }
    reader.finish()?;
    Ok(DecodedAudio {
        sample_rate: reader.sample_rate(),
        channels,
    })
}

/// How many samples were not usable as they were; reported once, when the file is done.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct SampleRepairs {
    /// NaN or infinite samples, replaced by 0.
    pub not_finite: u64,
    /// Samples outside [-1, 1], clipped to it.
    pub clipped: u64,
    /// The largest magnitude among the clipped samples.
    pub peak: f32,
}

impl SampleRepairs {
    /// Replaces what is not finite by 0 and clips the rest to [-1, 1], counting both.
    pub fn repair(&mut self, samples: &mut [f32]) {
        for s in samples {
            if !s.is_finite() {
                self.not_finite += 1;
                *s = 0.0;
            } else if s.abs() > 1.0 {
                self.clipped += 1;
                self.peak = self.peak.max(s.abs());
                *s = s.clamp(-1.0, 1.0);
            }
        }
    }
}

/// Frames handed out per chunk (about 2 s at 48 kHz): bounded memory, whatever the file's
/// length.
const CHUNK_FRAMES: usize = 1 << 17;

/// A file being read: its rate and channel count are known on open; samples come in chunks.
pub struct AudioReader {
    name: String,
    sample_rate: u32,
    channel_count: usize,
    inner: Inner,
    repairs: SampleRepairs,
    frames: u64,
    done: bool,
}

enum Inner {
    Symphonia(Box<SymphoniaStream>),
    HoundFloat(hound::WavIntoSamples<BufReader<Box<dyn ByteSource>>, f32>),
    /// Integer samples and the scale that maps them into [-1, 1].
    HoundInt(
        hound::WavIntoSamples<BufReader<Box<dyn ByteSource>>, i32>,
        f32,
    ),
}

struct SymphoniaStream {
    format: Box<dyn FormatReader>,
    decoder: Box<dyn Decoder>,
    track_id: u32,
    /// Decoded on open to learn the rate and channel count when the container does not say.
    pending: Option<Vec<Vec<f32>>>,
    /// A damaged packet ended the audio.
    ended: bool,
}

impl AudioReader {
    /// Opens `path` and finds its format from the content.
    ///
    /// Errors: [`DecodeError::Open`] (I/O), [`DecodeError::Unsupported`] (no reader knows the
    /// format or codec; names each reader's reason), [`DecodeError::Corrupt`] (a known format
    /// whose header is damaged).
    pub fn open(path: &Path) -> Result<Self, DecodeError> {
        let name = path.display().to_string();
        let open_error = |cause| DecodeError::Open {
            path: name.clone(),
            cause,
        };
        // Opening a FIFO or a device waits for a writer that may never come: only regular
        // files (symlinks followed) are read.
        let meta = std::fs::metadata(path).map_err(open_error)?;
        if !meta.is_file() {
            let what = if meta.is_dir() {
                "a directory"
            } else {
                "not a regular file (a pipe, socket or device)"
            };
            return Err(DecodeError::Unsupported {
                path: name,
                problem: what.into(),
            });
        }
        Self::open_with(name.clone(), &|| {
            File::open(path)
                .map(|f| Box::new(f) as Box<dyn ByteSource>)
                .map_err(open_error)
        })
    }

    /// Reads audio held in memory (as [`open`](Self::open) reads a file); `name` is what
    /// errors call it.
    pub fn from_bytes(name: &str, bytes: std::sync::Arc<[u8]>) -> Result<Self, DecodeError> {
        Self::open_with(name.into(), &|| {
            Ok(Box::new(std::io::Cursor::new(ArcBytes(bytes.clone()))) as Box<dyn ByteSource>)
        })
    }

    fn open_with(
        name: String,
        open: &dyn Fn() -> Result<Box<dyn ByteSource>, DecodeError>,
    ) -> Result<Self, DecodeError> {
        let mut head = [0u8; 12];
        let mut first = open()?;
        let got = read_up_to(&mut first, &mut head).map_err(|cause| DecodeError::Open {
            path: name.clone(),
            cause,
        })?;
        if got == 0 {
            return Err(DecodeError::Empty { path: name });
        }
        let riff =
            got == 12 && matches!(&head[..4], b"RIFF" | b"RIFX" | b"RF64") && &head[8..] == b"WAVE";
        let mut tags_len = 0;
        if !riff {
            tags_len = leading_id3v2_len(&mut first);
            if let Err(problem) = check_flac_metadata(&mut first, tags_len) {
                return Err(DecodeError::Corrupt {
                    path: name,
                    problem,
                });
            }
        }
        let adapt = |inner, offset| {
            SourceAdapter::new(inner, offset).map_err(|cause| DecodeError::Open {
                path: name.clone(),
                cause,
            })
        };
        let source: Box<dyn MediaSource> = match riff.then(|| open().map(unknown_wav_sizes)) {
            Some(Ok(Ok(patched))) => Box::new(patched),
            Some(Ok(Err(unpatched))) => Box::new(adapt(unpatched, 0)?),
            Some(Err(e)) => return Err(e),
            None => Box::new(adapt(open()?, tags_len)?),
        };
        let symphonia = match open_symphonia(source) {
            Ok(stream) => return Ok(Self::new(name, stream)),
            Err(problem) => problem,
        };
        if riff {
            let hound = match hound::WavReader::new(BufReader::new(open()?)) {
                Ok(reader) => return Self::from_hound(name, reader),
                Err(e) => e.to_string(),
            };
            return Err(DecodeError::Unsupported {
                path: name,
                problem: format!(
                    "a WAV file that neither reader takes: symphonia: {symphonia}; hound: {hound}"
                ),
            });
        }
        Err(DecodeError::Unsupported {
            path: name,
            problem: symphonia,
        })
    }

    fn new(
        name: String,
        (stream, sample_rate, channel_count): (SymphoniaStream, u32, usize),
    ) -> Self {
        Self {
            name,
            sample_rate,
            channel_count,
            inner: Inner::Symphonia(Box::new(stream)),
            repairs: SampleRepairs::default(),
            frames: 0,
            done: false,
        }
    }

    fn from_hound(
        name: String,
        reader: hound::WavReader<BufReader<Box<dyn ByteSource>>>,
    ) -> Result<Self, DecodeError> {
        let spec = reader.spec();
        if spec.channels == 0 || spec.sample_rate == 0 {
            return Err(DecodeError::Unsupported {
                path: name,
                problem: format!("{} channels at {} Hz", spec.channels, spec.sample_rate),
            });
        }
        let inner = match spec.sample_format {
            hound::SampleFormat::Float => Inner::HoundFloat(reader.into_samples::<f32>()),
            hound::SampleFormat::Int => {
                let scale = 1.0 / (1u64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
                Inner::HoundInt(reader.into_samples::<i32>(), scale)
            }
        };
        Ok(Self {
            name,
            sample_rate: spec.sample_rate,
            channel_count: spec.channels as usize,
            inner,
            repairs: SampleRepairs::default(),
            frames: 0,
            done: false,
        })
    }

    /// Samples per second per channel.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    pub fn channel_count(&self) -> usize {
        self.channel_count
    }

    /// The next chunk: one `Vec` per channel, all the same length, finite and in [-1, 1];
    /// `None` at the end of the audio.
    ///
    /// A truncated file or a damaged packet after some audio ends the audio with a warning
    /// (a recording cut short mid-write is still worth hearing); one undecodable frame is
    /// skipped. Errors: [`DecodeError::Corrupt`] when nothing could be read, or the channel
    /// count changes mid-stream.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<Vec<f32>>>, DecodeError> {
        if self.done {
            return Ok(None);
        }
        let chunk = match &mut self.inner {
            Inner::Symphonia(s) => s.next_chunk(&self.name, self.channel_count, self.frames > 0)?,
            Inner::HoundFloat(samples) => {
                hound_chunk(&self.name, samples, self.channel_count, |v| v)?
            }
            Inner::HoundInt(samples, k) => {
                let k = *k;
                hound_chunk(&self.name, samples, self.channel_count, |v| v as f32 * k)?
            }
        };
        let Some(mut chunk) = chunk else {
            self.done = true;
            return Ok(None);
        };
        for channel in &mut chunk {
            self.repairs.repair(channel);
        }
        self.frames += chunk.first().map_or(0, Vec::len) as u64;
        Ok(Some(chunk))
    }

    /// Ends the read: reports the samples repaired (once per file). Errors:
    /// [`DecodeError::Empty`] when the file held no samples.
    pub fn finish(&self) -> Result<SampleRepairs, DecodeError> {
        if self.frames == 0 {
            return Err(DecodeError::Empty {
                path: self.name.clone(),
            });
        }
        let r = self.repairs;
        if r.not_finite > 0 {
            tracing::warn!(
                "{}: {} samples were NaN or infinite and were replaced by silence",
                self.name,
                r.not_finite
            );
        }
        if r.clipped > 0 {
            tracing::warn!(
                "{}: {} samples lay outside [-1, 1] (peak {:.3e}) and were clipped; the file may be scaled wrongly",
                self.name,
                r.clipped,
                r.peak
            );
        }
        Ok(r)
    }
}

fn read_up_to(file: &mut dyn ByteSource, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn hound_chunk<T: hound::Sample>(
    name: &str,
    samples: &mut hound::WavIntoSamples<BufReader<Box<dyn ByteSource>>, T>,
    n_channels: usize,
    to_f32: impl Fn(T) -> f32,
) -> Result<Option<Vec<Vec<f32>>>, DecodeError> {
    let limit = CHUNK_FRAMES * n_channels;
    let mut interleaved = Vec::with_capacity(limit);
    for s in samples.by_ref() {
        match s {
            Ok(v) => interleaved.push(to_f32(v)),
            Err(hound::Error::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                tracing::warn!(
                    "{name}: the audio ends early (truncated file); keeping what was read"
                );
                break;
            }
            Err(e) => {
                return Err(DecodeError::Corrupt {
                    path: name.into(),
                    problem: e.to_string(),
                })
            }
        }
        if interleaved.len() == limit {
            break;
        }
    }
    // A partial last frame (a stray byte or sample) is dropped.
    let frames = interleaved.len() / n_channels;
    if frames == 0 {
        return Ok(None);
    }
    Ok(Some(deinterleave(
        &interleaved[..frames * n_channels],
        n_channels,
    )))
}

fn deinterleave(interleaved: &[f32], n: usize) -> Vec<Vec<f32>> {
    let mut channels = vec![Vec::with_capacity(interleaved.len() / n); n];
    for frame in interleaved.chunks_exact(n) {
        for (c, &s) in frame.iter().enumerate() {
            channels[c].push(s);
        }
    }
    channels
}

/// Opens a file with symphonia; `Err` carries the reader's reason. Returns the stream, the
/// rate and the channel count (from the first packet when the container does not say).
fn open_symphonia(source: Box<dyn MediaSource>) -> Result<(SymphoniaStream, u32, usize), String> {
    let stream = MediaSourceStream::new(source, Default::default());
    // symphonia 0.5 probes by content (the hint is unused); the name is not trusted here.
    let probed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        probe().format(
            &Hint::new(),
            stream,
            &FormatOptions::default(),
            &MetadataOptions::default(),
        )
    }))
    .map_err(|_| "the format reader failed on this input".to_owned())?
    .map_err(|e| e.to_string())?;
    let format = probed.format;
    let track = format
        .default_track()
        .ok_or_else(|| "no audio track".to_owned())?;
    let track_id = track.id;
    let params = track.codec_params.clone();
    let decoder = symphonia::default::get_codecs()
        .make(&params, &DecoderOptions::default())
        .map_err(|e| e.to_string())?;
    let mut stream = SymphoniaStream {
        format,
        decoder,
        track_id,
        pending: None,
        ended: false,
    };
    let mut rate = params.sample_rate.unwrap_or(0);
    let mut n = params.channels.map_or(0, |c| c.count());
    if rate == 0 || n == 0 {
        // Learn them from the first decoded packet.
        match stream.packet("") {
            Ok(Some((r, c, samples))) => {
                rate = r;
                n = c;
                stream.pending = Some(samples);
            }
            Ok(None) => {}
            Err(e) => return Err(e),
        }
    }
    if rate == 0 {
        return Err("unknown sample rate".into());
    }
    if n == 0 {
        return Err("no channels".into());
    }
    Ok((stream, rate, n))
}

impl SymphoniaStream {
    /// The next decoded packet of this track: (rate, channels, per-channel samples), or `None`
    /// at the end. `Err` is the reader's reason.
    #[allow(clippy::type_complexity)]
    fn packet(&mut self, name: &str) -> Result<Option<(u32, usize, Vec<Vec<f32>>)>, String> {
        // A decoder bug on a hostile file (symphonia's MS ADPCM overflows its step size, a
        // panic where overflow is checked) ends this file's audio, never the process: one bad
        // call must not take down a batch or the other calls.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.packet_unguarded(name)))
            .unwrap_or_else(|_| Err("the decoder failed on this input".to_owned()))
    }

    #[allow(clippy::type_complexity)]
    fn packet_unguarded(
        &mut self,
        name: &str,
    ) -> Result<Option<(u32, usize, Vec<Vec<f32>>)>, String> {
        loop {
            let packet = match self.format.next_packet() {
                Ok(p) => p,
                Err(SymphoniaError::IoError(e))
                    if e.kind() == std::io::ErrorKind::UnexpectedEof =>
                {
                    return Ok(None)
                }
                Err(SymphoniaError::ResetRequired) => return Ok(None),
                Err(e) => return Err(e.to_string()),
            };
            if packet.track_id() != self.track_id {
                continue;
            }
            let decoded = match self.decoder.decode(&packet) {
                Ok(d) => d,
                // One damaged frame loses a few milliseconds, not the call.
                Err(SymphoniaError::DecodeError(e)) => {
                    tracing::warn!("{name}: skipping an undecodable frame: {e}");
                    continue;
                }
                Err(e) => return Err(e.to_string()),
            };
            let spec = *decoded.spec();
            let n = spec.channels.count();
            if decoded.frames() == 0 || n == 0 {
                continue;
            }
            let mut buf = SampleBuffer::<f32>::new(decoded.capacity() as u64, spec);
            buf.copy_interleaved_ref(decoded);
            return Ok(Some((spec.rate, n, deinterleave(buf.samples(), n))));
        }
    }

    fn next_chunk(
        &mut self,
        name: &str,
        n_channels: usize,
        have_audio: bool,
    ) -> Result<Option<Vec<Vec<f32>>>, DecodeError> {
        if self.ended {
            return Ok(None);
        }
        let mut chunk: Vec<Vec<f32>> = match self.pending.take() {
            Some(p) => p,
            None => vec![Vec::new(); n_channels],
        };
        while chunk.first().map_or(0, Vec::len) < CHUNK_FRAMES {
            match self.packet(name) {
                Ok(Some((_, n, samples))) => {
                    if n != n_channels {
                        return Err(DecodeError::Corrupt {
                            path: name.into(),
                            problem: format!("channel count changed from {n_channels} to {n}"),
                        });
                    }
                    for (all, part) in chunk.iter_mut().zip(samples) {
                        all.extend_from_slice(&part);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    if have_audio || chunk.first().is_some_and(|c| !c.is_empty()) {
                        tracing::warn!(
                            "{name}: stopped reading at a damaged packet ({e}); keeping what was decoded"
                        );
                        self.ended = true;
                        break;
                    }
                    return Err(DecodeError::Corrupt {
                        path: name.into(),
                        problem: e,
                    });
                }
            }
        }
        if chunk.first().is_none_or(Vec::is_empty) {
            return Ok(None);
        }
        Ok(Some(chunk))
    }
}

/// A WAV whose size fields do not match the file: 0 (a tool that never came back to fill them
/// in), 0xFFFFFFFF (written to a pipe), or larger than the bytes left (truncated). The file is
/// seen with the RIFF size set to the file's length and the `data` size to the bytes that
/// follow it, as ffmpeg reads such files. `None` when nothing needs patching or the chunks
/// cannot be walked (the readers then say what is wrong).
fn unknown_wav_sizes(mut file: Box<dyn ByteSource>) -> Result<PatchedFile, Box<dyn ByteSource>> {
    match wav_size_patches(&mut file) {
        Some(patches) if file.seek(SeekFrom::Start(0)).is_ok() => Ok(PatchedFile {
            len: patches.0,
            patches: patches.1,
            file,
            pos: 0,
        }),
        _ => {
            // Unpatched, from the start.
            let _ = file.seek(SeekFrom::Start(0));
            Err(file)
        }
    }
}

/// The file's length and the two size fields to present, or `None` when they are right.
#[allow(clippy::type_complexity)]
fn wav_size_patches(file: &mut Box<dyn ByteSource>) -> Option<(u64, [(u64, [u8; 4]); 2])> {
    let len = file.seek(SeekFrom::End(0)).ok()?;
    let mut offset = 12u64;
    let mut riff_size = [0u8; 4];
    file.seek(SeekFrom::Start(4)).ok()?;
    file.read_exact(&mut riff_size).ok()?;
    let riff_size = u32::from_le_bytes(riff_size) as u64;
    // Chunk headers only, bounded: a hostile file cannot make this loop long.
    for _ in 0..4096 {
        if offset + 8 > len {
            return None;
        }
        file.seek(SeekFrom::Start(offset)).ok()?;
        let mut header = [0u8; 8];
        file.read_exact(&mut header).ok()?;
        let size = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as u64;
        if &header[..4] == b"data" {
            let rest = len - offset - 8;
            let data_size = if size == 0 || size > rest { rest } else { size };
            let whole = len - 8;
            if data_size == size && riff_size == whole {
                return None;
            }
            let field = |v: u64| u32::try_from(v).unwrap_or(u32::MAX).to_le_bytes();
            return Some((len, [(4, field(whole)), (offset + 4, field(data_size))]));
        }
        // RIFF chunks are padded to an even length.
        offset += 8 + size + (size & 1);
    }
    None
}

/// A file read with four-byte fields at given offsets replaced.
struct PatchedFile {
    file: Box<dyn ByteSource>,
    len: u64,
    patches: [(u64, [u8; 4]); 2],
    pos: u64,
}

impl Read for PatchedFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        let (start, end) = (self.pos, self.pos + n as u64);
        for (at, bytes) in &self.patches {
            for (i, b) in bytes.iter().enumerate() {
                let p = at + i as u64;
                if (start..end).contains(&p) {
                    buf[(p - start) as usize] = *b;
                }
            }
        }
        self.pos = end;
        Ok(n)
    }
}

impl Seek for PatchedFile {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.pos = self.file.seek(to)?;
        Ok(self.pos)
    }
}

impl MediaSource for PatchedFile {
    fn is_seekable(&self) -> bool {
        true
    }

    fn byte_len(&self) -> Option<u64> {
        Some(self.len)
    }
}

/// What audio is read from: a file, or bytes in memory.
pub trait ByteSource: Read + Seek + Send + Sync {}
impl<T: Read + Seek + Send + Sync> ByteSource for T {}

/// Shared bytes as a slice, for a `Cursor`.
struct ArcBytes(std::sync::Arc<[u8]>);

impl AsRef<[u8]> for ArcBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A [`ByteSource`] as symphonia's source, from byte `offset` on (past the ID3v2 tags at the
/// start of a file: symphonia sees the audio as if they were not there).
struct SourceAdapter {
    inner: Box<dyn ByteSource>,
    offset: u64,
}

impl SourceAdapter {
    fn new(mut inner: Box<dyn ByteSource>, offset: u64) -> std::io::Result<Self> {
        inner.seek(SeekFrom::Start(offset))?;
        Ok(Self { inner, offset })
    }
}

impl Read for SourceAdapter {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}

impl Seek for SourceAdapter {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let to = match to {
            SeekFrom::Start(n) => SeekFrom::Start(n.saturating_add(self.offset)),
            other => other,
        };
        let at = self.inner.seek(to)?;
        if at < self.offset {
            self.inner.seek(SeekFrom::Start(self.offset))?;
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek before the start of the audio",
            ));
        }
        Ok(at - self.offset)
    }
}

impl MediaSource for SourceAdapter {
    fn is_seekable(&self) -> bool {
        true
    }

    fn byte_len(&self) -> Option<u64> {
        None
    }
}

/// Checks a FLAC file's Vorbis comment and picture blocks (RFC 9639 sections 8.6, 8.8) before
/// symphonia reads them: it allocates each length the file claims, so a 100-byte file claiming
/// a 4 GB comment (found by fuzzing) would ask for 4 GB. A length past the end of its block is
/// corrupt.
///
/// symphonia looks for a format's marker anywhere in the first MiB of what it is given (from
/// `from`, past the ID3v2 tags at the start), so the first `fLaC` there is where its FLAC
/// reader would start (a `fLaC` inside a skipped tag is not: found by fuzzing).
fn check_flac_metadata(file: &mut Box<dyn ByteSource>, from: u64) -> Result<(), String> {
    let mut head = Vec::new();
    if file.seek(SeekFrom::Start(from)).is_err()
        || file.take((1 << 20) + 4).read_to_end(&mut head).is_err()
    {
        return Ok(());
    }
    let Some(at) = head.windows(4).position(|w| w == b"fLaC") else {
        return Ok(());
    };
    if file.seek(SeekFrom::Start(from + at as u64 + 4)).is_err() {
        return Ok(());
    }
    for _ in 0..1024 {
        let mut header = [0u8; 4];
        if file.read_exact(&mut header).is_err() {
            return Ok(());
        }
        let last = header[0] & 0x80 != 0;
        let kind = header[0] & 0x7f;
        let len = u32::from_be_bytes([0, header[1], header[2], header[3]]) as usize;
        if kind == 4 || kind == 6 {
            // What the file holds of the block (it may be cut short): every length inside
            // must fit in that.
            let mut block = Vec::new();
            if file.take(len as u64).read_to_end(&mut block).is_err() {
                return Ok(());
            }
            if kind == 4 {
                check_comment_block(&block)?;
            } else {
                check_picture_block(&block)?;
            }
        } else if file.seek(SeekFrom::Current(len as i64)).is_err() {
            return Ok(());
        }
        if last {
            break;
        }
    }
    Ok(())
}

/// Bytes taken by the ID3v2 tags at the start of a file (id3.org's ID3v2.2-2.4 structure: a
/// 10-byte header with a 28-bit syncsafe size, a 10-byte footer in v2.4 when flagged), 0 when
/// it starts with none.
///
/// The tags are skipped rather than read: nothing in them is used, and symphonia's tag reader
/// allocates each frame at the size the file claims, found by fuzzing twice (a 35-byte tag
/// holding a v2.3 frame of 2.9 GB; then a tag 76 bytes into a file, which its format probe also
/// reads). Its probe is therefore built without the tag reader ([`probe`]).
fn leading_id3v2_len(file: &mut Box<dyn ByteSource>) -> u64 {
    let mut pos = 0u64;
    // Tags may follow one another.
    for _ in 0..64 {
        let mut header = [0u8; 10];
        if file.seek(SeekFrom::Start(pos)).is_err() || file.read_exact(&mut header).is_err() {
            break;
        }
        let version = header[3];
        if &header[..3] != b"ID3"
            || !(2..=4).contains(&version)
            || header[6..].iter().any(|&b| b >= 0x80)
        {
            break;
        }
        let footer = if version == 4 && header[5] & 0x10 != 0 {
            10
        } else {
            0
        };
        pos += 10 + syncsafe(&header[6..]) as u64 + footer;
    }
    pos
}

/// A 28-bit syncsafe number: 7 bits from each of four bytes.
fn syncsafe(b: &[u8]) -> usize {
    b.iter()
        .take(4)
        .fold(0, |n, &x| (n << 7) | (x & 0x7f) as usize)
}

/// symphonia's probe with the formats this build reads and without its ID3v2 tag reader (see
/// [`leading_id3v2_len`]).
fn probe() -> &'static symphonia::core::probe::Probe {
    static PROBE: std::sync::OnceLock<symphonia::core::probe::Probe> = std::sync::OnceLock::new();
    PROBE.get_or_init(|| {
        use symphonia::default::formats::{FlacReader, MkvReader, MpaReader, OggReader, WavReader};
        let mut probe = symphonia::core::probe::Probe::default();
        probe.register_all::<FlacReader>();
        probe.register_all::<MpaReader>();
        probe.register_all::<WavReader>();
        probe.register_all::<OggReader>();
        probe.register_all::<MkvReader>();
        probe
    })
}

/// A big-endian (`be`) or little-endian u32 length at `at` in `block`.
fn length_at(block: &[u8], at: usize, be: bool, what: &str) -> Result<usize, String> {
    block
        .get(at..at.saturating_add(4))
        .map(|b| {
            let b = [b[0], b[1], b[2], b[3]];
            (if be {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }) as usize
        })
        .ok_or_else(|| format!("a metadata block ends inside its {what}"))
}

/// The end of `n` bytes that start at `at`, if they fit in a block of `len` bytes.
fn fits(at: usize, n: usize, len: usize) -> Option<usize> {
    at.checked_add(n).filter(|&end| end <= len)
}

/// A Vorbis comment block (RFC 9639 section 8.6: little-endian lengths).
fn check_comment_block(block: &[u8]) -> Result<(), String> {
    let len = block.len();
    let vendor = length_at(block, 0, false, "vendor length")?;
    let mut at = fits(4, vendor, len).ok_or("a FLAC comment vendor string runs past its block")?;
    let count = length_at(block, at, false, "comment count")?;
    at += 4;
    for _ in 0..count {
        let n = length_at(block, at, false, "comment length")?;
        at = fits(at + 4, n, len).ok_or("a FLAC comment runs past its block")?;
    }
    Ok(())
}

/// A picture block (RFC 9639 section 8.8: big-endian lengths). symphonia allocates the media
/// type, description and picture data at the lengths the file claims (a 97-byte file whose
/// media type claimed 2.9 GB, found by fuzzing).
fn check_picture_block(block: &[u8]) -> Result<(), String> {
    let len = block.len();
    let media = length_at(block, 4, true, "media type length")?;
    let at = fits(8, media, len).ok_or("a FLAC picture's media type runs past its block")?;
    let description = length_at(block, at, true, "description length")?;
    // The description, then width, height, colour depth and number of colours.
    let at = fits(at + 4, description, len)
        .and_then(|a| fits(a, 16, len))
        .ok_or("a FLAC picture's description runs past its block")?;
    let data = length_at(block, at, true, "picture data length")?;
    fits(at + 4, data, len).ok_or("a FLAC picture's data runs past its block")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A picture block (RFC 9639 section 8.8) with the given data length field and `held`
    /// bytes of data.
    fn picture(data_len: u32, held: usize) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(3u32.to_be_bytes()); // front cover
        b.extend(9u32.to_be_bytes());
        b.extend(b"image/png");
        b.extend(4u32.to_be_bytes());
        b.extend(b"logo");
        b.extend([0u8; 16]); // width, height, depth, colours
        b.extend(data_len.to_be_bytes());
        b.extend(vec![0u8; held]);
        b
    }

    #[test]
    fn leading_id3v2_tags_are_measured_to_be_skipped() {
        let mut file = b"ID3\x03\0\0\0\0\x02\x01".to_vec();
        file.extend(vec![0xaa; 257]);
        let second = file.len() as u64;
        file.extend(b"ID3\x04\0\x10\0\0\0\x05");
        file.extend(vec![0xbb; 5 + 10]);
        let audio = file.len() as u64;
        file.extend(b"\xff\xfb\x90\x00");
        let mut source: Box<dyn ByteSource> = Box::new(std::io::Cursor::new(file.clone()));
        assert_eq!(second, 10 + 257);
        assert_eq!(leading_id3v2_len(&mut source), audio);
        let mut plain: Box<dyn ByteSource> = Box::new(std::io::Cursor::new(b"fLaC".to_vec()));
        assert_eq!(leading_id3v2_len(&mut plain), 0);
        // symphonia sees the audio from the end of the tags on.
        let mut adapter = SourceAdapter::new(source, audio).unwrap();
        let mut first = [0u8; 2];
        adapter.read_exact(&mut first).unwrap();
        assert_eq!(first, [0xff, 0xfb]);
        assert_eq!(adapter.seek(SeekFrom::Start(1)).unwrap(), 1);
        assert!(adapter.seek(SeekFrom::Current(-5)).is_err());
    }

    #[test]
    fn picture_lengths_must_fit_their_block() {
        assert!(check_picture_block(&picture(8, 8)).is_ok());
        let err = check_picture_block(&picture(u32::MAX, 8)).unwrap_err();
        assert!(err.contains("picture's data runs past"), "{err}");
        let mut long_description = picture(8, 8);
        long_description[17..21].copy_from_slice(&u32::MAX.to_be_bytes());
        let err = check_picture_block(&long_description).unwrap_err();
        assert!(err.contains("description runs past"), "{err}");
        let err = check_picture_block(&picture(8, 8)[..19]).unwrap_err();
        assert!(err.contains("ends inside"), "{err}");
    }
}
