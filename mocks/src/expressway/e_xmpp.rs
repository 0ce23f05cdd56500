//! Expressway-E's XMPP edge on 5222 (issue 17, SPEC MRA1): the connections' driver. Each
//! connection runs an [`EdgeSession`] and, once the client has sent its `<auth>`, a
//! `Channel` over the XMPP traversal zone (7400) to C; the driver only moves bytes, time and
//! the channel's events (the session decides). E holds at most
//! [`crate::limits::STREAM_CONNECTIONS`] connections, [`crate::limits::PER_PEER`] from one address, and
//! a write to a client that does not read is given up after [`WRITE_TIMEOUT`].

use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use uclab_net::Net;

use super::e::{Channel, EConfig, NoChannel, Shared};
use super::xmpp_edge::{Action, EdgeSession};
use super::{ChanEvent, ZoneKind};

/// How long one write to the client may take.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves the XMPP edge until the node stops.
pub(crate) async fn serve<N: Net + Clone + 'static>(
    net: N,
    cfg: Rc<EConfig>,
    st: Shared,
) -> io::Result<()> {
    // The same certificate as the HTTPS edge (the client checks it against the domain).
    let (port, san) = (cfg.xmpp_port, cfg.san.clone());
    super::e::serve_streams(net, (port, &san, None), move |net, tls, tcp| {
        let (cfg, st) = (cfg.clone(), st.clone());
        async move { connection(&net, &cfg, &st, tls, tcp).await }
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

async fn connection<N: Net>(
    net: &N,
    cfg: &EConfig,
    st: &Shared,
    tls: Arc<uclab_net::tls::ServerConfig>,
    tcp: uclab_net::TcpConn,
) {
    let (local, peer) = (tcp.local_addr(), tcp.peer_addr());
    let log = |inbound: bool, line: &str| {
        let (from, to) = if inbound { (peer, local) } else { (local, peer) };
        net.transcript().message(net.now(), from, to, "tcp", line);
    };
    let mut io: Box<dyn uclab_net::AsyncIo> = Box::new(tcp);
    let mut s = EdgeSession::new(cfg.domains.clone(), &cfg.host, net.now());
    let mut chan: Option<Channel> = None;
    loop {
        while let Some(a) = s.poll() {
            match a {
                Action::Send(b) => {
                    let w = uclab_net::time::timeout(WRITE_TIMEOUT, io.write_all(&b)).await;
                    if !matches!(w, Ok(Ok(()))) {
                        if let Some(c) = chan.take() {
                            c.close(net, "client does not read");
                        }
                        return;
                    }
                }
                Action::StartTls => {
                    let _ = io.flush().await;
                    let left = until(net, s.poll_timeout());
                    match uclab_net::time::timeout(left, net.tls().accept(tls.clone(), io)).await {
                        Ok(Ok(t)) => io = Box::new(t),
                        Ok(Err(e)) => return log(true, &format!("XMPP-EDGE closed: TLS: {e}")),
                        Err(_) => return log(true, "XMPP-EDGE closed: no TLS handshake"),
                    }
                    s.handle_tls_up(net.now());
                }
                Action::Open(header) => match Channel::open(net, st, ZoneKind::Xmpp, &header) {
                    Ok(c) => chan = Some(c),
                    Err(NoChannel::NoZone) => s.handle_no_channel("no XMPP zone to Expressway-C"),
                    Err(NoChannel::Busy) => s.handle_no_channel("too many channels"),
                },
                Action::Relay(b) => {
                    if let Some(c) = &chan {
                        c.data(b);
                    }
                }
                Action::CloseChannel(reason) => {
                    if let Some(c) = chan.take() {
                        c.close(net, &reason);
                    }
                }
                Action::Close => {
                    let _ = uclab_net::time::timeout(Duration::from_secs(1), async {
                        io.flush().await?;
                        io.shutdown().await
                    })
                    .await;
                    return;
                }
                Action::Log { inbound, line } => log(inbound, &line),
            }
        }
        if s.is_done() {
            return;
        }
        let wait = until(net, s.poll_timeout());
        // Biased (a replay must not depend on tokio's pick): the client first.
        tokio::select! {
            biased;
            r = uclab_net::time::timeout(wait, uclab_net::scratch::read_vec(&mut io, 16 * 1024)) => match r {
                Ok(Ok(b)) if !b.is_empty() => s.handle_client(net.now(), &b),
                Ok(_) => s.handle_eof(),
                Err(_) => s.handle_timeout(net.now()),
            },
            ev = recv(&mut chan) => match ev {
                Some(ChanEvent::Data(b)) => s.handle_inside(net.now(), &b),
                Some(ChanEvent::Media(_)) => {}
                Some(ChanEvent::Close(reason)) => {
                    chan = None; // closed by C: nothing to tell it
                    s.handle_channel_closed(&reason);
                }
                None => {
                    chan = None;
                    s.handle_channel_closed("traversal zone down or channel dropped");
                }
            },
        }
    }
}

/// Time from now to `deadline` (none: for ever).
fn until<N: Net>(net: &N, deadline: Option<Duration>) -> Duration {
    deadline.map_or(Duration::MAX, |d| d.saturating_sub(net.now()))
}
