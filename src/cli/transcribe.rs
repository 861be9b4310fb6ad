use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;

use super::args::{choice, AsrArgs};
use crate::engine::files::{hear_files, HeardFile};
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
    /// Print per-file timing (audio length, time spent on the file, real-time factor) as JSON
    /// on stderr. Files heard together share each batch's time equally.
    #[arg(long)]
    pub timing: bool,
    #[command(flatten)]
    pub files_at_once: super::args::FileBatchArgs,
}

pub fn run(args: TranscribeArgs) -> Result<i32> {
    let config = args.asr.config();
    let transcriber = config.load()?;
    let opts = config.options(transcriber.is_multilingual(), &[]);
    let format = args.format.unwrap_or(TranscriptFormat::Text);
    let paths: Vec<&Path> = args.files.iter().map(PathBuf::as_path).collect();
    let mut failures = 0;
    let stdout = std::io::stdout();
    let render_file = |i: usize, heard: HeardFile| -> Result<String> {
        let name = args.files[i].display().to_string();
        let mut out = String::new();
        let mut audio_s = 0.0;
        for (channel, t) in heard.parties.into_iter().zip(&heard.transcripts) {
            audio_s += t.duration_s;
            out += &render(&ChannelTranscript::new(&name, channel, t), format);
        }
        if args.timing {
            // Decoding runs interleaved with recognition, piece by piece: one total.
            eprintln!(
                "{}",
                serde_json::json!({"file": name, "model": transcriber.name, "audio_s": audio_s,
                        "total_s": heard.busy_s, "rtf": heard.busy_s / audio_s.max(1e-9)})
            );
        }
        Ok(out)
    };
    hear_files(
        &transcriber,
        &opts,
        args.asr.channels(),
        &paths,
        args.files_at_once.jobs(),
        args.files_at_once.batch,
        render_file,
        |i, outcome| {
            match outcome {
                Ok(text) => {
                    let mut lock = stdout.lock();
                    lock.write_all(text.as_bytes())?;
                    lock.flush()?;
                }
                Err(e) => {
                    failures += 1;
                    let name = args.files[i].display().to_string();
                    eprintln!("error: {}", super::file_error(&name, &e));
                }
            }
            Ok(())
        },
    )?;
    Ok(if failures > 0 { 2 } else { 0 })
}
