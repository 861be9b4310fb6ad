//! `vishguard alerts`: what waits in a webhook outbox, what the receiver refused, and sending
//! it again (see `sinks::webhook` for the outbox's layout and delivery rules).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Subcommand;

use crate::sinks::webhook::{admin, default_outbox};

#[derive(Subcommand, Debug)]
pub enum AlertsCommand {
    /// Print the undelivered alerts of an outbox as JSON lines, oldest first (or its dead
    /// letters: each with failed_at, status, reason and the alert). Reads only: safe while
    /// listen or serve delivers from it.
    List {
        /// The outbox folder [default: vishguard-outbox].
        #[arg(long)]
        outbox: Option<PathBuf>,
        /// The dead letters instead of the undelivered alerts.
        #[arg(long)]
        dead_letters: bool,
    },
    /// Send the undelivered alerts now (in order, at least once, `Idempotency-Key:
    /// <alert_id>`), with the dead letters first put back in the outbox when asked. Needs the
    /// outbox to itself: stop the process that delivers from it first.
    Replay {
        /// Where to POST them.
        #[arg(long)]
        url: String,
        /// The outbox folder [default: vishguard-outbox].
        #[arg(long)]
        outbox: Option<PathBuf>,
        /// Put the dead letters back at the end of the outbox and send them too.
        #[arg(long)]
        dead_letters: bool,
        /// Give up after this many seconds of a receiver that does not answer or says
        /// "later" (408, 429, 5xx); what is left stays in the outbox.
        #[arg(long, default_value_t = 60.0)]
        timeout_s: f64,
    },
}

/// Exit code: 0, or 1 when `replay` left alerts undelivered.
pub fn run(cmd: AlertsCommand) -> Result<i32> {
    match cmd {
        AlertsCommand::List {
            outbox,
            dead_letters,
        } => {
            let dir = outbox.unwrap_or_else(default_outbox);
            let lines = if dead_letters {
                admin::dead_letters(&dir)?
            } else {
                admin::pending(&dir)?
            };
            for l in &lines {
                println!("{l}");
            }
            eprintln!(
                "{} {} in {}",
                lines.len(),
                if dead_letters {
                    "dead letter(s)"
                } else {
                    "undelivered alert(s)"
                },
                dir.display()
            );
            Ok(0)
        }
        AlertsCommand::Replay {
            url,
            outbox,
            dead_letters,
            timeout_s,
        } => {
            let dir = outbox.unwrap_or_else(default_outbox);
            if !(timeout_s.is_finite() && timeout_s >= 0.0) {
                anyhow::bail!("--timeout-s must be a number of seconds >= 0, not {timeout_s}");
            }
            if dead_letters {
                let n = admin::requeue_dead_letters(&dir)?;
                eprintln!("{n} dead letter(s) put back in the outbox");
            }
            let (settled, left) = admin::replay(&dir, &url, Duration::from_secs_f64(timeout_s))?;
            let dead = admin::dead_letters(&dir)?.len();
            eprintln!(
                "{settled} alert(s) settled (delivered, or refused for good: {dead} dead \
                 letter(s) now); {left} left in {}",
                dir.display()
            );
            Ok(if left > 0 { 1 } else { 0 })
        }
    }
}
