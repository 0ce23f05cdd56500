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
use uclab_net::{Capture, EventRecord, Lab, LiveNet, Policy, Transcript};

use std::collections::BTreeMap;

use crate::nodes;
use crate::scenario::Scenario;

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

/// A port free for both TCP and UDP on `ip`.
fn free_port(ip: IpAddr, udp_too: bool) -> io::Result<u16> {
    for _ in 0..64 {
        let t = TcpListener::bind((ip, 0))?;
        let port = t.local_addr()?.port();
        if !udp_too || UdpSocket::bind((ip, port)).is_ok() {
            return Ok(port);
        }
    }
    Err(io::Error::new(io::ErrorKind::AddrInUse, "no port free for both TCP and UDP"))
}

/// Plans the ports of every service of `s` on `bind`.
pub fn plan(s: &Scenario, bind: IpAddr) -> io::Result<Vec<PortEntry>> {
    let mut out = Vec::new();
    for n in &s.nodes {
        for svc in nodes::services(&n.kind) {
            let addr = SocketAddr::new(bind, free_port(bind, svc.udp)?).to_string();
            let protos: &[&str] = if svc.udp { &["udp", "tcp"] } else { &["tcp"] };
            for proto in protos {
                // SIP over UDP and TCP share the port, named per transport (DESIGN.md).
                let service =
                    if svc.name == "sip" { format!("sip-{proto}") } else { svc.name.clone() };
                out.push(PortEntry {
                    node: n.name.clone(),
                    service,
                    proto: (*proto).into(),
                    addr: addr.clone(),
                });
            }
        }
    }
    Ok(out)
}

fn port_of(plan: &[PortEntry], node: &str, service: &str) -> Option<SocketAddr> {
    let named = |e: &&PortEntry| {
        e.service == service || (service == "sip" && e.service.starts_with("sip-"))
    };
    plan.iter().find(|e| e.node == node && named(e)).and_then(|e| e.addr.parse().ok())
}

/// Serves every node of `s` as planned, until the process ends. Must run inside a
/// `tokio::task::LocalSet`.
pub async fn serve(s: &Scenario, bind: IpAddr, plan: &[PortEntry], seed: u64) -> io::Result<()> {
    let capture = Capture::new(seed, std::time::Duration::ZERO);
    let transcript = Transcript::echoing();
    let lab = live_lab(seed, capture.clone(), transcript.clone())?;
    for e in plan {
        if let Ok(a) = e.addr.parse::<SocketAddr>() {
            transcript.set_service_name(a, &format!("{}/{}", e.node, e.service));
        }
    }
    // Simulated service address → live address, for the DNS nodes' answers.
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
    let shared = nodes::Shared::new(seed);
    for n in &s.nodes {
        let net = LiveNet::new(bind, &lab);
        let Some(p) = nodes::plan(s, &n.name, &port, &live, &shared) else { continue };
        tasks.push(tokio::task::spawn_local(nodes::run(net, p)));
    }
    for t in tasks {
        t.await.map_err(io::Error::other)??;
    }
    Ok(())
}

/// The shared parts of a live process: the lab PKI from `seed`, the live TLS provider.
fn live_lab(seed: u64, capture: Capture, transcript: Transcript) -> io::Result<Lab> {
    let pki = Arc::new(LabPki::new(seed).map_err(io::Error::other)?);
    Ok(Lab {
        seed,
        capture: capture.clone(),
        policy: Policy::default(),
        transcript,
        tls: TlsContext::live(pki, capture),
    })
}

/// The real sockets a probe runs on: loopback when `peer` is (else any address), the lab of
/// `seed` (its CA trusted), and a transcript echoed to the terminal when `verbose`.
fn probe_net(peer: SocketAddr, seed: u64, verbose: bool) -> io::Result<(LiveNet, Transcript)> {
    let local = if peer.ip().is_loopback() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    };
    let transcript = if verbose { Transcript::echoing() } else { Transcript::default() };
    let lab = live_lab(seed, Capture::new(seed, std::time::Duration::ZERO), transcript.clone())?;
    Ok((LiveNet::new(local, &lab), transcript))
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
    seed: u64,
    verbose: bool,
) -> io::Result<ProbeResult> {
    let (net, transcript) = probe_net(dns, seed, verbose)?;
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
    seed: u64,
    verbose: bool,
) -> io::Result<XmppProbeResult> {
    let (net, transcript) = probe_net(server, seed, verbose)?;
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
    seed: u64,
    verbose: bool,
) -> io::Result<SipProbeResult> {
    let first = *servers.first().ok_or_else(|| io::Error::other("no registrar"))?;
    let (net, transcript) = probe_net(first, seed, verbose)?;
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

/// Writes a certificate of the lab CA of `seed` for `names`, its key (PKCS#8) and the CA, as
/// PEM: for real servers the lab's clients should trust (a Prosody under test).
pub fn issue_pem(seed: u64, names: &[String]) -> io::Result<(String, String, String)> {
    let pki = LabPki::new(seed).map_err(io::Error::other)?;
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
