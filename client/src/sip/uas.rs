//! The phone's server side over UDP (RFC 3261 §17.2, §13.3.1.4), sans-IO.
//!
//! Over UDP a request can arrive twice (the sender's Timer A/E retransmissions) and a
//! response can be lost. The phone keeps each request it answered for 64·T1: a retransmission
//! gets the last response again and never reaches the call engine twice, and the ACK of a
//! non-2xx final response is absorbed. A 2xx to an INVITE is sent again at T1, 2·T1, … up to
//! T2 until its ACK arrives (the UAS core's job, §13.3.1.4), for 64·T1 at most.

use std::collections::VecDeque;
use std::time::Duration;

use uclab_proto::sip::Message;
use uclab_proto::sip::txn::Timers;

use crate::Time;

/// Requests remembered at most (the oldest go first).
const MAX_ENTRIES: usize = 64;

#[derive(Debug)]
struct Entry {
    branch: String,
    method: String,
    call_id: String,
    cseq: u32,
    /// The last response sent.
    last: Option<Message>,
    /// Forgotten after this.
    until: Time,
    /// A 2xx to an INVITE waiting for its ACK: when to send it again, and the interval.
    resend: Option<(Time, Duration)>,
}

/// What to do with a request that came in.
#[derive(Debug, PartialEq)]
pub(crate) enum Seen {
    /// New: the call engine handles it.
    New,
    /// A retransmission: send this response again (or nothing, if none was sent yet).
    Again(Option<Message>),
}

/// The phone's answered requests.
#[derive(Debug)]
pub(crate) struct Uas {
    timers: Timers,
    entries: VecDeque<Entry>,
}

fn key(m: &Message) -> Option<(String, String, u32)> {
    let via = m.vias().into_iter().next()?;
    let branch = via.split(';').find_map(|p| p.trim().strip_prefix("branch="))?.to_owned();
    let (cseq, _) = m.cseq()?;
    Some((branch, m.call_id()?.to_owned(), cseq))
}

impl Uas {
    pub(crate) fn new(timers: Timers) -> Self {
        Self { timers, entries: VecDeque::new() }
    }

    /// A request arrived at `now`.
    pub(crate) fn on_request(&mut self, now: Time, m: &Message) -> Seen {
        let Some((branch, call_id, cseq)) = key(m) else { return Seen::New };
        let method = m.method().unwrap_or("").to_owned();
        self.expire(now);
        if method == "ACK" {
            // The ACK of a 2xx (a new branch) ends its retransmissions and goes to the call;
            // the ACK of a non-2xx final (the INVITE's branch) ends here.
            let invite = self
                .entries
                .iter_mut()
                .find(|e| e.method == "INVITE" && e.call_id == call_id && e.cseq == cseq);
            if let Some(e) = invite {
                e.resend = None;
                let non_2xx = e.last.as_ref().and_then(Message::code).is_some_and(|c| c >= 300);
                if non_2xx && e.branch == branch {
                    return Seen::Again(None);
                }
            }
            return Seen::New;
        }
        if let Some(e) = self.entries.iter().find(|e| e.branch == branch && e.method == method) {
            return Seen::Again(e.last.clone());
        }
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.pop_front();
        }
        let until = now + self.timers.t1 * 64;
        self.entries.push_back(Entry {
            branch,
            method,
            call_id,
            cseq,
            last: None,
            until,
            resend: None,
        });
        Seen::New
    }

    /// The phone sent response `r` at `now`: it is kept for retransmissions of its request.
    pub(crate) fn on_response(&mut self, now: Time, r: &Message) {
        let Some((branch, _, _)) = key(r) else { return };
        let method = r.cseq().map(|(_, m)| m.to_owned()).unwrap_or_default();
        let Some(e) = self.entries.iter_mut().find(|e| e.branch == branch && e.method == method)
        else {
            return;
        };
        e.last = Some(r.clone());
        let ok = r.code().is_some_and(|c| (200..300).contains(&c));
        e.resend = (ok && method == "INVITE").then(|| (now + self.timers.t1, self.timers.t1));
        e.until = now + self.timers.t1 * 64;
    }

    /// Forgets what is over; returns the Call-IDs of 2xx responses never acknowledged.
    fn expire(&mut self, now: Time) -> Vec<String> {
        let mut no_ack = Vec::new();
        self.entries.retain(|e| {
            let keep = e.until > now;
            if !keep && e.resend.is_some() {
                no_ack.push(e.call_id.clone());
            }
            keep
        });
        no_ack
    }

    /// The next retransmission, or the end of a 2xx's wait for its ACK.
    pub(crate) fn poll_timeout(&self) -> Option<Time> {
        self.entries.iter().filter_map(|e| e.resend.map(|(at, _)| at.min(e.until))).min()
    }

    /// Time passed: the 2xx responses due again, and the Call-IDs of those whose ACK never
    /// came within 64·T1 (§13.3.1.4: the call is to end with a BYE).
    pub(crate) fn handle_timeout(&mut self, now: Time) -> (Vec<Message>, Vec<String>) {
        let no_ack = self.expire(now);
        let t2 = self.timers.t2;
        let mut out = Vec::new();
        for e in &mut self.entries {
            if let Some((at, interval)) = e.resend
                && at <= now
            {
                let next = (interval * 2).min(t2);
                e.resend = Some((now + next, next));
                out.extend(e.last.clone());
            }
        }
        (out, no_ack)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uclab_proto::sip::parse;

    fn req(method: &str, branch: &str, cseq: u32) -> Message {
        let text = format!(
            "{method} sip:a@csfalice.invalid SIP/2.0\r\nVia: SIP/2.0/UDP 10.1.0.11:5060;branch={branch}\r\n\
             From: <sip:1002@cucm1>;tag=b\r\nTo: <sip:1001@cucm1>\r\nCall-ID: c1\r\n\
             CSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn retransmissions_get_the_last_response_and_a_2xx_repeats_until_its_ack() {
        let mut u = Uas::new(Timers::default());
        let t0 = Time::ZERO;
        let again = |u: &mut Uas, at: Duration| u.handle_timeout(at).0.len();
        let inv = req("INVITE", "z9hG4bK1", 1);
        assert_eq!(u.on_request(t0, &inv), Seen::New);
        assert_eq!(u.on_request(t0, &inv), Seen::Again(None), "not answered yet: absorbed");
        let ringing = inv.response(180, "Ringing", Some("a"));
        u.on_response(t0, &ringing);
        assert_eq!(u.on_request(t0, &inv), Seen::Again(Some(ringing)));
        let ok = inv.response(200, "OK", Some("a"));
        u.on_response(t0, &ok);
        // T1 = 500 ms: again at 0.5 s, then 1 s later, then 2 s later.
        assert_eq!(u.poll_timeout(), Some(Duration::from_millis(500)));
        assert_eq!(again(&mut u, Duration::from_millis(500)), 1);
        assert_eq!(u.poll_timeout(), Some(Duration::from_millis(1500)));
        // The ACK (its own branch) stops them and goes to the call engine.
        let ack = req("ACK", "z9hG4bK2", 1);
        assert_eq!(u.on_request(Duration::from_secs(1), &ack), Seen::New);
        assert_eq!(u.poll_timeout(), None);
        // Forgotten after 64·T1.
        assert_eq!(u.on_request(Duration::from_secs(40), &inv), Seen::New);
    }

    #[test]
    fn a_2xx_never_acknowledged_is_reported_after_64_t1() {
        let mut u = Uas::new(Timers::default());
        let inv = req("INVITE", "z9hG4bK3", 1);
        u.on_request(Time::ZERO, &inv);
        u.on_response(Time::ZERO, &inv.response(200, "OK", Some("a")));
        let mut sent = 0;
        let mut gone = Vec::new();
        while let Some(t) = u.poll_timeout() {
            let (again, no_ack) = u.handle_timeout(t);
            sent += again.len();
            gone.extend(no_ack);
        }
        assert_eq!(gone, ["c1"]);
        assert!((7..=15).contains(&sent), "T1 doubling to T2 over 32 s: {sent}");
    }

    #[test]
    fn the_ack_of_a_refusal_is_absorbed() {
        let mut u = Uas::new(Timers::default());
        let inv = req("INVITE", "z9hG4bK7", 1);
        assert_eq!(u.on_request(Time::ZERO, &inv), Seen::New);
        u.on_response(Time::ZERO, &inv.response(486, "Busy Here", Some("a")));
        assert_eq!(u.poll_timeout(), None, "no retransmission of a non-2xx here");
        assert_eq!(u.on_request(Time::ZERO, &req("ACK", "z9hG4bK7", 1)), Seen::Again(None));
        for n in 0..100 {
            u.on_request(Time::ZERO, &req("INFO", &format!("z9hG4bKi{n}"), n + 2));
        }
        assert!(u.entries.len() <= MAX_ENTRIES);
    }
}
