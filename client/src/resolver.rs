//! A sans-IO DNS stub resolver: one query table per client ([`Resolver`]), used by each engine
//! through a [`Dns`] handle tagged with the engine's [`Owner`].
//!
//! Ids come from the caller's seeded stream (hickory-resolver draws them from the OS, which
//! breaks replay). Answers are accepted only from the server asked, with the id and question
//! asked (RFC 5452 §9.1). A query is retransmitted after `timeout`, rotating through the
//! configured servers, `attempts` times in all (glibc's `options timeout:2 attempts:2` by
//! default); a truncated answer is retried over TCP (RFC 7766 §5).
//!
//! Polling order: after each `handle_*` call drain [`Dns::poll_output`], then sleep until
//! [`Dns::poll_timeout`] and call [`Dns::handle_timeout`].

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use uclab_proto::dns::{self, DnsMsg, QType};

use crate::Time;
pub use crate::io::QueryToken;
use crate::io::{ConnId, HttpId, Owner};

/// Resolver settings.
#[derive(Clone, Debug)]
pub struct ResolverConfig {
    /// Name servers, tried in order (from DHCP in the real client).
    pub servers: Vec<SocketAddr>,
    /// Time to wait for an answer before retransmitting.
    pub timeout: Duration,
    /// Transmissions per query in all.
    pub attempts: u32,
}

impl ResolverConfig {
    /// glibc-like defaults for `servers`.
    pub fn new(servers: Vec<SocketAddr>) -> Self {
        Self { servers, timeout: Duration::from_secs(2), attempts: 2 }
    }
}

/// Why a query failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResolveFailure {
    /// No answer from any server in time.
    #[error("timeout")]
    Timeout,
    /// Every server answered with ICMP port unreachable or refused the TCP connection.
    #[error("unreachable")]
    Unreachable,
    /// The name could not be put into a query.
    #[error("bad name {0}")]
    BadName(String),
}

/// What the resolver wants done or reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResolverOutput {
    /// Send a UDP datagram.
    Transmit {
        /// Server.
        to: SocketAddr,
        /// DNS message.
        bytes: Vec<u8>,
    },
    /// Exchange one message over TCP and feed the answer back with
    /// [`Dns::handle_tcp_answer`].
    TcpExchange {
        /// Which query.
        token: QueryToken,
        /// Server.
        to: SocketAddr,
        /// DNS message, framed for TCP (RFC 1035 §4.2.2).
        framed: Vec<u8>,
    },
    /// A query got its answer (any rcode).
    Answer {
        /// Which query.
        token: QueryToken,
        /// The answer.
        msg: DnsMsg,
    },
    /// A query failed.
    Failed {
        /// Which query.
        token: QueryToken,
        /// Why.
        reason: ResolveFailure,
    },
}

impl ResolverOutput {
    /// What the owning engine passes on as is (`Ok`), or the outcome of one of its queries
    /// (`Err`), which it handles itself.
    pub fn into_io(
        self,
    ) -> Result<crate::io::Output, (QueryToken, Result<DnsMsg, ResolveFailure>)> {
        use crate::io::Output;
        match self {
            Self::Transmit { to, bytes } => {
                let summary = dns::transcript_line(&bytes);
                Ok(Output::Transmit { to, bytes, summary })
            }
            Self::TcpExchange { token, to, framed } => {
                let summary = dns::transcript_line(&framed[2..]);
                Ok(Output::TcpExchange { token, to, framed, summary })
            }
            Self::Answer { token, msg } => Err((token, Ok(msg))),
            Self::Failed { token, reason } => Err((token, Err(reason))),
        }
    }
}

#[derive(Debug)]
struct Pending {
    /// The [`Dns`] handle that asked.
    handle: u32,
    name: String,
    qtype: QType,
    id: u16,
    sent: u32,
    server: usize,
    /// Where the last transmission went.
    server_addr: Option<SocketAddr>,
    deadline: Time,
    tcp: bool,
    unreachable: u32,
}

/// What a client's engines share: every engine's DNS queries, the outputs waiting for each
/// engine instance ([`Dns`] handle), and the one counter every id is drawn from.
#[derive(Debug, Default)]
struct Table {
    pending: BTreeMap<QueryToken, Pending>,
    out: BTreeMap<u32, VecDeque<ResolverOutput>>,
    next_token: u32,
    next_handle: u32,
    /// Connection, stream and request ids: one allocator for every engine (issue 15), so an
    /// input for an engine instance that is gone can never reach the one that replaced it.
    next_id: u32,
}

impl Table {
    fn push(&mut self, handle: u32, o: ResolverOutput) {
        self.out.entry(handle).or_default().push_back(o);
    }

    fn mine(&self, handle: u32) -> impl Iterator<Item = (&QueryToken, &Pending)> {
        self.pending.iter().filter(move |(_, p)| p.handle == handle)
    }

    fn transmit(&mut self, cfg: &ResolverConfig, now: Time, token: QueryToken) {
        let Some(p) = self.pending.get_mut(&token) else { return };
        let handle = p.handle;
        match dns::build_query(p.id, &p.name, p.qtype) {
            Ok(bytes) => {
                p.server = (p.sent as usize) % cfg.servers.len();
                p.sent += 1;
                p.deadline = now + cfg.timeout;
                let to = cfg.servers[p.server];
                p.server_addr = Some(to);
                self.push(handle, ResolverOutput::Transmit { to, bytes });
            }
            Err(_) => {
                let name = p.name.clone();
                self.fail(token, ResolveFailure::BadName(name));
            }
        }
    }

    fn fail(&mut self, token: QueryToken, reason: ResolveFailure) {
        if let Some(p) = self.pending.remove(&token) {
            self.push(p.handle, ResolverOutput::Failed { token, reason });
        }
    }

    fn matches(p: &Pending, msg: &DnsMsg) -> bool {
        msg.is_response
            && msg.id == p.id
            && msg.question.as_ref().is_some_and(|(n, _)| n.eq_ignore_ascii_case(&p.name))
    }
}

/// The client's resolver: one query table shared by its engines (issue 15). The composite
/// keeps this; each engine gets a [`Dns`] handle tagged with its [`Owner`], and the composite
/// asks [`Resolver::claim`] which engine a datagram on the resolver socket is for.
#[derive(Clone, Debug, Default)]
pub struct Resolver(Rc<RefCell<Table>>);

impl Resolver {
    /// An empty resolver.
    pub fn new() -> Self {
        Self::default()
    }

    /// A handle for one engine instance. Its queries go to `cfg`'s servers; dropping it
    /// forgets them.
    pub fn handle(&self, owner: Owner, cfg: ResolverConfig) -> Dns {
        let handle = {
            let mut t = self.0.borrow_mut();
            t.next_handle += 1;
            t.next_handle
        };
        Dns { owner, handle, cfg, table: self.0.clone() }
    }

    /// The engine whose pending UDP query `bytes` (from `from`) answers: the same server,
    /// id and question (RFC 5452 §9.1). `None` for garbage, spoofs and late answers.
    pub fn claim(&self, from: SocketAddr, bytes: &[u8]) -> Option<Owner> {
        let msg = DnsMsg::parse(bytes).ok()?;
        let t = self.0.borrow();
        t.pending
            .iter()
            .find(|(_, p)| !p.tcp && p.server_addr == Some(from) && Table::matches(p, &msg))
            .map(|(tok, _)| tok.owner)
    }
}

/// One engine's handle on what the client's engines share: its view of the [`Resolver`] (a
/// sans-IO stub resolver) and the id allocator ([`Dns::conn_id`], [`Dns::http_id`]).
///
/// Polling order: after each `handle_*` call drain [`Dns::poll_output`], then sleep until
/// [`Dns::poll_timeout`] and call [`Dns::handle_timeout`].
#[derive(Debug)]
pub struct Dns {
    owner: Owner,
    handle: u32,
    cfg: ResolverConfig,
    table: Rc<RefCell<Table>>,
}

impl Drop for Dns {
    fn drop(&mut self) {
        // An engine that goes takes its queries with it: their answers are ignored.
        let mut t = self.table.borrow_mut();
        t.pending.retain(|_, p| p.handle != self.handle);
        t.out.remove(&self.handle);
    }
}

impl Dns {
    /// A new connection or stream id for this handle's engine, unique in the client.
    pub fn conn_id(&mut self) -> ConnId {
        ConnId::new(self.owner, self.next_id())
    }

    /// A new HTTP request id for this handle's engine, unique in the client.
    pub fn http_id(&mut self) -> HttpId {
        HttpId::new(self.owner, self.next_id())
    }

    fn next_id(&mut self) -> u32 {
        let mut t = self.table.borrow_mut();
        t.next_id += 1;
        t.next_id
    }

    /// A resolver of its own for `owner` (tests and engines used alone).
    pub fn standalone(owner: Owner, cfg: ResolverConfig) -> Self {
        Resolver::new().handle(owner, cfg)
    }

    /// The next outcome of one of the owner's queries, after moving the datagrams and TCP
    /// exchanges that come before it to `out` (they are the owner's outputs as they are).
    pub fn next_answer<O: From<crate::io::Output>>(
        &mut self,
        out: &mut VecDeque<O>,
    ) -> Option<(QueryToken, Result<DnsMsg, ResolveFailure>)> {
        while let Some(o) = self.poll_output() {
            match o.into_io() {
                Ok(io) => out.push_back(io.into()),
                Err(answer) => return Some(answer),
            }
        }
        None
    }

    /// Takes the inputs that belong to a resolver (datagrams, ICMP unreachables, TCP answers)
    /// and hands any other input back.
    pub fn take_input(&mut self, now: Time, input: crate::io::Input) -> Option<crate::io::Input> {
        use crate::io::Input;
        match input {
            Input::Datagram { from, bytes } => self.handle_datagram(now, from, &bytes),
            Input::Unreachable { from } => self.handle_unreachable(now, from),
            Input::TcpAnswer { token, bytes } => self.handle_tcp_answer(token, bytes.as_deref()),
            other => return Some(other),
        }
        None
    }

    /// Starts a query; `id` is the message id (from the seeded RNG).
    pub fn query(&mut self, now: Time, name: &str, qtype: QType, id: u16) -> QueryToken {
        let mut t = self.table.borrow_mut();
        t.next_token += 1;
        let token = QueryToken::new(self.owner, t.next_token);
        if self.cfg.servers.is_empty() {
            t.push(
                self.handle,
                ResolverOutput::Failed { token, reason: ResolveFailure::Unreachable },
            );
            return token;
        }
        let p = Pending {
            handle: self.handle,
            name: name.to_owned(),
            qtype,
            id,
            sent: 0,
            server: 0,
            server_addr: None,
            deadline: now,
            tcp: false,
            unreachable: 0,
        };
        t.pending.insert(token, p);
        t.transmit(&self.cfg, now, token);
        token
    }

    /// A datagram arrived on the resolver's socket.
    pub fn handle_datagram(&mut self, now: Time, from: SocketAddr, bytes: &[u8]) {
        // Garbage and spoofed answers are ignored: the real answer may still come.
        let Ok(msg) = DnsMsg::parse(bytes) else { return };
        let mut t = self.table.borrow_mut();
        let found = t.mine(self.handle).find(|(_, p)| {
            !p.tcp && self.cfg.servers.get(p.server) == Some(&from) && Table::matches(p, &msg)
        });
        let Some((&token, _)) = found else { return };
        if msg.truncated {
            let p = t.pending.get_mut(&token).expect("found above");
            p.tcp = true;
            p.deadline = now + self.cfg.timeout * 2;
            if let Some(framed) =
                dns::build_query(p.id, &p.name, p.qtype).ok().and_then(|q| dns::tcp_frame(&q))
            {
                let to = self.cfg.servers[p.server];
                t.push(self.handle, ResolverOutput::TcpExchange { token, to, framed });
            }
            return;
        }
        t.pending.remove(&token);
        t.push(self.handle, ResolverOutput::Answer { token, msg });
    }

    /// The server at `from` answered with ICMP port unreachable: try the next one now.
    pub fn handle_unreachable(&mut self, now: Time, from: SocketAddr) {
        let mut t = self.table.borrow_mut();
        let tokens: Vec<QueryToken> = t
            .mine(self.handle)
            .filter(|(_, p)| !p.tcp && self.cfg.servers.get(p.server) == Some(&from))
            .map(|(t, _)| *t)
            .collect();
        for tok in tokens {
            let p = t.pending.get_mut(&tok).expect("listed above");
            p.unreachable += 1;
            if p.sent >= self.cfg.attempts {
                let all_unreachable = p.unreachable >= p.sent;
                t.fail(
                    tok,
                    if all_unreachable {
                        ResolveFailure::Unreachable
                    } else {
                        ResolveFailure::Timeout
                    },
                );
            } else {
                t.transmit(&self.cfg, now, tok);
            }
        }
    }

    /// The TCP exchange for `token` finished with the answer bytes, or failed. Only a query
    /// of ours that went to TCP takes it, and an answer that is not to that query is left
    /// alone (it waits for its own, or its deadline).
    pub fn handle_tcp_answer(&mut self, token: QueryToken, answer: Option<&[u8]>) {
        let mut t = self.table.borrow_mut();
        let Some(p) = t.pending.get(&token).filter(|p| p.tcp && p.handle == self.handle) else {
            return;
        };
        match answer.map(DnsMsg::parse) {
            Some(Ok(msg)) if Table::matches(p, &msg) => {
                t.pending.remove(&token);
                t.push(self.handle, ResolverOutput::Answer { token, msg });
            }
            Some(Ok(_)) => {}
            _ => t.fail(token, ResolveFailure::Unreachable),
        }
    }

    /// Forgets a query (its answer, if any, will be ignored).
    pub fn cancel(&mut self, token: QueryToken) {
        let mut t = self.table.borrow_mut();
        if t.pending.get(&token).is_some_and(|p| p.handle == self.handle) {
            t.pending.remove(&token);
        }
    }

    /// Time passed; retransmit or fail queries whose deadline is due. Spurious calls no-op.
    pub fn handle_timeout(&mut self, now: Time) {
        let mut t = self.table.borrow_mut();
        let due: Vec<QueryToken> =
            t.mine(self.handle).filter(|(_, p)| p.deadline <= now).map(|(t, _)| *t).collect();
        for tok in due {
            let p = &t.pending[&tok];
            if p.tcp || p.sent >= self.cfg.attempts {
                t.fail(tok, ResolveFailure::Timeout);
            } else {
                t.transmit(&self.cfg, now, tok);
            }
        }
    }

    /// Next output, if any.
    pub fn poll_output(&mut self) -> Option<ResolverOutput> {
        self.table.borrow_mut().out.get_mut(&self.handle).and_then(crate::io::next_out)
    }

    /// When [`Dns::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.table.borrow().mine(self.handle).map(|(_, p)| p.deadline).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A response to `q` made by setting the QR bit (and TC) in place.
    fn answer_for(q: &[u8], truncated: bool) -> Vec<u8> {
        let mut r = q.to_vec();
        r[2] |= 0x80;
        if truncated {
            r[2] |= 0x02;
        }
        r
    }

    fn transmit(r: &mut Dns) -> (SocketAddr, Vec<u8>) {
        match r.poll_output() {
            Some(ResolverOutput::Transmit { to, bytes }) => (to, bytes),
            other => panic!("expected transmit, got {other:?}"),
        }
    }

    #[test]
    fn answer_from_the_server_asked_with_matching_id() {
        let mut r =
            Dns::standalone(Owner::Discovery, ResolverConfig::new(vec![sa("10.0.0.53:53")]));
        let tok = r.query(Time::ZERO, "example.com", QType::A, 0xbeef);
        let (to, q) = transmit(&mut r);
        assert_eq!(to, sa("10.0.0.53:53"));
        // Spoof from another address: ignored.
        r.handle_datagram(Time::ZERO, sa("10.6.6.6:53"), &answer_for(&q, false));
        assert_eq!(r.poll_output(), None);
        // Wrong id: ignored.
        let mut wrong = answer_for(&q, false);
        wrong[0] ^= 0xff;
        r.handle_datagram(Time::ZERO, to, &wrong);
        assert_eq!(r.poll_output(), None);
        r.handle_datagram(Time::ZERO, to, &answer_for(&q, false));
        assert!(
            matches!(r.poll_output(), Some(ResolverOutput::Answer { token, .. }) if token == tok)
        );
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn retransmits_then_times_out_rotating_servers() {
        let servers = vec![sa("10.0.0.1:53"), sa("10.0.0.2:53")];
        let mut r = Dns::standalone(Owner::Discovery, ResolverConfig::new(servers.clone()));
        let tok = r.query(Time::ZERO, "example.com", QType::Srv, 1);
        assert_eq!(transmit(&mut r).0, servers[0]);
        assert_eq!(r.poll_timeout(), Some(Duration::from_secs(2)));
        r.handle_timeout(Duration::from_secs(1)); // spurious: nothing
        assert_eq!(r.poll_output(), None);
        r.handle_timeout(Duration::from_secs(2));
        assert_eq!(transmit(&mut r).0, servers[1]);
        r.handle_timeout(Duration::from_secs(4));
        assert_eq!(
            r.poll_output(),
            Some(ResolverOutput::Failed { token: tok, reason: ResolveFailure::Timeout })
        );
    }

    #[test]
    fn truncated_answer_goes_to_tcp() {
        let mut r =
            Dns::standalone(Owner::Discovery, ResolverConfig::new(vec![sa("10.0.0.53:53")]));
        let tok = r.query(Time::ZERO, "example.com", QType::Srv, 9);
        let (to, q) = transmit(&mut r);
        r.handle_datagram(Time::ZERO, to, &answer_for(&q, true));
        let Some(ResolverOutput::TcpExchange { token, framed, .. }) = r.poll_output() else {
            panic!()
        };
        assert_eq!(token, tok);
        r.handle_tcp_answer(tok, Some(&answer_for(&framed[2..], false)));
        assert!(matches!(r.poll_output(), Some(ResolverOutput::Answer { .. })));
    }

    /// Issue 15's latent bug: the phone and the IM session resolve at once through the one
    /// resolver; the phone's answer comes truncated and goes to TCP. Each datagram is claimed
    /// by the engine whose query it answers, the TCP answer's token names the phone, and the
    /// IM session's lookup is untouched by either.
    #[test]
    fn one_resolver_routes_each_answer_to_the_engine_that_asked() {
        let server = sa("10.0.0.53:53");
        let shared = Resolver::new();
        let mut phone = shared.handle(Owner::Phone, ResolverConfig::new(vec![server]));
        let mut im = shared.handle(Owner::Im, ResolverConfig::new(vec![server]));
        let tp = phone.query(Time::ZERO, "cucm1.example.com", QType::A, 7);
        let ti = im.query(Time::ZERO, "imp1.example.com", QType::A, 8);
        assert_ne!(tp, ti);
        assert_eq!((tp.owner, ti.owner), (Owner::Phone, Owner::Im));
        let (_, qp) = transmit(&mut phone);
        let (_, qi) = transmit(&mut im);
        assert_eq!(shared.claim(server, &answer_for(&qp, true)), Some(Owner::Phone));
        assert_eq!(shared.claim(server, &answer_for(&qi, false)), Some(Owner::Im));
        assert_eq!(shared.claim(sa("10.6.6.6:53"), &answer_for(&qi, false)), None, "spoof");
        phone.handle_datagram(Time::ZERO, server, &answer_for(&qp, true));
        let Some(ResolverOutput::TcpExchange { token, framed, .. }) = phone.poll_output() else {
            panic!()
        };
        assert_eq!(token, tp);
        // The IM handle neither takes the phone's token nor fails on it.
        im.handle_tcp_answer(tp, None);
        assert_eq!(im.poll_output(), None, "the IM's lookup did not fail");
        phone.handle_tcp_answer(tp, Some(&answer_for(&framed[2..], false)));
        assert!(matches!(phone.poll_output(), Some(ResolverOutput::Answer { .. })));
        im.handle_datagram(Time::ZERO, server, &answer_for(&qi, false));
        assert!(
            matches!(im.poll_output(), Some(ResolverOutput::Answer { token, .. }) if token == ti)
        );
    }

    /// An engine that goes (sign-in replaced after a failover) takes its queries with it:
    /// no retransmission, no deadline, and its late answer is claimed by nobody.
    #[test]
    fn dropping_a_handle_forgets_its_queries() {
        let server = sa("10.0.0.53:53");
        let shared = Resolver::new();
        let mut old = shared.handle(Owner::SignIn, ResolverConfig::new(vec![server]));
        let mut new = shared.handle(Owner::SignIn, ResolverConfig::new(vec![server]));
        let _ = old.query(Time::ZERO, "cucm1.example.com", QType::A, 1);
        let (_, q) = transmit(&mut old);
        let _ = new.query(Time::ZERO, "cucm2.example.com", QType::A, 2);
        drop(old);
        assert_eq!(shared.claim(server, &answer_for(&q, false)), None);
        assert_eq!(new.poll_timeout(), Some(Duration::from_secs(2)), "the new one's query stays");
    }

    /// One id allocator for the client: a sign-in that replaced another never reuses the
    /// ids of the one before, so a late input for the old one cannot reach the new one.
    #[test]
    fn ids_are_unique_across_engine_instances() {
        let shared = Resolver::new();
        let mut old = shared.handle(Owner::SignIn, ResolverConfig::new(vec![]));
        let mut im = shared.handle(Owner::Im, ResolverConfig::new(vec![]));
        let a = old.http_id();
        let b = im.conn_id();
        drop(old);
        let mut new = shared.handle(Owner::SignIn, ResolverConfig::new(vec![]));
        let c = new.http_id();
        assert_eq!((a.owner, b.owner, c.owner), (Owner::SignIn, Owner::Im, Owner::SignIn));
        assert!(a.n != c.n && a.n != b.n && b.n != c.n, "{a} {b} {c}");
    }

    #[test]
    fn icmp_unreachable_moves_on_and_fails_fast() {
        let mut r =
            Dns::standalone(Owner::Discovery, ResolverConfig::new(vec![sa("10.0.0.53:53")]));
        let tok = r.query(Time::ZERO, "example.com", QType::A, 3);
        let (to, _) = transmit(&mut r);
        r.handle_unreachable(Time::ZERO, to);
        let (to, _) = transmit(&mut r);
        r.handle_unreachable(Time::ZERO, to);
        assert_eq!(
            r.poll_output(),
            Some(ResolverOutput::Failed { token: tok, reason: ResolveFailure::Unreachable })
        );
    }
}
