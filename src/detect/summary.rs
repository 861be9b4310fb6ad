//! A call's outcome in the shared per-call record ([`CallSummary`]), from its parties'
//! timelines (audio) or from one transcript (text): `scan`, `classify`, `score` and the live
//! engine all report through here, so they print the same shape.

use std::collections::BTreeMap;

use super::timeline::Timeline;
use super::Classifier;
use crate::call::{CallId, CallSummary, PartySummary, Risk, Segment};

/// What one party of a call came to.
pub struct PartyOutcome<'a> {
    /// The party's index (its timeline's evidence is marked with the same).
    pub party: usize,
    pub label: String,
    /// The language the recogniser heard.
    pub heard_language: Option<String>,
    /// `None` when the party said nothing.
    pub timeline: Option<&'a Timeline>,
    /// Included in the summary (empty: left out).
    pub transcript: Vec<Segment>,
    /// The language heard when no pack covers it.
    pub uncovered_language: Option<String>,
}

/// The call is as risky as its riskiest party; the evidence is every party's, in time order.
pub fn summarise(
    call_id: CallId,
    metadata: BTreeMap<String, String>,
    parties: Vec<PartyOutcome<'_>>,
    audio_s: Option<f64>,
) -> CallSummary {
    let deciding = parties.iter().filter_map(|p| p.timeline).reduce(|best, t| {
        if t.verdict.score > best.verdict.score {
            t
        } else {
            best
        }
    });
    let mut evidence: Vec<_> = parties
        .iter()
        .filter_map(|p| p.timeline)
        .flat_map(Timeline::evidence)
        .collect();
    let said_at = |e: &crate::call::Evidence| e.spoken.map_or(0.0, |s| s.t_s);
    evidence.sort_by(|a, b| said_at(a).total_cmp(&said_at(b)));
    let first_alert_s = parties
        .iter()
        .filter_map(|p| p.timeline?.first_alert_s)
        .reduce(f64::min);
    // Parties that said something (a silent one has no language).
    let spoke: Vec<&PartyOutcome> = parties
        .iter()
        .filter(|p| p.heard_language.is_some() || p.uncovered_language.is_some())
        .collect();
    let uncovered_language =
        if !spoke.is_empty() && spoke.iter().all(|p| p.uncovered_language.is_some()) {
            spoke[0].uncovered_language.clone()
        } else {
            None
        };
    CallSummary {
        call_id,
        metadata,
        risk: deciding.map_or(Risk::None, |t| t.verdict.risk),
        score: deciding.map_or(0.0, |t| t.verdict.score),
        categories: deciding.map_or_else(Vec::new, |t| t.verdict.categories.clone()),
        language: deciding.map(|t| t.language().to_owned()),
        first_alert_s,
        call_model: deciding.and_then(|t| t.verdict.call_model),
        evidence,
        parties: parties
            .into_iter()
            .map(|p| PartySummary {
                party: p.party,
                label: p.label,
                language: p.heard_language,
                risk: p.timeline.map_or(Risk::None, |t| t.verdict.risk),
                score: p.timeline.map_or(0.0, |t| t.verdict.score),
                first_alert_s: p.timeline.and_then(|t| t.first_alert_s),
                call_model: p.timeline.and_then(|t| t.verdict.call_model),
                uncovered_language: p.uncovered_language,
                transcript: p.transcript,
            })
            .collect(),
        audio_s,
        stream: None,
        uncovered_language,
    }
}

/// One transcript's verdict as a call summary (`classify`, the text rows of `score`).
/// `language` picks the pack; without it the script decides. Errors name a missing pack.
pub fn summarise_text(
    classifier: &Classifier,
    call_id: CallId,
    text: &str,
    language: Option<&str>,
) -> Result<CallSummary, String> {
    let language = language.unwrap_or_else(|| Classifier::guess_language(text));
    let verdict = classifier.classify(text, Some(language))?;
    Ok(CallSummary {
        call_id,
        metadata: BTreeMap::new(),
        risk: verdict.risk,
        score: verdict.score,
        categories: verdict.categories,
        language: Some(language.to_owned()),
        first_alert_s: None,
        call_model: verdict.call_model,
        evidence: verdict.evidence,
        parties: Vec::new(),
        audio_s: None,
        stream: None,
        uncovered_language: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(party: usize, timeline: Option<&Timeline>) -> PartyOutcome<'_> {
        PartyOutcome {
            party,
            label: format!("party {party}"),
            heard_language: timeline.map(|_| "en".to_owned()),
            timeline,
            transcript: Vec::new(),
            uncovered_language: None,
        }
    }

    #[test]
    fn the_riskiest_party_decides_and_every_party_keeps_its_evidence() {
        let c = Classifier::builtin();
        let pack = c.pack("en").unwrap();
        let caller = Timeline::of_segments(
            &c,
            pack,
            1,
            &[
                Segment::new(
                    0.0,
                    4.0,
                    "This is officer Brooks, there is a warrant for your arrest.",
                ),
                Segment::new(4.0, 8.0, "Pay the fine today with Google Play gift cards."),
            ],
        );
        let callee = Timeline::of_segments(
            &c,
            pack,
            0,
            &[Segment::new(1.0, 5.0, "Is my account in trouble?")],
        );
        let s = summarise(
            "c1".into(),
            BTreeMap::new(),
            vec![
                outcome(0, Some(&callee)),
                outcome(1, Some(&caller)),
                outcome(2, None),
            ],
            Some(8.0),
        );
        assert_eq!(s.risk, Risk::High);
        assert_eq!(s.score, caller.verdict.score);
        assert_eq!(s.language.as_deref(), Some("en"));
        assert_eq!(s.parties.len(), 3);
        let spoken: Vec<_> = s.evidence.iter().map(|e| e.spoken.unwrap()).collect();
        assert!(spoken.iter().any(|e| e.party == 1));
        assert!(spoken.windows(2).all(|w| w[0].t_s <= w[1].t_s));
        let text = summarise_text(&c, "t".into(), "你好", None).unwrap();
        assert_eq!(text.language.as_deref(), Some("zh"));
        assert!(summarise_text(&c, "t".into(), "hi", Some("fr")).is_err());
    }
}
