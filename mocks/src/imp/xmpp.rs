//! The IM&P node's XMPP server (RFC 6120, SPEC IMP1), sans-IO: one [`ServerSession`] per
//! connection, and a node-wide [`Router`](crate::imp::router::Router) that delivers stanzas between sessions and keeps
//! offline messages (SPEC IMP4).
//!
//! A session goes: stream header → features with STARTTLS required → `<proceed/>` and TLS →
//! new stream → SASL `PLAIN` (the user's password) or `CISCO-VTG-TOKEN` (a one-time password
//! from the SOAP service, valid once) → new stream → resource binding → stanzas. Anything out of
//! order gets the stream error RFC 6120 names and the stream is closed; the router and other
//! sessions carry on.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;

use uclab_proto::xmpp::{self, Element, Frame, Framer};

use crate::imp::hub::Hub;
use crate::imp::router::{NS_ROSTER, SessionId};
use crate::imp::{ImpConfig, ImpState};

const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
const NS_SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
const NS_HOSTNAME: &str = "urn:xmpp:domain-based-name:0";
const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

/// What a session asks its connection to do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Write these bytes.
    Send(String),
    /// Upgrade the connection to TLS now (after `<proceed/>` was written).
    StartTls,
    /// A resource was bound: deliver stanzas for this full JID to this session.
    Bound(String),
    /// A stanza from this session's user for someone else: the router delivers it.
    Route(Element),
    /// Close the connection (after writing what came before).
    Close,
    /// For the transcript: a summary of what was sent (the client writes its own lines, as
    /// HTTP clients do, so what is received is not logged here).
    Sent(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Waiting for the first stream header.
    PreTls,
    /// TLS up, waiting for the SASL exchange.
    Tls,
    /// Authenticated, waiting for resource binding.
    Authed,
    /// Bound: stanzas flow.
    Ready,
    /// Closed.
    Done,
}

/// One client connection's XMPP state.
#[derive(Debug)]
pub struct ServerSession {
    cfg: Rc<ImpConfig>,
    state: Rc<RefCell<ImpState>>,
    framer: Framer,
    stage: Stage,
    stream_open: bool,
    user: Option<String>,
    jid: Option<String>,
    next_id: u32,
    out: VecDeque<Action>,
}

impl ServerSession {
    /// A new connection to the node described by `cfg`.
    pub fn new(cfg: Rc<ImpConfig>, state: Rc<RefCell<ImpState>>) -> Self {
        Self {
            cfg,
            state,
            framer: Framer::new(),
            stage: Stage::PreTls,
            stream_open: false,
            user: None,
            jid: None,
            next_id: 0,
            out: VecDeque::new(),
        }
    }

    /// The bound full JID, once there is one.
    pub fn jid(&self) -> Option<&str> {
        self.jid.as_deref()
    }

    /// Whether the session has ended.
    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }

    /// Next action.
    pub fn poll(&mut self) -> Option<Action> {
        self.out.pop_front()
    }

    /// Bytes from the client.
    pub fn handle_bytes(&mut self, bytes: &[u8]) {
        if self.stage == Stage::Done {
            return;
        }
        match self.framer.feed(bytes) {
            Ok(frames) => {
                for f in frames {
                    if self.stage == Stage::Done {
                        break;
                    }
                    self.on_frame(f);
                }
            }
            Err(e) => self.stream_error(e.condition()),
        }
    }

    /// The client closed the connection (or it broke).
    pub fn handle_eof(&mut self) {
        self.stage = Stage::Done;
    }

    fn send(&mut self, s: String) {
        self.out.push_back(Action::Send(s));
    }

    fn send_el(&mut self, e: &Element) {
        self.out.push_back(Action::Sent(xmpp::summary(e)));
        self.out.push_back(Action::Send(e.to_xml()));
    }

    fn stream_error(&mut self, condition: &str) {
        let head = if self.stream_open {
            String::new()
        } else {
            xmpp::stream_header(("from", &self.cfg.domain), Some("error"))
        };
        self.out.push_back(Action::Sent(format!("stream error {condition}")));
        self.send(format!("{head}{}", xmpp::stream_error(condition)));
        self.out.push_back(Action::Close);
        self.stage = Stage::Done;
    }

    fn stream_id(&mut self) -> String {
        self.next_id += 1;
        format!("{}-{}", self.cfg.host.split('.').next().unwrap_or("imp"), self.next_id)
    }

    fn on_frame(&mut self, f: Frame) {
        match f {
            Frame::StreamOpen(h) => self.on_stream(&h),
            Frame::StreamClose => {
                self.send("</stream:stream>".into());
                self.out.push_back(Action::Close);
                self.stage = Stage::Done;
            }
            Frame::Stanza(s) => match self.stage {
                Stage::PreTls => self.pre_tls(&s),
                Stage::Tls => self.sasl(&s),
                Stage::Authed => self.bind(&s),
                Stage::Ready => self.stanza(s),
                Stage::Done => {}
            },
        }
    }

    fn on_stream(&mut self, h: &Element) {
        let to = h.get("to").unwrap_or("");
        let ok_to =
            to.eq_ignore_ascii_case(&self.cfg.domain) || to.eq_ignore_ascii_case(&self.cfg.host);
        let id = self.stream_id();
        self.send(xmpp::stream_header(("from", &self.cfg.domain), Some(&id)));
        self.stream_open = true;
        if !ok_to {
            return self.stream_error("host-unknown");
        }
        if h.get("version") != Some("1.0") {
            return self.stream_error("unsupported-version");
        }
        let features = match self.stage {
            Stage::PreTls => Element::new("stream:features").child(
                Element::new("starttls").attr("xmlns", NS_TLS).child(Element::new("required")),
            ),
            Stage::Tls => {
                // WIRE.md: IM&P names its home and backup nodes among the mechanisms (as
                // Cisco's jabberwerx SDK test has them): this node, then its subcluster peer.
                let mut m = Element::new("mechanisms")
                    .attr("xmlns", NS_SASL)
                    .child(Element::new("mechanism").text_node("PLAIN"))
                    .child(Element::new("mechanism").text_node("CISCO-VTG-TOKEN"));
                for h in std::iter::once(&self.cfg.host).chain(&self.cfg.peer) {
                    m = m.child(Element::new("hostname").attr("xmlns", NS_HOSTNAME).text_node(h));
                }
                Element::new("stream:features").child(m)
            }
            Stage::Authed => Element::new("stream:features")
                .child(Element::new("bind").attr("xmlns", NS_BIND))
                .child(
                    Element::new("session")
                        .attr("xmlns", NS_SESSION)
                        .child(Element::new("optional")),
                ),
            Stage::Ready | Stage::Done => return self.stream_error("conflict"),
        };
        self.send_el(&features);
    }

    /// Before TLS only `<starttls/>` is acceptable (TLS is required).
    fn pre_tls(&mut self, s: &Element) {
        if s.name == "starttls" && s.get("xmlns") == Some(NS_TLS) {
            self.send_el(&Element::new("proceed").attr("xmlns", NS_TLS));
            self.out.push_back(Action::StartTls);
            self.framer.reset();
            self.stream_open = false;
            self.stage = Stage::Tls;
        } else {
            self.stream_error("policy-violation");
        }
    }

    fn sasl_failure(&mut self, condition: &str) {
        let f = Element::new("failure").attr("xmlns", NS_SASL).child(Element::new(condition));
        self.send_el(&f);
    }

    fn sasl(&mut self, s: &Element) {
        if s.name != "auth" || s.get("xmlns") != Some(NS_SASL) {
            return self.stream_error("not-authorized");
        }
        let mech = s.get("mechanism").unwrap_or("");
        let Some((who, secret)) = xmpp::sasl_decode(mech, &s.text()) else {
            return match mech {
                "PLAIN" | "CISCO-VTG-TOKEN" => self.sasl_failure("malformed-request"),
                _ => self.sasl_failure("invalid-mechanism"),
            };
        };
        // The user named must be ours: a bare local part or one at our domain (issue 13).
        let (id, domain) = who.split_once('@').unwrap_or((who.as_str(), &self.cfg.domain));
        let ours = domain.eq_ignore_ascii_case(&self.cfg.domain);
        let user = match mech {
            "PLAIN" => {
                // RFC 4616 §2: an authorization identity other than the authentication one
                // asks to act as someone else, which no user may here.
                let authz = xmpp::sasl_plain_authzid(&s.text()).unwrap_or_default();
                let own = authz.is_empty()
                    || authz.eq_ignore_ascii_case(&who)
                    || authz.eq_ignore_ascii_case(&format!("{id}@{}", self.cfg.domain));
                self.cfg
                    .users
                    .iter()
                    .find(|u| ours && own && u.id.eq_ignore_ascii_case(id))
                    .filter(|u| self.cfg.password_ok(u, &secret))
                    .map(|u| u.id.clone())
            }
            _ => {
                // The token is the one-time password; it names its user, who must match.
                // Another domain's user is refused before the password is looked at, so
                // naming one cannot use up a password of ours.
                if ours { self.state.borrow_mut().redeem(&secret, id).ok() } else { None }
            }
        };
        match user {
            Some(u) => {
                self.send_el(&Element::new("success").attr("xmlns", NS_SASL));
                self.user = Some(u);
                self.framer.reset();
                self.stream_open = false;
                self.stage = Stage::Authed;
            }
            None => self.sasl_failure("not-authorized"),
        }
    }

    fn bind(&mut self, s: &Element) {
        let bind = s.find("bind").filter(|b| b.get("xmlns") == Some(NS_BIND));
        let (Some(bind), "iq", Some("set")) = (bind, s.name.as_str(), s.get("type")) else {
            return self.stream_error("not-authorized");
        };
        let user = self.user.clone().unwrap_or_default();
        let resource = bind
            .find("resource")
            .map(Element::text)
            .filter(|r| !r.trim().is_empty() && r.len() <= 1023)
            .unwrap_or_else(|| format!("uclab-{}", self.next_id));
        let jid = format!("{user}@{}/{}", self.cfg.domain, resource.trim());
        let mut result = Element::new("iq").attr("type", "result").child(
            Element::new("bind").attr("xmlns", NS_BIND).child(Element::new("jid").text_node(&jid)),
        );
        if let Some(id) = s.get("id") {
            result.set("id", id);
        }
        self.send_el(&result);
        self.jid = Some(jid.clone());
        self.out.push_back(Action::Bound(jid));
        self.stage = Stage::Ready;
    }

    /// A stanza from the bound client: stamped with its full JID; IQs to the server answered
    /// here, everything addressed to others routed.
    fn stanza(&mut self, mut s: Element) {
        if !matches!(s.name.as_str(), "message" | "presence" | "iq") {
            return self.stream_error("unsupported-stanza-type");
        }
        let jid = self.jid.clone().unwrap_or_default();
        s.set("from", &jid);
        let to = s.get("to").unwrap_or("").to_owned();
        let to_server = to.is_empty() || to.eq_ignore_ascii_case(&self.cfg.domain);
        let roster = s.elements().next().is_some_and(|q| q.get("xmlns") == Some(NS_ROSTER));
        if s.name == "iq" && to_server && !roster {
            return self.server_iq(&s);
        }
        // Rosters, presence and everything for others: the cluster's router.
        self.out.push_back(Action::Route(s));
    }

    fn server_iq(&mut self, s: &Element) {
        let id = s.get("id").unwrap_or("").to_owned();
        let reply_to = s.get("from").unwrap_or("").to_owned();
        let child = s.elements().next();
        let ns = child.and_then(|c| c.get("xmlns")).unwrap_or("");
        let kind = s.get("type").unwrap_or("");
        let ok = matches!((kind, ns), ("set", NS_SESSION) | ("get", "urn:xmpp:ping"));
        let mut r = Element::new("iq").attr("id", &id).attr("to", &reply_to);
        if ok {
            r.set("type", "result");
        } else if matches!(kind, "get" | "set") {
            r.set("type", "error");
            r = r.child(
                Element::new("error")
                    .attr("type", "cancel")
                    .child(Element::new("service-unavailable").attr("xmlns", NS_STANZAS)),
            );
        } else {
            return; // results and errors addressed to the server need no answer
        }
        self.send_el(&r);
    }
}

/// Time a connection may take to bind a resource (slow or silent clients are cut off).
pub const SIGN_IN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// How long one stanza may take to go out to a client that does not read.
pub const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Serves XMPP client connections on `port` until the node stops. `names` are the certificate
/// names (the node's FQDN and the presence domain).
pub async fn serve<N: uclab_net::Net + Clone + 'static>(
    net: N,
    port: u16,
    names: Vec<String>,
    cfg: Rc<ImpConfig>,
    state: Rc<RefCell<ImpState>>,
    hub: Rc<Hub>,
) -> std::io::Result<()> {
    let listener = net.listen(port).await?;
    let tls = net.tls().server_config(&names).map_err(std::io::Error::other)?;
    let limit =
        crate::limits::ConnLimit::new(crate::limits::STREAM_CONNECTIONS, crate::limits::PER_PEER)
            .trusting(&cfg.trusted_peers);
    loop {
        let mut tcp = crate::limits::next_conn(&listener).await;
        let Some(slot) = limit.admit(tcp.peer_addr().ip()) else {
            continue; // over a cap (issue 13): closed at once
        };
        tcp.set_dscp(uclab_proto::dscp::IMP); // SPEC MEDIA2: IM&P traffic is CS3
        let (net, cfg, state, hub, tls) =
            (net.clone(), cfg.clone(), state.clone(), hub.clone(), tls.clone());
        tokio::task::spawn_local(async move {
            let _slot = slot;
            let (local, peer) = (tcp.local_addr(), tcp.peer_addr());
            let session = ServerSession::new(cfg, state);
            // The session leaves the router when the connection ends, and also when the node
            // crashes (this task is dropped then): its watchers and rooms see it go.
            struct Unbind(Rc<Hub>, SessionId, Option<String>);
            impl Drop for Unbind {
                fn drop(&mut self) {
                    // Only what this session bound: a newer session with the same full JID
                    // keeps its binding.
                    if self.2.take().is_some() {
                        let id = self.1;
                        self.0.try_route(|r| r.unbind_session(id));
                    }
                    self.0.end_session(self.1);
                }
            }
            let (id, mailbox) = hub.open_session();
            let mut bound = Unbind(hub.clone(), id, None);
            let ends = (local, peer);
            let s = (session, id, mailbox);
            let r = connection(&net, ends, Box::new(tcp), s, &hub, tls, &mut bound.2).await;
            drop(bound);
            if let Err(e) = r {
                net.transcript().message(
                    net.now(),
                    local,
                    peer,
                    "tcp",
                    &format!("XMPP closed: {e}"),
                );
            }
        });
    }
}

async fn connection<N: uclab_net::Net>(
    net: &N,
    (local, peer): (SocketAddr, SocketAddr),
    mut io: Box<dyn uclab_net::AsyncIo>,
    (mut s, id, mut rx): (ServerSession, SessionId, tokio::sync::mpsc::Receiver<Element>),
    hub: &Hub,
    tls: std::sync::Arc<uclab_net::tls::ServerConfig>,
    jid: &mut Option<String>,
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let started = net.now();
    loop {
        while let Some(a) = s.poll() {
            match a {
                Action::Send(x) => io.write_all(x.as_bytes()).await?,
                Action::StartTls => {
                    io.flush().await?;
                    let t = uclab_net::time::timeout(
                        SIGN_IN_TIMEOUT,
                        net.tls().accept(tls.clone(), io),
                    );
                    io = Box::new(t.await.map_err(|_| std::io::ErrorKind::TimedOut)??);
                }
                Action::Bound(j) => {
                    hub.route(|r| r.bind(&j, id));
                    *jid = Some(j);
                }
                Action::Route(st) => hub.route(|r| r.handle(st, net.tls().unix_now())),
                Action::Close => {
                    io.flush().await?;
                    let _ = io.shutdown().await;
                    return Ok(());
                }
                Action::Sent(line) => log(net, local, peer, &line),
            }
        }
        if s.is_done() {
            return Ok(());
        }
        let limit = if jid.is_some() {
            std::time::Duration::MAX
        } else {
            SIGN_IN_TIMEOUT.saturating_sub(net.now().saturating_sub(started))
        };
        // Biased (a replay must not depend on tokio's random pick): reads first.
        tokio::select! {
            biased;
            // Into the thread's one read buffer, not one per connection (issue 19).
            r = uclab_net::time::timeout(limit, uclab_net::scratch::read_vec(&mut io, 8192)) => match r {
                Ok(Ok(b)) if !b.is_empty() => s.handle_bytes(&b),
                Ok(_) => { s.handle_eof(); return Ok(()); }
                Err(_) => {
                    log(net, local, peer, "no sign-in within 30 s: closed");
                    let _ = io.shutdown().await;
                    return Ok(());
                }
            },
            m = rx.recv() => match m {
                Some(st) => {
                    log(net, local, peer, &xmpp::summary(&st));
                    // A client that stops reading is cut off, not waited for for ever.
                    let xml = st.to_xml();
                    let w = uclab_net::time::timeout(WRITE_TIMEOUT, io.write_all(xml.as_bytes()));
                    w.await.map_err(|_| std::io::ErrorKind::TimedOut)??;
                }
                // The hub closed the mailbox: this client did not read what it was sent.
                None => {
                    log(net, local, peer, "stream:error resource-constraint (mailbox full)");
                    let e = "<stream:error><resource-constraint \
                             xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>\
                             </stream:stream>";
                    let _ = io.write_all(e.as_bytes()).await;
                    let _ = io.shutdown().await;
                    return Ok(());
                }
            }
        }
    }
}

fn log<N: uclab_net::Net>(net: &N, from: SocketAddr, to: SocketAddr, line: &str) {
    net.transcript().message(net.now(), from, to, "tcp", &format!("XMPP {line}"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imp::ImpUser;

    fn node() -> (Rc<ImpConfig>, Rc<RefCell<ImpState>>) {
        let cfg = ImpConfig {
            host: "imp1.example.com".into(),
            domain: "example.com".into(),
            users: vec![ImpUser {
                id: "alice".into(),
                password: "lab".into(),
                primary: "imp1.example.com".into(),
                secondary: None,
            }],
            relogin: (120, 480),
            peer: None,
            lockout: None,
            trusted_peers: Vec::new(),
        };
        (Rc::new(cfg), Rc::new(RefCell::new(ImpState::new(3))))
    }

    fn drain(s: &mut ServerSession) -> Vec<Action> {
        std::iter::from_fn(|| s.poll()).collect()
    }

    fn sent(actions: &[Action]) -> String {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(x) => Some(x.as_str()),
                _ => None,
            })
            .collect()
    }

    fn open(s: &mut ServerSession) -> Vec<Action> {
        s.handle_bytes(xmpp::stream_header(("to", "example.com"), None).as_bytes());
        drain(s)
    }

    /// Drives a session through STARTTLS and SASL with `auth` and binding.
    fn signed_in(auth: &str) -> ServerSession {
        let (cfg, st) = node();
        let mut s = ServerSession::new(cfg, st);
        assert!(sent(&open(&mut s)).contains("<required/>"));
        s.handle_bytes(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        assert!(drain(&mut s).contains(&Action::StartTls));
        assert!(sent(&open(&mut s)).contains("<mechanism>CISCO-VTG-TOKEN</mechanism>"));
        s.handle_bytes(auth.as_bytes());
        assert!(sent(&drain(&mut s)).contains("<success"), "auth refused");
        assert!(sent(&open(&mut s)).contains("xmpp-bind"));
        s.handle_bytes(b"<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>desk</resource></bind></iq>");
        let a = drain(&mut s);
        assert!(sent(&a).contains("<jid>alice@example.com/desk</jid>"), "{a:?}");
        assert!(a.contains(&Action::Bound("alice@example.com/desk".into())));
        s
    }

    fn auth(mech: &str, b64: &str) -> String {
        format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mech}'>{b64}</auth>")
    }

    /// The SASL answer to `auth` on a fresh session after STARTTLS, on `node`.
    fn sasl_answer(node: (Rc<ImpConfig>, Rc<RefCell<ImpState>>), auth: &str) -> String {
        let mut s = ServerSession::new(node.0, node.1);
        open(&mut s);
        s.handle_bytes(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        drain(&mut s);
        open(&mut s);
        s.handle_bytes(auth.as_bytes());
        sent(&drain(&mut s))
    }

    /// Issue 13: PLAIN binds the authenticated user only (RFC 4616 authzid), at our domain.
    #[test]
    fn plain_refuses_another_authzid_and_a_foreign_domain() {
        let b64 = |raw: &str| uclab_proto::base64::encode(raw.as_bytes());
        let plain = |raw: &str| sasl_answer(node(), &auth("PLAIN", &b64(raw)));
        assert!(plain("\0alice\0lab").contains("<success"));
        assert!(plain("alice\0alice\0lab").contains("<success"), "own authzid");
        assert!(plain("alice@example.com\0alice\0lab").contains("<success"), "own JID");
        assert!(plain("bob\0alice\0lab").contains("not-authorized"), "acting as bob");
        assert!(plain("\0alice@evil.test\0lab").contains("not-authorized"), "foreign domain");
        assert!(plain("\0alice@example.com\0lab").contains("<success"));
    }

    /// Issue 13: the directory's lockout holds for XMPP too: locked, the right password fails.
    #[test]
    fn plain_honours_the_credential_policy_lockout() {
        let (cfg, st) = node();
        let mut c = (*cfg).clone();
        let policy = crate::lockout::CredentialPolicy {
            failed_logon: 2,
            ..crate::lockout::CredentialPolicy::default()
        };
        c.lockout = Some(crate::lockout::Lockout::new(policy));
        let n = (Rc::new(c), st);
        let plain = |pw: &str| auth("PLAIN", &xmpp::sasl_plain("alice", pw));
        assert!(sasl_answer(n.clone(), &plain("lab")).contains("<success"));
        assert!(sasl_answer(n.clone(), &plain("x")).contains("not-authorized"));
        assert!(sasl_answer(n.clone(), &plain("y")).contains("not-authorized"));
        assert!(sasl_answer(n.clone(), &plain("lab")).contains("not-authorized"), "locked");
    }

    #[test]
    fn imp1_starttls_plain_bind_and_routing() {
        let mut s = signed_in(&auth("PLAIN", &xmpp::sasl_plain("alice", "lab")));
        s.handle_bytes(b"<message to='bob@example.com' type='chat'><body>hi</body></message>");
        let a = drain(&mut s);
        let Some(m) = a.iter().find_map(|x| match x {
            Action::Route(m) => Some(m),
            _ => None,
        }) else {
            panic!("{a:?}")
        };
        assert_eq!(m.get("from"), Some("alice@example.com/desk"), "stamped with the full JID");
        s.handle_bytes(b"<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>");
        assert!(
            matches!(&drain(&mut s)[..], [Action::Route(q)] if q.name == "iq"),
            "rosters: the router"
        );
        s.handle_bytes(b"<iq type='get' id='v1'><query xmlns='jabber:iq:version'/></iq>");
        assert!(sent(&drain(&mut s)).contains("service-unavailable"));
        s.handle_bytes(b"</stream:stream>");
        assert_eq!(drain(&mut s).last(), Some(&Action::Close));
        assert!(s.is_done());
    }

    #[test]
    fn au4_one_time_password_works_once() {
        let (cfg, st) = node();
        let otp = crate::imp::soap::test_support::one_time_password(&cfg, &st, "alice");
        let token = xmpp::sasl_vtg_token("alice", "example.com", &otp);
        let mut s = ServerSession::new(cfg.clone(), st.clone());
        open(&mut s);
        s.handle_bytes(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        drain(&mut s);
        open(&mut s);
        s.handle_bytes(auth("CISCO-VTG-TOKEN", &token).as_bytes());
        assert!(sent(&drain(&mut s)).contains("<success"));
        // Replayed on another connection: refused.
        let mut s = ServerSession::new(cfg, st);
        open(&mut s);
        s.handle_bytes(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        drain(&mut s);
        open(&mut s);
        s.handle_bytes(auth("CISCO-VTG-TOKEN", &token).as_bytes());
        assert!(sent(&drain(&mut s)).contains("<not-authorized/>"));
    }

    #[test]
    fn hostile_clients_get_stream_errors() {
        let (cfg, st) = node();
        // A stanza before STARTTLS.
        let mut s = ServerSession::new(cfg.clone(), st.clone());
        open(&mut s);
        s.handle_bytes(auth("PLAIN", &xmpp::sasl_plain("alice", "lab")).as_bytes());
        let a = drain(&mut s);
        assert!(sent(&a).contains("<policy-violation"), "{a:?}");
        assert_eq!(a.last(), Some(&Action::Close));
        // Entity declarations, before any stream.
        let mut s = ServerSession::new(cfg.clone(), st.clone());
        s.handle_bytes(b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'b'>]>");
        let a = drain(&mut s);
        assert!(sent(&a).contains("<restricted-xml"), "{a:?}");
        assert!(sent(&a).starts_with("<?xml"), "a stream header comes first");
        // Wrong domain.
        let mut s = ServerSession::new(cfg.clone(), st.clone());
        s.handle_bytes(xmpp::stream_header(("to", "evil.test"), None).as_bytes());
        assert!(sent(&drain(&mut s)).contains("<host-unknown"));
        // Wrong password: a SASL failure, the stream stays.
        let mut s = ServerSession::new(cfg, st);
        open(&mut s);
        s.handle_bytes(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        drain(&mut s);
        open(&mut s);
        s.handle_bytes(auth("PLAIN", &xmpp::sasl_plain("alice", "nope")).as_bytes());
        assert!(sent(&drain(&mut s)).contains("<not-authorized/>"));
        assert!(!s.is_done());
        s.handle_bytes(auth("DIGEST-MD5", "xx").as_bytes());
        assert!(sent(&drain(&mut s)).contains("<invalid-mechanism/>"));
    }
}
