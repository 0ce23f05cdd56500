//! Expressway-E's SIP edge on 5061 (issue 17, SPEC MRA1; WIRE.md "Expressway MRA"): SIP over
//! TLS from outside, carried to Expressway-C on a `sip <client address>` channel of the
//! traversal zone (7001, as the product carries SIP on its traversal zone).
//!
//! E terminates the client's TLS with the edge's certificate (the client checks it against the
//! domain) and frames the stream itself (RFC 3261 §18.3), so what crosses the zone is whole
//! messages: a request that does not read as SIP gets its error response from E (RFC 4475), a
//! CRLF ping its pong, and garbage that loses the framing ends that connection only. STUN
//! keepalives (Jabber 14) go on to C, which answers them, so the client's 3 s check covers the
//! whole path. No zone: E answers a request 503 itself; the channel closed by C (CUCM gone,
//! the zone down) closes the client's connection, which is how the client notices at once.
//! Each direction's SIP is written to the transcript by the one who sends it: E writes what it
//! sends the client, C what it sends CUCM.

use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use uclab_net::Net;
use uclab_proto::sip::frame::{Frame, StreamFramer};
use uclab_proto::sip::{self, Message};

use super::e::{Channel, EConfig, Shared};
use super::sip_rewrite::own_answer;
use super::{ChanEvent, ZoneKind};
use crate::http::SLOW_CLIENT;

/// An idle connection is closed after this long (the client pings every 30 s).
pub const IDLE: Duration = Duration::from_secs(300);
/// A message begun must be whole within this long.
pub const PARTIAL: Duration = Duration::from_secs(10);
/// How long one write to the client may take (as on the XMPP edge).
pub use super::e_xmpp::WRITE_TIMEOUT;

/// Serves the SIP edge until the node stops.
pub(crate) async fn serve<N: Net + Clone + 'static>(
    net: N,
    cfg: Rc<EConfig>,
    st: Shared,
) -> io::Result<()> {
    let (port, dscp) = (cfg.sip_port, Some(uclab_proto::dscp::SIGNALLING));
    super::e::serve_streams(net, (port, &cfg.san, dscp), move |net, tls, tcp| {
        let st = st.clone();
        async move { connection(&net, &st, tls, tcp).await }
    })
    .await
}

/// The channel's next event; never, without a channel.
async fn recv(chan: &mut Option<Channel>) -> Option<ChanEvent> {
    match chan {
        Some(c) => c.rx.recv().await,
        None => std::future::pending().await,
    }
}

/// What E answers itself to a message from the client that is not carried on: the error
/// response to a request that does not read as SIP (RFC 3261 §21.4.1); nothing for an
/// unreadable response or ACK (dropped).
pub fn refusal(bytes: &[u8]) -> Result<(), Option<Message>> {
    match sip::parse(bytes) {
        Ok(_) => Ok(()),
        Err(e) => Err(e
            .partial
            .and_then(|m| own_answer(&m, e.rejection.status, &e.rejection.reason, "expe"))),
    }
}

async fn connection<N: Net>(
    net: &N,
    st: &Shared,
    tls: Arc<uclab_net::tls::ServerConfig>,
    tcp: uclab_net::TcpConn,
) {
    let (local, peer) = (tcp.local_addr(), tcp.peer_addr());
    let log = |line: &str| net.transcript().message(net.now(), local, peer, "tcp", line);
    let mut io: Box<dyn uclab_net::AsyncIo> =
        match uclab_net::time::timeout(SLOW_CLIENT, net.tls().accept(tls, Box::new(tcp))).await {
            Ok(Ok(t)) => Box::new(t),
            Ok(Err(e)) => return log(&format!("SIP-EDGE closed: TLS: {e}")),
            Err(_) => return log("SIP-EDGE closed: no TLS handshake"),
        };
    let mut chan: Option<Channel> = None;
    let (mut from_client, mut to_client) = (StreamFramer::new(), StreamFramer::new());
    let mut last = net.now();
    let mut partial_since: Option<Duration> = None;
    loop {
        let deadline = partial_since.map_or(last + IDLE, |t| t + PARTIAL);
        let wait = deadline.saturating_sub(net.now());
        // Biased (a replay must not depend on tokio's pick): the client first.
        let mut out: Vec<u8> = Vec::new();
        tokio::select! {
            biased;
            r = uclab_net::time::timeout(wait, uclab_net::scratch::read_vec(&mut io, 16 * 1024)) => {
                let bytes = match r {
                    Ok(Ok(b)) if !b.is_empty() => b,
                    Ok(_) => {
                        if let Some(c) = chan.take() {
                            c.close(net, "the client closed its connection");
                        }
                        return;
                    }
                    Err(_) => {
                        let why = if partial_since.is_some() {
                            "SIP message incomplete after 10 s"
                        } else {
                            "SIP connection idle for 300 s"
                        };
                        log(&format!("SIP-EDGE closed: {why}"));
                        if let Some(c) = chan.take() {
                            c.close(net, why);
                        }
                        return;
                    }
                };
                last = net.now();
                from_client.feed(&bytes);
                loop {
                    match from_client.next_frame() {
                        Ok(Some(Frame::Message(m))) => {
                            if let Err(answer) = refusal(&m) {
                                if let Some(a) = answer {
                                    log(&sip::transcript_line(&a));
                                    out.extend_from_slice(&a.to_bytes());
                                }
                                continue;
                            }
                            if chan.is_none() {
                                chan = open(net, st, peer);
                            }
                            match &chan {
                                Some(c) => c.data(m),
                                None => {
                                    // No way to C: a request is answered here.
                                    if let Some(a) = sip::read(&m).and_then(|r| {
                                        own_answer(&r, 503, "no traversal zone", "expe")
                                    }) {
                                        log(&sip::transcript_line(&a));
                                        out.extend_from_slice(&a.to_bytes());
                                    }
                                }
                            }
                        }
                        // RFC 5626 §3.5.1: the pong.
                        Ok(Some(Frame::Ping)) => out.extend_from_slice(b"\r\n"),
                        // The keepalive goes on to C, which answers it.
                        Ok(Some(Frame::Stun(b))) => {
                            if chan.is_none() {
                                chan = open(net, st, peer);
                            }
                            if let Some(c) = &chan {
                                c.data(b);
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            log(&format!("SIP-EDGE framing lost: {e}; closed"));
                            if let Some(c) = chan.take() {
                                c.close(net, "the client's SIP framing was lost");
                            }
                            let _ = uclab_net::time::timeout(WRITE_TIMEOUT, io.write_all(&out)).await;
                            return;
                        }
                    }
                }
                partial_since = match (from_client.partial(), partial_since) {
                    (true, None) => Some(last),
                    (true, t) => t,
                    (false, _) => None,
                };
            }
            ev = recv(&mut chan) => match ev {
                Some(ChanEvent::Data(b)) => {
                    to_client.feed(&b);
                    while let Ok(Some(f)) = to_client.next_frame() {
                        match f {
                            Frame::Message(m) => {
                                if let Some(msg) = sip::read(&m) {
                                    log(&sip::transcript_line(&msg));
                                }
                                out.extend_from_slice(&m);
                            }
                            Frame::Stun(s) => {
                                if uclab_proto::stun::decode(&s).is_ok_and(|b| {
                                    b.is_some_and(|(b, _)| b.kind == uclab_proto::stun::BINDING_SUCCESS)
                                }) {
                                    log("STUN Binding success (edge keepalive)");
                                }
                                out.extend_from_slice(&s);
                            }
                            Frame::Ping => out.extend_from_slice(b"\r\n\r\n"),
                        }
                    }
                }
                Some(ChanEvent::Media(_)) => {}
                Some(ChanEvent::Close(reason)) => {
                    drop(chan.take()); // closed by C: nothing to tell it
                    log(&format!("SIP-EDGE closed: {reason}"));
                    let _ = uclab_net::time::timeout(Duration::from_secs(1), io.shutdown()).await;
                    return;
                }
                None => {
                    drop(chan.take());
                    log("SIP-EDGE closed: traversal zone down");
                    let _ = uclab_net::time::timeout(Duration::from_secs(1), io.shutdown()).await;
                    return;
                }
            },
        }
        if !out.is_empty() {
            let w = uclab_net::time::timeout(WRITE_TIMEOUT, async {
                io.write_all(&out).await?;
                io.flush().await
            })
            .await;
            if !matches!(w, Ok(Ok(()))) {
                if let Some(c) = chan.take() {
                    c.close(net, "client does not read");
                }
                return;
            }
        }
    }
}

/// A `sip <client>` channel on the traversal zone, if there is a zone.
fn open<N: Net>(net: &N, st: &Shared, peer: std::net::SocketAddr) -> Option<Channel> {
    // No zone, or too many channels on it: the caller answers for C.
    Channel::open(net, st, ZoneKind::Http, &format!("sip {peer}")).ok()
}
