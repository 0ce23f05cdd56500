//! SIP messages (RFC 3261), sans-IO: a tolerant reader that unfolds lines, expands compact
//! header names, accepts LF-only line ends and LWS where RFC 3261 allows it, then a strict
//! check of everything the lab relies on, so that what cannot be trusted is answered with the
//! right status (400, 416, 505, …) instead of being half-understood. Stream framing
//! (Content-Length on TCP/TLS) is in [`frame`], transactions (RFC 3261 §17) in [`txn`].
//!
//! Messages keep their header values as written (after unfolding): a response copies Via,
//! From, To, Call-ID and CSeq byte for byte (§8.2.6.2), which is what peers match on. Typed
//! views of the values the lab needs (CSeq, Expires, URIs, name-addrs) are parsed on demand.
//! [`Message::to_rsip`] gives the rsip form for code that wants rsip's typed headers.

pub mod digest;
pub mod frame;
mod grammar;
pub mod txn;

pub use grammar::{
    NameAddr, Via, check_uri, is_host, is_hostport, parse_name_addr, parse_via, scheme, split_list,
};

pub use digest::md5_hex;

use std::fmt;

/// Largest message accepted (head and body), on any transport.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Most header fields accepted in one message.
pub const MAX_HEADERS: usize = 256;

/// The methods the lab's elements implement (RFC 3261, 3265, 3428, 6086, 3903, 3515, 3262, 3311).
pub const KNOWN_METHODS: &[&str] = &[
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "REGISTER",
    "INFO",
    "SUBSCRIBE",
    "NOTIFY",
    "MESSAGE",
    "PUBLISH",
    "REFER",
    "PRACK",
    "UPDATE",
];

/// Compact forms (RFC 3261 §7.3.3 and the extensions' registrations) → canonical names.
const COMPACT: &[(&str, &str)] = &[
    ("a", "Accept-Contact"),
    ("b", "Referred-By"),
    ("c", "Content-Type"),
    ("d", "Request-Disposition"),
    ("e", "Content-Encoding"),
    ("f", "From"),
    ("i", "Call-ID"),
    ("j", "Reject-Contact"),
    ("k", "Supported"),
    ("l", "Content-Length"),
    ("m", "Contact"),
    ("o", "Event"),
    ("r", "Refer-To"),
    ("s", "Subject"),
    ("t", "To"),
    ("u", "Allow-Events"),
    ("v", "Via"),
    ("x", "Session-Expires"),
    ("y", "Identity"),
];

/// Canonical spellings of the header names the lab reads or writes (names compare
/// case-insensitively, §7.3.1; written canonically they read well in transcripts).
const CANONICAL: &[&str] = &[
    "Accept",
    "Allow",
    "Authorization",
    "Call-ID",
    "Contact",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Date",
    "Event",
    "Expires",
    "From",
    "Max-Forwards",
    "Min-Expires",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "Record-Route",
    "Require",
    "Route",
    "Server",
    "Subscription-State",
    "Supported",
    "To",
    "Unsupported",
    "User-Agent",
    "Via",
    "Warning",
    "WWW-Authenticate",
];

/// Headers that must appear once at most (RFC 3261 §7.3.1: not comma lists).
const SINGLE: &[&str] =
    &["Call-ID", "CSeq", "From", "To", "Content-Length", "Max-Forwards", "Content-Type", "Expires"];

/// The first line of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// A request.
    Request {
        /// Method as written (case-sensitive, §7.1).
        method: String,
        /// Request-URI as written.
        uri: String,
    },
    /// A response.
    Response {
        /// Status code.
        code: u16,
        /// Reason phrase.
        reason: String,
    },
}

/// One header field: canonical name, value unfolded and trimmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Name (canonical spelling when known, else as written).
    pub name: String,
    /// Value.
    pub value: String,
}

/// A SIP message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Request or status line.
    pub start: Start,
    /// Header fields in order.
    pub headers: Vec<Header>,
    /// Body.
    pub body: Vec<u8>,
}

/// Why a message is refused, with the status to answer a request with (§21).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{status} {reason}")]
pub struct Rejection {
    /// Status code: 400, 416, 505, 501, ….
    pub status: u16,
    /// Why, for the reason phrase's explanation and logs.
    pub reason: String,
}

fn reject(status: u16, reason: impl Into<String>) -> Rejection {
    Rejection { status, reason: reason.into() }
}

/// A message that could not be used: the rejection, and what could be read of it (enough,
/// if it is a request with its Via, From, To, Call-ID and CSeq, to build the error response).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{rejection}")]
pub struct ParseError {
    /// What to answer.
    pub rejection: Rejection,
    /// The message as far as it could be read.
    pub partial: Option<Box<Message>>,
}

/// `token` characters (§25.1).
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

/// The long name of a compact form (`v` → `Via`).
fn compact_long(name: &str) -> Option<&'static str> {
    if name.len() != 1 {
        return None;
    }
    COMPACT.iter().find(|(c, _)| c.eq_ignore_ascii_case(name)).map(|(_, long)| *long)
}

fn canonical(name: &str) -> String {
    if let Some(long) = compact_long(name) {
        return long.to_owned();
    }
    // CANONICAL is in case-insensitive order (a test checks): a binary search, not a scan
    // (issue 19: header names were a tenth of the registrar's time under SIPp).
    match CANONICAL.binary_search_by(|c| cmp_ignoring_case(c, name)) {
        Ok(i) => CANONICAL[i].to_owned(),
        Err(_) => name.to_owned(),
    }
}

fn cmp_ignoring_case(a: &str, b: &str) -> std::cmp::Ordering {
    a.bytes().map(|c| c.to_ascii_lowercase()).cmp(b.bytes().map(|c| c.to_ascii_lowercase()))
}

/// Where the head ends: (end of head, start of body). Accepts CRLF CRLF and LF LF.
pub(crate) fn head_end(b: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\n' {
            if b.get(i + 1) == Some(&b'\n') {
                return Some((i, i + 2));
            }
            if b.get(i + 1) == Some(&b'\r') && b.get(i + 2) == Some(&b'\n') {
                return Some((i, i + 3));
            }
        }
        i += 1;
    }
    None
}

/// Reads the head: start line and unfolded header lines, names canonical.
fn read_head(head: &str) -> Result<(String, Vec<Header>), Rejection> {
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    // §7.5: empty lines before the start line are skipped.
    let start =
        lines.by_ref().find(|l| !l.is_empty()).ok_or_else(|| reject(400, "empty message"))?;
    // Lines as they are; a copy only for a folded one.
    let mut raw: Vec<std::borrow::Cow<'_, str>> = Vec::new();
    for l in lines {
        if l.starts_with([' ', '\t']) {
            let Some(prev) = raw.last_mut() else {
                return Err(reject(400, "continuation line before any header"));
            };
            let prev = prev.to_mut();
            prev.push(' ');
            prev.push_str(l.trim_start_matches([' ', '\t']));
        } else if l.is_empty() {
            continue;
        } else {
            raw.push(std::borrow::Cow::Borrowed(l));
        }
        if raw.len() > MAX_HEADERS {
            return Err(reject(400, "too many header fields"));
        }
    }
    let mut headers = Vec::with_capacity(raw.len());
    for l in raw {
        let Some((name, value)) = l.split_once(':') else {
            return Err(reject(400, format!("header line without a colon: {}", clip(&l))));
        };
        let name = name.trim_end_matches([' ', '\t']);
        if !is_token(name) {
            return Err(reject(400, format!("bad header name {:?}", clip(name))));
        }
        let value = value.trim_matches([' ', '\t']).to_owned();
        headers.push(Header { name: canonical(name), value });
    }
    Ok((start.to_owned(), headers))
}

fn clip(s: &str) -> String {
    s.chars().take(40).collect()
}

fn parse_start(line: &str) -> Result<Start, Rejection> {
    if let Some(rest) = line.strip_prefix("SIP/") {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase (§7.2).
        let (version, rest) = rest.split_once(' ').ok_or_else(|| reject(400, "bad status line"))?;
        check_version(version)?;
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let code = (code.len() == 3)
            .then(|| code.parse::<u16>().ok())
            .flatten()
            .filter(|c| (100..=699).contains(c))
            .ok_or_else(|| reject(400, format!("bad status code {:?}", clip(code))))?;
        return Ok(Start::Response { code, reason: reason.to_owned() });
    }
    // Request-Line = Method SP Request-URI SP SIP-Version CRLF: single spaces, nothing more.
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, uri, version] = parts[..] else {
        return Err(reject(400, "bad request line (Method SP Request-URI SP SIP-Version)"));
    };
    if !is_token(method) {
        return Err(reject(400, "bad method"));
    }
    let v = version.strip_prefix("SIP/").ok_or_else(|| reject(400, "bad SIP version"))?;
    check_version(v)?;
    Ok(Start::Request { method: method.to_owned(), uri: uri.to_owned() })
}

/// `2.0`, else 505 for another well-formed version, 400 for junk (§7.1, §21.5.26).
fn check_version(v: &str) -> Result<(), Rejection> {
    let ok = v.split_once('.').is_some_and(|(a, b)| {
        !a.is_empty() && !b.is_empty() && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit())
    });
    match (ok, v) {
        (true, "2.0") => Ok(()),
        (true, _) => Err(reject(505, format!("SIP/{v} not supported"))),
        (false, _) => Err(reject(400, "bad SIP version")),
    }
}

/// Reads a message: a whole UDP datagram, or one framed by [`frame::StreamFramer`].
/// A datagram's body runs to its Content-Length (octets beyond are ignored, §18.3); fewer
/// octets than it says is an error.
pub fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
    let fail = |r: Rejection, partial: Option<Message>| ParseError {
        rejection: r,
        partial: partial.map(Box::new),
    };
    if bytes.len() > MAX_MESSAGE {
        return Err(fail(reject(513, "message too large"), None));
    }
    let (head_len, body_at) = head_end(bytes).unwrap_or((bytes.len(), bytes.len()));
    let head = std::str::from_utf8(&bytes[..head_len])
        .map_err(|_| fail(reject(400, "head is not UTF-8"), None))?;
    let (start, headers) = read_head(head).map_err(|r| fail(r, None))?;
    let mut body = bytes[body_at..].to_vec();
    // Read what can be read first, so that an error can still be answered.
    let start_res = parse_start(&start);
    let provisional = Message {
        start: start_res
            .clone()
            .unwrap_or(Start::Request { method: String::new(), uri: String::new() }),
        headers,
        body: Vec::new(),
    };
    let start = match start_res {
        Ok(s) => s,
        Err(r) => {
            // A request line we cannot use is still answered when the headers a response
            // copies are there (RFC 4475 §3.1.2.8–10 want a 400, §3.1.2.16 a 505); a bad
            // status line is a response and gets nothing.
            let usable = !start.starts_with("SIP/") && provisional.has_response_headers();
            let partial = usable.then(|| {
                let method = start.split(' ').next().unwrap_or("").to_owned();
                Message {
                    start: Start::Request { method, uri: String::new() },
                    ..provisional.clone()
                }
            });
            return Err(fail(r, partial));
        }
    };
    let m = Message { start, ..provisional };
    let lens: Vec<&str> = m.all("Content-Length").collect();
    if lens.len() > 1 {
        return Err(fail(reject(400, "more than one Content-Length"), Some(m)));
    }
    if let Some(l) = lens.first() {
        let n = parse_u32(l).filter(|n| *n as usize <= MAX_MESSAGE);
        let Some(n) = n else {
            return Err(fail(reject(400, format!("bad Content-Length {:?}", clip(l))), Some(m)));
        };
        if n as usize > body.len() {
            let why = format!("Content-Length {n} is more than the {} octets of body", body.len());
            return Err(fail(reject(400, why), Some(m)));
        }
        body.truncate(n as usize);
    }
    let m = Message { body, ..m };
    match m.validate() {
        Ok(()) => Ok(m),
        Err(r) => Err(fail(r, Some(m))),
    }
}

/// Reads a message without the RFC 3261 checks of [`parse`]: what a peer that copies the
/// headers it got (an error response to a broken request) sends still reads. For logs and
/// tests.
pub fn read(bytes: &[u8]) -> Option<Message> {
    match parse(bytes) {
        Ok(m) => Some(m),
        Err(e) => {
            let mut m = *e.partial?;
            if m.body.is_empty() {
                let at = head_end(bytes).map_or(bytes.len(), |(_, b)| b);
                m.body = bytes[at..].to_vec();
            }
            Some(m)
        }
    }
}

/// 1*DIGIT that fits 32 bits.
fn parse_u32(s: &str) -> Option<u32> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
}

impl Message {
    /// A request with `method` to `uri`, no headers yet.
    pub fn request(method: &str, uri: &str) -> Self {
        let start = Start::Request { method: method.to_owned(), uri: uri.to_owned() };
        Self { start, headers: Vec::new(), body: Vec::new() }
    }

    /// The first value of header `name` (canonical or compact, any case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.all(name).next()
    }

    /// Every value of header `name`, one per header line.
    pub fn all<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
        // Names compare case-insensitively, so only a compact form needs its long name.
        let name = compact_long(name).unwrap_or(name);
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// Adds a header.
    pub fn push(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        self.headers.push(Header { name: canonical(name), value: value.into() });
        self
    }

    /// Builder form of [`Message::push`].
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        self.push(name, value);
        self
    }

    /// Replaces every value of header `name` with one.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let c = canonical(name);
        self.headers.retain(|h| !h.name.eq_ignore_ascii_case(&c));
        self.push(&c, value);
    }

    /// Removes header `name`.
    pub fn remove(&mut self, name: &str) {
        let c = canonical(name);
        self.headers.retain(|h| !h.name.eq_ignore_ascii_case(&c));
    }

    /// The request's method, or the CSeq's for a response.
    pub fn method(&self) -> Option<&str> {
        match &self.start {
            Start::Request { method, .. } => Some(method),
            Start::Response { .. } => self.cseq().map(|(_, m)| m),
        }
    }

    /// The status code of a response.
    pub fn code(&self) -> Option<u16> {
        match self.start {
            Start::Response { code, .. } => Some(code),
            Start::Request { .. } => None,
        }
    }

    /// CSeq number and method.
    pub fn cseq(&self) -> Option<(u32, &str)> {
        let v = self.get("CSeq")?;
        let (n, m) = v.split_once([' ', '\t'])?;
        Some((parse_u32(n.trim()).filter(|n| *n < 1 << 31)?, m.trim()))
    }

    /// The Call-ID.
    pub fn call_id(&self) -> Option<&str> {
        self.get("Call-ID")
    }

    /// The topmost Via.
    pub fn top_via(&self) -> Option<Via> {
        let v = self.get("Via")?;
        parse_via(split_list(v).ok()?.first()?).ok()
    }

    /// Every Via value, top first (comma lists split).
    pub fn vias(&self) -> Vec<String> {
        self.all("Via")
            .flat_map(|v| split_list(v).unwrap_or_default().into_iter().map(str::to_owned))
            .collect()
    }

    /// From, To or Contact (first) as a name-addr.
    pub fn name_addr(&self, header: &str) -> Option<NameAddr> {
        parse_name_addr(split_list(self.get(header)?).ok()?.first()?).ok()
    }

    /// The tag parameter of From or To.
    pub fn tag(&self, header: &str) -> Option<String> {
        self.name_addr(header)?.param("tag").flatten().map(str::to_owned)
    }

    /// The Expires header (delta-seconds that fit 32 bits; larger is refused by `validate`).
    pub fn expires(&self) -> Option<u32> {
        self.get("Expires").and_then(parse_u32)
    }

    fn has_response_headers(&self) -> bool {
        ["Via", "From", "To", "Call-ID", "CSeq"].iter().all(|h| self.get(h).is_some())
    }

    /// RFC 3261 checks of a request or response (after reading): required and single
    /// headers, CSeq matching the method, scalar fields in range, URIs and name-addrs.
    pub fn validate(&self) -> Result<(), Rejection> {
        for h in ["Via", "From", "To", "Call-ID", "CSeq"] {
            if self.get(h).is_none() {
                return Err(reject(400, format!("missing {h}")));
            }
        }
        for h in SINGLE {
            if self.all(h).count() > 1 {
                return Err(reject(400, format!("more than one {h}")));
            }
        }
        let cseq = self.get("CSeq").unwrap_or("");
        let (n, m) = cseq.split_once([' ', '\t']).ok_or_else(|| reject(400, "bad CSeq"))?;
        if parse_u32(n.trim()).is_none_or(|n| n >= 1 << 31) {
            return Err(reject(400, format!("CSeq number out of range: {}", clip(n))));
        }
        let m = m.trim();
        if !is_token(m) {
            return Err(reject(400, "bad CSeq method"));
        }
        if let Some(mf) = self.get("Max-Forwards")
            && parse_u32(mf).is_none_or(|v| v > 255)
        {
            return Err(reject(400, format!("bad Max-Forwards {:?}", clip(mf))));
        }
        if let Some(e) = self.get("Expires")
            && parse_u32(e).is_none()
        {
            return Err(reject(400, format!("bad Expires {:?}", clip(e))));
        }
        for v in self.vias() {
            parse_via(&v)?;
        }
        for h in ["From", "To"] {
            let list = split_list(self.get(h).unwrap_or(""))?;
            if list.len() != 1 {
                return Err(reject(400, format!("more than one {h}")));
            }
            parse_name_addr(list[0])?;
        }
        for h in ["Contact", "Route", "Record-Route"] {
            for v in self.all(h) {
                for a in split_list(v)? {
                    if h == "Contact" && a == "*" {
                        continue;
                    }
                    let na = parse_name_addr(a)?;
                    if let Some(Some(e)) = na.param("expires")
                        && parse_u32(e).is_none()
                    {
                        return Err(reject(400, format!("bad Contact expires {:?}", clip(e))));
                    }
                }
            }
        }
        if let Start::Request { method, uri } = &self.start {
            if method != m {
                // An unknown method is 501 whatever the CSeq says (RFC 4475 §3.1.2.16).
                if KNOWN_METHODS.contains(&method.as_str()) {
                    return Err(reject(400, format!("CSeq method {m} does not match {method}")));
                }
            }
            check_uri(uri, true)?;
        }
        Ok(())
    }

    /// The response to this request (§8.2.6): Via, From, To (with `to_tag` added when it has
    /// none and the status is not 100), Call-ID and CSeq copied as they are.
    pub fn response(&self, code: u16, reason: &str, to_tag: Option<&str>) -> Self {
        let mut r = Self {
            start: Start::Response { code, reason: reason.to_owned() },
            headers: Vec::new(),
            body: Vec::new(),
        };
        for v in self.all("Via") {
            r.push("Via", v);
        }
        if let Some(f) = self.get("From") {
            r.push("From", f);
        }
        if let Some(t) = self.get("To") {
            let tagged = self.tag("To").is_some();
            match to_tag {
                Some(tag) if !tagged && code != 100 => r.push("To", format!("{t};tag={tag}")),
                _ => r.push("To", t),
            };
        }
        for h in ["Call-ID", "CSeq"] {
            if let Some(v) = self.get(h) {
                r.push(h, v);
            }
        }
        r
    }

    /// The message on the wire: CRLF line ends, Content-Length set to the body's length.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = String::new();
        match &self.start {
            Start::Request { method, uri } => s.push_str(&format!("{method} {uri} SIP/2.0\r\n")),
            Start::Response { code, reason } => s.push_str(&format!("SIP/2.0 {code} {reason}\r\n")),
        }
        for h in self.headers.iter().filter(|h| h.name != "Content-Length") {
            s.push_str(&h.name);
            s.push_str(": ");
            s.push_str(&h.value);
            s.push_str("\r\n");
        }
        s.push_str(&format!("Content-Length: {}\r\n\r\n", self.body.len()));
        let mut out = s.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }

    /// rsip's form of the message (its typed headers), when rsip can read it.
    pub fn to_rsip(&self) -> Result<rsip::SipMessage, rsip::Error> {
        rsip::SipMessage::try_from(self.to_bytes().as_slice())
    }

    /// One line for transcripts: `REGISTER sip:… [CSeq 1]` or `200 OK (REGISTER)`.
    pub fn summary(&self) -> String {
        match &self.start {
            Start::Request { method, uri } => format!("{method} {uri}"),
            Start::Response { code, reason } => {
                format!("{code} {reason} ({})", self.method().unwrap_or("?"))
            }
        }
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

/// A transcript line for a SIP message: `SIP REGISTER sip:… expires=3600 keep-alive (digest)`
/// or `SIP 200 OK (REGISTER)`; credentials are never shown, only that they were sent.
pub fn transcript_line(m: &Message) -> String {
    match &m.start {
        Start::Request { method, uri } => {
            let mut s = format!("SIP {method} {uri}");
            if let Some(e) = m.get("Expires") {
                s.push_str(&format!(" expires={e}"));
            }
            if m.get("Contact").is_some_and(|c| c.contains("cisco-keep-alive")) {
                s.push_str(" keep-alive");
            }
            if m.get("Authorization").is_some() {
                s.push_str(" (digest)");
            }
            s
        }
        Start::Response { code, reason } => {
            format!("SIP {code} {reason} ({})", m.method().unwrap_or("?"))
        }
    }
}

/// The standard reason phrase of a status code (§21).
pub fn reason(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        412 => "Conditional Request Failed",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        489 => "Bad Event",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        603 => "Decline",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests;
