//! ladder.html: one self-contained page (no network, no CDN) that draws the ladder as SVG.
//!
//! The rows go into the page as JSON inside a `<script type="application/json">` block, with
//! `<`, `>` and `&` written as `\u003c`, `\u003e`, `\u0026`, so nothing a peer sent can close
//! the block; the page's script puts every text in with `textContent`, never as markup. It
//! filters by protocol, column and time window, draws one page of rows at a time, and shows a
//! message's decoded bytes and frame number when its arrow is clicked. A large run carries its
//! first [`HTML_ROWS`] rows and, for the rest, counts per protocol and pair of columns, with
//! the `uclab ladder` command that draws another window.

use serde_json::{Value, json};

use super::{Ladder, What};

/// Rows a page carries at most.
pub const HTML_ROWS: usize = 20_000;

/// ladder.html of `l`.
pub fn html(l: &Ladder) -> String {
    let mut rows = Vec::new();
    let mut rest: std::collections::BTreeMap<(String, usize, usize), usize> = Default::default();
    let mut last = None;
    for (i, r) in l.rows.iter().enumerate() {
        let t = r.t.as_millis() as u64;
        if i >= HTML_ROWS {
            if let What::Message { from, to, proto, .. } = &r.what {
                let (a, b) = (l.column(from).unwrap_or(0), l.column(to).unwrap_or(0));
                *rest.entry((proto.to_ascii_lowercase(), a, b)).or_default() += 1;
            }
            last = Some(t);
            continue;
        }
        rows.push(match &r.what {
            What::Message { from, to, ends, proto, summary, frame, decoded, transport, .. } => json!({
                "t": t, "k": "m", "a": l.column(from), "b": l.column(to), "p": proto.to_ascii_lowercase(),
                "s": summary, "f": frame, "l": r.line, "d": decoded,
                "e": format!("{} -> {} {transport}", ends.0, ends.1),
            }),
            What::Event { who, toward: Some(to), .. } if l.column(to) != l.column(who) => json!({
                "t": t, "k": "r", "a": l.column(who), "b": l.column(to), "p": "rtp",
                "s": r.what.note(), "l": r.line,
            }),
            What::Event { who, .. } => {
                json!({ "t": t, "k": "e", "a": l.column(who), "s": r.what.note(), "l": r.line })
            }
            What::Note { who, .. } => {
                json!({ "t": t, "k": "n", "a": l.column(who), "s": r.what.note(), "l": r.line })
            }
            What::Verdict { who, passed, .. } => json!({
                "t": t, "k": if *passed { "v" } else { "x" }, "a": l.column(who), "s": r.what.note(),
            }),
        });
    }
    let rest: Vec<Value> =
        rest.into_iter().map(|((p, a, b), n)| json!({ "p": p, "a": a, "b": b, "n": n })).collect();
    let data = json!({
        "scenario": l.scenario,
        "seed": l.seed,
        "replay": l.replay,
        "error": l.error,
        "columns": l.columns,
        "folded": l.folded.len(),
        "total": l.total_messages,
        "rows": rows,
        "rest": rest,
        "rest_rows": l.rows.len().saturating_sub(HTML_ROWS),
        "rest_until": last,
    });
    let data = script_safe(&data.to_string());
    let title = escape(&format!("uclab ladder: {} seed {}", l.scenario, l.seed));
    let (head, tail) = TEMPLATE.split_once("{{DATA}}").unwrap_or((TEMPLATE, ""));
    head.replace("{{TITLE}}", &title) + &data + tail
}

/// JSON that can sit inside a `<script>` element: no `<`, `>` or `&` left as they are (JSON
/// has them only inside strings, where the `\u` forms mean the same).
fn script_safe(json: &str) -> String {
    json.replace('<', "\\u003c").replace('>', "\\u003e").replace('&', "\\u0026")
}

/// Text for HTML markup.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const TEMPLATE: &str = include_str!("ladder.html");

#[cfg(test)]
mod tests {
    use super::super::{Filter, Ladder, MessageRecord, Source};
    use super::*;

    #[test]
    fn everything_shown_stays_text() {
        let t = "# h\n   0.004s  alice -> imp1:5222 tcp XMPP <message>\u{3c}/script><script>alert(1)</script>\n";
        let src = Source {
            scenario: "<b>x</b>".into(),
            transcript: t.into(),
            messages: vec![MessageRecord {
                line: 2,
                frame: Some(3),
                bytes: b"<body></script><img src=x onerror=alert(1)>&amp;</body>".to_vec(),
                cut: false,
            }]
            .into(),
            ..Source::default()
        };
        let page = {
            let l = Ladder::build(&src, &Filter::default());
            html(&l)
        };
        let data_start = page.find("id=\"data\"").unwrap();
        let data = &page[data_start..];
        let data = &data[..data.find("</script>").unwrap()];
        assert!(!data[1..].contains('<') && !data.contains('&'), "{data}");
        assert!(data.contains("\\u003cimg src=x"), "the bytes are there, as JSON escapes");
        assert!(page.contains("<title>uclab ladder: &lt;b&gt;x&lt;/b&gt; seed 0</title>"));
        assert!(!page.contains("innerHTML"), "the script never parses data as markup");
        for net in ["src=\"http", "href=\"http", "url(http", "@import", "fetch(", "XMLHttpRequest"]
        {
            assert!(!page.contains(net), "no network: {net}");
        }
    }

    #[test]
    fn large_runs_are_counted_past_the_cap() {
        let mut t = String::from("# h\n");
        for i in 0..HTML_ROWS + 5 {
            t.push_str(&format!(
                "{:>4}.{:03}s  alice -> cucm1:5060 udp SIP OPTIONS\n",
                i / 1000,
                i % 1000
            ));
        }
        let src = Source { transcript: t.into(), ..Source::default() };
        let page = {
            let l = Ladder::build(&src, &Filter::default());
            html(&l)
        };
        assert!(page.contains("\"rest_rows\":5"), "five rows past the cap");
        assert!(page.contains("{\"a\":0,\"b\":1,\"n\":5,\"p\":\"sip\"}"));
    }
}
