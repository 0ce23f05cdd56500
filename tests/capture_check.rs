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

/// Issue 14: a retransmitted SYN repeats the first one's sequence number; a capture where it
/// does not (tshark: "a new tcp session is started with the same ports") is rejected.
#[test]
fn syn_retransmitted_with_a_new_isn_is_caught() {
    let syn = |seq: u32| {
        let b = etherparse::PacketBuilder::ethernet2([2, 0, 10, 1, 0, 100], [2, 0, 10, 1, 0, 11])
            .ipv4([10, 1, 0, 100], [10, 1, 0, 11], 64)
            .tcp(49152, 8443, seq, 64240)
            .syn();
        let mut out = Vec::new();
        b.write(&mut out, &[]).unwrap();
        out
    };
    let capture = |seqs: &[u32]| {
        let mut w = pcap_file::pcapng::PcapNgWriter::new(Vec::new()).unwrap();
        let idb = pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock {
            linktype: pcap_file::DataLink::ETHERNET,
            snaplen: 0,
            options: vec![],
        };
        w.write_pcapng_block(idb).unwrap();
        for (i, s) in seqs.iter().enumerate() {
            let data = syn(*s);
            let epb = pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock {
                interface_id: 0,
                timestamp: std::time::Duration::from_secs(1 + 2 * i as u64),
                original_len: data.len() as u32,
                data: std::borrow::Cow::Owned(data),
                options: vec![],
            };
            w.write_pcapng_block(epb).unwrap();
        }
        w.into_inner()
    };
    common::check_capture("same ISN", &capture(&[1000, 1000, 1000]));
    assert!(rejects(capture(&[1000, 1000, 2000])), "a new ISN on a retransmission");
}
