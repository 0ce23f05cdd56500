//! The IM&P node (SPEC AU4, HA1, IMP1): the EPAS SOAP service on HTTPS 8443. A `login` with the
//! user's password (IM&P checks it against CUCM, as real IM&P does with LDAP or local users)
//! gives a session key; with it, `get-all-config` names the presence domain and the user's
//! primary and secondary nodes, and `get-onetime-password` gives the password the XMPP sign-in
//! presents (SASL `CISCO-VTG-TOKEN`), valid once.
//!
//! Session keys and one-time passwords are 128-bit values of a ChaCha20 stream ([`SecretRng`]):
//! from the run's seed in simulation, so a run replays exactly, and from the OS random source
//! in live mode (issue 13), so none can be guessed or derived from another. A one-time
//! password is bound to the user and the session that asked for it, is used once and expires
//! after [`OTP_LIFETIME`]. It is good on every node of the cluster, as the real cluster's
//! replicated database makes it (the client gets it from the node it signed in to and
//! presents it to its home node, SPEC HA1).

pub mod muc;
pub mod router;
pub mod trunk;
pub mod xmpp;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use std::time::Duration;

use uclab_net::{Entropy, SecretRng};
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
    /// The directory's credential policy lockout (shared with CUCM, issue 13).
    pub lockout: Option<Rc<crate::lockout::Lockout>>,
}

impl ImpConfig {
    /// Checks `password` for the configured user `u` under the lockout, if any.
    pub fn password_ok(&self, u: &ImpUser, password: &str) -> bool {
        let right = u.password == password && !password.is_empty();
        crate::lockout::check(self.lockout.as_deref(), &u.id, right)
            == crate::lockout::Verdict::Allowed
    }
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

/// How long a one-time password stays valid: the client presents it within a second of
/// getting it; a minute covers a slow WAN (HA5) and leaves nothing to replay later.
pub const OTP_LIFETIME: Duration = Duration::from_secs(60);
/// Sessions kept per user (each sign-in makes one; the oldest goes first), so logins cannot
/// grow the table without bound.
pub const SESSIONS_PER_USER: usize = 8;
/// One-time passwords outstanding per user (the oldest goes first).
pub const OTPS_PER_USER: usize = 4;

/// A one-time password handed out.
#[derive(Clone, Debug)]
struct Otp {
    user: String,
    /// The session that asked for it: it dies with the session.
    session: String,
    expires: Duration,
}

/// Why a one-time password was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtpRefused {
    /// Never issued, already used, or expired.
    Unknown,
    /// Issued to another user: refused, and kept for its owner.
    NotYours,
}

/// Sessions and one-time passwords a node has handed out.
pub struct ImpState {
    secrets: SecretRng,
    /// Session key → user id.
    sessions: BTreeMap<String, String>,
    /// Session keys of each user, oldest first.
    user_sessions: BTreeMap<String, std::collections::VecDeque<String>>,
    /// One-time password → owner (each used once, by the XMPP sign-in).
    otps: BTreeMap<String, Otp>,
    /// Nodes of the cluster that are down (SPEC HA1: their users move to the peer).
    down: std::collections::BTreeSet<String>,
    /// The node's clock (simulated time in simulation).
    clock: Option<Rc<dyn Fn() -> Duration>>,
}

impl std::fmt::Debug for ImpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImpState")
            .field("sessions", &self.sessions.len())
            .field("otps", &self.otps.len())
            .field("down", &self.down)
            .finish_non_exhaustive()
    }
}

impl ImpState {
    /// Fresh state; keys derive from `seed` (tests and simulation).
    pub fn new(seed: u64) -> Self {
        Self::with_secrets(Entropy::Seed(seed).secrets("imp"))
    }

    /// Fresh state drawing keys from `secrets`.
    pub fn with_secrets(secrets: SecretRng) -> Self {
        Self {
            secrets,
            sessions: BTreeMap::new(),
            user_sessions: BTreeMap::new(),
            otps: BTreeMap::new(),
            down: std::collections::BTreeSet::new(),
            clock: None,
        }
    }

    /// The clock one-time passwords expire by.
    pub fn set_clock(&mut self, clock: Rc<dyn Fn() -> Duration>) {
        self.clock = Some(clock);
    }

    fn now(&self) -> Duration {
        self.clock.as_ref().map_or(Duration::ZERO, |c| c())
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

    /// A new session for `user`; their oldest goes past [`SESSIONS_PER_USER`].
    fn open_session(&mut self, user: &str) -> String {
        let key = self.secrets.token("sk-");
        self.sessions.insert(key.clone(), user.to_owned());
        let mine = self.user_sessions.entry(user.to_owned()).or_default();
        mine.push_back(key.clone());
        if mine.len() > SESSIONS_PER_USER
            && let Some(old) = mine.pop_front()
        {
            self.sessions.remove(&old);
            self.otps.retain(|_, o| o.session != old);
        }
        key
    }

    /// A one-time password for `user`, asked for in `session`.
    fn issue_otp(&mut self, user: &str, session: &str) -> String {
        let now = self.now();
        self.otps.retain(|_, o| o.expires > now);
        let mine: Vec<String> =
            self.otps.iter().filter(|(_, o)| o.user == user).map(|(k, _)| k.clone()).collect();
        if mine.len() >= OTPS_PER_USER {
            // The oldest to expire goes.
            if let Some(k) = mine.iter().min_by_key(|k| self.otps[*k].expires) {
                self.otps.remove(k);
            }
        }
        let otp = self.secrets.token("otp-");
        let o =
            Otp { user: user.to_owned(), session: session.to_owned(), expires: now + OTP_LIFETIME };
        self.otps.insert(otp.clone(), o);
        otp
    }

    /// Takes a one-time password presented by `user`: the user it was issued to, once. A
    /// password of another user is refused and stays valid for its owner.
    pub fn redeem(&mut self, otp: &str, user: &str) -> Result<String, OtpRefused> {
        let now = self.now();
        let o = self.otps.get(otp).ok_or(OtpRefused::Unknown)?;
        if o.expires <= now {
            self.otps.remove(otp);
            return Err(OtpRefused::Unknown);
        }
        if !o.user.eq_ignore_ascii_case(user) {
            return Err(OtpRefused::NotYours);
        }
        Ok(self.otps.remove(otp).map(|o| o.user).unwrap_or_default())
    }

    /// Takes a one-time password whoever presents it (tests): its user, once.
    pub fn redeem_otp(&mut self, otp: &str) -> Option<String> {
        self.otps.remove(otp).map(|o| o.user)
    }

    /// Sessions and one-time passwords held (tests of the bounds).
    pub fn sizes(&self) -> (usize, usize) {
        (self.sessions.len(), self.otps.len())
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
            Some(u) if c.password_ok(u, &password) => {
                let key = st.open_session(&u.id);
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
                    let otp = st.issue_otp(&u.id, &session_key);
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
            lockout: None,
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

    /// Issue 13: SOAP logins count against the directory's lockout, shared with CUCM's UDS.
    #[test]
    fn soap_login_honours_the_credential_policy_lockout() {
        let policy = crate::lockout::CredentialPolicy { failed_logon: 2, ..Default::default() };
        let lockout = crate::lockout::Lockout::new(policy);
        let c = ImpConfig { lockout: Some(lockout.clone()), ..cfg() };
        let st = RefCell::new(ImpState::new(5));
        let ok = |pw: &str| {
            matches!(
                answer(&c, &st, soap::login_request("alice", pw, "1")).1,
                soap::Response::Success(_)
            )
        };
        assert!(ok("lab"));
        assert!(!ok("x"));
        assert!(!ok("y"));
        assert!(!ok("lab"), "locked: the right password is refused");
        assert!(lockout.locked("alice"), "the table CUCM's UDS reads too");
    }

    #[test]
    fn one_time_passwords_are_bound_single_use_and_short_lived() {
        let (c, st) = (cfg(), RefCell::new(ImpState::new(5)));
        let t = Rc::new(std::cell::Cell::new(Duration::ZERO));
        let clock = t.clone();
        st.borrow_mut().set_clock(Rc::new(move || clock.get()));
        let otp = test_support::one_time_password(&c, &st, "alice");
        // Another user: refused, and still good for alice.
        assert_eq!(st.borrow_mut().redeem(&otp, "bob"), Err(OtpRefused::NotYours));
        assert_eq!(st.borrow_mut().redeem(&otp, "alice").as_deref(), Ok("alice"));
        assert_eq!(st.borrow_mut().redeem(&otp, "alice"), Err(OtpRefused::Unknown));
        // Expired after a minute.
        let late = test_support::one_time_password(&c, &st, "alice");
        t.set(OTP_LIFETIME);
        assert_eq!(st.borrow_mut().redeem(&late, "alice"), Err(OtpRefused::Unknown));
        // It dies with its session: once alice's session is pushed out, so is its password.
        t.set(OTP_LIFETIME * 2);
        let early = test_support::one_time_password(&c, &st, "alice");
        for _ in 0..SESSIONS_PER_USER {
            let _ = answer(&c, &st, soap::login_request("alice", "lab", "1"));
        }
        assert_eq!(st.borrow_mut().redeem(&early, "alice"), Err(OtpRefused::Unknown));
    }

    #[test]
    fn keys_are_long_unrelated_and_bounded() {
        // Live mode's secrets (the OS source); simulation's seeded ones replay instead.
        let live = ImpState::with_secrets(Entropy::os().unwrap().secrets("imp"));
        let (c, st) = (cfg(), RefCell::new(live));
        let mut keys = Vec::new();
        for _ in 0..1000 {
            let (_, r) = answer(&c, &st, soap::login_request("alice", "lab", "1"));
            let soap::Response::Success(k) = r else { panic!("{r:?}") };
            keys.push(k);
        }
        assert!(keys.iter().all(|k| k.len() == 3 + 32), "128-bit keys");
        // Consecutive keys share no structure a counter would leave.
        let same_prefix = keys.windows(2).filter(|w| w[0][..11] == w[1][..11]).count();
        assert_eq!(same_prefix, 0);
        // The table holds the newest few per user; old keys are gone.
        assert_eq!(st.borrow().sizes().0, SESSIONS_PER_USER);
        let (_, r) = answer(&c, &st, soap::keyed_request("get-all-config", &keys[0]));
        assert!(matches!(r, soap::Response::Fault { .. }));
        for _ in 0..20 {
            let _ = test_support::one_time_password(&c, &st, "alice");
        }
        assert!(st.borrow().sizes().1 <= OTPS_PER_USER);
    }
}
