//! Attention of one query per sequence, the shape of every decoder step, on the CPU.
//!
//! Why: a decoder step asks each sequence's single query row to attend over the cached keys
//! and values, `q [b, heads, 1, dh]` against `k, v [b, heads, t, dh]`. Through candle's
//! matmul that is `b * heads` matrix products of one row, and gemm packs each right-hand side
//! (a copy of every key, then every value) before multiplying: in a tiny.en step of 8
//! sequences over a 15-s window (t = 750) the attention was about half of the step, 10-12 of
//! 22 ms. Here each key and value is read once, in place. Sequences may also share keys and
//! values (`kv_rows`): the sequences of one audio window decoded at several temperatures at
//! once read one copy of the window's projected audio instead of one copy each.
//!
//! The sums: each score is one dot product over the head width in 8-lane accumulators added
//! in a fixed order; the softmax is [`crate::fast_ops`]'s; each output is the weighted sum of
//! the values in key order. Nothing depends on the other sequences, so a sequence gets the
//! same output alone as in any batch (tested below), and within a few f32 rounding steps of
//! `softmax(q k^T + mask) v` computed by candle.

use candle_core::{Result, Storage, Tensor};
use rayon::prelude::*;

/// Keys and values read (elements of `k` and `v` over all tasks) below which one thread does
/// all of a step's attention: handing tasks to a second thread costs tens of microseconds, as
/// much as a self-attention over a short prompt.
const PARALLEL_MIN_ELEMS: usize = 1 << 18;

/// The attention of `q [b, heads, 1, dh]` over `k, v [bk, heads, t, dh]`: `[b, heads, 1, dh]`,
/// `softmax(q k^T + mask) v` per head, with no scaling (scale `q` first). Sequence `i` reads
/// the keys and values of row `kv_rows[i]` (`< bk`), or of row `i` when `kv_rows` is `None`
/// (then `bk == b`). `mask [b, t]`, when given, is added to the scores (0 where the query may
/// look, -inf where not, as for left-padded prompts).
///
/// Errors: tensors not f32 on the CPU, shapes that do not fit together, a `kv_rows` entry out
/// of range.
pub fn attend_one_query(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    kv_rows: Option<&[u32]>,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let (b, heads, one, dh) = q.dims4()?;
    let (bk, kh, t, kd) = k.dims4()?;
    if one != 1 || kh != heads || kd != dh || v.dims() != k.dims() {
        candle_core::bail!(
            "attend_one_query: q {:?}, k {:?}, v {:?}",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    let rows: Vec<usize> = match kv_rows {
        Some(r) if r.len() == b && r.iter().all(|&x| (x as usize) < bk) => {
            r.iter().map(|&x| x as usize).collect()
        }
        Some(r) => candle_core::bail!("attend_one_query: {} query rows, key rows {r:?} of {bk}", b),
        None if bk == b => (0..b).collect(),
        None => candle_core::bail!("attend_one_query: {b} query rows, {bk} key rows"),
    };
    if let Some(m) = mask {
        if m.dims() != [b, t] {
            candle_core::bail!("attend_one_query: mask {:?}, want [{b}, {t}]", m.dims());
        }
    }
    let q = q.contiguous()?;
    let (k, v) = (k.contiguous()?, v.contiguous()?);
    let mask = mask.map(|m| m.contiguous()).transpose()?;
    let (qs, ql) = q.storage_and_layout();
    let (ks, kl) = k.storage_and_layout();
    let (vs, vl) = v.storage_and_layout();
    let qd = f32_data(&qs, ql)?;
    let kd = f32_data(&ks, kl)?;
    let vd = f32_data(&vs, vl)?;
    let mask_guard = mask.as_ref().map(|m| m.storage_and_layout());
    let md = match &mask_guard {
        Some((s, l)) => Some(f32_data(s, l)?),
        None => None,
    };
    // One task per (query row, head); the tasks of rows that share keys sit next to each
    // other, so the second reads them from cache.
    let mut order: Vec<usize> = (0..b).collect();
    order.sort_by_key(|&i| rows[i]);
    let tasks: Vec<(usize, usize)> = order
        .iter()
        .flat_map(|&i| (0..heads).map(move |h| (i, h)))
        .collect();
    let block = t * dh;
    let run = |&(i, h): &(usize, usize)| -> Vec<f32> {
        let kv = (rows[i] * heads + h) * block;
        let mut out = vec![0f32; dh];
        pulp::Arch::new().dispatch(Head {
            q: &qd[(i * heads + h) * dh..][..dh],
            k: &kd[kv..kv + block],
            v: &vd[kv..kv + block],
            mask: md.map(|m| &m[i * t..(i + 1) * t]),
            out: &mut out,
        });
        out
    };
    let outs: Vec<Vec<f32>> = if distinct(&rows) * heads * block * 2 >= PARALLEL_MIN_ELEMS {
        tasks.par_iter().map(run).collect()
    } else {
        tasks.iter().map(run).collect()
    };
    let mut data = vec![0f32; b * heads * dh];
    for (&(i, h), o) in tasks.iter().zip(outs) {
        data[(i * heads + h) * dh..][..dh].copy_from_slice(&o);
    }
    Tensor::from_vec(data, (b, heads, 1, dh), q.device())
}

fn distinct(rows: &[usize]) -> usize {
    let mut r = rows.to_vec();
    r.sort_unstable();
    r.dedup();
    r.len()
}

fn f32_data<'a>(storage: &'a Storage, layout: &candle_core::Layout) -> Result<&'a [f32]> {
    match storage {
        Storage::Cpu(c) => crate::contiguous_data::<f32>(c, layout, "attend_one_query"),
        _ => candle_core::bail!("attend_one_query: CPU tensors only"),
    }
}

/// Whether [`attend_one_query`] takes these tensors: f32 on the CPU.
pub fn applies(q: &Tensor) -> bool {
    crate::fast_ops::on_cpu_f32(q)
}

/// One query row and head: scores, softmax, weighted values. A `pulp::WithSimd` so that the
/// loops are compiled for the CPU's vector width (see `fast_ops`).
struct Head<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    mask: Option<&'a [f32]>,
    out: &'a mut [f32],
}

impl pulp::WithSimd for Head<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let dh = self.q.len();
        let t = self.k.len() / dh;
        let mut scores = vec![0f32; t];
        for (j, s) in scores.iter_mut().enumerate() {
            *s = dot(self.q, &self.k[j * dh..(j + 1) * dh]);
        }
        if let Some(mask) = self.mask {
            for (s, m) in scores.iter_mut().zip(mask) {
                *s += m;
            }
        }
        let mut p = vec![0f32; t];
        crate::fast_ops::softmax_row(&scores, &mut p);
        self.out.fill(0.0);
        for (j, &w) in p.iter().enumerate() {
            for (o, &x) in self.out.iter_mut().zip(&self.v[j * dh..(j + 1) * dh]) {
                *o = w.mul_add(x, *o);
            }
        }
    }
}

/// `a . b` in eight running sums over the chunks of eight in order, added in a fixed order,
/// then the tail.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (ac, ar) = a.as_chunks::<8>();
    let (bc, br) = b.as_chunks::<8>();
    let mut acc = [0f32; 8];
    for (x, y) in ac.iter().zip(bc) {
        for l in 0..8 {
            acc[l] = x[l].mul_add(y[l], acc[l]);
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (&x, &y) in ar.iter().zip(br) {
        s = x.mul_add(y, s);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fast_ops::tests::max_abs_diff;
    use candle_core::{DType, Device, D};

    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Tensor {
        let mut w = q.matmul(&k.t().unwrap()).unwrap();
        if let Some(m) = mask {
            let (b, t) = m.dims2().unwrap();
            w = w.broadcast_add(&m.reshape((b, 1, 1, t)).unwrap()).unwrap();
        }
        candle_nn::ops::softmax(&w, D::Minus1)
            .unwrap()
            .matmul(v)
            .unwrap()
    }

    #[test]
    fn matches_candle_and_a_row_gives_the_same_alone_as_in_a_batch() {
        let dev = Device::Cpu;
        // Whisper's head width over a 15-s window and a short self-attention; an odd width
        // with a tail after the chunks of eight.
        for (b, heads, t, dh) in [(3, 6, 750, 64), (4, 2, 9, 64), (2, 3, 17, 13)] {
            let q = Tensor::randn(0f32, 0.3, (b, heads, 1, dh), &dev).unwrap();
            let k = Tensor::randn(0f32, 1.0, (b, heads, t, dh), &dev).unwrap();
            let v = Tensor::randn(0f32, 1.0, (b, heads, t, dh), &dev).unwrap();
            // Row 1 is left-padded: it may not look at its first two keys.
            let mut m = vec![0f32; b * t];
            m[t] = f32::NEG_INFINITY;
            m[t + 1] = f32::NEG_INFINITY;
            let mask = Tensor::from_vec(m, (b, t), &dev).unwrap();
            for mask in [None, Some(&mask)] {
                let got = attend_one_query(&q, &k, &v, None, mask).unwrap();
                let want = reference(&q, &k, &v, mask);
                assert!(max_abs_diff(&got, &want) < 1e-5, "{b}x{heads}x{t}x{dh}");
                for i in 0..b {
                    let one = |x: &Tensor| x.narrow(0, i, 1).unwrap();
                    let alone = attend_one_query(
                        &one(&q),
                        &one(&k),
                        &one(&v),
                        None,
                        mask.map(one).as_ref(),
                    )
                    .unwrap();
                    assert_eq!(max_abs_diff(&alone, &one(&got)), 0.0, "row {i}");
                }
            }
        }
    }

    #[test]
    fn shared_keys_give_what_copies_give() {
        let dev = Device::Cpu;
        let (heads, t, dh) = (6, 750, 64);
        let q = Tensor::randn(0f32, 0.3, (5, heads, 1, dh), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (2, heads, t, dh), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (2, heads, t, dh), &dev).unwrap();
        let rows = [1u32, 0, 1, 1, 0];
        let shared = attend_one_query(&q, &k, &v, Some(&rows), None).unwrap();
        let idx = Tensor::new(&rows, &dev).unwrap();
        let copied = attend_one_query(
            &q,
            &k.index_select(&idx, 0).unwrap(),
            &v.index_select(&idx, 0).unwrap(),
            None,
            None,
        )
        .unwrap();
        assert_eq!(max_abs_diff(&shared, &copied), 0.0);
    }

    #[test]
    fn bad_shapes_and_rows_are_errors() {
        let dev = Device::Cpu;
        let q = Tensor::zeros((2, 6, 1, 64), DType::F32, &dev).unwrap();
        let k = Tensor::zeros((2, 6, 10, 64), DType::F32, &dev).unwrap();
        let short = Tensor::zeros((2, 6, 9, 64), DType::F32, &dev).unwrap();
        assert!(attend_one_query(&q, &k, &short, None, None).is_err());
        assert!(attend_one_query(&q, &k, &k, Some(&[0, 2]), None).is_err());
        let one = k.narrow(0, 0, 1).unwrap();
        assert!(attend_one_query(&q, &one, &one, None, None).is_err());
        let mask = Tensor::zeros((2, 9), DType::F32, &dev).unwrap();
        assert!(attend_one_query(&q, &k, &k, None, Some(&mask)).is_err());
        let half = q.to_dtype(DType::F16).unwrap();
        assert!(attend_one_query(&half, &k, &k, None, None).is_err());
    }
}
