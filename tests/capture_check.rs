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
    // Where each frame's bytes sit in the file (the key log block comes first, so fixed
    // offsets would miss the frames).
    let mut r = pcap_file::pcapng::PcapNgReader::new(&good[..]).unwrap();
    let mut frames = Vec::new();
    while let Some(b) = r.next_block() {
        if let pcap_file::pcapng::Block::EnhancedPacket(p) = b.unwrap() {
            frames.push(p.data.into_owned());
        }
    }
    let mut tried = 0;
    let mut caught = 0;
    for (n, f) in frames.iter().enumerate().take(40) {
        let pos =
            good.windows(f.len()).position(|w| w == &f[..]).expect("frame bytes are in the file");
        // A byte of the IP, TCP or UDP header or the payload (past the Ethernet header).
        let off = 14 + (n * 7) % (f.len() - 14);
        let mut bad = good.clone();
        bad[pos + off] ^= 0x10;
        tried += 1;
        caught += usize::from(rejects(bad));
    }
    // Every flip changes a checksummed byte (IPv4 header, or TCP/UDP header and payload).
    assert_eq!(caught, tried, "only {caught} of {tried} corruptions caught");
}
