//! Where results go. For now: transcripts rendered as text, JSON, SRT or WebVTT.

pub mod transcript_format;
