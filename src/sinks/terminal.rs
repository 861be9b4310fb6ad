//! A readable, colored line per utterance, alert and call end, on stderr, for a person
//! following the calls.

use serde::{Deserialize, Serialize};

use super::Sink;
use crate::call::{Event, Risk};

/// `[[sinks]] type = "terminal"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerminalConfig {
    /// A person cannot read faster than the calls speak: a full queue drops lines by default.
    #[serde(default = "super::QueueConfig::dropping")]
    pub queue: super::QueueConfig,
    /// Mask card numbers, codes and id numbers (runs of 4+ digits) before they leave.
    #[serde(default)]
    pub redact: bool,
}

impl Default for TerminalConfig {
    fn default() -> Self {
        Self {
            queue: super::QueueConfig::dropping(),
            redact: false,
        }
    }
}

/// Lines on stderr, colored when stderr is a terminal (plain when redirected to a file).
pub struct TerminalView {
    colored: bool,
}

impl TerminalView {
    pub fn new() -> Self {
        use std::io::IsTerminal;
        Self {
            colored: std::io::stderr().is_terminal(),
        }
    }
}

impl Default for TerminalView {
    fn default() -> Self {
        Self::new()
    }
}

/// One line for a person (with ANSI colors when `colored`); `None` for events not worth one.
pub fn view_line(event: &Event, colored: bool) -> Option<String> {
    let (reset, red, yellow, dim, bold) = if colored {
        ("\x1b[0m", "\x1b[31m", "\x1b[33m", "\x1b[2m", "\x1b[1m")
    } else {
        ("", "", "", "", "")
    };
    Some(match event {
        Event::CallStarted(_) => return None,
        Event::Transcript(u) => {
            let (color, tag) = match u.risk {
                Risk::None => (dim, "     "),
                Risk::Suspected => (yellow, "SUSP "),
                Risk::High => (red, "HIGH "),
            };
            format!(
                "{color}{tag}{reset}{dim}{}#{} {:7.1}s{reset} {} {dim}({:.2}){reset}",
                u.call_id, u.party, u.start_s, u.text, u.score
            )
        }
        Event::Alert(a) => format!(
            "{bold}{red}ALERT{reset} {} {:.1}s {}: \"{}\" (score {:.2}, {:.1} s after the words)",
            a.call_id,
            a.evidence.spoken.map_or(0.0, |s| s.t_s),
            a.evidence.category,
            a.evidence.matched_text,
            a.score,
            a.latency_s
        ),
        Event::CallEnded(s) => {
            let stream = s.stream.clone().unwrap_or_default();
            format!(
                "{bold}call {} ended{reset}: risk {}, score {:.2}, {} alerts, {} utterances, {:.1} s audio dropped",
                s.call_id,
                s.risk.as_str(),
                s.score,
                stream.alerts,
                stream.utterances,
                stream.dropped_audio_s
            )
        }
    })
}

impl Sink for TerminalView {
    fn describe(&self) -> String {
        "terminal".into()
    }

    fn write(&mut self, event: &Event) -> anyhow::Result<()> {
        if let Some(line) = view_line(event, self.colored) {
            eprintln!("{line}");
        }
        Ok(())
    }
}
