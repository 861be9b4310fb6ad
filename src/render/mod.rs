//! What people and tools read: transcripts as text, JSON, SRT and WebVTT.

pub mod transcript;

pub use transcript::{render, ChannelTranscript, TranscriptFormat};
