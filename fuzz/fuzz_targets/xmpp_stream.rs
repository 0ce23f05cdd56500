//! The XMPP framer never panics, keeps its buffer bounded, and every stanza it yields
//! serialises to XML it parses back to the same tree.
#![no_main]

use uclab_proto::xmpp::{Frame, Framer, MAX_STANZA, parse_element};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut f = Framer::new();
    // Feed in two pieces to exercise partial input.
    let cut = data.first().map_or(0, |&b| b as usize % (data.len() + 1));
    for part in [&data[..cut], &data[cut..]] {
        match f.feed(part) {
            Ok(frames) => {
                for fr in frames {
                    if let Frame::Stanza(e) = fr {
                        let xml = e.to_xml();
                        assert!(xml.len() <= 8 * MAX_STANZA + 64);
                        assert_eq!(parse_element(xml.as_bytes()).as_ref(), Ok(&e));
                    }
                }
            }
            Err(_) => break,
        }
    }
});
