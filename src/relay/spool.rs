//! The ingest's spool: relay messages wait here, in order, while the broker is away, and are
//! published first when it is back. A file used as a queue: records appended at the end, sent
//! from a cursor, dropped from the front once the broker has stored them (a failed publish
//! rewinds the cursor to the first one not stored), the file emptied once all are stored.
//! Bounded in bytes: audio beyond the bound is shed and counted; openings and closes are
//! always kept (they are small, and a call without them can be neither heard nor finished).
//!
//! It is a buffer for an outage, not a journal: records are not synced one by one (an
//! ingest that dies loses its live calls' sockets anyway). What an earlier run left is sent
//! at start.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::wire::WireMessage;

const FILE: &str = "spool.bin";
/// A record larger than this is not one this code wrote (bytes).
const MAX_RECORD: usize = 64 << 20;

pub struct Spool {
    path: PathBuf,
    file: File,
    /// The first record not yet stored by the broker.
    read_at: u64,
    /// The next record to send.
    send_at: u64,
    write_at: u64,
    /// Records not yet stored, and of them not yet sent.
    records: u64,
    unsent: u64,
    max_bytes: u64,
    _lock: File,
}

impl Spool {
    /// Opens (creating) the spool in `dir`, keeping the whole records an earlier run left.
    ///
    /// Errors: the folder cannot be made, the file cannot be read, or another process holds
    /// the spool.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self> {
        if dir.exists() && !dir.is_dir() {
            bail!("the ingest spool {} is not a folder", dir.display());
        }
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot make the ingest spool {}", dir.display()))?;
        let lock = crate::private_files::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))
            .with_context(|| format!("cannot open the lock of the spool {}", dir.display()))?;
        if let Err(e) = lock.try_lock() {
            bail!(
                "the ingest spool {} is in use by another vishguard process ({e}); give each \
                 ingest its own spool",
                dir.display()
            );
        }
        let path = dir.join(FILE);
        if path.exists() && !std::fs::symlink_metadata(&path)?.is_file() {
            bail!("{} is not a regular file", path.display());
        }
        let mut file = crate::private_files::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open the spool {}", path.display()))?;
        // Whole records only: a tail cut short by a crash goes.
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .with_context(|| format!("cannot read the spool {}", path.display()))?;
        let (mut at, mut records) = (0usize, 0u64);
        while let Some(len) = bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
        {
            let whole = len <= MAX_RECORD
                && bytes
                    .get(at + 4..at + 4 + len)
                    .is_some_and(|r| WireMessage::decode(r).is_some());
            if !whole {
                break;
            }
            at += 4 + len;
            records += 1;
        }
        if at < bytes.len() {
            tracing::warn!(
                "spool {}: {} bytes at its end were not a whole record (cut off)",
                path.display(),
                bytes.len() - at
            );
            file.set_len(at as u64)?;
        }
        if records > 0 {
            tracing::info!(
                "spool {}: {records} messages from an earlier run will be published first",
                path.display()
            );
        }
        Ok(Self {
            path,
            file,
            read_at: 0,
            send_at: 0,
            write_at: at as u64,
            records,
            unsent: records,
            max_bytes,
            _lock: lock,
        })
    }

    /// Messages not yet stored by the broker (sent or not).
    pub fn len(&self) -> u64 {
        self.records
    }

    /// Messages not yet sent (since the last rewind).
    pub fn unsent(&self) -> u64 {
        self.unsent
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Bytes the waiting messages take.
    pub fn bytes(&self) -> u64 {
        self.write_at - self.read_at
    }

    /// Appends a message. `Ok(false)`: audio shed, the spool being at its bound.
    ///
    /// Errors: the disk refused the write (the message is not kept; the file is cut back to
    /// its last whole record).
    pub fn push(&mut self, m: &WireMessage) -> Result<bool> {
        let body = m.encode();
        if !m.is_control() && self.bytes() + body.len() as u64 + 4 > self.max_bytes {
            return Ok(false);
        }
        let mut record = Vec::with_capacity(body.len() + 4);
        record.extend_from_slice(&(body.len() as u32).to_le_bytes());
        record.extend_from_slice(&body);
        let written = self
            .file
            .seek(SeekFrom::Start(self.write_at))
            .and_then(|_| self.file.write_all(&record));
        if let Err(e) = written {
            let _ = self.file.set_len(self.write_at);
            return Err(e)
                .with_context(|| format!("cannot write the spool {}", self.path.display()));
        }
        self.write_at += record.len() as u64;
        self.records += 1;
        self.unsent += 1;
        Ok(true)
    }

    /// The next message to send, in order; the cursor moves past it.
    ///
    /// Errors: the file cannot be read, or a record is damaged (the rest is unreadable: the
    /// spool is emptied).
    pub fn next_unsent(&mut self) -> Result<Option<WireMessage>> {
        if self.unsent == 0 {
            return Ok(None);
        }
        match self.read_at_offset(self.send_at) {
            Ok((m, len)) => {
                self.send_at += len;
                self.unsent -= 1;
                Ok(Some(m))
            }
            Err(e) => {
                self.clear()?;
                Err(e)
            }
        }
    }

    /// The broker stored the oldest message sent: it leaves the spool.
    pub fn stored(&mut self) -> Result<()> {
        if self.records == 0 || self.read_at >= self.send_at {
            return Ok(());
        }
        let mut len = [0u8; 4];
        self.file.seek(SeekFrom::Start(self.read_at))?;
        self.file.read_exact(&mut len)?;
        self.read_at += 4 + u32::from_le_bytes(len) as u64;
        self.records -= 1;
        if self.records == 0 {
            self.clear()?;
        }
        Ok(())
    }

    /// A publish failed: everything not yet stored is to be sent again, in order.
    pub fn rewind(&mut self) {
        self.send_at = self.read_at;
        self.unsent = self.records;
    }

    /// All stored (or unreadable): start the file afresh.
    fn clear(&mut self) -> Result<()> {
        self.file.set_len(0)?;
        (self.read_at, self.send_at, self.write_at) = (0, 0, 0);
        (self.records, self.unsent) = (0, 0);
        Ok(())
    }

    fn read_at_offset(&mut self, at: u64) -> Result<(WireMessage, u64)> {
        let mut len = [0u8; 4];
        self.file.seek(SeekFrom::Start(at))?;
        self.file.read_exact(&mut len)?;
        let len = u32::from_le_bytes(len) as usize;
        let mut body = vec![0; len];
        self.file.read_exact(&mut body)?;
        let m = WireMessage::decode(&body)
            .with_context(|| format!("the spool {} is damaged", self.path.display()))?;
        Ok((m, 4 + len as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::{AudioChunk, CallId};
    use crate::relay::wire;

    fn chunk(seq: u64) -> WireMessage {
        wire::audio(
            "p.audio",
            &AudioChunk {
                call: CallId::new("c"),
                party: 0,
                offset_s: seq as f64 * 0.02,
                samples: vec![0.1; 160],
            },
            seq,
            "I",
        )
    }

    #[test]
    fn keeps_order_across_runs_sheds_audio_past_its_bound_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let bound: u64 = (0..3).map(|s| chunk(s).encode().len() as u64 + 4).sum();
        {
            let mut s = Spool::open(dir.path(), bound).unwrap();
            for seq in 0..3 {
                assert!(s.push(&chunk(seq)).unwrap());
            }
            assert!(!s.push(&chunk(3)).unwrap(), "audio past the bound is shed");
            assert!(s
                .push(&wire::close("p.audio", &CallId::new("c"), "I"))
                .unwrap());
            assert_eq!(s.next_unsent().unwrap(), Some(chunk(0)));
            assert_eq!(s.next_unsent().unwrap(), Some(chunk(1)));
            // The first was stored, the second not: it is sent again.
            s.stored().unwrap();
            s.rewind();
            assert_eq!(s.next_unsent().unwrap(), Some(chunk(1)));
            assert_eq!((s.len(), s.unsent()), (3, 2));
        }
        // A crash mid-write leaves half a record.
        let path = dir.path().join(FILE);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(&chunk(9).encode()[..10]).unwrap();
        drop(f);
        let mut s = Spool::open(dir.path(), bound).unwrap();
        // What was stored is not recorded across runs: a run that dies resends it (the broker
        // drops it as a duplicate by its message id).
        let mut seen = Vec::new();
        while let Some(m) = s.next_unsent().unwrap() {
            seen.push(m.header(wire::SEQ).unwrap_or("close").to_owned());
            s.stored().unwrap();
        }
        assert_eq!(seen, ["0", "1", "2", "close"]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }

    #[test]
    fn one_process_per_spool() {
        let dir = tempfile::tempdir().unwrap();
        let _a = Spool::open(dir.path(), 1 << 20).unwrap();
        let e = Spool::open(dir.path(), 1 << 20).err().unwrap().to_string();
        assert!(e.contains("in use"), "{e}");
    }
}
