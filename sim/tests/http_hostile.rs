//! A hostile peer against CUCM's UDS (HTTPS) in simulation: malformed requests get the right
//! status or a closed connection, slow clients are cut off, and the service keeps answering.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uclab_net::tls::{LabPki, TlsContext};
use uclab_net::{Capture, Lab, Net, Policy, SimNet, Transcript};
use uclab_sim::nodes;

const CUCM: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 1, 0, 11));
const EVIL: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 1, 0, 66));

fn lab() -> Lab {
    let capture = Capture::new(1, Duration::ZERO);
    Lab {
        seed: 1,
        capture: capture.clone(),
        policy: Policy::default(),
        transcript: Transcript::default(),
        tls: TlsContext::sim(
            Arc::new(LabPki::new(1).unwrap()),
            capture,
            Duration::from_secs(1_767_600_000),
        ),
    }
}

/// Sends `raw` over TLS to UDS and returns what comes back before the server closes (or a
/// 15 s simulated deadline).
async fn exchange(net: &SimNet, raw: &[u8]) -> String {
    let tcp = net.connect(SocketAddr::new(CUCM, 8443)).await.unwrap();
    let cfg = net.tls().client_config(&[]).unwrap();
    let mut s = net.tls().connect(cfg, "cucm1.example.com", tcp).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    let _ = uclab_net::time::timeout(Duration::from_secs(15), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn status(resp: &str) -> &str {
    resp.split(' ').nth(1).unwrap_or("(closed)")
}

#[test]
fn hostile_http_gets_statuses_or_closes_and_uds_keeps_serving() {
    let scenario = uclab_sim::parse("t.toml", "", Path::new("t.toml")).unwrap();
    let shared = nodes::Shared::new(1);
    let plan = nodes::plan(&scenario, "cucm1", &|_, s| s.port, &BTreeMap::new(), &shared).unwrap();
    let lab = lab();
    let mut sim =
        turmoil::Builder::new().rng_seed(1).simulation_duration(Duration::from_secs(120)).build();
    let l1 = lab.clone();
    sim.host(CUCM, move || {
        let (net, plan) = (SimNet::new(CUCM, "cucm1", &l1), plan.clone());
        async move {
            nodes::run(net, plan).await?;
            Ok(())
        }
    });
    sim.client(EVIL, async move {
        let net = SimNet::new(EVIL, "evil", &lab);
        // Bad request line.
        let r = exchange(&net, b"HELLO THERE\r\n\r\n").await;
        assert!(matches!(status(&r), "400" | "(closed)"), "{r}");
        // Headers far beyond the 8 KiB head limit.
        let big = format!("GET /cucm-uds/version HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000));
        let r = exchange(&net, big.as_bytes()).await;
        assert!(matches!(status(&r), "431" | "400" | "(closed)"), "{}", &r[..r.len().min(200)]);
        // Unknown path and a bad method.
        let r = exchange(&net, b"GET /nothing/here HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert_eq!(status(&r), "404", "{r}");
        let r = exchange(&net, b"DELETE /cucm-uds/version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert_eq!(status(&r), "405", "{r}");
        // Bad Basic credentials: a challenge, nothing else.
        let r = exchange(&net, b"GET /cucm-uds/user/alice HTTP/1.1\r\nHost: x\r\nAuthorization: Basic !!!\r\nConnection: close\r\n\r\n").await;
        assert_eq!(status(&r), "401", "{r}");
        assert!(r.contains("Cisco Web Services Realm"));
        // Slowloris: half a request head, then silence. The server closes by itself.
        let t0 = tokio::time::Instant::now();
        let r = exchange(&net, b"GET /cucm-uds/version HTTP/1.1\r\nHost: x\r\nX-Slow: ").await;
        assert!(t0.elapsed() < Duration::from_secs(15), "slow client not cut off");
        assert!(!r.contains("200 OK"), "{r}");
        // A TCP connection that never starts TLS is cut off too.
        let mut idle = net.connect(SocketAddr::new(CUCM, 8443)).await.unwrap();
        let mut buf = [0u8; 16];
        let got = uclab_net::time::timeout(Duration::from_secs(15), idle.read(&mut buf)).await;
        assert!(matches!(got, Ok(Ok(0)) | Ok(Err(_))), "idle TLS not cut off: {got:?}");
        // And the service still answers properly, with no Date header (no real clock).
        let r = exchange(&net, b"GET /cucm-uds/version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert_eq!(status(&r), "200", "{r}");
        assert!(r.contains("<version>12.5.1</version>"));
        assert!(!r.to_ascii_lowercase().contains("\ndate:"), "{r}");
        Ok(())
    });
    sim.run().unwrap();
}
