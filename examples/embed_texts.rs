//! Embeds texts with a sentence encoder, for comparing encoders and implementations and for
//! training the call model on another encoder's vectors.
//!
//! `embed_texts ENCODER IN.json > OUT.jsonl`: ENCODER a catalog name or model folder, IN a JSON
//! array of strings; one output line per text, `[f32; dim]`, in order. Prints the texts per
//! second (wall time, this process) on stderr.
use std::io::Write;

use anyhow::{bail, Context, Result};
use vishguard::detect::sentence_encoder::SentenceEncoder;
use vishguard::model_store::ModelStore;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, encoder, input] = &args[..] else {
        bail!("usage: embed_texts ENCODER IN.json > OUT.jsonl");
    };
    let texts: Vec<String> = serde_json::from_str(
        &std::fs::read_to_string(input).with_context(|| format!("reading {input}"))?,
    )
    .with_context(|| format!("{input}: not a JSON array of strings"))?;
    let files = ModelStore::open()?.resolve_encoder(Some(encoder))?;
    let started = std::time::Instant::now();
    let model = SentenceEncoder::load(&files, &candle_core::Device::Cpu)?;
    eprintln!(
        "loaded {} in {:.1} s",
        files.dir.display(),
        started.elapsed().as_secs_f64()
    );
    let started = std::time::Instant::now();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (i, chunk) in texts.chunks(64).enumerate() {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        for v in model.embed(&refs)? {
            serde_json::to_writer(&mut out, &v)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        let done = (i * 64 + chunk.len()) as f64;
        eprintln!(
            "{done} / {} texts, {:.2} texts/s",
            texts.len(),
            done / started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
