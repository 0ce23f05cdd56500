//! The client's XML readers (CAS, UDS, TFTP documents) and the provisioning URL parser never
//! panic on any input, and stay within their bounds.
#![no_main]

use uclab_proto::{provision, uds};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = uds::Doc::parse(data);
    let _ = uds::parse_cas(data);
    let _ = uds::parse_cluster_user(data);
    let _ = uds::parse_user_profile_uri(data);
    let _ = uds::parse_devices(data);
    let _ = uds::parse_product_type(data);
    let _ = uds::parse_profile_settings(data);
    let _ = uds::parse_config_file(data);
    let _ = uds::parse_cnf_config_file(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = provision::parse(s);
    }
});
