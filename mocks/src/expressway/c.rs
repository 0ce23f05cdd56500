//! Expressway-C (inside, SPEC MRA1): its settings, its state (tokens, the allow list) and the
//! context its tasks share. What it does with a request is `handle.rs`; its end of the
//! traversal zones is `zone.rs`.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::Duration;

use super::allow::{AllowList, AllowRule};
use super::tokens::{DEFAULT_LIFETIME, Tokens};

/// One E node C keeps a zone to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgePeer {
    /// E's FQDN (its certificate must carry it; it is the edge servers' address in the edge
    /// configuration).
    pub fqdn: String,
    /// E's traversal address (port 7001).
    pub addr: SocketAddr,
}

/// Expressway-C's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CConfig {
    /// C's FQDN (its certificate on the zone).
    pub host: String,
    /// Enterprise domains C serves (others get 404).
    pub domains: Vec<String>,
    /// The internal DNS server.
    pub dns: SocketAddr,
    /// Its E nodes.
    pub edges: Vec<EdgePeer>,
    /// Lifetime of an `X-Auth` token.
    pub token_lifetime: Duration,
    /// The `userUdsServer` field fault (WIRE.md): an empty element.
    pub user_uds_empty: bool,
    /// Allow-list rules of the scenario (beside the automatic ones).
    pub allow: Vec<AllowRule>,
}

impl CConfig {
    /// C for `domain`, with defaults: one-hour tokens, no extra rules.
    pub fn new(host: &str, domain: &str, dns: SocketAddr, edges: Vec<EdgePeer>) -> Self {
        Self {
            host: host.to_owned(),
            domains: vec![domain.to_ascii_lowercase()],
            dns,
            edges,
            token_lifetime: DEFAULT_LIFETIME,
            user_uds_empty: false,
            allow: Vec::new(),
        }
    }
}

/// C's state: tokens and what the allow list discovered.
#[derive(Debug)]
pub struct CState {
    /// `X-Auth` tokens.
    pub tokens: Tokens,
    /// The HTTP allow list.
    pub allow: AllowList,
}

/// What C's tasks share.
pub struct Ctx<N> {
    /// The node's network.
    pub net: N,
    /// Settings.
    pub cfg: CConfig,
    /// State.
    pub state: RefCell<CState>,
}

impl<N> Ctx<N> {
    /// Whether C serves `domain`.
    pub fn serves(&self, domain: &str) -> bool {
        self.cfg.domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
    }
}
