//! Checks shared by several sections: the names the file declares (zones, nodes, clients) and
//! the references to them, host and scenario names, subnets, firewall verdicts and protocols,
//! and installer bootstrap switches (a client's table and the `install` step).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use uclab_net::Action;

use super::file::{ClientSpec, NodeSpec, S, ZoneSpec};
use super::model::BOOTSTRAP_SWITCHES;
use super::{CheckError, Item, Src};

/// The zones, nodes (with their kinds) and clients of the merged topology, for references.
pub(super) struct Names<'a> {
    zones: BTreeSet<&'a str>,
    nodes: BTreeMap<&'a str, Option<&'a str>>,
    pub(super) clients: BTreeSet<&'a str>,
}

impl<'a> Names<'a> {
    pub(super) fn new(
        zones: &'a [Item<'_, ZoneSpec>],
        nodes: &'a [Item<'_, NodeSpec>],
        clients: &'a [Item<'_, ClientSpec>],
    ) -> Self {
        Self {
            zones: zones.iter().map(|i| i.spec.name.get_ref().as_str()).collect(),
            nodes: nodes
                .iter()
                .map(|i| {
                    let kind = i.spec.kind.as_ref().map(|k| k.get_ref().as_str());
                    (i.spec.name.get_ref().as_str(), kind)
                })
                .collect(),
            clients: clients.iter().map(|i| i.spec.name.get_ref().as_str()).collect(),
        }
    }

    /// `z` is `*` or a declared zone.
    pub(super) fn check_zone(&self, errs: &mut Vec<CheckError>, src: &Src<'_>, z: &S<String>) {
        if z.get_ref() != "*" && !self.zones.contains(z.get_ref().as_str()) {
            errs.push(src.err(z.span().start, format!("unknown zone `{}`", z.get_ref())));
        }
    }

    /// `n` is a declared node, of kind `kind` if given.
    pub(super) fn check_node(
        &self,
        errs: &mut Vec<CheckError>,
        src: &Src<'_>,
        n: &S<String>,
        kind: Option<&str>,
    ) {
        match self.nodes.get(n.get_ref().as_str()) {
            None => errs.push(src.err(n.span().start, format!("unknown node `{}`", n.get_ref()))),
            Some(k) if kind.is_some() && *k != kind => errs.push(src.err(
                n.span().start,
                format!("node `{}` is not a {} node", n.get_ref(), kind.unwrap_or_default()),
            )),
            Some(_) => {}
        }
    }

    /// A node or a client of that name exists.
    pub(super) fn host_known(&self, n: &str) -> bool {
        self.nodes.contains_key(n) || self.clients.contains(n)
    }
}

pub(super) fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 63
        && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

pub(super) fn check_proto(errs: &mut Vec<CheckError>, src: &Src<'_>, p: &S<String>) -> String {
    if !matches!(p.get_ref().as_str(), "tcp" | "udp") {
        errs.push(src.err(p.span().start, format!("unknown proto `{}` (tcp, udp)", p.get_ref())));
    }
    p.get_ref().clone()
}

pub(super) fn parse_action(a: &S<String>) -> Result<Action, String> {
    match a.get_ref().as_str() {
        "allow" => Ok(Action::Allow),
        "reject" => Ok(Action::Reject),
        "drop" => Ok(Action::Drop),
        o => Err(format!("unknown firewall action `{o}` (allow, reject, drop)")),
    }
}

pub(super) fn parse_subnet(s: &str) -> Result<(IpAddr, u8), String> {
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

/// Installer switches from a `bootstrap` table (WIRE.md); unknown switches are errors at `at`.
pub(super) fn bootstrap_switches(
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
