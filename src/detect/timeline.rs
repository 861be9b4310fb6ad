//! Scoring a party as the call unfolds: the transcript grows segment by segment, and new
//! evidence is raised at the moment it appears, with the score the party has reached by then.

use std::collections::HashSet;

use super::classifier::{Classifier, Verdict};
use super::pack::PhrasePack;
use crate::call::{Evidence, Risk, Segment, Spoken};

/// A piece of evidence the moment it first appeared, with the party's score once it counted.
#[derive(Debug, Clone)]
pub struct Raised {
    /// With `spoken` set.
    pub evidence: Evidence,
    pub score: f32,
    pub risk: Risk,
}

/// Joins segment texts and remembers which characters came from which segment.
pub use crate::call::LOW_CONFIDENCE_LOGPROB;

fn joined(segments: &[Segment]) -> (String, Vec<(usize, usize, f64, f64)>) {
    let mut text = String::new();
    let mut map = Vec::new();
    for s in segments {
        let t = s.text.trim();
        if t.is_empty() || s.avg_logprob < LOW_CONFIDENCE_LOGPROB {
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

/// A party's evidence as it grows: push each new segment, get the evidence it raised.
///
/// Holds no reference to the classifier (pass it to [`Timeline::push`]), so a live call can keep
/// one per party for as long as it lasts.
#[derive(Clone)]
pub struct Timeline {
    /// The party whose words these are.
    party: usize,
    /// The phrase pack's language.
    language: String,
    segments: Vec<Segment>,
    seen: HashSet<(String, String)>,
    /// Every piece of evidence in the order it appeared.
    pub raised: Vec<Raised>,
    /// When the party first reached `suspected` (seconds of audio time).
    pub first_alert_s: Option<f64>,
    pub verdict: Verdict,
}

impl Timeline {
    pub fn new(classifier: &Classifier, pack: &PhrasePack, party: usize) -> Self {
        Self {
            party,
            language: pack.language.clone(),
            segments: Vec::new(),
            seen: Default::default(),
            raised: Vec::new(),
            first_alert_s: None,
            verdict: classifier.classify_with(pack, ""),
        }
    }

    /// A timeline over a party's finished segments (a file's transcript).
    pub fn of_segments(
        classifier: &Classifier,
        pack: &PhrasePack,
        party: usize,
        segments: &[Segment],
    ) -> Self {
        let mut timeline = Self::new(classifier, pack, party);
        for s in segments {
            timeline.push(classifier, s.clone());
        }
        timeline
    }

    /// The language of the phrase pack this party is scored with.
    pub fn language(&self) -> &str {
        &self.language
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Adds a segment; returns the evidence it raised (with the score by then). `classifier`
    /// must be the one the timeline was made with (its pack is found by language).
    pub fn push(&mut self, classifier: &Classifier, segment: Segment) -> &[Raised] {
        self.segments.push(segment);
        self.rescore(classifier)
    }

    /// Replaces what was heard between `from_s` and `to_s` (seconds of audio time) with a new
    /// hearing of that stretch: segments whose middle falls in it are dropped, `heard` takes
    /// their place, in time order. Returns the evidence this raised (evidence raised before
    /// stays raised: it was sent). Used when a live party's last utterances are heard again
    /// as one recording, which hears a phrase an utterance cut split.
    pub fn revise(
        &mut self,
        classifier: &Classifier,
        from_s: f64,
        to_s: f64,
        heard: Vec<Segment>,
    ) -> &[Raised] {
        self.segments.retain(|s| {
            let middle = (s.start_s + s.end_s) / 2.0;
            !(from_s..=to_s).contains(&middle)
        });
        self.segments.extend(heard);
        self.segments
            .sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
        self.rescore(classifier)
    }

    fn rescore(&mut self, classifier: &Classifier) -> &[Raised] {
        let before = self.raised.len();
        let Some(pack) = classifier.pack(&self.language) else {
            tracing::error!(language = %self.language, "timeline used with a classifier that lacks its pack");
            return &[];
        };
        let (text, map) = joined(&self.segments);
        self.verdict = classifier.classify_with(pack, &text);
        for e in &self.verdict.evidence {
            if self.seen.insert((e.category.clone(), e.pattern.clone())) {
                self.raised.push(Raised {
                    evidence: self.timed(e, &map),
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
        &self.raised[before..]
    }

    /// The evidence of the verdict on everything said so far, with its times.
    pub fn evidence(&self) -> Vec<Evidence> {
        let (_, map) = joined(&self.segments);
        self.verdict
            .evidence
            .iter()
            .map(|e| self.timed(e, &map))
            .collect()
    }

    fn timed(&self, e: &Evidence, map: &[(usize, usize, f64, f64)]) -> Evidence {
        Evidence {
            spoken: Some(Spoken {
                party: self.party,
                t_s: time_of(map, e.start_char),
                end_s: time_of(map, e.end_char.saturating_sub(1)),
            }),
            ..e.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(start: f64, end: f64, text: &str) -> Segment {
        Segment::new(start, end, text)
    }

    #[test]
    fn text_the_recogniser_was_unsure_of_gives_no_evidence() {
        let c = Classifier::builtin();
        let pack = c.pack("en").unwrap();
        let said = "This is the IRS, there is a warrant for your arrest, press one now.";
        let mut unsure = seg(0.0, 5.0, said);
        unsure.avg_logprob = -4.6;
        let t = Timeline::of_segments(&c, pack, 0, &[unsure]);
        assert!(t.evidence().is_empty());
        assert!(!t.verdict.risk.is_flagged());
        let mut sure = seg(0.0, 5.0, said);
        sure.avg_logprob = -0.4;
        let t = Timeline::of_segments(&c, pack, 0, &[sure]);
        assert!(t.verdict.risk.is_flagged());
    }

    #[test]
    fn a_revision_replaces_the_words_of_its_stretch_and_keeps_the_rest() {
        let c = Classifier::builtin();
        let pack = c.pack("en").unwrap();
        let pieces = [
            seg(
                0.0,
                6.0,
                "This is the tax office calling about your return.",
            ),
            seg(6.0, 12.0, "You must pay today with Google"),
            seg(12.0, 18.0, "ply cards or"),
            seg(20.0, 24.0, "Thank you for your time."),
        ];
        let mut t = Timeline::of_segments(&c, pack, 0, &pieces);
        let before = t.verdict.score;
        let raised = t
            .revise(
                &c,
                6.0,
                18.0,
                vec![
                    seg(6.0, 11.0, "You must pay today with Google Play cards"),
                    seg(11.0, 18.0, "or you will be arrested."),
                ],
            )
            .to_vec();
        assert!(raised
            .iter()
            .any(|r| r.evidence.category == "unusual_payment"));
        assert!(t.verdict.score > before);
        let texts: Vec<&str> = t.segments().iter().map(|s| s.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "This is the tax office calling about your return.",
                "You must pay today with Google Play cards",
                "or you will be arrested.",
                "Thank you for your time."
            ]
        );
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
        let s = Timeline::of_segments(&c, pack, 0, &segments);
        assert_eq!(s.verdict.risk, Risk::High);
        let first = s.first_alert_s.unwrap();
        assert!((4.0..=8.0).contains(&first), "first alert at {first}");
        let gift = s
            .raised
            .iter()
            .find(|a| a.evidence.category == "unusual_payment")
            .unwrap();
        let t = gift.evidence.spoken.unwrap().t_s;
        assert!((8.0..12.0).contains(&t), "{gift:?}");
        let at = |r: &Raised| r.evidence.spoken.unwrap().t_s;
        assert!(s
            .raised
            .windows(2)
            .all(|w| w[0].score <= w[1].score || at(&w[0]) <= at(&w[1])));
        let final_evidence = s.evidence();
        assert!(final_evidence
            .iter()
            .all(|e| e.spoken.is_some_and(|s| s.end_s >= s.t_s)));
    }
}
