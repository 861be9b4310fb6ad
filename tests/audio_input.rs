//! Audio files of the kinds that break speech tools in the wild (see `tests/fixtures/audio/`
//! and the field cases beside the project): each kind is built here from a clean clip, and
//! must read as the same samples, or fail with an error that names the file once.

mod support;

use std::path::{Path, PathBuf};

use vishguard::audio::{decode_file, load_16k, ChannelMode};

/// The clean clip's 8 kHz samples as 16-bit integers.
fn clean_pcm16() -> Vec<i16> {
    let a = decode_file(&support::fixture("asr/irs_warrant_phone.wav")).unwrap();
    assert_eq!(a.sample_rate, 8000);
    a.channels[0]
        .iter()
        .map(|&s| (s * 32768.0).round().clamp(-32768.0, 32767.0) as i16)
        .collect()
}

fn pcm16_bytes(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// `fmt ` chunk body for integer PCM (the 16-byte WAVEFORMAT).
fn fmt_pcm(channels: u16, rate: u32, bits: u16) -> Vec<u8> {
    let block = channels * bits.div_ceil(8);
    let mut f = Vec::new();
    f.extend(1u16.to_le_bytes());
    f.extend(channels.to_le_bytes());
    f.extend(rate.to_le_bytes());
    f.extend((rate * block as u32).to_le_bytes());
    f.extend(block.to_le_bytes());
    f.extend(bits.to_le_bytes());
    f
}

/// A RIFF/WAVE file from `(id, body)` chunks, each padded to an even length as the RIFF
/// specification says; `riff_size`/`data_size` override the size fields when given.
fn riff(chunks: &[(&[u8; 4], Vec<u8>)], riff_size: Option<u32>, data_size: Option<u32>) -> Vec<u8> {
    let mut body = b"WAVE".to_vec();
    for (id, data) in chunks {
        body.extend_from_slice(*id);
        let size = match (&id[..], data_size) {
            (b"data", Some(s)) => s,
            _ => data.len() as u32,
        };
        body.extend(size.to_le_bytes());
        body.extend(data);
        if data.len() % 2 == 1 && &id[..] != b"data" {
            body.push(0);
        }
    }
    let mut out = b"RIFF".to_vec();
    out.extend(riff_size.unwrap_or(body.len() as u32).to_le_bytes());
    out.extend(body);
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn assert_same_samples(path: &Path, expected: &[i16]) {
    let a = decode_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(a.sample_rate, 8000, "{}", path.display());
    assert_eq!(a.channels.len(), 1, "{}", path.display());
    let got = &a.channels[0];
    assert_eq!(got.len(), expected.len(), "{}", path.display());
    for (i, (&g, &e)) in got.iter().zip(expected).enumerate() {
        assert!(
            (g - e as f32 / 32768.0).abs() < 1e-6,
            "{}: sample {i}: {g} vs {e}",
            path.display()
        );
    }
}

#[test]
fn wav_size_fields_of_pipes_stray_bytes_and_padded_chunks_are_read_as_ffmpeg_reads_them() {
    let pcm = clean_pcm16();
    let data = pcm16_bytes(&pcm);
    let dir = tempfile::tempdir().unwrap();
    let fmt = fmt_pcm(1, 8000, 16);
    // Written to a pipe: both sizes unknown (0xFFFFFFFF), or left at 0.
    for size in [u32::MAX, 0] {
        let f = write(
            dir.path(),
            &format!("stream_{size:x}.wav"),
            &riff(
                &[(b"fmt ", fmt.clone()), (b"data", data.clone())],
                Some(size),
                Some(size),
            ),
        );
        assert_same_samples(&f, &pcm);
    }
    // One stray byte after the last sample: the partial sample is dropped.
    let mut odd = data.clone();
    odd.push(0x7f);
    let f = write(
        dir.path(),
        "odd_data_len.wav",
        &riff(&[(b"fmt ", fmt.clone()), (b"data", odd)], None, None),
    );
    assert_same_samples(&f, &pcm);
    // An odd-sized chunk with its pad byte before `data`.
    let f = write(
        dir.path(),
        "odd_chunk.wav",
        &riff(
            &[
                (b"fmt ", fmt.clone()),
                (b"axml", b"<a>call 42</a>\n\n\n".to_vec()),
                (b"data", data.clone()),
            ],
            None,
            None,
        ),
    );
    assert_same_samples(&f, &pcm);
    // WAVEFORMATEX: the 18-byte fmt with cbSize = 0.
    let mut fmt_ex = fmt.clone();
    fmt_ex.extend(0u16.to_le_bytes());
    let f = write(
        dir.path(),
        "waveformatex.wav",
        &riff(&[(b"fmt ", fmt_ex), (b"data", data.clone())], None, None),
    );
    assert_same_samples(&f, &pcm);
    // Truncated mid-write: what was written is kept.
    let full = riff(&[(b"fmt ", fmt), (b"data", data)], None, None);
    let f = write(dir.path(), "truncated.wav", &full[..full.len() - 1001]);
    let a = decode_file(&f).unwrap();
    assert_eq!(a.channels[0].len(), pcm.len() - 501);
}

#[test]
fn extensible_24_bits_in_a_32_bit_container_is_scaled_by_the_container() {
    let pcm = clean_pcm16();
    // 24 valid bits, left-justified in 32: the 16-bit value shifted up by 16.
    let data: Vec<u8> = pcm
        .iter()
        .flat_map(|&s| ((s as i32) << 16).to_le_bytes())
        .collect();
    let mut fmt = Vec::new();
    fmt.extend(0xFFFEu16.to_le_bytes()); // WAVE_FORMAT_EXTENSIBLE
    fmt.extend(1u16.to_le_bytes());
    fmt.extend(8000u32.to_le_bytes());
    fmt.extend((8000u32 * 4).to_le_bytes());
    fmt.extend(4u16.to_le_bytes());
    fmt.extend(32u16.to_le_bytes());
    fmt.extend(22u16.to_le_bytes()); // cbSize
    fmt.extend(24u16.to_le_bytes()); // valid bits
    fmt.extend(4u32.to_le_bytes()); // channel mask: front centre
                                    // KSDATAFORMAT_SUBTYPE_PCM
    fmt.extend([
        1, 0, 0, 0, 0, 0, 0x10, 0, 0x80, 0, 0, 0xaa, 0, 0x38, 0x9b, 0x71,
    ]);
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "extensible.wav",
        &riff(&[(b"fmt ", fmt), (b"data", data)], None, None),
    );
    assert_same_samples(&f, &pcm);
}

/// Signal-to-noise ratio (dB) of `got` against `reference`.
fn snr_db(reference: &[f32], got: &[f32]) -> f64 {
    let n = reference.len().min(got.len());
    let signal: f64 = reference[..n].iter().map(|&s| (s as f64).powi(2)).sum();
    let noise: f64 = reference[..n]
        .iter()
        .zip(got)
        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
        .sum();
    10.0 * (signal / noise.max(1e-30)).log10()
}

#[test]
fn adpcm_from_old_call_recorders_is_decoded() {
    let reference = decode_file(&support::fixture("asr/irs_warrant_phone.wav")).unwrap();
    for name in ["irs_warrant_ima_adpcm.wav", "irs_warrant_ms_adpcm.wav"] {
        let a = decode_file(&support::fixture(&format!("audio/{name}"))).unwrap();
        assert_eq!(a.sample_rate, 8000, "{name}");
        let len = reference.channels[0].len() as i64;
        // ADPCM frames whole blocks: up to one block of padding at the end.
        assert!(
            (a.channels[0].len() as i64 - len).abs() < 1100,
            "{name}: {}",
            a.channels[0].len()
        );
        let snr = snr_db(&reference.channels[0], &a.channels[0]);
        assert!(snr > 15.0, "{name}: {snr:.1} dB");
    }
}

#[test]
fn the_format_comes_from_the_content_not_the_name() {
    // An MP3 named .wav (its first 48 kB: a few seconds).
    let a = decode_file(&support::fixture("audio/mp3_content_named.wav")).unwrap();
    assert!(a.duration_s() > 2.0, "{}", a.duration_s());
    assert!(a.channels[0].iter().any(|s| s.abs() > 0.05));
    // A WAV named .mp3.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("call.mp3");
    std::fs::copy(support::fixture("asr/irs_warrant_phone.wav"), &f).unwrap();
    assert_eq!(decode_file(&f).unwrap().sample_rate, 8000);
}

#[test]
fn samples_that_are_not_finite_or_far_outside_the_range_are_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("float.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 44_100,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut w = hound::WavWriter::create(&f, spec).unwrap();
    for i in 0..44_100 {
        let s = match i {
            100 => f32::NAN,
            200 => f32::INFINITY,
            300 => f32::NEG_INFINITY,
            400 => 1e30,
            _ => (i as f32 * 0.05).sin() * 0.5,
        };
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
    // At a rate that needs resampling (which used to panic on NaN).
    let parties = load_16k(&f, ChannelMode::Split).unwrap();
    let s = &parties[0].samples;
    assert_eq!(s.len(), 16_000);
    assert!(s.iter().all(|x| x.is_finite() && x.abs() <= 1.2));
}

#[test]
fn identical_channels_are_one_party_and_different_ones_two() {
    let pcm = clean_pcm16();
    let dir = tempfile::tempdir().unwrap();
    let same = dir.path().join("same.wav");
    support::write_pcm16_wav(&same, 2, 8000, pcm.iter().flat_map(|&s| [s, s]));
    let parties = load_16k(&same, ChannelMode::Split).unwrap();
    assert_eq!(parties.len(), 1);
    assert_eq!(parties[0].channel, None);
    let two = support::fixture("asr/stereo_call_ulaw.wav");
    assert_eq!(load_16k(&two, ChannelMode::Split).unwrap().len(), 2);
}

#[test]
fn many_distinct_channels_are_refused_in_split_mode_with_a_hint_and_heard_mixed() {
    // Before, a 64-channel file cost 64 transcriptions (one party per channel).
    let pcm = clean_pcm16();
    let dir = tempfile::tempdir().unwrap();
    let write_channels = |name: &str, shift: usize| {
        let path = dir.path().join(name);
        let pcm = &pcm;
        // Channel c is the clip `shift * c` samples later: distinct unless shift is 0.
        let frames = (0..pcm.len())
            .flat_map(|i| (0..64).map(move |c| pcm.get(i + shift * c).copied().unwrap_or(0)));
        support::write_pcm16_wav(&path, 64, 8000, frames);
        path
    };
    let distinct = write_channels("distinct.wav", 40);
    let err = format!("{:#}", load_16k(&distinct, ChannelMode::Split).unwrap_err());
    assert!(
        err.contains("64 distinct channels") && err.contains("--channels mix"),
        "{err}"
    );
    let mixed = load_16k(&distinct, ChannelMode::Mix).unwrap();
    assert_eq!(mixed.len(), 1);
    let same = write_channels("same.wav", 0);
    assert_eq!(load_16k(&same, ChannelMode::Split).unwrap().len(), 1);
}

#[test]
fn errors_name_the_file_once_and_never_a_readers_internals_alone() {
    let dir = tempfile::tempdir().unwrap();
    let junk = write(dir.path(), "junk.flac", &[0x5a; 100]);
    let empty = write(dir.path(), "empty.wav", &[]);
    let header_only = write(
        dir.path(),
        "header_only.wav",
        &riff(
            &[(b"fmt ", fmt_pcm(1, 8000, 16)), (b"data", Vec::new())],
            None,
            None,
        ),
    );
    for f in [&junk, &empty, &header_only] {
        let out = support::vishguard()
            .args(["transcribe", "--model", "tiny.en"])
            .arg(f)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        let name = f.display().to_string();
        assert_eq!(err.matches(&name).count(), 1, "{err}");
        assert!(!err.contains("symphonia_core"), "{err}");
    }
}

#[test]
fn a_decoder_that_fails_on_a_hostile_file_ends_that_file_not_the_process() {
    // Found by fuzzing (fuzz/fuzz_targets/audio_file.rs): symphonia's MS ADPCM decoder
    // overflows on it. Whatever the outcome, it is a value, not a panic.
    let path = support::fixture("audio/fuzz_ms_adpcm_overflow.wav");
    let outcome = std::panic::catch_unwind(|| decode_file(&path).map(|a| a.duration_s()));
    assert!(outcome.is_ok(), "the decode panicked");
    // Also found by fuzzing: a FLAC comment claiming 4 GB is refused before anything asks
    // for that much memory.
    for name in [
        "fuzz_flac_comment_4gb.flac",
        "fuzz_flac_comment_past_end.flac",
    ] {
        let err = decode_file(&support::fixture(&format!("audio/{name}")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("comment runs past its block"), "{err}");
    }
    // And a FLAC picture block whose media type claims 2.9 GB.
    let err = decode_file(&support::fixture("audio/fuzz_flac_picture_3gb.flac"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("picture's media type runs past its block"),
        "{err}"
    );
}

/// The largest single allocation this thread has asked for since [`largest_reset`].
struct Largest;

thread_local! {
    static LARGEST: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|c| c.set(c.get().max(size)));
}

unsafe impl std::alloc::GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        note(layout.size());
        std::alloc::System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        note(layout.size());
        std::alloc::System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        std::alloc::System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        note(new);
        std::alloc::System.realloc(ptr, layout, new)
    }
}

#[global_allocator]
static ALLOCATOR: Largest = Largest;

#[test]
fn hostile_files_never_ask_for_more_memory_than_they_could_hold() {
    // Found by fuzzing: lengths inside metadata that a reader would allocate before reading
    // (FLAC comments and pictures, ID3v2 frames at the start and further in). Refused or read,
    // no file of a few hundred bytes makes the reader ask for more than 16 MiB at once.
    for name in [
        "fuzz_flac_comment_4gb.flac",
        "fuzz_flac_comment_past_end.flac",
        "fuzz_flac_after_id3.mp3",
        "fuzz_flac_picture_3gb.flac",
        "fuzz_id3_frame_3gb.mp3",
        "fuzz_id3_later_4gb.mp3",
        "fuzz_flac_inside_id3_4gb.mp3",
        "fuzz_flac_inside_id3_b.mp3",
    ] {
        LARGEST.with(|c| c.set(0));
        let outcome = decode_file(&support::fixture(&format!("audio/{name}")));
        let largest = LARGEST.with(|c| c.get());
        assert!(
            largest <= 16 << 20,
            "{name}: asked for {largest} bytes at once ({:?})",
            outcome.map(|a| a.duration_s())
        );
    }
}
