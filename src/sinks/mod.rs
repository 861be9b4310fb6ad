//! Where results go: live alerts (stdout, file, webhook, terminal view) and transcripts.

pub mod alerts;
pub mod transcript_format;
