//! The composite: routing by owner, the finished decision, and why it wakes.

use std::time::Duration;

use uclab_proto::dns::{DnsMsg, build_response};

use super::*;
use crate::action::UserAction;
use crate::discovery::DiscoveryTimer;
use crate::io::{ConnId, HttpId, HttpResp, NetError};
use crate::testing::Harness;

const DNS: &str = "10.1.0.53:53";

fn client() -> Harness<Client> {
    let c = Client::new(ResolverConfig::new(vec![DNS.parse().unwrap()]))
        .with_horizon(Duration::from_secs(60));
    Harness::new(c)
}

fn discover(h: &mut Harness<Client>) -> Vec<Output> {
    let a = UserAction::Discover { discovery: DiscoveryConfig::domain("example.com") };
    h.e.handle_action(h.now, a, 1);
    h.drain()
}

/// Nothing asked, nothing running: finished at once. A discovery under way is not finished,
/// and its deadline says whose it is.
#[test]
fn finished_only_when_nothing_runs_and_wakes_have_reasons() {
    let mut h = client();
    assert!(h.e.is_finished(Time::ZERO));
    assert_eq!(h.e.next_wake(), None);
    discover(&mut h);
    assert!(!h.e.is_finished(Time::ZERO));
    assert_eq!(
        h.e.next_wake(),
        Some((Duration::from_secs(2), Wake::Discovery(DiscoveryTimer::Dns))),
        "the first DNS retransmission"
    );
}

/// Every input goes to the engine its id names: inputs for engines that do not exist, and DNS
/// answers nobody asked for, are dropped without a trace; an answer to discovery's query moves
/// discovery on.
#[test]
fn inputs_reach_only_the_engine_that_owns_them() {
    let mut h = client();
    let out = discover(&mut h);
    // Inputs for the IM session and the phone, which do not exist: nothing happens.
    let im = HttpId::new(Owner::Im, 1);
    let ok = Ok(HttpResp::new(200, Vec::new()));
    assert!(h.input(Input::Http { id: im, result: ok }).is_empty());
    let phone = ConnId::new(Owner::Phone, 1);
    assert!(h.input(Input::StreamFailed { id: phone, reason: NetError::Reset }).is_empty());
    // A response whose id matches no query: claimed by nobody.
    let q = out
        .iter()
        .find_map(|o| match o {
            Output::Transmit { bytes, .. } => Some(bytes.clone()),
            _ => None,
        })
        .unwrap();
    let mut stray = build_response(&q, 3, &[], &[]).unwrap();
    stray[0] ^= 0xff;
    assert!(h.input(Input::Datagram { from: DNS.parse().unwrap(), bytes: stray }).is_empty());
    // The real answer (NXDOMAIN for the CAS host) reaches discovery: the CAS result.
    let nx = build_response(&q, 3, &[], &[]).unwrap();
    assert_eq!(DnsMsg::parse(&q).unwrap().question.unwrap().0, "loginp.webexconnect.com");
    let out = h.input(Input::Datagram { from: DNS.parse().unwrap(), bytes: nx });
    assert!(
        out.iter().any(|o| matches!(o, Output::Event(ClientEvent::CasResult { .. }))),
        "{out:?}"
    );
}

/// Past the horizon, a client that only keeps its phone alive would keep waking for ever; it
/// is finished instead. Before the horizon, a signed-in user stays.
#[test]
fn the_horizon_ends_a_signed_in_client() {
    let mut h = client();
    let u = UserAction::PhoneDirect {
        servers: vec!["10.1.0.11:5060".parse().unwrap()],
        user: "alice".into(),
        password: "lab".into(),
        line: "1001".into(),
        auto_answer: false,
        udp: false,
    };
    h.e.handle_action(Time::ZERO, u, 1);
    let out = h.drain();
    let id = out
        .iter()
        .find_map(|o| match o {
            Output::StreamOpen { id, .. } => Some(*id),
            _ => None,
        })
        .expect("the phone connects");
    assert!(!h.e.is_finished(Time::ZERO), "registering");
    let out = h.input(Input::StreamOpened { id });
    let req = out
        .iter()
        .find_map(|o| match o {
            Output::StreamSend { bytes, .. } => uclab_proto::sip::read(bytes),
            _ => None,
        })
        .expect("a REGISTER");
    let ok = req.response(200, "OK", Some("t")).with("Expires", "120");
    h.input(Input::StreamData { id, bytes: ok.to_bytes() });
    assert!(h.e.phone_registered());
    // Registered and before the horizon: the user stays, and the phone's pings wake it.
    assert!(!h.e.is_finished(Duration::from_secs(30)));
    assert!(matches!(h.e.next_wake(), Some((_, Wake::Phone(_)))));
    // Past it, only the phone's upkeep is left: finished.
    assert!(h.e.is_finished(Duration::from_secs(61)));
}
