//! The streaming engine: many calls at once, each a bounded queue of audio feeding its own
//! resampler, voice activity and utterance cutter, and one shared recogniser that turns
//! utterances into text, evidence and alerts.
//!
//! Back-pressure is explicit at both queues: when the machine cannot keep up, audio (or whole
//! utterances) are dropped, counted and logged, so memory stays bounded and nothing is silent.

mod recogniser;
pub mod segmenter;
mod work_queue;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde::Serialize;

use crate::asr::{TranscribeOptions, Transcriber};
use crate::detect::{Classifier, Risk};
use recogniser::Recogniser;
use segmenter::{Segmenter, SegmenterConfig, StreamResampler, Utterance};
use work_queue::{Job, Partial, WorkQueue};

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Audio chunks a call may have waiting before new ones are dropped.
    pub call_queue_chunks: usize,
    /// Utterances (all calls together) waiting for the recogniser before new ones are dropped.
    pub asr_queue: usize,
    /// Recogniser threads sharing the one model (each call is heard by one at a time).
    pub asr_workers: usize,
    pub segmenter: SegmenterConfig,
    pub options: TranscribeOptions,
    /// While an utterance is still being spoken, its audio so far is offered to an idle
    /// recogniser each time it has grown this much (`None`: only finished utterances are
    /// heard, and an alert waits for the speaker's pause).
    pub partial_every_s: Option<f64>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            call_queue_chunks: 200,
            asr_queue: 16,
            asr_workers: 2,
            segmenter: SegmenterConfig::default(),
            options: TranscribeOptions {
                vad: None,
                // Utterances are at most a few seconds: a 15 s encoder window halves the cost
                // of each and, on the test clips, did not raise the error rate (tiny.en mean
                // WER 0.185 vs 0.170, base 0.200 vs 0.252).
                short_context_frames: Some(1500),
                ..Default::default()
            },
            partial_every_s: Some(0.25),
        }
    }
}

/// Quiet after speech for this long makes the words so far worth hearing at once.
const PAUSE_PARTIAL_S: f64 = 0.15;

/// What the engine reports to its sinks.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LiveEvent {
    Transcript {
        call_id: String,
        party: usize,
        start_s: f64,
        end_s: f64,
        text: String,
        language: Option<String>,
        risk: Risk,
        score: f32,
    },
    Alert(LiveAlert),
    CallEnded(CallSummary),
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct LiveAlert {
    /// Stable per call, party, category and pattern: receivers dedupe on it.
    pub alert_id: String,
    pub call_id: String,
    pub party: usize,
    pub wall_time: String,
    /// Alert time minus the end of the phrase in the audio.
    pub latency_s: f64,
    pub t_s: f64,
    pub category: String,
    pub pattern: String,
    pub matched_text: String,
    pub score: f32,
    pub risk: Risk,
    /// Raised while the utterance was still being spoken (from its words so far).
    #[serde(default)]
    pub partial: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct CallSummary {
    pub call_id: String,
    pub risk: Risk,
    pub score: f32,
    pub first_alert_s: Option<f64>,
    pub alerts: usize,
    pub utterances: usize,
    pub dropped_audio_s: f64,
    pub dropped_utterances: u64,
}

/// Receives the engine's events, on the engine's sink thread.
pub trait EventSink: Send {
    fn handle(&mut self, event: &LiveEvent);
}

/// Runs the shared recogniser and the sinks; hands out call handles.
pub struct Engine {
    queue: Arc<WorkQueue>,
    config: EngineConfig,
    dropped_utterances: Arc<AtomicU64>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

/// Feeds one call's audio into the engine.
pub struct CallHandle {
    tx: Option<SyncSender<(usize, Vec<f32>)>>,
    pub dropped_audio: Arc<AtomicU64>,
    front: Option<std::thread::JoinHandle<()>>,
    rate: u32,
}

impl CallHandle {
    /// Queues audio for `party` (samples at the call's rate); false when it was dropped
    /// because the call's queue is full.
    pub fn push(&self, party: usize, samples: Vec<f32>) -> bool {
        let Some(tx) = &self.tx else { return false };
        let n = samples.len() as u64;
        match tx.try_send((party, samples)) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                let before = self
                    .dropped_audio
                    .fetch_add(n * 16_000 / self.rate as u64, Ordering::Relaxed);
                if before == 0 {
                    tracing::warn!(
                        "call queue full: dropping audio (the machine is not keeping up)"
                    );
                }
                false
            }
        }
    }

    /// Queues audio, waiting for room: for sources that can wait (files).
    pub fn push_waiting(&self, party: usize, samples: Vec<f32>) {
        if let Some(tx) = &self.tx {
            let _ = tx.send((party, samples));
        }
    }

    /// Ends the call: queued audio is still processed, then a summary is reported.
    pub fn close(mut self) {
        self.tx.take();
        if let Some(front) = self.front.take() {
            let _ = front.join();
        }
    }
}

impl Drop for CallHandle {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(front) = self.front.take() {
            let _ = front.join();
        }
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

impl Engine {
    /// Starts the recogniser and sink threads. The model and classifier live as long as the
    /// process (`'static`), shared by every call.
    pub fn start(
        transcriber: &'static Transcriber,
        classifier: &'static Classifier,
        config: EngineConfig,
        mut sinks: Vec<Box<dyn EventSink>>,
    ) -> Self {
        let (event_tx, event_rx) = sync_channel::<LiveEvent>(1024);
        let dropped_utterances = Arc::new(AtomicU64::new(0));
        let sink_thread = std::thread::Builder::new()
            .name("sinks".into())
            .spawn(move || {
                for event in event_rx {
                    for s in &mut sinks {
                        s.handle(&event);
                    }
                }
            })
            .expect("spawn sink thread");
        let queue = Arc::new(WorkQueue::new(config.asr_queue));
        let recogniser = Arc::new(Recogniser::new(
            transcriber,
            classifier,
            config.options.clone(),
            dropped_utterances.clone(),
            queue.clone(),
        ));
        let mut workers: Vec<_> = (0..config.asr_workers.max(1))
            .map(|i| {
                let (recogniser, events) = (recogniser.clone(), event_tx.clone());
                std::thread::Builder::new()
                    .name(format!("recogniser-{i}"))
                    .spawn(move || recogniser.work(events))
                    .expect("spawn recogniser thread")
            })
            .collect();
        drop(event_tx);
        workers.push(sink_thread);
        Self {
            queue,
            config,
            dropped_utterances,
            workers,
        }
    }

    /// Opens a call whose audio arrives at `rate` Hz for `parties` parties.
    pub fn open_call(
        &self,
        call_id: &str,
        parties: usize,
        rate: u32,
    ) -> anyhow::Result<CallHandle> {
        let mut resamplers = (0..parties)
            .map(|_| StreamResampler::new(rate))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut segmenters: Vec<Segmenter> = (0..parties)
            .map(|p| Segmenter::new(p, self.config.segmenter.clone()))
            .collect();
        let (tx, rx): (SyncSender<(usize, Vec<f32>)>, Receiver<_>) =
            sync_channel(self.config.call_queue_chunks);
        let queue = self.queue.clone();
        queue.call_opened();
        let dropped_audio = Arc::new(AtomicU64::new(0));
        let dropped_utt = self.dropped_utterances.clone();
        let id = call_id.to_owned();
        let dropped_for_close = dropped_audio.clone();
        let started = Instant::now();
        let partial_step = self.config.partial_every_s.map(|s| (s * 16_000.0) as usize);
        // Partials shorter than this are too little to be worth the recogniser's time.
        let partial_min = 16_000;
        let mut offered = vec![0usize; parties];
        let mut pause_offered = vec![false; parties];
        let front = std::thread::Builder::new()
            .name(format!("call-{id}"))
            .spawn(move || {
                let send = |u: Utterance| {
                    let job = Job::Utterance {
                        call_id: id.clone(),
                        started,
                        utterance: u,
                    };
                    if let Err(Job::Utterance { utterance, .. }) = queue.push_utterance(job) {
                        let n = dropped_utt.fetch_add(1, Ordering::Relaxed) + 1;
                        tracing::warn!(
                            call = %id,
                            dropped_total = n,
                            "recogniser busy: dropped a {:.1} s utterance",
                            utterance.samples.len() as f64 / 16_000.0
                        );
                    }
                };
                for (party, samples) in rx {
                    let Some(r) = resamplers.get_mut(party) else {
                        tracing::warn!(call = %id, party, "audio for an unknown party ignored");
                        continue;
                    };
                    let audio = r.push(&samples);
                    for u in segmenters[party].push(&audio) {
                        offered[party] = 0;
                        pause_offered[party] = false;
                        send(u);
                    }
                    if let Some(step) = partial_step {
                        let seg = &segmenters[party];
                        let open = seg.open_len();
                        // A pause that may end the utterance is offered at once: the last
                        // words, where the phrase that matters often ends, are heard before
                        // the utterance closes.
                        let pausing = seg.open_quiet_s() >= PAUSE_PARTIAL_S;
                        let due = if pausing {
                            !std::mem::replace(&mut pause_offered[party], true)
                        } else {
                            pause_offered[party] = false;
                            open >= offered[party] + step
                        };
                        if due && open >= partial_min {
                            if let Some(u) = seg.open_utterance() {
                                offered[party] = open;
                                queue.offer_partial(Partial {
                                    call_id: id.clone(),
                                    started,
                                    utterance: u,
                                });
                            }
                        }
                    }
                }
                for s in &mut segmenters {
                    if let Some(u) = s.flush() {
                        send(u);
                    }
                }
                queue.push_close(Job::Close {
                    call_id: id,
                    dropped_audio: dropped_for_close,
                });
            })?;
        Ok(CallHandle {
            tx: Some(tx),
            dropped_audio,
            front: Some(front),
            rate,
        })
    }

    pub fn dropped_utterances(&self) -> u64 {
        self.dropped_utterances.load(Ordering::Relaxed)
    }

    /// Waits until every call's audio has been processed and every event delivered.
    pub fn shutdown(mut self) {
        self.queue.shut_down();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Drop for Engine {
    /// Without a shutdown the workers still stop once the open calls end.
    fn drop(&mut self) {
        self.queue.shut_down();
    }
}
