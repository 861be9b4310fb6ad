//! Softmax and exact (erf) GELU for f32 tensors on the CPU, vectorised.
//!
//! Why: candle's CPU softmax and `gelu_erf` call libm's scalar `expf` and `erff` once per
//! element. In a 30-s encoder window those two were a third of tiny.en's encoder time:
//! the attention weights are [heads, 1500, 1500] per layer, and the MLP's GELU runs over
//! [1500, 4 d]. Here `exp` and `erf` are short polynomials with no branches and no calls, so
//! the compiler vectorises the loops; [`pulp::Arch::dispatch`] (through `WithSimd` structs) compiles them for AVX2/FMA (or
//! AVX-512, NEON) when the CPU has it, chosen at run time. Measured on the 2-core machine,
//! 2 threads: a softmax over [6, 466, 1500] 10.7 -> 3.8 ms, GELU over [1500, 1536] 22.8 ->
//! 1.8 ms.
//!
//! Accuracy (tested below): `exp` within 1.2e-7 relative error of the f64 value over
//! [-87, 88] (Cephes `expf`: range reduction by ln 2 in two parts, degree-6 polynomial);
//! `erf` within 6e-7 absolute (Abramowitz & Stegun 7.1.26, with this `exp`). Both are about an
//! f32 rounding step, so transcripts match candle's ops in the model tests.
//!
//! Anything else (another dtype, a GPU) goes to candle's own ops.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `exp(x)` for f32 (Cephes `expf`). 0 below -87.34 (where f32 goes subnormal), and -inf gives
/// 0; NaN gives NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 in two parts, so `x - n ln 2` loses nothing for |n| up to 127.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding it rounds to an integer (to even) and leaves that integer in the
    // low mantissa bits, with no float-to-int conversion (which would not vectorise as well).
    const ROUND: f32 = 12_582_912.0;
    const MIN: f32 = -87.336_55;
    const MAX: f32 = 88.376_26;
    let xc = x.clamp(MIN, MAX);
    let shifted = xc * LOG2E + ROUND;
    let n = shifted - ROUND;
    let n_int = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    let two_n = f32::from_bits((n_int.wrapping_add(127) << 23) as u32);
    if x < MIN {
        0.0
    } else {
        e * two_n
    }
}

/// `erf(x)` for f32 (Abramowitz & Stegun 7.1.26, absolute error under 6e-7).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_8) * t - 0.284_496_72) * t
        + 0.254_829_6)
        * t;
    (1.0 - poly * exp(-a * a)).copysign(x)
}

/// GELU as Whisper was trained with: `x / 2 * (1 + erf(x / sqrt 2))`.
#[inline(always)]
pub fn gelu_erf_one(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// Softmax of one row into `out` (same length). A row of all -inf gives NaN, as candle's does.
#[inline(always)]
pub(crate) fn softmax_row(row: &[f32], out: &mut [f32]) {
    // Eight running maxima and sums: a single accumulator is a chain the compiler may not
    // reorder, so it would not vectorise.
    let mut max8 = [f32::NEG_INFINITY; 8];
    let (chunks, rest) = row.as_chunks::<8>();
    for c in chunks {
        for i in 0..8 {
            max8[i] = if c[i] > max8[i] { c[i] } else { max8[i] };
        }
    }
    let max = rest
        .iter()
        .chain(&max8)
        .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    for (o, &v) in out.iter_mut().zip(row) {
        *o = exp(v - max);
    }
    let mut sum8 = [0f32; 8];
    let (chunks, rest) = out.as_chunks::<8>();
    for c in chunks {
        for i in 0..8 {
            sum8[i] += c[i];
        }
    }
    let inv = 1.0 / (sum8.iter().sum::<f32>() + rest.iter().sum::<f32>());
    for o in out.iter_mut() {
        *o *= inv;
    }
}

/// [`softmax_row`] as a `pulp::WithSimd`: its `with_simd` is compiled inside pulp's
/// target-feature function, so everything it inlines is vectorised for that CPU. (A closure
/// handed to `dispatch` may stay a function of its own, compiled for the baseline CPU: an
/// earlier kernel's `mul_add` became a libm call that way.)
pub(crate) struct Softmax<'a> {
    pub(crate) row: &'a [f32],
    pub(crate) out: &'a mut [f32],
}

impl pulp::WithSimd for Softmax<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        softmax_row(self.row, self.out)
    }
}

/// [`gelu_erf_one`] over a slice, as a `pulp::WithSimd` (see [`Softmax`]).
struct Gelu<'a> {
    x: &'a [f32],
    out: &'a mut [f32],
}

impl pulp::WithSimd for Gelu<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        for (o, &v) in self.out.iter_mut().zip(self.x) {
            *o = gelu_erf_one(v);
        }
    }
}

struct SoftmaxLastDim;

impl CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "vishguard-softmax-last-dim"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = crate::contiguous_data::<f32>(storage, layout, self.name())?;
        let width = layout.dims().last().copied().unwrap_or(1).max(1);
        let mut dst = vec![0f32; src.len()];
        let arch = pulp::Arch::new();
        src.par_chunks(width)
            .zip(dst.par_chunks_mut(width))
            .for_each(|(row, out)| arch.dispatch(Softmax { row, out }));
        Ok((CpuStorage::F32(dst), layout.shape().clone()))
    }
}

struct GeluErf;

/// Elements per task of the GELU: large enough that the task costs more than handing it out.
const GELU_CHUNK: usize = 16 << 10;

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "vishguard-gelu-erf"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = crate::contiguous_data::<f32>(storage, layout, self.name())?;
        let mut dst = vec![0f32; src.len()];
        let arch = pulp::Arch::new();
        src.par_chunks(GELU_CHUNK)
            .zip(dst.par_chunks_mut(GELU_CHUNK))
            .for_each(|(x, out)| arch.dispatch(Gelu { x, out }));
        Ok((CpuStorage::F32(dst), layout.shape().clone()))
    }
}

pub(crate) fn on_cpu_f32(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// Softmax over the last dimension (any shape). CPU f32: the vectorised kernel above;
/// otherwise candle's `softmax_last_dim`.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if on_cpu_f32(x) {
        x.contiguous()?.apply_op1_no_bwd(&SoftmaxLastDim)
    } else {
        candle_nn::ops::softmax_last_dim(x)
    }
}

/// Exact GELU, elementwise (any shape). CPU f32: the vectorised kernel above; otherwise
/// candle's `gelu_erf`.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if on_cpu_f32(x) {
        x.contiguous()?.apply_op1_no_bwd(&GeluErf)
    } else {
        x.gelu_erf()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::{Device, D};

    /// erf in f64 by the Maclaurin series (|x| <= 3) or its complement's continued
    /// fraction, good to 1e-12 here: the reference for the f32 polynomial.
    fn erf64(x: f64) -> f64 {
        let a = x.abs();
        let v = if a <= 3.0 {
            let (mut term, mut sum, mut n) = (a, a, 0.0);
            while term.abs() > 1e-17 {
                n += 1.0;
                term *= -a * a / n;
                sum += term / (2.0 * n + 1.0);
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // erfc by Lentz's continued fraction.
            let mut f = a;
            for k in (1..60).rev() {
                f = a + (k as f64 / 2.0) / f;
            }
            1.0 - (-a * a).exp() / (f * std::f64::consts::PI.sqrt())
        };
        v.copysign(x)
    }

    #[test]
    fn exp_is_within_an_f32_rounding_step() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            worst = worst.max(((exp(x) as f64 - want) / want).abs());
            x += 0.001_7;
        }
        assert!(worst < 1.2e-7, "worst relative error {worst:e}");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-100.0), 0.0);
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(88.0).is_finite());
    }

    #[test]
    fn erf_is_within_its_published_bound() {
        let mut worst = 0f64;
        let mut x = -6.0f32;
        while x < 6.0 {
            worst = worst.max((erf(x) as f64 - erf64(x as f64)).abs());
            x += 0.000_37;
        }
        assert!(worst < 6e-7, "worst absolute error {worst:e}");
        assert_eq!(erf(20.0), 1.0);
        assert_eq!(erf(-20.0), -1.0);
    }

    /// The largest absolute difference between two tensors of the same shape.
    pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn softmax_matches_candle_on_attention_shaped_rows() {
        let dev = Device::Cpu;
        // 1500 keys (a 30-s window) and odd widths that leave a remainder after the 8-wide
        // chunks; scores spread as the encoder's are, up to about +-30.
        for (rows, width) in [(64, 1500), (33, 7), (5, 1), (3, 449)] {
            let x = Tensor::randn(0f32, 10.0, (2, rows, width), &dev).unwrap();
            let got = softmax_last_dim(&x).unwrap();
            let want = candle_nn::ops::softmax_last_dim(&x).unwrap();
            assert!(max_abs_diff(&got, &want) < 2e-6, "{rows}x{width}");
            let sums = got.sum(D::Minus1).unwrap().flatten_all().unwrap();
            for s in sums.to_vec1::<f32>().unwrap() {
                assert!((s - 1.0).abs() < 1e-5, "row sum {s}");
            }
        }
    }

    #[test]
    fn softmax_gives_masked_keys_nothing_and_reads_transposed_input() {
        let dev = Device::Cpu;
        let inf = f32::NEG_INFINITY;
        let x = Tensor::new(&[[0.0f32, inf, 1.0], [inf, inf, 2.0]], &dev).unwrap();
        let got = softmax_last_dim(&x).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(got[0][1], 0.0);
        assert_eq!(got[1], vec![0.0, 0.0, 1.0]);
        // A transposed (non-contiguous) view is read in its logical order.
        let y = Tensor::randn(0f32, 3.0, (5, 4), &dev).unwrap().t().unwrap();
        let want = candle_nn::ops::softmax_last_dim(&y.contiguous().unwrap()).unwrap();
        assert!(max_abs_diff(&softmax_last_dim(&y).unwrap(), &want) < 2e-6);
    }

    #[test]
    fn gelu_matches_candle() {
        let dev = Device::Cpu;
        // Whisper's MLP inputs stay within about +-20; the tails check saturation.
        let x = Tensor::randn(0f32, 4.0, (3, 1000, 37), &dev).unwrap();
        let want = x.gelu_erf().unwrap();
        assert!(max_abs_diff(&gelu_erf(&x).unwrap(), &want) < 2e-6);
        let tails = Tensor::new(&[-40.0f32, -9.0, 0.0, 9.0, 40.0], &dev).unwrap();
        let got = gelu_erf(&tails).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(got, vec![-0.0, -0.0, 0.0, 9.0, 40.0]);
    }
}
