//! The live dashboard in a real browser: headless Chromium (driven over the DevTools protocol
//! by a WebSocket client) loads `serve`'s page while a scam call streams in; the call, the
//! alert and the highlighted evidence appear without a reload, the feedback button records a
//! verdict, and a screenshot is kept (`target/tmp/dashboard.png`).

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::serve::{start, stream_twilio_call, TOKEN};
use tokio_tungstenite::tungstenite::Message;

struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Headless Chromium with a page at `url`; returns the browser and the page's DevTools socket.
fn launch(url: &str) -> (Browser, String) {
    let profile = tempfile::tempdir().unwrap();
    let child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--remote-debugging-port=0",
            "--window-size=1366,768",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium (installed by .ci/run)");
    let browser = Browser {
        child,
        _profile: profile,
    };
    let port_file = browser._profile.path().join("DevToolsActivePort");
    let deadline = Instant::now() + Duration::from_secs(30);
    let port = loop {
        if let Some(port) = std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|t| t.lines().next().map(str::to_owned))
            .filter(|p| !p.is_empty())
        {
            break port;
        }
        assert!(Instant::now() < deadline, "chromium did not open DevTools");
        std::thread::sleep(Duration::from_millis(100));
    };
    let target: Value = ureq::put(&format!("http://127.0.0.1:{port}/json/new?{url}"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    let socket = target["webSocketDebuggerUrl"].as_str().unwrap().to_owned();
    (browser, socket)
}

type Cdp =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One DevTools command and its result (events in between are skipped).
async fn command(cdp: &mut Cdp, id: u64, method: &str, params: Value) -> Value {
    cdp.send(Message::text(
        json!({"id": id, "method": method, "params": params}).to_string(),
    ))
    .await
    .unwrap();
    while let Some(Ok(message)) = cdp.next().await {
        if let Message::Text(text) = message {
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["id"] == id {
                return v["result"].clone();
            }
        }
    }
    panic!("DevTools closed during {method}");
}

async fn evaluate(cdp: &mut Cdp, id: u64, expression: &str) -> Value {
    let r = command(
        cdp,
        id,
        "Runtime.evaluate",
        json!({"expression": expression, "returnByValue": true}),
    )
    .await;
    r["result"]["value"].clone()
}

#[test]
fn the_dashboard_shows_the_call_its_alert_and_evidence_live_and_takes_feedback() {
    let server = start(&[]);
    let page = format!("{}/?token={TOKEN}", server.http);
    let (_browser, socket) = launch(&page);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (mut cdp, _) = tokio_tungstenite::connect_async(&socket).await.unwrap();
        let mut id = 0;
        let mut next = || {
            id += 1;
            id
        };
        // The page is up and subscribed before the call starts: what follows comes live.
        let deadline = Instant::now() + Duration::from_secs(30);
        while evaluate(&mut cdp, next(), "document.getElementById('status').textContent").await
            != "live"
        {
            assert!(Instant::now() < deadline, "the event stream never connected");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        stream_twilio_call(&server, "CA-dash", "en_scam_tech_support.wav", false).await;
        let deadline = Instant::now() + Duration::from_secs(120);
        let seen = loop {
            let state = evaluate(
                &mut cdp,
                next(),
                "JSON.stringify({
                    flagged: !!document.querySelector('.call.high[data-id=\"CA-dash\"], .call.suspected[data-id=\"CA-dash\"]'),
                    alerts: document.querySelectorAll('#alerts .alert').length,
                    marks: Array.from(document.querySelectorAll('.transcript mark')).map(m => m.textContent),
                    lines: document.querySelectorAll('.transcript .line').length,
                    risk: (document.querySelector('#detail .head .risk') || {}).textContent
                })",
            )
            .await;
            let state: Value = serde_json::from_str(state.as_str().unwrap()).unwrap();
            if state["flagged"] == true
                && state["alerts"].as_u64() > Some(0)
                && !state["marks"].as_array().unwrap().is_empty()
            {
                break state;
            }
            assert!(Instant::now() < deadline, "the dashboard never showed the alert: {state}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        assert!(seen["lines"].as_u64() > Some(0), "{seen}");
        assert_ne!(seen["risk"], "none", "{seen}");
        // A person confirms it from the page.
        evaluate(
            &mut cdp,
            next(),
            "document.querySelector('.feedback button[data-verdict=confirmed_scam]').click()",
        )
        .await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let call = server.json("/calls/CA-dash");
            if call["feedback"]["verdict"] == "confirmed_scam" {
                break;
            }
            assert!(Instant::now() < deadline, "the feedback was not kept: {call}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Kept for people to look at: what a supervisor saw.
        let shot = command(&mut cdp, next(), "Page.captureScreenshot", json!({"format": "png"})).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"));
        let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
        std::fs::write(&path, png).unwrap();
        eprintln!("dashboard screenshot: {}", path.display());
    });
}
