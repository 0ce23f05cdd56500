//! Calls of the softphone (SPEC CC4, CC5, MEDIA1, MEDIA3), the dialog half of the SIP user
//! agent; [`crate::sip::phone::Phone`] owns the connection and hands requests and responses here.
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
use std::net::{SocketAddr, SocketAddrV4};
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
pub const DSCP_AUDIO: u8 = uclab_proto::dscp::AUDIO;
/// DSCP of video (SPEC MEDIA2: AF41).
pub const DSCP_VIDEO: u8 = uclab_proto::dscp::VIDEO;
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

    /// Whether any call is not over.
    pub(crate) fn any_up(&self) -> bool {
        self.calls.iter().any(|c| c.state != CallState::Ended)
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
            .with("User-Agent", crate::sip::USER_AGENT)
    }

    fn request(&mut self, now: Time, m: Message) {
        let t = ClientTxn::new(now, m, self.reliable, self.timers);
        self.sends.push(Send::Request(Box::new(t)));
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
            route: ctx.route.iter().cloned().collect(),
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
    /// Through the edge: the route a dialog's first request takes (WIRE.md `sipRequest`).
    pub(crate) route: Option<String>,
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

mod dialog;
mod media;
mod sdp;
mod transfer;
use media::{Pkt, RtpOut};
use sdp::{RemoteSdp, direction, remote_sdp};
pub use sdp::{audio_range, sdp, sdp_answer, sdp_av, video_range};

#[cfg(test)]
mod tests;
