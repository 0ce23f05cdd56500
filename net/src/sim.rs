//! `SimNet`: the [`Net`] of a host inside a turmoil world.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use crate::capture::{Capture, TapMode, UNSPECIFIED};
use crate::policy::{Action, Policy};
use crate::rng::SeededRng;
use crate::socket::{
    BoxFuture, Listener, RawListener, RawUdp, Tap, TcpAcceptor, TcpConn, Udp, UdpSock,
};
use crate::tls::TlsContext;
use crate::transcript::Transcript;
use crate::{Lab, Net};

/// Initial SYN retransmission timeout (RFC 6298 §2: 1 s), doubled on each retry.
const SYN_RTO: Duration = Duration::from_secs(1);

/// The network of one simulated host. Must be created and used inside its turmoil host.
#[derive(Clone)]
pub struct SimNet {
    ip: IpAddr,
    capture: Capture,
    policy: Policy,
    rng: SeededRng,
    transcript: Transcript,
    tls: TlsContext,
    /// Source ports for connection attempts that never reach turmoil (filtered/refused by
    /// policy), so their frames still show a plausible, deterministic port.
    fake_port: Rc<Cell<u16>>,
}

impl SimNet {
    /// The network of the host at `ip`, named `name` (names seed its RNG stream).
    pub fn new(ip: IpAddr, name: &str, lab: &Lab) -> Self {
        Self {
            ip,
            capture: lab.capture.clone(),
            policy: lab.policy.clone(),
            rng: SeededRng::new(lab.seed, name),
            transcript: lab.transcript.clone(),
            tls: lab.tls.for_node(lab.seed, name),
            fake_port: Rc::new(Cell::new(61000)),
        }
    }

    fn tap(&self) -> Tap {
        Tap {
            capture: self.capture.clone(),
            mode: TapMode::SenderRecords,
            clock: Rc::new(turmoil::sim_elapsed),
            policy: self.policy.clone(),
        }
    }

    fn next_fake_port(&self) -> u16 {
        let p = self.fake_port.get();
        self.fake_port.set(if p >= 65000 { 61000 } else { p + 1 });
        p
    }

    fn elapsed(&self) -> Duration {
        turmoil::sim_elapsed().unwrap_or_default()
    }
}

impl RawListener for turmoil::net::TcpListener {
    type Stream = turmoil::net::TcpStream;

    fn accept_raw(&self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> {
        self.accept()
    }
}

impl RawUdp for turmoil::net::UdpSocket {
    fn send_raw(&self, buf: &[u8], to: SocketAddr) -> impl Future<Output = io::Result<usize>> {
        self.send_to(buf, to)
    }

    fn recv_raw(&self, buf: &mut [u8]) -> impl Future<Output = io::Result<(usize, SocketAddr)>> {
        self.recv_from(buf)
    }
}

impl Net for SimNet {
    fn connect(&self, to: SocketAddr) -> BoxFuture<'_, io::Result<TcpConn>> {
        Box::pin(async move {
            let t0 = self.elapsed();
            // The source port is not known before turmoil connects; TCP replies are not
            // filtered (the connect is the flow's only check), so port 0 is enough here.
            match self.policy.verdict(SocketAddr::new(self.ip, 0), to, "tcp") {
                Action::Allow => {}
                Action::Reject => {
                    let local = SocketAddr::new(self.ip, self.next_fake_port());
                    self.capture.tcp_refused(t0, local, to);
                    return Err(io::Error::new(io::ErrorKind::ConnectionRefused, to.to_string()));
                }
                Action::Drop => {
                    // SYNs go out and nothing comes back, retransmitted with backoff until
                    // the caller gives up (RFC 6298 §5.5).
                    let local = SocketAddr::new(self.ip, self.next_fake_port());
                    // The attempt ends when the caller gives up (this future is dropped).
                    struct Attempt(Capture, SocketAddr, SocketAddr);
                    impl Drop for Attempt {
                        fn drop(&mut self) {
                            self.0.syn_done(self.1, self.2);
                        }
                    }
                    let _attempt = Attempt(self.capture.clone(), local, to);
                    let mut rto = SYN_RTO;
                    loop {
                        self.capture.tcp_syn_unanswered(self.elapsed(), local, to);
                        crate::time::sleep(rto).await;
                        rto = (rto * 2).min(Duration::from_secs(60));
                    }
                }
            }
            match turmoil::net::TcpStream::connect(to).await {
                Ok(s) => {
                    let local = SocketAddr::new(self.ip, s.local_addr()?.port());
                    self.capture.tcp_handshake(t0, self.elapsed(), local, to);
                    Ok(TcpConn::new(Box::new(s), local, to, self.tap()))
                }
                Err(e) => {
                    let local = SocketAddr::new(self.ip, self.next_fake_port());
                    self.capture.tcp_refused(self.elapsed(), local, to);
                    Err(io::Error::new(io::ErrorKind::ConnectionRefused, e.to_string()))
                }
            }
        })
    }

    fn listen(&self, port: u16) -> BoxFuture<'_, io::Result<TcpAcceptor>> {
        Box::pin(async move {
            let l = turmoil::net::TcpListener::bind((UNSPECIFIED, port)).await?;
            let local = SocketAddr::new(self.ip, l.local_addr()?.port());
            Ok(TcpAcceptor::new(Box::new(Listener(l)), local, self.tap()))
        })
    }

    fn bind_udp(&self, port: u16) -> BoxFuture<'_, io::Result<UdpSock>> {
        Box::pin(async move {
            let s = turmoil::net::UdpSocket::bind((UNSPECIFIED, port)).await?;
            let local = SocketAddr::new(self.ip, s.local_addr()?.port());
            Ok(UdpSock::new(
                Box::new(Udp { sock: s, check: None, lossy: true }),
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
        self.elapsed()
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
