//! Every scenario file runs: it passes with its seed, replays byte for byte, gives the same
//! bytes when every host is stepped through every millisecond (issue 19: event-driven time
//! changes when the CPU works, never what the simulation does), passes with a second seed, its
//! transcript matches the insta snapshot, and its capture reads back as valid frames
//! (checksums, TCP seq/ack continuity).

mod common;

use std::path::Path;

use uclab_sim::{load, run, run_stepwise};

/// The allocator of the `uclab` binary, so the scenarios run as they do there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn check_scenario(rel: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    let s = load(&path).unwrap_or_else(|e| panic!("{rel} does not check: {e:?}"));
    let other = s.seed.wrapping_add(1000);
    // A heavy scenario's runs go side by side on threads of their own, and it has no second
    // run with the same seed: its snapshot is a digest of the capture and the transcript, so
    // it already pins the bytes to those of the blessed run, on another machine and in
    // another process, and the stepwise run must give the same bytes again.
    let (a, replay, st, c) = if s.heavy {
        std::thread::scope(|t| {
            let st = t.spawn(|| run_stepwise(&s, s.seed));
            let c = t.spawn(|| run(&s, other));
            let a = run(&s, s.seed);
            (a, None, st.join().expect("stepwise run"), c.join().expect("second-seed run"))
        })
    } else {
        let a = run(&s, s.seed);
        let b = run(&s, s.seed);
        (a, Some(b), run_stepwise(&s, s.seed), run(&s, other))
    };
    let failures: Vec<String> = a
        .verdicts
        .iter()
        .filter(|v| !v.passed)
        .map(|v| format!("line {}: {}", v.expect.line, v.detail))
        .collect();
    // A load scenario's transcript runs to tens of megabytes: the verdicts say enough.
    let shown = if s.heavy { "(transcript of a heavy scenario not shown)" } else { &a.transcript };
    assert!(a.passed, "{rel} failed with seed {}: {:?} {failures:#?}\n{shown}", s.seed, a.error);

    // Same scenario + same seed ⇒ byte-identical capture and transcript.
    if let Some(b) = replay {
        assert_eq!(a.transcript, b.transcript, "{rel}: transcript differs between two runs");
        assert!(a.capture == b.capture, "{rel}: capture differs between two runs");
    }

    // Event-driven time ⇒ the same bytes as stepping every host through every tick.
    assert_eq!(a.transcript, st.transcript, "{rel}: transcript differs when stepped tick by tick");
    assert!(a.capture == st.capture, "{rel}: capture differs when stepped tick by tick");
    assert!(a.messages == st.messages, "{rel}: messages.jsonl differs when stepped tick by tick");
    drop(st);

    // A second seed must pass too.
    let failures: Vec<&str> =
        c.verdicts.iter().filter(|v| !v.passed).map(|v| v.detail.as_str()).collect();
    let shown = if s.heavy { "" } else { &c.transcript };
    assert!(c.passed, "{rel} failed with seed {other}: {failures:?}\n{shown}");
    drop(c);

    common::check_capture(rel, &a.capture);
    // Issue 16: nothing inside is reached from the DMZ except through connections C opened:
    // the capture holds no SYN from the DMZ to the inside (a dropped one would show too).
    let zone = |n: &str| s.zones.iter().find(|z| z.name == n).cloned();
    if let (Some(dmz), Some(inside)) = (zone("dmz"), zone("inside")) {
        let syns = common::syns_between(
            rel,
            &a.capture,
            |ip| dmz.contains(ip.into()),
            |ip| inside.contains(ip.into()),
        );
        assert!(syns.is_empty(), "{rel}: SYNs from the DMZ to the inside, frames {syns:?}");
    }
    // No password or token crosses the capture in clear text: neither `user:password` nor its
    // Basic token (passwords of 6 characters or more are looked for alone too), nor any SOAP
    // login, session key, one-time password or SASL exchange.
    let secrets: Vec<String> = s
        .users
        .iter()
        .flat_map(|u| {
            let pair = format!("{}:{}", u.id, u.password);
            let mut v = vec![uclab_proto::base64::encode(pair.as_bytes()), pair];
            if u.password.len() >= 6 {
                v.push(u.password.clone());
            }
            v
        })
        .chain(
            // Where passwords and tokens travel (EPAS login, its session key and one-time
            // password, XMPP SASL): these only ever go inside TLS.
            ["<ns1:password>", "session-key", "get-onetime-password-resp", "<auth "]
                .map(str::to_owned),
        )
        .collect();
    common::check_no_secrets(rel, &a.capture, &secrets);
    let suite =
        Path::new(rel).parent().and_then(|p| p.file_name()).and_then(|n| n.to_str()).unwrap_or("x");
    // A heavy scenario's snapshot is its verdicts and a digest of its outputs.
    let snapshot = if s.heavy { digest(&a) } else { a.transcript.clone() };
    insta::with_settings!({ snapshot_path => "snapshots", prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!(format!("{suite}__{}", s.name), snapshot);
    });
}

/// Verdicts, sizes and FNV-1a hashes of a run's transcript and capture.
fn digest(r: &uclab_sim::RunResult) -> String {
    let fnv = |b: &[u8]| {
        b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
            (h ^ u64::from(x)).wrapping_mul(0x100_0000_01b3)
        })
    };
    let mut out = String::new();
    for v in &r.verdicts {
        out.push_str(&format!(
            "line {}: {} {}\n",
            v.expect.line,
            if v.passed { "pass" } else { "FAIL" },
            v.detail
        ));
    }
    out.push_str(&format!(
        "transcript: {} lines, {} bytes, fnv1a {:016x}\ncapture: {} bytes, fnv1a {:016x}\nevents: {}\n",
        r.transcript.lines().count(),
        r.transcript.len(),
        fnv(r.transcript.as_bytes()),
        r.capture.len(),
        fnv(&r.capture),
        r.events.len()
    ));
    out
}

include!(concat!(env!("OUT_DIR"), "/scenario_tests.rs"));
