//! The ladder (issue 20): a transcript line, its ladder arrow and its capture frame name the
//! same message, for every message of a scenario from each suite; the ladder is the same for
//! a seed, and `uclab ladder` draws it again from the run's output directory.
//!
//! The capture side is read by tshark (installed by scripts/setup.sh; missing, the test
//! fails), which decrypts TLS with the secrets the pcapng carries.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use uclab_sim::ladder::{self, Filter, Ladder, What};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The first scenario (by name) of each suite that is not a load run.
fn one_per_suite() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut suites: Vec<_> = std::fs::read_dir(root().join("scenarios"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    suites.sort();
    for suite in suites {
        let mut files: Vec<_> = std::fs::read_dir(&suite)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        files.sort();
        let first = files.into_iter().find(|f| !uclab_sim::load(f).unwrap().heavy);
        out.push(first.unwrap_or_else(|| panic!("{} has a scenario", suite.display())));
    }
    out
}

/// A frame as tshark decodes it.
#[derive(Debug, Default)]
struct Decoded {
    ports: (u16, u16),
    udp: bool,
    stream: String,
    fields: BTreeMap<&'static str, String>,
}

const FIELDS: [&str; 9] = [
    "dns.flags.response",
    "dns.qry.name",
    "sip.Method",
    "sip.Status-Code",
    "sip.CSeq.method",
    "http.request.method",
    "http.request.uri",
    "http.response.code",
    "xmpp.presence",
];

fn tshark(capture: &Path) -> BTreeMap<u32, Decoded> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(capture).args(["-T", "fields", "-E", "separator=\t", "-E", "occurrence=a"]);
    // The lab's HTTPS ports (UDS, TFTP-over-HTTPS, the edge), decrypted with the pcapng's secrets.
    for port in [443, 6972, 8443] {
        cmd.args(["-d", &format!("tls.port=={port},http")]);
    }
    for f in
        ["frame.number", "udp.srcport", "udp.dstport", "tcp.srcport", "tcp.dstport", "tcp.stream"]
            .into_iter()
            .chain(FIELDS)
    {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("tshark runs (bash scripts/setup.sh installs it)");
    assert!(out.status.success(), "tshark: {}", String::from_utf8_lossy(&out.stderr));
    let mut frames = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let c: Vec<&str> = line.split('\t').collect();
        let port = |s: &str| s.split(',').next().unwrap_or("").parse::<u16>().unwrap_or(0);
        let udp = !c[1].is_empty();
        let d = Decoded {
            ports: if udp { (port(c[1]), port(c[2])) } else { (port(c[3]), port(c[4])) },
            udp,
            stream: c[5].to_owned(),
            fields: FIELDS.iter().zip(&c[6..]).map(|(k, v)| (*k, (*v).to_owned())).collect(),
        };
        frames.insert(c[0].parse().unwrap(), d);
    }
    frames
}

fn port_of(end: &str) -> Option<u16> {
    end.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
}

/// What the transcript says of the message must be what tshark reads in its frame (or, for a
/// message TCP reassembles, in a later frame of the same stream).
fn agrees(summary: &str, f: &Decoded, later: &[&Decoded]) -> Result<bool, String> {
    let words: Vec<&str> = summary.split(' ').collect();
    let has = |d: &Decoded, k: &str, want: &str| d.fields[k].split(',').any(|v| v == want);
    let any = |k: &str, want: &str| {
        std::iter::once(f).chain(later.iter().copied()).any(|d| has(d, k, want))
    };
    match words.as_slice() {
        ["DNS", qr @ ("query" | "response"), _ty, name, ..] => {
            let r = if *qr == "query" { "False" } else { "True" };
            let ok = (has(f, "dns.flags.response", r)
                || has(f, "dns.flags.response", if r == "True" { "1" } else { "0" }))
                && has(f, "dns.qry.name", name);
            ok.then_some(true).ok_or_else(|| format!("tshark: {:?}", f.fields))
        }
        ["SIP", code, ..] if code.parse::<u16>().is_ok() => {
            any("sip.Status-Code", code).then_some(true).ok_or_else(|| format!("no SIP {code}"))
        }
        ["SIP", method, ..] if method.chars().all(|c| c.is_ascii_uppercase()) => {
            any("sip.Method", method).then_some(true).ok_or_else(|| format!("no SIP {method}"))
        }
        // Through the edge the path goes base64-encoded behind a prefix (WIRE.md).
        ["HTTP", method @ ("GET" | "POST" | "PUT"), uri, ..] => {
            (any("http.request.method", method)
                && std::iter::once(f)
                    .chain(later.iter().copied())
                    .any(|d| d.fields["http.request.uri"].split(',').any(|u| u.ends_with(uri))))
            .then_some(true)
            .ok_or_else(|| format!("no HTTP {method} {uri}"))
        }
        ["HTTP", code, ..] if code.parse::<u16>().is_ok() => {
            any("http.response.code", code).then_some(true).ok_or_else(|| format!("no HTTP {code}"))
        }
        _ => Ok(false),
    }
}

#[test]
fn transcript_ladder_and_capture_name_the_same_message() {
    let tmp = std::env::temp_dir().join(format!("uclab-ladder-{}", std::process::id()));
    // Per scenario: messages, with a frame, and decoded by tshark as the transcript says.
    let mut checked = BTreeMap::<String, (usize, usize, usize)>::new();
    for file in one_per_suite() {
        let s = uclab_sim::load(&file).unwrap();
        let r = uclab_sim::run(&s, s.seed);
        let dir = tmp.join(&s.name);
        uclab_sim::commands::write_outputs(&dir, &r).unwrap();
        let frames = tshark(&dir.join("capture.pcapng"));
        let src = ladder::data::read_run(&dir).unwrap();
        let l = Ladder::build(&src, &Filter::default());
        let text = std::fs::read_to_string(dir.join("ladder.txt")).unwrap();
        let transcript: Vec<&str> = r.transcript.lines().collect();
        let messages: Vec<_> =
            l.rows.iter().filter(|r| matches!(r.what, What::Message { .. })).collect();
        // Every message line of the transcript is an arrow, in order.
        let lines: Vec<usize> = transcript
            .iter()
            .enumerate()
            .filter(|(_, t)| t.contains(" -> ") && !t.contains(" ! "))
            .map(|(i, _)| i + 1)
            .collect();
        assert_eq!(messages.iter().map(|m| m.line).collect::<Vec<_>>(), lines, "{}", s.name);
        assert_eq!(r.messages.len(), lines.len(), "{}: a record per message line", s.name);
        let (mut framed, mut decoded) = (0, 0);
        for (i, row) in messages.iter().enumerate() {
            let What::Message { ends, transport, summary, frame, .. } = &row.what else {
                unreachable!()
            };
            assert!(transcript[row.line - 1].ends_with(summary), "{}: line {}", s.name, row.line);
            let Some(n) = frame else { continue };
            framed += 1;
            assert!(
                text.contains(&format!("#{n} {summary}")) || text.contains(&format!("#{n} ")),
                "{}: #{n} in ladder.txt",
                s.name
            );
            let f = frames.get(n).unwrap_or_else(|| panic!("{}: frame {n} exists", s.name));
            let at =
                format!("{}: line {} `{}` frame {n}", s.name, row.line, transcript[row.line - 1]);
            assert_eq!(f.udp, *transport == "udp", "{at}: transport");
            if let Some(p) = port_of(ends.0) {
                assert_eq!(f.ports.0, p, "{at}: source port");
            }
            if let Some(p) = port_of(ends.1) {
                assert_eq!(f.ports.1, p, "{at}: destination port");
            }
            // The frames after it on the same connection, up to the next message's frame.
            let next = messages[i + 1..].iter().find_map(|m| match &m.what {
                What::Message { frame: Some(n), .. } => Some(*n),
                _ => None,
            });
            let later: Vec<&Decoded> = frames
                .range(n + 1..next.unwrap_or(n + 40).max(n + 1).min(n + 40))
                .map(|(_, d)| d)
                .filter(|d| !f.udp && d.stream == f.stream)
                .collect();
            match agrees(summary, f, &later) {
                Ok(true) => decoded += 1,
                Ok(false) => {}
                Err(e) => panic!("{at}: {e}"),
            }
        }
        assert!(
            framed * 10 >= lines.len() * 9,
            "{}: {framed} of {} messages have a frame",
            s.name,
            lines.len()
        );
        checked.insert(s.name.clone(), (lines.len(), framed, decoded));
    }
    let _ = std::fs::remove_dir_all(&tmp);
    eprintln!("{checked:?}");
    assert_eq!(checked.len(), 9, "a scenario from each suite: {checked:?}");
    let (all, decoded) = checked.values().fold((0, 0), |(a, d), c| (a + c.0, d + c.2));
    assert!(
        decoded * 2 >= all,
        "tshark decoded {decoded} of {all} messages as the transcript says"
    );
}

#[test]
fn same_seed_same_ladder_and_uclab_ladder_draws_it_again() {
    let file = root().join("scenarios/calls/sip-over-tls.toml");
    let s = uclab_sim::load(&file).unwrap();
    let tmp = std::env::temp_dir().join(format!("uclab-ladder-again-{}", std::process::id()));
    let (a, b) = (tmp.join("a"), tmp.join("b"));
    uclab_sim::commands::write_outputs(&a, &uclab_sim::run(&s, 7)).unwrap();
    uclab_sim::commands::write_outputs(&b, &uclab_sim::run(&s, 7)).unwrap();
    for f in ["ladder.txt", "ladder.html", "messages.jsonl"] {
        assert_eq!(std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap(), "{f}");
    }
    let src = ladder::data::read_run(&a).unwrap();
    let again = Ladder::build(&src, &Filter::default());
    assert_eq!(ladder::text(&again), std::fs::read_to_string(a.join("ladder.txt")).unwrap());
    assert_eq!(ladder::html(&again), std::fs::read_to_string(a.join("ladder.html")).unwrap());
    let text = std::fs::read_to_string(a.join("ladder.txt")).unwrap();
    assert!(text.lines().all(|l| l.chars().count() <= ladder::WIDTH));
    let _ = std::fs::remove_dir_all(&tmp);
}

/// ladder.txt of a call over TLS and of a sign-in through the edge, as people read them.
#[test]
fn ladder_text_snapshots() {
    for (suite, name) in [("calls", "sip-over-tls"), ("mra", "signin-through-edge")] {
        // A relative path, so the replay line is the same on every machine.
        let s = uclab_sim::load(Path::new(&format!("scenarios/{suite}/{name}.toml"))).unwrap();
        let mut r = uclab_sim::run(&s, s.seed);
        r.out = Some("out".into());
        let src = ladder::Source::of(&r);
        let l = Ladder::build(&src, &Filter::default());
        insta::with_settings!({ snapshot_path => "snapshots", prepend_module_to_snapshot => false }, {
            insta::assert_snapshot!(format!("ladder__{suite}__{name}"), ladder::text(&l));
        });
    }
}

/// A run written straight into its directory (`uclab run`) leaves the same files as one kept
/// in memory and written after (issue 19: the capture and messages need not be in memory).
#[test]
fn run_into_writes_what_run_would() {
    let s = uclab_sim::load(&root().join("scenarios/mra/call-outside-to-inside.toml")).unwrap();
    let tmp = std::env::temp_dir().join(format!("uclab-run-into-{}", std::process::id()));
    let (a, b) = (tmp.join("a"), tmp.join("b"));
    let streamed = uclab_sim::run_into(&s, 3, &a, &mut |_| {});
    assert_eq!(streamed.written.as_deref(), Some(a.as_path()));
    assert!(
        streamed.capture.is_empty()
            && streamed.messages.is_empty()
            && streamed.transcript.is_empty(),
        "not kept in memory"
    );
    uclab_sim::commands::write_outputs(&a, &streamed).unwrap();
    uclab_sim::commands::write_outputs(&b, &uclab_sim::run(&s, 3)).unwrap();
    for f in [
        "capture.pcapng",
        "transcript.txt",
        "messages.jsonl",
        "report.json",
        "ladder.txt",
        "ladder.html",
    ] {
        assert!(
            std::fs::read(a.join(f)).unwrap() == std::fs::read(b.join(f)).unwrap(),
            "{f} differs"
        );
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
