//! Voice failover (SPEC CC3) and SRST (SPEC CC5): the active node lost → the next member at
//! once; none left → the SRST router, probing the first member until it has answered for
//! `connectionMonitorDuration`, then back to CUCM.

use super::*;

impl Phone {
    /// The active node is gone or refused: CC3 next member, else CC5 SRST.
    pub(super) fn next_target(&mut self, now: Time, reason: &str) {
        let (t, was_registered) = match self.state {
            State::Registering(t) => (t, false),
            State::Registered(t, _) => (t, true),
            State::Waiting(_) => return self.register_at(now, 0),
            State::Closed => return,
        };
        let node = self.node(t);
        self.failing_over = true;
        let state = if was_registered { "failover" } else { "register-failed" };
        self.event(ClientEvent::PhoneState {
            state: state.into(),
            node,
            reason: reason.to_owned(),
        });
        self.close_leg(Role::Active);
        self.close_leg(Role::Keepalive);
        self.close_leg(Role::Probe);
        self.probe_at = None;
        self.cucm_back_since = None;
        // SRST is the last resort; after it, the whole list again later.
        let next = if self.targets[t].srst { self.targets.len() } else { t + 1 };
        self.register_at(now, next);
    }

    pub(super) fn leg_failed(&mut self, now: Time, i: usize, reason: &str) {
        let role = self.legs[i].role;
        let node = self.node(self.legs[i].target);
        match role {
            Role::Active => self.next_target(now, reason),
            Role::Keepalive => {
                self.close_leg(Role::Keepalive);
                self.event(ClientEvent::PhoneState {
                    state: "keepalive-failed".into(),
                    node,
                    reason: reason.to_owned(),
                });
            }
            Role::Probe => {
                self.close_leg(Role::Probe);
                self.cucm_back_since = None;
            }
            Role::Leave => self.close_leg(Role::Leave),
        }
    }

    /// CC5: leave SRST for the first CUCM member: register there, then unregister at SRST.
    pub(super) fn return_to_cucm(&mut self, now: Time) {
        let State::Registered(srst, _) = self.state else { return };
        self.close_leg(Role::Probe);
        self.probe_at = None;
        self.cucm_back_since = None;
        // The SRST registration is ended on its own leg.
        if let Some(i) = self.legs.iter().position(|l| l.role == Role::Active) {
            self.legs[i].role = Role::Leave;
            let m = self.register_request(i, 0, false);
            self.send(now, i, m);
        }
        let node = self.node(srst);
        self.event(ClientEvent::PhoneState {
            state: "leaving-srst".into(),
            node,
            reason: String::new(),
        });
        self.register_at(now, 0);
    }
}
