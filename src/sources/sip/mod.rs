//! A SIP recording server (RFC 3261 over UDP and TCP) that takes calls as SIPREC (RFC 7866)
//! sessions or plain INVITEs, and their audio as RTP: each accepted `m=` line is a party with
//! an RTP port of its own.
//!
//! - INVITE: the offer (`session.rs`) is answered 200 OK with every decodable audio stream
//!   `a=recvonly` on a port of ours; parties are named from the SIPREC metadata (who sends the
//!   stream with that `a=label`), else `caller` / `stream N`. Nothing decodable: 488. The
//!   engine full: 503 with Retry-After. A retransmitted INVITE gets the same answer; a
//!   re-INVITE or UPDATE on the dialog gets it again.
//! - BYE ends the call (481 for an unknown one); CANCEL, OPTIONS and ACK are answered as
//!   RFC 3261 says; other methods get 405.
//! - A call whose RTP stays silent for `rtp_timeout_s` ends as if a BYE had come.
//! - Garbage is counted by kind and answered 400 when it can be (it has the headers a response
//!   needs), otherwise dropped; it never touches another call.

pub mod message;
pub mod session;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};

use super::rtp::{is_rtcp, Codec, JitterBuffer, RtpPacket};
use super::{Ingest, IngestError, Ingress, Malformed, Source, Stop};
use crate::call::{short_id, AudioChunk, Call, CallId, Party, MAX_PARTIES};
use message::{param, SipMessage, StartLine};
use session::{read_offer, Offer};

/// How a SIP recording server listens.
#[derive(Debug, Clone)]
pub struct SipConfig {
    /// SIP over UDP and TCP, on the same address.
    pub listen: SocketAddr,
    /// The address RTP is received on and given in the SDP answer (default: `listen`'s, or
    /// 127.0.0.1 when that is unspecified).
    pub media_ip: Option<IpAddr>,
    /// A call whose RTP has been silent this long ends (seconds).
    pub rtp_timeout_s: f64,
    /// RTP packets held to put late ones back in order (20 ms each).
    pub jitter_packets: usize,
}

impl Default for SipConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 5060)),
            media_ip: None,
            rtp_timeout_s: 30.0,
            jitter_packets: 3,
        }
    }
}

pub struct SipSource {
    config: SipConfig,
    malformed: Arc<Malformed>,
    /// The bound address is sent here once listening (tests listen on port 0).
    bound: Option<std::sync::mpsc::Sender<SocketAddr>>,
}

impl SipSource {
    pub fn new(config: SipConfig, malformed: Arc<Malformed>) -> Self {
        Self {
            config,
            malformed,
            bound: None,
        }
    }

    /// Reports the address once bound.
    pub fn on_bound(mut self, tx: std::sync::mpsc::Sender<SocketAddr>) -> Self {
        self.bound = Some(tx);
        self
    }
}

/// How a reply leaves: back over UDP to the sender, or on the TCP connection it came on.
#[derive(Clone)]
enum Reply {
    Udp(Arc<UdpSocket>, SocketAddr),
    Tcp(mpsc::Sender<Vec<u8>>),
}

impl Reply {
    async fn send(&self, bytes: Vec<u8>) {
        match self {
            Reply::Udp(socket, to) => {
                let _ = socket.send_to(&bytes, to).await;
            }
            Reply::Tcp(tx) => {
                let _ = tx.send(bytes).await;
            }
        }
    }
}

/// One call the server holds.
struct SipCall {
    id: CallId,
    /// The caller's tag (the INVITE's From), which with the Call-ID and our `to_tag` names
    /// the dialog (RFC 3261 §12): requests that name another are not this call's.
    from_tag: Option<String>,
    to_tag: String,
    /// The 200 OK's SDP, given again to retransmissions and re-INVITEs.
    answer: String,
    /// Dropping it stops the call's RTP receivers (each flushes what it holds).
    stop_media: watch::Sender<bool>,
    media: Vec<tokio::task::JoinHandle<()>>,
}

struct Shared {
    config: SipConfig,
    media_ip: IpAddr,
    ingest: Arc<dyn Ingest>,
    malformed: Arc<Malformed>,
    calls: Mutex<HashMap<String, SipCall>>,
    next_id: AtomicU64,
}

impl Source for SipSource {
    fn describe(&self) -> String {
        format!("SIP on {}", self.config.listen)
    }

    fn run(self: Box<Self>, out: Arc<dyn Ingest>, stop: Stop) -> Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the SIP server's runtime")?;
        runtime.block_on(self.serve(out, stop))
    }
}

impl SipSource {
    async fn serve(self, ingest: Arc<dyn Ingest>, stop: Stop) -> Result<()> {
        let listen = self.config.listen;
        let udp = Arc::new(
            UdpSocket::bind(listen)
                .await
                .with_context(|| format!("cannot listen for SIP on udp {listen}"))?,
        );
        let bound = udp.local_addr()?;
        // TCP on the same port as UDP (port 0 picked one).
        let tcp = TcpListener::bind(bound)
            .await
            .with_context(|| format!("cannot listen for SIP on tcp {bound}"))?;
        let media_ip = self
            .config
            .media_ip
            .unwrap_or(if bound.ip().is_unspecified() {
                IpAddr::from([127, 0, 0, 1])
            } else {
                bound.ip()
            });
        tracing::info!(%bound, "SIP recording server listening (UDP and TCP)");
        if let Some(tx) = &self.bound {
            let _ = tx.send(bound);
        }
        let shared = Arc::new(Shared {
            config: self.config,
            media_ip,
            ingest,
            malformed: self.malformed,
            calls: Mutex::default(),
            next_id: AtomicU64::new(1),
        });
        {
            let shared = shared.clone();
            tokio::spawn(accept_tcp(tcp, shared));
        }
        let mut buf = vec![0u8; message::MAX_MESSAGE + 1];
        loop {
            if stop.requested() {
                break;
            }
            let received =
                tokio::time::timeout(Duration::from_millis(200), udp.recv_from(&mut buf)).await;
            let Ok(Ok((n, from))) = received else {
                continue;
            };
            let reply = Reply::Udp(udp.clone(), from);
            handle(&shared, &buf[..n], reply, from).await;
        }
        // Stopping: every call ends as if hung up.
        let ids: Vec<String> = shared.lock().keys().cloned().collect();
        for id in ids {
            end_call(&shared, &id).await;
        }
        Ok(())
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SipCall>> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn accept_tcp(listener: TcpListener, shared: Arc<Shared>) {
    while let Ok((stream, from)) = listener.accept().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let (mut read, mut write) = stream.into_split();
            let (tx, mut rx) = mpsc::channel::<Vec<u8>>(16);
            tokio::spawn(async move {
                while let Some(bytes) = rx.recv().await {
                    if write.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
            });
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; 8192];
            loop {
                // A peer that sends nothing for a minute is let go.
                let read = tokio::time::timeout(Duration::from_secs(60), read.read(&mut chunk));
                let n = match read.await {
                    Ok(Ok(n)) if n > 0 => n,
                    _ => break,
                };
                buf.extend_from_slice(&chunk[..n]);
                loop {
                    // CRLF keep-alives between messages (RFC 5626 §3.5.1).
                    let blank = buf.iter().take_while(|b| b.is_ascii_whitespace()).count();
                    buf.drain(..blank);
                    match message::message_len(&buf) {
                        Ok(Some(len)) => {
                            let msg: Vec<u8> = buf.drain(..len).collect();
                            handle(&shared, &msg, Reply::Tcp(tx.clone()), from).await;
                        }
                        Ok(None) => break,
                        Err(e) => {
                            shared.malformed.count(e.kind);
                            return; // a stream we cannot frame cannot go on
                        }
                    }
                }
            }
        });
    }
}

fn new_tag(shared: &Shared) -> String {
    let n = shared.next_id.fetch_add(1, Ordering::Relaxed);
    format!("vg{:x}{n}", std::process::id())
}

/// One message, from UDP or TCP.
async fn handle(shared: &Arc<Shared>, bytes: &[u8], reply: Reply, from: SocketAddr) {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return; // keep-alive
    }
    let msg = match SipMessage::parse(bytes) {
        Ok(m) => m,
        Err(e) => {
            shared.malformed.count(e.kind);
            tracing::debug!(%from, "{e}");
            // Answer 400 when the request is whole enough to be answered.
            if let Some(partial) = salvage(bytes) {
                reply
                    .send(partial.response(400, "Bad Request", &new_tag(shared), &[], None))
                    .await;
            }
            return;
        }
    };
    let Some(method) = msg.method().map(str::to_owned) else {
        return; // a response: we send no requests
    };
    let Some(call_id) = msg.header("Call-ID").map(str::to_owned) else {
        shared.malformed.count("sip_no_call_id");
        return;
    };
    if msg.header("CSeq").is_none() || msg.header("Via").is_none() {
        shared.malformed.count("sip_missing_headers");
        let r = msg.response(400, "Bad Request", &new_tag(shared), &[], None);
        reply.send(r).await;
        return;
    }
    let allow = (
        "Allow",
        "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE".to_owned(),
    );
    let response = match method.as_str() {
        "INVITE" | "UPDATE" => invite(shared, &msg, &call_id, from).await,
        "ACK" => return,
        "BYE" => {
            let ours = shared
                .lock()
                .get(&call_id)
                .map(|c| in_dialog(c, &msg, true));
            if ours == Some(false) {
                shared.malformed.count("sip_wrong_dialog");
            }
            if ours == Some(true) {
                end_call(shared, &call_id).await;
                msg.response(200, "OK", &new_tag(shared), &[], None)
            } else {
                msg.response(
                    481,
                    "Call/Transaction Does Not Exist",
                    &new_tag(shared),
                    &[],
                    None,
                )
            }
        }
        "CANCEL" => msg.response(200, "OK", &new_tag(shared), &[], None),
        "OPTIONS" => msg.response(200, "OK", &new_tag(shared), &[allow], None),
        _ => {
            shared.malformed.count("sip_unsupported_method");
            msg.response(405, "Method Not Allowed", &new_tag(shared), &[allow], None)
        }
    };
    reply.send(response).await;
}

/// A request that failed to parse, re-read leniently enough to answer it: its Via, From, To,
/// Call-ID and CSeq lines.
fn salvage(bytes: &[u8]) -> Option<SipMessage> {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.split("\r\n");
    let first = lines.next()?;
    if first.starts_with("SIP/") {
        return None;
    }
    let headers: Vec<(String, String)> = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .filter(|(n, _)| {
            ["Via", "From", "To", "Call-ID", "CSeq"]
                .iter()
                .any(|h| h.eq_ignore_ascii_case(n))
        })
        .collect();
    let has = |h: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(h));
    (has("Via") && has("Call-ID") && has("CSeq")).then(|| SipMessage {
        start: StartLine::Request {
            method: "UNKNOWN".into(),
            uri: String::new(),
        },
        headers,
        body: Vec::new(),
    })
}

async fn invite(
    shared: &Arc<Shared>,
    msg: &SipMessage,
    call_id: &str,
    from: SocketAddr,
) -> Vec<u8> {
    let existing = shared
        .lock()
        .get(call_id)
        .map(|c| (c.answer.clone(), c.to_tag.clone(), in_dialog(c, msg, false)));
    if let Some((answer, tag, ours)) = existing {
        if !ours {
            // Another peer, or another dialog, naming a call in progress: it gets neither the
            // call's RTP ports nor a say in it.
            shared.malformed.count("sip_wrong_dialog");
            let tag = new_tag(shared);
            if request_tag(msg, "To").is_some() {
                return msg.response(481, "Call/Transaction Does Not Exist", &tag, &[], None);
            }
            let problem = "the Call-ID belongs to another dialog in progress";
            return msg.response(400, "Bad Request", &tag, &[warning(problem)], None);
        }
        // A retransmission, a re-INVITE or an UPDATE: the session stays as it was answered.
        if let Ok(offer) = read_offer(msg) {
            if offer.metadata.is_some() {
                tracing::info!(call = %call_id, "new recording metadata (parties keep their names)");
            }
        }
        return msg.response(
            200,
            "OK",
            &tag,
            &[contact(shared)],
            Some(("application/sdp", &answer)),
        );
    }
    let tag = new_tag(shared);
    if msg.method() == Some("UPDATE") {
        return msg.response(481, "Call/Transaction Does Not Exist", &tag, &[], None);
    }
    if let Err(problem) = CallId::new(call_id).check() {
        shared.malformed.count("sip_bad_call_id");
        return msg.response(400, "Bad Request", &tag, &[warning(&problem)], None);
    }
    let offer = match read_offer(msg) {
        Ok(o) => o,
        Err(e) => {
            shared.malformed.count(e.kind);
            let (code, reason) = match e.kind {
                "sip_unsupported_body" => (415, "Unsupported Media Type"),
                "sip_no_sdp" | "sip_bad_sdp" => (488, "Not Acceptable Here"),
                _ => (400, "Bad Request"),
            };
            return msg.response(code, reason, &tag, &[warning(&e.message)], None);
        }
    };
    let audio_streams = offer.streams.iter().filter(|s| s.codec.is_some()).count();
    if audio_streams == 0 {
        shared.malformed.count("sip_no_usable_codec");
        let problem = "PCMU, PCMA or L16 audio only";
        return msg.response(
            488,
            "Not Acceptable Here",
            &tag,
            &[warning_coded(305, problem)],
            None,
        );
    }
    if audio_streams > MAX_PARTIES {
        shared.malformed.count("sip_too_many_streams");
        let problem = format!("{audio_streams} audio streams; at most {MAX_PARTIES} are heard");
        return msg.response(488, "Not Acceptable Here", &tag, &[warning(&problem)], None);
    }
    match open_call(shared, msg, call_id, &offer, from).await {
        Ok(answer) => {
            let r = msg.response(
                200,
                "OK",
                &tag,
                &[contact(shared)],
                Some(("application/sdp", &answer)),
            );
            if let Some(c) = shared.lock().get_mut(call_id) {
                c.to_tag = tag;
            }
            r
        }
        Err(refusal) => {
            tracing::warn!(call = %short_id(call_id), "call refused: {}", refusal.problem);
            let mut headers = vec![warning(&refusal.problem)];
            if refusal.code == 503 {
                headers.push(("Retry-After", "5".to_owned()));
            }
            msg.response(refusal.code, refusal.reason, &tag, &headers, None)
        }
    }
}

/// A Warning header (RFC 3261 §20.43, code 399: miscellaneous) carrying `problem`.
fn warning(problem: &str) -> (&'static str, String) {
    warning_coded(399, problem)
}

/// A Warning header with its `code` (§20.43: 305 incompatible media format, 399 other).
fn warning_coded(code: u16, problem: &str) -> (&'static str, String) {
    let text: String = problem
        .chars()
        .map(|c| if c == '"' { '\'' } else { c })
        .filter(|c| !c.is_control())
        .collect();
    ("Warning", format!("{code} vishguard \"{text}\""))
}

/// Why an INVITE was not taken: the final response's code and reason, and the problem its
/// Warning names. A peer's mistake is a 4xx, a full engine a 503, only our own fault a 500.
struct Refusal {
    code: u16,
    reason: &'static str,
    problem: String,
}

impl Refusal {
    fn ours(problem: String) -> Self {
        Self {
            code: 500,
            reason: "Server Internal Error",
            problem,
        }
    }
}

impl From<IngestError> for Refusal {
    fn from(e: IngestError) -> Self {
        let (code, reason) = match &e {
            IngestError::TooManyCalls(_) | IngestError::Stopped => (503, "Service Unavailable"),
            // What the engine refuses in an opening is the offer's: its streams' rates, the
            // recording metadata's size.
            IngestError::BadCall { .. } => (488, "Not Acceptable Here"),
            _ => (500, "Server Internal Error"),
        };
        let problem = match e {
            IngestError::BadCall { problem, .. } => problem,
            e => e.to_string(),
        };
        Self {
            code,
            reason,
            problem,
        }
    }
}

/// The `tag` parameter of the request's `header` (From or To).
fn request_tag(msg: &SipMessage, header: &str) -> Option<String> {
    msg.header(header).and_then(tag_of).map(str::to_owned)
}

/// Whether `msg` belongs to `call`'s dialog (RFC 3261 §12.2.2): the caller's From tag, and
/// our To tag where the request carries one. `need_to_tag`: a BYE must carry it (§15.1.1); an
/// INVITE without it is the first INVITE again (a retransmission, §17.2.1).
fn in_dialog(call: &SipCall, msg: &SipMessage, need_to_tag: bool) -> bool {
    if request_tag(msg, "From") != call.from_tag {
        return false;
    }
    match request_tag(msg, "To") {
        Some(to) => to == call.to_tag,
        None => !need_to_tag,
    }
}

fn contact(shared: &Shared) -> (&'static str, String) {
    (
        "Contact",
        format!("<sip:vishguard@{}>", shared.config.listen),
    )
}

/// Opens the call in the engine, binds a port per accepted stream, starts the receivers, and
/// returns the SDP answer.
async fn open_call(
    shared: &Arc<Shared>,
    msg: &SipMessage,
    call_id: &str,
    offer: &Offer,
    from: SocketAddr,
) -> Result<String, Refusal> {
    let refused = Refusal::ours;
    let mut sockets = Vec::new();
    let mut ports = Vec::new();
    let mut parties = Vec::new();
    let siprec = offer.metadata.is_some();
    for (i, stream) in offer.streams.iter().enumerate() {
        let Some((pt, codec)) = stream.codec else {
            ports.push(None);
            continue;
        };
        let socket = UdpSocket::bind((shared.media_ip, 0))
            .await
            .map_err(|e| refused(format!("no RTP port: {e}")))?;
        let port = socket
            .local_addr()
            .map_err(|e| refused(e.to_string()))?
            .port();
        ports.push(Some(port));
        let label = stream
            .label
            .as_ref()
            .and_then(|l| offer.metadata.as_ref()?.senders.get(l).cloned())
            .unwrap_or_else(|| match (&stream.label, siprec, i) {
                (Some(l), _, _) => format!("stream {l}"),
                (None, false, 0) => "caller".into(),
                (None, _, i) => format!("stream {i}"),
            });
        parties.push(Party {
            label,
            sample_rate: codec.rate(),
        });
        sockets.push((socket, pt, codec));
    }
    let mut metadata = BTreeMap::from([
        (
            "source".to_owned(),
            if siprec { "siprec" } else { "sip" }.to_owned(),
        ),
        ("sip_call_id".to_owned(), call_id.to_owned()),
        ("peer".to_owned(), from.to_string()),
    ]);
    for name in ["From", "To"] {
        if let Some(v) = msg.header(name) {
            metadata.insert(name.to_ascii_lowercase(), v.chars().take(256).collect());
        }
    }
    if let Some(m) = &offer.metadata {
        metadata.insert("participants".into(), m.participants.join(", "));
    }
    let id = CallId::new(call_id);
    shared.ingest.send(Ingress::Open(Call {
        id: id.clone(),
        parties,
        metadata,
    }))?;
    let session_id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let answer = session::answer(offer, shared.media_ip, &ports, session_id);
    let (stop_media, stopped) = watch::channel(false);
    let last_packet = Arc::new(Mutex::new(Instant::now()));
    let media = sockets
        .into_iter()
        .enumerate()
        .map(|(party, (socket, pt, codec))| {
            let receiver = Receiver {
                shared: shared.clone(),
                call: id.clone(),
                party,
                pt,
                codec,
                last_packet: last_packet.clone(),
            };
            tokio::spawn(receiver.run(socket, stopped.clone()))
        })
        .collect();
    shared.lock().insert(
        call_id.to_owned(),
        SipCall {
            id,
            from_tag: request_tag(msg, "From"),
            to_tag: String::new(),
            answer: answer.clone(),
            stop_media,
            media,
        },
    );
    tokio::spawn(watch_silence(
        shared.clone(),
        call_id.to_owned(),
        last_packet,
    ));
    Ok(answer)
}

/// Ends a call whose RTP has gone quiet (its BYE never came).
async fn watch_silence(shared: Arc<Shared>, call_id: String, last_packet: Arc<Mutex<Instant>>) {
    let timeout = Duration::from_secs_f64(shared.config.rtp_timeout_s.max(0.1));
    loop {
        tokio::time::sleep(timeout.min(Duration::from_secs(1))).await;
        if !shared.lock().contains_key(&call_id) {
            return;
        }
        let quiet = last_packet
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed();
        if quiet >= timeout {
            tracing::info!(call = %call_id, "no RTP for {:.0} s: the call is ended", quiet.as_secs_f64());
            shared.malformed.count("rtp_timeout");
            end_call(&shared, &call_id).await;
            return;
        }
    }
}

/// Stops the call's receivers (they hand over what they hold) and closes it in the engine.
async fn end_call(shared: &Shared, call_id: &str) {
    let Some(call) = shared.lock().remove(call_id) else {
        return;
    };
    let _ = call.stop_media.send(true);
    for task in call.media {
        let _ = task.await;
    }
    let _ = shared.ingest.send(Ingress::Close(call.id));
}

/// One stream's RTP receiver.
struct Receiver {
    shared: Arc<Shared>,
    call: CallId,
    party: usize,
    pt: u8,
    codec: Codec,
    last_packet: Arc<Mutex<Instant>>,
}

impl Receiver {
    async fn run(self, socket: UdpSocket, mut stopped: watch::Receiver<bool>) {
        let mut jitter = JitterBuffer::new(self.shared.config.jitter_packets, self.codec.rate());
        let mut buf = vec![0u8; 2048];
        loop {
            tokio::select! {
                _ = stopped.changed() => break,
                received = socket.recv_from(&mut buf) => {
                    let Ok((n, _)) = received else { break };
                    self.packet(&buf[..n], &mut jitter);
                }
            }
        }
        let flushed = jitter.flush();
        self.deliver(flushed);
        let s = &jitter.stats;
        if s.lost + s.late + s.duplicate > 0 {
            tracing::debug!(call = %self.call, party = self.party, lost = s.lost, late = s.late, duplicate = s.duplicate, "RTP stream ended");
        }
    }

    fn packet(&self, datagram: &[u8], jitter: &mut JitterBuffer) {
        if is_rtcp(datagram) {
            return;
        }
        let packet = match RtpPacket::parse(datagram) {
            Ok(p) => p,
            Err(e) => {
                self.shared.malformed.count(e.kind);
                return;
            }
        };
        if packet.payload_type != self.pt {
            // Comfort noise, DTMF events, or a stranger's codec.
            self.shared.malformed.count("rtp_unknown_payload_type");
            return;
        }
        if packet.payload.len() > 2 * 48_000 / 10 {
            self.shared.malformed.count("rtp_oversized");
            return;
        }
        *self.last_packet.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        let samples = self.codec.decode(packet.payload);
        let ready = jitter.push(packet.ssrc, packet.sequence, packet.timestamp, samples);
        self.deliver(ready);
    }

    fn deliver(&self, ready: Vec<super::rtp::Played>) {
        for played in ready {
            let chunk = AudioChunk {
                call: self.call.clone(),
                party: self.party,
                offset_s: played.offset_s,
                samples: played.samples,
            };
            match self.shared.ingest.send(Ingress::Audio(chunk)) {
                Ok(()) | Err(IngestError::QueueFull(_)) => {}
                Err(e) => {
                    tracing::debug!(call = %self.call, "RTP audio refused: {e}");
                    self.shared.malformed.count("rtp_refused");
                }
            }
        }
    }
}

/// The parameter of a `tag` (exported for tests of dialogs).
pub fn tag_of(header: &str) -> Option<&str> {
    param(header, "tag")
}
