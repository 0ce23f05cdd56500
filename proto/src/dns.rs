//! DNS messages on hickory-proto: queries with caller-chosen ids (from the seeded RNG, never
//! the OS) and a validated view of responses.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// EDNS UDP payload size we advertise (DNS flag day 2020 value).
pub const EDNS_PAYLOAD: u16 = 1232;

/// Errors of the DNS codec, grouped by whose fault they are.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The caller asked for a name that is not a valid domain name.
    #[error("invalid domain name `{0}`")]
    BadName(String),
    /// The peer sent bytes that are not a DNS message.
    #[error("malformed DNS message: {0}")]
    Malformed(String),
    /// Encoding failed (a bug of ours).
    #[error("cannot encode DNS message: {0}")]
    Encode(String),
}

/// Record types the lab asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QType {
    /// IPv4 address.
    A,
    /// IPv6 address.
    Aaaa,
    /// Service location (RFC 2782).
    Srv,
}

impl QType {
    fn record_type(self) -> RecordType {
        match self {
            Self::A => RecordType::A,
            Self::Aaaa => RecordType::AAAA,
            Self::Srv => RecordType::SRV,
        }
    }
}

impl fmt::Display for QType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::A => "A",
            Self::Aaaa => "AAAA",
            Self::Srv => "SRV",
        })
    }
}

/// Parses a domain name, making it fully qualified.
pub fn parse_name(name: &str) -> Result<Name, DnsError> {
    let mut n = Name::from_ascii(name).map_err(|_| DnsError::BadName(name.to_owned()))?;
    n.set_fqdn(true);
    Ok(n)
}

/// Builds a recursive query for `name`/`qtype` with message id `id`.
pub fn build_query(id: u16, name: &str, qtype: QType) -> Result<Vec<u8>, DnsError> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(parse_name(name)?, qtype.record_type()));
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    m.set_edns(edns);
    m.to_vec().map_err(|e| DnsError::Encode(e.to_string()))
}

/// A response to `query` with its question and `answers` and `additionals` (`aa` set, the
/// query's EDNS record dropped), rcode `rcode`: what a scripted server answers in engine
/// tests. The records' names and targets are taken as written.
pub fn build_response(
    query: &[u8],
    rcode: u16,
    answers: &[Rr],
    additionals: &[Rr],
) -> Result<Vec<u8>, DnsError> {
    let q = Message::from_vec(query).map_err(|e| DnsError::Malformed(e.to_string()))?;
    let mut m = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
    m.metadata.recursion_desired = q.metadata.recursion_desired;
    m.metadata.authoritative = true;
    m.metadata.response_code = <hickory_proto::op::ResponseCode as From<u16>>::from(rcode);
    for question in q.queries {
        m.add_query(question);
    }
    let record = |r: &Rr| -> Result<Record, DnsError> {
        use hickory_proto::rr::rdata::{A, AAAA, CNAME, SRV};
        let data = match &r.data {
            Rdata::A(a) => RData::A(A(*a)),
            Rdata::Aaaa(a) => RData::AAAA(AAAA(*a)),
            Rdata::Cname(c) => RData::CNAME(CNAME(parse_name(c)?)),
            Rdata::Srv { priority, weight, port, target } => {
                RData::SRV(SRV::new(*priority, *weight, *port, parse_name(target)?))
            }
            Rdata::Other(t) => return Err(DnsError::Encode(format!("type {t} is not built"))),
        };
        Ok(Record::from_rdata(parse_name(&r.name)?, r.ttl, data))
    };
    for r in answers {
        m.add_answer(record(r)?);
    }
    for r in additionals {
        m.add_additional(record(r)?);
    }
    m.to_vec().map_err(|e| DnsError::Encode(e.to_string()))
}

/// A DNS message framed for TCP (RFC 1035 §4.2.2: a two-byte length, then the message);
/// `None` for a message longer than the length can say.
pub fn tcp_frame(msg: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(msg.len()).ok()?;
    let mut framed = Vec::with_capacity(msg.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(msg);
    Some(framed)
}

/// The transcript line of a DNS message: `DNS <summary>`, or why it does not parse.
pub fn transcript_line(msg: &[u8]) -> String {
    match DnsMsg::parse(msg) {
        Ok(m) => format!("DNS {}", m.summary()),
        Err(e) => format!("DNS ({e})"),
    }
}

/// The data of one resource record, as the lab uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rdata {
    /// IPv4 address.
    A(Ipv4Addr),
    /// IPv6 address.
    Aaaa(Ipv6Addr),
    /// Alias.
    Cname(String),
    /// Service location (RFC 2782).
    Srv {
        /// Lower is tried first.
        priority: u16,
        /// Relative weight among equal priorities.
        weight: u16,
        /// Port of the service.
        port: u16,
        /// Target host (FQDN, without the trailing dot); `.` means "no service".
        target: String,
    },
    /// Any other type, by number.
    Other(u16),
}

/// A resource record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rr {
    /// Owner name, without the trailing dot.
    pub name: String,
    /// Time to live.
    pub ttl: u32,
    /// Record data.
    pub data: Rdata,
}

impl fmt::Display for Rr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.data {
            Rdata::A(a) => write!(f, "{} A {a}", self.name),
            Rdata::Aaaa(a) => write!(f, "{} AAAA {a}", self.name),
            Rdata::Cname(c) => write!(f, "{} CNAME {c}", self.name),
            Rdata::Srv { priority, weight, port, target } => {
                write!(f, "{} SRV {priority} {weight} {port} {target}", self.name)
            }
            Rdata::Other(t) => write!(f, "{} TYPE{t}", self.name),
        }
    }
}

/// A validated DNS message (query or response).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsMsg {
    /// Message id.
    pub id: u16,
    /// Whether this is a response.
    pub is_response: bool,
    /// Response code (low 4 bits; RFC 1035 §4.1.1).
    pub rcode: u16,
    /// TC bit: the answer did not fit (RFC 1035 §4.2.1), retry over TCP.
    pub truncated: bool,
    /// AA bit.
    pub authoritative: bool,
    /// RA bit: the server offers recursion (RFC 1035 §4.1.1).
    pub recursion_available: bool,
    /// The question: name and type number.
    pub question: Option<(String, u16)>,
    /// Answer section.
    pub answers: Vec<Rr>,
    /// Additional section (without the OPT pseudo-record).
    pub additionals: Vec<Rr>,
}

fn plain(name: &Name) -> String {
    let s = name.to_ascii();
    match s.strip_suffix('.') {
        Some(t) if !t.is_empty() => t.to_owned(),
        _ => s,
    }
}

fn rr(r: &Record) -> Rr {
    let data = match &r.data {
        RData::A(a) => Rdata::A(a.0),
        RData::AAAA(a) => Rdata::Aaaa(a.0),
        RData::CNAME(c) => Rdata::Cname(plain(&c.0)),
        RData::SRV(s) => Rdata::Srv {
            priority: s.priority,
            weight: s.weight,
            port: s.port,
            target: plain(&s.target),
        },
        other => Rdata::Other(u16::from(other.record_type())),
    };
    Rr { name: plain(&r.name), ttl: r.ttl, data }
}

/// Response codes by their RFC 1035/6895 mnemonic, for transcripts.
pub fn rcode_name(rcode: u16) -> String {
    match rcode {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        n => format!("RCODE{n}"),
    }
}

/// Every field of a DNS message, one section per line as dig prints them (the ladder's
/// decoded view: issue 20). Over TCP the two-byte length in front is skipped.
pub fn decoded(bytes: &[u8]) -> String {
    let body = match bytes {
        [hi, lo, rest @ ..] if usize::from(u16::from_be_bytes([*hi, *lo])) == rest.len() => rest,
        _ => bytes,
    };
    match Message::from_vec(body) {
        Ok(m) => m.to_string(),
        Err(e) => format!("(not a DNS message: {e})"),
    }
}

/// Record type names, for transcripts.
pub fn type_name(t: u16) -> String {
    RecordType::from(t).to_string()
}

impl DnsMsg {
    /// Parses a message. Never panics on any input.
    pub fn parse(bytes: &[u8]) -> Result<Self, DnsError> {
        let m = Message::from_vec(bytes).map_err(|e| DnsError::Malformed(e.to_string()))?;
        Ok(Self {
            id: m.metadata.id,
            is_response: m.metadata.message_type == MessageType::Response,
            rcode: u16::from(m.metadata.response_code.low()),
            truncated: m.metadata.truncation,
            authoritative: m.metadata.authoritative,
            recursion_available: m.metadata.recursion_available,
            question: m.queries.first().map(|q| (plain(q.name()), u16::from(q.query_type()))),
            answers: m.answers.iter().map(rr).collect(),
            additionals: m
                .additionals
                .iter()
                .filter(|r| r.record_type() != RecordType::OPT)
                .map(rr)
                .collect(),
        })
    }

    /// The first IPv4 address in the answer section.
    pub fn first_ipv4(&self) -> Option<Ipv4Addr> {
        self.answers.iter().find_map(|r| match r.data {
            Rdata::A(a) => Some(a),
            _ => None,
        })
    }

    /// One-line summary for the transcript. Ids are left out: they are volatile.
    pub fn summary(&self) -> String {
        let q = self
            .question
            .as_ref()
            .map(|(n, t)| format!("{} {n}", type_name(*t)))
            .unwrap_or_else(|| "(no question)".into());
        if !self.is_response {
            return format!("query {q}");
        }
        let mut s = format!("response {q} {}", rcode_name(self.rcode));
        if self.authoritative {
            s.push_str(" aa");
        }
        if self.recursion_available {
            s.push_str(" ra");
        }
        if self.truncated {
            s.push_str(" tc");
        }
        if self.answers.is_empty() {
            s.push_str(" (no answers)");
        } else {
            let a: Vec<String> = self.answers.iter().map(|r| r.data_summary()).collect();
            s.push_str(": ");
            s.push_str(&a.join(", "));
        }
        // What a client may use without asking again (SRV targets' addresses as glue).
        if !self.additionals.is_empty() {
            let a: Vec<String> = self.additionals.iter().map(Rr::to_string).collect();
            s.push_str("; additional: ");
            s.push_str(&a.join(", "));
        }
        s
    }
}

impl Rr {
    /// The record's data without its owner name.
    pub fn data_summary(&self) -> String {
        match &self.data {
            Rdata::A(a) => a.to_string(),
            Rdata::Aaaa(a) => a.to_string(),
            Rdata::Cname(c) => format!("CNAME {c}"),
            Rdata::Srv { priority, weight, port, target } => {
                format!("{priority} {weight} {port} {target}")
            }
            Rdata::Other(t) => format!("TYPE{t}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_round_trips() {
        let q = build_query(0x1234, "_cisco-uds._tcp.example.com", QType::Srv).unwrap();
        let m = DnsMsg::parse(&q).unwrap();
        assert_eq!(m.id, 0x1234);
        assert!(!m.is_response);
        assert_eq!(m.question, Some(("_cisco-uds._tcp.example.com".into(), 33)));
        assert_eq!(m.summary(), "query SRV _cisco-uds._tcp.example.com");
    }

    #[test]
    fn bad_name_is_an_error() {
        assert!(matches!(build_query(1, "a..b", QType::A), Err(DnsError::BadName(_))));
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..600 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = DnsMsg::parse(&bytes);
        }
        // Truncations of a valid message, too.
        let q = build_query(7, "example.com", QType::A).unwrap();
        for i in 0..q.len() {
            let _ = DnsMsg::parse(&q[..i]);
        }
    }
}
