//! The capture checker used by the scenario tests must catch broken captures.

mod common;

use std::path::Path;

fn showcase_capture() -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios/showcase/discovery-inside-outside.toml");
    let s = uclab_sim::load(&p).unwrap();
    uclab_sim::run(&s, s.seed).capture
}

fn rejects(bytes: Vec<u8>) -> bool {
    std::panic::catch_unwind(move || common::check_capture("mutated", &bytes)).is_err()
}

#[test]
fn valid_capture_passes() {
    common::check_capture("showcase", &showcase_capture());
}

#[test]
fn flipped_bytes_in_frames_are_caught() {
    let good = showcase_capture();
    // Flip one byte inside each of many frames' IP/TCP/UDP headers: every flip must be caught
    // (by a checksum, or by seq/ack continuity).
    let mut caught = 0;
    let mut tried = 0;
    let mut i = 200; // past the section and interface headers
    while i + 60 < good.len() && tried < 40 {
        let mut bad = good.clone();
        bad[i] ^= 0x10;
        tried += 1;
        caught += usize::from(rejects(bad));
        i += 97;
    }
    // Flips that land in block headers, padding or MAC addresses are not payload errors; most
    // land in checked fields.
    assert!(caught * 2 > tried, "only {caught} of {tried} corruptions caught");
}
