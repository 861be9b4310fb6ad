//! Scoring a call as it unfolds: the transcript grows segment by segment, and an alert is
//! raised at the moment new evidence appears, with the score the call has reached by then.

use serde::Serialize;

use super::classifier::{Classifier, Risk, Verdict};
use super::pack::PhrasePack;
use crate::asr::Segment;

#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// Seconds into the audio where the matched words were spoken.
    pub t_s: f64,
    /// Where they ended: the earliest moment an alert could have been raised.
    pub end_s: f64,
    pub category: String,
    pub pattern: String,
    pub matched_text: String,
    /// The call's score once this evidence counted.
    pub score: f32,
    pub risk: Risk,
}

#[derive(Debug, Clone, Serialize)]
pub struct CallScore {
    pub risk: Risk,
    pub score: f32,
    /// When the call first reached `suspected` (seconds into the audio).
    pub first_alert_s: Option<f64>,
    pub alerts: Vec<Alert>,
    pub verdict: Verdict,
}

/// Joins segment texts and remembers which characters came from which segment.
fn joined(segments: &[Segment]) -> (String, Vec<(usize, usize, f64, f64)>) {
    let mut text = String::new();
    let mut map = Vec::new();
    for s in segments {
        let t = s.text.trim();
        if t.is_empty() {
            continue;
        }
        if !text.is_empty() {
            text.push(' ');
        }
        let start = text.chars().count();
        text.push_str(t);
        map.push((start, text.chars().count(), s.start_s, s.end_s));
    }
    (text, map)
}

/// The audio time of a character, interpolated inside its segment.
fn time_of(map: &[(usize, usize, f64, f64)], ch: usize) -> f64 {
    for &(a, b, s, e) in map {
        if ch < b {
            let frac = (ch.saturating_sub(a)) as f64 / (b - a).max(1) as f64;
            return ((s + (e - s) * frac) * 100.0).round() / 100.0;
        }
    }
    map.last().map_or(0.0, |m| m.3)
}

/// A call's evidence as it grows: push each new segment, get the alerts it raised.
#[derive(Clone)]
pub struct Timeline<'a> {
    classifier: &'a Classifier,
    pack: &'a PhrasePack,
    segments: Vec<Segment>,
    seen: std::collections::HashSet<(String, String)>,
    pub alerts: Vec<Alert>,
    pub first_alert_s: Option<f64>,
    pub verdict: Verdict,
}

impl<'a> Timeline<'a> {
    pub fn new(classifier: &'a Classifier, pack: &'a PhrasePack) -> Self {
        Self {
            classifier,
            pack,
            segments: Vec::new(),
            seen: Default::default(),
            alerts: Vec::new(),
            first_alert_s: None,
            verdict: classifier.classify_with(pack, ""),
        }
    }

    /// The language of the phrase pack this call is scored with.
    pub fn language(&self) -> &str {
        &self.pack.language
    }

    /// Adds a segment; returns the alerts it raised (new evidence, with the score by then).
    pub fn push(&mut self, segment: Segment) -> &[Alert] {
        self.segments.push(segment);
        let (text, map) = joined(&self.segments);
        self.verdict = self.classifier.classify_with(self.pack, &text);
        let before = self.alerts.len();
        for e in &self.verdict.evidence {
            if self.seen.insert((e.category.clone(), e.pattern.clone())) {
                self.alerts.push(Alert {
                    t_s: time_of(&map, e.start_char),
                    end_s: time_of(&map, e.end_char.saturating_sub(1)),
                    category: e.category.clone(),
                    pattern: e.pattern.clone(),
                    matched_text: e.matched_text.clone(),
                    score: self.verdict.score,
                    risk: self.verdict.risk,
                });
            }
        }
        if self.first_alert_s.is_none() && self.verdict.risk.is_flagged() {
            // The alert fires when the words that tipped the score have been spoken.
            self.first_alert_s = self
                .verdict
                .evidence
                .iter()
                .map(|e| time_of(&map, e.end_char.saturating_sub(1)))
                .fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.max(t))));
        }
        &self.alerts[before..]
    }
}

pub fn score_call(classifier: &Classifier, pack: &PhrasePack, segments: &[Segment]) -> CallScore {
    let mut timeline = Timeline::new(classifier, pack);
    for s in segments {
        timeline.push(s.clone());
    }
    CallScore {
        risk: timeline.verdict.risk,
        score: timeline.verdict.score,
        first_alert_s: timeline.first_alert_s,
        alerts: timeline.alerts,
        verdict: timeline.verdict,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(start: f64, end: f64, text: &str) -> Segment {
        Segment {
            start_s: start,
            end_s: end,
            text: text.into(),
            avg_logprob: -0.2,
            no_speech_prob: 0.0,
            temperature: 0.0,
        }
    }

    #[test]
    fn alerts_carry_the_time_the_words_were_spoken() {
        let c = Classifier::builtin();
        let pack = c.pack("en").unwrap();
        let segments = [
            seg(
                0.0,
                4.0,
                "Hello, this is officer Brooks from the police department.",
            ),
            seg(4.0, 8.0, "There is a warrant for your arrest."),
            seg(
                8.0,
                12.0,
                "You must pay the fine today with Google Play gift cards.",
            ),
        ];
        let s = score_call(&c, pack, &segments);
        assert_eq!(s.risk, Risk::High);
        let first = s.first_alert_s.unwrap();
        assert!((4.0..=8.0).contains(&first), "first alert at {first}");
        let gift = s
            .alerts
            .iter()
            .find(|a| a.category == "unusual_payment")
            .unwrap();
        assert!((8.0..12.0).contains(&gift.t_s), "{gift:?}");
        assert!(s
            .alerts
            .windows(2)
            .all(|w| w[0].score <= w[1].score || w[0].t_s <= w[1].t_s));
    }
}
