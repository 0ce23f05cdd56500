//! Expressway-E's media relays (issue 17 point 4; SPEC MEDIA1, MEDIA2): RTP of a call through
//! the edge crosses E on a port of its media range, where C asked for one.
//!
//! C orders a relay on the traversal zone (`MEDIA <ch> open <port> <audio|video>`); E binds the
//! port, says `opened <port>` (or `failed <port> <why>`), and relays: what comes from C's
//! address goes to the client, what comes from anyone else is the client (its address latched
//! from its packets: E never trusts an address written in SDP from outside) and goes to C's
//! same port. C sends first (its answer to `opened` opens the firewall's path from the DMZ
//! inward for the replies). Packets keep the DSCP of their kind on every hop (46 audio, 34
//! video). A relay ends on C's `close <port>`, after [`IDLE`] without a packet, or with its
//! zone; at most [`MAX_RELAYS`] at once.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::mpsc;
use uclab_net::Net;

use super::traversal::Frame;

/// Expressway's media port range (both nodes).
pub const MEDIA_PORTS: RangeInclusive<u16> = 36000..=59999;
/// A relay without a packet this long ends.
pub const IDLE: Duration = Duration::from_secs(60);
/// Relays one zone holds at once.
pub const MAX_RELAYS: usize = 4096;
/// Largest datagram relayed.
const MAX_DATAGRAM: usize = 2048;

/// A relay's task, aborted when the relay is dropped (closed, replaced, zone gone).
#[derive(Debug)]
pub(crate) struct Relay {
    task: tokio::task::JoinHandle<()>,
    /// Its channel.
    ch: u64,
    /// Which relay on its port this is (a later one may take the port).
    serial: u64,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A zone's relays by port.
#[derive(Debug, Default)]
pub(crate) struct RelayTable {
    by_port: std::collections::BTreeMap<u16, Relay>,
    next: u64,
}

/// A zone's relays, shared with their tasks.
pub(crate) type Relays = Rc<RefCell<RelayTable>>;

/// What a `MEDIA` order asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Order {
    /// Relay on `port` for media of DSCP `dscp`.
    Open {
        /// The port (E and C use the same number).
        port: u16,
        /// DSCP of the kind (46 audio, 34 video).
        dscp: u8,
    },
    /// Stop relaying on `port`.
    Close {
        /// The port.
        port: u16,
    },
}

/// Reads C's order; `None` for anything else (ignored).
pub fn parse_order(text: &str) -> Option<Order> {
    let w: Vec<&str> = text.split(' ').collect();
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| MEDIA_PORTS.contains(p));
    match w[..] {
        ["open", p, "audio"] => {
            Some(Order::Open { port: port(p)?, dscp: uclab_proto::dscp::AUDIO })
        }
        ["open", p, "video"] => {
            Some(Order::Open { port: port(p)?, dscp: uclab_proto::dscp::VIDEO })
        }
        ["close", p] => Some(Order::Close { port: port(p)? }),
        _ => None,
    }
}

/// Carries out C's order `text` for channel `ch` on the zone whose frames go out on `tx`;
/// `c_ip` is C's address.
pub(crate) fn order<N: Net + Clone + 'static>(
    net: &N,
    relays: &Relays,
    (ch, text): (u64, &str),
    c_ip: IpAddr,
    tx: &mpsc::UnboundedSender<Vec<u8>>,
) {
    let answer = |text: String| {
        let _ = tx.send(Frame::Media { ch, text }.encode());
    };
    match parse_order(text) {
        Some(Order::Close { port }) => {
            let mut r = relays.borrow_mut();
            if r.by_port.get(&port).is_some_and(|x| x.ch == ch) {
                r.by_port.remove(&port);
            }
        }
        Some(Order::Open { port, dscp }) => {
            let serial = {
                let mut r = relays.borrow_mut();
                // A port in use is given up first (C reuses a port only after closing it).
                r.by_port.remove(&port);
                if r.by_port.len() >= MAX_RELAYS {
                    drop(r);
                    return answer(format!("failed {port} too many relays"));
                }
                r.next += 1;
                r.next
            };
            let (net, rs, tx) = (net.clone(), relays.clone(), tx.clone());
            let task = tokio::task::spawn_local(async move {
                run(&net, (ch, port, dscp), SocketAddr::new(c_ip, port), &tx).await;
                // Over by itself (idle, or the port would not bind): its entry goes. The
                // entry holds this task's handle; dropping it here aborts a finished task.
                let gone = rs.try_borrow_mut().ok().and_then(|mut r| {
                    if r.by_port.get(&port).is_some_and(|x| x.serial == serial) {
                        r.by_port.remove(&port)
                    } else {
                        None
                    }
                });
                drop(gone);
            });
            relays.borrow_mut().by_port.insert(port, Relay { task, ch, serial });
        }
        None => {}
    }
}

/// One relay's life.
async fn run<N: Net>(
    net: &N,
    (ch, port, dscp): (u64, u16, u8),
    c: SocketAddr,
    tx: &mpsc::UnboundedSender<Vec<u8>>,
) {
    let answer = |text: String| {
        let _ = tx.send(Frame::Media { ch, text }.encode());
    };
    let mut sock = match net.bind_udp(port).await {
        Ok(s) => s,
        Err(e) => return answer(format!("failed {port} {}", e.kind())),
    };
    sock.set_dscp(dscp);
    answer(format!("opened {port}"));
    let mut client: Option<SocketAddr> = None;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, from) = match uclab_net::time::timeout(IDLE, sock.recv_from(&mut buf)).await {
            Ok(Ok(x)) => x,
            Ok(Err(_)) => continue, // an ICMP error for an earlier send
            Err(_) => return,
        };
        let to = if from.ip() == c.ip() {
            match client {
                Some(cl) => cl,
                None => continue, // the client has not sent yet: nowhere to go
            }
        } else {
            client = Some(from);
            c
        };
        let _ = sock.send_to(&buf[..n], to).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_read_strictly() {
        assert_eq!(parse_order("open 36000 audio"), Some(Order::Open { port: 36000, dscp: 46 }));
        assert_eq!(parse_order("open 59998 video"), Some(Order::Open { port: 59998, dscp: 34 }));
        assert_eq!(parse_order("close 36002"), Some(Order::Close { port: 36002 }));
        // Outside the media range, or not an order: ignored.
        assert_eq!(parse_order("open 5060 audio"), None);
        assert_eq!(parse_order("open 36000 text"), None);
        assert_eq!(parse_order("close"), None);
        assert_eq!(parse_order(""), None);
    }
}
