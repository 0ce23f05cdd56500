//! The IM&P node (SPEC AU4, HA1, IMP1): the EPAS SOAP service on HTTPS 8443. A `login` with the
//! user's password (IM&P checks it against CUCM, as real IM&P does with LDAP or local users)
//! gives a session key; with it, `get-all-config` names the presence domain and the user's
//! primary and secondary nodes, and `get-onetime-password` gives the password the XMPP sign-in
//! presents (SASL `CISCO-VTG-TOKEN`), valid once.
//!
//! Session keys and one-time passwords come from the node's seed, so a run replays exactly.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use uclab_proto::soap;

use crate::http::{Handler, Request, Response};

/// A user homed on the IM&P cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImpUser {
    /// User id (the local part of their JID).
    pub id: String,
    /// Password.
    pub password: String,
    /// Their primary node (FQDN).
    pub primary: String,
    /// Their secondary node, the subcluster peer (HA3).
    pub secondary: Option<String>,
}

/// One IM&P node's view of its cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImpConfig {
    /// This node's FQDN.
    pub host: String,
    /// The presence domain (JIDs are `user@domain`).
    pub domain: String,
    /// Users of the cluster.
    pub users: Vec<ImpUser>,
    /// Client re-login limits, seconds (SPEC HA2).
    pub relogin: (u32, u32),
    /// The other node of this node's subcluster (SPEC HA3), which the stream features name
    /// as the backup after this node (WIRE.md's home/backup hints).
    pub peer: Option<String>,
}

impl ImpConfig {
    fn user(&self, id: &str) -> Option<&ImpUser> {
        self.users.iter().find(|u| u.id.eq_ignore_ascii_case(id))
    }
}

/// A user's configured nodes, borrowed.
#[derive(Clone, Copy, Debug)]
pub struct ImUserRef<'a> {
    /// Configured primary.
    pub primary: &'a str,
    /// Configured secondary.
    pub secondary: Option<&'a str>,
}

/// Marks a node up while it lives: made when the node starts, it marks the node down when it
/// is dropped (the node stopped or crashed).
#[derive(Debug)]
pub struct Alive {
    state: Rc<RefCell<ImpState>>,
    host: String,
}

impl Alive {
    /// Node `host` is up.
    pub fn new(state: Rc<RefCell<ImpState>>, host: &str) -> Self {
        state.borrow_mut().set_up(host, true);
        Self { state, host: host.to_owned() }
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        if let Ok(mut s) = self.state.try_borrow_mut() {
            s.set_up(&self.host, false);
        }
    }
}

/// Sessions and one-time passwords a node has handed out.
#[derive(Debug)]
pub struct ImpState {
    seed: u64,
    counter: u64,
    /// Session key → user id.
    sessions: BTreeMap<String, String>,
    /// One-time password → user id (each used once, by the XMPP sign-in).
    otps: BTreeMap<String, String>,
    /// Nodes of the cluster that are down (SPEC HA1: their users move to the peer).
    down: std::collections::BTreeSet<String>,
}

impl ImpState {
    /// Fresh state; keys derive from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            counter: 0,
            sessions: BTreeMap::new(),
            otps: BTreeMap::new(),
            down: std::collections::BTreeSet::new(),
        }
    }

    /// Records whether node `host` is up (a node marks itself up when it starts and down when
    /// it stops; see [`Alive`]).
    pub fn set_up(&mut self, host: &str, up: bool) {
        if up {
            self.down.remove(host);
        } else {
            self.down.insert(host.to_owned());
        }
    }

    /// A user's current nodes: primary and secondary, swapped while the primary is down
    /// (SPEC HA1: "the current primary/secondary XMPP address changes during failover").
    pub fn nodes_of<'a>(&self, u: &'a ImUserRef<'a>) -> (&'a str, Option<&'a str>) {
        match u.secondary {
            Some(s) if self.down.contains(u.primary) && !self.down.contains(s) => {
                (s, Some(u.primary))
            }
            s => (u.primary, s),
        }
    }

    fn token(&mut self, prefix: &str) -> String {
        self.counter += 1;
        // splitmix64: deterministic per seed and call, spread over all bits.
        let mut z = self.seed.wrapping_add(self.counter.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        format!("{prefix}{z:016x}")
    }

    /// Takes a one-time password: the user it was issued to, once.
    pub fn redeem_otp(&mut self, otp: &str) -> Option<String> {
        self.otps.remove(otp)
    }
}

fn soap_xml(status: u16, doc: String) -> Response {
    Response {
        status,
        headers: vec![("content-type".into(), "application/soap+xml; charset=utf-8".into())],
        body: doc.into_bytes(),
    }
}

/// Answers one EPAS request.
pub fn handle_soap(c: &ImpConfig, st: &RefCell<ImpState>, req: &Request) -> Response {
    if req.path != soap::PATH {
        return Response::text(404, "Not Found");
    }
    if req.method != "POST" {
        let mut r = Response::text(405, "Method Not Allowed");
        r.headers.push(("allow".into(), "POST".into()));
        return r;
    }
    let parsed = match soap::parse_request(&req.body) {
        Ok(p) => p,
        Err(e) => return soap_xml(400, soap::fault("Sender", "MalformedRequest", &e.to_string())),
    };
    let mut st = st.borrow_mut();
    match parsed {
        soap::Request::Login { user, password } => match c.user(&user) {
            Some(u) if u.password == password && !password.is_empty() => {
                let key = st.token("sk-");
                st.sessions.insert(key.clone(), u.id.clone());
                soap_xml(200, soap::success_response("login", &key))
            }
            _ => soap_xml(
                400,
                soap::fault("Sender", "AuthenticationFailed", "Invalid username or password"),
            ),
        },
        soap::Request::Keyed { op, session_key } => {
            let Some(id) = st.sessions.get(&session_key).cloned() else {
                return soap_xml(
                    400,
                    soap::fault("Sender", "InvalidSession", "Unknown session key"),
                );
            };
            let Some(u) = c.user(&id) else {
                return soap_xml(400, soap::fault("Sender", "InvalidSession", "User gone"));
            };
            match op.as_str() {
                "get-all-config" => {
                    let (lo, hi) = (c.relogin.0.to_string(), c.relogin.1.to_string());
                    let r = ImUserRef { primary: &u.primary, secondary: u.secondary.as_deref() };
                    let (primary, secondary) = st.nodes_of(&r);
                    let mut params =
                        vec![(soap::P_DOMAIN, c.domain.as_str()), (soap::P_PRIMARY, primary)];
                    if let Some(s) = secondary {
                        params.push((soap::P_SECONDARY, s));
                    }
                    params.push((soap::P_RELOGIN_LOWER, &lo));
                    params.push((soap::P_RELOGIN_UPPER, &hi));
                    soap_xml(200, soap::config_response(&params))
                }
                "get-onetime-password" => {
                    let otp = st.token("otp-");
                    st.otps.insert(otp.clone(), u.id.clone());
                    soap_xml(200, soap::success_response("get-onetime-password", &otp))
                }
                other => soap_xml(
                    400,
                    soap::fault("Sender", "UnknownOperation", &format!("no operation {other}")),
                ),
            }
        }
    }
}

/// The SOAP handler for [`crate::http::serve`], over state shared with the node's XMPP server.
pub fn soap_handler(cfg: Rc<ImpConfig>, state: Rc<RefCell<ImpState>>) -> Handler {
    Rc::new(move |req| handle_soap(&cfg, &state, req))
}

/// SOAP exchanges for this crate's tests.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// A POST of `body` to the EPAS path.
    fn post(body: String) -> Request {
        let mut r = Request::get(soap::PATH);
        r.method = "POST".into();
        r.body = body.into_bytes();
        r
    }

    /// The status and parsed answer of one SOAP request.
    pub(crate) fn answer(
        c: &ImpConfig,
        st: &RefCell<ImpState>,
        body: String,
    ) -> (u16, soap::Response) {
        let r = handle_soap(c, st, &post(body));
        (r.status, soap::parse_response(&r.body).expect("a SOAP answer"))
    }

    /// Logs `user` in and returns a one-time password, as a client does before XMPP.
    pub(crate) fn one_time_password(c: &ImpConfig, st: &RefCell<ImpState>, user: &str) -> String {
        let (_, r) = answer(c, st, soap::login_request(user, "lab", "1"));
        let soap::Response::Success(key) = r else { panic!("login: {r:?}") };
        let (_, r) = answer(c, st, soap::keyed_request("get-onetime-password", &key));
        let soap::Response::Success(otp) = r else { panic!("one-time password: {r:?}") };
        otp
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::answer;
    use super::*;

    fn cfg() -> ImpConfig {
        ImpConfig {
            host: "imp1.example.com".into(),
            domain: "example.com".into(),
            users: vec![ImpUser {
                id: "alice".into(),
                password: "lab".into(),
                primary: "imp1.example.com".into(),
                secondary: Some("imp2.example.com".into()),
            }],
            relogin: (120, 480),
            peer: Some("imp2.example.com".into()),
        }
    }

    #[test]
    fn au4_login_then_config_then_one_time_password() {
        let (c, st) = (cfg(), RefCell::new(ImpState::new(7)));
        let (s, r) = answer(&c, &st, soap::login_request("alice", "lab", "14.3"));
        let soap::Response::Success(key) = r else { panic!("{r:?}") };
        assert_eq!(s, 200);
        let (_, r) = answer(&c, &st, soap::keyed_request("get-all-config", &key));
        let soap::Response::Config(p) = r else { panic!("{r:?}") };
        let get = |k: &str| p.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get(soap::P_DOMAIN), Some("example.com"));
        assert_eq!(get(soap::P_SECONDARY), Some("imp2.example.com"));
        assert_eq!(get(soap::P_RELOGIN_UPPER), Some("480"));
        let (_, r) = answer(&c, &st, soap::keyed_request("get-onetime-password", &key));
        let soap::Response::Success(otp) = r else { panic!("{r:?}") };
        assert_eq!(st.borrow_mut().redeem_otp(&otp).as_deref(), Some("alice"));
        assert_eq!(st.borrow_mut().redeem_otp(&otp), None, "one time only");
        // HA1: while alice's primary is down, the configuration names the peer first.
        st.borrow_mut().set_up("imp1.example.com", false);
        let (_, r) = answer(&c, &st, soap::keyed_request("get-all-config", &key));
        let soap::Response::Config(p) = r else { panic!("{r:?}") };
        let get = |k: &str| p.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get(soap::P_PRIMARY).as_deref(), Some("imp2.example.com"));
        assert_eq!(get(soap::P_SECONDARY).as_deref(), Some("imp1.example.com"));
        st.borrow_mut().set_up("imp1.example.com", true);
        // The same seed hands out the same keys.
        let st2 = RefCell::new(ImpState::new(7));
        let (_, r2) = answer(&c, &st2, soap::login_request("alice", "lab", "14.3"));
        assert_eq!(r2, soap::Response::Success(key));
    }

    #[test]
    fn refusals() {
        let (c, st) = (cfg(), RefCell::new(ImpState::new(1)));
        let (s, r) = answer(&c, &st, soap::login_request("alice", "wrong", "1"));
        assert_eq!(s, 400);
        assert!(
            matches!(r, soap::Response::Fault { ref subcode, .. } if subcode == "AuthenticationFailed")
        );
        let (_, r) = answer(&c, &st, soap::login_request("mallory", "lab", "1"));
        assert!(matches!(r, soap::Response::Fault { .. }));
        let (_, r) = answer(&c, &st, soap::keyed_request("get-onetime-password", "forged"));
        assert!(
            matches!(r, soap::Response::Fault { ref subcode, .. } if subcode == "InvalidSession")
        );
        let (s, r) = answer(&c, &st, "<Envelope><Body>".into());
        assert_eq!(s, 400);
        assert!(
            matches!(r, soap::Response::Fault { ref subcode, .. } if subcode == "MalformedRequest")
        );
        assert_eq!(handle_soap(&c, &st, &Request::get(soap::PATH)).status, 405);
        assert_eq!(handle_soap(&c, &st, &Request::get("/other")).status, 404);
    }
}
