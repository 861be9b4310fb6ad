//! What the recognisers share: finished utterances and call ends in arrival order, the newest
//! unfinished utterance of each speaking party, and which calls a worker holds right now.
//!
//! Several workers hear utterances at once (two threads get about 1.25x the utterances a
//! second of one on two cores: much of a decode step is too small to spread over both cores),
//! but each call is held by one worker at a time, so its utterances are heard in order, each
//! with the words before it as context.

use std::collections::{HashSet, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use super::segmenter::Utterance;

pub(super) enum Job {
    Utterance {
        call_id: String,
        started: Instant,
        utterance: Utterance,
    },
    Close {
        call_id: String,
        dropped_audio: std::sync::Arc<std::sync::atomic::AtomicU64>,
    },
}

impl Job {
    fn call_id(&self) -> &str {
        match self {
            Job::Utterance { call_id, .. } | Job::Close { call_id, .. } => call_id,
        }
    }
}

/// An unfinished utterance offered for early hearing.
pub(super) struct Partial {
    pub call_id: String,
    pub started: Instant,
    pub utterance: Utterance,
}

pub(super) enum Work {
    Job(Job),
    Partial(Partial),
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    partials: VecDeque<Partial>,
    busy: HashSet<String>,
    open_calls: usize,
    shutting_down: bool,
}

pub(super) struct WorkQueue {
    state: Mutex<State>,
    changed: Condvar,
    /// Utterances waiting beyond this are dropped: memory stays bounded when overloaded.
    capacity: usize,
}

impl WorkQueue {
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::default(),
            changed: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn call_opened(&self) {
        self.lock().open_calls += 1;
    }

    /// Queues a finished utterance; gives it back when the queue is full.
    pub fn push_utterance(&self, job: Job) -> Result<(), Job> {
        let mut s = self.lock();
        let waiting = s
            .jobs
            .iter()
            .filter(|j| matches!(j, Job::Utterance { .. }))
            .count();
        if waiting >= self.capacity {
            return Err(job);
        }
        let call = job.call_id().to_owned();
        if let Job::Utterance { utterance, .. } = &job {
            let party = utterance.party;
            s.partials
                .retain(|p| !(p.call_id == call && p.utterance.party == party));
        }
        s.jobs.push_back(job);
        self.changed.notify_one();
        Ok(())
    }

    /// Ends a call: queued after its utterances, never dropped (one small record per call).
    pub fn push_close(&self, job: Job) {
        let mut s = self.lock();
        let call = job.call_id().to_owned();
        s.partials.retain(|p| p.call_id != call);
        s.open_calls = s.open_calls.saturating_sub(1);
        s.jobs.push_back(job);
        self.changed.notify_all();
    }

    /// Replaces the party's earlier offer: only the newest audio is worth hearing.
    pub fn offer_partial(&self, partial: Partial) {
        let mut s = self.lock();
        let same = |p: &Partial| {
            p.call_id == partial.call_id && p.utterance.party == partial.utterance.party
        };
        if let Some(slot) = s.partials.iter_mut().find(|p| same(p)) {
            *slot = partial;
        } else {
            s.partials.push_back(partial);
        }
        self.changed.notify_one();
    }

    /// After the last call closes, workers finish what is queued and stop.
    pub fn shut_down(&self) {
        self.lock().shutting_down = true;
        self.changed.notify_all();
    }

    /// The next piece of work a worker may take, waiting for one; `None` when it should stop.
    /// Finished utterances come first, in arrival order per call; a partial only when there
    /// is nothing else to do.
    pub fn next(&self) -> Option<Work> {
        let mut s = self.lock();
        loop {
            let mut held: HashSet<&str> = s.busy.iter().map(String::as_str).collect();
            let mut pick = None;
            for (i, j) in s.jobs.iter().enumerate() {
                // An earlier job of a call blocks its later ones, so order holds per call.
                if held.insert(j.call_id()) {
                    pick = Some(i);
                    break;
                }
            }
            if let Some(i) = pick {
                let job = s.jobs.remove(i).expect("index in range");
                s.busy.insert(job.call_id().to_owned());
                return Some(Work::Job(job));
            }
            // A partial only when the workers are otherwise idle: under load it would take
            // cores from finished utterances, which every call needs.
            if s.jobs.is_empty() && s.busy.is_empty() && !s.partials.is_empty() {
                let p = s.partials.pop_front().expect("not empty");
                s.busy.insert(p.call_id.clone());
                return Some(Work::Partial(p));
            }
            if s.shutting_down && s.open_calls == 0 && s.jobs.is_empty() {
                return None;
            }
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The worker is done with this call for now.
    pub fn release(&self, call_id: &str) {
        self.lock().busy.remove(call_id);
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utt(call: &str, party: usize) -> Job {
        Job::Utterance {
            call_id: call.into(),
            started: Instant::now(),
            utterance: Utterance {
                party,
                start_s: 0.0,
                samples: vec![0.0; 160],
            },
        }
    }

    fn call_of(w: &Work) -> &str {
        match w {
            Work::Job(j) => j.call_id(),
            Work::Partial(p) => &p.call_id,
        }
    }

    #[test]
    fn a_call_is_held_by_one_worker_and_its_jobs_keep_their_order() {
        let q = WorkQueue::new(8);
        q.call_opened();
        q.call_opened();
        q.push_utterance(utt("a", 0)).ok().unwrap();
        q.push_utterance(utt("a", 0)).ok().unwrap();
        q.push_utterance(utt("b", 0)).ok().unwrap();
        let first = q.next().unwrap();
        assert_eq!(call_of(&first), "a");
        // "a" is held: the next worker gets "b", not a's second utterance.
        let second = q.next().unwrap();
        assert_eq!(call_of(&second), "b");
        q.release("a");
        assert_eq!(call_of(&q.next().unwrap()), "a");
    }

    #[test]
    fn a_full_queue_gives_utterances_back_but_takes_every_close() {
        let q = WorkQueue::new(1);
        q.call_opened();
        q.push_utterance(utt("a", 0)).ok().unwrap();
        assert!(q.push_utterance(utt("a", 0)).is_err());
        q.push_close(Job::Close {
            call_id: "a".into(),
            dropped_audio: Default::default(),
        });
        q.shut_down();
        assert!(matches!(q.next(), Some(Work::Job(Job::Utterance { .. }))));
        q.release("a");
        assert!(matches!(q.next(), Some(Work::Job(Job::Close { .. }))));
        q.release("a");
        assert!(q.next().is_none());
    }

    #[test]
    fn partials_wait_for_finished_work_and_keep_only_the_newest_audio() {
        let q = WorkQueue::new(8);
        for len in [16_000, 32_000] {
            q.offer_partial(Partial {
                call_id: "a".into(),
                started: Instant::now(),
                utterance: Utterance {
                    party: 0,
                    start_s: 0.0,
                    samples: vec![0.0; len],
                },
            });
        }
        q.push_utterance(utt("b", 0)).ok().unwrap();
        assert!(matches!(q.next(), Some(Work::Job(_))));
        q.release("b");
        match q.next() {
            Some(Work::Partial(p)) => assert_eq!(p.utterance.samples.len(), 32_000),
            _ => panic!("expected the newest partial"),
        }
        // The finished utterance of a party makes its partial stale.
        q.offer_partial(Partial {
            call_id: "c".into(),
            started: Instant::now(),
            utterance: Utterance {
                party: 1,
                start_s: 0.0,
                samples: vec![0.0; 16_000],
            },
        });
        q.push_utterance(utt("c", 1)).ok().unwrap();
        q.release("a");
        assert!(matches!(q.next(), Some(Work::Job(_))));
        q.release("c");
        q.shut_down();
        assert!(q.next().is_none());
    }
}
