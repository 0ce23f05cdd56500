//! Scenario validation never panics: any text is a scenario or a list of file:line:col errors.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = uclab_sim::parse("fuzz.toml", text, std::path::Path::new("fuzz.toml"));
    }
});
