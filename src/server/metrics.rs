//! `GET /metrics`: the engine's counters and queues, and what the server refused, in the
//! OpenMetrics text format Prometheus scrapes (prometheus-client encodes it). Read fresh from
//! the engine's atomics at each scrape.

use std::sync::atomic::AtomicU64;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::AppState;
use crate::engine::EngineStats;
use crate::relay::RelayStats;
use crate::relay::Role;

type Labels = Vec<(String, String)>;

fn counter(value: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(value);
    c
}

fn seconds(value: f64) -> Counter<f64, AtomicU64> {
    let c = Counter::<f64, AtomicU64>::default();
    c.inc_by(value);
    c
}

fn gauge(value: f64) -> Gauge<f64, AtomicU64> {
    let g = Gauge::<f64, AtomicU64>::default();
    g.set(value);
    g
}

fn labelled(rows: impl IntoIterator<Item = (String, String, u64)>) -> Family<Labels, Counter> {
    let family = Family::<Labels, Counter>::default();
    for (label, value, n) in rows {
        family.get_or_create(&vec![(label, value)]).inc_by(n);
    }
    family
}

fn labelled_gauge(
    rows: impl IntoIterator<Item = (String, String, u64)>,
) -> Family<Labels, Gauge<f64, AtomicU64>> {
    let family = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    for (label, value, n) in rows {
        family.get_or_create(&vec![(label, value)]).set(n as f64);
    }
    family
}

/// The registry as of now.
pub(super) fn registry(state: &AppState) -> Registry {
    let mut r = Registry::with_prefix("vishguard");
    if let Some(engine) = &state.engine {
        engine_metrics(&mut r, engine);
    }
    if let Some(relay) = &state.relay {
        relay_metrics(&mut r, relay, state.config.role);
    }
    r.register(
        "malformed",
        "Input the server refused or skipped, by kind",
        labelled(
            state
                .malformed
                .snapshot()
                .into_iter()
                .map(|(kind, n)| ("kind".to_owned(), kind.to_owned(), n)),
        ),
    );
    r
}

/// The relay's side (`serve --role ingest|worker`): the spool and the broker on an ingest,
/// claimed calls on a worker.
fn relay_metrics(r: &mut Registry, s: &RelayStats, role: Role) {
    let get = RelayStats::get;
    let (counters, gauges) =
        match role {
            Role::Ingest => (
                vec![
                (
                    "relay_published",
                    "Messages (call openings, audio, closes) the broker stored",
                    get(&s.published),
                ),
                ("relay_calls_published", "Calls published", get(&s.calls_published)),
                (
                    "relay_shed_chunks",
                    "Audio chunks shed (the spool at its bound, or the publisher too far behind)",
                    get(&s.shed_chunks),
                ),
            ],
                vec![
                    (
                        "relay_spooled",
                        "Messages waiting in the spool for the broker",
                        get(&s.spooled),
                    ),
                    (
                        "relay_spool_bytes",
                        "Bytes waiting in the spool",
                        get(&s.spool_bytes),
                    ),
                    (
                        "relay_broker_up",
                        "1 when the broker took the last publish, 0 while it is away",
                        s.broker_up.load(std::sync::atomic::Ordering::Relaxed) as u64,
                    ),
                ],
            ),
            Role::Worker => (
                vec![
                    (
                        "relay_calls_claimed",
                        "Calls claimed",
                        get(&s.calls_claimed),
                    ),
                    (
                        "relay_calls_taken_over",
                        "Calls claimed that another worker had begun",
                        get(&s.calls_taken_over),
                    ),
                    (
                        "relay_calls_finished",
                        "Calls whose summary the events stream stored",
                        get(&s.calls_finished),
                    ),
                    (
                        "relay_duplicate_chunks",
                        "Audio chunks received twice and skipped",
                        get(&s.duplicate_chunks),
                    ),
                    (
                        "relay_malformed",
                        "Broker messages that were not the relay's, skipped",
                        get(&s.malformed),
                    ),
                ],
                vec![
                    ("relay_calls_held", "Calls held now", get(&s.calls_held)),
                (
                    "relay_audio_behind",
                    "Audio messages of the calls held, stored in the broker and not yet read (rising: this worker falls behind)",
                    get(&s.audio_behind),
                ),
                    (
                        "relay_claims_waiting",
                        "Calls no worker has claimed yet (rising: the workers cannot keep up)",
                        get(&s.claims_waiting),
                    ),
                ],
            ),
            Role::All => (Vec::new(), Vec::new()),
        };
    for (name, help, value) in counters {
        r.register(name, help, counter(value));
    }
    for (name, help, value) in gauges {
        r.register(name, help, gauge(value as f64));
    }
}

/// The engine's side: calls, audio, recognition, sinks.
fn engine_metrics(r: &mut Registry, engine: &crate::engine::EngineMonitor) {
    let s = &engine.stats;
    let get = EngineStats::get;
    let opened = get(&s.calls_opened);
    let ended = get(&s.calls_ended);
    r.register(
        "calls_active",
        "Calls open in the engine now",
        gauge(opened.saturating_sub(ended) as f64),
    );
    let counters = [
        ("calls_opened", "Calls opened", opened),
        ("calls_ended", "Calls ended with a summary", ended),
        (
            "calls_refused",
            "Calls refused (too many open, a bad call, an id in use)",
            get(&s.calls_refused),
        ),
        (
            "chunks_refused",
            "Audio chunks refused as malformed",
            get(&s.chunks_refused),
        ),
        (
            "utterances_heard",
            "Finished utterances heard by the recogniser",
            get(&s.utterances_heard),
        ),
        (
            "partials_heard",
            "Utterances heard while still being spoken",
            get(&s.partials_heard),
        ),
        (
            "reviews_heard",
            "A party's last utterances heard again as one recording",
            get(&s.reviews_heard),
        ),
        (
            "utterances_dropped",
            "Utterances dropped because the recogniser's queue was full",
            get(&s.utterances_dropped),
        ),
    ];
    for (name, help, value) in counters {
        r.register(name, help, counter(value));
    }
    for (name, help, samples) in [
        (
            "audio_seconds",
            "Seconds of call audio taken in",
            get(&s.audio_in),
        ),
        (
            "audio_dropped_seconds",
            "Seconds of audio dropped because a call's queue was full",
            get(&s.audio_dropped),
        ),
    ] {
        r.register(name, help, seconds(samples as f64 / 16_000.0));
    }
    let recognition_s = get(&s.recognition_us) as f64 / 1e6;
    let heard_s = get(&s.utterance_audio) as f64 / 16_000.0;
    r.register(
        "recognition_seconds",
        "Seconds the recogniser spent hearing, all workers together",
        seconds(recognition_s),
    );
    r.register(
        "real_time_factor",
        "Recognition time over the audio of the finished utterances heard (partials included in the time)",
        gauge(if heard_s > 0.0 { recognition_s / heard_s } else { 0.0 }),
    );
    r.register(
        "asr_queue_depth",
        "Finished utterances waiting for a recogniser",
        gauge(engine.queued_utterances() as f64),
    );
    r.register(
        "alerts",
        "Alerts sent, by level",
        labelled([
            ("level".into(), "suspected".into(), get(&s.alerts_suspected)),
            ("level".into(), "high".into(), get(&s.alerts_high)),
        ]),
    );
    let sinks = engine.sink_reports();
    let per_sink = |field: fn(&crate::engine::SinkReport) -> u64| {
        labelled(
            sinks
                .iter()
                .map(|k| ("sink".to_owned(), k.sink.clone(), field(k))),
        )
    };
    r.register(
        "sink_events_dropped",
        "Events a sink's full queue dropped",
        per_sink(|k| k.dropped),
    );
    r.register(
        "sink_events_spilled",
        "Events that waited on disk for a slow sink",
        per_sink(|k| k.spilled),
    );
    r.register(
        "sink_write_errors",
        "Events a sink failed to write",
        per_sink(|k| k.errors),
    );
    r.register(
        "sink_alerts_held",
        "Alerts a durable sink holds in memory because the disk refused them (a full disk)",
        labelled_gauge(
            sinks
                .iter()
                .map(|k| ("sink".to_owned(), k.sink.clone(), k.held)),
        ),
    );
    r.register(
        "sink_alerts_lost",
        "Alerts a durable sink could not keep (memory full of held alerts, or no disk before exit)",
        per_sink(|k| k.lost),
    );
    r.register(
        "sink_dead_letters",
        "Alerts a webhook receiver refused for good, or that found the outbox full",
        per_sink(|k| k.dead_lettered),
    );
    r.register(
        "webhook_outbox_pending",
        "Alerts in a webhook outbox not yet delivered",
        labelled_gauge(
            sinks
                .iter()
                .map(|k| ("sink".to_owned(), k.sink.clone(), k.outbox_pending)),
        ),
    );
}

pub(super) async fn render(State(state): State<AppState>) -> impl IntoResponse {
    let mut text = String::new();
    if let Err(e) = encode(&mut text, &registry(&state)) {
        tracing::error!("metrics not encoded: {e}");
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}
