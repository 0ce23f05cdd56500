//! The SIP dialogs of calls (RFC 3261 §12–§15): responses to our requests, requests from the
//! peer (INVITE, re-INVITE, ACK, BYE, INFO, REFER, NOTIFY), and transactions that failed.

use super::*;

impl Calls {
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
