//! A recording played as a live call, in 20 ms chunks, at real speed or as fast as the engine
//! takes it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::{Ingest, IngestError, Ingress, Source, Stop};
use crate::audio::{decode, party_label, AudioReader, ChannelMode};
use crate::call::{AudioChunk, Call, CallId, Party};

/// `[[sources]] type = "file"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    pub path: PathBuf,
    /// Play at real speed (a live call's pace: for demos and latency measurements); otherwise
    /// as fast as the engine takes the audio, with nothing dropped.
    #[serde(default)]
    pub realtime: bool,
    /// The call's id; must be unique per call, as receivers dedupe alerts on ids derived from
    /// it (default: the file's stem followed by a ULID, new each time the file plays).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// Stereo recordings: each channel a party (`split`), or one mixed party (`mix`).
    #[serde(default)]
    pub channels: ChannelMode,
}

pub struct FileSource {
    pub config: FileSourceConfig,
}

impl FileSource {
    pub fn new(config: FileSourceConfig) -> Self {
        Self { config }
    }

    fn call_id(&self) -> CallId {
        match &self.config.call_id {
            Some(id) => CallId::new(id.clone()),
            None => CallId::unique(
                &self
                    .config
                    .path
                    .file_stem()
                    .map_or("call".into(), |s| s.to_string_lossy()),
            ),
        }
    }
}

impl Source for FileSource {
    fn describe(&self) -> String {
        format!("file {}", self.config.path.display())
    }

    /// Reads the file chunk by chunk (memory does not grow with its length) and sends it in
    /// 20 ms pieces. A file that cannot be opened is an error before the call opens; one
    /// damaged later ends the call with what was read.
    fn run(self: Box<Self>, out: Arc<dyn Ingest>, stop: Stop) -> Result<()> {
        let mut reader = AudioReader::open(&self.config.path)?;
        // The first chunk is read before the call opens: an empty file is an error, not a
        // call without audio.
        let Some(first) = reader.next_chunk()? else {
            reader.finish()?;
            return Ok(());
        };
        let mut first = Some(first);
        let rate = reader.sample_rate();
        let split = self.config.channels == ChannelMode::Split;
        let multi = reader.channel_count() > 1 && split;
        let n_parties = if split { reader.channel_count() } else { 1 };
        let id = self.call_id();
        let call = Call {
            id: id.clone(),
            parties: (0..n_parties)
                .map(|i| Party {
                    label: party_label(multi.then_some(i)),
                    sample_rate: rate,
                })
                .collect(),
            metadata: BTreeMap::from([("file".to_owned(), self.config.path.display().to_string())]),
        };
        out.send(Ingress::Open(call))?;
        let realtime = self.config.realtime;
        let piece_len = (rate as usize / 50).max(1);
        let start = Instant::now();
        let mut pos = 0usize;
        let outcome = 'play: loop {
            if stop.requested() {
                break Ok(());
            }
            let chunk = match first
                .take()
                .map(Ok)
                .or_else(|| reader.next_chunk().transpose())
            {
                Some(Ok(c)) => c,
                None => break Ok(()),
                Some(Err(e)) => break Err(anyhow::Error::from(e)),
            };
            let parties = if split {
                chunk
            } else {
                vec![decode::mix(&chunk)]
            };
            let len = parties[0].len();
            let mut at = 0;
            while at < len {
                if stop.requested() {
                    break 'play Ok(());
                }
                let end = (at + piece_len).min(len);
                if realtime {
                    let due = start + Duration::from_secs_f64((pos + end) as f64 / rate as f64);
                    if !stop.sleep_until(due) {
                        break 'play Ok(());
                    }
                }
                for (party, samples) in parties.iter().enumerate() {
                    let item = Ingress::Audio(AudioChunk {
                        call: id.clone(),
                        party,
                        offset_s: (pos + at) as f64 / rate as f64,
                        samples: samples[at..end].to_vec(),
                    });
                    // A live source cannot wait: at real speed a full queue drops (and counts)
                    // the chunk. Faster than real time, the file waits for room.
                    let sent = if realtime {
                        out.send(item)
                    } else {
                        out.send_waiting(item)
                    };
                    match sent {
                        Ok(()) | Err(IngestError::QueueFull(_)) => {}
                        Err(e) => break 'play Err(e.into()),
                    }
                }
                at = end;
            }
            pos += len;
        };
        // Reports repaired samples.
        let _ = reader.finish();
        let _ = out.send(Ingress::Close(id));
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::Recorder;

    #[test]
    fn a_stereo_file_is_one_call_with_two_parties_and_chunks_stamped_with_audio_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("two.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&path, spec).unwrap();
        for i in 0..8000 {
            w.write_sample((i % 100) as i16).unwrap();
            w.write_sample(-((i % 100) as i16)).unwrap();
        }
        w.finalize().unwrap();
        let recorder = Arc::new(Recorder::default());
        let source = FileSource::new(FileSourceConfig {
            path: path.clone(),
            realtime: false,
            call_id: None,
            channels: ChannelMode::Split,
        });
        Box::new(source).run(recorder.clone(), Stop::new()).unwrap();
        let items = recorder.items.lock().unwrap();
        let Ingress::Open(call) = &items[0] else {
            panic!("first an open: {:?}", items[0])
        };
        // The stem and a ULID: the same file played again is another call.
        let (stem, ulid) = call.id.as_str().rsplit_once('-').unwrap();
        assert_eq!(stem, "two");
        assert!(ulid.parse::<ulid::Ulid>().is_ok(), "{}", call.id);
        assert_eq!(call.parties.len(), 2);
        assert_eq!(call.parties[1].label, "channel 1");
        assert_eq!(call.parties[0].sample_rate, 8000);
        assert_eq!(call.metadata["file"], path.display().to_string());
        let chunks: Vec<&AudioChunk> = items
            .iter()
            .filter_map(|i| match i {
                Ingress::Audio(c) => Some(c),
                _ => None,
            })
            .collect();
        // 1 s in 20 ms chunks, for each party.
        assert_eq!(chunks.len(), 100);
        let last = chunks.iter().rev().find(|c| c.party == 1).unwrap();
        assert!((last.offset_s - 0.98).abs() < 1e-9, "{}", last.offset_s);
        assert!(matches!(items.last(), Some(Ingress::Close(id)) if *id == call.id));
    }
}
