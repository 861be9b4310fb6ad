//! Long-form transcription: 30 s windows that move by what was decoded, carrying the previous
//! text as context, openai-whisper's segment timing and silence skipping.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::Serialize;
use tokenizers::Tokenizer;

use super::decode::{FallbackPolicy, LogitRules, WindowDecoder};
use super::mel::{LogMel, MelSpectrogram, HOP, SAMPLE_RATE, WINDOW_FRAMES};
use super::model::{Config, Whisper};
use super::tokens::{SpecialTokens, TIME_PRECISION};
use crate::audio::vad::{speech_regions, SpeechOnly, VadConfig};
pub use crate::call::Segment;
use crate::model_store::ModelFiles;

#[derive(Debug, Clone, Serialize)]
pub struct Transcript {
    pub language: Option<String>,
    pub duration_s: f64,
    pub segments: Vec<Segment>,
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
    /// frames instead of the full 30 s: the encoder's cost falls with its input. For the
    /// short utterances of live calls; `None` always encodes 30 s, as Whisper was trained.
    pub short_context_frames: Option<usize>,
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
    suppress: Vec<u32>,
    pub name: String,
}

/// Which device to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    #[default]
    Cpu,
    Cuda,
    Metal,
}

impl DeviceChoice {
    /// The names it is written as (in configs and on the command line).
    pub const NAMES: [&'static str; 3] = ["cpu", "cuda", "metal"];

    pub fn open(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda => Device::new_cuda(0).context(
                "cannot use CUDA: this build lacks the `cuda` feature, or no NVIDIA driver/GPU is present",
            ),
            Self::Metal => Device::new_metal(0)
                .context("cannot use Metal: this build lacks the `metal` feature, or this is not a Mac"),
        }
    }
}

impl Transcriber {
    pub fn load(files: &ModelFiles, device: Device) -> Result<Self> {
        let config_text = std::fs::read_to_string(files.config())
            .with_context(|| format!("cannot read {}", files.config().display()))?;
        let config: Config = serde_json::from_str(&config_text)
            .with_context(|| format!("{}: not a Whisper config", files.config().display()))?;
        let tokenizer = Tokenizer::from_file(files.tokenizer())
            .map_err(|e| anyhow::anyhow!("{}: {e}", files.tokenizer().display()))?;
        let special = SpecialTokens::from_tokenizer(&tokenizer)?;
        // F32 on the CPU: half precision is slower there and less accurate.
        let dtype = if device.is_cpu() {
            DType::F32
        } else {
            DType::F16
        };
        // Safety: the file is memory-mapped read-only; the cache folder is ours and a rewrite
        // goes through a rename, so the mapped bytes never change underneath.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[files.weights()], dtype, &device) }
            .with_context(|| format!("{}: unreadable weights", files.weights().display()))?;
        let model = Whisper::load(&config, vb).with_context(|| {
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
            suppress,
            name: files.name.clone(),
        })
    }

    pub fn is_multilingual(&self) -> bool {
        self.model.config.is_multilingual()
    }

    fn window_decoder(&self, with_timestamps: bool) -> WindowDecoder<'_> {
        WindowDecoder {
            model: &self.model,
            tokenizer: &self.tokenizer,
            rules: LogitRules {
                special: &self.special,
                suppress: &self.suppress,
                with_timestamps,
                max_initial_timestamp_steps: Some((1.0 / TIME_PRECISION).round() as u32),
            },
        }
    }

    /// Runs the encoder on one window of `WINDOW_FRAMES` frames starting at `start`.
    pub fn encode_window(&self, mel: &LogMel, start: usize) -> Result<Tensor> {
        self.encode_frames(mel, start, WINDOW_FRAMES)
    }

    /// Runs the encoder on `frames` (even, at most `WINDOW_FRAMES`) frames from `start`.
    pub fn encode_frames(&self, mel: &LogMel, start: usize, frames: usize) -> Result<Tensor> {
        let data = mel.window_of(start, frames);
        let x = Tensor::from_vec(data, (1, mel.n_mels, frames), &self.device)?
            .to_dtype(self.model_dtype())?;
        Ok(self.model.encoder.forward(&x)?)
    }

    fn model_dtype(&self) -> DType {
        if self.device.is_cpu() {
            DType::F32
        } else {
            DType::F16
        }
    }

    fn encode_text(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .tokenizer
            .encode(text, false)
            .map_err(|e| anyhow::anyhow!("cannot tokenize {text:?}: {e}"))?
            .get_ids()
            .to_vec())
    }

    /// The language to transcribe in, for a model that needs one.
    fn choose_language(&self, audio: &Tensor, opts: &TranscribeOptions) -> Result<Option<u32>> {
        if !self.is_multilingual() {
            if let Some(l) = opts.language.as_deref().filter(|l| *l != "en") {
                bail!("model {} is English-only; --language {l} needs a multilingual model such as base", self.name);
            }
            return Ok(None);
        }
        let token_of = |code: &str| {
            self.special
                .language_token(code)
                .with_context(|| format!("unknown language code {code:?}"))
        };
        if let Some(code) = &opts.language {
            return Ok(Some(token_of(code)?));
        }
        let candidates = opts
            .candidate_languages
            .iter()
            .map(|c| token_of(c))
            .collect::<Result<Vec<_>>>()?;
        let (token, prob) = self
            .window_decoder(true)
            .detect_language(audio, &candidates)?;
        tracing::debug!(
            language = self.special.language_code(token),
            prob,
            "language detected"
        );
        Ok(Some(token))
    }

    /// Transcribes 16 kHz mono samples.
    pub fn transcribe(&self, samples: &[f32], opts: &TranscribeOptions) -> Result<Transcript> {
        let Some(vad) = &opts.vad else {
            return self.transcribe_continuous(samples, opts);
        };
        let duration_s = samples.len() as f64 / SAMPLE_RATE as f64;
        let regions = speech_regions(samples, vad);
        if regions.is_empty() {
            return Ok(Transcript {
                language: opts.language.clone(),
                duration_s,
                segments: Vec::new(),
            });
        }
        let speech = SpeechOnly::new(samples, &regions);
        let mut t = self.transcribe_continuous(&speech.samples, opts)?;
        for s in &mut t.segments {
            s.start_s = round_ms(speech.original_time(s.start_s));
            s.end_s = round_ms(speech.original_time(s.end_s).max(s.start_s));
        }
        t.duration_s = duration_s;
        Ok(t)
    }

    /// Transcribes every sample, silence included.
    fn transcribe_continuous(
        &self,
        samples: &[f32],
        opts: &TranscribeOptions,
    ) -> Result<Transcript> {
        let mel = self.mel.log_mel(samples);
        let duration_s = samples.len() as f64 / SAMPLE_RATE as f64;
        let frame_s = HOP as f64 / SAMPLE_RATE as f64;
        let decoder = self.window_decoder(opts.with_timestamps);
        let sp = &self.special;
        let mut language = None;
        let mut sot_sequence = vec![sp.sot];
        let mut prompt_tokens: Vec<u32> = match &opts.initial_prompt {
            Some(p) if !p.trim().is_empty() => self.encode_text(&format!(" {}", p.trim()))?,
            _ => Vec::new(),
        };
        let mut prompt_reset_since = 0;
        let mut segments = Vec::new();
        let mut seek = 0usize;
        let mut first = true;
        // A shortened window only where the whole recording fits in it with a second to spare.
        let window = match opts.short_context_frames {
            Some(f) if f % 2 == 0 && f < WINDOW_FRAMES && mel.content_frames + 100 <= f => f,
            _ => WINDOW_FRAMES,
        };
        while seek < mel.content_frames {
            let segment_frames = window.min(mel.content_frames - seek);
            let time_offset = seek as f64 * frame_s;
            let segment_duration = segment_frames as f64 * frame_s;
            let audio = self.encode_frames(&mel, seek, window)?;
            if first {
                if let Some(lang) = self.choose_language(&audio, opts)? {
                    language = sp.language_code(lang).map(str::to_owned);
                    sot_sequence.extend([lang, sp.transcribe]);
                } else {
                    language = Some("en".to_owned());
                }
                if !opts.with_timestamps {
                    sot_sequence.push(sp.no_timestamps);
                }
                first = false;
            }
            let prompt = &prompt_tokens[prompt_reset_since..];
            let result = decoder.decode_with_fallback(
                &audio,
                prompt,
                &sot_sequence,
                &opts.policy,
                opts.seed.wrapping_add(seek as u64),
            )?;
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
                if silent {
                    seek += segment_frames;
                    continue;
                }
            }
            let tokens = &result.tokens;
            tracing::debug!(?tokens, "window tokens");
            let is_ts: Vec<bool> = tokens.iter().map(|&t| sp.is_timestamp(t)).collect();
            let single_ending =
                is_ts.len() >= 2 && !is_ts[is_ts.len() - 2] && is_ts[is_ts.len() - 1];
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
                    seek += segment_frames;
                } else {
                    let last_ts = sp.timestamp_seconds(tokens[last - 1]);
                    // Timestamps step 20 ms = 2 mel frames.
                    seek += ((last_ts / frame_s).round() as usize).max(1);
                }
            } else {
                let mut dur = segment_duration;
                if let Some(&t) = tokens.iter().rev().find(|&&t| sp.is_timestamp(t)) {
                    if t != sp.timestamp_begin {
                        dur = sp.timestamp_seconds(t);
                    }
                }
                new_segments.push(self.segment(tokens, time_offset, time_offset + dur, &result)?);
                seek += segment_frames;
            }
            for s in new_segments {
                if s.text.trim().is_empty() {
                    continue;
                }
                segments.push(Segment {
                    end_s: s.end_s.min(duration_s.max(s.start_s)),
                    ..s
                });
            }
            prompt_tokens.extend(tokens.iter().copied().filter(|&t| t < sp.eot));
            if !opts.condition_on_previous_text || result.temperature > 0.5 {
                prompt_reset_since = prompt_tokens.len();
            }
        }
        if segments.is_empty() && opts.language.is_none() {
            // A language guessed from silence means nothing.
            language = None;
        }
        Ok(Transcript {
            language,
            duration_s,
            segments,
        })
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
        Ok(Segment {
            start_s: round_ms(start_s),
            end_s: round_ms(end_s),
            text,
            avg_logprob: result.avg_logprob,
            no_speech_prob: result.no_speech_prob,
            temperature: result.temperature,
        })
    }
}

fn round_ms(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}
