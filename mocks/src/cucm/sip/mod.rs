//! CUCM's SIP line side (SPEC CC1–CC5; WIRE.md "SIP to CUCM"): the registrar of the cluster's
//! CSF devices and the call routing between registered lines, over UDP and TCP 5060 and TLS
//! 5061.
//!
//! One [`Cluster`] serves every node of a CUCM cluster, as the real nodes share their
//! registrations through the database: a call from a phone on cucm1 reaches a phone on cucm2.
//! Each node's sockets open *flows* (a TCP or TLS connection, or a UDP peer) into it. The
//! cluster does no I/O: it queues what it sends, addressed to a TCP or TLS flow or to a node's
//! UDP socket ([`Dest`]), and whoever drives it drains [`Cluster::poll_output`] after every
//! call (the sockets in `serve.rs` through [`ClusterIo`]; the REGISTER bench and the tests
//! directly).
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
//!
//! The service's files: this one holds the cluster's state (lines, flows, bindings, nonces) and
//! what every part of it uses (replies, refusals, the line and binding lookups); `proxy.rs`
//! checks each request and routes it (the registrar, presence, the bridge, or a registered
//! line) and routes responses back; `registrar.rs` is REGISTER (SPEC CC1, CC2); `blf.rs` line
//! presence and the trunk to IM&P (CC6, CC7); `conf.rs` the ad hoc conference bridge;
//! `serve.rs` the node's sockets, the only I/O, and the bounded channels to their tasks. The
//! same code serves an SRST router, with [`SipConfig::srst`] set (SPEC CC5).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use uclab_proto::sip::{Message, Start, is_token, parse, reason};

mod blf;
mod conf;
mod proxy;
mod registrar;
mod serve;
pub use blf::{MAX_BLF, PresencePolicy, pidf};
pub use conf::{ADHOC, MAX_CONFERENCES, MAX_PARTICIPANTS};
pub use serve::{ClusterIo, FLOW_QUEUE, UDP_QUEUE, bridge, serve};

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

/// Where an [`Outgoing`] message goes: the socket it leaves by.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dest {
    /// A TCP or TLS flow: its connection.
    Stream(FlowId),
    /// Node `host`'s UDP socket (lower case): a UDP flow's peer, or the trunk to IM&P.
    Udp(String),
}

#[derive(Debug)]
struct Flow {
    node: String,
    transport: Transport,
    peer: SocketAddr,
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
    /// Expressway-C's addresses: one connection per device behind the edge, so the per-peer
    /// connection cap does not apply to them (issue 17).
    pub trusted_peers: Vec<std::net::IpAddr>,
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
///
/// Sans-IO, in the quinn-proto and str0m manner. Setup: [`Cluster::new`], the `set_*`
/// methods, [`Cluster::add_node`]. Inputs: [`Cluster::open_stream`] and
/// [`Cluster::udp_flow`] make flows, [`Cluster::handle`] takes a message from one,
/// [`Cluster::close_flow`] and [`Cluster::remove_node`] end them. Output:
/// [`Cluster::poll_output`], the messages to send in the order they were made. Every input
/// (and `remove_node`) must be followed by a complete drain of `poll_output`, before anything
/// else reaches the cluster, so that messages leave in order and the queue stays as short as
/// one input's answers. Getters ([`Cluster::bindings`], [`Cluster::counters`], …) change
/// nothing.
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
    /// What to send, oldest first (drained by [`Cluster::poll_output`]).
    out: std::collections::VecDeque<(Dest, Outgoing)>,
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
    /// Peers the connection cap per address does not apply to (Expressway-C, issue 17).
    pub fn trusted_peers(&self) -> Vec<std::net::IpAddr> {
        self.cfg.trusted_peers.clone()
    }

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
            out: std::collections::VecDeque::new(),
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

    /// A node joins with its SIP port (UDP and TCP); what it sends over UDP goes to
    /// [`Dest::Udp`] with its name in lower case.
    pub fn add_node(&mut self, host: &str, port: u16) {
        self.nodes.insert(host.to_ascii_lowercase(), port);
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
        self.tls_ports.remove(&host);
        self.bridge_gone(&host);
        self.nodes.remove(&host);
    }

    /// A TCP or TLS connection was accepted by `node`: what goes to it is [`Dest::Stream`].
    pub fn open_stream(&mut self, node: &str, transport: Transport, peer: SocketAddr) -> FlowId {
        let id = FlowId(self.next_flow);
        self.next_flow += 1;
        self.flows.insert(id, Flow { node: node.to_ascii_lowercase(), transport, peer });
        id
    }

    /// A datagram came from `peer` to `node`'s UDP socket: its flow (none if the node has
    /// not joined).
    pub fn udp_flow(&mut self, node: &str, peer: SocketAddr) -> Option<FlowId> {
        let node = node.to_ascii_lowercase();
        if let Some(id) = self.udp.get(&(node.clone(), peer)) {
            return Some(*id);
        }
        if !self.nodes.contains_key(&node) {
            return None;
        }
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
        self.flows.insert(id, Flow { node: node.clone(), transport: Transport::Udp, peer });
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

    /// The next message to send and where, in the order they were made; `None` once all
    /// are out.
    pub fn poll_output(&mut self) -> Option<(Dest, Outgoing)> {
        self.out.pop_front()
    }

    /// Queues `m` for `flow` (a UDP flow's message leaves by its node's socket); a flow that
    /// is gone gets nothing.
    fn send(&mut self, flow: FlowId, m: &Message) {
        let Some(f) = self.flows.get(&flow) else { return };
        let dest = match f.transport {
            Transport::Udp => Dest::Udp(f.node.clone()),
            Transport::Tcp | Transport::Tls => Dest::Stream(flow),
        };
        let out = Outgoing { to: f.peer, bytes: m.to_bytes(), summary: summary(m) };
        self.out.push_back((dest, out));
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
}

/// A transcript line (one form for every SIP speaker in the lab).
pub use uclab_proto::sip::transcript_line as summary;

/// DSCP of call signalling (SPEC MEDIA2: CS3).
pub const DSCP_SIGNALLING: u8 = uclab_proto::dscp::SIGNALLING;

/// The SIP token check, re-exported for the node's config checks.
pub fn valid_extension(e: &str) -> bool {
    is_token(e)
}

#[cfg(test)]
mod tests;
