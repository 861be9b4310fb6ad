//! An instruction-tuned LLM as a second opinion on call transcripts: a measurement, run by
//! `benches/llm_judge.sh` (which fetches the model and writes its tokenizer).
//!
//! `llm_judge MODEL.gguf TOKENIZER.json IN.jsonl` puts each line's `text` to a Qwen2 chat model
//! (candle's `quantized_qwen2`, on the CPU) in one forward pass over the chat prompt, and prints
//! `id`, `label`, the score, the seconds the pass took and the prompt's tokens, tab-separated.
//! The score is the probability of the first answer word against the second (default 诈骗 /
//! 正常, "scam" / "normal") as the assistant's first token: the two logits' softmax, no sampling.
//! The prompt comes from `JUDGE_SYSTEM`, `JUDGE_PRE` + text + `JUDGE_POST`, and the answer words
//! from `JUDGE_WORDS=a,b` (each must start with a token of its own); `JUDGE_MAX_CHARS` (600)
//! caps the text.
use std::io::BufRead;

use anyhow::{bail, Context, Result};
use candle_core::{quantized::gguf_file, DType, Device, Tensor};
use candle_transformers::models::quantized_qwen2::ModelWeights;

const SYSTEM: &str = "你是电信反诈专家。下面是一通电话里来电者说的话，由语音识别转写，可能有很多同音错别字、繁体字和漏字。请判断这通电话是不是诈骗电话（冒充公检法、银行、客服、亲友，索要验证码、转账、安全账户、刷单、贷款、投资等）。只回答“诈骗”或“正常”。";

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, model_path, tokenizer_path, input] = &args[..] else {
        bail!("usage: llm_judge MODEL.gguf TOKENIZER.json IN.jsonl");
    };
    let device = Device::Cpu;
    let mut file =
        std::fs::File::open(model_path).with_context(|| format!("{model_path}: cannot open"))?;
    let content = gguf_file::Content::read(&mut file)
        .map_err(|e| anyhow::anyhow!("{model_path}: not a GGUF file: {e}"))?;
    let started = std::time::Instant::now();
    let mut model = ModelWeights::from_gguf(content, &mut file, &device)
        .with_context(|| format!("{model_path}: not a Qwen2 model"))?;
    eprintln!("loaded in {:.1} s", started.elapsed().as_secs_f64());
    let tokenizer = tokenizers::Tokenizer::from_file(tokenizer_path)
        .map_err(|e| anyhow::anyhow!("{tokenizer_path}: {e}"))?;
    let first_token = |word: &str| -> Result<u32> {
        let enc = tokenizer.encode(word, false).map_err(anyhow::Error::msg)?;
        enc.get_ids()
            .first()
            .copied()
            .with_context(|| format!("answer word {word:?} has no tokens"))
    };
    let words = env_or("JUDGE_WORDS", "诈骗,正常");
    let (yes, no) = words
        .split_once(',')
        .context("JUDGE_WORDS takes two words: yes,no")?;
    let (yes, no) = (first_token(yes)?, first_token(no)?);
    let system = env_or("JUDGE_SYSTEM", SYSTEM);
    let pre = env_or("JUDGE_PRE", "通话文本：");
    let post = env_or("JUDGE_POST", "\n\n这通电话是诈骗还是正常？");
    let max_chars: usize = env_or("JUDGE_MAX_CHARS", "600")
        .parse()
        .context("JUDGE_MAX_CHARS is a number of characters")?;

    let reader = std::io::BufReader::new(
        std::fs::File::open(input).with_context(|| format!("{input}: cannot open"))?,
    );
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("{input}: line {}", n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let row: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("{input}: line {}: not JSON", n + 1))?;
        let text: String = row["text"]
            .as_str()
            .with_context(|| format!("{input}: line {}: no \"text\"", n + 1))?
            .chars()
            .take(max_chars)
            .collect();
        let prompt = format!(
            "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{pre}{text}{post}<|im_end|>\n<|im_start|>assistant\n"
        );
        let ids = tokenizer
            .encode(prompt, false)
            .map_err(anyhow::Error::msg)?;
        let ids = ids.get_ids();
        let started = std::time::Instant::now();
        model.clear_kv_cache();
        let logits = model
            .forward(&Tensor::new(ids, &device)?.unsqueeze(0)?, 0)?
            .squeeze(0)?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?;
        let score = 1.0 / (1.0 + (logits[no as usize] - logits[yes as usize]).exp());
        println!(
            "{}\t{}\t{score:.4}\t{:.2}\t{}",
            row["id"].as_str().unwrap_or("?"),
            row["label"].as_str().unwrap_or("?"),
            started.elapsed().as_secs_f64(),
            ids.len()
        );
    }
    Ok(())
}
