//! Events to NATS JetStream against a real broker (Debian's `nats-server` with JetStream, a
//! store folder of its own): every alert stored once, every call a summary, across a broker
//! that is down at the start and then killed and restarted mid-call. `vishguard alerts tail`
//! reads the stream back.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use support::broker::Broker;
use support::vishguard;

/// What the stream holds, through `vishguard alerts tail`.
fn stream_events(broker: &Broker) -> Vec<Value> {
    support::json_stdout(vishguard().args(["alerts", "tail", "--nats", &broker.url()]))
}

#[test]
fn events_reach_a_broker_that_requires_tls() {
    let dir = tempfile::tempdir().unwrap();
    let made =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
    let mut broker = Broker::new(&dir.path().join("store"));
    broker.extra = ["--tls", "--tlscert", cert.to_str().unwrap()]
        .iter()
        .map(|s| s.to_string())
        .chain(["--tlskey".to_owned(), key.to_str().unwrap().to_owned()])
        .collect();
    broker.start();
    let url = format!("tls://127.0.0.1:{}", broker.port);
    let stdout = listen_finding_a_scam(
        vishguard()
            .args(["listen", "--model", "tiny.en", "--format", "jsonl"])
            .args(["--nats", &url, "--nats-tls-ca"])
            .arg(&cert)
            .arg("--nats-outbox")
            .arg(dir.path().join("outbox"))
            .arg("--from-file")
            .arg(support::repo().join("audio-samples/en_scam_safe_account.wav")),
    );
    let events = support::json_stdout(
        vishguard()
            .args(["alerts", "tail", "--nats", &url, "--tls-ca"])
            .arg(&cert),
    );
    let stored: Vec<String> = events
        .iter()
        .filter(|e| e["event"] == "alert")
        .map(|e| e["alert_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(stored, printed_alert_ids(&stdout));
    // A client that does not trust the broker's certificate is told so, and gets nothing.
    let untrusting = vishguard()
        .args(["alerts", "tail", "--nats", &url])
        .output()
        .unwrap();
    assert_eq!(untrusting.status.code(), Some(2));
    assert!(untrusting.stdout.is_empty());
}

/// Runs `listen` and returns what it printed; it must exit 1 (a scam was found).
fn listen_finding_a_scam(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn count_by_kind(events: &[Value]) -> HashMap<String, usize> {
    let mut by = HashMap::new();
    for e in events {
        *by.entry(e["event"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    by
}

fn printed_alert_ids(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "alert")
        .map(|v| v["alert_id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn two_calls_store_every_alert_once_and_a_summary_each() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::new(&dir.path().join("store"));
    broker.start();
    let stdout = listen_finding_a_scam(
        vishguard()
            .args(["listen", "--model", "tiny.en", "--format", "jsonl"])
            .args(["--nats", &broker.url(), "--nats-outbox"])
            .arg(dir.path().join("outbox"))
            .arg("--from-file")
            .arg(support::repo().join("audio-samples/en_scam_safe_account.wav"))
            .arg("--from-file")
            .arg(support::repo().join("audio-samples/en_legit_delivery.wav")),
    );
    let printed = printed_alert_ids(&stdout);
    assert!(!printed.is_empty());
    let events = stream_events(&broker);
    assert!(events.iter().all(|e| e["schema_version"] == 1));
    let by = count_by_kind(&events);
    assert_eq!(by.get("call_started"), Some(&2), "{by:?}");
    assert_eq!(by.get("call_ended"), Some(&2), "{by:?}");
    assert_eq!(by.get("transcript"), None, "transcripts only when asked");
    let stored: Vec<String> = events
        .iter()
        .filter(|e| e["event"] == "alert")
        .map(|e| e["alert_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(stored, printed, "every alert once, in order");
    // A summary's verdict is the call's.
    let scam = events
        .iter()
        .find(|e| {
            e["event"] == "call_ended"
                && e["call_id"]
                    .as_str()
                    .unwrap()
                    .starts_with("en_scam_safe_account-")
        })
        .unwrap();
    assert_ne!(scam["risk"], "none", "{scam}");

    // Whoever else publishes into the stream: `alerts tail` prints one JSON object per line,
    // skips what is not JSON with a warning, and never copies raw bytes to the terminal.
    let url = broker.url();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
        for body in [
            b"not json \x1b]0;pwned\x07\x1b[2J".to_vec(),
            b"{\n  \"event\": \"note\",\n  \"text\": \"pretty\"\n}".to_vec(),
        ] {
            js.publish("vishguard.events.junk", body.into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    });
    let out = vishguard()
        .args(["alerts", "tail", "--nats", &broker.url()])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        !out.stdout.contains(&0x1b),
        "an escape sequence reached stdout"
    );
    let lines = support::json_lines(&out.stdout);
    assert_eq!(
        lines.len(),
        events.len() + 1,
        "the pretty JSON on one line, the junk skipped"
    );
    assert_eq!(lines.last().unwrap()["text"], "pretty");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not JSON"), "{stderr}");
}

#[test]
fn mutual_tls_events_go_with_a_client_certificate_and_not_without() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let signed = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = signed(vec!["127.0.0.1".into(), "localhost".into()]);
    let (client_cert, client_key) = signed(vec!["vishguard-client".into()]);
    let ca_pem = write("ca.pem", ca.pem());
    let (server_cert, server_key) = (
        write("server.pem", server_cert),
        write("server.key", server_key),
    );
    let (client_cert, client_key) = (
        write("client.pem", client_cert),
        write("client.key", client_key),
    );
    let mut broker = Broker::new(&dir.path().join("store"));
    broker.extra = vec!["--tls".into(), "--tlsverify".into()];
    for (flag, path) in [
        ("--tlscert", &server_cert),
        ("--tlskey", &server_key),
        ("--tlscacert", &ca_pem),
    ] {
        broker.extra.push(flag.into());
        broker.extra.push(path.to_str().unwrap().into());
    }
    broker.start();
    let url = format!("tls://127.0.0.1:{}", broker.port);
    let config = write(
        "listen.toml",
        format!(
            "[[sinks]]\ntype = \"nats\"\nservers = [\"{url}\"]\ntls_ca = {:?}\n\
             tls_client_cert = {:?}\ntls_client_key = {:?}\noutbox = {:?}\n",
            ca_pem,
            client_cert,
            client_key,
            dir.path().join("outbox")
        ),
    );
    let stdout = listen_finding_a_scam(
        vishguard()
            .args([
                "listen",
                "--model",
                "tiny.en",
                "--no-context-check",
                "--format",
                "jsonl",
            ])
            .arg("--config")
            .arg(&config)
            .arg("--from-file")
            .arg(support::repo().join("audio-samples/en_scam_grandson.wav")),
    );
    let tail = |with_cert: bool| {
        let mut cmd = vishguard();
        cmd.args(["alerts", "tail", "--nats", &url, "--tls-ca"])
            .arg(&ca_pem);
        if with_cert {
            cmd.arg("--tls-cert")
                .arg(&client_cert)
                .arg("--tls-key")
                .arg(&client_key);
        }
        cmd
    };
    let events = support::json_stdout(&mut tail(true));
    let stored: Vec<String> = events
        .iter()
        .filter(|e| e["event"] == "alert")
        .map(|e| e["alert_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(!stored.is_empty());
    assert_eq!(stored, printed_alert_ids(&stdout));
    // Without a client certificate the broker lets nothing through.
    let refused = tail(false).output().unwrap();
    assert!(!refused.status.success());
    assert!(refused.stdout.is_empty());
}

#[test]
fn a_broker_down_at_the_start_then_killed_mid_call_loses_and_duplicates_no_alert() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::new(&dir.path().join("store"));
    // The broker is not up yet: events wait in the outbox.
    let mut listen = vishguard()
        .args([
            "listen",
            "--model",
            "tiny.en",
            "--format",
            "jsonl",
            "--realtime",
        ])
        .args(["--nats", &broker.url(), "--nats-outbox"])
        .arg(dir.path().join("outbox"))
        .arg("--from-file")
        .arg(support::repo().join("audio-samples/en_scam_safe_account.wav"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(listen.stdout.take().unwrap());
    let mut stdout = String::new();
    let mut line = String::new();
    while out.read_line(&mut line).unwrap() > 0 {
        stdout.push_str(&line);
        let first_alert = line.contains("\"event\":\"alert\"");
        line.clear();
        if first_alert {
            break;
        }
    }
    // Up after the first alert; killed a second later, mid-call; back two seconds after.
    broker.start();
    std::thread::sleep(Duration::from_secs(1));
    broker.kill();
    std::thread::sleep(Duration::from_secs(2));
    broker.start();
    out.read_to_string_into(&mut stdout);
    let status = listen.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{stdout}");
    let printed = printed_alert_ids(&stdout);
    assert!(printed.len() >= 2, "{stdout}");
    let events = stream_events(&broker);
    let stored: Vec<String> = events
        .iter()
        .filter(|e| e["event"] == "alert")
        .map(|e| e["alert_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(stored, printed, "every alert once, in order");
    let by = count_by_kind(&events);
    assert_eq!(
        (by.get("call_started"), by.get("call_ended")),
        (Some(&1), Some(&1)),
        "{by:?}"
    );
    // Nothing left behind.
    let pending = support::json_stdout(
        vishguard()
            .args(["alerts", "list", "--outbox"])
            .arg(dir.path().join("outbox")),
    );
    assert!(pending.is_empty(), "{pending:?}");
}

trait ReadRest {
    fn read_to_string_into(&mut self, s: &mut String);
}

impl<R: BufRead> ReadRest for R {
    fn read_to_string_into(&mut self, s: &mut String) {
        let _ = std::io::Read::read_to_string(self, s);
    }
}
