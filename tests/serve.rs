//! `vishguard serve` against real peers: a WebSocket client streams a scam sample and a
//! legitimate one as Twilio media streams (base64 8 kHz µ-law, 20 ms frames at real speed,
//! with a malformed frame among them); the API, the server-sent events, the metrics and the
//! feedback route are read over HTTP while and after the calls run.

mod support;

use std::io::{BufRead, BufReader};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use support::serve::{get, start, stream_twilio_call, Server, TOKEN};
use tokio_tungstenite::tungstenite::Message;

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

#[test]
fn media_streams_over_websocket_are_heard_and_the_api_shows_them() {
    let server: Server = start(&[]);
    let base = server.http.clone();
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
            stream_twilio_call(&server, "CA-scam", "en_scam_tech_support.wav", true),
            stream_twilio_call(&server, "CA-legit", "en_legit_pharmacy.wav", false),
        );
    });

    let scam = server.wait_for_end("CA-scam");
    let legit = server.wait_for_end("CA-legit");
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
    let not_json = ureq::post(&feedback)
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .set("Content-Type", "text/plain")
        .send_string(r#"{"verdict":"not_scam"}"#);
    assert!(
        matches!(not_json, Err(ureq::Error::Status(415, _))),
        "{not_json:?}"
    );
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
    let server = start(&[]);
    let base = server.http.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let url = server.ws_url(&format!("/media/twilio?token={TOKEN}"));
        // Garbage, then a message over the size limit: the server closes the socket.
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        ws.send(Message::text("garbage")).await.unwrap();
        ws.send(Message::binary(vec![0u8; 10])).await.unwrap();
        ws.send(Message::text("x".repeat(200_000)))
            .await
            .unwrap_or(());
        let closed = tokio::time::timeout(Duration::from_secs(10), close_frame(&mut ws)).await;
        let (code, reason) = closed.expect("an oversized message closes the stream");
        assert_eq!(code, 1009, "{reason}");
        assert!(reason.contains("bytes"), "{reason}");
        // A call id with a NUL (it had made the engine's thread panic, left a call that never
        // ended holding a slot, and hung the server's shutdown): refused, every time.
        let nul = serde_json::json!({"event": "start", "streamSid": "MZ0",
            "start": {"callSid": "nul\u{0}sid", "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}});
        for _ in 0..2 {
            let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
            ws.send(Message::text(nul.to_string())).await.unwrap();
            let (code, reason) = close_frame(&mut ws).await;
            assert_eq!(code, 1008, "{reason}");
            assert!(reason.contains("control character (U+0000"), "{reason}");
        }
        // AudioHook with no medium we can hear: a `disconnect` saying why, then the close.
        let hook = server.ws_url(&format!("/media/audiohook?token={TOKEN}"));
        let (mut ws, _) = tokio_tungstenite::connect_async(hook).await.unwrap();
        let open = serde_json::json!({"version": "2", "type": "open", "seq": 1, "id": "s1",
            "parameters": {"conversationId": "conv-l16",
                "media": [{"type": "audio", "format": "L16", "channels": ["external"], "rate": 8000}]}});
        ws.send(Message::text(open.to_string())).await.unwrap();
        let goodbye = next_text(&mut ws).await;
        assert_eq!(goodbye["type"], "disconnect", "{goodbye}");
        assert_eq!(goodbye["parameters"]["reason"], "error", "{goodbye}");
        assert_eq!(close_frame(&mut ws).await.0, 1008);
        // Without a token, no stream.
        let refused = tokio_tungstenite::connect_async(server.ws_url("/media/twilio")).await;
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
    assert!(metrics.contains("kind=\"call_refused\"} 2"), "{metrics}");
    assert!(
        metrics.contains("kind=\"unsupported_format\"} 1"),
        "{metrics}"
    );
    // No call was left open by what was refused.
    assert!(metrics.contains("vishguard_calls_active 0"), "{metrics}");
    let (_, calls) = get(&format!("{base}/calls"), Some(TOKEN));
    assert!(!calls.contains("nul"), "{calls}");
}

/// The code and reason of the socket's close frame (panics if it ends without one).
async fn close_frame<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> (u16, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Close(frame) = m {
            let frame = frame.expect("a close frame with a code");
            return (frame.code.into(), frame.reason.to_string());
        }
    }
    panic!("the socket ended without a close frame")
}

/// The next text message of a socket, as JSON.
async fn next_text<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(message) = ws.next().await {
        if let Message::Text(t) = message.unwrap() {
            return serde_json::from_str(&t).unwrap();
        }
    }
    panic!("the socket closed before a reply")
}

#[test]
fn a_genesys_audiohook_session_is_heard_as_two_parties() {
    let server = start(&[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let replies = runtime.block_on(async {
        let url = server.ws_url(&format!("/media/audiohook?token={TOKEN}"));
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let mut replies = Vec::new();
        let open = serde_json::json!({"version": "2", "type": "open", "seq": 1, "clientseq": 0,
            "id": "0b1d3f5e-0000-4000-8000-000000000001", "position": "PT0S",
            "parameters": {"organizationId": "org-1", "conversationId": "conv-scam",
                "participant": {"id": "p1", "ani": "+15550100", "dnis": "+15550199"},
                "media": [{"type": "audio", "format": "PCMU", "channels": ["external", "internal"], "rate": 8000}]}});
        ws.send(Message::text(open.to_string())).await.unwrap();
        replies.push(next_text(&mut ws).await);
        let started = std::time::Instant::now();
        let frames = support::serve::ulaw_frames("en_scam_tech_support.wav");
        for (i, external) in frames.iter().enumerate() {
            // Interleaved stereo: the customer's byte, then the agent's (silence).
            let frame: Vec<u8> = external.iter().flat_map(|&b| [b, 0xFF]).collect();
            ws.send(Message::binary(frame)).await.unwrap();
            if i == 100 {
                ws.send(Message::text(r#"{"version":"2","type":"ping","seq":2,"id":"x"}"#))
                    .await
                    .unwrap();
            }
            let due = started + Duration::from_millis(20 * (i as u64 + 1));
            tokio::time::sleep_until(due.into()).await;
        }
        replies.push(next_text(&mut ws).await);
        ws.send(Message::text(r#"{"version":"2","type":"close","seq":3,"id":"x","parameters":{"reason":"end"}}"#))
            .await
            .unwrap();
        replies.push(next_text(&mut ws).await);
        replies
    });
    let kinds: Vec<&str> = replies
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["opened", "pong", "closed"], "{replies:?}");
    assert_eq!(replies[0]["clientseq"], 1);
    let call = server.wait_for_end("conv-scam");
    let parties: Vec<&str> = call["parties"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["label"].as_str().unwrap())
        .collect();
    assert_eq!(parties, ["external", "internal"]);
    assert_eq!(call["metadata"]["source"], "audiohook");
    assert_ne!(call["risk"], "none", "{call}");
    assert!(call["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["party"] == 0));
}

#[test]
fn over_tls_the_api_and_a_wss_media_stream_work_and_a_client_that_never_shakes_hands_holds_no_one_up(
) {
    let dir = tempfile::tempdir().unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
    let server = start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let addr = server
        .http
        .strip_prefix("https://")
        .unwrap_or_else(|| panic!("served over TLS: {}", server.http))
        .to_owned();
    let connector = support::serve::tls_connector(&made.cert.pem());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // A client that connects and never speaks, and one that speaks plain HTTP.
        let _silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
        {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut plain = tokio::net::TcpStream::connect(&addr).await.unwrap();
            plain
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut answer = Vec::new();
            let _ = plain.read_to_end(&mut answer).await;
            assert!(!String::from_utf8_lossy(&answer).contains("200 OK"));
        }
        let https = |path: &'static str| support::serve::https_get(&connector, &addr, path);
        assert_eq!(https("/healthz").await, (200, "ok".into()));
        assert_eq!(https("/calls").await, (200, "[]".into()));

        // A Twilio stream over wss://.
        let tls = support::serve::tls_connect(&connector, &addr)
            .await
            .unwrap();
        let url = format!("wss://localhost/media/twilio?token={TOKEN}");
        let (ws, _) = tokio_tungstenite::client_async(url, tls).await.unwrap();
        support::serve::stream_twilio_over(ws, "CA-tls", "en_scam_grandson.wav", false).await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        let call = loop {
            let (code, body) = https("/calls/CA-tls").await;
            if code == 200 {
                let v: Value = serde_json::from_str(&body).unwrap();
                if v["ended"] == true {
                    break v;
                }
            }
            assert!(std::time::Instant::now() < deadline, "{body}");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        };
        assert!(!call["alerts"].as_array().unwrap().is_empty(), "{call}");
        // The plain-HTTP client (and, once its 10 s were up, the silent one) counted.
        let (_, metrics) = https("/metrics").await;
        let failed: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("vishguard_malformed_total{kind=\"tls_handshake\"} "))
            .unwrap_or_else(|| panic!("no tls_handshake count: {metrics}"))
            .parse()
            .unwrap();
        assert!((1..=2).contains(&failed), "{metrics}");
    });
}
