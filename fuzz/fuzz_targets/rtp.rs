//! RTP packets through the parser, the codecs and the jitter buffer.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vishguard::sources::rtp::{is_rtcp, Codec, JitterBuffer, RtpPacket};

fuzz_target!(|data: &[u8]| {
    let mut jitter = JitterBuffer::new(3, 8000);
    // The input as a run of packets, each prefixed by its length byte.
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        let (datagram, next) = tail.split_at(len);
        rest = next;
        let _ = is_rtcp(datagram);
        if let Ok(p) = RtpPacket::parse(datagram) {
            for codec in [Codec::Pcmu, Codec::Pcma, Codec::L16 { rate: 16000 }] {
                let _ = codec.decode(p.payload);
            }
            let samples = Codec::Pcmu.decode(p.payload);
            for played in jitter.push(p.ssrc, p.sequence, p.timestamp, samples) {
                assert!(played.offset_s.is_finite() && played.offset_s >= 0.0);
            }
        }
    }
    jitter.flush();
});
