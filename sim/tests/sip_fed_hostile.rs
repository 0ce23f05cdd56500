//! Hostile SIP federation peers (issue 18, SPEC FED3): an attacker on the internet connects to
//! imp1's 5061. Without a client certificate TLS fails and nothing is read; with a lab
//! certificate for its own domain, a MESSAGE claiming to come from lync.example.net is refused
//! 403 with the reason; a message whose framing is broken ends the connection. Each refusal
//! is in the transcript, nothing reaches the router, and the real Lync domain's messages still
//! go through.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use uclab_net::{Net, SimNet};

mod edge_lab;
use edge_lab::{Raw, lab_of};

const IMP1: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 1, 0, 21));
const EVIL: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 66));

fn message(from: &str, body: &str) -> String {
    format!(
        "MESSAGE sip:alice@example.com SIP/2.0\r\nVia: SIP/2.0/TLS 203.0.113.66:5061;branch=z9hG4bKe1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{from}>;tag=e1\r\nTo: <sip:alice@example.com>\r\n\
         Call-ID: e1@evil\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn fed3_hostile_sip_peers_are_refused_and_the_real_domain_keeps_working() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/federation/sip-chat.toml"),
    )
    .unwrap();
    let nodes = ["dns-int", "dns-ext", "imp1", "imp2", "lync"];
    let (mut sim, lab, _capture, transcript, _) = lab_of(&text, &nodes, 60);
    transcript.set_name(EVIL, "evil");
    let evil = SimNet::new(EVIL, "evil", &lab);
    sim.client(EVIL, async move {
        uclab_net::time::sleep(Duration::from_millis(500)).await;
        let to = SocketAddr::new(IMP1, 5061);
        // No client certificate: the server refuses the handshake; no SIP is read.
        let mut c = Raw::connect(&evil, to).await;
        let cfg = evil.tls().client_config(&[]).unwrap();
        let io = std::mem::replace(&mut c.io, Box::new(tokio::io::empty()));
        if let Ok(t) = evil.tls().connect(cfg, "imp1.example.com", io).await {
            c.io = Box::new(t);
            c.send(&message("bob@lync.example.net", "forged one")).await;
            let r = c.until("SIP/2.0 ").await;
            assert!(r.ends_with("(closed)") && !r.contains("SIP/2.0"), "no certificate: {r}");
        }
        // A certificate for its own domain, a message claiming lync.example.net: 403.
        let mut c = Raw::connect(&evil, to).await;
        assert!(c.start_tls_as(&evil, "imp1.example.com", &["evil.example"]).await);
        c.send(&message("bob@lync.example.net", "forged two")).await;
        let r = c.until("\r\n\r\n").await;
        assert!(r.starts_with("SIP/2.0 403"), "another domain's message: {r}");
        assert!(r.contains("does not name lync.example.net"), "{r}");
        // Broken framing (two Content-Lengths): the connection ends.
        c.send("MESSAGE sip:alice@example.com SIP/2.0\r\nContent-Length: 5\r\nContent-Length: 900\r\n\r\n")
            .await;
        assert!(c.closes_within(15).await, "framing lost: closed");
        // Stay until the real domain has spoken (its step at 1.5 s).
        uclab_net::time::sleep(Duration::from_secs(3)).await;
        Ok(())
    });
    sim.run().unwrap();
    let t = transcript.render();
    assert!(t.contains("TLS with a client certificate failed"), "{t}");
    assert!(t.contains("SIP 403 Forbidden (MESSAGE)"), "{t}");
    assert!(t.contains("SIP framing lost"), "{t}");
    assert!(!t.contains("forged"), "{t}");
    // The real domain's message (the scenario's step at 1.5 s) still crosses and is taken.
    assert!(t.contains("lync -> imp1:5061 tcp SIP MESSAGE sip:alice@example.com"), "{t}");
    let ok_after = t
        .lines()
        .skip_while(|l| !l.contains("lync -> imp1:5061 tcp SIP MESSAGE"))
        .any(|l| l.contains("imp1:5061 -> lync tcp SIP 200 OK (MESSAGE)"));
    assert!(ok_after, "{t}");
}
