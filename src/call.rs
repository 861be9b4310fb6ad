//! The records that cross rooms: a call and its parties, a chunk of its audio, what was heard,
//! the evidence, alerts, the per-call summary and the events the engine reports.
//!
//! They are also the wire format. Every record that leaves the process (a JSON line of `scan
//! --format jsonl`, `classify` or `listen`, a line of the alert file, a webhook body, and later
//! the HTTP API, SSE and NATS) is wrapped in [`Versioned`], which adds `"schema_version"`.
//! `docs/schema.json` is generated from these types; a test keeps it in step (`VISHGUARD_BLESS=1
//! cargo test --test schema` rewrites it after a deliberate change).
//!
//! Times are seconds of audio time from the start of the call (or file), never wall-clock time,
//! except where a field says so (`wall_time`, `latency_s`).

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Version of the records' wire format. Raised when a field changes meaning or goes away;
/// fields may be added without raising it, so readers must ignore fields they do not know.
pub const SCHEMA_VERSION: u32 = 1;

/// A call's identity, unique across calls and restarts (alert ids are derived from it, and
/// receivers dedupe on them): the network's own id (a SIP Call-ID, a Twilio `callSid`, an
/// AudioHook conversation id), or for a file or a sound device its name followed by a ULID
/// ([`CallId::unique`]). `scan`, `classify` and `score`, which raise no alerts, name each call
/// after its file or manifest row.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(transparent)]
pub struct CallId(pub String);

impl CallId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// `name` followed by a fresh ULID (time-ordered, 80 random bits): "mic-01JF3…". For
    /// sources whose name is not unique per call (a file played twice, a device's next call).
    pub fn unique(name: &str) -> Self {
        Self(format!("{name}-{}", ulid::Ulid::new()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What an id may not be, said plainly: empty, longer than [`MAX_CALL_ID_BYTES`], or
    /// holding a control character (a NUL, a newline: the id names threads, log lines, URLs,
    /// NATS subjects and file lines, where they cut or forge what follows; a NUL made the
    /// engine's thread for the call panic).
    pub fn check(&self) -> Result<(), String> {
        if self.0.is_empty() {
            return Err("an empty call id".into());
        }
        if self.0.len() > MAX_CALL_ID_BYTES {
            return Err(format!(
                "a call id of {} bytes; at most {MAX_CALL_ID_BYTES}",
                self.0.len()
            ));
        }
        if let Some((at, c)) = self.0.char_indices().find(|(_, c)| c.is_control()) {
            return Err(format!(
                "a call id with a control character (U+{:04X} at byte {at})",
                c as u32
            ));
        }
        Ok(())
    }

    /// The id for a log line or a message to a peer: at most 64 characters, the rest shown
    /// as "…" (a refused id may be 20 KB long), control characters escaped (`\0`, `\n`).
    pub fn short(&self) -> String {
        short_id(&self.0)
    }
}

/// [`CallId::short`] for an id not yet wrapped.
pub fn short_id(id: &str) -> String {
    let mut out = String::new();
    for (n, c) in id.chars().enumerate() {
        if n == 64 {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for CallId {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// One party of a call: one stream of audio (a channel of a stereo recording, one side of a
/// SIPREC session, one track of a media stream).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Party {
    /// Who this stream carries, for people: "channel 0", "caller", a SIPREC participant's name.
    pub label: String,
    /// Samples per second of this party's audio as its source delivers it (Hz).
    pub sample_rate: u32,
}

/// A call as its source announces it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Call {
    pub id: CallId,
    /// One entry per party; [`AudioChunk::party`] indexes into it.
    pub parties: Vec<Party>,
    /// What the source knows about the call: `file`, `device`, caller and callee numbers...
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// A call with more parties than this is refused: each party is a voice heard on its own
/// (a conference bridge's recording is mixed first).
pub const MAX_PARTIES: usize = 16;
/// A call id longer than this is refused (bytes): it names subjects, headers and file lines,
/// which have limits of their own (NATS refuses a subject over 4 KiB and drops the client).
pub const MAX_CALL_ID_BYTES: usize = 256;
/// A call's metadata larger than this is refused (bytes of keys and values, and entries):
/// every summary carries it, and a broker or receiver refuses messages past ~1 MiB.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
pub const MAX_METADATA_ENTRIES: usize = 64;

impl Call {
    /// What an engine or an ingest refuses in an opening, said plainly: no party, more than
    /// 16, an id [`CallId::check`] refuses, metadata over [`MAX_METADATA_BYTES`].
    pub fn check(&self) -> Result<(), String> {
        if self.parties.is_empty() {
            return Err("a call needs at least one party".into());
        }
        if self.parties.len() > MAX_PARTIES {
            return Err(format!(
                "{} parties; at most {MAX_PARTIES} are heard",
                self.parties.len()
            ));
        }
        self.id.check()?;
        let bytes: usize = self.metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
        if bytes > MAX_METADATA_BYTES || self.metadata.len() > MAX_METADATA_ENTRIES {
            return Err(format!(
                "metadata of {} entries and {bytes} bytes; at most {MAX_METADATA_ENTRIES} and \
                 {MAX_METADATA_BYTES}",
                self.metadata.len()
            ));
        }
        Ok(())
    }
}

/// A piece of one party's audio, as a source delivers it.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioChunk {
    pub call: CallId,
    /// Index into [`Call::parties`].
    pub party: usize,
    /// Where the chunk starts, in seconds of audio time from the start of the call. A chunk
    /// that starts later than the previous one ended leaves a gap (audio lost on the network
    /// or dropped under load), and the gap stays a gap: later words keep their true times.
    pub offset_s: f64,
    /// Mono samples in [-1, 1] at the party's `sample_rate`.
    pub samples: Vec<f32>,
}

/// A call is at most a day long: a chunk placed later is a source's mistake, and taking it
/// would stop the party's clock (seconds of audio time).
pub const MAX_OFFSET_S: f64 = 86_400.0;
/// A chunk holds at most this much audio (seconds): call queues bound chunks, so their size
/// must be bounded too.
pub const MAX_CHUNK_S: f64 = 10.0;

impl AudioChunk {
    /// What an engine or an ingest refuses in a chunk of a party at `rate` Hz, said plainly:
    /// an offset outside the call's day ([`MAX_OFFSET_S`], NaN included), more than
    /// [`MAX_CHUNK_S`] of audio.
    pub fn check(&self, rate: u32) -> Result<(), String> {
        if !(0.0..=MAX_OFFSET_S).contains(&self.offset_s) {
            return Err(format!(
                "a chunk's offset_s is {} (0 to {MAX_OFFSET_S} s)",
                self.offset_s
            ));
        }
        if self.samples.len() as f64 > MAX_CHUNK_S * rate as f64 {
            return Err(format!(
                "a chunk of {} samples is over {MAX_CHUNK_S} s",
                self.samples.len()
            ));
        }
        Ok(())
    }

    /// Seconds of audio in the chunk at `rate` Hz.
    pub fn duration_s(&self, rate: u32) -> f64 {
        self.samples.len() as f64 / rate.max(1) as f64
    }
}

/// How likely a call is a scam, on the scale people act on.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    None,
    Suspected,
    High,
}

impl Risk {
    pub fn is_flagged(self) -> bool {
        self != Risk::None
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Risk::None => "none",
            Risk::Suspected => "suspected",
            Risk::High => "high",
        }
    }
}

/// One stretch of speech with its text, as the recogniser heard it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct Segment {
    /// Seconds of audio time.
    pub start_s: f64,
    pub end_s: f64,
    pub text: String,
    /// Mean log-probability of the decoded tokens (Whisper's confidence; below -1 is shaky).
    pub avg_logprob: f32,
    /// Whisper's probability that the window held no speech.
    pub no_speech_prob: f32,
    /// Sampling temperature of the decode that was kept (0 unless the fallback ran).
    #[serde(skip)]
    pub temperature: f32,
    /// The recogniser was too unsure of this text to trust it (`avg_logprob` below -2.0,
    /// `LOW_CONFIDENCE_LOGPROB`): kept for the record, never evidence. Absent when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub low_confidence: bool,
}

/// Segments the recogniser was this unsure of (mean token log-probability) are marked
/// `low_confidence` and give no evidence: on the field cases, speech-like sound with no words
/// came out as invented sentences at -2.9 to -4.6, and real telephone speech at -0.3 to -0.8
/// (base and tiny.en).
pub const LOW_CONFIDENCE_LOGPROB: f32 = -2.0;

impl Segment {
    /// A segment with no confidence figures (text that did not come from the recogniser).
    pub fn new(start_s: f64, end_s: f64, text: impl Into<String>) -> Self {
        Self {
            start_s,
            end_s,
            text: text.into(),
            avg_logprob: 0.0,
            no_speech_prob: 0.0,
            temperature: 0.0,
            low_confidence: false,
        }
    }

    /// A segment as the recogniser heard it, marked `low_confidence` by its `avg_logprob`.
    pub fn heard(
        start_s: f64,
        end_s: f64,
        text: impl Into<String>,
        avg_logprob: f32,
        no_speech_prob: f32,
        temperature: f32,
    ) -> Self {
        Self {
            start_s,
            end_s,
            text: text.into(),
            avg_logprob,
            no_speech_prob,
            temperature,
            low_confidence: avg_logprob < LOW_CONFIDENCE_LOGPROB,
        }
    }
}

/// Words that match a scam-script pattern.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct Evidence {
    /// The phrase pack's category (`authority_impersonation`, `unusual_payment`, ...).
    pub category: String,
    /// The pattern, as written in the pack.
    pub pattern: String,
    /// The words as they stand in the transcript.
    pub matched_text: String,
    /// Character (not byte) offsets in the text that was classified (for audio: the party's
    /// transcript joined with spaces).
    pub start_char: usize,
    pub end_char: usize,
    /// What this match added to its category (after the fuzzy, addressee and context discounts);
    /// negative for reassurances ("we will never ask for your PIN").
    pub weight: f32,
    /// How much the words around the match sound like a scam script's line (cosine similarity
    /// to the closest canonical sentence); present when the context check ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_similarity: Option<f32>,
    /// The same for the closest canonical line of an honest call (packs that list them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub honest_similarity: Option<f32>,
    /// Who said it and when (audio only).
    #[serde(flatten)]
    pub spoken: Option<Spoken>,
}

/// Where evidence in a call's audio was said.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct Spoken {
    /// The party who said it.
    pub party: usize,
    /// Seconds of audio time where the words start and end (interpolated inside the utterance,
    /// so about ±0.3 s).
    pub t_s: f64,
    pub end_s: f64,
}

/// Raised the moment a call that is flagged has a piece of evidence not yet reported.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct Alert {
    /// Stable for this call, party and pattern: receivers dedupe on it.
    pub alert_id: String,
    pub call_id: CallId,
    /// The evidence (with `spoken`: its `party`, `t_s` and `end_s` are always present).
    #[serde(flatten)]
    pub evidence: Evidence,
    /// The party's score and risk once this evidence counted.
    pub score: f32,
    pub risk: Risk,
    /// When the alert was raised (RFC 3339, UTC, wall clock).
    pub wall_time: String,
    /// How long after the words were spoken the alert came, in seconds (never negative): the
    /// wall-clock seconds since the call opened minus `end_s`, or, when the call's audio came
    /// faster than real time (a file without `--realtime`), the seconds of audio received
    /// after `end_s`, whichever is larger.
    pub latency_s: f64,
    /// Raised from the words of an utterance still being spoken (a partial hypothesis).
    #[serde(default)]
    pub partial: bool,
}

/// One finished utterance, heard.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct Utterance {
    pub call_id: CallId,
    pub party: usize,
    /// Seconds of audio time. Where the words begin: after a cut at the maximum utterance
    /// length inside speech, the next utterance is heard with the end of the one before it,
    /// and a sentence running across the cut is written whole, so `start_s` can fall before
    /// the previous utterance's `end_s` and its first words repeat that one's last words.
    pub start_s: f64,
    pub end_s: f64,
    pub text: String,
    /// The language of the phrase pack the party is scored with.
    pub language: Option<String>,
    /// The party's risk and score once these words counted.
    pub risk: Risk,
    pub score: f32,
}

/// One party's outcome within a [`CallSummary`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct PartySummary {
    pub party: usize,
    pub label: String,
    /// The language the recogniser heard.
    pub language: Option<String>,
    pub risk: Risk,
    pub score: f32,
    /// When this party first reached `suspected`, in seconds of audio time.
    pub first_alert_s: Option<f64>,
    /// The call model's probability (0..1) that this party's words follow a scam script,
    /// when it ran (the pack has one and the party's words had cues).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_model: Option<f32>,
    /// The language this party most likely spoke, when no phrase pack covers it (its risk
    /// then says nothing about the words).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncovered_language: Option<String>,
    /// What was said, when the caller asked for it (`scan`, `score`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transcript: Vec<Segment>,
}

/// How a live call fared in the engine.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct StreamStats {
    /// Utterances handed to the recogniser.
    pub utterances: usize,
    /// Alerts sent.
    pub alerts: usize,
    /// Of those, alerts the final verdict does not bear out (their evidence is gone from it,
    /// or the party's final risk is none): mostly alerts raised from words still being spoken
    /// (`"partial": true`) that the finished words, heard whole, do not repeat. The summary's
    /// risk is the final verdict.
    #[serde(default)]
    pub alerts_withdrawn: usize,
    /// Seconds of audio dropped because the call's queue was full.
    pub dropped_audio_s: f64,
    /// Seconds of audio time between chunks that never arrived: lost on the way, or among the
    /// dropped above. Later words keep their true times across them.
    #[serde(default)]
    pub missing_audio_s: f64,
    /// Utterances dropped because the recogniser's queue was full.
    pub dropped_utterances: u64,
}

/// One call's outcome: the line `scan`, `classify` and `score` print per call, and the body of
/// the `call_ended` event of `listen`.
///
/// A call is as risky as its riskiest party (the caller's script is what counts): `risk`,
/// `score`, `categories` and `language` are that party's; `evidence` is every party's.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct CallSummary {
    pub call_id: CallId,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    pub risk: Risk,
    pub score: f32,
    /// The scam-script categories that contributed to `score`.
    pub categories: Vec<String>,
    /// The phrase pack's language.
    pub language: Option<String>,
    /// When the call first reached `suspected`, in seconds of audio time (audio only).
    pub first_alert_s: Option<f64>,
    /// The call model's probability (0..1) that the deciding party's words follow a scam
    /// script, when it ran: a flagged call it reads below its pack's `gate` is not flagged,
    /// and one with cues it reads at `lift` or above is (evidence `call_model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_model: Option<f32>,
    pub evidence: Vec<Evidence>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parties: Vec<PartySummary>,
    /// Seconds of audio in the call (longest party).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_s: Option<f64>,
    /// Live calls only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamStats>,
    /// Set when every party that spoke did so in a language no phrase pack covers: the call
    /// was not checked, and its `risk` of `none` means "unknown", not "clean".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncovered_language: Option<String>,
}

/// A line of input that could not be scored (`classify`): which line, and why. It stands in
/// the output where that line's [`CallSummary`] would have.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct InputError {
    /// The line's id, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<CallId>,
    /// 1-based line number of the input.
    pub line: usize,
    pub error: String,
}

/// What the engine reports to its sinks, in order per call.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    CallStarted(Call),
    /// One utterance heard (sinks print these only when asked).
    Transcript(Utterance),
    Alert(Alert),
    CallEnded(CallSummary),
}

impl Event {
    pub fn call_id(&self) -> &CallId {
        match self {
            Event::CallStarted(c) => &c.id,
            Event::Transcript(u) => &u.call_id,
            Event::Alert(a) => &a.call_id,
            Event::CallEnded(s) => &s.call_id,
        }
    }
}

/// A record as it goes on the wire: `{"schema_version": 1, ...the record's fields}`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Versioned<T> {
    pub schema_version: u32,
    #[serde(flatten)]
    pub record: T,
}

impl<T: Serialize> Versioned<T> {
    pub fn new(record: T) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            record,
        }
    }
}

/// One JSON line (without its newline) of a record on the wire.
pub fn json_line<T: Serialize>(record: &T) -> String {
    serde_json::to_string(&Versioned::new(record)).expect("records serialise to JSON")
}

/// The JSON Schemas (draft 2020-12) of what goes on the wire, by file name: every event of a
/// live engine (`event.json`), the per-call record of `scan`, `classify` and `score`
/// (`call_summary.json`), and `classify`'s line that could not be scored (`input_error.json`). `docs/schema/` holds them; `tests/schema.rs` keeps them in step.
pub fn json_schemas() -> Vec<(&'static str, serde_json::Value)> {
    let value = |s: schemars::Schema| serde_json::to_value(s).expect("schemas serialise");
    vec![
        ("event.json", value(schemars::schema_for!(Versioned<Event>))),
        (
            "call_summary.json",
            value(schemars::schema_for!(Versioned<CallSummary>)),
        ),
        (
            "input_error.json",
            value(schemars::schema_for!(Versioned<InputError>)),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_ids_that_would_cut_a_log_line_or_a_thread_name_are_refused() {
        let check = |id: &str| CallId::new(id).check();
        assert_eq!(check("3f2a@pbx.example"), Ok(()));
        assert_eq!(check("通话-1"), Ok(()));
        assert_eq!(check("").unwrap_err(), "an empty call id");
        assert_eq!(
            check("nul\0id@x").unwrap_err(),
            "a call id with a control character (U+0000 at byte 3)"
        );
        assert!(check("a\r\nX-Forged: 1").unwrap_err().contains("U+000D"));
        assert!(check(&"L".repeat(257)).unwrap_err().contains("257 bytes"));
        let call = |id: &str| Call {
            id: CallId::new(id),
            parties: vec![Party {
                label: "caller".into(),
                sample_rate: 8000,
            }],
            metadata: BTreeMap::new(),
        };
        assert!(call("a\u{7f}").check().unwrap_err().contains("U+007F"));
        assert_eq!(
            CallId::new("x".repeat(70)).short(),
            format!("{}…", "x".repeat(64))
        );
        assert_eq!(CallId::new("短").short(), "短");
        assert_eq!(CallId::new("nul\0id\n").short(), "nul\\0id\\n");
    }

    #[test]
    fn events_carry_the_version_and_their_kind_and_read_back() {
        let alert = Event::Alert(Alert {
            alert_id: "c1/0/unusual_payment/gift card".into(),
            call_id: "c1".into(),
            evidence: Evidence {
                category: "unusual_payment".into(),
                pattern: "gift card".into(),
                matched_text: "gift cards".into(),
                start_char: 3,
                end_char: 13,
                weight: 0.9,
                context_similarity: None,
                honest_similarity: None,
                spoken: Some(Spoken {
                    party: 0,
                    t_s: 1.5,
                    end_s: 2.0,
                }),
            },
            score: 0.8,
            risk: Risk::High,
            wall_time: "2026-11-30T10:00:00.000Z".into(),
            latency_s: 0.4,
            partial: false,
        });
        let line = json_line(&alert);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["schema_version"], SCHEMA_VERSION);
        assert_eq!(v["event"], "alert");
        assert_eq!(v["party"], 0);
        assert_eq!(v["call_id"], "c1");
        assert!(v.get("context_similarity").is_none());
        let back: Versioned<Event> = serde_json::from_str(&line).unwrap();
        assert_eq!(back.record, alert);
    }

    #[test]
    fn unsure_text_is_marked_and_sure_text_carries_no_mark() {
        let unsure = Segment::heard(0.0, 1.0, " sala markings", -4.6, 0.5, 0.0);
        let sure = Segment::heard(1.0, 2.0, " press one now", -0.4, 0.01, 0.0);
        assert!(unsure.low_confidence && !sure.low_confidence);
        let v = serde_json::to_value(&unsure).unwrap();
        assert_eq!(v["low_confidence"], true);
        assert!(serde_json::to_value(&sure)
            .unwrap()
            .get("low_confidence")
            .is_none());
        let back: Segment = serde_json::from_value(v).unwrap();
        assert!(back.low_confidence);
    }
}
