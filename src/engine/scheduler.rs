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
    /// A party's last few utterances of unbroken speech, heard again as one recording.
    Review(Review),
}

impl Work {
    pub fn call_id(&self) -> &CallId {
        match self {
            Work::Job(j) => j.call_id(),
            Work::Partial(p) => &p.info.call.id,
            Work::Review(r) => &r.speech.info.call.id,
        }
    }
}

/// A second hearing of one party's recent speech, joined across the utterance cuts (the
/// worker's `Chain`): Whisper then hears a phrase a cut split with the words around it, as
/// `scan` hears a file.
pub(super) struct Review {
    pub speech: Speech,
    /// What the party said before this audio (the prompt).
    pub prompt: String,
    /// Seconds at the start that are context only (the first utterance, when the review
    /// starts at a cut inside speech): their words stay as first heard.
    pub context_s: f64,
    /// Worth idle time now (enough new speech since the last review); a review that is not
    /// due is heard only before the call's close.
    pub due: bool,
}

/// Reviews a party may have waiting (the current run of speech and the one before it): the
/// audio they hold stays bounded when the recognisers are never idle.
pub(super) const REVIEWS_PER_PARTY: usize = 2;

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    partials: VecDeque<Speech>,
    /// At most [`REVIEWS_PER_PARTY`] per party: a newer review of the same run of speech
    /// replaces the older one.
    reviews: VecDeque<Review>,
    busy: HashSet<CallId>,
    open_calls: usize,
    shutting_down: bool,
}

pub(super) struct Scheduler {
    state: Mutex<State>,
    changed: Condvar,
    /// Signalled when jobs leave the queue (for [`Scheduler::push_utterance_waiting`]).
    room: Condvar,
    /// Utterances waiting beyond this are dropped: memory stays bounded when overloaded.
    capacity: usize,
}

impl Scheduler {
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::default(),
            changed: Condvar::new(),
            room: Condvar::new(),
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

    /// Queues a finished utterance, waiting for room when the queue is full (for a source
    /// that waits: nothing of its call is dropped); takes it at once when shutting down.
    pub fn push_utterance_waiting(&self, heard: Speech) {
        let mut s = self.lock();
        loop {
            let waiting = s
                .jobs
                .iter()
                .filter(|j| matches!(j, Job::Utterance(_)))
                .count();
            if waiting < self.capacity || s.shutting_down {
                break;
            }
            s = self.room.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        let (call, party) = (&heard.info.call.id, heard.party);
        s.partials
            .retain(|p| !(&p.info.call.id == call && p.party == party));
        s.jobs.push_back(Job::Utterance(heard));
        self.changed.notify_one();
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

    /// Queues a review. One of the same run of speech (their audio overlaps) is replaced: the
    /// newer hears the same speech and more, and is due if either was. The review of a run
    /// that ended (the party paused) stays, due now, as it will not grow; beyond
    /// [`REVIEWS_PER_PARTY`] the oldest is dropped (its words stay as first heard).
    pub fn offer_review(&self, mut review: Review) {
        let mut s = self.lock();
        let (call, party) = (review.speech.info.call.id.clone(), review.speech.party);
        let start_s = review.speech.audio.start_s;
        let same = |r: &Review| r.speech.info.call.id == call && r.speech.party == party;
        if let Some(slot) = s
            .reviews
            .iter_mut()
            .find(|r| same(r) && start_s < r.speech.audio.end_s())
        {
            review.due |= slot.due;
            *slot = review;
        } else {
            for r in s.reviews.iter_mut().filter(|r| same(r)) {
                r.due = true;
            }
            s.reviews.push_back(review);
            if s.reviews.iter().filter(|r| same(r)).count() > REVIEWS_PER_PARTY {
                let oldest = s.reviews.iter().position(same).expect("counted above");
                s.reviews.remove(oldest);
            }
        }
        self.changed.notify_one();
    }

    /// After the last call closes, workers finish what is queued and stop.
    pub fn shut_down(&self) {
        self.lock().shutting_down = true;
        self.changed.notify_all();
        self.room.notify_all();
    }

    /// The next piece of work a worker may take, waiting for one; `None` when it should stop.
    /// Finished utterances come first, in arrival order per call; a partial only when there
    /// is nothing else to do.
    #[cfg(test)]
    pub fn next(&self) -> Option<Work> {
        self.next_batch(1).and_then(|mut b| b.pop())
    }

    /// Up to `max` pieces of work of different calls, to be heard together; waits for at
    /// least one; `None` when the worker should stop. Finished utterances and closes come
    /// first, in arrival order per call (an earlier job of a call blocks its later ones),
    /// except that a call's waiting review is heard before its close, so the call's verdict
    /// has it. Rows left over take due reviews, then partials, of other calls only when no
    /// finished utterance is waiting and no other worker is busy: under load they would take
    /// time from finished utterances, which every call needs.
    pub fn next_batch(&self, max: usize) -> Option<Vec<Work>> {
        let max = max.max(1);
        let mut s = self.lock();
        loop {
            let mut held: HashSet<CallId> = s.busy.iter().cloned().collect();
            let mut picks = Vec::new();
            let mut blocked = false;
            // A close whose call has a review waiting yields to the review.
            let mut closing_reviews = Vec::new();
            for (i, j) in s.jobs.iter().enumerate() {
                if picks.len() + closing_reviews.len() == max {
                    break;
                }
                if !held.insert(j.call_id().clone()) {
                    blocked = true;
                    continue;
                }
                let review = match j {
                    Job::Close(info) => s
                        .reviews
                        .iter()
                        .position(|r| r.speech.info.call.id == info.call.id),
                    Job::Utterance(_) => None,
                };
                match review {
                    Some(r) => {
                        closing_reviews.push(r);
                        blocked = true;
                    }
                    None => picks.push(i),
                }
            }
            let mut batch: Vec<Work> = Vec::with_capacity(picks.len());
            for &i in picks.iter().rev() {
                let job = s.jobs.remove(i).expect("index in range");
                batch.push(Work::Job(job));
            }
            batch.reverse();
            closing_reviews.sort_unstable();
            for &r in closing_reviews.iter().rev() {
                let review = s.reviews.remove(r).expect("index in range");
                batch.push(Work::Review(review));
            }
            let others_busy = !s.busy.is_empty();
            if !blocked && s.jobs.is_empty() && !others_busy {
                let mut k = 0;
                while batch.len() < max && k < s.reviews.len() {
                    if s.reviews[k].due && held.insert(s.reviews[k].speech.info.call.id.clone()) {
                        let r = s.reviews.remove(k).expect("index in range");
                        batch.push(Work::Review(r));
                    } else {
                        k += 1;
                    }
                }
                let mut k = 0;
                while batch.len() < max && k < s.partials.len() {
                    if held.insert(s.partials[k].info.call.id.clone()) {
                        let p = s.partials.remove(k).expect("index in range");
                        batch.push(Work::Partial(p));
                    } else {
                        k += 1;
                    }
                }
            }
            if !batch.is_empty() {
                for w in &batch {
                    s.busy.insert(w.call_id().clone());
                }
                self.room.notify_all();
                return Some(batch);
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
                samples: vec![0.0; len],
                ..Default::default()
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
    fn a_batch_takes_one_job_per_call_in_order_and_fills_spare_rows_with_partials() {
        let q = Scheduler::new(16);
        let (a, b, c, d) = (info("a"), info("b"), info("c"), info("d"));
        for _ in 0..3 {
            q.call_opened();
        }
        q.push_utterance(utt(&a, 0, 100)).ok().unwrap();
        q.push_utterance(utt(&a, 0, 200)).ok().unwrap();
        q.push_utterance(utt(&b, 0, 300)).ok().unwrap();
        q.offer_partial(utt(&c, 0, 400));
        q.offer_partial(utt(&d, 1, 500));
        // a's second utterance waits for its first: the batch is a1, b; a job still waits,
        // so no partial rides along.
        let batch = q.next_batch(8).unwrap();
        let calls: Vec<&str> = batch.iter().map(|w| w.call_id().as_str()).collect();
        assert_eq!(calls, ["a", "b"]);
        assert!(matches!(&batch[0], Work::Job(Job::Utterance(s)) if s.audio.samples.len() == 100));
        q.release(&a.call.id);
        q.release(&b.call.id);
        // Now a2 and, in the spare rows, the partials of calls nobody holds.
        let batch = q.next_batch(8).unwrap();
        let calls: Vec<&str> = batch.iter().map(|w| w.call_id().as_str()).collect();
        assert_eq!(calls, ["a", "c", "d"]);
        assert!(matches!(&batch[0], Work::Job(Job::Utterance(s)) if s.audio.samples.len() == 200));
        assert!(matches!(&batch[1], Work::Partial(_)));
        // At most `max` rows.
        for w in &batch {
            q.release(w.call_id());
        }
        for i in 0..5 {
            let call = info(&format!("x{i}"));
            q.push_utterance(utt(&call, 0, 100)).ok().unwrap();
        }
        assert_eq!(q.next_batch(3).unwrap().len(), 3);
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

    fn review(info: &Arc<CallInfo>, party: usize, len: usize, due: bool) -> Review {
        Review {
            speech: utt(info, party, len),
            prompt: String::new(),
            context_s: 0.0,
            due,
        }
    }

    #[test]
    fn a_review_is_heard_before_its_calls_close_and_in_idle_time_before_partials() {
        let q = Scheduler::new(8);
        let (a, b, c) = (info("a"), info("b"), info("c"));
        for _ in 0..3 {
            q.call_opened();
        }
        q.offer_partial(utt(&c, 0, 100));
        q.offer_review(review(&b, 0, 16_000, true));
        // A newer review of the same party replaces the older one, due as it was.
        q.offer_review(review(&b, 0, 32_000, false));
        // Not due: heard only before the close.
        q.offer_review(review(&a, 1, 48_000, false));
        q.push_utterance(utt(&b, 0, 160)).ok().unwrap();
        q.push_close(a.clone());
        // The close of "a" yields to a's review; b's utterance comes first, as a job.
        let batch = q.next_batch(8).unwrap();
        assert_eq!(batch.len(), 2);
        assert!(matches!(&batch[0], Work::Job(Job::Utterance(s)) if s.info.call.id == b.call.id));
        assert!(
            matches!(&batch[1], Work::Review(r) if r.speech.info.call.id == a.call.id && r.speech.party == 1)
        );
        q.release(&a.call.id);
        q.release(&b.call.id);
        // Then a's close, and in the spare rows b's newest review before c's partial.
        let batch = q.next_batch(8).unwrap();
        assert_eq!(batch.len(), 3);
        assert!(matches!(&batch[0], Work::Job(Job::Close(_))));
        assert!(matches!(&batch[1], Work::Review(r) if r.speech.audio.samples.len() == 32_000));
        assert!(matches!(&batch[2], Work::Partial(_)));
        for w in &batch {
            q.release(w.call_id());
        }
        // One row at a time: a due review before a partial; a review not due waits.
        q.offer_partial(utt(&c, 0, 100));
        q.offer_review(review(&b, 0, 16_000, true));
        q.offer_review(review(&c, 1, 16_000, false));
        assert!(matches!(q.next(), Some(Work::Review(_))));
        q.release(&b.call.id);
        assert!(matches!(q.next(), Some(Work::Partial(_))));
        q.release(&c.call.id);
        q.push_close(c.clone());
        assert!(matches!(q.next(), Some(Work::Review(r)) if r.speech.party == 1));
        q.release(&c.call.id);
        assert!(matches!(q.next(), Some(Work::Job(Job::Close(_)))));
        q.release(&c.call.id);

        // A run that ended keeps its review (due now) when the party's next run offers one;
        // at most two wait per party, the oldest dropped.
        let d = info("d");
        q.call_opened();
        let at = |start_s: f64| {
            let mut r = review(&d, 0, 16_000, false);
            r.speech.audio.start_s = start_s;
            r
        };
        q.offer_review(at(0.0));
        q.offer_review(at(0.5)); // the same run, grown: replaces
        q.offer_review(at(5.0)); // after a pause: a new run
        q.offer_review(at(10.0));
        match q.next() {
            Some(Work::Review(r)) => assert_eq!((r.speech.audio.start_s, r.due), (5.0, true)),
            _ => panic!("expected the review of the run that ended"),
        }
        q.release(&d.call.id);
        q.push_close(d.clone());
        assert!(matches!(q.next(), Some(Work::Review(r)) if r.speech.audio.start_s == 10.0));
        q.release(&d.call.id);
        assert!(matches!(q.next(), Some(Work::Job(Job::Close(_)))));
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
