//! CUCM's SIP line side (SPEC CC1–CC5; WIRE.md "SIP to CUCM"): the registrar of the cluster's
//! CSF devices and the call routing between registered lines, over UDP and TCP 5060 and TLS
//! 5061.
//!
//! One [`Cluster`] serves every node of a CUCM cluster, as the real nodes share their
//! registrations through the database: a call from a phone on cucm1 reaches a phone on cucm2.
//! Each node's sockets open *flows* (a TCP or TLS connection, or a UDP peer) into it and get
//! what to send through the flow's outbox.
//!
//! The registrar grants at most `Expires: 120` (the CUCM service parameter), answers a backup
//! node's keepalive (`Expires: 0`, `;cisco-keep-alive`) without touching the binding, asks for
//! digest credentials (realm `ccmsipline`) when the cluster says so, and drops a device's
//! binding when its TCP connection closes, as CUCM unregisters it. Calls are routed as a
//! stateless, record-routing proxy (RFC 3261 §16.11): requests and responses keep their
//! Call-ID end to end and every in-dialog request passes through the node. (Real CUCM is a
//! back-to-back user agent; the lab's clients cannot tell the difference in what they test.)
//!
//! Every request gets a response (RFC 3261 §8.2 and the RFC 4475 expectations): 400 for what
//! cannot be read, 505, 501, 416, 420, 415, 406, 483, 404/480 for unknown or unregistered
//! lines, 481 outside dialogs. Responses matching nothing are dropped.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use uclab_proto::sip::{
    self, Message, Start, is_token, parse, parse_name_addr, reason, split_list,
};

mod blf;
mod conf;
mod registrar;
pub use blf::{MAX_BLF, PresencePolicy, pidf};
pub use conf::{ADHOC, MAX_CONFERENCES, MAX_PARTICIPANTS};

/// Digest realm of CUCM's SIP line side.
pub const REALM: &str = "ccmsipline";
/// The most a registration is granted (CUCM "SIP Station KeepAlive Interval" behaviour: the
/// device asks 3600, CUCM answers 120).
pub const MAX_EXPIRES: u32 = 120;
/// Asked-for expiry when the request gives none (§10.2.1.1: the registrar picks; the device
/// default is 3600).
const DEFAULT_EXPIRES: u32 = 3600;
/// Devices one line may have registered at once.
const MAX_DEVICES_PER_LINE: usize = 8;
/// Keepalive records, UDP peers and answered calls kept at most (older ones are forgotten
/// first): about a large cluster's device count, so that pruning (a scan) is rare.
const MAX_TRACKED: usize = 65_536;
/// How long a keepalive record is worth keeping.
const KEEPALIVE_TRACKED: Duration = Duration::from_secs(600);
/// A SIP/TCP or TLS connection with no byte from the peer for this long is closed (issue 13).
/// Kamailio closes idle TCP at 120 s; phones here ping every 30 s (RFC 5626) and re-register
/// within [`MAX_EXPIRES`], so 300 s only ever ends a connection nobody uses.
pub const TCP_IDLE: Duration = Duration::from_secs(300);
/// Time the rest of a message has once its first octet has arrived (a slow or stalled sender
/// holds a buffer no longer than this).
pub const TCP_PARTIAL: Duration = Duration::from_secs(10);
/// The Server header.
pub const SERVER: &str = "Cisco-CUCM14.0";
/// Methods the line side implements (the Allow header).
pub const ALLOW: &str =
    "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, REGISTER, UPDATE, PRACK, SUBSCRIBE, NOTIFY, REFER";
/// Option tags supported.
const SUPPORTED: &[&str] = &[
    "replaces",
    "timer",
    "100rel",
    "path",
    "outbound",
    "X-cisco-srtp-fallback",
    "X-cisco-sis-6.0.0",
];

/// A transport (RFC 3261 §18).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Transport {
    /// UDP 5060.
    Udp,
    /// TCP 5060.
    Tcp,
    /// TLS 5061.
    Tls,
}

impl Transport {
    /// As written in Via.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
            Self::Tls => "TLS",
        }
    }
}

/// A flow: one TCP/TLS connection, or one UDP peer of a node's socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlowId(pub u64);

/// Something to send on a flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// Destination (the UDP peer; the stream's peer for TCP/TLS).
    pub to: SocketAddr,
    /// The message.
    pub bytes: Vec<u8>,
    /// One line for the transcript.
    pub summary: String,
}

/// Where a flow's messages go: the node task that owns the socket.
pub type Outbox = tokio::sync::mpsc::UnboundedSender<Outgoing>;

#[derive(Debug)]
struct Flow {
    node: String,
    transport: Transport,
    peer: SocketAddr,
    outbox: Outbox,
}

/// A line of a CSF device (SPEC CC1): the user, the directory number, the device name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipLine {
    /// User id (the digest user name).
    pub user: String,
    /// Directory number.
    pub extension: String,
    /// Device name, `CSF<USER>`.
    pub device: String,
    /// Digest password.
    pub password: String,
    /// The directory number's partition.
    pub partition: String,
    /// The SUBSCRIBE calling search space: the partitions the user's presence subscriptions
    /// may reach; `None` is `<None>` (SPEC CC6).
    pub subscribe_css: Option<Vec<String>>,
    /// The user's presence group.
    pub presence_group: String,
    /// The directory numbers on the device's BLF speed dials.
    pub blf: Vec<String>,
}

impl Default for SipLine {
    fn default() -> Self {
        Self {
            user: String::new(),
            extension: String::new(),
            device: String::new(),
            password: String::new(),
            partition: DEFAULT_PARTITION.into(),
            subscribe_css: Some(vec![DEFAULT_PARTITION.into()]),
            presence_group: DEFAULT_PRESENCE_GROUP.into(),
            blf: Vec::new(),
        }
    }
}

/// The partition lines are in unless configured.
pub const DEFAULT_PARTITION: &str = "Internal";
/// The presence group every user is in unless configured (SPEC CC6).
pub const DEFAULT_PRESENCE_GROUP: &str = "Standard Presence Group";

/// The cluster's SIP settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SipConfig {
    /// The enterprise domain.
    pub domain: String,
    /// Lines of the cluster's devices.
    pub lines: Vec<SipLine>,
    /// Digest authentication of REGISTER (device security profile "digest"); else none.
    pub digest: bool,
    /// An SRST router rather than CUCM (SPEC CC5): it grants what is asked (up to an hour)
    /// and routes basic calls only: REFER (transfer) is not implemented.
    pub srst: bool,
    /// Presence groups and the Inter-Presence Group Subscribe Policy (SPEC CC6).
    pub presence: PresencePolicy,
    /// The SIP trunk to IM&P with "IMP PUBLISH Trunk" on (SPEC CC7): where line states go.
    pub trunk: Option<PresenceTrunk>,
}

/// CUCM's SIP trunk to IM&P for phone presence (SPEC CC7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceTrunk {
    /// The IM&P node's SIP address (UDP).
    pub to: SocketAddr,
    /// "IMP PUBLISH Trunk": CUCM PUBLISHes line states; otherwise IM&P SUBSCRIBEs (from
    /// `to`) and CUCM NOTIFYs.
    pub publish: bool,
    /// The presence domain (the PUBLISH Request-URI's host).
    pub domain: String,
}

#[derive(Clone, Debug)]
struct Binding {
    /// Contact URI (without <>).
    contact: String,
    flow: FlowId,
    node: String,
    device: String,
    expires_at: Duration,
}

/// What the cluster has done, for tests and benches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SipCounters {
    /// REGISTERs that made or refreshed a binding.
    pub registrations: u64,
    /// Keepalive REGISTERs answered (to a backup node).
    pub keepalives: u64,
    /// Requests forwarded to a line or along a dialog.
    pub forwarded: u64,
    /// Requests refused with an error status.
    pub refused: u64,
    /// Messages that could not be read at all (dropped).
    pub unreadable: u64,
    /// NOTIFYs sent to presence watchers (SPEC CC6).
    pub notifies: u64,
    /// PUBLISHes sent to IM&P over the trunk (SPEC CC7).
    pub publishes: u64,
    /// Participants that joined an ad hoc conference on a bridge.
    pub conference_joins: u64,
}

/// A CUCM cluster's SIP state: flows, bindings, nonces.
#[derive(Debug)]
pub struct Cluster {
    cfg: SipConfig,
    /// Node FQDN → its SIP port (for Via and Record-Route).
    nodes: BTreeMap<String, u16>,
    /// Node FQDN → its TLS port.
    tls_ports: BTreeMap<String, u16>,
    flows: BTreeMap<FlowId, Flow>,
    /// UDP flows by (node, peer), made on first datagram.
    udp: BTreeMap<(String, SocketAddr), FlowId>,
    /// UDP outboxes of the nodes.
    udp_out: BTreeMap<String, Outbox>,
    next_flow: u64,
    /// Extension → device → binding.
    bindings: BTreeMap<String, BTreeMap<String, Binding>>,
    /// Device → (node, last keepalive).
    keepalives: BTreeMap<String, (String, Duration)>,
    nonces: BTreeSet<String>,
    /// The nonces in the order they were given: the oldest goes first past the bound.
    nonce_order: std::collections::VecDeque<String>,
    /// The user directory's credential policy lockout (issue 13): wrong digest answers count.
    lockout: Option<Rc<crate::lockout::Lockout>>,
    /// Directory number or user id, lower case → the first line that has it.
    line_index: BTreeMap<String, usize>,
    /// Presence subscriptions by (Call-ID, watcher tag) (SPEC CC6).
    subs: blf::Subs,
    /// Answered calls through the cluster (for BLF busy).
    calls: blf::Calls,
    /// Ad hoc conferences on the nodes' conference bridges.
    bridges: conf::Bridges,
    /// The time of the message being handled.
    clock: Duration,
    seed: u64,
    counter: u64,
    /// Where digest nonces come from in live mode (the OS random source, issue 13); in
    /// simulation they derive from the seed, so a run replays.
    nonce_source: Option<uclab_net::SecretRng>,
    counters: SipCounters,
}

/// FNV-1a, for tags and branches that must be the same for a retransmission.
pub(crate) fn fnv(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The user part of a SIP or tel URI, unescaped, lower case.
fn uri_user(uri: &str) -> Option<String> {
    let rest = uri.split_once(':')?.1;
    let rest = rest.split(['?']).next()?;
    let user = if let Some(n) = uri.get(..4).filter(|s| s.eq_ignore_ascii_case("tel:")) {
        let _ = n;
        rest.split(';').next()?
    } else {
        rest.rsplit_once('@')?.0
    };
    let user = user.split(';').next()?;
    Some(unescape(user).to_ascii_lowercase())
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Cluster {
    /// A cluster with `cfg`; `seed` makes its nonces.
    pub fn new(cfg: SipConfig, seed: u64) -> Self {
        let mut line_index = BTreeMap::new();
        for (i, l) in cfg.lines.iter().enumerate() {
            line_index.entry(l.extension.to_ascii_lowercase()).or_insert(i);
            line_index.entry(l.user.to_ascii_lowercase()).or_insert(i);
        }
        Self {
            line_index,
            cfg,
            nodes: BTreeMap::new(),
            tls_ports: BTreeMap::new(),
            flows: BTreeMap::new(),
            udp: BTreeMap::new(),
            udp_out: BTreeMap::new(),
            next_flow: 1,
            bindings: BTreeMap::new(),
            keepalives: BTreeMap::new(),
            nonces: BTreeSet::new(),
            nonce_order: std::collections::VecDeque::new(),
            lockout: None,
            subs: blf::Subs::default(),
            calls: blf::Calls::default(),
            bridges: conf::Bridges::default(),
            clock: Duration::ZERO,
            seed,
            counter: 0,
            nonce_source: None,
            counters: SipCounters::default(),
        }
    }

    /// Wrong digest answers count against `lockout`, and a locked account is refused.
    pub fn set_lockout(&mut self, lockout: Option<Rc<crate::lockout::Lockout>>) {
        self.lockout = lockout;
    }

    /// Digest nonces from `secrets` rather than the seed (live mode: unpredictable).
    pub fn set_nonce_source(&mut self, secrets: uclab_net::SecretRng) {
        self.nonce_source = Some(secrets);
    }

    /// What the cluster has done.
    pub fn counters(&self) -> SipCounters {
        self.counters
    }

    /// A node joins with its SIP port and its UDP socket's outbox.
    pub fn add_node(&mut self, host: &str, port: u16, udp: Outbox) {
        self.nodes.insert(host.to_ascii_lowercase(), port);
        self.udp_out.insert(host.to_ascii_lowercase(), udp);
    }

    /// The node's TLS port (SIP over TLS, 5061), for the Via and Record-Route of TLS flows.
    pub fn set_tls_port(&mut self, host: &str, port: u16) {
        self.tls_ports.insert(host.to_ascii_lowercase(), port);
    }

    /// A node stopped: its flows and the bindings on them are gone.
    pub fn remove_node(&mut self, host: &str) {
        let host = host.to_ascii_lowercase();
        let ids: Vec<FlowId> =
            self.flows.iter().filter(|(_, f)| f.node == host).map(|(k, _)| *k).collect();
        for id in ids {
            self.close_flow(id);
        }
        self.udp.retain(|(n, _), _| *n != host);
        self.udp_out.remove(&host);
        self.tls_ports.remove(&host);
        self.bridge_gone(&host);
        self.nodes.remove(&host);
    }

    /// A TCP or TLS connection was accepted by `node`.
    pub fn open_stream(
        &mut self,
        node: &str,
        transport: Transport,
        peer: SocketAddr,
        outbox: Outbox,
    ) -> FlowId {
        let id = FlowId(self.next_flow);
        self.next_flow += 1;
        self.flows.insert(id, Flow { node: node.to_ascii_lowercase(), transport, peer, outbox });
        id
    }

    /// A datagram came from `peer` to `node`'s UDP socket: its flow.
    pub fn udp_flow(&mut self, node: &str, peer: SocketAddr) -> Option<FlowId> {
        let node = node.to_ascii_lowercase();
        if let Some(id) = self.udp.get(&(node.clone(), peer)) {
            return Some(*id);
        }
        let outbox = self.udp_out.get(&node)?.clone();
        if self.udp.len() >= MAX_TRACKED {
            // Forget the UDP peers no binding uses (a UDP peer is only an address).
            let used: BTreeSet<FlowId> =
                self.bindings.values().flat_map(|d| d.values().map(|b| b.flow)).collect();
            let gone: Vec<FlowId> =
                self.udp.values().copied().filter(|f| !used.contains(f)).collect();
            for f in gone {
                self.flows.remove(&f);
            }
            self.udp.retain(|_, f| used.contains(f));
        }
        let id = FlowId(self.next_flow);
        self.next_flow += 1;
        self.flows.insert(id, Flow { node: node.clone(), transport: Transport::Udp, peer, outbox });
        self.udp.insert((node, peer), id);
        Some(id)
    }

    /// A connection closed: CUCM unregisters the devices that registered over it.
    pub fn close_flow(&mut self, id: FlowId) {
        self.flows.remove(&id);
        self.bridge_flow_gone(id);
        let mut lost = Vec::new();
        for (ext, devices) in self.bindings.iter_mut() {
            let n = devices.len();
            devices.retain(|_, b| b.flow != id);
            if devices.len() != n {
                lost.push(ext.clone());
            }
        }
        self.bindings.retain(|_, d| !d.is_empty());
        for ext in lost {
            if self.bindings.contains_key(&ext) {
                self.blf_changed(self.clock, &ext);
            } else {
                self.line_lost(self.clock, &ext);
            }
        }
    }

    /// Bindings of `extension` now: (device, node, contact).
    pub fn bindings(&self, extension: &str, now: Duration) -> Vec<(String, String, String)> {
        self.bindings
            .get(extension)
            .into_iter()
            .flat_map(|d| d.values())
            .filter(|b| b.expires_at > now)
            .map(|b| (b.device.clone(), b.node.clone(), b.contact.clone()))
            .collect()
    }

    /// When `device` last sent a keepalive, and to which node.
    pub fn keepalive(&self, device: &str) -> Option<(String, Duration)> {
        self.keepalives.get(device).cloned()
    }

    fn send(&mut self, flow: FlowId, m: &Message) {
        let Some(f) = self.flows.get(&flow) else { return };
        let out = Outgoing { to: f.peer, bytes: m.to_bytes(), summary: summary(m) };
        let _ = f.outbox.send(out);
    }

    /// A message from a flow: a request is answered or forwarded, a response forwarded.
    pub fn handle(&mut self, now: Duration, flow: FlowId, bytes: &[u8]) {
        let Some(f) = self.flows.get(&flow) else { return };
        let reliable = f.transport != Transport::Udp;
        self.clock = now;
        match parse(bytes) {
            Ok(m) if matches!(m.start, Start::Response { .. }) => self.response(m),
            Ok(m) => self.request(now, flow, m),
            Err(e) => {
                // An unreadable request is answered when it can be (§21.4.1); a response,
                // or a request without the headers a response needs, is dropped.
                match e.partial {
                    Some(m)
                        if matches!(m.start, Start::Request { .. })
                            && m.method() != Some("ACK") =>
                    {
                        self.counters.refused += 1;
                        let r = self.reply(&m, e.rejection.status, &e.rejection.reason);
                        self.send(flow, &r);
                    }
                    _ => self.counters.unreadable += 1,
                }
                let _ = reliable;
            }
        }
    }

    /// A response for `req` from this node: status, To tag, Server.
    fn reply(&self, req: &Message, code: u16, why: &str) -> Message {
        let tag = format!(
            "{:x}",
            fnv(&[req.call_id().unwrap_or(""), &req.tag("From").unwrap_or_default()]) >> 32
        );
        let phrase = if why.is_empty() || code < 300 {
            reason(code).to_owned()
        } else {
            format!("{} ({why})", reason(code))
        };
        let mut r = req.response(code, &phrase, Some(&tag));
        r.push("Server", SERVER);
        r
    }

    fn refuse(&mut self, flow: FlowId, req: &Message, code: u16, why: &str) {
        if req.method() == Some("ACK") {
            return; // never answered (§17.2.3 aside, an ACK has no response)
        }
        self.counters.refused += 1;
        let mut r = self.reply(req, code, why);
        match code {
            405 | 501 => {
                r.push("Allow", ALLOW);
            }
            415 | 406 => {
                r.push("Accept", "application/sdp");
            }
            _ => {}
        }
        self.send(flow, &r);
    }

    /// A flow's node, the node's port for that transport (5061 for TLS), and the transport:
    /// what our Via and Record-Route name.
    fn node_of(&self, flow: FlowId) -> (String, u16, Transport) {
        let f = &self.flows[&flow];
        let port = match f.transport {
            Transport::Tls => self.tls_ports.get(&f.node).copied().unwrap_or(5061),
            _ => self.nodes.get(&f.node).copied().unwrap_or(5060),
        };
        (f.node.clone(), port, f.transport)
    }

    fn is_ours(&self, uri: &str) -> bool {
        let Some(na) = uri.split_once(':').map(|(_, r)| r) else { return false };
        let host = na.rsplit_once('@').map_or(na, |(_, h)| h);
        let host = host.split([';', '?', ':']).next().unwrap_or("").to_ascii_lowercase();
        self.nodes.contains_key(&host)
    }

    fn request(&mut self, now: Duration, flow: FlowId, mut m: Message) {
        let Start::Request { method, uri } = m.start.clone() else { return };
        // §18.2.1: where the request really came from, for the response and for forwarding.
        let peer = self.flows[&flow].peer;
        let top = m.all("Via").next().map(str::to_owned);
        if let Some(top) = top {
            let first = split_list(&top).ok().and_then(|l| l.first().map(|s| (*s).to_owned()));
            if let Some(first) = first
                && top.starts_with(&first)
            {
                // RFC 3581: an empty rport gets the source port; received the source address.
                let rest = top[first.len()..].to_owned();
                let kept: Vec<&str> = first
                    .split(';')
                    .filter(|p| {
                        let k = p.split('=').next().unwrap_or("").trim().to_ascii_lowercase();
                        k != "received" && k != "rport"
                    })
                    .collect();
                let stamped = format!(
                    "{};received={};rport={}{rest}",
                    kept.join(";"),
                    peer.ip(),
                    peer.port()
                );
                if let Some(h) = m.headers.iter_mut().find(|h| h.name == "Via") {
                    h.value = stamped;
                }
            }
        }
        if !sip::KNOWN_METHODS.contains(&method.as_str()) {
            return self.refuse(flow, &m, 501, "");
        }
        if self.cfg.srst && method == "REFER" {
            return self.refuse(flow, &m, 501, "not available in SRST");
        }
        if !matches!(sip::scheme(&uri).as_deref(), Some("sip" | "sips" | "tel")) {
            return self.refuse(flow, &m, 416, "");
        }
        if !matches!(method.as_str(), "ACK" | "CANCEL") {
            let unsupported: Vec<String> = m
                .all("Require")
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .filter(|t| !t.is_empty() && !SUPPORTED.iter().any(|s| s.eq_ignore_ascii_case(t)))
                .map(str::to_owned)
                .collect();
            if !unsupported.is_empty() {
                self.counters.refused += 1;
                let mut r = self.reply(&m, 420, "");
                r.push("Unsupported", unsupported.join(", "));
                return self.send(flow, &r);
            }
        }
        // Loose routing (§16.4): a Route naming this cluster is ours to pop.
        let routes: Vec<String> = m
            .all("Route")
            .flat_map(|v| split_list(v).unwrap_or_default())
            .map(str::to_owned)
            .collect();
        let ours = routes
            .first()
            .is_some_and(|r| parse_name_addr(r).is_ok_and(|na| self.is_ours(&na.uri)));
        if ours {
            m.remove("Route");
            for r in &routes[1..] {
                m.push("Route", r.clone());
            }
        }
        if !self.cfg.srst && self.for_bridge(&m) {
            return self.bridge(now, flow, &m);
        }
        let in_dialog = m.tag("To").is_some();
        if method == "BYE" {
            self.track_call(now, &m);
        }
        match method.as_str() {
            "REGISTER" => self.register(now, flow, &m),
            "SUBSCRIBE" => self.subscribe(now, flow, &m),
            // OPTIONS to a line goes to its device, like a call; to the node, answered here.
            "OPTIONS" if !in_dialog && uri_user(&uri).is_some_and(|u| self.line(&u).is_some()) => {
                match self.target(now, &m) {
                    Some(to) => self.forward(flow, to, m, false),
                    None => self.refuse(flow, &m, 480, "not registered"),
                }
            }
            "OPTIONS" if !in_dialog => {
                let mut r = self.reply(&m, 200, "");
                r.push("Allow", ALLOW);
                r.push("Accept", "application/sdp");
                r.push("Supported", SUPPORTED.join(","));
                self.send(flow, &r);
            }
            "INVITE" if !in_dialog => self.invite(now, flow, m),
            "CANCEL" => match self.target(now, &m) {
                Some(to) => self.forward(flow, to, m, false),
                None => self.refuse(flow, &m, 481, ""),
            },
            _ if ours || in_dialog => match self.dialog_target(now, &m) {
                Some(to) => self.forward(flow, to, m, false),
                // The ACK of a non-2xx final response goes where its INVITE went (§17.1.1.3).
                None if method == "ACK" => {
                    if let Some(to) = self.target(now, &m) {
                        self.forward(flow, to, m, false);
                    }
                }
                None => self.refuse(flow, &m, 481, ""),
            },
            "BYE" | "ACK" | "PRACK" | "UPDATE" | "INFO" | "NOTIFY" => {
                self.refuse(flow, &m, 481, "")
            }
            _ => self.refuse(flow, &m, 405, ""),
        }
    }

    /// The line for a user part: a directory number or a user id.
    fn line(&self, user: &str) -> Option<&SipLine> {
        let i = self.line_index.get(&user.to_ascii_lowercase())?;
        self.cfg.lines.get(*i)
    }

    /// A line's live binding, the most recently refreshed first.
    fn binding(&self, extension: &str, now: Duration) -> Option<&Binding> {
        self.bindings
            .get(extension)?
            .values()
            .filter(|b| b.expires_at > now)
            .max_by_key(|b| b.expires_at)
    }

    /// Where a dialog-creating request (or its CANCEL) goes: the callee line's binding.
    fn target(&self, now: Duration, m: &Message) -> Option<(FlowId, String)> {
        let Start::Request { uri, .. } = &m.start else { return None };
        let user = uri_user(uri)?;
        let line = self.line(&user)?;
        let b = self.binding(&line.extension, now)?;
        self.flows.contains_key(&b.flow).then(|| (b.flow, b.contact.clone()))
    }

    /// Where an in-dialog request goes: the binding whose contact is the Request-URI (our own
    /// Route has been popped; the lab's dialogs have no other hop).
    fn dialog_target(&self, now: Duration, m: &Message) -> Option<(FlowId, String)> {
        let Start::Request { uri, .. } = &m.start else { return None };
        let by_contact = self
            .bindings
            .values()
            .flat_map(|d| d.values())
            .filter(|b| b.expires_at > now && self.flows.contains_key(&b.flow))
            .find(|b| same_uri(&b.contact, uri));
        by_contact.map(|b| (b.flow, uri.clone()))
    }

    fn invite(&mut self, now: Duration, flow: FlowId, m: Message) {
        // §8.2.2.1: the Request-URI first (an unknown number is 404 whatever the body).
        let Start::Request { uri, .. } = &m.start else { return };
        let user = uri_user(uri).unwrap_or_default();
        let Some(line) = self.line(&user).cloned() else {
            return self.refuse(flow, &m, 404, "");
        };
        if let Some(ct) = m.get("Content-Type") {
            let ct = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            if !m.body.is_empty() && ct != "application/sdp" && !ct.starts_with("multipart/") {
                return self.refuse(flow, &m, 415, "");
            }
        }
        if let Some(enc) = m.get("Content-Encoding")
            && !enc.trim().eq_ignore_ascii_case("identity")
        {
            return self.refuse(flow, &m, 415, "");
        }
        if let Some(acc) = m.get("Accept") {
            let ok = acc.split(',').any(|a| {
                let a = a.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
                matches!(a.as_str(), "application/sdp" | "application/*" | "*/*")
            });
            if !ok {
                return self.refuse(flow, &m, 406, "");
            }
        }
        match self.target(now, &m) {
            Some(to) => {
                // Trying at once on a reliable hop (§8.2.6.1); over UDP a stateless proxy sends
                // none, so the caller's retransmissions (forwarded as they come) carry on.
                if self.flows[&flow].transport != Transport::Udp {
                    let t = m.response(100, "Trying", None);
                    self.send(flow, &t);
                }
                self.forward(flow, to, m, true);
            }
            None => {
                let why = format!("{} is not registered", line.extension);
                self.refuse(flow, &m, 480, &why);
            }
        }
    }

    /// Stateless forwarding (§16.11): Max-Forwards, our Via (branch derived from the
    /// incoming one, so retransmissions and CANCEL take the same), Record-Route when a dialog
    /// starts, the Request-URI retargeted to the contact.
    fn forward(
        &mut self,
        from: FlowId,
        (to, ruri): (FlowId, String),
        mut m: Message,
        record_route: bool,
    ) {
        let mf = m.get("Max-Forwards").and_then(|v| v.parse::<u32>().ok()).unwrap_or(70);
        if mf == 0 {
            return self.refuse(from, &m, 483, "");
        }
        m.set("Max-Forwards", (mf - 1).to_string());
        let (node, port, in_t) = self.node_of(from);
        let (_, _, out_t) = self.node_of(to);
        let method = m.method().unwrap_or("").to_owned();
        // ACK and CANCEL take the INVITE's branch (§17.2.3 matching at the next hop).
        let key_method =
            if matches!(method.as_str(), "ACK" | "CANCEL") { "INVITE" } else { &method };
        let top = m.top_via().and_then(|v| v.branch().map(str::to_owned)).unwrap_or_else(|| {
            format!("{}{}", m.call_id().unwrap_or(""), m.cseq().map(|c| c.0).unwrap_or(0))
        });
        let branch = format!("z9hG4bK{:016x}", fnv(&[&top, key_method, &node]));
        let via = format!("SIP/2.0/{} {node}:{port};branch={branch}", out_t.as_str());
        m.headers.insert(0, sip::Header { name: "Via".into(), value: via });
        if record_route {
            let t = match in_t {
                Transport::Udp => "udp",
                Transport::Tcp => "tcp",
                Transport::Tls => "tls",
            };
            let rr = format!("<sip:{node}:{port};transport={t};lr>");
            m.headers.insert(1, sip::Header { name: "Record-Route".into(), value: rr });
        }
        if let Start::Request { uri, .. } = &mut m.start {
            *uri = ruri;
        }
        self.counters.forwarded += 1;
        self.send(to, &m);
    }

    /// A response: our Via on top is popped and the rest goes where the next Via says
    /// (received/rport, else sent-by), on the stream from there if there is one (§18.2.2).
    fn response(&mut self, mut m: Message) {
        let Some(top) = m.top_via() else { return self.counters.unreadable += 1 };
        let host = top.sent_by.split(':').next().unwrap_or("").to_ascii_lowercase();
        if !self.nodes.contains_key(&host) {
            return; // not ours: stray response, dropped (§18.2.2 "discard")
        }
        let vias = m.vias();
        if vias.len() == 1 {
            // An answer to a request of our own: a NOTIFY (SPEC CC6).
            if m.method() == Some("NOTIFY") {
                self.notify_answered(&m);
            }
            return;
        }
        self.track_call(self.clock, &m);
        m.remove("Via");
        for v in &vias[1..] {
            m.push("Via", v.clone());
        }
        // Keep Via first in the header order.
        let (via, rest): (Vec<_>, Vec<_>) = m.headers.drain(..).partition(|h| h.name == "Via");
        m.headers = via.into_iter().chain(rest).collect();
        let Some(next) = m.top_via() else { return };
        let param = |k: &str| next.params.iter().find(|(n, _)| n == k).and_then(|(_, v)| v.clone());
        let addr = param("received")
            .and_then(|ip| ip.parse::<std::net::IpAddr>().ok())
            .zip(param("rport").and_then(|p| p.parse::<u16>().ok()))
            .map(|(ip, p)| SocketAddr::new(ip, p));
        let Some(addr) = addr else { return };
        let stream = self
            .flows
            .iter()
            .find(|(_, f)| f.peer == addr && f.transport != Transport::Udp)
            .map(|(k, _)| *k);
        let flow = stream.or_else(|| {
            let node = host.clone();
            self.udp_flow(&node, addr)
        });
        if let Some(f) = flow {
            self.send(f, &m);
        }
    }
}

/// URIs compared the way the lab's contacts need: scheme, user and host:port, case-insensitive.
fn same_uri(a: &str, b: &str) -> bool {
    let key = |u: &str| u.split([';', '?']).next().unwrap_or("").to_ascii_lowercase();
    key(a) == key(b)
}

/// A transcript line (one form for every SIP speaker in the lab).
pub use uclab_proto::sip::transcript_line as summary;

/// DSCP of call signalling (SPEC MEDIA2: CS3).
pub const DSCP_SIGNALLING: u8 = uclab_proto::dscp::SIGNALLING;

/// Serves node `host`'s SIP: UDP and TCP on `port`, TLS on `tls_port` if any (certificate `names`),
/// all into the shared `cluster`, until the node stops. A crash drops this future; the node's
/// flows and their bindings go with it.
pub async fn serve<N: uclab_net::Net + Clone + 'static>(
    net: N,
    host: String,
    (port, tls_port): (u16, Option<u16>),
    names: Vec<String>,
    cluster: Rc<RefCell<Cluster>>,
) -> std::io::Result<()> {
    let mut udp = net.bind_udp(port).await?;
    udp.set_dscp(DSCP_SIGNALLING);
    let udp = Rc::new(udp);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Outgoing>();
    cluster.borrow_mut().add_node(&host, port, tx);
    if let Some(p) = tls_port {
        cluster.borrow_mut().set_tls_port(&host, p);
    }
    struct Gone(Rc<RefCell<Cluster>>, String);
    impl Drop for Gone {
        fn drop(&mut self) {
            if let Ok(mut c) = self.0.try_borrow_mut() {
                c.remove_node(&self.1);
            }
        }
    }
    let _gone = Gone(cluster.clone(), host.clone());
    let tcp = net.listen(port).await?;
    let tls_listener = match tls_port {
        Some(p) => Some(net.listen(p).await?),
        None => None,
    };
    let tls = net.tls().server_config(&names).map_err(std::io::Error::other)?;
    let accept = |listener: uclab_net::TcpAcceptor, transport: Transport| {
        let (net, host, cluster, tls) = (net.clone(), host.clone(), cluster.clone(), tls.clone());
        let limit = crate::limits::ConnLimit::new(
            crate::limits::STREAM_CONNECTIONS,
            crate::limits::PER_PEER,
        );
        tokio::task::spawn_local(async move {
            loop {
                let mut conn = crate::limits::next_conn(&listener).await;
                let Some(slot) = limit.admit(conn.peer_addr().ip()) else {
                    continue; // over a cap: closed at once
                };
                conn.set_dscp(DSCP_SIGNALLING);
                let (net, host, cluster, tls) =
                    (net.clone(), host.clone(), cluster.clone(), tls.clone());
                tokio::task::spawn_local(async move {
                    let _slot = slot;
                    let (local, peer) = (conn.local_addr(), conn.peer_addr());
                    let io: Box<dyn uclab_net::AsyncIo> = match transport {
                        Transport::Tls => {
                            let t = tokio::time::timeout(
                                Duration::from_secs(10),
                                net.tls().accept(tls, Box::new(conn)),
                            );
                            match t.await {
                                Ok(Ok(s)) => Box::new(s),
                                _ => return,
                            }
                        }
                        _ => Box::new(conn),
                    };
                    stream(&net, (local, peer), io, transport, &host, &cluster).await;
                });
            }
        })
    };
    let t1 = accept(tcp, Transport::Tcp);
    let t2 = tls_listener.map(|l| accept(l, Transport::Tls));
    struct Abort(Vec<tokio::task::JoinHandle<()>>);
    impl Drop for Abort {
        fn drop(&mut self) {
            for h in &self.0 {
                h.abort();
            }
        }
    }
    let _tasks = Abort([Some(t1), t2].into_iter().flatten().collect());
    let local = udp.local_addr();
    let mut buf = vec![0u8; 65_535];
    loop {
        tokio::select! {
            biased;
            r = udp.recv_from(&mut buf) => {
                let (n, from) = r?;
                if buf[..n].iter().all(|b| matches!(b, b'\r' | b'\n')) {
                    continue; // a keepalive
                }
                let now = net.now();
                let mut c = cluster.borrow_mut();
                if let Some(flow) = c.udp_flow(&host, from) {
                    c.handle(now, flow, &buf[..n]);
                }
            }
            Some(out) = rx.recv() => {
                net.transcript().message(net.now(), local, out.to, "udp", &out.summary);
                let _ = udp.send_to(&out.bytes, out.to).await;
            }
        }
    }
}

/// Node `host`'s conference bridge on UDP `port` (DSCP 46, SPEC MEDIA2): every RTP packet
/// from a participant goes to the conference's other participants.
pub async fn bridge<N: uclab_net::Net>(
    net: N,
    host: String,
    port: u16,
    cluster: Rc<RefCell<Cluster>>,
) -> std::io::Result<()> {
    let mut udp = net.bind_udp(port).await?;
    udp.set_dscp(uclab_proto::dscp::AUDIO);
    cluster.borrow_mut().set_bridge(&host, udp.local_addr());
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, from) = udp.recv_from(&mut buf).await?;
        let to = cluster.borrow().bridge_targets(from);
        for t in to {
            let _ = udp.send_to(&buf[..n], t).await;
        }
    }
}

/// One TCP or TLS connection: framed messages into the cluster, its outbox out.
async fn stream<N: uclab_net::Net>(
    net: &N,
    (local, peer): (SocketAddr, SocketAddr),
    mut io: Box<dyn uclab_net::AsyncIo>,
    transport: Transport,
    host: &str,
    cluster: &Rc<RefCell<Cluster>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use uclab_proto::sip::frame::{Frame, StreamFramer};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Outgoing>();
    let flow = cluster.borrow_mut().open_stream(host, transport, peer, tx);
    struct Close<'a>(&'a Rc<RefCell<Cluster>>, FlowId);
    impl Drop for Close<'_> {
        fn drop(&mut self) {
            if let Ok(mut c) = self.0.try_borrow_mut() {
                c.close_flow(self.1);
            }
        }
    }
    let _close = Close(cluster, flow);
    let mut framer = StreamFramer::new();
    let mut buf = vec![0u8; 16 * 1024];
    // Deadlines (issue 13): idle since the last byte, or the rest of a started message.
    // tokio's clock: the node's virtual time under turmoil, so a replay is unaffected.
    let mut last_byte = tokio::time::Instant::now();
    let mut partial_since: Option<tokio::time::Instant> = None;
    loop {
        let (deadline, why) = match partial_since {
            Some(t) => (t + TCP_PARTIAL, "SIP message incomplete after 10 s; closed"),
            None => (last_byte + TCP_IDLE, "SIP connection idle for 300 s; closed"),
        };
        tokio::select! {
            biased;
            r = io.read(&mut buf) => {
                let n = match r {
                    Ok(0) | Err(_) => {
                        // What was answered before the peer closed still goes out.
                        while let Ok(out) = rx.try_recv() {
                            net.transcript().message(net.now(), local, peer, "tcp", &out.summary);
                            if io.write_all(&out.bytes).await.is_err() {
                                break;
                            }
                        }
                        if framer.finish().is_err() {
                            net.transcript().message(net.now(), peer, local, "tcp", "SIP stream closed inside a message");
                        }
                        return;
                    }
                    Ok(n) => n,
                };
                last_byte = tokio::time::Instant::now();
                framer.feed(&buf[..n]);
                loop {
                    match framer.next_frame() {
                        Ok(Some(Frame::Message(m))) => {
                            partial_since = None;
                            let now = net.now();
                            cluster.borrow_mut().handle(now, flow, &m);
                        }
                        Ok(Some(Frame::Ping)) => {
                            // RFC 5626 §3.5.1: pong.
                            if io.write_all(b"\r\n").await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => {
                            partial_since = match (framer.partial(), partial_since) {
                                (true, None) => Some(last_byte),
                                (true, t) => t,
                                (false, _) => None,
                            };
                            break;
                        }
                        Err(e) => {
                            // §18.3: framing lost: the connection is closed.
                            net.transcript().message(net.now(), peer, local, "tcp", &format!("SIP framing lost: {e}; closed"));
                            let _ = io.shutdown().await;
                            return;
                        }
                    }
                }
            }
            Some(out) = rx.recv() => {
                net.transcript().message(net.now(), local, peer, "tcp", &out.summary);
                if io.write_all(&out.bytes).await.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                net.transcript().message(net.now(), peer, local, "tcp", why);
                let _ = io.shutdown().await;
                return;
            }
        }
    }
}

/// The SIP token check, re-exported for the node's config checks.
pub fn valid_extension(e: &str) -> bool {
    is_token(e)
}

#[cfg(test)]
mod tests;
