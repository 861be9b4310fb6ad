//! Every alert appended to a file as a JSON line and synced to disk before the next.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::Sink;
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
    file: std::fs::File,
    path: PathBuf,
}

impl AlertFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = crate::private_files::options()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open alert file {}", path.display()))?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
        })
    }
}

impl Sink for AlertFile {
    fn describe(&self) -> String {
        format!("alert file {}", self.path.display())
    }

    fn write(&mut self, event: &Event) -> Result<()> {
        if let Event::Alert(_) = event {
            let line = json_line(event) + "\n";
            self.file
                .write_all(line.as_bytes())
                .and_then(|_| self.file.sync_data())
                .with_context(|| format!("{}: alert not written", self.path.display()))?;
        }
        Ok(())
    }
}
