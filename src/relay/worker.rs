//! `serve --role worker`: a [`Source`] whose calls come from the broker. It claims call
//! openings from the workers' shared durable consumer while the engine has room, replays each
//! claimed call's audio from its start (an ordered consumer), keeps the claim alive while the
//! call lasts, and acknowledges it once the call's summary is stored in the events stream.
//!
//! Takeover: a claim that was delivered before (its worker died or handed it back) is a call
//! another worker had begun. Its events already stored are read first, by message id, and the
//! NATS sink skips them ([`Handover`]), so the replay sends only what is new.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use async_nats::jetstream::{self, consumer, AckKind};
use futures_util::StreamExt;

use super::wire::{self, Incoming};
use super::RelayConfig;
use super::RelayStats;
use crate::call::{CallId, Event, Versioned};
use crate::sinks::nats::{call_subject, PublishFilter};
use crate::sources::{Ingest, IngestError, Ingress, Source, Stop};

/// An opening larger than this is not one an ingest sends (bytes): ids and metadata are
/// bounded (see [`crate::call::Call::check`]).
const MAX_OPENING_BYTES: usize = 64 * 1024;

/// What the NATS sink of a worker must not publish (see the module's text).
#[derive(Default)]
pub struct Handover {
    inner: Mutex<HandoverInner>,
}

#[derive(Default)]
struct HandoverInner {
    /// Per call taken over: the message ids its earlier owner stored.
    stored: HashMap<String, HashSet<String>>,
    /// Calls this worker gave back (at shutdown): nothing more of them goes out.
    given_back: HashSet<String>,
}

impl Handover {
    fn lock(&self) -> std::sync::MutexGuard<'_, HandoverInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stored(&self, call: &CallId, ids: HashSet<String>) {
        self.lock().stored.insert(call.to_string(), ids);
    }

    fn forget(&self, call: &CallId) {
        self.lock().stored.remove(call.as_str());
    }

    fn give_back(&self, call: &CallId) {
        self.lock().given_back.insert(call.to_string());
    }
}

impl PublishFilter for Handover {
    fn skip(&self, call_id: &str, msg_id: Option<&str>) -> bool {
        let inner = self.lock();
        inner.given_back.contains(call_id)
            || msg_id.is_some_and(|id| {
                inner
                    .stored
                    .get(call_id)
                    .is_some_and(|ids| ids.contains(id))
            })
    }
}

/// Calls claimed from the broker (see the module's text).
pub struct ClaimSource {
    config: RelayConfig,
    handover: Arc<Handover>,
    stats: Arc<RelayStats>,
    /// Calls held at once (the engine's `max_calls`).
    max_calls: usize,
}

impl ClaimSource {
    pub fn new(
        config: RelayConfig,
        handover: Arc<Handover>,
        stats: Arc<RelayStats>,
        max_calls: usize,
    ) -> Self {
        Self {
            config,
            handover,
            stats,
            max_calls: max_calls.max(1),
        }
    }
}

impl Source for ClaimSource {
    fn describe(&self) -> String {
        format!(
            "NATS calls ({} on {})",
            self.config.consumer,
            self.config.servers.join(",")
        )
    }

    fn run(self: Box<Self>, out: Arc<dyn Ingest>, stop: Stop) -> Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("relay-worker")
            .enable_all()
            .build()
            .context("starting the relay worker's runtime")?;
        runtime.block_on(self.claim_calls(out, stop))
    }
}

/// Streams a worker needs, found (or made) once.
struct Streams {
    audio: jetstream::stream::Stream,
    events: jetstream::stream::Stream,
    /// The connection, asked whether the broker is reachable: time it is not is not a call's
    /// silence.
    client: async_nats::Client,
}

impl ClaimSource {
    async fn claim_calls(self, out: Arc<dyn Ingest>, stop: Stop) -> Result<()> {
        super::check_files(&self.config)?;
        let (client, context) = self.config.connect("vishguard-worker").await?;
        let events_config = self.config.events();
        // The broker may start after us: wait for it (the engine is up meanwhile).
        let (streams, claims) = loop {
            if stop.requested() {
                return Ok(());
            }
            match self.setup(&context, &events_config).await {
                Ok(s) => break s,
                Err(e) => {
                    tracing::warn!("{}; trying again", super::why(&client, &self.config, &e));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let streams = Arc::new(streams);
        let this = Arc::new(self);
        let mut held: HashMap<
            CallId,
            (
                tokio::task::JoinHandle<()>,
                Arc<std::sync::atomic::AtomicBool>,
            ),
        > = HashMap::new();
        let mut last_info = Instant::now() - Duration::from_secs(10);
        while !stop.requested() {
            held.retain(|_, (task, _)| !task.is_finished());
            this.stats
                .calls_held
                .store(held.len() as u64, std::sync::atomic::Ordering::Relaxed);
            if last_info.elapsed() > Duration::from_secs(2) {
                let mut c = claims.clone();
                if let Ok(info) = c.info().await {
                    this.stats
                        .claims_waiting
                        .store(info.num_pending, std::sync::atomic::Ordering::Relaxed);
                }
                last_info = Instant::now();
            }
            let room = this.max_calls.saturating_sub(held.len());
            if room == 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let batch = claims
                .fetch()
                .max_messages(room.min(16))
                .expires(Duration::from_millis(500))
                .messages()
                .await;
            let mut batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    tracing::debug!("claiming calls: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            while let Some(claim) = batch.next().await {
                let claim = match claim {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!("claiming calls: {e}");
                        break;
                    }
                };
                if claim.payload.len() > MAX_OPENING_BYTES {
                    tracing::warn!(
                        "{}: an opening of {} bytes; dropped",
                        claim.subject,
                        claim.payload.len()
                    );
                    RelayStats::add(&this.stats.malformed, 1);
                    let _ = claim.ack_with(AckKind::Term).await;
                    continue;
                }
                let call = match wire::read_open(&claim.payload) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!("{}: {e}; dropped", claim.subject);
                        RelayStats::add(&this.stats.malformed, 1);
                        let _ = claim.ack_with(AckKind::Term).await;
                        continue;
                    }
                };
                if held.contains_key(&call.id) {
                    // Our own claim back (we were slow to renew it): the call goes on here.
                    continue;
                }
                let give_back = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let task = tokio::spawn(hear_call(
                    this.clone(),
                    streams.clone(),
                    out.clone(),
                    claim,
                    call.clone(),
                    give_back.clone(),
                ));
                held.insert(call.id, (task, give_back));
            }
        }
        // Stopping: the calls still held go back to the broker for another worker, and
        // nothing more of them is published from here (their summaries would be partial).
        for (_, (task, give_back)) in held.iter() {
            give_back.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = task;
        }
        for (_, (task, _)) in held {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        Ok(())
    }

    async fn setup(
        &self,
        context: &jetstream::Context,
        events_config: &crate::sinks::nats::NatsConfig,
    ) -> Result<(Streams, consumer::Consumer<consumer::pull::Config>)> {
        let audio = self.config.ensure_audio_stream(context).await?;
        crate::sinks::nats::NatsTransport::ensure_stream(context, events_config).await?;
        let events = context
            .get_stream(&events_config.stream)
            .await
            .map_err(|e| anyhow::anyhow!("stream {}: {e}", events_config.stream))?;
        let claims = audio
            .get_or_create_consumer(
                &self.config.consumer,
                consumer::pull::Config {
                    durable_name: Some(self.config.consumer.clone()),
                    filter_subject: format!("{}.>", self.config.calls_prefix()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_secs_f64(self.config.claim_timeout_s),
                    max_ack_pending: 100_000,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("consumer {}: {e}", self.config.consumer))?;
        let client = context.client();
        Ok((
            Streams {
                audio,
                events,
                client,
            },
            claims,
        ))
    }
}

/// The message ids of the events stored for a call (its subject, from the start to the last
/// stored now).
async fn stored_ids(streams: &Streams, subject: &str) -> Result<HashSet<String>> {
    let mut ids = HashSet::new();
    let last = match streams
        .events
        .get_last_raw_message_by_subject(subject)
        .await
    {
        Ok(m) => m.sequence,
        Err(e) if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => {
            return Ok(ids)
        }
        Err(e) => anyhow::bail!("reading the events stored: {e}"),
    };
    let reader = streams
        .events
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: subject.to_owned(),
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("reading the events stored: {e}"))?;
    let mut messages = reader
        .messages()
        .await
        .map_err(|e| anyhow::anyhow!("reading the events stored: {e}"))?;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .map_err(|_| anyhow::anyhow!("reading the events stored: timed out"))?;
        let Some(m) = m else { break };
        let m = m.map_err(|e| anyhow::anyhow!("reading the events stored: {e}"))?;
        // The standard name: a header read back is keyed by it, not by its text.
        let id = m
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID));
        if let Some(id) = id {
            ids.insert(id.as_str().to_owned());
        }
        let seq = m
            .info()
            .map_err(|e| anyhow::anyhow!("reading the events stored: {e}"))?
            .stream_sequence;
        if seq >= last {
            break;
        }
    }
    Ok(ids)
}

/// Hands an item to the engine, waiting for room (off the runtime's threads).
async fn hand(out: &Arc<dyn Ingest>, item: Ingress) -> Result<(), IngestError> {
    let out = out.clone();
    tokio::task::spawn_blocking(move || out.send_waiting(item))
        .await
        .unwrap_or(Err(IngestError::Stopped))
}

/// After its close, how long a worker waits for the call's summary to be stored before it
/// gives up on it (the summary refused for good: see the NATS outbox's dead letters).
const SUMMARY_WAIT: Duration = Duration::from_secs(300);
/// A sequence number this far past the next expected is not one of this call's (a day of
/// 20 ms chunks is 4.3 million): skipped as malformed, so it cannot deafen the call.
const MAX_SEQ_JUMP: u64 = 1_000_000;
/// Malformed messages logged per call; the rest are only counted.
const MALFORMED_LOGGED: u32 = 3;

/// What a claim says about its call: the opening's instance (a ULID; none from an ingest
/// that predates it), its stream sequence and when the broker stored it.
struct Opening {
    instance: Option<String>,
    sequence: u64,
    stored: time::OffsetDateTime,
}

impl Opening {
    fn of(claim: &jetstream::Message) -> Self {
        let info = claim.info().ok();
        Self {
            instance: claim
                .headers
                .as_ref()
                .and_then(|h| h.get(wire::INSTANCE))
                .map(|v| v.as_str().to_owned()),
            sequence: info.as_ref().map_or(0, |i| i.stream_sequence),
            stored: info.map_or(time::OffsetDateTime::UNIX_EPOCH, |i| i.published),
        }
    }
}

/// Whether this call's summary is the last event stored on its subject (one stored before
/// the opening belongs to an earlier call that had the same id).
async fn summary_stored(
    streams: &Streams,
    subject: &str,
    call: &CallId,
    opening: &Opening,
) -> bool {
    let Ok(last) = streams
        .events
        .get_last_raw_message_by_subject(subject)
        .await
    else {
        return false;
    };
    last.time >= opening.stored
        && serde_json::from_slice::<Versioned<Event>>(&last.payload)
            .is_ok_and(|e| matches!(&e.record, Event::CallEnded(s) if &s.call_id == call))
}

/// One claimed call, from its opening to its acknowledgement.
async fn hear_call(
    this: Arc<ClaimSource>,
    streams: Arc<Streams>,
    out: Arc<dyn Ingest>,
    claim: jetstream::Message,
    call: crate::call::Call,
    give_back: Arc<std::sync::atomic::AtomicBool>,
) {
    let id = call.id.clone();
    let opening = Opening::of(&claim);
    let events_subject = call_subject(&this.config.events_subject_prefix, id.as_str());
    let renew = Duration::from_secs_f64(this.config.claim_timeout_s / 3.0);
    if summary_stored(&streams, &events_subject, &id, &opening).await {
        // Its worker finished it and died before acknowledging.
        let _ = claim.double_ack().await;
        return;
    }
    let delivered = claim.info().map(|i| i.delivered).unwrap_or(1);
    if delivered > 1 {
        match stored_ids(&streams, &events_subject).await {
            Ok(ids) => {
                tracing::info!(call = %id.short(), "taking the call over: {} events were stored before", ids.len());
                this.handover.stored(&id, ids);
            }
            Err(e) => {
                tracing::warn!(call = %id.short(), "{e:#}; the call goes back to the broker");
                let _ = claim.ack_with(AckKind::Nak(Some(renew))).await;
                return;
            }
        }
    }
    match hand(&out, Ingress::Open(call.clone())).await {
        Ok(()) => {}
        Err(e @ (IngestError::TooManyCalls(_) | IngestError::DuplicateCall(_))) => {
            // Room or the id comes free later (the same call, still being finished here
            // after it was given back, or too many calls): try again then, or elsewhere.
            tracing::debug!(call = %id.short(), "{e}; the call waits in the broker");
            let _ = claim
                .ack_with(AckKind::Nak(Some(Duration::from_secs(1).max(renew))))
                .await;
            this.handover.forget(&id);
            return;
        }
        Err(e) => {
            tracing::warn!(call = %id.short(), "the engine refused the call: {e}");
            RelayStats::add(&this.stats.malformed, 1);
            let _ = claim.ack_with(AckKind::Term).await;
            this.handover.forget(&id);
            return;
        }
    }
    RelayStats::add(&this.stats.calls_claimed, 1);
    if delivered > 1 {
        RelayStats::add(&this.stats.calls_taken_over, 1);
    }
    let fed = replay(
        &this, &streams, &out, &claim, &call, &opening, &give_back, renew,
    )
    .await;
    if fed.is_err() {
        // Stopping: another worker takes the call, and nothing more of it goes out from
        // here (its summary would be partial).
        tracing::warn!(call = %id.short(), "the worker is stopping; the call goes back to the broker");
        this.handover.give_back(&id);
        let _ = claim.ack_with(AckKind::Nak(None)).await;
        let _ = hand(&out, Ingress::Close(id.clone())).await;
        return;
    }
    // Closed: done once its summary is stored in the events stream.
    let closed = Instant::now();
    let mut renewed = Instant::now();
    loop {
        if summary_stored(&streams, &events_subject, &id, &opening).await {
            let _ = claim.double_ack().await;
            RelayStats::add(&this.stats.calls_finished, 1);
            this.handover.forget(&id);
            return;
        }
        if give_back.load(std::sync::atomic::Ordering::Relaxed) {
            // Stopping before the summary went out: the next owner finishes it.
            this.handover.give_back(&id);
            let _ = claim.ack_with(AckKind::Nak(None)).await;
            return;
        }
        if closed.elapsed() > SUMMARY_WAIT {
            tracing::error!(
                call = %id.short(),
                "the call's summary was not stored {} s after its close (see the NATS outbox's \
                 dead letters); the call is let go",
                SUMMARY_WAIT.as_secs()
            );
            let _ = claim.ack_with(AckKind::Term).await;
            this.handover.forget(&id);
            return;
        }
        if renewed.elapsed() >= renew {
            let _ = claim.ack_with(AckKind::Progress).await;
            renewed = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Where a call's replay stands: the next sequence number per party, what is logged.
struct Replay {
    next_seq: Vec<u64>,
    malformed: u32,
    /// This call's share of the worker's `audio_behind` gauge.
    behind: u64,
    /// The stream sequence of the last message read: a read opened again starts after it.
    read_to: u64,
    /// The read was opened again because the call seemed idle: if it stays idle, it is.
    reopened_idle: bool,
    /// The broker was out of reach since the read was opened.
    was_away: bool,
}

/// Feeds the call's audio from its opening to its close (or until it has been idle for
/// `call_idle_s`), renewing the claim; a broken read is opened again where it stood (the
/// sequence numbers skip what was fed). Errors only when the worker stops.
#[allow(clippy::too_many_arguments)]
async fn replay(
    this: &ClaimSource,
    streams: &Streams,
    out: &Arc<dyn Ingest>,
    claim: &jetstream::Message,
    call: &crate::call::Call,
    opening: &Opening,
    give_back: &std::sync::atomic::AtomicBool,
    renew: Duration,
) -> Result<()> {
    let subject = call_subject(&this.config.audio_prefix(), call.id.as_str());
    let mut state = Replay {
        next_seq: vec![0; call.parties.len()],
        malformed: 0,
        behind: 0,
        read_to: opening.sequence,
        reopened_idle: false,
        was_away: false,
    };
    let mut renewed = Instant::now();
    let mut last_audio = Instant::now();
    let idle = Duration::from_secs_f64(this.config.call_idle_s);
    let result = loop {
        let stopping = || give_back.load(std::sync::atomic::Ordering::Relaxed);
        if stopping() {
            break Err(anyhow::anyhow!("the worker is stopping"));
        }
        // From the opening on: an id used again by a later call does not replay the earlier
        // call's audio.
        let messages = async {
            streams
                .audio
                .create_consumer(consumer::pull::OrderedConfig {
                    filter_subject: subject.clone(),
                    deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                        start_sequence: state.read_to + 1,
                    },
                    ..Default::default()
                })
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .messages()
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))
        }
        .await;
        let mut messages = match messages {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(call = %call.id.short(), "reading the call's audio: {e:#}; trying again");
                // The broker out of reach is not the call's silence: what the ingest spooled
                // meanwhile comes once it is back (a 70 s outage had closed every call).
                last_audio = Instant::now();
                if renewed.elapsed() >= renew {
                    let _ = claim.ack_with(AckKind::Progress).await;
                    renewed = Instant::now();
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let fed = feed(
            this,
            streams,
            &mut messages,
            out,
            claim,
            call,
            opening,
            give_back,
            renew,
            idle,
            &mut state,
            &mut renewed,
            &mut last_audio,
        )
        .await;
        match fed {
            Ok(true) => break Ok(()),
            Ok(false) => {
                tracing::debug!(call = %call.id.short(), "the call's audio read ended; reading on");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => break Err(e),
        }
    };
    this.stats
        .audio_behind
        .fetch_sub(state.behind, std::sync::atomic::Ordering::Relaxed);
    result
}

/// [`replay`]'s reading: `Ok(true)` once the call is closed, `Ok(false)` when the read broke
/// off (to open it again), an error when the worker stops.
#[allow(clippy::too_many_arguments)]
async fn feed(
    this: &ClaimSource,
    streams: &Streams,
    messages: &mut consumer::pull::Ordered,
    out: &Arc<dyn Ingest>,
    claim: &jetstream::Message,
    call: &crate::call::Call,
    opening: &Opening,
    give_back: &std::sync::atomic::AtomicBool,
    renew: Duration,
    idle: Duration,
    state: &mut Replay,
    renewed: &mut Instant,
    last_audio: &mut Instant,
) -> Result<bool> {
    let ours =
        |instance: &Option<String>| opening.instance.is_none() || instance == &opening.instance;
    loop {
        if give_back.load(std::sync::atomic::Ordering::Relaxed) {
            anyhow::bail!("the worker is stopping");
        }
        if renewed.elapsed() >= renew {
            let _ = claim.ack_with(AckKind::Progress).await;
            *renewed = Instant::now();
        }
        if streams.client.connection_state() != async_nats::connection::State::Connected {
            *last_audio = Instant::now(); // the broker out of reach: see `replay`
            state.was_away = true;
        } else if state.was_away {
            // Back from an outage: open the read again at once where it stood (the one
            // open across the restart had stalled, with the ingest's spooled audio waiting).
            state.was_away = false;
            return Ok(false);
        }
        if last_audio.elapsed() >= idle {
            if !state.reopened_idle {
                // After a broker restart the read can stall without an error while the
                // ingest's spooled audio waits in the stream (a 12 s outage closed a call that
                // way): open the read again once before taking the silence for the call's end.
                tracing::info!(call = %call.id.short(), "no audio for {:.0} s; reading the call's audio again", idle.as_secs_f64());
                state.reopened_idle = true;
                *last_audio = Instant::now();
                return Ok(false);
            }
            tracing::warn!(call = %call.id.short(), "no audio for {:.0} s; the call is closed", 2.0 * idle.as_secs_f64());
            let _ = hand(out, Ingress::Close(call.id.clone())).await;
            return Ok(true);
        }
        let m = match tokio::time::timeout(renew.min(Duration::from_millis(500)), messages.next())
            .await
        {
            Err(_) => continue,
            Ok(None) => return Ok(false),
            Ok(Some(Err(e))) => {
                tracing::debug!(call = %call.id.short(), "reading audio: {e}");
                return Ok(false);
            }
            Ok(Some(Ok(m))) => m,
        };
        if let Ok(info) = m.info() {
            state.read_to = info.stream_sequence;
            let now = info.pending;
            let gauge = &this.stats.audio_behind;
            // This call's share of the worker-wide gauge moves from `behind` to `now`.
            gauge.fetch_add(now, std::sync::atomic::Ordering::Relaxed);
            gauge.fetch_sub(state.behind, std::sync::atomic::Ordering::Relaxed);
            state.behind = now;
        }
        let mut malformed = |what: String| {
            RelayStats::add(&this.stats.malformed, 1);
            state.malformed += 1;
            if state.malformed <= MALFORMED_LOGGED {
                tracing::warn!(call = %call.id.short(), "{}: {what}; skipped{}", m.subject,
                    if state.malformed == MALFORMED_LOGGED { " (more are only counted)" } else { "" });
            }
        };
        let incoming = match wire::read_audio(m.headers.as_ref(), &m.payload) {
            Ok(i) => i,
            Err(e) => {
                malformed(e);
                continue;
            }
        };
        match incoming {
            Incoming::Close { call: c, instance } if c == call.id && ours(&instance) => {
                *last_audio = Instant::now();
                let _ = hand(out, Ingress::Close(c)).await;
                return Ok(true);
            }
            Incoming::Audio {
                seq,
                chunk,
                instance,
            } if chunk.call == call.id && ours(&instance) => {
                let Some(&next) = state.next_seq.get(chunk.party) else {
                    malformed(format!("party {} of {}", chunk.party, call.parties.len()));
                    continue;
                };
                if seq < next {
                    // Published twice (a resend after the broker's duplicate window), or
                    // read again after a broken read.
                    RelayStats::add(&this.stats.duplicate_chunks, 1);
                    continue;
                }
                if seq - next > MAX_SEQ_JUMP {
                    malformed(format!("sequence number {seq} where {next} was due"));
                    continue;
                }
                state.next_seq[chunk.party] = seq.saturating_add(1);
                // Only the call's own audio keeps it open: junk, another instance's messages
                // or another call's on the same subject had held a dead call forever.
                *last_audio = Instant::now();
                state.reopened_idle = false;
                if let Err(e) = hand(out, Ingress::Audio(chunk)).await {
                    // The engine refuses what no call may carry (a NaN or day-late offset):
                    // said, as malformed headers are.
                    malformed(format!("audio refused: {e}"));
                }
            }
            _ => {
                // Another call's (an id that differs only in characters a subject cannot
                // hold, or an earlier call with the same id).
            }
        }
    }
}
