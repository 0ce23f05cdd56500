//! A hostile peer against the DNS mock in simulation: garbage over UDP and TCP gets FORMERR or
//! is dropped, a stalled TCP client is cut off, and the server keeps answering everyone.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uclab_mocks::dns::{DnsConfig, ZoneSource, serve};

use uclab_net::tls::{LabPki, TlsContext};
use uclab_net::{Capture, Lab, Net, Policy, SimNet, Transcript};
use uclab_proto::dns::{DnsMsg, QType, build_query};

const SERVER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 53));
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 99));

fn net(ip: IpAddr, name: &str, cap: &Capture, tr: &Transcript) -> SimNet {
    let lab = Lab {
        seed: 1,
        capture: cap.clone(),
        policy: Policy::default(),
        transcript: tr.clone(),
        tls: TlsContext::sim(Arc::new(LabPki::new(1).unwrap()), cap.clone(), Duration::ZERO),
    };
    SimNet::new(ip, name, &lab)
}

async fn udp_ask<N: Net>(net: &N, bytes: &[u8]) -> Option<Vec<u8>> {
    let s = net.bind_udp(0).await.ok()?;
    s.send_to(bytes, SocketAddr::new(SERVER, 53)).await.ok()?;
    let mut buf = vec![0u8; 4096];
    match uclab_net::time::timeout(Duration::from_secs(1), s.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

#[test]
fn garbage_gets_formerr_or_dropped_and_the_server_keeps_answering() {
    let (cap, tr) = (Capture::new(1, Duration::ZERO), Transcript::default());
    let mut sim =
        turmoil::Builder::new().rng_seed(1).simulation_duration(Duration::from_secs(60)).build();
    let (c1, t1) = (cap.clone(), tr.clone());
    sim.host(SERVER, move || {
        let n = net(SERVER, "dns", &c1, &t1);
        async move {
            let zone =
                ZoneSource { origin: "example.com".into(), text: "www 60 IN A 10.0.0.80\n".into() };
            serve(
                n,
                DnsConfig {
                    zones: vec![zone],
                    forward: None,
                    port: 53,
                    live: Default::default(),
                    answer_cache: false,
                },
            )
            .await?;
            Ok(())
        }
    });
    let (c2, t2) = (cap.clone(), tr.clone());
    sim.client(CLIENT, async move {
        let n = net(CLIENT, "evil", &c2, &t2);
        let good = build_query(7, "www.example.com", QType::A)?;

        // Too short for a header: dropped.
        assert_eq!(udp_ask(&n, b"\x01\x02\x03").await, None);
        // A header and junk: FORMERR with our id.
        let mut junk = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x05];
        junk.extend_from_slice(&[0xee; 40]);
        let r = udp_ask(&n, &junk).await.expect("FORMERR expected");
        assert_eq!(&r[..2], &[0x12, 0x34]);
        assert_eq!(r[3] & 0x0f, 1);
        // A response sent to the server is never answered (no reflection loops).
        let mut resp = good.clone();
        resp[2] |= 0x80;
        assert_eq!(udp_ask(&n, &resp).await, None);
        // Still answering.
        let r = DnsMsg::parse(&udp_ask(&n, &good).await.expect("answer"))?;
        assert_eq!(r.answers.len(), 1);

        // TCP: a zero-length frame, then a frame that promises more than it sends.
        let mut c = n.connect(SocketAddr::new(SERVER, 53)).await?;
        c.write_all(&[0, 0]).await?;
        let mut buf = [0u8; 2];
        let got = uclab_net::time::timeout(Duration::from_secs(2), c.read(&mut buf)).await;
        assert!(matches!(got, Ok(Ok(0)) | Ok(Ok(2)) | Ok(Err(_))), "closed or answered: {got:?}");
        let mut c = n.connect(SocketAddr::new(SERVER, 53)).await?;
        c.write_all(&[0x01, 0x00, 0xAA]).await?; // 256 bytes promised, 1 sent, then silence
        // The server's idle timeout (10 s) ends the connection: EOF, not a hang.
        let got = uclab_net::time::timeout(Duration::from_secs(15), c.read(&mut buf)).await;
        assert!(matches!(got, Ok(Ok(0)) | Ok(Err(_))), "stalled client must be cut off: {got:?}");
        // A proper TCP query still works.
        let mut c = n.connect(SocketAddr::new(SERVER, 53)).await?;
        let mut framed = (good.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&good);
        c.write_all(&framed).await?;
        let len = c.read_u16().await?;
        let mut body = vec![0u8; usize::from(len)];
        c.read_exact(&mut body).await?;
        assert_eq!(DnsMsg::parse(&body)?.id, 7);
        Ok(())
    });
    sim.run().unwrap();
}
