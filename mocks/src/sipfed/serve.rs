//! The I/O of a federating SIP domain (SPEC FED3): moves the [`Endpoint`]'s messages over
//! mutual TLS on 5061 and hands its [`Signal`]s to the [`Owner`] (IM&P's gateway, or a foreign
//! SIP domain's users).
//!
//! In: the listener requires a client certificate from the lab CA (Lync-style federation is
//! mutual TLS) and admits at most [`limits::STREAM_CONNECTIONS`] connections,
//! [`limits::PER_PEER`] from one address. Out: one connection per foreign domain, found by a
//! static route, else `_sipfederationtls._tcp.<domain>` SRV in RFC 2782 order; the server's
//! certificate must name the host connected to. On every connection, a request is taken as
//! coming from the domain of its `From` only when the peer's certificate names that domain.
//! Each end logs what it sends. Deadlines: [`SETUP_DEADLINE`] for TLS, [`CONNECT_TIMEOUT`]
//! per target, [`IDLE`] without traffic, [`WRITE_DEADLINE`] for a peer that stops reading.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use uclab_net::tls::{Certificate, peer_cert_has_name};
use uclab_net::{AsyncIo, Net};
use uclab_proto::pidf::FederatedState;
use uclab_proto::sip::frame::{Frame, StreamFramer};
use uclab_proto::sip::{self, Message};

use super::endpoint::{addr, domain_of};
use super::{ConnId, Endpoint, Output, Signal};
use crate::limits;
use crate::resolve::{self, Lookup};

/// How long TLS may take to set up.
pub const SETUP_DEADLINE: Duration = Duration::from_secs(10);
/// How long one SRV target has to accept.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection without traffic this long is closed (the next request opens another).
pub const IDLE: Duration = Duration::from_secs(600);
/// How long one write may wait for a peer that does not read.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(30);
/// Messages waiting for one connection's writer at most; beyond, the connection is given up.
const CONN_QUEUE: usize = 4_096;
/// Foreign domains with an outbound connection at once.
const MAX_DOMAINS: usize = 1_024;

/// One federating SIP domain's server.
#[derive(Clone, Debug)]
pub struct SipFedSettings {
    /// The domain served.
    pub domain: String,
    /// The node's name in transcript notes.
    pub host: String,
    /// The server's host name (Via, Contact).
    pub fqdn: String,
    /// Its certificate's names (server and client certificate): its host name and domain.
    pub names: Vec<String>,
    /// Where it listens.
    pub port: u16,
    /// The DNS server of its lookups.
    pub dns: Option<SocketAddr>,
    /// Domains reached without DNS (SPEC FED4), each at these addresses in turn.
    pub static_routes: BTreeMap<String, Vec<SocketAddr>>,
}

/// Who the endpoint serves: what else drives it and what it is told.
pub trait Owner {
    /// What else drives the owner (the router's stanzas, scenario steps).
    type Input;
    /// Whether local user `user@domain` exists.
    fn known(&self, user: &str) -> bool;
    /// Whether requests from foreign `domain` are taken (SPEC FED5 policy); refused ones are
    /// answered 403.
    fn admits(&self, _domain: &str) -> bool {
        true
    }
    /// The server is up (the endpoint may send from here).
    fn start(&mut self, _now: Duration, _ep: &mut Endpoint) {}
    /// An input came.
    fn input(&mut self, now: Duration, input: Self::Input, ep: &mut Endpoint);
    /// The endpoint says what happened.
    fn signal(&mut self, now: Duration, s: Signal, ep: &mut Endpoint);
}

/// What the connection tasks tell the server loop.
enum Event {
    /// A message; `certified` is the `From` domain when the peer's certificate names it.
    Message(ConnId, Message, Option<String>),
    /// The connection ended; `code` when it never came up (502, 503, 504).
    Closed(ConnId, Option<u16>),
}

/// Serves `s`'s domain for `owner` until `inputs` ends and nothing is left, or for ever.
pub async fn serve<N: Net + Clone + 'static, O: Owner>(
    net: N,
    s: Rc<SipFedSettings>,
    mut owner: O,
    mut inputs: mpsc::Receiver<O::Input>,
) -> io::Result<()> {
    let listener = net.listen(s.port).await?;
    let mut ep = Endpoint::new(&s.domain, &s.fqdn, net.rng());
    let limit = limits::ConnLimit::new(limits::STREAM_CONNECTIONS, limits::PER_PEER);
    let (etx, mut erx) = mpsc::channel::<Event>(CONN_QUEUE);
    let mut conns: BTreeMap<ConnId, mpsc::Sender<Message>> = BTreeMap::new();
    let mut out_conns: BTreeMap<String, ConnId> = BTreeMap::new();
    let mut next: ConnId = 1;
    let mut inputs_open = true;
    owner.start(net.now(), &mut ep);
    loop {
        // Everything the last input produced, until the endpoint is quiet.
        while let Some(o) = ep.poll_output() {
            match o {
                Output::Signal(sig) => owner.signal(net.now(), sig, &mut ep),
                Output::Response { conn, msg } => {
                    if let Some(tx) = conns.get(&conn) {
                        let _ = tx.try_send(msg);
                    }
                }
                Output::Request { domain, msg } => {
                    let id = match out_conns.get(&domain) {
                        Some(id) => *id,
                        None if out_conns.len() >= MAX_DOMAINS => {
                            ep.fail_domain(net.now(), &domain, 503);
                            continue;
                        }
                        None => {
                            let id = next;
                            next += 1;
                            let (tx, rx) = mpsc::channel(CONN_QUEUE);
                            conns.insert(id, tx);
                            out_conns.insert(domain.clone(), id);
                            let (net, s, etx) = (net.clone(), s.clone(), etx.clone());
                            tokio::task::spawn_local(outbound(net, s, id, domain.clone(), rx, etx));
                            id
                        }
                    };
                    if let Some(tx) = conns.get(&id)
                        && tx.try_send(msg).is_err()
                    {
                        // A connection that stopped reading: given up, its requests fail.
                        conns.remove(&id);
                        out_conns.remove(&domain);
                        ep.fail_domain(net.now(), &domain, 503);
                    }
                }
            }
        }
        let wait = ep.poll_timeout().map_or(Duration::MAX, |t| t.saturating_sub(net.now()));
        tokio::select! {
            biased;
            e = erx.recv() => match e.expect("the loop holds a sender") {
                Event::Message(conn, m, certified) => {
                    let peer = |d: &str| {
                        if certified.as_deref() != Some(d) {
                            Err(format!("the TLS peer's certificate does not name {d}"))
                        } else if !owner.admits(d) {
                            Err(format!("federation with {d} is not allowed here"))
                        } else {
                            Ok(())
                        }
                    };
                    let known = |u: &str| owner.known(u);
                    ep.handle(net.now(), conn, m, &peer, &known);
                }
                Event::Closed(conn, code) => {
                    conns.remove(&conn);
                    let domain = out_conns.iter().find(|(_, c)| **c == conn).map(|(d, _)| d.clone());
                    if let Some(d) = domain {
                        out_conns.remove(&d);
                        ep.fail_domain(net.now(), &d, code.unwrap_or(503));
                    }
                }
            },
            tcp = limits::next_conn(&listener) => {
                let Some(slot) = limit.admit(tcp.peer_addr().ip()) else { continue };
                let id = next;
                next += 1;
                let (tx, rx) = mpsc::channel(CONN_QUEUE);
                conns.insert(id, tx);
                let (net, s, etx) = (net.clone(), s.clone(), etx.clone());
                tokio::task::spawn_local(async move {
                    let _slot = slot;
                    let ends = (tcp.local_addr(), tcp.peer_addr());
                    let Ok(cfg) = net.tls().server_config_client_auth(&s.names) else {
                        return closed(&etx, id, None).await;
                    };
                    let t = uclab_net::time::timeout(SETUP_DEADLINE, net.tls().accept(cfg, Box::new(tcp))).await;
                    match t {
                        Ok(Ok(t)) => {
                            let chain = t.get_ref().get_ref().1.peer_certificates().map(<[_]>::to_vec).unwrap_or_default();
                            carry(&net, Box::new(t), ends, id, chain, rx, &etx).await;
                        }
                        _ => {
                            let line = "SIP federation: TLS with a client certificate failed; closed";
                            net.transcript().message(net.now(), ends.0, ends.1, "tcp", line);
                        }
                    }
                    closed(&etx, id, None).await;
                });
            }
            i = async { if inputs_open { inputs.recv().await } else { std::future::pending().await } } => match i {
                Some(i) => owner.input(net.now(), i, &mut ep),
                None => inputs_open = false,
            },
            () = uclab_net::time::sleep(wait) => ep.handle_timeout(net.now()),
        }
    }
}

async fn closed(etx: &mpsc::Sender<Event>, id: ConnId, code: Option<u16>) {
    let _ = etx.send(Event::Closed(id, code)).await;
}

/// Where `remote`'s federation server is: (address, the name its certificate must carry), in
/// order of preference; or why there is none (its requests then fail 502).
async fn route<N: Net>(
    net: &N,
    s: &SipFedSettings,
    remote: &str,
) -> Result<Vec<(SocketAddr, String)>, String> {
    if let Some(a) = s.static_routes.get(remote) {
        return Ok(a.iter().map(|a| (*a, remote.to_owned())).collect());
    }
    let Some(dns) = s.dns else { return Err("no static route and no DNS".into()) };
    match resolve::srv_addrs(net, dns, &format!("_sipfederationtls._tcp.{remote}")).await {
        Lookup::Found(addrs) if addrs.is_empty() => Err("the SRV targets have no address".into()),
        Lookup::Found(addrs) => Ok(addrs),
        Lookup::NoRecord => Err("no _sipfederationtls._tcp record and no static route".into()),
        Lookup::Failed(why) => Err(format!("_sipfederationtls._tcp lookup failed ({why})")),
    }
}

/// The connection to foreign `domain`: found, connected, TLS, then carried.
async fn outbound<N: Net + Clone + 'static>(
    net: N,
    s: Rc<SipFedSettings>,
    id: ConnId,
    domain: String,
    rx: mpsc::Receiver<Message>,
    etx: mpsc::Sender<Event>,
) {
    let note = |why: &str| {
        net.transcript().note(net.now(), &s.host, &format!("SIP federation to {domain}: {why}"))
    };
    let targets = match route(&net, &s, &domain).await {
        Ok(t) => t,
        Err(why) => {
            note(&why);
            return closed(&etx, id, Some(502)).await;
        }
    };
    let mut code = 503;
    for (a, name) in targets {
        let tcp = match uclab_net::time::timeout(CONNECT_TIMEOUT, net.connect(a)).await {
            Ok(Ok(t)) => t,
            Ok(Err(_)) => continue,
            Err(_) => {
                code = 504;
                continue;
            }
        };
        let ends = (tcp.local_addr(), tcp.peer_addr());
        let Ok(cfg) = net.tls().client_config_with_cert(&s.names) else { break };
        match uclab_net::time::timeout(SETUP_DEADLINE, net.tls().connect(cfg, &name, Box::new(tcp)))
            .await
        {
            Ok(Ok(t)) => {
                let chain = t
                    .get_ref()
                    .get_ref()
                    .1
                    .peer_certificates()
                    .map(<[_]>::to_vec)
                    .unwrap_or_default();
                carry(&net, Box::new(t), ends, id, chain, rx, &etx).await;
                return closed(&etx, id, None).await;
            }
            _ => {
                note(&format!("TLS with {name} failed"));
                code = 503;
            }
        }
    }
    if code == 504 {
        note("no target answered");
    } else {
        note("no target accepted");
    }
    closed(&etx, id, Some(code)).await;
}

/// Carries one connection's messages both ways until it ends.
async fn carry<N: Net>(
    net: &N,
    mut io: Box<dyn AsyncIo>,
    (local, peer): (SocketAddr, SocketAddr),
    id: ConnId,
    chain: Vec<Certificate<'static>>,
    mut rx: mpsc::Receiver<Message>,
    etx: &mpsc::Sender<Event>,
) {
    let mut framer = StreamFramer::new();
    let log = |line: &str| net.transcript().message(net.now(), local, peer, "tcp", line);
    loop {
        tokio::select! {
            biased;
            r = uclab_net::scratch::read_vec(&mut io, 16 * 1024) => {
                let bytes = match r {
                    Ok(b) if !b.is_empty() => b,
                    _ => return,
                };
                framer.feed(&bytes);
                loop {
                    match framer.next_frame() {
                        Ok(Some(Frame::Message(bytes))) => match sip::parse(&bytes) {
                            Ok(m) => {
                                let from = m.name_addr("From").and_then(|n| addr(&n.uri));
                                let certified = from
                                    .map(|f| domain_of(&f).to_owned())
                                    .filter(|d| peer_cert_has_name(Some(&chain), d));
                                if etx.send(Event::Message(id, m, certified)).await.is_err() {
                                    return;
                                }
                            }
                            Err(e) => {
                                // A request we can read enough of gets its error answer
                                // (RFC 3261 §21.4.1); anything else is dropped.
                                if let Some(p) = e.partial.filter(|p| p.code().is_none() && p.method() != Some("ACK")) {
                                    let code = e.rejection.status;
                                    let r = p.response(code, sip::reason(code), None);
                                    log(&summary(&r));
                                    if io.write_all(&r.to_bytes()).await.is_err() {
                                        return;
                                    }
                                } else {
                                    log(&format!("SIP federation: unreadable message dropped ({})", e.rejection));
                                }
                            }
                        },
                        Ok(Some(Frame::Ping)) => {
                            if io.write_all(b"\r\n").await.is_err() {
                                return;
                            }
                        }
                        Ok(Some(Frame::Stun(_))) => {}
                        Ok(None) => break,
                        Err(e) => {
                            log(&format!("SIP framing lost: {e}; closed"));
                            let _ = io.shutdown().await;
                            return;
                        }
                    }
                }
            }
            m = rx.recv() => {
                let Some(m) = m else {
                    let _ = io.shutdown().await;
                    return;
                };
                log(&summary(&m));
                let w = uclab_net::time::timeout(WRITE_DEADLINE, io.write_all(&m.to_bytes())).await;
                if !matches!(w, Ok(Ok(()))) {
                    log("SIP federation: the peer reads nothing; closed");
                    return;
                }
            }
            () = uclab_net::time::sleep(IDLE) => {
                log("SIP federation connection idle for 600 s; closed");
                let _ = io.shutdown().await;
                return;
            }
        }
    }
}

/// A transcript line: the SIP line, with the state a NOTIFY carries and who a MESSAGE is
/// from (never its text).
pub fn summary(m: &Message) -> String {
    let mut s = sip::transcript_line(m);
    match m.method() {
        Some("NOTIFY") if m.code().is_none() => {
            let st = m.get("Subscription-State").unwrap_or("").split(';').next().unwrap_or("");
            s.push_str(&format!(" {st}"));
            if let Ok(state) = FederatedState::from_pidf(&m.body) {
                s.push_str(&format!(" {}", state.as_str()));
            }
        }
        Some("MESSAGE" | "SUBSCRIBE") if m.code().is_none() => {
            if let Some(f) = m.name_addr("From").and_then(|n| addr(&n.uri)) {
                s.push_str(&format!(" from {f}"));
            }
        }
        _ => {}
    }
    if let Some(w) = m.get("Warning") {
        s.push_str(&format!(" [{w}]"));
    }
    s
}
