//! The STUN Binding decoder (RFC 5389; the MRA softphone's keepalive, issue 17): any bytes are
//! a message, "more needed" or a `StunError`, never a panic; a decoded message encodes to bytes
//! that decode to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uclab_proto::stun::decode;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((m, used))) = decode(data) {
        assert!(used <= data.len());
        let again = m.encode();
        assert_eq!(decode(&again), Ok(Some((m, again.len()))));
    }
});
