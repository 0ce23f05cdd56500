//! Bounds on the connections a listener holds (issue 13): a cap on all of a listener's
//! connections and a smaller one per peer address, so one host cannot take every slot.
//!
//! A connection over either cap is closed as soon as it is accepted, before a byte is read; the
//! ones already admitted carry on. The caps are per listener and per node task, so they need
//! no locking.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::rc::Rc;

/// Per listener: Tomcat's default `maxConnections` for NIO, which the CUCM and IM&P web
/// services run on; far above any built-in scenario (CAP1 holds 3,000 clients).
pub const HTTP_CONNECTIONS: usize = 8192;
/// Per listener, SIP over TCP/TLS and XMPP: a node's device and user capacity is in the
/// thousands; this leaves room above the largest built-in cluster.
pub const STREAM_CONNECTIONS: usize = 16_384;
/// Per peer address, on every listener: a phone or client holds one or two; a lab host
/// running several probes at once holds a few dozen.
pub const PER_PEER: usize = 64;

/// How long a listener waits after a failed accept (out of file descriptors, say).
const ACCEPT_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// The next connection of `listener`. A failed accept is retried after a pause instead of
/// ending the listener (issue 13: running out of descriptors must not take a service down
/// for good).
pub async fn next_conn(listener: &uclab_net::TcpAcceptor) -> uclab_net::TcpConn {
    loop {
        match listener.accept().await {
            Ok(c) => return c,
            Err(_) => uclab_net::time::sleep(ACCEPT_RETRY).await,
        }
    }
}

/// The connections a listener holds, counted per peer address.
#[derive(Clone, Debug)]
pub struct ConnLimit {
    inner: Rc<RefCell<Counts>>,
}

#[derive(Debug)]
struct Counts {
    max: usize,
    per_peer: usize,
    total: usize,
    peers: BTreeMap<IpAddr, usize>,
    /// Peers the per-peer cap does not apply to (Expressway-C in front of CUCM and IM&P).
    trusted: Vec<IpAddr>,
}

/// A connection's slot; freed when dropped.
#[derive(Debug)]
pub struct Slot {
    inner: Rc<RefCell<Counts>>,
    peer: IpAddr,
}

impl ConnLimit {
    /// At most `max` connections, `per_peer` of them from one address.
    pub fn new(max: usize, per_peer: usize) -> Self {
        let counts =
            Counts { max, per_peer, total: 0, peers: BTreeMap::new(), trusted: Vec::new() };
        Self { inner: Rc::new(RefCell::new(counts)) }
    }

    /// The per-peer cap does not apply to `peers` (the total cap does): a proxy in front of
    /// this node that holds one connection per client behind it, as Expressway-C does for
    /// every device signed in through the edge (issue 17; the product opens one per
    /// registration from its ports 25000–29999).
    pub fn trusting(self, peers: &[IpAddr]) -> Self {
        self.inner.borrow_mut().trusted = peers.to_vec();
        self
    }

    /// A slot for a connection from `peer`, or `None` when a cap is reached.
    pub fn admit(&self, peer: IpAddr) -> Option<Slot> {
        let mut c = self.inner.borrow_mut();
        let mine = c.peers.get(&peer).copied().unwrap_or(0);
        if c.total >= c.max || (mine >= c.per_peer && !c.trusted.contains(&peer)) {
            return None;
        }
        c.total += 1;
        c.peers.insert(peer, mine + 1);
        Some(Slot { inner: self.inner.clone(), peer })
    }

    /// Connections held now.
    pub fn held(&self) -> usize {
        self.inner.borrow().total
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut c) = self.inner.try_borrow_mut() {
            c.total = c.total.saturating_sub(1);
            if let Some(n) = c.peers.get_mut(&self.peer) {
                *n -= 1;
                if *n == 0 {
                    c.peers.remove(&self.peer);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_peer_and_in_all_and_frees_slots() {
        let l = ConnLimit::new(3, 2);
        let (a, b, c) = ([127, 0, 0, 1].into(), [127, 0, 0, 2].into(), [127, 0, 0, 3].into());
        let a1 = l.admit(a).unwrap();
        let _a2 = l.admit(a).unwrap();
        assert!(l.admit(a).is_none(), "per peer");
        let _b1 = l.admit(b).unwrap();
        assert!(l.admit(c).is_none(), "in all");
        drop(a1);
        assert_eq!(l.held(), 2);
        assert!(l.admit(c).is_some(), "a freed slot is reused");
        let t = ConnLimit::new(4, 1).trusting(&[a]);
        let held: Vec<_> = (0..3).map(|_| t.admit(a).expect("trusted: no per-peer cap")).collect();
        let b1 = t.admit(b).expect("room for one more");
        assert!(t.admit(a).is_none(), "the total cap still holds");
        assert!(t.admit(b).is_none());
        drop((held, b1));
    }
}
