//! Scenario files (TOML): parsing, merging with the built-in topology, and validation with
//! `file:line:col` errors. `scenarios/README.md` is the reference for the format.
//!
//! [`parse`] runs these steps in order, each in its own file, all adding to one list of
//! errors (reported sorted by position, so each keeps its `file:line:col`):
//!
//! - `read.rs`: reading the file, every schema error rather than the first, cascades dropped;
//! - `file.rs`: the file as written (serde structs with spans);
//! - `merge.rs`: the scenario merged with the built-in default topology, populations added;
//! - `network.rs`: zones and firewall rules;
//! - `hosts.rs`: host names and addresses, and the client sections;
//! - `nodes.rs`: the node sections, one function per kind;
//! - `users.rs`: IM&P clusters, the presence trunk, users, BLF and contact limits;
//! - `steps.rs`: the timeline; `expects.rs`: expectations;
//! - `settings.rs`: duration, latency, epoch, spec ids and name;
//! - `check.rs`: checks several of them share (names, references, subnets, bootstrap
//!   switches);
//! - `model.rs`: the validated [`Scenario`] they build.
//!
//! A new section or field starts in `file.rs`; it is checked in the file of its section (a
//! new node kind's fields in `nodes.rs`, a new step action's in `steps.rs`) and, if the
//! runner needs it, lands in `model.rs`.

use std::fmt;
use std::path::Path;

mod check;
mod expects;
mod federation;
mod file;
mod hosts;
mod merge;
mod model;
mod network;
mod nodes;
mod read;
mod settings;
mod steps;
#[cfg(test)]
mod tests;
mod users;

use file::File;
pub use model::{
    Assignment, BOOTSTRAP_SWITCHES, Client, CucmNode, Expect, ExpresswayCNode, ExpresswayENode,
    ImpNode, Node, NodeKind, S2sNode, Scenario, SipDomainNode, Step, StepAction, User,
    XmppDomainNode,
};
use read::{Schema, parse_file_all, without_cascades};

/// The built-in default topology (DESIGN.md "The built-in lab").
pub const DEFAULT_TOPOLOGY: &str = include_str!("../default_topology.toml");
const DEFAULT_NAME: &str = "<built-in default topology>";

/// Node kinds that exist so far.
pub const NODE_KINDS: &[&str] = &[
    "dns",
    "host",
    "cas",
    "cucm",
    "imp",
    "chatdb",
    "srst",
    "expressway-c",
    "expressway-e",
    "xmpp-domain",
    "sip-domain",
];
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
    let merged = merge::merge(&src, &def_src, &file, &mut errs)?;
    let names = check::Names::new(&merged.zones, &merged.nodes, &merged.clients);
    let zones = network::zones(&merged.zones, &mut errs);
    let rules = network::rules(&merged.rules, &names, &mut errs);
    let (node_ips, client_ips) =
        hosts::addresses(&merged.nodes, &merged.clients, &zones, &names, &mut errs);
    let mut nodes = nodes::nodes(&merged.nodes, node_ips, &names, &merged.domain, &mut errs);
    let clients = hosts::clients(&merged.clients, client_ips, &names, &mut errs);
    users::imp_clusters(&mut nodes, &merged.nodes, &mut errs);
    users::presence_trunks(&nodes, &merged.nodes, &mut errs);
    let users = users::users(&merged.users, &nodes, &merged.domain, &src, &mut errs);
    let steps = steps::steps(&file.step, &src, &names, (&clients, &users, &nodes), &mut errs);
    // SPEC FED3: a sip-domain node's users report what they see as events under their address.
    let sip_users: Vec<String> = nodes
        .iter()
        .filter_map(|n| match &n.kind {
            NodeKind::SipDomain(d) => Some(d.users.keys().cloned()),
            _ => None,
        })
        .flatten()
        .collect();
    let expects = expects::expects(&file.expect, &src, &names, &sip_users, &mut errs);
    let settings = settings::settings(&file, merged.latency, &src, &mut errs);

    if !errs.is_empty() || !schema.is_empty() {
        return Err(without_cascades(schema, errs, &src, &broken));
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "scenario".into());
    let File { name, summary, spec, seed, heavy, .. } = file;
    Ok(Scenario {
        file: path.to_path_buf(),
        name: name.map(|n| n.into_inner()).unwrap_or(stem),
        summary: summary.unwrap_or_default(),
        spec: spec.into_iter().map(|s| s.into_inner()).collect(),
        seed: seed.unwrap_or(1),
        epoch: settings.epoch,
        duration: settings.duration,
        heavy,
        latency: settings.latency,
        zones,
        rules,
        nodes,
        clients,
        users,
        domain: merged.domain,
        steps,
        expects,
    })
}
