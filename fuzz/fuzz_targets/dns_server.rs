//! The DNS mock answers or drops any datagram without panicking.
#![no_main]

use std::sync::OnceLock;

use uclab_mocks::dns::{Authority, ZoneSource};

fn authority() -> &'static Authority {
    static A: OnceLock<Authority> = OnceLock::new();
    A.get_or_init(|| {
        let z = ZoneSource {
            origin: "example.com".into(),
            text: "_cisco-uds._tcp 60 IN SRV 1 10 8443 cucm1\ncucm1 60 IN A 10.1.0.11\n".into(),
        };
        Authority::new(&[z]).expect("valid zone")
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let src = "10.1.0.100:50000".parse().expect("addr");
    let _ = rt.block_on(authority().answer(data, src, data.first().is_some_and(|b| b & 1 == 1), true));
});
