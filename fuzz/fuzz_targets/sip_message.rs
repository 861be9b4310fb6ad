//! SIP framing and parsing: a datagram or a TCP stream's bytes, and the responses built from
//! what parsed.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vishguard::sources::sip::message::{message_len, SipMessage};

fuzz_target!(|data: &[u8]| {
    let _ = message_len(data);
    if let Ok(m) = SipMessage::parse(data) {
        let _ = m.header("Call-ID");
        let response = m.response(200, "OK", "tag", &[], Some(("application/sdp", "v=0\r\n")));
        // What we send must itself parse.
        SipMessage::parse(&response).expect("our own response parses");
    }
});
