//! The transport seam of uclab.
//!
//! Client and mocks never name a tokio or turmoil socket: they get a [`Net`] and ask it to
//! connect, listen and bind. [`SimNet`] wraps `turmoil::net`, [`LiveNet`] wraps `tokio::net`.
//! Both apply the firewall [`Policy`] (zones, rules, faults) and feed every byte through the
//! [`Capture`] tap, which synthesises Ethernet/IPv4/TCP/UDP frames so that simulated and live
//! runs produce the same kind of pcapng.

mod capture;
mod events;
pub mod http1;
mod live;
mod messages;
mod pcapng;
mod policy;
mod rng;
pub mod scratch;
mod sim;
mod socket;
mod spill;
pub mod time;
pub mod tls;
mod transcript;

pub use capture::{Capture, Frame, FrameKind, TapMode};
pub use events::{EventRecord, EventRef, Events};
pub use live::{Egress, LiveNet};
pub use messages::{DETAIL_MAX, MessageBytes, MessageStore};
pub use policy::{Action, Policy, PolicyError, Rule, Zone};
pub use rng::{Entropy, SecretRng, SeededRng, derive_seed};
pub use sim::SimNet;
pub use socket::{AsyncIo, BoxFuture, TcpAcceptor, TcpConn, UdpSock};
pub use transcript::{LineKind, Transcript};

/// What every node of one world (a simulation, or a live process) shares.
#[derive(Clone, Debug)]
pub struct Lab {
    /// The run's seed.
    pub seed: u64,
    /// The capture all sockets write into.
    pub capture: Capture,
    /// Firewall and faults.
    pub policy: Policy,
    /// The transcript.
    pub transcript: Transcript,
    /// TLS provider, clock, PKI and key log.
    pub tls: tls::TlsContext,
}

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The transport a node or client runs on.
///
/// Every method that creates a socket applies the firewall [`Policy`] and wraps the socket in
/// the capture tap. `now` is the time since the scenario epoch: virtual in simulation.
pub trait Net {
    /// Opens a TCP connection. A `drop` rule makes this hang (the caller's own timeout ends it,
    /// as on a real network); a `reject` rule fails it with `ConnectionRefused`.
    fn connect(&self, to: SocketAddr) -> BoxFuture<'_, io::Result<TcpConn>>;
    /// Listens for TCP connections on `port` of this node's address.
    fn listen(&self, port: u16) -> BoxFuture<'_, io::Result<TcpAcceptor>>;
    /// Binds a UDP socket on `port` (0 picks an ephemeral port).
    fn bind_udp(&self, port: u16) -> BoxFuture<'_, io::Result<UdpSock>>;
    /// This node's address.
    fn local_ip(&self) -> IpAddr;
    /// Time since the scenario epoch.
    fn now(&self) -> Duration;
    /// The node's seeded random number generator (one stream per node, derived from the seed).
    fn rng(&self) -> SeededRng;
    /// The transcript protocol messages and events are written to.
    fn transcript(&self) -> &Transcript;
    /// TLS for this node: configs from the lab PKI, secrets into the capture.
    fn tls(&self) -> &tls::TlsContext;
}
