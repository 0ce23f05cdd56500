//! MRA on the wire (issue 17, SPEC MRA1, MEDIA1, MEDIA2; WIRE.md "Expressway MRA"): what CUCM
//! sees of a registration through the edge, and the media relays' legs, read back from the
//! scenarios' captures with pcap-file and etherparse (no dissector needed).

mod common;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;

fn capture(scenario: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/mra").join(scenario);
    let s = uclab_sim::load(&p).unwrap();
    uclab_sim::run(&s, s.seed).capture
}

const EXPC: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 30);
const EXPE: Ipv4Addr = Ipv4Addr::new(172, 16, 1, 20);
const CUCM1: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 11);
const ALICE: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 100);
const CAROL: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 100);

/// The TCP bytes from `from` to `to` (either port 5060 end), in capture order.
fn sip_text(pkts: &[common::Seen], from: Ipv4Addr, to: Ipv4Addr) -> String {
    let b: Vec<u8> = pkts
        .iter()
        .filter(|p| !p.udp && *p.src.ip() == from && *p.dst.ip() == to)
        .filter(|p| p.src.port() == 5060 || p.dst.port() == 5060)
        .flat_map(|p| p.payload.clone())
        .collect();
    String::from_utf8_lossy(&b).into_owned()
}

#[test]
fn cucm_sees_the_registration_from_expressway_c_rewritten() {
    let pkts = common::packets("register-through-edge", &capture("register-through-edge.toml"));
    let to_cucm = sip_text(&pkts, EXPC, CUCM1);
    let from_cucm = sip_text(&pkts, CUCM1, EXPC);
    assert!(to_cucm.contains("REGISTER sip:cucm1.example.com SIP/2.0\r\n"), "{to_cucm}");
    // C's Via on top, with the zone the request came in by; the client's below it.
    let vias: Vec<&str> = to_cucm.lines().filter(|l| l.starts_with("Via: ")).take(2).collect();
    assert!(vias[0].starts_with("Via: SIP/2.0/TCP 10.1.0.30:"), "{vias:?}");
    assert!(vias[0].ends_with(";ingress-zone=CollaborationEdgeZone"), "{vias:?}");
    assert!(vias[1].starts_with("Via: SIP/2.0/TLS csfcarol.invalid"), "{vias:?}");
    // The Contact names C, keeps the client's host in orig-hostport, and says MRA.
    let contact = to_cucm.lines().find(|l| l.starts_with("Contact: ")).unwrap();
    assert!(contact.starts_with("Contact: <sip:"), "{contact}");
    assert!(contact.contains("@10.1.0.30:"), "{contact}");
    assert!(contact.contains(";orig-hostport=csfcarol.invalid"), "{contact}");
    assert!(contact.ends_with(";x-cisco-mra-ha=AR_SK;x-cisco-reg-id=1"), "{contact}");
    // C used up its own route entry.
    assert!(!to_cucm.contains("Route: <sip:10.1.0.30"), "{to_cucm}");
    // CUCM grants 120 s and says it supports MRA's session keepalives.
    assert!(from_cucm.contains("SIP/2.0 200 OK\r\n"), "{from_cucm}");
    assert!(from_cucm.contains("\r\nExpires: 120\r\n"), "{from_cucm}");
    assert!(from_cucm.contains("X-cisco-supports-AR_SK"), "{from_cucm}");
    // Outside, everything is inside TLS: no SIP in clear text between Carol and E.
    let outside: Vec<u8> = pkts
        .iter()
        .filter(|p| *p.src.ip() == CAROL || *p.dst.ip() == CAROL)
        .flat_map(|p| p.payload.clone())
        .collect();
    assert!(!String::from_utf8_lossy(&outside).contains("REGISTER sip:"));
}

#[test]
fn call_media_crosses_expressway_e_and_c_with_its_dscp() {
    let pkts = common::packets("call-outside-to-inside", &capture("call-outside-to-inside.toml"));
    let rtp = |from: Ipv4Addr, to: Ipv4Addr| {
        pkts.iter()
            .filter(|p| p.udp && *p.src.ip() == from && *p.dst.ip() == to && !p.payload.is_empty())
            .filter(|p| {
                (36000..=59999).contains(&p.src.port()) || (36000..=59999).contains(&p.dst.port())
            })
            .map(|p| p.dscp)
            .collect::<Vec<u8>>()
    };
    // Both legs of both relays, each way, every packet EF (46).
    for (from, to) in
        [(CAROL, EXPE), (EXPE, EXPC), (EXPC, ALICE), (ALICE, EXPC), (EXPC, EXPE), (EXPE, CAROL)]
    {
        let d = rtp(from, to);
        assert_eq!(d.len(), 10, "{from} → {to}: {d:?}");
        assert!(d.iter().all(|&x| x == 46), "{from} → {to}: DSCP {d:?}");
    }
    // Nothing goes straight between the outside and the inside.
    let inside = |ip: &Ipv4Addr| ip.octets()[0] == 10;
    let direct = pkts.iter().filter(|p| {
        (*p.src.ip() == CAROL && inside(p.dst.ip())) || (*p.dst.ip() == CAROL && inside(p.src.ip()))
    });
    assert_eq!(direct.count(), 0);
}

#[test]
fn video_through_the_edge_keeps_dscp_34_on_every_hop() {
    let pkts = common::packets("call-inside-to-outside", &capture("call-inside-to-outside.toml"));
    let legs =
        [(ALICE, EXPC), (EXPC, EXPE), (EXPE, CAROL), (CAROL, EXPE), (EXPE, EXPC), (EXPC, ALICE)];
    for (from, to) in legs {
        let video: Vec<u8> = pkts
            .iter()
            .filter(|p| p.udp && *p.src.ip() == from && *p.dst.ip() == to && !p.payload.is_empty())
            .filter(|p| p.dscp == 34)
            .map(|p| p.dscp)
            .collect();
        assert_eq!(video.len(), 5, "{from} → {to}: the 5 video packets");
    }
}

/// Jabber keeps its HTTPS connection to the edge for the next request (RFC 9112 §9.3), and
/// Expressway-C its connections inside: carol's whole sign-in goes to E on one connection, and
/// C sends its requests to cucm1 on fewer connections than requests.
#[test]
fn http_through_the_edge_keeps_its_connections() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/mra/signin-through-edge.toml");
    let s = uclab_sim::load(&p).unwrap();
    let r = uclab_sim::run(&s, s.seed);
    assert!(r.passed, "{:?}", r.error);
    let pkts = common::packets("signin-through-edge", &r.capture);
    // Connections that carried bytes (discovery's reachability probe to E carries none).
    let conns = |from: Ipv4Addr, to: SocketAddrV4| {
        let ports: BTreeSet<u16> = pkts
            .iter()
            .filter(|p| !p.udp && *p.src.ip() == from && p.dst == to && !p.payload.is_empty())
            .map(|p| p.src.port())
            .collect();
        ports.len()
    };
    let requests = |line: &str| {
        r.transcript.lines().filter(|l| l.contains(line) && l.contains(" tcp HTTP ")).count()
    };
    let to_e = requests("carol -> expe:8443");
    assert!(to_e >= 8, "carol's requests through the edge: {to_e}");
    assert_eq!(conns(CAROL, SocketAddrV4::new(EXPE, 8443)), 1, "{to_e} requests");
    let inside = requests("expc -> cucm1:8443");
    let c_conns = conns(EXPC, SocketAddrV4::new(CUCM1, 8443));
    assert!(c_conns >= 1 && c_conns < inside, "{c_conns} connections for {inside} requests");
}
