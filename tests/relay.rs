//! `serve --role ingest` and `--role worker` joined by a real NATS broker (Debian's
//! `nats-server -js`): calls played as live calls into an ingest, heard by workers, events in
//! the stream `VISHGUARD_EVENTS`. A worker killed mid-call and a broker restarted mid-run lose
//! no alert and send none twice.

mod support;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::broker::Broker;
use support::vishguard;

/// A `vishguard serve` child: its address and its log, killed when dropped.
struct Serve {
    child: Child,
    http: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    fn start(config: &Path, role: &str) -> Self {
        let mut child = vishguard()
            .args(["serve", "--config"])
            .arg(config)
            .args(["--role", role, "--http", "127.0.0.1:0"])
            .args(["--model", "tiny.en", "--no-context-check"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut http = None;
        while http.is_none() {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("{role} exited: {:?}", log.lock().unwrap()))
                .unwrap();
            if let Some(a) = line.split("listening on ").nth(1) {
                http = Some(a.trim().to_owned());
            }
            log.lock().unwrap().push(line);
        }
        let kept = log.clone();
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                kept.lock().unwrap().push(l);
            }
        });
        Self {
            child,
            http: http.unwrap(),
            log,
        }
    }

    /// A metric's value (counters carry `_total`).
    fn metric(&self, name: &str) -> f64 {
        let (code, body) = support::serve::get(&format!("{}/metrics", self.http), None);
        assert_eq!(code, 200, "{body}");
        body.lines()
            .find_map(|l| {
                let (n, v) = l.split_once(' ')?;
                (n == name || n == format!("{name}_total")).then(|| v.parse().unwrap())
            })
            .unwrap_or_else(|| panic!("no {name} in {body}"))
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nats_section(broker: &Broker, dir: &Path, name: &str) -> String {
    format!(
        "[nats]\nservers = [\"{}\"]\nclaim_timeout_s = 3\nworker_max_calls = 5\n\
         spool = \"{}\"\nevents_outbox = \"{}\"\n",
        broker.url(),
        dir.join(format!("{name}-spool")).display(),
        dir.join(format!("{name}-outbox")).display()
    )
}

fn worker(broker: &Broker, dir: &Path, name: &str) -> Serve {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(&config, nats_section(broker, dir, name)).unwrap();
    Serve::start(&config, "worker")
}

/// An ingest that plays `files` (bundled samples) as live calls at real speed, publishing
/// each party's audio in messages of `coalesce_ms`.
fn ingest(broker: &Broker, dir: &Path, files: &[&str], coalesce_ms: u64) -> Serve {
    let mut text = nats_section(broker, dir, "ingest");
    text += &format!("coalesce_ms = {coalesce_ms}\n");
    for f in files {
        text += &format!(
            "\n[[sources]]\ntype = \"file\"\nrealtime = true\npath = \"{}\"\n",
            support::repo()
                .join("audio-samples")
                .join(format!("{f}.wav"))
                .display()
        );
    }
    let config = dir.join("ingest.toml");
    std::fs::write(&config, text).unwrap();
    Serve::start(&config, "ingest")
}

/// The events stored so far; none while the stream does not exist yet (it is made with the
/// first event a worker publishes, and a poll can come before that: `alerts tail` then says so
/// and exits 2).
fn stream_events(broker: &Broker) -> Vec<Value> {
    let out = vishguard()
        .args(["alerts", "tail", "--nats", &broker.url()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && stderr.contains("is not there yet") {
        return Vec::new();
    }
    assert!(out.status.success(), "{stderr}");
    support::json_lines(&out.stdout)
}

/// Polls the events stream until `calls` calls have ended; the events then.
fn until_ended(broker: &Broker, calls: usize, within: Duration) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let events = stream_events(broker);
        let ended = events.iter().filter(|e| e["event"] == "call_ended").count();
        if ended >= calls {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "{ended} of {calls} calls ended after {within:?}: {events:#?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Every call opened and ended once, every alert stored once, the scam samples alerted and
/// the legitimate ones did not, and no audio went missing on the way.
fn check_calls(events: &[Value], files: &[&str]) {
    let mut started: HashMap<String, usize> = HashMap::new();
    let mut ended: HashMap<String, Value> = HashMap::new();
    let mut alerts: HashMap<String, usize> = HashMap::new();
    let mut alert_ids = HashSet::new();
    for e in events {
        match e["event"].as_str().unwrap() {
            "call_started" => *started.entry(e["id"].as_str().unwrap().into()).or_default() += 1,
            "call_ended" => {
                let id = e["call_id"].as_str().unwrap().to_owned();
                assert!(
                    ended.insert(id.clone(), e.clone()).is_none(),
                    "{id} ended twice"
                );
            }
            "alert" => {
                let id = e["alert_id"].as_str().unwrap().to_owned();
                assert!(alert_ids.insert(id.clone()), "alert {id} stored twice");
                *alerts
                    .entry(e["call_id"].as_str().unwrap().into())
                    .or_default() += 1;
            }
            other => panic!("unexpected event {other}"),
        }
    }
    assert_eq!(ended.len(), files.len(), "{ended:#?}");
    let mut stems: Vec<String> = Vec::new();
    for (id, summary) in &ended {
        assert_eq!(
            started.get(id),
            Some(&1),
            "{id}: started {:?}",
            started.get(id)
        );
        let stream = &summary["stream"];
        assert_eq!(stream["missing_audio_s"], 0.0, "{id}: {summary}");
        assert_eq!(stream["dropped_audio_s"], 0.0, "{id}: {summary}");
        // A takeover replays as fast as the worker hears: it waits, and drops nothing.
        assert_eq!(stream["dropped_utterances"], 0, "{id}: {summary}");
        let stem = files
            .iter()
            .find(|f| id.starts_with(&format!("{f}-")))
            .unwrap_or_else(|| panic!("{id} is none of the calls played"));
        stems.push(stem.to_string());
        let n = alerts.get(id).copied().unwrap_or(0);
        if stem.contains("_scam_") {
            assert!(n > 0, "{id}: no alert: {summary}");
            assert_ne!(summary["risk"], "none", "{id}: {summary}");
            assert_eq!(summary["stream"]["alerts"], n, "{id}: {summary}");
        } else {
            assert_eq!(n, 0, "{id}: a legitimate call alerted: {summary}");
        }
    }
    stems.sort();
    let mut want: Vec<String> = files.iter().map(|f| f.to_string()).collect();
    want.sort();
    assert_eq!(stems, want);
}

#[test]
fn ten_calls_over_two_workers_one_killed_mid_call_each_alert_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::new(&dir.path().join("store"));
    broker.start();
    let mut a = worker(&broker, dir.path(), "a");
    let b = worker(&broker, dir.path(), "b");
    // The scam samples tiny.en flags live, twice each, and four legitimate calls.
    let files = [
        "en_scam_grandson",
        "en_scam_safe_account",
        "en_scam_tech_support",
        "en_scam_grandson",
        "en_scam_safe_account",
        "en_scam_tech_support",
        "en_legit_delivery",
        "en_legit_pharmacy",
        "en_legit_police_outreach",
        "en_legit_bank_fraud_check",
    ];
    let _ingest = ingest(&broker, dir.path(), &files, 0);
    // Mid-call: once the first alert is stored, while worker a holds its calls.
    let deadline = Instant::now() + Duration::from_secs(90);
    while !stream_events(&broker).iter().any(|e| e["event"] == "alert") {
        assert!(Instant::now() < deadline, "no alert within 90 s");
        std::thread::sleep(Duration::from_millis(300));
    }
    let held = a.metric("vishguard_relay_calls_held");
    assert!(held >= 1.0, "worker a holds no call: {:?}", a.log());
    a.kill();
    let events = until_ended(&broker, files.len(), Duration::from_secs(240));
    check_calls(&events, &files);
    // Worker b finished a's calls, skipping what a had stored.
    assert!(
        b.metric("vishguard_relay_calls_taken_over") >= held,
        "{:?}",
        b.log()
    );
    let skipped: usize = b
        .log()
        .iter()
        .filter_map(|l| l.split("taking the call over: ").nth(1))
        .map(|rest| rest.split(' ').next().unwrap().parse::<usize>().unwrap())
        .sum();
    assert!(skipped > 0, "a had stored nothing: {:?}", b.log());
    // The gauge follows a call's acknowledgement, which follows its stored summary by up to
    // a poll or two.
    assert_eq!(settled(&b, "vishguard_relay_calls_held", 0.0), 0.0);
}

/// A gauge's value once it reaches `want`, or its last value after 10 s.
fn settled(s: &Serve, name: &str, want: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = s.metric(name);
        if v == want || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn broker_restart_mid_run_loses_no_audio_or_alert_and_sends_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::new(&dir.path().join("store"));
    broker.start();
    // A short idle limit: the outage and the read that stalls after it must not count as the
    // calls' silence (a 12 s outage with `call_idle_s = 6` had closed the call in progress).
    let config = dir.path().join("w.toml");
    let text = nats_section(&broker, dir.path(), "w") + "call_idle_s = 5\n";
    std::fs::write(&config, text).unwrap();
    let w = Serve::start(&config, "worker");
    // A call opening that is not one, on the workers' subject: dropped, the rest goes on.
    let url = broker.url();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let client = async_nats::connect(url).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let deadline = Instant::now() + Duration::from_secs(30);
        // The worker creates the stream at start.
        while js.get_stream("VISHGUARD_AUDIO").await.is_err() {
            assert!(Instant::now() < deadline, "the worker made no audio stream");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let stored = |subject: &'static str, headers: async_nats::HeaderMap, body: Vec<u8>| {
            let js = js.clone();
            async move {
                js.publish_with_headers(subject, headers, body.into())
                    .await
                    .unwrap()
                    .await
                    .unwrap();
            }
        };
        let none = async_nats::HeaderMap::new;
        let opening = |id: &str| {
            serde_json::json!({"id": id, "parties": [{"label": "caller", "sample_rate": 8000}]})
                .to_string()
                .into_bytes()
        };
        // Not JSON; an id of 100 KB (its subject would be over the server's limit); an id of
        // 300 bytes (over the engine's bound).
        stored("vishguard.calls.junk", none(), b"{not json".to_vec()).await;
        stored(
            "vishguard.calls.huge",
            none(),
            opening(&"Y".repeat(100_000)),
        )
        .await;
        stored("vishguard.calls.long", none(), opening(&"L".repeat(300))).await;
        // A call whose first chunk claims the last sequence number there is, then a close:
        // the chunk is skipped, the call ends.
        stored("vishguard.calls.hostile", none(), opening("hostile")).await;
        let mut h = none();
        for (k, v) in [
            ("Vishguard-Call-Id", "hostile"),
            ("Vishguard-Kind", "audio"),
            ("Vishguard-Party", "0"),
            ("Vishguard-Seq", "18446744073709551615"),
            ("Vishguard-Offset", "0"),
        ] {
            h.insert(k, v);
        }
        stored("vishguard.audio.hostile", h, vec![0; 320]).await;
        let mut h = none();
        h.insert("Vishguard-Call-Id", "hostile");
        h.insert("Vishguard-Kind", "close");
        stored("vishguard.audio.hostile", h, Vec::new()).await;
    });
    let files = [
        "en_scam_grandson",
        "en_scam_tech_support",
        "en_legit_delivery",
        "en_legit_pharmacy",
    ];
    // 200 ms messages: chunks joined, and cut again across the broker's outage.
    let ingest = ingest(&broker, dir.path(), &files, 200);
    // Mid-call: 3 s of audio published, then the broker is gone for 3 s.
    let deadline = Instant::now() + Duration::from_secs(60);
    while ingest.metric("vishguard_relay_published") < 4.0 * 15.0 {
        assert!(Instant::now() < deadline, "{:?}", ingest.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    broker.kill();
    std::thread::sleep(Duration::from_secs(3));
    broker.start();
    let events = until_ended(&broker, files.len() + 1, Duration::from_secs(180));
    let (hostile, events): (Vec<Value>, Vec<Value>) = events
        .into_iter()
        .partition(|e| e["call_id"] == "hostile" || e["id"] == "hostile");
    assert_eq!(hostile.len(), 2, "{hostile:?}");
    check_calls(&events, &files);
    assert_eq!(ingest.metric("vishguard_relay_shed_chunks"), 0.0);
    assert_eq!(ingest.metric("vishguard_relay_spooled"), 0.0);
    assert_eq!(ingest.metric("vishguard_relay_broker_up"), 1.0);
    assert_eq!(w.metric("vishguard_relay_malformed"), 4.0, "{:?}", w.log());
    assert_eq!(settled(&w, "vishguard_relay_calls_finished", 5.0), 5.0);
    assert_eq!(settled(&w, "vishguard_relay_calls_held", 0.0), 0.0);
}

/// A worker whose claims cannot start (here a credentials file that is no credentials file)
/// stops at once with exit status 2 and says why, rather than serving /healthz and claiming
/// nothing until someone sends it a signal.
#[test]
fn a_worker_that_cannot_claim_calls_exits_naming_why() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("worker.creds");
    std::fs::write(&creds, "not a credentials file\n").unwrap();
    let config = dir.path().join("worker.toml");
    std::fs::write(
        &config,
        format!(
            "[nats]\nservers = [\"nats://127.0.0.1:1\"]\ncredentials = \"{}\"\n\
             spool = \"{}\"\nevents_outbox = \"{}\"\n",
            creds.display(),
            dir.path().join("spool").display(),
            dir.path().join("outbox").display()
        ),
    )
    .unwrap();
    let mut child = vishguard()
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--role", "worker", "--http", "127.0.0.1:0"])
        .args(["--model", "tiny.en", "--no-context-check"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the worker still runs: {:?}", log.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let log = log.join().unwrap().join("\n");
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains("listening on"), "{log}");
    assert!(
        log.lines()
            .any(|l| l.starts_with("error:") && l.contains("credentials")),
        "{log}"
    );
}
