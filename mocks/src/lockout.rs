//! CUCM's credential policy lockout (issue 13): after `failed_logon` wrong passwords within
//! `reset_after` of the first, an end user's account is locked for `lockout`, and while it is
//! locked even the right password is refused. A successful sign-in clears the count.
//!
//! The policy belongs to the user directory, so one table serves every service that checks an
//! end user's password: UDS on each CUCM node, and EPAS SOAP and XMPP SASL PLAIN on IM&P,
//! which authenticate against the same directory. Only configured users are tracked, so the
//! table is bounded by the directory. The product's defaults are 3 failures, 30 minutes and
//! 30 minutes (CUCM Administration Guide, "Credential Policy Configuration").

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

/// A credential policy's lockout settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CredentialPolicy {
    /// Failed logons allowed before the account locks (CUCM's "Failed Logon").
    pub failed_logon: u32,
    /// The failure count starts again this long after the first failure ("Reset Failed Logon
    /// Attempts Every").
    pub reset_after: Duration,
    /// How long a locked account stays locked ("Lockout Duration").
    pub lockout: Duration,
}

impl Default for CredentialPolicy {
    /// The product's default credential policy.
    fn default() -> Self {
        let half_hour = Duration::from_secs(30 * 60);
        Self { failed_logon: 3, reset_after: half_hour, lockout: half_hour }
    }
}

/// What the policy says of a password check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The password was right and the account is open.
    Allowed,
    /// The password was wrong (counted).
    Refused,
    /// The account is locked: refused whatever the password.
    Locked,
}

#[derive(Clone, Copy, Debug, Default)]
struct Record {
    failures: u32,
    first: Duration,
    locked_until: Option<Duration>,
}

/// The lockout state of a directory's users, shared by the services that check passwords.
pub struct Lockout {
    policy: CredentialPolicy,
    clock: RefCell<Option<Rc<dyn Fn() -> Duration>>>,
    users: RefCell<BTreeMap<String, Record>>,
}

impl fmt::Debug for Lockout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lockout").field("policy", &self.policy).finish_non_exhaustive()
    }
}

impl PartialEq for Lockout {
    /// Configurations compare by policy (the state is not configuration).
    fn eq(&self, other: &Self) -> bool {
        self.policy == other.policy
    }
}

impl Eq for Lockout {}

impl Lockout {
    /// An empty table under `policy`.
    pub fn new(policy: CredentialPolicy) -> Rc<Self> {
        Rc::new(Self { policy, clock: RefCell::new(None), users: RefCell::default() })
    }

    /// The clock lockouts run by (the node's: simulated time in simulation). The first node
    /// to start sets it; every node of a run shares one clock.
    pub fn set_clock(&self, clock: Rc<dyn Fn() -> Duration>) {
        self.clock.borrow_mut().get_or_insert(clock);
    }

    fn now(&self) -> Duration {
        self.clock.borrow().as_ref().map_or(Duration::ZERO, |c| c())
    }

    /// Records a password check of `user` (a configured user id) that was `right` or not.
    pub fn check(&self, user: &str, right: bool) -> Verdict {
        let now = self.now();
        let mut users = self.users.borrow_mut();
        let r = users.entry(user.to_ascii_lowercase()).or_default();
        if let Some(until) = r.locked_until {
            if now < until {
                return Verdict::Locked;
            }
            *r = Record::default();
        }
        if right {
            *r = Record::default();
            return Verdict::Allowed;
        }
        if r.failures == 0 || now.saturating_sub(r.first) >= self.policy.reset_after {
            *r = Record { failures: 0, first: now, locked_until: None };
        }
        r.failures += 1;
        if self.policy.failed_logon > 0 && r.failures >= self.policy.failed_logon {
            r.locked_until = Some(now + self.policy.lockout);
        }
        Verdict::Refused
    }

    /// Whether `user` is locked now.
    pub fn locked(&self, user: &str) -> bool {
        let now = self.now();
        self.users
            .borrow()
            .get(&user.to_ascii_lowercase())
            .and_then(|r| r.locked_until)
            .is_some_and(|u| now < u)
    }
}

/// A password check through an optional lockout: without one, the password alone decides.
pub fn check(lockout: Option<&Lockout>, user: &str, right: bool) -> Verdict {
    match lockout {
        Some(l) => l.check(user, right),
        None if right => Verdict::Allowed,
        None => Verdict::Refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn lab() -> (Rc<Lockout>, Rc<Cell<Duration>>) {
        let l = Lockout::new(CredentialPolicy::default());
        let t = Rc::new(Cell::new(Duration::ZERO));
        let c = t.clone();
        l.set_clock(Rc::new(move || c.get()));
        (l, t)
    }

    #[test]
    fn three_failures_lock_for_thirty_minutes_even_the_right_password() {
        let (l, t) = lab();
        assert_eq!(l.check("alice", false), Verdict::Refused);
        assert_eq!(l.check("Alice", false), Verdict::Refused);
        assert!(!l.locked("alice"));
        assert_eq!(l.check("alice", false), Verdict::Refused);
        assert!(l.locked("alice"));
        assert_eq!(l.check("alice", true), Verdict::Locked);
        assert_eq!(l.check("bob", true), Verdict::Allowed, "others are not affected");
        t.set(Duration::from_secs(30 * 60 - 1));
        assert_eq!(l.check("alice", true), Verdict::Locked);
        t.set(Duration::from_secs(30 * 60));
        assert_eq!(l.check("alice", true), Verdict::Allowed);
    }

    #[test]
    fn a_success_or_the_reset_time_clears_the_count() {
        let (l, t) = lab();
        l.check("alice", false);
        l.check("alice", false);
        assert_eq!(l.check("alice", true), Verdict::Allowed);
        l.check("alice", false);
        l.check("alice", false);
        assert!(!l.locked("alice"), "the count started again after the success");
        t.set(Duration::from_secs(30 * 60));
        l.check("alice", false);
        assert!(!l.locked("alice"), "and again after 30 minutes");
        let off = Lockout::new(CredentialPolicy { failed_logon: 0, ..CredentialPolicy::default() });
        for _ in 0..100 {
            assert_eq!(off.check("alice", false), Verdict::Refused);
        }
        assert_eq!(off.check("alice", true), Verdict::Allowed, "0: no limit");
        assert_eq!(check(None, "alice", false), Verdict::Refused);
    }
}
