//! The sans-IO engine of one federating SIP domain (SPEC FED3).
//!
//! Like `quinn-proto`'s `Connection`: inputs ([`Endpoint::handle`], [`Endpoint::handle_timeout`]),
//! commands ([`Endpoint::subscribe`], [`Endpoint::unsubscribe`], [`Endpoint::notify`],
//! [`Endpoint::terminate`], [`Endpoint::message`]) and one output queue
//! ([`Endpoint::poll_output`]) drained after each. Time comes in as `now`; Call-IDs, tags and
//! branches come from the seeded generator the owner gives it, so a run replays.
//!
//! Subscriptions are kept both ways, keyed by the two addresses (bare `user@domain`, lower
//! case): ours to foreign users (refreshed at half the granted time) and theirs to our users
//! (ended when not refreshed in time, RFC 6665 §4.2.2). Every request waits at most
//! [`TIMER_F`] for its final answer; then it counts as a 408.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use uclab_net::SeededRng;
use uclab_proto::pidf::FederatedState;
use uclab_proto::sip::{Message, reason};

use super::{
    ALLOW, MAX_PENDING, MAX_SUBSCRIPTIONS, MIN_EXPIRES, SIP_TLS_PORT, SUB_EXPIRES, TIMER_F,
};

/// A connection of the owner's, named by it: where the answer to a request goes.
pub type ConnId = u64;

/// What kind of request of ours was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A SUBSCRIBE (a local user asking to see a foreign user).
    Subscribe,
    /// A MESSAGE.
    Message,
}

/// What happened, for the owner to act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Foreign `watcher` subscribed to local `user` (refreshes are not signalled). The owner
    /// answers at once with [`Endpoint::notify`]: the user's state, or `None` while the
    /// watcher is not authorised (RFC 6665 §4.2.1.2: a NOTIFY follows every new subscription).
    Subscribe {
        /// The foreign watcher, `user@domain`.
        watcher: String,
        /// The local user watched.
        user: String,
    },
    /// A foreign watcher's subscription ended (it unsubscribed, or did not refresh in time).
    Unsubscribe {
        /// The foreign watcher.
        watcher: String,
        /// The local user.
        user: String,
    },
    /// What foreign `from` shows now, for local watcher `to`; `Offline` when the foreign
    /// domain ended the subscription.
    Presence {
        /// The foreign user.
        from: String,
        /// The local watcher.
        to: String,
        /// Their state.
        state: FederatedState,
    },
    /// A message from a foreign user.
    Message {
        /// Sender, `user@domain`.
        from: String,
        /// Local recipient.
        to: String,
        /// Text.
        body: String,
    },
    /// A request of ours got a final refusal, or no answer in time (code 408).
    Refused {
        /// What was refused.
        kind: Kind,
        /// The local party as the command named it (a full JID stays full).
        local: String,
        /// The foreign party.
        remote: String,
        /// The status.
        code: u16,
        /// For a message, its text.
        body: String,
    },
}

/// What the owner must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send a request to foreign `domain` (on the connection to it).
    Request {
        /// The domain it is for.
        domain: String,
        /// The request.
        msg: Message,
    },
    /// Answer on connection `conn`.
    Response {
        /// The connection the request came on.
        conn: ConnId,
        /// The response.
        msg: Message,
    },
    /// Tell the owner.
    Signal(Signal),
}

/// Our subscription to a foreign user.
#[derive(Debug)]
struct SubOut {
    call_id: String,
    tag: String,
    remote_tag: Option<String>,
    cseq: u32,
    /// When to refresh (set once the SUBSCRIBE was accepted).
    refresh: Option<Duration>,
}

/// A foreign watcher's subscription to a local user.
#[derive(Debug)]
struct SubIn {
    call_id: String,
    tag: String,
    remote_tag: String,
    /// Where NOTIFYs go (the SUBSCRIBE's Contact).
    target: String,
    cseq: u32,
    expires: Duration,
    /// What was last notified (`Some(None)`: pending).
    last: Option<Option<FederatedState>>,
}

#[derive(Debug)]
enum What {
    Subscribe((String, String)),
    Message {
        local: String,
        remote: String,
        body: String,
    },
    Notify((String, String)),
    /// An unsubscribe or final NOTIFY: nothing to do with its answer.
    Quiet,
}

#[derive(Debug)]
struct Pending {
    what: What,
    deadline: Duration,
    /// The domain it went to.
    domain: String,
}

/// A timer: a request's deadline, a refresh of ours, or a watcher's subscription ending.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Answer(String, u32),
    Refresh(String, String),
    Expire(String, String),
}

/// One federating domain's SIP presence and IM.
#[derive(Debug)]
pub struct Endpoint {
    domain: String,
    host: String,
    rng: SeededRng,
    subs_out: BTreeMap<(String, String), SubOut>,
    out_by_call: BTreeMap<String, (String, String)>,
    subs_in: BTreeMap<(String, String), SubIn>,
    pending: BTreeMap<(String, u32), Pending>,
    /// Timers by when; stale ones (their subject gone or moved) are skipped when due.
    timers: BTreeSet<(Duration, Timer)>,
    out: VecDeque<Output>,
}

/// `user@domain`, lower case, from a `sip:`/`sips:` URI (no parameters, headers or port).
pub(super) fn addr(uri: &str) -> Option<String> {
    let lower = uri.trim().to_ascii_lowercase();
    let rest = lower.strip_prefix("sip:").or_else(|| lower.strip_prefix("sips:"))?;
    let rest = rest.split([';', '?']).next()?;
    let (user, host) = rest.split_once('@')?;
    let host = host.split(':').next()?;
    (!user.is_empty() && !host.is_empty()).then(|| format!("{user}@{host}"))
}

/// The domain of `user@domain`.
pub(super) fn domain_of(a: &str) -> &str {
    a.rsplit_once('@').map_or(a, |(_, d)| d)
}

/// `user@domain` of a JID or address: no resource, lower case.
pub fn bare(jid: &str) -> String {
    jid.split('/').next().unwrap_or("").to_ascii_lowercase()
}

impl Endpoint {
    /// The endpoint of `domain`, whose server is `host` (Via and Contact), drawing its
    /// identifiers from `rng`.
    pub fn new(domain: &str, host: &str, rng: SeededRng) -> Self {
        Self {
            domain: domain.to_ascii_lowercase(),
            host: host.to_owned(),
            rng,
            subs_out: BTreeMap::new(),
            out_by_call: BTreeMap::new(),
            subs_in: BTreeMap::new(),
            pending: BTreeMap::new(),
            timers: BTreeSet::new(),
            out: VecDeque::new(),
        }
    }

    /// The domain served.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Whether local `watcher` has a subscription to foreign `target` (asked or accepted).
    pub fn watching(&self, watcher: &str, target: &str) -> bool {
        self.subs_out.contains_key(&(bare(watcher), bare(target)))
    }

    /// Whether foreign `watcher` is subscribed to local `user`.
    pub fn watched_by(&self, user: &str, watcher: &str) -> bool {
        self.subs_in.contains_key(&(bare(user), bare(watcher)))
    }

    /// Foreign watchers of local `user`.
    pub fn watchers(&self, user: &str) -> Vec<String> {
        let u = bare(user);
        self.subs_in
            .range((u.clone(), String::new())..)
            .take_while(|((k, _), _)| *k == u)
            .map(|((_, w), _)| w.clone())
            .collect()
    }

    /// Timers set (tests: they stay bounded however often a peer refreshes).
    #[cfg(test)]
    pub(super) fn timer_count(&self) -> usize {
        self.timers.len()
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Endpoint::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.timers.first().map(|(t, _)| *t)
    }

    fn id(&self) -> u64 {
        self.rng.next_u64()
    }

    fn new_tag(&self) -> String {
        format!("{:08x}", self.id() as u32)
    }

    fn new_call_id(&self) -> String {
        format!("{:016x}@{}", self.id(), self.host)
    }

    fn contact(&self, a: &str) -> String {
        let user = a.split('@').next().unwrap_or("");
        format!("<sip:{user}@{}:{SIP_TLS_PORT};transport=tls>", self.host)
    }

    /// A request of ours, headers in RFC 3261 §8.1.1's order.
    #[allow(clippy::too_many_arguments)]
    fn request(
        &self,
        method: &str,
        uri: &str,
        (from, from_tag): (&str, &str),
        (to, to_tag): (&str, Option<&str>),
        call_id: &str,
        cseq: u32,
    ) -> Message {
        let to = match to_tag {
            Some(t) => format!("<sip:{to}>;tag={t}"),
            None => format!("<sip:{to}>"),
        };
        Message::request(method, uri)
            .with(
                "Via",
                format!(
                    "SIP/2.0/TLS {}:{SIP_TLS_PORT};branch=z9hG4bK{:016x}",
                    self.host,
                    self.id()
                ),
            )
            .with("Max-Forwards", "70")
            .with("From", format!("<sip:{from}>;tag={from_tag}"))
            .with("To", to)
            .with("Call-ID", call_id)
            .with("CSeq", format!("{cseq} {method}"))
    }

    /// Sends `msg` to `domain`, waiting for its answer as `what`.
    fn send(&mut self, now: Duration, domain: &str, msg: Message, what: What) {
        if let (Some(call), Some((n, _))) = (msg.call_id(), msg.cseq()) {
            let key = (call.to_owned(), n);
            let deadline = now + TIMER_F;
            self.timers.insert((deadline, Timer::Answer(key.0.clone(), n)));
            self.pending.insert(key, Pending { what, deadline, domain: domain.to_owned() });
        }
        self.out.push_back(Output::Request { domain: domain.to_owned(), msg });
    }

    fn signal(&mut self, s: Signal) {
        self.out.push_back(Output::Signal(s));
    }

    /// Local `watcher` asks to see foreign `target` (RFC 3856 SUBSCRIBE); nothing when it
    /// already does. A refusal comes back as [`Signal::Refused`], the state as
    /// [`Signal::Presence`].
    pub fn subscribe(&mut self, now: Duration, watcher: &str, target: &str) {
        let key = (bare(watcher), bare(target));
        if self.subs_out.contains_key(&key) {
            return;
        }
        if self.subs_out.len() >= MAX_SUBSCRIPTIONS || self.pending.len() >= MAX_PENDING {
            let (local, remote) = key;
            let body = String::new();
            return self.signal(Signal::Refused {
                kind: Kind::Subscribe,
                local,
                remote,
                code: 503,
                body,
            });
        }
        let sub = SubOut {
            call_id: self.new_call_id(),
            tag: self.new_tag(),
            remote_tag: None,
            cseq: 1,
            refresh: None,
        };
        let m = self.subscribe_request(&key, &sub, SUB_EXPIRES);
        self.out_by_call.insert(sub.call_id.clone(), key.clone());
        self.subs_out.insert(key.clone(), sub);
        let d = domain_of(&key.1).to_owned();
        self.send(now, &d, m, What::Subscribe(key));
    }

    fn subscribe_request(&self, (w, t): &(String, String), sub: &SubOut, expires: u32) -> Message {
        let mut m = self.request(
            "SUBSCRIBE",
            &format!("sip:{t}"),
            (w, &sub.tag),
            (t, sub.remote_tag.as_deref()),
            &sub.call_id,
            sub.cseq,
        );
        m.push("Contact", self.contact(w));
        m.push("Event", "presence");
        m.push("Accept", "application/pidf+xml");
        m.push("Expires", expires.to_string());
        m
    }

    /// Local `watcher` stops seeing foreign `target` (a SUBSCRIBE with `Expires: 0`).
    pub fn unsubscribe(&mut self, now: Duration, watcher: &str, target: &str) {
        let key = (bare(watcher), bare(target));
        let Some(mut sub) = self.subs_out.remove(&key) else { return };
        self.out_by_call.remove(&sub.call_id);
        sub.cseq += 1;
        let m = self.subscribe_request(&key, &sub, 0);
        let d = domain_of(&key.1).to_owned();
        self.send(now, &d, m, What::Quiet);
    }

    /// Tells foreign `watcher` what local `user` shows now: `Some(state)`, or `None` while the
    /// watcher is not authorised (`Subscription-State: pending`, no body). Nothing when the
    /// watcher has no subscription or was already told the same.
    pub fn notify(
        &mut self,
        now: Duration,
        user: &str,
        watcher: &str,
        state: Option<FederatedState>,
    ) {
        let key = (bare(user), bare(watcher));
        let full = self.pending.len() >= MAX_PENDING;
        let Some(sub) = self.subs_in.get_mut(&key) else { return };
        // Past the bound of requests in flight the state is not sent (nor marked sent): the
        // next change tells it.
        if sub.last == Some(state) || full {
            return;
        }
        sub.last = Some(state);
        let left = sub.expires.saturating_sub(now).as_secs();
        let header = match state {
            Some(_) => format!("active;expires={left}"),
            None => format!("pending;expires={left}"),
        };
        let m = self.notify_request(&key, &header, state);
        self.send(now, domain_of(&key.1).to_owned().as_str(), m, What::Notify(key));
    }

    fn notify_request(
        &mut self,
        key: &(String, String),
        sub_state: &str,
        state: Option<FederatedState>,
    ) -> Message {
        let sub = self.subs_in.get_mut(key).expect("the caller found it");
        sub.cseq += 1;
        let (call_id, tag, remote_tag, target, cseq) = (
            sub.call_id.clone(),
            sub.tag.clone(),
            sub.remote_tag.clone(),
            sub.target.clone(),
            sub.cseq,
        );
        let mut m = self.request(
            "NOTIFY",
            &target,
            (&key.0, &tag),
            (&key.1, Some(&remote_tag)),
            &call_id,
            cseq,
        );
        m.push("Contact", self.contact(&key.0));
        m.push("Event", "presence");
        m.push("Subscription-State", sub_state);
        if let Some(s) = state {
            m.push("Content-Type", "application/pidf+xml");
            m.body = s.pidf(&format!("sip:{}", key.0)).into_bytes();
        }
        m
    }

    /// Ends foreign `watcher`'s subscription to local `user`: the user refused or withdrew
    /// the authorisation (`terminated;reason=rejected`, RFC 6665 §4.2.2).
    pub fn terminate(&mut self, now: Duration, user: &str, watcher: &str) {
        let key = (bare(user), bare(watcher));
        if !self.subs_in.contains_key(&key) {
            return;
        }
        let m = self.notify_request(&key, "terminated;reason=rejected", None);
        self.drop_in(&key);
        self.send(now, domain_of(&key.1).to_owned().as_str(), m, What::Quiet);
    }

    fn drop_in(&mut self, key: &(String, String)) -> Option<SubIn> {
        self.subs_in.remove(key)
    }

    fn drop_out(&mut self, key: &(String, String)) -> Option<SubOut> {
        let sub = self.subs_out.remove(key)?;
        self.out_by_call.remove(&sub.call_id);
        Some(sub)
    }

    /// Local `from` (a full JID stays as given, for the refusal) sends `body` to foreign `to`
    /// (RFC 3428 MESSAGE, `text/plain`). A refusal comes back as [`Signal::Refused`].
    pub fn message(&mut self, now: Duration, from: &str, to: &str, body: &str) {
        let (f, t) = (bare(from), bare(to));
        if self.pending.len() >= MAX_PENDING {
            let (local, remote, body) = (from.to_owned(), t, body.to_owned());
            return self.signal(Signal::Refused {
                kind: Kind::Message,
                local,
                remote,
                code: 503,
                body,
            });
        }
        let (call_id, tag) = (self.new_call_id(), self.new_tag());
        let mut m =
            self.request("MESSAGE", &format!("sip:{t}"), (&f, &tag), (&t, None), &call_id, 1);
        m.push("Content-Type", "text/plain;charset=UTF-8");
        m.body = body.as_bytes().to_vec();
        let what =
            What::Message { local: from.to_owned(), remote: t.clone(), body: body.to_owned() };
        self.send(now, domain_of(&t).to_owned().as_str(), m, what);
    }

    /// A message from the connection `conn`. `peer` says whether a request from a domain is
    /// taken: `Err(why)` when the TLS peer's certificate does not name it or policy refuses it
    /// (answered 403 with `why`); `known` says which local users exist.
    pub fn handle(
        &mut self,
        now: Duration,
        conn: ConnId,
        m: Message,
        peer: &dyn Fn(&str) -> Result<(), String>,
        known: &dyn Fn(&str) -> bool,
    ) {
        match m.code() {
            Some(code) => self.on_response(now, code, &m),
            None => self.on_request(now, conn, &m, peer, known),
        }
    }

    /// Answers `req` on `conn` with `code`; a `why` goes in a Warning (RFC 3261 §20.43).
    fn answer(
        &mut self,
        conn: ConnId,
        req: &Message,
        code: u16,
        why: Option<&str>,
        extra: &[(&str, String)],
    ) -> Message {
        let tag = (code > 100 && req.tag("To").is_none()).then(|| self.new_tag());
        let mut r = req.response(code, reason(code), tag.as_deref());
        if let Some(w) = why {
            r.push("Warning", format!("399 {} \"{}\"", self.host, w.replace(['"', '\\'], "'")));
        }
        for (k, v) in extra {
            r.push(k, v.clone());
        }
        self.out.push_back(Output::Response { conn, msg: r.clone() });
        r
    }

    fn on_request(
        &mut self,
        now: Duration,
        conn: ConnId,
        m: &Message,
        peer: &dyn Fn(&str) -> Result<(), String>,
        known: &dyn Fn(&str) -> bool,
    ) {
        let method = m.method().unwrap_or("").to_owned();
        if method == "ACK" {
            return;
        }
        if let Err(r) = m.validate() {
            self.answer(conn, m, r.status, Some(&r.reason), &[]);
            return;
        }
        let from = m.name_addr("From").and_then(|n| addr(&n.uri));
        let to = m.name_addr("To").and_then(|n| addr(&n.uri));
        let (Some(from), Some(to)) = (from, to) else {
            self.answer(conn, m, 400, Some("From and To must be sip:user@domain"), &[]);
            return;
        };
        // Mutual TLS is the federation's authentication: the sender's domain is the one the
        // peer's certificate names (a peer speaking for another domain is refused), and
        // policy may refuse the domain (SPEC FED5).
        let from_domain = domain_of(&from).to_owned();
        if let Err(why) = peer(&from_domain) {
            self.answer(conn, m, 403, Some(&why), &[]);
            return;
        }
        match method.as_str() {
            "SUBSCRIBE" => self.on_subscribe(now, conn, m, from, to, known),
            "NOTIFY" => self.on_notify(conn, m, from, to),
            "MESSAGE" => self.on_message(conn, m, from, to, known),
            "OPTIONS" => {
                let extra = [
                    ("Allow", ALLOW.to_owned()),
                    ("Accept", "application/pidf+xml, text/plain".to_owned()),
                ];
                self.answer(conn, m, 200, None, &extra);
            }
            _ => {
                // SPEC FED3: basic presence and 1:1 IM only (no calls, MSRP file transfer or
                // conferencing across).
                let why = format!(
                    "{method} is not carried by this federation (presence and 1:1 IM only)"
                );
                self.answer(conn, m, 405, Some(&why), &[("Allow", ALLOW.to_owned())]);
            }
        }
    }

    fn on_subscribe(
        &mut self,
        now: Duration,
        conn: ConnId,
        m: &Message,
        watcher: String,
        user: String,
        known: &dyn Fn(&str) -> bool,
    ) {
        let event = m.get("Event").and_then(|e| e.split(';').next()).map(str::trim);
        if !event.is_some_and(|e| e.eq_ignore_ascii_case("presence")) {
            self.answer(conn, m, 489, None, &[("Allow-Events", "presence".to_owned())]);
            return;
        }
        if domain_of(&user) != self.domain {
            self.answer(conn, m, 404, Some("not a domain served here"), &[]);
            return;
        }
        let expires = m.expires().unwrap_or(SUB_EXPIRES).min(SUB_EXPIRES);
        if expires != 0 && expires < MIN_EXPIRES {
            self.answer(conn, m, 423, None, &[("Min-Expires", MIN_EXPIRES.to_string())]);
            return;
        }
        let key = (user.clone(), watcher.clone());
        let call_id = m.call_id().unwrap_or("").to_owned();
        if let Some(to_tag) = m.tag("To") {
            // A refresh or an unsubscribe, within the dialog.
            let same =
                self.subs_in.get(&key).is_some_and(|s| s.call_id == call_id && s.tag == to_tag);
            if !same {
                self.answer(conn, m, 481, None, &[]);
                return;
            }
            self.answer(conn, m, 200, None, &[("Expires", expires.to_string())]);
            if expires == 0 {
                let n = self.notify_request(&key, "terminated;reason=timeout", None);
                self.drop_in(&key);
                self.send(now, domain_of(&watcher), n, What::Quiet);
                self.signal(Signal::Unsubscribe { watcher, user });
            } else if let Some(s) = self.subs_in.get_mut(&key) {
                // One timer per subscription, however often a peer refreshes.
                let timer = Timer::Expire(key.0.clone(), key.1.clone());
                self.timers.remove(&(s.expires, timer.clone()));
                s.expires = now + Duration::from_secs(expires.into());
                self.timers.insert((s.expires, timer));
            }
            return;
        }
        if !known(&user) {
            self.answer(conn, m, 404, Some("no such user"), &[]);
            return;
        }
        if expires == 0 {
            // Nothing to end: a fetch with no subscription kept.
            self.answer(conn, m, 200, None, &[("Expires", "0".to_owned())]);
            return;
        }
        let Some(remote_tag) = m.tag("From") else {
            self.answer(conn, m, 400, Some("From has no tag"), &[]);
            return;
        };
        let replaced = self.drop_in(&key).is_some();
        if !replaced && self.subs_in.len() >= MAX_SUBSCRIPTIONS {
            self.answer(conn, m, 503, Some("too many subscriptions"), &[]);
            return;
        }
        let target = m.name_addr("Contact").map_or_else(|| format!("sip:{watcher}"), |c| c.uri);
        let tag = self.new_tag();
        let expires_at = now + Duration::from_secs(expires.into());
        let sub = SubIn {
            call_id,
            tag: tag.clone(),
            remote_tag,
            target,
            cseq: 0,
            expires: expires_at,
            last: None,
        };
        let mut r = m.response(200, reason(200), Some(&tag));
        r.push("Expires", expires.to_string());
        r.push("Contact", self.contact(&user));
        self.out.push_back(Output::Response { conn, msg: r });
        self.timers.insert((expires_at, Timer::Expire(key.0.clone(), key.1.clone())));
        self.subs_in.insert(key, sub);
        self.signal(Signal::Subscribe { watcher, user });
    }

    fn on_notify(&mut self, conn: ConnId, m: &Message, notifier: String, watcher: String) {
        let call_id = m.call_id().unwrap_or("");
        let key = self.out_by_call.get(call_id).cloned();
        // Ours: our tag, to our watcher, from its target.
        let ours = key.as_ref().is_some_and(|k| {
            self.subs_out.get(k).is_some_and(|s| m.tag("To").as_deref() == Some(s.tag.as_str()))
                && (k.0.as_str(), k.1.as_str()) == (watcher.as_str(), notifier.as_str())
        });
        let sub_state = m.get("Subscription-State").unwrap_or("").trim().to_ascii_lowercase();
        let terminated = sub_state.starts_with("terminated");
        let Some(key) = key.filter(|_| ours) else {
            // The final NOTIFY after our own unsubscribe finds nothing left to end.
            let code = if terminated { 200 } else { 481 };
            self.answer(conn, m, code, None, &[]);
            return;
        };
        let event = m.get("Event").and_then(|e| e.split(';').next()).map(str::trim);
        if !event.is_some_and(|e| e.eq_ignore_ascii_case("presence")) {
            self.answer(conn, m, 489, None, &[("Allow-Events", "presence".to_owned())]);
            return;
        }
        if terminated {
            self.answer(conn, m, 200, None, &[]);
            self.drop_out(&key);
            let (to, from) = key;
            if sub_state.contains("reason=rejected") {
                let body = String::new();
                self.signal(Signal::Refused {
                    kind: Kind::Subscribe,
                    local: to,
                    remote: from,
                    code: 403,
                    body,
                });
            } else {
                self.signal(Signal::Presence { from, to, state: FederatedState::Offline });
            }
            return;
        }
        let state = if m.body.is_empty() {
            None
        } else {
            match FederatedState::from_pidf(&m.body) {
                Ok(s) => Some(s),
                Err(e) => {
                    self.answer(conn, m, 400, Some(&e.to_string()), &[]);
                    return;
                }
            }
        };
        if let Some(s) = self.subs_out.get_mut(&key)
            && s.remote_tag.is_none()
        {
            s.remote_tag = m.tag("From");
        }
        self.answer(conn, m, 200, None, &[]);
        if let Some(state) = state {
            let (to, from) = key;
            self.signal(Signal::Presence { from, to, state });
        }
    }

    fn on_message(
        &mut self,
        conn: ConnId,
        m: &Message,
        from: String,
        to: String,
        known: &dyn Fn(&str) -> bool,
    ) {
        if domain_of(&to) != self.domain || !known(&to) {
            self.answer(conn, m, 404, Some("no such user"), &[]);
            return;
        }
        let plain = m.get("Content-Type").and_then(|c| c.split(';').next()).map(str::trim);
        if !plain.is_some_and(|c| c.eq_ignore_ascii_case("text/plain")) {
            self.answer(
                conn,
                m,
                415,
                Some("only text/plain messages"),
                &[("Accept", "text/plain".to_owned())],
            );
            return;
        }
        let Ok(body) = String::from_utf8(m.body.clone()) else {
            self.answer(conn, m, 400, Some("the text is not UTF-8"), &[]);
            return;
        };
        self.answer(conn, m, 200, None, &[]);
        self.signal(Signal::Message { from, to, body });
    }

    fn on_response(&mut self, now: Duration, code: u16, m: &Message) {
        if code < 200 {
            return;
        }
        let (Some(call), Some((n, _))) = (m.call_id(), m.cseq()) else { return };
        let Some(p) = self.pending.remove(&(call.to_owned(), n)) else { return };
        self.timers.remove(&(p.deadline, Timer::Answer(call.to_owned(), n)));
        self.settle(now, p.what, code, m.expires(), m.tag("To"));
    }

    /// A request's outcome: its final status (408 when none came in time).
    fn settle(
        &mut self,
        now: Duration,
        what: What,
        code: u16,
        expires: Option<u32>,
        to_tag: Option<String>,
    ) {
        let ok = (200..300).contains(&code);
        match what {
            What::Subscribe(key) => {
                if ok {
                    if let Some(s) = self.subs_out.get_mut(&key) {
                        if s.remote_tag.is_none() {
                            s.remote_tag = to_tag;
                        }
                        let granted =
                            expires.unwrap_or(SUB_EXPIRES).clamp(MIN_EXPIRES, SUB_EXPIRES);
                        let at = now + Duration::from_secs((granted / 2).into());
                        s.refresh = Some(at);
                        self.timers.insert((at, Timer::Refresh(key.0.clone(), key.1.clone())));
                    }
                } else if self.drop_out(&key).is_some() {
                    let (local, remote) = key;
                    let body = String::new();
                    self.signal(Signal::Refused {
                        kind: Kind::Subscribe,
                        local,
                        remote,
                        code,
                        body,
                    });
                }
            }
            What::Message { local, remote, body } if !ok => {
                self.signal(Signal::Refused { kind: Kind::Message, local, remote, code, body });
            }
            // RFC 6665 §4.2.2: a NOTIFY refused ends the subscription.
            What::Notify(key) if !ok && self.drop_in(&key).is_some() => {
                let (user, watcher) = key;
                self.signal(Signal::Unsubscribe { watcher, user });
            }
            _ => {}
        }
    }

    /// The connection to `domain` failed (`code`: 502 no route, 503 refused or lost, 504 no
    /// answer): every request waiting for its answer from there gets it now.
    pub fn fail_domain(&mut self, now: Duration, domain: &str, code: u16) {
        let keys: Vec<(String, u32)> = self
            .pending
            .iter()
            .filter(|(_, p)| p.domain == domain)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            if let Some(p) = self.pending.remove(&k) {
                self.settle(now, p.what, code, None, None);
            }
        }
    }

    /// Time passed: unanswered requests fail (408), our subscriptions are refreshed, and
    /// theirs that were not refreshed end.
    pub fn handle_timeout(&mut self, now: Duration) {
        while let Some((at, _)) = self.timers.first() {
            if *at > now {
                break;
            }
            let (at, t) = self.timers.pop_first().expect("first exists");
            match t {
                Timer::Answer(call, n) => {
                    let key = (call, n);
                    if self.pending.get(&key).is_some_and(|p| p.deadline == at) {
                        let p = self.pending.remove(&key).expect("found");
                        self.settle(now, p.what, 408, None, None);
                    }
                }
                Timer::Refresh(w, t) => {
                    let key = (w, t);
                    let due = self.subs_out.get(&key).is_some_and(|s| s.refresh == Some(at));
                    if due {
                        let s = self.subs_out.get_mut(&key).expect("found");
                        s.cseq += 1;
                        s.refresh = None;
                        let s = &self.subs_out[&key];
                        let m = self.subscribe_request(&key, s, SUB_EXPIRES);
                        let d = domain_of(&key.1).to_owned();
                        self.send(now, &d, m, What::Subscribe(key));
                    }
                }
                Timer::Expire(u, w) => {
                    let key = (u, w);
                    if self.subs_in.get(&key).is_some_and(|s| s.expires == at) {
                        let n = self.notify_request(&key, "terminated;reason=timeout", None);
                        self.drop_in(&key);
                        self.send(now, domain_of(&key.1), n, What::Quiet);
                        let (user, watcher) = key;
                        self.signal(Signal::Unsubscribe { watcher, user });
                    }
                }
            }
        }
    }
}
