//! Where the engine's events go. Each sink is a component with its own config and its own
//! bounded queue (the engine's fan-out runs every sink on a thread of its own), so a sink that
//! blocks (an fsync, a dead webhook) never holds up the recognisers or another sink.
//!
//! Sinks here: JSON lines on stdout, a colored view on the terminal, an append-only alert file,
//! a webhook with an on-disk outbox, and an in-memory collector for tests and callers.

pub mod alert_file;
pub mod memory;
pub mod redact;
pub mod stdout;
pub mod terminal;
pub mod webhook;

use serde::{Deserialize, Serialize};

use crate::call::Event;

/// A component that consumes events. `write` is called in the engine's order (per call:
/// `call_started`, transcripts and alerts, `call_ended`); an error is logged and counted and
/// the next event still comes.
pub trait Sink: Send {
    /// For logs and errors: "stdout", "alert file alerts.jsonl".
    fn describe(&self) -> String;
    fn write(&mut self, event: &Event) -> anyhow::Result<()>;
    /// After the last event: flush, finish deliveries.
    fn close(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// What a sink's queue does when it is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// Newer events are dropped and counted (views for people, where old lines lose value).
    Drop,
    /// Newer events wait in a file on disk and reach the sink, in order, once it catches up:
    /// nothing is lost, memory stays bounded.
    Spill,
}

/// A sink's queue between the engine and the sink's own thread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Events held in memory.
    pub capacity: usize,
    pub overflow: Overflow,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            capacity: 1024,
            overflow: Overflow::Spill,
        }
    }
}

impl QueueConfig {
    /// The default for sinks that only people watch: drop, rather than fall behind.
    pub fn dropping() -> Self {
        Self {
            overflow: Overflow::Drop,
            ..Self::default()
        }
    }
}
