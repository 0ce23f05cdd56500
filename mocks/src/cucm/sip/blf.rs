//! CUCM line-side presence (SPEC CC6): SUBSCRIBE/NOTIFY for busy lamp fields and call lists.
//!
//! A watcher's SUBSCRIBE (`Event: presence`) is routed by the watcher's SUBSCRIBE calling
//! search space: `<None>` rejects every subscription as "user unknown" (404), and a target
//! whose partition the space does not list is not found either. Presence groups then decide:
//! the same group may always watch, an explicit rule between two groups allows or disallows,
//! and the Inter-Presence Group Subscribe Policy decides the rest (403 when disallowed).
//! The design guide exempts BLF speed dials from the group policy ("administratively
//! controlled"): a subscription to a number on the watcher's own BLF speed dials is checked
//! against the calling search space only.
//!
//! An accepted subscription gets 200 and at once a NOTIFY with the line's state as PIDF
//! (RFC 3863, with the RPID `on-the-phone` activity for busy): `idle` (registered, no call),
//! `busy` (a call through the cluster was answered and not yet ended) or `unknown` (not
//! registered, basic `closed`). Every change of that state is notified until the subscription
//! expires or the watcher ends it with `Expires: 0`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::{Cluster, FlowId, SERVER, Transport, fnv, uri_user};
use uclab_proto::sip::{Message, Start};

/// Longest subscription granted, and the default.
const MAX_SUB_EXPIRES: u32 = 3600;
/// Subscriptions tracked per cluster (the design guide's BLF speed dial limit).
pub const MAX_BLF: usize = 30_000;

/// One accepted subscription (a dialog of ours, RFC 6665).
#[derive(Clone, Debug)]
pub(super) struct Sub {
    flow: FlowId,
    /// The target's directory number.
    target: String,
    /// Our side: From of our NOTIFYs (the SUBSCRIBE's To with our tag).
    local: String,
    /// Their side: To of our NOTIFYs (the SUBSCRIBE's From, with its tag).
    remote: String,
    /// Where NOTIFYs go: the watcher's Contact.
    contact: String,
    cseq: u32,
    expires_at: Duration,
    /// The state last notified.
    state: &'static str,
}

/// A subscription's key: (Call-ID, watcher tag).
pub(super) type SubKey = (String, String);

/// The cluster's subscriptions, indexed by target line so a line's change costs its own
/// watchers only (a REGISTER must not scan 30,000 subscriptions).
#[derive(Debug, Default)]
pub(super) struct Subs {
    by_key: BTreeMap<SubKey, Sub>,
    by_target: BTreeMap<String, BTreeSet<SubKey>>,
}

impl Subs {
    pub(super) fn len(&self) -> usize {
        self.by_key.len()
    }

    fn contains_key(&self, k: &SubKey) -> bool {
        self.by_key.contains_key(k)
    }

    fn get(&self, k: &SubKey) -> Option<&Sub> {
        self.by_key.get(k)
    }

    /// The subscription, to change anything but its target.
    fn get_mut(&mut self, k: &SubKey) -> Option<&mut Sub> {
        self.by_key.get_mut(k)
    }

    fn insert(&mut self, k: SubKey, s: Sub) {
        self.by_target.entry(s.target.clone()).or_default().insert(k.clone());
        if let Some(old) = self.by_key.insert(k.clone(), s) {
            self.unindex(&old.target, &k);
            let t = &self.by_key[&k].target;
            self.by_target.entry(t.clone()).or_default().insert(k);
        }
    }

    fn remove(&mut self, k: &SubKey) {
        if let Some(s) = self.by_key.remove(k) {
            self.unindex(&s.target, k);
        }
    }

    fn unindex(&mut self, target: &str, k: &SubKey) {
        if let Some(set) = self.by_target.get_mut(target) {
            set.remove(k);
            if set.is_empty() {
                self.by_target.remove(target);
            }
        }
    }

    /// Drops every subscription that has expired by `now`.
    fn expire(&mut self, now: Duration) {
        let gone: Vec<SubKey> = self
            .by_key
            .iter()
            .filter(|(_, s)| s.expires_at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            self.remove(&k);
        }
    }

    /// The subscriptions watching line `target`.
    fn of(&self, target: &str) -> Vec<SubKey> {
        self.by_target.get(target).map(|s| s.iter().cloned().collect()).unwrap_or_default()
    }
}

/// Answered calls through the cluster, with a count per line so a line's state is a lookup.
#[derive(Debug, Default)]
pub(super) struct Calls {
    /// Call-ID → the two lines.
    by_id: BTreeMap<String, (String, String)>,
    /// Line → calls it is in.
    busy: BTreeMap<String, usize>,
}

impl Calls {
    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }

    fn insert(&mut self, call_id: String, a: String, b: String) {
        if self.by_id.contains_key(&call_id) {
            return;
        }
        for e in [&a, &b] {
            *self.busy.entry(e.clone()).or_default() += 1;
        }
        self.by_id.insert(call_id, (a, b));
    }

    fn remove(&mut self, call_id: &str) -> Option<(String, String)> {
        let (a, b) = self.by_id.remove(call_id)?;
        for e in [&a, &b] {
            if let Some(n) = self.busy.get_mut(e) {
                *n -= 1;
                if *n == 0 {
                    self.busy.remove(e);
                }
            }
        }
        Some((a, b))
    }

    fn is_busy(&self, ext: &str) -> bool {
        self.busy.contains_key(ext)
    }

    /// The calls line `ext` is in (a scan: only when a line loses its registration).
    fn of(&self, ext: &str) -> Vec<String> {
        if !self.is_busy(ext) {
            return Vec::new();
        }
        self.by_id
            .iter()
            .filter(|(_, (a, b))| a == ext || b == ext)
            .map(|(c, _)| c.clone())
            .collect()
    }
}

/// The presence policy of a cluster (SPEC CC6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresencePolicy {
    /// Explicit rules between groups: (watcher group, target group) → allowed.
    pub rules: Vec<(String, String, bool)>,
    /// The Inter-Presence Group Subscribe Policy service parameter ("Allow Subscription" by
    /// default).
    pub inter_group_allowed: bool,
}

impl Default for PresencePolicy {
    fn default() -> Self {
        Self { rules: Vec::new(), inter_group_allowed: true }
    }
}

/// The PIDF document of a line state.
pub fn pidf(entity: &str, ext: &str, state: &str) -> String {
    let basic = if state == "unknown" { "closed" } else { "open" };
    let person = if state == "busy" {
        "<dm:person id=\"p1\"><rpid:activities><rpid:on-the-phone/></rpid:activities></dm:person>"
    } else {
        ""
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<presence \
         xmlns=\"urn:ietf:params:xml:ns:pidf\" \
         xmlns:dm=\"urn:ietf:params:xml:ns:pidf:data-model\" \
         xmlns:rpid=\"urn:ietf:params:xml:ns:pidf:rpid\" entity=\"{entity}\">\r\n\
         <tuple id=\"{ext}\"><status><basic>{basic}</basic></status></tuple>\r\n{person}\
         </presence>\r\n"
    )
}

impl Cluster {
    /// Line state for BLF: `unknown` without a live binding, `busy` in an answered call,
    /// else `idle`.
    fn line_state(&self, ext: &str, now: Duration) -> &'static str {
        if self.binding(ext, now).is_none() {
            "unknown"
        } else if self.calls.is_busy(ext) {
            "busy"
        } else {
            "idle"
        }
    }

    /// A SUBSCRIBE: a new subscription, a refresh, or an unsubscribe (`Expires: 0`).
    pub(super) fn subscribe(&mut self, now: Duration, flow: FlowId, m: &Message) {
        let event = m.get("Event").map(|e| e.split(';').next().unwrap_or("").trim().to_owned());
        if !event.as_deref().is_some_and(|e| e.eq_ignore_ascii_case("presence")) {
            self.counters.refused += 1;
            let mut r = self.reply(m, 489, "");
            r.push("Allow-Events", "presence");
            return self.send(flow, &r);
        }
        if self.cfg.srst {
            return self.refuse(flow, m, 489, "no presence in SRST");
        }
        let key = (m.call_id().unwrap_or("").to_owned(), m.tag("From").unwrap_or_default());
        let expires = m.expires().unwrap_or(MAX_SUB_EXPIRES).min(MAX_SUB_EXPIRES);
        if m.tag("To").is_some() {
            // A refresh or an unsubscribe within the subscription's dialog.
            let Some(sub) = self.subs.get_mut(&key) else {
                return self.refuse(flow, m, 481, "");
            };
            sub.expires_at = now + Duration::from_secs(u64::from(expires));
            sub.flow = flow;
            let tag = sub.local.rsplit_once(";tag=").map(|(_, t)| t.to_owned());
            let mut r = m.response(200, "OK", tag.as_deref());
            r.push("Expires", expires.to_string());
            r.push("Server", SERVER);
            self.send(flow, &r);
            return self.notify(now, &key, expires == 0);
        }
        let Start::Request { uri, .. } = &m.start else { return };
        // SPEC CC7 without "IMP PUBLISH Trunk": IM&P's presence gateway watches users' lines
        // over the trunk. The trunk's SUBSCRIBE CSS in the lab reaches every partition and its
        // presence group may watch all (the design guide's recommended trunk setup).
        let from_trunk =
            self.cfg.trunk.as_ref().is_some_and(|t| {
                !t.publish && self.flows.get(&flow).is_some_and(|f| f.peer == t.to)
            });
        let target = if from_trunk {
            let target = uri_user(uri).and_then(|u| self.line(&u).cloned());
            let Some(target) = target else { return self.refuse(flow, m, 404, "user unknown") };
            target
        } else {
            let watcher = m
                .name_addr("From")
                .and_then(|f| uri_user(&f.uri))
                .and_then(|u| self.line(&u).cloned());
            let Some(watcher) = watcher else {
                return self.refuse(flow, m, 403, "the watcher is not a line of this cluster");
            };
            // The SUBSCRIBE calling search space routes the request (CC6).
            let Some(css) = watcher.subscribe_css.as_ref() else {
                return self.refuse(flow, m, 404, "user unknown");
            };
            let target = uri_user(uri).and_then(|u| self.line(&u).cloned());
            let Some(target) = target.filter(|t| css.iter().any(|p| p == &t.partition)) else {
                return self.refuse(flow, m, 404, "user unknown");
            };
            let speed_dial = watcher.blf.iter().any(|d| d == &target.extension);
            if !speed_dial && !self.groups_allow(&watcher.presence_group, &target.presence_group) {
                let why = format!(
                    "presence group {} may not watch {}",
                    watcher.presence_group, target.presence_group
                );
                return self.refuse(flow, m, 403, &why);
            }
            target
        };
        if self.subs.len() >= MAX_BLF && !self.subs.contains_key(&key) {
            self.subs.expire(now);
            if self.subs.len() >= MAX_BLF {
                return self.refuse(flow, m, 503, "too many subscriptions");
            }
        }
        let Some(contact) = m.name_addr("Contact").map(|c| c.uri) else {
            return self.refuse(flow, m, 400, "no Contact");
        };
        let tag = format!("{:x}", fnv(&[&key.0, &key.1, "blf"]) >> 32);
        let to = m.get("To").unwrap_or("").to_owned();
        let sub = Sub {
            flow,
            target: target.extension.clone(),
            local: format!("{to};tag={tag}"),
            remote: m.get("From").unwrap_or("").to_owned(),
            contact,
            cseq: 0,
            expires_at: now + Duration::from_secs(u64::from(expires)),
            state: "",
        };
        self.subs.insert(key.clone(), sub);
        let (node, port, t) = self.node_of(flow);
        let mut r = m.response(200, "OK", Some(&tag));
        r.push("Expires", expires.to_string());
        r.push("Contact", format!("<sip:{node}:{port};transport={}>", t.as_str().to_lowercase()));
        r.push("Server", SERVER);
        self.send(flow, &r);
        // Expires 0 is a fetch: the state once, then terminated (RFC 6665 §4.4.3).
        self.notify(now, &key, expires == 0);
    }

    /// Whether presence group `w` may watch group `t`.
    fn groups_allow(&self, w: &str, t: &str) -> bool {
        if w == t {
            return true;
        }
        let p = &self.cfg.presence;
        p.rules
            .iter()
            .find(|(a, b, _)| a == w && b == t)
            .map_or(p.inter_group_allowed, |(_, _, allow)| *allow)
    }

    /// Sends subscription `key` its NOTIFY with the target's state now (`end`: the last one).
    fn notify(&mut self, now: Duration, key: &(String, String), end: bool) {
        let Some(sub) = self.subs.get(key) else { return };
        let state = self.line_state(&sub.target, now);
        let left = sub.expires_at.saturating_sub(now).as_secs();
        let (flow, target) = (sub.flow, sub.target.clone());
        let Some(f) = self.flows.get(&flow) else {
            self.subs.remove(key);
            return;
        };
        let transport = f.transport;
        let (node, port, _) = self.node_of(flow);
        let Some(sub) = self.subs.get_mut(key) else { return };
        sub.cseq += 1;
        sub.state = state;
        let branch =
            format!("z9hG4bK{:016x}", fnv(&[&key.0, &key.1, &sub.cseq.to_string(), "notify"]));
        let mut n = Message::request("NOTIFY", &sub.contact)
            .with("Via", format!("SIP/2.0/{} {node}:{port};branch={branch}", transport.as_str()))
            .with("Max-Forwards", "70")
            .with("From", sub.local.clone())
            .with("To", sub.remote.clone())
            .with("Call-ID", key.0.clone())
            .with("CSeq", format!("{} NOTIFY", sub.cseq))
            .with(
                "Contact",
                format!(
                    "<sip:{node}:{port};transport={}>",
                    match transport {
                        Transport::Udp => "udp",
                        Transport::Tcp => "tcp",
                        Transport::Tls => "tls",
                    }
                ),
            )
            .with("Event", "presence")
            .with(
                "Subscription-State",
                if end {
                    "terminated;reason=timeout".to_owned()
                } else {
                    format!("active;expires={left}")
                },
            )
            .with("Content-Type", "application/pidf+xml")
            .with("User-Agent", SERVER);
        let entity = format!("sip:{target}@{node}");
        n.body = pidf(&entity, &target, state).into_bytes();
        if end {
            self.subs.remove(key);
        }
        self.counters.notifies += 1;
        self.send(flow, &n);
    }

    /// Line `ext`'s state may have changed: its watchers hear of it.
    pub(super) fn blf_changed(&mut self, now: Duration, ext: &str) {
        let keys = self.subs.of(ext);
        if keys.is_empty() {
            return;
        }
        let state = self.line_state(ext, now);
        for k in keys {
            let Some(s) = self.subs.get(&k) else { continue };
            if s.expires_at <= now {
                self.subs.remove(&k);
            } else if s.state != state {
                self.notify(now, &k, false);
            }
        }
    }

    /// SPEC CC7 with "IMP PUBLISH Trunk": the line's state goes to IM&P as a PUBLISH for
    /// the user the line belongs to (the line appearance), over the trunk (UDP).
    fn trunk_publish(&mut self, now: Duration, ext: &str) {
        let Some(trunk) = self.cfg.trunk.clone().filter(|t| t.publish) else { return };
        let Some(line) = self.line(ext).cloned() else { return };
        // Out of the first node's UDP socket.
        let Some((node, port)) = self.nodes.iter().next().map(|(n, p)| (n.clone(), *p)) else {
            return;
        };
        let state = self.line_state(ext, now);
        self.counter += 1;
        let n = self.counter.to_string();
        let h = fnv(&[&node, &line.user, &n, "publish"]);
        let aor = format!("sip:{}@{}", line.user, trunk.domain);
        let mut m = Message::request("PUBLISH", &aor)
            .with("Via", format!("SIP/2.0/UDP {node}:{port};branch=z9hG4bK{h:016x}"))
            .with("Max-Forwards", "70")
            .with("From", format!("<sip:{}@{node}>;tag={:x}", line.extension, h >> 40))
            .with("To", format!("<{aor}>"))
            .with("Call-ID", format!("{:016x}-pub@{node}", h))
            .with("CSeq", "1 PUBLISH")
            .with("Event", "presence")
            .with("Expires", "3600")
            .with("Content-Type", "application/pidf+xml")
            .with("User-Agent", SERVER);
        m.body = pidf(&aor, &line.extension, state).into_bytes();
        self.counters.publishes += 1;
        let out = super::Outgoing {
            to: trunk.to,
            bytes: m.to_bytes(),
            summary: format!("{} ({state})", super::summary(&m)),
        };
        self.out.push_back((super::Dest::Udp(node), out));
    }

    /// A final response to one of our NOTIFYs: an error ends the subscription (RFC 6665
    /// §4.2.2: 481 and the like).
    pub(super) fn notify_answered(&mut self, m: &Message) {
        if m.code().is_some_and(|c| c >= 300) {
            let key = (m.call_id().unwrap_or("").to_owned(), m.tag("To").unwrap_or_default());
            self.subs.remove(&key);
        }
    }

    /// Line `ext` has no registration any more (unregistered, or its connection closed): the
    /// calls it was in are over for BLF, as CUCM clears a call when its device goes (their
    /// BYE may never come). Both parties' watchers hear of it.
    pub(super) fn line_lost(&mut self, now: Duration, ext: &str) {
        let mut ended = BTreeSet::new();
        for c in self.calls.of(ext) {
            if let Some((a, b)) = self.calls.remove(&c) {
                ended.extend([a, b].into_iter().filter(|e| !e.is_empty()));
            }
        }
        self.blf_changed(now, ext);
        for e in ended {
            if e != ext {
                self.blf_changed(now, &e);
            }
            self.trunk_publish(now, &e);
        }
    }

    /// Dialog bookkeeping for BLF: an INVITE answered (2xx) makes both lines busy, a BYE
    /// frees them.
    pub(super) fn track_call(&mut self, now: Duration, m: &Message) {
        let call_id = m.call_id().unwrap_or("").to_owned();
        let user = |h: &str| m.name_addr(h).and_then(|n| uri_user(&n.uri));
        let ext = |c: &Self, u: Option<String>| {
            u.and_then(|u| c.line(&u).map(|l| l.extension.clone())).unwrap_or_default()
        };
        let changed = match (&m.start, m.method()) {
            (Start::Response { code: 200..=299, .. }, Some("INVITE"))
                if !self.calls.by_id.contains_key(&call_id) =>
            {
                let (a, b) = (ext(self, user("From")), ext(self, user("To")));
                if self.calls.len() >= super::MAX_TRACKED {
                    return;
                }
                self.calls.insert(call_id, a.clone(), b.clone());
                vec![a, b]
            }
            (Start::Request { method, .. }, _) if method == "BYE" => {
                self.calls.remove(&call_id).map(|(a, b)| vec![a, b]).unwrap_or_default()
            }
            _ => return,
        };
        for e in changed.into_iter().filter(|e| !e.is_empty()) {
            self.blf_changed(now, &e);
            self.trunk_publish(now, &e);
        }
    }
}
