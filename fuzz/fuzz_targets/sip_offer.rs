//! An INVITE's body: SDP, SIPREC multipart, recording metadata; and the answer to it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vishguard::sources::sip::message::SipMessage;
use vishguard::sources::sip::session::{answer, parse_metadata, parse_offer, read_offer, split_multipart};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = split_multipart(text, "b");
    let _ = parse_metadata(text);
    if let Ok(offer) = parse_offer(text) {
        let ports: Vec<Option<u16>> = offer.streams.iter().map(|s| s.codec.map(|_| 7000)).collect();
        let _ = answer(&offer, "127.0.0.1".parse().unwrap(), &ports, 1);
    }
    let invite = format!(
        "INVITE sip:x SIP/2.0\r\nVia: v\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Type: multipart/mixed;boundary=b\r\nContent-Length: {}\r\n\r\n{text}",
        text.len()
    );
    if let Ok(m) = SipMessage::parse(invite.as_bytes()) {
        let _ = read_offer(&m);
    }
});
