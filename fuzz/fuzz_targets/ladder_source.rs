//! A run directory's files, however broken, never make the ladder panic: messages.jsonl is
//! records or a file:line:col error, and any transcript text is drawn as text and as a page.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (transcript, jsonl) = text.split_once('\0').unwrap_or((text, ""));
    let messages = uclab_sim::ladder::data::from_jsonl(jsonl, "messages.jsonl").unwrap_or_default();
    let src = uclab_sim::ladder::Source {
        transcript: transcript.into(),
        messages: messages.into(),
        ..Default::default()
    };
    let only = uclab_sim::ladder::Filter { only: vec!["sip".into()], ..Default::default() };
    for filter in [uclab_sim::ladder::Filter::default(), only] {
        let l = uclab_sim::ladder::Ladder::build(&src, &filter);
        let t = uclab_sim::ladder::text(&l);
        assert!(t.lines().all(|line| line.chars().count() <= uclab_sim::ladder::WIDTH + 200));
        let _ = uclab_sim::ladder::html(&l);
    }
});
