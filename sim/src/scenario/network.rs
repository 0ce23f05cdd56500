//! The network sections: zones (`[[zone]]`) and firewall rules (`[[rule]]`).

use uclab_net::{Action, Rule, Zone};

use super::check::{Names, check_proto, parse_action, parse_subnet};
use super::file::{RuleSpec, ZoneSpec};
use super::{CheckError, Item};

/// The zones whose subnet reads.
pub(super) fn zones(zones: &[Item<'_, ZoneSpec>], errs: &mut Vec<CheckError>) -> Vec<Zone> {
    let mut zone_out = Vec::new();
    for i in zones {
        let z = &i.spec;
        match parse_subnet(z.subnet.get_ref()) {
            Ok((net, prefix)) => {
                zone_out.push(Zone { name: z.name.get_ref().clone(), net, prefix })
            }
            Err(m) => errs.push(i.src.err(z.subnet.span().start, m)),
        }
    }
    zone_out
}

/// The firewall rules, in order (first match wins).
pub(super) fn rules(
    rules: &[Item<'_, RuleSpec>],
    names: &Names<'_>,
    errs: &mut Vec<CheckError>,
) -> Vec<Rule> {
    let mut rule_out = Vec::new();
    for i in rules {
        let r = &i.spec;
        names.check_zone(errs, i.src, &r.from);
        names.check_zone(errs, i.src, &r.to);
        let action = match parse_action(&r.verdict) {
            Ok(a) => a,
            Err(m) => {
                errs.push(i.src.err(r.verdict.span().start, m));
                Action::Allow
            }
        };
        let proto = r.proto.as_ref().map(|p| check_proto(errs, i.src, p));
        rule_out.push(Rule {
            from: r.from.get_ref().clone(),
            to: r.to.get_ref().clone(),
            port: r.port,
            proto,
            action,
        });
    }
    rule_out
}
