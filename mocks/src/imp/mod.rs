//! The IM&P node kind (SPEC AU4, HA1, HA3, IMP1–IMP5, CC7): its configuration and users, and
//! the sessions and one-time passwords its SOAP service hands out and its XMPP service takes.
//! Its services are the modules here: [`soap`] (EPAS on HTTPS 8443), [`xmpp`] (client
//! connections on 5222), [`router`] (the cluster's rosters, presence and messages, shared by
//! its nodes), [`muc`] (each node's text conferencing) and [`trunk`] (IM&P's end of CUCM's
//! presence trunk, SIP 5060).
//!
//! Session keys and one-time passwords are 128-bit values of a ChaCha20 stream ([`SecretRng`]):
//! from the run's seed in simulation, so a run replays exactly, and from the OS random source
//! in live mode (issue 13), so none can be guessed or derived from another. A one-time
//! password is bound to the user and the session that asked for it, is used once and expires
//! after [`OTP_LIFETIME`]. It is good on every node of the cluster, as the real cluster's
//! replicated database makes it (the client gets it from the node it signed in to and
//! presents it to its home node, SPEC HA1).

pub mod hub;
pub mod muc;
pub mod router;
pub mod sipgw;
pub mod soap;
pub mod trunk;
pub mod xmpp;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use std::time::Duration;

use uclab_net::{Entropy, SecretRng};

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
    /// Expressway-C's addresses: one XMPP connection per client behind the edge, so the
    /// per-peer connection cap does not apply to them (issue 17).
    pub trusted_peers: Vec<std::net::IpAddr>,
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
