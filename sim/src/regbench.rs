//! The REGISTER bench in simulation (issue 5, `cargo xtask bench register`): `n` softphones
//! (the client core's [`Phone`] engine) register to a two-node CUCM cluster (the mock's
//! [`Cluster`] core) and keep registering, keeping alive and pinging for a simulated time.
//!
//! The engines meet through a discrete-event loop rather than the turmoil world: turmoil
//! advances every host every simulated millisecond, so an hour of 10,000 idle phones would
//! be 36 billion host steps spent on nothing. Here time jumps from one event to the next
//! (a delivery 1 ms after a send, or an engine's own deadline), which measures the protocol
//! cores themselves: framing, parsing, the registrar, the phones' transactions and timers.
//! Same `n`, hours and seed give the same counts.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use uclab_client::event::ClientEvent;
use uclab_client::io::{ConnId, Input, Output, Owner};
use uclab_client::phone::{Phone, PhoneUser};
use uclab_client::resolver::{Dns, ResolverConfig};
use uclab_mocks::cucm::sip::{Cluster, Dest, FlowId, SipConfig, SipLine, Transport};
use uclab_proto::sip::frame::{Frame, StreamFramer};
use uclab_proto::uds::DeviceConfig;

/// One-way delay of the bench's network.
const HOP: Duration = Duration::from_millis(1);

/// What a bench run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegisterBench {
    /// Phones.
    pub phones: usize,
    /// Simulated time run.
    pub sim: Duration,
    /// REGISTER transactions the registrar completed: bindings made or refreshed.
    pub registrations: u64,
    /// Keepalive REGISTERs answered (to the backup node).
    pub keepalives: u64,
    /// SIP messages and CRLF pings delivered either way.
    pub messages: u64,
    /// Phones registered at the end.
    pub registered_at_end: usize,
    /// `phone-registered` events (first registrations and failovers).
    pub registered_events: usize,
}

enum Delivery {
    /// Bytes from phone `p`'s stream `id` to the cluster.
    Up { p: usize, id: ConnId, bytes: Vec<u8> },
    /// Bytes from the cluster to phone `p`'s stream `id`.
    Down { p: usize, id: ConnId, bytes: Vec<u8> },
    /// Phone `p`'s stream `id` is connected.
    Opened { p: usize, id: ConnId },
}

struct Stream {
    flow: FlowId,
    framer: StreamFramer,
}

struct World {
    cluster: Cluster,
    phones: Vec<Phone>,
    /// Stream (phone, id) → cluster flow, and back.
    streams: BTreeMap<(usize, ConnId), Stream>,
    phone_of: BTreeMap<FlowId, (usize, ConnId)>,
    queue: BTreeMap<(Duration, u64), Delivery>,
    seq: u64,
    /// Phone deadlines: (time, phone) and each phone's current entry.
    timers: BTreeSet<(Duration, usize)>,
    timer_of: Vec<Option<Duration>>,
    nodes: BTreeMap<IpAddr, String>,
    result: RegisterBench,
}

/// The address phone `p`'s stream `id` comes from (unique per stream).
fn peer(p: usize, id: ConnId) -> SocketAddr {
    let host = u32::try_from(p).unwrap_or(u32::MAX);
    let ip = Ipv4Addr::from(0x0a80_0000 | (host & 0x007f_ffff));
    SocketAddr::new(IpAddr::V4(ip), 10_000 + (id.n % 50_000) as u16)
}

impl World {
    fn push(&mut self, at: Duration, d: Delivery) {
        self.seq += 1;
        self.queue.insert((at, self.seq), d);
    }

    fn retime(&mut self, p: usize) {
        if let Some(t) = self.timer_of[p].take() {
            self.timers.remove(&(t, p));
        }
        if let Some(t) = self.phones[p].poll_timeout() {
            self.timers.insert((t, p));
            self.timer_of[p] = Some(t);
        }
    }

    /// Moves phone `p`'s outputs onto the network.
    fn drain_phone(&mut self, now: Duration, p: usize) {
        while let Some(o) = self.phones[p].poll_output() {
            match o {
                Output::StreamOpen { id, to, .. } => {
                    let Some(node) = self.nodes.get(&to.ip()).cloned() else { continue };
                    let flow = self.cluster.open_stream(&node, Transport::Tcp, peer(p, id));
                    self.streams.insert((p, id), Stream { flow, framer: StreamFramer::new() });
                    self.phone_of.insert(flow, (p, id));
                    self.push(now + HOP, Delivery::Opened { p, id });
                }
                Output::StreamSend { id, bytes, .. } => {
                    self.push(now + HOP, Delivery::Up { p, id, bytes });
                }
                Output::StreamClose { id } => {
                    if let Some(s) = self.streams.remove(&(p, id)) {
                        self.phone_of.remove(&s.flow);
                        self.cluster.close_flow(s.flow);
                        self.drain_cluster(now);
                    }
                }
                Output::Event(ClientEvent::PhoneRegistered { .. }) => {
                    self.result.registered_events += 1;
                }
                _ => {}
            }
        }
        self.retime(p);
    }

    /// Moves the cluster's outputs toward the phones (all on TCP: nothing goes over UDP).
    fn drain_cluster(&mut self, now: Duration) {
        while let Some((dest, o)) = self.cluster.poll_output() {
            if let Dest::Stream(flow) = dest
                && let Some(&(p, id)) = self.phone_of.get(&flow)
            {
                self.push(now + HOP, Delivery::Down { p, id, bytes: o.bytes });
            }
        }
    }

    fn deliver(&mut self, now: Duration, d: Delivery) {
        match d {
            Delivery::Opened { p, id } => {
                if self.streams.contains_key(&(p, id)) {
                    self.phones[p].handle_input(now, Input::StreamOpened { id });
                    self.drain_phone(now, p);
                }
            }
            Delivery::Up { p, id, bytes } => {
                let Some(s) = self.streams.get_mut(&(p, id)) else { return };
                s.framer.feed(&bytes);
                let flow = s.flow;
                let mut frames = Vec::new();
                while let Ok(Some(f)) = s.framer.next_frame() {
                    frames.push(f);
                }
                for f in frames {
                    self.result.messages += 1;
                    match f {
                        Frame::Message(m) => self.cluster.handle(now, flow, &m),
                        // RFC 5626 §3.5.1: the pong.
                        Frame::Ping => {
                            self.push(now + HOP, Delivery::Down { p, id, bytes: b"\r\n".to_vec() })
                        }
                        // CUCM does not speak STUN (only the edge does, issue 17).
                        Frame::Stun(_) => {}
                    }
                }
                self.drain_cluster(now);
            }
            Delivery::Down { p, id, bytes } => {
                if self.streams.contains_key(&(p, id)) {
                    self.result.messages += 1;
                    self.phones[p].handle_input(now, Input::StreamData { id, bytes });
                    self.drain_phone(now, p);
                }
            }
        }
    }
}

/// Runs `n` phones against a two-node cluster for `sim` of simulated time. Phones start
/// evenly over the first ten seconds.
pub fn register_bench(n: usize, sim: Duration, seed: u64) -> RegisterBench {
    let lines = (0..n)
        .map(|i| SipLine {
            user: format!("u{i}"),
            extension: format!("u{i}"),
            device: format!("CSFU{i}"),
            password: "lab".into(),
            ..SipLine::default()
        })
        .collect();
    let cfg = SipConfig { domain: "example.com".into(), lines, ..SipConfig::default() };
    let mut cluster = Cluster::new(cfg, seed);
    let mut nodes = BTreeMap::new();
    for (host, ip) in [("cucm1.example.com", [10, 1, 0, 11]), ("cucm2.example.com", [10, 1, 0, 12])]
    {
        cluster.add_node(host, 5060);
        nodes.insert(IpAddr::from(ip), host.to_owned());
    }
    let mut w = World {
        cluster,
        phones: Vec::with_capacity(n),
        streams: BTreeMap::new(),
        phone_of: BTreeMap::new(),
        queue: BTreeMap::new(),
        seq: 0,
        timers: BTreeSet::new(),
        timer_of: vec![None; n],
        nodes,
        result: RegisterBench { phones: n, sim, ..RegisterBench::default() },
    };
    let start_of = |i: usize| Duration::from_micros((i as u64 * 10_000_000) / n.max(1) as u64);
    let mut next_start = 0;
    loop {
        let t_start = (next_start < n).then(|| start_of(next_start));
        let t_timer = w.timers.first().map(|t| t.0);
        let t_queue = w.queue.first_key_value().map(|(k, _)| k.0);
        let Some(now) = [t_start, t_timer, t_queue].into_iter().flatten().min() else { break };
        if now > sim {
            break;
        }
        if t_start == Some(now) {
            let i = next_start;
            next_start += 1;
            let cfg = DeviceConfig::defaults(
                format!("CSFU{i}"),
                vec![("10.1.0.11".into(), 5060, 5061), ("10.1.0.12".into(), 5060, 5061)],
                format!("u{i}"),
            );
            let user = PhoneUser { user: format!("u{i}"), password: "lab".into() };
            let resolver = Dns::standalone(Owner::Phone, ResolverConfig::new(Vec::new()));
            let phone_seed = uclab_net::derive_seed(seed, &format!("phone:{i}"));
            w.phones.push(Phone::start(now, user, cfg, resolver, phone_seed));
            w.drain_phone(now, i);
            continue;
        }
        if t_queue == Some(now) {
            let Some((_, d)) = w.queue.pop_first() else { break };
            w.deliver(now, d);
            continue;
        }
        if let Some((t, p)) = w.timers.pop_first() {
            w.timer_of[p] = None;
            w.phones[p].handle_timeout(t);
            w.drain_phone(t, p);
        }
    }
    let c = w.cluster.counters();
    w.result.registrations = c.registrations;
    w.result.keepalives = c.keepalives;
    w.result.registered_at_end = w.phones.iter().filter(|p| p.registered().is_some()).count();
    w.result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_register_refresh_and_keep_alive() {
        // 20 phones for ten minutes: each registers, refreshes every 115 s (granted 120) and
        // keeps alive to the backup every 120 s.
        let r = register_bench(20, Duration::from_secs(600), 1);
        assert_eq!(r.registered_at_end, 20, "{r:?}");
        assert_eq!(r.registered_events, 20, "one registration each, no failover: {r:?}");
        // 600 s / 115 s → 6 REGISTERs each (the first and 5 refreshes); 600 / 120 → 5 or 6
        // keepalives.
        assert!((20 * 5..=20 * 7).contains(&r.registrations), "{r:?}");
        assert!((20 * 4..=20 * 6).contains(&r.keepalives), "{r:?}");
        assert_eq!(register_bench(20, Duration::from_secs(600), 1), r, "deterministic");
    }
}
