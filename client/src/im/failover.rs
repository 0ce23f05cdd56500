//! HA1 failover: the XMPP connection is lost → `FAILOVER`; after the HA2 re-login wait the
//! SOAP session again (`SOAPCONNECT_SESSION_P`/`_S`), then a fresh login, else the session
//! stops until the user signs in again (SPEC HA1, HA2, HA4).

use super::*;

/// Where SPEC HA1 stands, apart from the I/O: the SOAP server and XMPP node being tried,
/// whether SOAP is a fresh login or the session kept across a failover, whether a failover is
/// under way, and the HA2 re-login limits. Every HA1 state name comes from here.
#[derive(Debug)]
pub(super) struct Ha1 {
    /// Index of the SOAP server being tried (0: `_P`, else `_S`).
    pub(super) soap_idx: usize,
    pub(super) soap_mode: SoapMode,
    /// Index of the XMPP node being tried (0: `_P`, else `_S`).
    pub(super) xmpp_idx: usize,
    /// A failover is under way: giving up means stopping until the user signs in again.
    pub(super) failing_over: bool,
    /// SPEC HA2 re-login limits from the server, seconds.
    pub(super) relogin: (u32, u32),
    /// SPEC HA4 has been reported for this sign-in.
    pub(super) ha4_reported: bool,
}

impl Default for Ha1 {
    fn default() -> Self {
        Self {
            soap_idx: 0,
            soap_mode: SoapMode::Login,
            xmpp_idx: 0,
            failing_over: false,
            // The product's defaults until get-all-config says otherwise.
            relogin: (120, 480),
            ha4_reported: false,
        }
    }
}

impl Ha1 {
    /// The state of a SOAP attempt at the current server.
    pub(super) fn soap_state(&self) -> Ha1State {
        match (self.soap_mode, self.soap_idx) {
            (SoapMode::Login, 0) => Ha1State::SOAPCONNECT_P,
            (SoapMode::Login, _) => Ha1State::SOAPCONNECT_S,
            (SoapMode::Session, 0) => Ha1State::SOAPCONNECT_SESSION_P,
            (SoapMode::Session, _) => Ha1State::SOAPCONNECT_SESSION_S,
        }
    }

    /// The state of an XMPP attempt at the current node.
    pub(super) fn xmpp_state(&self) -> Ha1State {
        if self.xmpp_idx == 0 { Ha1State::XMPPCONNECT_P } else { Ha1State::XMPPCONNECT_S }
    }

    /// The stream is lost: `FAILOVER`, and the HA2 wait drawn between the limits.
    pub(super) fn lost(&mut self, rng: &mut ChaCha8Rng) -> Duration {
        let (lo, hi) = (self.relogin.0.min(self.relogin.1), self.relogin.0.max(self.relogin.1));
        self.failing_over = true;
        Duration::from_secs(u64::from(rng.random_range(lo..=hi)))
    }

    /// The wait is over: the SOAP session again, first server and node first.
    pub(super) fn relogin(&mut self) {
        self.soap_mode = SoapMode::Session;
        self.soap_idx = 0;
        self.xmpp_idx = 0;
    }

    /// No SOAP server is left to try. During a session attempt that means neither kept the
    /// session: a fresh login from the first server, `FAILOVER` again (returns `true`).
    /// Otherwise there is nothing left (returns `false`).
    pub(super) fn session_lost_everywhere(&mut self) -> bool {
        if self.soap_mode != SoapMode::Session {
            return false;
        }
        self.soap_mode = SoapMode::Login;
        self.soap_idx = 0;
        true
    }

    /// The next SOAP server.
    pub(super) fn next_soap(&mut self) {
        self.soap_idx += 1;
    }

    /// The next XMPP node; `false` when none is left of `nodes`.
    pub(super) fn next_xmpp(&mut self, nodes: usize) -> bool {
        self.xmpp_idx += 1;
        self.xmpp_idx < nodes
    }
}

impl ImSession {
    /// HA1: the XMPP connection is lost → `FAILOVER`, and after the HA2 wait, SOAP again.
    pub(super) fn failover(&mut self, now: Time) {
        // Room occupancy lives on the stream: it is gone with it. The rooms are remembered and
        // joined again once XMPPCONNECTED on the peer (as Jabber does).
        for r in self.rooms.values_mut() {
            r.joined = false;
            r.occupants = 0;
        }
        if let Some(id) = self.stream.take() {
            self.out.push_back(Output::StreamClose { id });
        }
        let node = self.nodes.get(self.ha1.xmpp_idx).cloned().unwrap_or_default();
        self.state(Ha1State::FAILOVER, &node);
        // SPEC HA4: the failover goes ahead (the product does not stop it), but the deployment
        // is outside what Cisco supports, and the transcript says so once per sign-in.
        if self.contact_source.eq_ignore_ascii_case("UDS") && !self.ha1.ha4_reported {
            self.ha1.ha4_reported = true;
            let reason = "IM&P high availability is supported with an LDAP contact source, \
                          not with DirectoryServerType UDS (SPEC HA4)";
            self.out.push_back(Output::Event(ClientEvent::ImHaUnsupported {
                contact_source: self.contact_source.clone(),
                reason: reason.into(),
            }));
        }
        let wait = self.ha1.lost(&mut self.rng);
        self.out.push_back(Output::Event(ClientEvent::ImRelogin { wait_s: wait.as_secs() }));
        self.st = St::Failover;
        self.deadline = Some(now + wait);
    }

    /// Nothing reachable: at sign-in a failure; during a failover, HA1's "stop until the user
    /// signs in again".
    pub(super) fn give_up(&mut self, why: ImError) {
        if self.ha1.failing_over {
            self.fail(ImError::Stopped(Box::new(why)));
        } else {
            self.fail(why);
        }
    }

    /// HA2 wait over: the SOAP session again, first server first.
    pub(super) fn relogin_due(&mut self, now: Time) {
        self.ha1.relogin();
        self.soap_connect(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(h: &Ha1) -> (&'static str, &'static str) {
        (h.soap_state().as_str(), h.xmpp_state().as_str())
    }

    /// SPEC HA1's order of states as a pure state machine: login at P then S; after a lost
    /// stream the session at P then S; neither kept it: a fresh login from P.
    #[test]
    fn ha1_state_order() {
        let mut h = Ha1::default();
        assert_eq!(names(&h), ("SOAPCONNECT_P", "XMPPCONNECT_P"));
        h.next_soap();
        assert!(h.next_xmpp(2));
        assert_eq!(names(&h), ("SOAPCONNECT_S", "XMPPCONNECT_S"));
        assert!(!h.next_xmpp(2), "no third node");
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        h.relogin = (480, 120);
        let wait = h.lost(&mut rng);
        assert!((120..=480).contains(&wait.as_secs()), "HA2 limits in either order: {wait:?}");
        assert!(h.failing_over);
        h.relogin();
        assert_eq!(names(&h), ("SOAPCONNECT_SESSION_P", "XMPPCONNECT_P"));
        h.next_soap();
        assert_eq!(h.soap_state().as_str(), "SOAPCONNECT_SESSION_S");
        assert!(h.session_lost_everywhere());
        assert_eq!(h.soap_state().as_str(), "SOAPCONNECT_P");
        assert!(!h.session_lost_everywhere(), "a login that fails everywhere is the end");
    }

    /// The wait is drawn from the seed: the same seed, the same waits.
    #[test]
    fn ha2_wait_is_seeded() {
        let draw = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..5).map(|_| Ha1::default().lost(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }
}
