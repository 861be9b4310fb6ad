//! Live capture from a sound device with cpal, at the device's own rate and channel count.
//! Stereo devices can carry two parties (a headset adapter with agent and customer apart).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};

use crate::audio::ChannelMode;
use crate::live::Engine;

pub fn devices() -> Result<Vec<String>> {
    let host = cpal::default_host();
    let default = host.default_input_device().and_then(|d| d.name().ok());
    let mut out = Vec::new();
    for d in host.input_devices().context("listing input devices")? {
        let name = d.name().unwrap_or_else(|_| "?".into());
        let cfg = d
            .default_input_config()
            .map(|c| {
                format!(
                    "{} ch, {} Hz, {:?}",
                    c.channels(),
                    c.sample_rate().0,
                    c.sample_format()
                )
            })
            .unwrap_or_else(|e| format!("unusable: {e}"));
        let mark = if Some(&name) == default.as_ref() {
            " (default)"
        } else {
            ""
        };
        out.push(format!("{name}{mark}: {cfg}"));
    }
    Ok(out)
}

pub fn run(
    engine: &Engine,
    device: Option<&str>,
    channels: ChannelMode,
    seconds: Option<f64>,
    stop: &AtomicBool,
) -> Result<()> {
    let host = cpal::default_host();
    let dev = match device {
        Some(name) => host
            .input_devices()?
            .find(|d| d.name().is_ok_and(|n| n == name))
            .with_context(|| format!("no input device named {name:?} (see --list-devices)"))?,
        None => host
            .default_input_device()
            .context("no default input device")?,
    };
    let config = dev
        .default_input_config()
        .context("the device has no usable input configuration")?;
    let rate = config.sample_rate().0;
    let n_ch = config.channels() as usize;
    if n_ch == 0 {
        bail!("the device reports no channels");
    }
    let parties = if channels == ChannelMode::Split {
        n_ch
    } else {
        1
    };
    let name = dev.name().unwrap_or_else(|_| "device".into());
    let call = engine.open_call(&name, parties, rate)?;
    tracing::info!(device = %name, rate, channels = n_ch, "capturing");
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<f32>>(64);
    let err_fn = |e| tracing::error!("capture error: {e}");
    let stream_config: cpal::StreamConfig = config.clone().into();
    let stream = match config.sample_format() {
        cpal::SampleFormat::F32 => dev.build_input_stream(
            &stream_config,
            move |data: &[f32], _| {
                let _ = tx.try_send(data.to_vec());
            },
            err_fn,
            None,
        ),
        cpal::SampleFormat::I16 => dev.build_input_stream(
            &stream_config,
            move |data: &[i16], _| {
                let _ = tx.try_send(data.iter().map(|&s| s as f32 / 32768.0).collect());
            },
            err_fn,
            None,
        ),
        other => bail!("sample format {other:?} is not supported"),
    }
    .context("opening the capture stream")?;
    stream.play().context("starting capture")?;
    let deadline = seconds.map(|s| Instant::now() + Duration::from_secs_f64(s));
    while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
        let Ok(interleaved) = rx.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        if parties == 1 {
            let mono: Vec<f32> = interleaved
                .chunks(n_ch)
                .map(|f| f.iter().sum::<f32>() / n_ch as f32)
                .collect();
            call.push(0, mono);
        } else {
            for p in 0..n_ch {
                call.push(
                    p,
                    interleaved.iter().skip(p).step_by(n_ch).copied().collect(),
                );
            }
        }
    }
    drop(stream);
    call.close();
    Ok(())
}
