//! The composite client engine: discovery, then sign-in, then the IM session and the
//! softphone, each a child engine. It owns the routing (issue 15): every id names the engine
//! that made it ([`Owner`]), one [`Resolver`] holds every engine's DNS queries, and each input
//! goes to exactly the engine that owns it. It merges their outputs, and its deadline is the
//! earliest child deadline. SPEC SD7: the service a
//! discovery reached is cached per domain; a later discovery of the same domain answers from
//! the cache without a query. SPEC CFG3: the installer's bootstrap file is read at first launch
//! only; later launches use the cache, until an install with `CLEAR` empties it.
//!
//! SPEC SD8: the client watches the network; on a change (new DNS servers from DHCP) it drops
//! what it cached about services and, if a user was signed in, discovers and signs in again
//! over whatever path the new network offers (inside: UDS; outside: the edge).
//!
//! Sign-in failover: a UDS server that answers 503 (overloaded) or does not answer at all is
//! a `target-failed`, and sign-in starts again at the next SRV target. When the server came
//! from the cache and cannot be reached, the cache entry goes and discovery runs again.
//!
//! Outside, a `_collab-edge` target starts the edge engine and sign-in runs through it
//! (`edge.rs`: SPEC MRA1, MRA3, SD7); `failover.rs` picks the next target after one that failed.
//!
//! Polling order: after each call drain [`Client::poll_output`], then sleep until
//! [`Client::poll_timeout`] and call [`Client::handle_timeout`].

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

use uclab_net::derive_seed;

use crate::Time;
pub use crate::bootstrap::Bootstrap;
use crate::discovery::{Discovery, DiscoveryConfig, DiscoveryTimer};
use crate::edge::{Edge, EdgeSnapshot, EdgeTimer};
use crate::event::{ClientEvent, Via};
use crate::im::{ImSession, ImTimer};
use crate::io::Owner;
use crate::io::{Input, Output};
use crate::resolver::{Dns, Resolver, ResolverConfig};
use crate::signal::{Emit, Signal};
use crate::signin::{Authenticator, SignIn, SignInTimer};
use crate::sip::phone::{Phone, PhoneTimer, PhoneUser};

#[derive(Clone, Debug)]
struct Credentials {
    user: String,
    password: String,
    seed: u64,
}

/// A service found by discovery (SPEC SD7).
#[derive(Clone, Debug)]
struct Cached {
    via: Via,
    target: String,
    addr: SocketAddr,
    cas_webex: bool,
    /// The SRV targets after `target`, in try order (`host:port`).
    alternates: Vec<String>,
    /// Outside: the edge configuration and token an earlier sign-in got (SPEC SD7, MRA1).
    edge: Option<EdgeSnapshot>,
}

/// The sign-in under way: where, and what to do if that server fails.
#[derive(Debug)]
struct Attempt {
    creds: Credentials,
    /// How discovery found the target: straight UDS, or the edge (SPEC MRA1).
    via: Via,
    /// `host:port` being signed in at.
    target: String,
    cas_webex: bool,
    /// Targets still to try.
    alternates: VecDeque<String>,
    /// Set when the target came from the cache: the discovery to run again if it is gone.
    from_cache: Option<(String, DiscoveryConfig)>,
}

use self::edge::{Parked, Until};

/// The client core.
#[derive(Debug)]
pub struct Client {
    /// The name servers of the network the machine is on.
    dns: ResolverConfig,
    /// The one query table of all the engines (issue 15).
    resolver: Resolver,
    /// Boxed: a map's first node has room for eleven entries, and a client caches one or two
    /// (issue 19: 4.7 KiB a client unboxed).
    cache: BTreeMap<String, Box<Cached>>,
    /// Cache key of the discovery under way.
    current: Option<String>,
    discovery: Option<Discovery>,
    /// Outside, the edge the user signs in through (SPEC MRA1).
    edge: Option<Edge>,
    /// The services domain of the discovery or sign-in under way.
    domain: String,
    /// Signed in through the edge: the user stays until the horizon (the edge token is
    /// renewed meanwhile).
    edge_signed_in: bool,
    /// The cache entry the edge's configuration belongs to (SPEC SD7).
    edge_key: Option<String>,
    /// SPEC MRA3: phone services credentials per domain, kept like the other cached state
    /// (an install with `CLEAR` deletes them).
    phone_credentials: BTreeMap<String, (String, String)>,
    /// An edge sign-in waiting for the CAS verdict or for credentials (SPEC MRA3).
    parked: Option<Parked>,
    /// The edge sign-in under way, as it was asked for: parked again for credentials when
    /// the edge refuses cached phone services credentials (SPEC MRA3).
    edge_origin: Option<Parked>,
    signin: Option<SignIn>,
    attempt: Option<Attempt>,
    /// The IM session after an IM&P-authenticated sign-in (SPEC AU4).
    im: Option<ImSession>,
    /// The softphone, once sign-in has read a CSF device's configuration (SPEC CC1, CC2).
    phone: Option<Phone>,
    pending: Option<Credentials>,
    /// The last sign-in the user asked for, to redo after a network change (SPEC SD8).
    session: Option<(DiscoveryConfig, Credentials)>,
    /// The XMPP resource: the device's name.
    resource: String,
    /// The bootstrap file the installer wrote (SPEC CFG3).
    installed: Bootstrap,
    /// The bootstrap settings read at first launch, cached; `None` before it.
    active: Option<Bootstrap>,
    /// A user signed in stays until this time (the scenario's horizon), so that others can
    /// reach them; then the client is finished.
    horizon: Time,
    /// The time of the last input, timeout or action.
    pub(crate) clock: Time,
    out: VecDeque<Output>,
}

/// Why the composite wants to be woken: the engine whose deadline it is, or the horizon
/// (str0m's `soonest` habit: "why was I woken?" has an answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// A discovery deadline.
    Discovery(DiscoveryTimer),
    /// An edge deadline (a step, a retry, the token's renewal).
    Edge(EdgeTimer),
    /// A sign-in deadline.
    SignIn(SignInTimer),
    /// An IM session deadline (a step, the HA2 re-login wait).
    Im(ImTimer),
    /// A softphone deadline (REGISTER refresh, keepalive, pings, SRST probe, calls).
    Phone(PhoneTimer),
    /// The horizon a signed-in user stays until.
    Horizon,
}

impl Client {
    /// A client whose name servers are in `resolver`.
    pub fn new(resolver: ResolverConfig) -> Self {
        Self {
            dns: resolver,
            resolver: Resolver::new(),
            cache: BTreeMap::new(),
            current: None,
            discovery: None,
            edge: None,
            domain: String::new(),
            edge_signed_in: false,
            edge_key: None,
            phone_credentials: BTreeMap::new(),
            parked: None,
            edge_origin: None,
            signin: None,
            attempt: None,
            im: None,
            phone: None,
            pending: None,
            session: None,
            resource: "uclab".to_owned(),
            installed: Bootstrap::default(),
            active: None,
            horizon: Time::ZERO,
            clock: Time::ZERO,
            out: VecDeque::new(),
        }
    }

    /// The device's name, used as its XMPP resource.
    pub fn with_resource(mut self, name: &str) -> Self {
        if !name.is_empty() {
            self.resource = name.to_owned();
        }
        self
    }

    /// Carries out an IM action (SPEC IMP1): a message, a subscription, a status. Without a
    /// signed-in IM session it is refused with an event.
    pub fn im_action(&mut self, a: &crate::im::ImAction) {
        let sent = self.im.as_mut().is_some_and(|im| im.act(a));
        if !sent {
            self.out.push_back(Output::Event(ClientEvent::ImFailed {
                reason: format!("{} not sent: not signed in to IM", a.describe()),
            }));
        }
        self.pump_im();
    }

    /// Does something with calls (SPEC CC4, CC5). Without a softphone it is refused.
    pub fn call_action(&mut self, now: Time, a: &crate::sip::call::CallAction) {
        match self.phone.as_mut() {
            Some(p) => {
                p.act(now, a);
                while let Some(o) = p.poll_output() {
                    self.out.push_back(o);
                }
            }
            None => self.out.push_back(Output::Event(ClientEvent::FeatureRefused {
                feature: a.name(),
                reason: "no softphone".into(),
            })),
        }
    }

    /// Signs `user` in to the XMPP server at `server` directly, with SASL PLAIN and no SOAP
    /// or discovery: how the client core meets a plain XMPP server (`uclab probe-xmpp`).
    pub fn im_direct(
        &mut self,
        now: Time,
        server: SocketAddr,
        domain: &str,
        (user, password): (&str, &str),
        seed: u64,
    ) {
        if let Some(im) = self.im.as_mut() {
            im.close();
        }
        let creds = (user, password, self.resource.as_str());
        let dns = self.dns_for(Owner::Im);
        self.im = Some(ImSession::direct(now, creds, domain, server, dns, seed));
        self.pump_im();
    }

    /// Registers a softphone for `line` straight to the registrar `servers[0]` (the others
    /// are its backups), without discovery or UDS: how the client core meets a real registrar
    /// (`uclab probe-sip`). The device configuration is the product's defaults.
    pub fn phone_direct(
        &mut self,
        now: Time,
        servers: &[SocketAddr],
        (user, password): (&str, &str),
        (line, udp, auto_answer): (&str, bool, bool),
        seed: u64,
    ) {
        if let Some(mut p) = self.phone.take() {
            p.close();
            self.out.extend(std::iter::from_fn(|| p.poll_output()));
        }
        let mut cfg = uclab_proto::uds::DeviceConfig::defaults(
            format!("CSF{}", user.to_ascii_uppercase()),
            servers.iter().map(|s| (s.ip().to_string(), s.port(), s.port())).collect(),
            line.to_owned(),
        );
        if udp {
            cfg.transport = 1;
        }
        let u = PhoneUser { user: user.to_owned(), password: password.to_owned() };
        let mut phone = Phone::start(now, u, cfg, self.dns_for(Owner::Phone), seed);
        phone.set_auto_answer(auto_answer);
        self.phone = Some(phone);
        while let Some(o) = self.phone.as_mut().and_then(Phone::poll_output) {
            self.out.push_back(o);
        }
    }

    fn pump_im(&mut self) {
        while let Some(o) = self.im.as_mut().and_then(ImSession::poll_output) {
            self.out.push_back(o);
        }
    }

    /// A client installed with `bootstrap` (SPEC SD9, CFG3).
    pub fn with_bootstrap(mut self, bootstrap: Bootstrap) -> Self {
        self.installed = bootstrap.settings();
        self
    }

    /// The installer runs again and writes `bootstrap`. With `CLEAR` it also deletes the
    /// cache, so the next launch is a first launch again (SPEC CFG3).
    pub fn install(&mut self, bootstrap: Bootstrap) {
        self.out.push_back(Output::Event(ClientEvent::BootstrapInstalled {
            switches: bootstrap.describe(),
            clear: bootstrap.clear,
        }));
        if bootstrap.clear {
            self.cache.clear();
            self.phone_credentials.clear();
            self.active = None;
        }
        self.installed = bootstrap.settings();
    }

    /// A launch: the bootstrap is read the first time, and the cached settings are used after
    /// that, even when the installer has written a newer file (SPEC CFG3).
    fn launch(&mut self) -> Bootstrap {
        match &self.active {
            None => {
                if self.installed != Bootstrap::default() {
                    let switches = self.installed.describe();
                    self.out.push_back(Output::Event(ClientEvent::BootstrapRead { switches }));
                }
                self.active = Some(self.installed.clone());
            }
            Some(a) if *a != self.installed => {
                let cached = a.describe();
                self.out.push_back(Output::Event(ClientEvent::BootstrapIgnored { cached }));
            }
            Some(_) => {}
        }
        self.active.clone().unwrap_or_default()
    }

    /// The user signs in: phone-mode bootstrap without discovery (SPEC SD9) when the bootstrap
    /// in force says so, else discovery and sign-in (SPEC AU1).
    pub fn sign_in_user(
        &mut self,
        now: Time,
        cfg: &DiscoveryConfig,
        user: &str,
        password: &str,
        seed: u64,
    ) {
        let boot = self.launch();
        match boot.phone_mode_cucm() {
            Some(cucm) => self.sign_in_bootstrap(now, cucm, user, password, seed),
            None => self.sign_in(now, &boot.apply(cfg), user, password, seed),
        }
    }

    /// Discovers services (SPEC SD1–SD5), from the cache when it can (SD7).
    pub fn discover(&mut self, now: Time, cfg: &DiscoveryConfig, seed: u64) {
        let boot = self.launch();
        self.pending = None;
        self.begin(now, &boot.apply(cfg), seed);
    }

    /// Discovers, then signs `user` in (SPEC AU1).
    pub fn sign_in(
        &mut self,
        now: Time,
        cfg: &DiscoveryConfig,
        user: &str,
        password: &str,
        seed: u64,
    ) {
        let creds = Credentials {
            user: user.to_owned(),
            password: password.to_owned(),
            seed: derive_seed(seed, "signin"),
        };
        self.session = Some((cfg.clone(), creds.clone()));
        self.pending = Some(creds);
        self.begin(now, cfg, seed);
    }

    /// SPEC SD8: the network changed; `dns` are the new name servers. Cached services go, and
    /// a user who signed in is signed in again over the path discovery finds now.
    pub fn network_changed(&mut self, now: Time, dns: Vec<SocketAddr>, seed: u64) {
        let list = dns.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
        self.out.push_back(Output::Event(ClientEvent::NetworkChanged { dns: list }));
        self.dns = ResolverConfig::new(dns);
        self.cache.clear();
        self.end_im();
        self.discovery = None;
        self.forget_edge();
        self.signin = None;
        self.attempt = None;
        match self.session.clone() {
            Some((cfg, mut creds)) => {
                creds.seed = derive_seed(creds.seed ^ seed, "network");
                self.pending = Some(creds);
                self.begin(now, &cfg, seed);
            }
            None => self.pending = None,
        }
    }

    /// SPEC SD9: signs `user` in at the CUCM the bootstrap names, without service discovery.
    pub fn sign_in_bootstrap(
        &mut self,
        now: Time,
        cucm: &str,
        user: &str,
        password: &str,
        seed: u64,
    ) {
        self.discovery = None;
        self.pending = None;
        self.current = None;
        self.forget_edge();
        self.attempt = None;
        self.out.push_back(Output::Event(ClientEvent::DiscoveryResolved { via: Via::Bootstrap }));
        let file = self.tftp_file_name();
        self.signin = Some(
            SignIn::start_bootstrap(now, user, password, cucm, self.dns_for(Owner::SignIn), seed)
                .with_tftp_file_name(file),
        );
        self.pump(now);
    }

    /// SPEC CFG2: `TFTP_FILE_NAME` of the bootstrap in force.
    fn tftp_file_name(&self) -> Option<String> {
        self.active.as_ref().and_then(|b| b.tftp_file_name.clone())
    }

    fn key(cfg: &DiscoveryConfig) -> String {
        let voice = cfg.voice_domain.as_deref().unwrap_or("");
        format!("{}|{voice}", cfg.services_domain.to_ascii_lowercase())
    }

    fn end_im(&mut self) {
        if let Some(mut im) = self.im.take() {
            im.close();
            self.out.extend(std::iter::from_fn(|| im.poll_output()));
        }
        if let Some(mut p) = self.phone.take() {
            p.close();
            self.out.extend(std::iter::from_fn(|| p.poll_output()));
        }
    }

    fn begin(&mut self, now: Time, cfg: &DiscoveryConfig, seed: u64) {
        self.end_im();
        self.forget_edge();
        self.domain = cfg.services_domain.to_ascii_lowercase();
        self.signin = None;
        self.attempt = None;
        self.discovery = None;
        let key = Self::key(cfg);
        match self.cache.get(&key).cloned() {
            Some(c) if !cfg.no_discovery => {
                self.current = None;
                let domain = cfg.services_domain.to_ascii_lowercase();
                self.out.push_back(Output::Event(ClientEvent::DiscoveryStarted { domain }));
                self.out.push_back(Output::Event(ClientEvent::DiscoveryCached {
                    via: c.via,
                    target: c.target.clone(),
                }));
                if let Some(creds) = self.pending.take() {
                    self.start_sign_in(now, creds, &c, Some((key, cfg.clone())));
                }
            }
            _ => {
                self.current = Some(key);
                self.discovery =
                    Some(Discovery::start(now, cfg, self.dns_for(Owner::Discovery), seed));
                self.pump(now);
            }
        }
    }

    fn start_sign_in(
        &mut self,
        now: Time,
        mut c: Credentials,
        found: &Cached,
        from_cache: Option<(String, DiscoveryConfig)>,
    ) {
        if found.via == Via::CollabEdge {
            match self.edge_credentials(c, found, &from_cache) {
                Some(creds) => c = creds,
                None => return,
            }
        }
        if !matches!(found.via, Via::CiscoUds | Via::CollabEdge) {
            self.out.push_back(Output::Event(ClientEvent::SignInFailed {
                reason: format!("sign-in through {} is not modelled yet", found.via.as_str()),
            }));
            return;
        }
        let host = found.target.rsplit_once(':').map_or(found.target.as_str(), |(h, _)| h);
        let key = from_cache.as_ref().map(|(k, _)| k.clone()).or_else(|| self.current.clone());
        self.attempt = Some(Attempt {
            creds: c.clone(),
            via: found.via,
            target: found.target.clone(),
            cas_webex: found.cas_webex,
            alternates: found.alternates.iter().cloned().collect(),
            from_cache,
        });
        if found.via == Via::CollabEdge {
            return self.start_edge(now, &c, found, key);
        }
        self.signin = Some(
            SignIn::start(
                now,
                &c.user,
                &c.password,
                found.cas_webex,
                host,
                found.addr,
                self.dns_for(Owner::SignIn),
                c.seed,
            )
            .with_tftp_file_name(self.tftp_file_name()),
        );
        self.pump(now);
    }

    /// Whether an IM session is signed in.
    pub fn im_connected(&self) -> bool {
        self.im.as_ref().is_some_and(ImSession::is_connected)
    }

    /// Whether the softphone is registered (it keeps refreshing, pinging and keeping alive).
    pub fn phone_registered(&self) -> bool {
        self.phone.as_ref().is_some_and(|p| p.registered().is_some())
    }

    /// Whether there is a softphone (registered or trying).
    pub fn has_phone(&self) -> bool {
        self.phone.is_some()
    }

    /// Whether nothing is running but the softphone's upkeep: then only its timers are due.
    pub fn only_upkeep(&self) -> bool {
        self.is_idle()
            && self.discovery.as_ref().and_then(Discovery::poll_timeout).is_none()
            && self.edge_step().is_none()
            && self.signin.as_ref().and_then(SignIn::poll_timeout).is_none()
            && self.im.as_ref().and_then(ImSession::poll_timeout).is_none()
    }

    /// Whether nothing is running.
    pub fn is_idle(&self) -> bool {
        self.discovery.as_ref().is_none_or(Discovery::is_done)
            && self.edge.as_ref().is_none_or(Edge::is_done)
            && self.signin.as_ref().is_none_or(SignIn::is_done)
            && self.im.as_ref().is_none_or(ImSession::is_settled)
            && self.phone.as_ref().is_none_or(Phone::is_settled)
    }

    /// A resolver handle for a new engine of `owner`, on the current network's name servers.
    fn dns_for(&self, owner: Owner) -> Dns {
        self.resolver.handle(owner, self.dns.clone())
    }

    /// Feeds an input to the one engine that owns it (issue 15): by its id, or for a datagram
    /// on the resolver socket, by the query it answers. An ICMP unreachable is about a server,
    /// not a query, so every engine with queries hears of it.
    pub fn handle_input(&mut self, now: Time, input: Input) {
        self.clock = now;
        let owner = match &input {
            Input::Datagram { from, bytes } => self.resolver.claim(*from, bytes),
            Input::Unreachable { .. } => {
                if let Some(im) = self.im.as_mut() {
                    im.handle_input(now, input.clone());
                }
                if let Some(p) = self.phone.as_mut() {
                    p.handle_input(now, input.clone());
                }
                if let Some(s) = self.signin.as_mut() {
                    s.handle_input(now, input.clone());
                }
                if let Some(e) = self.edge.as_mut() {
                    e.handle_input(now, input.clone());
                }
                if let Some(d) = self.discovery.as_mut() {
                    d.handle_input(now, input);
                }
                return self.pump(now);
            }
            Input::TcpAnswer { token, .. } => Some(token.owner),
            Input::Connected { id }
            | Input::ConnectFailed { id, .. }
            | Input::StreamOpened { id }
            | Input::StreamFailed { id, .. }
            | Input::StreamData { id, .. }
            | Input::StreamTls { id } => Some(id.owner),
            Input::Http { id, .. } => Some(id.owner),
            Input::Media { .. } => Some(Owner::Phone),
        };
        match owner {
            Some(Owner::Discovery) => {
                if let Some(d) = self.discovery.as_mut() {
                    d.handle_input(now, input);
                }
            }
            Some(Owner::SignIn) => {
                if let Some(s) = self.signin.as_mut() {
                    s.handle_input(now, input);
                }
            }
            Some(Owner::Edge) => {
                if let Some(e) = self.edge.as_mut() {
                    e.handle_input(now, input);
                }
            }
            Some(Owner::Im) => {
                if let Some(im) = self.im.as_mut() {
                    im.handle_input(now, input);
                }
            }
            Some(Owner::Phone) => {
                if let Some(p) = self.phone.as_mut() {
                    p.handle_input(now, input);
                }
            }
            // Nobody asked: a late, spoofed or garbled DNS answer.
            None => {}
        }
        self.pump(now);
    }

    /// Time passed. Spurious calls no-op.
    pub fn handle_timeout(&mut self, now: Time) {
        self.clock = now;
        if let Some(d) = self.discovery.as_mut() {
            d.handle_timeout(now);
        }
        if let Some(e) = self.edge.as_mut() {
            e.handle_timeout(now);
        }
        if let Some(s) = self.signin.as_mut() {
            s.handle_timeout(now);
        }
        if let Some(im) = self.im.as_mut() {
            im.handle_timeout(now);
        }
        if let Some(p) = self.phone.as_mut() {
            p.handle_timeout(now);
        }
        self.pump(now);
    }

    /// Next output.
    pub fn poll_output(&mut self) -> Option<Output> {
        crate::io::next_out(&mut self.out)
    }

    /// When [`Client::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.next_wake().map(|(t, _)| t)
    }

    /// The earliest deadline and whose it is (the first engine wins a tie).
    pub fn next_wake(&self) -> Option<(Time, Wake)> {
        let staying = self.signed_in_somewhere() && self.clock < self.horizon;
        [
            self.discovery
                .as_ref()
                .and_then(Discovery::next_timer)
                .map(|(t, w)| (t, Wake::Discovery(w))),
            self.edge
                .as_ref()
                .and_then(Edge::next_timer)
                .filter(|(_, w)| *w != EdgeTimer::Renew || staying)
                .map(|(t, w)| (t, Wake::Edge(w))),
            self.signin.as_ref().and_then(SignIn::next_timer).map(|(t, w)| (t, Wake::SignIn(w))),
            self.im.as_ref().and_then(ImSession::next_timer).map(|(t, w)| (t, Wake::Im(w))),
            self.phone.as_ref().and_then(Phone::next_timer).map(|(t, w)| (t, Wake::Phone(w))),
            staying.then_some((self.horizon, Wake::Horizon)),
        ]
        .into_iter()
        .flatten()
        .min_by_key(|(t, _)| *t)
    }

    /// A user stays until `horizon` while signed in to IM or registered (a scenario's last
    /// step or deadline); then the client is finished.
    pub fn with_horizon(mut self, horizon: Time) -> Self {
        self.horizon = horizon;
        self
    }

    fn signed_in_somewhere(&self) -> bool {
        self.im_connected() || self.phone_registered() || self.edge_signed_in
    }

    /// Whether the client has nothing more to do at `now`: nothing running and no user to
    /// keep signed in, or past the horizon with only the softphone's upkeep left (its
    /// refreshes and pings go on for ever).
    pub fn is_finished(&self, now: Time) -> bool {
        let staying = self.signed_in_somewhere() && now < self.horizon;
        let upkeep_over = self.only_upkeep() && self.phone.is_some() && now >= self.horizon;
        let children = [
            self.discovery.as_ref().and_then(Discovery::poll_timeout),
            self.edge_step(),
            self.signin.as_ref().and_then(SignIn::poll_timeout),
            self.im.as_ref().and_then(ImSession::poll_timeout),
            self.phone.as_ref().and_then(Phone::poll_timeout),
        ];
        upkeep_over || (!staying && self.is_idle() && children.iter().all(Option::is_none))
    }

    fn pump(&mut self, now: Time) {
        while let Some(e) = self.discovery.as_mut().and_then(Discovery::poll_output) {
            match e {
                Emit::Out(o) => self.out.push_back(o),
                Emit::Signal(s) => self.on_discovery(now, s),
            }
        }
        let mut edge_news = false;
        while let Some(e) = self.edge.as_mut().and_then(Edge::poll_output) {
            edge_news = true;
            match e {
                Emit::Out(o) => self.out.push_back(o),
                Emit::Signal(s) => self.on_edge(now, s),
            }
        }
        // SPEC SD7: what the edge gave is cached with the service it belongs to.
        if edge_news
            && let Some(snap) = self.edge.as_ref().and_then(Edge::snapshot)
            && let Some(k) = self.edge_key.clone()
            && let Some(c) = self.cache.get_mut(&k)
        {
            c.edge = Some(snap);
        }
        while let Some(e) = self.signin.as_mut().and_then(SignIn::poll_output) {
            match e {
                Emit::Out(o) => self.out.push_back(o),
                Emit::Signal(Signal::SignInFailed { error, retry }) => {
                    let mut reason = error.to_string();
                    if self.attempt.as_ref().is_some_and(|a| a.via == Via::CollabEdge) {
                        // Through the edge, a zone that went down mid-way (503/502/timeout)
                        // is the edge's to mend: the whole edge is tried again later.
                        let edge_fault = retry.is_some()
                            || matches!(
                                error,
                                crate::signin::SignInError::Status { status: 502..=504, .. }
                                    | crate::signin::SignInError::Timeout { .. }
                            );
                        if edge_fault && self.edge.as_mut().is_some_and(|e| e.retry_later(now)) {
                            let wait = crate::edge::RETRY_WAIT.as_secs();
                            reason = format!("{reason}; trying the edge again in {wait} s");
                        }
                        self.out.push_back(Output::Event(ClientEvent::SignInFailed { reason }));
                        continue;
                    }
                    if self.fail_over(now, retry, &reason) {
                        return self.pump(now);
                    }
                    self.out.push_back(Output::Event(ClientEvent::SignInFailed { reason }));
                }
                Emit::Signal(Signal::SignedIn { authenticator }) => {
                    self.signed_in(now, authenticator);
                }
                Emit::Signal(_) => {}
            }
        }
        self.pump_im();
        while let Some(o) = self.phone.as_mut().and_then(Phone::poll_output) {
            self.out.push_back(o);
        }
        if self.phone.as_mut().is_some_and(Phone::take_edge_lost) {
            while let Some(o) = self.phone.as_mut().and_then(Phone::poll_output) {
                self.out.push_back(o);
            }
            self.edge_failover(now);
            // What the new edge engine asks goes out now, not at its first retransmission.
            return self.pump(now);
        }
        if self.signin.as_ref().is_some_and(SignIn::is_done) {
            self.attempt = None;
        }
    }

    /// What discovery found out.
    fn on_discovery(&mut self, now: Time, s: Signal) {
        match s {
            // SPEC AU2: a CAS hit decides Webex, even when it arrives during sign-in.
            Signal::CasDone => {
                if let Some(mut p) = self.parked.take_if(|p| p.until == Until::Cas) {
                    p.found.cas_webex |=
                        self.discovery.as_ref().and_then(Discovery::cas_webex).unwrap_or(false);
                    self.start_sign_in(now, p.creds, &p.found, p.from_cache);
                }
            }
            Signal::CasWebex => {
                if let Some(s) = self.signin.as_mut() {
                    s.set_cas_webex(true);
                }
                if let Some(c) = self.current.as_ref().and_then(|k| self.cache.get_mut(k)) {
                    c.cas_webex = true;
                }
            }
            Signal::ServiceReached { via, target, addr } => {
                let d = self.discovery.as_ref();
                let found = Cached {
                    via,
                    target,
                    addr,
                    cas_webex: d.and_then(Discovery::cas_webex).unwrap_or(false),
                    alternates: d.map(|d| d.alternates().to_vec()).unwrap_or_default(),
                    edge: None,
                };
                // SPEC SD7: remember what this domain's discovery reached.
                if let Some(k) = &self.current {
                    self.cache.insert(k.clone(), Box::new(found.clone()));
                }
                if let Some(c) = self.pending.take() {
                    self.start_sign_in(now, c, &found, None);
                }
            }
            Signal::DiscoveryFailed => {
                if self.pending.take().is_some() {
                    self.out.push_back(Output::Event(ClientEvent::SignInFailed {
                        reason: "no service found".into(),
                    }));
                }
            }
            Signal::SignedIn { .. }
            | Signal::SignInFailed { .. }
            | Signal::EdgeReady
            | Signal::EdgeFailed { .. } => {}
        }
    }

    /// Sign-in finished: SPEC CC1/CC2, a CSF device's configuration starts the softphone;
    /// SPEC AU4, IM&P authenticated: the IM session starts at the profile's servers.
    fn signed_in(&mut self, now: Time, authenticator: Authenticator) {
        let (Some(s), Some(a)) = (self.signin.as_ref(), self.attempt.as_ref()) else { return };
        let c = a.creds.clone();
        let im_servers = s.imp_servers().to_vec();
        let contact_source = s.contact_source().to_owned();
        let device = s.device_config().filter(|d| !d.line.is_empty()).cloned();
        let im_wanted = authenticator == Authenticator::Cup && !im_servers.is_empty();
        let creds = (c.user.as_str(), c.password.as_str(), self.resource.as_str());
        // SPEC MRA1: outside, the same engines start with the edge's addresses: the softphone
        // at its `sipEdgeServer`, the IM session's SOAP by its HTTP proxy and its XMPP at its
        // `xmppEdgeServer`. A path the edge configuration does not give is a clear refusal.
        let outside = a.via == Via::CollabEdge;
        self.edge_signed_in |= outside;
        let refuse = |feature: &str, reason: String| {
            Output::Event(ClientEvent::FeatureRefused { feature: feature.into(), reason })
        };
        if let Some(cfg) = device {
            let user = PhoneUser { user: c.user.clone(), password: c.password.clone() };
            let (dns, seed) = (self.dns_for(Owner::Phone), derive_seed(c.seed, "phone"));
            match outside.then(|| self.edge_sip()).transpose() {
                Ok(None) => self.phone = Some(Phone::start(now, user, cfg, dns, seed)),
                Ok(Some(edge)) => {
                    self.phone = Some(Phone::start_through_edge(now, user, cfg, edge, dns, seed));
                }
                Err(reason) => self.out.push_back(refuse("softphone", reason)),
            }
        }
        if im_wanted {
            let (dns, seed) = (self.dns_for(Owner::Im), derive_seed(c.seed, "im"));
            let mut im = match outside.then(|| self.edge_xmpp()).transpose() {
                Ok(None) => ImSession::start(now, creds, im_servers, dns, seed),
                Ok(Some(path)) => {
                    ImSession::start_through_edge(now, creds, im_servers, path, dns, seed)
                }
                Err(reason) => return self.out.push_back(refuse("im", reason)),
            };
            im.set_contact_source(&contact_source);
            self.im = Some(im);
        }
    }
}

mod edge;
mod failover;
#[cfg(test)]
mod tests;
