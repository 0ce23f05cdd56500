use super::*;
use crate::io::Owner;
use crate::resolver::ResolverConfig;
use uclab_proto::dns::DnsMsg;

const DNS: &str = "10.1.0.53:53";

fn start() -> ImSession {
    let servers = vec!["imp1.example.com".into(), "imp2.example.com".into()];
    ImSession::start(
        Time::ZERO,
        ("alice", "lab", "uclab"),
        servers,
        Dns::standalone(Owner::Im, ResolverConfig::new(vec![DNS.parse().unwrap()])),
        5,
    )
}

fn drain(s: &mut ImSession) -> Vec<Output> {
    std::iter::from_fn(|| s.poll_output()).collect()
}

fn events(out: &[Output]) -> Vec<ClientEvent> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn states(out: &[Output]) -> Vec<String> {
    events(out)
        .into_iter()
        .filter_map(|e| match e {
            ClientEvent::ImState { state, node } => Some(format!("{state}@{node}")),
            _ => None,
        })
        .collect()
}

/// Answers the pending A query with `ip`.
fn answer_dns(s: &mut ImSession, out: &[Output], ip: [u8; 4]) {
    let q = out
        .iter()
        .find_map(|o| match o {
            Output::Transmit { bytes, .. } => Some(bytes.clone()),
            _ => None,
        })
        .expect("a DNS query");
    assert!(DnsMsg::parse(&q).is_ok());
    // The header and question of the query (its EDNS record dropped) with QR set, and one
    // answer: a pointer to the question name, A, IN, TTL 60.
    let mut end = 12;
    while q[end] != 0 {
        end += 1 + usize::from(q[end]);
    }
    let mut resp = q[..end + 5].to_vec();
    resp[2] |= 0x80;
    resp[7] = 1;
    resp[11] = 0;
    resp.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
    resp.extend_from_slice(&ip);
    s.handle_input(Time::ZERO, Input::Datagram { from: DNS.parse().unwrap(), bytes: resp });
}

fn http(out: &[Output]) -> HttpReq {
    out.iter()
        .find_map(|o| match o {
            Output::Http(r) => Some(r.clone()),
            _ => None,
        })
        .expect("an HTTP request")
}

fn reply(s: &mut ImSession, r: &HttpReq, status: u16, body: String) {
    let result = Ok(HttpResp::new(status, body.into_bytes()));
    s.handle_input(Time::ZERO, Input::Http { id: r.id, result });
}

fn stream_data(s: &mut ImSession, id: ConnId, xml: &str) -> Vec<Output> {
    s.handle_input(Time::ZERO, Input::StreamData { id, bytes: xml.as_bytes().to_vec() });
    drain(s)
}

fn sent_text(out: &[Output]) -> String {
    out.iter()
        .filter_map(|o| match o {
            Output::StreamSend { bytes, .. } => Some(String::from_utf8_lossy(bytes).into_owned()),
            _ => None,
        })
        .collect()
}

/// Runs SOAP to the point where XMPP is about to open; returns the outputs of the OTP step.
fn through_soap(s: &mut ImSession) -> Vec<Output> {
    let out = drain(s);
    assert_eq!(states(&out), ["SOAPCONNECT_P@imp1.example.com"]);
    answer_dns(s, &out, [10, 1, 0, 21]);
    let r = http(&drain(s));
    assert_eq!((r.method, r.path.as_str(), r.addr.port()), ("POST", soap::PATH, SOAP_PORT));
    assert!(String::from_utf8_lossy(&r.body).contains("<ns1:username>alice</ns1:username>"));
    reply(s, &r, 200, soap::success_response("login", "sk-1"));
    let r = http(&drain(s));
    assert!(String::from_utf8_lossy(&r.body).contains("sk-1"));
    let cfg = soap::config_response(&[
        (soap::P_DOMAIN, "example.com"),
        (soap::P_PRIMARY, "imp2.example.com"),
        (soap::P_SECONDARY, "imp1.example.com"),
    ]);
    reply(s, &r, 200, cfg);
    let r = http(&drain(s));
    reply(s, &r, 200, soap::success_response("get-onetime-password", "otp-1"));
    drain(s)
}

#[test]
fn direct_plain_sign_in_then_roster_presence_and_errors() {
    let server: SocketAddr = "127.0.0.1:5222".parse().unwrap();
    let dns = Dns::standalone(Owner::Im, ResolverConfig::new(Vec::new()));
    let mut s =
        ImSession::direct(Time::ZERO, ("alice", "pw", "probe"), "example.test", server, dns, 7);
    let out = drain(&mut s);
    let id = out
        .iter()
        .find_map(|o| match o {
            Output::StreamOpen { id, to, .. } if *to == server => Some(*id),
            _ => None,
        })
        .expect("straight to the server: no SOAP, no DNS");
    s.handle_input(Time::ZERO, Input::StreamOpened { id });
    drain(&mut s);
    let head = xmpp::stream_header(("from", "example.test"), Some("1"));
    stream_data(
        &mut s,
        id,
        &format!(
            "{head}<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>"
        ),
    );
    let out = stream_data(&mut s, id, "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    assert!(out.contains(&Output::StreamTls { id, host: "example.test".into() }));
    s.handle_input(Time::ZERO, Input::StreamTls { id });
    drain(&mut s);
    let out = stream_data(
        &mut s,
        id,
        &format!(
            "{head}<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-1</mechanism><mechanism>PLAIN</mechanism></mechanisms></stream:features>"
        ),
    );
    assert!(sent_text(&out).contains(&xmpp::sasl_plain("alice", "pw")));
    stream_data(&mut s, id, "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
    stream_data(
        &mut s,
        id,
        &format!(
            "{head}<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>"
        ),
    );
    let out = stream_data(
        &mut s,
        id,
        "<iq type='result' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>alice@example.test/probe</jid></bind></iq>",
    );
    let text = sent_text(&out);
    // RFC 6121 §2.2: the roster, then initial presence.
    let (roster, presence) = (text.find("jabber:iq:roster"), text.find("<presence"));
    assert!(roster.is_some() && presence.is_some() && roster < presence, "{text}");
    let out = stream_data(
        &mut s,
        id,
        "<iq type='result' id='roster1'><query xmlns='jabber:iq:roster' ver='3'><item jid='bob@example.test' subscription='both'/><item jid='eve@example.test' subscription='from'/></query></iq>",
    );
    assert_eq!(events(&out), [ClientEvent::ImRoster { contacts: 1, items: 2 }]);
    // A push is acknowledged; one from someone else is not a push.
    let out = stream_data(
        &mut s,
        id,
        "<iq type='set' id='p1'><query xmlns='jabber:iq:roster'><item jid='dave@example.test' subscription='none' ask='subscribe'/></query></iq>",
    );
    assert_eq!(
        events(&out),
        [ClientEvent::ImContact {
            jid: "dave@example.test".into(),
            subscription: "none+ask".into()
        }]
    );
    assert!(sent_text(&out).contains("type=\"result\"") && sent_text(&out).contains("p1"));
    let out = stream_data(
        &mut s,
        id,
        "<iq type='set' id='p2' from='mallory@example.test/x'><query xmlns='jabber:iq:roster'><item jid='x@y'/></query></iq>",
    );
    assert!(events(&out).is_empty() && sent_text(&out).contains("service-unavailable"));
    let out = stream_data(
        &mut s,
        id,
        "<presence from='bob@example.test/pc'><show>away</show></presence><presence from='alice@example.test/other'/><presence from='dave@example.test' type='subscribe'/><presence from='eve@example.test' to='alice@example.test' type='error'><error type='cancel'><not-allowed xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>",
    );
    assert_eq!(
        events(&out),
        [
            ClientEvent::ImPresence { from: "bob@example.test/pc".into(), show: "away".into() },
            ClientEvent::ImSubscription {
                from: "dave@example.test".into(),
                kind: "subscribe".into()
            },
            ClientEvent::ImRefused {
                to: "eve@example.test".into(),
                condition: "not-allowed".into(),
                reason: String::new()
            },
        ],
        "own resources are not contacts"
    );
    // A lost stream in direct mode is a failure, not an HA1 failover.
    s.handle_input(Time::ZERO, Input::StreamFailed { id, reason: NetError::Reset });
    let ev = events(&drain(&mut s));
    assert!(
        matches!(&ev[..], [ClientEvent::ImFailed { reason }] if reason.contains("lost")),
        "{ev:?}"
    );
}

#[test]
fn au4_soap_then_xmpp_to_the_primary_from_the_configuration() {
    let mut s = start();
    let out = through_soap(&mut s);
    assert_eq!(states(&out), ["XMPPCONNECT_P@imp2.example.com"]);
    answer_dns(&mut s, &out, [10, 1, 0, 22]);
    let out = drain(&mut s);
    let (id, to) = out
        .iter()
        .find_map(|o| match o {
            Output::StreamOpen { id, to, .. } => Some((*id, *to)),
            _ => None,
        })
        .unwrap();
    assert_eq!(to, "10.1.0.22:5222".parse().unwrap());
    s.handle_input(Time::ZERO, Input::StreamOpened { id });
    assert!(sent_text(&drain(&mut s)).contains("to=\"example.com\""));
    let head = xmpp::stream_header(("from", "example.com"), Some("1"));
    let out = stream_data(
        &mut s,
        id,
        &format!(
            "{head}<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>"
        ),
    );
    assert!(sent_text(&out).contains("<starttls"));
    let out = stream_data(&mut s, id, "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    assert!(out.contains(&Output::StreamTls { id, host: "example.com".into() }), "{out:?}");
    s.handle_input(Time::ZERO, Input::StreamTls { id });
    drain(&mut s);
    // The features as Cisco's jabberwerx SDK test has them, with home/backup node hints.
    let corpus = include_str!("../../../corpora/xmpp/cisco_imp_xmpp_samples.txt");
    let features = corpus
        .lines()
        .find(|l| l.starts_with("<stream:features>") && l.contains("domain-based-name"))
        .expect("the hints sample");
    let out = stream_data(&mut s, id, &format!("{head}{features}"));
    assert_eq!(
        events(&out),
        [ClientEvent::ImNodes { home: "testserver01".into(), backup: "testserver02".into() }]
    );
    let token = xmpp::sasl_vtg_token("alice", "example.com", "otp-1");
    assert!(sent_text(&out).contains(&token), "the one-time password as the token");
    let summary = out.iter().find_map(|o| match o {
        Output::StreamSend { summary, .. } => Some(summary.clone()),
        _ => None,
    });
    assert_eq!(
        summary.as_deref(),
        Some("XMPP auth mechanism=CISCO-VTG-TOKEN"),
        "no secret in the transcript"
    );
    stream_data(&mut s, id, "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
    let out = stream_data(
        &mut s,
        id,
        &format!(
            "{head}<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>"
        ),
    );
    assert!(sent_text(&out).contains("<resource>uclab</resource>"));
    let out = stream_data(
        &mut s,
        id,
        "<iq type='result' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>alice@example.com/uclab</jid></bind></iq>",
    );
    assert_eq!(states(&out), ["XMPPCONNECTED@imp2.example.com"]);
    assert!(
        events(&out).contains(&ClientEvent::ImSignedIn { jid: "alice@example.com/uclab".into() })
    );
    assert!(s.is_settled());
    let out = stream_data(
        &mut s,
        id,
        "<message from='bob@example.com/x' type='chat'><body>hi</body></message>",
    );
    assert_eq!(
        events(&out),
        [ClientEvent::ImMessage { from: "bob@example.com/x".into(), body: "hi".into() }]
    );
}

#[test]
fn ha1_soap_falls_to_the_second_server_and_xmpp_to_the_secondary() {
    let mut s = start();
    let out = drain(&mut s);
    answer_dns(&mut s, &out, [10, 1, 0, 21]);
    let r = http(&drain(&mut s));
    s.handle_input(
        Time::ZERO,
        Input::Http { id: r.id, result: Err(NetError::Connect("refused".into())) },
    );
    let out = drain(&mut s);
    assert_eq!(states(&out), ["SOAPCONNECT_S@imp2.example.com"]);
    // XMPP: the primary refuses; a new one-time password, then the secondary.
    let mut s = start();
    let out = through_soap(&mut s);
    answer_dns(&mut s, &out, [10, 1, 0, 22]);
    let id = drain(&mut s)
        .iter()
        .find_map(|o| match o {
            Output::StreamOpen { id, .. } => Some(*id),
            _ => None,
        })
        .unwrap();
    s.handle_input(Time::ZERO, Input::StreamFailed { id, reason: NetError::Refused });
    let r = http(&drain(&mut s));
    assert!(String::from_utf8_lossy(&r.body).contains("get-onetime-password"));
    reply(&mut s, &r, 200, soap::success_response("get-onetime-password", "otp-2"));
    assert_eq!(states(&drain(&mut s)), ["XMPPCONNECT_S@imp1.example.com"]);
}

#[test]
fn au5_wrong_password_is_one_clear_failure() {
    let mut s = start();
    let out = drain(&mut s);
    answer_dns(&mut s, &out, [10, 1, 0, 21]);
    let r = http(&drain(&mut s));
    reply(&mut s, &r, 400, soap::fault("Sender", "AuthenticationFailed", "bad"));
    let out = drain(&mut s);
    assert_eq!(events(&out), [ClientEvent::ImFailed { reason: "wrong credentials".into() }]);
    assert!(s.is_settled());
    assert_eq!(s.poll_timeout(), None);
    // Garbage from SOAP is a clear failure too.
    let mut s = start();
    let out = drain(&mut s);
    answer_dns(&mut s, &out, [10, 1, 0, 21]);
    let r = http(&drain(&mut s));
    reply(&mut s, &r, 200, "<Envelope><Body".into());
    let ev = events(&drain(&mut s));
    assert!(
        matches!(&ev[..], [ClientEvent::ImFailed { reason }] if reason.starts_with("SOAP login: malformed")),
        "{ev:?}"
    );
}

/// Signs alice in through SOAP and XMPP at imp2 (the configuration's primary); returns the
/// session and its stream.
fn connected() -> (ImSession, ConnId) {
    let mut s = start();
    let out = through_soap(&mut s);
    answer_dns(&mut s, &out, [10, 1, 0, 22]);
    let out = drain(&mut s);
    let id = out
        .iter()
        .find_map(|o| match o {
            Output::StreamOpen { id, .. } => Some(*id),
            _ => None,
        })
        .unwrap();
    s.handle_input(Time::ZERO, Input::StreamOpened { id });
    drain(&mut s);
    let head = xmpp::stream_header(("from", "example.com"), Some("1"));
    stream_data(
        &mut s,
        id,
        &format!(
            "{head}<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:features>"
        ),
    );
    stream_data(&mut s, id, "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    s.handle_input(Time::ZERO, Input::StreamTls { id });
    drain(&mut s);
    stream_data(
        &mut s,
        id,
        &format!(
            "{head}<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>CISCO-VTG-TOKEN</mechanism></mechanisms></stream:features>"
        ),
    );
    stream_data(&mut s, id, "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
    stream_data(
        &mut s,
        id,
        &format!(
            "{head}<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>"
        ),
    );
    let out = stream_data(
        &mut s,
        id,
        "<iq type='result' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>alice@example.com/uclab</jid></bind></iq>",
    );
    assert_eq!(states(&out), ["XMPPCONNECTED@imp2.example.com"]);
    (s, id)
}

/// SPEC HA1/HA2 in virtual time: the stream to the node is lost → `FAILOVER`, a re-login wait
/// drawn between the server's limits, nothing at all until it is over (the deadline says
/// why), then the SOAP session again at the first server.
#[test]
fn ha1_relogin_wait_then_the_soap_session_again() {
    let (s, id) = connected();
    let mut h = crate::testing::Harness::new(s);
    h.now = Duration::from_secs(100);
    let out = h.input(Input::StreamFailed { id, reason: NetError::Reset });
    assert_eq!(states(&out), ["FAILOVER@imp2.example.com"]);
    let wait = events(&out)
        .into_iter()
        .find_map(|e| match e {
            ClientEvent::ImRelogin { wait_s } => Some(wait_s),
            _ => None,
        })
        .expect("the re-login wait is reported");
    let (lo, hi) = h.e.ha1.relogin;
    assert!(
        (u64::from(lo.min(hi))..=u64::from(lo.max(hi))).contains(&wait),
        "{wait} in {lo}..={hi}"
    );
    let due = Duration::from_secs(100 + wait);
    assert_eq!(h.e.next_timer(), Some((due, ImTimer::Relogin)));
    // Nothing happens before the wait is over.
    assert!(h.run_until(due - Duration::from_millis(1)).is_empty());
    let out = h.run_until(due);
    assert_eq!(states(&out), ["SOAPCONNECT_SESSION_P@imp1.example.com"]);
    assert!(out.iter().any(|o| matches!(o, Output::Transmit { .. })), "imp1 is looked up");
    // Next: the lookup's retransmission (2 s), before the step's own 10 s.
    assert_eq!(h.e.next_timer(), Some((due + Duration::from_secs(2), ImTimer::Dns)));
}

/// SPEC MRA1: from outside, SOAP goes through the edge's HTTP proxy (no internal DNS, the
/// internal host in the path, the token as a cookie, E's certificate checked against the
/// domain) and every XMPP stream to Expressway-E's `xmppEdgeServer`, whichever node it is for;
/// a node lost before sign-in is the secondary through the edge again; the edge's refusal
/// of a SOAP request is one clear failure.
#[test]
fn through_the_edge_soap_by_proxy_and_xmpp_to_expressway_e() {
    let edge: SocketAddr = "172.16.1.20:8443".parse().unwrap();
    let xmpp_edge: SocketAddr = "172.16.1.20:5222".parse().unwrap();
    let route = Route::new("example.com", "expe.example.com", edge);
    route.set_token(Some("tok-1".into()));
    let servers = vec!["imp1.example.com".into(), "imp2.example.com".into()];
    let dns = Dns::standalone(Owner::Im, ResolverConfig::new(vec![DNS.parse().unwrap()]));
    let mut s = ImSession::start_through_edge(
        Time::ZERO,
        ("carol", "lab", "uclab"),
        servers.clone(),
        (route.clone(), xmpp_edge),
        dns,
        5,
    );
    let out = drain(&mut s);
    assert_eq!(states(&out), ["SOAPCONNECT_P@imp1.example.com"]);
    assert!(!out.iter().any(|o| matches!(o, Output::Transmit { .. })), "no DNS from outside");
    let r = http(&out);
    assert_eq!(
        (r.addr, r.host.as_str(), r.tls_name.as_deref()),
        (edge, "expe.example.com", Some("example.com"))
    );
    let want = uclab_proto::edge::ProxyTarget {
        domain: "example.com".into(),
        scheme: uclab_proto::edge::Scheme::Https,
        host: "imp1.example.com".into(),
        port: SOAP_PORT,
    };
    assert_eq!(r.path, want.path(soap::PATH));
    assert!(r.headers.contains(&("cookie".into(), "X-Auth=tok-1".into())));
    assert!(r.summary().ends_with("via edge to https://imp1.example.com:8443"), "{}", r.summary());
    reply(&mut s, &r, 200, soap::success_response("login", "sk-1"));
    let r = http(&drain(&mut s));
    let cfg = soap::config_response(&[
        (soap::P_DOMAIN, "example.com"),
        (soap::P_PRIMARY, "imp2.example.com"),
        (soap::P_SECONDARY, "imp1.example.com"),
    ]);
    reply(&mut s, &r, 200, cfg);
    let r = http(&drain(&mut s));
    reply(&mut s, &r, 200, soap::success_response("get-onetime-password", "otp-1"));
    let out = drain(&mut s);
    assert_eq!(states(&out), ["XMPPCONNECT_P@imp2.example.com"]);
    let Some(Output::StreamOpen { id, to, .. }) =
        out.iter().find(|o| matches!(o, Output::StreamOpen { .. })).cloned()
    else {
        panic!("no stream opened: {out:?}")
    };
    assert_eq!(to, xmpp_edge, "the stream goes to Expressway-E, not the node");
    // The edge cuts the stream before sign-in: the secondary, through the edge again.
    s.handle_input(Time::ZERO, Input::StreamFailed { id, reason: NetError::Reset });
    let r = http(&drain(&mut s));
    reply(&mut s, &r, 200, soap::success_response("get-onetime-password", "otp-2"));
    let out = drain(&mut s);
    assert_eq!(states(&out), ["XMPPCONNECT_S@imp1.example.com"]);
    assert!(out.iter().any(|o| matches!(o, Output::StreamOpen { to, .. } if *to == xmpp_edge)));
    s.close();

    // The edge refuses the login (off its allow list): one failure, not the next server.
    let dns = Dns::standalone(Owner::Im, ResolverConfig::new(vec![DNS.parse().unwrap()]));
    let mut s = ImSession::start_through_edge(
        Time::ZERO,
        ("carol", "lab", "uclab"),
        servers,
        (route, xmpp_edge),
        dns,
        6,
    );
    let r = http(&drain(&mut s));
    reply(&mut s, &r, 403, "Forbidden".into());
    let ev = events(&drain(&mut s));
    assert_eq!(
        ev,
        [ClientEvent::ImFailed { reason: "SOAP login: HTTP 403 through the edge".into() }]
    );
    assert!(s.is_settled());
}
