//! XMPP server-to-server streams (issue 18, SPEC FED1): whatever a peer sends, in any pieces,
//! at any pace (the first byte picks the configurations and certificates, the second the size
//! of the pieces), to an inbound, an outbound or a verifier stream, the engine answers with
//! actions and never panics; nothing follows its `Close` but bounces, stanzas are handed on
//! only once the peer is authenticated, and every stanza given to an outbound stream is sent
//! or bounced.
#![no_main]

use std::rc::Rc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use uclab_mocks::s2s::{Action, S2sConfig, Stream};
use uclab_proto::xmpp::{self, Element};

const HERE: &str = "example.com";
const THERE: &str = "partner.example.org";

fn cfg(domain: &str, flags: u8) -> Rc<S2sConfig> {
    Rc::new(S2sConfig {
        domains: vec![domain.into()],
        secret: "s3cr3t".into(),
        sasl_external: flags & 1 != 0,
        dialback: flags & 2 != 0,
    })
}

#[derive(Default)]
struct Seen {
    closed: bool,
    authenticated: bool,
    verified: bool,
    /// Stanzas given to `send_stanza`, written and bounced.
    given: usize,
    written: usize,
    bounced: usize,
}

/// Drains `s`, answering as the I/O would (TLS up with `names`, dialback checks `valid`), and
/// checks what must hold whatever the peer sent.
fn drain(s: &mut Stream, now: Duration, names: &[String], valid: bool, seen: &mut Seen) {
    while let Some(a) = s.poll() {
        assert!(!seen.closed || matches!(a, Action::Bounce(..)), "{a:?} after Close");
        match a {
            Action::StartTls { .. } => s.handle_tls(now, names.to_vec()),
            Action::Verify { domain, .. } => s.handle_verified(now, &domain, valid),
            Action::Stanza(_) => assert!(seen.authenticated, "a stanza before authentication"),
            Action::Authenticated { .. } => {
                assert!(!seen.authenticated, "authenticated twice");
                seen.authenticated = true;
            }
            Action::Verified { .. } => {
                assert!(!seen.verified, "answered twice");
                seen.verified = true;
            }
            Action::Bounce(v, _) => seen.bounced += v.len(),
            Action::Send(b) if seen.authenticated => {
                seen.written += String::from_utf8_lossy(&b).matches("<message ").count();
            }
            Action::Close => seen.closed = true,
            Action::Send(_) | Action::Log { .. } => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let &[flags, step, ref rest @ ..] = data else { return };
    let step = usize::from(step).max(1);
    let names = match flags >> 4 & 3 {
        0 => Vec::new(),
        1 => vec![HERE.to_owned()],
        2 => vec![THERE.to_owned()],
        _ => vec!["*.example.org".to_owned(), HERE.to_owned()],
    };
    let valid = flags & 64 != 0;
    // Half the runs start with a well-formed header, so that pieces reach the later stages.
    let mut input = Vec::new();
    if flags & 128 != 0 {
        input.extend_from_slice(xmpp::server_stream_header(HERE, THERE, Some("id1")).as_bytes());
    }
    input.extend_from_slice(rest);
    let t0 = Duration::from_secs(1000);
    let streams = [
        Stream::inbound(cfg(THERE, flags), "in-1".into(), t0),
        Stream::outbound(cfg(HERE, flags >> 2), HERE, THERE, t0),
        Stream::verifier(cfg(THERE, flags), THERE, HERE, "id1", "k", t0),
    ];
    for mut s in streams {
        let mut seen = Seen::default();
        let mut now = t0;
        drain(&mut s, now, &names, valid, &mut seen);
        // NUL (never in XML) cuts the input into reads; a read starting with 0x01 is the
        // clock instead, moving on by its second byte in seconds (past every deadline).
        for part in input.split(|&b| b == 0) {
            if let [1, secs, ..] = part {
                now += Duration::from_secs(u64::from(*secs));
                if s.poll_timeout().is_some_and(|t| t <= now) {
                    s.handle_timeout(now);
                }
                drain(&mut s, now, &names, valid, &mut seen);
                continue;
            }
            for piece in part.chunks(step) {
                now += Duration::from_millis(10);
                let m = Element::new("message")
                    .attr("from", "a@example.com")
                    .attr("to", "b@partner.example.org");
                s.send_stanza(now, m);
                seen.given += 1;
                s.handle_bytes(now, piece);
                drain(&mut s, now, &names, valid, &mut seen);
                if s.is_done() {
                    s.handle_bytes(now, piece);
                    assert!(s.is_done(), "done stays done");
                }
            }
        }
        s.handle_closed(now);
        drain(&mut s, now, &names, valid, &mut seen);
        assert!(s.is_done());
        assert_eq!(s.poll_timeout(), None, "no timer outlives the stream");
        // Outbound: every stanza given went out or came back (the rest were never ours to
        // send: inbound and verifier streams bounce all).
        assert_eq!(seen.given, seen.written + seen.bounced, "a stanza lost");
    }
});
