use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use serde::Deserialize;

use super::args::DetectorArgs;
use crate::call::{json_line, CallId, CallSummary, InputError};
use crate::detect::{summarise_text, Classifier};

#[derive(Args, Debug)]
pub struct ClassifyArgs {
    /// JSON lines `{"id", "text", "lang"?}`; `-` or nothing reads standard input. Each line's
    /// verdict is printed as the per-call record (`call_id` is the line's id).
    pub input: Option<PathBuf>,
    #[command(flatten)]
    pub detector: DetectorArgs,
    /// Turn off a fuzzy-matching layer (to measure what each one buys).
    #[arg(long, value_delimiter = ',', value_parser = ["edit", "pinyin"])]
    pub without: Vec<String>,
    /// Turn on the phonetic (Double Metaphone) layer, off by default.
    #[arg(long)]
    pub phonetic: bool,
}

/// Lines longer than this are refused rather than matched: no transcript of a call is this long.
const MAX_LINE_BYTES: usize = 1 << 20;

#[derive(Deserialize)]
struct Input {
    id: serde_json::Value,
    text: String,
    #[serde(default)]
    lang: Option<String>,
}

/// An input id as a call id: a string as it is, anything else as its JSON text.
fn call_id(id: &serde_json::Value) -> Option<CallId> {
    match id {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(CallId::new(s.clone())),
        other => Some(CallId::new(other.to_string())),
    }
}

pub fn run(args: ClassifyArgs) -> Result<i32> {
    let mut classifier = args.detector.config().load()?;
    classifier.fuzziness.phonetic = args.phonetic;
    for layer in &args.without {
        match layer.as_str() {
            "edit" => classifier.fuzziness.edit_distance = false,
            _ => classifier.fuzziness.pinyin = false,
        }
    }
    let reader: Box<dyn BufRead> = match &args.input {
        Some(p) if p.as_os_str() != "-" => Box::new(std::io::BufReader::new(
            std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?,
        )),
        _ => Box::new(std::io::stdin().lock()),
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut errors = 0;
    for (n, line) in reader.split(b'\n').enumerate() {
        let line = line.context("reading input")?;
        let line_no = n + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let record = match classify_line(&classifier, &line) {
            Ok(summary) => json_line(&summary),
            Err((call_id, error)) => {
                errors += 1;
                json_line(&InputError {
                    call_id,
                    line: line_no,
                    error,
                })
            }
        };
        writeln!(out, "{record}")?;
    }
    out.flush()?;
    Ok(if errors > 0 { 2 } else { 0 })
}

fn classify_line(
    classifier: &Classifier,
    line: &[u8],
) -> Result<CallSummary, (Option<CallId>, String)> {
    if line.len() > MAX_LINE_BYTES {
        return Err((
            None,
            format!(
                "line of {} bytes exceeds the {MAX_LINE_BYTES}-byte limit",
                line.len()
            ),
        ));
    }
    let text = std::str::from_utf8(line).map_err(|_| (None, "line is not UTF-8".to_owned()))?;
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| (None, format!("invalid JSON: {e}")))?;
    let input: Input = serde_json::from_value(value).map_err(|e| {
        (
            None,
            format!("not a transcript line {{\"id\", \"text\", \"lang\"?}}: {e}"),
        )
    })?;
    let id = call_id(&input.id);
    if input.text.trim().is_empty() {
        return Err((id, "empty text".into()));
    }
    summarise_text(
        classifier,
        id.clone().unwrap_or_else(|| CallId::new("")),
        &input.text,
        input.lang.as_deref(),
    )
    .map_err(|e| (id, e))
}
