//! Federation settings of nodes (issue 18): the server-to-server settings of XMPP servers
//! (SPEC FED1, FED4, FED5), foreign XMPP domains, and SIP federation (SPEC FED3): the domains an
//! IM&P node federates with over SIP, and foreign SIP domains with their users.

use std::collections::BTreeMap;

use super::check::Names;
use super::file::{NodeSpec, S};
use super::model::{NodeKind, S2sNode, SipDomainNode, XmppDomainNode};
use super::nodes::Here;
use super::{CheckError, Item};

/// The server-to-server settings of an `imp` node with `federation = true` or an
/// `xmpp-domain` node (SPEC FED1, FED4, FED5).
pub(super) fn s2s(
    i: &Item<'_, NodeSpec>,
    names: &Names<'_>,
    errs: &mut Vec<CheckError>,
) -> S2sNode {
    use uclab_mocks::imp::router::Policy;
    let n = &i.spec;
    if let Some(d) = &n.dns {
        names.check_node(errs, i.src, d, Some("dns"));
    }
    let domains = || n.federation_domains.iter().map(|d| d.to_ascii_lowercase()).collect();
    let policy = match n.federation_policy.as_ref().map(|p| p.get_ref().as_str()) {
        None | Some("open") => Policy::Open,
        Some("allow") => Policy::Allow(domains()),
        Some("block") => Policy::Block(domains()),
        Some(o) => {
            let at = n.federation_policy.as_ref().map_or(0, |p| p.span().start);
            errs.push(
                i.src.err(at, format!("unknown federation_policy `{o}` (open, allow, block)")),
            );
            Policy::Open
        }
    };
    for (domain, to) in &n.static_routes {
        let t = to.get_ref();
        let addr_ok = t
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if uclab_proto::dns::parse_name(domain).is_err() {
            errs.push(i.src.err(to.span().start, format!("bad static route domain `{domain}`")));
        } else if !addr_ok && !names.host_known(t) {
            errs.push(i.src.err(
                to.span().start,
                format!("static route to `{t}`: expected host:port or a node name"),
            ));
        }
    }
    S2sNode {
        dns: n.dns.as_ref().map(|d| d.get_ref().clone()),
        dialback: n.dialback.unwrap_or(true),
        sasl_external: n.sasl_external.unwrap_or(true),
        secret: n.dialback_secret.as_ref().map(|s| s.get_ref().clone()),
        san: n.san.as_ref().map(|s| s.get_ref().clone()),
        static_routes: n
            .static_routes
            .iter()
            .map(|(d, t)| (d.to_ascii_lowercase(), t.get_ref().clone()))
            .collect(),
        policy,
        sip_domains: sip_domains(i, errs),
    }
}

/// SPEC FED3: the domains an `imp` node federates with over SIP.
fn sip_domains(i: &Item<'_, NodeSpec>, errs: &mut Vec<CheckError>) -> Vec<String> {
    let mut out = Vec::new();
    for d in &i.spec.sip_federation {
        let v = d.get_ref().to_ascii_lowercase();
        if uclab_proto::dns::parse_name(&v).is_err() || !v.contains('.') {
            errs.push(i.src.err(d.span().start, format!("bad sip_federation domain `{v}`")));
        } else if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

/// A foreign SIP domain's server (SPEC FED3); `None` without a `domain`.
pub(super) fn sip_domain(
    i: &Item<'_, NodeSpec>,
    names: &Names<'_>,
    here: &Here<'_, '_>,
    errs: &mut Vec<CheckError>,
) -> Option<NodeKind> {
    let n = &i.spec;
    let (domain, d) = foreign_domain(i, here, "sip-domain", errs)?;
    if let Some(dns) = &n.dns {
        names.check_node(errs, i.src, dns, Some("dns"));
    }
    let mut users = BTreeMap::new();
    for (id, state) in &n.sip_users {
        let addr = format!("{}@{d}", id.to_ascii_lowercase());
        if !uclab_proto::jid::valid_bare(&addr) {
            errs.push(i.src.err(state.span().start, format!("bad sip_users id `{id}`")));
            continue;
        }
        match sip_state(state.get_ref()) {
            Some(s) => {
                users.insert(addr, s);
            }
            None => errs.push(i.src.err(
                state.span().start,
                format!("unknown state `{}` (available, busy, away, offline)", state.get_ref()),
            )),
        }
    }
    let mut contacts = BTreeMap::new();
    for (id, list) in &n.contacts {
        let addr = format!("{}@{d}", id.to_ascii_lowercase());
        let bad = list.iter().find(|j| !uclab_proto::jid::valid_bare(j));
        if !users.contains_key(&addr) || bad.is_some() {
            errs.push(i.src.err(
                domain.span().start,
                format!("contacts of `{id}`: a user of sip_users with contacts `user@domain`"),
            ));
            continue;
        }
        contacts.insert(addr, list.iter().map(|j| j.to_ascii_lowercase()).collect());
    }
    Some(NodeKind::SipDomain(SipDomainNode {
        domain: d,
        users,
        contacts,
        dns: n.dns.as_ref().map(|x| x.get_ref().clone()),
        static_routes: n
            .static_routes
            .iter()
            .map(|(d, t)| (d.to_ascii_lowercase(), t.get_ref().clone()))
            .collect(),
        san: n.san.as_ref().map(|s| s.get_ref().clone()),
    }))
}

/// A SIP domain user's state by name (SPEC FED3: what a Lync client shows).
pub(super) fn sip_state(v: &str) -> Option<uclab_proto::pidf::FederatedState> {
    use uclab_proto::pidf::FederatedState as F;
    Some(match v.to_ascii_lowercase().as_str() {
        "available" => F::Available,
        "busy" => F::Busy,
        "away" => F::Away,
        "offline" => F::Offline,
        _ => return None,
    })
}

/// A foreign XMPP domain's server (SPEC FED1); `None` without a `domain`.
pub(super) fn xmpp_domain(
    i: &Item<'_, NodeSpec>,
    names: &Names<'_>,
    here: &Here<'_, '_>,
    errs: &mut Vec<CheckError>,
) -> Option<NodeKind> {
    let n = &i.spec;
    let (domain, d) = foreign_domain(i, here, "xmpp-domain", errs)?;
    for (id, pw) in &n.accounts {
        if !uclab_proto::jid::valid_bare(&format!("{id}@{d}")) || pw.is_empty() {
            errs.push(i.src.err(
                domain.span().start,
                format!("account `{id}`: needs a valid user id and a password"),
            ));
        }
    }
    let mut contacts = BTreeMap::new();
    for (id, jids) in &n.contacts {
        let bad = jids.iter().find(|j| !uclab_proto::jid::valid_bare(j));
        if !n.accounts.contains_key(id) || bad.is_some() {
            errs.push(i.src.err(
                domain.span().start,
                format!("contacts of `{id}`: an account with contacts `user@domain`"),
            ));
            continue;
        }
        contacts.insert(id.clone(), jids.iter().map(|j| j.to_ascii_lowercase()).collect());
    }
    if let Some(d) = n.sip_federation.first() {
        errs.push(i.src.err(d.span().start, "`sip_federation` is a field of imp nodes"));
    }
    let d_limits = uclab_mocks::imp::router::Limits::default();
    let limits = uclab_mocks::imp::router::Limits {
        contacts: n.contact_limit.unwrap_or(d_limits.contacts),
        watchers: n.watcher_limit.unwrap_or(d_limits.watchers),
    };
    Some(NodeKind::XmppDomain(XmppDomainNode {
        domain: d,
        accounts: n.accounts.clone(),
        contacts,
        limits,
        s2s: s2s(i, names, errs),
    }))
}

/// The `domain` of a foreign domain's node (`kind`), lower case: a DNS name other than the
/// lab's; `None` after an error.
fn foreign_domain<'s>(
    i: &'s Item<'_, NodeSpec>,
    here: &Here<'_, '_>,
    kind: &str,
    errs: &mut Vec<CheckError>,
) -> Option<(&'s S<String>, String)> {
    let n = &i.spec;
    let Some(domain) = &n.domain else {
        errs.push(i.src.err(
            n.name.span().start,
            format!("{kind} node `{}` needs a `domain`", n.name.get_ref()),
        ));
        return None;
    };
    let d = domain.get_ref().to_ascii_lowercase();
    if uclab_proto::dns::parse_name(&d).is_err() || d == here.domain.to_ascii_lowercase() {
        errs.push(i.src.err(
            domain.span().start,
            format!("bad {kind} `{d}`: a DNS name other than the lab's domain"),
        ));
        return None;
    }
    Some((domain, d))
}
