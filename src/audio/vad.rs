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
///
/// Frames that are a steady tone (hold-music beeps, DTMF, dial and busy tones) are not speech,
/// whatever the detector scores them: see [`ToneCheck`].
pub fn speech_regions(samples: &[f32], cfg: &VadConfig) -> Vec<std::ops::Range<usize>> {
    let mut scorer = FrameScorer::new();
    scorer.push(samples);
    scorer.flush();
    scorer.regions(samples.len(), cfg)
}

/// Voice-activity scores of a stream, frame by frame as its samples arrive: the detector's
/// score and the tone check's peak of each 16 ms frame. The detector's state runs on across
/// [`drain`](Self::drain)s, so a long recording heard in pieces is scored as if whole.
pub struct FrameScorer {
    detector: earshot::Detector,
    tone: ToneCheck,
    /// Samples of the next, incomplete frame.
    partial: Vec<f32>,
    scores: Vec<f32>,
    /// The strongest peak's bin of each frame that may be a tone.
    peaks: Vec<Option<usize>>,
}

impl Default for FrameScorer {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameScorer {
    pub fn new() -> Self {
        Self {
            detector: earshot::Detector::default(),
            tone: ToneCheck::new(),
            partial: Vec::with_capacity(FRAME),
            scores: Vec::new(),
            peaks: Vec::new(),
        }
    }

    /// Scores every whole frame the samples complete.
    pub fn push(&mut self, mut samples: &[f32]) {
        while !samples.is_empty() {
            let take = (FRAME - self.partial.len()).min(samples.len());
            self.partial.extend_from_slice(&samples[..take]);
            samples = &samples[take..];
            if self.partial.len() == FRAME {
                self.score_partial();
            }
        }
    }

    /// Ends the stream: a last incomplete frame is scored padded with silence.
    pub fn flush(&mut self) {
        if !self.partial.is_empty() {
            self.partial.resize(FRAME, 0.0);
            self.score_partial();
        }
    }

    fn score_partial(&mut self) {
        let mut frame = [0f32; FRAME];
        frame.copy_from_slice(&self.partial);
        self.partial.clear();
        self.scores.push(self.detector.predict_f32(&frame));
        self.peaks.push(self.tone.tone_bin(&frame));
    }

    /// Speech regions of the frames scored (as sample ranges from the first frame not
    /// drained, clipped to `n_samples`), tones excluded.
    pub fn regions(&self, n_samples: usize, cfg: &VadConfig) -> Vec<std::ops::Range<usize>> {
        let mut scores = self.scores.clone();
        for (score, tone) in scores.iter_mut().zip(tone_runs(&self.peaks)) {
            if tone {
                *score = 0.0;
            }
        }
        regions_from_scores(&scores, n_samples, cfg)
    }

    /// Forgets the first `frames` frames (heard already).
    pub fn drain(&mut self, frames: usize) {
        let frames = frames.min(self.scores.len());
        self.scores.drain(..frames);
        self.peaks.drain(..frames);
    }
}

/// Frames at least this many in a row ([`TONE_RUN`] x 16 ms = 288 ms) with their energy at one
/// steady pitch make a tone. Synthetic speech (espeak-ng) holds a vowel that steady for at most
/// 10 frames on the field cases; hold-music beeps last 25.
pub const TONE_RUN: usize = 18;

/// Which 16 ms frames of `samples` belong to a steady tone (see [`tone_runs`]); files and
/// streams get the same from [`FrameScorer`], which scores voice activity in the same pass.
#[cfg(test)]
fn tone_frames(samples: &[f32]) -> Vec<bool> {
    let mut check = ToneCheck::new();
    let peaks: Vec<Option<usize>> = samples
        .chunks(FRAME)
        .map(|chunk| {
            let mut frame = [0f32; FRAME];
            frame[..chunk.len()].copy_from_slice(chunk);
            check.tone_bin(&frame)
        })
        .collect();
    tone_runs(&peaks)
}

/// Which frames belong to a steady tone, given each frame's possible-tone peak
/// ([`ToneCheck::tone_bin`]): [`TONE_RUN`] or more frames in a row whose energy lies (over
/// [`TONE_SHARE`]) near the same spectral peaks, within one bin. A voice glides in pitch and
/// formants from frame to frame; a beep, a dial tone or DTMF does not.
fn tone_runs(peaks: &[Option<usize>]) -> Vec<bool> {
    let mut out = vec![false; peaks.len()];
    let mut start = 0;
    while start < peaks.len() {
        let Some(bin) = peaks[start] else {
            start += 1;
            continue;
        };
        let mut end = start + 1;
        while end < peaks.len() && peaks[end].is_some_and(|b| b.abs_diff(bin) <= 1) {
            end += 1;
        }
        if end - start >= TONE_RUN {
            out[start..end].fill(true);
        }
        start = end;
    }
    out
}

/// The steady-peak run a live stream is in, frame by frame: the causal form of
/// [`tone_runs`], for streams that cannot wait to see a run's end.
pub struct ToneTracker {
    check: ToneCheck,
    /// The bin the run started at, and its length in frames.
    run: Option<(usize, usize)>,
}

impl Default for ToneTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl ToneTracker {
    pub fn new() -> Self {
        Self {
            check: ToneCheck::new(),
            run: None,
        }
    }

    /// Feeds the next frame; returns the length in frames of the steady-peak run it belongs
    /// to (0 when it cannot be part of a tone). The run is a tone from [`TONE_RUN`] frames on.
    pub fn step(&mut self, frame: &[f32; FRAME]) -> usize {
        let bin = self.check.tone_bin(frame);
        self.run = match (self.run, bin) {
            (_, None) => None,
            (Some((first, len)), Some(bin)) if first.abs_diff(bin) <= 1 => Some((first, len + 1)),
            (_, Some(bin)) => Some((bin, 1)),
        };
        self.run.map_or(0, |(_, len)| len)
    }
}

/// Whether a frame is a steady tone: nearly all of its energy (over [`TONE_SHARE`]) within
/// two bins of at most two spectral peaks (a sine, or a DTMF pair). Voiced speech spreads its
/// energy over many harmonics and formants; unvoiced speech is noise-like.
pub struct ToneCheck {
    fft: std::sync::Arc<dyn rustfft::Fft<f32>>,
    window: Vec<f32>,
    buf: Vec<rustfft::num_complex::Complex<f32>>,
}

/// Share of a frame's energy near its two strongest peaks above which it may be a tone.
pub const TONE_SHARE: f32 = 0.9;

/// A tone's strongest peak lies at or above this. Call-progress tones (ITU-T E.180: dial,
/// ringback, busy) are 350-620 Hz, DTMF 697-1633 Hz, the field case's hold-music beeps 440 Hz;
/// a voice's fundamental is 80-300 Hz, and some synthetic voices put nearly all their energy
/// there for 0.4-0.6 s (runs of 25-36 frames at 125-190 Hz in the test clips gift_cards and
/// pharmacy), which the check took for tones before this floor.
pub const TONE_MIN_HZ: f32 = 300.0;

/// Width of one bin of a frame's spectrum (16 kHz / 256).
const BIN_HZ: f32 = super::TARGET_RATE as f32 / FRAME as f32;

impl Default for ToneCheck {
    fn default() -> Self {
        Self::new()
    }
}

impl ToneCheck {
    pub fn new() -> Self {
        let fft = rustfft::FftPlanner::new().plan_fft_forward(FRAME);
        let window = (0..FRAME)
            .map(|i| 0.5 - 0.5 * (2.0 * std::f32::consts::PI * i as f32 / FRAME as f32).cos())
            .collect();
        Self {
            fft,
            window,
            buf: vec![Default::default(); FRAME],
        }
    }

    /// The share of the frame's energy near its two strongest peaks (0 for silence).
    pub fn peak_share(&mut self, frame: &[f32; FRAME]) -> f32 {
        self.peak(frame).0
    }

    /// The share, and the strongest peak's bin.
    pub fn peak(&mut self, frame: &[f32; FRAME]) -> (f32, usize) {
        for ((b, &x), &w) in self.buf.iter_mut().zip(frame).zip(&self.window) {
            *b = rustfft::num_complex::Complex::new(x * w, 0.0);
        }
        self.fft.process(&mut self.buf);
        let mut power: Vec<f32> = self.buf[..FRAME / 2].iter().map(|c| c.norm_sqr()).collect();
        // Below 80 Hz (bins 0..1) is hum and offset, not the signal.
        power[0] = 0.0;
        power[1] = 0.0;
        let total: f32 = power.iter().sum();
        if total < 1e-6 {
            return (0.0, 0);
        }
        let mut near = 0.0;
        let mut first = None;
        for _ in 0..2 {
            let (k, _) =
                power.iter().enumerate().fold(
                    (0, 0.0),
                    |best, (i, &p)| if p > best.1 { (i, p) } else { best },
                );
            first.get_or_insert(k);
            let band = k.saturating_sub(2)..(k + 3).min(power.len());
            near += power[band.clone()].iter().sum::<f32>();
            power[band].fill(0.0);
        }
        (near / total, first.unwrap_or(0))
    }

    /// The strongest peak's bin when the frame may be part of a tone: over [`TONE_SHARE`] of
    /// its energy at one or two peaks, the strongest at [`TONE_MIN_HZ`] or above.
    pub fn tone_bin(&mut self, frame: &[f32; FRAME]) -> Option<usize> {
        let (share, bin) = self.peak(frame);
        (share > TONE_SHARE && bin as f32 * BIN_HZ >= TONE_MIN_HZ).then_some(bin)
    }

    pub fn is_tone(&mut self, frame: &[f32; FRAME]) -> bool {
        self.tone_bin(frame).is_some()
    }
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

/// Silence put between two joined regions (samples, 0.3 s): the recogniser hears a pause
/// where one was removed, and does not run two sentences into one (a robocall played twice, 3 s
/// apart, was heard as "Social Security added murders" without it).
pub const JOIN_PAUSE: usize = 4_800;

/// Speech regions joined into one signal (with [`JOIN_PAUSE`] of silence between regions), and
/// the exact map back to the original time line.
#[derive(Debug, Clone)]
pub struct SpeechOnly {
    pub samples: Vec<f32>,
    /// `(start in the joined signal, start in the original, length)` of each region, in
    /// samples.
    pieces: Vec<(usize, usize, usize)>,
}

impl SpeechOnly {
    pub fn new(samples: &[f32], regions: &[std::ops::Range<usize>]) -> Self {
        let mut joined = Vec::new();
        let mut pieces = Vec::new();
        for (i, r) in regions.iter().enumerate() {
            if i > 0 {
                joined.resize(joined.len() + JOIN_PAUSE, 0.0);
            }
            pieces.push((joined.len(), r.start, r.len()));
            joined.extend_from_slice(&samples[r.clone()]);
        }
        Self {
            samples: joined,
            pieces,
        }
    }

    /// Maps a time in the joined signal (seconds) to the original recording. A time inside a
    /// pause between regions maps to the start of the region after it.
    pub fn original_time(&self, t: f64) -> f64 {
        self.map(t, false)
    }

    /// As [`original_time`](Self::original_time), but a time inside a pause maps to the end
    /// of the region before it (for the end of a stretch of text).
    pub fn original_end(&self, t: f64) -> f64 {
        self.map(t, true)
    }

    fn map(&self, t: f64, end: bool) -> f64 {
        let sample = (t * 16_000.0).max(0.0).round() as usize;
        let idx = self
            .pieces
            .partition_point(|&(joined, _, _)| joined <= sample);
        let Some(i) = idx.checked_sub(1) else {
            return self
                .pieces
                .first()
                .map_or(t, |&(_, orig, _)| orig as f64 / 16_000.0);
        };
        let (joined, orig, len) = self.pieces[i];
        let offset = sample - joined;
        if offset <= len {
            return (orig + offset) as f64 / 16_000.0;
        }
        // In the pause after region i.
        match self.pieces.get(i + 1) {
            Some(&(_, next, _)) if !end => next as f64 / 16_000.0,
            _ => (orig + len) as f64 / 16_000.0,
        }
    }

    /// The joined-signal times (seconds) where a region begins after a removed gap of at least
    /// `min_gap_s` seconds.
    pub fn joins_after_gaps(&self, min_gap_s: f64) -> Vec<f64> {
        let min_gap = (min_gap_s * 16_000.0) as usize;
        self.pieces
            .windows(2)
            .filter(|w| w[1].1.saturating_sub(w[0].1 + w[0].2) >= min_gap)
            .map(|w| w[1].0 as f64 / 16_000.0)
            .collect()
    }

    /// The joined-signal times (seconds) where each region after the first begins.
    pub fn joins(&self) -> Vec<f64> {
        self.pieces
            .iter()
            .skip(1)
            .map(|&(joined, _, _)| joined as f64 / 16_000.0)
            .collect()
    }
}

/// Splits `text`, heard over `[start, end]`, at time `at` in proportion to its characters, at
/// the nearest word boundary (anywhere in text without spaces, such as Chinese). Returns the
/// two parts, either of which may be empty.
pub fn split_text_at(text: &str, start: f64, end: f64, at: f64) -> (String, String) {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() || end <= start {
        return (text.to_owned(), String::new());
    }
    let share = ((at - start) / (end - start)).clamp(0.0, 1.0);
    let target = (share * chars.len() as f64).round() as usize;
    let cut = if chars.iter().any(|c| c.is_whitespace()) {
        // The whitespace nearest the proportional point.
        (0..=chars.len())
            .filter(|&i| i == 0 || i == chars.len() || chars[i].is_whitespace())
            .min_by_key(|&i| i.abs_diff(target))
            .unwrap_or(target)
    } else {
        target
    };
    (chars[..cut].iter().collect(), chars[cut..].iter().collect())
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
    fn tones_are_not_speech_but_a_voice_like_signal_is_not_a_tone() {
        let mut check = ToneCheck::new();
        let tone = |f: &[f32]| -> [f32; FRAME] {
            let mut out = [0f32; FRAME];
            for (i, o) in out.iter_mut().enumerate() {
                let t = (i + 1000) as f32 / 16_000.0;
                *o = f
                    .iter()
                    .map(|&hz| (2.0 * std::f32::consts::PI * hz * t).sin() * 0.3)
                    .sum();
            }
            out
        };
        assert!(check.is_tone(&tone(&[440.0])));
        // DTMF "5": 770 Hz + 1336 Hz.
        assert!(check.is_tone(&tone(&[770.0, 1336.0])));
        // A voiced sound: a 120 Hz fundamental with its first 20 harmonics.
        let harmonics: Vec<f32> = (1..=20).map(|k| 120.0 * k as f32).collect();
        assert!(
            !check.is_tone(&tone(&harmonics)),
            "{}",
            check.peak_share(&tone(&harmonics))
        );
        assert!(!check.is_tone(&[0.0; FRAME]));
        // Over a run: a 400 ms beep every second is tone; a voice gliding in pitch is not.
        let beeps: Vec<f32> = (0..32_000)
            .map(|i| {
                let t = i as f32 / 16_000.0;
                if t.fract() < 0.4 {
                    (2.0 * std::f32::consts::PI * 480.0 * t).sin() * 0.3
                } else {
                    0.0
                }
            })
            .collect();
        let marked = tone_frames(&beeps).iter().filter(|&&t| t).count();
        assert!((40..=52).contains(&marked), "{marked}");
        let glide: Vec<f32> = (0..32_000)
            .map(|i| {
                let t = i as f32 / 16_000.0;
                let f0 = 110.0 + 60.0 * (t * 3.0).sin();
                (1..=12)
                    .map(|k| (2.0 * std::f32::consts::PI * f0 * k as f32 * t).sin() * 0.05)
                    .sum()
            })
            .collect();
        assert_eq!(tone_frames(&glide).iter().filter(|&&t| t).count(), 0);
    }

    /// Prints the share of each second of a recording (`VISHGUARD_TONE_FILE`), for tuning.
    #[test]
    #[ignore]
    fn print_tone_shares() {
        let Ok(path) = std::env::var("VISHGUARD_TONE_FILE") else {
            return;
        };
        let s = crate::audio::load_16k(std::path::Path::new(&path), crate::audio::ChannelMode::Mix)
            .unwrap()
            .remove(0)
            .samples;
        let tones = tone_frames(&s);
        for (sec, second) in tones.chunks(16_000 / FRAME).enumerate() {
            eprintln!("{sec:3}: {}", second.iter().filter(|&&t| t).count());
        }
    }

    #[test]
    fn silence_has_no_speech_and_times_map_back() {
        assert!(speech_regions(&vec![0.0; 32_000], &VadConfig::default()).is_empty());
        let samples: Vec<f32> = (0..64_000).map(|i| i as f32).collect();
        let only = SpeechOnly::new(&samples, &[16_000..24_000, 48_000..56_000]);
        assert_eq!(only.samples.len(), 16_000 + JOIN_PAUSE);
        assert_eq!(only.original_time(0.25), 1.25);
        // In the pause between the regions: the next region's start, or the last one's end.
        assert_eq!(only.original_time(0.6), 3.0);
        assert_eq!(only.original_end(0.6), 1.5);
        assert_eq!(only.original_time(0.75 + 0.3), 3.25);
        assert_eq!(only.joins(), vec![0.8]);
        assert_eq!(
            split_text_at(" one two three four", 0.0, 4.0, 2.0),
            (" one two".to_owned(), " three four".to_owned())
        );
        assert_eq!(
            split_text_at("您的账户被冻结", 0.0, 7.0, 2.0),
            ("您的".to_owned(), "账户被冻结".to_owned())
        );
    }
}
