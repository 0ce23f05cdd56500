//! Every scenario file runs: it passes with its seed, replays byte for byte, passes with a
//! second seed, its transcript matches the insta snapshot, and its capture reads back as valid
//! frames (checksums, TCP seq/ack continuity).

mod common;

use std::path::Path;

use uclab_sim::{load, run};

fn check_scenario(rel: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    let s = load(&path).unwrap_or_else(|e| panic!("{rel} does not check: {e:?}"));
    let a = run(&s, s.seed);
    let failures: Vec<String> = a
        .verdicts
        .iter()
        .filter(|v| !v.passed)
        .map(|v| format!("line {}: {}", v.expect.line, v.detail))
        .collect();
    assert!(
        a.passed,
        "{rel} failed with seed {}: {:?} {failures:#?}\n{}",
        s.seed, a.error, a.transcript
    );

    // Same scenario + same seed ⇒ byte-identical capture and transcript.
    let b = run(&s, s.seed);
    assert_eq!(a.transcript, b.transcript, "{rel}: transcript differs between two runs");
    assert!(a.capture == b.capture, "{rel}: capture differs between two runs");

    // A second seed must pass too.
    let other = s.seed.wrapping_add(1000);
    let c = run(&s, other);
    assert!(c.passed, "{rel} failed with seed {other}:\n{}", c.transcript);

    common::check_capture(rel, &a.capture);
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
    insta::with_settings!({ snapshot_path => "snapshots", prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!(format!("{suite}__{}", s.name), a.transcript);
    });
}

include!(concat!(env!("OUT_DIR"), "/scenario_tests.rs"));
