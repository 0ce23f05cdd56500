//! The softphone's SIP registration engine (SPEC CC1–CC3, CC5; WIRE.md "SIP to CUCM"),
//! sans-IO.
//!
//! From the CSF device's `cnf.xml` (SPEC CC2): the CUCM group in priority order and the SRST
//! reference. The phone registers to the first member that answers (`Expires: 3600` asked,
//! `Expires: 120` granted, refreshed `timerRegisterDelta` before it runs out), answering a
//! digest challenge with the user's credentials. While registered it sends the next member the
//! keepalive REGISTER of WIRE.md (`Expires: 0`, `;cisco-keep-alive`) every
//! `timerKeepAliveExpires`, and checks its own connection with RFC 5626 CRLF pings.
//!
//! CC3: when the active node goes away (the connection breaks, a ping or a REGISTER gets no
//! answer) the phone registers to the next member at once, which bounds the failover by the
//! ping interval and timeout, well inside the 120 s of the SIP Station KeepAlive Interval.
//! CC5: when no member answers, it registers to the SRST router; it keeps probing the first
//! member and, once that has answered for `connectionMonitorDuration`, registers there again
//! and leaves SRST.
//!
//! Every message goes over the device's `transportLayerProtocol`: TCP (2, and 4 "TCP
//! preferred"), UDP (1: one message per datagram, transactions retransmit, and OPTIONS to
//! the registrar stand in for the CRLF pings of a connection), or TLS on the secure port when
//! the device security mode is "encrypted" (3).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use uclab_proto::dns::QType;
use uclab_proto::sip::frame::{Frame, StreamFramer};
use uclab_proto::sip::txn::{ClientTxn, Timers, TxnOutput};
use uclab_proto::sip::{self, Message, digest};
use uclab_proto::uds::DeviceConfig;

use crate::Time;
use crate::event::ClientEvent;
use crate::io::{ConnId, Input, Output};
use crate::resolver::{Dns, QueryToken};
use crate::sip::blf::Watches;
use crate::sip::call::{CallAction, Calls, Ctx, Mode, Send, hex, rport, sends_of};
use crate::sip::uas::{Seen, Uas};

pub use self::error::PhoneError;

mod calls;
mod error;
mod failover;
use failover::{Monitor, SrstMonitor};
mod register;

/// How often the active connection is pinged (RFC 5626 §4.4.1 CRLF keepalive).
pub const PING_INTERVAL: Duration = Duration::from_secs(30);
/// How long a ping may go unanswered before the node counts as gone.
pub const PONG_TIMEOUT: Duration = Duration::from_secs(10);
/// Through the edge: how long the STUN keepalive to Expressway-E may go unanswered (WIRE.md:
/// every 30 s, 3 s timeout).
pub const STUN_TIMEOUT: Duration = Duration::from_secs(3);
/// Why the edge is lost when its keepalive goes unanswered.
const STUN_UNANSWERED: &str = "no answer to the STUN keepalive within 3 s";
/// Call messages held while no connection is up (SPEC CC3 failover), at most.
const MAX_HELD: usize = 64;
/// How long to wait before trying the group again when nothing answered.
pub const RETRY: Duration = Duration::from_secs(30);
/// How long resolving and connecting may take at one node (a REGISTER then has Timer F).
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// DSCP of call signalling (SPEC MEDIA2: CS3).
pub const DSCP_SIGNALLING: u8 = uclab_proto::dscp::SIGNALLING;
pub use crate::sip::USER_AGENT;

/// The softphone through the edge (SPEC MRA1; WIRE.md "Expressway MRA"): every leg goes to
/// Expressway-E's `sipEdgeServer` over TLS (E's certificate checked against the domain),
/// requests carry the edge configuration's `sipRequest` route, and the Contact says the
/// client registers through MRA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipEdge {
    /// Expressway-E's SIP address (`sipEdgeServer`, TLS).
    pub addr: SocketAddr,
    /// The domain E's certificate must name.
    pub domain: String,
    /// The `sipRequest/route` of the edge configuration (a Route header value).
    pub route: Option<String>,
}

/// The Contact parameters of a registration through the edge (WIRE.md).
pub const MRA_CONTACT_PARAMS: &str = ";x-cisco-mra-ha=AR_SK;x-cisco-reg-id=1";

/// Who the phone registers as.
#[derive(Clone, Debug)]
pub struct PhoneUser {
    /// User id (digest user name).
    pub user: String,
    /// Password.
    pub password: String,
}

/// A place to register: a CUCM group member or the SRST router.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Target {
    host: String,
    port: u16,
    srst: bool,
}

/// What a leg is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// The registration.
    Active,
    /// Keepalives to the backup member.
    Keepalive,
    /// On SRST: probing the first member (CC5).
    Probe,
    /// Leaving SRST: the de-registration there.
    Leave,
}

/// One connection to one node with its own dialog identifiers.
#[derive(Debug)]
struct Leg {
    role: Role,
    target: usize,
    token: Option<QueryToken>,
    addr: Option<SocketAddr>,
    stream: Option<ConnId>,
    open: bool,
    framer: StreamFramer,
    call_id: String,
    tag: String,
    cseq: u32,
    txn: Option<ClientTxn>,
    /// The request waiting for the stream to open.
    queued: Option<Message>,
    /// The challenge last answered (a second 401 for the same credentials is final).
    challenged: bool,
    /// When the current step (resolve, connect, REGISTER) must be done.
    deadline: Option<Time>,
}

/// What a phone deadline is for (quinn's `Timer`): "why was I woken?" has an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PhoneTimer {
    /// The REGISTER refresh, `timerRegisterDelta` before the granted expiry.
    Refresh,
    /// The keepalive REGISTER to the backup member (WIRE.md).
    Keepalive,
    /// The next CRLF or OPTIONS ping of the active connection (RFC 5626 §4.4.1).
    Ping,
    /// The answer to a CRLF ping is overdue.
    Pong,
    /// On SRST: the next probe of the first member (SPEC CC5).
    Probe,
    /// Nothing answered: the whole list again.
    Retry,
    /// The OPTIONS ping's retransmission or its Timer F.
    PingTxn,
    /// A leg's step (resolve, connect) or its REGISTER transaction.
    Leg,
    /// A call's or a watch's transaction, the calls' media, or an answered request kept for
    /// retransmissions.
    Calls,
    /// A DNS retransmission.
    Dns,
}

/// Registration state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Registering at target `i`.
    Registering(usize),
    /// Registered at target `i` until the time given.
    Registered(usize, Time),
    /// Nothing answered; trying again at the time given.
    Waiting(Time),
    /// Closed.
    Closed,
}

/// The registration engine.
#[derive(Debug)]
pub struct Phone {
    user: PhoneUser,
    cfg: DeviceConfig,
    targets: Vec<Target>,
    state: State,
    legs: Vec<Leg>,
    resolver: Dns,
    rng: ChaCha8Rng,
    timers: Timers,
    /// Our address as the connection shows it (for Contact), learnt from the driver's stream.
    instance: String,
    /// Answer incoming calls at once.
    auto_answer: bool,
    /// An incoming call rang and is to be answered (auto-answer).
    answer_due: bool,
    next_dns: u16,
    /// Next refresh, keepalive, ping and pong deadlines.
    refresh_at: Option<Time>,
    keepalive_at: Option<Time>,
    ping_at: Option<Time>,
    pong_by: Option<Time>,
    /// Over UDP: the OPTIONS ping's transaction (it retransmits; Timer F is the pong
    /// timeout), to the active node.
    ping_txn: Option<ClientTxn>,
    /// On SRST: watching for the first member to come back (CC5).
    monitor: SrstMonitor,
    /// Calls (SPEC CC4, CC5) and their client transactions.
    calls: Calls,
    call_txns: Vec<ClientTxn>,
    /// Watched lines (SPEC CC6).
    watches: Watches,
    /// Call messages made while no connection was up, sent once registered again.
    held: VecDeque<Message>,
    /// Our address as the registrar saw it (its Via `received`), for SDP.
    local_ip: String,
    /// Whether the last registration was lost and a new one is under way (SPEC CC4).
    failing_over: bool,
    /// Requests answered over UDP, for their retransmissions (RFC 3261 §17.2).
    uas: Uas,
    /// The time of the input being handled (responses the calls send are stamped with it).
    clock: Time,
    /// Through the edge (SPEC MRA1): where every leg goes, and the route.
    edge: Option<SipEdge>,
    /// Through the edge: the edge stopped answering the STUN keepalive while a call was up;
    /// the failover waits for the call to end (CC4 in spirit).
    edge_lost_pending: bool,
    /// The edge is lost: the composite registers through the next edge.
    edge_lost: bool,
    /// Why the edge was lost (kept while the failover waits for a call).
    edge_why: String,
    out: VecDeque<Output>,
}

impl Phone {
    /// Starts registering `user`'s CSF device configured by `cfg`.
    pub fn start(now: Time, user: PhoneUser, cfg: DeviceConfig, resolver: Dns, seed: u64) -> Self {
        let mut p = Self::new(now, user, cfg, resolver, seed);
        p.register_at(now, 0);
        p
    }

    /// Starts registering from outside, through the edge (SPEC MRA1): the CUCM group in
    /// order, each through Expressway-E over TLS. The SRST router is inside and not reachable
    /// from outside: it is left out (SPEC CC5 does not apply over MRA).
    pub fn start_through_edge(
        now: Time,
        user: PhoneUser,
        cfg: DeviceConfig,
        edge: SipEdge,
        resolver: Dns,
        seed: u64,
    ) -> Self {
        let mut p = Self::new(now, user, cfg, resolver, seed);
        p.targets.retain(|t| !t.srst);
        p.edge = Some(edge);
        let reliable = !p.udp();
        p.calls.reliable = reliable;
        p.watches.reliable = reliable;
        p.register_at(now, 0);
        p
    }

    fn new(now: Time, user: PhoneUser, cfg: DeviceConfig, resolver: Dns, seed: u64) -> Self {
        let tls = cfg.security_mode == 3;
        let mut targets: Vec<Target> = cfg
            .members
            .iter()
            .map(|(h, p, s)| Target {
                host: h.clone(),
                port: if tls { *s } else { *p },
                srst: false,
            })
            .collect();
        if let Some((ip, port)) = &cfg.srst {
            targets.push(Target { host: ip.clone(), port: *port, srst: true });
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let instance = format!("00000000-0000-0000-0000-{}", hex(&mut rng, 12));
        let timers = Timers {
            t1: Duration::from_millis(u64::from(cfg.t1_t2.0.max(100))),
            t2: Duration::from_millis(u64::from(cfg.t1_t2.1.max(cfg.t1_t2.0).max(100))),
            ..Timers::default()
        };
        let calls = Calls::new(uclab_net::derive_seed(seed, "calls"), timers, cfg.media_ports);
        let mut p = Self {
            calls,
            watches: Watches::new(uclab_net::derive_seed(seed, "blf"), timers),
            held: VecDeque::new(),
            call_txns: Vec::new(),
            local_ip: "0.0.0.0".into(),
            failing_over: false,
            uas: Uas::new(timers),
            clock: now,
            user,
            cfg,
            targets,
            state: State::Waiting(now),
            legs: Vec::new(),
            resolver,
            rng,
            timers,
            instance,
            auto_answer: false,
            answer_due: false,
            next_dns: (seed >> 20) as u16 | 1,
            refresh_at: None,
            keepalive_at: None,
            ping_at: None,
            pong_by: None,
            ping_txn: None,
            monitor: SrstMonitor::default(),
            edge: None,
            edge_lost_pending: false,
            edge_lost: false,
            edge_why: String::new(),
            out: VecDeque::new(),
        };
        let reliable = !p.udp();
        p.calls.reliable = reliable;
        p.watches.reliable = reliable;
        p
    }

    /// Through the edge: the edge is lost (`why`: its STUN keepalive went unanswered for
    /// [`STUN_TIMEOUT`], or a leg could not reach it at all). With a call up the phone waits
    /// for it to end; then (or at once) its legs close and [`Phone::take_edge_lost`] says so,
    /// for the composite to register through the next edge of the `_collab-edge` answer.
    pub(super) fn lose_edge(&mut self, now: Time, why: &str) {
        let node = match self.state {
            State::Registered(t, _) | State::Registering(t) => self.node(t),
            _ => String::new(),
        };
        if self.calls.any_up() {
            if !self.edge_lost_pending {
                self.edge_lost_pending = true;
                why.clone_into(&mut self.edge_why);
                self.event(ClientEvent::PhoneState {
                    state: "edge-unreachable".into(),
                    node,
                    reason: format!("{why}; failover after the call"),
                });
            }
            return;
        }
        self.edge_lost_pending = false;
        self.edge_lost = true;
        self.event(ClientEvent::PhoneState {
            state: "edge-failover".into(),
            node,
            reason: why.to_owned(),
        });
        self.close();
        self.clock = now;
    }

    /// Whether the edge was lost since the last call (the composite then moves every
    /// engine to the next edge).
    pub fn take_edge_lost(&mut self) -> bool {
        if self.edge_lost_pending && !self.calls.any_up() {
            let (now, why) = (self.clock, std::mem::take(&mut self.edge_why));
            self.lose_edge(now, &why);
        }
        std::mem::take(&mut self.edge_lost)
    }

    /// Whether registration has come to rest: registered, closed, or waiting to retry.
    pub fn is_settled(&self) -> bool {
        !matches!(self.state, State::Registering(_))
    }

    /// Ends the phone (a new sign-in, a network change): its connections are closed.
    pub fn close(&mut self) {
        for l in std::mem::take(&mut self.legs) {
            if let Some(id) = l.stream {
                self.out.push_back(Output::StreamClose { id });
            }
        }
        self.clear_timers();
        self.monitor.stop();
        self.state = State::Closed;
        self.held.clear();
        self.calls.close_all();
        self.flush_calls();
    }

    /// The node the phone is registered with, and whether it is the SRST router.
    pub fn registered(&self) -> Option<(&str, bool)> {
        match self.state {
            State::Registered(i, _) => Some((self.targets[i].host.as_str(), self.targets[i].srst)),
            _ => None,
        }
    }

    /// Next output.
    pub fn poll_output(&mut self) -> Option<Output> {
        if self.out.is_empty() {
            // A query started outside an input (at start, on a timer) is sent now, not when
            // the next datagram happens to arrive (issue 14: it went out with its own
            // retransmission 2 s late, the same id twice on the wire).
            self.pump(self.clock);
        }
        if self.out.is_empty() && std::mem::take(&mut self.answer_due) {
            // Auto-answer: the ringing call is answered once what came before it is out.
            self.act(self.clock, &CallAction::Answer);
        }
        crate::io::next_out(&mut self.out)
    }

    /// Answer incoming calls at once (`uclab probe-sip --answer`).
    pub fn set_auto_answer(&mut self, on: bool) {
        self.auto_answer = on;
    }

    /// Next deadline.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.next_timer().map(|(t, _)| t)
    }

    /// The next deadline and what it is for.
    pub fn next_timer(&self) -> Option<(Time, PhoneTimer)> {
        let legs = self
            .legs
            .iter()
            .flat_map(|l| [l.deadline, l.txn.as_ref().and_then(ClientTxn::poll_timeout)])
            .flatten()
            .min();
        let waiting = match self.state {
            State::Waiting(t) => Some(t),
            _ => None,
        };
        let calls = self
            .call_txns
            .iter()
            .map(ClientTxn::poll_timeout)
            .chain([
                self.calls.poll_timeout(),
                self.watches.poll_timeout(),
                self.uas.poll_timeout(),
            ])
            .flatten()
            .min();
        [
            (self.refresh_at, PhoneTimer::Refresh),
            (self.keepalive_at, PhoneTimer::Keepalive),
            (self.ping_at, PhoneTimer::Ping),
            (self.pong_by, PhoneTimer::Pong),
            (self.monitor.probe_at(), PhoneTimer::Probe),
            (waiting, PhoneTimer::Retry),
            (self.ping_txn.as_ref().and_then(ClientTxn::poll_timeout), PhoneTimer::PingTxn),
            (legs, PhoneTimer::Leg),
            (calls, PhoneTimer::Calls),
            (self.resolver.poll_timeout(), PhoneTimer::Dns),
        ]
        .into_iter()
        .filter_map(|(t, w)| Some((t?, w)))
        .min_by_key(|(t, _)| *t)
    }

    fn event(&mut self, e: ClientEvent) {
        self.out.push_back(Output::Event(e));
    }

    fn node(&self, i: usize) -> String {
        self.targets.get(i).map(|t| t.host.clone()).unwrap_or_default()
    }

    /// Stops every timer of the registration (not the legs).
    fn clear_timers(&mut self) {
        self.refresh_at = None;
        self.keepalive_at = None;
        self.ping_at = None;
        self.pong_by = None;
        self.ping_txn = None;
    }

    fn transport(&self) -> &'static str {
        if self.edge.is_some() {
            // WIRE.md: the edge's SIP is TLS (`sipEdgeServer/tlsPort`).
            return "TLS";
        }
        match (self.cfg.security_mode, self.cfg.transport) {
            (3, _) => "TLS",
            (_, 1) => "UDP",
            _ => "TCP",
        }
    }

    /// SIP over UDP: datagrams, unreliable transactions.
    fn udp(&self) -> bool {
        self.transport() == "UDP"
    }

    fn local_host(&self) -> String {
        format!("{}.invalid", self.cfg.device.to_ascii_lowercase())
    }

    /// Our Contact (WIRE.md: the instance id and the device name as parameters).
    fn contact(&self) -> String {
        let mra = if self.edge.is_some() { MRA_CONTACT_PARAMS } else { "" };
        format!(
            "<sip:{}@{};transport={}>;+sip.instance=\"<urn:uuid:{}>\";+u.sip!devicename.ccm.cisco.com=\"{}\";+u.sip!model.ccm.cisco.com=\"503\"{mra}",
            self.instance,
            self.local_host(),
            self.transport().to_ascii_lowercase(),
            self.instance,
            self.cfg.device
        )
    }

    fn ctx(&self) -> Ctx {
        let mode = match self.state {
            State::Registered(t, _) if self.targets[t].srst => Mode::Srst,
            State::Registered(..) => Mode::Cucm,
            State::Registering(_) if self.failing_over => Mode::FailingOver,
            _ => Mode::Unregistered,
        };
        let registrar = match self.state {
            State::Registered(t, _) | State::Registering(t) => self.node(t),
            _ => self.node(0),
        };
        Ctx {
            mode,
            transport: self.transport(),
            local_host: self.local_host(),
            local_ip: self.local_ip.clone(),
            contact: self.contact(),
            line: self.cfg.line.clone(),
            registrar,
            route: self.edge.as_ref().and_then(|e| e.route.clone()),
        }
    }

    /// Feeds an input.
    pub fn handle_input(&mut self, now: Time, input: Input) {
        self.clock = now;
        let Some(input) = self.resolver.take_input(now, input) else {
            return self.pump(now);
        };
        if let Input::Media { port, bytes, .. } = &input {
            self.calls.on_media(*port, bytes);
            return self.flush_calls();
        }
        let leg_of = |legs: &[Leg], id: ConnId| legs.iter().position(|l| l.stream == Some(id));
        match input {
            Input::StreamOpened { id } => {
                if let Some(i) = leg_of(&self.legs, id) {
                    self.legs[i].open = true;
                    if let Some(e) = &self.edge {
                        // SPEC MRA1: E's certificate names the domain.
                        let host = e.domain.clone();
                        self.out.push_back(Output::StreamTls { id, host });
                        self.legs[i].open = false;
                    } else if self.cfg.security_mode == 3 {
                        let host = self.node(self.legs[i].target);
                        self.out.push_back(Output::StreamTls { id, host });
                        self.legs[i].open = false;
                    } else if let Some(m) = self.legs[i].queued.take() {
                        self.send(now, i, m);
                    }
                }
            }
            Input::StreamTls { id } => {
                if let Some(i) = leg_of(&self.legs, id) {
                    self.legs[i].open = true;
                    if let Some(m) = self.legs[i].queued.take() {
                        self.send(now, i, m);
                    }
                }
            }
            Input::StreamFailed { id, reason } => {
                if let Some(i) = leg_of(&self.legs, id) {
                    self.leg_failed(now, i, PhoneError::Connection(reason));
                }
            }
            Input::StreamData { id, bytes } => {
                if let Some(i) = leg_of(&self.legs, id) {
                    self.on_bytes(now, i, &bytes);
                }
            }
            _ => {}
        }
        self.pump(now);
    }

    fn on_bytes(&mut self, now: Time, i: usize, bytes: &[u8]) {
        if self.legs[i].role == Role::Active {
            self.pong_by = None; // anything heard answers the ping
        }
        if self.udp() {
            // One message per datagram (RFC 3261 §18.1.1); a bare CRLF is a keepalive.
            if !bytes.iter().all(|b| matches!(b, b'\r' | b'\n')) {
                self.on_message(now, i, bytes);
            }
            return;
        }
        self.legs[i].framer.feed(bytes);
        // A message may close legs (a failover): the leg is found again by its stream.
        let stream = self.legs[i].stream;
        loop {
            let Some(i) = self.legs.iter().position(|l| l.stream == stream) else { return };
            match self.legs[i].framer.next_frame() {
                Ok(Some(Frame::Message(b))) => self.on_message(now, i, &b),
                Ok(Some(Frame::Ping)) => {}
                // The edge's answer to the STUN keepalive (issue 17); anything heard on the
                // active leg already counted as the answer.
                Ok(Some(Frame::Stun(b))) => {
                    if let Err(e) = uclab_proto::stun::decode(&b) {
                        return self.leg_failed(now, i, PhoneError::Stun(e));
                    }
                }
                Ok(None) => return,
                Err(e) => return self.leg_failed(now, i, PhoneError::Framing(e)),
            }
        }
    }

    /// Time passed. Spurious calls no-op.
    pub fn handle_timeout(&mut self, now: Time) {
        self.clock = now;
        self.resolver.handle_timeout(now);
        if self.uas.poll_timeout().is_some_and(|t| t <= now) {
            let (again, no_ack) = self.uas.handle_timeout(now);
            self.send_active(again);
            let ctx = self.ctx();
            for call_id in no_ack {
                self.calls.on_no_ack(now, &ctx, &call_id);
            }
            self.flush_calls();
        }
        if self.calls.poll_timeout().is_some_and(|t| t <= now) {
            self.calls.handle_timeout(now);
            self.flush_calls();
        }
        if self.watches.poll_timeout().is_some_and(|t| t <= now) {
            let ctx = self.ctx();
            self.watches.handle_timeout(now, &ctx);
            self.flush_calls();
        }
        if self.call_txns.iter().any(|t| t.poll_timeout().is_some_and(|d| d <= now)) {
            for t in &mut self.call_txns {
                t.handle_timeout(now);
            }
            self.drain_call_txns(now);
        }
        for i in (0..self.legs.len()).rev() {
            if i >= self.legs.len() {
                continue;
            }
            if let Some(t) = self.legs[i].txn.as_mut() {
                t.handle_timeout(now);
                self.drain_txn(now, i);
            }
            if let Some(leg) = self.legs.get(i)
                && leg.deadline.is_some_and(|d| d <= now)
            {
                self.leg_failed(now, i, PhoneError::NoAnswer);
            }
        }
        let due = |t: Option<Time>| t.is_some_and(|t| t <= now);
        if let State::Waiting(t) = self.state
            && t <= now
        {
            self.register_at(now, 0);
            return self.pump(now);
        }
        if due(self.pong_by) {
            self.pong_by = None;
            if self.edge.is_some() {
                // Jabber 14 over MRA: the edge is gone; the next edge, once no call is up.
                self.lose_edge(now, STUN_UNANSWERED);
                return self.pump(now);
            }
            self.next_target(now, PhoneError::NoAnswerToPing);
            return self.pump(now);
        }
        if due(self.ping_txn.as_ref().and_then(ClientTxn::poll_timeout)) {
            let mut timed_out = false;
            let mut again = Vec::new();
            if let Some(t) = self.ping_txn.as_mut() {
                t.handle_timeout(now);
                while let Some(o) = t.poll_output() {
                    match o {
                        TxnOutput::Send(m) => again.push(m),
                        TxnOutput::Timeout => timed_out = true,
                        _ => {}
                    }
                }
            }
            self.send_active(again);
            if timed_out {
                self.ping_txn = None;
                self.next_target(now, PhoneError::NoAnswerToPing);
                return self.pump(now);
            }
        }
        if due(self.ping_at) {
            self.ping_at = Some(now + PING_INTERVAL);
            if self.udp() {
                // Over UDP there is no connection to ping with CRLF (RFC 5626 would use
                // STUN): an OPTIONS to the registrar, retransmitted as a non-INVITE
                // transaction; no answer by Timer F (64·T1) means the node is gone. One at
                // a time: Timer F outlasts the interval.
                if self.ping_txn.is_none()
                    && let Some(m) = self.options_ping()
                {
                    let mut t = ClientTxn::new(now, m, false, self.timers);
                    let first = sends_of(&mut t);
                    self.ping_txn = Some(t);
                    self.send_active(first);
                }
            } else if let Some(id) = self.active_stream()
                && self.edge.is_some()
            {
                // Jabber 14 over MRA: a STUN Binding to the edge, answered within 3 s.
                let mut txid = [0u8; 12];
                rand::RngCore::fill_bytes(&mut self.rng, &mut txid);
                let bytes = uclab_proto::stun::Binding::request(txid).encode();
                let summary = "STUN Binding request (edge keepalive)".into();
                self.out.push_back(Output::StreamSend { id, bytes, summary });
                self.pong_by = Some(now + STUN_TIMEOUT);
            } else if let Some(id) = self.active_stream() {
                let (bytes, summary) = (b"\r\n\r\n".to_vec(), "SIP keepalive ping".into());
                self.out.push_back(Output::StreamSend { id, bytes, summary });
                self.pong_by = Some(now + PONG_TIMEOUT);
            }
        }
        if due(self.refresh_at)
            && let Some(i) = self.legs.iter().position(|l| l.role == Role::Active)
        {
            self.refresh_at = None;
            let m = self.register_request(i, self.cfg.register_expires, false);
            self.send(now, i, m);
        }
        if due(self.keepalive_at)
            && let State::Registered(t, _) = self.state
        {
            self.keepalive_at =
                Some(now + Duration::from_secs(u64::from(self.cfg.keepalive.max(1))));
            if let Some(b) = (t + 1..self.targets.len()).find(|&b| !self.targets[b].srst) {
                self.heartbeat(now, Role::Keepalive, b);
            }
        }
        if self.monitor.probe_due(now) {
            self.heartbeat(now, Role::Probe, 0);
        }
        self.pump(now);
    }

    fn pump(&mut self, now: Time) {
        while let Some((token, res)) = self.resolver.next_answer(&mut self.out) {
            let Some(i) = self.legs.iter().position(|l| l.token == Some(token)) else { continue };
            let ip = res.ok().and_then(|m| m.first_ipv4()).map(IpAddr::V4);
            match ip {
                Some(ip) => {
                    let port = self.targets[self.legs[i].target].port;
                    self.legs[i].addr = Some(SocketAddr::new(ip, port));
                    self.legs[i].token = None;
                    self.connect(i);
                }
                None => self.leg_failed(now, i, PhoneError::NoAddress),
            }
        }
    }
}

/// A transcript line for a SIP message the phone sends.
pub use uclab_proto::sip::transcript_line as summary;

#[cfg(test)]
mod tests;
