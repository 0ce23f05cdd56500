//! Expressway-E (DMZ, SPEC MRA1): the edge on HTTPS 8443 and the traversal zone's server end
//! on 7001.
//!
//! The edge answers alone what needs no inside knowledge ([`classify`]): a path that does not
//! decode or names another domain (404), a request without credentials or `X-Auth` cookie
//! (401, realm "Cisco-Edge"). Everything else goes over the zone to C and C's answer comes
//! back; no zone gives 503 at once, a zone that dies or stays silent while the request waits
//! gives 502 after [`REQUEST_DEADLINE`]. Every answer carries `Server: CE_C ECS`.
//!
//! On 7001 E accepts only a TLS client presenting a lab certificate for its traversal peer
//! (C's FQDN); others are refused and the refusal written to the transcript. A newer zone
//! from the peer replaces an older one.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use tokio::sync::{mpsc, oneshot};
use uclab_net::Net;
use uclab_proto::edge::{EdgePath, REALM, SERVER, parse_path};

use super::traversal::{Frame, encode_request, parse_response};
use super::{DEAD_AFTER, MAX_PENDING, REQUEST_DEADLINE, ZoneEnd, next_frame, writer};
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

/// The zone as E holds it.
struct Link {
    generation: u64,
    tx: mpsc::UnboundedSender<Vec<u8>>,
    pending: BTreeMap<u64, oneshot::Sender<Response>>,
    local: SocketAddr,
    peer: SocketAddr,
}

/// E's zone and request ids.
#[derive(Default)]
struct EState {
    link: Option<Link>,
    next_id: u64,
    generation: u64,
}

type Shared = Rc<RefCell<EState>>;

/// Serves the edge and the traversal port until the node stops.
pub async fn serve<N: Net + Clone + 'static>(net: N, cfg: EConfig) -> io::Result<()> {
    let cfg = Rc::new(cfg);
    let st: Shared = Rc::default();
    let zone = tokio::task::spawn_local(traversal(net.clone(), cfg.clone(), st.clone()));
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
    r
}

/// Carries `req` to C and waits for the answer.
async fn forward<N: Net>(net: &N, st: &Shared, req: &Request, summary: &str) -> Response {
    let (id, rx) = {
        let mut s = st.borrow_mut();
        s.next_id += 1;
        let id = s.next_id;
        let Some(link) = s.link.as_mut() else {
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
    match tokio::time::timeout(REQUEST_DEADLINE, rx).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(_)) => Response::text(502, "Bad Gateway: the traversal zone went down"),
        Err(_) => {
            if let Some(l) = st.borrow_mut().link.as_mut() {
                l.pending.remove(&id);
            }
            Response::text(502, "Bad Gateway: no answer from Expressway-C")
        }
    }
}

/// The traversal port: accepts C's zone.
async fn traversal<N: Net + Clone + 'static>(
    net: N,
    cfg: Rc<EConfig>,
    st: Shared,
) -> io::Result<()> {
    let listener = net.listen(cfg.traversal_port).await?;
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
            let s = match tokio::time::timeout(SLOW_CLIENT, net.tls().accept(tls, tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return refuse(&format!("TLS: {e}")),
                Err(_) => return refuse("no TLS handshake"),
            };
            let named = s
                .get_ref()
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .is_some_and(|c| uclab_net::tls::cert_has_name(c, &cfg.traversal_peer));
            if !named {
                return refuse(&format!("client certificate is not for {}", cfg.traversal_peer));
            }
            let end = run_link(&st, Box::new(s), local, peer).await;
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

/// E's end of one zone: answers pings, hands C's answers to the waiting requests.
async fn run_link(
    st: &Shared,
    stream: Box<dyn uclab_net::AsyncIo>,
    local: SocketAddr,
    peer: SocketAddr,
) -> ZoneEnd {
    let (mut rd, wr) = tokio::io::split(stream);
    let (tx, rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let w = tokio::task::spawn_local(writer(wr, rx));
    let generation = {
        let mut s = st.borrow_mut();
        s.generation += 1;
        let generation = s.generation;
        // An older zone's waiting requests get 502 (their senders are dropped here).
        s.link = Some(Link { generation, tx: tx.clone(), pending: BTreeMap::new(), local, peer });
        generation
    };
    let mine = |s: &EState| s.link.as_ref().is_some_and(|l| l.generation == generation);
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
                    let waiting = st.borrow_mut().link.as_mut().and_then(|l| l.pending.remove(&id));
                    if let Some(w) = waiting {
                        let _ = w.send(r);
                    }
                }
                Err(e) => break ZoneEnd::Garbage(e),
            },
            Frame::Req { .. } | Frame::Pong(_) => break ZoneEnd::Unexpected,
        }
    };
    {
        let mut s = st.borrow_mut();
        if mine(&s) {
            s.link = None;
        }
    }
    drop(tx);
    w.abort();
    end
}
