//! G.711 bytes of a batch of calls to 16 kHz samples in one op: the contract of the GPU kernel
//! `kernels/g711.cu` and its CPU reference, which follows the kernel's loops.
//!
//! Why a kernel: a GPU host that takes thousands of calls receives 8,000 bytes a second from
//! each party and hands the recogniser 16,000 floats a second (8x the bytes). Decoding and
//! resampling on the GPU moves the bytes, not the floats, across the bus and leaves the
//! samples where the mel kernel (`kernels/log_mel.cu`) reads them.
//!
//! The resampler is not rubato's (the production CPU path, `resample::to_16k`): a half-band
//! windowed-sinc interpolator ([`TAPS_PER_SIDE`] taps on each side, Kaiser window, beta
//! [`KAISER_BETA`]), which a GPU thread computes in one short loop. Its output is aligned with
//! the input as `to_16k`'s is, and on telephone speech it is within [`REFERENCE_BOUND`] of it
//! (relative RMS difference; the two filters differ only near 4 kHz, where G.711's band ends).
//!
//! The CPU reference runs wherever the op is applied to a CPU tensor; with the `cuda` feature a
//! CUDA tensor runs the kernel, which `benches/gpu-check.sh` (`vishguard bench kernels`)
//! compares with the production path on the GPU host. Not yet used by the network sources: it
//! will be once the GPU check has measured it (no GPU has run it so far).

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::g711::{alaw_to_linear, ulaw_to_linear, Law};

/// Taps on each side of an interpolated sample.
pub const TAPS_PER_SIDE: usize = 16;
/// The Kaiser window's shape: about 70 dB of stop band at this length.
pub const KAISER_BETA: f64 = 7.0;
/// Largest RMS difference from the production path, relative to the production output's RMS,
/// on speech-band audio: the CPU reference measured 0.0019-0.0020 in the test
/// `the_reference_follows_the_production_path`.
pub const REFERENCE_BOUND: f32 = 0.01;

/// Largest absolute difference allowed between the GPU kernel and the CPU reference (samples in
/// [-1, 1]; the same 32 products in the same order, fused on the GPU).
pub const KERNEL_BOUND: f32 = 1e-5;

/// Most output values per call: the kernel's flat index stays under 2^31 with room for a
/// block past the end.
const MAX_VALUES: usize = 1 << 30;

/// G.711 to 16 kHz for a batch of rows (see the module docs). Cheap to clone.
#[derive(Debug, Clone)]
pub struct G711To16k {
    table: Arc<[f32; 256]>,
    taps: Arc<Vec<f32>>,
}

/// I0, the modified Bessel function of the first kind (the Kaiser window), by its series.
fn bessel_i0(x: f64) -> f64 {
    let (mut sum, mut term, mut k) = (1.0, 1.0, 1.0);
    while term > 1e-12 * sum {
        term *= (x / (2.0 * k)).powi(2);
        sum += term;
        k += 1.0;
    }
    sum
}

/// The odd phase of the half-band interpolator: `2 * TAPS_PER_SIDE` taps at offsets
/// `j - TAPS_PER_SIDE + 0.5` input samples from the new sample, sinc times Kaiser.
fn half_band_taps() -> Vec<f32> {
    let half = TAPS_PER_SIDE as f64;
    (0..2 * TAPS_PER_SIDE)
        .map(|j| {
            let d = j as f64 - half + 0.5;
            let sinc = (std::f64::consts::PI * d).sin() / (std::f64::consts::PI * d);
            let r = d / (half + 0.5);
            let window =
                bessel_i0(KAISER_BETA * (1.0 - r * r).max(0.0).sqrt()) / bessel_i0(KAISER_BETA);
            (sinc * window) as f32
        })
        .collect()
}

impl G711To16k {
    pub fn new(law: Law) -> Self {
        let convert = match law {
            Law::Mu => ulaw_to_linear,
            Law::A => alaw_to_linear,
        };
        let mut table = [0f32; 256];
        for (b, v) in table.iter_mut().enumerate() {
            *v = f32::from(convert(b as u8)) / 32768.0;
        }
        Self {
            table: Arc::new(table),
            taps: Arc::new(half_band_taps()),
        }
    }

    /// 16 kHz samples of each row of `codes` `[rows, n]` (u8 G.711 bytes at 8 kHz; row `i`
    /// holds audio in its first `lens[i]` bytes): `[rows, 2 n]` f32 in [-1, 1], on `codes`'
    /// device, zero from `2 lens[i]` on.
    ///
    /// Errors: `codes` not 2-D u8, `lens` not one per row, an output past 2^31 values (the
    /// kernel's indices are 32-bit), a device other than the CPU or (`cuda`) CUDA.
    pub fn compute(&self, codes: &Tensor, lens: &[usize]) -> Result<Tensor> {
        let (rows, n) = codes.dims2()?;
        if codes.dtype() != DType::U8 {
            candle_core::bail!("g711_to_16k: u8 codes, got {:?}", codes.dtype());
        }
        if lens.len() != rows {
            candle_core::bail!("g711_to_16k: {} lengths for {rows} rows", lens.len());
        }
        if rows * n * 2 > MAX_VALUES {
            candle_core::bail!("g711_to_16k: {rows} rows of {n} bytes is out of range");
        }
        if rows * n == 0 {
            return Tensor::zeros((rows, 2 * n), DType::F32, codes.device());
        }
        codes.contiguous()?.apply_op1_no_bwd(&Op { op: self, lens })
    }
}

struct Op<'a> {
    op: &'a G711To16k,
    lens: &'a [usize],
}

impl CustomOp1 for Op<'_> {
    fn name(&self) -> &'static str {
        "g711-to-16k"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (rows, n) = layout.shape().dims2()?;
        let codes = vishguard_cpu_ops::contiguous_data::<u8>(storage, layout, self.name())?;
        let mut out = vec![0f32; rows * 2 * n];
        out.par_chunks_mut((2 * n).max(1))
            .enumerate()
            .for_each(|(r, dst)| {
                let row = &codes[r * n..(r + 1) * n];
                reference_row(self.op, &row[..self.lens[r].min(n)], dst);
            });
        Ok((CpuStorage::F32(out), Shape::from((rows, 2 * n))))
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

/// One row, as the kernel computes it: even outputs are the decoded bytes, odd outputs the
/// taps' sum over the decoded bytes around them (silence outside the row's audio).
fn reference_row(op: &G711To16k, row: &[u8], out: &mut [f32]) {
    let len = row.len();
    let taps = &op.taps;
    for n in 0..len {
        out[2 * n] = op.table[row[n] as usize];
        let first = n as isize - TAPS_PER_SIDE as isize + 1;
        let mut v = 0f32;
        for (j, t) in taps.iter().enumerate() {
            let k = first + j as isize;
            if k >= 0 && (k as usize) < len {
                v += t * op.table[row[k as usize] as usize];
            }
        }
        out[2 * n + 1] = v;
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::*;
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::WrapErr;
    use candle_core::CudaStorage;

    /// `kernels/g711.cu`, compiled to PTX by build.rs.
    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/g711.ptx"));

    pub(super) fn forward(
        op: &Op<'_>,
        storage: &CudaStorage,
        layout: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (rows, n) = layout.shape().dims2()?;
        let (a, b) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("g711_to_16k: contiguous codes".into()))?;
        let dev = storage.device().clone();
        let codes = storage.as_cuda_slice::<u8>()?.slice(a..b);
        let lens: Vec<i32> = op.lens.iter().map(|&l| l.min(n) as i32).collect();
        let lens = dev.clone_htod(&lens)?;
        let table = dev.clone_htod(&op.op.table[..])?;
        let taps = dev.clone_htod(&op.op.taps[..])?;
        let total = rows * 2 * n;
        // SAFETY: the kernel writes every output value.
        let out = unsafe { dev.alloc::<f32>(total)? };
        let (n_i, taps_i, total_i) = (n as i32, TAPS_PER_SIDE as i32, total as i32);
        let func = dev.get_or_load_custom_func("g711_to_16k", "vishguard_g711", PTX)?;
        let mut launch = func.builder();
        launch.arg(&codes);
        launch.arg(&lens);
        launch.arg(&n_i);
        launch.arg(&table);
        launch.arg(&taps);
        launch.arg(&taps_i);
        launch.arg(&out);
        launch.arg(&total_i);
        // SAFETY: the arguments match the kernel's signature in kernels/g711.cu.
        unsafe { launch.launch(LaunchConfig::for_num_elems(total as u32)) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev),
            Shape::from((rows, 2 * n)),
        ))
    }
}

/// 16 kHz samples to 8 kHz through the same half-band filter (the interpolator's taps,
/// halved, around the kept sample), so that what comes out has nothing above 4 kHz to fold
/// back: for tests and benches that make G.711 audio from 16 kHz recordings.
pub fn half_band_decimate(x: &[f32]) -> Vec<f32> {
    let taps = half_band_taps();
    let t = TAPS_PER_SIDE as isize;
    let at = |i: isize| {
        if i >= 0 {
            x.get(i as usize).copied().unwrap_or(0.0)
        } else {
            0.0
        }
    };
    (0..x.len() / 2)
        .map(|n| {
            let centre = 2 * n as isize;
            let odd: f32 = taps
                .iter()
                .enumerate()
                .map(|(j, h)| h * at(centre + 2 * (j as isize - t) + 1))
                .sum();
            (at(centre) + odd) / 2.0
        })
        .collect()
}

/// The production path for one row, as the network sources run it: decode, then `to_16k`.
pub fn production_row(row: &[u8], law: Law) -> Vec<f32> {
    let decoded = super::g711::decode(row, law);
    super::resample::to_16k(&decoded, 8_000).expect("8 kHz is a supported rate")
}

/// RMS of `a - b` relative to the RMS of `b`, over the common length less `edge` samples at
/// each end (where the two filters see the start and end of the audio differently).
pub fn relative_rms_difference(a: &[f32], b: &[f32], edge: usize) -> f32 {
    let n = a.len().min(b.len());
    if n <= 2 * edge {
        return 0.0;
    }
    let (mut diff, mut power) = (0f64, 0f64);
    for i in edge..n - edge {
        diff += f64::from(a[i] - b[i]).powi(2);
        power += f64::from(b[i]).powi(2);
    }
    if power == 0.0 {
        return if diff == 0.0 { 0.0 } else { f32::INFINITY };
    }
    (diff / power).sqrt() as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::g711::encode_ulaw;
    use candle_core::Device;

    /// 8 kHz speech-band audio: a 140 Hz voice with harmonics to 3.4 kHz and a little noise.
    fn voice(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let t = i as f32 / 8_000.0;
                let mut v = 0.0;
                for h in 1..24 {
                    let f = 140.0 * h as f32 * (1.0 + 0.01 * seed as f32);
                    v += (2.0 * std::f32::consts::PI * f * t).sin() * 0.3 / h as f32;
                }
                let noise = ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32
                    / (1u32 << 24) as f32
                    - 0.5;
                v * (1.0 + 0.5 * (2.0 * std::f32::consts::PI * 3.0 * t).sin()) + 0.02 * noise
            })
            .collect()
    }

    #[test]
    fn the_reference_follows_the_production_path() {
        let rows: Vec<Vec<u8>> = vec![
            encode_ulaw(&voice(16_000, 1)),
            encode_ulaw(&voice(5_000, 2)),
        ];
        let n = rows.iter().map(Vec::len).max().unwrap();
        let mut flat = vec![0xffu8; rows.len() * n];
        for (r, row) in rows.iter().enumerate() {
            flat[r * n..r * n + row.len()].copy_from_slice(row);
        }
        let lens: Vec<usize> = rows.iter().map(Vec::len).collect();
        let codes = Tensor::from_vec(flat, (rows.len(), n), &Device::Cpu).unwrap();
        let got = G711To16k::new(Law::Mu)
            .compute(&codes, &lens)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (r, row) in rows.iter().enumerate() {
            let want = production_row(row, Law::Mu);
            assert_eq!(want.len(), 2 * row.len());
            // Even outputs are the decoded bytes themselves.
            let decoded = crate::audio::g711::decode(row, Law::Mu);
            for (k, d) in decoded.iter().enumerate() {
                assert_eq!(got[r][2 * k], *d);
            }
            let diff = relative_rms_difference(&got[r][..want.len()], &want, 320);
            eprintln!("row {r}: relative RMS difference {diff}");
            assert!(
                diff < REFERENCE_BOUND,
                "row {r}: relative RMS difference {diff}"
            );
            assert!(got[r][2 * row.len()..].iter().all(|&v| v == 0.0));
        }
    }

    #[test]
    fn a_law_rows_and_bad_shapes() {
        let op = G711To16k::new(Law::A);
        let row = crate::audio::g711::decode(&[0xd5; 4], Law::A);
        assert!(
            row.iter().all(|v| v.abs() < 0.001),
            "A-law's near-zero byte"
        );
        let codes = Tensor::from_vec(vec![0xd5u8; 8], (2, 4), &Device::Cpu).unwrap();
        let out = op
            .compute(&codes, &[4, 0])
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(out[1], vec![0.0; 8]);
        let e = op.compute(&codes, &[4]).unwrap_err().to_string();
        assert!(e.contains("1 lengths for 2 rows"), "{e}");
        let floats = Tensor::zeros((2, 4), DType::F32, &Device::Cpu).unwrap();
        let e = op.compute(&floats, &[4, 4]).unwrap_err().to_string();
        assert!(e.contains("u8 codes"), "{e}");
    }

    #[test]
    fn decimating_keeps_the_speech_band_and_drops_what_would_fold() {
        let tone = |f: f32| -> Vec<f32> {
            (0..16_000)
                .map(|i| (2.0 * std::f32::consts::PI * f * i as f32 / 16_000.0).sin())
                .collect()
        };
        let rms = |x: &[f32]| {
            (x[400..x.len() - 400].iter().map(|v| v * v).sum::<f32>() / (x.len() - 800) as f32)
                .sqrt()
        };
        let pass = rms(&half_band_decimate(&tone(1_000.0)));
        assert!(
            (pass - std::f32::consts::FRAC_1_SQRT_2).abs() < 0.01,
            "1 kHz: {pass}"
        );
        let folded = rms(&half_band_decimate(&tone(6_000.0)));
        assert!(folded < 0.01, "6 kHz would fold to 2 kHz: {folded}");
        assert_eq!(half_band_decimate(&[0.5; 7]).len(), 3);
        // No rows, or rows of no bytes, are an empty batch, not a launch of nothing.
        let op = G711To16k::new(Law::Mu);
        for (rows, n) in [(0, 8), (2, 0)] {
            let codes = Tensor::zeros((rows, n), DType::U8, &Device::Cpu).unwrap();
            let out = op.compute(&codes, &vec![n; rows]).unwrap();
            assert_eq!(out.dims(), &[rows, 2 * n]);
        }
    }

    #[test]
    fn the_half_band_taps_pass_the_speech_band_and_stop_images() {
        // Response of the odd phase at frequency f (Hz, 8 kHz input): the interpolator's gain
        // is (1 + H_odd(f)) / 2 in the band and its image at 8000 - f is (1 - H_odd(f)) / 2.
        let taps = half_band_taps();
        let response = |f: f64| -> f64 {
            let w = 2.0 * std::f64::consts::PI * f / 8_000.0;
            taps.iter()
                .enumerate()
                .map(|(j, &t)| t as f64 * (w * (j as f64 - TAPS_PER_SIDE as f64 + 0.5)).cos())
                .sum()
        };
        for f in [100.0, 1_000.0, 3_000.0, 3_400.0] {
            let pass = (1.0 + response(f)) / 2.0;
            let image = ((1.0 - response(f)) / 2.0).abs();
            assert!((pass - 1.0).abs() < 0.01, "{f} Hz: gain {pass}");
            assert!(image < 0.01, "{f} Hz: image at {} Hz {image}", 8_000.0 - f);
        }
    }
}
