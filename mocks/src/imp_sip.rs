//! IM&P's end of CUCM's SIP trunk (SPEC CC7, "IMP PUBLISH Trunk"): PUBLISH requests with the
//! users' line states (PIDF, RPID `on-the-phone` for busy) feed the Rich Presence Service,
//! which composes "On the phone" into the users' XMPP presence ([`Router::phone_state`]).
//!
//! Over UDP 5060 of each IM&P node. Anything but a readable PUBLISH (`Event: presence`) for a
//! user of the presence domain gets its SIP error; OPTIONS is answered.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use uclab_proto::sip::{self, Message, Start};

use crate::router::Router;
use crate::sip::summary;

/// Longest publication granted (RFC 3903 §6: the server may shorten it), and the default.
const MAX_EXPIRES: u32 = 3600;

/// One user's published phone state (RFC 3903): CUCM is the one publisher per user, so a
/// user has at most one publication and the table is bounded by the users of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Publication {
    etag: String,
    expires_at: Duration,
    busy: bool,
}

/// IM&P's trunk state: the users it serves and their publications.
#[derive(Debug)]
pub struct Trunk {
    domain: String,
    /// User ids of the cluster, lower case.
    users: BTreeSet<String>,
    publications: BTreeMap<String, Publication>,
    /// Numbers entity tags (with the node's seed, so tags differ between nodes and runs).
    counter: u64,
    seed: u64,
}

impl Trunk {
    /// The trunk of presence domain `domain`, serving `users`.
    pub fn new(domain: &str, users: impl IntoIterator<Item = String>, seed: u64) -> Self {
        Self {
            domain: domain.to_ascii_lowercase(),
            users: users.into_iter().map(|u| u.to_ascii_lowercase()).collect(),
            publications: BTreeMap::new(),
            counter: 0,
            seed,
        }
    }

    /// When the next publication expires, if any.
    pub fn next_expiry(&self) -> Option<Duration> {
        self.publications.values().map(|p| p.expires_at).min()
    }

    /// Publications expired by `now` go (RFC 3903 §6); the users whose phone was busy are
    /// returned as idle again.
    pub fn expire(&mut self, now: Duration) -> Vec<(String, bool)> {
        let gone: Vec<String> = self
            .publications
            .iter()
            .filter(|(_, p)| p.expires_at <= now)
            .map(|(u, _)| u.clone())
            .collect();
        gone.into_iter()
            .filter_map(|u| {
                let p = self.publications.remove(&u)?;
                p.busy.then(|| (self.jid(&u), false))
            })
            .collect()
    }

    fn jid(&self, user: &str) -> String {
        format!("{user}@{}", self.domain)
    }

    fn etag(&mut self, user: &str) -> String {
        self.counter += 1;
        let mut h = self.seed ^ self.counter.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for b in user.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        format!("{h:016x}")
    }

    /// What IM&P answers a trunk request with at `now`, and the presence change it makes
    /// (user's JID, busy).
    pub fn handle(&mut self, now: Duration, m: &Message) -> (Message, Option<(String, bool)>) {
        let reply = |code: u16| {
            let mut r = m.response(code, sip::reason(code), Some("imp"));
            r.push("Server", "Cisco-IMP14.0");
            r
        };
        let Start::Request { method, uri } = &m.start else { return (reply(400), None) };
        match method.as_str() {
            "PUBLISH" => {}
            "OPTIONS" => return (reply(200), None),
            _ => {
                let mut r = reply(405);
                r.push("Allow", "PUBLISH, OPTIONS");
                return (r, None);
            }
        }
        let event = m.get("Event").map(|e| e.split(';').next().unwrap_or("").trim());
        if !event.is_some_and(|e| e.eq_ignore_ascii_case("presence")) {
            let mut r = reply(489);
            r.push("Allow-Events", "presence");
            return (r, None);
        }
        // sip:user@domain: the presence entity of a user of the cluster.
        let addr = uri.split_once(':').map(|(_, r)| r).unwrap_or("");
        let addr = addr.split([';', '?']).next().unwrap_or("");
        let Some((user, host)) = addr.rsplit_once('@') else { return (reply(404), None) };
        let user = user.to_ascii_lowercase();
        if !host.eq_ignore_ascii_case(&self.domain) || !self.users.contains(&user) {
            return (reply(404), None);
        }
        let expires = m.expires().unwrap_or(MAX_EXPIRES).min(MAX_EXPIRES);
        let was_busy = self.publications.get(&user).is_some_and(|p| p.busy && p.expires_at > now);
        let body = String::from_utf8_lossy(&m.body);
        let busy = match m.get("SIP-If-Match") {
            // RFC 3903 §6: a refresh, modify or remove names the publication it changes.
            Some(tag) => {
                let Some(p) = self.publications.get(&user).filter(|p| p.expires_at > now) else {
                    return (reply(412), None);
                };
                if p.etag != tag.trim() {
                    return (reply(412), None);
                }
                if expires == 0 {
                    self.publications.remove(&user);
                    let mut r = reply(200);
                    r.push("Expires", "0");
                    return (r, (was_busy).then(|| (self.jid(&user), false)));
                }
                if m.body.is_empty() {
                    p.busy // a refresh keeps the state
                } else if body.contains("<presence") {
                    body.contains("on-the-phone")
                } else {
                    return (reply(400), None);
                }
            }
            // An initial publication must carry state (§6, step 4); CUCM's new one replaces
            // its previous one for the user.
            None if expires == 0 || !body.contains("<presence") => return (reply(400), None),
            None => body.contains("on-the-phone"),
        };
        let etag = self.etag(&user);
        let exp = now + Duration::from_secs(u64::from(expires));
        self.publications
            .insert(user.clone(), Publication { etag: etag.clone(), expires_at: exp, busy });
        let mut r = reply(200);
        r.push("SIP-ETag", etag);
        r.push("Expires", expires.to_string());
        (r, (busy != was_busy).then(|| (self.jid(&user), busy)))
    }
}

/// Serves the trunk on UDP `port` until the node stops.
pub async fn serve<N: uclab_net::Net>(
    net: N,
    port: u16,
    mut trunk: Trunk,
    router: Rc<RefCell<Router>>,
) -> std::io::Result<()> {
    let mut udp = net.bind_udp(port).await?;
    udp.set_dscp(crate::sip::DSCP_SIGNALLING);
    let local = udp.local_addr();
    let mut buf = vec![0u8; 65_535];
    loop {
        let wait = trunk.next_expiry().map(|at| at.saturating_sub(net.now()));
        let got = match wait {
            Some(w) => tokio::time::timeout(w, udp.recv_from(&mut buf)).await.ok(),
            None => Some(udp.recv_from(&mut buf).await),
        };
        let Some(got) = got else {
            // A publication ran out: the phone state it said is gone.
            for (user, busy) in trunk.expire(net.now()) {
                router.borrow_mut().phone_state(&user, busy);
            }
            continue;
        };
        let (n, from) = got?;
        let Ok(m) = sip::parse(&buf[..n]) else { continue };
        if m.code().is_some() {
            continue; // no requests of ours are out
        }
        let (r, change) = trunk.handle(net.now(), &m);
        net.transcript().message(net.now(), local, from, "udp", &summary(&r));
        let _ = udp.send_to(&r.to_bytes(), from).await;
        if let Some((user, busy)) = change {
            router.borrow_mut().phone_state(&user, busy);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(uri: &str, event: &str, body: &str, expires: u32) -> Message {
        let text = format!(
            "PUBLISH {uri} SIP/2.0\r\nVia: SIP/2.0/UDP cucm1:5060;branch=z9hG4bK1\r\n\
             From: <sip:1001@cucm1>;tag=a\r\nTo: <{uri}>\r\nCall-ID: p1\r\nCSeq: 1 PUBLISH\r\n\
             Max-Forwards: 70\r\nEvent: {event}\r\nExpires: {expires}\r\n\
             Content-Type: application/pidf+xml\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        sip::parse(text.as_bytes()).expect("test message parses")
    }

    fn trunk() -> Trunk {
        Trunk::new("example.com", ["alice".to_owned(), "bob".to_owned()], 7)
    }

    fn etag(r: &Message) -> String {
        r.get("SIP-ETag").expect("an entity tag").to_owned()
    }

    #[test]
    fn cc7_publish_sets_and_clears_the_phone_state() {
        let mut t = trunk();
        let now = Duration::ZERO;
        let busy = crate::sip::pidf("sip:alice@example.com", "1001", "busy");
        let (r, c) = t.handle(now, &publish("sip:alice@example.com", "presence", &busy, 3600));
        assert_eq!(r.code(), Some(200));
        assert_eq!(c, Some(("alice@example.com".into(), true)));
        // RFC 3903: a modify names the publication; a new tag comes back.
        let idle = crate::sip::pidf("sip:alice@example.com", "1001", "idle");
        let mut m = publish("sip:alice@example.com", "presence", &idle, 3600);
        m.push("SIP-If-Match", etag(&r));
        let (r2, c) = t.handle(now, &m);
        assert_eq!(c, Some(("alice@example.com".into(), false)));
        assert_ne!(etag(&r2), etag(&r));
        // The old tag no longer matches: 412.
        let mut stale = publish("sip:alice@example.com", "presence", "", 60);
        stale.push("SIP-If-Match", etag(&r));
        assert_eq!(t.handle(now, &stale).0.code(), Some(412));
        // Busy again, then removed with Expires 0: idle.
        let (r3, _) = t.handle(now, &publish("sip:alice@example.com", "presence", &busy, 60));
        let mut rm = publish("sip:alice@example.com", "presence", "", 0);
        rm.push("SIP-If-Match", etag(&r3));
        let (r4, c) = t.handle(now, &rm);
        assert_eq!((r4.code(), c), (Some(200), Some(("alice@example.com".into(), false))));
    }

    #[test]
    fn cc7_publications_expire_and_a_refresh_keeps_the_state() {
        let mut t = trunk();
        let busy = crate::sip::pidf("sip:bob@example.com", "1002", "busy");
        let (r, _) =
            t.handle(Duration::ZERO, &publish("sip:bob@example.com", "presence", &busy, 60));
        assert_eq!(r.get("Expires"), Some("60"));
        let mut refresh = publish("sip:bob@example.com", "presence", "", 60);
        refresh.push("SIP-If-Match", etag(&r));
        let (r, c) = t.handle(Duration::from_secs(50), &refresh);
        assert_eq!((r.code(), c), (Some(200), None), "no change, still busy");
        assert_eq!(t.next_expiry(), Some(Duration::from_secs(110)));
        assert!(t.expire(Duration::from_secs(109)).is_empty());
        assert_eq!(t.expire(Duration::from_secs(110)), [("bob@example.com".to_owned(), false)]);
        assert_eq!(t.next_expiry(), None);
    }

    #[test]
    fn cc7_refusals() {
        let mut t = trunk();
        let busy = crate::sip::pidf("sip:alice@example.com", "1001", "busy");
        let mut code = |m: Message| t.handle(Duration::ZERO, &m).0.code();
        assert_eq!(code(publish("sip:alice@other.test", "presence", &busy, 60)), Some(404));
        // Users the cluster does not have: refused, nothing stored.
        assert_eq!(code(publish("sip:mallory@example.com", "presence", &busy, 60)), Some(404));
        assert_eq!(code(publish("sip:alice@example.com", "dialog", &busy, 60)), Some(489));
        assert_eq!(code(publish("sip:alice@example.com", "presence", "junk", 60)), Some(400));
        // An initial publication without state, or one removing nothing.
        assert_eq!(code(publish("sip:alice@example.com", "presence", "", 60)), Some(400));
        let mut m = publish("sip:alice@example.com", "presence", "", 60);
        m.push("SIP-If-Match", "nosuchtag");
        assert_eq!(code(m), Some(412));
        let mut sub = publish("sip:alice@example.com", "presence", &busy, 60);
        sub.start =
            Start::Request { method: "SUBSCRIBE".into(), uri: "sip:alice@example.com".into() };
        assert_eq!(code(sub), Some(405));
        assert!(t.publications.is_empty());
    }
}
