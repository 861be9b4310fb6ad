//! Audio files through the project's own decode entry point (`AudioReader`, as `scan`,
//! `transcribe` and `listen --from-file` open them), then the chunked resampler to 16 kHz.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vishguard::audio::{AlignedResampler, AudioReader};

fuzz_target!(|data: &[u8]| {
    // The decode entry point catches a third-party decoder's panic (and ends that file's
    // audio); libFuzzer's hook would abort on it all the same, so it is replaced. A panic
    // that escapes the entry point still crashes the run.
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let Ok(mut reader) = AudioReader::from_bytes("fuzz.wav", data.into()) else {
        return;
    };
    let rate = reader.sample_rate();
    let mut resampler = AlignedResampler::new(rate).ok();
    let mut out = Vec::new();
    // Bounded: a tiny input may claim hours of audio.
    for _ in 0..64 {
        match reader.next_chunk() {
            Ok(Some(chunk)) => {
                assert!(chunk.iter().all(|c| c.len() == chunk[0].len()));
                assert!(chunk.iter().flatten().all(|s| s.is_finite() && s.abs() <= 1.0));
                if let Some(r) = &mut resampler {
                    r.push(&chunk[0], &mut out).unwrap();
                    out.clear();
                }
            }
            _ => break,
        }
    }
    let _ = reader.finish();
});
