//! Events to every sink, each through its own bounded queue and on its own thread, so a sink
//! that blocks (an fsync, a dead webhook, a terminal nobody reads) never holds up the
//! recognisers or another sink. A full queue drops and counts (`Overflow::Drop`) or spills to a
//! file on disk that the sink reads back in order when it catches up (`Overflow::Spill`).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use anyhow::{Context, Result};

use super::SinkSpec;
use crate::call::{json_line, Event, Versioned};
use crate::sinks::{Overflow, QueueConfig, Sink};

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
        let mut s = self.lock();
        loop {
            if let Some(e) = s.memory.pop_front() {
                return Some(e);
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
                return None;
            }
            s = self.ready.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// The sinks' queues and threads.
pub struct Fanout {
    queues: Vec<Arc<SinkQueue>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// This fan-out's own spill folder (random name, owner-only, removed with it), so two
    /// engines never share a spill file and no one else can plant events in it.
    _spill_dir: Option<tempfile::TempDir>,
}

impl Fanout {
    /// Starts a thread per sink. Sinks that spill get files in a private folder made inside
    /// `spill_parent`.
    pub fn start(sinks: Vec<SinkSpec>, spill_parent: &Path) -> Result<Self> {
        let spill_dir = if sinks.iter().any(|s| s.queue.overflow == Overflow::Spill) {
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
        let spill_path = |i: usize| {
            spill_dir
                .as_ref()
                .map_or_else(PathBuf::new, |d| d.path().join(format!("sink-{i}.jsonl")))
        };
        let mut queues = Vec::new();
        let mut threads = Vec::new();
        for (i, SinkSpec { mut sink, queue }) in sinks.into_iter().enumerate() {
            let name = sink.describe();
            let q = Arc::new(SinkQueue {
                config: QueueConfig {
                    capacity: queue.capacity.max(1),
                    ..queue
                },
                spill_path: spill_path(i),
                state: Mutex::new(QueueState {
                    report: SinkReport {
                        sink: name.clone(),
                        ..SinkReport::default()
                    },
                    ..QueueState::default()
                }),
                ready: Condvar::new(),
            });
            let consumer = q.clone();
            let thread = std::thread::Builder::new()
                .name(format!("sink-{i}"))
                .spawn(move || drain(&consumer, sink.as_mut()))?;
            queues.push(q);
            threads.push(thread);
        }
        Ok(Self {
            queues,
            threads: Mutex::new(threads),
            _spill_dir: spill_dir,
        })
    }

    /// Hands the event to every sink's queue; never blocks on a sink.
    pub fn send(&self, event: Event) {
        let event = Arc::new(event);
        for q in &self.queues {
            q.push(&event);
        }
    }

    /// How each sink has fared so far.
    pub fn reports(&self) -> Vec<SinkReport> {
        self.queues
            .iter()
            .map(|q| q.lock().report.clone())
            .collect()
    }

    /// Lets every sink drain its queue and close; waits for them.
    pub fn close(&self) -> Vec<SinkReport> {
        for q in &self.queues {
            q.lock().closed = true;
            q.ready.notify_all();
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
        let mut s = queue.lock();
        s.report.delivered += 1;
        if let Err(e) = result {
            s.report.errors += 1;
            if s.report.errors <= 3 {
                tracing::error!(sink = %s.report.sink, "{e:#}");
            }
        }
    }
    if let Err(e) = sink.close() {
        tracing::error!(sink = %sink.describe(), "closing: {e:#}");
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
