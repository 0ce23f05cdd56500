//! Line-side presence of the softphone (SPEC CC6): a SUBSCRIBE (`Event: presence`) per
//! watched number, the NOTIFYs that follow (PIDF: `idle`, `busy` with RPID `on-the-phone`,
//! `unknown` when `closed`), refreshes before the subscription expires, and a new
//! subscription after the phone registers somewhere else (a failover loses the old one with
//! its connection).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use uclab_proto::sip::txn::{ClientTxn, Timers};
use uclab_proto::sip::{self, Message};

use crate::Time;
use crate::event::ClientEvent;
use crate::sip::call::{Ctx, Send, hex};

/// What the phone asks for.
const EXPIRES: u32 = 3600;

#[derive(Debug)]
struct Watch {
    target: String,
    call_id: String,
    local_tag: String,
    remote_tag: Option<String>,
    /// Where in-dialog requests go: the notifier's Contact.
    remote_target: Option<String>,
    cseq: u32,
    /// A 2xx came; refresh at this time.
    refresh_at: Option<Time>,
    /// The state last reported.
    state: Option<String>,
}

/// The phone's watched numbers.
#[derive(Debug)]
pub(crate) struct Watches {
    list: Vec<Watch>,
    rng: ChaCha8Rng,
    timers: Timers,
    /// The transport is reliable (TCP, TLS); over UDP transactions retransmit.
    pub(crate) reliable: bool,
    pub(crate) events: Vec<ClientEvent>,
    pub(crate) sends: Vec<Send>,
}

/// The line state of a PIDF document.
fn pidf_state(body: &[u8]) -> &'static str {
    let t = String::from_utf8_lossy(body);
    if t.contains("<basic>closed</basic>") || !t.contains("<basic>open</basic>") {
        "unknown"
    } else if t.contains("on-the-phone") {
        "busy"
    } else {
        "idle"
    }
}

impl Watches {
    pub(crate) fn new(seed: u64, timers: Timers) -> Self {
        Self {
            list: Vec::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            timers,
            reliable: true,
            events: Vec::new(),
            sends: Vec::new(),
        }
    }

    /// Whether a Call-ID is one of our subscriptions.
    pub(crate) fn owns(&self, call_id: &str) -> bool {
        self.list.iter().any(|w| w.call_id == call_id)
    }

    /// Starts watching `to` (a directory number).
    pub(crate) fn watch(&mut self, now: Time, ctx: &Ctx, to: &str) {
        if self.list.iter().any(|w| w.target == to) {
            return;
        }
        let w = Watch {
            target: to.to_owned(),
            call_id: format!("{}-blf@{}", hex(&mut self.rng, 16), ctx.local_host),
            local_tag: hex(&mut self.rng, 16),
            remote_tag: None,
            remote_target: None,
            cseq: 100,
            refresh_at: None,
            state: None,
        };
        self.list.push(w);
        let i = self.list.len() - 1;
        self.subscribe(now, ctx, i, EXPIRES);
    }

    fn subscribe(&mut self, now: Time, ctx: &Ctx, i: usize, expires: u32) {
        let branch = hex(&mut self.rng, 16);
        let w = &mut self.list[i];
        w.cseq += 1;
        let uri = w
            .remote_target
            .clone()
            .unwrap_or_else(|| format!("sip:{}@{}", w.target, ctx.registrar));
        let to = match &w.remote_tag {
            Some(t) => format!("<sip:{}@{}>;tag={t}", w.target, ctx.registrar),
            None => format!("<sip:{}@{}>", w.target, ctx.registrar),
        };
        let mut m = Message::request("SUBSCRIBE", &uri);
        // Through the edge, a new subscription takes the edge's route (WIRE.md).
        if w.remote_tag.is_none()
            && let Some(r) = &ctx.route
        {
            m.push("Route", r.clone());
        }
        let m = m
            .with(
                "Via",
                format!(
                    "SIP/2.0/{} {};branch=z9hG4bK{branch}{}",
                    ctx.transport,
                    ctx.local_host,
                    crate::sip::call::rport(ctx.transport)
                ),
            )
            .with("Max-Forwards", "70")
            .with("From", format!("<sip:{}@{}>;tag={}", ctx.line, ctx.registrar, w.local_tag))
            .with("To", to)
            .with("Call-ID", w.call_id.clone())
            .with("CSeq", format!("{} SUBSCRIBE", w.cseq))
            .with("Contact", ctx.contact.clone())
            .with("Event", "presence")
            .with("Accept", "application/pidf+xml")
            .with("Expires", expires.to_string())
            .with("User-Agent", crate::sip::USER_AGENT);
        w.refresh_at = None;
        let t = ClientTxn::new(now, m, self.reliable, self.timers);
        self.sends.push(Send::Request(Box::new(t)));
    }

    /// The phone registered again (maybe elsewhere): every subscription starts afresh, as the
    /// old ones went with the old connection.
    pub(crate) fn resubscribe(&mut self, now: Time, ctx: &Ctx) {
        for i in 0..self.list.len() {
            let w = &mut self.list[i];
            w.call_id = format!("{}-blf@{}", hex(&mut self.rng, 16), ctx.local_host);
            w.remote_tag = None;
            w.remote_target = None;
            self.subscribe(now, ctx, i, EXPIRES);
        }
    }

    /// A final response to a SUBSCRIBE.
    pub(crate) fn on_response(&mut self, now: Time, r: &Message) {
        let Some(code) = r.code() else { return };
        let Some(i) = self.list.iter().position(|w| Some(w.call_id.as_str()) == r.call_id()) else {
            return;
        };
        if (200..300).contains(&code) {
            let expires = r.expires().unwrap_or(EXPIRES);
            let w = &mut self.list[i];
            w.remote_tag = w.remote_tag.take().or_else(|| r.tag("To"));
            if let Some(c) = r.name_addr("Contact") {
                w.remote_target = Some(c.uri);
            }
            // Refresh at nine tenths of the granted time (RFC 6665 leaves it to the
            // subscriber; at least a second).
            w.refresh_at = Some(
                now + std::time::Duration::from_secs(
                    u64::from(expires.clamp(10, EXPIRES)) * 9 / 10,
                ),
            );
        } else if code >= 300 {
            let w = self.list.remove(i);
            let reason = match &r.start {
                sip::Start::Response { reason, .. } => reason.clone(),
                _ => String::new(),
            };
            self.events.push(ClientEvent::BlfRefused { target: w.target, code, reason });
        }
    }

    /// A SUBSCRIBE got no answer.
    pub(crate) fn on_timeout(&mut self, call_id: &str) {
        if let Some(i) = self.list.iter().position(|w| w.call_id == call_id) {
            let w = self.list.remove(i);
            self.events.push(ClientEvent::BlfRefused {
                target: w.target,
                code: 408,
                reason: "no answer".into(),
            });
        }
    }

    /// A NOTIFY: the state, and our 200 (481 when it is for no subscription of ours).
    pub(crate) fn on_notify(&mut self, m: &Message, ctx: &Ctx) -> Message {
        let reply = |code: u16| {
            let mut r = m.response(code, sip::reason(code), None);
            r.push("Contact", ctx.contact.clone());
            r
        };
        let i = self.list.iter().position(|w| {
            Some(w.call_id.as_str()) == m.call_id()
                && m.tag("To").as_deref() == Some(w.local_tag.as_str())
        });
        let Some(i) = i else { return reply(481) };
        let terminated = m
            .get("Subscription-State")
            .is_some_and(|s| s.trim().to_ascii_lowercase().starts_with("terminated"));
        let state = pidf_state(&m.body);
        let w = &mut self.list[i];
        if w.remote_tag.is_none() {
            w.remote_tag = m.tag("From");
        }
        if w.state.as_deref() != Some(state) {
            w.state = Some(state.to_owned());
            self.events
                .push(ClientEvent::BlfState { target: w.target.clone(), state: state.into() });
        }
        if terminated {
            let w = self.list.remove(i);
            self.events
                .push(ClientEvent::BlfState { target: w.target, state: "terminated".into() });
        }
        reply(200)
    }

    /// When a refresh is due.
    pub(crate) fn poll_timeout(&self) -> Option<Time> {
        self.list.iter().filter_map(|w| w.refresh_at).min()
    }

    /// Refreshes what is due.
    pub(crate) fn handle_timeout(&mut self, now: Time, ctx: &Ctx) {
        for i in 0..self.list.len() {
            if self.list[i].refresh_at.is_some_and(|t| t <= now) {
                self.subscribe(now, ctx, i, EXPIRES);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pidf_states() {
        let open =
            b"<presence><tuple id=\"1\"><status><basic>open</basic></status></tuple></presence>";
        assert_eq!(pidf_state(open), "idle");
        let busy = b"<presence><tuple><status><basic>open</basic></status></tuple><dm:person><rpid:activities><rpid:on-the-phone/></rpid:activities></dm:person></presence>";
        assert_eq!(pidf_state(busy), "busy");
        assert_eq!(pidf_state(b"<basic>closed</basic>"), "unknown");
        assert_eq!(pidf_state(b"garbage"), "unknown");
    }
}
