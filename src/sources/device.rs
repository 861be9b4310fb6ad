//! Live capture from a sound device with cpal, at the device's own rate and channel count.
//! Stereo devices can carry two parties (a headset adapter with agent and customer apart).
//!
//! The audio callback neither allocates nor blocks (cpal's `feedback` example): it copies whole
//! frames into a preallocated ring buffer and, when the ring is full, notes where and how much
//! it could not write. The reader places every chunk at its true audio time, so audio lost
//! there is a gap in the call, not a shift of everything after it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use ringbuf::traits::{Consumer, Observer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};

use super::{DeviceSourceConfig, Ingest, Ingress, Source, Stop};
use crate::audio::{party_label, ChannelMode};
use crate::call::{AudioChunk, Call, CallId, Party};

/// Seconds of audio the ring buffer holds between the callback and the reader.
const RING_S: usize = 2;

pub fn devices() -> Result<Vec<String>> {
    let host = cpal::default_host();
    let default = host.default_input_device().and_then(|d| d.name().ok());
    let mut out = Vec::new();
    for d in host.input_devices().context("listing input devices")? {
        let name = d.name().unwrap_or_else(|_| "?".into());
        let cfg = d
            .default_input_config()
            .map(|c| {
                format!(
                    "{} ch, {} Hz, {:?}",
                    c.channels(),
                    c.sample_rate().0,
                    c.sample_format()
                )
            })
            .unwrap_or_else(|e| format!("unusable: {e}"));
        let mark = if Some(&name) == default.as_ref() {
            " (default)"
        } else {
            ""
        };
        out.push(format!("{name}{mark}: {cfg}"));
    }
    Ok(out)
}

pub struct DeviceSource {
    config: DeviceSourceConfig,
}

impl DeviceSource {
    pub fn new(config: DeviceSourceConfig) -> Self {
        Self { config }
    }
}

/// The audio callback's side: whole frames into the ring; what does not fit is counted, and
/// where it was lost (after how many samples were written) goes into `gaps`.
struct RingWriter<T> {
    ring: HeapProd<f32>,
    gaps: HeapProd<(u64, u64)>,
    channels: usize,
    lost: Arc<AtomicU64>,
    convert: fn(T) -> f32,
    /// Samples written so far.
    written: u64,
    /// A loss the notes had no room for: no audio is written after it until it is noted, or
    /// the reader would place that audio early.
    unnoted: Option<(u64, u64)>,
}

impl<T: Copy> RingWriter<T> {
    /// Neither allocates nor blocks.
    fn write(&mut self, data: &[T]) {
        if let Some(gap) = self.unnoted {
            if self.gaps.try_push(gap).is_ok() {
                self.unnoted = None;
            }
        }
        let room = match self.unnoted {
            Some(_) => 0,
            None => self.ring.vacant_len() / self.channels * self.channels,
        };
        let take = data.len().min(room);
        let convert = self.convert;
        let pushed = self
            .ring
            .push_iter(data[..take].iter().map(|&s| convert(s)));
        self.written += pushed as u64;
        let missed = (data.len() - pushed) as u64;
        if missed > 0 {
            self.lost.fetch_add(missed, Ordering::Relaxed);
            match &mut self.unnoted {
                // Nothing was written since: the same place, a longer loss.
                Some((_, n)) => *n += missed,
                None => {
                    if self.gaps.try_push((self.written, missed)).is_err() {
                        self.unnoted = Some((self.written, missed));
                    }
                }
            }
        }
    }

    fn callback(mut self) -> impl FnMut(&[T], &cpal::InputCallbackInfo) {
        move |data: &[T], _| self.write(data)
    }
}

fn writer<T: Copy>(
    ring: HeapProd<f32>,
    gaps: HeapProd<(u64, u64)>,
    channels: usize,
    lost: Arc<AtomicU64>,
    convert: fn(T) -> f32,
) -> RingWriter<T> {
    RingWriter {
        ring,
        gaps,
        channels,
        lost,
        convert,
        written: 0,
        unnoted: None,
    }
}

impl Source for DeviceSource {
    fn describe(&self) -> String {
        format!(
            "device {}",
            self.config.name.as_deref().unwrap_or("(default)")
        )
    }

    fn run(self: Box<Self>, out: Arc<dyn Ingest>, stop: Stop) -> Result<()> {
        let host = cpal::default_host();
        let dev = match &self.config.name {
            Some(name) => host
                .input_devices()?
                .find(|d| d.name().is_ok_and(|n| &n == name))
                .with_context(|| format!("no input device named {name:?} (see --list-devices)"))?,
            None => host
                .default_input_device()
                .context("no default input device")?,
        };
        let config = dev
            .default_input_config()
            .context("the device has no usable input configuration")?;
        let rate = config.sample_rate().0;
        let n_ch = config.channels() as usize;
        if n_ch == 0 || rate == 0 {
            bail!("the device reports {n_ch} channels at {rate} Hz");
        }
        let split = self.config.channels == ChannelMode::Split && n_ch > 1;
        let parties = if split { n_ch } else { 1 };
        let name = dev.name().unwrap_or_else(|_| "device".into());
        let id = match &self.config.call_id {
            Some(id) => CallId::new(id.clone()),
            None => CallId::unique(&name),
        };
        let (ring, mut reader) = HeapRb::<f32>::new(rate as usize * n_ch * RING_S).split();
        let (gap_notes, mut gaps) = HeapRb::<(u64, u64)>::new(256).split();
        let lost = Arc::new(AtomicU64::new(0));
        let err_fn = |e| tracing::error!("capture error: {e}");
        let stream_config: cpal::StreamConfig = config.clone().into();
        let stream = match config.sample_format() {
            cpal::SampleFormat::F32 => dev.build_input_stream(
                &stream_config,
                writer::<f32>(ring, gap_notes, n_ch, lost.clone(), |s| s).callback(),
                err_fn,
                None,
            ),
            cpal::SampleFormat::I16 => dev.build_input_stream(
                &stream_config,
                writer::<i16>(ring, gap_notes, n_ch, lost.clone(), |s| s as f32 / 32768.0)
                    .callback(),
                err_fn,
                None,
            ),
            other => bail!("sample format {other:?} is not supported (f32 and i16 are)"),
        }
        .context("opening the capture stream")?;
        out.send(Ingress::Open(Call {
            id: id.clone(),
            parties: (0..parties)
                .map(|p| Party {
                    label: party_label(split.then_some(p)),
                    sample_rate: rate,
                })
                .collect(),
            metadata: BTreeMap::from([("device".to_owned(), name.clone())]),
        }))?;
        stream.play().context("starting capture")?;
        tracing::info!(device = %name, rate, channels = n_ch, "capturing");
        let deadline = self
            .config
            .seconds
            .map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0)));
        let mut block = vec![0f32; (rate as usize / 50).max(1) * n_ch];
        let mut reading = Reading::new(n_ch, rate, parties);
        let mut forward = |reading: &mut Reading| -> bool {
            let got = reading.next_block(&mut reader, &mut gaps, &mut block);
            for chunk in reading.chunks(&id, &block[..got]) {
                // A live source cannot wait: a full queue drops (and counts) the chunk.
                let _ = out.send(Ingress::Audio(chunk));
            }
            reading.popped += got as u64;
            got > 0
        };
        while !stop.requested() && deadline.is_none_or(|d| Instant::now() < d) {
            if !forward(&mut reading) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        drop(stream);
        // What was captured before the stream stopped is still part of the call.
        while forward(&mut reading) {}
        let lost = lost.load(Ordering::Relaxed);
        if lost > 0 {
            tracing::warn!(
                device = %name,
                "{:.2} s of audio could not be buffered (the reader fell behind)",
                lost as f64 / (rate as f64 * n_ch as f64)
            );
        }
        let _ = out.send(Ingress::Close(id));
        Ok(())
    }
}

/// The reader's place in the device's stream.
struct Reading {
    /// Samples (all channels) taken from the ring.
    popped: u64,
    /// Samples the callback could not write before the ones to be read next.
    lost_before: u64,
    n_ch: usize,
    rate: u32,
    parties: usize,
}

impl Reading {
    /// At the start of a stream of `n_ch` interleaved channels at `rate` Hz, heard as
    /// `parties` parties (1: mixed; `n_ch`: split).
    fn new(n_ch: usize, rate: u32, parties: usize) -> Self {
        Self {
            popped: 0,
            lost_before: 0,
            n_ch,
            rate,
            parties,
        }
    }

    /// Reads up to a block, stopping at the next place audio was lost (which it steps over).
    fn next_block(
        &mut self,
        ring: &mut HeapCons<f32>,
        gaps: &mut HeapCons<(u64, u64)>,
        block: &mut [f32],
    ) -> usize {
        while let Some(&(at, missed)) = gaps.first() {
            if at > self.popped {
                break;
            }
            self.lost_before += missed;
            gaps.try_pop();
        }
        let until_gap = gaps
            .first()
            .map_or(usize::MAX, |&(at, _)| (at - self.popped) as usize);
        let want = block.len().min(until_gap).min(ring.occupied_len()) / self.n_ch * self.n_ch;
        ring.pop_slice(&mut block[..want])
    }

    /// The block as chunks, one per party, placed at its audio time (none for no samples).
    fn chunks(&self, id: &CallId, interleaved: &[f32]) -> Vec<AudioChunk> {
        if interleaved.is_empty() {
            return Vec::new();
        }
        let frame = (self.popped + self.lost_before) / self.n_ch as u64;
        let offset_s = frame as f64 / self.rate as f64;
        let n = self.n_ch;
        if self.parties == 1 {
            let mono = interleaved
                .chunks(n)
                .map(|f| f.iter().sum::<f32>() / n as f32)
                .collect();
            return vec![AudioChunk {
                call: id.clone(),
                party: 0,
                offset_s,
                samples: mono,
            }];
        }
        (0..n)
            .map(|p| AudioChunk {
                call: id.clone(),
                party: p,
                offset_s,
                samples: interleaved.iter().skip(p).step_by(n).copied().collect(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_the_callback_could_not_buffer_is_a_gap_not_a_shift() {
        // A stereo 1 kHz "device" with a ring of 8 frames.
        let (ring, mut reader) = HeapRb::<f32>::new(16).split();
        let (notes, mut gaps) = HeapRb::<(u64, u64)>::new(4).split();
        let lost = Arc::new(AtomicU64::new(0));
        let mut callback = writer::<i16>(ring, notes, 2, lost.clone(), |s| s as f32);
        // 6 frames fit; 4 of the next 6 do not (the ring holds 8).
        callback.write(&[1; 12]);
        callback.write(&[2; 12]);
        assert_eq!(lost.load(Ordering::Relaxed), 8);
        let mut reading = Reading::new(2, 1000, 2);
        let mut block = vec![0f32; 40];
        let got = reading.next_block(&mut reader, &mut gaps, &mut block);
        assert_eq!(got, 16, "stops at the gap");
        let first = reading.chunks(&"d".into(), &block[..got]);
        assert_eq!(first[1].offset_s, 0.0);
        assert_eq!(first[1].samples.len(), 8);
        reading.popped += got as u64;
        // After the ring drains, the callback writes again; the reader steps over the gap.
        callback.write(&[3; 4]);
        let got = reading.next_block(&mut reader, &mut gaps, &mut block);
        assert_eq!(got, 4);
        let after = reading.chunks(&"d".into(), &block[..got]);
        // 8 frames read, then 4 frames lost: the next audio starts at frame 12 (12 ms).
        assert!(
            (after[0].offset_s - 0.012).abs() < 1e-9,
            "{}",
            after[0].offset_s
        );
        assert_eq!(after[0].samples, vec![3.0, 3.0]);
    }

    #[test]
    fn a_loss_the_notes_cannot_hold_stops_writing_until_it_is_noted() {
        let (ring, mut reader) = HeapRb::<f32>::new(4).split();
        let (notes, mut gaps) = HeapRb::<(u64, u64)>::new(1).split();
        let lost = Arc::new(AtomicU64::new(0));
        let mut w = writer::<f32>(ring, notes, 1, lost.clone(), |s| s);
        w.write(&[1.0; 4]); // fills the ring
        w.write(&[2.0; 3]); // lost, noted (the one note slot)
        w.write(&[3.0; 2]); // lost, no room for a note: unnoted
        let mut reading = Reading::new(1, 1000, 1);
        let mut block = vec![0f32; 16];
        let got = reading.next_block(&mut reader, &mut gaps, &mut block);
        assert_eq!(got, 4);
        reading.popped += got as u64;
        // The reader steps over the first loss, freeing its note.
        assert_eq!(reading.next_block(&mut reader, &mut gaps, &mut block), 0);
        // The second loss is noted before this audio goes in, so the audio lands after both.
        w.write(&[4.0; 2]);
        let got = reading.next_block(&mut reader, &mut gaps, &mut block);
        assert_eq!(&block[..got], &[4.0, 4.0]);
        let after = reading.chunks(&"d".into(), &block[..got]);
        assert!(
            (after[0].offset_s - 0.009).abs() < 1e-9,
            "{}",
            after[0].offset_s
        );
        assert_eq!(lost.load(Ordering::Relaxed), 5);
    }
}
