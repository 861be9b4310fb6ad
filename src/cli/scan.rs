use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use super::classify::DetectorArgs;
use super::transcribe::AsrArgs;
use crate::asr::Segment;
use crate::audio;
use crate::detect::classifier::Risk;
use crate::detect::timeline::{score_call, Alert};
use crate::sinks::transcript_format::{render, ChannelTranscript, TranscriptFormat};

const AUDIO_EXTENSIONS: &[&str] = &["wav", "wave", "flac", "mp3", "ogg", "oga"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScanFormat {
    Table,
    Jsonl,
}

#[derive(Args, Debug)]
pub struct ScanArgs {
    /// Audio files or folders (searched recursively).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub asr: AsrArgs,
    #[arg(long, value_enum, default_value_t = ScanFormat::Table)]
    pub format: ScanFormat,
    #[command(flatten)]
    pub detector: DetectorArgs,
    /// Also write each transcript as JSON and WebVTT into this folder.
    #[arg(long)]
    pub save_transcripts: Option<PathBuf>,
}

#[derive(Serialize)]
struct ScanResult<'a> {
    file: String,
    channel: Option<usize>,
    language: Option<String>,
    risk: Risk,
    score: f32,
    first_alert_s: Option<f64>,
    alerts: Vec<Alert>,
    transcript: &'a [Segment],
}

/// Audio files under the given paths, in a stable order.
pub fn collect_audio(paths: &[PathBuf]) -> Vec<PathBuf> {
    fn walk(p: &Path, out: &mut Vec<PathBuf>) {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            entries.sort();
            for e in entries {
                if e.is_dir() {
                    walk(&e, out);
                } else if e
                    .extension()
                    .and_then(|x| x.to_str())
                    .is_some_and(|x| AUDIO_EXTENSIONS.contains(&x.to_ascii_lowercase().as_str()))
                {
                    out.push(e);
                }
            }
        } else {
            // Named explicitly: tried whatever its extension, so a bad file gets its error.
            out.push(p.to_path_buf());
        }
    }
    let mut out = Vec::new();
    for p in paths {
        walk(p, &mut out);
    }
    out
}

pub fn run(args: ScanArgs) -> Result<i32> {
    let files = collect_audio(&args.paths);
    if files.is_empty() {
        anyhow::bail!("no audio files found under the given paths");
    }
    let classifier = args.detector.load()?;
    let transcriber = args.asr.load()?;
    let mut opts = args.asr.options();
    // The phrase packs cover English and Mandarin: detection picks between those.
    classifier.restrict_languages(&mut opts, transcriber.is_multilingual());
    let bar = indicatif::ProgressBar::new(files.len() as u64).with_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed}<{eta} {wide_msg}")
            .expect("valid template"),
    );
    let stdout = std::io::stdout();
    let (mut errors, mut flagged) = (0, 0);
    if args.format == ScanFormat::Table {
        println!(
            "{:<40} {:>3} {:>4} {:>9} {:>6} {:>8}  evidence",
            "file", "ch", "lang", "risk", "score", "alert_s"
        );
    }
    for path in &files {
        bar.set_message(path.display().to_string());
        let name = path.display().to_string();
        let outcome = audio::load_16k(path, args.asr.channels).and_then(|parties| {
            let mut lines = String::new();
            for party in parties {
                let t = transcriber.transcribe(&party.samples, &opts)?;
                let pack = classifier.pack_for_transcript(t.language.as_deref(), &t.text());
                let call = score_call(&classifier, pack, &t.segments);
                if let Some(dir) = &args.save_transcripts {
                    save_transcript(dir, path, party.channel, &t)?;
                }
                if call.risk.is_flagged() {
                    flagged += 1;
                }
                let result = ScanResult {
                    file: name.clone(),
                    channel: party.channel,
                    language: t.language.clone(),
                    risk: call.risk,
                    score: call.score,
                    first_alert_s: call.first_alert_s,
                    alerts: call.alerts,
                    transcript: &t.segments,
                };
                lines += &match args.format {
                    ScanFormat::Jsonl => serde_json::to_string(&result)? + "\n",
                    ScanFormat::Table => table_row(&result),
                };
            }
            Ok(lines)
        });
        bar.inc(1);
        match outcome {
            Ok(lines) => bar.suspend(|| -> Result<()> {
                let mut out = stdout.lock();
                out.write_all(lines.as_bytes())?;
                Ok(out.flush()?)
            })?,
            Err(e) => {
                errors += 1;
                bar.suspend(|| eprintln!("error: {name}: {e:#}"));
            }
        }
    }
    bar.finish_and_clear();
    Ok(if errors > 0 {
        2
    } else if flagged > 0 {
        1
    } else {
        0
    })
}

/// Writes `<stem>[.chN].json` and `.vtt` for one party's transcript.
fn save_transcript(
    dir: &Path,
    audio: &Path,
    channel: Option<usize>,
    t: &crate::asr::Transcript,
) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let stem = audio
        .file_stem()
        .map_or("call".into(), |s| s.to_string_lossy().into_owned());
    let base = match channel {
        Some(c) => format!("{stem}.ch{c}"),
        None => stem,
    };
    let name = audio.display().to_string();
    let ct = ChannelTranscript::new(&name, channel, t);
    std::fs::write(
        dir.join(format!("{base}.json")),
        render(&ct, TranscriptFormat::Json),
    )?;
    std::fs::write(
        dir.join(format!("{base}.vtt")),
        render(&ct, TranscriptFormat::Vtt),
    )?;
    Ok(())
}

fn table_row(r: &ScanResult) -> String {
    let mut file = r.file.clone();
    if file.chars().count() > 40 {
        file = format!(
            "…{}",
            file.chars()
                .rev()
                .take(39)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<String>()
        );
    }
    let mut cats: Vec<&str> = Vec::new();
    for a in &r.alerts {
        if !cats.contains(&a.category.as_str()) {
            cats.push(&a.category);
        }
    }
    let risk = match r.risk {
        Risk::None => "none",
        Risk::Suspected => "SUSPECTED",
        Risk::High => "HIGH",
    };
    let mut row = format!(
        "{:<40} {:>3} {:>4} {:>9} {:>6.2} {:>8}  {}\n",
        file,
        r.channel.map_or("-".into(), |c| c.to_string()),
        r.language.as_deref().unwrap_or("-"),
        risk,
        r.score,
        r.first_alert_s.map_or("-".into(), |t| format!("{t:.1}")),
        cats.join(", ")
    );
    // A flagged call is read by someone who must decide what to do with it: the words that
    // raised it, and when they were said, are the reason, so they go under its row.
    if r.risk.is_flagged() {
        for a in &r.alerts {
            row += &format!(
                "{:>49.1} s  {:<24} \"{}\"\n",
                a.t_s, a.category, a.matched_text
            );
        }
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(t_s: f64, category: &str, matched_text: &str) -> Alert {
        Alert {
            t_s,
            end_s: t_s + 1.0,
            category: category.into(),
            pattern: String::new(),
            matched_text: matched_text.into(),
            score: 0.9,
            risk: Risk::High,
        }
    }

    #[test]
    fn a_flagged_row_shows_the_words_that_raised_it_and_when() {
        let flagged = ScanResult {
            file: "calls/irs.wav".into(),
            channel: Some(1),
            language: Some("en".into()),
            risk: Risk::High,
            score: 0.91,
            first_alert_s: Some(11.0),
            alerts: vec![
                alert(2.5, "authority_impersonation", "Internal Revenue Service"),
                alert(11.0, "arrest_threat", "warrant for your arrest"),
            ],
            transcript: &[],
        };
        let text = table_row(&flagged);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("calls/irs.wav") && lines[0].contains("HIGH"));
        assert!(lines[1]
            .trim_start()
            .starts_with("2.5 s  authority_impersonation"));
        assert!(lines[2].ends_with("\"warrant for your arrest\""), "{text}");
        let quiet = ScanResult {
            risk: Risk::None,
            score: 0.0,
            first_alert_s: None,
            alerts: vec![alert(3.0, "honest_caller", "no action is needed")],
            ..flagged
        };
        assert_eq!(table_row(&quiet).lines().count(), 1);
    }
}
