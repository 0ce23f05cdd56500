//! Node sections (`[[node]]`): what each kind runs and its settings. A new node kind's
//! fields are read in a function here, called from `node_kind`; cluster-wide checks over the
//! nodes (IM&P subclusters, the presence trunk) are in `users.rs`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use uclab_mocks::dns::{ZoneError, ZoneSource, parse_zone};

use super::check::Names;
use super::federation::{s2s, sip_domain, xmpp_domain};
use super::file::{NodeSpec, S};
use super::model::{
    Assignment, CucmNode, ExpresswayCNode, ExpresswayENode, ImpNode, Node, NodeKind,
};
use super::{CheckError, Item, NODE_KINDS, Src};
use crate::time::parse_duration;

/// The nodes that have a kind and an address (`ips`, in order).
pub(super) fn nodes(
    nodes: &[Item<'_, NodeSpec>],
    ips: Vec<Option<IpAddr>>,
    names: &Names<'_>,
    domain: &str,
    errs: &mut Vec<CheckError>,
) -> Vec<Node> {
    let mut node_out = Vec::new();
    for (i, ip) in nodes.iter().zip(ips) {
        let n = &i.spec;
        let fqdn = match &n.fqdn {
            Some(f) => {
                if uclab_proto::dns::parse_name(f.get_ref()).is_err() {
                    errs.push(i.src.err(f.span().start, format!("bad fqdn `{}`", f.get_ref())));
                }
                f.get_ref().clone()
            }
            None => default_fqdn(n, domain),
        };
        let here = Here { all: nodes, fqdn: &fqdn, domain };
        let Some(kind) = node_kind(i, names, &here, errs) else { continue };
        if let Some(ip) = ip {
            let broken_xml = broken_xml(i, &kind, errs);
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
    node_out
}

/// `<name>.<domain>`, a node's FQDN unless it gives one.
fn default_fqdn(n: &NodeSpec, domain: &str) -> String {
    format!("{}.{domain}", n.name.get_ref())
}

/// Where a node is: every node section, its FQDN, the domain.
pub(super) struct Here<'a, 'b> {
    pub(super) all: &'a [Item<'b, NodeSpec>],
    pub(super) fqdn: &'a str,
    pub(super) domain: &'a str,
}

/// What a node runs, from its `kind` and the fields of that kind; `None` after an error that
/// leaves nothing to run.
fn node_kind(
    i: &Item<'_, NodeSpec>,
    names: &Names<'_>,
    here: &Here<'_, '_>,
    errs: &mut Vec<CheckError>,
) -> Option<NodeKind> {
    let n = &i.spec;
    let Some(kind) = &n.kind else {
        errs.push(i.src.err(
            n.name.span().start,
            format!("node `{}` needs a `kind` ({})", n.name.get_ref(), NODE_KINDS.join(", ")),
        ));
        return None;
    };
    let kind = match kind.get_ref().as_str() {
        "dns" => dns(i, names, errs),
        "host" => NodeKind::Host { listen: n.listen.clone() },
        "cas" => NodeKind::Cas { webex_domains: n.webex_domains.clone() },
        "chatdb" => NodeKind::ChatDb,
        "srst" => NodeKind::Srst,
        "imp" => imp(i, names, errs)?,
        "cucm" => cucm(i, errs)?,
        "expressway-c" => expressway_c(i, names, errs)?,
        "expressway-e" => expressway_e(i, here, errs)?,
        "xmpp-domain" => xmpp_domain(i, names, here, errs)?,
        "sip-domain" => sip_domain(i, names, here, errs)?,
        other => {
            errs.push(i.src.err(
                kind.span().start,
                format!("unknown node kind `{other}` (known: {})", NODE_KINDS.join(", ")),
            ));
            return None;
        }
    };
    expressway_fields_elsewhere(i, kind.name(), errs);
    Some(kind)
}

/// Expressway fields on a node of another kind are mistakes: each is an error.
fn expressway_fields_elsewhere(i: &Item<'_, NodeSpec>, kind: &str, errs: &mut Vec<CheckError>) {
    let n = &i.spec;
    let c_only = [
        (
            "edge",
            n.edge.as_ref().map(|e| e.first().map_or(n.name.span().start, |x| x.span().start)),
        ),
        ("dns", n.dns.as_ref().map(|d| d.span().start)),
        ("token_lifetime", n.token_lifetime.as_ref().map(|d| d.span().start)),
        ("user_uds", n.user_uds.as_ref().map(|d| d.span().start)),
        ("allow", n.allow.first().map(|a| a.host.span().start)),
    ];
    let e_only = [
        ("san", n.san.as_ref().map(|d| d.span().start)),
        ("traversal_peer", n.traversal_peer.as_ref().map(|d| d.span().start)),
    ];
    // XMPP servers that federate have a DNS node and certificate names too (SPEC FED1).
    let s2s = matches!(kind, "imp" | "xmpp-domain" | "sip-domain");
    for (want, fields) in [("expressway-c", &c_only[..]), ("expressway-e", &e_only[..])] {
        if kind == want {
            continue;
        }
        for (field, at) in fields {
            if s2s && matches!(*field, "dns" | "san") {
                continue;
            }
            if let Some(at) = at {
                errs.push(i.src.err(*at, format!("`{field}` is a field of {want} nodes")));
            }
        }
    }
}

/// An Expressway-C node (SPEC MRA1); `None` without its `dns` node.
fn expressway_c(
    i: &Item<'_, NodeSpec>,
    names: &Names<'_>,
    errs: &mut Vec<CheckError>,
) -> Option<NodeKind> {
    use uclab_mocks::expressway::allow::{AllowRule, PathMatch};
    use uclab_proto::edge::Scheme;
    let n = &i.spec;
    let Some(dns) = &n.dns else {
        errs.push(i.src.err(
            n.name.span().start,
            format!(
                "expressway-c node `{}` needs a `dns` (its internal DNS node)",
                n.name.get_ref()
            ),
        ));
        return None;
    };
    names.check_node(errs, i.src, dns, Some("dns"));
    let edge = n.edge.clone().unwrap_or_default();
    for e in &edge {
        names.check_node(errs, i.src, e, Some("expressway-e"));
    }
    let token_lifetime = match &n.token_lifetime {
        None => uclab_mocks::expressway::tokens::DEFAULT_LIFETIME,
        Some(d) => match parse_duration(d.get_ref()) {
            Ok(v) if v >= Duration::from_secs(1) => v,
            Ok(_) => {
                errs.push(i.src.err(d.span().start, "token_lifetime must be at least 1s"));
                uclab_mocks::expressway::tokens::DEFAULT_LIFETIME
            }
            Err(m) => {
                errs.push(i.src.err(d.span().start, m));
                uclab_mocks::expressway::tokens::DEFAULT_LIFETIME
            }
        },
    };
    let user_uds_empty = match n.user_uds.as_ref().map(|u| (u.get_ref().as_str(), u.span().start)) {
        None | Some(("home", _)) => false,
        Some(("empty", _)) => true,
        Some((other, at)) => {
            errs.push(i.src.err(at, format!("unknown user_uds `{other}` (home, empty)")));
            false
        }
    };
    let mut allow = Vec::new();
    for a in &n.allow {
        let scheme = match a.scheme.as_ref().map(|s| (s.get_ref().as_str(), s.span().start)) {
            None | Some(("https", _)) => Scheme::Https,
            Some(("http", _)) => Scheme::Http,
            Some((other, at)) => {
                errs.push(i.src.err(at, format!("unknown scheme `{other}` (http, https)")));
                Scheme::Https
            }
        };
        let matching = match a.matching.as_ref().map(|s| (s.get_ref().as_str(), s.span().start)) {
            None | Some(("prefix", _)) => PathMatch::Prefix,
            Some(("exact", _)) => PathMatch::Exact,
            Some((other, at)) => {
                errs.push(i.src.err(at, format!("unknown match `{other}` (exact, prefix)")));
                PathMatch::Prefix
            }
        };
        if uclab_proto::dns::parse_name(a.host.get_ref()).is_err() || a.host.get_ref().is_empty() {
            errs.push(i.src.err(a.host.span().start, format!("bad host `{}`", a.host.get_ref())));
        }
        if *a.port.get_ref() == 0 {
            errs.push(i.src.err(a.port.span().start, "port must be 1–65535"));
        }
        if !a.path.get_ref().starts_with('/') {
            errs.push(i.src.err(a.path.span().start, "path must start with `/`"));
        }
        let methods = match &a.methods {
            None => vec!["GET".to_owned()],
            Some(m) => {
                let ok = !m.get_ref().is_empty()
                    && m.get_ref()
                        .iter()
                        .all(|x| !x.is_empty() && x.bytes().all(|c| c.is_ascii_uppercase()));
                if !ok {
                    errs.push(i.src.err(
                        m.span().start,
                        "methods must be upper-case HTTP methods (GET, POST, …)",
                    ));
                }
                m.get_ref().clone()
            }
        };
        allow.push(AllowRule {
            host: a.host.get_ref().to_ascii_lowercase(),
            port: *a.port.get_ref(),
            scheme,
            path: a.path.get_ref().clone(),
            matching,
            methods,
        });
    }
    Some(NodeKind::ExpresswayC(ExpresswayCNode {
        dns: dns.get_ref().clone(),
        edge: edge.iter().map(|e| e.get_ref().clone()).collect(),
        token_lifetime,
        user_uds_empty,
        allow,
    }))
}

/// An Expressway-E node (SPEC MRA1); its traversal peer is `traversal_peer`, else the
/// expressway-c node that names it in `edge`.
fn expressway_e(
    i: &Item<'_, NodeSpec>,
    here: &Here<'_, '_>,
    errs: &mut Vec<CheckError>,
) -> Option<NodeKind> {
    let n = &i.spec;
    let san = match &n.san {
        None => vec![here.fqdn.to_owned(), here.domain.to_owned()],
        Some(s) => {
            if s.get_ref().is_empty() {
                errs.push(i.src.err(s.span().start, "san needs at least one name"));
            }
            for name in s.get_ref() {
                if uclab_proto::dns::parse_name(name).is_err() {
                    errs.push(i.src.err(s.span().start, format!("bad san name `{name}`")));
                }
            }
            s.get_ref().clone()
        }
    };
    let peer = match &n.traversal_peer {
        Some(p) => {
            if uclab_proto::dns::parse_name(p.get_ref()).is_err() {
                errs.push(
                    i.src.err(p.span().start, format!("bad traversal_peer `{}`", p.get_ref())),
                );
            }
            Some(p.get_ref().clone())
        }
        None => here.all.iter().find_map(|c| {
            let spec = &c.spec;
            let is_c = spec.kind.as_ref().is_some_and(|k| k.get_ref() == "expressway-c");
            let names_me = spec.edge.iter().flatten().any(|e| e.get_ref() == n.name.get_ref());
            (is_c && names_me).then(|| {
                spec.fqdn
                    .as_ref()
                    .map_or_else(|| default_fqdn(spec, here.domain), |f| f.get_ref().clone())
            })
        }),
    };
    let Some(traversal_peer) = peer else {
        errs.push(i.src.err(
            n.name.span().start,
            format!(
                "expressway-e node `{}` needs a `traversal_peer` (or an expressway-c node naming it in `edge`)",
                n.name.get_ref()
            ),
        ));
        return None;
    };
    Some(NodeKind::ExpresswayE(ExpresswayENode { san, traversal_peer }))
}

/// A DNS server: its authoritative zones and where it forwards.
fn dns(i: &Item<'_, NodeSpec>, names: &Names<'_>, errs: &mut Vec<CheckError>) -> NodeKind {
    let n = &i.spec;
    let mut zones = Vec::new();
    for a in &n.authority {
        let z =
            ZoneSource { origin: a.origin.get_ref().clone(), text: a.records.get_ref().clone() };
        match parse_zone(&z) {
            Ok(_) => zones.push(z),
            Err(ZoneError::BadOrigin(o)) => {
                errs.push(i.src.err(a.origin.span().start, format!("bad zone origin `{o}`")))
            }
            Err(ZoneError::Parse { message, line, .. }) => {
                let at = records_offset(i.src.text, a.records.span().start, line);
                errs.push(i.src.err(at, format!("bad zone text: {message}")));
            }
        }
    }
    if let Some(f) = &n.forward {
        names.check_node(errs, i.src, f, Some("dns"));
    }
    NodeKind::Dns { zones, forward: n.forward.as_ref().map(|f| f.get_ref().clone()) }
}

/// An IM&P node; `None` without a `cluster`.
fn imp(i: &Item<'_, NodeSpec>, names: &Names<'_>, errs: &mut Vec<CheckError>) -> Option<NodeKind> {
    let n = &i.spec;
    let Some(cluster) = &n.cluster else {
        errs.push(i.src.err(
            n.name.span().start,
            format!("imp node `{}` needs a `cluster`", n.name.get_ref()),
        ));
        return None;
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
    let d = uclab_mocks::imp::router::Limits::default();
    let limits = uclab_mocks::imp::router::Limits {
        contacts: n.contact_limit.unwrap_or(d.contacts),
        watchers: n.watcher_limit.unwrap_or(d.watchers),
    };
    let subcluster = match &n.subcluster {
        None => 0, // numbered below: members pair up in declaration order
        Some(v) if (1..=3).contains(v.get_ref()) => *v.get_ref(),
        Some(v) => {
            errs.push(i.src.err(
                v.span().start,
                format!("subcluster {} out of range: 1, 2 or 3 (SPEC HA3)", v.get_ref()),
            ));
            1
        }
    };
    let assignment = match n.assignment.as_ref().map(|a| a.get_ref().as_str()) {
        None | Some("balanced") => Assignment::Balanced,
        Some("active-standby" | "none") => Assignment::ActiveStandby,
        Some(other) => {
            let at = n.assignment.as_ref().map_or(0, |a| a.span().start);
            errs.push(
                i.src.err(at, format!("unknown assignment `{other}` (balanced, active-standby)")),
            );
            Assignment::Balanced
        }
    };
    // SPEC IMP5 per-node limits: 16,500 rooms, 1,500 persistent, 1,000 occupants.
    let d = uclab_mocks::imp::muc::RoomLimits::default();
    let mut limit = |v: &Option<S<usize>>, default: usize, what: &str| match v {
        None => default,
        Some(v) if *v.get_ref() >= 1 => *v.get_ref(),
        Some(v) => {
            errs.push(i.src.err(v.span().start, format!("{what} must be at least 1")));
            default
        }
    };
    let room_limits = uclab_mocks::imp::muc::RoomLimits {
        rooms: limit(&n.room_limit, d.rooms, "room_limit"),
        persistent: limit(&n.persistent_room_limit, d.persistent, "persistent_room_limit"),
        occupants: limit(&n.occupant_limit, d.occupants, "occupant_limit"),
    };
    if let (false, Some(d)) = (n.federation, n.sip_federation.first()) {
        errs.push(
            i.src.err(d.span().start, "`sip_federation` needs `federation = true` (SPEC FED3)"),
        );
    }
    if let Some(db) = &n.chat_db {
        names.check_node(errs, i.src, db, Some("chatdb"));
    }
    Some(NodeKind::Imp(ImpNode {
        cluster: cluster.get_ref().clone(),
        relogin,
        limits,
        subcluster,
        assignment,
        persistent_chat: n.persistent_chat,
        chat_db: n.chat_db.as_ref().map(|d| d.get_ref().clone()),
        room_limits,
        federation: n.federation.then(|| s2s(i, names, errs)),
        peering: false, // set once every node is read (users::imp_clusters)
    }))
}

/// A CUCM node; `None` without a `cluster`.
fn cucm(i: &Item<'_, NodeSpec>, errs: &mut Vec<CheckError>) -> Option<NodeKind> {
    let n = &i.spec;
    let Some(cluster) = &n.cluster else {
        errs.push(i.src.err(
            n.name.span().start,
            format!("cucm node `{}` needs a `cluster`", n.name.get_ref()),
        ));
        return None;
    };
    use uclab_proto::uds::ImpProductType;
    let product_type = match n.product_type.as_ref().map(|p| p.get_ref().as_str()) {
        None | Some("cup") => ImpProductType::Cup,
        Some("webex") => ImpProductType::Webex,
        Some("none") => ImpProductType::NotSet,
        Some(o) => {
            let at = n.product_type.as_ref().map_or(0, |p| p.span().start);
            errs.push(i.src.err(at, format!("unknown product_type `{o}` (cup, webex, none)")));
            ImpProductType::Cup
        }
    };
    if let Some(sr) = &n.srst
        && sr.get_ref().parse::<Ipv4Addr>().is_err()
    {
        errs.push(i.src.err(sr.span().start, format!("bad SRST address `{}`", sr.get_ref())));
    }
    let profile =
        n.profile.as_ref().map(|m| params(i, m, false, "profile", errs)).unwrap_or_default();
    let jabber_config = n.jabber_config.as_ref().map(|m| params(i, m, true, "jabber_config", errs));
    let group_files = n
        .group_files
        .iter()
        .map(|(f, m)| (f.clone(), params(i, m, true, "group file", errs)))
        .collect::<Vec<_>>();
    for f in n.group_files.keys() {
        if f.is_empty() || !f.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
            errs.push(i.src.err(n.name.span().start, format!("bad group file name `{f}`")));
        }
    }
    let presence = presence_policy(i, errs);
    let publish_trunk = match &n.presence_trunk_mode {
        None => true,
        Some(m) if m.get_ref() == "publish" => true,
        Some(m) if m.get_ref() == "subscribe" => false,
        Some(m) => {
            errs.push(i.src.err(
                m.span().start,
                format!("unknown presence_trunk_mode `{}` (publish, subscribe)", m.get_ref()),
            ));
            true
        }
    };
    let sip_transport = match &n.sip_transport {
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
    };
    let credential_policy = credential_policy(n, i.src, errs);
    let media_ports = match &n.media_ports {
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
    };
    Some(NodeKind::Cucm(CucmNode {
        presence,
        presence_trunk: n.presence_trunk.as_ref().map(|t| t.get_ref().clone()),
        publish_trunk,
        sip_transport,
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
        credential_policy,
        media_ports,
    }))
}

/// The parameters of a service profile, jabber-config.xml or group file, in order. Their
/// names become XML element names: letters, digits, `_`, and one `Group/` prefix in
/// configuration files (`group`).
fn params(
    i: &Item<'_, NodeSpec>,
    m: &BTreeMap<String, String>,
    group: bool,
    what: &str,
    errs: &mut Vec<CheckError>,
) -> Vec<(String, String)> {
    let name_ok = |k: &str, group: bool| {
        let part =
            |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        match k.split_once('/') {
            Some((g, p)) if group => part(g) && part(p),
            Some(_) => false,
            None => part(k),
        }
    };
    for k in m.keys().filter(|k| !name_ok(k, group)) {
        errs.push(i.src.err(
            i.spec.name.span().start,
            format!(
                "bad {what} parameter name `{k}` (letters, digits, _{})",
                if group { ", one Group/ prefix" } else { "" }
            ),
        ));
    }
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<Vec<_>>()
}

/// Presence groups and the Inter-Presence Group Subscribe Policy (SPEC CC6).
fn presence_policy(
    i: &Item<'_, NodeSpec>,
    errs: &mut Vec<CheckError>,
) -> uclab_mocks::cucm::sip::PresencePolicy {
    let n = &i.spec;
    let mut presence = uclab_mocks::cucm::sip::PresencePolicy::default();
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
    presence
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

/// Services whose XML answers are spoilt: ones the node's kind has, and known ways to spoil.
fn broken_xml(
    i: &Item<'_, NodeSpec>,
    kind: &NodeKind,
    errs: &mut Vec<CheckError>,
) -> BTreeMap<String, uclab_mocks::http::BrokenXml> {
    let n = &i.spec;
    let mut broken_xml = BTreeMap::new();
    for (svc, how) in &n.broken_xml {
        let known = match kind {
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
    broken_xml
}
