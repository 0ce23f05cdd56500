//! Calls of the softphone (SPEC CC4, CC5, MEDIA1, MEDIA3), the dialog half of the SIP user
//! agent; [`crate::phone::Phone`] owns the connection and hands requests and responses here.
//!
//! One dialog per call (RFC 3261 §12): outgoing INVITE with an SDP offer of the MEDIA3 codecs
//! on an audio port from the lower half of the SIP profile's media range (MEDIA1), ACK of the
//! 2xx, BYE; incoming INVITE rings (180) until the user answers (200 with the answer); hold and
//! resume are re-INVITEs with `a=sendonly` / `a=sendrecv` (a held party answers `recvonly`);
//! DTMF goes as RFC 4733 telephone-events in the RTP stream, or as SIP INFO
//! (`application/dtmf-relay`) when asked or when the peer offered no telephone-event. Video is
//! a re-INVITE that adds an H.264 `m=video` on a port from the upper half of the range.
//!
//! Media (SPEC MEDIA2): the lab carries no sound, but every connected call sends a short burst
//! of synthetic RTP of the negotiated codec to the peer's SDP address (five packets 20 ms
//! apart, audio at DSCP 46; video at DSCP 34), after the answer and again after a resume, so
//! that a capture shows the media flows as a real call's would.
//!
//! What the user may not do now is refused with a `feature-refused` event: hold while a
//! failover is under way (CC4), mid-call features and video under SRST (CC5).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use uclab_proto::rtp::{DtmfReceiver, Rtp, TelephoneEvent, dtmf_event};
use uclab_proto::sip::txn::{ClientTxn, Timers, TxnOutput};
use uclab_proto::sip::{self, Message, Start};

use crate::Time;
use crate::event::ClientEvent;
use crate::io::Output;

/// DSCP of audio (SPEC MEDIA2: EF).
pub const DSCP_AUDIO: u8 = 46;
/// DSCP of video (SPEC MEDIA2: AF41).
pub const DSCP_VIDEO: u8 = 34;
/// Packets in one synthetic media burst.
const BURST: u32 = 5;
/// Our telephone-event payload type (the SDP's `a=rtpmap:101`).
const PT_DTMF: u8 = 101;
/// Our H.264 payload type.
const PT_H264: u8 = 126;
/// Ended calls remembered.
const KEEP_ENDED: usize = 8;
/// The user part CUCM's conference bridge answers ad hoc conference requests on.
const ADHOC: &str = "conference";

/// What the user does with calls (SPEC CC5's list).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallAction {
    /// Calls a number.
    Dial {
        /// Directory number or user.
        to: String,
    },
    /// Answers the ringing call.
    Answer,
    /// Ends the current call (or rejects a ringing one).
    End,
    /// Puts the call on hold.
    Hold,
    /// Takes it off hold.
    Resume,
    /// Mutes the microphone (local).
    Mute,
    /// Unmutes it.
    Unmute,
    /// Sends DTMF digits.
    Dtmf {
        /// Digits (0-9, *, #, A-D).
        digits: String,
        /// As SIP INFO rather than RFC 4733 telephone-events.
        info: bool,
    },
    /// Transfers the call to `to` (blind: REFER, RFC 3515; refused under SRST, CC5).
    Transfer {
        /// Directory number.
        to: String,
    },
    /// Watches a line's state (SPEC CC6: BLF, call lists).
    Watch {
        /// Directory number.
        to: String,
    },
    /// A mid-call feature: `video` (adds video to the call), and the ones the lab does not
    /// carry out beyond the refusal rules: `transfer`, `conference`, `divert`, `park`,
    /// `send-to-mobile`.
    Feature {
        /// Which.
        name: String,
    },
}

impl CallAction {
    /// The feature name for refusals.
    pub fn name(&self) -> String {
        match self {
            Self::Dial { .. } => "call".into(),
            Self::Answer => "answer".into(),
            Self::End => "end".into(),
            Self::Hold => "hold".into(),
            Self::Resume => "resume".into(),
            Self::Mute => "mute".into(),
            Self::Unmute => "unmute".into(),
            Self::Dtmf { .. } => "dtmf".into(),
            Self::Watch { .. } => "watch".into(),
            Self::Transfer { .. } => "transfer".into(),
            Self::Feature { name } => name.clone(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CallState {
    /// INVITE sent.
    Dialing,
    /// 180 received.
    Ringback,
    /// INVITE received, 180 sent.
    Ringing,
    /// 200 sent, waiting for the ACK.
    Answering,
    Connected,
    Held,
    Ended,
}

#[derive(Debug)]
struct Call {
    id: u32,
    call_id: String,
    local_tag: String,
    remote_tag: Option<String>,
    /// From (ours) and To (theirs) as the dialog writes them, without tags.
    local_uri: String,
    remote_uri: String,
    remote_target: String,
    route: Vec<String>,
    cseq: u32,
    state: CallState,
    /// The INVITE we received (to answer it), or sent (to cancel it).
    invite: Option<Message>,
    /// A hold (true) or resume (false) re-INVITE is out.
    pending_hold: Option<bool>,
    /// Our audio port (MEDIA1).
    port: u16,
    /// Our video port, once video is on.
    video_port: Option<u16>,
    /// We sent a REFER for this call (the transferor), to this number.
    referring: Option<String>,
    /// This call was made for a REFER: the transferor's call id (we NOTIFY it of the outcome).
    referred_by: Option<u32>,
    /// A call to the conference bridge: the calls to bring into the conference once the
    /// bridge answers (ad hoc conference).
    conference: Vec<u32>,
    /// Our REFER sends the other party to a conference (not a blind transfer).
    to_conference: bool,
    /// The direction of our last answer to the peer's offer (`recvonly` while it holds us).
    dir: &'static str,
    /// A video re-INVITE is out.
    pending_video: bool,
    /// The peer's media, from its last SDP.
    remote: Option<RemoteSdp>,
    /// What we send.
    audio_out: Option<RtpOut>,
    video_out: Option<RtpOut>,
    /// RTP packets sent and received.
    sent: u32,
    received: u32,
    dtmf_rx: DtmfReceiver,
    peer: String,
}

/// The peer's media as its SDP gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RemoteSdp {
    ip: Ipv4Addr,
    /// Audio port and payload types, in the peer's order of preference.
    audio: Option<(u16, Vec<u8>)>,
    video: Option<u16>,
    /// The peer's telephone-event payload type.
    dtmf: Option<u8>,
}

/// The peer's media from an SDP body (RFC 4566): the first `c=` address, the `m=audio` port
/// and formats, a `m=video` port (0 is a refused stream), the telephone-event `rtpmap`.
fn remote_sdp(body: &[u8]) -> Option<RemoteSdp> {
    let text = std::str::from_utf8(body).ok()?;
    let (mut ip, mut audio, mut video, mut dtmf) = (None, None, None, None);
    let mut section = "";
    for l in text.lines().map(str::trim_end) {
        if let Some(c) = l.strip_prefix("c=IN IP4 ") {
            if ip.is_none() {
                ip = c.split('/').next().and_then(|a| a.trim().parse::<Ipv4Addr>().ok());
            }
        } else if let Some(m) = l.strip_prefix("m=") {
            let mut w = m.split_whitespace();
            let kind = w.next().unwrap_or("");
            let port = w.next().and_then(|p| p.parse::<u16>().ok()).unwrap_or(0);
            let pts: Vec<u8> = w.skip(1).filter_map(|p| p.parse().ok()).collect();
            section = kind;
            // The first active stream of each kind, as the answer takes it (RFC 3264 §6).
            match kind {
                "audio" if port != 0 && audio.is_none() => audio = Some((port, pts)),
                "video" if port != 0 && video.is_none() => video = Some(port),
                _ => {}
            }
        } else if let Some(r) = l.strip_prefix("a=rtpmap:")
            && section == "audio"
            && dtmf.is_none()
            && r.to_ascii_lowercase().contains("telephone-event")
        {
            dtmf = r.split_whitespace().next().and_then(|p| p.parse().ok());
        }
    }
    Some(RemoteSdp { ip: ip?, audio, video, dtmf })
}

/// A MEDIA3 audio codec: payload type, name, RTP clock, timestamp step and payload bytes per
/// 20 ms, and the byte silence is made of.
struct Codec {
    pt: u8,
    name: &'static str,
    clock: u32,
    bytes: usize,
    fill: u8,
}

const CODECS: [Codec; 5] = [
    Codec { pt: 102, name: "G7221/16000", clock: 16000, bytes: 80, fill: 0 },
    Codec { pt: 9, name: "G722/8000", clock: 8000, bytes: 160, fill: 0 },
    Codec { pt: 0, name: "PCMU/8000", clock: 8000, bytes: 160, fill: 0xff },
    Codec { pt: 8, name: "PCMA/8000", clock: 8000, bytes: 160, fill: 0xd5 },
    Codec { pt: 18, name: "G729/8000", clock: 8000, bytes: 20, fill: 0 },
];

/// One RTP stream we send.
#[derive(Debug)]
struct RtpOut {
    port: u16,
    to: SocketAddr,
    pt: u8,
    ssrc: u32,
    seq: u16,
    ts0: u32,
    clock: u32,
    start: Time,
    payload: Vec<u8>,
}

impl RtpOut {
    /// The RTP timestamp at time `t` (the media clock runs from the stream's start).
    fn ts(&self, t: Time) -> u32 {
        let us = t.saturating_sub(self.start).as_micros();
        let ticks = us * u128::from(self.clock) / 1_000_000;
        self.ts0.wrapping_add(ticks as u32)
    }

    fn packet(&mut self, marker: bool, pt: u8, ts: u32, payload: Vec<u8>) -> Vec<u8> {
        let p = Rtp { marker, pt, seq: self.seq, ts, ssrc: self.ssrc, payload };
        self.seq = self.seq.wrapping_add(1);
        p.to_bytes()
    }
}

/// A media packet due to be sent.
#[derive(Clone, Copy, Debug)]
enum Pkt {
    Audio {
        first: bool,
    },
    Video {
        first: bool,
    },
    /// An RFC 4733 event packet; `ts` is the event's start.
    Dtmf {
        event: u8,
        ts: u32,
        duration: u16,
        end: bool,
        first: bool,
    },
}

/// What the phone should do with a message the calls produced.
#[derive(Debug)]
pub(crate) enum Send {
    /// A request with its client transaction.
    Request(Box<ClientTxn>),
    /// A response or an ACK, sent as is.
    Message(Message),
}

/// The calls of one phone.
#[derive(Debug)]
pub(crate) struct Calls {
    calls: Vec<Call>,
    /// A new incoming call started ringing since the phone last looked.
    pub(crate) rang: bool,
    next_id: u32,
    rng: ChaCha8Rng,
    timers: Timers,
    /// The transport is reliable (TCP, TLS); over UDP transactions retransmit.
    pub(crate) reliable: bool,
    /// The audio half of the media range (MEDIA1).
    audio: (u16, u16),
    /// The video half.
    video: (u16, u16),
    next_port: u16,
    next_video_port: u16,
    /// Media packets due, by time and order of scheduling: (call id, packet).
    media_q: BTreeMap<(Time, u64), (u32, Pkt)>,
    media_n: u64,
    pub(crate) events: Vec<ClientEvent>,
    pub(crate) sends: Vec<Send>,
    /// Media socket outputs for the driver.
    pub(crate) media: Vec<Output>,
}

/// `n` random hex digits from the seeded stream (tags, branches, Call-IDs).
pub(crate) fn hex(rng: &mut ChaCha8Rng, n: usize) -> String {
    (0..n).map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap_or('0')).collect()
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
fn direction(body: &[u8]) -> &'static str {
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

impl Calls {
    pub(crate) fn new(seed: u64, timers: Timers, media: (u16, u16)) -> Self {
        let audio = audio_range(media);
        let video = video_range(media);
        // The first ports are a seeded even port of each half (as a softphone picks a free
        // one), so two phones on one host do not both offer the bottom of the range (issue
        // 13); a stream of its own, so the tags and branches drawn later do not move.
        let mut pick = ChaCha8Rng::seed_from_u64(uclab_net::derive_seed(seed, "media"));
        let mut start = |(lo, hi): (u16, u16)| {
            let first = lo + (lo & 1);
            let evens = u32::from(hi.saturating_sub(first) / 2) + 1;
            first + 2 * (pick.next_u32() % evens) as u16
        };
        let (next_port, next_video_port) = (start(audio), start(video));
        Self {
            calls: Vec::new(),
            rang: false,
            next_id: 1,
            rng: ChaCha8Rng::seed_from_u64(seed),
            timers,
            reliable: true,
            audio,
            video,
            next_port,
            next_video_port,
            media_q: BTreeMap::new(),
            media_n: 0,
            events: Vec::new(),
            sends: Vec::new(),
            media: Vec::new(),
        }
    }

    /// When the next media packet is due.
    pub(crate) fn poll_timeout(&self) -> Option<Time> {
        self.media_q.keys().next().map(|k| k.0)
    }

    /// Sends the media packets that are due.
    pub(crate) fn handle_timeout(&mut self, now: Time) {
        while let Some(e) = self.media_q.first_entry() {
            if e.key().0 > now {
                break;
            }
            let (id, pkt) = e.remove();
            let Some(c) = self.calls.iter_mut().find(|c| c.id == id && c.state != CallState::Ended)
            else {
                continue;
            };
            let sent = match pkt {
                Pkt::Audio { first } => c.audio_out.as_mut().map(|o| {
                    let ts = o.ts(now);
                    let payload = o.payload.clone();
                    (o.port, o.to, o.packet(first, o.pt, ts, payload))
                }),
                Pkt::Video { first } => c.video_out.as_mut().map(|o| {
                    let ts = o.ts(now);
                    let payload = o.payload.clone();
                    (o.port, o.to, o.packet(first, o.pt, ts, payload))
                }),
                Pkt::Dtmf { event, ts, duration, end, first } => c.audio_out.as_mut().map(|o| {
                    let payload = TelephoneEvent { event, end, volume: 10, duration }.to_bytes();
                    // The peer's telephone-event payload type (RFC 4733 §2.1: its SDP names it).
                    let pt = c.remote.as_ref().and_then(|r| r.dtmf).unwrap_or(PT_DTMF);
                    (o.port, o.to, o.packet(first, pt, ts, payload.to_vec()))
                }),
            };
            if let Some((port, to, bytes)) = sent {
                c.sent += 1;
                self.media.push(Output::MediaSend { port, to, bytes });
            }
        }
    }

    /// A datagram on one of our media ports: counted, and telephone-events decoded.
    pub(crate) fn on_media(&mut self, port: u16, bytes: &[u8]) {
        let Some(c) = self.calls.iter_mut().rev().find(|c| {
            c.state != CallState::Ended && (c.port == port || c.video_port == Some(port))
        }) else {
            return;
        };
        let Ok(p) = Rtp::parse(bytes) else { return };
        c.received += 1;
        if c.port == port
            && p.pt == PT_DTMF
            && let Some(d) = c.dtmf_rx.feed(&p)
        {
            let (id, peer) = (c.id, c.peer.clone());
            self.events.push(ClientEvent::CallDtmf {
                id,
                digits: d.to_string(),
                peer: format!("from {peer}"),
                method: "rfc4733".into(),
            });
        }
    }

    fn schedule(&mut self, at: Time, id: u32, pkt: Pkt) {
        self.media_n += 1;
        self.media_q.insert((at, self.media_n), (id, pkt));
    }

    /// Starts (or restarts, after a resume) call `i`'s audio burst to the peer's SDP address.
    fn start_audio(&mut self, now: Time, i: usize) {
        let c = &self.calls[i];
        let Some(r) = c.remote.clone() else { return };
        let Some((rport, pts)) = r.audio.clone() else { return };
        let Some(codec) = pts.iter().find_map(|pt| CODECS.iter().find(|k| k.pt == *pt)) else {
            return;
        };
        let to = SocketAddr::V4(SocketAddrV4::new(r.ip, rport));
        let ssrc = self.rng.random();
        let ts0 = self.rng.random();
        let seq = self.rng.random();
        let c = &mut self.calls[i];
        let fresh = c.audio_out.as_ref().is_none_or(|o| o.to != to || o.pt != codec.pt);
        if fresh {
            c.audio_out = Some(RtpOut {
                port: c.port,
                to,
                pt: codec.pt,
                ssrc,
                seq,
                ts0,
                clock: codec.clock,
                start: now,
                payload: vec![codec.fill; codec.bytes],
            });
        }
        let id = c.id;
        self.burst(now, id, ("audio", codec.name, DSCP_AUDIO), to, 20);
    }

    /// Announces a stream of call `id` and schedules its burst, `spacing_ms` apart.
    fn burst(
        &mut self,
        now: Time,
        id: u32,
        (media, codec, dscp): (&str, &str, u8),
        to: SocketAddr,
        spacing_ms: u64,
    ) {
        self.events.push(ClientEvent::CallRtp {
            id,
            media: media.into(),
            codec: codec.into(),
            to: to.to_string(),
            dscp,
        });
        for k in 0..BURST {
            let first = k == 0;
            let pkt = if media == "video" { Pkt::Video { first } } else { Pkt::Audio { first } };
            self.schedule(now + Duration::from_millis(spacing_ms * u64::from(k)), id, pkt);
        }
    }

    /// Starts call `i`'s video burst (H.264 filler NAL units).
    fn start_video(&mut self, now: Time, i: usize) {
        let c = &self.calls[i];
        let (Some(r), Some(port)) = (c.remote.clone(), c.video_port) else { return };
        let Some(rport) = r.video else { return };
        let to = SocketAddr::V4(SocketAddrV4::new(r.ip, rport));
        let (ssrc, ts0, seq) = (self.rng.random(), self.rng.random(), self.rng.random());
        let c = &mut self.calls[i];
        if c.video_out.as_ref().is_none_or(|o| o.to != to) {
            // One H.264 NAL unit of type 12 (filler data): 0xff bytes and the stop bit.
            let mut payload = vec![0x0c];
            payload.extend(std::iter::repeat_n(0xff, 200));
            payload.push(0x80);
            c.video_out = Some(RtpOut {
                port,
                to,
                pt: PT_H264,
                ssrc,
                seq,
                ts0,
                clock: 90_000,
                start: now,
                payload,
            });
        }
        let id = c.id;
        self.burst(now, id, ("video", "H264/90000", DSCP_VIDEO), to, 33);
    }

    /// RFC 4733 digits on call `i`'s audio stream: one event per digit every 200 ms, five
    /// packets 20 ms apart with growing durations (the first with the marker bit), then the
    /// end packet three times (§2.5.1.4). Without an audio stream, `false`.
    fn send_rfc4733(&mut self, now: Time, i: usize, digits: &str) -> bool {
        let c = &self.calls[i];
        let Some(o) = c.audio_out.as_ref() else { return false };
        if c.remote.as_ref().and_then(|r| r.dtmf).is_none() {
            return false;
        }
        let id = c.id;
        let mut plan = Vec::new();
        for (k, d) in digits.chars().enumerate() {
            let Some(event) = dtmf_event(d) else { continue };
            let t0 = now + Duration::from_millis(200 * k as u64);
            let ts = o.ts(t0);
            for j in 0..5u16 {
                let at = t0 + Duration::from_millis(20 * u64::from(j));
                let duration = 160 * (j + 1);
                plan.push((at, Pkt::Dtmf { event, ts, duration, end: false, first: j == 0 }));
            }
            let at = t0 + Duration::from_millis(100);
            for _ in 0..3 {
                plan.push((at, Pkt::Dtmf { event, ts, duration: 960, end: true, first: false }));
            }
        }
        for (at, p) in plan {
            self.schedule(at, id, p);
        }
        true
    }

    /// Closes call `i`'s media: sockets, due packets, and a count of what went each way.
    fn close_media(&mut self, i: usize) {
        let c = &self.calls[i];
        let id = c.id;
        self.media.push(Output::MediaClose { port: c.port });
        if let Some(v) = c.video_port {
            self.media.push(Output::MediaClose { port: v });
        }
        self.events.push(ClientEvent::CallRtpEnd { id, sent: c.sent, received: c.received });
        self.media_q.retain(|_, (cid, _)| *cid != id);
    }

    /// Call `i`'s video stream is gone (declined or dropped by the peer): its socket closes
    /// and nothing more is sent on it.
    fn drop_video(&mut self, i: usize) {
        let c = &mut self.calls[i];
        c.video_out = None;
        if let Some(v) = c.video_port.take() {
            self.media.push(Output::MediaClose { port: v });
        }
    }

    /// The phone goes away: every call ends where it is, its media closed.
    pub(crate) fn close_all(&mut self) {
        for i in 0..self.calls.len() {
            if self.calls[i].state != CallState::Ended {
                self.end(i);
                self.state_event(i, "ended");
            }
        }
    }

    /// Tells the transferor of call `i` (made for its REFER) how the call went: a NOTIFY with
    /// the final status as `message/sipfrag` (RFC 3515 §2.4.5), ending the implicit
    /// subscription.
    fn notify_referrer(&mut self, now: Time, ctx: &Ctx, i: usize, code: u16) {
        let Some(old) = self.calls[i].referred_by.take() else { return };
        let Some(j) = self.calls.iter().position(|c| c.id == old && c.state != CallState::Ended)
        else {
            return;
        };
        let mut n = self.in_dialog(ctx, j, "NOTIFY");
        n.push("Event", "refer");
        n.push("Subscription-State", "terminated;reason=noresource");
        n.push("Content-Type", "message/sipfrag;version=2.0");
        n.body = format!("SIP/2.0 {code} {}\r\n", sip::reason(code)).into_bytes();
        self.request(now, n);
    }

    /// Call `i` ends (a state change to `Ended` goes through here).
    fn end(&mut self, i: usize) {
        if self.calls[i].state != CallState::Ended {
            self.calls[i].state = CallState::Ended;
            self.close_media(i);
        }
    }

    fn current(&mut self) -> Option<&mut Call> {
        self.calls.iter_mut().rev().find(|c| c.state != CallState::Ended)
    }

    fn state_event(&mut self, i: usize, state: &str) {
        let c = &self.calls[i];
        self.events.push(ClientEvent::CallState {
            id: c.id,
            state: state.into(),
            peer: c.peer.clone(),
        });
    }

    fn refuse(&mut self, feature: &str, reason: &str) {
        self.events
            .push(ClientEvent::FeatureRefused { feature: feature.into(), reason: reason.into() });
    }

    /// An audio port for call `id` (even, from the audio half), announced as a `call-media`.
    fn port(&mut self, id: u32) -> u16 {
        let p = self.next_port;
        let video = format!("{}-{}", self.video.0, self.video.1);
        self.events.push(ClientEvent::CallMedia { id, audio_port: p, video });
        self.next_port =
            if p + 2 > self.audio.1 { self.audio.0 + (self.audio.0 & 1) } else { p + 2 };
        self.media.push(Output::MediaOpen { port: p, dscp: DSCP_AUDIO });
        p
    }

    /// A video port (even, from the upper half), opened for the driver.
    fn video_port(&mut self) -> u16 {
        let first = self.video.0 + (self.video.0 & 1);
        let p = if self.next_video_port < first { first } else { self.next_video_port };
        self.next_video_port = if p + 2 > self.video.1 { first } else { p + 2 };
        self.media.push(Output::MediaOpen { port: p, dscp: DSCP_VIDEO });
        p
    }

    fn via(&mut self, ctx: &Ctx) -> String {
        format!(
            "SIP/2.0/{} {};branch=z9hG4bK{}{}",
            ctx.transport,
            ctx.local_host,
            hex(&mut self.rng, 16),
            rport(ctx.transport)
        )
    }

    /// An in-dialog request of call `i` (§12.2.1.1).
    fn in_dialog(&mut self, ctx: &Ctx, i: usize, method: &str) -> Message {
        let via = self.via(ctx);
        let c = &mut self.calls[i];
        if method != "ACK" {
            c.cseq += 1;
        }
        let mut m = Message::request(method, &c.remote_target).with("Via", via);
        for r in &c.route {
            m.push("Route", r.clone());
        }
        let to = match &c.remote_tag {
            Some(t) => format!("{};tag={t}", c.remote_uri),
            None => c.remote_uri.clone(),
        };
        m.with("Max-Forwards", "70")
            .with("From", format!("{};tag={}", c.local_uri, c.local_tag))
            .with("To", to)
            .with("Call-ID", c.call_id.clone())
            .with("CSeq", format!("{} {method}", c.cseq))
            .with("Contact", ctx.contact.clone())
            .with("User-Agent", crate::phone::USER_AGENT)
    }

    fn request(&mut self, now: Time, m: Message) {
        let t = ClientTxn::new(now, m, self.reliable, self.timers);
        self.sends.push(Send::Request(Box::new(t)));
    }

    /// Sends call `i`'s peer a REFER to `to` (RFC 3515); its NOTIFYs say how it went.
    fn refer(&mut self, now: Time, ctx: &Ctx, i: usize, to: &str) {
        let mut m = self.in_dialog(ctx, i, "REFER");
        m.push("Refer-To", format!("<sip:{to}@{}>", ctx.registrar));
        m.push("Referred-By", format!("<sip:{}@{}>", ctx.line, ctx.registrar));
        self.calls[i].referring = Some(to.to_owned());
        self.request(now, m);
    }

    /// Ad hoc conference under CUCM: a call to the conference bridge, then each other call is
    /// REFERred to the focus the bridge names (RFC 4579 §5.5) and, once its party is in, ended.
    fn conference(&mut self, now: Time, ctx: &Ctx) {
        let busy = self.calls.iter().any(|c| {
            c.state != CallState::Ended && (c.referring.is_some() || !c.conference.is_empty())
        });
        if busy {
            return self.refuse("conference", "a transfer or conference is already under way");
        }
        let parties: Vec<u32> = self
            .calls
            .iter()
            .filter(|c| matches!(c.state, CallState::Connected | CallState::Held))
            .filter(|c| c.peer != ADHOC && !c.peer.starts_with("conf-"))
            .map(|c| c.id)
            .collect();
        if parties.len() < 2 {
            return self.refuse("conference", "a conference needs two calls");
        }
        self.place(now, ctx, ADHOC, None);
        let i = self.calls.len() - 1;
        self.calls[i].conference = parties;
    }

    /// The bridge answered the conference call `i` as `focus`: its parties are sent there.
    fn bring_in(&mut self, now: Time, ctx: &Ctx, i: usize) {
        let parties = std::mem::take(&mut self.calls[i].conference);
        let focus = self.calls[i]
            .remote_target
            .split_once(':')
            .and_then(|(_, r)| r.split(['@', ';']).next())
            .filter(|u| u.starts_with("conf-") && sip::is_token(u))
            .map(str::to_owned);
        let Some(focus) = focus else {
            return self.refuse("conference", "the bridge named no conference");
        };
        let (id, _) = (self.calls[i].id, ());
        self.events.push(ClientEvent::CallState {
            id,
            state: "conference".into(),
            peer: focus.clone(),
        });
        for p in parties {
            let Some(j) = self.calls.iter().position(|c| {
                c.id == p && matches!(c.state, CallState::Connected | CallState::Held)
            }) else {
                continue;
            };
            self.refer(now, ctx, j, &focus);
            self.calls[j].to_conference = true;
            self.state_event(j, "conferencing");
        }
    }

    /// Carries out a user action. `mode` says what the phone can do now.
    pub(crate) fn act(&mut self, now: Time, ctx: &Ctx, a: &CallAction) {
        let name = a.name();
        if ctx.mode == Mode::Unregistered && !matches!(a, CallAction::Mute | CallAction::Unmute) {
            return self.refuse(&name, "not registered");
        }
        // SPEC CC5: under SRST only basic calls, hold, mute and DTMF.
        if ctx.mode == Mode::Srst
            && matches!(a, CallAction::Feature { .. } | CallAction::Transfer { .. })
        {
            let why = format!("{name} is not available while registered to SRST");
            return self.refuse(&name, &why);
        }
        // SPEC CC4: no hold while a failover is under way.
        if ctx.mode == Mode::FailingOver && matches!(a, CallAction::Hold | CallAction::Resume) {
            return self.refuse(&name, "a failover is under way");
        }
        match a {
            CallAction::Dial { to } => self.dial(now, ctx, to),
            CallAction::Watch { .. } => {} // the phone's Watches
            CallAction::Feature { name } if name == "conference" => self.conference(now, ctx),
            CallAction::Feature { name } if name != "video" => {
                self.refuse(name, "not modelled yet")
            }
            _ => {
                let Some(i) = self.calls.iter().rposition(|c| c.state != CallState::Ended) else {
                    return self.refuse(&name, "no call");
                };
                self.on_call(now, ctx, i, a);
            }
        }
    }

    /// Forgets ended calls but the last few (their late retransmissions still find them).
    fn prune(&mut self) {
        let ended = self.calls.iter().filter(|c| c.state == CallState::Ended).count();
        let mut drop = ended.saturating_sub(KEEP_ENDED);
        self.calls.retain(|c| {
            let gone = drop > 0 && c.state == CallState::Ended;
            drop -= usize::from(gone);
            !gone
        });
    }

    fn dial(&mut self, now: Time, ctx: &Ctx, to: &str) {
        // A second call needs the first on hold (the consultation call of a transfer or an
        // ad hoc conference).
        let up = self.calls.iter().any(|c| !matches!(c.state, CallState::Ended | CallState::Held));
        if up {
            return self.refuse("call", "a call is already up");
        }
        self.place(now, ctx, to, None);
    }

    /// Places a call to `to`; `referred_by`: the call whose REFER asked for it.
    fn place(&mut self, now: Time, ctx: &Ctx, to: &str, referred_by: Option<u32>) {
        self.prune();
        let id = self.next_id;
        self.next_id += 1;
        let port = self.port(id);
        let peer = to.to_owned();
        let c = Call {
            id,
            call_id: format!(
                "{}-{}@{}",
                hex(&mut self.rng, 8),
                hex(&mut self.rng, 8),
                ctx.local_host
            ),
            local_tag: hex(&mut self.rng, 16),
            remote_tag: None,
            local_uri: format!("<sip:{}@{}>", ctx.line, ctx.registrar),
            remote_uri: format!("<sip:{to}@{}>", ctx.registrar),
            remote_target: format!("sip:{to}@{}", ctx.registrar),
            route: Vec::new(),
            cseq: 100,
            state: CallState::Dialing,
            invite: None,
            pending_hold: None,
            port,
            video_port: None,
            referring: None,
            referred_by: None,
            conference: Vec::new(),
            to_conference: false,
            dir: "sendrecv",
            pending_video: false,
            remote: None,
            audio_out: None,
            video_out: None,
            sent: 0,
            received: 0,
            dtmf_rx: DtmfReceiver::default(),
            peer,
        };
        self.calls.push(c);
        let i = self.calls.len() - 1;
        let session = u64::from(id) + 1000;
        self.calls[i].referred_by = referred_by;
        let mut m = self.in_dialog(ctx, i, "INVITE");
        m.push("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE, REFER, NOTIFY");
        if let Some(by) = referred_by.and_then(|r| self.calls.iter().find(|c| c.id == r)) {
            m.push("Referred-By", by.remote_uri.clone());
        }
        m.push("Content-Type", "application/sdp");
        m.body = sdp(&ctx.local_ip, port, session, "sendrecv").into_bytes();
        self.calls[i].invite = Some(m.clone());
        self.state_event(i, "dialing");
        self.request(now, m);
    }

    fn on_call(&mut self, now: Time, ctx: &Ctx, i: usize, a: &CallAction) {
        let state = self.calls[i].state;
        match (a, state) {
            (CallAction::Answer, CallState::Ringing) => {
                let Some(inv) = self.calls[i].invite.clone() else { return };
                let (port, id) = (self.calls[i].port, self.calls[i].id);
                let mut r = inv.response(200, "OK", Some(&self.calls[i].local_tag));
                for rr in inv.all("Record-Route") {
                    r.push("Record-Route", rr);
                }
                r.push("Contact", ctx.contact.clone());
                r.push("Content-Type", "application/sdp");
                let session = u64::from(id) + 1000;
                r.body = sdp_answer(&ctx.local_ip, port, None, session, "sendrecv", &inv.body)
                    .into_bytes();
                self.calls[i].state = CallState::Answering;
                self.sends.push(Send::Message(r));
            }
            (CallAction::End, CallState::Ringing) => {
                let Some(inv) = self.calls[i].invite.clone() else { return };
                let r = inv.response(603, "Decline", Some(&self.calls[i].local_tag));
                self.end(i);
                self.sends.push(Send::Message(r));
                self.state_event(i, "ended");
            }
            (CallAction::End, CallState::Dialing | CallState::Ringback) => {
                // §9.1: CANCEL with the INVITE's Request-URI, Via, Call-ID, From, To, Route and
                // CSeq number.
                let Some(inv) = self.calls[i].invite.clone() else { return };
                let Start::Request { uri, .. } = &inv.start else { return };
                let mut m = Message::request("CANCEL", uri);
                for h in ["Via", "Route", "From", "To", "Call-ID"] {
                    for v in inv.all(h) {
                        m.push(h, v);
                    }
                }
                if let Some((n, _)) = inv.cseq() {
                    m.push("CSeq", format!("{n} CANCEL"));
                }
                m.push("Max-Forwards", "70");
                self.request(now, m);
                self.end(i);
                self.notify_referrer(now, ctx, i, 487);
                self.state_event(i, "ended");
            }
            (CallAction::End, CallState::Connected | CallState::Held | CallState::Answering) => {
                let m = self.in_dialog(ctx, i, "BYE");
                self.end(i);
                self.state_event(i, "ended");
                self.request(now, m);
            }
            (CallAction::Hold | CallAction::Resume, _) if self.calls[i].pending_hold.is_some() => {
                let name = a.name();
                self.refuse(&name, "a hold or resume is already under way");
            }
            (CallAction::Hold, CallState::Connected) | (CallAction::Resume, CallState::Held) => {
                let hold = matches!(a, CallAction::Hold);
                let dir = if hold { "sendonly" } else { "sendrecv" };
                let (port, id, video) =
                    (self.calls[i].port, self.calls[i].id, self.calls[i].video_port);
                let mut m = self.in_dialog(ctx, i, "INVITE");
                m.push("Content-Type", "application/sdp");
                m.body = sdp_av(&ctx.local_ip, port, video, u64::from(id) + 1000, dir).into_bytes();
                self.calls[i].pending_hold = Some(hold);
                self.request(now, m);
            }
            (CallAction::Mute, CallState::Connected | CallState::Held) => {
                self.state_event(i, "muted")
            }
            (CallAction::Unmute, CallState::Connected | CallState::Held) => {
                self.state_event(i, "unmuted")
            }
            (CallAction::Transfer { to }, CallState::Connected | CallState::Held) => {
                if self.calls[i].referring.is_some() {
                    return self.refuse("transfer", "a transfer is already under way");
                }
                // RFC 3515 blind transfer: the other party calls `to` and tells us how it went.
                self.refer(now, ctx, i, to);
                self.state_event(i, "transferring");
            }
            (CallAction::Feature { .. }, CallState::Connected)
                if self.calls[i].video_port.is_some() || self.calls[i].pending_video =>
            {
                self.refuse("video", "video is already on");
            }
            (CallAction::Feature { .. }, CallState::Connected) => {
                // Escalation to video: a re-INVITE adding an H.264 stream (MEDIA1's upper half).
                let v = self.video_port();
                let (port, id) = (self.calls[i].port, self.calls[i].id);
                self.calls[i].video_port = Some(v);
                self.calls[i].pending_video = true;
                let mut m = self.in_dialog(ctx, i, "INVITE");
                m.push("Content-Type", "application/sdp");
                m.body = sdp_av(&ctx.local_ip, port, Some(v), u64::from(id) + 1000, "sendrecv")
                    .into_bytes();
                self.request(now, m);
            }
            (CallAction::Dtmf { digits, info: false }, CallState::Connected)
                if self.send_rfc4733(now, i, digits) =>
            {
                let (id, peer) = (self.calls[i].id, self.calls[i].peer.clone());
                self.events.push(ClientEvent::CallDtmf {
                    id,
                    digits: digits.clone(),
                    peer,
                    method: "rfc4733".into(),
                });
            }
            (CallAction::Dtmf { digits, .. }, CallState::Connected) => {
                for d in digits.chars() {
                    let mut m = self.in_dialog(ctx, i, "INFO");
                    m.push("Content-Type", "application/dtmf-relay");
                    m.body = format!("Signal={d}\r\nDuration=160\r\n").into_bytes();
                    self.request(now, m);
                }
                let (id, peer) = (self.calls[i].id, self.calls[i].peer.clone());
                self.events.push(ClientEvent::CallDtmf {
                    id,
                    digits: digits.clone(),
                    peer,
                    method: "info".into(),
                });
            }
            _ => {
                let name = a.name();
                self.refuse(
                    &name,
                    &format!("not possible while the call is {state:?}").to_lowercase(),
                );
            }
        }
    }

    /// A response to one of our requests (already through its transaction).
    pub(crate) fn on_response(&mut self, now: Time, ctx: &Ctx, r: &Message) {
        let Some(code) = r.code() else { return };
        let Some(i) = self.calls.iter().position(|c| Some(c.call_id.as_str()) == r.call_id())
        else {
            return;
        };
        let method = r.method().unwrap_or("").to_owned();
        match (method.as_str(), code) {
            ("INVITE", 180 | 183) if self.calls[i].state == CallState::Dialing => {
                self.calls[i].state = CallState::Ringback;
                self.state_event(i, "ringback");
            }
            ("INVITE", 200..=299) => {
                // A 2xx that crossed our CANCEL (§9.1: the callee answered first): the dialog
                // exists after all; acknowledge it and end it with a BYE.
                let crossed =
                    self.calls[i].state == CallState::Ended && self.calls[i].remote_tag.is_none();
                let first = crossed
                    || matches!(self.calls[i].state, CallState::Dialing | CallState::Ringback);
                let c = &mut self.calls[i];
                if first {
                    // §12.1.2: the dialog from the 2xx: their tag, their Contact, the
                    // Record-Route set reversed.
                    c.remote_tag = r.tag("To");
                    if let Some(na) = r.name_addr("Contact") {
                        c.remote_target = na.uri;
                    }
                    let mut rr: Vec<String> = r
                        .all("Record-Route")
                        .flat_map(|v| sip::split_list(v).unwrap_or_default())
                        .map(str::to_owned)
                        .collect();
                    rr.reverse();
                    c.route = rr;
                }
                // §13.2.2.4: the ACK carries the CSeq number of the INVITE it acknowledges.
                let mut ack = self.in_dialog(ctx, i, "ACK");
                if let Some((n, _)) = r.cseq() {
                    ack.set("CSeq", format!("{n} ACK"));
                }
                self.sends.push(Send::Message(ack));
                if crossed {
                    let bye = self.in_dialog(ctx, i, "BYE");
                    self.request(now, bye);
                    return;
                }
                if let Some(sdp) = remote_sdp(&r.body) {
                    self.calls[i].remote = Some(sdp);
                }
                let pending = self.calls[i].pending_hold.take();
                let video = std::mem::take(&mut self.calls[i].pending_video);
                let (next, name) = match (first, pending, video) {
                    (true, _, _) => (CallState::Connected, "connected"),
                    (false, Some(true), _) => (CallState::Held, "held"),
                    (false, Some(false), _) => (CallState::Connected, "resumed"),
                    (false, None, true) => (CallState::Connected, "video"),
                    (false, None, false) => return,
                };
                self.calls[i].state = next;
                self.state_event(i, name);
                if first {
                    self.notify_referrer(now, ctx, i, 200);
                    if !self.calls[i].conference.is_empty() {
                        self.bring_in(now, ctx, i);
                    }
                }
                match name {
                    "connected" | "resumed" => self.start_audio(now, i),
                    _ => {}
                }
                if video {
                    if self.calls[i].remote.as_ref().is_some_and(|r| r.video.is_some()) {
                        self.start_video(now, i);
                    } else {
                        // The peer refused the video stream (port 0): audio only, and the
                        // next offer leaves video out (it may be asked for again).
                        self.drop_video(i);
                        self.refuse("video", "the other party declined video");
                    }
                }
            }
            ("REFER", 300..) => {
                self.calls[i].referring = None;
                self.calls[i].to_conference = false;
                self.refuse("transfer", &format!("the REFER got {code}"));
            }
            ("INVITE", 300..) if self.calls[i].pending_video => {
                self.calls[i].pending_video = false;
                self.drop_video(i);
                self.refuse("video", &format!("the re-INVITE got {code}"));
            }
            ("INVITE", 300..) if self.calls[i].pending_hold.is_some() => {
                let hold = self.calls[i].pending_hold.take() == Some(true);
                let name = if hold { "hold" } else { "resume" };
                self.refuse(name, &format!("the re-INVITE got {code}"));
            }
            ("INVITE", 300..)
                if matches!(self.calls[i].state, CallState::Dialing | CallState::Ringback) =>
            {
                self.end(i);
                self.notify_referrer(now, ctx, i, code);
                let (id, peer) = (self.calls[i].id, self.calls[i].peer.clone());
                self.events.push(ClientEvent::CallState {
                    id,
                    state: format!("failed {code}"),
                    peer,
                });
            }
            _ => {}
        }
    }

    /// A request from the node: a new call, or one of an existing dialog.
    pub(crate) fn on_request(&mut self, now: Time, ctx: &Ctx, m: &Message) -> Option<Message> {
        let Start::Request { method, .. } = &m.start else { return None };
        let i = self.calls.iter().position(|c| Some(c.call_id.as_str()) == m.call_id());
        let reply = |code: u16, tag: Option<&str>| {
            let mut r = m.response(code, sip::reason(code), tag);
            r.push("Contact", ctx.contact.clone());
            r
        };
        match (method.as_str(), i) {
            ("INVITE", None) => {
                if self.current().is_some() {
                    return Some(reply(486, Some("busy")));
                }
                self.prune();
                let id = self.next_id;
                self.next_id += 1;
                let port = self.port(id);
                let from = m.name_addr("From");
                let peer = from
                    .as_ref()
                    .and_then(|f| {
                        f.uri
                            .split(':')
                            .nth(1)
                            .map(|u| u.split('@').next().unwrap_or("").to_owned())
                    })
                    .unwrap_or_default();
                let local_tag = hex(&mut self.rng, 16);
                let c = Call {
                    id,
                    call_id: m.call_id().unwrap_or("").to_owned(),
                    local_tag: local_tag.clone(),
                    remote_tag: m.tag("From"),
                    local_uri: m.get("To").unwrap_or("").to_owned(),
                    remote_uri: m
                        .get("From")
                        .unwrap_or("")
                        .split(";tag=")
                        .next()
                        .unwrap_or("")
                        .to_owned(),
                    remote_target: m.name_addr("Contact").map(|c| c.uri).unwrap_or_default(),
                    route: m
                        .all("Record-Route")
                        .flat_map(|v| sip::split_list(v).unwrap_or_default())
                        .map(str::to_owned)
                        .collect(),
                    cseq: 0,
                    state: CallState::Ringing,
                    invite: Some(m.clone()),
                    pending_hold: None,
                    port,
                    video_port: None,
                    referring: None,
                    referred_by: None,
                    conference: Vec::new(),
                    to_conference: false,
                    dir: "sendrecv",
                    pending_video: false,
                    remote: remote_sdp(&m.body),
                    audio_out: None,
                    video_out: None,
                    sent: 0,
                    received: 0,
                    dtmf_rx: DtmfReceiver::default(),
                    peer,
                };
                self.calls.push(c);
                let i = self.calls.len() - 1;
                self.state_event(i, "ringing");
                self.rang = true;
                Some(reply(180, Some(&local_tag)))
            }
            // The same initial INVITE again (a retransmission): ringing still.
            ("INVITE", Some(i))
                if m.tag("To").as_deref() != Some(self.calls[i].local_tag.as_str()) =>
            {
                let tag = self.calls[i].local_tag.clone();
                match self.calls[i].state {
                    CallState::Ringing => Some(reply(180, Some(&tag))),
                    _ => Some(reply(491, Some(&tag))),
                }
            }
            ("INVITE", Some(i))
                if matches!(self.calls[i].state, CallState::Ringing | CallState::Answering) =>
            {
                let tag = self.calls[i].local_tag.clone();
                Some(reply(491, Some(&tag)))
            }
            ("INVITE", Some(i)) => {
                // A re-INVITE: hold, resume or video from the other side.
                let dir = direction(&m.body);
                let answer_dir = match dir {
                    "sendonly" => "recvonly",
                    "inactive" => "inactive",
                    _ => "sendrecv",
                };
                let offer = remote_sdp(&m.body);
                let offers_video = offer.as_ref().is_some_and(|o| o.video.is_some());
                let video_new = offers_video && self.calls[i].video_port.is_none();
                if video_new {
                    let v = self.video_port();
                    self.calls[i].video_port = Some(v);
                } else if offer.is_some() && !offers_video {
                    // The peer dropped the video stream: so do we (RFC 3264 §8.2).
                    self.drop_video(i);
                }
                let was_held = self.calls[i].dir != "sendrecv";
                if offer.is_some() {
                    self.calls[i].remote = offer;
                }
                let (port, id, video) =
                    (self.calls[i].port, self.calls[i].id, self.calls[i].video_port);
                let mut r = reply(200, Some(&self.calls[i].local_tag.clone()));
                r.push("Content-Type", "application/sdp");
                let session = u64::from(id) + 1000;
                r.body = sdp_answer(&ctx.local_ip, port, video, session, answer_dir, &m.body)
                    .into_bytes();
                let state = match (answer_dir, video_new) {
                    ("sendrecv", true) => "video-by-peer",
                    ("sendrecv", false) => "resumed-by-peer",
                    _ => "held-by-peer",
                };
                self.calls[i].dir = answer_dir;
                self.state_event(i, state);
                if answer_dir == "sendrecv" && was_held {
                    self.start_audio(now, i);
                }
                if video_new && answer_dir == "sendrecv" {
                    self.start_video(now, i);
                }
                Some(r)
            }
            ("ACK", Some(i)) => {
                if self.calls[i].state == CallState::Answering {
                    self.calls[i].state = CallState::Connected;
                    self.state_event(i, "connected");
                    self.start_audio(now, i);
                }
                None
            }
            ("BYE", Some(i)) => {
                let tag = self.calls[i].local_tag.clone();
                if self.calls[i].state != CallState::Ended {
                    self.end(i);
                    self.state_event(i, "ended");
                }
                Some(reply(200, Some(&tag)))
            }
            ("CANCEL", Some(i)) => {
                let tag = self.calls[i].local_tag.clone();
                if self.calls[i].state == CallState::Ringing {
                    if let Some(inv) = self.calls[i].invite.clone() {
                        let r487 = inv.response(487, "Request Terminated", Some(&tag));
                        self.sends.push(Send::Message(r487));
                    }
                    self.end(i);
                    self.state_event(i, "ended");
                }
                Some(reply(200, Some(&tag)))
            }
            ("INFO", Some(i)) => {
                let digits: String = String::from_utf8_lossy(&m.body)
                    .lines()
                    .filter_map(|l| l.strip_prefix("Signal="))
                    .map(str::trim)
                    .collect();
                let tag = self.calls[i].local_tag.clone();
                if !digits.is_empty() {
                    let (id, peer) = (self.calls[i].id, self.calls[i].peer.clone());
                    self.events.push(ClientEvent::CallDtmf {
                        id,
                        digits,
                        peer: format!("from {peer}"),
                        method: "info".into(),
                    });
                }
                Some(reply(200, Some(&tag)))
            }
            ("REFER", Some(i))
                if self.calls.iter().any(|c| {
                    c.referred_by == Some(self.calls[i].id) && c.state != CallState::Ended
                }) =>
            {
                // One transfer at a time per dialog (RFC 3515 leaves it to the recipient).
                let tag = self.calls[i].local_tag.clone();
                Some(reply(491, Some(&tag)))
            }
            ("REFER", Some(i))
                if matches!(self.calls[i].state, CallState::Connected | CallState::Held) =>
            {
                // RFC 3515: accept, report Trying, and call the Refer-To target.
                let tag = self.calls[i].local_tag.clone();
                let target = m
                    .name_addr("Refer-To")
                    .and_then(|na| na.uri.split(':').nth(1).map(str::to_owned))
                    .and_then(|u| u.split(['@', ';']).next().map(str::to_owned))
                    .filter(|u| sip::is_token(u));
                let Some(target) = target else { return Some(reply(400, Some(&tag))) };
                let mut n = self.in_dialog(ctx, i, "NOTIFY");
                n.push("Event", "refer");
                n.push("Subscription-State", "active;expires=60");
                n.push("Content-Type", "message/sipfrag;version=2.0");
                n.body = b"SIP/2.0 100 Trying\r\n".to_vec();
                self.request(now, n);
                self.state_event(i, "transfer-requested");
                let old = self.calls[i].id;
                self.place(now, ctx, &target, Some(old));
                Some(reply(202, Some(&tag)))
            }
            ("REFER", Some(i)) => {
                let tag = self.calls[i].local_tag.clone();
                Some(reply(603, Some(&tag)))
            }
            ("NOTIFY", Some(i)) if self.calls[i].referring.is_some() => {
                // How the transfer went: the status line of the sipfrag body.
                let tag = self.calls[i].local_tag.clone();
                let code = String::from_utf8_lossy(&m.body)
                    .strip_prefix("SIP/2.0 ")
                    .and_then(|r| r.get(..3))
                    .and_then(|c| c.parse::<u16>().ok());
                match code {
                    Some(200..=299) => {
                        let to = self.calls[i].referring.take().unwrap_or_default();
                        let bye = self.in_dialog(ctx, i, "BYE");
                        self.end(i);
                        let (id, _) = (self.calls[i].id, ());
                        let state = if self.calls[i].to_conference {
                            "in-conference"
                        } else {
                            "transferred"
                        };
                        self.events.push(ClientEvent::CallState {
                            id,
                            state: state.into(),
                            peer: to,
                        });
                        self.request(now, bye);
                    }
                    Some(300..) => {
                        self.calls[i].referring = None;
                        let what = if std::mem::take(&mut self.calls[i].to_conference) {
                            "conference-failed"
                        } else {
                            "transfer-failed"
                        };
                        self.state_event(i, &format!("{what} {}", code.unwrap_or(0)));
                    }
                    _ => {}
                }
                Some(reply(200, Some(&tag)))
            }
            ("NOTIFY", Some(i)) => {
                let tag = self.calls[i].local_tag.clone();
                Some(reply(481, Some(&tag)))
            }
            ("OPTIONS", _) => Some(reply(200, None)),
            (_, None) if method != "ACK" => Some(reply(481, None)),
            ("ACK", None) => None,
            _ => Some(reply(501, None)),
        }
    }

    /// Our 2xx to call `call_id`'s INVITE was never acknowledged (§13.3.1.4): the call ends
    /// with a BYE.
    pub(crate) fn on_no_ack(&mut self, now: Time, ctx: &Ctx, call_id: &str) {
        let Some(i) = self.calls.iter().position(|c| {
            c.call_id == call_id && matches!(c.state, CallState::Answering | CallState::Connected)
        }) else {
            return;
        };
        if self.calls[i].state != CallState::Answering {
            return; // the ACK came by another way: the call is up
        }
        let bye = self.in_dialog(ctx, i, "BYE");
        self.end(i);
        let (id, peer) = (self.calls[i].id, self.calls[i].peer.clone());
        self.events.push(ClientEvent::CallState { id, state: "failed no-ack".into(), peer });
        self.request(now, bye);
    }

    /// A transaction of a call ended without a final response (Timer B/F).
    pub(crate) fn on_timeout(&mut self, now: Time, ctx: &Ctx, call_id: &str) {
        if let Some(i) =
            self.calls.iter().position(|c| c.call_id == call_id && c.state != CallState::Ended)
        {
            self.end(i);
            // RFC 3515 §2.4.5: a call made for a REFER reports its end to the transferor,
            // which otherwise stays "transferring".
            self.notify_referrer(now, ctx, i, 408);
            let (id, peer) = (self.calls[i].id, self.calls[i].peer.clone());
            self.events.push(ClientEvent::CallState { id, state: "failed 408".into(), peer });
        }
    }
}

/// What the phone can do now, for the refusal rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Registered to CUCM.
    Cucm,
    /// Registered to SRST (CC5).
    Srst,
    /// Registering to another node after losing one (CC4).
    FailingOver,
    /// Not registered.
    Unregistered,
}

/// The phone's side of things the calls need.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) mode: Mode,
    pub(crate) transport: &'static str,
    pub(crate) local_host: String,
    pub(crate) local_ip: String,
    pub(crate) contact: String,
    pub(crate) line: String,
    /// The host requests are addressed to (the registrar).
    pub(crate) registrar: String,
}

/// RFC 3581 over UDP: the answer comes back to the port we sent from (an ephemeral one, not
/// 5060), so the Via asks for `rport`.
pub(crate) fn rport(transport: &str) -> &'static str {
    if transport == "UDP" { ";rport" } else { "" }
}

/// Drains a transaction's sends (used by the phone).
pub(crate) fn sends_of(t: &mut ClientTxn) -> Vec<Message> {
    std::iter::from_fn(|| t.poll_output())
        .filter_map(|o| match o {
            TxnOutput::Send(m) => Some(m),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Ctx {
        Ctx {
            mode: Mode::Cucm,
            transport: "TCP",
            local_host: "csfalice.invalid".into(),
            local_ip: "10.1.0.100".into(),
            contact: "<sip:a@csfalice.invalid;transport=tcp>".into(),
            line: "1001".into(),
            registrar: "cucm1.example.com".into(),
        }
    }

    fn methods(sends: &mut Vec<Send>) -> Vec<String> {
        std::mem::take(sends)
            .into_iter()
            .map(|s| match s {
                Send::Request(t) => t.request().method().unwrap_or("").to_owned(),
                Send::Message(m) => m.method().unwrap_or("").to_owned(),
            })
            .collect()
    }

    #[test]
    fn a_2xx_crossing_our_cancel_is_acknowledged_and_ended() {
        let mut c = Calls::new(1, Timers::default(), (16384, 32766));
        let t = Time::ZERO;
        c.act(t, &ctx(), &CallAction::Dial { to: "1002".into() });
        let invite = c.calls[0].invite.clone().expect("sent");
        c.act(t, &ctx(), &CallAction::End);
        assert_eq!(methods(&mut c.sends), ["INVITE", "CANCEL"]);
        let mut ok = invite.response(200, "OK", Some("callee"));
        ok.push("Contact", "<sip:b@csfbob.invalid;transport=tcp>");
        c.on_response(t, &ctx(), &ok);
        assert_eq!(methods(&mut c.sends), ["ACK", "BYE"]);
        // The same 2xx again: acknowledged, no second BYE.
        c.on_response(t, &ctx(), &ok);
        assert_eq!(methods(&mut c.sends), ["ACK"]);
    }

    /// Alice's connected call to 1002; then bob REFERs her to 1003 and her phone calls 1003.
    fn referred(c: &mut Calls) -> String {
        let t = Time::ZERO;
        c.act(t, &ctx(), &CallAction::Dial { to: "1002".into() });
        let invite = c.calls[0].invite.clone().expect("sent");
        let mut ok = invite.response(200, "OK", Some("callee"));
        ok.push("Contact", "<sip:b@csfbob.invalid;transport=tcp>");
        c.on_response(t, &ctx(), &ok);
        let (call_id, tag) = (c.calls[0].call_id.clone(), c.calls[0].local_tag.clone());
        let refer = format!(
            "REFER sip:a@csfalice.invalid SIP/2.0\r\nVia: SIP/2.0/TCP 10.1.0.11;branch=z9hG4bKr1\r\n\
             From: <sip:1002@cucm1.example.com>;tag=callee\r\n\
             To: <sip:1001@cucm1.example.com>;tag={tag}\r\nCall-ID: {call_id}\r\n\
             CSeq: 7 REFER\r\nMax-Forwards: 70\r\n\
             Refer-To: <sip:1003@cucm1.example.com>\r\nContent-Length: 0\r\n\r\n"
        );
        let refer = sip::parse(refer.as_bytes()).expect("a REFER");
        let r = c.on_request(t, &ctx(), &refer).expect("answered");
        assert_eq!(r.code(), Some(202));
        c.calls[1].call_id.clone()
    }

    fn sipfrags(sends: &mut Vec<Send>) -> Vec<String> {
        std::mem::take(sends)
            .into_iter()
            .filter_map(|s| match s {
                Send::Request(t) if t.request().method() == Some("NOTIFY") => {
                    Some(String::from_utf8_lossy(&t.request().body).trim().to_owned())
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_referred_call_that_fails_tells_the_transferor_how() {
        // RFC 3515 §2.4.5: Trying first, then the final outcome, whatever ends the call.
        let mut c = Calls::new(1, Timers::default(), (16384, 32766));
        referred(&mut c);
        assert_eq!(sipfrags(&mut c.sends), ["SIP/2.0 100 Trying"]);
        c.act(Time::ZERO, &ctx(), &CallAction::End);
        assert_eq!(sipfrags(&mut c.sends), ["SIP/2.0 487 Request Terminated"]);

        let mut c = Calls::new(2, Timers::default(), (16384, 32766));
        let target = referred(&mut c);
        c.sends.clear();
        c.on_timeout(Time::ZERO, &ctx(), &target);
        assert_eq!(sipfrags(&mut c.sends), ["SIP/2.0 408 Request Timeout"]);
    }

    #[test]
    fn declined_video_closes_its_port_and_may_be_asked_again() {
        let mut c = Calls::new(3, Timers::default(), (16384, 32766));
        let t = Time::ZERO;
        c.act(t, &ctx(), &CallAction::Dial { to: "1002".into() });
        let invite = c.calls[0].invite.clone().expect("sent");
        let mut ok = invite.response(200, "OK", Some("callee"));
        ok.push("Contact", "<sip:b@csfbob.invalid;transport=tcp>");
        ok.body = sdp("10.1.0.101", 20000, 9, "sendrecv").into_bytes();
        c.on_response(t, &ctx(), &ok);
        c.sends.clear();
        let video = CallAction::Feature { name: "video".into() };
        c.act(t, &ctx(), &video);
        let port = c.calls[0].video_port.expect("offered");
        let Some(Send::Request(reinvite)) = c.sends.pop() else { panic!("a re-INVITE") };
        // The answer declines video: audio only (m=video 0).
        let mut ok = reinvite.request().response(200, "OK", Some("callee"));
        ok.body = sdp_answer("10.1.0.101", 20000, None, 9, "sendrecv", &reinvite.request().body)
            .into_bytes();
        assert!(String::from_utf8_lossy(&ok.body).contains("m=video 0 "));
        c.on_response(t, &ctx(), &ok);
        assert_eq!(c.calls[0].video_port, None);
        assert!(c.media.contains(&Output::MediaClose { port }));
        c.sends.clear();
        c.act(t, &ctx(), &video);
        assert_eq!(methods(&mut c.sends), ["INVITE"], "video may be asked for again");
    }

    #[test]
    fn answers_mirror_the_offers_m_lines() {
        // RFC 3264 §6: as many m-lines as offered, in order; what we do not take gets port 0.
        let offer = "v=0\r\nc=IN IP4 10.1.0.101\r\nm=video 5000 RTP/AVP 126\r\n\
                     m=audio 4000 RTP/AVP 0\r\nm=application 6000 UDP/BFCP *\r\n\
                     m=audio 4002 RTP/AVP 8\r\n";
        let m = |s: String| -> Vec<String> {
            s.lines().filter(|l| l.starts_with("m=")).map(str::to_owned).collect()
        };
        let a = sdp_answer("10.1.0.100", 16384, None, 1, "sendrecv", offer.as_bytes());
        assert_eq!(
            m(a),
            [
                "m=video 0 RTP/AVP 126",
                "m=audio 16384 RTP/AVP 102 9 0 8 18 101",
                "m=application 0 UDP/BFCP *",
                "m=audio 0 RTP/AVP 8"
            ]
        );
        let a = sdp_answer("10.1.0.100", 16384, Some(24576), 1, "sendrecv", offer.as_bytes());
        assert!(m(a)[0].starts_with("m=video 24576 "));
        // No offer (an offerless INVITE): our own offer, audio only.
        assert_eq!(m(sdp_answer("10.1.0.100", 16384, None, 1, "sendrecv", b"")).len(), 1);
    }

    #[test]
    fn ended_calls_are_forgotten_but_the_last_few() {
        let mut c = Calls::new(1, Timers::default(), (16384, 32766));
        for _ in 0..20 {
            c.act(Time::ZERO, &ctx(), &CallAction::Dial { to: "1002".into() });
            c.act(Time::ZERO, &ctx(), &CallAction::End);
        }
        assert!(c.calls.len() <= KEEP_ENDED + 1, "{}", c.calls.len());
    }

    #[test]
    fn media1_splits_the_range_as_the_document_does() {
        assert_eq!(audio_range((3000, 4000)), (3000, 3501));
        assert_eq!(video_range((3000, 4000)), (3502, 4000));
        assert_eq!(audio_range((16384, 32766)), (16384, 24574));
        assert_eq!(video_range((16384, 32766)), (24575, 32766));
    }

    #[test]
    fn sdp_offers_the_media3_codecs_and_reads_direction() {
        let o = sdp("10.1.0.100", 3000, 7, "sendonly");
        assert!(o.contains("m=audio 3000 RTP/AVP 102 9 0 8 18 101"));
        for c in
            ["G7221/16000", "G722/8000", "PCMU/8000", "PCMA/8000", "G729/8000", "telephone-event"]
        {
            assert!(o.contains(c), "{c}");
        }
        assert_eq!(direction(o.as_bytes()), "sendonly");
        assert_eq!(direction(b"v=0\r\n"), "sendrecv");
    }
}
