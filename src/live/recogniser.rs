//! The workers that turn utterances into text, evidence and alerts for every call.
//!
//! Finished utterances come first. When none is waiting, a worker re-hears the newest audio
//! of an utterance still being spoken (a "partial"): a phrase that tips a call over the line
//! is then caught while the caller is still talking, instead of after they pause. Partials
//! only ever use idle time, so under load they cost nothing but the one being heard.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::segmenter::Utterance;
use super::work_queue::{Job, Partial, Work, WorkQueue};
use super::{now_rfc3339, CallSummary, LiveAlert, LiveEvent};
use crate::asr::{Segment, TranscribeOptions, Transcriber};
use crate::detect::timeline::Timeline;
use crate::detect::{Classifier, Risk};

/// What the recogniser carries from one utterance of a party to the next.
#[derive(Default)]
struct PartyContext {
    language: Option<String>,
    /// The end of what they said so far, given to Whisper as its prompt.
    recent: String,
}

impl PartyContext {
    const KEEP_CHARS: usize = 200;

    fn remember(&mut self, text: &str) {
        if !self.recent.is_empty() {
            self.recent.push(' ');
        }
        self.recent.push_str(text.trim());
        let n = self.recent.chars().count();
        if n > Self::KEEP_CHARS {
            self.recent = self.recent.chars().skip(n - Self::KEEP_CHARS).collect();
        }
    }

    /// Each utterance is heard in the light of what this party said before, and in the
    /// language first detected for them: a lone utterance loses both.
    fn options(&self, base: &TranscribeOptions) -> TranscribeOptions {
        let mut heard = base.clone();
        if heard.language.is_none() {
            heard.language = self.language.clone();
        }
        if !self.recent.is_empty() {
            heard.initial_prompt = Some(self.recent.clone());
        }
        heard
    }
}

struct PartyState {
    context: PartyContext,
    /// Created with the first words heard (they choose the phrase pack).
    timeline: Option<Timeline<'static>>,
    /// (category, pattern) of the alerts already sent: each piece of evidence is sent once,
    /// whether a partial or the finished utterance found it first.
    sent: HashSet<(String, String)>,
}

/// One call's state; a worker takes it out of the shared map while it holds the call.
#[derive(Default)]
struct CallState {
    parties: HashMap<usize, PartyState>,
    utterances: usize,
}

impl CallState {
    fn party(&mut self, party: usize) -> &mut PartyState {
        self.parties.entry(party).or_insert_with(|| PartyState {
            context: PartyContext::default(),
            timeline: None,
            sent: HashSet::new(),
        })
    }
}

/// Everything the workers share.
pub(super) struct Recogniser {
    pub transcriber: &'static Transcriber,
    pub classifier: &'static Classifier,
    pub options: TranscribeOptions,
    pub dropped_utterances: Arc<AtomicU64>,
    pub queue: Arc<WorkQueue>,
    calls: Mutex<HashMap<String, CallState>>,
}

impl Recogniser {
    pub fn new(
        transcriber: &'static Transcriber,
        classifier: &'static Classifier,
        mut options: TranscribeOptions,
        dropped_utterances: Arc<AtomicU64>,
        queue: Arc<WorkQueue>,
    ) -> Self {
        classifier.restrict_languages(&mut options, transcriber.is_multilingual());
        Self {
            transcriber,
            classifier,
            options,
            dropped_utterances,
            queue,
            calls: Mutex::default(),
        }
    }

    fn calls(&self) -> std::sync::MutexGuard<'_, HashMap<String, CallState>> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One worker: serves work until the queue says stop.
    pub fn work(&self, events: std::sync::mpsc::SyncSender<LiveEvent>) {
        while let Some(work) = self.queue.next() {
            let call_id = match &work {
                Work::Job(Job::Utterance { call_id, .. } | Job::Close { call_id, .. }) => {
                    call_id.clone()
                }
                Work::Partial(p) => p.call_id.clone(),
            };
            let mut call = self.calls().remove(&call_id).unwrap_or_default();
            let mut out = Vec::new();
            let keep = match work {
                Work::Job(Job::Utterance {
                    started, utterance, ..
                }) => {
                    self.utterance(&mut call, &call_id, started, utterance, &mut out);
                    true
                }
                Work::Partial(Partial {
                    started, utterance, ..
                }) => {
                    self.partial(&mut call, &call_id, started, &utterance, &mut out);
                    true
                }
                Work::Job(Job::Close { dropped_audio, .. }) => {
                    out.push(self.summary(call_id.clone(), &call, &dropped_audio));
                    false
                }
            };
            if keep {
                self.calls().insert(call_id.clone(), call);
            }
            // Events leave before the call is released, so a call's events stay in order.
            for e in out {
                let _ = events.send(e);
            }
            self.queue.release(&call_id);
        }
    }

    /// Transcribes with the party's context; `None` when nothing was said or it failed.
    /// A partial gets one greedy pass: its last word is cut anyway, and a fallback's extra
    /// passes would hold up the finished utterances behind it.
    fn hear(
        &self,
        party: &PartyState,
        call_id: &str,
        utterance: &Utterance,
        partial: bool,
    ) -> Option<(String, Option<String>, Segment)> {
        let mut heard = party.context.options(&self.options);
        // Speech runs at 3-5 tokens a second; far more is a hallucination loop.
        let seconds = utterance.samples.len() as f64 / 16_000.0;
        heard.policy.max_tokens = Some(16 + (seconds * 10.0) as usize);
        if partial {
            heard.policy.temperatures.truncate(1);
        }
        let mut t = match self.transcriber.transcribe(&utterance.samples, &heard) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(call = %call_id, "transcription failed: {e:#}");
                return None;
            }
        };
        // On a few seconds of audio Whisper's language guess can contradict the script it then
        // writes (English detected, Han characters out). The script is the better witness:
        // hear the utterance again in that language.
        let written = Classifier::guess_language(&t.text());
        if heard.language.is_none()
            && self.transcriber.is_multilingual()
            && t.language.as_deref().is_some_and(|l| l != written)
            && self.classifier.pack(written).is_some()
        {
            heard.language = Some(written.to_owned());
            match self.transcriber.transcribe(&utterance.samples, &heard) {
                Ok(again) => t = again,
                Err(e) => tracing::warn!(call = %call_id, "second hearing failed: {e:#}"),
            }
        }
        let text = t.text();
        if text.trim().is_empty() {
            return None;
        }
        let segment = Segment {
            start_s: utterance.start_s,
            end_s: utterance.end_s(),
            text: text.clone(),
            avg_logprob: t.segments.first().map_or(0.0, |s| s.avg_logprob),
            no_speech_prob: t.segments.first().map_or(0.0, |s| s.no_speech_prob),
            temperature: 0.0,
        };
        Some((text, t.language, segment))
    }

    /// A party's timeline, scored with the pack their words choose.
    fn fresh_timeline(&self, language: Option<&str>, text: &str) -> Timeline<'static> {
        Timeline::new(
            self.classifier,
            self.classifier.pack_for_transcript(language, text),
        )
    }

    fn utterance(
        &self,
        call: &mut CallState,
        call_id: &str,
        started: Instant,
        utterance: Utterance,
        out: &mut Vec<LiveEvent>,
    ) {
        call.utterances += 1;
        let party = call.party(utterance.party);
        let Some((text, language, segment)) = self.hear(party, call_id, &utterance, false) else {
            return;
        };
        // Lock the party's language only when the words agree with it: a first utterance
        // detected as English but written in Han characters is a misdetection, and locking it
        // would make every later utterance garbage.
        let agrees = language
            .as_deref()
            .is_some_and(|l| l == Classifier::guess_language(&text));
        if party.context.language.is_none() && self.transcriber.is_multilingual() && agrees {
            party.context.language = language.clone();
        }
        party.context.remember(&text);
        let timeline = party
            .timeline
            .get_or_insert_with(|| self.fresh_timeline(language.as_deref(), &text));
        timeline.push(segment);
        out.push(LiveEvent::Transcript {
            call_id: call_id.to_owned(),
            party: utterance.party,
            start_s: utterance.start_s,
            end_s: utterance.end_s(),
            text,
            language: Some(timeline.language().to_owned()),
            risk: timeline.verdict.risk,
            score: timeline.verdict.score,
        });
        alerts(
            &mut party.sent,
            call_id,
            utterance.party,
            started,
            timeline,
            false,
            out,
        );
    }

    /// Hears an utterance still being spoken and tries its words on a copy of the party's
    /// timeline: new evidence that flags the call is alerted now; the text itself is not kept
    /// (the finished utterance replaces it).
    fn partial(
        &self,
        call: &mut CallState,
        call_id: &str,
        started: Instant,
        utterance: &Utterance,
        out: &mut Vec<LiveEvent>,
    ) {
        let party = call.party(utterance.party);
        let Some((text, language, segment)) = self.hear(party, call_id, utterance, true) else {
            return;
        };
        // A partial's few words do not choose the party's phrase pack: the first finished
        // utterance does.
        let mut trial = match &party.timeline {
            Some(t) => t.clone(),
            None => self.fresh_timeline(language.as_deref(), &text),
        };
        trial.push(segment);
        alerts(
            &mut party.sent,
            call_id,
            utterance.party,
            started,
            &trial,
            true,
            out,
        );
    }

    fn summary(&self, call_id: String, call: &CallState, dropped_audio: &AtomicU64) -> LiveEvent {
        let timelines = || call.parties.values().filter_map(|p| p.timeline.as_ref());
        let best = timelines().max_by(|a, b| a.verdict.score.total_cmp(&b.verdict.score));
        LiveEvent::CallEnded(CallSummary {
            risk: best.map_or(Risk::None, |t| t.verdict.risk),
            score: best.map_or(0.0, |t| t.verdict.score),
            first_alert_s: timelines().filter_map(|t| t.first_alert_s).reduce(f64::min),
            alerts: call.parties.values().map(|p| p.sent.len()).sum(),
            utterances: call.utterances,
            dropped_audio_s: dropped_audio.load(Ordering::Relaxed) as f64 / 16_000.0,
            dropped_utterances: self.dropped_utterances.load(Ordering::Relaxed),
            call_id,
        })
    }
}

/// Once the party's call is flagged, every piece of its evidence not yet sent, gathered before
/// the call crossed the line or since, goes out once.
fn alerts(
    sent: &mut HashSet<(String, String)>,
    call_id: &str,
    party_index: usize,
    started: Instant,
    timeline: &Timeline<'static>,
    partial: bool,
    out: &mut Vec<LiveEvent>,
) {
    let verdict = &timeline.verdict;
    if !verdict.risk.is_flagged() {
        return;
    }
    for a in &timeline.alerts {
        if !sent.insert((a.category.clone(), a.pattern.clone())) {
            continue;
        }
        let elapsed = started.elapsed().as_secs_f64();
        out.push(LiveEvent::Alert(LiveAlert {
            alert_id: format!("{call_id}/{party_index}/{}/{}", a.category, a.pattern),
            call_id: call_id.to_owned(),
            party: party_index,
            wall_time: now_rfc3339(),
            latency_s: ((elapsed - a.end_s) * 1000.0).round() / 1000.0,
            t_s: a.t_s,
            category: a.category.clone(),
            pattern: a.pattern.clone(),
            matched_text: a.matched_text.clone(),
            score: verdict.score,
            risk: verdict.risk,
            partial,
        }));
    }
}
