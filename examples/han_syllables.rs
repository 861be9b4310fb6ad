//! Prints each text's characters (whitespace removed) as the call model's sound tokens, toneless
//! `initial|final` with the initial unblurred (`phonetics::sound_tokens`; null for a character
//! without a pinyin reading), for training on how a transcript sounds (`benches/train_call_model.py`).
//!
//! `han_syllables IN.json > OUT.jsonl`: IN a JSON array of strings, one output line per text.
use std::io::Write;

use anyhow::{bail, Context, Result};
use vishguard::phonetics::sound_tokens;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, input] = &args[..] else {
        bail!("usage: han_syllables IN.json > OUT.jsonl");
    };
    let texts: Vec<String> = serde_json::from_str(
        &std::fs::read_to_string(input).with_context(|| format!("reading {input}"))?,
    )
    .with_context(|| format!("{input}: not a JSON array of strings"))?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for t in &texts {
        serde_json::to_writer(&mut out, &sound_tokens(t, false))?;
        out.write_all(b"\n")?;
    }
    Ok(())
}
