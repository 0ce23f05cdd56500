//! The composite client engine: discovery, then sign-in, each a child engine. It routes inputs
//! to the children (DNS datagrams to both: each resolver only accepts its own ids), merges
//! their outputs, and its deadline is the earliest child deadline. SPEC SD7: the service a
//! discovery reached is cached per domain; a later discovery of the same domain answers from
//! the cache without a query.
//!
//! Polling order: after each call drain [`Client::poll_output`], then sleep until
//! [`Client::poll_timeout`] and call [`Client::handle_timeout`].

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

use crate::Time;
use crate::discovery::{Discovery, DiscoveryConfig};
use crate::event::{ClientEvent, Via};
use crate::io::{Input, Output};
use crate::resolver::ResolverConfig;
use crate::signin::SignIn;

#[derive(Debug)]
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
}

/// The client core.
#[derive(Debug)]
pub struct Client {
    resolver: ResolverConfig,
    cache: BTreeMap<String, Cached>,
    /// Cache key of the discovery under way.
    current: Option<String>,
    discovery: Option<Discovery>,
    signin: Option<SignIn>,
    pending: Option<Credentials>,
    out: VecDeque<Output>,
}

impl Client {
    /// A client whose name servers are in `resolver`.
    pub fn new(resolver: ResolverConfig) -> Self {
        Self {
            resolver,
            cache: BTreeMap::new(),
            current: None,
            discovery: None,
            signin: None,
            pending: None,
            out: VecDeque::new(),
        }
    }

    /// Discovers services (SPEC SD1–SD5), from the cache when it can (SD7).
    pub fn discover(&mut self, now: Time, cfg: &DiscoveryConfig, seed: u64) {
        self.pending = None;
        self.begin(now, cfg, seed);
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
        self.pending = Some(Credentials {
            user: user.to_owned(),
            password: password.to_owned(),
            seed: seed ^ 0x5151,
        });
        self.begin(now, cfg, seed);
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
        self.out.push_back(Output::Event(ClientEvent::DiscoveryResolved { via: Via::Bootstrap }));
        self.signin =
            Some(SignIn::start_bootstrap(now, user, password, cucm, self.resolver.clone(), seed));
        self.pump(now);
    }

    fn key(cfg: &DiscoveryConfig) -> String {
        let voice = cfg.voice_domain.as_deref().unwrap_or("");
        format!("{}|{voice}", cfg.services_domain.to_ascii_lowercase())
    }

    fn begin(&mut self, now: Time, cfg: &DiscoveryConfig, seed: u64) {
        self.signin = None;
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
                    self.start_sign_in(now, creds, &c);
                }
            }
            _ => {
                self.current = Some(key);
                self.discovery = Some(Discovery::start(now, cfg, self.resolver.clone(), seed));
                self.pump(now);
            }
        }
    }

    fn start_sign_in(&mut self, now: Time, c: Credentials, found: &Cached) {
        if found.via != Via::CiscoUds {
            self.out.push_back(Output::Event(ClientEvent::SignInFailed {
                reason: format!("sign-in through {} is not modelled yet", found.via.as_str()),
            }));
            return;
        }
        let host = found.target.rsplit_once(':').map_or(found.target.as_str(), |(h, _)| h);
        self.signin = Some(SignIn::start(
            now,
            &c.user,
            &c.password,
            found.cas_webex,
            host,
            found.addr,
            self.resolver.clone(),
            c.seed,
        ));
        self.pump(now);
    }

    /// Whether nothing is running.
    pub fn is_idle(&self) -> bool {
        self.discovery.as_ref().is_none_or(Discovery::is_done)
            && self.signin.as_ref().is_none_or(SignIn::is_done)
    }

    /// Feeds an input to the children that may want it.
    pub fn handle_input(&mut self, now: Time, input: Input) {
        let to_signin = matches!(
            input,
            Input::Datagram { .. }
                | Input::Unreachable { .. }
                | Input::TcpAnswer { .. }
                | Input::Http { .. }
        );
        if let (true, Some(s)) = (to_signin, self.signin.as_mut()) {
            s.handle_input(now, input.clone());
        }
        if let Some(d) = self.discovery.as_mut() {
            d.handle_input(now, input);
        }
        self.pump(now);
    }

    /// Time passed. Spurious calls no-op.
    pub fn handle_timeout(&mut self, now: Time) {
        if let Some(d) = self.discovery.as_mut() {
            d.handle_timeout(now);
        }
        if let Some(s) = self.signin.as_mut() {
            s.handle_timeout(now);
        }
        self.pump(now);
    }

    /// Next output.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Earliest child deadline.
    pub fn poll_timeout(&self) -> Option<Time> {
        let d = self.discovery.as_ref().and_then(Discovery::poll_timeout);
        let s = self.signin.as_ref().and_then(SignIn::poll_timeout);
        [d, s].into_iter().flatten().min()
    }

    fn pump(&mut self, now: Time) {
        while let Some(o) = self.discovery.as_mut().and_then(Discovery::poll_output) {
            // SPEC AU2: a CAS hit decides Webex, even when it arrives during sign-in.
            if let (Output::Event(ClientEvent::CasResult { result, .. }), Some(s)) =
                (&o, self.signin.as_mut())
                && result == "webex"
            {
                s.set_cas_webex(true);
            }
            if let Output::Event(ClientEvent::ServiceReached { via, target, addr }) = &o {
                let found = Cached {
                    via: *via,
                    target: target.clone(),
                    addr: addr.parse().expect("the engine formats addresses it parsed"),
                    cas_webex: self
                        .discovery
                        .as_ref()
                        .and_then(Discovery::cas_webex)
                        .unwrap_or(false),
                };
                // SPEC SD7: remember what this domain's discovery reached.
                if let Some(k) = &self.current {
                    self.cache.insert(k.clone(), found.clone());
                }
                self.out.push_back(o);
                if let Some(c) = self.pending.take() {
                    self.start_sign_in(now, c, &found);
                }
                continue;
            }
            if let (Output::Event(ClientEvent::CasResult { result, .. }), Some(k)) =
                (&o, &self.current)
                && result == "webex"
                && let Some(c) = self.cache.get_mut(k)
            {
                c.cas_webex = true;
            }
            if let Output::Event(ClientEvent::DiscoveryFailed { .. }) = &o
                && self.pending.take().is_some()
            {
                self.out.push_back(o);
                self.out.push_back(Output::Event(ClientEvent::SignInFailed {
                    reason: "no service found".into(),
                }));
                continue;
            }
            self.out.push_back(o);
        }
        while let Some(o) = self.signin.as_mut().and_then(SignIn::poll_output) {
            self.out.push_back(o);
        }
    }
}
