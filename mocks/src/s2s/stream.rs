//! The S2S stream engine: one state machine for the three roles of [`super`].

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use uclab_proto::dialback;
use uclab_proto::jid;
use uclab_proto::xmpp::{self, Element, Frame, Framer};

use super::{Action, Auth, IDLE, MAX_QUEUE, MAX_STANZAS_PER_SECOND, S2sConfig, SETUP_DEADLINE};

mod inbound;

const NS_SERVER: &str = "jabber:server";
const NS_DIALBACK: &str = "jabber:server:dialback";
const NS_DIALBACK_FEATURE: &str = "urn:xmpp:features:dialback";
const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
/// Longest dialback key taken from a peer (a hex HMAC-SHA256 is 64 characters).
const MAX_KEY: usize = 256;
/// SASL attempts an inbound peer gets (RFC 6120 §6.4.5: "at least 2 and no more than 5").
const MAX_SASL_TRIES: u8 = 3;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Role {
    /// The initiating server (XEP-0220's Initiating Server).
    Outbound,
    /// A peer's connection to us: receiving server, and authoritative for `<db:verify/>`.
    Inbound {
        /// The id the caller gave; restarted streams get `{base}-2`, `{base}-3`.
        base: String,
    },
    /// A connection to an authoritative server to check one key (XEP-0220 §2.1.2).
    Verifier {
        /// The stream id the key is bound to.
        id: String,
        /// The key to check.
        key: String,
    },
}

/// Where the stream is; named after the element awaited (RFC 6120 §4-§6, XEP-0220 steps).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Stage {
    /// The peer's stream header (after connecting, STARTTLS or SASL success).
    ExpectHeader,
    /// Initiating: the peer's `<stream:features/>`.
    ExpectFeatures,
    /// Initiating: `<proceed/>` after our `<starttls/>`.
    ExpectProceed,
    /// The TLS handshake: nothing on the stream until [`Stream::handle_tls`].
    Handshake,
    /// Outbound: `<success/>` or `<failure/>` after our `<auth mechanism='EXTERNAL'>`.
    ExpectSaslOutcome,
    /// Outbound: the `<db:result type=…/>` of XEP-0220 step 4.
    ExpectDialbackResult,
    /// Verifier: the `<db:verify type=…/>` of XEP-0220 step 3.
    ExpectVerifyResult,
    /// Inbound: features sent, the peer negotiates (STARTTLS, SASL or dialback).
    Negotiating,
    /// Inbound: the key of `domain` → `to` is being checked (XEP-0220 steps 2 and 3).
    Verifying {
        /// The sender domain.
        domain: String,
        /// Our target domain.
        to: String,
    },
    /// Authenticated: stanzas flow.
    Established,
    /// Over.
    Done,
}

/// The engine's deadlines (one armed timer each; spurious wake-ups do nothing).
#[derive(Clone, Copy, Debug)]
enum Timer {
    /// Authenticated within [`SETUP_DEADLINE`] of the start.
    Setup,
    /// A stanza within [`IDLE`] of the last one.
    Idle,
}

impl Timer {
    const ALL: [Self; 2] = [Self::Setup, Self::Idle];
}

#[derive(Clone, Debug, Default)]
struct TimerTable([Option<Duration>; 2]);

impl TimerTable {
    fn set(&mut self, t: Timer, at: Duration) {
        self.0[t as usize] = Some(at);
    }
    fn stop(&mut self, t: Timer) {
        self.0[t as usize] = None;
    }
    fn due(&self, t: Timer, now: Duration) -> bool {
        self.0[t as usize].is_some_and(|at| at <= now)
    }
    fn next(&self) -> Option<Duration> {
        self.0.iter().flatten().min().copied()
    }
}

/// One S2S connection's XMPP state (see [`super`] for the roles and the contract).
#[derive(Debug)]
pub struct Stream {
    cfg: Rc<S2sConfig>,
    role: Role,
    stage: Stage,
    framer: Framer,
    /// Framer restarts so far: frames of an older stream are dropped (RFC 6120 §5.4.3.3).
    restarts: u32,
    /// Our domain on this stream (inbound: the header's `to`, once read), lower case.
    local: String,
    /// The peer's domain (inbound: what its header claims, maybe nothing), lower case.
    peer: String,
    /// The stream id: inbound, the one we gave last; initiating, the peer's.
    id: String,
    /// Inbound: stream headers answered.
    headers: u32,
    /// TLS is up.
    tls: bool,
    /// Inbound: the names of the peer's client certificate; initiating: of the server's.
    cert_names: Vec<String>,
    /// The peer's features offered dialback.
    peer_dialback: bool,
    /// SASL succeeded; authentication completes on the restarted stream.
    sasl_done: bool,
    sasl_failures: u8,
    /// The authenticated remote domain.
    remote: Option<String>,
    /// We have written a header on the current stream.
    stream_open: bool,
    queue: VecDeque<Element>,
    /// Outbound: why it ended (later stanzas are bounced with it).
    failed: Option<String>,
    /// Verifier: `Verified` was given.
    answered: bool,
    timers: TimerTable,
    /// Start of the current one-second window and elements received in it.
    window: (Duration, u32),
    out: VecDeque<Action>,
}

impl Stream {
    fn new(cfg: Rc<S2sConfig>, role: Role, now: Duration) -> Self {
        let mut timers = TimerTable::default();
        timers.set(Timer::Setup, now + SETUP_DEADLINE);
        Self {
            cfg,
            role,
            stage: Stage::ExpectHeader,
            framer: Framer::new(),
            restarts: 0,
            local: String::new(),
            peer: String::new(),
            id: String::new(),
            headers: 0,
            tls: false,
            cert_names: Vec::new(),
            peer_dialback: false,
            sasl_done: false,
            sasl_failures: 0,
            remote: None,
            stream_open: false,
            queue: VecDeque::new(),
            failed: None,
            answered: false,
            timers,
            window: (now, 0),
            out: VecDeque::new(),
        }
    }

    /// We initiate a stream from `local` to `remote` to send stanzas (the originating server).
    pub fn outbound(cfg: Rc<S2sConfig>, local: &str, remote: &str, now: Duration) -> Self {
        let mut s = Self::new(cfg, Role::Outbound, now);
        s.local = local.to_ascii_lowercase();
        s.peer = remote.to_ascii_lowercase();
        s.open_stream();
        s
    }

    /// A peer connected to us; `id` is the stream id we will give it (the caller draws it from
    /// its seeded RNG).
    pub fn inbound(cfg: Rc<S2sConfig>, id: String, now: Duration) -> Self {
        Self::new(cfg, Role::Inbound { base: id }, now)
    }

    /// We connect to the authoritative server of `remote` only to verify a key (XEP-0220
    /// §2.1.2 step 3): sends `<db:verify from=local to=remote id=id>key</db:verify>`, yields
    /// [`Action::Verified`], then closes.
    pub fn verifier(
        cfg: Rc<S2sConfig>,
        local: &str,
        remote: &str,
        id: &str,
        key: &str,
        now: Duration,
    ) -> Self {
        let role = Role::Verifier { id: id.to_owned(), key: key.to_owned() };
        let mut s = Self::new(cfg, role, now);
        s.local = local.to_ascii_lowercase();
        s.peer = remote.to_ascii_lowercase();
        s.open_stream();
        s
    }

    // Getters.

    /// The authenticated remote domain, once there is one.
    pub fn remote(&self) -> Option<&str> {
        self.remote.as_deref()
    }

    /// The peer's domain: inbound, what its stream header claims (not yet authenticated),
    /// once read; initiating and verifier, the domain connected to. The I/O checks the
    /// peer's client certificate against it before [`Self::handle_tls`].
    pub fn claimed(&self) -> Option<&str> {
        (!self.peer.is_empty()).then_some(self.peer.as_str())
    }

    /// Outbound: why the stream ended, as the stanza error condition its stanzas bounce with
    /// (later ones included), if it failed.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Whether the stream is over (its connection is to be dropped).
    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }

    /// When [`Self::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.timers.next()
    }

    /// Next action.
    pub fn poll(&mut self) -> Option<Action> {
        self.out.pop_front()
    }

    // Inputs.

    /// Bytes from the peer.
    pub fn handle_bytes(&mut self, now: Duration, bytes: &[u8]) {
        if matches!(self.stage, Stage::Done | Stage::Handshake) {
            return;
        }
        let frames = match self.framer.feed(bytes) {
            Ok(f) => f,
            Err(e) => return self.stream_error(e.condition(), &e.to_string()),
        };
        let restarts = self.restarts;
        for f in frames {
            // What follows `<proceed/>` or `<success/>` belongs to a stream that is gone.
            if self.stage == Stage::Done || self.restarts != restarts {
                return;
            }
            // Until the peer is authenticated it is held to a rate; afterwards it is
            // accountable, and a presence storm across domains is legitimate traffic.
            if matches!(f, Frame::Stanza(_)) && self.remote.is_none() && self.flooded(now) {
                let why = format!("more than {MAX_STANZAS_PER_SECOND} elements in a second");
                return self.stream_error("policy-violation", &why);
            }
            match f {
                Frame::StreamOpen(h) if self.stage == Stage::ExpectHeader => {
                    self.on_header(now, &h)
                }
                Frame::StreamOpen(_) => {}
                Frame::StreamClose => self.on_close(),
                Frame::Stanza(e) if e.name == "stream:error" => self.on_stream_error(&e),
                Frame::Stanza(e) => match self.role {
                    Role::Inbound { .. } => self.inbound_element(now, e),
                    Role::Outbound | Role::Verifier { .. } => self.initiating_element(now, &e),
                },
            }
        }
    }

    /// TLS is up. `peer_names`: inbound, the DNS names of the client certificate the peer
    /// presented, if it was issued by a CA we trust (empty if none); outbound: the names of the
    /// server's certificate if it verified (empty: it did not verify, then the stream does
    /// dialback only if allowed, or fails).
    pub fn handle_tls(&mut self, _now: Duration, peer_names: Vec<String>) {
        if self.stage != Stage::Handshake {
            return;
        }
        self.tls = true;
        self.cert_names = peer_names;
        match self.role {
            Role::Inbound { .. } => self.stage = Stage::ExpectHeader,
            Role::Outbound if !self.cert_verified() && !self.cfg.dialback => {
                let why = format!("the certificate of {} did not verify", self.peer);
                self.fail("remote-connection-failed", &why);
            }
            // A verifier goes on whatever the certificate: the key check is its proof.
            Role::Outbound | Role::Verifier { .. } => self.open_stream(),
        }
    }

    /// The answer to an [`Action::Verify`].
    pub fn handle_verified(&mut self, now: Duration, domain: &str, valid: bool) {
        let Stage::Verifying { domain: d, to } = &self.stage else { return };
        if !d.eq_ignore_ascii_case(domain) {
            return;
        }
        let (d, to) = (d.clone(), to.clone());
        let kind = if valid { "valid" } else { "invalid" };
        let answer = Element::new("db:result").attr("from", &to).attr("to", &d).attr("type", kind);
        self.send_el(&answer);
        if valid {
            self.local = to;
            self.established(now, Auth::Dialback);
        } else {
            // XEP-0220 §2.2.1: a spoofing attempt; "ought to log", "MUST close the stream".
            self.stream_error("not-authorized", &format!("dialback key for {d} invalid"));
        }
    }

    /// Outbound: send a stanza (queued until authenticated, at most [`MAX_QUEUE`], beyond
    /// which the new one is bounced with `resource-constraint`). Inbound and verifier streams
    /// carry nothing our way out (S2S streams are one-way, XEP-0220 §2.3): bounced with
    /// `internal-server-error`.
    pub fn send_stanza(&mut self, now: Duration, s: Element) {
        if self.role != Role::Outbound {
            return self.out.push_back(Action::Bounce(vec![s], "internal-server-error".into()));
        }
        match self.stage {
            Stage::Done => {
                let why = self.failed.clone().unwrap_or_else(|| "remote-connection-failed".into());
                self.out.push_back(Action::Bounce(vec![s], why));
            }
            Stage::Established => self.write_stanza(now, &s),
            _ if self.queue.len() >= MAX_QUEUE => {
                self.out.push_back(Action::Bounce(vec![s], "resource-constraint".into()));
            }
            _ => self.queue.push_back(s),
        }
    }

    /// The peer closed the connection (or it failed): queued stanzas are bounced
    /// (`remote-connection-failed`).
    pub fn handle_closed(&mut self, _now: Duration) {
        if self.stage == Stage::Done {
            return;
        }
        self.log(true, "XMPP-S2S connection closed".into());
        self.finish("remote-connection-failed", None);
    }

    /// Time passed; spurious calls do nothing.
    pub fn handle_timeout(&mut self, now: Duration) {
        for t in Timer::ALL {
            if self.stage == Stage::Done || !self.timers.due(t, now) {
                continue;
            }
            self.timers.stop(t);
            match t {
                Timer::Setup => {
                    let why = format!("not authenticated within {} s", SETUP_DEADLINE.as_secs());
                    match self.role {
                        Role::Inbound { .. } => self.stream_error("connection-timeout", &why),
                        _ => self.fail("remote-server-timeout", &why),
                    }
                }
                Timer::Idle => {
                    let why = format!("idle for {} s", IDLE.as_secs());
                    self.log(false, format!("XMPP-S2S closed: {why}"));
                    self.finish("remote-connection-failed", Some("</stream:stream>"));
                }
            }
        }
    }

    // The stream.

    /// Initiating: our stream header (at the start and after each restart).
    fn open_stream(&mut self) {
        self.log(false, format!("XMPP-S2S stream from={} to={}", self.local, self.peer));
        let h = xmpp::server_stream_header(&self.local, &self.peer, None);
        self.out.push_back(Action::Send(h.into_bytes()));
        self.stream_open = true;
        self.stage = Stage::ExpectHeader;
    }

    /// A new stream on the same connection (after STARTTLS or SASL, RFC 6120 §5.4.3.3, §6.4.6).
    fn restart(&mut self, next: Stage) {
        self.framer.reset();
        self.restarts += 1;
        self.stream_open = false;
        self.stage = next;
    }

    fn on_header(&mut self, now: Duration, h: &Element) {
        if let Role::Inbound { base } = &self.role {
            let base = base.clone();
            return self.inbound_header(now, h, &base);
        }
        // What the peer sends is its own transcript line (each side writes what it sends).
        self.id = h.get("id").unwrap_or("").to_owned();
        self.stage = Stage::ExpectFeatures;
        if h.get("version").is_none() {
            // RFC 6120 §4.7.5: a pre-1.0 peer sends no features.
            self.initiating_element(now, &Element::new("stream:features"));
        }
    }

    /// An element from the peer on a stream we initiated (outbound or verifier).
    fn initiating_element(&mut self, now: Duration, e: &Element) {
        let verifier = matches!(self.role, Role::Verifier { .. });
        match (&self.stage, e.name.as_str(), ns(e)) {
            (Stage::ExpectFeatures, "stream:features", _) => self.features(now, e),
            (Stage::ExpectProceed, "proceed", Some(NS_TLS)) => {
                let name = self.peer.clone();
                self.out.push_back(Action::StartTls { server: false, name });
                self.restart(Stage::Handshake);
            }
            (Stage::ExpectProceed, "failure", Some(NS_TLS)) => {
                self.fail("remote-connection-failed", "TLS refused");
            }
            (Stage::ExpectSaslOutcome, "success", Some(NS_SASL)) => {
                self.sasl_done = true;
                self.restart(Stage::ExpectHeader);
                self.open_stream();
            }
            (Stage::ExpectSaslOutcome, "failure", Some(NS_SASL)) => {
                if self.cfg.dialback && self.peer_dialback {
                    self.start_dialback();
                } else {
                    self.fail("not-authorized", "SASL EXTERNAL refused");
                }
            }
            (Stage::ExpectDialbackResult, _, _) if dialback_kind(e) == Some("result") => {
                self.dialback_result(now, e);
            }
            (Stage::ExpectVerifyResult, _, _) if verifier && dialback_kind(e) == Some("verify") => {
                self.verify_result(e);
            }
            // Anything else (stanzas on a one-way stream, unsolicited dialback answers) is
            // ignored: it authorises nothing (XEP-0220 §4.1).
            _ => {}
        }
    }

    /// The peer's features: what to negotiate next.
    fn features(&mut self, now: Duration, f: &Element) {
        let starttls = f.elements().any(|c| c.name == "starttls" && ns(c) == Some(NS_TLS));
        let external = f.elements().filter(|c| c.name == "mechanisms" && ns(c) == Some(NS_SASL));
        let external = external.flat_map(Element::elements).any(|m| m.text().trim() == "EXTERNAL");
        self.peer_dialback =
            f.elements().any(|c| c.name == "dialback" && ns(c) == Some(NS_DIALBACK_FEATURE));
        if matches!(self.role, Role::Verifier { .. }) {
            // XEP-0220 §2.1.2 allows skipping TLS here; we take it when offered.
            return if starttls && !self.tls { self.starttls() } else { self.send_verify() };
        }
        if self.sasl_done {
            self.established(now, Auth::Sasl);
        } else if !self.tls {
            if starttls {
                self.starttls();
            } else {
                self.fail("policy-violation", "the peer offers no STARTTLS");
            }
        } else if self.cfg.sasl_external && external && self.cert_verified() {
            // RFC 6120 §6.4.2: "=" is an empty response (the authzid is our stream's from).
            let auth = Element::new("auth")
                .attr("xmlns", NS_SASL)
                .attr("mechanism", "EXTERNAL")
                .text_node("=");
            self.send_el(&auth);
            self.stage = Stage::ExpectSaslOutcome;
        } else {
            // Lenient: a server that does not advertise dialback may still speak it (the
            // namespace on its header says so, XEP-0220 §2.4.1).
            self.start_dialback();
        }
    }

    fn starttls(&mut self) {
        self.send_el(&Element::new("starttls").attr("xmlns", NS_TLS));
        self.stage = Stage::ExpectProceed;
    }

    /// XEP-0220 §2.1.1 step 1: our key, bound to the id the receiving server gave.
    fn start_dialback(&mut self) {
        if !self.cfg.dialback {
            return self.fail("not-authorized", "no authentication method in common");
        }
        let key = dialback::key(&self.cfg.secret, &self.peer, &self.local, &self.id);
        let r = Element::new("db:result").attr("from", &self.local).attr("to", &self.peer);
        self.send_el(&r.text_node(&key));
        self.stage = Stage::ExpectDialbackResult;
    }

    /// XEP-0220 §2.1.1 step 4.
    fn dialback_result(&mut self, now: Duration, e: &Element) {
        // The answer must be about our request (XEP-0220 §3.1): otherwise it is ignored.
        let about_ours = e.get("from").is_none_or(|f| f.eq_ignore_ascii_case(&self.peer))
            && e.get("to").is_none_or(|t| t.eq_ignore_ascii_case(&self.local));
        match e.get("type") {
            _ if !about_ours => {}
            Some("valid") => self.established(now, Auth::Dialback),
            // XEP-0220 §2.1.1: queued stanzas "MUST" be returned with internal-server-error.
            Some("invalid") => self.fail("internal-server-error", "dialback key refused"),
            // XEP-0220 §2.4: after a dialback error, with remote-server-timeout.
            Some("error") => self.fail("remote-server-timeout", "dialback error"),
            _ => {}
        }
    }

    /// XEP-0220 §2.1.2 step 2.
    fn send_verify(&mut self) {
        let Role::Verifier { id, key } = &self.role else { return };
        let v = Element::new("db:verify")
            .attr("from", &self.local)
            .attr("to", &self.peer)
            .attr("id", id)
            .text_node(key);
        self.send_el(&v);
        self.stage = Stage::ExpectVerifyResult;
    }

    /// XEP-0220 §2.1.2 step 3: the authoritative server's answer, if it is about our request.
    fn verify_result(&mut self, e: &Element) {
        let Role::Verifier { id, .. } = &self.role else { return };
        let ours = e.get("from").is_some_and(|f| f.eq_ignore_ascii_case(&self.peer))
            && e.get("to").is_some_and(|t| t.eq_ignore_ascii_case(&self.local))
            && e.get("id") == Some(id.as_str());
        if !ours {
            return;
        }
        let (domain, id) = (self.peer.clone(), id.clone());
        let valid = e.get("type") == Some("valid");
        self.answered = true;
        self.out.push_back(Action::Verified { domain, id, valid });
        self.finish("remote-connection-failed", Some("</stream:stream>"));
    }

    fn established(&mut self, now: Duration, auth: Auth) {
        let domain = self.peer.clone();
        let how = match auth {
            Auth::Sasl => "SASL EXTERNAL",
            Auth::Dialback => "dialback",
        };
        self.log(false, format!("XMPP-S2S authenticated {domain} by {how}"));
        self.remote = Some(domain.clone());
        self.stage = Stage::Established;
        self.timers.stop(Timer::Setup);
        self.timers.set(Timer::Idle, now + IDLE);
        self.out.push_back(Action::Authenticated { domain, auth });
        while let Some(s) = self.queue.pop_front() {
            self.write_stanza(now, &s);
        }
    }

    fn write_stanza(&mut self, now: Duration, s: &Element) {
        self.timers.set(Timer::Idle, now + IDLE);
        self.send_el(s);
    }

    fn on_close(&mut self) {
        self.log(true, "XMPP-S2S stream closed by the peer".into());
        self.finish("remote-connection-failed", Some("</stream:stream>"));
    }

    /// The peer's stream error (RFC 6120 §4.9): the stream is over.
    fn on_stream_error(&mut self, e: &Element) {
        let condition = e.elements().map(|c| c.name.as_str()).find(|n| *n != "text");
        let condition = condition.unwrap_or("undefined-condition").to_owned();
        self.log(true, format!("XMPP-S2S stream error {condition} from the peer"));
        // What queued stanzas are bounced with: the domain is not served there, or the peer
        // would not have us.
        let bounce = match condition.as_str() {
            "host-unknown" => "remote-server-not-found",
            _ => "remote-connection-failed",
        };
        self.finish(bounce, Some("</stream:stream>"));
    }

    // Outputs.

    fn log(&mut self, inbound: bool, line: String) {
        self.out.push_back(Action::Log { inbound, line });
    }

    fn send_el(&mut self, e: &Element) {
        self.log(false, format!("XMPP-S2S {}", line(e)));
        self.out.push_back(Action::Send(e.to_xml().into_bytes()));
    }

    /// An initiating stream gives up (logged), bouncing what is queued with `condition`.
    fn fail(&mut self, condition: &str, why: &str) {
        self.log(false, format!("XMPP-S2S failed: {why} ({condition})"));
        self.finish(condition, Some("</stream:stream>"));
    }

    /// Our stream error (RFC 6120 §4.9.1): a header first if we have not written one.
    fn stream_error(&mut self, condition: &str, why: &str) {
        self.log(false, format!("XMPP-S2S stream error {condition} ({why})"));
        let head = if self.stream_open {
            String::new()
        } else {
            let me = if self.local.is_empty() {
                self.cfg.domains.first().cloned().unwrap_or_default()
            } else {
                self.local.clone()
            };
            let you = if domain_ok(&self.peer) { self.peer.as_str() } else { "" };
            let id = (!self.id.is_empty()).then_some(self.id.as_str());
            xmpp::server_stream_header(&me, you, id)
        };
        let bytes = format!("{head}{}", xmpp::stream_error(condition));
        self.finish("remote-connection-failed", Some(&bytes));
    }

    /// The end: `last` written (not in the middle of a TLS handshake), queued stanzas
    /// bounced with `bounce`, a verifier's question answered `invalid`, the connection closed.
    fn finish(&mut self, bounce: &str, last: Option<&str>) {
        if self.stage == Stage::Done {
            return;
        }
        if let Some(b) = last.filter(|_| self.stage != Stage::Handshake) {
            self.out.push_back(Action::Send(b.as_bytes().to_vec()));
        }
        if !self.queue.is_empty() {
            let q: Vec<Element> = self.queue.drain(..).collect();
            self.out.push_back(Action::Bounce(q, bounce.to_owned()));
        }
        if let Role::Verifier { id, .. } = &self.role
            && !self.answered
        {
            let (domain, id) = (self.peer.clone(), id.clone());
            self.answered = true;
            self.out.push_back(Action::Verified { domain, id, valid: false });
        }
        if self.role == Role::Outbound {
            self.failed = Some(bounce.to_owned());
        }
        self.out.push_back(Action::Close);
        self.stage = Stage::Done;
        self.timers = TimerTable::default();
    }

    // Helpers.

    fn serves(&self, domain: &str) -> bool {
        !domain.is_empty() && self.cfg.domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
    }

    /// Inbound: EXTERNAL is offered when the client certificate names the claimed domain.
    fn external_offered(&self) -> bool {
        self.cfg.sasl_external && names_match(&self.cert_names, &self.peer)
    }

    /// Initiating: the server's certificate verified for the domain we connected to.
    fn cert_verified(&self) -> bool {
        names_match(&self.cert_names, &self.peer)
    }

    /// Counts an element from the peer; `true` once there are too many in one second.
    fn flooded(&mut self, now: Duration) -> bool {
        if now >= self.window.0 + Duration::from_secs(1) {
            self.window = (now, 0);
        }
        self.window.1 = self.window.1.saturating_add(1);
        self.window.1 > MAX_STANZAS_PER_SECOND
    }
}

/// Whether certificate names cover `domain` (RFC 6125 §6.4: exact, or `*.` for one label).
fn names_match(names: &[String], domain: &str) -> bool {
    !domain.is_empty()
        && names.iter().any(|n| {
            n.eq_ignore_ascii_case(domain)
                || n.strip_prefix("*.").is_some_and(|rest| {
                    domain.split_once('.').is_some_and(|(_, d)| d.eq_ignore_ascii_case(rest))
                })
        })
}

/// A domain name a peer may claim: a JID domainpart (RFC 7622), no local part or resource.
fn domain_ok(d: &str) -> bool {
    !d.is_empty() && d.len() <= 1023 && !d.contains(['@', '/']) && jid::valid_jid(d)
}

/// The domainpart of a JID, lower case.
fn jid_domain(j: &str) -> String {
    let bare = jid::bare(j);
    match bare.split_once('@') {
        Some((_, d)) => d.to_owned(),
        None => bare,
    }
}

fn ns(e: &Element) -> Option<&str> {
    e.get("xmlns")
}

/// `result` or `verify` for a dialback element (the `db:` prefix, or the namespace declared on
/// the element itself).
fn dialback_kind(e: &Element) -> Option<&'static str> {
    let local = match e.name.strip_prefix("db:") {
        Some(l) => l,
        None if ns(e) == Some(NS_DIALBACK) => e.name.as_str(),
        None => return None,
    };
    match local {
        "result" => Some("result"),
        "verify" => Some("verify"),
        _ => None,
    }
}

/// A transcript line for an element: dialback elements by their addresses and type only (the
/// key is a credential), everything else as [`xmpp::summary`] (which never includes text).
fn line(e: &Element) -> String {
    let Some(kind) = dialback_kind(e) else { return xmpp::summary(e) };
    let mut s = format!("db:{kind}");
    for k in ["type", "from", "to"] {
        if let Some(v) = e.get(k) {
            s.push_str(&format!(" {k}={v}"));
        }
    }
    s
}
