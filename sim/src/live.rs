//! Live mode: the topology's mocks on real sockets (`uclab serve`) and the real client core
//! against real servers (`uclab probe`).
//!
//! Several nodes share one bind address (loopback unless told otherwise), so every service gets
//! a free port, chosen before any node starts so that forwarders know their upstream. The port
//! map tells clients where each service is, and the DNS nodes answer with those live addresses
//! and ports instead of the simulated ones, so a real client (or `uclab probe`) reaches the
//! mocks and never the simulated address ranges.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};

use serde::Serialize;
use std::sync::Arc;
use uclab_client::call::CallAction;
use uclab_client::discovery::DiscoveryConfig;
use uclab_client::driver::{self, ClientConfig, UserAction};

use uclab_net::tls::{LabPki, TlsContext};
use uclab_net::{Capture, Egress, Entropy, EventRecord, Lab, LiveNet, Policy, Transcript};

use std::collections::BTreeMap;

use crate::nodes;
use crate::scenario::{NodeKind, Scenario};

/// One entry of the port map (DESIGN.md "The built-in lab and the CLI").
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PortEntry {
    /// Node name.
    pub node: String,
    /// Service name (`dns`, …; `tcp-PORT` for a plain host's listener).
    pub service: String,
    /// `udp` or `tcp`.
    pub proto: String,
    /// Where it listens.
    pub addr: String,
}

/// One entry of the port map and whether it is the product's own port.
fn entry(node: &str, service: String, proto: &str, addr: SocketAddr) -> PortEntry {
    PortEntry { node: node.to_owned(), service, proto: proto.to_owned(), addr: addr.to_string() }
}

/// Whether `port` of `ip` can be bound for the protocols a service needs.
fn bindable(ip: IpAddr, port: u16, tcp: bool, udp: bool) -> bool {
    (!tcp || TcpListener::bind((ip, port)).is_ok()) && (!udp || UdpSocket::bind((ip, port)).is_ok())
}

/// A port of `ip` free for the protocols a service needs.
fn free_port(ip: IpAddr, tcp: bool, udp: bool) -> io::Result<u16> {
    for _ in 0..64 {
        let port = if tcp {
            TcpListener::bind((ip, 0))?.local_addr()?.port()
        } else {
            UdpSocket::bind((ip, 0))?.local_addr()?.port()
        };
        if bindable(ip, port, tcp, udp) {
            return Ok(port);
        }
    }
    Err(io::Error::new(io::ErrorKind::AddrInUse, "no port free for both TCP and UDP"))
}

/// The address each node of `s` serves on (issue 13). With a loopback `bind` every node gets
/// a loopback address of its own, 127.b.c.d for its simulated a.b.c.d (cucm1 10.1.0.11 →
/// 127.1.0.11): each service can then listen on its product's port, which is the only one a
/// real client uses for XMPP, SOAP or the CAS, and no address handed out leaves the host. Any
/// other `bind` (a host address, to reach the lab from elsewhere) is shared by every node.
pub fn node_ips(s: &Scenario, bind: IpAddr) -> BTreeMap<String, IpAddr> {
    let mut out = BTreeMap::new();
    let mut taken = std::collections::BTreeSet::new();
    let mut spare = 0u32;
    for n in &s.nodes {
        let ip = match (bind, n.ip) {
            (IpAddr::V4(b), IpAddr::V4(sim)) if b.is_loopback() => {
                let o = sim.octets();
                let mut ip = Ipv4Addr::new(127, o[1], o[2], o[3]);
                // Not the bind address (clients use it), no network or broadcast form, no
                // two nodes on one address: such nodes take 127.255.x.y.
                while ip == b || ip.octets()[3] == 0 || ip.octets()[3] == 255 || taken.contains(&ip)
                {
                    spare += 1;
                    ip = Ipv4Addr::from(0x7fff_0000 + spare);
                }
                taken.insert(ip);
                IpAddr::V4(ip)
            }
            _ => bind,
        };
        out.insert(n.name.clone(), ip);
    }
    out
}

/// Plans the ports of every service of `s` on `bind`: on each node's address (see
/// [`node_ips`]) its product's port when it can be bound, else a free one. Lists only what
/// will listen: a UDP-only service has no TCP entry.
pub fn plan(s: &Scenario, bind: IpAddr) -> io::Result<Vec<PortEntry>> {
    let ips = node_ips(s, bind);
    let mut out = Vec::new();
    for n in &s.nodes {
        let ip = ips.get(&n.name).copied().unwrap_or(bind);
        for svc in nodes::services(&n.kind) {
            let shared = !ip.is_loopback() || ip == bind;
            let port = if !shared && bindable(ip, svc.port, svc.tcp, svc.udp) {
                svc.port
            } else {
                free_port(ip, svc.tcp, svc.udp)?
            };
            let addr = SocketAddr::new(ip, port);
            for (on, proto) in [(svc.udp, "udp"), (svc.tcp, "tcp")] {
                if !on {
                    continue;
                }
                // SIP over UDP and TCP share the port, named per transport (DESIGN.md).
                let service =
                    if svc.name == "sip" { format!("sip-{proto}") } else { svc.name.clone() };
                out.push(entry(&n.name, service, proto, addr));
            }
        }
    }
    Ok(out)
}

/// Live mode runs for days where anyone on the host can guess passwords: unless the topology
/// sets a credential policy (`failed_logon`, 0 for none), serve applies the product's default
/// one, 3 failures locking an account for 30 minutes (issue 13). Scenarios have none unless
/// they set it.
pub fn default_credential_policy(s: &mut Scenario) {
    let set = s
        .nodes
        .iter()
        .any(|n| matches!(&n.kind, NodeKind::Cucm(c) if c.credential_policy.is_some()));
    if set {
        return;
    }
    for n in &mut s.nodes {
        if let NodeKind::Cucm(c) = &mut n.kind {
            c.credential_policy = Some(uclab_mocks::lockout::CredentialPolicy::default());
        }
    }
}

/// The entries of `plan` that are not on their product's port (a port taken, or one that
/// needs privileges): clients that cannot be told a port (the CAS on 443, SOAP and UDS on
/// 8443, XMPP on 5222) will not reach them.
pub fn moved(s: &Scenario, plan: &[PortEntry]) -> Vec<(PortEntry, u16)> {
    let mut out = Vec::new();
    for e in plan {
        let Some(n) = s.nodes.iter().find(|n| n.name == e.node) else { continue };
        let base = e.service.strip_prefix("sip-").filter(|_| e.service != "sip-tls");
        let name = base.map_or(e.service.as_str(), |_| "sip");
        let Some(svc) = nodes::services(&n.kind).into_iter().find(|x| x.name == name) else {
            continue;
        };
        let live: Option<SocketAddr> = e.addr.parse().ok();
        if live.is_some_and(|a| a.port() != svc.port) {
            out.push((e.clone(), svc.port));
        }
    }
    out
}

fn port_of(plan: &[PortEntry], node: &str, service: &str) -> Option<SocketAddr> {
    let named = |e: &&PortEntry| {
        e.service == service
            || (service == "sip" && e.service.starts_with("sip-") && e.service != "sip-tls")
    };
    plan.iter().find(|e| e.node == node && named(e)).and_then(|e| e.addr.parse().ok())
}

/// What a live process keeps of its run (issue 13: bounded memory). `uclab serve` keeps
/// nothing in memory; `--capture`/`--transcript` stream to files as things happen.
#[derive(Clone, Debug, Default)]
pub struct Keep {
    /// The pcapng file to write (`--capture`).
    pub capture: Option<std::path::PathBuf>,
    /// The transcript file to write (`--transcript`).
    pub transcript: Option<std::path::PathBuf>,
}

/// Serves every node of `s` as planned, until the process ends. Must run inside a
/// `tokio::task::LocalSet`. Secrets (session keys, one-time passwords, nonces, the lab PKI
/// `pki`) come from `entropy`.
pub async fn serve(
    s: &Scenario,
    plan: &[PortEntry],
    entropy: Entropy,
    pki: Arc<LabPki>,
    keep: &Keep,
) -> io::Result<()> {
    let seed = entropy.seed();
    // Live serve keeps no capture (it would grow without bound) and no transcript in
    // memory: lines are echoed to stderr, escaped and rate-limited; both go to files as they
    // happen when asked for (issue 13). The capture's time zero is now, by the live TLS
    // clock.
    let at = |p: &std::path::Path, e: io::Error| {
        io::Error::new(e.kind(), format!("{}: {e}", p.display()))
    };
    let capture = match &keep.capture {
        Some(p) => {
            let epoch = TlsContext::live(pki.clone(), Capture::disabled()).unix_now();
            Capture::streaming(p, seed, epoch).map_err(|e| at(p, e))?
        }
        None => Capture::disabled(),
    };
    let transcript = match &keep.transcript {
        Some(p) => Transcript::streaming(p).map_err(|e| at(p, e))?,
        None => Transcript::echo_only(),
    };
    let lab = live_lab(seed, pki, capture, transcript.clone());
    for e in plan {
        if let Ok(a) = e.addr.parse::<SocketAddr>() {
            transcript.set_service_name(a, &format!("{}/{}", e.node, e.service));
        }
    }
    // Simulated service address → live address, for the DNS nodes' answers and every
    // address a mock hands out (cnf.xml members and SRST reference, trunks).
    let live: BTreeMap<SocketAddr, SocketAddr> = s
        .nodes
        .iter()
        .flat_map(|n| {
            nodes::services(&n.kind)
                .into_iter()
                .filter_map(|svc| {
                    port_of(plan, &n.name, &svc.name).map(|l| (SocketAddr::new(n.ip, svc.port), l))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let port =
        |node: &str, svc: &nodes::Service| port_of(plan, node, &svc.name).map_or(0, |a| a.port());
    let mut tasks = Vec::new();
    let shared = nodes::Shared::with_entropy(seed, entropy);
    // A node that listens on nothing (Expressway-C) has no entry in the plan: it gets the
    // address `node_ips` gives it for the plan's bind (a loopback one of its own, or the
    // shared host address).
    let bind = plan
        .iter()
        .find_map(|e| e.addr.parse::<SocketAddr>().ok())
        .map(|a| if a.ip().is_loopback() { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { a.ip() });
    let quiet = bind.map(|b| node_ips(s, b)).unwrap_or_default();
    for n in &s.nodes {
        let ip = plan
            .iter()
            .find(|e| e.node == n.name)
            .and_then(|e| e.addr.parse::<SocketAddr>().ok())
            .map(|a| a.ip())
            .or_else(|| quiet.get(&n.name).copied());
        let Some(ip) = ip else { continue };
        // On loopback the mocks answer loopback only; bound to a host address (`--bind`), they
        // serve whoever the user let reach that address, so their answers may go there too.
        let egress = Egress { targets: Vec::new(), remote: !ip.is_loopback() };
        let net = LiveNet::new(ip, &lab).with_egress(egress);
        let Some(p) = nodes::plan(s, &n.name, &port, &live, &shared) else { continue };
        tasks.push(tokio::task::spawn_local(nodes::run(net, p)));
    }
    for t in tasks {
        t.await.map_err(io::Error::other)??;
    }
    Ok(())
}

/// The lab PKI of a live process: from `--seed` (tests: every such process has the same CA)
/// or from the OS random source.
pub fn lab_pki(entropy: Entropy) -> io::Result<Arc<LabPki>> {
    Ok(Arc::new(LabPki::from_entropy(entropy).map_err(io::Error::other)?))
}

/// The shared parts of a live process: the lab PKI, the live TLS provider.
fn live_lab(seed: u64, pki: Arc<LabPki>, capture: Capture, transcript: Transcript) -> Lab {
    Lab {
        seed,
        capture: capture.clone(),
        policy: Policy::default(),
        transcript,
        tls: TlsContext::live(pki, capture),
    }
}

/// How a probe runs (issue 13): where its randomness comes from, which CA it trusts and where
/// it may send.
#[derive(Clone, Debug, Default)]
pub struct ProbeOptions {
    /// `--seed`: reproducible client randomness, and the lab CA of that seed trusted (tests
    /// only). `None`: the OS random source.
    pub seed: Option<u64>,
    /// `--ca`: the roots to trust (a lab CA that `uclab serve --ca-pem` wrote).
    pub ca: Option<Vec<uclab_net::tls::Certificate<'static>>>,
    /// `--allow-remote`: send anywhere, not only to loopback and the servers named.
    pub allow_remote: bool,
    /// Echo the transcript to the terminal.
    pub verbose: bool,
}

/// The real sockets a probe runs on: loopback when `peer` is (else any address), sending
/// only to loopback and `peer` unless told otherwise, trusting the CA the options name, and a
/// transcript echoed to the terminal when `verbose`.
fn probe_net(peer: SocketAddr, o: &ProbeOptions) -> io::Result<(LiveNet, Transcript)> {
    let local = if peer.ip().is_loopback() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    };
    let transcript = if o.verbose { Transcript::echoing() } else { Transcript::default() };
    let entropy = Entropy::from_option(o.seed)?;
    let seed = entropy.seed();
    let capture = Capture::new(seed, std::time::Duration::ZERO);
    let mut lab = live_lab(seed, lab_pki(entropy)?, capture, transcript.clone());
    if let Some(roots) = &o.ca {
        lab.tls = lab.tls.trusting(roots.clone());
    }
    let egress = Egress { targets: vec![peer.ip()], remote: o.allow_remote };
    Ok((LiveNet::new(local, &lab).with_egress(egress), transcript))
}

/// What `uclab probe` found.
#[derive(Clone, Debug, Serialize)]
pub struct ProbeResult {
    /// `cisco-uds`, `cuplogin`, `collab-edge`, `webex` or `manual`.
    pub method: Option<String>,
    /// `host:port` that answered.
    pub target: Option<String>,
    /// Authenticator, when signed in (`cup`, `webex`, `cucm`).
    pub authenticator: Option<String>,
    /// Product mode, when signed in (`full-uc`, `im-only`, `phone-only`).
    pub product_mode: Option<String>,
    /// Why discovery or sign-in failed, when it did.
    pub error: Option<String>,
    /// Every client event, in order.
    pub steps: Vec<String>,
}

/// Runs the real client core's discovery of `domain` against the DNS server at `dns`, and
/// signs `credentials` in when given. HTTPS servers must present certificates of the lab CA of
/// `seed` (as `uclab serve` does). Must run inside a `tokio::task::LocalSet`.
pub async fn probe(
    domain: &str,
    dns: SocketAddr,
    credentials: Option<(String, String)>,
    opts: &ProbeOptions,
) -> io::Result<ProbeResult> {
    let (net, transcript) = probe_net(dns, opts)?;
    let cfg = ClientConfig {
        name: "probe".into(),
        dns: vec![dns],
        bootstrap: Default::default(),
        stay_until: std::time::Duration::ZERO,
    };
    let discovery = DiscoveryConfig::domain(domain);
    let action = match credentials {
        Some((user, password)) => UserAction::SignIn { discovery, user, password },
        None => UserAction::Discover { discovery },
    };
    let actions = vec![(std::time::Duration::ZERO, action)];
    driver::run(net, cfg, actions).await?;
    Ok(summarise(&transcript.events()))
}

fn field<'a>(e: &'a EventRecord, k: &str) -> Option<&'a str> {
    e.fields.iter().find(|(fk, _)| fk == k).map(|(_, v)| v.as_str())
}

fn summarise(events: &[EventRecord]) -> ProbeResult {
    let method = events
        .iter()
        .find(|e| e.kind == "discovery-resolved")
        .and_then(|e| field(e, "via"))
        .map(str::to_owned);
    let target = events
        .iter()
        .find(|e| e.kind == "service-reached")
        .and_then(|e| field(e, "target"))
        .map(str::to_owned);
    let signed = events.iter().find(|e| e.kind == "signed-in");
    let authenticator = signed.and_then(|e| field(e, "authenticator")).map(str::to_owned);
    let product_mode = signed.and_then(|e| field(e, "product_mode")).map(str::to_owned);
    let error = events
        .iter()
        .rev()
        .find(|e| e.kind == "sign-in-failed" || e.kind == "discovery-failed")
        .and_then(|e| field(e, "reason"))
        .map(str::to_owned);
    let steps = events
        .iter()
        .map(|e| {
            let f: Vec<String> = e.fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{} {}", e.kind, f.join(" "))
        })
        .collect();
    ProbeResult { method, target, authenticator, product_mode, error, steps }
}

/// What `uclab probe-xmpp` saw: the bound JID, and every client event in order.
#[derive(Clone, Debug, Serialize)]
pub struct XmppProbeResult {
    /// Full JID bound, once signed in.
    pub jid: Option<String>,
    /// Why the session failed, if it did.
    pub error: Option<String>,
    /// Messages received: `from`, `body`.
    pub messages: Vec<(String, String)>,
    /// Presence seen: `from`, `show`.
    pub presence: Vec<(String, String)>,
    /// Every event, `kind k=v …`.
    pub steps: Vec<String>,
}

/// Signs `user` in to a plain XMPP server at `server` with the real client core (STARTTLS
/// checked against `domain` and the lab CA of `seed`, SASL PLAIN), sends `messages` (to,
/// body) one second apart once signed in, and stays `wait` in all. Must run inside a
/// `tokio::task::LocalSet`.
pub async fn probe_xmpp(
    server: SocketAddr,
    domain: &str,
    (user, password): (&str, &str),
    messages: Vec<(String, String)>,
    wait: std::time::Duration,
    opts: &ProbeOptions,
) -> io::Result<XmppProbeResult> {
    let (net, transcript) = probe_net(server, opts)?;
    let cfg = ClientConfig {
        name: "probe".into(),
        dns: Vec::new(),
        bootstrap: Default::default(),
        stay_until: wait,
    };
    let mut actions = vec![(
        std::time::Duration::ZERO,
        UserAction::ImDirect {
            server,
            domain: domain.to_owned(),
            user: user.to_owned(),
            password: password.to_owned(),
        },
    )];
    for (k, (to, body)) in messages.into_iter().enumerate() {
        let at = std::time::Duration::from_secs(1 + k as u64);
        actions.push((at, UserAction::Im(uclab_client::im::ImAction::Message { to, body })));
    }
    driver::run(net, cfg, actions).await?;
    let events = transcript.events();
    let pairs = |kind: &str, a: &str, b: &str| -> Vec<(String, String)> {
        events
            .iter()
            .filter(|e| e.kind == kind)
            .map(|e| (field(e, a).unwrap_or("").to_owned(), field(e, b).unwrap_or("").to_owned()))
            .collect()
    };
    Ok(XmppProbeResult {
        jid: events
            .iter()
            .find(|e| e.kind == "im-signed-in")
            .and_then(|e| field(e, "jid"))
            .map(str::to_owned),
        error: events
            .iter()
            .rev()
            .find(|e| e.kind == "im-failed")
            .and_then(|e| field(e, "reason"))
            .map(str::to_owned),
        messages: pairs("im-message", "from", "body"),
        presence: pairs("im-presence", "from", "show"),
        steps: summarise(&events).steps,
    })
}

/// The calls `uclab probe-sip` makes or takes.
#[derive(Clone, Debug, Default)]
pub struct SipProbeCalls {
    /// Number to call.
    pub call: Option<String>,
    /// When (from the start).
    pub call_at: std::time::Duration,
    /// When to hang up.
    pub hangup_at: Option<std::time::Duration>,
    /// Answer incoming calls.
    pub answer: bool,
    /// SIP over UDP instead of TCP.
    pub udp: bool,
}

/// What `uclab probe-sip` saw.
#[derive(Clone, Debug, Serialize)]
pub struct SipProbeResult {
    /// The registrar the phone registered with, and the seconds granted.
    pub registered: Option<(String, u32)>,
    /// Call states, in order (`dialing`, `ringback`, `connected`, `ended`, …).
    pub calls: Vec<String>,
    /// The last failure, if any.
    pub error: Option<String>,
    /// Every event, `kind k=v …`.
    pub steps: Vec<String>,
}

/// Registers a softphone for `line` with the real client core's SIP engine at `servers[0]`
/// (TCP; digest answered with `user`/`password`; `servers[1..]` get keepalives) and stays
/// `wait`. Must run inside a `tokio::task::LocalSet`.
pub async fn probe_sip(
    servers: Vec<SocketAddr>,
    (user, password): (&str, &str),
    line: &str,
    (wait, calls): (std::time::Duration, SipProbeCalls),
    opts: &ProbeOptions,
) -> io::Result<SipProbeResult> {
    let first = *servers.first().ok_or_else(|| io::Error::other("no registrar"))?;
    let (net, transcript) = probe_net(first, opts)?;
    // Every registrar named is a target the user chose.
    let targets = servers.iter().map(SocketAddr::ip).collect();
    let net = net.with_egress(Egress { targets, remote: opts.allow_remote });
    let cfg = ClientConfig {
        name: "probe".into(),
        dns: Vec::new(),
        bootstrap: Default::default(),
        stay_until: wait,
    };
    let action = UserAction::PhoneDirect {
        servers,
        user: user.to_owned(),
        password: password.to_owned(),
        line: line.to_owned(),
        auto_answer: calls.answer,
        udp: calls.udp,
    };
    let mut actions = vec![(std::time::Duration::ZERO, action)];
    if let Some(to) = calls.call {
        actions.push((calls.call_at, UserAction::Call(CallAction::Dial { to })));
    }
    if let Some(at) = calls.hangup_at {
        actions.push((at, UserAction::Call(CallAction::End)));
    }
    driver::run(net, cfg, actions).await?;
    let events = transcript.events();
    let registered = events.iter().find(|e| e.kind == "phone-registered").map(|e| {
        let expires = field(e, "expires").and_then(|x| x.parse().ok()).unwrap_or(0);
        (field(e, "node").unwrap_or("").to_owned(), expires)
    });
    let error = events
        .iter()
        .rev()
        .filter(|e| e.kind == "phone-state")
        .find(|e| field(e, "reason").is_some())
        .and_then(|e| field(e, "reason"))
        .map(str::to_owned);
    let calls = events
        .iter()
        .filter(|e| e.kind == "call-state")
        .filter_map(|e| field(e, "state").map(str::to_owned))
        .collect();
    Ok(SipProbeResult { registered, calls, error, steps: summarise(&events).steps })
}

/// Writes a certificate of the lab CA of `entropy` for `names`, its key (PKCS#8) and the CA,
/// as PEM: for real servers the lab's clients should trust (a Prosody under test).
pub fn issue_pem(entropy: Entropy, names: &[String]) -> io::Result<(String, String, String)> {
    let pki = LabPki::from_entropy(entropy).map_err(io::Error::other)?;
    let (chain, key) = pki.issue(names).map_err(io::Error::other)?;
    let pem = |label: &str, der: &[u8]| {
        let b64 = uclab_proto::base64::encode(der);
        let mut s = format!("-----BEGIN {label}-----\n");
        for line in b64.as_bytes().chunks(64) {
            s.push_str(std::str::from_utf8(line).unwrap_or(""));
            s.push('\n');
        }
        s.push_str(&format!("-----END {label}-----\n"));
        s
    };
    let certs: String = chain.iter().take(1).map(|c| pem("CERTIFICATE", c.as_ref())).collect();
    Ok((certs, pem("PRIVATE KEY", key.secret_der()), pki.ca_pem()))
}
