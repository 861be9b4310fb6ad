//! Speed of the recogniser's parts on this machine: mel features, one encoder window, one
//! decoder step (with the self-attention cache warm), for tiny.en and base.
//!
//! Run with `cargo bench --bench asr`. Models are fetched on first use.

use candle_core::Tensor;
use criterion::{criterion_group, criterion_main, Criterion};
use vishguard::asr::mel::MelSpectrogram;
use vishguard::asr::{DeviceChoice, Transcriber};
use vishguard::model_store::ModelStore;

fn speech_like(seconds: usize) -> Vec<f32> {
    (0..seconds * 16_000)
        .map(|i| {
            let t = i as f32 / 16_000.0;
            (2.0 * std::f32::consts::PI * 220.0 * t).sin() * (3.0 * t).sin().abs() * 0.3
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let audio = speech_like(30);
    let mel = MelSpectrogram::new(80);
    c.bench_function("mel/30s", |b| b.iter(|| mel.log_mel(&audio)));

    let store = ModelStore::open().unwrap();
    for name in ["tiny.en", "base"] {
        let files = store.resolve(Some(name)).unwrap();
        let m = Transcriber::load(&files, DeviceChoice::Cpu.open().unwrap()).unwrap();
        let log_mel = m.mel.log_mel(&audio);
        let mut group = c.benchmark_group(name);
        group.sample_size(10);
        group.bench_function("encoder/30s-window", |b| {
            b.iter(|| m.encode_window(&log_mel, 0).unwrap())
        });
        let features = m.encode_window(&log_mel, 0).unwrap();
        let dec = &m.model.decoder;
        let prompt: Vec<u32> = vec![m.special.sot; 1];
        group.bench_function("decoder/token-after-32", |b| {
            b.iter_batched(
                || {
                    let mut state = dec.start(&features).unwrap();
                    let t = Tensor::new(prompt.as_slice(), &m.device)
                        .unwrap()
                        .unsqueeze(0)
                        .unwrap();
                    dec.forward(&t, &mut state).unwrap();
                    for _ in 0..31 {
                        let t = Tensor::new(&[220u32], &m.device)
                            .unwrap()
                            .unsqueeze(0)
                            .unwrap();
                        dec.forward(&t, &mut state).unwrap();
                    }
                    state
                },
                |mut state| {
                    let t = Tensor::new(&[220u32], &m.device)
                        .unwrap()
                        .unsqueeze(0)
                        .unwrap();
                    let h = dec.forward(&t, &mut state).unwrap();
                    dec.logits(&h).unwrap()
                },
                criterion::BatchSize::LargeInput,
            )
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
