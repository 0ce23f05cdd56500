//! The scenario merged with the built-in default topology (unless `topology = "none"`):
//! scenario zones replace default zones of the same name; scenario rules come first; scenario
//! nodes replace default nodes of the same name (or remove them), clients and users likewise;
//! populations add users and clients; the domain and latency are the scenario's if it gives
//! them. Each section keeps the file it came from, for its errors.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use super::check::parse_subnet;
use super::file::{ClientSpec, File, NodeSpec, PopulationSpec, RuleSpec, S, UserSpec, ZoneSpec};
use super::read::parse_file;
use super::{CheckError, Item, Src};

/// The sections of the scenario and of the default topology, merged.
pub(super) struct Merged<'a> {
    pub(super) zones: Vec<Item<'a, ZoneSpec>>,
    pub(super) rules: Vec<Item<'a, RuleSpec>>,
    pub(super) nodes: Vec<Item<'a, NodeSpec>>,
    pub(super) clients: Vec<Item<'a, ClientSpec>>,
    pub(super) users: Vec<Item<'a, UserSpec>>,
    /// The enterprise domain (`example.com` unless given).
    pub(super) domain: String,
    /// `network.latency` and the file that gave it.
    pub(super) latency: Option<(&'a Src<'a>, S<String>)>,
}

/// Merges `file` (read from `src`) with the default topology (read from `def_src`) unless it
/// asks for none. Errors go to `errs`; a default topology that does not read ends it all.
pub(super) fn merge<'a>(
    src: &'a Src<'a>,
    def_src: &'a Src<'a>,
    file: &File,
    errs: &mut Vec<CheckError>,
) -> Result<Merged<'a>, Vec<CheckError>> {
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
    let default = if use_default { Some(parse_file(def_src).map_err(|e| vec![e])?) } else { None };

    let mut zones: Vec<Item<'_, ZoneSpec>> = Vec::new();
    let mut rules: Vec<Item<'_, RuleSpec>> = Vec::new();
    let mut nodes: Vec<Item<'_, NodeSpec>> = Vec::new();
    let mut clients: Vec<Item<'_, ClientSpec>> = Vec::new();
    let mut users: Vec<Item<'_, UserSpec>> = Vec::new();
    let mut latency = None;
    let mut domain = None;
    if let Some(d) = &default {
        zones.extend(d.zone.iter().cloned().map(|spec| Item { src: def_src, spec }));
        nodes.extend(d.node.iter().cloned().map(|spec| Item { src: def_src, spec }));
        clients.extend(d.client.iter().cloned().map(|spec| Item { src: def_src, spec }));
        users.extend(d.user.iter().cloned().map(|spec| Item { src: def_src, spec }));
        domain = d.domain.as_ref().map(|x| x.get_ref().clone());
        if let Some(l) = d.network.as_ref().and_then(|n| n.latency.clone()) {
            latency = Some((def_src, l));
        }
    }
    for z in &file.zone {
        zones.retain(|i| i.spec.name.get_ref() != z.name.get_ref());
        zones.push(Item { src, spec: z.clone() });
    }
    rules.extend(file.rule.iter().cloned().map(|spec| Item { src, spec }));
    if let Some(d) = &default {
        rules.extend(d.rule.iter().cloned().map(|spec| Item { src: def_src, spec }));
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
            Some(at) => nodes[at] = Item { src, spec: n.clone() },
            None => nodes.push(Item { src, spec: n.clone() }),
        }
    }
    for c in &file.client {
        clients.retain(|i| i.spec.name.get_ref() != c.name.get_ref());
        clients.push(Item { src, spec: c.clone() });
    }
    for u in &file.user {
        users.retain(|i| i.spec.id.get_ref() != u.id.get_ref());
        users.push(Item { src, spec: u.clone() });
    }
    if let Some(d) = &file.domain {
        if uclab_proto::dns::parse_name(d.get_ref()).is_err() {
            errs.push(src.err(d.span().start, format!("bad domain `{}`", d.get_ref())));
        }
        domain = Some(d.get_ref().clone());
    }
    let domain = domain.unwrap_or_else(|| "example.com".into());
    for p in &file.population {
        population(src, p, &domain, &mut users, &mut clients, errs);
    }
    if let Some(l) = file.network.as_ref().and_then(|n| n.latency.clone()) {
        latency = Some((src, l));
    }
    Ok(Merged { zones, rules, nodes, clients, users, domain, latency })
}

/// A population's users and their clients, appended to `users` and `clients`.
fn population<'a>(
    src: &'a Src<'a>,
    p: &PopulationSpec,
    domain: &str,
    users: &mut Vec<Item<'a, UserSpec>>,
    clients: &mut Vec<Item<'a, ClientSpec>>,
    errs: &mut Vec<CheckError>,
) {
    let (n, span) = (*p.count.get_ref(), p.prefix.span());
    if !(1..=100_000).contains(&n) {
        errs.push(src.err(p.count.span().start, "population `count`: 1 to 100000"));
        return;
    }
    let ring = p.contacts.as_ref().map_or(0, |c| *c.get_ref());
    if ring >= n {
        let at = p.contacts.as_ref().map_or(0, |c| c.span().start);
        errs.push(src.err(at, format!("`contacts` must be below `count` ({n})")));
        return;
    }
    let (net, prefix) = match parse_subnet(p.subnet.get_ref()) {
        Ok(x) => x,
        Err(m) => {
            errs.push(src.err(p.subnet.span().start, m));
            return;
        }
    };
    let IpAddr::V4(net) = net else { return };
    if (n as u64) + 2 > 1u64 << (32 - u32::from(prefix)) {
        errs.push(src.err(p.subnet.span().start, format!("subnet too small for {n} clients")));
        return;
    }
    let width = n.to_string().len();
    let name = |k: usize| format!("{}{:0width$}", p.prefix.get_ref(), k + 1);
    for k in 0..n {
        let id = S::new(span.clone(), name(k));
        let contacts = (1..=ring)
            .map(|d| {
                S::new(p.contacts.as_ref().map_or(span.clone(), |c| c.span()), name((k + d) % n))
            })
            .collect();
        users.push(Item {
            src,
            spec: UserSpec {
                id: id.clone(),
                cluster: p.cluster.clone(),
                imp_cluster: None,
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
            src,
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
