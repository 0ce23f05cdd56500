//! STUN Binding (RFC 5389) as the MRA softphone uses it (issue 17, Jabber 14 "STUN keepalive"):
//! a Binding request on the SIP connection to Expressway-E every 30 s, answered by a Binding
//! success response carrying XOR-MAPPED-ADDRESS; both with FINGERPRINT, which is what lets a
//! receiver tell STUN from SIP on the same connection (RFC 5389 §7.3, §15.5).
//!
//! Pure and bounded: [`decode`] reads one message off the front of a buffer or says why not;
//! nothing here panics on what a peer sends.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The magic cookie (RFC 5389 §6).
pub const MAGIC: u32 = 0x2112_A442;
/// Header length.
pub const HEADER: usize = 20;
/// Longest message accepted (a Binding needs far less; RFC 5389 messages fit a datagram).
pub const MAX_MESSAGE: usize = 548;
/// Binding request.
pub const BINDING_REQUEST: u16 = 0x0001;
/// Binding success response.
pub const BINDING_SUCCESS: u16 = 0x0101;
const XOR_MAPPED_ADDRESS: u16 = 0x0020;
const FINGERPRINT: u16 = 0x8028;
const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// A Binding request or success response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    /// Request or success response.
    pub kind: u16,
    /// The transaction id (the response echoes the request's).
    pub txid: [u8; 12],
    /// The response's XOR-MAPPED-ADDRESS: where the server saw the request come from.
    pub mapped: Option<SocketAddr>,
}

/// Why bytes are not a STUN message this code takes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    /// The first two bits are not zero, or the cookie is wrong: not STUN.
    #[error("not a STUN message")]
    NotStun,
    /// Longer than [`MAX_MESSAGE`], or a length that is not a multiple of 4.
    #[error("bad STUN length {0}")]
    BadLength(usize),
    /// An attribute runs past the message.
    #[error("STUN attribute cut short")]
    Truncated,
    /// FINGERPRINT missing or wrong.
    #[error("STUN fingerprint missing or wrong")]
    Fingerprint,
    /// A type other than a Binding request or success response.
    #[error("STUN message type {0:#06x} not handled")]
    Type(u16),
}

/// CRC-32 (ISO-HDLC, as FINGERPRINT uses, RFC 5389 §15.5).
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 == 1 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 };
        }
    }
    !c
}

/// Whether `bytes` start like a STUN message (first two bits zero and the cookie): how a
/// receiver tells it from SIP, whose messages start with a letter.
pub fn looks_like_stun(bytes: &[u8]) -> bool {
    bytes.first().is_some_and(|b| b & 0xC0 == 0)
        && (bytes.len() < 8 || bytes[4..8] == MAGIC.to_be_bytes())
}

fn xor_addr(a: SocketAddr, txid: &[u8; 12]) -> Vec<u8> {
    let port = a.port() ^ (MAGIC >> 16) as u16;
    let mut v = Vec::with_capacity(20);
    match a.ip() {
        IpAddr::V4(ip) => {
            v.extend_from_slice(&[0, 1]);
            v.extend_from_slice(&port.to_be_bytes());
            v.extend_from_slice(&(u32::from(ip) ^ MAGIC).to_be_bytes());
        }
        IpAddr::V6(ip) => {
            v.extend_from_slice(&[0, 2]);
            v.extend_from_slice(&port.to_be_bytes());
            let mut key = MAGIC.to_be_bytes().to_vec();
            key.extend_from_slice(txid);
            v.extend(ip.octets().iter().zip(key).map(|(a, k)| a ^ k));
        }
    }
    v
}

fn read_xor_addr(v: &[u8], txid: &[u8; 12]) -> Option<SocketAddr> {
    let port = u16::from_be_bytes([*v.get(2)?, *v.get(3)?]) ^ (MAGIC >> 16) as u16;
    match (v.get(1)?, v.len()) {
        (1, 8) => {
            let x = u32::from_be_bytes(v[4..8].try_into().ok()?) ^ MAGIC;
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(x)), port))
        }
        (2, 20) => {
            let mut key = MAGIC.to_be_bytes().to_vec();
            key.extend_from_slice(txid);
            let mut o = [0u8; 16];
            for (i, b) in o.iter_mut().enumerate() {
                *b = v[4 + i] ^ key[i];
            }
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), port))
        }
        _ => None,
    }
}

impl Binding {
    /// A Binding request with transaction id `txid`.
    pub fn request(txid: [u8; 12]) -> Self {
        Self { kind: BINDING_REQUEST, txid, mapped: None }
    }

    /// The success response to this request, seen from `from`.
    pub fn success(&self, from: SocketAddr) -> Self {
        Self { kind: BINDING_SUCCESS, txid: self.txid, mapped: Some(from) }
    }

    /// The message's bytes, FINGERPRINT last.
    pub fn encode(&self) -> Vec<u8> {
        let mut attrs = Vec::new();
        if let Some(a) = self.mapped {
            let v = xor_addr(a, &self.txid);
            attrs.extend_from_slice(&XOR_MAPPED_ADDRESS.to_be_bytes());
            attrs.extend_from_slice(&(v.len() as u16).to_be_bytes());
            attrs.extend_from_slice(&v);
        }
        let len = attrs.len() + 8;
        let mut m = Vec::with_capacity(HEADER + len);
        m.extend_from_slice(&self.kind.to_be_bytes());
        m.extend_from_slice(&(len as u16).to_be_bytes());
        m.extend_from_slice(&MAGIC.to_be_bytes());
        m.extend_from_slice(&self.txid);
        m.extend_from_slice(&attrs);
        let crc = crc32(&m) ^ FINGERPRINT_XOR;
        m.extend_from_slice(&FINGERPRINT.to_be_bytes());
        m.extend_from_slice(&4u16.to_be_bytes());
        m.extend_from_slice(&crc.to_be_bytes());
        m
    }
}

/// Reads one message off the front of `buf`: `Ok(None)` when more bytes are needed, else the
/// message and how many bytes it took.
pub fn decode(buf: &[u8]) -> Result<Option<(Binding, usize)>, StunError> {
    if !looks_like_stun(buf) {
        return Err(StunError::NotStun);
    }
    if buf.len() < HEADER {
        return Ok(None);
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    if len % 4 != 0 || HEADER + len > MAX_MESSAGE {
        return Err(StunError::BadLength(len));
    }
    if buf.len() < HEADER + len {
        return Ok(None);
    }
    let m = &buf[..HEADER + len];
    let kind = u16::from_be_bytes([m[0], m[1]]);
    let mut txid = [0u8; 12];
    txid.copy_from_slice(&m[8..20]);
    let mut mapped = None;
    let mut fingerprint_ok = false;
    let mut at = HEADER;
    while at < m.len() {
        let head = m.get(at..at + 4).ok_or(StunError::Truncated)?;
        let t = u16::from_be_bytes([head[0], head[1]]);
        let l = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let v = m.get(at + 4..at + 4 + l).ok_or(StunError::Truncated)?;
        match t {
            XOR_MAPPED_ADDRESS => mapped = read_xor_addr(v, &txid),
            FINGERPRINT => {
                // RFC 5389 §15.5: the last attribute, over everything before it (with the
                // header's length already counting it).
                let want = crc32(&m[..at]) ^ FINGERPRINT_XOR;
                fingerprint_ok = l == 4 && at + 8 == m.len() && v == want.to_be_bytes();
            }
            _ => {}
        }
        at += 4 + l.div_ceil(4) * 4;
    }
    if !fingerprint_ok {
        return Err(StunError::Fingerprint);
    }
    if kind != BINDING_REQUEST && kind != BINDING_SUCCESS {
        return Err(StunError::Type(kind));
    }
    Ok(Some((Binding { kind, txid, mapped }, m.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TXID: [u8; 12] = [0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae];

    #[test]
    fn crc32_check_value() {
        // The CRC catalogue's check value for CRC-32/ISO-HDLC.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn rfc5769_mapped_address_vectors() {
        // RFC 5769 §2.2/§2.3: 192.0.2.1:32853 is 0001 a147 e112a643 on the wire, and
        // 2001:db8:1234:5678:11:2233:4455:6677 port 32853 with the sample transaction id.
        let v4: SocketAddr = "192.0.2.1:32853".parse().unwrap();
        assert_eq!(xor_addr(v4, &TXID), [0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43]);
        assert_eq!(read_xor_addr(&xor_addr(v4, &TXID), &TXID), Some(v4));
        let v6: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853".parse().unwrap();
        let x = xor_addr(v6, &TXID);
        assert_eq!(&x[..8], [0x00, 0x02, 0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa]);
        assert_eq!(read_xor_addr(&x, &TXID), Some(v6));
    }

    #[test]
    fn request_and_response_round_trip_and_damage_is_refused() {
        let req = Binding::request(TXID);
        let bytes = req.encode();
        assert!(looks_like_stun(&bytes));
        assert!(!looks_like_stun(b"REGISTER sip:x SIP/2.0\r\n"));
        assert_eq!(decode(&bytes), Ok(Some((req, bytes.len()))));
        assert_eq!(decode(&bytes[..10]), Ok(None));
        let from: SocketAddr = "203.0.113.100:40000".parse().unwrap();
        let resp = req.success(from);
        let mut two = resp.encode();
        let n = two.len();
        two.extend_from_slice(b"OPTIONS");
        assert_eq!(decode(&two), Ok(Some((resp, n))));
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(decode(&bad), Err(StunError::Fingerprint));
        let mut long = bytes;
        long[2] = 0x7f;
        assert!(matches!(decode(&long), Err(StunError::BadLength(_))));
        assert_eq!(decode(b"INVITE"), Err(StunError::NotStun));
    }
}
