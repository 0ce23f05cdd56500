//! RTP (RFC 3550) packets and RFC 4733 telephone-events: the few synthetic media packets a
//! call puts on the wire (SPEC MEDIA2) and the DTMF digits carried in them.
//!
//! The lab carries no real media: payloads are codec-sized silence. What matters is what a
//! capture shows (RTP version 2, payload type, sequence, timestamp, SSRC, DSCP) and that a
//! telephone-event stream decodes back to its digits.

/// Fixed RTP header length (no CSRCs, no extension).
pub const HEADER: usize = 12;

/// One RTP packet, parsed or to be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rtp {
    /// Marker bit.
    pub marker: bool,
    /// Payload type (0–127).
    pub pt: u8,
    /// Sequence number.
    pub seq: u16,
    /// Timestamp.
    pub ts: u32,
    /// Synchronisation source.
    pub ssrc: u32,
    /// Payload (after any CSRCs, extension and padding are removed when parsing).
    pub payload: Vec<u8>,
}

/// Why bytes are not an RTP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtpError {
    /// Shorter than its header says.
    Truncated,
    /// Version is not 2.
    Version(u8),
    /// Padding longer than the payload.
    Padding,
}

impl std::fmt::Display for RtpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Truncated => f.write_str("truncated RTP packet"),
            Self::Version(v) => write!(f, "RTP version {v}, not 2"),
            Self::Padding => f.write_str("RTP padding longer than the packet"),
        }
    }
}

impl std::error::Error for RtpError {}

impl Rtp {
    /// The packet's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEADER + self.payload.len());
        b.push(0x80);
        b.push((u8::from(self.marker) << 7) | (self.pt & 0x7f));
        b.extend_from_slice(&self.seq.to_be_bytes());
        b.extend_from_slice(&self.ts.to_be_bytes());
        b.extend_from_slice(&self.ssrc.to_be_bytes());
        b.extend_from_slice(&self.payload);
        b
    }

    /// Parses a datagram (RFC 3550 §5.1), skipping CSRCs and a header extension.
    pub fn parse(b: &[u8]) -> Result<Self, RtpError> {
        if b.len() < HEADER {
            return Err(RtpError::Truncated);
        }
        let v = b[0] >> 6;
        if v != 2 {
            return Err(RtpError::Version(v));
        }
        let padding = b[0] & 0x20 != 0;
        let extension = b[0] & 0x10 != 0;
        let cc = usize::from(b[0] & 0x0f);
        let mut at = HEADER + 4 * cc;
        if extension {
            let len = b.get(at + 2..at + 4).ok_or(RtpError::Truncated)?;
            at += 4 + 4 * usize::from(u16::from_be_bytes([len[0], len[1]]));
        }
        if at > b.len() {
            return Err(RtpError::Truncated);
        }
        let mut end = b.len();
        if padding {
            let n = usize::from(b[end - 1]);
            if n == 0 || n > end - at {
                return Err(RtpError::Padding);
            }
            end -= n;
        }
        Ok(Self {
            marker: b[1] & 0x80 != 0,
            pt: b[1] & 0x7f,
            seq: u16::from_be_bytes([b[2], b[3]]),
            ts: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            ssrc: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
            payload: b[at..end].to_vec(),
        })
    }
}

/// An RFC 4733 §2.3 telephone-event payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code (0–9 digits, 10 `*`, 11 `#`, 12–15 A–D).
    pub event: u8,
    /// End bit.
    pub end: bool,
    /// Volume in −dBm0 (0–63).
    pub volume: u8,
    /// Duration in timestamp units.
    pub duration: u16,
}

impl TelephoneEvent {
    /// The four payload bytes.
    pub fn to_bytes(self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [self.event, (u8::from(self.end) << 7) | (self.volume & 0x3f), d[0], d[1]]
    }

    /// Reads a payload (at least four bytes; RFC 4733 allows redundant blocks after).
    pub fn parse(p: &[u8]) -> Option<Self> {
        let [event, flags, d0, d1, ..] = *p else { return None };
        Some(Self {
            event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3f,
            duration: u16::from_be_bytes([d0, d1]),
        })
    }
}

/// The RFC 4733 event code of a DTMF digit.
pub fn dtmf_event(digit: char) -> Option<u8> {
    match digit.to_ascii_uppercase() {
        d @ '0'..='9' => Some(d as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        d @ 'A'..='D' => Some(d as u8 - b'A' + 12),
        _ => None,
    }
}

/// The digit of an RFC 4733 DTMF event code.
pub fn dtmf_digit(event: u8) -> Option<char> {
    match event {
        0..=9 => Some(char::from(b'0' + event)),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + event - 12)),
        _ => None,
    }
}

/// Collects digits from a telephone-event stream: one digit per event timestamp, reported at
/// the first packet with the end bit (RFC 4733 §2.5.1.4: the end packet is sent three times;
/// the repeats are ignored).
#[derive(Clone, Debug, Default)]
pub struct DtmfReceiver {
    last_end: Option<u32>,
}

impl DtmfReceiver {
    /// Feeds one telephone-event packet; returns the digit it completes, if any.
    pub fn feed(&mut self, p: &Rtp) -> Option<char> {
        let e = TelephoneEvent::parse(&p.payload)?;
        if !e.end || self.last_end == Some(p.ts) {
            return None;
        }
        self.last_end = Some(p.ts);
        dtmf_digit(e.event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_skips_csrcs_extension_padding() {
        let p = Rtp {
            marker: true,
            pt: 101,
            seq: 7,
            ts: 1600,
            ssrc: 0xdead_beef,
            payload: vec![1, 2, 3],
        };
        assert_eq!(Rtp::parse(&p.to_bytes()), Ok(p.clone()));
        // One CSRC, a one-word extension, two bytes of padding.
        let mut b = vec![0xb1, 101];
        b.extend_from_slice(&p.to_bytes()[2..12]);
        b.extend_from_slice(&[0, 0, 0, 9]); // CSRC
        b.extend_from_slice(&[0xbe, 0xde, 0, 1, 0, 0, 0, 0]); // extension
        b.extend_from_slice(&[1, 2, 3, 0, 2]);
        let q = Rtp::parse(&b).expect("parses");
        assert_eq!(q.payload, vec![1, 2, 3]);
        assert_eq!(Rtp::parse(&b[..5]), Err(RtpError::Truncated));
        assert_eq!(Rtp::parse(&[0x40; 12]), Err(RtpError::Version(1)));
        let mut bad = p.to_bytes();
        bad[0] |= 0x20;
        *bad.last_mut().expect("payload") = 200;
        assert_eq!(Rtp::parse(&bad), Err(RtpError::Padding));
    }

    #[test]
    fn telephone_events_decode_to_digits_once() {
        for (d, e) in [('0', 0), ('9', 9), ('*', 10), ('#', 11), ('A', 12), ('d', 15)] {
            assert_eq!(dtmf_event(d), Some(e));
            assert_eq!(dtmf_digit(e), Some(d.to_ascii_uppercase()));
        }
        assert_eq!(dtmf_event('x'), None);
        let mut r = DtmfReceiver::default();
        let pkt = |end, dur, ts| Rtp {
            marker: false,
            pt: 101,
            seq: 0,
            ts,
            ssrc: 1,
            payload: TelephoneEvent { event: 11, end, volume: 10, duration: dur }
                .to_bytes()
                .to_vec(),
        };
        assert_eq!(r.feed(&pkt(false, 160, 800)), None);
        assert_eq!(r.feed(&pkt(true, 800, 800)), Some('#'));
        assert_eq!(r.feed(&pkt(true, 800, 800)), None, "end repeats are one digit");
        assert_eq!(
            r.feed(&pkt(true, 800, 2400)),
            Some('#'),
            "a new event timestamp is a new digit"
        );
        assert_eq!(TelephoneEvent::parse(&[1, 2]), None);
    }
}
