//! Voice failover (SPEC CC3) and SRST (SPEC CC5): the active node lost → the next member at
//! once; none left → the SRST router, probing the first member until it has answered for
//! `connectionMonitorDuration`, then back to CUCM.

use super::*;

/// How often the first member is probed while on SRST (at most; the first probe comes after
/// the keepalive interval when that is shorter).
const PROBE_INTERVAL: Duration = Duration::from_secs(30);

/// SPEC CC5's watch for CUCM while registered at the SRST router: when to probe the first
/// member next, and since when it has answered without a break.
#[derive(Debug, Default)]
pub(super) struct SrstMonitor {
    probe_at: Option<Time>,
    back_since: Option<Time>,
}

/// What an answer to a probe means.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Monitor {
    /// The first answer after silence: CUCM is reachable again.
    FirstAnswer,
    /// Answering, but not yet for `connectionMonitorDuration`.
    Watching,
    /// Answering for `connectionMonitorDuration`: go back to CUCM (`first`: this is also the
    /// first answer, with a zero monitor duration).
    Return {
        /// Also the first answer.
        first: bool,
    },
}

impl SrstMonitor {
    /// Registered at SRST: the first probe after the keepalive interval (1–30 s).
    pub(super) fn start(&mut self, now: Time, keepalive: u32) {
        self.probe_at = Some(now + Duration::from_secs(u64::from(keepalive.clamp(1, 30))));
        self.back_since = None;
    }

    /// Off SRST (back at CUCM, failed over, closed).
    pub(super) fn stop(&mut self) {
        *self = Self::default();
    }

    /// When the next probe is due.
    pub(super) fn probe_at(&self) -> Option<Time> {
        self.probe_at
    }

    /// Whether a probe is due at `now`; if so the next one is scheduled.
    pub(super) fn probe_due(&mut self, now: Time) -> bool {
        if self.probe_at.is_none_or(|t| t > now) {
            return false;
        }
        self.probe_at = Some(now + PROBE_INTERVAL);
        true
    }

    /// The first member answered a probe at `now`.
    pub(super) fn answered(&mut self, now: Time, monitor: Duration) -> Monitor {
        let since = *self.back_since.get_or_insert(now);
        if now >= since + monitor {
            return Monitor::Return { first: since == now };
        }
        self.probe_at = Some((now + PROBE_INTERVAL).min(since + monitor));
        if since == now { Monitor::FirstAnswer } else { Monitor::Watching }
    }

    /// A probe went unanswered (or its connection failed): the count starts again.
    pub(super) fn unanswered(&mut self) {
        self.back_since = None;
    }
}

impl Phone {
    /// The active node is gone or refused: CC3 next member, else CC5 SRST.
    pub(super) fn next_target(&mut self, now: Time, error: PhoneError) {
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
            reason: error.to_string(),
        });
        self.close_leg(Role::Active);
        self.close_leg(Role::Keepalive);
        self.close_leg(Role::Probe);
        self.monitor.stop();
        // SRST is the last resort; after it, the whole list again later.
        let next = if self.targets[t].srst { self.targets.len() } else { t + 1 };
        self.register_at(now, next);
    }

    pub(super) fn leg_failed(&mut self, now: Time, i: usize, error: PhoneError) {
        let role = self.legs[i].role;
        let node = self.node(self.legs[i].target);
        // Through the edge, a leg that could not even reach Expressway-E (no connection, no
        // TLS, no answer to connect) lost the edge, not a CUCM node: the next edge (Jabber
        // 14). A node that is gone behind the edge shows as an answer from C or a channel C
        // closes on an open connection, and is CC3's.
        let edge_gone = self.edge.is_some()
            && !self.legs[i].open
            && self.legs[i].txn.is_none()
            && matches!(error, PhoneError::Connection(_) | PhoneError::NoAnswer);
        match role {
            Role::Active if edge_gone => self.lose_edge(now, &format!("the edge: {error}")),
            Role::Active => self.next_target(now, error),
            Role::Keepalive => {
                self.close_leg(Role::Keepalive);
                self.event(ClientEvent::PhoneState {
                    state: "keepalive-failed".into(),
                    node,
                    reason: error.to_string(),
                });
            }
            Role::Probe => {
                self.close_leg(Role::Probe);
                self.monitor.unanswered();
            }
            Role::Leave => self.close_leg(Role::Leave),
        }
    }

    /// CC5: leave SRST for the first CUCM member: register there, then unregister at SRST.
    pub(super) fn return_to_cucm(&mut self, now: Time) {
        let State::Registered(srst, _) = self.state else { return };
        self.close_leg(Role::Probe);
        self.monitor.stop();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Time {
        Duration::from_secs(n)
    }

    /// SPEC CC5: probes every 30 s at most, and back to CUCM once it has answered for the
    /// whole monitor duration without a break; a break starts the count again.
    #[test]
    fn cc5_back_after_the_monitor_duration_unbroken() {
        let mut m = SrstMonitor::default();
        assert!(!m.probe_due(s(0)), "not on SRST");
        m.start(s(0), 120);
        assert_eq!(m.probe_at(), Some(s(30)), "keepalive clamped to 30 s");
        assert!(!m.probe_due(s(29)));
        assert!(m.probe_due(s(30)));
        assert_eq!(m.answered(s(30), s(60)), Monitor::FirstAnswer);
        assert_eq!(m.probe_at(), Some(s(60)));
        m.unanswered();
        assert!(m.probe_due(s(60)));
        assert_eq!(m.answered(s(60), s(60)), Monitor::FirstAnswer, "the count starts again");
        assert!(m.probe_due(s(90)));
        assert_eq!(m.answered(s(90), s(60)), Monitor::Watching);
        assert_eq!(m.probe_at(), Some(s(120)), "the last probe lands on the monitor's end");
        assert!(m.probe_due(s(120)));
        assert_eq!(m.answered(s(120), s(60)), Monitor::Return { first: false });
        m.stop();
        assert_eq!(m.probe_at(), None);
    }
}
