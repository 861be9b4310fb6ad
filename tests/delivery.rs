//! An alert once shown is never lost: the real binary and model, killed mid-burst, run twice
//! on the same recording, sending to a receiver that refuses one alert, and writing to a disk
//! that fills and then frees (a small tmpfs in a mount namespace of its own).

mod support;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::receiver::{dead_url, Receiver};
use support::vishguard;

const SCAM: &str = "audio-samples/en_scam_safe_account.wav";

fn listen(alerts_file: &Path, outbox: &Path, url: &str) -> Command {
    listen_to(&support::repo().join(SCAM), alerts_file, outbox, url)
}

fn listen_to(recording: &Path, alerts_file: &Path, outbox: &Path, url: &str) -> Command {
    let mut cmd = vishguard();
    cmd.args(["listen", "--model", "tiny.en", "--format", "jsonl"])
        .arg("--alerts-file")
        .arg(alerts_file)
        .args(["--webhook", url, "--webhook-outbox"])
        .arg(outbox)
        .arg("--from-file")
        .arg(recording);
    cmd
}

fn alert_ids(lines: &[serde_json::Value]) -> Vec<String> {
    lines
        .iter()
        .filter(|v| v["event"] == "alert")
        .map(|v| v["alert_id"].as_str().unwrap().to_owned())
        .collect()
}

/// The JSON lines of a file. Every line must parse, except a last one without its newline
/// (the process was killed while writing it: it was never shown, and the next start cuts it).
fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let whole = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    whole
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}: a torn line ({e}): {l:?}", path.display()))
        })
        .collect()
}

#[test]
fn sigkill_at_any_point_of_a_burst_loses_no_alert_that_was_printed() {
    // The receiver is down: the outbox keeps every alert it got.
    let url = dead_url();
    let mut killed_with_alerts_in_flight = 0;
    // Kill points: at once, and after a random wait in ranges that land before, amid and
    // after the rest of the burst's durable writes.
    for (round, most_ms) in [0u64, 10, 60, 200, 600].into_iter().enumerate() {
        let delay_ms = rand::random_range(0..=most_ms);
        let dir = tempfile::tempdir().unwrap();
        let (alerts_file, outbox) = (dir.path().join("alerts.jsonl"), dir.path().join("outbox"));
        let mut child = listen(&alerts_file, &outbox, &url)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut printed = Vec::new();
        let mut line = String::new();
        // Up to the first alert printed, then a little more, then SIGKILL.
        while out.read_line(&mut line).unwrap() > 0 {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            line.clear();
            let first_alert = v["event"] == "alert";
            printed.push(v);
            if first_alert {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        // What was printed before the kill, still in the pipe.
        for l in out.lines() {
            printed.push(serde_json::from_str(&l.unwrap()).unwrap());
        }
        let printed = alert_ids(&printed);
        assert!(!printed.is_empty(), "round {round}: no alert printed");
        let in_file: HashSet<String> = alert_ids(&json_lines(&alerts_file)).into_iter().collect();
        let in_outbox: HashSet<String> = alert_ids(&json_lines(&outbox.join("outbox.jsonl")))
            .into_iter()
            .collect();
        for id in &printed {
            assert!(
                in_file.contains(id),
                "round {round} (kill {delay_ms} ms after the first alert): printed {id} is not in the alert file"
            );
            assert!(
                in_outbox.contains(id),
                "round {round} (kill {delay_ms} ms after the first alert): printed {id} is not in the outbox"
            );
        }
        if in_file.len() > printed.len() {
            killed_with_alerts_in_flight += 1;
        }
        // The next start takes the outbox as the killed run left it.
        let pending = vishguard()
            .args(["alerts", "list", "--outbox"])
            .arg(&outbox)
            .output()
            .unwrap();
        assert!(pending.status.success());
        let listed = String::from_utf8(pending.stdout).unwrap();
        assert!(listed.lines().count() >= printed.len(), "{listed}");
    }
    eprintln!(
        "rounds killed with alerts written but not yet printed: {killed_with_alerts_in_flight}"
    );
}

#[test]
fn the_same_recording_twice_delivers_twice_and_a_refused_alert_is_a_dead_letter_not_a_block() {
    // The first alert to arrive is refused for good; everything else is taken.
    let receiver = Receiver::start(|n, _| if n == 0 { 400 } else { 200 });
    let dir = tempfile::tempdir().unwrap();
    let (alerts_file, outbox) = (dir.path().join("alerts.jsonl"), dir.path().join("outbox"));
    // A file name that is not ASCII: the call id, and so the alert id, carry it (as a
    // Mandarin pattern does), and HTTP header values must be ASCII.
    let recording = dir.path().join("来电 café.wav");
    std::fs::copy(support::repo().join(SCAM), &recording).unwrap();
    let mut runs = Vec::new();
    for _ in 0..2 {
        let out = listen_to(&recording, &alerts_file, &outbox, &receiver.url)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        runs.push(alert_ids(&lines));
    }
    let (first, second) = (&runs[0], &runs[1]);
    assert!(!first.is_empty() && first.len() == second.len(), "{runs:?}");
    let (a, b): (HashSet<_>, HashSet<_>) = (first.iter().collect(), second.iter().collect());
    assert!(a.is_disjoint(&b), "two calls share alert ids: {runs:?}");
    let written = alert_ids(&json_lines(&alerts_file));
    assert_eq!(written.len(), first.len() + second.len());

    // Every alert but the refused one arrived, once, with its id as the idempotency key.
    let got = receiver.got.lock().unwrap().clone();
    let refused = got[0].body["alert_id"].as_str().unwrap().to_owned();
    assert_eq!(got[0].status, 400);
    let accepted = receiver.accepted_ids();
    let expected: Vec<String> = written
        .iter()
        .filter(|id| **id != refused)
        .cloned()
        .collect();
    assert_eq!(accepted, expected, "in order, each once");
    for r in &got {
        let id = r.body["alert_id"].as_str().unwrap();
        assert!(id.starts_with("来电 café-"), "{id}");
        assert_eq!(
            r.idempotency_key.as_deref(),
            Some(vishguard::sinks::outbox::header_safe(id).as_str())
        );
    }

    // The refused one waits in the dead letters with the receiver's answer.
    let list = |extra: &[&str]| {
        support::json_stdout(
            vishguard()
                .args(["alerts", "list", "--outbox"])
                .arg(&outbox)
                .args(extra),
        )
    };
    assert!(list(&[]).is_empty(), "nothing undelivered");
    let dead = list(&["--dead-letters"]);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["status"], 400);
    assert_eq!(dead[0]["alert"]["alert_id"], refused.as_str());
    assert!(
        dead[0]["reason"].as_str().unwrap().contains("not for me."),
        "{}",
        dead[0]
    );

    // Replayed once the receiver has been fixed, it arrives.
    let out = vishguard()
        .args([
            "alerts",
            "replay",
            "--dead-letters",
            "--url",
            &receiver.url,
            "--outbox",
        ])
        .arg(&outbox)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(receiver.accepted_ids().last(), Some(&refused));
    assert!(list(&["--dead-letters"]).is_empty());
}

#[test]
fn a_disk_that_fills_and_then_frees_loses_no_alert_and_tears_no_line() {
    let receiver = Receiver::start(|_, _| 200);
    let dir = tempfile::tempdir().unwrap();
    let (small, out) = (dir.path().join("small"), dir.path().join("out"));
    std::fs::create_dir_all(&small).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    // In a user and mount namespace of its own (no privileges needed): a 256 KiB tmpfs, filled
    // before vishguard starts and freed two seconds after its first alert.
    let script = r#"
set -u
mount -t tmpfs -o size=256k vishguard-test "$SMALL" || { echo "cannot mount a tmpfs" >&2; exit 97; }
head -c 1M /dev/zero > "$SMALL/filler" 2>/dev/null
"$@" > "$OUT/stdout.jsonl" 2> "$OUT/stderr.txt" &
pid=$!
i=0
until grep -q '"event":"alert"' "$OUT/stdout.jsonl"; do
  sleep 0.1; i=$((i+1)); [ $i -lt 1200 ] || break
done
df -k "$SMALL" | tail -1 > "$OUT/df_full.txt"
sleep 2
rm "$SMALL/filler"
wait $pid
echo $? > "$OUT/exit"
cp "$SMALL/alerts.jsonl" "$OUT/" 2>/dev/null
cp -r "$SMALL/outbox" "$OUT/" 2>/dev/null
true
"#;
    let status = Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(env!("CARGO_BIN_EXE_vishguard"))
        .args(
            listen(
                &small.join("alerts.jsonl"),
                &small.join("outbox"),
                &receiver.url,
            )
            .get_args(),
        )
        .env("SMALL", &small)
        .env("OUT", &out)
        .status()
        .expect("unshare (util-linux) runs the test in a mount namespace of its own");
    assert!(
        status.success(),
        "the namespace script failed ({status}); user namespaces must be allowed"
    );
    let df = std::fs::read_to_string(out.join("df_full.txt")).unwrap();
    let avail: u64 = df.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert_eq!(avail, 0, "the disk was full at the first alert: {df}");
    let stderr = std::fs::read_to_string(out.join("stderr.txt")).unwrap();
    let exit = std::fs::read_to_string(out.join("exit")).unwrap();
    assert_eq!(exit.trim(), "1", "a scam was found: {stderr}");

    let printed = alert_ids(&json_lines(&out.join("stdout.jsonl")));
    assert!(!printed.is_empty());
    let in_file = alert_ids(&json_lines(&out.join("alerts.jsonl")));
    assert_eq!(in_file, printed, "every alert, once, in order: {stderr}");
    // Delivered (and then emptied from the outbox), each once, in order.
    assert_eq!(receiver.accepted_ids(), printed, "{stderr}");
    assert!(json_lines(&out.join("outbox/outbox.jsonl")).is_empty());
    assert!(json_lines(&out.join("outbox/dead_letters.jsonl")).is_empty());
    // The outage is reported once per file, and so is the recovery.
    for what in ["alert file", "webhook outbox"] {
        let failed = stderr
            .lines()
            .filter(|l| l.contains(what) && l.contains("cannot write"))
            .count();
        let back = stderr
            .lines()
            .filter(|l| l.contains(what) && l.contains("writable again"))
            .count();
        assert_eq!((failed, back), (1, 1), "{what}: {stderr}");
        assert!(stderr.contains("No space left on device"), "{stderr}");
    }
}
