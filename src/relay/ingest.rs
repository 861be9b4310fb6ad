//! `serve --role ingest`: the [`Ingest`] port that publishes calls to the broker instead of
//! hearing them. Sources (WebSocket media, SIP, files) see the same port as in one process.
//!
//! One publisher thread sends the messages in order, with up to [`WINDOW`] awaiting the
//! stream's acknowledgement. When a publish fails (the broker is away), what was in flight
//! and everything after it goes to the [`Spool`] on disk, in order, and is published first
//! once the broker is back; JetStream drops what it had already stored, by message id.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use async_nats::jetstream::context::PublishAckFuture;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::spool::Spool;
use super::wire::{self, WireMessage};
use super::{RelayConfig, RelayStats};
use crate::call::{AudioChunk, CallId};
use crate::sources::{Ingest, IngestError, Ingress};

/// Publishes awaiting acknowledgement at once: enough to keep a loopback broker busy
/// without holding much to resend after a failure.
const WINDOW: usize = 256;
/// Audio queued in memory for the publisher beyond which `send` sheds (bytes): 32 MiB is
/// about 17 minutes of one 16 kHz party, or 2 s of 500 such parties.
const MAX_QUEUED_BYTES: u64 = 32 << 20;
/// Samples in one audio message at most: 256 KiB of 16-bit audio.
const MAX_PIECE: usize = 128 * 1024;
/// At shutdown, how long the publisher keeps trying a broker that is away before it leaves
/// the rest in the spool for the next run.
const CLOSING_GRACE: Duration = Duration::from_secs(10);

struct OpenCall {
    rates: Vec<u32>,
    next_seq: Vec<u64>,
    /// This opening's own id (a ULID): message ids carry it, so a call id a network uses
    /// again is a new call to the broker, not a duplicate to drop.
    instance: String,
    /// Per party: audio not yet published (see `coalesce_ms`).
    pending: Vec<Option<AudioChunk>>,
}

/// The ingest's port: checks each item as the engine would, and queues it for the publisher.
pub struct RelayIngest {
    /// Audio of a party is published in messages of this many seconds (0: as it comes).
    coalesce_s: f64,
    calls_prefix: String,
    audio_prefix: String,
    calls: Mutex<HashMap<CallId, OpenCall>>,
    tx: Mutex<Option<UnboundedSender<WireMessage>>>,
    queued_bytes: Arc<AtomicU64>,
    stats: Arc<RelayStats>,
    stopped: AtomicBool,
    publisher: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl RelayIngest {
    /// Opens the spool (errors: see [`Spool::open`]) and starts the publisher, which connects
    /// in the background (a broker that is not up yet only fills the spool).
    pub fn start(config: &RelayConfig, stats: Arc<RelayStats>) -> Result<Self> {
        super::check_files(config)?;
        let spool = Spool::open(&config.spool, config.spool_max_mb.saturating_mul(1 << 20))?;
        let (tx, rx) = unbounded_channel();
        let queued_bytes = Arc::new(AtomicU64::new(0));
        let publisher = {
            let (config, stats, queued) = (config.clone(), stats.clone(), queued_bytes.clone());
            std::thread::Builder::new()
                .name("relay-publish".into())
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::error!("the relay's publisher did not start: {e}");
                            return;
                        }
                    };
                    let mut publisher = Publisher {
                        config,
                        rx,
                        spool,
                        stats,
                        queued,
                    };
                    runtime.block_on(publisher.run());
                })
                .context("starting the relay's publisher")?
        };
        Ok(Self {
            coalesce_s: config.coalesce_ms as f64 / 1000.0,
            calls_prefix: config.calls_prefix(),
            audio_prefix: config.audio_prefix(),
            calls: Mutex::default(),
            tx: Mutex::new(Some(tx)),
            queued_bytes,
            stats,
            stopped: AtomicBool::new(false),
            publisher: Mutex::new(Some(publisher)),
        })
    }

    fn queue(&self, m: WireMessage) -> Result<(), IngestError> {
        let size = m.size() as u64;
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        let Some(tx) = tx.as_ref() else {
            return Err(IngestError::Stopped);
        };
        self.queued_bytes.fetch_add(size, Ordering::Relaxed);
        tx.send(m).map_err(|_| IngestError::Stopped)
    }

    fn check(&self, item: Ingress, wait: bool) -> Result<(), IngestError> {
        if self.stopped.load(Ordering::Relaxed) {
            return Err(IngestError::Stopped);
        }
        match item {
            Ingress::Open(call) => {
                let bad = |problem: String| IngestError::BadCall {
                    call: call.id.clone(),
                    problem,
                };
                call.check().map_err(bad)?;
                if let Some(p) = call
                    .parties
                    .iter()
                    .find(|p| !(4_000..=192_000).contains(&p.sample_rate))
                {
                    return Err(bad(format!(
                        "party {:?}: {} Hz is not a sample rate this takes (4-192 kHz)",
                        p.label, p.sample_rate
                    )));
                }
                let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
                if calls.contains_key(&call.id) {
                    return Err(IngestError::DuplicateCall(call.id));
                }
                let instance = ulid::Ulid::new().to_string();
                self.queue(wire::open(&self.calls_prefix, &call, &instance))?;
                calls.insert(
                    call.id.clone(),
                    OpenCall {
                        rates: call.parties.iter().map(|p| p.sample_rate).collect(),
                        next_seq: vec![0; call.parties.len()],
                        instance,
                        pending: vec![None; call.parties.len()],
                    },
                );
                RelayStats::add(&self.stats.calls_published, 1);
                Ok(())
            }
            Ingress::Audio(chunk) => {
                if wait {
                    while self.queued_bytes.load(Ordering::Relaxed) > MAX_QUEUED_BYTES
                        && !self.stopped.load(Ordering::Relaxed)
                    {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
                let Some(open) = calls.get_mut(&chunk.call) else {
                    return Err(IngestError::UnknownCall(chunk.call));
                };
                let Some(&rate) = open.rates.get(chunk.party) else {
                    return Err(IngestError::UnknownParty {
                        call: chunk.call,
                        party: chunk.party,
                        parties: open.rates.len(),
                    });
                };
                if let Err(problem) = chunk.check(rate) {
                    return Err(IngestError::BadCall {
                        call: chunk.call,
                        problem,
                    });
                }
                if self.queued_bytes.load(Ordering::Relaxed) > MAX_QUEUED_BYTES {
                    RelayStats::add(&self.stats.shed_chunks, 1);
                    return Err(IngestError::QueueFull(chunk.call));
                }
                let party = chunk.party;
                // Joined to the audio waiting for this party when it follows on (within a
                // millisecond); published once it holds `coalesce_s`.
                let follows = open.pending[party].as_ref().is_some_and(|p| {
                    (p.offset_s + p.samples.len() as f64 / rate as f64 - chunk.offset_s).abs()
                        < 1e-3
                });
                if !follows {
                    self.flush(open, party)?;
                }
                match &mut open.pending[party] {
                    Some(p) => p.samples.extend_from_slice(&chunk.samples),
                    slot @ None => *slot = Some(chunk),
                }
                let held_s = open.pending[party]
                    .as_ref()
                    .map_or(0.0, |p| p.samples.len() as f64 / rate as f64);
                if held_s + 1e-6 >= self.coalesce_s {
                    self.flush(open, party)?;
                }
                Ok(())
            }
            Ingress::Close(id) => {
                let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
                let Some(mut open) = calls.remove(&id) else {
                    return Err(IngestError::UnknownCall(id));
                };
                for party in 0..open.pending.len() {
                    self.flush(&mut open, party)?;
                }
                self.queue(wire::close(&self.audio_prefix, &id, &open.instance))
            }
        }
    }

    /// Publishes the audio waiting for `party`, if any.
    /// Messages over the broker's payload limit (1 MiB by default) are refused for good, so
    /// a large chunk (10 s at 192 kHz is 3.8 MB) goes out in pieces of [`MAX_PIECE`] samples.
    fn flush(&self, open: &mut OpenCall, party: usize) -> Result<(), IngestError> {
        let Some(chunk) = open.pending[party].take() else {
            return Ok(());
        };
        let rate = open.rates[party] as f64;
        for (i, piece) in chunk.samples.chunks(MAX_PIECE).enumerate() {
            let piece = AudioChunk {
                call: chunk.call.clone(),
                party,
                offset_s: chunk.offset_s + (i * MAX_PIECE) as f64 / rate,
                samples: piece.to_vec(),
            };
            let seq = open.next_seq[party];
            open.next_seq[party] += 1;
            self.queue(wire::audio(&self.audio_prefix, &piece, seq, &open.instance))?;
        }
        Ok(())
    }

    /// Calls opened and not closed.
    pub fn open_calls(&self) -> usize {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Closes the calls still open (their sources are gone), then lets the publisher send
    /// what is queued: to the broker, or into the spool for the next run when the broker
    /// stays away past a grace period.
    pub fn shutdown(&self) {
        let open: Vec<CallId> = self
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        for id in open {
            let _ = self.check(Ingress::Close(id), false);
        }
        self.stopped.store(true, Ordering::Relaxed);
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(p) = self
            .publisher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = p.join();
        }
    }
}

impl Ingest for RelayIngest {
    fn send(&self, item: Ingress) -> Result<(), IngestError> {
        self.check(item, false)
    }

    fn send_waiting(&self, item: Ingress) -> Result<(), IngestError> {
        self.check(item, true)
    }
}

impl Drop for RelayIngest {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Publisher {
    config: RelayConfig,
    rx: UnboundedReceiver<WireMessage>,
    spool: Spool,
    stats: Arc<RelayStats>,
    queued: Arc<AtomicU64>,
}

/// A message published and not yet acknowledged.
struct InFlight {
    message: WireMessage,
    /// Sent from the spool (it leaves the spool once stored), or straight from the queue.
    from_spool: bool,
    ack: PublishAckFuture,
}

impl Publisher {
    fn note_spool(&self) {
        self.stats
            .spooled
            .store(self.spool.len(), Ordering::Relaxed);
        self.stats
            .spool_bytes
            .store(self.spool.bytes(), Ordering::Relaxed);
    }

    /// Takes a message from the queue (accounting for its bytes).
    fn took(&self, m: &WireMessage) {
        self.queued.fetch_sub(m.size() as u64, Ordering::Relaxed);
    }

    fn spool_one(&mut self, m: &WireMessage) {
        match self.spool.push(m) {
            Ok(true) => {}
            Ok(false) => RelayStats::add(&self.stats.shed_chunks, 1),
            Err(e) => {
                tracing::error!("{e:#}; the message is shed");
                if !m.is_control() {
                    RelayStats::add(&self.stats.shed_chunks, 1);
                }
            }
        }
    }

    /// Everything queued now goes behind the spool's backlog, in order. True once the queue
    /// is closed (shutdown).
    fn drain_into_spool(&mut self) -> bool {
        loop {
            match self.rx.try_recv() {
                Ok(m) => {
                    self.took(&m);
                    self.spool_one(&m);
                }
                Err(TryRecvError::Empty) => return false,
                Err(TryRecvError::Disconnected) => return true,
            }
        }
    }

    fn next_from_spool(&mut self) -> Option<WireMessage> {
        match self.spool.next_unsent() {
            Ok(m) => m,
            Err(e) => {
                tracing::error!("{e:#}; what it held is lost");
                None
            }
        }
    }

    /// The next message in order, and whether it comes from the spool: the spool's first,
    /// then the queue's. `Some(None)`: nothing to send now; `None`: the queue is closed and
    /// all is sent.
    async fn next(&mut self, awaiting_acks: bool) -> Option<Option<(WireMessage, bool)>> {
        if self.spool.unsent() > 0 {
            // New audio goes behind the backlog, so each call's order holds.
            self.drain_into_spool();
            return Some(self.next_from_spool().map(|m| (m, true)));
        }
        if awaiting_acks || !self.spool.is_empty() {
            // Do not wait for new audio while acknowledgements are due.
            return match self.rx.try_recv() {
                Ok(m) => {
                    self.took(&m);
                    Some(Some((m, false)))
                }
                Err(_) => Some(None),
            };
        }
        let m = self.rx.recv().await?;
        self.took(&m);
        Some(Some((m, false)))
    }

    async fn run(&mut self) {
        let (client, context) = match self.config.connect("vishguard-ingest").await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("{e:#}; calls go to the spool only");
                while self.rx.recv().await.is_some() {}
                return;
            }
        };
        let mut stream_ready = false;
        let mut inflight: VecDeque<InFlight> = VecDeque::new();
        let mut outage_since: Option<Instant> = None;
        let mut closing_since: Option<Instant> = None;
        let mut backoff = Duration::from_millis(250);
        loop {
            if let Some(since) = outage_since {
                // The broker is away: keep the queue moving into the spool, and try again.
                if self.drain_into_spool() && closing_since.is_none() {
                    closing_since = Some(Instant::now());
                }
                self.note_spool();
                if closing_since.is_some_and(|t| t.elapsed() > CLOSING_GRACE) {
                    tracing::warn!(
                        "the broker has been away for {:.0} s at shutdown: {} messages stay in \
                         the spool {} for the next run",
                        since.elapsed().as_secs_f64(),
                        self.spool.len(),
                        self.config.spool.display()
                    );
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                if !stream_ready {
                    match self.config.ensure_audio_stream(&context).await {
                        Ok(_) => stream_ready = true,
                        Err(e) => {
                            tracing::debug!("{e:#}");
                            continue;
                        }
                    }
                }
                // Probe with the oldest message.
                let Some(probe) = self.next_from_spool() else {
                    outage_since = None;
                    continue;
                };
                match publish(&context, &probe).await {
                    Ok(()) => {
                        let _ = self.spool.stored();
                        RelayStats::add(&self.stats.published, 1);
                        self.stats.broker_up.store(true, Ordering::Relaxed);
                        tracing::warn!(
                            "the broker is back after {:.1} s; sending the {} messages that waited",
                            since.elapsed().as_secs_f64(),
                            self.spool.len()
                        );
                        outage_since = None;
                        backoff = Duration::from_millis(250);
                    }
                    Err(e) => {
                        tracing::debug!("broker still away: {e:#}");
                        self.spool.rewind();
                    }
                }
                continue;
            }
            if !stream_ready {
                match self.config.ensure_audio_stream(&context).await {
                    Ok(_) => stream_ready = true,
                    Err(e) => {
                        tracing::warn!(
                            "{}; calls wait in the spool",
                            super::why(&client, &self.config, &e)
                        );
                        self.stats.broker_up.store(false, Ordering::Relaxed);
                        outage_since = Some(Instant::now());
                        continue;
                    }
                }
            }
            // What was not stored, oldest first, when a publish fails.
            let mut lost: Option<VecDeque<(WireMessage, bool)>> = None;
            match self.next(!inflight.is_empty()).await {
                None if inflight.is_empty() => {
                    self.note_spool();
                    return;
                }
                Some(Some((message, from_spool))) => {
                    let sent = context
                        .publish_with_headers(
                            message.subject.clone(),
                            message.header_map(),
                            message.payload.clone().into(),
                        )
                        .await;
                    match sent {
                        Ok(ack) => inflight.push_back(InFlight {
                            message,
                            from_spool,
                            ack,
                        }),
                        Err(e) => {
                            tracing::debug!("publish: {e}");
                            let mut l: VecDeque<_> = inflight
                                .drain(..)
                                .map(|f| (f.message, f.from_spool))
                                .collect();
                            l.push_back((message, from_spool));
                            lost = Some(l);
                        }
                    }
                }
                _ => {}
            }
            // Settle acknowledgements, oldest first: when the window is full, or when
            // nothing else is to be sent now.
            while lost.is_none()
                && !inflight.is_empty()
                && (inflight.len() >= WINDOW || (self.spool.unsent() == 0 && self.rx.is_empty()))
            {
                let f = inflight.pop_front().expect("not empty");
                match f.ack.await {
                    Ok(_) => {
                        if f.from_spool {
                            let _ = self.spool.stored();
                        }
                        RelayStats::add(&self.stats.published, 1);
                        self.stats.broker_up.store(true, Ordering::Relaxed);
                    }
                    Err(e) => {
                        tracing::debug!("not stored: {e}");
                        let mut l = VecDeque::from([(f.message, f.from_spool)]);
                        l.extend(inflight.drain(..).map(|f| (f.message, f.from_spool)));
                        lost = Some(l);
                    }
                }
            }
            if let Some(lost) = lost {
                // The spool's own are sent again from its first not stored; those from the
                // queue are newer than all of the spool's, and go to its end, then the queue.
                self.spool.rewind();
                for (m, from_spool) in &lost {
                    if !from_spool {
                        self.spool_one(m);
                    }
                }
                self.drain_into_spool();
                self.stats.broker_up.store(false, Ordering::Relaxed);
                tracing::warn!(
                    "the broker stopped taking audio; {} messages wait in the spool {} until it is back",
                    self.spool.len(),
                    self.config.spool.display()
                );
                outage_since = Some(Instant::now());
                stream_ready = false;
            }
            self.note_spool();
        }
    }
}

async fn publish(context: &async_nats::jetstream::Context, m: &WireMessage) -> Result<()> {
    let ack = context
        .publish_with_headers(m.subject.clone(), m.header_map(), m.payload.clone().into())
        .await
        .map_err(|e| anyhow::anyhow!("publish: {e}"))?;
    ack.await.map_err(|e| anyhow::anyhow!("not stored: {e}"))?;
    Ok(())
}
