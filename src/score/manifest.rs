//! Research manifests: CSV or JSON lines, one call per row, with `path` (audio) or `text`,
//! `label`, and optional `id`, `type`, `lang`, `reference` (a reference transcript for WER).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct ManifestRow {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub text: Option<String>,
    /// `scam` or `legit` once read (or `unwanted` / `unknown`, kept but not scored: see
    /// [`normalise_label`]): the spellings datasets use (`SCAM`, `fraud`, `1`, `true`;
    /// `legitimate`, `benign`, `ham`, `0`, `false`, ...) are normalised, and anything else is
    /// an error naming the row, never a row silently left out of the metrics.
    #[serde(deserialize_with = "label_text")]
    pub label: String,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub lang: Option<String>,
    #[serde(default)]
    pub reference: Option<String>,
}

/// A label as text, whether the manifest wrote it as a string, a number or a boolean.
fn label_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    })
}

/// `scam` or `legit` for the ways datasets spell them; `unwanted` (telemarketing with no fraud
/// script, as the dev set labels it) and `unknown`, which are kept in the results but left out
/// of the scam/legit metrics (counted under `labels`); or `None`.
pub fn normalise_label(label: &str) -> Option<&'static str> {
    match label.trim().to_ascii_lowercase().as_str() {
        "unwanted" => Some("unwanted"),
        "unknown" | "unlabelled" | "unlabeled" => Some("unknown"),
        "scam" | "fraud" | "vishing" | "spam" | "1" | "true" | "yes" | "positive" | "pos" => {
            Some("scam")
        }
        "legit" | "legitimate" | "benign" | "ham" | "genuine" | "normal" | "clean" | "0"
        | "false" | "no" | "negative" | "neg" => Some("legit"),
        _ => None,
    }
}

/// Reads a manifest; relative paths are resolved against its folder, and rows without an id
/// get one from their path or line number.
pub fn read_manifest(path: &Path) -> Result<Vec<ManifestRow>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let is_csv = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    parse_manifest(&text, path, is_csv)
}

/// Parses a manifest's text: CSV with a header row, or JSON lines. `path` names it in errors
/// and its folder resolves relative audio paths.
pub fn parse_manifest(text: &str, path: &Path, is_csv: bool) -> Result<Vec<ManifestRow>> {
    let base = path.parent().unwrap_or(Path::new("."));
    let mut rows: Vec<ManifestRow> = Vec::new();
    if is_csv {
        let mut reader = csv::ReaderBuilder::new()
            .flexible(false)
            .from_reader(text.as_bytes());
        for (i, r) in reader.deserialize::<ManifestRow>().enumerate() {
            rows.push(r.with_context(|| format!("{}: row {}", path.display(), i + 2))?);
        }
    } else {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let row: ManifestRow = serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not a manifest row", path.display(), i + 1))?;
            rows.push(row);
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (i, row) in rows.iter_mut().enumerate() {
        row.label = match normalise_label(&row.label) {
            Some(l) => l.to_owned(),
            None => bail!(
                "{}: row {}: label {:?} is not one of scam/legit (or 1/0, true/false), unwanted, unknown",
                path.display(),
                i + 1,
                row.label
            ),
        };
        if row.path.is_none() && row.text.is_none() {
            bail!(
                "{}: row {} has neither path nor text",
                path.display(),
                i + 1
            );
        }
        if let Some(p) = &row.path {
            if p.is_relative() {
                row.path = Some(base.join(p));
            }
        }
        if row.id.is_none() {
            row.id = Some(match &row.path {
                Some(p) => p.file_stem().map_or(format!("row-{}", i + 1), |s| {
                    s.to_string_lossy().into_owned()
                }),
                None => format!("row-{}", i + 1),
            });
        }
        let id = row.id.clone().unwrap_or_default();
        if !seen.insert(id.clone()) {
            bail!(
                "{}: id {id:?} appears twice; ids must be unique to resume",
                path.display()
            );
        }
    }
    Ok(rows)
}
