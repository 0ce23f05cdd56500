//! SRV target selection by RFC 2782 (SPEC SD6).
//!
//! "A client MUST attempt to contact the target host with the lowest-numbered priority it can
//! reach; target hosts with the same priority SHOULD be tried in an order defined by the weight
//! field." Within a priority the running-sum algorithm picks each next target, with weight-0
//! records placed first so they keep a small chance of selection.

use std::fmt;

/// One SRV target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrvTarget {
    /// Priority (lower first).
    pub priority: u16,
    /// Weight within the priority.
    pub weight: u16,
    /// Port.
    pub port: u16,
    /// Target host name (no trailing dot).
    pub target: String,
}

impl fmt::Display for SrvTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.target, self.port)
    }
}

/// What an SRV answer says about a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SrvAnswer {
    /// Targets in the order to try them.
    Targets(Vec<SrvTarget>),
    /// RFC 2782: a single record with target "." — "the service is decidedly not available".
    NotAvailable,
    /// No records.
    Empty,
}

/// Orders `records` for contact by RFC 2782. `below(n)` must return a uniform value in `0..n`
/// (the seeded RNG in production, a script in tests).
pub fn order(mut records: Vec<SrvTarget>, mut below: impl FnMut(u64) -> u64) -> SrvAnswer {
    if records.is_empty() {
        return SrvAnswer::Empty;
    }
    if records.len() == 1 && (records[0].target.is_empty() || records[0].target == ".") {
        return SrvAnswer::NotAvailable;
    }
    records.retain(|r| !(r.target.is_empty() || r.target == "."));
    // Stable sort by priority keeps answer order within a priority as the starting order.
    records.sort_by_key(|r| r.priority);
    let mut out = Vec::with_capacity(records.len());
    let mut rest = records.as_slice();
    while let Some(first) = rest.first() {
        let n = rest.iter().take_while(|r| r.priority == first.priority).count();
        let (group, tail) = rest.split_at(n);
        // "arrange all SRV RRs (that have not been ordered yet) in any order, except that all
        // those with weight 0 are placed at the beginning of the list."
        let mut group: Vec<SrvTarget> = group.iter().filter(|r| r.weight == 0).cloned().collect();
        group.extend(rest[..n].iter().filter(|r| r.weight != 0).cloned());
        while !group.is_empty() {
            let sum: u64 = group.iter().map(|r| u64::from(r.weight)).sum();
            // "choose a uniform random number between 0 and the sum computed (inclusive)"
            let pick = below(sum + 1);
            let mut running = 0u64;
            let idx = group
                .iter()
                .position(|r| {
                    running += u64::from(r.weight);
                    running >= pick
                })
                .unwrap_or(0);
            out.push(group.remove(idx));
        }
        rest = tail;
    }
    SrvAnswer::Targets(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(priority: u16, weight: u16, target: &str) -> SrvTarget {
        SrvTarget { priority, weight, port: 8443, target: target.into() }
    }

    #[test]
    fn sd6_priority_first_then_weight() {
        // Cisco's example: unsorted priorities (shared/corpora/dns/cisco_jabber_srv_examples.zone).
        let recs = vec![t(6, 30, "cucm3"), t(2, 20, "cucm2"), t(1, 5, "cucm1")];
        let SrvAnswer::Targets(o) = order(recs, |_| 0) else { panic!() };
        let names: Vec<_> = o.iter().map(|r| r.target.as_str()).collect();
        assert_eq!(names, ["cucm1", "cucm2", "cucm3"]);
    }

    #[test]
    fn sd6_weight_running_sum() {
        let recs = vec![t(1, 10, "a"), t(1, 30, "b")];
        // sum = 40; pick 11 → running sums 10, 40 → b first.
        let SrvAnswer::Targets(o) = order(recs.clone(), |_| 11) else { panic!() };
        assert_eq!(o[0].target, "b");
        let SrvAnswer::Targets(o) = order(recs, |_| 10) else { panic!() };
        assert_eq!(o[0].target, "a");
    }

    #[test]
    fn sd6_weight_zero_first_in_list_and_selectable() {
        let recs = vec![t(1, 50, "heavy"), t(1, 0, "zero")];
        // pick 0 selects the weight-0 record, which was placed first.
        let SrvAnswer::Targets(o) = order(recs, |_| 0) else { panic!() };
        assert_eq!(o[0].target, "zero");
    }

    #[test]
    fn sd6_weights_give_proportional_choice() {
        // 1:3 weights → the heavier one first about 3/4 of the time with a fair source.
        let mut x: u64 = 12345;
        let mut first_b = 0;
        for _ in 0..4000 {
            let recs = vec![t(1, 10, "a"), t(1, 30, "b")];
            let SrvAnswer::Targets(o) = order(recs, |n| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (x >> 33) % n
            }) else {
                panic!()
            };
            first_b += usize::from(o[0].target == "b");
        }
        assert!((2800..3200).contains(&first_b), "{first_b}");
    }

    #[test]
    fn dot_target_means_not_available() {
        assert_eq!(order(vec![t(0, 0, ".")], |_| 0), SrvAnswer::NotAvailable);
        assert_eq!(order(vec![], |_| 0), SrvAnswer::Empty);
    }
}
