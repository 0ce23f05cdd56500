//! Presence broadcast (RFC 6121 §4): a resource's own presence goes to the user's watchers
//! (counted, SPEC IMP3) and other resources, and initial presence brings the contacts'
//! presence, pending subscription requests and stored messages (SPEC IMP4). CUCM's line
//! state (SPEC CC7) is composed into what watchers see.

use uclab_proto::jid::bare;
use uclab_proto::xmpp::Element;

use super::{Router, Subscription};

impl Router {
    /// SPEC CC7: CUCM says `user`'s line is busy (or idle again). The Rich Presence Service
    /// composes it into the user's presence (Table 20-2: "On the phone", yellow, which XMPP
    /// carries as `away` with the status text) and the user's watchers hear of it.
    pub fn phone_state(&mut self, user: &str, busy: bool) {
        let b = bare(user);
        let changed = if busy { self.on_phone.insert(b.clone()) } else { self.on_phone.remove(&b) };
        if !changed {
            return;
        }
        let raw: Vec<(String, Element)> = self
            .sessions
            .get(&b)
            .map(|m| {
                m.iter()
                    .filter_map(|(res, r)| Some((format!("{b}/{res}"), r.presence.clone()?)))
                    .collect()
            })
            .unwrap_or_default();
        for (full, p) in raw {
            self.broadcast(&full, &p);
        }
    }

    /// A user's presence as watchers see it: an available presence without a `show` gets
    /// `away` / "On the phone" while the phone is busy (a DND or away the user set stays).
    pub(super) fn composed(&self, bare_jid: &str, p: &Element) -> Element {
        let available = p.get("type").is_none();
        if !available || p.find("show").is_some() || !self.on_phone.contains(bare_jid) {
            return p.clone();
        }
        let p = p.clone().child(Element::new("show").text_node("away"));
        if p.find("status").is_some() {
            p
        } else {
            p.child(Element::new("status").text_node("On the phone"))
        }
    }

    /// Broadcast presence (no `to`): recorded, sent to the user's watchers and own
    /// resources; initial presence also gets the contacts' presence, pending subscription
    /// requests and stored messages (RFC 6121 §4.2, §3.1.3; SPEC IMP4).
    pub(super) fn own_presence(&mut self, from: &str, s: Element) {
        let Some(r) = self.resource_mut(from) else { return };
        let initial = r.presence.is_none();
        let unavailable = s.get("type") == Some("unavailable");
        if unavailable && initial {
            return; // nothing to withdraw
        }
        self.set_presence(from, (!unavailable).then(|| s.clone()));
        self.broadcast(from, &s);
        if unavailable {
            return;
        }
        // The sender sees its own presence too (RFC 6121 §4.2.2).
        self.send(from, s);
        if !initial {
            return;
        }
        let own = bare(from);
        for c in self.items_of(&own, Subscription::to) {
            for (full, p) in self.presences(&c) {
                let mut p = p;
                p.set("from", &full);
                p.set("to", from);
                self.send(from, p);
            }
        }
        self.probe_remote_contacts(&own);
        let requests: Vec<Element> = self.requests_to(&own).map(|(_, e)| e.clone()).collect();
        for r in requests {
            self.send(from, r);
        }
        if self.resource_mut(from).is_some_and(|r| r.priority >= 0) {
            for m in self.offline.remove(&own).unwrap_or_default() {
                self.counters.messages += 1;
                self.send(from, m);
            }
        }
    }

    /// Sends a resource's broadcast presence to the user's watchers (counted: SPEC IMP3) and
    /// to the user's other available resources.
    pub(super) fn broadcast(&mut self, from: &str, p: &Element) {
        let own = bare(from);
        let mut p = self.composed(&own, p);
        p.set("from", from);
        for w in self.items_of(&own, Subscription::from) {
            let n = self.send_available(&w, &p);
            self.counters.presence_notifications += n as u64;
        }
        for full in self.available(&own) {
            if full != from {
                self.send(&full, p.clone());
            }
        }
    }
}
