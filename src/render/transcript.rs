//! Renders a transcript in the formats people and tools read: plain text, JSON, SRT, WebVTT.

use serde::Serialize;

use crate::asr::{Segment, Transcript};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TranscriptFormat {
    Text,
    Json,
    Srt,
    Vtt,
}

impl TranscriptFormat {
    /// The names it is written as (on the command line).
    pub const NAMES: [&'static str; 4] = ["text", "json", "srt", "vtt"];
}

/// A transcript of one party of one file.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelTranscript<'a> {
    pub file: &'a str,
    pub channel: Option<usize>,
    pub language: Option<&'a str>,
    pub duration_s: f64,
    pub segments: &'a [Segment],
}

impl<'a> ChannelTranscript<'a> {
    pub fn new(file: &'a str, channel: Option<usize>, t: &'a Transcript) -> Self {
        Self {
            file,
            channel,
            language: t.language.as_deref(),
            duration_s: t.duration_s,
            segments: &t.segments,
        }
    }
}

fn clock(seconds: f64, decimal: char) -> String {
    let ms = (seconds.max(0.0) * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}{decimal}{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

pub fn render(t: &ChannelTranscript, format: TranscriptFormat) -> String {
    match format {
        TranscriptFormat::Json => serde_json::to_string(t).expect("transcripts serialise") + "\n",
        TranscriptFormat::Text => {
            let header = match t.channel {
                Some(c) => format!(
                    "== {} (channel {c}, {}) ==\n",
                    t.file,
                    t.language.unwrap_or("?")
                ),
                None => format!("== {} ({}) ==\n", t.file, t.language.unwrap_or("?")),
            };
            let body: String = t
                .segments
                .iter()
                .map(|s| format!("[{:7.2} -> {:7.2}] {}\n", s.start_s, s.end_s, s.text.trim()))
                .collect();
            header + &body
        }
        TranscriptFormat::Srt => t
            .segments
            .iter()
            .enumerate()
            .map(|(i, s)| {
                format!(
                    "{}\n{} --> {}\n{}\n\n",
                    i + 1,
                    clock(s.start_s, ','),
                    clock(s.end_s, ','),
                    s.text.trim()
                )
            })
            .collect(),
        TranscriptFormat::Vtt => {
            let cues: String = t
                .segments
                .iter()
                .map(|s| {
                    format!(
                        "{} --> {}\n{}\n\n",
                        clock(s.start_s, '.'),
                        clock(s.end_s, '.'),
                        s.text.trim()
                    )
                })
                .collect();
            format!("WEBVTT\n\n{cues}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Transcript {
        Transcript {
            language: Some("en".into()),
            duration_s: 3725.5,
            segments: vec![Segment {
                start_s: 3661.25,
                end_s: 3663.0,
                text: " Hello there.".into(),
                avg_logprob: -0.2,
                no_speech_prob: 0.01,
                temperature: 0.0,
                low_confidence: false,
            }],
            uncovered_language: None,
        }
    }

    #[test]
    fn subtitle_clocks_use_hours_and_the_right_decimal_mark() {
        let t = sample();
        let ct = ChannelTranscript::new("a.wav", Some(1), &t);
        assert_eq!(
            render(&ct, TranscriptFormat::Srt),
            "1\n01:01:01,250 --> 01:01:03,000\nHello there.\n\n"
        );
        assert!(render(&ct, TranscriptFormat::Vtt)
            .starts_with("WEBVTT\n\n01:01:01.250 --> 01:01:03.000\nHello there."));
    }

    #[test]
    fn json_has_the_documented_fields() {
        let t = sample();
        let v: serde_json::Value = serde_json::from_str(&render(
            &ChannelTranscript::new("a.wav", None, &t),
            TranscriptFormat::Json,
        ))
        .unwrap();
        for key in ["file", "channel", "language", "duration_s", "segments"] {
            assert!(v.get(key).is_some(), "{key}");
        }
        let seg = &v["segments"][0];
        for key in ["start_s", "end_s", "text", "avg_logprob", "no_speech_prob"] {
            assert!(seg.get(key).is_some(), "{key}");
        }
        assert!(v["channel"].is_null());
    }
}
