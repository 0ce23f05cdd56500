//! The IM&P cluster's router with its sessions' mailboxes: the glue between the router's state,
//! which returns what each session is to get ([`Router::poll_output`]), and the connections
//! that write it. Every change to the router goes through [`Hub::route`], which hands what the
//! change produced to the mailboxes at once, in order, before the caller's task yields; so
//! sessions are woken in the order the router spoke, as when it held the channels itself.
//!
//! Mailboxes are bounded ([`MAILBOX`]): a client that does not read its stream cannot make the
//! node grow without limit. When a session's mailbox is full the session leaves the router
//! (its watchers and rooms see it go) and its connection ends with a stream error (RFC 6120 §4.9.3.17 `resource-constraint`).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use tokio::sync::mpsc;
use uclab_proto::xmpp::Element;

use super::router::{REMOTE_QUEUE, Router, SessionId};

/// Stanzas waiting for one session's connection at most. A client reading at all keeps far
/// below: the busiest lab run (CAP1's storm, 3,000 clients of 75 contacts) queues at most a
/// roster's worth of presences for a session at once.
pub const MAILBOX: usize = 4_096;

/// What the cluster's router hands a federation-enabled node (SPEC FED1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outgoing {
    /// A stanza for another domain, `to` set.
    Stanza(Element),
    /// A federation refusal or bounce, for the transcript.
    Note(String),
}

/// A cluster's router and the mailboxes of the sessions bound to it.
#[derive(Debug)]
pub struct Hub {
    router: RefCell<Router>,
    mailboxes: RefCell<BTreeMap<SessionId, mpsc::Sender<Element>>>,
    next: Cell<SessionId>,
    /// The federation-enabled nodes that are up, in the order they joined, and the next to
    /// carry a stanza out (SPEC FED1: round-robin).
    federation: RefCell<Vec<(String, mpsc::Sender<Outgoing>)>>,
    next_federation: Cell<usize>,
    /// SPEC FED3: domains federated over SIP, each with its gateway's channel (closed while
    /// the gateway's node is down). Their stanzas never take the XMPP path.
    sip: RefCell<BTreeMap<String, mpsc::Sender<Element>>>,
}

impl Hub {
    /// A hub around `router`.
    pub fn new(router: Router) -> Rc<Self> {
        Rc::new(Self {
            router: RefCell::new(router),
            mailboxes: RefCell::new(BTreeMap::new()),
            next: Cell::new(1),
            federation: RefCell::new(Vec::new()),
            next_federation: Cell::new(0),
            sip: RefCell::new(BTreeMap::new()),
        })
    }

    /// Federation-enabled node `host` is up: stanzas for other domains go out through it in
    /// turn with the others (SPEC FED1). It reads them from the receiver until it leaves.
    pub fn join_federation(&self, host: &str) -> mpsc::Receiver<Outgoing> {
        let (tx, rx) = mpsc::channel(REMOTE_QUEUE);
        let mut f = self.federation.borrow_mut();
        f.retain(|(h, _)| h != host);
        f.push((host.to_owned(), tx));
        rx
    }

    /// Node `host` stopped carrying federated traffic (it stopped or crashed).
    pub fn leave_federation(&self, host: &str) {
        if let Ok(mut f) = self.federation.try_borrow_mut() {
            f.retain(|(h, _)| h != host);
        }
    }

    /// A SIP federation gateway is up for `domains` (SPEC FED3): stanzas for them go to it,
    /// read from the receiver, rather than out as XMPP.
    pub fn join_sip_federation(&self, domains: &[String]) -> mpsc::Receiver<Element> {
        let (tx, rx) = mpsc::channel(REMOTE_QUEUE);
        let mut sip = self.sip.borrow_mut();
        for d in domains {
            sip.insert(d.to_ascii_lowercase(), tx.clone());
        }
        rx
    }

    /// The next federation-enabled node that is up, round-robin.
    fn next_federation_node(&self) -> Option<mpsc::Sender<Outgoing>> {
        let mut f = self.federation.borrow_mut();
        f.retain(|(_, tx)| !tx.is_closed());
        if f.is_empty() {
            return None;
        }
        let i = self.next_federation.get() % f.len();
        self.next_federation.set(i + 1);
        Some(f[i].1.clone())
    }

    /// A new session's id and the mailbox its connection reads.
    pub fn open_session(&self) -> (SessionId, mpsc::Receiver<Element>) {
        let id = self.next.get();
        self.next.set(id + 1);
        let (tx, rx) = mpsc::channel(MAILBOX);
        self.mailboxes.borrow_mut().insert(id, tx);
        (id, rx)
    }

    /// The session's connection is gone: its mailbox goes.
    pub fn end_session(&self, id: SessionId) {
        self.mailboxes.borrow_mut().remove(&id);
    }

    /// Runs `f` on the router, then delivers what it produced.
    pub fn route<T>(&self, f: impl FnOnce(&mut Router) -> T) -> T {
        let mut r = self.router.borrow_mut();
        let t = f(&mut r);
        self.dispatch(&mut r);
        t
    }

    /// [`Hub::route`] unless the router is in use (a drop guard running while its own task
    /// holds it): then nothing happens.
    pub fn try_route(&self, f: impl FnOnce(&mut Router)) {
        if let Ok(mut r) = self.router.try_borrow_mut() {
            f(&mut r);
            self.dispatch(&mut r);
        }
    }

    fn dispatch(&self, r: &mut Router) {
        loop {
            let mut boxes = self.mailboxes.borrow_mut();
            while let Some((id, s)) = r.poll_output() {
                let Some(tx) = boxes.get(&id) else { continue };
                if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(s) {
                    // A client that does not read: it leaves the router now (its watchers and
                    // rooms see it go), and its connection ends when its mailbox does.
                    r.unbind_session(id);
                    boxes.remove(&id);
                }
            }
            drop(boxes);
            // SPEC FED1: out through the federation nodes in turn; with none up, or one
            // that cannot take more, the sender hears at once (which may queue more).
            let mut bounced = false;
            while let Some(e) = r.poll_remote() {
                let d = uclab_proto::jid::domain(e.get("to").unwrap_or(""));
                if let Some(tx) = self.sip.borrow().get(&d) {
                    // SPEC FED3: the SIP gateway, or an error when it is down or full.
                    if let Err(
                        mpsc::error::TrySendError::Full(e) | mpsc::error::TrySendError::Closed(e),
                    ) = tx.try_send(e)
                    {
                        r.bounce(vec![e], "remote-connection-failed");
                        bounced = true;
                    }
                    continue;
                }
                let refused = match self.next_federation_node() {
                    Some(tx) => match tx.try_send(Outgoing::Stanza(e)) {
                        Ok(()) => None,
                        Err(
                            mpsc::error::TrySendError::Full(Outgoing::Stanza(e))
                            | mpsc::error::TrySendError::Closed(Outgoing::Stanza(e)),
                        ) => Some(e),
                        Err(_) => None,
                    },
                    None => Some(e),
                };
                if let Some(e) = refused {
                    r.bounce(vec![e], "remote-connection-failed");
                    bounced = true;
                }
            }
            while let Some(n) = r.poll_note() {
                let first = self.federation.borrow().first().map(|(_, tx)| tx.clone());
                if let Some(tx) = first {
                    let _ = tx.try_send(Outgoing::Note(n));
                }
            }
            if !bounced {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imp::router::Limits;

    fn presence(from: &str) -> Element {
        Element::new("presence").attr("from", from)
    }

    /// A session whose mailbox fills is closed (its receiver sees the end), and the others
    /// keep getting their stanzas.
    #[test]
    fn a_full_mailbox_closes_only_that_session() {
        let hub = Hub::new(Router::new("example.com", Limits::default()));
        let (slow, mut slow_rx) = hub.open_session();
        let (fast, mut fast_rx) = hub.open_session();
        hub.route(|r| {
            r.bind("slow@example.com/a", slow);
            r.bind("fast@example.com/a", fast);
        });
        let msg = |to: &str, n: usize| {
            Element::new("message")
                .attr("from", "fast@example.com/a")
                .attr("to", to)
                .attr("type", "chat")
                .child(Element::new("body").text_node(&n.to_string()))
        };
        for n in 0..=MAILBOX {
            hub.route(|r| r.handle(msg("slow@example.com/a", n), std::time::Duration::ZERO));
            // The fast one reads everything it gets.
            while fast_rx.try_recv().is_ok() {}
        }
        let mut got = 0;
        while slow_rx.try_recv().is_ok() {
            got += 1;
        }
        assert_eq!(got, MAILBOX, "what fitted was kept");
        assert!(slow_rx.is_closed(), "then the session was closed");
        // Nothing more is queued for it, and the others keep getting theirs.
        hub.route(|r| r.handle(msg("slow@example.com/a", 0), std::time::Duration::ZERO));
        hub.route(|r| {
            let to_fast = Element::new("message")
                .attr("from", "slow@example.com/a")
                .attr("to", "fast@example.com/a")
                .attr("type", "chat");
            r.handle(to_fast, std::time::Duration::ZERO);
        });
        assert!(fast_rx.try_recv().is_ok(), "the fast session still gets its messages");
        hub.route(|r| r.handle(presence("fast@example.com/a"), std::time::Duration::ZERO));
    }
}
