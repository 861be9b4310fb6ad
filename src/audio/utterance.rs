//! Cutting a live party's 16 kHz stream into utterances: voice activity (earshot, the same
//! [`Hysteresis`] as files), ended by a pause or cut at a maximum length, with a little audio
//! kept before each onset.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::vad::{Hysteresis, ToneTracker, VadStep, FRAME, TONE_RUN};
use super::TARGET_RATE;

const RATE: f64 = TARGET_RATE as f64;

/// Frames after a tone's last frame that are not speech either: the detector still scores
/// over the onset for a few frames after a beep stops (0.57 on the two frames after a 1 kHz
/// beep), which opened an utterance of nothing after each beep. In the hold-music unit test,
/// 3 or 4 frames still left some of these in 10 s of beeps (4: three), 5 none; 8 (128 ms)
/// for margin.
/// Speech starting inside the tail is not lost: the pre-roll keeps the audio before an onset.
const TONE_TAIL: usize = 8;

/// How a live stream is cut into utterances. All times in seconds of audio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UtteranceConfig {
    /// Voice activity decides where speech is. Off, every frame counts as speech, so the
    /// stream is cut into `max_utterance_s` pieces (silence and noise are heard too).
    pub vad: bool,
    /// A 16 ms frame scoring at least this starts speech.
    pub onset: f32,
    /// Speech goes on while frames score at least this.
    pub offset: f32,
    /// Silence that ends an utterance.
    pub end_silence_s: f64,
    /// Longer speech is cut here, so a transcript never waits long for a pause that does not
    /// come. A cut mid-sentence costs Whisper context (with 12 s, base alerted live on 2 more
    /// of the scam samples), but 12 s also doubled alert latency (tiny.en p95 0.56 -> 3.40 s
    /// with partials) and halved the calls kept up with, so 6 s it is.
    pub max_utterance_s: f64,
    /// An utterance that reaches `max_utterance_s` is cut at its quietest 16 ms frame within
    /// this last stretch (a gap between words, rather than inside one); the rest starts the
    /// next utterance. 0 cuts exactly at the maximum, the default: searching 1.5 s
    /// (`cargo bench --bench utterance_window`) stopped base looping on the Mandarin samples
    /// (CER 1.46 -> 0.82) but raised the real call's WER (tiny.en 0.198 -> 0.210 clean,
    /// 0.321 -> 0.395 phone; base 0.198 -> 0.210 clean) and base's English samples' (0.476 ->
    /// 0.505): the quietest point of noisy speech is not reliably a word gap.
    pub cut_search_s: f64,
    /// Audio kept before the onset, so first syllables are not clipped.
    pub pre_roll_s: f64,
    /// Shorter utterances are dropped (clicks, coughs).
    pub min_utterance_s: f64,
}

impl Default for UtteranceConfig {
    fn default() -> Self {
        Self {
            vad: true,
            onset: 0.5,
            offset: 0.35,
            end_silence_s: 0.5,
            max_utterance_s: 6.0,
            cut_search_s: 0.0,
            pre_roll_s: 0.3,
            min_utterance_s: 0.3,
        }
    }
}

impl UtteranceConfig {
    /// Errors name the key that is out of range.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("end_silence_s", self.end_silence_s),
            ("max_utterance_s", self.max_utterance_s),
        ];
        for (key, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!(
                    "{key} must be a positive number of seconds, not {v}"
                ));
            }
        }
        let non_negative = [
            ("cut_search_s", self.cut_search_s),
            ("pre_roll_s", self.pre_roll_s),
            ("min_utterance_s", self.min_utterance_s),
        ];
        for (key, v) in non_negative {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("{key} must be 0 or more seconds, not {v}"));
            }
        }
        for (key, v) in [("onset", self.onset), ("offset", self.offset)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{key} must be a score between 0 and 1, not {v}"));
            }
        }
        if self.max_utterance_s > 30.0 {
            return Err(format!(
                "max_utterance_s must be at most 30 s (one Whisper window), not {}",
                self.max_utterance_s
            ));
        }
        Ok(())
    }
}

/// A finished (or, for a partial hypothesis, still open) stretch of speech at 16 kHz.
#[derive(Debug, Clone, Default)]
pub struct UtteranceAudio {
    /// Seconds of audio time from the start of the stream.
    pub start_s: f64,
    pub samples: Vec<f32>,
    /// Voice activity chose this audio as speech (false with voice activity off, where the
    /// stream is cut into fixed pieces, silence and all).
    pub voiced: bool,
    /// The speaker was still talking when this utterance was cut at `max_utterance_s`: the
    /// next utterance starts mid-phrase, at this one's end.
    pub cut_in_speech: bool,
}

impl UtteranceAudio {
    pub fn end_s(&self) -> f64 {
        self.start_s + self.samples.len() as f64 / RATE
    }
}

/// Cuts one party's 16 kHz stream into utterances.
pub struct UtteranceCutter {
    cfg: UtteranceConfig,
    detector: Option<earshot::Detector>,
    /// Steady tones (hold-music beeps, dial tones, DTMF) are not speech: a frame in a tone
    /// scores 0, and an utterance the tone opened is dropped once the run is long enough to
    /// be known as one. Checked only with voice activity on.
    tone: Option<ToneTracker>,
    hysteresis: Hysteresis,
    frame: Vec<f32>,
    /// Audio time of the next sample to arrive (16 kHz samples since the start of the stream).
    clock: u64,
    pre_roll: VecDeque<f32>,
    /// The utterance being spoken: its first sample's time and its samples so far.
    current: Option<(u64, Vec<f32>)>,
    /// Audio time of the open utterance's onset (after its pre-roll).
    onset_at: u64,
    /// Frames after a tone that still count as it.
    tone_tail: usize,
}

impl UtteranceCutter {
    pub fn new(cfg: UtteranceConfig) -> Self {
        let end_after = (cfg.end_silence_s * RATE / FRAME as f64) as usize;
        Self {
            detector: cfg.vad.then(earshot::Detector::default),
            tone: cfg.vad.then(ToneTracker::new),
            hysteresis: Hysteresis::new(cfg.onset, cfg.offset, end_after),
            cfg,
            frame: Vec::with_capacity(FRAME),
            clock: 0,
            pre_roll: VecDeque::new(),
            current: None,
            onset_at: 0,
            tone_tail: 0,
        }
    }

    /// Feeds 16 kHz samples that follow the previous ones; returns the utterances that ended.
    pub fn push(&mut self, samples: &[f32]) -> Vec<UtteranceAudio> {
        let mut done = Vec::new();
        for &s in samples {
            self.frame.push(s);
            if self.frame.len() == FRAME {
                let frame = std::mem::take(&mut self.frame);
                if let Some(u) = self.frame_in(&frame) {
                    done.push(u);
                }
                self.frame = frame;
                self.frame.clear();
            }
        }
        done
    }

    /// The stream resumes at `sample` (16 kHz samples since its start) after a gap: the speech
    /// before the gap is over, and later utterances keep their true times.
    pub fn jump_to(&mut self, sample: u64) -> Option<UtteranceAudio> {
        let before = self.flush();
        self.clock = sample.max(self.clock);
        self.pre_roll.clear();
        self.hysteresis.reset();
        before
    }

    fn frame_in(&mut self, frame: &[f32]) -> Option<UtteranceAudio> {
        let mut score = match &mut self.detector {
            Some(d) => d.predict_f32(frame),
            None => 1.0,
        };
        let start = self.clock;
        self.clock += frame.len() as u64;
        let run = match (&mut self.tone, <&[f32; FRAME]>::try_from(frame)) {
            (Some(tone), Ok(frame)) => tone.step(frame),
            _ => 0,
        };
        if run >= TONE_RUN {
            self.tone_tail = TONE_TAIL;
            score = 0.0;
        } else if self.tone_tail > 0 {
            self.tone_tail -= 1;
            score = 0.0;
        }
        if run == TONE_RUN {
            // The run is now known to be a tone: what the utterance holds from the run's
            // first frame on is not speech. Speech before it is an utterance of its own; an
            // utterance the tone itself opened is dropped.
            if let Some((begin, mut samples)) = self.current.take() {
                self.hysteresis.reset();
                let tone_start = (start + FRAME as u64).saturating_sub((TONE_RUN * FRAME) as u64);
                if self.onset_at >= tone_start {
                    return None;
                }
                samples.truncate(tone_start.saturating_sub(begin) as usize);
                return self.finish(begin, samples);
            }
        }
        let step = self.hysteresis.step(score);
        let max_len = (self.cfg.max_utterance_s * RATE) as usize;
        match &mut self.current {
            None => {
                if step == VadStep::Started {
                    let mut samples: Vec<f32> = self.pre_roll.drain(..).collect();
                    let begin = start - samples.len() as u64;
                    self.onset_at = start;
                    samples.extend_from_slice(frame);
                    self.current = Some((begin, samples));
                } else {
                    self.pre_roll.extend(frame);
                    let keep = (self.cfg.pre_roll_s * RATE) as usize;
                    while self.pre_roll.len() > keep {
                        self.pre_roll.pop_front();
                    }
                }
                None
            }
            Some((_, samples)) => {
                samples.extend_from_slice(frame);
                let ended_by_pause = matches!(step, VadStep::Ended { .. });
                if ended_by_pause || samples.len() >= max_len {
                    let (begin, mut samples) = self.current.take().expect("current utterance");
                    if !ended_by_pause {
                        // Cut mid-speech: the next utterance starts at the cut.
                        self.hysteresis.restart_quiet();
                        let cut = quietest_cut(&samples, self.cfg.cut_search_s);
                        let rest = samples.split_off(cut);
                        self.current = Some((begin + cut as u64, rest));
                        self.onset_at = begin + cut as u64;
                        return self.finish(begin, samples).map(|u| UtteranceAudio {
                            cut_in_speech: true,
                            ..u
                        });
                    }
                    return self.finish(begin, samples);
                }
                None
            }
        }
    }

    fn finish(&self, begin: u64, samples: Vec<f32>) -> Option<UtteranceAudio> {
        (samples.len() as f64 >= self.cfg.min_utterance_s * RATE).then(|| UtteranceAudio {
            start_s: begin as f64 / RATE,
            samples,
            voiced: self.cfg.vad,
            cut_in_speech: false,
        })
    }

    /// Samples of the utterance being spoken now (0 when there is none).
    pub fn open_len(&self) -> usize {
        self.current.as_ref().map_or(0, |(_, s)| s.len())
    }

    /// Seconds of quiet at the end of the utterance being spoken now: the speaker may have
    /// finished, though the utterance is not closed until `end_silence_s`.
    pub fn open_quiet_s(&self) -> f64 {
        if self.current.is_none() {
            return 0.0;
        }
        (self.hysteresis.quiet_frames() * FRAME) as f64 / RATE
    }

    /// A copy of the utterance being spoken now, as far as it has got.
    pub fn open_utterance(&self) -> Option<UtteranceAudio> {
        let (begin, samples) = self.current.as_ref()?;
        self.finish(*begin, samples.clone())
    }

    /// Ends the stream: whatever speech is open becomes a last utterance.
    pub fn flush(&mut self) -> Option<UtteranceAudio> {
        let partial_frame = std::mem::take(&mut self.frame);
        self.clock += partial_frame.len() as u64;
        let (begin, mut samples) = self.current.take()?;
        samples.extend_from_slice(&partial_frame);
        self.finish(begin, samples)
    }
}

/// Where to cut speech that has gone on too long: the start of the 16 ms frame with the least
/// energy within the last `search_s` seconds (the end itself when `search_s` is 0).
fn quietest_cut(samples: &[f32], search_s: f64) -> usize {
    let search = ((search_s * RATE) as usize).min(samples.len() / 2);
    let energy = |at: usize| -> f32 { samples[at..at + FRAME].iter().map(|x| x * x).sum() };
    let first = samples.len() - search;
    (first..=samples.len().saturating_sub(FRAME))
        .step_by(FRAME / 2)
        .min_by(|&a, &b| energy(a).total_cmp(&energy(b)))
        .unwrap_or(samples.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_speech_is_cut_in_its_quietest_gap() {
        // 6 s of "speech" (a loud tone) with a 60 ms dip at 5.2 s: the maximum is reached
        // inside a word; the cut goes to the dip.
        let mut audio: Vec<f32> = (0..128_000)
            .map(|i| 0.3 * (i as f32 * 0.07).sin() * (1.0 + 0.5 * (i as f32 * 0.003).sin()))
            .collect();
        for x in &mut audio[83_200..84_160] {
            *x *= 0.01;
        }
        let cut = quietest_cut(&audio[..96_000], 1.5);
        assert!((83_200..84_160).contains(&cut), "cut at {cut}");
        assert_eq!(quietest_cut(&audio[..96_000], 0.0), 96_000);
        let short = [0.1f32; 100];
        assert!(quietest_cut(&short, 1.5) <= short.len());
    }

    #[test]
    fn silence_makes_no_utterances() {
        let mut s = UtteranceCutter::new(UtteranceConfig::default());
        assert!(s.push(&vec![0.0; 64_000]).is_empty());
        assert!(s.flush().is_none());
    }

    #[test]
    fn without_voice_activity_the_stream_is_cut_at_the_maximum_and_gaps_keep_their_time() {
        let cfg = UtteranceConfig {
            vad: false,
            max_utterance_s: 1.0,
            ..Default::default()
        };
        let mut s = UtteranceCutter::new(cfg);
        let cut = s.push(&vec![0.0; 40_000]);
        assert_eq!(cut.len(), 2);
        // Cuts fall on whole 16 ms frames: the first at 63 frames (1.008 s).
        assert!((cut[1].start_s - 1.0).abs() < 0.02, "{}", cut[1].start_s);
        // 0.5 s are open; a gap up to 10 s ends them, and the next piece starts at 10 s.
        let before = s.jump_to(160_000).expect("open speech ends at the gap");
        assert!((before.end_s() - 2.5).abs() < 0.02, "{}", before.end_s());
        let after = s.push(&vec![0.0; 20_000]);
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].start_s, 10.0);
    }

    /// A real speech clip at 16 kHz (a pharmacy's reminder, 6 s, no pause of 0.5 s).
    fn pharmacy_clip() -> Vec<f32> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/asr/pharmacy.flac");
        crate::audio::load_16k(&path, crate::audio::ChannelMode::Mix)
            .unwrap()
            .remove(0)
            .samples
    }

    /// Hold-music beeps: 1 kHz, 0.4 s on, 0.6 s off.
    fn beeps(seconds: usize) -> Vec<f32> {
        (0..seconds * 16_000)
            .map(|i| {
                let on = (i % 16_000) < 6_400;
                if on {
                    0.3 * (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 16_000.0).sin()
                } else {
                    0.0
                }
            })
            .collect()
    }

    #[test]
    fn hold_music_beeps_between_speech_are_not_utterances() {
        let speech = pharmacy_clip();
        let mut stream = speech.clone();
        let beeps_from = stream.len();
        stream.extend(beeps(10));
        let beeps_to = stream.len();
        stream.extend(&speech);
        let mut cutter = UtteranceCutter::new(UtteranceConfig::default());
        let mut utterances = cutter.push(&stream);
        utterances.extend(cutter.flush());
        let (from_s, to_s) = (beeps_from as f64 / RATE, beeps_to as f64 / RATE);
        let mut speech_s = 0.0;
        for u in &utterances {
            // Nothing of an utterance lies inside the beeps but its pre-roll.
            let inside = (u.end_s().min(to_s) - u.start_s.max(from_s)).max(0.0);
            assert!(
                inside <= 0.3 + 0.02,
                "{:.2}-{:.2} s holds {inside:.2} s of the beeps ({from_s:.2}-{to_s:.2} s)",
                u.start_s,
                u.end_s()
            );
            speech_s += u.end_s() - u.start_s;
        }
        // Both stretches of speech are still heard.
        let spoken = 2.0 * speech.len() as f64 / RATE;
        assert!(
            speech_s > 0.6 * spoken,
            "{speech_s:.1} of {spoken:.1} s heard"
        );
        assert!(utterances.iter().any(|u| u.start_s > to_s - 0.5));
    }

    #[test]
    fn an_utterance_cut_at_the_maximum_says_so_and_the_next_starts_at_its_end() {
        let speech = pharmacy_clip();
        let cfg = UtteranceConfig {
            max_utterance_s: 1.5,
            ..Default::default()
        };
        let mut cutter = UtteranceCutter::new(cfg);
        let mut stream = speech;
        stream.extend(vec![0.0; 16_000]);
        let utterances = cutter.push(&stream);
        assert!(utterances.iter().all(|u| u.voiced));
        let cut: Vec<_> = utterances.iter().filter(|u| u.cut_in_speech).collect();
        assert!(!cut.is_empty(), "1.5 s of speech without a pause is cut");
        for pair in utterances.windows(2) {
            if pair[0].cut_in_speech {
                assert!(
                    (pair[1].start_s - pair[0].end_s()).abs() < 1e-9,
                    "{:.3} then {:.3}",
                    pair[0].end_s(),
                    pair[1].start_s
                );
            }
        }
        // The last ends at the pause after the speech.
        assert!(!utterances.last().unwrap().cut_in_speech);
        let mut off = UtteranceCutter::new(UtteranceConfig {
            vad: false,
            ..Default::default()
        });
        let pieces = off.push(&vec![0.0; 100_000]);
        assert!(pieces.iter().all(|u| !u.voiced && u.cut_in_speech));
    }

    #[test]
    fn bad_settings_name_their_key() {
        let bad = UtteranceConfig {
            max_utterance_s: 0.0,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("max_utterance_s"));
        assert!(UtteranceConfig::default().validate().is_ok());
    }
}
