//! The CUCM SIP service's sockets, its only I/O: UDP and TCP on the node's SIP port and TLS on
//! its TLS port, all into the shared [`Cluster`], with each connection's idle and
//! partial-message deadlines (issue 13); and the node's conference bridge's RTP socket.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use super::{Cluster, DSCP_SIGNALLING, FlowId, Outgoing, TCP_IDLE, TCP_PARTIAL, Transport};

/// Serves node `host`'s SIP: UDP and TCP on `port`, TLS on `tls_port` if any (certificate `names`),
/// all into the shared `cluster`, until the node stops. A crash drops this future; the node's
/// flows and their bindings go with it.
pub async fn serve<N: uclab_net::Net + Clone + 'static>(
    net: N,
    host: String,
    (port, tls_port): (u16, Option<u16>),
    names: Vec<String>,
    cluster: Rc<RefCell<Cluster>>,
) -> std::io::Result<()> {
    let mut udp = net.bind_udp(port).await?;
    udp.set_dscp(DSCP_SIGNALLING);
    let udp = Rc::new(udp);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Outgoing>();
    cluster.borrow_mut().add_node(&host, port, tx);
    if let Some(p) = tls_port {
        cluster.borrow_mut().set_tls_port(&host, p);
    }
    struct Gone(Rc<RefCell<Cluster>>, String);
    impl Drop for Gone {
        fn drop(&mut self) {
            if let Ok(mut c) = self.0.try_borrow_mut() {
                c.remove_node(&self.1);
            }
        }
    }
    let _gone = Gone(cluster.clone(), host.clone());
    let tcp = net.listen(port).await?;
    let tls_listener = match tls_port {
        Some(p) => Some(net.listen(p).await?),
        None => None,
    };
    let tls = net.tls().server_config(&names).map_err(std::io::Error::other)?;
    let accept = |listener: uclab_net::TcpAcceptor, transport: Transport| {
        let (net, host, cluster, tls) = (net.clone(), host.clone(), cluster.clone(), tls.clone());
        let limit = crate::limits::ConnLimit::new(
            crate::limits::STREAM_CONNECTIONS,
            crate::limits::PER_PEER,
        );
        tokio::task::spawn_local(async move {
            loop {
                let mut conn = crate::limits::next_conn(&listener).await;
                let Some(slot) = limit.admit(conn.peer_addr().ip()) else {
                    continue; // over a cap: closed at once
                };
                conn.set_dscp(DSCP_SIGNALLING);
                let (net, host, cluster, tls) =
                    (net.clone(), host.clone(), cluster.clone(), tls.clone());
                tokio::task::spawn_local(async move {
                    let _slot = slot;
                    let (local, peer) = (conn.local_addr(), conn.peer_addr());
                    let io: Box<dyn uclab_net::AsyncIo> = match transport {
                        Transport::Tls => {
                            let t = tokio::time::timeout(
                                Duration::from_secs(10),
                                net.tls().accept(tls, Box::new(conn)),
                            );
                            match t.await {
                                Ok(Ok(s)) => Box::new(s),
                                _ => return,
                            }
                        }
                        _ => Box::new(conn),
                    };
                    stream(&net, (local, peer), io, transport, &host, &cluster).await;
                });
            }
        })
    };
    let t1 = accept(tcp, Transport::Tcp);
    let t2 = tls_listener.map(|l| accept(l, Transport::Tls));
    struct Abort(Vec<tokio::task::JoinHandle<()>>);
    impl Drop for Abort {
        fn drop(&mut self) {
            for h in &self.0 {
                h.abort();
            }
        }
    }
    let _tasks = Abort([Some(t1), t2].into_iter().flatten().collect());
    let local = udp.local_addr();
    let mut buf = vec![0u8; 65_535];
    loop {
        tokio::select! {
            biased;
            r = udp.recv_from(&mut buf) => {
                let (n, from) = r?;
                if buf[..n].iter().all(|b| matches!(b, b'\r' | b'\n')) {
                    continue; // a keepalive
                }
                let now = net.now();
                let mut c = cluster.borrow_mut();
                if let Some(flow) = c.udp_flow(&host, from) {
                    c.handle(now, flow, &buf[..n]);
                }
            }
            Some(out) = rx.recv() => {
                net.transcript().message(net.now(), local, out.to, "udp", &out.summary);
                let _ = udp.send_to(&out.bytes, out.to).await;
            }
        }
    }
}

/// Node `host`'s conference bridge on UDP `port` (DSCP 46, SPEC MEDIA2): every RTP packet
/// from a participant goes to the conference's other participants.
pub async fn bridge<N: uclab_net::Net>(
    net: N,
    host: String,
    port: u16,
    cluster: Rc<RefCell<Cluster>>,
) -> std::io::Result<()> {
    let mut udp = net.bind_udp(port).await?;
    udp.set_dscp(uclab_proto::dscp::AUDIO);
    cluster.borrow_mut().set_bridge(&host, udp.local_addr());
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, from) = udp.recv_from(&mut buf).await?;
        let to = cluster.borrow().bridge_targets(from);
        for t in to {
            let _ = udp.send_to(&buf[..n], t).await;
        }
    }
}

/// One TCP or TLS connection: framed messages into the cluster, its outbox out.
async fn stream<N: uclab_net::Net>(
    net: &N,
    (local, peer): (SocketAddr, SocketAddr),
    mut io: Box<dyn uclab_net::AsyncIo>,
    transport: Transport,
    host: &str,
    cluster: &Rc<RefCell<Cluster>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use uclab_proto::sip::frame::{Frame, StreamFramer};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Outgoing>();
    let flow = cluster.borrow_mut().open_stream(host, transport, peer, tx);
    struct Close<'a>(&'a Rc<RefCell<Cluster>>, FlowId);
    impl Drop for Close<'_> {
        fn drop(&mut self) {
            if let Ok(mut c) = self.0.try_borrow_mut() {
                c.close_flow(self.1);
            }
        }
    }
    let _close = Close(cluster, flow);
    let mut framer = StreamFramer::new();
    let mut buf = vec![0u8; 16 * 1024];
    // Deadlines (issue 13): idle since the last byte, or the rest of a started message.
    // tokio's clock: the node's virtual time under turmoil, so a replay is unaffected.
    let mut last_byte = tokio::time::Instant::now();
    let mut partial_since: Option<tokio::time::Instant> = None;
    loop {
        let (deadline, why) = match partial_since {
            Some(t) => (t + TCP_PARTIAL, "SIP message incomplete after 10 s; closed"),
            None => (last_byte + TCP_IDLE, "SIP connection idle for 300 s; closed"),
        };
        tokio::select! {
            biased;
            r = io.read(&mut buf) => {
                let n = match r {
                    Ok(0) | Err(_) => {
                        // What was answered before the peer closed still goes out.
                        while let Ok(out) = rx.try_recv() {
                            net.transcript().message(net.now(), local, peer, "tcp", &out.summary);
                            if io.write_all(&out.bytes).await.is_err() {
                                break;
                            }
                        }
                        if framer.finish().is_err() {
                            net.transcript().message(net.now(), peer, local, "tcp", "SIP stream closed inside a message");
                        }
                        return;
                    }
                    Ok(n) => n,
                };
                last_byte = tokio::time::Instant::now();
                framer.feed(&buf[..n]);
                loop {
                    match framer.next_frame() {
                        Ok(Some(Frame::Message(m))) => {
                            partial_since = None;
                            let now = net.now();
                            cluster.borrow_mut().handle(now, flow, &m);
                        }
                        Ok(Some(Frame::Ping)) => {
                            // RFC 5626 §3.5.1: pong.
                            if io.write_all(b"\r\n").await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => {
                            partial_since = match (framer.partial(), partial_since) {
                                (true, None) => Some(last_byte),
                                (true, t) => t,
                                (false, _) => None,
                            };
                            break;
                        }
                        Err(e) => {
                            // §18.3: framing lost: the connection is closed.
                            net.transcript().message(net.now(), peer, local, "tcp", &format!("SIP framing lost: {e}; closed"));
                            let _ = io.shutdown().await;
                            return;
                        }
                    }
                }
            }
            Some(out) = rx.recv() => {
                net.transcript().message(net.now(), local, peer, "tcp", &out.summary);
                if io.write_all(&out.bytes).await.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                net.transcript().message(net.now(), peer, local, "tcp", why);
                let _ = io.shutdown().await;
                return;
            }
        }
    }
}
