//! HA1 failover: the XMPP connection is lost → `FAILOVER`; after the HA2 re-login wait the
//! SOAP session again (`SOAPCONNECT_SESSION_P`/`_S`), then a fresh login, else the session
//! stops until the user signs in again (SPEC HA1, HA2, HA4).

use super::*;

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
        let node = self.nodes.get(self.xmpp_idx).cloned().unwrap_or_default();
        self.state(Ha1State::FAILOVER, &node);
        // SPEC HA4: the failover goes ahead (the product does not stop it), but the deployment
        // is outside what Cisco supports, and the transcript says so once per sign-in.
        if self.contact_source.eq_ignore_ascii_case("UDS") && !self.ha4_reported {
            self.ha4_reported = true;
            let reason = "IM&P high availability is supported with an LDAP contact source, \
                          not with DirectoryServerType UDS (SPEC HA4)";
            self.out.push_back(Output::Event(ClientEvent::ImHaUnsupported {
                contact_source: self.contact_source.clone(),
                reason: reason.into(),
            }));
        }
        let (lo, hi) = (self.relogin.0.min(self.relogin.1), self.relogin.0.max(self.relogin.1));
        let wait = Duration::from_secs(u64::from(self.rng.random_range(lo..=hi)));
        self.out.push_back(Output::Event(ClientEvent::ImRelogin { wait_s: wait.as_secs() }));
        self.failing_over = true;
        self.st = St::Failover;
        self.deadline = Some(now + wait);
    }

    /// Nothing reachable: at sign-in a failure; during a failover, HA1's "stop until the user
    /// signs in again".
    pub(super) fn give_up(&mut self, why: ImError) {
        if self.failing_over {
            self.fail(ImError::Stopped(Box::new(why)));
        } else {
            self.fail(why);
        }
    }

    /// HA2 wait over: the SOAP session again, first server first.
    pub(super) fn relogin(&mut self, now: Time) {
        self.soap_mode = SoapMode::Session;
        self.soap_idx = 0;
        self.xmpp_idx = 0;
        self.soap_connect(now);
    }
}
