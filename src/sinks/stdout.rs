//! JSON lines on standard output: call openings, alerts and call summaries (and each
//! utterance's transcript when asked), one versioned record per line.

use std::io::Write;

use serde::{Deserialize, Serialize};

use super::Sink;
use crate::call::{json_line, Event};

/// `[[sinks]] type = "stdout"`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutConfig {
    /// Also print each utterance's transcript.
    #[serde(default)]
    pub transcripts: bool,
    #[serde(default)]
    pub queue: super::QueueConfig,
    /// Mask card numbers, codes and id numbers (runs of 4+ digits) before they leave.
    #[serde(default)]
    pub redact: bool,
}

pub struct JsonLines {
    transcripts: bool,
    /// Standard output was closed by the reader (a pipe into `head`): not an error, nothing
    /// more is written.
    closed: bool,
}

impl JsonLines {
    pub fn new(config: &StdoutConfig) -> Self {
        Self {
            transcripts: config.transcripts,
            closed: false,
        }
    }
}

impl Sink for JsonLines {
    fn describe(&self) -> String {
        "stdout".into()
    }

    fn write(&mut self, event: &Event) -> anyhow::Result<()> {
        if self.closed || (matches!(event, Event::Transcript(_)) && !self.transcripts) {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        match writeln!(out, "{}", json_line(event)).and_then(|_| out.flush()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            other => Ok(other?),
        }
    }
}
