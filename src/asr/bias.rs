//! Contextual biasing ("hotwords"): once the decoder has written the start of a listed phrase,
//! the tokens that continue it get a bonus added to their logits, so a phrase the audio
//! half-supports is finished as the phrase rather than as a sound-alike.
//!
//! Why: Whisper base on 8 kHz Mandarin starts scam phrases right and then drifts to
//! characters that sound alike (安全账户 heard as 安權讓部, 支付宝 as 支護寶). This is shallow
//! fusion with a phrase list, after the context graph of icefall (k2-fsa,
//! `icefall/context_graph.py`) reduced to greedy decoding: no bonus for starting a phrase,
//! so the decoder must write the first character from the audio alone and biasing cannot put
//! phrases into calls that never had them; only the continuation of a phrase already begun
//! is pushed.
//!
//! Phrases are matched on bytes, not token ids, so that any tokenisation of the phrase (one
//! token per character, a token for two characters, or UTF-8 byte pieces) is boosted. Chinese
//! phrases are also listed in their traditional forms: Whisper base writes telephone Mandarin
//! in traditional characters about half the time (measured on the tuning set), and a phrase
//! begun as 安全帳 must be continued as such.

use std::collections::HashMap;

use anyhow::{bail, Result};
use tokenizers::Tokenizer;

/// The largest bonus taken: 20 on a logit outweighs anything the audio says.
pub const MAX_BONUS: f32 = 20.0;

/// Whether `bonus` is a bonus [`HotwordBias`] takes: a number from 0 to [`MAX_BONUS`].
pub fn check_bonus(bonus: f32) -> Result<(), String> {
    if bonus.is_finite() && (0.0..=MAX_BONUS).contains(&bonus) {
        Ok(())
    } else {
        Err(format!(
            "the hotword bonus must be between 0 and {MAX_BONUS}, not {bonus}"
        ))
    }
}

/// A list of phrases and the bonus for the tokens that continue them.
#[derive(Debug, Clone)]
pub struct HotwordBias {
    phrases: Vec<Vec<u8>>,
    /// Per phrase: (byte offset k, the tokens whose bytes are a prefix of `phrase[k..]`), for
    /// each character boundary k after the first character.
    continuations: Vec<Vec<(usize, Vec<u32>)>>,
    /// Each text token's bytes, by id (empty for special tokens).
    token_bytes: Vec<Vec<u8>>,
    /// Added to a continuing token's logit (natural-log units).
    pub bonus: f32,
    longest: usize,
}

/// GPT-2's byte-level alphabet (which Whisper's tokenizer uses): the printable bytes stand for
/// themselves and the others are mapped to code points from 256 on. Returns the byte each
/// character of a token's string stands for. Reference: openai/gpt-2 `encoder.py`
/// `bytes_to_unicode`.
fn unicode_to_byte() -> HashMap<char, u8> {
    let mut printable: Vec<u32> = (u32::from('!')..=u32::from('~')).collect();
    printable.extend(u32::from('¡')..=u32::from('¬'));
    printable.extend(u32::from('®')..=u32::from('ÿ'));
    let mut map = HashMap::new();
    let mut extra = 0;
    for b in 0..=255u32 {
        let c = if printable.contains(&b) {
            b
        } else {
            extra += 1;
            255 + extra
        };
        map.insert(char::from_u32(c).expect("valid code point"), b as u8);
    }
    map
}

/// Each text token of the tokenizer's vocabulary by its bytes (special tokens, `<|...|>`, are
/// not byte-level text and are left out).
pub(super) fn vocabulary_bytes(tokenizer: &Tokenizer) -> HashMap<Vec<u8>, u32> {
    let to_byte = unicode_to_byte();
    let mut by_bytes: HashMap<Vec<u8>, u32> = HashMap::new();
    for (piece, id) in tokenizer.get_vocab(true) {
        if piece.starts_with("<|") {
            continue;
        }
        let bytes: Option<Vec<u8>> = piece.chars().map(|c| to_byte.get(&c).copied()).collect();
        if let Some(b) = bytes.filter(|b| !b.is_empty()) {
            by_bytes.insert(b, id);
        }
    }
    by_bytes
}

/// The bytes of each token id of `by_bytes` ([`vocabulary_bytes`]); empty for ids it lacks.
pub(super) fn bytes_by_id(by_bytes: &HashMap<Vec<u8>, u32>) -> Vec<Vec<u8>> {
    let mut token_bytes = vec![Vec::new(); by_bytes.values().max().map_or(0, |&m| m as usize + 1)];
    for (b, &id) in by_bytes {
        token_bytes[id as usize] = b.clone();
    }
    token_bytes
}

/// Traditional forms of a simplified character (the reverse of [`super::simplified`], so 帳
/// is a form of 账), for the CJK Unified Ideographs block.
pub(super) fn traditional_forms() -> &'static HashMap<char, Vec<char>> {
    static MAP: std::sync::OnceLock<HashMap<char, Vec<char>>> = std::sync::OnceLock::new();
    MAP.get_or_init(|| {
        let mut map: HashMap<char, Vec<char>> = HashMap::new();
        for cp in 0x4E00u32..=0x9FFF {
            let Some(t) = char::from_u32(cp) else {
                continue;
            };
            let s = super::language::simplified(t);
            let mut chars = s.chars();
            if let (Some(simple), None) = (chars.next(), chars.next()) {
                if simple != t {
                    map.entry(simple).or_default().push(t);
                }
            }
        }
        map
    })
}

/// `phrase` and its traditional spellings (each character in each of its forms, at most 8
/// spellings in all).
fn spellings(phrase: &str) -> Vec<String> {
    let forms = traditional_forms();
    let mut out = vec![String::new()];
    for c in phrase.chars() {
        let mut alts = vec![c];
        alts.extend(forms.get(&c).into_iter().flatten().copied());
        let mut next = Vec::new();
        for prefix in &out {
            for a in &alts {
                if next.len() < 8 {
                    next.push(format!("{prefix}{a}"));
                }
            }
        }
        out = next;
    }
    out
}

impl HotwordBias {
    /// Biasing towards `phrases` (each at least two characters; shorter ones are refused: a
    /// phrase of one character has nothing to continue) with `bonus` ([`check_bonus`]) added
    /// per continuing token. The tokenizer's vocabulary gives each token's bytes.
    pub fn new(phrases: &[String], tokenizer: &Tokenizer, bonus: f32) -> Result<Self> {
        check_bonus(bonus).map_err(anyhow::Error::msg)?;
        let by_bytes = vocabulary_bytes(tokenizer);
        let longest_token = by_bytes.keys().map(Vec::len).max().unwrap_or(1);
        let token_bytes = bytes_by_id(&by_bytes);
        let mut out = Self {
            phrases: Vec::new(),
            continuations: Vec::new(),
            token_bytes,
            bonus,
            longest: 0,
        };
        for phrase in phrases {
            let phrase = phrase.trim();
            if phrase.chars().count() < 2 {
                bail!("hotword {phrase:?}: a phrase needs at least two characters");
            }
            for spelling in spellings(phrase) {
                let bytes = spelling.as_bytes().to_vec();
                if out.phrases.contains(&bytes) {
                    continue;
                }
                let mut conts = Vec::new();
                for (k, _) in spelling.char_indices().skip(1) {
                    let rest = &bytes[k..];
                    let tokens: Vec<u32> = (1..=rest.len().min(longest_token))
                        .filter_map(|n| by_bytes.get(&rest[..n]).copied())
                        .collect();
                    conts.push((k, tokens));
                }
                out.longest = out.longest.max(bytes.len());
                out.phrases.push(bytes);
                out.continuations.push(conts);
            }
        }
        Ok(out)
    }

    /// The tokens to boost after `sampled`, the tokens the decoder has written in this window:
    /// every token that continues a phrase whose beginning, one character or more, the text
    /// since the last special or timestamp token ends with. Empty when none does.
    pub fn continuing(&self, sampled: &[u32]) -> Vec<u32> {
        let mut pieces = Vec::new();
        let mut len = 0;
        for &t in sampled.iter().rev() {
            match self.token_bytes.get(t as usize).filter(|b| !b.is_empty()) {
                Some(b) if len < self.longest => {
                    len += b.len();
                    pieces.push(b.as_slice());
                }
                _ => break,
            }
        }
        let written: Vec<u8> = pieces.into_iter().rev().flatten().copied().collect();
        let tail = &written[written.len().saturating_sub(self.longest)..];
        let mut out = Vec::new();
        for (phrase, conts) in self.phrases.iter().zip(&self.continuations) {
            for (k, tokens) in conts {
                if tail.ends_with(&phrase[..*k]) {
                    out.extend_from_slice(tokens);
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chinese_phrases_are_listed_in_traditional_forms_too() {
        let s = spellings("安全账户");
        assert!(s.contains(&"安全账户".to_owned()));
        assert!(
            s.contains(&"安全帳戶".to_owned()) && s.contains(&"安全賬戶".to_owned()),
            "{s:?}"
        );
        assert_eq!(spellings("gift card"), vec!["gift card".to_owned()]);
    }

    #[test]
    fn the_byte_alphabet_is_a_bijection() {
        let m = unicode_to_byte();
        assert_eq!(m.len(), 256);
        let mut bytes: Vec<u8> = m.values().copied().collect();
        bytes.sort_unstable();
        bytes.dedup();
        assert_eq!(bytes.len(), 256);
        assert_eq!(m[&'Ġ'], b' ');
        assert_eq!(m[&'a'], b'a');
    }
}
