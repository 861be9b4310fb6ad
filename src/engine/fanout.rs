//! Events to every sink, each through its own bounded queue and on its own thread, so a sink
//! that blocks (an fsync, a dead webhook, a terminal nobody reads) never holds up the
//! recognisers or another sink. A full queue drops and counts (`Overflow::Drop`) or spills to a
//! file on disk that the sink reads back in order when it catches up (`Overflow::Spill`).
//!
//! Write-ahead: when there are durable sinks (alert files, webhook outboxes), events first go
//! through one "durable" stage: a thread that writes each event to every durable sink, in
//! [`Durability`] order (records, then outboxes), commits it, and only then puts it in the
//! queues of the sinks that show it. An alert a person or a receiver has seen is on disk.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use anyhow::{Context, Result};

use super::SinkSpec;
use crate::call::{json_line, Event, Versioned};
use crate::sinks::{Durability, Overflow, QueueConfig, Sink, SinkHealth};

/// How one sink fared.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SinkReport {
    pub sink: String,
    /// Events handed to the sink.
    pub delivered: u64,
    /// Events dropped because its queue was full (`Overflow::Drop`, or a spill file that could
    /// not be written).
    pub dropped: u64,
    /// Events that waited on disk.
    pub spilled: u64,
    /// Events the sink failed to write.
    pub errors: u64,
    /// Durable sinks: alerts held in memory because the disk refused them (now).
    pub held: u64,
    /// Durable sinks: alerts lost (memory full of held ones, or the disk never came back).
    pub lost: u64,
    /// Webhooks: alerts the receiver refused for good (or that found the outbox full), in the
    /// dead letters.
    pub dead_lettered: u64,
    /// Webhooks: alerts in the outbox not yet delivered (now).
    pub outbox_pending: u64,
}

impl SinkReport {
    fn with_health(mut self, health: Option<&SinkHealth>) -> Self {
        if let Some(h) = health {
            self.held = SinkHealth::get(&h.held);
            self.lost = SinkHealth::get(&h.lost);
            self.dead_lettered = SinkHealth::get(&h.dead_lettered);
            self.outbox_pending = SinkHealth::get(&h.outbox_pending);
        }
        self
    }
}

/// Events beyond the memory bound, as versioned JSON lines, read back in order.
struct Spill {
    path: PathBuf,
    writer: File,
    reader: BufReader<File>,
    /// Events written and not yet read back.
    pending: usize,
}

impl Spill {
    fn create(path: PathBuf) -> std::io::Result<Self> {
        let writer = crate::private_files::options()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)?;
        let reader = BufReader::new(File::open(&path)?);
        Ok(Self {
            path,
            writer,
            reader,
            pending: 0,
        })
    }

    fn append(&mut self, event: &Event) -> std::io::Result<()> {
        let line = json_line(event) + "\n";
        self.writer.write_all(line.as_bytes())?;
        self.pending += 1;
        Ok(())
    }

    /// Up to `n` of the oldest events; returns how many lines could not be read back.
    fn read(&mut self, n: usize, into: &mut VecDeque<Arc<Event>>) -> std::io::Result<u64> {
        let mut unreadable = 0;
        let mut line = String::new();
        for _ in 0..n.min(self.pending) {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                // Written lines are always whole; a short read means the file was cut.
                self.pending = 0;
                break;
            }
            self.pending -= 1;
            match serde_json::from_str::<Versioned<Event>>(&line) {
                Ok(v) => into.push_back(Arc::new(v.record)),
                Err(e) => {
                    unreadable += 1;
                    tracing::error!("{}: unreadable spilled event: {e}", self.path.display())
                }
            }
        }
        Ok(unreadable)
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[derive(Default)]
struct QueueState {
    memory: VecDeque<Arc<Event>>,
    spill: Option<Spill>,
    closed: bool,
    report: SinkReport,
}

struct SinkQueue {
    config: QueueConfig,
    spill_path: PathBuf,
    state: Mutex<QueueState>,
    ready: Condvar,
}

impl SinkQueue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        super::lock(&self.state)
    }

    /// Never blocks on the sink: memory, then disk (or a drop).
    fn push(&self, event: &Arc<Event>) {
        let mut s = self.lock();
        if s.closed {
            s.report.dropped += 1;
            return;
        }
        let spilling = s.spill.is_some();
        if !spilling && s.memory.len() < self.config.capacity {
            s.memory.push_back(event.clone());
            self.ready.notify_one();
            return;
        }
        if self.config.overflow == Overflow::Spill {
            if s.spill.is_none() {
                match Spill::create(self.spill_path.clone()) {
                    Ok(f) => s.spill = Some(f),
                    Err(e) => tracing::error!(
                        "{}: cannot spill the full queue of sink {}: {e}",
                        self.spill_path.display(),
                        s.report.sink
                    ),
                }
            }
            if let Some(spill) = &mut s.spill {
                match spill.append(event) {
                    Ok(()) => {
                        s.report.spilled += 1;
                        if s.report.spilled == 1 {
                            tracing::warn!(sink = %s.report.sink, "sink is behind: its events wait on disk");
                        }
                        self.ready.notify_one();
                        return;
                    }
                    Err(e) => tracing::error!(sink = %s.report.sink, "spill file not written: {e}"),
                }
            }
        }
        s.report.dropped += 1;
        if s.report.dropped == 1 {
            tracing::warn!(sink = %s.report.sink, "sink is behind: its queue is full, events are dropped");
        }
    }

    /// The next event for the sink, waiting for one; `None` once closed and empty.
    fn pop(&self) -> Option<Arc<Event>> {
        loop {
            match self.pop_within(std::time::Duration::from_secs(3600)) {
                Popped::Event(e) => return Some(e),
                Popped::Closed => return None,
                Popped::Idle => {}
            }
        }
    }

    /// The next event, waiting up to `idle` for one.
    fn pop_within(&self, idle: std::time::Duration) -> Popped {
        let mut s = self.lock();
        loop {
            if let Some(e) = s.memory.pop_front() {
                return Popped::Event(e);
            }
            let capacity = self.config.capacity;
            let state = &mut *s;
            if let Some(spill) = state.spill.as_mut() {
                match spill.read(capacity, &mut state.memory) {
                    Ok(unreadable) => state.report.dropped += unreadable,
                    Err(e) => {
                        tracing::error!(sink = %state.report.sink, "spill file not read: {e}");
                        state.report.dropped += spill.pending as u64;
                        spill.pending = 0;
                    }
                }
                if spill.pending == 0 {
                    // Caught up: the file goes (a new one is made if the sink falls behind again).
                    state.spill = None;
                }
                continue;
            }
            if s.closed {
                return Popped::Closed;
            }
            let (guard, waited) = self
                .ready
                .wait_timeout(s, idle)
                .unwrap_or_else(|e| e.into_inner());
            s = guard;
            if waited.timed_out() && s.memory.is_empty() && s.spill.is_none() && !s.closed {
                return Popped::Idle;
            }
        }
    }

    fn new(name: String, config: QueueConfig, spill_path: PathBuf) -> Self {
        SinkQueue {
            config: QueueConfig {
                capacity: config.capacity.max(1),
                ..config
            },
            spill_path,
            state: Mutex::new(QueueState {
                report: SinkReport {
                    sink: name,
                    ..SinkReport::default()
                },
                ..QueueState::default()
            }),
            ready: Condvar::new(),
        }
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }
}

enum Popped {
    Event(Arc<Event>),
    Idle,
    Closed,
}

/// The durable sinks, written in order on one thread before anything is shown.
struct DurableStage {
    /// Events waiting for the durable writes.
    queue: Arc<SinkQueue>,
    /// One per durable sink, in write order.
    reports: Arc<Mutex<Vec<SinkReport>>>,
    health: Vec<Option<Arc<SinkHealth>>>,
    /// Taken by `close`.
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The sinks' queues and threads.
pub struct Fanout {
    durable: Option<DurableStage>,
    /// The sinks that show events, each behind its queue.
    queues: Vec<Arc<SinkQueue>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// This fan-out's own spill folder (random name, owner-only, removed with it), so two
    /// engines never share a spill file and no one else can plant events in it.
    _spill_dir: Option<tempfile::TempDir>,
}

/// Events waiting for the durable writes, in memory before spilling.
const DURABLE_QUEUE: usize = 1024;
/// How long the durable stage waits for an event before letting its sinks retry what the disk
/// refused.
const DURABLE_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

impl Fanout {
    /// Starts a thread per sink that shows events, and one for the durable sinks (see the
    /// module's text). Queues that spill get files in a private folder made inside
    /// `spill_parent`.
    pub fn start(sinks: Vec<SinkSpec>, spill_parent: &Path) -> Result<Self> {
        let (mut durable, shown): (Vec<_>, Vec<_>) = sinks
            .into_iter()
            .partition(|s| s.sink.durability() != Durability::Shown);
        durable.sort_by_key(|s| s.sink.durability());
        let spill_dir =
            if !durable.is_empty() || shown.iter().any(|s| s.queue.overflow == Overflow::Spill) {
                std::fs::create_dir_all(spill_parent).with_context(|| {
                    format!("cannot make the spill folder {}", spill_parent.display())
                })?;
                Some(
                    tempfile::Builder::new()
                        .prefix("vishguard-spill-")
                        .tempdir_in(spill_parent)
                        .with_context(|| {
                            format!("cannot make a spill folder in {}", spill_parent.display())
                        })?,
                )
            } else {
                None
            };
        let spill_path = |name: &str| {
            spill_dir
                .as_ref()
                .map_or_else(PathBuf::new, |d| d.path().join(format!("{name}.jsonl")))
        };
        let mut queues = Vec::new();
        let mut threads = Vec::new();
        for (i, SinkSpec { mut sink, queue }) in shown.into_iter().enumerate() {
            let q = Arc::new(SinkQueue::new(
                sink.describe(),
                queue,
                spill_path(&format!("sink-{i}")),
            ));
            let consumer = q.clone();
            let thread = std::thread::Builder::new()
                .name(format!("sink-{i}"))
                .spawn(move || drain(&consumer, sink.as_mut()))?;
            queues.push(q);
            threads.push(thread);
        }
        let durable = if durable.is_empty() {
            None
        } else {
            let queue = Arc::new(SinkQueue::new(
                "durable stage".into(),
                QueueConfig {
                    capacity: DURABLE_QUEUE,
                    overflow: Overflow::Spill,
                },
                spill_path("durable"),
            ));
            let reports = Arc::new(Mutex::new(
                durable
                    .iter()
                    .map(|s| SinkReport {
                        sink: s.sink.describe(),
                        ..SinkReport::default()
                    })
                    .collect::<Vec<_>>(),
            ));
            let health = durable.iter().map(|s| s.sink.health()).collect();
            let sinks: Vec<Box<dyn Sink>> = durable.into_iter().map(|s| s.sink).collect();
            let thread = {
                let (queue, reports, shown) = (queue.clone(), reports.clone(), queues.clone());
                std::thread::Builder::new()
                    .name("durable-sinks".into())
                    .spawn(move || durable_writes(&queue, sinks, &reports, &shown))?
            };
            Some(DurableStage {
                queue,
                reports,
                health,
                thread: Mutex::new(Some(thread)),
            })
        };
        Ok(Self {
            durable,
            queues,
            threads: Mutex::new(threads),
            _spill_dir: spill_dir,
        })
    }

    /// Hands the event to the durable stage, or with none to every sink's queue; never
    /// blocks on a sink.
    pub fn send(&self, event: Event) {
        let event = Arc::new(event);
        if let Some(d) = &self.durable {
            d.queue.push(&event);
            return;
        }
        for q in &self.queues {
            q.push(&event);
        }
    }

    /// How each sink has fared so far: the durable sinks (in write order), then the others.
    pub fn reports(&self) -> Vec<SinkReport> {
        let mut out = Vec::new();
        if let Some(d) = &self.durable {
            let waiting = d.queue.lock().report.clone();
            for (r, h) in super::lock(&d.reports).iter().zip(&d.health) {
                out.push(
                    SinkReport {
                        // Events that could not wait for the durable writes are lost to these
                        // sinks (and to all the others).
                        dropped: r.dropped + waiting.dropped,
                        spilled: r.spilled + waiting.spilled,
                        ..r.clone()
                    }
                    .with_health(h.as_deref()),
                );
            }
        }
        out.extend(self.queues.iter().map(|q| q.lock().report.clone()));
        out
    }

    /// Lets every sink drain its queue and close; waits for them.
    pub fn close(&self) -> Vec<SinkReport> {
        if let Some(d) = &self.durable {
            d.queue.close();
            let thread = super::lock(&d.thread).take();
            if let Some(t) = thread {
                let _ = t.join();
            }
        }
        for q in &self.queues {
            q.close();
        }
        let threads: Vec<_> = super::lock(&self.threads).drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
        self.reports()
    }
}

fn drain(queue: &SinkQueue, sink: &mut dyn Sink) {
    while let Some(event) = queue.pop() {
        let result = sink.write(&event);
        record_write(&mut queue.lock().report, result);
    }
    close_sink(sink);
}

/// One write counted in its sink's report; the first three errors are logged.
fn record_write(report: &mut SinkReport, result: Result<()>) {
    report.delivered += 1;
    if let Err(e) = result {
        report.errors += 1;
        if report.errors <= 3 {
            tracing::error!(sink = %report.sink, "{e:#}");
        }
    }
}

fn close_sink(sink: &mut dyn Sink) {
    if let Err(e) = sink.close() {
        tracing::error!(sink = %sink.describe(), "closing: {e:#}");
    }
}

/// The durable stage's thread: each event to every durable sink, committed, then to the
/// queues of the sinks that show it.
fn durable_writes(
    queue: &SinkQueue,
    mut sinks: Vec<Box<dyn Sink>>,
    reports: &Mutex<Vec<SinkReport>>,
    shown: &[Arc<SinkQueue>],
) {
    loop {
        match queue.pop_within(DURABLE_IDLE) {
            Popped::Event(event) => {
                for (i, sink) in sinks.iter_mut().enumerate() {
                    let result = sink.write(&event);
                    record_write(&mut super::lock(reports)[i], result);
                }
                for sink in &mut sinks {
                    sink.commit();
                }
                for q in shown {
                    q.push(&event);
                }
            }
            Popped::Idle => sinks.iter_mut().for_each(|s| s.idle()),
            Popped::Closed => break,
        }
    }
    for sink in &mut sinks {
        close_sink(sink.as_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::{Call, CallId};
    use std::sync::atomic::{AtomicBool, Ordering};

    fn started(i: usize) -> Event {
        Event::CallStarted(Call {
            id: CallId::new(format!("c{i}")),
            parties: Vec::new(),
            metadata: Default::default(),
        })
    }

    /// Holds every event until released.
    struct Gate {
        open: Arc<AtomicBool>,
        seen: Arc<Mutex<Vec<String>>>,
    }

    impl Sink for Gate {
        fn describe(&self) -> String {
            "gate".into()
        }
        fn write(&mut self, event: &Event) -> Result<()> {
            while !self.open.load(Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            self.seen.lock().unwrap().push(event.call_id().to_string());
            Ok(())
        }
    }

    fn gate() -> (Gate, Arc<AtomicBool>, Arc<Mutex<Vec<String>>>) {
        let (open, seen) = (Arc::new(AtomicBool::new(false)), Arc::default());
        let g = Gate {
            open: Arc::clone(&open),
            seen: Arc::clone(&seen),
        };
        (g, open, seen)
    }

    #[test]
    fn a_stuck_sink_spills_to_disk_and_gets_everything_in_order_while_another_drops() {
        let dir = tempfile::tempdir().unwrap();
        let (spilling, open_a, seen_a) = gate();
        let (dropping, open_b, seen_b) = gate();
        let small = |overflow| QueueConfig {
            capacity: 4,
            overflow,
        };
        let fanout = Fanout::start(
            vec![
                SinkSpec::new(spilling, small(Overflow::Spill)),
                SinkSpec::new(dropping, small(Overflow::Drop)),
            ],
            dir.path(),
        )
        .unwrap();
        for i in 0..50 {
            fanout.send(started(i));
        }
        // Both sinks are stuck; the sender was never held up.
        let reports = fanout.reports();
        assert!(reports[0].spilled >= 40, "{reports:?}");
        assert!(reports[1].dropped >= 40, "{reports:?}");
        let spill_files = || {
            walk_files(dir.path())
                .into_iter()
                .filter(|p| p.ends_with("sink-0.jsonl"))
                .count()
        };
        assert_eq!(spill_files(), 1);
        open_a.store(true, Ordering::Relaxed);
        open_b.store(true, Ordering::Relaxed);
        let reports = fanout.close();
        let expected: Vec<String> = (0..50).map(|i| format!("c{i}")).collect();
        assert_eq!(*seen_a.lock().unwrap(), expected);
        assert_eq!(reports[0].delivered, 50);
        assert_eq!(reports[0].dropped, 0);
        let b = seen_b.lock().unwrap().len() as u64;
        assert_eq!(b + reports[1].dropped, 50);
        assert_eq!(spill_files(), 0, "spill removed once caught up");
        drop(fanout);
        assert!(walk_files(dir.path()).is_empty());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "folder removed"
        );
    }

    /// A durable sink that holds every event until released.
    struct DurableGate(Gate, Durability, Arc<Mutex<Vec<String>>>);

    impl Sink for DurableGate {
        fn describe(&self) -> String {
            format!("durable gate {:?}", self.1)
        }
        fn write(&mut self, event: &Event) -> Result<()> {
            self.0.write(event)?;
            self.2.lock().unwrap().push(format!("{:?} wrote", self.1));
            Ok(())
        }
        fn durability(&self) -> Durability {
            self.1
        }
        fn commit(&mut self) {
            self.2
                .lock()
                .unwrap()
                .push(format!("{:?} committed", self.1));
        }
    }

    #[test]
    fn nothing_is_shown_before_every_durable_sink_has_it_records_first() {
        let dir = tempfile::tempdir().unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let (shown, open_shown, seen_shown) = gate();
        open_shown.store(true, Ordering::Relaxed);
        let (outbox, open_outbox, _) = gate();
        let (record, open_record, _) = gate();
        let fanout = Fanout::start(
            vec![
                SinkSpec::new(shown, QueueConfig::default()),
                // Given before the record: written after it all the same.
                SinkSpec::new(
                    DurableGate(outbox, Durability::Forward, order.clone()),
                    QueueConfig::default(),
                ),
                SinkSpec::new(
                    DurableGate(record, Durability::Record, order.clone()),
                    QueueConfig::default(),
                ),
            ],
            dir.path(),
        )
        .unwrap();
        fanout.send(started(1));
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(
            seen_shown.lock().unwrap().is_empty(),
            "shown before written"
        );
        open_outbox.store(true, Ordering::Relaxed);
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(order.lock().unwrap().is_empty(), "the outbox went first");
        assert!(seen_shown.lock().unwrap().is_empty());
        open_record.store(true, Ordering::Relaxed);
        let reports = fanout.close();
        assert_eq!(*seen_shown.lock().unwrap(), ["c1"]);
        assert_eq!(
            *order.lock().unwrap(),
            [
                "Record wrote",
                "Forward wrote",
                "Record committed",
                "Forward committed"
            ]
        );
        assert_eq!(reports.len(), 3);
        assert!(reports.iter().all(|r| r.delivered == 1), "{reports:?}");
    }

    fn walk_files(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            if e.path().is_dir() {
                out.extend(walk_files(&e.path()));
            } else {
                out.push(e.path());
            }
        }
        out
    }
}
