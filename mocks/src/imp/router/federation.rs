//! The router's side of inter-domain federation (SPEC FED1, FED5; RFC 6121 across servers):
//! what local users send to another domain leaves through [`Router::poll_remote`] for the
//! federation service to carry over a server-to-server stream, and what comes in from an
//! authenticated foreign domain enters through [`Router::handle_remote`].
//!
//! Rosters may hold foreign JIDs. The router keeps only its own users' side of a subscription:
//! the foreign server keeps the other (RFC 6121 §3.1), so a subscription request to a foreign
//! contact goes out as it is and the answer comes back as `subscribed` or `unsubscribed`;
//! presence to foreign watchers goes to their bare JID, once per watcher, and their server fans
//! it out; initial presence probes foreign contacts (§4.3). Messages for a local user who is
//! offline are stored whoever sent them (SPEC IMP4), federated senders included.
//!
//! Policy (FED5) is checked both ways: a stanza to a domain the policy does not allow is
//! answered with a `policy-violation` error and never leaves; one from such a domain is
//! dropped and noted. With federation off, a stanza to another domain gets
//! `remote-server-not-found` (RFC 6120 §8.3.3.15). Every refusal and every bounce is a note
//! ([`Router::poll_note`]) for the transcript.

use std::collections::{BTreeMap, BTreeSet};

use uclab_proto::jid::{bare, domain};
use uclab_proto::xmpp::{Element, error_reply};

use super::{Router, Subscription};

/// Stanzas waiting for a federation node at most; beyond it a stanza is bounced with
/// `resource-constraint`. Room for a presence storm across domains (1,000 users watched by 75
/// foreign users each going away together: 75,000 stanzas at once, issue 18's bench).
pub const REMOTE_QUEUE: usize = 1 << 18;
/// Notes waiting for the transcript at most (the oldest go first).
const NOTES: usize = 1_024;

/// SPEC FED5: the foreign domains federation reaches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Policy {
    /// Every domain.
    #[default]
    Open,
    /// Only these (lower case).
    Allow(BTreeSet<String>),
    /// All but these (lower case).
    Block(BTreeSet<String>),
}

impl Policy {
    /// Whether federation with `domain` is allowed.
    pub fn allows(&self, domain: &str) -> bool {
        let d = domain.to_ascii_lowercase();
        match self {
            Self::Open => true,
            Self::Allow(l) => l.contains(&d),
            Self::Block(l) => !l.contains(&d),
        }
    }
}

impl Router {
    /// Turns federation on with `policy` (SPEC FED1, FED5); without it stanzas to other
    /// domains are refused.
    pub fn set_federation(&mut self, policy: Policy) {
        self.federation = Some(policy);
    }

    /// The federation policy, if federation is on.
    pub fn federation(&self) -> Option<&Policy> {
        self.federation.as_ref()
    }

    /// Whether `d` is served here: the presence domain or one of its conference services.
    pub(super) fn is_local(&self, d: &str) -> bool {
        d.is_empty() || d == self.domain || self.mucs.contains_key(d)
    }

    /// Whether `jid` is delivered here: a local domain, and not a user homed on a peer
    /// cluster (SPEC FED2).
    pub(super) fn is_local_jid(&self, jid: &str) -> bool {
        self.is_local(&domain(jid)) && !self.peers.contains_key(&bare(jid))
    }

    /// SPEC FED2: this cluster's node names (`own_hosts`, the first is what goes to a peer
    /// comes from), the users of the domain homed on peer clusters with the host their stanzas
    /// go to, and the peer clusters' node names.
    pub fn set_intercluster(
        &mut self,
        own_hosts: Vec<String>,
        peers: BTreeMap<String, String>,
        peer_hosts: BTreeSet<String>,
    ) {
        self.own_hosts = own_hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
        self.peers = peers.into_iter().map(|(u, h)| (bare(&u), h.to_ascii_lowercase())).collect();
        self.peer_hosts = peer_hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
    }

    /// The next stanza for another domain, `to` set, for the federation service.
    pub fn poll_remote(&mut self) -> Option<Element> {
        self.remote.pop_front()
    }

    /// The next federation note for the transcript (a refusal or a bounce).
    pub fn poll_note(&mut self) -> Option<String> {
        self.notes.pop_front()
    }

    /// A federation note from a gateway, for the transcript.
    pub fn note_federation(&mut self, text: String) {
        self.note(text);
    }

    pub(super) fn note(&mut self, text: String) {
        if self.notes.len() >= NOTES {
            self.notes.pop_front();
        }
        self.notes.push_back(text);
    }

    /// Why a stanza to domain `d` may not leave, if it may not: the error condition.
    fn refusal(&self, d: &str) -> Option<&'static str> {
        match &self.federation {
            None => Some("remote-server-not-found"),
            Some(p) if !p.allows(d) => Some("policy-violation"),
            Some(_) => None,
        }
    }

    /// A local user's stanza for another domain: refused (an error back to the sender, and a
    /// note) when federation or policy forbids it. True when it was refused.
    pub(super) fn refuse_outbound(&mut self, s: &Element) -> bool {
        let to = s.get("to").unwrap_or("");
        let d = domain(to);
        let Some(condition) = self.refusal(&d) else { return false };
        self.counters.federation_refusals += 1;
        self.note(format!("federation refused {} to {d}: {condition}", s.name));
        if s.get("type") != Some("error") {
            let from = s.get("from").unwrap_or("").to_owned();
            self.send(&from, error_reply(s, "cancel", condition));
        }
        true
    }

    /// Queues `s` for the foreign `to` (full or bare JID). A domain policy does not allow is
    /// never sent to (a watcher left from before a policy change): the stanza is dropped and
    /// noted.
    pub(super) fn send_remote(&mut self, to: &str, mut s: Element) {
        if let Some(host) = self.peers.get(&bare(to)).cloned() {
            // SPEC FED2: the host part names the peer cluster's node, and ours goes with it.
            s.set("to", &rehost(to, &host));
            if let (Some(from), Some(own)) =
                (s.get("from").map(str::to_owned), self.own_hosts.first())
                && self.is_local(&domain(&from))
            {
                let own = own.clone();
                s.set("from", &rehost(&from, &own));
            }
            if self.queue_remote(s) {
                self.counters.intercluster += 1;
            }
            return;
        }
        let d = domain(to);
        if let Some(condition) = self.refusal(&d) {
            self.counters.federation_refusals += 1;
            self.note(format!("federation dropped {} to {d}: {condition}", s.name));
            return;
        }
        s.set("to", to);
        if self.queue_remote(s) {
            self.counters.federated_out += 1;
        }
    }

    /// Queues `s` for the federation service, or bounces it when the queue is full; whether
    /// it was queued.
    fn queue_remote(&mut self, s: Element) -> bool {
        if self.remote.len() >= REMOTE_QUEUE {
            self.bounce(vec![s], "resource-constraint");
            return false;
        }
        self.remote.push_back(s);
        true
    }

    /// Stanzas the federation service could not deliver: each sender that is a local user
    /// gets an error with `condition` (errors themselves are not answered, RFC 6120 §8.3.1).
    pub fn bounce(&mut self, stanzas: Vec<Element>, condition: &str) {
        let Some(first) = stanzas.first() else { return };
        let d = domain(first.get("to").unwrap_or(""));
        self.note(format!("federation bounced {} stanza(s) to {d}: {condition}", stanzas.len()));
        for mut s in stanzas {
            self.counters.bounced += 1;
            if s.get("type") == Some("error") {
                continue;
            }
            // SPEC FED2: addresses rewritten for a peer cluster go back to the domain's form.
            for k in ["from", "to"] {
                let v = s.get(k).unwrap_or("").to_owned();
                let d = domain(&v);
                if self.own_hosts.contains(&d) || self.peer_hosts.contains(&d) {
                    let back = rehost(&v, &self.domain.clone());
                    s.set(k, &back);
                }
            }
            let from = s.get("from").unwrap_or("").to_owned();
            if self.is_local_jid(&from) {
                self.send(&from, error_reply(&s, "cancel", condition));
            }
        }
    }

    /// A local user's stanza that a federation gateway cannot carry (SPEC FED3: group chat
    /// or file transfer to a SIP domain): an error with `condition` and `text` back to the
    /// sender, and a note.
    pub fn refuse_federated(&mut self, s: &Element, condition: &str, text: &str) {
        let d = domain(s.get("to").unwrap_or(""));
        self.counters.federation_refusals += 1;
        self.note(format!("federation refused {} to {d}: {condition} ({text})", s.name));
        let from = s.get("from").unwrap_or("").to_owned();
        if s.get("type") != Some("error") && self.is_local_jid(&from) {
            self.send(&from, uclab_proto::xmpp::error_reply_text(s, "cancel", condition, text));
        }
    }

    /// What local `user` (bare JID) shows now: the presence of its first available resource,
    /// as its watchers get it (phone state composed); `None` when it has none.
    pub fn current_presence(&self, user: &str) -> Option<Element> {
        self.presences(&user.to_ascii_lowercase()).into_iter().next().map(|(_, p)| p)
    }

    /// A stanza from an authenticated foreign domain (the server stream checked that `from`
    /// is in it and `to` is ours). `now` stamps offline storage.
    pub fn handle_remote(&mut self, mut s: Element, now: std::time::Duration) {
        let from_domain = domain(s.get("from").unwrap_or(""));
        let intercluster = self.peer_hosts.contains(&from_domain);
        if intercluster {
            // SPEC FED2: a peer cluster of the domain: both addresses back in the domain's
            // own form.
            self.counters.intercluster += 1;
            let d = self.domain.clone();
            let from = rehost(s.get("from").unwrap_or(""), &d);
            s.set("from", &from);
            let to = s.get("to").unwrap_or("").to_owned();
            if self.own_hosts.contains(&domain(&to)) {
                s.set("to", &rehost(&to, &d));
            }
        }
        let from = s.get("from").unwrap_or("").to_owned();
        let to = s.get("to").unwrap_or("").to_owned();
        let from_domain = domain(&from);
        if !intercluster && self.refusal(&from_domain).is_some() {
            self.counters.federation_refusals += 1;
            self.note(format!(
                "federation refused {} from {from_domain}: policy-violation",
                s.name
            ));
            return;
        }
        if !self.is_local(&domain(&to)) || from.is_empty() {
            return;
        }
        if !intercluster {
            self.counters.federated_in += 1;
        }
        let (user, contact) = (bare(&to), bare(&from));
        match (s.name.as_str(), s.get("type")) {
            ("message", _) => self.message(s, now),
            ("presence", Some("subscribe")) => self.remote_subscribe(&user, &contact, s),
            ("presence", Some("subscribed")) => {
                // The foreign contact approved the user's request (RFC 6121 §3.1.6).
                let Some(i) = self.rosters.get_mut(&user).and_then(|r| r.items.get_mut(&contact))
                else {
                    return;
                };
                if !i.ask && i.sub.to() {
                    return;
                }
                i.sub = Subscription::with(true, i.sub.from());
                i.ask = false;
                self.push(&user, &contact);
                self.send_available(&user, &s);
            }
            ("presence", Some("unsubscribe")) => {
                // The foreign user stops watching (§3.3.3).
                self.pending.remove(&(user.clone(), contact.clone()));
                if let Some(i) = self.rosters.get_mut(&user).and_then(|r| r.items.get_mut(&contact))
                    && i.sub.from()
                {
                    i.sub = Subscription::with(i.sub.to(), false);
                    self.push(&user, &contact);
                    self.send_available(&user, &s);
                }
            }
            ("presence", Some("unsubscribed")) => {
                // The foreign contact refused or cancelled (§3.2.3).
                if let Some(i) = self.rosters.get_mut(&user).and_then(|r| r.items.get_mut(&contact))
                    && (i.sub.to() || i.ask)
                {
                    i.sub = Subscription::with(false, i.sub.from());
                    i.ask = false;
                    self.push(&user, &contact);
                    self.send_available(&user, &s);
                }
            }
            ("presence", Some("probe")) => {
                // Only a watcher learns the user's presence (§4.3.2).
                if self.watches(&contact, &user) {
                    for (full, mut p) in self.presences(&user) {
                        p.set("from", &full);
                        self.send_remote(&from, p);
                    }
                }
            }
            ("presence", None | Some("unavailable")) if !to.contains('/') => {
                // A contact's broadcast: for the user's resources if the user sees it.
                let sees = self
                    .rosters
                    .get(&user)
                    .and_then(|r| r.items.get(&contact))
                    .is_some_and(|i| i.sub.to());
                if sees {
                    let n = self.send_available(&user, &s);
                    self.counters.presence_notifications += n as u64;
                }
            }
            ("presence", _) => {
                if to.contains('/') {
                    self.send(&to, s);
                } else {
                    self.send_available(&user, &s);
                }
            }
            _ => {
                let request = matches!(s.get("type"), Some("get" | "set"));
                let delivered = to.contains('/') && self.send(&to, s.clone());
                if !delivered && request {
                    self.send_remote(&from, error_reply(&s, "cancel", "service-unavailable"));
                }
            }
        }
    }

    /// Whether `watcher` (any domain) sees `user`'s presence (subscription `from` or `both`).
    pub fn watches(&self, watcher: &str, user: &str) -> bool {
        self.rosters.get(user).and_then(|r| r.items.get(watcher)).is_some_and(|i| i.sub.from())
    }

    /// A foreign user asks to see a local contact's presence (RFC 6121 §3.1.3): answered at
    /// once if already approved or pre-approved, else kept and delivered to the contact.
    fn remote_subscribe(&mut self, contact: &str, requester: &str, mut s: Element) {
        let from = s.get("from").unwrap_or("").to_owned();
        if self.watches(requester, contact) {
            let p = Element::new("presence").attr("from", contact).attr("type", "subscribed");
            return self.send_remote(&from, p);
        }
        let pre = self
            .rosters
            .get(contact)
            .and_then(|r| r.items.get(requester))
            .is_some_and(|i| i.approved);
        if pre {
            self.pending.insert((contact.to_owned(), requester.to_owned()), s);
            return self.subscribed(contact, requester);
        }
        let waiting = self.requests_to(contact).count();
        let watchers = self.rosters.get(contact).map_or(0, |r| r.watchers());
        if waiting + watchers >= self.limits.watchers {
            self.counters.limit_refusals += 1;
            return self.send_remote(&from, error_reply(&s, "cancel", "not-allowed"));
        }
        s.set("from", requester);
        self.pending.insert((contact.to_owned(), requester.to_owned()), s.clone());
        self.send_available(contact, &s);
    }

    /// Initial presence of a local user: a probe to each foreign contact whose presence the
    /// user sees (RFC 6121 §4.3.1); their servers answer with it.
    pub(super) fn probe_remote_contacts(&mut self, own: &str) {
        let foreign: Vec<String> = self
            .items_of(own, Subscription::to)
            .into_iter()
            .filter(|c| !self.is_local_jid(c))
            .collect();
        for c in foreign {
            let probe = Element::new("presence").attr("from", own).attr("type", "probe");
            self.send_remote(&c, probe);
        }
    }
}

/// `jid` with its domain part replaced by `host` (`alice@example.com/pc` → `alice@imp1.example.com/pc`).
fn rehost(jid: &str, host: &str) -> String {
    let (b, res) = match jid.split_once('/') {
        Some((b, r)) => (b, Some(r)),
        None => (jid, None),
    };
    let local = b.rsplit_once('@').map(|(l, _)| l);
    let mut out = match local {
        Some(l) => format!("{l}@{host}"),
        None => host.to_owned(),
    };
    if let Some(r) = res {
        out.push('/');
        out.push_str(r);
    }
    out
}
