//! The nodes' stub resolver: A and SRV queries to a DNS server over UDP, ids from the node's
//! seeded RNG (never the OS), a timeout and one retry. Expressway-C looks up the internal SRV
//! records with it (SPEC MRA1), XMPP servers their peers' `_xmpp-server._tcp` (SPEC FED1). The transcript shows each query as the client's do; the server
//! writes the answers.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use uclab_net::Net;
use uclab_proto::dns::{DnsMsg, QType, Rdata, build_query};
use uclab_proto::edge::SrvServer;

/// How long one query waits for its answer.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Tries per question (the first and one retry).
const TRIES: usize = 2;
/// NXDOMAIN (RFC 1035 §4.1.1).
const NXDOMAIN: u16 = 3;

/// What a lookup found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup<T> {
    /// Records.
    Found(T),
    /// The name or the record does not exist (RFC 2782: a lone `.` target too).
    NoRecord,
    /// No usable answer (timeout, SERVFAIL, garbage).
    Failed(String),
}

/// The SRV targets of an answer, by priority then weight (heaviest first), or `NoRecord`.
pub fn srv_targets(m: &DnsMsg) -> Lookup<Vec<SrvServer>> {
    if m.rcode == NXDOMAIN {
        return Lookup::NoRecord;
    }
    if m.rcode != 0 {
        return Lookup::Failed(uclab_proto::dns::rcode_name(m.rcode));
    }
    let mut v: Vec<SrvServer> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            Rdata::Srv { priority, weight, port, target } => Some(SrvServer {
                priority: *priority,
                weight: *weight,
                port: *port,
                address: target.trim_end_matches('.').to_owned(),
            }),
            _ => None,
        })
        .collect();
    // RFC 2782: one record whose target is "." says the service is not offered.
    v.retain(|s| !s.address.is_empty() && s.address != ".");
    if v.is_empty() {
        return Lookup::NoRecord;
    }
    v.sort_by(|a, b| {
        (a.priority, std::cmp::Reverse(a.weight), &a.address).cmp(&(
            b.priority,
            std::cmp::Reverse(b.weight),
            &b.address,
        ))
    });
    Lookup::Found(v)
}

/// Asks `server` for `name`/`qtype`: the parsed answer, or why there is none.
async fn ask<N: Net>(
    net: &N,
    server: SocketAddr,
    name: &str,
    qtype: QType,
) -> Result<DnsMsg, String> {
    let sock = net.bind_udp(0).await.map_err(|e| e.to_string())?;
    let mut last = String::from("timeout");
    for _ in 0..TRIES {
        let id = net.rng().next_u16();
        let q = build_query(id, name, qtype).map_err(|e| e.to_string())?;
        let line = uclab_proto::dns::transcript_line(&q);
        net.transcript().message(net.now(), sock.local_addr(), server, "udp", &line);
        if let Err(e) = sock.send_to(&q, server).await {
            last = e.to_string();
            continue;
        }
        // tokio's clock: simulated under turmoil, so the deadline is part of the replay.
        let deadline = tokio::time::Instant::now() + QUERY_TIMEOUT;
        let mut buf = vec![0u8; 4096];
        loop {
            let got = uclab_net::time::timeout_at(deadline, sock.recv_from(&mut buf)).await;
            let Ok(Ok((n, from))) = got else {
                last = "timeout".into();
                break;
            };
            if from != server {
                continue;
            }
            match DnsMsg::parse(&buf[..n]) {
                Ok(m) if m.is_response && m.id == id => {
                    if m.truncated {
                        // The lab's internal answers fit in UDP; a truncated one is a failure
                        // here rather than a TCP retry.
                        return Err("truncated answer".into());
                    }
                    return Ok(m);
                }
                _ => continue, // not ours: keep waiting
            }
        }
    }
    Err(last)
}

/// SRV lookup of `name`.
pub async fn srv<N: Net>(net: &N, server: SocketAddr, name: &str) -> Lookup<Vec<SrvServer>> {
    match ask(net, server, name, QType::Srv).await {
        Ok(m) => srv_targets(&m),
        Err(e) => Lookup::Failed(e),
    }
}

/// SRV lookup of `name`, each target then looked up for its address (RFC 2782 order kept):
/// `(address and port, target name)`; targets without an address are left out, and an SRV
/// answer may come back empty (the caller says what that means). Used by the
/// federation services (XMPP `_xmpp-server._tcp`, SIP `_sipfederationtls._tcp`).
pub async fn srv_addrs<N: Net>(
    net: &N,
    server: SocketAddr,
    name: &str,
) -> Lookup<Vec<(SocketAddr, String)>> {
    match srv(net, server, name).await {
        Lookup::Found(targets) => {
            let mut addrs = Vec::new();
            for t in targets {
                if let Lookup::Found(ip) = a(net, server, &t.address).await {
                    let host = t.address.trim_end_matches('.').to_owned();
                    addrs.push((SocketAddr::new(ip.into(), t.port), host));
                }
            }
            Lookup::Found(addrs)
        }
        Lookup::NoRecord => Lookup::NoRecord,
        Lookup::Failed(why) => Lookup::Failed(why),
    }
}

/// A lookup of `name`: its first IPv4 address.
pub async fn a<N: Net>(net: &N, server: SocketAddr, name: &str) -> Lookup<Ipv4Addr> {
    match ask(net, server, name, QType::A).await {
        Ok(m) if m.rcode == NXDOMAIN => Lookup::NoRecord,
        Ok(m) => m.first_ipv4().map_or(Lookup::NoRecord, Lookup::Found),
        Err(e) => Lookup::Failed(e),
    }
}
