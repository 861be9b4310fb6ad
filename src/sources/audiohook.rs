//! Genesys AudioHook (protocol version 2) over a WebSocket: JSON text messages `open` (the
//! conversation, the participant, the media offered), `ping`, `pause`, `resume`, `update`,
//! `dtmf`, `close`, each answered as the protocol asks (`opened`, `pong`, `paused`,
//! `resumed`, `closed`), and binary frames of interleaved PCMU audio, one byte per channel per
//! sample: `external` (the customer) and `internal` (the agent) are the two parties. The call
//! id is the conversation id.
//!
//! Follows the AudioHook protocol reference (message fields `version`, `type`, `seq`,
//! `clientseq`, `id`, `parameters`); a session turns messages into [`Ingress`] and replies, and
//! the HTTP server owns the socket.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value};

use super::twilio::ProtocolError;
use super::{Ingress, MediaReply, MediaSession};
use crate::audio::g711;
use crate::call::{AudioChunk, Call, CallId, Party};

fn error(kind: &'static str, message: impl Into<String>) -> ProtocolError {
    ProtocolError {
        kind,
        message: message.into(),
        fatal: false,
    }
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    version: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Value,
}

#[derive(Debug, Default, PartialEq)]
enum State {
    #[default]
    Connected,
    Open,
    Paused,
    Closed,
}

/// One AudioHook session.
#[derive(Debug, Default)]
pub struct AudioHookSession {
    state: State,
    id: String,
    call: Option<CallId>,
    channels: usize,
    /// Samples per channel received so far: the audio time of the next frame.
    position: u64,
    /// Our message counter (`seq` of what we send).
    seq: u64,
    /// The client's last `seq` (our `clientseq`).
    client_seq: u64,
}

impl AudioHookSession {
    pub fn new() -> Self {
        Self::default()
    }

    fn reply(&mut self, kind: &str, parameters: Value) -> String {
        self.seq += 1;
        json!({"version": "2", "type": kind, "seq": self.seq, "clientseq": self.client_seq,
               "id": self.id, "parameters": parameters})
        .to_string()
    }

    fn open(&mut self, parameters: &Value) -> Result<MediaReply, ProtocolError> {
        if self.state != State::Connected {
            return Err(error("second_open", "a second open on one session"));
        }
        // The first offered medium we take: PCMU at 8 kHz, one or two channels.
        let media = parameters["media"].as_array().cloned().unwrap_or_default();
        let chosen = media
            .iter()
            .find(|m| {
                m["type"] == "audio"
                    && m["format"] == "PCMU"
                    && m["rate"] == 8000
                    && m["channels"]
                        .as_array()
                        .is_some_and(|c| (1..=2).contains(&c.len()))
            })
            .cloned()
            .ok_or_else(|| ProtocolError {
                fatal: true,
                ..error("unsupported_format", "no PCMU 8 kHz audio offered")
            })?;
        let channels: Vec<String> = chosen["channels"]
            .as_array()
            .expect("checked above")
            .iter()
            .map(|c| c.as_str().unwrap_or("channel").to_owned())
            .collect();
        let conversation = parameters["conversationId"]
            .as_str()
            .filter(|c| !c.is_empty() && c.len() <= 128)
            .unwrap_or(&self.id)
            .to_owned();
        let mut metadata = BTreeMap::from([
            ("source".to_owned(), "audiohook".to_owned()),
            ("session_id".to_owned(), self.id.clone()),
        ]);
        for key in ["organizationId", "language"] {
            if let Some(v) = parameters[key].as_str() {
                metadata.insert(key.to_owned(), v.chars().take(256).collect());
            }
        }
        for key in ["ani", "aniName", "dnis"] {
            if let Some(v) = parameters["participant"][key].as_str() {
                metadata.insert(format!("participant.{key}"), v.chars().take(256).collect());
            }
        }
        self.channels = channels.len();
        self.state = State::Open;
        let id = CallId::new(conversation);
        self.call = Some(id.clone());
        let open = Ingress::Open(Call {
            id,
            parties: channels
                .into_iter()
                .map(|label| Party {
                    label,
                    sample_rate: 8000,
                })
                .collect(),
            metadata,
        });
        let opened = self.reply("opened", json!({"startPaused": false, "media": [chosen]}));
        Ok(MediaReply {
            ingress: vec![open],
            send: vec![opened],
            close: false,
        })
    }
}

impl MediaSession for AudioHookSession {
    fn text(&mut self, frame: &str) -> Result<MediaReply, ProtocolError> {
        let m: Message = serde_json::from_str(frame)
            .map_err(|e| error("bad_json", format!("not an AudioHook message: {e}")))?;
        if m.version.as_deref().is_some_and(|v| v != "2") {
            return Err(error("bad_version", "AudioHook version 2 is spoken"));
        }
        if let Some(seq) = m.seq {
            self.client_seq = seq;
        }
        if let Some(id) = m.id {
            if self.id.is_empty() {
                self.id = id.chars().take(128).collect();
            }
        }
        if self.state == State::Closed {
            return Err(error("after_close", "a message after close"));
        }
        let answer = |s: &mut Self, kind: &str| MediaReply {
            send: vec![s.reply(kind, json!({}))],
            ..MediaReply::default()
        };
        match m.kind.as_str() {
            "open" => self.open(&m.parameters),
            "ping" => Ok(answer(self, "pong")),
            "pause" => {
                self.state = State::Paused;
                Ok(answer(self, "paused"))
            }
            "resume" => {
                self.state = State::Open;
                Ok(answer(self, "resumed"))
            }
            "close" => {
                self.state = State::Closed;
                let mut r = answer(self, "closed");
                r.ingress = self.call.clone().map(Ingress::Close).into_iter().collect();
                r.close = true;
                Ok(r)
            }
            "update" | "dtmf" | "error" | "discarded" => Ok(MediaReply::default()),
            other => Err(error("unknown_message", format!("message type {other:?}"))),
        }
    }

    /// `disconnect` with reason `error` (AudioHook's server-initiated end; the client answers
    /// with `close`, or the socket's close frame follows).
    fn refusal(&mut self, reason: &str) -> Option<String> {
        self.state = State::Closed;
        Some(self.reply("disconnect", json!({"reason": "error", "info": reason})))
    }

    fn binary(&mut self, frame: &[u8]) -> Result<MediaReply, ProtocolError> {
        let Some(call) = self.call.clone() else {
            return Err(error("media_before_open", "audio before open"));
        };
        if self.state == State::Paused {
            return Ok(MediaReply::default()); // audio while paused is not heard
        }
        if frame.len() > 16_000 * self.channels {
            return Err(error("oversized", "an audio frame over 2 s"));
        }
        if !frame.len().is_multiple_of(self.channels) {
            return Err(error(
                "bad_frame",
                "a frame that splits a sample across channels",
            ));
        }
        let offset_s = self.position as f64 / 8000.0;
        self.position += (frame.len() / self.channels) as u64;
        let ingress = (0..self.channels)
            .map(|party| {
                let bytes: Vec<u8> = frame
                    .iter()
                    .skip(party)
                    .step_by(self.channels)
                    .copied()
                    .collect();
                Ingress::Audio(AudioChunk {
                    call: call.clone(),
                    party,
                    offset_s,
                    samples: g711::decode(&bytes, g711::Law::Mu),
                })
            })
            .collect();
        Ok(MediaReply {
            ingress,
            ..MediaReply::default()
        })
    }

    fn finish(&mut self) -> Option<Ingress> {
        if std::mem::replace(&mut self.state, State::Closed) == State::Closed {
            return None;
        }
        self.call.clone().map(Ingress::Close)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN: &str = r#"{"version":"2","type":"open","seq":1,"clientseq":0,
        "id":"e160e428-53e2-487c-977d-96989bf5c99d","position":"PT0S",
        "parameters":{"organizationId":"org","conversationId":"conv-1",
          "participant":{"id":"p","ani":"+15550100","aniName":"Caller","dnis":"+15550199"},
          "media":[{"type":"audio","format":"PCMU","channels":["external","internal"],"rate":8000}],
          "language":"en-US"}}"#;

    #[test]
    fn a_session_opens_a_two_party_call_splits_stereo_frames_and_answers_each_message() {
        let mut s = AudioHookSession::new();
        let r = s.text(OPEN).unwrap();
        let Ingress::Open(call) = &r.ingress[0] else {
            panic!("{:?}", r.ingress)
        };
        assert_eq!(call.id.as_str(), "conv-1");
        assert_eq!(call.parties[0].label, "external");
        assert_eq!(call.metadata["participant.ani"], "+15550100");
        let opened: Value = serde_json::from_str(&r.send[0]).unwrap();
        assert_eq!(opened["type"], "opened");
        assert_eq!(opened["clientseq"], 1);
        assert_eq!(opened["id"], "e160e428-53e2-487c-977d-96989bf5c99d");
        let audio = s.binary(&[0x80, 0xFF, 0x80, 0xFF]).unwrap();
        let [Ingress::Audio(external), Ingress::Audio(internal)] = &audio.ingress[..] else {
            panic!("{:?}", audio.ingress)
        };
        assert_eq!(external.samples.len(), 2);
        assert!(external.samples[0] > 0.9 && internal.samples[0] == 0.0);
        let second = s.binary(&[0xFF; 8]).unwrap();
        let Ingress::Audio(later) = &second.ingress[0] else {
            panic!()
        };
        assert_eq!(later.offset_s, 2.0 / 8000.0);
        let pong: Value = serde_json::from_str(
            &s.text(r#"{"version":"2","type":"ping","seq":2}"#)
                .unwrap()
                .send[0],
        )
        .unwrap();
        assert_eq!(
            (pong["type"].as_str(), pong["clientseq"].as_u64()),
            (Some("pong"), Some(2))
        );
        s.text(r#"{"version":"2","type":"pause","seq":3}"#).unwrap();
        assert!(s.binary(&[0xFF; 8]).unwrap().ingress.is_empty(), "paused");
        s.text(r#"{"version":"2","type":"resume","seq":4}"#)
            .unwrap();
        let closed = s.text(r#"{"version":"2","type":"close","seq":5}"#).unwrap();
        assert!(closed.close);
        assert!(matches!(&closed.ingress[..], [Ingress::Close(id)] if id.as_str() == "conv-1"));
        assert!(s.finish().is_none());
    }

    #[test]
    fn bad_messages_are_named() {
        let mut s = AudioHookSession::new();
        let kind = |s: &mut AudioHookSession, f: &str| s.text(f).unwrap_err().kind;
        assert_eq!(kind(&mut s, "nope"), "bad_json");
        assert_eq!(s.binary(&[0; 4]).unwrap_err().kind, "media_before_open");
        let unheard = s.text(&OPEN.replace("PCMU", "L16")).unwrap_err();
        assert_eq!((unheard.kind, unheard.fatal), ("unsupported_format", true));
        let goodbye: Value = serde_json::from_str(&s.refusal("no PCMU").unwrap()).unwrap();
        assert_eq!(goodbye["type"], "disconnect");
        assert_eq!(goodbye["parameters"]["reason"], "error");
        assert_eq!(goodbye["parameters"]["info"], "no PCMU");
        let mut s = AudioHookSession::new();
        assert_eq!(
            kind(&mut s, r#"{"version":"3","type":"ping"}"#),
            "bad_version"
        );
        s.text(OPEN).unwrap();
        assert_eq!(kind(&mut s, OPEN), "second_open");
        assert_eq!(s.binary(&[0; 3]).unwrap_err().kind, "bad_frame");
        assert_eq!(
            kind(&mut s, r#"{"version":"2","type":"dance"}"#),
            "unknown_message"
        );
        assert!(matches!(s.finish(), Some(Ingress::Close(_))));
    }
}
