//! What the people watching see: every call the server holds (live and recently ended), its
//! transcript so far, risk, alerts and the feedback given on it. A [`Sink`] keeps it up to
//! date from the engine's events and passes each event on to the server-sent-event stream.
//!
//! Memory is bounded: a call keeps its last `MAX_LINES` utterances; ended calls beyond
//! `keep_ended` and alerts beyond `MAX_ALERTS` are forgotten, oldest first.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::call::{Alert, Call, CallId, CallSummary, Event, Party, Risk, Utterance};
use crate::sinks::Sink;

const MAX_LINES: usize = 2000;
const MAX_ALERTS: usize = 1000;

/// What a person said about a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    NotScam,
    ConfirmedScam,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feedback {
    pub verdict: Verdict,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// When it was given (RFC 3339, UTC).
    #[serde(default)]
    pub at: String,
}

/// One call as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CallView {
    pub call_id: CallId,
    pub parties: Vec<Party>,
    pub metadata: BTreeMap<String, String>,
    /// When the call opened (RFC 3339, UTC).
    pub started_at: String,
    pub ended: bool,
    /// The riskiest party's, so far.
    pub risk: Risk,
    pub score: f32,
    pub transcript: VecDeque<Utterance>,
    pub alerts: Vec<Alert>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<CallSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feedback: Option<Feedback>,
    /// Per party: its latest risk and score.
    #[serde(skip)]
    party_scores: BTreeMap<usize, (Risk, f32)>,
}

/// A line of `GET /calls`.
#[derive(Debug, Clone, Serialize)]
pub struct CallLine {
    pub call_id: CallId,
    pub parties: Vec<String>,
    pub started_at: String,
    pub ended: bool,
    pub risk: Risk,
    pub score: f32,
    pub alerts: usize,
    pub feedback: Option<Verdict>,
}

#[derive(Default)]
struct State {
    calls: BTreeMap<CallId, CallView>,
    /// Ended calls, oldest first.
    ended: VecDeque<CallId>,
    alerts: VecDeque<Alert>,
}

/// The server's view of the calls; clones share it.
#[derive(Clone)]
pub struct Board {
    state: Arc<RwLock<State>>,
    events: broadcast::Sender<Arc<Event>>,
    keep_ended: usize,
}

fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

impl Board {
    /// `keep_ended`: ended calls kept for the API; `backlog`: events a slow SSE client may fall
    /// behind by before it misses some.
    pub fn new(keep_ended: usize, backlog: usize) -> Self {
        Self {
            state: Arc::default(),
            events: broadcast::channel(backlog.max(16)).0,
            keep_ended,
        }
    }

    /// Every event from now on (an SSE client).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Live calls first (riskiest first), then ended ones (latest first).
    pub fn calls(&self) -> Vec<CallLine> {
        let state = self.read();
        let mut lines: Vec<CallLine> = state
            .calls
            .values()
            .map(|c| CallLine {
                call_id: c.call_id.clone(),
                parties: c.parties.iter().map(|p| p.label.clone()).collect(),
                started_at: c.started_at.clone(),
                ended: c.ended,
                risk: c.risk,
                score: c.score,
                alerts: c.alerts.len(),
                feedback: c.feedback.as_ref().map(|f| f.verdict),
            })
            .collect();
        lines.sort_by(|a, b| {
            a.ended
                .cmp(&b.ended)
                .then(b.score.total_cmp(&a.score))
                .then(b.started_at.cmp(&a.started_at))
        });
        lines
    }

    pub fn call(&self, id: &CallId) -> Option<CallView> {
        self.read().calls.get(id).cloned()
    }

    /// The latest alerts, newest last.
    pub fn alerts(&self) -> Vec<Alert> {
        self.read().alerts.iter().cloned().collect()
    }

    /// Records a person's verdict on a call; false when the call is unknown.
    pub fn feedback(&self, id: &CallId, verdict: Verdict, note: Option<String>) -> bool {
        let mut state = self.write();
        let Some(call) = state.calls.get_mut(id) else {
            return false;
        };
        call.feedback = Some(Feedback {
            verdict,
            note,
            at: now(),
        });
        true
    }

    /// Calls open now.
    pub fn active(&self) -> usize {
        self.read().calls.values().filter(|c| !c.ended).count()
    }

    fn apply(&self, event: &Event) {
        let mut state = self.write();
        match event {
            Event::CallStarted(call) => {
                state.calls.insert(call.id.clone(), view(call));
            }
            Event::Transcript(u) => {
                if let Some(c) = state.calls.get_mut(&u.call_id) {
                    c.party_scores.insert(u.party, (u.risk, u.score));
                    rescore(c);
                    c.transcript.push_back(u.clone());
                    if c.transcript.len() > MAX_LINES {
                        c.transcript.pop_front();
                    }
                }
            }
            Event::Alert(a) => {
                if let Some(c) = state.calls.get_mut(&a.call_id) {
                    if let Some(s) = a.evidence.spoken {
                        let (risk, score) =
                            c.party_scores.entry(s.party).or_insert((a.risk, a.score));
                        if a.score > *score {
                            (*risk, *score) = (a.risk, a.score);
                        }
                    }
                    rescore(c);
                    c.alerts.push(a.clone());
                }
                state.alerts.push_back(a.clone());
                if state.alerts.len() > MAX_ALERTS {
                    state.alerts.pop_front();
                }
            }
            Event::CallEnded(summary) => {
                let id = summary.call_id.clone();
                if let Some(c) = state.calls.get_mut(&id) {
                    c.ended = true;
                    c.risk = summary.risk;
                    c.score = summary.score;
                    c.summary = Some(summary.clone());
                    state.ended.push_back(id);
                }
                while state.ended.len() > self.keep_ended {
                    if let Some(old) = state.ended.pop_front() {
                        state.calls.remove(&old);
                    }
                }
            }
        }
    }
}

fn view(call: &Call) -> CallView {
    CallView {
        call_id: call.id.clone(),
        parties: call.parties.clone(),
        metadata: call.metadata.clone(),
        started_at: now(),
        ended: false,
        risk: Risk::None,
        score: 0.0,
        transcript: VecDeque::new(),
        alerts: Vec::new(),
        summary: None,
        feedback: None,
        party_scores: BTreeMap::new(),
    }
}

/// A call is as risky as its riskiest party.
fn rescore(c: &mut CallView) {
    if let Some(&(risk, score)) = c.party_scores.values().max_by(|a, b| a.1.total_cmp(&b.1)) {
        c.risk = risk;
        c.score = score;
    }
}

impl Sink for Board {
    fn describe(&self) -> String {
        "the server's call board".into()
    }

    fn write(&mut self, event: &Event) -> anyhow::Result<()> {
        self.apply(event);
        // No subscriber is not an error: nobody is watching the stream right now.
        let _ = self.events.send(Arc::new(event.clone()));
        Ok(())
    }
}
