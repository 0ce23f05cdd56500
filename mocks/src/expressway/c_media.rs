//! Expressway-C's side of the media of calls through the edge (issue 17 point 4; SPEC MEDIA1,
//! MEDIA2): every audio and video stream of a call on a SIP channel goes through a relay port
//! on C and the same port on E, so the outside client and the inside party never send to each
//! other.
//!
//! C rewrites the SDP it carries: towards CUCM each stream names C's relay port, towards the
//! client E's. It orders E's relay on the zone (`MEDIA <ch> open <port> <kind>`) and, once E
//! says `opened`, sends E an empty datagram from the same port so the firewall (DMZ → inside is
//! dropped) lets E's replies in; it repeats that every [`PINHOLE_EVERY`] while the call lasts,
//! which also keeps E's relay from idling out during a long hold. C's relay sends what E sends
//! to the inside party's SDP address, and what the inside party sends to E. A relay is per
//! call and stream (`Call-ID`, `m=` line); it ends with the call (BYE, CANCEL, a failed INVITE)
//! or the channel. Ports come from C's pool ([`PortPool`], 36000–59999, even numbers).

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::mpsc;
use uclab_net::Net;
use uclab_proto::sdp::{self, Sdp};
use uclab_proto::sip::{Message, Start};

use super::c::Ctx;
use super::e_media::MEDIA_PORTS;
use super::traversal::Frame;

/// How often C refreshes the firewall path to E's relay during a call.
pub const PINHOLE_EVERY: Duration = Duration::from_secs(20);
/// Largest datagram relayed.
const MAX_DATAGRAM: usize = 2048;
/// Relays one channel holds (a client has a few calls at most).
const MAX_PER_CHANNEL: usize = 32;

/// C's media ports in use.
#[derive(Debug, Default)]
pub struct PortPool {
    used: BTreeSet<u16>,
    next: u16,
}

impl PortPool {
    /// An even port of [`MEDIA_PORTS`] not in use, the search starting after the last one
    /// given (so a port is not reused at once).
    pub fn take(&mut self) -> Option<u16> {
        let (lo, hi) = (*MEDIA_PORTS.start(), *MEDIA_PORTS.end() - 1);
        let count = usize::from((hi - lo) / 2 + 1);
        let start = if self.next < lo || self.next > hi { lo } else { self.next };
        for i in 0..count {
            let off = (usize::from((start - lo) / 2) + i) % count;
            let p = lo + 2 * u16::try_from(off).ok()?;
            if self.used.insert(p) {
                self.next = p.saturating_add(2);
                return Some(p);
            }
        }
        None
    }

    /// `port` is free again.
    pub fn give(&mut self, port: u16) {
        self.used.remove(&port);
    }
}

/// One relay of one stream.
struct Relay {
    port: u16,
    kind: &'static str,
    /// Where the inside party receives (from CUCM's side of the SDP).
    inside: Rc<Cell<Option<SocketAddr>>>,
    /// E has bound its end: the pinhole task may start.
    task: Option<tokio::task::JoinHandle<()>>,
    pinhole: Option<tokio::task::JoinHandle<()>>,
}

/// The relays of one SIP channel's calls.
pub(crate) struct CallMedia {
    ch: u64,
    /// E's address (its relays use the same port numbers as C's).
    e_ip: IpAddr,
    tx: mpsc::UnboundedSender<Vec<u8>>,
    relays: BTreeMap<(String, usize), Relay>,
    /// The zone's ends, for the transcript.
    ends: (SocketAddr, SocketAddr),
}

/// The SDP body of `m`, if it carries one.
fn sdp_of(m: &Message) -> Option<String> {
    let is_sdp = m
        .get("Content-Type")
        .is_some_and(|t| t.trim().to_ascii_lowercase().starts_with("application/sdp"));
    (is_sdp && !m.body.is_empty()).then(|| String::from_utf8_lossy(&m.body).into_owned())
}

impl CallMedia {
    /// The relays of channel `ch` on the zone `(local, E)` whose frames go out on `tx`.
    pub(crate) fn new(
        ch: u64,
        ends: (SocketAddr, SocketAddr),
        tx: mpsc::UnboundedSender<Vec<u8>>,
    ) -> Self {
        Self { ch, e_ip: ends.1.ip(), tx, relays: BTreeMap::new(), ends }
    }

    fn order(&self, text: String) {
        let _ = self.tx.send(Frame::Media { ch: self.ch, text }.encode());
    }

    /// The relay of stream `i` of call `call_id`, ordered from E if new.
    fn relay<N: Net>(&mut self, ctx: &Ctx<N>, call_id: &str, i: usize, kind: &str) -> Option<u16> {
        let key = (call_id.to_owned(), i);
        if let Some(r) = self.relays.get(&key) {
            return Some(r.port);
        }
        if self.relays.len() >= MAX_PER_CHANNEL {
            return None;
        }
        let port = ctx.state.borrow_mut().media.take()?;
        let kind = if kind == "video" { "video" } else { "audio" };
        let line = format!("TRAVERSAL MEDIA {} open {port} {kind}", self.ch);
        ctx.net.transcript().message(ctx.net.now(), self.ends.0, self.ends.1, "tcp", &line);
        self.order(format!("open {port} {kind}"));
        let relay = Relay { port, kind, inside: Rc::default(), task: None, pinhole: None };
        self.relays.insert(key, relay);
        Some(port)
    }

    /// A message from the client on its way to CUCM: its streams name C's relay ports.
    pub(crate) fn inward<N: Net>(&mut self, ctx: &Ctx<N>, m: &mut Message) {
        self.rewrite(ctx, m, None);
    }

    /// A message from CUCM on its way to the client: its streams name E's relay ports, and
    /// C learns where the inside party receives.
    pub(crate) fn outward<N: Net>(&mut self, ctx: &Ctx<N>, m: &mut Message) {
        let e_ip = self.e_ip;
        self.rewrite(ctx, m, Some(e_ip));
    }

    fn rewrite<N: Net>(&mut self, ctx: &Ctx<N>, m: &mut Message, outward: Option<IpAddr>) {
        self.end_if_over(ctx, m);
        let (Some(text), Some(call_id)) = (sdp_of(m), m.call_id().map(str::to_owned)) else {
            return;
        };
        let s = Sdp::parse(&text);
        let mut ports = Vec::new();
        for (i, media) in s.media.iter().enumerate() {
            let port = if media.active() {
                match self.relay(ctx, &call_id, i, &media.kind) {
                    Some(p) => p,
                    None => return, // no port left: the SDP goes as it is (no media)
                }
            } else {
                0
            };
            if outward.is_some() && media.active() {
                let addr = media.addrs.first().or(s.addrs.first());
                if let Some(ip) = addr.and_then(|a| a.parse::<IpAddr>().ok())
                    && let Some(r) = self.relays.get(&(call_id.clone(), i))
                {
                    r.inside.set(Some(SocketAddr::new(ip, media.port)));
                }
            }
            ports.push(port);
        }
        let addr = outward.unwrap_or_else(|| ctx.net.local_ip());
        m.body = sdp::relay(&text, &addr.to_string(), &ports).into_bytes();
    }

    /// The call `m` belongs to is over: its relays go.
    fn end_if_over<N: Net>(&mut self, ctx: &Ctx<N>, m: &Message) {
        let over = match &m.start {
            Start::Request { method, .. } => method == "BYE" || method == "CANCEL",
            Start::Response { code, .. } => *code >= 300 && m.method() == Some("INVITE"),
        };
        if over && let Some(id) = m.call_id() {
            let keys: Vec<_> = self.relays.keys().filter(|(c, _)| c == id).cloned().collect();
            for k in keys {
                if let Some(r) = self.relays.remove(&k) {
                    self.close(ctx, r);
                }
            }
        }
    }

    fn close<N: Net>(&self, ctx: &Ctx<N>, r: Relay) {
        self.order(format!("close {}", r.port));
        if let Some(t) = &r.task {
            t.abort();
        }
        if let Some(t) = &r.pinhole {
            t.abort();
        }
        ctx.state.borrow_mut().media.give(r.port);
    }

    /// E's answer about a relay: `opened <port>` starts C's end.
    pub(crate) fn on_e<N: Net + Clone + 'static>(&mut self, ctx: &Ctx<N>, text: &str) {
        let mut w = text.split(' ');
        let (Some("opened"), Some(port)) = (w.next(), w.next().and_then(|p| p.parse::<u16>().ok()))
        else {
            return;
        };
        let e = SocketAddr::new(self.e_ip, port);
        let Some(r) = self.relays.values_mut().find(|r| r.port == port && r.task.is_none()) else {
            return;
        };
        let (net, inside) = (ctx.net.clone(), r.inside.clone());
        let dscp =
            if r.kind == "video" { uclab_proto::dscp::VIDEO } else { uclab_proto::dscp::AUDIO };
        let sock: Rc<Cell<Option<Rc<uclab_net::UdpSock>>>> = Rc::default();
        let shared = sock.clone();
        r.task = Some(tokio::task::spawn_local(async move {
            let Ok(mut s) = net.bind_udp(port).await else { return };
            s.set_dscp(dscp);
            let s = Rc::new(s);
            shared.set(Some(s.clone()));
            // The first pinhole at once, then every PINHOLE_EVERY (its own task below).
            let _ = s.send_to(&[], e).await;
            let mut buf = vec![0u8; MAX_DATAGRAM];
            loop {
                let Ok((n, from)) = s.recv_from(&mut buf).await else { continue };
                let to = if from == e {
                    match inside.get() {
                        Some(a) if n > 0 => a,
                        _ => continue,
                    }
                } else {
                    e
                };
                let _ = s.send_to(&buf[..n], to).await;
            }
        }));
        r.pinhole = Some(tokio::task::spawn_local(async move {
            loop {
                uclab_net::time::sleep(PINHOLE_EVERY).await;
                if let Some(s) = sock.take() {
                    let _ = s.send_to(&[], e).await;
                    sock.set(Some(s));
                }
            }
        }));
    }

    /// The channel is over: every relay goes.
    pub(crate) fn close_all<N: Net>(&mut self, ctx: &Ctx<N>) {
        for (_, r) in std::mem::take(&mut self.relays) {
            self.close(ctx, r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_even_in_range_and_not_reused_at_once() {
        let mut p = PortPool::default();
        let a = p.take().unwrap();
        let b = p.take().unwrap();
        assert_eq!((a, b), (36000, 36002));
        p.give(a);
        assert_eq!(p.take(), Some(36004), "the search goes on after the last one");
        let mut all = PortPool::default();
        let n = std::iter::from_fn(|| all.take()).count();
        assert_eq!(n, 12000, "every even port of 36000–59998, then none");
        all.give(59998);
        assert_eq!(all.take(), Some(59998));
    }
}
