//! XMPP stream framing and stanzas (RFC 6120), sans-IO, shared by the IM&P mock and the client.
//!
//! [`Framer`] takes bytes as they arrive and yields the stream header, each complete top-level
//! stanza and the stream close. It never buffers more than the stanza limit, never nests deeper
//! than the depth limit, and refuses what RFC 6120 §11.1 forbids in a stream (DTDs, comments,
//! processing instructions after the declaration); entities other than the five predefined ones
//! and character references do not exist. Every refusal names the stream error to send.
//!
//! Stanzas are small trees ([`Element`]) whose names and attributes are kept as written
//! (`stream:features`, `xmlns`): XMPP peers put namespaces on a handful of well-known elements,
//! and matching on the written form is enough for the two sides this lab has.

use std::fmt::Write as _;

/// Largest stanza accepted (IM&P and Prosody use similar orders of magnitude).
pub const MAX_STANZA: usize = 256 * 1024;
/// Deepest nesting accepted inside a stanza.
pub const MAX_DEPTH: usize = 32;

/// Why a stream is refused; [`XmppError::condition`] is the RFC 6120 stream error to send.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum XmppError {
    /// A stanza (or an unfinished tag) beyond [`MAX_STANZA`].
    #[error("stanza larger than {MAX_STANZA} bytes")]
    TooBig,
    /// Nesting beyond [`MAX_DEPTH`].
    #[error("stanza nested deeper than {MAX_DEPTH}")]
    TooDeep,
    /// A DTD, comment or processing instruction (RFC 6120 §11.1).
    #[error("restricted XML: {0}")]
    Restricted(&'static str),
    /// Not well-formed.
    #[error("not well-formed: {0}")]
    Malformed(String),
}

impl XmppError {
    /// The stream error condition (RFC 6120 §4.9.3) for this refusal.
    pub fn condition(&self) -> &'static str {
        match self {
            Self::TooBig => "policy-violation",
            Self::TooDeep => "policy-violation",
            Self::Restricted(_) => "restricted-xml",
            Self::Malformed(_) => "not-well-formed",
        }
    }
}

/// An XML element: name and attributes as written, children in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Element {
    /// Qualified name as written (`message`, `stream:features`).
    pub name: String,
    /// Attributes in order, values unescaped.
    pub attrs: Vec<(String, String)>,
    /// Child elements and text.
    pub children: Vec<Node>,
}

/// A child of an [`Element`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// A child element.
    Element(Element),
    /// Character data (unescaped).
    Text(String),
}

impl Element {
    /// An element with no attributes or children.
    pub fn new(name: &str) -> Self {
        Self { name: name.to_owned(), ..Self::default() }
    }

    /// Adds an attribute (builder style).
    pub fn attr(mut self, k: &str, v: &str) -> Self {
        self.attrs.push((k.to_owned(), v.to_owned()));
        self
    }

    /// Adds a child element (builder style).
    pub fn child(mut self, c: Self) -> Self {
        self.children.push(Node::Element(c));
        self
    }

    /// Adds text (builder style).
    pub fn text_node(mut self, t: &str) -> Self {
        self.children.push(Node::Text(t.to_owned()));
        self
    }

    /// An attribute's value.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.attrs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    /// Sets (or replaces) an attribute.
    pub fn set(&mut self, k: &str, v: &str) {
        match self.attrs.iter_mut().find(|(n, _)| n == k) {
            Some(a) => a.1 = v.to_owned(),
            None => self.attrs.push((k.to_owned(), v.to_owned())),
        }
    }

    /// Child elements.
    pub fn elements(&self) -> impl Iterator<Item = &Self> {
        self.children.iter().filter_map(|c| match c {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// The first child element called `name`.
    pub fn find(&self, name: &str) -> Option<&Self> {
        self.elements().find(|e| e.name == name)
    }

    /// All text directly inside, concatenated.
    pub fn text(&self) -> String {
        self.children
            .iter()
            .filter_map(|c| match c {
                Node::Text(t) => Some(t.as_str()),
                Node::Element(_) => None,
            })
            .collect()
    }

    /// The element as XML (attribute values and text escaped).
    pub fn to_xml(&self) -> String {
        let mut s = String::new();
        self.write(&mut s);
        s
    }

    fn write(&self, s: &mut String) {
        let _ = write!(s, "<{}", self.name);
        for (k, v) in &self.attrs {
            let _ = write!(s, " {k}=\"{}\"", escape(v));
        }
        if self.children.is_empty() {
            s.push_str("/>");
            return;
        }
        s.push('>');
        for c in &self.children {
            match c {
                Node::Element(e) => e.write(s),
                Node::Text(t) => s.push_str(&escape(t)),
            }
        }
        let _ = write!(s, "</{}>", self.name);
    }
}

pub use crate::text::xml_escape as escape;

/// What [`Framer::feed`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// `<stream:stream …>`: its attributes.
    StreamOpen(Element),
    /// A complete top-level stanza (or other first-level element: features, TLS, SASL).
    Stanza(Element),
    /// `</stream:stream>`.
    StreamClose,
}

/// Splits an XMPP byte stream into frames. After STARTTLS and after SASL success a new stream
/// starts: call [`Framer::reset`].
#[derive(Clone, Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
    /// Scanned up to here.
    pos: usize,
    /// 0 before the stream header, 1 inside the stream, more inside a stanza.
    depth: usize,
    /// Where the stanza under way starts.
    start: usize,
    opened: bool,
    failed: bool,
}

impl Framer {
    /// A framer waiting for a stream header.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new stream on the same connection (after STARTTLS or SASL success).
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Feeds bytes; returns the frames they complete. After an error the framer refuses
    /// everything (the stream is to be closed).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Frame>, XmppError> {
        if self.failed {
            return Err(XmppError::Malformed("stream already failed".into()));
        }
        self.buf.extend_from_slice(bytes);
        let r = self.scan();
        if r.is_err() {
            self.failed = true;
            self.buf = Vec::new();
        }
        r
    }

    fn scan(&mut self) -> Result<Vec<Frame>, XmppError> {
        let mut out = Vec::new();
        loop {
            let Some(lt) = self.buf[self.pos..].iter().position(|&b| b == b'<') else {
                self.text_before(self.buf.len())?;
                self.pos = self.buf.len();
                break;
            };
            let lt = self.pos + lt;
            self.text_before(lt)?;
            let rest = &self.buf[lt..];
            let end = match markup_end(rest)? {
                Some(n) => lt + n,
                None => {
                    self.pos = lt;
                    break;
                }
            };
            let tag = &self.buf[lt..end];
            self.pos = end;
            match tag_kind(tag) {
                Kind::Decl => {
                    if self.opened {
                        return Err(XmppError::Restricted("processing instruction"));
                    }
                }
                Kind::Pi => return Err(XmppError::Restricted("processing instruction")),
                Kind::Comment => return Err(XmppError::Restricted("comment")),
                Kind::Dtd => return Err(XmppError::Restricted("DTD")),
                Kind::CData => {
                    if self.depth < 2 {
                        return Err(XmppError::Malformed("character data outside a stanza".into()));
                    }
                }
                Kind::Close => match self.depth {
                    0 => return Err(XmppError::Malformed("close before the stream".into())),
                    1 => {
                        self.depth = 0;
                        out.push(Frame::StreamClose);
                    }
                    2 => {
                        self.depth = 1;
                        out.push(Frame::Stanza(parse_element(&self.buf[self.start..end])?));
                    }
                    _ => self.depth -= 1,
                },
                Kind::Empty => match self.depth {
                    0 => return Err(XmppError::Malformed("element before the stream".into())),
                    1 => out.push(Frame::Stanza(parse_element(tag)?)),
                    _ => {}
                },
                Kind::Open => match self.depth {
                    0 => {
                        let e = parse_open_tag(tag)?;
                        if e.name != "stream:stream" && e.name != "stream" {
                            return Err(XmppError::Malformed(format!(
                                "expected a stream header, got <{}>",
                                e.name
                            )));
                        }
                        self.opened = true;
                        self.depth = 1;
                        out.push(Frame::StreamOpen(e));
                    }
                    1 => {
                        self.start = lt;
                        self.depth = 2;
                    }
                    d if d > MAX_DEPTH => return Err(XmppError::TooDeep),
                    _ => self.depth += 1,
                },
            }
            if self.depth >= 2 && self.pos - self.start > MAX_STANZA {
                return Err(XmppError::TooBig);
            }
        }
        // Drop what is done with: everything before the stanza under way (or the unscanned tag).
        let keep = if self.depth >= 2 { self.start } else { self.pos };
        if keep > 0 {
            self.buf.drain(..keep);
            self.pos -= keep;
            self.start = self.start.saturating_sub(keep);
        }
        // A burst (75 presences in one read) does not leave every stream holding its room
        // (issue 19: 24 MB over CAP1's 3,000 clients).
        if self.buf.capacity() > 4096 && self.buf.len() < self.buf.capacity() / 4 {
            self.buf.shrink_to(self.buf.len().max(512));
        }
        let pending = if self.depth >= 2 { self.buf.len() } else { self.buf.len() - self.pos };
        if pending > MAX_STANZA {
            return Err(XmppError::TooBig);
        }
        Ok(out)
    }

    /// Text between markup: inside a stanza it is content; between stanzas only whitespace
    /// (keepalives) is allowed.
    fn text_before(&self, upto: usize) -> Result<(), XmppError> {
        if self.depth >= 2 {
            return Ok(());
        }
        if self.buf[self.pos..upto].iter().all(u8::is_ascii_whitespace) {
            Ok(())
        } else {
            Err(XmppError::Malformed("text outside a stanza".into()))
        }
    }
}

enum Kind {
    Decl,
    Pi,
    Comment,
    Dtd,
    CData,
    Close,
    Empty,
    Open,
}

fn tag_kind(tag: &[u8]) -> Kind {
    if tag.starts_with(b"<?xml ") || tag.starts_with(b"<?xml?") {
        Kind::Decl
    } else if tag.starts_with(b"<?") {
        Kind::Pi
    } else if tag.starts_with(b"<!--") {
        Kind::Comment
    } else if tag.starts_with(b"<![CDATA[") {
        Kind::CData
    } else if tag.starts_with(b"<!") {
        Kind::Dtd
    } else if tag.starts_with(b"</") {
        Kind::Close
    } else if tag.ends_with(b"/>") {
        Kind::Empty
    } else {
        Kind::Open
    }
}

/// Length of the markup starting at `s[0] == b'<'`, or `None` when it is not complete yet.
fn markup_end(s: &[u8]) -> Result<Option<usize>, XmppError> {
    let find = |pat: &[u8], from: usize| {
        s.get(from..).and_then(|r| r.windows(pat.len()).position(|w| w == pat)).map(|p| from + p)
    };
    if s.starts_with(b"<!--") {
        return Ok(find(b"-->", 4).map(|p| p + 3));
    }
    if s.starts_with(b"<![CDATA[") {
        return Ok(find(b"]]>", 9).map(|p| p + 3));
    }
    if s.starts_with(b"<?") {
        return Ok(find(b"?>", 2).map(|p| p + 2));
    }
    if s.len() < 9 && (b"<![CDATA[".starts_with(s) || b"<!--".starts_with(s)) {
        return Ok(None);
    }
    // `<!` that is neither a comment nor CDATA: a DTD (or worse); refused before reading on.
    if s.starts_with(b"<!") {
        return Err(XmppError::Restricted("DTD"));
    }
    // A tag: `>` outside quotes ends it.
    let mut quote = None;
    for (i, &b) in s.iter().enumerate().skip(1) {
        match (quote, b) {
            (None, b'"' | b'\'') => quote = Some(b),
            (Some(q), b) if b == q => quote = None,
            (None, b'>') => return Ok(Some(i + 1)),
            (None, b'<') => return Err(XmppError::Malformed("`<` inside a tag".into())),
            _ => {}
        }
    }
    Ok(None)
}

/// Parses an opening tag alone (the stream header) into an element without children.
fn parse_open_tag(tag: &[u8]) -> Result<Element, XmppError> {
    let inner = &tag[1..tag.len() - 1];
    let mut self_closed = inner.to_vec();
    self_closed.extend_from_slice(b"/");
    let mut doc = Vec::with_capacity(self_closed.len() + 2);
    doc.push(b'<');
    doc.extend_from_slice(&self_closed);
    doc.push(b'>');
    parse_element(&doc)
}

/// Parses one complete element (with its children).
pub fn parse_element(bytes: &[u8]) -> Result<Element, XmppError> {
    use quick_xml::events::Event;
    let bad = |e: &dyn std::fmt::Display| XmppError::Malformed(e.to_string());
    let mut r = quick_xml::Reader::from_reader(bytes);
    r.config_mut().check_end_names = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut buf = Vec::new();
    let push_text = |stack: &mut Vec<Element>, t: String| {
        if let Some(top) = stack.last_mut() {
            match top.children.last_mut() {
                Some(Node::Text(prev)) => prev.push_str(&t),
                _ => top.children.push(Node::Text(t)),
            }
        }
    };
    loop {
        let ev = r.read_event_into(&mut buf).map_err(|e| bad(&e))?;
        match ev {
            Event::DocType(_) => return Err(XmppError::Restricted("DTD")),
            Event::Comment(_) => return Err(XmppError::Restricted("comment")),
            Event::PI(_) => return Err(XmppError::Restricted("processing instruction")),
            Event::Start(ref s) | Event::Empty(ref s) => {
                if root.is_some() {
                    return Err(XmppError::Malformed("more than one root".into()));
                }
                let name = String::from_utf8(s.name().as_ref().to_vec()).map_err(|e| bad(&e))?;
                let mut el = Element::new(&name);
                for a in s.attributes() {
                    let a = a.map_err(|e| bad(&e))?;
                    let k = String::from_utf8(a.key.as_ref().to_vec()).map_err(|e| bad(&e))?;
                    let v = a.unescape_value().map_err(|e| bad(&e))?.into_owned();
                    el.attrs.push((k, v));
                }
                if stack.len() > MAX_DEPTH {
                    return Err(XmppError::TooDeep);
                }
                if matches!(ev, Event::Empty(_)) {
                    match stack.last_mut() {
                        Some(p) => p.children.push(Node::Element(el)),
                        None => root = Some(el),
                    }
                } else {
                    stack.push(el);
                }
            }
            Event::End(_) => {
                let el = stack.pop().ok_or_else(|| XmppError::Malformed("stray end".into()))?;
                match stack.last_mut() {
                    Some(p) => p.children.push(Node::Element(el)),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => {
                let t = t.decode().map_err(|e| bad(&e))?.into_owned();
                if stack.is_empty() {
                    if !t.trim().is_empty() {
                        return Err(XmppError::Malformed("text outside the element".into()));
                    }
                } else {
                    push_text(&mut stack, t);
                }
            }
            Event::GeneralRef(g) => {
                let t = crate::text::xml_reference(&g).map_err(XmppError::Malformed)?;
                push_text(&mut stack, t);
            }
            Event::CData(c) => {
                let t = String::from_utf8(c.to_vec()).map_err(|e| bad(&e))?;
                push_text(&mut stack, t);
            }
            Event::Eof => break,
            Event::Decl(_) => {}
        }
        buf.clear();
    }
    if !stack.is_empty() {
        return Err(XmppError::Malformed("truncated element".into()));
    }
    root.ok_or_else(|| XmppError::Malformed("no element".into()))
}

/// A one-line summary of a stanza for transcripts: its name and routing attributes, never its
/// text (SASL payloads carry passwords and tokens; bodies are private too).
pub fn summary(e: &Element) -> String {
    let mut s = e.name.clone();
    for k in ["type", "mechanism", "to", "from"] {
        if let Some(v) = e.get(k) {
            let _ = write!(s, " {k}={v}");
        }
    }
    let kids: Vec<&str> = e.elements().map(|c| c.name.as_str()).collect();
    if !kids.is_empty() {
        let _ = write!(s, " [{}]", kids.join(","));
    }
    s
}

/// The opening of a stream (what each side writes first, and again after STARTTLS and SASL).
pub fn stream_header(to_or_from: (&str, &str), id: Option<&str>) -> String {
    let (attr, host) = to_or_from;
    let id = id.map(|i| format!(" id=\"{}\"", escape(i))).unwrap_or_default();
    format!(
        "<?xml version='1.0'?><stream:stream {attr}=\"{}\"{id} version=\"1.0\" xml:lang=\"en\" \
         xmlns=\"jabber:client\" xmlns:stream=\"http://etherx.jabber.org/streams\">",
        escape(host)
    )
}

/// The opening of a server-to-server stream (RFC 6120 §4.7, issue 18): content namespace
/// `jabber:server` and the dialback prefix declared (XEP-0220 §2.4.1: declaring `xmlns:db` is
/// how a server says it speaks dialback). An empty `from` or `to` is left out.
pub fn server_stream_header(from: &str, to: &str, id: Option<&str>) -> String {
    let mut attrs = String::new();
    for (k, v) in [("from", Some(from)), ("to", Some(to)), ("id", id)] {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            let _ = write!(attrs, " {k}=\"{}\"", escape(v));
        }
    }
    format!(
        "<?xml version='1.0'?><stream:stream{attrs} version=\"1.0\" xmlns=\"jabber:server\" \
         xmlns:db=\"jabber:server:dialback\" xmlns:stream=\"http://etherx.jabber.org/streams\">"
    )
}

/// A stream error (RFC 6120 §4.9) followed by the stream close.
pub fn stream_error(condition: &str) -> String {
    format!(
        "<stream:error><{condition} xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/></stream:error></stream:stream>"
    )
}

/// SASL PLAIN initial response (RFC 4616): `authzid \0 authcid \0 password`, base64.
pub fn sasl_plain(user: &str, password: &str) -> String {
    crate::base64::encode(format!("\0{user}\0{password}").as_bytes())
}

/// CISCO-VTG-TOKEN initial response (WIRE.md): base64 of `userid=<user>@<domain>\0token=<otp>`.
pub fn sasl_vtg_token(user: &str, domain: &str, otp: &str) -> String {
    crate::base64::encode(format!("userid={user}@{domain}\0token={otp}").as_bytes())
}

/// Decodes a SASL initial response: `PLAIN` → (user, password); `CISCO-VTG-TOKEN` →
/// (user@domain, token). `None` when it is not well-formed.
pub fn sasl_decode(mechanism: &str, b64: &str) -> Option<(String, String)> {
    let raw = crate::base64::decode(b64.trim())?;
    let s = String::from_utf8(raw).ok()?;
    match mechanism {
        "PLAIN" => {
            let mut p = s.split('\0');
            let (_authz, user, pass) = (p.next()?, p.next()?, p.next()?);
            (p.next().is_none() && !user.is_empty()).then(|| (user.to_owned(), pass.to_owned()))
        }
        "CISCO-VTG-TOKEN" => {
            let (u, t) = s.split_once('\0')?;
            let user = u.strip_prefix("userid=")?;
            let token = t.strip_prefix("token=")?;
            (!user.is_empty()).then(|| (user.to_owned(), token.to_owned()))
        }
        _ => None,
    }
}

/// The authorization identity of a SASL PLAIN initial response (RFC 4616 §2: `authzid NUL
/// authcid NUL passwd`), empty when none was asked for.
pub fn sasl_plain_authzid(b64: &str) -> Option<String> {
    let raw = crate::base64::decode(b64.trim())?;
    let s = String::from_utf8(raw).ok()?;
    s.split('\0').next().map(str::to_owned)
}

/// The stanza error namespace (RFC 6120 §8.3.3).
pub const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

/// An error reply to `s` (RFC 6120 §8.3): addresses swapped, `type='error'`.
pub fn error_reply(s: &Element, kind: &str, condition: &str) -> Element {
    let mut r = Element::new(&s.name).attr("type", "error");
    for k in ["id", "from", "to"] {
        if let Some(v) = s.get(k) {
            let k = match k {
                "from" => "to",
                "to" => "from",
                k => k,
            };
            r.set(k, v);
        }
    }
    r.child(
        Element::new("error")
            .attr("type", kind)
            .child(Element::new(condition).attr("xmlns", NS_STANZAS)),
    )
}

/// [`error_reply`] with a human-readable `<text/>` saying why (RFC 6120 §8.3.2).
pub fn error_reply_text(s: &Element, kind: &str, condition: &str, text: &str) -> Element {
    let mut r = error_reply(s, kind, condition);
    if let Some(e) = r.children.iter_mut().find_map(|c| match c {
        Node::Element(e) if e.name == "error" => Some(e),
        _ => None,
    }) {
        e.children
            .push(Node::Element(Element::new("text").attr("xmlns", NS_STANZAS).text_node(text)));
    }
    r
}

/// A `urn:xmpp:delay` timestamp (XEP-0082) for `unix` after the Unix epoch.
pub fn stamp(unix: std::time::Duration) -> String {
    let secs = unix.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(f: &mut Framer, chunks: &[&[u8]]) -> Result<Vec<Frame>, XmppError> {
        let mut out = Vec::new();
        for c in chunks {
            out.extend(f.feed(c)?);
        }
        Ok(out)
    }

    #[test]
    fn frames_a_stream_byte_by_byte() {
        let s = format!(
            "{}<message to='bob@example.com' type=\"chat\"><body>hi &amp; &#233;<![CDATA[<x>]]></body></message> \n<presence/></stream:stream>",
            stream_header(("to", "example.com"), None)
        );
        let whole = all(&mut Framer::new(), &[s.as_bytes()]).unwrap();
        let mut f = Framer::new();
        let bytes: Vec<&[u8]> = s.as_bytes().chunks(1).collect();
        assert_eq!(all(&mut f, &bytes).unwrap(), whole, "chunking changes nothing");
        assert!(matches!(&whole[0], Frame::StreamOpen(e) if e.get("to") == Some("example.com")));
        let Frame::Stanza(m) = &whole[1] else { panic!("{whole:?}") };
        assert_eq!(m.name, "message");
        assert_eq!(m.find("body").unwrap().text(), "hi & \u{e9}<x>");
        assert_eq!(whole[2], Frame::Stanza(Element::new("presence")));
        assert_eq!(whole[3], Frame::StreamClose);
    }

    #[test]
    fn server_stream_header_is_jabber_server_with_dialback() {
        let h = server_stream_header("a.example", "b.example", Some("x\"1"));
        let frames = Framer::new().feed(h.as_bytes()).unwrap();
        let [Frame::StreamOpen(e)] = &frames[..] else { panic!("{frames:?}") };
        assert_eq!(e.get("from"), Some("a.example"));
        assert_eq!(e.get("to"), Some("b.example"));
        assert_eq!(e.get("id"), Some("x\"1"));
        assert_eq!(e.get("xmlns"), Some("jabber:server"));
        assert_eq!(e.get("xmlns:db"), Some("jabber:server:dialback"));
        assert_eq!(e.get("version"), Some("1.0"));
        let bare = server_stream_header("a.example", "", None);
        assert!(!bare.contains(" to=") && !bare.contains(" id="), "{bare}");
    }

    #[test]
    fn serialises_what_it_parses() {
        let e = Element::new("message")
            .attr("to", "a\"b<c")
            .child(Element::new("body").text_node("x < y & z"));
        let xml = e.to_xml();
        assert_eq!(parse_element(xml.as_bytes()).unwrap(), e);
    }

    #[test]
    fn hostile_streams_get_the_right_stream_error() {
        let head = stream_header(("to", "example.com"), None);
        let cases: Vec<(String, &str)> = vec![
            (format!("{head}<!DOCTYPE x [<!ENTITY a 'b'>]>"), "restricted-xml"),
            (format!("{head}<!-- hi -->"), "restricted-xml"),
            (format!("{head}<?pi x?>"), "restricted-xml"),
            (format!("{head}<message><body>&lol;</body></message>"), "not-well-formed"),
            // Mismatched end tags: found when the stanza completes.
            (format!("{head}<message><body></message></x>"), "not-well-formed"),
            (format!("{head}stray text"), "not-well-formed"),
            ("<message/>".to_owned(), "not-well-formed"),
            ("<html>".to_owned(), "not-well-formed"),
            (format!("{head}{}", "<a>".repeat(MAX_DEPTH + 3)), "policy-violation"),
            (
                format!("{head}<message><body>{}</body></message>", "x".repeat(MAX_STANZA + 1)),
                "policy-violation",
            ),
            (format!("{head}<message to='{}'", "x".repeat(MAX_STANZA + 1)), "policy-violation"),
        ];
        for (input, want) in cases {
            let err = Framer::new().feed(input.as_bytes()).unwrap_err();
            assert_eq!(err.condition(), want, "{err} for {:.80}", input);
        }
        // A failed framer stays failed.
        let mut f = Framer::new();
        assert!(f.feed(b"<html>").is_err());
        assert!(f.feed(head.as_bytes()).is_err());
    }

    #[test]
    fn memory_stays_bounded_under_a_slow_huge_stanza() {
        let mut f = Framer::new();
        f.feed(stream_header(("to", "e"), None).as_bytes()).unwrap();
        f.feed(b"<message><body>").unwrap();
        let chunk = vec![b'x'; 4096];
        let mut refused = false;
        for _ in 0..(MAX_STANZA / 4096 + 2) {
            if f.feed(&chunk).is_err() {
                refused = true;
                break;
            }
        }
        assert!(refused, "a stanza over the limit is refused before the limit is exceeded much");
        assert!(f.buf.capacity() <= 2 * MAX_STANZA + 8192);
    }

    #[test]
    fn sasl_wire_forms() {
        // WIRE.md test vector.
        assert_eq!(
            sasl_vtg_token("user", "server.com", "foo"),
            "dXNlcmlkPXVzZXJAc2VydmVyLmNvbQB0b2tlbj1mb28="
        );
        assert_eq!(
            sasl_decode("CISCO-VTG-TOKEN", "dXNlcmlkPXVzZXJAc2VydmVyLmNvbQB0b2tlbj1mb28="),
            Some(("user@server.com".into(), "foo".into()))
        );
        assert_eq!(
            sasl_decode("PLAIN", &sasl_plain("alice", "lab")),
            Some(("alice".into(), "lab".into()))
        );
        assert_eq!(sasl_decode("PLAIN", "!!!"), None);
        assert_eq!(sasl_decode("PLAIN", &crate::base64::encode(b"nonul")), None);
        assert_eq!(sasl_decode("X", &sasl_plain("a", "b")), None);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x: u64 = 99;
        for n in 0..2000 {
            let b: Vec<u8> = (0..(n % 200))
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    b"<>/a=\"'&; x!?-[]:"[(x % 17) as usize]
                })
                .collect();
            let mut f = Framer::new();
            let _ = f.feed(b"<stream:stream>");
            let _ = f.feed(&b);
            let _ = parse_element(&b);
        }
    }
}
