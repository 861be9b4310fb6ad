//! Classifier throughput in transcript characters per second, on the dev transcripts
//! (`../shared/eval/dev/`), English and Mandarin apart. `cargo bench --bench classifier`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::sync::Arc;

use vishguard::detect::script_context::ContextCheck;
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
    // With the context check: each new evidence window is embedded once (the cache is
    // emptied before every pass, as every window of a new call is new). Fewer calls: each
    // pass embeds a few thousand windows.
    let mut checked = Classifier::builtin();
    let check = Arc::new(ContextCheck::load(None).expect("sentence encoder (models fetch minilm)"));
    checked.context_check = Some(check.clone());
    let texts: Vec<String> = texts("en").into_iter().take(100).collect();
    let chars: usize = texts.iter().map(|t| t.chars().count()).sum();
    group.throughput(Throughput::Elements(chars as u64));
    group.bench_function(format!("en-context-check/{}-calls", texts.len()), |b| {
        b.iter(|| {
            check.clear_cache();
            for t in &texts {
                std::hint::black_box(checked.classify(t, Some("en")).unwrap());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
