//! What the engine asks of speech recognition, and Whisper's answer to it.
//!
//! The engine hands over a batch of utterances (one per call, so each call stays in order) and
//! gets text and a language back. Choosing the language is the recogniser's job: the detector
//! only reads what it is given.

use std::sync::Arc;

use anyhow::Result;

use crate::asr::{written_language, TranscribeOptions, Transcriber, Transcript};
use crate::call::{CallId, Segment};

/// One utterance to hear.
pub struct HearRequest<'a> {
    pub call_id: &'a CallId,
    pub party: usize,
    /// 16 kHz mono samples.
    pub samples: &'a [f32],
    /// Seconds at the start of `samples` that were heard already: the end of the previous
    /// utterance, which was cut inside speech at the maximum length. They are context for the
    /// words at the cut; what ends within them is not heard again (see [`CONTEXT_MARGIN_S`]).
    /// 0 for an utterance that starts after a pause.
    pub context_s: f64,
    /// Voice activity chose these samples as speech (false with voice activity off).
    pub speech: bool,
    /// The utterance is still being spoken: its last word may be cut; one quick pass is enough.
    pub partial: bool,
    /// Several utterances of unbroken speech joined (a review): heard as `scan` hears a
    /// recording, voice activity removing the pauses inside.
    pub review: bool,
    /// What this party said before (the end of it), as context.
    pub prompt: Option<&'a str>,
    /// The party's language, once settled; `None` lets the recogniser choose.
    pub language: Option<&'a str>,
    /// Decode in the model's running batch with other calls' utterances (continuous
    /// batching, `EngineConfig::joint_decoding`). Changes when the words come, never which
    /// words (up to the rounding of batched arithmetic).
    pub join_running: bool,
}

/// What was heard.
#[derive(Debug, Clone, PartialEq)]
pub struct Heard {
    pub text: String,
    pub language: Option<String>,
    /// The language is sure enough to keep for the party's later utterances (detected, and the
    /// words are written in it).
    pub settled: bool,
    pub avg_logprob: f32,
    pub no_speech_prob: f32,
    /// Seconds before the utterance's own audio (before `context_s`) where the words begin:
    /// above 0 when a sentence runs across the cut and was heard whole, its first words then
    /// repeating the end of the previous utterance's text; else 0.
    pub reaches_back_s: f64,
    /// Whisper's segments of `text`, their times in seconds from the start of the request's
    /// samples (context included). May be empty (a recogniser that gives no times): the text
    /// is then one stretch over the whole request.
    pub segments: Vec<Segment>,
}

/// A segment heard in a request with context is kept only if it ends this many seconds past
/// the context: Whisper's timestamps are 20 ms steps but land a few tenths off, and a
/// sentence that ends right at the cut was heard whole with the previous utterance.
pub const CONTEXT_MARGIN_S: f64 = 0.3;

/// How many of the fallback policy's temperatures an utterance is decoded at: 0, 0.2 and 0.4
/// of openai-whisper's six, all at once when the greedy decode is rejected; the others only
/// when every one of those decodes is a loop (`FallbackPolicy::loop_temperatures`).
///
/// Why: rejected windows set the live transcript lag's tail. At 16 tiny.en calls 13 of 81
/// utterances were rejected at temperature 0 (average log-probability -1.01 to -1.22 against
/// the -1.0 threshold); a decode at 0.2 passed for 4, at 0.4 for 1, and none above, while the
/// 8 that no temperature passed (their greedy decode kept) paid all six. Truncating changed no
/// word on 164 live-sized utterances (tiny.en and base on the 12 English telephone clips, base
/// on 20 Mandarin calls of benches/mandarin_calls/unseen_y, cut at 6 s; 9 fell back; a probe
/// run once, 2026-12-06); in the bench one utterance of 81 lost its words (its kept decode had
/// been a 0.6 sample that happened to score above its greedy decode). `bench live --model
/// tiny.en --calls 16 --stagger-s 3`, alternating (load 1.7-2.4), lag p95: six temperatures,
/// one after another while others waited (before) 2.63, 2.81 s; three, the same way 1.86,
/// 1.78 s; three at once (now) 1.59, 1.59 s. Reviews, heard as recordings are, keep all six.
pub const UTTERANCE_TEMPERATURES: usize = 3;

/// Speech recognition for the engine: one instance serves every call, from several threads.
pub trait Recogniser: Send + Sync {
    fn describe(&self) -> String;
    /// One answer per request, in order: `Ok(None)` when nothing was said. The requests are
    /// of different calls and are heard together (one encoder call, one batched decode).
    fn hear(&self, batch: &[HearRequest<'_>]) -> Vec<Result<Option<Heard>>>;
}

/// Whisper on candle, hearing utterances of a few seconds.
pub struct WhisperRecogniser {
    transcriber: Arc<Transcriber>,
    options: TranscribeOptions,
    /// For reviews: `options` with voice activity as configured.
    review_options: TranscribeOptions,
}

impl WhisperRecogniser {
    /// `options.candidate_languages` limits detection (and the script check's second hearing)
    /// to the languages worth hearing. Utterances are speech already: voice activity inside
    /// `transcribe` is turned off. Without `short_context_frames` a 15 s encoder window is used:
    /// utterances are at most a few seconds, and it halves the cost of each without raising
    /// the error rate on the test clips (tiny.en mean WER 0.185 vs 0.170, base 0.200 vs 0.252).
    pub fn new(transcriber: Arc<Transcriber>, options: TranscribeOptions) -> Self {
        // Reviews keep voice activity, which takes the pauses out as it does for a file; they
        // keep the 15 s window where they fit in it: on the Mandarin tuning rendering, 30 s
        // windows flagged the same calls.
        let mut review_options = Self::utterance_options(options.clone());
        review_options.vad = options.vad.clone();
        review_options.policy = options.policy.clone();
        Self {
            transcriber,
            options: Self::utterance_options(options),
            review_options,
        }
    }

    /// `options` as utterances are heard with them (see [`Self::new`]).
    pub fn utterance_options(mut options: TranscribeOptions) -> TranscribeOptions {
        options.vad = None;
        options.short_context_frames.get_or_insert(1500);
        let policy = &mut options.policy;
        let first = UTTERANCE_TEMPERATURES.min(policy.temperatures.len());
        let rest = policy.temperatures.split_off(first);
        policy.loop_temperatures.splice(0..0, rest);
        policy.fallback_at_once = true;
        options
    }

    /// The options one request is heard with: its language, its context, a token budget.
    fn options_for(&self, request: &HearRequest<'_>) -> TranscribeOptions {
        let mut heard = if request.review {
            self.review_options.clone()
        } else {
            self.options.clone()
        };
        if heard.language.is_none() {
            heard.language = request.language.map(str::to_owned);
        }
        if let Some(p) = request.prompt {
            heard.initial_prompt = Some(p.to_owned());
        }
        heard.known_speech = request.speech;
        heard.join_running = request.join_running;
        // Speech runs at 3-5 tokens a second; far more is a hallucination loop.
        let seconds = request.samples.len() as f64 / 16_000.0;
        heard.policy.max_tokens = Some(16 + (seconds * 10.0) as usize);
        if request.partial {
            // Its last word is cut anyway, and a fallback's extra passes (or a beam's extra
            // rows) would hold up the finished utterances behind it.
            heard.policy.temperatures.truncate(1);
            heard.policy.beam_size = 1;
        }
        heard
    }

    /// Turns a transcript into the answer, hearing the utterance again in the language its
    /// words are written in when detection contradicts them.
    fn answer(
        &self,
        request: &HearRequest<'_>,
        mut heard: TranscribeOptions,
        t: Result<Transcript>,
    ) -> Result<Option<Heard>> {
        let mut t = t?;
        let multilingual = self.transcriber.is_multilingual();
        // On a few seconds of audio Whisper's language guess can contradict the script it then
        // writes (English detected, Han characters out). The script is the better witness:
        // hear the utterance again in that language, if it is one worth hearing.
        let written = written_language(&t.text());
        if heard.language.is_none()
            && multilingual
            && t.language.as_deref().is_some_and(|l| l != written)
            && heard.candidate_languages.iter().any(|c| c == written)
        {
            heard.language = Some(written.to_owned());
            match self.transcriber.transcribe(request.samples, &heard) {
                Ok(again) => t = again,
                Err(e) => {
                    tracing::warn!(call = %request.call_id, "second hearing failed: {e:#}")
                }
            }
        }
        if request.context_s > 0.0 {
            // The words that end inside the context were the previous utterance's.
            t.segments
                .retain(|s| s.end_s > request.context_s + CONTEXT_MARGIN_S);
        }
        let text = t.text();
        if text.trim().is_empty() {
            return Ok(None);
        }
        // Keep the language for the party only when the words agree with it: a first utterance
        // detected as English but written in Han characters is a misdetection, and keeping it
        // would make every later utterance garbage.
        let settled = multilingual
            && t.language
                .as_deref()
                .is_some_and(|l| l == written_language(&text));
        let first = t.segments.first();
        let segments = t
            .segments
            .iter()
            .filter(|s| !s.text.trim().is_empty())
            .cloned()
            .collect();
        Ok(Some(Heard {
            segments,
            settled,
            avg_logprob: first.map_or(0.0, |s| s.avg_logprob),
            no_speech_prob: first.map_or(0.0, |s| s.no_speech_prob),
            reaches_back_s: first.map_or(0.0, |s| (request.context_s - s.start_s).max(0.0)),
            language: t.language,
            text,
        }))
    }
}

impl Recogniser for WhisperRecogniser {
    fn describe(&self) -> String {
        format!("whisper {}", self.transcriber.name)
    }

    fn hear(&self, batch: &[HearRequest<'_>]) -> Vec<Result<Option<Heard>>> {
        let options: Vec<TranscribeOptions> = batch.iter().map(|r| self.options_for(r)).collect();
        let items: Vec<(&[f32], &TranscribeOptions)> =
            batch.iter().map(|r| r.samples).zip(&options).collect();
        let transcripts = self.transcriber.transcribe_batch(&items);
        batch
            .iter()
            .zip(options)
            .zip(transcripts)
            .map(|((r, o), t)| self.answer(r, o, t))
            .collect()
    }
}
