//! Vectorised f32 kernels for the CPU, used by Whisper (`vishguard::asr`) and the sentence
//! encoders (`vishguard::detect`) through candle's custom ops.
//!
//! A crate apart from vishguard only so that Cargo compiles it with optimisation in every
//! profile (vishguard's tests build vishguard itself at opt-level 0, and these loops are the
//! hot part of the encoders there). Each kernel is tested against candle's own op or an f64
//! reference in its module.

pub mod amx_bf16;
pub mod fast_ops;
pub mod step_attention;
pub mod step_weights;

use candle_core::{CpuStorage, Layout, Result, Tensor, WithDType};

/// The contiguous data of a CPU tensor's layout as `T`, for a custom op's `cpu_fwd`; an error
/// naming the op when the storage holds another dtype or the layout is not contiguous.
pub fn contiguous_data<'a, T: WithDType>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> Result<&'a [T]> {
    let Ok(data) = storage.as_slice::<T>() else {
        candle_core::bail!(
            "{op}: {} only, got {:?}",
            T::DTYPE.as_str(),
            candle_core::backend::BackendStorage::dtype(storage)
        )
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: the input must be contiguous"),
    }
}

/// `f` applied to the values of a contiguous f32 tensor on the CPU, read in place (no copy,
/// the storage's read lock held while `f` runs); `None` when the tensor is on another device,
/// of another dtype or not contiguous.
pub fn with_f32_values<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    let (storage, layout) = t.storage_and_layout();
    match (&*storage, layout.contiguous_offsets()) {
        (candle_core::Storage::Cpu(CpuStorage::F32(all)), Some((a, b))) => Some(f(&all[a..b])),
        _ => None,
    }
}
