//! Matrix products that read their weights narrower than f32 (f16, the way the bundled models
//! store them, or int8), for the few rows of a decoder step on the CPU.
//!
//! Why: a decoder step multiplies one row per sequence by the whole vocabulary projection
//! (tiny.en: 51,864 x 384 weights, 80 MB in f32; base: 106 MB), about half of the step, and
//! that product is bound by memory bandwidth, not arithmetic. The weights are f16 in the model
//! files and widened to f32 at load, so reading the f16 copy loses nothing: every product and
//! sum is still f32; only the bytes read halve. An int8 copy ([`I8Weights`]) reads 0.625 of
//! f16's bytes and rounds the weights (not the inputs). Each output is one dot product whose
//! order does not depend on how many rows come with it, so a sequence gets the same logits
//! alone or in a batch (the f16 copy serves up to [`MAX_ROWS`] rows, the int8 copy any number).
//!
//! On x86-64 with F16C, eight weights at a time are widened in registers and multiplied into
//! up to four input rows at once, by register tiles ([`rows_avx2`]); elsewhere four weight
//! rows at a time are widened into a buffer that stays in L1 and multiplied with 8-lane fused
//! multiply-adds compiled for the CPU found at run time (`pulp`, as [`super::fast_ops`]).

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Weight rows widened together: each chunk of an input row is loaded once for this many dot
/// products.
const BLOCK_ROWS: usize = 4;

/// Weight rows per parallel task (tiny.en's vocabulary makes 203 tasks).
const TASK_ROWS: usize = 256;

/// Products (`n * k * m` multiply-adds) below which one thread does them all: waking a
/// second thread costs more than it saves. In a decoder step of tiny.en (2 cores), a
/// [384, 384] layer took 73 us in two tasks on two threads (it is ~15 us of work).
const PARALLEL_MIN_PRODUCTS: usize = 1 << 20;

/// Weights of an `[n, k]` matrix as the kernels read them: stored narrow (f16, or int8 with a
/// scale per group), widened to f32 eight at a time. Every product and sum is f32 either way.
trait WeightRows: Sync {
    /// `k`, the width of a row.
    fn k(&self) -> usize;
    /// How many rows there are.
    fn rows(&self) -> usize;
    /// Rows `row..row + count` widened into `buf [count, k]`.
    fn widen(&self, row: usize, count: usize, buf: &mut [f32]);
    /// Weights `8c..8c + 8` of row `r`, widened.
    ///
    /// # Safety
    /// Called only from code compiled with AVX2, FMA and F16C; `r` a row, `8c + 8 <= k`.
    #[cfg(target_arch = "x86_64")]
    unsafe fn chunk(&self, r: usize, c: usize) -> std::arch::x86_64::__m256;
    /// Weight `t` of row `r`, widened (the tail after the last whole chunk of eight).
    fn value(&self, r: usize, t: usize) -> f32;
}

/// f16 weights, as the model files store them.
struct F16Rows<'a> {
    w: &'a [half::f16],
    k: usize,
}

impl WeightRows for F16Rows<'_> {
    fn k(&self) -> usize {
        self.k
    }

    fn rows(&self) -> usize {
        self.w.len() / self.k.max(1)
    }

    fn widen(&self, row: usize, count: usize, buf: &mut [f32]) {
        use half::slice::HalfFloatSliceExt;
        self.w[row * self.k..(row + count) * self.k].convert_to_f32_slice(buf);
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn chunk(&self, r: usize, c: usize) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        _mm256_cvtph_ps(_mm_loadu_si128(
            self.w.as_ptr().add(r * self.k + c * 8).cast::<__m128i>(),
        ))
    }

    #[inline(always)]
    fn value(&self, r: usize, t: usize) -> f32 {
        self.w[r * self.k + t].to_f32()
    }
}

/// int8 weights with one f32 scale per [`I8Weights::GROUP`] weights of a row.
struct I8Rows<'a> {
    q: &'a [i8],
    scales: &'a [f32],
    k: usize,
}

impl WeightRows for I8Rows<'_> {
    fn k(&self) -> usize {
        self.k
    }

    fn rows(&self) -> usize {
        self.q.len() / self.k.max(1)
    }

    fn widen(&self, row: usize, count: usize, buf: &mut [f32]) {
        let k = self.k;
        let q = &self.q[row * k..(row + count) * k];
        let scales = &self.scales[row * k / I8Weights::GROUP..(row + count) * k / I8Weights::GROUP];
        for ((b, q), s) in buf
            .chunks_mut(I8Weights::GROUP)
            .zip(q.chunks(I8Weights::GROUP))
            .zip(scales)
        {
            for (b, &q) in b.iter_mut().zip(q) {
                *b = f32::from(q) * s;
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn chunk(&self, r: usize, c: usize) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        let at = r * self.k + c * 8;
        let q = _mm_loadl_epi64(self.q.as_ptr().add(at).cast::<__m128i>());
        let scale = _mm256_broadcast_ss(&*self.scales.as_ptr().add(at / I8Weights::GROUP));
        _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), scale)
    }

    #[inline(always)]
    fn value(&self, r: usize, t: usize) -> f32 {
        let at = r * self.k + t;
        f32::from(self.q[at]) * self.scales[at / I8Weights::GROUP]
    }
}

/// Dot products of input row `x [k]` with `BLOCK_ROWS` widened weight rows `w [BLOCK_ROWS, k]`.
#[inline(always)]
fn dots(x: &[f32], w: &[f32], k: usize) -> [f32; BLOCK_ROWS] {
    let (xc, xr) = x.as_chunks::<8>();
    let rows: [&[f32]; BLOCK_ROWS] = std::array::from_fn(|r| &w[r * k..(r + 1) * k]);
    // Cut to the length of `xc` (both are k / 8 chunks), so the loop has no bounds checks.
    let wc: [&[[f32; 8]]; BLOCK_ROWS] =
        std::array::from_fn(|r| &rows[r].as_chunks::<8>().0[..xc.len()]);
    let mut acc = [[0f32; 8]; BLOCK_ROWS];
    for (c, xv) in xc.iter().enumerate() {
        for (a, w) in acc.iter_mut().zip(&wc) {
            let wv = &w[c];
            for l in 0..8 {
                a[l] = xv[l].mul_add(wv[l], a[l]);
            }
        }
    }
    let tail = xc.len() * 8;
    std::array::from_fn(|r| {
        let mut sum = acc[r].iter().sum::<f32>();
        for (&xv, &wv) in xr.iter().zip(&rows[r][tail..]) {
            sum = xv.mul_add(wv, sum);
        }
        sum
    })
}

/// Every input row against one block of widened weight rows, the first `rows` of them real,
/// into `out [rows, m]`. A `pulp::WithSimd`, so the loop is compiled inside pulp's
/// target-feature function (a closure may stay baseline code, where `mul_add` is a libm call).
struct Block<'a> {
    x: &'a [f32],
    w: &'a [f32],
    k: usize,
    rows: usize,
    out: &'a mut [f32],
}

impl pulp::WithSimd for Block<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let m = self.x.len() / self.k;
        for (i, x) in self.x.chunks_exact(self.k).enumerate() {
            let d = dots(x, self.w, self.k);
            for (r, v) in d.iter().enumerate().take(self.rows) {
                self.out[r * m + i] = *v;
            }
        }
    }
}

/// Whether this CPU has what [`rows_avx2`] uses: F16C, AVX2 and FMA.
fn has_f16c() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("f16c")
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `x [m, k]` times the transpose of the `n` rows of `w`, into `[n, m]`: transposed, so that
/// each task owns whole rows of the output. `fused`: the AVX2 kernel ([`rows_avx2`]; only
/// when [`has_f16c`]), else the portable one (widen a block, then [`Block`]).
fn product<W: WeightRows>(x: &[f32], w: &W, n: usize, fused: bool) -> Vec<f32> {
    // The AVX2 kernel reads the weights unchecked: they must hold `n` rows, and the CPU must
    // have the instructions, whatever the caller asked for.
    assert!(n <= w.rows(), "{n} rows asked of {}", w.rows());
    let fused = fused && has_f16c();
    let k = w.k();
    let m = x.len() / k;
    let mut out = vec![0f32; n * m];
    if m == 0 {
        return out;
    }
    let arch = pulp::Arch::new();
    let task = |(task, out): (usize, &mut [f32])| {
        let first = task * TASK_ROWS;
        #[cfg(target_arch = "x86_64")]
        if fused {
            let rows = (n - first).min(TASK_ROWS);
            // SAFETY: `fused` is only asked for when the CPU has AVX2, FMA and F16C
            // (`has_f16c`); `w` holds rows `first..first + rows` of `k`, `x` m rows of `k`,
            // and `out` rows * m values.
            unsafe { rows_avx2(x, w, first, rows, out) };
            return;
        }
        let _ = fused;
        let mut buf = vec![0f32; BLOCK_ROWS * k];
        for (block, out) in out.chunks_mut(BLOCK_ROWS * m).enumerate() {
            let row = first + block * BLOCK_ROWS;
            let rows = (n - row).min(BLOCK_ROWS);
            buf[rows * k..].fill(0.0);
            w.widen(row, rows, &mut buf[..rows * k]);
            arch.dispatch(Block {
                x,
                w: &buf,
                k,
                rows,
                out,
            });
        }
    };
    if n * k * m < PARALLEL_MIN_PRODUCTS {
        out.chunks_mut(TASK_ROWS * m).enumerate().for_each(task);
    } else {
        out.par_chunks_mut(TASK_ROWS * m).enumerate().for_each(task);
    }
    out
}

/// Weight rows `first..first + rows` of `w` against every input row of `x [m, k]`, into
/// `out [rows, m]`, by register tiles of `R` weight rows by `M` input rows ([`tile_avx2`]):
/// each chunk of eight weights is widened in registers (`vcvtph2ps` for f16; sign-extended,
/// converted and scaled for int8) once for the tile's `M` input rows, and each chunk of an
/// input row is loaded once for its `R` weight rows. The input rows go in groups of four
/// (3 x 4 tiles: 12 accumulators, 3 widened chunks and one input chunk fill AVX2's 16
/// registers); a last group of one takes 8 x 1 tiles (eight independent sums hide the fused
/// multiply-add's latency), of two 4 x 2, of three 3 x 3. The block's weights (at most
/// [`TASK_ROWS`] rows, 196 kB of f16 at k = 384) stay in L2 while the groups pass over them.
///
/// Every output is the same sum whatever the tile: one 8-lane accumulator over the chunks in
/// order, its lanes added in a fixed order ([`lanes_total`]), then the tail, so a row gives
/// exactly the same outputs alone as in a batch of any size.
///
/// Measured at [`MAX_ROWS`]: the tiles take 8 rows of tiny.en's vocabulary projection from
/// 8.3 to 5.0-6.3 ms (f16).
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; `w` has rows `first..first + rows`, `x.len()` is a
/// multiple of `k`, `out.len() >= rows * m`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_avx2<W: WeightRows>(x: &[f32], w: &W, first: usize, rows: usize, out: &mut [f32]) {
    let m = x.len() / w.k();
    let mut i = 0;
    while i < m {
        let group = (m - i).min(4);
        match group {
            4 => tiles_avx2::<W, 3, 4>(x, w, first, rows, i, out),
            3 => tiles_avx2::<W, 3, 3>(x, w, first, rows, i, out),
            2 => tiles_avx2::<W, 4, 2>(x, w, first, rows, i, out),
            _ => tiles_avx2::<W, 8, 1>(x, w, first, rows, i, out),
        }
        i += group;
    }
}

/// Input rows `from..from + M` of `x` against weight rows `first..first + rows`, `R` at a
/// time (the last few one at a time), into their places in `out [rows, m]`.
///
/// # Safety
/// As [`rows_avx2`], and `from + M <= m`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn tiles_avx2<W: WeightRows, const R: usize, const M: usize>(
    x: &[f32],
    w: &W,
    first: usize,
    rows: usize,
    from: usize,
    out: &mut [f32],
) {
    let k = w.k();
    let m = x.len() / k;
    let xs: [*const f32; M] = std::array::from_fn(|i| x.as_ptr().add((from + i) * k));
    let mut r = 0;
    while r < rows {
        if rows - r >= R {
            let sums = tile_avx2::<W, R, M>(w, first + r, xs);
            for (dr, row) in sums.iter().enumerate() {
                for (i, &v) in row.iter().enumerate() {
                    out[(r + dr) * m + from + i] = v;
                }
            }
            r += R;
        } else {
            let sums = tile_avx2::<W, 1, M>(w, first + r, xs);
            for (i, &v) in sums[0].iter().enumerate() {
                out[r * m + from + i] = v;
            }
            r += 1;
        }
    }
}

/// The `R x M` dot products of weight rows `row..row + R` with input rows `xs` (f32, `k`
/// each): one 8-lane fused multiply-add accumulator per product over the chunks of eight in
/// order, then [`lanes_total`], then the tail after the last whole chunk.
///
/// # Safety
/// AVX2, FMA and F16C; `w` has rows `row..row + R` and each of `xs` points at `k` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn tile_avx2<W: WeightRows, const R: usize, const M: usize>(
    w: &W,
    row: usize,
    xs: [*const f32; M],
) -> [[f32; M]; R] {
    use std::arch::x86_64::*;
    let k = w.k();
    let chunks = k / 8;
    let mut acc = [[_mm256_setzero_ps(); M]; R];
    for c in 0..chunks {
        let wv: [__m256; R] = std::array::from_fn(|r| w.chunk(row + r, c));
        for i in 0..M {
            let xv = _mm256_loadu_ps(xs[i].add(c * 8));
            for r in 0..R {
                acc[r][i] = _mm256_fmadd_ps(xv, wv[r], acc[r][i]);
            }
        }
    }
    let mut sums = [[0f32; M]; R];
    for r in 0..R {
        for i in 0..M {
            let mut s = lanes_total(acc[r][i]);
            for t in chunks * 8..k {
                s = (*xs[i].add(t)).mul_add(w.value(row + r, t), s);
            }
            sums[r][i] = s;
        }
    }
    sums
}

/// The eight lanes of `v` added in one fixed order (halves, then pairs, then the last two).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn lanes_total(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_hadd_ps(s, s);
    _mm_cvtss_f32(_mm_hadd_ps(s, s))
}

/// `x [m, k]` (f32) times the transpose of `w [n, k]` (f16), into `[n, m]`.
struct MatmulF16Weights;

impl CustomOp2 for MatmulF16Weights {
    fn name(&self) -> &'static str {
        "vishguard-matmul-f16-weights"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        x_layout: &Layout,
        ws: &CpuStorage,
        w_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(x) = xs else {
            candle_core::bail!("{}: f32 input only, got {:?}", self.name(), xs.dtype())
        };
        let CpuStorage::F16(w) = ws else {
            candle_core::bail!("{}: f16 weights only, got {:?}", self.name(), ws.dtype())
        };
        let (Some((xa, xb)), Some((wa, wb))) =
            (x_layout.contiguous_offsets(), w_layout.contiguous_offsets())
        else {
            candle_core::bail!("{}: input and weights must be contiguous", self.name())
        };
        let (x, w) = (&x[xa..xb], &w[wa..wb]);
        let (n, k) = w_layout.shape().dims2()?;
        if k == 0 || x.len() % k != 0 {
            candle_core::bail!(
                "{}: input {:?} against weights [{n}, {k}]",
                self.name(),
                x_layout.dims()
            );
        }
        let out = product(x, &F16Rows { w, k }, n, has_f16c());
        let m = x.len() / k;
        Ok((CpuStorage::F32(out), Shape::from((n, m))))
    }
}

/// `x [.., k]` (f32, CPU) times the transpose of `weight [n, k]` (f16, CPU): `[.., n]` in f32,
/// as `x.matmul(&weight.to_dtype(F32)?.t()?)` with f32 products and sums, reading the weights
/// at half the bytes. Within a few f32 rounding steps of that product (sums in another order);
/// a row gives exactly the same outputs alone as in a batch.
///
/// Errors: `x` not f32 or `weight` not f16 (or either not on the CPU), inner sizes that differ.
pub fn matmul_f16_weights(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let k = x.dim(candle_core::D::Minus1)?;
    let (n, wk) = weight.dims2()?;
    if k != wk {
        candle_core::bail!("matmul_f16_weights: input width {k}, weights [{n}, {wk}]");
    }
    if x.dtype() != DType::F32 || weight.dtype() != DType::F16 {
        candle_core::bail!(
            "matmul_f16_weights: f32 input and f16 weights, got {:?} and {:?}",
            x.dtype(),
            weight.dtype()
        );
    }
    let t = x
        .contiguous()?
        .apply_op2_no_bwd(weight, &MatmulF16Weights)?;
    rows_of(&t, x, n)
}

/// The kernels' output `[n, m]` (transposed: each task owns whole rows of it) as the rows of
/// `x [.., k]`: `[.., n]`.
fn rows_of(t: &Tensor, x: &Tensor, n: usize) -> Result<Tensor> {
    let mut out_dims = x.dims().to_vec();
    *out_dims.last_mut().expect("rank >= 1") = n;
    if t.dim(1)? == 1 {
        t.reshape(out_dims)
    } else {
        t.t()?.contiguous()?.reshape(out_dims)
    }
}

/// Up to this many rows, a product with an f16 copy beats f32 gemm on the same weights, which
/// reuses each weight across rows. tiny.en's vocabulary projection (`cargo bench --bench asr
/// -- vocab-projection`, 2 cores, 2026-12-05), f16 tiles / f32 gemm: 1 row 0.9-1.2 / 6.1 ms,
/// 8 rows 5.0-6.3 / 10.4-11.3, 16 rows 10.9-11.3 / 13.8, 32 rows 22.7-23.2 / 17.2. Before the
/// tiles (one weight row by two input rows) it was 1.7, 8.3, 17.0 and 37.6 ms, and this limit
/// 4. A decoder step reads its weights from memory, not cache (tiny.en's vocabulary took 3.2-4.2
/// ms for one row inside a transcription against 1 ms here), which favours f16 further.
pub const MAX_ROWS: usize = 16;

/// An int8 copy of an f32 weight matrix `[n, k]` for decoder steps: symmetric, one f32 scale
/// per [`I8Weights::GROUP`] consecutive weights of a row (the group's largest magnitude / 127;
/// ggml's q8_0 scales blocks of 32, CTranslate2's int8 whole rows). Only the weights are
/// narrowed: the input rows stay f32 (q8_0 and CTranslate2 round them to int8 too), every
/// product and sum is f32 ([`WeightRows`]), so a NaN input stays visible and a row gives the
/// same outputs alone as in a batch. Reads 1.25 bytes per weight against f16's 2.
pub struct I8Weights {
    q: Vec<i8>,
    scales: Vec<f32>,
    n: usize,
    k: usize,
}

impl I8Weights {
    /// Weights per scale. Every Whisper width (384 ... 5120) is a multiple. 32 cost base a
    /// phrase of the real call through the vocabulary projection alone (WER 0.173 -> 0.210,
    /// tests/transcription.rs), 16 none.
    pub const GROUP: usize = 16;

    /// The int8 copy of `w [n, k]` (f32 values, row-major); `None` when `k` is not a positive
    /// multiple of [`Self::GROUP`], `w` does not hold `n * k` values, or a value is not finite
    /// (a damaged file: the f32 weights then show it).
    pub fn quantize(w: &[f32], n: usize, k: usize) -> Option<Self> {
        if k == 0 || !k.is_multiple_of(Self::GROUP) || w.len() != n * k {
            return None;
        }
        if !w.par_iter().all(|v| v.is_finite()) {
            return None;
        }
        let mut q = vec![0i8; w.len()];
        let mut scales = vec![0f32; w.len() / Self::GROUP];
        q.par_chunks_mut(Self::GROUP)
            .zip(scales.par_iter_mut())
            .zip(w.par_chunks(Self::GROUP))
            .for_each(|((q, scale), w)| {
                let largest = w.iter().fold(0f32, |m, v| m.max(v.abs()));
                *scale = largest / 127.0;
                if largest > 0.0 {
                    // Divided by the scale, not multiplied by its inverse: below ~4e-37 the
                    // inverse overflows to infinity.
                    for (q, v) in q.iter_mut().zip(w) {
                        *q = (v / *scale).round().clamp(-127.0, 127.0) as i8;
                    }
                }
            });
        Some(Self { q, scales, n, k })
    }

    /// `[n, k]`.
    pub fn dims(&self) -> (usize, usize) {
        (self.n, self.k)
    }

    /// Bytes read per product: the int8 weights and their scales.
    pub fn bytes(&self) -> usize {
        self.q.len() + 4 * self.scales.len()
    }

    /// The weights as the products see them, `[n, k]` in f32 (tests and error measurements).
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.n * self.k];
        self.rows().widen(0, self.n, &mut out);
        out
    }

    fn rows(&self) -> I8Rows<'_> {
        I8Rows {
            q: &self.q,
            scales: &self.scales,
            k: self.k,
        }
    }
}

/// `x [m, k]` (f32) times the transpose of int8 weights `[n, k]`, into `[n, m]`.
struct MatmulI8Weights<'a>(&'a I8Weights);

impl CustomOp1 for MatmulI8Weights<'_> {
    fn name(&self) -> &'static str {
        "vishguard-matmul-i8-weights"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x: &[f32] = crate::contiguous_data(xs, layout, self.name())?;
        let (n, k) = self.0.dims();
        if !x.len().is_multiple_of(k) {
            candle_core::bail!(
                "{}: input {:?} against weights [{n}, {k}]",
                self.name(),
                layout.dims()
            );
        }
        let out = product(x, &self.0.rows(), n, has_f16c());
        Ok((CpuStorage::F32(out), Shape::from((n, x.len() / k))))
    }
}

/// `x [.., k]` (f32, CPU) times the transpose of the int8 copy `w [n, k]`: `[.., n]` in f32,
/// as `x.matmul(&w.dequantize().t())` (sums in another order). Errors: `x` not f32 on the
/// CPU, an inner size that is not `k`.
pub fn matmul_i8_weights(x: &Tensor, w: &I8Weights) -> Result<Tensor> {
    let k = x.dim(candle_core::D::Minus1)?;
    let (n, wk) = w.dims();
    if k != wk {
        candle_core::bail!("matmul_i8_weights: input width {k}, weights [{n}, {wk}]");
    }
    let t = x.contiguous()?.apply_op1_no_bwd(&MatmulI8Weights(w))?;
    rows_of(&t, x, n)
}

/// A narrow copy of a layer's f32 weights `[n, k]` that decoder steps read instead: they
/// multiply a few rows by every weight, so they are bound by memory bandwidth, and fewer bytes
/// are faster with the same f32 arithmetic.
pub enum StepCopy {
    /// The weights as the model files store them: exactly the f32 values, half the bytes.
    F16(Tensor),
    /// int8 with a scale per 16 weights ([`I8Weights`]): 0.625 of f16's bytes, rounded.
    I8(I8Weights),
}

impl StepCopy {
    /// The copy of `weights` (an f32 CPU tensor `[n, k]`): int8 when `int8` (and `k` is a
    /// multiple of [`I8Weights::GROUP`]), else f16 when f16 holds every value exactly. `None`
    /// when neither applies, and always when this crate was compiled without optimisation
    /// (see [`f16_copy`]).
    pub fn of(weights: &Tensor, int8: bool) -> Result<Option<Self>> {
        if !int8 {
            return Ok(f16_copy(weights)?.map(Self::F16));
        }
        if !worth_a_copy(weights) {
            return Ok(None);
        }
        let (n, k) = weights.dims2()?;
        if k == 0 || !k.is_multiple_of(I8Weights::GROUP) {
            return Ok(f16_copy(weights)?.map(Self::F16));
        }
        Ok(
            crate::with_f32_values(weights, |w| I8Weights::quantize(w, n, k))
                .flatten()
                .map(Self::I8),
        )
    }

    /// `x [.., k]` times the transpose of the copy; `None` when the caller's f32 weights
    /// should be used: for the f16 copy, above [`MAX_ROWS`] rows (f32 gemm is then faster, and
    /// the values differ from the copy's only by the order of the sums). The int8 copy takes
    /// any number of rows, so a sequence's logits are the same alone and in a batch of any size
    /// (f32 weights would differ by the rounding of the weights); above [`MAX_ROWS`] it costs
    /// more than gemm would (f16 at 32 rows: 1.3x).
    pub fn product_of_few_rows(this: Option<&Self>, x: &Tensor) -> Result<Option<Tensor>> {
        let Some(copy) = this else { return Ok(None) };
        let k = x.dim(candle_core::D::Minus1)?;
        match copy {
            Self::F16(_) if x.elem_count() > MAX_ROWS * k => Ok(None),
            Self::F16(w) => matmul_f16_weights(x, w).map(Some),
            Self::I8(w) => matmul_i8_weights(x, w).map(Some),
        }
    }

    /// The copy's format, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::F16(_) => "f16",
            Self::I8(_) => "int8",
        }
    }
}

/// An f16 copy of `weights` when it is an f32 tensor on the CPU whose every value f16 holds
/// exactly (as the bundled models', stored in f16 and widened at load); `None` otherwise, and
/// always when this crate was compiled without optimisation (`cfg(unoptimised)`, set by
/// build.rs), where these kernels run far slower than candle's gemm: a real-speed live test's
/// alert came 13.8 s late that way, when they were part of vishguard's opt-level-0 test build.
pub fn f16_copy(weights: &Tensor) -> Result<Option<Tensor>> {
    if !worth_a_copy(weights) {
        return Ok(None);
    }
    // Read in place and narrowed in parallel chunks, the check in the same pass: checking
    // value by value through `half` and then narrowing with `to_dtype` took about 0.15 s of
    // tiny.en's 0.47 s start (0.23 s of base's), for every `scan`, `transcribe` and `listen`.
    crate::with_f32_values(weights, narrow_exactly)
        .flatten()
        .map(|v| Tensor::from_vec(v, weights.shape(), weights.device()))
        .transpose()
}

/// Whether `weights` may get a step copy at all: f32 on the CPU, and this crate compiled with
/// optimisation (see [`f16_copy`]).
fn worth_a_copy(weights: &Tensor) -> bool {
    !cfg!(unoptimised) && weights.device().is_cpu() && weights.dtype() == DType::F32
}

/// Values per parallel task of [`narrow_exactly`].
const NARROW_CHUNK: usize = 1 << 16;

/// `x` in f16, when every value is exactly an f16 value; `None` as soon as a chunk holds one
/// that is not. Each chunk is narrowed and widened back with `half`'s slice conversions (F16C
/// where the CPU has it, 8 values an instruction) and compared bit for bit: a value is exact
/// when it comes back unchanged (NaN never counts). A scalar test of each value's bits took
/// 12% of a `transcribe --model base` process that heard one second.
fn narrow_exactly(x: &[f32]) -> Option<Vec<half::f16>> {
    use half::slice::HalfFloatSliceExt;
    const BACK: usize = 1024;
    let mut out = vec![half::f16::ZERO; x.len()];
    let exact = out
        .par_chunks_mut(NARROW_CHUNK)
        .zip(x.par_chunks(NARROW_CHUNK))
        .all(|(o, i)| {
            o.convert_from_f32_slice(i);
            let mut back = [0f32; BACK];
            i.chunks(BACK).zip(o.chunks(BACK)).all(|(i, o)| {
                let back = &mut back[..i.len()];
                o.convert_to_f32_slice(back);
                // No early exit inside, so the comparison vectorises.
                i.iter().zip(back.iter()).fold(true, |all, (a, b)| {
                    all & (a.to_bits() == b.to_bits()) & !a.is_nan()
                })
            })
        });
    exact.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fast_ops::tests::max_abs_diff;
    use candle_core::Device;

    #[test]
    fn products_match_f32_and_a_row_gives_the_same_alone_as_in_a_batch() {
        let dev = Device::Cpu;
        // Whisper's widths and one with a remainder after the 8-wide chunks; output counts
        // that make several tasks and leave a short last block.
        for (k, n) in [(384, 1037), (7, 5), (512, 300), (40, 3)] {
            let w = Tensor::randn(0f32, 0.05, (n, k), &dev)
                .unwrap()
                .to_dtype(DType::F16)
                .unwrap();
            let w32 = w.to_dtype(DType::F32).unwrap();
            let x = Tensor::randn(0f32, 1.0, (1, 5, k), &dev).unwrap();
            let got = matmul_f16_weights(&x, &w).unwrap();
            assert_eq!(got.dims(), &[1, 5, n]);
            let want = x.broadcast_matmul(&w32.t().unwrap()).unwrap();
            assert!(max_abs_diff(&got, &want) < 1e-4, "{k}x{n}");
            for i in 0..5 {
                let row = x.narrow(1, i, 1).unwrap();
                let alone = matmul_f16_weights(&row, &w).unwrap();
                let in_batch = got.narrow(1, i, 1).unwrap();
                assert_eq!(max_abs_diff(&alone, &in_batch), 0.0, "{k}x{n} row {i}");
            }
        }
    }

    #[test]
    fn both_kernels_agree_and_neither_depends_on_the_batch() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        // Every tile shape (groups of 4, a last group of 1, 2 or 3 input rows) and weight
        // counts that leave rows after the last whole tile.
        for (k, n, m) in [
            (384, 600, 5),
            (19, 9, 3),
            (512, 257, 4),
            (384, 263, 2),
            (40, 31, 6),
            (24, 17, 7),
            (384, 301, 13),
        ] {
            let w: Vec<half::f16> = (0..n * k)
                .map(|_| half::f16::from_f32(rng.random_range(-0.1..0.1)))
                .collect();
            let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
            let kernels: &[bool] = if has_f16c() { &[false, true] } else { &[false] };
            let outs: Vec<Vec<f32>> = kernels
                .iter()
                .map(|&f| product(&x, &F16Rows { w: &w, k }, n, f))
                .collect();
            for (out, &fused) in outs.iter().zip(kernels) {
                for i in 0..m {
                    let alone = product(&x[i * k..(i + 1) * k], &F16Rows { w: &w, k }, n, fused);
                    for r in 0..n {
                        assert_eq!(alone[r], out[r * m + i], "fused {fused} k {k} row {i}");
                    }
                }
            }
            let worst = outs[0]
                .iter()
                .zip(outs.last().unwrap())
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-4, "kernels differ by {worst}");
        }
    }

    #[test]
    fn int8_products_match_the_dequantized_weights_and_batching_changes_nothing() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for (k, n, m) in [
            (384, 600, 5),
            (512, 257, 4),
            (64, 31, 7),
            (32, 9, 1),
            (384, 263, 13),
        ] {
            let w: Vec<f32> = (0..n * k).map(|_| rng.random_range(-0.1..0.1)).collect();
            let q = I8Weights::quantize(&w, n, k).expect("finite");
            assert_eq!(q.bytes(), n * k + n * k / 4);
            let deq = q.dequantize();
            // Rounding to 255 levels per group of 32: at most half a step off each weight.
            let group = I8Weights::GROUP;
            for (g, (a, b)) in w.chunks(group).zip(deq.chunks(group)).enumerate() {
                let step = a.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
                let worst = a
                    .iter()
                    .zip(b)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(worst <= step * 0.5001, "group {g}: {worst} > {step} / 2");
            }
            let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
            let kernels: &[bool] = if has_f16c() { &[false, true] } else { &[false] };
            let outs: Vec<Vec<f32>> = kernels
                .iter()
                .map(|&f| product(&x, &q.rows(), n, f))
                .collect();
            for (out, &fused) in outs.iter().zip(kernels) {
                for i in 0..m {
                    let alone = product(&x[i * k..(i + 1) * k], &q.rows(), n, fused);
                    for r in 0..n {
                        assert_eq!(alone[r], out[r * m + i], "fused {fused} k {k} row {i}");
                        // Against an f64 product with the same (dequantized) weights.
                        let want: f64 = (0..k)
                            .map(|t| f64::from(x[i * k + t]) * f64::from(deq[r * k + t]))
                            .sum();
                        assert!(
                            (f64::from(out[r * m + i]) - want).abs() < 1e-4,
                            "{k} {r} {i}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn int8_copies_through_tensors() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 0.05, (300, 64), &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 3, 64), &dev).unwrap();
        let Some(StepCopy::I8(q)) = StepCopy::of(&w, true).unwrap() else {
            panic!("an int8 copy")
        };
        let got = StepCopy::product_of_few_rows(Some(&StepCopy::I8(q)), &x)
            .unwrap()
            .expect("few rows");
        assert_eq!(got.dims(), &[2, 3, 300]);
        let want = x.broadcast_matmul(&w.t().unwrap()).unwrap();
        // Weights rounded to 1/254 of each group's largest: a small error against f32.
        let err = max_abs_diff(&got, &want);
        assert!(err > 0.0 && err < 0.02, "{err}");
        // Widths that are no multiple of 16 keep the exact f16 copy. Many rows: int8 takes
        // them, each as it would alone; f16 leaves them to f32 gemm.
        let odd = Tensor::randn(0f32, 0.05, (10, 40), &dev)
            .unwrap()
            .to_dtype(DType::F16)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        assert!(matches!(
            StepCopy::of(&odd, true).unwrap(),
            Some(StepCopy::F16(_))
        ));
        let copy = StepCopy::of(&w, true).unwrap();
        let many = Tensor::randn(0f32, 1.0, (MAX_ROWS + 5, 64), &dev).unwrap();
        let all = StepCopy::product_of_few_rows(copy.as_ref(), &many)
            .unwrap()
            .expect("int8 takes any number of rows");
        let one = StepCopy::product_of_few_rows(copy.as_ref(), &many.narrow(0, 7, 1).unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(max_abs_diff(&all.narrow(0, 7, 1).unwrap(), &one), 0.0);
        let f16 = StepCopy::of(&odd, false).unwrap();
        let many = Tensor::zeros((MAX_ROWS + 1, 40), DType::F32, &dev).unwrap();
        assert!(StepCopy::product_of_few_rows(f16.as_ref(), &many)
            .unwrap()
            .is_none());
        let err = StepCopy::product_of_few_rows(
            copy.as_ref(),
            &Tensor::zeros((1, 63), DType::F32, &dev).unwrap(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("input width 63"), "{err}");
    }

    #[test]
    fn int8_weights_that_are_not_finite_get_no_copy_and_nan_input_stays_visible() {
        let mut w = vec![0.25f32; 4 * 32];
        w[70] = f32::INFINITY;
        assert!(I8Weights::quantize(&w, 4, 32).is_none());
        w[70] = 0.0;
        // A group of zeros has a zero scale and zero weights, not NaN.
        w[..32].fill(0.0);
        let q = I8Weights::quantize(&w, 4, 32).unwrap();
        let mut x = vec![1f32; 32];
        let out = product(&x, &q.rows(), 4, has_f16c());
        assert_eq!(out[0], 0.0);
        assert!((out[1] - 8.0).abs() < 1e-5, "{}", out[1]);
        x[5] = f32::NAN;
        assert!(product(&x, &q.rows(), 4, has_f16c())
            .iter()
            .all(|v| v.is_nan()));
    }

    #[test]
    fn nan_in_the_input_stays_visible() {
        let dev = Device::Cpu;
        let w = Tensor::ones((9, 16), DType::F16, &dev).unwrap();
        let mut v = vec![0.5f32; 16];
        v[3] = f32::NAN;
        let x = Tensor::from_vec(v, (1, 16), &dev).unwrap();
        let got: Vec<f32> = matmul_f16_weights(&x, &w)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(got.iter().all(|v| v.is_nan()));
    }

    #[test]
    fn wrong_shapes_and_dtypes_are_named() {
        let dev = Device::Cpu;
        let w = Tensor::zeros((4, 8), DType::F16, &dev).unwrap();
        let x = Tensor::zeros((1, 9), DType::F32, &dev).unwrap();
        let err = matmul_f16_weights(&x, &w).unwrap_err().to_string();
        assert!(err.contains("input width 9"), "{err}");
        let w32 = Tensor::zeros((4, 8), DType::F32, &dev).unwrap();
        let x = Tensor::zeros((1, 8), DType::F32, &dev).unwrap();
        let err = matmul_f16_weights(&x, &w32).unwrap_err().to_string();
        assert!(err.contains("f16 weights"), "{err}");
    }

    #[test]
    fn exactness_in_f16_is_checked_value_by_value() {
        let dev = Device::Cpu;
        let stored = Tensor::new(&[0.5f32, -1.25, 3.0e-3], &dev).unwrap();
        let widened = stored
            .to_dtype(DType::F16)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        assert!(narrow_exactly(&widened.to_vec1::<f32>().unwrap()).is_some());
        assert!(narrow_exactly(&[0.1f32 + 1e-7]).is_none());
    }

    #[test]
    fn the_exactness_test_agrees_with_a_round_trip_through_half() {
        // Every f16 value widened, each with its neighbours in f32, and values around the
        // limits (largest normal, smallest subnormal, beyond both).
        let mut values = Vec::new();
        for h in 0..=u16::MAX {
            let v = half::f16::from_bits(h).to_f32();
            values.extend([
                v,
                f32::from_bits(v.to_bits() + 1),
                f32::from_bits(v.to_bits().wrapping_sub(1)),
            ]);
        }
        values.extend([
            65504.0,
            65520.0,
            2f32.powi(-24),
            2f32.powi(-25),
            3.0 * 2f32.powi(-25),
            f32::MIN_POSITIVE,
            1e-40,
        ]);
        values.push(f32::NAN);
        for &v in &values {
            let round_trip = half::f16::from_f32(v).to_f32() == v;
            let narrowed = narrow_exactly(&[v]);
            assert_eq!(
                narrowed.is_some(),
                round_trip,
                "{v:e} ({:#010x})",
                v.to_bits()
            );
        }
        // And a long slice of exact values with one inexact among them, in a later chunk.
        let exact: Vec<f32> = values
            .iter()
            .copied()
            .filter(|&v| half::f16::from_f32(v).to_f32() == v)
            .collect();
        assert!(narrow_exactly(&exact).is_some());
        let mut one_off = exact.clone();
        let last = one_off.len() - 3;
        one_off[last] = 0.1;
        assert!(narrow_exactly(&one_off).is_none());
    }

    #[test]
    fn the_f16_copy_is_the_narrowed_tensor_or_none() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 0.05, (300, 70), &dev)
            .unwrap()
            .to_dtype(DType::F16)
            .unwrap();
        let widened = w.to_dtype(DType::F32).unwrap();
        let copy = narrow_exactly(&widened.flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .expect("exact");
        assert_eq!(
            copy,
            w.flatten_all().unwrap().to_vec1::<half::f16>().unwrap()
        );
        let mut off = widened.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        off[20_000] += 1e-7;
        assert!(narrow_exactly(&off).is_none());
    }
}
