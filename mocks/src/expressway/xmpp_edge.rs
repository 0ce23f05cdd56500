//! Expressway-E's XMPP edge, one client connection on 5222 (issue 17, SPEC MRA1), sans-IO.
//!
//! E answers the start of the stream itself: the client's stream header (to a domain E serves,
//! else `host-unknown`) → features with `<starttls required/>` → `<proceed/>` and TLS with E's
//! certificate → the restarted stream's features offering SASL `CISCO-VTG-TOKEN` and `PLAIN` →
//! the client's `<auth>`. E decodes only who it names (the user must be at a served domain,
//! else SASL `not-authorized`; the password or token is for the IM&P node to check) and asks
//! for a channel to C ([`Action::Open`] `xmpp <user>@<domain>`), sending the `<auth>` as its
//! first bytes; from then on it relays. It keeps framing what the client sends all along (a
//! new [`Framer`] at each stream restart: after STARTTLS, and after `<success/>` comes back
//! from inside) so that a stanza too deep or too large, or bad XML, gets the RFC 6120 stream
//! error and the channel is closed, whatever the inside would have done.
//!
//! Inputs are the `handle_*` methods, outputs [`EdgeSession::poll`] (drain it after every
//! input) and [`EdgeSession::poll_timeout`], when [`EdgeSession::handle_timeout`] is due: TLS
//! within [`TLS_DEADLINE`] of the connection, the `<auth>` within [`SIGN_IN_DEADLINE`], the
//! inside's first answer within [`ANSWER_DEADLINE`] of the channel. A relayed stream has no
//! idle deadline (as on IM&P: the client sends no keepalive; docs/decisions.md).

use std::collections::VecDeque;
use std::time::Duration;

use uclab_proto::xmpp::{self, Element, Frame, Framer};

const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";

/// From the connection to the end of the TLS handshake (HTTP's slow-client figure).
pub const TLS_DEADLINE: Duration = crate::http::SLOW_CLIENT;
/// From the connection to the client's `<auth>` (IM&P's sign-in figure).
pub const SIGN_IN_DEADLINE: Duration = Duration::from_secs(30);
/// From the channel's opening to the inside's first bytes: E's deadline for a zone request.
pub const ANSWER_DEADLINE: Duration = super::REQUEST_DEADLINE;
/// Longest user id E carries to C (RFC 7622 bounds a localpart at 1023 bytes; the `OPEN`
/// header must fit [`super::traversal::MAX_OPEN`]).
const MAX_USER: usize = 256;

/// What the session asks its connection to do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Write these bytes to the client.
    Send(Vec<u8>),
    /// Upgrade the client's connection to TLS with E's certificate now (after `<proceed/>`).
    StartTls,
    /// Open a channel to C with this header (`xmpp carol@example.com`).
    Open(String),
    /// Carry the client's bytes to C on the channel.
    Relay(Vec<u8>),
    /// Close the channel, telling C why.
    CloseChannel(String),
    /// Close the client's connection (after writing what came before).
    Close,
    /// A transcript line: about what the client sent (`inbound`) or what E sent it.
    Log {
        /// From the client to E.
        inbound: bool,
        /// The line (never a password or token).
        line: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Stage {
    /// Plain TCP: the first stream, up to STARTTLS.
    PreTls,
    /// TLS up: the restarted stream, up to the `<auth>`.
    Tls,
    /// The channel is open and the bytes relayed.
    Inside {
        /// `user@domain` of the channel.
        user: String,
        /// The inside has answered.
        answered: bool,
        /// `<success/>` came back and the client's stream restarted.
        restarted: bool,
    },
    /// Over.
    Done,
}

/// One client connection to E's XMPP edge.
#[derive(Debug)]
pub struct EdgeSession {
    domains: Vec<String>,
    label: String,
    framer: Framer,
    stage: Stage,
    /// The served domain the client's stream is to.
    domain: Option<String>,
    /// E (or the inside) has sent the client a stream header on the current stream.
    stream_open: bool,
    next_id: u32,
    started: Duration,
    deadline: Option<(Duration, &'static str)>,
    /// The inside's last bytes, while `<success` is looked for across reads.
    tail: Vec<u8>,
    out: VecDeque<Action>,
}

impl EdgeSession {
    /// A connection accepted at `now` by E `host` serving `domains`.
    pub fn new(domains: Vec<String>, host: &str, now: Duration) -> Self {
        Self {
            domains,
            label: host.split('.').next().unwrap_or("expe").to_owned(),
            framer: Framer::new(),
            stage: Stage::PreTls,
            domain: None,
            stream_open: false,
            next_id: 0,
            started: now,
            deadline: Some((now + TLS_DEADLINE, "no TLS")),
            tail: Vec::new(),
            out: VecDeque::new(),
        }
    }

    // Getters.

    /// Whether the session is over (its connection is to be dropped).
    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }

    /// When [`Self::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.deadline.map(|d| d.0)
    }

    /// Next action.
    pub fn poll(&mut self) -> Option<Action> {
        self.out.pop_front()
    }

    // Inputs.

    /// Bytes from the client.
    pub fn handle_client(&mut self, now: Duration, bytes: &[u8]) {
        let mut rest = bytes;
        while matches!(self.stage, Stage::PreTls | Stage::Tls) && !rest.is_empty() {
            // Up to the end of the next stanza only: what follows the `<auth>` in the same
            // read is relayed as the client sent it.
            let k = self.first_stanza_end(rest).unwrap_or(rest.len());
            let pre_tls = self.stage == Stage::PreTls;
            match self.framer.feed(&rest[..k]) {
                Ok(frames) => {
                    for f in frames {
                        if self.stage == Stage::Done {
                            return;
                        }
                        self.on_frame(now, f);
                    }
                }
                Err(e) => return self.stream_error(e.condition(), &e.to_string()),
            }
            rest = &rest[k..];
            if pre_tls && self.stage == Stage::Tls {
                return; // anything after `<starttls/>` in the clear is dropped (RFC 6120 §5.4.3.3)
            }
        }
        if matches!(self.stage, Stage::Inside { .. }) && !rest.is_empty() {
            self.relay(rest);
        }
    }

    /// TLS with the client is up.
    pub fn handle_tls_up(&mut self, _now: Duration) {
        self.deadline = Some((self.started + SIGN_IN_DEADLINE, "no sign-in"));
    }

    /// Bytes from inside (C's `DATA`): to the client.
    pub fn handle_inside(&mut self, _now: Duration, bytes: &[u8]) {
        let Stage::Inside { answered, restarted, .. } = &mut self.stage else { return };
        *answered = true;
        self.deadline = None;
        if !*restarted {
            // The client restarts its stream after `<success/>` (RFC 6120 §6.4.6): E frames
            // the new stream from its header on.
            let mut seen = std::mem::take(&mut self.tail);
            seen.extend_from_slice(bytes);
            if seen.windows(8).any(|w| w == b"<success") {
                *restarted = true;
                self.framer.reset();
            } else {
                self.tail = seen[seen.len().saturating_sub(7)..].to_vec();
            }
        }
        self.out.push_back(Action::Send(bytes.to_vec()));
    }

    /// C closed the channel (or the zone went down), saying why.
    pub fn handle_channel_closed(&mut self, reason: &str) {
        let Stage::Inside { answered, .. } = self.stage else { return };
        if answered {
            // The inside's stream ended (a crashed node, a closed stream): the client sees its
            // connection end at once, as it would inside (SPEC HA1 runs through the edge).
            self.log(false, format!("XMPP-EDGE closed: inside stream ended ({reason})"));
            self.out.push_back(Action::Close);
            self.stage = Stage::Done;
        } else {
            self.refuse_inside(reason, false);
        }
    }

    /// No channel could be opened (`why`: no zone, too many channels).
    pub fn handle_no_channel(&mut self, why: &str) {
        if matches!(self.stage, Stage::Inside { .. }) {
            self.refuse_inside(why, false);
        }
    }

    /// The client closed its connection (or it broke).
    pub fn handle_eof(&mut self) {
        if matches!(self.stage, Stage::Inside { .. }) {
            self.out.push_back(Action::CloseChannel("client closed".into()));
        }
        self.stage = Stage::Done;
    }

    /// Time passed; spurious calls do nothing.
    pub fn handle_timeout(&mut self, now: Duration) {
        let Some((at, what)) = self.deadline else { return };
        if now < at {
            return;
        }
        self.deadline = None;
        match self.stage {
            Stage::Inside { .. } => self.refuse_inside("no answer from inside", true),
            Stage::Done => {}
            _ => {
                let secs = (at - self.started).as_secs();
                self.stream_error("connection-timeout", &format!("{what} within {secs} s"));
            }
        }
    }

    // The stream.

    /// The shortest prefix of `rest` after which the framer has a stanza (or an error), if
    /// any: the framer is incremental, so this is a binary search on prefix lengths.
    fn first_stanza_end(&self, rest: &[u8]) -> Option<usize> {
        let yields = |k: usize| {
            let mut f = self.framer.clone();
            f.feed(&rest[..k])
                .map_or(true, |fr| fr.iter().any(|x| !matches!(x, Frame::StreamOpen(_))))
        };
        if !yields(rest.len()) {
            return None;
        }
        let (mut lo, mut hi) = (0, rest.len()); // yields(hi), !yields(lo) (nothing from nothing)
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if yields(mid) { hi = mid } else { lo = mid }
        }
        Some(hi)
    }

    fn on_frame(&mut self, now: Duration, f: Frame) {
        match f {
            Frame::StreamOpen(h) => self.on_stream(&h),
            Frame::StreamClose => {
                self.out.push_back(Action::Send(b"</stream:stream>".to_vec()));
                self.out.push_back(Action::Close);
                self.stage = Stage::Done;
            }
            Frame::Stanza(s) if self.stage == Stage::PreTls => {
                if s.name == "starttls" && s.get("xmlns") == Some(NS_TLS) {
                    self.log(true, "XMPP-EDGE STARTTLS".into());
                    self.send_el(&Element::new("proceed").attr("xmlns", NS_TLS));
                    self.out.push_back(Action::StartTls);
                    self.framer.reset();
                    self.stream_open = false;
                    self.stage = Stage::Tls;
                } else {
                    // TLS is required: nothing else goes in the clear.
                    self.stream_error("policy-violation", &format!("<{}> before TLS", s.name));
                }
            }
            Frame::Stanza(s) => self.on_auth(now, &s),
        }
    }

    fn on_stream(&mut self, h: &Element) {
        let to = h.get("to").unwrap_or("").to_ascii_lowercase();
        let served = self.domains.iter().any(|d| d.eq_ignore_ascii_case(&to));
        if !served {
            return self.stream_error("host-unknown", &format!("stream to {to:?}"));
        }
        self.log(true, format!("XMPP-EDGE stream to {to}"));
        self.next_id += 1;
        let id = format!("{}-{}", self.label, self.next_id);
        self.out.push_back(Action::Send(xmpp::stream_header(("from", &to), Some(&id)).into()));
        self.domain = Some(to);
        self.stream_open = true;
        let features = if self.stage == Stage::PreTls {
            Element::new("starttls").attr("xmlns", NS_TLS).child(Element::new("required"))
        } else {
            // WIRE.md: the mechanisms IM&P offers; E checks neither, the node does.
            Element::new("mechanisms")
                .attr("xmlns", NS_SASL)
                .child(Element::new("mechanism").text_node("CISCO-VTG-TOKEN"))
                .child(Element::new("mechanism").text_node("PLAIN"))
        };
        self.send_el(&Element::new("stream:features").child(features));
    }

    /// Who an `<auth>` names, as `user@domain` at a served domain, or the SASL failure.
    fn auth_user(&self, s: &Element) -> Result<String, &'static str> {
        let mech = s.get("mechanism").unwrap_or("");
        let Some((who, _secret)) = xmpp::sasl_decode(mech, &s.text()) else {
            return Err(match mech {
                "PLAIN" | "CISCO-VTG-TOKEN" => "malformed-request",
                _ => "invalid-mechanism",
            });
        };
        let stream_domain = self.domain.as_deref().unwrap_or("");
        let (id, domain) = who.split_once('@').unwrap_or((&who, stream_domain));
        let fine_id = !id.is_empty()
            && id.len() <= MAX_USER
            && !id.chars().any(|c| c.is_whitespace() || c.is_control() || "/@<>&'\"".contains(c));
        let served = self.domains.iter().any(|d| d.eq_ignore_ascii_case(domain));
        if fine_id && served {
            Ok(format!("{id}@{}", domain.to_ascii_lowercase()))
        } else {
            Err("not-authorized")
        }
    }

    fn on_auth(&mut self, now: Duration, s: &Element) {
        if s.name != "auth" || s.get("xmlns") != Some(NS_SASL) {
            return self.stream_error("not-authorized", &format!("<{}> before SASL", s.name));
        }
        match self.auth_user(s) {
            Ok(user) => {
                self.out.push_back(Action::Open(format!("xmpp {user}")));
                // The `<auth>` as the first bytes inside (the same element; the password is
                // in it, so it is never written to the transcript).
                self.out.push_back(Action::Relay(s.to_xml().into_bytes()));
                self.deadline = Some((now + ANSWER_DEADLINE, "no answer from inside"));
                self.stage = Stage::Inside { user, answered: false, restarted: false };
            }
            Err(condition) => {
                let mech = s.get("mechanism").unwrap_or("");
                self.log(false, format!("XMPP-EDGE SASL failure {condition} (mechanism {mech})"));
                let f =
                    Element::new("failure").attr("xmlns", NS_SASL).child(Element::new(condition));
                self.out.push_back(Action::Send(f.to_xml().into_bytes()));
            }
        }
    }

    /// Relayed bytes, framed on their way: an error ends the stream and the channel.
    fn relay(&mut self, bytes: &[u8]) {
        let Stage::Inside { user, restarted, .. } = &self.stage else { return };
        let (user, restarted) = (user.clone(), *restarted);
        match self.framer.feed(bytes) {
            Ok(frames) => {
                // A second `<auth>` before `<success/>` must name the channel's user: the
                // channel goes to that user's home node.
                let other = frames.iter().any(|f| match f {
                    Frame::Stanza(s) if !restarted && s.name == "auth" => {
                        self.auth_user(s).is_ok_and(|u| u != user)
                    }
                    _ => false,
                });
                if other {
                    return self.stream_error("policy-violation", "<auth> for another user");
                }
                self.out.push_back(Action::Relay(bytes.to_vec()));
            }
            Err(e) => self.stream_error(e.condition(), &e.to_string()),
        }
    }

    // Outputs.

    fn log(&mut self, inbound: bool, line: String) {
        self.out.push_back(Action::Log { inbound, line });
    }

    fn send_el(&mut self, e: &Element) {
        self.log(false, format!("XMPP-EDGE {}", xmpp::summary(e)));
        self.out.push_back(Action::Send(e.to_xml().into_bytes()));
    }

    /// The channel could not be had or the inside never answered: `remote-connection-failed`
    /// (RFC 6120 §4.9.3.15).
    fn refuse_inside(&mut self, why: &str, close_channel: bool) {
        if !close_channel {
            // The channel is gone already: nothing to close.
            self.stage = Stage::Tls;
        }
        self.stream_error("remote-connection-failed", why);
    }

    fn stream_error(&mut self, condition: &str, why: &str) {
        let head = if self.stream_open {
            String::new()
        } else {
            let from = self.domain.clone().or_else(|| self.domains.first().cloned());
            xmpp::stream_header(("from", &from.unwrap_or_default()), Some("error"))
        };
        self.log(false, format!("XMPP-EDGE stream error {condition} ({why})"));
        let bytes = format!("{head}{}", xmpp::stream_error(condition)).into_bytes();
        self.out.push_back(Action::Send(bytes));
        if matches!(self.stage, Stage::Inside { .. }) {
            self.out.push_back(Action::CloseChannel(format!("stream error {condition}")));
        }
        self.out.push_back(Action::Close);
        self.stage = Stage::Done;
        self.deadline = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Duration = Duration::from_secs(100);

    fn session() -> EdgeSession {
        EdgeSession::new(vec!["example.com".into()], "expe.example.com", T0)
    }

    fn drain(s: &mut EdgeSession) -> Vec<Action> {
        std::iter::from_fn(|| s.poll()).collect()
    }

    fn sent(a: &[Action]) -> String {
        a.iter()
            .filter_map(|x| match x {
                Action::Send(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .collect()
    }

    fn header(to: &str) -> Vec<u8> {
        xmpp::stream_header(("to", to), None).into_bytes()
    }

    fn auth(mech: &str, b64: &str) -> String {
        format!("<auth xmlns='{NS_SASL}' mechanism='{mech}'>{b64}</auth>")
    }

    /// Through STARTTLS and the restarted stream's features.
    fn at_sasl() -> EdgeSession {
        let mut s = session();
        s.handle_client(T0, &header("example.com"));
        let a = drain(&mut s);
        assert!(
            sent(&a).contains("<starttls xmlns=\"urn:ietf:params:xml:ns:xmpp-tls\"><required/>")
        );
        s.handle_client(T0, format!("<starttls xmlns='{NS_TLS}'/>").as_bytes());
        let a = drain(&mut s);
        assert!(sent(&a).contains("<proceed"), "{a:?}");
        assert!(a.contains(&Action::StartTls));
        s.handle_tls_up(T0);
        s.handle_client(T0, &header("example.com"));
        let a = sent(&drain(&mut s));
        assert!(a.contains("<mechanism>CISCO-VTG-TOKEN</mechanism><mechanism>PLAIN</mechanism>"));
        s
    }

    #[test]
    fn mra1_auth_opens_a_channel_and_what_follows_is_relayed() {
        let mut s = at_sasl();
        let a = auth("PLAIN", &xmpp::sasl_plain("carol", "lab"));
        // The `<auth>` and, in the same read, the start of what comes next.
        s.handle_client(T0, format!("{a} ").as_bytes());
        let got = drain(&mut s);
        assert_eq!(got[0], Action::Open("xmpp carol@example.com".into()));
        let Action::Relay(first) = &got[1] else { panic!("{got:?}") };
        let back = xmpp::parse_element(first).unwrap();
        assert_eq!(back.get("mechanism"), Some("PLAIN"));
        assert_eq!(got[2], Action::Relay(b" ".to_vec()));
        assert!(!format!("{got:?}").contains("Log"), "nothing about the password is logged");
        // The inside answers success; the client restarts and binds through the relay.
        s.handle_inside(T0, b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
        assert!(sent(&drain(&mut s)).contains("<success"));
        assert_eq!(s.poll_timeout(), None, "a relayed stream has no deadline");
        s.handle_client(T0, &header("example.com"));
        assert!(matches!(&drain(&mut s)[..], [Action::Relay(_)]));
        s.handle_client(
            T0,
            b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>",
        );
        assert!(matches!(&drain(&mut s)[..], [Action::Relay(_)]));
        // The client leaves: the channel is closed.
        s.handle_eof();
        assert_eq!(drain(&mut s), [Action::CloseChannel("client closed".into())]);
        assert!(s.is_done());
    }

    #[test]
    fn vtg_token_users_and_bare_plain_users_are_at_a_served_domain() {
        let mut s = at_sasl();
        let tok = xmpp::sasl_vtg_token("carol", "other.example", "otp-1");
        s.handle_client(T0, auth("CISCO-VTG-TOKEN", &tok).as_bytes());
        let a = drain(&mut s);
        assert!(sent(&a).contains("<not-authorized/>"), "{a:?}");
        assert!(!a.iter().any(|x| matches!(x, Action::Open(_))));
        assert!(!format!("{a:?}").contains("otp-1"));
        // The stream stays: a second try at the right domain goes through.
        let tok = xmpp::sasl_vtg_token("Carol", "EXAMPLE.com", "otp-1");
        s.handle_client(T0, auth("CISCO-VTG-TOKEN", &tok).as_bytes());
        assert_eq!(drain(&mut s)[0], Action::Open("xmpp Carol@example.com".into()));
        for bad in [auth("DIGEST-MD5", "eA=="), auth("PLAIN", "!!")] {
            let mut s = at_sasl();
            s.handle_client(T0, bad.as_bytes());
            let a = sent(&drain(&mut s));
            assert!(
                a.contains("<invalid-mechanism/>") || a.contains("<malformed-request/>"),
                "{a}"
            );
        }
    }

    #[test]
    fn refusals_before_the_channel() {
        // Another domain.
        let mut s = session();
        s.handle_client(T0, &header("other.example"));
        let a = drain(&mut s);
        assert!(sent(&a).starts_with("<?xml"), "a header comes first: {a:?}");
        assert!(sent(&a).contains("<host-unknown"));
        assert_eq!(a.last(), Some(&Action::Close));
        // A stanza before TLS.
        let mut s = session();
        s.handle_client(T0, &header("example.com"));
        drain(&mut s);
        s.handle_client(T0, auth("PLAIN", &xmpp::sasl_plain("carol", "lab")).as_bytes());
        let a = drain(&mut s);
        assert!(sent(&a).contains("<policy-violation"), "{a:?}");
        assert!(!sent(&a).contains("<?xml"), "the stream is open already");
        assert_eq!(a.last(), Some(&Action::Close));
        // Not XML.
        let mut s = session();
        s.handle_client(T0, b"GET / HTTP/1.1\r\n\r\n");
        assert!(sent(&drain(&mut s)).contains("<not-well-formed"));
        // A DTD.
        let mut s = session();
        s.handle_client(T0, b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'b'>]>");
        assert!(sent(&drain(&mut s)).contains("<restricted-xml"));
    }

    #[test]
    fn bad_stanzas_in_the_relay_end_the_stream_and_the_channel() {
        let mut s = at_sasl();
        s.handle_client(T0, auth("PLAIN", &xmpp::sasl_plain("carol", "lab")).as_bytes());
        drain(&mut s);
        s.handle_inside(T0, b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
        s.handle_inside(T0, b"<?xml version='1.0'?><stream:stream from='example.com'>");
        drain(&mut s);
        s.handle_client(T0, &header("example.com"));
        drain(&mut s);
        let deep = format!("<message>{}", "<a>".repeat(40));
        s.handle_client(T0, deep.as_bytes());
        let a = drain(&mut s);
        assert!(sent(&a).contains("<policy-violation"), "{a:?}");
        assert!(!sent(&a).contains("<?xml"), "the inside's header is the stream's");
        assert!(a.contains(&Action::CloseChannel("stream error policy-violation".into())));
        assert!(!a.iter().any(|x| matches!(x, Action::Relay(_))), "not relayed");
        assert_eq!(a.last(), Some(&Action::Close));
    }

    #[test]
    fn a_second_auth_for_another_user_is_refused() {
        let mut s = at_sasl();
        s.handle_client(T0, auth("PLAIN", &xmpp::sasl_plain("carol", "x")).as_bytes());
        drain(&mut s);
        s.handle_inside(
            T0,
            b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>",
        );
        drain(&mut s);
        s.handle_client(T0, auth("PLAIN", &xmpp::sasl_plain("carol", "lab")).as_bytes());
        assert!(matches!(&drain(&mut s)[..], [Action::Relay(_)]), "the same user may try again");
        s.handle_client(T0, auth("PLAIN", &xmpp::sasl_plain("alice", "lab")).as_bytes());
        assert!(sent(&drain(&mut s)).contains("<policy-violation"));
    }

    #[test]
    fn the_inside_closing_or_failing() {
        // Before it answered: remote-connection-failed.
        let mut s = at_sasl();
        s.handle_client(T0, auth("PLAIN", &xmpp::sasl_plain("carol", "lab")).as_bytes());
        drain(&mut s);
        s.handle_channel_closed("imp1.example.com: connection refused");
        let a = drain(&mut s);
        assert!(sent(&a).contains("<remote-connection-failed"), "{a:?}");
        assert!(sent(&a).ends_with("</stream:stream>"));
        assert!(!a.iter().any(|x| matches!(x, Action::CloseChannel(_))), "C closed it already");
        // No zone at all: the same.
        let mut s = at_sasl();
        s.handle_client(T0, auth("PLAIN", &xmpp::sasl_plain("carol", "lab")).as_bytes());
        drain(&mut s);
        s.handle_no_channel("no traversal zone");
        assert!(sent(&drain(&mut s)).contains("<remote-connection-failed"));
        // After it answered: the client's connection closes at once, nothing sent.
        let mut s = at_sasl();
        s.handle_client(T0, auth("PLAIN", &xmpp::sasl_plain("carol", "lab")).as_bytes());
        drain(&mut s);
        s.handle_inside(T0, b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
        drain(&mut s);
        s.handle_channel_closed("connection reset");
        let a = drain(&mut s);
        assert!(matches!(&a[..], [Action::Log { .. }, Action::Close]), "{a:?}");
    }

    #[test]
    fn deadlines_tls_sign_in_and_the_inside_answer() {
        let mut s = session();
        assert_eq!(s.poll_timeout(), Some(T0 + TLS_DEADLINE));
        s.handle_timeout(T0 + Duration::from_secs(1));
        assert!(drain(&mut s).is_empty(), "spurious: nothing");
        s.handle_timeout(T0 + TLS_DEADLINE);
        let a = drain(&mut s);
        assert!(sent(&a).contains("<connection-timeout"), "{a:?}");
        assert!(s.is_done());
        let mut s = at_sasl();
        assert_eq!(s.poll_timeout(), Some(T0 + SIGN_IN_DEADLINE));
        let t = T0 + Duration::from_secs(5);
        s.handle_client(t, auth("PLAIN", &xmpp::sasl_plain("carol", "lab")).as_bytes());
        drain(&mut s);
        assert_eq!(s.poll_timeout(), Some(t + ANSWER_DEADLINE));
        s.handle_timeout(t + ANSWER_DEADLINE);
        let a = drain(&mut s);
        assert!(sent(&a).contains("<remote-connection-failed"), "{a:?}");
        assert!(a.contains(&Action::CloseChannel("stream error remote-connection-failed".into())));
    }
}
