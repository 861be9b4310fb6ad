//! Vectorised f32 kernels for the CPU, used by Whisper (`vishguard::asr`) and the sentence
//! encoders (`vishguard::detect`) through candle's custom ops.
//!
//! A crate apart from vishguard only so that Cargo compiles it with optimisation in every
//! profile (vishguard's tests build vishguard itself at opt-level 0, and these loops are the
//! hot part of the encoders there). Each kernel is tested against candle's own op or an f64
//! reference in its module.

pub mod f16_weights;
pub mod fast_ops;
