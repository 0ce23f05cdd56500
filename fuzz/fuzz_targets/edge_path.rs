//! The Expressway-E path decoder (SPEC MRA1): any path is an `EdgePath` or a `PathError`,
//! never a panic; a decoded proxy target encodes back to a path that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uclab_proto::edge::{EdgePath, parse_path};

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else { return };
    if let Ok(EdgePath::Proxy { target, rest }) = parse_path(path) {
        let again = parse_path(&target.path(&rest));
        assert_eq!(again, Ok(EdgePath::Proxy { target, rest }));
    }
});
