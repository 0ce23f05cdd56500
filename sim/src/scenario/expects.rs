//! Expectations (`[[expect]]`): which client events must (or must not) happen, and when.

use std::time::Duration;

use super::check::Names;
use super::file::ExpectSpec;
use super::model::Expect;
use super::read::did_you_mean;
use super::{CheckError, EVENT_KINDS, Src};
use crate::time::parse_duration;

/// The expectations whose times read.
pub(super) fn expects(
    specs: &[ExpectSpec],
    src: &Src<'_>,
    names: &Names<'_>,
    sip_users: &[String],
    errs: &mut Vec<CheckError>,
) -> Vec<Expect> {
    let all: Vec<&str> =
        names.clients.iter().copied().chain(sip_users.iter().map(String::as_str)).collect();
    let mut expects = Vec::new();
    for e in specs {
        let known = match e.client.get_ref().strip_suffix('*') {
            Some(prefix) => all.iter().any(|c| c.starts_with(prefix)),
            None => all.contains(&e.client.get_ref().as_str()),
        };
        if !known {
            errs.push(
                src.err(e.client.span().start, format!("unknown client `{}`", e.client.get_ref())),
            );
        }
        if !EVENT_KINDS.contains(&e.event.get_ref().as_str()) {
            errs.push(src.err(
                e.event.span().start,
                format!(
                    "unknown event `{}` (known: {})",
                    e.event.get_ref(),
                    EVENT_KINDS.join(", ")
                ),
            ));
        }
        // Issue 14: a field the event never carries can never match.
        if let Some(known) = uclab_client::event::ClientEvent::field_names(e.event.get_ref()) {
            for k in e.fields.keys().filter(|k| !known.contains(&k.get_ref().as_str())) {
                let hint = did_you_mean(k.get_ref(), &known)
                    .map(|m| format!("; did you mean `{m}`?"))
                    .unwrap_or_default();
                errs.push(src.err(
                    k.span().start,
                    format!(
                        "`{}` events have no field `{}` (they have {}){hint}",
                        e.event.get_ref(),
                        k.get_ref(),
                        known.join(", ")
                    ),
                ));
            }
        }
        if e.absent && e.count.is_some() {
            errs.push(src.err(
                e.event.span().start,
                "`count` and `absent` do not go together (absent is count 0)",
            ));
        }
        let after = match &e.after {
            Some(a) => match parse_duration(a.get_ref()) {
                Ok(d) => d,
                Err(m) => {
                    errs.push(src.err(a.span().start, m));
                    Duration::ZERO
                }
            },
            None => Duration::ZERO,
        };
        match parse_duration(e.within.get_ref()) {
            Ok(within) if within < after => {
                errs.push(src.err(e.within.span().start, "`within` is before `after`"));
            }
            Ok(within) => expects.push(Expect {
                client: e.client.get_ref().clone(),
                event: e.event.get_ref().clone(),
                fields: e.fields.iter().map(|(k, v)| (k.get_ref().clone(), v.clone())).collect(),
                within,
                after,
                absent: e.absent,
                count: e.count,
                line: src.pos(e.client.span().start).0,
            }),
            Err(m) => errs.push(src.err(e.within.span().start, m)),
        }
    }
    expects
}
