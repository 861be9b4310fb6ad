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
        let (parties, heard) = hear_file(self.transcriber, self.options, path, self.channels)?;
        let audio_s = heard.iter().map(|t| t.duration_s).fold(0.0, f64::max);
        let heard: Vec<_> = parties
            .into_iter()
            .zip(heard)
            .enumerate()
            .map(|(index, (channel, t))| {
                let pack = fixed_pack.unwrap_or_else(|| {
                    self.classifier
                        .pack_for_transcript(t.language.as_deref(), &t.text())
                });
                let timeline = Timeline::of_segments(self.classifier, pack, index, &t.segments);
                (channel, t, timeline)
            })
            .collect();
        let outcomes = heard
            .iter()
            .enumerate()
            .map(|(i, (channel, t, timeline))| PartyOutcome {
                party: i,
                label: audio::party_label(*channel),
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
            .map(|(channel, t, _)| (channel, t))
            .collect();
        Ok(FileAnalysis {
            summary,
            transcripts,
        })
    }
}

/// Hears each party of a file as it is decoded, in bounded memory (see
/// [`crate::asr::pieces`]): the parties' channels (`None`: mono, a mix, or identical
/// channels) and their transcripts. Errors: the file cannot be decoded or resampled, or
/// recognition failed.
pub fn hear_file(
    transcriber: &Transcriber,
    options: &TranscribeOptions,
    path: &Path,
    channels: ChannelMode,
) -> Result<(Vec<Option<usize>>, Vec<Transcript>)> {
    let mut stream = audio::PartyStream::open(path, channels)?;
    let parties = stream.parties()?.to_vec();
    let mut heard: Vec<_> = parties
        .iter()
        .map(|_| transcriber.long_recording(options))
        .collect();
    while let Some(chunk) = stream.next_chunk()? {
        for (h, c) in heard.iter_mut().zip(&chunk) {
            h.push(c)?;
        }
    }
    stream.finish()?;
    let transcripts = heard
        .into_iter()
        .map(|h| h.finish())
        .collect::<Result<Vec<_>>>()?;
    Ok((parties, transcripts))
}
