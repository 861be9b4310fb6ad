//! RTP (RFC 3550) for call audio: the packet header (§5.1), RTCP told apart by its packet type
//! (RFC 5761 §4) and ignored, G.711 (PCMU, PCMA) and L16 payloads (RFC 3551 §4.5), and a
//! jitter buffer that puts packets back in order and places each at its audio time from its
//! RTP timestamp. A lost packet leaves a gap in that time, which the engine's front end hears
//! as silence (or, past a second, as a break), so later words keep their true times. A new SSRC
//! (a transfer, a re-INVITE) continues the party's time where the old stream stopped.

use std::collections::BTreeMap;

use crate::audio::g711;

/// What a packet's payload type carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Pcmu,
    Pcma,
    /// 16-bit big-endian linear PCM, mono, at the given rate.
    L16 {
        rate: u32,
    },
}

impl Codec {
    /// Samples per second of the decoded audio (and of the RTP clock).
    pub fn rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma => 8000,
            Codec::L16 { rate } => rate,
        }
    }

    /// The payload as samples in [-1, 1].
    pub fn decode(self, payload: &[u8]) -> Vec<f32> {
        match self {
            Codec::Pcmu => g711::decode(payload, g711::Law::Mu),
            Codec::Pcma => g711::decode(payload, g711::Law::A),
            Codec::L16 { .. } => payload
                .chunks_exact(2)
                .map(|b| f32::from(i16::from_be_bytes([b[0], b[1]])) / 32768.0)
                .collect(),
        }
    }
}

/// Why a datagram is not an RTP packet we take; `kind` names it for the metrics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("RTP: {message}")]
pub struct RtpError {
    pub kind: &'static str,
    pub message: String,
}

fn rtp_error(kind: &'static str, message: impl Into<String>) -> RtpError {
    RtpError {
        kind,
        message: message.into(),
    }
}

/// One RTP packet's header fields and payload (RFC 3550 §5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload: &'a [u8],
}

/// True for RTCP sharing the RTP port: packet types 200-204 sit where RTP's marker bit and
/// payload type do (RFC 5761 §4).
pub fn is_rtcp(datagram: &[u8]) -> bool {
    datagram.len() >= 2 && datagram[0] >> 6 == 2 && (200..=204).contains(&datagram[1])
}

impl<'a> RtpPacket<'a> {
    /// Parses a datagram. Errors: shorter than its header, not version 2, or a CSRC list,
    /// header extension or padding that runs past the end.
    pub fn parse(datagram: &'a [u8]) -> Result<Self, RtpError> {
        if datagram.len() < 12 {
            return Err(rtp_error(
                "rtp_truncated",
                format!("{} bytes, shorter than a header", datagram.len()),
            ));
        }
        let version = datagram[0] >> 6;
        if version != 2 {
            return Err(rtp_error("rtp_bad_version", format!("version {version}")));
        }
        let padding = datagram[0] & 0x20 != 0;
        let extension = datagram[0] & 0x10 != 0;
        let csrc_count = usize::from(datagram[0] & 0x0F);
        let mut start = 12 + 4 * csrc_count;
        if extension {
            let words = datagram
                .get(start + 2..start + 4)
                .ok_or_else(|| rtp_error("rtp_truncated", "header extension cut off"))?;
            start += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
        }
        let mut end = datagram.len();
        if padding {
            let pad = usize::from(*datagram.last().expect("at least 12 bytes"));
            end = end
                .checked_sub(pad)
                .filter(|&e| pad > 0 && e >= start)
                .ok_or_else(|| rtp_error("rtp_bad_padding", format!("{pad} bytes of padding")))?;
        }
        if start > end {
            return Err(rtp_error("rtp_truncated", "header runs past the packet"));
        }
        Ok(Self {
            marker: datagram[1] & 0x80 != 0,
            payload_type: datagram[1] & 0x7F,
            sequence: u16::from_be_bytes([datagram[2], datagram[3]]),
            timestamp: u32::from_be_bytes([datagram[4], datagram[5], datagram[6], datagram[7]]),
            ssrc: u32::from_be_bytes([datagram[8], datagram[9], datagram[10], datagram[11]]),
            payload: &datagram[start..end],
        })
    }
}

/// Audio ready for the engine: where it starts (seconds of audio time) and its samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Played {
    pub offset_s: f64,
    pub samples: Vec<f32>,
}

/// What the jitter buffer has seen go wrong, for the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets that arrived after later ones had been played (too late to place).
    pub late: u64,
    /// Packets seen twice.
    pub duplicate: u64,
    /// Sequence numbers that never arrived.
    pub lost: u64,
    /// Times the SSRC changed.
    pub ssrc_changes: u64,
}

/// One party's RTP stream put back in order. Holds up to `depth` packets (at 20 ms each, 3 is
/// 60 ms of added delay) waiting for a missing one before playing past it.
pub struct JitterBuffer {
    depth: usize,
    rate: f64,
    ssrc: Option<u32>,
    /// Extended (wrap-free) sequence number of the next packet to play.
    next_seq: Option<u64>,
    /// Waiting packets by extended sequence number: RTP timestamp (extended) and samples.
    waiting: BTreeMap<u64, (u64, Vec<f32>)>,
    /// The stream's first extended timestamp, and the audio time it was placed at.
    base: (u64, f64),
    /// Where the last played audio ended (seconds).
    played_to: f64,
    last_seq: Option<u64>,
    last_ts: Option<u64>,
    pub stats: JitterStats,
}

/// The extended value of a wrapping counter nearest to the previous one (RFC 3550 A.1).
fn extend(last: Option<u64>, value: u64, modulus: u64) -> u64 {
    let Some(last) = last else {
        return value + modulus; // room below for packets that arrive early out of order
    };
    let base = last - last % modulus;
    [base.saturating_sub(modulus), base, base + modulus]
        .into_iter()
        .map(|b| b + value)
        .min_by_key(|&c| c.abs_diff(last))
        .expect("three candidates")
}

impl JitterBuffer {
    pub fn new(depth: usize, rate: u32) -> Self {
        Self {
            depth: depth.max(1),
            rate: f64::from(rate.max(1)),
            ssrc: None,
            next_seq: None,
            waiting: BTreeMap::new(),
            base: (0, 0.0),
            played_to: 0.0,
            last_seq: None,
            last_ts: None,
            stats: JitterStats::default(),
        }
    }

    /// Takes a packet's header and decoded samples; returns the audio now ready, in order.
    pub fn push(
        &mut self,
        ssrc: u32,
        sequence: u16,
        timestamp: u32,
        samples: Vec<f32>,
    ) -> Vec<Played> {
        let mut out = Vec::new();
        if self.ssrc != Some(ssrc) {
            if self.ssrc.is_some() {
                self.stats.ssrc_changes += 1;
                out = self.flush();
            }
            self.ssrc = Some(ssrc);
            self.next_seq = None;
            self.last_seq = None;
            self.last_ts = None;
        }
        let seq = extend(self.last_seq, u64::from(sequence), 1 << 16);
        let ts = extend(self.last_ts, u64::from(timestamp), 1 << 32);
        if self.next_seq.is_none() {
            self.next_seq = Some(seq);
            // A new stream goes on from where the party's audio got to.
            self.base = (ts, self.played_to);
        }
        self.last_seq = Some(self.last_seq.map_or(seq, |l| l.max(seq)));
        self.last_ts = Some(self.last_ts.map_or(ts, |l| l.max(ts)));
        let next = self.next_seq.expect("set above");
        if seq < next {
            self.stats.late += 1;
            return out;
        }
        if self.waiting.insert(seq, (ts, samples)).is_some() {
            self.stats.duplicate += 1;
        }
        out.extend(self.release(false));
        out
    }

    /// Plays every waiting packet (the stream ended or changed).
    pub fn flush(&mut self) -> Vec<Played> {
        self.release(true)
    }

    fn release(&mut self, all: bool) -> Vec<Played> {
        let mut out = Vec::new();
        while let Some((&seq, _)) = self.waiting.first_key_value() {
            let next = self.next_seq.unwrap_or(seq);
            // Wait for a missing packet while the buffer is not yet deep.
            if seq != next && !all && self.waiting.len() < self.depth {
                break;
            }
            let (seq, (ts, samples)) = self.waiting.pop_first().expect("not empty");
            self.stats.lost += seq.saturating_sub(next);
            self.next_seq = Some(seq + 1);
            let offset_s = self.base.1 + ts.saturating_sub(self.base.0) as f64 / self.rate;
            self.played_to = self
                .played_to
                .max(offset_s + samples.len() as f64 / self.rate);
            out.push(Played { offset_s, samples });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 0x00];
        p.extend(seq.to_be_bytes());
        p.extend(ts.to_be_bytes());
        p.extend(ssrc.to_be_bytes());
        p.extend(payload);
        p
    }

    #[test]
    fn headers_parse_and_bad_packets_are_named() {
        let p = packet(7, 160, 0xABCD, &[0xFF; 160]);
        let rtp = RtpPacket::parse(&p).unwrap();
        assert_eq!((rtp.sequence, rtp.timestamp, rtp.ssrc), (7, 160, 0xABCD));
        assert_eq!(rtp.payload.len(), 160);
        let kind = |d: &[u8]| RtpPacket::parse(d).unwrap_err().kind;
        assert_eq!(kind(&p[..5]), "rtp_truncated");
        let mut v1 = p.clone();
        v1[0] = 0x40;
        assert_eq!(kind(&v1), "rtp_bad_version");
        let mut padded = p.clone();
        padded[0] |= 0x20;
        *padded.last_mut().unwrap() = 250;
        assert_eq!(kind(&padded), "rtp_bad_padding");
        let mut csrc = p[..14].to_vec();
        csrc[0] |= 0x0F; // 15 CSRCs claimed, none there
        assert_eq!(kind(&csrc), "rtp_truncated");
        let mut ext = p[..12].to_vec();
        ext[0] |= 0x10;
        ext.extend([0, 0, 0xFF, 0xFF]);
        assert_eq!(kind(&ext), "rtp_truncated");
        // An RTCP sender report on the same port is told apart.
        assert!(is_rtcp(&[0x80, 200, 0, 6]));
        assert!(!is_rtcp(&p));
    }

    #[test]
    fn reordered_packets_play_in_order_and_a_lost_one_leaves_a_gap() {
        let mut jb = JitterBuffer::new(3, 8000);
        let frame = |n: f32| vec![n; 160];
        let mut played = Vec::new();
        // 1 and 2 swapped; 4 lost; 65535 -> 0 wraps.
        for (seq, ts) in [
            (65534u16, 0u32),
            (0, 320),
            (65535, 160),
            (1, 480),
            (3, 800),
            (4, 960),
            (5, 1120),
        ] {
            played.extend(jb.push(9, seq, ts, frame(seq as f32)));
        }
        played.extend(jb.flush());
        let offsets: Vec<f64> = played.iter().map(|p| p.offset_s).collect();
        assert_eq!(offsets, [0.0, 0.02, 0.04, 0.06, 0.1, 0.12, 0.14]);
        assert_eq!(jb.stats.lost, 1);
        assert_eq!(jb.stats.late, 0);
        // A packet older than what was played is late, and dropped.
        assert!(jb.push(9, 2, 640, frame(2.0)).is_empty());
        assert_eq!(jb.stats.late, 1);
    }

    #[test]
    fn a_new_ssrc_goes_on_from_where_the_party_was() {
        let mut jb = JitterBuffer::new(1, 8000);
        jb.push(1, 10, 1000, vec![0.0; 160]);
        jb.push(1, 11, 1160, vec![0.0; 160]);
        // A transfer: another source, unrelated numbers.
        let after = jb.push(2, 5000, 999_999, vec![0.0; 160]);
        assert_eq!(after.len(), 1);
        assert!((after[0].offset_s - 0.04).abs() < 1e-9, "{after:?}");
        assert_eq!(jb.stats.ssrc_changes, 1);
    }

    #[test]
    fn l16_and_g711_payloads_decode() {
        assert_eq!(
            Codec::L16 { rate: 16000 }.decode(&[0x40, 0x00, 0xC0, 0x00]),
            [0.5, -0.5]
        );
        assert_eq!(Codec::Pcmu.decode(&[0xFF]), [0.0]);
        assert_eq!(Codec::Pcma.rate(), 8000);
    }
}
