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

pub fn score_call(classifier: &Classifier, pack: &PhrasePack, segments: &[Segment]) -> CallScore {
    let mut alerts: Vec<Alert> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut first_alert_s = None;
    let mut verdict = classifier.classify_with(pack, "");
    for k in 1..=segments.len() {
        let (text, map) = joined(&segments[..k]);
        verdict = classifier.classify_with(pack, &text);
        for e in &verdict.evidence {
            if seen.insert((e.category.clone(), e.pattern.clone())) {
                alerts.push(Alert {
                    t_s: time_of(&map, e.start_char),
                    category: e.category.clone(),
                    pattern: e.pattern.clone(),
                    matched_text: e.matched_text.clone(),
                    score: verdict.score,
                    risk: verdict.risk,
                });
            }
        }
        if first_alert_s.is_none() && verdict.risk.is_flagged() {
            // The alert fires when the words that tipped the score have been spoken.
            first_alert_s = verdict
                .evidence
                .iter()
                .map(|e| time_of(&map, e.end_char.saturating_sub(1)))
                .fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.max(t))));
        }
    }
    CallScore {
        risk: verdict.risk,
        score: verdict.score,
        first_alert_s,
        alerts,
        verdict,
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
