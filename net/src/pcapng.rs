//! The pcapng blocks a capture is written with (one Ethernet interface, nanosecond timestamps,
//! the TLS key log in Decryption Secrets Blocks).

use std::borrow::Cow;
use std::time::Duration;

use pcap_file::DataLink;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};

/// Frame bytes `data` as a pcapng Enhanced Packet Block, stamped `epoch` + `time`.
pub(crate) fn epb(epoch: Duration, time: Duration, data: &[u8]) -> EnhancedPacketBlock<'_> {
    EnhancedPacketBlock {
        interface_id: 0,
        timestamp: epoch + time,
        original_len: data.len() as u32,
        data: Cow::Borrowed(data),
        options: vec![],
    }
}

/// The section header: written by uclab.
pub(crate) fn section_header() -> SectionHeaderBlock<'static> {
    SectionHeaderBlock {
        options: vec![SectionHeaderOption::UserApplication(Cow::Borrowed("uclab"))],
        ..SectionHeaderBlock::default()
    }
}

/// The one interface: Ethernet, nanosecond timestamps.
pub(crate) fn interface() -> InterfaceDescriptionBlock<'static> {
    InterfaceDescriptionBlock {
        linktype: DataLink::ETHERNET,
        snaplen: 0,
        options: vec![
            InterfaceDescriptionOption::IfName(Cow::Borrowed("uclab0")),
            InterfaceDescriptionOption::IfTsResol(9),
        ],
    }
}

/// Largest Decryption Secrets Block payload written.
pub(crate) const DSB_MAX: usize = 1 << 20;

/// A pcapng Decryption Secrets Block (pcapng draft §4.7) with a TLS key log, big-endian like
/// our section header.
pub(crate) fn decryption_secrets_block(secrets: &[u8]) -> Vec<u8> {
    const DSB: u32 = 0x0000_000A;
    const TLS_KEY_LOG: u32 = 0x544c_534b; // "TLSK"
    let padded = secrets.len().div_ceil(4) * 4;
    let total = (4 + 4 + 4 + 4 + padded + 4) as u32;
    let mut b = Vec::with_capacity(total as usize);
    b.extend_from_slice(&DSB.to_be_bytes());
    b.extend_from_slice(&total.to_be_bytes());
    b.extend_from_slice(&TLS_KEY_LOG.to_be_bytes());
    b.extend_from_slice(&(secrets.len() as u32).to_be_bytes());
    b.extend_from_slice(secrets);
    b.resize(b.len() + padded - secrets.len(), 0);
    b.extend_from_slice(&total.to_be_bytes());
    b
}
