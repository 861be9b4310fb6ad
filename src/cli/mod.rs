//! The command line: shared flag groups in `args`, one file per subcommand. Each returns the
//! process exit code. The library below knows nothing of clap.

pub mod alerts;
pub mod args;
pub mod bench;
pub mod classify;
mod engine;
pub mod listen;
pub mod models;
pub mod scan;
pub mod score;
pub mod serve;
pub mod transcribe;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "vishguard",
    version,
    about = "Detects scam scripts in phone-call audio, in English and Mandarin",
    after_help = "Exit codes: 0 success, 1 a scam was found (scan, listen), 2 an error (it wins over 1).\n\
                  Models are cached in $VISHGUARD_HOME (default: the user cache folder)."
)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// CPU threads for inference (default: the physical cores).
    #[arg(long, global = true, env = "VISHGUARD_THREADS")]
    pub threads: Option<usize>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Scan recordings for scam scripts: per file and party, the risk and its evidence.
    Scan(scan::ScanArgs),
    /// Watch live calls (a sound device, or a file at real speed) and raise alerts as they happen.
    Listen(listen::ListenArgs),
    /// Take calls from the network (SIP/SIPREC with RTP, WebSocket media streams, [[sources]]) and
    /// serve their risk, transcripts and alerts over HTTP (API, server-sent events, metrics);
    /// or, with --role ingest|worker, spread them over machines through NATS JetStream.
    Serve(serve::ServeArgs),
    /// Score a labelled manifest of recordings or transcripts: results, metrics, HTML report.
    Score(score::ScoreArgs),
    /// Print what was said in audio files, with segment times.
    Transcribe(transcribe::TranscribeArgs),
    /// Score transcripts (JSON lines) for scam scripts.
    Classify(classify::ClassifyArgs),
    /// List, fetch and import Whisper models.
    #[command(subcommand)]
    Models(models::ModelsCommand),
    /// Read the NATS events stream (tail), or inspect a webhook outbox (undelivered alerts,
    /// dead letters) and send it again.
    #[command(subcommand)]
    Alerts(alerts::AlertsCommand),
    /// Measure recognition throughput and concurrent live calls (for GPU hosts: needs only
    /// the binary, a model and recordings).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// An error about one file, as one line naming the file once: most errors (the audio
/// readers') name it already.
pub(crate) fn file_error(name: &str, e: &anyhow::Error) -> String {
    let message = format!("{e:#}");
    if message.contains(name) {
        message
    } else {
        format!("{name}: {message}")
    }
}

pub fn run(cli: Cli) -> i32 {
    crate::asr::allocator::keep_freed_buffers();
    crate::asr::threads::settle_cpu_threads(cli.threads);
    let result = match cli.command {
        Command::Transcribe(args) => transcribe::run(args),
        Command::Models(cmd) => models::run(cmd),
        Command::Classify(args) => classify::run(args),
        Command::Scan(args) => scan::run(args),
        Command::Score(args) => score::run(args),
        Command::Listen(args) => listen::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Alerts(cmd) => alerts::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            2
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
