//! The IM&P cluster's stanza router (RFC 6121; SPEC IMP1–IMP4): rosters and subscriptions,
//! presence broadcast and probes, message delivery with multiple-device messaging, and
//! offline storage. One router serves every node of a cluster (the real nodes share this
//! state through their database), so a user who fails over to the subcluster peer keeps their
//! roster and watchers.
//!
//! Sessions hand it stanzas already stamped with their full JID ([`Router::handle`]); it
//! answers and queues what each bound session is to get, addressed by its [`SessionId`], and
//! the node's I/O drains the queue ([`Router::poll_output`]) into the sessions' connections.
//! It holds no channel, never blocks and never does I/O, so it is tested by draining.
//!
//! What it keeps per user is bounded: the contact and watcher lists by the configured limits
//! (SPEC IMP3, default 200 each), offline messages by [`OFFLINE_MAX`], pending subscription
//! requests by the watcher limit.
//!
//! The files: this one holds the state (sessions, rosters, offline messages, the MUC services)
//! and the routing of each stanza, messages included; `roster.rs` the roster queries and
//! pushes, bulk provisioning and the subscription handshake (RFC 6121 §2, §3, IMP3's limits);
//! `presence.rs` presence broadcast and initial presence (§4) and the phone state composed
//! into it (SPEC CC7); `tests.rs` the tests.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use uclab_proto::jid::{bare, domain, resource, valid_jid};
use uclab_proto::xmpp::{Element, error_reply, stamp};

use crate::imp::muc::{Delivery, Muc, MucConfig};

mod federation;
mod presence;
mod roster;

pub use federation::{Policy, REMOTE_QUEUE};

/// Identifies one bound session (a client connection) to the node's I/O.
pub type SessionId = u64;

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
    session: SessionId,
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
    /// Stanzas handed to the federation service for another domain (FED1).
    pub federated_out: u64,
    /// Stanzas from authenticated foreign domains.
    pub federated_in: u64,
    /// Stanzas refused or dropped because federation is off or policy forbids it (FED5).
    pub federation_refusals: u64,
    /// Stanzas for another domain that could not be delivered and were bounced.
    pub bounced: u64,
    /// Stanzas sent to and received from peer clusters of the domain (SPEC FED2).
    pub intercluster: u64,
}

/// Cluster-wide delivery between sessions (SPEC IMP1) with multiple-device messaging (IMP2),
/// presence and list limits (IMP3) and offline storage (IMP4).
#[derive(Debug)]
pub struct Router {
    domain: String,
    limits: Limits,
    /// Bound sessions: bare JID (lower case) → resource → state.
    sessions: BTreeMap<String, BTreeMap<String, Resource>>,
    /// What sessions are to get, in order, until the I/O drains it.
    out: VecDeque<(SessionId, Element)>,
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
    /// Federation with other domains and its policy (SPEC FED1, FED5); `None`: off.
    federation: Option<Policy>,
    /// Stanzas for other domains until the federation service drains them.
    remote: VecDeque<Element>,
    /// Federation refusals and bounces, for the transcript.
    notes: VecDeque<String>,
    /// SPEC FED2: users of this domain homed on a peer cluster, by bare JID: the host their
    /// stanzas are addressed to there.
    peers: BTreeMap<String, String>,
    /// The peer clusters' node names (what their stanzas come from).
    peer_hosts: BTreeSet<String>,
    /// This cluster's node names; the first is the host what goes to a peer comes from.
    own_hosts: Vec<String>,
}

impl Router {
    /// A router for the presence domain `domain` with list limits `limits`.
    pub fn new(domain: &str, limits: Limits) -> Self {
        Self {
            domain: domain.to_ascii_lowercase(),
            limits,
            sessions: BTreeMap::new(),
            out: VecDeque::new(),
            offline: BTreeMap::new(),
            locks: BTreeMap::new(),
            rosters: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_push: 0,
            counters: Counters::default(),
            mucs: BTreeMap::new(),
            on_phone: BTreeSet::new(),
            federation: None,
            remote: VecDeque::new(),
            notes: VecDeque::new(),
            peers: BTreeMap::new(),
            peer_hosts: BTreeSet::new(),
            own_hosts: Vec::new(),
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

    /// The next stanza for a session, in the order they were produced.
    pub fn poll_output(&mut self) -> Option<(SessionId, Element)> {
        self.out.pop_front()
    }

    fn deliver(&mut self, out: Vec<Delivery>) {
        for (to, s) in out {
            self.send(&to, s);
        }
    }

    /// A session bound `jid`. It is connected, not yet available: it gets stanzas sent to its
    /// full JID, and bare-JID messages once it sends presence.
    pub fn bind(&mut self, jid: &str, session: SessionId) {
        let r = Resource { session, priority: 0, presence: None, interested: false };
        let res = resource(jid).unwrap_or("").to_owned();
        self.sessions.entry(bare(jid)).or_default().insert(res, r);
    }

    /// Session `session` ended: each resource it bound is unbound ([`Router::unbind`]). A
    /// resource that a newer session bound since (the same full JID) is left alone.
    pub fn unbind_session(&mut self, session: SessionId) {
        let mine: Vec<String> = self
            .sessions
            .iter()
            .flat_map(|(b, m)| {
                m.iter()
                    .filter(|(_, r)| r.session == session)
                    .map(move |(res, _)| format!("{b}/{res}"))
            })
            .collect();
        for jid in mine {
            self.unbind(&jid);
        }
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
                    .filter(|(_, r)| r.presence.is_some())
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
        if !self.is_local_jid(full) {
            self.send_remote(full, s);
            return true;
        }
        let Some(r) = self.sessions.get(&bare(full)).and_then(|m| m.get(resource(full)?)) else {
            return false;
        };
        let session = r.session;
        self.out.push_back((session, s));
        true
    }

    /// Sends `s` to every available resource of `bare_jid`; how many got it.
    fn send_available(&mut self, bare_jid: &str, s: &Element) -> usize {
        if !self.is_local_jid(bare_jid) {
            // The foreign server fans it out to the user's resources.
            self.send_remote(bare_jid, s.clone());
            return 1;
        }
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
        let to_domain = domain(&to);
        if !to_self && !self.is_local(&to_domain) && self.refuse_outbound(&s) {
            return;
        }
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
        // A foreign bare JID's server answers for its account (RFC 6120 §10.5.4).
        let foreign = !to.is_empty() && !self.is_local_jid(&bare(&to));
        let delivered = (to.contains('/') || foreign) && self.send(&to, s.clone());
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
        if !self.is_local_jid(&b) {
            // SPEC FED1: the foreign server delivers (or stores) it.
            if from.contains('/') {
                self.locks.insert((bare(&from), b), from.clone());
            }
            return self.send_remote(&to, s);
        }
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
}

#[cfg(test)]
mod tests;
