//! The command line as users run it: batches with bad files, corrupt models.

mod support;

use support::vishguard;

#[test]
fn a_bad_file_is_reported_and_the_batch_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.wav");
    std::fs::write(&corrupt, b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk").unwrap();
    let missing = dir.path().join("missing.flac");
    // A WAV cut off in the middle of its data still yields what was recorded.
    let full = std::fs::read(support::fixture("asr/pharmacy_phone.wav")).unwrap();
    let truncated = dir.path().join("truncated.wav");
    std::fs::write(&truncated, &full[..full.len() * 2 / 3]).unwrap();
    let good = support::fixture("asr/gift_cards.flac");
    // Heard together (the default: a thread per core, several files each) and one file at a
    // time: the same transcripts, in file order, and the same errors.
    let run = |layout: &[&str]| {
        vishguard()
            .args(["transcribe", "--model", "tiny.en", "--format", "json"])
            .args(layout)
            .arg(&corrupt)
            .arg(&missing)
            .arg(&truncated)
            .arg(&good)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    let alone = run(&["--jobs", "1", "--batch", "1"]);
    assert_eq!(alone.status.code(), out.status.code());
    assert_eq!(
        String::from_utf8_lossy(&alone.stdout),
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        String::from_utf8_lossy(&alone.stderr),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("corrupt.wav") && stderr.contains("missing.flac"),
        "{stderr}"
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0]["segments"][0]["text"]
        .as_str()
        .unwrap()
        .contains("pharmacy"));
    assert!(lines[1]["segments"][0]["text"]
        .as_str()
        .unwrap()
        .to_lowercase()
        .contains("gift cards"));
}

#[test]
fn a_corrupt_model_folder_is_named_on_import() {
    let home = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("model.bin"), [6u8, 0, 0, 0, 12, 0]).unwrap();
    std::fs::write(src.path().join("config.json"), "{}").unwrap();
    std::fs::write(src.path().join("tokenizer.json"), "{}").unwrap();
    let out = vishguard()
        .env("VISHGUARD_HOME", home.path())
        .args(["models", "import"])
        .arg(src.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("model.bin") && stderr.contains("truncated"),
        "{stderr}"
    );
}

#[test]
fn unknown_model_names_list_the_catalog() {
    let out = vishguard()
        .args(["transcribe", "--model", "huge-v9", "x.wav"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("tiny.en") && stderr.contains("base"),
        "{stderr}"
    );
}

#[test]
fn scan_saves_one_transcript_per_party_for_researchers() {
    let dir = tempfile::tempdir().unwrap();
    let out = vishguard()
        .args([
            "scan",
            "--model",
            "tiny.en",
            "--format",
            "jsonl",
            "--save-transcripts",
        ])
        .arg(dir.path())
        .arg(support::fixture("asr/stereo_call_ulaw.wav"))
        .output()
        .unwrap();
    assert!(
        out.status.code() == Some(0) || out.status.code() == Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for ch in [0, 1] {
        let vtt = std::fs::read_to_string(dir.path().join(format!("stereo_call_ulaw.ch{ch}.vtt")))
            .unwrap();
        assert!(vtt.starts_with("WEBVTT\n\n00:00:"), "{vtt}");
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join(format!("stereo_call_ulaw.ch{ch}.json")))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(json["channel"], ch);
    }
}

#[test]
fn weights_turned_to_nan_are_an_error_not_a_transcript_of_exclamation_marks() {
    let store = vishguard::model_store::ModelStore::open().unwrap();
    let files = store.resolve(Some("tiny.en")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(files.dir.join(f), dir.path().join(f)).unwrap();
    }
    // Every weight after the safetensors header becomes NaN (0x7fc00000, little-endian).
    let mut weights = std::fs::read(files.weights()).unwrap();
    let header = 8 + u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize;
    for w in weights[header..].chunks_exact_mut(4) {
        w.copy_from_slice(&[0x00, 0x00, 0xc0, 0x7f]);
    }
    std::fs::write(dir.path().join("model.safetensors"), weights).unwrap();
    // Both ways: int8's vocabulary projection keeps no copy of NaN weights, and its inputs
    // are never rounded to int8 (q8_0 did, passing over NaN to finite logits).
    for compute in ["f32", "int8"] {
        let out = support::vishguard()
            .args(["transcribe", "--compute-type", compute, "--model"])
            .arg(dir.path())
            .arg(support::fixture("asr/irs_warrant_phone.wav"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{compute}: {err}");
        assert!(err.contains("NaN"), "{compute}: {err}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("!!"));
    }
}

#[test]
fn what_was_said_stays_out_of_the_logs_even_at_debug_level() {
    let out = support::vishguard()
        .args(["-vv", "scan", "--model", "tiny.en"])
        .arg(support::fixture("asr/pharmacy.flac"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(logs.contains("DEBUG"), "{logs}");
    // The transcript's words, and token ids (which decode back to them).
    for word in ["pharmacy", "prescription", "tokens=["] {
        assert!(!logs.contains(word), "{word} in the logs:\n{logs}");
    }
    assert!(!said.is_empty());
}

/// A beam the decoder cannot keep is refused before any model loads, naming the setting and
/// the allowed range.
#[test]
fn a_beam_size_out_of_range_is_refused_with_the_reason() {
    for beam in ["0", "17"] {
        let out = vishguard()
            .args(["transcribe", "--model", "tiny.en", "--beam-size", beam])
            .arg(support::fixture("asr/gift_cards.flac"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
        assert!(
            stderr.contains(&format!("beam_size must be between 1 and 16, not {beam}")),
            "{stderr}"
        );
        assert!(out.stdout.is_empty());
    }
}

/// bf16 on the CPU needs AMX tiles: without them (`VISHGUARD_NO_AMX` stands in for a CPU that
/// lacks them) the choice is refused in one line naming what is missing and what to use, exit
/// 2; `auto` falls back to f32 and transcribes.
#[test]
fn bf16_without_amx_tiles_is_refused_and_auto_falls_back() {
    let clip = support::fixture("asr/gift_cards.flac");
    let without_amx = |compute: &str| {
        vishguard()
            .env("VISHGUARD_NO_AMX", "1")
            .args([
                "transcribe",
                "--model",
                "tiny.en",
                "--compute-type",
                compute,
            ])
            .arg(&clip)
            .output()
            .unwrap()
    };
    let out = without_amx("bf16");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("needs AMX tiles"), "{stderr}");
    assert!(stderr.contains("use f32 or int8"), "{stderr}");
    let out = without_amx("auto");
    let stdout = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("gift card"), "{stdout}");
}

#[test]
fn bench_kernels_checks_each_kernel_against_the_production_path() {
    // On the CPU the op runs the kernels' references (the GPU check runs the same command with
    // --device cuda): every row within its bound, exit 0, one table row per kernel and size.
    let out = vishguard()
        .current_dir(support::repo())
        .args(["bench", "kernels", "--device", "cpu", "--rows", "1,3"])
        .args(["--frames", "300", "--seconds", "0"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    for kernel in ["log-mel", "g711"] {
        for rows in ["1", "3"] {
            assert!(
                stdout.lines().any(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.len() == 8 && f[0] == kernel && f[1] == rows && f[4] == "ok"
                }),
                "{kernel} x{rows} missing or failed:\n{stdout}"
            );
        }
    }
    // A device this build lacks is named, not a panic.
    let out = vishguard()
        .current_dir(support::repo())
        .args(["bench", "kernels", "--device", "metal", "--rows", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.to_lowercase().contains("metal"), "{stderr}");
}
