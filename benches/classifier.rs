//! Classifier throughput in transcript characters per second, on the dev transcripts
//! (`../shared/eval/dev/`), English and Mandarin apart. `cargo bench --bench classifier`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vishguard::detect::Classifier;

fn texts(lang: &str) -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../shared/eval/dev/{lang}.jsonl"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["text"].as_str().map(str::to_owned))
        .collect()
}

fn bench(c: &mut Criterion) {
    let classifier = Classifier::builtin();
    let mut group = c.benchmark_group("classify");
    group.sample_size(10);
    for lang in ["en", "zh"] {
        let texts = texts(lang);
        let chars: usize = texts.iter().map(|t| t.chars().count()).sum();
        group.throughput(Throughput::Elements(chars as u64));
        group.bench_function(format!("{lang}/{}-calls", texts.len()), |b| {
            b.iter(|| {
                for t in &texts {
                    std::hint::black_box(classifier.classify(t, Some(lang)).unwrap());
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
