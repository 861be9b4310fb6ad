use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::args::{live_config, AsrArgs, DetectorArgs, EngineArgs, SinkArgs};
use crate::config::{Config, SourceConfig};
use crate::engine::{Engine, SinkSpec};
use crate::relay::ingest::RelayIngest;
use crate::relay::worker::{ClaimSource, Handover};
use crate::relay::RelayStats;
use crate::relay::Role;
use crate::server::board::Board;
use crate::server::{self, AppState};
use crate::sinks::nats::{NatsSink, PublishFilter};
use crate::sinks::redact::Redacted;
use crate::sinks::{QueueConfig, Sink};
use crate::sources::sip::{SipConfig, SipSource};
use crate::sources::{Ingest, Source, Stop};

/// How long open connections (event streams, media sockets) get to finish after a stop.
const DRAIN_S: u64 = 5;

#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// A TOML config (`[server]`, `[engine]`, `[[sinks]]`, ...; see docs/serve.example.toml);
    /// flags override its settings, and the sink flags add to its sinks.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print the config that would run (the file and the flags together) as TOML, and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Where the API, events, metrics and WebSocket media listen [default: 127.0.0.1:8080];
    /// port 0 picks a free one (the address is printed on stderr).
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// SIP and SIPREC calls (UDP and TCP) on this address, e.g. 0.0.0.0:5060; port 0 picks a
    /// free one (printed on stderr).
    #[arg(long)]
    pub sip: Option<SocketAddr>,
    /// HTTPS and wss:// on --http: the certificate chain (PEM, leaf first); with --tls-key.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// `all`: take calls and hear them (one process); `ingest`: take calls and publish them
    /// to NATS; `worker`: hear the calls published there and publish the events. With a
    /// role, --nats names the broker that joins them ([nats] in the config) and
    /// --nats-outbox a worker's events outbox.
    #[arg(long, value_parser = Role::NAMES)]
    pub role: Option<String>,
    /// The bearer token every route but /healthz asks for (required beyond loopback).
    #[arg(long, env = "VISHGUARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(flatten, next_help_heading = "Where alerts go (besides the API)")]
    pub sinks: SinkArgs,
    #[command(flatten, next_help_heading = "Engine")]
    pub engine: EngineArgs,
    #[command(flatten, next_help_heading = "Recognition")]
    pub asr: AsrArgs,
    #[command(flatten, next_help_heading = "Detection")]
    pub detector: DetectorArgs,
}

impl ServeArgs {
    /// The config file (or the defaults) with every flag written over it.
    pub fn config(&self) -> Result<Config> {
        let mut config = live_config(
            self.config.as_deref(),
            &self.asr,
            &self.detector,
            &self.engine,
        )?;
        if let Some(role) = &self.role {
            config.server.role = role.parse().map_err(|e: String| anyhow::anyhow!(e))?;
        }
        // A server's output is its API: no stdout or terminal sink unless asked for.
        if config.server.role == Role::All {
            self.sinks.apply(&mut config.sinks, false)?;
        } else {
            // Ingest and workers: --nats names the broker that joins them ([nats]); a
            // worker's events go there.
            let sinks = SinkArgs {
                nats: None,
                nats_outbox: None,
                nats_tls_ca: None,
                ..self.sinks.clone()
            };
            sinks.apply(&mut config.sinks, false)?;
            if let Some(servers) = &self.sinks.nats {
                config.nats.servers = crate::sinks::nats::servers(servers);
            }
            if let Some(outbox) = &self.sinks.nats_outbox {
                config.nats.events_outbox = outbox.clone();
            }
            if let Some(ca) = &self.sinks.nats_tls_ca {
                config.nats.tls_ca = Some(ca.clone());
            }
            if config.nats.servers.is_empty() {
                bail!(
                    "--role {} needs a broker: --nats URL (or [nats] servers in the config)",
                    config.server.role.as_str()
                );
            }
        }
        if let Some(http) = self.http {
            config.server.http = http;
        }
        if let Some(sip) = self.sip {
            config.server.sip = Some(sip);
        }
        if let Some(token) = &self.token {
            config.server.token = Some(token.clone());
        }
        if let Some(cert) = &self.tls_cert {
            config.server.tls_cert = Some(cert.clone());
        }
        if let Some(key) = &self.tls_key {
            config.server.tls_key = Some(key.clone());
        }
        config
            .validate()
            .map_err(|(key, problem)| anyhow::anyhow!("{key}: {problem}"))?;
        Ok(config)
    }
}

pub fn run(args: ServeArgs) -> Result<i32> {
    let config = args.config()?;
    if args.print_config {
        print!("{}", config.to_toml()?);
        return Ok(0);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("server")
        .enable_all()
        .build()
        .context("starting the server's runtime")?;
    // Bound, and the TLS files read, before the models load: a port in use or a bad
    // certificate fails at once.
    let tls = match (&config.server.tls_cert, &config.server.tls_key) {
        (Some(cert), Some(key)) => Some(server::tls::acceptor(cert, key)?),
        _ => None,
    };
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(config.server.http))
        .with_context(|| {
            format!(
                "cannot listen on {} (another process there? --http ADDR; port 0 picks a free one)",
                config.server.http
            )
        })?;
    let board = Board::new(config.server.keep_ended_calls, 4096);
    let board_sink: Box<dyn Sink> = if config.server.redact {
        Box::new(Redacted(Box::new(board.clone())))
    } else {
        Box::new(board.clone())
    };
    let role = config.server.role;
    let relay_stats = (role != Role::All).then(|| Arc::new(RelayStats::default()));
    let mut relay_ingest = None;
    // `sources` are the config's own (files, devices): one that fails is reported when the
    // server stops. `listeners` are what the process is for (the SIP server, a worker's
    // claims): one that fails stops the server at once with exit status 2, so a supervisor
    // restarts it, rather than a worker answering /healthz while it claims no call.
    type Parts = (
        Option<Engine>,
        Arc<dyn Ingest>,
        Vec<Box<dyn Source>>,
        Vec<Box<dyn Source>>,
    );
    let (engine, ingest, sources, mut listeners): Parts = match role {
        Role::Ingest => {
            let sources = config
                .sources
                .iter()
                .map(SourceConfig::build)
                .collect::<Result<Vec<_>>>()?;
            let relay = Arc::new(RelayIngest::start(
                &config.nats,
                relay_stats.clone().expect("made for this role"),
            )?);
            relay_ingest = Some(relay.clone());
            (None, relay, sources, Vec::new())
        }
        Role::Worker => {
            let events = config.nats.events();
            let discarded = crate::sinks::outbox::admin::discard_pending(&events.outbox)?;
            if discarded > 0 {
                tracing::warn!(
                    "{discarded} events an earlier run left in {} are dropped: their calls \
                         were not finished, so another worker hears them again",
                    events.outbox.display()
                );
            }
            let handover = Arc::new(Handover::default());
            let events_sink = NatsSink::start_filtered(
                &events,
                Some(handover.clone() as Arc<dyn PublishFilter>),
            )?;
            let (engine, sources) = super::engine::start(
                &config,
                vec![
                    SinkSpec {
                        sink: board_sink,
                        queue: QueueConfig::default(),
                    },
                    SinkSpec {
                        sink: Box::new(events_sink),
                        queue: events.queue.clone(),
                    },
                ],
            )?;
            let claims: Box<dyn Source> = Box::new(ClaimSource::new(
                config.nats.clone(),
                handover,
                relay_stats.clone().expect("made for this role"),
                config.nats.worker_max_calls,
            ));
            let ingest = engine.ingest();
            (Some(engine), ingest, sources, vec![claims])
        }
        Role::All => {
            let (engine, sources) = super::engine::start(
                &config,
                vec![SinkSpec {
                    sink: board_sink,
                    queue: QueueConfig::default(),
                }],
            )?;
            let ingest = engine.ingest();
            (Some(engine), ingest, sources, Vec::new())
        }
    };
    let address = listener.local_addr()?;
    let mut sip_bound = None;
    let state = AppState {
        board,
        ingest: ingest.clone(),
        engine: engine.as_ref().map(Engine::monitor),
        relay: relay_stats.clone(),
        config: Arc::new(config.server.clone()),
        malformed: Arc::default(),
    };
    let stop = Stop::new();
    if let Some(sip) = config.server.sip {
        let (tx, rx) = std::sync::mpsc::channel();
        let source = SipSource::new(
            SipConfig {
                listen: sip,
                media_ip: config.server.media_ip,
                rtp_timeout_s: config.server.rtp_timeout_s,
                ..SipConfig::default()
            },
            state.malformed.clone(),
        )
        .on_bound(tx);
        listeners.push(Box::new(source));
        sip_bound = Some(rx);
    }
    let served = std::thread::scope(|scope| {
        // Configured sources (files, devices) and SIP run beside the WebSocket media.
        let sources_done = {
            let (ingest, stop) = (&ingest, stop.clone());
            scope.spawn(move || super::engine::run_sources(ingest, sources, &stop))
        };
        let listeners_done: Vec<_> = listeners
            .into_iter()
            .map(|listener| {
                let (ingest, stop) = (&ingest, stop.clone());
                scope.spawn(move || {
                    let failed = super::engine::run_sources(ingest, vec![listener], &stop);
                    for f in &failed {
                        tracing::error!("{f}; stopping the server");
                    }
                    stop.request();
                    failed
                })
            })
            .collect();
        if let Some(rx) = sip_bound.take() {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(addr) => eprintln!("vishguard serve: SIP on udp and tcp {addr}"),
                Err(_) => tracing::error!("the SIP server did not start (see the error below)"),
            }
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        match role {
            Role::All => {}
            Role::Ingest => eprintln!(
                "vishguard serve: ingest: calls go to NATS stream {} at {}",
                config.nats.audio_stream,
                config.nats.servers.join(",")
            ),
            Role::Worker => eprintln!(
                "vishguard serve: worker: calls from NATS stream {}, events to {}, at {}",
                config.nats.audio_stream,
                config.nats.events_stream,
                config.nats.servers.join(",")
            ),
        }
        eprintln!("vishguard serve: listening on {scheme}://{address}");
        let served = runtime.block_on(async {
            let listener = match tls {
                Some(acceptor) => server::HttpListener::Tls(server::tls::TlsListener::new(
                    listener,
                    acceptor,
                    state.malformed.clone(),
                )?),
                None => server::HttpListener::Plain(listener),
            };
            let (tx, mut rx) = tokio::sync::watch::channel(false);
            let stopping = {
                let stop = stop.clone();
                async move {
                    // A signal, or a listener that ended (it requested the stop itself).
                    tokio::select! {
                        _ = stop_signal() => {}
                        _ = async {
                            while !stop.requested() {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        } => {}
                    }
                    stop.request();
                    let _ = tx.send(true);
                }
            };
            tokio::spawn(stopping);
            let graceful = {
                let mut rx = rx.clone();
                async move {
                    let _ = rx.wait_for(|&s| s).await;
                }
            };
            let server = server::serve(listener, state, graceful);
            tokio::pin!(server);
            tokio::select! {
                result = &mut server => result,
                _ = async {
                    let _ = rx.wait_for(|&s| s).await;
                    tokio::time::sleep(Duration::from_secs(DRAIN_S)).await;
                } => {
                    tracing::warn!("connections still open {DRAIN_S} s after the stop; closing them");
                    Ok(())
                }
            }
        });
        stop.request();
        let mut failures = Vec::new();
        for done in listeners_done {
            failures.extend(done.join().unwrap_or_default());
        }
        failures.extend(sources_done.join().unwrap_or_default());
        (served, failures)
    });
    let (served, failures) = served;
    if let Some(engine) = engine {
        engine.shutdown();
    }
    if let Some(relay) = relay_ingest {
        relay.shutdown();
    }
    for f in &failures {
        eprintln!("error: {f}");
    }
    served.context("serving HTTP")?;
    Ok(if failures.is_empty() { 0 } else { 2 })
}

/// Ctrl-C, or SIGTERM from a service manager.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
