//! SIP federation (issue 18, SPEC FED3): whatever a federated peer sends (messages cut at NUL,
//! each parsed as SIP and handed to the endpoint, with the clock moved by a `0x01 secs` piece),
//! the endpoint never panics, answers every request it takes exactly once, and its tables stay
//! bounded by what was asked: subscriptions only for known users.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use uclab_mocks::sipfed::{Endpoint, Output, Signal};
use uclab_net::SeededRng;
use uclab_proto::sip;

fuzz_target!(|data: &[u8]| {
    let mut ep = Endpoint::new("example.com", "imp1.example.com", SeededRng::new(1, "fuzz"));
    let mut now = Duration::from_secs(1000);
    // Some requests of ours so that answers and NOTIFYs can find them.
    ep.subscribe(now, "alice@example.com", "bob@lync.example.net");
    ep.message(now, "alice@example.com/pc", "bob@lync.example.net", "hi");
    let peer = |d: &str| if d == "lync.example.net" { Ok(()) } else { Err(format!("not {d}")) };
    let known = |u: &str| u == "alice@example.com";
    let mut requests = 0usize;
    let mut answers = 0usize;
    for (n, part) in data.split(|&b| b == 0).enumerate() {
        if let [1, secs, ..] = part {
            now += Duration::from_secs(u64::from(*secs) * 60);
            ep.handle_timeout(now);
        } else if let Ok(m) = sip::parse(part) {
            if m.code().is_none() && m.method() != Some("ACK") {
                requests += 1;
            }
            ep.handle(now, n as u64, m, &peer, &known);
        }
        while let Some(o) = ep.poll_output() {
            match o {
                Output::Response { msg, .. } => {
                    assert!(msg.code().is_some());
                    answers += 1;
                }
                Output::Request { msg, .. } => assert!(msg.code().is_none()),
                Output::Signal(Signal::Subscribe { user, .. }) => assert!(known(&user)),
                Output::Signal(Signal::Message { to, .. }) => assert!(known(&to)),
                Output::Signal(_) => {}
            }
        }
        assert_eq!(requests, answers, "every request answered once");
    }
    assert!(ep.watchers("alice@example.com").len() <= requests);
});
