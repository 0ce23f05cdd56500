//! Expressway-C's end of the traversal zones (SPEC MRA1, PORTS 7001; 7400, issue 17).
//!
//! Per E node and zone kind (HTTP on 7001, XMPP on 7400) one task keeps a TLS connection up: C presents a certificate
//! for its FQDN and checks E's against E's FQDN, and the zone is up once E answers a first
//! ping (E has accepted C's certificate). Then C pings every [`KEEPALIVE`] and takes the zone
//! for dead after [`DEAD_AFTER`] without a byte from E (a partition); a zone that fails or
//! drops is opened again after 1, 2, 4 … s, at most [`BACKOFF_MAX`], the backoff starting
//! over after a zone that came up. C never listens for E: everything rides on the connection
//! C opened (the firewall drops DMZ → inside). On either zone E's `REQ` is answered by
//! [`handle`] and its `OPEN` served by `inside::channel` until either end closes it; a zone
//! that ends ends its channels.
//!
//! The XMPP zone's first coming up is not written to the transcript (every run of the
//! default topology would gain the line); its failures, and its coming back after one, are.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use uclab_net::Net;

use super::allow::AllowList;
use super::c::{CConfig, CState, Ctx, EdgePeer};
use super::handle::handle;
use super::inside;
use super::tokens::{MAX_TOKENS, Tokens};
use super::traversal::{Frame, encode_response, parse_request};
use super::{
    CHANNEL_QUEUE, ChanEvent, DEAD_AFTER, KEEPALIVE, MAX_CHANNELS, MAX_PENDING, ZoneEnd, ZoneKind,
    next_frame, writer,
};
use crate::http::Response;

/// First wait before opening a zone again.
pub const BACKOFF_START: Duration = Duration::from_secs(1);
/// Longest wait between attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Time to connect and finish the TLS handshake (a `drop` rule makes a connect hang).
const CONNECT_DEADLINE: Duration = Duration::from_secs(10);

/// Runs Expressway-C until the node stops: one zone per E node.
pub async fn serve<N: Net + Clone + 'static>(net: N, cfg: CConfig) -> io::Result<()> {
    let state = CState {
        tokens: Tokens::new(MAX_TOKENS),
        allow: AllowList::new(cfg.allow.clone()),
        media: Default::default(),
    };
    let ctx = Rc::new(Ctx { net, cfg, state: RefCell::new(state), upstream: Default::default() });
    let mut tasks = Vec::new();
    for e in ctx.cfg.edges.clone() {
        for kind in [ZoneKind::Http, ZoneKind::Xmpp] {
            tasks.push(tokio::task::spawn_local(zone_loop(ctx.clone(), e.clone(), kind)));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    // No E node: C idles (a lab without MRA).
    std::future::pending::<()>().await;
    Ok(())
}

/// Keeps the zone of `kind` to `edge` up, with backoff.
async fn zone_loop<N: Net + Clone + 'static>(ctx: Rc<Ctx<N>>, edge: EdgePeer, kind: ZoneKind) {
    let net = &ctx.net;
    let to = edge.zone_addr(kind);
    let mut backoff = BACKOFF_START;
    // Whether "zone up" is written (see the module doc).
    let mut say_up = kind == ZoneKind::Http;
    loop {
        let no_port = SocketAddr::new(net.local_ip(), 0);
        match uclab_net::time::timeout(CONNECT_DEADLINE, open(&ctx, &edge.fqdn, to)).await {
            Ok(Ok((stream, local, buf))) => {
                let line = format!(
                    "TRAVERSAL zone up to {} (client certificate {})",
                    edge.fqdn, ctx.cfg.host
                );
                if say_up {
                    net.transcript().message(net.now(), local, to, "tcp", &line);
                }
                backoff = BACKOFF_START;
                let why = run_zone(ctx.clone(), &edge, (local, to), stream, buf).await;
                let line =
                    format!("TRAVERSAL zone down ({why}); reconnect in {}s", backoff.as_secs());
                net.transcript().message(net.now(), local, to, "tcp", &line);
            }
            Ok(Err(e)) => {
                let e = if e.kind() == io::ErrorKind::Other {
                    e.to_string()
                } else {
                    e.kind().to_string()
                };
                let line =
                    format!("TRAVERSAL connect failed ({e}); retry in {}s", backoff.as_secs());
                net.transcript().message(net.now(), no_port, to, "tcp", &line);
            }
            Err(_) => {
                let line = format!(
                    "TRAVERSAL connect failed (no answer in {}s); retry in {}s",
                    CONNECT_DEADLINE.as_secs(),
                    backoff.as_secs()
                );
                net.transcript().message(net.now(), no_port, to, "tcp", &line);
            }
        }
        say_up = true;
        uclab_net::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

type ZoneStream = Box<dyn uclab_net::AsyncIo>;

/// Connects, shakes hands and waits for E's answer to a first ping: a zone is up once E has
/// accepted C's certificate. Returns the stream, C's address and bytes already read.
async fn open<N: Net>(
    ctx: &Ctx<N>,
    fqdn: &str,
    to: SocketAddr,
) -> io::Result<(ZoneStream, SocketAddr, Vec<u8>)> {
    let net = &ctx.net;
    let tcp = net.connect(to).await?;
    let local = tcp.local_addr();
    let cfg = net
        .tls()
        .client_config_with_cert(std::slice::from_ref(&ctx.cfg.host))
        .map_err(io::Error::other)?;
    let mut s: ZoneStream = Box::new(net.tls().connect(cfg, fqdn, tcp).await?);
    s.write_all(&Frame::Ping(0).encode()).await?;
    s.flush().await?;
    let mut buf = Vec::new();
    match next_frame(&mut s, &mut buf, CONNECT_DEADLINE).await {
        Ok(Frame::Pong(0)) => Ok((s, local, buf)),
        Ok(_) => Err(io::Error::other("unexpected first frame")),
        Err(e) => Err(io::Error::other(e.to_string())),
    }
}

/// Serves one zone connection until it ends; says why.
async fn run_zone<N: Net + Clone + 'static>(
    ctx: Rc<Ctx<N>>,
    edge: &EdgePeer,
    (local, to): (SocketAddr, SocketAddr),
    stream: ZoneStream,
    mut buf: Vec<u8>,
) -> ZoneEnd {
    let (mut rd, wr) = tokio::io::split(stream);
    let (tx, rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let w = tokio::task::spawn_local(writer(wr, rx));
    let ping_tx = tx.clone();
    let pinger = tokio::task::spawn_local(async move {
        let mut n = 0u64;
        loop {
            uclab_net::time::sleep(KEEPALIVE).await;
            n += 1;
            if ping_tx.send(Frame::Ping(n).encode()).is_err() {
                return;
            }
        }
    });
    let mut handlers = tokio::task::JoinSet::new();
    // Channels: their events go to their tasks, which end with the zone.
    let mut channels: BTreeMap<u64, mpsc::Sender<ChanEvent>> = BTreeMap::new();
    let mut streams = tokio::task::JoinSet::new();
    let end = loop {
        let frame = match next_frame(&mut rd, &mut buf, DEAD_AFTER).await {
            Ok(f) => f,
            Err(end) => break end,
        };
        match frame {
            Frame::Pong(_) => {}
            Frame::Req { id, msg } => {
                while handlers.try_join_next().is_some() {}
                let reply =
                    |resp: &Response, note: &str| resp_frame(&ctx.net, (local, to), id, resp, note);
                let req = match parse_request(&msg) {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.send(reply(&Response::text(400, "Bad Request"), &e.to_string()));
                        continue;
                    }
                };
                if handlers.len() >= MAX_PENDING {
                    let _ = tx.send(reply(&Response::text(503, "Service Unavailable"), "C busy"));
                    continue;
                }
                let (ctx, tx, edge) = (ctx.clone(), tx.clone(), edge.clone());
                handlers.spawn_local(async move {
                    let a = handle(&ctx, &edge.fqdn, req).await;
                    let _ = tx.send(resp_frame(&ctx.net, (local, to), id, &a.resp, &a.note));
                });
            }
            Frame::Open { ch, header } => {
                while streams.try_join_next().is_some() {}
                channels.retain(|_, c| !c.is_closed());
                if channels.len() >= MAX_CHANNELS || channels.contains_key(&ch) {
                    let _ = tx.send(inside::close_frame(&ctx.net, (local, to), ch, "C busy"));
                    continue;
                }
                let (ctx, tx) = (ctx.clone(), tx.clone());
                let (etx, erx) = mpsc::channel(CHANNEL_QUEUE);
                channels.insert(ch, etx);
                streams.spawn_local(async move {
                    inside::channel(&ctx, (local, to), ch, &header, erx, &tx).await;
                });
            }
            Frame::Data { ch, bytes } => {
                let Some(c) = channels.get(&ch) else { continue };
                if c.try_send(ChanEvent::Data(bytes)).is_err() {
                    // Its task ended, or is too far behind (the node does not read): over.
                    if channels.remove(&ch).is_some_and(|c| !c.is_closed()) {
                        let why = "node does not read";
                        let _ = tx.send(inside::close_frame(&ctx.net, (local, to), ch, why));
                    }
                }
            }
            // E closed it: its task sees the queue end and closes the inside.
            Frame::Close { ch, .. } => {
                channels.remove(&ch);
            }
            // E's answer about a media relay, for the channel's task.
            Frame::Media { ch, text } => {
                if let Some(c) = channels.get(&ch) {
                    let _ = c.try_send(ChanEvent::Media(text));
                }
            }
            Frame::Resp { .. } | Frame::Ping(_) => break ZoneEnd::Unexpected,
        }
    };
    pinger.abort();
    handlers.abort_all();
    // Every channel ends with the zone (their inside connections are dropped).
    streams.abort_all();
    drop(tx);
    w.abort();
    end
}

/// C's answer `id` as a `RESP` frame, written to the transcript as it goes.
fn resp_frame<N: Net>(
    net: &N,
    (local, to): (SocketAddr, SocketAddr),
    id: u64,
    resp: &Response,
    note: &str,
) -> Vec<u8> {
    let line = format!(
        "TRAVERSAL RESP {id} {} ({note}; {} bytes)",
        status_text(resp.status),
        resp.body.len()
    );
    net.transcript().message(net.now(), local, to, "tcp", &line);
    Frame::Resp { id, msg: encode_response(resp) }.encode()
}

/// `200 OK`, `403 Forbidden`, …
pub fn status_text(status: u16) -> String {
    let reason =
        hyper::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
    format!("{status} {reason}").trim_end().to_owned()
}
