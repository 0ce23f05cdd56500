//! SIP federation (SPEC FED3) in runs: the settings of an IM&P node's SIP gateway and of a
//! `sip-domain` node, and the running of both.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;

use uclab_mocks::imp::hub::Hub;
use uclab_mocks::imp::sipgw::Gateway;
use uclab_mocks::sip_domain::{self, Command, SipDomainConfig};
use uclab_mocks::sipfed::SIP_TLS_PORT;
use uclab_mocks::sipfed::serve::{SipFedSettings, serve};
use uclab_net::Net;

use crate::scenario::{Node, NodeKind, Scenario, StepAction};

/// A federating SIP server's settings: `dns` the DNS node of its SRV lookups, `routes` its
/// static routes (`host:port`, or a node name reached on 5061), `san` its certificate's names
/// (default its FQDN and domain).
pub(super) fn settings(
    s: &Scenario,
    n: &Node,
    domain: &str,
    (dns, routes, san): (Option<&str>, &BTreeMap<String, String>, Option<&Vec<String>>),
    port: u16,
    live: &BTreeMap<SocketAddr, SocketAddr>,
) -> SipFedSettings {
    let at = |sim: SocketAddr| live.get(&sim).copied().unwrap_or(sim);
    let node_addr = |name: &str, p: u16| {
        s.nodes.iter().find(|x| x.name == name).map(|x| at(SocketAddr::new(x.ip, p)))
    };
    let static_routes = super::static_routes(s, routes, SIP_TLS_PORT, live);
    SipFedSettings {
        domain: domain.to_ascii_lowercase(),
        host: n.name.clone(),
        fqdn: n.fqdn.clone(),
        names: san.cloned().unwrap_or_else(|| vec![n.fqdn.clone(), domain.to_owned()]),
        port,
        dns: dns.and_then(|d| node_addr(d, 53)),
        static_routes,
    }
}

/// What a `sip-domain` node runs: its settings and its users' script.
pub(super) fn domain_plan(
    s: &Scenario,
    n: &Node,
    port: u16,
    live: &BTreeMap<SocketAddr, SocketAddr>,
) -> Option<(Rc<SipFedSettings>, Rc<SipDomainConfig>)> {
    let NodeKind::SipDomain(d) = &n.kind else { return None };
    let sip =
        settings(s, n, &d.domain, (d.dns.as_deref(), &d.static_routes, d.san.as_ref()), port, live);
    let steps: Vec<(std::time::Duration, Command)> = s
        .steps
        .iter()
        .filter_map(|st| match &st.action {
            StepAction::SipUser { node, command } if *node == n.name => {
                Some((st.at, command.clone()))
            }
            _ => None,
        })
        .collect();
    let cfg = SipDomainConfig { users: d.users.clone(), contacts: d.contacts.clone(), steps };
    Some((Rc::new(sip), Rc::new(cfg)))
}

/// Runs a `sip-domain` node.
pub(super) async fn run_domain<N: Net + Clone + 'static>(
    net: N,
    sip: Rc<SipFedSettings>,
    cfg: Rc<SipDomainConfig>,
) -> std::io::Result<()> {
    sip_domain::serve(net, sip, cfg).await
}

/// Starts an IM&P node's SIP gateway for `domains` (SPEC FED3): stanzas for them come from the
/// cluster's hub; it ends when the returned task is aborted.
pub(super) fn start_gateway<N: Net + Clone + 'static>(
    net: &N,
    sip: Rc<SipFedSettings>,
    domains: &[String],
    hub: &Rc<Hub>,
    users: Vec<String>,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    let rx = hub.join_sip_federation(domains);
    let clock = net.clone();
    let gw = Gateway::new(hub.clone(), users, Rc::new(move || clock.tls().unix_now()));
    tokio::task::spawn_local(serve(net.clone(), sip, gw, rx))
}
