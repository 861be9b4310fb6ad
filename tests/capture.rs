//! Live capture through a real sound server: `.ci/run` starts PulseAudio with a null sink whose
//! monitor is the default source; a scam sample is played into it while `vishguard listen`
//! captures from the default device through cpal and ALSA.
#![cfg(feature = "capture")]

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

/// One call captured from the default device: the alerts printed.
fn capture_one_call(webhook: &str, outbox: &std::path::Path) -> Vec<serde_json::Value> {
    let listen = support::vishguard()
        .args([
            "listen",
            "--model",
            "tiny.en",
            "--format",
            "jsonl",
            "--seconds",
            "24",
            "--webhook",
            webhook,
            "--webhook-outbox",
        ])
        .arg(outbox)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // cpal's first callback through ALSA and pulse comes about 2 s after the stream starts.
    std::thread::sleep(Duration::from_secs(5));
    let played = Command::new("paplay")
        .arg(support::repo().join("audio-samples/en_scam_tech_support.wav"))
        .status()
        .unwrap();
    assert!(played.success());
    let out = listen.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let alerts: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("alert_id").is_some())
        .collect();
    assert!(!alerts.is_empty(), "{stdout}");
    assert!(alerts
        .iter()
        .any(|a| a["category"] == "account_problem" || a["category"] == "company_impersonation"));
    alerts
}

#[test]
fn listen_captures_a_played_scam_call_and_raises_the_alert_and_the_next_call_delivers_too() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        panic!("no sound server: run through .ci/run, which starts PulseAudio with a null sink");
    }
    let devices = support::vishguard()
        .args(["listen", "--list-devices"])
        .output()
        .unwrap();
    assert!(
        devices.status.success(),
        "{}",
        String::from_utf8_lossy(&devices.stderr)
    );
    // Two calls on the same device, one outbox: the second call's alerts are not taken for
    // the first's (call ids were the device's name; its alerts were never delivered).
    let receiver = support::receiver::Receiver::start(|_, _| 200);
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    let mut delivered_before = 0;
    for call in 0..2 {
        let alerts = capture_one_call(&receiver.url, &outbox);
        let ids: Vec<String> = alerts
            .iter()
            .map(|a| a["alert_id"].as_str().unwrap().to_owned())
            .collect();
        let accepted = receiver.accepted_ids();
        assert_eq!(
            accepted[delivered_before..],
            ids[..],
            "call {call}: every alert delivered, once"
        );
        delivered_before = accepted.len();
    }
}
