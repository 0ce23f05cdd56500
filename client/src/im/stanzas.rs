//! Stanzas of a connected session (SPEC IMP1): messages, presence, roster pushes, and
//! multi-user chat rooms (XEP-0045).

use super::*;

impl ImSession {
    /// A stanza once signed in: messages, the roster and its pushes, presence, errors.
    pub(super) fn connected_stanza(&mut self, s: &Element) {
        let from = s.get("from").unwrap_or("").to_owned();
        let own = self.own_bare();
        let ev = |e| Output::Event(e);
        if s.get("type") == Some("error") {
            let error = s.find("error");
            let condition = error
                .and_then(|e| e.elements().find(|c| c.name != "text"))
                .map_or("undefined-condition", |c| c.name.as_str())
                .to_owned();
            let reason = error.and_then(|e| e.find("text")).map(Element::text).unwrap_or_default();
            // A refused join: not in that room.
            if s.name == "presence" {
                let room = from.split('/').next().unwrap_or("").to_ascii_lowercase();
                if self.rooms.get(&room).is_some_and(|r| !r.joined) {
                    self.rooms.remove(&room);
                }
            }
            let to = if from.is_empty() { self.domain.clone() } else { from };
            return self.out.push_back(ev(ClientEvent::ImRefused { to, condition, reason }));
        }
        let room_key = from.split('/').next().unwrap_or("").to_ascii_lowercase();
        if self.rooms.contains_key(&room_key) {
            return self.room_stanza(&room_key, s);
        }
        match s.name.as_str() {
            "message" => {
                let body = s.find("body").map(Element::text).unwrap_or_default();
                self.out.push_back(ev(ClientEvent::ImMessage { from, body }));
            }
            "iq" => {
                let query = s.find("query").filter(|q| q.get("xmlns") == Some(NS_ROSTER));
                let from_self = from.is_empty() || from.eq_ignore_ascii_case(&own);
                match (s.get("type"), query) {
                    (Some("result"), Some(q)) if s.get("id") == Some("roster1") => {
                        let items: Vec<&Element> = q.elements().collect();
                        let contacts = items
                            .iter()
                            .filter(|i| matches!(i.get("subscription"), Some("to" | "both")))
                            .count();
                        let items = items.len();
                        self.out.push_back(ev(ClientEvent::ImRoster { contacts, items }));
                    }
                    // A roster push: acknowledged (RFC 6121 §2.1.6), only from our own account.
                    (Some("set"), Some(q)) if from_self => {
                        for i in q.elements() {
                            let jid = i.get("jid").unwrap_or("").to_owned();
                            let mut subscription =
                                i.get("subscription").unwrap_or("none").to_owned();
                            if i.get("ask") == Some("subscribe") {
                                subscription.push_str("+ask");
                            }
                            self.out.push_back(ev(ClientEvent::ImContact { jid, subscription }));
                        }
                        let mut ack = Element::new("iq").attr("type", "result");
                        if let Some(id) = s.get("id") {
                            ack.set("id", id);
                        }
                        self.send_el(&ack);
                    }
                    (Some("get" | "set"), _) => {
                        // Nothing else is offered: RFC 6120 §8.2.3 says answer with an error.
                        let mut e = Element::new("iq").attr("type", "error").attr("to", &from);
                        if let Some(id) = s.get("id") {
                            e.set("id", id);
                        }
                        let cond = Element::new("service-unavailable")
                            .attr("xmlns", "urn:ietf:params:xml:ns:xmpp-stanzas");
                        e = e.child(Element::new("error").attr("type", "cancel").child(cond));
                        self.send_el(&e);
                    }
                    _ => {}
                }
            }
            "presence" => match s.get("type") {
                Some(kind @ ("subscribe" | "subscribed" | "unsubscribe" | "unsubscribed")) => {
                    let kind = kind.to_owned();
                    self.out.push_back(ev(ClientEvent::ImSubscription { from, kind }));
                }
                // Our own resources' presence is not a contact's.
                _ if from.split('/').next().unwrap_or("").eq_ignore_ascii_case(&own) => {}
                Some("unavailable") => {
                    let show = "unavailable".to_owned();
                    self.out.push_back(ev(ClientEvent::ImPresence { from, show }));
                }
                None => {
                    let show = s.find("show").map(Element::text);
                    let show = match show.as_deref().map(str::trim) {
                        Some(v @ ("away" | "dnd" | "xa" | "chat")) => v.to_owned(),
                        _ => "available".to_owned(),
                    };
                    self.out.push_back(ev(ClientEvent::ImPresence { from, show }));
                }
                _ => {}
            },
            _ => {}
        }
    }

    /// A stanza from a room the user is in or entering (XEP-0045; SPEC IMP5).
    pub(super) fn room_stanza(&mut self, key: &str, s: &Element) {
        let from = s.get("from").unwrap_or("");
        let (room, nick) = match from.split_once('/') {
            Some((r, n)) => (r.to_owned(), Some(n.to_owned())),
            None => (from.to_owned(), None),
        };
        let Some(r) = self.rooms.get_mut(key) else { return };
        let ev = Output::Event;
        match (s.name.as_str(), nick) {
            ("presence", Some(nick)) => {
                let x = s.elements().find(|c| c.name == "x" && c.get("xmlns") == Some(NS_MUC_USER));
                let codes: Vec<&str> = x
                    .into_iter()
                    .flat_map(|x| x.elements())
                    .filter(|c| c.name == "status")
                    .filter_map(|c| c.get("code"))
                    .collect();
                let own = codes.contains(&"110");
                let gone = s.get("type") == Some("unavailable");
                if own && gone {
                    self.rooms.remove(key);
                    self.out.push_back(ev(ClientEvent::ImRoomLeft { room }));
                } else if own && !r.joined {
                    r.joined = true;
                    let created = codes.contains(&"201");
                    let e = ClientEvent::ImRoomJoined {
                        room: room.clone(),
                        nick,
                        created,
                        occupants: r.occupants,
                    };
                    self.out.push_back(ev(e));
                    if created && r.persistent {
                        // XEP-0045 §10.1.3: the owner submits the configuration.
                        let field = |var: &str, v: &str| {
                            Element::new("field")
                                .attr("var", var)
                                .child(Element::new("value").text_node(v))
                        };
                        let form = Element::new("x")
                            .attr("xmlns", "jabber:x:data")
                            .attr("type", "submit")
                            .child(field("FORM_TYPE", "http://jabber.org/protocol/muc#roomconfig"))
                            .child(field("muc#roomconfig_persistentroom", "1"));
                        let iq = Element::new("iq")
                            .attr("type", "set")
                            .attr("id", &format!("cfg:{room}"))
                            .attr("to", &room)
                            .child(Element::new("query").attr("xmlns", NS_MUC_OWNER).child(form));
                        self.send_el(&iq);
                    }
                } else if !own {
                    if !r.joined {
                        r.occupants += 1;
                    }
                    let show = if gone {
                        "unavailable".to_owned()
                    } else {
                        match s.find("show").map(Element::text).as_deref().map(str::trim) {
                            Some(v @ ("away" | "dnd" | "xa" | "chat")) => v.to_owned(),
                            _ => "available".to_owned(),
                        }
                    };
                    self.out.push_back(ev(ClientEvent::ImRoomPresence { room, nick, show }));
                }
            }
            ("message", Some(nick)) if s.get("type") == Some("groupchat") => {
                let Some(body) = s.find("body").map(Element::text) else { return };
                let history = s.find("delay").is_some();
                let e = ClientEvent::ImRoomMessage { room, from: nick, body, history };
                self.out.push_back(ev(e));
            }
            // A private message through the room.
            ("message", Some(nick)) => {
                let body = s.find("body").map(Element::text).unwrap_or_default();
                self.out
                    .push_back(ev(ClientEvent::ImMessage { from: format!("{room}/{nick}"), body }));
            }
            ("iq", None)
                if s.get("type") == Some("result")
                    && s.get("id").is_some_and(|id| id.starts_with("cfg:")) =>
            {
                let e = ClientEvent::ImRoomConfigured { room, persistent: true };
                self.out.push_back(ev(e));
            }
            _ => {}
        }
    }
}
