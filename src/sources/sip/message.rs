//! SIP messages (RFC 3261 §7): the start line, headers (case-insensitive, compact forms of
//! §7.3.3), and the body sized by Content-Length. A tight parser for what a recording server
//! reads, with bounds on size and header count; fuzzed (`fuzz/`), because strangers' bytes
//! reach it. No SIP crate on the registry is both maintained and tolerant of what real
//! recorders send, so this one is ours.

use std::fmt::Write as _;

/// A message larger than this (bytes) is refused.
pub const MAX_MESSAGE: usize = 64 * 1024;
const MAX_HEADERS: usize = 128;

/// What was wrong with a message; `kind` names it for the metrics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SIP: {message}")]
pub struct SipError {
    pub kind: &'static str,
    pub message: String,
}

pub(crate) fn sip_error(kind: &'static str, message: impl Into<String>) -> SipError {
    SipError {
        kind,
        message: message.into(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: String, uri: String },
    Response { code: u16, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipMessage {
    pub start: StartLine,
    /// In order, names as written.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The full name of a compact header form (RFC 3261 §7.3.3, RFC 3515, RFC 3841).
fn full_name(name: &str) -> &str {
    match name {
        "v" | "V" => "Via",
        "f" | "F" => "From",
        "t" | "T" => "To",
        "i" | "I" => "Call-ID",
        "m" | "M" => "Contact",
        "l" | "L" => "Content-Length",
        "c" | "C" => "Content-Type",
        "k" | "K" => "Supported",
        "s" | "S" => "Subject",
        other => other,
    }
}

/// The length of the first whole message in `buf` (a TCP stream), if it has arrived.
pub fn message_len(buf: &[u8]) -> Result<Option<usize>, SipError> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > MAX_MESSAGE {
            return Err(sip_error("sip_oversized", "headers over 64 KiB"));
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| sip_error("sip_not_utf8", "headers are not UTF-8"))?;
    let length = head
        .split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| full_name(n.trim()).eq_ignore_ascii_case("Content-Length"))
        .map(|(_, v)| v.trim().parse::<usize>())
        .transpose()
        .map_err(|_| sip_error("sip_bad_content_length", "Content-Length is not a number"))?
        .unwrap_or(0);
    // Checked: a Content-Length near 2^64 must not wrap into a short message (it did, and the
    // connection's loop then spun on an empty remainder).
    let total = match (head_end + 4).checked_add(length) {
        Some(total) if total <= MAX_MESSAGE => total,
        _ => {
            return Err(sip_error(
                "sip_oversized",
                format!("a Content-Length of {length} bytes; at most {MAX_MESSAGE} in all"),
            ))
        }
    };
    Ok((buf.len() >= total).then_some(total))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl SipMessage {
    /// Parses one whole message (a UDP datagram, or what `message_len` cut from a stream).
    pub fn parse(bytes: &[u8]) -> Result<Self, SipError> {
        if bytes.len() > MAX_MESSAGE {
            return Err(sip_error("sip_oversized", format!("{} bytes", bytes.len())));
        }
        // Keep-alives (RFC 5626 §3.5.1) are blank lines.
        let start_at = bytes
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .ok_or_else(|| sip_error("sip_empty", "an empty message"))?;
        let bytes = &bytes[start_at..];
        let head_end = find(bytes, b"\r\n\r\n")
            .ok_or_else(|| sip_error("sip_truncated", "no blank line after the headers"))?;
        let head = std::str::from_utf8(&bytes[..head_end])
            .map_err(|_| sip_error("sip_not_utf8", "headers are not UTF-8"))?;
        let mut lines = head.split("\r\n");
        let first = lines.next().unwrap_or_default();
        let start = parse_start_line(first)?;
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.starts_with([' ', '\t']) {
                // Folded continuation of the previous header (§7.3.1).
                let (_, value) = headers
                    .last_mut()
                    .ok_or_else(|| sip_error("sip_bad_header", "a continuation with no header"))?;
                value.push(' ');
                value.push_str(line.trim());
                continue;
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| sip_error("sip_bad_header", format!("no colon in {line:?}")))?;
            let name = name.trim();
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(sip_error("sip_bad_header", format!("header name {name:?}")));
            }
            headers.push((full_name(name).to_owned(), value.trim().to_owned()));
            if headers.len() > MAX_HEADERS {
                return Err(sip_error("sip_too_many_headers", "over 128 headers"));
            }
        }
        let rest = &bytes[head_end + 4..];
        let body = match headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
        {
            Some((_, v)) => {
                let n: usize = v.parse().map_err(|_| {
                    sip_error("sip_bad_content_length", format!("Content-Length {v:?}"))
                })?;
                rest.get(..n)
                    .ok_or_else(|| {
                        sip_error("sip_truncated", "the body is shorter than Content-Length")
                    })?
                    .to_vec()
            }
            // Over UDP the datagram ends the body (§18.3).
            None => rest.to_vec(),
        };
        Ok(Self {
            start,
            headers,
            body,
        })
    }

    /// The first header of this name (any case, compact form or not).
    pub fn header<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.all(name).next()
    }

    /// Every header of this name, in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn method(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// A response to this request (§8.2.6): its Via, From, To (with `to_tag` added when it has
    /// none), Call-ID and CSeq, then `extra` headers and the body.
    pub fn response(
        &self,
        code: u16,
        reason: &str,
        to_tag: &str,
        extra: &[(&str, String)],
        body: Option<(&str, &str)>,
    ) -> Vec<u8> {
        let mut out = format!("SIP/2.0 {code} {reason}\r\n");
        for via in self.all("Via") {
            let _ = write!(out, "Via: {via}\r\n");
        }
        for name in ["From", "To", "Call-ID", "CSeq"] {
            if let Some(v) = self.header(name) {
                if name == "To" && !v.contains(";tag=") && code != 100 {
                    let _ = write!(out, "To: {v};tag={to_tag}\r\n");
                } else {
                    let _ = write!(out, "{name}: {v}\r\n");
                }
            }
        }
        for (name, value) in extra {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        match body {
            Some((content_type, text)) => {
                let _ = write!(
                    out,
                    "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{text}",
                    text.len()
                );
            }
            None => out.push_str("Content-Length: 0\r\n\r\n"),
        }
        out.into_bytes()
    }
}

fn parse_start_line(line: &str) -> Result<StartLine, SipError> {
    let bad = || {
        sip_error(
            "sip_bad_start_line",
            format!("start line {:?}", truncate(line)),
        )
    };
    if let Some(rest) = line.strip_prefix("SIP/2.0 ") {
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let code: u16 = code.parse().map_err(|_| bad())?;
        if !(100..700).contains(&code) {
            return Err(bad());
        }
        return Ok(StartLine::Response {
            code,
            reason: reason.to_owned(),
        });
    }
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some("SIP/2.0"), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) || uri.is_empty() {
        return Err(bad());
    }
    Ok(StartLine::Request {
        method: method.to_owned(),
        uri: uri.to_owned(),
    })
}

fn truncate(s: &str) -> String {
    s.chars().take(60).collect()
}

/// The value of a `;name=value` parameter of a header (`tag` of From or To).
pub fn param<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:rec@127.0.0.1:5060 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1\r\n\
        v: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-0\r\n\
        f: <sip:src@127.0.0.1>;tag=abc\r\n\
        To: <sip:rec@127.0.0.1>\r\n\
        i: 42@127.0.0.1\r\n\
        CSeq: 1 INVITE\r\n\
        Subject: a long\r\n  folded subject\r\n\
        l: 4\r\n\r\nv=0\r\nEXTRA";

    #[test]
    fn requests_parse_with_compact_forms_folding_and_content_length() {
        let m = SipMessage::parse(INVITE.as_bytes()).unwrap();
        assert_eq!(m.method(), Some("INVITE"));
        assert_eq!(m.header("call-id"), Some("42@127.0.0.1"));
        assert_eq!(m.all("Via").count(), 2);
        assert_eq!(m.header("Subject"), Some("a long folded subject"));
        assert_eq!(m.body, b"v=0\r");
        assert_eq!(param(m.header("From").unwrap(), "tag"), Some("abc"));
        let ok = SipMessage::parse(&m.response(200, "OK", "xyz", &[], None)).unwrap();
        assert_eq!(
            ok.start,
            StartLine::Response {
                code: 200,
                reason: "OK".into()
            }
        );
        assert_eq!(ok.all("Via").count(), 2);
        assert_eq!(param(ok.header("To").unwrap(), "tag"), Some("xyz"));
        assert_eq!(
            message_len(INVITE.as_bytes()).unwrap(),
            Some(INVITE.len() - 6)
        );
        assert_eq!(message_len(&INVITE.as_bytes()[..50]).unwrap(), None);
        // A length that would wrap the sum around 2^64 is oversized, not a short message.
        for length in [u64::MAX, u64::MAX - 100, u64::MAX / 2, MAX_MESSAGE as u64] {
            let head = format!("OPTIONS sip:x SIP/2.0\r\nContent-Length: {length}\r\n\r\n");
            let e = message_len(head.as_bytes()).unwrap_err();
            assert_eq!(e.kind, "sip_oversized", "Content-Length {length}");
        }
    }

    #[test]
    fn garbage_is_named_not_panicked_on() {
        let kind = |b: &[u8]| SipMessage::parse(b).unwrap_err().kind;
        assert_eq!(kind(b""), "sip_empty");
        assert_eq!(kind(b"\r\n\r\n"), "sip_empty");
        assert_eq!(kind(b"HELLO\r\n\r\n"), "sip_bad_start_line");
        assert_eq!(kind(b"invite sip:x SIP/2.0\r\n\r\n"), "sip_bad_start_line");
        assert_eq!(kind(b"SIP/2.0 999 Odd\r\n\r\n"), "sip_bad_start_line");
        assert_eq!(
            kind(b"BYE sip:x SIP/2.0\r\nno colon here\r\n\r\n"),
            "sip_bad_header"
        );
        assert_eq!(
            kind(b"BYE sip:x SIP/2.0\r\nl: many\r\n\r\n"),
            "sip_bad_content_length"
        );
        assert_eq!(
            kind(b"BYE sip:x SIP/2.0\r\nl: 99\r\n\r\nshort"),
            "sip_truncated"
        );
        assert_eq!(kind(b"BYE sip:x SIP/2.0\r\nCall-ID: x"), "sip_truncated");
        assert_eq!(kind(&[b'A'; MAX_MESSAGE + 1]), "sip_oversized");
        let many = format!("BYE sip:x SIP/2.0\r\n{}\r\n", "X: y\r\n".repeat(200));
        assert_eq!(kind(many.as_bytes()), "sip_too_many_headers");
        assert_eq!(
            kind(b"BYE sip:x SIP/2.0\r\n\xff: y\r\n\r\n"),
            "sip_not_utf8"
        );
    }
}
