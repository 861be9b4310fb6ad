//! Where the engine's events go. Each sink is a component with its own config and its own
//! bounded queue (the engine's fan-out runs every sink on a thread of its own), so a sink that
//! blocks (an fsync, a dead webhook) never holds up the recognisers or another sink.
//!
//! Sinks here: JSON lines on stdout, a colored view on the terminal, an append-only alert file,
//! a webhook and NATS JetStream, each with an on-disk outbox, and an in-memory collector for
//! tests and callers.
//!
//! Delivery guarantees (write-ahead): an alert is appended and synced to every durable sink
//! (the alert files first, then the webhook outboxes) before any other sink shows it, and the
//! webhook sends it only once it is in all of them. So an alert that a person or a system has
//! seen is on disk, and one killed between the durable writes was seen by no one. A disk that
//! refuses a write (full, failing) does not hold alerts back from people: the line is rolled
//! back, held in memory and written when the disk takes it again ([`journal`]).

pub mod alert_file;
pub mod journal;
pub mod memory;
pub mod nats;
pub mod outbox;
pub mod redact;
pub mod stdout;
pub mod terminal;
pub mod webhook;

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::call::Event;

/// Where a sink stands in the write-ahead order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Durability {
    /// Shows or passes on events (stdout, the terminal, the dashboard): it gets an alert only
    /// once every durable sink has it.
    Shown,
    /// Keeps a durable record (the alert file): written first, synced.
    Record,
    /// Keeps an outbox on disk and sends from it (the webhook): written after the records,
    /// and sends only after [`Sink::commit`].
    Forward,
}

/// Counters a durable sink keeps for `/metrics` and the run's report.
#[derive(Debug, Default)]
pub struct SinkHealth {
    /// Alerts held in memory because the disk refused them (a gauge).
    pub held: AtomicU64,
    /// Alerts lost: memory was full of held ones, or the disk never came back before exit.
    pub lost: AtomicU64,
    /// Alerts the receiver refused for good, now in the dead letters.
    pub dead_lettered: AtomicU64,
    /// Alerts in the outbox not yet delivered (a gauge).
    pub outbox_pending: AtomicU64,
}

impl SinkHealth {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn set(counter: &AtomicU64, n: u64) {
        counter.store(n, Ordering::Relaxed)
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

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
    /// Where the sink stands in the write-ahead order (see the module's text).
    fn durability(&self) -> Durability {
        Durability::Shown
    }
    /// Durable sinks: the event just written is now in every durable sink; a forwarding sink
    /// may send it.
    fn commit(&mut self) {}
    /// Durable sinks: called about once a second while no event comes (retry what the disk
    /// refused).
    fn idle(&mut self) {}
    /// Durable sinks: counters for `/metrics` and the run's report.
    fn health(&self) -> Option<std::sync::Arc<SinkHealth>> {
        None
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
