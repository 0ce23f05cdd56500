//! IM&P's end of CUCM's SIP trunk (SPEC CC7, "IMP PUBLISH Trunk"): PUBLISH requests with the
//! users' line states (PIDF, RPID `on-the-phone` for busy) feed the Rich Presence Service,
//! which composes "On the phone" into the users' XMPP presence ([`Router::phone_state`]).
//!
//! Over UDP 5060 of each IM&P node. Anything but a readable PUBLISH (`Event: presence`) for a
//! user of the presence domain gets its SIP error; OPTIONS is answered.

use std::cell::RefCell;
use std::rc::Rc;

use uclab_proto::sip::{self, Message, Start};

use crate::router::Router;
use crate::sip::summary;

/// What IM&P answers a trunk request with, and the presence change it makes (user, busy).
pub fn handle(domain: &str, m: &Message) -> (Message, Option<(String, bool)>) {
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
    // sip:user@domain: the user's presence entity.
    let addr = uri.split_once(':').map(|(_, r)| r).unwrap_or("");
    let addr = addr.split([';', '?']).next().unwrap_or("");
    let Some((user, host)) = addr.rsplit_once('@') else { return (reply(404), None) };
    if !host.eq_ignore_ascii_case(domain) || !sip::is_token(user) {
        return (reply(404), None);
    }
    let body = String::from_utf8_lossy(&m.body);
    if m.expires() != Some(0) && !body.contains("<presence") {
        return (reply(400), None);
    }
    // An expiry of 0 removes the publication: the phone is no longer busy.
    let busy = m.expires() != Some(0) && body.contains("on-the-phone");
    let mut r = reply(200);
    r.push("SIP-ETag", format!("{:x}", m.body.len() as u64 ^ 0x5ea1));
    r.push("Expires", m.expires().unwrap_or(3600).min(3600).to_string());
    (r, Some((format!("{}@{}", user.to_ascii_lowercase(), domain.to_ascii_lowercase()), busy)))
}

/// Serves the trunk on UDP `port` until the node stops.
pub async fn serve<N: uclab_net::Net>(
    net: N,
    port: u16,
    domain: String,
    router: Rc<RefCell<Router>>,
) -> std::io::Result<()> {
    let mut udp = net.bind_udp(port).await?;
    udp.set_dscp(crate::sip::DSCP_SIGNALLING);
    let local = udp.local_addr();
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, from) = udp.recv_from(&mut buf).await?;
        let Ok(m) = sip::parse(&buf[..n]) else { continue };
        if m.code().is_some() {
            continue; // no requests of ours are out
        }
        let (r, change) = handle(&domain, &m);
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

    #[test]
    fn cc7_publish_sets_and_clears_the_phone_state() {
        let busy = crate::sip::pidf("sip:alice@example.com", "1001", "busy");
        let (r, c) =
            handle("example.com", &publish("sip:alice@example.com", "presence", &busy, 3600));
        assert_eq!(r.code(), Some(200));
        assert!(r.get("SIP-ETag").is_some());
        assert_eq!(c, Some(("alice@example.com".into(), true)));
        let idle = crate::sip::pidf("sip:alice@example.com", "1001", "idle");
        let (_, c) =
            handle("example.com", &publish("sip:alice@example.com", "presence", &idle, 3600));
        assert_eq!(c, Some(("alice@example.com".into(), false)));
        let (_, c) = handle("example.com", &publish("sip:alice@example.com", "presence", "", 0));
        assert_eq!(c, Some(("alice@example.com".into(), false)), "expiry 0 clears");
    }

    #[test]
    fn cc7_refusals() {
        let busy = crate::sip::pidf("sip:alice@example.com", "1001", "busy");
        let code = |m: Message| handle("example.com", &m).0.code();
        assert_eq!(code(publish("sip:alice@other.test", "presence", &busy, 60)), Some(404));
        assert_eq!(code(publish("sip:alice@example.com", "dialog", &busy, 60)), Some(489));
        assert_eq!(code(publish("sip:alice@example.com", "presence", "junk", 60)), Some(400));
        let mut sub = publish("sip:alice@example.com", "presence", &busy, 60);
        sub.start =
            Start::Request { method: "SUBSCRIBE".into(), uri: "sip:alice@example.com".into() };
        assert_eq!(code(sub), Some(405));
    }
}
