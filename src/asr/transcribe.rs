//! Long-form transcription: 30 s windows that move by what was decoded, carrying the previous
//! text as context, openai-whisper's segment timing and silence skipping.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;
use serde::Serialize;
use tokenizers::Tokenizer;

use super::bias::HotwordBias;
use super::decode::{
    BatchRow, FallbackPolicy, JointDecodes, LogitRules, WindowDecoder, WindowResult,
};
use super::device::ComputeType;
use super::mel::{LogMel, MelSpectrogram, HOP, SAMPLE_RATE, WINDOW_FRAMES};
use super::rescore::VocabularyRescorer;

/// Removed gaps at least this long (seconds) end a window: speech on either side is heard in
/// separate windows, as it would be without voice activity (a robocall played twice 3 s apart
/// was otherwise one window of repeated text, rejected as a loop at every temperature).
pub(super) const WINDOW_BREAK_GAP_S: f64 = 2.0;
use super::model::{Config, Whisper};
use super::tokens::{SpecialTokens, TIME_PRECISION};
use crate::audio::vad::{speech_regions, SpeechOnly, VadConfig};
pub use crate::call::Segment;
use crate::model_store::weights::WeightFile;
use crate::model_store::ModelFiles;

#[derive(Debug, Clone, Serialize)]
pub struct Transcript {
    pub language: Option<String>,
    pub duration_s: f64,
    pub segments: Vec<Segment>,
    /// The language the speech most likely is, when detection was limited to candidates
    /// (the phrase packs' languages) and the languages outside them are together more likely
    /// than the candidates (over 0.5 of the probability among all of Whisper's): the call is
    /// in a language the detector does not cover.
    pub uncovered_language: Option<String>,
}

impl Transcript {
    pub fn text(&self) -> String {
        self.segments
            .iter()
            .map(|s| s.text.trim())
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[derive(Debug, Clone)]
pub struct TranscribeOptions {
    /// Force a language ("en", "zh"); `None` detects it (multilingual models only).
    pub language: Option<String>,
    /// Limit detection to these languages (empty: any).
    pub candidate_languages: Vec<String>,
    pub initial_prompt: Option<String>,
    pub condition_on_previous_text: bool,
    pub with_timestamps: bool,
    pub policy: FallbackPolicy,
    pub seed: u64,
    /// Transcribe only what voice activity detection calls speech (`None`: everything).
    pub vad: Option<VadConfig>,
    /// Audio this short (in mel frames, 100 per second) is encoded in a window of this many
    /// frames instead of the full 30 s: the encoder's cost falls with its input. For live
    /// utterances and the short speech pieces of recordings (the CLI's default, see
    /// `config::DEFAULT_SHORT_CONTEXT_S`); `None` always encodes 30 s, as Whisper was trained.
    pub short_context_frames: Option<usize>,
    /// The audio is speech already (a live utterance voice activity cut out): as with `vad`,
    /// Whisper's no-speech guess never throws a window of it away whole, and the confidence
    /// floor decides whether its words count as evidence. Without it, the live path lost a
    /// whole 6 s utterance of the police scam sample (base, no-speech above 0.6).
    pub known_speech: bool,
    /// A window's greedy decode joins the model's running batch of other callers' windows
    /// (continuous batching, [`JointDecodes`]) instead of stepping a batch of its own: for
    /// the live engine, whose recognisers hear one or two utterances each at a time.
    pub join_running: bool,
}

impl Default for TranscribeOptions {
    fn default() -> Self {
        Self {
            language: None,
            candidate_languages: Vec::new(),
            initial_prompt: None,
            condition_on_previous_text: true,
            with_timestamps: true,
            policy: FallbackPolicy::default(),
            seed: 0,
            vad: Some(VadConfig::default()),
            short_context_frames: None,
            known_speech: false,
            join_running: false,
        }
    }
}

/// A loaded model, ready to transcribe many recordings; shareable across threads.
pub struct Transcriber {
    pub model: Whisper,
    pub tokenizer: Tokenizer,
    pub special: SpecialTokens,
    pub mel: MelSpectrogram,
    pub device: Device,
    pub dtype: DType,
    /// The precision it runs in: `compute` as asked, with `auto` resolved for the device.
    pub compute: ComputeType,
    suppress: Vec<u32>,
    /// Phrases whose continuation the decoder is pushed towards (none unless set).
    hotwords: Option<HotwordBias>,
    /// Phrases tried in place of the spans that sound like them (none unless set).
    rescorer: Option<VocabularyRescorer>,
    pub name: String,
    /// Batches whose first windows failed together and were heard one by one instead.
    batches_failed: std::sync::atomic::AtomicU64,
    /// The decodes running now, which windows heard with `join_running` join.
    joint: JointDecodes,
}

impl Transcriber {
    /// Loads the model in the precision `ComputeType::Auto` picks for `device`.
    pub fn load(files: &ModelFiles, device: Device) -> Result<Self> {
        Self::load_as(files, device, ComputeType::Auto)
    }

    /// Loads the model on `device` in `compute` precision (weights are converted on load).
    pub fn load_as(files: &ModelFiles, device: Device, compute: ComputeType) -> Result<Self> {
        let config_text = std::fs::read_to_string(files.config())
            .with_context(|| format!("cannot read {}", files.config().display()))?;
        let config: Config = serde_json::from_str(&config_text)
            .with_context(|| format!("{}: not a Whisper config", files.config().display()))?;
        let tokenizer = Tokenizer::from_file(files.tokenizer())
            .map_err(|e| anyhow::anyhow!("{}: {e}", files.tokenizer().display()))?;
        let special = SpecialTokens::from_tokenizer(&tokenizer)?;
        let dtype = compute.dtype_on(&device)?;
        let compute = compute.resolve_on(&device);
        // Read tensor by tensor, not memory-mapped: see model_store::weights.
        let vb = WeightFile::open(&files.weights())
            .with_context(|| format!("{}: unreadable weights", files.weights().display()))?
            .into_var_builder(dtype, &device);
        let model = Whisper::load(&config, vb, compute.quant_on(&device)).with_context(|| {
            format!(
                "{}: weights do not fit the config",
                files.weights().display()
            )
        })?;
        let mut suppress = config.suppress_tokens.clone();
        suppress.extend([
            special.transcribe,
            special.translate,
            special.sot,
            special.sot_prev,
            special.sot_lm,
            special.no_speech,
        ]);
        suppress.sort_unstable();
        suppress.dedup();
        Ok(Self {
            mel: MelSpectrogram::new(config.num_mel_bins),
            model,
            tokenizer,
            special,
            device,
            dtype,
            compute,
            suppress,
            hotwords: None,
            rescorer: None,
            name: files.name.clone(),
            batches_failed: Default::default(),
            joint: JointDecodes::default(),
        })
    }

    /// Pushes the decoder to finish `phrases` once it has begun one, with `bonus` added to the
    /// logits of the tokens that continue it ([`HotwordBias`]); an empty list turns it off.
    pub fn set_hotwords(&mut self, phrases: &[String], bonus: f32) -> Result<()> {
        self.hotwords = if phrases.is_empty() {
            None
        } else {
            Some(HotwordBias::new(phrases, &self.tokenizer, bonus)?)
        };
        Ok(())
    }

    /// Tries `phrases` in place of the spans of each window's transcript that sound like
    /// them, keeping those the decoder finds within `margin` nats of its own
    /// ([`VocabularyRescorer`]); an empty list turns it off.
    pub fn set_rescoring(&mut self, phrases: &[String], margin: f32) -> Result<()> {
        self.rescorer = if phrases.is_empty() {
            None
        } else {
            Some(VocabularyRescorer::new(phrases, &self.tokenizer, margin)?)
        };
        Ok(())
    }

    /// `result` with the rescorer's changes, if one is set (see [`Self::set_rescoring`]). A
    /// rescoring that fails keeps the decode as it was: it is a second opinion, never a reason
    /// to lose a window.
    fn rescored(
        &self,
        audio: &Tensor,
        prompt: &[u32],
        sot_sequence: &[u32],
        mut result: WindowResult,
    ) -> WindowResult {
        let Some(rescorer) = &self.rescorer else {
            return result;
        };
        let (initial, _) = self
            .window_decoder(false, false)
            .initial_tokens(prompt, sot_sequence);
        let eot = self.special.eot;
        let tokens: Vec<u32> = result
            .tokens
            .iter()
            .copied()
            .filter(|&t| t != eot)
            .collect();
        match rescorer.rescore(&self.model, &self.tokenizer, audio, &initial, &tokens, eot) {
            Ok(Some(changed)) => {
                let text: Vec<u32> = changed.iter().copied().filter(|&t| t < eot).collect();
                match self.tokenizer.decode(&text, true) {
                    Ok(t) => {
                        result.text = t;
                        result.tokens = changed;
                    }
                    Err(e) => tracing::warn!("rescoring kept the decode: {e}"),
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("rescoring kept the decode: {e:#}"),
        }
        result
    }

    pub fn is_multilingual(&self) -> bool {
        self.model.config.is_multilingual()
    }

    /// Windows heard with `join_running` that joined a decode already running for others
    /// ([`JointDecodes::rows_joined`]).
    pub fn rows_joined(&self) -> u64 {
        self.joint.rows_joined()
    }

    /// How many batches [`Self::transcribe_batch`] could not decode together (each was then
    /// heard one recording at a time, with the same words but none of the batch's saving).
    pub fn batches_failed(&self) -> u64 {
        self.batches_failed
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn window_decoder(&self, with_timestamps: bool, join: bool) -> WindowDecoder<'_> {
        WindowDecoder {
            model: &self.model,
            tokenizer: &self.tokenizer,
            rules: LogitRules {
                special: &self.special,
                suppress: &self.suppress,
                with_timestamps,
                max_initial_timestamp_steps: Some((1.0 / TIME_PRECISION).round() as u32),
                bias: self.hotwords.as_ref(),
            },
            joint: join.then_some(&self.joint),
        }
    }

    /// Runs the encoder on one window of `WINDOW_FRAMES` frames starting at `start`.
    pub fn encode_window(&self, mel: &LogMel, start: usize) -> Result<Tensor> {
        self.encode_frames(mel, start, WINDOW_FRAMES)
    }

    /// Runs the encoder on `frames` (even, at most `WINDOW_FRAMES`) frames from `start`.
    pub fn encode_frames(&self, mel: &LogMel, start: usize, frames: usize) -> Result<Tensor> {
        self.encode_one(mel.window_of(start, frames), mel.n_mels, frames)
    }

    /// Runs the encoder on one window's log-mel data, `[n_mels * frames]`.
    fn encode_one(&self, data: Vec<f32>, n_mels: usize, frames: usize) -> Result<Tensor> {
        self.encode_windows(data, 1, n_mels, frames)
    }

    /// Runs the encoder on `windows` windows' log-mel data, `[windows * n_mels * frames]`:
    /// `[windows, frames / 2, d]`.
    fn encode_windows(
        &self,
        data: Vec<f32>,
        windows: usize,
        n_mels: usize,
        frames: usize,
    ) -> Result<Tensor> {
        let x = Tensor::from_vec(data, (windows, n_mels, frames), &self.device)?
            .to_dtype(self.model_dtype())?;
        Ok(self.model.encoder.forward(&x)?)
    }

    fn model_dtype(&self) -> DType {
        self.dtype
    }

    fn encode_text(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .tokenizer
            .encode(text, false)
            .map_err(|e| anyhow::anyhow!("cannot tokenize {text:?}: {e}"))?
            .get_ids()
            .to_vec())
    }

    /// Candidate language tokens for detection, or the forced one; `Ok(None)` for an
    /// English-only model.
    fn language_plan(&self, opts: &TranscribeOptions) -> Result<LanguagePlan> {
        if !self.is_multilingual() {
            if let Some(l) = opts.language.as_deref().filter(|l| *l != "en") {
                bail!("model {} is English-only; --language {l} needs a multilingual model such as base", self.name);
            }
            return Ok(LanguagePlan::EnglishOnly);
        }
        let token_of = |code: &str| {
            self.special
                .language_token(code)
                .with_context(|| format!("unknown language code {code:?}"))
        };
        if let Some(code) = &opts.language {
            return Ok(LanguagePlan::Known(token_of(code)?));
        }
        Ok(LanguagePlan::Detect(
            opts.candidate_languages
                .iter()
                .map(|c| token_of(c))
                .collect::<Result<Vec<_>>>()?,
        ))
    }

    /// Transcribes 16 kHz mono samples.
    pub fn transcribe(&self, samples: &[f32], opts: &TranscribeOptions) -> Result<Transcript> {
        let mut t = self.transcribe_batch(&[(samples, opts)]);
        t.pop().expect("one answer per recording")
    }

    /// Transcribes several recordings at once: windows of different recordings go through the
    /// encoder and the decoder (greedy or beam search) together (`batch` rows per model call;
    /// the rest of each recording, and any window that needs a temperature fallback, is heard
    /// alone). One answer per recording, in order. For the short utterances of live calls each
    /// recording is one window, so the whole batch is one encoder call and one batched decode.
    pub fn transcribe_batch(
        &self,
        items: &[(&[f32], &TranscribeOptions)],
    ) -> Vec<Result<Transcript>> {
        // Voice activity first: only speech is heard, and times are mapped back afterwards.
        let prepared: Vec<(Option<SpeechOnly>, f64)> = items
            .par_iter()
            .map(|(samples, opts)| {
                let duration_s = samples.len() as f64 / SAMPLE_RATE as f64;
                let speech = opts.vad.as_ref().map(|vad| {
                    let regions = speech_regions(samples, vad);
                    SpeechOnly::new(samples, &regions)
                });
                (speech, duration_s)
            })
            .collect();
        // Mel spectrograms of a large batch take longer than its encoder call on a GPU: they
        // are computed on all cores.
        let mut forms: Vec<Result<LongForm>> = items
            .par_iter()
            .zip(&prepared)
            .map(|((samples, opts), (speech, _))| self.long_form_of(samples, speech.as_ref(), opts))
            .collect();
        let waiting: Vec<usize> = (0..forms.len())
            .filter(|&i| forms[i].as_ref().is_ok_and(|f| !f.done()))
            .collect();
        if waiting.len() > 1 {
            let mut batch: Vec<&mut LongForm> = Vec::with_capacity(waiting.len());
            let mut batch_opts: Vec<&TranscribeOptions> = Vec::with_capacity(waiting.len());
            for (form, (_, opts)) in forms.iter_mut().zip(items) {
                match form {
                    Ok(f) if !f.done() => {
                        batch.push(f);
                        batch_opts.push(opts);
                    }
                    _ => {}
                }
            }
            if let Err(e) = self.windows_together(&mut batch, &batch_opts) {
                // The batch failed as a whole (out of device memory, say): each recording is
                // heard alone below, so one bad row cannot sink the others.
                tracing::warn!("batched decode failed, hearing one by one: {e:#}");
                self.batches_failed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                for &i in &waiting {
                    forms[i] = self.long_form_of(items[i].0, prepared[i].0.as_ref(), items[i].1);
                }
            }
        }
        forms
            .into_iter()
            .zip(items)
            .zip(prepared)
            .map(|((form, (_, opts)), (speech, duration_s))| {
                let mut form = form?;
                while !form.done() {
                    self.next_window(&mut form, opts)?;
                }
                let mut t = form.finish(opts);
                if let Some(speech) = speech {
                    t.segments = map_to_original(&speech, std::mem::take(&mut t.segments));
                    t.duration_s = duration_s;
                }
                Ok(t)
            })
            .collect()
    }

    /// [`long_form`](Self::long_form) of the speech voice activity kept (or of all the
    /// samples), with a window boundary at every join where a long stretch was removed.
    pub(super) fn long_form_of(
        &self,
        samples: &[f32],
        speech: Option<&SpeechOnly>,
        opts: &TranscribeOptions,
    ) -> Result<LongForm> {
        let Some(speech) = speech else {
            return self.long_form(samples, opts);
        };
        let mut form = self.long_form(&speech.samples, opts)?;
        form.speech_only = true;
        form.stops = speech
            .joins_after_gaps(WINDOW_BREAK_GAP_S)
            .into_iter()
            .map(|t| (t * SAMPLE_RATE as f64 / HOP as f64).round() as usize)
            .collect();
        Ok(form)
    }

    /// The state of one recording's transcription before its first window.
    fn long_form(&self, samples: &[f32], opts: &TranscribeOptions) -> Result<LongForm> {
        let mel = self.mel.log_mel(samples);
        let prompt_tokens: Vec<u32> = match &opts.initial_prompt {
            Some(p) if !p.trim().is_empty() => self.encode_text(&format!(" {}", p.trim()))?,
            _ => Vec::new(),
        };
        // A shortened window only where the whole recording fits in it with a second to spare.
        let window = match opts.short_context_frames {
            Some(f) if f % 2 == 0 && f < WINDOW_FRAMES && mel.content_frames + 100 <= f => f,
            _ => WINDOW_FRAMES,
        };
        Ok(LongForm {
            duration_s: samples.len() as f64 / SAMPLE_RATE as f64,
            mel,
            window,
            plan: self.language_plan(opts)?,
            language: None,
            uncovered_language: None,
            settled: false,
            stops: Vec::new(),
            speech_only: opts.known_speech,
            sot_sequence: vec![self.special.sot],
            prompt_tokens,
            prompt_reset_since: 0,
            segments: Vec::new(),
            seek: 0,
        })
    }

    /// Sets the language and start sequence once the first window's language is known.
    /// Keeps the language heard outside the candidates, when it is more likely than not.
    fn note_uncovered(&self, form: &mut LongForm, guess: &super::decode::LanguageGuess) {
        tracing::debug!(
            overall = self.special.language_code(guess.overall),
            overall_prob = guess.overall_prob,
            candidates_prob = guess.candidates_prob,
            "most likely language of all"
        );
        // Cantonese is written in Han characters and read by the Mandarin pack.
        let related = self.special.language_code(guess.overall) == Some("yue")
            && self.special.language_code(guess.token) == Some("zh");
        if guess.overall != guess.token && guess.candidates_prob < 0.5 && !related {
            form.uncovered_language = self.special.language_code(guess.overall).map(str::to_owned);
        }
    }

    fn settle_language(&self, form: &mut LongForm, token: Option<u32>, opts: &TranscribeOptions) {
        let sp = &self.special;
        if let Some(lang) = token {
            form.language = sp.language_code(lang).map(str::to_owned);
            form.sot_sequence.extend([lang, sp.transcribe]);
        } else {
            form.language = Some("en".to_owned());
        }
        if !opts.with_timestamps {
            form.sot_sequence.push(sp.no_timestamps);
        }
        form.settled = true;
    }

    /// Encodes, decodes (with fallback) and takes in the window at `form.seek`.
    pub(super) fn next_window(&self, form: &mut LongForm, opts: &TranscribeOptions) -> Result<()> {
        let audio = self.encode_one(form.window_data(), form.mel.n_mels, form.window)?;
        if !form.settled {
            let token = match &form.plan {
                LanguagePlan::EnglishOnly => None,
                LanguagePlan::Known(t) => Some(*t),
                LanguagePlan::Detect(candidates) => {
                    let guess = self
                        .window_decoder(true, false)
                        .detect_language(&audio, candidates)?;
                    tracing::debug!(
                        language = self.special.language_code(guess.token),
                        prob = guess.prob,
                        "language detected"
                    );
                    self.note_uncovered(form, &guess);
                    Some(guess.token)
                }
            };
            self.settle_language(form, token, opts);
        }
        let result = self
            .window_decoder(opts.with_timestamps, opts.join_running)
            .decode_with_fallback(
                &audio,
                &form.prompt_tokens[form.prompt_reset_since..],
                &form.sot_sequence,
                &opts.policy,
                opts.seed.wrapping_add(form.seek as u64),
            )?;
        let result = self.rescored(
            &audio,
            &form.prompt_tokens[form.prompt_reset_since..],
            &form.sot_sequence,
            result,
        );
        self.take_window(form, result, opts)
    }

    /// The next window of each of `forms` (none done), through the encoder and the decoder
    /// (greedy or beam search) together; windows of different lengths go in separate batches.
    /// A form's first window also chooses its language (detection of the rows that need it,
    /// together). `opts[i]` is `forms[i]`'s. Errors: encoding, detection or decoding failed for
    /// the batch as a whole (a form may then have its language chosen, and no window taken).
    pub(super) fn windows_together(
        &self,
        forms: &mut [&mut LongForm],
        opts: &[&TranscribeOptions],
    ) -> Result<()> {
        let mut by_window: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
        for (i, f) in forms.iter().enumerate() {
            by_window.entry(f.window).or_default().push(i);
        }
        for (window, rows) in by_window {
            let audio = if self.device.is_cpu() {
                // On the CPU the encoder is bound by arithmetic: a batch of windows costs what
                // they cost one by one (or more), while its activations take the batch's
                // memory at once. Only the decoder's steps gain from rows together. `bench
                // throughput --model tiny.en --batch 8`, batched / one by one: 14.2-14.3 /
                // 14.6-14.8 audio s per s, peak RSS 464 / 381 MB.
                let one: Vec<Tensor> = rows
                    .iter()
                    .map(|&i| self.encode_one(forms[i].window_data(), self.mel.n_mels(), window))
                    .collect::<Result<_>>()?;
                Tensor::cat(&one, 0)?
            } else {
                let mut data = Vec::with_capacity(rows.len() * self.mel.n_mels() * window);
                for &i in &rows {
                    data.extend(forms[i].window_data());
                }
                self.encode_windows(data, rows.len(), self.mel.n_mels(), window)?
            };
            // Languages, for the forms still to choose theirs: known, English-only, or
            // detected for the rows that need it, together.
            let unsettled: Vec<usize> = (0..rows.len())
                .filter(|&k| !forms[rows[k]].settled)
                .collect();
            let detect: Vec<usize> = unsettled
                .iter()
                .copied()
                .filter(|&k| matches!(forms[rows[k]].plan, LanguagePlan::Detect(_)))
                .collect();
            let mut tokens: Vec<Option<u32>> = rows
                .iter()
                .map(|&i| match forms[i].plan {
                    LanguagePlan::Known(t) => Some(t),
                    _ => None,
                })
                .collect();
            if !detect.is_empty() {
                let idx: Vec<u32> = detect.iter().map(|&k| k as u32).collect();
                let sub = audio.index_select(&Tensor::new(idx.as_slice(), &self.device)?, 0)?;
                let candidates: Vec<&[u32]> = detect
                    .iter()
                    .map(|&k| match &forms[rows[k]].plan {
                        LanguagePlan::Detect(c) => c.as_slice(),
                        _ => &[],
                    })
                    .collect();
                let found = self
                    .window_decoder(true, false)
                    .detect_languages(&sub, &candidates)?;
                for (&k, guess) in detect.iter().zip(found) {
                    tokens[k] = Some(guess.token);
                    self.note_uncovered(forms[rows[k]], &guess);
                }
            }
            for &k in &unsettled {
                let i = rows[k];
                self.settle_language(forms[i], tokens[k], opts[i]);
            }
            // Temperature fallback: every row first decodes at its first temperature, together
            // with the rows of the same first temperature and timestamp rule; the rows the
            // policy rejects decode at all their remaining temperatures at once
            // (`decode_with_fallback_batch`).
            let mut decoded: Vec<Option<WindowResult>> = vec![None; rows.len()];
            let mut groups: std::collections::BTreeMap<(u32, bool, bool), Vec<usize>> =
                Default::default();
            for (k, &i) in rows.iter().enumerate() {
                let o = opts[i];
                if let Some(t) = o.policy.temperatures.first() {
                    groups
                        .entry((t.to_bits(), o.with_timestamps, o.join_running))
                        .or_default()
                        .push(k);
                }
            }
            for ((_, timestamps, join), ks) in groups {
                let idx: Vec<u32> = ks.iter().map(|&k| k as u32).collect();
                let sub = audio.index_select(&Tensor::new(idx.as_slice(), &self.device)?, 0)?;
                let decoder = self.window_decoder(timestamps, join);
                let batch: Vec<BatchRow> = ks
                    .iter()
                    .map(|&k| {
                        let f = &forms[rows[k]];
                        let o = opts[rows[k]];
                        BatchRow {
                            prompt: &f.prompt_tokens[f.prompt_reset_since..],
                            sot_sequence: &f.sot_sequence,
                            policy: &o.policy,
                            // As `next_window` seeds a window heard alone.
                            seed: o.seed.wrapping_add(f.seek as u64),
                        }
                    })
                    .collect();
                let results = decoder.decode_with_fallback_batch(&sub, &batch)?;
                for ((j, &k), result) in ks.iter().enumerate().zip(results) {
                    let row = sub.narrow(0, j, 1)?;
                    let f = &forms[rows[k]];
                    decoded[k] = Some(self.rescored(
                        &row,
                        &f.prompt_tokens[f.prompt_reset_since..],
                        &f.sot_sequence,
                        result,
                    ));
                }
            }
            for (k, result) in decoded.into_iter().enumerate() {
                let i = rows[k];
                match result {
                    Some(result) => self.take_window(forms[i], result, opts[i])?,
                    // A policy without temperatures: heard alone, which says why.
                    None => self.next_window(forms[i], opts[i])?,
                }
            }
        }
        Ok(())
    }

    /// Takes in one decoded window: silence skipping, segments from the timestamp pairs, the
    /// next seek position and the prompt for the next window (openai-whisper's long-form
    /// rules).
    fn take_window(
        &self,
        form: &mut LongForm,
        result: WindowResult,
        opts: &TranscribeOptions,
    ) -> Result<()> {
        let sp = &self.special;
        let frame_s = HOP as f64 / SAMPLE_RATE as f64;
        let limit = form.limit();
        let segment_frames = form.window.min(limit - form.seek);
        let time_offset = form.seek as f64 * frame_s;
        let segment_duration = segment_frames as f64 * frame_s;
        if let Some(th) = opts.policy.no_speech_threshold {
            let unlikely_text = !opts
                .policy
                .logprob_threshold
                .is_some_and(|lt| result.avg_logprob > lt);
            let certain = opts
                .policy
                .certain_no_speech_threshold
                .is_some_and(|c| result.no_speech_prob > c);
            let silent = result.no_speech_prob > th && (unlikely_text || certain);
            // Voice activity kept only speech: a window of it is never thrown away whole
            // (Whisper's no-speech guess is unreliable on speech from the first sample, and a
            // Mandarin scam was lost so). What it says is kept, and the confidence floor
            // decides whether it counts as evidence.
            if silent && form.speech_only {
                tracing::debug!(
                    no_speech_prob = result.no_speech_prob,
                    "window kept: voice activity found speech in it"
                );
            } else if silent {
                form.seek += segment_frames;
                return Ok(());
            }
        }
        let tokens = &result.tokens;
        // The count only: token ids decode back to what was said, which stays out of logs.
        tracing::debug!(tokens = tokens.len(), "window decoded");
        let is_ts: Vec<bool> = tokens.iter().map(|&t| sp.is_timestamp(t)).collect();
        let single_ending = is_ts.len() >= 2 && !is_ts[is_ts.len() - 2] && is_ts[is_ts.len() - 1];
        let mut cuts: Vec<usize> = (1..tokens.len())
            .filter(|&i| is_ts[i - 1] && is_ts[i])
            .collect();
        let mut new_segments = Vec::new();
        if !cuts.is_empty() {
            if single_ending {
                cuts.push(tokens.len());
            }
            let mut last = 0;
            for &cut in &cuts {
                let slice = &tokens[last..cut];
                new_segments.push(self.segment(
                    slice,
                    time_offset + sp.timestamp_seconds(slice[0]),
                    time_offset + sp.timestamp_seconds(slice[slice.len() - 1]),
                    &result,
                )?);
                last = cut;
            }
            if single_ending {
                form.seek += segment_frames;
            } else {
                let last_ts = sp.timestamp_seconds(tokens[last - 1]);
                // Timestamps step 20 ms = 2 mel frames.
                form.seek = (form.seek + ((last_ts / frame_s).round() as usize).max(1)).min(limit);
            }
        } else {
            let mut dur = segment_duration;
            if let Some(&t) = tokens.iter().rev().find(|&&t| sp.is_timestamp(t)) {
                if t != sp.timestamp_begin {
                    dur = sp.timestamp_seconds(t);
                }
            }
            new_segments.push(self.segment(tokens, time_offset, time_offset + dur, &result)?);
            form.seek += segment_frames;
        }
        let duration_s = form.duration_s;
        for s in new_segments {
            // Text placed after the end of the audio (a fallback's stray timestamps) was not
            // said there.
            if s.text.trim().is_empty() || s.start_s >= duration_s {
                continue;
            }
            form.segments.push(Segment {
                end_s: s.end_s.min(duration_s.max(s.start_s)),
                ..s
            });
        }
        form.prompt_tokens
            .extend(tokens.iter().copied().filter(|&t| t < sp.eot));
        if !opts.condition_on_previous_text || result.final_temperature > 0.5 {
            form.prompt_reset_since = form.prompt_tokens.len();
        }
        Ok(())
    }

    fn segment(
        &self,
        tokens: &[u32],
        start_s: f64,
        end_s: f64,
        result: &super::decode::WindowResult,
    ) -> Result<Segment> {
        let text_tokens: Vec<u32> = tokens
            .iter()
            .copied()
            .filter(|&t| t < self.special.eot)
            .collect();
        let text = self
            .tokenizer
            .decode(&text_tokens, true)
            .map_err(|e| anyhow::anyhow!("cannot decode tokens: {e}"))?;
        Ok(Segment::heard(
            round_ms(start_s),
            round_ms(end_s),
            text,
            result.avg_logprob,
            result.no_speech_prob,
            result.temperature,
        ))
    }
}

/// How a recording's language is chosen.
enum LanguagePlan {
    EnglishOnly,
    Known(u32),
    /// Detected on the first window, among these (all when empty).
    Detect(Vec<u32>),
}

/// One recording's long-form transcription in progress.
pub(super) struct LongForm {
    mel: LogMel,
    duration_s: f64,
    window: usize,
    plan: LanguagePlan,
    language: Option<String>,
    /// See [`Transcript::uncovered_language`].
    uncovered_language: Option<String>,
    /// The language is chosen and the start sequence complete.
    settled: bool,
    /// Mel frames where a window must end (joins where voice activity removed a long gap).
    stops: Vec<usize>,
    /// The audio is speech voice activity kept (every window holds some).
    speech_only: bool,
    sot_sequence: Vec<u32>,
    prompt_tokens: Vec<u32>,
    prompt_reset_since: usize,
    segments: Vec<Segment>,
    /// The next window starts at this mel frame.
    seek: usize,
}

impl LongForm {
    pub(super) fn done(&self) -> bool {
        self.seek >= self.mel.content_frames
    }

    /// Where the window at `seek` must end: the next stop, or the end of the audio.
    fn limit(&self) -> usize {
        self.stops
            .iter()
            .copied()
            .find(|&f| f > self.seek)
            .unwrap_or(self.mel.content_frames)
            .min(self.mel.content_frames)
    }

    /// The window at `seek`, silent past [`limit`](Self::limit): `[n_mels * window]`.
    fn window_data(&self) -> Vec<f32> {
        self.mel.window_until(self.seek, self.window, self.limit())
    }

    /// What the next piece of the same recording carries on with: the language, the start
    /// sequence and the text so far as the prompt (its last 224 tokens, all a window can
    /// use). The segments are taken too.
    pub(super) fn into_carry(mut self) -> Carry {
        let keep = self.prompt_tokens.len().saturating_sub(PROMPT_KEEP);
        self.prompt_tokens.drain(..keep);
        Carry {
            plan: self.plan,
            language: self.language,
            uncovered_language: self.uncovered_language,
            settled: self.settled,
            sot_sequence: self.sot_sequence,
            prompt_reset_since: self.prompt_reset_since.saturating_sub(keep),
            prompt_tokens: self.prompt_tokens,
            segments: self.segments,
        }
    }

    /// Goes on from where the previous piece of the recording ended (its segments are not
    /// taken: the caller placed them).
    pub(super) fn carry_on(&mut self, c: Carry) {
        self.plan = c.plan;
        self.language = c.language;
        self.uncovered_language = c.uncovered_language;
        self.settled = c.settled;
        self.sot_sequence = c.sot_sequence;
        self.prompt_tokens = c.prompt_tokens;
        self.prompt_reset_since = c.prompt_reset_since;
    }

    fn finish(self, opts: &TranscribeOptions) -> Transcript {
        // A language guessed from silence means nothing; a forced one stays.
        let language = if self.segments.is_empty() {
            opts.language.clone()
        } else {
            self.language
        };
        let uncovered_language = self
            .uncovered_language
            .filter(|_| !self.segments.is_empty());
        Transcript {
            language,
            duration_s: self.duration_s,
            segments: self.segments,
            uncovered_language,
        }
    }
}

/// Tokens of earlier text kept as the prompt from one piece of a recording to the next: a
/// window's prompt holds at most half the text context (224 of 448 for every Whisper size).
const PROMPT_KEEP: usize = 224;

/// The state one piece of a recording hands to the next (see [`LongForm::into_carry`]).
pub(super) struct Carry {
    plan: LanguagePlan,
    pub(super) language: Option<String>,
    pub(super) uncovered_language: Option<String>,
    settled: bool,
    sot_sequence: Vec<u32>,
    prompt_tokens: Vec<u32>,
    prompt_reset_since: usize,
    pub(super) segments: Vec<Segment>,
}

/// Segments heard on the joined speech, in the original recording's time. A segment that runs
/// across a join (Whisper's timestamps are per segment, not per word) is first split there, its
/// text in proportion, so that no words are placed in the silence or hold music that voice
/// activity removed between the two stretches.
pub(super) fn map_to_original(speech: &SpeechOnly, segments: Vec<Segment>) -> Vec<Segment> {
    let joins = speech.joins();
    let mut out = Vec::with_capacity(segments.len());
    for seg in segments {
        let mut rest = seg;
        for &j in &joins {
            if j <= rest.start_s || j >= rest.end_s {
                continue;
            }
            let (before, after) =
                crate::audio::vad::split_text_at(&rest.text, rest.start_s, rest.end_s, j);
            if !before.trim().is_empty() {
                let mut piece = rest.clone();
                piece.text = before;
                piece.end_s = j;
                out.push(piece);
            }
            rest.text = after;
            rest.start_s = j;
        }
        if !rest.text.trim().is_empty() {
            out.push(rest);
        }
    }
    for s in &mut out {
        let end = speech.original_end(s.end_s);
        s.start_s = round_ms(speech.original_time(s.start_s).min(end));
        s.end_s = round_ms(end.max(s.start_s));
    }
    out
}

pub(super) fn round_ms(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}
