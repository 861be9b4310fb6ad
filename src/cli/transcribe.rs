use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::args::{choice, AsrArgs};
use crate::render::{render, ChannelTranscript, TranscriptFormat};

#[derive(Args, Debug)]
pub struct TranscribeArgs {
    /// Audio files: WAV (PCM, float, G.711), FLAC, MP3, Ogg.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub asr: AsrArgs,
    /// Output format [default: text].
    #[arg(long, value_parser = choice::<TranscriptFormat>(&TranscriptFormat::NAMES))]
    pub format: Option<TranscriptFormat>,
    /// Print per-file timing (audio length, total time, real-time factor) as JSON on stderr.
    #[arg(long)]
    pub timing: bool,
}

pub fn run(args: TranscribeArgs) -> Result<i32> {
    let config = args.asr.config();
    let transcriber = config.load()?;
    let opts = config.options(transcriber.is_multilingual(), &[]);
    let format = args.format.unwrap_or(TranscriptFormat::Text);
    let mut failures = 0;
    let stdout = std::io::stdout();
    for path in &args.files {
        let name = path.display().to_string();
        let started = std::time::Instant::now();
        let outcome = crate::engine::files::hear_file(
            &transcriber,
            &opts,
            path,
            args.asr.channels(),
        )
        .map(|(parties, heard)| {
            let mut out = String::new();
            let mut audio_s = 0.0;
            for (channel, t) in parties.into_iter().zip(heard) {
                audio_s += t.duration_s;
                out += &render(&ChannelTranscript::new(&name, channel, &t), format);
            }
            if args.timing {
                // Decoding runs interleaved with recognition, piece by piece: one total.
                let total = started.elapsed().as_secs_f64();
                eprintln!(
                    "{}",
                    serde_json::json!({"file": name, "model": transcriber.name, "audio_s": audio_s,
                            "total_s": total, "rtf": total / audio_s.max(1e-9)})
                );
            }
            out
        });
        match outcome {
            Ok(text) => {
                let mut lock = stdout.lock();
                lock.write_all(text.as_bytes())?;
                lock.flush()?;
            }
            Err(e) => {
                failures += 1;
                eprintln!("error: {}", super::file_error(&name, &e));
            }
        }
    }
    Ok(if failures > 0 { 2 } else { 0 })
}
