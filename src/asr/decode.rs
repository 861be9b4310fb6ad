//! Decoding one 30 s window: the token loop (greedy, sampled, or beam search), openai-whisper's
//! logit rules (blank and token suppression, timestamp pairing), and temperature fallback.

use std::io::Write;

use anyhow::Result;
use candle_core::Tensor;
use rand::{Rng, SeedableRng};

use super::bias::HotwordBias;
use super::model::{DecoderState, Whisper};
use super::tokens::SpecialTokens;

mod joint;
pub use joint::JointDecodes;

/// Thresholds that decide whether a window's decode is trusted, as openai-whisper's defaults.
#[derive(Debug, Clone)]
pub struct FallbackPolicy {
    pub temperatures: Vec<f32>,
    /// Temperatures tried after `temperatures` only for a window whose every decode so far
    /// fell into a loop (empty: none; openai-whisper tries all its temperatures for any
    /// rejection). Live utterances stop at 0.4 when a loop-free decode was rejected on its
    /// log-probability alone (see `engine::recogniser::UTTERANCE_TEMPERATURES`), and go on here
    /// when there is none: a loop is where a higher temperature finds the words.
    pub loop_temperatures: Vec<f32>,
    /// Text this repetitive (gzip ratio) is a loop, not speech.
    pub compression_ratio_threshold: Option<f32>,
    pub logprob_threshold: Option<f32>,
    pub no_speech_threshold: Option<f32>,
    /// Above this no-speech probability a window is silence however confident its text:
    /// Whisper's famous "you" in digital silence scores well on log-probability alone.
    pub certain_no_speech_threshold: Option<f32>,
    /// At most this many tokens per window (`None`: half the decoder's context, as Whisper).
    /// A caller that knows how little audio there is can stop a hallucination loop early.
    pub max_tokens: Option<usize>,
    /// At temperature 0, keep this many hypotheses (beam search, as openai-whisper's and
    /// faster-whisper's `beam_size`); 1 is greedy decoding, 0 and above [`MAX_BEAM_SIZE`] are
    /// refused ([`check_beam_size`]). Temperatures above 0 sample one.
    /// Each hypothesis is a decoder row; on a GPU each holds its own copy of the window's
    /// cross-attention keys and values (base, 15 s window: 18 MB), so a batch of `n` windows
    /// holds `n * beam_size`; on the CPU the hypotheses of a window read one copy.
    pub beam_size: usize,
    /// A rejected window decodes at all its remaining temperatures at once (true, the
    /// default: about two decodes' time however many it takes, but more work when an early one
    /// passes) instead of one after another (false, as openai-whisper). Always at once on a
    /// GPU and for the live recogniser's utterances. The same result
    /// either way ([`WindowDecoder::decode_with_fallback_batch`]). Since the decodes of a
    /// window share its audio and its prompt pass, at once was also the faster choice for files
    /// on 2 cores (2026-12-05, same run, at once / one after another): `bench throughput
    /// --batch 1,8` tiny.en 11.9-12.3 / 11.8-12.2 and 13.3-14.3 / 12.8-13.0 audio s per s,
    /// base 4.9-5.5 / 4.1-4.2 and 6.1-6.3 / 4.3; `benches/compare_faster_whisper.py` warm
    /// calls tiny.en 11.67 / 14.14 s, base 28.83 / 27.79 s.
    pub fallback_at_once: bool,
}

impl FallbackPolicy {
    /// Whether rejected result `a` beats rejected result `b`, for a window no temperature
    /// passed: one that is not a loop beats a loop, then the higher average log-probability
    /// (faster-whisper's rule; openai-whisper keeps the last, usually the temperature-1.0
    /// sample: on a bundled sample's 6 s piece that was -4.6 against -1.1 for the greedy
    /// decode, and words of the script were lost).
    pub fn prefer(&self, a: &WindowResult, b: &WindowResult) -> bool {
        (self.loop_free(a), a.avg_logprob) > (self.loop_free(b), b.avg_logprob)
    }

    /// Whether `r`'s text is no more repetitive than the policy allows.
    fn loop_free(&self, r: &WindowResult) -> bool {
        self.compression_ratio_threshold
            .is_none_or(|th| r.compression_ratio <= th)
    }

    /// Keeps rejected decode `r` in `best` when [`Self::prefer`] ranks it above what is there.
    pub fn keep_best(&self, best: &mut Option<WindowResult>, r: WindowResult) {
        if best.as_ref().is_none_or(|b| self.prefer(&r, b)) {
            *best = Some(r);
        }
    }

    /// The decode kept for a window no temperature passed: counted as tried at the policy's
    /// last temperature (see [`WindowResult::final_temperature`]).
    pub fn gave_up(&self, mut best: WindowResult) -> WindowResult {
        if let Some(&t) = self.temperatures.last() {
            best.final_temperature = t;
        }
        best
    }
}

/// What the temperature fallback has of one window so far: the decode kept once one passes,
/// else the best rejected one ([`FallbackPolicy::keep_best`]).
#[derive(Default)]
struct Fallback {
    kept: Option<WindowResult>,
    best: Option<WindowResult>,
}

impl Fallback {
    /// Takes the window's next decode in temperature order (ignored once one has passed);
    /// whether one has passed.
    fn take(
        &mut self,
        decoder: &WindowDecoder<'_>,
        policy: &FallbackPolicy,
        r: WindowResult,
    ) -> bool {
        if self.kept.is_none() {
            if decoder.accepts(&r, policy) {
                self.kept = Some(r);
            } else {
                tracing::debug!(
                    temperature = r.temperature,
                    compression_ratio = r.compression_ratio,
                    avg_logprob = r.avg_logprob,
                    "window rejected, falling back"
                );
                policy.keep_best(&mut self.best, r);
            }
        }
        self.kept.is_some()
    }

    /// The average log-probability a later decode of the window must beat to be the one
    /// kept, once the best rejected decode so far is loop-free (a loop is beaten by any
    /// loop-free decode, whatever its log-probability). `None` once one has passed.
    fn floor(&self, policy: &FallbackPolicy) -> Option<f32> {
        match (&self.kept, &self.best) {
            (None, Some(best)) if policy.loop_free(best) => Some(best.avg_logprob),
            _ => None,
        }
    }

    /// Whether no decode passed and every one was a loop.
    fn only_loops(&self, policy: &FallbackPolicy) -> bool {
        self.kept.is_none() && self.best.as_ref().is_some_and(|b| !policy.loop_free(b))
    }

    /// The decode kept, or the best when none passed ([`FallbackPolicy::gave_up`]).
    fn finish(self, policy: &FallbackPolicy) -> Result<WindowResult> {
        match (self.kept, self.best) {
            (Some(kept), _) => Ok(kept),
            (None, Some(best)) => Ok(policy.gave_up(best)),
            (None, None) => Err(anyhow::anyhow!("the decoding policy has no temperature")),
        }
    }
}

impl Default for FallbackPolicy {
    fn default() -> Self {
        Self {
            temperatures: vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
            loop_temperatures: Vec::new(),
            compression_ratio_threshold: Some(2.4),
            logprob_threshold: Some(-1.0),
            no_speech_threshold: Some(0.6),
            certain_no_speech_threshold: Some(0.9),
            max_tokens: None,
            beam_size: 1,
            fallback_at_once: true,
        }
    }
}

/// What one window's decode produced.
#[derive(Debug, Clone)]
pub struct WindowResult {
    /// Sampled tokens, without the prompt and without the final end-of-text.
    pub tokens: Vec<u32>,
    pub text: String,
    pub avg_logprob: f32,
    pub no_speech_prob: f32,
    pub temperature: f32,
    pub compression_ratio: f32,
    /// The last temperature tried for this window: `temperature`, or the policy's last when
    /// no temperature passed and an earlier decode was kept. openai-whisper clears the prompt
    /// after a window whose last temperature is above 0.5, so that a rejected window's words
    /// (a loop, say) do not steer the next one.
    pub final_temperature: f32,
}

pub struct WindowDecoder<'a> {
    pub model: &'a Whisper,
    pub tokenizer: &'a tokenizers::Tokenizer,
    pub rules: LogitRules<'a>,
    /// The model's running batch: when set, a window's greedy decode at temperature 0 joins
    /// it ([`JointDecodes`]) instead of stepping a batch of its own.
    pub joint: Option<&'a JointDecodes>,
}

/// The constraints on which token may come next.
pub struct LogitRules<'a> {
    pub special: &'a SpecialTokens,
    /// Always-suppressed token ids.
    pub suppress: &'a [u32],
    pub with_timestamps: bool,
    /// Latest first timestamp allowed, in 20 ms steps (openai-whisper: 1.0 s).
    pub max_initial_timestamp_steps: Option<u32>,
    /// Phrases whose continuation gets a bonus once begun ([`HotwordBias`]).
    pub bias: Option<&'a HotwordBias>,
}

/// One window of a batched decode: what the single-window `decode` takes, per row (a row holds
/// one sequence, or `policy.beam_size` of them in beam search).
#[derive(Clone, Copy)]
pub struct BatchRow<'a> {
    pub prompt: &'a [u32],
    pub sot_sequence: &'a [u32],
    /// The row's token budget (`max_tokens`) and loop stop. A row ends early once it has
    /// fallen into a loop whose text is already more repetitive than the policy's
    /// `compression_ratio_threshold`: Whisper seldom leaves a loop before its token budget
    /// (224 tokens) runs out, so such a decode would almost always be rejected anyway. base on
    /// a 4 s French clip: 24.1 -> 7.8 s for `scan` (release build, 2 cores), with the same
    /// output. When every temperature loops, the decode kept is the shorter loop. A row whose
    /// no-speech probability is above the policy's `no_speech_threshold` is never stopped
    /// early: the policy may accept it as silence on its average log-probability, which a
    /// shorter loop would change.
    pub policy: &'a FallbackPolicy,
    /// Seeds the row's sampling above temperature 0 (with the temperature, as `decode`).
    pub seed: u64,
}

static LOOP_ROUNDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many windows this process has decoded at their policy's `loop_temperatures` (every
/// decode at its `temperatures` was a loop).
pub fn loop_rounds() -> u64 {
    LOOP_ROUNDS.load(std::sync::atomic::Ordering::Relaxed)
}

/// The widest beam accepted: each hypothesis is a decoder row with its own copy of the
/// window's cross-attention keys and values (base, 15 s window: 18 MB each).
pub const MAX_BEAM_SIZE: usize = 16;

/// Whether `beam_size` is one the decoder keeps (1 to [`MAX_BEAM_SIZE`]); the reason when not.
pub fn check_beam_size(beam_size: usize) -> std::result::Result<(), String> {
    if (1..=MAX_BEAM_SIZE).contains(&beam_size) {
        Ok(())
    } else {
        Err(format!(
            "beam_size must be between 1 and {MAX_BEAM_SIZE}, not {beam_size}"
        ))
    }
}

/// Each row's prompt run through the decoder ([`WindowDecoder::decode_batch`]'s first step).
#[derive(Clone)]
struct Started {
    state: DecoderState,
    /// The logits of each row's first token, `[b, vocab]` (F32).
    logits: Tensor,
    rows: RowInfo,
}

/// What the decoding loops need to know of each row.
#[derive(Clone)]
struct RowInfo {
    no_speech: Vec<f32>,
    /// Tokens before the first sampled one (previous text and start sequence).
    prompt_len: Vec<usize>,
    /// Left padding of each row's prompt in the batch.
    pads: Vec<usize>,
    picker: Picker,
    budget: Vec<usize>,
    device: candle_core::Device,
}

impl RowInfo {
    /// Keeps the rows `pick` (indices into the current rows, in the new order, repeats
    /// allowed); the picker stays as it is.
    fn keep_rows(&mut self, pick: &[usize]) {
        self.no_speech = pick.iter().map(|&r| self.no_speech[r]).collect();
        self.prompt_len = pick.iter().map(|&r| self.prompt_len[r]).collect();
        self.pads = pick.iter().map(|&r| self.pads[r]).collect();
        self.budget = pick.iter().map(|&r| self.budget[r]).collect();
    }
}

/// Damaged weights (flipped bytes, NaN in the cache) give NaN scores, and the argmax of NaN is
/// token 0 ("!"): a transcript of "!!!!" that looks like a result.
fn damaged_weights() -> anyhow::Error {
    anyhow::anyhow!(
        "the model produced NaN scores: its weights are damaged; fetch it again \
         (`vishguard models fetch --force <model>`)"
    )
}

/// The `k` largest finite values of `v` with their indices, largest first (ties: lower index
/// first).
fn top_k(v: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
    if k == 0 {
        return best;
    }
    for (i, &x) in v.iter().enumerate() {
        if !x.is_finite() || (best.len() == k && x <= best[k - 1].1) {
            continue;
        }
        let at = best.partition_point(|&(_, y)| y >= x);
        best.insert(at, (i as u32, x));
        best.truncate(k);
    }
    best
}

/// Whether `tokens` end in the same run of tokens three times over ("I'm sorry. I'm sorry.
/// I'm sorry."), the shape of a decode fallen into a loop. Timestamp tokens differ between
/// the turns of a loop, so callers pass text tokens only.
pub fn ends_in_repeat(tokens: &[u32]) -> bool {
    let n = tokens.len();
    (1..=n / 3).any(|period| {
        let last = &tokens[n - period..];
        last == &tokens[n - 2 * period..n - period]
            && last == &tokens[n - 3 * period..n - 2 * period]
    })
}

/// gzip ratio of `text` (its length over its zlib-compressed length), openai-whisper's test of
/// a loop: above 2.4 the decode is rejected.
pub fn compression_ratio(text: &str) -> f32 {
    if text.is_empty() {
        return 0.0;
    }
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = enc.write_all(text.as_bytes());
    let compressed = enc.finish().map(|v| v.len()).unwrap_or(text.len());
    text.len() as f32 / compressed.max(1) as f32
}

impl WindowDecoder<'_> {
    /// Decodes with fallback: each temperature in turn until the result passes the policy.
    /// When none passes, the best of them ([`FallbackPolicy::prefer`]), not the last.
    pub fn decode_with_fallback(
        &self,
        audio: &Tensor,
        prompt: &[u32],
        sample_begin_tokens: &[u32],
        policy: &FallbackPolicy,
        seed: u64,
    ) -> Result<WindowResult> {
        let row = BatchRow {
            prompt,
            sot_sequence: sample_begin_tokens,
            policy,
            seed,
        };
        Ok(self
            .decode_with_fallback_batch(audio, std::slice::from_ref(&row))?
            .remove(0))
    }

    /// Temperature fallback for a batch of windows (openai-whisper's `decode_with_fallback`,
    /// transcribe.py): every row decodes at its policy's first temperature; each row the
    /// policy rejects then decodes at all of its remaining temperatures at once, from the same
    /// prompt pass (its cached prompt and projected audio are shared, not computed again per
    /// temperature). Each temperature samples with its own generator (the row's seed with the
    /// temperature), so each decode is the one a loop over the temperatures, one after
    /// another, makes at that temperature; of a row's decodes the first the policy accepts, or
    /// the best when none passes ([`FallbackPolicy::keep_best`], [`FallbackPolicy::gave_up`]),
    /// is the one that loop keeps, and a row's other decodes stop as soon as it is known.
    ///
    /// Why at once: a window no temperature passes cost five decodes one after another (tiny.en
    /// on robotic voices: 2.2-2.6 s, the live transcript lag's 95th percentile); together they
    /// cost about two.
    ///
    /// `audio [b, frames, d]`, one row each. Errors: the rows' first temperatures differ, a
    /// policy without temperatures, the decoder's errors.
    pub fn decode_with_fallback_batch(
        &self,
        audio: &Tensor,
        rows: &[BatchRow<'_>],
    ) -> Result<Vec<WindowResult>> {
        let b = rows.len();
        let Some(first) = rows.first() else {
            return Ok(Vec::new());
        };
        let t0 = *first
            .policy
            .temperatures
            .first()
            .ok_or_else(|| anyhow::anyhow!("the decoding policy has no temperature"))?;
        if rows
            .iter()
            .any(|r| r.policy.temperatures.first() != Some(&t0))
        {
            anyhow::bail!("rows decoded together must start at the same temperature");
        }
        let joint = self
            .joint
            .filter(|_| t0 <= 0.0 && rows.iter().all(|r| r.policy.beam_size <= 1));
        let (firsts, prompt_pass) = match joint {
            Some(joint) => {
                let firsts = joint.decode(self, audio, rows)?;
                (firsts.into_iter().map(Some).collect(), None)
            }
            None => {
                let (run, beams) = self.prepare(audio, rows, t0)?;
                let prompt_pass = run.clone();
                let firsts =
                    self.run_rows(rows, &beams, &vec![t0; b], run, None, &vec![None; b])?;
                (firsts, Some(prompt_pass))
            }
        };
        let mut windows: Vec<Fallback> = (0..b).map(|_| Fallback::default()).collect();
        // (row, temperature) of every decode still to make, each row's in the policy's order.
        let mut again: Vec<(usize, f32)> = Vec::new();
        for (r, result) in firsts.into_iter().enumerate() {
            let result = result.expect("no decode is stopped without rows to settle");
            let policy = rows[r].policy;
            if windows[r].take(self, policy, result) {
                continue;
            }
            let rest = &policy.temperatures[1..];
            let at_once = policy.fallback_at_once || !audio.device().is_cpu();
            if at_once && rest.iter().all(|&t| t > 0.0) {
                again.extend(rest.iter().map(|&t| (r, t)));
            } else {
                // One temperature after another: asked for, or a policy that comes back to
                // temperature 0 (greedy or beam search).
                let own = audio.narrow(0, r, 1)?;
                for &t in rest {
                    let floor = windows[r].floor(policy);
                    // None: it could not have been kept (see `greedy_or_sampled`).
                    if let Some(decoded) = self.decode_above(&own, &rows[r], t, floor)? {
                        if windows[r].take(self, policy, decoded) {
                            break;
                        }
                    }
                }
            }
        }
        if !again.is_empty() {
            self.decode_again(audio, rows, &mut windows, &again, prompt_pass)?;
        }
        // Windows whose every decode so far fell into a loop go on at the policy's
        // `loop_temperatures`, all at once.
        let looping: Vec<usize> = (0..b)
            .filter(|&r| {
                windows[r].only_loops(rows[r].policy)
                    && !rows[r].policy.loop_temperatures.is_empty()
            })
            .collect();
        if !looping.is_empty() {
            LOOP_ROUNDS.fetch_add(looping.len() as u64, std::sync::atomic::Ordering::Relaxed);
            let again: Vec<(usize, f32)> = looping
                .iter()
                .flat_map(|&r| {
                    let temperatures = &rows[r].policy.loop_temperatures;
                    temperatures.iter().map(move |&t| (r, t))
                })
                .collect();
            self.decode_again(audio, rows, &mut windows, &again, None)?;
        }
        windows
            .into_iter()
            .zip(rows)
            .map(|(w, row)| w.finish(row.policy))
            .collect()
    }

    /// Decodes `again` ((row, temperature) pairs, each row's in temperature order, all above
    /// 0) at once and takes the results into `windows`. `prompt_pass`: the rows' prompt pass,
    /// when one was kept from their first decode; else it is made here, once per row.
    fn decode_again(
        &self,
        audio: &Tensor,
        rows: &[BatchRow<'_>],
        windows: &mut [Fallback],
        again: &[(usize, f32)],
        prompt_pass: Option<Started>,
    ) -> Result<()> {
        let pick: Vec<usize> = again.iter().map(|&(r, _)| r).collect();
        let floors: Vec<Option<f32>> = pick
            .iter()
            .map(|&r| windows[r].floor(rows[r].policy))
            .collect();
        let run = match prompt_pass {
            Some(pass) => self.select_started(pass, &pick)?,
            None => {
                // None kept: the first decodes ran in the shared batch
                // ([`JointDecodes`]), or an earlier round took it.
                let mut distinct = pick.clone();
                distinct.dedup();
                let idx: Vec<u32> = distinct.iter().map(|&r| r as u32).collect();
                let own = audio.index_select(&Tensor::new(idx.as_slice(), audio.device())?, 0)?;
                let own_rows: Vec<BatchRow<'_>> = distinct.iter().map(|&r| rows[r]).collect();
                let (pass, _) = self.prepare(&own, &own_rows, again[0].1)?;
                let local: Vec<usize> = pick
                    .iter()
                    .map(|r| distinct.iter().position(|d| d == r).expect("a picked row"))
                    .collect();
                self.select_started(pass, &local)?
            }
        };
        let sampled_rows: Vec<BatchRow<'_>> = pick.iter().map(|&r| rows[r]).collect();
        let temperatures: Vec<f32> = again.iter().map(|&(_, t)| t).collect();
        let results = self.run_rows(
            &sampled_rows,
            &vec![1; pick.len()],
            &temperatures,
            run,
            Some(&pick),
            &floors,
        )?;
        for (&r, result) in pick.iter().zip(results) {
            // None: stopped, as a decode of the same window at a lower temperature was
            // accepted, or as it could no longer be the one kept.
            if let Some(result) = result {
                windows[r].take(self, rows[r].policy, result);
            }
        }
        Ok(())
    }

    /// Whether a window's decode passes the policy (openai-whisper's rule): not a loop, not
    /// too unlikely, unless the window is silence anyway.
    pub fn accepts(&self, r: &WindowResult, policy: &FallbackPolicy) -> bool {
        let too_repetitive = policy
            .compression_ratio_threshold
            .is_some_and(|th| r.compression_ratio > th);
        let too_unlikely = policy
            .logprob_threshold
            .is_some_and(|th| r.avg_logprob < th);
        let is_silence = policy
            .no_speech_threshold
            .is_some_and(|th| r.no_speech_prob > th)
            && policy
                .logprob_threshold
                .is_some_and(|th| r.avg_logprob < th);
        is_silence || !(too_repetitive || too_unlikely)
    }

    /// One decode of `row` at one temperature (0 = greedy or beam search): the batched decoder
    /// with one row,
    /// so a window heard alone and in a batch go through the same rules in the same arithmetic.
    pub fn decode(
        &self,
        audio: &Tensor,
        row: &BatchRow<'_>,
        temperature: f32,
    ) -> Result<WindowResult> {
        Ok(self
            .decode_batch(audio, std::slice::from_ref(row), temperature)?
            .remove(0))
    }

    /// [`Self::decode`], stopped (`None`) once its average log-probability can no longer
    /// beat `floor` (see [`Self::greedy_or_sampled`]).
    fn decode_above(
        &self,
        audio: &Tensor,
        row: &BatchRow<'_>,
        temperature: f32,
        floor: Option<f32>,
    ) -> Result<Option<WindowResult>> {
        let rows = std::slice::from_ref(row);
        let (run, beams) = self.prepare(audio, rows, temperature)?;
        Ok(self
            .run_rows(rows, &beams, &[temperature], run, None, &[floor])?
            .remove(0))
    }

    /// The tokens `decode` would start a window with: the previous text after `sot_prev` (at
    /// most half the context), then the start-of-transcript sequence. Returns them and the
    /// index of `sot` in them.
    pub(super) fn initial_tokens(&self, prompt: &[u32], sot_sequence: &[u32]) -> (Vec<u32>, usize) {
        let mut initial: Vec<u32> = Vec::new();
        if !prompt.is_empty() {
            let keep = self.model.decoder.max_len() / 2 - 1;
            initial.push(self.rules.special.sot_prev);
            initial.extend_from_slice(&prompt[prompt.len().saturating_sub(keep)..]);
        }
        let sot_index = initial.len();
        initial.extend_from_slice(sot_sequence);
        (initial, sot_index)
    }

    /// Whether `sampled` ends in a loop (see [`ends_in_repeat`]) and its text is already more
    /// repetitive than gzip ratio `threshold`, so that the window's decode fails the policy
    /// however it goes on.
    fn in_loop_beyond(&self, sampled: &[u32], threshold: f32) -> bool {
        let eot = self.rules.special.eot;
        let text: Vec<u32> = sampled.iter().copied().filter(|&t| t < eot).collect();
        if !ends_in_repeat(&text) {
            return false;
        }
        self.tokenizer
            .decode(&text, true)
            .is_ok_and(|text| compression_ratio(&text) > threshold)
    }

    fn result(
        &self,
        sampled: Vec<u32>,
        sum_logprob: f64,
        no_speech_prob: f32,
    ) -> Result<WindowResult> {
        let eot = self.rules.special.eot;
        let text_tokens: Vec<u32> = sampled.iter().copied().filter(|&t| t < eot).collect();
        let text = self
            .tokenizer
            .decode(&text_tokens, true)
            .map_err(|e| anyhow::anyhow!("cannot decode tokens: {e}"))?;
        Ok(WindowResult {
            avg_logprob: (sum_logprob / (sampled.len() + 1) as f64) as f32,
            compression_ratio: compression_ratio(&text),
            tokens: sampled,
            text,
            no_speech_prob,
            temperature: 0.0,
            final_temperature: 0.0,
        })
    }

    /// Decodes a batch of windows at once at one temperature (0: greedy, or beam search when a
    /// row's policy asks for beams; above: sampled, each row with its own seeded generator):
    /// `audio [b, frames, d]` holds one encoded window per row of `rows`. Each row keeps its
    /// own prompt, start sequence, token budget and logit rules; prompts of different lengths
    /// are left-padded and masked, each row at its own positions, and a row that ends leaves
    /// the batch while the others go on. Gives each row the tokens it gets alone (up to
    /// rounding in the batched matrix products; tested on real speech in tests/batch.rs).
    pub fn decode_batch(
        &self,
        audio: &Tensor,
        rows: &[BatchRow<'_>],
        temperature: f32,
    ) -> Result<Vec<WindowResult>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let (run, beams) = self.prepare(audio, rows, temperature)?;
        let floors = vec![None; rows.len()];
        self.run_rows(
            rows,
            &beams,
            &vec![temperature; rows.len()],
            run,
            None,
            &floors,
        )?
        .into_iter()
        .map(|r| r.ok_or_else(|| anyhow::anyhow!("a decode stopped early")))
        .collect()
    }

    /// Checks the rows against `audio [b, frames, d]` and runs their prompts through the
    /// decoder (see [`Self::start_rows`]); each row's number of sequences at `temperature`
    /// (its beam size at 0, else 1).
    fn prepare(
        &self,
        audio: &Tensor,
        rows: &[BatchRow<'_>],
        temperature: f32,
    ) -> Result<(Started, Vec<usize>)> {
        let b = rows.len();
        if audio.dim(0)? != b {
            anyhow::bail!("{} rows for {} encoded windows", b, audio.dim(0)?);
        }
        for r in rows {
            check_beam_size(r.policy.beam_size).map_err(anyhow::Error::msg)?;
        }
        let beams: Vec<usize> = rows
            .iter()
            .map(|r| {
                if temperature <= 0.0 {
                    r.policy.beam_size
                } else {
                    1
                }
            })
            .collect();
        let run = self.start_rows(audio, rows, beams.iter().sum())?;
        Ok((run, beams))
    }

    /// Beam search when a row has more than one sequence, else greedy decoding or sampling
    /// (see [`Self::greedy_or_sampled`], which `floors` are for).
    fn run_rows(
        &self,
        rows: &[BatchRow<'_>],
        beams: &[usize],
        temperatures: &[f32],
        run: Started,
        windows: Option<&[usize]>,
        floors: &[Option<f32>],
    ) -> Result<Vec<Option<WindowResult>>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        if beams.iter().any(|&k| k > 1) {
            return Ok(self
                .beam_search(rows, beams, run)?
                .into_iter()
                .map(Some)
                .collect());
        }
        self.greedy_or_sampled(rows, temperatures, run, windows, floors)
    }

    /// The prompt pass `run` for the rows `pick` (indices into its rows, repeats allowed): a
    /// row's cached prompt and projected audio serve each copy of it.
    fn select_started(&self, run: Started, pick: &[usize]) -> Result<Started> {
        let Started {
            mut state,
            logits,
            mut rows,
        } = run;
        let idx: Vec<u32> = pick.iter().map(|&r| r as u32).collect();
        let idx = Tensor::new(idx.as_slice(), &rows.device)?;
        state.select_rows(&idx)?;
        rows.keep_rows(pick);
        rows.picker = self
            .rules
            .picker(logits.dim(1)?, pick.len(), &rows.device)?;
        Ok(Started {
            state,
            logits: logits.index_select(&idx, 0)?,
            rows,
        })
    }

    /// Runs every row's prompt through the decoder: the state after it, the logits of each
    /// row's first token and its no-speech probability.
    fn start_rows(
        &self,
        audio: &Tensor,
        rows: &[BatchRow<'_>],
        most_rows: usize,
    ) -> Result<Started> {
        use candle_core::DType;
        let sp = self.rules.special;
        let dec = &self.model.decoder;
        let device = audio.device();
        let b = rows.len();
        let starts: Vec<(Vec<u32>, usize)> = rows
            .iter()
            .map(|r| self.initial_tokens(r.prompt, r.sot_sequence))
            .collect();
        let width = starts.iter().map(|(t, _)| t.len()).max().unwrap_or(0);
        let pads: Vec<usize> = starts.iter().map(|(t, _)| width - t.len()).collect();
        let mut tokens = Vec::with_capacity(b * width);
        let mut positions = Vec::with_capacity(b * width);
        let mut mask = Vec::with_capacity(b * width * width);
        for ((initial, _), &pad) in starts.iter().zip(&pads) {
            for j in 0..width {
                let real = j >= pad;
                tokens.push(if real { initial[j - pad] } else { sp.eot });
                positions.push(if real { (j - pad) as u32 } else { 0 });
                for k in 0..width {
                    // A padding query looks at itself only, so its softmax stays finite; a
                    // real one at the real tokens up to itself.
                    let open = if real { k >= pad && k <= j } else { k == j };
                    mask.push(if open { 0f32 } else { f32::NEG_INFINITY });
                }
            }
        }
        let mut state = dec.start(audio)?;
        let hidden = dec.forward_rows(
            &Tensor::from_vec(tokens, (b, width), device)?,
            &Tensor::from_vec(positions, (b, width), device)?,
            &Tensor::from_vec(mask, (b, 1, width, width), device)?,
            &mut state,
        )?;
        // The no-speech probability is read at each row's `sot`, the first prediction at its
        // last prompt token (the last column, since rows are left-padded).
        let d = hidden.dim(2)?;
        let mut pick: Vec<u32> = starts
            .iter()
            .zip(&pads)
            .enumerate()
            .map(|(r, ((_, sot), pad))| (r * width + pad + sot) as u32)
            .collect();
        pick.extend((0..b).map(|r| (r * width + width - 1) as u32));
        let picked = hidden
            .reshape((b * width, d))?
            .index_select(&Tensor::new(pick.as_slice(), device)?, 0)?;
        let first = dec
            .logits(&picked.unsqueeze(0)?)?
            .squeeze(0)?
            .to_dtype(DType::F32)?;
        let no_speech: Vec<f32> = candle_nn::ops::softmax_last_dim(&first.narrow(0, 0, b)?)?
            .narrow(1, sp.no_speech as usize, 1)?
            .flatten_all()?
            .to_vec1()?;
        let picker = self.rules.picker(first.dim(1)?, most_rows, device)?;
        let budget = rows
            .iter()
            .map(|r| {
                r.policy
                    .max_tokens
                    .unwrap_or(usize::MAX)
                    .min(dec.max_len() / 2)
            })
            .collect();
        Ok(Started {
            logits: first.narrow(0, b, b)?,
            state,
            rows: RowInfo {
                no_speech,
                prompt_len: starts.iter().map(|(t, _)| t.len()).collect(),
                pads,
                picker,
                budget,
                device: device.clone(),
            },
        })
    }

    /// `logits [n, vocab]` with the hotword bonus added for the rows whose history has begun
    /// a phrase.
    fn biased(&self, logits: Tensor, histories: &[&[u32]]) -> Result<Tensor> {
        let Some(bias) = self.rules.bias.filter(|b| b.bonus > 0.0) else {
            return Ok(logits);
        };
        // Most steps continue no phrase: the vocabulary-wide bonus row is only built when one
        // does.
        let boosts: Vec<Vec<u32>> = histories.iter().map(|h| bias.continuing(h)).collect();
        if boosts.iter().all(|b| b.is_empty()) {
            return Ok(logits);
        }
        let vocab = logits.dim(1)?;
        let mut add = vec![0f32; histories.len() * vocab];
        for (i, tokens) in boosts.iter().enumerate() {
            for &t in tokens.iter().filter(|&&t| (t as usize) < vocab) {
                add[i * vocab + t as usize] = bias.bonus;
            }
        }
        let add = Tensor::from_vec(add, (histories.len(), vocab), logits.device())?;
        Ok((logits + add)?)
    }

    /// Whether a sequence of row `r` (decoded under `policy`) stops where it is: its token
    /// budget or the decoder's context is spent, or it has fallen into a loop (see
    /// [`BatchRow::policy`]).
    fn must_stop(&self, policy: &FallbackPolicy, run: &RowInfo, r: usize, sampled: &[u32]) -> bool {
        let context = run.prompt_len[r] + sampled.len() - 1;
        if sampled.len() >= run.budget[r] || context >= self.model.decoder.max_len() {
            return true;
        }
        let may_stop = policy
            .no_speech_threshold
            .is_none_or(|th| run.no_speech[r] <= th);
        let looping = may_stop
            && policy
                .compression_ratio_threshold
                .is_some_and(|th| self.in_loop_beyond(sampled, th));
        if looping {
            tracing::debug!(tokens = sampled.len(), "decode stopped in a loop");
        }
        looping
    }

    /// One decoder step for the sequences in `state`: `last` is each one's newest token and
    /// `pads` its row's left padding. Returns the next logits `[n, vocab]` (F32).
    fn step(
        &self,
        state: &mut DecoderState,
        last: Vec<u32>,
        pads: &[usize],
        device: &candle_core::Device,
    ) -> Result<Tensor> {
        let dec = &self.model.decoder;
        let n = last.len();
        let cols = state.len + 1;
        let pos: Vec<u32> = pads.iter().map(|&p| (state.len - p) as u32).collect();
        let mask: Vec<f32> = pads
            .iter()
            .flat_map(|&p| (0..cols).map(move |k| if k >= p { 0f32 } else { f32::NEG_INFINITY }))
            .collect();
        let hidden = dec.forward_rows(
            &Tensor::from_vec(last, (n, 1), device)?,
            &Tensor::from_vec(pos, (n, 1), device)?,
            &Tensor::from_vec(mask, (n, 1, 1, cols), device)?,
            state,
        )?;
        Ok(dec
            .logits(&hidden)?
            .squeeze(1)?
            .to_dtype(candle_core::DType::F32)?)
    }

    /// Greedy decoding (every temperature 0) or sampling (every temperature above 0, each row
    /// at its own), the rows leaving the batch as they finish. `windows`: rows that are
    /// decodes of the same window at rising temperatures (the same value, in temperature
    /// order); once a window's first accepted decode is known (every decode of it at a lower
    /// temperature finished and was rejected), its decodes at higher temperatures stop and
    /// their results are `None`. Without `windows`, every row gets its result unless it has a
    /// floor.
    ///
    /// `floors[r]`: the average log-probability of the best rejected, loop-free decode of row
    /// `r`'s window so far (raised by its decodes in `windows` as they finish). A decode of
    /// the window is kept only when the policy accepts it or it beats that ([`Fallback`]); a
    /// decode's log-probability only falls as it goes on, and its average is divided by at
    /// most its token budget + 1, so once `sum / (budget + 1)` is below the floor it can be
    /// neither (a decode that might pass as silence excepted), and it stops with `None`. The
    /// decode kept is the one the full decodes would give. On 16 live tiny.en calls 8 of 81
    /// utterances passed at no temperature (sampled decodes averaging -2 to -5.7 against the
    /// greedy decode's -1.1), each of their decodes running on to its budget or a loop.
    fn greedy_or_sampled(
        &self,
        rows: &[BatchRow<'_>],
        temperatures: &[f32],
        run: Started,
        windows: Option<&[usize]>,
        floors: &[Option<f32>],
    ) -> Result<Vec<Option<WindowResult>>> {
        let sp = self.rules.special;
        let b = rows.len();
        let greedy = temperatures.iter().all(|&t| t <= 0.0);
        if temperatures.len() != b || (!greedy && temperatures.iter().any(|&t| t <= 0.0)) {
            anyhow::bail!("one temperature per row, all 0 (greedy) or all above 0 (sampled)");
        }
        if floors.len() != b {
            anyhow::bail!("one floor per row");
        }
        let mut floors = floors.to_vec();
        let Started {
            mut state,
            mut logits,
            rows: run,
        } = run;
        let picker = &run.picker;
        let mut pads = run.pads.clone();
        let mut sampled: Vec<Vec<u32>> = vec![Vec::new(); b];
        let mut sum_logprob = vec![0f64; b];
        let mut rngs: Vec<rand::rngs::StdRng> = rows
            .iter()
            .zip(temperatures)
            .map(|(r, t)| rand::rngs::StdRng::seed_from_u64(r.seed ^ t.to_bits() as u64))
            .collect();
        let mut results: Vec<Option<WindowResult>> = vec![None; b];
        // The decodes of each window, in temperature order.
        let mut members: Vec<Vec<usize>> = Vec::new();
        if let Some(windows) = windows {
            let mut seen: Vec<usize> = Vec::new();
            for (r, w) in windows.iter().enumerate() {
                match seen.iter().position(|x| x == w) {
                    Some(i) => members[i].push(r),
                    None => {
                        seen.push(*w);
                        members.push(vec![r]);
                    }
                }
            }
        }
        let mut stopped = vec![false; b];
        // The original row of each row still in the batch.
        let mut active: Vec<usize> = (0..b).collect();
        loop {
            let histories: Vec<&[u32]> = active.iter().map(|&r| sampled[r].as_slice()).collect();
            logits = self.biased(logits, &histories)?;
            let picks = if greedy {
                picker.pick(&self.rules, &logits, &histories)?
            } else {
                // Sampling draws from each row's whole distribution: those rows come to the
                // host, and each draws with its own generator, as it would alone.
                let masked: Vec<Vec<f32>> =
                    picker.masked(&self.rules, &logits, &histories)?.to_vec2()?;
                let mut mine: Vec<(&mut rand::rngs::StdRng, f32)> =
                    Vec::with_capacity(active.len());
                let mut want = active.iter().peekable();
                for (r, rng) in rngs.iter_mut().enumerate() {
                    if want.peek() == Some(&&r) {
                        mine.push((rng, temperatures[r]));
                        want.next();
                    }
                }
                masked
                    .into_iter()
                    .zip(mine)
                    .map(|(l, (rng, t))| {
                        let next = sample(&l, t, rng);
                        (next, log_softmax_vec(&l)[next as usize])
                    })
                    .collect()
            };
            if picks.iter().any(|&(_, lp)| lp.is_nan()) {
                return Err(damaged_weights());
            }
            let mut keep = Vec::with_capacity(active.len());
            for (i, &r) in active.iter().enumerate() {
                let (next, logprob) = picks[i];
                let finished = next == sp.eot || {
                    sum_logprob[r] += logprob as f64;
                    sampled[r].push(next);
                    self.must_stop(rows[r].policy, &run, r, &sampled[r])
                };
                if finished {
                    let s = std::mem::take(&mut sampled[r]);
                    results[r] = Some(WindowResult {
                        temperature: temperatures[r],
                        final_temperature: temperatures[r],
                        ..self.result(s, sum_logprob[r], run.no_speech[r])?
                    });
                } else {
                    keep.push(i);
                }
            }
            for window in &members {
                self.raise_floors(rows, window, &results, &mut floors);
                self.stop_settled(rows, window, &results, &mut stopped);
            }
            for &i in &keep {
                let r = active[i];
                if !stopped[r] && self.below_floor(&rows[r], &run, r, sum_logprob[r], floors[r]) {
                    tracing::debug!(
                        tokens = sampled[r].len(),
                        temperature = temperatures[r],
                        "decode stopped: it can no longer be kept"
                    );
                    stopped[r] = true;
                }
            }
            keep.retain(|&i| !stopped[active[i]]);
            if keep.is_empty() {
                break;
            }
            if keep.len() < active.len() {
                let idx: Vec<u32> = keep.iter().map(|&i| i as u32).collect();
                state.select_rows(&Tensor::new(idx.as_slice(), &run.device)?)?;
                active = keep.iter().map(|&i| active[i]).collect();
                pads = keep.iter().map(|&i| pads[i]).collect();
            }
            let last = active
                .iter()
                .map(|&r| *sampled[r].last().expect("sampled"))
                .collect();
            logits = self.step(&mut state, last, &pads, &run.device)?;
        }
        Ok(results)
    }

    /// Raises the floors of `window`'s decodes (see [`Self::greedy_or_sampled`]) to the best
    /// average log-probability of its finished, rejected, loop-free decodes.
    fn raise_floors(
        &self,
        rows: &[BatchRow<'_>],
        window: &[usize],
        results: &[Option<WindowResult>],
        floors: &mut [Option<f32>],
    ) {
        let best = window
            .iter()
            .filter_map(|&r| {
                let policy = rows[r].policy;
                results[r]
                    .as_ref()
                    .filter(|x| policy.loop_free(x) && !self.accepts(x, policy))
                    .map(|x| x.avg_logprob)
            })
            .reduce(f32::max);
        if let Some(best) = best {
            for &r in window {
                floors[r] = Some(floors[r].map_or(best, |f| f.max(best)));
            }
        }
    }

    /// Whether a decode of `row` whose log-probabilities sum to `sum` so far can no longer be
    /// kept over a rejected decode of average `floor` (see [`Self::greedy_or_sampled`]).
    fn below_floor(
        &self,
        row: &BatchRow<'_>,
        run: &RowInfo,
        r: usize,
        sum: f64,
        floor: Option<f32>,
    ) -> bool {
        let Some(floor) = floor else {
            return false;
        };
        let policy = row.policy;
        // Accepted as silence whatever its words: leave it be.
        let may_be_silence = policy.logprob_threshold.is_some()
            && policy
                .no_speech_threshold
                .is_some_and(|th| run.no_speech[r] > th);
        // The most tokens it may still reach (its budget, or the decoder's context).
        let most =
            run.budget[r].min((self.model.decoder.max_len() + 1).saturating_sub(run.prompt_len[r]));
        let best_average = (sum / (most + 1) as f64) as f32;
        !may_be_silence && best_average < floor
    }

    /// Marks the decodes of `window` (rows of one window, lowest temperature first) that need
    /// not go on: those after its first accepted decode, once every decode before that one
    /// has finished (and so was rejected).
    fn stop_settled(
        &self,
        rows: &[BatchRow<'_>],
        window: &[usize],
        results: &[Option<WindowResult>],
        stopped: &mut [bool],
    ) {
        for (i, &r) in window.iter().enumerate() {
            match &results[r] {
                // Stopped below its floor: rejected.
                None if stopped[r] => {}
                None => return,
                Some(result) if self.accepts(result, rows[r].policy) => {
                    for &later in &window[i + 1..] {
                        stopped[later] |= results[later].is_none();
                    }
                    return;
                }
                Some(_) => {}
            }
        }
    }

    /// Beam search at temperature 0, as openai-whisper's `BeamSearchDecoder` (decoding.py,
    /// patience 1) and faster-whisper's `beam_size`: each row `r` keeps its `beams[r]` likeliest
    /// sequences by summed log-probability; at each step every sequence offers its
    /// `beams[r] + 1` best next tokens (under the same logit rules as greedy decoding), a
    /// candidate ending in end-of-text joins the row's finished sequences, and the row is done
    /// once it has `beams[r]` of them. Of those, the one with the highest log-probability per
    /// token wins (openai's `MaximumLikelihoodRanker` without a length penalty). A sequence
    /// that reaches its token budget or falls into a loop stops, and counts only when fewer
    /// than `beams[r]` sequences finished. The sequences of one row share the row's encoded
    /// audio (its cross-attention keys are copied only when the rows' layout changes).
    fn beam_search(
        &self,
        rows: &[BatchRow<'_>],
        beams: &[usize],
        run: Started,
    ) -> Result<Vec<WindowResult>> {
        #[derive(Clone)]
        struct Hyp {
            row: usize,
            tokens: Vec<u32>,
            /// Summed log-probability of `tokens`.
            sum: f64,
            /// `sum` plus the end-of-text's log-probability, for finished sequences.
            ranked: f64,
        }
        let eot = self.rules.special.eot;
        let b = rows.len();
        let Started {
            mut state,
            mut logits,
            rows: run,
        } = run;
        let device = &run.device;
        let mut live: Vec<Hyp> = (0..b)
            .map(|row| Hyp {
                row,
                tokens: Vec::new(),
                sum: 0.0,
                ranked: 0.0,
            })
            .collect();
        let mut finished: Vec<Vec<Hyp>> = vec![Vec::new(); b];
        let mut stopped: Vec<Vec<Hyp>> = vec![Vec::new(); b];
        loop {
            let histories: Vec<&[u32]> = live.iter().map(|h| h.tokens.as_slice()).collect();
            logits = self.biased(logits, &histories)?;
            let masked = run.picker.masked(&self.rules, &logits, &histories)?;
            let logprobs: Vec<Vec<f32>> = masked
                .broadcast_sub(&log_sum_exp_rows(&masked)?)?
                .to_vec2()?;
            let mut next: Vec<Hyp> = Vec::new();
            let mut parents: Vec<u32> = Vec::new();
            let mut i = 0;
            while i < live.len() {
                let row = live[i].row;
                let end = i + live[i..].iter().take_while(|h| h.row == row).count();
                // (summed log-probability, parent, token)
                let mut candidates: Vec<(f64, usize, u32)> = Vec::new();
                for (j, h) in live.iter().enumerate().take(end).skip(i) {
                    let top = top_k(&logprobs[j], beams[row] + 1);
                    // A NaN anywhere in a row makes its log-sum NaN, and so every entry: no
                    // candidate at all (as when every logit is -inf).
                    if top.is_empty() {
                        return Err(damaged_weights());
                    }
                    for (t, lp) in top {
                        candidates.push((h.sum + lp as f64, j, t));
                    }
                }
                // Stable: equal scores keep the parent's order, then the token's.
                candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
                let mut saved = 0;
                for (score, j, t) in candidates {
                    if t == eot {
                        if finished[row].len() < beams[row] {
                            finished[row].push(Hyp {
                                ranked: score,
                                ..live[j].clone()
                            });
                        }
                        continue;
                    }
                    let mut tokens = live[j].tokens.clone();
                    tokens.push(t);
                    let h = Hyp {
                        row,
                        tokens,
                        sum: score,
                        ranked: score,
                    };
                    // A sequence that stops here (budget, context, loop) leaves its place in
                    // the beam to the next candidate.
                    if self.must_stop(rows[row].policy, &run, row, &h.tokens) {
                        stopped[row].push(h);
                        continue;
                    }
                    next.push(h);
                    parents.push(j as u32);
                    saved += 1;
                    if saved == beams[row] {
                        break;
                    }
                }
                i = end;
            }
            let mut keep: Vec<Hyp> = Vec::with_capacity(next.len());
            let mut keep_parents: Vec<u32> = Vec::with_capacity(next.len());
            for (h, p) in next.into_iter().zip(parents) {
                if finished[h.row].len() < beams[h.row] {
                    keep.push(h);
                    keep_parents.push(p);
                }
            }
            if keep.is_empty() {
                break;
            }
            // The cross-attention rows are the audio's: while each row keeps the same number of
            // sequences they stay where they are; otherwise each sequence takes its parent's.
            let same_layout =
                keep.len() == live.len() && keep.iter().zip(&live).all(|(a, b)| a.row == b.row);
            let self_rows = Tensor::new(keep_parents.as_slice(), device)?;
            let in_place = keep_parents
                .iter()
                .enumerate()
                .all(|(i, &p)| p as usize == i);
            if same_layout {
                if !in_place {
                    state.select_self_rows(&self_rows)?;
                }
            } else {
                state.select_rows(&self_rows)?;
            }
            let pads: Vec<usize> = keep.iter().map(|h| run.pads[h.row]).collect();
            let last = keep
                .iter()
                .map(|h| *h.tokens.last().expect("one"))
                .collect();
            live = keep;
            logits = self.step(&mut state, last, &pads, device)?;
        }
        (0..b)
            .map(|row| {
                let mut pool = std::mem::take(&mut finished[row]);
                if pool.len() < beams[row] {
                    let mut rest = std::mem::take(&mut stopped[row]);
                    rest.sort_by(|a, b| b.sum.total_cmp(&a.sum));
                    pool.extend(rest.into_iter().take(beams[row] - pool.len()));
                }
                let best = pool
                    .into_iter()
                    .map(|h| (h.ranked / h.tokens.len().max(1) as f64, h))
                    .max_by(|a, b| a.0.total_cmp(&b.0))
                    .map(|(_, h)| h);
                let Some(Hyp { tokens, sum, .. }) = best else {
                    return Err(damaged_weights());
                };
                Ok(WindowResult {
                    temperature: 0.0,
                    final_temperature: 0.0,
                    ..self.result(tokens, sum, run.no_speech[row])?
                })
            })
            .collect()
    }

    /// The most likely language for `audio`, among `candidates` (all when empty), and among
    /// all of Whisper's languages.
    pub fn detect_language(&self, audio: &Tensor, candidates: &[u32]) -> Result<LanguageGuess> {
        let found = self.detect_languages(audio, &[candidates])?;
        Ok(found[0])
    }

    /// `detect_language` for a batch: `audio [b, frames, d]`, one candidate list per row.
    pub fn detect_languages(
        &self,
        audio: &Tensor,
        candidates: &[&[u32]],
    ) -> Result<Vec<LanguageGuess>> {
        let dec = &self.model.decoder;
        let b = audio.dim(0)?;
        let mut state = dec.start(audio)?;
        let input = Tensor::from_vec(vec![self.rules.special.sot; b], (b, 1), audio.device())?;
        let hidden = dec.forward(&input, &mut state)?;
        let logits: Vec<Vec<f32>> = dec
            .logits(&hidden)?
            .squeeze(1)?
            .to_dtype(candle_core::DType::F32)?
            .to_vec2()?;
        let all: Vec<u32> = self
            .rules
            .special
            .languages
            .iter()
            .map(|(_, id)| *id)
            .collect();
        Ok(logits
            .iter()
            .zip(candidates)
            .map(|(logits, candidates)| {
                let pool = if candidates.is_empty() {
                    &all[..]
                } else {
                    candidates
                };
                let lang_logits: Vec<f32> = pool.iter().map(|&t| logits[t as usize]).collect();
                let probs = log_softmax_vec(&lang_logits);
                let best = argmax(&lang_logits) as usize;
                let all_logits: Vec<f32> = all.iter().map(|&t| logits[t as usize]).collect();
                let all_probs = log_softmax_vec(&all_logits);
                let overall = argmax(&all_logits) as usize;
                let candidates_prob = all
                    .iter()
                    .zip(&all_probs)
                    .filter(|(t, _)| pool.contains(t))
                    .map(|(_, lp)| lp.exp())
                    .sum();
                LanguageGuess {
                    token: pool[best],
                    prob: probs[best].exp(),
                    overall: all[overall],
                    overall_prob: all_probs[overall].exp(),
                    candidates_prob,
                }
            })
            .collect())
    }
}

/// A language detected from the first window (openai-whisper's `detect_language`: the
/// decoder's scores for the language tokens after start-of-transcript).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LanguageGuess {
    /// The most likely language token among the candidates, and its probability among them.
    pub token: u32,
    pub prob: f32,
    /// The most likely among all languages, and its probability among all: a call in French
    /// restricted to English and Mandarin is still heard as French here.
    pub overall: u32,
    pub overall_prob: f32,
    /// The candidates' share of the probability among all languages.
    pub candidates_prob: f32,
}

impl LogitRules<'_> {
    /// openai-whisper's logit filters, in its order: blank suppression at the first step,
    /// token suppression, then the timestamp rules (reference: `whisper/decoding.py`,
    /// `SuppressBlank`, `SuppressTokens`, `ApplyTimestampRules`). One row on the host: the
    /// reference that [`Picker`] (the same rules on a device, for a batch) is tested against.
    pub fn apply(&self, logits: &mut [f32], sampled: &[u32]) {
        let sp = self.special;
        let ninf = f32::NEG_INFINITY;
        let ts = sp.timestamp_begin as usize;
        if sampled.is_empty() {
            for &t in sp.space.iter().chain([&sp.eot]) {
                logits[t as usize] = ninf;
            }
        }
        for &t in self.suppress {
            if let Some(l) = logits.get_mut(t as usize) {
                *l = ninf;
            }
        }
        if !self.with_timestamps {
            for l in &mut logits[ts..] {
                *l = ninf;
            }
            return;
        }
        logits[sp.no_timestamps as usize] = ninf;
        let last_ts = sampled.last().is_some_and(|&t| sp.is_timestamp(t));
        let penultimate_ts = sampled.len() < 2 || sp.is_timestamp(sampled[sampled.len() - 2]);
        if last_ts {
            if penultimate_ts {
                for l in &mut logits[ts..] {
                    *l = ninf;
                }
            } else {
                for l in &mut logits[..sp.eot as usize] {
                    *l = ninf;
                }
            }
        }
        // Timestamps never go backwards (and a closing one may equal its opening one).
        if let Some(&last) = sampled.iter().rev().find(|&&t| sp.is_timestamp(t)) {
            let floor = if last_ts && !penultimate_ts {
                last
            } else {
                last + 1
            };
            let end = (floor as usize).min(logits.len());
            for l in &mut logits[ts..end] {
                *l = ninf;
            }
        }
        if sampled.is_empty() {
            for l in &mut logits[..ts] {
                *l = ninf;
            }
            if let Some(max_steps) = self.max_initial_timestamp_steps {
                let last_allowed = ts + max_steps as usize;
                for l in logits.iter_mut().skip(last_allowed + 1) {
                    *l = ninf;
                }
            }
        }
        // If all timestamps together are likelier than any single text token, take a timestamp.
        let logprobs = log_softmax_vec(logits);
        let ts_mass = log_sum_exp(&logprobs[ts..]);
        let best_text = logprobs[..ts].iter().cloned().fold(ninf, f32::max);
        if ts_mass > best_text {
            for l in &mut logits[..ts] {
                *l = ninf;
            }
        }
    }
}

/// The logit rules of [`LogitRules::apply`] as tensor operations on a whole batch, so that a
/// GPU hands back a few numbers per row and step instead of the whole vocabulary (51,865
/// floats a row: at 256 rows, 53 MB a step through the host). Each row's rules reduce to at
/// most two masked token ranges (from its own history), the always-suppressed tokens, the
/// first step's blanks, and the choice between the best token and the best timestamp.
#[derive(Clone)]
pub struct Picker {
    /// 0 or -inf per token: the suppressed tokens (and all timestamps when they are off).
    always: Tensor,
    /// 1 for the tokens suppressed at the first step only (blanks, end of text).
    first_only: Tensor,
    /// Token ids 0..vocab, [1, vocab].
    ids: Tensor,
    /// -inf, [rows, vocab], narrowed to the rows still decoding.
    ninf: Tensor,
    vocab: usize,
}

impl LogitRules<'_> {
    /// The rules for batches of up to `rows` rows over a vocabulary of `vocab` tokens.
    pub fn picker(
        &self,
        vocab: usize,
        rows: usize,
        device: &candle_core::Device,
    ) -> Result<Picker> {
        let sp = self.special;
        let ts = (sp.timestamp_begin as usize).min(vocab);
        let mut always = vec![0f32; vocab];
        for &t in self.suppress {
            if let Some(l) = always.get_mut(t as usize) {
                *l = f32::NEG_INFINITY;
            }
        }
        if self.with_timestamps {
            if let Some(l) = always.get_mut(sp.no_timestamps as usize) {
                *l = f32::NEG_INFINITY;
            }
        } else {
            always[ts..].fill(f32::NEG_INFINITY);
        }
        let mut first_only = vec![0u8; vocab];
        for &t in sp.space.iter().chain([&sp.eot]) {
            if let Some(f) = first_only.get_mut(t as usize) {
                *f = 1;
            }
        }
        Ok(Picker {
            always: Tensor::from_vec(always, (1, vocab), device)?,
            first_only: Tensor::from_vec(first_only, (1, vocab), device)?,
            ids: Tensor::arange(0u32, vocab as u32, device)?.unsqueeze(0)?,
            ninf: Tensor::full(f32::NEG_INFINITY, (rows.max(1), vocab), device)?,
            vocab,
        })
    }

    /// The two token ranges [start, end) a row's history masks (empty ranges when none):
    /// the timestamp pairing and ordering rules of [`Self::apply`].
    fn masked_ranges(&self, sampled: &[u32], vocab: usize) -> [u32; 4] {
        let sp = self.special;
        let v = vocab as u32;
        let ts = sp.timestamp_begin.min(v);
        if !self.with_timestamps {
            return [0, 0, 0, 0];
        }
        if sampled.is_empty() {
            let late = match self.max_initial_timestamp_steps {
                Some(max) => (ts + max + 1).min(v),
                None => v,
            };
            return [0, ts, late, v];
        }
        let last_ts = sampled.last().is_some_and(|&t| sp.is_timestamp(t));
        let penultimate_ts = sampled.len() < 2 || sp.is_timestamp(sampled[sampled.len() - 2]);
        let pairing = match (last_ts, penultimate_ts) {
            (true, true) => [ts, v],
            (true, false) => [0, sp.eot.min(v)],
            _ => [0, 0],
        };
        let order = match sampled.iter().rev().find(|&&t| sp.is_timestamp(t)) {
            Some(&last) => {
                let floor = if last_ts && !penultimate_ts {
                    last
                } else {
                    last + 1
                };
                [ts, floor.min(v)]
            }
            None => [0, 0],
        };
        [pairing[0], pairing[1], order[0], order[1]]
    }
}

impl Picker {
    /// `logits [rows, vocab]` (F32) with every rule of [`LogitRules::apply`] applied for each
    /// row's sampled tokens so far: masked tokens are -inf.
    pub fn masked(
        &self,
        rules: &LogitRules<'_>,
        logits: &Tensor,
        sampled: &[&[u32]],
    ) -> Result<Tensor> {
        let n = sampled.len();
        let device = logits.device();
        let ts = (rules.special.timestamp_begin as usize).min(self.vocab);
        let mut ranges = Vec::with_capacity(n * 4);
        let mut first = Vec::with_capacity(n);
        for s in sampled {
            ranges.extend(rules.masked_ranges(s, self.vocab));
            first.push(u8::from(s.is_empty()));
        }
        let ranges = Tensor::from_vec(ranges, (n, 4), device)?;
        let inside = |k: usize| -> Result<Tensor> {
            let lo = ranges.narrow(1, k, 1)?;
            let hi = ranges.narrow(1, k + 1, 1)?;
            Ok((self.ids.broadcast_ge(&lo)? * self.ids.broadcast_lt(&hi)?)?)
        };
        let first = Tensor::from_vec(first, (n, 1), device)?;
        let masked =
            ((inside(0)? + inside(2)?)? + self.first_only.broadcast_mul(&first)?)?.ne(0u8)?;
        let ninf = self.ninf.narrow(0, 0, n)?;
        let x = masked.where_cond(&ninf, &logits.broadcast_add(&self.always)?)?;
        if !rules.with_timestamps {
            return Ok(x);
        }
        // If all timestamps together are likelier than any single text token, take a
        // timestamp: the text tokens of those rows are masked too.
        let text_max = x.narrow(1, 0, ts)?.max_keepdim(1)?;
        let ts_mass = log_sum_exp_rows(&x.narrow(1, ts, self.vocab - ts)?)?;
        let forced = ts_mass.gt(&text_max)?;
        let text = self.ids.lt(ts as u32)?;
        let hide = text.broadcast_mul(&forced)?;
        Ok(hide.where_cond(&ninf, &x)?)
    }

    /// For `logits [rows, vocab]` (F32) and each row's sampled tokens so far: the greedy
    /// choice under the rules and its log-probability (under the masked distribution, as
    /// [`LogitRules::apply`] then a log-softmax give). Only these two numbers per row leave
    /// the device.
    pub fn pick(
        &self,
        rules: &LogitRules<'_>,
        logits: &Tensor,
        sampled: &[&[u32]],
    ) -> Result<Vec<(u32, f32)>> {
        let x = self.masked(rules, logits, sampled)?;
        let best = x.argmax_keepdim(1)?;
        let columns = [
            best.to_dtype(candle_core::DType::F32)?,
            (x.gather(&best, 1)? - log_sum_exp_rows(&x)?)?,
        ];
        let table: Vec<Vec<f32>> = Tensor::cat(&columns, 1)?.to_vec2()?;
        Ok(table.into_iter().map(|c| (c[0] as u32, c[1])).collect())
    }
}

/// log(sum(exp(x))) over each row of `[rows, n]`, as `[rows, 1]`; a row of -inf gives -inf.
fn log_sum_exp_rows(t: &Tensor) -> Result<Tensor> {
    let m = t.max_keepdim(1)?.maximum(-1e30f64)?;
    Ok((t.broadcast_sub(&m)?.exp()?.sum_keepdim(1)?.log()? + m)?)
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

fn log_sum_exp(v: &[f32]) -> f32 {
    let m = v.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    if m == f32::NEG_INFINITY {
        return m;
    }
    m + v.iter().map(|x| (x - m).exp()).sum::<f32>().ln()
}

pub fn log_softmax_vec(v: &[f32]) -> Vec<f32> {
    let lse = log_sum_exp(v);
    v.iter().map(|x| x - lse).collect()
}

fn sample(logits: &[f32], temperature: f32, rng: &mut impl Rng) -> u32 {
    let scaled: Vec<f32> = logits.iter().map(|l| l / temperature).collect();
    let lp = log_softmax_vec(&scaled);
    let mut u: f32 = rng.random();
    for (i, l) in lp.iter().enumerate() {
        u -= l.exp();
        if u <= 0.0 {
            return i as u32;
        }
    }
    argmax(logits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asr::tokens::SpecialTokens;

    #[test]
    fn compression_ratio_flags_loops_not_speech() {
        let normal =
            "Hello, this is the pharmacy calling to remind you that your prescription is ready.";
        let looped = "I'm sorry. ".repeat(30);
        assert!(compression_ratio(normal) < 2.0);
        assert!(compression_ratio(&looped) > 2.4);
        assert_eq!(compression_ratio(""), 0.0);
    }

    #[test]
    fn a_run_of_tokens_three_times_over_ends_in_a_repeat() {
        assert!(ends_in_repeat(&[7, 7, 7]));
        assert!(ends_in_repeat(&[1, 2, 3, 4, 2, 3, 4, 2, 3, 4]));
        // Twice is speech ("no, no"), and a repeat must be at the end.
        assert!(!ends_in_repeat(&[2, 3, 2, 3]));
        assert!(!ends_in_repeat(&[2, 3, 2, 3, 2, 3, 9]));
        assert!(!ends_in_repeat(&[1, 2, 3, 4, 5, 6]));
        assert!(!ends_in_repeat(&[]));
    }

    #[test]
    fn when_no_temperature_passes_the_likeliest_loop_free_result_is_kept() {
        let policy = FallbackPolicy::default();
        let result = |temperature: f32, compression_ratio: f32, avg_logprob: f32| WindowResult {
            tokens: vec![],
            text: String::new(),
            avg_logprob,
            no_speech_prob: 0.1,
            temperature,
            compression_ratio,
            final_temperature: temperature,
        };
        // What a bundled sample's piece gave: greedy just under the log-probability line,
        // the samples above it worse and worse. The last is openai-whisper's pick.
        let tries = [
            result(0.0, 1.21, -1.10),
            result(0.2, 1.24, -1.09),
            result(0.4, 1.16, -1.34),
            result(1.0, 1.42, -4.60),
        ];
        let best = tries
            .iter()
            .reduce(|b, r| if policy.prefer(r, b) { r } else { b })
            .unwrap();
        assert_eq!(best.temperature, 0.2);
        // A loop loses to any loop-free result, however likely the loop.
        let looped = result(0.0, 9.9, -0.05);
        assert!(policy.prefer(&tries[3], &looped));
        assert!(!policy.prefer(&looped, &tries[3]));
        // Between two loops, the likelier.
        assert!(policy.prefer(&looped, &result(0.2, 12.0, -0.1)));
    }

    #[test]
    fn log_softmax_sums_to_one_and_survives_minus_infinity() {
        let lp = log_softmax_vec(&[1.0, 2.0, f32::NEG_INFINITY, 0.5]);
        let total: f32 = lp.iter().map(|x| x.exp()).sum();
        assert!((total - 1.0).abs() < 1e-5);
        assert_eq!(lp[2], f32::NEG_INFINITY);
    }

    /// A toy vocabulary laid out like Whisper's: text 0..10, eot 10, sot 11, languages 12..14,
    /// translate 14, transcribe 15, sot_lm 16, sot_prev 17, no_speech 18, no_timestamps 19,
    /// timestamps from 20.
    fn toy() -> SpecialTokens {
        SpecialTokens {
            eot: 10,
            sot: 11,
            translate: 14,
            transcribe: 15,
            sot_lm: 16,
            sot_prev: 17,
            no_speech: 18,
            no_timestamps: 19,
            timestamp_begin: 20,
            languages: vec![("en".into(), 12), ("zh".into(), 13)],
            space: vec![3],
        }
    }

    fn allowed(rules: &LogitRules, logits: &[f32], sampled: &[u32]) -> Vec<u32> {
        let mut l = logits.to_vec();
        rules.apply(&mut l, sampled);
        (0..l.len() as u32)
            .filter(|&i| l[i as usize] > f32::NEG_INFINITY)
            .collect()
    }

    #[test]
    fn timestamp_rules_cover_each_decoder_edge_case() {
        let sp = toy();
        let rules = LogitRules {
            special: &sp,
            suppress: &[7],
            with_timestamps: true,
            max_initial_timestamp_steps: Some(2),
            bias: None,
        };
        let flat = vec![0.0f32; 30];
        // First token: a timestamp no later than the initial maximum.
        assert_eq!(allowed(&rules, &flat, &[]), vec![20, 21, 22]);
        // After the opening timestamp: text, never a suppressed token or another timestamp.
        let after_open = allowed(&rules, &flat, &[21]);
        assert!(
            after_open.contains(&0) && after_open.iter().all(|&t| t < 20),
            "{after_open:?}"
        );
        assert!(!after_open.contains(&7) && !after_open.contains(&19));
        // Inside a segment: text, or a closing timestamp after the opening one.
        let mut text_likely = flat.clone();
        text_likely[..10].fill(3.0);
        let inside = allowed(&rules, &text_likely, &[21, 0]);
        assert!(
            inside.contains(&0) && inside.contains(&22) && !inside.contains(&21),
            "{inside:?}"
        );
        // After text and a closing timestamp: eot, or the next opening timestamp, which may
        // equal the closing one but not go back.
        let after_pair = allowed(&rules, &flat, &[21, 0, 23]);
        assert!(after_pair.iter().all(|&t| t >= 10), "{after_pair:?}");
        assert!(after_pair.contains(&23) && !after_pair.contains(&22));
        // Two timestamps in a row: the next must be text or end.
        let after_two = allowed(&rules, &flat, &[21, 0, 23, 23]);
        assert!(after_two.iter().all(|&t| t < 20), "{after_two:?}");
        // Blank and eot are suppressed at the very start only.
        let no_ts = LogitRules {
            with_timestamps: false,
            ..rules
        };
        let first = allowed(&no_ts, &flat, &[]);
        assert!(!first.contains(&3) && !first.contains(&10) && !first.contains(&20));
        assert!(allowed(&no_ts, &flat, &[1]).contains(&10));
    }

    #[test]
    fn a_likely_timestamp_mass_forces_a_timestamp() {
        let sp = toy();
        let rules = LogitRules {
            special: &sp,
            suppress: &[],
            with_timestamps: true,
            max_initial_timestamp_steps: None,
            bias: None,
        };
        // Text token 0 is the single best, but the timestamps together outweigh it.
        let mut logits = vec![-10.0f32; 30];
        logits[0] = 1.0;
        for l in &mut logits[22..30] {
            *l = 0.5;
        }
        let ok = allowed(&rules, &logits, &[21, 5]);
        assert!(ok.iter().all(|&t| t >= 20), "{ok:?}");
    }

    #[test]
    fn the_tensor_rules_pick_what_the_vector_rules_pick() {
        let sp = toy();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let histories: Vec<Vec<u32>> = vec![
            vec![],
            vec![21],
            vec![21, 0],
            vec![21, 0, 23],
            vec![21, 0, 23, 23],
            vec![21, 4, 5, 6],
            vec![1, 2],
            vec![22, 3, 25, 25, 8],
        ];
        for with_timestamps in [true, false] {
            let rules = LogitRules {
                special: &sp,
                suppress: &[7, 16],
                with_timestamps,
                max_initial_timestamp_steps: Some(2),
                bias: None,
            };
            let picker = rules
                .picker(30, histories.len(), &candle_core::Device::Cpu)
                .unwrap();
            for round in 0..200 {
                // Text-heavy and timestamp-heavy distributions, so both choices are taken.
                let rows: Vec<Vec<f32>> = histories
                    .iter()
                    .map(|_| {
                        (0..30)
                            .map(|t| {
                                let bias = if (t >= 20) == (round % 2 == 0) {
                                    2.0
                                } else {
                                    0.0
                                };
                                rng.random::<f32>() * 4.0 + bias
                            })
                            .collect()
                    })
                    .collect();
                let flat: Vec<f32> = rows.iter().flatten().copied().collect();
                let logits =
                    Tensor::from_vec(flat, (rows.len(), 30), &candle_core::Device::Cpu).unwrap();
                let refs: Vec<&[u32]> = histories.iter().map(Vec::as_slice).collect();
                let got = picker.pick(&rules, &logits, &refs).unwrap();
                for ((row, h), (next, logprob)) in rows.iter().zip(&histories).zip(got) {
                    let mut l = row.clone();
                    rules.apply(&mut l, h);
                    let want = argmax(&l);
                    let want_lp = log_softmax_vec(&l)[want as usize];
                    assert_eq!(next, want, "history {h:?}, timestamps {with_timestamps}");
                    assert!((logprob - want_lp).abs() < 1e-5, "{logprob} vs {want_lp}");
                }
            }
        }
    }

    #[test]
    fn sampling_at_low_temperature_picks_the_peak() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let logits = [0.0, 5.0, 1.0];
        assert!((0..50).all(|_| sample(&logits, 0.05, &mut rng) == 1));
    }

    #[test]
    fn top_k_keeps_the_largest_finite_values_in_order() {
        let v = [0.5, f32::NEG_INFINITY, 2.0, f32::NAN, 2.0, -1.0, 3.0];
        assert_eq!(top_k(&v, 3), vec![(6, 3.0), (2, 2.0), (4, 2.0)]);
        assert_eq!(top_k(&v, 10).len(), 5, "-inf and NaN are never candidates");
        assert!(top_k(&v, 0).is_empty());
        assert!(top_k(&[f32::NEG_INFINITY; 4], 2).is_empty());
    }
}
