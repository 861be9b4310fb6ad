//! Log-mel spectrograms of a batch of recordings in one op: the contract of the GPU kernel
//! `kernels/log_mel.cu` and its CPU reference, which follows the kernel's loops step by step.
//!
//! Why a kernel: on a GPU host the recogniser hears hundreds of utterances a batch, and their
//! mel spectrograms were computed on the CPU one by one (rustfft) and copied over as
//! `[n_mels, frames]` floats: 80 x 3000 x 4 bytes = 960 kB per 30-s window, against 480 kB of
//! 16 kHz samples. The kernel takes the samples and leaves the spectrogram on the device.
//!
//! Output `[rows, n_mels, frames]`, each row as `MelSpectrogram::log_mel(&samples[..len])
//! .window_of(0, frames)` computes it (the same framing, reflection at the start, silence
//! after the row's length), within [`REFERENCE_BOUND`] of it: the DFT here is a direct sum,
//! not rustfft's, so the sums round differently. The 8-decade floor is taken from the loudest
//! of the `frames` frames, which is the production path's peak whenever the row's audio fits
//! and the 200 samples a frame reaches past its centre (`len <= frames * 160 - 200`); past
//! that, frames beyond the last one could hold a louder value, which moves only values at the
//! floor.
//!
//! The CPU reference runs wherever the op is applied to a CPU tensor (tests, `vishguard bench
//! kernels --device cpu`); with the `cuda` feature a CUDA tensor runs the kernel, which
//! `benches/gpu-check.sh` compares with this reference on the GPU host. Not yet used by the
//! recogniser: it will be once the GPU check has measured it (no GPU has run it so far).

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::mel::{MelSpectrogram, HOP, N_FFT};

/// FFT bins of a 400-point real DFT.
const N_BINS: usize = N_FFT / 2 + 1;

/// Largest difference, in normalised log-mel units (the encoder's input, about [-1.5, 1.5]),
/// allowed between this op and `MelSpectrogram::log_mel` on the same audio. The CPU reference
/// measured 1.1e-5 (80 mels) and 4.3e-5 (128) in the test
/// `the_reference_follows_the_production_log_mel`; the margin is for the GPU's own rounding
/// (fused multiply-adds, its `log10f`).
pub const REFERENCE_BOUND: f32 = 1e-3;

/// Largest difference allowed between the GPU kernel and the CPU reference on the same rows
/// (the same sums in the same order; the GPU fuses multiply-adds and has its own `log10f`).
pub const KERNEL_BOUND: f32 = 1e-4;

/// Most frames per row (about 2.8 hours): `frame * 160` stays a 32-bit index in the kernel.
const MAX_FRAMES: usize = 1 << 20;
/// Most output values per call: the kernels' flat indices stay under 2^31 with room for a
/// block past the end.
const MAX_VALUES: usize = 1 << 30;

/// The tables the kernel reads: window, twiddles and the sparse filter bank, as flat arrays.
#[derive(Debug)]
struct MelTables {
    n_mels: usize,
    window: Vec<f32>,
    cos: Vec<f32>,
    sin: Vec<f32>,
    first: Vec<i32>,
    len: Vec<i32>,
    off: Vec<i32>,
    weights: Vec<f32>,
}

/// Batched log-mel (see the module docs). Cheap to clone; build once per model.
#[derive(Debug, Clone)]
pub struct LogMelBatch {
    tables: Arc<MelTables>,
}

impl LogMelBatch {
    pub fn new(mel: &MelSpectrogram) -> Self {
        let (mut first, mut len, mut off, mut weights) = (vec![], vec![], vec![], vec![]);
        for f in mel.filters() {
            first.push(f.first as i32);
            len.push(f.weights.len() as i32);
            off.push(weights.len() as i32);
            weights.extend_from_slice(&f.weights);
        }
        // Twiddles in f64, then rounded once: cos/sin(2 pi j / 400).
        let angle = |j: usize| 2.0 * std::f64::consts::PI * j as f64 / N_FFT as f64;
        Self {
            tables: Arc::new(MelTables {
                n_mels: mel.n_mels(),
                window: mel.hann_window().to_vec(),
                cos: (0..N_FFT).map(|j| angle(j).cos() as f32).collect(),
                sin: (0..N_FFT).map(|j| angle(j).sin() as f32).collect(),
                first,
                len,
                off,
                weights,
            }),
        }
    }

    pub fn n_mels(&self) -> usize {
        self.tables.n_mels
    }

    /// Log-mel of each row of `pcm` `[rows, samples]` (f32, 16 kHz; row `i` holds audio in
    /// its first `lens[i]` samples and is read as silence after), `frames` frames from the
    /// start of each: `[rows, n_mels, frames]`, on `pcm`'s device.
    ///
    /// Errors: `pcm` not 2-D f32, `lens` not one per row, no frames, a batch whose output
    /// passes 2^31 values (the kernel's indices are 32-bit), a device other than the CPU or
    /// (with the `cuda` feature) CUDA.
    pub fn compute(&self, pcm: &Tensor, lens: &[usize], frames: usize) -> Result<Tensor> {
        let (rows, _) = pcm.dims2()?;
        if pcm.dtype() != DType::F32 {
            candle_core::bail!("log_mel_batch: f32 samples, got {:?}", pcm.dtype());
        }
        if lens.len() != rows {
            candle_core::bail!("log_mel_batch: {} lengths for {rows} rows", lens.len());
        }
        // The kernel's grid: frames along x, rows along y (at most 65,535); its indices are
        // 32-bit, kept well under 2^31.
        if frames == 0
            || frames > MAX_FRAMES
            || rows > 65_535
            || rows * self.tables.n_mels * frames > MAX_VALUES
        {
            candle_core::bail!("log_mel_batch: {rows} rows of {frames} frames is out of range");
        }
        if rows == 0 {
            return Tensor::zeros((0, self.tables.n_mels, frames), DType::F32, pcm.device());
        }
        pcm.contiguous()?.apply_op1_no_bwd(&Op {
            tables: &self.tables,
            lens,
            frames,
        })
    }
}

struct Op<'a> {
    tables: &'a MelTables,
    lens: &'a [usize],
    frames: usize,
}

impl CustomOp1 for Op<'_> {
    fn name(&self) -> &'static str {
        "log-mel-batch"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (rows, samples) = layout.shape().dims2()?;
        let pcm = vishguard_cpu_ops::contiguous_data::<f32>(storage, layout, self.name())?;
        let t = self.tables;
        let per_row = t.n_mels * self.frames;
        let mut out = vec![0f32; rows * per_row];
        out.par_chunks_mut(per_row.max(1))
            .enumerate()
            .for_each(|(r, dst)| {
                let row = &pcm[r * samples..(r + 1) * samples];
                reference_row(t, row, self.lens[r].min(samples), self.frames, dst);
            });
        Ok((
            CpuStorage::F32(out),
            Shape::from((rows, t.n_mels, self.frames)),
        ))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        cuda::forward(self, storage, layout)
    }
}

/// One row, as the kernel computes it: each frame's windowed samples, the direct DFT's power,
/// the filters' sums and their log10 (`log_mel_frames`), then the floor 8 decades under the
/// row's peak and the scaling (`log_mel_normalise`).
fn reference_row(t: &MelTables, row: &[f32], len: usize, frames: usize, out: &mut [f32]) {
    let mut x = [0f32; N_FFT];
    let mut power = [0f32; N_BINS];
    let mut peak = f32::NEG_INFINITY;
    for f in 0..frames {
        let start = (f * HOP) as isize - (N_FFT / 2) as isize;
        for (n, v) in x.iter_mut().enumerate() {
            let i = (start + n as isize).unsigned_abs();
            *v = if i < len { row[i] } else { 0.0 } * t.window[n];
        }
        for (k, p) in power.iter_mut().enumerate() {
            let (mut re, mut im) = (0f32, 0f32);
            let mut j = 0;
            for v in x {
                re += v * t.cos[j];
                im -= v * t.sin[j];
                j += k;
                if j >= N_FFT {
                    j -= N_FFT;
                }
            }
            *p = re * re + im * im;
        }
        for m in 0..t.n_mels {
            let (first, count, off) = (t.first[m] as usize, t.len[m] as usize, t.off[m] as usize);
            let s: f32 = power[first..first + count]
                .iter()
                .zip(&t.weights[off..off + count])
                .fold(0.0, |s, (p, w)| s + p * w);
            let v = s.max(1e-10).log10();
            out[m * frames + f] = v;
            peak = peak.max(v);
        }
    }
    for v in out.iter_mut() {
        *v = (v.max(peak - 8.0) + 4.0) / 4.0;
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::*;
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::WrapErr;
    use candle_core::CudaStorage;

    /// `kernels/log_mel.cu`, compiled to PTX by build.rs.
    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/log_mel.ptx"));
    const MODULE: &str = "vishguard_log_mel";
    /// Threads per block of `log_mel_frames` (its reduction assumes exactly this many).
    const THREADS: u32 = 256;

    pub(super) fn forward(
        op: &Op<'_>,
        storage: &CudaStorage,
        layout: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (rows, samples) = layout.shape().dims2()?;
        let (a, b) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("log_mel_batch: contiguous samples".into()))?;
        let dev = storage.device().clone();
        let pcm = storage.as_cuda_slice::<f32>()?.slice(a..b);
        let t = op.tables;
        let lens: Vec<i32> = op.lens.iter().map(|&l| l.min(samples) as i32).collect();
        let lens = dev.clone_htod(&lens)?;
        let window = dev.clone_htod(&t.window)?;
        let cos = dev.clone_htod(&t.cos)?;
        let sin = dev.clone_htod(&t.sin)?;
        let first = dev.clone_htod(&t.first)?;
        let len = dev.clone_htod(&t.len)?;
        let off = dev.clone_htod(&t.off)?;
        let weights = dev.clone_htod(&t.weights)?;
        let peak = dev.clone_htod(&vec![f32::NEG_INFINITY; rows])?;
        let per_row = t.n_mels * op.frames;
        let total = rows * per_row;
        // SAFETY: every value is written by `log_mel_frames` before it is read.
        let out = unsafe { dev.alloc::<f32>(total)? };
        let (samples_i, frames_i, n_mels_i) = (samples as i32, op.frames as i32, t.n_mels as i32);

        let func = dev.get_or_load_custom_func("log_mel_frames", MODULE, PTX)?;
        let mut launch = func.builder();
        launch.arg(&pcm);
        launch.arg(&lens);
        launch.arg(&samples_i);
        launch.arg(&frames_i);
        launch.arg(&window);
        launch.arg(&cos);
        launch.arg(&sin);
        launch.arg(&first);
        launch.arg(&len);
        launch.arg(&off);
        launch.arg(&weights);
        launch.arg(&n_mels_i);
        launch.arg(&out);
        launch.arg(&peak);
        let cfg = LaunchConfig {
            grid_dim: (op.frames as u32, rows as u32, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments match the kernel's signature in kernels/log_mel.cu.
        unsafe { launch.launch(cfg) }.w()?;

        let (per_row_i, total_i) = (per_row as i32, total as i32);
        let func = dev.get_or_load_custom_func("log_mel_normalise", MODULE, PTX)?;
        let mut launch = func.builder();
        launch.arg(&out);
        launch.arg(&peak);
        launch.arg(&per_row_i);
        launch.arg(&total_i);
        // SAFETY: as above.
        unsafe { launch.launch(LaunchConfig::for_num_elems(total as u32)) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev),
            Shape::from((rows, t.n_mels, op.frames)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The largest difference between the op's rows and the production path's windows.
    fn worst_difference(mel: &MelSpectrogram, rows: &[Vec<f32>], frames: usize) -> f32 {
        let samples = rows.iter().map(Vec::len).max().unwrap();
        let mut flat = vec![0f32; rows.len() * samples];
        for (r, row) in rows.iter().enumerate() {
            flat[r * samples..r * samples + row.len()].copy_from_slice(row);
        }
        let lens: Vec<usize> = rows.iter().map(Vec::len).collect();
        let pcm = Tensor::from_vec(flat, (rows.len(), samples), &Device::Cpu).unwrap();
        let got = LogMelBatch::new(mel)
            .compute(&pcm, &lens, frames)
            .unwrap()
            .to_vec3::<f32>()
            .unwrap();
        let mut worst = 0f32;
        for (r, row) in rows.iter().enumerate() {
            let want = mel.log_mel(row).window_of(0, frames);
            for m in 0..mel.n_mels() {
                for f in 0..frames {
                    worst = worst.max((got[r][m][f] - want[m * frames + f]).abs());
                }
            }
        }
        worst
    }

    #[test]
    fn the_reference_follows_the_production_log_mel() {
        // Speech-like rows of different lengths (one shorter than half a frame, where the
        // reflection at the start reads past the audio), a loud and a quiet one, in one batch.
        let speech = |n: usize, gain: f32, seed: u32| -> Vec<f32> {
            (0..n)
                .map(|i| {
                    let t = i as f32 / 16_000.0;
                    let noise = ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8)
                        as f32
                        / (1u32 << 24) as f32
                        - 0.5;
                    gain * ((2.0 * std::f32::consts::PI * 180.0 * t).sin() * 0.5
                        + (2.0 * std::f32::consts::PI * 1_250.0 * t).sin() * 0.2
                        + noise * 0.1)
                })
                .collect()
        };
        let rows = vec![
            speech(48_000, 0.8, 1),
            speech(100, 0.5, 2),
            speech(20_000, 0.01, 3),
        ];
        for n_mels in [80, 128] {
            let mel = MelSpectrogram::new(n_mels);
            let worst = worst_difference(&mel, &rows, 400);
            eprintln!("{n_mels} mels: worst {worst}");
            assert!(worst < REFERENCE_BOUND, "{n_mels} mels: worst {worst}");
        }
    }

    #[test]
    fn bad_shapes_are_named() {
        let mel = LogMelBatch::new(&MelSpectrogram::new(80));
        let pcm = Tensor::zeros((2, 1600), DType::F32, &Device::Cpu).unwrap();
        let e = mel.compute(&pcm, &[1600], 10).unwrap_err().to_string();
        assert!(e.contains("1 lengths for 2 rows"), "{e}");
        let e = mel.compute(&pcm, &[1600, 1600], 0).unwrap_err().to_string();
        assert!(e.contains("out of range"), "{e}");
        let ints = Tensor::zeros((2, 1600), DType::U32, &Device::Cpu).unwrap();
        let e = mel.compute(&ints, &[1, 1], 10).unwrap_err().to_string();
        assert!(e.contains("f32 samples"), "{e}");
        let e = mel
            .compute(&pcm, &[1600, 1600], 1 << 21)
            .unwrap_err()
            .to_string();
        assert!(e.contains("out of range"), "{e}");
        let none = Tensor::zeros((0, 1600), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(mel.compute(&none, &[], 10).unwrap().dims(), &[0, 80, 10]);
        // Silence gives the floor everywhere, as the production path does.
        let out = mel.compute(&pcm, &[0, 1600], 10).unwrap();
        let want = (((-10f32).max(-18.0)) + 4.0) / 4.0;
        for v in out.flatten_all().unwrap().to_vec1::<f32>().unwrap() {
            assert!((v - want).abs() < 1e-6, "{v}");
        }
    }
}
