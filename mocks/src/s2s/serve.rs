//! The federation service of an XMPP server node (SPEC FED1, FED4, FED5): server streams in on
//! 5269, streams out to foreign domains, and the connections dialback verification needs. It
//! moves bytes, TLS and time for the sans-IO [`Stream`]s and hands what they carry to the
//! node's cluster [`Hub`]: stanzas in to [`Router::handle_remote`](crate::imp::router::Router::handle_remote),
//! bounces to [`Router::bounce`](crate::imp::router::Router::bounce).
//!
//! Out: one stream per foreign domain per node, made when the first stanza for it comes and
//! kept until it ends (idle, or the peer closes); stanzas wait in it until the peer is
//! authenticated. Where a domain is: a static route (FED4), else its `_xmpp-server._tcp` SRV
//! records in RFC 2782 order, else the domain's own address on 5269 (RFC 6120 §3.2.2); with
//! none of them the stanzas bounce with `remote-server-not-found`, and nothing is retried for
//! ever: the next stanza for the domain starts over.
//!
//! In: the listener admits at most [`limits::STREAM_CONNECTIONS`] streams and
//! [`limits::PER_PEER`] from one address; the client certificate a peer offers is checked for
//! the domain its stream claims, which lets the engine offer SASL EXTERNAL.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use uclab_net::tls::peer_cert_has_name;
use uclab_net::{AsyncIo, Net};
use uclab_proto::jid::domain;
use uclab_proto::xmpp::Element;

use super::{Action, S2sConfig, SETUP_DEADLINE, Stream};
use crate::imp::hub::{Hub, Outgoing};
use crate::limits;
use crate::resolve::{self, Lookup};

/// The XMPP server-to-server port (RFC 6120 §3.2.2).
pub const S2S_PORT: u16 = 5269;
/// Stanzas handed to one outbound stream and not yet taken by it (they wait there while the
/// stream is set up, and the stream takes them once the peer is authenticated); beyond, a
/// stanza bounces with `resource-constraint`. The listener and the other domains' streams never
/// wait for one stream.
const STREAM_QUEUE: usize = crate::imp::router::REMOTE_QUEUE;
/// Foreign domains with an outbound stream at once, per node.
const MAX_DOMAINS: usize = 1_024;
/// How long one SRV target has to accept the connection before the next is tried (a crashed
/// host answers nothing at all).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one write may wait for a peer that does not read (IM&P's figure for clients).
pub const WRITE_DEADLINE: Duration = crate::imp::xmpp::WRITE_TIMEOUT;

/// A node's federation settings.
#[derive(Clone, Debug)]
pub struct S2sSettings {
    /// Domains, secret and methods.
    pub cfg: Rc<S2sConfig>,
    /// The node's own domain (what its outbound streams come from).
    pub domain: String,
    /// The node's name in transcript notes.
    pub host: String,
    /// Its certificate's names (server and client certificate).
    pub names: Vec<String>,
    /// Where it listens.
    pub port: u16,
    /// The DNS server of its lookups.
    pub dns: Option<SocketAddr>,
    /// SPEC FED4: domains reached without DNS, each at these addresses in turn (a peer
    /// cluster's node names reach any node of that cluster, SPEC FED2).
    pub static_routes: BTreeMap<String, Vec<SocketAddr>>,
}

/// Serves federation for the node until it stops: joins the cluster's federation nodes,
/// listens for server streams, carries the cluster's stanzas out.
pub async fn serve<N: Net + Clone + 'static>(
    net: N,
    s: Rc<S2sSettings>,
    hub: Rc<Hub>,
) -> io::Result<()> {
    let listener = net.listen(s.port).await?;
    let mut out = hub.join_federation(&s.host);
    struct Leave(Rc<Hub>, String);
    impl Drop for Leave {
        fn drop(&mut self) {
            self.0.leave_federation(&self.1);
        }
    }
    let _leave = Leave(hub.clone(), s.host.clone());
    let limit = limits::ConnLimit::new(limits::STREAM_CONNECTIONS, limits::PER_PEER);
    let mut streams: BTreeMap<(String, String), mpsc::Sender<Element>> = BTreeMap::new();
    loop {
        tokio::select! {
            biased;
            tcp = limits::next_conn(&listener) => {
                let Some(slot) = limit.admit(tcp.peer_addr().ip()) else { continue };
                let (net, s, hub) = (net.clone(), s.clone(), hub.clone());
                tokio::task::spawn_local(async move {
                    let _slot = slot;
                    let id = format!("{:016x}", net.rng().next_u64());
                    let ends = (tcp.local_addr(), tcp.peer_addr());
                    let mut st = Stream::inbound(s.cfg.clone(), id, net.now());
                    drive(&net, &s, &hub, Box::new(tcp), ends, &mut st, None).await;
                });
            }
            m = out.recv() => match m {
                None => return Ok(()),
                Some(Outgoing::Note(n)) => net.transcript().note(net.now(), &s.host, &n),
                Some(Outgoing::Stanza(e)) => {
                    // One stream per pair of domains: ours is the sender's (the presence
                    // domain, or a node name towards a peer cluster, SPEC FED2).
                    let d = domain(e.get("to").unwrap_or(""));
                    let from = domain(e.get("from").unwrap_or(""));
                    let local = if s.cfg.domains.contains(&from) { from } else { s.domain.clone() };
                    let key = (local, d);
                    streams.retain(|_, tx| !tx.is_closed());
                    let tx = match streams.get(&key) {
                        Some(tx) => tx.clone(),
                        None if streams.len() >= MAX_DOMAINS => {
                            hub.route(|r| r.bounce(vec![e], "resource-constraint"));
                            continue;
                        }
                        None => {
                            let (tx, rx) = mpsc::channel(STREAM_QUEUE);
                            let (net, s, hub) = (net.clone(), s.clone(), hub.clone());
                            let ends = key.clone();
                            tokio::task::spawn_local(outbound(net, s, hub, ends, rx));
                            streams.insert(key, tx.clone());
                            tx
                        }
                    };
                    match tx.try_send(e) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(e)) => {
                            hub.route(|r| r.bounce(vec![e], "resource-constraint"));
                        }
                        Err(mpsc::error::TrySendError::Closed(e)) => {
                            hub.route(|r| r.bounce(vec![e], "remote-connection-failed"));
                        }
                    }
                }
            },
        }
    }
}

/// Where `remote`'s server streams go, in order of preference (SPEC FED4, FED1), or the
/// condition to bounce with.
async fn route<N: Net>(
    net: &N,
    s: &S2sSettings,
    remote: &str,
) -> Result<Vec<SocketAddr>, &'static str> {
    if let Some(a) = s.static_routes.get(remote) {
        return Ok(a.clone());
    }
    let Some(dns) = s.dns else { return Err("remote-server-not-found") };
    match resolve::srv_addrs(net, dns, &format!("_xmpp-server._tcp.{remote}")).await {
        Lookup::Found(targets) => {
            let addrs: Vec<SocketAddr> = targets.into_iter().map(|(a, _)| a).collect();
            if addrs.is_empty() { Err("remote-server-not-found") } else { Ok(addrs) }
        }
        // RFC 6120 §3.2.2: without SRV, the domain itself on the default port.
        Lookup::NoRecord => match resolve::a(net, dns, remote).await {
            Lookup::Found(ip) => Ok(vec![SocketAddr::new(ip.into(), S2S_PORT)]),
            Lookup::NoRecord => Err("remote-server-not-found"),
            Lookup::Failed(why) => Err(unresolved(&why)),
        },
        Lookup::Failed(why) => Err(unresolved(&why)),
    }
}

/// RFC 6120 §8.3.3.15–16: a name DNS refuses or fails to resolve is `remote-server-not-found`;
/// a DNS server that does not answer is `remote-server-timeout`.
fn unresolved(why: &str) -> &'static str {
    if why == "timeout" { "remote-server-timeout" } else { "remote-server-not-found" }
}

/// Connects to the first of `addrs` that answers, each within [`CONNECT_TIMEOUT`].
async fn connect<N: Net>(
    net: &N,
    addrs: &[SocketAddr],
) -> Result<uclab_net::TcpConn, &'static str> {
    let mut why = "remote-connection-failed";
    for a in addrs {
        match uclab_net::time::timeout(CONNECT_TIMEOUT, net.connect(*a)).await {
            Ok(Ok(c)) => return Ok(c),
            Ok(Err(_)) => why = "remote-connection-failed",
            Err(_) => why = "remote-server-timeout",
        }
    }
    Err(why)
}

/// One outbound stream to `remote`: finds and connects to its server, then carries the
/// stanzas that come on `rx` until the stream ends; what it could not carry bounces.
async fn outbound<N: Net + Clone + 'static>(
    net: N,
    s: Rc<S2sSettings>,
    hub: Rc<Hub>,
    (local, remote): (String, String),
    mut rx: mpsc::Receiver<Element>,
) {
    let st = Stream::outbound(s.cfg.clone(), &local, &remote, net.now());
    let target = match route(&net, &s, &remote).await {
        Ok(a) => connect(&net, &a).await,
        Err(why) => Err(why),
    };
    let tcp = match target {
        Ok(t) => t,
        Err(why) => {
            let left = waiting(&mut rx);
            net.transcript().note(net.now(), &s.host, &format!("XMPP-S2S to {remote}: {why}"));
            hub.route(|r| r.bounce(left, why));
            return;
        }
    };
    let ends = (tcp.local_addr(), tcp.peer_addr());
    let mut st = st;
    drive(&net, &s, &hub, Box::new(tcp), ends, &mut st, Some(&mut rx)).await;
    // What was still waiting, or came after the stream ended: bounced with the reason it
    // ended, never lost.
    let left = waiting(&mut rx);
    if !left.is_empty() {
        let why = st.failure().unwrap_or("remote-connection-failed").to_owned();
        hub.route(|r| r.bounce(left, &why));
    }
}

/// Closes a stream's channel and takes what still waits in it (to be bounced, never lost).
fn waiting(rx: &mut mpsc::Receiver<Element>) -> Vec<Element> {
    rx.close();
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

/// A verifier stream (XEP-0220 §2.1.2 step 3): asks `remote`'s authoritative server whether
/// `key` is right; false when it cannot be reached or does not answer.
async fn verify<N: Net + Clone + 'static>(
    net: N,
    s: Rc<S2sSettings>,
    hub: Rc<Hub>,
    (local, remote, id, key): (String, String, String, String),
) -> bool {
    let Ok(addrs) = route(&net, &s, &remote).await else { return false };
    let Ok(tcp) = connect(&net, &addrs).await else { return false };
    let ends = (tcp.local_addr(), tcp.peer_addr());
    let mut st = Stream::verifier(s.cfg.clone(), &local, &remote, &id, &key, net.now());
    drive(&net, &s, &hub, Box::new(tcp), ends, &mut st, None).await.unwrap_or(false)
}

/// Moves one stream's bytes, TLS and time; returns a verifier's answer.
async fn drive<N: Net + Clone + 'static>(
    net: &N,
    s: &Rc<S2sSettings>,
    hub: &Rc<Hub>,
    mut io: Box<dyn AsyncIo>,
    (local, peer): (SocketAddr, SocketAddr),
    st: &mut Stream,
    mut stanzas: Option<&mut mpsc::Receiver<Element>>,
) -> Option<bool> {
    let log = |inbound: bool, line: &str| {
        let (from, to) = if inbound { (peer, local) } else { (local, peer) };
        net.transcript().message(net.now(), from, to, "tcp", line);
    };
    let (vtx, mut vrx) = mpsc::unbounded_channel::<(String, bool)>();
    let mut verified = None;
    let mut eof = false;
    loop {
        while let Some(a) = st.poll() {
            match a {
                Action::Send(_) if eof => {} // the connection is gone
                Action::Send(b) => {
                    // A peer that stops reading is given up, not waited for for ever: what was
                    // queued for it bounces.
                    let w = uclab_net::time::timeout(WRITE_DEADLINE, io.write_all(&b)).await;
                    if !matches!(w, Ok(Ok(()))) {
                        log(false, "XMPP-S2S write failed or timed out: closed");
                        st.handle_closed(net.now());
                        eof = true;
                    }
                }
                Action::StartTls { server, name } => {
                    let _ = io.flush().await;
                    match upgrade(net, s, io, server, &name, st.claimed()).await {
                        Ok((tls, names)) => {
                            io = tls;
                            st.handle_tls(net.now(), names);
                        }
                        Err(e) => {
                            log(false, &format!("XMPP-S2S TLS: {e}"));
                            st.handle_closed(net.now());
                            return verified;
                        }
                    }
                }
                Action::Verify { domain, receiving, id, key } => {
                    let (net, s, hub, vtx) = (net.clone(), s.clone(), hub.clone(), vtx.clone());
                    tokio::task::spawn_local(async move {
                        let args = (receiving, domain.clone(), id, key);
                        let valid = verify(net, s, hub, args).await;
                        let _ = vtx.send((domain, valid));
                    });
                }
                Action::Stanza(e) => hub.route(|r| r.handle_remote(e, net.tls().unix_now())),
                Action::Bounce(v, why) => hub.route(|r| r.bounce(v, &why)),
                Action::Verified { valid, .. } => verified = Some(valid),
                Action::Authenticated { .. } => {}
                Action::Log { inbound, line } => log(inbound, &line),
                Action::Close => {
                    let _ = io.flush().await;
                    let _ = io.shutdown().await;
                    return verified;
                }
            }
        }
        if st.is_done() || eof {
            return verified;
        }
        let wait = st.poll_timeout().map_or(Duration::MAX, |t| t.saturating_sub(net.now()));
        let authed = st.remote().is_some();
        tokio::select! {
            biased;
            r = uclab_net::scratch::read_vec(&mut io, 8192) => match r {
                Ok(b) if !b.is_empty() => st.handle_bytes(net.now(), &b),
                _ => {
                    // What the close produces (bounces, a log line) is handled, then it ends.
                    st.handle_closed(net.now());
                    eof = true;
                }
            },
            v = vrx.recv() => if let Some((d, valid)) = v {
                st.handle_verified(net.now(), &d, valid);
            },
            // Stanzas wait in the channel until the peer is authenticated (backpressure
            // instead of the engine's small setup queue).
            e = async { match stanzas.as_mut() { Some(rx) if authed => rx.recv().await, _ => std::future::pending().await } } => match e {
                Some(e) => st.send_stanza(net.now(), e),
                None => stanzas = None,
            },
            () = uclab_net::time::sleep(wait) => st.handle_timeout(net.now()),
        }
    }
}

/// TLS on a server stream: as the server with the node's certificate, asking for the peer's
/// (whose names are then checked against the domain the stream claims); as the client,
/// presenting the node's certificate and checking the server's against `name`.
async fn upgrade<N: Net>(
    net: &N,
    s: &S2sSettings,
    io: Box<dyn AsyncIo>,
    server: bool,
    name: &str,
    claimed: Option<&str>,
) -> io::Result<(Box<dyn AsyncIo>, Vec<String>)> {
    let deadline = |e: tokio::time::error::Elapsed| io::Error::new(io::ErrorKind::TimedOut, e);
    if server {
        let cfg =
            net.tls().server_config_optional_client_auth(&s.names).map_err(io::Error::other)?;
        let t = uclab_net::time::timeout(SETUP_DEADLINE, net.tls().accept(cfg, io))
            .await
            .map_err(deadline)??;
        let chain = t.get_ref().get_ref().1.peer_certificates();
        let names = match claimed {
            Some(d) if peer_cert_has_name(chain, d) => vec![d.to_owned()],
            _ => Vec::new(),
        };
        Ok((Box::new(t), names))
    } else {
        // A server certificate for other names leaves dialback (XEP-0220 §1.2).
        let cfg = net.tls().client_config_with_cert_any_name(&s.names).map_err(io::Error::other)?;
        let t = uclab_net::time::timeout(SETUP_DEADLINE, net.tls().connect(cfg, name, io))
            .await
            .map_err(deadline)??;
        let named = peer_cert_has_name(t.get_ref().get_ref().1.peer_certificates(), name);
        Ok((Box::new(t), if named { vec![name.to_owned()] } else { Vec::new() }))
    }
}
