//! The discovery engine: SRV lookups in parallel, precedence, target choice and failover.
//!
//! SPEC SD5: the three SRV queries `_cisco-uds._tcp`, `_cuplogin._tcp` and `_collab-edge._tls`
//! go out at the same time; `_cisco-uds` wins over `_cuplogin`, which wins over `_collab-edge`;
//! none → manual settings. SPEC SD6: targets are tried in RFC 2782 order and the next one is
//! tried when one fails (refused, or no answer within [`CONNECT_TIMEOUT`]).
//!
//! SPEC SD2: with a VoiceServicesDomain the SRV records are looked up there; the CAS lookup
//! still uses the services domain. SPEC SD3: excluded services are skipped; with all three URL
//! parameters set no discovery runs. SPEC SD4: the CAS lookup runs in parallel with the SRV
//! queries; a Webex domain without SRV records resolves to Webex.
//!
//! Polling order: after each `handle_*` call drain [`Discovery::poll_output`], then sleep until
//! [`Discovery::poll_timeout`] and call [`Discovery::handle_timeout`].

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use uclab_proto::dns::{DnsMsg, QType, Rdata};
use uclab_proto::provision::Excluded;

pub mod srv;

use self::srv::{SrvAnswer, SrvTarget};
use crate::Time;
use crate::event::{ClientEvent, Via};
use crate::io::{ConnId, HttpId, HttpReq, HttpResp, Input, NetError, Output};
use crate::resolver::{Dns, QueryToken, ResolveFailure};
use crate::signal::{Emit, Signal};

/// How long a TCP connect to a target may take before the next target is tried. The
/// documents give no figure; 5 s is a common client connect timeout (our choice).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Services looked up, in precedence order (SPEC SD5).
const SERVICES: [Via; 3] = [Via::CiscoUds, Via::Cuplogin, Via::CollabEdge];
/// The Webex CAS host (SPEC SD4).
pub const CAS_HOST: &str = "loginp.webexconnect.com";
/// How long the CAS request may take.
const CAS_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the Webex CAS could not be asked (SPEC SD4): the answer is then "not Webex".
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CasError {
    /// No answer in time.
    #[error("timeout")]
    Timeout,
    /// The CAS host has no address.
    #[error("{CAS_HOST} does not resolve")]
    NoAddress,
    /// Looking the CAS host up failed.
    #[error("{CAS_HOST}: {0}")]
    Lookup(ResolveFailure),
    /// The request failed on the network.
    #[error(transparent)]
    Net(NetError),
}

/// Why discovery found no service (SPEC SD3, SD5, SD6).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// SPEC SD3: the provisioning URL set everything; nothing is looked up.
    #[error("provisioning URL sets everything: manual settings")]
    Manual,
    /// No service has SRV records (and the CAS said the domain is not Webex).
    #[error("no SRV records: manual settings needed")]
    NoRecords,
    /// SRV queries went unanswered: the name server's fault, not the domain's.
    #[error("no SRV records ({count} SRV queries unanswered: {first}): manual settings needed")]
    Unanswered {
        /// How many.
        count: usize,
        /// Why the first went unanswered.
        first: ResolveFailure,
    },
    /// SPEC SD6: every target of the winning service failed.
    #[error("all {count} targets of {service} failed")]
    AllTargetsFailed {
        /// How many targets.
        count: usize,
        /// The service's SRV label.
        service: &'static str,
    },
}

/// What a discovery deadline is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiscoveryTimer {
    /// A DNS retransmission.
    Dns,
    /// The connect to an SRV target is overdue (the next target is tried).
    Connect,
    /// The CAS request is overdue (SPEC SD4).
    Cas,
}

/// What discovery starts from (SPEC SD1–SD3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// The services domain (SPEC SD1).
    pub services_domain: String,
    /// VoiceServicesDomain: where SRV records are looked up instead (SPEC SD2).
    pub voice_domain: Option<String>,
    /// Services not to discover (SPEC SD3).
    pub excluded: Excluded,
    /// All three URL parameters were set: no discovery, manual settings (SPEC SD3).
    pub no_discovery: bool,
    /// Set by a provisioning URL, which wins over the installer's bootstrap (SPEC SD1).
    pub from_url: bool,
}

impl DiscoveryConfig {
    /// Discovery of `domain` with nothing excluded.
    pub fn domain(domain: &str) -> Self {
        Self {
            services_domain: domain.to_owned(),
            voice_domain: None,
            excluded: Excluded::default(),
            no_discovery: false,
            from_url: false,
        }
    }
}

#[derive(Debug)]
enum Cas {
    Off,
    Resolving { token: QueryToken },
    Requesting { deadline: Time },
    Done(bool),
}

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
    org: String,
    cas: Cas,
    /// SRV lookups finished with nothing usable, waiting for the CAS to decide.
    awaiting_cas: bool,
    resolver: Dns,
    rng: ChaCha8Rng,
    state: State,
    /// Addresses learnt from additional sections (RFC 2782: "use the Additional Data section").
    glue: BTreeMap<String, IpAddr>,
    /// SRV queries that got no answer at all, with why (timeouts are not "no records").
    srv_errors: Vec<ResolveFailure>,
    /// The SRV targets after the one reached, in try order (`host:port`).
    alternates: Vec<String>,
    out: VecDeque<Emit>,
    /// The CAS request (SPEC SD4), once made.
    cas_http: Option<HttpId>,
}

impl Discovery {
    /// Starts discovery at `now`; `seed` feeds DNS ids and SRV weighting.
    pub fn start(now: Time, cfg: &DiscoveryConfig, resolver: Dns, seed: u64) -> Self {
        let srv_domain = cfg.voice_domain.as_deref().unwrap_or(&cfg.services_domain);
        let mut d = Self {
            domain: srv_domain.to_ascii_lowercase(),
            org: cfg.services_domain.to_ascii_lowercase(),
            cas: Cas::Off,
            awaiting_cas: false,
            resolver,
            rng: ChaCha8Rng::seed_from_u64(seed),
            state: State::Done,
            glue: BTreeMap::new(),
            srv_errors: Vec::new(),
            alternates: Vec::new(),
            out: VecDeque::new(),
            cas_http: None,
        };
        d.emit(ClientEvent::DiscoveryStarted { domain: d.org.clone() });
        if cfg.no_discovery {
            // SPEC SD3: all three URL parameters set: no discovery, manual settings.
            d.emit(ClientEvent::DiscoveryResolved { via: Via::Manual });
            d.fail(DiscoveryError::Manual);
            return d;
        }
        // SPEC SD4: the CAS lookup, in parallel, unless WEBEX is excluded.
        if !cfg.excluded.webex {
            let id = d.next_id();
            d.cas = Cas::Resolving { token: d.resolver.query(now, CAS_HOST, QType::A, id) };
        }
        // SPEC SD5: the SRV queries at the same time (SD3: CUCM excluded skips two).
        let mut waiting = BTreeMap::new();
        for via in SERVICES {
            if cfg.excluded.cucm && via != Via::CollabEdge {
                continue;
            }
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

    fn push(&mut self, o: Output) {
        self.out.push_back(o.into());
    }

    fn signal(&mut self, s: Signal) {
        self.out.push_back(s.into());
    }

    fn fail(&mut self, error: DiscoveryError) {
        self.emit(ClientEvent::DiscoveryFailed { reason: error.to_string() });
        self.signal(Signal::DiscoveryFailed);
    }

    fn emit(&mut self, e: ClientEvent) {
        self.push(Output::Event(e));
    }

    /// Whether discovery has finished (the CAS lookup included).
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
            && !self.awaiting_cas
            && matches!(self.cas, Cas::Off | Cas::Done(_))
    }

    /// The SRV targets after the one reached, in try order (`host:port`): where sign-in goes
    /// next when that one is overloaded.
    pub fn alternates(&self) -> &[String] {
        &self.alternates
    }

    /// Whether the CAS lookup is still under way (SPEC SD4).
    pub fn cas_pending(&self) -> bool {
        matches!(self.cas, Cas::Resolving { .. } | Cas::Requesting { .. })
    }

    /// What the CAS said, once it has: `Some(true)` for a Webex domain (SPEC SD4, AU2).
    pub fn cas_webex(&self) -> Option<bool> {
        match self.cas {
            Cas::Done(w) => Some(w),
            _ => None,
        }
    }

    /// Feeds an input.
    pub fn handle_input(&mut self, now: Time, input: Input) {
        let Some(input) = self.resolver.take_input(now, input) else {
            return self.pump(now);
        };
        match input {
            Input::Datagram { .. } | Input::Unreachable { .. } | Input::TcpAnswer { .. } => {}
            Input::Connected { id } => {
                if let State::Connect { via, ref targets, idx, id: want, addr, .. } = self.state
                    && id == want
                {
                    let target = targets[idx].to_string();
                    self.alternates = targets[idx + 1..].iter().map(ToString::to_string).collect();
                    self.emit(ClientEvent::ServiceReached {
                        via,
                        target: target.clone(),
                        addr: addr.to_string(),
                    });
                    self.signal(Signal::ServiceReached { via, target, addr });
                    self.push(Output::Close { id });
                    self.state = State::Done;
                }
            }
            Input::Http { id, result } if Some(id) == self.cas_http => {
                self.on_cas(result.map_err(CasError::Net));
            }
            Input::Http { .. }
            | Input::StreamOpened { .. }
            | Input::StreamFailed { .. }
            | Input::StreamData { .. }
            | Input::StreamTls { .. }
            | Input::Media { .. } => {}
            Input::ConnectFailed { id, reason } => {
                if let State::Connect { id: want, .. } = self.state
                    && id == want
                {
                    self.next_target(now, reason.to_string());
                }
            }
        }
        self.pump(now);
    }

    /// Time passed. Spurious calls no-op.
    pub fn handle_timeout(&mut self, now: Time) {
        self.resolver.handle_timeout(now);
        if let Cas::Requesting { deadline } = self.cas
            && deadline <= now
        {
            self.on_cas(Err(CasError::Timeout));
        }
        if let State::Connect { id, deadline, .. } = self.state
            && deadline <= now
        {
            self.push(Output::Close { id });
            self.next_target(now, "timeout".into());
        }
        self.pump(now);
    }

    /// Next output, or signal for the composite.
    pub fn poll_output(&mut self) -> Option<Emit> {
        crate::io::next_out(&mut self.out)
    }

    /// Next deadline: the resolver's, the running connect's, or the CAS request's.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.next_timer().map(|(t, _)| t)
    }

    /// The next deadline and what it is for.
    pub fn next_timer(&self) -> Option<(Time, DiscoveryTimer)> {
        let conn = match self.state {
            State::Connect { deadline, .. } => Some(deadline),
            _ => None,
        };
        let cas = match self.cas {
            Cas::Requesting { deadline } => Some(deadline),
            _ => None,
        };
        [(self.resolver.poll_timeout(), DiscoveryTimer::Dns), (conn, DiscoveryTimer::Connect)]
            .into_iter()
            .chain([(cas, DiscoveryTimer::Cas)])
            .filter_map(|(t, w)| Some((t?, w)))
            .min_by_key(|(t, _)| *t)
    }

    fn on_cas(&mut self, result: Result<HttpResp, CasError>) {
        if !matches!(self.cas, Cas::Requesting { .. } | Cas::Resolving { .. }) {
            return;
        }
        let (webex, text) = match result {
            Ok(r) if r.status == 200 => match uclab_proto::uds::parse_cas(&r.body) {
                Ok(true) => (true, "webex".to_owned()),
                Ok(false) => (false, "not-webex".to_owned()),
                Err(e) => (false, format!("error: {e}")),
            },
            Ok(r) => (false, format!("error: HTTP {}", r.status)),
            Err(e) => (false, format!("error: {e}")),
        };
        self.cas = Cas::Done(webex);
        self.emit(ClientEvent::CasResult { org: self.org.clone(), result: text });
        if webex {
            self.signal(Signal::CasWebex);
        }
        self.signal(Signal::CasDone);
        if self.awaiting_cas {
            // SRV found nothing: the CAS decides between Webex and manual settings.
            self.awaiting_cas = false;
            self.resolve_without_srv();
        }
    }

    fn resolve_without_srv(&mut self) {
        if self.cas_webex() == Some(true) {
            self.emit(ClientEvent::DiscoveryResolved { via: Via::Webex });
        } else {
            self.emit(ClientEvent::DiscoveryResolved { via: Via::Manual });
            let error = match self.srv_errors.first() {
                None => DiscoveryError::NoRecords,
                Some(e) => {
                    DiscoveryError::Unanswered { count: self.srv_errors.len(), first: e.clone() }
                }
            };
            self.fail(error);
        }
        self.state = State::Done;
    }

    /// Moves resolver outputs into ours and reacts to answers.
    fn pump(&mut self, now: Time) {
        while let Some((token, res)) = self.resolver.next_answer(&mut self.out) {
            if self.is_cas_lookup(token) {
                self.on_cas_address(now, res);
            } else {
                self.on_answer(now, token, res);
            }
        }
    }

    /// SPEC SD4: the CAS host resolved (or not); ask it about the services domain.
    fn on_cas_address(&mut self, now: Time, res: Result<DnsMsg, ResolveFailure>) {
        match res.map(|m| m.first_ipv4()) {
            Ok(Some(ip)) => {
                self.cas = Cas::Requesting { deadline: now + CAS_TIMEOUT };
                let id = self.resolver.http_id();
                self.cas_http = Some(id);
                self.push(Output::Http(HttpReq {
                    id,
                    addr: SocketAddr::new(IpAddr::V4(ip), 443),
                    host: CAS_HOST.into(),
                    tls_name: None,
                    tls: true,
                    method: "GET",
                    path: format!("/cas/FederatedSSO?org={}", self.org),
                    basic: None,
                    headers: Vec::new(),
                    body: Vec::new(),
                }));
            }
            Ok(None) => self.on_cas(Err(CasError::NoAddress)),
            Err(reason) => self.on_cas(Err(CasError::Lookup(reason))),
        }
    }

    fn is_cas_lookup(&self, token: QueryToken) -> bool {
        matches!(self.cas, Cas::Resolving { token: t } if t == token)
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
                    Err(e) => {
                        self.srv_errors.push(e.clone());
                        (SrvAnswer::Empty, format!("error: {e}"))
                    }
                };
                answers.insert(via, answer);
                self.out.push_back(Output::Event(ClientEvent::SrvResult { name, result }).into());
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
                    None if matches!(self.cas, Cas::Resolving { .. } | Cas::Requesting { .. }) => {
                        self.awaiting_cas = true;
                        self.state = State::Done;
                    }
                    None => self.resolve_without_srv(),
                }
            }
            State::Address { token: want, .. } if *want == token => {
                let State::Address { via, targets, idx, .. } =
                    std::mem::replace(&mut self.state, State::Done)
                else {
                    unreachable!("matched above")
                };
                let ip = res.ok().and_then(|m| m.first_ipv4()).map(IpAddr::V4);
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
            self.fail(DiscoveryError::AllTargetsFailed {
                count: targets.len(),
                service: via.srv_label(),
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
        let id = self.resolver.conn_id();
        self.emit(ClientEvent::TargetTrying {
            target: targets[idx].to_string(),
            addr: addr.to_string(),
        });
        self.push(Output::Connect { id, to: addr });
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

#[cfg(test)]
mod tests;
