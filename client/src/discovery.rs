//! The discovery engine: SRV lookups in parallel, precedence, target choice and failover.
//!
//! SPEC SD5: the three SRV queries `_cisco-uds._tcp`, `_cuplogin._tcp` and `_collab-edge._tls`
//! go out at the same time; `_cisco-uds` wins over `_cuplogin`, which wins over `_collab-edge`;
//! none → manual settings. SPEC SD6: targets are tried in RFC 2782 order and the next one is
//! tried when one fails (refused, or no answer within [`CONNECT_TIMEOUT`]).
//!
//! Polling order: after each `handle_*` call drain [`Discovery::poll_output`], then sleep until
//! [`Discovery::poll_timeout`] and call [`Discovery::handle_timeout`].

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use uclab_proto::dns::{DnsMsg, QType, Rdata};

use crate::Time;
use crate::event::{ClientEvent, Via};
use crate::io::{ConnId, Input, Output};
use crate::resolver::{QueryToken, ResolveFailure, ResolverConfig, ResolverOutput, StubResolver};
use crate::srv::{self, SrvAnswer, SrvTarget};

/// How long a TCP connect to a target may take before the next target is tried. The
/// documents give no figure; 5 s is a common client connect timeout (our choice).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Services looked up, in precedence order (SPEC SD5).
const SERVICES: [Via; 3] = [Via::CiscoUds, Via::Cuplogin, Via::CollabEdge];

#[derive(Debug)]
enum State {
    /// Waiting for the three SRV answers.
    Lookup { waiting: BTreeMap<QueryToken, Via>, answers: BTreeMap<Via, SrvAnswer> },
    /// Resolving the address of `targets[idx]`.
    Address { via: Via, targets: Vec<SrvTarget>, idx: usize, token: QueryToken },
    /// Connecting to `targets[idx]`.
    Connect {
        via: Via,
        targets: Vec<SrvTarget>,
        idx: usize,
        id: ConnId,
        addr: SocketAddr,
        deadline: Time,
    },
    /// Finished (reached or failed).
    Done,
}

/// The discovery engine for one services domain.
#[derive(Debug)]
pub struct Discovery {
    domain: String,
    resolver: StubResolver,
    rng: ChaCha8Rng,
    state: State,
    /// Addresses learnt from additional sections (RFC 2782: "use the Additional Data section").
    glue: BTreeMap<String, IpAddr>,
    out: VecDeque<Output>,
    next_conn: ConnId,
}

impl Discovery {
    /// Starts discovery of `domain` at `now`; `seed` feeds DNS ids and SRV weighting.
    pub fn start(now: Time, domain: &str, resolver: ResolverConfig, seed: u64) -> Self {
        let mut d = Self {
            domain: domain.to_ascii_lowercase(),
            resolver: StubResolver::new(resolver),
            rng: ChaCha8Rng::seed_from_u64(seed),
            state: State::Done,
            glue: BTreeMap::new(),
            out: VecDeque::new(),
            next_conn: 1,
        };
        d.emit(ClientEvent::DiscoveryStarted { domain: d.domain.clone() });
        // SPEC SD5: all three queries at the same time.
        let mut waiting = BTreeMap::new();
        for via in SERVICES {
            let name = format!("{}.{}", via.srv_label(), d.domain);
            let id = d.next_id();
            waiting.insert(d.resolver.query(now, &name, QType::Srv, id), via);
        }
        d.state = State::Lookup { waiting, answers: BTreeMap::new() };
        d.pump(now);
        d
    }

    fn next_id(&mut self) -> u16 {
        (self.rng.next_u32() >> 16) as u16
    }

    fn emit(&mut self, e: ClientEvent) {
        self.out.push_back(Output::Event(e));
    }

    /// Whether discovery has finished.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Feeds an input.
    pub fn handle_input(&mut self, now: Time, input: Input) {
        match input {
            Input::Datagram { from, bytes } => self.resolver.handle_datagram(now, from, &bytes),
            Input::Unreachable { from } => self.resolver.handle_unreachable(now, from),
            Input::TcpAnswer { token, bytes } => {
                self.resolver.handle_tcp_answer(token, bytes.as_deref())
            }
            Input::Connected { id } => {
                if let State::Connect { via, ref targets, idx, id: want, addr, .. } = self.state
                    && id == want
                {
                    let target = targets[idx].to_string();
                    self.emit(ClientEvent::ServiceReached { via, target, addr: addr.to_string() });
                    self.out.push_back(Output::Close { id });
                    self.state = State::Done;
                }
            }
            Input::Http { .. } => {}
            Input::ConnectFailed { id, reason } => {
                if let State::Connect { id: want, .. } = self.state
                    && id == want
                {
                    self.next_target(now, reason);
                }
            }
        }
        self.pump(now);
    }

    /// Time passed. Spurious calls no-op.
    pub fn handle_timeout(&mut self, now: Time) {
        self.resolver.handle_timeout(now);
        if let State::Connect { id, deadline, .. } = self.state
            && deadline <= now
        {
            self.out.push_back(Output::Close { id });
            self.next_target(now, "timeout".into());
        }
        self.pump(now);
    }

    /// Next output.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Next deadline: the resolver's, or the running connect's.
    pub fn poll_timeout(&self) -> Option<Time> {
        let conn = match self.state {
            State::Connect { deadline, .. } => Some(deadline),
            _ => None,
        };
        [self.resolver.poll_timeout(), conn].into_iter().flatten().min()
    }

    /// Moves resolver outputs into ours and reacts to answers.
    fn pump(&mut self, now: Time) {
        while let Some(o) = self.resolver.poll_output() {
            match o {
                ResolverOutput::Transmit { to, bytes } => {
                    self.out.push_back(Output::Transmit { to, bytes })
                }
                ResolverOutput::TcpExchange { token, to, bytes } => {
                    self.out.push_back(Output::TcpExchange { token, to, bytes })
                }
                ResolverOutput::Answer { token, msg } => self.on_answer(now, token, Ok(msg)),
                ResolverOutput::Failed { token, reason } => self.on_answer(now, token, Err(reason)),
            }
        }
    }

    fn on_answer(&mut self, now: Time, token: QueryToken, res: Result<DnsMsg, ResolveFailure>) {
        match &mut self.state {
            State::Lookup { waiting, answers } => {
                let Some(via) = waiting.remove(&token) else { return };
                let name = format!("{}.{}", via.srv_label(), self.domain);
                let (answer, result) = match res {
                    Ok(msg) => {
                        for r in &msg.additionals {
                            if let Rdata::A(a) = r.data {
                                self.glue.insert(r.name.to_ascii_lowercase(), IpAddr::V4(a));
                            }
                        }
                        let recs: Vec<SrvTarget> = msg
                            .answers
                            .iter()
                            .filter_map(|r| match &r.data {
                                Rdata::Srv { priority, weight, port, target } => Some(SrvTarget {
                                    priority: *priority,
                                    weight: *weight,
                                    port: *port,
                                    target: target.to_ascii_lowercase(),
                                }),
                                _ => None,
                            })
                            .collect();
                        let rng = &mut self.rng;
                        let a = srv::order(recs, |n| {
                            ((u128::from(rng.next_u64()) * u128::from(n)) >> 64) as u64
                        });
                        let text = match &a {
                            SrvAnswer::Targets(t) => {
                                t.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
                            }
                            SrvAnswer::NotAvailable => "not-available".into(),
                            SrvAnswer::Empty => {
                                format!("none ({})", uclab_proto::dns::rcode_name(msg.rcode))
                            }
                        };
                        (a, text)
                    }
                    Err(e) => (SrvAnswer::Empty, format!("error: {e}")),
                };
                answers.insert(via, answer);
                self.out.push_back(Output::Event(ClientEvent::SrvResult { name, result }));
                if !waiting.is_empty() {
                    return;
                }
                let mut answers = std::mem::take(answers);
                // SPEC SD5: precedence _cisco-uds > _cuplogin > _collab-edge.
                let winner = SERVICES.into_iter().find_map(|via| match answers.remove(&via) {
                    Some(SrvAnswer::Targets(t)) => Some((via, t)),
                    _ => None,
                });
                match winner {
                    Some((via, targets)) => {
                        self.emit(ClientEvent::DiscoveryResolved { via });
                        self.try_target(now, via, targets, 0);
                    }
                    None => {
                        self.emit(ClientEvent::DiscoveryResolved { via: Via::Manual });
                        self.emit(ClientEvent::DiscoveryFailed {
                            reason: "no SRV records: manual settings needed".into(),
                        });
                        self.state = State::Done;
                    }
                }
            }
            State::Address { token: want, .. } if *want == token => {
                let State::Address { via, targets, idx, .. } =
                    std::mem::replace(&mut self.state, State::Done)
                else {
                    unreachable!("matched above")
                };
                let ip = res.ok().and_then(|m| {
                    m.answers.iter().find_map(|r| match r.data {
                        Rdata::A(a) => Some(IpAddr::V4(a)),
                        _ => None,
                    })
                });
                match ip {
                    Some(ip) => self.connect(now, via, targets, idx, ip),
                    None => {
                        self.state = State::Address { via, targets, idx, token };
                        self.next_target(now, "unresolvable".into());
                    }
                }
            }
            _ => {}
        }
    }

    fn try_target(&mut self, now: Time, via: Via, targets: Vec<SrvTarget>, idx: usize) {
        let Some(t) = targets.get(idx) else {
            self.emit(ClientEvent::DiscoveryFailed {
                reason: format!("all {} targets of {} failed", targets.len(), via.srv_label()),
            });
            self.state = State::Done;
            return;
        };
        if let Some(ip) = self.glue.get(&t.target).copied() {
            self.connect(now, via, targets, idx, ip);
            return;
        }
        let id = self.next_id();
        let name = t.target.clone();
        let token = self.resolver.query(now, &name, QType::A, id);
        self.state = State::Address { via, targets, idx, token };
        self.pump(now);
    }

    fn connect(&mut self, now: Time, via: Via, targets: Vec<SrvTarget>, idx: usize, ip: IpAddr) {
        let addr = SocketAddr::new(ip, targets[idx].port);
        let id = self.next_conn;
        self.next_conn += 1;
        self.emit(ClientEvent::TargetTrying {
            target: targets[idx].to_string(),
            addr: addr.to_string(),
        });
        self.out.push_back(Output::Connect { id, to: addr });
        self.state =
            State::Connect { via, targets, idx, id, addr, deadline: now + CONNECT_TIMEOUT };
    }

    fn next_target(&mut self, now: Time, reason: String) {
        let (via, targets, idx) = match std::mem::replace(&mut self.state, State::Done) {
            State::Connect { via, targets, idx, .. } | State::Address { via, targets, idx, .. } => {
                (via, targets, idx)
            }
            other => {
                self.state = other;
                return;
            }
        };
        self.emit(ClientEvent::TargetFailed { target: targets[idx].to_string(), reason });
        self.try_target(now, via, targets, idx + 1);
    }
}
