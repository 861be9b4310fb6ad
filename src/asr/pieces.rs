//! Recordings of any length in bounded memory: the 16 kHz audio arrives in chunks and is heard
//! in pieces cut inside long pauses, each piece carrying the language and the text so far into
//! the next.
//!
//! Whole-recording transcription ([`Transcriber::transcribe`]) holds the samples, the speech
//! voice activity kept and its log-mel spectrogram at once: about 0.5 GB per hour of audio per
//! party. Pieces hold at most [`MAX_PIECE_S`] of audio each. A piece ends inside a pause of
//! at least 2 s (where a window ends anyway: a window never runs across a removed gap that
//! long), so the windows are those of the whole recording; what differs is the log-mel's
//! floor (80 dB below the loudest frame of the piece instead of the recording) and the voice
//! activity's hysteresis starting afresh on the pause's silence (its detector runs on).

use std::collections::VecDeque;

use anyhow::Result;

use super::mel::SAMPLE_RATE;
use super::transcribe::{map_to_original, round_ms, Carry, LongForm, WINDOW_BREAK_GAP_S};
use super::{Segment, TranscribeOptions, Transcriber, Transcript};
use crate::audio::vad::{FrameScorer, SpeechOnly, FRAME};

/// Once this much audio (seconds) waits, the latest long pause in it ends a piece.
pub const PIECE_S: f64 = 240.0;
/// Audio with no long pause is cut at this length (seconds), at its longest pause.
pub const MAX_PIECE_S: f64 = 480.0;

/// Silence left before the cut on a pause at the end of the audio so far (seconds): the next
/// piece's voice activity starts on silence.
const LEAD_IN_S: f64 = 1.0;

/// One party's recording, heard piece by piece as its audio arrives.
///
/// [`push`](Self::push) 16 kHz mono chunks in order, then [`finish`](Self::finish). Without
/// voice activity (`opts.vad` `None`) nothing tells where a pause is, and the recording is
/// heard whole at the end, as [`Transcriber::transcribe`] would.
///
/// Several recordings can also be heard together, a window of each per batch
/// ([`hear_together`]): made [`deferred`](Self::deferred), `push` only cuts the pieces, and
/// the caller feeds audio while [`needs_audio`](Self::needs_audio), ends it with
/// [`end_input`](Self::end_input), steps the recordings that [`has_work`](Self::has_work)
/// with [`hear_together`] and takes the transcript with [`into_transcript`](Self::into_transcript).
pub struct LongRecording<'a> {
    transcriber: &'a Transcriber,
    opts: &'a TranscribeOptions,
    /// Audio not yet cut; starts at sample `start` of the recording, a whole number of
    /// voice-activity frames.
    buffer: Vec<f32>,
    start: usize,
    /// Samples pushed in all.
    total: usize,
    /// Voice activity of `buffer`'s frames, scored as they arrive.
    scorer: FrameScorer,
    carry: Option<Carry>,
    segments: Vec<Segment>,
    piece: usize,
    max_piece: usize,
    heard: usize,
    /// Pieces cut and not yet begun, oldest first.
    waiting: VecDeque<Piece>,
    /// The piece being heard.
    current: Option<Hearing>,
    /// Pieces wait for [`hear_together`] instead of being heard as they are cut.
    deferred: bool,
    /// [`end_input`](Self::end_input) was called.
    ended: bool,
}

/// A piece cut from a recording, not yet begun.
struct Piece {
    /// Sample of the recording where it starts.
    start: usize,
    /// Its speech (voice activity's regions joined), or all its samples without voice
    /// activity.
    audio: PieceAudio,
}

enum PieceAudio {
    Speech(SpeechOnly),
    Whole(Vec<f32>),
}

/// A piece being heard, window by window.
struct Hearing {
    start: usize,
    /// For mapping its segments back to the recording's time (`None`: heard whole).
    speech: Option<SpeechOnly>,
    form: LongForm,
}

impl Transcriber {
    /// A recording to hear piece by piece (see [`LongRecording`]).
    pub fn long_recording<'a>(&'a self, opts: &'a TranscribeOptions) -> LongRecording<'a> {
        LongRecording {
            transcriber: self,
            opts,
            buffer: Vec::new(),
            start: 0,
            total: 0,
            scorer: FrameScorer::new(),
            carry: None,
            segments: Vec::new(),
            piece: (PIECE_S * SAMPLE_RATE as f64) as usize,
            max_piece: (MAX_PIECE_S * SAMPLE_RATE as f64) as usize,
            heard: 0,
            waiting: VecDeque::new(),
            current: None,
            deferred: false,
            ended: false,
        }
    }
}

impl LongRecording<'_> {
    /// Sets the piece lengths (seconds; for tests of the cuts on short audio).
    pub fn with_piece_s(mut self, piece_s: f64, max_piece_s: f64) -> Self {
        self.piece = (piece_s * SAMPLE_RATE as f64) as usize;
        self.max_piece = (max_piece_s.max(piece_s) * SAMPLE_RATE as f64) as usize;
        self
    }

    /// Pieces wait to be heard by [`hear_together`] (see [`LongRecording`]).
    pub fn deferred(mut self) -> Self {
        self.deferred = true;
        self
    }

    /// Pieces cut and heard so far (the rest is heard by [`finish`](Self::finish)).
    pub fn pieces_heard(&self) -> usize {
        self.heard
    }

    /// Takes in the next 16 kHz samples; hears a piece when enough has arrived (cuts it, when
    /// deferred). Errors: recognition failed.
    pub fn push(&mut self, samples: &[f32]) -> Result<()> {
        self.buffer.extend_from_slice(samples);
        self.total += samples.len();
        if self.opts.vad.is_some() {
            self.scorer.push(samples);
        }
        while self.opts.vad.is_some() && self.buffer.len() >= self.piece {
            if !self.cut_piece() {
                break;
            }
        }
        if !self.deferred {
            self.hear_alone()?;
        }
        Ok(())
    }

    /// Hears the rest and returns the transcript, in the recording's time.
    pub fn finish(mut self) -> Result<Transcript> {
        self.end_input();
        self.hear_alone()?;
        Ok(self.into_transcript())
    }

    /// No more audio will come: the rest becomes the last piece.
    pub fn end_input(&mut self) {
        if self.ended {
            return;
        }
        self.ended = true;
        let rest = std::mem::take(&mut self.buffer);
        let audio = match &self.opts.vad {
            Some(vad) => {
                self.scorer.flush();
                let regions = self.scorer.regions(rest.len(), vad);
                if regions.is_empty() {
                    return;
                }
                PieceAudio::Speech(SpeechOnly::new(&rest, &regions))
            }
            None => PieceAudio::Whole(rest),
        };
        self.waiting.push_back(Piece {
            start: self.start,
            audio,
        });
    }

    /// Whether more audio is needed before there is anything to hear.
    pub fn needs_audio(&self) -> bool {
        !self.ended && !self.has_work()
    }

    /// Pieces cut and not yet begun.
    pub fn backlog(&self) -> usize {
        self.waiting.len()
    }

    /// Whether a piece is being heard or waits.
    pub fn has_work(&self) -> bool {
        self.current.is_some() || !self.waiting.is_empty()
    }

    /// The transcript, in the recording's time, once everything pushed has been heard (what
    /// has not been is left out).
    pub fn into_transcript(mut self) -> Transcript {
        let carry = self.carry.take();
        let said = !self.segments.is_empty();
        let (language, uncovered_language) = match carry {
            Some(c) if said => (c.language, c.uncovered_language),
            // A language guessed from silence means nothing; a forced one stays.
            _ => (self.opts.language.clone(), None),
        };
        Transcript {
            language,
            duration_s: self.total as f64 / SAMPLE_RATE as f64,
            segments: self.segments,
            uncovered_language,
        }
    }

    /// Hears every piece cut so far, one window after another.
    fn hear_alone(&mut self) -> Result<()> {
        while self.begin()? {
            let hearing = self.current.as_mut().expect("begun");
            self.transcriber.next_window(&mut hearing.form, self.opts)?;
            self.end_if_done();
        }
        Ok(())
    }

    /// Makes the next waiting piece the current one, unless one is being heard. Returns
    /// whether a piece is being heard (its form not done).
    fn begin(&mut self) -> Result<bool> {
        while self.current.is_none() {
            let Some(piece) = self.waiting.pop_front() else {
                return Ok(false);
            };
            let t = self.transcriber;
            let (speech, mut form) = match piece.audio {
                PieceAudio::Speech(speech) => {
                    let form = t.long_form_of(&speech.samples, Some(&speech), self.opts)?;
                    (Some(speech), form)
                }
                PieceAudio::Whole(samples) => (None, t.long_form_of(&samples, None, self.opts)?),
            };
            if let Some(c) = self.carry.take() {
                form.carry_on(c);
            }
            self.current = Some(Hearing {
                start: piece.start,
                speech,
                form,
            });
            self.end_if_done();
        }
        Ok(true)
    }

    /// Once the current piece's form is done: places its segments in the recording's time
    /// and keeps what the next piece carries on with.
    fn end_if_done(&mut self) {
        if !self.current.as_ref().is_some_and(|h| h.form.done()) {
            return;
        }
        let Hearing {
            start,
            speech,
            form,
        } = self.current.take().expect("checked");
        let mut carry = form.into_carry();
        let segments = std::mem::take(&mut carry.segments);
        let segments = match &speech {
            Some(speech) => map_to_original(speech, segments),
            None => segments,
        };
        let offset = start as f64 / SAMPLE_RATE as f64;
        for mut s in segments {
            s.start_s = round_ms(s.start_s + offset);
            s.end_s = round_ms(s.end_s + offset);
            self.segments.push(s);
        }
        self.carry = Some(carry);
        self.heard += 1;
    }

    /// Cuts the waiting audio at its latest long pause (at its longest pause once it reaches
    /// the maximum) and queues the part before. Returns whether it cut.
    fn cut_piece(&mut self) -> bool {
        let Some(vad) = &self.opts.vad else {
            return false;
        };
        let regions = self.scorer.regions(self.buffer.len(), vad);
        let Some(cut) = cut_point(
            &regions,
            self.buffer.len(),
            self.buffer.len() >= self.max_piece,
        ) else {
            return false;
        };
        let before: Vec<_> = regions
            .iter()
            .filter(|r| r.start < cut)
            .map(|r| r.start..r.end.min(cut))
            .collect();
        let piece: Vec<f32> = self.buffer.drain(..cut).collect();
        self.scorer.drain(cut / FRAME);
        tracing::debug!(
            start_s = self.start as f64 / SAMPLE_RATE as f64,
            length_s = cut as f64 / SAMPLE_RATE as f64,
            "piece cut"
        );
        if !before.is_empty() {
            self.waiting.push_back(Piece {
                start: self.start,
                audio: PieceAudio::Speech(SpeechOnly::new(&piece, &before)),
            });
        }
        self.start += cut;
        true
    }
}

/// Hears the next window of each recording that [`has_work`](LongRecording::has_work)
/// (recordings of one transcriber), together: one encoder and decoder batch per window length
/// instead of one per recording, as [`Transcriber::transcribe_batch`] does for first windows.
/// Within a recording windows and pieces stay in order (each carries its text into the next).
/// One result per recording: a batch that fails as a whole (out of device memory, say) is
/// heard again one recording at a time, so one bad recording cannot sink the others.
pub fn hear_together(recordings: &mut [&mut LongRecording<'_>]) -> Vec<Result<()>> {
    let mut results: Vec<Result<()>> = (0..recordings.len()).map(|_| Ok(())).collect();
    let mut active: Vec<usize> = Vec::new();
    for (i, r) in recordings.iter_mut().enumerate() {
        match r.begin() {
            Ok(true) => active.push(i),
            Ok(false) => {}
            Err(e) => results[i] = Err(e),
        }
    }
    let Some(&first) = active.first() else {
        return results;
    };
    let transcriber = recordings[first].transcriber;
    // Whether the active recordings' windows were all taken in one batch.
    let mut batched = false;
    if active.len() > 1 {
        let opts: Vec<&TranscribeOptions> = active.iter().map(|&i| recordings[i].opts).collect();
        let mut forms: Vec<&mut LongForm> = Vec::with_capacity(active.len());
        let mut want = active.iter().peekable();
        for (i, r) in recordings.iter_mut().enumerate() {
            if want.peek() == Some(&&i) {
                want.next();
                forms.push(&mut r.current.as_mut().expect("begun").form);
            }
        }
        match transcriber.windows_together(&mut forms, &opts) {
            Ok(()) => batched = true,
            Err(e) => tracing::warn!("batched hearing failed, hearing one by one: {e:#}"),
        }
    }
    for &i in &active {
        let r = &mut *recordings[i];
        let hearing = r.current.as_mut().expect("begun");
        // Alone, also after a failed batch (a form the batch took a window of before it
        // failed goes on from there).
        if !batched && !hearing.form.done() {
            if let Err(e) = transcriber.next_window(&mut hearing.form, r.opts) {
                results[i] = Err(e);
                continue;
            }
        }
        r.end_if_done();
    }
    results
}

/// Where to end a piece of `len` samples whose speech is `regions` (sample ranges, sorted):
/// a whole number of voice-activity frames, inside a pause of at least 2 s, the latest one.
/// The pause may be the end of the audio so far when it is long enough that speech after it
/// would still be 2 s away (a cut [`LEAD_IN_S`] before the end). `force`: when there is no
/// such pause, the middle of the longest pause between regions, or the end.
fn cut_point(regions: &[std::ops::Range<usize>], len: usize, force: bool) -> Option<usize> {
    let rate = SAMPLE_RATE as f64;
    let gap = (WINDOW_BREAK_GAP_S * rate) as usize;
    let lead_in = (LEAD_IN_S * rate) as usize;
    let frame_floor = |n: usize| n / FRAME * FRAME;
    let last_end = regions.last().map_or(0, |r| r.end);
    // Speech after the end can start no earlier than the end less voice activity's padding.
    if len.saturating_sub(last_end) >= gap + lead_in {
        return Some(frame_floor(len - lead_in)).filter(|&c| c > 0);
    }
    let pauses = regions.windows(2).map(|w| (w[0].end, w[1].start));
    if let Some((a, b)) = pauses.clone().rfind(|(a, b)| b - a >= gap) {
        return Some(frame_floor(a + (b - a) / 2)).filter(|&c| c > 0);
    }
    if !force {
        return None;
    }
    let cut = match pauses.max_by_key(|(a, b)| b - a) {
        Some((a, b)) => frame_floor(a + (b - a) / 2),
        None => frame_floor(len),
    };
    Some(cut).filter(|&c| c > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: usize = 16_000;

    #[test]
    fn cuts_in_the_latest_long_pause() {
        // Speech 0-10 s, 13-20 s, 25-30 s; 31 s of audio.
        let r = vec![0..10 * S, 13 * S..20 * S, 25 * S..30 * S];
        let cut = cut_point(&r, 31 * S, false).unwrap();
        assert!(cut > 20 * S && cut < 25 * S, "{cut}");
        assert_eq!(cut % FRAME, 0);
        // Mid-pause: 22.5 s, floored to a frame.
        assert_eq!(cut, (22 * S + S / 2) / FRAME * FRAME);
    }

    #[test]
    fn a_long_enough_silence_at_the_end_is_a_pause() {
        let one = 0..10 * S;
        let r = std::slice::from_ref(&one);
        assert_eq!(cut_point(r, 13 * S, false), Some(12 * S / FRAME * FRAME));
        // 2.5 s of silence at the end: speech may follow within 2 s, so no cut there.
        assert_eq!(cut_point(r, 12 * S + S / 2, false), None);
        // No speech at all.
        assert_eq!(
            cut_point(&[], 240 * S, false),
            Some(239 * S / FRAME * FRAME)
        );
    }

    #[test]
    fn no_long_pause_waits_until_forced() {
        let r = vec![0..10 * S, 11 * S..20 * S, 20 * S + S / 2..30 * S];
        assert_eq!(cut_point(&r, 30 * S, false), None);
        let forced = cut_point(&r, 30 * S, true).unwrap();
        assert!(forced > 10 * S && forced < 11 * S, "{forced}");
        // One region from start to end: cut at the end.
        assert_eq!(
            cut_point(std::slice::from_ref(&(0..30 * S)), 30 * S, true),
            Some(30 * S)
        );
    }
}
