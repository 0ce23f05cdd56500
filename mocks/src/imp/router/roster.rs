//! Rosters and presence subscriptions (RFC 6121 §2, §3): the roster get and set, roster
//! pushes to interested resources, the administrator's bulk provisioning, and the
//! subscription handshake with pre-approval and requests kept until answered, each refused
//! with `not-allowed` when a list limit of SPEC IMP3 would be passed.

use uclab_proto::jid::{bare, valid_bare};
use uclab_proto::xmpp::{Element, error_reply};

use super::{Item, NS_ROSTER, Roster, Router, Subscription};

impl Router {
    fn qualify(&self, id: &str) -> String {
        if id.contains('@') { id.to_ascii_lowercase() } else { format!("{id}@{}", self.domain) }
    }

    /// Provisions a contact as the administrator's bulk import does: `user` watches
    /// `contact` (`to` on the user's side, `from` on the contact's). Either may be a bare user
    /// id in the router's domain. Returns false when a list limit (IMP3) stops it.
    pub fn provision(&mut self, user: &str, contact: &str) -> bool {
        let (u, c) = (self.qualify(user), self.qualify(contact));
        // A foreign JID's side is its own server's (SPEC FED1): only local sides are kept.
        let (u_local, c_local) = (self.is_local_jid(&u), self.is_local_jid(&c));
        if u_local {
            let ru = self.rosters.entry(u.clone()).or_default();
            if !ru.items.contains_key(&c) && ru.contacts_full(self.limits.contacts) {
                return false;
            }
        }
        if c_local {
            let rc = self.rosters.entry(c.clone()).or_default();
            let watched = rc.items.get(&u).is_some_and(|i| i.sub.from());
            if !watched && rc.watchers_full(self.limits.watchers) {
                return false;
            }
            let i = rc.items.entry(u.clone()).or_default();
            i.sub = Subscription::with(i.sub.to(), true);
        }
        if u_local {
            let i = self.rosters.entry(u).or_default().items.entry(c).or_default();
            i.sub = Subscription::with(true, i.sub.from());
        }
        true
    }

    fn roster_item(jid: &str, i: &Item) -> Element {
        let mut e = Element::new("item").attr("jid", jid);
        if let Some(n) = &i.name {
            e.set("name", n);
        }
        e.set("subscription", i.sub.as_str());
        if i.ask {
            e.set("ask", "subscribe");
        }
        if i.approved {
            e.set("approved", "true");
        }
        for g in &i.groups {
            e = e.child(Element::new("group").text_node(g));
        }
        e
    }

    /// A roster change of `user`'s item `jid` (`None`: removed): the version moves on and
    /// every interested resource gets a push (RFC 6121 §2.1.6).
    pub(super) fn push(&mut self, user: &str, jid: &str) {
        let roster = self.rosters.entry(user.to_owned()).or_default();
        roster.ver += 1;
        let item = match roster.items.get(jid) {
            Some(i) => Self::roster_item(jid, i),
            None => Element::new("item").attr("jid", jid).attr("subscription", "remove"),
        };
        let ver = roster.ver.to_string();
        let targets: Vec<String> = self
            .sessions
            .get(user)
            .map(|m| {
                m.iter()
                    .filter(|(_, r)| r.interested)
                    .map(|(res, _)| format!("{user}/{res}"))
                    .collect()
            })
            .unwrap_or_default();
        for t in targets {
            self.next_push += 1;
            let iq = Element::new("iq")
                .attr("type", "set")
                .attr("id", &format!("push{}", self.next_push))
                .attr("to", &t)
                .child(
                    Element::new("query")
                        .attr("xmlns", NS_ROSTER)
                        .attr("ver", &ver)
                        .child(item.clone()),
                );
            self.counters.roster_pushes += 1;
            self.send(&t, iq);
        }
    }

    pub(super) fn roster_iq(&mut self, from: &str, s: &Element) {
        let own = bare(from);
        let id = s.get("id").unwrap_or("");
        let reply = Element::new("iq").attr("type", "result").attr("id", id).attr("to", from);
        match s.get("type") {
            Some("get") => {
                if let Some(r) = self.resource_mut(from) {
                    r.interested = true;
                }
                let roster = self.rosters.entry(own).or_default();
                let mut q = Element::new("query")
                    .attr("xmlns", NS_ROSTER)
                    .attr("ver", &roster.ver.to_string());
                for (jid, i) in &roster.items {
                    q = q.child(Self::roster_item(jid, i));
                }
                self.send(from, reply.child(q));
            }
            Some("set") => {
                let items: Vec<&Element> = s
                    .elements()
                    .next()
                    .map(|q| q.elements().filter(|e| e.name == "item").collect())
                    .unwrap_or_default();
                let [item] = items[..] else {
                    return self.iq_error(from, s, "modify", "bad-request");
                };
                let jid = item.get("jid").unwrap_or("").to_ascii_lowercase();
                if !valid_bare(&jid) {
                    return self.iq_error(from, s, "modify", "jid-malformed");
                }
                if jid == own {
                    return self.iq_error(from, s, "cancel", "not-allowed");
                }
                if item.get("subscription") == Some("remove") {
                    let Some(i) = self.rosters.get(&own).and_then(|r| r.items.get(&jid)).cloned()
                    else {
                        return self.iq_error(from, s, "cancel", "item-not-found");
                    };
                    if i.sub.to() || i.ask {
                        self.unsubscribe(&own, &jid);
                    }
                    if i.sub.from() {
                        self.unsubscribed(&own, &jid);
                    }
                    if let Some(r) = self.rosters.get_mut(&own) {
                        r.items.remove(&jid);
                    }
                    self.send(from, reply);
                    return self.push(&own, &jid);
                }
                let groups: Vec<String> = item
                    .elements()
                    .filter(|g| g.name == "group")
                    .map(|g| g.text().trim().to_owned())
                    .collect();
                if groups.iter().any(|g| g.is_empty() || g.len() > 1023) {
                    return self.iq_error(from, s, "modify", "not-acceptable");
                }
                let roster = self.rosters.entry(own.clone()).or_default();
                if !roster.items.contains_key(&jid) && roster.contacts_full(self.limits.contacts) {
                    self.counters.limit_refusals += 1;
                    return self.iq_error(from, s, "cancel", "not-allowed");
                }
                let i = roster.items.entry(jid.clone()).or_default();
                i.name = item.get("name").filter(|n| !n.is_empty()).map(str::to_owned);
                i.groups = groups;
                self.send(from, reply);
                self.push(&own, &jid);
            }
            _ => {} // results of roster pushes
        }
    }

    fn iq_error(&mut self, from: &str, s: &Element, kind: &str, condition: &str) {
        let mut e = error_reply(s, kind, condition);
        e.set("to", from);
        self.send(from, e);
    }

    /// A presence error to every available resource of `user`, from `contact`.
    fn presence_error(&mut self, user: &str, contact: &str, condition: &str) {
        // The refused request, returned: from the contact, to the user (RFC 6120 §8.3).
        let request = Element::new("presence").attr("from", user).attr("to", contact);
        self.send_available(user, &error_reply(&request, "cancel", condition));
    }

    /// `user` asks to see `contact`'s presence (RFC 6121 §3.1.2–3.1.3).
    pub(super) fn subscribe(&mut self, user: &str, contact: &str, mut s: Element) {
        if !valid_bare(contact) || contact == user {
            return;
        }
        // Already approved by the contact: the contact's server says so again (§3.1.3).
        let approved_before =
            self.rosters.get(contact).and_then(|r| r.items.get(user)).is_some_and(|i| i.sub.from());
        if approved_before {
            let p = Element::new("presence").attr("from", contact).attr("type", "subscribed");
            self.send_available(user, &p);
            return;
        }
        // SPEC IMP3: a full contact list (the user's) or watcher list (the contact's, counting
        // requests waiting for an answer) refuses the request before anything changes.
        let roster = self.rosters.entry(user.to_owned()).or_default();
        let contacts_full =
            !roster.items.contains_key(contact) && roster.contacts_full(self.limits.contacts);
        let pre =
            self.rosters.get(contact).and_then(|r| r.items.get(user)).is_some_and(|i| i.approved);
        let waiting = self.requests_to(contact).count();
        let watchers = self.rosters.get(contact).map_or(0, Roster::watchers);
        let already_waiting = self.pending.contains_key(&(contact.to_owned(), user.to_owned()));
        let watchers_full =
            watchers + if already_waiting { waiting - 1 } else { waiting } >= self.limits.watchers;
        if contacts_full || watchers_full {
            self.counters.limit_refusals += 1;
            return self.presence_error(user, contact, "not-allowed");
        }
        let i = self.rosters.entry(user.to_owned()).or_default();
        let i = i.items.entry(contact.to_owned()).or_default();
        if !i.ask {
            i.ask = true;
            self.push(user, contact);
        }
        if pre {
            return self.subscribed(contact, user);
        }
        s.set("from", user);
        s.set("to", contact);
        if self.is_local_jid(contact) {
            self.pending.insert((contact.to_owned(), user.to_owned()), s.clone());
        }
        self.send_available(contact, &s);
    }

    /// `user` lets `contact` see their presence: approves a pending request, or pre-approves
    /// one (RFC 6121 §3.1.5, §3.4).
    pub(super) fn subscribed(&mut self, user: &str, contact: &str) {
        if !valid_bare(contact) || contact == user {
            return;
        }
        let requested = self.pending.contains_key(&(user.to_owned(), contact.to_owned()))
            || self.rosters.get(contact).and_then(|r| r.items.get(user)).is_some_and(|i| i.ask);
        let roster = self.rosters.entry(user.to_owned()).or_default();
        let item = roster.items.get(contact).cloned().unwrap_or_default();
        if item.sub.from() {
            return; // already a watcher
        }
        if !requested {
            if !item.approved {
                roster.items.entry(contact.to_owned()).or_default().approved = true;
                self.push(user, contact);
            }
            return;
        }
        if roster.watchers_full(self.limits.watchers) {
            self.counters.limit_refusals += 1;
            return self.presence_error(user, contact, "not-allowed");
        }
        self.pending.remove(&(user.to_owned(), contact.to_owned()));
        let i = roster.items.entry(contact.to_owned()).or_default();
        i.sub = Subscription::with(i.sub.to(), true);
        i.approved = false;
        self.push(user, contact);
        let p = Element::new("presence").attr("from", user).attr("type", "subscribed");
        self.send_available(contact, &p);
        // A foreign contact's roster is its own server's (SPEC FED1).
        if self.is_local_jid(contact) {
            let c = self.rosters.entry(contact.to_owned()).or_default();
            let ci = c.items.entry(user.to_owned()).or_default();
            ci.sub = Subscription::with(true, ci.sub.from());
            ci.ask = false;
            self.push(contact, user);
        }
        // The new watcher sees the user's current presence.
        for (full, mut p) in self.presences(user) {
            p.set("from", &full);
            self.counters.presence_notifications += self.send_available(contact, &p) as u64;
        }
    }

    /// `user` stops seeing `contact`'s presence (RFC 6121 §3.3).
    pub(super) fn unsubscribe(&mut self, user: &str, contact: &str) {
        if let Some(i) = self.rosters.get_mut(user).and_then(|r| r.items.get_mut(contact))
            && (i.sub.to() || i.ask)
        {
            i.sub = Subscription::with(false, i.sub.from());
            i.ask = false;
            self.push(user, contact);
        }
        self.pending.remove(&(contact.to_owned(), user.to_owned()));
        if !self.is_local_jid(contact) {
            // The foreign contact's server updates its side (RFC 6121 §3.3.2).
            let p = Element::new("presence").attr("from", user).attr("type", "unsubscribe");
            self.send_available(contact, &p);
            return;
        }
        if let Some(i) = self.rosters.get_mut(contact).and_then(|r| r.items.get_mut(user))
            && i.sub.from()
        {
            i.sub = Subscription::with(i.sub.to(), false);
            self.push(contact, user);
            let p = Element::new("presence").attr("from", user).attr("type", "unsubscribe");
            self.send_available(contact, &p);
            self.withdraw(contact, user);
        }
    }

    /// `user` stops `contact` seeing their presence, or refuses a request (RFC 6121 §3.2).
    pub(super) fn unsubscribed(&mut self, user: &str, contact: &str) {
        let had_request = self.pending.remove(&(user.to_owned(), contact.to_owned())).is_some();
        let mut changed = had_request;
        if let Some(i) = self.rosters.get_mut(user).and_then(|r| r.items.get_mut(contact)) {
            let was = i.sub.from() || i.approved;
            i.sub = Subscription::with(i.sub.to(), false);
            i.approved = false;
            if was {
                changed = true;
                self.push(user, contact);
            }
        }
        if !changed {
            return;
        }
        if let Some(i) = self.rosters.get_mut(contact).and_then(|r| r.items.get_mut(user)) {
            i.sub = Subscription::with(false, i.sub.from());
            i.ask = false;
            self.push(contact, user);
        }
        let p = Element::new("presence").attr("from", user).attr("type", "unsubscribed");
        self.send_available(contact, &p);
        self.withdraw(user, contact);
    }

    /// `watcher` no longer sees `user`: an unavailable presence from each of `user`'s
    /// available resources.
    fn withdraw(&mut self, user: &str, watcher: &str) {
        for full in self.available(user) {
            let p = Element::new("presence").attr("from", &full).attr("type", "unavailable");
            self.send_available(watcher, &p);
        }
    }
}
