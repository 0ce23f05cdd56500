//! The composite client engine: discovery, then sign-in, each a child engine. It routes inputs
//! to the children (DNS datagrams to both: each resolver only accepts its own ids), merges
//! their outputs, and its deadline is the earliest child deadline.
//!
//! Polling order: after each call drain [`Client::poll_output`], then sleep until
//! [`Client::poll_timeout`] and call [`Client::handle_timeout`].

use std::collections::VecDeque;

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

/// The client core.
#[derive(Debug)]
pub struct Client {
    resolver: ResolverConfig,
    discovery: Option<Discovery>,
    signin: Option<SignIn>,
    pending: Option<Credentials>,
    out: VecDeque<Output>,
}

impl Client {
    /// A client whose name servers are in `resolver`.
    pub fn new(resolver: ResolverConfig) -> Self {
        Self { resolver, discovery: None, signin: None, pending: None, out: VecDeque::new() }
    }

    /// Discovers services (SPEC SD1–SD5).
    pub fn discover(&mut self, now: Time, cfg: &DiscoveryConfig, seed: u64) {
        self.signin = None;
        self.pending = None;
        self.discovery = Some(Discovery::start(now, cfg, self.resolver.clone(), seed));
        self.pump(now);
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
        self.discover(now, cfg, seed);
        self.pending = Some(Credentials {
            user: user.to_owned(),
            password: password.to_owned(),
            seed: seed ^ 0x5151,
        });
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
            if let Output::Event(ClientEvent::ServiceReached { via, target, addr }) = &o
                && let Some(c) = self.pending.take()
            {
                self.out.push_back(o.clone());
                if *via == Via::CiscoUds {
                    let host = target.rsplit_once(':').map_or(target.as_str(), |(h, _)| h);
                    let addr = addr.parse().expect("the engine formats addresses it parsed");
                    self.signin = Some(SignIn::start(
                        now,
                        &c.user,
                        &c.password,
                        self.discovery.as_ref().and_then(Discovery::cas_webex).unwrap_or(false),
                        host,
                        addr,
                        self.resolver.clone(),
                        c.seed,
                    ));
                } else {
                    self.out.push_back(Output::Event(ClientEvent::SignInFailed {
                        reason: format!("sign-in through {} is not modelled yet", via.as_str()),
                    }));
                }
                continue;
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
