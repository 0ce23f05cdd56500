use super::*;
use uclab_proto::sip::frame::{Frame, StreamFramer};
use uclab_proto::sip::{self, md5_hex};

const NODE: &str = "cucm1.example.com";

fn lines() -> Vec<SipLine> {
    ["alice:1001", "bob:1002"]
        .iter()
        .map(|s| {
            let (u, e) = s.split_once(':').unwrap();
            SipLine {
                user: u.into(),
                extension: e.into(),
                device: format!("CSF{}", u.to_uppercase()),
                password: "lab".into(),
                ..SipLine::default()
            }
        })
        .collect()
}

/// A cluster of one node, and what it sent, by destination, not yet looked at.
struct Lab {
    c: Cluster,
    sent: BTreeMap<Dest, Vec<Outgoing>>,
}

impl Lab {
    fn new(cfg: SipConfig) -> Self {
        let mut c = Cluster::new(cfg, 7);
        c.add_node(NODE, 5060);
        Self { c, sent: BTreeMap::new() }
    }

    /// What went to `to` since last asked, read back.
    fn got(&mut self, to: &Dest) -> Vec<Message> {
        while let Some((d, o)) = self.c.poll_output() {
            self.sent.entry(d).or_default().push(o);
        }
        let got = self.sent.remove(to).unwrap_or_default().into_iter();
        got.map(|o| sip::read(&o.bytes).expect("we send readable SIP")).collect()
    }

    /// What went to TCP or TLS flow `f`.
    fn drain(&mut self, f: FlowId) -> Vec<Message> {
        self.got(&Dest::Stream(f))
    }

    /// What the node sent over UDP.
    fn udp(&mut self) -> Vec<Message> {
        self.got(&Dest::Udp(NODE.into()))
    }
}

fn lab(digest: bool) -> Lab {
    Lab::new(SipConfig {
        domain: "example.com".into(),
        lines: lines(),
        digest,
        ..SipConfig::default()
    })
}

fn peer(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 1, 2, n], 50_000 + u16::from(n)))
}

fn corpus(path: &str) -> Vec<u8> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../corpora/sip/");
    std::fs::read(format!("{root}{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn expectations() -> Vec<(String, Option<u16>, Option<u16>)> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../corpora/sip/expected.txt"
    ))
    .unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_owned(), f[1].parse().ok(), f[2].parse().ok())
        })
        .collect()
}

/// Every RFC 4475 and RFC 5118 message, alone over UDP, gets the answer the RFCs expect.
#[test]
fn torture_messages_over_udp_get_the_rfc_answers() {
    let exp = expectations();
    assert_eq!(exp.len(), 61, "49 + 12 messages");
    let mut wrong = Vec::new();
    for (i, (file, want, _)) in exp.iter().enumerate() {
        let mut l = lab(false);
        let flow = l.c.udp_flow(NODE, peer(i as u8 + 1)).unwrap();
        l.c.handle(Duration::ZERO, flow, &corpus(file));
        let got = l.udp();
        let last = got.last().and_then(Message::code);
        if last != *want {
            wrong.push(format!(
                "{file}: want {want:?}, got {:?}",
                got.iter().map(Message::summary).collect::<Vec<_>>()
            ));
        }
        // Every answer is one a peer can match: the request's Via, Call-ID and CSeq.
        for r in &got {
            assert!(r.get("Via").is_some() && r.get("CSeq").is_some(), "{file}: {r}");
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The same over TCP: framed by Content-Length; a broken length closes the stream unanswered.
#[test]
fn torture_messages_over_tcp_get_the_rfc_answers() {
    let mut wrong = Vec::new();
    for (i, (file, _, want)) in expectations().iter().enumerate() {
        let mut l = lab(false);
        let flow = l.c.open_stream(NODE, Transport::Tcp, peer(i as u8 + 1));
        let mut fr = StreamFramer::new();
        fr.feed(&corpus(file));
        let mut closed = false;
        loop {
            match fr.next_frame() {
                Ok(Some(Frame::Message(m))) => l.c.handle(Duration::ZERO, flow, &m),
                Ok(Some(Frame::Ping | Frame::Stun(_))) => {}
                Ok(None) => break,
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        let _ = fr.finish();
        let got = l.drain(flow);
        let first_final = got.iter().find_map(|m| m.code().filter(|c| *c >= 200));
        let ok = match want {
            Some(code) => first_final == Some(*code),
            None => first_final.is_none(),
        };
        if !ok {
            wrong.push(format!("{file}: want {want:?}, got {first_final:?} (closed {closed})"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// A message for the tests below.
fn register(user: &str, ext: &str, expires: Option<&str>, extra: &str, seq: u32) -> Vec<u8> {
    let exp = expires.map(|e| format!("Expires: {e}\r\n")).unwrap_or_default();
    format!(
        "REGISTER sip:cucm1.example.com SIP/2.0\r\n\
         Via: SIP/2.0/TCP 10.1.2.1:50001;branch=z9hG4bKr{seq}\r\n\
         From: <sip:{ext}@cucm1.example.com>;tag=f{user}\r\n\
         To: <sip:{ext}@cucm1.example.com>\r\n\
         Call-ID: reg-{user}\r\n\
         CSeq: {seq} REGISTER\r\n\
         Max-Forwards: 70\r\n\
         Contact: <sip:{user}-uuid@10.1.2.1:50001;transport=tcp>;+u.sip!devicename.ccm.cisco.com=\"CSF{}\"{extra}\r\n\
         {exp}User-Agent: Cisco-CSF\r\n\
         Content-Length: 0\r\n\r\n",
        user.to_uppercase()
    )
    .into_bytes()
}

/// alice's INVITE to 1002 over TCP, Call-ID `call{n}` (branch `z9hG4bKinv{n}`).
fn alice_calls_bob(n: u32) -> Vec<u8> {
    format!(
        "INVITE sip:1002@cucm1.example.com SIP/2.0\r\n\
         Via: SIP/2.0/TCP 10.1.2.1:50001;branch=z9hG4bKinv{n}\r\n\
         From: <sip:1001@cucm1.example.com>;tag=ca\r\n\
         To: <sip:1002@cucm1.example.com>\r\n\
         Call-ID: call{n}\r\nCSeq: 101 INVITE\r\nMax-Forwards: 70\r\n\
         Contact: <sip:alice-uuid@10.1.2.1:50001;transport=tcp>\r\n\
         Content-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n"
    )
    .into_bytes()
}

/// alice (1001) and bob (1002) registered over `t`: their flows, drained.
fn alice_and_bob(l: &mut Lab, t: Transport) -> (FlowId, FlowId) {
    let fa = l.c.open_stream(NODE, t, peer(1));
    let fb = l.c.open_stream(NODE, t, peer(2));
    l.c.handle(Duration::ZERO, fa, &register("alice", "1001", None, "", 1));
    let breg = String::from_utf8(register("bob", "1002", None, "", 1))
        .unwrap()
        .replace("10.1.2.1:50001", "10.1.2.2:50002");
    l.c.handle(Duration::ZERO, fb, breg.as_bytes());
    l.drain(fa);
    l.drain(fb);
    (fa, fb)
}

#[test]
fn cc1_register_is_granted_120_s_and_keepalive_leaves_the_binding() {
    let mut l = lab(false);
    let f = l.c.open_stream(NODE, Transport::Tcp, peer(1));
    l.c.handle(Duration::ZERO, f, &register("alice", "1001", Some("3600"), "", 1));
    let r = l.drain(f);
    assert_eq!(r[0].code(), Some(200), "{}", r[0]);
    assert_eq!(r[0].get("Expires"), Some("120"));
    assert!(r[0].get("Contact").unwrap().ends_with(";expires=120"));
    assert!(r[0].tag("To").is_some(), "a final response tags To");
    assert_eq!(l.c.bindings("1001", Duration::from_secs(119)).len(), 1);
    assert!(l.c.bindings("1001", Duration::from_secs(120)).is_empty(), "expired");
    // The keepalive to a backup: 200, binding untouched, keepalive recorded.
    l.c.handle(
        Duration::from_secs(5),
        f,
        &register("alice", "1001", Some("0"), ";expires=0;cisco-keep-alive", 2),
    );
    assert_eq!(l.drain(f)[0].code(), Some(200));
    assert_eq!(l.c.bindings("1001", Duration::from_secs(100)).len(), 1);
    assert_eq!(l.c.keepalive("CSFALICE"), Some((NODE.into(), Duration::from_secs(5))));
    // Expires 0 without the keepalive flag unregisters.
    l.c.handle(Duration::from_secs(6), f, &register("alice", "1001", Some("0"), "", 3));
    assert_eq!(l.drain(f)[0].code(), Some(200));
    assert!(l.c.bindings("1001", Duration::from_secs(6)).is_empty());
    // Unknown number: 404.
    l.c.handle(Duration::from_secs(7), f, &register("zed", "9999", None, "", 4));
    assert_eq!(l.drain(f)[0].code(), Some(404));
    // The connection closes: CUCM unregisters the device.
    l.c.handle(Duration::from_secs(8), f, &register("alice", "1001", None, "", 5));
    l.drain(f);
    l.c.close_flow(f);
    assert!(l.c.bindings("1001", Duration::from_secs(8)).is_empty());
}

#[test]
fn digest_challenge_then_credentials() {
    let mut l = lab(true);
    let f = l.c.open_stream(NODE, Transport::Tcp, peer(1));
    l.c.handle(Duration::ZERO, f, &register("alice", "1001", None, "", 1));
    let r = l.drain(f);
    assert_eq!(r[0].code(), Some(401));
    let chal = r[0].get("WWW-Authenticate").unwrap().to_owned();
    assert!(chal.contains("realm=\"ccmsipline\""), "{chal}");
    let nonce = chal.split("nonce=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let answer = |password: &str| {
        let ha1 = md5_hex(&format!("alice:{REALM}:{password}"));
        let ha2 = md5_hex("REGISTER:sip:cucm1.example.com");
        md5_hex(&format!("{ha1}:{nonce}:{ha2}"))
    };
    let auth = |resp: &str| {
        format!(
            ";x=1\r\nAuthorization: Digest username=\"alice\", realm=\"{REALM}\", nonce=\"{nonce}\", uri=\"sip:cucm1.example.com\", response=\"{resp}\", algorithm=MD5"
        )
    };
    l.c.handle(Duration::ZERO, f, &register("alice", "1001", None, &auth(&answer("wrong")), 2));
    assert_eq!(l.drain(f)[0].code(), Some(401));
    l.c.handle(Duration::ZERO, f, &register("alice", "1001", None, &auth(&answer("lab")), 3));
    assert_eq!(l.drain(f)[0].code(), Some(200));
    // A nonce we never gave is not accepted.
    let forged = auth(&answer("lab")).replace(&nonce, "0000000000000000");
    l.c.handle(Duration::ZERO, f, &register("alice", "1001", None, &forged, 4));
    assert_eq!(l.drain(f)[0].code(), Some(401));
}

/// Issue 13: a REGISTER binds a line only to the line's own device, and `Contact: *` removes
/// a line's bindings only for its owner.
#[test]
fn register_binds_only_the_lines_device_and_star_only_for_its_owner() {
    let mut l = lab(false);
    let fa = l.c.open_stream(NODE, Transport::Tcp, peer(1));
    let fx = l.c.open_stream(NODE, Transport::Tcp, peer(9));
    l.c.handle(Duration::ZERO, fa, &register("alice", "1001", None, "", 1));
    assert_eq!(l.drain(fa)[0].code(), Some(200));
    // The attacker's own contact, without a device name: its user part is no device of 1001.
    let hijack = |contact: &str, seq: u32| {
        format!(
            "REGISTER sip:cucm1.example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.1.2.9:50009;branch=z9hG4bKx{seq}\r\n\
             From: <sip:1001@cucm1.example.com>;tag=x\r\nTo: <sip:1001@cucm1.example.com>\r\n\
             Call-ID: x\r\nCSeq: {seq} REGISTER\r\nMax-Forwards: 70\r\nContact: {contact}\r\n\
             Expires: 3600\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    };
    l.c.handle(Duration::ZERO, fx, &hijack("<sip:attacker@127.0.0.1:6666>", 1));
    let r = l.drain(fx);
    assert_eq!(r[0].code(), Some(403), "{}", r[0]);
    // Naming another device (bob's) is refused as well, and so is a mix of good and bad.
    let bobs = "<sip:x@127.0.0.1:6666>;+u.sip!devicename.ccm.cisco.com=\"CSFBOB\"";
    l.c.handle(Duration::ZERO, fx, &hijack(bobs, 2));
    assert_eq!(l.drain(fx)[0].code(), Some(403));
    let mixed = format!("<sip:csfalice@127.0.0.1:6666>, {bobs}");
    l.c.handle(Duration::ZERO, fx, &hijack(&mixed, 3));
    assert_eq!(l.drain(fx)[0].code(), Some(403));
    let b = l.c.bindings("1001", Duration::ZERO);
    assert_eq!(b.len(), 1, "alice's binding alone: {b:?}");
    assert!(b[0].2.contains("alice-uuid"), "{b:?}");
    // A third-party phone registering as its device name (sipsak -C sip:CSFALICE@…) is let in.
    l.c.handle(Duration::ZERO, fx, &hijack("<sip:CSFALICE@127.0.0.1:6666>", 4));
    assert_eq!(l.drain(fx)[0].code(), Some(200));
    l.c.handle(Duration::ZERO, fa, &register("alice", "1001", None, "", 2));
    l.drain(fa);
    // `Contact: *` from a flow holding no binding of 1001: refused, bindings kept.
    let star = String::from_utf8(hijack("*", 5)).unwrap().replace("Expires: 3600", "Expires: 0");
    let fy = l.c.open_stream(NODE, Transport::Tcp, peer(8));
    l.c.handle(Duration::ZERO, fy, star.as_bytes());
    assert_eq!(l.drain(fy)[0].code(), Some(403));
    assert!(!l.c.bindings("1001", Duration::ZERO).is_empty());
    // From alice's own connection: every binding goes.
    l.c.handle(Duration::ZERO, fa, star.as_bytes());
    assert_eq!(l.drain(fa)[0].code(), Some(200));
    assert!(l.c.bindings("1001", Duration::ZERO).is_empty());
    // With digest on, an unauthenticated `*` is challenged like any REGISTER.
    let mut d = lab(true);
    let fz = d.c.open_stream(NODE, Transport::Tcp, peer(7));
    d.c.handle(Duration::ZERO, fz, star.as_bytes());
    assert_eq!(d.drain(fz)[0].code(), Some(401));
}

/// Issue 13: digest answers are password checks under the directory's lockout.
#[test]
fn wrong_digest_answers_lock_the_account() {
    let mut l = lab(true);
    let policy = crate::lockout::CredentialPolicy { failed_logon: 2, ..Default::default() };
    let lockout = crate::lockout::Lockout::new(policy);
    l.c.set_lockout(Some(lockout.clone()));
    let f = l.c.open_stream(NODE, Transport::Tcp, peer(1));
    let mut seq = 0;
    let mut try_password = |l: &mut Lab, password: &str| {
        seq += 2;
        l.c.handle(Duration::ZERO, f, &register("alice", "1001", None, "", seq));
        let r = l.drain(f);
        let chal = r[0].get("WWW-Authenticate").unwrap().to_owned();
        let nonce = chal.split("nonce=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
        let ha1 = md5_hex(&format!("alice:{REALM}:{password}"));
        let ha2 = md5_hex("REGISTER:sip:cucm1.example.com");
        let resp = md5_hex(&format!("{ha1}:{nonce}:{ha2}"));
        let auth = format!(
            ";x=1\r\nAuthorization: Digest username=\"alice\", realm=\"{REALM}\", nonce=\"{nonce}\", uri=\"sip:cucm1.example.com\", response=\"{resp}\", algorithm=MD5"
        );
        l.c.handle(Duration::ZERO, f, &register("alice", "1001", None, &auth, seq + 1));
        l.drain(f)[0].code()
    };
    assert_eq!(try_password(&mut l, "lab"), Some(200));
    assert_eq!(try_password(&mut l, "guess1"), Some(401));
    assert!(!lockout.locked("alice"));
    assert_eq!(try_password(&mut l, "guess2"), Some(401));
    assert!(lockout.locked("alice"), "two wrong answers lock");
    assert_eq!(try_password(&mut l, "lab"), Some(401), "locked: the right answer is refused");
}

#[test]
fn calls_are_routed_between_registered_lines_and_dialogs_pass_through() {
    let mut l = lab(false);
    let (fa, fb) = alice_and_bob(&mut l, Transport::Tcp);
    l.c.handle(Duration::from_secs(1), fa, &alice_calls_bob(1));
    assert_eq!(l.drain(fa)[0].code(), Some(100));
    let fwd = l.drain(fb);
    let inv = &fwd[0];
    assert_eq!(
        inv.start,
        Start::Request {
            method: "INVITE".into(),
            uri: "sip:bob-uuid@10.1.2.2:50002;transport=tcp".into()
        }
    );
    assert_eq!(inv.vias().len(), 2);
    assert!(inv.vias()[0].starts_with("SIP/2.0/TCP cucm1.example.com:5060;branch=z9hG4bK"));
    assert!(inv.vias()[1].contains("received=10.1.2.1;rport=50001"));
    assert_eq!(inv.get("Record-Route"), Some("<sip:cucm1.example.com:5060;transport=tcp;lr>"));
    assert_eq!(inv.get("Max-Forwards"), Some("69"));
    assert_eq!(inv.body, b"v=0\n");
    // bob rings and answers: the responses come back to alice with our Via popped.
    for code in [180, 200] {
        let mut r = inv.response(code, reason(code), Some("cb"));
        r.push("Contact", "<sip:bob-uuid@10.1.2.2:50002;transport=tcp>");
        r.push("Record-Route", "<sip:cucm1.example.com:5060;transport=tcp;lr>");
        l.c.handle(Duration::from_secs(2), fb, &r.to_bytes());
        let back = l.drain(fa);
        assert_eq!(back[0].code(), Some(code));
        assert_eq!(back[0].vias().len(), 1);
        assert!(back[0].vias()[0].starts_with("SIP/2.0/TCP 10.1.2.1:50001;branch=z9hG4bKinv1"));
    }
    // ACK and BYE inside the dialog follow the Route to bob's contact.
    for (method, seq) in [("ACK", 101), ("BYE", 102)] {
        let req = format!(
            "{method} sip:bob-uuid@10.1.2.2:50002;transport=tcp SIP/2.0\r\n\
             Via: SIP/2.0/TCP 10.1.2.1:50001;branch=z9hG4bK{method}\r\n\
             Route: <sip:cucm1.example.com:5060;transport=tcp;lr>\r\n\
             From: <sip:1001@cucm1.example.com>;tag=ca\r\nTo: <sip:1002@cucm1.example.com>;tag=cb\r\n\
             Call-ID: call1\r\nCSeq: {seq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        l.c.handle(Duration::from_secs(3), fa, req.as_bytes());
        let got = l.drain(fb);
        assert_eq!(got[0].method(), Some(method), "{}", got[0]);
        assert!(got[0].get("Route").is_none(), "our Route is popped");
    }
    // Calls to an unregistered line: 480; to an unknown number: 404; MF 0 when forwarding: 483.
    let to = |n: &str, mf: u32| {
        String::from_utf8(alice_calls_bob(1))
            .unwrap()
            .replace("sip:1002@", &format!("sip:{n}@"))
            .replace("Max-Forwards: 70", &format!("Max-Forwards: {mf}"))
    };
    l.c.close_flow(fb);
    l.c.handle(Duration::from_secs(4), fa, to("1002", 70).as_bytes());
    assert_eq!(l.drain(fa)[0].code(), Some(480));
    l.c.handle(Duration::from_secs(4), fa, to("7777", 70).as_bytes());
    assert_eq!(l.drain(fa)[0].code(), Some(404));
    l.c.handle(Duration::from_secs(4), fa, to("1001", 0).as_bytes());
    assert_eq!(l.drain(fa).last().and_then(Message::code), Some(483));
    assert_eq!(l.c.counters().forwarded, 3);
}

#[test]
fn options_still_answered_after_the_whole_corpus() {
    let mut l = lab(false);
    let flow = l.c.udp_flow(NODE, peer(9)).unwrap();
    for (file, _, _) in expectations() {
        l.c.handle(Duration::ZERO, flow, &corpus(&file));
    }
    l.udp();
    let options = "OPTIONS sip:cucm1.example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.1.2.9:50009;branch=z9hG4bKo\r\n\
        From: <sip:probe@example.com>;tag=p\r\nTo: <sip:cucm1.example.com>\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\n\
        Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
    l.c.handle(Duration::ZERO, flow, options.as_bytes());
    let r = l.udp();
    assert_eq!(r[0].code(), Some(200));
    assert!(r[0].get("Allow").unwrap().contains("REGISTER"));
}

#[test]
fn udp_caller_gets_no_trying_and_the_ack_of_a_refusal_reaches_the_callee() {
    let mut l = lab(false);
    let fb = l.c.open_stream(NODE, Transport::Tcp, peer(2));
    let breg = String::from_utf8(register("bob", "1002", None, "", 1))
        .unwrap()
        .replace("10.1.2.1:50001", "10.1.2.2:50002");
    l.c.handle(Duration::ZERO, fb, breg.as_bytes());
    l.drain(fb);
    let fa = l.c.udp_flow(NODE, peer(1)).unwrap();
    let invite = "INVITE sip:1002@cucm1.example.com SIP/2.0\r\n\
        Via: SIP/2.0/UDP 10.1.2.1:50001;branch=z9hG4bKu1\r\n\
        From: <sip:1001@cucm1.example.com>;tag=ca\r\nTo: <sip:1002@cucm1.example.com>\r\n\
        Call-ID: u1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
    l.c.handle(Duration::ZERO, fa, invite.as_bytes());
    assert!(l.udp().is_empty(), "a stateless proxy sends no 100 over UDP");
    let inv = l.drain(fb).remove(0);
    let busy = inv.response(486, "Busy Here", Some("cb"));
    l.c.handle(Duration::ZERO, fb, &busy.to_bytes());
    assert_eq!(l.udp()[0].code(), Some(486));
    let ack = invite
        .replace("INVITE sip", "ACK sip")
        .replace("1 INVITE", "1 ACK")
        .replace("To: <sip:1002@cucm1.example.com>", "To: <sip:1002@cucm1.example.com>;tag=cb");
    l.c.handle(Duration::ZERO, fa, ack.as_bytes());
    let got = l.drain(fb);
    assert_eq!(got[0].method(), Some("ACK"));
    assert_eq!(
        got[0].top_via().unwrap().branch(),
        inv.top_via().unwrap().branch(),
        "the INVITE's branch"
    );
}

fn subscribe(from: &str, to: &str, event: &str, expires: u32, to_tag: &str, seq: u32) -> Vec<u8> {
    format!(
        "SUBSCRIBE sip:{to}@cucm1.example.com SIP/2.0\r\n\
         Via: SIP/2.0/TCP 10.1.2.1:50001;branch=z9hG4bKs{seq}\r\n\
         From: <sip:{from}@cucm1.example.com>;tag=w{from}\r\n\
         To: <sip:{to}@cucm1.example.com>{to_tag}\r\n\
         Call-ID: sub-{from}-{to}\r\n\
         CSeq: {seq} SUBSCRIBE\r\n\
         Max-Forwards: 70\r\n\
         Contact: <sip:{from}-uuid@10.1.2.1:50001;transport=tcp>\r\n\
         Event: {event}\r\n\
         Expires: {expires}\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// A lab whose lines carry presence settings: alice (1001) a Contractor with bob on a speed
/// dial; bob (1002) and carol (1003) Executives; bob's SUBSCRIBE CSS is `<None>`; dave
/// (1004) in a partition outside the default CSS.
fn presence_lab(inter_group_allowed: bool) -> Lab {
    let mut lines = lines();
    lines[0].presence_group = "Contractors".into();
    lines[0].blf = vec!["1002".into()];
    lines[1].presence_group = "Executives".into();
    lines[1].subscribe_css = None;
    for (user, ext, group, partition) in
        [("carol", "1003", "Executives", "Internal"), ("dave", "1004", "Standard", "Restricted")]
    {
        lines.push(SipLine {
            user: user.into(),
            extension: ext.into(),
            device: format!("CSF{}", user.to_uppercase()),
            password: "lab".into(),
            partition: partition.into(),
            presence_group: group.into(),
            ..SipLine::default()
        });
    }
    let presence = PresencePolicy {
        rules: vec![("Contractors".into(), "Executives".into(), false)],
        inter_group_allowed,
    };
    Lab::new(SipConfig { domain: "example.com".into(), lines, presence, ..SipConfig::default() })
}

#[test]
fn cc6_subscribe_policy_css_none_groups_and_speed_dials() {
    let mut l = presence_lab(true);
    let f = l.c.open_stream(NODE, Transport::Tcp, peer(1));
    let t = Duration::ZERO;
    // Speed dial on an Executive: exempt from the group rule; bob is not registered: unknown.
    l.c.handle(t, f, &subscribe("1001", "1002", "presence", 3600, "", 1));
    let r = l.drain(f);
    assert_eq!(r[0].code(), Some(200), "{}", r[0]);
    assert_eq!(r[1].method(), Some("NOTIFY"));
    assert!(r[1].get("Subscription-State").unwrap().starts_with("active"));
    assert!(String::from_utf8_lossy(&r[1].body).contains("<basic>closed</basic>"));
    // Not a speed dial: the group rule refuses.
    l.c.handle(t, f, &subscribe("1001", "1003", "presence", 3600, "", 2));
    assert_eq!(l.drain(f)[0].code(), Some(403));
    // A partition the CSS does not list: not found.
    l.c.handle(t, f, &subscribe("1001", "1004", "presence", 3600, "", 3));
    assert_eq!(l.drain(f)[0].code(), Some(404));
    // <None>: every subscription is "user unknown".
    l.c.handle(t, f, &subscribe("1002", "1001", "presence", 3600, "", 4));
    let r = l.drain(f);
    assert_eq!(r[0].code(), Some(404));
    assert!(r[0].to_string().contains("user unknown"), "{}", r[0]);
    // Another event package: 489 with Allow-Events.
    l.c.handle(t, f, &subscribe("1001", "1002", "dialog", 3600, "", 5));
    let r = l.drain(f);
    assert_eq!(r[0].code(), Some(489));
    assert_eq!(r[0].get("Allow-Events"), Some("presence"));
}

#[test]
fn cc6_inter_group_policy_decides_without_a_rule() {
    // carol (Executives) watching alice (Contractors): no rule between them.
    for (allowed, want) in [(true, 200), (false, 403)] {
        let mut l = presence_lab(allowed);
        let f = l.c.open_stream(NODE, Transport::Tcp, peer(1));
        l.c.handle(Duration::ZERO, f, &subscribe("1003", "1001", "presence", 60, "", 1));
        assert_eq!(l.drain(f)[0].code(), Some(want), "inter-group allowed: {allowed}");
    }
}

#[test]
fn cc6_notifies_follow_registration_and_calls_then_unsubscribe_terminates() {
    let mut l = presence_lab(true);
    let w = l.c.open_stream(NODE, Transport::Tcp, peer(1));
    l.c.handle(Duration::ZERO, w, &subscribe("1001", "1002", "presence", 3600, "", 1));
    let r = l.drain(w);
    let tag = r[0].tag("To").expect("our tag");
    // bob registers: idle.
    let b = l.c.open_stream(NODE, Transport::Tcp, peer(2));
    l.c.handle(Duration::from_secs(1), b, &register("bob", "1002", Some("3600"), "", 1));
    assert_eq!(l.drain(b)[0].code(), Some(200));
    let n = l.drain(w);
    assert_eq!(n.len(), 1);
    assert!(String::from_utf8_lossy(&n[0].body).contains("<basic>open</basic>"));
    assert!(!String::from_utf8_lossy(&n[0].body).contains("on-the-phone"));
    // bob's connection drops: unregistered, unknown.
    l.c.close_flow(b);
    let n = l.drain(w);
    assert!(String::from_utf8_lossy(&n[0].body).contains("<basic>closed</basic>"), "{}", n[0]);
    // Unsubscribe: 200 and a terminated NOTIFY; then nothing more.
    let to_tag = format!(";tag={tag}");
    l.c.handle(Duration::from_secs(3), w, &subscribe("1001", "1002", "presence", 0, &to_tag, 2));
    let r = l.drain(w);
    assert_eq!(r[0].code(), Some(200));
    assert!(r[1].get("Subscription-State").unwrap().starts_with("terminated"));
    let b = l.c.open_stream(NODE, Transport::Tcp, peer(3));
    l.c.handle(Duration::from_secs(4), b, &register("bob", "1002", Some("3600"), "", 2));
    assert!(l.drain(w).is_empty(), "no NOTIFY after the subscription ended");
    // A refresh of a subscription that is gone: 481.
    l.c.handle(Duration::from_secs(5), w, &subscribe("1001", "1002", "presence", 60, &to_tag, 3));
    assert_eq!(l.drain(w)[0].code(), Some(481));
}

#[test]
fn a_call_over_tls_is_record_routed_through_the_tls_port() {
    let mut l = lab(false);
    l.c.set_tls_port(NODE, 5061);
    let (fa, fb) = alice_and_bob(&mut l, Transport::Tls);
    let invite = "INVITE sip:1002@cucm1.example.com SIP/2.0\r\n\
        Via: SIP/2.0/TLS 10.1.2.1:50001;branch=z9hG4bKtls1\r\n\
        From: <sip:1001@cucm1.example.com>;tag=ca\r\n\
        To: <sip:1002@cucm1.example.com>\r\n\
        Call-ID: tls1\r\nCSeq: 101 INVITE\r\nMax-Forwards: 70\r\n\
        Contact: <sip:alice-uuid@10.1.2.1:50001;transport=tls>\r\n\
        Content-Length: 0\r\n\r\n";
    l.c.handle(Duration::from_secs(1), fa, invite.as_bytes());
    let inv = &l.drain(fb)[0];
    assert!(inv.vias()[0].starts_with("SIP/2.0/TLS cucm1.example.com:5061;branch="), "{inv}");
    assert_eq!(inv.get("Record-Route"), Some("<sip:cucm1.example.com:5061;transport=tls;lr>"));
}

#[test]
fn cc6_a_line_that_loses_its_registration_mid_call_is_not_busy_when_it_returns() {
    // bob's connection drops during a call (no BYE ever comes): CUCM clears the call, so when
    // bob registers again his watchers see him idle, not busy for ever.
    let mut l = presence_lab(true);
    let (fa, fb) = alice_and_bob(&mut l, Transport::Tcp);
    l.c.handle(Duration::ZERO, fa, &subscribe("1001", "1002", "presence", 3600, "", 1));
    let r = l.drain(fa);
    assert_eq!((r[0].code(), r[1].method()), (Some(200), Some("NOTIFY")));
    l.c.handle(Duration::from_secs(1), fa, &alice_calls_bob(9));
    let fwd = l.drain(fb);
    let mut ok = fwd[0].response(200, "OK", Some("cb"));
    ok.push("Contact", "<sip:bob-uuid@10.1.2.2:50002;transport=tcp>");
    l.c.handle(Duration::from_secs(2), fb, &ok.to_bytes());
    let busy = |ms: &[Message]| {
        ms.iter()
            .filter(|m| m.method() == Some("NOTIFY"))
            .map(|m| String::from_utf8_lossy(&m.body).contains("on-the-phone"))
            .collect::<Vec<_>>()
    };
    assert_eq!(busy(&l.drain(fa)), [true], "answered: busy");
    l.c.close_flow(fb);
    let n = l.drain(fa);
    assert!(String::from_utf8_lossy(&n[0].body).contains("<basic>closed</basic>"), "{}", n[0]);
    let b = l.c.open_stream(NODE, Transport::Tcp, peer(3));
    l.c.handle(Duration::from_secs(3), b, &register("bob", "1002", Some("3600"), "", 2));
    assert_eq!(busy(&l.drain(fa)), [false], "back: idle, the call is gone");
}

/// An INVITE to the bridge's `user` from one of the four lines (dialog `conf-call-{call}`),
/// offering audio and video.
fn conf_invite(user: &str, call: u32, audio: &str) -> Vec<u8> {
    let line = (call - 1) % 4 + 1;
    let sdp = format!(
        "v=0\r\nc=IN IP4 10.1.0.{call}\r\nt=0 0\r\nm=audio 16384 RTP/AVP {audio}\r\n\
         m=video 16386 RTP/AVP 126\r\n"
    );
    format!(
        "INVITE sip:{user}@cucm1.example.com SIP/2.0\r\n\
         Via: SIP/2.0/TCP 10.1.2.1:50001;branch=z9hG4bKc{call}\r\n\
         From: <sip:100{line}@cucm1.example.com>;tag=p{call}\r\n\
         To: <sip:{user}@cucm1.example.com>\r\nCall-ID: conf-call-{call}\r\n\
         CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContact: <sip:p{call}@10.1.2.1:50001>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
    .into_bytes()
}

#[test]
fn the_conference_bridge_allocates_joins_forwards_and_limits() {
    let mut l = presence_lab(true);
    let bridge: SocketAddr = "10.1.0.11:24576".parse().unwrap();
    l.c.set_bridge(NODE, bridge);
    let f = l.c.open_stream(NODE, Transport::Tcp, peer(1));
    let t = Duration::ZERO;
    // The controller asks for an ad hoc conference: a focus URI and the bridge's RTP address.
    l.c.handle(t, f, &conf_invite("conference", 1, "0 8 101"));
    let r = l.drain(f);
    assert_eq!(r[0].code(), Some(200), "{}", r[0]);
    let contact = r[0].get("Contact").unwrap();
    assert!(contact.starts_with("<sip:conf-1@cucm1.example.com:5060;transport=tcp>"), "{contact}");
    assert!(contact.ends_with(";isfocus"));
    let body = String::from_utf8_lossy(&r[0].body).into_owned();
    assert!(body.contains("c=IN IP4 10.1.0.11") && body.contains("m=audio 24576 RTP/AVP 0 101"));
    assert!(body.contains("m=video 0 RTP/AVP 126"), "the offer's video is declined: {body}");
    // Participants join the focus; a codec the bridge cannot mix and an unknown focus fail.
    for call in 2..=4 {
        l.c.handle(t, f, &conf_invite("conf-1", call, "0"));
        assert_eq!(l.drain(f)[0].code(), Some(200));
    }
    l.c.handle(t, f, &conf_invite("conf-1", 5, "0"));
    assert_eq!(l.drain(f)[0].code(), Some(486), "four participants at most");
    l.c.handle(t, f, &conf_invite("conf-1", 6, "18"));
    assert_eq!(l.drain(f)[0].code(), Some(488));
    l.c.handle(t, f, &conf_invite("conf-9", 7, "0"));
    assert_eq!(l.drain(f)[0].code(), Some(404));
    // RTP from one participant goes to the other three.
    let from: SocketAddr = "10.1.0.2:16384".parse().unwrap();
    let to = l.c.bridge_targets(from);
    assert_eq!(to.len(), 3);
    assert!(!to.contains(&from));
    assert!(l.c.bridge_targets("10.9.9.9:1".parse().unwrap()).is_empty(), "strangers get nothing");
    assert_eq!(l.c.conferences(), [(1, 4)]);
    // Everyone leaves: the conference is gone.
    for call in 1..=4 {
        let line = (call - 1) % 4 + 1;
        let bye = format!(
            "BYE sip:conf-1@cucm1.example.com:5060;transport=tcp SIP/2.0\r\n\
             Via: SIP/2.0/TCP 10.1.2.1:50001;branch=z9hG4bKb{call}\r\n\
             From: <sip:100{line}@cucm1.example.com>;tag=p{call}\r\n\
             To: <sip:conf-1@cucm1.example.com>;tag=x\r\nCall-ID: conf-call-{call}\r\n\
             CSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        l.c.handle(t, f, bye.as_bytes());
        assert_eq!(l.drain(f)[0].code(), Some(200));
    }
    assert!(l.c.conferences().is_empty());
}

#[test]
fn the_bridge_admits_lines_only_and_forgets_participants_whose_flow_closed() {
    let mut l = presence_lab(true);
    l.c.set_bridge(NODE, "10.1.0.11:24576".parse().unwrap());
    let f = l.c.open_stream(NODE, Transport::Tcp, peer(1));
    let stranger = String::from_utf8(conf_invite("conference", 1, "0"))
        .unwrap()
        .replace("sip:1001@", "sip:mallory@");
    l.c.handle(Duration::ZERO, f, stranger.as_bytes());
    assert_eq!(l.drain(f)[0].code(), Some(403));
    l.c.handle(Duration::ZERO, f, &conf_invite("conference", 1, "0"));
    assert_eq!(l.drain(f)[0].code(), Some(200));
    let g = l.c.open_stream(NODE, Transport::Tcp, peer(2));
    l.c.handle(Duration::ZERO, g, &conf_invite("conf-1", 2, "0"));
    assert_eq!(l.drain(g)[0].code(), Some(200));
    assert_eq!(l.c.conferences(), [(1, 2)]);
    l.c.close_flow(g);
    assert_eq!(l.c.conferences(), [(1, 1)], "the closed flow's participant left");
    l.c.close_flow(f);
    assert!(l.c.conferences().is_empty());
}

/// A peer that stops reading fills its flow's channel ([`FLOW_QUEUE`]): the I/O layer closes
/// the flow as if the connection had closed (its binding goes, its watchers hear of it), and
/// the other flows keep getting what is theirs.
#[test]
fn a_flow_whose_peer_reads_nothing_is_closed_and_the_others_go_on() {
    let cfg = SipConfig { domain: "example.com".into(), lines: lines(), ..SipConfig::default() };
    let mut io = ClusterIo::new(Cluster::new(cfg, 7));
    let _udp = io.add_node(NODE, 5060);
    let (fa, mut ra) = io.open_stream(NODE, Transport::Tcp, peer(1));
    let (fb, mut rb) = io.open_stream(NODE, Transport::Tcp, peer(2));
    let codes = |rx: &mut tokio::sync::mpsc::Receiver<Box<Outgoing>>| {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|o| sip::read(&o.bytes).expect("we send readable SIP").code())
            .collect::<Vec<_>>()
    };
    let t = Duration::ZERO;
    io.with(|c| c.handle(t, fa, &register("alice", "1001", None, "", 1)));
    assert_eq!(codes(&mut ra), [Some(200)]);
    // bob watches alice: she is there.
    io.with(|c| c.handle(t, fb, &subscribe("1002", "1001", "presence", 3600, "", 1)));
    let r: Vec<Message> =
        std::iter::from_fn(|| rb.try_recv().ok()).map(|o| sip::read(&o.bytes).unwrap()).collect();
    assert_eq!((r[0].code(), r[1].method()), (Some(200), Some("NOTIFY")));
    assert!(String::from_utf8_lossy(&r[1].body).contains("<basic>open</basic>"), "{}", r[1]);
    // alice's device asks and never reads the answers: her channel fills up, and stays open.
    let options = |n: usize| {
        format!(
            "OPTIONS sip:cucm1.example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.1.2.1:50001;branch=z9hG4bKo{n}\r\n\
             From: <sip:1001@cucm1.example.com>;tag=o\r\nTo: <sip:cucm1.example.com>\r\nCall-ID: o{n}\r\n\
             CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    };
    for n in 0..FLOW_QUEUE {
        io.with(|c| c.handle(t, fa, &options(n)));
    }
    assert_eq!(io.cluster().bindings("1001", t).len(), 1, "full, not yet over");
    assert!(codes(&mut rb).is_empty());
    // One answer more does not fit: the flow is closed, as a connection that closed.
    io.with(|c| c.handle(t, fa, &options(FLOW_QUEUE)));
    assert!(io.cluster().bindings("1001", t).is_empty(), "alice is unregistered");
    let n = rb.try_recv().map(|o| sip::read(&o.bytes).unwrap()).expect("bob hears of it");
    assert!(String::from_utf8_lossy(&n.body).contains("<basic>closed</basic>"), "{n}");
    // alice's channel holds what fitted, then ends: her connection's task hangs up.
    assert_eq!(codes(&mut ra), vec![Some(200); FLOW_QUEUE]);
    assert_eq!(ra.try_recv(), Err(tokio::sync::mpsc::error::TryRecvError::Disconnected));
    // Her flow is gone: what still comes over it gets nothing; bob's goes on.
    io.with(|c| c.handle(t, fa, &options(0)));
    io.with(|c| c.handle(t, fb, &options(1)));
    assert_eq!(codes(&mut rb), [Some(200)]);
    assert!(ra.try_recv().is_err());
}
