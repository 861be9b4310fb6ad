//! The streaming engine. One chunk of call audio travels one way:
//!
//! ```text
//! source --Ingress--> ingest --AudioChunk--> front end (a thread per call: resample, voice
//!   activity, utterance cutting) --utterance--> scheduler (one call per worker at a time)
//!   --> worker (recogniser, then detector) --Event--> fan-out (a queue per sink) --> sinks
//! ```
//!
//! Back-pressure is explicit at every queue: when the machine cannot keep up, audio (or whole
//! utterances) are dropped, counted in the call's summary and logged, so memory stays bounded
//! and nothing is silent; a slow sink spills to disk or drops by its own policy and never holds
//! up the recognisers. Time is audio time: a chunk's `offset_s` places it, so a gap stays a gap.
//!
//! `files` is the same pipeline for whole recordings (`scan`, `score`).

pub mod fanout;
pub mod files;
mod front_end;
mod ingest;
pub mod recogniser;
mod scheduler;
mod worker;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::audio::utterance::UtteranceConfig;
use crate::call::{Call, CallId};
use crate::detect::Classifier;
use crate::sinks::{QueueConfig, Sink};
use crate::sources::Ingest;
pub use fanout::SinkReport;
pub use recogniser::{HearRequest, Heard, Recogniser, WhisperRecogniser};

/// `[engine]`: queues, workers, partial hypotheses and how utterances are cut.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Audio chunks a call may have waiting before new ones are dropped.
    pub call_queue_chunks: usize,
    /// Utterances (all calls together) waiting for the recogniser before new ones are dropped.
    pub asr_queue: usize,
    /// Recogniser threads sharing the one model (each call is heard by one at a time).
    pub asr_workers: usize,
    /// Utterances of different calls a worker hears in one batch (one encoder call, one
    /// batched decode). Batching pays where one utterance leaves the hardware idle (a GPU);
    /// on a 2-core CPU one at a time with two workers measured best.
    pub asr_batch: usize,
    /// Each utterance's greedy decode joins the one the recognisers are running for other
    /// calls' utterances, at its next step (continuous batching, `asr::decode::JointDecodes`),
    /// instead of stepping a batch of its own. Off by default: on the 2-core CPU it was slower
    /// (`bench live --model tiny.en --calls 16 --stagger-s 3`, fallback off to steady the
    /// tail, alternating, load 1.6-2.1: lag p50 / p95 0.49 / 1.12, 0.47 / 1.11 s apart; joined
    /// with 2 recognisers 0.75 / 1.65, 0.70 / 1.54 s; with 4, 0.78 / 1.43, 0.81 / 1.66 s).
    /// There two recognisers already keep both cores busy, and a step's cost per row falls
    /// only from 5.4 ms alone to 3.0 ms at 4 rows (cross-attention reads 9 MB of audio keys
    /// per row), while each joined row waits for the others' steps. Where one row leaves the
    /// hardware idle (a GPU) it is the batching that pays.
    pub joint_decoding: bool,
    /// Calls open at once; more are refused (rather than every call heard worse).
    pub max_calls: usize,
    /// While an utterance is still being spoken, its audio so far is offered to an idle
    /// recogniser, so a phrase can alert before the speaker pauses.
    pub partials: bool,
    /// ... each time it has grown this much (seconds of audio).
    pub partial_every_s: f64,
    /// When a party talks on across utterance cuts, their last utterances are heard again
    /// joined into one recording, in idle time and before the call's summary, and those words
    /// count instead of the pieces' (a phrase a cut split is then heard whole).
    pub reviews: bool,
    /// ... at most this many seconds of audio (whole utterances; at most 29 s, one window).
    pub review_max_s: f64,
    pub utterances: UtteranceConfig,
    /// Where sinks' queues spill when full: a private folder is made inside it (default: the
    /// system's temporary folder).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spill_dir: Option<PathBuf>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            call_queue_chunks: 200,
            asr_queue: 16,
            asr_workers: 2,
            asr_batch: 1,
            joint_decoding: false,
            max_calls: 1000,
            partials: true,
            partial_every_s: 0.25,
            reviews: true,
            review_max_s: 28.0,
            utterances: UtteranceConfig::default(),
            spill_dir: None,
        }
    }
}

/// The most chunks a call's queue may hold (`call_queue_chunks`): 100,000 chunks of 20 ms are
/// more than half an hour of audio waiting, about 7 MB per call.
pub const MAX_CALL_QUEUE_CHUNKS: usize = 100_000;

impl EngineConfig {
    /// Errors name the key (relative to `[engine]`) and what is wrong with its value.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (key, v) in [
            ("call_queue_chunks", self.call_queue_chunks),
            ("asr_queue", self.asr_queue),
            ("asr_workers", self.asr_workers),
            ("asr_batch", self.asr_batch),
            ("max_calls", self.max_calls),
        ] {
            if v == 0 {
                return Err(format!("{key} must be at least 1"));
            }
        }
        // Each call's queue is allocated whole when the call opens (72 bytes a slot): a
        // huge value had aborted the process at its first call.
        if self.call_queue_chunks > MAX_CALL_QUEUE_CHUNKS {
            return Err(format!(
                "call_queue_chunks must be at most {MAX_CALL_QUEUE_CHUNKS}, not {}",
                self.call_queue_chunks
            ));
        }
        if self.asr_workers > 64 {
            return Err(format!(
                "asr_workers must be at most 64, not {}",
                self.asr_workers
            ));
        }
        if self.asr_batch > 4096 {
            return Err(format!(
                "asr_batch must be at most 4096, not {}",
                self.asr_batch
            ));
        }
        if !(self.partial_every_s.is_finite() && self.partial_every_s > 0.0) {
            return Err(format!(
                "partial_every_s must be a positive number of seconds, not {}",
                self.partial_every_s
            ));
        }
        if !(self.review_max_s.is_finite() && (1.0..=29.0).contains(&self.review_max_s)) {
            return Err(format!(
                "review_max_s must be between 1 and 29 seconds, not {}",
                self.review_max_s
            ));
        }
        self.utterances
            .validate()
            .map_err(|e| format!("utterances.{e}"))
    }
}

/// What the engine has done so far, for `/metrics` and logs. Counters only go up; audio is
/// counted in 16 kHz samples' worth.
#[derive(Debug, Default)]
pub struct EngineStats {
    pub calls_opened: AtomicU64,
    pub calls_ended: AtomicU64,
    /// Opens refused (too many calls, a bad call, a duplicate id).
    pub calls_refused: AtomicU64,
    /// Audio taken in, and dropped because a call's queue was full.
    pub audio_in: AtomicU64,
    pub audio_dropped: AtomicU64,
    /// Chunks refused as malformed (bad offset, party or length).
    pub chunks_refused: AtomicU64,
    /// Finished utterances heard, and their audio; partial hypotheses heard.
    pub utterances_heard: AtomicU64,
    pub utterance_audio: AtomicU64,
    pub partials_heard: AtomicU64,
    /// Reviews heard: a party's last utterances heard again as one recording.
    pub reviews_heard: AtomicU64,
    /// Utterances dropped because the recognisers' queue was full.
    pub utterances_dropped: AtomicU64,
    /// Microseconds the recogniser spent hearing (all workers together).
    pub recognition_us: AtomicU64,
    /// Alerts sent, by the risk they carried.
    pub alerts_suspected: AtomicU64,
    pub alerts_high: AtomicU64,
}

impl EngineStats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A sink and its queue, as the engine runs it.
pub struct SinkSpec {
    pub sink: Box<dyn Sink>,
    pub queue: QueueConfig,
}

impl SinkSpec {
    pub fn new(sink: impl Sink + 'static, queue: QueueConfig) -> Self {
        Self {
            sink: Box::new(sink),
            queue,
        }
    }
}

/// What the engine knows of an open call, shared by its front end and the workers.
pub(crate) struct CallInfo {
    pub call: Call,
    /// When the call opened: alert latency is measured from here.
    pub started: Instant,
    /// 16 kHz samples' worth of audio dropped because the call's queue was full.
    pub dropped_audio: AtomicU64,
    /// Utterances dropped because the recognisers' queue was full.
    pub dropped_utterances: AtomicU64,
    /// 16 kHz samples' worth of audio time between chunks that never arrived.
    pub missing_audio: AtomicU64,
    /// Per party: the audio time (milliseconds) received so far, from the call's start.
    pub heard_until_ms: Vec<AtomicU64>,
    /// The source waits for room (`send_waiting`: a file read faster than real time, a
    /// relay worker catching up): its utterances wait for the recognisers too, rather than
    /// be dropped when their queue is full.
    pub waits: std::sync::atomic::AtomicBool,
}

impl CallInfo {
    pub fn new(call: Call) -> Self {
        Self {
            started: Instant::now(),
            dropped_audio: AtomicU64::new(0),
            dropped_utterances: AtomicU64::new(0),
            missing_audio: AtomicU64::new(0),
            heard_until_ms: (0..call.parties.len()).map(|_| AtomicU64::new(0)).collect(),
            waits: std::sync::atomic::AtomicBool::new(false),
            call,
        }
    }

    /// Seconds of `party`'s audio received so far.
    pub fn heard_until_s(&self, party: usize) -> f64 {
        self.heard_until_ms.get(party).map_or(0.0, |a| {
            a.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1000.0
        })
    }
}

/// A mutex's guard, even if a thread panicked while holding it: the engine's state stays usable
/// (a panic while hearing one call is caught, and must not lock every other call out).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The ids of the calls the engine holds, from their opening until their summary has gone to
/// the sinks: an id cannot be reused while the earlier call with it is still being heard.
#[derive(Default)]
pub(crate) struct LiveCalls(Mutex<HashSet<CallId>>);

impl LiveCalls {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<CallId>> {
        lock(&self.0)
    }

    /// False when the id is taken or `max` calls are live.
    pub fn admit(&self, id: &CallId, max: usize) -> Result<(), crate::sources::IngestError> {
        let mut live = self.lock();
        if live.contains(id) {
            return Err(crate::sources::IngestError::DuplicateCall(id.clone()));
        }
        if live.len() >= max {
            return Err(crate::sources::IngestError::TooManyCalls(max));
        }
        live.insert(id.clone());
        Ok(())
    }

    pub fn finished(&self, id: &CallId) {
        self.lock().remove(id);
    }
}

/// Runs the recognisers, the call front ends and the sinks.
pub struct Engine {
    ingest: Arc<ingest::EngineIngest>,
    scheduler: Arc<scheduler::Scheduler>,
    fanout: Arc<fanout::Fanout>,
    workers: Vec<std::thread::JoinHandle<()>>,
    stats: Arc<EngineStats>,
}

/// The engine's counters and queue depths, readable from anywhere while it runs.
#[derive(Clone)]
pub struct EngineMonitor {
    pub stats: Arc<EngineStats>,
    scheduler: Arc<scheduler::Scheduler>,
    fanout: Arc<fanout::Fanout>,
}

impl EngineMonitor {
    /// Finished utterances waiting for a recogniser now.
    pub fn queued_utterances(&self) -> usize {
        self.scheduler.queued()
    }

    /// Each sink's queue so far.
    pub fn sink_reports(&self) -> Vec<SinkReport> {
        self.fanout.reports()
    }
}

/// How the sinks fared, once the engine has stopped.
#[derive(Debug, Clone)]
pub struct EngineReport {
    pub sinks: Vec<SinkReport>,
}

impl Engine {
    /// Starts the recogniser workers and the sinks. Errors: an invalid config, or a sink
    /// queue's spill folder that cannot be made.
    pub fn start(
        recogniser: Arc<dyn Recogniser>,
        classifier: Arc<Classifier>,
        config: EngineConfig,
        sinks: Vec<SinkSpec>,
    ) -> Result<Self> {
        config
            .validate()
            .map_err(|e| anyhow::anyhow!("engine.{e}"))?;
        let spill_parent = config.spill_dir.clone().unwrap_or_else(std::env::temp_dir);
        let fanout = Arc::new(fanout::Fanout::start(sinks, &spill_parent)?);
        let scheduler = Arc::new(scheduler::Scheduler::new(config.asr_queue));
        let live = Arc::new(LiveCalls::default());
        let stats = Arc::new(EngineStats::default());
        let shared = Arc::new(worker::Workers {
            recogniser,
            classifier,
            scheduler: scheduler.clone(),
            fanout: fanout.clone(),
            live: live.clone(),
            stats: stats.clone(),
            calls: Mutex::default(),
            batch: config.asr_batch,
            review_max_s: config.reviews.then_some(config.review_max_s),
            joint_decoding: config.joint_decoding,
        });
        let workers = (0..config.asr_workers)
            .map(|i| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("recogniser-{i}"))
                    .spawn(move || {
                        crate::asr::threads::in_own_pool(&format!("recogniser-{i}"), || {
                            shared.work()
                        })
                    })
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let ingest = Arc::new(ingest::EngineIngest::new(
            config,
            scheduler.clone(),
            fanout.clone(),
            live,
            stats.clone(),
        ));
        Ok(Self {
            ingest,
            scheduler,
            fanout,
            workers,
            stats,
        })
    }

    /// The port sources deliver calls to.
    pub fn ingest(&self) -> Arc<dyn Ingest> {
        self.ingest.clone()
    }

    /// A view of the engine's counters and queues that outlives borrowing it (for `/metrics`).
    pub fn monitor(&self) -> EngineMonitor {
        EngineMonitor {
            stats: self.stats.clone(),
            scheduler: self.scheduler.clone(),
            fanout: self.fanout.clone(),
        }
    }

    /// Closes the calls still open, hears what is queued, delivers every event, and stops.
    pub fn shutdown(mut self) -> EngineReport {
        self.stop()
    }

    fn stop(&mut self) -> EngineReport {
        self.ingest.close_all();
        self.scheduler.shut_down();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        let sinks = self.fanout.close();
        for s in &sinks {
            if s.dropped > 0 || s.errors > 0 || s.lost > 0 {
                tracing::warn!(
                    sink = %s.sink,
                    dropped = s.dropped,
                    errors = s.errors,
                    lost = s.lost,
                    "sink lost events (its queue was full, or writes failed)"
                );
            }
            if s.dead_lettered > 0 {
                tracing::warn!(
                    sink = %s.sink,
                    dead_letters = s.dead_lettered,
                    "alerts refused for good are in the outbox's dead letters \
                     (`vishguard alerts list --dead-letters`)"
                );
            }
        }
        EngineReport { sinks }
    }
}

impl Drop for Engine {
    /// An engine dropped without `shutdown` (an error on the way) still hears what it was given
    /// and lets its sinks deliver it.
    fn drop(&mut self) {
        if !self.workers.is_empty() {
            self.stop();
        }
    }
}
