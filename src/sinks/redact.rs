//! Redaction before words leave the process: card numbers, one-time codes, account and
//! national id numbers are runs of digits, and a sink with `redact = true` gets every such run
//! (four digits or more, ASCII, full-width or Chinese numerals, spaces and dashes between
//! them allowed) masked as `#`, in transcripts, alerts and summaries alike.

use super::Sink;
use crate::call::{Event, Evidence};

/// Chinese numerals that stand for digits in spoken numbers (一二三 ... 〇, 零, 幺 as "one").
fn is_digit_like(c: char) -> bool {
    c.is_ascii_digit() || ('０'..='９').contains(&c) || "零〇一二三四五六七八九幺两".contains(c)
}

/// `text` with every run of at least four digits masked.
pub fn redact_text(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = chars.clone();
    let mut i = 0;
    while i < chars.len() {
        if !is_digit_like(chars[i]) {
            i += 1;
            continue;
        }
        // A run: digits, with single spaces, dashes or dots between them.
        let start = i;
        let mut end = i;
        let mut digits = 0;
        let mut j = i;
        while j < chars.len() {
            if is_digit_like(chars[j]) {
                digits += 1;
                end = j + 1;
                j += 1;
            } else if matches!(chars[j], ' ' | '-' | '.' | '\u{00a0}')
                && chars.get(j + 1).copied().is_some_and(is_digit_like)
            {
                j += 1;
            } else {
                break;
            }
        }
        if digits >= 4 {
            for c in &mut out[start..end] {
                if is_digit_like(*c) {
                    *c = '#';
                }
            }
        }
        i = end.max(start + 1);
    }
    out.into_iter().collect()
}

fn redact_evidence(e: &mut Evidence) {
    e.matched_text = redact_text(&e.matched_text);
}

/// The event with every text in it redacted.
pub fn redact_event(event: &Event) -> Event {
    let mut e = event.clone();
    match &mut e {
        Event::CallStarted(_) => {}
        Event::Transcript(u) => u.text = redact_text(&u.text),
        Event::Alert(a) => redact_evidence(&mut a.evidence),
        Event::CallEnded(s) => {
            s.evidence.iter_mut().for_each(redact_evidence);
            for p in &mut s.parties {
                for seg in &mut p.transcript {
                    seg.text = redact_text(&seg.text);
                }
            }
        }
    }
    e
}

/// A sink that sees only redacted events.
pub struct Redacted(pub Box<dyn Sink>);

impl Sink for Redacted {
    fn describe(&self) -> String {
        format!("{} (redacted)", self.0.describe())
    }

    fn write(&mut self, event: &Event) -> anyhow::Result<()> {
        self.0.write(&redact_event(event))
    }

    fn close(&mut self) -> anyhow::Result<()> {
        self.0.close()
    }

    fn durability(&self) -> super::Durability {
        self.0.durability()
    }

    fn commit(&mut self) {
        self.0.commit()
    }

    fn idle(&mut self) {
        self.0.idle()
    }

    fn health(&self) -> Option<std::sync::Arc<super::SinkHealth>> {
        self.0.health()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digit_runs_of_four_or_more_are_masked_and_short_numbers_kept() {
        assert_eq!(
            redact_text("my card is 4111 1111-1111 1111, code 482913, press 1 at 10 am"),
            "my card is #### ####-#### ####, code ######, press 1 at 10 am"
        );
        assert_eq!(redact_text("验证码是一二三四五六"), "验证码是######");
        assert_eq!(
            redact_text("身份证号11010519491231002X"),
            "身份证号#################X"
        );
        assert_eq!(redact_text("room ２０２４"), "room ####");
        assert_eq!(redact_text("in 2 days, 3 times"), "in 2 days, 3 times");
        assert_eq!(redact_text(""), "");
    }

    #[test]
    fn a_redacting_sink_sees_no_digits_in_transcripts_or_summaries() {
        use crate::call::{CallSummary, PartySummary, Risk, Segment, Utterance};
        let said = "read me the code 4 8 2 9 1 3 on your card 4111111111111111";
        let heard = Event::Transcript(Utterance {
            call_id: "c".into(),
            party: 0,
            start_s: 0.0,
            end_s: 4.0,
            text: said.into(),
            language: Some("en".into()),
            risk: Risk::High,
            score: 0.9,
        });
        let Event::Transcript(u) = redact_event(&heard) else {
            panic!()
        };
        assert!(!u.text.chars().any(|c| c.is_ascii_digit()), "{}", u.text);
        let ended = Event::CallEnded(CallSummary {
            call_id: "c".into(),
            metadata: Default::default(),
            risk: Risk::High,
            score: 0.9,
            categories: vec![],
            language: None,
            first_alert_s: None,
            call_model: None,
            evidence: vec![],
            parties: vec![PartySummary {
                party: 0,
                label: "caller".into(),
                language: None,
                risk: Risk::High,
                score: 0.9,
                first_alert_s: None,
                call_model: None,
                uncovered_language: None,
                transcript: vec![Segment::new(0.0, 4.0, said)],
            }],
            audio_s: None,
            stream: None,
            uncovered_language: None,
        });
        let text = serde_json::to_string(&redact_event(&ended)).unwrap();
        assert!(!text.contains("4111"), "{text}");
    }
}
