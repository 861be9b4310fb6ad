//! An append-only file of JSON lines that survives crashes and full disks: the alert file, the
//! webhook's outbox and its dead letters are each one.
//!
//! - Each line is written whole and synced (`fdatasync`) before [`Journal::append`] returns.
//! - A write that fails (a full disk, an I/O error) is rolled back to the last whole line, so a
//!   torn line never merges with the next; the line is held in memory, in order with those
//!   after it, and written when the disk takes it again (on the next append or
//!   [`Journal::retry`]). The failure is logged once per outage, the recovery once too.
//! - A torn last line left by a crash mid-write is cut off when the file is opened (it was
//!   never synced whole, so nothing downstream had seen it).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Lines held in memory while the disk refuses them; beyond this, newer lines are dropped
/// and counted (about 2 KB each: ~200 MB at the bound).
pub const MAX_HELD_LINES: usize = 100_000;

/// What [`Journal::append`] did with a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// On disk and synced.
    Written,
    /// The disk refused it: held in memory, written when the disk takes it again.
    Held,
    /// Memory held [`MAX_HELD_LINES`] already: the line is lost (logged and counted).
    Dropped,
}

pub struct Journal {
    path: PathBuf,
    /// What the file is, for messages: "alert file", "webhook outbox".
    what: &'static str,
    file: File,
    /// Bytes of whole, synced lines.
    len: u64,
    /// Lines (with their '\n') the disk refused, oldest first.
    held: VecDeque<String>,
    /// The error of the outage under way, if one is.
    failing: Option<String>,
    /// A failed write's rollback failed too: bytes past `len` to cut before the next write.
    torn: bool,
    dropped: u64,
}

impl Journal {
    /// Opens (creating, owner-only) the file for appending. A torn last line (no final '\n',
    /// a crash mid-write) is cut off, with a warning naming how many bytes went.
    ///
    /// Errors: the file cannot be opened, read or cut.
    pub fn open(path: &Path, what: &'static str) -> Result<Self> {
        if let Ok(m) = std::fs::metadata(path) {
            if !m.is_file() {
                bail!(
                    "the {what} {} is not a regular file (a folder, a FIFO or a device)",
                    path.display()
                );
            }
        }
        let mut file = crate::private_files::options()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open the {what} {}", path.display()))?;
        let len = whole_lines_len(&mut file)
            .with_context(|| format!("cannot read the {what} {}", path.display()))?;
        let on_disk = file.metadata()?.len();
        if len < on_disk {
            file.set_len(len)
                .and_then(|_| file.sync_data())
                .with_context(|| format!("cannot cut the torn last line of {}", path.display()))?;
            tracing::warn!(
                "{what} {}: cut {} bytes of a torn last line (written when the process was \
                 killed mid-write; it had not been shown or sent)",
                path.display(),
                on_disk - len
            );
        }
        Ok(Self {
            path: path.to_path_buf(),
            what,
            file,
            len,
            held: VecDeque::new(),
            failing: None,
            torn: false,
            dropped: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of whole, synced lines in the file.
    pub fn synced_bytes(&self) -> u64 {
        self.len
    }

    /// Lines waiting in memory for the disk.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Lines lost because memory held [`MAX_HELD_LINES`] already.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Appends one line (`line` without its '\n'), after any held ones.
    pub fn append(&mut self, line: &str) -> Appended {
        if self.held.len() >= MAX_HELD_LINES {
            self.dropped += 1;
            if self.dropped == 1 || self.dropped.is_power_of_two() {
                tracing::error!(
                    "{} {}: {} lines are held in memory for the disk already; {} newer lines \
                     lost so far",
                    self.what,
                    self.path.display(),
                    self.held.len(),
                    self.dropped
                );
            }
            return Appended::Dropped;
        }
        self.held.push_back(format!("{line}\n"));
        if self.retry() {
            Appended::Written
        } else {
            Appended::Held
        }
    }

    /// Writes the held lines, oldest first, until the disk refuses one. Returns whether none
    /// is left held.
    pub fn retry(&mut self) -> bool {
        while let Some(line) = self.held.front() {
            match write_whole(&mut self.file, self.len, &mut self.torn, line.as_bytes()) {
                Ok(()) => {
                    self.len += line.len() as u64;
                    self.held.pop_front();
                }
                Err(e) => {
                    if self.failing.is_none() {
                        tracing::error!(
                            "{} {}: cannot write ({e}); {} line(s) held in memory and retried \
                             until the disk takes them",
                            self.what,
                            self.path.display(),
                            self.held.len()
                        );
                    }
                    self.failing = Some(e.to_string());
                    return false;
                }
            }
        }
        if let Some(e) = self.failing.take() {
            tracing::warn!(
                "{} {}: writable again after \"{e}\"; every held line is written",
                self.what,
                self.path.display()
            );
        }
        true
    }

    /// Empties the file (everything in it is settled). Held lines stay held.
    pub fn clear(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.file.sync_data()?;
        self.len = 0;
        Ok(())
    }

    /// Retries the held lines for up to 10 s more (a disk being cleaned up as the run ends).
    pub fn last_chance(&mut self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !self.retry() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
    }

    /// Gives up on the held lines: each goes to standard error as it is (the last place left
    /// to put it) and is forgotten. Returns how many.
    pub fn give_up_held(&mut self) -> usize {
        let n = self.held.len();
        for line in self.held.drain(..) {
            eprint!("{line}");
        }
        n
    }
}

/// One line, whole and synced, or nothing: a failed write is cut back to `len`, the end of
/// the last whole line (a torn line would merge with the next). `torn` says a rollback failed,
/// and is cut first next time.
fn write_whole(file: &mut File, len: u64, torn: &mut bool, bytes: &[u8]) -> std::io::Result<()> {
    if *torn {
        file.set_len(len)?;
        *torn = false;
    }
    let written = file.write_all(bytes).and_then(|_| file.sync_data());
    if written.is_err() {
        *torn = file.set_len(len).is_err();
    }
    written
}

/// The length of the file up to and including its last '\n'.
fn whole_lines_len(file: &mut File) -> std::io::Result<u64> {
    let len = file.metadata()?.len();
    let mut end = len;
    let mut buf = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let piece = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(piece)?;
        if let Some(i) = piece.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_cut_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jsonl");
        std::fs::write(&p, "{\"a\":1}\n{\"a\":2}\n{\"a\":").unwrap();
        let mut j = Journal::open(&p, "test file").unwrap();
        assert_eq!(j.synced_bytes(), 16);
        assert_eq!(j.append("{\"a\":3}"), Appended::Written);
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n"
        );
        // Only a torn line: all of it goes.
        std::fs::write(&p, "x".repeat(100_000)).unwrap();
        let j = Journal::open(&p, "test file").unwrap();
        assert_eq!(j.synced_bytes(), 0);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 0);
    }

    #[test]
    fn a_disk_that_refuses_writes_holds_lines_in_order_until_it_takes_them() {
        // /dev/full refuses every write with ENOSPC; swap the file under the journal to a
        // real one to play the space coming back.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jsonl");
        let mut j = Journal::open(&p, "test file").unwrap();
        assert_eq!(j.append("1"), Appended::Written);
        let real = std::mem::replace(
            &mut j.file,
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .unwrap(),
        );
        j.len = 0;
        assert_eq!(j.append("2"), Appended::Held);
        assert_eq!(j.append("3"), Appended::Held);
        assert!(!j.retry());
        assert_eq!(j.held(), 2);
        j.file = real;
        j.len = 2;
        assert!(j.retry());
        assert_eq!(j.append("4"), Appended::Written);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "1\n2\n3\n4\n");
    }
}
