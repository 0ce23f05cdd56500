//! The IM&P node's EPAS SOAP service on HTTPS 8443 (SPEC AU4, HA1, IMP1). A `login` with the
//! user's password (IM&P checks it against CUCM, as real IM&P does with LDAP or local users)
//! gives a session key; with it, `get-all-config` names the presence domain and the user's
//! primary and secondary nodes, and `get-onetime-password` gives the password the XMPP sign-in
//! presents (SASL `CISCO-VTG-TOKEN`), valid once.

use std::cell::RefCell;
use std::rc::Rc;

use uclab_proto::soap;

use super::{ImUserRef, ImpConfig, ImpState};
use crate::http::{Handler, Request, Response};

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
    use std::time::Duration;

    use uclab_net::Entropy;

    use super::test_support::answer;
    use super::*;
    use crate::imp::{ImpUser, OTP_LIFETIME, OTPS_PER_USER, OtpRefused, SESSIONS_PER_USER};

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
            trusted_peers: Vec::new(),
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
