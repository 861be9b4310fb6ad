//! The engine's side of the [`Ingest`] port: opens a front end per call, routes each chunk to
//! its call's bounded queue (dropping and counting what does not fit, unless the source waits),
//! and closes calls.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};

use super::fanout::Fanout;
use super::scheduler::Scheduler;
use super::{front_end, CallInfo, EngineConfig, EngineStats, LiveCalls};
use crate::audio::StreamResampler;
use crate::call::{AudioChunk, Call, CallId, Event};
use crate::sources::{Ingest, IngestError, Ingress};

struct OpenCall {
    tx: SyncSender<AudioChunk>,
    info: Arc<CallInfo>,
}

pub(super) struct EngineIngest {
    config: EngineConfig,
    scheduler: Arc<Scheduler>,
    fanout: Arc<Fanout>,
    live: Arc<LiveCalls>,
    stats: Arc<EngineStats>,
    calls: Mutex<HashMap<CallId, OpenCall>>,
    fronts: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Set under the `calls` lock, so no call opens after `close_all` has cleared it.
    stopped: AtomicBool,
}

impl EngineIngest {
    pub fn new(
        config: EngineConfig,
        scheduler: Arc<Scheduler>,
        fanout: Arc<Fanout>,
        live: Arc<LiveCalls>,
        stats: Arc<EngineStats>,
    ) -> Self {
        Self {
            config,
            scheduler,
            fanout,
            live,
            stats,
            calls: Mutex::default(),
            fronts: Mutex::default(),
            stopped: AtomicBool::new(false),
        }
    }

    fn calls(&self) -> MutexGuard<'_, HashMap<CallId, OpenCall>> {
        super::lock(&self.calls)
    }

    fn open(&self, call: Call) -> Result<(), IngestError> {
        let opened = self.try_open(call);
        let counter = match opened {
            Ok(()) => &self.stats.calls_opened,
            Err(_) => &self.stats.calls_refused,
        };
        EngineStats::add(counter, 1);
        opened
    }

    fn try_open(&self, call: Call) -> Result<(), IngestError> {
        let bad = |problem: String| IngestError::BadCall {
            call: call.id.clone(),
            problem,
        };
        call.check().map_err(bad)?;
        let resamplers = call
            .parties
            .iter()
            .map(|p| StreamResampler::new(p.sample_rate))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        let mut calls = self.calls();
        if self.stopped.load(Ordering::Relaxed) {
            return Err(IngestError::Stopped);
        }
        self.live.admit(&call.id, self.config.max_calls)?;
        let (tx, rx) = sync_channel(self.config.call_queue_chunks);
        let info = Arc::new(CallInfo::new(call.clone()));
        // Before the call's first utterance can be heard: its events stay in order.
        self.fanout.send(Event::CallStarted(call.clone()));
        self.scheduler.call_opened();
        let front = front_end::FrontEnd::new(
            info.clone(),
            resamplers,
            self.scheduler.clone(),
            self.stats.clone(),
            &self.config,
        );
        // Checked ids hold no control character; the filter keeps a NUL, which makes
        // `Builder::spawn` panic, out of the name whatever reaches here.
        let name: String = format!("call-{}", call.id)
            .chars()
            .filter(|c| !c.is_control())
            .take(15)
            .collect();
        let spawned = std::thread::Builder::new()
            .name(name)
            .spawn(move || front.run(rx));
        match spawned {
            Ok(handle) => {
                let mut fronts = self.fronts();
                // A long-running engine sees many calls: forget the front ends that are done.
                fronts.retain(|f| !f.is_finished());
                fronts.push(handle);
            }
            Err(e) => {
                // The call ends as it began, with its summary (the worker frees its id).
                self.scheduler.push_close(info);
                return Err(bad(format!("no thread for its front end: {e}")));
            }
        }
        calls.insert(call.id, OpenCall { tx, info });
        Ok(())
    }

    fn fronts(&self) -> MutexGuard<'_, Vec<std::thread::JoinHandle<()>>> {
        super::lock(&self.fronts)
    }

    /// The call's queue and record, checked against the chunk.
    fn route(
        &self,
        chunk: &AudioChunk,
    ) -> Result<(SyncSender<AudioChunk>, Arc<CallInfo>), IngestError> {
        let calls = self.calls();
        let open = calls
            .get(&chunk.call)
            .ok_or_else(|| IngestError::UnknownCall(chunk.call.clone()))?;
        let parties = open.info.call.parties.len();
        if chunk.party >= parties {
            return Err(IngestError::UnknownParty {
                call: chunk.call.clone(),
                party: chunk.party,
                parties,
            });
        }
        chunk
            .check(open.info.call.parties[chunk.party].sample_rate)
            .map_err(|problem| IngestError::BadCall {
                call: chunk.call.clone(),
                problem,
            })?;
        Ok((open.tx.clone(), open.info.clone()))
    }

    fn close(&self, id: &CallId) -> Result<(), IngestError> {
        // Dropping the queue's sender lets the front end finish what is queued, then close.
        match self.calls().remove(id) {
            Some(_) => Ok(()),
            None => Err(IngestError::UnknownCall(id.clone())),
        }
    }

    /// Closes every open call and waits for their front ends to hand over their last words.
    pub fn close_all(&self) {
        {
            let mut calls = self.calls();
            self.stopped.store(true, Ordering::Relaxed);
            calls.clear();
        }
        let fronts: Vec<_> = self.fronts().drain(..).collect();
        for f in fronts {
            let _ = f.join();
        }
    }
}

/// 16 kHz samples' worth of the chunk's audio.
fn samples_16k(info: &CallInfo, chunk: &AudioChunk) -> u64 {
    let rate = info.call.parties[chunk.party].sample_rate.max(1) as u64;
    chunk.samples.len() as u64 * 16_000 / rate
}

impl EngineIngest {
    fn count_drop(&self, info: &CallInfo, chunk: &AudioChunk) {
        let n = samples_16k(info, chunk);
        EngineStats::add(&self.stats.audio_dropped, n);
        if info.dropped_audio.fetch_add(n, Ordering::Relaxed) == 0 {
            tracing::warn!(
                call = %info.call.id,
                "call queue full: dropping audio (the machine is not keeping up)"
            );
        }
    }

    /// The chunk's queue and record, counted in or refused.
    fn admit(
        &self,
        chunk: &AudioChunk,
    ) -> Result<(SyncSender<AudioChunk>, Arc<CallInfo>), IngestError> {
        let routed = self.route(chunk);
        match &routed {
            Ok((_, info)) => EngineStats::add(&self.stats.audio_in, samples_16k(info, chunk)),
            Err(_) => EngineStats::add(&self.stats.chunks_refused, 1),
        }
        routed
    }
}

impl Ingest for EngineIngest {
    fn send(&self, item: Ingress) -> Result<(), IngestError> {
        match item {
            Ingress::Open(call) => self.open(call),
            Ingress::Close(id) => self.close(&id),
            Ingress::Audio(chunk) => {
                let (tx, info) = self.admit(&chunk)?;
                match tx.try_send(chunk) {
                    Ok(()) => Ok(()),
                    Err(TrySendError::Full(chunk) | TrySendError::Disconnected(chunk)) => {
                        self.count_drop(&info, &chunk);
                        Err(IngestError::QueueFull(chunk.call))
                    }
                }
            }
        }
    }

    fn send_waiting(&self, item: Ingress) -> Result<(), IngestError> {
        match item {
            Ingress::Audio(chunk) => {
                let (tx, info) = self.admit(&chunk)?;
                info.waits.store(true, Ordering::Relaxed);
                let id = chunk.call.clone();
                tx.send(chunk).map_err(|_| IngestError::UnknownCall(id))
            }
            other => self.send(other),
        }
    }
}
