//! Speech recognition with Whisper on candle: mel features, the model, decoding, long-form
//! transcription.

pub mod allocator;
pub mod bias;
pub mod decode;
pub mod device;
pub mod language;
pub mod mel;
pub mod mel_batch;
pub mod model;
pub mod pieces;
pub mod rescore;
pub mod threads;
pub mod tokens;
pub mod transcribe;

// The CPU kernels live in crates/cpu-ops, compiled with optimisation even in test builds.
pub use vishguard_cpu_ops::{amx_bf16, fast_ops, step_attention, step_weights};

pub use device::{ComputeType, DeviceChoice};
pub use language::{simplified, written_language};
pub use transcribe::{Segment, TranscribeOptions, Transcriber, Transcript};
