//! What an INVITE offers and what we answer: the SDP offer (RFC 4566, parsed by Mozilla's
//! `webrtc-sdp`), the SIPREC body (RFC 7866 §8: `multipart/mixed` of SDP and
//! `application/rs-metadata+xml`), the recording metadata's participants and streams
//! (RFC 7865 §6, `roxmltree`), and the SDP answer: every audio stream we can decode accepted
//! `a=recvonly` on a port of ours, the rest refused with port 0 (RFC 3264 §6).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use webrtc_sdp::attribute_type::SdpAttribute;
use webrtc_sdp::media_type::{SdpFormatList, SdpMediaValue};

use super::message::{sip_error, SipError, SipMessage};
use crate::sources::rtp::Codec;

/// One `m=` line of the offer.
#[derive(Debug, Clone, PartialEq)]
pub struct OfferedStream {
    /// The payload type we will take, and its codec; `None`: nothing we decode (or not audio).
    pub codec: Option<(u8, Codec)>,
    /// `a=label` (RFC 4574): how SIPREC metadata names the stream.
    pub label: Option<String>,
    /// The m= line as offered, for the answer's refusal line.
    pub media: String,
    pub proto: String,
    pub formats: String,
}

/// The offer: its streams, and the recording metadata when it came as SIPREC.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Offer {
    pub streams: Vec<OfferedStream>,
    pub metadata: Option<Metadata>,
}

/// RFC 7865 metadata, as far as naming parties goes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Metadata {
    /// Stream label -> the name of the participant who sends it.
    pub senders: BTreeMap<String, String>,
    /// Every participant's name (for the call's metadata).
    pub participants: Vec<String>,
}

/// Reads the offer out of an INVITE (or re-INVITE, UPDATE): plain SDP, or SIPREC multipart.
pub fn read_offer(message: &SipMessage) -> Result<Offer, SipError> {
    let content_type = message.header("Content-Type").unwrap_or_default();
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let body = std::str::from_utf8(&message.body)
        .map_err(|_| sip_error("sip_not_utf8", "the body is not UTF-8"))?;
    let (sdp, metadata) = match media_type.as_str() {
        "application/sdp" => (body.to_owned(), None),
        "multipart/mixed" => {
            let boundary = super::message::param(content_type, "boundary")
                .map(|b| b.trim_matches('"'))
                .ok_or_else(|| {
                    sip_error("sip_bad_multipart", "multipart/mixed without a boundary")
                })?;
            let parts = split_multipart(body, boundary)?;
            let sdp = parts
                .iter()
                .find(|(t, _)| t == "application/sdp")
                .map(|(_, b)| b.clone())
                .ok_or_else(|| sip_error("sip_no_sdp", "a multipart body without SDP"))?;
            let metadata = parts
                .iter()
                .find(|(t, _)| t == "application/rs-metadata+xml")
                .map(|(_, xml)| parse_metadata(xml))
                .transpose()?;
            (sdp, metadata)
        }
        "" if message.body.is_empty() => {
            return Err(sip_error("sip_no_sdp", "an INVITE without an SDP offer"))
        }
        other => {
            return Err(sip_error(
                "sip_unsupported_body",
                format!("a body of type {other:?}"),
            ))
        }
    };
    let mut offer = parse_offer(&sdp)?;
    offer.metadata = metadata;
    Ok(offer)
}

/// The parts of a `multipart/mixed` body (RFC 2046 §5.1): each part's content type (lower
/// case, without parameters) and body.
pub fn split_multipart(body: &str, boundary: &str) -> Result<Vec<(String, String)>, SipError> {
    if boundary.is_empty() || boundary.len() > 70 {
        return Err(sip_error(
            "sip_bad_multipart",
            "a boundary of 1 to 70 characters",
        ));
    }
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut sections = body.split(delimiter.as_str());
    sections.next(); // the preamble
    for section in sections {
        if section.starts_with("--") {
            break; // the closing delimiter
        }
        let section = section.strip_prefix("\r\n").unwrap_or(section);
        let (head, content) = section
            .split_once("\r\n\r\n")
            .unwrap_or(("", section.trim_start_matches("\r\n")));
        let content_type = head
            .split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case("Content-Type"))
            .map(|(_, v)| {
                v.split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_else(|| "text/plain".into());
        let content = content.strip_suffix("\r\n").unwrap_or(content);
        parts.push((content_type, content.to_owned()));
    }
    if parts.is_empty() {
        return Err(sip_error(
            "sip_bad_multipart",
            "no part between the boundaries",
        ));
    }
    Ok(parts)
}

/// The offer's streams (without metadata).
pub fn parse_offer(sdp: &str) -> Result<Offer, SipError> {
    let session = webrtc_sdp::parse_sdp(sdp, false)
        .map_err(|e| sip_error("sip_bad_sdp", format!("SDP: {e}")))?;
    let streams = session
        .media
        .iter()
        .map(|m| {
            let formats: Vec<u32> = match m.get_formats() {
                SdpFormatList::Integers(f) => f.clone(),
                _ => Vec::new(),
            };
            let rtpmaps: Vec<(u8, String, u32)> = m
                .get_attributes()
                .iter()
                .filter_map(|a| match a {
                    SdpAttribute::Rtpmap(r) => Some((
                        r.payload_type,
                        r.codec_name.to_ascii_uppercase(),
                        r.frequency,
                    )),
                    _ => None,
                })
                .collect();
            let label = m.get_attributes().iter().find_map(|a| match a {
                SdpAttribute::Label(l) => Some(l.clone()),
                _ => None,
            });
            // Port 0 offers a stream disabled (RFC 3264 §5.1): it is answered with port 0 too.
            let audio = matches!(m.get_type(), SdpMediaValue::Audio) && m.get_port() != 0;
            // The first format we decode, in the offer's order of preference.
            let codec = formats.iter().filter(|_| audio).find_map(|&pt| {
                let pt = u8::try_from(pt).ok()?;
                let mapped = rtpmaps.iter().find(|(p, _, _)| *p == pt);
                match (pt, mapped) {
                    (0, None) => Some((pt, Codec::Pcmu)),
                    (8, None) => Some((pt, Codec::Pcma)),
                    (_, Some((_, name, 8000))) if name == "PCMU" => Some((pt, Codec::Pcmu)),
                    (_, Some((_, name, 8000))) if name == "PCMA" => Some((pt, Codec::Pcma)),
                    (_, Some((_, name, rate)))
                        if name == "L16" && (8000..=48_000).contains(rate) =>
                    {
                        Some((pt, Codec::L16 { rate: *rate }))
                    }
                    _ => None,
                }
            });
            OfferedStream {
                codec,
                label,
                media: m.get_type().to_string(),
                proto: m.get_proto().to_string(),
                formats: formats
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(" "),
            }
        })
        .collect();
    Ok(Offer {
        streams,
        metadata: None,
    })
}

/// RFC 7865 recording metadata: who sends which labelled stream. Both the current namespace
/// (`urn:ietf:params:xml:ns:recording:1`) and the legacy one of early recorders
/// (`urn:ietf:params:xml:ns:siprec`) are read, by local names.
pub fn parse_metadata(xml: &str) -> Result<Metadata, SipError> {
    let doc = roxmltree::Document::parse_with_options(
        xml,
        roxmltree::ParsingOptions {
            allow_dtd: false,
            nodes_limit: 10_000,
            ..Default::default()
        },
    )
    .map_err(|e| sip_error("siprec_bad_metadata", format!("recording metadata: {e}")))?;
    let named = |n: &roxmltree::Node, name: &str| n.is_element() && n.tag_name().name() == name;
    let attr = |n: &roxmltree::Node, names: &[&str]| {
        names
            .iter()
            .find_map(|a| n.attribute(*a))
            .map(str::to_owned)
    };
    // participant id -> a name for people: <name>, else the AoR.
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    for p in doc.descendants().filter(|n| named(n, "participant")) {
        let Some(id) = attr(&p, &["participant_id", "id"]) else {
            continue;
        };
        let name_id = p.descendants().find(|n| named(n, "nameID"));
        let display = p
            .descendants()
            .find(|n| named(n, "name"))
            .and_then(|n| n.text())
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .or_else(|| name_id.and_then(|n| n.attribute("aor")).map(str::to_owned))
            .unwrap_or_else(|| id.clone());
        names.insert(id, display);
    }
    // stream id -> label
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    for s in doc.descendants().filter(|n| named(n, "stream")) {
        let label = s
            .children()
            .find(|n| named(n, "label"))
            .and_then(|n| n.text())
            .map(str::trim);
        if let (Some(id), Some(label)) = (attr(&s, &["stream_id", "id"]), label) {
            labels.insert(id, label.to_owned());
        }
    }
    let mut senders = BTreeMap::new();
    for assoc in doc
        .descendants()
        .filter(|n| named(n, "participantstreamassoc"))
    {
        let Some(who) = attr(&assoc, &["participant_id"]).and_then(|id| names.get(&id)) else {
            continue;
        };
        for send in assoc.children().filter(|n| named(n, "send")) {
            if let Some(label) = send.text().and_then(|id| labels.get(id.trim())) {
                senders.insert(label.clone(), who.clone());
            }
        }
    }
    Ok(Metadata {
        senders,
        participants: names.into_values().collect(),
    })
}

/// The SDP answer: every stream in the offer's order; accepted ones (`ports[i]` is `Some`)
/// receive-only on our port with the payload type taken, the rest refused with port 0.
pub fn answer(offer: &Offer, ip: IpAddr, ports: &[Option<u16>], session_id: u64) -> String {
    let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
    let mut sdp = format!(
        "v=0\r\no=vishguard {session_id} {session_id} IN {family} {ip}\r\ns=vishguard\r\nc=IN {family} {ip}\r\nt=0 0\r\n"
    );
    for (stream, port) in offer.streams.iter().zip(ports) {
        match (port, stream.codec) {
            (Some(port), Some((pt, codec))) => {
                let _ = write!(sdp, "m=audio {port} RTP/AVP {pt}\r\n");
                let name = match codec {
                    Codec::Pcmu => "PCMU",
                    Codec::Pcma => "PCMA",
                    Codec::L16 { .. } => "L16",
                };
                let _ = write!(sdp, "a=rtpmap:{pt} {name}/{}\r\n", codec.rate());
                if let Some(label) = &stream.label {
                    let _ = write!(sdp, "a=label:{label}\r\n");
                }
                sdp.push_str("a=recvonly\r\n");
            }
            _ => {
                let formats = if stream.formats.is_empty() {
                    "0"
                } else {
                    &stream.formats
                };
                let _ = write!(sdp, "m={} 0 {} {formats}\r\n", stream.media, stream.proto);
            }
        }
    }
    sdp
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDP: &str = "v=0\r\no=src 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
        m=audio 6000 RTP/AVP 18 0\r\na=rtpmap:18 G729/8000\r\na=label:1\r\na=sendonly\r\n\
        m=audio 6002 RTP/AVP 96 8\r\na=rtpmap:96 L16/16000\r\na=label:2\r\na=sendonly\r\n\
        m=video 6004 RTP/AVP 97\r\na=rtpmap:97 H264/90000\r\n";

    const METADATA: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns="urn:ietf:params:xml:ns:recording:1">
  <datamode>complete</datamode>
  <session session_id="s1"><sipSessionID>abc</sipSessionID></session>
  <participant participant_id="p1"><nameID aor="sip:alice@example.com"><name>Alice</name></nameID></participant>
  <participant participant_id="p2"><nameID aor="sip:bob@example.com"/></participant>
  <stream stream_id="st1" session_id="s1"><label>1</label></stream>
  <stream stream_id="st2" session_id="s1"><label>2</label></stream>
  <participantstreamassoc participant_id="p1"><send>st1</send><recv>st2</recv></participantstreamassoc>
  <participantstreamassoc participant_id="p2"><send>st2</send><recv>st1</recv></participantstreamassoc>
</recording>"#;

    #[test]
    fn an_offer_takes_the_codecs_we_decode_in_its_order() {
        let offer = parse_offer(SDP).unwrap();
        assert_eq!(offer.streams.len(), 3);
        assert_eq!(offer.streams[0].codec, Some((0, Codec::Pcmu)));
        assert_eq!(offer.streams[0].label.as_deref(), Some("1"));
        assert_eq!(
            offer.streams[1].codec,
            Some((96, Codec::L16 { rate: 16000 }))
        );
        assert_eq!(offer.streams[2].codec, None, "video is refused");
        let sdp = answer(
            &offer,
            "127.0.0.1".parse().unwrap(),
            &[Some(7000), Some(7002), None],
            5,
        );
        assert!(sdp.contains("m=audio 7000 RTP/AVP 0\r\n"), "{sdp}");
        assert!(sdp.contains("a=rtpmap:96 L16/16000\r\n"), "{sdp}");
        assert!(sdp.contains("m=video 0 RTP/AVP 97\r\n"), "{sdp}");
        assert_eq!(sdp.matches("a=recvonly").count(), 2);
        // Our answer is itself valid SDP.
        assert!(parse_offer(&sdp).is_ok());
        // A stream offered on port 0 is disabled: not heard, answered with port 0.
        let disabled = parse_offer(&SDP.replace("m=audio 6000", "m=audio 0")).unwrap();
        assert_eq!(disabled.streams[0].codec, None);
        assert_eq!(
            disabled.streams[1].codec,
            Some((96, Codec::L16 { rate: 16000 }))
        );
    }

    #[test]
    fn siprec_metadata_names_who_sends_each_stream_in_either_namespace() {
        let m = parse_metadata(METADATA).unwrap();
        assert_eq!(m.senders["1"], "Alice");
        assert_eq!(m.senders["2"], "sip:bob@example.com");
        let legacy = METADATA.replace(
            "urn:ietf:params:xml:ns:recording:1",
            "urn:ietf:params:xml:ns:siprec",
        );
        assert_eq!(parse_metadata(&legacy).unwrap(), m);
        assert_eq!(
            parse_metadata("<recording").unwrap_err().kind,
            "siprec_bad_metadata"
        );
        let dtd = "<!DOCTYPE r [<!ENTITY a \"aaaa\">]><recording>&a;</recording>";
        assert_eq!(parse_metadata(dtd).unwrap_err().kind, "siprec_bad_metadata");
    }

    #[test]
    fn a_multipart_body_splits_into_its_sdp_and_metadata() {
        let body = format!(
            "--b1\r\nContent-Type: application/sdp\r\n\r\n{SDP}\r\n--b1\r\nContent-Type: application/rs-metadata+xml\r\nContent-Disposition: recording-session\r\n\r\n{METADATA}\r\n--b1--\r\n"
        );
        let parts = split_multipart(&body, "b1").unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].0, "application/sdp");
        assert!(parts[1].1.starts_with("<?xml"));
        assert!(split_multipart("no parts", "b1").is_err());
        assert!(split_multipart(&body, "").is_err());
    }
}
