//! The DNS mock: hickory's `Catalog` of in-memory zones behind our own UDP and TCP loops
//! (hickory's `Server` takes only tokio sockets), plus forwarding done by us over the `Net`.
//!
//! SPEC SD10: an internal server is authoritative for its zones and forwards what it is not
//! authoritative for to the external server; the external server has no forwarder, so it never
//! forwards inward and answers REFUSED for names outside its zones (as an authoritative-only
//! server does). Split-brain is two servers authoritative for the same zone with different
//! records. Garbage gets FORMERR when it has a header (RFC 1035 §4.1.1), and is dropped
//! otherwise; the server keeps answering.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{LowerName, Name, RecordSet, RrKey};
use hickory_proto::serialize::binary::BinEncoder;
use hickory_proto::serialize::txt::Parser;
use hickory_server::net::NetError;
use hickory_server::net::runtime::{TokioRuntimeProvider, TokioTime};
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::rr::Record;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, MessageResponse, ZoneType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uclab_net::Net;

/// How long a forwarded query waits for the upstream answer before one retry.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);
/// Idle TCP connections are closed after this (RFC 7766 §6.2.3 recommends a few seconds).
const TCP_IDLE: Duration = Duration::from_secs(10);

/// One zone: its origin and zone-file text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneSource {
    /// Zone apex, e.g. `example.com`.
    pub origin: String,
    /// Zone file text (RFC 1035 §5). A SOA is added when missing.
    pub text: String,
}

/// Settings of a DNS node.
#[derive(Clone, Debug, Default)]
pub struct DnsConfig {
    /// Zones the server is authoritative for.
    pub zones: Vec<ZoneSource>,
    /// Where queries for other names are forwarded (internal servers only, SPEC SD10).
    pub forward: Option<SocketAddr>,
    /// Port to serve on (53).
    pub port: u16,
    /// Live mode: where each simulated service really listens. A records of these addresses
    /// are answered with the live address, and SRV records pointing at them with the live
    /// port, so a real client reaches the mocks and nothing else.
    pub live: BTreeMap<SocketAddr, SocketAddr>,
    /// Keep each distinct query's answer (issue 19, live mode): a query asked again skips
    /// the catalog. Off in simulation, where a run's interleaving must stay as it is: the
    /// catalog's lookups use up the server task's scheduling budget, so skipping them changes
    /// when the task yields to others (CAP1's order of events changed with it).
    pub answer_cache: bool,
}

/// Rewrites A and SRV records of simulated services to their live addresses.
fn rewrite_live(
    zones: &mut [(Name, BTreeMap<RrKey, RecordSet>)],
    live: &BTreeMap<SocketAddr, SocketAddr>,
) {
    use hickory_proto::rr::RData;
    use hickory_proto::rr::rdata::{A, SRV};
    if live.is_empty() {
        return;
    }
    // Names of simulated hosts, from the A records of every zone.
    let mut host_of: BTreeMap<Name, std::net::IpAddr> = BTreeMap::new();
    for (_, records) in zones.iter() {
        for set in records.values() {
            for r in set.records_without_rrsigs() {
                if let RData::A(a) = &r.data {
                    host_of.insert(r.name.clone(), std::net::IpAddr::V4(a.0));
                }
            }
        }
    }
    let live_ip = |ip| live.iter().find(|(sim, _)| sim.ip() == ip).map(|(_, l)| l.ip());
    for (_, records) in zones.iter_mut() {
        for set in records.values_mut() {
            let mut changed = Vec::new();
            for r in set.records_without_rrsigs() {
                let mut r = r.clone();
                match &r.data {
                    RData::A(a) => {
                        if let Some(std::net::IpAddr::V4(l)) = live_ip(std::net::IpAddr::V4(a.0)) {
                            r.data = RData::A(A(l));
                        }
                    }
                    RData::SRV(srv) => {
                        let sim = host_of.get(&srv.target).map(|ip| SocketAddr::new(*ip, srv.port));
                        if let Some(l) = sim.and_then(|sa| live.get(&sa)) {
                            r.data = RData::SRV(SRV::new(
                                srv.priority,
                                srv.weight,
                                l.port(),
                                srv.target.clone(),
                            ));
                        }
                    }
                    _ => {}
                }
                changed.push(r);
            }
            let (name, rtype, ttl) = (set.name().clone(), set.record_type(), set.ttl());
            let mut fresh = RecordSet::with_ttl(name, rtype, ttl);
            for r in changed {
                fresh.insert(r, 0);
            }
            *set = fresh;
        }
    }
}

/// A zone that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    /// The origin is not a domain name.
    #[error("bad zone origin `{0}`")]
    BadOrigin(String),
    /// The zone text does not parse; `line` is 1-based within the text when known.
    #[error("zone {origin}: {message}")]
    Parse {
        /// Zone origin.
        origin: String,
        /// What hickory's parser said.
        message: String,
        /// Line within the zone text, when the parser says.
        line: Option<usize>,
    },
}

/// Parses a zone, adding a SOA and NS at the apex when the text has none.
pub fn parse_zone(z: &ZoneSource) -> Result<(Name, BTreeMap<RrKey, RecordSet>), ZoneError> {
    let mut origin =
        Name::from_ascii(&z.origin).map_err(|_| ZoneError::BadOrigin(z.origin.clone()))?;
    origin.set_fqdn(true);
    let has_soa = z.text.lines().any(|l| {
        let l = l.split(';').next().unwrap_or("");
        l.split_whitespace().any(|w| w.eq_ignore_ascii_case("SOA"))
    });
    let text = if has_soa {
        z.text.clone()
    } else {
        // Leading lines are added, so parser line numbers are shifted back below.
        format!(
            "@ 3600 IN SOA ns.{o} hostmaster.{o} 1 3600 600 86400 300\n@ 3600 IN NS ns.{o}\n{}",
            z.text,
            o = origin
        )
    };
    Parser::new(text, None, Some(origin.clone())).parse().map_err(|e| ZoneError::Parse {
        origin: z.origin.clone(),
        message: e.to_string(),
        line: bad_line(&origin, &z.text),
    })
}

/// The first line of `text` that does not parse on its own (hickory's errors carry no line).
/// Zones with multi-line records (parentheses) or directives are not split: `None`.
fn bad_line(origin: &Name, text: &str) -> Option<usize> {
    if text.contains('(') || text.lines().any(|l| l.trim_start().starts_with('$')) {
        return None;
    }
    let soa = format!("@ 3600 IN SOA ns.{origin} hostmaster.{origin} 1 3600 600 86400 300\n");
    text.lines().enumerate().find_map(|(i, l)| {
        let l = l.split(';').next().unwrap_or("");
        if l.trim().is_empty() {
            return None;
        }
        let one = format!("{soa}{l}\n");
        Parser::new(one, None, Some(origin.clone())).parse().is_err().then_some(i + 1)
    })
}

/// The answering part of the DNS node, without sockets: testable on its own.
pub struct Authority {
    catalog: Catalog,
}

/// What [`Authority::answer`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Not ours: forward (if a forwarder is set).
    NotAuthoritative,
    /// Not even a DNS header: drop.
    Drop,
}

#[derive(Clone)]
struct Collect {
    out: Arc<Mutex<Option<Vec<u8>>>>,
    max: u16,
}

#[async_trait::async_trait]
impl ResponseHandler for Collect {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let mut bytes = Vec::with_capacity(512);
        let mut enc = BinEncoder::new(&mut bytes);
        enc.set_max_size(self.max);
        let info = response.destructive_emit(&mut enc)?;
        *self.out.lock().unwrap_or_else(|e| e.into_inner()) = Some(bytes);
        Ok(info)
    }
}

/// A FORMERR answer to bytes that carry at least a DNS header (RFC 1035 §4.1.1).
fn formerr(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.len() < 12 {
        return None;
    }
    if bytes[2] & 0x80 != 0 {
        // A response sent to us: never answer it (that would make loops).
        return None;
    }
    let mut r = vec![0u8; 12];
    r[..2].copy_from_slice(&bytes[..2]);
    r[2] = 0x80 | (bytes[2] & 0x79); // QR, opcode, RD kept
    r[3] = ResponseCode::FormErr.low();
    Some(r)
}

impl Authority {
    /// Builds the catalog from zones.
    pub fn new(zones: &[ZoneSource]) -> Result<Self, ZoneError> {
        Self::with_live(zones, &BTreeMap::new())
    }

    /// Builds the catalog from zones, with live-mode address rewriting (see [`DnsConfig::live`]).
    pub fn with_live(
        zones: &[ZoneSource],
        live: &BTreeMap<SocketAddr, SocketAddr>,
    ) -> Result<Self, ZoneError> {
        let mut catalog = Catalog::new();
        let mut parsed = zones.iter().map(parse_zone).collect::<Result<Vec<_>, _>>()?;
        rewrite_live(&mut parsed, live);
        for (z, (origin, records)) in zones.iter().zip(parsed) {
            let h = InMemoryZoneHandler::<TokioRuntimeProvider>::new(
                origin.clone(),
                records,
                ZoneType::Primary,
                AxfrPolicy::Deny,
            )
            .map_err(|message| ZoneError::Parse {
                origin: z.origin.clone(),
                message,
                line: None,
            })?;
            catalog.upsert(LowerName::new(&origin), vec![Arc::new(h)]);
        }
        Ok(Self { catalog })
    }

    /// Whether a query name falls in one of our zones.
    fn is_ours(&self, bytes: &[u8]) -> bool {
        let Ok(m) = Message::from_vec(bytes) else { return true };
        m.queries.first().is_none_or(|q| self.catalog.find(&LowerName::new(q.name())).is_some())
    }

    /// Answers one query received over `protocol` from `src`.
    pub async fn answer(
        &self,
        bytes: &[u8],
        src: SocketAddr,
        tcp: bool,
        may_forward: bool,
    ) -> Answer {
        let protocol = if tcp { Protocol::Tcp } else { Protocol::Udp };
        let Ok(req) = Request::from_bytes(bytes.to_vec(), src, protocol) else {
            return formerr(bytes).map_or(Answer::Drop, Answer::Reply);
        };
        if req.metadata.message_type != hickory_proto::op::MessageType::Query {
            return Answer::Drop;
        }
        if may_forward && !self.is_ours(bytes) {
            return Answer::NotAuthoritative;
        }
        let max = if tcp {
            u16::MAX
        } else {
            Message::from_vec(bytes)
                .ok()
                .and_then(|m| m.edns.map(|e| e.max_payload().max(512)))
                .unwrap_or(512)
        };
        let c = Collect { out: Arc::new(Mutex::new(None)), max };
        self.catalog.handle_request::<_, TokioTime>(&req, c.clone()).await;
        let mut out = c.out.lock().unwrap_or_else(|e| e.into_inner()).take();
        // RFC 1035 §4.1.1: RA says whether the server offers recursion, which one that
        // forwards for its clients does (issue 14: dig warned "recursion requested but not
        // available").
        if may_forward && let Some(r) = out.as_mut().filter(|r| r.len() >= 12) {
            r[3] |= 0x80;
        }
        out.map_or(Answer::Drop, Answer::Reply)
    }
}

fn log<N: Net>(net: &N, from: SocketAddr, to: SocketAddr, transport: &str, bytes: &[u8]) {
    let text = uclab_proto::dns::transcript_line(bytes);
    net.transcript().message(net.now(), from, to, transport, &text);
}

/// Serves DNS over UDP and TCP on `net` until the node stops.
pub async fn serve<N: Net + Clone + 'static>(net: N, cfg: DnsConfig) -> io::Result<()> {
    let auth = Rc::new(Authority::with_live(&cfg.zones, &cfg.live).map_err(io::Error::other)?);
    let net = Rc::new(net);
    let udp = Rc::new(net.bind_udp(cfg.port).await?);
    let tcp = net.listen(cfg.port).await?;
    let forward = cfg.forward;
    {
        let (auth, net) = (auth.clone(), net.clone());
        // Issue 13: bounded connections per listener and per peer address.
        let limit = crate::limits::ConnLimit::new(
            crate::limits::STREAM_CONNECTIONS,
            crate::limits::PER_PEER,
        );
        tokio::task::spawn_local(async move {
            loop {
                let mut c = crate::limits::next_conn(&tcp).await;
                let Some(slot) = limit.admit(c.peer_addr().ip()) else { continue };
                let (auth, net) = (auth.clone(), net.clone());
                tokio::task::spawn_local(async move {
                    let _slot = slot;
                    let peer = c.peer_addr();
                    let local = c.local_addr();
                    loop {
                        let Ok(Ok(len)) = uclab_net::time::timeout(TCP_IDLE, c.read_u16()).await
                        else {
                            break;
                        };
                        // The body has the same deadline: a client that sends a length and
                        // then stalls (slowloris) is cut off too.
                        let mut q = vec![0u8; usize::from(len)];
                        if !matches!(
                            uclab_net::time::timeout(TCP_IDLE, c.read_exact(&mut q)).await,
                            Ok(Ok(_))
                        ) {
                            break;
                        }
                        let reply = match auth.answer(&q, peer, true, forward.is_some()).await {
                            Answer::Reply(r) => r,
                            Answer::NotAuthoritative => {
                                match forward_query(&*net, forward, &q).await {
                                    Some(r) => r,
                                    None => servfail(&q),
                                }
                            }
                            Answer::Drop => break,
                        };
                        log(&*net, local, peer, "tcp", &reply);
                        // A reply too long for the length field ends the connection.
                        let Some(framed) = uclab_proto::dns::tcp_frame(&reply) else { break };
                        if c.write_all(&framed).await.is_err() {
                            break;
                        }
                    }
                    let _ = c.shutdown().await;
                });
            }
        });
    }
    let mut buf = vec![0u8; 65535];
    // Issue 19 (live mode, `answer_cache`): the zones never change while the node runs, so
    // the answer to a query depends on its bytes alone (the id aside): answers and their
    // transcript lines are kept, and a query asked again skips parsing, the catalog and
    // encoding. Outputs are the same bytes.
    let mut cache: BTreeMap<Vec<u8>, (Vec<u8>, String)> = BTreeMap::new();
    let mut reply = Vec::new();
    loop {
        let Ok((n, src)) = udp.recv_from(&mut buf).await else { continue };
        if n >= 12
            && let Some((r, line)) = cache.get(&buf[2..n])
        {
            reply.clear();
            reply.extend_from_slice(&buf[..2]);
            reply.extend_from_slice(&r[2..]);
            net.transcript().message(net.now(), udp.local_addr(), src, "udp", line);
            let _ = udp.send_to(&reply, src).await;
            continue;
        }
        let q = buf[..n].to_vec();
        match auth.answer(&q, src, false, forward.is_some()).await {
            Answer::Reply(r) => {
                let line = uclab_proto::dns::transcript_line(&r);
                net.transcript().message(net.now(), udp.local_addr(), src, "udp", &line);
                let _ = udp.send_to(&r, src).await;
                if cfg.answer_cache && n >= 12 && r.len() >= 12 && cache.len() < ANSWER_CACHE {
                    cache.insert(q[2..].to_vec(), (r, line));
                }
            }
            Answer::NotAuthoritative => {
                // Forward concurrently: a slow upstream must not stall other clients.
                let (net, udp) = (net.clone(), udp.clone());
                tokio::task::spawn_local(async move {
                    let r = forward_query(&*net, forward, &q).await.unwrap_or_else(|| servfail(&q));
                    log(&*net, udp.local_addr(), src, "udp", &r);
                    let _ = udp.send_to(&r, src).await;
                });
            }
            Answer::Drop => {}
        }
    }
}

/// Distinct queries whose answers a DNS node keeps (a lab asks a few dozen names; a flood of
/// distinct names is answered, just not kept).
const ANSWER_CACHE: usize = 4_096;

fn servfail(q: &[u8]) -> Vec<u8> {
    let mut r = formerr(q).unwrap_or_default();
    if r.len() == 12 {
        r[3] = ResponseCode::ServFail.low();
    }
    r
}

/// Forwards `q` upstream with a fresh id from the seeded RNG; returns the answer with the
/// client's id and RA set, or `None` when the upstream does not answer.
async fn forward_query<N: Net>(net: &N, upstream: Option<SocketAddr>, q: &[u8]) -> Option<Vec<u8>> {
    let upstream = upstream?;
    if q.len() < 12 {
        return None;
    }
    let sock = net.bind_udp(0).await.ok()?;
    let id = net.rng().next_u16();
    let mut fq = q.to_vec();
    fq[..2].copy_from_slice(&id.to_be_bytes());
    let mut buf = vec![0u8; 65535];
    for _ in 0..2 {
        log(net, sock.local_addr(), upstream, "udp", &fq);
        if sock.send_to(&fq, upstream).await.is_err() {
            return None;
        }
        // One deadline for this attempt, on the node's clock, whatever else arrives meanwhile.
        let deadline = net.now() + FORWARD_TIMEOUT;
        loop {
            let left = deadline.saturating_sub(net.now());
            match uclab_net::time::timeout(left, sock.recv_from(&mut buf)).await {
                Ok(Ok((n, from)))
                    if from == upstream && n >= 12 && buf[..2] == id.to_be_bytes() =>
                {
                    let mut r = buf[..n].to_vec();
                    r[..2].copy_from_slice(&q[..2]);
                    r[3] |= 0x80; // RA: we recursed on the client's behalf
                    // AA off: this server is not authoritative for what it relays (RFC 1035
                    // §4.1.1, RFC 2181 §6.1), whatever the upstream said.
                    r[2] &= !0x04;
                    return Some(r);
                }
                Ok(Ok(_)) => continue, // not our answer
                Ok(Err(_)) | Err(_) => break,
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use uclab_proto::dns::{DnsMsg, QType, Rdata, build_query};

    const ZONE: &str = "\
_cisco-uds._tcp 3600 IN SRV 1 5 8443 cucm1
_cisco-uds._tcp 3600 IN SRV 2 20 8443 cucm2
cucm1 3600 IN A 10.1.0.11
cucm2 3600 IN A 10.1.0.12
";

    fn auth() -> Authority {
        Authority::new(&[ZoneSource { origin: "example.com".into(), text: ZONE.into() }]).unwrap()
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap()
    }

    fn src() -> SocketAddr {
        "10.1.0.10:50000".parse().unwrap()
    }

    #[test]
    fn srv_answer_with_glue() {
        let q = build_query(42, "_cisco-uds._tcp.example.com", QType::Srv).unwrap();
        let Answer::Reply(r) = rt().block_on(auth().answer(&q, src(), false, false)) else {
            panic!()
        };
        let m = DnsMsg::parse(&r).unwrap();
        assert_eq!(m.id, 42);
        assert!(m.authoritative);
        assert_eq!(m.answers.len(), 2);
        assert!(m.answers.iter().any(
            |a| matches!(&a.data, Rdata::Srv { target, .. } if target == "cucm1.example.com")
        ));
    }

    /// Issue 14: RA only from a server that recurses (forwards) for its clients; the glue
    /// shows in the transcript's summary.
    #[test]
    fn recursion_available_only_where_offered_and_glue_summarised() {
        let q = build_query(42, "_cisco-uds._tcp.example.com", QType::Srv).unwrap();
        let ask = |fwd| match rt().block_on(auth().answer(&q, src(), false, fwd)) {
            Answer::Reply(r) => DnsMsg::parse(&r).unwrap(),
            other => panic!("{other:?}"),
        };
        let (own, fwd) = (ask(false), ask(true));
        assert!(own.authoritative && !own.recursion_available, "authoritative-only server");
        assert!(fwd.authoritative && fwd.recursion_available, "a server that forwards");
        let s = fwd.summary();
        assert!(s.contains("NOERROR aa ra: "), "{s}");
        assert!(s.contains("; additional: cucm1.example.com A 10.1.0.11"), "{s}");
    }

    #[test]
    fn other_domain_not_ours_forwards_or_refuses() {
        let q = build_query(1, "loginp.webexconnect.com", QType::A).unwrap();
        assert_eq!(rt().block_on(auth().answer(&q, src(), false, true)), Answer::NotAuthoritative);
        let Answer::Reply(r) = rt().block_on(auth().answer(&q, src(), false, false)) else {
            panic!()
        };
        assert_eq!(uclab_proto::dns::rcode_name(DnsMsg::parse(&r).unwrap().rcode), "REFUSED");
    }

    #[test]
    fn nxdomain_inside_our_zone() {
        let q = build_query(1, "nope.example.com", QType::A).unwrap();
        let Answer::Reply(r) = rt().block_on(auth().answer(&q, src(), false, true)) else {
            panic!()
        };
        assert_eq!(uclab_proto::dns::rcode_name(DnsMsg::parse(&r).unwrap().rcode), "NXDOMAIN");
    }

    #[test]
    fn garbage_gets_formerr_or_is_dropped() {
        let a = auth();
        let rt = rt();
        assert_eq!(rt.block_on(a.answer(b"xx", src(), false, false)), Answer::Drop);
        let mut junk = vec![0xAB, 0xCD, 0x01, 0x00];
        junk.extend_from_slice(&[0xff; 20]);
        let Answer::Reply(r) = rt.block_on(a.answer(&junk, src(), false, false)) else { panic!() };
        assert_eq!(&r[..2], &[0xAB, 0xCD]);
        assert_eq!(r[3] & 0x0f, 1, "FORMERR");
        // Randomised garbage never panics.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for len in 0..400 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = rt.block_on(a.answer(&bytes, src(), false, true));
        }
    }

    #[test]
    fn live_mode_rewrites_service_addresses_and_ports() {
        let live: BTreeMap<SocketAddr, SocketAddr> =
            [("10.1.0.11:8443".parse().unwrap(), "127.0.0.1:40011".parse().unwrap())].into();
        let zones = [ZoneSource { origin: "example.com".into(), text: ZONE.into() }];
        let a = Authority::with_live(&zones, &live).unwrap();
        let q = build_query(1, "_cisco-uds._tcp.example.com", QType::Srv).unwrap();
        let Answer::Reply(r) = rt().block_on(a.answer(&q, src(), false, false)) else { panic!() };
        let m = DnsMsg::parse(&r).unwrap();
        let srv: Vec<String> = m.answers.iter().map(|a| a.data_summary()).collect();
        assert!(srv.contains(&"1 5 40011 cucm1.example.com".to_string()), "{srv:?}");
        // cucm2 has no live service: untouched.
        assert!(srv.contains(&"2 20 8443 cucm2.example.com".to_string()), "{srv:?}");
        let q = build_query(2, "cucm1.example.com", QType::A).unwrap();
        let Answer::Reply(r) = rt().block_on(a.answer(&q, src(), false, false)) else { panic!() };
        assert_eq!(DnsMsg::parse(&r).unwrap().answers[0].data_summary(), "127.0.0.1");
    }

    #[test]
    fn bad_zone_text_is_reported() {
        let z = ZoneSource { origin: "example.com".into(), text: "www IN A not-an-ip\n".into() };
        assert!(matches!(Authority::new(&[z]), Err(ZoneError::Parse { .. })));
    }
}
