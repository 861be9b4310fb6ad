//! `vishguard serve --sip` against real peers: sipp (Debian `sip-tester`) places a SIPREC
//! session (multipart SDP + recording metadata, two labelled streams) playing a scam sample, a
//! plain SIP call playing a legitimate one, and 20 calls at once, all with PCMU RTP; a raw UDP
//! peer sends malformed SIP and RTP. Calls end on BYE or when their RTP goes quiet; the API
//! and the metrics tell what happened.

mod support;

use std::io::{Read, Write};
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::serve::{self, Server};

fn start_server(config: &Path) -> Server {
    let config = config.display().to_string();
    serve::start(&["--sip", "127.0.0.1:0", "--config", &config])
}

fn get(server: &Server, path: &str) -> Value {
    server.json(path)
}

fn metrics(server: &Server) -> String {
    server.get("/metrics").1
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs a sipp scenario of `tests/sipp/` with the sample and its length filled in.
fn sipp(server: &Server, scenario: &str, sample: &str, calls: usize, dir: &Path) -> Child {
    let audio = support::repo().join("audio-samples").join(sample);
    let seconds = vishguard::audio::decode_file(&audio).unwrap().duration_s();
    let text = std::fs::read_to_string(support::repo().join("tests/sipp").join(scenario))
        .unwrap()
        .replace("[file]", &audio.display().to_string())
        .replace("[ms]", &((seconds * 1000.0) as u64 + 300).to_string());
    let path = dir.join(format!("{sample}-{scenario}"));
    std::fs::write(&path, text).unwrap();
    let mut cmd = Command::new("sipp");
    cmd.arg("-sf")
        .arg(&path)
        .args([
            "-m",
            &calls.to_string(),
            "-l",
            &calls.to_string(),
            "-r",
            "20",
        ])
        .args(["-i", "127.0.0.1", "-mi", "127.0.0.1"])
        .args(["-p", &free_udp_port().to_string()])
        .args(["-mp", &free_udp_port().to_string()])
        .args(["-nostdin", "-timeout", "120s", "-timeout_error"])
        .arg(server.sip.as_ref().expect("serve --sip"))
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd.spawn()
        .expect("sipp (Debian sip-tester, installed by .ci/run)")
}

fn wait_ok(child: Child, what: &str) {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{what}: sipp failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The calls once `n` have ended (they are heard after their BYE).
fn ended_calls(server: &Server, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let calls = get(server, "/calls");
        let ended: Vec<Value> = calls
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["ended"] == true)
            .cloned()
            .collect();
        if ended.len() >= n {
            return ended;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} calls ended: {calls}",
            ended.len()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("serve.toml");
    std::fs::write(&path, format!("[server]\nrtp_timeout_s = 3.0\n{extra}")).unwrap();
    path
}

#[test]
fn a_siprec_session_and_a_plain_call_from_sipp_are_heard_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&config(dir.path(), ""));
    let siprec = sipp(
        &server,
        "siprec_rtp.xml",
        "en_scam_tech_support.wav",
        1,
        dir.path(),
    );
    let plain = sipp(
        &server,
        "uac_rtp.xml",
        "en_legit_pharmacy.wav",
        1,
        dir.path(),
    );
    wait_ok(siprec, "SIPREC");
    wait_ok(plain, "plain call");
    let ended = ended_calls(&server, 2);
    let detail = |c: &Value| {
        get(
            &server,
            &format!("/calls/{}", c["call_id"].as_str().unwrap()),
        )
    };
    let calls: Vec<Value> = ended.iter().map(detail).collect();
    let scam = calls
        .iter()
        .find(|c| c["metadata"]["source"] == "siprec")
        .expect("the SIPREC call");
    let legit = calls
        .iter()
        .find(|c| c["metadata"]["source"] == "sip")
        .expect("the plain call");
    // Parties named from the recording metadata: who sends each labelled stream.
    let parties: Vec<&str> = scam["parties"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["label"].as_str().unwrap())
        .collect();
    assert_eq!(parties, ["Unknown caller", "Subscriber"]);
    assert!(scam["metadata"]["participants"]
        .as_str()
        .unwrap()
        .contains("Subscriber"));
    assert_ne!(scam["risk"], "none", "{scam}");
    assert!(!scam["alerts"].as_array().unwrap().is_empty(), "{scam}");
    assert!(
        scam["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["party"] == 0),
        "the caller's stream raised them: {scam}"
    );
    assert_eq!(legit["risk"], "none", "{legit}");
    assert_eq!(legit["parties"][0]["label"], "caller");
    assert!(
        !legit["transcript"].as_array().unwrap().is_empty(),
        "{legit}"
    );
}

/// Sends a datagram and reads the status code of the answer, if one comes.
fn exchange(socket: &UdpSocket, to: &str, message: &str) -> Option<(u16, String)> {
    socket.send_to(message.as_bytes(), to).unwrap();
    let mut buf = [0u8; 65536];
    match socket.recv_from(&mut buf) {
        Ok((n, _)) => {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let code = text.get(8..11)?.parse().ok()?;
            Some((code, text))
        }
        Err(_) => None,
    }
}

fn request(method: &str, call_id: &str, content_type: &str, body: &str) -> String {
    format!(
        "{method} sip:rec@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-{call_id}\r\n\
         From: <sip:t@127.0.0.1>;tag=t1\r\nTo: <sip:rec@127.0.0.1>\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 {method}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

const SDP: &str = "v=0\r\no=t 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                   m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

#[test]
fn bad_sip_and_rtp_are_answered_counted_and_hurt_no_call_and_twenty_calls_all_end() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&config(dir.path(), ""));
    // Twenty calls at once, each playing the scam sample, while bad traffic comes in.
    let crowd = sipp(
        &server,
        "uac_rtp.xml",
        "en_scam_tech_support.wav",
        20,
        dir.path(),
    );

    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let sip = server.sip.as_deref().expect("serve --sip");
    peer.send_to(b"\x00\x01garbage that is not SIP", sip)
        .unwrap();
    let answers = [
        (request("INVITE", "bad-body", "text/html", "<b>hi</b>"), 415),
        (
            request("INVITE", "video-only", "application/sdp", &SDP.replace("m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000", "m=video 9 RTP/AVP 96\r\na=rtpmap:96 H264/90000")),
            488,
        ),
        (request("INVITE", "bad-sdp", "application/sdp", "v=0\r\nnonsense\r\n"), 488),
        (request("BYE", "nobody", "application/sdp", ""), 481),
        // A NUL in the Call-ID had made the engine's thread for the call panic and taken the
        // SIP listener down with it.
        (request("INVITE", "nul\0id", "application/sdp", SDP), 400),
        (
            request("INVITE", "crowded", "application/sdp", &SDP.replace(
                "m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
                &"m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n".repeat(17),
            )),
            488,
        ),
        (request("OPTIONS", "ping", "application/sdp", ""), 200),
        (request("INFO", "info", "application/sdp", ""), 405),
        (
            "INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-x\r\nCall-ID: broken\r\nCSeq: 1 INVITE\r\nno colon\r\n\r\n".to_owned(),
            400,
        ),
    ];
    for (message, expected) in &answers {
        let (code, text) = exchange(&peer, sip, message).expect("an answer");
        assert_eq!(code, *expected, "{message}\n->\n{text}");
    }
    // A good call from the raw peer, then garbage on its RTP port, then nothing at all: the
    // call ends when its RTP has been quiet for rtp_timeout_s, though its BYE never comes.
    let (code, answer) = exchange(
        &peer,
        sip,
        &request("INVITE", "quiet", "application/sdp", SDP),
    )
    .unwrap();
    assert_eq!(code, 200, "{answer}");
    let port: u16 = answer
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split(' ').next())
        .and_then(|p| p.parse().ok())
        .expect("an RTP port in the answer");
    let rtp = ("127.0.0.1", port);
    // Another peer naming the call (RFC 3261 §12): a BYE with our To tag but another From
    // tag does not end it, an INVITE with another From tag gets no RTP port of it.
    let to_tag = answer
        .lines()
        .find(|l| l.starts_with("To:"))
        .and_then(|l| l.split(";tag=").nth(1))
        .expect("a To tag in the answer")
        .trim()
        .to_owned();
    let intruder = |method: &str, to: &str| {
        request(
            method,
            "quiet",
            "application/sdp",
            if method == "BYE" { "" } else { SDP },
        )
        .replace(";tag=t1", ";tag=intruder")
        .replace(
            "To: <sip:rec@127.0.0.1>",
            &format!("To: <sip:rec@127.0.0.1>{to}"),
        )
    };
    let spoofed_bye = intruder("BYE", &format!(";tag={to_tag}"));
    assert_eq!(exchange(&peer, sip, &spoofed_bye).unwrap().0, 481);
    let (code, text) = exchange(&peer, sip, &intruder("INVITE", "")).unwrap();
    assert_eq!(code, 400, "{text}");
    assert!(!text.contains(&format!("m=audio {port}")), "{text}");
    // A Content-Length that wraps past 2^64 on TCP closes that connection (it had spun the
    // SIP task at 100% CPU); the call above and the listener go on.
    let mut tcp = std::net::TcpStream::connect(sip).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(
        b"OPTIONS sip:rec@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK-w\r\n\
          Call-ID: wrap\r\nCSeq: 1 OPTIONS\r\nContent-Length: 18446744073709551516\r\n\r\n",
    )
    .unwrap();
    let mut rest = Vec::new();
    tcp.read_to_end(&mut rest)
        .expect("the connection closed, not left hanging");
    let mut good = vec![0x80, 0, 0, 1, 0, 0, 0, 160, 0, 0, 0, 7];
    good.extend([0xFFu8; 160]);
    peer.send_to(&good, rtp).unwrap();
    peer.send_to(&good[..7], rtp).unwrap(); // truncated
    let mut v1 = good.clone();
    v1[0] = 0x40;
    peer.send_to(&v1, rtp).unwrap(); // version 1
    let mut dtmf = good.clone();
    dtmf[1] = 101;
    peer.send_to(&dtmf, rtp).unwrap(); // a payload type we did not agree to
    peer.send_to(&[0x80, 200, 0, 6, 0, 0, 0, 7], rtp).unwrap(); // RTCP: ignored, not counted

    wait_ok(crowd, "20 calls");
    // 20 sipp calls and the quiet one all end with a summary.
    let ended = ended_calls(&server, 21);
    let quiet = get(&server, "/calls/quiet");
    assert_eq!(quiet["ended"], true, "{quiet}");
    assert!(ended.len() >= 21);
    let m = metrics(&server);
    for kind in [
        "sip_truncated",
        "sip_unsupported_body",
        "sip_no_usable_codec",
        "sip_bad_sdp",
        "sip_unsupported_method",
        "sip_bad_header",
        "rtp_truncated",
        "rtp_bad_version",
        "rtp_unknown_payload_type",
        "rtp_timeout",
        "sip_bad_call_id",
        "sip_too_many_streams",
        "sip_wrong_dialog",
        "sip_oversized",
    ] {
        assert!(
            m.contains(&format!("vishguard_malformed_total{{kind=\"{kind}\"}}")),
            "{kind} not counted:\n{m}"
        );
    }
    assert!(m.contains("vishguard_calls_opened_total 21"), "{m}");
    assert!(m.contains("vishguard_calls_active 0"), "{m}");
    // And the server still answers.
    let (code, _) = exchange(
        &peer,
        sip,
        &request("OPTIONS", "after", "application/sdp", ""),
    )
    .unwrap();
    assert_eq!(code, 200);
}
