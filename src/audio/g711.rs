//! G.711 (ITU-T Rec. G.711): 8-bit µ-law (PCMU, RTP payload type 0, Twilio media streams,
//! Genesys AudioHook) and A-law (PCMA, RTP payload type 8) to linear samples, as network audio
//! arrives. (Files in these codecs are read by symphonia in `decode`.)
//!
//! Follows the reference decoder of Sun's public-domain `g711.c` (the one sox and most PBXes
//! carry): a sign bit, a 3-bit segment (exponent) and a 4-bit step, µ-law with bias 0x84.

/// Which G.711 law.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    /// µ-law (North America, Japan).
    Mu,
    /// A-law (Europe, China, most of the world).
    A,
}

/// One µ-law byte to a 16-bit linear sample (range ±32124).
pub fn ulaw_to_linear(byte: u8) -> i16 {
    let u = !byte;
    let step = i32::from(u & 0x0F);
    let segment = (u >> 4) & 0x07;
    let magnitude = (((step << 3) + 0x84) << segment) - 0x84;
    (if u & 0x80 != 0 { -magnitude } else { magnitude }) as i16
}

/// One A-law byte to a 16-bit linear sample (range ±32256).
pub fn alaw_to_linear(byte: u8) -> i16 {
    let a = byte ^ 0x55;
    let step = i32::from(a & 0x0F) << 4;
    let magnitude = match (a >> 4) & 0x07 {
        0 => step + 8,
        segment => (step + 0x108) << (segment - 1),
    };
    // A-law's sign bit set means positive.
    (if a & 0x80 != 0 { magnitude } else { -magnitude }) as i16
}

/// One 16-bit linear sample to µ-law (the reference encoder: bias 0x84, clipped at 32635),
/// for test peers and anything that sends call audio.
pub fn linear_to_ulaw(sample: i16) -> u8 {
    const CLIP: i32 = 32635;
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    let s = s.min(CLIP) + 0x84;
    let segment = (0..8).rev().find(|&seg| s >= (0x80 << seg)).unwrap_or(0);
    let step = (s >> (segment + 3)) & 0x0F;
    !(sign | (segment << 4) as u8 | step as u8)
}

/// Encodes samples in [-1, 1] as µ-law bytes.
pub fn encode_ulaw(samples: &[f32]) -> Vec<u8> {
    samples
        .iter()
        .map(|&s| linear_to_ulaw((s.clamp(-1.0, 1.0) * 32767.0) as i16))
        .collect()
}

/// Decodes a payload to samples in [-1, 1], appending to `out`.
pub fn decode_into(payload: &[u8], law: Law, out: &mut Vec<f32>) {
    let convert = match law {
        Law::Mu => ulaw_to_linear,
        Law::A => alaw_to_linear,
    };
    out.extend(payload.iter().map(|&b| f32::from(convert(b)) / 32768.0));
}

/// Decodes a payload to samples in [-1, 1].
pub fn decode(payload: &[u8], law: Law) -> Vec<f32> {
    let mut out = Vec::with_capacity(payload.len());
    decode_into(payload, law, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_laws_match_the_reference_table_at_its_corners() {
        // Values of the reference decoder (g711.c's ulaw2linear / alaw2linear).
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x7F), 0);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0xF0), 120);
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xAA), 32256);
        assert_eq!(alaw_to_linear(0x2A), -32256);
    }

    #[test]
    fn mu_law_round_trips_every_code() {
        for byte in 0..=255u8 {
            let back = linear_to_ulaw(ulaw_to_linear(byte));
            // 0x7F and 0xFF are both zero; every other code comes back as itself.
            assert!(
                back == byte || ulaw_to_linear(byte) == 0,
                "{byte:#x} -> {back:#x}"
            );
        }
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
    }

    #[test]
    fn decoding_is_monotonic_within_each_sign() {
        // µ-law bytes 0x80..=0xFF run from the loudest positive value down to zero.
        let positive: Vec<i16> = (0x80..=0xFFu8).map(ulaw_to_linear).collect();
        assert!(positive.windows(2).all(|w| w[0] > w[1]));
        let samples = decode(&[0x80, 0xFF, 0x00], Law::Mu);
        assert!(samples.iter().all(|s| (-1.0..=1.0).contains(s)));
    }
}
