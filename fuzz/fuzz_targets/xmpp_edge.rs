//! Expressway-E's XMPP edge session (issue 17, SPEC MRA1): whatever a client sends, in any
//! pieces, before and after STARTTLS and while a channel is open, the session answers with
//! actions and never panics; once it says it is done it stays done.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use uclab_mocks::expressway::xmpp_edge::{Action, EdgeSession};

fuzz_target!(|data: &[u8]| {
    let mut s = EdgeSession::new(vec!["example.com".into()], "expe.example.com", Duration::ZERO);
    let mut now = Duration::ZERO;
    // The first byte picks where the pieces are cut.
    let step = usize::from(data.first().copied().unwrap_or(7)).max(1);
    for piece in data.chunks(step) {
        now += Duration::from_millis(5);
        s.handle_client(now, piece);
        while let Some(a) = s.poll() {
            match a {
                Action::StartTls => s.handle_tls_up(now),
                Action::Open(_) => s.handle_inside(now, b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"),
                _ => {}
            }
        }
        if s.is_done() {
            s.handle_client(now, piece);
            assert!(s.is_done());
            return;
        }
    }
    s.handle_channel_closed("fuzz");
    while s.poll().is_some() {}
});
