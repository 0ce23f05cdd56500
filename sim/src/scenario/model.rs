//! The validated scenario: the public model the runner builds a world from. A new node kind
//! or step action is a variant here; its fields are read in `nodes.rs` or `steps.rs`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use uclab_client::discovery::DiscoveryConfig;
use uclab_mocks::dns::ZoneSource;
use uclab_net::{Rule, Zone};

/// What a node runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// DNS server (SPEC SD10).
    Dns {
        /// Authoritative zones.
        zones: Vec<ZoneSource>,
        /// Node forwarded to for other names.
        forward: Option<String>,
    },
    /// Plain host with TCP listeners and no application protocol.
    Host {
        /// Ports accepting connections.
        listen: Vec<u16>,
    },
    /// Webex CAS (SPEC SD4), HTTPS 443.
    Cas {
        /// Domains provisioned as Webex.
        webex_domains: Vec<String>,
    },
    /// A CUCM node: UDS on HTTPS 8443, TFTP-over-HTTP on 6970 (SPEC AU1, CC2).
    Cucm(CucmNode),
    /// An IM&P node: EPAS SOAP on HTTPS 8443, XMPP on 5222 (SPEC AU4, IMP1).
    Imp(ImpNode),
    /// The external database of persistent group chat (SPEC IMP5), PostgreSQL's 5432.
    ChatDb,
    /// A site's SRST router (SPEC CC5): SIP registrar of last resort on 5060.
    Srst,
    /// Expressway-C (SPEC MRA1): opens the traversal zone to its E nodes, answers inside.
    ExpresswayC(ExpresswayCNode),
    /// Expressway-E (SPEC MRA1): the edge on HTTPS 8443, the traversal zone on 7001.
    ExpresswayE(ExpresswayENode),
    /// A foreign XMPP domain's server (SPEC FED1): plain RFC 6120/6121 client streams on 5222
    /// and server streams on 5269, its own users.
    XmppDomain(XmppDomainNode),
    /// A foreign SIP domain's server (SPEC FED3): SIP over mutual TLS on 5061, scripted users.
    SipDomain(SipDomainNode),
}

/// Server-to-server federation of an XMPP server node (SPEC FED1, FED4, FED5): an IM&P node
/// with `federation = true`, or an `xmpp-domain` node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S2sNode {
    /// The DNS node its `_xmpp-server._tcp` and address lookups go to.
    pub dns: Option<String>,
    /// Server Dialback (XEP-0220) offered and used.
    pub dialback: bool,
    /// SASL EXTERNAL with certificates (RFC 6120 §13.7) offered and used.
    pub sasl_external: bool,
    /// The dialback secret (default: drawn from the run's seed).
    pub secret: Option<String>,
    /// Its certificate's names (default: its FQDN and its domain).
    pub san: Option<Vec<String>>,
    /// SPEC FED4: domains reached without SRV, by `host:port` or node name.
    pub static_routes: BTreeMap<String, String>,
    /// SPEC FED5: the domains federation reaches.
    pub policy: uclab_mocks::imp::router::Policy,
    /// SPEC FED3 (imp only): domains federated over SIP through this node's gateway.
    pub sip_domains: Vec<String>,
}

/// A foreign SIP domain federating by SIP (SPEC FED3): a Lync/Skype-style server and its
/// scripted users.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipDomainNode {
    /// The domain it serves (`lync.example.net`).
    pub domain: String,
    /// Its users (`user@domain`) and their states at the start.
    pub users: BTreeMap<String, uclab_proto::pidf::FederatedState>,
    /// The contacts each user watches from the start (`user@domain`).
    pub contacts: BTreeMap<String, Vec<String>>,
    /// The DNS node its `_sipfederationtls._tcp` lookups go to.
    pub dns: Option<String>,
    /// SPEC FED4: domains reached without SRV, by `host:port` or node name.
    pub static_routes: BTreeMap<String, String>,
    /// Its certificate's names (default: its FQDN and its domain).
    pub san: Option<Vec<String>>,
}

/// Settings of a foreign XMPP domain node (SPEC FED1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XmppDomainNode {
    /// The domain it serves (`partner.example.org`).
    pub domain: String,
    /// Its users and their passwords.
    pub accounts: BTreeMap<String, String>,
    /// Each account's contacts (full JIDs, lower case), subscribed both ways.
    pub contacts: BTreeMap<String, Vec<String>>,
    /// Contact and watcher list limits (SPEC IMP3's defaults unless set).
    pub limits: uclab_mocks::imp::router::Limits,
    /// Its federation.
    pub s2s: S2sNode,
}

/// Settings of an Expressway-C node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpresswayCNode {
    /// The internal DNS node it resolves through.
    pub dns: String,
    /// Its expressway-e nodes.
    pub edge: Vec<String>,
    /// Lifetime of an `X-Auth` token.
    pub token_lifetime: Duration,
    /// `userUdsServer` left empty (the field fault of WIRE.md).
    pub user_uds_empty: bool,
    /// HTTP allow-list rules beside the automatic ones.
    pub allow: Vec<uclab_mocks::expressway::allow::AllowRule>,
}

/// Settings of an Expressway-E node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpresswayENode {
    /// Its certificate's names.
    pub san: Vec<String>,
    /// The FQDN C's certificate must carry.
    pub traversal_peer: String,
}

/// Settings of an IM&P node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImpNode {
    /// IM&P cluster; its nodes share sessions and deliver to each other.
    pub cluster: String,
    /// Client re-login limits, seconds (SPEC HA2).
    pub relogin: (u32, u32),
    /// Contact and watcher list limits (SPEC IMP3).
    pub limits: uclab_mocks::imp::router::Limits,
    /// Subcluster, 1 to 3 (SPEC HA3); failover stays inside it.
    pub subcluster: u8,
    /// How users are spread over the cluster's nodes (SPEC HA3).
    pub assignment: Assignment,
    /// Group chat (SPEC IMP5): persistent chat enabled.
    pub persistent_chat: bool,
    /// The `chatdb` node holding persistent rooms.
    pub chat_db: Option<String>,
    /// Room and occupant limits of the node's conferencing service.
    pub room_limits: uclab_mocks::imp::muc::RoomLimits,
    /// SPEC FED1: a federation-enabled node, and the cluster's federation settings.
    pub federation: Option<S2sNode>,
    /// SPEC FED2: the topology has other IM&P clusters of the domain, which this node's
    /// cluster peers with (server-to-server streams between their nodes).
    pub peering: bool,
}

/// SPEC HA3 user assignment over subclusters 1–3 and their nodes A and B.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Assignment {
    /// 1A, 2A, 3A, 1B, 2B, 3B, 1A, …: every node is some users' primary.
    Balanced,
    /// "None" (active/standby): 1A, 2A, 3A, 1A, …: the B nodes only take over.
    ActiveStandby,
}

/// Settings of a CUCM node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CucmNode {
    /// Cluster name; nodes of one cluster are its members in declaration order.
    pub cluster: String,
    /// Version UDS reports.
    pub version: String,
    /// IM&P product type of the service profile (SPEC AU2).
    pub product_type: uclab_proto::uds::ImpProductType,
    /// IM&P servers of the service profile.
    pub imp_servers: Vec<String>,
    /// SRST reference.
    pub srst: Option<String>,
    /// Answer UDS with 503.
    pub overloaded: bool,
    /// SIP REGISTER needs digest credentials (device security profile "digest"), cluster-wide.
    pub sip_digest: bool,
    /// The credential policy's lockout (issue 13), cluster-wide; `None`: no lockout.
    pub credential_policy: Option<uclab_mocks::lockout::CredentialPolicy>,
    /// The SIP profile's media port range (SPEC MEDIA1), cluster-wide; `None`: the default.
    pub media_ports: Option<(u16, u16)>,
    /// The devices' SIP transport from the device security profile (`transportLayerProtocol`:
    /// 1 UDP, 2 TCP, 3 TLS with the "encrypted" security mode), cluster-wide; `None`: TCP.
    pub sip_transport: Option<u8>,
    /// Presence groups and the Inter-Presence Group Subscribe Policy (SPEC CC6).
    pub presence: uclab_mocks::cucm::sip::PresencePolicy,
    /// The IM&P node CUCM's SIP trunk publishes line states to (SPEC CC7), cluster-wide.
    pub presence_trunk: Option<String>,
    /// CC7's trunk mode: `true` with "IMP PUBLISH Trunk" on (CUCM PUBLISHes line states),
    /// `false` for SUBSCRIBE/NOTIFY (IM&P's presence gateway subscribes to CUCM).
    pub publish_trunk: bool,
    /// Service profile parameters (SPEC CFG1), cluster-wide.
    pub profile: Vec<(String, String)>,
    /// jabber-config.xml parameters (`Group/Param`, SPEC CFG1); `None`: no such file.
    pub jabber_config: Option<Vec<(String, String)>>,
    /// Group configuration files and their parameters (SPEC CFG2).
    pub group_files: Vec<(String, Vec<(String, String)>)>,
}

/// A user account on a CUCM cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// User id.
    pub id: String,
    /// Home cluster.
    pub cluster: String,
    /// Home IM&P cluster (SPEC FED2); `None`: the topology's first.
    pub imp_cluster: Option<String>,
    /// Password.
    pub password: String,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// Extension.
    pub extension: String,
    /// Email.
    pub email: String,
    /// Devices.
    pub devices: Vec<String>,
    /// Group configuration file named by their CSF devices' Cisco Support Field (SPEC CFG2).
    pub config_file: Option<String>,
    /// User ids on their IM&P contact list, provisioned as the bulk import does (SPEC IMP3):
    /// they watch each of them.
    pub contacts: Vec<String>,
    /// The line's partition (SPEC CC6).
    pub partition: String,
    /// The SUBSCRIBE calling search space; `None` is `<None>`.
    pub subscribe_css: Option<Vec<String>>,
    /// Presence group.
    pub presence_group: String,
    /// BLF speed dials.
    pub blf: Vec<String>,
}

impl NodeKind {
    /// The kind's name in scenario files.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Dns { .. } => "dns",
            Self::Host { .. } => "host",
            Self::Cas { .. } => "cas",
            Self::Cucm(_) => "cucm",
            Self::Imp(_) => "imp",
            Self::ChatDb => "chatdb",
            Self::Srst => "srst",
            Self::ExpresswayC(_) => "expressway-c",
            Self::ExpresswayE(_) => "expressway-e",
            Self::XmppDomain(_) => "xmpp-domain",
            Self::SipDomain(_) => "sip-domain",
        }
    }
}

/// A node of the topology.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Unique name.
    pub name: String,
    /// Address.
    pub ip: IpAddr,
    /// Zone it sits in.
    pub zone: Option<String>,
    /// Host name (certificates, URIs): `fqdn`, or `<name>.<domain>`.
    pub fqdn: String,
    /// What it runs.
    pub kind: NodeKind,
    /// Services whose XML answers are deliberately spoilt (`uds`, `tftp`, `cas`).
    pub broken_xml: BTreeMap<String, uclab_mocks::http::BrokenXml>,
}

/// A client running the real client core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    /// Unique name.
    pub name: String,
    /// Address.
    pub ip: IpAddr,
    /// Zone it sits in.
    pub zone: Option<String>,
    /// DNS nodes it uses (from DHCP), in order.
    pub dns: Vec<String>,
    /// The address the user types (`alice@example.com`).
    pub address: Option<String>,
    /// Installer bootstrap switches (SPEC SD9, CFG3).
    pub bootstrap: uclab_client::driver::Bootstrap,
}

/// Installer switches a client's `bootstrap` table may set (WIRE.md).
pub const BOOTSTRAP_SWITCHES: &[&str] = &[
    "CLEAR",
    "AUTHENTICATOR",
    "PRODUCT_MODE",
    "CUP_ADDRESS",
    "TFTP",
    "CTI",
    "CCMCIP",
    "SERVICES_DOMAIN",
    "VOICE_SERVICES_DOMAIN",
    "EXCLUDED_SERVICES",
    "UPN_DISCOVERY_ENABLED",
    "TFTP_FILE_NAME",
];

/// A timeline action.
#[derive(Clone, Debug, PartialEq)]
pub enum StepAction {
    /// A client discovers services (SPEC SD1–SD5).
    Discover {
        /// Client.
        client: String,
        /// Domain, VoiceServicesDomain, exclusions.
        discovery: DiscoveryConfig,
    },
    /// A node crashes (its sockets vanish).
    Crash {
        /// Node.
        node: String,
    },
    /// A client's user asks for a feature the client refuses (file transfer, deskphone
    /// control; SPEC MRA2 over the edge).
    Feature {
        /// Client.
        client: String,
        /// `file-transfer` or `deskphone-control`.
        feature: String,
    },
    /// A client's user gives their phone services credentials (SPEC MRA3).
    PhoneCredentials {
        /// Client.
        client: String,
        /// User id.
        user: String,
        /// Password typed.
        password: String,
    },
    /// A client signs a user of a foreign XMPP domain in to that domain's server (SPEC FED1):
    /// plain XMPP, SASL PLAIN, no SOAP or discovery.
    XmppSignIn {
        /// Client.
        client: String,
        /// The server: the XMPP address of an `xmpp-domain` node.
        server: SocketAddr,
        /// Its domain.
        domain: String,
        /// User id (an account of the node).
        user: String,
        /// Password.
        password: String,
    },
    /// A user of a `sip-domain` node does something (SPEC FED3): the node does it then.
    SipUser {
        /// The node.
        node: String,
        /// What.
        command: uclab_mocks::sip_domain::Command,
    },
    /// A client discovers, then signs a user in (SPEC AU1).
    SignIn {
        /// Client.
        client: String,
        /// Domain, VoiceServicesDomain, exclusions.
        discovery: DiscoveryConfig,
        /// User id.
        user: String,
        /// Password typed.
        password: String,
    },
    /// A client's user acts in the IM window: a message (SPEC IMP1, IMP2), a subscription
    /// request or approval, a status change (IMP3).
    Im {
        /// Client.
        client: String,
        /// What they do.
        action: uclab_client::im::ImAction,
    },
    /// A client's user does something with calls (SPEC CC1, CC4, CC5).
    Call {
        /// Client.
        client: String,
        /// What they do.
        action: uclab_client::call::CallAction,
    },
    /// A client moves to another zone and gets that network's DNS servers (SPEC SD8).
    Move {
        /// Client.
        client: String,
        /// Zone it is in from now on.
        zone: String,
        /// DNS nodes of the new network, in order.
        dns: Vec<String>,
    },
    /// The installer runs again on a client with new bootstrap switches (SPEC CFG3).
    Install {
        /// Client.
        client: String,
        /// The switches (`CLEAR` deletes the client's cache).
        bootstrap: uclab_client::driver::Bootstrap,
    },
    /// A crashed node starts again.
    Restart {
        /// Node.
        node: String,
    },
    /// Everything between two hosts is silently dropped.
    Blackhole {
        /// Host.
        a: String,
        /// Host.
        b: String,
    },
    /// A blackhole ends.
    Heal {
        /// Host.
        a: String,
        /// Host.
        b: String,
    },
    /// A turmoil partition between two hosts (messages in flight are lost too).
    Partition {
        /// Host.
        a: String,
        /// Host.
        b: String,
    },
    /// A partition ends.
    Repair {
        /// Host.
        a: String,
        /// Host.
        b: String,
    },
    /// One-way latency of the link between two hosts.
    Latency {
        /// Host.
        a: String,
        /// Host.
        b: String,
        /// Latency.
        value: Duration,
    },
    /// UDP loss probability between two hosts.
    Loss {
        /// Host.
        a: String,
        /// Host.
        b: String,
        /// Probability 0..=1.
        probability: f64,
    },
    /// A firewall rule added in front of the others.
    Firewall(Rule),
}

/// A step of the timeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// When, from the scenario start.
    pub at: Duration,
    /// What.
    pub action: StepAction,
}

/// An expectation on client events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expect {
    /// Client.
    pub client: String,
    /// Event kind.
    pub event: String,
    /// Fields that must all match; a value `a|b` accepts either.
    pub fields: BTreeMap<String, String>,
    /// Deadline from the scenario start.
    pub within: Duration,
    /// Only events at or after this time count (default: the start).
    pub after: Duration,
    /// The event must not happen by the deadline.
    pub absent: bool,
    /// Exactly this many matching events in the window, over all matching clients.
    pub count: Option<usize>,
    /// Line in the file, for reports.
    pub line: usize,
}

impl Expect {
    /// Whether `client` is one this expectation is about (`u*` names every client whose name
    /// starts with `u`).
    pub fn is_for(&self, client: &str) -> bool {
        match self.client.strip_suffix('*') {
            Some(prefix) => client.starts_with(prefix),
            None => client == self.client,
        }
    }
}

/// A validated scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The file it came from (`<built-in>` for the showcase without a file).
    pub file: PathBuf,
    /// Name (the file stem unless given).
    pub name: String,
    /// One-line summary.
    pub summary: String,
    /// SPEC ids covered.
    pub spec: Vec<String>,
    /// Default seed.
    pub seed: u64,
    /// Epoch: time after the Unix epoch at which the scenario starts.
    pub epoch: Duration,
    /// Longest simulated time the run may take.
    pub duration: Duration,
    /// A load scenario (thousands of clients): its test runs in release builds only, and its
    /// snapshot is a digest of the transcript and capture rather than the text.
    pub heavy: bool,
    /// Default one-way latency of every link.
    pub latency: Duration,
    /// Zones.
    pub zones: Vec<Zone>,
    /// Firewall rules, first match wins.
    pub rules: Vec<Rule>,
    /// Nodes.
    pub nodes: Vec<Node>,
    /// Clients.
    pub clients: Vec<Client>,
    /// User accounts.
    pub users: Vec<User>,
    /// The enterprise domain.
    pub domain: String,
    /// Timeline, sorted by time (stable).
    pub steps: Vec<Step>,
    /// Expectations.
    pub expects: Vec<Expect>,
}

impl Scenario {
    /// Address of a node or client.
    pub fn host_ip(&self, name: &str) -> Option<IpAddr> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .map(|n| n.ip)
            .or_else(|| self.clients.iter().find(|c| c.name == name).map(|c| c.ip))
    }

    /// Address of a node's service port.
    pub fn node_addr(&self, name: &str, port: u16) -> Option<SocketAddr> {
        self.host_ip(name).map(|ip| SocketAddr::new(ip, port))
    }
}
