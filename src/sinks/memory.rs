//! Events kept in memory: for tests, benches and callers that want the records themselves
//! (`listen` keeps the call summaries for its exit code).

use std::sync::{Arc, Mutex};

use super::Sink;
use crate::call::{CallSummary, Event};

/// Keeps every event it is given; clones share the same list.
#[derive(Clone, Default)]
pub struct Collector {
    events: Arc<Mutex<Vec<Event>>>,
    /// Only call summaries are kept (a long-running process needs no transcripts in memory).
    summaries_only: bool,
}

impl Collector {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn summaries_only() -> Self {
        Self {
            summaries_only: true,
            ..Self::default()
        }
    }

    /// A copy of the events so far.
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn summaries(&self) -> Vec<CallSummary> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::CallEnded(s) => Some(s),
                _ => None,
            })
            .collect()
    }
}

impl Sink for Collector {
    fn describe(&self) -> String {
        "memory".into()
    }

    fn write(&mut self, event: &Event) -> anyhow::Result<()> {
        if !self.summaries_only || matches!(event, Event::CallEnded(_)) {
            self.events
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(event.clone());
        }
        Ok(())
    }
}
