//! Research scoring: run the detector over a labelled manifest (resumably, in parallel),
//! measure it against the labels, and write `results.jsonl`, `metrics.json`, `report.html`.

pub mod manifest;
pub mod metrics;
pub mod report;
pub mod wer;

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::asr::{TranscribeOptions, Transcriber};
use crate::audio::ChannelMode;
use crate::call::{CallId, CallSummary, Versioned};
use crate::detect::{summarise_text, Classifier};
use crate::engine::files::{FileJob, FileToHear};
use manifest::ManifestRow;
use metrics::Scored;

/// Everything a worker needs to score one row.
pub struct Scorer<'a> {
    pub classifier: &'a Classifier,
    /// Loaded only when the manifest has audio rows.
    pub transcriber: Option<&'a Transcriber>,
    pub options: TranscribeOptions,
    pub channels: ChannelMode,
}

impl Scorer<'_> {
    /// The row's line of `results.jsonl`: the per-call record (or `error`), with the
    /// manifest's `id`, `label`, `type` and `lang`, and for audio `elapsed_s`, `rtf` and `wer`.
    pub fn score_row(&self, row: &ManifestRow) -> Value {
        let call_id = CallId::new(row.id.clone().unwrap_or_default());
        let started = std::time::Instant::now();
        let scored = match (&row.text, &row.path) {
            (Some(text), _) => self.score_text(text, row.lang.as_deref(), call_id),
            (None, Some(path)) => self.score_audio(path, row, call_id),
            (None, None) => Err(anyhow::anyhow!("row has neither text nor path")),
        };
        self.row_line(row, scored, started.elapsed().as_secs_f64())
    }

    /// The line of an audio row heard with others ([`FileJob::analyse_all`]): its time is the
    /// file's [`busy_s`](crate::engine::files::FileAnalysis::busy_s).
    fn heard_row_line(
        &self,
        row: &ManifestRow,
        analysis: Result<crate::engine::files::FileAnalysis>,
    ) -> Value {
        let busy_s = analysis.as_ref().map_or(0.0, |a| a.busy_s);
        self.row_line(row, analysis.map(Self::summary_and_words), busy_s)
    }

    /// The summary and everything that was heard (all parties, for the word error rate).
    fn summary_and_words(a: crate::engine::files::FileAnalysis) -> (CallSummary, Option<String>) {
        let heard = a
            .transcripts
            .iter()
            .map(|(_, t)| t.text())
            .collect::<Vec<_>>()
            .join(" ");
        (a.summary, Some(heard))
    }

    fn row_line(
        &self,
        row: &ManifestRow,
        scored: Result<(CallSummary, Option<String>)>,
        elapsed: f64,
    ) -> Value {
        let mut v = match scored {
            Ok((summary, transcript)) => {
                let mut v = serde_json::to_value(Versioned::new(&summary))
                    .expect("records serialise to JSON");
                let obj = v.as_object_mut().expect("records are objects");
                if let Some(audio_s) = summary.audio_s {
                    obj.insert("elapsed_s".into(), json!(elapsed));
                    obj.insert("rtf".into(), json!(elapsed / audio_s.max(1e-9)));
                }
                if let (Some(reference), Some(heard)) = (&row.reference, transcript) {
                    obj.insert("wer".into(), json!(wer::wer(reference, &heard)));
                }
                obj.insert("lang".into(), json!(row.lang.clone().or(summary.language)));
                v
            }
            Err(e) => json!({"error": format!("{e:#}"), "lang": row.lang}),
        };
        let obj = v.as_object_mut().expect("results are objects");
        obj.insert("id".into(), json!(row.id));
        obj.insert("label".into(), json!(row.label));
        obj.insert("type".into(), json!(row.kind));
        v
    }

    fn score_text(
        &self,
        text: &str,
        lang: Option<&str>,
        call_id: CallId,
    ) -> Result<(CallSummary, Option<String>)> {
        if text.trim().is_empty() {
            anyhow::bail!("empty text");
        }
        let summary =
            summarise_text(self.classifier, call_id, text, lang).map_err(anyhow::Error::msg)?;
        Ok((summary, None))
    }

    /// The summary and everything that was heard (all parties, for the word error rate).
    fn score_audio(
        &self,
        path: &Path,
        row: &ManifestRow,
        call_id: CallId,
    ) -> Result<(CallSummary, Option<String>)> {
        let transcriber = self.transcriber.context("no model loaded for audio rows")?;
        let job = FileJob {
            transcriber,
            classifier: self.classifier,
            options: &self.options,
            channels: self.channels,
            language: row.lang.as_deref(),
            with_transcript: false,
        };
        Ok(Self::summary_and_words(job.analyse(path, call_id)?))
    }
}

/// Ids already scored in `results.jsonl`, after making the file fit to resume: a torn last
/// line (an interrupted write) is cut off, rows that ended in an error are removed so that they
/// are tried again, and a second row for the same id is removed. The file is rewritten (to a
/// temporary file, then renamed over it) only when something was removed.
pub fn finished_ids(results: &Path) -> Result<HashSet<String>> {
    let mut done = HashSet::new();
    let Ok(bytes) = std::fs::read(results) else {
        return Ok(done);
    };
    let mut kept = Vec::with_capacity(bytes.len());
    let (mut torn, mut errors, mut repeats) = (false, 0, 0);
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        if !line.ends_with(b"\n") {
            torn = true;
            continue;
        }
        let Ok(v) = serde_json::from_slice::<Value>(line) else {
            torn = true;
            continue;
        };
        if v.get("error").is_some() {
            errors += 1;
            continue;
        }
        if let Some(id) = v["id"].as_str() {
            if !done.insert(id.to_owned()) {
                repeats += 1;
                continue;
            }
        }
        kept.extend_from_slice(line);
    }
    if kept.len() < bytes.len() {
        tracing::warn!(
            "{}: resuming: {} rows that failed are tried again{}{}",
            results.display(),
            errors,
            if repeats > 0 {
                format!(", {repeats} repeated rows dropped")
            } else {
                String::new()
            },
            if torn {
                ", an unfinished line dropped"
            } else {
                ""
            }
        );
        let dir = results.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir)
            .with_context(|| format!("rewriting {}", results.display()))?;
        tmp.write_all(&kept)?;
        tmp.as_file().sync_all()?;
        tmp.persist(results)
            .with_context(|| format!("rewriting {}", results.display()))?;
    }
    Ok(done)
}

/// Scores every row of the manifest not yet in `out/results.jsonl`: text rows `jobs` at a
/// time, then audio rows by `jobs` threads with `batch` files each, heard together
/// ([`FileJob::analyse_all`]).
pub fn run(
    rows: &[ManifestRow],
    out: &Path,
    scorer: &Scorer,
    jobs: usize,
    batch: usize,
) -> Result<usize> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let results_path = out.join("results.jsonl");
    let done = finished_ids(&results_path)?;
    let pending: Vec<&ManifestRow> = rows
        .iter()
        .filter(|r| !done.contains(r.id.as_deref().unwrap_or_default()))
        .collect();
    if pending.is_empty() {
        return Ok(0);
    }
    let file = crate::private_files::options()
        .create(true)
        .append(true)
        .open(&results_path)
        .with_context(|| format!("opening {}", results_path.display()))?;
    let sink = Mutex::new(file);
    let bar = indicatif::ProgressBar::new(pending.len() as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} calls {elapsed}<{eta} {per_sec}",
        )
        .expect("valid template"),
    );
    let write = |line: Value| -> Result<()> {
        let line = line.to_string() + "\n";
        let mut f = sink
            .lock()
            .map_err(|_| anyhow::anyhow!("writer poisoned"))?;
        f.write_all(line.as_bytes())?;
        f.flush()?;
        bar.inc(1);
        Ok(())
    };
    // Rows with a path and no text are heard; the others (text, or neither) are scored as
    // they are.
    let (heard, read): (Vec<&ManifestRow>, Vec<&ManifestRow>) = pending
        .iter()
        .partition(|r| r.text.is_none() && r.path.is_some());
    let next = AtomicUsize::new(0);
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(row) = read.get(i) else { break };
                if let Err(e) = write(scorer.score_row(row)) {
                    *failure.lock().expect("failure lock") = Some(e);
                    break;
                }
            });
        }
    });
    let mut failure = failure.into_inner().expect("failure lock");
    if failure.is_none() && !heard.is_empty() {
        failure = hear_rows(&heard, scorer, jobs, batch, &write).err();
    }
    bar.finish_and_clear();
    if let Some(e) = failure {
        return Err(e.context(format!("writing {}", results_path.display())));
    }
    Ok(pending.len())
}

/// Hears and scores audio rows, `jobs` threads with `batch` files each, writing each row's
/// line.
fn hear_rows(
    rows: &[&ManifestRow],
    scorer: &Scorer,
    jobs: usize,
    batch: usize,
    write: &dyn Fn(Value) -> Result<()>,
) -> Result<()> {
    let Some(transcriber) = scorer.transcriber else {
        for row in rows {
            write(scorer.row_line(
                row,
                Err(anyhow::anyhow!("no model loaded for audio rows")),
                0.0,
            ))?;
        }
        return Ok(());
    };
    let job = FileJob {
        transcriber,
        classifier: scorer.classifier,
        options: &scorer.options,
        channels: scorer.channels,
        language: None,
        with_transcript: false,
    };
    let files: Vec<FileToHear> = rows
        .iter()
        .map(|r| FileToHear {
            path: r.path.clone().expect("rows heard have a path"),
            call_id: CallId::new(r.id.clone().unwrap_or_default()),
            language: r.lang.clone(),
        })
        .collect();
    job.analyse_all(&files, jobs, batch, |i, analysis| {
        write(scorer.heard_row_line(rows[i], analysis))
    })
}

/// The rows of a `results.jsonl`, one per id (the last written wins), so that nothing is
/// counted twice whatever wrote the file.
pub fn read_results(path: &Path) -> Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut rows: Vec<Value> = Vec::new();
    let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for v in text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
    {
        match v["id"].as_str().map(str::to_owned) {
            Some(id) => match at.get(&id) {
                Some(&i) => rows[i] = v,
                None => {
                    at.insert(id, rows.len());
                    rows.push(v);
                }
            },
            None => rows.push(v),
        }
    }
    Ok(rows)
}

fn scored(results: &[Value]) -> Vec<Scored> {
    results
        .iter()
        .filter(|v| v.get("error").is_none())
        .filter(|v| matches!(v["label"].as_str(), Some("scam") | Some("legit")))
        .map(|v| Scored {
            is_scam: v["label"] == "scam",
            score: v["score"].as_f64().unwrap_or(0.0),
            level: match v["risk"].as_str() {
                Some("high") => 2,
                Some("suspected") => 1,
                _ => 0,
            },
            kind: v["type"].as_str().map(str::to_owned),
            lang: v["lang"].as_str().map(str::to_owned),
            first_alert_s: v["first_alert_s"].as_f64(),
        })
        .collect()
}

/// All the numbers of `metrics.json`.
pub fn compute_metrics(results: &[Value]) -> Value {
    let rows = scored(results);
    let suspected = metrics::binary(&rows, 1);
    let high = metrics::binary(&rows, 2);
    let mut labels: BTreeMap<String, usize> = BTreeMap::new();
    for v in results {
        *labels
            .entry(v["label"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    let mut confusion: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    for r in &rows {
        let label = if r.is_scam { "scam" } else { "legit" };
        let lvl = ["none", "suspected", "high"][r.level as usize];
        *confusion.entry(label).or_default().entry(lvl).or_default() += 1;
    }
    let times = metrics::alert_times(&rows);
    // Text rows have no audio: with none, speed is left out (an empty f64 sum is -0.0, which
    // the report printed as "audio -0.000 s").
    let n_audio = results.iter().filter(|v| v["audio_s"].is_number()).count();
    let audio_s: f64 = results
        .iter()
        .filter_map(|v| v["audio_s"].as_f64())
        .fold(0.0, |a, b| a + b);
    let elapsed_s: f64 = results.iter().filter_map(|v| v["elapsed_s"].as_f64()).sum();
    let wers: Vec<f64> = results.iter().filter_map(|v| v["wer"].as_f64()).collect();
    json!({
        "n": results.len(),
        "n_scored": rows.len(),
        "n_errors": results.iter().filter(|v| v.get("error").is_some()).count(),
        "labels": labels,
        "precision": suspected.precision,
        "recall": suspected.recall,
        "f1": suspected.f1,
        "accuracy": suspected.accuracy,
        "fpr": suspected.fpr,
        "roc_auc": metrics::roc_auc(&rows),
        "pr_auc": metrics::pr_auc(&rows),
        "f1_ci95": metrics::bootstrap(&rows, 1000, |r| metrics::binary(r, 1).f1),
        "roc_auc_ci95": metrics::bootstrap(&rows, 1000, metrics::roc_auc),
        "levels": {"suspected": suspected, "high": high},
        "confusion": confusion,
        "by_type": metrics::group_by(&rows, |r| r.kind.clone().unwrap_or_else(|| "(none)".into())),
        "by_language": metrics::group_by(&rows, |r| r.lang.clone().unwrap_or_else(|| "(none)".into())),
        "time_to_first_alert": times,
        "speed": {"n_audio": n_audio, "audio_s": (n_audio > 0).then_some(audio_s),
                  "elapsed_s": (n_audio > 0).then_some(elapsed_s),
                  "rtf": if audio_s > 0.0 { Some(elapsed_s / audio_s) } else { None }},
        "wer": {"n": wers.len(), "mean": if wers.is_empty() { None } else { Some(wers.iter().sum::<f64>() / wers.len() as f64) }},
    })
}

fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let head: String = headers
        .iter()
        .map(|h| format!("<th>{}</th>", report::html_escape(h)))
        .collect();
    let body: String = rows
        .into_iter()
        .map(|r| {
            format!(
                "<tr>{}</tr>",
                r.iter()
                    .map(|c| format!("<td>{}</td>", report::html_escape(c)))
                    .collect::<String>()
            )
        })
        .collect();
    format!("<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
}

fn fmt(v: &Value) -> String {
    match v {
        Value::Null => "–".to_owned(),
        Value::Number(n) if n.is_f64() => format!("{:.3}", n.as_f64().unwrap_or(0.0)),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Writes `metrics.json` and `report.html` for the results in `out`.
pub fn write_report(out: &Path, manifest: &Path) -> Result<Value> {
    let results = read_results(&out.join("results.jsonl"))?;
    let m = compute_metrics(&results);
    crate::private_files::write(&out.join("metrics.json"), serde_json::to_string_pretty(&m)?)?;
    let rows = scored(&results);
    let level_rows = ["suspected", "high"]
        .iter()
        .map(|l| {
            let b = &m["levels"][l];
            vec![
                format!("{l} or above"),
                fmt(&b["precision"]),
                fmt(&b["recall"]),
                fmt(&b["f1"]),
                fmt(&b["accuracy"]),
                fmt(&b["fpr"]),
            ]
        })
        .collect();
    let group_rows = |key: &str| -> Vec<Vec<String>> {
        m[key]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, b)| {
                        vec![
                            k.clone(),
                            fmt(&b["n"]),
                            fmt(&b["scam"]),
                            fmt(&b["legit"]),
                            fmt(&b["flagged"]),
                            fmt(&b["recall"]),
                            fmt(&b["fpr"]),
                        ]
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut types: Vec<(String, f64, bool)> = m["by_type"]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, b)| {
                    let n = b["n"].as_f64().unwrap_or(1.0).max(1.0);
                    (
                        k.clone(),
                        b["flagged"].as_f64().unwrap_or(0.0) / n,
                        b["scam"].as_u64().unwrap_or(0) > 0,
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    types.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
    let conf = &m["confusion"];
    let confusion_rows = ["scam", "legit"]
        .iter()
        .map(|l| {
            vec![
                l.to_string(),
                fmt(&conf[l]["none"]),
                fmt(&conf[l]["suspected"]),
                fmt(&conf[l]["high"]),
            ]
        })
        .map(|r| {
            r.into_iter()
                .map(|c| if c == "–" { "0".into() } else { c })
                .collect()
        })
        .collect();
    let times: Vec<f64> = m["time_to_first_alert"]["sorted_s"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    let scam_calls = rows.iter().filter(|r| r.is_scam).count();
    let errors: Vec<Vec<String>> = results
        .iter()
        .filter(|v| v.get("error").is_some())
        .map(|v| vec![fmt(&v["id"]), fmt(&v["error"])])
        .collect();
    let html = format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>vishguard report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child,th:first-child{{text-align:left}}
.plots{{display:flex;flex-wrap:wrap;gap:12px}}h1{{margin-bottom:0}}.sub{{color:#666}}</style></head><body>
<h1>vishguard detector report</h1><p class="sub">manifest {manifest}; {n} calls, {nerr} errors; generated by vishguard {version}</p>
<h2>Overall (flagged = suspected or high)</h2>
<p>F1 {f1} (95% CI {f1lo}–{f1hi}), ROC-AUC {auc} (95% CI {auclo}–{auchi}), PR-AUC {prauc}</p>
{levels}
<h2>Confusion matrix</h2>{confusion}
<div class="plots">{roc}{pr}{hist}{cdf}</div>{cdf_note}
<h2>By type</h2>{bytype}<div class="plots">{bars}</div>
<h2>By language</h2>{bylang}
<h2>Time to first alert</h2>{alert_times}
<h2>Speed and accuracy of transcription</h2>{speed}
<h2>Errors</h2>{errors}
</body></html>"#,
        manifest = report::html_escape(&manifest.display().to_string()),
        n = m["n"],
        nerr = m["n_errors"],
        version = env!("CARGO_PKG_VERSION"),
        f1 = fmt(&m["f1"]),
        f1lo = fmt(&m["f1_ci95"]["low"]),
        f1hi = fmt(&m["f1_ci95"]["high"]),
        auc = fmt(&m["roc_auc"]),
        auclo = fmt(&m["roc_auc_ci95"]["low"]),
        auchi = fmt(&m["roc_auc_ci95"]["high"]),
        prauc = fmt(&m["pr_auc"]),
        levels = table(
            &["level", "precision", "recall", "F1", "accuracy", "FPR"],
            level_rows
        ),
        confusion = table(
            &["label \\ risk", "none", "suspected", "high"],
            confusion_rows
        ),
        roc = report::roc_svg(&rows),
        pr = report::pr_svg(&rows),
        hist = report::histogram_svg(&rows),
        cdf = if times.is_empty() {
            String::new()
        } else {
            report::alert_cdf_svg(&times, scam_calls)
        },
        cdf_note = if times.is_empty() {
            "<p>No time-to-first-alert plot: no scam call was alerted at a known time.</p>"
        } else {
            ""
        },
        bytype = table(
            &["type", "n", "scam", "legit", "flagged", "recall", "FPR"],
            group_rows("by_type")
        ),
        bars = report::type_bars_svg(&types),
        bylang = table(
            &["language", "n", "scam", "legit", "flagged", "recall", "FPR"],
            group_rows("by_language")
        ),
        alert_times = if times.is_empty() {
            "<p>No alerted scam call has a time: alerts are timed in audio, and transcript rows \
             without segment times have none.</p>"
                .to_owned()
        } else {
            format!(
                "<p>{} alerted scam calls; median {} s, 90th percentile {} s</p>",
                m["time_to_first_alert"]["n"],
                fmt(&m["time_to_first_alert"]["median_s"]),
                fmt(&m["time_to_first_alert"]["p90_s"])
            )
        },
        speed = if m["speed"]["n_audio"].as_u64().unwrap_or(0) == 0 {
            "<p>No audio rows: the calls are transcripts, so there is no transcription to time \
             or to check against a reference.</p>"
                .to_owned()
        } else {
            format!(
                "<p>audio {} s, processing {} s, real-time factor {}; mean WER {} over {} calls \
                 with a reference</p>",
                fmt(&m["speed"]["audio_s"]),
                fmt(&m["speed"]["elapsed_s"]),
                fmt(&m["speed"]["rtf"]),
                fmt(&m["wer"]["mean"]),
                m["wer"]["n"]
            )
        },
        errors = if errors.is_empty() {
            "<p>none</p>".to_owned()
        } else {
            table(&["id", "error"], errors)
        },
    );
    crate::private_files::write(&out.join("report.html"), html)?;
    Ok(m)
}

/// What changed between two runs: metrics side by side and the calls whose verdict flipped.
pub fn compare(a: &Path, b: &Path) -> Result<Value> {
    let (ra, rb) = (read_results(a)?, read_results(b)?);
    let index = |r: &[Value]| -> BTreeMap<String, Value> {
        r.iter()
            .filter_map(|v| Some((v["id"].as_str()?.to_owned(), v.clone())))
            .collect()
    };
    let (ia, ib) = (index(&ra), index(&rb));
    let flagged = |v: &Value| matches!(v["risk"].as_str(), Some("suspected") | Some("high"));
    let mut flips = Vec::new();
    for (id, va) in &ia {
        if let Some(vb) = ib.get(id) {
            if flagged(va) != flagged(vb) {
                let fixed = flagged(vb) == (vb["label"] == "scam");
                flips.push(json!({"id": id, "label": va["label"], "type": va["type"],
                    "before": {"risk": va["risk"], "score": va["score"]},
                    "after": {"risk": vb["risk"], "score": vb["score"]},
                    "change": if fixed { "fixed" } else { "broken" }}));
            }
        }
    }
    let (ma, mb) = (compute_metrics(&ra), compute_metrics(&rb));
    let keys = ["precision", "recall", "f1", "fpr", "roc_auc", "pr_auc"];
    let delta: BTreeMap<&str, Value> = keys
        .iter()
        .map(|k| (*k, json!({"a": ma[k], "b": mb[k], "delta": mb[k].as_f64().unwrap_or(0.0) - ma[k].as_f64().unwrap_or(0.0)})))
        .collect();
    Ok(
        json!({"a": a.display().to_string(), "b": b.display().to_string(),
        "only_in_a": ia.keys().filter(|k| !ib.contains_key(*k)).count(),
        "only_in_b": ib.keys().filter(|k| !ia.contains_key(*k)).count(),
        "metrics": delta, "flipped": flips}),
    )
}
