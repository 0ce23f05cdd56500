//! S2S streams in virtual time: engines pumped against each other (a [`Pair`] per TCP
//! connection, TLS a step both ends take), and single engines scripted byte by byte.

use std::rc::Rc;
use std::time::Duration;

use uclab_proto::dialback;
use uclab_proto::xmpp::{self, Element};

use super::*;

const T0: Duration = Duration::from_secs(1000);
/// Our IM&P domain (the initiating side in the pairs).
const HERE: &str = "example.com";
/// The federated partner (the receiving side).
const THERE: &str = "partner.example.org";
const SECRET: &str = "s3cr3tf0rd14lb4ck";
const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";

fn cfg(domain: &str, secret: &str, sasl_external: bool, dialback: bool) -> Rc<S2sConfig> {
    Rc::new(S2sConfig {
        domains: vec![domain.into()],
        secret: secret.into(),
        sasl_external,
        dialback,
    })
}

fn drain(s: &mut Stream) -> Vec<Action> {
    std::iter::from_fn(|| s.poll()).collect()
}

fn sent(a: &[Action]) -> String {
    a.iter()
        .filter_map(|x| match x {
            Action::Send(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        })
        .collect()
}

fn logs(a: &[Action]) -> Vec<&str> {
    a.iter()
        .filter_map(|x| match x {
            Action::Log { line, .. } => Some(line.as_str()),
            _ => None,
        })
        .collect()
}

fn bounces(a: &[Action]) -> Vec<(Vec<Element>, &str)> {
    a.iter()
        .filter_map(|x| match x {
            Action::Bounce(v, c) => Some((v.clone(), c.as_str())),
            _ => None,
        })
        .collect()
}

fn stanzas(a: &[Action]) -> Vec<&Element> {
    a.iter()
        .filter_map(|x| match x {
            Action::Stanza(e) => Some(e),
            _ => None,
        })
        .collect()
}

fn msg(from: &str, to: &str, n: usize) -> Element {
    Element::new("message")
        .attr("from", from)
        .attr("to", to)
        .attr("id", &format!("m{n}"))
        .child(Element::new("body").text_node(&format!("hello {n}")))
}

/// One end of a connection: its engine, everything it did, and what it asked of the I/O.
struct End {
    s: Stream,
    /// TLS names this end's `handle_tls` gets (outbound: the server's certificate; inbound:
    /// the client's).
    names: Vec<String>,
    actions: Vec<Action>,
    wants_tls: bool,
    closed: bool,
}

impl End {
    fn new(s: Stream, names: &[&str]) -> Self {
        let names = names.iter().map(|n| (*n).to_owned()).collect();
        Self { s, names, actions: Vec::new(), wants_tls: false, closed: false }
    }

    /// This end's new actions; the bytes it wrote.
    fn drain(&mut self) -> Vec<u8> {
        let mut bytes = Vec::new();
        while let Some(a) = self.s.poll() {
            match &a {
                Action::Send(b) => bytes.extend_from_slice(b),
                Action::StartTls { .. } => self.wants_tls = true,
                Action::Close => self.closed = true,
                _ => {}
            }
            self.actions.push(a);
        }
        bytes
    }

    fn deliver(&mut self, now: Duration, bytes: &[u8], chunk: usize) {
        for c in bytes.chunks(chunk.max(1)) {
            self.s.handle_bytes(now, c);
        }
    }
}

/// An initiating end `a` (outbound or verifier) connected to an inbound end `b`, with the
/// authoritative server `b`'s dialback checks go to, if any.
struct Pair {
    a: End,
    b: End,
    now: Duration,
    /// Bytes are delivered in pieces of this size.
    chunk: usize,
    authority: Option<Rc<S2sConfig>>,
    /// The verifier connections `b` asked for, run to their end.
    verifications: Vec<Self>,
}

impl Pair {
    fn new(a: End, b: End) -> Self {
        Self { a, b, now: T0, chunk: usize::MAX, authority: None, verifications: Vec::new() }
    }

    /// Shuttles bytes both ways until nothing moves: a TLS step once both ends asked for it,
    /// a close delivered as `handle_closed`, a `Verify` answered by a verifier connection to
    /// the authority.
    fn run(&mut self) {
        for _ in 0..200 {
            let (ab, ba) = (self.a.drain(), self.b.drain());
            let mut moved = !ab.is_empty() || !ba.is_empty();
            self.b.deliver(self.now, &ab, self.chunk);
            self.a.deliver(self.now, &ba, self.chunk);
            if self.a.wants_tls && self.b.wants_tls {
                let (an, bn) = (self.a.names.clone(), self.b.names.clone());
                self.a.s.handle_tls(self.now, an);
                self.b.s.handle_tls(self.now, bn);
                (self.a.wants_tls, self.b.wants_tls) = (false, false);
                moved = true;
            }
            if self.a.closed && !self.b.s.is_done() {
                self.b.s.handle_closed(self.now);
                moved = true;
            }
            if self.b.closed && !self.a.s.is_done() {
                self.a.s.handle_closed(self.now);
                moved = true;
            }
            moved |= self.answer_verifies();
            if !moved {
                return;
            }
        }
        panic!("the pair never settled");
    }

    fn answer_verifies(&mut self) -> bool {
        let Some(Action::Verify { domain, receiving, id, key }) = self
            .b
            .actions
            .iter()
            .filter(|a| matches!(a, Action::Verify { .. }))
            .nth(self.verifications.len())
            .cloned()
        else {
            return false;
        };
        let Some(authority) = self.authority.clone() else { return false };
        let v = Stream::verifier(self.b_cfg(), &receiving, &domain, &id, &key, self.now);
        let auth = Stream::inbound(authority, "auth-1".into(), self.now);
        let mut p = Self::new(End::new(v, &[&domain]), End::new(auth, &[]));
        p.now = self.now;
        p.run();
        let valid = p.a.actions.iter().find_map(|a| match a {
            Action::Verified { valid, .. } => Some(*valid),
            _ => None,
        });
        self.b.s.handle_verified(self.now, &domain, valid.unwrap_or(false));
        self.verifications.push(p);
        true
    }

    fn b_cfg(&self) -> Rc<S2sConfig> {
        cfg(THERE, SECRET, true, true)
    }
}

/// Our outbound stream to THERE (with `out` settings and the server certificate names
/// `server_names`) against THERE's inbound stream (`inb`, client certificate names
/// `client_names`), `queued` stanzas waiting; dialback checks go to `authority`.
fn federate(
    out: Rc<S2sConfig>,
    server_names: &[&str],
    inb: Rc<S2sConfig>,
    client_names: &[&str],
    authority: Option<Rc<S2sConfig>>,
    queued: usize,
) -> Pair {
    let mut o = Stream::outbound(out, HERE, THERE, T0);
    for n in 0..queued {
        o.send_stanza(T0, msg(&format!("alice@{HERE}/desk"), &format!("bob@{THERE}"), n));
    }
    let i = Stream::inbound(inb, "in-1".into(), T0);
    let mut p = Pair::new(End::new(o, server_names), End::new(i, client_names));
    p.authority = authority;
    p.run();
    p
}

fn authenticated(a: &[Action]) -> Option<(String, Auth)> {
    a.iter().find_map(|x| match x {
        Action::Authenticated { domain, auth } => Some((domain.clone(), *auth)),
        _ => None,
    })
}

/// Both ends of a SASL EXTERNAL federation, authenticated, nothing queued.
fn sasl_pair() -> Pair {
    let p = federate(
        cfg(HERE, SECRET, true, true),
        &[THERE],
        cfg(THERE, "x", true, true),
        &[HERE],
        None,
        0,
    );
    assert_eq!(authenticated(&p.b.actions), Some((HERE.into(), Auth::Sasl)));
    p
}

#[test]
fn fed1_sasl_external_when_the_certificates_name_the_domains() {
    for chunk in [usize::MAX, 7, 1] {
        let mut o = Stream::outbound(cfg(HERE, SECRET, true, true), HERE, THERE, T0);
        for n in 0..2 {
            o.send_stanza(T0, msg(&format!("alice@{HERE}/desk"), &format!("bob@{THERE}"), n));
        }
        let i = Stream::inbound(cfg(THERE, "other", true, true), "in-1".into(), T0);
        let mut p = Pair::new(End::new(o, &[THERE]), End::new(i, &[HERE]));
        p.chunk = chunk;
        p.run();
        assert_eq!(authenticated(&p.a.actions), Some((THERE.into(), Auth::Sasl)), "{chunk}");
        assert_eq!(authenticated(&p.b.actions), Some((HERE.into(), Auth::Sasl)));
        assert_eq!((p.a.s.remote(), p.b.s.remote()), (Some(THERE), Some(HERE)));
        let got = stanzas(&p.b.actions);
        assert_eq!(got.len(), 2, "the queue is flushed in order once authenticated");
        assert_eq!((got[0].get("id"), got[1].get("id")), (Some("m0"), Some("m1")));
        assert!(!p.b.actions.iter().any(|a| matches!(a, Action::Verify { .. })), "no dialback");
        // Three streams on one connection, each with its own id (RFC 6120 §4.7.3).
        let b_sent = sent(&p.b.actions);
        for id in ["id=\"in-1\"", "id=\"in-1-2\"", "id=\"in-1-3\""] {
            assert!(b_sent.contains(id), "{id} in {b_sent}");
        }
        assert!(b_sent.contains("<mechanism>EXTERNAL</mechanism>"));
        assert!(logs(&p.a.actions).contains(&"XMPP-S2S auth mechanism=EXTERNAL"));
        // Once authenticated a stanza goes out at once.
        p.a.s.send_stanza(T0, msg(&format!("carol@{HERE}"), &format!("dave@{THERE}"), 9));
        p.run();
        assert_eq!(stanzas(&p.b.actions).len(), 3);
    }
}

#[test]
fn fed1_dialback_verified_by_the_authoritative_server() {
    // THERE's server offers no EXTERNAL (no client certificate): dialback, checked with HERE's
    // authoritative server, which shares HERE's secret.
    let here = cfg(HERE, SECRET, true, true);
    let p = federate(here.clone(), &[THERE], cfg(THERE, "x", true, true), &[], Some(here), 3);
    assert!(!sent(&p.b.actions).contains("EXTERNAL"), "no client certificate, no EXTERNAL");
    let [Action::Verify { domain, receiving, id, key }] =
        &p.b.actions
            .iter()
            .filter(|a| matches!(a, Action::Verify { .. }))
            .cloned()
            .collect::<Vec<_>>()[..]
    else {
        panic!("{:?}", p.b.actions)
    };
    assert_eq!((domain.as_str(), receiving.as_str()), (HERE, THERE));
    assert_eq!(id, "in-1-2", "the key is bound to the stream after TLS");
    assert_eq!(key, &dialback::key(SECRET, THERE, HERE, "in-1-2"));
    let v = &p.verifications[0];
    assert!(v.a.actions.contains(&Action::Verified {
        domain: HERE.into(),
        id: "in-1-2".into(),
        valid: true
    }));
    assert!(v.a.s.is_done() && v.a.closed, "a verifier closes once answered");
    assert!(sent(&v.b.actions).contains("type=\"valid\""));
    assert_eq!(authenticated(&p.a.actions), Some((THERE.into(), Auth::Dialback)));
    assert_eq!(authenticated(&p.b.actions), Some((HERE.into(), Auth::Dialback)));
    assert_eq!(stanzas(&p.b.actions).len(), 3);
    // No transcript line of any of the four ends carries the key.
    for end in [&p.a, &p.b, &v.a, &v.b] {
        for l in logs(&end.actions) {
            assert!(!l.contains(key.as_str()), "{l}");
        }
    }
    assert!(
        logs(&p.a.actions).contains(&"XMPP-S2S db:result from=example.com to=partner.example.org")
    );
    // Each end writes what it sends: the receiving server's verdict is its line.
    assert!(
        logs(&p.b.actions)
            .contains(&"XMPP-S2S db:result type=valid from=partner.example.org to=example.com")
    );
}

#[test]
fn fed1_forged_dialback_key_is_refused_and_the_queue_bounced() {
    // The authoritative server for HERE has another secret than the server claiming HERE.
    let forger = cfg(HERE, "guessed", false, true);
    let authority = cfg(HERE, SECRET, true, true);
    let p = federate(forger, &[THERE], cfg(THERE, "x", true, true), &[], Some(authority), 2);
    assert!(
        p.verifications[0]
            .a
            .actions
            .iter()
            .any(|a| matches!(a, Action::Verified { valid: false, .. }))
    );
    let b_sent = sent(&p.b.actions);
    assert!(b_sent.contains("type=\"invalid\""), "{b_sent}");
    assert!(b_sent.contains("<not-authorized"), "XEP-0220 §2.2.1: the stream is closed");
    assert!(stanzas(&p.b.actions).is_empty());
    assert_eq!(authenticated(&p.a.actions), None);
    assert_eq!(authenticated(&p.b.actions), None);
    let b = bounces(&p.a.actions);
    assert_eq!(b.len(), 1);
    assert_eq!((b[0].0.len(), b[0].1), (2, "internal-server-error"), "XEP-0220 §2.1.1");
    assert!(logs(&p.b.actions).iter().any(|l| l.contains("dialback key for example.com invalid")));
    assert!(p.a.s.is_done() && p.b.s.is_done());
    // Later stanzas are bounced at once with the same condition.
    let mut a = p.a.s;
    a.send_stanza(T0, msg("alice@example.com", "bob@partner.example.org", 7));
    assert_eq!(bounces(&drain(&mut a))[0].1, "internal-server-error");
}

#[test]
fn fed1_certificate_not_naming_the_domain_means_dialback() {
    let here = cfg(HERE, SECRET, true, true);
    let p = federate(
        here.clone(),
        &[THERE],
        cfg(THERE, "x", true, true),
        &["other.example"],
        Some(here),
        1,
    );
    assert!(!sent(&p.b.actions).contains("EXTERNAL"));
    assert!(sent(&p.b.actions).contains("urn:xmpp:features:dialback"));
    assert_eq!(authenticated(&p.a.actions), Some((THERE.into(), Auth::Dialback)));
    assert_eq!(stanzas(&p.b.actions).len(), 1);
    // A server certificate that did not verify: dialback still (XEP-0344), EXTERNAL not tried.
    let here = cfg(HERE, SECRET, true, true);
    let p = federate(here.clone(), &[], cfg(THERE, "x", true, true), &[HERE], Some(here), 1);
    assert!(!logs(&p.a.actions).iter().any(|l| l.contains("EXTERNAL")));
    assert_eq!(authenticated(&p.a.actions), Some((THERE.into(), Auth::Dialback)));
}

#[test]
fn fed1_no_method_in_common_bounces() {
    // Neither side does dialback and the client certificate does not name HERE.
    let p = federate(
        cfg(HERE, SECRET, true, false),
        &[THERE],
        cfg(THERE, "x", true, false),
        &[],
        None,
        2,
    );
    let b = bounces(&p.a.actions);
    assert_eq!((b.len(), b[0].0.len(), b[0].1), (1, 2, "not-authorized"));
    assert!(p.a.s.is_done());
    // We try dialback, THERE does not take it: a dialback error, not a stream error
    // (XEP-0220 §2.4), and the queue bounced with remote-server-timeout.
    let p = federate(
        cfg(HERE, SECRET, true, true),
        &[THERE],
        cfg(THERE, "x", true, false),
        &[],
        None,
        1,
    );
    assert!(sent(&p.b.actions).contains("type=\"error\""));
    assert!(!sent(&p.b.actions).contains("<stream:error>"));
    assert_eq!(bounces(&p.a.actions)[0].1, "remote-server-timeout");
    // Our certificate check failed and we may not do dialback: nothing is tried.
    let p = federate(
        cfg(HERE, SECRET, true, false),
        &[],
        cfg(THERE, "x", true, true),
        &[HERE],
        None,
        1,
    );
    assert_eq!(bounces(&p.a.actions)[0].1, "remote-connection-failed");
    assert!(!sent(&p.a.actions).contains("<auth"));
}

#[test]
fn fed1_unknown_domain_is_host_unknown_and_remote_server_not_found() {
    let mut o = Stream::outbound(cfg(HERE, SECRET, true, true), HERE, "nobody.example.net", T0);
    o.send_stanza(T0, msg("alice@example.com", "x@nobody.example.net", 0));
    let i = Stream::inbound(cfg(THERE, "x", true, true), "in-1".into(), T0);
    let mut p = Pair::new(End::new(o, &[]), End::new(i, &[]));
    p.run();
    let b_sent = sent(&p.b.actions);
    assert!(b_sent.starts_with("<?xml"), "a header first: {b_sent}");
    assert!(b_sent.contains("<host-unknown"));
    assert_eq!(bounces(&p.a.actions)[0].1, "remote-server-not-found");
    assert!(p.b.closed && p.a.s.is_done());
}

// Scripted peers.

fn hdr(from: &str, to: &str) -> Vec<u8> {
    xmpp::server_stream_header(from, to, None).into_bytes()
}

/// THERE's inbound stream after TLS with client certificate `names`, the restarted stream's
/// features read.
fn inbound_after_tls(c: Rc<S2sConfig>, names: &[&str]) -> (Stream, Vec<Action>) {
    let mut s = Stream::inbound(c, "in-1".into(), T0);
    s.handle_bytes(T0, &hdr(HERE, THERE));
    s.handle_bytes(T0, format!("<starttls xmlns='{NS_TLS}'/>").as_bytes());
    let a = drain(&mut s);
    assert!(a.contains(&Action::StartTls { server: true, name: THERE.into() }), "{a:?}");
    s.handle_tls(T0, names.iter().map(|n| (*n).to_owned()).collect());
    s.handle_bytes(T0, &hdr(HERE, THERE));
    let a = drain(&mut s);
    (s, a)
}

fn ends_with_error(a: &[Action], condition: &str) {
    assert!(sent(a).contains(&format!("<{condition} ")), "{condition}: {a:?}");
    assert_eq!(a.last(), Some(&Action::Close), "{a:?}");
    assert!(logs(a).iter().any(|l| l.contains(&format!("stream error {condition}"))));
}

#[test]
fn fed1_stanza_before_authentication_is_not_authorized() {
    let (mut s, _) = inbound_after_tls(cfg(THERE, "x", true, true), &[HERE]);
    s.handle_bytes(T0, b"<message from='a@example.com' to='b@partner.example.org'/>");
    let a = drain(&mut s);
    ends_with_error(&a, "not-authorized");
    assert!(stanzas(&a).is_empty() && s.is_done());
    // An unsolicited `type='valid'` result authorises nothing (XEP-0220 §4.1).
    let (mut s, _) = inbound_after_tls(cfg(THERE, "x", true, true), &[]);
    s.handle_bytes(T0, b"<db:result from='example.com' to='partner.example.org' type='valid'/>");
    ends_with_error(&drain(&mut s), "not-authorized");
    assert_eq!(s.remote(), None);
}

#[test]
fn fed1_stanza_from_outside_the_authenticated_domain_is_refused() {
    let cases: [(&[u8], &str); 4] = [
        (b"<message from='mallory@evil.example' to='bob@partner.example.org'/>", "invalid-from"),
        (b"<message from='alice@example.com' to='bob@elsewhere.example'/>", "host-unknown"),
        (b"<message from='alice@example.com'/>", "improper-addressing"),
        (
            b"<foo from='alice@example.com' to='bob@partner.example.org'/>",
            "unsupported-stanza-type",
        ),
    ];
    for (bytes, condition) in cases {
        let mut p = sasl_pair();
        p.b.s.handle_bytes(
            T0,
            b"<presence from='Alice@Example.com/x' to='bob@partner.example.org'/>",
        );
        assert_eq!(stanzas(&drain(&mut p.b.s)).len(), 1, "the good one passes");
        p.b.s.handle_bytes(T0, bytes);
        let a = drain(&mut p.b.s);
        ends_with_error(&a, condition);
        assert!(stanzas(&a).is_empty());
    }
}

#[test]
fn fed1_anything_but_starttls_before_tls_is_policy_violation() {
    for bytes in [
        &b"<message from='a@example.com' to='b@partner.example.org'/>"[..],
        b"<db:result from='example.com' to='partner.example.org'>abc</db:result>",
        b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>",
    ] {
        let mut s = Stream::inbound(cfg(THERE, "x", true, true), "in-1".into(), T0);
        s.handle_bytes(T0, &hdr(HERE, THERE));
        assert!(sent(&drain(&mut s)).contains("<required/>"));
        s.handle_bytes(T0, bytes);
        let a = drain(&mut s);
        ends_with_error(&a, "policy-violation");
        assert!(!sent(&a).contains("<?xml"), "the stream was open already");
        assert!(!a.iter().any(|x| matches!(x, Action::Verify { .. })));
    }
    // A peer that offers no STARTTLS gets nothing from us.
    let mut o = Stream::outbound(cfg(HERE, SECRET, true, true), HERE, THERE, T0);
    o.send_stanza(T0, msg("alice@example.com", "bob@partner.example.org", 0));
    drain(&mut o);
    o.handle_bytes(T0, &xmpp::server_stream_header(THERE, HERE, Some("x")).into_bytes());
    o.handle_bytes(
        T0,
        b"<stream:features><dialback xmlns='urn:xmpp:features:dialback'/></stream:features>",
    );
    let a = drain(&mut o);
    assert!(!sent(&a).contains("db:result"), "no key in the clear");
    assert_eq!(bounces(&a)[0].1, "policy-violation");
}

#[test]
fn fed1_what_follows_starttls_in_the_clear_is_dropped() {
    // RFC 6120 §5.4.3.3: a stanza injected after `<starttls/>` in the same read never reaches
    // the TLS stream (the STARTTLS command injection of CVE-2011-0411 and kin).
    let mut s = Stream::inbound(cfg(THERE, "x", true, true), "in-1".into(), T0);
    s.handle_bytes(T0, &hdr(HERE, THERE));
    drain(&mut s);
    let injected = format!(
        "<starttls xmlns='{NS_TLS}'/><db:result from='example.com' to='{THERE}'>k</db:result>"
    );
    s.handle_bytes(T0, injected.as_bytes());
    let a = drain(&mut s);
    assert!(a.contains(&Action::StartTls { server: true, name: THERE.into() }));
    assert!(!sent(&a).contains("stream:error") && !s.is_done(), "{a:?}");
    s.handle_tls(T0, Vec::new());
    s.handle_bytes(T0, &hdr(HERE, THERE));
    let a = drain(&mut s);
    assert!(sent(&a).contains("urn:xmpp:features:dialback"));
    assert!(!a.iter().any(|x| matches!(x, Action::Verify { .. })), "the injected key is gone");
}

#[test]
fn fed1_sasl_external_failures() {
    let auth = |b64: &str| format!("<auth xmlns='{NS_SASL}' mechanism='EXTERNAL'>{b64}</auth>");
    // Another authorisation identity than the stream's.
    let (mut s, _) = inbound_after_tls(cfg(THERE, "x", true, true), &[HERE]);
    s.handle_bytes(T0, auth(&uclab_proto::base64::encode(b"evil.example")).as_bytes());
    assert!(sent(&drain(&mut s)).contains("<invalid-authzid/>"));
    // The stream's own, named: success.
    s.handle_bytes(T0, auth(&uclab_proto::base64::encode(b"example.com")).as_bytes());
    assert!(sent(&drain(&mut s)).contains("<success"));
    // A certificate for someone else: not offered, and refused if tried, three times at most.
    let (mut s, a) = inbound_after_tls(cfg(THERE, "x", true, true), &["other.example"]);
    assert!(!sent(&a).contains("EXTERNAL"));
    for _ in 0..2 {
        s.handle_bytes(T0, auth("=").as_bytes());
        assert!(sent(&drain(&mut s)).contains("<not-authorized/>"));
        assert!(!s.is_done());
    }
    s.handle_bytes(T0, auth("=").as_bytes());
    ends_with_error(&drain(&mut s), "not-authorized");
    // A header without `from`: the authzid names the peer, if the certificate does too.
    let mut s = Stream::inbound(cfg(THERE, "x", true, true), "in-1".into(), T0);
    s.handle_bytes(T0, &hdr("", THERE));
    s.handle_bytes(T0, format!("<starttls xmlns='{NS_TLS}'/>").as_bytes());
    s.handle_tls(T0, vec![HERE.into()]);
    s.handle_bytes(T0, &hdr("", THERE));
    assert!(!sent(&drain(&mut s)).contains("EXTERNAL"), "nobody claimed, nothing offered");
    s.handle_bytes(T0, auth("=").as_bytes());
    assert!(sent(&drain(&mut s)).contains("<not-authorized/>"), "an empty authzid names nobody");
    s.handle_bytes(T0, auth(&uclab_proto::base64::encode(b"Example.COM")).as_bytes());
    assert!(sent(&drain(&mut s)).contains("<success"));
    s.handle_bytes(T0, &hdr("", THERE));
    assert_eq!(authenticated(&drain(&mut s)), Some((HERE.into(), Auth::Sasl)));
    assert_eq!(s.remote(), Some(HERE));
}

#[test]
fn fed1_dialback_errors_leave_the_stream_up() {
    // db:result for a domain THERE does not serve: item-not-found, the stream stays.
    let (mut s, _) = inbound_after_tls(cfg(THERE, "x", true, true), &[]);
    s.handle_bytes(T0, b"<db:result from='example.com' to='other.example'>k</db:result>");
    let a = drain(&mut s);
    assert!(sent(&a).contains("<item-not-found"), "{a:?}");
    assert!(!s.is_done() && !a.iter().any(|x| matches!(x, Action::Verify { .. })));
    // db:verify: THERE answers for its own domains, before TLS too; not for others.
    let mut s = Stream::inbound(cfg(THERE, SECRET, true, true), "auth-1".into(), T0);
    s.handle_bytes(T0, &hdr("example.com", THERE));
    drain(&mut s);
    let good = dialback::key(SECRET, "example.com", THERE, "S1");
    let verify = |to: &str, key: &str| {
        format!("<db:verify from='example.com' to='{to}' id='S1'>{key}</db:verify>")
    };
    s.handle_bytes(T0, verify(THERE, &good).as_bytes());
    assert!(sent(&drain(&mut s)).contains("type=\"valid\""));
    s.handle_bytes(T0, verify(THERE, &good[1..]).as_bytes());
    assert!(sent(&drain(&mut s)).contains("type=\"invalid\""));
    s.handle_bytes(T0, verify("other.example", &good).as_bytes());
    let a = drain(&mut s);
    assert!(sent(&a).contains("type=\"error\"") && sent(&a).contains("<item-not-found"));
    assert!(!s.is_done());
}

#[test]
fn fed1_setup_deadline() {
    let mut o = Stream::outbound(cfg(HERE, SECRET, true, true), HERE, THERE, T0);
    o.send_stanza(T0, msg("alice@example.com", "bob@partner.example.org", 0));
    drain(&mut o);
    assert_eq!(o.poll_timeout(), Some(T0 + SETUP_DEADLINE));
    o.handle_timeout(T0 + SETUP_DEADLINE - Duration::from_millis(1));
    assert!(drain(&mut o).is_empty(), "spurious: nothing");
    o.handle_timeout(T0 + SETUP_DEADLINE);
    let a = drain(&mut o);
    assert_eq!(bounces(&a)[0].1, "remote-server-timeout");
    assert_eq!(a.last(), Some(&Action::Close));
    assert_eq!(o.poll_timeout(), None);
    // Inbound: connection-timeout, a header first if none was written.
    let mut i = Stream::inbound(cfg(THERE, "x", true, true), "in-1".into(), T0);
    i.handle_timeout(T0 + SETUP_DEADLINE);
    let a = drain(&mut i);
    ends_with_error(&a, "connection-timeout");
    assert!(sent(&a).starts_with("<?xml"));
    // A verifier that hears nothing says the key is not valid.
    let mut v = Stream::verifier(cfg(THERE, "x", true, true), THERE, HERE, "S1", "k", T0);
    v.handle_timeout(T0 + SETUP_DEADLINE);
    assert!(drain(&mut v).contains(&Action::Verified {
        domain: HERE.into(),
        id: "S1".into(),
        valid: false
    }));
    // Closed before the answer: the same.
    let mut v = Stream::verifier(cfg(THERE, "x", true, true), THERE, HERE, "S1", "k", T0);
    v.handle_closed(T0);
    assert!(drain(&mut v).iter().any(|a| matches!(a, Action::Verified { valid: false, .. })));
}

#[test]
fn fed1_idle_streams_close_without_loss() {
    let mut p = sasl_pair();
    assert_eq!(p.a.s.poll_timeout(), Some(T0 + IDLE));
    let t = T0 + Duration::from_secs(300);
    p.now = t;
    p.a.s.send_stanza(t, msg("alice@example.com", "bob@partner.example.org", 1));
    p.run();
    assert_eq!(p.a.s.poll_timeout(), Some(t + IDLE), "a stanza restarts the idle timer");
    assert_eq!(p.b.s.poll_timeout(), Some(t + IDLE));
    p.a.s.handle_timeout(t + IDLE);
    let a = drain(&mut p.a.s);
    assert_eq!(sent(&a), "</stream:stream>");
    assert!(bounces(&a).is_empty());
    assert_eq!(a.last(), Some(&Action::Close));
    // The other end answers the close and closes too.
    p.b.s.handle_bytes(t + IDLE, b"</stream:stream>");
    let b = drain(&mut p.b.s);
    assert_eq!(sent(&b), "</stream:stream>");
    assert!(p.b.s.is_done());
}

#[test]
fn fed1_the_queue_is_bounded() {
    let mut o = Stream::outbound(cfg(HERE, SECRET, true, true), HERE, THERE, T0);
    for n in 0..=MAX_QUEUE {
        o.send_stanza(T0, msg("alice@example.com", "bob@partner.example.org", n));
    }
    let i = Stream::inbound(cfg(THERE, "x", true, true), "in-1".into(), T0);
    let mut p = Pair::new(End::new(o, &[THERE]), End::new(i, &[HERE]));
    p.run();
    let b = bounces(&p.a.actions);
    assert_eq!(b.len(), 1, "only the one beyond the bound");
    let last = format!("m{MAX_QUEUE}");
    assert_eq!((b[0].0[0].get("id"), b[0].1), (Some(last.as_str()), "resource-constraint"));
    let got = stanzas(&p.b.actions);
    assert_eq!(got.len(), MAX_QUEUE);
    let before = format!("m{}", MAX_QUEUE - 1);
    assert_eq!(got[MAX_QUEUE - 1].get("id"), Some(before.as_str()));
    assert!(!p.b.s.is_done(), "a full queue flushed is no flood");
}

#[test]
fn fed1_a_flood_before_authentication_is_policy_violation() {
    let mut i = Stream::inbound(cfg(THERE, "x", true, true), "in-1".into(), T0);
    let header = xmpp::server_stream_header(HERE, THERE, None);
    i.handle_bytes(T0, header.as_bytes());
    i.handle_bytes(T0, b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    i.handle_tls(T0, Vec::new());
    i.handle_bytes(T0, header.as_bytes());
    drain(&mut i);
    // After TLS, not authenticated: dialback verification requests, each answered, until
    // there are too many in one second.
    let ask = b"<db:verify from='example.com' to='partner.example.org' id='x'>k</db:verify>";
    let t = T0 + Duration::from_secs(1);
    i.handle_bytes(t, &ask.repeat(MAX_STANZAS_PER_SECOND as usize));
    assert!(!i.is_done(), "the limit itself is no flood");
    drain(&mut i);
    i.handle_bytes(t, ask);
    let a = drain(&mut i);
    ends_with_error(&a, "policy-violation");
    assert!(logs(&a).iter().any(|l| l.contains("elements in a second")), "{a:?}");
}

#[test]
fn fed1_an_authenticated_burst_is_delivered_whole() {
    let presence = b"<presence from='alice@example.com' to='bob@partner.example.org'/>";
    let mut p = sasl_pair();
    // Ten times the unauthenticated limit in one second: a presence storm, all delivered.
    let n = 10 * MAX_STANZAS_PER_SECOND as usize;
    p.b.s.handle_bytes(T0 + Duration::from_secs(1), &presence.repeat(n));
    let a = drain(&mut p.b.s);
    assert_eq!(stanzas(&a).len(), n);
    assert!(!p.b.s.is_done());
}

#[test]
fn fed1_hostile_xml_gets_the_framers_condition() {
    let ten_mb = format!(
        "<message from='a@example.com' to='b@partner.example.org'><body>{}</body></message>",
        "x".repeat(10 << 20)
    );
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (ten_mb.clone().into_bytes(), "policy-violation"),
        ("<a>".repeat(xmpp::MAX_DEPTH + 3).into_bytes(), "policy-violation"),
        (b"<!DOCTYPE x [<!ENTITY a 'b'>]>".to_vec(), "restricted-xml"),
        (b"<message><body>&lol;</body></message>".to_vec(), "not-well-formed"),
    ];
    for (bytes, condition) in cases {
        let mut p = sasl_pair();
        // In pieces, as a network delivers them: refused before 10 MB are held.
        for c in bytes.chunks(64 << 10) {
            p.b.s.handle_bytes(T0, c);
            if p.b.s.is_done() {
                break;
            }
        }
        ends_with_error(&drain(&mut p.b.s), condition);
    }
    // Not XML at all, before any header: a header, then the error.
    let mut s = Stream::inbound(cfg(THERE, "x", true, true), "in-1".into(), T0);
    s.handle_bytes(T0, b"GET / HTTP/1.1\r\n\r\n");
    let a = drain(&mut s);
    assert!(sent(&a).starts_with("<?xml"));
    ends_with_error(&a, "not-well-formed");
    // The outbound side refuses it the same way and bounces what waits.
    let mut o = Stream::outbound(cfg(HERE, SECRET, true, true), HERE, THERE, T0);
    o.send_stanza(T0, msg("alice@example.com", "bob@partner.example.org", 0));
    o.handle_bytes(T0, &hdr(THERE, HERE));
    o.handle_bytes(T0, ten_mb.as_bytes());
    let a = drain(&mut o);
    assert!(sent(&a).contains("<policy-violation "));
    assert_eq!(bounces(&a)[0].1, "remote-connection-failed");
}

#[test]
fn fed1_peer_stream_errors_and_misuse() {
    // A stream error from the peer ends the outbound stream.
    let mut o = Stream::outbound(cfg(HERE, SECRET, true, true), HERE, THERE, T0);
    o.send_stanza(T0, msg("alice@example.com", "bob@partner.example.org", 0));
    o.handle_bytes(T0, &hdr(THERE, HERE));
    o.handle_bytes(T0, xmpp::stream_error("see-other-host").as_bytes());
    let a = drain(&mut o);
    assert_eq!(bounces(&a)[0].1, "remote-connection-failed");
    assert!(logs(&a).contains(&"XMPP-S2S stream error see-other-host from the peer"));
    // Inbound streams send nothing our way: a stanza given to one is bounced.
    let mut i = Stream::inbound(cfg(THERE, "x", true, true), "in-1".into(), T0);
    i.send_stanza(T0, msg("bob@partner.example.org", "alice@example.com", 0));
    assert_eq!(bounces(&drain(&mut i))[0].1, "internal-server-error");
    // A client stream (jabber:client) on the server port.
    let mut i = Stream::inbound(cfg(THERE, "x", true, true), "in-1".into(), T0);
    i.handle_bytes(T0, xmpp::stream_header(("to", THERE), None).as_bytes());
    ends_with_error(&drain(&mut i), "invalid-namespace");
}
