use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::asr::{DeviceChoice, TranscribeOptions, Transcriber};
use crate::audio::{self, ChannelMode};
use crate::model_store::ModelStore;
use crate::sinks::transcript_format::{render, ChannelTranscript, TranscriptFormat};

/// Options shared by every command that runs speech recognition.
#[derive(Args, Debug, Clone)]
pub struct AsrArgs {
    /// Catalog model name (see `vishguard models list`) or a path to a model folder or wheel.
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Cpu)]
    pub device: DeviceChoice,
    /// Stereo recordings: transcribe each channel as its own party, or mix them.
    #[arg(long, value_enum, default_value_t = ChannelMode::Split)]
    pub channels: ChannelMode,
    /// Spoken language (e.g. en, zh); detected when not given (multilingual models).
    #[arg(long)]
    pub language: Option<String>,
    /// Restrict language detection to these, comma-separated (e.g. en,zh).
    #[arg(long, value_delimiter = ',')]
    pub languages: Vec<String>,
    /// Text that conditions the first window (names, vocabulary).
    #[arg(long)]
    pub initial_prompt: Option<String>,
    /// Transcribe silence and noise too, instead of only what voice activity detection keeps.
    #[arg(long)]
    pub no_vad: bool,
    /// Encode audio shorter than this many seconds in a window this long instead of 30 s
    /// (faster; Whisper was trained on 30 s windows, so check accuracy on your audio).
    #[arg(long)]
    pub short_context_s: Option<f64>,
}

impl AsrArgs {
    pub fn load(&self) -> Result<Transcriber> {
        let store = ModelStore::open()?;
        let files = store.resolve(self.model.as_deref())?;
        let device = self.device.open()?;
        tracing::info!(model = %files.name, dir = %files.dir.display(), "loading model");
        Transcriber::load(&files, device)
    }

    pub fn options(&self) -> TranscribeOptions {
        TranscribeOptions {
            language: self.language.clone(),
            candidate_languages: self.languages.clone(),
            initial_prompt: self.initial_prompt.clone(),
            short_context_frames: self
                .short_context_s
                .map(|s| ((s * 50.0).round() as usize) * 2),
            vad: if self.no_vad {
                None
            } else {
                TranscribeOptions::default().vad
            },
            ..Default::default()
        }
    }
}

#[derive(Args, Debug)]
pub struct TranscribeArgs {
    /// Audio files: WAV (PCM, float, G.711), FLAC, MP3, Ogg.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub asr: AsrArgs,
    #[arg(long, value_enum, default_value_t = TranscriptFormat::Text)]
    pub format: TranscriptFormat,
    /// Print per-file timing (decode, transcription, real-time factor) as JSON on stderr.
    #[arg(long)]
    pub timing: bool,
}

pub fn run(args: TranscribeArgs) -> Result<i32> {
    let transcriber = args.asr.load()?;
    let opts = args.asr.options();
    let mut failures = 0;
    let stdout = std::io::stdout();
    for path in &args.files {
        let name = path.display().to_string();
        let started = std::time::Instant::now();
        let outcome = audio::load_16k(path, args.asr.channels).and_then(|parties| {
            let loaded = started.elapsed().as_secs_f64();
            let mut out = String::new();
            let mut audio_s = 0.0;
            for party in parties {
                audio_s += party.samples.len() as f64 / audio::TARGET_RATE as f64;
                let t = transcriber.transcribe(&party.samples, &opts)?;
                out += &render(
                    &ChannelTranscript::new(&name, party.channel, &t),
                    args.format,
                );
            }
            if args.timing {
                let total = started.elapsed().as_secs_f64();
                eprintln!(
                    "{}",
                    serde_json::json!({"file": name, "model": transcriber.name, "audio_s": audio_s,
                        "decode_audio_s": loaded, "total_s": total, "rtf": total / audio_s.max(1e-9)})
                );
            }
            Ok(out)
        });
        match outcome {
            Ok(text) => {
                let mut lock = stdout.lock();
                lock.write_all(text.as_bytes())?;
                lock.flush()?;
            }
            Err(e) => {
                failures += 1;
                eprintln!("error: {name}: {e:#}");
            }
        }
    }
    Ok(if failures > 0 { 2 } else { 0 })
}
