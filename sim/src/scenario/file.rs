//! The scenario file as written: the serde structs TOML is read into, with the spans that
//! errors point at. A new section or field of the format starts here (and in
//! `scenarios/README.md`); the checks that turn it into the model live in the sibling files.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

pub(super) type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    pub(super) name: Option<S<String>>,
    pub(super) summary: Option<String>,
    #[serde(default)]
    pub(super) spec: Vec<S<String>>,
    pub(super) seed: Option<u64>,
    pub(super) epoch: Option<S<EpochSpec>>,
    pub(super) duration: Option<S<String>>,
    #[serde(default)]
    pub(super) heavy: bool,
    pub(super) topology: Option<S<String>>,
    pub(super) domain: Option<S<String>>,
    pub(super) network: Option<NetworkSpec>,
    #[serde(default)]
    pub(super) zone: Vec<ZoneSpec>,
    #[serde(default)]
    pub(super) rule: Vec<RuleSpec>,
    #[serde(default)]
    pub(super) node: Vec<NodeSpec>,
    #[serde(default)]
    pub(super) client: Vec<ClientSpec>,
    #[serde(default)]
    pub(super) user: Vec<UserSpec>,
    #[serde(default)]
    pub(super) population: Vec<PopulationSpec>,
    #[serde(default)]
    pub(super) step: Vec<StepSpec>,
    #[serde(default)]
    pub(super) expect: Vec<ExpectSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NetworkSpec {
    pub(super) latency: Option<S<String>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ZoneSpec {
    pub(super) name: S<String>,
    pub(super) subnet: S<String>,
}

/// `epoch`: a TOML date-time, or the same as a quoted RFC 3339 string (issue 14).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum EpochSpec {
    Datetime(toml::value::Datetime),
    Text(String),
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RuleSpec {
    pub(super) from: S<String>,
    pub(super) to: S<String>,
    /// One word for verdicts, as the firewall step's (issue 14); `action` is the older name.
    #[serde(alias = "action")]
    pub(super) verdict: S<String>,
    pub(super) port: Option<u16>,
    pub(super) proto: Option<S<String>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuthoritySpec {
    pub(super) origin: S<String>,
    pub(super) records: S<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NodeSpec {
    pub(super) name: S<String>,
    pub(super) kind: Option<S<String>>,
    pub(super) zone: Option<S<String>>,
    pub(super) ip: Option<S<String>>,
    #[serde(default)]
    pub(super) remove: bool,
    #[serde(default)]
    pub(super) authority: Vec<AuthoritySpec>,
    pub(super) forward: Option<S<String>>,
    #[serde(default)]
    pub(super) listen: Vec<u16>,
    pub(super) fqdn: Option<S<String>>,
    #[serde(default)]
    pub(super) webex_domains: Vec<String>,
    pub(super) cluster: Option<S<String>>,
    pub(super) version: Option<String>,
    pub(super) product_type: Option<S<String>>,
    #[serde(default)]
    pub(super) imp_servers: Vec<String>,
    pub(super) srst: Option<S<String>>,
    #[serde(default)]
    pub(super) overloaded: bool,
    #[serde(default)]
    pub(super) sip_digest: bool,
    pub(super) failed_logon: Option<S<u32>>,
    pub(super) failed_logon_reset: Option<S<String>>,
    pub(super) lockout_duration: Option<S<String>>,
    pub(super) media_ports: Option<S<[u16; 2]>>,
    pub(super) sip_transport: Option<S<String>>,
    #[serde(default)]
    pub(super) presence_groups: Vec<GroupRuleSpec>,
    pub(super) inter_presence_group_policy: Option<S<String>>,
    pub(super) presence_trunk: Option<S<String>>,
    pub(super) presence_trunk_mode: Option<S<String>>,
    #[serde(default)]
    pub(super) broken_xml: BTreeMap<String, S<String>>,
    pub(super) relogin_lower: Option<u32>,
    pub(super) relogin_upper: Option<u32>,
    pub(super) contact_limit: Option<usize>,
    pub(super) watcher_limit: Option<usize>,
    pub(super) subcluster: Option<S<u8>>,
    pub(super) assignment: Option<S<String>>,
    #[serde(default)]
    pub(super) persistent_chat: bool,
    pub(super) chat_db: Option<S<String>>,
    pub(super) room_limit: Option<S<usize>>,
    pub(super) persistent_room_limit: Option<S<usize>>,
    pub(super) occupant_limit: Option<S<usize>>,
    pub(super) profile: Option<BTreeMap<String, String>>,
    pub(super) jabber_config: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub(super) group_files: BTreeMap<String, BTreeMap<String, String>>,
    /// expressway-c: its expressway-e nodes (SPEC MRA1).
    pub(super) edge: Option<Vec<S<String>>>,
    /// expressway-c: the internal DNS node it resolves through.
    pub(super) dns: Option<S<String>>,
    /// expressway-c: lifetime of an `X-Auth` token.
    pub(super) token_lifetime: Option<S<String>>,
    /// expressway-c: `home` (default) or `empty` (the `userUdsServer` field fault).
    pub(super) user_uds: Option<S<String>>,
    /// expressway-c: HTTP allow-list rules beside the automatic ones.
    #[serde(default)]
    pub(super) allow: Vec<AllowSpec>,
    /// expressway-e: its certificate's names (default: its FQDN and the domain).
    pub(super) san: Option<S<Vec<String>>>,
    /// expressway-e: the FQDN the traversal client's certificate must carry.
    pub(super) traversal_peer: Option<S<String>>,
    /// imp: a federation-enabled node (SPEC FED1).
    #[serde(default)]
    pub(super) federation: bool,
    /// imp, xmpp-domain: Server Dialback offered and used (default true).
    pub(super) dialback: Option<bool>,
    /// imp, xmpp-domain: SASL EXTERNAL offered and used (default true).
    pub(super) sasl_external: Option<bool>,
    /// imp, xmpp-domain: the dialback secret.
    pub(super) dialback_secret: Option<S<String>>,
    /// imp, xmpp-domain: SPEC FED4 static routes, domain → `host:port` or node name.
    #[serde(default)]
    pub(super) static_routes: BTreeMap<String, S<String>>,
    /// imp, xmpp-domain: SPEC FED5 `open` (default), `allow` or `block`.
    pub(super) federation_policy: Option<S<String>>,
    /// imp, xmpp-domain: the domains `allow` or `block` names.
    #[serde(default)]
    pub(super) federation_domains: Vec<String>,
    /// xmpp-domain: the domain it serves.
    pub(super) domain: Option<S<String>>,
    /// xmpp-domain: its users, id → password.
    #[serde(default)]
    pub(super) accounts: BTreeMap<String, String>,
    /// xmpp-domain: an account's contacts (JIDs of any domain), subscribed both ways;
    /// sip-domain: the addresses each user watches from the start.
    #[serde(default)]
    pub(super) contacts: BTreeMap<String, Vec<String>>,
    /// imp (with `federation`): domains federated over SIP through this node (SPEC FED3).
    #[serde(default)]
    pub(super) sip_federation: Vec<S<String>>,
    /// sip-domain: its users, id → state at the start (available, busy, away, offline).
    #[serde(default)]
    pub(super) sip_users: BTreeMap<String, S<String>>,
}

/// One HTTP allow-list rule of an expressway-c node (SPEC MRA1).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AllowSpec {
    pub(super) host: S<String>,
    pub(super) port: S<u16>,
    pub(super) scheme: Option<S<String>>,
    pub(super) path: S<String>,
    #[serde(rename = "match")]
    pub(super) matching: Option<S<String>>,
    pub(super) methods: Option<S<Vec<String>>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UserSpec {
    pub(super) id: S<String>,
    pub(super) cluster: S<String>,
    /// Home IM&P cluster (SPEC FED2; default: the topology's first).
    pub(super) imp_cluster: Option<S<String>>,
    pub(super) password: Option<String>,
    pub(super) first_name: Option<String>,
    pub(super) last_name: Option<String>,
    pub(super) extension: Option<String>,
    pub(super) email: Option<String>,
    pub(super) devices: Option<Vec<String>>,
    pub(super) config_file: Option<String>,
    #[serde(default)]
    pub(super) contacts: Vec<S<String>>,
    /// The line's partition (SPEC CC6).
    pub(super) partition: Option<S<String>>,
    /// The SUBSCRIBE calling search space: partitions, or `"<None>"`.
    pub(super) subscribe_css: Option<S<CssSpec>>,
    pub(super) presence_group: Option<S<String>>,
    /// Directory numbers on the device's BLF speed dials.
    #[serde(default)]
    pub(super) blf: Vec<S<String>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum CssSpec {
    Name(String),
    List(Vec<String>),
}

/// A rule between two presence groups (SPEC CC6).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GroupRuleSpec {
    pub(super) watcher: S<String>,
    pub(super) target: S<String>,
    /// `allowed`, `disallowed`, or `default` (the Inter-Presence Group Subscribe Policy).
    pub(super) policy: S<String>,
}

/// Many users, each with a client of the same name (load scenarios: SPEC CAP1).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PopulationSpec {
    /// Names are the prefix and a number from 1, zero-padded (`u0001` … `u3000`).
    pub(super) prefix: S<String>,
    pub(super) count: S<usize>,
    pub(super) cluster: S<String>,
    /// Each user watches the next `contacts` users (a ring, so each has as many watchers).
    #[serde(default)]
    pub(super) contacts: Option<S<usize>>,
    pub(super) zone: S<String>,
    #[serde(default)]
    pub(super) dns: Vec<S<String>>,
    /// Client addresses: host 1 upward of this subnet.
    pub(super) subnet: S<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ClientSpec {
    pub(super) name: S<String>,
    pub(super) zone: Option<S<String>>,
    pub(super) ip: Option<S<String>>,
    #[serde(default)]
    pub(super) dns: Vec<S<String>>,
    pub(super) address: Option<S<String>>,
    #[serde(default)]
    pub(super) bootstrap: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StepSpec {
    pub(super) at: S<String>,
    pub(super) action: S<String>,
    pub(super) client: Option<S<String>>,
    pub(super) node: Option<S<String>>,
    pub(super) domain: Option<S<String>>,
    pub(super) user: Option<S<String>>,
    pub(super) password: Option<String>,
    pub(super) url: Option<S<String>>,
    pub(super) bootstrap: Option<BTreeMap<String, String>>,
    pub(super) zone: Option<S<String>>,
    pub(super) dns: Option<Vec<S<String>>>,
    pub(super) body: Option<String>,
    pub(super) show: Option<S<String>>,
    /// `presence`: the status text with it (`Busy`, `In a meeting`).
    pub(super) status: Option<String>,
    pub(super) a: Option<S<String>>,
    pub(super) b: Option<S<String>>,
    pub(super) value: Option<S<String>>,
    pub(super) probability: Option<f64>,
    pub(super) from: Option<S<String>>,
    pub(super) to: Option<S<String>>,
    pub(super) verdict: Option<S<String>>,
    pub(super) port: Option<u16>,
    pub(super) proto: Option<S<String>>,
    /// With a client pattern (`u*`): the matching clients' steps spread evenly over this long.
    pub(super) spread: Option<S<String>>,
    pub(super) room: Option<S<String>>,
    pub(super) nick: Option<S<String>>,
    #[serde(default)]
    pub(super) persistent: bool,
    pub(super) history: Option<u32>,
    /// `room-message`: send this many, numbered.
    pub(super) count: Option<S<u32>>,
    /// `dtmf`: the digits.
    pub(super) digits: Option<S<String>>,
    /// `dtmf`: `rfc4733` (telephone-event in RTP, the default) or `info` (SIP INFO).
    pub(super) method: Option<S<String>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ExpectSpec {
    pub(super) client: S<String>,
    pub(super) event: S<String>,
    pub(super) within: S<String>,
    pub(super) after: Option<S<String>>,
    pub(super) count: Option<usize>,
    #[serde(default)]
    pub(super) fields: BTreeMap<S<String>, String>,
    #[serde(default)]
    pub(super) absent: bool,
}
