//! `vishguard serve` against real peers: a WebSocket client streams a scam sample and a
//! legitimate one as Twilio media streams (base64 8 kHz µ-law, 20 ms frames at real speed,
//! with a malformed frame among them); the API, the server-sent events, the metrics and the
//! feedback route are read over HTTP while and after the calls run.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "test-token-1234";

/// A running server, killed (and reaped) when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server() -> Server {
    let mut child = support::vishguard()
        .args([
            "serve",
            "--http",
            "127.0.0.1:0",
            "--token",
            TOKEN,
            "--model",
            "tiny.en",
            "--no-context-check",
        ])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let base = loop {
        let line = lines.next().expect("serve printed its address").unwrap();
        if let Some(addr) = line.split("listening on ").nth(1) {
            break addr.trim().to_owned();
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server { child, base }
}

fn get(url: &str, token: Option<&str>) -> (u16, String) {
    let mut request = ureq::get(url);
    if let Some(t) = token {
        request = request.set("Authorization", &format!("Bearer {t}"));
    }
    match request.call() {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("{url}: {e}"),
    }
}

fn post(url: &str, body: &str) -> u16 {
    match ureq::post(url)
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .set("Content-Type", "application/json")
        .send_string(body)
    {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(code, _)) => code,
        Err(e) => panic!("{url}: {e}"),
    }
}

/// A sample as Twilio sends it: 8 kHz µ-law, 160-byte (20 ms) frames.
fn ulaw_frames(sample: &str) -> Vec<Vec<u8>> {
    let decoded =
        vishguard::audio::decode_file(&support::repo().join("audio-samples").join(sample)).unwrap();
    let narrow = if decoded.sample_rate == 8000 {
        decoded.mixed()
    } else {
        let wide =
            vishguard::audio::resample::to_16k(&decoded.mixed(), decoded.sample_rate).unwrap();
        wide.iter().step_by(2).copied().collect()
    };
    vishguard::audio::g711::encode_ulaw(&narrow)
        .chunks(160)
        .map(<[u8]>::to_vec)
        .collect()
}

/// Streams one call over a WebSocket at real speed, as Twilio does.
async fn stream_call(base: &str, call_sid: &str, sample: &str, bad_frame: bool) {
    let url = format!(
        "{}/media/twilio?token={TOKEN}",
        base.replace("http://", "ws://")
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let send = |v: Value| Message::text(v.to_string());
    ws.send(send(
        json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
    ))
    .await
    .unwrap();
    ws.send(send(
        json!({"event": "start", "sequenceNumber": "1", "streamSid": "MZ1",
        "start": {"accountSid": "AC1", "streamSid": "MZ1", "callSid": call_sid,
            "tracks": ["inbound"], "customParameters": {"desk": "4"},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}),
    ))
    .await
    .unwrap();
    let started = Instant::now();
    for (i, frame) in ulaw_frames(sample).iter().enumerate() {
        if bad_frame && i == 10 {
            ws.send(Message::text("{this is not json")).await.unwrap();
        }
        let payload = base64::engine::general_purpose::STANDARD.encode(frame);
        ws.send(send(json!({"event": "media", "streamSid": "MZ1",
            "media": {"track": "inbound", "chunk": (i + 1).to_string(),
                "timestamp": (i * 20).to_string(), "payload": payload}})))
            .await
            .unwrap();
        let due = started + Duration::from_millis(20 * (i as u64 + 1));
        tokio::time::sleep_until(due.into()).await;
    }
    ws.send(send(json!({"event": "stop", "streamSid": "MZ1",
        "stop": {"accountSid": "AC1", "callSid": call_sid}})))
        .await
        .unwrap();
    let _ = ws.close(None).await;
    while let Some(Ok(_)) = ws.next().await {}
}

/// Reads the event stream in the background: each event's name and data.
fn follow_events(base: &str) -> Arc<Mutex<Vec<(String, Value)>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let response = ureq::get(&format!("{base}/events?token={TOKEN}"))
        .call()
        .unwrap();
    assert!(response
        .header("content-type")
        .unwrap_or_default()
        .starts_with("text/event-stream"));
    let mut reader = BufReader::new(response.into_reader());
    let sink = seen.clone();
    std::thread::spawn(move || {
        let mut name = String::new();
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            let l = line.trim_end();
            if let Some(n) = l.strip_prefix("event: ") {
                name = n.to_owned();
            } else if let Some(d) = l.strip_prefix("data: ") {
                if let Ok(v) = serde_json::from_str(d) {
                    sink.lock().unwrap().push((name.clone(), v));
                }
            }
            line.clear();
        }
    });
    seen
}

fn wait_for_end(base: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (code, body) = get(&format!("{base}/calls/{id}"), Some(TOKEN));
        if code == 200 {
            let v: Value = serde_json::from_str(&body).unwrap();
            if v["ended"] == true {
                return v;
            }
        }
        assert!(Instant::now() < deadline, "call {id} never ended: {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn media_streams_over_websocket_are_heard_and_the_api_shows_them() {
    let server = start_server();
    let base = server.base.clone();
    assert_eq!(get(&format!("{base}/healthz"), None), (200, "ok".into()));
    assert_eq!(get(&format!("{base}/calls"), None).0, 401);
    assert_eq!(
        get(&format!("{base}/calls"), Some("wrong-token-000")).0,
        401
    );
    let events = follow_events(&base);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        tokio::join!(
            stream_call(&base, "CA-scam", "en_scam_tech_support.wav", true),
            stream_call(&base, "CA-legit", "en_legit_pharmacy.wav", false),
        );
    });

    let scam = wait_for_end(&base, "CA-scam");
    let legit = wait_for_end(&base, "CA-legit");
    assert_ne!(scam["risk"], "none", "{scam}");
    assert!(!scam["alerts"].as_array().unwrap().is_empty(), "{scam}");
    assert!(!scam["transcript"].as_array().unwrap().is_empty(), "{scam}");
    assert_eq!(scam["parties"][0]["label"], "inbound");
    assert_eq!(scam["metadata"]["param.desk"], "4");
    assert_eq!(legit["risk"], "none", "{legit}");
    assert!(legit["alerts"].as_array().unwrap().is_empty(), "{legit}");

    // The list, the alerts, and the stream all saw the same calls.
    let (_, calls) = get(&format!("{base}/calls"), Some(TOKEN));
    let calls: Value = serde_json::from_str(&calls).unwrap();
    assert_eq!(calls.as_array().unwrap().len(), 2, "{calls}");
    let (_, alerts) = get(&format!("{base}/alerts"), Some(TOKEN));
    let alerts: Value = serde_json::from_str(&alerts).unwrap();
    assert!(alerts
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["call_id"] == "CA-scam"));
    let seen = events.lock().unwrap().clone();
    let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names.iter().filter(|&&n| n == "call_ended").count(),
        2,
        "{names:?}"
    );
    let alert = seen
        .iter()
        .find(|(n, _)| n == "alert")
        .map(|(_, v)| v.clone())
        .expect("an alert on the event stream");
    assert_eq!(alert["schema_version"], 1);
    assert_eq!(alert["call_id"], "CA-scam");

    // Feedback is kept with the call; a bad body says what it wanted.
    let feedback = format!("{base}/calls/CA-scam/feedback");
    assert_eq!(
        post(&feedback, r#"{"verdict":"confirmed_scam","note":"desk 4"}"#),
        204
    );
    assert_eq!(post(&feedback, r#"{"verdict":"maybe"}"#), 422);
    assert_eq!(
        post(
            &format!("{base}/calls/nobody/feedback"),
            r#"{"verdict":"not_scam"}"#
        ),
        404
    );
    let (_, kept) = get(&format!("{base}/calls/CA-scam"), Some(TOKEN));
    assert!(kept.contains("confirmed_scam"), "{kept}");

    // The metrics count the calls, the audio and the malformed frame.
    let (code, metrics) = get(&format!("{base}/metrics"), Some(TOKEN));
    assert_eq!(code, 200);
    for line in [
        "vishguard_calls_opened_total 2",
        "vishguard_calls_ended_total 2",
        "vishguard_calls_active 0",
        "vishguard_malformed_total{kind=\"bad_json\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} not in:\n{metrics}");
    }
    let (_, openapi) = get(&format!("{base}/openapi.json"), Some(TOKEN));
    assert!(openapi.contains("/calls/{id}/feedback"));
}

#[test]
fn a_stream_that_goes_quiet_or_speaks_nonsense_is_closed_without_hurting_the_server() {
    let server = start_server();
    let base = server.base.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let url = format!(
            "{}/media/twilio?token={TOKEN}",
            base.replace("http://", "ws://")
        );
        // Garbage, then a message over the size limit: the server closes the socket.
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        ws.send(Message::text("garbage")).await.unwrap();
        ws.send(Message::binary(vec![0u8; 10])).await.unwrap();
        ws.send(Message::text("x".repeat(200_000)))
            .await
            .unwrap_or(());
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(Ok(m)) = ws.next().await {
                if m.is_close() {
                    break;
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "an oversized message closes the stream");
        // Without a token, no stream.
        let refused = tokio_tungstenite::connect_async(format!(
            "{}/media/twilio",
            base.replace("http://", "ws://")
        ))
        .await;
        assert!(refused.is_err());
    });
    // The server is still up and counted what it refused.
    assert_eq!(get(&format!("{base}/healthz"), None).0, 200);
    let (_, metrics) = get(&format!("{base}/metrics"), Some(TOKEN));
    assert!(
        metrics.contains("vishguard_malformed_total{kind=\"bad_json\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("kind=\"binary_frame\"} 1"), "{metrics}");
    assert!(metrics.contains("kind=\"unauthorised\"}"), "{metrics}");
}
