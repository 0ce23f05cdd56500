//! The CUCM SIP service's sockets, its only I/O: UDP and TCP on the node's SIP port and TLS on
//! its TLS port, all into the shared [`Cluster`], with each connection's idle and
//! partial-message deadlines (issue 13); and the node's conference bridge's RTP socket.
//!
//! The nodes of a cluster share a [`ClusterIo`]: the cluster and the bounded channels to the
//! tasks that own its sockets. Every call into the cluster is followed, before the task
//! yields, by handing each message it made to its channel, so messages and task wake-ups
//! keep the order the cluster made them in. A connection whose channel is full has a peer
//! that does not read: it is closed rather than let memory grow.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::{Receiver, Sender, channel};

use super::{Cluster, DSCP_SIGNALLING, Dest, FlowId, Outgoing, TCP_IDLE, TCP_PARTIAL, Transport};

/// Messages a TCP or TLS connection's task may have waiting to be written. An input makes a
/// few messages for a flow at most (a response, a forwarded request, a NOTIFY or two), and
/// the task writes them as soon as it runs, so a flow with 1,024 waiting belongs to a peer
/// that has stopped reading (its TCP window shut): the flow is closed rather than let grow.
/// Each phone has a flow of its own (CAP1's 3,000 phones are 3,000 flows), so no scenario
/// comes near.
pub const FLOW_QUEUE: usize = 1_024;

/// Datagrams a node's UDP socket task may have waiting. Every UDP peer of the node and the
/// trunk to IM&P (SPEC CC7) share the socket, so it holds more than a flow; past it a
/// datagram is dropped, as the network may drop any (RFC 3261 §17.1.1.2 retransmits).
pub const UDP_QUEUE: usize = 8_192;

/// What the nodes of one CUCM cluster (or an SRST router) share: the [`Cluster`] and the
/// channels to the tasks that own its sockets, each connection's and each node's UDP socket's.
///
/// Everything that reaches the cluster goes through here, and what the cluster queued is
/// sent on before the call returns ([`ClusterIo::with`]).
#[derive(Debug)]
pub struct ClusterIo {
    cluster: Cluster,
    /// TCP and TLS flows → (their node, their connection's task).
    /// Boxed messages: a channel's blocks hold 32 each, made with it, and a connection's
    /// channel is mostly empty (issue 19).
    streams: BTreeMap<FlowId, (String, Sender<Box<Outgoing>>)>,
    /// Node (lower case) → its UDP socket's task.
    udp: BTreeMap<String, Sender<Outgoing>>,
    /// Each UDP socket sends what a datagram produced before it reads the next one.
    answer_first: bool,
}

impl ClusterIo {
    /// `cluster`, with no node yet.
    pub fn new(cluster: Cluster) -> Self {
        Self { cluster, streams: BTreeMap::new(), udp: BTreeMap::new(), answer_first: false }
    }

    /// Issue 19, live mode (`uclab serve`): each UDP socket sends what a datagram produced
    /// before it reads the next, as a registrar fed by a kernel socket does, so a load
    /// generator with many requests in flight gets its answers as they are made rather than
    /// in one burst that overflows its receive buffer (SIPp's 64 KiB). A simulated run keeps
    /// reading every datagram that has arrived first, as it always has.
    pub fn answering_first(mut self, yes: bool) -> Self {
        self.answer_first = yes;
        self
    }

    /// The cluster, to look at.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Runs `f` on the cluster, then sends on what it queued.
    pub fn with<R>(&mut self, f: impl FnOnce(&mut Cluster) -> R) -> R {
        let r = f(&mut self.cluster);
        self.dispatch();
        r
    }

    /// Node `host` joins with SIP `port`: the receiver of what its UDP socket sends.
    pub(super) fn add_node(&mut self, host: &str, port: u16) -> Receiver<Outgoing> {
        let (tx, rx) = channel(UDP_QUEUE);
        self.cluster.add_node(host, port);
        self.udp.insert(host.to_ascii_lowercase(), tx);
        rx
    }

    /// Node `host` stopped: its flows and their channels are gone.
    fn remove_node(&mut self, host: &str) {
        let host = host.to_ascii_lowercase();
        self.with(|c| c.remove_node(&host));
        self.udp.remove(&host);
        self.streams.retain(|_, (node, _)| *node != host);
    }

    /// A TCP or TLS connection accepted by `host`: its flow, and the receiver of what to
    /// write to it.
    pub(super) fn open_stream(
        &mut self,
        host: &str,
        transport: Transport,
        peer: SocketAddr,
    ) -> (FlowId, Receiver<Box<Outgoing>>) {
        let (tx, rx) = channel(FLOW_QUEUE);
        let flow = self.with(|c| c.open_stream(host, transport, peer));
        self.streams.insert(flow, (host.to_ascii_lowercase(), tx));
        (flow, rx)
    }

    /// A connection closed: its flow goes, and what that changes is sent.
    pub(super) fn close_flow(&mut self, flow: FlowId) {
        self.streams.remove(&flow);
        self.with(|c| c.close_flow(flow));
    }

    /// Hands every message the cluster queued to its socket's task, in order. A connection
    /// whose channel is full is closed as if its peer had hung up (its bindings go, and what
    /// that changes is sent too); a full UDP channel loses the datagram.
    fn dispatch(&mut self) {
        while let Some((dest, out)) = self.cluster.poll_output() {
            match dest {
                Dest::Stream(flow) => {
                    let Some((_, tx)) = self.streams.get(&flow) else { continue };
                    let peer = out.to;
                    // A closed channel is a task that has ended: its flow closes with it.
                    if let Err(TrySendError::Full(_)) = tx.try_send(Box::new(out)) {
                        tracing::warn!(
                            flow = flow.0,
                            %peer,
                            "SIP peer reads nothing ({FLOW_QUEUE} messages waiting): flow closed"
                        );
                        self.streams.remove(&flow);
                        self.cluster.close_flow(flow);
                    }
                }
                Dest::Udp(node) => {
                    let Some(tx) = self.udp.get(&node) else { continue };
                    if let Err(TrySendError::Full(out)) = tx.try_send(out) {
                        tracing::warn!(
                            %node,
                            to = %out.to,
                            "SIP UDP socket behind ({UDP_QUEUE} waiting): datagram dropped"
                        );
                    }
                }
            }
        }
    }
}

/// Serves node `host`'s SIP: UDP and TCP on `port`, TLS on `tls_port` if any (certificate `names`),
/// all into the shared `cluster`, until the node stops. A crash drops this future; the node's
/// flows and their bindings go with it.
pub async fn serve<N: uclab_net::Net + Clone + 'static>(
    net: N,
    host: String,
    (port, tls_port): (u16, Option<u16>),
    names: Vec<String>,
    cluster: Rc<RefCell<ClusterIo>>,
) -> std::io::Result<()> {
    let mut udp = net.bind_udp(port).await?;
    udp.set_dscp(DSCP_SIGNALLING);
    let udp = Rc::new(udp);
    let mut rx = cluster.borrow_mut().add_node(&host, port);
    if let Some(p) = tls_port {
        cluster.borrow_mut().with(|c| c.set_tls_port(&host, p));
    }
    struct Gone(Rc<RefCell<ClusterIo>>, String);
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
    let trusted = cluster.borrow_mut().with(|c| c.trusted_peers());
    let accept = |listener: uclab_net::TcpAcceptor, transport: Transport| {
        let (net, host, cluster, tls) = (net.clone(), host.clone(), cluster.clone(), tls.clone());
        let limit = crate::limits::ConnLimit::new(
            crate::limits::STREAM_CONNECTIONS,
            crate::limits::PER_PEER,
        )
        .trusting(&trusted);
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
                            let t = uclab_net::time::timeout(
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
    let answer_first = cluster.borrow().answer_first;
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
                cluster.borrow_mut().with(|c| {
                    if let Some(flow) = c.udp_flow(&host, from) {
                        c.handle(now, flow, &buf[..n]);
                    }
                });
                while answer_first && let Ok(out) = rx.try_recv() {
                    net.transcript().message(net.now(), local, out.to, "udp", &out.summary);
                    let _ = udp.send_to(&out.bytes, out.to).await;
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
    cluster: Rc<RefCell<ClusterIo>>,
) -> std::io::Result<()> {
    let mut udp = net.bind_udp(port).await?;
    udp.set_dscp(uclab_proto::dscp::AUDIO);
    cluster.borrow_mut().with(|c| c.set_bridge(&host, udp.local_addr()));
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, from) = udp.recv_from(&mut buf).await?;
        let to = cluster.borrow().cluster().bridge_targets(from);
        for t in to {
            let _ = udp.send_to(&buf[..n], t).await;
        }
    }
}

/// One TCP or TLS connection: framed messages into the cluster, what its channel brings out.
async fn stream<N: uclab_net::Net>(
    net: &N,
    (local, peer): (SocketAddr, SocketAddr),
    mut io: Box<dyn uclab_net::AsyncIo>,
    transport: Transport,
    host: &str,
    cluster: &Rc<RefCell<ClusterIo>>,
) {
    use tokio::io::AsyncWriteExt;
    use uclab_proto::sip::frame::{Frame, StreamFramer};
    let (flow, mut rx) = cluster.borrow_mut().open_stream(host, transport, peer);
    struct Close<'a>(&'a Rc<RefCell<ClusterIo>>, FlowId);
    impl Drop for Close<'_> {
        fn drop(&mut self) {
            if let Ok(mut c) = self.0.try_borrow_mut() {
                c.close_flow(self.1);
            }
        }
    }
    let _close = Close(cluster, flow);
    let mut framer = StreamFramer::new();
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
            // Into the thread's one read buffer, not one per connection (issue 19).
            r = uclab_net::scratch::read_vec(&mut io, 16 * 1024) => {
                let bytes = match r {
                    Ok(b) if !b.is_empty() => b,
                    _ => {
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
                };
                last_byte = tokio::time::Instant::now();
                framer.feed(&bytes);
                loop {
                    match framer.next_frame() {
                        Ok(Some(Frame::Message(m))) => {
                            partial_since = None;
                            let now = net.now();
                            cluster.borrow_mut().with(|c| c.handle(now, flow, &m));
                        }
                        // CUCM does not speak STUN (Expressway answers the MRA
                        // softphone's, issue 17): skipped.
                        Ok(Some(Frame::Stun(_))) => {}
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
            out = rx.recv() => {
                let Some(out) = out else {
                    // The cluster dropped the flow: its peer stopped reading (FLOW_QUEUE).
                    let why = "SIP peer reads nothing; closed";
                    net.transcript().message(net.now(), peer, local, "tcp", why);
                    let _ = io.shutdown().await;
                    return;
                };
                net.transcript().message(net.now(), local, peer, "tcp", &out.summary);
                // A peer that stops reading is cut off after TCP_PARTIAL, not waited for.
                let w = uclab_net::time::timeout(TCP_PARTIAL, io.write_all(&out.bytes)).await;
                if !matches!(w, Ok(Ok(()))) {
                    return;
                }
            }
            () = uclab_net::time::sleep_until(deadline) => {
                net.transcript().message(net.now(), peer, local, "tcp", why);
                let _ = io.shutdown().await;
                return;
            }
        }
    }
}
