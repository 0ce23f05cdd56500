//! Labs on a turmoil simulation for the hostile-peer tests: the default topology's inside and
//! edge nodes for the Expressway tests (SPEC MRA1; each test adds its outside client), any
//! scenario's nodes (the federation tests), and a raw connection to speak to them by hand.
// Each test binary uses part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uclab_net::tls::{LabPki, TlsContext};
use uclab_net::{AsyncIo, Capture, Lab, Net, Policy, SimNet, Transcript};
use uclab_sim::nodes;

/// Carol's address on the internet.
pub(crate) const CAROL: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 100));

/// A simulation of `seconds` with DNS, CUCM, IM&P and Expressway-C and -E running; the lab
/// (for the client), its capture and transcript, and the nodes' addresses by name.
pub(crate) fn edge_lab(
    seconds: u64,
) -> (turmoil::Sim<'static>, Lab, Capture, Transcript, BTreeMap<&'static str, IpAddr>) {
    let nodes = ["dns-int", "cucm1", "cucm2", "imp1", "imp2", "expe", "expc"];
    let (sim, lab, capture, transcript, ips) = lab_of("", &nodes, seconds);
    transcript.set_name(CAROL, "carol");
    (sim, lab, capture, transcript, ips)
}

/// A simulation of `seconds` of the topology of scenario text `text` (the built-in one plus
/// the text) running the nodes `names`: the lab (for clients), its capture and transcript,
/// and the nodes' addresses by name.
pub(crate) fn lab_of(
    text: &str,
    names: &[&'static str],
    seconds: u64,
) -> (turmoil::Sim<'static>, Lab, Capture, Transcript, BTreeMap<&'static str, IpAddr>) {
    let s = uclab_sim::parse("t.toml", text, Path::new("t.toml")).unwrap();
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
    let mut sim = turmoil::Builder::new()
        .rng_seed(1)
        .epoch(std::time::UNIX_EPOCH + s.epoch)
        .simulation_duration(Duration::from_secs(seconds))
        .tick_duration(Duration::from_millis(1))
        .build();
    let shared = nodes::Shared::new(1);
    let mut ips = BTreeMap::new();
    for &name in names {
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

/// A raw client connection for hostile-peer tests, read as text.
pub(crate) struct Raw {
    pub(crate) io: Box<dyn AsyncIo>,
    seen: String,
}

impl Raw {
    /// Connects to `to`.
    pub(crate) async fn connect(net: &SimNet, to: SocketAddr) -> Self {
        let tcp = net.connect(to).await.unwrap();
        Self { io: Box::new(tcp), seen: String::new() }
    }

    /// Writes `s` (a write to a closed connection is not an error here).
    pub(crate) async fn send(&mut self, s: &str) {
        let _ = self.io.write_all(s.as_bytes()).await;
    }

    /// Reads until `want` has come (everything since the last call returned), or the
    /// connection ends or stays silent for 15 s (then what came, and `(closed)`).
    pub(crate) async fn until(&mut self, want: &str) -> String {
        let mut buf = [0u8; 8192];
        while !self.seen.contains(want) {
            match uclab_net::time::timeout(Duration::from_secs(15), self.io.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => self.seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                _ => {
                    self.seen.push_str("(closed)");
                    break;
                }
            }
        }
        std::mem::take(&mut self.seen)
    }

    /// Whether the connection ends within `secs`, reading what comes.
    pub(crate) async fn closes_within(&mut self, secs: u64) -> bool {
        let mut buf = [0u8; 8192];
        let end = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            match uclab_net::time::timeout_at(end, self.io.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(_)) => {}
                Err(_) => return false,
            }
        }
    }

    /// TLS over the connection presenting a lab certificate for `names` (mutual TLS), the
    /// server checked against `name`; false when the handshake fails.
    pub(crate) async fn start_tls_as(&mut self, net: &SimNet, name: &str, names: &[&str]) -> bool {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let cfg = net.tls().client_config_with_cert(&names).unwrap();
        let io = std::mem::replace(&mut self.io, Box::new(tokio::io::empty()));
        match net.tls().connect(cfg, name, io).await {
            Ok(t) => {
                self.io = Box::new(t);
                true
            }
            Err(_) => false,
        }
    }

    /// TLS over the connection, the server checked against `name`.
    pub(crate) async fn start_tls(&mut self, net: &SimNet, name: &str) {
        let cfg = net.tls().client_config(&[]).unwrap();
        let io = std::mem::replace(&mut self.io, Box::new(tokio::io::empty()));
        self.io = Box::new(net.tls().connect(cfg, name, io).await.unwrap());
    }
}
