//! Where calls come from. A source announces each call, delivers its audio in chunks stamped
//! with their audio time, and closes it; it sees only an [`Ingest`] port and a [`Stop`]
//! signal, never the engine behind them.
//!
//! Sources here: recordings played as live calls (`file`), and sound devices through cpal
//! (`device`, with the `capture` feature).

pub mod audiohook;
#[cfg(feature = "capture")]
pub mod device;
pub mod file;
pub mod rtp;
pub mod sip;
pub mod twilio;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::audio::ChannelMode;
use crate::call::{AudioChunk, Call, CallId};

/// `[[sources]] type = "device"`: a sound card (cpal). Parsed in every build, so a config that
/// asks for a device in a build without the `capture` feature gets a clear error, not a parse
/// failure.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSourceConfig {
    /// The input device's name (`listen --list-devices`); default: the system's default input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Stop capturing after this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// The call's id; must be unique per call, as receivers dedupe alerts on ids derived from
    /// it (default: the device's name followed by a ULID, new each run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// A stereo device: each channel a party (`split`), or one mixed party (`mix`).
    #[serde(default)]
    pub channels: ChannelMode,
}

/// What a source sends, in this order per call: `Open`, any number of `Audio`, `Close`.
#[derive(Debug, Clone)]
pub enum Ingress {
    Open(Call),
    Audio(AudioChunk),
    Close(CallId),
}

/// Why the port did not take an item.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IngestError {
    /// The call's queue is full: the chunk was dropped and counted (the call's summary reports
    /// `dropped_audio_s`).
    #[error("call {}: its audio queue is full; the chunk was dropped", .0.short())]
    QueueFull(CallId),
    #[error("call {} is not open", .0.short())]
    UnknownCall(CallId),
    /// The id belongs to a call still open, or still being heard after its close.
    #[error("call {} is already open (or still being heard)", .0.short())]
    DuplicateCall(CallId),
    /// The engine holds as many calls as it is configured for (`engine.max_calls`).
    #[error("{0} calls are open, the most this engine takes; try again later")]
    TooManyCalls(usize),
    #[error("call {}: no party {party} (the call has {parties})", .call.short())]
    UnknownParty {
        call: CallId,
        party: usize,
        parties: usize,
    },
    #[error("call {}: {problem}", .call.short())]
    BadCall { call: CallId, problem: String },
    /// The engine is shutting down and takes nothing more.
    #[error("the engine is shutting down")]
    Stopped,
}

/// Where a source delivers its calls: a channel into the engine (or a test's recorder).
///
/// `send` never blocks, so a live source (a sound card, a network stream) is never held up:
/// audio that finds its call's queue full is dropped and counted. `send_waiting` waits for
/// room instead, for sources that can wait (a file read faster than real time).
pub trait Ingest: Send + Sync {
    fn send(&self, item: Ingress) -> Result<(), IngestError>;
    fn send_waiting(&self, item: Ingress) -> Result<(), IngestError>;
}

/// Asks sources to finish: a source that sees it closes its calls and returns.
#[derive(Debug, Clone, Default)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn request(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn requested(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Sleeps until `deadline` or until a stop is requested, whichever comes first; true when
    /// the deadline was reached without a stop.
    pub fn sleep_until(&self, deadline: Instant) -> bool {
        loop {
            if self.requested() {
                return false;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return true;
            };
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }
}

/// A component that produces calls. `run` returns when its calls are done, or soon after a
/// stop is requested (having closed what it opened).
pub trait Source: Send {
    /// For logs and errors: what this source reads ("file calls/a.wav", "device default").
    fn describe(&self) -> String;
    fn run(self: Box<Self>, out: Arc<dyn Ingest>, stop: Stop) -> anyhow::Result<()>;
}

/// What a media-stream message asks of the socket's owner: items for the engine, messages to
/// send back, and whether to close the socket after them.
#[derive(Debug, Default)]
pub struct MediaReply {
    pub ingress: Vec<Ingress>,
    pub send: Vec<String>,
    pub close: bool,
}

/// One WebSocket media stream's protocol (Twilio-style streams, Genesys AudioHook): the server
/// owns the socket and hands each message here.
pub trait MediaSession: Send {
    fn text(&mut self, frame: &str) -> Result<MediaReply, twilio::ProtocolError>;
    fn binary(&mut self, frame: &[u8]) -> Result<MediaReply, twilio::ProtocolError>;
    /// The socket ended: the call's close, if the protocol's own close never came.
    fn finish(&mut self) -> Option<Ingress>;
    /// The protocol's own word to the peer when its stream cannot go on (the session or the
    /// engine refused the opening), sent before the socket's close frame: AudioHook's
    /// `disconnect`; none for Twilio-style streams, whose peers read the close frame.
    fn refusal(&mut self, _reason: &str) -> Option<String> {
        None
    }
}

/// Malformed input refused or skipped by the network sources and the server, by kind
/// (`bad_json`, `bad_version`, `unknown_payload_type`, ...), for the metrics. Clones share it.
#[derive(Debug, Default)]
pub struct Malformed(std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>);

impl Malformed {
    pub fn count(&self, kind: &'static str) {
        *self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(kind)
            .or_default() += 1;
    }

    pub fn snapshot(&self) -> std::collections::BTreeMap<&'static str, u64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Records what a source sends, for tests of sources without an engine.
#[derive(Default)]
pub struct Recorder {
    pub items: std::sync::Mutex<Vec<Ingress>>,
}

impl Ingest for Recorder {
    fn send(&self, item: Ingress) -> Result<(), IngestError> {
        self.items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(item);
        Ok(())
    }

    fn send_waiting(&self, item: Ingress) -> Result<(), IngestError> {
        self.send(item)
    }
}
