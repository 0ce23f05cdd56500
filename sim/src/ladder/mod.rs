//! The run as a picture (issue 20): one cross-protocol ladder of who sent what to whom, as
//! text (`ladder.txt`) and as a self-contained HTML page with an SVG diagram (`ladder.html`).
//!
//! Both are drawn from what a run leaves in its output directory, so `uclab ladder OUT_DIR`
//! draws them again, filtered, from a finished run: transcript.txt (a row per line),
//! messages.jsonl (each message's capture frame and decoded bytes, [`data`]) and report.json
//! (the verdicts, and the replay command). Same run, same bytes.

pub mod data;
mod html;
mod text;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

pub use data::MessageRecord;
pub use html::{HTML_ROWS, html};
pub use text::{WIDTH, text};

use crate::runner::RunResult;

/// Participants drawn as columns at most; past it the clients share one column.
pub const MAX_COLUMNS: usize = 16;

/// One row of the ladder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row<'a> {
    /// Simulated time.
    pub t: Duration,
    /// Line in transcript.txt (0 for a verdict).
    pub line: usize,
    /// What happened.
    pub what: What<'a>,
}

/// What a row shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum What<'a> {
    /// A protocol message.
    Message {
        /// Sender node or client (no port).
        from: &'a str,
        /// Receiver.
        to: &'a str,
        /// Sender and receiver as the transcript names them (`cucm1:5060`).
        ends: (&'a str, &'a str),
        /// `udp` or `tcp`.
        transport: &'a str,
        /// The protocol, lower case (`sip`, `xmpp-s2s`, `dns`).
        proto: &'a str,
        /// The transcript's summary.
        summary: &'a str,
        /// Its frame number in capture.pcapng.
        frame: Option<u32>,
        /// The decoded message, when its bytes were seen (filled in for the rows the HTML
        /// page carries).
        decoded: Option<String>,
        /// Its record in [`Source::messages`].
        record: Option<usize>,
    },
    /// A client event.
    Event {
        /// Client.
        who: &'a str,
        /// The event as the transcript writes it.
        text: &'a str,
        /// Where the media it starts goes (`call-rtp … to=ADDR`, drawn as an RTP arrow to
        /// the participant at that address).
        toward: Option<&'a str>,
    },
    /// A note of a node or of the lab.
    Note {
        /// Node, or `lab`.
        who: &'a str,
        /// Note.
        text: &'a str,
    },
    /// An expectation's verdict, where it was decided (a failure: where it should have held).
    Verdict {
        /// Client it is about.
        who: &'a str,
        /// Whether it held.
        passed: bool,
        /// `line 12: alice signed-in within 5.000s`, and why it failed.
        text: &'a str,
    },
}

impl What<'_> {
    /// Participants the row touches.
    fn who(&self) -> [&str; 2] {
        match self {
            Self::Message { from, to, .. } => [from, to],
            Self::Event { who, toward: Some(to), .. } => [who, to],
            Self::Event { who, .. } | Self::Note { who, .. } | Self::Verdict { who, .. } => {
                [who, who]
            }
        }
    }

    /// The text of an event, note or verdict row, as both ladders write it (`alice ! signed-in`,
    /// `lab: crash cucm1`, `FAIL line 12: …`); `None` for a message.
    pub fn note(&self) -> Option<String> {
        match self {
            Self::Message { .. } => None,
            Self::Event { who, text, .. } => Some(format!("{who} ! {text}")),
            Self::Note { who, text } => Some(format!("{who}: {text}")),
            Self::Verdict { passed, text, .. } => {
                Some(format!("{} {text}", if *passed { "PASS" } else { "FAIL" }))
            }
        }
    }
}

/// An expectation's verdict as the ladder shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerdictMark {
    /// Where it goes: when the event matched, or the deadline it missed.
    pub at: Duration,
    /// Client (pattern) it is about.
    pub who: String,
    /// Whether it held.
    pub passed: bool,
    /// What it expected, and why it failed.
    pub text: String,
}

/// What the ladder is drawn from.
#[derive(Clone, Debug, Default)]
pub struct Source<'a> {
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// Command that replays the run.
    pub replay: String,
    /// transcript.txt.
    pub transcript: Cow<'a, str>,
    /// Each message's frame and bytes.
    pub messages: Cow<'a, [MessageRecord]>,
    /// Expectations.
    pub verdicts: Vec<VerdictMark>,
    /// A failure of the simulation itself.
    pub error: Option<String>,
    /// Who each address is (report.json's `addresses`).
    pub addresses: BTreeMap<String, String>,
}

impl<'a> Source<'a> {
    /// The source of a run just made.
    pub fn of(r: &'a RunResult) -> Self {
        Self {
            scenario: r.scenario.clone(),
            seed: r.seed,
            replay: crate::report::replay_command(r),
            transcript: Cow::Borrowed(&r.transcript),
            messages: Cow::Borrowed(&r.messages),
            verdicts: r.verdicts.iter().map(verdict_mark).collect(),
            error: r.error.clone(),
            addresses: r.addresses.clone(),
        }
    }
}

fn verdict_mark(v: &crate::runner::Verdict) -> VerdictMark {
    let e = &v.expect;
    let fields: Vec<(String, String)> =
        e.fields.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    VerdictMark::new(
        (e.line, &e.client, &e.event, &fields),
        (e.within, e.absent, e.count),
        (v.passed, v.at, &v.detail),
    )
}

impl VerdictMark {
    /// The mark of expectation `(line, client, event, fields)`, `(within, absent, count)`,
    /// whose verdict is `(passed, when it matched, why it failed)`.
    pub fn new(
        (line, client, event, fields): (usize, &str, &str, &[(String, String)]),
        (within, absent, count): (Duration, bool, Option<usize>),
        (passed, at, detail): (bool, Option<Duration>, &str),
    ) -> Self {
        let fields: String = fields.iter().map(|(k, v)| format!(" {k}={v}")).collect();
        let no = if absent { "no " } else { "" };
        let mut text = format!("line {line}: {client} {no}{event}{fields}");
        if let Some(c) = count {
            text.push_str(&format!(" x{c}"));
        }
        text.push_str(&format!(" within {}", crate::time::fmt_secs(within)));
        if !passed {
            text.push_str(&format!(": {detail}"));
        }
        // A failure goes where it should have held: the deadline, or, for an event that must
        // not happen, where it happened.
        let at = match (passed, absent) {
            (true, false) | (false, true) => at.unwrap_or(within),
            _ => within,
        };
        Self { at, who: client.to_owned(), passed, text }
    }
}

/// Which rows to draw (`uclab ladder --from --to --only --node`).
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Rows at or after.
    pub from: Option<Duration>,
    /// Rows at or before.
    pub to: Option<Duration>,
    /// Protocols (`sip` also takes `sip-edge`; `soap` takes HTTP SOAP requests).
    pub only: Vec<String>,
    /// Rows that touch one of these participants.
    pub nodes: Vec<String>,
}

impl Filter {
    fn keeps(&self, r: &Row) -> bool {
        if self.from.is_some_and(|f| r.t < f) || self.to.is_some_and(|t| r.t > t) {
            return false;
        }
        if !self.nodes.is_empty() && !r.what.who().iter().any(|w| self.nodes.iter().any(|n| n == w))
        {
            return false;
        }
        if self.only.is_empty() {
            return true;
        }
        match &r.what {
            What::Message { proto, summary, .. } => self.only.iter().any(|o| {
                proto.eq_ignore_ascii_case(o)
                    || proto.split('-').next().is_some_and(|f| f.eq_ignore_ascii_case(o))
                    || (o == "soap"
                        && proto.eq_ignore_ascii_case("http")
                        && summary.to_ascii_lowercase().contains("soap"))
            }),
            _ => true,
        }
    }
}

/// The ladder: participants in the order they first appear, and the rows.
#[derive(Clone, Debug, Default)]
pub struct Ladder<'a> {
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// Command that replays the run.
    pub replay: String,
    /// A failure of the simulation itself.
    pub error: Option<String>,
    /// Columns, in order.
    pub columns: Vec<String>,
    /// Participants that share a column (a large run: the clients share the first, and past
    /// [`MAX_COLUMNS`] the other participants share the last), with that column.
    pub folded: BTreeMap<String, usize>,
    /// Rows, in time order.
    pub rows: Vec<Row<'a>>,
    /// Messages in the run before filtering.
    pub total_messages: usize,
}

impl<'a> Ladder<'a> {
    /// Builds the ladder of `src`, keeping the rows `filter` keeps.
    pub fn build(src: &'a Source<'_>, filter: &Filter) -> Self {
        let by_line: BTreeMap<usize, usize> =
            src.messages.iter().enumerate().map(|(i, m)| (m.line, i)).collect();
        let mut rows = Vec::new();
        let mut clients = std::collections::BTreeSet::new();
        for (i, l) in src.transcript.lines().enumerate() {
            let record = by_line.get(&(i + 1)).map(|&r| (r, src.messages[r].frame));
            let Some(mut row) = parse_line(i + 1, l, record) else { continue };
            if let What::Event { text, toward, .. } = &mut row.what {
                *toward = media_peer(text, &src.addresses);
            }
            if let What::Event { who, .. } = &row.what {
                clients.insert(*who);
            }
            rows.push(row);
        }
        let total_messages = rows.iter().filter(|r| matches!(r.what, What::Message { .. })).count();
        for v in &src.verdicts {
            let what = What::Verdict { who: &v.who, passed: v.passed, text: &v.text };
            rows.push(Row { t: v.at, line: 0, what });
        }
        // Verdicts after the lines of their millisecond (a stable sort keeps the rest).
        rows.sort_by_key(|r| r.t);
        rows.retain(|r| filter.keeps(r));
        for r in rows.iter_mut().take(HTML_ROWS) {
            if let What::Message { proto, decoded, record: Some(i), .. } = &mut r.what {
                *decoded = data::decode(proto, &src.messages[*i]);
            }
        }
        let mut columns: Vec<String> = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for r in &rows {
            for w in r.what.who() {
                if seen.insert(w) {
                    columns.push(w.to_owned());
                }
            }
        }
        let mut folded = BTreeMap::new();
        if columns.len() > MAX_COLUMNS {
            let (c, mut nodes): (Vec<String>, Vec<String>) =
                columns.into_iter().partition(|c| clients.contains(c.as_str()) || c.ends_with('*'));
            columns = Vec::new();
            if !c.is_empty() {
                columns.push(format!("clients ({})", c.len()));
                folded.extend(c.into_iter().map(|c| (c, 0)));
            }
            if columns.len() + nodes.len() > MAX_COLUMNS {
                let others = nodes.split_off(MAX_COLUMNS - 1 - columns.len());
                let at = MAX_COLUMNS - 1;
                columns.extend(nodes);
                columns.push(format!("others ({})", others.len()));
                folded.extend(others.into_iter().map(|o| (o, at)));
            } else {
                columns.extend(nodes);
            }
        }
        Self {
            scenario: src.scenario.clone(),
            seed: src.seed,
            replay: src.replay.clone(),
            error: src.error.clone(),
            columns,
            folded,
            rows,
            total_messages,
        }
    }

    /// The column of participant `who`.
    pub fn column(&self, who: &str) -> Option<usize> {
        if let Some(&c) = self.folded.get(who) {
            return Some(c);
        }
        self.columns.iter().position(|c| c == who)
    }
}

/// `host:port` or `host` → `host`.
fn node_of(end: &str) -> &str {
    match end.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.is_empty() => h,
        _ => end,
    }
}

/// `  12.345s` → 12.345 s.
fn parse_time(s: &str) -> Option<Duration> {
    let (secs, ms) = s.trim().strip_suffix('s')?.split_once('.')?;
    let ms: u64 = ms.parse().ok().filter(|_| ms.len() == 3)?;
    Some(Duration::from_secs(secs.parse().ok()?) + Duration::from_millis(ms))
}

/// A row from transcript line `n` (the header and blank lines give none).
fn parse_line(n: usize, line: &str, record: Option<(usize, Option<u32>)>) -> Option<Row<'_>> {
    if line.starts_with('#') {
        return None;
    }
    let (stamp, rest) = line.trim_start().split_once("  ")?;
    let t = parse_time(stamp)?;
    let what = message_row(rest, record)
        .or_else(|| {
            let (who, text) = rest.split_once(" ! ")?;
            (!who.contains(' ')).then_some(What::Event { who, text, toward: None })
        })
        .or_else(|| {
            let (who, text) = rest.split_once(": ")?;
            Some(What::Note { who, text })
        })?;
    Some(Row { t, line: n, what })
}

/// The participant a `call-rtp … to=IP:PORT …` event sends media to.
fn media_peer<'a>(text: &str, addresses: &'a BTreeMap<String, String>) -> Option<&'a str> {
    let fields = text.strip_prefix("call-rtp ")?;
    let to = fields.split(' ').find_map(|f| f.strip_prefix("to="))?;
    let ip = to.rsplit_once(':').map_or(to, |(ip, _)| ip);
    addresses.get(ip).map(String::as_str)
}

/// `from -> to transport summary` (with its record and frame, when known).
fn message_row(rest: &str, record: Option<(usize, Option<u32>)>) -> Option<What<'_>> {
    let (from, rest) = rest.split_once(" -> ")?;
    let (to, rest) = rest.split_once(' ')?;
    let (transport, summary) = rest.split_once(' ')?;
    if from.contains(' ') || !matches!(transport, "udp" | "tcp") {
        return None;
    }
    Some(What::Message {
        from: node_of(from),
        to: node_of(to),
        ends: (from, to),
        transport,
        proto: summary.split(' ').next().unwrap_or(""),
        summary,
        frame: record.and_then(|r| r.1),
        decoded: None,
        record: record.map(|r| r.0),
    })
}

/// Writes ladder.txt and ladder.html of `src` into `dir`.
pub fn write(dir: &std::path::Path, src: &Source) -> std::io::Result<()> {
    let ladder = Ladder::build(src, &Filter::default());
    std::fs::write(dir.join("ladder.txt"), text(&ladder))?;
    std::fs::write(dir.join("ladder.html"), html(&ladder))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "# uclab transcript: scenario x seed 1\n   \
        0.004s  alice -> dns-int:53 udp DNS query SRV _cisco-uds._tcp.example.com\n   \
        0.005s  alice ! discovery-resolved domain=example.com\n   \
        0.006s  lab: crash cucm1\n  \
        12.345s  cucm1:5060 -> alice udp SIP 200 OK REGISTER\n";

    fn src() -> Source<'static> {
        Source {
            scenario: "x".into(),
            transcript: T.into(),
            messages: vec![MessageRecord {
                line: 2,
                frame: Some(7),
                bytes: b"nope".to_vec(),
                cut: false,
            }]
            .into(),
            verdicts: vec![VerdictMark {
                at: Duration::from_secs(5),
                who: "alice".into(),
                passed: false,
                text: "line 3: alice signed-in within 5.000s: never".into(),
            }],
            ..Source::default()
        }
    }

    #[test]
    fn rows_from_the_transcript() {
        let s0 = src();
        let l = Ladder::build(&s0, &Filter::default());
        assert_eq!(l.columns, ["alice", "dns-int", "lab", "cucm1"]);
        assert_eq!(l.rows.len(), 5);
        assert!(matches!(&l.rows[0].what, What::Message { frame: Some(7), proto: "DNS", .. }));
        assert!(matches!(&l.rows[1].what, What::Event { who: "alice", .. }));
        assert!(matches!(&l.rows[2].what, What::Note { who: "lab", .. }));
        assert!(matches!(&l.rows[3].what, What::Verdict { passed: false, .. }));
        assert_eq!(l.rows[3].t, Duration::from_secs(5));
        // Line 5 has no record: a message without a frame.
        assert!(matches!(&l.rows[4].what, What::Message { frame: None, decoded: None, .. }));
        assert_eq!(l.rows[4].t, Duration::from_millis(12_345));
    }

    #[test]
    fn rtp_a_call_starts_is_an_arrow_to_the_peer() {
        let t = "# h\n   3.002s  alice ! call-rtp id=1 media=audio codec=PCMU/8000 to=10.1.0.101:17100 dscp=46\n   3.003s  bob ! call-rtp id=1 media=audio to=192.0.2.9:4000\n";
        let addresses = [("10.1.0.101".to_owned(), "bob".to_owned())].into_iter().collect();
        let s1 = Source { transcript: t.into(), addresses, ..Source::default() };
        let l = Ladder::build(&s1, &Filter::default());
        assert!(matches!(l.rows[0].what, What::Event { who: "alice", toward: Some("bob"), .. }));
        assert!(matches!(l.rows[1].what, What::Event { toward: None, .. }), "unknown address");
        let out = text(&l);
        assert!(out.contains("|========>|"), "{out}");
        assert!(html(&l).contains("\"k\":\"r\""));
    }

    #[test]
    fn many_participants_share_columns_and_lines_still_fit() {
        let mut t = String::from("# h\n");
        for i in 0..40 {
            t.push_str(&format!(
                "   0.{i:03}s  c{i} ! signed-in\n   0.{i:03}s  c{i} -> n{i}:80 tcp HTTP GET /\n"
            ));
        }
        let s1 = Source { transcript: t.into(), ..Source::default() };
        let l = Ladder::build(&s1, &Filter::default());
        assert_eq!(l.columns.len(), MAX_COLUMNS);
        assert_eq!(l.columns[0], "clients (40)");
        assert_eq!(l.columns[MAX_COLUMNS - 1], "others (26)");
        assert_eq!((l.column("c7"), l.column("n0"), l.column("n39")), (Some(0), Some(1), Some(15)));
        let out = text(&l);
        assert!(out.lines().all(|l| l.chars().count() <= WIDTH), "{out}");
        assert!(out.contains("c3 -> n3:80: HTTP GET /"), "folded arrows name their ends: {out}");
    }

    #[test]
    fn filters() {
        let s0 = src();
        let only = |o: &[&str]| Filter {
            only: o.iter().map(|s| s.to_string()).collect(),
            ..Filter::default()
        };
        let l = Ladder::build(&s0, &only(&["sip"]));
        let protos: Vec<&str> = l
            .rows
            .iter()
            .filter_map(|r| match &r.what {
                What::Message { proto, .. } => Some(*proto),
                _ => None,
            })
            .collect();
        assert_eq!(protos, ["SIP"]);
        assert_eq!(l.rows.len(), 4, "events, notes and verdicts stay");
        let l = Ladder::build(&s0, &only(&["dns"]));
        assert_eq!(l.rows.iter().filter(|r| matches!(r.what, What::Message { .. })).count(), 1);
        let l = Ladder::build(
            &s0,
            &Filter {
                from: Some(Duration::from_secs(1)),
                to: Some(Duration::from_secs(6)),
                ..Filter::default()
            },
        );
        assert_eq!(l.rows.len(), 1, "only the verdict at 5 s");
        let l = Ladder::build(&s0, &Filter { nodes: vec!["lab".into()], ..Filter::default() });
        assert_eq!(l.rows.len(), 1);
    }
}
