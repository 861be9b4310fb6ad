use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;

use super::args::{AsrArgs, DetectorArgs};
use crate::call::{json_line, CallId, CallSummary};
use crate::engine::files::{FileJob, FileToHear};
use crate::render::{render, ChannelTranscript, TranscriptFormat};

const AUDIO_EXTENSIONS: &[&str] = &["wav", "wave", "flac", "mp3", "ogg", "oga"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScanFormat {
    /// A row per file and party; under a flagged row, each matched phrase and its second.
    Table,
    /// The per-call record (`call_id` is the path), one line per file, with transcripts.
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
    #[command(flatten)]
    pub files_at_once: super::args::FileBatchArgs,
}

/// Files heard at once by default.
pub const DEFAULT_FILE_BATCH: usize = 8;

/// Audio files under the given paths, in a stable order, each once.
///
/// Folders are walked with symlinks followed; a link back to a folder being walked (a loop)
/// is skipped with a warning, and a file reached twice (through two links) is listed once.
/// Only regular files are listed from folders: a FIFO named `.wav` would block the read for
/// good. A path named explicitly is listed whatever its extension, so a bad file gets its
/// error.
pub fn collect_audio(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut add = |p: PathBuf, out: &mut Vec<PathBuf>| {
        let key = std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone());
        if seen.insert(key) {
            out.push(p);
        }
    };
    for p in paths {
        if !p.is_dir() {
            add(p.clone(), &mut out);
            continue;
        }
        let walk = walkdir::WalkDir::new(p)
            .follow_links(true)
            .sort_by_file_name()
            .into_iter();
        for entry in walk {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    if e.loop_ancestor().is_some() {
                        tracing::warn!("skipping a folder link that loops back: {e}");
                    } else {
                        tracing::warn!("cannot read part of a folder: {e}");
                    }
                    continue;
                }
            };
            let is_audio = entry
                .path()
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| AUDIO_EXTENSIONS.contains(&x.to_ascii_lowercase().as_str()));
            if !is_audio {
                continue;
            }
            if entry.file_type().is_file() {
                add(entry.into_path(), &mut out);
            } else if !entry.file_type().is_dir() {
                tracing::warn!(
                    "{}: skipped: not a regular file (a pipe, socket or device)",
                    entry.path().display()
                );
            }
        }
    }
    out
}

pub fn run(args: ScanArgs) -> Result<i32> {
    let files = collect_audio(&args.paths);
    if files.is_empty() {
        anyhow::bail!("no audio files found under the given paths");
    }
    let root = common_folder(&files);
    let asr = args.asr.config();
    let classifier = args.detector.config().load()?;
    let transcriber = asr.load()?;
    // The phrase packs cover English and Mandarin: detection picks between those.
    let options = asr.options(transcriber.is_multilingual(), &classifier.languages());
    let job = FileJob {
        transcriber: &transcriber,
        classifier: &classifier,
        options: &options,
        channels: args.asr.channels(),
        language: None,
        with_transcript: args.format == ScanFormat::Jsonl,
    };
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
    let calls: Vec<FileToHear> = files
        .iter()
        .map(|p| FileToHear {
            path: p.clone(),
            call_id: CallId::new(p.display().to_string()),
            language: None,
        })
        .collect();
    let at_once = &args.files_at_once;
    job.analyse_all(&calls, at_once.jobs(), at_once.batch, |i, outcome| {
        let path = &files[i];
        let name = path.display().to_string();
        let outcome = outcome.and_then(|a| {
            if let Some(dir) = &args.save_transcripts {
                for (channel, t) in &a.transcripts {
                    save_transcript(dir, path, &root, *channel, t)?;
                }
            }
            Ok(a.summary)
        });
        bar.inc(1);
        if let Some(next) = files.get(i + 1) {
            bar.set_message(next.display().to_string());
        }
        match outcome {
            Ok(summary) => {
                if summary.risk.is_flagged() {
                    flagged += 1;
                }
                let lines = match args.format {
                    ScanFormat::Jsonl => json_line(&summary) + "\n",
                    ScanFormat::Table => table_rows(&name, &summary),
                };
                bar.suspend(|| -> Result<()> {
                    let mut out = stdout.lock();
                    out.write_all(lines.as_bytes())?;
                    Ok(out.flush()?)
                })?
            }
            Err(e) => {
                errors += 1;
                bar.suspend(|| eprintln!("error: {}", super::file_error(&name, &e)));
            }
        }
        Ok(())
    })?;
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
/// The deepest folder holding all `files`: transcripts are saved under the same relative
/// paths, so that `a/call.wav` and `b/call.wav` never overwrite each other.
fn common_folder(files: &[PathBuf]) -> PathBuf {
    let mut common: Option<PathBuf> = None;
    for f in files {
        let parent = f.parent().unwrap_or(Path::new("")).to_path_buf();
        common = Some(match common {
            None => parent,
            Some(c) => c
                .components()
                .zip(parent.components())
                .take_while(|(a, b)| a == b)
                .map(|(a, _)| a)
                .collect(),
        });
    }
    common.unwrap_or_default()
}

/// Writes `<dir>/<path relative to root, without extension>[.chN].{json,vtt}`, owner-only.
fn save_transcript(
    dir: &Path,
    audio: &Path,
    root: &Path,
    channel: Option<usize>,
    t: &crate::asr::Transcript,
) -> Result<()> {
    let relative = audio.strip_prefix(root).unwrap_or(audio);
    // Only plain names below `dir`: never a root, `..` or a drive.
    let folder: PathBuf = relative
        .parent()
        .unwrap_or(Path::new(""))
        .components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .collect();
    let dir = &dir.join(folder);
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
    crate::private_files::write(
        &dir.join(format!("{base}.json")),
        render(&ct, TranscriptFormat::Json),
    )?;
    crate::private_files::write(
        &dir.join(format!("{base}.vtt")),
        render(&ct, TranscriptFormat::Vtt),
    )?;
    Ok(())
}

/// A row per party: file, channel, language heard, risk, score, first alert, the kinds of
/// evidence; under a flagged party's row, each matched phrase, its kind and its second.
fn table_rows(file: &str, call: &CallSummary) -> String {
    let mut file = file.to_owned();
    if file.chars().count() > 40 {
        let tail: Vec<char> = file.chars().rev().take(39).collect();
        file = format!("…{}", tail.into_iter().rev().collect::<String>());
    }
    let mut rows = String::new();
    for p in &call.parties {
        let evidence: Vec<_> = call
            .evidence
            .iter()
            .filter(|e| e.spoken.is_some_and(|s| s.party == p.party))
            .collect();
        let mut cats: Vec<String> = Vec::new();
        for e in &evidence {
            if !cats.contains(&e.category) {
                cats.push(e.category.clone());
            }
        }
        // A party heard in a language no pack covers was not checked: "none" would read as
        // clean.
        let risk = match (p.risk, &p.uncovered_language) {
            (crate::call::Risk::None, Some(_)) => "unchecked".to_owned(),
            (crate::call::Risk::None, None) => "none".to_owned(),
            (flagged, _) => flagged.as_str().to_uppercase(),
        };
        if let (crate::call::Risk::None, Some(l)) = (p.risk, &p.uncovered_language) {
            cats.push(format!("language {l}: no phrase pack covers it"));
        }
        let channel = if call.parties.len() > 1 {
            p.party.to_string()
        } else {
            "-".into()
        };
        rows += &format!(
            "{:<40} {:>3} {:>4} {:>9} {:>6.2} {:>8}  {}\n",
            file,
            channel,
            p.language.as_deref().unwrap_or("-"),
            risk,
            p.score,
            p.first_alert_s.map_or("-".into(), |t| format!("{t:.1}")),
            cats.join(", ")
        );
        // A flagged call is read by someone who must decide what to do with it: the words that
        // raised it, and when they were said, are the reason, so they go under its row.
        if p.risk.is_flagged() {
            for e in evidence {
                rows += &format!(
                    "{:>49.1} s  {:<24} \"{}\"\n",
                    e.spoken.map_or(0.0, |s| s.t_s),
                    e.category,
                    e.matched_text
                );
            }
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::{Evidence, PartySummary, Risk, Spoken};

    #[test]
    fn a_party_in_a_language_no_pack_covers_reads_unchecked_not_none() {
        let mut p = party(0, Risk::None, 0.0);
        p.uncovered_language = Some("fr".into());
        let call = CallSummary {
            call_id: "fr.wav".into(),
            metadata: Default::default(),
            risk: Risk::None,
            score: 0.0,
            categories: vec![],
            language: Some("en".into()),
            first_alert_s: None,
            call_model: None,
            evidence: vec![],
            parties: vec![p],
            audio_s: Some(8.0),
            stream: None,
            uncovered_language: Some("fr".into()),
        };
        let row = table_rows("fr.wav", &call);
        assert!(row.contains("unchecked"), "{row}");
        assert!(
            row.contains("language fr: no phrase pack covers it"),
            "{row}"
        );
        assert!(!row.contains(" none "), "{row}");
    }

    #[test]
    fn transcripts_of_files_with_one_name_in_two_folders_are_kept_apart() {
        let files = vec![
            PathBuf::from("calls/a/call.wav"),
            PathBuf::from("calls/b/call.wav"),
            PathBuf::from("calls/b/deep/x.wav"),
        ];
        assert_eq!(common_folder(&files), PathBuf::from("calls"));
        assert_eq!(common_folder(&files[2..]), PathBuf::from("calls/b/deep"));
        let dir = tempfile::tempdir().unwrap();
        let t = crate::asr::Transcript {
            language: Some("en".into()),
            duration_s: 1.0,
            segments: Vec::new(),
            uncovered_language: None,
        };
        for f in &files[..2] {
            save_transcript(dir.path(), f, Path::new("calls"), Some(1), &t).unwrap();
        }
        for folder in ["a", "b"] {
            let p = dir.path().join(folder).join("call.ch1.json");
            let saved = std::fs::read_to_string(&p).unwrap();
            assert!(
                saved.contains(&format!("calls/{folder}/call.wav")),
                "{saved}"
            );
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600);
            }
        }
    }

    #[cfg(unix)]
    #[test]
    fn folder_loops_fifos_and_twice_linked_files_are_walked_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/call.wav"), b"RIFF").unwrap();
        std::fs::write(root.join("notes.txt"), b"x").unwrap();
        std::os::unix::fs::symlink("..", root.join("sub/up")).unwrap();
        std::os::unix::fs::symlink(".", root.join("a")).unwrap();
        std::os::unix::fs::symlink(".", root.join("b")).unwrap();
        std::os::unix::fs::symlink("sub/call.wav", root.join("again.wav")).unwrap();
        let fifo = root.join("pipe.wav");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let (tx, rx) = std::sync::mpsc::channel();
        let paths = vec![root.to_path_buf()];
        std::thread::spawn(move || tx.send(collect_audio(&paths)));
        let found = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("the walk ends");
        // The link is listed first (sorted by name); the file it points to is the same file.
        assert_eq!(found, vec![root.join("again.wav")]);
    }

    fn evidence(t_s: f64, category: &str, matched_text: &str) -> Evidence {
        Evidence {
            category: category.into(),
            pattern: String::new(),
            matched_text: matched_text.into(),
            start_char: 0,
            end_char: 0,
            weight: 0.9,
            context_similarity: None,
            honest_similarity: None,
            spoken: Some(Spoken {
                party: 1,
                t_s,
                end_s: t_s + 1.0,
            }),
        }
    }

    fn party(party: usize, risk: Risk, score: f32) -> PartySummary {
        PartySummary {
            party,
            label: format!("channel {party}"),
            language: Some("en".into()),
            risk,
            score,
            first_alert_s: risk.is_flagged().then_some(11.0),
            call_model: None,
            uncovered_language: None,
            transcript: Vec::new(),
        }
    }

    #[test]
    fn a_flagged_row_shows_the_words_that_raised_it_and_when() {
        let mut call = CallSummary {
            call_id: "calls/irs.wav".into(),
            metadata: Default::default(),
            risk: Risk::High,
            score: 0.91,
            categories: vec![],
            language: Some("en".into()),
            first_alert_s: Some(11.0),
            call_model: None,
            evidence: vec![
                evidence(2.5, "authority_impersonation", "Internal Revenue Service"),
                evidence(11.0, "arrest_threat", "warrant for your arrest"),
            ],
            parties: vec![party(0, Risk::None, 0.0), party(1, Risk::High, 0.91)],
            audio_s: Some(30.0),
            stream: None,
            uncovered_language: None,
        };
        let text = table_rows("calls/irs.wav", &call);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("calls/irs.wav") && lines[0].contains(" none "));
        assert!(lines[1].starts_with("calls/irs.wav") && lines[1].contains("HIGH"));
        assert!(lines[2]
            .trim_start()
            .starts_with("2.5 s  authority_impersonation"));
        assert!(lines[3].ends_with("\"warrant for your arrest\""), "{text}");
        call.parties[1].risk = Risk::None;
        assert_eq!(table_rows("calls/irs.wav", &call).lines().count(), 2);
    }
}
