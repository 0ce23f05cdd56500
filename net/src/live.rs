//! `LiveNet`: the [`Net`] over real tokio sockets (`uclab serve`, `uclab probe`).

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use crate::capture::{Capture, TapMode};
use crate::policy::Policy;
use crate::rng::SeededRng;
use crate::socket::{
    BoxFuture, Listener, RawListener, RawUdp, Tap, TcpAcceptor, TcpConn, Udp, UdpSock,
};
use crate::tls::TlsContext;
use crate::transcript::Transcript;
use crate::{Lab, Net};

/// Where a live process may send (issue 13: nothing leaves the lab unless told to).
///
/// Always allowed: loopback (127.0.0.0/8, ::1) and the process's own address. Also allowed:
/// the targets the user named on the command line. Anything else is refused before a packet
/// leaves, unless `remote` (`--allow-remote`) says otherwise.
#[derive(Clone, Debug, Default)]
pub struct Egress {
    /// Addresses named by the user (a `--dns` or `--server` outside loopback).
    pub targets: Vec<IpAddr>,
    /// Allow every address (`--allow-remote`).
    pub remote: bool,
}

impl Egress {
    /// Whether `to` may be reached from `own`.
    pub fn allows(&self, own: IpAddr, to: IpAddr) -> bool {
        self.remote || to.is_loopback() || to == own || self.targets.contains(&to)
    }

    fn check(&self, own: IpAddr, to: SocketAddr) -> io::Result<()> {
        if self.allows(own, to.ip()) {
            return Ok(());
        }
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("refused: {to} is outside the lab (--allow-remote to allow)"),
        ))
    }
}

/// Real sockets bound to one address (loopback unless told otherwise). Only this end of each
/// flow is ours, so the tap records both directions.
#[derive(Clone)]
pub struct LiveNet {
    ip: IpAddr,
    egress: Rc<Egress>,
    capture: Capture,
    policy: Policy,
    rng: SeededRng,
    transcript: Transcript,
    tls: TlsContext,
    start: tokio::time::Instant,
}

impl LiveNet {
    /// Sockets on `ip` sharing `lab`'s capture, transcript and TLS (the lab's policy is not
    /// applied: a real network has its own).
    pub fn new(ip: IpAddr, lab: &Lab) -> Self {
        Self {
            ip,
            egress: Rc::new(Egress::default()),
            capture: lab.capture.clone(),
            policy: Policy::default(),
            rng: SeededRng::new(lab.seed, "live"),
            transcript: lab.transcript.clone(),
            tls: lab.tls.clone(),
            // Live mode runs on real sockets in real time: its clock is the wall clock by
            // definition. Simulation never builds a LiveNet, so no run's replay depends on it.
            start: tokio::time::Instant::now(),
        }
    }

    /// The same net, sending only where `egress` allows.
    pub fn with_egress(mut self, egress: Egress) -> Self {
        self.egress = Rc::new(egress);
        self
    }

    /// The capture this net writes into.
    pub fn capture(&self) -> &Capture {
        &self.capture
    }

    fn tap(&self) -> Tap {
        let start = self.start;
        Tap {
            capture: self.capture.clone(),
            mode: TapMode::BothDirections,
            clock: Rc::new(move || Some(start.elapsed())),
            policy: self.policy.clone(),
        }
    }
}

impl RawListener for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;

    fn accept_raw(&self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> {
        self.accept()
    }
}

impl RawUdp for tokio::net::UdpSocket {
    fn send_raw(&self, buf: &[u8], to: SocketAddr) -> impl Future<Output = io::Result<usize>> {
        self.send_to(buf, to)
    }

    fn recv_raw(&self, buf: &mut [u8]) -> impl Future<Output = io::Result<(usize, SocketAddr)>> {
        self.recv_from(buf)
    }
}

impl Net for LiveNet {
    fn connect(&self, to: SocketAddr) -> BoxFuture<'_, io::Result<TcpConn>> {
        Box::pin(async move {
            self.egress.check(self.ip, to)?;
            let t0 = self.start.elapsed();
            let s = tokio::net::TcpStream::connect(to).await?;
            let local = s.local_addr()?;
            self.capture.tcp_handshake(t0, self.start.elapsed(), local, to);
            Ok(TcpConn::new(Box::new(s), local, to, self.tap()))
        })
    }

    fn listen(&self, port: u16) -> BoxFuture<'_, io::Result<TcpAcceptor>> {
        Box::pin(async move {
            let l = tokio::net::TcpListener::bind((self.ip, port)).await?;
            let local = l.local_addr()?;
            Ok(TcpAcceptor::new(Box::new(Listener(l)), local, self.tap()))
        })
    }

    fn bind_udp(&self, port: u16) -> BoxFuture<'_, io::Result<UdpSock>> {
        Box::pin(async move {
            let s = udp_socket(SocketAddr::new(self.ip, port))?;
            let (ip, egress) = (self.ip, self.egress.clone());
            let local = s.local_addr()?;
            Ok(UdpSock::new(
                Box::new(Udp {
                    sock: s,
                    check: Some(Rc::new(move |to| egress.check(ip, to))),
                    lossy: false,
                }),
                local,
                self.tap(),
                self.policy.clone(),
                self.rng.clone(),
            ))
        })
    }

    fn local_ip(&self) -> IpAddr {
        self.ip
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn rng(&self) -> SeededRng {
        self.rng.clone()
    }

    fn transcript(&self) -> &Transcript {
        &self.transcript
    }

    fn tls(&self) -> &TlsContext {
        &self.tls
    }
}

/// A live UDP socket bound to `at` with a receive buffer of [`UDP_RECV_BUFFER`] (the kernel
/// caps it at `net.core.rmem_max`): a server's burst of requests (SIPp keeps 256 REGISTERs in
/// flight) waits in the socket instead of being dropped, as Kamailio's and unbound's larger
/// buffers keep it (issue 19).
fn udp_socket(at: SocketAddr) -> io::Result<tokio::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(at), Type::DGRAM, Some(Protocol::UDP))?;
    let _ = s.set_recv_buffer_size(UDP_RECV_BUFFER);
    s.set_nonblocking(true)?;
    s.bind(&at.into())?;
    tokio::net::UdpSocket::from_std(s.into())
}

/// The receive buffer live UDP sockets ask for.
const UDP_RECV_BUFFER: usize = 4 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn egress_allows_loopback_own_and_named_only() {
        let own: IpAddr = "127.0.0.1".parse().unwrap();
        let e = Egress { targets: vec!["192.0.2.7".parse().unwrap()], remote: false };
        assert!(e.allows(own, "127.1.0.11".parse().unwrap()));
        assert!(e.allows(own, "::1".parse().unwrap()));
        assert!(e.allows(own, "192.0.2.7".parse().unwrap()));
        assert!(!e.allows(own, "10.1.0.40".parse().unwrap()));
        let err = e.check(own, "10.1.0.40:5060".parse().unwrap()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(err.to_string().contains("outside the lab"), "{err}");
        let all = Egress { remote: true, ..Egress::default() };
        assert!(all.allows(own, "10.1.0.40".parse().unwrap()));
    }
}
