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
use crate::edge::{Route, Transport};
use crate::event::{ClientEvent, Ha1State};
use crate::io::{ConnId, HttpId, HttpReq, HttpResp, Input, NetError, Output};
use crate::resolver::{Dns, QueryToken};
use failover::Ha1;

pub use self::error::ImError;

mod error;
mod failover;
mod login;
mod stanzas;
mod stream;

/// What an IM session deadline is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImTimer {
    /// The step under way (a SOAP request, an XMPP exchange) is overdue.
    Step,
    /// SPEC HA2: the re-login wait after a failover is over.
    Relogin,
    /// A DNS retransmission.
    Dns,
}

/// EPAS SOAP port.
pub const SOAP_PORT: u16 = 8443;
/// XMPP client port.
pub const XMPP_PORT: u16 = 5222;
/// DSCP of IM&P traffic (SPEC MEDIA2: CS3).
pub const DSCP_IMP: u8 = uclab_proto::dscp::IMP;
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
        /// The status text with it (`Busy`, `In a meeting`: SPEC FED3's rows), if any.
        status: Option<String>,
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
    /// Offers a file to a contact (XEP-0096 stream initiation, the file transfer profile); the
    /// lab's client sends the offer only, and an answer that refuses it is an `im-refused`
    /// (SPEC FED3: a SIP federated domain takes no files).
    OfferFile {
        /// Recipient JID.
        to: String,
        /// File name.
        name: String,
    },
}

impl ImAction {
    /// What the action is, for the event that says it could not be done.
    pub fn describe(&self) -> String {
        match self {
            Self::Message { to, .. } => format!("message to {to}"),
            Self::Subscribe { to } => format!("subscription to {to}"),
            Self::Approve { to } => format!("approval of {to}"),
            Self::Presence { show, .. } => format!("presence {show}"),
            Self::Join { room, .. } => format!("join of {room}"),
            Self::Leave { room } => format!("leave of {room}"),
            Self::RoomMessage { room, .. } => format!("group message to {room}"),
            Self::OfferFile { to, .. } => format!("file offer to {to}"),
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
pub(super) enum SoapMode {
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
    /// Where SPEC HA1 stands: the server and node being tried, login or session.
    ha1: Ha1,
    /// Direct XMPP to this server with SASL PLAIN, no SOAP (a plain XMPP server such as
    /// Prosody; `uclab probe-xmpp`).
    direct: Option<SocketAddr>,
    /// How SOAP reaches the IM&P servers: straight, or through the edge's HTTP proxy (SPEC
    /// MRA1).
    transport: Transport,
    /// Through the edge: Expressway-E's XMPP address (`xmppEdgeServer`), where every XMPP
    /// stream goes whichever node it is for (Expressway-C carries it to the user's home node).
    xmpp_edge: Option<SocketAddr>,
    rng: ChaCha8Rng,
    soap_addr: Option<SocketAddr>,
    key: Option<String>,
    domain: String,
    /// XMPP nodes from the configuration: primary, then secondary.
    nodes: Vec<String>,
    otp: Option<String>,
    stream: Option<ConnId>,
    framer: Framer,
    resolver: Dns,
    st: St,
    deadline: Option<Time>,
    next_dns: u16,
    /// Group chat rooms joined or being joined, by room JID (lower case).
    rooms: BTreeMap<String, Room>,
    /// The effective contact source (`DirectoryServerType`); SPEC HA4 supports high
    /// availability with LDAP (`EDI`, `BDI`) and not with `UDS`.
    contact_source: String,
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

    /// Starts the IM sign-in of `user` from outside (SPEC MRA1): SOAP to the profile's
    /// `servers` through the edge's HTTP proxy on `route`, XMPP to Expressway-E at
    /// `xmpp_edge`. The same session as inside: HA1 runs unchanged, each step through the edge.
    pub fn start_through_edge(
        now: Time,
        (user, password, resource): (&str, &str, &str),
        servers: Vec<String>,
        (route, xmpp_edge): (Route, SocketAddr),
        resolver: Dns,
        seed: u64,
    ) -> Self {
        let mut s = Self::start_idle((user, password, resource), resolver, seed);
        s.servers = servers;
        s.transport = Transport::Edge(route);
        s.xmpp_edge = Some(xmpp_edge);
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
            direct: None,
            transport: Transport::Direct,
            xmpp_edge: None,
            ha1: Ha1::default(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            soap_addr: None,
            key: None,
            domain: String::new(),
            nodes: Vec::new(),
            otp: None,
            stream: None,
            framer: Framer::new(),
            resolver,
            st: St::Done,
            deadline: None,
            next_dns: (seed >> 24) as u16 | 1,
            rooms: BTreeMap::new(),
            contact_source: String::new(),
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
        resolver: Dns,
        seed: u64,
    ) -> Self {
        let mut s = Self::start_idle((user, password, resource), resolver, seed);
        s.direct = Some(server);
        s.domain = domain.to_owned();
        s.nodes = vec![server.to_string()];
        s.state(Ha1State::XMPPCONNECT_P, &server.to_string());
        s.xmpp_open(now, server);
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
            ImAction::Presence { show, .. } if show == "unavailable" => {
                Element::new("presence").attr("type", "unavailable")
            }
            ImAction::Presence { show, status } => {
                let mut p = Element::new("presence");
                if show != "available" {
                    p = p.child(Element::new("show").text_node(show));
                }
                if let Some(t) = status {
                    p = p.child(Element::new("status").text_node(t));
                }
                p
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
            ImAction::OfferFile { to, name } => {
                const FT: &str = "http://jabber.org/protocol/si/profile/file-transfer";
                let file =
                    Element::new("file").attr("xmlns", FT).attr("name", name).attr("size", "1024");
                let method = Element::new("field")
                    .attr("var", "stream-method")
                    .attr("type", "list-single")
                    .child(Element::new("option").child(
                        Element::new("value").text_node("http://jabber.org/protocol/bytestreams"),
                    ));
                let form = Element::new("x")
                    .attr("xmlns", "jabber:x:data")
                    .attr("type", "form")
                    .child(method);
                let neg = Element::new("feature")
                    .attr("xmlns", "http://jabber.org/protocol/feature-neg")
                    .child(form);
                Element::new("iq").attr("type", "set").attr("to", to).attr("id", "si1").child(
                    Element::new("si")
                        .attr("xmlns", "http://jabber.org/protocol/si")
                        .attr("id", "s1")
                        .attr("profile", FT)
                        .child(file)
                        .child(neg),
                )
            }
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
        crate::io::next_out(&mut self.out)
    }

    /// Next deadline.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.next_timer().map(|(t, _)| t)
    }

    /// The next deadline and what it is for.
    pub fn next_timer(&self) -> Option<(Time, ImTimer)> {
        let step = if matches!(self.st, St::Failover) { ImTimer::Relogin } else { ImTimer::Step };
        [(self.deadline, step), (self.resolver.poll_timeout(), ImTimer::Dns)]
            .into_iter()
            .filter_map(|(t, w)| Some((t?, w)))
            .min_by_key(|(t, _)| *t)
    }

    fn state(&mut self, state: Ha1State, node: &str) {
        self.out.push_back(Output::Event(ClientEvent::ImState { state, node: node.to_owned() }));
    }

    fn fail(&mut self, error: ImError) {
        if let Some(id) = self.stream.take() {
            self.out.push_back(Output::StreamClose { id });
        }
        self.out.push_back(Output::Event(ClientEvent::ImFailed { reason: error.to_string() }));
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

    fn send(&mut self, xml: String, summary: String) {
        let Some(id) = self.stream else { return };
        self.out.push_back(Output::StreamSend { id, bytes: xml.into_bytes(), summary });
    }

    fn send_el(&mut self, e: &Element) {
        self.send(e.to_xml(), format!("XMPP {}", xmpp::summary(e)));
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
                    self.fail(ImError::StreamLost(reason));
                } else if matches!(self.st, St::Connected) {
                    self.stream = None;
                    self.failover(now);
                } else {
                    self.xmpp_next_node(now, &reason.to_string());
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
                St::Failover => self.relogin_due(now),
                St::Connected | St::Done => self.deadline = None,
            }
        }
        self.pump(now);
    }

    fn own_bare(&self) -> String {
        format!("{}@{}", self.user, self.domain)
    }

    fn pump(&mut self, now: Time) {
        while let Some((token, res)) = self.resolver.next_answer(&mut self.out) {
            let ip = res.ok().and_then(|m| m.first_ipv4()).map(IpAddr::V4);
            match self.st {
                St::ResolveSoap { token: want } if want == token => match ip {
                    Some(ip) => self.soap_at(now, SocketAddr::new(ip, SOAP_PORT)),
                    None => self.soap_next_server(now),
                },
                St::ResolveXmpp { token: want } if want == token => match ip {
                    Some(ip) => self.xmpp_open(now, SocketAddr::new(ip, XMPP_PORT)),
                    None => self.xmpp_next_node(now, "does not resolve"),
                },
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
