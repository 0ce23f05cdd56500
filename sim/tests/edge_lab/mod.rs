//! The default topology's inside and edge nodes on a turmoil simulation, for the Expressway
//! tests (SPEC MRA1): each test adds its outside client.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use uclab_net::tls::{LabPki, TlsContext};
use uclab_net::{Capture, Lab, Policy, SimNet, Transcript};
use uclab_sim::nodes;

/// Carol's address on the internet.
pub(crate) const CAROL: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 100));

/// A simulation of `seconds` with DNS, CUCM, IM&P and Expressway-C and -E running; the lab
/// (for the client), its capture and transcript, and the nodes' addresses by name.
pub(crate) fn edge_lab(
    seconds: u64,
) -> (turmoil::Sim<'static>, Lab, Capture, Transcript, BTreeMap<&'static str, IpAddr>) {
    let s = uclab_sim::parse("t.toml", "", Path::new("t.toml")).unwrap();
    let capture = Capture::new(1, s.epoch);
    let transcript = Transcript::default();
    let lab = Lab {
        seed: 1,
        capture: capture.clone(),
        policy: Policy::new(s.zones.clone(), s.rules.clone()).unwrap(),
        transcript: transcript.clone(),
        tls: TlsContext::sim(Arc::new(LabPki::new(1).unwrap()), capture.clone(), s.epoch),
    };
    for n in &s.nodes {
        transcript.set_name(n.ip, &n.name);
    }
    transcript.set_name(CAROL, "carol");
    let mut sim = turmoil::Builder::new()
        .rng_seed(1)
        .epoch(std::time::UNIX_EPOCH + s.epoch)
        .simulation_duration(Duration::from_secs(seconds))
        .tick_duration(Duration::from_millis(1))
        .build();
    let shared = nodes::Shared::new(1);
    let mut ips = BTreeMap::new();
    for name in ["dns-int", "cucm1", "cucm2", "imp1", "imp2", "expe", "expc"] {
        let n = s.nodes.iter().find(|n| n.name == name).unwrap();
        let plan = nodes::plan(&s, name, &|_, svc| svc.port, &BTreeMap::new(), &shared).unwrap();
        let (ip, lab) = (n.ip, lab.clone());
        ips.insert(name, ip);
        sim.host(ip, move || {
            let (net, plan) = (SimNet::new(ip, name, &lab), plan.clone());
            async move {
                nodes::run(net, plan).await?;
                Ok(())
            }
        });
    }
    (sim, lab, capture, transcript, ips)
}
