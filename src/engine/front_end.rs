//! One call's front end, on a thread of its own: each party's chunks are placed at their audio
//! time, resampled to 16 kHz and cut into utterances; finished utterances go to the scheduler,
//! and while one is still being spoken its audio so far is offered for early hearing.

use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use super::scheduler::{Scheduler, Speech};
use super::{CallInfo, EngineConfig};
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
/// the chunk's time.
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
    /// Offer the open utterance each time it has grown this many 16 kHz samples.
    partial_step: Option<usize>,
}

impl FrontEnd {
    pub fn new(
        info: Arc<CallInfo>,
        resamplers: Vec<StreamResampler>,
        scheduler: Arc<Scheduler>,
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
            partial_step: config
                .partials
                .then_some((config.partial_every_s * 16_000.0) as usize),
        }
    }

    /// Serves the call's queue until the call is closed, then hands over the last words and
    /// the close.
    pub fn run(mut self, rx: Receiver<AudioChunk>) {
        for chunk in rx {
            self.push(chunk);
        }
        for party in 0..self.parties.len() {
            if let Some(u) = self.parties[party].cutter.flush() {
                self.send(party, u);
            }
        }
        self.scheduler.push_close(self.info.clone());
    }

    fn push(&mut self, chunk: AudioChunk) {
        let party = chunk.party;
        let Some(p) = self.parties.get_mut(party) else {
            return;
        };
        let rate = p.resampler.rate() as f64;
        let start = (chunk.offset_s * rate).round() as u64;
        let mut samples = &chunk.samples[..];
        let tolerance = (rate / 1000.0) as u64; // 1 ms of rounding between chunks
        let mut ended = None;
        if start > p.next_in + tolerance {
            let gap = start - p.next_in;
            if gap as f64 <= MAX_FILLED_GAP_S * rate {
                let silence = vec![0.0; gap as usize];
                ended = Self::resample_and_cut(p, &silence);
            } else {
                tracing::debug!(call = %self.info.call.id, party, gap_s = gap as f64 / rate, "gap in the audio");
                p.resampler.reset();
                let resumed = (start as f64 * 16_000.0 / rate).round() as u64;
                ended = Some(p.cutter.jump_to(resumed).into_iter().collect());
            }
            p.next_in = start;
        } else if start + tolerance < p.next_in {
            // Overlaps audio already heard: only what is new counts.
            let skip = ((p.next_in - start) as usize).min(samples.len());
            samples = &samples[skip..];
            if samples.is_empty() {
                return;
            }
        } else {
            // Within rounding of where it should be: contiguous.
        }
        p.next_in = p.next_in.max(start) + samples.len() as u64;
        let mut done = ended.unwrap_or_default();
        done.extend(Self::resample_and_cut(p, samples).unwrap_or_default());
        for u in done {
            let p = &mut self.parties[party];
            p.offered = 0;
            p.pause_offered = false;
            self.send(party, u);
        }
        self.offer_partial(party);
    }

    fn resample_and_cut(p: &mut PartyFront, samples: &[f32]) -> Option<Vec<UtteranceAudio>> {
        p.at_16k.clear();
        p.resampler.push(samples, &mut p.at_16k);
        let done = p.cutter.push(&p.at_16k);
        (!done.is_empty()).then_some(done)
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
        if self.scheduler.push_utterance(speech).is_err() {
            let n = self.info.dropped_utterances.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(
                call = %self.info.call.id,
                dropped_total = n,
                "recogniser busy: dropped a {seconds:.1} s utterance"
            );
        }
    }
}
