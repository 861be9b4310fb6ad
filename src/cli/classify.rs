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
    let mut reader: Box<dyn BufRead> = match &args.input {
        Some(p) if p.as_os_str() != "-" => Box::new(std::io::BufReader::new(
            std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?,
        )),
        _ => Box::new(std::io::stdin().lock()),
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut errors = 0;
    let mut line = Vec::new();
    let mut line_no = 0;
    loop {
        line_no += 1;
        // The size limit holds while reading: a line of gigabytes is never held in memory.
        let length = match read_line_bounded(&mut reader, MAX_LINE_BYTES, &mut line)
            .context("reading input")?
        {
            None => break,
            Some(n) => n,
        };
        if length > MAX_LINE_BYTES {
            errors += 1;
            let error = InputError {
                call_id: None,
                line: line_no,
                error: format!("line of {length} bytes exceeds the {MAX_LINE_BYTES}-byte limit"),
            };
            writeln!(out, "{}", json_line(&error))?;
            continue;
        }
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

/// Reads one line (without its `\n`) into `line`, keeping at most `max` bytes of it; returns
/// its full length (the rest of a longer line is read and dropped), or `None` at the end.
pub fn read_line_bounded(
    reader: &mut dyn BufRead,
    max: usize,
    line: &mut Vec<u8>,
) -> std::io::Result<Option<usize>> {
    line.clear();
    let mut length = 0usize;
    let mut any = false;
    loop {
        let buf = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(any.then_some(length));
        }
        any = true;
        let (piece, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        let keep = piece.len().min(max.saturating_sub(line.len()));
        line.extend_from_slice(&piece[..keep]);
        length += piece.len();
        let used = done.unwrap_or(piece.len());
        reader.consume(used);
        if done.is_some() {
            return Ok(Some(length));
        }
    }
}

/// One transcript line's verdict, or its call id (where it could be read) and what is wrong.
pub fn classify_line(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_line_is_measured_not_held_and_the_next_line_is_read() {
        let mut input = vec![b'x'; 5000];
        input.extend(b"\n{\"id\": 1}\nlast");
        // A small buffer: the long line arrives in many pieces.
        let mut reader = std::io::BufReader::with_capacity(64, &input[..]);
        let mut line = Vec::new();
        assert_eq!(
            read_line_bounded(&mut reader, 100, &mut line).unwrap(),
            Some(5000)
        );
        assert_eq!(line.len(), 100);
        assert_eq!(
            read_line_bounded(&mut reader, 100, &mut line).unwrap(),
            Some(9)
        );
        assert_eq!(line, b"{\"id\": 1}");
        assert_eq!(
            read_line_bounded(&mut reader, 100, &mut line).unwrap(),
            Some(4)
        );
        assert_eq!(line, b"last");
        assert_eq!(
            read_line_bounded(&mut reader, 100, &mut line).unwrap(),
            None
        );
    }
}
