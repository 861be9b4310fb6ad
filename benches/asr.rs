//! Speed of the recogniser's parts on this machine: mel features, one encoder window, one
//! decoder step (with the self-attention cache warm), for tiny.en and base in F32 and int8
//! (the vocabulary projection in q8_0); F32 against q8_0 matrix products at the vocabulary
//! projection's shape for 1 to 16 rows (see `asr::model::Decoder::logits`); a decoder step's
//! cross-attention through candle's ops against `asr::step_attention`.
//!
//! Run with `cargo bench --bench asr`. Models are fetched on first use.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use vishguard::asr::mel::MelSpectrogram;
use vishguard::asr::{ComputeType, DeviceChoice, Transcriber};
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
    // As the binary does at start (see its docs).
    vishguard::asr::allocator::keep_freed_buffers();
    vishguard::asr::threads::settle_cpu_threads(None);
    let mel = MelSpectrogram::new(80);
    // log_mel appends Whisper's 30 s of silence without transforming it; `padded` is the
    // same output the way it was made before (every frame of the padded samples through the
    // FFT and the log): the reference, run in the same process.
    for seconds in [5, 30] {
        let audio = speech_like(seconds);
        let mut group = c.benchmark_group(format!("mel/{seconds}s"));
        group.bench_function("log_mel", |b| b.iter(|| mel.log_mel(&audio)));
        group.bench_function("padded", |b| {
            b.iter(|| {
                let mut padded = audio.clone();
                padded.resize(audio.len() + vishguard::asr::mel::WINDOW_SAMPLES, 0.0);
                let (mut data, _) = mel.power(&padded);
                let peak = data.iter_mut().fold(f32::NEG_INFINITY, |p, v| {
                    *v = v.max(1e-10).log10();
                    p.max(*v)
                });
                data.iter_mut()
                    .for_each(|v| *v = (v.max(peak - 8.0) + 4.0) / 4.0);
                data
            })
        });
        group.finish();
    }

    // tiny.en's vocabulary projection: [rows, 384] x [384, 51864].
    let mut group = c.benchmark_group("vocab-projection");
    group.sample_size(20);
    let w = Tensor::randn(0f32, 0.05, (51864, 384), &Device::Cpu).unwrap();
    let q = QMatMul::from_qtensor(QTensor::quantize(&w, GgmlDType::Q8_0).unwrap()).unwrap();
    let wt = w.t().unwrap();
    let w16 = w.to_dtype(candle_core::DType::F16).unwrap();
    for rows in [1, 2, 4, 8, 16, 32] {
        let x = Tensor::randn(0f32, 1.0, (1, rows, 384), &Device::Cpu).unwrap();
        group.bench_function(format!("f32/{rows}-rows"), |b| {
            b.iter(|| x.broadcast_matmul(&wt).unwrap())
        });
        group.bench_function(format!("q8_0/{rows}-rows"), |b| {
            b.iter(|| q.forward(&x).unwrap())
        });
        group.bench_function(format!("f16-weights/{rows}-rows"), |b| {
            b.iter(|| vishguard::asr::step_weights::matmul_f16_weights(&x, &w16).unwrap())
        });
    }
    group.finish();

    // One decoder step's cross-attention over a 15-s window (t = 750, tiny.en's 6 heads of
    // 64): candle's matmul, softmax, matmul against the kernel that reads keys and values in
    // place (`asr::step_attention`), and the kernel with every row reading one window's keys
    // (the decodes of one window at several temperatures).
    let mut group = c.benchmark_group("step-attention");
    group.sample_size(20);
    for rows in [1, 8] {
        let q = Tensor::randn(0f32, 0.3, (rows, 6, 1, 64), &Device::Cpu).unwrap();
        let k = Tensor::randn(0f32, 1.0, (rows, 6, 750, 64), &Device::Cpu).unwrap();
        let v = Tensor::randn(0f32, 1.0, (rows, 6, 750, 64), &Device::Cpu).unwrap();
        group.bench_function(format!("candle/{rows}-rows"), |b| {
            b.iter(|| {
                let w = q.matmul(&k.t().unwrap()).unwrap();
                vishguard::asr::fast_ops::softmax_last_dim(&w)
                    .unwrap()
                    .matmul(&v)
                    .unwrap()
            })
        });
        group.bench_function(format!("in-place/{rows}-rows"), |b| {
            b.iter(|| {
                vishguard::asr::step_attention::attend_one_query(&q, &k, &v, None, None).unwrap()
            })
        });
        if rows > 1 {
            let one = vec![0u32; rows];
            group.bench_function(format!("in-place-one-window/{rows}-rows"), |b| {
                b.iter(|| {
                    vishguard::asr::step_attention::attend_one_query(&q, &k, &v, Some(&one), None)
                        .unwrap()
                })
            });
        }
    }
    group.finish();

    let store = ModelStore::open().unwrap();
    for (name, compute) in [
        ("tiny.en", ComputeType::F32),
        ("tiny.en", ComputeType::Int8),
        ("base", ComputeType::F32),
        ("base", ComputeType::Int8),
    ] {
        let files = store.resolve(Some(name)).unwrap();
        let m = Transcriber::load_as(&files, DeviceChoice::Cpu.open().unwrap(), compute).unwrap();
        let log_mel = m.mel.log_mel(&speech_like(30));
        let mut group = c.benchmark_group(format!("{name}/{compute:?}"));
        group.sample_size(10);
        // The encoder is F32 in both.
        if compute == ComputeType::F32 {
            group.bench_function("encoder/30s-window", |b| {
                b.iter(|| m.encode_window(&log_mel, 0).unwrap())
            });
        }
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
