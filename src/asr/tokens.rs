//! Whisper's special tokens, looked up by name in the model's own tokenizer so that English-only
//! and multilingual vocabularies (whose ids differ by one) are both right.

use anyhow::{bail, Context, Result};
use tokenizers::Tokenizer;

#[derive(Debug, Clone)]
pub struct SpecialTokens {
    pub eot: u32,
    pub sot: u32,
    pub translate: u32,
    pub transcribe: u32,
    pub sot_lm: u32,
    pub sot_prev: u32,
    pub no_speech: u32,
    pub no_timestamps: u32,
    /// The first timestamp token (`<|0.00|>`); later ones step by 20 ms. The tokenizer files
    /// do not list them, so they are derived from `<|notimestamps|>`.
    pub timestamp_begin: u32,
    /// Language tokens in id order, with their codes ("en", "zh", ...).
    pub languages: Vec<(String, u32)>,
    /// Token ids of a single space, suppressed at the start of a sample.
    pub space: Vec<u32>,
}

/// Seconds per timestamp-token step.
pub const TIME_PRECISION: f64 = 0.02;

impl SpecialTokens {
    pub fn from_tokenizer(tok: &Tokenizer) -> Result<Self> {
        let id = |name: &str| -> Result<u32> {
            tok.token_to_id(name)
                .with_context(|| format!("tokenizer has no {name} token: not a Whisper tokenizer?"))
        };
        let no_speech = id("<|nospeech|>").or_else(|_| id("<|nocaptions|>"))?;
        let sot = id("<|startoftranscript|>")?;
        let translate = id("<|translate|>")?;
        let no_timestamps = id("<|notimestamps|>")?;
        let languages = (sot + 1..translate)
            .filter_map(|i| {
                let t = tok.id_to_token(i)?;
                let code = t.strip_prefix("<|")?.strip_suffix("|>")?.to_owned();
                Some((code, i))
            })
            .collect::<Vec<_>>();
        if no_timestamps <= translate {
            bail!("tokenizer special tokens are out of the Whisper order");
        }
        let space = tok
            .encode(" ", false)
            .map_err(|e| anyhow::anyhow!("tokenizer cannot encode a space: {e}"))?
            .get_ids()
            .to_vec();
        Ok(Self {
            eot: id("<|endoftext|>")?,
            sot,
            translate,
            transcribe: id("<|transcribe|>")?,
            sot_lm: id("<|startoflm|>")?,
            sot_prev: id("<|startofprev|>")?,
            no_speech,
            no_timestamps,
            timestamp_begin: no_timestamps + 1,
            languages,
            space,
        })
    }

    pub fn language_token(&self, code: &str) -> Option<u32> {
        self.languages
            .iter()
            .find(|(c, _)| c == code)
            .map(|(_, id)| *id)
    }

    pub fn language_code(&self, token: u32) -> Option<&str> {
        self.languages
            .iter()
            .find(|(_, id)| *id == token)
            .map(|(c, _)| c.as_str())
    }

    pub fn is_timestamp(&self, token: u32) -> bool {
        token >= self.timestamp_begin
    }

    pub fn timestamp_seconds(&self, token: u32) -> f64 {
        (token - self.timestamp_begin) as f64 * TIME_PRECISION
    }
}
