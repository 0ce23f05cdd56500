//! The IM&P cluster's stanza router (RFC 6121; SPEC IMP1–IMP4): rosters and subscriptions,
//! presence broadcast and probes, message delivery with multiple-device messaging, and
//! offline storage. One router serves every node of a cluster (the real nodes share this
//! state through their database), so a user who fails over to the subcluster peer keeps their
//! roster and watchers.
//!
//! Sessions hand it stanzas already stamped with their full JID ([`Router::handle`]); it
//! answers and delivers through each bound session's [`Mailbox`]. It never blocks and never
//! does I/O, so it is tested with plain channels.
//!
//! What it keeps per user is bounded: the contact and watcher lists by the configured limits
//! (SPEC IMP3, default 200 each), offline messages by [`OFFLINE_MAX`], pending subscription
//! requests by the watcher limit.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use uclab_proto::jid::{bare, resource, valid_bare, valid_jid};
use uclab_proto::xmpp::{Element, error_reply, stamp};

use crate::imp::muc::{Muc, MucConfig};

/// Where the router sends stanzas for a bound session.
pub type Mailbox = tokio::sync::mpsc::UnboundedSender<Element>;

/// The roster namespace (RFC 6121 §2).
pub const NS_ROSTER: &str = "jabber:iq:roster";
const NS_DELAY: &str = "urn:xmpp:delay";

/// Messages kept per offline user at most (older ones are dropped first).
pub const OFFLINE_MAX: usize = 100;

/// List limits of SPEC IMP3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Contacts a user may have (roster items they watch or asked to watch).
    pub contacts: usize,
    /// Watchers a user may have (users subscribed to their presence).
    pub watchers: usize,
}

impl Default for Limits {
    /// The product's defaults: 200 and 200.
    fn default() -> Self {
        Self { contacts: 200, watchers: 200 }
    }
}

/// A roster item's subscription state (RFC 6121 §2.1.2.5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Subscription {
    /// Neither sees the other's presence.
    #[default]
    None,
    /// The user sees the contact's presence.
    To,
    /// The contact sees the user's presence.
    From,
    /// Both ways.
    Both,
}

impl Subscription {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::To => "to",
            Self::From => "from",
            Self::Both => "both",
        }
    }

    fn to(self) -> bool {
        matches!(self, Self::To | Self::Both)
    }

    fn from(self) -> bool {
        matches!(self, Self::From | Self::Both)
    }

    fn with(to: bool, from: bool) -> Self {
        match (to, from) {
            (false, false) => Self::None,
            (true, false) => Self::To,
            (false, true) => Self::From,
            (true, true) => Self::Both,
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Item {
    name: Option<String>,
    groups: Vec<String>,
    sub: Subscription,
    /// An outbound subscription request is pending.
    ask: bool,
    /// The user pre-approved the contact's request (RFC 6121 §3.4).
    approved: bool,
}

impl Item {
    /// Whether the item counts as a contact (IMP3): anything but a watcher-only entry.
    fn is_contact(&self) -> bool {
        self.sub != Subscription::From
    }
}

#[derive(Debug, Default)]
struct Roster {
    ver: u64,
    items: BTreeMap<String, Item>,
}

impl Roster {
    /// The contact list is full (IMP3). Counting scans the roster, so only a roster with at
    /// least `limit` items is counted (large provisioned rosters stay linear to build).
    fn contacts_full(&self, limit: usize) -> bool {
        self.items.len() >= limit && self.items.values().filter(|i| i.is_contact()).count() >= limit
    }
    fn watchers(&self) -> usize {
        self.items.values().filter(|i| i.sub.from()).count()
    }
    /// The watcher list is full (IMP3).
    fn watchers_full(&self, limit: usize) -> bool {
        self.items.len() >= limit && self.watchers() >= limit
    }
}

#[derive(Debug)]
struct Resource {
    mailbox: Mailbox,
    priority: i8,
    /// The last broadcast available presence; `None`: not available (yet, or any more).
    presence: Option<Element>,
    /// Asked for the roster, so gets roster pushes (RFC 6121 §2.2).
    interested: bool,
}

/// SPEC CAP3: users an IM&P cluster is sized for.
pub const BUDGET_USERS: usize = 45_000;
/// SPEC CAP3: contacts per user the cluster is sized for.
pub const BUDGET_CONTACTS: usize = 75;
/// SPEC CAP3: contact entries per cluster, 3.375 M.
pub const CONTACT_BUDGET: usize = BUDGET_USERS * BUDGET_CONTACTS;

/// SPEC CAP3: with `users` users at `contacts` contacts each, the contacts each of the cluster's
/// other users may still have within the budget (rounded down); `None` if those users alone
/// exceed it or fill the cluster.
pub fn contacts_left(users: usize, contacts: usize) -> Option<usize> {
    let rest = BUDGET_USERS.checked_sub(users).filter(|r| *r > 0)?;
    CONTACT_BUDGET.checked_sub(users.checked_mul(contacts)?).map(|left| left / rest)
}

/// What the router has done, for benches and scenario expectations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Presence broadcasts delivered to watchers' resources (SPEC IMP3, CAP1).
    pub presence_notifications: u64,
    /// Messages delivered to a session.
    pub messages: u64,
    /// Messages stored for offline users (IMP4).
    pub stored: u64,
    /// Roster pushes sent.
    pub roster_pushes: u64,
    /// Requests refused by a list limit (IMP3).
    pub limit_refusals: u64,
}

/// Cluster-wide delivery between sessions (SPEC IMP1) with multiple-device messaging (IMP2),
/// presence and list limits (IMP3) and offline storage (IMP4).
#[derive(Debug)]
pub struct Router {
    domain: String,
    limits: Limits,
    /// Bound sessions: bare JID (lower case) → resource → state.
    sessions: BTreeMap<String, BTreeMap<String, Resource>>,
    /// Messages for users with no available session, by bare JID, in arrival order.
    offline: BTreeMap<String, Vec<Element>>,
    /// SPEC IMP2: (recipient bare JID, sender bare JID) → the recipient's client that last
    /// spoke in that conversation, which gets the sender's messages from then on.
    locks: BTreeMap<(String, String), String>,
    rosters: BTreeMap<String, Roster>,
    /// Inbound subscription requests not yet answered: (contact, requester) → the request as
    /// sent (RFC 6121 §3.1.3: kept whole and delivered again at each available presence).
    pending: BTreeMap<(String, String), Element>,
    next_push: u64,
    counters: Counters,
    /// Each node's text conferencing service, by service domain (SPEC IMP5).
    mucs: BTreeMap<String, Muc>,
    /// Users whose phone line is busy, as CUCM published over the trunk (SPEC CC7).
    on_phone: BTreeSet<String>,
}

impl Router {
    /// A router for the presence domain `domain` with list limits `limits`.
    pub fn new(domain: &str, limits: Limits) -> Self {
        Self {
            domain: domain.to_ascii_lowercase(),
            limits,
            sessions: BTreeMap::new(),
            offline: BTreeMap::new(),
            locks: BTreeMap::new(),
            rosters: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_push: 0,
            counters: Counters::default(),
            mucs: BTreeMap::new(),
            on_phone: BTreeSet::new(),
        }
    }

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
                    .filter(|(_, r)| !r.mailbox.is_closed())
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
    fn composed(&self, bare_jid: &str, p: &Element) -> Element {
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

    /// What the router has done so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Adds a node's text conferencing service (SPEC IMP5); stanzas to its domain go to it.
    pub fn add_muc(&mut self, cfg: MucConfig) {
        let service = cfg.service.to_ascii_lowercase();
        self.mucs.insert(service, Muc::new(cfg));
    }

    /// The conferencing service at `service`, if there is one.
    pub fn muc(&self, service: &str) -> Option<&Muc> {
        self.mucs.get(&service.to_ascii_lowercase())
    }

    /// The node hosting `service` went down or came back (see [`Muc::set_up`]).
    pub fn set_muc_up(&mut self, service: &str, up: bool) {
        if let Some(m) = self.mucs.get_mut(&service.to_ascii_lowercase()) {
            m.set_up(up);
        }
    }

    fn deliver(&mut self, out: Vec<crate::imp::muc::Delivery>) {
        for (to, s) in out {
            self.send(&to, s);
        }
    }

    fn qualify(&self, id: &str) -> String {
        if id.contains('@') { id.to_ascii_lowercase() } else { format!("{id}@{}", self.domain) }
    }

    /// Provisions a contact as the administrator's bulk import does: `user` watches
    /// `contact` (`to` on the user's side, `from` on the contact's). Either may be a bare user
    /// id in the router's domain. Returns false when a list limit (IMP3) stops it.
    pub fn provision(&mut self, user: &str, contact: &str) -> bool {
        let (u, c) = (self.qualify(user), self.qualify(contact));
        let ru = self.rosters.entry(u.clone()).or_default();
        if !ru.items.contains_key(&c) && ru.contacts_full(self.limits.contacts) {
            return false;
        }
        let rc = self.rosters.entry(c.clone()).or_default();
        let watched = rc.items.get(&u).is_some_and(|i| i.sub.from());
        if !watched && rc.watchers_full(self.limits.watchers) {
            return false;
        }
        let i = rc.items.entry(u.clone()).or_default();
        i.sub = Subscription::with(i.sub.to(), true);
        let i = self.rosters.entry(u).or_default().items.entry(c).or_default();
        i.sub = Subscription::with(true, i.sub.from());
        true
    }

    /// A session bound `jid`. It is connected, not yet available: it gets stanzas sent to its
    /// full JID, and bare-JID messages once it sends presence.
    pub fn bind(&mut self, jid: &str, mailbox: Mailbox) {
        let r = Resource { mailbox, priority: 0, presence: None, interested: false };
        let res = resource(jid).unwrap_or("").to_owned();
        self.sessions.entry(bare(jid)).or_default().insert(res, r);
    }

    /// A session ended: if it was available, its watchers see it go (RFC 6121 §4.5.2).
    pub fn unbind(&mut self, jid: &str) {
        let b = bare(jid);
        let res = resource(jid).unwrap_or("");
        let was_available =
            self.sessions.get(&b).and_then(|m| m.get(res)).is_some_and(|r| r.presence.is_some());
        if was_available {
            let p = Element::new("presence").attr("from", jid).attr("type", "unavailable");
            self.set_presence(jid, None);
            self.broadcast(jid, &p);
        }
        if let Some(m) = self.sessions.get_mut(&b) {
            m.remove(res);
            if m.is_empty() {
                self.sessions.remove(&b);
            }
        }
        self.locks.retain(|_, full| full != jid);
        let mut out = Vec::new();
        for m in self.mucs.values_mut() {
            out.extend(m.gone(jid));
        }
        self.deliver(out);
    }

    fn resource_mut(&mut self, full: &str) -> Option<&mut Resource> {
        self.sessions.get_mut(&bare(full))?.get_mut(resource(full)?)
    }

    fn set_presence(&mut self, full: &str, p: Option<Element>) {
        if let Some(r) = self.resource_mut(full) {
            r.priority = p
                .as_ref()
                .and_then(|p| p.find("priority"))
                .and_then(|p| p.text().trim().parse::<i8>().ok())
                .unwrap_or(0);
            r.presence = p;
        }
    }

    /// Full JIDs of `bare`'s available resources.
    fn available(&self, bare_jid: &str) -> Vec<String> {
        self.sessions
            .get(bare_jid)
            .map(|m| {
                m.iter()
                    .filter(|(_, r)| r.presence.is_some() && !r.mailbox.is_closed())
                    .map(|(res, _)| format!("{bare_jid}/{res}"))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The JIDs on `user`'s roster whose subscription passes `which` (`to`: contacts whose
    /// presence the user sees; `from`: watchers).
    fn items_of(&self, user: &str, which: fn(Subscription) -> bool) -> Vec<String> {
        self.rosters
            .get(user)
            .map(|r| r.items.iter().filter(|(_, i)| which(i.sub)).map(|(j, _)| j.clone()).collect())
            .unwrap_or_default()
    }

    /// The current presence of each of `bare_jid`'s available resources, by full JID.
    fn presences(&self, bare_jid: &str) -> Vec<(String, Element)> {
        self.sessions
            .get(bare_jid)
            .map(|m| {
                m.iter()
                    .filter(|(_, r)| !r.mailbox.is_closed())
                    .filter_map(|(res, r)| {
                        let p = self.composed(bare_jid, r.presence.as_ref()?);
                        Some((format!("{bare_jid}/{res}"), p))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Subscription requests waiting for `contact`'s answer: (requester, request).
    fn requests_to<'a>(&'a self, contact: &'a str) -> impl Iterator<Item = (&'a str, &'a Element)> {
        self.pending
            .range((contact.to_owned(), String::new())..)
            .take_while(move |((c, _), _)| c == contact)
            .map(|((_, r), e)| (r.as_str(), e))
    }

    /// Sends `s` to one full JID; false if there is no such live session.
    fn send(&mut self, full: &str, s: Element) -> bool {
        let Some(r) = self.sessions.get(&bare(full)).and_then(|m| m.get(resource(full)?)) else {
            return false;
        };
        r.mailbox.send(s).is_ok()
    }

    /// Sends `s` to every available resource of `bare_jid`; how many got it.
    fn send_available(&mut self, bare_jid: &str, s: &Element) -> usize {
        let targets = self.available(bare_jid);
        targets.iter().filter(|t| self.send(t, s.clone())).count()
    }

    /// A stanza from a bound session, `from` already stamped with its full JID. `now` is the
    /// node's clock after the Unix epoch, for offline messages' delay stamps.
    pub fn handle(&mut self, s: Element, now: Duration) {
        let from = s.get("from").unwrap_or("").to_owned();
        let to = s.get("to").unwrap_or("").to_owned();
        let own = bare(&from);
        let to_self = to.is_empty() || to.eq_ignore_ascii_case(&own);
        if !to.is_empty() && !valid_jid(&to) {
            // RFC 6120 §8.3.3.8: a malformed address is refused, never routed or stored.
            if s.get("type") != Some("error") {
                self.send(&from, error_reply(&s, "modify", "jid-malformed"));
            }
            return;
        }
        let to_domain = to.split('/').next().unwrap_or("");
        let to_domain = to_domain.rsplit('@').next().unwrap_or("").to_ascii_lowercase();
        if let Some(m) = self.mucs.get_mut(&to_domain) {
            let out = m.handle(&s, now);
            return self.deliver(out);
        }
        match s.name.as_str() {
            "iq" if to_self || to.eq_ignore_ascii_case(&self.domain) => {
                let roster = s.elements().next().is_some_and(|q| q.get("xmlns") == Some(NS_ROSTER));
                if roster {
                    self.roster_iq(&from, &s);
                } else if matches!(s.get("type"), Some("get" | "set")) {
                    let e = error_reply(&s, "cancel", "service-unavailable");
                    self.send(&from, e);
                }
            }
            "presence" => match s.get("type") {
                None | Some("unavailable") if to.is_empty() => self.own_presence(&from, s),
                Some("subscribe") => self.subscribe(&own, &bare(&to), s),
                Some("subscribed") => self.subscribed(&own, &bare(&to)),
                Some("unsubscribe") => self.unsubscribe(&own, &bare(&to)),
                Some("unsubscribed") => self.unsubscribed(&own, &bare(&to)),
                // Directed presence and probes from clients: delivered as they are.
                _ if !to.is_empty() => {
                    if to.contains('/') {
                        self.send(&to, s);
                    } else {
                        self.send_available(&bare(&to), &s);
                    }
                }
                _ => {}
            },
            "message" => self.message(s, now),
            _ => self.other(s),
        }
    }

    /// IQs and anything else for another entity: to that full JID, else an error.
    fn other(&mut self, s: Element) {
        let to = s.get("to").unwrap_or("").to_owned();
        let from = s.get("from").unwrap_or("").to_owned();
        let request = matches!(s.get("type"), Some("get" | "set"));
        let delivered = to.contains('/') && self.send(&to, s.clone());
        if !delivered && request {
            self.send(&from, error_reply(&s, "cancel", "service-unavailable"));
        }
    }

    /// A message: to a full JID, that session if it exists; to a bare JID (or a full JID
    /// that is gone) as SPEC IMP2 says; stored when nobody is available (IMP4).
    fn message(&mut self, mut s: Element, now: Duration) {
        let to = s.get("to").unwrap_or("").to_owned();
        let from = s.get("from").unwrap_or("").to_owned();
        if to.is_empty() || to.eq_ignore_ascii_case(&self.domain) {
            return;
        }
        let b = bare(&to);
        // A message from one of a user's clients: that client now owns the conversation.
        if from.contains('/') {
            self.locks.insert((bare(&from), b.clone()), from.clone());
        }
        if to.contains('/') && self.send(&to, s.clone()) {
            self.counters.messages += 1;
            return;
        }
        let locked = self
            .locks
            .get(&(b.clone(), bare(&from)))
            .filter(|full| self.available(&b).contains(full))
            .cloned();
        let targets = match locked {
            Some(full) => vec![full],
            None => self
                .available(&b)
                .into_iter()
                .filter(|t| self.resource_mut(t).is_some_and(|r| r.priority >= 0))
                .collect(),
        };
        let n = targets.iter().filter(|t| self.send(t, s.clone())).count();
        self.counters.messages += n as u64;
        if n == 0 && !matches!(s.get("type"), Some("error" | "groupchat" | "headline")) {
            s.children.push(uclab_proto::xmpp::Node::Element(
                Element::new("delay")
                    .attr("xmlns", NS_DELAY)
                    .attr("from", &self.domain)
                    .attr("stamp", &stamp(now)),
            ));
            let q = self.offline.entry(b).or_default();
            if q.len() >= OFFLINE_MAX {
                q.remove(0);
            }
            q.push(s);
            self.counters.stored += 1;
        }
    }

    /// Broadcast presence (no `to`): recorded, sent to the user's watchers and own
    /// resources; initial presence also gets the contacts' presence, pending subscription
    /// requests and stored messages (RFC 6121 §4.2, §3.1.3; SPEC IMP4).
    fn own_presence(&mut self, from: &str, s: Element) {
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
    fn broadcast(&mut self, from: &str, p: &Element) {
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
    fn push(&mut self, user: &str, jid: &str) {
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

    fn roster_iq(&mut self, from: &str, s: &Element) {
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
    fn subscribe(&mut self, user: &str, contact: &str, mut s: Element) {
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
        self.pending.insert((contact.to_owned(), user.to_owned()), s.clone());
        self.send_available(contact, &s);
    }

    /// `user` lets `contact` see their presence: approves a pending request, or pre-approves
    /// one (RFC 6121 §3.1.5, §3.4).
    fn subscribed(&mut self, user: &str, contact: &str) {
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
        let c = self.rosters.entry(contact.to_owned()).or_default();
        let ci = c.items.entry(user.to_owned()).or_default();
        ci.sub = Subscription::with(true, ci.sub.from());
        ci.ask = false;
        self.push(contact, user);
        // The new watcher sees the user's current presence.
        for (full, mut p) in self.presences(user) {
            p.set("from", &full);
            self.counters.presence_notifications += self.send_available(contact, &p) as u64;
        }
    }

    /// `user` stops seeing `contact`'s presence (RFC 6121 §3.3).
    fn unsubscribe(&mut self, user: &str, contact: &str) {
        if let Some(i) = self.rosters.get_mut(user).and_then(|r| r.items.get_mut(contact))
            && (i.sub.to() || i.ask)
        {
            i.sub = Subscription::with(false, i.sub.from());
            i.ask = false;
            self.push(user, contact);
        }
        self.pending.remove(&(contact.to_owned(), user.to_owned()));
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
    fn unsubscribed(&mut self, user: &str, contact: &str) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

    type Rx = UnboundedReceiver<Element>;

    fn router() -> Router {
        Router::new("example.com", Limits::default())
    }

    fn connect(r: &mut Router, jid: &str) -> Rx {
        let (tx, rx) = unbounded_channel();
        r.bind(jid, tx);
        rx
    }

    fn drain(rx: &mut Rx) -> Vec<String> {
        std::iter::from_fn(|| rx.try_recv().ok()).map(|e| e.to_xml()).collect()
    }

    fn parse(from: &str, xml: &str) -> Element {
        let mut e = uclab_proto::xmpp::parse_element(xml.as_bytes()).unwrap();
        e.set("from", from);
        e
    }

    fn send(r: &mut Router, from: &str, xml: &str) {
        r.handle(parse(from, xml), Duration::from_secs(1_767_603_600));
    }

    /// Online with initial presence; returns the session's receiver after draining it.
    fn online(r: &mut Router, jid: &str) -> Rx {
        let mut rx = connect(r, jid);
        send(r, jid, "<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>");
        send(r, jid, "<presence/>");
        drain(&mut rx);
        rx
    }

    #[test]
    fn imp2_multiple_device_messaging() {
        let mut r = router();
        let msg = |to: &str, body: &str| {
            format!("<message to='{to}' type='chat'><body>{body}</body></message>")
        };
        let mut desk = online(&mut r, "alice@example.com/desk");
        let mut phone = online(&mut r, "alice@example.com/phone");
        let mut tablet = connect(&mut r, "alice@example.com/tablet");
        send(&mut r, "alice@example.com/tablet", "<presence><priority>-1</priority></presence>");
        drain(&mut desk);
        drain(&mut phone);
        drain(&mut tablet);
        let bob = "bob@example.com/pc";
        // First message: every client with a non-negative priority.
        send(&mut r, bob, &msg("alice@example.com", "1"));
        assert_eq!(
            (drain(&mut desk).len(), drain(&mut phone).len(), drain(&mut tablet).len()),
            (1, 1, 0)
        );
        // The phone answers: bob's next messages go to the phone only.
        send(&mut r, "alice@example.com/phone", &msg("bob@example.com", "hi"));
        send(&mut r, bob, &msg("alice@example.com", "2"));
        assert!(drain(&mut phone)[0].contains(">2<") && drain(&mut desk).is_empty());
        // Alice answers from the desk: messages follow there.
        send(&mut r, "alice@example.com/desk", &msg("bob@example.com", "back"));
        send(&mut r, bob, &msg("alice@example.com", "3"));
        assert!(drain(&mut desk)[0].contains(">3<") && drain(&mut phone).is_empty());
        // Another sender is a separate conversation: all clients again.
        send(&mut r, "carol@example.com/x", &msg("alice@example.com", "c"));
        assert_eq!(drain(&mut desk).len() + drain(&mut phone).len(), 2);
        // The desk signs out: the lock goes with it.
        r.unbind("alice@example.com/desk");
        drain(&mut phone);
        send(&mut r, bob, &msg("alice@example.com", "4"));
        assert!(drain(&mut phone)[0].contains(">4<"));
    }

    #[test]
    fn imp4_offline_messages_wait_for_available_presence() {
        let mut r = router();
        let msg =
            |to: &str, body: &str| format!("<message to='{to}'><body>{body}</body></message>");
        send(&mut r, "alice@example.com/a", &msg("bob@example.com", "one"));
        send(&mut r, "alice@example.com/a", &msg("bob@example.com/phone", "two"));
        // Connected but not available: bare-JID messages are still stored.
        let mut desk = connect(&mut r, "bob@example.com/desk");
        send(&mut r, "alice@example.com/a", &msg("bob@example.com", "three"));
        assert!(drain(&mut desk).is_empty());
        send(&mut r, "bob@example.com/desk", "<presence/>");
        let got = drain(&mut desk);
        assert_eq!(got.len(), 4, "own presence, then three stored messages: {got:?}");
        assert!(got[1].contains("one") && got[1].contains("urn:xmpp:delay"));
        assert!(got[1].contains("stamp=\"2026-01-05T09:00:00Z\""), "{}", got[1]);
        assert!(got[3].contains("three"));
        r.unbind("bob@example.com/desk");
        for i in 0..(OFFLINE_MAX + 5) {
            send(&mut r, "alice@example.com/a", &msg("bob@example.com", &i.to_string()));
        }
        let mut rx = connect(&mut r, "bob@example.com/x");
        send(&mut r, "bob@example.com/x", "<presence/>");
        let got = drain(&mut rx);
        assert_eq!(got.len(), OFFLINE_MAX + 1, "bounded");
        assert!(got[1].contains("<body>5</body>"), "oldest dropped first: {}", got[1]);
    }

    #[test]
    fn imp1_subscription_handshake_and_presence() {
        let mut r = router();
        let (a, b) = ("alice@example.com/desk", "bob@example.com/pc");
        let mut ra = online(&mut r, a);
        let mut rb = online(&mut r, b);
        send(&mut r, a, "<presence to='bob@example.com' type='subscribe'/>");
        let got = drain(&mut ra);
        assert!(got[0].contains("ask=\"subscribe\"") && got[0].contains("subscription=\"none\""));
        let got = drain(&mut rb);
        assert!(
            got[0].contains("type=\"subscribe\"") && got[0].contains("from=\"alice@example.com\"")
        );
        send(&mut r, b, "<presence to='alice@example.com' type='subscribed'/>");
        let got = drain(&mut rb);
        assert!(got[0].contains("subscription=\"from\""), "{got:?}");
        let got = drain(&mut ra);
        assert!(got[0].contains("type=\"subscribed\""), "{got:?}");
        assert!(got[1].contains("subscription=\"to\"") && !got[1].contains("ask"), "{got:?}");
        assert!(got[2].contains(&format!("from=\"{b}\"")), "bob's presence: {got:?}");
        // Bob goes away: Alice (a watcher) is notified, counted.
        let before = r.counters().presence_notifications;
        send(&mut r, b, "<presence><show>away</show></presence>");
        assert!(drain(&mut ra)[0].contains("<show>away</show>"));
        assert_eq!(r.counters().presence_notifications, before + 1);
        // Alice going away reaches nobody else: Bob does not watch her.
        drain(&mut rb);
        send(&mut r, a, "<presence><show>dnd</show></presence>");
        assert!(drain(&mut rb).is_empty());
        drain(&mut ra);
        // Bob signs out: Alice sees him go.
        r.unbind(b);
        assert!(drain(&mut ra)[0].contains("type=\"unavailable\""));
        // Alice unsubscribes: both rosters lose the subscription.
        send(&mut r, a, "<presence to='bob@example.com' type='unsubscribe'/>");
        assert!(drain(&mut ra)[0].contains("subscription=\"none\""));
        let mut rb = connect(&mut r, b);
        send(&mut r, b, "<iq type='get' id='g'><query xmlns='jabber:iq:roster'/></iq>");
        assert!(drain(&mut rb)[0].contains("subscription=\"none\""));
    }

    #[test]
    fn imp1_roster_set_get_remove_and_errors() {
        let mut r = router();
        let a = "alice@example.com/desk";
        let mut ra = online(&mut r, a);
        send(
            &mut r,
            a,
            "<iq type='set' id='s1'><query xmlns='jabber:iq:roster'><item jid='nurse@example.com' name='Nurse'><group>Servants</group></item></query></iq>",
        );
        let got = drain(&mut ra);
        assert!(got[0].contains("type=\"result\"") && got[0].contains("id=\"s1\""), "{got:?}");
        assert!(got[1].contains("ver=\"1\"") && got[1].contains("<group>Servants</group>"));
        for (bad, cond) in [
            ("<item jid='nurse@example.com/x'/>", "jid-malformed"),
            ("<item jid='a@example.com'/><item jid='b@example.com'/>", "bad-request"),
            ("<item jid='x@example.com'><group></group></item>", "not-acceptable"),
            ("<item jid='ghost@example.com' subscription='remove'/>", "item-not-found"),
        ] {
            let xml =
                format!("<iq type='set' id='e'><query xmlns='jabber:iq:roster'>{bad}</query></iq>");
            send(&mut r, a, &xml);
            let got = drain(&mut ra);
            assert!(got[0].contains(cond) && got[0].contains("type=\"error\""), "{bad}: {got:?}");
        }
        send(
            &mut r,
            a,
            "<iq type='set' id='rm'><query xmlns='jabber:iq:roster'><item jid='nurse@example.com' subscription='remove'/></query></iq>",
        );
        let got = drain(&mut ra);
        assert!(got[1].contains("subscription=\"remove\"") && got[1].contains("ver=\"2\""));
        send(&mut r, a, "<iq type='get' id='g'><query xmlns='jabber:iq:roster'/></iq>");
        assert!(!drain(&mut ra)[0].contains("<item"));
    }

    #[test]
    fn imp3_contact_and_watcher_limits() {
        let mut r = Router::new("example.com", Limits { contacts: 2, watchers: 1 });
        assert!(r.provision("alice", "bob") && r.provision("alice", "carol"));
        assert!(!r.provision("alice", "dave"), "contact list full");
        assert!(!r.provision("erin", "bob"), "bob's watcher list full");
        let a = "alice@example.com/desk";
        let mut ra = online(&mut r, a);
        send(
            &mut r,
            a,
            "<iq type='set' id='s'><query xmlns='jabber:iq:roster'><item jid='dave@example.com'/></query></iq>",
        );
        assert!(drain(&mut ra)[0].contains("not-allowed"));
        send(&mut r, a, "<presence to='dave@example.com' type='subscribe'/>");
        let got = drain(&mut ra);
        assert!(got[0].contains("type=\"error\"") && got[0].contains("not-allowed"), "{got:?}");
        // Frank asks to watch Bob, whose one watcher place is taken: refused.
        let f = "frank@example.com/x";
        let mut rf = online(&mut r, f);
        send(&mut r, f, "<presence to='bob@example.com' type='subscribe'/>");
        let got = drain(&mut rf);
        assert!(got.iter().any(|g| g.contains("not-allowed")), "{got:?}");
        assert_eq!(r.counters().limit_refusals, 3);
    }

    #[test]
    fn preapproval_and_full_request_kept() {
        let mut r = router();
        let (a, b) = ("alice@example.com/desk", "bob@example.com/pc");
        let mut ra = online(&mut r, a);
        send(&mut r, a, "<presence to='bob@example.com' type='subscribed'/>");
        assert!(drain(&mut ra)[0].contains("approved=\"true\""));
        let mut rb = online(&mut r, b);
        send(&mut r, b, "<presence to='alice@example.com' type='subscribe'/>");
        let got = drain(&mut rb);
        assert!(got[0].contains("ask=\"subscribe\""), "{got:?}");
        assert!(got[1].contains("type=\"subscribed\""), "pre-approved: {got:?}");
        // A request to an offline user keeps its payload and is shown at each sign-in.
        send(
            &mut r,
            a,
            "<presence to='carol@example.com' type='subscribe'><preauth xmlns='urn:xmpp:pars:0' token='t'/></presence>",
        );
        for res in ["one", "two"] {
            let c = format!("carol@example.com/{res}");
            let mut rc = connect(&mut r, &c);
            send(&mut r, &c, "<presence/>");
            let got = drain(&mut rc);
            assert!(got[1].contains("preauth") && got[1].contains("type=\"subscribe\""), "{got:?}");
            r.unbind(&c);
        }
    }

    #[test]
    fn malformed_addresses_are_refused_not_stored() {
        let mut r = router();
        let a = "alice@example.com/desk";
        let mut ra = online(&mut r, a);
        for to in ["@@", "bob@", "@example.com", "bob@example.com/", "a b@example.com"] {
            send(&mut r, a, &format!("<message to='{to}'><body>x</body></message>"));
            let got = drain(&mut ra);
            assert!(got.len() == 1 && got[0].contains("jid-malformed"), "{to}: {got:?}");
        }
        assert_eq!(r.counters().stored, 0);
        // Server and full JIDs are fine.
        send(
            &mut r,
            a,
            "<iq type='get' id='p' to='example.com'><ping xmlns='urn:xmpp:ping'/></iq>",
        );
        assert!(!drain(&mut ra)[0].contains("jid-malformed"));
    }

    const SVC: &str = "conference-imp1.example.com";

    fn with_muc(
        persistent_chat: bool,
        db: Option<crate::imp::muc::ChatDb>,
        limits: crate::imp::muc::RoomLimits,
    ) -> Router {
        let mut r = router();
        r.add_muc(MucConfig { service: SVC.into(), persistent_chat, db, limits });
        r
    }

    fn join(r: &mut Router, from: &str, nick: &str, history: Option<u32>) {
        let h = history.map(|n| format!("<history maxstanzas='{n}'/>")).unwrap_or_default();
        let xml = format!(
            "<presence to='team@{SVC}/{nick}'><x xmlns='http://jabber.org/protocol/muc'>{h}</x></presence>"
        );
        send(r, from, &xml);
    }

    fn say(r: &mut Router, from: &str, body: &str) {
        let xml =
            format!("<message to='team@{SVC}' type='groupchat'><body>{body}</body></message>");
        send(r, from, &xml);
    }

    fn persist(r: &mut Router, from: &str) {
        send(
            r,
            from,
            &format!(
                "<iq type='set' id='c' to='team@{SVC}'><query xmlns='http://jabber.org/protocol/muc#owner'>\
                 <x xmlns='jabber:x:data' type='submit'><field var='muc#roomconfig_persistentroom'>\
                 <value>1</value></field></x></query></iq>"
            ),
        );
    }

    #[test]
    fn imp5_ad_hoc_room_lives_while_occupied() {
        let mut r = with_muc(false, None, Default::default());
        let (a, b) = ("alice@example.com/pc", "bob@example.com/pc");
        let (mut ra, mut rb) = (online(&mut r, a), online(&mut r, b));
        join(&mut r, a, "alice", None);
        let got = drain(&mut ra);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].contains("code=\"110\"") && got[0].contains("code=\"201\""), "{got:?}");
        assert!(got[0].contains("affiliation=\"owner\""));
        assert!(got[1].contains("<subject/>"));
        join(&mut r, b, "bob", None);
        let (ga, gb) = (drain(&mut ra), drain(&mut rb));
        assert!(ga.len() == 1 && ga[0].contains(&format!("from=\"team@{SVC}/bob\"")), "{ga:?}");
        assert_eq!(gb.len(), 3, "{gb:?}");
        assert!(gb[0].contains("/alice") && gb[1].contains("110") && !gb[1].contains("201"));
        // Nick taken by someone else; a second nick for the same session.
        join(&mut r, "carol@example.com/pc", "bob", None);
        join(&mut r, b, "bobby", None);
        assert!(drain(&mut rb)[0].contains("not-acceptable"));
        say(&mut r, a, "hello");
        let (ga, gb) = (drain(&mut ra), drain(&mut rb));
        assert!(ga[0].contains("hello") && gb[0].contains("hello") && gb[0].contains("/alice"));
        // A non-occupant cannot post.
        let mut rc = connect(&mut r, "carol@example.com/pc");
        say(&mut r, "carol@example.com/pc", "intruder");
        assert!(drain(&mut rc)[0].contains("not-acceptable"));
        // bob's session ends: alice sees him go.
        r.unbind(b);
        let ga = drain(&mut ra);
        assert!(ga.iter().any(|x| x.contains("/bob") && x.contains("unavailable")), "{ga:?}");
        // The last one leaves: the ad hoc room dies with its history.
        send(&mut r, a, &format!("<presence to='team@{SVC}/alice' type='unavailable'/>"));
        assert!(drain(&mut ra)[0].contains("110"));
        assert_eq!(r.muc(SVC).unwrap().room_counts(), (0, 0));
        join(&mut r, a, "alice", None);
        let got = drain(&mut ra);
        assert!(got[0].contains("201") && !got.iter().any(|x| x.contains("hello")), "{got:?}");
    }

    #[test]
    fn imp5_persistent_rooms_history_and_database() {
        let db = crate::imp::muc::ChatDb::default();
        db.set_up(true);
        let mut r = with_muc(true, Some(db.clone()), Default::default());
        let (a, b) = ("alice@example.com/pc", "bob@example.com/pc");
        let (mut ra, mut rb) = (online(&mut r, a), online(&mut r, b));
        join(&mut r, a, "alice", None);
        // Only the owner configures.
        join(&mut r, b, "bob", None);
        persist(&mut r, b);
        assert!(drain(&mut rb).last().unwrap().contains("forbidden"));
        persist(&mut r, a);
        assert!(drain(&mut ra).iter().any(|x| x.contains("type=\"result\"")));
        for i in 0..120 {
            say(&mut r, a, &format!("m{i}"));
        }
        send(&mut r, a, &format!("<presence to='team@{SVC}/alice' type='unavailable'/>"));
        send(&mut r, b, &format!("<presence to='team@{SVC}/bob' type='unavailable'/>"));
        drain(&mut ra);
        drain(&mut rb);
        // Empty, persistent: it stays; 15 shown on join, at most 100 on request.
        assert_eq!(r.muc(SVC).unwrap().room_counts(), (0, 1));
        join(&mut r, b, "bob", None);
        let got = drain(&mut rb);
        let hist: Vec<_> = got.iter().filter(|x| x.contains("urn:xmpp:delay")).collect();
        assert_eq!(hist.len(), 15, "{got:?}");
        assert!(hist[0].contains("m105") && hist[14].contains("m119"));
        send(&mut r, b, &format!("<presence to='team@{SVC}/bob' type='unavailable'/>"));
        join(&mut r, b, "bob", Some(500));
        let got = drain(&mut rb);
        assert_eq!(got.iter().filter(|x| x.contains("urn:xmpp:delay")).count(), 100);
        // The database is lost: chat goes on, nothing is written, no new persistent room.
        db.set_up(false);
        say(&mut r, b, "unsaved");
        assert!(drain(&mut rb)[0].contains("unsaved"));
        assert_eq!(r.muc(SVC).unwrap().counters().not_written, 1);
        send(&mut r, a, &format!("<presence to='other@{SVC}/alice'/>"));
        send(
            &mut r,
            a,
            &format!(
                "<iq type='set' id='c' to='other@{SVC}'><query xmlns='http://jabber.org/protocol/muc#owner'>\
                 <x xmlns='jabber:x:data' type='submit'><field var='muc#roomconfig_persistentroom'>\
                 <value>1</value></field></x></query></iq>"
            ),
        );
        assert!(drain(&mut ra).last().unwrap().contains("service-unavailable"));
        send(&mut r, b, &format!("<presence to='team@{SVC}/bob' type='unavailable'/>"));
        join(&mut r, b, "bob", Some(100));
        assert!(!drain(&mut rb).iter().any(|x| x.contains("unsaved")));
    }

    #[test]
    fn imp5_service_needs_its_database_to_start() {
        let db = crate::imp::muc::ChatDb::default();
        let mut r = with_muc(true, Some(db.clone()), Default::default());
        let a = "alice@example.com/pc";
        let mut ra = online(&mut r, a);
        join(&mut r, a, "alice", None);
        assert!(drain(&mut ra)[0].contains("service-unavailable"));
        // It did not start; the database coming up later does not start it...
        db.set_up(true);
        join(&mut r, a, "alice", None);
        assert!(drain(&mut ra)[0].contains("service-unavailable"));
        // ...a restart of the node does.
        r.set_muc_up(SVC, false);
        r.set_muc_up(SVC, true);
        join(&mut r, a, "alice", None);
        assert!(drain(&mut ra)[0].contains("110"));
        // Without persistent chat, ad hoc rooms need no database.
        let mut r = with_muc(false, None, Default::default());
        let mut ra = online(&mut r, a);
        join(&mut r, a, "alice", None);
        assert!(drain(&mut ra)[0].contains("110"));
        persist(&mut r, a);
        assert!(drain(&mut ra)[0].contains("not-allowed"));
    }

    #[test]
    fn imp5_room_and_occupant_limits() {
        let db = crate::imp::muc::ChatDb::default();
        db.set_up(true);
        let limits = crate::imp::muc::RoomLimits { rooms: 2, persistent: 1, occupants: 2 };
        let mut r = with_muc(true, Some(db), limits);
        let users = ["a", "b", "c"].map(|u| format!("{u}@example.com/pc"));
        let mut rx: Vec<Rx> = users.iter().map(|u| online(&mut r, u)).collect();
        for (u, n) in users.iter().zip(["a", "b", "c"]) {
            join(&mut r, u, n, None);
        }
        assert!(drain(&mut rx[2])[0].contains("service-unavailable"));
        persist(&mut r, &users[0]);
        assert!(drain(&mut rx[0]).last().unwrap().contains("result"));
        send(&mut r, &users[2], &format!("<presence to='two@{SVC}/c'/>"));
        assert!(drain(&mut rx[2])[0].contains("110"));
        send(
            &mut r,
            &users[2],
            &format!(
                "<iq type='set' id='c' to='two@{SVC}'><query xmlns='http://jabber.org/protocol/muc#owner'>\
                 <x xmlns='jabber:x:data' type='submit'><field var='muc#roomconfig_persistentroom'>\
                 <value>1</value></field></x></query></iq>"
            ),
        );
        assert!(drain(&mut rx[2])[0].contains("resource-constraint"));
        send(&mut r, &users[2], &format!("<presence to='three@{SVC}/c'/>"));
        assert!(drain(&mut rx[2])[0].contains("resource-constraint"));
        // A node crash loses ad hoc rooms; the persistent one is in the database.
        r.set_muc_up(SVC, false);
        assert_eq!(r.muc(SVC).unwrap().room_counts(), (0, 1));
        send(&mut r, &users[2], &format!("<presence to='three@{SVC}/c'/>"));
        assert!(drain(&mut rx[2])[0].contains("service-unavailable"));
    }

    #[test]
    fn stamps() {
        assert_eq!(stamp(Duration::ZERO), "1970-01-01T00:00:00Z");
        assert_eq!(stamp(Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(stamp(Duration::from_secs(1_767_603_661)), "2026-01-05T09:01:01Z");
    }
}
