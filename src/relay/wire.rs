//! The relay's messages as they travel (see the module above for the contract): a call's
//! opening, its audio chunks and its close, to and from NATS messages, and to and from the
//! ingest's spool file.

use crate::call::{AudioChunk, Call, CallId};
use crate::sinks::nats::call_subject;

pub const CALL_ID: &str = "Vishguard-Call-Id";
pub const KIND: &str = "Vishguard-Kind";
pub const PARTY: &str = "Vishguard-Party";
pub const SEQ: &str = "Vishguard-Seq";
pub const OFFSET: &str = "Vishguard-Offset";
/// The opening's own id (a ULID, new per call the ingest takes): a call id used again later
/// is another call.
pub const INSTANCE: &str = "Vishguard-Instance";
pub const MSG_ID: &str = "Nats-Msg-Id";

/// A message ready to publish (or to spool while the broker is away).
#[derive(Debug, Clone, PartialEq)]
pub struct WireMessage {
    pub subject: String,
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

impl WireMessage {
    /// An opening or a close: never shed when the spool is full (they are small, and a call
    /// without them cannot be heard or finished).
    pub fn is_control(&self) -> bool {
        self.header(KIND) != Some("audio")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn header_map(&self) -> async_nats::HeaderMap {
        let mut h = async_nats::HeaderMap::new();
        for (k, v) in &self.headers {
            h.insert(k.as_str(), v.as_str());
        }
        h
    }

    /// Bytes the message takes in memory or the spool, roughly.
    pub fn size(&self) -> usize {
        self.subject.len()
            + self.payload.len()
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len() + 4)
                .sum::<usize>()
    }

    /// Length-prefixed: subject, header count, each name and value, payload (all lengths
    /// u32 little-endian).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size() + 16 + 8 * self.headers.len());
        let mut put = |b: &[u8]| {
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        };
        put(self.subject.as_bytes());
        let n = (self.headers.len() as u32).to_le_bytes();
        put(&n);
        for (k, v) in &self.headers {
            put(k.as_bytes());
            put(v.as_bytes());
        }
        put(&self.payload);
        out
    }

    /// [`WireMessage::encode`] read back; `None` for bytes it did not write.
    pub fn decode(mut bytes: &[u8]) -> Option<Self> {
        let mut take = || -> Option<Vec<u8>> {
            let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
            let b = bytes.get(4..4 + len)?.to_vec();
            bytes = &bytes[4 + len..];
            Some(b)
        };
        let subject = String::from_utf8(take()?).ok()?;
        let n = u32::from_le_bytes(take()?.try_into().ok()?) as usize;
        if n > 64 {
            return None;
        }
        let mut headers = Vec::with_capacity(n);
        for _ in 0..n {
            let k = String::from_utf8(take()?).ok()?;
            let v = String::from_utf8(take()?).ok()?;
            headers.push((k, v));
        }
        let payload = take()?;
        Some(Self {
            subject,
            headers,
            payload,
        })
    }
}

/// A call's opening, on `<prefix>.calls.<call>`.
pub fn open(calls_prefix: &str, call: &Call, instance: &str) -> WireMessage {
    WireMessage {
        subject: call_subject(calls_prefix, call.id.as_str()),
        headers: vec![
            (MSG_ID.into(), format!("{}/{instance}/open", call.id)),
            (CALL_ID.into(), call.id.to_string()),
            (KIND.into(), "open".into()),
            (INSTANCE.into(), instance.into()),
        ],
        payload: serde_json::to_vec(call).expect("a call serialises"),
    }
}

/// A chunk of audio, on `<prefix>.audio.<call>`: 16-bit PCM (samples beyond [-1, 1] are
/// clipped).
pub fn audio(audio_prefix: &str, chunk: &AudioChunk, seq: u64, instance: &str) -> WireMessage {
    let mut payload = Vec::with_capacity(chunk.samples.len() * 2);
    for s in &chunk.samples {
        let v = if s.is_finite() { *s } else { 0.0 };
        let q = (v * 32768.0).round().clamp(-32768.0, 32767.0) as i16;
        payload.extend_from_slice(&q.to_le_bytes());
    }
    WireMessage {
        subject: call_subject(audio_prefix, chunk.call.as_str()),
        headers: vec![
            (
                MSG_ID.into(),
                format!("{}/{instance}/{}/{seq}", chunk.call, chunk.party),
            ),
            (CALL_ID.into(), chunk.call.to_string()),
            (KIND.into(), "audio".into()),
            (INSTANCE.into(), instance.into()),
            (PARTY.into(), chunk.party.to_string()),
            (SEQ.into(), seq.to_string()),
            // Shortest text that reads back to the same f64.
            (OFFSET.into(), format!("{:?}", chunk.offset_s)),
        ],
        payload,
    }
}

/// A call's close, on `<prefix>.audio.<call>` after its last chunk.
pub fn close(audio_prefix: &str, id: &CallId, instance: &str) -> WireMessage {
    WireMessage {
        subject: call_subject(audio_prefix, id.as_str()),
        headers: vec![
            (MSG_ID.into(), format!("{id}/{instance}/close")),
            (CALL_ID.into(), id.to_string()),
            (KIND.into(), "close".into()),
            (INSTANCE.into(), instance.into()),
        ],
        payload: Vec::new(),
    }
}

/// A message of a call's audio subject, read back.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Audio {
        seq: u64,
        chunk: AudioChunk,
        instance: Option<String>,
    },
    Close {
        call: CallId,
        instance: Option<String>,
    },
}

/// Reads an audio-subject message. Errors say what is wrong (for the log; the message is
/// skipped and counted).
pub fn read_audio(
    headers: Option<&async_nats::HeaderMap>,
    payload: &[u8],
) -> Result<Incoming, String> {
    let get = |name: &str| -> Result<&str, String> {
        headers
            .and_then(|h| h.get(name))
            .map(|v| v.as_str())
            .ok_or_else(|| format!("no {name} header"))
    };
    let call = CallId::new(get(CALL_ID)?);
    let instance = get(INSTANCE).ok().map(str::to_owned);
    match get(KIND)? {
        "close" => Ok(Incoming::Close { call, instance }),
        "audio" => {
            let party: usize = get(PARTY)?
                .parse()
                .map_err(|_| format!("{PARTY} is not a number"))?;
            let seq: u64 = get(SEQ)?
                .parse()
                .map_err(|_| format!("{SEQ} is not a number"))?;
            let offset_s: f64 = get(OFFSET)?
                .parse()
                .map_err(|_| format!("{OFFSET} is not a number"))?;
            if !payload.len().is_multiple_of(2) {
                return Err(format!("{} bytes of 16-bit audio (odd)", payload.len()));
            }
            let samples = payload
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0)
                .collect();
            Ok(Incoming::Audio {
                seq,
                instance,
                chunk: AudioChunk {
                    call,
                    party,
                    offset_s,
                    samples,
                },
            })
        }
        other => Err(format!("{KIND} {other:?} is not audio or close")),
    }
}

/// Reads a call opening.
pub fn read_open(payload: &[u8]) -> Result<Call, String> {
    serde_json::from_slice(payload).map_err(|e| format!("not a call opening: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::Party;

    #[test]
    fn audio_and_closes_read_back_and_spool_records_round_trip() {
        let chunk = AudioChunk {
            call: CallId::new("a.b c"),
            party: 1,
            offset_s: 0.1 + 0.2,
            samples: vec![0.0, 0.5, -1.0, 1.5, f32::NAN],
        };
        let m = audio("vg.audio", &chunk, 7, "I1");
        assert_eq!(m.subject, "vg.audio.a_b_c");
        assert!(!m.is_control());
        let back = read_audio(Some(&m.header_map()), &m.payload).unwrap();
        let Incoming::Audio {
            seq,
            chunk: c,
            instance,
        } = back
        else {
            panic!("not audio")
        };
        assert_eq!((seq, instance.as_deref()), (7, Some("I1")));
        assert_eq!((c.call.as_str(), c.party), ("a.b c", 1));
        assert_eq!(c.offset_s, 0.1 + 0.2);
        assert_eq!(c.samples, vec![0.0, 0.5, -1.0, 32767.0 / 32768.0, 0.0]);
        let closed = close("vg.audio", &chunk.call, "I1");
        assert!(closed.is_control());
        assert_eq!(
            read_audio(Some(&closed.header_map()), &[]).unwrap(),
            Incoming::Close {
                call: chunk.call.clone(),
                instance: Some("I1".into())
            }
        );
        let call = Call {
            id: chunk.call.clone(),
            parties: vec![Party {
                label: "caller".into(),
                sample_rate: 8000,
            }],
            metadata: Default::default(),
        };
        let opened = open("vg.calls", &call, "I1");
        assert_eq!(read_open(&opened.payload).unwrap(), call);
        for m in [m, closed, opened] {
            assert_eq!(WireMessage::decode(&m.encode()), Some(m.clone()));
            assert_eq!(
                WireMessage::decode(&m.encode()[..m.encode().len() - 1]),
                None
            );
        }
    }

    #[test]
    fn malformed_messages_are_named() {
        let mut h = async_nats::HeaderMap::new();
        assert!(read_audio(None, &[]).unwrap_err().contains(CALL_ID));
        h.insert(CALL_ID, "c");
        h.insert(KIND, "audio");
        h.insert(PARTY, "x");
        assert!(read_audio(Some(&h), &[]).unwrap_err().contains(PARTY));
        h.insert(PARTY, "0");
        h.insert(SEQ, "1");
        h.insert(OFFSET, "0");
        assert!(read_audio(Some(&h), &[1, 2, 3])
            .unwrap_err()
            .contains("odd"));
        h.insert(KIND, "video");
        assert!(read_audio(Some(&h), &[]).is_err());
        assert!(read_open(b"{").is_err());
        assert_eq!(WireMessage::decode(&[255, 255, 255, 255]), None);
    }
}
