//! The scenario's own settings: `duration`, `network.latency`, `epoch`, its `spec` ids and
//! `name`.

use std::time::Duration;

use super::check::valid_name;
use super::file::{EpochSpec, File, S};
use super::{CheckError, Src};
use crate::time::{days_from_civil, parse_duration};

/// Default scenario epoch: Monday 2026-01-05 09:00:00 UTC.
const DEFAULT_EPOCH: Duration = Duration::from_secs(20_458 * 86_400 + 9 * 3600);

/// The times a scenario runs by.
pub(super) struct Settings {
    pub(super) duration: Duration,
    pub(super) latency: Duration,
    pub(super) epoch: Duration,
}

/// The settings of `file` (read from `src`), with the latency the merge chose; the spec ids
/// and the name are checked too.
pub(super) fn settings(
    file: &File,
    latency: Option<(&Src<'_>, S<String>)>,
    src: &Src<'_>,
    errs: &mut Vec<CheckError>,
) -> Settings {
    let duration = match &file.duration {
        Some(d) => parse_duration(d.get_ref()).unwrap_or_else(|m| {
            errs.push(src.err(d.span().start, m));
            Duration::ZERO
        }),
        None => Duration::from_secs(120),
    };
    let latency = match latency {
        Some((s, l)) => parse_duration(l.get_ref()).unwrap_or_else(|m| {
            errs.push(s.err(l.span().start, m));
            Duration::ZERO
        }),
        None => Duration::from_millis(1),
    };
    let epoch = match &file.epoch {
        None => DEFAULT_EPOCH,
        Some(dt) => match match dt.get_ref() {
            EpochSpec::Datetime(d) => epoch_of(d),
            EpochSpec::Text(t) => t
                .parse::<toml::value::Datetime>()
                .map_err(|_| format!("`{t}` is not an RFC 3339 time (e.g. 2026-01-05T09:00:00Z)"))
                .and_then(|d| epoch_of(&d)),
        } {
            Ok(e) => e,
            Err(m) => {
                errs.push(src.err(dt.span().start, m));
                DEFAULT_EPOCH
            }
        },
    };
    for s in &file.spec {
        if !is_spec_id(s.get_ref()) {
            errs.push(src.err(
                s.span().start,
                format!("`{}` is not a SPEC id (e.g. SD5, HA1)", s.get_ref()),
            ));
        }
    }
    if let Some(n) = &file.name
        && !valid_name(n.get_ref())
    {
        errs.push(src.err(n.span().start, "bad scenario name: use letters, digits and -"));
    }
    Settings { duration, latency, epoch }
}

fn is_spec_id(s: &str) -> bool {
    let letters = s.chars().take_while(char::is_ascii_uppercase).count();
    letters >= 2 && s.len() > letters && s[letters..].chars().all(|c| c.is_ascii_digit())
}

fn epoch_of(dt: &toml::value::Datetime) -> Result<Duration, String> {
    let (Some(d), Some(t)) = (dt.date, dt.time) else {
        return Err("epoch needs a date and a time, e.g. 2026-01-05T09:00:00Z".into());
    };
    if !matches!(dt.offset, Some(toml::value::Offset::Z)) {
        return Err("epoch must be in UTC (end it with Z)".into());
    }
    let days = days_from_civil(i64::from(d.year), u32::from(d.month), u32::from(d.day));
    if days < 0 {
        return Err("epoch must be after 1970".into());
    }
    let secs = days as u64 * 86_400
        + u64::from(t.hour) * 3600
        + u64::from(t.minute) * 60
        + u64::from(t.second);
    Ok(Duration::from_secs(secs))
}
