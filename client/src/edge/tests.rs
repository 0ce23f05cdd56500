//! The edge engine against a scripted Expressway-E, in virtual time (SPEC MRA1, AU5).

use super::*;
use crate::io::Owner;
use crate::resolver::ResolverConfig;
use uclab_proto::edge::{EdgeServer, Service, SrvServer};

const EDGE: &str = "172.16.1.20:8443";

fn start() -> Edge {
    let s = EdgeStart {
        user: "carol".into(),
        password: "lab".into(),
        domain: "Example.com".into(),
        host: "expe.example.com".into(),
        port: 8443,
    };
    let dns = Dns::standalone(Owner::Edge, ResolverConfig::new(vec![]));
    Edge::start(Time::ZERO, s, Some(EDGE.parse().unwrap()), dns, 7)
}

/// Drains the engine: its HTTP requests, events and signals.
fn drain(e: &mut Edge) -> (Vec<HttpReq>, Vec<ClientEvent>, Vec<Signal>) {
    let (mut reqs, mut events, mut signals) = (vec![], vec![], vec![]);
    while let Some(o) = e.poll_output() {
        match o {
            Emit::Out(Output::Http(r)) => reqs.push(r),
            Emit::Out(Output::Event(ev)) => events.push(ev),
            Emit::Out(_) => {}
            Emit::Signal(s) => signals.push(s),
        }
    }
    (reqs, events, signals)
}

fn config(uds: bool, user_uds: bool) -> EdgeConfig {
    let answer = if uds {
        ServiceAnswer::Servers(vec![SrvServer {
            priority: 1,
            weight: 10,
            port: 8443,
            address: "cucm1.example.com".into(),
        }])
    } else {
        ServiceAnswer::Error("NameError".into())
    };
    EdgeConfig {
        services: vec![Service { name: "_cisco-uds".into(), answer }],
        user_uds: if user_uds {
            vec![EdgeServer { address: "cucm1.example.com".into(), port: 8443 }]
        } else {
            vec![]
        },
        ..EdgeConfig::default()
    }
}

fn answer(e: &mut Edge, now: Time, id: HttpId, r: Result<HttpResp, NetError>) {
    e.handle_input(now, Input::Http { id, result: r });
}

fn ok_with_cookie(max_age: u64) -> Result<HttpResp, NetError> {
    Ok(HttpResp::new(200, config(true, true).render().into_bytes())
        .with_header("Server", "CE_C ECS")
        .with_header(
            "Set-Cookie",
            &format!("X-Auth=tok{max_age}; Path=/; Max-Age={max_age}; Secure; HttpOnly"),
        ))
}

#[test]
fn mra1_get_edge_config_then_requests_carry_the_token() {
    let mut e = start();
    let (reqs, _, _) = drain(&mut e);
    let r = &reqs[0];
    assert_eq!(
        r.path,
        "/ZXhhbXBsZS5jb20/get_edge_config/?service_name=_cisco-uds&service_name=_cuplogin"
    );
    assert_eq!(
        r.tls_name.as_deref(),
        Some("example.com"),
        "MRA1: the certificate must name the domain"
    );
    assert!(r.basic.is_some() && r.tls);
    answer(&mut e, Time::from_millis(5), r.id, ok_with_cookie(100));
    let (_, events, signals) = drain(&mut e);
    assert_eq!(signals, vec![Signal::EdgeReady]);
    let ClientEvent::EdgeConfig { uds, services, token, expires_s, .. } = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!((uds.as_str(), token.as_str(), *expires_s), ("cucm1.example.com:8443", "set", 100));
    assert_eq!(services, "_cisco-uds=cucm1.example.com:8443");
    assert!(e.is_done());

    // A sign-in request through the edge: E's address, the encoded internal target, the cookie.
    let t = Transport::Edge(e.route().unwrap());
    let req = t.apply(HttpReq {
        id: HttpId::new(Owner::SignIn, 1),
        host: "cucm1.example.com".into(),
        addr: "0.0.0.0:8443".parse().unwrap(),
        path: "/cucm-uds/user/carol".into(),
        tls: true,
        ..sample_request()
    });
    assert_eq!(req.addr, EDGE.parse().unwrap());
    assert_eq!(req.host, "expe.example.com");
    assert!(req.headers.contains(&("cookie".into(), "X-Auth=tok100".into())));
    let Ok(wire::EdgePath::Proxy { target, rest }) = wire::parse_path(&req.path) else {
        panic!("{}", req.path)
    };
    assert_eq!(
        (target.host.as_str(), target.port, rest.as_str()),
        ("cucm1.example.com", 8443, "/cucm-uds/user/carol")
    );
    assert_eq!(
        req.summary(),
        "HTTP GET /cucm-uds/user/carol via edge to https://cucm1.example.com:8443"
    );

    // The token is renewed at nine tenths of its lifetime, and the route takes the new one.
    assert_eq!(
        e.next_timer(),
        Some((Time::from_millis(5) + Duration::from_secs(90), EdgeTimer::Renew))
    );
    let now = Time::from_millis(5) + Duration::from_secs(90);
    e.handle_timeout(now);
    let (reqs, _, _) = drain(&mut e);
    answer(&mut e, now, reqs[0].id, ok_with_cookie(200));
    let (_, events, signals) = drain(&mut e);
    assert!(signals.is_empty(), "a renewal is not a new sign-in");
    assert_eq!(events, vec![ClientEvent::EdgeToken { result: "renewed".into(), expires_s: 200 }]);
    assert!(t.apply(sample_request()).headers.contains(&("cookie".into(), "X-Auth=tok200".into())));
}

fn sample_request() -> HttpReq {
    HttpReq {
        id: HttpId::new(Owner::SignIn, 2),
        host: "cucm1.example.com".into(),
        addr: "0.0.0.0:6970".parse().unwrap(),
        tls_name: None,
        tls: false,
        method: "GET",
        path: "/SPDefault.cnf.xml".into(),
        basic: None,
        headers: vec![],
        body: vec![],
    }
}

#[test]
fn au5_wrong_password_is_one_failure() {
    let mut e = start();
    let (reqs, _, _) = drain(&mut e);
    let r401 =
        HttpResp::new(401, vec![]).with_header("WWW-Authenticate", "Basic realm=\"Cisco-Edge\"");
    answer(&mut e, Time::ZERO, reqs[0].id, Ok(r401));
    let (_, _, signals) = drain(&mut e);
    let [Signal::EdgeFailed { error: EdgeError::WrongCredentials { .. }, retry_in: None }] =
        &signals[..]
    else {
        panic!("{signals:?}")
    };
    assert!(e.is_done());
    assert_eq!(e.poll_timeout(), None, "AU5: nothing retried");
}

#[test]
fn traversal_down_is_retried_a_bounded_number_of_times() {
    let mut e = start();
    let mut now = Time::ZERO;
    for attempt in 1..=MAX_ATTEMPTS {
        let (reqs, _, _) = drain(&mut e);
        assert_eq!(reqs.len(), 1, "attempt {attempt}");
        answer(&mut e, now, reqs[0].id, Ok(HttpResp::new(503, vec![])));
        let (_, _, signals) = drain(&mut e);
        let [Signal::EdgeFailed { error: EdgeError::Traversal { status: 503, .. }, retry_in }] =
            &signals[..]
        else {
            panic!("{signals:?}")
        };
        if attempt < MAX_ATTEMPTS {
            assert_eq!(*retry_in, Some(RETRY_WAIT));
            now += RETRY_WAIT;
            assert_eq!(e.poll_timeout(), Some(now));
            e.handle_timeout(now);
        } else {
            assert_eq!(*retry_in, None);
            assert!(e.is_done());
            assert_eq!(e.poll_timeout(), None);
        }
    }
}

#[test]
fn mra1_certificate_without_the_domain_is_refused() {
    let mut e = start();
    let (reqs, _, _) = drain(&mut e);
    answer(
        &mut e,
        Time::ZERO,
        reqs[0].id,
        Err(NetError::Tls("certificate not valid for name".into())),
    );
    let (_, _, signals) = drain(&mut e);
    let [Signal::EdgeFailed { error, retry_in: None }] = &signals[..] else {
        panic!("{signals:?}")
    };
    assert!(error.to_string().contains("does not name example.com (MRA1)"), "{error}");
}

#[test]
fn mra1_no_cisco_uds_inside_and_empty_user_uds_server() {
    let mut e = start();
    let (reqs, _, _) = drain(&mut e);
    let body = config(false, true).render().into_bytes();
    answer(&mut e, Time::ZERO, reqs[0].id, Ok(HttpResp::new(200, body)));
    let (_, _, signals) = drain(&mut e);
    assert_eq!(signals, vec![Signal::EdgeFailed { error: EdgeError::NoUds, retry_in: None }]);

    let mut e = start();
    let (reqs, _, _) = drain(&mut e);
    let body = config(true, false).render().into_bytes();
    answer(&mut e, Time::ZERO, reqs[0].id, Ok(HttpResp::new(200, body)));
    let (_, _, signals) = drain(&mut e);
    let [Signal::EdgeFailed { error, retry_in: Some(w) }] = &signals[..] else {
        panic!("{signals:?}")
    };
    assert_eq!(
        (error.to_string().as_str(), *w),
        ("no UDS server address", Duration::from_secs(15))
    );
}

#[test]
fn a_hostile_max_age_is_clamped() {
    for (max_age, life) in [(u64::MAX, MAX_TOKEN_LIFE), (0, MIN_TOKEN_LIFE)] {
        let mut e = start();
        let (reqs, _, _) = drain(&mut e);
        answer(&mut e, Time::ZERO, reqs[0].id, ok_with_cookie(max_age));
        let (_, events, _) = drain(&mut e);
        let ClientEvent::EdgeConfig { expires_s, .. } = &events[0] else { panic!("{events:?}") };
        assert_eq!(*expires_s, life.as_secs());
        assert_eq!(e.next_timer(), Some((life * 9 / 10, EdgeTimer::Renew)));
    }
}

#[test]
fn renewal_failures_are_bounded() {
    let mut e = start();
    let (reqs, _, _) = drain(&mut e);
    answer(&mut e, Time::ZERO, reqs[0].id, ok_with_cookie(100));
    drain(&mut e);
    let mut renewals = 0;
    while let Some((t, EdgeTimer::Renew)) = e.next_timer() {
        e.handle_timeout(t);
        let (reqs, _, _) = drain(&mut e);
        answer(&mut e, t, reqs[0].id, Ok(HttpResp::new(503, vec![])));
        drain(&mut e);
        renewals += 1;
        assert!(renewals <= MAX_ATTEMPTS, "renewals never stop");
    }
    assert_eq!(renewals, MAX_ATTEMPTS);
}

#[test]
fn garbage_and_timeouts_are_clear_failures() {
    let mut e = start();
    let (reqs, _, _) = drain(&mut e);
    answer(&mut e, Time::ZERO, reqs[0].id, Ok(HttpResp::new(200, b"<html>".to_vec())));
    let (_, _, signals) = drain(&mut e);
    assert!(matches!(
        &signals[..],
        [Signal::EdgeFailed { error: EdgeError::Malformed(_), retry_in: None }]
    ));

    let mut e = start();
    drain(&mut e);
    e.handle_timeout(EDGE_TIMEOUT);
    let (_, _, signals) = drain(&mut e);
    assert!(matches!(
        &signals[..],
        [Signal::EdgeFailed { error: EdgeError::Timeout { .. }, retry_in: Some(_) }]
    ));
}
