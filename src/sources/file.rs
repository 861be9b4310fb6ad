//! A recording fed to the streaming engine in 20 ms chunks, at real speed or as fast as the
//! engine takes it.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::audio::{decode_file, ChannelMode};
use crate::live::Engine;

pub fn play(
    engine: &Engine,
    call_id: &str,
    path: &Path,
    channels: ChannelMode,
    realtime: bool,
    stop: &AtomicBool,
) -> Result<()> {
    let decoded = decode_file(path)?;
    let rate = decoded.sample_rate;
    let parties: Vec<Vec<f32>> = match channels {
        ChannelMode::Split => decoded.channels,
        ChannelMode::Mix => vec![decoded.mixed()],
    };
    let call = engine.open_call(call_id, parties.len(), rate)?;
    let chunk = (rate as usize / 50).max(1);
    let len = parties.iter().map(Vec::len).max().unwrap_or(0);
    let start = Instant::now();
    let mut pos = 0;
    while pos < len && !stop.load(Ordering::Relaxed) {
        let end = (pos + chunk).min(len);
        if realtime {
            let due = start + Duration::from_secs_f64(end as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        for (party, samples) in parties.iter().enumerate() {
            let piece = samples[pos.min(samples.len())..end.min(samples.len())].to_vec();
            if realtime {
                // A live source cannot wait: a full queue drops (and counts) the chunk.
                call.push(party, piece);
            } else {
                call.push_waiting(party, piece);
            }
        }
        pos = end;
    }
    call.close();
    Ok(())
}
