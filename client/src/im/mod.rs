//! The IM session engine (SPEC AU4, HA1 state names, IMP1), sans-IO.
//!
//! After a UDS sign-in whose authenticator is IM&P: EPAS SOAP `login` at the first IM&P server
//! of the service profile (`SOAPCONNECT_P`; the second, `SOAPCONNECT_S`, when the first cannot
//! be reached), `get-all-config` for the presence domain and the user's primary and secondary
//! nodes, `get-onetime-password`, then XMPP to the primary (`XMPPCONNECT_P`, else the
//! secondary with a new one-time password, `XMPPCONNECT_S`): STARTTLS with the certificate
//! checked against the presence domain, SASL `CISCO-VTG-TOKEN`, resource binding, initial
//! presence → `XMPPCONNECTED`. Wrong credentials are one clear failure; nothing is retried.
//!
//! SPEC HA1 failover: losing the XMPP connection → `FAILOVER`; after the re-login wait of
//! SPEC HA2 (drawn from the seed between the server's lower and upper limits) the SOAP session
//! is tried again at the first server (`SOAPCONNECT_SESSION_P`), else the second
//! (`SOAPCONNECT_SESSION_S`); if neither, `FAILOVER` again and a fresh login (`SOAPCONNECT_P`,
//! `SOAPCONNECT_S`); if neither, the session stops until the user signs in again. From SOAP
//! the current primary and secondary are read again (they change during failover), then
//! `XMPPCONNECT_P`, else `XMPPCONNECT_S`, → `XMPPCONNECTED`, or stop.
//!
//! Polling order: after each `handle_*` call drain [`ImSession::poll_output`], then sleep until
//! [`ImSession::poll_timeout`] and call [`ImSession::handle_timeout`].

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use uclab_proto::dns::QType;
use uclab_proto::soap;
use uclab_proto::xmpp::{self, Element, Frame, Framer};

use crate::Time;
use crate::event::{ClientEvent, Ha1State};
use crate::io::{ConnId, HttpId, HttpReq, HttpResp, Input, Output, Owner};
use crate::resolver::{Dns, QueryToken, ResolverConfig};

/// EPAS SOAP port.
pub const SOAP_PORT: u16 = 8443;
/// XMPP client port.
pub const XMPP_PORT: u16 = 5222;
/// DSCP of IM&P traffic (SPEC MEDIA2: CS3).
pub const DSCP_IMP: u8 = 24;
/// How long one step (an HTTP request, an XMPP exchange) may take.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// The client version sent at login.
const CLIENT_VERSION: &str = "uclab-1";
const NS_ROSTER: &str = "jabber:iq:roster";
const NS_HOSTNAME: &str = "urn:xmpp:domain-based-name:0";

/// The SASL features offer `mechanism` (only `<mechanism>` children count: IM&P puts its node
/// hints among them).
fn offers(features: &Element, mechanism: &str) -> bool {
    features
        .find("mechanisms")
        .is_some_and(|m| m.elements().any(|x| x.name == "mechanism" && x.text() == mechanism))
}
const NS_MUC: &str = "http://jabber.org/protocol/muc";
const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
const NS_MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";

/// What the user does in the IM window (SPEC IMP1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImAction {
    /// Sends a chat message (SPEC IMP2 decides which of the recipient's clients get it).
    Message {
        /// Recipient JID (bare or full).
        to: String,
        /// Body.
        body: String,
    },
    /// Asks to see a contact's presence (RFC 6121 §3.1); the server adds the contact.
    Subscribe {
        /// The contact's bare JID.
        to: String,
    },
    /// Lets someone see the user's presence: approves their request, or pre-approves it.
    Approve {
        /// Their bare JID.
        to: String,
    },
    /// Sets the user's status: `available`, `away`, `dnd`, `xa`, `chat` or `unavailable`.
    Presence {
        /// The status.
        show: String,
    },
    /// Enters a group chat room, making it if it does not exist (SPEC IMP5, XEP-0045).
    Join {
        /// Room JID (`room@conference-<node>.<domain>`).
        room: String,
        /// Nick in the room.
        nick: String,
        /// When the join makes the room: configure it persistent.
        persistent: bool,
        /// History messages asked for; the service's default (15) when `None`.
        history: Option<u32>,
    },
    /// Leaves a room.
    Leave {
        /// Room JID.
        room: String,
    },
    /// Sends a group message to a room the user is in.
    RoomMessage {
        /// Room JID.
        room: String,
        /// Body.
        body: String,
    },
}

impl ImAction {
    /// What the action is, for the event that says it could not be done.
    pub fn describe(&self) -> String {
        match self {
            Self::Message { to, .. } => format!("message to {to}"),
            Self::Subscribe { to } => format!("subscription to {to}"),
            Self::Approve { to } => format!("approval of {to}"),
            Self::Presence { show } => format!("presence {show}"),
            Self::Join { room, .. } => format!("join of {room}"),
            Self::Leave { room } => format!("leave of {room}"),
            Self::RoomMessage { room, .. } => format!("group message to {room}"),
        }
    }
}

#[derive(Debug)]
enum St {
    ResolveSoap {
        token: QueryToken,
    },
    Soap {
        op: &'static str,
        id: HttpId,
    },
    ResolveXmpp {
        token: QueryToken,
    },
    Opening,
    /// Waiting for features offering STARTTLS.
    Features,
    Proceed,
    Tls,
    /// Waiting for the SASL mechanisms.
    Mechanisms,
    Auth,
    /// Waiting for the bind feature.
    BindFeatures,
    Bind,
    Connected,
    /// HA1 `FAILOVER`: waiting out the HA2 re-login delay.
    Failover,
    Done,
}

/// How SOAP is reached (SPEC HA1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SoapMode {
    /// A fresh `login` (`SOAPCONNECT_P`/`_S`).
    Login,
    /// The existing session key (`SOAPCONNECT_SESSION_P`/`_S`), after a failover.
    Session,
}

/// One user's IM session.
#[derive(Debug)]
pub struct ImSession {
    user: String,
    password: String,
    /// Resource to bind (the device's name).
    resource: String,
    /// IM&P servers of the service profile, in order.
    servers: Vec<String>,
    soap_idx: usize,
    soap_mode: SoapMode,
    /// A failover is under way: giving up means stopping until the user signs in again.
    failing_over: bool,
    /// Direct XMPP to this server with SASL PLAIN, no SOAP (a plain XMPP server such as
    /// Prosody; `uclab probe-xmpp`).
    direct: Option<SocketAddr>,
    /// SPEC HA2 re-login limits from the server, seconds.
    relogin: (u32, u32),
    rng: ChaCha8Rng,
    soap_addr: Option<SocketAddr>,
    key: Option<String>,
    domain: String,
    /// XMPP nodes from the configuration: primary, then secondary.
    nodes: Vec<String>,
    xmpp_idx: usize,
    otp: Option<String>,
    stream: Option<ConnId>,
    framer: Framer,
    resolver: Dns,
    st: St,
    deadline: Option<Time>,
    next_http: HttpId,
    next_stream: ConnId,
    next_dns: u16,
    /// Group chat rooms joined or being joined, by room JID (lower case).
    rooms: BTreeMap<String, Room>,
    /// The effective contact source (`DirectoryServerType`); SPEC HA4 supports high
    /// availability with LDAP (`EDI`, `BDI`) and not with `UDS`.
    contact_source: String,
    /// HA4 has been reported for this sign-in.
    ha4_reported: bool,
    out: VecDeque<Output>,
}

/// A room the user is in or entering (SPEC IMP5).
#[derive(Debug)]
struct Room {
    nick: String,
    /// Configure it persistent if the join makes it.
    persistent: bool,
    /// Occupants seen before our own presence came back.
    occupants: usize,
    /// Our own presence came back: in.
    joined: bool,
}

impl ImSession {
    /// Starts the IM sign-in of `user` at the IM&P `servers` of the service profile.
    pub fn start(
        now: Time,
        (user, password, resource): (&str, &str, &str),
        servers: Vec<String>,
        resolver: Dns,
        seed: u64,
    ) -> Self {
        let mut s = Self::start_idle((user, password, resource), resolver, seed);
        s.servers = servers;
        s.soap_connect(now);
        s
    }

    fn start_idle(
        (user, password, resource): (&str, &str, &str),
        resolver: Dns,
        seed: u64,
    ) -> Self {
        Self {
            user: user.to_owned(),
            password: password.to_owned(),
            resource: resource.to_owned(),
            servers: Vec::new(),
            soap_idx: 0,
            soap_mode: SoapMode::Login,
            failing_over: false,
            direct: None,
            relogin: (120, 480),
            rng: ChaCha8Rng::seed_from_u64(seed),
            soap_addr: None,
            key: None,
            domain: String::new(),
            nodes: Vec::new(),
            xmpp_idx: 0,
            otp: None,
            stream: None,
            framer: Framer::new(),
            resolver,
            st: St::Done,
            deadline: None,
            next_http: HttpId::new(Owner::Im, 1),
            next_stream: ConnId::new(Owner::Im, 1),
            next_dns: (seed >> 24) as u16 | 1,
            rooms: BTreeMap::new(),
            contact_source: String::new(),
            ha4_reported: false,
            out: VecDeque::new(),
        }
    }

    /// The effective contact source of the configuration (SPEC CFG1, HA4).
    pub fn set_contact_source(&mut self, source: &str) {
        source.clone_into(&mut self.contact_source);
    }

    /// Signs `user` in to the XMPP server at `server` directly (no SOAP): STARTTLS checked
    /// against `domain`, SASL PLAIN with the password, binding, roster, presence. For plain
    /// XMPP servers; a lost stream is a failure, not an HA1 failover.
    pub fn direct(
        now: Time,
        (user, password, resource): (&str, &str, &str),
        domain: &str,
        server: SocketAddr,
        seed: u64,
    ) -> Self {
        let resolver = Dns::standalone(Owner::Im, ResolverConfig::new(Vec::new()));
        let mut s = Self::start_idle((user, password, resource), resolver, seed);
        s.direct = Some(server);
        s.domain = domain.to_owned();
        s.nodes = vec![server.to_string()];
        s.state(Ha1State::XMPPCONNECT_P, &server.to_string());
        let id = s.next_stream.take_next();
        s.stream = Some(id);
        s.out.push_back(Output::StreamOpen { id, to: server, dscp: DSCP_IMP });
        s.st = St::Opening;
        s.deadline = Some(now + STEP_TIMEOUT);
        s
    }

    /// Ends the session (a new sign-in, a network change): the stream is closed.
    pub fn close(&mut self) {
        if let Some(id) = self.stream.take() {
            self.out.push_back(Output::StreamClose { id });
        }
        self.st = St::Done;
        self.deadline = None;
    }

    /// Carries out what the user did in the IM window (SPEC IMP1). Only once signed in;
    /// returns whether it went out.
    pub fn act(&mut self, a: &ImAction) -> bool {
        if !matches!(self.st, St::Connected) {
            return false;
        }
        let e = match a {
            ImAction::Message { to, body } => Element::new("message")
                .attr("to", to)
                .attr("type", "chat")
                .child(Element::new("body").text_node(body)),
            ImAction::Subscribe { to } => {
                Element::new("presence").attr("to", to).attr("type", "subscribe")
            }
            ImAction::Approve { to } => {
                Element::new("presence").attr("to", to).attr("type", "subscribed")
            }
            ImAction::Presence { show } if show == "unavailable" => {
                Element::new("presence").attr("type", "unavailable")
            }
            ImAction::Presence { show } if show == "available" => Element::new("presence"),
            ImAction::Presence { show } => {
                Element::new("presence").child(Element::new("show").text_node(show))
            }
            ImAction::Join { room, nick, persistent, history } => {
                let key = room.to_ascii_lowercase();
                let r = Room {
                    nick: nick.clone(),
                    persistent: *persistent,
                    occupants: 0,
                    joined: false,
                };
                self.rooms.insert(key, r);
                let mut x = Element::new("x").attr("xmlns", NS_MUC);
                if let Some(n) = history {
                    x = x.child(Element::new("history").attr("maxstanzas", &n.to_string()));
                }
                Element::new("presence").attr("to", &format!("{room}/{nick}")).child(x)
            }
            ImAction::Leave { room } => {
                let Some(r) = self.rooms.get(&room.to_ascii_lowercase()) else { return false };
                Element::new("presence")
                    .attr("to", &format!("{room}/{}", r.nick))
                    .attr("type", "unavailable")
            }
            ImAction::RoomMessage { room, body } => Element::new("message")
                .attr("to", room)
                .attr("type", "groupchat")
                .child(Element::new("body").text_node(body)),
        };
        self.send_el(&e);
        true
    }

    /// Whether the session is signed in (XMPPCONNECTED).
    pub fn is_connected(&self) -> bool {
        matches!(self.st, St::Connected)
    }

    /// Whether the session has signed in or given up.
    pub fn is_settled(&self) -> bool {
        matches!(self.st, St::Connected | St::Done)
    }

    /// Next output.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Next deadline.
    pub fn poll_timeout(&self) -> Option<Time> {
        [self.deadline, self.resolver.poll_timeout()].into_iter().flatten().min()
    }

    fn state(&mut self, state: Ha1State, node: &str) {
        self.out.push_back(Output::Event(ClientEvent::ImState { state, node: node.to_owned() }));
    }

    fn fail(&mut self, reason: String) {
        if let Some(id) = self.stream.take() {
            self.out.push_back(Output::StreamClose { id });
        }
        self.out.push_back(Output::Event(ClientEvent::ImFailed { reason }));
        self.st = St::Done;
        self.deadline = None;
    }

    fn resolve(&mut self, now: Time, host: &str) -> QueryToken {
        let id = self.next_dns;
        self.next_dns = self.next_dns.wrapping_add(1);
        let t = self.resolver.query(now, host, QType::A, id);
        self.deadline = Some(now + STEP_TIMEOUT);
        t
    }

    /// SOAP at server `soap_idx` (HA1: `SOAPCONNECT_P`, then `SOAPCONNECT_S`).
    fn soap_connect(&mut self, now: Time) {
        let Some(host) = self.servers.get(self.soap_idx).cloned() else {
            if self.soap_mode == SoapMode::Session {
                // HA1: neither server kept the session: FAILOVER again, then a fresh login.
                let node = self.servers.first().cloned().unwrap_or_default();
                self.state(Ha1State::FAILOVER, &node);
                self.soap_mode = SoapMode::Login;
                self.soap_idx = 0;
                self.key = None;
                return self.soap_connect(now);
            }
            return self.give_up("no IM&P server reachable");
        };
        let name = match (self.soap_mode, self.soap_idx) {
            (SoapMode::Login, 0) => Ha1State::SOAPCONNECT_P,
            (SoapMode::Login, _) => Ha1State::SOAPCONNECT_S,
            (SoapMode::Session, 0) => Ha1State::SOAPCONNECT_SESSION_P,
            (SoapMode::Session, _) => Ha1State::SOAPCONNECT_SESSION_S,
        };
        self.state(name, &host);
        let token = self.resolve(now, &host);
        self.st = St::ResolveSoap { token };
        self.pump(now);
    }

    fn soap_next_server(&mut self, now: Time) {
        self.soap_idx += 1;
        if self.soap_mode == SoapMode::Login {
            self.key = None;
        }
        self.soap_connect(now);
    }

    /// Nothing reachable: at sign-in a failure; during a failover, HA1's "stop until the user
    /// signs in again".
    fn give_up(&mut self, why: &str) {
        if self.failing_over {
            self.fail(format!("{why}: stopped until the user signs in again"));
        } else {
            self.fail(why.to_owned());
        }
    }

    /// WIRE.md: IM&P may name its home and backup nodes in the SASL features
    /// (`<hostname xmlns='urn:xmpp:domain-based-name:0'>`); the transcript shows them. HA1
    /// still takes the nodes to fail over to from SOAP (they change during a failover).
    fn node_hints(&mut self, features: &Element) {
        let hosts: Vec<String> = features
            .find("mechanisms")
            .into_iter()
            .flat_map(Element::elements)
            .filter(|x| x.name == "hostname" && x.get("xmlns") == Some(NS_HOSTNAME))
            .map(|x| x.text().trim().to_owned())
            .filter(|h| !h.is_empty())
            .collect();
        if let Some((home, rest)) = hosts.split_first() {
            let e = ClientEvent::ImNodes {
                home: home.clone(),
                backup: rest.first().cloned().unwrap_or_default(),
            };
            self.out.push_back(Output::Event(e));
        }
    }

    /// HA1: the XMPP connection is lost → `FAILOVER`, and after the HA2 wait, SOAP again.
    fn failover(&mut self, now: Time) {
        // Room occupancy lives on the stream: it is gone with it. The rooms are remembered and
        // joined again once XMPPCONNECTED on the peer (as Jabber does).
        for r in self.rooms.values_mut() {
            r.joined = false;
            r.occupants = 0;
        }
        if let Some(id) = self.stream.take() {
            self.out.push_back(Output::StreamClose { id });
        }
        let node = self.nodes.get(self.xmpp_idx).cloned().unwrap_or_default();
        self.state(Ha1State::FAILOVER, &node);
        // SPEC HA4: the failover goes ahead (the product does not stop it), but the deployment
        // is outside what Cisco supports, and the transcript says so once per sign-in.
        if self.contact_source.eq_ignore_ascii_case("UDS") && !self.ha4_reported {
            self.ha4_reported = true;
            let reason = "IM&P high availability is supported with an LDAP contact source, \
                          not with DirectoryServerType UDS (SPEC HA4)";
            self.out.push_back(Output::Event(ClientEvent::ImHaUnsupported {
                contact_source: self.contact_source.clone(),
                reason: reason.into(),
            }));
        }
        let (lo, hi) = (self.relogin.0.min(self.relogin.1), self.relogin.0.max(self.relogin.1));
        let wait = Duration::from_secs(u64::from(self.rng.random_range(lo..=hi)));
        self.out.push_back(Output::Event(ClientEvent::ImRelogin { wait_s: wait.as_secs() }));
        self.failing_over = true;
        self.st = St::Failover;
        self.deadline = Some(now + wait);
    }

    fn soap(&mut self, now: Time, op: &'static str, body: String) {
        let Some(addr) = self.soap_addr else { return };
        let id = self.next_http.take_next();
        let host = self.servers[self.soap_idx].clone();
        self.out.push_back(Output::Http(HttpReq {
            id,
            addr,
            host,
            tls: true,
            method: "POST",
            path: soap::PATH.to_owned(),
            basic: None,
            headers: vec![
                ("content-type".into(), "application/soap+xml; charset=utf-8".into()),
                ("soapaction".into(), soap::action(op)),
            ],
            body: body.into_bytes(),
        }));
        self.deadline = Some(now + STEP_TIMEOUT);
        self.st = St::Soap { op, id };
    }

    fn keyed(&mut self, now: Time, op: &'static str) {
        let key = self.key.clone().unwrap_or_default();
        self.soap(now, op, soap::keyed_request(op, &key));
    }

    /// XMPP at node `xmpp_idx` of the configuration (HA1: `XMPPCONNECT_P`/`_S`).
    fn xmpp_connect(&mut self, now: Time) {
        let Some(host) = self.nodes.get(self.xmpp_idx).cloned() else {
            return self.fail("no XMPP node reachable".into());
        };
        let name =
            if self.xmpp_idx == 0 { Ha1State::XMPPCONNECT_P } else { Ha1State::XMPPCONNECT_S };
        self.state(name, &host);
        let token = self.resolve(now, &host);
        self.st = St::ResolveXmpp { token };
        self.pump(now);
    }

    /// The XMPP node failed before sign-in: the secondary, with a new one-time password.
    fn xmpp_next_node(&mut self, now: Time, why: &str) {
        if let Some(id) = self.stream.take() {
            self.out.push_back(Output::StreamClose { id });
        }
        self.framer.reset();
        self.xmpp_idx += 1;
        if self.xmpp_idx >= self.nodes.len() {
            return self.give_up(&format!("no XMPP node reachable ({why})"));
        }
        self.keyed(now, "get-onetime-password");
    }

    fn send(&mut self, xml: String, summary: String) {
        let Some(id) = self.stream else { return };
        self.out.push_back(Output::StreamSend { id, bytes: xml.into_bytes(), summary });
    }

    fn send_el(&mut self, e: &Element) {
        self.send(e.to_xml(), format!("XMPP {}", xmpp::summary(e)));
    }

    fn header(&mut self) {
        let h = xmpp::stream_header(("to", &self.domain), None);
        self.send(h, format!("XMPP stream to {}", self.domain));
    }

    /// Feeds an input.
    pub fn handle_input(&mut self, now: Time, input: Input) {
        let Some(input) = self.resolver.take_input(now, input) else {
            return self.pump(now);
        };
        match input {
            Input::Datagram { .. } | Input::Unreachable { .. } | Input::TcpAnswer { .. } => {}
            Input::Http { id, result } => self.on_http(now, id, result),
            Input::StreamOpened { id } if self.stream == Some(id) => {
                if matches!(self.st, St::Opening) {
                    self.header();
                    self.st = St::Features;
                    self.deadline = Some(now + STEP_TIMEOUT);
                }
            }
            Input::StreamFailed { id, reason } if self.stream == Some(id) => {
                if matches!(self.st, St::Connected) && self.direct.is_some() {
                    self.stream = None;
                    self.fail(format!("XMPP stream lost: {reason}"));
                } else if matches!(self.st, St::Connected) {
                    self.stream = None;
                    self.failover(now);
                } else {
                    self.xmpp_next_node(now, &reason);
                }
            }
            Input::StreamTls { id } if self.stream == Some(id) => {
                if matches!(self.st, St::Tls) {
                    self.framer.reset();
                    self.header();
                    self.st = St::Mechanisms;
                    self.deadline = Some(now + STEP_TIMEOUT);
                }
            }
            Input::StreamData { id, bytes } if self.stream == Some(id) => {
                self.on_bytes(now, &bytes)
            }
            _ => {}
        }
        self.pump(now);
    }

    /// Time passed. Spurious calls no-op.
    pub fn handle_timeout(&mut self, now: Time) {
        self.resolver.handle_timeout(now);
        if self.deadline.is_some_and(|d| d <= now) {
            match self.st {
                St::ResolveSoap { .. } | St::Soap { .. } => self.soap_next_server(now),
                St::ResolveXmpp { .. }
                | St::Opening
                | St::Features
                | St::Proceed
                | St::Tls
                | St::Mechanisms
                | St::Auth
                | St::BindFeatures
                | St::Bind => self.xmpp_next_node(now, "timeout"),
                St::Failover => {
                    // HA2 wait over: the SOAP session again, first server first.
                    self.soap_mode = SoapMode::Session;
                    self.soap_idx = 0;
                    self.xmpp_idx = 0;
                    self.soap_connect(now);
                }
                St::Connected | St::Done => self.deadline = None,
            }
        }
        self.pump(now);
    }

    fn on_http(&mut self, now: Time, id: HttpId, result: Result<HttpResp, String>) {
        let St::Soap { op, id: want } = self.st else { return };
        if id != want {
            return;
        }
        // The server cannot be talked to: the next one (HA1 SOAPCONNECT_S).
        let Ok(resp) = result else { return self.soap_next_server(now) };
        if resp.status >= 500 {
            return self.soap_next_server(now);
        }
        let parsed = match soap::parse_response(&resp.body) {
            Ok(p) => p,
            Err(e) => return self.fail(format!("SOAP {op}: {e}")),
        };
        match (op, parsed) {
            (_, soap::Response::Fault { subcode, .. }) if subcode == "AuthenticationFailed" => {
                self.fail("wrong credentials".into())
            }
            // The session did not survive (HA1): try the next server, then a fresh login.
            (_, soap::Response::Fault { subcode, .. })
                if subcode == "InvalidSession" && self.soap_mode == SoapMode::Session =>
            {
                self.soap_next_server(now)
            }
            (_, soap::Response::Fault { subcode, reason }) => {
                self.fail(format!("SOAP {op}: {subcode}: {reason}"))
            }
            ("login", soap::Response::Success(key)) => {
                self.key = Some(key);
                self.keyed(now, "get-all-config");
            }
            ("get-all-config", soap::Response::Config(params)) => {
                let get = |k: &str| {
                    params
                        .iter()
                        .find(|(n, _)| n == k)
                        .map(|(_, v)| v.clone())
                        .filter(|v| !v.is_empty())
                };
                let Some(domain) = get(soap::P_DOMAIN) else {
                    return self.fail("SOAP get-all-config: no presence domain".into());
                };
                self.domain = domain;
                let secs = |k: &str| get(k).and_then(|v| v.parse::<u32>().ok());
                if let (Some(lo), Some(hi)) =
                    (secs(soap::P_RELOGIN_LOWER), secs(soap::P_RELOGIN_UPPER))
                {
                    self.relogin = (lo, hi);
                }
                self.nodes =
                    [get(soap::P_PRIMARY), get(soap::P_SECONDARY)].into_iter().flatten().collect();
                self.keyed(now, "get-onetime-password");
            }
            ("get-onetime-password", soap::Response::Success(otp)) => {
                self.otp = Some(otp);
                self.xmpp_connect(now);
            }
            (op, other) => self.fail(format!("SOAP {op}: unexpected answer {other:?}")),
        }
    }

    fn on_bytes(&mut self, now: Time, bytes: &[u8]) {
        let frames = match self.framer.feed(bytes) {
            Ok(f) => f,
            Err(e) => {
                let why = format!("XMPP: {e}");
                return self.xmpp_next_node(now, &why);
            }
        };
        for f in frames {
            match f {
                Frame::StreamOpen(_) => {}
                Frame::StreamClose => {
                    return self.xmpp_next_node(now, "stream closed by the server");
                }
                Frame::Stanza(s) => self.on_stanza(now, s),
            }
            if matches!(self.st, St::Done) {
                return;
            }
        }
    }

    fn on_stanza(&mut self, now: Time, s: Element) {
        if s.name == "stream:error" {
            let cond = s.elements().next().map_or("undefined", |c| c.name.as_str()).to_owned();
            return self.xmpp_next_node(now, &format!("stream error {cond}"));
        }
        self.deadline = Some(now + STEP_TIMEOUT);
        match self.st {
            St::Features if s.name == "stream:features" => {
                if s.find("starttls").is_none() {
                    // TLS is required for sign-in; a server that does not offer it is refused.
                    return self.xmpp_next_node(now, "no STARTTLS offered");
                }
                self.send_el(
                    &Element::new("starttls").attr("xmlns", "urn:ietf:params:xml:ns:xmpp-tls"),
                );
                self.st = St::Proceed;
            }
            St::Proceed if s.name == "proceed" => {
                if let Some(id) = self.stream {
                    self.out.push_back(Output::StreamTls { id, host: self.domain.clone() });
                }
                self.st = St::Tls;
            }
            St::Mechanisms if s.name == "stream:features" && self.direct.is_some() => {
                self.node_hints(&s);
                let offered = offers(&s, "PLAIN");
                if !offered {
                    return self.fail("XMPP: PLAIN not offered".into());
                }
                let b64 = xmpp::sasl_plain(&self.user, &self.password);
                // The password: the summary leaves it out (and it only ever goes inside TLS).
                let xml = format!(
                    "<auth xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\" mechanism=\"PLAIN\">{b64}</auth>"
                );
                self.send(xml, "XMPP auth mechanism=PLAIN".into());
                self.st = St::Auth;
            }
            St::Mechanisms if s.name == "stream:features" => {
                self.node_hints(&s);
                let offered = offers(&s, "CISCO-VTG-TOKEN");
                if !offered {
                    return self.fail("XMPP: CISCO-VTG-TOKEN not offered".into());
                }
                let otp = self.otp.take().unwrap_or_default();
                let b64 = xmpp::sasl_vtg_token(&self.user, &self.domain, &otp);
                // The token is a password: the summary leaves it out.
                let xml = format!(
                    "<auth xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\" mechanism=\"CISCO-VTG-TOKEN\">{b64}</auth>"
                );
                self.send(xml, "XMPP auth mechanism=CISCO-VTG-TOKEN".into());
                self.st = St::Auth;
            }
            St::Auth if s.name == "success" => {
                self.framer.reset();
                self.header();
                self.st = St::BindFeatures;
            }
            St::Auth if s.name == "failure" => {
                let cond = s.elements().next().map_or("failure", |c| c.name.as_str()).to_owned();
                self.fail(format!("XMPP sign-in refused: {cond}"));
            }
            St::BindFeatures if s.name == "stream:features" => {
                let bind = Element::new("iq").attr("type", "set").attr("id", "bind1").child(
                    Element::new("bind")
                        .attr("xmlns", "urn:ietf:params:xml:ns:xmpp-bind")
                        .child(Element::new("resource").text_node(&self.resource)),
                );
                self.send_el(&bind);
                self.st = St::Bind;
            }
            St::Bind if s.name == "iq" && s.get("id") == Some("bind1") => {
                let jid = s.find("bind").and_then(|b| b.find("jid")).map(Element::text);
                match (s.get("type"), jid) {
                    (Some("result"), Some(jid)) => {
                        let node = self.nodes.get(self.xmpp_idx).cloned().unwrap_or_default();
                        self.state(Ha1State::XMPPCONNECTED, &node);
                        self.out.push_back(Output::Event(ClientEvent::ImSignedIn { jid }));
                        // RFC 6121 §2.2: the roster before initial presence.
                        let get = Element::new("iq")
                            .attr("type", "get")
                            .attr("id", "roster1")
                            .child(Element::new("query").attr("xmlns", NS_ROSTER));
                        self.send_el(&get);
                        self.send_el(&Element::new("presence"));
                        // After a failover: the rooms we were in, again (no history: what was
                        // missed is not replayed over what the user saw).
                        let rejoin: Vec<(String, String)> =
                            self.rooms.iter().map(|(k, r)| (k.clone(), r.nick.clone())).collect();
                        for (room, nick) in rejoin {
                            let x = Element::new("x")
                                .attr("xmlns", NS_MUC)
                                .child(Element::new("history").attr("maxstanzas", "0"));
                            let p = Element::new("presence")
                                .attr("to", &format!("{room}/{nick}"))
                                .child(x);
                            self.send_el(&p);
                        }
                        self.st = St::Connected;
                        self.deadline = None;
                    }
                    _ => self.fail("XMPP: resource binding refused".into()),
                }
            }
            St::Connected => {
                self.deadline = None;
                self.connected_stanza(&s);
            }
            _ => {}
        }
    }

    /// A stanza once signed in: messages, the roster and its pushes, presence, errors.
    fn connected_stanza(&mut self, s: &Element) {
        let from = s.get("from").unwrap_or("").to_owned();
        let own = self.own_bare();
        let ev = |e| Output::Event(e);
        if s.get("type") == Some("error") {
            let condition = s
                .find("error")
                .and_then(|e| e.elements().next())
                .map_or("undefined-condition", |c| c.name.as_str())
                .to_owned();
            // A refused join: not in that room.
            if s.name == "presence" {
                let room = from.split('/').next().unwrap_or("").to_ascii_lowercase();
                if self.rooms.get(&room).is_some_and(|r| !r.joined) {
                    self.rooms.remove(&room);
                }
            }
            let to = if from.is_empty() { self.domain.clone() } else { from };
            return self.out.push_back(ev(ClientEvent::ImRefused { to, condition }));
        }
        let room_key = from.split('/').next().unwrap_or("").to_ascii_lowercase();
        if self.rooms.contains_key(&room_key) {
            return self.room_stanza(&room_key, s);
        }
        match s.name.as_str() {
            "message" => {
                let body = s.find("body").map(Element::text).unwrap_or_default();
                self.out.push_back(ev(ClientEvent::ImMessage { from, body }));
            }
            "iq" => {
                let query = s.find("query").filter(|q| q.get("xmlns") == Some(NS_ROSTER));
                let from_self = from.is_empty() || from.eq_ignore_ascii_case(&own);
                match (s.get("type"), query) {
                    (Some("result"), Some(q)) if s.get("id") == Some("roster1") => {
                        let items: Vec<&Element> = q.elements().collect();
                        let contacts = items
                            .iter()
                            .filter(|i| matches!(i.get("subscription"), Some("to" | "both")))
                            .count();
                        let items = items.len();
                        self.out.push_back(ev(ClientEvent::ImRoster { contacts, items }));
                    }
                    // A roster push: acknowledged (RFC 6121 §2.1.6), only from our own account.
                    (Some("set"), Some(q)) if from_self => {
                        for i in q.elements() {
                            let jid = i.get("jid").unwrap_or("").to_owned();
                            let mut subscription =
                                i.get("subscription").unwrap_or("none").to_owned();
                            if i.get("ask") == Some("subscribe") {
                                subscription.push_str("+ask");
                            }
                            self.out.push_back(ev(ClientEvent::ImContact { jid, subscription }));
                        }
                        let mut ack = Element::new("iq").attr("type", "result");
                        if let Some(id) = s.get("id") {
                            ack.set("id", id);
                        }
                        self.send_el(&ack);
                    }
                    (Some("get" | "set"), _) => {
                        // Nothing else is offered: RFC 6120 §8.2.3 says answer with an error.
                        let mut e = Element::new("iq").attr("type", "error").attr("to", &from);
                        if let Some(id) = s.get("id") {
                            e.set("id", id);
                        }
                        let cond = Element::new("service-unavailable")
                            .attr("xmlns", "urn:ietf:params:xml:ns:xmpp-stanzas");
                        e = e.child(Element::new("error").attr("type", "cancel").child(cond));
                        self.send_el(&e);
                    }
                    _ => {}
                }
            }
            "presence" => match s.get("type") {
                Some(kind @ ("subscribe" | "subscribed" | "unsubscribe" | "unsubscribed")) => {
                    let kind = kind.to_owned();
                    self.out.push_back(ev(ClientEvent::ImSubscription { from, kind }));
                }
                // Our own resources' presence is not a contact's.
                _ if from.split('/').next().unwrap_or("").eq_ignore_ascii_case(&own) => {}
                Some("unavailable") => {
                    let show = "unavailable".to_owned();
                    self.out.push_back(ev(ClientEvent::ImPresence { from, show }));
                }
                None => {
                    let show = s.find("show").map(Element::text);
                    let show = match show.as_deref().map(str::trim) {
                        Some(v @ ("away" | "dnd" | "xa" | "chat")) => v.to_owned(),
                        _ => "available".to_owned(),
                    };
                    self.out.push_back(ev(ClientEvent::ImPresence { from, show }));
                }
                _ => {}
            },
            _ => {}
        }
    }

    /// A stanza from a room the user is in or entering (XEP-0045; SPEC IMP5).
    fn room_stanza(&mut self, key: &str, s: &Element) {
        let from = s.get("from").unwrap_or("");
        let (room, nick) = match from.split_once('/') {
            Some((r, n)) => (r.to_owned(), Some(n.to_owned())),
            None => (from.to_owned(), None),
        };
        let Some(r) = self.rooms.get_mut(key) else { return };
        let ev = Output::Event;
        match (s.name.as_str(), nick) {
            ("presence", Some(nick)) => {
                let x = s.elements().find(|c| c.name == "x" && c.get("xmlns") == Some(NS_MUC_USER));
                let codes: Vec<&str> = x
                    .into_iter()
                    .flat_map(|x| x.elements())
                    .filter(|c| c.name == "status")
                    .filter_map(|c| c.get("code"))
                    .collect();
                let own = codes.contains(&"110");
                let gone = s.get("type") == Some("unavailable");
                if own && gone {
                    self.rooms.remove(key);
                    self.out.push_back(ev(ClientEvent::ImRoomLeft { room }));
                } else if own && !r.joined {
                    r.joined = true;
                    let created = codes.contains(&"201");
                    let e = ClientEvent::ImRoomJoined {
                        room: room.clone(),
                        nick,
                        created,
                        occupants: r.occupants,
                    };
                    self.out.push_back(ev(e));
                    if created && r.persistent {
                        // XEP-0045 §10.1.3: the owner submits the configuration.
                        let field = |var: &str, v: &str| {
                            Element::new("field")
                                .attr("var", var)
                                .child(Element::new("value").text_node(v))
                        };
                        let form = Element::new("x")
                            .attr("xmlns", "jabber:x:data")
                            .attr("type", "submit")
                            .child(field("FORM_TYPE", "http://jabber.org/protocol/muc#roomconfig"))
                            .child(field("muc#roomconfig_persistentroom", "1"));
                        let iq = Element::new("iq")
                            .attr("type", "set")
                            .attr("id", &format!("cfg:{room}"))
                            .attr("to", &room)
                            .child(Element::new("query").attr("xmlns", NS_MUC_OWNER).child(form));
                        self.send_el(&iq);
                    }
                } else if !own {
                    if !r.joined {
                        r.occupants += 1;
                    }
                    let show = if gone {
                        "unavailable".to_owned()
                    } else {
                        match s.find("show").map(Element::text).as_deref().map(str::trim) {
                            Some(v @ ("away" | "dnd" | "xa" | "chat")) => v.to_owned(),
                            _ => "available".to_owned(),
                        }
                    };
                    self.out.push_back(ev(ClientEvent::ImRoomPresence { room, nick, show }));
                }
            }
            ("message", Some(nick)) if s.get("type") == Some("groupchat") => {
                let Some(body) = s.find("body").map(Element::text) else { return };
                let history = s.find("delay").is_some();
                let e = ClientEvent::ImRoomMessage { room, from: nick, body, history };
                self.out.push_back(ev(e));
            }
            // A private message through the room.
            ("message", Some(nick)) => {
                let body = s.find("body").map(Element::text).unwrap_or_default();
                self.out
                    .push_back(ev(ClientEvent::ImMessage { from: format!("{room}/{nick}"), body }));
            }
            ("iq", None)
                if s.get("type") == Some("result")
                    && s.get("id").is_some_and(|id| id.starts_with("cfg:")) =>
            {
                let e = ClientEvent::ImRoomConfigured { room, persistent: true };
                self.out.push_back(ev(e));
            }
            _ => {}
        }
    }

    fn own_bare(&self) -> String {
        format!("{}@{}", self.user, self.domain)
    }

    fn pump(&mut self, now: Time) {
        while let Some((token, res)) = self.resolver.next_answer(&mut self.out) {
            let ip = res.ok().and_then(|m| m.first_ipv4()).map(IpAddr::V4);
            match self.st {
                St::ResolveSoap { token: want } if want == token => match ip {
                    Some(ip) => {
                        self.soap_addr = Some(SocketAddr::new(ip, SOAP_PORT));
                        if self.soap_mode == SoapMode::Session && self.key.is_some() {
                            self.keyed(now, "get-all-config");
                        } else {
                            let body =
                                soap::login_request(&self.user, &self.password, CLIENT_VERSION);
                            self.soap(now, "login", body);
                        }
                    }
                    None => self.soap_next_server(now),
                },
                St::ResolveXmpp { token: want } if want == token => match ip {
                    Some(ip) => {
                        let id = self.next_stream.take_next();
                        self.stream = Some(id);
                        self.framer.reset();
                        self.out.push_back(Output::StreamOpen {
                            id,
                            to: SocketAddr::new(ip, XMPP_PORT),
                            dscp: DSCP_IMP,
                        });
                        self.st = St::Opening;
                        self.deadline = Some(now + STEP_TIMEOUT);
                    }
                    None => self.xmpp_next_node(now, "does not resolve"),
                },
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uclab_proto::dns::DnsMsg;

    const DNS: &str = "10.1.0.53:53";

    fn start() -> ImSession {
        let servers = vec!["imp1.example.com".into(), "imp2.example.com".into()];
        ImSession::start(
            Time::ZERO,
            ("alice", "lab", "uclab"),
            servers,
            Dns::standalone(Owner::Im, ResolverConfig::new(vec![DNS.parse().unwrap()])),
            5,
        )
    }

    fn drain(s: &mut ImSession) -> Vec<Output> {
        std::iter::from_fn(|| s.poll_output()).collect()
    }

    fn events(out: &[Output]) -> Vec<ClientEvent> {
        out.iter()
            .filter_map(|o| match o {
                Output::Event(e) => Some(e.clone()),
                _ => None,
            })
            .collect()
    }

    fn states(out: &[Output]) -> Vec<String> {
        events(out)
            .into_iter()
            .filter_map(|e| match e {
                ClientEvent::ImState { state, node } => Some(format!("{state}@{node}")),
                _ => None,
            })
            .collect()
    }

    /// Answers the pending A query with `ip`.
    fn answer_dns(s: &mut ImSession, out: &[Output], ip: [u8; 4]) {
        let q = out
            .iter()
            .find_map(|o| match o {
                Output::Transmit { bytes, .. } => Some(bytes.clone()),
                _ => None,
            })
            .expect("a DNS query");
        assert!(DnsMsg::parse(&q).is_ok());
        // The header and question of the query (its EDNS record dropped) with QR set, and one
        // answer: a pointer to the question name, A, IN, TTL 60.
        let mut end = 12;
        while q[end] != 0 {
            end += 1 + usize::from(q[end]);
        }
        let mut resp = q[..end + 5].to_vec();
        resp[2] |= 0x80;
        resp[7] = 1;
        resp[11] = 0;
        resp.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        resp.extend_from_slice(&ip);
        s.handle_input(Time::ZERO, Input::Datagram { from: DNS.parse().unwrap(), bytes: resp });
    }

    fn http(out: &[Output]) -> HttpReq {
        out.iter()
            .find_map(|o| match o {
                Output::Http(r) => Some(r.clone()),
                _ => None,
            })
            .expect("an HTTP request")
    }

    fn reply(s: &mut ImSession, r: &HttpReq, status: u16, body: String) {
        let result = Ok(HttpResp { status, body: body.into_bytes() });
        s.handle_input(Time::ZERO, Input::Http { id: r.id, result });
    }

    fn stream_data(s: &mut ImSession, id: ConnId, xml: &str) -> Vec<Output> {
        s.handle_input(Time::ZERO, Input::StreamData { id, bytes: xml.as_bytes().to_vec() });
        drain(s)
    }

    fn sent_text(out: &[Output]) -> String {
        out.iter()
            .filter_map(|o| match o {
                Output::StreamSend { bytes, .. } => {
                    Some(String::from_utf8_lossy(bytes).into_owned())
                }
                _ => None,
            })
            .collect()
    }

    /// Runs SOAP to the point where XMPP is about to open; returns the outputs of the OTP step.
    fn through_soap(s: &mut ImSession) -> Vec<Output> {
        let out = drain(s);
        assert_eq!(states(&out), ["SOAPCONNECT_P@imp1.example.com"]);
        answer_dns(s, &out, [10, 1, 0, 21]);
        let r = http(&drain(s));
        assert_eq!((r.method, r.path.as_str(), r.addr.port()), ("POST", soap::PATH, SOAP_PORT));
        assert!(String::from_utf8_lossy(&r.body).contains("<ns1:username>alice</ns1:username>"));
        reply(s, &r, 200, soap::success_response("login", "sk-1"));
        let r = http(&drain(s));
        assert!(String::from_utf8_lossy(&r.body).contains("sk-1"));
        let cfg = soap::config_response(&[
            (soap::P_DOMAIN, "example.com"),
            (soap::P_PRIMARY, "imp2.example.com"),
            (soap::P_SECONDARY, "imp1.example.com"),
        ]);
        reply(s, &r, 200, cfg);
        let r = http(&drain(s));
        reply(s, &r, 200, soap::success_response("get-onetime-password", "otp-1"));
        drain(s)
    }

    #[test]
    fn direct_plain_sign_in_then_roster_presence_and_errors() {
        let server: SocketAddr = "127.0.0.1:5222".parse().unwrap();
        let mut s =
            ImSession::direct(Time::ZERO, ("alice", "pw", "probe"), "example.test", server, 7);
        let out = drain(&mut s);
        let id = out
            .iter()
            .find_map(|o| match o {
                Output::StreamOpen { id, to, .. } if *to == server => Some(*id),
                _ => None,
            })
            .expect("straight to the server: no SOAP, no DNS");
        s.handle_input(Time::ZERO, Input::StreamOpened { id });
        drain(&mut s);
        let head = xmpp::stream_header(("from", "example.test"), Some("1"));
        stream_data(
            &mut s,
            id,
            &format!(
                "{head}<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>"
            ),
        );
        let out = stream_data(&mut s, id, "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        assert!(out.contains(&Output::StreamTls { id, host: "example.test".into() }));
        s.handle_input(Time::ZERO, Input::StreamTls { id });
        drain(&mut s);
        let out = stream_data(
            &mut s,
            id,
            &format!(
                "{head}<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-1</mechanism><mechanism>PLAIN</mechanism></mechanisms></stream:features>"
            ),
        );
        assert!(sent_text(&out).contains(&xmpp::sasl_plain("alice", "pw")));
        stream_data(&mut s, id, "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
        stream_data(
            &mut s,
            id,
            &format!(
                "{head}<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>"
            ),
        );
        let out = stream_data(
            &mut s,
            id,
            "<iq type='result' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>alice@example.test/probe</jid></bind></iq>",
        );
        let text = sent_text(&out);
        // RFC 6121 §2.2: the roster, then initial presence.
        let (roster, presence) = (text.find("jabber:iq:roster"), text.find("<presence"));
        assert!(roster.is_some() && presence.is_some() && roster < presence, "{text}");
        let out = stream_data(
            &mut s,
            id,
            "<iq type='result' id='roster1'><query xmlns='jabber:iq:roster' ver='3'><item jid='bob@example.test' subscription='both'/><item jid='eve@example.test' subscription='from'/></query></iq>",
        );
        assert_eq!(events(&out), [ClientEvent::ImRoster { contacts: 1, items: 2 }]);
        // A push is acknowledged; one from someone else is not a push.
        let out = stream_data(
            &mut s,
            id,
            "<iq type='set' id='p1'><query xmlns='jabber:iq:roster'><item jid='dave@example.test' subscription='none' ask='subscribe'/></query></iq>",
        );
        assert_eq!(
            events(&out),
            [ClientEvent::ImContact {
                jid: "dave@example.test".into(),
                subscription: "none+ask".into()
            }]
        );
        assert!(sent_text(&out).contains("type=\"result\"") && sent_text(&out).contains("p1"));
        let out = stream_data(
            &mut s,
            id,
            "<iq type='set' id='p2' from='mallory@example.test/x'><query xmlns='jabber:iq:roster'><item jid='x@y'/></query></iq>",
        );
        assert!(events(&out).is_empty() && sent_text(&out).contains("service-unavailable"));
        let out = stream_data(
            &mut s,
            id,
            "<presence from='bob@example.test/pc'><show>away</show></presence><presence from='alice@example.test/other'/><presence from='dave@example.test' type='subscribe'/><presence from='eve@example.test' to='alice@example.test' type='error'><error type='cancel'><not-allowed xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>",
        );
        assert_eq!(
            events(&out),
            [
                ClientEvent::ImPresence { from: "bob@example.test/pc".into(), show: "away".into() },
                ClientEvent::ImSubscription {
                    from: "dave@example.test".into(),
                    kind: "subscribe".into()
                },
                ClientEvent::ImRefused {
                    to: "eve@example.test".into(),
                    condition: "not-allowed".into()
                },
            ],
            "own resources are not contacts"
        );
        // A lost stream in direct mode is a failure, not an HA1 failover.
        s.handle_input(Time::ZERO, Input::StreamFailed { id, reason: "reset".into() });
        let ev = events(&drain(&mut s));
        assert!(
            matches!(&ev[..], [ClientEvent::ImFailed { reason }] if reason.contains("lost")),
            "{ev:?}"
        );
    }

    #[test]
    fn au4_soap_then_xmpp_to_the_primary_from_the_configuration() {
        let mut s = start();
        let out = through_soap(&mut s);
        assert_eq!(states(&out), ["XMPPCONNECT_P@imp2.example.com"]);
        answer_dns(&mut s, &out, [10, 1, 0, 22]);
        let out = drain(&mut s);
        let (id, to) = out
            .iter()
            .find_map(|o| match o {
                Output::StreamOpen { id, to, .. } => Some((*id, *to)),
                _ => None,
            })
            .unwrap();
        assert_eq!(to, "10.1.0.22:5222".parse().unwrap());
        s.handle_input(Time::ZERO, Input::StreamOpened { id });
        assert!(sent_text(&drain(&mut s)).contains("to=\"example.com\""));
        let head = xmpp::stream_header(("from", "example.com"), Some("1"));
        let out = stream_data(
            &mut s,
            id,
            &format!(
                "{head}<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>"
            ),
        );
        assert!(sent_text(&out).contains("<starttls"));
        let out = stream_data(&mut s, id, "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        assert!(out.contains(&Output::StreamTls { id, host: "example.com".into() }), "{out:?}");
        s.handle_input(Time::ZERO, Input::StreamTls { id });
        drain(&mut s);
        // The features as Cisco's jabberwerx SDK test has them, with home/backup node hints.
        let corpus = include_str!("../../corpora/xmpp/cisco_imp_xmpp_samples.txt");
        let features = corpus
            .lines()
            .find(|l| l.starts_with("<stream:features>") && l.contains("domain-based-name"))
            .expect("the hints sample");
        let out = stream_data(&mut s, id, &format!("{head}{features}"));
        assert_eq!(
            events(&out),
            [ClientEvent::ImNodes { home: "testserver01".into(), backup: "testserver02".into() }]
        );
        let token = xmpp::sasl_vtg_token("alice", "example.com", "otp-1");
        assert!(sent_text(&out).contains(&token), "the one-time password as the token");
        let summary = out.iter().find_map(|o| match o {
            Output::StreamSend { summary, .. } => Some(summary.clone()),
            _ => None,
        });
        assert_eq!(
            summary.as_deref(),
            Some("XMPP auth mechanism=CISCO-VTG-TOKEN"),
            "no secret in the transcript"
        );
        stream_data(&mut s, id, "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
        let out = stream_data(
            &mut s,
            id,
            &format!(
                "{head}<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>"
            ),
        );
        assert!(sent_text(&out).contains("<resource>uclab</resource>"));
        let out = stream_data(
            &mut s,
            id,
            "<iq type='result' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>alice@example.com/uclab</jid></bind></iq>",
        );
        assert_eq!(states(&out), ["XMPPCONNECTED@imp2.example.com"]);
        assert!(
            events(&out)
                .contains(&ClientEvent::ImSignedIn { jid: "alice@example.com/uclab".into() })
        );
        assert!(s.is_settled());
        let out = stream_data(
            &mut s,
            id,
            "<message from='bob@example.com/x' type='chat'><body>hi</body></message>",
        );
        assert_eq!(
            events(&out),
            [ClientEvent::ImMessage { from: "bob@example.com/x".into(), body: "hi".into() }]
        );
    }

    #[test]
    fn ha1_soap_falls_to_the_second_server_and_xmpp_to_the_secondary() {
        let mut s = start();
        let out = drain(&mut s);
        answer_dns(&mut s, &out, [10, 1, 0, 21]);
        let r = http(&drain(&mut s));
        s.handle_input(
            Time::ZERO,
            Input::Http { id: r.id, result: Err("connect: refused".into()) },
        );
        let out = drain(&mut s);
        assert_eq!(states(&out), ["SOAPCONNECT_S@imp2.example.com"]);
        // XMPP: the primary refuses; a new one-time password, then the secondary.
        let mut s = start();
        let out = through_soap(&mut s);
        answer_dns(&mut s, &out, [10, 1, 0, 22]);
        let id = drain(&mut s)
            .iter()
            .find_map(|o| match o {
                Output::StreamOpen { id, .. } => Some(*id),
                _ => None,
            })
            .unwrap();
        s.handle_input(Time::ZERO, Input::StreamFailed { id, reason: "refused".into() });
        let r = http(&drain(&mut s));
        assert!(String::from_utf8_lossy(&r.body).contains("get-onetime-password"));
        reply(&mut s, &r, 200, soap::success_response("get-onetime-password", "otp-2"));
        assert_eq!(states(&drain(&mut s)), ["XMPPCONNECT_S@imp1.example.com"]);
    }

    #[test]
    fn au5_wrong_password_is_one_clear_failure() {
        let mut s = start();
        let out = drain(&mut s);
        answer_dns(&mut s, &out, [10, 1, 0, 21]);
        let r = http(&drain(&mut s));
        reply(&mut s, &r, 400, soap::fault("Sender", "AuthenticationFailed", "bad"));
        let out = drain(&mut s);
        assert_eq!(events(&out), [ClientEvent::ImFailed { reason: "wrong credentials".into() }]);
        assert!(s.is_settled());
        assert_eq!(s.poll_timeout(), None);
        // Garbage from SOAP is a clear failure too.
        let mut s = start();
        let out = drain(&mut s);
        answer_dns(&mut s, &out, [10, 1, 0, 21]);
        let r = http(&drain(&mut s));
        reply(&mut s, &r, 200, "<Envelope><Body".into());
        let ev = events(&drain(&mut s));
        assert!(
            matches!(&ev[..], [ClientEvent::ImFailed { reason }] if reason.starts_with("SOAP login: malformed")),
            "{ev:?}"
        );
    }
}
