//! `vishguard bench rtp`: calls placed over the network against a real `vishguard serve`
//! (a child process of this binary): SIP INVITE with an SDP offer of PCMU, RTP (RFC 3550) at
//! real speed from the recordings, BYE; the server's event stream (`/events`) is read as it
//! comes. Two measurements, one run:
//!
//! 1. Alert latency (the alert's `latency_s`: wall-clock seconds from the end of the words to
//!    the alert) of every scam recording played alone through RTP, and the same recordings
//!    through `listen --from-file --realtime`.
//! 2. Concurrent calls at each level (each plays one recording, starts spread over
//!    `--stagger-s`): transcript lag (when the server's transcript event arrived, minus when
//!    the utterance's last word was sent), audio and utterances dropped, the server's CPU
//!    (cores busy) and its peak resident memory, up to the first level that falls behind.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

use super::{percentile, BenchAudio};
use crate::audio::decode_file;
use crate::audio::g711::encode_ulaw;

#[derive(Args, Debug)]
pub struct RtpArgs {
    /// Catalog model name or path (as `serve --model`).
    #[arg(long, default_value = "tiny.en")]
    pub model: String,
    #[command(flatten)]
    pub audio: BenchAudio,
    /// Numbers of concurrent calls to try, in order; stops after the first that falls behind.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub calls: Vec<usize>,
    /// Calls of a level start spread over this many seconds.
    #[arg(long, default_value_t = 5.0)]
    pub stagger_s: f64,
    /// Falling behind: transcript lag p95 above this (seconds), or any audio or utterance
    /// dropped.
    #[arg(long, default_value_t = 3.0)]
    pub max_lag_p95: f64,
    /// The server's recogniser threads.
    #[arg(long, default_value_t = 2)]
    pub asr_workers: usize,
    /// Skip the alert-latency comparison with `listen --from-file --realtime`.
    #[arg(long)]
    pub no_compare: bool,
}

const TOKEN: &str = "bench-rtp-token";

/// One recording as RTP carries it: 20 ms PCMU frames.
struct Clip {
    name: String,
    frames: Vec<Vec<u8>>,
    path: PathBuf,
}

fn clips(audio: &BenchAudio) -> Result<Vec<Clip>> {
    let mut out = Vec::new();
    // The model is the server's choice: every recording asked for is sent.
    for path in super::recording_paths(audio, false)? {
        let decoded = decode_file(&path).with_context(|| format!("reading {}", path.display()))?;
        let samples = to_8k(&decoded.mixed(), decoded.sample_rate)
            .with_context(|| format!("resampling {}", path.display()))?;
        let frames = encode_ulaw(&samples)
            .chunks(160)
            .map(<[u8]>::to_vec)
            .collect();
        out.push(Clip {
            name: path
                .file_name()
                .map_or(String::new(), |n| n.to_string_lossy().into_owned()),
            frames,
            path,
        });
    }
    Ok(out)
}

/// One channel at `rate` Hz as 8 kHz (what PCMU carries), through rubato's FFT resampler.
fn to_8k(samples: &[f32], rate: u32) -> Result<Vec<f32>> {
    use rubato::Resampler;
    if rate == 8000 {
        return Ok(samples.to_vec());
    }
    let mut r = rubato::FftFixedIn::<f32>::new(rate as usize, 8000, 1024, 2, 1)?;
    let mut out = Vec::with_capacity(samples.len() * 8000 / rate.max(1) as usize + 1024);
    let mut pos = 0;
    while pos + r.input_frames_next() <= samples.len() {
        let n = r.input_frames_next();
        out.extend_from_slice(&r.process(&[&samples[pos..pos + n]], None)?[0]);
        pos += n;
    }
    out.extend_from_slice(&r.process_partial(Some(&[&samples[pos..]]), None)?[0]);
    Ok(out)
}

/// What the server's event stream said, with when it arrived.
#[derive(Default)]
struct Heard {
    /// (call id, end_s of the utterance, when its transcript arrived)
    transcripts: Vec<(String, f64, Instant)>,
    /// (call id, latency_s)
    alerts: Vec<(String, f64)>,
    /// call id -> (dropped audio s, dropped utterances, missing audio s)
    ended: HashMap<String, (f64, u64, f64)>,
}

/// `vishguard serve` as a child, its addresses and the reader of its events.
struct Server {
    child: Child,
    sip: SocketAddr,
    heard: Arc<Mutex<Heard>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(args: &RtpArgs) -> Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["serve", "--http", "127.0.0.1:0", "--sip", "127.0.0.1:0"])
            .args(["--token", TOKEN, "--model", &args.model])
            .args(["--asr-workers", &args.asr_workers.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting vishguard serve")?;
        let mut lines = BufReader::new(child.stderr.take().context("no stderr")?).lines();
        let (mut http, mut sip) = (None, None);
        while http.is_none() {
            let Some(line) = lines.next() else {
                bail!("vishguard serve stopped before it listened");
            };
            let line = line?;
            if let Some(a) = line.split("SIP on udp and tcp ").nth(1) {
                sip = Some(a.trim().parse::<SocketAddr>()?);
            }
            if let Some(a) = line.split("listening on ").nth(1) {
                http = Some(a.trim().to_owned());
            }
            if line.contains("error") {
                eprintln!("{line}");
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        let sip = sip.context("serve did not say where SIP listens")?;
        let heard = Arc::new(Mutex::new(Heard::default()));
        let events = ureq::get(&format!("{}/events", http.unwrap_or_default()))
            .set("Authorization", &format!("Bearer {TOKEN}"))
            .call()
            .context("subscribing to the server's events")?;
        let sink = heard.clone();
        std::thread::spawn(move || {
            let mut kind = String::new();
            for line in BufReader::new(events.into_reader()).lines() {
                let Ok(line) = line else { return };
                if let Some(k) = line.strip_prefix("event:") {
                    kind = k.trim().to_owned();
                } else if let Some(data) = line.strip_prefix("data:") {
                    let Ok(v) = serde_json::from_str::<serde_json::Value>(data.trim()) else {
                        continue;
                    };
                    let call = v["call_id"].as_str().unwrap_or_default().to_owned();
                    let mut h = sink.lock().unwrap_or_else(|e| e.into_inner());
                    match kind.as_str() {
                        "transcript" => h.transcripts.push((
                            call,
                            v["end_s"].as_f64().unwrap_or(f64::NAN),
                            Instant::now(),
                        )),
                        "alert" => h
                            .alerts
                            .push((call, v["latency_s"].as_f64().unwrap_or(f64::NAN))),
                        "call_ended" => {
                            let s = &v["stream"];
                            h.ended.insert(
                                call,
                                (
                                    s["dropped_audio_s"].as_f64().unwrap_or(0.0),
                                    s["dropped_utterances"].as_u64().unwrap_or(0),
                                    s["missing_audio_s"].as_f64().unwrap_or(0.0),
                                ),
                            );
                        }
                        _ => {}
                    }
                }
            }
        });
        Ok(Self { child, sip, heard })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// One SIP call: INVITE (PCMU offer), ACK, the clip as RTP at real speed, BYE. Returns when
/// the first RTP packet went out.
fn place_call(
    sip: SocketAddr,
    call_id: &str,
    clip: &Clip,
    started: &Mutex<Option<Instant>>,
) -> Result<()> {
    let signalling = UdpSocket::bind("127.0.0.1:0")?;
    signalling.set_read_timeout(Some(Duration::from_secs(10)))?;
    let media = UdpSocket::bind("127.0.0.1:0")?;
    let (sig_port, rtp_port) = (signalling.local_addr()?.port(), media.local_addr()?.port());
    let sdp = format!(
        "v=0\r\no=bench 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {rtp_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendonly\r\n"
    );
    let request = |method: &str, cseq: u32, to_tag: &str, body: &str| {
        let content_type = if body.is_empty() {
            String::new()
        } else {
            "Content-Type: application/sdp\r\n".to_owned()
        };
        format!(
            "{method} sip:vishguard@{sip} SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:{sig_port};branch=z9hG4bK-{call_id}-{cseq}{method}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:bench@127.0.0.1>;tag=bench\r\n\
             To: <sip:vishguard@{sip}>{to_tag}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n\
             Contact: <sip:bench@127.0.0.1:{sig_port}>\r\n{content_type}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    signalling.send_to(request("INVITE", 1, "", &sdp).as_bytes(), sip)?;
    let answer = final_response(&signalling, call_id)?;
    if !answer.starts_with("SIP/2.0 200") {
        bail!(
            "{call_id}: INVITE answered {}",
            answer.lines().next().unwrap_or("")
        );
    }
    let to_tag = answer
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("to:"))
        .and_then(|l| l.split(";tag=").nth(1))
        .map(|t| format!(";tag={}", t.trim()))
        .unwrap_or_default();
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let port: u16 = body
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("{call_id}: no m=audio port in the answer"))?;
    let ip = body
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))
        .map_or("127.0.0.1", str::trim);
    let rtp_to: SocketAddr = format!("{ip}:{port}").parse()?;
    signalling.send_to(request("ACK", 1, &to_tag, "").as_bytes(), sip)?;

    let ssrc: u32 = rand::random();
    let t0 = Instant::now();
    *started.lock().unwrap_or_else(|e| e.into_inner()) = Some(t0);
    let mut packet = Vec::with_capacity(172);
    for (i, frame) in clip.frames.iter().enumerate() {
        let due = t0 + Duration::from_millis(20 * i as u64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        packet.clear();
        packet.extend_from_slice(&[0x80, if i == 0 { 0x80 } else { 0x00 }]);
        packet.extend_from_slice(&(i as u16).to_be_bytes());
        packet.extend_from_slice(&((i * 160) as u32).to_be_bytes());
        packet.extend_from_slice(&ssrc.to_be_bytes());
        packet.extend_from_slice(frame);
        media.send_to(&packet, rtp_to)?;
    }
    signalling.send_to(request("BYE", 2, &to_tag, "").as_bytes(), sip)?;
    let _ = final_response(&signalling, call_id);
    Ok(())
}

/// The first non-provisional SIP response on the socket.
fn final_response(socket: &UdpSocket, call_id: &str) -> Result<String> {
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, _) = socket
            .recv_from(&mut buf)
            .with_context(|| format!("{call_id}: no SIP answer in 10 s"))?;
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.starts_with("SIP/2.0 1") {
            continue;
        }
        return Ok(text);
    }
}

/// CPU seconds (user + system) of a process, and its resident memory now (MB).
fn cpu_and_rss(pid: u32) -> (f64, f64) {
    super::proc_cpu_and_memory(&pid.to_string(), "VmRSS:")
}

/// Places `n` calls (call `i` plays `clips[i % len]`), starts spread over `stagger_s`, and
/// waits for every call's summary. Returns each call's id and when its RTP started.
fn run_level(
    server: &Server,
    tag: &str,
    clips: &[&Clip],
    n: usize,
    stagger_s: f64,
) -> Result<Vec<(String, Instant)>> {
    let ids: Vec<String> = (0..n).map(|i| format!("bench-{tag}-{i}")).collect();
    let starts: Vec<Mutex<Option<Instant>>> = (0..n).map(|_| Mutex::new(None)).collect();
    let t0 = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let (clip, started) = (clips[i % clips.len()], &starts[i]);
                let at = t0 + Duration::from_secs_f64(stagger_s * i as f64 / n.max(1) as f64);
                s.spawn(move || {
                    if let Some(wait) = at.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    place_call(server.sip, id, clip, started)
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("a caller panicked"))??;
        }
        Ok(())
    })?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ended = {
            let h = server.heard.lock().unwrap_or_else(|e| e.into_inner());
            ids.iter().filter(|id| h.ended.contains_key(*id)).count()
        };
        if ended == n {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "{} of {n} calls never ended (120 s after their BYE)",
                n - ended
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(ids
        .into_iter()
        .zip(starts)
        .map(|(id, s)| {
            let t = s
                .into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .unwrap_or(t0);
            (id, t)
        })
        .collect())
}

/// Alert latencies of `listen --from-file --realtime` on each clip, one after another.
fn listen_latencies(model: &str, clips: &[&Clip]) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    for clip in clips {
        let run = Command::new(std::env::current_exe()?)
            .args([
                "listen",
                "--model",
                model,
                "--format",
                "jsonl",
                "--realtime",
            ])
            .arg("--from-file")
            .arg(&clip.path)
            .stderr(Stdio::null())
            .output()
            .context("running listen")?;
        for line in String::from_utf8_lossy(&run.stdout).lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if v["event"] == "alert" {
                out.push(v["latency_s"].as_f64().unwrap_or(f64::NAN));
            }
        }
    }
    Ok(out)
}

pub fn run(args: RtpArgs) -> Result<i32> {
    let clips = clips(&args.audio)?;
    if clips.is_empty() {
        bail!("no recordings to play");
    }
    let scams: Vec<&Clip> = clips.iter().filter(|c| c.name.contains("scam")).collect();
    let all: Vec<&Clip> = clips.iter().collect();
    let server = Server::start(&args)?;
    eprintln!(
        "bench rtp: {} ({} recordings, {} scams), serve pid {}, SIP {}",
        args.model,
        clips.len(),
        scams.len(),
        server.pid(),
        server.sip
    );

    // 1. Alert latency, one call at a time, RTP then listen.
    let mut compare = None;
    if !args.no_compare && !scams.is_empty() {
        let before = server
            .heard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .alerts
            .len();
        for (i, clip) in scams.iter().enumerate() {
            run_level(&server, &format!("alone-{i}"), &[*clip], 1, 0.0)?;
        }
        let mut rtp: Vec<f64> = server
            .heard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .alerts[before..]
            .iter()
            .map(|(_, l)| *l)
            .collect();
        let mut listen = listen_latencies(&args.model, &scams)?;
        compare = Some((
            rtp.len(),
            percentile(&mut rtp, 0.5),
            percentile(&mut rtp, 0.95),
            listen.len(),
            percentile(&mut listen, 0.5),
            percentile(&mut listen, 0.95),
        ));
    }

    // 2. Concurrent calls.
    let mut rows = Vec::new();
    let mut sustained = 0;
    for &n in &args.calls {
        let sampling = Arc::new(AtomicBool::new(true));
        let peak = Arc::new(Mutex::new(0f64));
        let sampler = {
            let (sampling, peak, pid) = (sampling.clone(), peak.clone(), server.pid());
            std::thread::spawn(move || {
                while sampling.load(Ordering::Relaxed) {
                    let rss = cpu_and_rss(pid).1;
                    let mut p = peak.lock().unwrap_or_else(|e| e.into_inner());
                    *p = p.max(rss);
                    drop(p);
                    std::thread::sleep(Duration::from_millis(250));
                }
            })
        };
        let (cpu0, _) = cpu_and_rss(server.pid());
        let wall0 = Instant::now();
        let calls = run_level(&server, &format!("{n}"), &all, n, args.stagger_s)?;
        let wall = wall0.elapsed().as_secs_f64();
        let (cpu1, _) = cpu_and_rss(server.pid());
        sampling.store(false, Ordering::Relaxed);
        let _ = sampler.join();
        let h = server.heard.lock().unwrap_or_else(|e| e.into_inner());
        let starts: HashMap<&str, Instant> =
            calls.iter().map(|(id, t)| (id.as_str(), *t)).collect();
        let mut lag: Vec<f64> = h
            .transcripts
            .iter()
            .filter_map(|(call, end_s, at)| {
                let start = starts.get(call.as_str())?;
                Some(at.duration_since(*start).as_secs_f64() - end_s)
            })
            .collect();
        let (mut dropped_s, mut dropped_utt, mut missing_s) = (0.0, 0, 0.0);
        for (id, _) in &calls {
            if let Some((d, u, m)) = h.ended.get(id) {
                dropped_s += d;
                dropped_utt += u;
                missing_s += m;
            }
        }
        drop(h);
        let heard = lag.len();
        let (p50, p95) = (percentile(&mut lag, 0.5), percentile(&mut lag, 0.95));
        let behind = p95.is_nan() || p95 > args.max_lag_p95 || dropped_s > 0.0 || dropped_utt > 0;
        let row = format!(
            "{:<8} {:>6} {:>8} {:>8.2} {:>8.2} {:>8.1} {:>8} {:>9.1} {:>7.2} {:>8.0} {:>6}",
            args.model,
            n,
            heard,
            p50,
            p95,
            dropped_s,
            dropped_utt,
            missing_s,
            (cpu1 - cpu0) / wall,
            *peak.lock().unwrap_or_else(|e| e.into_inner()),
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
        "{:<8} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>7} {:>8} {:>6}",
        "model",
        "calls",
        "heard",
        "lag p50",
        "lag p95",
        "drop s",
        "drop utt",
        "missing s",
        "cores",
        "peak MB",
        ""
    );
    for r in rows {
        println!("{r}");
    }
    println!(
        "{}: sustained {sustained} concurrent real-time RTP calls with transcript lag p95 <= {} s and no drops",
        args.model, args.max_lag_p95
    );
    if let Some((n_rtp, r50, r95, n_listen, l50, l95)) = compare {
        println!(
            "alert latency, scam recordings one at a time: RTP (serve) p50 {r50:.2} s, p95 {r95:.2} s \
             ({n_rtp} alerts); listen --from-file --realtime p50 {l50:.2} s, p95 {l95:.2} s ({n_listen} alerts)"
        );
    }
    Ok(0)
}
