//! Tests of Expressway's pure parts: the zone's frames, the allow list, the token table, E's
//! classification of edge requests and C's edge configuration (SPEC MRA1, MRA2).

use crate::expressway::c::EdgePorts;
use std::time::Duration;

use uclab_proto::edge::{
    EdgeConfig, ProxyTarget, Scheme, ServiceAnswer, SrvServer, get_edge_config_path,
};

use super::allow::{AllowList, AllowRule, PathMatch, Verdict};
use super::e::{EConfig, classify};
use super::handle::{Authorised, Found, authorise, edge_config, forward_headers};
use super::tokens::{Grant, Tokens, cookie_token, set_cookie, token_text};
use super::traversal::{
    Frame, FrameError, MAX_DATA, MAX_FRAME, MAX_LINE, MAX_OPEN, MAX_REASON, encode_request,
    encode_response, parse_request, parse_response,
};
use crate::http::{Request, Response, base64_encode};

fn basic(u: &str, p: &str) -> String {
    format!("Basic {}", base64_encode(format!("{u}:{p}").as_bytes()))
}

#[test]
fn frames_round_trip_and_need_more_bytes() {
    let frames = [
        Frame::Req { id: 1, msg: b"GET / HTTP/1.1\r\n\r\n".to_vec() },
        Frame::Resp { id: u64::MAX, msg: Vec::new() },
        Frame::Ping(7),
        Frame::Pong(0),
    ];
    let mut all: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
    // Byte by byte: nothing until a frame is whole.
    let mut buf = Vec::new();
    let mut got = Vec::new();
    for b in all.drain(..) {
        buf.push(b);
        while let Some(f) = Frame::decode(&mut buf).unwrap() {
            got.push(f);
        }
    }
    assert_eq!(got, frames);
    assert!(buf.is_empty());
    assert_eq!(Frame::Ping(3).encode(), b"PING 3\r\n");
}

#[test]
fn garbage_and_oversize_frames_are_errors() {
    for junk in
        [&b"HELLO 1\r\n"[..], b"REQ x 3\r\n", b"REQ 1\r\n", b"PING -1\r\n", b"RESP 1 +3\r\n"]
    {
        let mut b = junk.to_vec();
        assert!(matches!(Frame::decode(&mut b), Err(FrameError::BadLine(_))), "{junk:?}");
    }
    let mut b = vec![b'A'; MAX_LINE];
    assert_eq!(Frame::decode(&mut b), Err(FrameError::LineTooLong));
    let mut b = format!("REQ 1 {}\r\n", MAX_FRAME + 1).into_bytes();
    assert_eq!(Frame::decode(&mut b), Err(FrameError::TooLarge(MAX_FRAME + 1)));
    let mut b = b"REQ 1 99999999999999999999999\r\n".to_vec();
    assert!(Frame::decode(&mut b).is_err());
    let mut b = vec![0xff, 0xfe, b'\r', b'\n'];
    assert!(Frame::decode(&mut b).is_err());
    // A short line is just incomplete.
    let mut b = b"RESP 12".to_vec();
    assert_eq!(Frame::decode(&mut b), Ok(None));
}

/// Issue 17: the channel frames round-trip byte by byte, and each has its own bound.
#[test]
fn channel_frames_round_trip_and_are_bounded() {
    let frames = [
        Frame::Open { ch: 1, header: "xmpp carol@example.com".into() },
        Frame::Data { ch: 1, bytes: b"<auth>\r\nPING 1\r\n</auth>".to_vec() },
        Frame::Data { ch: u64::MAX, bytes: Vec::new() },
        Frame::Close { ch: 1, reason: "imp1.example.com closed the stream".into() },
        Frame::Close { ch: 2, reason: String::new() },
    ];
    let all: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
    assert!(all.starts_with(b"OPEN 1 22\r\nxmpp carol@example.com"));
    let mut buf = Vec::new();
    let mut got = Vec::new();
    for b in all {
        buf.push(b);
        while let Some(f) = Frame::decode(&mut buf).unwrap() {
            got.push(f);
        }
    }
    assert_eq!(got, frames);
    for (kind, max) in [("OPEN", MAX_OPEN), ("DATA", MAX_DATA), ("CLOSE", MAX_REASON)] {
        let mut b = format!("{kind} 1 {}\r\n", max + 1).into_bytes();
        assert_eq!(Frame::decode(&mut b), Err(FrameError::TooLarge(max + 1)), "{kind}");
    }
    let mut b = b"OPEN 1 2\r\n\xff\xfe".to_vec();
    assert!(matches!(Frame::decode(&mut b), Err(FrameError::NotText(_))));
    let mut b = b"CLOSE 1\r\n".to_vec();
    assert!(matches!(Frame::decode(&mut b), Err(FrameError::BadLine(_))));
    let mut b = b"DATA 1 5\r\nab".to_vec();
    assert_eq!(Frame::decode(&mut b), Ok(None), "incomplete");
}

#[test]
fn http_messages_round_trip_without_hop_by_hop_headers() {
    let mut req = Request::get("/a b/c?x=1&name=a%26b")
        .with_header("Authorization", &basic("carol", "lab"))
        .with_header("Connection", "keep-alive")
        .with_header("X-Evil", "a\r\nInjected: yes");
    req.body = b"body".to_vec();
    let wire = encode_request(&req);
    let text = String::from_utf8_lossy(&wire);
    assert!(text.starts_with("GET /a%20b/c?x=1&name=a%26b HTTP/1.1\r\n"), "{text}");
    assert!(!text.contains("keep-alive") && !text.contains("Injected"), "{text}");
    let back = parse_request(&wire).unwrap();
    assert_eq!(back.path, "/a b/c");
    assert_eq!(back.param("name"), Some("a&b"));
    assert_eq!(back.body, b"body");
    assert!(back.header("authorization").is_some());

    let mut r = Response::unauthorized("Cisco-Edge");
    r.headers.push(("transfer-encoding".into(), "chunked".into()));
    let back = parse_response(&encode_response(&r)).unwrap();
    assert_eq!(back.status, 401);
    assert_eq!(back.body, r.body);
    assert!(back.headers.iter().all(|(k, _)| k != "transfer-encoding"));

    for junk in [
        &b"GET / HTTP/1.1\r\n"[..],
        b"GET / HTTP/1.1\r\ncontent-length: 5\r\n\r\nab",
        b"get / HTTP/1.1\r\n\r\n",
        b"GET nothing HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
    ] {
        assert!(parse_request(junk).is_err(), "{junk:?}");
    }
    assert!(parse_response(b"HTTP/1.1 999 What\r\n\r\n").is_err());
    assert!(parse_response(b"SIP/2.0 200 OK\r\n\r\n").is_err());
}

fn rule(host: &str, path: &str, matching: PathMatch, methods: &[&str]) -> AllowRule {
    AllowRule {
        host: host.into(),
        port: 8443,
        scheme: Scheme::Https,
        path: path.into(),
        matching,
        methods: methods.iter().map(|m| (*m).to_owned()).collect(),
    }
}

#[test]
fn mra1_allow_list_automatic_and_scenario_rules() {
    let extra = rule("cuc1.example.com", "/vmrest/", PathMatch::Prefix, &["GET", "PUT"]);
    let mut a = AllowList::new(vec![extra]);
    let h = Scheme::Https;
    // Nothing discovered yet.
    assert_eq!(
        a.check("GET", h, "cucm1.example.com", 8443, "/cucm-uds/user/a"),
        Verdict::NotListed
    );
    a.add_cucm("CUCM1.example.com.");
    a.add_imp("imp1.example.com");
    assert_eq!(a.check("GET", h, "cucm1.example.com", 8443, "/cucm-uds/user/a"), Verdict::Allowed);
    assert_eq!(
        a.check("POST", h, "cucm1.example.com", 8443, "/cucm-uds/user/a"),
        Verdict::NotListed
    );
    assert_eq!(a.check("GET", h, "cucm1.example.com", 8443, "/ccmadmin/"), Verdict::NotListed);
    assert_eq!(a.check("GET", h, "cucm1.example.com", 8444, "/cucm-uds/x"), Verdict::NotListed);
    assert_eq!(
        a.check("GET", Scheme::Http, "cucm1.example.com", 6970, "/CSFA.cnf.xml"),
        Verdict::Allowed
    );
    assert_eq!(a.check("GET", h, "cucm1.example.com", 6970, "/CSFA.cnf.xml"), Verdict::NotListed);
    assert_eq!(
        a.check("GET", h, "cucm1.example.com", 8443, "/cucm-uds/../admin"),
        Verdict::NotListed
    );
    // IM&P: exactly the SOAP path, POST only.
    assert_eq!(
        a.check("POST", h, "imp1.example.com", 8443, "/EPASSoap/service/v80"),
        Verdict::Allowed
    );
    assert_eq!(
        a.check("POST", h, "imp1.example.com", 8443, "/EPASSoap/service/v80x"),
        Verdict::NotListed
    );
    assert_eq!(
        a.check("GET", h, "imp1.example.com", 8443, "/EPASSoap/service/v80"),
        Verdict::NotListed
    );
    // The scenario's rule.
    assert_eq!(a.check("PUT", h, "cuc1.example.com", 8443, "/vmrest/x"), Verdict::Allowed);
    // SPEC MRA2: file transfer refused even when a rule allows it.
    a.extra.push(rule("imp1.example.com", "/", PathMatch::Prefix, &["POST"]));
    assert_eq!(a.check("POST", h, "imp1.example.com", 8443, "/MFT/upload"), Verdict::FileTransfer);
    assert_eq!(a.check("POST", h, "imp1.example.com", 8443, "/mftx"), Verdict::Allowed);
    // A path not in its plain form is never listed, so `//mft` cannot slip past the check.
    for p in ["//mft/x", "/./mft/x", "/a/../mft/x", "/cucm-uds//user", "mft/x"] {
        assert_eq!(a.check("POST", h, "imp1.example.com", 8443, p), Verdict::NotListed, "{p}");
    }
    assert_eq!(a.check("POST", h, "imp1.example.com", 8443, "/dir/"), Verdict::Allowed);
}

#[test]
fn allow_list_hosts_are_bounded() {
    let mut a = AllowList::new(Vec::new());
    for i in 0..super::allow::MAX_HOSTS + 50 {
        a.add_cucm(&format!("h{i}.example.com"));
    }
    assert_eq!(a.rules().len(), 2 * super::allow::MAX_HOSTS);
}

fn grant(domain: &str, expires: u64) -> Grant {
    Grant {
        domain: domain.into(),
        user: ("carol".into(), "lab".into()),
        expires: Duration::from_secs(expires),
    }
}

#[test]
fn tokens_expire_in_simulated_time_and_are_evicted_oldest_first() {
    let mut t = Tokens::new(2);
    let s = Duration::from_secs;
    t.insert(s(0), "a".into(), grant("example.com", 100));
    assert!(t.get(s(99), "a", "EXAMPLE.com").is_some());
    assert!(t.get(s(99), "a", "other.example").is_none(), "another domain");
    assert!(t.get(s(100), "a", "example.com").is_none(), "expired");
    assert!(t.get(s(1), "zz", "example.com").is_none(), "unknown");
    t.insert(s(1), "b".into(), grant("example.com", 200));
    t.insert(s(2), "c".into(), grant("example.com", 300));
    assert_eq!(t.len(), 2);
    assert!(t.get(s(3), "a", "example.com").is_none(), "evicted: it expired first");
    assert!(t.get(s(3), "c", "example.com").is_some());
    t.expire(s(250));
    assert_eq!(t.len(), 1);
    assert!(!format!("{:?}", grant("d", 1)).contains("lab"), "Debug never shows the password");
    assert_eq!(token_text(1, 2), "00000000000000010000000000000002");
}

#[test]
fn cookies_are_read_and_set() {
    assert_eq!(cookie_token("a=1; X-Auth=tok; b=2"), Some("tok"));
    assert_eq!(cookie_token("X-Auth="), None);
    assert_eq!(cookie_token("x-auth=tok"), None);
    assert_eq!(
        set_cookie("tok", Duration::from_secs(3600)),
        "X-Auth=tok; Path=/; Max-Age=3600; Secure; HttpOnly"
    );
}

fn e_cfg() -> EConfig {
    EConfig::new("expe.example.com", "example.com", "expc.example.com")
}

#[test]
fn mra1_edge_classifies_what_it_answers_alone() {
    let c = e_cfg();
    assert_eq!(c.san, ["expe.example.com", "example.com"]);
    let gec = get_edge_config_path("example.com");
    let path = gec.split('?').next().unwrap();
    // No credentials: 401 realm Cisco-Edge.
    let r = classify(&c, &Request::get(path)).unwrap_err();
    assert_eq!(r.status, 401);
    assert!(
        r.headers.iter().any(|(k, v)| k == "www-authenticate" && v == "Basic realm=\"Cisco-Edge\"")
    );
    // Credentials: carried to C.
    let req = Request::get(path).with_header("authorization", &basic("carol", "lab"));
    assert_eq!(classify(&c, &req).unwrap(), "GET get_edge_config example.com (Basic)");
    // Another domain, garbage: 404.
    let other = get_edge_config_path("other.example");
    let req = Request::get(other.split('?').next().unwrap()).with_header("authorization", "x");
    assert_eq!(classify(&c, &req).unwrap_err().status, 404);
    for junk in ["/", "/!!!/x", "/%00/get_edge_config", &format!("/{}", "a".repeat(5000))] {
        assert_eq!(classify(&c, &Request::get(junk)).unwrap_err().status, 404, "{junk}");
    }
    // A proxied request with only the cookie.
    let t = ProxyTarget {
        domain: "example.com".into(),
        scheme: Scheme::Https,
        host: "cucm1.example.com".into(),
        port: 8443,
    };
    let req = Request::get(&t.path("/cucm-uds/user/carol")).with_header("cookie", "X-Auth=abc");
    assert_eq!(
        classify(&c, &req).unwrap(),
        "GET https://cucm1.example.com:8443/cucm-uds/user/carol (X-Auth)"
    );
    let req = Request::get(&t.path("/cucm-uds/user/carol")).with_header("cookie", "other=1");
    assert_eq!(classify(&c, &req).unwrap_err().status, 401);
}

#[test]
fn proxied_requests_are_authorised_by_token_or_basic() {
    let mut t = Tokens::new(10);
    t.insert(Duration::ZERO, "tok".into(), grant("example.com", 60));
    let now = Duration::from_secs(1);
    let with_cookie = Request::get("/").with_header("cookie", "X-Auth=tok; theme=dark");
    let auth = authorise(&t, &with_cookie, "example.com", now);
    assert_eq!(auth, Authorised::Token("carol".into(), "lab".into()));
    let h = forward_headers(&with_cookie, &auth, Scheme::Https);
    assert!(h.contains(&("cookie".into(), "theme=dark".into())), "{h:?}");
    assert!(h.contains(&("authorization".into(), basic("carol", "lab"))));
    // Never credentials in clear text inside (TFTP-over-HTTP).
    let h = forward_headers(&with_cookie, &auth, Scheme::Http);
    assert!(h.iter().all(|(k, _)| k != "authorization"), "{h:?}");
    assert_eq!(authorise(&t, &with_cookie, "example.com", Duration::from_secs(60)), Authorised::No);
    let with_basic = Request::get("/")
        .with_header("authorization", &basic("carol", "x"))
        .with_header("host", "expe")
        .with_header("connection", "close");
    let auth = authorise(&t, &with_basic, "example.com", now);
    assert_eq!(auth, Authorised::Basic);
    let h = forward_headers(&with_basic, &auth, Scheme::Https);
    assert_eq!(h, vec![("authorization".to_owned(), basic("carol", "x"))]);
    assert_eq!(forward_headers(&with_basic, &auth, Scheme::Http), vec![]);
    assert_eq!(authorise(&t, &Request::get("/"), "example.com", now), Authorised::No);
    // Credentials win over a cookie (a token never vouches for other credentials), and
    // malformed ones are refused even with a good cookie.
    let both = with_cookie.clone().with_header("authorization", &basic("bob", "x"));
    assert_eq!(authorise(&t, &both, "example.com", now), Authorised::Basic);
    let same = with_cookie.clone().with_header("authorization", &basic("carol", "lab"));
    assert_eq!(
        authorise(&t, &same, "example.com", now),
        Authorised::Token("carol".into(), "lab".into())
    );
    let junk = with_cookie.with_header("authorization", "Basic !!!");
    assert_eq!(authorise(&t, &junk, "example.com", now), Authorised::No);
}

fn srv(addr: &str, priority: u16) -> SrvServer {
    SrvServer { priority, weight: 10, port: 8443, address: addr.into() }
}

#[test]
fn mra1_edge_config_from_what_c_found() {
    let ip = "10.1.0.30".parse().unwrap();
    let found = Found {
        uds: Some(vec![srv("cucm1.example.com", 1), srv("cucm2.example.com", 2)]),
        cuplogin: None,
        tftp: None,
    };
    let cfg = edge_config(
        &found,
        Some("cucm1.example.com"),
        ("expe.example.com", EdgePorts::default()),
        ip,
    );
    let back = EdgeConfig::parse(cfg.render().as_bytes()).unwrap();
    assert_eq!(back, cfg);
    assert_eq!(back.servers("_cisco-uds").len(), 2);
    assert_eq!(back.service("_cuplogin"), Some(&ServiceAnswer::Error("NameError".into())));
    assert_eq!(
        back.service("tftpServer"),
        Some(&ServiceAnswer::Addresses(vec!["cucm1.example.com".into()]))
    );
    assert_eq!(back.sip_edge[0].port, 5061);
    assert_eq!(back.xmpp_edge[0].port, 5222);
    assert_eq!(back.turn_edge[0].port, 3478);
    assert_eq!(back.user_uds[0].address, "cucm1.example.com");
    assert_eq!(
        back.sip_route.as_deref(),
        Some("<sip:10.1.0.30:5061;transport=tls;zone-id=3;directed;lr>")
    );
    // The field fault: no userUdsServer.
    let cfg = edge_config(&found, None, ("expe.example.com", EdgePorts::default()), ip);
    assert!(cfg.render().contains("<userUdsServer/>"));
    // _cisco-phone-tftp targets win over the home cluster.
    let found = Found { tftp: Some(vec![srv("tftp1.example.com", 1)]), ..found };
    let cfg = edge_config(
        &found,
        Some("cucm1.example.com"),
        ("expe.example.com", EdgePorts::default()),
        ip,
    );
    assert_eq!(
        cfg.service("tftpServer"),
        Some(&ServiceAnswer::Addresses(vec!["tftp1.example.com".into()]))
    );
}

#[test]
fn srv_answers_sort_and_a_dot_means_none() {
    use crate::resolve::{Lookup, srv_targets};
    use uclab_proto::dns::{DnsMsg, Rdata, Rr};
    let rr = |p, w, t: &str| Rr {
        name: "_cisco-uds._tcp.example.com".into(),
        ttl: 60,
        data: Rdata::Srv { priority: p, weight: w, port: 8443, target: t.into() },
    };
    let mut m = DnsMsg {
        id: 1,
        is_response: true,
        rcode: 0,
        truncated: false,
        authoritative: true,
        recursion_available: false,
        question: None,
        answers: vec![rr(2, 10, "b"), rr(1, 5, "c"), rr(1, 50, "a")],
        additionals: Vec::new(),
    };
    let Lookup::Found(v) = srv_targets(&m) else { panic!() };
    let order: Vec<&str> = v.iter().map(|s| s.address.as_str()).collect();
    assert_eq!(order, ["a", "c", "b"]);
    m.answers = vec![rr(0, 0, ".")];
    assert_eq!(srv_targets(&m), Lookup::NoRecord);
    m.rcode = 3;
    assert_eq!(srv_targets(&m), Lookup::NoRecord);
    m.rcode = 2;
    assert!(matches!(srv_targets(&m), Lookup::Failed(_)));
}
