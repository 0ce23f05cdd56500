//! Hostile server-to-server peers (issue 18, SPEC FED1; RFC 6120 §4.9, XEP-0220): an attacker
//! on the internet opens streams to imp1's 5269 claiming to be partner.example.org. A stanza
//! before TLS gets `policy-violation`, a stream to a domain imp1 does not serve `host-unknown`,
//! a stanza before authentication `not-authorized`, a forged dialback key (checked with the
//! partner's real server, the authoritative one) `type='invalid'` and `not-authorized`; each is
//! in the transcript. Meanwhile and afterwards the real partner's stream works: a user there
//! and one on example.com exchange messages.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use uclab_client::driver::{self, ClientConfig, UserAction};
use uclab_client::im::ImAction;
use uclab_net::SimNet;
use uclab_proto::xmpp::server_stream_header;

mod edge_lab;
use edge_lab::{Raw, lab_of};

const IMP1: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 1, 0, 21));
const PARTNER: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 70));
const EVIL: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 66));
const ALICE: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 1, 0, 100));
const PAT: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 101));
const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";

/// A stream claiming partner.example.org to imp1, STARTTLS (no client certificate), the
/// restarted stream's features.
async fn tls(net: &SimNet) -> (Raw, String) {
    let mut c = Raw::connect(net, SocketAddr::new(IMP1, 5269)).await;
    c.send(&server_stream_header("partner.example.org", "example.com", None)).await;
    let f = c.until("</stream:features>").await;
    assert!(f.contains("<starttls"), "{f}");
    c.send(&format!("<starttls xmlns='{NS_TLS}'/>")).await;
    assert!(c.until("<proceed").await.contains("<proceed"));
    c.start_tls(net, "example.com").await;
    c.send(&server_stream_header("partner.example.org", "example.com", None)).await;
    let f = c.until("</stream:features>").await;
    (c, f)
}

#[test]
fn fed1_hostile_peers_are_refused_and_the_real_partner_keeps_working() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../scenarios/federation/chat-with-partner.toml"),
    )
    .unwrap();
    let nodes = ["dns-int", "dns-ext", "imp1", "imp2", "partner"];
    let (mut sim, lab, _capture, transcript, _) = lab_of(&text, &nodes, 120);
    for (ip, name) in [(EVIL, "evil"), (ALICE, "alice"), (PAT, "pat")] {
        transcript.set_name(ip, name);
    }
    let s = uclab_sim::parse("t.toml", &text, Path::new("t.toml")).unwrap();
    // The honest users: alice on example.com, pat on partner.example.org, plain XMPP sign-in.
    let dns = |d: &str| vec![SocketAddr::new(s.nodes.iter().find(|n| n.name == d).unwrap().ip, 53)];
    for (ip, name, server, domain, password, to, at) in [
        (ALICE, "alice", IMP1, "example.com", "lab", "pat@partner.example.org", 20),
        (PAT, "pat", PARTNER, "partner.example.org", "pat-secret-1", "alice@example.com", 21),
    ] {
        let cfg = ClientConfig {
            name: name.into(),
            dns: dns(if name == "alice" { "dns-int" } else { "dns-ext" }),
            bootstrap: Default::default(),
            stay_until: Duration::from_secs(30),
        };
        let actions = vec![
            (
                Duration::from_secs(1),
                UserAction::ImDirect {
                    server: SocketAddr::new(server, 5222),
                    domain: domain.into(),
                    user: name.into(),
                    password: password.into(),
                },
            ),
            (
                Duration::from_secs(at),
                UserAction::Im(ImAction::Message {
                    to: to.into(),
                    body: format!("still here, {name}"),
                }),
            ),
        ];
        let lab = lab.clone();
        sim.client(ip, async move {
            driver::run(SimNet::new(ip, name, &lab), cfg, actions).await?;
            Ok(())
        });
    }
    let evil = SimNet::new(EVIL, "evil", &lab);
    sim.client(EVIL, async move {
        uclab_net::time::sleep(Duration::from_secs(2)).await;
        // A stanza before TLS.
        let mut c = Raw::connect(&evil, SocketAddr::new(IMP1, 5269)).await;
        c.send(&server_stream_header("partner.example.org", "example.com", None)).await;
        c.until("</stream:features>").await;
        c.send("<message from='x@partner.example.org' to='alice@example.com'><body>hi</body></message>").await;
        let r = c.until("(closed)").await;
        assert!(r.contains("<policy-violation"), "before TLS: {r}");
        // A stream to a domain imp1 does not serve.
        let mut c = Raw::connect(&evil, SocketAddr::new(IMP1, 5269)).await;
        c.send(&server_stream_header("partner.example.org", "elsewhere.example.net", None)).await;
        let r = c.until("(closed)").await;
        assert!(r.contains("<host-unknown"), "unknown domain: {r}");
        // After TLS, no certificate: no SASL EXTERNAL offered; a stanza before authentication.
        let (mut c, f) = tls(&evil).await;
        assert!(!f.contains("EXTERNAL") && f.contains("dialback"), "{f}");
        c.send("<message from='x@partner.example.org' to='alice@example.com'><body>hi</body></message>").await;
        let r = c.until("(closed)").await;
        assert!(r.contains("<not-authorized"), "before authentication: {r}");
        // A forged dialback key: imp1 asks the partner's real server, which says invalid.
        let (mut c, _) = tls(&evil).await;
        c.send(&format!(
            "<db:result from='partner.example.org' to='example.com'>{}</db:result>",
            "0".repeat(64)
        ))
        .await;
        let r = c.until("(closed)").await;
        assert!(r.contains("type='invalid'") || r.contains("type=\"invalid\""), "forged key: {r}");
        assert!(r.contains("<not-authorized"), "forged key: {r}");
        Ok(())
    });
    sim.run().unwrap();
    let t = transcript.render();
    let got = |who: &str, from: &str| {
        transcript.events().iter().any(|e| {
            e.who == who
                && e.kind == "im-message"
                && e.fields.iter().any(|(k, v)| k == "from" && v.starts_with(from))
        })
    };
    assert!(got("pat", "alice@example.com"), "the partner still gets example.com's messages:\n{t}");
    assert!(got("alice", "pat@partner.example.org"), "and example.com the partner's:\n{t}");
    for refusal in ["policy-violation", "host-unknown", "not-authorized"] {
        assert!(t.contains(&format!("stream error {refusal}")), "{refusal} not logged:\n{t}");
    }
    assert!(t.contains("db:result type=invalid"), "the forged key's verdict is logged:\n{t}");
    // A stanza of the attacker never reached alice.
    assert!(!got("alice", "x@partner.example.org"), "{t}");
}
