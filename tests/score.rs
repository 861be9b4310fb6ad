//! `vishguard score`: metrics checked against an independent computation, resuming after an
//! interruption, error rows, the audio manifest, and the HTML report in a real browser.

mod support;

use support::vishguard;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn dev_manifest(dir: &Path, with_missing_file: bool) -> Option<std::path::PathBuf> {
    let src = support::dev_set("en")?;
    let mut out = String::new();
    for line in std::fs::read_to_string(src).unwrap().lines() {
        let r: Value = serde_json::from_str(line).unwrap();
        let row = serde_json::json!({"id": r["id"], "text": r["text"], "label": r["label"], "type": r["type"], "lang": r["lang"]});
        out += &(row.to_string() + "\n");
    }
    if with_missing_file {
        out += r#"{"id": "gone", "path": "no/such/call.wav", "label": "scam"}"#;
        out += "\n";
    }
    let path = dir.join("manifest.jsonl");
    std::fs::write(&path, out).unwrap();
    Some(path)
}

fn run_score(manifest: &Path, out: &Path) {
    let status = vishguard()
        .args(["score", "--model", "tiny.en"])
        .arg(manifest)
        .arg("--out")
        .arg(out)
        .status()
        .unwrap();
    assert!(status.success());
}

fn results(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn metrics_match_an_independent_computation_and_survive_an_interruption() {
    let dir = tempfile::tempdir().unwrap();
    let Some(manifest) = dev_manifest(dir.path(), true) else {
        return;
    };
    let out = dir.path().join("run");
    run_score(&manifest, &out);
    let rows = results(&out);
    assert_eq!(rows.len(), 569);
    let gone = rows.iter().find(|r| r["id"] == "gone").unwrap();
    assert!(
        gone["error"].as_str().unwrap().contains("call.wav"),
        "{gone}"
    );

    // Independent computation from the result rows.
    let (mut tp, mut fp, mut fn_, mut tn) = (0.0, 0.0, 0.0, 0.0);
    let (mut pos, mut neg) = (Vec::new(), Vec::new());
    for r in rows.iter().filter(|r| r.get("error").is_none()) {
        let flagged = r["risk"] != "none";
        let score = r["score"].as_f64().unwrap();
        match r["label"].as_str().unwrap() {
            "scam" => {
                pos.push(score);
                if flagged {
                    tp += 1.0
                } else {
                    fn_ += 1.0
                }
            }
            "legit" => {
                neg.push(score);
                if flagged {
                    fp += 1.0
                } else {
                    tn += 1.0
                }
            }
            _ => {}
        }
    }
    let precision = tp / (tp + fp);
    let recall = tp / (tp + fn_);
    let f1 = 2.0 * precision * recall / (precision + recall);
    let mut wins = 0.0;
    for p in &pos {
        for n in &neg {
            wins += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    let auc = wins / (pos.len() * neg.len()) as f64;
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    let close = |k: &str, v: f64| {
        assert!(
            (m[k].as_f64().unwrap() - v).abs() < 1e-9,
            "{k}: {} vs {v}",
            m[k]
        )
    };
    close("precision", precision);
    close("recall", recall);
    close("f1", f1);
    close("fpr", fp / (fp + tn));
    close("roc_auc", auc);
    assert_eq!(m["n_errors"], 1);
    // A text manifest has no audio: the report says so rather than "audio -0.000 s".
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(!html.contains("-0.000"), "a negative zero in the report");
    assert!(
        html.contains("No audio rows"),
        "the report times audio it has not heard"
    );
    assert_eq!(m["speed"]["audio_s"], Value::Null);
    let ci = &m["f1_ci95"];
    assert!(ci["low"].as_f64().unwrap() <= f1 && f1 <= ci["high"].as_f64().unwrap());

    // Interrupt: keep 200 lines and half of the next, then resume.
    let text = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let torn = format!(
        "{}\n{}",
        lines[..200].join("\n"),
        &lines[200][..lines[200].len() / 2]
    );
    std::fs::write(out.join("results.jsonl"), torn).unwrap();
    run_score(&manifest, &out);
    let resumed = results(&out);
    assert_eq!(resumed.len(), 569);
    let ids: std::collections::HashSet<&str> =
        resumed.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 569, "each call exactly once");
    let m2: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    for k in ["precision", "recall", "f1", "fpr", "roc_auc", "pr_auc"] {
        assert_eq!(m[k], m2[k], "{k} changed after resuming");
    }

    // Compare against itself: nothing flips.
    let cmp = vishguard()
        .args(["score", "--compare"])
        .arg(out.join("results.jsonl"))
        .arg(out.join("results.jsonl"))
        .output()
        .unwrap();
    let diff: Value = serde_json::from_slice(&cmp.stdout).unwrap();
    assert_eq!(diff["flipped"].as_array().unwrap().len(), 0);
}

#[test]
fn audio_manifest_scores_the_bundled_samples_and_the_report_renders() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let status = vishguard()
        .arg("score")
        .arg(support::repo().join("audio-samples/labels.csv"))
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let rows = results(&out);
    assert_eq!(rows.len(), 12);
    let by_id: HashMap<&str, &Value> = rows
        .iter()
        .map(|r| (r["id"].as_str().unwrap(), r))
        .collect();
    for (id, r) in &by_id {
        assert!(r.get("error").is_none(), "{id}: {r}");
        assert!(r["rtf"].as_f64().unwrap() > 0.0);
    }
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(m["f1"], 1.0);
    assert_eq!(m["fpr"], 0.0);
    assert!(m["time_to_first_alert"]["median_s"].as_f64().unwrap() <= 15.0);

    // The report in headless Chromium: it loads, and every plot is an SVG it can lay out.
    let html = out.join("report.html");
    let dom = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--dump-dom",
        ])
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("chromium (installed by .ci/run)");
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("vishguard detector report"));
    assert!(dom.matches("<svg").count() >= 5, "plots missing");
    assert!(!dom.contains("plot failed"));
}

#[test]
fn labels_as_datasets_spell_them_failed_rows_retried_and_nothing_counted_twice() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("m.csv");
    std::fs::write(
        &manifest,
        "id,path,text,label\n\
         a,,\"This is the Social Security Administration, a warrant will be issued for your arrest\",SCAM\n\
         b,,\"Hi, this is the pharmacy, your prescription is ready\",Legitimate\n\
         c,,\"Go buy gift cards and read me the numbers\",1\n\
         d,,\"See you at dinner tonight\",0\n\
         e,later.wav,,scam\n",
    )
    .unwrap();
    let out = dir.path().join("run");
    let score = || {
        vishguard()
            .args(["score", "--model", "tiny.en"])
            .arg(&manifest)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap()
    };
    let metrics = || -> Value {
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap()
    };
    assert!(score().status.success());
    let m = metrics();
    assert_eq!(m["labels"], serde_json::json!({"legit": 2, "scam": 3}));
    assert_eq!(
        (m["n"].as_u64(), m["n_scored"].as_u64()),
        (Some(5), Some(4))
    );
    assert_eq!(m["n_errors"], 1);
    // The missing recording appears; the row that failed is tried again, the rest are not.
    std::fs::copy(
        support::fixture("asr/irs_warrant_phone.wav"),
        dir.path().join("later.wav"),
    )
    .unwrap();
    let second = score();
    assert!(second.status.success());
    let said = String::from_utf8_lossy(&second.stdout) + String::from_utf8_lossy(&second.stderr);
    assert!(said.contains("scored 1 new call"), "{said}");
    let rows = results(&out);
    assert_eq!(rows.len(), 5, "{rows:?}");
    assert!(rows.iter().all(|r| r.get("error").is_none()), "{rows:?}");
    // Run again: nothing new, nothing counted twice.
    assert!(score().status.success());
    let m = metrics();
    assert_eq!(
        (m["n"].as_u64(), m["n_scored"].as_u64()),
        (Some(5), Some(5))
    );
    assert_eq!(results(&out).len(), 5);
    // A label that is neither is an error naming the row.
    std::fs::write(&manifest, "text,label\nhello,maybe\n").unwrap();
    let bad = score();
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("row 1") && err.contains("\"maybe\""), "{err}");
    // `unwanted` (the dev set's telemarketing label) is kept and counted, not scored.
    std::fs::write(
        &manifest,
        "text,label\nbuy solar panels today,Unwanted\nhello,scam\n",
    )
    .unwrap();
    assert!(score().status.success());
}
