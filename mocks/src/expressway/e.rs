//! Expressway-E (DMZ, SPEC MRA1): the edge on HTTPS 8443 and the traversal zones' server
//! ends on 7001 (HTTP) and 7400 (XMPP, issue 17; its client side on 5222 is [`super::e_xmpp`]).
//!
//! The edge answers alone what needs no inside knowledge ([`classify`]): a path that does not
//! decode or names another domain (404), a request without credentials or `X-Auth` cookie
//! (401, realm "Cisco-Edge"). Everything else goes over the zone to C and C's answer comes
//! back; no zone gives 503 at once, a zone that dies or stays silent while the request waits
//! gives 502 after [`REQUEST_DEADLINE`]. Every answer carries `Server: CE_C ECS`.
//!
//! On 7001 and 7400 E accepts only a TLS client presenting a lab certificate for its traversal
//! peer (C's FQDN); others are refused and the refusal written to the transcript. E holds one
//! link per zone kind: a newer zone of a kind from the peer replaces the older one. Channels
//! (`Channel`) ride on a link; when it goes, every channel on it ends.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use tokio::sync::{mpsc, oneshot};
use uclab_net::Net;
use uclab_proto::edge::{EdgePath, REALM, SERVER, parse_path};

use super::traversal::{Frame, encode_request, parse_response};
use super::{
    CHANNEL_QUEUE, ChanEvent, DEAD_AFTER, MAX_CHANNELS, MAX_PENDING, REQUEST_DEADLINE, ZoneEnd,
    ZoneKind, next_frame, writer,
};
use crate::http::{self, AsyncHandler, Request, Response, SLOW_CLIENT};
use crate::limits::{self, ConnLimit};

/// Zone connections E holds at once (C has one per E; the rest is room for refusals).
const ZONE_CONNECTIONS: usize = 16;
/// From one address.
const ZONE_PER_PEER: usize = 4;

/// Expressway-E's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EConfig {
    /// E's FQDN.
    pub host: String,
    /// Names its certificate carries (SAN; the client wants the domain in it, WIRE.md).
    pub san: Vec<String>,
    /// Enterprise domains the edge serves.
    pub domains: Vec<String>,
    /// The FQDN C's certificate must carry on the zone.
    pub traversal_peer: String,
    /// The edge's HTTPS port (8443).
    pub edge_port: u16,
    /// The traversal port (7001).
    pub traversal_port: u16,
    /// The XMPP traversal port (7400, issue 17).
    pub xmpp_traversal_port: u16,
    /// The XMPP edge port (5222).
    pub xmpp_port: u16,
    /// The SIP edge port (TLS 5061).
    pub sip_port: u16,
}

impl EConfig {
    /// E `host` for `domain`, its certificate for both, its peer C `peer`, standard ports.
    pub fn new(host: &str, domain: &str, peer: &str) -> Self {
        Self {
            host: host.to_owned(),
            san: vec![host.to_owned(), domain.to_owned()],
            domains: vec![domain.to_ascii_lowercase()],
            traversal_peer: peer.to_owned(),
            edge_port: uclab_proto::edge::EDGE_PORT,
            traversal_port: uclab_proto::edge::TRAVERSAL_PORT,
            xmpp_traversal_port: super::XMPP_TRAVERSAL_PORT,
            xmpp_port: 5222,
            sip_port: 5061,
        }
    }

    /// Where E takes zones of `kind`.
    pub fn zone_port(&self, kind: ZoneKind) -> u16 {
        match kind {
            ZoneKind::Http => self.traversal_port,
            ZoneKind::Xmpp => self.xmpp_traversal_port,
        }
    }
}

/// Whether `req` has anything that may authorise it: an `Authorization` header or an `X-Auth`
/// cookie (C decides whether they are good).
fn has_credentials(req: &Request) -> bool {
    req.header("authorization").is_some()
        || req
            .headers
            .iter()
            .any(|(k, v)| k == "cookie" && super::tokens::cookie_token(v).is_some())
}

/// What E does with an edge request on its own: `Ok` with the transcript summary of a request
/// to carry to C, or E's answer.
pub fn classify(cfg: &EConfig, req: &Request) -> Result<String, Response> {
    let serves = |d: &str| cfg.domains.iter().any(|x| x.eq_ignore_ascii_case(d));
    let (domain, what) = match parse_path(&req.path) {
        Err(e) => return Err(Response::text(404, &format!("Not Found: {e}"))),
        Ok(EdgePath::GetEdgeConfig { domain }) => {
            let what = format!("get_edge_config {domain}");
            (domain, what)
        }
        Ok(EdgePath::Proxy { target, rest }) => {
            let what =
                format!("{}://{}:{}{rest}", target.scheme.as_str(), target.host, target.port);
            (target.domain, what)
        }
    };
    if !serves(&domain) {
        return Err(Response::text(404, &format!("Not Found: domain {domain} not served")));
    }
    if !has_credentials(req) {
        return Err(Response::unauthorized(REALM));
    }
    let auth = if req.header("authorization").is_some() { " (Basic)" } else { " (X-Auth)" };
    Ok(format!("{} {what}{auth}", req.method))
}

/// A zone as E holds it.
struct Link {
    generation: u64,
    tx: mpsc::UnboundedSender<Vec<u8>>,
    pending: BTreeMap<u64, oneshot::Sender<Response>>,
    /// Open channels: their events go to the task serving the client's stream.
    channels: BTreeMap<u64, mpsc::Sender<ChanEvent>>,
    local: SocketAddr,
    peer: SocketAddr,
}

/// E's zones (one per kind), request and channel ids.
#[derive(Default)]
pub(crate) struct EState {
    links: BTreeMap<ZoneKind, Link>,
    next_id: u64,
    next_ch: u64,
    generation: u64,
}

pub(crate) type Shared = Rc<RefCell<EState>>;

/// One channel E opened over a zone (issue 17): what the client's stream task holds. Dropping
/// it closes the channel (a `CLOSE` to C if the zone is still the one it was opened on).
pub(crate) struct Channel {
    st: Shared,
    kind: ZoneKind,
    generation: u64,
    id: u64,
    /// C's events for this channel; `None` once the zone is gone.
    pub(crate) rx: mpsc::Receiver<ChanEvent>,
    closed: bool,
}

/// Why E could not open a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NoChannel {
    /// No zone of the kind to C.
    NoZone,
    /// [`MAX_CHANNELS`] open on the zone.
    Busy,
}

impl Channel {
    /// Opens a channel with `header` on the zone of `kind`, writing `TRAVERSAL OPEN` to the
    /// transcript.
    pub(crate) fn open<N: Net>(
        net: &N,
        st: &Shared,
        kind: ZoneKind,
        header: &str,
    ) -> Result<Self, NoChannel> {
        let mut s = st.borrow_mut();
        s.next_ch += 1;
        let id = s.next_ch;
        let link = s.links.get_mut(&kind).ok_or(NoChannel::NoZone)?;
        link.channels.retain(|_, c| !c.is_closed());
        if link.channels.len() >= MAX_CHANNELS {
            return Err(NoChannel::Busy);
        }
        let frame = Frame::Open { ch: id, header: header.to_owned() };
        link.tx.send(frame.encode()).map_err(|_| NoChannel::NoZone)?;
        let (tx, rx) = mpsc::channel(CHANNEL_QUEUE);
        link.channels.insert(id, tx);
        let line = format!("TRAVERSAL OPEN {id} {header}");
        net.transcript().message(net.now(), link.local, link.peer, "tcp", &line);
        let generation = link.generation;
        Ok(Self { st: st.clone(), kind, generation, id, rx, closed: false })
    }

    /// Sends `frame` on the channel's zone if it is still the one the channel was opened on;
    /// the zone's ends when it did.
    fn send(&self, frame: Frame) -> Option<(SocketAddr, SocketAddr)> {
        let s = self.st.borrow();
        let l = s.links.get(&self.kind).filter(|l| l.generation == self.generation)?;
        l.tx.send(frame.encode()).ok()?;
        Some((l.local, l.peer))
    }

    /// Carries the client's bytes to C (not written to the transcript).
    pub(crate) fn data(&self, bytes: Vec<u8>) {
        self.send(Frame::Data { ch: self.id, bytes });
    }

    /// Closes the channel, telling C why.
    pub(crate) fn close<N: Net>(mut self, net: &N, reason: &str) {
        self.closed = true;
        let line = format!("TRAVERSAL CLOSE {} ({reason})", self.id);
        let reason: String = reason.chars().take(super::traversal::MAX_REASON / 4).collect();
        if let Some((local, peer)) = self.send(Frame::Close { ch: self.id, reason }) {
            net.transcript().message(net.now(), local, peer, "tcp", &line);
        }
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        let Ok(mut s) = self.st.try_borrow_mut() else { return };
        let Some(l) = s.links.get_mut(&self.kind).filter(|l| l.generation == self.generation)
        else {
            return;
        };
        // Still open on C's side: closed now (a task that ends without saying why).
        if l.channels.remove(&self.id).is_some() && !self.closed {
            let f = Frame::Close { ch: self.id, reason: "gone".into() };
            let _ = l.tx.send(f.encode());
        }
    }
}

/// Accepts the clients of one of E's stream services (XMPP, SIP) on `port` under the stream
/// caps ([`limits::STREAM_CONNECTIONS`], [`limits::PER_PEER`] from one address), marks each
/// connection `dscp`, and runs `each` on it with the edge's TLS settings (certificate `san`).
pub(crate) async fn serve_streams<N, F, Fut>(
    net: N,
    (port, san, dscp): (u16, &[String], Option<u8>),
    each: F,
) -> io::Result<()>
where
    N: Net + Clone + 'static,
    F: Fn(N, std::sync::Arc<uclab_net::tls::ServerConfig>, uclab_net::TcpConn) -> Fut,
    Fut: Future<Output = ()> + 'static,
{
    let listener = net.listen(port).await?;
    let tls = net.tls().server_config(san).map_err(io::Error::other)?;
    let limit = ConnLimit::new(limits::STREAM_CONNECTIONS, limits::PER_PEER);
    loop {
        let mut tcp = limits::next_conn(&listener).await;
        let Some(slot) = limit.admit(tcp.peer_addr().ip()) else {
            continue; // over a cap: closed at once
        };
        if let Some(d) = dscp {
            tcp.set_dscp(d);
        }
        let task = each(net.clone(), tls.clone(), tcp);
        tokio::task::spawn_local(async move {
            let _slot = slot;
            task.await;
        });
    }
}

/// Serves the edge and the traversal port until the node stops.
pub async fn serve<N: Net + Clone + 'static>(net: N, cfg: EConfig) -> io::Result<()> {
    let cfg = Rc::new(cfg);
    let st: Shared = Rc::default();
    let zone =
        tokio::task::spawn_local(traversal(net.clone(), cfg.clone(), st.clone(), ZoneKind::Http));
    let xzone =
        tokio::task::spawn_local(traversal(net.clone(), cfg.clone(), st.clone(), ZoneKind::Xmpp));
    let xmpp = tokio::task::spawn_local(super::e_xmpp::serve(net.clone(), cfg.clone(), st.clone()));
    let sip = tokio::task::spawn_local(super::e_sip::serve(net.clone(), cfg.clone(), st.clone()));
    let (n, c) = (net.clone(), cfg.clone());
    let handler: AsyncHandler = Rc::new(move |req: Request, peer: SocketAddr| {
        let (net, cfg, st) = (n.clone(), c.clone(), st.clone());
        Box::pin(async move {
            match classify(&cfg, &req) {
                Ok(summary) => forward(&net, &st, &req, &summary).await,
                Err(resp) => {
                    if resp.status != 401 {
                        let local = SocketAddr::new(net.local_ip(), cfg.edge_port);
                        let why = String::from_utf8_lossy(&resp.body).into_owned();
                        net.transcript().message(
                            net.now(),
                            local,
                            peer,
                            "tcp",
                            &format!("EDGE refused: {why}"),
                        );
                    }
                    resp
                }
            }
        })
    });
    let r =
        http::serve_async(net, cfg.edge_port, Some(cfg.san.clone()), handler, Some(SERVER)).await;
    zone.abort();
    xzone.abort();
    xmpp.abort();
    sip.abort();
    r
}

/// Carries `req` to C and waits for the answer.
async fn forward<N: Net>(net: &N, st: &Shared, req: &Request, summary: &str) -> Response {
    let (id, rx) = {
        let mut s = st.borrow_mut();
        s.next_id += 1;
        let id = s.next_id;
        let Some(link) = s.links.get_mut(&ZoneKind::Http) else {
            return Response::text(503, "Service Unavailable: no traversal zone to Expressway-C");
        };
        if link.pending.len() >= MAX_PENDING {
            return Response::text(503, "Service Unavailable: too many requests waiting");
        }
        let (otx, orx) = oneshot::channel();
        if link.tx.send(Frame::Req { id, msg: encode_request(req) }.encode()).is_err() {
            return Response::text(503, "Service Unavailable: no traversal zone to Expressway-C");
        }
        link.pending.insert(id, otx);
        let line = format!("TRAVERSAL REQ {id} {summary}");
        net.transcript().message(net.now(), link.local, link.peer, "tcp", &line);
        (id, orx)
    };
    match uclab_net::time::timeout(REQUEST_DEADLINE, rx).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(_)) => Response::text(502, "Bad Gateway: the traversal zone went down"),
        Err(_) => {
            if let Some(l) = st.borrow_mut().links.get_mut(&ZoneKind::Http) {
                l.pending.remove(&id);
            }
            Response::text(502, "Bad Gateway: no answer from Expressway-C")
        }
    }
}

/// A traversal port (7001 or 7400 by `kind`): accepts C's zone of that kind.
async fn traversal<N: Net + Clone + 'static>(
    net: N,
    cfg: Rc<EConfig>,
    st: Shared,
    kind: ZoneKind,
) -> io::Result<()> {
    let listener = net.listen(cfg.zone_port(kind)).await?;
    let tls = net.tls().server_config_client_auth(&cfg.san).map_err(io::Error::other)?;
    let limit = ConnLimit::new(ZONE_CONNECTIONS, ZONE_PER_PEER);
    loop {
        let tcp = limits::next_conn(&listener).await;
        let Some(slot) = limit.admit(tcp.peer_addr().ip()) else { continue };
        let (net, cfg, st, tls) = (net.clone(), cfg.clone(), st.clone(), tls.clone());
        tokio::task::spawn_local(async move {
            let _slot = slot;
            let (local, peer) = (tcp.local_addr(), tcp.peer_addr());
            let refuse = |why: &str| {
                net.transcript().message(
                    net.now(),
                    peer,
                    local,
                    "tcp",
                    &format!("TRAVERSAL refused: {why}"),
                );
            };
            let s = match uclab_net::time::timeout(SLOW_CLIENT, net.tls().accept(tls, tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return refuse(&format!("TLS: {e}")),
                Err(_) => return refuse("no TLS handshake"),
            };
            let named = uclab_net::tls::peer_cert_has_name(
                s.get_ref().get_ref().1.peer_certificates(),
                &cfg.traversal_peer,
            );
            if !named {
                return refuse(&format!("client certificate is not for {}", cfg.traversal_peer));
            }
            let end = run_link(&net, &st, kind, Box::new(s), (local, peer)).await;
            net.transcript().message(
                net.now(),
                local,
                peer,
                "tcp",
                &format!("TRAVERSAL zone down ({end})"),
            );
        });
    }
}

/// E's end of one zone: answers pings, hands C's answers to the waiting requests and C's
/// channel bytes to the channels' tasks.
async fn run_link<N: Net + Clone + 'static>(
    net: &N,
    st: &Shared,
    kind: ZoneKind,
    stream: Box<dyn uclab_net::AsyncIo>,
    (local, peer): (SocketAddr, SocketAddr),
) -> ZoneEnd {
    // The zone's media relays (issue 17): they end with it.
    let relays = super::e_media::Relays::default();
    let (mut rd, wr) = tokio::io::split(stream);
    let (tx, rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let w = tokio::task::spawn_local(writer(wr, rx));
    let generation = {
        let mut s = st.borrow_mut();
        s.generation += 1;
        let generation = s.generation;
        // An older zone's waiting requests get 502 (their senders are dropped here).
        let link = Link {
            generation,
            tx: tx.clone(),
            pending: BTreeMap::new(),
            channels: BTreeMap::new(),
            local,
            peer,
        };
        // An older zone's channels end (their senders are dropped here).
        s.links.insert(kind, link);
        generation
    };
    let mine = |s: &EState| s.links.get(&kind).is_some_and(|l| l.generation == generation);
    let mut buf = Vec::new();
    let end = loop {
        let frame = match next_frame(&mut rd, &mut buf, DEAD_AFTER).await {
            Ok(f) => f,
            Err(e) => break e,
        };
        if !mine(&st.borrow()) {
            break ZoneEnd::Replaced;
        }
        match frame {
            Frame::Ping(n) => {
                let _ = tx.send(Frame::Pong(n).encode());
            }
            Frame::Resp { id, msg } => match parse_response(&msg) {
                Ok(r) => {
                    let waiting =
                        st.borrow_mut().links.get_mut(&kind).and_then(|l| l.pending.remove(&id));
                    if let Some(w) = waiting {
                        let _ = w.send(r);
                    }
                }
                Err(e) => break ZoneEnd::Garbage(e),
            },
            Frame::Data { ch, bytes } => deliver(st, kind, ch, ChanEvent::Data(bytes)),
            Frame::Close { ch, reason } => deliver(st, kind, ch, ChanEvent::Close(reason)),
            Frame::Media { ch, text } => {
                super::e_media::order(net, &relays, (ch, &text), peer.ip(), &tx);
            }
            Frame::Req { .. } | Frame::Pong(_) | Frame::Open { .. } => break ZoneEnd::Unexpected,
        }
    };
    {
        let mut s = st.borrow_mut();
        if mine(&s) {
            s.links.remove(&kind);
        }
    }
    drop(tx);
    w.abort();
    end
}

/// Hands C's event to channel `ch`'s task. A channel E has closed already takes nothing; one
/// whose task is [`CHANNEL_QUEUE`] events behind (its client does not read) is closed.
fn deliver(st: &Shared, kind: ZoneKind, ch: u64, ev: ChanEvent) {
    let mut s = st.borrow_mut();
    let Some(l) = s.links.get_mut(&kind) else { return };
    let closing = matches!(ev, ChanEvent::Close(_));
    let Some(tx) = l.channels.get(&ch) else { return };
    match tx.try_send(ev) {
        Ok(()) if !closing => {}
        Ok(()) => {
            l.channels.remove(&ch);
        }
        Err(_) => {
            // Dropping the sender tells the task the channel is over.
            l.channels.remove(&ch);
            if !closing {
                let reason = "client does not read".to_owned();
                let _ = l.tx.send(Frame::Close { ch, reason }.encode());
            }
        }
    }
}
