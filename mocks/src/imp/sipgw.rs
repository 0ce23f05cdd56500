//! IM&P's SIP federation gateway (SPEC FED3): the cluster's stanzas for a domain federated over
//! SIP (a Lync/Skype-style domain) become SIP, and what that domain sends becomes stanzas for
//! the router, as RFC 7247/7248 map them. The engine and its I/O are [`crate::sipfed`]; this
//! is the [`Owner`] that translates.
//!
//! XMPP → SIP: a `subscribe` or a `probe` is a SUBSCRIBE, an `unsubscribe` an unsubscribe, an
//! `unsubscribed` ends the foreign watcher's subscription (rejected), a user's presence
//! broadcast is a NOTIFY with the state of SPEC FED3's table ([`CiscoState::federated`],
//! computed from all the user's resources), a chat message a MESSAGE. Everything else is
//! refused with the reason: group chat (a `groupchat` message, a room join, an invitation)
//! and file transfer (stream initiation, Jingle, bytestreams) `feature-not-implemented`, other
//! requests `service-unavailable`.
//!
//! SIP → XMPP: a SUBSCRIBE is a `subscribe` (the user approves it as any other, or the router
//! answers for a contact already approved), then the NOTIFY carries the user's state, or
//! `pending` until approved; a NOTIFY is presence (`FederatedState::to_xmpp`, with a
//! `subscribed` first, the foreign domain having accepted); a MESSAGE a chat message. A
//! refusal bounces the stanza it came from with the condition its status maps to.

use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::Duration;

use uclab_proto::jid::domain;
use uclab_proto::pidf::{CiscoState, FederatedState};
use uclab_proto::xmpp::Element;

use super::hub::Hub;
use crate::sipfed::serve::Owner;
use crate::sipfed::{Endpoint, Kind, Signal};

/// What group chat and file transfer to a SIP domain are refused with.
const ONLY: &str = "SIP federation carries presence and 1:1 IM only";

/// IM&P's side of SIP federation.
pub struct Gateway {
    /// The node's clock after the Unix epoch (offline messages' stamps).
    unix_now: Rc<dyn Fn() -> Duration>,
    hub: Rc<Hub>,
    /// The cluster's users, bare JIDs in lower case.
    users: BTreeSet<String>,
    /// (local watcher, foreign user) pairs told `subscribed` already.
    approved: BTreeSet<(String, String)>,
}

impl Gateway {
    /// The gateway of the cluster behind `hub`, whose users are `users` (bare JIDs);
    /// `unix_now` is the node's clock after the Unix epoch.
    pub fn new(
        hub: Rc<Hub>,
        users: impl IntoIterator<Item = String>,
        unix_now: Rc<dyn Fn() -> Duration>,
    ) -> Self {
        let users = users.into_iter().map(|u| u.to_ascii_lowercase()).collect();
        Self { unix_now, hub, users, approved: BTreeSet::new() }
    }

    fn deliver(&self, e: Element) {
        let now = (self.unix_now)();
        self.hub.route(|r| r.handle_remote(e, now));
    }

    fn refuse(&self, e: &Element, condition: &str, text: &str) {
        self.hub.route(|r| r.refuse_federated(e, condition, text));
    }

    /// What local `user` shows the foreign domain now (SPEC FED3's table).
    fn state_of(&self, user: &str) -> FederatedState {
        let p = self.hub.route(|r| r.current_presence(user));
        let Some(p) = p else { return FederatedState::Offline };
        let text = |n: &str| p.find(n).map(Element::text);
        let (show, status) = (text("show"), text("status"));
        CiscoState::from_xmpp(p.get("type"), show.as_deref(), status.as_deref()).federated()
    }
}

/// Whether `e` carries a child in namespace `ns` (any depth one).
fn has_ns(e: &Element, ns: &[&str]) -> bool {
    e.elements().any(|c| c.get("xmlns").is_some_and(|x| ns.contains(&x)))
}

const NS_MUC: &[&str] = &["http://jabber.org/protocol/muc", "http://jabber.org/protocol/muc#user"];
/// XEP-0096 stream initiation, XEP-0234 Jingle file transfer, XEP-0065 bytestreams, XEP-0047.
const NS_FILES: &[&str] = &[
    "http://jabber.org/protocol/si",
    "urn:xmpp:jingle:1",
    "http://jabber.org/protocol/bytestreams",
    "http://jabber.org/protocol/ibb",
];

/// RFC 7247 §8's spirit: the stanza error a SIP status stands for.
pub fn condition(code: u16) -> &'static str {
    match code {
        400 => "bad-request",
        401 | 407 => "not-authorized",
        403 => "forbidden",
        404 | 410 | 484 => "item-not-found",
        405 | 415 | 488 | 501 => "feature-not-implemented",
        408 | 504 => "remote-server-timeout",
        480 | 486 | 600 | 603 => "recipient-unavailable",
        502 => "remote-server-not-found",
        503 => "remote-connection-failed",
        _ => "undefined-condition",
    }
}

impl Owner for Gateway {
    type Input = Element;

    fn known(&self, user: &str) -> bool {
        self.users.contains(user)
    }

    fn admits(&self, d: &str) -> bool {
        // SPEC FED5: a blocked domain's requests are refused (and noted), never delivered.
        let allowed = self.hub.route(|r| r.federation().is_some_and(|p| p.allows(d)));
        if !allowed {
            let note = format!("federation refused SIP request from {d}: policy-violation");
            self.hub.route(|r| r.note_federation(note));
        }
        allowed
    }

    fn input(&mut self, now: Duration, e: Element, ep: &mut Endpoint) {
        let from = e.get("from").unwrap_or("").to_owned();
        let to = e.get("to").unwrap_or("").to_owned();
        let kind = e.get("type");
        let d = domain(&to);
        match (e.name.as_str(), kind) {
            // Errors are not answered (RFC 6120 §8.3.1); nothing in SIP stands for them.
            (_, Some("error")) | ("iq", Some("result")) => {}
            ("message", Some("groupchat")) => self.refuse(
                &e,
                "feature-not-implemented",
                &format!("{ONLY}: no group chat with {d}"),
            ),
            ("message", _) if has_ns(&e, NS_MUC) => self.refuse(
                &e,
                "feature-not-implemented",
                &format!("{ONLY}: no group chat invitations to {d}"),
            ),
            ("message", _) => {
                // Chat states and receipts without text have no SIP form: not sent.
                if let Some(body) = e.find("body").map(Element::text) {
                    ep.message(now, &from, &to, &body);
                }
            }
            ("presence", Some("subscribe" | "probe")) => ep.subscribe(now, &from, &to),
            ("presence", Some("unsubscribe")) => ep.unsubscribe(now, &from, &to),
            ("presence", Some("unsubscribed")) => ep.terminate(now, &from, &to),
            // The NOTIFY follows with the presence the router sends next.
            ("presence", Some("subscribed")) => {}
            ("presence", _) if has_ns(&e, NS_MUC) => self.refuse(
                &e,
                "feature-not-implemented",
                &format!("{ONLY}: no group chat rooms at {d}"),
            ),
            ("presence", None | Some("unavailable")) => {
                let user = crate::sipfed::bare(&from);
                let state = self.state_of(&user);
                ep.notify(now, &user, &to, Some(state));
            }
            ("iq", Some("get" | "set")) if has_ns(&e, NS_FILES) => self.refuse(
                &e,
                "feature-not-implemented",
                &format!("{ONLY}: no file transfer with {d}"),
            ),
            ("iq", Some("get" | "set")) => self.refuse(
                &e,
                "service-unavailable",
                &format!(
                    "{ONLY}: no {} requests to {d}",
                    e.elements().next().map_or("empty", |c| c.name.as_str())
                ),
            ),
            _ => {}
        }
    }

    fn signal(&mut self, now: Duration, s: Signal, ep: &mut Endpoint) {
        match s {
            Signal::Subscribe { watcher, user } => {
                let sub = Element::new("presence")
                    .attr("from", &watcher)
                    .attr("to", &user)
                    .attr("type", "subscribe");
                self.deliver(sub);
                // Authorised already (or just now by the router for an approved contact): the
                // state at once; else pending until the user approves.
                let authorised = self.hub.route(|r| r.watches(&watcher, &user));
                let state = authorised.then(|| self.state_of(&user));
                ep.notify(now, &user, &watcher, state);
            }
            Signal::Unsubscribe { watcher, user } => {
                let e = Element::new("presence")
                    .attr("from", &watcher)
                    .attr("to", &user)
                    .attr("type", "unsubscribe");
                self.deliver(e);
            }
            Signal::Presence { from, to, state } => {
                let pair = (to.clone(), from.clone());
                if state != FederatedState::Offline && self.approved.insert(pair) {
                    let ok = Element::new("presence")
                        .attr("from", &from)
                        .attr("to", &to)
                        .attr("type", "subscribed");
                    self.deliver(ok);
                }
                let (kind, show) = state.to_xmpp();
                let mut p = Element::new("presence").attr("from", &from).attr("to", &to);
                if let Some(k) = kind {
                    p.set("type", k);
                }
                if let Some(s) = show {
                    p = p.child(Element::new("show").text_node(s));
                }
                self.deliver(p);
            }
            Signal::Message { from, to, body } => {
                let m = Element::new("message")
                    .attr("from", &from)
                    .attr("to", &to)
                    .attr("type", "chat")
                    .child(Element::new("body").text_node(&body));
                self.deliver(m);
            }
            Signal::Refused { kind: Kind::Subscribe, local, remote, code: 403, .. } => {
                // The foreign user refused, or withdrew (RFC 6121 §3.2).
                self.approved.remove(&(local.clone(), remote.clone()));
                let e = Element::new("presence")
                    .attr("from", &remote)
                    .attr("to", &local)
                    .attr("type", "unsubscribed");
                self.deliver(e);
            }
            Signal::Refused { kind, local, remote, code, body } => {
                let e = match kind {
                    Kind::Subscribe => {
                        self.approved.remove(&(local.clone(), remote.clone()));
                        // To every resource of the user (a bare `to`).
                        let req = Element::new("presence")
                            .attr("from", &local)
                            .attr("to", &remote)
                            .attr("type", "subscribe");
                        let err = uclab_proto::xmpp::error_reply(&req, "cancel", condition(code));
                        self.deliver(err);
                        self.hub.route(|r| r.note_federation(format!("SIP federation: subscription of {local} to {remote} refused: SIP {code}")));
                        return;
                    }
                    Kind::Message => Element::new("message")
                        .attr("from", &local)
                        .attr("to", &remote)
                        .attr("type", "chat")
                        .child(Element::new("body").text_node(&body)),
                };
                self.hub.route(|r| r.bounce(vec![e], condition(code)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;
    use uclab_net::SeededRng;
    use uclab_proto::sip::Message;
    use uclab_proto::xmpp::parse_element;

    use super::*;
    use crate::imp::router::{Limits, Policy, Router};
    use crate::sipfed::Output;

    const LYNC: &str = "lync.example.net";

    /// IM&P's cluster with Alice online (Bob of the Lync domain may watch her), its gateway
    /// and endpoint, and what reached Alice's client.
    struct Lab {
        hub: Rc<Hub>,
        gw: Gateway,
        ep: Endpoint,
        rx: mpsc::Receiver<Element>,
        alice: mpsc::Receiver<Element>,
        /// Requests the endpoint sent to the Lync domain.
        sent: Vec<Message>,
    }

    impl Lab {
        fn new() -> Self {
            Self::with(Policy::Open)
        }

        fn with(policy: Policy) -> Self {
            let mut r = Router::new("example.com", Limits::default());
            r.set_federation(policy);
            // Bob watches Alice (her side of the subscription, SPEC FED1).
            r.provision("bob@lync.example.net", "alice");
            let hub = Hub::new(r);
            let (sid, alice) = hub.open_session();
            hub.route(|r| r.bind("alice@example.com/pc", sid));
            let rx = hub.join_sip_federation(&[LYNC.to_owned()]);
            let users = ["alice@example.com".to_owned()];
            let gw = Gateway::new(hub.clone(), users, Rc::new(|| Duration::from_secs(1)));
            let ep = Endpoint::new("example.com", "imp1.example.com", SeededRng::new(1, "gw"));
            let mut lab = Self { hub, gw, ep, rx, alice, sent: Vec::new() };
            lab.alice_sends("<presence/>");
            lab
        }

        /// A stanza from Alice's client through the router, then everything that follows.
        fn alice_sends(&mut self, xml: &str) {
            let mut e = parse_element(xml.as_bytes()).expect("XML");
            e.set("from", "alice@example.com/pc");
            self.hub.route(|r| r.handle(e, Duration::from_secs(1)));
            self.settle();
        }

        fn settle(&mut self) {
            loop {
                let mut moved = false;
                while let Ok(e) = self.rx.try_recv() {
                    moved = true;
                    self.gw.input(Duration::ZERO, e, &mut self.ep);
                }
                while let Some(o) = self.ep.poll_output() {
                    moved = true;
                    match o {
                        Output::Signal(s) => self.gw.signal(Duration::ZERO, s, &mut self.ep),
                        Output::Request { msg, .. } | Output::Response { msg, .. } => {
                            self.sent.push(msg)
                        }
                    }
                }
                if !moved {
                    return;
                }
            }
        }

        /// What Alice's client got since last asked.
        fn alice_got(&mut self) -> Vec<Element> {
            std::iter::from_fn(|| self.alice.try_recv().ok()).collect()
        }

        /// Bob's server subscribes to Alice.
        fn bob_subscribes(&mut self) {
            let m = Message::request("SUBSCRIBE", "sip:alice@example.com")
                .with("Via", "SIP/2.0/TLS sip.lync.example.net:5061;branch=z9hG4bKb1")
                .with("Max-Forwards", "70")
                .with("From", "<sip:bob@lync.example.net>;tag=b1")
                .with("To", "<sip:alice@example.com>")
                .with("Call-ID", "sub1@lync")
                .with("CSeq", "1 SUBSCRIBE")
                .with("Contact", "<sip:bob@sip.lync.example.net:5061;transport=tls>")
                .with("Event", "presence")
                .with("Expires", "3600");
            let known = |u: &str| self.gw.known(u);
            self.ep.handle(Duration::ZERO, 1, m, &crate::sipfed::certified(LYNC), &known);
            self.settle();
        }

        /// The state the last NOTIFY sent told.
        fn last_notified(&self) -> Option<FederatedState> {
            let n = self
                .sent
                .iter()
                .rev()
                .find(|m| m.method() == Some("NOTIFY") && m.code().is_none())?;
            FederatedState::from_pidf(&n.body).ok()
        }
    }

    /// SPEC FED3's table, IM&P → Lync, one row at a time through the router and gateway
    /// (each row's own test is in `uclab_proto::pidf`).
    #[test]
    fn every_imp_state_reaches_the_watcher_as_the_table_says() {
        let mut lab = Lab::new();
        lab.bob_subscribes();
        assert_eq!(
            lab.last_notified(),
            Some(FederatedState::Available),
            "authorised: state at once"
        );
        let rows = [
            ("<presence><show>dnd</show></presence>", FederatedState::Busy),
            ("<presence/>", FederatedState::Available),
            ("<presence><show>dnd</show><status>Busy</status></presence>", FederatedState::Busy),
            ("<presence/>", FederatedState::Available),
            (
                "<presence><show>away</show><status>On the phone</status></presence>",
                FederatedState::Busy,
            ),
            ("<presence/>", FederatedState::Available),
            (
                "<presence><show>away</show><status>In a meeting</status></presence>",
                FederatedState::Busy,
            ),
            ("<presence/>", FederatedState::Available),
            ("<presence><show>xa</show></presence>", FederatedState::Away),
            ("<presence/>", FederatedState::Available),
            ("<presence type='unavailable'/>", FederatedState::Offline),
        ];
        for (xml, want) in rows {
            lab.alice_sends(xml);
            assert_eq!(lab.last_notified(), Some(want), "{xml}");
        }
    }

    /// SPEC FED3's table, Lync → IM&P: a NOTIFY's state reaches Alice as XMPP presence.
    #[test]
    fn every_lync_state_reaches_alice_as_xmpp_presence() {
        let mut lab = Lab::new();
        lab.alice_sends("<presence type='subscribe' to='bob@lync.example.net'/>");
        let sub =
            lab.sent.iter().find(|m| m.method() == Some("SUBSCRIBE")).cloned().expect("SUBSCRIBE");
        // Bob's server accepts, then notifies each state.
        let ok = sub.response(200, "OK", Some("n1")).with("Expires", "3600");
        let known = |u: &str| lab.gw.known(u);
        lab.ep.handle(Duration::ZERO, 1, ok, &crate::sipfed::certified(LYNC), &known);
        lab.settle();
        lab.alice_got();
        let rows = [
            (FederatedState::Busy, (None, Some("dnd"))),
            (FederatedState::Away, (None, Some("away"))),
            (FederatedState::Available, (None, None)),
            (FederatedState::Offline, (Some("unavailable"), None)),
        ];
        for (n, (state, (kind, show))) in rows.into_iter().enumerate() {
            let notify = Message::request("NOTIFY", "sip:alice@imp1.example.com")
                .with("Via", "SIP/2.0/TLS sip.lync.example.net:5061;branch=z9hG4bKn")
                .with("Max-Forwards", "70")
                .with("From", "<sip:bob@lync.example.net>;tag=n1")
                .with("To", format!("<sip:alice@example.com>;tag={}", sub.tag("From").unwrap()))
                .with("Call-ID", sub.call_id().unwrap())
                .with("CSeq", format!("{} NOTIFY", n + 1))
                .with("Event", "presence")
                .with("Subscription-State", "active;expires=3000")
                .with("Content-Type", "application/pidf+xml");
            let mut notify = notify;
            notify.body = state.pidf("sip:bob@lync.example.net").into_bytes();
            let known = |u: &str| lab.gw.known(u);
            lab.ep.handle(Duration::ZERO, 1, notify, &crate::sipfed::certified(LYNC), &known);
            lab.settle();
            let got = lab.alice_got();
            let p = got
                .iter()
                .rev()
                .find(|e| e.name == "presence" && e.get("type") != Some("subscribed"))
                .unwrap_or_else(|| panic!("{state:?}: {got:?}"));
            assert_eq!(p.get("from"), Some("bob@lync.example.net"));
            assert_eq!(p.get("type"), kind, "{state:?}");
            assert_eq!(p.find("show").map(Element::text).as_deref(), show, "{state:?}");
        }
    }

    /// Group chat and file transfer are refused with the reason; nothing goes to the domain.
    #[test]
    fn group_chat_and_files_are_refused_with_a_reason() {
        let mut lab = Lab::new();
        lab.alice_got();
        let refused = [
            (
                "<message type='groupchat' to='team@lync.example.net'><body>hi</body></message>",
                "feature-not-implemented",
                "no group chat",
            ),
            (
                "<message to='bob@lync.example.net'><x xmlns='http://jabber.org/protocol/muc#user'><invite to='bob@lync.example.net'/></x></message>",
                "feature-not-implemented",
                "invitations",
            ),
            (
                "<presence to='team@lync.example.net/alice'><x xmlns='http://jabber.org/protocol/muc'/></presence>",
                "feature-not-implemented",
                "rooms",
            ),
            (
                "<iq type='set' id='f1' to='bob@lync.example.net/pc'><si xmlns='http://jabber.org/protocol/si'/></iq>",
                "feature-not-implemented",
                "file transfer",
            ),
            (
                "<iq type='set' id='f2' to='bob@lync.example.net/pc'><jingle xmlns='urn:xmpp:jingle:1'/></iq>",
                "feature-not-implemented",
                "file transfer",
            ),
            (
                "<iq type='get' id='v1' to='bob@lync.example.net'><vCard xmlns='vcard-temp'/></iq>",
                "service-unavailable",
                "no vCard requests",
            ),
        ];
        for (xml, condition, text) in refused {
            lab.alice_sends(xml);
            let got = lab.alice_got();
            let e = got
                .iter()
                .find(|e| e.get("type") == Some("error"))
                .unwrap_or_else(|| panic!("{xml}: {got:?}"));
            let err = e.find("error").expect("error");
            assert!(err.find(condition).is_some(), "{xml}: {e:?}");
            assert!(err.find("text").is_some_and(|t| t.text().contains(text)), "{xml}: {e:?}");
        }
        assert!(lab.sent.is_empty(), "nothing went to the Lync domain: {:?}", lab.sent);
    }

    /// A message becomes a MESSAGE; the domain's 404 comes back as item-not-found.
    #[test]
    fn a_refused_message_bounces_with_the_mapped_condition() {
        let mut lab = Lab::new();
        lab.alice_got();
        lab.alice_sends(
            "<message type='chat' to='nobody@lync.example.net'><body>hi</body></message>",
        );
        let m = lab.sent.iter().find(|m| m.method() == Some("MESSAGE")).cloned().expect("MESSAGE");
        assert_eq!(m.body, b"hi");
        let known = |u: &str| lab.gw.known(u);
        lab.ep.handle(
            Duration::ZERO,
            1,
            m.response(404, "Not Found", Some("x")),
            &crate::sipfed::certified(LYNC),
            &known,
        );
        lab.settle();
        let got = lab.alice_got();
        let e = got.iter().find(|e| e.get("type") == Some("error")).expect("a bounce");
        assert!(e.find("error").and_then(|x| x.find("item-not-found")).is_some(), "{e:?}");
        assert_eq!(condition(408), "remote-server-timeout");
        assert_eq!(condition(502), "remote-server-not-found");
    }

    /// SPEC FED5 for a SIP domain: a blocked domain's requests get 403 and are noted, and
    /// nothing goes to it.
    #[test]
    fn a_blocked_sip_domain_is_refused_both_ways() {
        let mut lab = Lab::with(Policy::Block([LYNC.to_owned()].into()));
        // The federation node that writes the notes to the transcript.
        let mut notes = lab.hub.join_federation("imp1");
        lab.alice_got();
        lab.alice_sends("<message type='chat' to='bob@lync.example.net'><body>hi</body></message>");
        let got = lab.alice_got();
        assert!(
            got.iter().any(|e| e.find("error").and_then(|x| x.find("policy-violation")).is_some()),
            "{got:?}"
        );
        assert!(lab.sent.is_empty(), "nothing went out: {:?}", lab.sent);
        let m = Message::request("MESSAGE", "sip:alice@example.com")
            .with("Via", "SIP/2.0/TLS sip.lync.example.net:5061;branch=z9hG4bKm")
            .with("Max-Forwards", "70")
            .with("From", "<sip:bob@lync.example.net>;tag=m1")
            .with("To", "<sip:alice@example.com>")
            .with("Call-ID", "m1@lync")
            .with("CSeq", "1 MESSAGE")
            .with("Content-Type", "text/plain");
        let gw = &lab.gw;
        let peer = |d: &str| if gw.admits(d) { Ok(()) } else { Err(format!("{d} refused")) };
        let known = |u: &str| gw.known(u);
        lab.ep.handle(Duration::ZERO, 1, m, &peer, &known);
        lab.settle();
        assert_eq!(lab.sent.last().and_then(Message::code), Some(403));
        assert!(lab.alice_got().is_empty(), "nothing delivered");
        let note: Vec<String> = std::iter::from_fn(|| notes.try_recv().ok())
            .filter_map(|o| match o {
                crate::imp::hub::Outgoing::Note(n) => Some(n),
                crate::imp::hub::Outgoing::Stanza(_) => None,
            })
            .collect();
        assert!(
            note.iter().any(|n| n.contains("refused SIP request from lync.example.net")),
            "{note:?}"
        );
    }
}
