//! Whisper's log-mel spectrogram: 25 ms Hann windows every 10 ms, 80 (or 128) Slaney mel bands,
//! log10, clamped to 8 decades below the peak, scaled to about [-1, 1].

use std::sync::Arc;

use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};

pub const SAMPLE_RATE: usize = 16_000;
pub const N_FFT: usize = 400;
pub const HOP: usize = 160;
/// Frames in one 30 s window, the input size of the encoder.
pub const WINDOW_FRAMES: usize = 3000;
pub const WINDOW_SAMPLES: usize = WINDOW_FRAMES * HOP;

/// One triangular mel filter, stored sparsely: weights for FFT bins `first..first+len`.
#[derive(Debug, Clone)]
pub struct MelFilter {
    pub first: usize,
    pub weights: Vec<f32>,
}

fn hz_to_mel(f: f64) -> f64 {
    // Slaney's scale: linear below 1 kHz, logarithmic above.
    let (f_sp, min_log_hz, logstep) = (200.0 / 3.0, 1000.0, (6.4f64).ln() / 27.0);
    if f < min_log_hz {
        f / f_sp
    } else {
        min_log_hz / f_sp + (f / min_log_hz).ln() / logstep
    }
}

fn mel_to_hz(m: f64) -> f64 {
    let (f_sp, min_log_hz, logstep) = (200.0 / 3.0, 1000.0, (6.4f64).ln() / 27.0);
    let min_log_mel = min_log_hz / f_sp;
    if m < min_log_mel {
        m * f_sp
    } else {
        min_log_hz * ((m - min_log_mel) * logstep).exp()
    }
}

/// Dense `[n_mels][n_fft/2+1]` filter bank, as librosa's `filters.mel(sr=16000, n_fft=400,
/// n_mels, htk=False, norm="slaney")` computes it.
pub fn mel_filter_bank(n_mels: usize) -> Vec<Vec<f32>> {
    let n_bins = N_FFT / 2 + 1;
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(SAMPLE_RATE as f64 / 2.0));
    let centers: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (n_mels + 1) as f64))
        .collect();
    let bin_hz: Vec<f64> = (0..n_bins)
        .map(|k| k as f64 * SAMPLE_RATE as f64 / N_FFT as f64)
        .collect();
    (0..n_mels)
        .map(|m| {
            let (left, mid, right) = (centers[m], centers[m + 1], centers[m + 2]);
            let norm = 2.0 / (right - left);
            bin_hz
                .iter()
                .map(|&f| {
                    let rising = (f - left) / (mid - left);
                    let falling = (right - f) / (right - mid);
                    let w = rising.min(falling).max(0.0) as f32;
                    (w as f64 * norm) as f32
                })
                .collect()
        })
        .collect()
}

pub struct MelSpectrogram {
    n_mels: usize,
    filters: Vec<MelFilter>,
    window: Vec<f32>,
    fft: Arc<dyn Fft<f32>>,
}

impl MelSpectrogram {
    pub fn new(n_mels: usize) -> Self {
        let filters = mel_filter_bank(n_mels)
            .into_iter()
            .map(|dense| {
                let first = dense.iter().position(|&w| w != 0.0).unwrap_or(0);
                let last = dense.iter().rposition(|&w| w != 0.0).unwrap_or(0);
                MelFilter {
                    first,
                    weights: dense[first..=last.max(first)].to_vec(),
                }
            })
            .collect();
        // Periodic Hann window, as torch.hann_window(400).
        let window = (0..N_FFT)
            .map(|i| {
                let x = 2.0 * std::f64::consts::PI * i as f64 / N_FFT as f64;
                (0.5 - 0.5 * x.cos()) as f32
            })
            .collect();
        let fft = FftPlanner::new().plan_fft_forward(N_FFT);
        Self {
            n_mels,
            filters,
            window,
            fft,
        }
    }

    pub fn n_mels(&self) -> usize {
        self.n_mels
    }

    /// The mel filters, `n_mels` of them, each over its own run of the 201 FFT bins.
    pub fn filters(&self) -> &[MelFilter] {
        &self.filters
    }

    /// The periodic Hann window, `N_FFT` taps.
    pub fn hann_window(&self) -> &[f32] {
        &self.window
    }

    /// Mel power spectrum (before the log) of `samples`: `[n_mels][frames]` flattened row-major,
    /// with `frames = samples.len() / HOP`. Frames are centred, with reflection at the edges.
    pub fn power(&self, samples: &[f32]) -> (Vec<f32>, usize) {
        let (power, frames, _) = self.power_then_silence(samples, 0);
        (power, frames)
    }

    /// [`power`](Self::power) of `samples` followed by `silence` zero samples, without making
    /// them: a frame whose 400 samples are all silence has power exactly 0, so only the frames
    /// that reach the audio go through the FFT. (openai-whisper appends 30 s of silence to
    /// every recording; for a 5-s utterance that was six FFTs in seven spent on zeros.)
    /// Returns the power, the frame count and how many frames from the start may hold more
    /// than silence (every frame after them is 0).
    fn power_then_silence(&self, samples: &[f32], silence: usize) -> (Vec<f32>, usize, usize) {
        let total = samples.len() + silence;
        let frames = total / HOP;
        let pad = N_FFT / 2;
        let n = total as isize;
        let at = |i: isize| -> f32 {
            if n == 0 {
                return 0.0;
            }
            // Reflect padding (no edge repeat), as torch.stft(center=True).
            let mut i = i;
            if i < 0 {
                i = -i;
            }
            if i >= n {
                i = 2 * (n - 1) - i;
            }
            samples
                .get(i.clamp(0, n - 1) as usize)
                .copied()
                .unwrap_or(0.0)
        };
        // Frame f reads samples f*HOP - 200 .. f*HOP + 199 (reflected back from the end only
        // within the last 200 samples): past this frame every read is silence, unless the
        // silence is shorter than a frame's reach and the end reflects audio back in.
        let audible = if silence > N_FFT {
            frames.min((samples.len() + pad).div_ceil(HOP) + 1)
        } else {
            frames
        };
        let mut out = vec![0f32; self.n_mels * frames];
        let mut buf = vec![Complex::new(0f32, 0f32); N_FFT];
        let mut scratch = vec![Complex::new(0f32, 0f32); self.fft.get_inplace_scratch_len()];
        let mut power = vec![0f32; N_FFT / 2 + 1];
        for f in 0..audible {
            let start = (f * HOP) as isize - pad as isize;
            for (j, b) in buf.iter_mut().enumerate() {
                *b = Complex::new(at(start + j as isize) * self.window[j], 0.0);
            }
            self.fft.process_with_scratch(&mut buf, &mut scratch);
            for (p, c) in power.iter_mut().zip(&buf) {
                *p = c.norm_sqr();
            }
            for (m, filt) in self.filters.iter().enumerate() {
                let bins = &power[filt.first..filt.first + filt.weights.len()];
                out[m * frames + f] = bins.iter().zip(&filt.weights).map(|(p, w)| p * w).sum();
            }
        }
        (out, frames, audible)
    }

    /// The normalised log-mel of a whole recording, as openai-whisper computes it: the audio is
    /// followed by 30 s of silence so the last window is complete, and the 8-decade floor is
    /// taken from the loudest frame of the whole recording.
    pub fn log_mel(&self, samples: &[f32]) -> LogMel {
        let content_frames = samples.len() / HOP;
        let (mut data, frames, audible) = self.power_then_silence(samples, WINDOW_SAMPLES);
        // The silent frames' log is one constant: log10 once, not per value (the log was most
        // of what remained of a 5-s utterance's spectrogram once their FFTs were left out).
        let silent = 0f32.max(1e-10).log10();
        let mut peak = if audible < frames {
            silent
        } else {
            f32::NEG_INFINITY
        };
        for row in data.chunks_mut(frames.max(1)) {
            let (heard, quiet) = row.split_at_mut(audible.min(row.len()));
            for v in heard {
                *v = v.max(1e-10).log10();
                peak = peak.max(*v);
            }
            quiet.fill(silent);
        }
        for v in data.iter_mut() {
            *v = (v.max(peak - 8.0) + 4.0) / 4.0;
        }
        LogMel {
            n_mels: self.n_mels,
            frames,
            content_frames,
            data,
        }
    }
}

/// A normalised log-mel spectrogram, `[n_mels][frames]` row-major.
#[derive(Debug, Clone)]
pub struct LogMel {
    pub n_mels: usize,
    pub frames: usize,
    /// Frames that hold audio; the rest is the silence appended for the last window.
    pub content_frames: usize,
    pub data: Vec<f32>,
}

impl LogMel {
    /// `WINDOW_FRAMES` frames starting at `start`, padded with the silence value where the
    /// spectrogram ends: `[n_mels * WINDOW_FRAMES]`.
    pub fn window(&self, start: usize) -> Vec<f32> {
        self.window_of(start, WINDOW_FRAMES)
    }

    /// `len` frames starting at `start`, silent (the padding value) from frame `until` on:
    /// `[n_mels * len]`.
    pub fn window_until(&self, start: usize, len: usize, until: usize) -> Vec<f32> {
        let mut out = self.window_of(start, len);
        let keep = until.saturating_sub(start).min(len);
        if keep < len {
            let pad_value = self.data.last().copied().unwrap_or(-1.5);
            for m in 0..self.n_mels {
                out[m * len + keep..(m + 1) * len].fill(pad_value);
            }
        }
        out
    }

    /// `len` frames starting at `start`, padded likewise: `[n_mels * len]`.
    pub fn window_of(&self, start: usize, len: usize) -> Vec<f32> {
        let pad_value = self.data.last().copied().unwrap_or(-1.5);
        let mut out = vec![pad_value; self.n_mels * len];
        let avail = self.frames.saturating_sub(start).min(len);
        for m in 0..self.n_mels {
            let src = &self.data[m * self.frames + start..m * self.frames + start + avail];
            out[m * len..m * len + avail].copy_from_slice(src);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference values of librosa 0.10's `filters.mel(sr=16000, n_fft=400, n_mels=80)` at
    /// (mel, bin), taken from a separate numpy computation of Slaney's formula.
    #[test]
    fn filter_bank_matches_an_independent_slaney_computation() {
        let bank = mel_filter_bank(80);
        assert_eq!(bank.len(), 80);
        assert_eq!(bank[0].len(), 201);
        for &(m, k, expected) in REFERENCE {
            let got = bank[m][k] as f64;
            assert!(
                (got - expected).abs() <= 1e-6 * expected.abs().max(1e-3),
                "filter {m} bin {k}: {got} vs {expected}"
            );
        }
    }

    #[test]
    fn each_filter_is_a_single_triangle_with_unit_area_in_hz() {
        // Slaney normalisation makes each triangle's area (in Hz) 1: sum(w) * bin width ~ 1
        // wherever the triangle spans several bins.
        for (m, f) in mel_filter_bank(80).iter().enumerate().skip(10) {
            let area: f32 = f.iter().sum::<f32>() * (SAMPLE_RATE as f32 / N_FFT as f32);
            assert!((area - 1.0).abs() < 0.08, "filter {m}: area {area}");
            let peak = f.iter().cloned().fold(0.0, f32::max);
            let peak_at = f.iter().position(|&w| w == peak).unwrap();
            assert!(
                f[..peak_at].windows(2).all(|w| w[0] <= w[1]),
                "filter {m} rises"
            );
            assert!(
                f[peak_at..].windows(2).all(|w| w[0] >= w[1]),
                "filter {m} falls"
            );
        }
    }

    #[test]
    fn a_pure_tone_lights_the_band_that_contains_it() {
        let mel = MelSpectrogram::new(80);
        let tone: Vec<f32> = (0..16000)
            .map(|i| (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 16000.0).sin())
            .collect();
        let (power, frames) = mel.power(&tone);
        assert_eq!(frames, 100);
        let col: Vec<f32> = (0..80).map(|m| power[m * frames + 50]).collect();
        let best = (0..80).max_by(|&a, &b| col[a].total_cmp(&col[b])).unwrap();
        let bank = mel_filter_bank(80);
        let bin_1k = 25; // 1000 Hz / 40 Hz per bin
        let expected = (0..80)
            .max_by(|&a, &b| bank[a][bin_1k].total_cmp(&bank[b][bin_1k]))
            .unwrap();
        assert_eq!(best, expected);
    }

    #[test]
    fn silence_left_out_of_the_fft_gives_the_same_spectrum_bit_for_bit() {
        // The appended silence is not made nor transformed; the spectrum must be the one of
        // the padded samples exactly, at lengths around a frame's reach and for no audio.
        let mel = MelSpectrogram::new(80);
        for len in [0, 1, 150, 199, 200, 201, 360, 16_000 + 77] {
            let samples: Vec<f32> = (0..len)
                .map(|i| ((i * 7919) % 200) as f32 / 100.0 - 1.0)
                .collect();
            for silence in [0, 100, 401, 4_000] {
                let mut padded = samples.clone();
                padded.resize(len + silence, 0.0);
                let want = mel.power(&padded);
                let got = mel.power_then_silence(&samples, silence);
                assert_eq!(got.1, want.1, "{len} + {silence}");
                assert!(
                    got.0
                        .iter()
                        .zip(&want.0)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{len} + {silence}"
                );
            }
            // And the whole log-mel, against openai-whisper's steps on the padded samples.
            let mut padded = samples.clone();
            padded.resize(len + WINDOW_SAMPLES, 0.0);
            let (mut want, _) = mel.power(&padded);
            let peak = want.iter_mut().fold(f32::NEG_INFINITY, |p, v| {
                *v = v.max(1e-10).log10();
                p.max(*v)
            });
            want.iter_mut()
                .for_each(|v| *v = (v.max(peak - 8.0) + 4.0) / 4.0);
            let got = mel.log_mel(&samples).data;
            assert_eq!(got.len(), want.len());
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "log-mel of {len}"
            );
        }
    }

    #[test]
    fn log_mel_of_silence_sits_at_the_floor_and_windows_pad() {
        let mel = MelSpectrogram::new(80);
        let lm = mel.log_mel(&vec![0.0; 8000]);
        assert_eq!(lm.content_frames, 50);
        assert_eq!(lm.frames, 50 + WINDOW_FRAMES);
        assert!(lm.data.iter().all(|&v| (v - (-1.5)).abs() < 1e-6));
        let w = lm.window(lm.frames - 10);
        assert_eq!(w.len(), 80 * WINDOW_FRAMES);
    }

    const REFERENCE: &[(usize, usize, f64)] = &include!("mel_reference.in");
}
