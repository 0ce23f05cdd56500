//! The PIDF reader of SIP federation (SPEC FED3, issue 18): any bytes are a state or a
//! `PidfError`, never a panic; a state written as PIDF reads back as the same state.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uclab_proto::pidf::FederatedState;

fuzz_target!(|data: &[u8]| {
    if let Ok(state) = FederatedState::from_pidf(data) {
        let doc = state.pidf("sip:fuzz@example.net");
        assert_eq!(FederatedState::from_pidf(doc.as_bytes()), Ok(state));
    }
});
