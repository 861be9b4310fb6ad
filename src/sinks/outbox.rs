//! An outbox on disk from which a forwarding sink (the webhook, NATS) delivers events at least
//! once, in order, through a [`Transport`].
//!
//! The outbox folder holds:
//! - `outbox.jsonl`: every event, appended and synced before anyone is shown it (write-ahead:
//!   [`super::Durability::Forward`]); emptied once everything in it is settled;
//! - `cursor`: the byte offset of the first event not yet settled (written to a temporary
//!   file and renamed over, so it is always whole);
//! - `dead_letters.jsonl`: events the receiver refused for good, each with the status and
//!   the reason;
//! - `lock`: held by the one process that delivers from this outbox.
//!
//! Delivery: each event is sent with its key (an alert's `alert_id`, stable within a call and
//! distinct across calls; see [`event_key`]) for the receiver to dedupe on. A refusal for good
//! sends it to the dead letters and the next is sent (no head-of-line blocking); anything else
//! that fails is retried after a back-off that doubles from 0.25 s to 30 s with jitter (or the
//! receiver's `Retry-After`, up to 5 min), and the events after it wait, in order. A crash
//! between a send and the cursor's move re-sends that one event on the next start: at least
//! once, never lost.
//!
//! The outbox holds at most `max_pending` undelivered events; one beyond that goes straight
//! to the dead letters with the reason "outbox full", logged (once per stretch) and counted
//! (`sink_dead_letters` in `/metrics`), so the disk never fills silently.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::journal::{Appended, Journal};
use super::{Durability, Sink, SinkHealth};
use crate::call::{json_line, Event};

pub fn default_max_pending() -> u64 {
    100_000
}

const OUTBOX: &str = "outbox.jsonl";
const CURSOR: &str = "cursor";
const DEAD_LETTERS: &str = "dead_letters.jsonl";
const LOCK: &str = "lock";
/// Written by versions before the cursor: the ids of delivered alerts.
const LEGACY_DELIVERED: &str = "delivered.txt";

/// Longest the deliverer keeps trying after the engine closes (alerts left wait for the next
/// start).
const CLOSING_GRACE: Duration = Duration::from_secs(30);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The longest `Retry-After` a receiver is obeyed for.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// An outbox folder, opened by the one process that delivers from it.
pub struct Outbox {
    dir: PathBuf,
    log: Journal,
    dead: Journal,
    /// Byte offset in `outbox.jsonl` of the first alert not yet settled.
    cursor: u64,
    /// Bytes of `outbox.jsonl` that every durable sink has too: what may be sent.
    committed: u64,
    /// Alerts not yet settled (in the file after the cursor, or held for the disk).
    pending: u64,
    max_pending: u64,
    /// The outbox was full when the last alert came (to log once per stretch).
    full: bool,
    cursor_failing: bool,
    health: Arc<SinkHealth>,
    _lock: File,
}

impl Outbox {
    /// Opens (creating) the folder and takes its lock.
    ///
    /// Errors: the folder cannot be made or read; another process holds its lock.
    pub fn open(dir: &Path, max_pending: u64) -> Result<Self> {
        Self::open_labelled(dir, max_pending, ("outbox", "dead letters"))
    }

    /// [`Outbox::open`], naming the outbox and its dead letters in messages as `labels` say
    /// ("webhook outbox", "webhook dead letters").
    pub fn open_labelled(
        dir: &Path,
        max_pending: u64,
        labels: (&'static str, &'static str),
    ) -> Result<Self> {
        if dir.exists() && !dir.is_dir() {
            bail!(
                "the {} {} is not a folder (a file of that name is in the way)",
                labels.0,
                dir.display()
            );
        }
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot make the {} {}", labels.0, dir.display()))?;
        for name in [LOCK, CURSOR, OUTBOX, DEAD_LETTERS] {
            regular_or_absent(&dir.join(name))?;
        }
        let lock = crate::private_files::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK))
            .with_context(|| format!("cannot open the lock of the outbox {}", dir.display()))?;
        if let Err(e) = lock.try_lock() {
            bail!(
                "the {} {} is in use by another vishguard process ({e}); give each running \
                 process its own outbox (--webhook-outbox, --nats-outbox, or the sink's \
                 `outbox` / [nats] `events_outbox` key)",
                labels.0,
                dir.display()
            );
        }
        let log = Journal::open(&dir.join(OUTBOX), labels.0)?;
        let dead = Journal::open(&dir.join(DEAD_LETTERS), labels.1)?;
        let mut cursor = read_cursor(dir, log.synced_bytes())?;
        let pending = count_lines(log.path(), cursor, log.synced_bytes())?;
        if cursor > 0 && cursor == log.synced_bytes() {
            // All settled: start the file afresh (a crash after this leaves a cursor past the
            // end, which read_cursor takes as 0).
            cursor = 0;
        }
        let mut outbox = Self {
            dir: dir.to_path_buf(),
            committed: log.synced_bytes(),
            log,
            dead,
            cursor,
            pending,
            max_pending: max_pending.max(1),
            full: false,
            cursor_failing: false,
            health: Arc::default(),
            _lock: lock,
        };
        if outbox.cursor == 0 && outbox.pending == 0 && outbox.log.synced_bytes() > 0 {
            outbox.compact();
        }
        outbox.save_cursor();
        if !outbox.cursor_failing {
            let _ = std::fs::remove_file(dir.join(LEGACY_DELIVERED));
        }
        outbox.note();
        Ok(outbox)
    }

    fn note(&self) {
        SinkHealth::set(&self.health.outbox_pending, self.pending);
        SinkHealth::set(
            &self.health.held,
            (self.log.held() + self.dead.held()) as u64,
        );
        SinkHealth::set(&self.health.lost, self.log.dropped() + self.dead.dropped());
    }

    /// Undelivered alerts.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// Appends an alert line (a versioned alert event), or dead-letters it when the outbox
    /// holds `max_pending` already.
    fn push(&mut self, line: &str) -> Appended {
        if self.pending >= self.max_pending {
            if !self.full {
                tracing::error!(
                    "outbox {} is full ({} undelivered alerts, the max_pending bound): \
                     new alerts go to the dead letters until the receiver catches up",
                    self.dir.display(),
                    self.pending
                );
            }
            self.full = true;
            let why = format!("outbox full: {} undelivered alerts", self.pending);
            return self.dead_letter(line, None, &why);
        }
        self.full = false;
        let appended = self.log.append(line);
        if appended != Appended::Dropped {
            self.pending += 1;
        }
        self.note();
        appended
    }

    fn dead_letter(&mut self, line: &str, status: Option<u16>, reason: &str) -> Appended {
        let alert: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|_| serde_json::Value::String(line.into()));
        let letter = serde_json::json!({
            "failed_at": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            "status": status,
            "reason": reason,
            "alert": alert,
        });
        let appended = self.dead.append(&letter.to_string());
        SinkHealth::add(&self.health.dead_lettered, 1);
        self.note();
        appended
    }

    /// The next alert that may be sent: its line and the offset after it.
    /// The next line that may be sent, the offset after it, and whether it was valid UTF-8
    /// (a line that is not came from damage, not from us; it is set aside, not sent).
    fn next(&mut self) -> Result<Option<(String, u64, bool)>> {
        if self.cursor >= self.committed {
            if self.cursor == self.log.synced_bytes()
                && self.log.held() == 0
                && self.log.synced_bytes() > 0
            {
                self.compact();
            }
            return Ok(None);
        }
        let mut f = File::open(self.log.path())?;
        f.seek(SeekFrom::Start(self.cursor))?;
        let mut line = Vec::new();
        BufReader::new(f.take(self.committed - self.cursor)).read_until(b'\n', &mut line)?;
        let end = self.cursor + line.len() as u64;
        if line.last() != Some(&b'\n') {
            bail!("the outbox ends in a torn line at byte {}", self.cursor);
        }
        line.pop();
        Ok(Some(match String::from_utf8(line) {
            Ok(text) => (text, end, true),
            Err(e) => (
                String::from_utf8_lossy(e.as_bytes()).into_owned(),
                end,
                false,
            ),
        }))
    }

    /// The alert before `end` is settled (delivered or dead-lettered).
    fn settle(&mut self, end: u64) {
        self.cursor = end;
        self.pending = self.pending.saturating_sub(1);
        self.save_cursor();
        self.note();
    }

    /// Everything in the file is settled: empty it, then the cursor (a crash in between leaves
    /// a cursor past the end, read as 0).
    fn compact(&mut self) {
        match self.log.clear() {
            Ok(()) => {
                self.cursor = 0;
                self.committed = 0;
                self.save_cursor();
            }
            Err(e) => tracing::warn!("outbox {}: not emptied: {e}", self.dir.display()),
        }
    }

    fn save_cursor(&mut self) {
        let tmp = self.dir.join(format!("{CURSOR}.tmp"));
        let saved = (|| {
            let mut f = crate::private_files::options()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&tmp)?;
            f.write_all(self.cursor.to_string().as_bytes())?;
            f.sync_data()?;
            std::fs::rename(&tmp, self.dir.join(CURSOR))
        })();
        match saved {
            Ok(()) if self.cursor_failing => {
                self.cursor_failing = false;
                tracing::warn!("outbox {}: cursor saved again", self.dir.display());
            }
            Ok(()) => {}
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                if !self.cursor_failing {
                    tracing::error!(
                        "outbox {}: delivery cursor not saved ({e}); after a restart \
                         alerts delivered since are sent again (receivers dedupe on alert_id)",
                        self.dir.display()
                    );
                }
                self.cursor_failing = true;
            }
        }
    }
}

/// The cursor on disk for an outbox file of `len` bytes; 0 when there is none, it is past the
/// end (a crash while emptying the outbox) or it is not at the start of a line (damaged:
/// everything is sent again).
fn read_cursor(dir: &Path, len: u64) -> Result<u64> {
    let outbox = dir.join(OUTBOX);
    regular_or_absent(&dir.join(CURSOR))?;
    let text = match std::fs::read_to_string(dir.join(CURSOR)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return legacy_cursor(dir, len);
        }
        Err(e) => return Err(e).context("cannot read the outbox cursor"),
    };
    let cursor = match text.trim().parse::<u64>() {
        Ok(c) if c <= len => c,
        Ok(c) => {
            // Past the end: a crash while the outbox was being emptied leaves that, and so
            // does damage; either way everything in it is sent again.
            if len > 0 {
                tracing::warn!(
                    "outbox {}: the cursor ({c}) is past the end ({len} bytes); every event in \
                     it is sent again",
                    dir.display()
                );
            }
            0
        }
        Err(_) => {
            tracing::warn!(
                "outbox {}: damaged cursor {text:?}; every event in it is sent again",
                dir.display()
            );
            0
        }
    };
    if cursor > 0 && read_range(&outbox, cursor - 1, cursor)? != b"\n" {
        tracing::warn!(
            "outbox {}: the cursor is not at the start of a line; every event in it is sent \
             again",
            dir.display()
        );
        return Ok(0);
    }
    Ok(cursor)
}

/// Outboxes of earlier versions listed delivered ids: the cursor goes after the longest run
/// of delivered alerts at the start; the rest is sent (again, at worst).
fn legacy_cursor(dir: &Path, len: u64) -> Result<u64> {
    let Ok(delivered) = std::fs::read_to_string(dir.join(LEGACY_DELIVERED)) else {
        return Ok(0);
    };
    let delivered: std::collections::HashSet<&str> = delivered.lines().collect();
    let mut cursor = 0;
    for line in read_range(&dir.join(OUTBOX), 0, len)?.split_inclusive(|&b| b == b'\n') {
        let id = serde_json::from_slice::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("alert_id")?.as_str().map(str::to_owned));
        if !id.is_some_and(|id| delivered.contains(id.as_str())) {
            break;
        }
        cursor += line.len() as u64;
    }
    Ok(cursor)
}

/// The '\n's in bytes `from..to` of a file, read a piece at a time (an outbox can hold
/// 100,000 alerts).
fn count_lines(path: &Path, from: u64, to: u64) -> Result<u64> {
    if from >= to {
        return Ok(0);
    }
    let mut f = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    f.seek(SeekFrom::Start(from))?;
    let mut reader = BufReader::new(f.take(to - from));
    let mut n = 0;
    loop {
        let piece = reader.fill_buf()?;
        if piece.is_empty() {
            return Ok(n);
        }
        n += piece.iter().filter(|&&b| b == b'\n').count() as u64;
        let used = piece.len();
        reader.consume(used);
    }
}

/// An error unless `path` is a regular file or does not exist (a FIFO or a device would
/// block or never end).
fn regular_or_absent(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => bail!(
            "{} is not a regular file (a folder, a FIFO or a device): move it away",
            path.display()
        ),
        _ => Ok(()),
    }
}

fn read_range(path: &Path, from: u64, to: u64) -> Result<Vec<u8>> {
    if from >= to {
        return Ok(Vec::new());
    }
    let mut f = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    f.seek(SeekFrom::Start(from))?;
    let mut out = Vec::new();
    f.take(to.saturating_sub(from)).read_to_end(&mut out)?;
    Ok(out)
}

fn lock(outbox: &Mutex<Outbox>) -> MutexGuard<'_, Outbox> {
    outbox.lock().unwrap_or_else(|e| e.into_inner())
}

/// A sink that keeps the events it takes in an outbox and delivers them through a
/// [`Transport`] on a thread of its own (see the module's text).
pub struct OutboxSink {
    what: String,
    takes: fn(&Event) -> bool,
    outbox: Arc<Mutex<Outbox>>,
    health: Arc<SinkHealth>,
    wake: Sender<()>,
    deliverer: Option<std::thread::JoinHandle<()>>,
}

impl OutboxSink {
    /// Opens the outbox (see [`Outbox::open`]) and starts delivering, first what an earlier
    /// run left. `takes` picks the events that go in.
    pub fn start(
        dir: &Path,
        max_pending: u64,
        takes: fn(&Event) -> bool,
        mut transport: Box<dyn Transport>,
    ) -> Result<Self> {
        let outbox = Outbox::open_labelled(dir, max_pending, transport.labels())?;
        let health = outbox.health.clone();
        let outbox = Arc::new(Mutex::new(outbox));
        let (wake, woken) = channel();
        let what = transport.describe();
        let deliverer = {
            let outbox = outbox.clone();
            std::thread::Builder::new()
                .name("outbox".into())
                .spawn(move || {
                    deliver_loop(transport.as_mut(), &outbox, &woken, None);
                })?
        };
        Ok(Self {
            what,
            takes,
            outbox,
            health,
            wake,
            deliverer: Some(deliverer),
        })
    }
}

impl Sink for OutboxSink {
    fn describe(&self) -> String {
        self.what.clone()
    }

    fn write(&mut self, event: &Event) -> Result<()> {
        if (self.takes)(event) && lock(&self.outbox).push(&json_line(event)) == Appended::Dropped {
            bail!("event lost: memory holds too many events the disk refused");
        }
        Ok(())
    }

    fn durability(&self) -> Durability {
        Durability::Forward
    }

    fn commit(&mut self) {
        let mut o = lock(&self.outbox);
        o.committed = o.log.synced_bytes();
        drop(o);
        let _ = self.wake.send(());
    }

    fn idle(&mut self) {
        let mut o = lock(&self.outbox);
        if o.log.held() + o.dead.held() > 0 {
            o.log.retry();
            o.dead.retry();
            o.committed = o.log.synced_bytes();
            o.note();
            drop(o);
            let _ = self.wake.send(());
        }
    }

    fn health(&self) -> Option<Arc<SinkHealth>> {
        Some(self.health.clone())
    }

    /// Gives the deliverer up to 30 s to empty the outbox; what is left is sent on the next
    /// start. Events the disk never took are printed on standard error.
    fn close(&mut self) -> Result<()> {
        {
            let mut o = lock(&self.outbox);
            o.log.last_chance();
            o.dead.last_chance();
            o.committed = o.log.synced_bytes();
        }
        let (tx, _) = channel();
        drop(std::mem::replace(&mut self.wake, tx));
        if let Some(d) = self.deliverer.take() {
            let _ = d.join();
        }
        let mut o = lock(&self.outbox);
        let held = o.log.give_up_held() + o.dead.give_up_held();
        if held > 0 {
            SinkHealth::add(&self.health.lost, held as u64);
            bail!(
                "{held} event(s) never reached the outbox {} (printed above on standard error)",
                o.dir.display()
            );
        }
        if o.pending > 0 {
            tracing::warn!(
                "{}: {} event(s) wait in the outbox {}; they are sent on the next start",
                self.what,
                o.pending,
                o.dir.display()
            );
        }
        Ok(())
    }
}

/// What one send came to.
pub enum Sent {
    Delivered,
    /// The receiver (or the client, for a request that can never be sent) refused it for
    /// good: (the status, if the receiver gave one; the reason).
    Refused(Option<u16>, String),
    /// Worth retrying, after at least this long.
    Later(String, Option<Duration>),
}

/// How an outbox's events leave: one blocking send at a time, in order.
pub trait Transport: Send {
    /// For logs: "webhook http://...", "NATS stream VISHGUARD_EVENTS".
    fn describe(&self) -> String;
    /// Sends one event (a versioned JSON line); `key` is [`event_key`]'s.
    fn send(&mut self, line: &str, key: Option<&str>) -> Sent;
    /// How messages name the outbox and its dead letters.
    fn labels(&self) -> (&'static str, &'static str) {
        ("outbox", "dead letters")
    }
}

/// A key as an HTTP or NATS header value takes it: printable ASCII (spaces included) kept,
/// every other byte (UTF-8 of a Mandarin pattern or file name, controls) and `%` itself
/// percent-encoded, RFC 3986 style. Header values must be visible ASCII and spaces (RFC 9110
/// 5.5); unencoded, a Mandarin alert id was refused by the HTTP client before it was sent,
/// and blocked every later alert.
pub fn header_safe(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if (b.is_ascii_graphic() || b == b' ') && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The id a receiver dedupes an event on: an alert's `alert_id`; `<call id>/call_started`,
/// `<call id>/call_ended`, `<call id>/<party>/<start_s>/transcript`.
pub fn event_key(line: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    match v.get("event")?.as_str()? {
        "alert" => Some(v.get("alert_id")?.as_str()?.to_owned()),
        "call_started" => Some(format!("{}/call_started", v.get("id")?.as_str()?)),
        "call_ended" => Some(format!("{}/call_ended", v.get("call_id")?.as_str()?)),
        "transcript" => Some(format!(
            "{}/{}/{:.3}/transcript",
            v.get("call_id")?.as_str()?,
            v.get("party")?.as_u64()?,
            v.get("start_s")?.as_f64()?
        )),
        _ => None,
    }
}

/// Sends events from the outbox as they are committed, until `woken` disconnects (then for
/// up to [`CLOSING_GRACE`] more) or, when given, `until`.
fn deliver_loop(
    transport: &mut dyn Transport,
    outbox: &Mutex<Outbox>,
    woken: &Receiver<()>,
    until: Option<Instant>,
) -> Option<String> {
    let what = transport.describe();
    let mut backoff = FIRST_BACKOFF;
    let mut failures = 0u32;
    let mut deadline = until;
    loop {
        let next = lock(outbox).next();
        let (line, end, utf8) = match next {
            Ok(Some(n)) => n,
            Ok(None) => {
                if deadline.is_some() {
                    return None;
                }
                match woken.recv_timeout(Duration::from_secs(3600)) {
                    Ok(()) | Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => {
                        deadline = Some(Instant::now() + CLOSING_GRACE);
                        continue;
                    }
                }
            }
            Err(e) => {
                tracing::error!("{what}: outbox not readable: {e:#}");
                return Some(format!("outbox not readable: {e:#}"));
            }
        };
        let is_event = utf8
            && serde_json::from_str::<serde_json::Value>(&line)
                .is_ok_and(|v| v.get("event").is_some_and(|e| e.is_string()));
        if !is_event {
            // A damaged outbox (a crash cannot do this: lines are written whole): keep the
            // line aside, do not send it as an event.
            tracing::warn!(
                "{what}: a line of the outbox is not an event; it goes to the dead letters"
            );
            let mut o = lock(outbox);
            o.dead_letter(
                &line,
                None,
                "not an event (a damaged outbox line); not sent",
            );
            o.settle(end);
            continue;
        }
        let key = event_key(&line).map(|k| header_safe(&k));
        match transport.send(&line, key.as_deref()) {
            Sent::Delivered => {
                lock(outbox).settle(end);
                if failures > 0 {
                    tracing::warn!("{what}: delivering again after {failures} failed tries");
                }
                failures = 0;
                backoff = FIRST_BACKOFF;
            }
            Sent::Refused(code, reason) => {
                tracing::warn!("{what} refused an event ({reason}); it goes to the dead letters");
                let mut o = lock(outbox);
                o.dead_letter(&line, code, &reason);
                o.settle(end);
                backoff = FIRST_BACKOFF;
            }
            Sent::Later(why, retry_after) => {
                let last_failure = Some(why.clone());
                // Equal jitter: half the back-off fixed, half random, so many senders that
                // failed together do not retry together.
                let jittered = backoff / 2 + backoff.mul_f64(rand::random::<f64>() / 2.0);
                let wait = retry_after.map_or(jittered, |r| r.max(jittered));
                failures += 1;
                if failures == 1 {
                    tracing::warn!(
                        "{what}: not delivered ({why}); retrying with back-off (0.25 s \
                         doubling to 30 s), the alerts after it waiting in order"
                    );
                } else {
                    tracing::debug!(
                        "{what}: not delivered ({why}); retrying in {:.2} s",
                        wait.as_secs_f64()
                    );
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                // Wakes do not cut the wait short (they would defeat the back-off); closing
                // (a disconnect) bounds it by the grace period.
                let resume = Instant::now() + wait;
                loop {
                    let now = Instant::now();
                    if deadline.is_some_and(|d| now >= d) {
                        // What is left is reported by the caller (close, replay).
                        return last_failure;
                    }
                    let Some(left) = resume.checked_duration_since(now) else {
                        break;
                    };
                    if let Some(d) = deadline {
                        std::thread::sleep(left.min(d - now));
                        continue;
                    }
                    match woken.recv_timeout(left) {
                        Ok(()) => {}
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => {
                            deadline = Some(now + CLOSING_GRACE);
                        }
                    }
                }
            }
        }
    }
}

/// What `vishguard alerts` reads and does with an outbox.
pub mod admin {
    use super::*;

    /// The undelivered alerts (JSON lines, oldest first). Reads only: a running process may
    /// be delivering from the outbox meanwhile.
    pub fn pending(dir: &Path) -> Result<Vec<String>> {
        if !dir.is_dir() {
            bail!("no webhook outbox at {}", dir.display());
        }
        let len = file_len(&dir.join(OUTBOX))?;
        let cursor = read_cursor(dir, len)?;
        Ok(lines(&read_range(&dir.join(OUTBOX), cursor, len)?))
    }

    /// The dead letters (JSON lines: failed_at, status, reason, alert). Reads only.
    pub fn dead_letters(dir: &Path) -> Result<Vec<String>> {
        if !dir.is_dir() {
            bail!("no webhook outbox at {}", dir.display());
        }
        let path = dir.join(DEAD_LETTERS);
        Ok(lines(&read_range(&path, 0, file_len(&path)?)?))
    }

    fn file_len(path: &Path) -> Result<u64> {
        match std::fs::metadata(path) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Whole lines only (one being written has no '\n' yet).
    fn lines(bytes: &[u8]) -> Vec<String> {
        let whole = bytes
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(&bytes[..0], |i| &bytes[..=i]);
        String::from_utf8_lossy(whole)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Settles everything pending without sending it; returns how many. For a relay worker
    /// at start: the calls those events belong to were never acknowledged, so another worker
    /// hears them again and sends what is missing; sending these late could duplicate what
    /// it sent (past the broker's duplicate window).
    pub fn discard_pending(dir: &Path) -> Result<u64> {
        if !dir.exists() {
            return Ok(0);
        }
        let mut o = Outbox::open(dir, u64::MAX)?;
        let n = o.pending;
        if n > 0 {
            o.cursor = o.log.synced_bytes();
            o.pending = 0;
            o.save_cursor();
        }
        Ok(n)
    }

    /// Puts the dead letters' events back at the end of the outbox and empties the dead
    /// letters. Returns how many. Every letter is checked first: one that is not a dead
    /// letter of an event is an error naming its line, and nothing changes. (A crash in
    /// between leaves them in both: sent once more, receivers dedupe.)
    pub fn requeue_dead_letters(dir: &Path) -> Result<usize> {
        if !dir.is_dir() {
            bail!("no outbox at {}", dir.display());
        }
        let mut o = Outbox::open(dir, u64::MAX)?;
        let path = o.dead.path().to_path_buf();
        let letters = lines(&read_range(&path, 0, o.dead.synced_bytes())?);
        let mut events = Vec::with_capacity(letters.len());
        for (i, l) in letters.iter().enumerate() {
            let event = serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get("alert").cloned())
                .filter(|a| a.get("event").is_some_and(|e| e.is_string()));
            match event {
                Some(e) => events.push(e.to_string()),
                None => bail!(
                    "{} line {}: not a dead letter of an event (nothing was put back): {}",
                    path.display(),
                    i + 1,
                    l.chars().take(80).collect::<String>()
                ),
            }
        }
        for e in &events {
            if o.push(e) != Appended::Written {
                bail!("the outbox {} cannot be written", dir.display());
            }
        }
        o.dead.clear()?;
        Ok(events.len())
    }

    /// What [`replay`] did.
    pub struct Replayed {
        /// Delivered, or refused for good (now dead letters).
        pub settled: u64,
        pub left: u64,
        /// Why the last send failed, when some are left.
        pub last_failure: Option<String>,
    }

    /// Sends the undelivered events now, stopping at the first transient failure that
    /// outlasts `timeout`.
    pub fn replay(
        dir: &Path,
        transport: &mut dyn Transport,
        timeout: Duration,
    ) -> Result<Replayed> {
        if !dir.is_dir() {
            bail!("no outbox at {}", dir.display());
        }
        let o = Outbox::open(dir, u64::MAX)?;
        let before = o.pending;
        let outbox = Mutex::new(o);
        let (_keep, woken) = channel();
        let last_failure = deliver_loop(transport, &outbox, &woken, Some(Instant::now() + timeout));
        let left = lock(&outbox).pending;
        Ok(Replayed {
            settled: before.saturating_sub(left),
            left,
            last_failure: if left > 0 { last_failure } else { None },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert_line(id: &str) -> String {
        format!("{{\"schema_version\":1,\"event\":\"alert\",\"alert_id\":\"{id}\"}}")
    }

    #[test]
    fn the_cursor_survives_a_restart_and_the_outbox_empties_once_settled() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut o = Outbox::open(dir.path(), 10).unwrap();
            for id in ["a", "b", "c"] {
                o.push(&alert_line(id));
            }
            o.committed = o.log.synced_bytes();
            let (line, end, _) = o.next().unwrap().unwrap();
            assert!(line.contains("\"a\""));
            o.settle(end);
        }
        let mut o = Outbox::open(dir.path(), 10).unwrap();
        assert_eq!(o.pending(), 2);
        for id in ["b", "c"] {
            let (line, end, _) = o.next().unwrap().unwrap();
            assert!(line.contains(&format!("\"{id}\"")), "{line}");
            o.settle(end);
        }
        assert!(o.next().unwrap().is_none());
        assert_eq!(o.log.synced_bytes(), 0, "emptied once all settled");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(CURSOR)).unwrap(),
            "0"
        );
    }

    #[test]
    fn a_second_process_cannot_deliver_from_the_same_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Outbox::open(dir.path(), 10).unwrap();
        let e = Outbox::open(dir.path(), 10).err().unwrap().to_string();
        assert!(e.contains("in use by another vishguard process"), "{e}");
    }

    #[test]
    fn a_full_outbox_dead_letters_new_alerts_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(dir.path(), 2).unwrap();
        for id in ["a", "b", "c"] {
            o.push(&alert_line(id));
        }
        assert_eq!(o.pending(), 2);
        drop(o);
        let dead = admin::dead_letters(dir.path()).unwrap();
        assert_eq!(dead.len(), 1);
        let v: serde_json::Value = serde_json::from_str(&dead[0]).unwrap();
        assert_eq!(v["alert"]["alert_id"], "c");
        assert!(v["reason"].as_str().unwrap().starts_with("outbox full"));
        assert_eq!(admin::requeue_dead_letters(dir.path()).unwrap(), 1);
        assert_eq!(admin::pending(dir.path()).unwrap().len(), 3);
        assert!(admin::dead_letters(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn an_outbox_of_the_old_layout_resends_only_what_was_not_delivered_first() {
        let dir = tempfile::tempdir().unwrap();
        let lines: String = ["a", "b", "c"]
            .iter()
            .map(|id| alert_line(id) + "\n")
            .collect();
        std::fs::write(dir.path().join(OUTBOX), lines).unwrap();
        std::fs::write(dir.path().join(LEGACY_DELIVERED), "a\nc\n").unwrap();
        let pending = admin::pending(dir.path()).unwrap();
        assert_eq!(pending.len(), 2);
        assert!(pending[0].contains("\"b\""));
        assert!(
            dir.path().join(LEGACY_DELIVERED).exists(),
            "listing only reads"
        );
        assert_eq!(Outbox::open(dir.path(), 10).unwrap().pending(), 2);
        assert!(
            !dir.path().join(LEGACY_DELIVERED).exists(),
            "the cursor replaces it"
        );
        assert_eq!(admin::pending(dir.path()).unwrap().len(), 2);
    }

    /// Records what it is given; answers Delivered.
    struct Recorder(Vec<(String, Option<String>)>);

    impl Transport for Recorder {
        fn describe(&self) -> String {
            "recorder".into()
        }
        fn send(&mut self, line: &str, key: Option<&str>) -> Sent {
            self.0.push((line.to_owned(), key.map(str::to_owned)));
            Sent::Delivered
        }
    }

    #[test]
    fn keys_go_out_header_safe_and_damaged_lines_are_set_aside_not_sent() {
        assert_eq!(
            header_safe("c1/0/impersonation/公安局 a%b"),
            "c1/0/impersonation/%E5%85%AC%E5%AE%89%E5%B1%80 a%25b"
        );
        let dir = tempfile::tempdir().unwrap();
        {
            let mut o = Outbox::open(dir.path(), 10).unwrap();
            o.push(&alert_line("通话-1/0/x/要你的验证码"));
            o.push("hello world");
            o.push("{\"foo\":1}");
            o.push(&alert_line("b"));
        }
        // An event line with a byte that is not UTF-8 (damage: we write only UTF-8).
        let mut raw = std::fs::read(dir.path().join(OUTBOX)).unwrap();
        raw.extend_from_slice(b"{\"event\":\"alert\",\"alert_id\":\"x\xff\"}\n");
        std::fs::write(dir.path().join(OUTBOX), raw).unwrap();
        let mut r = Recorder(Vec::new());
        let done = admin::replay(dir.path(), &mut r, Duration::from_secs(5)).unwrap();
        assert_eq!((done.settled, done.left), (5, 0));
        assert_eq!(r.0.len(), 2, "only the two events were sent: {:?}", r.0);
        assert!(r.0[0].1.as_deref().unwrap().is_ascii());
        let dead = admin::dead_letters(dir.path()).unwrap();
        assert_eq!(dead.len(), 3);
        assert!(dead[0].contains("not an event"), "{}", dead[0]);
        // Those letters are not events: putting them back is refused, and changes nothing.
        let e = admin::requeue_dead_letters(dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1: not a dead letter of an event"), "{e}");
        assert_eq!(admin::dead_letters(dir.path()).unwrap().len(), 3);
        assert!(admin::pending(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn a_fifo_in_the_outbox_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join(CURSOR);
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let e = format!("{:#}", Outbox::open(dir.path(), 10).err().unwrap());
        assert!(e.contains("not a regular file"), "{e}");
        let e = format!("{:#}", admin::pending(dir.path()).unwrap_err());
        assert!(e.contains("not a regular file"), "{e}");
    }
}
