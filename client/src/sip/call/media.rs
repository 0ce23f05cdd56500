//! Media (SPEC MEDIA1–MEDIA3): the synthetic RTP bursts of a connected call, RFC 4733
//! telephone-events, and what arrives on the call's media ports.

use super::*;

/// A MEDIA3 audio codec: payload type, name, RTP clock, timestamp step and payload bytes per
/// 20 ms, and the byte silence is made of.
pub(super) struct Codec {
    pt: u8,
    name: &'static str,
    clock: u32,
    bytes: usize,
    fill: u8,
}

pub(super) const CODECS: [Codec; 5] = [
    Codec { pt: 102, name: "G7221/16000", clock: 16000, bytes: 80, fill: 0 },
    Codec { pt: 9, name: "G722/8000", clock: 8000, bytes: 160, fill: 0 },
    Codec { pt: 0, name: "PCMU/8000", clock: 8000, bytes: 160, fill: 0xff },
    Codec { pt: 8, name: "PCMA/8000", clock: 8000, bytes: 160, fill: 0xd5 },
    Codec { pt: 18, name: "G729/8000", clock: 8000, bytes: 20, fill: 0 },
];

/// One RTP stream we send.
#[derive(Debug)]
pub(super) struct RtpOut {
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
    pub(super) fn ts(&self, t: Time) -> u32 {
        let us = t.saturating_sub(self.start).as_micros();
        let ticks = us * u128::from(self.clock) / 1_000_000;
        self.ts0.wrapping_add(ticks as u32)
    }

    pub(super) fn packet(&mut self, marker: bool, pt: u8, ts: u32, payload: Vec<u8>) -> Vec<u8> {
        let p = Rtp { marker, pt, seq: self.seq, ts, ssrc: self.ssrc, payload };
        self.seq = self.seq.wrapping_add(1);
        p.to_bytes()
    }
}

/// A media packet due to be sent.
#[derive(Clone, Copy, Debug)]
pub(super) enum Pkt {
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

impl Calls {
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

    pub(super) fn schedule(&mut self, at: Time, id: u32, pkt: Pkt) {
        self.media_n += 1;
        self.media_q.insert((at, self.media_n), (id, pkt));
    }

    /// Starts (or restarts, after a resume) call `i`'s audio burst to the peer's SDP address.
    pub(super) fn start_audio(&mut self, now: Time, i: usize) {
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
    pub(super) fn burst(
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
    pub(super) fn start_video(&mut self, now: Time, i: usize) {
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
    pub(super) fn send_rfc4733(&mut self, now: Time, i: usize, digits: &str) -> bool {
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
    pub(super) fn close_media(&mut self, i: usize) {
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
    pub(super) fn drop_video(&mut self, i: usize) {
        let c = &mut self.calls[i];
        c.video_out = None;
        if let Some(v) = c.video_port.take() {
            self.media.push(Output::MediaClose { port: v });
        }
    }
}
