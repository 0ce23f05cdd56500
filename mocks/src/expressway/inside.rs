//! What Expressway-C does with a channel E opens (issue 17, SPEC MRA1): `xmpp <user>@<domain>`
//! is carried to the user's current home IM&P node (C is a router peer of the cluster,
//! [`XcpRoute`](super::c::XcpRoute); docs/decisions.md).
//!
//! C resolves the node's FQDN with its own stub resolver on the internal DNS server, connects
//! to its XMPP port, opens a stream to the domain, does STARTTLS checking the node's
//! certificate against the presence domain as a client does, restarts the stream and reads the
//! SASL features, all within [`C_DEADLINE`] (under E's deadline for the inside's answer).
//! Then it writes what E sent (the client's `<auth>` first) and relays bytes both ways until
//! either end closes. Whatever ends the channel from the inside (unreachable node, TLS refused,
//! the node's stream closed or reset) is a `CLOSE` to E with the reason.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use uclab_net::Net;
use uclab_proto::xmpp::{self, Element, Frame as XFrame, Framer};

use super::c::Ctx;
use super::handle::C_DEADLINE;
use super::traversal::Frame;
use super::{ChanEvent, DEAD_AFTER};
use crate::resolve::{self, Lookup};

const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";

type Stream = Box<dyn uclab_net::AsyncIo>;

/// A `CLOSE` frame for channel `ch`, written to the transcript as it goes.
pub(crate) fn close_frame<N: Net>(
    net: &N,
    (local, to): (SocketAddr, SocketAddr),
    ch: u64,
    reason: &str,
) -> Vec<u8> {
    let line = format!("TRAVERSAL CLOSE {ch} ({reason})");
    net.transcript().message(net.now(), local, to, "tcp", &line);
    let reason: String = reason.chars().take(super::traversal::MAX_REASON / 4).collect();
    Frame::Close { ch, reason }.encode()
}

/// Serves channel `ch` with `header` until it ends: E's events come in on `rx`, frames go
/// out on the zone's `tx`.
pub(crate) async fn channel<N: Net + Clone + 'static>(
    ctx: &Ctx<N>,
    ends: (SocketAddr, SocketAddr),
    ch: u64,
    header: &str,
    mut rx: mpsc::Receiver<ChanEvent>,
    tx: &mpsc::UnboundedSender<Vec<u8>>,
) {
    if let Some(reason) = serve(ctx, ends, ch, header, &mut rx, tx).await {
        let _ = tx.send(close_frame(&ctx.net, ends, ch, &reason));
    }
}

/// The channel's life; `Some(reason)` when C is the one to close it.
async fn serve<N: Net + Clone + 'static>(
    ctx: &Ctx<N>,
    (local, to): (SocketAddr, SocketAddr),
    ch: u64,
    header: &str,
    rx: &mut mpsc::Receiver<ChanEvent>,
    tx: &mpsc::UnboundedSender<Vec<u8>>,
) -> Option<String> {
    let net = &ctx.net;
    // `xmpp <user>@<domain>` or `sip <client address>`.
    let jid = match header.split_once(' ') {
        Some(("xmpp", jid)) => jid,
        Some(("sip", client)) => {
            return super::inside_sip::serve(ctx, (local, to), ch, client, rx, tx).await;
        }
        _ => return Some("not a stream C carries".into()),
    };
    let Some((user, _)) = jid.split_once('@').filter(|(_, d)| ctx.serves(d)) else {
        return Some("domain not served".into());
    };
    let Some(xcp) = ctx.cfg.xcp.as_ref() else {
        return Some("no IM&P cluster".into());
    };
    let Some((node, port)) = xcp.home(user) else {
        return Some("no IM&P node".into());
    };
    let line = format!("TRAVERSAL OPEN {ch} {header} -> {node}");
    net.transcript().message(net.now(), local, to, "tcp", &line);
    let mut io =
        match uclab_net::time::timeout(C_DEADLINE, connect(ctx, &node, port, &xcp.domain)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Some(format!("{node}: {}", why(&e))),
            Err(_) => {
                return Some(format!("{node}: no answer within {}s", C_DEADLINE.as_secs()));
            }
        };
    loop {
        // Biased (a replay must not depend on tokio's pick): the node first.
        tokio::select! {
            biased;
            r = uclab_net::scratch::read_vec(&mut io, 16 * 1024) => match r {
                Ok(b) if b.is_empty() => return Some(format!("{node} closed the stream")),
                Ok(bytes) => {
                    let data = Frame::Data { ch, bytes };
                    if tx.send(data.encode()).is_err() {
                        return None; // the zone is gone
                    }
                }
                Err(e) => return Some(format!("{node}: {}", why(&e))),
            },
            ev = rx.recv() => match ev {
                Some(ChanEvent::Data(b)) => {
                    let w = uclab_net::time::timeout(DEAD_AFTER, io.write_all(&b)).await;
                    if !matches!(w, Ok(Ok(()))) {
                        return Some(format!("{node} does not read"));
                    }
                }
                // E closed the channel (the client left, or broke the stream).
                Some(ChanEvent::Media(_)) => {}
                Some(ChanEvent::Close(_)) | None => {
                    let _ = uclab_net::time::timeout(DEAD_AFTER, io.shutdown()).await;
                    return None;
                }
            },
        }
    }
}

/// An error's words: the kind for I/O, the message for what C found wrong.
fn why(e: &io::Error) -> String {
    if e.kind() == io::ErrorKind::Other { e.to_string() } else { e.kind().to_string() }
}

/// The node's stream, frame by frame.
struct Reader {
    framer: Framer,
    frames: VecDeque<XFrame>,
}

impl Reader {
    async fn next(&mut self, io: &mut Stream) -> io::Result<XFrame> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(f) = self.frames.pop_front() {
                return Ok(f);
            }
            let n = io.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::Error::other("the node closed the stream"));
            }
            let got = self.framer.feed(&chunk[..n]).map_err(io::Error::other)?;
            self.frames.extend(got);
        }
    }

    /// The node's stream header and features.
    async fn features(&mut self, io: &mut Stream) -> io::Result<Element> {
        match self.next(io).await? {
            XFrame::StreamOpen(_) => {}
            _ => return Err(io::Error::other("no stream header from the node")),
        }
        match self.next(io).await? {
            XFrame::Stanza(f) if f.name == "stream:features" => Ok(f),
            XFrame::Stanza(e) if e.name == "stream:error" => {
                let c = e.elements().next().map_or("?", |c| c.name.as_str()).to_owned();
                Err(io::Error::other(format!("stream error {c}")))
            }
            _ => Err(io::Error::other("no stream features from the node")),
        }
    }
}

/// The inside stream up to the SASL features: resolve, connect, STARTTLS (the node's
/// certificate checked against `domain`), restart.
async fn connect<N: Net>(ctx: &Ctx<N>, node: &str, port: u16, domain: &str) -> io::Result<Stream> {
    let net = &ctx.net;
    let ip = match resolve::a(net, ctx.cfg.dns, node).await {
        Lookup::Found(ip) => ip,
        Lookup::NoRecord => return Err(io::Error::other("no address")),
        Lookup::Failed(e) => return Err(io::Error::other(format!("DNS: {e}"))),
    };
    let mut tcp = net.connect(SocketAddr::new(ip.into(), port)).await?;
    tcp.set_dscp(uclab_proto::dscp::IMP); // SPEC MEDIA2: IM&P traffic is CS3, as the client's
    let mut io: Stream = Box::new(tcp);
    let header = xmpp::stream_header(("to", domain), None);
    let mut r = Reader { framer: Framer::new(), frames: VecDeque::new() };
    io.write_all(header.as_bytes()).await?;
    let f = r.features(&mut io).await?;
    if f.find("starttls").is_none() {
        return Err(io::Error::other("the node offers no STARTTLS"));
    }
    let starttls = Element::new("starttls").attr("xmlns", NS_TLS);
    io.write_all(starttls.to_xml().as_bytes()).await?;
    match r.next(&mut io).await? {
        XFrame::Stanza(p) if p.name == "proceed" => {}
        _ => return Err(io::Error::other("STARTTLS refused")),
    }
    let cfg = net.tls().client_config(&[]).map_err(io::Error::other)?;
    let tls = net
        .tls()
        .connect(cfg, domain, io)
        .await
        .map_err(|e| io::Error::other(format!("TLS: {e}")))?;
    let mut io: Stream = Box::new(tls);
    r = Reader { framer: Framer::new(), frames: VecDeque::new() };
    io.write_all(header.as_bytes()).await?;
    let f = r.features(&mut io).await?;
    if f.find("mechanisms").is_none() {
        return Err(io::Error::other("the node offers no SASL"));
    }
    Ok(io)
}
