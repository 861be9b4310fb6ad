//! Helpers for the tests of `vishguard serve`: the server as a child process, its API, and a
//! Twilio-style media stream sent by a real WebSocket client.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

pub const TOKEN: &str = "test-token-1234";

/// A running server (tiny.en, keywords only), killed and reaped when dropped.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub http: String,
    /// The SIP address, when started with `--sip`.
    pub sip: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `vishguard serve` on free ports with `extra` arguments; returns once it listens.
pub fn start(extra: &[&str]) -> Server {
    let mut child = super::vishguard()
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
        .args(extra)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (mut http, mut sip) = (None, None);
    while http.is_none() {
        let line = lines.next().expect("serve printed its address").unwrap();
        if let Some(a) = line.split("SIP on udp and tcp ").nth(1) {
            sip = Some(a.trim().to_owned());
        }
        if let Some(a) = line.split("listening on ").nth(1) {
            http = Some(a.trim().to_owned());
        }
    }
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server {
        child,
        http: http.unwrap(),
        sip,
    }
}

impl Server {
    /// GET with the token: the status and the body.
    pub fn get(&self, path: &str) -> (u16, String) {
        get(&format!("{}{path}", self.http), Some(TOKEN))
    }

    /// GET with the token, as JSON.
    pub fn json(&self, path: &str) -> Value {
        let (code, body) = self.get(path);
        assert_eq!(code, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// The call once it has ended (it is heard after its end).
    pub fn wait_for_end(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let (code, body) = self.get(&format!("/calls/{id}"));
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

    pub fn ws_url(&self, path: &str) -> String {
        format!("{}{path}", self.http.replace("http://", "ws://"))
    }
}

/// GET, with or without a token: the status and the body.
pub fn get(url: &str, token: Option<&str>) -> (u16, String) {
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

/// A bundled sample as Twilio sends it: 8 kHz µ-law, 160-byte (20 ms) frames.
pub fn ulaw_frames(sample: &str) -> Vec<Vec<u8>> {
    let decoded =
        vishguard::audio::decode_file(&super::repo().join("audio-samples").join(sample)).unwrap();
    assert_eq!(decoded.sample_rate, 8000, "the samples are telephone audio");
    vishguard::audio::g711::encode_ulaw(&decoded.mixed())
        .chunks(160)
        .map(<[u8]>::to_vec)
        .collect()
}

/// Streams one call over a WebSocket at real speed, as Twilio does (with a malformed frame
/// after the tenth when `bad_frame`).
pub async fn stream_twilio_call(server: &Server, call_sid: &str, sample: &str, bad_frame: bool) {
    let url = server.ws_url(&format!("/media/twilio?token={TOKEN}"));
    let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    stream_twilio_over(ws, call_sid, sample, bad_frame).await;
}

/// [`stream_twilio_call`] over a WebSocket already open (`wss://` in the TLS test).
pub async fn stream_twilio_over<S>(
    mut ws: tokio_tungstenite::WebSocketStream<S>,
    call_sid: &str,
    sample: &str,
    bad_frame: bool,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
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

/// A TLS client that trusts only the PEM certificates given (the test's self-signed one).
pub fn tls_connector(cert_pem: &str) -> tokio_rustls::TlsConnector {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// A TLS connection to `addr` (host:port) for the name "localhost".
pub async fn tls_connect(
    connector: &tokio_rustls::TlsConnector,
    addr: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await
}

/// GET over HTTPS (HTTP/1.1, one request per connection) with the token: status and body.
pub async fn https_get(
    connector: &tokio_rustls::TlsConnector,
    addr: &str,
    path: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = tls_connect(connector, addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    (status, body)
}
