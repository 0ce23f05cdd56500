//! Hosts: the names, zones and addresses of nodes and clients, and the client sections
//! (`[[client]]`: DNS servers, typed address, bootstrap switches). A node's own fields are
//! read in `nodes.rs`.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use uclab_net::Zone;

use super::check::{Names, bootstrap_switches, valid_name};
use super::file::{ClientSpec, NodeSpec, S};
use super::model::Client;
use super::{CheckError, Item, Src};

/// The addresses of the nodes and of the clients, in order; `None` where there is none (an
/// error said why).
pub(super) type Addresses = (Vec<Option<IpAddr>>, Vec<Option<IpAddr>>);

/// Names, zones and addresses of every node, then every client. Explicit addresses are
/// reserved first, so automatic ones (from .10 for nodes, .100 for clients, in declaration
/// order) never take them.
pub(super) fn addresses(
    nodes: &[Item<'_, NodeSpec>],
    clients: &[Item<'_, ClientSpec>],
    zones: &[Zone],
    names: &Names<'_>,
    errs: &mut Vec<CheckError>,
) -> Addresses {
    let reserved: BTreeSet<IpAddr> = nodes
        .iter()
        .filter_map(|i| i.spec.ip.as_ref())
        .chain(clients.iter().filter_map(|i| i.spec.ip.as_ref()))
        .filter_map(|ip| ip.get_ref().parse::<Ipv4Addr>().ok().map(IpAddr::V4))
        .collect();
    let mut hosts =
        Hosts { reserved, taken: BTreeSet::new(), names: BTreeSet::new(), zones, known: names };
    let node_ips: Vec<Option<IpAddr>> = nodes
        .iter()
        .map(|i| hosts.host_ip(errs, i.src, &i.spec.name, &i.spec.zone, &i.spec.ip, "node"))
        .collect();
    let client_ips: Vec<Option<IpAddr>> = clients
        .iter()
        .map(|i| hosts.host_ip(errs, i.src, &i.spec.name, &i.spec.zone, &i.spec.ip, "client"))
        .collect();
    (node_ips, client_ips)
}

/// Addresses and names given out so far.
struct Hosts<'a> {
    reserved: BTreeSet<IpAddr>,
    taken: BTreeSet<IpAddr>,
    names: BTreeSet<String>,
    zones: &'a [Zone],
    known: &'a Names<'a>,
}

impl Hosts<'_> {
    /// A host's name checked (valid, unique), its zone checked, and its address: `ip`, or
    /// the next free one in its zone.
    fn host_ip(
        &mut self,
        errs: &mut Vec<CheckError>,
        src: &Src<'_>,
        name: &S<String>,
        zone: &Option<S<String>>,
        ip: &Option<S<String>>,
        what: &'static str,
    ) -> Option<IpAddr> {
        if !valid_name(name.get_ref()) {
            errs.push(src.err(
                name.span().start,
                format!("bad {what} name `{}`: use letters, digits and -", name.get_ref()),
            ));
        }
        if !self.names.insert(name.get_ref().clone()) {
            errs.push(
                src.err(name.span().start, format!("duplicate host name `{}`", name.get_ref())),
            );
        }
        if let Some(z) = zone {
            self.known.check_zone(errs, src, z);
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
                    .and_then(|z| self.zones.iter().find(|x| &x.name == z.get_ref()))
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
                    .find(|a| !self.reserved.contains(a) && !self.taken.contains(a));
                let Some(a) = free else {
                    errs.push(src.err(name.span().start, "no free address left in the zone"));
                    return None;
                };
                a
            }
        };
        if !self.taken.insert(ip) {
            errs.push(src.err(name.span().start, format!("address {ip} is used twice")));
        }
        Some(ip)
    }
}

/// The clients that have an address (`ips`, in order).
pub(super) fn clients(
    clients: &[Item<'_, ClientSpec>],
    ips: Vec<Option<IpAddr>>,
    names: &Names<'_>,
    errs: &mut Vec<CheckError>,
) -> Vec<Client> {
    let mut client_out = Vec::new();
    for (i, ip) in clients.iter().zip(ips) {
        let c = &i.spec;
        for d in &c.dns {
            names.check_node(errs, i.src, d, Some("dns"));
        }
        if let Some(a) = &c.address
            && a.get_ref().rsplit_once('@').is_none_or(|(u, d)| u.is_empty() || d.is_empty())
        {
            errs.push(i.src.err(
                a.span().start,
                format!("bad address `{}`: expected user@domain", a.get_ref()),
            ));
        }
        let bootstrap = bootstrap_switches(errs, i.src, c.name.span().start, &c.bootstrap);
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
    client_out
}
