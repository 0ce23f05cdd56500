//! Expressway-C (inside, SPEC MRA1): its settings, its state (tokens, the allow list) and the
//! context its tasks share. What it does with a request is `handle.rs`, with an XMPP channel
//! `inside.rs`; its end of the traversal zones is `zone.rs`.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use crate::imp::{ImUserRef, ImpState};

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
    /// E's XMPP traversal address (port 7400, issue 17).
    pub xmpp_addr: SocketAddr,
    /// Where clients reach E's services (the edge configuration names them).
    pub ports: EdgePorts,
}

/// The ports of E's services for clients: their standard numbers in simulation, the ports
/// live mode maps them to on loopback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EdgePorts {
    /// XMPP (`xmppEdgeServer`, 5222).
    pub xmpp: u16,
    /// SIP over TLS (`sipEdgeServer`, 5061).
    pub sip: u16,
}

impl Default for EdgePorts {
    fn default() -> Self {
        Self { xmpp: 5222, sip: 5061 }
    }
}

impl EdgePeer {
    /// Where C opens E's zone of `kind`.
    pub fn zone_addr(&self, kind: super::ZoneKind) -> SocketAddr {
        match kind {
            super::ZoneKind::Http => self.addr,
            super::ZoneKind::Xmpp => self.xmpp_addr,
        }
    }
}

/// A user as the IM&P cluster assigns them (SPEC HA3): configured primary and secondary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutedUser {
    /// User id (the local part of the JID).
    pub id: String,
    /// Configured primary node (FQDN).
    pub primary: String,
    /// Configured secondary node.
    pub secondary: Option<String>,
}

/// C as a router peer of the IM&P cluster (issue 17, docs/decisions.md): where each user is
/// homed now. The cluster's shared state says which nodes are down, so the answer is the one
/// SOAP `get-all-config` gives (SPEC HA1: the secondary while the primary is down).
#[derive(Clone)]
pub struct XcpRoute {
    /// The cluster's shared state (which nodes are down).
    pub state: Rc<RefCell<ImpState>>,
    /// Its users.
    pub users: Vec<RoutedUser>,
    /// Its nodes, in order: FQDN and XMPP port (5222; another in live mode).
    pub nodes: Vec<(String, u16)>,
    /// The presence domain (the nodes' certificates carry it).
    pub domain: String,
}

impl std::fmt::Debug for XcpRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XcpRoute")
            .field("users", &self.users.len())
            .field("nodes", &self.nodes)
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

impl PartialEq for XcpRoute {
    fn eq(&self, o: &Self) -> bool {
        Rc::ptr_eq(&self.state, &o.state)
            && (&self.users, &self.nodes, &self.domain) == (&o.users, &o.nodes, &o.domain)
    }
}

impl Eq for XcpRoute {}

impl XcpRoute {
    /// User `id`'s current home node and its XMPP port. A user the cluster does not know goes
    /// to its first node that is up, which refuses them as the product would (the edge does
    /// not tell who exists).
    pub fn home(&self, id: &str) -> Option<(String, u16)> {
        let st = self.state.borrow();
        let node = match self.users.iter().find(|u| u.id.eq_ignore_ascii_case(id)) {
            Some(u) => {
                let r = ImUserRef { primary: &u.primary, secondary: u.secondary.as_deref() };
                st.nodes_of(&r).0.to_owned()
            }
            None => {
                let first = self.nodes.first()?.0.clone();
                let r = ImUserRef {
                    primary: &first,
                    secondary: self.nodes.get(1).map(|n| n.0.as_str()),
                };
                st.nodes_of(&r).0.to_owned()
            }
        };
        let port = self.nodes.iter().find(|n| n.0 == node).map_or(5222, |n| n.1);
        Some((node, port))
    }
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
    /// The IM&P cluster XMPP channels go to (issue 17); none: channels are refused.
    pub xcp: Option<XcpRoute>,
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
            xcp: None,
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
    /// Media relay ports in use (issue 17).
    pub media: super::c_media::PortPool,
}

/// What C's tasks share.
pub struct Ctx<N> {
    /// The node's network.
    pub net: N,
    /// Settings.
    pub cfg: CConfig,
    /// State.
    pub state: RefCell<CState>,
    /// Connection slots towards the inside.
    pub upstream: super::upstream::Slots,
}

impl<N> Ctx<N> {
    /// Whether C serves `domain`.
    pub fn serves(&self, domain: &str) -> bool {
        self.cfg.domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
    }
}
