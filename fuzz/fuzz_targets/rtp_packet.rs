//! RTP: the packet reader never panics; a packet that reads writes back to bytes that read to
//! the same packet (once CSRCs, extension and padding are gone); telephone-event payloads and
//! the DTMF collector take anything.
#![no_main]

use uclab_proto::rtp::{DtmfReceiver, Rtp, TelephoneEvent};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut rx = DtmfReceiver::default();
    if let Ok(p) = Rtp::parse(data) {
        assert_eq!(Rtp::parse(&p.to_bytes()).as_ref(), Ok(&p));
        let _ = TelephoneEvent::parse(&p.payload);
        let _ = rx.feed(&p);
    }
});
