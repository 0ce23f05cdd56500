//! report.json and JUnit XML.

use std::fmt::Write as _;

use serde_json::json;

use crate::runner::RunResult;
use crate::time::fmt_secs;

/// The command that replays a run.
pub fn replay_command(r: &RunResult) -> String {
    let out = r.out.as_ref().map(|o| format!(" --out {}", o.display())).unwrap_or_default();
    format!("uclab run {} --seed {}{out}", r.file.display(), r.seed)
}

/// report.json of one run.
pub fn report_json(r: &RunResult) -> String {
    let expectations: Vec<_> = r
        .verdicts
        .iter()
        .map(|v| {
            json!({
                "line": v.expect.line,
                "client": v.expect.client,
                "event": v.expect.event,
                "fields": v.expect.fields,
                "within": fmt_secs(v.expect.within),
                "absent": v.expect.absent,
                "count": v.expect.count,
                "passed": v.passed,
                "at": v.at.map(fmt_secs),
                "detail": v.detail,
            })
        })
        .collect();
    // Issue 19: a load run's events (CAP1: 450,000) stay in the transcript; the report keeps
    // the first MAX_REPORT_EVENTS and counts every kind, so it stays small.
    let events: Vec<_> = r
        .events
        .iter()
        .take(MAX_REPORT_EVENTS)
        .map(|e| {
            let fields: serde_json::Map<String, serde_json::Value> =
                e.fields().map(|(k, v)| (k.to_owned(), json!(v))).collect();
            json!({ "at": fmt_secs(e.time()), "client": e.who(), "event": e.kind(), "fields": fields })
        })
        .collect();
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for e in r.events.iter() {
        *counts.entry(e.kind()).or_default() += 1;
    }
    let omitted = r.events.len().saturating_sub(MAX_REPORT_EVENTS);
    let v = json!({
        "scenario": r.scenario,
        "file": r.file.display().to_string(),
        "seed": r.seed,
        "passed": r.passed,
        "error": r.error,
        "sim_time": fmt_secs(r.sim_time),
        "expectations": expectations,
        "events": events,
        "events_total": r.events.len(),
        "events_omitted": omitted,
        "event_counts": counts,
        "replay": replay_command(r),
        "addresses": r.addresses,
    });
    serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
}

/// Events report.json lists at most (the transcript has them all).
pub const MAX_REPORT_EVENTS: usize = 10_000;

fn esc(s: &str) -> String {
    uclab_proto::text::xml_escape(s)
}

/// JUnit XML for runs: a testsuite per scenario, a testcase per expectation.
pub fn junit_xml(runs: &[RunResult]) -> String {
    let mut s =
        String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"uclab\">\n");
    for r in runs {
        let failures =
            r.verdicts.iter().filter(|v| !v.passed).count() + usize::from(r.error.is_some());
        let _ = writeln!(
            s,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" time=\"{:.3}\">",
            esc(&r.scenario),
            r.verdicts.len() + usize::from(r.error.is_some()),
            r.wall.as_secs_f64()
        );
        // JUnit's time is wall-clock seconds (what CI dashboards add up); the simulated time
        // is a property (issue 14).
        let _ = writeln!(
            s,
            "    <properties><property name=\"seed\" value=\"{}\"/><property name=\"simulated_seconds\" value=\"{}\"/><property name=\"replay\" value=\"{}\"/></properties>",
            r.seed,
            r.sim_time.as_secs_f64(),
            esc(&replay_command(r))
        );
        if let Some(e) = &r.error {
            let _ = writeln!(
                s,
                "    <testcase name=\"simulation\" classname=\"{}\"><error message=\"{}\"/></testcase>",
                esc(&r.scenario),
                esc(e)
            );
        }
        for v in &r.verdicts {
            let fields: String = v.expect.fields.iter().map(|(k, v)| format!(" {k}={v}")).collect();
            let name = format!(
                "line {}: {} {}{}{fields} within {}",
                v.expect.line,
                v.expect.client,
                if v.expect.absent { "no " } else { "" },
                v.expect.event,
                fmt_secs(v.expect.within)
            );
            if v.passed {
                let _ = writeln!(
                    s,
                    "    <testcase name=\"{}\" classname=\"{}\"/>",
                    esc(&name),
                    esc(&r.scenario)
                );
            } else {
                let _ = writeln!(
                    s,
                    "    <testcase name=\"{}\" classname=\"{}\"><failure message=\"{}\"/></testcase>",
                    esc(&name),
                    esc(&r.scenario),
                    esc(&v.detail)
                );
            }
        }
        s.push_str("  </testsuite>\n");
    }
    s.push_str("</testsuites>\n");
    s
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Issue 19: a run with more events than the report lists keeps the first ones, says how
    /// many were left out, and counts every kind.
    #[test]
    fn a_large_run_lists_the_first_events_and_counts_all() {
        let mut events = uclab_net::Events::default();
        let mut ev = |i: usize, kind: &str| {
            let fields = [("n".to_owned(), i.to_string())];
            events.push(Duration::from_millis(i as u64), &format!("u{i}"), kind, &fields);
        };
        (0..MAX_REPORT_EVENTS).for_each(|i| ev(i, "im-presence"));
        (0..7).for_each(|i| ev(MAX_REPORT_EVENTS + i, "im-message"));
        let r = RunResult {
            scenario: "big".into(),
            file: "big.toml".into(),
            seed: 1,
            passed: true,
            verdicts: Vec::new(),
            sim_time: Duration::from_secs(1),
            capture: Vec::new(),
            transcript: String::new(),
            events,
            messages: Vec::new(),
            addresses: Default::default(),
            written: None,
            error: None,
            out: None,
            wall: Duration::ZERO,
        };
        let v: serde_json::Value = serde_json::from_str(&report_json(&r)).unwrap();
        assert_eq!(v["events"].as_array().unwrap().len(), MAX_REPORT_EVENTS);
        assert_eq!(v["events_total"], MAX_REPORT_EVENTS + 7);
        assert_eq!(v["events_omitted"], 7);
        assert_eq!(v["event_counts"]["im-presence"], MAX_REPORT_EVENTS);
        assert_eq!(v["event_counts"]["im-message"], 7);
        // The last listed is the last before the cut.
        assert_eq!(
            v["events"][MAX_REPORT_EVENTS - 1]["client"],
            format!("u{}", MAX_REPORT_EVENTS - 1)
        );
    }
}
