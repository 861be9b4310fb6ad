use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use serde::Deserialize;

use std::sync::Arc;

use crate::detect::script_context::ContextCheck;
use crate::detect::{Classifier, PhrasePack};

#[derive(Args, Debug)]
pub struct ClassifyArgs {
    /// JSON lines `{"id", "text", "lang"?}`; `-` or nothing reads standard input.
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

/// How the detector is built: phrase packs and the sentence encoder of the context check.
#[derive(Args, Debug, Clone)]
pub struct DetectorArgs {
    /// Phrase packs to use instead of the built-in ones (one per language).
    #[arg(long = "pack")]
    pub packs: Vec<PathBuf>,
    /// Sentence encoder of the context check: a catalog name (fetched on first use) or a
    /// model folder.
    #[arg(long, default_value = "minilm")]
    pub encoder: String,
    /// Keywords only: skip the context check (no encoder is loaded; about 2x more false
    /// alarms on casual talk about crime or money).
    #[arg(long)]
    pub no_context_check: bool,
}

impl DetectorArgs {
    pub fn load(&self) -> Result<Classifier> {
        let mut classifier = classifier_from(&self.packs)?;
        if !self.no_context_check {
            classifier.context_check = Some(Arc::new(ContextCheck::load(Some(&self.encoder))?));
        }
        Ok(classifier)
    }
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

pub fn classifier_from(packs: &[PathBuf]) -> Result<Classifier> {
    if packs.is_empty() {
        return Ok(Classifier::builtin());
    }
    let loaded = packs
        .iter()
        .map(|p| PhrasePack::load(p).map_err(anyhow::Error::from))
        .collect::<Result<Vec<_>>>()?;
    Ok(Classifier::with_packs(loaded))
}

pub fn run(args: ClassifyArgs) -> Result<i32> {
    let mut classifier = args.detector.load()?;
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
        let result = classify_line(&classifier, &line);
        let value = match result {
            Ok(v) => v,
            Err((id, e)) => {
                errors += 1;
                serde_json::json!({"id": id, "line": line_no, "error": e})
            }
        };
        writeln!(out, "{value}")?;
    }
    out.flush()?;
    Ok(if errors > 0 { 2 } else { 0 })
}

fn classify_line(
    classifier: &Classifier,
    line: &[u8],
) -> Result<serde_json::Value, (serde_json::Value, String)> {
    let null = serde_json::Value::Null;
    if line.len() > MAX_LINE_BYTES {
        return Err((
            null,
            format!(
                "line of {} bytes exceeds the {MAX_LINE_BYTES}-byte limit",
                line.len()
            ),
        ));
    }
    let text =
        std::str::from_utf8(line).map_err(|_| (null.clone(), "line is not UTF-8".to_owned()))?;
    let input: Input =
        serde_json::from_str(text).map_err(|e| (null.clone(), format!("invalid JSON: {e}")))?;
    if input.text.trim().is_empty() {
        return Err((input.id, "empty text".into()));
    }
    let verdict = classifier
        .classify(&input.text, input.lang.as_deref())
        .map_err(|e| (input.id.clone(), e))?;
    let mut value = serde_json::to_value(&verdict).expect("verdicts serialise");
    value
        .as_object_mut()
        .expect("object")
        .insert("id".into(), input.id);
    Ok(value)
}
