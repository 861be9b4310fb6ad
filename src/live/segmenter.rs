//! Per-party streaming front end: any input rate to 16 kHz, voice activity, and cutting the
//! speech into utterances that end at a pause or at a maximum length.

use rubato::{FftFixedIn, Resampler};

use crate::audio::vad::FRAME;

pub struct StreamResampler {
    inner: Option<FftFixedIn<f32>>,
    pending: Vec<f32>,
    chunk: usize,
}

impl StreamResampler {
    pub fn new(rate: u32) -> anyhow::Result<Self> {
        if !(1_000..=384_000).contains(&rate) {
            anyhow::bail!("input rate {rate} Hz is outside 1 kHz..384 kHz");
        }
        let chunk = (rate as usize / 50).max(64); // 20 ms
        let inner = if rate == 16_000 {
            None
        } else {
            Some(FftFixedIn::<f32>::new(rate as usize, 16_000, chunk, 1, 1)?)
        };
        Ok(Self {
            inner,
            pending: Vec::new(),
            chunk,
        })
    }

    /// Feeds samples at the input rate; returns what is ready at 16 kHz.
    pub fn push(&mut self, samples: &[f32]) -> Vec<f32> {
        let Some(r) = &mut self.inner else {
            return samples.to_vec();
        };
        self.pending.extend_from_slice(samples);
        let mut out = Vec::new();
        let mut pos = 0;
        while self.pending.len() - pos >= self.chunk {
            if let Ok(o) = r.process(&[&self.pending[pos..pos + self.chunk]], None) {
                out.extend_from_slice(&o[0]);
            }
            pos += self.chunk;
        }
        self.pending.drain(..pos);
        out
    }
}

/// A finished stretch of speech.
#[derive(Debug, Clone)]
pub struct Utterance {
    pub party: usize,
    /// Seconds from the start of the call.
    pub start_s: f64,
    pub samples: Vec<f32>,
}

impl Utterance {
    pub fn end_s(&self) -> f64 {
        self.start_s + self.samples.len() as f64 / 16_000.0
    }
}

#[derive(Debug, Clone)]
pub struct SegmenterConfig {
    pub onset: f32,
    pub offset: f32,
    /// Silence that ends an utterance.
    pub end_silence_s: f64,
    /// Longer speech is cut here, so a transcript never waits long for a pause that does not
    /// come. A cut mid-sentence costs Whisper context (with 12 s, base alerted live on 2 more
    /// of the scam samples), but 12 s also doubled alert latency (tiny.en p95 0.56 -> 3.40 s
    /// with partials) and halved the calls kept up with, so 6 s it is.
    pub max_utterance_s: f64,
    /// An utterance that reaches `max_utterance_s` is cut at its quietest 20 ms within this
    /// last stretch (a gap between words, rather than inside one); the rest starts the next
    /// utterance. 0 cuts exactly at the maximum, the default: searching 1.5 s
    /// (`cargo bench --bench utterance_window`) stopped base looping on the Mandarin samples
    /// (CER 1.46 -> 0.82) but raised the real call's WER (tiny.en 0.198 -> 0.210 clean,
    /// 0.321 -> 0.395 phone; base 0.198 -> 0.210 clean) and base's English samples' (0.476 ->
    /// 0.505): the quietest point of noisy speech is not reliably a word gap.
    pub cut_search_s: f64,
    /// Audio kept before the onset, so first syllables are not clipped.
    pub pre_roll_s: f64,
    pub min_utterance_s: f64,
}

impl Default for SegmenterConfig {
    fn default() -> Self {
        Self {
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

pub struct Segmenter {
    party: usize,
    cfg: SegmenterConfig,
    detector: earshot::Detector,
    frame: Vec<f32>,
    /// Samples seen so far (16 kHz), for timing.
    consumed: usize,
    pre_roll: std::collections::VecDeque<f32>,
    current: Option<(usize, Vec<f32>)>,
    quiet_frames: usize,
}

impl Segmenter {
    pub fn new(party: usize, cfg: SegmenterConfig) -> Self {
        Self {
            party,
            cfg,
            detector: earshot::Detector::default(),
            frame: Vec::with_capacity(FRAME),
            consumed: 0,
            pre_roll: Default::default(),
            current: None,
            quiet_frames: 0,
        }
    }

    /// Feeds 16 kHz samples; returns utterances that ended.
    pub fn push(&mut self, samples: &[f32]) -> Vec<Utterance> {
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

    fn frame_in(&mut self, frame: &[f32]) -> Option<Utterance> {
        let score = self.detector.predict_f32(frame);
        let start = self.consumed;
        self.consumed += frame.len();
        let end_quiet = (self.cfg.end_silence_s * 16_000.0 / FRAME as f64) as usize;
        let max_len = (self.cfg.max_utterance_s * 16_000.0) as usize;
        match &mut self.current {
            None => {
                if score >= self.cfg.onset {
                    let mut samples: Vec<f32> = self.pre_roll.drain(..).collect();
                    let begin = start - samples.len();
                    samples.extend_from_slice(frame);
                    self.current = Some((begin, samples));
                    self.quiet_frames = 0;
                } else {
                    self.pre_roll.extend(frame);
                    let keep = (self.cfg.pre_roll_s * 16_000.0) as usize;
                    while self.pre_roll.len() > keep {
                        self.pre_roll.pop_front();
                    }
                }
                None
            }
            Some((_, samples)) => {
                samples.extend_from_slice(frame);
                self.quiet_frames = if score < self.cfg.offset {
                    self.quiet_frames + 1
                } else {
                    0
                };
                if self.quiet_frames >= end_quiet || samples.len() >= max_len {
                    let ended_by_pause = self.quiet_frames >= end_quiet;
                    self.quiet_frames = 0;
                    let (begin, mut samples) = self.current.take().expect("current utterance");
                    if !ended_by_pause {
                        // Cut mid-speech: the next utterance starts at the cut.
                        let cut = quietest_cut(&samples, self.cfg.cut_search_s);
                        let rest = samples.split_off(cut);
                        self.current = Some((begin + cut, rest));
                    }
                    return self.finish(begin, samples);
                }
                None
            }
        }
    }

    fn finish(&self, begin: usize, samples: Vec<f32>) -> Option<Utterance> {
        (samples.len() as f64 >= self.cfg.min_utterance_s * 16_000.0).then(|| Utterance {
            party: self.party,
            start_s: begin as f64 / 16_000.0,
            samples,
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
        (self.quiet_frames * FRAME) as f64 / 16_000.0
    }

    /// A copy of the utterance being spoken now, as far as it has got.
    pub fn open_utterance(&self) -> Option<Utterance> {
        let (begin, samples) = self.current.as_ref()?;
        self.finish(*begin, samples.clone())
    }

    /// Ends the stream: whatever speech is open becomes a last utterance.
    pub fn flush(&mut self) -> Option<Utterance> {
        let (begin, mut samples) = self.current.take()?;
        samples.append(&mut self.frame);
        self.finish(begin, samples)
    }
}

/// Where to cut speech that has gone on too long: the start of the 20 ms frame with the least
/// energy within the last `search_s` seconds (the end itself when `search_s` is 0).
fn quietest_cut(samples: &[f32], search_s: f64) -> usize {
    let search = ((search_s * 16_000.0) as usize).min(samples.len() / 2);
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
    fn resampling_in_small_pieces_keeps_the_length() {
        let mut r = StreamResampler::new(8_000).unwrap();
        let mut out = 0;
        for _ in 0..100 {
            out += r.push(&[0.1; 80]).len();
        }
        // 1 s in; all but the last (< 20 ms) chunk and the filter delay come out.
        assert!((15_000..=16_000).contains(&out), "{out}");
        assert!(StreamResampler::new(10).is_err());
    }

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
        let mut s = Segmenter::new(0, SegmenterConfig::default());
        assert!(s.push(&vec![0.0; 64_000]).is_empty());
        assert!(s.flush().is_none());
    }
}
