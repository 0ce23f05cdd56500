//! Engine tests: IM&P's endpoint and a Lync-style domain's talking in virtual time, and
//! scripted hostile requests.

use std::time::Duration;

use uclab_net::SeededRng;
use uclab_proto::pidf::FederatedState;
use uclab_proto::sip::{self, Message};

use super::*;

const A: &str = "example.com";
const B: &str = "lync.example.net";

struct Pair {
    a: Endpoint,
    b: Endpoint,
    now: Duration,
    /// Signals each side gave, in order.
    sa: Vec<Signal>,
    sb: Vec<Signal>,
    /// Every message that crossed, as `A>` or `B>` plus its summary.
    wire: Vec<String>,
    /// Drop what A sends (a peer that went quiet).
    a_mute: bool,
}

fn known(u: &str) -> bool {
    ["alice@example.com", "bob@lync.example.net", "carol@lync.example.net"].contains(&u)
}

impl Pair {
    fn new() -> Self {
        Self {
            a: Endpoint::new(A, "imp1.example.com", SeededRng::new(1, "a")),
            b: Endpoint::new(B, "sip.lync.example.net", SeededRng::new(1, "b")),
            now: Duration::ZERO,
            sa: Vec::new(),
            sb: Vec::new(),
            wire: Vec::new(),
            a_mute: false,
        }
    }

    /// Moves messages until both are quiet. A's requests reach B on connection 1, B's reach A
    /// on connection 2; each peer's certificate names its own domain.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(o) = self.a.poll_output() {
                moved = true;
                match o {
                    Output::Signal(s) => self.sa.push(s),
                    Output::Request { domain, msg } => {
                        assert_eq!(domain, B);
                        self.wire.push(format!("A> {}", serve::summary(&msg)));
                        if !self.a_mute {
                            self.b.handle(self.now, 1, msg, &certified(A), &known);
                        }
                    }
                    Output::Response { conn, msg } => {
                        assert_eq!(conn, 2);
                        self.wire.push(format!("A> {}", serve::summary(&msg)));
                        if !self.a_mute {
                            self.b.handle(self.now, 2, msg, &certified(A), &known);
                        }
                    }
                }
            }
            while let Some(o) = self.b.poll_output() {
                moved = true;
                match o {
                    Output::Signal(s) => self.sb.push(s),
                    Output::Request { domain, msg } => {
                        assert_eq!(domain, A);
                        self.wire.push(format!("B> {}", serve::summary(&msg)));
                        self.a.handle(self.now, 2, msg, &certified(B), &known);
                    }
                    Output::Response { conn, msg } => {
                        assert_eq!(conn, 1);
                        self.wire.push(format!("B> {}", serve::summary(&msg)));
                        self.a.handle(self.now, 1, msg, &certified(B), &known);
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Advances virtual time to `t`, firing every timer due on the way.
    fn advance(&mut self, t: Duration) {
        loop {
            let next = [self.a.poll_timeout(), self.b.poll_timeout()].into_iter().flatten().min();
            match next {
                Some(n) if n <= t => {
                    self.now = n.max(self.now);
                    self.a.handle_timeout(self.now);
                    self.b.handle_timeout(self.now);
                    self.pump();
                }
                _ => break,
            }
        }
        self.now = t;
    }
}

fn presence(from: &str, to: &str, state: FederatedState) -> Signal {
    Signal::Presence { from: from.into(), to: to.into(), state }
}

#[test]
fn subscription_carries_every_state_and_skips_repeats() {
    let mut p = Pair::new();
    p.a.subscribe(p.now, "alice@example.com/jabber", "bob@lync.example.net");
    p.pump();
    let sub = Signal::Subscribe {
        watcher: "alice@example.com".into(),
        user: "bob@lync.example.net".into(),
    };
    assert_eq!(p.sb, vec![sub]);
    assert!(p.b.watched_by("bob@lync.example.net", "alice@example.com"));
    // Pending first (not authorised yet): no body, so no presence on A's side.
    p.b.notify(p.now, "bob@lync.example.net", "alice@example.com", None);
    p.pump();
    assert!(p.sa.is_empty(), "{:?}", p.sa);
    for s in [
        FederatedState::Busy,
        FederatedState::Away,
        FederatedState::Available,
        FederatedState::Offline,
    ] {
        p.b.notify(p.now, "bob@lync.example.net", "alice@example.com", Some(s));
        // The same state again is not sent.
        p.b.notify(p.now, "bob@lync.example.net", "alice@example.com", Some(s));
        p.pump();
        assert_eq!(p.sa.pop(), Some(presence("bob@lync.example.net", "alice@example.com", s)));
        assert!(p.sa.is_empty());
    }
    let notifies = p.wire.iter().filter(|l| l.starts_with("B> SIP NOTIFY")).count();
    assert_eq!(notifies, 5, "{:#?}", p.wire);
    assert!(
        p.wire.iter().any(|l| l.contains("NOTIFY") && l.contains("active Busy")),
        "{:#?}",
        p.wire
    );
}

#[test]
fn unknown_user_and_unknown_domain_are_refused() {
    let mut p = Pair::new();
    p.a.subscribe(p.now, "alice@example.com", "nobody@lync.example.net");
    p.a.message(p.now, "alice@example.com/jabber", "nobody@lync.example.net", "hello?");
    p.pump();
    assert_eq!(
        p.sa,
        vec![
            Signal::Refused {
                kind: Kind::Subscribe,
                local: "alice@example.com".into(),
                remote: "nobody@lync.example.net".into(),
                code: 404,
                body: String::new()
            },
            Signal::Refused {
                kind: Kind::Message,
                local: "alice@example.com/jabber".into(),
                remote: "nobody@lync.example.net".into(),
                code: 404,
                body: "hello?".into()
            },
        ]
    );
    assert!(!p.a.watching("alice@example.com", "nobody@lync.example.net"));
}

#[test]
fn messages_cross_both_ways() {
    let mut p = Pair::new();
    p.a.message(p.now, "alice@example.com/jabber", "bob@lync.example.net", "Hi Bob <3");
    p.b.message(p.now, "bob@lync.example.net", "alice@example.com", "Hi Alice");
    p.pump();
    let to_b = Signal::Message {
        from: "alice@example.com".into(),
        to: "bob@lync.example.net".into(),
        body: "Hi Bob <3".into(),
    };
    let to_a = Signal::Message {
        from: "bob@lync.example.net".into(),
        to: "alice@example.com".into(),
        body: "Hi Alice".into(),
    };
    assert_eq!(p.sb, vec![to_b]);
    assert_eq!(p.sa, vec![to_a]);
    // The transcript form names the sender and never shows the text.
    assert!(p.wire.iter().all(|l| !l.contains("Hi Bob")), "{:#?}", p.wire);
}

/// Sends `m` to B as if from a peer whose certificate names `cert`; B's answer.
fn answer_of(b: &mut Endpoint, m: Message, cert: &'static str) -> Message {
    b.handle(Duration::ZERO, 9, m, &certified(cert), &known);
    let mut answer = None;
    while let Some(o) = b.poll_output() {
        if let Output::Response { conn: 9, msg } = o {
            answer = Some(msg);
        }
    }
    answer.expect("an answer")
}

fn raw(method: &str, from: &str, to: &str) -> Message {
    Message::request(method, &format!("sip:{to}"))
        .with("Via", "SIP/2.0/TLS 203.0.113.66:5061;branch=z9hG4bKx1")
        .with("Max-Forwards", "70")
        .with("From", format!("<sip:{from}>;tag=t1"))
        .with("To", format!("<sip:{to}>"))
        .with("Call-ID", "c1@evil")
        .with("CSeq", format!("1 {method}"))
}

#[test]
fn hostile_requests_get_the_rfc_answer() {
    let mut b = Endpoint::new(B, "sip.lync.example.net", SeededRng::new(1, "b"));
    // A peer speaking for a domain its certificate does not name.
    let m = raw("MESSAGE", "alice@example.com", "bob@lync.example.net")
        .with("Content-Type", "text/plain");
    let r = answer_of(&mut b, m.clone(), "evil.example");
    assert_eq!(r.code(), Some(403));
    assert!(r.get("Warning").is_some_and(|w| w.contains("does not name example.com")));
    // Not text/plain.
    let m = raw("MESSAGE", "alice@example.com", "bob@lync.example.net")
        .with("Content-Type", "application/x-msrp");
    assert_eq!(answer_of(&mut b, m, A).code(), Some(415));
    // Calls and file transfer (INVITE) are not carried.
    let r = answer_of(&mut b, raw("INVITE", "alice@example.com", "bob@lync.example.net"), A);
    assert_eq!(r.code(), Some(405));
    assert_eq!(r.get("Allow"), Some(ALLOW));
    // A NOTIFY outside any subscription.
    let m = raw("NOTIFY", "alice@example.com", "bob@lync.example.net")
        .with("Event", "presence")
        .with("Subscription-State", "active");
    assert_eq!(answer_of(&mut b, m, A).code(), Some(481));
    // Another event package.
    let m = raw("SUBSCRIBE", "alice@example.com", "bob@lync.example.net").with("Event", "dialog");
    assert_eq!(answer_of(&mut b, m, A).code(), Some(489));
    // Too short a subscription.
    let m = raw("SUBSCRIBE", "alice@example.com", "bob@lync.example.net")
        .with("Event", "presence")
        .with("Expires", "5");
    assert_eq!(answer_of(&mut b, m, A).code(), Some(423));
    // A request missing what RFC 3261 requires.
    let mut m = raw("MESSAGE", "alice@example.com", "bob@lync.example.net");
    m.remove("CSeq");
    assert_eq!(answer_of(&mut b, m, A).code(), Some(400));
    // Nothing was delivered, nothing subscribed.
    assert!(b.watchers("bob@lync.example.net").is_empty());
}

#[test]
fn a_bad_pidf_is_refused_and_the_subscription_stays() {
    let mut p = Pair::new();
    p.a.subscribe(p.now, "alice@example.com", "bob@lync.example.net");
    p.pump();
    // B's NOTIFY with a body that is not PIDF, made by hand inside the dialog.
    let mut bad = None;
    p.b.notify(p.now, "bob@lync.example.net", "alice@example.com", Some(FederatedState::Busy));
    while let Some(o) = p.b.poll_output() {
        if let Output::Request { msg, .. } = o {
            bad = Some(msg);
        }
    }
    let mut bad = bad.expect("a NOTIFY");
    bad.body = b"<presence><tuple>".to_vec();
    p.a.handle(p.now, 2, bad, &certified(B), &known);
    let r = std::iter::from_fn(|| p.a.poll_output())
        .find_map(|o| match o {
            Output::Response { msg, .. } => Some(msg),
            _ => None,
        })
        .expect("an answer");
    assert_eq!(r.code(), Some(400));
    assert!(p.a.watching("alice@example.com", "bob@lync.example.net"));
}

#[test]
fn unanswered_requests_fail_after_timer_f_and_a_lost_domain_at_once() {
    let mut p = Pair::new();
    p.a_mute = true;
    p.a.message(p.now, "alice@example.com", "bob@lync.example.net", "anyone?");
    p.pump();
    p.advance(TIMER_F - Duration::from_millis(1));
    assert!(p.sa.is_empty());
    p.advance(TIMER_F);
    assert!(
        matches!(&p.sa[..], [Signal::Refused { kind: Kind::Message, code: 408, .. }]),
        "{:?}",
        p.sa
    );
    // A connection that could not be made fails what waits for it at once.
    p.sa.clear();
    p.a.subscribe(p.now, "alice@example.com", "bob@lync.example.net");
    p.a.fail_domain(p.now, B, 502);
    p.pump();
    assert!(
        matches!(&p.sa[..], [Signal::Refused { kind: Kind::Subscribe, code: 502, .. }]),
        "{:?}",
        p.sa
    );
    assert!(!p.a.watching("alice@example.com", "bob@lync.example.net"));
}

#[test]
fn subscriptions_refresh_and_expire_when_not_refreshed() {
    let mut p = Pair::new();
    p.a.subscribe(p.now, "alice@example.com", "bob@lync.example.net");
    p.pump();
    p.b.notify(p.now, "bob@lync.example.net", "alice@example.com", Some(FederatedState::Available));
    p.pump();
    // At half the granted hour A refreshes, and B keeps the subscription past the hour.
    p.advance(Duration::from_secs(SUB_EXPIRES as u64 + 100));
    let refreshes = p.wire.iter().filter(|l| l.starts_with("A> SIP SUBSCRIBE")).count();
    assert_eq!(refreshes, 3, "{:#?}", p.wire);
    assert!(p.b.watched_by("bob@lync.example.net", "alice@example.com"));
    // A goes quiet: B ends the subscription an hour after the last refresh.
    p.a_mute = true;
    p.advance(Duration::from_secs(3 * SUB_EXPIRES as u64));
    let gone = Signal::Unsubscribe {
        watcher: "alice@example.com".into(),
        user: "bob@lync.example.net".into(),
    };
    assert!(p.sb.contains(&gone), "{:?}", p.sb);
    assert!(!p.b.watched_by("bob@lync.example.net", "alice@example.com"));
}

#[test]
fn unsubscribe_and_rejection_end_subscriptions() {
    let mut p = Pair::new();
    p.a.subscribe(p.now, "alice@example.com", "bob@lync.example.net");
    p.b.subscribe(p.now, "carol@lync.example.net", "alice@example.com");
    p.pump();
    // A withdraws: B is told and forgets.
    p.a.unsubscribe(p.now, "alice@example.com", "bob@lync.example.net");
    p.pump();
    let gone = Signal::Unsubscribe {
        watcher: "alice@example.com".into(),
        user: "bob@lync.example.net".into(),
    };
    assert_eq!(p.sb.last(), Some(&gone));
    assert!(!p.b.watched_by("bob@lync.example.net", "alice@example.com"));
    // Alice refuses Carol: Carol's side hears a rejection.
    p.a.terminate(p.now, "alice@example.com", "carol@lync.example.net");
    p.pump();
    assert!(
        matches!(p.sb.last(), Some(Signal::Refused { kind: Kind::Subscribe, code: 403, .. })),
        "{:?}",
        p.sb
    );
    assert!(!p.b.watching("carol@lync.example.net", "alice@example.com"));
    let sip_ok = p.wire.iter().all(|l| !l.contains("SIP 4") && !l.contains("SIP 5"));
    assert!(sip_ok, "{:#?}", p.wire);
    let _ = sip::reason(200);
}

/// A peer refreshing its subscription again and again keeps one timer for it, and answered
/// requests leave none behind.
#[test]
fn refreshes_do_not_grow_the_timers() {
    let mut p = Pair::new();
    p.a.subscribe(p.now, "alice@example.com", "bob@lync.example.net");
    p.pump();
    let base = (p.a.timer_count(), p.b.timer_count());
    for _ in 0..50 {
        // A's refresh, as its timer would send it, many times over.
        p.advance(p.now + Duration::from_secs(SUB_EXPIRES as u64 / 2 + 1));
    }
    assert!(p.b.watched_by("bob@lync.example.net", "alice@example.com"));
    assert_eq!((p.a.timer_count(), p.b.timer_count()), base, "timers stay as they were");
}
