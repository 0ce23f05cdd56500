//! An IM&P node's text conferencing service (SPEC IMP5; the XEP-0045 subset Jabber uses):
//! ad hoc rooms that die with their last occupant, persistent rooms that live in the external
//! database, the join sequence (occupants, own presence, history, subject), group messages,
//! private messages through the room, and the node's room and occupant limits.
//!
//! The service is sans-IO: [`Muc::handle`] takes a stanza already stamped with the sender's
//! full JID and returns what to deliver to whom; the cluster's router, which owns the
//! services, holds the sessions and does the sending. Every node hosts its own service
//! (`conference-<node>.<domain>`), so the per-node limits of SPEC IMP5 are per service.
//!
//! The external database (SPEC IMP5, HA5) is a [`ChatDb`] flag the database node keeps up while
//! it runs. With persistent chat enabled the service does not start without it (every room
//! request is refused with `service-unavailable`); lost later, chat goes on, nothing is written
//! (persistent rooms' history stops growing) and no persistent room can be made.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use uclab_proto::xmpp::{Element, Node};

use uclab_proto::jid::bare;
use uclab_proto::xmpp::{error_reply, stamp};

/// XEP-0045 namespaces.
pub const NS_MUC: &str = "http://jabber.org/protocol/muc";
/// Occupant information in room presence.
pub const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
/// Room configuration by the owner.
pub const NS_MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
/// The configuration field that makes a room persistent.
pub const PERSISTENT_FIELD: &str = "muc#roomconfig_persistentroom";

/// Messages a history query returns at most, and what a room keeps (SPEC IMP5).
pub const HISTORY_MAX: usize = 100;
/// Messages shown on join when the client does not ask for a number (SPEC IMP5).
pub const HISTORY_ON_JOIN: usize = 15;

/// Per-node limits of SPEC IMP5.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoomLimits {
    /// Rooms in all, ad hoc and persistent.
    pub rooms: usize,
    /// Persistent rooms.
    pub persistent: usize,
    /// Occupants of one room.
    pub occupants: usize,
}

impl Default for RoomLimits {
    /// The product's figures: 16,500 rooms, 1,500 persistent, 1,000 occupants per room.
    fn default() -> Self {
        Self { rooms: 16_500, persistent: 1_500, occupants: 1_000 }
    }
}

/// Whether the external database is reachable; its node holds it up while it runs.
#[derive(Clone, Debug, Default)]
pub struct ChatDb(Rc<Cell<bool>>);

impl ChatDb {
    /// Whether the database is up.
    pub fn up(&self) -> bool {
        self.0.get()
    }

    /// Marks the database up or down.
    pub fn set_up(&self, up: bool) {
        self.0.set(up);
    }
}

/// How a node's conferencing service is set up.
#[derive(Clone, Debug, Default)]
pub struct MucConfig {
    /// The service's domain, `conference-<node>.<domain>`.
    pub service: String,
    /// Persistent chat enabled: then the service needs the external database.
    pub persistent_chat: bool,
    /// The external database, if one is configured.
    pub db: Option<ChatDb>,
    /// Limits.
    pub limits: RoomLimits,
}

/// One delivery: the recipient's full JID and the stanza.
pub type Delivery = (String, Element);

#[derive(Debug)]
struct Room {
    persistent: bool,
    /// The creator's bare JID: the one who may configure the room.
    owner: String,
    /// Nick → occupant's full JID (sorted by nick).
    occupants: BTreeMap<String, String>,
    /// Recent messages with their sender's nick, oldest first, at most [`HISTORY_MAX`].
    history: Vec<(String, Element, Duration)>,
}

/// What the service has done, for scenario expectations and benches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MucCounters {
    /// Rooms made.
    pub rooms_created: u64,
    /// Group messages delivered to occupants.
    pub delivered: u64,
    /// Group messages the database did not get because it was down.
    pub not_written: u64,
}

/// One node's conferencing service.
#[derive(Debug)]
pub struct Muc {
    cfg: MucConfig,
    /// Whether the node is up; rooms live while it is (persistent ones in the database too).
    up: bool,
    /// Whether the service started, decided at the first request after the node came up.
    started: Option<bool>,
    rooms: BTreeMap<String, Room>,
    counters: MucCounters,
}

/// The local part of a room JID, lower case, and the nick of an occupant JID.
fn split(jid: &str) -> (String, Option<&str>) {
    let (b, nick) = match jid.split_once('/') {
        Some((b, n)) => (b, Some(n)),
        None => (jid, None),
    };
    let room = b.split_once('@').map_or("", |(l, _)| l).to_ascii_lowercase();
    (room, nick)
}

fn status(codes: &[&str]) -> Vec<Element> {
    codes.iter().map(|c| Element::new("status").attr("code", c)).collect()
}

impl Muc {
    /// A service set up as `cfg`, on a node that is up.
    pub fn new(cfg: MucConfig) -> Self {
        Self {
            cfg,
            up: true,
            started: None,
            rooms: BTreeMap::new(),
            counters: MucCounters::default(),
        }
    }

    /// The service's domain.
    pub fn service(&self) -> &str {
        &self.cfg.service
    }

    /// What the service has done so far.
    pub fn counters(&self) -> MucCounters {
        self.counters
    }

    /// The node went down or came back. Going down loses the ad hoc rooms and every room's
    /// occupants (they were in the node's memory); persistent rooms stay in the database.
    pub fn set_up(&mut self, up: bool) {
        if !up {
            self.rooms.retain(|_, r| r.persistent);
            for r in self.rooms.values_mut() {
                r.occupants.clear();
            }
        }
        self.up = up;
        self.started = None;
    }

    fn db_up(&self) -> bool {
        self.cfg.db.as_ref().is_some_and(ChatDb::up)
    }

    /// Whether the service runs: SPEC IMP5, with persistent chat it does not start without
    /// its database.
    fn running(&mut self) -> bool {
        if !self.up {
            return false;
        }
        let ok = !self.cfg.persistent_chat || self.db_up();
        *self.started.get_or_insert(ok)
    }

    /// A stanza addressed to this service, from a bound session's full JID.
    pub fn handle(&mut self, s: &Element, now: Duration) -> Vec<Delivery> {
        let from = s.get("from").unwrap_or("").to_owned();
        let to = s.get("to").unwrap_or("");
        let (room, nick) = split(to);
        let kind = s.get("type");
        if kind == Some("error") {
            return Vec::new();
        }
        let refuse = |cond: &str, t: &str| vec![(from.clone(), error_reply(s, t, cond))];
        if !self.running() {
            return refuse("service-unavailable", "cancel");
        }
        if room.is_empty() {
            return match s.name.as_str() {
                "iq" if matches!(kind, Some("get" | "set")) => {
                    refuse("feature-not-implemented", "cancel")
                }
                _ => Vec::new(),
            };
        }
        match (s.name.as_str(), nick) {
            ("presence", Some(nick)) if kind == Some("unavailable") => {
                self.leave(&room, &from, Some(nick))
            }
            ("presence", Some(nick)) if kind.is_none() => self.join(&room, nick, &from, s),
            ("presence", None) => refuse("jid-malformed", "modify"),
            ("message", None) if kind == Some("groupchat") => self.group(&room, &from, s, now),
            ("message", Some(nick)) => self.private(&room, nick, &from, s),
            ("iq", None) if kind == Some("set") => self.configure(&room, &from, s),
            ("iq", _) if matches!(kind, Some("get" | "set")) => {
                refuse("feature-not-implemented", "cancel")
            }
            ("message", None) => refuse("bad-request", "modify"),
            _ => Vec::new(),
        }
    }

    fn room_jid(&self, room: &str) -> String {
        format!("{room}@{}", self.cfg.service)
    }

    fn occupant_presence(
        &self,
        room: &str,
        nick: &str,
        show: Option<&Element>,
        owner: bool,
    ) -> Element {
        let (aff, role) = if owner { ("owner", "moderator") } else { ("none", "participant") };
        let mut p =
            Element::new("presence").attr("from", &format!("{}/{nick}", self.room_jid(room)));
        if let Some(show) = show {
            p = p.child(show.clone());
        }
        p.child(
            Element::new("x")
                .attr("xmlns", NS_MUC_USER)
                .child(Element::new("item").attr("affiliation", aff).attr("role", role)),
        )
    }

    /// XEP-0045 §7.2: enter a room, making it if it does not exist.
    fn join(&mut self, room: &str, nick: &str, from: &str, s: &Element) -> Vec<Delivery> {
        let err = |cond: &str, t: &str| vec![(from.to_owned(), error_reply(s, t, cond))];
        if nick.is_empty() || nick.len() > 64 {
            return err("jid-malformed", "modify");
        }
        let show = s.find("show");
        let created = !self.rooms.contains_key(room);
        if created {
            if self.rooms.len() >= self.cfg.limits.rooms {
                return err("resource-constraint", "wait");
            }
            let owner = bare(from);
            let r =
                Room { persistent: false, owner, occupants: BTreeMap::new(), history: Vec::new() };
            self.rooms.insert(room.to_owned(), r);
            self.counters.rooms_created += 1;
        }
        let r = &self.rooms[room];
        match r.occupants.get(nick) {
            Some(who) if who != from => return err("conflict", "cancel"),
            // Already in: a presence change, broadcast to the room.
            Some(_) => {
                let owner = bare(from) == r.owner;
                let p = self.occupant_presence(room, nick, show, owner);
                return r
                    .occupants
                    .values()
                    .map(|o| (o.clone(), p.clone().attr("to", o)))
                    .collect();
            }
            None if r.occupants.values().any(|o| o == from) => {
                return err("not-acceptable", "cancel");
            }
            None if r.occupants.len() >= self.cfg.limits.occupants => {
                return err("service-unavailable", "wait");
            }
            None => {}
        }
        let mut out = Vec::new();
        // The occupants already there, to the newcomer.
        for (n, o) in &r.occupants {
            let p = self.occupant_presence(room, n, None, bare(o) == r.owner);
            out.push((from.to_owned(), p.attr("to", from)));
        }
        // The newcomer to the others, and to themself with 110 (and 201 for a new room).
        let owner = bare(from) == r.owner;
        let p = self.occupant_presence(room, nick, show, owner);
        for o in r.occupants.values() {
            out.push((o.clone(), p.clone().attr("to", o)));
        }
        let mut own = p.attr("to", from);
        if let Some(x) = own.children.iter_mut().find_map(|c| match c {
            Node::Element(e) if e.name == "x" => Some(e),
            _ => None,
        }) {
            let codes: &[&str] = if created { &["110", "201"] } else { &["110"] };
            for c in status(codes) {
                x.children.push(Node::Element(c));
            }
        }
        out.push((from.to_owned(), own));
        // History (SPEC IMP5: 15 unless asked, never more than 100), then the subject.
        let want = s
            .find("x")
            .filter(|x| x.get("xmlns") == Some(NS_MUC))
            .and_then(|x| x.find("history"))
            .and_then(|h| h.get("maxstanzas"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(HISTORY_ON_JOIN)
            .min(HISTORY_MAX);
        let room_jid = self.room_jid(room);
        let skip = r.history.len().saturating_sub(want);
        for (n, m, at) in &r.history[skip..] {
            let mut m = m.clone();
            m.set("from", &format!("{room_jid}/{n}"));
            m.set("to", from);
            m.children.push(Node::Element(
                Element::new("delay")
                    .attr("xmlns", "urn:xmpp:delay")
                    .attr("from", &room_jid)
                    .attr("stamp", &stamp(*at)),
            ));
            out.push((from.to_owned(), m));
        }
        let subject = Element::new("message")
            .attr("from", &room_jid)
            .attr("to", from)
            .attr("type", "groupchat")
            .child(Element::new("subject"));
        out.push((from.to_owned(), subject));
        self.rooms
            .get_mut(room)
            .expect("room exists")
            .occupants
            .insert(nick.to_owned(), from.to_owned());
        out
    }

    /// XEP-0045 §7.14: leave a room; an ad hoc room dies with its last occupant (SPEC IMP5).
    fn leave(&mut self, room: &str, from: &str, nick: Option<&str>) -> Vec<Delivery> {
        let Some(r) = self.rooms.get_mut(room) else { return Vec::new() };
        let Some(nick) = nick
            .filter(|n| r.occupants.get(*n).is_some_and(|o| o == from))
            .map(str::to_owned)
            .or_else(|| r.occupants.iter().find(|(_, o)| *o == from).map(|(n, _)| n.clone()))
        else {
            return Vec::new();
        };
        r.occupants.remove(&nick);
        let room_jid = self.room_jid(room);
        let r = &self.rooms[room];
        let p = Element::new("presence")
            .attr("from", &format!("{room_jid}/{nick}"))
            .attr("type", "unavailable")
            .child(
                Element::new("x")
                    .attr("xmlns", NS_MUC_USER)
                    .child(Element::new("item").attr("affiliation", "none").attr("role", "none")),
            );
        let mut out: Vec<Delivery> =
            r.occupants.values().map(|o| (o.clone(), p.clone().attr("to", o))).collect();
        let mut own = p.attr("to", from);
        if let Some(Node::Element(x)) = own.children.last_mut() {
            x.children.push(Node::Element(Element::new("status").attr("code", "110")));
        }
        out.push((from.to_owned(), own));
        if r.occupants.is_empty() && !r.persistent {
            self.rooms.remove(room);
        }
        out
    }

    /// A session ended: it leaves every room it was in.
    pub fn gone(&mut self, full: &str) -> Vec<Delivery> {
        let rooms: Vec<String> = self
            .rooms
            .iter()
            .filter(|(_, r)| r.occupants.values().any(|o| o == full))
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::new();
        for room in rooms {
            out.extend(self.leave(&room, full, None).into_iter().filter(|(to, _)| to != full));
        }
        out
    }

    /// XEP-0045 §7.4: a group message, to every occupant; kept as history, and for a
    /// persistent room written to the database when it is up (SPEC IMP5).
    fn group(&mut self, room: &str, from: &str, s: &Element, now: Duration) -> Vec<Delivery> {
        let db_up = self.db_up();
        let room_jid = self.room_jid(room);
        let Some(r) = self.rooms.get_mut(room) else {
            return vec![(from.to_owned(), error_reply(s, "cancel", "item-not-found"))];
        };
        let Some(nick) = r.occupants.iter().find(|(_, o)| *o == from).map(|(n, _)| n.clone())
        else {
            return vec![(from.to_owned(), error_reply(s, "cancel", "not-acceptable"))];
        };
        let mut m = Element::new("message").attr("type", "groupchat");
        if let Some(id) = s.get("id") {
            m.set("id", id);
        }
        for c in s.elements().filter(|c| matches!(c.name.as_str(), "body" | "subject")) {
            m = m.child(c.clone());
        }
        let out: Vec<Delivery> = r
            .occupants
            .values()
            .map(|o| {
                let mut m = m.clone();
                m.set("from", &format!("{room_jid}/{nick}"));
                m.set("to", o);
                (o.clone(), m)
            })
            .collect();
        self.counters.delivered += out.len() as u64;
        if r.persistent && !db_up {
            self.counters.not_written += 1;
        } else if m.find("body").is_some() {
            if r.history.len() >= HISTORY_MAX {
                r.history.remove(0);
            }
            r.history.push((nick, m, now));
        }
        out
    }

    /// XEP-0045 §7.5: a private message to one occupant, from the sender's room JID.
    fn private(&mut self, room: &str, nick: &str, from: &str, s: &Element) -> Vec<Delivery> {
        let room_jid = self.room_jid(room);
        let Some(r) = self.rooms.get(room) else {
            return vec![(from.to_owned(), error_reply(s, "cancel", "item-not-found"))];
        };
        let sender = r.occupants.iter().find(|(_, o)| *o == from).map(|(n, _)| n.clone());
        match (sender, r.occupants.get(nick)) {
            (Some(me), Some(to)) => {
                let mut m = s.clone();
                m.set("from", &format!("{room_jid}/{me}"));
                m.set("to", to);
                vec![(to.clone(), m)]
            }
            (None, _) => vec![(from.to_owned(), error_reply(s, "cancel", "not-acceptable"))],
            (Some(_), None) => vec![(from.to_owned(), error_reply(s, "cancel", "item-not-found"))],
        }
    }

    /// XEP-0045 §10.2: the owner submits the room's configuration. Only persistence is
    /// modelled: it needs persistent chat, the database up, and room under the node's limit.
    fn configure(&mut self, room: &str, from: &str, s: &Element) -> Vec<Delivery> {
        let err = |cond: &str, t: &str| vec![(from.to_owned(), error_reply(s, t, cond))];
        let Some(q) = s.find("query").filter(|q| q.get("xmlns") == Some(NS_MUC_OWNER)) else {
            return err("feature-not-implemented", "cancel");
        };
        let persistent_now = self.rooms.values().filter(|r| r.persistent).count();
        let (db_up, enabled, limit) =
            (self.db_up(), self.cfg.persistent_chat, self.cfg.limits.persistent);
        let Some(r) = self.rooms.get_mut(room) else { return err("item-not-found", "cancel") };
        if bare(from) != r.owner {
            return err("forbidden", "auth");
        }
        let want = q
            .find("x")
            .into_iter()
            .flat_map(|x| x.elements())
            .find(|f| f.name == "field" && f.get("var") == Some(PERSISTENT_FIELD))
            .and_then(|f| f.find("value"))
            .map(|v| matches!(v.text().trim(), "1" | "true"));
        if let Some(want) = want
            && want != r.persistent
        {
            if want {
                if !enabled {
                    return err("not-allowed", "cancel");
                }
                if !db_up {
                    return err("service-unavailable", "wait");
                }
                if persistent_now >= limit {
                    return err("resource-constraint", "wait");
                }
            }
            r.persistent = want;
        }
        // A persistent room made ad hoc again with nobody in it dies now, as ad hoc rooms do.
        if !r.persistent && r.occupants.is_empty() {
            self.rooms.remove(room);
        }
        let mut ok = Element::new("iq")
            .attr("type", "result")
            .attr("from", &self.room_jid(room))
            .attr("to", from);
        if let Some(id) = s.get("id") {
            ok.set("id", id);
        }
        vec![(from.to_owned(), ok)]
    }

    /// Rooms the service holds now: (ad hoc, persistent).
    pub fn room_counts(&self) -> (usize, usize) {
        let p = self.rooms.values().filter(|r| r.persistent).count();
        (self.rooms.len() - p, p)
    }
}
