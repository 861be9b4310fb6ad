use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use super::args::{AsrArgs, DetectorArgs};
use crate::score::{self, manifest::read_manifest, Scorer};

#[derive(Args, Debug)]
pub struct ScoreArgs {
    /// Manifest (CSV or JSON lines) with `path` or `text`, `label`, and optional `id`, `type`,
    /// `lang`, `reference`.
    #[arg(required_unless_present = "compare")]
    pub manifest: Option<PathBuf>,
    /// Output folder: results.jsonl (appended, so a rerun resumes), metrics.json, report.html.
    #[arg(long, required_unless_present = "compare")]
    pub out: Option<PathBuf>,
    /// Compare two results.jsonl files instead: metric deltas and the calls that flipped.
    #[arg(long, num_args = 2, value_names = ["A", "B"])]
    pub compare: Option<Vec<PathBuf>>,
    /// Calls scored at once: threads scoring text rows, and threads hearing audio files
    /// (`--batch` each) (default: the number of CPU cores).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Audio files each thread hears at once: the next window of each goes through the
    /// recogniser in one batch (as `scan --batch`).
    #[arg(long, default_value_t = crate::cli::scan::DEFAULT_FILE_BATCH, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=256))]
    pub batch: usize,
    #[command(flatten)]
    pub asr: AsrArgs,
    #[command(flatten)]
    pub detector: DetectorArgs,
}

pub fn run(args: ScoreArgs) -> Result<i32> {
    if let Some(pair) = &args.compare {
        let diff = score::compare(&pair[0], &pair[1])?;
        println!("{}", serde_json::to_string_pretty(&diff)?);
        return Ok(0);
    }
    let (Some(manifest), Some(out)) = (&args.manifest, &args.out) else {
        bail!("score needs MANIFEST and --out DIR (or --compare A B)");
    };
    let rows = read_manifest(manifest)?;
    let classifier = args.detector.config().load()?;
    let asr = args.asr.config();
    let needs_model = rows.iter().any(|r| r.text.is_none());
    let transcriber = if needs_model { Some(asr.load()?) } else { None };
    let options = asr.options(
        transcriber.as_ref().is_some_and(|t| t.is_multilingual()),
        &classifier.languages(),
    );
    let scorer = Scorer {
        classifier: &classifier,
        transcriber: transcriber.as_ref(),
        options,
        channels: args.asr.channels(),
    };
    let jobs = args.jobs.unwrap_or_else(super::args::default_jobs);
    let done = score::run(&rows, out, &scorer, jobs, args.batch)?;
    let m = score::write_report(out, manifest)?;
    eprintln!(
        "scored {done} new calls; {} in all. F1 {:.3}, precision {:.3}, recall {:.3}, FPR {:.3}, ROC-AUC {:.3}. Report: {}",
        m["n"],
        m["f1"].as_f64().unwrap_or(0.0),
        m["precision"].as_f64().unwrap_or(0.0),
        m["recall"].as_f64().unwrap_or(0.0),
        m["fpr"].as_f64().unwrap_or(0.0),
        m["roc_auc"].as_f64().unwrap_or(0.0),
        out.join("report.html").display()
    );
    Ok(0)
}
