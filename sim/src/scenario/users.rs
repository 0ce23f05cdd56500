//! Checks over the whole cluster: IM&P clusters and subclusters (SPEC HA3), the presence
//! trunk (SPEC CC7), then the users (`[[user]]`, and those of populations), their BLF speed
//! dials (SPEC CC6) and contact lists (SPEC IMP3, CAP3).

use std::collections::{BTreeMap, BTreeSet};

use super::check::valid_name;
use super::file::{CssSpec, NodeSpec, UserSpec};
use super::model::{Assignment, Node, NodeKind, User};
use super::{CheckError, Item, Src};

/// Numbers each IM&P cluster's subclusters and gives every member the first one's
/// assignment; `items` are the node sections, for where to report.
pub(super) fn imp_clusters(
    nodes: &mut [Node],
    items: &[Item<'_, NodeSpec>],
    errs: &mut Vec<CheckError>,
) {
    // IM&P clusters (SPEC HA3): at most six nodes in subclusters of at most two. Nodes that
    // name no subcluster pair up in declaration order (1, 1, 2, 2, 3, 3); the assignment is
    // the first member's.
    let imp_clusters: BTreeSet<String> = nodes
        .iter()
        .filter_map(|n| match &n.kind {
            NodeKind::Imp(c) => Some(c.cluster.clone()),
            _ => None,
        })
        .collect();
    // SPEC FED2: with more than one IM&P cluster the clusters peer in full mesh.
    if imp_clusters.len() > 1 {
        for n in nodes.iter_mut() {
            if let NodeKind::Imp(c) = &mut n.kind {
                c.peering = true;
            }
        }
    }
    for cluster in &imp_clusters {
        let members: Vec<usize> = (0..nodes.len())
            .filter(|&k| matches!(&nodes[k].kind, NodeKind::Imp(c) if c.cluster == *cluster))
            .collect();
        let first = &nodes[members[0]].name;
        let first = items.iter().find(|i| i.spec.name.get_ref() == first);
        let first = first.map(|i| (i.src, i.spec.name.span().start));
        let assignment = match &nodes[members[0]].kind {
            NodeKind::Imp(c) => c.assignment,
            _ => Assignment::Balanced,
        };
        let explicit = members
            .iter()
            .filter(|&&k| matches!(&nodes[k].kind, NodeKind::Imp(c) if c.subcluster != 0))
            .count();
        if explicit != 0
            && explicit != members.len()
            && let Some((src, pos)) = first
        {
            errs.push(src.err(
                pos,
                format!("IM&P cluster `{cluster}`: give every node a `subcluster`, or none"),
            ));
        }
        let mut per_sub: BTreeMap<u8, usize> = BTreeMap::new();
        for (j, &k) in members.iter().enumerate() {
            if let NodeKind::Imp(c) = &mut nodes[k].kind {
                if c.subcluster == 0 {
                    c.subcluster = (j / 2 + 1).min(3) as u8;
                }
                c.assignment = assignment;
                *per_sub.entry(c.subcluster).or_default() += 1;
            }
        }
        let too_many = members.len() > 6 || per_sub.values().any(|&n| n > 2);
        if too_many && let Some((src, pos)) = first {
            errs.push(src.err(
                pos,
                format!(
                    "IM&P cluster `{cluster}` has {} nodes: at most 6, two per subcluster (SPEC HA3)",
                    members.len()
                ),
            ));
        }
    }
}

/// Each `presence_trunk` names an IM&P node.
pub(super) fn presence_trunks(
    nodes: &[Node],
    items: &[Item<'_, NodeSpec>],
    errs: &mut Vec<CheckError>,
) {
    // SPEC CC7: the presence trunk names an IM&P node.
    for i in items {
        let Some(t) = &i.spec.presence_trunk else { continue };
        let imp =
            nodes.iter().any(|n| &n.name == t.get_ref() && matches!(n.kind, NodeKind::Imp(_)));
        if !imp {
            errs.push(i.src.err(
                t.span().start,
                format!("presence_trunk `{}` is not an imp node", t.get_ref()),
            ));
        }
    }
}

/// The users, with the fields they leave out filled in; then their BLF speed dials and
/// contact lists checked over the whole scenario (errors about the whole at `src`'s start).
pub(super) fn users(
    items: &[Item<'_, UserSpec>],
    nodes: &[Node],
    domain: &str,
    src: &Src<'_>,
    errs: &mut Vec<CheckError>,
) -> Vec<User> {
    // Users: each on an existing cluster, ids unique.
    let clusters: BTreeSet<String> = nodes
        .iter()
        .filter_map(|n| match &n.kind {
            NodeKind::Cucm(c) => Some(c.cluster.clone()),
            _ => None,
        })
        .collect();
    let mut user_out = Vec::new();
    for i in items {
        let u = &i.spec;
        if !valid_name(u.id.get_ref()) {
            errs.push(i.src.err(u.id.span().start, format!("bad user id `{}`", u.id.get_ref())));
        }
        if !clusters.contains(u.cluster.get_ref()) {
            errs.push(i.src.err(
                u.cluster.span().start,
                format!("unknown cluster `{}` (no cucm node has it)", u.cluster.get_ref()),
            ));
        }
        let id = u.id.get_ref().clone();
        let cap = |s: &str| {
            s.chars()
                .take(1)
                .flat_map(char::to_uppercase)
                .chain(s.chars().skip(1))
                .collect::<String>()
        };
        let imp_clusters: BTreeSet<&str> = nodes
            .iter()
            .filter_map(|n| match &n.kind {
                NodeKind::Imp(c) => Some(c.cluster.as_str()),
                _ => None,
            })
            .collect();
        if let Some(c) = &u.imp_cluster
            && !imp_clusters.contains(c.get_ref().as_str())
        {
            errs.push(i.src.err(
                c.span().start,
                format!("unknown imp_cluster `{}` (no imp node has it)", c.get_ref()),
            ));
        }
        user_out.push(User {
            cluster: u.cluster.get_ref().clone(),
            imp_cluster: u.imp_cluster.as_ref().map(|c| c.get_ref().clone()),
            password: u.password.clone().unwrap_or_else(|| "lab".into()),
            first_name: u.first_name.clone().unwrap_or_else(|| cap(&id)),
            last_name: u.last_name.clone().unwrap_or_else(|| "Lab".into()),
            extension: u.extension.clone().unwrap_or_default(),
            email: u.email.clone().unwrap_or_else(|| format!("{id}@{domain}")),
            devices: u
                .devices
                .clone()
                .unwrap_or_else(|| vec![format!("CSF{}", id.to_ascii_uppercase())]),
            config_file: u.config_file.clone(),
            contacts: u.contacts.iter().map(|c| c.get_ref().clone()).collect(),
            partition: u.partition.as_ref().map_or_else(
                || uclab_mocks::cucm::sip::DEFAULT_PARTITION.into(),
                |p| p.get_ref().clone(),
            ),
            subscribe_css: match u.subscribe_css.as_ref().map(|c| (c.span().start, c.get_ref())) {
                None => Some(vec![uclab_mocks::cucm::sip::DEFAULT_PARTITION.into()]),
                Some((_, CssSpec::List(l))) => Some(l.clone()),
                Some((_, CssSpec::Name(n))) if n == "<None>" => None,
                Some((at, CssSpec::Name(n))) => {
                    errs.push(i.src.err(
                        at,
                        format!("subscribe_css `{n}`: a list of partitions, or \"<None>\""),
                    ));
                    None
                }
            },
            presence_group: u.presence_group.as_ref().map_or_else(
                || uclab_mocks::cucm::sip::DEFAULT_PRESENCE_GROUP.into(),
                |g| g.get_ref().clone(),
            ),
            blf: u.blf.iter().map(|b| b.get_ref().clone()).collect(),
            id,
        });
        for b in &u.blf {
            if !uclab_mocks::cucm::sip::valid_extension(b.get_ref()) {
                errs.push(i.src.err(b.span().start, format!("bad BLF number `{}`", b.get_ref())));
            }
        }
    }
    // SPEC CC6: at most 30,000 BLF speed dials per cluster.
    let mut dials: BTreeMap<&str, usize> = BTreeMap::new();
    for u in &user_out {
        *dials.entry(u.cluster.as_str()).or_default() += u.blf.len();
    }
    for (c, n) in dials.into_iter().filter(|(_, n)| *n > uclab_mocks::cucm::sip::MAX_BLF) {
        errs.push(src.err(
            0,
            format!(
                "cluster `{c}` has {n} BLF speed dials; at most {} per cluster (SPEC CC6)",
                uclab_mocks::cucm::sip::MAX_BLF
            ),
        ));
    }
    // Contacts name users, and stay within the IM&P list limits (SPEC IMP3).
    let limits = nodes.iter().find_map(|n| match &n.kind {
        NodeKind::Imp(c) => Some(c.limits),
        _ => None,
    });
    let ids: BTreeSet<&str> = items.iter().map(|i| i.spec.id.get_ref().as_str()).collect();
    let mut watchers: BTreeMap<&str, usize> = BTreeMap::new();
    for i in items {
        for c in &i.spec.contacts {
            if !ids.contains(c.get_ref().as_str()) || c.get_ref() == i.spec.id.get_ref() {
                errs.push(i.src.err(c.span().start, format!("unknown contact `{}`", c.get_ref())));
            }
            *watchers.entry(c.get_ref().as_str()).or_default() += 1;
        }
        if let Some(l) = limits.filter(|l| i.spec.contacts.len() > l.contacts) {
            errs.push(i.src.err(
                i.spec.id.span().start,
                format!(
                    "user `{}` has {} contacts; the contact list limit is {}",
                    i.spec.id.get_ref(),
                    i.spec.contacts.len(),
                    l.contacts
                ),
            ));
        }
    }
    // SPEC CAP3: an IM&P cluster's contact entries (every user's contacts) stay within its
    // budget of 45,000 users × 75.
    let entries: usize = items.iter().map(|i| i.spec.contacts.len()).sum();
    if limits.is_some() && entries > uclab_mocks::imp::router::CONTACT_BUDGET {
        errs.push(src.err(
            0,
            format!(
                "the IM&P cluster holds {entries} contact entries; its budget is {} \
                 ({} users × {}, SPEC CAP3)",
                uclab_mocks::imp::router::CONTACT_BUDGET,
                uclab_mocks::imp::router::BUDGET_USERS,
                uclab_mocks::imp::router::BUDGET_CONTACTS,
            ),
        ));
    }
    for i in items {
        let n = watchers.get(i.spec.id.get_ref().as_str()).copied().unwrap_or(0);
        if let Some(l) = limits.filter(|l| n > l.watchers) {
            errs.push(i.src.err(
                i.spec.id.span().start,
                format!(
                    "user `{}` has {n} watchers; the watcher list limit is {}",
                    i.spec.id.get_ref(),
                    l.watchers
                ),
            ));
        }
    }

    user_out
}
