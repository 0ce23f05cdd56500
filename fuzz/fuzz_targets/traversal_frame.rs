//! The traversal zones' frame decoder (SPEC MRA1, issue 17): any bytes are frames, "need
//! more" or a `FrameError`, never a panic; every frame decoded encodes back to bytes that
//! decode to the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uclab_mocks::expressway::traversal::Frame;

fuzz_target!(|data: &[u8]| {
    let mut buf = data.to_vec();
    while let Ok(Some(f)) = Frame::decode(&mut buf) {
        let mut again = f.encode();
        assert_eq!(Frame::decode(&mut again), Ok(Some(f)));
        assert!(again.is_empty());
    }
});
