//! SPEC CAP2 reproduced on the IM&P router: a cluster of users, each with a ring of contacts,
//! signed in on three subclusters (HA3 balanced assignment), each changing state once at a
//! seeded moment of one hour. Every notification the router sends is counted by second and by
//! the subcluster of the watcher it goes to, whose node delivers it.
//!
//! The turmoil simulation cannot step thousands of hosts through a simulated hour (it would
//! tick every host each millisecond), so this drives the mocks' router itself
//! (`uclab_mocks::imp::router`), the code the IM&P nodes run, in event order. A bench like
//! [`crate::regbench`], so it lives here rather than in the mocks; `cargo xtask bench cap2`
//! runs it.

use std::time::Duration;

use uclab_mocks::imp::router::{Limits, Router, SessionId};
use uclab_proto::xmpp::Element;

/// Subclusters of the modelled cluster (HA3: at most three pairs).
pub const SUBCLUSTERS: usize = 3;

/// What one run counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cap2 {
    /// Users in the cluster.
    pub users: usize,
    /// Contacts per user.
    pub contacts: usize,
    /// Length of the run, seconds (each user changes once in it).
    pub seconds: u64,
    /// Presence notifications the router delivered to watchers.
    pub notifications: u64,
    /// The same, by the watcher's subcluster.
    pub per_subcluster: [u64; SUBCLUSTERS],
    /// The busiest second's notifications.
    pub peak_second: u64,
}

impl Cap2 {
    /// Mean notifications per second for the cluster, rounded up as the design guide quotes
    /// its figures (20.8 → 21).
    pub fn cluster_rate(&self) -> u64 {
        self.notifications.div_ceil(self.seconds)
    }

    /// Mean notifications per second of each subcluster pair, rounded up.
    pub fn pair_rates(&self) -> [u64; SUBCLUSTERS] {
        self.per_subcluster.map(|n| n.div_ceil(self.seconds))
    }
}

/// SplitMix64: the seeded moments of the changes.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Runs CAP2: `users` users, each watching the next `contacts` users (a ring), all signed in,
/// each changing state once at a seeded moment within `seconds`.
///
/// # Panics
/// If `contacts` is not below `users` or a list limit refuses the ring (the limits are set
/// to fit it).
pub fn cap2(users: usize, contacts: usize, seconds: u64, seed: u64) -> Cap2 {
    assert!(contacts < users && seconds > 0, "a ring needs fewer contacts than users");
    let domain = "example.com";
    // The administrator raised the IMP3 list limits to fit (500 is above their default).
    let limits = Limits { contacts: users, watchers: users };
    let mut router = Router::new(domain, limits);
    let name = |k: usize| format!("u{k:05}");
    for k in 0..users {
        for d in 1..=contacts {
            assert!(router.provision(&name(k), &name((k + d) % users)), "ring within the limits");
        }
    }
    // Balanced assignment (HA3): user k's home is in subcluster k mod 3.
    // Session k is user k's one client.
    let full = |k: usize| format!("{}@{domain}/jabber", name(k));
    for k in 0..users {
        router.bind(&full(k), k as SessionId);
    }
    for k in 0..users {
        router.handle(Element::new("presence").attr("from", &full(k)), Duration::ZERO);
    }
    while router.poll_output().is_some() {}
    let start = router.counters().presence_notifications;

    let mut rng = seed;
    let mut changes: Vec<(u64, usize)> =
        (0..users).map(|k| (splitmix(&mut rng) % (seconds * 1_000_000), k)).collect();
    changes.sort_unstable();
    let (mut per_subcluster, mut second, mut this_second, mut peak) = ([0; SUBCLUSTERS], 0, 0, 0);
    for (at_us, k) in changes {
        let at = Duration::from_micros(at_us);
        if at.as_secs() != second {
            peak = peak.max(this_second);
            (second, this_second) = (at.as_secs(), 0);
        }
        let p = Element::new("presence")
            .attr("from", &full(k))
            .child(Element::new("show").text_node("away"));
        router.handle(p, at);
        while let Some((session, s)) = router.poll_output() {
            let w = usize::try_from(session).unwrap_or(usize::MAX);
            if s.name == "presence" && s.get("from").is_some_and(|f| f != full(w)) {
                per_subcluster[w % SUBCLUSTERS] += 1;
                this_second += 1;
            }
        }
    }
    let notifications = router.counters().presence_notifications - start;
    debug_assert_eq!(notifications, per_subcluster.iter().sum::<u64>());
    Cap2 {
        users,
        contacts,
        seconds,
        notifications,
        per_subcluster,
        peak_second: peak.max(this_second),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap2_75_contacts_give_21_per_second_and_7_per_pair() {
        let r = cap2(1_000, 75, 3_600, 1);
        assert_eq!(r.notifications, 75_000, "each change reaches every watcher once");
        assert_eq!(r.cluster_rate(), 21);
        assert_eq!(r.pair_rates(), [7, 7, 7]);
        assert_eq!(r.per_subcluster, [334 * 75, 333 * 75, 333 * 75]);
        assert!(r.peak_second >= 75, "a second with a change has all its watchers' notices");
    }

    #[test]
    fn cap2_500_contacts_give_139_per_second_and_47_per_pair() {
        let r = cap2(1_000, 500, 3_600, 2);
        assert_eq!(r.notifications, 500_000);
        assert_eq!(r.cluster_rate(), 139);
        assert_eq!(r.pair_rates(), [47, 47, 47]);
    }

    #[test]
    fn cap3_budget_leaves_65_contacts_per_other_user() {
        use uclab_mocks::imp::router::{CONTACT_BUDGET, contacts_left};
        assert_eq!(CONTACT_BUDGET, 3_375_000);
        assert_eq!(contacts_left(1_000, 500), Some(65));
        assert_eq!(contacts_left(0, 0), Some(75));
        assert_eq!(contacts_left(45_000, 1), None, "no other users");
        assert_eq!(contacts_left(10_000, 400), None, "over budget");
    }
}
