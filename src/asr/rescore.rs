//! Vocabulary rescoring: a span of a window's transcript that sounds partly like a listed
//! phrase (Mandarin scam vocabulary) is tried with the phrase in its place, and the decoder,
//! teacher-forced over the same audio, keeps the phrase when it finds the changed transcript
//! nearly as likely as what it wrote: within `margin` nats, summed over the changed tokens and
//! the [`FOLLOWING_TOKENS`] after them.
//!
//! Why: greedy decoding commits to the likeliest character at each step, and Whisper base on
//! 8 kHz Mandarin goes wrong early in a phrase (公安局 written 過安及, 账户 written 照顾) even
//! where the audio supports the phrase as a whole. Biasing ([`super::bias`]) needs the first
//! character right; this does not, and it cannot write a phrase the audio does not support,
//! since the decoder judges every change. It is the second pass of keyword spotting on an
//! ASR's output (propose keyword hypotheses near the first-pass text, verify each with the
//! acoustic model's likelihood), with the proposal made by pinyin resemblance
//! ([`crate::phonetics::han_resemblance`]).
//!
//! Off by default (`--rescore FILE`): it hears the key words better ([`DEFAULT_MARGIN`]) but
//! flagged no more calls on six Mandarin telephone sets (docs/measured.md), as the phrases it
//! mends are mostly in calls the detector flags anyway.

use anyhow::Result;
use candle_core::{IndexOp, Tensor};
use tokenizers::Tokenizer;

use super::model::{log_softmax, Whisper};
use crate::phonetics::{han_resemblance, han_similarity, is_han, PINYIN_MIN_SIMILARITY};

/// Tokens after a changed span whose log-probability counts too: a phrase that fits the
/// audio but not what follows it should lose.
pub const FOLLOWING_TOKENS: usize = 3;

/// Proposals scored per window at most, the most resembling first (each costs a decoder pass
/// over its tokens).
pub const MAX_PROPOSALS: usize = 12;

/// The mean resemblance a span needs to be proposed ([`han_resemblance`]: 1 same character,
/// 0.9 homophone, 0.7 near-homophone, 0.4 a shared initial or final).
pub const MIN_RESEMBLANCE: f32 = 0.6;

/// What a changed transcript may lose against the decoder's own and still be kept (nats).
/// On the heard sets unseen_y, z and aa (120 calls, base, 8 kHz channel), of the 1,210
/// proposals made from models/hotwords/zh.txt, those whose phrase the call's script holds
/// against those it does not: within 1 nat 11 / 2, within 2 nats 20 / 4, within 4 nats 30 /
/// 15, within 8 nats 57 / 57. (The same difference with the audio replaced by silence, to
/// take the decoder's language prior out, separated them worse: 13 / 10 at 0.)
pub const DEFAULT_MARGIN: f32 = 2.0;

/// Whether `margin` is one the rescorer takes: 0 to 50 nats.
pub fn check_margin(margin: f32) -> Result<(), String> {
    if margin.is_finite() && (0.0..=50.0).contains(&margin) {
        Ok(())
    } else {
        Err(format!(
            "the rescoring margin must be between 0 and 50 nats, not {margin}"
        ))
    }
}

struct Phrase {
    /// Simplified characters, compared with the transcript's (simplified) characters.
    chars: Vec<char>,
    simplified: String,
    /// Each character in its first traditional form (Whisper base writes telephone Mandarin
    /// in traditional characters about half the time; a window written so gets this one).
    traditional: String,
}

/// One change tried: tokens `[start, end)` of the window's sampled tokens replaced by `tokens`.
#[derive(Debug, Clone)]
struct Proposal {
    start: usize,
    end: usize,
    tokens: Vec<u32>,
    resemblance: f32,
    phrase: usize,
}

/// The listed phrases and what it needs to spell them in tokens.
pub struct VocabularyRescorer {
    phrases: Vec<Phrase>,
    token_bytes: Vec<Vec<u8>>,
    /// See the module doc (nats).
    pub margin: f32,
}

fn simplified_char(c: char) -> char {
    let s = super::language::simplified(c);
    let mut it = s.chars();
    match (it.next(), it.next()) {
        (Some(x), None) => x,
        _ => c,
    }
}

impl VocabularyRescorer {
    /// A rescorer for `phrases` (two Han characters or more each; other lines are refused)
    /// with `margin` ([`check_margin`]).
    pub fn new(phrases: &[String], tokenizer: &Tokenizer, margin: f32) -> Result<Self> {
        check_margin(margin).map_err(anyhow::Error::msg)?;
        let forms = super::bias::traditional_forms();
        let mut out = Vec::new();
        for p in phrases {
            let p = p.trim();
            let chars: Vec<char> = p.chars().map(simplified_char).collect();
            if chars.len() < 2 || !chars.iter().all(|&c| is_han(c)) {
                anyhow::bail!("rescoring phrase {p:?}: a phrase is two Chinese characters or more");
            }
            let traditional = chars
                .iter()
                .map(|c| forms.get(c).and_then(|f| f.first()).copied().unwrap_or(*c))
                .collect();
            out.push(Phrase {
                simplified: chars.iter().collect(),
                chars,
                traditional,
            });
        }
        Ok(Self {
            phrases: out,
            token_bytes: super::bias::bytes_by_id(&super::bias::vocabulary_bytes(tokenizer)),
            margin,
        })
    }

    /// The changes to try in `sampled` (a window's tokens; ids at or above `eot` are special
    /// or timestamps and split the text into runs), at most [`MAX_PROPOSALS`].
    fn proposals(&self, tokenizer: &Tokenizer, sampled: &[u32], eot: u32) -> Vec<Proposal> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < sampled.len() {
            if sampled[i] >= eot {
                i += 1;
                continue;
            }
            let start = i;
            while i < sampled.len() && sampled[i] < eot {
                i += 1;
            }
            self.run_proposals(tokenizer, sampled, (start, i), eot, &mut out);
        }
        out.sort_by(|a, b| b.resemblance.total_cmp(&a.resemblance));
        out.truncate(MAX_PROPOSALS);
        out
    }

    /// Proposals inside one run of text tokens, `sampled[start..end]` (ids below `eot`).
    fn run_proposals(
        &self,
        tokenizer: &Tokenizer,
        sampled: &[u32],
        (start, end): (usize, usize),
        eot: u32,
        out: &mut Vec<Proposal>,
    ) {
        // Byte offset of each token's start in the run, and the run's end.
        let mut offsets = vec![0usize];
        let mut bytes = Vec::new();
        for &t in &sampled[start..end] {
            match self.token_bytes.get(t as usize) {
                Some(b) if !b.is_empty() => bytes.extend_from_slice(b),
                _ => return,
            }
            offsets.push(bytes.len());
        }
        let Ok(text) = std::str::from_utf8(&bytes) else {
            return;
        };
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        let traditional = chars.iter().any(|&(_, c)| simplified_char(c) != c);
        let plain: Vec<char> = chars.iter().map(|&(_, c)| simplified_char(c)).collect();
        for (pi, phrase) in self.phrases.iter().enumerate() {
            let n = phrase.chars.len();
            if plain.len() < n {
                continue;
            }
            for at in 0..=plain.len() - n {
                let span = &plain[at..at + n];
                if !span.iter().all(|&c| is_han(c)) {
                    continue;
                }
                // One pass: the matcher's similarity (its mean, and how many characters are
                // near-homophones or better) and the looser resemblance.
                let (mut strict, mut resemblance, mut close) = (0.0f32, 0.0f32, 0usize);
                for (&t, &p) in span.iter().zip(&phrase.chars) {
                    let s = han_similarity(t, p);
                    strict += s;
                    close += usize::from(s >= 0.7);
                    resemblance += han_resemblance(t, p);
                }
                strict /= n as f32;
                resemblance /= n as f32;
                // The phrase packs' matcher (`detect/matcher.rs`) hears this span as the
                // phrase already.
                if strict >= PINYIN_MIN_SIMILARITY {
                    continue;
                }
                if resemblance < MIN_RESEMBLANCE || close * 2 < n {
                    continue;
                }
                let byte_start = chars[at].0;
                let byte_end = chars[at + n - 1].0 + chars[at + n - 1].1.len_utf8();
                // The tokens that hold the span, widened to character boundaries (a token
                // may hold part of a character's bytes).
                let mut first = offsets.partition_point(|&o| o <= byte_start) - 1;
                while first > 0 && !text.is_char_boundary(offsets[first]) {
                    first -= 1;
                }
                let mut last = offsets.partition_point(|&o| o < byte_end);
                while last + 1 < offsets.len() && !text.is_char_boundary(offsets[last]) {
                    last += 1;
                }
                let piece = &text[offsets[first]..offsets[last]];
                let spelling = if traditional {
                    &phrase.traditional
                } else {
                    &phrase.simplified
                };
                let changed = format!(
                    "{}{}{}",
                    &piece[..byte_start - offsets[first]],
                    spelling,
                    &piece[byte_end - offsets[first]..]
                );
                let Ok(encoding) = tokenizer.encode(changed.as_str(), false) else {
                    continue;
                };
                let tokens = encoding.get_ids().to_vec();
                if tokens.is_empty() || tokens.iter().any(|&t| t >= eot) {
                    continue;
                }
                out.push(Proposal {
                    start: start + first,
                    end: start + last,
                    tokens,
                    resemblance,
                    phrase: pi,
                });
            }
        }
    }

    /// `sampled` with the listed phrases the decoder accepts in place of the spans that sound
    /// like them, or `None` when nothing changed. `audio [1, frames, d]` is the window's
    /// encoded audio, `initial` the tokens the decode started from (prompt and start
    /// sequence), `sampled` its tokens without the end-of-text `eot`. Errors: the decoder's.
    pub fn rescore(
        &self,
        model: &Whisper,
        tokenizer: &Tokenizer,
        audio: &Tensor,
        initial: &[u32],
        sampled: &[u32],
        eot: u32,
    ) -> Result<Option<Vec<u32>>> {
        let proposals = self.proposals(tokenizer, sampled, eot);
        if proposals.is_empty() || initial.is_empty() {
            return Ok(None);
        }
        let decoder = &model.decoder;
        let mut seq = initial.to_vec();
        seq.extend_from_slice(sampled);
        seq.push(eot);
        let longest = proposals
            .iter()
            .map(|p| p.tokens.len() as isize - (p.end - p.start) as isize)
            .max()
            .unwrap_or(0)
            .max(0) as usize;
        if seq.len() + longest > decoder.max_len() {
            return Ok(None);
        }
        let p0 = initial.len();
        let scores = score_changes(model, audio, &seq, p0, &proposals)?;
        let mut kept: Vec<(f32, &Proposal)> = Vec::new();
        for (p, (theirs, ours)) in proposals.iter().zip(scores) {
            let delta = ours - theirs;
            tracing::debug!(
                phrase = %self.phrases[p.phrase].simplified,
                delta,
                resemblance = p.resemblance,
                "rescoring proposal"
            );
            if delta >= -self.margin {
                kept.push((delta, p));
            }
        }
        if kept.is_empty() {
            return Ok(None);
        }
        // The best first; a proposal overlapping one already taken is dropped.
        kept.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut taken: Vec<&Proposal> = Vec::new();
        for (_, p) in kept {
            if taken.iter().all(|q| p.end <= q.start || q.end <= p.start) {
                taken.push(p);
            }
        }
        taken.sort_by_key(|p| std::cmp::Reverse(p.start));
        let mut out = sampled.to_vec();
        for p in taken {
            out.splice(p.start..p.end, p.tokens.iter().copied());
        }
        Ok(Some(out))
    }
}

/// For each proposal, the log-probability (nats) of the tokens it replaces and the
/// [`FOLLOWING_TOKENS`] after them as written, and of its tokens and the same following ones,
/// teacher-forced over `audio [1, frames, d]`. `seq` is the initial tokens (the first `p0`),
/// the window's sampled tokens and the end-of-text.
fn score_changes(
    model: &Whisper,
    audio: &Tensor,
    seq: &[u32],
    p0: usize,
    proposals: &[Proposal],
) -> Result<Vec<(f32, f32)>> {
    let decoder = &model.decoder;
    let device = audio.device();
    let mut state = decoder.start(audio)?;
    let hidden = decoder.forward(&Tensor::new(seq, device)?.unsqueeze(0)?, &mut state)?;
    // Only the rows the proposals read go through the vocabulary projection (about half a
    // decoder step's cost each): row i of `logprobs` predicts written[rows[i]], where written
    // = sampled + [eot], from the hidden state of the token before it.
    let written = &seq[p0..];
    let mut rows: Vec<usize> = proposals
        .iter()
        .flat_map(|p| p.start..(p.end + FOLLOWING_TOKENS).min(written.len()))
        .collect();
    rows.sort_unstable();
    rows.dedup();
    let at: std::collections::HashMap<usize, usize> =
        rows.iter().enumerate().map(|(i, &j)| (j, i)).collect();
    let picked: Vec<u32> = rows.iter().map(|&j| (p0 - 1 + j) as u32).collect();
    let before = hidden
        .squeeze(0)?
        .index_select(&Tensor::new(picked.as_slice(), device)?, 0)?
        .unsqueeze(0)?;
    let logprobs = log_softmax(&decoder.logits(&before)?)?.squeeze(0)?;
    let wanted: Vec<u32> = rows.iter().map(|&j| written[j]).collect();
    let targets = Tensor::new(wanted.as_slice(), device)?.unsqueeze(1)?;
    let own: Vec<f32> = logprobs.gather(&targets, 1)?.squeeze(1)?.to_vec1()?;
    let mut out = Vec::with_capacity(proposals.len());
    for p in proposals {
        let follow_end = (p.end + FOLLOWING_TOKENS).min(written.len());
        let theirs: f32 = (p.start..follow_end).map(|j| own[at[&j]]).sum();
        let mut changed = p.tokens.clone();
        changed.extend_from_slice(&written[p.end..follow_end]);
        let mut ours = logprobs
            .i((at[&p.start], changed[0] as usize))?
            .to_scalar::<f32>()?;
        if changed.len() > 1 {
            let mut st = state.clone();
            st.truncate(p0 + p.start)?;
            let input = Tensor::new(&changed[..changed.len() - 1], device)?.unsqueeze(0)?;
            let h = decoder.forward(&input, &mut st)?;
            let lp = log_softmax(&decoder.logits(&h)?)?.squeeze(0)?;
            let next = Tensor::new(&changed[1..], device)?.unsqueeze(1)?;
            ours += lp.gather(&next, 1)?.sum_all()?.to_scalar::<f32>()?;
        }
        out.push((theirs, ours));
    }
    Ok(out)
}
