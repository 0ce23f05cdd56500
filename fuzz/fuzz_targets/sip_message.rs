//! SIP: the stream framer and the message reader never panic; a message that reads writes
//! back to bytes that read to the same message; the CUCM mock answers any input without
//! panicking, over a stream and as a datagram.
#![no_main]

use std::net::SocketAddr;
use std::time::Duration;

use uclab_mocks::cucm::sip::{Cluster, SipConfig, SipLine, Transport};
use uclab_proto::sip::frame::{Frame, StreamFramer};
use uclab_proto::sip::parse;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(m) = parse(data) {
        assert_eq!(parse(&m.to_bytes()).as_ref(), Ok(&m));
    }
    let line = SipLine {
        user: "alice".into(),
        extension: "1001".into(),
        device: "CSFALICE".into(),
        password: "lab".into(),
        ..SipLine::default()
    };
    let cfg = SipConfig { domain: "example.com".into(), lines: vec![line], digest: data.len() % 2 == 0, ..SipConfig::default() };
    let mut c = Cluster::new(cfg, 1);
    c.add_node("cucm1.example.com", 5060);
    let peer = SocketAddr::from(([10, 0, 0, 1], 5060));
    let udp = c.udp_flow("cucm1.example.com", peer).expect("node added");
    c.handle(Duration::ZERO, udp, data);
    while c.poll_output().is_some() {}
    let tcp = c.open_stream("cucm1.example.com", Transport::Tcp, peer);
    let mut f = StreamFramer::new();
    let cut = data.first().map_or(0, |&b| b as usize % (data.len() + 1));
    for part in [&data[..cut], &data[cut..]] {
        f.feed(part);
        while let Ok(Some(fr)) = f.next_frame() {
            if let Frame::Message(m) = fr {
                c.handle(Duration::from_secs(1), tcp, &m);
                while c.poll_output().is_some() {}
            }
        }
    }
    let _ = f.finish();
});
