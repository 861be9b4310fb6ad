//! `vishguard serve`'s HTTP side (axum on tokio): the live dashboard (`/`, one page in the
//! binary), the API over the calls the engine holds, server-sent events, Prometheus metrics,
//! and the WebSocket media endpoints through which calls arrive (Twilio-style streams at
//! `/media/twilio`, Genesys AudioHook at `/media/audiohook`).
//!
//! Every route but `/healthz` needs the bearer token (an `Authorization: Bearer T` header, or a
//! `token` query parameter for clients that cannot set headers, such as Twilio). Without a
//! token the server only binds to loopback.

pub mod board;
mod media;
mod metrics;
pub mod tls;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::{Stream, StreamExt};

use crate::call::{json_line, CallId, Event};
use crate::engine::EngineMonitor;
use crate::sources::Ingest;
pub use crate::sources::Malformed;
use board::{Board, Verdict};

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Where the API, the events, the metrics and the WebSocket media endpoints listen.
    pub http: SocketAddr,
    /// The bearer token every route but `/healthz` asks for. Required to listen beyond loopback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Ended calls the API keeps showing.
    pub keep_ended_calls: usize,
    /// A media stream that sends nothing for this long is closed, and its call with it (s).
    pub idle_timeout_s: f64,
    /// WebSocket messages larger than this are refused (bytes).
    pub max_message_bytes: usize,
    /// SIP and SIPREC (UDP and TCP) on this address; none: no SIP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sip: Option<SocketAddr>,
    /// The address RTP is received on and given in SDP answers (default: the SIP address's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_ip: Option<std::net::IpAddr>,
    /// A SIP call whose RTP has been silent this long ends, as if its BYE had come (s).
    pub rtp_timeout_s: f64,
    /// HTTPS (and `wss://` media): the certificate chain, PEM, leaf first. With `tls_key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key of `tls_cert`, PEM (PKCS#8, PKCS#1 or SEC1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Mask card numbers, codes and id numbers (runs of 4+ digits) in what the API, the
    /// dashboard and the event stream show.
    pub redact: bool,
    /// `all`: take calls and hear them; `ingest`: take calls and publish them to `[nats]`;
    /// `worker`: hear calls from `[nats]` (see `vishguard::relay`).
    pub role: crate::relay::Role,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
            keep_ended_calls: 500,
            idle_timeout_s: 30.0,
            max_message_bytes: 64 * 1024,
            sip: None,
            media_ip: None,
            rtp_timeout_s: 30.0,
            tls_cert: None,
            tls_key: None,
            redact: false,
            role: crate::relay::Role::All,
        }
    }
}

impl ServerConfig {
    /// Errors name the key (relative to `[server]`).
    pub fn validate(&self) -> Result<(), String> {
        if self.token.is_none() && !self.http.ip().is_loopback() {
            return Err(format!(
                "token is required to listen on {} (beyond loopback)",
                self.http
            ));
        }
        if self.token.as_deref().is_some_and(|t| t.len() < 8) {
            return Err("token must be at least 8 characters".into());
        }
        if !(self.idle_timeout_s.is_finite() && self.idle_timeout_s > 0.0) {
            return Err(format!(
                "idle_timeout_s must be a positive number of seconds, not {}",
                self.idle_timeout_s
            ));
        }
        if self.max_message_bytes < 1024 {
            return Err("max_message_bytes must be at least 1024".into());
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => return Err("tls_key is needed with tls_cert".into()),
            (None, Some(_)) => return Err("tls_cert is needed with tls_key".into()),
            _ => {}
        }
        if !(self.rtp_timeout_s.is_finite() && self.rtp_timeout_s > 0.0) {
            return Err(format!(
                "rtp_timeout_s must be a positive number of seconds, not {}",
                self.rtp_timeout_s
            ));
        }
        Ok(())
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub board: Board,
    pub ingest: Arc<dyn Ingest>,
    /// None in the ingest role (no engine there).
    pub engine: Option<EngineMonitor>,
    /// The relay's counters, in the ingest and worker roles.
    pub relay: Option<Arc<crate::relay::RelayStats>>,
    pub config: Arc<ServerConfig>,
    pub malformed: Arc<Malformed>,
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/", get(dashboard))
        .route("/calls", get(list_calls))
        .route("/calls/{id}", get(one_call))
        .route("/calls/{id}/feedback", post(feedback))
        .route("/alerts", get(alerts))
        .route("/events", get(events))
        .route("/metrics", get(metrics::render))
        .route("/openapi.json", get(openapi))
        .route("/media/twilio", get(media::twilio))
        .route("/media/audiohook", get(media::audiohook))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorise));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(protected)
        .with_state(state)
}

/// Where the HTTP side takes connections: plain TCP, or TLS over it.
pub enum HttpListener {
    Plain(tokio::net::TcpListener),
    Tls(tls::TlsListener),
}

/// Serves until `shutdown` resolves. `listener` is bound by the caller, so it can say where.
pub async fn serve(
    listener: HttpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match listener {
        HttpListener::Plain(l) => {
            axum::serve(l, router(state))
                .with_graceful_shutdown(shutdown)
                .await
        }
        HttpListener::Tls(l) => {
            axum::serve(l, router(state))
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}

fn problem(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// The bearer token, from the header or the `token` query parameter.
async fn authorise(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(expected) = state.config.token.as_deref() else {
        return next.run(request).await;
    };
    let from_header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let from_query = || {
        let query = request.uri().query()?;
        let mut params: HashMap<String, String> = serde_urlencoded::from_str(query).ok()?;
        params.remove("token")
    };
    let given = from_header.or_else(from_query);
    let ok = given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(expected.as_bytes())));
    if !ok {
        state.malformed.count("unauthorised");
        let mut response = problem(StatusCode::UNAUTHORIZED, "a bearer token is required");
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            "Bearer".parse().expect("a header value"),
        );
        return response;
    }
    next.run(request).await
}

async fn list_calls(State(state): State<AppState>) -> impl IntoResponse {
    Json(state.board.calls())
}

async fn one_call(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.board.call(&CallId::new(id.clone())) {
        Some(view) => Json(view).into_response(),
        None => problem(StatusCode::NOT_FOUND, format!("no call {id:?}")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackBody {
    verdict: Verdict,
    #[serde(default)]
    note: Option<String>,
}

async fn feedback(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<FeedbackBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => {
            state.malformed.count("bad_feedback");
            // A body that is not JSON, or too large, says so (415, 413); JSON that is not a
            // verdict is 422.
            let status = match e.status() {
                s @ (StatusCode::UNSUPPORTED_MEDIA_TYPE | StatusCode::PAYLOAD_TOO_LARGE) => s,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            return problem(
                status,
                format!(
                    "{e}: expected {{\"verdict\": \"not_scam\"|\"confirmed_scam\", \"note\"?}}"
                ),
            );
        }
    };
    if body.note.as_ref().is_some_and(|n| n.len() > 4096) {
        return problem(StatusCode::UNPROCESSABLE_ENTITY, "note is over 4096 bytes");
    }
    if state
        .board
        .feedback(&CallId::new(id.clone()), body.verdict, body.note)
    {
        StatusCode::NO_CONTENT.into_response()
    } else {
        problem(StatusCode::NOT_FOUND, format!("no call {id:?}"))
    }
}

async fn alerts(State(state): State<AppState>) -> impl IntoResponse {
    Json(state.board.alerts())
}

/// Every engine event from now on, as server-sent events named by kind (`call_started`,
/// `transcript`, `alert`, `call_ended`), each a versioned record.
async fn events(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let stream = BroadcastStream::new(state.board.subscribe()).filter_map(|e| {
        // A client too slow to keep up skips what it missed rather than holding others up.
        let event: Arc<Event> = e.ok()?;
        let kind = match event.as_ref() {
            Event::CallStarted(_) => "call_started",
            Event::Transcript(_) => "transcript",
            Event::Alert(_) => "alert",
            Event::CallEnded(_) => "call_ended",
        };
        Some(Ok(SseEvent::default()
            .event(kind)
            .data(json_line(event.as_ref()))))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// The live dashboard: one self-contained page (no CDN), over the API and the event stream.
async fn dashboard() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
            ),
        ],
        include_str!("dashboard.html"),
    )
}

async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("../../docs/openapi.json"),
    )
}
