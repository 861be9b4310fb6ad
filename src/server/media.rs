//! WebSocket media endpoints: a socket carries one call's stream; its messages go through the
//! protocol's session (`sources::twilio`, `sources::audiohook`) to the engine, and the
//! session's replies go back. A bad message is counted and skipped, and the call goes on; a
//! call the engine cannot take closes the socket with the code that says why (1013: try again
//! later; 1008: refused).

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;

use super::AppState;
use crate::sources::audiohook::AudioHookSession;
use crate::sources::twilio::TwilioSession;
use crate::sources::{IngestError, Ingress, MediaSession};

/// RFC 6455 close codes (§7.4.1).
const NORMAL: u16 = 1000;
const PROTOCOL_ERROR: u16 = 1002;
const POLICY: u16 = 1008;
const TOO_BIG: u16 = 1009;
const TRY_AGAIN_LATER: u16 = 1013;

pub(super) async fn twilio(ws: WebSocketUpgrade, State(state): State<AppState>) -> Response {
    upgrade(ws, state, || Box::new(TwilioSession::new()))
}

pub(super) async fn audiohook(ws: WebSocketUpgrade, State(state): State<AppState>) -> Response {
    upgrade(ws, state, || Box::new(AudioHookSession::new()))
}

fn upgrade(
    ws: WebSocketUpgrade,
    state: AppState,
    session: fn() -> Box<dyn MediaSession>,
) -> Response {
    let max = state.config.max_message_bytes;
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| stream(socket, state, session()))
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.chars().take(120).collect::<String>().into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

/// Ends a stream the session or the engine refused: the protocol's own goodbye, if it has
/// one, then the close frame with `code` and `reason`.
async fn refuse(socket: &mut WebSocket, session: &mut dyn MediaSession, code: u16, reason: &str) {
    if let Some(goodbye) = session.refusal(reason) {
        let _ = socket.send(Message::text(goodbye)).await;
    }
    close(socket, code, reason).await;
}

async fn stream(mut socket: WebSocket, state: AppState, mut session: Box<dyn MediaSession>) {
    let idle = Duration::from_secs_f64(state.config.idle_timeout_s);
    loop {
        let message = match tokio::time::timeout(idle, socket.recv()).await {
            Err(_) => {
                state.malformed.count("idle_stream");
                close(&mut socket, NORMAL, "no media for too long").await;
                break;
            }
            Ok(None) | Ok(Some(Ok(Message::Close(_)))) => break,
            Ok(Some(Err(e))) => {
                // Oversized messages and broken frames end here. tungstenite reports them and
                // sends nothing, so the peer is told why (it had seen only the socket drop).
                tracing::debug!("media socket error: {e}");
                state.malformed.count("websocket");
                let inner = e.into_inner();
                let told = match inner.downcast_ref::<tungstenite::Error>() {
                    Some(tungstenite::Error::Capacity(_)) => Some((
                        TOO_BIG,
                        format!("a message over {} bytes", state.config.max_message_bytes),
                    )),
                    Some(tungstenite::Error::Protocol(p)) => Some((PROTOCOL_ERROR, p.to_string())),
                    _ => None, // the connection itself broke: nobody to tell
                };
                if let Some((code, reason)) = told {
                    close(&mut socket, code, &reason).await;
                }
                break;
            }
            Ok(Some(Ok(m))) => m,
        };
        let reply = match &message {
            Message::Text(t) => session.text(t.as_str()),
            Message::Binary(b) => session.binary(b),
            _ => continue,
        };
        let reply = match reply {
            Ok(r) => r,
            Err(e) if e.fatal => {
                state.malformed.count(e.kind);
                refuse(&mut socket, session.as_mut(), POLICY, &e.message).await;
                break;
            }
            Err(e) => {
                tracing::debug!("media stream: {e}");
                state.malformed.count(e.kind);
                continue;
            }
        };
        for item in reply.ingress {
            let opening = matches!(item, Ingress::Open(_));
            match state.ingest.send(item) {
                Ok(()) | Err(IngestError::QueueFull(_)) => {}
                Err(e @ IngestError::TooManyCalls(_)) => {
                    state.malformed.count("too_many_calls");
                    let reason = e.to_string();
                    refuse(&mut socket, session.as_mut(), TRY_AGAIN_LATER, &reason).await;
                    return;
                }
                Err(e) if opening => {
                    state.malformed.count("call_refused");
                    refuse(&mut socket, session.as_mut(), POLICY, &e.to_string()).await;
                    return;
                }
                Err(e) => {
                    tracing::debug!("media stream: {e}");
                    state.malformed.count("chunk_refused");
                }
            }
        }
        for text in reply.send {
            if socket.send(Message::text(text)).await.is_err() {
                break;
            }
        }
        if reply.close {
            close(&mut socket, NORMAL, "closed").await;
            break;
        }
    }
    if let Some(end) = session.finish() {
        let _ = state.ingest.send(end);
    }
}
