//! The edge engine (SPEC MRA1, WIRE.md "Expressway MRA"): outside, after `_collab-edge`
//! discovery, the client asks Expressway-E for its edge configuration —
//! `GET /<base64(domain)>/get_edge_config/?service_name=_cisco-uds&service_name=_cuplogin` with
//! HTTP Basic, over HTTPS whose certificate must name the domain — and learns the services C
//! found inside, the edge servers for SIP, XMPP, HTTP and TURN, the user's home UDS server and
//! a token (`X-Auth` cookie) for later requests. The composite then runs today's sign-in
//! through a [`Transport::Edge`] built on the [`Route`] this engine keeps.
//!
//! AU5: a 401 is one clear failure. A traversal zone that is down (502/503/504) or an empty
//! `userUdsServer` ("no UDS server address", WIRE.md) is tried again after [`RETRY_WAIT`], at
//! most [`MAX_ATTEMPTS`] times: nothing is retried for ever. The token is renewed before it
//! expires (at nine tenths of its `Max-Age`) for as long as the user stays signed in.
//!
//! Polling order: after each `handle_*` call drain [`Edge::poll_output`], then sleep until
//! [`Edge::poll_timeout`] and call [`Edge::handle_timeout`].

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use uclab_proto::dns::QType;
use uclab_proto::edge::{self as wire, EdgeConfig, ServiceAnswer};

use crate::Time;
use crate::event::ClientEvent;
use crate::io::{HttpId, HttpReq, HttpResp, Input, NetError, Output};
use crate::resolver::{Dns, QueryToken};
use crate::signal::{Emit, Signal};

mod error;
mod route;
#[cfg(test)]
mod tests;

pub use self::error::EdgeError;
pub use self::route::{Route, Transport};

/// The longest token lifetime the client believes (a larger `Max-Age` is cut to it), and the
/// shortest: a hostile edge cannot overflow the clock or make the client renew in a loop.
pub const MAX_TOKEN_LIFE: Duration = Duration::from_secs(24 * 3600);
/// See [`MAX_TOKEN_LIFE`].
pub const MIN_TOKEN_LIFE: Duration = Duration::from_secs(10);
/// How long get_edge_config may take. Longer than the edge's own deadline for a silent
/// traversal zone, so that its 502 arrives first.
pub const EDGE_TIMEOUT: Duration = Duration::from_secs(15);
/// The wait before the same edge is tried again (WIRE.md: "retry after 15 s").
pub const RETRY_WAIT: Duration = Duration::from_secs(15);
/// Most get_edge_config attempts for one sign-in.
pub const MAX_ATTEMPTS: u32 = 8;

/// What an edge deadline is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EdgeTimer {
    /// The request under way is overdue.
    Step,
    /// Time to try the edge again.
    Retry,
    /// Time to renew the token.
    Renew,
    /// A DNS retransmission.
    Dns,
}

/// Who signs in where.
#[derive(Clone, Debug)]
pub struct EdgeStart {
    /// User id.
    pub user: String,
    /// Password.
    pub password: String,
    /// The services domain (the edge's certificate must name it, MRA1).
    pub domain: String,
    /// Expressway-E's host name (the `_collab-edge` target).
    pub host: String,
    /// Its port.
    pub port: u16,
}

#[derive(Debug)]
enum State {
    /// Looking up the edge's address.
    Resolve { token: QueryToken },
    /// get_edge_config under way (`renewal`: the user is already signed in).
    Config { id: HttpId, renewal: bool },
    /// Configured; the token is renewed at the deadline.
    Ready,
    /// Waiting to try again.
    Waiting,
    /// Failed for good.
    Failed,
}

/// What the client keeps of a configured edge between sign-ins (SPEC SD7): the configuration,
/// the route with its token, and when the token expires.
#[derive(Clone, Debug)]
pub struct EdgeSnapshot {
    start: EdgeStart,
    addr: SocketAddr,
    route: Route,
    config: EdgeConfig,
    /// When the token runs out (`None`: it does not).
    expires: Option<Time>,
}

impl EdgeSnapshot {
    /// Whether it was got for `user` with `password` (a token never vouches for others).
    pub fn is_for(&self, user: &str, password: &str) -> bool {
        self.start.user == user && self.start.password == password
    }

    /// Whether the token is still good at `now`.
    pub fn fresh(&self, now: Time) -> bool {
        self.expires.is_none_or(|t| now < t)
    }
}

/// The edge engine for one user and one Expressway-E.
#[derive(Debug)]
pub struct Edge {
    start: EdgeStart,
    addr: Option<SocketAddr>,
    route: Option<Route>,
    config: Option<EdgeConfig>,
    resolver: Dns,
    state: State,
    deadline: Option<(Time, EdgeTimer)>,
    attempts: u32,
    /// When the current token runs out.
    expires: Option<Time>,
    /// Renewals failed in a row (at most [`MAX_ATTEMPTS`], then no more).
    renew_failures: u32,
    next_dns_id: u16,
    out: VecDeque<Emit>,
}

impl Edge {
    /// Starts at the edge `start.host`, reached at `addr` when discovery already connected to
    /// it, else looked up first.
    pub fn start(
        now: Time,
        mut start: EdgeStart,
        addr: Option<SocketAddr>,
        resolver: Dns,
        seed: u64,
    ) -> Self {
        start.domain = start.domain.to_ascii_lowercase();
        let mut e = Self {
            start,
            addr,
            route: None,
            config: None,
            resolver,
            state: State::Failed,
            deadline: None,
            attempts: 0,
            expires: None,
            renew_failures: 0,
            next_dns_id: (seed >> 24) as u16,
            out: VecDeque::new(),
        };
        e.attempt(now);
        // A lookup started here goes out now, not with its first retransmission (the
        // phone's fix of issue 14, for the edge).
        e.pump(now);
        e
    }

    /// SPEC SD7: a later sign-in of the same user on the same network starts from what an
    /// earlier one learnt, while its token is good: no get_edge_config, the renewal goes on.
    pub fn from_cache(now: Time, snap: EdgeSnapshot, resolver: Dns, seed: u64) -> Self {
        let renew = snap.expires.map(|t| {
            let left = t.saturating_sub(now);
            (now + (left * 9 / 10).max(Duration::from_secs(1)), EdgeTimer::Renew)
        });
        let mut out = VecDeque::new();
        out.push_back(
            Output::Event(ClientEvent::EdgeConfig {
                edge: snap.start.host.clone(),
                uds: uds_summary(&snap.config),
                services: services_summary(&snap.config),
                token: "cached".into(),
                expires_s: snap.expires.map_or(0, |t| t.saturating_sub(now).as_secs()),
            })
            .into(),
        );
        out.push_back(Signal::EdgeReady.into());
        Self {
            start: snap.start,
            addr: Some(snap.addr),
            route: Some(snap.route),
            config: Some(snap.config),
            resolver,
            state: State::Ready,
            deadline: renew,
            attempts: 0,
            expires: snap.expires,
            renew_failures: 0,
            next_dns_id: (seed >> 24) as u16,
            out,
        }
    }

    /// What a later sign-in may start from (SPEC SD7), once configured.
    pub fn snapshot(&self) -> Option<EdgeSnapshot> {
        Some(EdgeSnapshot {
            start: self.start.clone(),
            addr: self.addr?,
            route: self.route.clone()?,
            config: self.config.clone()?,
            expires: self.expires,
        })
    }

    /// The edge's host name.
    pub fn host(&self) -> &str {
        &self.start.host
    }

    /// The edge configuration, once read.
    pub fn config(&self) -> Option<&EdgeConfig> {
        self.config.as_ref()
    }

    /// The route through this edge, once configured.
    pub fn route(&self) -> Option<Route> {
        self.route.clone()
    }

    /// Whether nothing is under way or awaited (configured and idle, or failed for good).
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Ready | State::Failed)
    }

    /// Sign-in through this edge failed in a way the edge may mend (a traversal zone that
    /// went down mid-way): try the whole edge again after [`RETRY_WAIT`]. Returns whether it
    /// will.
    pub fn retry_later(&mut self, now: Time) -> bool {
        if self.attempts >= MAX_ATTEMPTS {
            self.state = State::Failed;
            self.deadline = None;
            return false;
        }
        self.state = State::Waiting;
        self.deadline = Some((now + RETRY_WAIT, EdgeTimer::Retry));
        true
    }

    fn attempt(&mut self, now: Time) {
        self.attempts += 1;
        match self.addr {
            Some(addr) => self.request(now, addr, false),
            None => {
                let id = self.next_dns_id;
                self.next_dns_id = self.next_dns_id.wrapping_add(1);
                let token = self.resolver.query(now, &self.start.host, QType::A, id);
                self.state = State::Resolve { token };
                self.deadline = None;
            }
        }
    }

    fn request(&mut self, now: Time, addr: SocketAddr, renewal: bool) {
        let id = self.resolver.http_id();
        let s = &self.start;
        self.out.push_back(
            Output::Http(HttpReq {
                id,
                addr,
                host: s.host.clone(),
                // SPEC MRA1: the certificate must name the domain.
                tls_name: Some(s.domain.clone()),
                tls: true,
                method: "GET",
                path: wire::get_edge_config_path(&s.domain),
                basic: Some((s.user.clone(), s.password.clone())),
                headers: vec![("accept".into(), "text/xml".into())],
                body: Vec::new(),
            })
            .into(),
        );
        self.state = State::Config { id, renewal };
        self.deadline = Some((now + EDGE_TIMEOUT, EdgeTimer::Step));
    }

    /// Feeds an input (DNS datagrams, HTTP results; others are ignored).
    pub fn handle_input(&mut self, now: Time, input: Input) {
        let Some(input) = self.resolver.take_input(now, input) else {
            return self.pump(now);
        };
        if let Input::Http { id, result } = input
            && let State::Config { id: want, renewal } = self.state
            && id == want
        {
            self.on_config(now, renewal, result);
        }
        self.pump(now);
    }

    /// Time passed. Spurious calls no-op.
    pub fn handle_timeout(&mut self, now: Time) {
        self.resolver.handle_timeout(now);
        match self.deadline {
            Some((t, EdgeTimer::Step)) if t <= now => {
                if let State::Config { renewal, .. } = self.state {
                    let host = self.start.host.clone();
                    self.failed(now, renewal, EdgeError::Timeout { host });
                }
            }
            Some((t, EdgeTimer::Retry)) if t <= now => {
                self.deadline = None;
                self.attempt(now);
            }
            Some((t, EdgeTimer::Renew)) if t <= now => {
                if let Some(addr) = self.addr {
                    self.request(now, addr, true);
                }
            }
            _ => {}
        }
        self.pump(now);
    }

    /// Next output, or signal for the composite.
    pub fn poll_output(&mut self) -> Option<Emit> {
        crate::io::next_out(&mut self.out)
    }

    /// Next deadline.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.next_timer().map(|(t, _)| t)
    }

    /// The next deadline and what it is for.
    pub fn next_timer(&self) -> Option<(Time, EdgeTimer)> {
        [self.deadline, self.resolver.poll_timeout().map(|t| (t, EdgeTimer::Dns))]
            .into_iter()
            .flatten()
            .min_by_key(|(t, _)| *t)
    }

    fn on_config(&mut self, now: Time, renewal: bool, result: Result<HttpResp, NetError>) {
        let host = self.start.host.clone();
        let resp = match result {
            Ok(r) => r,
            Err(NetError::Tls(detail)) => {
                let domain = self.start.domain.clone();
                return self.failed(now, renewal, EdgeError::Certificate { host, domain, detail });
            }
            Err(error) => return self.failed(now, renewal, EdgeError::Unreachable { host, error }),
        };
        let error = match resp.status {
            200 => None,
            401 => Some(EdgeError::WrongCredentials { host: host.clone() }),
            502..=504 => Some(EdgeError::Traversal { host: host.clone(), status: resp.status }),
            status => Some(EdgeError::Status { host: host.clone(), status }),
        };
        if let Some(e) = error {
            return self.failed(now, renewal, e);
        }
        let config = match EdgeConfig::parse(&resp.body) {
            Ok(c) => c,
            Err(e) => return self.failed(now, renewal, EdgeError::Malformed(e)),
        };
        // SPEC MRA1: the records C found inside must include _cisco-uds.
        if config.servers("_cisco-uds").is_empty() {
            return self.failed(now, renewal, EdgeError::NoUds);
        }
        if config.user_uds.is_empty() {
            return self.failed(now, renewal, EdgeError::NoUdsServer);
        }
        let (token, max_age) = auth_cookie(&resp);
        let addr = self.addr.unwrap_or_else(|| SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0));
        let route = self
            .route
            .get_or_insert_with(|| Route::new(&self.start.domain, &self.start.host, addr));
        route.set_token(token.clone());
        let expires_s = max_age.map_or(0, |d| d.as_secs());
        self.expires = max_age.map(|d| now + d);
        self.renew_failures = 0;
        self.deadline =
            max_age.map(|d| (now + (d * 9 / 10).max(Duration::from_secs(1)), EdgeTimer::Renew));
        self.state = State::Ready;
        let event = if renewal {
            ClientEvent::EdgeToken { result: "renewed".into(), expires_s }
        } else {
            ClientEvent::EdgeConfig {
                edge: host,
                uds: uds_summary(&config),
                services: services_summary(&config),
                token: if token.is_some() { "set" } else { "none" }.into(),
                expires_s,
            }
        };
        self.out.push_back(Output::Event(event).into());
        self.config = Some(config);
        if !renewal {
            self.out.push_back(Signal::EdgeReady.into());
        }
    }

    fn failed(&mut self, now: Time, renewal: bool, error: EdgeError) {
        if renewal {
            // The user stays signed in on the token they have; try again later, a bounded
            // number of times.
            self.renew_failures += 1;
            let retry = error.retry_later() && self.renew_failures < MAX_ATTEMPTS;
            let result = if retry {
                format!("renewal failed: {error}")
            } else {
                format!("renewal failed: {error}; no more renewals")
            };
            self.out
                .push_back(Output::Event(ClientEvent::EdgeToken { result, expires_s: 0 }).into());
            self.state = State::Ready;
            self.deadline = retry.then_some((now + RETRY_WAIT, EdgeTimer::Renew));
            return;
        }
        let retry_in = (error.retry_later() && self.attempts < MAX_ATTEMPTS).then_some(RETRY_WAIT);
        match retry_in {
            Some(wait) => {
                self.state = State::Waiting;
                self.deadline = Some((now + wait, EdgeTimer::Retry));
            }
            None => {
                self.state = State::Failed;
                self.deadline = None;
            }
        }
        self.out.push_back(Signal::EdgeFailed { error, retry_in }.into());
    }

    fn pump(&mut self, now: Time) {
        while let Some((token, res)) = self.resolver.next_answer(&mut self.out) {
            let State::Resolve { token: want } = self.state else { continue };
            if want != token {
                continue;
            }
            let host = self.start.host.clone();
            match res.map(|m| m.first_ipv4()) {
                Ok(Some(ip)) => {
                    let addr = SocketAddr::new(IpAddr::V4(ip), self.start.port);
                    self.addr = Some(addr);
                    self.request(now, addr, false);
                }
                Ok(None) => {
                    let reason = "no address".to_owned();
                    self.failed(now, false, EdgeError::Lookup { host, reason });
                }
                Err(reason) => self.failed(now, false, EdgeError::lookup(&host, &reason)),
            }
        }
    }
}

/// The `X-Auth` cookie of a get_edge_config answer and its `Max-Age`.
fn auth_cookie(resp: &HttpResp) -> (Option<String>, Option<Duration>) {
    for v in resp.headers_named("set-cookie") {
        let mut parts = v.split(';').map(str::trim);
        let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else { continue };
        if !name.eq_ignore_ascii_case(wire::AUTH_COOKIE) || value.is_empty() {
            continue;
        }
        let max_age = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.eq_ignore_ascii_case("max-age"))
            .and_then(|(_, v)| v.parse::<u64>().ok())
            .map(|s| Duration::from_secs(s).clamp(MIN_TOKEN_LIFE, MAX_TOKEN_LIFE));
        return (Some(value.to_owned()), max_age);
    }
    (None, None)
}

/// `cucm1.example.com:8443`: the user's home UDS server(s).
fn uds_summary(c: &EdgeConfig) -> String {
    c.user_uds.iter().map(|s| format!("{}:{}", s.address, s.port)).collect::<Vec<_>>().join(",")
}

/// `_cisco-uds=cucm1.example.com:8443,_cuplogin=NameError`: what the transcript shows of the
/// services C found inside.
fn services_summary(c: &EdgeConfig) -> String {
    c.services
        .iter()
        .map(|s| {
            let what = match &s.answer {
                ServiceAnswer::Servers(l) => l
                    .iter()
                    .map(|v| format!("{}:{}", v.address, v.port))
                    .collect::<Vec<_>>()
                    .join("|"),
                ServiceAnswer::Addresses(l) => l.join("|"),
                ServiceAnswer::Error(e) => e.clone(),
            };
            format!("{}={what}", s.name)
        })
        .collect::<Vec<_>>()
        .join(",")
}
