//! From a scenario's node to a running mock: which services a node kind offers, the
//! configuration of each node (simulated or live ports), and the task that serves it. The
//! simulation runner and live mode both start nodes through here. `imp_cluster.rs` holds
//! what IM&P clusters add: their shared state, their users' nodes, peering and federation.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;

use uclab_mocks::cucm::{CucmConfig, CucmUser};
use uclab_mocks::imp::hub::Hub;
use uclab_mocks::imp::muc::ChatDb;
use uclab_mocks::imp::router::Router;
use uclab_mocks::imp::xmpp;
use uclab_mocks::imp::{ImpConfig, ImpState, ImpUser};
use uclab_mocks::{cas, cucm, dns, expressway, host, http, imp, s2s, srst};
use uclab_net::Net;
use uclab_proto::uds::UdsUser;

use crate::scenario::{NodeKind, Scenario};

mod imp_cluster;
mod sip_federation;

pub use imp_cluster::{ImpShared, home_imp_cluster, imp_assignment};
use imp_cluster::{peering_only, s2s_settings, xcp_route};
use uclab_mocks::sipfed::SIP_TLS_PORT;
use uclab_mocks::sipfed::serve::SipFedSettings;

/// One service a node offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// Name in the port map (DESIGN.md): `dns`, `cas`, `uds`, `tftp`, or `tcp-PORT`.
    pub name: String,
    /// Port in simulation.
    pub port: u16,
    /// Listens on TCP.
    pub tcp: bool,
    /// Listens on UDP.
    pub udp: bool,
}

/// A TCP service, or TCP and UDP on one port (`udp`).
fn svc(name: &str, port: u16, udp: bool) -> Service {
    Service { name: name.to_owned(), port, tcp: true, udp }
}

/// A UDP-only service.
fn udp_only(name: &str, port: u16) -> Service {
    Service { name: name.to_owned(), port, tcp: false, udp: true }
}

/// The services of a node kind.
pub fn services(kind: &NodeKind) -> Vec<Service> {
    match kind {
        NodeKind::Dns { .. } => vec![svc("dns", 53, true)],
        NodeKind::Host { listen } => {
            listen.iter().map(|p| svc(&format!("tcp-{p}"), *p, false)).collect()
        }
        NodeKind::Cas { .. } => vec![svc("cas", 443, false)],
        NodeKind::Cucm(_) => vec![
            svc("uds", 8443, false),
            svc("tftp", 6970, false),
            svc("sip", 5060, true),
            svc("sip-tls", 5061, false),
            // The software conference bridge's RTP (the IP Voice Media Streaming App's range
            // starts at 24576).
            udp_only("bridge", 24576),
        ],
        // The presence trunk from CUCM is SIP over UDP (SPEC CC7).
        NodeKind::Imp(c) => {
            let mut v =
                vec![svc("soap", 8443, false), svc("xmpp", 5222, false), udp_only("sip", 5060)];
            if c.federation.is_some() || c.peering {
                v.push(svc("xmpp-s2s", s2s::serve::S2S_PORT, false)); // SPEC FED1, FED2
            }
            if c.federation.as_ref().is_some_and(|f| !f.sip_domains.is_empty()) {
                v.push(svc("sip-federation", SIP_TLS_PORT, false)); // SPEC FED3
            }
            v
        }
        NodeKind::XmppDomain(_) => {
            vec![svc("xmpp", 5222, false), svc("xmpp-s2s", s2s::serve::S2S_PORT, false)]
        }
        NodeKind::SipDomain(_) => vec![svc("sip-federation", SIP_TLS_PORT, false)],
        NodeKind::ChatDb => vec![svc("postgres", 5432, false)],
        NodeKind::Srst => vec![svc("sip", 5060, true)],
        // SPEC MRA1: the edge, the traversal zones (HTTP and SIP 7001, XMPP 7400), and XMPP
        // and SIP over TLS through the edge (issue 17).
        NodeKind::ExpresswayE(_) => vec![
            svc("edge", uclab_proto::edge::EDGE_PORT, false),
            svc("traversal", uclab_proto::edge::TRAVERSAL_PORT, false),
            svc("xmpp-traversal", expressway::XMPP_TRAVERSAL_PORT, false),
            svc("xmpp", 5222, false),
            svc("sip-tls", 5061, false),
        ],
        // C listens for nothing: it opens the zones (and talks inside) itself.
        NodeKind::ExpresswayC(_) => vec![],
    }
}

/// The addresses Expressway-C nodes connect from: their simulated ones, and in live mode the
/// loopback address each takes there (127.b.c.d for a.b.c.d, `live::node_ips`). CUCM and IM&P
/// do not cap their connections per address for these (issue 17: C holds one per client).
fn expressway_c_ips(s: &Scenario) -> Vec<IpAddr> {
    let mut ips = Vec::new();
    for n in s.nodes.iter().filter(|n| matches!(n.kind, NodeKind::ExpresswayC(_))) {
        ips.push(n.ip);
        if let IpAddr::V4(v4) = n.ip {
            let [_, b, c, d] = v4.octets();
            ips.push(IpAddr::V4(Ipv4Addr::new(127, b, c, d)));
        }
    }
    ips
}

/// Per-run state shared between nodes, made once per run and handed to every [`plan`].
#[derive(Debug, Default)]
pub struct Shared {
    seed: u64,
    /// Where secrets come from (the seed unless live mode says otherwise).
    entropy: Option<uclab_net::Entropy>,
    imp: RefCell<BTreeMap<String, ImpShared>>,
    /// The group chat databases (SPEC IMP5), by node name: up while their node runs.
    dbs: RefCell<BTreeMap<String, ChatDb>>,
    /// Each CUCM cluster's SIP registrations and routing (SPEC CC1), by cluster name.
    sip: RefCell<BTreeMap<String, Rc<RefCell<cucm::sip::ClusterIo>>>>,
    /// The user directory's credential policy lockout (issue 13), made when first asked for.
    lockout: RefCell<Option<Option<Rc<uclab_mocks::lockout::Lockout>>>>,
}

impl Shared {
    /// Shared state for a run with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            entropy: None,
            imp: RefCell::default(),
            dbs: RefCell::default(),
            sip: RefCell::default(),
            lockout: RefCell::default(),
        }
    }

    /// Shared state for a live process: seeded streams from `seed`, secrets (session keys,
    /// one-time passwords) from `entropy` (issue 13).
    pub fn with_entropy(seed: u64, entropy: uclab_net::Entropy) -> Self {
        Self { entropy: Some(entropy), ..Self::new(seed) }
    }

    /// The directory's lockout table: one for the run, under the first credential policy a
    /// CUCM node sets (users and their passwords are the run's, shared by CUCM and IM&P).
    pub fn lockout(&self, s: &Scenario) -> Option<Rc<uclab_mocks::lockout::Lockout>> {
        self.lockout
            .borrow_mut()
            .get_or_insert_with(|| {
                s.nodes
                    .iter()
                    .find_map(|n| match &n.kind {
                        NodeKind::Cucm(c) => c.credential_policy,
                        _ => None,
                    })
                    .map(uclab_mocks::lockout::Lockout::new)
            })
            .clone()
    }

    /// A CUCM cluster's SIP state, made when its first node starts: its users' lines.
    fn sip(
        &self,
        s: &Scenario,
        c: &crate::scenario::CucmNode,
        live: &BTreeMap<SocketAddr, SocketAddr>,
    ) -> Rc<RefCell<cucm::sip::ClusterIo>> {
        use cucm::sip::{Cluster, ClusterIo, PresenceTrunk, SipConfig};
        self.sip
            .borrow_mut()
            .entry(c.cluster.clone())
            .or_insert_with(|| {
                let lines =
                    s.users.iter().filter(|u| u.cluster == c.cluster).map(sip_line).collect();
                // Cluster-wide: digest if any member's security profile asks for it.
                let digest = s.nodes.iter().any(|n| {
                    matches!(&n.kind, NodeKind::Cucm(o) if o.cluster == c.cluster && o.sip_digest)
                });
                let presence = s
                    .nodes
                    .iter()
                    .find_map(|n| match &n.kind {
                        NodeKind::Cucm(o) if o.cluster == c.cluster => Some(o.presence.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                // SPEC CC7: the trunk to IM&P (cluster-wide, from the first member that has one).
                let trunk = s
                    .nodes
                    .iter()
                    .find_map(|n| match &n.kind {
                        NodeKind::Cucm(o) if o.cluster == c.cluster => {
                            o.presence_trunk.clone().map(|t| (t, o.publish_trunk))
                        }
                        _ => None,
                    })
                    .and_then(|(t, publish)| Some((s.nodes.iter().find(|n| n.name == t)?, publish)))
                    .map(|(n, publish)| {
                        let sim = SocketAddr::new(n.ip, 5060);
                        PresenceTrunk {
                            to: live.get(&sim).copied().unwrap_or(sim),
                            publish,
                            domain: s.domain.clone(),
                        }
                    });
                let cfg = SipConfig {
                    domain: s.domain.clone(),
                    lines,
                    digest,
                    srst: false,
                    presence,
                    trunk,
                    trusted_peers: expressway_c_ips(s),
                };
                let seed = uclab_net::derive_seed(self.seed, &format!("sip:{}", c.cluster));
                let mut cluster = Cluster::new(cfg, seed);
                cluster.set_lockout(self.lockout(s));
                if let Some(e) = self.entropy {
                    cluster.set_nonce_source(e.secrets(&format!("sip:{}", c.cluster)));
                }
                // `uclab serve` (live addresses known) only: a simulated run stays as it was.
                Rc::new(RefCell::new(ClusterIo::new(cluster).answering_first(!live.is_empty())))
            })
            .clone()
    }

    fn db(&self, node: &str) -> ChatDb {
        self.dbs.borrow_mut().entry(node.to_owned()).or_default().clone()
    }
}

/// Everything a node needs to run, with the ports it listens on.
#[derive(Clone, Debug)]
pub enum NodePlan {
    /// DNS server.
    Dns(dns::DnsConfig),
    /// Plain TCP listeners.
    Host(Vec<u16>),
    /// Webex CAS.
    Cas {
        /// HTTPS port.
        port: u16,
        /// Certificate names.
        names: Vec<String>,
        /// Settings.
        cfg: cas::CasConfig,
        /// Spoilt answers.
        broken: Option<http::BrokenXml>,
    },
    /// CUCM UDS and TFTP.
    Cucm {
        /// UDS HTTPS port.
        uds: u16,
        /// TFTP-over-HTTP port.
        tftp: u16,
        /// Certificate names.
        names: Vec<String>,
        /// The cluster as this node sees it.
        cfg: Rc<CucmConfig>,
        /// Spoilt UDS answers.
        broken_uds: Option<http::BrokenXml>,
        /// Spoilt TFTP answers.
        broken_tftp: Option<http::BrokenXml>,
        /// SIP over UDP and TCP, and over TLS.
        sip: (u16, u16),
        /// The conference bridge's RTP port.
        bridge: u16,
        /// The cluster's SIP registrations and routing.
        sip_cluster: Rc<RefCell<cucm::sip::ClusterIo>>,
    },
    /// IM&P SOAP and XMPP.
    Imp {
        /// SOAP HTTPS port.
        soap: u16,
        /// XMPP port.
        xmpp: u16,
        /// SIP trunk port (UDP; SPEC CC7).
        sip: u16,
        /// Certificate names (the node and the presence domain).
        names: Vec<String>,
        /// The cluster as this node sees it.
        cfg: Rc<ImpConfig>,
        /// Cluster-wide state.
        shared: ImpShared,
        /// The node's conferencing service domain (SPEC IMP5).
        muc: String,
        /// SPEC CC7 in SUBSCRIBE/NOTIFY mode: the CUCM node this node's presence gateway
        /// subscribes to (its SIP address and name).
        gateway: Option<(SocketAddr, String)>,
        /// SPEC FED1: a federation-enabled node's server-to-server service.
        s2s: Option<Rc<s2s::serve::S2sSettings>>,
        /// SPEC FED3: the node's SIP federation gateway and the domains it serves.
        sipfed: Option<(Rc<SipFedSettings>, Vec<String>)>,
    },
    /// A foreign SIP domain's server and its scripted users (SPEC FED3).
    SipDomain {
        /// Its SIP federation service.
        sip: Rc<SipFedSettings>,
        /// Its users and their steps.
        cfg: Rc<uclab_mocks::sip_domain::SipDomainConfig>,
    },
    /// A foreign XMPP domain's server (SPEC FED1): client streams and federation.
    XmppDomain {
        /// XMPP client port.
        xmpp: u16,
        /// Certificate names.
        names: Vec<String>,
        /// The server as its client streams see it.
        cfg: Rc<ImpConfig>,
        /// Sign-in state.
        state: Rc<RefCell<ImpState>>,
        /// Its router.
        hub: Rc<Hub>,
        /// Its federation.
        s2s: Rc<s2s::serve::S2sSettings>,
    },
    /// A site's SRST router (SPEC CC5).
    Srst {
        /// Its FQDN.
        host: String,
        /// SIP port (UDP and TCP).
        port: u16,
        /// Registrations of every user's lines.
        cluster: Rc<RefCell<cucm::sip::ClusterIo>>,
    },
    /// Expressway-C (SPEC MRA1).
    ExpresswayC(expressway::c::CConfig),
    /// Expressway-E (SPEC MRA1).
    ExpresswayE {
        /// The edge and traversal settings (their ports in it).
        cfg: expressway::e::EConfig,
    },
    /// The persistent chat database (SPEC IMP5).
    ChatDb {
        /// PostgreSQL port.
        port: u16,
        /// Up while the node runs.
        db: ChatDb,
    },
}

/// A user's CSF device (SPEC CC1): the first `CSF…` of their devices, else `CSF<USER>`.
pub fn csf_device(u: &crate::scenario::User) -> String {
    u.devices
        .iter()
        .find(|d| d.to_ascii_uppercase().starts_with("CSF"))
        .cloned()
        .unwrap_or_else(|| format!("CSF{}", u.id.to_ascii_uppercase()))
}

/// A user's line as the SIP registrars know it (SPEC CC1).
fn sip_line(u: &crate::scenario::User) -> cucm::sip::SipLine {
    cucm::sip::SipLine {
        user: u.id.clone(),
        extension: u.extension.clone(),
        device: csf_device(u),
        password: u.password.clone(),
        partition: u.partition.clone(),
        subscribe_css: u.subscribe_css.clone(),
        presence_group: u.presence_group.clone(),
        blf: u.blf.clone(),
    }
}

/// The text conferencing service domain of IM&P node `node` (SPEC IMP5).
pub fn muc_service(s: &Scenario, node: &str) -> String {
    format!("conference-{}.{}", node.to_ascii_lowercase(), s.domain)
}

/// Runs a closure when dropped: marks a node down when its future ends or is dropped by a
/// crash.
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// Plans node `name` of `s`. `port(node, service)` gives where a service listens (its simulated
/// port in simulation, a free port in live mode); `live` maps simulated service addresses to
/// live ones for the DNS nodes' answers (empty in simulation).
pub fn plan(
    s: &Scenario,
    name: &str,
    port: &dyn Fn(&str, &Service) -> u16,
    live: &BTreeMap<SocketAddr, SocketAddr>,
    shared: &Shared,
) -> Option<NodePlan> {
    let n = s.nodes.iter().find(|n| n.name == name)?;
    let own = |service: &str| {
        services(&n.kind)
            .into_iter()
            .find(|x| x.name == service)
            .map(|x| port(&n.name, &x))
            .unwrap_or(0)
    };
    Some(match &n.kind {
        NodeKind::Dns { zones, forward } => {
            // The upstream's DNS address: simulated, or in live mode where it really listens.
            let forward = forward.as_ref().and_then(|f| {
                let sim = SocketAddr::new(s.nodes.iter().find(|x| &x.name == f)?.ip, 53);
                Some(live.get(&sim).copied().unwrap_or(sim))
            });
            NodePlan::Dns(dns::DnsConfig {
                zones: zones.clone(),
                forward,
                port: own("dns"),
                live: live.clone(),
                // `uclab serve` (live addresses known) only: a simulated run stays as it was.
                answer_cache: !live.is_empty(),
            })
        }
        NodeKind::Host { .. } => {
            NodePlan::Host(services(&n.kind).iter().map(|x| port(&n.name, x)).collect())
        }
        NodeKind::Cas { webex_domains } => NodePlan::Cas {
            port: own("cas"),
            names: vec![n.fqdn.clone()],
            cfg: cas::CasConfig { webex_domains: webex_domains.clone() },
            broken: n.broken_xml.get("cas").copied(),
        },
        NodeKind::Imp(c) => {
            let users = imp_assignment(s, c)
                .into_iter()
                .map(|(u, primary, secondary)| ImpUser {
                    id: u.id.clone(),
                    password: u.password.clone(),
                    primary,
                    secondary,
                })
                .collect();
            NodePlan::Imp {
                soap: own("soap"),
                xmpp: own("xmpp"),
                sip: own("sip"),
                names: vec![n.fqdn.clone(), s.domain.clone()],
                cfg: Rc::new(ImpConfig {
                    lockout: shared.lockout(s),
                    host: n.fqdn.clone(),
                    domain: s.domain.clone(),
                    users,
                    relogin: c.relogin,
                    peer: s
                        .nodes
                        .iter()
                        .find(|o| {
                            o.name != n.name
                                && matches!(&o.kind, NodeKind::Imp(x)
                                    if x.cluster == c.cluster && x.subcluster == c.subcluster)
                        })
                        .map(|o| o.fqdn.clone()),
                    trusted_peers: expressway_c_ips(s),
                }),
                shared: shared.imp(s, c),
                muc: muc_service(s, &n.name),
                gateway: s
                    .nodes
                    .iter()
                    .find(|o| {
                        matches!(&o.kind, NodeKind::Cucm(x)
                            if !x.publish_trunk && x.presence_trunk.as_deref() == Some(&n.name))
                    })
                    .map(|o| {
                        let sim = SocketAddr::new(o.ip, 5060);
                        (live.get(&sim).copied().unwrap_or(sim), o.fqdn.clone())
                    }),
                sipfed: c.federation.as_ref().filter(|f| !f.sip_domains.is_empty()).map(|f| {
                    let how = (f.dns.as_deref(), &f.static_routes, f.san.as_ref());
                    let sip =
                        sip_federation::settings(s, n, &s.domain, how, own("sip-federation"), live);
                    (Rc::new(sip), f.sip_domains.clone())
                }),
                s2s: (c.federation.is_some() || c.peering).then(|| {
                    let f = c.federation.clone().unwrap_or_else(peering_only);
                    let port = own("xmpp-s2s");
                    Rc::new(s2s_settings(s, n, &s.domain, &f, port, live, shared))
                }),
            }
        }
        NodeKind::XmppDomain(x) => {
            let users = x
                .accounts
                .iter()
                .map(|(id, password)| ImpUser {
                    id: id.clone(),
                    password: password.clone(),
                    primary: n.fqdn.clone(),
                    secondary: None,
                })
                .collect();
            let mut router = Router::new(&x.domain, x.limits);
            router.set_federation(x.s2s.policy.clone());
            for (id, jids) in &x.contacts {
                for j in jids {
                    router.provision(id, j);
                    router.provision(j, id);
                }
            }
            let seed = uclab_net::derive_seed(shared.seed, &format!("xmpp-domain:{}", n.name));
            let secrets = shared.entropy.unwrap_or(uclab_net::Entropy::Seed(seed));
            NodePlan::XmppDomain {
                xmpp: own("xmpp"),
                names: vec![n.fqdn.clone(), x.domain.clone()],
                cfg: Rc::new(ImpConfig {
                    lockout: None,
                    host: n.fqdn.clone(),
                    domain: x.domain.clone(),
                    users,
                    relogin: (120, 480),
                    peer: None,
                    trusted_peers: Vec::new(),
                }),
                state: Rc::new(RefCell::new(ImpState::with_secrets(
                    secrets.secrets(&format!("xmpp-domain:{}", n.name)),
                ))),
                hub: Hub::new(router),
                s2s: Rc::new(s2s_settings(s, n, &x.domain, &x.s2s, own("xmpp-s2s"), live, shared)),
            }
        }
        NodeKind::SipDomain(_) => {
            let (sip, cfg) = sip_federation::domain_plan(s, n, own("sip-federation"), live)?;
            NodePlan::SipDomain { sip, cfg }
        }
        NodeKind::ChatDb => NodePlan::ChatDb { port: own("postgres"), db: shared.db(&n.name) },
        NodeKind::ExpresswayE(e) => {
            let mut cfg = expressway::e::EConfig::new(&n.fqdn, &s.domain, &e.traversal_peer);
            cfg.san = e.san.clone();
            cfg.edge_port = own("edge");
            cfg.traversal_port = own("traversal");
            cfg.xmpp_traversal_port = own("xmpp-traversal");
            cfg.xmpp_port = own("xmpp");
            cfg.sip_port = own("sip-tls");
            NodePlan::ExpresswayE { cfg }
        }
        NodeKind::ExpresswayC(c) => {
            // Where a node's service really listens (live mode), else its simulated address.
            let at = |node: &str, port: u16| {
                let sim = SocketAddr::new(s.nodes.iter().find(|x| x.name == node)?.ip, port);
                Some(live.get(&sim).copied().unwrap_or(sim))
            };
            let edges = c
                .edge
                .iter()
                .filter_map(|e| {
                    let node = s.nodes.iter().find(|x| &x.name == e)?;
                    Some(expressway::c::EdgePeer {
                        fqdn: node.fqdn.clone(),
                        addr: at(e, uclab_proto::edge::TRAVERSAL_PORT)?,
                        xmpp_addr: at(e, expressway::XMPP_TRAVERSAL_PORT)?,
                        ports: expressway::c::EdgePorts {
                            xmpp: at(e, 5222)?.port(),
                            sip: at(e, 5061)?.port(),
                        },
                    })
                })
                .collect();
            let dns = at(&c.dns, 53)?;
            let mut cfg = expressway::c::CConfig::new(&n.fqdn, &s.domain, dns, edges);
            cfg.token_lifetime = c.token_lifetime;
            cfg.user_uds_empty = c.user_uds_empty;
            cfg.allow = c.allow.clone();
            cfg.xcp = xcp_route(s, shared, &at);
            NodePlan::ExpresswayC(cfg)
        }
        NodeKind::Srst => {
            use cucm::sip::{Cluster, ClusterIo};
            // The site's devices: every user's line, no digest (SRST accepts what registers).
            let lines = s.users.iter().map(sip_line).collect();
            let cfg = srst::sip_config(&s.domain, lines);
            let seed = uclab_net::derive_seed(shared.seed, &format!("srst:{}", n.name));
            NodePlan::Srst {
                host: n.fqdn.clone(),
                port: own("sip"),
                cluster: Rc::new(RefCell::new(ClusterIo::new(Cluster::new(cfg, seed)))),
            }
        }
        NodeKind::Cucm(c) => {
            let members: Vec<_> = s
                .nodes
                .iter()
                .filter(|x| matches!(&x.kind, NodeKind::Cucm(o) if o.cluster == c.cluster))
                .collect();
            let home_of = |cluster: &str| {
                s.nodes
                    .iter()
                    .find(|x| matches!(&x.kind, NodeKind::Cucm(o) if o.cluster == cluster))
                    .map(|x| x.fqdn.clone())
            };
            let users = s
                .users
                .iter()
                .filter(|u| u.cluster == c.cluster)
                .map(|u| CucmUser {
                    uds: UdsUser {
                        id: u.id.clone(),
                        first_name: u.first_name.clone(),
                        last_name: u.last_name.clone(),
                        extension: u.extension.clone(),
                        email: u.email.clone(),
                        im_and_presence: !c.imp_servers.is_empty(),
                        service_profile: "SPDefault.cnf.xml".into(),
                        devices: u.devices.clone(),
                    },
                    password: u.password.clone(),
                    config_file: u.config_file.clone(),
                })
                .collect();
            // ILS: every other cluster's users, with their home cluster's first node.
            let remote_users = s
                .users
                .iter()
                .filter(|u| u.cluster != c.cluster)
                .filter_map(|u| Some((u.id.clone(), home_of(&u.cluster)?)))
                .collect();
            NodePlan::Cucm {
                sip: (own("sip"), own("sip-tls")),
                bridge: own("bridge"),
                sip_cluster: shared.sip(s, c, live),
                broken_uds: n.broken_xml.get("uds").copied(),
                broken_tftp: n.broken_xml.get("tftp").copied(),
                uds: own("uds"),
                tftp: own("tftp"),
                names: vec![n.fqdn.clone()],
                cfg: Rc::new(CucmConfig {
                    lockout: shared.lockout(s),
                    host: n.fqdn.clone(),
                    tftp_port: own("tftp"),
                    version: c.version.clone(),
                    servers: members.iter().map(|m| m.fqdn.clone()).collect(),
                    users,
                    remote_users,
                    product_type: c.product_type,
                    imp_servers: c.imp_servers.clone(),
                    // The SRST reference and the members' SIP ports: where the router and
                    // the members listen (live addresses in `uclab serve`, issue 13).
                    srst: c.srst.as_ref().map(|ip| {
                        let sim = ip.parse().ok().map(|ip| SocketAddr::new(ip, 5060));
                        match sim.and_then(|sa| live.get(&sa)) {
                            Some(l) => (l.ip().to_string(), l.port()),
                            None => (ip.clone(), 5060),
                        }
                    }),
                    sip_ports: members
                        .iter()
                        .map(|m| {
                            let at = |p: u16| {
                                live.get(&SocketAddr::new(m.ip, p)).map_or(p, SocketAddr::port)
                            };
                            (m.fqdn.clone(), at(5060), at(5061))
                        })
                        .collect(),
                    // Cluster-wide settings: from the first member that sets them.
                    profile_options: cluster_setting(&members, |o| {
                        (!o.profile.is_empty()).then(|| o.profile.clone())
                    })
                    .unwrap_or_default(),
                    jabber_config: cluster_setting(&members, |o| o.jabber_config.clone()),
                    group_files: members
                        .iter()
                        .filter_map(|m| match &m.kind {
                            NodeKind::Cucm(o) => Some(o.group_files.iter().cloned()),
                            _ => None,
                        })
                        .flatten()
                        .collect(),
                    overloaded: c.overloaded,
                    media_ports: cluster_setting(&members, |o| o.media_ports)
                        .unwrap_or((16384, 32766)),
                    sip_transport: cluster_setting(&members, |o| o.sip_transport).unwrap_or(2),
                }),
            }
        }
    })
}

/// Serves a planned node on `net` until it stops.
pub async fn run<N: Net + Clone + 'static>(net: N, plan: NodePlan) -> io::Result<()> {
    match plan {
        NodePlan::Dns(cfg) => dns::serve(net, cfg).await,
        NodePlan::Host(ports) => host::serve(net, ports).await,
        NodePlan::Cas { port, names, cfg, broken } => {
            http::serve(net, port, Some(names), spoilt(cas::handler(cfg), broken)).await
        }
        NodePlan::Cucm {
            uds,
            tftp,
            names,
            cfg,
            broken_uds,
            broken_tftp,
            sip,
            bridge,
            sip_cluster,
        } => {
            lockout_clock(&net, cfg.lockout.as_deref());
            let t = tokio::task::spawn_local(http::serve(
                net.clone(),
                tftp,
                None,
                spoilt(cucm::tftp_handler(cfg.clone()), broken_tftp),
            ));
            let host = cfg.host.clone();
            let b = tokio::task::spawn_local(cucm::sip::bridge(
                net.clone(),
                host.clone(),
                bridge,
                sip_cluster.clone(),
            ));
            let s = tokio::task::spawn_local(cucm::sip::serve(
                net.clone(),
                host,
                (sip.0, Some(sip.1)),
                names.clone(),
                sip_cluster,
            ));
            let u = http::serve(net, uds, Some(names), spoilt(cucm::uds_handler(cfg), broken_uds))
                .await;
            t.abort();
            s.abort();
            b.abort();
            u
        }
        NodePlan::Srst { host, port, cluster } => srst::serve(net, host, port, cluster).await,
        NodePlan::ExpresswayC(cfg) => expressway::serve_c(net, cfg).await,
        NodePlan::ExpresswayE { cfg } => expressway::serve_e(net, cfg).await,
        NodePlan::ChatDb { port, db } => {
            db.set_up(true);
            let _down = OnDrop(|| db.set_up(false));
            host::serve(net, vec![port]).await
        }
        NodePlan::SipDomain { sip, cfg } => sip_federation::run_domain(net, sip, cfg).await,
        NodePlan::Imp { soap, xmpp: xport, sip, names, cfg, shared, muc, gateway, s2s, sipfed } => {
            // Up while this future lives; a crash drops it and marks the node down (HA1), and
            // its conferencing service with it (IMP5).
            let _alive = imp::Alive::new(shared.state.clone(), &cfg.host);
            shared.hub.route(|r| r.set_muc_up(&muc, true));
            let hub = shared.hub.clone();
            let _muc = OnDrop(move || hub.try_route(|r| r.set_muc_up(&muc, false)));
            lockout_clock(&net, cfg.lockout.as_deref());
            // One-time passwords expire by the node's clock (simulated in simulation).
            let clock = net.clone();
            shared.state.borrow_mut().set_clock(Rc::new(move || clock.now()));
            let handler = imp::soap::soap_handler(cfg.clone(), shared.state.clone());
            let t = tokio::task::spawn_local(http::serve(
                net.clone(),
                soap,
                Some(names.clone()),
                handler,
            ));
            // SPEC CC7: CUCM's presence trunk.
            // Entity tags need only differ between nodes: numbered from the node's name.
            let state = imp::trunk::Trunk::new(
                &cfg.domain,
                cfg.users.iter().map(|u| u.id.clone()),
                uclab_net::derive_seed(0, &cfg.host),
            );
            let gateway = gateway.map(|(to, cucm)| {
                let users = cfg.users.iter().map(|u| u.id.clone()).collect();
                (to, cucm, cfg.host.clone(), users)
            });
            let trunk = tokio::task::spawn_local(imp::trunk::serve(
                net.clone(),
                sip,
                state,
                gateway,
                shared.hub.clone(),
            ));
            let fed = s2s.map(|f| {
                tokio::task::spawn_local(s2s::serve::serve(net.clone(), f, shared.hub.clone()))
            });
            let sip_gw = sipfed.map(|(sip, domains)| {
                let users = cfg.users.iter().map(|u| format!("{}@{}", u.id, cfg.domain)).collect();
                sip_federation::start_gateway(&net, sip, &domains, &shared.hub, users)
            });
            let x = xmpp::serve(net, xport, names, cfg, shared.state, shared.hub).await;
            t.abort();
            trunk.abort();
            if let Some(f) = fed {
                f.abort();
            }
            if let Some(g) = sip_gw {
                g.abort();
            }
            x
        }
        NodePlan::XmppDomain { xmpp: xport, names, cfg, state, hub, s2s } => {
            let clock = net.clone();
            state.borrow_mut().set_clock(Rc::new(move || clock.now()));
            let fed = tokio::task::spawn_local(s2s::serve::serve(net.clone(), s2s, hub.clone()));
            let x = xmpp::serve(net, xport, names, cfg, state, hub).await;
            fed.abort();
            x
        }
    }
}

/// The first value `get` finds among a cluster's members, in declaration order.
fn cluster_setting<T>(
    members: &[&crate::scenario::Node],
    get: impl Fn(&crate::scenario::CucmNode) -> Option<T>,
) -> Option<T> {
    members.iter().find_map(|m| match &m.kind {
        NodeKind::Cucm(o) => get(o),
        _ => None,
    })
}

fn spoilt(h: http::Handler, broken: Option<http::BrokenXml>) -> http::Handler {
    match broken {
        Some(how) => http::spoil(h, how),
        None => h,
    }
}

/// Gives the directory's lockout table a clock (the first node to start sets it; every node
/// of a run reads the same simulated or real time).
fn lockout_clock<N: Net + Clone + 'static>(
    net: &N,
    lockout: Option<&uclab_mocks::lockout::Lockout>,
) {
    if let Some(l) = lockout {
        let clock = net.clone();
        l.set_clock(Rc::new(move || clock.now()));
    }
}

/// SPEC FED4's static routes of a federating server: each domain's `host:port`, or a node
/// name reached on `port`, at its live address in `uclab serve` (unknown names are left out).
pub(super) fn static_routes(
    s: &Scenario,
    routes: &BTreeMap<String, String>,
    port: u16,
    live: &BTreeMap<SocketAddr, SocketAddr>,
) -> BTreeMap<String, Vec<SocketAddr>> {
    let at = |sim: SocketAddr| live.get(&sim).copied().unwrap_or(sim);
    routes
        .iter()
        .filter_map(|(d, to)| {
            let sim = to.parse::<SocketAddr>().ok().or_else(|| {
                s.nodes.iter().find(|x| &x.name == to).map(|x| SocketAddr::new(x.ip, port))
            })?;
            Some((d.clone(), vec![at(sim)]))
        })
        .collect()
}
