//! Scenario files (TOML): parsing, merging with the built-in topology, and validation with
//! `file:line:col` errors. `scenarios/README.md` is the reference for the format.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use uclab_client::discovery::DiscoveryConfig;
use uclab_mocks::dns::{ZoneError, ZoneSource, parse_zone};
use uclab_net::{Action, Rule, Zone};

mod read;
use read::{Schema, did_you_mean, parse_file, parse_file_all, without_cascades};

use crate::time::{days_from_civil, parse_duration};

/// The built-in default topology (DESIGN.md "The built-in lab").
pub const DEFAULT_TOPOLOGY: &str = include_str!("default_topology.toml");
const DEFAULT_NAME: &str = "<built-in default topology>";

/// Default scenario epoch: Monday 2026-01-05 09:00:00 UTC.
const DEFAULT_EPOCH: Duration = Duration::from_secs(20_458 * 86_400 + 9 * 3600);

/// Node kinds that exist so far.
pub const NODE_KINDS: &[&str] = &["dns", "host", "cas", "cucm", "imp", "chatdb", "srst"];
/// Client event kinds expectations may name.
pub const EVENT_KINDS: &[&str] = uclab_client::event::ClientEvent::KINDS;

/// One error found in a scenario file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckError {
    /// File name as given.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.col, self.message)
    }
}

impl std::error::Error for CheckError {}

// ---- the file as written ----

type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: Option<S<String>>,
    summary: Option<String>,
    #[serde(default)]
    spec: Vec<S<String>>,
    seed: Option<u64>,
    epoch: Option<S<EpochSpec>>,
    duration: Option<S<String>>,
    #[serde(default)]
    heavy: bool,
    topology: Option<S<String>>,
    domain: Option<S<String>>,
    network: Option<NetworkSpec>,
    #[serde(default)]
    zone: Vec<ZoneSpec>,
    #[serde(default)]
    rule: Vec<RuleSpec>,
    #[serde(default)]
    node: Vec<NodeSpec>,
    #[serde(default)]
    client: Vec<ClientSpec>,
    #[serde(default)]
    user: Vec<UserSpec>,
    #[serde(default)]
    population: Vec<PopulationSpec>,
    #[serde(default)]
    step: Vec<StepSpec>,
    #[serde(default)]
    expect: Vec<ExpectSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkSpec {
    latency: Option<S<String>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ZoneSpec {
    name: S<String>,
    subnet: S<String>,
}

/// `epoch`: a TOML date-time, or the same as a quoted RFC 3339 string (issue 14).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum EpochSpec {
    Datetime(toml::value::Datetime),
    Text(String),
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    from: S<String>,
    to: S<String>,
    /// One word for verdicts, as the firewall step's (issue 14); `action` is the older name.
    #[serde(alias = "action")]
    verdict: S<String>,
    port: Option<u16>,
    proto: Option<S<String>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthoritySpec {
    origin: S<String>,
    records: S<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeSpec {
    name: S<String>,
    kind: Option<S<String>>,
    zone: Option<S<String>>,
    ip: Option<S<String>>,
    #[serde(default)]
    remove: bool,
    #[serde(default)]
    authority: Vec<AuthoritySpec>,
    forward: Option<S<String>>,
    #[serde(default)]
    listen: Vec<u16>,
    fqdn: Option<S<String>>,
    #[serde(default)]
    webex_domains: Vec<String>,
    cluster: Option<S<String>>,
    version: Option<String>,
    product_type: Option<S<String>>,
    #[serde(default)]
    imp_servers: Vec<String>,
    srst: Option<S<String>>,
    #[serde(default)]
    overloaded: bool,
    #[serde(default)]
    sip_digest: bool,
    failed_logon: Option<S<u32>>,
    failed_logon_reset: Option<S<String>>,
    lockout_duration: Option<S<String>>,
    media_ports: Option<S<[u16; 2]>>,
    sip_transport: Option<S<String>>,
    #[serde(default)]
    presence_groups: Vec<GroupRuleSpec>,
    inter_presence_group_policy: Option<S<String>>,
    presence_trunk: Option<S<String>>,
    presence_trunk_mode: Option<S<String>>,
    #[serde(default)]
    broken_xml: BTreeMap<String, S<String>>,
    relogin_lower: Option<u32>,
    relogin_upper: Option<u32>,
    contact_limit: Option<usize>,
    watcher_limit: Option<usize>,
    subcluster: Option<S<u8>>,
    assignment: Option<S<String>>,
    #[serde(default)]
    persistent_chat: bool,
    chat_db: Option<S<String>>,
    room_limit: Option<S<usize>>,
    persistent_room_limit: Option<S<usize>>,
    occupant_limit: Option<S<usize>>,
    profile: Option<BTreeMap<String, String>>,
    jabber_config: Option<BTreeMap<String, String>>,
    #[serde(default)]
    group_files: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserSpec {
    id: S<String>,
    cluster: S<String>,
    password: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    extension: Option<String>,
    email: Option<String>,
    devices: Option<Vec<String>>,
    config_file: Option<String>,
    #[serde(default)]
    contacts: Vec<S<String>>,
    /// The line's partition (SPEC CC6).
    partition: Option<S<String>>,
    /// The SUBSCRIBE calling search space: partitions, or `"<None>"`.
    subscribe_css: Option<S<CssSpec>>,
    presence_group: Option<S<String>>,
    /// Directory numbers on the device's BLF speed dials.
    #[serde(default)]
    blf: Vec<S<String>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum CssSpec {
    Name(String),
    List(Vec<String>),
}

/// A rule between two presence groups (SPEC CC6).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupRuleSpec {
    watcher: S<String>,
    target: S<String>,
    /// `allowed`, `disallowed`, or `default` (the Inter-Presence Group Subscribe Policy).
    policy: S<String>,
}

/// Many users, each with a client of the same name (load scenarios: SPEC CAP1).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PopulationSpec {
    /// Names are the prefix and a number from 1, zero-padded (`u0001` … `u3000`).
    prefix: S<String>,
    count: S<usize>,
    cluster: S<String>,
    /// Each user watches the next `contacts` users (a ring, so each has as many watchers).
    #[serde(default)]
    contacts: Option<S<usize>>,
    zone: S<String>,
    #[serde(default)]
    dns: Vec<S<String>>,
    /// Client addresses: host 1 upward of this subnet.
    subnet: S<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientSpec {
    name: S<String>,
    zone: Option<S<String>>,
    ip: Option<S<String>>,
    #[serde(default)]
    dns: Vec<S<String>>,
    address: Option<S<String>>,
    #[serde(default)]
    bootstrap: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepSpec {
    at: S<String>,
    action: S<String>,
    client: Option<S<String>>,
    node: Option<S<String>>,
    domain: Option<S<String>>,
    user: Option<S<String>>,
    password: Option<String>,
    url: Option<S<String>>,
    bootstrap: Option<BTreeMap<String, String>>,
    zone: Option<S<String>>,
    dns: Option<Vec<S<String>>>,
    body: Option<String>,
    show: Option<S<String>>,
    a: Option<S<String>>,
    b: Option<S<String>>,
    value: Option<S<String>>,
    probability: Option<f64>,
    from: Option<S<String>>,
    to: Option<S<String>>,
    verdict: Option<S<String>>,
    port: Option<u16>,
    proto: Option<S<String>>,
    /// With a client pattern (`u*`): the matching clients' steps spread evenly over this long.
    spread: Option<S<String>>,
    room: Option<S<String>>,
    nick: Option<S<String>>,
    #[serde(default)]
    persistent: bool,
    history: Option<u32>,
    /// `room-message`: send this many, numbered.
    count: Option<S<u32>>,
    /// `dtmf`: the digits.
    digits: Option<S<String>>,
    /// `dtmf`: `rfc4733` (telephone-event in RTP, the default) or `info` (SIP INFO).
    method: Option<S<String>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectSpec {
    client: S<String>,
    event: S<String>,
    within: S<String>,
    after: Option<S<String>>,
    count: Option<usize>,
    #[serde(default)]
    fields: BTreeMap<S<String>, String>,
    #[serde(default)]
    absent: bool,
}

// ---- the resolved scenario ----

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
}

/// Settings of an IM&P node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImpNode {
    /// IM&P cluster; its nodes share sessions and deliver to each other.
    pub cluster: String,
    /// Client re-login limits, seconds (SPEC HA2).
    pub relogin: (u32, u32),
    /// Contact and watcher list limits (SPEC IMP3).
    pub limits: uclab_mocks::router::Limits,
    /// Subcluster, 1 to 3 (SPEC HA3); failover stays inside it.
    pub subcluster: u8,
    /// How users are spread over the cluster's nodes (SPEC HA3).
    pub assignment: Assignment,
    /// Group chat (SPEC IMP5): persistent chat enabled.
    pub persistent_chat: bool,
    /// The `chatdb` node holding persistent rooms.
    pub chat_db: Option<String>,
    /// Room and occupant limits of the node's conferencing service.
    pub room_limits: uclab_mocks::muc::RoomLimits,
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
    pub presence: uclab_mocks::sip::PresencePolicy,
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

// ---- validation ----

/// Source text with a name, for span → line:col.
struct Src<'a> {
    name: &'a str,
    text: &'a str,
}

impl Src<'_> {
    fn pos(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rfind('\n').map_or(before.len(), |i| before.len() - i - 1) + 1;
        (line, col)
    }

    fn err(&self, offset: usize, message: impl Into<String>) -> CheckError {
        let (line, col) = self.pos(offset);
        CheckError { file: self.name.to_owned(), line, col, message: message.into() }
    }
}

struct Item<'a, T> {
    src: &'a Src<'a>,
    spec: T,
}

/// Reads and validates a scenario file.
pub fn load(path: &Path) -> Result<Scenario, Vec<CheckError>> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![CheckError {
            file: name.clone(),
            line: 1,
            col: 1,
            message: format!("cannot read: {e}"),
        }]
    })?;
    parse(&name, &text, path)
}

/// Validates scenario text named `name` (errors say `name:line:col`).
pub fn parse(name: &str, text: &str, path: &Path) -> Result<Scenario, Vec<CheckError>> {
    let src = Src { name, text };
    let Schema { file, errs: schema, broken } = parse_file_all(&src)?;
    let mut errs = Vec::new();
    let def_src = Src { name: DEFAULT_NAME, text: DEFAULT_TOPOLOGY };
    let use_default = match &file.topology {
        None => true,
        Some(t) if t.get_ref() == "default" => true,
        Some(t) if t.get_ref() == "none" => false,
        Some(t) => {
            errs.push(src.err(
                t.span().start,
                format!("unknown topology `{}` (default, none)", t.get_ref()),
            ));
            // Checked against the default, so the typo is the only error (issue 14).
            true
        }
    };
    let default = if use_default { Some(parse_file(&def_src).map_err(|e| vec![e])?) } else { None };

    // Merge: scenario zones replace default zones of the same name; scenario rules come first;
    // scenario nodes replace default nodes of the same name (or remove them).
    let mut zones: Vec<Item<'_, ZoneSpec>> = Vec::new();
    let mut rules: Vec<Item<'_, RuleSpec>> = Vec::new();
    let mut nodes: Vec<Item<'_, NodeSpec>> = Vec::new();
    let mut clients: Vec<Item<'_, ClientSpec>> = Vec::new();
    let mut users: Vec<Item<'_, UserSpec>> = Vec::new();
    let mut latency = None;
    let mut domain = None;
    if let Some(d) = &default {
        zones.extend(d.zone.iter().cloned().map(|spec| Item { src: &def_src, spec }));
        nodes.extend(d.node.iter().cloned().map(|spec| Item { src: &def_src, spec }));
        clients.extend(d.client.iter().cloned().map(|spec| Item { src: &def_src, spec }));
        users.extend(d.user.iter().cloned().map(|spec| Item { src: &def_src, spec }));
        domain = d.domain.as_ref().map(|x| x.get_ref().clone());
        if let Some(l) = d.network.as_ref().and_then(|n| n.latency.clone()) {
            latency = Some((&def_src, l));
        }
    }
    for z in &file.zone {
        zones.retain(|i| i.spec.name.get_ref() != z.name.get_ref());
        zones.push(Item { src: &src, spec: z.clone() });
    }
    rules.extend(file.rule.iter().cloned().map(|spec| Item { src: &src, spec }));
    if let Some(d) = &default {
        rules.extend(d.rule.iter().cloned().map(|spec| Item { src: &def_src, spec }));
    }
    for n in &file.node {
        let existed = nodes.iter().position(|i| i.spec.name.get_ref() == n.name.get_ref());
        if n.remove {
            match existed {
                Some(at) => {
                    nodes.remove(at);
                }
                None => errs.push(src.err(
                    n.name.span().start,
                    format!("cannot remove unknown node `{}`", n.name.get_ref()),
                )),
            }
            continue;
        }
        // A replaced node keeps its place (the first CUCM of a cluster is its publisher).
        match existed {
            Some(at) => nodes[at] = Item { src: &src, spec: n.clone() },
            None => nodes.push(Item { src: &src, spec: n.clone() }),
        }
    }
    for c in &file.client {
        clients.retain(|i| i.spec.name.get_ref() != c.name.get_ref());
        clients.push(Item { src: &src, spec: c.clone() });
    }
    for u in &file.user {
        users.retain(|i| i.spec.id.get_ref() != u.id.get_ref());
        users.push(Item { src: &src, spec: u.clone() });
    }
    if let Some(d) = &file.domain {
        if uclab_proto::dns::parse_name(d.get_ref()).is_err() {
            errs.push(src.err(d.span().start, format!("bad domain `{}`", d.get_ref())));
        }
        domain = Some(d.get_ref().clone());
    }
    let domain = domain.unwrap_or_else(|| "example.com".into());
    for p in &file.population {
        let (n, span) = (*p.count.get_ref(), p.prefix.span());
        if !(1..=100_000).contains(&n) {
            errs.push(src.err(p.count.span().start, "population `count`: 1 to 100000"));
            continue;
        }
        let ring = p.contacts.as_ref().map_or(0, |c| *c.get_ref());
        if ring >= n {
            let at = p.contacts.as_ref().map_or(0, |c| c.span().start);
            errs.push(src.err(at, format!("`contacts` must be below `count` ({n})")));
            continue;
        }
        let (net, prefix) = match parse_subnet(p.subnet.get_ref()) {
            Ok(x) => x,
            Err(m) => {
                errs.push(src.err(p.subnet.span().start, m));
                continue;
            }
        };
        let IpAddr::V4(net) = net else { continue };
        if (n as u64) + 2 > 1u64 << (32 - u32::from(prefix)) {
            errs.push(src.err(p.subnet.span().start, format!("subnet too small for {n} clients")));
            continue;
        }
        let width = n.to_string().len();
        let name = |k: usize| format!("{}{:0width$}", p.prefix.get_ref(), k + 1);
        for k in 0..n {
            let id = S::new(span.clone(), name(k));
            let contacts = (1..=ring)
                .map(|d| {
                    S::new(
                        p.contacts.as_ref().map_or(span.clone(), |c| c.span()),
                        name((k + d) % n),
                    )
                })
                .collect();
            users.push(Item {
                src: &src,
                spec: UserSpec {
                    id: id.clone(),
                    cluster: p.cluster.clone(),
                    password: None,
                    first_name: None,
                    last_name: None,
                    // Unique without a numbering plan: the user id is the line (SPEC CC1).
                    extension: Some(id.get_ref().clone()),
                    email: None,
                    devices: None,
                    config_file: None,
                    contacts,
                    partition: None,
                    subscribe_css: None,
                    presence_group: None,
                    blf: Vec::new(),
                },
            });
            let ip = Ipv4Addr::from(u32::from(net) + k as u32 + 1).to_string();
            clients.push(Item {
                src: &src,
                spec: ClientSpec {
                    name: id,
                    zone: Some(p.zone.clone()),
                    ip: Some(S::new(p.subnet.span(), ip)),
                    dns: p.dns.clone(),
                    address: Some(S::new(span.clone(), format!("{}@{domain}", name(k)))),
                    bootstrap: BTreeMap::new(),
                },
            });
        }
    }
    if let Some(l) = file.network.as_ref().and_then(|n| n.latency.clone()) {
        latency = Some((&src, l));
    }

    // Zones.
    let mut zone_out = Vec::new();
    for i in &zones {
        let z = &i.spec;
        match parse_subnet(z.subnet.get_ref()) {
            Ok((net, prefix)) => {
                zone_out.push(Zone { name: z.name.get_ref().clone(), net, prefix })
            }
            Err(m) => errs.push(i.src.err(z.subnet.span().start, m)),
        }
    }
    let zone_names: BTreeSet<&str> = zones.iter().map(|i| i.spec.name.get_ref().as_str()).collect();
    let check_zone = |errs: &mut Vec<CheckError>, src: &Src<'_>, z: &S<String>| {
        if z.get_ref() != "*" && !zone_names.contains(z.get_ref().as_str()) {
            errs.push(src.err(z.span().start, format!("unknown zone `{}`", z.get_ref())));
        }
    };

    // Rules.
    let mut rule_out = Vec::new();
    for i in &rules {
        let r = &i.spec;
        check_zone(&mut errs, i.src, &r.from);
        check_zone(&mut errs, i.src, &r.to);
        let action = match parse_action(&r.verdict) {
            Ok(a) => a,
            Err(m) => {
                errs.push(i.src.err(r.verdict.span().start, m));
                Action::Allow
            }
        };
        let proto = r.proto.as_ref().map(|p| check_proto(&mut errs, i.src, p));
        rule_out.push(Rule {
            from: r.from.get_ref().clone(),
            to: r.to.get_ref().clone(),
            port: r.port,
            proto,
            action,
        });
    }

    // Hosts: names, zones and addresses. Explicit addresses are reserved first, so automatic
    // ones (from .10 for nodes, .100 for clients, in declaration order) never take them.
    let reserved: BTreeSet<IpAddr> = nodes
        .iter()
        .filter_map(|i| i.spec.ip.as_ref())
        .chain(clients.iter().filter_map(|i| i.spec.ip.as_ref()))
        .filter_map(|ip| ip.get_ref().parse::<Ipv4Addr>().ok().map(IpAddr::V4))
        .collect();
    let mut taken: BTreeSet<IpAddr> = BTreeSet::new();
    let mut names: BTreeSet<String> = BTreeSet::new();
    let mut host_ip = |errs: &mut Vec<CheckError>,
                       src: &Src<'_>,
                       name: &S<String>,
                       zone: &Option<S<String>>,
                       ip: &Option<S<String>>,
                       what: &'static str|
     -> Option<IpAddr> {
        if !valid_name(name.get_ref()) {
            errs.push(src.err(
                name.span().start,
                format!("bad {what} name `{}`: use letters, digits and -", name.get_ref()),
            ));
        }
        if !names.insert(name.get_ref().clone()) {
            errs.push(
                src.err(name.span().start, format!("duplicate host name `{}`", name.get_ref())),
            );
        }
        if let Some(z) = zone {
            check_zone(errs, src, z);
        }
        let ip = match ip {
            Some(ip) => match ip.get_ref().parse::<Ipv4Addr>() {
                Ok(a) => IpAddr::V4(a),
                Err(_) => {
                    errs.push(
                        src.err(ip.span().start, format!("bad IPv4 address `{}`", ip.get_ref())),
                    );
                    return None;
                }
            },
            None => {
                let Some(IpAddr::V4(net)) = zone
                    .as_ref()
                    .and_then(|z| zone_out.iter().find(|x| &x.name == z.get_ref()))
                    .map(|z| z.net)
                else {
                    if zone.as_ref().is_some_and(|z| z.get_ref() != "*") {
                        // An unknown or broken zone: reported where it is (no cascade).
                        return None;
                    }
                    errs.push(src.err(
                        name.span().start,
                        format!("{what} `{}` needs `ip` or `zone`", name.get_ref()),
                    ));
                    return None;
                };
                let first = if what == "client" { 100 } else { 10 };
                let free = (first..250u32)
                    .map(|h| IpAddr::V4(Ipv4Addr::from(u32::from(net) + h)))
                    .find(|a| !reserved.contains(a) && !taken.contains(a));
                let Some(a) = free else {
                    errs.push(src.err(name.span().start, "no free address left in the zone"));
                    return None;
                };
                a
            }
        };
        if !taken.insert(ip) {
            errs.push(src.err(name.span().start, format!("address {ip} is used twice")));
        }
        Some(ip)
    };
    let node_ips: Vec<Option<IpAddr>> = nodes
        .iter()
        .map(|i| host_ip(&mut errs, i.src, &i.spec.name, &i.spec.zone, &i.spec.ip, "node"))
        .collect();
    let client_ips: Vec<Option<IpAddr>> = clients
        .iter()
        .map(|i| host_ip(&mut errs, i.src, &i.spec.name, &i.spec.zone, &i.spec.ip, "client"))
        .collect();
    let mut node_out = Vec::new();
    let node_names: BTreeMap<&str, Option<&str>> = nodes
        .iter()
        .map(|i| {
            (i.spec.name.get_ref().as_str(), i.spec.kind.as_ref().map(|k| k.get_ref().as_str()))
        })
        .collect();
    let check_node = |errs: &mut Vec<CheckError>,
                      src: &Src<'_>,
                      n: &S<String>,
                      kind: Option<&str>| {
        match node_names.get(n.get_ref().as_str()) {
            None => errs.push(src.err(n.span().start, format!("unknown node `{}`", n.get_ref()))),
            Some(k) if kind.is_some() && *k != kind => errs.push(src.err(
                n.span().start,
                format!("node `{}` is not a {} node", n.get_ref(), kind.unwrap_or_default()),
            )),
            Some(_) => {}
        }
    };

    for (i, ip) in nodes.iter().zip(node_ips) {
        let n = &i.spec;
        let Some(kind) = &n.kind else {
            errs.push(i.src.err(
                n.name.span().start,
                format!("node `{}` needs a `kind` ({})", n.name.get_ref(), NODE_KINDS.join(", ")),
            ));
            continue;
        };
        let kind = match kind.get_ref().as_str() {
            "dns" => {
                let mut zones = Vec::new();
                for a in &n.authority {
                    let z = ZoneSource {
                        origin: a.origin.get_ref().clone(),
                        text: a.records.get_ref().clone(),
                    };
                    match parse_zone(&z) {
                        Ok(_) => zones.push(z),
                        Err(ZoneError::BadOrigin(o)) => errs.push(
                            i.src.err(a.origin.span().start, format!("bad zone origin `{o}`")),
                        ),
                        Err(ZoneError::Parse { message, line, .. }) => {
                            let at = records_offset(i.src.text, a.records.span().start, line);
                            errs.push(i.src.err(at, format!("bad zone text: {message}")));
                        }
                    }
                }
                if let Some(f) = &n.forward {
                    check_node(&mut errs, i.src, f, Some("dns"));
                }
                NodeKind::Dns { zones, forward: n.forward.as_ref().map(|f| f.get_ref().clone()) }
            }
            "host" => NodeKind::Host { listen: n.listen.clone() },
            "cas" => NodeKind::Cas { webex_domains: n.webex_domains.clone() },
            "chatdb" => NodeKind::ChatDb,
            "srst" => NodeKind::Srst,
            "imp" => {
                let Some(cluster) = &n.cluster else {
                    errs.push(i.src.err(
                        n.name.span().start,
                        format!("imp node `{}` needs a `cluster`", n.name.get_ref()),
                    ));
                    continue;
                };
                // Cisco's defaults for "Client Re-Login Lower/Upper Limit".
                let relogin = (n.relogin_lower.unwrap_or(120), n.relogin_upper.unwrap_or(480));
                if relogin.0 > relogin.1 {
                    errs.push(i.src.err(
                        n.name.span().start,
                        format!("relogin_lower {} is above relogin_upper {}", relogin.0, relogin.1),
                    ));
                }
                // SPEC IMP3: "Maximum Contact List Size" and "Maximum Watchers", 200 each.
                let d = uclab_mocks::router::Limits::default();
                let limits = uclab_mocks::router::Limits {
                    contacts: n.contact_limit.unwrap_or(d.contacts),
                    watchers: n.watcher_limit.unwrap_or(d.watchers),
                };
                let subcluster = match &n.subcluster {
                    None => 0, // numbered below: members pair up in declaration order
                    Some(v) if (1..=3).contains(v.get_ref()) => *v.get_ref(),
                    Some(v) => {
                        errs.push(i.src.err(
                            v.span().start,
                            format!(
                                "subcluster {} out of range: 1, 2 or 3 (SPEC HA3)",
                                v.get_ref()
                            ),
                        ));
                        1
                    }
                };
                let assignment = match n.assignment.as_ref().map(|a| a.get_ref().as_str()) {
                    None | Some("balanced") => Assignment::Balanced,
                    Some("active-standby" | "none") => Assignment::ActiveStandby,
                    Some(other) => {
                        let at = n.assignment.as_ref().map_or(0, |a| a.span().start);
                        errs.push(i.src.err(
                            at,
                            format!("unknown assignment `{other}` (balanced, active-standby)"),
                        ));
                        Assignment::Balanced
                    }
                };
                // SPEC IMP5 per-node limits: 16,500 rooms, 1,500 persistent, 1,000 occupants.
                let d = uclab_mocks::muc::RoomLimits::default();
                let mut limit = |v: &Option<S<usize>>, default: usize, what: &str| match v {
                    None => default,
                    Some(v) if *v.get_ref() >= 1 => *v.get_ref(),
                    Some(v) => {
                        errs.push(i.src.err(v.span().start, format!("{what} must be at least 1")));
                        default
                    }
                };
                let room_limits = uclab_mocks::muc::RoomLimits {
                    rooms: limit(&n.room_limit, d.rooms, "room_limit"),
                    persistent: limit(
                        &n.persistent_room_limit,
                        d.persistent,
                        "persistent_room_limit",
                    ),
                    occupants: limit(&n.occupant_limit, d.occupants, "occupant_limit"),
                };
                if let Some(db) = &n.chat_db {
                    check_node(&mut errs, i.src, db, Some("chatdb"));
                }
                NodeKind::Imp(ImpNode {
                    cluster: cluster.get_ref().clone(),
                    relogin,
                    limits,
                    subcluster,
                    assignment,
                    persistent_chat: n.persistent_chat,
                    chat_db: n.chat_db.as_ref().map(|d| d.get_ref().clone()),
                    room_limits,
                })
            }
            "cucm" => {
                let Some(cluster) = &n.cluster else {
                    errs.push(i.src.err(
                        n.name.span().start,
                        format!("cucm node `{}` needs a `cluster`", n.name.get_ref()),
                    ));
                    continue;
                };
                use uclab_proto::uds::ImpProductType;
                let product_type = match n.product_type.as_ref().map(|p| p.get_ref().as_str()) {
                    None | Some("cup") => ImpProductType::Cup,
                    Some("webex") => ImpProductType::Webex,
                    Some("none") => ImpProductType::NotSet,
                    Some(o) => {
                        let at = n.product_type.as_ref().map_or(0, |p| p.span().start);
                        errs.push(
                            i.src.err(at, format!("unknown product_type `{o}` (cup, webex, none)")),
                        );
                        ImpProductType::Cup
                    }
                };
                if let Some(sr) = &n.srst
                    && sr.get_ref().parse::<Ipv4Addr>().is_err()
                {
                    errs.push(
                        i.src.err(sr.span().start, format!("bad SRST address `{}`", sr.get_ref())),
                    );
                }
                // Parameter names become XML element names: letters, digits, `_`, and one
                // `Group/` prefix in configuration files.
                let name_ok = |k: &str, group: bool| {
                    let part = |p: &str| {
                        !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    };
                    match k.split_once('/') {
                        Some((g, p)) if group => part(g) && part(p),
                        Some(_) => false,
                        None => part(k),
                    }
                };
                let mut kv = |m: &BTreeMap<String, String>, group: bool, what: &str| {
                    for k in m.keys().filter(|k| !name_ok(k, group)) {
                        errs.push(i.src.err(
                            n.name.span().start,
                            format!(
                                "bad {what} parameter name `{k}` (letters, digits, _{})",
                                if group { ", one Group/ prefix" } else { "" }
                            ),
                        ));
                    }
                    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<Vec<_>>()
                };
                let profile =
                    n.profile.as_ref().map(|m| kv(m, false, "profile")).unwrap_or_default();
                let jabber_config = n.jabber_config.as_ref().map(|m| kv(m, true, "jabber_config"));
                let group_files = n
                    .group_files
                    .iter()
                    .map(|(f, m)| (f.clone(), kv(m, true, "group file")))
                    .collect::<Vec<_>>();
                for f in n.group_files.keys() {
                    if f.is_empty()
                        || !f.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                    {
                        errs.push(
                            i.src.err(n.name.span().start, format!("bad group file name `{f}`")),
                        );
                    }
                }
                let mut presence = uclab_mocks::sip::PresencePolicy::default();
                for r in &n.presence_groups {
                    let allow = match r.policy.get_ref().as_str() {
                        "allowed" => Some(true),
                        "disallowed" => Some(false),
                        "default" => None,
                        other => {
                            errs.push(i.src.err(
                                r.policy.span().start,
                                format!("unknown policy `{other}` (allowed, disallowed, default)"),
                            ));
                            None
                        }
                    };
                    if let Some(a) = allow {
                        let (w, t) = (r.watcher.get_ref().clone(), r.target.get_ref().clone());
                        presence.rules.push((w, t, a));
                    }
                }
                if let Some(p) = &n.inter_presence_group_policy {
                    presence.inter_group_allowed = match p.get_ref().as_str() {
                        "allowed" => true,
                        "disallowed" => false,
                        other => {
                            errs.push(i.src.err(
                                p.span().start,
                                format!("unknown policy `{other}` (allowed, disallowed)"),
                            ));
                            true
                        }
                    };
                }
                let publish_trunk = match &n.presence_trunk_mode {
                    None => true,
                    Some(m) if m.get_ref() == "publish" => true,
                    Some(m) if m.get_ref() == "subscribe" => false,
                    Some(m) => {
                        errs.push(i.src.err(
                            m.span().start,
                            format!(
                                "unknown presence_trunk_mode `{}` (publish, subscribe)",
                                m.get_ref()
                            ),
                        ));
                        true
                    }
                };
                NodeKind::Cucm(CucmNode {
                    presence,
                    presence_trunk: n.presence_trunk.as_ref().map(|t| t.get_ref().clone()),
                    publish_trunk,
                    sip_transport: match &n.sip_transport {
                        None => None,
                        Some(t) => match t.get_ref().as_str() {
                            "udp" => Some(1),
                            "tcp" => Some(2),
                            "tls" => Some(3),
                            other => {
                                errs.push(i.src.err(
                                    t.span().start,
                                    format!("unknown sip_transport `{other}` (udp, tcp, tls)"),
                                ));
                                None
                            }
                        },
                    },
                    profile,
                    jabber_config,
                    group_files,
                    cluster: cluster.get_ref().clone(),
                    version: n.version.clone().unwrap_or_else(|| "12.5.1".into()),
                    product_type,
                    imp_servers: n.imp_servers.clone(),
                    srst: n.srst.as_ref().map(|x| x.get_ref().clone()),
                    overloaded: n.overloaded,
                    sip_digest: n.sip_digest,
                    credential_policy: credential_policy(n, i.src, &mut errs),
                    media_ports: match &n.media_ports {
                        None => None,
                        Some(r) if r.get_ref()[0] < r.get_ref()[1] && r.get_ref()[0] >= 1024 => {
                            Some((r.get_ref()[0], r.get_ref()[1]))
                        }
                        Some(r) => {
                            errs.push(i.src.err(
                                r.span().start,
                                "media_ports must be [start, stop] with 1024 <= start < stop",
                            ));
                            None
                        }
                    },
                })
            }
            other => {
                errs.push(i.src.err(
                    kind.span().start,
                    format!("unknown node kind `{other}` (known: {})", NODE_KINDS.join(", ")),
                ));
                continue;
            }
        };
        let fqdn = match &n.fqdn {
            Some(f) => {
                if uclab_proto::dns::parse_name(f.get_ref()).is_err() {
                    errs.push(i.src.err(f.span().start, format!("bad fqdn `{}`", f.get_ref())));
                }
                f.get_ref().clone()
            }
            None => format!("{}.{domain}", n.name.get_ref()),
        };
        if let Some(ip) = ip {
            let mut broken_xml = BTreeMap::new();
            for (svc, how) in &n.broken_xml {
                let known = match &kind {
                    NodeKind::Cucm(_) => ["uds", "tftp"].contains(&svc.as_str()),
                    NodeKind::Cas { .. } => svc == "cas",
                    _ => false,
                };
                if !known {
                    errs.push(i.src.err(
                        how.span().start,
                        format!("node `{}` has no XML service `{svc}` to break", n.name.get_ref()),
                    ));
                }
                match uclab_mocks::http::BrokenXml::from_name(how.get_ref()) {
                    Some(b) => {
                        broken_xml.insert(svc.clone(), b);
                    }
                    None => errs.push(i.src.err(
                        how.span().start,
                        format!(
                            "unknown broken_xml `{}` ({})",
                            how.get_ref(),
                            uclab_mocks::http::BrokenXml::NAMES.join(", ")
                        ),
                    )),
                }
            }
            node_out.push(Node {
                name: n.name.get_ref().clone(),
                ip,
                zone: n.zone.as_ref().map(|z| z.get_ref().clone()),
                fqdn,
                kind,
                broken_xml,
            });
        }
    }

    let client_names: BTreeSet<&str> =
        clients.iter().map(|i| i.spec.name.get_ref().as_str()).collect();
    let mut client_out = Vec::new();
    for (i, ip) in clients.iter().zip(client_ips) {
        let c = &i.spec;
        for d in &c.dns {
            check_node(&mut errs, i.src, d, Some("dns"));
        }
        if let Some(a) = &c.address
            && a.get_ref().rsplit_once('@').is_none_or(|(u, d)| u.is_empty() || d.is_empty())
        {
            errs.push(i.src.err(
                a.span().start,
                format!("bad address `{}`: expected user@domain", a.get_ref()),
            ));
        }
        let bootstrap = bootstrap_switches(&mut errs, i.src, c.name.span().start, &c.bootstrap);
        if let Some(ip) = ip {
            client_out.push(Client {
                name: c.name.get_ref().clone(),
                ip,
                zone: c.zone.as_ref().map(|z| z.get_ref().clone()),
                dns: c.dns.iter().map(|d| d.get_ref().clone()).collect(),
                address: c.address.as_ref().map(|a| a.get_ref().clone()),
                bootstrap,
            });
        }
    }

    // IM&P clusters (SPEC HA3): at most six nodes in subclusters of at most two. Nodes that
    // name no subcluster pair up in declaration order (1, 1, 2, 2, 3, 3); the assignment is
    // the first member's.
    let imp_clusters: BTreeSet<String> = node_out
        .iter()
        .filter_map(|n| match &n.kind {
            NodeKind::Imp(c) => Some(c.cluster.clone()),
            _ => None,
        })
        .collect();
    for cluster in &imp_clusters {
        let members: Vec<usize> = (0..node_out.len())
            .filter(|&k| matches!(&node_out[k].kind, NodeKind::Imp(c) if c.cluster == *cluster))
            .collect();
        let first = &node_out[members[0]].name;
        let first = nodes.iter().find(|i| i.spec.name.get_ref() == first);
        let first = first.map(|i| (i.src, i.spec.name.span().start));
        let assignment = match &node_out[members[0]].kind {
            NodeKind::Imp(c) => c.assignment,
            _ => Assignment::Balanced,
        };
        let explicit = members
            .iter()
            .filter(|&&k| matches!(&node_out[k].kind, NodeKind::Imp(c) if c.subcluster != 0))
            .count();
        if explicit != 0
            && explicit != members.len()
            && let Some((src, pos)) = first
        {
            errs.push(src.err(
                pos,
                format!("IM&P cluster `{cluster}`: give every node a `subcluster`, or none"),
            ));
        }
        let mut per_sub: BTreeMap<u8, usize> = BTreeMap::new();
        for (j, &k) in members.iter().enumerate() {
            if let NodeKind::Imp(c) = &mut node_out[k].kind {
                if c.subcluster == 0 {
                    c.subcluster = (j / 2 + 1).min(3) as u8;
                }
                c.assignment = assignment;
                *per_sub.entry(c.subcluster).or_default() += 1;
            }
        }
        let too_many = members.len() > 6 || per_sub.values().any(|&n| n > 2);
        if too_many && let Some((src, pos)) = first {
            errs.push(src.err(
                pos,
                format!(
                    "IM&P cluster `{cluster}` has {} nodes: at most 6, two per subcluster (SPEC HA3)",
                    members.len()
                ),
            ));
        }
    }

    // SPEC CC7: the presence trunk names an IM&P node.
    for i in &nodes {
        let Some(t) = &i.spec.presence_trunk else { continue };
        let imp =
            node_out.iter().any(|n| &n.name == t.get_ref() && matches!(n.kind, NodeKind::Imp(_)));
        if !imp {
            errs.push(i.src.err(
                t.span().start,
                format!("presence_trunk `{}` is not an imp node", t.get_ref()),
            ));
        }
    }

    // Users: each on an existing cluster, ids unique.
    let clusters: BTreeSet<String> = node_out
        .iter()
        .filter_map(|n| match &n.kind {
            NodeKind::Cucm(c) => Some(c.cluster.clone()),
            _ => None,
        })
        .collect();
    let mut user_out = Vec::new();
    for i in &users {
        let u = &i.spec;
        if !valid_name(u.id.get_ref()) {
            errs.push(i.src.err(u.id.span().start, format!("bad user id `{}`", u.id.get_ref())));
        }
        if !clusters.contains(u.cluster.get_ref()) {
            errs.push(i.src.err(
                u.cluster.span().start,
                format!("unknown cluster `{}` (no cucm node has it)", u.cluster.get_ref()),
            ));
        }
        let id = u.id.get_ref().clone();
        let cap = |s: &str| {
            s.chars()
                .take(1)
                .flat_map(char::to_uppercase)
                .chain(s.chars().skip(1))
                .collect::<String>()
        };
        user_out.push(User {
            cluster: u.cluster.get_ref().clone(),
            password: u.password.clone().unwrap_or_else(|| "lab".into()),
            first_name: u.first_name.clone().unwrap_or_else(|| cap(&id)),
            last_name: u.last_name.clone().unwrap_or_else(|| "Lab".into()),
            extension: u.extension.clone().unwrap_or_default(),
            email: u.email.clone().unwrap_or_else(|| format!("{id}@{domain}")),
            devices: u
                .devices
                .clone()
                .unwrap_or_else(|| vec![format!("CSF{}", id.to_ascii_uppercase())]),
            config_file: u.config_file.clone(),
            contacts: u.contacts.iter().map(|c| c.get_ref().clone()).collect(),
            partition: u.partition.as_ref().map_or_else(
                || uclab_mocks::sip::DEFAULT_PARTITION.into(),
                |p| p.get_ref().clone(),
            ),
            subscribe_css: match u.subscribe_css.as_ref().map(|c| (c.span().start, c.get_ref())) {
                None => Some(vec![uclab_mocks::sip::DEFAULT_PARTITION.into()]),
                Some((_, CssSpec::List(l))) => Some(l.clone()),
                Some((_, CssSpec::Name(n))) if n == "<None>" => None,
                Some((at, CssSpec::Name(n))) => {
                    errs.push(i.src.err(
                        at,
                        format!("subscribe_css `{n}`: a list of partitions, or \"<None>\""),
                    ));
                    None
                }
            },
            presence_group: u.presence_group.as_ref().map_or_else(
                || uclab_mocks::sip::DEFAULT_PRESENCE_GROUP.into(),
                |g| g.get_ref().clone(),
            ),
            blf: u.blf.iter().map(|b| b.get_ref().clone()).collect(),
            id,
        });
        for b in &u.blf {
            if !uclab_mocks::sip::valid_extension(b.get_ref()) {
                errs.push(i.src.err(b.span().start, format!("bad BLF number `{}`", b.get_ref())));
            }
        }
    }
    // SPEC CC6: at most 30,000 BLF speed dials per cluster.
    let mut dials: BTreeMap<&str, usize> = BTreeMap::new();
    for u in &user_out {
        *dials.entry(u.cluster.as_str()).or_default() += u.blf.len();
    }
    for (c, n) in dials.into_iter().filter(|(_, n)| *n > uclab_mocks::sip::MAX_BLF) {
        errs.push(src.err(
            0,
            format!(
                "cluster `{c}` has {n} BLF speed dials; at most {} per cluster (SPEC CC6)",
                uclab_mocks::sip::MAX_BLF
            ),
        ));
    }
    // Contacts name users, and stay within the IM&P list limits (SPEC IMP3).
    let limits = node_out.iter().find_map(|n| match &n.kind {
        NodeKind::Imp(c) => Some(c.limits),
        _ => None,
    });
    let ids: BTreeSet<&str> = users.iter().map(|i| i.spec.id.get_ref().as_str()).collect();
    let mut watchers: BTreeMap<&str, usize> = BTreeMap::new();
    for i in &users {
        for c in &i.spec.contacts {
            if !ids.contains(c.get_ref().as_str()) || c.get_ref() == i.spec.id.get_ref() {
                errs.push(i.src.err(c.span().start, format!("unknown contact `{}`", c.get_ref())));
            }
            *watchers.entry(c.get_ref().as_str()).or_default() += 1;
        }
        if let Some(l) = limits.filter(|l| i.spec.contacts.len() > l.contacts) {
            errs.push(i.src.err(
                i.spec.id.span().start,
                format!(
                    "user `{}` has {} contacts; the contact list limit is {}",
                    i.spec.id.get_ref(),
                    i.spec.contacts.len(),
                    l.contacts
                ),
            ));
        }
    }
    // SPEC CAP3: an IM&P cluster's contact entries (every user's contacts) stay within its
    // budget of 45,000 users × 75.
    let entries: usize = users.iter().map(|i| i.spec.contacts.len()).sum();
    if limits.is_some() && entries > uclab_mocks::router::CONTACT_BUDGET {
        errs.push(src.err(
            0,
            format!(
                "the IM&P cluster holds {entries} contact entries; its budget is {} \
                 ({} users × {}, SPEC CAP3)",
                uclab_mocks::router::CONTACT_BUDGET,
                uclab_mocks::router::BUDGET_USERS,
                uclab_mocks::router::BUDGET_CONTACTS,
            ),
        ));
    }
    for i in &users {
        let n = watchers.get(i.spec.id.get_ref().as_str()).copied().unwrap_or(0);
        if let Some(l) = limits.filter(|l| n > l.watchers) {
            errs.push(i.src.err(
                i.spec.id.span().start,
                format!(
                    "user `{}` has {n} watchers; the watcher list limit is {}",
                    i.spec.id.get_ref(),
                    l.watchers
                ),
            ));
        }
    }

    // Timeline.
    let host_known = |n: &str| node_names.contains_key(n) || client_names.contains(n);
    let mut steps = Vec::new();
    // A step for `u*` is that step for every client whose name starts with `u`, spread evenly
    // over `spread` if given (a population signing in at a realistic rate).
    let mut file_steps = Vec::new();
    for s in &file.step {
        let Some(prefix) = s.client.as_ref().and_then(|c| c.get_ref().strip_suffix('*')) else {
            file_steps.push(s.clone());
            continue;
        };
        let matching: Vec<&str> =
            client_names.iter().copied().filter(|c| c.starts_with(prefix)).collect();
        let c = s.client.as_ref().expect("has a pattern");
        if matching.is_empty() {
            errs.push(src.err(c.span().start, format!("no client matches `{}`", c.get_ref())));
            continue;
        }
        let spread = match &s.spread {
            None => Duration::ZERO,
            Some(v) => match parse_duration(v.get_ref()) {
                Ok(d) => d,
                Err(m) => {
                    errs.push(src.err(v.span().start, m));
                    continue;
                }
            },
        };
        let base = parse_duration(s.at.get_ref()).ok();
        let m = matching.len() as u32;
        for (k, name) in matching.iter().enumerate() {
            let mut one = s.clone();
            one.client = Some(S::new(c.span(), (*name).to_owned()));
            one.spread = None;
            if let Some(b) = base {
                let at = b + spread * k as u32 / m;
                one.at = S::new(s.at.span(), format!("{}.{:09}s", at.as_secs(), at.subsec_nanos()));
            }
            file_steps.push(one);
        }
    }
    for s in &file_steps {
        if let Some(v) = &s.spread {
            errs.push(src.err(v.span().start, "`spread` needs a client pattern such as `u*`"));
        }
        let at = match parse_duration(s.at.get_ref()) {
            Ok(d) => d,
            Err(m) => {
                errs.push(src.err(s.at.span().start, m));
                continue;
            }
        };
        let need =
            |errs: &mut Vec<CheckError>, f: &Option<S<String>>, field: &str| -> Option<String> {
                match f {
                    Some(v) => Some(v.get_ref().clone()),
                    None => {
                        errs.push(src.err(
                            s.action.span().start,
                            format!("action `{}` needs `{field}`", s.action.get_ref()),
                        ));
                        None
                    }
                }
            };
        let host =
            |errs: &mut Vec<CheckError>, f: &Option<S<String>>, field: &str| -> Option<String> {
                let v = need(errs, f, field)?;
                let f = f.as_ref().expect("checked by need");
                if !host_known(&v) {
                    errs.push(src.err(f.span().start, format!("unknown host `{v}`")));
                    return None;
                }
                Some(v)
            };
        // The step's `client`: present and declared.
        let known_client = |errs: &mut Vec<CheckError>| -> Option<String> {
            let client = need(errs, &s.client, "client")?;
            if !client_names.contains(client.as_str()) {
                let at = s.client.as_ref().map_or(0, |c| c.span().start);
                errs.push(src.err(at, format!("unknown client `{client}`")));
                return None;
            }
            Some(client)
        };
        let action = match s.action.get_ref().as_str() {
            "discover" | "sign-in" => {
                let Some(client) = need(&mut errs, &s.client, "client") else { continue };
                let cs = s.client.as_ref().expect("checked");
                let Some(c) = client_out.iter().find(|c| c.name == client) else {
                    errs.push(src.err(cs.span().start, format!("unknown client `{client}`")));
                    continue;
                };
                // SPEC SD1: the provisioning URL's ServicesDomain, else the step's domain, else
                // the domain part of the typed address.
                let provision = match &s.url {
                    Some(u) => match uclab_proto::provision::parse(u.get_ref()) {
                        Ok(p) => Some(p),
                        Err(e) => {
                            errs.push(
                                src.err(u.span().start, format!("bad provisioning URL: {e}")),
                            );
                            continue;
                        }
                    },
                    None => None,
                };
                let from_url = provision.as_ref().and_then(|p| p.services_domain.clone());
                let domain = match (from_url, &s.domain, &c.address) {
                    (Some(d), _, _) => d,
                    (None, Some(d), _) => d.get_ref().clone(),
                    (None, None, Some(a)) => {
                        a.rsplit_once('@').map(|(_, d)| d.to_owned()).unwrap_or_default()
                    }
                    (None, None, None) => {
                        errs.push(src.err(
                            s.action.span().start,
                            format!("client `{client}` has no address: give the step a `domain`"),
                        ));
                        continue;
                    }
                };
                let discovery = DiscoveryConfig {
                    services_domain: domain,
                    voice_domain: provision.as_ref().and_then(|p| p.voice_services_domain.clone()),
                    excluded: provision.as_ref().and_then(|p| p.excluded).unwrap_or_default(),
                    no_discovery: provision.as_ref().is_some_and(|p| p.all_three()),
                    from_url: provision.is_some(),
                };
                if s.action.get_ref() == "discover" {
                    StepAction::Discover { client, discovery }
                } else {
                    // The user is the address's local part unless given; the password is the
                    // account's unless the step types another one (SPEC AU5 scenarios).
                    let user = match (&s.user, &c.address) {
                        (Some(u), _) => u.get_ref().clone(),
                        (None, Some(a)) => a.split('@').next().unwrap_or_default().to_owned(),
                        (None, None) => {
                            errs.push(src.err(
                                s.action.span().start,
                                format!("client `{client}` has no address: give the step a `user`"),
                            ));
                            continue;
                        }
                    };
                    let password = s
                        .password
                        .clone()
                        .or_else(|| {
                            user_out.iter().find(|u| u.id == user).map(|u| u.password.clone())
                        })
                        .unwrap_or_else(|| "lab".into());
                    StepAction::SignIn { client, discovery, user, password }
                }
            }
            kind @ ("message" | "subscribe" | "approve") => {
                use uclab_client::im::ImAction;
                let Some(client) = known_client(&mut errs) else { continue };
                let Some(to) = &s.to else {
                    errs.push(
                        src.err(s.action.span().start, format!("action `{kind}` needs `to`")),
                    );
                    continue;
                };
                let jid = to.get_ref();
                let ok = jid.split_once('@').is_some_and(|(u, d)| !u.is_empty() && !d.is_empty());
                let full = jid.contains('/');
                if !ok || (full && kind != "message") {
                    let want =
                        if kind == "message" { "user@domain[/resource]" } else { "user@domain" };
                    errs.push(
                        src.err(to.span().start, format!("bad JID `{jid}`: expected {want}")),
                    );
                    continue;
                }
                let to = jid.clone();
                let action = match (kind, &s.body) {
                    ("message", Some(body)) => ImAction::Message { to, body: body.clone() },
                    ("message", None) => {
                        errs.push(src.err(s.action.span().start, "action `message` needs `body`"));
                        continue;
                    }
                    ("subscribe", _) => ImAction::Subscribe { to },
                    _ => ImAction::Approve { to },
                };
                StepAction::Im { client, action }
            }
            "presence" => {
                let Some(client) = known_client(&mut errs) else { continue };
                const SHOWS: &[&str] = &["available", "away", "dnd", "xa", "chat", "unavailable"];
                let Some(show) = s.show.as_ref().filter(|v| SHOWS.contains(&v.get_ref().as_str()))
                else {
                    let at = s.show.as_ref().map_or(s.action.span().start, |v| v.span().start);
                    errs.push(src.err(
                        at,
                        format!("action `presence` needs `show`, one of {}", SHOWS.join(", ")),
                    ));
                    continue;
                };
                let action = uclab_client::im::ImAction::Presence { show: show.get_ref().clone() };
                StepAction::Im { client, action }
            }
            kind @ ("call" | "answer" | "end" | "hold" | "resume" | "mute" | "unmute" | "dtmf"
            | "transfer" | "conference" | "divert" | "park" | "video"
            | "send-to-mobile" | "watch") => {
                use uclab_client::call::CallAction;
                let Some(client) = known_client(&mut errs) else { continue };
                let action = match kind {
                    "call" | "watch" | "transfer" => {
                        let Some(to) = need(&mut errs, &s.to, "to") else { continue };
                        if !uclab_proto::sip::is_token(&to) {
                            let at = s.to.as_ref().map_or(0, |t| t.span().start);
                            errs.push(src.err(at, format!("bad number `{to}`")));
                            continue;
                        }
                        match kind {
                            "watch" => CallAction::Watch { to },
                            "transfer" => CallAction::Transfer { to },
                            _ => CallAction::Dial { to },
                        }
                    }
                    "answer" => CallAction::Answer,
                    "end" => CallAction::End,
                    "hold" => CallAction::Hold,
                    "resume" => CallAction::Resume,
                    "mute" => CallAction::Mute,
                    "unmute" => CallAction::Unmute,
                    "dtmf" => {
                        let Some(d) = need(&mut errs, &s.digits, "digits") else { continue };
                        let ok = !d.is_empty()
                            && d.chars().all(|c| c.is_ascii_digit() || "*#ABCD".contains(c));
                        if !ok {
                            let at = s.digits.as_ref().map_or(0, |t| t.span().start);
                            errs.push(src.err(at, format!("bad digits `{d}` (0-9, *, #, A-D)")));
                            continue;
                        }
                        let info = match s.method.as_ref().map(|m| m.get_ref().as_str()) {
                            None | Some("rfc4733") => false,
                            Some("info") => true,
                            Some(other) => {
                                let at = s.method.as_ref().map_or(0, |t| t.span().start);
                                errs.push(src.err(
                                    at,
                                    format!("unknown DTMF method `{other}` (rfc4733, info)"),
                                ));
                                continue;
                            }
                        };
                        CallAction::Dtmf { digits: d, info }
                    }
                    other => CallAction::Feature { name: other.to_owned() },
                };
                StepAction::Call { client, action }
            }
            kind @ ("join" | "leave" | "room-message") => {
                use uclab_client::im::ImAction;
                let Some(client) = known_client(&mut errs) else { continue };
                let Some(room) = need(&mut errs, &s.room, "room") else { continue };
                let ok = room.split_once('@').is_some_and(|(u, d)| {
                    !u.is_empty() && !d.is_empty() && !d.contains(['/', '@'])
                });
                if !ok {
                    let at = s.room.as_ref().map_or(0, |r| r.span().start);
                    errs.push(src.err(at, format!("bad room `{room}`: expected room@service")));
                    continue;
                }
                match kind {
                    "join" => {
                        let nick =
                            s.nick.as_ref().map_or_else(|| client.clone(), |n| n.get_ref().clone());
                        let action = ImAction::Join {
                            room,
                            nick,
                            persistent: s.persistent,
                            history: s.history,
                        };
                        StepAction::Im { client, action }
                    }
                    "leave" => StepAction::Im { client, action: ImAction::Leave { room } },
                    _ => {
                        let Some(body) = &s.body else {
                            errs.push(
                                src.err(
                                    s.action.span().start,
                                    "action `room-message` needs `body`",
                                ),
                            );
                            continue;
                        };
                        // SPEC IMP5 history limits: `count` numbered messages ("body 1", …).
                        let n = match &s.count {
                            None => None,
                            Some(c) if (1..=10_000).contains(c.get_ref()) => Some(*c.get_ref()),
                            Some(c) => {
                                errs.push(src.err(c.span().start, "count must be 1 to 10000"));
                                continue;
                            }
                        };
                        let numbered = |i: u32| match n {
                            Some(_) => format!("{body} {i}"),
                            None => body.clone(),
                        };
                        let last = n.unwrap_or(1);
                        for i in 1..last {
                            let action =
                                ImAction::RoomMessage { room: room.clone(), body: numbered(i) };
                            steps.push(Step {
                                at,
                                action: StepAction::Im { client: client.clone(), action },
                            });
                        }
                        let action = ImAction::RoomMessage { room, body: numbered(last) };
                        StepAction::Im { client, action }
                    }
                }
            }
            "move" => {
                let Some(client) = known_client(&mut errs) else { continue };
                let (Some(zone), Some(dns)) = (&s.zone, &s.dns) else {
                    errs.push(
                        src.err(s.action.span().start, "action `move` needs `zone` and `dns`"),
                    );
                    continue;
                };
                check_zone(&mut errs, &src, zone);
                for d in dns {
                    check_node(&mut errs, &src, d, Some("dns"));
                }
                StepAction::Move {
                    client,
                    zone: zone.get_ref().clone(),
                    dns: dns.iter().map(|d| d.get_ref().clone()).collect(),
                }
            }
            "install" => {
                let Some(client) = known_client(&mut errs) else { continue };
                let Some(map) = &s.bootstrap else {
                    errs.push(src.err(s.action.span().start, "action `install` needs `bootstrap`"));
                    continue;
                };
                let bootstrap = bootstrap_switches(&mut errs, &src, s.action.span().start, map);
                StepAction::Install { client, bootstrap }
            }
            a @ ("crash" | "restart") => {
                let Some(node) = need(&mut errs, &s.node, "node") else { continue };
                check_node(&mut errs, &src, s.node.as_ref().expect("checked"), None);
                if a == "crash" { StepAction::Crash { node } } else { StepAction::Restart { node } }
            }
            a @ ("blackhole" | "heal" | "partition" | "repair" | "latency" | "loss") => {
                let (Some(x), Some(y)) = (host(&mut errs, &s.a, "a"), host(&mut errs, &s.b, "b"))
                else {
                    continue;
                };
                match a {
                    "blackhole" => StepAction::Blackhole { a: x, b: y },
                    "heal" => StepAction::Heal { a: x, b: y },
                    "partition" => StepAction::Partition { a: x, b: y },
                    "repair" => StepAction::Repair { a: x, b: y },
                    "latency" => {
                        let Some(v) = &s.value else {
                            errs.push(
                                src.err(s.action.span().start, "action `latency` needs `value`"),
                            );
                            continue;
                        };
                        match parse_duration(v.get_ref()) {
                            Ok(value) => StepAction::Latency { a: x, b: y, value },
                            Err(m) => {
                                errs.push(src.err(v.span().start, m));
                                continue;
                            }
                        }
                    }
                    _ => match s.probability {
                        Some(p) if (0.0..=1.0).contains(&p) => {
                            StepAction::Loss { a: x, b: y, probability: p }
                        }
                        _ => {
                            errs.push(src.err(
                                s.action.span().start,
                                "action `loss` needs `probability` between 0 and 1",
                            ));
                            continue;
                        }
                    },
                }
            }
            "firewall" => {
                let (Some(from), Some(to), Some(verdict)) = (&s.from, &s.to, &s.verdict) else {
                    errs.push(src.err(
                        s.action.span().start,
                        "action `firewall` needs `from`, `to` and `verdict`",
                    ));
                    continue;
                };
                check_zone(&mut errs, &src, from);
                check_zone(&mut errs, &src, to);
                let action = match parse_action(verdict) {
                    Ok(a) => a,
                    Err(m) => {
                        errs.push(src.err(verdict.span().start, m));
                        continue;
                    }
                };
                let proto = s.proto.as_ref().map(|p| check_proto(&mut errs, &src, p));
                StepAction::Firewall(Rule {
                    from: from.get_ref().clone(),
                    to: to.get_ref().clone(),
                    port: s.port,
                    proto,
                    action,
                })
            }
            other => {
                errs.push(src.err(
                    s.action.span().start,
                    format!("unknown action `{other}` (discover, sign-in, install, move, message, subscribe, approve, presence, join, leave, room-message, call, answer, end, hold, resume, mute, unmute, dtmf, transfer, conference, video, watch, crash, restart, blackhole, heal, partition, repair, latency, loss, firewall)"),
                ));
                continue;
            }
        };
        steps.push(Step { at, action });
    }
    steps.sort_by_key(|s| s.at);

    // Expectations.
    let mut expects = Vec::new();
    for e in &file.expect {
        let known = match e.client.get_ref().strip_suffix('*') {
            Some(prefix) => client_names.iter().any(|c| c.starts_with(prefix)),
            None => client_names.contains(e.client.get_ref().as_str()),
        };
        if !known {
            errs.push(
                src.err(e.client.span().start, format!("unknown client `{}`", e.client.get_ref())),
            );
        }
        if !EVENT_KINDS.contains(&e.event.get_ref().as_str()) {
            errs.push(src.err(
                e.event.span().start,
                format!(
                    "unknown event `{}` (known: {})",
                    e.event.get_ref(),
                    EVENT_KINDS.join(", ")
                ),
            ));
        }
        // Issue 14: a field the event never carries can never match.
        if let Some(known) = uclab_client::event::ClientEvent::field_names(e.event.get_ref()) {
            for k in e.fields.keys().filter(|k| !known.contains(&k.get_ref().as_str())) {
                let hint = did_you_mean(k.get_ref(), &known)
                    .map(|m| format!("; did you mean `{m}`?"))
                    .unwrap_or_default();
                errs.push(src.err(
                    k.span().start,
                    format!(
                        "`{}` events have no field `{}` (they have {}){hint}",
                        e.event.get_ref(),
                        k.get_ref(),
                        known.join(", ")
                    ),
                ));
            }
        }
        if e.absent && e.count.is_some() {
            errs.push(src.err(
                e.event.span().start,
                "`count` and `absent` do not go together (absent is count 0)",
            ));
        }
        let after = match &e.after {
            Some(a) => match parse_duration(a.get_ref()) {
                Ok(d) => d,
                Err(m) => {
                    errs.push(src.err(a.span().start, m));
                    Duration::ZERO
                }
            },
            None => Duration::ZERO,
        };
        match parse_duration(e.within.get_ref()) {
            Ok(within) if within < after => {
                errs.push(src.err(e.within.span().start, "`within` is before `after`"));
            }
            Ok(within) => expects.push(Expect {
                client: e.client.get_ref().clone(),
                event: e.event.get_ref().clone(),
                fields: e.fields.iter().map(|(k, v)| (k.get_ref().clone(), v.clone())).collect(),
                within,
                after,
                absent: e.absent,
                count: e.count,
                line: src.pos(e.client.span().start).0,
            }),
            Err(m) => errs.push(src.err(e.within.span().start, m)),
        }
    }

    let duration = match &file.duration {
        Some(d) => parse_duration(d.get_ref()).unwrap_or_else(|m| {
            errs.push(src.err(d.span().start, m));
            Duration::ZERO
        }),
        None => Duration::from_secs(120),
    };
    let latency = match latency {
        Some((s, l)) => parse_duration(l.get_ref()).unwrap_or_else(|m| {
            errs.push(s.err(l.span().start, m));
            Duration::ZERO
        }),
        None => Duration::from_millis(1),
    };
    let epoch = match &file.epoch {
        None => DEFAULT_EPOCH,
        Some(dt) => match match dt.get_ref() {
            EpochSpec::Datetime(d) => epoch_of(d),
            EpochSpec::Text(t) => t
                .parse::<toml::value::Datetime>()
                .map_err(|_| format!("`{t}` is not an RFC 3339 time (e.g. 2026-01-05T09:00:00Z)"))
                .and_then(|d| epoch_of(&d)),
        } {
            Ok(e) => e,
            Err(m) => {
                errs.push(src.err(dt.span().start, m));
                DEFAULT_EPOCH
            }
        },
    };
    for s in &file.spec {
        if !is_spec_id(s.get_ref()) {
            errs.push(src.err(
                s.span().start,
                format!("`{}` is not a SPEC id (e.g. SD5, HA1)", s.get_ref()),
            ));
        }
    }
    if let Some(n) = &file.name
        && !valid_name(n.get_ref())
    {
        errs.push(src.err(n.span().start, "bad scenario name: use letters, digits and -"));
    }

    if !errs.is_empty() || !schema.is_empty() {
        return Err(without_cascades(schema, errs, &src, &broken));
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "scenario".into());
    Ok(Scenario {
        file: path.to_path_buf(),
        name: file.name.map(|n| n.into_inner()).unwrap_or(stem),
        summary: file.summary.unwrap_or_default(),
        spec: file.spec.into_iter().map(|s| s.into_inner()).collect(),
        seed: file.seed.unwrap_or(1),
        epoch,
        duration,
        heavy: file.heavy,
        latency,
        zones: zone_out,
        rules: rule_out,
        nodes: node_out,
        clients: client_out,
        users: user_out,
        domain,
        steps,
        expects,
    })
}

/// A CUCM node's credential policy lockout (issue 13): `failed_logon` (1–100, 0 for no
/// limit) turns it on; `failed_logon_reset` and `lockout_duration` default to the product's 30
/// minutes.
fn credential_policy(
    n: &NodeSpec,
    src: &Src<'_>,
    errs: &mut Vec<CheckError>,
) -> Option<uclab_mocks::lockout::CredentialPolicy> {
    let mut p = uclab_mocks::lockout::CredentialPolicy::default();
    let Some(f) = &n.failed_logon else {
        for d in [&n.failed_logon_reset, &n.lockout_duration].into_iter().flatten() {
            errs.push(
                src.err(d.span().start, "needs failed_logon (the number of failures that locks)"),
            );
        }
        return None;
    };
    if *f.get_ref() > 100 {
        errs.push(src.err(f.span().start, "failed_logon must be 0 (no limit) to 100"));
    }
    p.failed_logon = *f.get_ref();
    for (field, d) in
        [(&mut p.reset_after, &n.failed_logon_reset), (&mut p.lockout, &n.lockout_duration)]
    {
        if let Some(d) = d {
            match parse_duration(d.get_ref()) {
                Ok(v) if v > Duration::ZERO => *field = v,
                Ok(_) => errs.push(src.err(d.span().start, "must be longer than 0s")),
                Err(m) => errs.push(src.err(d.span().start, m)),
            }
        }
    }
    Some(p)
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 63
        && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn is_spec_id(s: &str) -> bool {
    let letters = s.chars().take_while(char::is_ascii_uppercase).count();
    letters >= 2 && s.len() > letters && s[letters..].chars().all(|c| c.is_ascii_digit())
}

fn check_proto(errs: &mut Vec<CheckError>, src: &Src<'_>, p: &S<String>) -> String {
    if !matches!(p.get_ref().as_str(), "tcp" | "udp") {
        errs.push(src.err(p.span().start, format!("unknown proto `{}` (tcp, udp)", p.get_ref())));
    }
    p.get_ref().clone()
}

fn parse_action(a: &S<String>) -> Result<Action, String> {
    match a.get_ref().as_str() {
        "allow" => Ok(Action::Allow),
        "reject" => Ok(Action::Reject),
        "drop" => Ok(Action::Drop),
        o => Err(format!("unknown firewall action `{o}` (allow, reject, drop)")),
    }
}

fn parse_subnet(s: &str) -> Result<(IpAddr, u8), String> {
    let (a, p) =
        s.split_once('/').ok_or_else(|| format!("bad subnet `{s}`: expected a.b.c.d/len"))?;
    let a: Ipv4Addr = a.parse().map_err(|_| format!("bad subnet `{s}`: bad address"))?;
    let p: u8 = p
        .parse()
        .ok()
        .filter(|p| *p <= 30)
        .ok_or_else(|| format!("bad subnet `{s}`: prefix must be 0..=30"))?;
    Ok((IpAddr::V4(a), p))
}

fn epoch_of(dt: &toml::value::Datetime) -> Result<Duration, String> {
    let (Some(d), Some(t)) = (dt.date, dt.time) else {
        return Err("epoch needs a date and a time, e.g. 2026-01-05T09:00:00Z".into());
    };
    if !matches!(dt.offset, Some(toml::value::Offset::Z)) {
        return Err("epoch must be in UTC (end it with Z)".into());
    }
    let days = days_from_civil(i64::from(d.year), u32::from(d.month), u32::from(d.day));
    if days < 0 {
        return Err("epoch must be after 1970".into());
    }
    let secs = days as u64 * 86_400
        + u64::from(t.hour) * 3600
        + u64::from(t.minute) * 60
        + u64::from(t.second);
    Ok(Duration::from_secs(secs))
}

/// The file offset of line `line` (1-based) of a string literal starting at `start`.
fn records_offset(text: &str, start: usize, line: Option<usize>) -> usize {
    let Some(line) = line else { return start };
    let lit = &text[start.min(text.len())..];
    // A multi-line basic or literal string drops a newline right after the opening quotes.
    let skip = if lit.starts_with("\"\"\"\n") || lit.starts_with("'''\n") {
        4
    } else if lit.starts_with('"') || lit.starts_with('\'') {
        1
    } else {
        0
    };
    let body = start + skip;
    let mut off = body;
    for _ in 1..line {
        match text[off..].find('\n') {
            Some(i) => off += i + 1,
            None => break,
        }
    }
    off
}

/// Installer switches from a `bootstrap` table (WIRE.md); unknown switches are errors at `at`.
fn bootstrap_switches(
    errs: &mut Vec<CheckError>,
    src: &Src<'_>,
    at: usize,
    map: &BTreeMap<String, String>,
) -> uclab_client::driver::Bootstrap {
    for k in map.keys() {
        if !BOOTSTRAP_SWITCHES.contains(&k.as_str()) {
            errs.push(src.err(
                at,
                format!(
                    "unknown bootstrap switch `{k}` (known: {})",
                    BOOTSTRAP_SWITCHES.join(", ")
                ),
            ));
        }
    }
    // Switches the lab knows but does not model: refused rather than silently ignored.
    for k in ["CUP_ADDRESS", "CTI", "UPN_DISCOVERY_ENABLED"] {
        if map.contains_key(k) {
            errs.push(src.err(at, format!("bootstrap switch `{k}` is not modelled yet")));
        }
    }
    let sw = |k: &str| map.get(k).cloned();
    if let Some(a) = sw("AUTHENTICATOR") {
        let phone = sw("PRODUCT_MODE").is_some_and(|p| p.eq_ignore_ascii_case("phone_mode"));
        let cucm = sw("CCMCIP").or(sw("TFTP")).is_some();
        if !(a.eq_ignore_ascii_case("CUCM") && phone && cucm) {
            errs.push(src.err(
                at,
                format!(
                    "bootstrap AUTHENTICATOR={a} is modelled only as SPEC SD9 phone mode \
                     (AUTHENTICATOR=CUCM, PRODUCT_MODE=phone_mode, CCMCIP or TFTP)"
                ),
            ));
        }
    }
    let excluded = match sw("EXCLUDED_SERVICES").map(|v| uclab_proto::provision::parse_excluded(&v))
    {
        Some(Ok(e)) => Some(e),
        Some(Err(e)) => {
            errs.push(src.err(at, format!("bootstrap EXCLUDED_SERVICES: {e}")));
            None
        }
        None => None,
    };
    uclab_client::driver::Bootstrap {
        services_domain: sw("SERVICES_DOMAIN"),
        voice_services_domain: sw("VOICE_SERVICES_DOMAIN"),
        excluded,
        authenticator: sw("AUTHENTICATOR"),
        ccmcip: sw("CCMCIP"),
        tftp: sw("TFTP"),
        product_mode: sw("PRODUCT_MODE"),
        tftp_file_name: sw("TFTP_FILE_NAME"),
        clear: sw("CLEAR")
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<Scenario, Vec<CheckError>> {
        parse("t.toml", text, Path::new("t.toml"))
    }

    fn first_err(text: &str) -> String {
        check(text).unwrap_err()[0].to_string()
    }

    /// Every error, one per line, in the order reported (line order).
    fn all_errs(text: &str) -> String {
        check(text).unwrap_err().iter().map(|e| format!("{e}\n")).collect()
    }

    #[test]
    fn presence_trunk_fields_are_checked() {
        let node = "[[node]]\nname = \"cucm1\"\nkind = \"cucm\"\nzone = \"inside\"\n\
                    ip = \"10.1.0.11\"\ncluster = \"cluster1\"\n";
        let e = first_err(&format!("{node}presence_trunk = \"dns-int\"\n"));
        assert!(e.starts_with("t.toml:7:18: presence_trunk `dns-int` is not an imp node"), "{e}");
        let e = first_err(&format!(
            "{node}presence_trunk = \"imp1\"\npresence_trunk_mode = \"carrier-pigeon\"\n"
        ));
        assert!(
            e.contains("unknown presence_trunk_mode `carrier-pigeon` (publish, subscribe)"),
            "{e}"
        );
        let ok = format!("{node}presence_trunk = \"imp1\"\npresence_trunk_mode = \"subscribe\"\n");
        let s = check(&ok).unwrap();
        let cucm = s.nodes.iter().find(|n| n.name == "cucm1").unwrap();
        assert!(matches!(&cucm.kind, NodeKind::Cucm(c) if !c.publish_trunk));
    }

    #[test]
    fn default_topology_is_valid() {
        let s = check("").unwrap();
        assert!(s.nodes.iter().any(|n| n.name == "dns-int"));
        assert!(s.nodes.iter().any(|n| n.name == "dns-ext"));
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        assert!(first_err("name = \"x\"\nseed = \n").starts_with("t.toml:2:"));
    }

    #[test]
    fn unknown_node_kind() {
        let e = first_err("[[node]]\nname = \"x\"\nkind = \"teleporter\"\nzone = \"inside\"\n");
        assert!(e.starts_with("t.toml:3:8: unknown node kind `teleporter`"), "{e}");
    }

    #[test]
    fn unknown_reference() {
        let e =
            first_err("[[client]]\nname = \"bob\"\nzone = \"inside\"\ndns = [\"dns-nowhere\"]\n");
        assert!(e.starts_with("t.toml:4:8: unknown node `dns-nowhere`"), "{e}");
    }

    #[test]
    fn bad_duration() {
        let e = first_err("[[step]]\nat = \"soon\"\naction = \"crash\"\nnode = \"dns-int\"\n");
        assert!(e.starts_with("t.toml:2:6: bad duration"), "{e}");
    }

    #[test]
    fn bad_zone_text_points_into_the_records() {
        let text = "[[node]]\nname = \"d\"\nkind = \"dns\"\nzone = \"inside\"\n[[node.authority]]\norigin = \"x.test\"\nrecords = \"\"\"\nok 60 IN A 10.0.0.1\nbad 60 IN A nonsense\n\"\"\"\n";
        let e = first_err(text);
        // Line 9 is `bad 60 IN A nonsense`.
        assert!(e.starts_with("t.toml:9:1: bad zone text"), "{e}");
    }

    #[test]
    fn unknown_field_is_reported() {
        let e =
            all_errs("[[expect]]\nclient = \"a\"\nevent = \"x\"\nwithin = \"1s\"\nwhithin = 2\n");
        assert!(e.contains("t.toml:5:1: unknown field `whithin` (did you mean `within`?)"), "{e}");
        // Every error, in line order: the schema error does not hide the others.
        assert!(
            e.starts_with("t.toml:2:10: unknown client `a`\nt.toml:3:9: unknown event `x`"),
            "{e}"
        );
    }

    #[test]
    fn cfg_and_broken_xml_fields_are_checked() {
        let node =
            "[[node]]\nname = \"cucm1\"\nkind = \"cucm\"\nzone = \"inside\"\ncluster = \"c\"\n";
        let e = first_err(&format!("{node}broken_xml = {{ uds = \"gibberish\" }}\n"));
        assert!(e.starts_with("t.toml:6:22: unknown broken_xml `gibberish`"), "{e}");
        let e = first_err(&format!("{node}broken_xml = {{ cas = \"truncated\" }}\n"));
        assert!(e.starts_with("t.toml:6:22: node `cucm1` has no XML service `cas`"), "{e}");
        let e = first_err(&format!("{node}jabber_config = {{ \"a b\" = \"1\" }}\n"));
        assert!(e.contains("bad jabber_config parameter name `a b`"), "{e}");
        let e = first_err(
            "[[step]]\nat = \"1s\"\naction = \"install\"\nclient = \"alice\"\nbootstrap = { NOPE = \"1\" }\n",
        );
        assert!(e.starts_with("t.toml:3:10: unknown bootstrap switch `NOPE`"), "{e}");
        let e = first_err(
            "[[step]]\nat = \"1s\"\naction = \"install\"\nclient = \"alice\"\nbootstrap = { CTI = \"x\" }\n",
        );
        assert!(e.contains("bootstrap switch `CTI` is not modelled yet"), "{e}");
        let e = first_err(
            "[[step]]\nat = \"1s\"\naction = \"install\"\nclient = \"alice\"\nbootstrap = { AUTHENTICATOR = \"CUP\" }\n",
        );
        assert!(e.contains("AUTHENTICATOR=CUP is modelled only as SPEC SD9"), "{e}");
        let e = first_err(
            "[[step]]\nat = \"1s\"\naction = \"install\"\nclient = \"alice\"\nbootstrap = { EXCLUDED_SERVICES = \"FAX\" }\n",
        );
        assert!(e.contains("unknown excluded service `FAX`"), "{e}");
        let e = first_err(
            "[[step]]\nat = \"1s\"\naction = \"message\"\nclient = \"nobody\"\nto = \"a@b\"\nbody = \"x\"\n",
        );
        assert!(e.starts_with("t.toml:4:10: unknown client `nobody`"), "{e}");
        let e = first_err(
            "[[step]]\nat = \"1s\"\naction = \"message\"\nclient = \"alice\"\nto = \"bob\"\nbody = \"x\"\n",
        );
        assert!(e.starts_with("t.toml:5:6: bad JID `bob`"), "{e}");
        let e = first_err(
            "[[step]]\nat = \"1s\"\naction = \"move\"\nclient = \"alice\"\nzone = \"mars\"\ndns = [\"dns-ext\"]\n",
        );
        assert!(e.starts_with("t.toml:5:8: unknown zone `mars`"), "{e}");
        let e = first_err("[[step]]\nat = \"1s\"\naction = \"install\"\nclient = \"alice\"\n");
        assert!(e.starts_with("t.toml:3:10: action `install` needs `bootstrap`"), "{e}");
    }

    #[test]
    fn imp_cluster_and_contact_fields_are_checked() {
        let imp = |name: &str, extra: &str| {
            format!(
                "[[node]]\nname = \"{name}\"\nkind = \"imp\"\nzone = \"inside\"\ncluster = \"imp-cluster1\"\n{extra}"
            )
        };
        let e = all_errs(&imp("imp1", "subcluster = 4\n"));
        assert!(e.contains("t.toml:6:14: subcluster 4 out of range"), "{e}");
        let e = first_err(&imp("imp1", "assignment = \"random\"\n"));
        assert!(e.starts_with("t.toml:6:14: unknown assignment `random`"), "{e}");
        // Seven nodes: too many for three subclusters of two (SPEC HA3).
        let seven: String = (3..=7).map(|i| imp(&format!("imp{i}"), "")).collect();
        let e = all_errs(&seven);
        assert!(e.contains("has 7 nodes: at most 6"), "{e}");
        let e = first_err(&imp("imp3", "subcluster = 1\n"));
        assert!(e.contains("give every node a `subcluster`, or none"), "{e}");
        // Contact lists name users and stay inside the limits (SPEC IMP3).
        let e =
            first_err("[[user]]\nid = \"erin\"\ncluster = \"cluster1\"\ncontacts = [\"zed\"]\n");
        assert!(e.starts_with("t.toml:4:13: unknown contact `zed`"), "{e}");
        let e = first_err(&imp("imp1", "contact_limit = 1\n"));
        assert!(e.contains("user `alice` has 2 contacts; the contact list limit is 1"), "{e}");
        // SPEC CAP3: 17,000 users × 199 contacts is 3,383,000 entries, beyond 45,000 × 75.
        let e = first_err(
            "[[population]]\nprefix = \"u\"\ncount = 17000\ncluster = \"cluster1\"\ncontacts = 199\n\
             zone = \"inside\"\ndns = [\"dns-int\"]\nsubnet = \"10.1.128.0/17\"\n",
        );
        assert!(
            e.contains(
                "holds 3383004 contact entries; its budget is 3375000 (45000 users × 75, SPEC CAP3)"
            ),
            "{e}"
        );
        let e = first_err(
            "[[step]]\nat = \"1s\"\naction = \"presence\"\nclient = \"alice\"\nshow = \"sleepy\"\n",
        );
        assert!(e.starts_with("t.toml:5:8: action `presence` needs `show`"), "{e}");
        let e = first_err(
            "[[step]]\nat = \"1s\"\naction = \"subscribe\"\nclient = \"alice\"\nto = \"bob@example.com/x\"\n",
        );
        assert!(
            e.starts_with("t.toml:5:6: bad JID `bob@example.com/x`: expected user@domain"),
            "{e}"
        );
        // Group chat (SPEC IMP5): the database is a chatdb node, limits are at least 1, rooms
        // are room@service, numbered messages are bounded.
        let e = first_err(&imp("imp1", "chat_db = \"dns-int\"\n"));
        assert!(e.starts_with("t.toml:6:11: node `dns-int` is not a chatdb node"), "{e}");
        let e = first_err(&imp("imp1", "occupant_limit = 0\n"));
        assert!(e.starts_with("t.toml:6:18: occupant_limit must be at least 1"), "{e}");
        let e = first_err(
            "[[step]]\nat = \"1s\"\naction = \"join\"\nclient = \"alice\"\nroom = \"team\"\n",
        );
        assert!(e.starts_with("t.toml:5:8: bad room `team`: expected room@service"), "{e}");
        let e = first_err(
            "[[step]]\nat = \"1s\"\naction = \"room-message\"\nclient = \"alice\"\nroom = \"t@c.example.com\"\nbody = \"x\"\ncount = 0\n",
        );
        assert!(e.starts_with("t.toml:7:9: count must be 1 to 10000"), "{e}");
        let e = first_err("[[step]]\nat = \"1s\"\naction = \"leave\"\nclient = \"alice\"\n");
        assert!(e.starts_with("t.toml:3:10: action `leave` needs `room`"), "{e}");
    }

    #[test]
    fn random_mutations_never_panic() {
        let base = include_str!("default_topology.toml");
        let mut x: u64 = 0x1234_5678_9abc_def1;
        for _ in 0..300 {
            let mut b = base.as_bytes().to_vec();
            for _ in 0..3 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x as usize) % b.len();
                b[i] = b"=[]\"\n ax1.#"[(x >> 20) as usize % 11];
            }
            let t = String::from_utf8_lossy(&b);
            let _ = parse("m.toml", &t, Path::new("m.toml"));
        }
    }
}
