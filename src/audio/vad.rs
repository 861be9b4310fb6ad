//! Voice activity: which stretches of a 16 kHz recording hold speech.
//!
//! Scores come from earshot's small neural detector (16 ms frames); this file turns the
//! per-frame scores into padded, merged speech regions. Whisper invents text in long silences
//! and misplaces its timestamps after them, so the recogniser only sees these regions.

/// Samples per detector frame (16 ms at 16 kHz).
pub const FRAME: usize = 256;

#[derive(Debug, Clone)]
pub struct VadConfig {
    /// A frame scoring at least this starts speech.
    pub onset: f32,
    /// Speech continues while frames score at least this.
    pub offset: f32,
    /// Shorter bursts are dropped (clicks, coughs).
    pub min_speech_s: f32,
    /// Silence shorter than this does not end a region.
    pub min_silence_s: f32,
    /// Added before and after each region, so word edges are not cut.
    pub pad_s: f32,
}

impl Default for VadConfig {
    fn default() -> Self {
        Self {
            onset: 0.5,
            offset: 0.35,
            min_speech_s: 0.25,
            min_silence_s: 0.6,
            pad_s: 0.2,
        }
    }
}

/// Speech regions as sample ranges `start..end`, sorted and non-overlapping.
pub fn speech_regions(samples: &[f32], cfg: &VadConfig) -> Vec<std::ops::Range<usize>> {
    let mut detector = earshot::Detector::default();
    let scores: Vec<f32> = samples
        .chunks(FRAME)
        .map(|chunk| {
            if chunk.len() == FRAME {
                detector.predict_f32(chunk)
            } else {
                let mut last = [0f32; FRAME];
                last[..chunk.len()].copy_from_slice(chunk);
                detector.predict_f32(&last)
            }
        })
        .collect();
    regions_from_scores(&scores, samples.len(), cfg)
}

/// Speech starts at a frame scoring at least `onset` and continues while frames score at least
/// `offset`; it ends after `end_after` quiet frames in a row. Both the file path
/// ([`speech_regions`]) and the live utterance cutter (`audio::utterance`) use this one
/// state machine.
#[derive(Debug, Clone)]
pub struct Hysteresis {
    onset: f32,
    offset: f32,
    end_after: usize,
    speaking: bool,
    quiet: usize,
}

/// What one frame's score did to the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadStep {
    /// Not speaking, and this frame did not start speech.
    Silence,
    /// This frame starts speech.
    Started,
    /// Still speaking (the frame may be quiet, but not yet for long enough).
    Speaking,
    /// This frame ends speech: the last `quiet` frames (this one included) were quiet.
    Ended { quiet: usize },
}

impl Hysteresis {
    pub fn new(onset: f32, offset: f32, end_after: usize) -> Self {
        Self {
            onset,
            offset,
            end_after,
            speaking: false,
            quiet: 0,
        }
    }

    pub fn step(&mut self, score: f32) -> VadStep {
        if !self.speaking {
            if score >= self.onset {
                self.speaking = true;
                self.quiet = 0;
                return VadStep::Started;
            }
            return VadStep::Silence;
        }
        if score < self.offset {
            self.quiet += 1;
            if self.quiet >= self.end_after {
                self.speaking = false;
                return VadStep::Ended { quiet: self.quiet };
            }
        } else {
            self.quiet = 0;
        }
        VadStep::Speaking
    }

    pub fn is_speaking(&self) -> bool {
        self.speaking
    }

    /// Quiet frames in a row at the end of the speech so far (0 when not speaking).
    pub fn quiet_frames(&self) -> usize {
        if self.speaking {
            self.quiet
        } else {
            0
        }
    }

    /// Speech goes on, but its quiet run starts again (after a cut at the maximum length).
    pub fn restart_quiet(&mut self) {
        self.quiet = 0;
    }

    /// Back to silence (a gap in the audio ends whatever was being said).
    pub fn reset(&mut self) {
        self.speaking = false;
        self.quiet = 0;
    }
}

/// The hysteresis and clean-up, apart from the detector so it can be tested on its own.
pub fn regions_from_scores(
    scores: &[f32],
    n_samples: usize,
    cfg: &VadConfig,
) -> Vec<std::ops::Range<usize>> {
    let frames_of = |s: f32| (s * 16_000.0 / FRAME as f32).round() as usize;
    let (min_speech, min_silence) = (frames_of(cfg.min_speech_s), frames_of(cfg.min_silence_s));
    let mut raw: Vec<(usize, usize)> = Vec::new();
    let mut hysteresis = Hysteresis::new(cfg.onset, cfg.offset, min_silence);
    let mut start = 0;
    for (i, &s) in scores.iter().enumerate() {
        match hysteresis.step(s) {
            VadStep::Started => start = i,
            VadStep::Ended { quiet } => raw.push((start, i + 1 - quiet)),
            VadStep::Silence | VadStep::Speaking => {}
        }
    }
    if hysteresis.is_speaking() {
        raw.push((start, scores.len() - hysteresis.quiet_frames()));
    }
    let pad = (cfg.pad_s * 16_000.0) as usize;
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    for (a, b) in raw.into_iter().filter(|(a, b)| b - a >= min_speech.max(1)) {
        let s = (a * FRAME).saturating_sub(pad);
        let e = (b * FRAME + pad).min(n_samples);
        match out.last_mut() {
            Some(prev) if s <= prev.end => prev.end = prev.end.max(e),
            _ => out.push(s..e),
        }
    }
    out
}

/// Speech regions joined into one signal, with the map back to the original time line.
#[derive(Debug, Clone)]
pub struct SpeechOnly {
    pub samples: Vec<f32>,
    /// `(start in the joined signal, start in the original)` of each region, in samples.
    pieces: Vec<(usize, usize)>,
}

impl SpeechOnly {
    pub fn new(samples: &[f32], regions: &[std::ops::Range<usize>]) -> Self {
        let mut joined = Vec::new();
        let mut pieces = Vec::new();
        for r in regions {
            pieces.push((joined.len(), r.start));
            joined.extend_from_slice(&samples[r.clone()]);
        }
        Self {
            samples: joined,
            pieces,
        }
    }

    /// Maps a time in the joined signal (seconds) to the original recording.
    pub fn original_time(&self, t: f64) -> f64 {
        let sample = (t * 16_000.0).max(0.0) as usize;
        let idx = self.pieces.partition_point(|&(joined, _)| joined <= sample);
        match idx.checked_sub(1).map(|i| self.pieces[i]) {
            Some((joined, orig)) => (orig + (sample - joined)) as f64 / 16_000.0,
            None => t,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hysteresis_drops_blips_bridges_short_pauses_and_pads() {
        let cfg = VadConfig::default();
        let mut scores = vec![0.0f32; 400];
        scores[10] = 0.9; // a 16 ms click: dropped
        for s in &mut scores[100..150] {
            *s = 0.9;
        }
        for s in &mut scores[160..200] {
            *s = 0.6; // 10 frames (160 ms) of pause before: bridged
        }
        for s in &mut scores[300..340] {
            *s = 0.8;
        }
        let n = 400 * FRAME;
        let r = regions_from_scores(&scores, n, &cfg);
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(r[0].start, 100 * FRAME - 3200);
        assert_eq!(r[0].end, 200 * FRAME + 3200);
        assert_eq!(r[1].start, 300 * FRAME - 3200);
    }

    #[test]
    fn silence_has_no_speech_and_times_map_back() {
        assert!(speech_regions(&vec![0.0; 32_000], &VadConfig::default()).is_empty());
        let samples: Vec<f32> = (0..64_000).map(|i| i as f32).collect();
        let only = SpeechOnly::new(&samples, &[16_000..24_000, 48_000..56_000]);
        assert_eq!(only.samples.len(), 16_000);
        assert_eq!(only.original_time(0.25), 1.25);
        assert_eq!(only.original_time(0.75), 3.25);
    }
}
