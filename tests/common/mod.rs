//! Reads a capture back with pcap-file and etherparse and checks what a dissector would.

// Each integration-test crate includes this module and uses only part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use pcap_file::pcapng::{Block, PcapNgReader};

type Flow = (SocketAddrV4, SocketAddrV4);

#[derive(Default)]
struct Dir {
    next_seq: Option<u32>,
    /// The sequence number of a SYN not yet answered: its retransmissions repeat it, as a
    /// kernel's do (issue 14).
    pending_syn: Option<u32>,
}

/// Panics if any cleartext TCP/UDP payload of the capture contains one of `secrets` (TLS
/// records are ciphertext, so only what travels outside TLS can match).
pub(crate) fn check_no_secrets(name: &str, bytes: &[u8], secrets: &[String]) {
    let index = SecretIndex::new(secrets);
    let mut r = PcapNgReader::new(bytes).unwrap_or_else(|e| panic!("{name}: not pcapng: {e}"));
    let mut n = 0;
    while let Some(block) = r.next_block() {
        let Ok(Block::EnhancedPacket(p)) = block else { continue };
        n += 1;
        let Ok(pkt) = SlicedPacket::from_ethernet(&p.data) else { continue };
        let payload = match &pkt.transport {
            Some(TransportSlice::Tcp(t)) => t.payload(),
            Some(TransportSlice::Udp(u)) => u.payload(),
            _ => continue,
        };
        if let Some(s) = index.find(payload) {
            panic!("{name}: frame {n} carries the secret `{s}` in clear text");
        }
    }
}

/// The TCP SYNs (without ACK) of the capture from an address `from` accepts to one `to`
/// accepts: connections opened in that direction, or tried (a dropped SYN is captured too).
pub(crate) fn syns_between(
    name: &str,
    bytes: &[u8],
    from: impl Fn(Ipv4Addr) -> bool,
    to: impl Fn(Ipv4Addr) -> bool,
) -> Vec<usize> {
    let mut r = PcapNgReader::new(bytes).unwrap_or_else(|e| panic!("{name}: not pcapng: {e}"));
    let (mut n, mut out) = (0, Vec::new());
    while let Some(block) = r.next_block() {
        let Ok(Block::EnhancedPacket(p)) = block else { continue };
        n += 1;
        let Ok(pkt) = SlicedPacket::from_ethernet(&p.data) else { continue };
        let (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Tcp(t))) = (&pkt.net, &pkt.transport)
        else {
            continue;
        };
        let (src, dst) = (ip.header().source_addr(), ip.header().destination_addr());
        if t.syn() && !t.ack() && from(src) && to(dst) {
            out.push(n);
        }
    }
    out
}

/// Secrets by their first bytes, so a payload is scanned once whatever their number (a load
/// scenario has thousands of users).
struct SecretIndex<'a> {
    by_prefix: BTreeMap<&'a [u8], Vec<&'a str>>,
    short: Vec<&'a str>,
}

const PREFIX: usize = 3;

impl<'a> SecretIndex<'a> {
    fn new(secrets: &'a [String]) -> Self {
        let mut by_prefix: BTreeMap<&[u8], Vec<&str>> = BTreeMap::new();
        let mut short = Vec::new();
        for s in secrets.iter().filter(|s| !s.is_empty()) {
            if s.len() >= PREFIX {
                by_prefix.entry(&s.as_bytes()[..PREFIX]).or_default().push(s);
            } else {
                short.push(s.as_str());
            }
        }
        Self { by_prefix, short }
    }

    fn find(&self, payload: &[u8]) -> Option<&'a str> {
        for (i, w) in payload.windows(PREFIX).enumerate() {
            if let Some(c) = self.by_prefix.get(w)
                && let Some(s) = c.iter().find(|s| payload[i..].starts_with(s.as_bytes()))
            {
                return Some(s);
            }
        }
        self.short.iter().copied().find(|s| payload.windows(s.len()).any(|w| w == s.as_bytes()))
    }
}

/// Panics with a clear message unless every frame is valid and TCP flows are continuous.
pub(crate) fn check_capture(name: &str, bytes: &[u8]) {
    let mut r = PcapNgReader::new(bytes).unwrap_or_else(|e| panic!("{name}: not pcapng: {e}"));
    let mut dirs: BTreeMap<Flow, Dir> = BTreeMap::new();
    let mut last_ts = None;
    let mut n = 0;
    while let Some(block) = r.next_block() {
        let block = block.unwrap_or_else(|e| panic!("{name}: bad block: {e}"));
        let Block::EnhancedPacket(p) = block else { continue };
        n += 1;
        if let Some(t) = last_ts {
            assert!(p.timestamp >= t, "{name}: frame {n} goes back in time");
        }
        last_ts = Some(p.timestamp);
        let pkt = SlicedPacket::from_ethernet(&p.data)
            .unwrap_or_else(|e| panic!("{name}: frame {n}: {e}"));
        let Some(NetSlice::Ipv4(ip)) = &pkt.net else { panic!("{name}: frame {n}: not IPv4") };
        let h = ip.header().to_header();
        assert_eq!(h.header_checksum, h.calc_header_checksum(), "{name}: frame {n}: IPv4 checksum");
        let (src, dst) = (Ipv4Addr::from(h.source), Ipv4Addr::from(h.destination));
        match &pkt.transport {
            Some(TransportSlice::Udp(u)) => {
                let hdr = u.to_header();
                let want = hdr.calc_checksum_ipv4(&h, u.payload()).expect("fits");
                assert_eq!(hdr.checksum, want, "{name}: frame {n}: UDP checksum");
            }
            Some(TransportSlice::Tcp(t)) => {
                let hdr = t.to_header();
                let want = hdr.calc_checksum_ipv4(&h, t.payload()).expect("fits");
                assert_eq!(hdr.checksum, want, "{name}: frame {n}: TCP checksum");
                let key = (
                    SocketAddrV4::new(src, hdr.source_port),
                    SocketAddrV4::new(dst, hdr.destination_port),
                );
                let len = t.payload().len() as u32 + u32::from(hdr.syn) + u32::from(hdr.fin);
                if hdr.rst {
                    dirs.remove(&key);
                    dirs.remove(&(key.1, key.0));
                    continue;
                }
                if !hdr.syn || hdr.ack {
                    // Anything but a bare SYN: the attempt was answered (or never made).
                    for k in [key, (key.1, key.0)] {
                        if let Some(d) = dirs.get_mut(&k) {
                            d.pending_syn = None;
                        }
                    }
                }
                let d = dirs.entry(key).or_default();
                if hdr.syn {
                    if !hdr.ack {
                        if let Some(first) = d.pending_syn {
                            assert_eq!(
                                hdr.sequence_number, first,
                                "{name}: frame {n}: a retransmitted SYN with a new sequence number"
                            );
                        }
                        d.pending_syn = Some(hdr.sequence_number);
                    }
                    // A SYN (or its retransmission) starts the direction afresh.
                    d.next_seq = Some(hdr.sequence_number.wrapping_add(1));
                    continue;
                }
                let expect =
                    d.next_seq.unwrap_or_else(|| panic!("{name}: frame {n}: segment before SYN"));
                assert_eq!(hdr.sequence_number, expect, "{name}: frame {n}: seq gap or overlap");
                d.next_seq = Some(expect.wrapping_add(len));
                if hdr.ack {
                    // Never acknowledge what the peer has not sent.
                    let peer = dirs.get(&(key.1, key.0)).and_then(|d| d.next_seq);
                    if let Some(peer_next) = peer {
                        assert!(
                            peer_next.wrapping_sub(hdr.acknowledgment_number) < 1 << 31,
                            "{name}: frame {n}: acks unseen data"
                        );
                    }
                }
            }
            Some(TransportSlice::Icmpv4(_)) => {}
            other => panic!("{name}: frame {n}: unexpected transport {other:?}"),
        }
    }
}

/// One packet of a capture as the MRA checks read it: addresses, DSCP, whether it is UDP, and
/// its payload.
pub(crate) struct Seen {
    pub(crate) src: SocketAddrV4,
    pub(crate) dst: SocketAddrV4,
    pub(crate) dscp: u8,
    pub(crate) udp: bool,
    pub(crate) payload: Vec<u8>,
}

/// Every IPv4 TCP or UDP packet of the capture, in order.
pub(crate) fn packets(name: &str, bytes: &[u8]) -> Vec<Seen> {
    let mut r = PcapNgReader::new(bytes).unwrap_or_else(|e| panic!("{name}: not pcapng: {e}"));
    let mut out = Vec::new();
    while let Some(block) = r.next_block() {
        let Ok(Block::EnhancedPacket(p)) = block else { continue };
        let Ok(pkt) = SlicedPacket::from_ethernet(&p.data) else { continue };
        let Some(NetSlice::Ipv4(ip)) = &pkt.net else { continue };
        let h = ip.header();
        let (s, d, dscp) = (h.source_addr(), h.destination_addr(), h.dcp().value());
        let (sp, dp, udp, payload) = match &pkt.transport {
            Some(TransportSlice::Tcp(t)) => {
                (t.source_port(), t.destination_port(), false, t.payload().to_vec())
            }
            Some(TransportSlice::Udp(u)) => {
                (u.source_port(), u.destination_port(), true, u.payload().to_vec())
            }
            _ => continue,
        };
        let (src, dst) = (SocketAddrV4::new(s, sp), SocketAddrV4::new(d, dp));
        out.push(Seen { src, dst, dscp, udp, payload });
    }
    out
}
