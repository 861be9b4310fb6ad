//! Conversion to the 16 kHz the recogniser expects: whole recordings ([`to_16k`]) and live
//! streams in small pieces ([`StreamResampler`]).

use rubato::{FftFixedIn, Resampler};

pub const TARGET_RATE: u32 = 16_000;

#[derive(Debug, thiserror::Error)]
#[error("cannot resample from {from} Hz: {problem}")]
pub struct ResampleError {
    pub from: u32,
    pub problem: String,
}

/// Resamples one channel to 16 kHz. The output has exactly `round(len * 16000 / rate)` samples
/// and is aligned with the input (the resampler's delay is removed).
pub fn to_16k(samples: &[f32], rate: u32) -> Result<Vec<f32>, ResampleError> {
    let mut r = AlignedResampler::new(rate)?;
    let mut out =
        Vec::with_capacity((samples.len() as u64 * TARGET_RATE as u64 / rate as u64) as usize + 1);
    r.push(samples, &mut out)?;
    r.finish(&mut out)?;
    Ok(out)
}

fn check_rate(rate: u32) -> Result<(), ResampleError> {
    if !(1_000..=384_000).contains(&rate) {
        return Err(ResampleError {
            from: rate,
            problem: "sample rate outside 1 kHz..384 kHz".into(),
        });
    }
    Ok(())
}

/// Resamples a recording to 16 kHz piece by piece, with the output aligned to the input
/// (the resampler's delay removed) and exactly `round(len * 16000 / rate)` samples long once
/// [`finish`](Self::finish)ed: the same samples as [`to_16k`] on the whole, with memory bounded
/// by one block whatever the recording's length.
pub struct AlignedResampler {
    rate: u32,
    inner: Option<FftFixedIn<f32>>,
    /// Input not yet a whole block.
    pending: Vec<f32>,
    /// Output samples still to drop (the filter's delay).
    skip: usize,
    input_len: u64,
    output_len: u64,
}

/// Input block (samples) of [`AlignedResampler`].
const ALIGNED_BLOCK: usize = 1024;

impl AlignedResampler {
    /// Errors for rates outside 1 kHz..384 kHz.
    pub fn new(rate: u32) -> Result<Self, ResampleError> {
        check_rate(rate)?;
        let inner = if rate == TARGET_RATE {
            None
        } else {
            Some(
                FftFixedIn::<f32>::new(rate as usize, TARGET_RATE as usize, ALIGNED_BLOCK, 2, 1)
                    .map_err(|e| ResampleError {
                        from: rate,
                        problem: e.to_string(),
                    })?,
            )
        };
        let skip = inner.as_ref().map_or(0, |r| r.output_delay());
        Ok(Self {
            rate,
            inner,
            pending: Vec::with_capacity(ALIGNED_BLOCK),
            skip,
            input_len: 0,
            output_len: 0,
        })
    }

    /// Output samples the input so far makes, once finished.
    fn expected(&self) -> u64 {
        (self.input_len * TARGET_RATE as u64 + self.rate as u64 / 2) / self.rate as u64
    }

    fn emit(&mut self, produced: &[f32], out: &mut Vec<f32>, limit: u64) {
        let dropped = self.skip.min(produced.len());
        self.skip -= dropped;
        let room = limit.saturating_sub(self.output_len) as usize;
        let take = (produced.len() - dropped).min(room);
        out.extend_from_slice(&produced[dropped..dropped + take]);
        self.output_len += take as u64;
    }

    fn process_block(&mut self, out: &mut Vec<f32>, limit: u64) -> Result<(), ResampleError> {
        let Some(r) = &mut self.inner else {
            return Ok(());
        };
        let produced = r
            .process(&[&self.pending[..]], None)
            .map_err(|e| ResampleError {
                from: self.rate,
                problem: e.to_string(),
            })?;
        self.pending.clear();
        self.emit(&produced[0], out, limit);
        Ok(())
    }

    /// Feeds input samples; appends the 16 kHz samples now ready to `out`.
    pub fn push(&mut self, samples: &[f32], out: &mut Vec<f32>) -> Result<(), ResampleError> {
        self.input_len += samples.len() as u64;
        if self.inner.is_none() {
            out.extend_from_slice(samples);
            self.output_len += samples.len() as u64;
            return Ok(());
        }
        let mut rest = samples;
        while !rest.is_empty() {
            let take = (ALIGNED_BLOCK - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() == ALIGNED_BLOCK {
                self.process_block(out, u64::MAX)?;
            }
        }
        Ok(())
    }

    /// Ends the input: pushes the tail and the delay out with silence and appends the rest of
    /// the output.
    pub fn finish(mut self, out: &mut Vec<f32>) -> Result<(), ResampleError> {
        self.finish_and_restart(out)
    }

    /// [`finish`](Self::finish), then starts afresh as a new resampler would, keeping the
    /// filter and FFT plans (rubato's `reset`) instead of building them again at every gap of
    /// a live call.
    pub fn finish_and_restart(&mut self, out: &mut Vec<f32>) -> Result<(), ResampleError> {
        let expected = self.expected();
        let mut ended = Ok(());
        while ended.is_ok() && self.inner.is_some() && self.output_len < expected {
            self.pending.resize(ALIGNED_BLOCK, 0.0);
            ended = self.process_block(out, expected);
        }
        // Afresh even after an error, as a new resampler would be.
        self.pending.clear();
        self.input_len = 0;
        self.output_len = 0;
        self.skip = match &mut self.inner {
            Some(r) => {
                r.reset();
                r.output_delay()
            }
            None => 0,
        };
        ended
    }
}

/// Resamples a live stream to 16 kHz as its pieces arrive: the samples [`to_16k`] gives for the
/// whole recording (same filter, delay removed, so a stream's times are the file's), so live
/// calls are heard as `scan` hears the same file.
///
/// Output comes in blocks of 1024 input samples (128 ms at 8 kHz, 21 ms at 48 kHz): the price of
/// the longer filter. The 20 ms blocks used before, with the filter that block size allows,
/// changed what base heard on a bundled sample ("useful play" for "Google Play", "You have to
/// tell anyone" for "Do not tell anyone"), and the live call was missed where `scan` flags it.
/// [`flush`](Self::flush) pushes the rest out at a gap or the end of the stream.
pub struct StreamResampler {
    inner: AlignedResampler,
}

impl StreamResampler {
    /// A resampler from `rate` Hz; errors for rates outside 1 kHz..384 kHz.
    pub fn new(rate: u32) -> Result<Self, ResampleError> {
        Ok(Self {
            inner: AlignedResampler::new(rate)?,
        })
    }

    /// The input rate (Hz).
    pub fn rate(&self) -> u32 {
        self.inner.rate
    }

    /// Feeds samples at the input rate; appends what is ready at 16 kHz to `out`.
    pub fn push(&mut self, samples: &[f32], out: &mut Vec<f32>) {
        // rubato errs only on buffers of the wrong size, which `AlignedResampler` never passes.
        let _ = self.inner.push(samples, out);
    }

    /// Ends the stream so far: appends the rest of its 16 kHz samples (`round(len * 16000 /
    /// rate)` in all since the start or the last flush) and starts afresh, as after a gap.
    pub fn flush(&mut self, out: &mut Vec<f32>) {
        let _ = self.inner.finish_and_restart(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f32, rate: u32, seconds: f32) -> Vec<f32> {
        (0..(rate as f32 * seconds) as usize)
            .map(|i| (2.0 * std::f32::consts::PI * freq * i as f32 / rate as f32).sin() * 0.5)
            .collect()
    }

    /// Frequency of the strongest bin, by a direct DFT scan over 50 Hz steps.
    fn dominant_freq(x: &[f32], rate: u32) -> f32 {
        (1..160)
            .map(|k| k as f32 * 50.0)
            .map(|f| {
                let (mut re, mut im) = (0.0f64, 0.0f64);
                for (i, &s) in x.iter().enumerate() {
                    let ph = 2.0 * std::f64::consts::PI * f as f64 * i as f64 / rate as f64;
                    re += s as f64 * ph.cos();
                    im += s as f64 * ph.sin();
                }
                (f, re * re + im * im)
            })
            .fold((0.0, 0.0), |a, b| if b.1 > a.1 { b } else { a })
            .0
    }

    #[test]
    fn keeps_pitch_length_and_alignment_for_telephone_and_studio_rates() {
        for rate in [8_000u32, 44_100, 48_000] {
            let input = sine(1000.0, rate, 1.0);
            let out = to_16k(&input, rate).unwrap();
            assert_eq!(out.len(), 16_000, "rate {rate}");
            assert_eq!(
                dominant_freq(&out[2000..6000], 16_000),
                1000.0,
                "rate {rate}"
            );
            // Aligned: the output at t matches a 16 kHz sine at t (same phase), mid-signal.
            let reference = sine(1000.0, 16_000, 1.0);
            let err: f32 = (4000..12000)
                .map(|i| (out[i] - reference[i]).abs())
                .sum::<f32>()
                / 8000.0;
            // Within a fraction of a sample: a whole-sample shift would give about 0.12.
            assert!(err < 0.06, "rate {rate}: mean error {err}");
        }
    }

    #[test]
    fn a_tone_above_the_new_nyquist_is_filtered_out() {
        let input = sine(10_000.0, 48_000, 1.0);
        let out = to_16k(&input, 48_000).unwrap();
        let rms = (out[2000..14000].iter().map(|s| s * s).sum::<f32>() / 12000.0).sqrt();
        assert!(rms < 0.01, "aliased energy {rms}");
    }

    #[test]
    fn absurd_rates_are_refused_and_short_inputs_work() {
        assert!(to_16k(&[0.0; 10], 10).is_err());
        assert_eq!(to_16k(&[0.1; 5], 8000).unwrap().len(), 10);
        assert!(to_16k(&[], 8000).unwrap().is_empty());
    }
    #[test]
    fn pieces_give_the_same_samples_as_the_whole() {
        for rate in [8_000u32, 44_100, 48_000, 16_000] {
            let input = sine(440.0, rate, 1.37);
            let whole = to_16k(&input, rate).unwrap();
            let mut r = AlignedResampler::new(rate).unwrap();
            let mut pieces = Vec::new();
            for piece in input.chunks(777) {
                r.push(piece, &mut pieces).unwrap();
            }
            r.finish(&mut pieces).unwrap();
            assert_eq!(
                whole.len(),
                (1.37 * 16_000.0f64).round() as usize,
                "rate {rate}"
            );
            assert_eq!(pieces, whole, "rate {rate}");
        }
    }

    #[test]
    fn a_stream_in_20_ms_pieces_gives_the_recording_s_samples() {
        for rate in [8_000u32, 44_100, 16_000] {
            let first = sine(300.0, rate, 1.3);
            let second = sine(700.0, rate, 0.77);
            let mut r = StreamResampler::new(rate).unwrap();
            let mut out = Vec::new();
            for piece in first.chunks(rate as usize / 50) {
                r.push(piece, &mut out);
            }
            // Most of it is out before the flush: the stream does not wait for its end.
            assert!(
                out.len() as f64 >= 1.3 * 16_000.0 - 1100.0,
                "rate {rate}: {}",
                out.len()
            );
            r.flush(&mut out);
            assert_eq!(out, to_16k(&first, rate).unwrap(), "rate {rate}");
            // After a flush (a gap) the stream starts afresh.
            let mut more = Vec::new();
            for piece in second.chunks(333) {
                r.push(piece, &mut more);
            }
            r.flush(&mut more);
            assert_eq!(more, to_16k(&second, rate).unwrap(), "rate {rate}");
        }
        assert!(StreamResampler::new(10).is_err());
    }
}
