//! The getEdgeConfigResponse reader (SPEC MRA1): any bytes parse or fail with an `XmlError`,
//! never a panic; what parses renders to a document that parses the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uclab_proto::edge::EdgeConfig;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = EdgeConfig::parse(data) {
        let _ = EdgeConfig::parse(c.render().as_bytes());
    }
});
