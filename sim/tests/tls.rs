//! TLS in simulation is deterministic per seed (handshake bytes, key shares, tickets), carries
//! its secrets in the capture, and refuses a certificate whose name does not match.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uclab_net::tls::{LabPki, TlsContext};
use uclab_net::{Capture, Lab, Net, Policy, SimNet, Transcript};

const SERVER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 1, 0, 11));
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 1, 0, 100));

/// Runs one exchange; returns (pcapng bytes, client result).
fn exchange(seed: u64, name: &'static str) -> (Vec<u8>, Result<String, String>) {
    let capture = Capture::new(seed, Duration::from_secs(1_767_600_000));
    let lab = Lab {
        seed,
        capture: capture.clone(),
        policy: Policy::default(),
        transcript: Transcript::default(),
        tls: TlsContext::sim(
            Arc::new(LabPki::new(seed).unwrap()),
            capture.clone(),
            Duration::from_secs(1_767_600_000),
        ),
    };
    let mut sim = turmoil::Builder::new().rng_seed(seed).build();
    let l1 = lab.clone();
    sim.host(SERVER, move || {
        let net = SimNet::new(SERVER, "cucm1", &l1);
        async move {
            let cfg = net.tls().server_config(&["cucm1.example.com".to_owned()])?;
            let listener = net.listen(8443).await?;
            loop {
                let tcp = listener.accept().await?;
                let Ok(mut s) = net.tls().accept(cfg.clone(), tcp).await else { continue };
                let mut buf = vec![0u8; 64];
                let n = s.read(&mut buf).await?;
                let reply = String::from_utf8_lossy(&buf[..n]).to_uppercase();
                s.write_all(reply.as_bytes()).await?;
                s.shutdown().await?;
            }
        }
    });
    let result = Arc::new(std::sync::Mutex::new(None));
    let (l2, r2) = (lab.clone(), result.clone());
    sim.client(CLIENT, async move {
        let net = SimNet::new(CLIENT, "alice", &l2);
        let cfg = net.tls().client_config(&[])?;
        let tcp = net.connect(SocketAddr::new(SERVER, 8443)).await?;
        let r = match net.tls().connect(cfg, name, tcp).await {
            Ok(mut s) => {
                s.write_all(b"hello uds").await?;
                let mut out = String::new();
                s.read_to_string(&mut out).await?;
                Ok(out)
            }
            Err(e) => Err(e.to_string()),
        };
        *r2.lock().unwrap() = Some(r);
        Ok(())
    });
    sim.run().unwrap();
    drop(sim);
    let r = result.lock().unwrap().take().expect("client ran");
    (capture.write_pcapng(Vec::new()).unwrap(), r)
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let (a, ra) = exchange(7, "cucm1.example.com");
    let (b, rb) = exchange(7, "cucm1.example.com");
    let (c, _) = exchange(8, "cucm1.example.com");
    assert_eq!(ra, Ok("HELLO UDS".to_owned()));
    assert_eq!(ra, rb);
    assert!(a == b, "same seed must give a byte-identical TLS capture");
    assert!(a != c, "another seed must give other key shares");
    // The secrets are embedded: a Decryption Secrets Block with a TLS 1.3 key log.
    let text = String::from_utf8_lossy(&a);
    assert!(text.contains("CLIENT_HANDSHAKE_TRAFFIC_SECRET"), "no key log in the capture");
    assert!(text.contains("CLIENT_TRAFFIC_SECRET_0"));
    if let Some(dir) = std::env::var_os("UCLAB_TLS_CAPTURE") {
        std::fs::write(std::path::Path::new(&dir), &a).unwrap();
    }
}

#[test]
fn certificate_name_mismatch_is_refused() {
    let (_, r) = exchange(7, "cucm2.example.com");
    let e = r.expect_err("a certificate for cucm1 must not satisfy cucm2");
    assert!(e.contains("certificate") || e.contains("NotValidForName"), "{e}");
}

#[test]
fn a_context_without_a_node_stream_fails_instead_of_using_os_randomness() {
    let pki = Arc::new(LabPki::new(1).unwrap());
    let ctx = TlsContext::sim(pki, Capture::new(1, Duration::ZERO), Duration::ZERO);
    let cfg = ctx.client_config(&[]).unwrap();
    let name = rustls::pki_types::ServerName::try_from("cucm1.example.com").unwrap();
    let err = rustls::ClientConnection::new(cfg, name).expect_err("no randomness, no hello");
    assert!(matches!(err, rustls::Error::FailedToGetRandomBytes), "{err:?}");
}
