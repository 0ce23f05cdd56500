//! IM&P's end of CUCM's SIP trunk (SPEC CC7, "IMP PUBLISH Trunk"): PUBLISH requests with the
//! users' line states (PIDF, RPID `on-the-phone` for busy) feed the Rich Presence Service,
//! which composes "On the phone" into the users' XMPP presence ([`crate::imp::router::Router::phone_state`]).
//!
//! Over UDP 5060 of each IM&P node. Anything but a readable PUBLISH (`Event: presence`) for a
//! user of the cluster gets its SIP error; OPTIONS is answered. Publications follow RFC 3903
//! ([`Trunk`]: entity tags, conditional refresh, expiry).
//!
//! Without "IMP PUBLISH Trunk" the node's presence gateway ([`Gateway`]) SUBSCRIBEs to every
//! user's line at CUCM over the same socket instead, and CUCM's NOTIFYs carry the line state.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use uclab_proto::sip::{self, Message, Start};

use crate::cucm::sip::summary;
use crate::imp::hub::Hub;

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

/// Longest SUBSCRIBE the presence gateway asks for.
const SUB_EXPIRES: u32 = 3600;

/// One user's line watched through the gateway.
#[derive(Debug)]
struct GwSub {
    user: String,
    /// CUCM's tag, once the SUBSCRIBE was accepted (the dialog's remote tag).
    remote_tag: Option<String>,
    cseq: u32,
    /// When to send the SUBSCRIBE again: a while before the granted expiry, or, with no
    /// answer yet (CUCM not up, a datagram lost), after a backoff of 2 s doubling to 64 s.
    refresh_at: Option<Duration>,
    /// SUBSCRIBEs sent without an answer.
    tries: u32,
    /// Subscriptions started (a new one gets a new From tag, so a new dialog).
    generation: u32,
}

impl GwSub {
    /// The dialog is over: the next SUBSCRIBE starts a new one (a new From tag).
    fn restart(&mut self) {
        self.remote_tag = None;
        self.generation += 1;
        self.tries = 0;
    }
}

/// IM&P's presence gateway to CUCM (SPEC CC7 without "IMP PUBLISH Trunk"): one SUBSCRIBE
/// (`Event: presence`) per user over the trunk, refreshed before it runs out; CUCM's NOTIFYs
/// carry the line's PIDF, and `on-the-phone` makes the user "On the phone" in XMPP.
#[derive(Debug)]
pub struct Gateway {
    /// CUCM's SIP address on the trunk, and its host name (the Request-URI's host).
    to: SocketAddr,
    cucm: String,
    /// This node's name, address and trunk port (From, Via and Contact).
    host: String,
    local: SocketAddr,
    domain: String,
    /// By Call-ID.
    subs: BTreeMap<String, GwSub>,
}

impl Gateway {
    /// A gateway of node `host` (trunk socket `local`) to CUCM `cucm` at `to`, for `users`.
    pub fn new(
        (to, cucm): (SocketAddr, &str),
        (host, local): (&str, SocketAddr),
        domain: &str,
        users: impl IntoIterator<Item = String>,
    ) -> Self {
        let subs = users
            .into_iter()
            .map(|u| {
                let u = u.to_ascii_lowercase();
                let sub = GwSub {
                    user: u.clone(),
                    remote_tag: None,
                    cseq: 0,
                    refresh_at: None,
                    tries: 0,
                    generation: 0,
                };
                (format!("pg-{u}@{host}"), sub)
            })
            .collect();
        Self {
            to,
            cucm: cucm.to_owned(),
            host: host.to_owned(),
            local,
            domain: domain.to_ascii_lowercase(),
            subs,
        }
    }

    /// Where the gateway's requests go.
    pub fn to(&self) -> SocketAddr {
        self.to
    }

    /// The SUBSCRIBE for `call_id` (initial, or a refresh inside its dialog).
    fn subscribe(&mut self, now: Duration, call_id: &str) -> Option<Message> {
        let (host, local, cucm) = (self.host.clone(), self.local, self.cucm.clone());
        let s = self.subs.get_mut(call_id)?;
        s.cseq += 1;
        s.refresh_at = Some(now + Duration::from_secs(2u64 << s.tries.min(5)));
        s.tries += 1;
        let uri = format!("sip:{}@{cucm}", s.user);
        let to = match &s.remote_tag {
            Some(t) => format!("<{uri}>;tag={t}"),
            None => format!("<{uri}>"),
        };
        let branch =
            format!("z9hG4bK{:016x}", crate::cucm::sip::fnv(&[call_id, &s.cseq.to_string()]));
        Some(
            Message::request("SUBSCRIBE", &uri)
                .with("Via", format!("SIP/2.0/UDP {local};branch={branch}"))
                .with("Max-Forwards", "70")
                .with("From", format!("<sip:{host}>;tag=pg{}", s.generation))
                .with("To", to)
                .with("Call-ID", call_id.to_owned())
                .with("CSeq", format!("{} SUBSCRIBE", s.cseq))
                .with("Contact", format!("<sip:{host}:{};transport=udp>", local.port()))
                .with("Event", "presence")
                .with("Accept", "application/pidf+xml")
                .with("Expires", SUB_EXPIRES.to_string())
                .with("User-Agent", "Cisco-IMP14.0"),
        )
    }

    /// The first SUBSCRIBE of every user.
    pub fn start(&mut self, now: Duration) -> Vec<Message> {
        let ids: Vec<String> = self.subs.keys().cloned().collect();
        ids.iter().filter_map(|c| self.subscribe(now, c)).collect()
    }

    /// When a subscription is next due for refresh.
    pub fn next_refresh(&self) -> Option<Duration> {
        self.subs.values().filter_map(|s| s.refresh_at).min()
    }

    /// The refreshes due by `now`.
    pub fn refresh(&mut self, now: Duration) -> Vec<Message> {
        let due: Vec<String> = self
            .subs
            .iter()
            .filter(|(_, s)| s.refresh_at.is_some_and(|t| t <= now))
            .map(|(c, _)| c.clone())
            .collect();
        due.iter().filter_map(|c| self.subscribe(now, c)).collect()
    }

    /// Whether `m` belongs to one of the gateway's subscriptions.
    pub fn owns(&self, m: &Message) -> bool {
        m.call_id().is_some_and(|c| self.subs.contains_key(c))
    }

    /// CUCM answered a SUBSCRIBE: accepted (refresh a while before it runs out), or refused
    /// (that user's line is not watched; nothing is retried).
    pub fn on_response(&mut self, now: Duration, m: &Message) {
        let Some(s) = m.call_id().and_then(|c| self.subs.get_mut(c)) else { return };
        match m.code() {
            Some(200..=299) => {
                s.tries = 0;
                s.remote_tag = m.tag("To");
                let granted = m.expires().unwrap_or(SUB_EXPIRES).min(SUB_EXPIRES);
                let before = (granted / 10).clamp(1, 60);
                let at = u64::from(granted.saturating_sub(before).max(1));
                s.refresh_at = Some(now + Duration::from_secs(at));
            }
            // Refused by policy (403) or no such line (404): that line is not watched.
            Some(403 | 404) => s.refresh_at = None,
            // A refresh CUCM no longer knows (481): a new subscription at once.
            Some(481) => {
                s.restart();
                s.refresh_at = Some(now);
            }
            // Anything else (503 at CUCM's limit, 408, 500): again after the backoff, which
            // the SUBSCRIBE already set; a refresh that failed starts a new dialog.
            Some(300..) if s.remote_tag.is_some() => {
                s.restart();
                s.refresh_at = Some(now + Duration::from_secs(2));
            }
            _ => {}
        }
    }

    /// A NOTIFY from CUCM: answered, and the user's phone state it carries (JID, busy).
    pub fn on_notify(&mut self, now: Duration, m: &Message) -> (Message, Option<(String, bool)>) {
        let Some(s) = m.call_id().and_then(|c| self.subs.get_mut(c)) else {
            return (m.response(481, sip::reason(481), None), None);
        };
        if s.remote_tag.is_none() {
            // The NOTIFY can overtake the 200 (RFC 6665 §4.1.2.4): it makes the dialog.
            s.remote_tag = m.tag("From");
        }
        let state = m.get("Subscription-State").unwrap_or("").trim().to_ascii_lowercase();
        let terminated = state.starts_with("terminated");
        if terminated {
            // RFC 6665 §4.1.3: subscribe again unless CUCM said the line is gone or refused.
            let gone = state.contains("reason=noresource") || state.contains("reason=rejected");
            s.restart();
            s.refresh_at = (!gone).then(|| now + Duration::from_secs(2));
        }
        let body = String::from_utf8_lossy(&m.body);
        let busy = !terminated && body.contains("on-the-phone");
        let jid = format!("{}@{}", s.user, self.domain);
        let mut r = m.response(200, "OK", None);
        r.push("Server", "Cisco-IMP14.0");
        (r, Some((jid, busy)))
    }
}

/// Serves the trunk on UDP `port` until the node stops; with a `gateway` (CUCM and its
/// host), IM&P also subscribes to the users' lines there (SUBSCRIBE/NOTIFY mode).
pub async fn serve<N: uclab_net::Net>(
    net: N,
    port: u16,
    mut trunk: Trunk,
    gateway: Option<(SocketAddr, String, String, Vec<String>)>,
    hub: Rc<Hub>,
) -> std::io::Result<()> {
    let mut udp = net.bind_udp(port).await?;
    udp.set_dscp(crate::cucm::sip::DSCP_SIGNALLING);
    let local = udp.local_addr();
    let mut gw = gateway.map(|(to, cucm, host, users)| {
        Gateway::new((to, &cucm), (&host, local), &trunk.domain.clone(), users)
    });
    let mut out: Vec<Message> = gw.as_mut().map(|g| g.start(net.now())).unwrap_or_default();
    let mut buf = vec![0u8; 65_535];
    loop {
        if let Some(g) = &gw {
            for m in out.drain(..) {
                net.transcript().message(net.now(), local, g.to(), "udp", &summary(&m));
                let _ = udp.send_to(&m.to_bytes(), g.to()).await;
            }
        }
        let next = [trunk.next_expiry(), gw.as_ref().and_then(Gateway::next_refresh)]
            .into_iter()
            .flatten()
            .min();
        let got = match next.map(|at| at.saturating_sub(net.now())) {
            Some(w) => uclab_net::time::timeout(w, udp.recv_from(&mut buf)).await.ok(),
            None => Some(udp.recv_from(&mut buf).await),
        };
        let Some(got) = got else {
            // A publication ran out: the phone state it said is gone.
            for (user, busy) in trunk.expire(net.now()) {
                hub.route(|r| r.phone_state(&user, busy));
            }
            if let Some(g) = gw.as_mut() {
                out = g.refresh(net.now());
            }
            continue;
        };
        let (n, from) = got?;
        let Ok(m) = sip::parse(&buf[..n]) else { continue };
        let (r, change) = match gw.as_mut().filter(|g| g.owns(&m)) {
            Some(g) if m.code().is_some() => {
                g.on_response(net.now(), &m);
                continue;
            }
            Some(g) if m.method() == Some("NOTIFY") => g.on_notify(net.now(), &m),
            _ if m.code().is_some() => continue,
            // No subscription of ours (RFC 6665 §4.1.3).
            _ if m.method() == Some("NOTIFY") => (m.response(481, sip::reason(481), None), None),
            _ => trunk.handle(net.now(), &m),
        };
        net.transcript().message(net.now(), local, from, "udp", &summary(&r));
        let _ = udp.send_to(&r.to_bytes(), from).await;
        if let Some((user, busy)) = change {
            hub.route(|r| r.phone_state(&user, busy));
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
        let busy = crate::cucm::sip::pidf("sip:alice@example.com", "1001", "busy");
        let (r, c) = t.handle(now, &publish("sip:alice@example.com", "presence", &busy, 3600));
        assert_eq!(r.code(), Some(200));
        assert_eq!(c, Some(("alice@example.com".into(), true)));
        // RFC 3903: a modify names the publication; a new tag comes back.
        let idle = crate::cucm::sip::pidf("sip:alice@example.com", "1001", "idle");
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
        let busy = crate::cucm::sip::pidf("sip:bob@example.com", "1002", "busy");
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
        let busy = crate::cucm::sip::pidf("sip:alice@example.com", "1001", "busy");
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

    #[test]
    fn cc7_gateway_subscribes_retries_refreshes_and_reads_notifies() {
        let cucm: SocketAddr = "10.1.0.11:5060".parse().unwrap();
        let local: SocketAddr = "10.1.0.21:5060".parse().unwrap();
        let mut g = Gateway::new(
            (cucm, "cucm1.example.com"),
            ("imp1.example.com", local),
            "example.com",
            ["Alice".to_owned()],
        );
        let sent = g.start(Duration::ZERO);
        assert_eq!(sent.len(), 1);
        let sub = &sent[0];
        assert_eq!(sub.get("Event"), Some("presence"));
        assert_eq!(sub.tag("To"), None);
        // No answer: again after 2 s, then 4 s.
        assert_eq!(g.next_refresh(), Some(Duration::from_secs(2)));
        let again = g.refresh(Duration::from_secs(2));
        assert_eq!(again.len(), 1);
        assert_eq!(g.next_refresh(), Some(Duration::from_secs(6)));
        // Accepted for 600 s: refreshed 60 s before the end, inside the dialog.
        let mut ok = again[0].response(200, "OK", Some("cu"));
        ok.push("Expires", "600");
        g.on_response(Duration::from_secs(3), &ok);
        assert_eq!(g.next_refresh(), Some(Duration::from_secs(543)));
        let refresh = g.refresh(Duration::from_secs(543));
        assert_eq!(refresh[0].tag("To").as_deref(), Some("cu"));
        // A NOTIFY with on-the-phone: busy; terminated: not busy; a stranger's: 481.
        let notify = |state: &str, body: &str| {
            let text = format!(
                "NOTIFY sip:imp1.example.com:5060 SIP/2.0\r\nVia: SIP/2.0/UDP cucm1:5060;branch=z9hG4bKn\r\n\
                 From: <sip:alice@cucm1.example.com>;tag=cu\r\nTo: <sip:imp1.example.com>;tag=pg0\r\n\
                 Call-ID: pg-alice@imp1.example.com\r\nCSeq: 1 NOTIFY\r\nEvent: presence\r\n\
                 Subscription-State: {state}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            sip::parse(text.as_bytes()).unwrap()
        };
        let busy = crate::cucm::sip::pidf("sip:1001@cucm1", "1001", "busy");
        let (r, c) = g.on_notify(Duration::ZERO, &notify("active;expires=500", &busy));
        assert_eq!((r.code(), c), (Some(200), Some(("alice@example.com".into(), true))));
        let (_, c) = g.on_notify(Duration::ZERO, &notify("terminated;reason=timeout", &busy));
        assert_eq!(c, Some(("alice@example.com".into(), false)));
        // RFC 6665 §4.1.3: a timed-out subscription is started again, as a new dialog.
        assert_eq!(g.next_refresh(), Some(Duration::from_secs(2)));
        let again = g.refresh(Duration::from_secs(2));
        assert_eq!(again[0].tag("To"), None);
        assert_eq!(again[0].tag("From").as_deref(), Some("pg1"));
        let mut other = notify("active", &busy);
        other.set("Call-ID", "someone-else");
        assert!(!g.owns(&other));
        assert_eq!(g.on_notify(Duration::ZERO, &other).0.code(), Some(481));
    }
}
