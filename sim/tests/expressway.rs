//! Expressway-C and -E of the default topology in simulation (SPEC MRA1, MRA2): C opens the
//! traversal zone; get_edge_config through E answers the edge configuration with an X-Auth
//! cookie; bad or missing credentials get 401 realm "Cisco-Edge"; a proxied UDS request works
//! with the cookie; hosts and paths off the allow list get 403; a crashed C gives 502 to a
//! request in flight, then 503, and the zone comes back by itself after a restart.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uclab_net::{Net, SimNet};
use uclab_proto::edge::{ProxyTarget, Scheme, get_edge_config_path};
mod edge_lab;

use edge_lab::{CAROL, edge_lab};

const EXPE: IpAddr = IpAddr::V4(Ipv4Addr::new(172, 16, 1, 20));

fn basic(u: &str, p: &str) -> String {
    format!("Basic {}", uclab_proto::base64::encode(format!("{u}:{p}").as_bytes()))
}

/// One request to the edge over TLS (`Connection: close`): the whole answer as text.
async fn edge(net: &SimNet, path: &str, headers: &[(&str, String)]) -> String {
    let tcp = net.connect(SocketAddr::new(EXPE, 8443)).await.unwrap();
    let cfg = net.tls().client_config(&[]).unwrap();
    let mut s = net.tls().connect(cfg, "expe.example.com", tcp).await.unwrap();
    let mut req =
        format!("GET {path} HTTP/1.1\r\nHost: expe.example.com:8443\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = uclab_net::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn status(resp: &str) -> &str {
    resp.split(' ').nth(1).unwrap_or("(closed)")
}

fn header<'a>(resp: &'a str, name: &str) -> Option<&'a str> {
    resp.split("\r\n\r\n").next()?.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn proxy(host: &str, port: u16, scheme: Scheme, rest: &str) -> String {
    ProxyTarget { domain: "example.com".into(), scheme, host: host.into(), port }.path(rest)
}

#[test]
fn mra1_edge_through_the_traversal_zone() {
    let (mut sim, lab, _capture, transcript, ips) = edge_lab(200);
    let expc = ips["expc"];
    // What the client saw, phase by phase, for the fault steps below.
    let seen: Rc<RefCell<Vec<String>>> = Rc::default();
    let log = seen.clone();
    sim.client(CAROL, async move {
        let net = SimNet::new(CAROL, "carol", &lab);
        let t0 = tokio::time::Instant::now();
        let at = |s: u64| uclab_net::time::sleep_until(t0 + Duration::from_secs(s));
        at(2).await;
        let gec = get_edge_config_path("example.com");
        // Good credentials: the configuration and a cookie.
        let r = edge(
            &net,
            &gec,
            &[("Authorization", basic("carol", "lab")), ("Accept", "text/xml".into())],
        )
        .await;
        assert_eq!(status(&r), "200", "{r}");
        assert_eq!(header(&r, "server"), Some("CE_C ECS"), "{r}");
        let cookie = header(&r, "set-cookie").expect("a cookie").to_owned();
        assert!(cookie.starts_with("X-Auth=") && cookie.contains("Max-Age=3600"), "{cookie}");
        let token = cookie.split(';').next().unwrap().to_owned();
        let body = r.split("\r\n\r\n").nth(1).unwrap_or("");
        let cfg = uclab_proto::edge::EdgeConfig::parse(body.as_bytes()).unwrap();
        assert_eq!(cfg.servers("_cisco-uds")[0].address, "cucm1.example.com");
        assert_eq!(cfg.servers("_cuplogin")[0].address, "imp1.example.com");
        assert_eq!(cfg.user_uds[0].address, "cucm1.example.com");
        assert_eq!(cfg.http_edge[0].address, "expe.example.com");
        assert_eq!(
            cfg.sip_route.as_deref(),
            Some("<sip:10.1.0.30:5061;transport=tls;zone-id=3;directed;lr>")
        );
        // Bad and missing credentials: one 401 form.
        for h in [vec![("Authorization", basic("carol", "nope"))], vec![]] {
            let r = edge(&net, &gec, &h).await;
            assert_eq!(status(&r), "401", "{r}");
            assert_eq!(header(&r, "www-authenticate"), Some("Basic realm=\"Cisco-Edge\""), "{r}");
            assert_eq!(header(&r, "server"), Some("CE_C ECS"), "{r}");
        }
        // A proxied UDS request with the cookie alone.
        let uds = proxy("cucm1.example.com", 8443, Scheme::Https, "/cucm-uds/user/carol");
        let r = edge(&net, &uds, &[("Cookie", token.clone())]).await;
        assert_eq!(status(&r), "200", "{r}");
        assert!(r.contains("<userName>carol</userName>"), "{r}");
        // An unknown token: 401.
        let r =
            edge(&net, &uds, &[("Cookie", "X-Auth=00112233445566778899aabbccddeeff".into())]).await;
        assert_eq!(status(&r), "401", "{r}");
        // Off the allow list: another path, another host, file transfer (MRA2).
        for p in [
            proxy("cucm1.example.com", 8443, Scheme::Https, "/ccmadmin/"),
            proxy("www.example.com", 443, Scheme::Https, "/"),
            proxy("imp1.example.com", 8443, Scheme::Https, "/mft/upload"),
        ] {
            let r = edge(&net, &p, &[("Cookie", token.clone())]).await;
            assert_eq!(status(&r), "403", "{p}: {r}");
        }
        // Garbage and another domain: 404, and E keeps serving.
        assert_eq!(status(&edge(&net, "/!!!/x", &[]).await), "404");
        let other = get_edge_config_path("other.example");
        assert_eq!(
            status(&edge(&net, &other, &[("Authorization", basic("carol", "lab"))]).await),
            "404"
        );
        log.borrow_mut().push("phase1".into());
        // A partition between C and E at 20 s: a request in flight gets 502 after E's
        // deadline…
        at(21).await;
        let r = edge(&net, &gec, &[("Authorization", basic("carol", "lab"))]).await;
        assert_eq!(status(&r), "502", "{r}");
        // …and once E has taken the silent zone for dead, 503 at once.
        at(60).await;
        let t = tokio::time::Instant::now();
        let r = edge(&net, &gec, &[("Authorization", basic("carol", "lab"))]).await;
        assert_eq!(status(&r), "503", "{r}");
        assert!(t.elapsed() < Duration::from_secs(1));
        // Repaired at 62 s: the zone comes back by itself.
        at(100).await;
        let r = edge(&net, &gec, &[("Authorization", basic("carol", "lab"))]).await;
        assert_eq!(status(&r), "200", "{r}");
        // C crashes at 105 s: 503 at once; restarted at 110 s, the zone comes back.
        at(106).await;
        let r = edge(&net, &gec, &[("Authorization", basic("carol", "lab"))]).await;
        assert_eq!(status(&r), "503", "{r}");
        at(150).await;
        let r = edge(&net, &gec, &[("Authorization", basic("carol", "lab"))]).await;
        assert_eq!(status(&r), "200", "{r}");
        log.borrow_mut().push("done".into());
        Ok(())
    });
    let mut faults = vec![(20, "partition"), (62, "repair"), (105, "crash"), (110, "restart")];
    faults.reverse();
    loop {
        let now = sim.elapsed();
        while faults.last().is_some_and(|(t, _)| now >= Duration::from_secs(*t)) {
            match faults.pop().map(|f| f.1) {
                Some("partition") => sim.partition(expc, EXPE),
                Some("repair") => sim.repair(expc, EXPE),
                Some("crash") => sim.crash(expc),
                _ => sim.bounce(expc),
            }
        }
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => panic!("{e}\n{}", transcript.render()),
        }
    }
    assert_eq!(*seen.borrow(), ["phase1", "done"]);
    let t = transcript.render();
    if std::env::var_os("UCLAB_SHOW").is_some() {
        eprintln!("{t}");
    }
    // The transcript shows the zone, E's requests over it and C's answers as their own lines,
    // and never a password.
    assert!(t.contains("expc -> expe:7001 tcp TRAVERSAL zone up"), "{t}");
    assert!(
        t.contains("expe:7001 -> expc tcp TRAVERSAL REQ 1 GET get_edge_config example.com (Basic)"),
        "{t}"
    );
    assert!(t.contains("expc -> expe:7001 tcp TRAVERSAL RESP 1 200 OK"), "{t}");
    assert!(t.contains("allow list refuses GET https://cucm1.example.com:8443/ccmadmin/"), "{t}");
    assert!(t.contains("file transfer (MRA2)"), "{t}");
    assert!(t.contains("TRAVERSAL zone down"), "{t}");
    assert!(!t.contains("lab") || !t.contains("carol:lab"), "{t}");
    assert!(!t.contains(&uclab_proto::base64::encode(b"carol:lab")), "{t}");
}
