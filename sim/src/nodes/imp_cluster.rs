//! IM&P clusters in a run: the state a cluster's nodes share (its router, sessions and
//! one-time passwords), which users each cluster is home to and how they spread over its
//! nodes (SPEC HA3), the peering between clusters (SPEC FED2), federation settings (SPEC
//! FED1, FED4, FED5), and Expressway-C's view of the cluster (issue 17).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;

use uclab_mocks::imp::ImpState;
use uclab_mocks::imp::hub::Hub;
use uclab_mocks::imp::muc::MucConfig;
use uclab_mocks::imp::router::Router;
use uclab_mocks::{expressway, imp, s2s};

use super::{Shared, muc_service};
use crate::scenario::{NodeKind, Scenario};

/// State an IM&P cluster's nodes share (the real cluster keeps it in its database): SOAP
/// sessions and one-time passwords, and where each signed-in resource is. It outlives a node's
/// crash and restart, as the database does.
#[derive(Clone, Debug)]
pub struct ImpShared {
    pub(super) state: Rc<RefCell<ImpState>>,
    pub(super) hub: Rc<Hub>,
}

impl Shared {
    /// The dialback secret of `domain` (XEP-0220 §2.4): one per domain, so that whichever
    /// node the SRV answer names can check a key another node made; from the seed in
    /// simulation, unguessable in live mode.
    fn dialback_secret(&self, domain: &str) -> String {
        let label = format!("dialback:{}", domain.to_ascii_lowercase());
        self.entropy.unwrap_or(uclab_net::Entropy::Seed(self.seed)).secrets(&label).token("")
    }

    /// The cluster's shared state, made when its first node starts: rosters provisioned
    /// from the users' contact lists (SPEC IMP3).
    pub(super) fn imp(&self, s: &Scenario, c: &crate::scenario::ImpNode) -> ImpShared {
        self.imp
            .borrow_mut()
            .entry(c.cluster.clone())
            .or_insert_with(|| {
                let seed = uclab_net::derive_seed(self.seed, &format!("imp:{}", c.cluster));
                // The cluster's settings are its first member's (SPEC IMP3 limits).
                let limits = s
                    .nodes
                    .iter()
                    .find_map(|n| match &n.kind {
                        NodeKind::Imp(o) if o.cluster == c.cluster => Some(o.limits),
                        _ => None,
                    })
                    .unwrap_or(c.limits);
                let mut router = Router::new(&s.domain, limits);
                // SPEC FED2: the users homed on peer clusters, and where their stanzas go.
                let own: Vec<String> =
                    cluster_hosts(s, &c.cluster).iter().map(|n| n.fqdn.clone()).collect();
                let mut peers = BTreeMap::new();
                let mut peer_hosts = std::collections::BTreeSet::new();
                for n in &s.nodes {
                    if let NodeKind::Imp(o) = &n.kind
                        && o.cluster != c.cluster
                    {
                        peer_hosts.insert(n.fqdn.clone());
                        if cluster_hosts(s, &o.cluster).first().is_some_and(|f| f.name == n.name) {
                            for (u, primary, _) in imp_assignment(s, o) {
                                peers.insert(format!("{}@{}", u.id, s.domain), primary);
                            }
                        }
                    }
                }
                if !peer_hosts.is_empty() {
                    router.set_intercluster(own, peers, peer_hosts);
                }
                // Contacts across domains (SPEC FED1): a foreign account's contacts on this
                // domain, subscribed both ways; this router keeps its users' side.
                for (a, b) in foreign_contacts(s) {
                    if uclab_proto::jid::domain(&b) == s.domain.to_ascii_lowercase() {
                        router.provision(&a, &b);
                        router.provision(&b, &a);
                    }
                }
                // SPEC FED1, FED5: federation is on when a member is federation-enabled; the
                // policy is the first such member's.
                let federation = s.nodes.iter().find_map(|n| match &n.kind {
                    NodeKind::Imp(o) if o.cluster == c.cluster => o.federation.as_ref(),
                    _ => None,
                });
                if let Some(f) = federation {
                    router.set_federation(f.policy.clone());
                }
                for u in &s.users {
                    for contact in &u.contacts {
                        router.provision(&u.id, contact);
                    }
                }
                // Each node's text conferencing service (SPEC IMP5).
                for n in &s.nodes {
                    if let NodeKind::Imp(o) = &n.kind
                        && o.cluster == c.cluster
                    {
                        router.add_muc(MucConfig {
                            service: muc_service(s, &n.name),
                            persistent_chat: o.persistent_chat,
                            db: o.chat_db.as_deref().map(|d| self.db(d)),
                            limits: o.room_limits,
                        });
                    }
                }
                ImpShared {
                    state: Rc::new(RefCell::new(ImpState::with_secrets(
                        self.entropy
                            .unwrap_or(uclab_net::Entropy::Seed(seed))
                            .secrets(&format!("imp:{}", c.cluster)),
                    ))),
                    hub: Hub::new(router),
                }
            })
            .clone()
    }
}

/// The server-to-server settings of a node that peers with other clusters but does not
/// federate with other domains (SPEC FED2): certificates and dialback, no DNS, no policy
/// (its cluster's router refuses other domains).
pub(super) fn peering_only() -> crate::scenario::S2sNode {
    crate::scenario::S2sNode {
        dns: None,
        dialback: true,
        sasl_external: true,
        secret: None,
        san: None,
        static_routes: BTreeMap::new(),
        policy: imp::router::Policy::Open,
        sip_domains: Vec::new(),
    }
}

/// The node names of IM&P cluster `cluster`, in declaration order.
pub(super) fn cluster_hosts<'a>(s: &'a Scenario, cluster: &str) -> Vec<&'a crate::scenario::Node> {
    s.nodes.iter().filter(|n| matches!(&n.kind, NodeKind::Imp(c) if c.cluster == cluster)).collect()
}

/// Every foreign account's contacts: (`account@its-domain`, contact JID).
pub(super) fn foreign_contacts(s: &Scenario) -> Vec<(String, String)> {
    let mut v = Vec::new();
    for n in &s.nodes {
        if let NodeKind::XmppDomain(x) = &n.kind {
            for (id, jids) in &x.contacts {
                v.extend(jids.iter().map(|j| (format!("{id}@{}", x.domain), j.clone())));
            }
        }
    }
    v
}

/// The federation settings of node `n` serving `domain` (SPEC FED1, FED4): its certificate
/// names, DNS server and static routes at their simulated or live addresses.
pub(super) fn s2s_settings(
    s: &Scenario,
    n: &crate::scenario::Node,
    domain: &str,
    f: &crate::scenario::S2sNode,
    port: u16,
    live: &BTreeMap<SocketAddr, SocketAddr>,
    shared: &Shared,
) -> s2s::serve::S2sSettings {
    let at = |sim: SocketAddr| live.get(&sim).copied().unwrap_or(sim);
    let node_addr = |name: &str, p: u16| {
        s.nodes.iter().find(|x| x.name == name).map(|x| at(SocketAddr::new(x.ip, p)))
    };
    let mut static_routes = super::static_routes(s, &f.static_routes, s2s::serve::S2S_PORT, live);
    // SPEC FED2: an IM&P node's cluster names itself by its nodes' names (a certificate
    // naming them all), and reaches each peer cluster's node name at that node, then at the
    // other nodes of its cluster.
    let mut domains = vec![domain.to_ascii_lowercase()];
    let mut names = f.san.clone().unwrap_or_else(|| vec![n.fqdn.clone(), domain.to_owned()]);
    if let NodeKind::Imp(c) = &n.kind
        && c.peering
    {
        for o in cluster_hosts(s, &c.cluster) {
            domains.push(o.fqdn.to_ascii_lowercase());
            if !names.contains(&o.fqdn) {
                names.push(o.fqdn.clone());
            }
        }
        let mut peer_clusters: Vec<&str> = s
            .nodes
            .iter()
            .filter_map(|o| match &o.kind {
                NodeKind::Imp(x) if x.cluster != c.cluster => Some(x.cluster.as_str()),
                _ => None,
            })
            .collect();
        peer_clusters.dedup();
        for pc in peer_clusters {
            let members = cluster_hosts(s, pc);
            for m in &members {
                let mut addrs = vec![at(SocketAddr::new(m.ip, s2s::serve::S2S_PORT))];
                addrs.extend(
                    members
                        .iter()
                        .filter(|o| o.name != m.name)
                        .map(|o| at(SocketAddr::new(o.ip, s2s::serve::S2S_PORT))),
                );
                static_routes.insert(m.fqdn.to_ascii_lowercase(), addrs);
            }
        }
    }
    s2s::serve::S2sSettings {
        cfg: Rc::new(s2s::S2sConfig {
            domains,
            secret: f.secret.clone().unwrap_or_else(|| shared.dialback_secret(domain)),
            sasl_external: f.sasl_external,
            dialback: f.dialback,
        }),
        domain: domain.to_ascii_lowercase(),
        host: n.name.clone(),
        names,
        port,
        dns: f.dns.as_deref().and_then(|d| node_addr(d, 53)),
        static_routes,
    }
}

/// Expressway-C's view of the IM&P cluster as a router peer (issue 17, docs/decisions.md):
/// the cluster of the topology's first IM&P node, its shared state (which nodes are down),
/// its users' configured nodes and where each node's XMPP listens (`at`: the live address in
/// `uclab serve`).
pub(super) fn xcp_route(
    s: &Scenario,
    shared: &Shared,
    at: &dyn Fn(&str, u16) -> Option<SocketAddr>,
) -> Option<expressway::c::XcpRoute> {
    let c = s.nodes.iter().find_map(|n| match &n.kind {
        NodeKind::Imp(c) => Some(c),
        _ => None,
    })?;
    let users = imp_assignment(s, c)
        .into_iter()
        .map(|(u, primary, secondary)| expressway::c::RoutedUser {
            id: u.id.clone(),
            primary,
            secondary,
        })
        .collect();
    let nodes = s
        .nodes
        .iter()
        .filter(|n| matches!(&n.kind, NodeKind::Imp(o) if o.cluster == c.cluster))
        .filter_map(|n| Some((n.fqdn.clone(), at(&n.name, 5222)?.port())))
        .collect();
    Some(expressway::c::XcpRoute {
        state: shared.imp(s, c).state,
        users,
        nodes,
        domain: s.domain.clone(),
    })
}

/// SPEC HA3: each user's primary and secondary node (FQDNs), in user order. Nodes are
/// subcluster `n` A (its first member) and B (its second); "balanced" hands users out
/// 1A, 2A, 3A, 1B, 2B, 3B, 1A, …, active/standby 1A, 2A, 3A, 1A, …; a user's secondary is the
/// other node of their primary's subcluster, so failover never leaves it.
pub fn imp_assignment<'a>(
    s: &'a Scenario,
    c: &crate::scenario::ImpNode,
) -> Vec<(&'a crate::scenario::User, String, Option<String>)> {
    let mut subs: BTreeMap<u8, Vec<&str>> = BTreeMap::new();
    for n in &s.nodes {
        if let NodeKind::Imp(o) = &n.kind
            && o.cluster == c.cluster
        {
            subs.entry(o.subcluster).or_default().push(n.fqdn.as_str());
        }
    }
    let a: Vec<(&str, Option<&str>)> = subs.values().map(|m| (m[0], m.get(1).copied())).collect();
    let mut order: Vec<(&str, Option<&str>)> = a.clone();
    if c.assignment == crate::scenario::Assignment::Balanced {
        order.extend(a.iter().filter_map(|&(x, y)| Some((y?, Some(x)))));
    }
    s.users
        .iter()
        .filter(|u| home_imp_cluster(s, u) == Some(c.cluster.as_str()))
        .enumerate()
        .map(|(i, u)| {
            let (p, sec) = order[i % order.len()];
            (u, p.to_owned(), sec.map(str::to_owned))
        })
        .collect()
}

/// A user's home IM&P cluster (SPEC FED2): theirs, else the topology's first.
pub fn home_imp_cluster<'a>(s: &'a Scenario, u: &'a crate::scenario::User) -> Option<&'a str> {
    u.imp_cluster.as_deref().or_else(|| {
        s.nodes.iter().find_map(|n| match &n.kind {
            NodeKind::Imp(c) => Some(c.cluster.as_str()),
            _ => None,
        })
    })
}
