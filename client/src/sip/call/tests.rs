use super::*;

fn ctx() -> Ctx {
    Ctx {
        mode: Mode::Cucm,
        transport: "TCP",
        local_host: "csfalice.invalid".into(),
        local_ip: "10.1.0.100".into(),
        contact: "<sip:a@csfalice.invalid;transport=tcp>".into(),
        line: "1001".into(),
        registrar: "cucm1.example.com".into(),
        route: None,
    }
}

fn methods(sends: &mut Vec<Send>) -> Vec<String> {
    std::mem::take(sends)
        .into_iter()
        .map(|s| match s {
            Send::Request(t) => t.request().method().unwrap_or("").to_owned(),
            Send::Message(m) => m.method().unwrap_or("").to_owned(),
        })
        .collect()
}

#[test]
fn a_2xx_crossing_our_cancel_is_acknowledged_and_ended() {
    let mut c = Calls::new(1, Timers::default(), (16384, 32766));
    let t = Time::ZERO;
    c.act(t, &ctx(), &CallAction::Dial { to: "1002".into() });
    let invite = c.calls[0].invite.clone().expect("sent");
    c.act(t, &ctx(), &CallAction::End);
    assert_eq!(methods(&mut c.sends), ["INVITE", "CANCEL"]);
    let mut ok = invite.response(200, "OK", Some("callee"));
    ok.push("Contact", "<sip:b@csfbob.invalid;transport=tcp>");
    c.on_response(t, &ctx(), &ok);
    assert_eq!(methods(&mut c.sends), ["ACK", "BYE"]);
    // The same 2xx again: acknowledged, no second BYE.
    c.on_response(t, &ctx(), &ok);
    assert_eq!(methods(&mut c.sends), ["ACK"]);
}

/// Alice's connected call to 1002; then bob REFERs her to 1003 and her phone calls 1003.
fn referred(c: &mut Calls) -> String {
    let t = Time::ZERO;
    c.act(t, &ctx(), &CallAction::Dial { to: "1002".into() });
    let invite = c.calls[0].invite.clone().expect("sent");
    let mut ok = invite.response(200, "OK", Some("callee"));
    ok.push("Contact", "<sip:b@csfbob.invalid;transport=tcp>");
    c.on_response(t, &ctx(), &ok);
    let (call_id, tag) = (c.calls[0].call_id.clone(), c.calls[0].local_tag.clone());
    let refer = format!(
        "REFER sip:a@csfalice.invalid SIP/2.0\r\nVia: SIP/2.0/TCP 10.1.0.11;branch=z9hG4bKr1\r\n\
         From: <sip:1002@cucm1.example.com>;tag=callee\r\n\
         To: <sip:1001@cucm1.example.com>;tag={tag}\r\nCall-ID: {call_id}\r\n\
         CSeq: 7 REFER\r\nMax-Forwards: 70\r\n\
         Refer-To: <sip:1003@cucm1.example.com>\r\nContent-Length: 0\r\n\r\n"
    );
    let refer = sip::parse(refer.as_bytes()).expect("a REFER");
    let r = c.on_request(t, &ctx(), &refer).expect("answered");
    assert_eq!(r.code(), Some(202));
    c.calls[1].call_id.clone()
}

fn sipfrags(sends: &mut Vec<Send>) -> Vec<String> {
    std::mem::take(sends)
        .into_iter()
        .filter_map(|s| match s {
            Send::Request(t) if t.request().method() == Some("NOTIFY") => {
                Some(String::from_utf8_lossy(&t.request().body).trim().to_owned())
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_referred_call_that_fails_tells_the_transferor_how() {
    // RFC 3515 §2.4.5: Trying first, then the final outcome, whatever ends the call.
    let mut c = Calls::new(1, Timers::default(), (16384, 32766));
    referred(&mut c);
    assert_eq!(sipfrags(&mut c.sends), ["SIP/2.0 100 Trying"]);
    c.act(Time::ZERO, &ctx(), &CallAction::End);
    assert_eq!(sipfrags(&mut c.sends), ["SIP/2.0 487 Request Terminated"]);

    let mut c = Calls::new(2, Timers::default(), (16384, 32766));
    let target = referred(&mut c);
    c.sends.clear();
    c.on_timeout(Time::ZERO, &ctx(), &target);
    assert_eq!(sipfrags(&mut c.sends), ["SIP/2.0 408 Request Timeout"]);
}

#[test]
fn declined_video_closes_its_port_and_may_be_asked_again() {
    let mut c = Calls::new(3, Timers::default(), (16384, 32766));
    let t = Time::ZERO;
    c.act(t, &ctx(), &CallAction::Dial { to: "1002".into() });
    let invite = c.calls[0].invite.clone().expect("sent");
    let mut ok = invite.response(200, "OK", Some("callee"));
    ok.push("Contact", "<sip:b@csfbob.invalid;transport=tcp>");
    ok.body = sdp("10.1.0.101", 20000, 9, "sendrecv").into_bytes();
    c.on_response(t, &ctx(), &ok);
    c.sends.clear();
    let video = CallAction::Feature { name: "video".into() };
    c.act(t, &ctx(), &video);
    let port = c.calls[0].video_port.expect("offered");
    let Some(Send::Request(reinvite)) = c.sends.pop() else { panic!("a re-INVITE") };
    // The answer declines video: audio only (m=video 0).
    let mut ok = reinvite.request().response(200, "OK", Some("callee"));
    ok.body =
        sdp_answer("10.1.0.101", 20000, None, 9, "sendrecv", &reinvite.request().body).into_bytes();
    assert!(String::from_utf8_lossy(&ok.body).contains("m=video 0 "));
    c.on_response(t, &ctx(), &ok);
    assert_eq!(c.calls[0].video_port, None);
    assert!(c.media.contains(&Output::MediaClose { port }));
    c.sends.clear();
    c.act(t, &ctx(), &video);
    assert_eq!(methods(&mut c.sends), ["INVITE"], "video may be asked for again");
}

#[test]
fn answers_mirror_the_offers_m_lines() {
    // RFC 3264 §6: as many m-lines as offered, in order; what we do not take gets port 0.
    let offer = "v=0\r\nc=IN IP4 10.1.0.101\r\nm=video 5000 RTP/AVP 126\r\n\
                 m=audio 4000 RTP/AVP 0\r\nm=application 6000 UDP/BFCP *\r\n\
                 m=audio 4002 RTP/AVP 8\r\n";
    let m = |s: String| -> Vec<String> {
        s.lines().filter(|l| l.starts_with("m=")).map(str::to_owned).collect()
    };
    let a = sdp_answer("10.1.0.100", 16384, None, 1, "sendrecv", offer.as_bytes());
    assert_eq!(
        m(a),
        [
            "m=video 0 RTP/AVP 126",
            "m=audio 16384 RTP/AVP 102 9 0 8 18 101",
            "m=application 0 UDP/BFCP *",
            "m=audio 0 RTP/AVP 8"
        ]
    );
    let a = sdp_answer("10.1.0.100", 16384, Some(24576), 1, "sendrecv", offer.as_bytes());
    assert!(m(a)[0].starts_with("m=video 24576 "));
    // No offer (an offerless INVITE): our own offer, audio only.
    assert_eq!(m(sdp_answer("10.1.0.100", 16384, None, 1, "sendrecv", b"")).len(), 1);
}

#[test]
fn ended_calls_are_forgotten_but_the_last_few() {
    let mut c = Calls::new(1, Timers::default(), (16384, 32766));
    for _ in 0..20 {
        c.act(Time::ZERO, &ctx(), &CallAction::Dial { to: "1002".into() });
        c.act(Time::ZERO, &ctx(), &CallAction::End);
    }
    assert!(c.calls.len() <= KEEP_ENDED + 1, "{}", c.calls.len());
}

#[test]
fn media1_splits_the_range_as_the_document_does() {
    assert_eq!(audio_range((3000, 4000)), (3000, 3501));
    assert_eq!(video_range((3000, 4000)), (3502, 4000));
    assert_eq!(audio_range((16384, 32766)), (16384, 24574));
    assert_eq!(video_range((16384, 32766)), (24575, 32766));
}

#[test]
fn sdp_offers_the_media3_codecs_and_reads_direction() {
    let o = sdp("10.1.0.100", 3000, 7, "sendonly");
    assert!(o.contains("m=audio 3000 RTP/AVP 102 9 0 8 18 101"));
    for c in ["G7221/16000", "G722/8000", "PCMU/8000", "PCMA/8000", "G729/8000", "telephone-event"]
    {
        assert!(o.contains(c), "{c}");
    }
    assert_eq!(direction(o.as_bytes()), "sendonly");
    assert_eq!(direction(b"v=0\r\n"), "sendrecv");
}
