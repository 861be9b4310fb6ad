//! Matrix products on Intel AMX tiles (Advanced Matrix Extensions: Xeon Sapphire Rapids and
//! later) in bf16 with f32 sums, for the products of many rows: the encoder's layers, and the
//! decoder's projection of a window's audio into cross-attention keys and values.
//!
//! Why: on the 2-core Sapphire Rapids host the project is measured on, the tiny.en encoder
//! spent about half of a 15-s window (155 ms) in f32 matrix products at AVX-512 speed, while
//! one `tdpbf16ps` does 16 x 16 x 32 multiply-adds. The inputs are rounded to bf16 (8 bits
//! of mantissa, as a GPU's bf16 path does), a layer's weights are kept as two bf16 halves (see
//! [`PackedWeights`] for why), and every product is summed in f32. With the tiles, one 15-s
//! tiny.en window went from 138-170 ms to 66-72 ms.
//!
//! What it computes: `y [m, n] = x [m, k] . w [n, k]^T (+ bias [n])`, with `w` packed once
//! ([`PackedWeights`]) into the layout the tile instruction reads ("VNNI": pairs of
//! consecutive `k` side by side for each output column). Each task takes 32 rows of `x`,
//! rounds them to bf16 with their `k` padded to a multiple of 32, and walks the output
//! columns 32 at a time: two tiles of `x` rows times two tiles of weights into four
//! accumulator tiles (16 x 16 f32 each), the usual 2 x 2 blocking with all 8 tile registers.
//!
//! Sources followed: Intel 64 and IA-32 Architectures Software Developer's Manual, vol. 1
//! ch. 18 (tile configuration, `tileloadd`, `tdpbf16ps`, `tilestored`); Linux
//! `Documentation/arch/x86/xstate.rst` (a process must ask for the tile data state with
//! `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)` before its first tile instruction).

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Rows of `x` per task: two tiles of 16.
const BLOCK_M: usize = 32;
/// Output columns per inner step: two tiles of 16.
const BLOCK_N: usize = 32;
/// `k` per tile: 32 bf16 = 64 bytes, one tile row.
const BLOCK_K: usize = 32;
/// u16 per packed (column block, k step): two weight tiles of 16 rows x 32 bf16.
const PACKED_BLOCK: usize = 2 * 16 * 32;

/// Whether this process may run tile instructions: the CPU reports AMX-TILE and AMX-BF16 and
/// Linux granted the tile data state (asked once, on the first call). `false` elsewhere, and
/// when `VISHGUARD_NO_AMX` is set (to compare with the f32 path on the same machine).
pub fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| std::env::var_os("VISHGUARD_NO_AMX").is_none() && detect())
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    // CPUID leaf 7, sub-leaf 0, EDX: bit 22 AMX-BF16, bit 24 AMX-TILE (SDM vol. 2, CPUID).
    let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
    if leaf7.edx & (1 << 22) == 0 || leaf7.edx & (1 << 24) == 0 {
        return false;
    }
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a plain system call with integer arguments; on failure it returns -1.
    let granted = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    granted == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// f32 to bf16, rounding to nearest even (NaN stays a quiet NaN), as `vcvtneps2bf16` does.
/// Without branches, so that a loop of it vectorises.
#[inline(always)]
fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let rounded = (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16;
    let quiet = ((b >> 16) as u16) | 0x40;
    if x.is_nan() {
        quiet
    } else {
        rounded
    }
}

/// `dst[i] = bf16(src[i])` compiled for the CPU found at run time (`pulp`, as
/// [`crate::fast_ops`]).
struct ToBf16<'a> {
    src: &'a [f32],
    dst: &'a mut [u16],
}

impl pulp::WithSimd for ToBf16<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        for (d, &s) in self.dst.iter_mut().zip(self.src) {
            *d = bf16_bits(s);
        }
    }
}

/// A matrix `w [n, k]` (a linear layer's weights: output columns by input columns; or one
/// head's keys) rounded to bf16 and laid out for the tiles: for each block of 32 output
/// columns and each step of 32 along `k`, two tiles (columns 0-15 and 16-31 of the block) of 16
/// rows, row `r` holding `w[col][2r], w[col][2r + 1]` for the tile's 16 columns ("VNNI"
/// layout). `n` and `k` are padded with zeros to multiples of 32.
///
/// Weights may also keep their low half, `bf16(w - bf16(w))`, packed the same way: a product
/// then reads `w` to 16 bits of mantissa for one more pass of the tiles. Measured on tiny.en
/// (`benches/compare_faster_whisper.py`): with bf16 weights one of the 13 clips lost most of
/// its words (a decode that ended early; error rate 0.273 -> 0.818) and the telephone clips'
/// mean rose 0.507 -> 0.516; with both halves every transcript but two was the f32 one
/// (0.507 -> 0.506), for 5 ms more per 15-s window (70 -> 75 ms).
pub struct PackedWeights {
    n: usize,
    k: usize,
    k_steps: usize,
    high: Vec<u16>,
    low: Option<Vec<u16>>,
}

/// The index in a column block of element `(j, kk)` (column within the block, input column).
#[inline(always)]
fn packed_index(j: usize, kk: usize) -> usize {
    let (step, r, p) = (kk / BLOCK_K, (kk % BLOCK_K) / 2, kk % 2);
    step * PACKED_BLOCK + (j / 16) * 512 + r * 32 + 2 * (j % 16) + p
}

impl PackedWeights {
    /// Packs `w` (`n * k` values, row-major `[n, k]`), with its low half when `split`.
    /// Errors when the length does not match.
    pub fn pack(w: &[f32], n: usize, k: usize, split: bool) -> Result<Self> {
        if w.len() != n * k || n == 0 || k == 0 {
            candle_core::bail!("amx_bf16: weights of {} values for [{n}, {k}]", w.len());
        }
        let mut packed = Self::empty(n, k, split);
        let len = packed.k_steps * PACKED_BLOCK;
        let fill = |(block, (high, low)): (usize, (&mut [u16], Option<&mut [u16]>))| {
            let mut low = low;
            for j in 0..BLOCK_N.min(n - block * BLOCK_N) {
                let col = block * BLOCK_N + j;
                for (kk, &v) in w[col * k..(col + 1) * k].iter().enumerate() {
                    let i = packed_index(j, kk);
                    let h = bf16_bits(v);
                    high[i] = h;
                    if let Some(low) = low.as_deref_mut() {
                        low[i] = bf16_bits(v - f32::from_bits((h as u32) << 16));
                    }
                }
            }
        };
        match packed.low.as_mut() {
            Some(low) => packed
                .high
                .par_chunks_mut(len)
                .zip(low.par_chunks_mut(len))
                .map(|(h, l)| (h, Some(l)))
                .enumerate()
                .for_each(fill),
            None => packed
                .high
                .par_chunks_mut(len)
                .map(|h| (h, None))
                .enumerate()
                .for_each(fill),
        }
        Ok(packed)
    }

    /// Zeros for `[n, k]`.
    fn empty(n: usize, k: usize, split: bool) -> Self {
        let k_steps = k.div_ceil(BLOCK_K);
        let len = n.div_ceil(BLOCK_N) * k_steps * PACKED_BLOCK;
        Self {
            n,
            k,
            k_steps,
            high: vec![0u16; len],
            low: split.then(|| vec![0u16; len]),
        }
    }

    /// Packs `[n, k]` whose row `col` (`k` values) is `row(col)`: one head's keys.
    fn of_rows<'a>(n: usize, k: usize, row: impl Fn(usize) -> &'a [f32]) -> Self {
        let mut packed = Self::empty(n, k, false);
        let len = packed.k_steps * PACKED_BLOCK;
        for (block, out) in packed.high.chunks_exact_mut(len).enumerate() {
            for j in 0..BLOCK_N.min(n - block * BLOCK_N) {
                for (kk, &v) in row(block * BLOCK_N + j).iter().enumerate() {
                    out[packed_index(j, kk)] = bf16_bits(v);
                }
            }
        }
        packed
    }

    /// Packs `[n, k]` whose column `kk` (`n` values) is `column(kk)`: one head's values,
    /// `[time, dh]` in memory, as the right-hand side of `weights . values`.
    fn of_columns<'a>(n: usize, k: usize, column: impl Fn(usize) -> &'a [f32]) -> Self {
        let mut packed = Self::empty(n, k, false);
        let len = packed.k_steps * PACKED_BLOCK;
        for kk in 0..k {
            for (col, &v) in column(kk).iter().enumerate() {
                let (block, j) = (col / BLOCK_N, col % BLOCK_N);
                packed.high[block * len + packed_index(j, kk)] = bf16_bits(v);
            }
        }
        packed
    }

    /// The packed block of output columns `32 * block..`: `k_steps` pairs of tiles.
    fn column_block(&self, block: usize) -> &[u16] {
        let len = self.k_steps * PACKED_BLOCK;
        &self.high[block * len..(block + 1) * len]
    }

    /// The same block of the low half, when the weights keep it.
    fn low_column_block(&self, block: usize) -> Option<&[u16]> {
        let len = self.k_steps * PACKED_BLOCK;
        self.low
            .as_ref()
            .map(|l| &l[block * len..(block + 1) * len])
    }

    /// Packs a CPU tensor `[n, k]`, with its low half when `split`.
    pub fn of_tensor(w: &Tensor, split: bool) -> Result<Self> {
        let (n, k) = w.dims2()?;
        // Read in place when the weights are contiguous f32 on the CPU (the model's own), not
        // copied out first.
        if let Some(packed) = crate::with_f32_values(w, |v| Self::pack(v, n, k, split)) {
            return packed;
        }
        let v = w.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Self::pack(&v, n, k, split)
    }
}

/// The tile configuration for palette 1 with all 8 tiles 16 rows of 64 bytes (SDM vol. 1
/// 18.2.2: 64 bytes, palette at byte 0, bytes per row of tile i at 16 + 2i, rows at 48 + i).
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    fn all_16_by_64() -> Self {
        let mut c = [0u8; 64];
        c[0] = 1;
        for t in 0..8 {
            c[16 + 2 * t] = 64;
            c[48 + t] = 16;
        }
        Self(c)
    }
}

/// Loads the tile configuration of [`TileConfig::all_16_by_64`] for this thread.
///
/// # Safety
/// [`available`] must be true.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn load_tile_config() {
    let config = TileConfig::all_16_by_64();
    std::arch::asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack));
}

/// Hands the tile state back, so a thread that sleeps saves no 8 KiB of tiles.
///
/// # Safety
/// [`available`] must be true.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn release_tiles() {
    std::arch::asm!("tilerelease", options(nostack));
}

/// `c [32, 32] = a [32, 32 * k_steps] . b`, where `a` is bf16 rows `a_stride` u16 apart and
/// `b` one column block of a [`PackedWeights`] (`k_steps` pairs of tiles); `c` is f32 rows
/// of 32. Two `a` tiles (rows 0-15, 16-31) times two `b` tiles into four sums.
///
/// # Safety
/// [`available`] is true and this thread loaded [`load_tile_config`]; `a` holds 32 rows of
/// `32 * k_steps` u16 at `a_stride` apart; `b` holds `k_steps * PACKED_BLOCK` u16.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn tile_block(
    a: *const u16,
    a_stride: usize,
    b: &[u16],
    k_steps: usize,
    c: &mut [f32; 1024],
) {
    tile_passes(&[(a, b)], a_stride, k_steps, c)
}

/// [`tile_block`] summing several products `a_i . b_i` into the same `c`.
///
/// # Safety
/// As [`tile_block`], for every pair.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn tile_passes(
    passes: &[(*const u16, &[u16])],
    a_stride: usize,
    k_steps: usize,
    c: &mut [f32; 1024],
) {
    std::arch::asm!(
        "tilezero tmm0",
        "tilezero tmm1",
        "tilezero tmm2",
        "tilezero tmm3",
        options(nostack, nomem)
    );
    for &(a, b) in passes {
        for step in 0..k_steps {
            let a0 = a.add(step * BLOCK_K);
            let a1 = a0.add(16 * a_stride);
            let b0 = b.as_ptr().add(step * PACKED_BLOCK);
            let b1 = b0.add(512);
            std::arch::asm!(
                "tileloadd tmm4, [{a0} + {sa} * 1]",
                "tileloadd tmm5, [{a1} + {sa} * 1]",
                "tileloadd tmm6, [{b0} + {sb} * 1]",
                "tileloadd tmm7, [{b1} + {sb} * 1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                a0 = in(reg) a0,
                a1 = in(reg) a1,
                b0 = in(reg) b0,
                b1 = in(reg) b1,
                sa = in(reg) a_stride * 2,
                sb = in(reg) 64usize,
                options(nostack, readonly)
            );
        }
    }
    let c0 = c.as_mut_ptr();
    std::arch::asm!(
        "tilestored [{c0} + {s} * 1], tmm0",
        "tilestored [{c1} + {s} * 1], tmm1",
        "tilestored [{c2} + {s} * 1], tmm2",
        "tilestored [{c3} + {s} * 1], tmm3",
        c0 = in(reg) c0,
        c1 = in(reg) c0.add(16),
        c2 = in(reg) c0.add(16 * BLOCK_N),
        c3 = in(reg) c0.add(16 * BLOCK_N + 16),
        s = in(reg) BLOCK_N * 4,
        options(nostack)
    );
}

/// `y [m, n] = x [m, k] . w^T + bias`, tasks of 32 rows in parallel. `x` is `m * k` values;
/// `y` `m * n`. The caller checked [`available`] and the lengths.
#[cfg(target_arch = "x86_64")]
fn product(x: &[f32], m: usize, w: &PackedWeights, bias: Option<&[f32]>, y: &mut [f32]) {
    let (n, k) = (w.n, w.k);
    let arch = pulp::Arch::new();
    let task = |(task, y): (usize, &mut [f32])| {
        let row0 = task * BLOCK_M;
        let rows = (m - row0).min(BLOCK_M);
        let kp = w.k_steps * BLOCK_K;
        // This task's rows in bf16, padded with zero rows and columns.
        let mut a = vec![0u16; BLOCK_M * kp];
        for (r, dst) in a.chunks_exact_mut(kp).take(rows).enumerate() {
            let src = &x[(row0 + r) * k..(row0 + r + 1) * k];
            arch.dispatch(ToBf16 { src, dst });
        }
        let mut c = [0f32; BLOCK_M * BLOCK_N];
        // SAFETY: `available()` was true (the caller's contract); `a` is 32 rows of `kp`
        // u16 and each column block holds `k_steps` pairs of tiles.
        unsafe {
            load_tile_config();
            for block in 0..n.div_ceil(BLOCK_N) {
                let high = (a.as_ptr(), w.column_block(block));
                match w.low_column_block(block) {
                    Some(low) => tile_passes(&[high, (a.as_ptr(), low)], kp, w.k_steps, &mut c),
                    None => tile_passes(&[high], kp, w.k_steps, &mut c),
                }
                let col0 = block * BLOCK_N;
                let cols = (n - col0).min(BLOCK_N);
                for r in 0..rows {
                    let out = &mut y[r * n + col0..r * n + col0 + cols];
                    let sums = &c[r * BLOCK_N..r * BLOCK_N + cols];
                    match bias {
                        Some(b) => {
                            for ((o, s), b) in out.iter_mut().zip(sums).zip(&b[col0..]) {
                                *o = s + b;
                            }
                        }
                        None => out.copy_from_slice(sums),
                    }
                }
            }
            release_tiles();
        }
    };
    y.par_chunks_mut(BLOCK_M * n).enumerate().for_each(task);
}

#[cfg(not(target_arch = "x86_64"))]
fn product(_: &[f32], _: usize, _: &PackedWeights, _: Option<&[f32]>, _: &mut [f32]) {
    unreachable!("amx_bf16::available() is false off x86-64")
}

struct Linear<'a> {
    w: &'a PackedWeights,
    bias: Option<&'a [f32]>,
}

impl CustomOp1 for Linear<'_> {
    fn name(&self) -> &'static str {
        "amx-bf16-linear"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = crate::contiguous_data::<f32>(storage, layout, self.name())?;
        let dims = layout.shape().dims();
        let k = *dims.last().unwrap_or(&0);
        if k != self.w.k {
            candle_core::bail!(
                "amx-bf16-linear: input rows of {k}, weights of {}",
                self.w.k
            )
        }
        let m = x.len() / k.max(1);
        let mut y = vec![0f32; m * self.w.n];
        if m > 0 {
            product(x, m, self.w, self.bias, &mut y);
        }
        let mut out = dims.to_vec();
        *out.last_mut().expect("rank checked by the caller") = self.w.n;
        Ok((CpuStorage::F32(y), Shape::from(out)))
    }
}

/// `x [.., k] . w^T + bias` on the tiles: `[.., n]`. Errors when AMX is not [`available`],
/// `x` is not an f32 CPU tensor, its last dimension is not `w`'s `k`, or `bias` is not `n`
/// f32 values.
pub fn linear(x: &Tensor, w: &PackedWeights, bias: Option<&[f32]>) -> Result<Tensor> {
    if !available() {
        candle_core::bail!("amx-bf16-linear: this CPU or kernel has no AMX tiles")
    }
    if x.rank() == 0 {
        candle_core::bail!("amx-bf16-linear: a scalar input")
    }
    if let Some(b) = bias {
        if b.len() != w.n {
            candle_core::bail!("amx-bf16-linear: bias of {} for {} outputs", b.len(), w.n)
        }
    }
    let x = x.contiguous()?;
    x.apply_op1_no_bwd(&Linear { w, bias })
}

/// The encoder's self-attention on the tiles (see [`self_attention`]).
struct SelfAttention {
    heads: usize,
    scale: f32,
}

impl SelfAttention {
    /// One task: query rows `row0..row0 + rows` of window `bi`, every head, into `y` (those
    /// rows of `[t, d]`). `packed[h]`: head `h`'s keys `[t, dh]` and values as `[dh, t]`.
    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::too_many_arguments)]
    fn task(
        &self,
        arch: pulp::Arch,
        q: &[f32],
        packed: &[(PackedWeights, PackedWeights)],
        t: usize,
        d: usize,
        row0: usize,
        y: &mut [f32],
    ) {
        let dh = d / self.heads;
        let rows = y.len() / d;
        let dh_pad = dh.div_ceil(BLOCK_K) * BLOCK_K;
        let t_pad = t.div_ceil(BLOCK_N) * BLOCK_N;
        let mut a = vec![0u16; BLOCK_M * dh_pad];
        let mut scores = vec![0f32; BLOCK_M * t_pad];
        let mut weights = vec![0f32; t];
        // Rows past `rows` and columns past `t` stay zero: they add nothing to the products.
        let mut p = vec![0u16; BLOCK_M * t_pad];
        let mut c = [0f32; BLOCK_M * BLOCK_N];
        // SAFETY: `available()` was true (the caller's contract); `a` is 32 rows of `dh_pad`
        // u16, `p` 32 rows of `t_pad`; the keys are packed with k = dh (`dh_pad / 32` steps),
        // the values with k = t (`t_pad / 32` steps).
        unsafe {
            load_tile_config();
            for (h, (keys, values)) in packed.iter().enumerate() {
                for r in 0..rows {
                    let src = &q[(row0 + r) * d + h * dh..(row0 + r) * d + (h + 1) * dh];
                    arch.dispatch(ToBf16 {
                        src,
                        dst: &mut a[r * dh_pad..(r + 1) * dh_pad],
                    });
                }
                for block in 0..t_pad / BLOCK_N {
                    tile_block(
                        a.as_ptr(),
                        dh_pad,
                        keys.column_block(block),
                        keys.k_steps,
                        &mut c,
                    );
                    for r in 0..rows {
                        let dst = &mut scores[r * t_pad + block * BLOCK_N..][..BLOCK_N];
                        for (s, &v) in dst.iter_mut().zip(&c[r * BLOCK_N..(r + 1) * BLOCK_N]) {
                            *s = v * self.scale;
                        }
                    }
                }
                for r in 0..rows {
                    arch.dispatch(crate::fast_ops::Softmax {
                        row: &scores[r * t_pad..r * t_pad + t],
                        out: &mut weights,
                    });
                    arch.dispatch(ToBf16 {
                        src: &weights,
                        dst: &mut p[r * t_pad..r * t_pad + t],
                    });
                }
                for block in 0..dh.div_ceil(BLOCK_N) {
                    tile_block(
                        p.as_ptr(),
                        t_pad,
                        values.column_block(block),
                        values.k_steps,
                        &mut c,
                    );
                    let col0 = h * dh + block * BLOCK_N;
                    let cols = (dh - block * BLOCK_N).min(BLOCK_N);
                    for r in 0..rows {
                        y[r * d + col0..r * d + col0 + cols]
                            .copy_from_slice(&c[r * BLOCK_N..r * BLOCK_N + cols]);
                    }
                }
            }
            release_tiles();
        }
    }
}

impl candle_core::CustomOp3 for SelfAttention {
    fn name(&self) -> &'static str {
        "amx-bf16-self-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let q = crate::contiguous_data::<f32>(qs, ql, name)?;
        let k = crate::contiguous_data::<f32>(ks, kl, name)?;
        let v = crate::contiguous_data::<f32>(vs, vl, name)?;
        let Ok((b, t, d)) = ql.shape().dims3() else {
            candle_core::bail!("{name}: queries of shape {:?}, want [b, t, d]", ql.shape())
        };
        if kl.shape() != ql.shape() || vl.shape() != ql.shape() {
            candle_core::bail!(
                "{name}: queries {:?}, keys {:?}, values {:?}: want one shape",
                ql.shape(),
                kl.shape(),
                vl.shape()
            )
        }
        if self.heads == 0 || d % self.heads != 0 || t == 0 {
            candle_core::bail!("{name}: {d} columns in {} heads, {t} rows", self.heads)
        }
        let dh = d / self.heads;
        let mut y = vec![0f32; b * t * d];
        #[cfg(target_arch = "x86_64")]
        {
            let arch = pulp::Arch::new();
            // Each window's keys and values, per head, packed once for all its query rows.
            let packed: Vec<(PackedWeights, PackedWeights)> = (0..b * self.heads)
                .into_par_iter()
                .map(|i| {
                    let (bi, h) = (i / self.heads, i % self.heads);
                    let at = |row: usize| (bi * t + row) * d + h * dh;
                    (
                        PackedWeights::of_rows(t, dh, |row| &k[at(row)..at(row) + dh]),
                        PackedWeights::of_columns(dh, t, |row| &v[at(row)..at(row) + dh]),
                    )
                })
                .collect();
            let blocks = t.div_ceil(BLOCK_M);
            // Tasks of 32 query rows of one window; a window's rows are contiguous in `y`.
            let mut tasks: Vec<(usize, usize, &mut [f32])> = Vec::with_capacity(b * blocks);
            for (bi, window) in y.chunks_mut(t * d).enumerate() {
                for (blk, rows) in window.chunks_mut(BLOCK_M * d).enumerate() {
                    tasks.push((bi, blk * BLOCK_M, rows));
                }
            }
            tasks.into_par_iter().for_each(|(bi, row0, rows)| {
                let heads = &packed[bi * self.heads..(bi + 1) * self.heads];
                self.task(
                    arch,
                    &q[bi * t * d..(bi + 1) * t * d],
                    heads,
                    t,
                    d,
                    row0,
                    rows,
                )
            });
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (q, k, v, dh);
            candle_core::bail!("{name}: no AMX off x86-64")
        }
        Ok((CpuStorage::F32(y), Shape::from((b, t, d))))
    }
}

/// Self-attention of each window's rows over themselves with no mask (the Whisper encoder's),
/// every head at once, on the tiles: for each head `h` (columns `h * dh..(h + 1) * dh`,
/// `dh = d / heads`), `softmax(q_h k_h^T * scale) v_h`. `q, k, v [b, t, d]` f32 on the CPU
/// (projected, heads side by side, unscaled); returns `[b, t, d]` with the heads side by side,
/// as the output projection reads it. Queries, keys, values and the softmax weights are
/// rounded to bf16; scores, the softmax and sums are f32. A block of 32 query rows at a time:
/// its scores (`32 x t`) stay in the core's caches, where the unfused path wrote
/// `[b, heads, t, t]` three times (a 15-s window of tiny.en: 13.5 MB per layer each).
/// Errors when AMX is not [`available`] or the shapes disagree.
pub fn self_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    scale: f32,
) -> Result<Tensor> {
    if !available() {
        candle_core::bail!("amx-bf16-self-attention: this CPU or kernel has no AMX tiles")
    }
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    q.apply_op3_no_bwd(&k, &v, &SelfAttention { heads, scale })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use rand::{Rng, SeedableRng};

    fn random(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    fn rounded(v: f32) -> f32 {
        f32::from_bits((bf16_bits(v) as u32) << 16)
    }

    /// The same product in f64 from the bf16-rounded inputs (weights as their two halves when
    /// `split`): the tiles' only other error is f32 summation.
    fn reference(
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        (m, n, k): (usize, usize, usize),
        split: bool,
    ) -> Vec<f32> {
        let r = |v: f32| rounded(v) as f64;
        let rw = |v: f32| {
            if split {
                r(v) + r(v - rounded(v))
            } else {
                r(v)
            }
        };
        let mut y = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = bias.map_or(0.0, |b| b[j] as f64);
                for p in 0..k {
                    s += r(x[i * k + p]) * rw(w[j * k + p]);
                }
                y[i * n + j] = s as f32;
            }
        }
        y
    }

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(bf16_bits(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between two bf16 values: to the even one (1.0).
        assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3f80);
        assert_eq!(bf16_bits(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(bf16_bits(-2.5), 0xc020);
        assert!(f32::from_bits((bf16_bits(f32::NAN) as u32) << 16).is_nan());
        assert_eq!(bf16_bits(f32::INFINITY), 0x7f80);
    }

    #[test]
    fn products_match_the_bf16_reference_for_ragged_shapes() {
        if !available() {
            eprintln!("skipped: no AMX tiles on this machine");
            return;
        }
        // m, n, k not multiples of the blocks, one of each, and encoder-like shapes.
        for (m, n, k, seed) in [
            (1, 1, 1, 1),
            (5, 7, 3, 2),
            (33, 40, 70, 3),
            (64, 64, 64, 4),
            (100, 384, 384, 5),
            (37, 1536, 384, 6),
        ] {
            let x = random(m * k, seed);
            let w = random(n * k, seed + 100);
            let bias = random(n, seed + 200);
            let xt = Tensor::from_vec(x.clone(), (m, k), &Device::Cpu).unwrap();
            for (b, split) in [
                (None, false),
                (Some(bias.as_slice()), false),
                (Some(bias.as_slice()), true),
            ] {
                let packed = PackedWeights::pack(&w, n, k, split).unwrap();
                let y = linear(&xt, &packed, b).unwrap();
                assert_eq!(y.dims(), &[m, n]);
                let y = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let want = reference(&x, &w, b, (m, n, k), split);
                let worst = y
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                // f32 sums of k products of magnitude <= 1.
                assert!(worst <= 1e-5 * k as f32, "m {m} n {n} k {k}: {worst}");
            }
        }
    }

    #[test]
    fn a_row_gives_the_same_outputs_alone_or_in_a_batch() {
        if !available() {
            eprintln!("skipped: no AMX tiles on this machine");
            return;
        }
        let (m, n, k) = (45, 96, 384);
        let x = random(m * k, 9);
        let packed = PackedWeights::pack(&random(n * k, 10), n, k, true).unwrap();
        let all = linear(
            &Tensor::from_vec(x.clone(), (1, m, k), &Device::Cpu).unwrap(),
            &packed,
            None,
        )
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
        for i in [0, 31, 32, 44] {
            let one =
                Tensor::from_vec(x[i * k..(i + 1) * k].to_vec(), (1, k), &Device::Cpu).unwrap();
            let one = linear(&one, &packed, None)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert_eq!(one, all[i * n..(i + 1) * n].to_vec(), "row {i}");
        }
    }

    #[test]
    fn bad_inputs_are_named() {
        assert!(PackedWeights::pack(&[1.0; 5], 2, 3, false).is_err());
        assert!(PackedWeights::pack(&[], 0, 3, true).is_err());
        if !available() {
            return;
        }
        let packed = PackedWeights::pack(&[1.0; 6], 2, 3, false).unwrap();
        let x = Tensor::ones((4, 5), candle_core::DType::F32, &Device::Cpu).unwrap();
        let e = linear(&x, &packed, None).unwrap_err().to_string();
        assert!(e.contains("input rows of 5"), "{e}");
        let x = Tensor::ones((4, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        let e = linear(&x, &packed, Some(&[1.0])).unwrap_err().to_string();
        assert!(e.contains("bias of 1"), "{e}");
    }

    #[test]
    fn self_attention_matches_candle_within_bf16() {
        if !available() {
            eprintln!("skipped: no AMX tiles on this machine");
            return;
        }
        use candle_core::D;
        for (b, t, heads, dh, seed) in [(1, 750, 6, 64, 20), (2, 45, 2, 48, 21), (1, 1, 1, 32, 22)]
        {
            let d = heads * dh;
            let make = |s| Tensor::from_vec(random(b * t * d, s), (b, t, d), &Device::Cpu).unwrap();
            let (q, k, v) = (make(seed), make(seed + 1), make(seed + 2));
            let scale = 1.0 / (dh as f32).sqrt();
            let got = self_attention(&q, &k, &v, heads, scale).unwrap();
            let split = |x: &Tensor| {
                x.reshape((b, t, heads, dh))
                    .unwrap()
                    .transpose(1, 2)
                    .unwrap()
                    .contiguous()
                    .unwrap()
            };
            let w = (split(&q).matmul(&split(&k).t().unwrap()).unwrap() * scale as f64).unwrap();
            let w = candle_nn::ops::softmax(&w, D::Minus1).unwrap();
            let want = w
                .matmul(&split(&v))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .reshape((b, t, d))
                .unwrap();
            let diff = (got - want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            // Outputs are means of values in [-1, 1]; bf16 keeps 8 bits (relative 2^-9).
            assert!(diff < 2e-2, "b {b} t {t} heads {heads}: {diff}");
        }
    }

    #[test]
    fn self_attention_names_bad_shapes() {
        if !available() {
            return;
        }
        let x = Tensor::zeros((1, 4, 6), candle_core::DType::F32, &Device::Cpu).unwrap();
        let y = Tensor::zeros((1, 5, 6), candle_core::DType::F32, &Device::Cpu).unwrap();
        let e = self_attention(&x, &y, &x, 2, 1.0).unwrap_err().to_string();
        assert!(e.contains("want one shape"), "{e}");
        let e = self_attention(&x, &x, &x, 4, 1.0).unwrap_err().to_string();
        assert!(e.contains("6 columns in 4 heads"), "{e}");
    }
}
