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
use crate::io::{ConnId, Input, Output, Owner};
use crate::resolver::{Dns, QueryToken};
use crate::sip::blf::Watches;
use crate::sip::call::{CallAction, Calls, Ctx, Mode, Send, hex, rport, sends_of};
use crate::sip::uas::{Seen, Uas};

/// How often the active connection is pinged (RFC 5626 §4.4.1 CRLF keepalive).
pub const PING_INTERVAL: Duration = Duration::from_secs(30);
/// How long a ping may go unanswered before the node counts as gone.
pub const PONG_TIMEOUT: Duration = Duration::from_secs(10);
/// Call messages held while no connection is up (SPEC CC3 failover), at most.
const MAX_HELD: usize = 64;
/// How long to wait before trying the group again when nothing answered.
pub const RETRY: Duration = Duration::from_secs(30);
/// How long resolving and connecting may take at one node (a REGISTER then has Timer F).
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// DSCP of call signalling (SPEC MEDIA2: CS3).
pub const DSCP_SIGNALLING: u8 = uclab_proto::dscp::SIGNALLING;
pub use crate::sip::USER_AGENT;

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
    next_stream: ConnId,
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
    /// On SRST: next probe of the first member, and since when it has answered (CC5).
    probe_at: Option<Time>,
    cucm_back_since: Option<Time>,
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
    out: VecDeque<Output>,
}

impl Phone {
    /// Starts registering `user`'s CSF device configured by `cfg`.
    pub fn start(now: Time, user: PhoneUser, cfg: DeviceConfig, resolver: Dns, seed: u64) -> Self {
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
            next_stream: ConnId::new(Owner::Phone, 1),
            auto_answer: false,
            answer_due: false,
            next_dns: (seed >> 20) as u16 | 1,
            refresh_at: None,
            keepalive_at: None,
            ping_at: None,
            pong_by: None,
            ping_txn: None,
            probe_at: None,
            cucm_back_since: None,
            out: VecDeque::new(),
        };
        let reliable = !p.udp();
        p.calls.reliable = reliable;
        p.watches.reliable = reliable;
        p.register_at(now, 0);
        p
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
        self.probe_at = None;
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
        self.out.pop_front()
    }

    /// Answer incoming calls at once (`uclab probe-sip --answer`).
    pub fn set_auto_answer(&mut self, on: bool) {
        self.auto_answer = on;
    }

    /// Next deadline.
    pub fn poll_timeout(&self) -> Option<Time> {
        let legs = self
            .legs
            .iter()
            .flat_map(|l| [l.deadline, l.txn.as_ref().and_then(ClientTxn::poll_timeout)]);
        let waiting = match self.state {
            State::Waiting(t) => Some(t),
            _ => None,
        };
        let calls = self.call_txns.iter().map(ClientTxn::poll_timeout).chain([
            self.calls.poll_timeout(),
            self.watches.poll_timeout(),
            self.uas.poll_timeout(),
        ]);
        let ping = self.ping_txn.as_ref().and_then(ClientTxn::poll_timeout);
        [
            self.refresh_at,
            self.keepalive_at,
            self.ping_at,
            self.pong_by,
            self.probe_at,
            waiting,
            ping,
        ]
        .into_iter()
        .chain(legs)
        .chain(calls)
        .chain([self.resolver.poll_timeout()])
        .flatten()
        .min()
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

    fn close_leg(&mut self, role: Role) {
        while let Some(i) = self.legs.iter().position(|l| l.role == role) {
            let l = self.legs.remove(i);
            if let Some(id) = l.stream {
                self.out.push_back(Output::StreamClose { id });
            }
        }
    }

    /// Opens a leg to target `t` for `role` and queues `first` (built when the leg exists).
    fn open_leg(&mut self, now: Time, role: Role, t: usize) -> usize {
        self.close_leg(role);
        let call_id = format!(
            "{}-{}@{}",
            hex(&mut self.rng, 8),
            hex(&mut self.rng, 8),
            self.cfg.device.to_ascii_lowercase()
        );
        let tag = hex(&mut self.rng, 16);
        let mut leg = Leg {
            role,
            target: t,
            token: None,
            addr: None,
            stream: None,
            open: false,
            framer: StreamFramer::new(),
            call_id,
            tag,
            cseq: 100,
            txn: None,
            queued: None,
            challenged: false,
            deadline: Some(now + STEP_TIMEOUT),
        };
        let target = self.targets[t].clone();
        match target.host.parse::<IpAddr>() {
            Ok(ip) => leg.addr = Some(SocketAddr::new(ip, target.port)),
            Err(_) => {
                let id = self.next_dns;
                self.next_dns = self.next_dns.wrapping_add(1);
                leg.token = Some(self.resolver.query(now, &target.host, QType::A, id));
            }
        }
        self.legs.push(leg);
        let i = self.legs.len() - 1;
        if self.legs[i].addr.is_some() {
            self.connect(i);
        }
        i
    }

    fn connect(&mut self, i: usize) {
        let id = self.next_stream.take_next();
        let udp = self.udp();
        let leg = &mut self.legs[i];
        leg.stream = Some(id);
        if let Some(to) = leg.addr {
            let dscp = DSCP_SIGNALLING;
            self.out.push_back(if udp {
                Output::DatagramOpen { id, to, dscp }
            } else {
                Output::StreamOpen { id, to, dscp }
            });
        }
    }

    fn transport(&self) -> &'static str {
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
        format!(
            "<sip:{}@{};transport={}>;+sip.instance=\"<urn:uuid:{}>\";+u.sip!devicename.ccm.cisco.com=\"{}\";+u.sip!model.ccm.cisco.com=\"503\"",
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
        }
    }

    /// The user does something with calls (SPEC CC4, CC5).
    pub fn act(&mut self, now: Time, a: &CallAction) {
        self.clock = now;
        let ctx = self.ctx();
        match a {
            CallAction::Watch { .. } if ctx.mode == Mode::Unregistered => {
                self.event(ClientEvent::FeatureRefused {
                    feature: "watch".into(),
                    reason: "not registered".into(),
                });
            }
            CallAction::Watch { to } => self.watches.watch(now, &ctx, to),
            _ => self.calls.act(now, &ctx, a),
        }
        self.flush_calls();
    }

    /// Sends what the calls produced on the active connection, and reports their events.
    fn flush_calls(&mut self) {
        let stream = self.active_stream();
        let mut sends = std::mem::take(&mut self.calls.sends);
        sends.append(&mut self.watches.sends);
        for send in sends {
            let msgs = match send {
                Send::Request(mut t) => {
                    let m = sends_of(&mut t);
                    self.call_txns.push(*t);
                    m
                }
                Send::Message(m) => vec![m],
            };
            for m in msgs {
                if m.code().is_some() && self.udp() {
                    self.uas.on_response(self.clock, &m);
                }
                match stream {
                    Some(id) => self.out.push_back(Output::StreamSend {
                        id,
                        bytes: m.to_bytes(),
                        summary: summary(&m),
                    }),
                    // No connection (a failover under way): held until the phone registers
                    // again, a bounded few.
                    None if self.held.len() < MAX_HELD => self.held.push_back(m),
                    None => {}
                }
            }
        }
        for e in std::mem::take(&mut self.calls.events) {
            self.out.push_back(Output::Event(e));
        }
        if std::mem::take(&mut self.calls.rang) && self.auto_answer {
            self.answer_due = true;
        }
        for e in std::mem::take(&mut self.watches.events) {
            self.out.push_back(Output::Event(e));
        }
        self.out.extend(std::mem::take(&mut self.calls.media));
    }

    /// The open connection of the registration, if any.
    fn active_stream(&self) -> Option<ConnId> {
        self.legs.iter().find(|l| l.role == Role::Active && l.open).and_then(|l| l.stream)
    }

    /// Sends `msgs` on the active connection (retransmissions: nothing is held for later).
    fn send_active(&mut self, msgs: Vec<Message>) {
        let stream = self.active_stream();
        let Some(id) = stream else { return };
        for m in msgs {
            self.out.push_back(Output::StreamSend {
                id,
                bytes: m.to_bytes(),
                summary: summary(&m),
            });
        }
    }

    /// Moves the calls' transactions on: responses to the calls, timeouts.
    fn drain_call_txns(&mut self, now: Time) {
        let ctx = self.ctx();
        let stream = self.active_stream();
        for t in &mut self.call_txns {
            let call_id = t.request().call_id().unwrap_or("").to_owned();
            while let Some(o) = t.poll_output() {
                match o {
                    TxnOutput::Send(m) => {
                        if let Some(id) = stream {
                            self.out.push_back(Output::StreamSend {
                                id,
                                bytes: m.to_bytes(),
                                summary: summary(&m),
                            });
                        }
                    }
                    TxnOutput::Response(r) if self.watches.owns(&call_id) => {
                        self.watches.on_response(now, &r)
                    }
                    TxnOutput::Response(r) => self.calls.on_response(now, &ctx, &r),
                    TxnOutput::Timeout if self.watches.owns(&call_id) => {
                        self.watches.on_timeout(&call_id)
                    }
                    TxnOutput::Timeout => self.calls.on_timeout(now, &ctx, &call_id),
                    _ => {}
                }
            }
        }
        self.call_txns.retain(|t| t.state() != sip::txn::ClientState::Terminated);
        self.flush_calls();
    }

    /// A REGISTER on leg `i`: `expires`, and the keepalive flag for a backup.
    fn register_request(&mut self, i: usize, expires: u32, keepalive: bool) -> Message {
        let t = self.targets[self.legs[i].target].clone();
        let transport = self.transport();
        let mut contact = self.contact();
        if keepalive {
            contact.push_str(";expires=0;cisco-keep-alive");
        }
        let local = self.local_host();
        let branch = format!("z9hG4bK{}", hex(&mut self.rng, 16));
        let leg = &mut self.legs[i];
        leg.cseq += 1;
        let line = &self.cfg.line;
        let aor = format!("<sip:{line}@{}>", t.host);
        Message::request("REGISTER", &format!("sip:{}", t.host))
            .with("Via", format!("SIP/2.0/{transport} {local};branch={branch}{}", rport(transport)))
            .with("From", format!("{aor};tag={}", leg.tag))
            .with("To", aor)
            .with("Call-ID", leg.call_id.clone())
            .with("Max-Forwards", "70")
            .with("CSeq", format!("{} REGISTER", leg.cseq))
            .with("User-Agent", USER_AGENT)
            .with("Contact", contact)
            .with("Expires", expires.to_string())
    }

    /// An OPTIONS to the active registrar (the keepalive ping over UDP); no transaction: any
    /// answer from the node counts.
    fn options_ping(&mut self) -> Option<Message> {
        let i = self.legs.iter().position(|l| l.role == Role::Active && l.open)?;
        let host = self.targets[self.legs[i].target].host.clone();
        let (local, line) = (self.local_host(), self.cfg.line.clone());
        let branch = format!("z9hG4bK{}", hex(&mut self.rng, 16));
        let leg = &mut self.legs[i];
        leg.cseq += 1;
        Some(
            Message::request("OPTIONS", &format!("sip:{host}"))
                .with("Via", format!("SIP/2.0/UDP {local};branch={branch};rport"))
                .with("From", format!("<sip:{line}@{host}>;tag={}", leg.tag))
                .with("To", format!("<sip:{host}>"))
                .with("Call-ID", leg.call_id.clone())
                .with("Max-Forwards", "70")
                .with("CSeq", format!("{} OPTIONS", leg.cseq))
                .with("User-Agent", USER_AGENT),
        )
    }

    /// Sends `m` on leg `i` as a new transaction (queued until the stream is open).
    fn send(&mut self, now: Time, i: usize, m: Message) {
        let udp = self.udp();
        let leg = &mut self.legs[i];
        if !leg.open {
            leg.queued = Some(m);
            return;
        }
        let mut t = ClientTxn::new(now, m, !udp, self.timers);
        while let Some(o) = t.poll_output() {
            if let (TxnOutput::Send(m), Some(id)) = (o, leg.stream) {
                self.out.push_back(Output::StreamSend {
                    id,
                    bytes: m.to_bytes(),
                    summary: summary(&m),
                });
            }
        }
        leg.txn = Some(t);
        leg.deadline = None;
    }

    /// Starts registering at target `t` (CC2 order; CC5 for the SRST router).
    fn register_at(&mut self, now: Time, t: usize) {
        self.clear_timers();
        if t >= self.targets.len() {
            self.close_leg(Role::Active);
            self.close_leg(Role::Keepalive);
            self.event(ClientEvent::PhoneState {
                state: "unregistered".into(),
                node: String::new(),
                reason: "no CUCM node or SRST router answered".into(),
            });
            self.state = State::Waiting(now + RETRY);
            return;
        }
        self.state = State::Registering(t);
        let node = self.node(t);
        self.event(ClientEvent::PhoneState {
            state: "registering".into(),
            node,
            reason: String::new(),
        });
        let i = self.open_leg(now, Role::Active, t);
        let m = self.register_request(i, self.cfg.register_expires, false);
        self.send(now, i, m);
    }

    /// The active node is gone or refused: CC3 next member, else CC5 SRST.
    fn next_target(&mut self, now: Time, reason: &str) {
        let (t, was_registered) = match self.state {
            State::Registering(t) => (t, false),
            State::Registered(t, _) => (t, true),
            State::Waiting(_) => return self.register_at(now, 0),
            State::Closed => return,
        };
        let node = self.node(t);
        self.failing_over = true;
        let state = if was_registered { "failover" } else { "register-failed" };
        self.event(ClientEvent::PhoneState {
            state: state.into(),
            node,
            reason: reason.to_owned(),
        });
        self.close_leg(Role::Active);
        self.close_leg(Role::Keepalive);
        self.close_leg(Role::Probe);
        self.probe_at = None;
        self.cucm_back_since = None;
        // SRST is the last resort; after it, the whole list again later.
        let next = if self.targets[t].srst { self.targets.len() } else { t + 1 };
        self.register_at(now, next);
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
                    if self.cfg.security_mode == 3 {
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
                    self.leg_failed(now, i, &format!("connection: {reason}"));
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

    fn leg_failed(&mut self, now: Time, i: usize, reason: &str) {
        let role = self.legs[i].role;
        let node = self.node(self.legs[i].target);
        match role {
            Role::Active => self.next_target(now, reason),
            Role::Keepalive => {
                self.close_leg(Role::Keepalive);
                self.event(ClientEvent::PhoneState {
                    state: "keepalive-failed".into(),
                    node,
                    reason: reason.to_owned(),
                });
            }
            Role::Probe => {
                self.close_leg(Role::Probe);
                self.cucm_back_since = None;
            }
            Role::Leave => self.close_leg(Role::Leave),
        }
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
                Ok(None) => return,
                Err(e) => return self.leg_failed(now, i, &format!("framing: {e}")),
            }
        }
    }

    /// One whole message from leg `i`'s node.
    fn on_message(&mut self, now: Time, i: usize, b: &[u8]) {
        let Some(m) = sip::read(b) else { return };
        let leg = &mut self.legs[i];
        if m.code().is_some() {
            if let Some(t) = self.ping_txn.as_mut().filter(|t| t.matches(&m)) {
                t.on_response(now, m);
                self.ping_txn = None; // the pong
            } else if let Some(t) = leg.txn.as_mut().filter(|t| t.matches(&m)) {
                t.on_response(now, m);
                self.drain_txn(now, i);
            } else if let Some(t) = self.call_txns.iter_mut().find(|t| t.matches(&m)) {
                t.on_response(now, m);
                self.drain_call_txns(now);
            } else if m.cseq().is_some_and(|(_, meth)| meth == "INVITE")
                && m.code().is_some_and(|c| (200..300).contains(&c))
            {
                // A 2xx retransmitted after its transaction ended: the call ACKs it again
                // (§13.2.2.4), or its ACK was lost and the callee never hears it.
                let ctx = self.ctx();
                self.calls.on_response(now, &ctx, &m);
                self.flush_calls();
            }
        } else if sip::parse(b).is_ok() {
            // A request from the node: a call (CC1).
            let stream = leg.stream;
            if self.udp() {
                match self.uas.on_request(now, &m) {
                    Seen::New => {}
                    Seen::Again(resend) => {
                        if let (Some(r), Some(id)) = (resend, stream) {
                            let (bytes, summary) = (r.to_bytes(), summary(&r));
                            self.out.push_back(Output::StreamSend { id, bytes, summary });
                        }
                        return;
                    }
                }
            }
            let ctx = self.ctx();
            let notify =
                m.method() == Some("NOTIFY") && m.call_id().is_some_and(|c| self.watches.owns(c));
            let answer = if notify {
                Some(self.watches.on_notify(&m, &ctx))
            } else {
                self.calls.on_request(now, &ctx, &m)
            };
            if let Some(r) = answer
                && let Some(id) = stream
            {
                if self.udp() {
                    self.uas.on_response(now, &r);
                }
                self.out.push_back(Output::StreamSend {
                    id,
                    bytes: r.to_bytes(),
                    summary: summary(&r),
                });
            }
            self.flush_calls();
        }
    }

    /// Moves a leg's transaction outputs on.
    fn drain_txn(&mut self, now: Time, i: usize) {
        let mut responses = Vec::new();
        let mut timed_out = false;
        if let Some(leg) = self.legs.get_mut(i)
            && let Some(t) = leg.txn.as_mut()
        {
            while let Some(o) = t.poll_output() {
                match o {
                    TxnOutput::Send(m) => {
                        if let Some(id) = leg.stream {
                            self.out.push_back(Output::StreamSend {
                                id,
                                bytes: m.to_bytes(),
                                summary: summary(&m),
                            });
                        }
                    }
                    TxnOutput::Response(m) => responses.push(m),
                    TxnOutput::Timeout => timed_out = true,
                    _ => {}
                }
            }
        }
        for r in responses {
            self.on_response(now, i, r);
        }
        if timed_out {
            self.leg_failed(now, i, "no answer to REGISTER");
        }
    }

    fn on_response(&mut self, now: Time, i: usize, r: Message) {
        let Some(code) = r.code() else { return };
        if code < 200 {
            return;
        }
        let Some(leg) = self.legs.get(i) else { return };
        let (role, t) = (leg.role, leg.target);
        let node = self.node(t);
        if code == 401 || code == 407 {
            if leg.challenged {
                return self.leg_failed(now, i, "wrong credentials");
            }
            let Some(req) = leg.txn.as_ref().map(|t| t.request().clone()) else { return };
            let header = if code == 401 { "WWW-Authenticate" } else { "Proxy-Authenticate" };
            let Some(auth) = r.get(header).and_then(|c| self.digest(&req, c)) else {
                return self.leg_failed(now, i, "unsupported challenge");
            };
            let mut again = req;
            let leg = &mut self.legs[i];
            leg.challenged = true;
            leg.cseq += 1;
            again.set("CSeq", format!("{} REGISTER", leg.cseq));
            let branch = format!("z9hG4bK{}", hex(&mut self.rng, 16));
            let via = again.get("Via").unwrap_or("").to_owned();
            let via = match via.split_once(";branch=") {
                Some((a, _)) => format!("{a};branch={branch}"),
                None => via,
            };
            again.set("Via", via);
            again.push(if code == 401 { "Authorization" } else { "Proxy-Authorization" }, auth);
            return self.send(now, i, again);
        }
        if code >= 300 {
            return self.leg_failed(now, i, &format!("{code} {}", sip::reason(code)));
        }
        self.legs[i].challenged = false;
        match role {
            Role::Active => {
                self.failing_over = false;
                if let Some(ip) = r.top_via().and_then(|v| {
                    v.params.iter().find(|(k, _)| k == "received").and_then(|(_, v)| v.clone())
                }) {
                    self.local_ip = ip;
                }
                let granted = r
                    .get("Expires")
                    .and_then(|e| e.parse::<u32>().ok())
                    .or_else(|| {
                        r.name_addr("Contact")
                            .and_then(|c| c.param("expires").flatten().and_then(|e| e.parse().ok()))
                    })
                    .unwrap_or(self.cfg.register_expires);
                let until = now + Duration::from_secs(u64::from(granted));
                let first = !matches!(self.state, State::Registered(x, _) if x == t);
                self.state = State::Registered(t, until);
                let refresh = u64::from(granted.saturating_sub(self.cfg.register_delta).max(1));
                self.refresh_at = Some(now + Duration::from_secs(refresh));
                self.ping_at = Some(now + PING_INTERVAL);
                if !first {
                    self.event(ClientEvent::PhoneState {
                        state: "refreshed".into(),
                        node: node.clone(),
                        reason: String::new(),
                    });
                }
                if first {
                    let srst = self.targets[t].srst;
                    self.event(ClientEvent::PhoneRegistered {
                        node: node.clone(),
                        expires: granted,
                        srst,
                    });
                    // Closing the leave leg may move this leg's index: its stream stays.
                    let stream = self.legs[i].stream;
                    self.close_leg(Role::Leave);
                    // What the calls said during the failover goes out now.
                    if let Some(id) = stream {
                        for m in std::mem::take(&mut self.held) {
                            self.out.push_back(Output::StreamSend {
                                id,
                                bytes: m.to_bytes(),
                                summary: summary(&m),
                            });
                        }
                    }
                    // CC6: watches follow the phone to its new node.
                    let ctx = self.ctx();
                    self.watches.resubscribe(now, &ctx);
                    self.flush_calls();
                    if srst {
                        // CC5: watch for CUCM coming back.
                        self.probe_at = Some(
                            now + Duration::from_secs(u64::from(self.cfg.keepalive.clamp(1, 30))),
                        );
                        self.keepalive_at = None;
                    } else {
                        // WIRE.md: keepalives to the backup member, if there is one.
                        let backup = (t + 1..self.targets.len()).find(|&b| !self.targets[b].srst);
                        self.keepalive_at = backup.map(|_| now);
                    }
                }
            }
            Role::Keepalive => {
                self.event(ClientEvent::PhoneState {
                    state: "keepalive".into(),
                    node,
                    reason: String::new(),
                });
            }
            Role::Probe => {
                // CC5: CUCM answers; after connectionMonitorDuration of that, go back.
                let since = *self.cucm_back_since.get_or_insert(now);
                if since == now {
                    self.event(ClientEvent::PhoneState {
                        state: "cucm-reachable".into(),
                        node,
                        reason: String::new(),
                    });
                }
                let monitor = Duration::from_secs(u64::from(self.cfg.connection_monitor));
                if now >= since + monitor {
                    return self.return_to_cucm(now);
                }
                self.probe_at = Some((now + Duration::from_secs(30)).min(since + monitor));
            }
            Role::Leave => self.close_leg(Role::Leave),
        }
    }

    /// CC5: leave SRST for the first CUCM member: register there, then unregister at SRST.
    fn return_to_cucm(&mut self, now: Time) {
        let State::Registered(srst, _) = self.state else { return };
        self.close_leg(Role::Probe);
        self.probe_at = None;
        self.cucm_back_since = None;
        // The SRST registration is ended on its own leg.
        if let Some(i) = self.legs.iter().position(|l| l.role == Role::Active) {
            self.legs[i].role = Role::Leave;
            let m = self.register_request(i, 0, false);
            self.send(now, i, m);
        }
        let node = self.node(srst);
        self.event(ClientEvent::PhoneState {
            state: "leaving-srst".into(),
            node,
            reason: String::new(),
        });
        self.register_at(now, 0);
    }

    /// RFC 2617 digest credentials for `req` answering `challenge` (MD5, qop auth or none).
    fn digest(&mut self, req: &Message, challenge: &str) -> Option<String> {
        let p = digest::params(challenge)?;
        if p.get("algorithm").is_some_and(|a| !a.eq_ignore_ascii_case("MD5")) {
            return None;
        }
        let get = |k: &str| p.get(k).cloned().unwrap_or_default();
        let (realm, nonce) = (get("realm"), get("nonce"));
        let qop = p.get("qop").is_some_and(|q| q.split(',').any(|q| q.trim() == "auth"));
        let sip::Start::Request { method, uri } = &req.start else { return None };
        let user = self.user.user.clone();
        let mut h = format!(
            "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", algorithm=MD5"
        );
        let creds = (user.as_str(), realm.as_str(), self.user.password.as_str());
        let response = if qop {
            let cnonce = hex(&mut self.rng, 16);
            h.push_str(&format!(", qop=auth, nc=00000001, cnonce=\"{cnonce}\""));
            digest::response(creds, (method, uri), &nonce, Some(("00000001", &cnonce)))
        } else {
            digest::response(creds, (method, uri), &nonce, None)
        };
        h.push_str(&format!(", response=\"{response}\""));
        if let Some(o) = p.get("opaque") {
            h.push_str(&format!(", opaque=\"{o}\""));
        }
        Some(h)
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
                self.leg_failed(now, i, "no answer");
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
            self.next_target(now, "no answer to keepalive ping");
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
                self.next_target(now, "no answer to keepalive ping");
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
        if due(self.probe_at) {
            self.probe_at = Some(now + Duration::from_secs(30));
            self.heartbeat(now, Role::Probe, 0);
        }
        self.pump(now);
    }

    /// The keepalive REGISTER of WIRE.md (`Expires: 0`, `;cisco-keep-alive`) to target `t` on
    /// the leg of `role` (opened if needed), unless the last one is still out.
    fn heartbeat(&mut self, now: Time, role: Role, t: usize) {
        let i = match self.legs.iter().position(|l| l.role == role) {
            Some(i) => i,
            None => self.open_leg(now, role, t),
        };
        let idle = self.legs[i]
            .txn
            .as_ref()
            .is_none_or(|t| t.state() == sip::txn::ClientState::Terminated);
        if idle {
            let m = self.register_request(i, 0, true);
            self.send(now, i, m);
        }
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
                None => self.leg_failed(now, i, "does not resolve"),
            }
        }
    }
}

/// A transcript line for a SIP message the phone sends.
pub use uclab_proto::sip::transcript_line as summary;
