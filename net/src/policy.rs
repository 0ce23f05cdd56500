//! Firewall zones, rules between zones, and faults (blackholed links, loss).
//!
//! The policy is consulted by every `Net` when a socket sends or connects, so a rule or a fault
//! changed by the scenario timeline takes effect for the next packet. Like a real firewall it
//! is stateful: traffic allowed one way opens the way back for the replies of that flow
//! (connection tracking), so a DNS answer from the internet reaches the inside server that
//! asked, although the internet may not start anything towards the inside.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

/// What a firewall does with traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// Let it through.
    Allow,
    /// Refuse it visibly: TCP RST for a connect, ICMP port unreachable for UDP.
    Reject,
    /// Discard it silently: a connect hangs until the caller's own timeout.
    Drop,
}

/// A named address range (e.g. inside, dmz, internet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Zone {
    /// Zone name, referenced by rules.
    pub name: String,
    /// Network address.
    pub net: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl Zone {
    /// Whether `ip` lies inside the zone.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let p = u32::from(self.prefix.min(32));
                let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let p = u32::from(self.prefix.min(128));
                let mask = if p == 0 { 0 } else { u128::MAX << (128 - p) };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// A firewall rule from one zone to another. `*` matches any zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Source zone name or `*`.
    pub from: String,
    /// Destination zone name or `*`.
    pub to: String,
    /// Destination port the rule is limited to, if any.
    pub port: Option<u16>,
    /// Transport the rule is limited to (`"tcp"`/`"udp"`), if any.
    pub proto: Option<String>,
    /// What happens to matching traffic.
    pub action: Action,
}

/// Errors building a policy.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A rule names a zone that does not exist.
    #[error("rule refers to unknown zone `{0}`")]
    UnknownZone(String),
}

#[derive(Debug, Default)]
struct Inner {
    zones: Vec<Zone>,
    rules: Vec<Rule>,
    blackholes: BTreeSet<(IpAddr, IpAddr)>,
    loss: BTreeMap<(IpAddr, IpAddr), f64>,
    /// Allowed flows `(proto, initiator, responder)`, whose replies are allowed too.
    conntrack: BTreeSet<(String, SocketAddr, SocketAddr)>,
    /// Hosts moved to another zone than their address says (a laptop leaving the office).
    moved: BTreeMap<IpAddr, String>,
}

impl Inner {
    fn zone(&self, ip: IpAddr) -> Option<&str> {
        match self.moved.get(&ip) {
            Some(z) => Some(z.as_str()),
            None => self.zones.iter().find(|z| z.contains(ip)).map(|z| z.name.as_str()),
        }
    }
}

/// Tracked flows kept at most; the table is cleared when full (a long run loses only the
/// return path of flows idle since then, like an expired conntrack entry).
const CONNTRACK_MAX: usize = 1 << 16;

/// The shared firewall and fault state of a world.
#[derive(Clone, Debug, Default)]
pub struct Policy(Arc<Mutex<Inner>>);

fn pair(a: IpAddr, b: IpAddr) -> (IpAddr, IpAddr) {
    if a <= b { (a, b) } else { (b, a) }
}

impl Policy {
    /// A policy with zones and rules; traffic that matches no rule is allowed.
    pub fn new(zones: Vec<Zone>, rules: Vec<Rule>) -> Result<Self, PolicyError> {
        for r in &rules {
            for z in [&r.from, &r.to] {
                if z != "*" && !zones.iter().any(|zone| &zone.name == z) {
                    return Err(PolicyError::UnknownZone(z.clone()));
                }
            }
        }
        Ok(Self(Arc::new(Mutex::new(Inner { zones, rules, ..Inner::default() }))))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The zone an address is in, if any (first zone that contains it).
    pub fn zone_of(&self, ip: IpAddr) -> Option<String> {
        self.lock().zone(ip).map(str::to_owned)
    }

    /// From now on `ip` is in `zone`, whatever its address says (SPEC SD8: a client moves
    /// between the inside and the internet). Its tracked flows are forgotten: the old path is
    /// gone.
    pub fn move_host(&self, ip: IpAddr, zone: &str) {
        let mut g = self.lock();
        g.moved.insert(ip, zone.to_owned());
        g.conntrack.retain(|(_, a, b)| a.ip() != ip && b.ip() != ip);
    }

    /// The verdict for traffic `src → dst` over `proto` (`"tcp"`/`"udp"`). An allowed flow is
    /// remembered so that its replies are allowed.
    pub fn verdict(&self, src: SocketAddr, dst: SocketAddr, proto: &str) -> Action {
        let mut g = self.lock();
        if g.blackholes.contains(&pair(src.ip(), dst.ip())) {
            return Action::Drop;
        }
        if g.conntrack.contains(&(proto.to_owned(), dst, src)) {
            return Action::Allow;
        }
        let (zs, zd) = (g.zone(src.ip()), g.zone(dst.ip()));
        let matches = |pat: &str, z: Option<&str>| pat == "*" || Some(pat) == z;
        let action = g
            .rules
            .iter()
            .find(|r| {
                matches(&r.from, zs)
                    && matches(&r.to, zd)
                    && r.port.is_none_or(|p| p == dst.port())
                    && r.proto.as_deref().is_none_or(|p| p == proto)
            })
            .map_or(Action::Allow, |r| r.action);
        if action == Action::Allow {
            if g.conntrack.len() >= CONNTRACK_MAX {
                g.conntrack.clear();
            }
            g.conntrack.insert((proto.to_owned(), src, dst));
        }
        action
    }

    /// Silently drops everything between `a` and `b` (both ways) until [`Policy::heal`].
    pub fn blackhole(&self, a: IpAddr, b: IpAddr) {
        self.lock().blackholes.insert(pair(a, b));
    }

    /// Ends a blackhole between `a` and `b`.
    pub fn heal(&self, a: IpAddr, b: IpAddr) {
        self.lock().blackholes.remove(&pair(a, b));
    }

    /// Sets the probability that a UDP datagram between `a` and `b` is lost (0 clears it).
    pub fn set_loss(&self, a: IpAddr, b: IpAddr, p: f64) {
        let mut g = self.lock();
        if p <= 0.0 {
            g.loss.remove(&pair(a, b));
        } else {
            g.loss.insert(pair(a, b), p.min(1.0));
        }
    }

    /// Whether `a` and `b` are blackholed from each other.
    pub fn blackholed(&self, a: IpAddr, b: IpAddr) -> bool {
        self.lock().blackholes.contains(&pair(a, b))
    }

    /// The loss probability between `a` and `b`.
    pub fn loss(&self, a: IpAddr, b: IpAddr) -> f64 {
        self.lock().loss.get(&pair(a, b)).copied().unwrap_or(0.0)
    }

    /// Adds a rule in front of the existing ones (timeline actions).
    pub fn push_front(&self, rule: Rule) {
        self.lock().rules.insert(0, rule);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn policy() -> Policy {
        let zones = vec![
            Zone { name: "inside".into(), net: ip("10.1.0.0"), prefix: 16 },
            Zone { name: "internet".into(), net: ip("203.0.113.0"), prefix: 24 },
        ];
        let rules = vec![
            Rule {
                from: "internet".into(),
                to: "inside".into(),
                port: None,
                proto: None,
                action: Action::Drop,
            },
            Rule {
                from: "inside".into(),
                to: "internet".into(),
                port: Some(25),
                proto: Some("tcp".into()),
                action: Action::Reject,
            },
        ];
        Policy::new(zones, rules).unwrap()
    }

    #[test]
    fn rules_match_zone_port_and_proto() {
        let p = policy();
        assert_eq!(p.verdict(sa("203.0.113.5:5000"), sa("10.1.0.9:53"), "udp"), Action::Drop);
        assert_eq!(p.verdict(sa("10.1.0.9:5000"), sa("203.0.113.5:25"), "tcp"), Action::Reject);
        assert_eq!(p.verdict(sa("10.1.0.9:5000"), sa("203.0.113.5:25"), "udp"), Action::Allow);
        assert_eq!(p.verdict(sa("10.1.0.9:5000"), sa("10.1.0.8:25"), "tcp"), Action::Allow);
    }

    #[test]
    fn replies_of_allowed_flows_pass_the_other_way() {
        let p = policy();
        let (inside, outside) = (sa("10.1.0.53:40000"), sa("203.0.113.53:53"));
        // Unsolicited: dropped.
        assert_eq!(p.verdict(outside, inside, "udp"), Action::Drop);
        // Inside asks first; the answer comes back; another port still may not.
        assert_eq!(p.verdict(inside, outside, "udp"), Action::Allow);
        assert_eq!(p.verdict(outside, inside, "udp"), Action::Allow);
        assert_eq!(p.verdict(outside, sa("10.1.0.53:40001"), "udp"), Action::Drop);
        assert_eq!(p.verdict(outside, inside, "tcp"), Action::Drop);
    }

    #[test]
    fn sd8_a_moved_host_is_judged_by_its_new_zone() {
        let p = policy();
        let (laptop, dns) = (sa("10.1.0.100:5000"), sa("10.1.0.53:53"));
        assert_eq!(p.verdict(laptop, dns, "udp"), Action::Allow);
        assert_eq!(p.verdict(dns, laptop, "udp"), Action::Allow, "the reply");
        p.move_host(laptop.ip(), "internet");
        assert_eq!(p.zone_of(laptop.ip()).as_deref(), Some("internet"));
        // From the internet the inside is closed, even for the flow it had before.
        assert_eq!(p.verdict(laptop, dns, "udp"), Action::Drop);
        p.move_host(laptop.ip(), "inside");
        assert_eq!(p.verdict(laptop, dns, "udp"), Action::Allow);
    }

    #[test]
    fn blackhole_wins_and_heals() {
        let p = policy();
        p.blackhole(ip("10.1.0.8"), ip("10.1.0.9"));
        assert_eq!(p.verdict(sa("10.1.0.9:1"), sa("10.1.0.8:1"), "tcp"), Action::Drop);
        p.heal(ip("10.1.0.9"), ip("10.1.0.8"));
        assert_eq!(p.verdict(sa("10.1.0.9:1"), sa("10.1.0.8:1"), "tcp"), Action::Allow);
    }

    #[test]
    fn unknown_zone_in_rule_is_an_error() {
        let r = Rule {
            from: "dmz".into(),
            to: "*".into(),
            port: None,
            proto: None,
            action: Action::Allow,
        };
        assert!(
            matches!(Policy::new(vec![], vec![r]), Err(PolicyError::UnknownZone(z)) if z == "dmz")
        );
    }
}
