//! Dumps what the call model reads, for training it (`benches/train_call_model.py`): per call,
//! the keyword verdict (without the call model) and the sentence vectors of the scam-line
//! check's windows. With ENCODER, the vectors come from that encoder instead (to compare).
//!
//! `[WINDOW=N] [PREFIXES=C] window_vectors IN.txt|IN.jsonl > OUT.jsonl`; input lines are
//! `ID|LABEL|TYPE|TEXT` or JSON `{"id", "text", "label"?, "lang"?}`; output lines `{"id",
//! "label", "lang", "score", "categories", "vectors": [[f32; dim]; windows]}`.
//!
//! With PREFIXES=C, each call is followed by its prefixes (what a live call's reading has
//! heard so far): its first C, 2C, ... characters but whitespace, each shorter than the call,
//! as `ID@CHARS` with the call's label. They are read in the same process as the call, so
//! their windows, the call's own, come from the check's cache.
use std::io::{BufRead, Write};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use vishguard::detect::script_context::ContextCheck;
use vishguard::detect::{Classifier, PhrasePack};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (input, encoder) = match &args[..] {
        [_, input] => (input, None),
        [_, input, encoder] => (input, Some(encoder.as_str())),
        _ => bail!("usage: window_vectors IN.txt|IN.jsonl [ENCODER] > OUT.jsonl"),
    };
    // WINDOW=N: windows of N tokens, side by side (stride N), instead of the pack's, to
    // measure what the window's length does to the call model (the verdict keeps the pack's).
    let window = match std::env::var("WINDOW") {
        Ok(w) => match w.parse::<usize>() {
            Ok(n) if n > 0 => Some(n),
            _ => bail!("WINDOW={w}: not a window length in tokens (a whole number above 0)"),
        },
        Err(_) => None,
    };
    let prefix_step = match std::env::var("PREFIXES") {
        Ok(c) => match c.parse::<usize>() {
            Ok(n) if n > 0 => Some(n),
            _ => bail!("PREFIXES={c}: not a length in characters (a whole number above 0)"),
        },
        Err(_) => None,
    };
    let mut classifier = Classifier::builtin();
    classifier.set_context_check_loaded(Arc::new(ContextCheck::load(None)?))?;
    // The model reads the keyword score before it moves it (off by default; said here so
    // that it stays so).
    classifier.call_model = false;
    // Another encoder (e5's "query: " prefix) for every pack: its vectors only, read through a
    // copy of the pack under another name (the check's cache is per pack); the verdict keeps
    // the packs' own.
    let with_encoder = |pack: &PhrasePack| {
        let mut other = pack.clone();
        if let (Some(e), Some(ctx)) = (encoder, other.context.as_mut()) {
            ctx.encoder = Some(e.to_owned());
            ctx.prefix = "query: ".to_owned();
            other.source = format!("{} read by {e}", pack.source);
        }
        other
    };
    let reader = std::io::BufReader::new(
        std::fs::File::open(input).with_context(|| format!("{input}: cannot open"))?,
    );
    let out = std::io::stdout();
    let mut out = out.lock();
    for line in reader.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let (id, label, text, lang) = if line.starts_with('{') {
            let v: serde_json::Value = serde_json::from_str(&line)?;
            let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
            (
                v["id"].to_string().trim_matches('"').to_owned(),
                s("label").unwrap_or_default(),
                s("text").unwrap_or_default(),
                s("lang"),
            )
        } else {
            let parts: Vec<&str> = line.splitn(4, '|').collect();
            let [id, label, _, text] = parts[..] else {
                bail!("not ID|LABEL|TYPE|TEXT: {line}");
            };
            (id.to_owned(), label.to_owned(), text.to_owned(), None)
        };
        let lang = lang.unwrap_or_else(|| Classifier::guess_language(&text).to_owned());
        let mut readings = vec![(id.clone(), text.clone())];
        if let Some(step) = prefix_step {
            readings.extend(prefixes(&text, step).map(|(n, t)| (format!("{id}@{n}"), t)));
        }
        for (id, text) in readings {
            write_call(
                &mut out,
                &classifier,
                window,
                &with_encoder,
                (&id, &label, &lang, &text),
            )?;
        }
    }
    Ok(())
}

/// One call's (or prefix's) line: its keyword verdict and window vectors. A call in a
/// language with no pack is left out.
fn write_call(
    out: &mut impl Write,
    classifier: &Classifier,
    window: Option<usize>,
    with_encoder: &dyn Fn(&PhrasePack) -> PhrasePack,
    (id, label, lang, text): (&str, &str, &str, &str),
) -> Result<()> {
    let Some(pack) = classifier.pack(lang) else {
        return Ok(());
    };
    let verdict = classifier.classify_with(pack, text);
    let windowed;
    let pack = match window {
        Some(n) => {
            let mut p = pack.clone();
            if let Some(lines) = p.context.as_mut().and_then(|c| c.lines.as_mut()) {
                lines.window = n;
                lines.stride = n;
            }
            windowed = p;
            &windowed
        }
        None => pack,
    };
    let windows = classifier.line_windows(pack, text);
    let vectors = classifier
        .context_check
        .as_ref()
        .context("no context check")?
        .window_vectors(&with_encoder(pack), &windows)?
        .unwrap_or_default();
    let rounded: Vec<Vec<f64>> = vectors
        .iter()
        .map(|v| v.iter().map(|&x| (x as f64 * 1e4).round() / 1e4).collect())
        .collect();
    writeln!(
        out,
        "{}",
        serde_json::json!({
            "id": id, "label": label, "lang": lang, "score": verdict.score,
            "categories": verdict.categories, "vectors": rounded,
        })
    )?;
    Ok(())
}

/// `text` cut after its first `step`, `2 * step`, ... characters that are not whitespace,
/// each cut shorter than the text: (characters kept but whitespace, the prefix).
fn prefixes(text: &str, step: usize) -> impl Iterator<Item = (usize, String)> + '_ {
    let ends: Vec<(usize, usize)> = text
        .char_indices()
        .filter(|(_, c)| !c.is_whitespace())
        .enumerate()
        .filter(|(n, _)| (n + 1) % step == 0)
        .map(|(n, (at, c))| (n + 1, at + c.len_utf8()))
        .collect();
    let total = text.chars().filter(|c| !c.is_whitespace()).count();
    ends.into_iter()
        .filter(move |&(n, _)| n < total)
        .map(move |(n, end)| (n, text[..end].to_owned()))
}
