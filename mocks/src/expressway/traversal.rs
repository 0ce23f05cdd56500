//! The traversal zones' wire form (SPEC MRA1, PORTS 7001 and 7400): frames over the TLS
//! connections Expressway-C opens to Expressway-E, each an ASCII line and a counted payload.
//!
//! ```text
//! REQ <id> <len>\r\n<len bytes: an HTTP/1.1 request>      E → C
//! RESP <id> <len>\r\n<len bytes: an HTTP/1.1 response>    C → E
//! PING <n>\r\n                                            C → E, every KEEPALIVE
//! PONG <n>\r\n                                            E → C
//! OPEN <ch> <len>\r\n<header: `xmpp carol@example.com`>   E → C (issue 17)
//! DATA <ch> <len>\r\n<len bytes of the stream>            both ways
//! CLOSE <ch> <len>\r\n<reason, UTF-8>                     both ways
//! ```
//!
//! `OPEN` starts a byte stream (a channel) that E names by `<ch>`; its header says what the
//! stream is (`xmpp <user>@<domain>` on the XMPP zone; `sip …` is left for SIP), and C connects
//! it inside. `DATA` carries the stream's bytes as they come and `CLOSE` ends it from either
//! side, with a short reason for the transcript.
//!
//! The payloads are plain HTTP/1.1 messages with a `Content-Length`, so Wireshark shows the
//! zone readably once the TLS is decrypted (the capture carries the secrets); the real
//! product's SIP/SSH-based zone is not modelled (docs/decisions.md). Lines are bounded
//! ([`MAX_LINE`]) and payloads too ([`MAX_FRAME`]); anything else is garbage and the
//! connection is closed. Both codecs here are pure: they are tested without I/O.

use crate::http::{Request, Response};

/// Longest frame line (`RESP 18446744073709551615 1048576\r\n` fits well).
pub const MAX_LINE: usize = 64;
/// Largest payload: a body of [`crate::http::MAX_BODY`] and a generous head.
pub const MAX_FRAME: usize = crate::http::MAX_BODY + 16 * 1024;
/// Most header lines a payload may carry.
const MAX_HEADERS: usize = 100;
/// Longest `OPEN` header.
pub const MAX_OPEN: usize = 512;
/// Largest `DATA` payload (each side reads its stream in chunks of at most 16 KiB).
pub const MAX_DATA: usize = 64 * 1024;
/// Longest `CLOSE` reason.
pub const MAX_REASON: usize = 256;

/// One frame of the zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A request E carries to C.
    Req {
        /// E's id for it, echoed by the answer.
        id: u64,
        /// The HTTP/1.1 request.
        msg: Vec<u8>,
    },
    /// C's answer.
    Resp {
        /// The request's id.
        id: u64,
        /// The HTTP/1.1 response.
        msg: Vec<u8>,
    },
    /// Keepalive from C.
    Ping(u64),
    /// E's answer to a ping.
    Pong(u64),
    /// E opens channel `ch` (issue 17).
    Open {
        /// E's id for the channel.
        ch: u64,
        /// What the stream is: `xmpp <user>@<domain>`.
        header: String,
    },
    /// Bytes of channel `ch`'s stream.
    Data {
        /// The channel.
        ch: u64,
        /// The bytes, as read.
        bytes: Vec<u8>,
    },
    /// Channel `ch` is over.
    Close {
        /// The channel.
        ch: u64,
        /// Why, for the transcript.
        reason: String,
    },
    /// A media relay of channel `ch`'s calls (issue 17, MEDIA1): C → E `open <port>
    /// <audio|video>` and `close <port>`, E → C `opened <port>` and `failed <port> <why>`.
    Media {
        /// The channel.
        ch: u64,
        /// The order or its answer.
        text: String,
    },
}

/// Why bytes on the zone are not a frame (the peer's fault: the connection is closed).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// No line end within [`MAX_LINE`] bytes.
    #[error("frame line too long")]
    LineTooLong,
    /// A line that is not one of the four forms.
    #[error("bad frame line {0:?}")]
    BadLine(String),
    /// A payload longer than [`MAX_FRAME`].
    #[error("frame of {0} bytes is over the limit")]
    TooLarge(usize),
    /// A payload that is not the HTTP message it should be.
    #[error("bad HTTP message: {0}")]
    BadMessage(&'static str),
    /// An `OPEN` header or `CLOSE` reason that is not UTF-8.
    #[error("{0} that is not UTF-8")]
    NotText(&'static str),
}

impl Frame {
    /// The frame's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let (line, payload): (String, &[u8]) = match self {
            Self::Req { id, msg } => (format!("REQ {id} {}\r\n", msg.len()), msg),
            Self::Resp { id, msg } => (format!("RESP {id} {}\r\n", msg.len()), msg),
            Self::Ping(n) => (format!("PING {n}\r\n"), &[]),
            Self::Pong(n) => (format!("PONG {n}\r\n"), &[]),
            Self::Open { ch, header } => {
                (format!("OPEN {ch} {}\r\n", header.len()), header.as_bytes())
            }
            Self::Data { ch, bytes } => (format!("DATA {ch} {}\r\n", bytes.len()), bytes),
            Self::Close { ch, reason } => {
                (format!("CLOSE {ch} {}\r\n", reason.len()), reason.as_bytes())
            }
            Self::Media { ch, text } => (format!("MEDIA {ch} {}\r\n", text.len()), text.as_bytes()),
        };
        let mut out = line.into_bytes();
        out.extend_from_slice(payload);
        out
    }

    /// Takes one frame off the front of `buf`: `Ok(None)` when more bytes are needed.
    pub fn decode(buf: &mut Vec<u8>) -> Result<Option<Self>, FrameError> {
        let Some(end) = buf.windows(2).take(MAX_LINE).position(|w| w == b"\r\n") else {
            return if buf.len() >= MAX_LINE { Err(FrameError::LineTooLong) } else { Ok(None) };
        };
        let line = std::str::from_utf8(&buf[..end])
            .map_err(|_| FrameError::BadLine(String::from_utf8_lossy(&buf[..end]).into()))?;
        let bad = || FrameError::BadLine(line.chars().take(MAX_LINE).collect());
        let words: Vec<&str> = line.split(' ').collect();
        let num = |w: &str| w.parse::<u64>().ok().filter(|_| w.bytes().all(|c| c.is_ascii_digit()));
        let (frame, take) = match words[..] {
            ["PING", n] => (Self::Ping(num(n).ok_or_else(bad)?), end + 2),
            ["PONG", n] => (Self::Pong(num(n).ok_or_else(bad)?), end + 2),
            [kind @ ("REQ" | "RESP" | "OPEN" | "DATA" | "CLOSE" | "MEDIA"), id, len] => {
                let id = num(id).ok_or_else(bad)?;
                let len = num(len).ok_or_else(bad)?;
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                let max = match kind {
                    "OPEN" => MAX_OPEN,
                    "DATA" => MAX_DATA,
                    "CLOSE" | "MEDIA" => MAX_REASON,
                    _ => MAX_FRAME,
                };
                if len > max {
                    return Err(FrameError::TooLarge(len));
                }
                if buf.len() < end + 2 + len {
                    return Ok(None);
                }
                let msg = buf[end + 2..end + 2 + len].to_vec();
                let text =
                    |what| String::from_utf8(msg.clone()).map_err(|_| FrameError::NotText(what));
                let f = match kind {
                    "REQ" => Self::Req { id, msg },
                    "RESP" => Self::Resp { id, msg },
                    "OPEN" => Self::Open { ch: id, header: text("an OPEN header")? },
                    "CLOSE" => Self::Close { ch: id, reason: text("a CLOSE reason")? },
                    "MEDIA" => Self::Media { ch: id, text: text("a MEDIA order")? },
                    _ => Self::Data { ch: id, bytes: msg },
                };
                (f, end + 2 + len)
            }
            _ => return Err(bad()),
        };
        buf.drain(..take);
        Ok(Some(frame))
    }
}

/// RFC 3986 unreserved characters stay, and `/` in paths; everything else is `%XX`.
pub fn percent_encode(s: &str, keep_slash: bool) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            o.push(char::from(b));
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

/// A request's target (path and query) as sent on.
pub fn target(path: &str, query: &[(String, String)]) -> String {
    let mut t = percent_encode(path, true);
    for (i, (k, v)) in query.iter().enumerate() {
        t.push(if i == 0 { '?' } else { '&' });
        t.push_str(&percent_encode(k, false));
        t.push('=');
        t.push_str(&percent_encode(v, false));
    }
    t
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) and the length, which the encoder sets.
fn hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

fn push_headers(out: &mut Vec<u8>, headers: &[(String, String)], body: &[u8]) {
    for (k, v) in headers.iter().filter(|(k, _)| !hop_by_hop(k)) {
        // A value with a line break would forge a header: dropped (RFC 9110 §5.5).
        if !v.contains(['\r', '\n']) && !k.contains(['\r', '\n', ':', ' ']) {
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
    }
    out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
}

/// A request as E sends it over the zone (hop-by-hop headers dropped).
pub fn encode_request(req: &Request) -> Vec<u8> {
    let mut out =
        format!("{} {} HTTP/1.1\r\n", req.method, target(&req.path, &req.query)).into_bytes();
    push_headers(&mut out, &req.headers, &req.body);
    out
}

/// A response as C sends it over the zone.
pub fn encode_response(r: &Response) -> Vec<u8> {
    let reason = hyper::StatusCode::from_u16(r.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown");
    let mut out = format!("HTTP/1.1 {} {reason}\r\n", r.status).into_bytes();
    push_headers(&mut out, &r.headers, &r.body);
    out
}

/// The start line, headers and body of a message.
type Parts<'a> = (&'a str, Vec<(String, String)>, Vec<u8>);

fn split_message(bytes: &[u8]) -> Result<Parts<'_>, FrameError> {
    let head_end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(FrameError::BadMessage("no end of head"))?;
    let head =
        std::str::from_utf8(&bytes[..head_end]).map_err(|_| FrameError::BadMessage("not text"))?;
    let mut lines = head.split("\r\n");
    let start = lines.next().unwrap_or("");
    let mut headers = Vec::new();
    let mut length = None;
    for l in lines {
        let (k, v) = l.split_once(':').ok_or(FrameError::BadMessage("bad header line"))?;
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_owned());
        if k.is_empty() || headers.len() >= MAX_HEADERS {
            return Err(FrameError::BadMessage("bad or too many headers"));
        }
        if k == "content-length" {
            length = Some(v.parse::<usize>().map_err(|_| FrameError::BadMessage("bad length"))?);
        } else {
            headers.push((k, v));
        }
    }
    let body = &bytes[head_end + 4..];
    if length.unwrap_or(0) != body.len() {
        return Err(FrameError::BadMessage("length does not match the body"));
    }
    Ok((start, headers, body.to_vec()))
}

/// Reads the request of a `REQ` frame.
pub fn parse_request(bytes: &[u8]) -> Result<Request, FrameError> {
    let (start, headers, body) = split_message(bytes)?;
    let [method, target, "HTTP/1.1"] = start.split(' ').collect::<Vec<_>>()[..] else {
        return Err(FrameError::BadMessage("bad request line"));
    };
    if method.is_empty() || !method.bytes().all(|c| c.is_ascii_uppercase()) {
        return Err(FrameError::BadMessage("bad method"));
    }
    if !target.starts_with('/') {
        return Err(FrameError::BadMessage("bad target"));
    }
    let (path, query) = crate::http::split_target(target);
    Ok(Request { method: method.to_owned(), path, query, headers, body })
}

/// Reads the response of a `RESP` frame.
pub fn parse_response(bytes: &[u8]) -> Result<Response, FrameError> {
    let (start, headers, body) = split_message(bytes)?;
    let mut w = start.splitn(3, ' ');
    let (Some("HTTP/1.1"), Some(code)) = (w.next(), w.next()) else {
        return Err(FrameError::BadMessage("bad status line"));
    };
    let status = code
        .parse::<u16>()
        .ok()
        .filter(|s| (100..=599).contains(s))
        .ok_or(FrameError::BadMessage("bad status"))?;
    Ok(Response { status, headers, body })
}
