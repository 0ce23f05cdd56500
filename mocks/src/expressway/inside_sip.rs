//! What Expressway-C does with a `sip <client>` channel (issue 17, SPEC MRA1; WIRE.md
//! "Expressway MRA"): the client's SIP is proxied to its CUCM and CUCM's back.
//!
//! The first request names the node in its Request-URI; C carries it only to a CUCM node it
//! discovered through `_cisco-uds` (others get 403, as its HTTP allow list refuses them),
//! resolving the name on the internal DNS server and connecting over TCP to SIP 5060 within
//! [`C_DEADLINE`]. Every message is rewritten as a proxy does ([`sip_rewrite`]: C's Via with the
//! ingress zone, the Contact through C with `orig-hostport`), so CUCM sees the registration and
//! the dialogs from C and sends everything back on that connection (its flow). C answers the
//! client's STUN keepalive itself with the address E saw. A node that cannot be reached gets the
//! request a 503 and ends the channel; the node closing the connection ends it too, so E
//! closes the client's connection and the client fails over at once.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use uclab_net::Net;
use uclab_proto::sip::frame::{Frame as SipFrame, StreamFramer};
use uclab_proto::sip::{self, Message, Start};
use uclab_proto::stun;

use super::c::Ctx;
use super::c_media::CallMedia;
use super::handle::C_DEADLINE;
use super::sip_rewrite::{self, Hop, RewriteError};
use super::traversal::Frame;
use super::{ChanEvent, DEAD_AFTER};
use crate::resolve::{self, Lookup};

/// CUCM's SIP port (TCP).
pub const CUCM_SIP: u16 = 5060;

type Stream = Box<dyn uclab_net::AsyncIo>;

/// The connection to CUCM a channel's messages go on.
struct Inside {
    io: Stream,
    hop: Hop,
    node: String,
    local: SocketAddr,
    peer: SocketAddr,
}

/// The host of a SIP URI (`sip:1001@cucm1.example.com:5060;transport=tcp` → `cucm1…`; an
/// IPv6 reference keeps its brackets).
fn uri_host(uri: &str) -> Option<&str> {
    let rest = uri.split_once(':')?.1;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let end = if rest.starts_with('[') {
        rest.find(']').map_or(rest.len(), |i| i + 1)
    } else {
        rest.find([';', '?', ':']).unwrap_or(rest.len())
    };
    Some(&rest[..end]).filter(|h| !h.is_empty())
}

/// A response of C's own to `req` (nothing for an ACK).
fn answer(req: &Message, code: u16, why: &str) -> Option<Vec<u8>> {
    sip_rewrite::own_answer(req, code, why, "expc").map(|a| a.to_bytes())
}

/// The channel's life; `Some(reason)` when C is the one to close it.
pub(crate) async fn serve<N: Net + Clone + 'static>(
    ctx: &Ctx<N>,
    ends: (SocketAddr, SocketAddr),
    ch: u64,
    client: &str,
    rx: &mut mpsc::Receiver<ChanEvent>,
    tx: &mpsc::UnboundedSender<Vec<u8>>,
) -> Option<String> {
    let Ok(client) = client.parse::<SocketAddr>() else {
        return Some("not a client address".into());
    };
    let mut inside: Option<Inside> = None;
    let mut media = CallMedia::new(ch, ends, tx.clone());
    let end = relay(ctx, (ends, ch, client), rx, tx, &mut media, &mut inside).await;
    media.close_all(ctx);
    if let Some(mut i) = inside.take() {
        let _ = uclab_net::time::timeout(DEAD_AFTER, i.io.shutdown()).await;
    }
    end
}

/// The channel's messages both ways until it ends; `Some(reason)` when C ends it.
async fn relay<N: Net + Clone + 'static>(
    ctx: &Ctx<N>,
    ((local, to), ch, client): ((SocketAddr, SocketAddr), u64, SocketAddr),
    rx: &mut mpsc::Receiver<ChanEvent>,
    tx: &mpsc::UnboundedSender<Vec<u8>>,
    media: &mut CallMedia,
    inside: &mut Option<Inside>,
) -> Option<String> {
    let net = &ctx.net;
    let out = |bytes: Vec<u8>| tx.send(Frame::Data { ch, bytes }.encode()).is_ok();
    let (mut from_e, mut from_cucm) = (StreamFramer::new(), StreamFramer::new());
    loop {
        // Biased (a replay must not depend on tokio's pick): CUCM first.
        tokio::select! {
            biased;
            r = read(inside) => {
                let Some(i) = inside.as_mut() else { continue };
                let bytes = match r {
                    Ok(b) if b.is_empty() => return Some(format!("{} closed the connection", i.node)),
                    Ok(b) => b,
                    Err(e) => return Some(format!("{}: {}", i.node, e.kind())),
                };
                from_cucm.feed(&bytes);
                loop {
                    match from_cucm.next_frame() {
                        Ok(Some(SipFrame::Message(b))) => {
                            let Some(mut m) = sip::read(&b) else { continue };
                            let done = if matches!(m.start, Start::Request { .. }) {
                                sip_rewrite::outward_request(&mut m, &i.hop)
                            } else {
                                sip_rewrite::outward_response(&mut m, &i.hop)
                            };
                            if done.is_err() {
                                continue;
                            }
                            media.outward(ctx, &mut m);
                            if !out(m.to_bytes()) {
                                return None; // the zone is gone
                            }
                        }
                        Ok(Some(SipFrame::Ping)) => {
                            let _ = i.io.write_all(b"\r\n").await;
                        }
                        Ok(Some(SipFrame::Stun(_))) => {}
                        Ok(None) => break,
                        Err(e) => return Some(format!("{}: framing lost: {e}", i.node)),
                    }
                }
            }
            ev = rx.recv() => {
                let b = match ev {
                    Some(ChanEvent::Data(b)) => b,
                    Some(ChanEvent::Media(text)) => {
                        media.on_e(ctx, &text);
                        continue;
                    }
                    // E closed the channel (the client left, or broke the stream).
                    Some(ChanEvent::Close(_)) | None => return None,
                };
                from_e.feed(&b);
                loop {
                    let m = match from_e.next_frame() {
                        Ok(Some(SipFrame::Message(m))) => m,
                        Ok(Some(SipFrame::Stun(s))) => {
                            // Jabber 14's keepalive: answered here, the address E saw.
                            if let Ok(Some((req, _))) = stun::decode(&s)
                                && req.kind == stun::BINDING_REQUEST
                                && !out(req.success(client).encode())
                            {
                                return None;
                            }
                            continue;
                        }
                        Ok(Some(SipFrame::Ping)) => continue,
                        Ok(None) => break,
                        Err(e) => return Some(format!("framing lost: {e}")),
                    };
                    let Some(mut m) = sip::read(&m) else { continue };
                    let request = matches!(m.start, Start::Request { .. });
                    if inside.is_none() {
                        if !request {
                            continue; // an answer to nothing
                        }
                        match reach(ctx, &m).await {
                            Ok(i) => {
                                let line = format!("TRAVERSAL OPEN {ch} sip {client} -> {}", i.node);
                                net.transcript().message(net.now(), local, to, "tcp", &line);
                                *inside = Some(i);
                            }
                            Err((code, why)) => {
                                if let Some(a) = answer(&m, code, &why) {
                                    let _ = out(a);
                                }
                                return Some(why);
                            }
                        }
                    }
                    let Some(i) = inside.as_mut() else { continue };
                    let rewritten = if request {
                        sip_rewrite::inward_request(&mut m, &i.hop, &net.local_ip().to_string())
                    } else {
                        sip_rewrite::inward_response(&mut m, &i.hop)
                    };
                    match rewritten {
                        Ok(()) => {
                            media.inward(ctx, &mut m);
                            let line = sip::transcript_line(&m);
                            net.transcript().message(net.now(), i.local, i.peer, "tcp", &line);
                            let bytes = m.to_bytes();
                            let w = uclab_net::time::timeout(DEAD_AFTER, i.io.write_all(&bytes));
                            if !matches!(w.await, Ok(Ok(()))) {
                                return Some(format!("{} does not read", i.node));
                            }
                        }
                        Err(RewriteError::TooManyHops) => {
                            if let Some(a) = answer(&m, 483, "Max-Forwards") {
                                let _ = out(a);
                            }
                        }
                        Err(_) => {}
                    }
                }
            }
        }
    }
}

/// The next read from CUCM; never, without a connection.
async fn read(inside: &mut Option<Inside>) -> io::Result<Vec<u8>> {
    match inside {
        // Into the thread's one read buffer, not one per connection (issue 19).
        Some(i) => uclab_net::scratch::read_vec(&mut i.io, 16 * 1024).await,
        None => std::future::pending().await,
    }
}

/// The CUCM node `first`'s Request-URI names, connected: only one C discovered (403), by name
/// on the internal DNS server, within [`C_DEADLINE`] (503).
async fn reach<N: Net>(ctx: &Ctx<N>, first: &Message) -> Result<Inside, (u16, String)> {
    let net = &ctx.net;
    let Start::Request { uri, .. } = &first.start else {
        return Err((400, "not a request".into()));
    };
    let host = uri_host(uri).unwrap_or_default().to_ascii_lowercase();
    if !ctx.state.borrow().allow.knows_cucm() {
        // Nothing learnt yet (C restarted since the last get_edge_config): look inside, once
        // (an unknown host named by a client does not send C to DNS each time).
        for d in ctx.cfg.domains.clone() {
            super::handle::learn(ctx, &d).await;
        }
    }
    if !ctx.state.borrow().allow.is_cucm(&host) {
        return Err((403, format!("{host} is not a CUCM node C knows")));
    }
    let connect = async {
        let ip: IpAddr = match host.parse() {
            Ok(ip) => ip,
            Err(_) => match resolve::a(net, ctx.cfg.dns, &host).await {
                Lookup::Found(ip) => ip.into(),
                Lookup::NoRecord => return Err(format!("{host}: no address")),
                Lookup::Failed(e) => return Err(format!("{host}: DNS: {e}")),
            },
        };
        let peer = SocketAddr::new(ip, CUCM_SIP);
        let mut tcp = net.connect(peer).await.map_err(|e| format!("{host}: {}", e.kind()))?;
        tcp.set_dscp(uclab_proto::dscp::SIGNALLING);
        let local = tcp.local_addr();
        let hop = Hop { sent_by: local.to_string() };
        let io: Stream = Box::new(tcp);
        Ok(Inside { io, hop, node: host.clone(), local, peer })
    };
    match uclab_net::time::timeout(C_DEADLINE, connect).await {
        Ok(Ok(i)) => Ok(i),
        Ok(Err(why)) => Err((503, why)),
        Err(_) => Err((503, format!("{host}: no answer within {}s", C_DEADLINE.as_secs()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_is_the_request_uris_host() {
        assert_eq!(uri_host("sip:cucm1.example.com"), Some("cucm1.example.com"));
        assert_eq!(
            uri_host("sip:1001@cucm1.example.com:5060;transport=tcp"),
            Some("cucm1.example.com")
        );
        assert_eq!(uri_host("sip:10.1.0.11"), Some("10.1.0.11"));
        assert_eq!(uri_host("sip:@"), None);
        assert_eq!(uri_host("sip:[2001:db8::10]:5060"), Some("[2001:db8::10]"));
        assert_eq!(uri_host("garbage"), None);
    }
}
