//! The softphone's SDP (RFC 4566, RFC 3264): the offer of the MEDIA3 codecs, the answer to an
//! offer, the MEDIA1 port ranges, and the view of the peer's SDP a call needs (read with
//! [`uclab_proto::sdp`], the parser the call manager's bridge uses too).

use std::net::Ipv4Addr;

use uclab_proto::sdp::Sdp;

use super::PT_H264;

/// The peer's media as its SDP gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct RemoteSdp {
    pub(super) ip: Ipv4Addr,
    /// Audio port and payload types, in the peer's order of preference.
    pub(super) audio: Option<(u16, Vec<u8>)>,
    pub(super) video: Option<u16>,
    /// The peer's telephone-event payload type.
    pub(super) dtmf: Option<u8>,
}

/// The peer's media from an SDP body (RFC 4566): the first `c=` address, the first active
/// `m=audio` port and formats and `m=video` port (0 is a refused stream; RFC 3264 §6: the
/// answer takes the first active stream of each kind), the telephone-event `rtpmap` of an
/// audio section.
pub(super) fn remote_sdp(body: &[u8]) -> Option<RemoteSdp> {
    let sdp = Sdp::parse(std::str::from_utf8(body).ok()?);
    let ip = sdp.all_addrs().find_map(|a| a.parse::<Ipv4Addr>().ok())?;
    let first = |kind: &str| sdp.media.iter().find(|m| m.kind == kind && m.active());
    let audio = first("audio").map(|m| (m.port, m.payload_types()));
    let video = first("video").map(|m| m.port);
    let dtmf = sdp
        .media
        .iter()
        .filter(|m| m.kind == "audio")
        .flat_map(|m| &m.attrs)
        .filter_map(|a| a.strip_prefix("rtpmap:"))
        .find(|r| r.to_ascii_lowercase().contains("telephone-event"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok());
    Some(RemoteSdp { ip, audio, video, dtmf })
}

/// SPEC MEDIA1: the SIP profile's range split, audio in the lower half: up to the midpoint
/// rounded to the odd port that closes an RTP/RTCP pair (3000–4000 → 3000–3501). The product's
/// default range has its own documented split (16384–24574 audio, 24575–32766 video).
pub fn audio_range((start, stop): (u16, u16)) -> (u16, u16) {
    if (start, stop) == (16384, 32766) {
        return (16384, 24574);
    }
    let mid = ((u32::from(start) + u32::from(stop)) / 2) as u16;
    (start, (mid | 1).min(stop))
}

/// SPEC MEDIA1: video in the upper half.
pub fn video_range((start, stop): (u16, u16)) -> (u16, u16) {
    let (_, a) = audio_range((start, stop));
    (a + 1, stop)
}

/// An SDP offer or answer with the MEDIA3 audio codecs and `direction`.
pub fn sdp(ip: &str, port: u16, session: u64, direction: &str) -> String {
    sdp_av(ip, port, None, session, direction)
}

/// The same with H.264 video on `video` when given.
pub fn sdp_av(ip: &str, port: u16, video: Option<u16>, session: u64, direction: &str) -> String {
    let mut s = sdp_session(ip, session);
    s.push_str(&audio_media(port, direction));
    if let Some(v) = video {
        s.push_str(&video_media(v, direction));
    }
    s
}

fn sdp_session(ip: &str, session: u64) -> String {
    format!(
        "v=0\r\no=CiscoSystemsSIP-GW-UserAgent {session} {session} IN IP4 {ip}\r\ns=SIP Call\r\n\
         c=IN IP4 {ip}\r\nt=0 0\r\n"
    )
}

fn audio_media(port: u16, direction: &str) -> String {
    format!(
        "m=audio {port} RTP/AVP 102 9 0 8 18 101\r\n\
         a=rtpmap:102 G7221/16000\r\na=fmtp:102 bitrate=32000\r\na=rtpmap:9 G722/8000\r\n\
         a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:18 G729/8000\r\n\
         a=fmtp:18 annexb=no\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n\
         a={direction}\r\n"
    )
}

fn video_media(port: u16, direction: &str) -> String {
    format!(
        "m=video {port} RTP/AVP {PT_H264}\r\na=rtpmap:{PT_H264} H264/90000\r\n\
         a=fmtp:{PT_H264} profile-level-id=42801f;packetization-mode=1\r\na={direction}\r\n"
    )
}

/// An SDP answer to `offer` (RFC 3264 §6): one m-line per offered m-line, in the offer's
/// order. The first audio stream gets our audio, the first video stream our video when
/// `video` is given; every other stream is declined with port 0. With no offer (an INVITE
/// without SDP) this is our own offer.
pub fn sdp_answer(
    ip: &str,
    port: u16,
    video: Option<u16>,
    session: u64,
    direction: &str,
    offer: &[u8],
) -> String {
    let text = String::from_utf8_lossy(offer);
    let lines: Vec<&str> = text.lines().filter_map(|l| l.trim_end().strip_prefix("m=")).collect();
    if lines.is_empty() {
        return sdp_av(ip, port, video, session, direction);
    }
    let mut s = sdp_session(ip, session);
    let (mut audio_done, mut video_done) = (false, false);
    for m in lines {
        let mut w = m.split_whitespace();
        let (kind, _, proto, fmt) = (w.next(), w.next(), w.next(), w.next());
        let offered = m.split_whitespace().nth(1).is_some_and(|p| p != "0");
        match (kind, video) {
            (Some("audio"), _) if offered && !audio_done => {
                audio_done = true;
                s.push_str(&audio_media(port, direction));
            }
            (Some("video"), Some(v)) if offered && !video_done => {
                video_done = true;
                s.push_str(&video_media(v, direction));
            }
            _ => s.push_str(&format!(
                "m={} 0 {} {}\r\n",
                kind.unwrap_or("audio"),
                proto.unwrap_or("RTP/AVP"),
                fmt.unwrap_or("0")
            )),
        }
    }
    s
}

/// The direction attribute of an SDP body (`sendrecv` when none).
pub(super) fn direction(body: &[u8]) -> &'static str {
    let t = String::from_utf8_lossy(body);
    for d in ["sendonly", "recvonly", "inactive", "sendrecv"] {
        if t.lines().any(|l| l.trim() == format!("a={d}")) {
            return match d {
                "sendonly" => "sendonly",
                "recvonly" => "recvonly",
                "inactive" => "inactive",
                _ => "sendrecv",
            };
        }
    }
    "sendrecv"
}
