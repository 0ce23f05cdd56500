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
                "passed": v.passed,
                "at": v.at.map(fmt_secs),
                "detail": v.detail,
            })
        })
        .collect();
    let events: Vec<_> = r
        .events
        .iter()
        .map(|e| {
            let fields: serde_json::Map<String, serde_json::Value> =
                e.fields.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            json!({ "at": fmt_secs(e.time), "client": e.who, "event": e.kind, "fields": fields })
        })
        .collect();
    let v = json!({
        "scenario": r.scenario,
        "file": r.file.display().to_string(),
        "seed": r.seed,
        "passed": r.passed,
        "error": r.error,
        "sim_time": fmt_secs(r.sim_time),
        "expectations": expectations,
        "events": events,
        "replay": replay_command(r),
    });
    serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
}

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
