//! What Expressway-C does to SIP and SDP it carries (issue 17, SPEC MRA1, MEDIA1): any message
//! that reads as SIP goes through each rewrite, and any body through the SDP relay rewrite,
//! without a panic; what comes out of a rewrite still reads as SIP.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uclab_mocks::expressway::sip_rewrite::{
    Hop, inward_request, inward_response, outward_request, outward_response,
};

fuzz_target!(|data: &[u8]| {
    let hop = Hop { sent_by: "10.1.0.30:25000".into() };
    let text = String::from_utf8_lossy(data);
    let _ = uclab_proto::sdp::relay(&text, "172.16.1.20", &[36000, 36002]);
    let Some(m) = uclab_proto::sip::read(data) else { return };
    let mut done = Vec::new();
    let mut x = m.clone();
    done.push(inward_request(&mut x, &hop, "10.1.0.30").map(|()| x));
    for f in [inward_response, outward_request, outward_response] {
        let mut x = m.clone();
        done.push(f(&mut x, &hop).map(|()| x));
    }
    for x in done.into_iter().flatten() {
        assert!(uclab_proto::sip::read(&x.to_bytes()).is_some());
    }
});
