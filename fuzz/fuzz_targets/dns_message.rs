//! The DNS codec never panics, and what it accepts summarises.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(m) = uclab_proto::dns::DnsMsg::parse(data) {
        let _ = m.summary();
    }
});
