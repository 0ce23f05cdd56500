//! Discovery against a scripted name server in virtual time (SPEC SD4–SD6).

use std::time::Duration;

use uclab_proto::dns::{DnsMsg, Rr, build_response};

use super::*;
use crate::io::Owner;
use crate::resolver::{Resolver, ResolverConfig};

const DNS: &str = "10.1.0.53:53";

fn start(seed: u64) -> Discovery {
    let dns =
        Resolver::new().handle(Owner::Discovery, ResolverConfig::new(vec![DNS.parse().unwrap()]));
    Discovery::start(Time::ZERO, &DiscoveryConfig::domain("example.com"), dns, seed)
}

fn drain(d: &mut Discovery) -> Vec<Emit> {
    std::iter::from_fn(|| d.poll_output()).collect()
}

/// The queries among `out`: (question name, bytes).
fn queries(out: &[Emit]) -> Vec<(String, Vec<u8>)> {
    out.iter()
        .filter_map(|e| match e {
            Emit::Out(Output::Transmit { bytes, .. }) => {
                let q = DnsMsg::parse(bytes).ok()?;
                Some((q.question?.0, bytes.clone()))
            }
            _ => None,
        })
        .collect()
}

fn events(out: &[Emit]) -> Vec<ClientEvent> {
    out.iter()
        .filter_map(|e| match e {
            Emit::Out(Output::Event(e)) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn srv(name: &str, priority: u16, target: &str) -> Rr {
    Rr {
        name: name.into(),
        ttl: 60,
        data: Rdata::Srv { priority, weight: 10, port: 8443, target: target.into() },
    }
}

fn a(name: &str, ip: [u8; 4]) -> Rr {
    Rr { name: name.into(), ttl: 60, data: Rdata::A(ip.into()) }
}

/// Answers every query among `out` from a small zone; names it does not know get NXDOMAIN.
fn answer_all(d: &mut Discovery, out: &[Emit], zone: &[(&str, Vec<Rr>, Vec<Rr>)]) -> Vec<Emit> {
    let mut all = Vec::new();
    for (name, q) in queries(out) {
        let r = match zone.iter().find(|(n, ..)| *n == name) {
            Some((_, ans, add)) => build_response(&q, 0, ans, add).unwrap(),
            None => build_response(&q, 3, &[], &[]).unwrap(),
        };
        d.handle_input(Time::ZERO, Input::Datagram { from: DNS.parse().unwrap(), bytes: r });
        all.extend(drain(d));
    }
    all
}

fn connects(out: &[Emit]) -> Vec<(ConnId, SocketAddr)> {
    out.iter()
        .filter_map(|e| match e {
            Emit::Out(Output::Connect { id, to }) => Some((*id, *to)),
            _ => None,
        })
        .collect()
}

fn zone() -> Vec<(&'static str, Vec<Rr>, Vec<Rr>)> {
    let uds = "_cisco-uds._tcp.example.com";
    let cup = "_cuplogin._tcp.example.com";
    vec![
        (
            uds,
            vec![srv(uds, 1, "cucm1.example.com"), srv(uds, 2, "cucm2.example.com")],
            vec![a("cucm1.example.com", [10, 1, 0, 11]), a("cucm2.example.com", [10, 1, 0, 12])],
        ),
        (cup, vec![srv(cup, 1, "imp1.example.com")], vec![]),
    ]
}

/// SPEC SD4/SD5: the CAS lookup and the three SRV queries go out at once; `_cisco-uds` wins
/// over `_cuplogin`; its first target is connected to, and the composite hears of it through
/// a typed signal with the address.
#[test]
fn sd5_cisco_uds_wins_and_its_first_target_is_reached() {
    let mut d = start(1);
    let out = drain(&mut d);
    let names: Vec<String> = queries(&out).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "loginp.webexconnect.com",
            "_cisco-uds._tcp.example.com",
            "_cuplogin._tcp.example.com",
            "_collab-edge._tls.example.com"
        ]
    );
    let out = answer_all(&mut d, &out, &zone());
    let ev = events(&out);
    assert!(ev.contains(&ClientEvent::DiscoveryResolved { via: Via::CiscoUds }), "{ev:?}");
    // The CAS host does not resolve here: not Webex, said once.
    assert!(ev.iter().any(
        |e| matches!(e, ClientEvent::CasResult { result, .. } if result.starts_with("error"))
    ));
    let c = connects(&out);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].1, "10.1.0.11:8443".parse().unwrap(), "glue from the SRV answer");
    assert_eq!(d.next_timer(), Some((CONNECT_TIMEOUT, DiscoveryTimer::Connect)));
    d.handle_input(Time::ZERO, Input::Connected { id: c[0].0 });
    let out = drain(&mut d);
    assert!(out.contains(&Emit::Signal(Signal::ServiceReached {
        via: Via::CiscoUds,
        target: "cucm1.example.com:8443".into(),
        addr: "10.1.0.11:8443".parse().unwrap(),
    })));
    assert_eq!(d.alternates(), ["cucm2.example.com:8443"]);
    assert!(d.is_done());
}

/// SPEC SD6: a target that refuses, and one that never answers (the connect deadline), each
/// move discovery to the next target in SRV order; with none left, it fails with a signal.
#[test]
fn sd6_refused_and_silent_targets_move_on_then_fail() {
    let mut d = start(2);
    let out = drain(&mut d);
    let out = answer_all(&mut d, &out, &zone());
    let (id, _) = connects(&out)[0];
    d.handle_input(Time::ZERO, Input::ConnectFailed { id, reason: NetError::Refused });
    let out = drain(&mut d);
    assert!(events(&out).contains(&ClientEvent::TargetFailed {
        target: "cucm1.example.com:8443".into(),
        reason: "refused".into()
    }));
    let (_, to) = connects(&out)[0];
    assert_eq!(to, "10.1.0.12:8443".parse().unwrap());
    // The second never answers: at the connect deadline, nothing is left.
    d.handle_timeout(Duration::from_secs(1));
    assert!(drain(&mut d).is_empty(), "a spurious wake-up does nothing");
    d.handle_timeout(CONNECT_TIMEOUT);
    let out = drain(&mut d);
    assert!(out.contains(&Emit::Signal(Signal::DiscoveryFailed)), "{out:?}");
    assert!(events(&out).iter().any(|e| matches!(e, ClientEvent::DiscoveryFailed { reason } if reason == "all 2 targets of _cisco-uds._tcp failed")));
}
