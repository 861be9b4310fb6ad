//! Twilio-style media streams over a WebSocket: JSON text frames `connected`, `start` (call and
//! stream ids, tracks, custom parameters, media format), `media` (a track's base64 8 kHz µ-law
//! audio, its chunk number and its timestamp in milliseconds since the stream started), `dtmf`,
//! `mark` and `stop`. Each track is a party: `inbound` (what the caller says) and `outbound`
//! (what is played or said to them). The call id is the `callSid`.
//!
//! Follows Twilio's "Media Streams - WebSocket Messages" reference; Telnyx and others speak the
//! same protocol. A session turns frames into [`Ingress`]; the HTTP server owns the socket.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;

use super::{Ingress, MediaReply, MediaSession};
use crate::audio::g711;
use crate::call::{AudioChunk, Call, CallId, Party};

/// A frame holding more than this much audio (8 kHz samples, 2 s) is refused: Twilio sends
/// 20 ms at a time.
const MAX_PAYLOAD_SAMPLES: usize = 16_000;

/// What was wrong with a frame; `kind` names it for the metrics. A `fatal` error ends the
/// stream (the session cannot go on: an opening with nothing it can hear); any other is
/// counted and skipped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ProtocolError {
    pub kind: &'static str,
    pub message: String,
    pub fatal: bool,
}

fn error(kind: &'static str, message: impl Into<String>) -> ProtocolError {
    ProtocolError {
        kind,
        message: message.into(),
        fatal: false,
    }
}

#[derive(Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
enum Frame {
    Connected {},
    Start { start: Start },
    Media { media: Media },
    Dtmf {},
    Mark {},
    Stop {},
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Start {
    call_sid: String,
    #[serde(default)]
    stream_sid: Option<String>,
    #[serde(default)]
    account_sid: Option<String>,
    #[serde(default)]
    tracks: Vec<String>,
    #[serde(default)]
    custom_parameters: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    media_format: Option<MediaFormat>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MediaFormat {
    encoding: String,
    sample_rate: u32,
    #[serde(default = "one")]
    channels: u32,
}

fn one() -> u32 {
    1
}

#[derive(Deserialize)]
struct Media {
    #[serde(default)]
    track: Option<String>,
    /// Milliseconds since the stream started, as a string.
    #[serde(default)]
    timestamp: Option<String>,
    payload: String,
}

/// One media stream's state.
#[derive(Debug, Default)]
pub struct TwilioSession {
    call: Option<CallId>,
    tracks: Vec<String>,
    /// Per track: samples received so far (where a chunk without a timestamp goes).
    received: Vec<u64>,
    closed: bool,
}

impl TwilioSession {
    pub fn new() -> Self {
        Self::default()
    }

    /// The call this stream carries, once `start` has come.
    pub fn call_id(&self) -> Option<&CallId> {
        self.call.as_ref()
    }

    /// One text frame: what to hand to the engine (nothing for `connected`, `dtmf`, `mark`).
    pub fn handle(&mut self, frame: &str) -> Result<Vec<Ingress>, ProtocolError> {
        let frame: Frame = serde_json::from_str(frame)
            .map_err(|e| error("bad_json", format!("not a media stream message: {e}")))?;
        if self.closed {
            return Err(error("after_stop", "a message after stop"));
        }
        match frame {
            Frame::Connected {} | Frame::Dtmf {} | Frame::Mark {} => Ok(Vec::new()),
            Frame::Start { start } => self.start(start).map(|open| vec![open]),
            Frame::Media { media } => self.media(media).map(|chunk| vec![chunk]),
            Frame::Stop {} => {
                self.closed = true;
                Ok(self.call.clone().map(Ingress::Close).into_iter().collect())
            }
        }
    }

    /// The socket ended: a call whose `stop` never came is closed all the same.
    pub fn finish(&mut self) -> Option<Ingress> {
        if std::mem::replace(&mut self.closed, true) {
            return None;
        }
        self.call.clone().map(Ingress::Close)
    }

    fn start(&mut self, start: Start) -> Result<Ingress, ProtocolError> {
        if self.call.is_some() {
            return Err(error("second_start", "a second start on one stream"));
        }
        if let Some(f) = &start.media_format {
            if f.encoding != "audio/x-mulaw" || f.sample_rate != 8000 || f.channels != 1 {
                return Err(error(
                    "unsupported_format",
                    format!(
                        "media format {} at {} Hz, {} channels; 8 kHz mono audio/x-mulaw is taken",
                        f.encoding, f.sample_rate, f.channels
                    ),
                ));
            }
        }
        if start.call_sid.is_empty() || start.call_sid.len() > 128 {
            return Err(error("bad_call_sid", "callSid must be 1 to 128 characters"));
        }
        let mut tracks = start.tracks;
        if tracks.is_empty() {
            tracks.push("inbound".into());
        }
        if tracks.len() > 2 {
            return Err(error(
                "bad_tracks",
                "at most two tracks (inbound, outbound)",
            ));
        }
        let mut metadata = BTreeMap::from([("source".to_owned(), "twilio".to_owned())]);
        if let Some(s) = start.stream_sid {
            metadata.insert("stream_sid".into(), s);
        }
        if let Some(s) = start.account_sid {
            metadata.insert("account_sid".into(), s);
        }
        for (k, v) in start.custom_parameters {
            let v = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            metadata.insert(format!("param.{k}"), v);
        }
        let id = CallId::new(start.call_sid);
        self.call = Some(id.clone());
        self.received = vec![0; tracks.len()];
        let parties = tracks
            .iter()
            .map(|t| Party {
                label: t.clone(),
                sample_rate: 8000,
            })
            .collect();
        self.tracks = tracks;
        Ok(Ingress::Open(Call {
            id,
            parties,
            metadata,
        }))
    }

    fn media(&mut self, media: Media) -> Result<Ingress, ProtocolError> {
        let Some(call) = self.call.clone() else {
            return Err(error("media_before_start", "media before start"));
        };
        let party = match &media.track {
            None => 0,
            Some(t) => self
                .tracks
                .iter()
                .position(|known| known == t)
                .ok_or_else(|| error("unknown_track", format!("media for track {t:?}")))?,
        };
        if media.payload.len() > MAX_PAYLOAD_SAMPLES * 4 / 3 + 4 {
            return Err(error("oversized", "a media payload over 2 s"));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(media.payload.as_bytes())
            .map_err(|e| error("bad_payload", format!("payload is not base64: {e}")))?;
        let offset_s = match &media.timestamp {
            Some(ms) => {
                let ms: f64 = ms
                    .parse()
                    .map_err(|_| error("bad_timestamp", format!("timestamp {ms:?}")))?;
                ms / 1000.0
            }
            None => self.received[party] as f64 / 8000.0,
        };
        self.received[party] += bytes.len() as u64;
        Ok(Ingress::Audio(AudioChunk {
            call,
            party,
            offset_s,
            samples: g711::decode(&bytes, g711::Law::Mu),
        }))
    }
}

impl MediaSession for TwilioSession {
    fn text(&mut self, frame: &str) -> Result<MediaReply, ProtocolError> {
        Ok(MediaReply {
            ingress: self.handle(frame)?,
            ..MediaReply::default()
        })
    }

    fn binary(&mut self, _: &[u8]) -> Result<MediaReply, ProtocolError> {
        Err(error("binary_frame", "Twilio media streams are JSON text"))
    }

    fn finish(&mut self) -> Option<Ingress> {
        TwilioSession::finish(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: &str = r#"{"event":"start","sequenceNumber":"1","streamSid":"MZ1",
        "start":{"accountSid":"AC1","streamSid":"MZ1","callSid":"CA42","tracks":["inbound","outbound"],
        "customParameters":{"desk":"7"},
        "mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}"#;

    #[test]
    fn a_stream_opens_a_call_with_a_party_per_track_and_closes_on_stop() {
        let mut s = TwilioSession::new();
        assert!(s
            .handle(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#)
            .unwrap()
            .is_empty());
        let open = s.handle(START).unwrap();
        let Ingress::Open(call) = &open[0] else {
            panic!("{open:?}")
        };
        assert_eq!(call.id.as_str(), "CA42");
        assert_eq!(call.parties[1].label, "outbound");
        assert_eq!(call.metadata["param.desk"], "7");
        let media = s
            .handle(r#"{"event":"media","media":{"track":"outbound","chunk":"3","timestamp":"40","payload":"//8A"}}"#)
            .unwrap();
        let Ingress::Audio(chunk) = &media[0] else {
            panic!("{media:?}")
        };
        assert_eq!((chunk.party, chunk.offset_s), (1, 0.04));
        assert_eq!(chunk.samples.len(), 3);
        assert!(s
            .handle(r#"{"event":"dtmf","dtmf":{"track":"inbound_track","digit":"1"}}"#)
            .unwrap()
            .is_empty());
        let stop = s
            .handle(r#"{"event":"stop","stop":{"callSid":"CA42"}}"#)
            .unwrap();
        assert!(matches!(&stop[..], [Ingress::Close(id)] if id.as_str() == "CA42"));
        assert!(s.finish().is_none(), "closed once");
    }

    #[test]
    fn bad_frames_are_named_and_the_stream_goes_on() {
        let mut s = TwilioSession::new();
        let kind = |s: &mut TwilioSession, f: &str| s.handle(f).unwrap_err().kind;
        assert_eq!(kind(&mut s, "{not json"), "bad_json");
        assert_eq!(
            kind(&mut s, r#"{"event":"media","media":{"payload":"AAAA"}}"#),
            "media_before_start"
        );
        let wrong = START.replace("audio/x-mulaw", "audio/l16");
        assert_eq!(kind(&mut s, &wrong), "unsupported_format");
        s.handle(START).unwrap();
        assert_eq!(kind(&mut s, START), "second_start");
        assert_eq!(
            kind(
                &mut s,
                r#"{"event":"media","media":{"track":"video","payload":"AAAA"}}"#
            ),
            "unknown_track"
        );
        assert_eq!(
            kind(&mut s, r#"{"event":"media","media":{"payload":"***"}}"#),
            "bad_payload"
        );
        let huge = format!(
            r#"{{"event":"media","media":{{"payload":"{}"}}}}"#,
            "A".repeat(40_000)
        );
        assert_eq!(kind(&mut s, &huge), "oversized");
        // Still a working stream, and a socket that ends without stop closes the call.
        assert!(s
            .handle(r#"{"event":"media","media":{"payload":"AAAA"}}"#)
            .is_ok());
        assert!(matches!(s.finish(), Some(Ingress::Close(_))));
    }
}
