//! Files that hold what was said on a call (transcripts, evidence, alerts, scoring results):
//! created readable and writable by their owner only (mode 0600 on Unix), since a call's words
//! may hold card numbers, codes and names. A file that already exists keeps its mode.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

/// Options for a file created private: `OpenOptions::new()` with the owner-only mode.
pub fn options() -> OpenOptions {
    #[allow(unused_mut)]
    let mut o = OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o
}

/// Creates (or truncates) `path` as a private file.
pub fn create(path: &Path) -> std::io::Result<File> {
    options().write(true).create(true).truncate(true).open(path)
}

/// Writes `bytes` to `path`, created private.
pub fn write(path: &Path, bytes: impl AsRef<[u8]>) -> std::io::Result<()> {
    let mut f = create(path)?;
    f.write_all(bytes.as_ref())?;
    f.flush()
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn new_files_are_readable_by_their_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.json");
        super::write(&p, "{}").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
