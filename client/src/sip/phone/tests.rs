//! The registration engine against a scripted CUCM and SRST router in virtual time.

use std::time::Duration;

use uclab_proto::sip::{self, Message, digest};
use uclab_proto::uds::DeviceConfig;

use super::*;
use crate::io::{NetError, Owner};
use crate::testing::{Harness, events, opened, sent};

fn secs(s: u64) -> Time {
    Duration::from_secs(s)
}

fn config(members: &[&str], srst: Option<&str>) -> DeviceConfig {
    let mut cfg = DeviceConfig::defaults(
        "CSFALICE".into(),
        members.iter().map(|h| ((*h).to_owned(), 5060, 5061)).collect(),
        "1001".into(),
    );
    cfg.srst = srst.map(|h| (h.to_owned(), 5060));
    cfg.connection_monitor = 60;
    cfg
}

fn phone(cfg: DeviceConfig) -> Harness<Phone> {
    let user = PhoneUser { user: "alice".into(), password: "lab".into() };
    let dns = Dns::standalone(Owner::Phone, crate::resolver::ResolverConfig::new(Vec::new()));
    Harness::new(Phone::start(Time::ZERO, user, cfg, dns, 7))
}

/// The one SIP message written among `out`.
fn sip_sent(out: &[Output]) -> (ConnId, Message) {
    let s = sent(out);
    assert_eq!(s.len(), 1, "one message: {out:?}");
    (s[0].0, sip::read(&s[0].1).expect("a SIP message"))
}

fn answer(
    h: &mut Harness<Phone>,
    id: ConnId,
    req: &Message,
    code: u16,
    extra: &[(&str, &str)],
) -> Vec<Output> {
    let mut r = req.response(code, sip::reason(code), Some("cucm-tag"));
    for (k, v) in extra {
        r.push(k, *v);
    }
    h.input(Input::StreamData { id, bytes: r.to_bytes() })
}

/// Plays every node until `until`: streams open, pings get their CRLF, REGISTERs their 200.
/// Returns everything the phone put out.
fn serve(h: &mut Harness<Phone>, until: Time) -> Vec<Output> {
    let mut all = Vec::new();
    let mut out = h.drain();
    loop {
        let mut replies = Vec::new();
        for (id, _) in opened(&out) {
            replies.push(Input::StreamOpened { id });
        }
        for (id, bytes) in sent(&out) {
            if bytes.iter().all(|b| matches!(b, b'\r' | b'\n')) {
                replies.push(Input::StreamData { id, bytes: b"\r\n".to_vec() });
            } else if let Some(m) = sip::read(&bytes).filter(|m| m.method() == Some("REGISTER")) {
                let mut r = m.response(200, "OK", Some("cucm-tag"));
                r.push("Expires", "120");
                replies.push(Input::StreamData { id, bytes: r.to_bytes() });
            }
        }
        all.extend(out);
        out = Vec::new();
        for i in replies {
            out.extend(h.input(i));
        }
        if out.is_empty() {
            match h.e.poll_timeout() {
                Some(d) if d <= until => out = h.run_until(d),
                _ => {
                    h.run_until(until);
                    return all;
                }
            }
        }
    }
}

fn states(out: &[Output]) -> Vec<String> {
    events(out)
        .into_iter()
        .filter_map(|e| match e {
            ClientEvent::PhoneState { state, node, .. } => Some(format!("{state}@{node}")),
            ClientEvent::PhoneRegistered { node, expires, srst } => {
                Some(format!("registered@{node} expires={expires} srst={srst}"))
            }
            _ => None,
        })
        .collect()
}

/// Registers at the first member: REGISTER, the digest challenge, its answer, 200 with the
/// granted expiry. Returns the active stream.
fn register(h: &mut Harness<Phone>, node: &str) -> ConnId {
    let out = h.drain();
    let (id, to) = opened(&out)[0];
    assert_eq!(to, format!("{node}:5060").parse().unwrap());
    let (_, req) = sip_sent(&h.input(Input::StreamOpened { id }));
    assert_eq!(req.method(), Some("REGISTER"));
    assert_eq!(req.get("Expires"), Some("3600"));
    let challenge = r#"Digest realm="ccmsipline", nonce="n-1", algorithm=MD5"#;
    let (_, again) = sip_sent(&answer(h, id, &req, 401, &[("WWW-Authenticate", challenge)]));
    let p = digest::params(again.get("Authorization").expect("credentials")).unwrap();
    let want = digest::response(
        ("alice", "ccmsipline", "lab"),
        ("REGISTER", &format!("sip:{node}")),
        "n-1",
        None,
    );
    assert_eq!(p["response"], want, "RFC 2617 digest with the user's password");
    let out = answer(h, id, &again, 200, &[("Expires", "120")]);
    assert!(states(&out).contains(&format!("registered@{node} expires=120 srst=false")));
    id
}

/// SPEC CC1, CC2 and WIRE.md: digest registration at the first member, the refresh
/// `timerRegisterDelta` before the granted 120 s, the backup member's keepalive REGISTER, and
/// CRLF pings whose answer is due within the pong timeout. Each wake-up has its reason.
#[test]
fn registers_refreshes_pings_and_keeps_the_backup_alive() {
    let mut h = phone(config(&["10.1.0.11", "10.1.0.12"], None));
    let id = register(&mut h, "10.1.0.11");
    // The keepalive to the backup is due at once.
    assert_eq!(h.e.next_timer(), Some((Time::ZERO, PhoneTimer::Keepalive)));
    let out = h.run_until(Time::ZERO);
    let (kid, to) = opened(&out)[0];
    assert_eq!(to, "10.1.0.12:5060".parse().unwrap());
    let (_, ka) = sip_sent(&h.input(Input::StreamOpened { id: kid }));
    assert_eq!(ka.get("Expires"), Some("0"));
    assert!(ka.get("Contact").unwrap().contains("cisco-keep-alive"));
    assert_eq!(states(&answer(&mut h, kid, &ka, 200, &[])), ["keepalive@10.1.0.12"]);
    // RFC 5626 ping every 30 s; no answer within the pong timeout is a lost node.
    assert_eq!(h.e.next_timer(), Some((secs(30), PhoneTimer::Ping)));
    let out = h.run_until(secs(30));
    assert_eq!(sent(&out), [(id, b"\r\n\r\n".to_vec())]);
    assert_eq!(h.e.next_timer(), Some((secs(30) + PONG_TIMEOUT, PhoneTimer::Pong)));
    h.input(Input::StreamData { id, bytes: b"\r\n".to_vec() });
    assert_eq!(h.e.next_timer(), Some((secs(60), PhoneTimer::Ping)), "the pong came");
    // With every ping answered: the refresh at 120 - 5 s, on the same leg, and no failover.
    let out = serve(&mut h, secs(115));
    let refresh = sent(&out).into_iter().find_map(|(i, b)| {
        let m = sip::read(&b)?;
        (i == id && m.method() == Some("REGISTER") && m.get("Expires") == Some("3600")).then_some(m)
    });
    assert!(refresh.is_some(), "a refresh REGISTER by 115 s: {out:?}");
    assert!(!states(&out).iter().any(|s| s.starts_with("failover")), "{out:?}");
    assert_eq!(h.e.registered(), Some(("10.1.0.11", false)));
}

/// SPEC CC3: the active node's connection breaks → at once the next member, no wait.
#[test]
fn cc3_a_lost_node_fails_over_to_the_next_member_at_once() {
    let mut h = phone(config(&["10.1.0.11", "10.1.0.12"], None));
    let id = register(&mut h, "10.1.0.11");
    h.run_until(secs(10));
    let out = h.input(Input::StreamFailed { id, reason: NetError::Reset });
    assert_eq!(states(&out)[..2], ["failover@10.1.0.11", "registering@10.1.0.12"]);
    assert!(opened(&out).iter().any(|(_, to)| *to == "10.1.0.12:5060".parse().unwrap()));
    assert_eq!(h.e.registered(), None);
}

/// SPEC CC5: no member answers → the SRST router; the first member probed until it has
/// answered for `connectionMonitorDuration` (60 s here), then back to CUCM and the SRST
/// registration ended.
#[test]
fn cc5_srst_when_no_member_answers_and_back_after_the_monitor() {
    let mut h = phone(config(&["10.1.0.11"], Some("10.1.0.1")));
    let (id, _) = opened(&h.drain())[0];
    let out = h.input(Input::StreamFailed { id, reason: NetError::Refused });
    assert_eq!(states(&out), ["register-failed@10.1.0.11", "registering@10.1.0.1"]);
    let (sid, to) = opened(&out)[0];
    assert_eq!(to, "10.1.0.1:5060".parse().unwrap());
    let (_, req) = sip_sent(&h.input(Input::StreamOpened { id: sid }));
    let out = answer(&mut h, sid, &req, 200, &[("Expires", "120")]);
    assert!(states(&out).contains(&"registered@10.1.0.1 expires=120 srst=true".to_owned()));
    assert_eq!(h.e.registered(), Some(("10.1.0.1", true)));
    // The probe of the first member (keepalive interval, at most 30 s).
    assert!(
        matches!(h.e.next_timer(), Some((t, PhoneTimer::Probe | PhoneTimer::Ping)) if t == secs(30))
    );
    let out = h.run_until(secs(30));
    for (id, bytes) in sent(&out) {
        assert_eq!((id, bytes.as_slice()), (sid, &b"\r\n\r\n"[..]), "the SRST leg's ping");
        h.input(Input::StreamData { id, bytes: b"\r\n".to_vec() });
    }
    let (pid, to) = opened(&out)[0];
    assert_eq!(to, "10.1.0.11:5060".parse().unwrap());
    let (_, probe) = sip_sent(&h.input(Input::StreamOpened { id: pid }));
    assert!(probe.get("Contact").unwrap().contains("cisco-keep-alive"));
    assert_eq!(states(&answer(&mut h, pid, &probe, 200, &[])), ["cucm-reachable@10.1.0.11"]);
    assert_eq!(h.e.registered(), Some(("10.1.0.1", true)), "not before the monitor");
    // The next probes answer too; at 60 s of answers the phone goes back.
    let out = serve(&mut h, secs(95));
    let back = states(&out);
    let ended = sent(&out).into_iter().any(|(i, b)| {
        sip::read(&b).is_some_and(|m| {
            i == sid
                && m.get("Expires") == Some("0")
                && m.get("Contact").is_some_and(|c| !c.contains("keep-alive"))
        })
    });
    assert!(ended, "the SRST registration is ended on its own leg");
    assert_eq!(back[..2], ["leaving-srst@10.1.0.1", "registering@10.1.0.11"], "{back:?}");
}

/// SPEC MRA1, WIRE.md "Expressway MRA": through the edge every leg goes to Expressway-E's SIP
/// port over TLS checked against the domain; the REGISTER names the node, takes the edge's
/// route and carries the MRA Contact parameters; the SRST router is left out, so when no
/// member answers the phone says SRST is not reachable from outside.
#[test]
fn through_the_edge_tls_to_expressway_e_with_route_and_mra_contact() {
    let user = PhoneUser { user: "carol".into(), password: "lab".into() };
    let dns = Dns::standalone(Owner::Phone, crate::resolver::ResolverConfig::new(Vec::new()));
    let e: SocketAddr = "172.16.1.20:5061".parse().unwrap();
    let route = "<sip:10.1.0.30:5061;transport=tls;zone-id=3;directed;lr>";
    let edge = SipEdge { addr: e, domain: "example.com".into(), route: Some(route.into()) };
    let cfg = config(&["10.1.0.11", "10.1.0.12"], Some("10.1.0.40"));
    let mut h = Harness::new(Phone::start_through_edge(Time::ZERO, user, cfg, edge, dns, 7));
    let out = h.drain();
    let (id, to) = opened(&out)[0];
    assert_eq!(to, e, "to Expressway-E, not the node");
    let out = h.input(Input::StreamOpened { id });
    assert!(
        out.contains(&Output::StreamTls { id, host: "example.com".into() }),
        "TLS checked against the domain: {out:?}"
    );
    let (_, req) = sip_sent(&h.input(Input::StreamTls { id }));
    assert_eq!(req.method(), Some("REGISTER"));
    assert!(matches!(&req.start, sip::Start::Request { uri, .. } if uri == "sip:10.1.0.11"));
    assert_eq!(req.get("Route"), Some(route));
    let contact = req.get("Contact").unwrap();
    assert!(contact.ends_with(MRA_CONTACT_PARAMS), "{contact}");
    assert!(contact.contains("transport=tls"), "{contact}");
    assert!(req.get("Via").unwrap().starts_with("SIP/2.0/TLS "));
    // Neither member answers behind the edge (C says 503): no SRST from outside, and a
    // clear reason.
    let out = answer(&mut h, id, &req, 503, &[]);
    let (id2, to) = opened(&out)[0];
    assert_eq!(to, e);
    h.input(Input::StreamOpened { id: id2 });
    let (_, req2) = sip_sent(&h.input(Input::StreamTls { id: id2 }));
    assert!(matches!(&req2.start, sip::Start::Request { uri, .. } if uri == "sip:10.1.0.12"));
    let out = answer(&mut h, id2, &req2, 503, &[]);
    let st = states(&out);
    assert_eq!(st.last().map(String::as_str), Some("unregistered@"), "{st:?}");
    let reason = events(&out)
        .into_iter()
        .find_map(|ev| match ev {
            ClientEvent::PhoneState { state, reason, .. } if state == "unregistered" => {
                Some(reason)
            }
            _ => None,
        })
        .unwrap();
    assert!(reason.contains("SRST is not reachable from outside"), "{reason}");
    assert!(!opened(&out).iter().any(|(_, to)| to.ip().to_string() == "10.1.0.40"));
    assert!(!h.e.take_edge_lost(), "CUCM nodes down is not the edge lost");
}

/// Jabber 14 over MRA (issue 17): the STUN keepalive every 30 s, answered by the edge within
/// 3 s; unanswered, the edge is lost (no CUCM failover through a dead edge). A leg that cannot
/// reach Expressway-E at all is the edge lost too.
#[test]
fn through_the_edge_stun_keepalive_and_the_edge_lost() {
    let user = PhoneUser { user: "carol".into(), password: "lab".into() };
    let dns = Dns::standalone(Owner::Phone, crate::resolver::ResolverConfig::new(Vec::new()));
    let e: SocketAddr = "172.16.1.20:5061".parse().unwrap();
    let edge = SipEdge { addr: e, domain: "example.com".into(), route: None };
    let cfg = config(&["10.1.0.11"], None);
    let mut h = Harness::new(Phone::start_through_edge(Time::ZERO, user, cfg, edge, dns, 7));
    let (id, _) = opened(&h.drain())[0];
    h.input(Input::StreamOpened { id });
    let (_, req) = sip_sent(&h.input(Input::StreamTls { id }));
    answer(&mut h, id, &req, 200, &[("Expires", "120")]);
    // At 30 s: a STUN Binding request on the SIP connection, no CRLF.
    let out = h.run_until(secs(30));
    let stun: Vec<_> = sent(&out).into_iter().filter(|(i, _)| *i == id).collect();
    assert_eq!(stun.len(), 1, "{out:?}");
    let (bind, _) = uclab_proto::stun::decode(&stun[0].1).unwrap().unwrap();
    assert_eq!(bind.kind, uclab_proto::stun::BINDING_REQUEST);
    // Answered within 3 s: nothing happens.
    let from: SocketAddr = "203.0.113.100:40000".parse().unwrap();
    let ok = bind.success(from).encode();
    assert!(states(&h.input(Input::StreamData { id, bytes: ok })).is_empty());
    let out = h.run_until(secs(59));
    assert!(states(&out).is_empty(), "{out:?}");
    assert!(!h.e.take_edge_lost());
    // At 60 s the next one goes unanswered: at 63 s the edge is lost.
    let out = h.run_until(secs(64));
    let st = states(&out);
    assert!(st.contains(&"edge-failover@10.1.0.11".to_owned()), "{st:?}");
    assert!(h.e.take_edge_lost());
    assert!(!h.e.take_edge_lost(), "said once");
}

/// Issue 17: a leg that cannot reach Expressway-E at all (refused, no TLS) is the edge lost,
/// not a CUCM node: the composite moves to the next edge instead of trying the next member
/// through a dead one.
#[test]
fn through_the_edge_no_connection_to_the_edge_is_the_edge_lost() {
    let user = PhoneUser { user: "carol".into(), password: "lab".into() };
    let dns = Dns::standalone(Owner::Phone, crate::resolver::ResolverConfig::new(Vec::new()));
    let e: SocketAddr = "172.16.1.20:5061".parse().unwrap();
    let edge = SipEdge { addr: e, domain: "example.com".into(), route: None };
    let cfg = config(&["10.1.0.11", "10.1.0.12"], None);
    let mut h = Harness::new(Phone::start_through_edge(Time::ZERO, user, cfg, edge, dns, 7));
    let (id, _) = opened(&h.drain())[0];
    let out = h.input(Input::StreamFailed { id, reason: NetError::Refused });
    assert!(states(&out).contains(&"edge-failover@10.1.0.11".to_owned()), "{out:?}");
    let why = events(&out).into_iter().find_map(|e| match e {
        ClientEvent::PhoneState { state, reason, .. } if state == "edge-failover" => Some(reason),
        _ => None,
    });
    assert_eq!(why.as_deref(), Some("the edge: connection: refused"));
    assert!(opened(&out).is_empty(), "no second member through a dead edge");
    assert!(h.e.take_edge_lost());
}
