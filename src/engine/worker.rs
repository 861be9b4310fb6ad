//! The workers: each takes work from the scheduler, has the recogniser hear it, scores the
//! words with the detector, and sends the events to the fan-out.
//!
//! Finished utterances come first. When none is waiting, a worker re-hears the newest audio
//! of an utterance still being spoken (a "partial"): a phrase that tips a call over the line
//! is then caught while the caller is still talking, instead of after they pause. Partials
//! only ever use idle time, so under load they cost nothing but the one being heard.
//!
//! Utterances are cut at 6 s, often inside a phrase. When a party talks on across cuts, the
//! worker also re-hears their last utterances joined into one recording (a "review", up to
//! `review_max_s`), in idle time and before the call's close: its words replace those of the
//! pieces in the party's verdict, so a phrase the cuts split can still count, as it does when
//! `scan` hears the whole file. This is the second pass of two-pass streaming recognition
//! (a fast first pass for latency, a later one over more audio for accuracy; Sainath et al.,
//! "Two-Pass End-to-End Speech Recognition", Interspeech 2019), done here by decoding the
//! joined audio again rather than rescoring the first pass's hypotheses.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use super::fanout::Fanout;
use super::recogniser::{HearRequest, Heard, Recogniser};
use super::scheduler::{self, Job, Review, Scheduler, Work};
use super::{CallInfo, EngineStats, LiveCalls};
use crate::call::{Alert, CallId, Event, Segment, StreamStats, Utterance};
use crate::detect::classifier::CALL_MODEL;
use crate::detect::timeline::Timeline;
use crate::detect::{summarise, Classifier, PartyOutcome, Verdict};

/// What is kept of one party between its utterances.
#[derive(Default)]
struct PartyState {
    /// The language settled for this party: detected, and written in, by two finished
    /// utterances in a row.
    language: Option<String>,
    /// The language the last finished utterance was detected in and written in, while none is
    /// settled: the next must agree before it is kept.
    language_run: Option<String>,
    /// The last language heard, settled or not (for the summary).
    heard_language: Option<String>,
    /// The end of what they said so far, given to the recogniser as context.
    recent: String,
    /// Created with the first words heard (they choose the phrase pack).
    timeline: Option<Timeline>,
    /// (category, pattern) of the alerts already sent: each piece of evidence is sent once,
    /// whether a partial or the finished utterance found it first.
    sent: HashSet<(String, String)>,
    /// The end of the last utterance, when it was cut inside speech: the next one is heard
    /// with it before it.
    cut_tail: Option<CutTail>,
    /// The party's speech since their last long pause, for reviews.
    chain: Option<Chain>,
    /// Where the audio of the first of the party's latest run of finished readings whose
    /// flag waits to be confirmed ended (seconds of audio time): see [`held`].
    held_at: Option<f64>,
}

/// Whether a finished reading whose audio ends at `end_s`, flagged with a flag that `waits`
/// (see [`waits`]), is held, updating where the party's run of such readings started
/// (`held_at`, seconds of audio time).
///
/// A flag that waits is alerted once a second finished reading that reaches later audio (the
/// next utterance, or a review that heard more speech) waits too, or is flagged outright, or
/// when the call closes flagged ([`closing_alerts`]). Partials, a few words more of the same
/// reading, never confirm one. A reading that does not wait ends the run; one that reaches no
/// later audio than the run's first (a review of the same speech) neither confirms nor ends
/// it. The models read whole calls, and on what a live call has said so far they can swing
/// with one utterance: on a Mandarin set of 20 honest calls through the 8 kHz channel
/// (unseen_ah, base, 2026-12-06), 3 anti-fraud and notice calls were lifted 18-24 s in, having
/// only introduced themselves, and dropped at the very next utterance; of the 14 of 20 scams
/// first flagged by a lift, 13 were still flagged at the next one (docs/measured.md, "Live with the
/// Mandarin call model").
fn held(waits: bool, end_s: f64, held_at: &mut Option<f64>) -> bool {
    if !waits {
        *held_at = None;
        return false;
    }
    match *held_at {
        Some(first) => end_s <= first + 1e-3,
        None => {
            *held_at = Some(end_s);
            true
        }
    }
}

/// Whether a flagged verdict of a call heard so far waits for a second reading ([`held`]):
/// flagged by the call model's lift alone, or, where the call model runs (on, with the context
/// check's encoders), by keywords the pack asks to confirm ([`weak_flag_waits`]). Anything
/// else flagged is alerted at once.
fn waits(classifier: &Classifier, language: &str, verdict: &Verdict) -> bool {
    if !verdict.risk.is_flagged() {
        return false;
    }
    if rests_on_the_lift(verdict) {
        return true;
    }
    let model_runs = classifier.call_model && classifier.context_check.is_some();
    model_runs
        && classifier
            .pack(language)
            .is_some_and(|pack| weak_flag_waits(pack, verdict))
}

/// Whether the pack asks a keyword flag to be confirmed: below its `high` level, while the
/// model reads the call below its `live_confirm_below`
/// ([`crate::detect::pack::CallModelSettings`]; a reading the model did not make, on too few
/// windows, counts as below).
fn weak_flag_waits(pack: &crate::detect::PhrasePack, verdict: &Verdict) -> bool {
    let below = pack
        .context
        .as_ref()
        .and_then(|c| c.call_model.as_ref())
        .and_then(|m| m.live_confirm_below);
    below.is_some_and(|below| {
        verdict.score < pack.levels.high && verdict.call_model.is_none_or(|p| p < below)
    })
}

/// Whether a verdict of a call heard so far is kept off the live alerts: flagged by the call
/// model's lift on less than the pack asks of a live reading
/// ([`crate::detect::pack::CallModelSettings::lifts_live`]: the model alone, on fewer windows
/// than `live_alone_min_windows`). Such a reading counts as not flagged ([`Workers::holds`]);
/// the call's close alerts what the summary flags ([`closing_alerts`]).
fn live_withheld(classifier: &Classifier, language: &str, verdict: &Verdict) -> bool {
    let Some(lift) = verdict.lift.filter(|_| rests_on_the_lift(verdict)) else {
        return false;
    };
    classifier
        .pack(language)
        .and_then(|pack| pack.context.as_ref())
        .and_then(|c| c.call_model.as_ref())
        .is_some_and(|m| !m.lifts_live(&lift))
}

/// A verdict flagged by the call model's lift, not by the keywords (the lift is the only way a
/// `call_model` piece of evidence enters a verdict).
fn rests_on_the_lift(verdict: &Verdict) -> bool {
    verdict.risk.is_flagged() && verdict.evidence.iter().any(|e| e.category == CALL_MODEL)
}

/// Utterances this close together (seconds of silence between them) are joined for a review;
/// the silence between them is heard as silence.
pub const CHAIN_GAP_S: f64 = 1.0;

/// A review takes idle time once this much speech (seconds) has joined the chain since the
/// last one (every second cut at 6 s); later speech waits for the next, or for the call's
/// close. Offered after every utterance, reviews raised tiny.en's transcript lag p50 at 4
/// calls from 1.2 to 1.5-1.8 s (`bench live --reviews`).
pub const REVIEW_EVERY_S: f64 = 10.0;

/// A party's recent utterances with no long pause between them, joined.
struct Chain {
    /// Audio time (seconds) of `samples[0]`.
    start_s: f64,
    /// 16 kHz samples, silence between utterances as zeros.
    samples: Vec<f32>,
    /// Where each utterance starts in `samples` (sample index), oldest first.
    starts: Vec<usize>,
    /// The party's recent words before `start_s`: the review's prompt.
    prompt: String,
    /// Utterances were dropped from the front: the first may start inside speech.
    trimmed: bool,
    /// Audio time up to which a due review was offered.
    reviewed_s: f64,
}

impl Chain {
    fn end_s(&self) -> f64 {
        self.start_s + self.samples.len() as f64 / 16_000.0
    }

    /// Adds an utterance, or starts over when it follows a long pause; then drops the oldest
    /// utterances until at most `max_s` seconds are left (the newest always stays).
    fn extend(
        chain: Option<Chain>,
        audio: &crate::audio::utterance::UtteranceAudio,
        recent: &str,
        max_s: f64,
    ) -> Chain {
        let mut chain = match chain {
            // The tolerance: an utterance that starts at a cut has the same start as the
            // chain's end, computed from other sums of samples (seconds, rounded).
            Some(c) if (-1e-3..=CHAIN_GAP_S).contains(&(audio.start_s - c.end_s())) => c,
            _ => Chain {
                start_s: audio.start_s,
                samples: Vec::new(),
                starts: Vec::new(),
                prompt: recent.to_owned(),
                trimmed: false,
                reviewed_s: audio.start_s,
            },
        };
        let gap = ((audio.start_s - chain.end_s()) * 16_000.0)
            .round()
            .max(0.0) as usize;
        chain.samples.resize(chain.samples.len() + gap, 0.0);
        chain.starts.push(chain.samples.len());
        chain.samples.extend_from_slice(&audio.samples);
        let max = (max_s * 16_000.0) as usize;
        while chain.starts.len() > 1 && chain.samples.len() > max {
            // The dropped utterance's words become part of what came before (the prompt is not
            // updated: it only needs to be words said before the review's audio).
            let cut = chain.starts[1];
            chain.samples.drain(..cut);
            chain.starts.remove(0);
            for s in &mut chain.starts {
                *s -= cut;
            }
            chain.start_s += cut as f64 / 16_000.0;
            chain.trimmed = true;
        }
        chain
    }

    /// The review of this chain, once it holds more than one utterance; due when enough new
    /// speech came since the last due one.
    fn review(&mut self, speech: &scheduler::Speech) -> Option<Review> {
        if self.starts.len() < 2 {
            return None;
        }
        let due = self.end_s() - self.reviewed_s >= REVIEW_EVERY_S;
        if due {
            self.reviewed_s = self.end_s();
        }
        Some(Review {
            speech: scheduler::Speech {
                info: speech.info.clone(),
                party: speech.party,
                audio: crate::audio::utterance::UtteranceAudio {
                    start_s: self.start_s,
                    samples: self.samples.clone(),
                    voiced: speech.audio.voiced,
                    cut_in_speech: false,
                },
            },
            prompt: self.prompt.clone(),
            // A review that starts where earlier speech was dropped may start mid-phrase: its
            // first utterance is context, as the audio before a cut is (a 14 s limit, no
            // context, lost the bank-code sample's evidence that the pieces had found).
            context_s: if self.trimmed {
                self.starts[1] as f64 / 16_000.0
            } else {
                0.0
            },
            due,
        })
    }
}

/// Seconds of the previous utterance heard again before the next one when a cut at the
/// maximum length fell inside speech. A phrase split by the cut ("Do not | tell anyone",
/// 验证 | 码告诉我) is then heard whole, with the words before it; the request stays within
/// the live encoder window (6 s + 3 s < 15 s), so it costs decoding only.
pub const CUT_CONTEXT_S: f64 = 3.0;

/// The end of an utterance that was cut inside speech.
struct CutTail {
    /// Audio time (seconds) where it ended: the next utterance must start here.
    end_s: f64,
    /// Its last [`CUT_CONTEXT_S`] seconds at 16 kHz.
    samples: Vec<f32>,
    /// The party's recent words before it: the prompt for hearing its end again with what
    /// follows (the prompt must not already hold the words about to be heard again).
    prompt: String,
}

impl CutTail {
    /// Whether `audio` is what followed this cut, with nothing lost between them.
    fn continues_into(&self, audio: &crate::audio::utterance::UtteranceAudio) -> bool {
        (audio.start_s - self.end_s).abs() < 1e-3
    }
}

impl PartyState {
    const KEEP_CHARS: usize = 200;

    /// Alerts sent that the party's final verdict does not bear out.
    fn withdrawn(&self) -> usize {
        let Some(t) = self
            .timeline
            .as_ref()
            .filter(|t| t.verdict.risk.is_flagged())
        else {
            return self.sent.len();
        };
        self.sent
            .iter()
            .filter(|(category, pattern)| {
                !t.verdict
                    .evidence
                    .iter()
                    .any(|e| &e.category == category && &e.pattern == pattern)
            })
            .count()
    }

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
}

/// One call's state; a worker takes it out of the shared map while it holds the call.
#[derive(Default)]
pub(super) struct CallState {
    parties: HashMap<usize, PartyState>,
    utterances: usize,
}

/// Everything the workers share.
pub(super) struct Workers {
    pub recogniser: Arc<dyn Recogniser>,
    pub classifier: Arc<Classifier>,
    pub scheduler: Arc<Scheduler>,
    pub fanout: Arc<Fanout>,
    pub live: Arc<LiveCalls>,
    pub stats: Arc<EngineStats>,
    /// Each call's state, taken out by the worker that holds the call.
    pub calls: Mutex<HashMap<CallId, CallState>>,
    /// Calls heard together in one recogniser call.
    pub batch: usize,
    /// The longest review (seconds of audio); `None`: no reviews.
    pub review_max_s: Option<f64>,
    /// Utterances join the recogniser's running batch (`EngineConfig::joint_decoding`).
    pub joint_decoding: bool,
}

impl Workers {
    fn calls(&self) -> MutexGuard<'_, HashMap<CallId, CallState>> {
        super::lock(&self.calls)
    }

    /// One worker: serves work until the scheduler says stop, `batch` calls at a time.
    pub fn work(&self) {
        while let Some(batch) = self.scheduler.next_batch(self.batch) {
            let mut items: Vec<(Work, CallState)> = batch
                .into_iter()
                .map(|w| {
                    let call = self.calls().remove(w.call_id()).unwrap_or_default();
                    (w, call)
                })
                .collect();
            let heard = self.hear_all(&mut items);
            if items.len() == 1 {
                for ((work, call), heard) in items.into_iter().zip(heard) {
                    self.finish(work, call, heard);
                }
            } else {
                // The calls of a batch are different calls: scoring them on all cores keeps a
                // batch of hundreds from waiting on one thread.
                use rayon::prelude::*;
                items
                    .into_par_iter()
                    .zip(heard)
                    .for_each(|((work, call), heard)| self.finish(work, call, heard));
            }
        }
    }

    /// Hears the utterances and partials of a batch together (closes need no hearing). If
    /// the batch as a whole fails or panics, each is heard alone, so one bad utterance
    /// cannot cost the others their words.
    fn hear_all(&self, items: &mut [(Work, CallState)]) -> Vec<Option<Heard>> {
        let speech: Vec<(usize, bool)> = items
            .iter()
            .enumerate()
            .filter_map(|(i, (w, _))| match w {
                Work::Job(Job::Utterance(_)) | Work::Review(_) => Some((i, false)),
                Work::Partial(_) => Some((i, true)),
                Work::Job(Job::Close(_)) => None,
            })
            .collect();
        let mut out: Vec<Option<Heard>> = vec![None; items.len()];
        if speech.is_empty() {
            return out;
        }
        let empty = PartyState::default();
        let spoken = |i: usize| -> (&scheduler::Speech, &PartyState) {
            let (work, call) = &items[i];
            let sp = match work {
                Work::Job(Job::Utterance(sp)) | Work::Partial(sp) => sp,
                Work::Review(r) => &r.speech,
                Work::Job(Job::Close(_)) => unreachable!("closes are not heard"),
            };
            (sp, call.parties.get(&sp.party).unwrap_or(&empty))
        };
        let is_review = |i: usize| matches!(items[i].0, Work::Review(_));
        // A finished utterance that follows a cut inside speech is heard after the end of the
        // audio before the cut. Partials are heard alone: with the 3 s more to decode, tiny.en's
        // alert latency at one call rose from p50 1.05 / p95 6.14 s to 1.88 / 8.14 s (the four
        // English scam samples at real speed), and the finished utterance still hears it whole.
        let joined: Vec<Option<(Vec<f32>, &CutTail)>> = speech
            .iter()
            .map(|&(i, partial)| {
                if partial || is_review(i) {
                    return None;
                }
                let (sp, party) = spoken(i);
                let tail = party.cut_tail.as_ref()?;
                tail.continues_into(&sp.audio)
                    .then(|| ([tail.samples.as_slice(), &sp.audio.samples].concat(), tail))
            })
            .collect();
        let requests: Vec<HearRequest<'_>> = speech
            .iter()
            .zip(&joined)
            .map(|(&(i, partial), joined)| {
                let (sp, party) = spoken(i);
                let (samples, context_s, prompt) = match joined {
                    Some((j, tail)) => (
                        j.as_slice(),
                        tail.samples.len() as f64 / 16_000.0,
                        tail.prompt.as_str(),
                    ),
                    None => match &items[i].0 {
                        Work::Review(r) => {
                            (sp.audio.samples.as_slice(), r.context_s, r.prompt.as_str())
                        }
                        _ => (sp.audio.samples.as_slice(), 0.0, party.recent.as_str()),
                    },
                };
                HearRequest {
                    call_id: &sp.info.call.id,
                    party: sp.party,
                    samples,
                    context_s,
                    speech: sp.audio.voiced,
                    partial,
                    review: is_review(i),
                    prompt: (!prompt.is_empty()).then_some(prompt),
                    language: party.language.as_deref(),
                    join_running: self.joint_decoding,
                }
            })
            .collect();
        let started = std::time::Instant::now();
        let together = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.recogniser.hear(&requests)
        }));
        let results = match together {
            Ok(r) if r.len() == requests.len() => r,
            _ if requests.len() > 1 => {
                tracing::error!(
                    batch = requests.len(),
                    "hearing a batch failed; hearing each utterance alone"
                );
                requests
                    .iter()
                    .map(|r| {
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            self.recogniser.hear(std::slice::from_ref(r)).pop()
                        }))
                        .ok()
                        .flatten()
                        .unwrap_or_else(|| Err(anyhow::anyhow!("the recogniser failed")))
                    })
                    .collect()
            }
            Ok(_) => vec![Err(anyhow::anyhow!("the recogniser returned nothing"))],
            Err(_) => vec![Err(anyhow::anyhow!("the recogniser panicked"))],
        };
        let stats = &self.stats;
        EngineStats::add(&stats.recognition_us, started.elapsed().as_micros() as u64);
        for ((&(i, partial), request), result) in speech.iter().zip(&requests).zip(results) {
            if partial {
                EngineStats::add(&stats.partials_heard, 1);
            } else if is_review(i) {
                EngineStats::add(&stats.reviews_heard, 1);
            } else {
                EngineStats::add(&stats.utterances_heard, 1);
                // The utterance's own audio, not the context heard again before it.
                let own = spoken(i).0.audio.samples.len();
                EngineStats::add(&stats.utterance_audio, own as u64);
            }
            out[i] = match result {
                Ok(heard) => heard.filter(|h| !h.text.trim().is_empty()),
                Err(e) => {
                    tracing::error!(call = %request.call_id, "recognition failed: {e:#}");
                    None
                }
            };
        }
        out
    }

    /// Scores what was heard for one call, sends its events and releases the call.
    fn finish(&self, work: Work, call: CallState, heard: Option<Heard>) {
        let call_id = work.call_id().clone();
        let closing = match &work {
            Work::Job(Job::Close(info)) => Some(info.clone()),
            _ => None,
        };
        let mut call = call;
        // A panic while scoring one call (a detector's bug) must not take the others down:
        // the call loses what it had so far, and still ends with its summary.
        let scored = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut out = Vec::new();
            match work {
                Work::Job(Job::Utterance(sp)) => self.utterance(&mut call, sp, heard, &mut out),
                Work::Partial(sp) => self.partial(&mut call, sp, heard, &mut out),
                Work::Review(r) => self.review(&mut call, r, heard, &mut out),
                Work::Job(Job::Close(info)) => {
                    closing_alerts(&info, &mut call, &mut out);
                    out.push(summary(&info, &call));
                }
            }
            (call, out)
        }));
        let out = match scored {
            Ok((call, out)) => {
                if closing.is_none() {
                    self.calls().insert(call_id.clone(), call);
                }
                out
            }
            Err(_) => {
                tracing::error!(call = %call_id, "hearing this call panicked; what it had so far is lost");
                match &closing {
                    Some(info) => vec![summary(info, &CallState::default())],
                    None => Vec::new(),
                }
            }
        };
        // Events leave before the call is released, so a call's events stay in order.
        for e in out {
            let counter = match &e {
                Event::Alert(a) if a.risk == crate::call::Risk::High => {
                    Some(&self.stats.alerts_high)
                }
                Event::Alert(_) => Some(&self.stats.alerts_suspected),
                Event::CallEnded(_) => Some(&self.stats.calls_ended),
                _ => None,
            };
            if let Some(c) = counter {
                EngineStats::add(c, 1);
            }
            self.fanout.send(e);
        }
        if closing.is_some() {
            self.live.finished(&call_id);
        }
        self.scheduler.release(&call_id);
    }

    /// A party's timeline, scored with the pack their words choose.
    fn fresh_timeline(&self, party: usize, language: Option<&str>, text: &str) -> Timeline {
        let pack = self.classifier.pack_for_transcript(language, text);
        Timeline::new(&self.classifier, pack, party)
    }

    /// Whether the timeline's verdict after a finished reading ending at `end_s` is held
    /// ([`live_withheld`], or [`waits`] and [`held`]), updating the party's run of held
    /// readings.
    fn holds(&self, timeline: &Timeline, end_s: f64, held_at: &mut Option<f64>) -> bool {
        let (language, verdict) = (timeline.language(), &timeline.verdict);
        if live_withheld(&self.classifier, language, verdict) {
            // Not flagged, live: a run of waiting readings ends here.
            *held_at = None;
            return true;
        }
        held(waits(&self.classifier, language, verdict), end_s, held_at)
    }

    fn utterance(
        &self,
        call: &mut CallState,
        work: scheduler::Speech,
        heard: Option<Heard>,
        out: &mut Vec<Event>,
    ) {
        call.utterances += 1;
        let party = call.parties.entry(work.party).or_default();
        // Kept whether or not anything was heard: the audio is context all the same.
        party.cut_tail = work.audio.cut_in_speech.then(|| {
            let samples = &work.audio.samples;
            let keep = ((CUT_CONTEXT_S * 16_000.0) as usize).min(samples.len());
            CutTail {
                end_s: work.audio.end_s(),
                samples: samples[samples.len() - keep..].to_vec(),
                prompt: party.recent.clone(),
            }
        });
        if let Some(max_s) = self.review_max_s {
            let mut chain = Chain::extend(party.chain.take(), &work.audio, &party.recent, max_s);
            if let Some(review) = chain.review(&work) {
                self.scheduler.offer_review(review);
            }
            party.chain = Some(chain);
        }
        let Some(heard) = heard else {
            return;
        };
        let unsettled = party.language.is_none();
        if unsettled {
            // One utterance is not enough to settle on: Whisper hears a breath or a click as
            // "you" in English, and a party held to English from then on is heard in English
            // words, whatever they say (two Mandarin calls of unseen_ar, live, 2026-12-07).
            if heard.settled && heard.language.is_some() && party.language_run == heard.language {
                party.language = heard.language.clone();
            } else {
                party.language_run = heard.language.clone().filter(|_| heard.settled);
            }
        }
        party.heard_language = heard.language.clone().or(party.heard_language.take());
        party.remember(&heard.text);
        if unsettled || party.timeline.is_none() {
            // The first words choose the phrase pack; until the language settles, the party's
            // recent words choose it again, and what they said so far is scored again with it.
            let language = party.language.as_deref().or(heard.language.as_deref());
            let pack = self.classifier.pack_for_transcript(language, &party.recent);
            match party.timeline.as_mut() {
                None => party.timeline = Some(Timeline::new(&self.classifier, pack, work.party)),
                Some(t) if t.language() != pack.language => {
                    *t = Timeline::of_segments(&self.classifier, pack, work.party, t.segments())
                }
                Some(_) => {}
            }
        }
        let timeline = party.timeline.as_mut().expect("made above");
        timeline.push(&self.classifier, segment(&work, &heard));
        let hold = self.holds(timeline, work.audio.end_s(), &mut party.held_at);
        let call_id = &work.info.call.id;
        out.push(Event::Transcript(Utterance {
            call_id: call_id.clone(),
            party: work.party,
            start_s: work.audio.start_s - heard.reaches_back_s,
            end_s: work.audio.end_s(),
            text: heard.text,
            language: Some(timeline.language().to_owned()),
            // A flag waiting for its second reading is not shown as flagged either (the
            // dashboard and the terminal take a call's risk from these lines).
            risk: if hold {
                crate::call::Risk::None
            } else {
                timeline.verdict.risk
            },
            score: timeline.verdict.score,
        }));
        if !hold {
            alerts(
                &mut party.sent,
                &work.info,
                work.party,
                timeline,
                false,
                out,
            );
        }
    }

    /// Hears an utterance still being spoken and tries its words on a copy of the party's
    /// timeline: new evidence that flags the call is alerted now; the text itself is not kept
    /// (the finished utterance replaces it).
    fn partial(
        &self,
        call: &mut CallState,
        work: scheduler::Speech,
        heard: Option<Heard>,
        out: &mut Vec<Event>,
    ) {
        let party = call.parties.entry(work.party).or_default();
        let Some(heard) = heard else {
            return;
        };
        // A partial's few words do not choose the party's phrase pack: the first finished
        // utterance does.
        let mut trial = match &party.timeline {
            Some(t) => t.clone(),
            None => self.fresh_timeline(work.party, heard.language.as_deref(), &heard.text),
        };
        trial.push(&self.classifier, segment(&work, &heard));
        // A flag that waits is alerted by finished readings only (see [`held`]).
        if !waits(&self.classifier, trial.language(), &trial.verdict) {
            alerts(&mut party.sent, &work.info, work.party, &trial, true, out);
        }
    }

    /// A party's recent utterances heard again as one: its words replace theirs in the
    /// party's timeline (the verdict the call ends with), and new evidence that flags the
    /// party is alerted. No transcript event: the utterances' own lines stand.
    fn review(
        &self,
        call: &mut CallState,
        review: Review,
        heard: Option<Heard>,
        out: &mut Vec<Event>,
    ) {
        let (work, context_s) = (review.speech, review.context_s);
        let Some(heard) = heard else {
            return;
        };
        let party = call.parties.entry(work.party).or_default();
        match party.timeline.as_mut() {
            None => {
                // Nothing of this party was heard the first time: their words choose the pack.
                let mut timeline =
                    self.fresh_timeline(work.party, heard.language.as_deref(), &heard.text);
                timeline.push(&self.classifier, segment(&work, &heard));
                party.timeline = Some(timeline);
            }
            Some(timeline) => {
                let at = work.audio.start_s;
                let segments = if heard.segments.is_empty() {
                    vec![segment(&work, &heard)]
                } else {
                    heard
                        .segments
                        .iter()
                        .map(|s| Segment {
                            start_s: at + s.start_s,
                            end_s: (at + s.end_s).min(work.audio.end_s()),
                            ..s.clone()
                        })
                        .collect()
                };
                // The words heard in the context stay as first heard. A sentence that runs on
                // across its end is kept whole, so a few of its words may repeat; none are lost.
                let from_s = at + context_s;
                tracing::debug!(
                    call = %work.info.call.id,
                    party = work.party,
                    from_s,
                    to_s = work.audio.end_s(),
                    text = %heard.text,
                    "review heard"
                );
                timeline.revise(&self.classifier, from_s, work.audio.end_s(), segments);
            }
        }
        if let Some(timeline) = &party.timeline {
            if !self.holds(timeline, work.audio.end_s(), &mut party.held_at) {
                alerts(
                    &mut party.sent,
                    &work.info,
                    work.party,
                    timeline,
                    false,
                    out,
                );
            }
        }
    }
}

fn segment(work: &scheduler::Speech, heard: &Heard) -> Segment {
    Segment::heard(
        work.audio.start_s - heard.reaches_back_s,
        work.audio.end_s(),
        heard.text.clone(),
        heard.avg_logprob,
        heard.no_speech_prob,
        0.0,
    )
}

fn summary(info: &CallInfo, call: &CallState) -> Event {
    let parties = (0..info.call.parties.len())
        .map(|i| {
            let state = call.parties.get(&i);
            PartyOutcome {
                party: i,
                label: info.call.parties[i].label.clone(),
                heard_language: state.and_then(|p| p.heard_language.clone()),
                timeline: state.and_then(|p| p.timeline.as_ref()),
                transcript: Vec::new(),
                // Live calls hear utterance by utterance; coverage is judged on whole files.
                uncovered_language: None,
            }
        })
        .collect();
    let mut summary = summarise(
        info.call.id.clone(),
        info.call.metadata.clone(),
        parties,
        None,
    );
    summary.stream = Some(StreamStats {
        utterances: call.utterances,
        alerts: call.parties.values().map(|p| p.sent.len()).sum(),
        alerts_withdrawn: call.parties.values().map(PartyState::withdrawn).sum(),
        dropped_audio_s: info.dropped_audio.load(Ordering::Relaxed) as f64 / 16_000.0,
        missing_audio_s: info.missing_audio.load(Ordering::Relaxed) as f64 / 16_000.0,
        dropped_utterances: info.dropped_utterances.load(Ordering::Relaxed),
    });
    Event::CallEnded(summary)
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// At the call's close, the evidence of each party that ends flagged and was not alerted yet:
/// a flag still waiting for its second reading ([`held`]) when the call ended. Its last
/// reading heard the whole call, which is what the models read best and what the summary (and
/// `scan`) flag, so there is no later reading to wait for. Without this, a call could end
/// flagged with no alert sent: on a fresh Mandarin set heard live (unseen_ai, base, 8 kHz,
/// 2026-12-07), one scam of the 16 whose summaries were flagged.
fn closing_alerts(info: &CallInfo, call: &mut CallState, out: &mut Vec<Event>) {
    let mut parties: Vec<_> = call.parties.iter_mut().collect();
    parties.sort_unstable_by_key(|(party, _)| **party);
    for (&party, state) in parties {
        if let Some(timeline) = &state.timeline {
            alerts(&mut state.sent, info, party, timeline, false, out);
        }
    }
}

/// Once the party is flagged, every piece of its evidence not yet sent, gathered before the
/// party crossed the line or since, goes out once.
fn alerts(
    sent: &mut HashSet<(String, String)>,
    info: &CallInfo,
    party: usize,
    timeline: &Timeline,
    partial: bool,
    out: &mut Vec<Event>,
) {
    let verdict = &timeline.verdict;
    if !verdict.risk.is_flagged() {
        return;
    }
    let call_id = &info.call.id;
    // A lift raised earlier (held, then dropped) is not sent with a later keyword flag: it
    // goes out only while the verdict rests on it.
    let lifted = rests_on_the_lift(verdict);
    for raised in &timeline.raised {
        let e = &raised.evidence;
        if e.category == CALL_MODEL && !lifted {
            continue;
        }
        if !sent.insert((e.category.clone(), e.pattern.clone())) {
            continue;
        }
        let end_s = e.spoken.map_or(0.0, |s| s.end_s);
        // Wall time for a call heard as it happens; audio time for one fed faster than real
        // time (a file without --realtime), where the wall clock runs behind the audio and
        // would give a negative latency. Both count a queue's backlog.
        let wall = info.started.elapsed().as_secs_f64() - end_s;
        let audio = info.heard_until_s(party) - end_s;
        out.push(Event::Alert(Alert {
            alert_id: format!("{call_id}/{party}/{}/{}", e.category, e.pattern),
            call_id: call_id.clone(),
            evidence: e.clone(),
            score: verdict.score,
            risk: verdict.risk,
            wall_time: now_rfc3339(),
            latency_s: (wall.max(audio) * 1000.0).round() / 1000.0,
            partial,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::utterance::UtteranceAudio;

    fn verdict(flagged: bool, category: &str) -> Verdict {
        Verdict {
            risk: if flagged {
                crate::call::Risk::Suspected
            } else {
                crate::call::Risk::None
            },
            score: if flagged { 0.5 } else { 0.2 },
            categories: vec![category.to_owned()],
            evidence: vec![crate::call::Evidence {
                category: category.to_owned(),
                pattern: category.to_owned(),
                matched_text: "words".into(),
                start_char: 0,
                end_char: 5,
                weight: 0.5,
                context_similarity: None,
                honest_similarity: None,
                spoken: None,
            }],
            call_model: Some(0.99),
            lift: None,
        }
    }

    #[test]
    fn a_lift_by_the_model_alone_on_a_short_live_reading_is_withheld() {
        let classifier = Classifier::builtin();
        let lifted = |windows: usize, keyword_score: f32| Verdict {
            lift: Some(crate::detect::classifier::Lift {
                windows,
                keyword_score,
            }),
            ..verdict(true, CALL_MODEL)
        };
        // zh.toml: lift_min_score = 0.15, alone_min_windows = 10, live_alone_min_windows = 40.
        assert!(live_withheld(&classifier, "zh", &lifted(39, 0.1)));
        assert!(!live_withheld(&classifier, "zh", &lifted(40, 0.1)));
        // A lift from a cue heard stands at any length, as in the summary.
        assert!(!live_withheld(&classifier, "zh", &lifted(12, 0.15)));
        // English sets no live length: its lift needs a cue.
        assert!(!live_withheld(&classifier, "en", &lifted(3, 0.3)));
        // Only lifts: a keyword flag, or a verdict no longer resting on the lift, is not.
        let keywords = Verdict {
            lift: lifted(12, 0.1).lift,
            ..verdict(true, "unusual_payment")
        };
        assert!(!live_withheld(&classifier, "zh", &keywords));
        assert!(!live_withheld(
            &classifier,
            "zh",
            &Verdict {
                risk: crate::call::Risk::None,
                ..lifted(12, 0.1)
            }
        ));
    }

    #[test]
    fn a_lift_is_confirmed_only_by_a_later_lifted_reading_that_heard_more() {
        let (lift, keywords, none) = (
            verdict(true, CALL_MODEL),
            verdict(true, "unusual_payment"),
            verdict(false, "unusual_payment"),
        );
        let mut at = None;
        // Keywords are never held; nothing lifted, nothing pending.
        assert!(!held(rests_on_the_lift(&keywords), 6.0, &mut at));
        assert_eq!(at, None);
        // The first lift waits; a review of the same speech neither confirms nor ends it.
        assert!(held(rests_on_the_lift(&lift), 12.0, &mut at));
        assert!(held(rests_on_the_lift(&lift), 12.0, &mut at));
        assert_eq!(at, Some(12.0));
        // The next utterance, lifted too, confirms it, and later lifts go out at once.
        assert!(!held(rests_on_the_lift(&lift), 18.0, &mut at));
        assert!(!held(rests_on_the_lift(&lift), 24.0, &mut at));
        // A reading that drops the lift ends the run: the next lift waits again.
        assert!(!held(rests_on_the_lift(&none), 30.0, &mut at));
        assert_eq!(at, None);
        assert!(held(rests_on_the_lift(&lift), 36.0, &mut at));
        assert!(!held(rests_on_the_lift(&keywords), 42.0, &mut at));
        assert!(held(rests_on_the_lift(&lift), 48.0, &mut at));
    }

    #[test]
    fn a_weak_keyword_flag_waits_where_the_pack_asks_and_the_model_reads_it_low() {
        let classifier = Classifier::builtin();
        let (zh, en) = (
            classifier.pack("zh").unwrap(),
            classifier.pack("en").unwrap(),
        );
        let with = |score: f32, model: Option<f32>| Verdict {
            score,
            risk: if score >= 0.8 {
                crate::call::Risk::High
            } else {
                crate::call::Risk::Suspected
            },
            call_model: model,
            ..verdict(true, "unusual_payment")
        };
        // zh.toml: live_confirm_below = 0.8, high = 0.8.
        assert!(weak_flag_waits(zh, &with(0.6, Some(0.5))));
        assert!(weak_flag_waits(zh, &with(0.6, None)));
        assert!(!weak_flag_waits(zh, &with(0.6, Some(0.85))));
        assert!(!weak_flag_waits(zh, &with(0.85, Some(0.5))));
        // English sets no threshold.
        assert!(!weak_flag_waits(en, &with(0.6, Some(0.5))));
        // Where the model does not run (here: no context check), nothing reads the call as a
        // whole and keyword flags are alerted at once; the lift waits in every pack.
        let mut on = Classifier::builtin();
        on.call_model = true;
        assert!(!waits(&on, "zh", &with(0.6, Some(0.5))));
        assert!(!waits(&on, "zh", &verdict(false, "unusual_payment")));
        assert!(waits(&on, "en", &verdict(true, CALL_MODEL)));
    }

    fn utterance(start_s: f64, seconds: f64, value: f32) -> UtteranceAudio {
        UtteranceAudio {
            start_s,
            samples: vec![value; (seconds * 16_000.0) as usize],
            voiced: true,
            cut_in_speech: false,
        }
    }

    #[test]
    fn a_chain_joins_utterances_with_their_pauses_and_keeps_the_newest_within_its_length() {
        let c = Chain::extend(None, &utterance(1.0, 6.0, 0.1), "before", 28.0);
        assert_eq!((c.start_s, c.starts.clone()), (1.0, vec![0]));
        // Straight after the cut, then after a 0.5 s pause: the pause is heard as silence.
        let c = Chain::extend(Some(c), &utterance(7.0, 6.0, 0.2), "later", 28.0);
        let c = Chain::extend(Some(c), &utterance(13.5, 2.0, 0.3), "later", 28.0);
        assert_eq!(c.starts, vec![0, 96_000, 200_000]);
        assert_eq!(c.samples.len(), 232_000);
        assert!(c.samples[192_000..200_000].iter().all(|&s| s == 0.0));
        assert_eq!((c.samples[199_999], c.samples[200_000]), (0.0, 0.3));
        assert_eq!(
            c.prompt, "before",
            "the prompt is what was said before the chain"
        );
        assert!((c.end_s() - 15.5).abs() < 1e-9);
        // Past the length, the oldest utterances go, whole.
        let c = Chain::extend(Some(c), &utterance(15.5, 6.0, 0.4), "", 14.5);
        assert_eq!(c.starts, vec![0, 104_000, 136_000]);
        assert!((c.start_s - 7.0).abs() < 1e-9);
        assert_eq!(c.samples[0], 0.2);
        // Rounding: an utterance at the cut may start a hair before the chain's end.
        let end = c.end_s();
        let c = Chain::extend(Some(c), &utterance(end - 1e-7, 0.5, 0.45), "", 28.0);
        assert_eq!(c.starts.len(), 4);
        // A long pause starts a new chain; so does an utterance longer than the length.
        let c = Chain::extend(Some(c), &utterance(23.5, 2.0, 0.5), "new", 28.0);
        assert_eq!(
            (c.start_s, c.starts.len(), c.prompt.as_str()),
            (23.5, 1, "new")
        );
        let c = Chain::extend(Some(c), &utterance(25.5, 6.0, 0.6), "", 4.0);
        assert_eq!((c.start_s, c.starts.len()), (25.5, 1));
    }
}
