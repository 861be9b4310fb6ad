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

/// RFC 6455 close codes.
const NORMAL: u16 = 1000;
const POLICY: u16 = 1008;
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
                // Oversized messages and broken frames end here (tungstenite closes with 1009
                // or 1002 itself).
                tracing::debug!("media socket error: {e}");
                state.malformed.count("websocket");
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
                    close(&mut socket, TRY_AGAIN_LATER, &e.to_string()).await;
                    return;
                }
                Err(e) if opening => {
                    state.malformed.count("call_refused");
                    close(&mut socket, POLICY, &e.to_string()).await;
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
