use super::frame::{Frame, FrameError, StreamFramer};
use super::*;

const REG: &str = "REGISTER sip:10.1.0.11 SIP/2.0\r\n\
Via: SIP/2.0/TCP 10.1.2.1:50001;branch=z9hG4bKd451a4fa\r\n\
From: <sip:1001@10.1.0.11>;tag=0024142ddf\r\n\
To: <sip:1001@10.1.0.11>\r\n\
Call-ID: 0024142d-df24000a@10.1.2.1\r\n\
Max-Forwards: 70\r\n\
CSeq: 11435 REGISTER\r\n\
Contact: <sip:9e9e1ffb@10.1.2.1:50001;transport=tcp>;+sip.instance=\"<urn:uuid:00000000-0000-0000-0000-0024142ddf24>\";+u.sip!devicename.ccm.cisco.com=\"CSFALICE\"\r\n\
Expires: 3600\r\n\
Content-Length: 0\r\n\r\n";

#[test]
fn reads_a_cisco_register() {
    let m = parse(REG.as_bytes()).unwrap();
    assert_eq!(m.method(), Some("REGISTER"));
    assert_eq!(m.cseq(), Some((11435, "REGISTER")));
    assert_eq!(m.expires(), Some(3600));
    let c = m.name_addr("Contact").unwrap();
    assert_eq!(c.uri, "sip:9e9e1ffb@10.1.2.1:50001;transport=tcp");
    assert_eq!(c.param("+u.sip!devicename.ccm.cisco.com"), Some(Some("\"CSFALICE\"")));
    assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bKd451a4fa"));
    // Written back, it reads the same.
    assert_eq!(parse(&m.to_bytes()).unwrap(), m);
}

#[test]
fn folding_compact_forms_and_lf_only_are_read() {
    let text = "OPTIONS sip:cucm1.example.com SIP/2.0\n\
        v: SIP/2.0/UDP 10.1.2.1;branch=z9hG4bK1\n\
        f: <sip:a@example.com>\n  ;tag=1\n\
        t: <sip:cucm1.example.com>\n\
        i: x1\n\
        CSEQ :  1\n\tOPTIONS\n\
        l: 0\n\n";
    let m = parse(text.as_bytes()).unwrap();
    assert_eq!(m.get("From"), Some("<sip:a@example.com> ;tag=1"));
    assert_eq!(m.tag("From").as_deref(), Some("1"));
    assert_eq!(m.cseq(), Some((1, "OPTIONS")));
    assert_eq!(m.call_id(), Some("x1"));
    assert!(m.to_bytes().starts_with(b"OPTIONS sip:cucm1.example.com SIP/2.0\r\nVia: "));
}

#[test]
fn rejections_name_their_status() {
    let status = |t: &str| parse(t.as_bytes()).unwrap_err().rejection.status;
    assert_eq!(status(&REG.replace("SIP/2.0\r\nVia", "SIP/3.0\r\nVia")), 505);
    assert_eq!(status(&REG.replace("CSeq: 11435 REGISTER", "CSeq: 11435 INVITE")), 400);
    assert_eq!(status(&REG.replace("Content-Length: 0", "Content-Length: 10")), 400);
    assert_eq!(status(&REG.replace("Max-Forwards: 70", "Max-Forwards: 256")), 400);
    assert_eq!(status(&REG.replace("Call-ID: 0024142d-df24000a@10.1.2.1\r\n", "")), 400);
    assert_eq!(status(&REG.replace("REGISTER sip:10.1.0.11", "REGISTER sip:10.1.0.11?x=y")), 400);
    let big = format!("{REG}{}", "x".repeat(MAX_MESSAGE));
    assert_eq!(status(&big), 513);
    // What could be read is kept, for the error response.
    let e =
        parse(REG.replace("CSeq: 11435 REGISTER", "CSeq: 11435 INVITE").as_bytes()).unwrap_err();
    let r = e.partial.unwrap().response(400, "Bad Request", Some("t"));
    assert_eq!(r.get("To"), Some("<sip:1001@10.1.0.11>;tag=t"));
}

#[test]
fn framer_splits_a_stream_by_content_length_and_answers_pings() {
    let mut f = StreamFramer::new();
    let body = "v=0\r\n";
    let inv = REG.replace("Content-Length: 0", &format!("Content-Length: {}", body.len())) + body;
    let stream = format!("\r\n\r\n{inv}{REG}\r\n");
    // Byte by byte: nothing comes out early.
    let mut frames = Vec::new();
    for b in stream.as_bytes() {
        f.feed(&[*b]);
        while let Some(fr) = f.next_frame().unwrap() {
            frames.push(fr);
        }
    }
    assert_eq!(frames.len(), 3, "{frames:?}");
    assert_eq!(frames[0], Frame::Ping);
    assert_eq!(frames[1], Frame::Message(inv.into_bytes()));
    assert_eq!(frames[2], Frame::Message(REG.as_bytes().to_vec()));
    assert_eq!(f.finish(), Ok(()));
    // A head that never ends is refused at the limit; a bad length at once.
    let mut f = StreamFramer::new();
    f.feed(&vec![b'a'; MAX_MESSAGE + 1]);
    assert_eq!(f.next_frame(), Err(FrameError::TooLarge));
    let mut f = StreamFramer::new();
    f.feed(REG.replace("Content-Length: 0", "Content-Length: -5").as_bytes());
    assert!(matches!(f.next_frame(), Err(FrameError::BadLength(_))));
    // A length beyond any integer, and a flood of line ends: refused, bounded.
    let mut f = StreamFramer::new();
    f.feed(b"OPTIONS sip:x SIP/2.0\r\nl: 18446744073709551615\r\n\r\n");
    assert!(matches!(f.next_frame(), Err(FrameError::BadLength(_))));
    let mut f = StreamFramer::new();
    f.feed(b"OPTIONS sip:x SIP/2.0\r\nl: 18446744073709551616\r\n\r\n");
    assert!(matches!(f.next_frame(), Err(FrameError::BadLength(_))));
    let mut f = StreamFramer::new();
    for _ in 0..10_000 {
        f.feed(b"\n\n\n\n\n\n\n\n");
        assert_eq!(f.next_frame(), Ok(None));
    }
    f.feed(REG.as_bytes());
    assert_eq!(f.next_frame(), Ok(Some(Frame::Message(REG.as_bytes().to_vec()))));
    let mut f = StreamFramer::new();
    f.feed(&REG.as_bytes()[..40]);
    assert_eq!(f.next_frame(), Ok(None));
    assert!(matches!(f.finish(), Err(FrameError::Truncated(_))));
}

#[test]
fn every_corpus_message_reads_or_is_refused_without_panic() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../corpora/sip");
    let mut n = 0;
    for dir in ["rfc4475/dat", "rfc5118"] {
        for e in std::fs::read_dir(format!("{root}/{dir}")).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "dat") {
                let bytes = std::fs::read(&p).unwrap();
                let _ = parse(&bytes);
                let mut f = StreamFramer::new();
                f.feed(&bytes);
                while let Ok(Some(_)) = f.next_frame() {}
                n += 1;
            }
        }
    }
    assert_eq!(n, 61);
}

#[test]
fn valid_torture_messages_parse() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../corpora/sip");
    for f in [
        "rfc4475/dat/wsinv.dat",
        "rfc4475/dat/esc01.dat",
        "rfc4475/dat/escnull.dat",
        "rfc4475/dat/lwsdisp.dat",
        "rfc4475/dat/longreq.dat",
        "rfc4475/dat/semiuri.dat",
        "rfc4475/dat/transports.dat",
        "rfc4475/dat/mpart01.dat",
        "rfc4475/dat/unreason.dat",
        "rfc4475/dat/noreason.dat",
        "rfc4475/dat/inv2543.dat",
        "rfc5118/ipv6-good.dat",
        "rfc5118/via-received-param-no-delim.dat",
        "rfc5118/ipv4-mapped-ipv6.dat",
    ] {
        let bytes = std::fs::read(format!("{root}/{f}")).unwrap();
        if let Err(e) = parse(&bytes) {
            panic!("{f}: {e}");
        }
    }
    let wsinv = parse(&std::fs::read(format!("{root}/rfc4475/dat/wsinv.dat")).unwrap()).unwrap();
    assert_eq!(wsinv.vias().len(), 3, "Via and v: with two values");
    assert_eq!(wsinv.cseq(), Some((9, "INVITE")));
    assert_eq!(wsinv.get("Max-Forwards"), Some("0068"));
}

#[test]
fn quoted_parameter_values_keep_their_semicolons() {
    // Kamailio's registrar answers with the source address as a quoted `received`.
    let v = "<sip:u@csf.invalid;transport=tcp>;expires=120;received=\"sip:127.0.0.1:53502;transport=tcp\";+sip.instance=\"<urn:uuid:1>\"";
    let na = parse_name_addr(v).expect("parses");
    assert_eq!(na.param("expires"), Some(Some("120")));
    assert_eq!(na.param("received"), Some(Some("\"sip:127.0.0.1:53502;transport=tcp\"")));
    assert!(parse_name_addr("<sip:u@h>;a=\"open;").is_err(), "an unclosed quote is refused");
}

/// Issue 17: the MRA softphone's STUN keepalive shares the SIP connection to the edge; the
/// framer hands a whole STUN message out between SIP messages, byte by byte too, and takes
/// binary that is neither for lost framing.
#[test]
fn framer_tells_stun_from_sip_on_one_stream() {
    let stun = crate::stun::Binding::request([7; 12]).encode();
    let mut stream = stun.clone();
    stream.extend_from_slice(REG.as_bytes());
    stream.extend_from_slice(&stun);
    let mut f = StreamFramer::new();
    let mut frames = Vec::new();
    for b in &stream {
        f.feed(&[*b]);
        while let Some(fr) = f.next_frame().unwrap() {
            frames.push(fr);
        }
    }
    assert_eq!(
        frames,
        [Frame::Stun(stun.clone()), Frame::Message(REG.as_bytes().to_vec()), Frame::Stun(stun)]
    );
    let mut f = StreamFramer::new();
    f.feed(&[0, 1, 0, 0, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert!(matches!(f.next_frame(), Err(FrameError::BadLength(_))));
}

/// `canonical` searches CANONICAL by halves: it must be in case-insensitive order, and every
/// spelling of a known name finds it.
#[test]
fn canonical_names_are_ordered_and_found() {
    for w in CANONICAL.windows(2) {
        assert_eq!(cmp_ignoring_case(w[0], w[1]), std::cmp::Ordering::Less, "{w:?}");
    }
    for c in CANONICAL {
        assert_eq!(canonical(&c.to_ascii_lowercase()), *c);
        assert_eq!(canonical(&c.to_ascii_uppercase()), *c);
    }
    assert_eq!(canonical("X-Unknown"), "X-Unknown");
    assert_eq!(canonical("v"), "Via");
}
