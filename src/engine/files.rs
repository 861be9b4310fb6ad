//! Whole recordings (`scan`, `score`): decode, each party to 16 kHz, transcribe (voice activity
//! inside), score each party's transcript, and summarise the call in the shared record.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};

use crate::asr::{TranscribeOptions, Transcriber, Transcript};
use crate::audio::{self, ChannelMode};
use crate::call::{CallId, CallSummary};
use crate::detect::{summarise, Classifier, PartyOutcome, Timeline};

/// One recording, heard and scored.
pub struct FileAnalysis {
    pub summary: CallSummary,
    /// Each party's channel in the file (`None`: mono or mixed) and transcript.
    pub transcripts: Vec<(Option<usize>, Transcript)>,
}

/// How a file is heard and scored.
pub struct FileJob<'a> {
    pub transcriber: &'a Transcriber,
    pub classifier: &'a Classifier,
    pub options: &'a TranscribeOptions,
    pub channels: ChannelMode,
    /// Score with this language's pack instead of the one the words choose.
    pub language: Option<&'a str>,
    /// Put each party's segments in the summary.
    pub with_transcript: bool,
}

impl FileJob<'_> {
    /// Errors: the file cannot be decoded or resampled, recognition failed, or `language` has
    /// no phrase pack.
    pub fn analyse(&self, path: &Path, call_id: CallId) -> Result<FileAnalysis> {
        let fixed_pack = match self.language {
            Some(l) => Some(
                self.classifier
                    .pack(l)
                    .with_context(|| format!("no phrase pack for language {l:?}"))?,
            ),
            None => None,
        };
        let parties = audio::load_16k(path, self.channels)?;
        let audio_s = parties
            .iter()
            .map(|p| p.samples.len() as f64 / audio::TARGET_RATE as f64)
            .fold(0.0, f64::max);
        let mut heard = Vec::new();
        for party in &parties {
            let t = self.transcriber.transcribe(&party.samples, self.options)?;
            let pack = fixed_pack.unwrap_or_else(|| {
                self.classifier
                    .pack_for_transcript(t.language.as_deref(), &t.text())
            });
            let index = heard.len();
            let timeline = Timeline::of_segments(self.classifier, pack, index, &t.segments);
            heard.push((party, t, timeline));
        }
        let outcomes = heard
            .iter()
            .enumerate()
            .map(|(i, (party, t, timeline))| PartyOutcome {
                party: i,
                label: party.label(),
                heard_language: t.language.clone(),
                timeline: Some(timeline),
                transcript: if self.with_transcript {
                    t.segments.clone()
                } else {
                    Vec::new()
                },
                uncovered_language: t.uncovered_language.clone(),
            })
            .collect();
        let metadata = BTreeMap::from([("file".to_owned(), path.display().to_string())]);
        let summary = summarise(call_id, metadata, outcomes, Some(audio_s));
        let transcripts = heard
            .into_iter()
            .map(|(party, t, _)| (party.channel, t))
            .collect();
        Ok(FileAnalysis {
            summary,
            transcripts,
        })
    }
}
