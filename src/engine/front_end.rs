//! One call's front end, on a thread of its own: each party's chunks are placed at their audio
//! time, resampled to 16 kHz and cut into utterances; finished utterances go to the scheduler,
//! and while one is still being spoken its audio so far is offered for early hearing.

use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use super::scheduler::{Scheduler, Speech};
use super::{CallInfo, EngineConfig, EngineStats};
use crate::audio::utterance::{UtteranceAudio, UtteranceCutter};
use crate::audio::StreamResampler;
use crate::call::AudioChunk;

/// Quiet after speech for this long makes the words so far worth hearing at once.
const PAUSE_PARTIAL_S: f64 = 0.15;
/// Partials shorter than this (16 kHz samples, 1 s) are too little to be worth the
/// recogniser's time.
const PARTIAL_MIN: usize = 16_000;
/// A gap up to this long (seconds) is filled with silence, so a word cut by a lost packet or
/// two stays one utterance; a longer one ends what was being said and restarts the stream at
/// the chunk's time. A chunk that goes back in time by more than this is a source whose clock
/// restarted: it is heard as following on, not trimmed away.
const MAX_FILLED_GAP_S: f64 = 1.0;

struct PartyFront {
    resampler: StreamResampler,
    cutter: UtteranceCutter,
    /// Input-rate samples since the start of the call that the next chunk should start at.
    next_in: u64,
    /// Length of the open utterance when it was last offered as a partial.
    offered: usize,
    pause_offered: bool,
    at_16k: Vec<f32>,
}

pub(super) struct FrontEnd {
    info: Arc<CallInfo>,
    parties: Vec<PartyFront>,
    scheduler: Arc<Scheduler>,
    stats: Arc<EngineStats>,
    /// Offer the open utterance each time it has grown this many 16 kHz samples.
    partial_step: Option<usize>,
}

impl FrontEnd {
    pub fn new(
        info: Arc<CallInfo>,
        resamplers: Vec<StreamResampler>,
        scheduler: Arc<Scheduler>,
        stats: Arc<EngineStats>,
        config: &EngineConfig,
    ) -> Self {
        let parties = resamplers
            .into_iter()
            .map(|resampler| PartyFront {
                resampler,
                cutter: UtteranceCutter::new(config.utterances.clone()),
                next_in: 0,
                offered: 0,
                pause_offered: false,
                at_16k: Vec::new(),
            })
            .collect();
        Self {
            info,
            parties,
            scheduler,
            stats,
            partial_step: config
                .partials
                .then_some((config.partial_every_s * 16_000.0) as usize),
        }
    }

    /// Serves the call's queue until the call is closed, then hands over the last words and
    /// the close. The close goes out even if hearing this call panicked, so the call still ends
    /// with its summary and the engine can shut down.
    pub fn run(mut self, rx: Receiver<AudioChunk>) {
        let _close = CloseOnDrop {
            scheduler: self.scheduler.clone(),
            info: self.info.clone(),
        };
        for chunk in rx {
            self.push(chunk);
        }
        for party in 0..self.parties.len() {
            for u in Self::flush_and_cut(&mut self.parties[party]) {
                self.send(party, u);
            }
            if let Some(u) = self.parties[party].cutter.flush() {
                self.send(party, u);
            }
        }
    }

    fn push(&mut self, mut chunk: AudioChunk) {
        let party = chunk.party;
        let Some(p) = self.parties.get_mut(party) else {
            return;
        };
        // One NaN would poison the resampler's state and deafen the party for the rest of the
        // call: samples that are not numbers are heard as silence (and logged once).
        let mut bad = 0;
        for s in chunk.samples.iter_mut().filter(|s| !s.is_finite()) {
            *s = 0.0;
            bad += 1;
        }
        if bad > 0 {
            tracing::warn!(call = %self.info.call.id, party, "{bad} samples were not numbers; heard as silence");
        }
        let rate = p.resampler.rate() as f64;
        let start = (chunk.offset_s * rate).round() as u64;
        let mut samples = &chunk.samples[..];
        let max_gap = (MAX_FILLED_GAP_S * rate) as u64;
        let mut done = Vec::new();
        if start > p.next_in {
            let gap = start - p.next_in;
            self.info.missing_audio.fetch_add(
                (gap as f64 * 16_000.0 / rate).round() as u64,
                Ordering::Relaxed,
            );
            if gap <= max_gap {
                done = Self::resample_and_cut(p, &vec![0.0; gap as usize]);
            } else {
                tracing::debug!(call = %self.info.call.id, party, gap_s = gap as f64 / rate, "gap in the audio");
                // The resampler's last block and filter tail go out before it starts afresh.
                done = Self::flush_and_cut(p);
                let resumed = (start as f64 * 16_000.0 / rate).round() as u64;
                done.extend(p.cutter.jump_to(resumed));
            }
            p.next_in = start;
        } else if start < p.next_in {
            let overlap = p.next_in - start;
            if overlap <= (rate / 1000.0) as u64 {
                // Within a millisecond of where it should be: rounding, contiguous.
            } else if overlap <= max_gap {
                // Overlaps audio already heard (a duplicate): only what is new counts.
                samples = &samples[(overlap as usize).min(samples.len())..];
            } else {
                tracing::warn!(call = %self.info.call.id, party, "audio went back {:.1} s in time; heard as following on", overlap as f64 / rate);
            }
        }
        p.next_in += samples.len() as u64;
        if let Some(h) = self.info.heard_until_ms.get(party) {
            h.fetch_max(
                (p.next_in as f64 * 1000.0 / rate).ceil() as u64,
                Ordering::Relaxed,
            );
        }
        done.extend(Self::resample_and_cut(p, samples));
        for u in done {
            let p = &mut self.parties[party];
            p.offered = 0;
            p.pause_offered = false;
            self.send(party, u);
        }
        self.offer_partial(party);
    }

    fn resample_and_cut(p: &mut PartyFront, samples: &[f32]) -> Vec<UtteranceAudio> {
        if samples.is_empty() {
            return Vec::new();
        }
        p.at_16k.clear();
        p.resampler.push(samples, &mut p.at_16k);
        p.cutter.push(&p.at_16k)
    }

    /// The resampler's rest (its last block and filter tail), cut: at a gap or the call's end.
    fn flush_and_cut(p: &mut PartyFront) -> Vec<UtteranceAudio> {
        p.at_16k.clear();
        p.resampler.flush(&mut p.at_16k);
        p.cutter.push(&p.at_16k)
    }

    fn offer_partial(&mut self, party: usize) {
        let Some(step) = self.partial_step else {
            return;
        };
        let p = &mut self.parties[party];
        let open = p.cutter.open_len();
        // A pause that may end the utterance is offered at once: the last words, where the
        // phrase that matters often ends, are heard before the utterance closes.
        let pausing = p.cutter.open_quiet_s() >= PAUSE_PARTIAL_S;
        let due = if pausing {
            !std::mem::replace(&mut p.pause_offered, true)
        } else {
            p.pause_offered = false;
            open >= p.offered + step
        };
        if due && open >= PARTIAL_MIN {
            if let Some(audio) = p.cutter.open_utterance() {
                p.offered = open;
                self.scheduler.offer_partial(Speech {
                    info: self.info.clone(),
                    party,
                    audio,
                });
            }
        }
    }

    fn send(&self, party: usize, audio: UtteranceAudio) {
        let seconds = audio.samples.len() as f64 / 16_000.0;
        let speech = Speech {
            info: self.info.clone(),
            party,
            audio,
        };
        if self.info.waits.load(Ordering::Relaxed) {
            self.scheduler.push_utterance_waiting(speech);
        } else if self.scheduler.push_utterance(speech).is_err() {
            EngineStats::add(&self.stats.utterances_dropped, 1);
            let n = self.info.dropped_utterances.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(
                call = %self.info.call.id,
                dropped_total = n,
                "recogniser busy: dropped a {seconds:.1} s utterance"
            );
        }
    }
}

/// Hands the call's close to the scheduler when the front end ends, however it ends.
struct CloseOnDrop {
    scheduler: Arc<Scheduler>,
    info: Arc<CallInfo>,
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.scheduler.push_close(self.info.clone());
    }
}
