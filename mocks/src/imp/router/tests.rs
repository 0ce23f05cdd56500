use std::cell::RefCell;

use super::*;

thread_local! {
    /// What the router delivered, by session, not yet read by the test.
    static BOXES: RefCell<BTreeMap<SessionId, VecDeque<Element>>> =
        const { RefCell::new(BTreeMap::new()) };
}

/// A session, as the test reads it.
struct Rx(SessionId);

fn router() -> Router {
    BOXES.with(|b| b.borrow_mut().clear());
    Router::new("example.com", Limits::default())
}

/// Moves what the router queued into the sessions' boxes (the node's I/O does this).
fn settle(r: &mut Router) {
    while let Some((id, e)) = r.poll_output() {
        BOXES.with(|b| b.borrow_mut().entry(id).or_default().push_back(e));
    }
}

fn connect(r: &mut Router, jid: &str) -> Rx {
    let id = BOXES.with(|b| {
        let mut b = b.borrow_mut();
        let id = b.keys().next_back().map_or(1, |k| k + 1);
        b.insert(id, VecDeque::new());
        id
    });
    r.bind(jid, id);
    settle(r);
    Rx(id)
}

fn drain(rx: &mut Rx) -> Vec<String> {
    BOXES
        .with(|b| b.borrow_mut().get_mut(&rx.0).map(std::mem::take).unwrap_or_default())
        .into_iter()
        .map(|e| e.to_xml())
        .collect()
}

fn parse(from: &str, xml: &str) -> Element {
    let mut e = uclab_proto::xmpp::parse_element(xml.as_bytes()).unwrap();
    e.set("from", from);
    e
}

fn send(r: &mut Router, from: &str, xml: &str) {
    r.handle(parse(from, xml), Duration::from_secs(1_767_603_600));
    settle(r);
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
    settle(&mut r);
    drain(&mut phone);
    send(&mut r, bob, &msg("alice@example.com", "4"));
    assert!(drain(&mut phone)[0].contains(">4<"));
}

#[test]
fn imp4_offline_messages_wait_for_available_presence() {
    let mut r = router();
    let msg = |to: &str, body: &str| format!("<message to='{to}'><body>{body}</body></message>");
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
    settle(&mut r);
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
    assert!(got[0].contains("type=\"subscribe\"") && got[0].contains("from=\"alice@example.com\""));
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
    settle(&mut r);
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
        settle(&mut r);
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
    send(&mut r, a, "<iq type='get' id='p' to='example.com'><ping xmlns='urn:xmpp:ping'/></iq>");
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
    let xml = format!("<message to='team@{SVC}' type='groupchat'><body>{body}</body></message>");
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
    settle(&mut r);
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
    settle(&mut r);
    r.set_muc_up(SVC, true);
    settle(&mut r);
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
    settle(&mut r);
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

/// A session that ends late (its connection lingered) leaves only what it bound: a newer
/// session that bound the same full JID keeps its binding and its messages.
#[test]
fn a_late_unbind_leaves_the_newer_session_alone() {
    let mut r = router();
    let _bob = online(&mut r, "bob@example.com/desk");
    let old = online(&mut r, "alice@example.com/desk");
    let mut new = online(&mut r, "alice@example.com/desk");
    r.unbind_session(old.0);
    settle(&mut r);
    send(
        &mut r,
        "bob@example.com/desk",
        "<message to='alice@example.com/desk' type='chat'><body>hi</body></message>",
    );
    let got = drain(&mut new);
    assert!(got.iter().any(|m| m.contains("<body>hi</body>")), "{got:?}");
}

/// A router with federation on under `policy` (SPEC FED1, FED5).
fn federated(policy: Policy) -> Router {
    let mut r = router();
    r.set_federation(policy);
    r
}

/// What the router queued for other domains, as XML.
fn remote(r: &mut Router) -> Vec<String> {
    std::iter::from_fn(|| r.poll_remote()).map(|e| e.to_xml()).collect()
}

/// A stanza from an authenticated foreign domain.
fn from_remote(r: &mut Router, from: &str, xml: &str) {
    r.handle_remote(parse(from, xml), Duration::from_secs(1_767_603_600));
    settle(r);
}

const BOB: &str = "bob@partner.example.org";

#[test]
fn fed1_messages_leave_for_the_foreign_domain_and_come_back() {
    let mut r = federated(Policy::Open);
    let a = "alice@example.com/desk";
    let mut ra = online(&mut r, a);
    send(&mut r, a, &format!("<message to='{BOB}' type='chat'><body>hi</body></message>"));
    let out = remote(&mut r);
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(out[0].contains(&format!("to=\"{BOB}\"")) && out[0].contains(&format!("from=\"{a}\"")));
    assert!(drain(&mut ra).is_empty(), "nothing stored or bounced locally");
    from_remote(
        &mut r,
        &format!("{BOB}/pc"),
        "<message to='alice@example.com' type='chat'><body>yo</body></message>",
    );
    assert!(drain(&mut ra)[0].contains("<body>yo</body>"));
    // SPEC IMP4: stored for an offline user whoever sent it.
    r.unbind(a);
    settle(&mut r);
    from_remote(
        &mut r,
        &format!("{BOB}/pc"),
        "<message to='alice@example.com'><body>later</body></message>",
    );
    let mut ra = connect(&mut r, a);
    send(&mut r, a, "<presence/>");
    let got = drain(&mut ra);
    assert!(got.iter().any(|m| m.contains("later") && m.contains("urn:xmpp:delay")), "{got:?}");
    assert_eq!((r.counters().federated_out, r.counters().federated_in), (1, 2));
}

#[test]
fn fed1_subscription_to_a_foreign_contact_and_presence() {
    let mut r = federated(Policy::Open);
    let a = "alice@example.com/desk";
    let mut ra = online(&mut r, a);
    send(&mut r, a, &format!("<presence to='{BOB}' type='subscribe'/>"));
    assert!(drain(&mut ra)[0].contains("ask=\"subscribe\""));
    let out = remote(&mut r);
    assert!(out[0].contains("type=\"subscribe\"") && out[0].contains("from=\"alice@example.com\""));
    // The foreign server keeps its side: no local roster is made for bob.
    from_remote(
        &mut r,
        &format!("{BOB}/pc"),
        "<presence to='alice@example.com' type='subscribed'/>",
    );
    let got = drain(&mut ra);
    assert!(got.iter().any(|g| g.contains("subscription=\"to\"") && !g.contains("ask")), "{got:?}");
    assert!(got.iter().any(|g| g.contains("type=\"subscribed\"")), "{got:?}");
    // Bob's broadcast reaches alice; a stranger's does not.
    from_remote(
        &mut r,
        &format!("{BOB}/pc"),
        "<presence to='alice@example.com'><show>away</show></presence>",
    );
    assert!(drain(&mut ra)[0].contains("<show>away</show>"));
    from_remote(&mut r, "eve@partner.example.org/x", "<presence to='alice@example.com'/>");
    assert!(drain(&mut ra).is_empty());
    // Alice signs in again: her initial presence probes bob's server (RFC 6121 §4.3).
    r.unbind(a);
    settle(&mut r);
    online(&mut r, "alice@example.com/phone");
    let out = remote(&mut r);
    assert!(
        out.iter().any(|o| o.contains("type=\"probe\"") && o.contains(&format!("to=\"{BOB}\""))),
        "{out:?}"
    );
    // She unsubscribes: bob's server is told.
    send(&mut r, "alice@example.com/phone", &format!("<presence to='{BOB}' type='unsubscribe'/>"));
    assert!(remote(&mut r).iter().any(|o| o.contains("type=\"unsubscribe\"")));
}

#[test]
fn fed1_a_foreign_watcher_gets_presence_by_bare_jid() {
    let mut r = federated(Policy::Open);
    let a = "alice@example.com/desk";
    let mut ra = online(&mut r, a);
    from_remote(
        &mut r,
        &format!("{BOB}/pc"),
        "<presence to='alice@example.com' type='subscribe'/>",
    );
    assert!(drain(&mut ra)[0].contains("type=\"subscribe\""), "the request is delivered");
    // A probe from a non-watcher learns nothing.
    from_remote(&mut r, &format!("{BOB}/pc"), "<presence to='alice@example.com' type='probe'/>");
    assert!(remote(&mut r).is_empty());
    send(&mut r, a, &format!("<presence to='{BOB}' type='subscribed'/>"));
    let out = remote(&mut r);
    assert!(out[0].contains("type=\"subscribed\""), "{out:?}");
    assert!(
        out[1].contains(&format!("from=\"{a}\"")) && out[1].contains(&format!("to=\"{BOB}\"")),
        "{out:?}"
    );
    send(&mut r, a, "<presence><show>dnd</show></presence>");
    let out = remote(&mut r);
    assert_eq!(out.len(), 1, "one per foreign watcher, its server fans out: {out:?}");
    assert!(out[0].contains("<show>dnd</show>"));
    from_remote(&mut r, &format!("{BOB}/pc"), "<presence to='alice@example.com' type='probe'/>");
    assert!(remote(&mut r)[0].contains("<show>dnd</show>"), "a watcher's probe is answered");
    // Bob stops watching.
    from_remote(
        &mut r,
        &format!("{BOB}/pc"),
        "<presence to='alice@example.com' type='unsubscribe'/>",
    );
    drain(&mut ra);
    send(&mut r, a, "<presence/>");
    assert!(remote(&mut r).is_empty());
}

#[test]
fn fed5_policy_refuses_both_ways_and_never_sends() {
    let blocked: BTreeSet<String> = [BOB.split('@').nth(1).unwrap().to_owned()].into();
    for policy in
        [Policy::Block(blocked.clone()), Policy::Allow(["other.example.net".to_owned()].into())]
    {
        let mut r = federated(policy);
        let a = "alice@example.com/desk";
        let mut ra = online(&mut r, a);
        send(&mut r, a, &format!("<message to='{BOB}' id='m1'><body>x</body></message>"));
        let got = drain(&mut ra);
        assert!(
            got[0].contains("type=\"error\"") && got[0].contains("<policy-violation"),
            "{got:?}"
        );
        assert!(remote(&mut r).is_empty(), "never leaves");
        from_remote(
            &mut r,
            &format!("{BOB}/pc"),
            "<message to='alice@example.com'><body>in</body></message>",
        );
        assert!(drain(&mut ra).is_empty(), "never delivered");
        assert_eq!(r.counters().federation_refusals, 2);
        let notes: Vec<String> = std::iter::from_fn(|| r.poll_note()).collect();
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("refused message to partner.example.org: policy-violation"));
    }
    // Federation off: remote-server-not-found, nothing queued.
    let mut r = router();
    let mut ra = online(&mut r, "alice@example.com/desk");
    send(
        &mut r,
        "alice@example.com/desk",
        &format!("<message to='{BOB}'><body>x</body></message>"),
    );
    assert!(drain(&mut ra)[0].contains("<remote-server-not-found"));
    assert!(remote(&mut r).is_empty());
}

#[test]
fn fed1_undeliverable_stanzas_bounce_to_their_senders() {
    let mut r = federated(Policy::Open);
    let a = "alice@example.com/desk";
    let mut ra = online(&mut r, a);
    send(&mut r, a, &format!("<message to='{BOB}' id='m1'><body>x</body></message>"));
    let out: Vec<Element> = std::iter::from_fn(|| r.poll_remote()).collect();
    r.bounce(out, "remote-server-not-found");
    settle(&mut r);
    let got = drain(&mut ra);
    assert!(
        got[0].contains("type=\"error\"") && got[0].contains("<remote-server-not-found"),
        "{got:?}"
    );
    assert!(got[0].contains("id=\"m1\""));
    assert!(
        r.poll_note().is_some_and(|n| n.contains("bounced 1 stanza(s) to partner.example.org"))
    );
}

/// A router of cluster 1 whose peer cluster (imp3, imp4) is home to bob (SPEC FED2).
fn intercluster() -> Router {
    let mut r = router();
    let peers = [("bob@example.com".to_owned(), "imp3.example.com".to_owned())].into();
    let hosts = ["imp3.example.com".to_owned(), "imp4.example.com".to_owned()].into();
    r.set_intercluster(vec!["imp1.example.com".into(), "imp2.example.com".into()], peers, hosts);
    r
}

#[test]
fn fed2_a_peer_clusters_user_is_reached_with_the_host_rewritten() {
    // Federation with other domains is off: the peer cluster is the same domain.
    let mut r = intercluster();
    r.provision("bob", "alice");
    let a = "alice@example.com/desk";
    let mut ra = online(&mut r, a);
    let out = remote(&mut r);
    // bob watches alice: her initial presence goes to bob's cluster, hosts rewritten.
    assert!(
        out.iter().any(|o| o.contains("to=\"bob@imp3.example.com\"")
            && o.contains("from=\"alice@imp1.example.com/desk\"")),
        "{out:?}"
    );
    send(&mut r, a, "<message to='bob@example.com' type='chat'><body>hi</body></message>");
    let out = remote(&mut r);
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(out[0].contains("to=\"bob@imp3.example.com\"") && out[0].contains("<body>hi</body>"));
    assert!(drain(&mut ra).is_empty(), "nothing stored or refused");
    // Back from the peer cluster: addresses in the domain's own form again.
    from_remote(
        &mut r,
        "bob@imp3.example.com/pc",
        "<message to='alice@imp1.example.com' type='chat'><body>yo</body></message>",
    );
    let got = drain(&mut ra);
    assert!(
        got[0].contains("from=\"bob@example.com/pc\"")
            && got[0].contains("to=\"alice@example.com\""),
        "{got:?}"
    );
    assert_eq!(r.counters().federation_refusals, 0);
    assert!(r.counters().intercluster >= 3);
    // A user of neither cluster is still another matter: stored offline, not sent anywhere.
    send(&mut r, a, "<message to='carol@example.com'><body>later</body></message>");
    assert!(remote(&mut r).is_empty());
    // The peer cluster cannot be reached: Alice hears of it in the domain's own addresses.
    send(&mut r, a, "<message to='bob@example.com' id='m2'><body>anyone?</body></message>");
    let out: Vec<Element> = std::iter::from_fn(|| r.poll_remote()).collect();
    r.bounce(out, "remote-server-timeout");
    settle(&mut r);
    let got = drain(&mut ra);
    assert!(
        got[0].contains("from=\"bob@example.com\"") && got[0].contains("<remote-server-timeout"),
        "{got:?}"
    );
}
