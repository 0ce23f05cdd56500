//! SDP (RFC 4566) as the lab reads it: the session's and each media section's `c=` lines, the
//! `m=` lines with their formats, and the attributes. One parser for the softphone and the
//! call manager's conference bridge; each takes the view of the body it needs.

/// One `m=` section.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Media {
    /// `audio`, `video`, …
    pub kind: String,
    /// The port (0 for a refused stream, and for one that does not parse).
    pub port: u16,
    /// The transport protocol (`RTP/AVP` when absent).
    pub proto: String,
    /// The formats (payload types), as written.
    pub formats: Vec<String>,
    /// The addresses of this section's `c=IN IP4` lines, in order, as written.
    pub addrs: Vec<String>,
    /// The section's attributes (`a=` lines without the `a=`), in order.
    pub attrs: Vec<String>,
}

impl Media {
    /// The payload types that parse as numbers, in the offer's order of preference.
    pub fn payload_types(&self) -> Vec<u8> {
        self.formats.iter().filter_map(|p| p.parse().ok()).collect()
    }

    /// Whether the stream is active (a port other than 0).
    pub fn active(&self) -> bool {
        self.port != 0
    }
}

/// A session description.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sdp {
    /// The addresses of the session-level `c=IN IP4` lines, in order, as written.
    pub addrs: Vec<String>,
    /// The media sections in order.
    pub media: Vec<Media>,
}

impl Sdp {
    /// Parses `text` line by line; what it does not know it skips, so any text gives an answer.
    pub fn parse(text: &str) -> Self {
        let mut s = Self::default();
        for l in text.lines().map(str::trim_end) {
            if let Some(c) = l.strip_prefix("c=IN IP4 ") {
                let addr = c.split('/').next().unwrap_or("").trim().to_owned();
                match s.media.last_mut() {
                    Some(m) => m.addrs.push(addr),
                    None => s.addrs.push(addr),
                }
            } else if let Some(m) = l.strip_prefix("m=") {
                let mut w = m.split_whitespace();
                let kind = w.next().unwrap_or("").to_owned();
                let port = w.next().and_then(|p| p.parse::<u16>().ok()).unwrap_or(0);
                let proto = w.next().unwrap_or("RTP/AVP").to_owned();
                let formats = w.map(str::to_owned).collect();
                s.media.push(Media { kind, port, proto, formats, ..Media::default() });
            } else if let Some(a) = l.strip_prefix("a=")
                && let Some(m) = s.media.last_mut()
            {
                m.attrs.push(a.to_owned());
            }
        }
        s
    }

    /// Every `c=` address in the order written, session and media sections alike.
    pub fn all_addrs(&self) -> impl Iterator<Item = &str> {
        // Session-level lines come before the first m= line, so this is document order.
        self.addrs.iter().chain(self.media.iter().flat_map(|m| &m.addrs)).map(String::as_str)
    }
}

/// `text` with every `c=IN IP4` address and the `o=` line's address set to `addr`, and the
/// port of the `i`th `m=` line set to `ports[i]` where that stream is active (a refused stream
/// keeps port 0); everything else as written. What a media relay does to the SDP it carries
/// (issue 17: Expressway-C puts itself or Expressway-E in the path).
pub fn relay(text: &str, addr: &str, ports: &[u16]) -> String {
    let mut out = String::with_capacity(text.len() + 32);
    let mut m = 0;
    for line in text.split_inclusive('\n') {
        let (body, end) = match line.strip_suffix("\r\n") {
            Some(b) => (b, "\r\n"),
            None => match line.strip_suffix('\n') {
                Some(b) => (b, "\n"),
                None => (line, ""),
            },
        };
        if body.starts_with("c=IN IP4 ") {
            out.push_str(&format!("c=IN IP4 {addr}{end}"));
        } else if body.starts_with("o=") && body.contains(" IN IP4 ") {
            let head = body.rsplit_once(' ').map_or(body, |(h, _)| h);
            out.push_str(&format!("{head} {addr}{end}"));
        } else if let Some(rest) = body.strip_prefix("m=") {
            let mut w = rest.splitn(3, ' ');
            let (kind, port, tail) = (w.next().unwrap_or(""), w.next().unwrap_or(""), w.next());
            let new = match (port.parse::<u16>(), ports.get(m)) {
                (Ok(p), Some(n)) if p != 0 => n.to_string(),
                _ => port.to_owned(),
            };
            m += 1;
            match tail {
                Some(t) => out.push_str(&format!("m={kind} {new} {t}{end}")),
                None if port.is_empty() => out.push_str(line),
                None => out.push_str(&format!("m={kind} {new}{end}")),
            }
        } else {
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_rewrites_addresses_and_active_ports_only() {
        let offer = "v=0\r\no=- 1 1 IN IP4 203.0.113.100\r\ns=-\r\nc=IN IP4 203.0.113.100\r\nt=0 0\r\nm=audio 19116 RTP/AVP 0 101\r\na=sendrecv\r\nm=video 0 RTP/AVP 97\r\nm=video 24576 RTP/AVP 97\r\nc=IN IP4 203.0.113.100\r\n";
        let out = relay(offer, "10.1.0.30", &[36000, 36002, 36004]);
        let s = Sdp::parse(&out);
        assert_eq!(s.all_addrs().collect::<Vec<_>>(), ["10.1.0.30", "10.1.0.30"]);
        assert_eq!(s.media.iter().map(|m| m.port).collect::<Vec<_>>(), [36000, 0, 36004]);
        assert!(out.contains("o=- 1 1 IN IP4 10.1.0.30\r\n"));
        assert!(out.contains("a=sendrecv\r\n"));
        // Garbage stays garbage, and no panic.
        assert_eq!(relay("m=\nc=IN IP4 \n", "x", &[]), "m=\nc=IN IP4 x\n");
    }

    #[test]
    fn sections_addresses_and_attributes() {
        let s = Sdp::parse(
            "v=0\r\nc=IN IP4 10.0.0.1/127\r\nt=0 0\r\nm=audio 16384 RTP/AVP 0 101\r\n\
             c=IN IP4 10.0.0.2\r\na=rtpmap:101 telephone-event/8000\r\na=sendonly\r\n\
             m=video 0 RTP/AVP 126\r\nm=audio x\r\n",
        );
        assert_eq!(s.addrs, ["10.0.0.1"]);
        assert_eq!(s.media.len(), 3);
        assert_eq!(s.media[0].payload_types(), [0, 101]);
        assert_eq!(s.media[0].addrs, ["10.0.0.2"]);
        assert_eq!(s.media[0].attrs, ["rtpmap:101 telephone-event/8000", "sendonly"]);
        assert!(!s.media[1].active());
        assert_eq!((s.media[2].port, s.media[2].proto.as_str()), (0, "RTP/AVP"));
        assert_eq!(s.all_addrs().collect::<Vec<_>>(), ["10.0.0.1", "10.0.0.2"]);
    }

    #[test]
    fn garbage_gives_an_empty_description() {
        assert_eq!(
            Sdp::parse("\u{0}garbage\nm=\na=x"),
            Sdp {
                addrs: vec![],
                media: vec![Media {
                    proto: "RTP/AVP".into(),
                    attrs: vec!["x".into()],
                    ..Media::default()
                }],
            }
        );
    }
}
