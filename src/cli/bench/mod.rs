//! `vishguard bench`: measurements that must run from the binary alone (a GPU host has no
//! Rust toolchain): recognition throughput at several batch sizes, and how many simulated
//! real-time calls the engine sustains.
//!
//! Both print a table last. Numbers are wall-clock on the machine they run on; run them on an
//! otherwise idle machine and give its load with them.

mod rtp;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use clap::{Args, Subcommand};

use super::args::AsrArgs;
use crate::asr::{TranscribeOptions, Transcriber};
use crate::audio::vad::{speech_regions, VadConfig};
use crate::audio::{load_16k, ChannelMode};
use crate::call::{AudioChunk, Call, CallId, Event, Party};
use crate::config::AsrConfig;
use crate::detect::Classifier;
use crate::engine::{Engine, EngineConfig, SinkSpec, WhisperRecogniser};
use crate::sinks::{QueueConfig, Sink};
use crate::sources::Ingress;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Utterances per second through the recogniser at each batch size (audio seconds heard
    /// per wall second).
    Throughput(ThroughputArgs),
    /// Simulated calls fed at real speed through the whole engine: transcript lag and drops
    /// at each number of concurrent calls, up to the first that falls behind.
    Live(LiveArgs),
    /// Calls over the network against `vishguard serve`: SIP INVITE, RTP (PCMU) at real speed,
    /// BYE. Alert latency against `listen --realtime`, then concurrent calls up to the first
    /// level that falls behind, with the server's CPU and memory.
    Rtp(rtp::RtpArgs),
    /// The GPU kernels (kernels/) against the CPU path they replace: the largest difference
    /// of their output from the production CPU computation on the same audio, against the
    /// bound each promises, and audio seconds per wall second on both. Exits 1 when a kernel
    /// passes its bound.
    Kernels(KernelsArgs),
}

#[derive(Args, Debug)]
pub struct KernelsArgs {
    /// Where the kernels run: cpu (their CPU references), cuda, cuda:N [default: auto].
    #[arg(long, value_parser = clap::builder::ValueParser::new(|s: &str| s.parse::<crate::asr::DeviceChoice>()))]
    pub device: Option<crate::asr::DeviceChoice>,
    #[command(flatten)]
    pub audio: BenchAudio,
    /// Rows (utterances) per batch, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    pub rows: Vec<usize>,
    /// Frames per row (100 a second; 3000 is Whisper's 30-s window, 1500 the live 15 s one).
    #[arg(long, default_value_t = 1500)]
    pub frames: usize,
    /// Mel bands (80; 128 for large-v3).
    #[arg(long, default_value_t = 80)]
    pub n_mels: usize,
    /// Keep measuring each batch size for at least this many wall seconds.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
}

/// What both measurements take.
#[derive(Args, Debug)]
pub struct BenchAudio {
    /// Recordings the utterances are cut from [default: the .wav files in ./audio-samples].
    #[arg(long = "audio")]
    pub audio: Vec<PathBuf>,
    /// Only recordings whose file name starts with this (e.g. "en_") [default: "en_" for an
    /// English-only model on the bundled samples, whose Mandarin it cannot hear, else all].
    #[arg(long)]
    pub audio_prefix: Option<String>,
}

#[derive(Args, Debug)]
pub struct ThroughputArgs {
    #[command(flatten)]
    pub asr: AsrArgs,
    #[command(flatten)]
    pub audio: BenchAudio,
    /// Batch sizes to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    pub batch: Vec<usize>,
    /// Keep measuring each batch size for at least this many wall seconds.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
}

#[derive(Args, Debug)]
pub struct LiveArgs {
    #[command(flatten)]
    pub asr: AsrArgs,
    #[command(flatten)]
    pub audio: BenchAudio,
    /// Numbers of concurrent calls to try, in order; stops after the first that falls behind.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub calls: Vec<usize>,
    /// Seconds of audio per call.
    #[arg(long, default_value_t = 30.0)]
    pub call_seconds: f64,
    /// Calls start spread over this many seconds (as real calls do not start together).
    #[arg(long, default_value_t = 5.0)]
    pub stagger_s: f64,
    /// Falling behind: transcript lag p95 above this (seconds), or any audio dropped.
    #[arg(long, default_value_t = 1.5)]
    pub max_lag_p95: f64,
    /// Utterances of different calls heard together.
    #[arg(long, default_value_t = 1)]
    pub asr_batch: usize,
    /// Recogniser threads.
    #[arg(long, default_value_t = 2)]
    pub asr_workers: usize,
    /// Utterances join the running decode of other calls' utterances (continuous batching,
    /// the engine's `--joint-decoding`).
    #[arg(long)]
    pub joint_decoding: bool,
    /// Also hear partial hypotheses (they use idle time only).
    #[arg(long)]
    pub partials: bool,
    /// Also hear reviews: runs of speech across cuts heard again joined (idle time only).
    #[arg(long)]
    pub reviews: bool,
    /// Threads feeding the simulated calls.
    #[arg(long, default_value_t = 8)]
    pub feeders: usize,
}

pub fn run(cmd: BenchCommand) -> Result<i32> {
    match cmd {
        BenchCommand::Throughput(a) => throughput(a),
        BenchCommand::Live(a) => live(a),
        BenchCommand::Rtp(a) => rtp::run(a),
        BenchCommand::Kernels(a) => kernels(a),
    }
}

/// The recordings asked for (or the .wav files in ./audio-samples), with the prefix filter.
/// `english_only`: the model hears English only, so the bundled Mandarin samples are left
/// out unless a prefix is given (fed to tiny.en they made hallucination loops that ran the
/// temperature fallback, and earlier live numbers were measured so).
fn recording_paths(audio: &BenchAudio, english_only: bool) -> Result<Vec<PathBuf>> {
    let mut files = audio.audio.clone();
    let mut prefix = audio.audio_prefix.clone();
    if files.is_empty() {
        if english_only && prefix.is_none() {
            eprintln!("bench: an English-only model: the bundled samples starting with en_");
            prefix = Some("en_".into());
        }
        let dir = Path::new("audio-samples");
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("no --audio given and cannot read {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "wav"))
            .collect();
        found.sort();
        files = found;
    }
    files.retain(|f| {
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned());
        prefix
            .as_deref()
            .is_none_or(|p| name.is_some_and(|n| n.starts_with(p)))
    });
    if files.is_empty() {
        bail!("no recordings to measure with");
    }
    Ok(files)
}

/// The recordings to cut utterances from, 16 kHz mono.
fn recordings(audio: &BenchAudio, english_only: bool) -> Result<Vec<(String, Vec<f32>)>> {
    let mut out = Vec::new();
    for f in recording_paths(audio, english_only)? {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let samples = load_16k(&f, ChannelMode::Mix)?.remove(0).samples;
        out.push((name, samples));
    }
    Ok(out)
}

/// Utterances as the engine cuts them: pieces of 3 to 9 s of the recordings' speech.
fn utterances(recordings: &[(String, Vec<f32>)]) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    for (_, samples) in recordings {
        for r in speech_regions(samples, &VadConfig::default()) {
            let mut start = r.start;
            while start + 16_000 < r.end {
                let len = (3 + 3 * (out.len() % 3)) * 16_000;
                let end = r.end.min(start + len);
                out.push(samples[start..end].to_vec());
                start = end;
            }
        }
    }
    out
}

/// The options the live recogniser is made with, as `listen` and `serve` make it (the
/// `[asr]` settings, detection limited to the languages with phrase packs).
fn live_options(config: &AsrConfig, t: &Transcriber) -> TranscribeOptions {
    config.options(t.is_multilingual(), &Classifier::builtin().languages())
}

fn throughput(args: ThroughputArgs) -> Result<i32> {
    let config = args.asr.config();
    let t = config.load()?;
    let clips = utterances(&recordings(&args.audio, !t.is_multilingual())?);
    if clips.is_empty() {
        bail!("the recordings hold no speech");
    }
    let base = WhisperRecogniser::utterance_options(live_options(&config, &t));
    let options: Vec<TranscribeOptions> = clips
        .iter()
        .map(|c| {
            let mut o = base.clone();
            o.policy.max_tokens = Some(16 + (c.len() as f64 / 16_000.0 * 10.0) as usize);
            o
        })
        .collect();
    eprintln!(
        "bench throughput: {} on {:?} ({:?}), {} utterances of {:.1} s mean",
        t.name,
        t.device,
        t.compute,
        clips.len(),
        clips.iter().map(|c| c.len()).sum::<usize>() as f64 / 16_000.0 / clips.len() as f64
    );
    // Warm up: kernels compiled and loaded, allocator pools filled.
    let _ = t.transcribe_batch(&[(clips[0].as_slice(), &options[0])]);
    let mut rows = Vec::new();
    let mut next = 0usize;
    for &b in &args.batch {
        let b = b.max(1);
        let started = Instant::now();
        let (mut audio_s, mut heard, mut batches, mut failed) = (0.0, 0usize, 0usize, 0usize);
        while batches == 0 || started.elapsed().as_secs_f64() < args.seconds {
            let items: Vec<(&[f32], &TranscribeOptions)> = (0..b)
                .map(|k| {
                    let i = (next + k) % clips.len();
                    (clips[i].as_slice(), &options[i])
                })
                .collect();
            next += b;
            for (r, (samples, _)) in t.transcribe_batch(&items).into_iter().zip(&items) {
                match r {
                    Ok(_) => {
                        heard += 1;
                        audio_s += samples.len() as f64 / 16_000.0;
                    }
                    Err(_) => failed += 1,
                }
            }
            batches += 1;
        }
        let wall = started.elapsed().as_secs_f64();
        let row = format!(
            "{:<8} {:>6} {:>10.1} {:>12.1} {:>10.1} {:>7}",
            t.name,
            b,
            audio_s / wall,
            heard as f64 / wall,
            wall * 1000.0 / batches as f64,
            failed
        );
        eprintln!("{row}");
        rows.push(row);
    }
    println!(
        "{:<8} {:>6} {:>10} {:>12} {:>10} {:>7}",
        "model", "batch", "audio x", "utt/s", "ms/batch", "failed"
    );
    for r in rows {
        println!("{r}");
    }
    Ok(0)
}

/// `bench kernels`: the batched log-mel (`asr::mel_batch`, kernels/log_mel.cu) against
/// `MelSpectrogram::log_mel` row by row on all cores, on the same utterances.
fn kernels(args: KernelsArgs) -> Result<i32> {
    use crate::asr::mel::{MelSpectrogram, HOP};
    use crate::asr::mel_batch::{LogMelBatch, REFERENCE_BOUND};
    use rayon::prelude::*;

    let device = args.device.unwrap_or_default().open()?;
    let clips = utterances(&recordings(&args.audio, false)?);
    if clips.is_empty() {
        bail!("the recordings hold no speech");
    }
    let frames = args.frames.max(1);
    let samples = frames * HOP;
    let mel = MelSpectrogram::new(args.n_mels);
    let op = LogMelBatch::new(&mel);
    eprintln!(
        "bench kernels: log-mel on {device:?}, {} utterances, {frames} frames a row",
        clips.len()
    );
    let mut lines = Vec::new();
    let mut failed = false;
    let mut next = 0usize;
    for &rows in &args.rows {
        let rows = rows.max(1);
        let batch: Vec<&[f32]> = (0..rows)
            .map(|k| {
                let c = &clips[(next + k) % clips.len()];
                // The op's contract: the audio and a frame's reach fit in the frames.
                &c[..c.len().min(samples.saturating_sub(200))]
            })
            .collect();
        next += rows;
        let audio_s = batch.iter().map(|c| c.len()).sum::<usize>() as f64 / 16_000.0;
        let lens: Vec<usize> = batch.iter().map(|c| c.len()).collect();
        let mut flat = vec![0f32; rows * samples];
        for (r, c) in batch.iter().enumerate() {
            flat[r * samples..r * samples + c.len()].copy_from_slice(c);
        }
        // The production path: one recording at a time, rows spread over the cores.
        let mut want = Vec::new();
        let cpu_s = time_runs(args.seconds, &mut || {
            want = batch
                .par_iter()
                .map(|c| mel.log_mel(c).window_of(0, frames))
                .collect::<Vec<_>>();
            Ok(())
        })?;
        let (got, op_s, vs_ref) = measure_op(args.seconds, &device, &|d| {
            let pcm = Tensor::from_slice(&flat, (rows, samples), d)?;
            Ok(op.compute(&pcm, &lens, frames)?.flatten_all()?.to_vec1()?)
        })?;
        let per_row = op.n_mels() * frames;
        let worst = largest(want.iter().enumerate().flat_map(|(r, w)| {
            w.iter()
                .zip(&got[r * per_row..(r + 1) * per_row])
                .map(|(a, b)| (a - b).abs())
        }));
        let ok = worst <= REFERENCE_BOUND
            && vs_ref.is_none_or(|d| d <= crate::asr::mel_batch::KERNEL_BOUND);
        failed |= !ok;
        let line = kernel_line("log-mel", rows, worst, vs_ref, ok, audio_s, cpu_s, op_s);
        eprintln!("{line}");
        lines.push(line);
    }
    // G.711 to 16 kHz: the utterances at 8 kHz (band-limited first, so that both resamplers
    // see telephone audio) as µ-law.
    {
        use crate::audio::g711::{encode_ulaw, Law};
        use crate::audio::g711_batch::{production_row, relative_rms_difference, G711To16k};
        let op = G711To16k::new(Law::Mu);
        let bound = crate::audio::g711_batch::REFERENCE_BOUND;
        for &rows in &args.rows {
            let rows = rows.max(1);
            let batch: Vec<Vec<u8>> = (0..rows)
                .map(|k| {
                    let c = &clips[(next + k) % clips.len()];
                    encode_ulaw(&crate::audio::g711_batch::half_band_decimate(c))
                })
                .collect();
            next += rows;
            let n = batch.iter().map(Vec::len).max().unwrap_or(1).max(1);
            let audio_s = batch.iter().map(Vec::len).sum::<usize>() as f64 / 8_000.0;
            let lens: Vec<usize> = batch.iter().map(Vec::len).collect();
            let mut flat = vec![0xffu8; rows * n];
            for (r, c) in batch.iter().enumerate() {
                flat[r * n..r * n + c.len()].copy_from_slice(c);
            }
            let mut want = Vec::new();
            let cpu_s = time_runs(args.seconds, &mut || {
                want = batch
                    .par_iter()
                    .map(|c| production_row(c, Law::Mu))
                    .collect::<Vec<_>>();
                Ok(())
            })?;
            let (got, op_s, vs_ref) = measure_op(args.seconds, &device, &|d| {
                let codes = Tensor::from_slice(&flat, (rows, n), d)?;
                Ok(op.compute(&codes, &lens)?.flatten_all()?.to_vec1()?)
            })?;
            let worst = largest(want.iter().enumerate().map(|(r, w)| {
                relative_rms_difference(&got[r * 2 * n..r * 2 * n + w.len()], w, 320)
            }));
            let ok = worst <= bound
                && vs_ref.is_none_or(|d| d <= crate::audio::g711_batch::KERNEL_BOUND);
            failed |= !ok;
            let line = kernel_line("g711", rows, worst, vs_ref, ok, audio_s, cpu_s, op_s);
            eprintln!("{line}");
            lines.push(line);
        }
    }
    println!(
        "{:<8} {:>5} {:>10} {:>10} {:>8} {:>12} {:>12} {:>7}",
        "kernel", "rows", "vs cpu", "vs ref", "bounds", "cpu audio x", "op audio x", "speedup"
    );
    for l in lines {
        println!("{l}");
    }
    println!(
        "(vs cpu: against the production CPU path, log-mel the largest difference in normalised \
         log-mel units (bound {REFERENCE_BOUND:.0e}), g711 the RMS difference relative to the \
         production output (bound {:.0e}); vs ref: the largest difference from the kernel's CPU \
         reference (bounds {:.0e}, {:.0e}); cpu = the production path on all cores, op = the \
         kernel on {device:?}, upload and download included)",
        crate::audio::g711_batch::REFERENCE_BOUND,
        crate::asr::mel_batch::KERNEL_BOUND,
        crate::audio::g711_batch::KERNEL_BOUND
    );
    Ok(if failed { 1 } else { 0 })
}

/// Wall seconds per call of `f`, called until at least `seconds` have passed (at least once).
fn time_runs(seconds: f64, f: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
    let started = Instant::now();
    let mut runs = 0u32;
    while runs == 0 || started.elapsed().as_secs_f64() < seconds {
        f()?;
        runs += 1;
    }
    Ok(started.elapsed().as_secs_f64() / runs as f64)
}

/// The largest of some differences, NaN counting as infinite (0 for none).
fn largest(differences: impl Iterator<Item = f32>) -> f32 {
    differences.fold(
        0f32,
        |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) },
    )
}

/// Runs a kernel's op on `device`: its output (the first run, which also loads the kernel, is
/// not timed), wall seconds per run, and, on a device other than the CPU, the largest
/// difference from the same op on the CPU (the kernel's CPU reference).
fn measure_op(
    seconds: f64,
    device: &candle_core::Device,
    apply: &dyn Fn(&candle_core::Device) -> Result<Vec<f32>>,
) -> Result<(Vec<f32>, f64, Option<f32>)> {
    let mut got = apply(device)?;
    let per_run = time_runs(seconds, &mut || {
        got = apply(device)?;
        Ok(())
    })?;
    let vs_ref = if device.is_cpu() {
        None
    } else {
        let reference = apply(&candle_core::Device::Cpu)?;
        Some(if reference.len() == got.len() {
            largest(got.iter().zip(&reference).map(|(a, b)| (a - b).abs()))
        } else {
            f32::INFINITY
        })
    };
    Ok((got, per_run, vs_ref))
}

/// One row of `bench kernels`' table: the difference from the production CPU path, from the
/// kernel's CPU reference (`-` on the CPU, where the op is the reference).
#[allow(clippy::too_many_arguments)]
fn kernel_line(
    kernel: &str,
    rows: usize,
    worst: f32,
    vs_ref: Option<f32>,
    ok: bool,
    audio_s: f64,
    cpu_s: f64,
    op_s: f64,
) -> String {
    format!(
        "{:<8} {:>5} {:>10.2e} {:>10} {:>8} {:>12.1} {:>12.1} {:>7.2}",
        kernel,
        rows,
        worst,
        vs_ref.map_or("-".into(), |d| format!("{d:.2e}")),
        if ok { "ok" } else { "FAILED" },
        audio_s / cpu_s,
        audio_s / op_s,
        cpu_s / op_s
    )
}

/// Records transcript lag and drops from the engine's events.
#[derive(Default)]
struct Record {
    lag: Vec<f64>,
    dropped_audio_s: f64,
    dropped_utterances: u64,
    ended: usize,
}

struct Recorder {
    record: Arc<Mutex<Record>>,
    starts: Arc<HashMap<CallId, Instant>>,
}

impl Sink for Recorder {
    fn describe(&self) -> String {
        "bench recorder".into()
    }

    fn write(&mut self, event: &Event) -> Result<()> {
        let mut r = self.record.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::Transcript(u) => {
                if let Some(start) = self.starts.get(&u.call_id) {
                    r.lag.push(start.elapsed().as_secs_f64() - u.end_s);
                }
            }
            Event::CallEnded(s) => {
                let stream = s.stream.clone().unwrap_or_default();
                r.dropped_audio_s += stream.dropped_audio_s;
                r.dropped_utterances += stream.dropped_utterances;
                r.ended += 1;
            }
            _ => {}
        }
        Ok(())
    }
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// This process's CPU time (user + system, seconds) and peak resident memory (MB), from /proc.
fn cpu_and_peak_rss() -> (f64, f64) {
    proc_cpu_and_memory("self", "VmHWM:")
}

/// A process's CPU time (user + system, seconds) and one memory line of its status (MB), from
/// /proc/`pid`.
fn proc_cpu_and_memory(pid: &str, memory_field: &str) -> (f64, f64) {
    let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1;
            let f: Vec<&str> = after.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        })
        .unwrap_or(f64::NAN);
    let memory = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with(memory_field))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(f64::NAN, |kb| kb / 1024.0);
    (cpu, memory)
}

fn live(args: LiveArgs) -> Result<i32> {
    let config = args.asr.config();
    let t = Arc::new(config.load()?);
    let recs = recordings(&args.audio, !t.is_multilingual())?;
    // One long stream of speech, looped; each call starts at its own place in it.
    let stream: Vec<f32> = recs.iter().flat_map(|(_, s)| s.iter().copied()).collect();
    if stream.len() < 16_000 {
        bail!("the recordings hold less than a second of audio");
    }
    let per_call = (args.call_seconds * 16_000.0) as usize;
    let classifier = Arc::new(Classifier::builtin());
    eprintln!(
        "bench live: {} on {:?} ({:?}), batch {}, {} workers, joint decoding {}, {:.0} s calls, \
         keyword detection",
        t.name,
        t.device,
        t.compute,
        args.asr_batch,
        args.asr_workers,
        if args.joint_decoding { "on" } else { "off" },
        args.call_seconds
    );
    let mut rows = Vec::new();
    let mut sustained = 0;
    for &n in &args.calls {
        let ids: Vec<CallId> = (0..n)
            .map(|i| CallId::new(format!("bench-{n}-{i}")))
            .collect();
        let record = Arc::new(Mutex::new(Record::default()));
        let t0 = Instant::now() + Duration::from_millis(200);
        let starts: HashMap<CallId, Instant> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let offset = args.stagger_s * i as f64 / n.max(1) as f64;
                (id.clone(), t0 + Duration::from_secs_f64(offset))
            })
            .collect();
        let starts = Arc::new(starts);
        let sink = Recorder {
            record: record.clone(),
            starts: starts.clone(),
        };
        let engine_config = EngineConfig {
            asr_batch: args.asr_batch,
            asr_workers: args.asr_workers,
            joint_decoding: args.joint_decoding,
            asr_queue: (2 * n).max(16),
            max_calls: n + 8,
            partials: args.partials,
            reviews: args.reviews,
            ..EngineConfig::default()
        };
        let recogniser = Arc::new(WhisperRecogniser::new(t.clone(), live_options(&config, &t)));
        let engine = Engine::start(
            recogniser,
            classifier.clone(),
            engine_config,
            vec![SinkSpec::new(sink, QueueConfig::default())],
        )?;
        let (cpu0, _) = cpu_and_peak_rss();
        let wall0 = Instant::now();
        let feeders = args.feeders.clamp(1, n.max(1));
        std::thread::scope(|s| -> Result<()> {
            let mut handles = Vec::new();
            for f in 0..feeders {
                let (engine, ids, starts, stream) = (&engine, &ids, &starts, &stream);
                handles.push(s.spawn(move || -> Result<()> {
                    let ingest = engine.ingest();
                    let mine: Vec<(usize, &CallId)> =
                        ids.iter().enumerate().skip(f).step_by(feeders).collect();
                    for (_, id) in &mine {
                        ingest.send(Ingress::Open(Call {
                            id: (*id).clone(),
                            parties: vec![Party {
                                label: "caller".into(),
                                sample_rate: 16_000,
                            }],
                            metadata: Default::default(),
                        }))?;
                    }
                    // Each tick sends every call the 20 ms chunks now due.
                    let chunks = per_call / 320;
                    let mut sent = vec![0usize; mine.len()];
                    loop {
                        let now = Instant::now();
                        let mut all_done = true;
                        for (k, (i, id)) in mine.iter().enumerate() {
                            let start = starts[*id];
                            let due = if now < start {
                                0
                            } else {
                                (((now - start).as_secs_f64() / 0.02) as usize).min(chunks)
                            };
                            while sent[k] < due {
                                let at = (i * 7919 * 320 + sent[k] * 320) % (stream.len() - 320);
                                let _ = ingest.send(Ingress::Audio(AudioChunk {
                                    call: (*id).clone(),
                                    party: 0,
                                    offset_s: sent[k] as f64 * 0.02,
                                    samples: stream[at..at + 320].to_vec(),
                                }));
                                sent[k] += 1;
                            }
                            if sent[k] < chunks {
                                all_done = false;
                            }
                        }
                        if all_done {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    for (_, id) in &mine {
                        ingest.send(Ingress::Close((*id).clone()))?;
                    }
                    Ok(())
                }));
            }
            for h in handles {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a feeder panicked"))??;
            }
            Ok(())
        })?;
        engine.shutdown();
        let wall = wall0.elapsed().as_secs_f64();
        let (cpu1, rss) = cpu_and_peak_rss();
        let mut r = record.lock().unwrap_or_else(|e| e.into_inner());
        let heard = r.lag.len();
        let p50 = percentile(&mut r.lag, 0.5);
        let p95 = percentile(&mut r.lag, 0.95);
        let behind = p95.is_nan()
            || p95 > args.max_lag_p95
            || r.dropped_audio_s > 0.0
            || r.dropped_utterances > 0
            || r.ended < n;
        let row = format!(
            "{:<8} {:>6} {:>6} {:>8} {:>8.2} {:>8.2} {:>9.1} {:>8} {:>7.1} {:>8.0} {:>6}",
            t.name,
            n,
            args.asr_batch,
            heard,
            p50,
            p95,
            r.dropped_audio_s,
            r.dropped_utterances,
            (cpu1 - cpu0) / wall,
            rss,
            if behind { "behind" } else { "ok" }
        );
        eprintln!("{row}");
        rows.push(row);
        if behind {
            break;
        }
        sustained = n;
    }
    println!(
        "{:<8} {:>6} {:>6} {:>8} {:>8} {:>8} {:>9} {:>8} {:>7} {:>8} {:>6}",
        "model",
        "calls",
        "batch",
        "heard",
        "lag p50",
        "lag p95",
        "drop s",
        "drop utt",
        "cores",
        "peak MB",
        ""
    );
    for r in rows {
        println!("{r}");
    }
    println!(
        "{}: sustained {sustained} concurrent real-time calls with transcript lag p95 <= {} s and no drops",
        t.name, args.max_lag_p95
    );
    Ok(0)
}
