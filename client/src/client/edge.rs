//! The composite's side of the edge (SPEC MRA1, MRA3, SD7): starting the edge engine for a
//! `_collab-edge` target (from the cache while its token is good), what its signals start,
//! and the Webex user's phone services credentials (MRA3).

use std::net::SocketAddr;

use uclab_net::derive_seed;

use super::failover::host_port;
use super::{Cached, Client, Credentials};
use crate::Time;
use crate::discovery::{Discovery, DiscoveryConfig};
use crate::edge::{Edge, EdgeStart, EdgeTimer, Route, Transport};
use crate::event::ClientEvent;
use crate::io::{Output, Owner};
use crate::signal::Signal;
use crate::signin::SignIn;
use crate::sip::phone::SipEdge;
use uclab_proto::edge::{EdgeConfig, EdgeServer};

/// An edge sign-in waiting for something before it can start (SPEC MRA3).
#[derive(Debug)]
pub(super) struct Parked {
    pub(super) creds: Credentials,
    pub(super) found: Cached,
    pub(super) from_cache: Option<(String, DiscoveryConfig)>,
    /// What it waits for.
    pub(super) until: Until,
}

/// What a parked edge sign-in waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Until {
    /// The CAS verdict: a Webex domain needs phone services credentials (MRA3).
    Cas,
    /// The user's phone services credentials (MRA3).
    Credentials,
}

impl Client {
    /// SPEC MRA3: the credentials the edge gets. `None` when the sign-in is parked: waiting
    /// for the CAS verdict, or (a Webex user's first launch) for phone services credentials.
    pub(super) fn edge_credentials(
        &mut self,
        mut c: Credentials,
        found: &Cached,
        from_cache: &Option<(String, DiscoveryConfig)>,
    ) -> Option<Credentials> {
        // SPEC MRA3: whether the user is Webex-authenticated decides which credentials
        // the edge gets, so a CAS lookup under way is waited for.
        let park = if self.discovery.as_ref().is_some_and(Discovery::cas_pending) {
            Some(Until::Cas)
        } else if found.cas_webex && !self.phone_credentials.contains_key(&self.domain) {
            // First MRA launch of a Webex user: no phone services credentials yet.
            self.out.push_back(Output::Event(ClientEvent::PhoneServicesError {
                reason: "phone services connection error: enter your phone services \
                             credentials (MRA3)"
                    .into(),
            }));
            Some(Until::Credentials)
        } else {
            None
        };
        let parked = Parked {
            creds: c.clone(),
            found: found.clone(),
            from_cache: from_cache.clone(),
            until: Until::Credentials,
        };
        if let Some(until) = park {
            self.parked = Some(Parked { until, ..parked });
            return None;
        }
        self.edge_origin = Some(parked);
        if found.cas_webex
            && let Some((user, password)) = self.phone_credentials.get(&self.domain)
        {
            // Later launches use the cached phone services credentials (MRA3).
            (c.user, c.password) = (user.clone(), password.clone());
        }
        Some(c)
    }

    /// Starts the edge engine for the attempt under way (SPEC MRA1), from the cache when it
    /// can (SD7).
    pub(super) fn start_edge(
        &mut self,
        now: Time,
        c: &Credentials,
        found: &Cached,
        key: Option<String>,
    ) {
        self.edge_key = key;
        let dns = self.dns_for(Owner::Edge);
        let seed = derive_seed(c.seed, "edge");
        // SPEC SD7: an earlier answer whose token is still good spares get_edge_config,
        // for the same user with the same password only.
        if let Some(snap) =
            found.edge.clone().filter(|s| s.fresh(now) && s.is_for(&c.user, &c.password))
        {
            self.edge = Some(Edge::from_cache(now, snap, dns, seed));
            return self.pump(now);
        }
        // SPEC MRA1: get_edge_config first; sign-in follows through the edge.
        let host = found.target.rsplit_once(':').map_or(found.target.as_str(), |(h, _)| h);
        let start = self.edge_start(c, host, found.addr.port());
        self.edge = Some(Edge::start(now, start, Some(found.addr), dns, seed));
        self.pump(now);
    }

    /// Who signs in at the edge `host:port`, for the domain under way.
    pub(super) fn edge_start(&self, c: &Credentials, host: &str, port: u16) -> EdgeStart {
        EdgeStart {
            user: c.user.clone(),
            password: c.password.clone(),
            domain: self.domain.clone(),
            host: host.to_owned(),
            port,
        }
    }

    /// Drops the edge sign-in under way or done, and what waits for one.
    pub(super) fn forget_edge(&mut self) {
        self.edge = None;
        self.parked = None;
        self.edge_origin = None;
        self.edge_signed_in = false;
    }

    /// The edge's deadline unless it is only the token's renewal (upkeep, like the
    /// softphone's refreshes: it does not keep a finished client running).
    pub(super) fn edge_step(&self) -> Option<Time> {
        self.edge
            .as_ref()
            .and_then(Edge::next_timer)
            .filter(|(_, w)| *w != EdgeTimer::Renew)
            .map(|(t, _)| t)
    }

    /// What the edge engine found out (SPEC MRA1).
    pub(super) fn on_edge(&mut self, now: Time, s: Signal) {
        match s {
            Signal::EdgeReady => {
                let (Some(edge), Some(a)) = (self.edge.as_ref(), self.attempt.as_ref()) else {
                    return;
                };
                let (Some(cfg), Some(route)) = (edge.config(), edge.route()) else { return };
                let Some(uds) = cfg.user_uds.first() else { return };
                let c = a.creds.clone();
                let signin = SignIn::start_through_edge(
                    now,
                    (&c.user, &c.password),
                    a.cas_webex,
                    (&uds.address, uds.port),
                    Transport::Edge(route),
                    self.dns_for(Owner::SignIn),
                    derive_seed(c.seed, "through-edge"),
                )
                .with_tftp_file_name(self.tftp_file_name());
                self.signin = Some(signin);
            }
            // SPEC MRA3: the edge refused the cached phone services credentials: they go, and
            // the user is asked again.
            Signal::EdgeFailed {
                error: crate::edge::EdgeError::WrongCredentials { .. }, ..
            } if self.edge_origin.as_ref().is_some_and(|p| p.found.cas_webex) => {
                self.phone_credentials.remove(&self.domain);
                self.out.push_back(Output::Event(ClientEvent::PhoneServicesError {
                    reason: "phone services: the edge refused the credentials; enter them \
                             again (MRA3)"
                        .into(),
                }));
                self.parked = self.edge_origin.take();
            }
            Signal::EdgeFailed { error, retry_in } => {
                // Another edge of the _collab-edge answer may do better (SPEC SD6).
                if error.next_target()
                    && let Some(a) = self.attempt.as_mut()
                    && let Some(next) = a.alternates.pop_front()
                {
                    self.out.push_back(Output::Event(ClientEvent::TargetFailed {
                        target: a.target.clone(),
                        reason: format!("{error}: trying {next}"),
                    }));
                    let (host, port) = host_port(&next);
                    a.target = next;
                    a.creds.seed = derive_seed(a.creds.seed, "next-edge");
                    let c = a.creds.clone();
                    let start = self.edge_start(&c, &host, port);
                    let dns = self.dns_for(Owner::Edge);
                    self.edge = Some(Edge::start(now, start, None, dns, c.seed));
                    return;
                }
                let reason = match retry_in {
                    Some(w) => format!("{error}; trying again in {} s", w.as_secs()),
                    None => error.to_string(),
                };
                self.out.push_back(Output::Event(ClientEvent::SignInFailed { reason }));
            }
            _ => {}
        }
    }

    /// The route, the edge configuration's `name` server (`xmppEdgeServer`, `sipEdgeServer`)
    /// as `servers` picks it, and that server's address; or why there is none.
    fn edge_server(
        &self,
        name: &str,
        servers: fn(&EdgeConfig) -> &[EdgeServer],
    ) -> Result<(Route, SocketAddr, &EdgeConfig), String> {
        let edge = self.edge.as_ref().ok_or("not signed in through an edge")?;
        let (Some(cfg), Some(route)) = (edge.config(), edge.route()) else {
            return Err("no edge configuration".into());
        };
        let server =
            servers(cfg).first().ok_or_else(|| format!("the edge configuration has no {name}"))?;
        let addr = route.service_addr(server).ok_or_else(|| {
            format!(
                "{name} {} is not the edge signed in through ({}); not modelled",
                server.address,
                route.edge_host()
            )
        })?;
        Ok((route, addr, cfg))
    }

    /// The route and Expressway-E's XMPP address for an IM session through the edge (SPEC
    /// MRA1: the edge configuration's `xmppEdgeServer`), or why there is none.
    pub(super) fn edge_xmpp(&self) -> Result<(Route, SocketAddr), String> {
        let (route, addr, _) = self.edge_server("xmppEdgeServer", |c| &c.xmpp_edge)?;
        Ok((route, addr))
    }

    /// Where the softphone registers through the edge (SPEC MRA1: the edge configuration's
    /// `sipEdgeServer` and `sipRequest` route), or why it cannot.
    pub(super) fn edge_sip(&self) -> Result<SipEdge, String> {
        let (route, addr, cfg) = self.edge_server("sipEdgeServer", |c| &c.sip_edge)?;
        Ok(SipEdge { addr, domain: route.domain(), route: cfg.sip_route.clone() })
    }

    /// Jabber 14's edge failover (issue 17): the softphone lost the edge (no answer to its
    /// STUN keepalive). Every engine moves to the next target of the `_collab-edge` answer
    /// (after the current one, wrapping, so a lone edge is tried again): get_edge_config
    /// there, then sign-in, IM and the softphone through it, as at first.
    pub(super) fn edge_failover(&mut self, now: Time) {
        let Some(origin) = self.edge_origin.as_ref() else { return };
        let current = self.edge.as_ref().map(|e| e.host().to_owned()).unwrap_or_default();
        let mut targets = vec![origin.found.target.clone()];
        targets.extend(origin.found.alternates.iter().cloned());
        let at = targets.iter().position(|t| host_port(t).0.eq_ignore_ascii_case(&current));
        let next = targets[at.map_or(0, |i| (i + 1) % targets.len())].clone();
        let mut c = origin.creds.clone();
        c.seed = derive_seed(c.seed, "edge-failover");
        let cas_webex = origin.found.cas_webex;
        if cas_webex && let Some((user, password)) = self.phone_credentials.get(&self.domain) {
            // SPEC MRA3: a Webex user's edge takes the phone services credentials.
            (c.user, c.password) = (user.clone(), password.clone());
        }
        self.out.push_back(Output::Event(ClientEvent::TargetFailed {
            target: current,
            reason: format!("the edge does not answer the STUN keepalive: trying {next}"),
        }));
        self.end_im();
        self.signin = None;
        let (host, port) = host_port(&next);
        self.attempt = Some(super::Attempt {
            creds: c.clone(),
            via: crate::event::Via::CollabEdge,
            target: next,
            cas_webex,
            alternates: Default::default(),
            from_cache: None,
        });
        let start = self.edge_start(&c, &host, port);
        let dns = self.dns_for(Owner::Edge);
        self.edge = Some(Edge::start(now, start, None, dns, derive_seed(c.seed, "edge")));
    }

    /// File transfer and deskphone control: SPEC MRA2, neither is available over MRA; inside
    /// the lab's client does not carry them out (not modelled yet). Either way, a clear
    /// refusal.
    pub fn refuse_feature(&mut self, feature: &str) {
        let reason =
            if self.edge_signed_in { "not available over MRA (MRA2)" } else { "not modelled yet" };
        self.out.push_back(Output::Event(ClientEvent::FeatureRefused {
            feature: feature.to_owned(),
            reason: reason.into(),
        }));
    }

    /// SPEC MRA3: the user gives their phone services credentials. They are kept for the
    /// domain of the last sign-in (later launches use them), and an edge sign-in waiting for
    /// them goes on.
    pub fn enter_phone_credentials(&mut self, now: Time, user: &str, password: &str) {
        let creds = (user.to_owned(), password.to_owned());
        self.phone_credentials.insert(self.domain.clone(), creds);
        if let Some(p) = self.parked.take_if(|p| p.until == Until::Credentials) {
            self.start_sign_in(now, p.creds, &p.found, p.from_cache);
        }
        self.pump(now);
    }
}
