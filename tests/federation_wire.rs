//! Federation on the wire (issue 18, SPEC FED1, FED3, FED5), read back from the scenarios' captures:
//! which servers opened server-to-server connections to whom, and that nothing of a sign-in
//! on the foreign domain travels in clear.

mod common;

use std::net::Ipv4Addr;
use std::path::Path;

fn run(scenario: &str) -> uclab_sim::RunResult {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/federation").join(scenario);
    let s = uclab_sim::load(&p).unwrap();
    let r = uclab_sim::run(&s, s.seed);
    assert!(r.passed, "{scenario}: {:?}", r.error);
    r
}

const IMP1: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 21);
const IMP2: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 22);
const PARTNER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 70);

/// Server-to-server connections (SYNs to port 5269) from `from` to `to`.
fn s2s_connections(name: &str, capture: &[u8], from: Ipv4Addr, to: Ipv4Addr) -> usize {
    let pkts = common::packets(name, capture);
    pkts.iter()
        .filter(|p| !p.udp && *p.src.ip() == from && *p.dst.ip() == to && p.dst.port() == 5269)
        .map(|p| p.src.port())
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

/// SPEC FED1: with two federation nodes, outgoing stanzas leave through both.
#[test]
fn both_federation_nodes_carry_outgoing_stanzas() {
    let r = run("round-robin-nodes.toml");
    let (one, two) = (
        s2s_connections("round-robin", &r.capture, IMP1, PARTNER),
        s2s_connections("round-robin", &r.capture, IMP2, PARTNER),
    );
    assert!(one >= 1 && two >= 1, "imp1 {one}, imp2 {two} connections to the partner");
}

/// SPEC FED5: a blocked domain never receives anything: no connection to it at all.
#[test]
fn a_blocked_domain_is_never_connected_to() {
    let r = run("blocked-domain.toml");
    assert_eq!(s2s_connections("blocked", &r.capture, IMP1, PARTNER), 0);
    assert_eq!(s2s_connections("blocked", &r.capture, IMP2, PARTNER), 0);
    assert!(
        r.transcript
            .contains("federation refused message to partner.example.org: policy-violation")
    );
    assert!(
        r.transcript
            .contains("federation refused message from partner.example.org: policy-violation")
    );
}

/// The foreign user's password (SASL PLAIN) and the dialback keys only ever travel inside TLS.
#[test]
fn foreign_sign_in_and_dialback_stay_inside_tls() {
    let r = run("dialback-only.toml");
    let secrets: Vec<String> = ["pat-secret-1", "db:result", "db:verify", "<auth "]
        .into_iter()
        .map(str::to_owned)
        .collect();
    common::check_no_secrets("dialback-only", &r.capture, &secrets);
    assert!(r.transcript.contains("XMPP-S2S db:verify type=valid"), "dialback ran");
}

const LYNC: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 75);

/// SPEC FED3: SIP federation runs only over TLS on 5061, both ways (each server opens its own
/// connection to the other): no SIP and no chat text in clear, and every payload between the
/// two servers is a TLS record.
#[test]
fn sip_federation_runs_inside_mutual_tls_both_ways() {
    let r = run("sip-chat.toml");
    let secrets: Vec<String> =
        ["Hello from Lync", "Hello from example.com", "MESSAGE sip:", "SIP/2.0"]
            .into_iter()
            .map(str::to_owned)
            .collect();
    // SIP/2.0 would also match the phones' own REGISTERs to CUCM: check the federation
    // flows alone.
    let pkts = common::packets("sip-chat", &r.capture);
    let fed: Vec<_> = pkts
        .iter()
        .filter(|p| {
            let ends = [*p.src.ip(), *p.dst.ip()];
            ends.contains(&IMP1) && ends.contains(&LYNC)
        })
        .collect();
    assert!(fed.iter().all(|p| p.src.port() == 5061 || p.dst.port() == 5061));
    let opened = |from: Ipv4Addr, to: Ipv4Addr| {
        fed.iter()
            .filter(|p| *p.src.ip() == from && *p.dst.ip() == to && p.dst.port() == 5061)
            .count()
    };
    assert!(opened(IMP1, LYNC) > 0 && opened(LYNC, IMP1) > 0, "a connection each way");
    for p in fed.iter().filter(|p| !p.payload.is_empty()) {
        // A TLS record: content type 20–23, version 3.x.
        assert!(
            (20..=23).contains(&p.payload[0]) && p.payload[1] == 3,
            "clear text between the SIP federation servers: {:?}",
            String::from_utf8_lossy(&p.payload[..p.payload.len().min(40)])
        );
        for s in &secrets {
            assert!(!p.payload.windows(s.len()).any(|w| w == s.as_bytes()), "{s} in clear");
        }
    }
    assert!(r.transcript.contains("lync -> imp1:5061 tcp SIP MESSAGE sip:alice@example.com"));
}
