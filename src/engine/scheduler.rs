//! What the recognisers share: finished utterances and call ends in arrival order, the newest
//! unfinished utterance of each speaking party, and which calls a worker holds right now.
//!
//! Several workers hear utterances at once (two threads get about 1.25x the utterances a
//! second of one on two cores: much of a decode step is too small to spread over both cores),
//! but each call is held by one worker at a time, so its utterances are heard in order, each
//! with the words before it as context.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::CallInfo;
use crate::audio::utterance::UtteranceAudio;
use crate::call::CallId;

/// A piece of one party's speech for the recognisers.
pub(super) struct Speech {
    pub info: Arc<CallInfo>,
    pub party: usize,
    pub audio: UtteranceAudio,
}

pub(super) enum Job {
    /// A finished utterance.
    Utterance(Speech),
    /// The call is over: everything before it has been heard.
    Close(Arc<CallInfo>),
}

impl Job {
    fn call_id(&self) -> &CallId {
        match self {
            Job::Utterance(h) => &h.info.call.id,
            Job::Close(info) => &info.call.id,
        }
    }
}

pub(super) enum Work {
    Job(Job),
    /// An utterance still being spoken, heard early.
    Partial(Speech),
}

impl Work {
    pub fn call_id(&self) -> &CallId {
        match self {
            Work::Job(j) => j.call_id(),
            Work::Partial(p) => &p.info.call.id,
        }
    }
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    partials: VecDeque<Speech>,
    busy: HashSet<CallId>,
    open_calls: usize,
    shutting_down: bool,
}

pub(super) struct Scheduler {
    state: Mutex<State>,
    changed: Condvar,
    /// Utterances waiting beyond this are dropped: memory stays bounded when overloaded.
    capacity: usize,
}

impl Scheduler {
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::default(),
            changed: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        super::lock(&self.state)
    }

    /// Finished utterances waiting now.
    pub fn queued(&self) -> usize {
        let s = self.lock();
        s.jobs
            .iter()
            .filter(|j| matches!(j, Job::Utterance(_)))
            .count()
    }

    pub fn call_opened(&self) {
        self.lock().open_calls += 1;
    }

    /// Queues a finished utterance; gives it back when the queue is full.
    pub fn push_utterance(&self, heard: Speech) -> Result<(), Speech> {
        let mut s = self.lock();
        let waiting = s
            .jobs
            .iter()
            .filter(|j| matches!(j, Job::Utterance(_)))
            .count();
        if waiting >= self.capacity {
            return Err(heard);
        }
        let (call, party) = (&heard.info.call.id, heard.party);
        s.partials
            .retain(|p| !(&p.info.call.id == call && p.party == party));
        s.jobs.push_back(Job::Utterance(heard));
        self.changed.notify_one();
        Ok(())
    }

    /// Ends a call: queued after its utterances, never dropped (one small record per call).
    pub fn push_close(&self, info: Arc<CallInfo>) {
        let mut s = self.lock();
        s.partials.retain(|p| p.info.call.id != info.call.id);
        s.open_calls = s.open_calls.saturating_sub(1);
        s.jobs.push_back(Job::Close(info));
        self.changed.notify_all();
    }

    /// Replaces the party's earlier offer: only the newest audio is worth hearing.
    pub fn offer_partial(&self, partial: Speech) {
        let mut s = self.lock();
        let same = |p: &Speech| p.info.call.id == partial.info.call.id && p.party == partial.party;
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
            let mut held: HashSet<&CallId> = s.busy.iter().collect();
            // An earlier job of a call blocks its later ones, so order holds per call.
            let pick = s.jobs.iter().position(|j| held.insert(j.call_id()));
            if let Some(i) = pick {
                let job = s.jobs.remove(i).expect("index in range");
                s.busy.insert(job.call_id().clone());
                return Some(Work::Job(job));
            }
            // A partial only when the workers are otherwise idle: under load it would take
            // cores from finished utterances, which every call needs.
            if s.jobs.is_empty() && s.busy.is_empty() && !s.partials.is_empty() {
                let p = s.partials.pop_front().expect("not empty");
                s.busy.insert(p.info.call.id.clone());
                return Some(Work::Partial(p));
            }
            if s.shutting_down && s.open_calls == 0 && s.jobs.is_empty() {
                return None;
            }
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The worker is done with this call for now.
    pub fn release(&self, call_id: &CallId) {
        self.lock().busy.remove(call_id);
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(call: &str) -> Arc<CallInfo> {
        Arc::new(CallInfo::new(crate::call::Call {
            id: call.into(),
            parties: Vec::new(),
            metadata: Default::default(),
        }))
    }

    fn utt(info: &Arc<CallInfo>, party: usize, len: usize) -> Speech {
        Speech {
            info: info.clone(),
            party,
            audio: UtteranceAudio {
                start_s: 0.0,
                samples: vec![0.0; len],
            },
        }
    }

    #[test]
    fn a_call_is_held_by_one_worker_and_its_jobs_keep_their_order() {
        let q = Scheduler::new(8);
        let (a, b) = (info("a"), info("b"));
        q.call_opened();
        q.call_opened();
        q.push_utterance(utt(&a, 0, 160)).ok().unwrap();
        q.push_utterance(utt(&a, 0, 160)).ok().unwrap();
        q.push_utterance(utt(&b, 0, 160)).ok().unwrap();
        let first = q.next().unwrap();
        assert_eq!(first.call_id().as_str(), "a");
        // "a" is held: the next worker gets "b", not a's second utterance.
        let second = q.next().unwrap();
        assert_eq!(second.call_id().as_str(), "b");
        q.release(&"a".into());
        assert_eq!(q.next().unwrap().call_id().as_str(), "a");
    }

    #[test]
    fn a_full_queue_gives_utterances_back_but_takes_every_close() {
        let q = Scheduler::new(1);
        let a = info("a");
        q.call_opened();
        q.push_utterance(utt(&a, 0, 160)).ok().unwrap();
        assert!(q.push_utterance(utt(&a, 0, 160)).is_err());
        q.push_close(a.clone());
        q.shut_down();
        assert!(matches!(q.next(), Some(Work::Job(Job::Utterance(_)))));
        q.release(&a.call.id);
        assert!(matches!(q.next(), Some(Work::Job(Job::Close(_)))));
        q.release(&a.call.id);
        assert!(q.next().is_none());
    }

    #[test]
    fn partials_wait_for_finished_work_and_keep_only_the_newest_audio() {
        let q = Scheduler::new(8);
        let (a, b, c) = (info("a"), info("b"), info("c"));
        for len in [16_000, 32_000] {
            q.offer_partial(utt(&a, 0, len));
        }
        q.push_utterance(utt(&b, 0, 160)).ok().unwrap();
        assert!(matches!(q.next(), Some(Work::Job(_))));
        q.release(&b.call.id);
        match q.next() {
            Some(Work::Partial(p)) => assert_eq!(p.audio.samples.len(), 32_000),
            _ => panic!("expected the newest partial"),
        }
        // The finished utterance of a party makes its partial stale.
        q.offer_partial(utt(&c, 1, 16_000));
        q.push_utterance(utt(&c, 1, 160)).ok().unwrap();
        q.release(&a.call.id);
        assert!(matches!(q.next(), Some(Work::Job(_))));
        q.release(&c.call.id);
        q.shut_down();
        assert!(q.next().is_none());
    }
}
