//! Whole recordings (`scan`, `score`): decode, each party to 16 kHz, transcribe (voice activity
//! inside), score each party's transcript, and summarise the call in the shared record. Many
//! files are heard together ([`FileJob::analyse_all`]): threads with several files in flight
//! each, the next window of every party of a thread's files decoded in one batch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

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
    /// Wall seconds spent on this file: decoding, hearing and scoring it, and, heard with
    /// others ([`FileJob::analyse_all`]), an equal share of each batch it was in (so that the
    /// times of the files one thread heard add up to that thread's wall time, for real-time
    /// factors).
    pub busy_s: f64,
}

/// A file for [`FileJob::analyse_all`].
pub struct FileToHear {
    pub path: PathBuf,
    pub call_id: CallId,
    /// Score with this language's pack instead of the job's `language` (or the words' choice).
    pub language: Option<String>,
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
        let started = Instant::now();
        self.fixed_pack(self.language)?;
        let (parties, heard) = hear_file(self.transcriber, self.options, path, self.channels)?;
        let mut a = self.score(path, call_id, self.language, parties, heard)?;
        a.busy_s = started.elapsed().as_secs_f64();
        Ok(a)
    }

    /// The phrase pack of `language`, when one is asked for. Errors: it has none.
    fn fixed_pack(&self, language: Option<&str>) -> Result<Option<&crate::detect::PhrasePack>> {
        language
            .map(|l| {
                self.classifier
                    .pack(l)
                    .with_context(|| format!("no phrase pack for language {l:?}"))
            })
            .transpose()
    }

    /// Scores a file's parties (`parties`: their channels) from their transcripts, with
    /// `language`'s pack when given.
    fn score(
        &self,
        path: &Path,
        call_id: CallId,
        language: Option<&str>,
        parties: Vec<Option<usize>>,
        heard: Vec<Transcript>,
    ) -> Result<FileAnalysis> {
        let fixed_pack = self.fixed_pack(language)?;
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
            busy_s: 0.0,
        })
    }

    /// Hears and scores `files` with [`hear_files`] (`workers` threads, up to `batch` files in
    /// flight each, their next windows decoded in one batch); each file is scored on the
    /// thread that heard it. `done(i, result)` is called once per file, on this thread, in the
    /// order of `files`; a file that cannot be decoded or heard gets its error there and the
    /// others go on. Errors: those `done` returns (the workers then stop taking files).
    pub fn analyse_all(
        &self,
        files: &[FileToHear],
        workers: usize,
        batch: usize,
        done: impl FnMut(usize, Result<FileAnalysis>) -> Result<()>,
    ) -> Result<()> {
        self.fixed_pack(self.language)?;
        let paths: Vec<&Path> = files.iter().map(|f| f.path.as_path()).collect();
        let score = |index: usize, heard: HeardFile| {
            let scoring = Instant::now();
            let file = &files[index];
            let language = file.language.as_deref().or(self.language);
            self.score(
                &file.path,
                file.call_id.clone(),
                language,
                heard.parties,
                heard.transcripts,
            )
            .map(|a| FileAnalysis {
                busy_s: heard.busy_s + scoring.elapsed().as_secs_f64(),
                ..a
            })
        };
        hear_files(
            self.transcriber,
            self.options,
            self.channels,
            &paths,
            workers,
            batch,
            score,
            done,
        )
    }
}

/// One recording's parties heard, not yet scored.
pub struct HeardFile {
    /// Each party's channel in the file (`None`: mono, a mix, or identical channels).
    pub parties: Vec<Option<usize>>,
    /// One per party, in the same order.
    pub transcripts: Vec<Transcript>,
    /// Wall seconds spent on this file: decoding and hearing it, with an equal share of each
    /// batch it was in (see [`FileAnalysis::busy_s`]).
    pub busy_s: f64,
}

/// Hears `paths`: `workers` threads (at least one, at most one per file), each with up to
/// `batch` files in flight; each round, the next window of every party of a thread's files
/// goes through the encoder and decoder together ([`hear_together`]), so each decoder step
/// serves several recordings per read of the weights. Each file is decoded as it is heard, in
/// bounded memory (a party's audio is read on only while it has nothing waiting to be heard),
/// as [`crate::asr::pieces`] describes. A heard file goes through `finish(i, heard)` on the
/// thread that heard it (scoring, rendering); `done(i, result)` is then called once per file,
/// on this thread, in the order of `paths`. A file that cannot be decoded or heard gets its
/// error in `done` and the others go on. Errors: those `done` returns (the workers then stop
/// taking files).
#[allow(clippy::too_many_arguments)]
pub fn hear_files<T: Send>(
    transcriber: &Transcriber,
    options: &TranscribeOptions,
    channels: ChannelMode,
    paths: &[&Path],
    workers: usize,
    batch: usize,
    finish: impl Fn(usize, HeardFile) -> Result<T> + Sync,
    mut done: impl FnMut(usize, Result<T>) -> Result<()>,
) -> Result<()> {
    let lanes = Lanes {
        transcriber,
        options,
        channels,
        paths,
        next: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
    };
    let (send, receive) = std::sync::mpsc::channel::<(usize, Result<T>)>();
    std::thread::scope(|s| {
        for lane in 0..workers.clamp(1, paths.len().max(1)) {
            let send = send.clone();
            let (lanes, finish) = (&lanes, &finish);
            s.spawn(move || {
                // Each thread's kernels on a pool of its own (see `in_own_pool`).
                crate::asr::threads::in_own_pool(&format!("files-{lane}"), || {
                    lanes.lane(batch.max(1), |i, r| {
                        send.send((i, r.and_then(|h| finish(i, h)))).is_ok()
                    })
                })
            });
        }
        drop(send);
        let mut finished: BTreeMap<usize, Result<T>> = BTreeMap::new();
        let mut reported = 0;
        for (i, result) in receive {
            finished.insert(i, result);
            while let Some(result) = finished.remove(&reported) {
                if let Err(e) = done(reported, result) {
                    lanes.stop.store(true, Ordering::Relaxed);
                    return Err(e);
                }
                reported += 1;
            }
        }
        Ok(())
    })
}

/// What the threads of [`hear_files`] share: the files and the next one to take.
struct Lanes<'a> {
    transcriber: &'a Transcriber,
    options: &'a TranscribeOptions,
    channels: ChannelMode,
    paths: &'a [&'a Path],
    next: AtomicUsize,
    stop: AtomicBool,
}

impl Lanes<'_> {
    /// One thread of [`hear_files`]: takes the next file whenever it has fewer than `batch` in
    /// flight, and gives each result to `report` (false: stop).
    fn lane(&self, batch: usize, report: impl Fn(usize, Result<HeardFile>) -> bool) {
        let mut flight: Vec<InFlight<'_>> = Vec::new();
        let mut taking = true;
        loop {
            while taking && flight.len() < batch && !self.stop.load(Ordering::Relaxed) {
                let i = self.next.fetch_add(1, Ordering::Relaxed);
                if i >= self.paths.len() {
                    taking = false;
                    break;
                }
                let opened = Instant::now();
                match InFlight::open(self, i, opened) {
                    Ok(f) => flight.push(f),
                    Err(e) => {
                        if !report(i, Err(e)) {
                            return;
                        }
                    }
                }
            }
            if flight.is_empty() {
                return;
            }
            let mut failed: Vec<(usize, anyhow::Error)> = Vec::new();
            for f in &mut flight {
                let fed = Instant::now();
                if let Err(e) = f.feed() {
                    failed.push((f.index, e));
                }
                f.busy_s += fed.elapsed().as_secs_f64();
            }
            flight.retain(|f| !failed.iter().any(|(i, _)| *i == f.index));
            let (owners, mut heard): (Vec<usize>, Vec<&mut LongRecording<'_>>) = flight
                .iter_mut()
                .flat_map(|f| {
                    let index = f.index;
                    f.heard.iter_mut().map(move |h| (index, h))
                })
                .filter(|(_, h)| h.has_work())
                .unzip();
            let round = Instant::now();
            let results = hear_together(&mut heard);
            let mut in_round = owners.clone();
            in_round.dedup();
            let share = round.elapsed().as_secs_f64() / in_round.len().max(1) as f64;
            for f in flight.iter_mut().filter(|f| in_round.contains(&f.index)) {
                f.busy_s += share;
            }
            for (owner, result) in owners.iter().zip(results) {
                if let Err(e) = result {
                    if !failed.iter().any(|(i, _)| i == owner) {
                        failed.push((*owner, e));
                    }
                }
            }
            for (i, e) in failed {
                flight.retain(|f| f.index != i);
                if !report(i, Err(e)) {
                    return;
                }
            }
            let (complete, going): (Vec<_>, Vec<_>) =
                flight.into_iter().partition(|f| f.is_complete());
            flight = going;
            for f in complete {
                let (index, heard) = f.into_heard();
                if !report(index, Ok(heard)) {
                    return;
                }
            }
        }
    }
}

/// A file being heard by [`hear_files`].
struct InFlight<'a> {
    index: usize,
    stream: audio::PartyStream,
    parties: Vec<Option<usize>>,
    /// One per party.
    heard: Vec<LongRecording<'a>>,
    ended: bool,
    /// See [`FileAnalysis::busy_s`].
    busy_s: f64,
}

impl<'a> InFlight<'a> {
    /// Opens the file (`opened`: when its opening began, counted as its time).
    fn open(lanes: &Lanes<'a>, index: usize, opened: Instant) -> Result<Self> {
        let mut stream = audio::PartyStream::open(lanes.paths[index], lanes.channels)?;
        let parties = stream.parties()?.to_vec();
        let heard = parties
            .iter()
            .map(|_| lanes.transcriber.long_recording(lanes.options).deferred())
            .collect();
        Ok(Self {
            index,
            stream,
            parties,
            heard,
            ended: false,
            busy_s: opened.elapsed().as_secs_f64(),
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

    fn into_heard(self) -> (usize, HeardFile) {
        let transcripts = self
            .heard
            .into_iter()
            .map(|h| h.into_transcript())
            .collect();
        let heard = HeardFile {
            parties: self.parties,
            transcripts,
            busy_s: self.busy_s,
        };
        (self.index, heard)
    }
}

/// Hears each party of one file as it is decoded, in bounded memory (see
/// [`crate::asr::pieces`]; [`hear_files`] with one file: a stereo call's two parties are
/// decoded in one batch): the parties' channels (`None`: mono, a mix, or identical channels)
/// and their transcripts. Errors: the file cannot be decoded or resampled, or recognition
/// failed.
pub fn hear_file(
    transcriber: &Transcriber,
    options: &TranscribeOptions,
    path: &Path,
    channels: ChannelMode,
) -> Result<(Vec<Option<usize>>, Vec<Transcript>)> {
    let mut outcome = None;
    hear_files(
        transcriber,
        options,
        channels,
        &[path],
        1,
        1,
        |_, heard| Ok(heard),
        |_, result| {
            outcome = Some(result);
            Ok(())
        },
    )?;
    let heard = outcome.context("the file was not heard")??;
    Ok((heard.parties, heard.transcripts))
}
