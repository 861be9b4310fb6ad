//! What a cached model's files were when they were written: their sizes and SHA-256, kept in
//! `integrity.json` beside them. A file changed since (a flipped byte, a truncation, NaN
//! written over weights) is found before the model is loaded, and the model is fetched again
//! instead of transcribing "!!!!".
//!
//! The check is cheap when nothing was touched: sizes and modification times are compared,
//! and the files are hashed again only when one of them is newer than the record or differs
//! in size. (Bit rot that changes neither is not seen here; the decoder's NaN guard is the
//! last line.)

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const RECORD: &str = "integrity.json";

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct FileRecord {
    bytes: u64,
    sha256: String,
}

fn sha256_of(path: &Path) -> Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(format!("{:x}", hasher.finalize()))
}

/// Records `files` (names inside `dir`) as they are now.
pub fn record(dir: &Path, files: &[&str]) -> Result<()> {
    let mut out = BTreeMap::new();
    for f in files {
        let p = dir.join(f);
        let bytes = std::fs::metadata(&p)
            .with_context(|| format!("cannot read {}", p.display()))?
            .len();
        out.insert(
            (*f).to_owned(),
            FileRecord {
                bytes,
                sha256: sha256_of(&p)?,
            },
        );
    }
    let text = serde_json::to_string_pretty(&out)?;
    std::fs::write(dir.join(RECORD), text)
        .with_context(|| format!("cannot write {}", dir.join(RECORD).display()))
}

/// What the check found.
#[derive(Debug, PartialEq)]
pub enum Integrity {
    /// The files are as recorded.
    Intact,
    /// No record (a cache written before records were kept).
    Unrecorded,
    /// A file differs from its record: the reason.
    Damaged(String),
}

/// Checks `dir` against its record: sizes always, hashes when a file is newer than the
/// record or `full` is asked for.
pub fn check(dir: &Path, full: bool) -> Integrity {
    let record_path = dir.join(RECORD);
    let Ok(text) = std::fs::read_to_string(&record_path) else {
        return Integrity::Unrecorded;
    };
    let Ok(records) = serde_json::from_str::<BTreeMap<String, FileRecord>>(&text) else {
        return Integrity::Damaged(format!("{} is not readable", record_path.display()));
    };
    let recorded_at = std::fs::metadata(&record_path)
        .and_then(|m| m.modified())
        .ok();
    for (name, rec) in &records {
        let p = dir.join(name);
        let Ok(meta) = std::fs::metadata(&p) else {
            return Integrity::Damaged(format!("{name} is missing"));
        };
        if meta.len() != rec.bytes {
            return Integrity::Damaged(format!(
                "{name} is {} bytes, {} when written",
                meta.len(),
                rec.bytes
            ));
        }
        let touched = match (meta.modified().ok(), recorded_at) {
            (Some(m), Some(r)) => m > r,
            _ => true,
        };
        if full || touched {
            match sha256_of(&p) {
                Ok(h) if h == rec.sha256 => {}
                Ok(_) => return Integrity::Damaged(format!("{name} changed since it was written")),
                Err(e) => return Integrity::Damaged(format!("{e:#}")),
            }
        }
    }
    Integrity::Intact
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flipped_bytes_truncation_and_loss_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("w.bin"), vec![7u8; 4096]).unwrap();
        std::fs::write(d.join("c.json"), b"{}").unwrap();
        assert_eq!(check(d, false), Integrity::Unrecorded);
        record(d, &["w.bin", "c.json"]).unwrap();
        assert_eq!(check(d, false), Integrity::Intact);
        assert_eq!(check(d, true), Integrity::Intact);
        // One byte flipped, same size, written after the record.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut w = vec![7u8; 4096];
        w[100] = 8;
        std::fs::write(d.join("w.bin"), &w).unwrap();
        assert!(matches!(check(d, false), Integrity::Damaged(m) if m.contains("changed")));
        std::fs::write(d.join("w.bin"), &w[..1000]).unwrap();
        assert!(matches!(check(d, false), Integrity::Damaged(m) if m.contains("1000 bytes")));
        std::fs::remove_file(d.join("c.json")).unwrap();
        std::fs::write(d.join("w.bin"), vec![7u8; 4096]).unwrap();
        assert!(matches!(check(d, false), Integrity::Damaged(m) if m.contains("missing")));
    }
}
