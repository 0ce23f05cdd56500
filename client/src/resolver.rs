//! A sans-IO DNS stub resolver.
//!
//! Ids come from the caller's seeded stream (hickory-resolver draws them from the OS, which
//! breaks replay). Answers are accepted only from the server asked, with the id and question
//! asked (RFC 5452 §9.1). A query is retransmitted after `timeout`, rotating through the
//! configured servers, `attempts` times in all (glibc's `options timeout:2 attempts:2` by
//! default); a truncated answer is retried over TCP (RFC 7766 §5).
//!
//! Polling order: after each `handle_*` call drain [`StubResolver::poll_output`], then sleep
//! until [`StubResolver::poll_timeout`] and call [`StubResolver::handle_timeout`].

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use uclab_proto::dns::{self, DnsMsg, QType};

use crate::Time;

/// Identifies one query of the resolver's caller.
pub type QueryToken = u32;

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
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResolveFailure {
    /// No answer from any server in time.
    Timeout,
    /// Every server answered with ICMP port unreachable or refused the TCP connection.
    Unreachable,
    /// The name could not be put into a query.
    BadName(String),
}

impl std::fmt::Display for ResolveFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Timeout => f.write_str("timeout"),
            Self::Unreachable => f.write_str("unreachable"),
            Self::BadName(n) => write!(f, "bad name {n}"),
        }
    }
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
    /// Exchange one message over TCP (2-byte length framing, RFC 1035 §4.2.2) and feed the
    /// answer back with [`StubResolver::handle_tcp_answer`].
    TcpExchange {
        /// Which query.
        token: QueryToken,
        /// Server.
        to: SocketAddr,
        /// DNS message, unframed.
        bytes: Vec<u8>,
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
            Self::Transmit { to, bytes } => Ok(Output::Transmit { to, bytes }),
            Self::TcpExchange { token, to, bytes } => Ok(Output::TcpExchange { token, to, bytes }),
            Self::Answer { token, msg } => Err((token, Ok(msg))),
            Self::Failed { token, reason } => Err((token, Err(reason))),
        }
    }
}

#[derive(Debug)]
struct Pending {
    name: String,
    qtype: QType,
    id: u16,
    sent: u32,
    server: usize,
    deadline: Time,
    tcp: bool,
    unreachable: u32,
}

/// The stub resolver engine.
#[derive(Debug)]
pub struct StubResolver {
    cfg: ResolverConfig,
    pending: BTreeMap<QueryToken, Pending>,
    out: VecDeque<ResolverOutput>,
    next_token: QueryToken,
}

impl StubResolver {
    /// A resolver with `cfg`.
    pub fn new(cfg: ResolverConfig) -> Self {
        Self { cfg, pending: BTreeMap::new(), out: VecDeque::new(), next_token: 1 }
    }

    /// The next outcome of one of the owner's queries, after moving the datagrams and TCP
    /// exchanges that come before it to `out` (they are the owner's outputs as they are).
    pub fn next_answer(
        &mut self,
        out: &mut VecDeque<crate::io::Output>,
    ) -> Option<(QueryToken, Result<DnsMsg, ResolveFailure>)> {
        while let Some(o) = self.poll_output() {
            match o.into_io() {
                Ok(io) => out.push_back(io),
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
        let token = self.next_token;
        self.next_token += 1;
        if self.cfg.servers.is_empty() {
            self.out
                .push_back(ResolverOutput::Failed { token, reason: ResolveFailure::Unreachable });
            return token;
        }
        let p = Pending {
            name: name.to_owned(),
            qtype,
            id,
            sent: 0,
            server: 0,
            deadline: now,
            tcp: false,
            unreachable: 0,
        };
        self.pending.insert(token, p);
        self.transmit(now, token);
        token
    }

    fn transmit(&mut self, now: Time, token: QueryToken) {
        let Some(p) = self.pending.get_mut(&token) else { return };
        match dns::build_query(p.id, &p.name, p.qtype) {
            Ok(bytes) => {
                p.server = (p.sent as usize) % self.cfg.servers.len();
                p.sent += 1;
                p.deadline = now + self.cfg.timeout;
                self.out
                    .push_back(ResolverOutput::Transmit { to: self.cfg.servers[p.server], bytes });
            }
            Err(_) => {
                let name = p.name.clone();
                self.fail(token, ResolveFailure::BadName(name));
            }
        }
    }

    fn fail(&mut self, token: QueryToken, reason: ResolveFailure) {
        self.pending.remove(&token);
        self.out.push_back(ResolverOutput::Failed { token, reason });
    }

    fn matches(p: &Pending, msg: &DnsMsg) -> bool {
        msg.is_response
            && msg.id == p.id
            && msg.question.as_ref().is_some_and(|(n, _)| n.eq_ignore_ascii_case(&p.name))
    }

    /// A datagram arrived on the resolver's socket.
    pub fn handle_datagram(&mut self, now: Time, from: SocketAddr, bytes: &[u8]) {
        // Garbage and spoofed answers are ignored: the real answer may still come.
        let Ok(msg) = DnsMsg::parse(bytes) else { return };
        let found = self.pending.iter().find(|(_, p)| {
            !p.tcp && self.cfg.servers.get(p.server) == Some(&from) && Self::matches(p, &msg)
        });
        let Some((&token, _)) = found else { return };
        if msg.truncated {
            let p = self.pending.get_mut(&token).expect("found above");
            p.tcp = true;
            p.deadline = now + self.cfg.timeout * 2;
            if let Ok(bytes) = dns::build_query(p.id, &p.name, p.qtype) {
                let to = self.cfg.servers[p.server];
                self.out.push_back(ResolverOutput::TcpExchange { token, to, bytes });
            }
            return;
        }
        self.pending.remove(&token);
        self.out.push_back(ResolverOutput::Answer { token, msg });
    }

    /// The server at `from` answered with ICMP port unreachable: try the next one now.
    pub fn handle_unreachable(&mut self, now: Time, from: SocketAddr) {
        let tokens: Vec<QueryToken> = self
            .pending
            .iter()
            .filter(|(_, p)| !p.tcp && self.cfg.servers.get(p.server) == Some(&from))
            .map(|(t, _)| *t)
            .collect();
        for t in tokens {
            let p = self.pending.get_mut(&t).expect("listed above");
            p.unreachable += 1;
            if p.sent >= self.cfg.attempts {
                let all_unreachable = p.unreachable >= p.sent;
                self.fail(
                    t,
                    if all_unreachable {
                        ResolveFailure::Unreachable
                    } else {
                        ResolveFailure::Timeout
                    },
                );
            } else {
                self.transmit(now, t);
            }
        }
    }

    /// The TCP exchange for `token` finished with the answer bytes, or failed.
    ///
    /// The client's engines each have a resolver, and the composite hands every TCP answer to
    /// all of them, so a token can be another engine's (issue 15): only a query of ours that
    /// went to TCP takes it, and an answer that is not to that query is left alone.
    pub fn handle_tcp_answer(&mut self, token: QueryToken, answer: Option<&[u8]>) {
        let Some(p) = self.pending.get(&token).filter(|p| p.tcp) else { return };
        match answer.map(DnsMsg::parse) {
            Some(Ok(msg)) if Self::matches(p, &msg) => {
                self.pending.remove(&token);
                self.out.push_back(ResolverOutput::Answer { token, msg });
            }
            // Another query's answer: ours waits for its own (or its deadline).
            Some(Ok(_)) => {}
            _ => self.fail(token, ResolveFailure::Unreachable),
        }
    }

    /// Forgets a query (its answer, if any, will be ignored).
    pub fn cancel(&mut self, token: QueryToken) {
        self.pending.remove(&token);
    }

    /// Time passed; retransmit or fail queries whose deadline is due. Spurious calls no-op.
    pub fn handle_timeout(&mut self, now: Time) {
        let due: Vec<QueryToken> =
            self.pending.iter().filter(|(_, p)| p.deadline <= now).map(|(t, _)| *t).collect();
        for t in due {
            let p = &self.pending[&t];
            if p.tcp || p.sent >= self.cfg.attempts {
                self.fail(t, ResolveFailure::Timeout);
            } else {
                self.transmit(now, t);
            }
        }
    }

    /// Next output, if any.
    pub fn poll_output(&mut self) -> Option<ResolverOutput> {
        self.out.pop_front()
    }

    /// When [`StubResolver::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.pending.values().map(|p| p.deadline).min()
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

    fn transmit(r: &mut StubResolver) -> (SocketAddr, Vec<u8>) {
        match r.poll_output() {
            Some(ResolverOutput::Transmit { to, bytes }) => (to, bytes),
            other => panic!("expected transmit, got {other:?}"),
        }
    }

    #[test]
    fn answer_from_the_server_asked_with_matching_id() {
        let mut r = StubResolver::new(ResolverConfig::new(vec![sa("10.0.0.53:53")]));
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
        let mut r = StubResolver::new(ResolverConfig::new(servers.clone()));
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
        let mut r = StubResolver::new(ResolverConfig::new(vec![sa("10.0.0.53:53")]));
        let tok = r.query(Time::ZERO, "example.com", QType::Srv, 9);
        let (to, q) = transmit(&mut r);
        r.handle_datagram(Time::ZERO, to, &answer_for(&q, true));
        let Some(ResolverOutput::TcpExchange { token, bytes, .. }) = r.poll_output() else {
            panic!()
        };
        assert_eq!(token, tok);
        r.handle_tcp_answer(tok, Some(&answer_for(&bytes, false)));
        assert!(matches!(r.poll_output(), Some(ResolverOutput::Answer { .. })));
    }

    /// Issue 15's latent bug: two engines' resolvers both use token 1; one's answer comes
    /// truncated and goes to TCP; the TCP answer (handed to every engine) must not fail the
    /// other's unrelated lookup.
    #[test]
    fn a_tcp_answer_for_another_resolvers_token_leaves_ours_alone() {
        let server = sa("10.0.0.53:53");
        let mut phone = StubResolver::new(ResolverConfig::new(vec![server]));
        let mut im = StubResolver::new(ResolverConfig::new(vec![server]));
        let tp = phone.query(Time::ZERO, "cucm1.example.com", QType::A, 7);
        let ti = im.query(Time::ZERO, "imp1.example.com", QType::A, 8);
        assert_eq!(tp, ti, "the same token in both");
        let (_, qp) = transmit(&mut phone);
        let (_, qi) = transmit(&mut im);
        phone.handle_datagram(Time::ZERO, server, &answer_for(&qp, true));
        let Some(ResolverOutput::TcpExchange { bytes, .. }) = phone.poll_output() else { panic!() };
        let tcp = answer_for(&bytes, false);
        // Both get the TCP answer; the IM's UDP query is untouched and still answered later.
        phone.handle_tcp_answer(tp, Some(&tcp));
        im.handle_tcp_answer(ti, Some(&tcp));
        im.handle_tcp_answer(ti, None);
        assert!(matches!(phone.poll_output(), Some(ResolverOutput::Answer { .. })));
        assert_eq!(im.poll_output(), None, "the IM's lookup did not fail");
        im.handle_datagram(Time::ZERO, server, &answer_for(&qi, false));
        assert!(
            matches!(im.poll_output(), Some(ResolverOutput::Answer { token, .. }) if token == ti)
        );
    }

    #[test]
    fn icmp_unreachable_moves_on_and_fails_fast() {
        let mut r = StubResolver::new(ResolverConfig::new(vec![sa("10.0.0.53:53")]));
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
