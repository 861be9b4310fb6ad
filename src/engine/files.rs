//! Whole recordings (`scan`, `score`): decode, each party to 16 kHz, transcribe (voice activity
//! inside), score each party's transcript, and summarise the call in the shared record.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};

use crate::asr::pieces::{hear_together, LongRecording};
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
        if let Some(l) = self.language {
            self.classifier
                .pack(l)
                .with_context(|| format!("no phrase pack for language {l:?}"))?;
        }
        let (parties, heard) = hear_file(self.transcriber, self.options, path, self.channels)?;
        self.score(path, call_id, parties, heard)
    }

    /// Scores a file's parties (`parties`: their channels) from their transcripts.
    fn score(
        &self,
        path: &Path,
        call_id: CallId,
        parties: Vec<Option<usize>>,
        heard: Vec<Transcript>,
    ) -> Result<FileAnalysis> {
        let fixed_pack = match self.language {
            Some(l) => Some(
                self.classifier
                    .pack(l)
                    .with_context(|| format!("no phrase pack for language {l:?}"))?,
            ),
            None => None,
        };
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

    /// Hears and scores `files` (each with its call id), up to `batch` files at once: the
    /// next window of each party of each file in flight goes through the recogniser in one
    /// batch ([`hear_together`]), so the decoder's steps serve several files per read of its
    /// weights. Each file is decoded as it is heard, in bounded memory (a party's audio is
    /// read on only while it has nothing waiting to be heard). `done(i, result)` is called
    /// once per file, in the order of `files`; a file that cannot be decoded or heard gets
    /// its error there and the others go on. Errors: those `done` returns (which stop it).
    pub fn analyse_all(
        &self,
        files: &[(std::path::PathBuf, CallId)],
        batch: usize,
        mut done: impl FnMut(usize, Result<FileAnalysis>) -> Result<()>,
    ) -> Result<()> {
        if let Some(l) = self.language {
            self.classifier
                .pack(l)
                .with_context(|| format!("no phrase pack for language {l:?}"))?;
        }
        let batch = batch.max(1);
        let mut flight: Vec<InFlight<'_>> = Vec::new();
        let mut finished: BTreeMap<usize, Result<FileAnalysis>> = BTreeMap::new();
        let (mut next, mut reported) = (0, 0);
        while reported < files.len() {
            while flight.len() < batch && next < files.len() {
                match InFlight::open(self, next, &files[next].0) {
                    Ok(f) => flight.push(f),
                    Err(e) => {
                        finished.insert(next, Err(e));
                    }
                }
                next += 1;
            }
            let mut failed: Vec<(usize, anyhow::Error)> = Vec::new();
            for f in &mut flight {
                if let Err(e) = f.feed() {
                    failed.push((f.index, e));
                }
            }
            flight.retain(|f| !failed.iter().any(|(i, _)| *i == f.index));
            let mut recordings: Vec<(usize, &mut LongRecording<'_>)> = flight
                .iter_mut()
                .flat_map(|f| {
                    let index = f.index;
                    f.heard.iter_mut().map(move |h| (index, h))
                })
                .filter(|(_, h)| h.has_work())
                .collect();
            let (owners, mut heard): (Vec<usize>, Vec<&mut LongRecording<'_>>) =
                recordings.drain(..).unzip();
            for (owner, result) in owners.iter().zip(hear_together(&mut heard)) {
                if let Err(e) = result {
                    if !failed.iter().any(|(i, _)| i == owner) {
                        failed.push((*owner, e));
                    }
                }
            }
            for (i, e) in failed {
                flight.retain(|f| f.index != i);
                finished.insert(i, Err(e));
            }
            let (complete, going): (Vec<_>, Vec<_>) =
                flight.into_iter().partition(|f| f.is_complete());
            flight = going;
            for f in complete {
                let (index, parties, heard) = f.into_transcripts();
                let (path, id) = &files[index];
                finished.insert(index, self.score(path, id.clone(), parties, heard));
            }
            while let Some(result) = finished.remove(&reported) {
                done(reported, result)?;
                reported += 1;
            }
        }
        Ok(())
    }
}

/// A file being heard by [`FileJob::analyse_all`].
struct InFlight<'a> {
    index: usize,
    stream: audio::PartyStream,
    parties: Vec<Option<usize>>,
    /// One per party.
    heard: Vec<LongRecording<'a>>,
    ended: bool,
}

impl<'a> InFlight<'a> {
    fn open(job: &FileJob<'a>, index: usize, path: &Path) -> Result<Self> {
        let mut stream = audio::PartyStream::open(path, job.channels)?;
        let parties = stream.parties()?.to_vec();
        let heard = parties
            .iter()
            .map(|_| job.transcriber.long_recording(job.options).deferred())
            .collect();
        Ok(Self {
            index,
            stream,
            parties,
            heard,
            ended: false,
        })
    }

    /// Decodes audio while a party needs some and none has more than one piece waiting.
    fn feed(&mut self) -> Result<()> {
        while !self.ended
            && self.heard.iter().any(|h| h.needs_audio())
            && self.heard.iter().all(|h| h.backlog() <= 1)
        {
            match self.stream.next_chunk()? {
                Some(chunk) => {
                    for (h, c) in self.heard.iter_mut().zip(&chunk) {
                        h.push(c)?;
                    }
                }
                None => {
                    self.stream.finish()?;
                    for h in &mut self.heard {
                        h.end_input();
                    }
                    self.ended = true;
                }
            }
        }
        Ok(())
    }

    fn is_complete(&self) -> bool {
        self.ended && self.heard.iter().all(|h| !h.has_work())
    }

    fn into_transcripts(self) -> (usize, Vec<Option<usize>>, Vec<Transcript>) {
        let heard = self
            .heard
            .into_iter()
            .map(|h| h.into_transcript())
            .collect();
        (self.index, self.parties, heard)
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
