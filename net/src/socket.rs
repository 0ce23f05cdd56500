//! Tapped sockets handed out by a [`crate::Net`]: every byte goes through the capture.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::capture::{Capture, TapMode};
use crate::policy::{Action, Policy};
use crate::rng::SeededRng;

/// A boxed, non-`Send` future (simulated hosts and live nodes run on one thread each).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// A byte stream of either backend, or one that becomes TLS halfway (XMPP STARTTLS), boxed as
/// `Box<dyn AsyncIo>`.
pub trait AsyncIo: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> AsyncIo for T {}

/// The clock of a backend: time since the scenario epoch, or `None` outside a running host
/// (then nothing is recorded).
pub(crate) type Clock = Rc<dyn Fn() -> Option<Duration>>;

/// Capture context shared by the sockets of one `Net`.
#[derive(Clone)]
pub(crate) struct Tap {
    pub(crate) capture: Capture,
    pub(crate) mode: TapMode,
    pub(crate) clock: Clock,
    /// Blackholes apply to established connections too: what is written between blackholed
    /// hosts leaves (and is captured) but never arrives.
    pub(crate) policy: Policy,
}

impl Tap {
    fn now(&self) -> Option<Duration> {
        (self.clock)()
    }
}

/// A tapped TCP connection.
pub struct TcpConn {
    io: Box<dyn AsyncIo>,
    local: SocketAddr,
    peer: SocketAddr,
    tap: Tap,
    dscp: u8,
    fin_sent: bool,
    eof_seen: bool,
}

impl TcpConn {
    pub(crate) fn new(io: Box<dyn AsyncIo>, local: SocketAddr, peer: SocketAddr, tap: Tap) -> Self {
        Self { io, local, peer, tap, dscp: 0, fin_sent: false, eof_seen: false }
    }

    /// Our address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Sets the DSCP of the segments this end sends (SPEC MEDIA2).
    pub fn set_dscp(&mut self, dscp: u8) {
        self.dscp = dscp;
    }
}

impl AsyncRead for TcpConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.probe();
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.io).poll_read(cx, buf))?;
        let got = &buf.filled()[before..];
        let this = &mut *self;
        if let Some(t) = this.tap.now() {
            let cap = &this.tap.capture;
            match (got.is_empty(), this.tap.mode) {
                (false, TapMode::SenderRecords) => {
                    cap.tcp_ack_read(t, this.local, this.peer, got.len())
                }
                (false, TapMode::BothDirections) => {
                    cap.tcp_data(t, this.peer, this.local, got, 0);
                    cap.tcp_ack_read(t, this.local, this.peer, got.len());
                }
                (true, mode) if !this.eof_seen && buf.remaining() > 0 => {
                    this.eof_seen = true;
                    if mode == TapMode::BothDirections {
                        cap.tcp_fin(t, this.peer, this.local);
                    }
                    cap.tcp_ack_fin(t, this.local, this.peer);
                }
                _ => {}
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for TcpConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.probe();
        if self.tap.policy.blackholed(self.local.ip(), self.peer.ip()) {
            if let Some(t) = self.tap.now() {
                self.tap.capture.tcp_data(t, self.local, self.peer, buf, self.dscp);
            }
            return Poll::Ready(Ok(buf.len()));
        }
        let n = ready!(Pin::new(&mut self.io).poll_write(cx, buf))?;
        if let Some(t) = self.tap.now() {
            self.tap.capture.tcp_data(t, self.local, self.peer, &buf[..n], self.dscp);
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(Pin::new(&mut self.io).poll_shutdown(cx))?;
        self.record_fin();
        Poll::Ready(Ok(()))
    }
}

impl TcpConn {
    /// A TLS handshake over this connection learns where to report its plaintext.
    fn probe(&self) {
        crate::messages::probe(|| crate::messages::PlainTap {
            capture: self.tap.capture.clone(),
            local: self.local,
            peer: self.peer,
        });
    }

    fn record_fin(&mut self) {
        if self.fin_sent {
            return;
        }
        self.fin_sent = true;
        if let Some(t) = self.tap.now() {
            self.tap.capture.tcp_fin(t, self.local, self.peer);
        }
    }
}

impl Drop for TcpConn {
    fn drop(&mut self) {
        // Closing a socket sends a FIN (data already queued goes first).
        self.record_fin();
    }
}

/// Accepts connections of either backend.
pub(crate) trait Accept {
    fn accept(&self) -> BoxFuture<'_, io::Result<(Box<dyn AsyncIo>, SocketAddr)>>;
}

/// A backend's TCP listener (turmoil's or tokio's); [`Listener`] is the one adapter.
pub(crate) trait RawListener: 'static {
    type Stream: AsyncIo + 'static;
    fn accept_raw(&self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>>;
}

/// The adapter from a backend's listener to what [`TcpAcceptor`] taps.
pub(crate) struct Listener<L>(pub(crate) L);

impl<L: RawListener> Accept for Listener<L> {
    fn accept(&self) -> BoxFuture<'_, io::Result<(Box<dyn AsyncIo>, SocketAddr)>> {
        Box::pin(async move {
            let (s, peer) = self.0.accept_raw().await?;
            Ok((Box::new(s) as Box<dyn AsyncIo>, peer))
        })
    }
}

/// A tapped TCP listener.
pub struct TcpAcceptor {
    inner: Box<dyn Accept>,
    local: SocketAddr,
    tap: Tap,
}

impl TcpAcceptor {
    pub(crate) fn new(inner: Box<dyn Accept>, local: SocketAddr, tap: Tap) -> Self {
        Self { inner, local, tap }
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Waits for the next connection.
    pub async fn accept(&self) -> io::Result<TcpConn> {
        let (io, peer) = self.inner.accept().await?;
        if self.tap.mode == TapMode::BothDirections
            && let Some(t) = self.tap.now()
        {
            // A real peer: only we see this flow, so record its handshake here.
            self.tap.capture.tcp_handshake(t, t, peer, self.local);
        }
        Ok(TcpConn::new(io, self.local, peer, self.tap.clone()))
    }
}

/// Datagram I/O of either backend.
pub(crate) trait Dgram {
    fn send_to<'a>(&'a self, buf: &'a [u8], to: SocketAddr) -> BoxFuture<'a, io::Result<usize>>;
    fn recv_from<'a>(&'a self, buf: &'a mut [u8])
    -> BoxFuture<'a, io::Result<(usize, SocketAddr)>>;
}

/// A backend's UDP socket (turmoil's or tokio's); [`Udp`] is the one adapter.
pub(crate) trait RawUdp: 'static {
    fn send_raw(&self, buf: &[u8], to: SocketAddr) -> impl Future<Output = io::Result<usize>>;
    fn recv_raw(&self, buf: &mut [u8]) -> impl Future<Output = io::Result<(usize, SocketAddr)>>;
}

/// Where a backend may send, checked before each datagram (live mode's egress rule).
pub(crate) type SendCheck = Rc<dyn Fn(SocketAddr) -> io::Result<()>>;

/// The adapter from a backend's UDP socket to what [`UdpSock`] taps.
pub(crate) struct Udp<S> {
    pub(crate) sock: S,
    /// Checked before each send.
    pub(crate) check: Option<SendCheck>,
    /// A send the backend fails is a datagram lost on the way (turmoil fails a send to an
    /// unknown or crashed host; on a real network the datagram just disappears).
    pub(crate) lossy: bool,
}

impl<S: RawUdp> Dgram for Udp<S> {
    fn send_to<'a>(&'a self, buf: &'a [u8], to: SocketAddr) -> BoxFuture<'a, io::Result<usize>> {
        Box::pin(async move {
            if let Some(check) = &self.check {
                check(to)?;
            }
            match self.sock.send_raw(buf, to).await {
                Err(_) if self.lossy => Ok(buf.len()),
                r => r,
            }
        })
    }

    fn recv_from<'a>(
        &'a self,
        buf: &'a mut [u8],
    ) -> BoxFuture<'a, io::Result<(usize, SocketAddr)>> {
        Box::pin(self.sock.recv_raw(buf))
    }
}

/// A tapped UDP socket.
pub struct UdpSock {
    inner: Box<dyn Dgram>,
    local: SocketAddr,
    tap: Tap,
    policy: Policy,
    rng: SeededRng,
    dscp: u8,
}

impl UdpSock {
    pub(crate) fn new(
        inner: Box<dyn Dgram>,
        local: SocketAddr,
        tap: Tap,
        policy: Policy,
        rng: SeededRng,
    ) -> Self {
        Self { inner, local, tap, policy, rng, dscp: 0 }
    }

    /// Our address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Sets the DSCP of datagrams sent (SPEC MEDIA2).
    pub fn set_dscp(&mut self, dscp: u8) {
        self.dscp = dscp;
    }

    /// Sends a datagram. Like UDP, success means only that it left this host: a `drop` rule,
    /// a blackhole or loss discard it silently; a `reject` rule answers with ICMP port
    /// unreachable, reported at once as a `ConnectionRefused` error (as Linux reports ICMP
    /// errors on the socket).
    pub async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        let now = self.tap.now();
        if let Some(t) = now {
            self.tap.capture.udp(t, self.local, to, buf, self.dscp);
        }
        match self.policy.verdict(self.local, to, "udp") {
            Action::Allow => {
                let p = self.policy.loss(self.local.ip(), to.ip());
                if p > 0.0 && self.rng.chance(p) {
                    return Ok(buf.len());
                }
                self.inner.send_to(buf, to).await
            }
            Action::Drop => Ok(buf.len()),
            Action::Reject => {
                if let Some(t) = now {
                    self.tap.capture.icmp_port_unreachable(t, self.local, to, buf);
                }
                Err(io::Error::new(io::ErrorKind::ConnectionRefused, to.to_string()))
            }
        }
    }

    /// Receives a datagram.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let (n, from) = self.inner.recv_from(buf).await?;
        if self.tap.mode == TapMode::BothDirections
            && let Some(t) = self.tap.now()
        {
            self.tap.capture.udp(t, from, self.local, &buf[..n], 0);
        }
        Ok((n, from))
    }
}
