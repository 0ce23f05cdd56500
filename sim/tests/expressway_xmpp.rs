//! XMPP through Expressway-E and -C on the default topology in simulation (SPEC MRA1, issue
//! 17): an outside client signs in on expe:5222 (STARTTLS checked against the domain, SASL
//! PLAIN) and binds through the XMPP traversal zone to its home IM&P node; E refuses a stanza
//! before TLS (`policy-violation`) and a stream to another domain (`host-unknown`); a 40-deep
//! stanza ends that stream only; the home node crashing closes the client's connection, and
//! the next sign-in goes to the secondary (SPEC HA1); nothing connects from the DMZ inward.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uclab_net::{AsyncIo, Capture, Net, SimNet};
use uclab_proto::xmpp::{sasl_plain, stream_header};
mod edge_lab;

use edge_lab::{CAROL, Raw, edge_lab};

const EXPE: IpAddr = IpAddr::V4(Ipv4Addr::new(172, 16, 1, 20));
const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";

/// A client connection to expe:5222.
async fn to_e(net: &SimNet) -> Raw {
    Raw::connect(net, SocketAddr::new(EXPE, 5222)).await
}

/// Header, STARTTLS and TLS checked against `example.com`, the restarted stream's features:
/// the SASL mechanisms.
async fn to_sasl(net: &SimNet) -> (Raw, String) {
    let mut c = to_e(net).await;
    c.send(&stream_header(("to", "example.com"), None)).await;
    let f = c.until("</stream:features>").await;
    assert!(f.contains("<starttls") && f.contains("<required/>"), "{f}");
    c.send(&format!("<starttls xmlns='{NS_TLS}'/>")).await;
    let p = c.until("<proceed").await;
    assert!(p.contains("<proceed"), "{p}");
    c.start_tls(net, "example.com").await;
    c.send(&stream_header(("to", "example.com"), None)).await;
    let f = c.until("</stream:features>").await;
    (c, f)
}

/// Signed in as `user` and bound to `resource`: the bind result.
async fn signed_in(net: &SimNet, user: &str, resource: &str) -> (Raw, String) {
    let (mut c, f) = to_sasl(net).await;
    assert!(f.contains("<mechanism>PLAIN</mechanism>"), "{f}");
    assert!(f.contains("<mechanism>CISCO-VTG-TOKEN</mechanism>"), "{f}");
    let auth = format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
        sasl_plain(user, "lab")
    );
    c.send(&auth).await;
    let r = c.until("xmpp-sasl").await;
    assert!(r.contains("<success"), "{r}");
    c.send(&stream_header(("to", "example.com"), None)).await;
    let f = c.until("</stream:features>").await;
    assert!(f.contains("xmpp-bind"), "{f}");
    c.send(&format!(
        "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
         <resource>{resource}</resource></bind></iq>"
    ))
    .await;
    let b = c.until("</iq>").await;
    (c, b)
}

/// TCP SYNs (no ACK) in the capture: (source, destination).
fn syns(capture: &Capture) -> Vec<(Ipv4Addr, Ipv4Addr)> {
    let mut out = Vec::new();
    for f in capture.frames() {
        let d = &f.data;
        // Ethernet II, IPv4, TCP.
        if d.len() < 34 || d[12..14] != [0x08, 0x00] || d[23] != 6 {
            continue;
        }
        let ihl = usize::from(d[14] & 0x0f) * 4;
        let Some(&flags) = d.get(14 + ihl + 13) else { continue };
        if flags & 0x12 == 0x02 {
            let ip = |at: usize| Ipv4Addr::new(d[at], d[at + 1], d[at + 2], d[at + 3]);
            out.push((ip(26), ip(30)));
        }
    }
    out
}

#[test]
fn mra1_xmpp_through_the_edge() {
    let (mut sim, lab, capture, transcript, ips) = edge_lab(200);
    let imp1 = ips["imp1"];
    let seen: Rc<RefCell<Vec<&str>>> = Rc::default();
    let log = seen.clone();
    sim.client(CAROL, async move {
        let net = SimNet::new(CAROL, "carol", &lab);
        let t0 = tokio::time::Instant::now();
        let at = |s: u64| uclab_net::time::sleep_until(t0 + Duration::from_secs(s));
        at(2).await;
        // Carol signs in through the edge and binds: the full JID comes back.
        let (mut a, b) = signed_in(&net, "carol", "edge").await;
        assert!(b.contains("type=\"result\"") && b.contains("<jid>carol@example.com/edge</jid>"));
        // A stanza before TLS: policy-violation, closed.
        let mut c = to_e(&net).await;
        c.send(&stream_header(("to", "example.com"), None)).await;
        c.until("</stream:features>").await;
        c.send("<message to='alice@example.com'><body>hi</body></message>").await;
        let r = c.until("</stream:stream>").await;
        assert!(r.contains("<policy-violation"), "{r}");
        assert!(c.closes_within(5).await);
        // A stream to another domain: host-unknown, closed.
        let mut c = to_e(&net).await;
        c.send(&stream_header(("to", "other.example"), None)).await;
        let r = c.until("</stream:stream>").await;
        assert!(r.contains("<host-unknown"), "{r}");
        assert!(c.closes_within(5).await);
        // SASL naming a user at another domain: refused by E, the stream stays.
        let (mut c, _) = to_sasl(&net).await;
        c.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
            sasl_plain("carol@other.example", "lab")
        ))
        .await;
        let r = c.until("</failure>").await;
        assert!(r.contains("<not-authorized/>"), "{r}");
        drop(c);
        // A second session nests 40 deep after sign-in: a stream error ends it alone.
        let (mut d, b) = signed_in(&net, "carol", "deep").await;
        assert!(b.contains("carol@example.com/deep"), "{b}");
        d.send(&format!("<message to='alice@example.com'>{}", "<a>".repeat(40))).await;
        let r = d.until("</stream:stream>").await;
        assert!(r.contains("<policy-violation"), "{r}");
        assert!(d.closes_within(5).await);
        a.send("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>").await;
        let r = a.until("</iq>").await.replace("/>", ">");
        assert!(r.contains("id=\"p1\"") && r.contains("type=\"result\""), "{r}");
        log.borrow_mut().push("signed in");
        // imp1, carol's home, crashes at 30 s: her connection through the edge closes.
        at(29).await;
        assert!(a.closes_within(10).await, "the crash reaches the client");
        log.borrow_mut().push("closed by the crash");
        // Signing in again goes to imp2 (HA1: the secondary while the primary is down).
        let (_e, b) = signed_in(&net, "carol", "again").await;
        assert!(b.contains("carol@example.com/again"), "{b}");
        log.borrow_mut().push("failed over");
        Ok(())
    });
    let mut crashed = false;
    loop {
        if !crashed && sim.elapsed() >= Duration::from_secs(30) {
            sim.crash(imp1);
            crashed = true;
        }
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => panic!("{e}\n{}", transcript.render()),
        }
    }
    let t = transcript.render();
    if std::env::var_os("UCLAB_SHOW").is_some() {
        eprintln!("{t}");
    }
    assert_eq!(*seen.borrow(), ["signed in", "closed by the crash", "failed over"], "{t}");
    // The zone, the channels and E's refusals as their own lines; never a password.
    for want in [
        "carol -> expe:5222 tcp XMPP-EDGE stream to example.com",
        "carol -> expe:5222 tcp XMPP-EDGE STARTTLS",
        "expe:5222 -> carol tcp XMPP-EDGE stream error host-unknown",
        "expe:5222 -> carol tcp XMPP-EDGE stream error policy-violation (<message> before TLS)",
        "expe:5222 -> carol tcp XMPP-EDGE SASL failure not-authorized",
        "expe:7400 -> expc tcp TRAVERSAL OPEN 1 xmpp carol@example.com",
        "expc -> expe:7400 tcp TRAVERSAL OPEN 1 xmpp carol@example.com -> imp1.example.com",
        "expe:5222 -> carol tcp XMPP-EDGE stream error policy-violation (stanza nested",
        "expc -> expe:7400 tcp TRAVERSAL CLOSE 1 (imp1.example.com",
        "-> imp2.example.com",
    ] {
        assert!(t.contains(want), "{want}\n{t}");
    }
    assert!(!t.contains(&sasl_plain("carol", "lab")), "{t}");
    // C connects out to E and to the inside; nothing starts from the DMZ towards the inside.
    let dmz = |ip: Ipv4Addr| ip.octets()[..3] == [172, 16, 1];
    let inside = |ip: Ipv4Addr| ip.octets()[..2] == [10, 1];
    let syns = syns(&capture);
    assert!(syns.iter().any(|(a, b)| inside(*a) && dmz(*b)), "C's zones");
    assert!(!syns.iter().any(|(a, b)| dmz(*a) && inside(*b)), "{syns:?}");
}

/// The corpus of RFC 4475 (and RFC 5118) torture messages, by file, with what CUCM answers
/// each over TCP (corpora/sip/expected.txt).
fn torture() -> Vec<(String, Vec<u8>, Option<u16>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpora/sip");
    let table = std::fs::read_to_string(root.join("expected.txt")).unwrap();
    table
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let bytes = std::fs::read(root.join(w[0])).unwrap();
            (w[0].to_owned(), bytes, w[2].parse().ok())
        })
        .collect()
}

/// The status codes in what a connection answered.
fn statuses(text: &str) -> Vec<u16> {
    text.split("SIP/2.0 ").skip(1).filter_map(|r| r.get(..3).and_then(|c| c.parse().ok())).collect()
}

/// Issue 17, hostile input at the edge: every RFC 4475 torture message over TLS to E's SIP
/// port gets the protocol's error (a 4xx from E, or from C for what parses) or, for a response
/// or lost framing, nothing, and never a success; SIP before TLS is refused by the handshake;
/// a 10 MB stanza at E's XMPP port ends that stream with policy-violation. Meanwhile an XMPP
/// session signed in through the edge keeps working, and a valid REGISTER afterwards still
/// reaches CUCM (its digest challenge comes back).
#[test]
fn mra1_hostile_input_at_the_edge() {
    let (mut sim, lab, _capture, transcript, _) = edge_lab(600);
    let corpus = torture();
    assert!(corpus.len() > 40, "the corpus is there");
    let outcome: Rc<RefCell<Vec<String>>> = Rc::default();
    let out = outcome.clone();
    sim.client(CAROL, async move {
        let net = SimNet::new(CAROL, "carol", &lab);
        uclab_net::time::sleep(Duration::from_secs(2)).await;
        let (mut a, _) = signed_in(&net, "carol", "steady").await;
        let tls = |io: Box<dyn AsyncIo>| {
            let cfg = net.tls().client_config(&[]).unwrap();
            net.tls().connect(cfg, "example.com", io)
        };
        for (file, bytes, expected) in &corpus {
            let tcp = net.connect(SocketAddr::new(EXPE, 5061)).await.unwrap();
            let mut s = tls(Box::new(tcp)).await.unwrap();
            s.write_all(bytes).await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 8192];
            while let Ok(Ok(n)) =
                uclab_net::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await
            {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            let codes = statuses(&String::from_utf8_lossy(&got));
            assert!(codes.iter().all(|c| *c >= 400), "{file}: {codes:?}");
            if expected.is_some_and(|e| e >= 400) && !file.contains("clerr") {
                assert!(!codes.is_empty(), "{file}: no error answered");
            }
            out.borrow_mut().push(format!("{file} {codes:?}"));
        }
        // SIP in clear text on the TLS port: the handshake fails, the connection closes.
        let mut plain = net.connect(SocketAddr::new(EXPE, 5061)).await.unwrap();
        plain.write_all(&corpus[0].1).await.unwrap();
        let mut buf = [0u8; 4096];
        let r = uclab_net::time::timeout(Duration::from_secs(15), plain.read(&mut buf)).await;
        assert!(matches!(r, Ok(Ok(0) | Err(_))) || matches!(r, Ok(Ok(n)) if !buf[..n].starts_with(b"SIP/2.0")));
        // A 10 MB stanza after STARTTLS: policy-violation, that stream alone.
        let (mut big, _) = to_sasl(&net).await;
        let chunk = "a".repeat(64 * 1024);
        big.send("<message to='alice@example.com'><body>").await;
        for _ in 0..160 {
            // E stops reading once it has refused the stanza: the writer gives up then.
            let w = uclab_net::time::timeout(Duration::from_secs(5), big.io.write_all(chunk.as_bytes()));
            if !matches!(w.await, Ok(Ok(()))) {
                break;
            }
        }
        // The stream error, or (E closing with the rest of the stanza unread) a reset that
        // overtakes it; the transcript below has E's line either way.
        let r = big.until("</stream:stream>").await;
        assert!(r.contains("<policy-violation") || r.ends_with("(closed)"), "{r:.300}");
        // The signed-in session still answers, and a valid REGISTER still reaches CUCM.
        a.send("<iq type='get' id='p2'><ping xmlns='urn:xmpp:ping'/></iq>").await;
        let r = a.until("</iq>").await.replace("/>", ">");
        assert!(r.contains("id=\"p2\"") && r.contains("type=\"result\""), "{r}");
        let reg = "REGISTER sip:cucm1.example.com SIP/2.0\r\nVia: SIP/2.0/TLS csfcarol.invalid;branch=z9hG4bKok1\r\nMax-Forwards: 70\r\nFrom: <sip:1003@cucm1.example.com>;tag=a1\r\nTo: <sip:1003@cucm1.example.com>\r\nCall-ID: ok1@csfcarol\r\nCSeq: 1 REGISTER\r\nContact: <sip:u@csfcarol.invalid;transport=tls>;+u.sip!devicename.ccm.cisco.com=\"CSFCAROL\"\r\nExpires: 60\r\nContent-Length: 0\r\n\r\n";
        let tcp = net.connect(SocketAddr::new(EXPE, 5061)).await.unwrap();
        let mut s = tls(Box::new(tcp)).await.unwrap();
        s.write_all(reg.as_bytes()).await.unwrap();
        let n = uclab_net::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.unwrap().unwrap();
        let r = String::from_utf8_lossy(&buf[..n]);
        assert!(r.starts_with("SIP/2.0 401 Unauthorized"), "{r}");
        out.borrow_mut().push("still serving".into());
        Ok(())
    });
    loop {
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => panic!("{e}\n{}", transcript.render()),
        }
    }
    let seen = outcome.borrow();
    assert_eq!(seen.last().map(String::as_str), Some("still serving"), "{seen:?}");
    let t = transcript.render();
    assert!(t.contains("SIP 400 Bad Request"), "E answers what does not parse");
    assert!(t.contains("XMPP-EDGE stream error policy-violation (stanza larger"), "{t}");
}
