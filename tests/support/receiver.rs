//! A tiny HTTP receiver for webhook tests: answers each POST with the status a closure picks
//! and records what came.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub body: serde_json::Value,
    pub idempotency_key: Option<String>,
    /// What the receiver answered.
    pub status: u16,
}

pub struct Receiver {
    pub url: String,
    pub got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    /// `answer(n, body)`: the status for the n-th request (from 0).
    pub fn start(answer: impl Fn(usize, &serde_json::Value) -> u16 + Send + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/alerts", listener.local_addr().unwrap());
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let log = got.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let (mut len, mut key) = (0, None);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    if lower.starts_with("idempotency-key:") {
                        key = line.split_once(':').map(|(_, v)| v.trim().to_owned());
                    }
                }
                let mut body = vec![0; len];
                let _ = reader.read_exact(&mut body);
                let body: serde_json::Value =
                    serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                let n = log.lock().unwrap().len();
                let status = answer(n, &body);
                log.lock().unwrap().push(Received {
                    body,
                    idempotency_key: key,
                    status,
                });
                let reason = if status < 300 { "OK" } else { "Refused" };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} {reason}\r\nContent-Length: 11\r\nConnection: close\r\n\r\nnot for me."
                );
            }
        });
        Self { url, got }
    }

    /// Alert ids the receiver took (answered 2xx), in arrival order.
    pub fn accepted_ids(&self) -> Vec<String> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.status < 300)
            .map(|r| r.body["alert_id"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

/// A URL where nothing listens (a port bound, then let go).
pub fn dead_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}/alerts", l.local_addr().unwrap())
}
