//! Every alert appended to a file as a JSON line and synced to disk before anyone is shown it
//! (the write-ahead order: [`super::Durability::Record`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::journal::{Appended, Journal};
use super::{Durability, Sink, SinkHealth};
use crate::call::{json_line, Event};

/// `[[sinks]] type = "alert_file"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertFileConfig {
    pub path: PathBuf,
    #[serde(default)]
    pub queue: super::QueueConfig,
    /// Mask card numbers, codes and id numbers (runs of 4+ digits) before they leave.
    #[serde(default)]
    pub redact: bool,
}

pub struct AlertFile {
    journal: Journal,
    health: Arc<SinkHealth>,
}

impl AlertFile {
    /// Opens (creating) the file for appending; a torn last line from a crash is cut off.
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self {
            journal: Journal::open(path, "alert file")?,
            health: Arc::default(),
        })
    }

    fn note(&self) {
        SinkHealth::set(&self.health.held, self.journal.held() as u64);
        SinkHealth::set(&self.health.lost, self.journal.dropped());
    }
}

impl Sink for AlertFile {
    fn describe(&self) -> String {
        format!("alert file {}", self.journal.path().display())
    }

    /// Appends and syncs an alert; one the disk refuses is held in memory and written when
    /// the disk takes it again (the journal logs the outage once).
    fn write(&mut self, event: &Event) -> Result<()> {
        if let Event::Alert(_) = event {
            let appended = self.journal.append(&json_line(event));
            self.note();
            if appended == Appended::Dropped {
                bail!("alert lost: memory holds too many alerts the disk refused");
            }
        }
        Ok(())
    }

    fn durability(&self) -> Durability {
        Durability::Record
    }

    fn idle(&mut self) {
        if self.journal.held() > 0 {
            self.journal.retry();
            self.note();
        }
    }

    fn health(&self) -> Option<Arc<SinkHealth>> {
        Some(self.health.clone())
    }

    /// Tries the held alerts for up to 10 s more; those the disk still refuses go to standard
    /// error as JSON lines (the last place left to put them) and count as lost.
    fn close(&mut self) -> Result<()> {
        self.journal.last_chance();
        let n = self.journal.give_up_held();
        if n > 0 {
            SinkHealth::add(&self.health.lost, n as u64);
            bail!(
                "{} alert(s) never reached {} (printed above on standard error)",
                n,
                self.journal.path().display()
            );
        }
        Ok(())
    }
}
