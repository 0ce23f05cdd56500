use super::*;
use crate::io::{HttpReq, Owner};
use crate::resolver::ResolverConfig;
use uclab_proto::uds::{
    CucmMember, UdsUser, cnf_xml, jabber_config, service_profile, uds_cluster_user, uds_devices,
    uds_user,
};

fn addr() -> SocketAddr {
    "10.1.0.11:8443".parse().unwrap()
}

fn start() -> SignIn {
    SignIn::start(
        Time::ZERO,
        "alice",
        "lab",
        false,
        "cucm1.example.com",
        addr(),
        Dns::standalone(Owner::SignIn, ResolverConfig::new(vec![])),
        9,
    )
}

fn next_http(s: &mut SignIn) -> HttpReq {
    loop {
        match s.poll_output() {
            Some(Emit::Out(Output::Http(r))) => return r,
            Some(_) => continue,
            None => panic!("no HTTP request"),
        }
    }
}

fn ok(body: String) -> Result<HttpResp, NetError> {
    Ok(HttpResp::new(200, body.into_bytes()))
}

/// Events, with a failure signal as the event the composite reports when it does not
/// fail over.
fn events(s: &mut SignIn) -> Vec<ClientEvent> {
    std::iter::from_fn(|| s.poll_output())
        .filter_map(|o| match o {
            Emit::Out(Output::Event(e)) => Some(e),
            Emit::Signal(Signal::SignInFailed { error, .. }) => {
                Some(ClientEvent::SignInFailed { reason: error.to_string() })
            }
            _ => None,
        })
        .collect()
}

fn user() -> UdsUser {
    UdsUser {
        id: "alice".into(),
        first_name: "A".into(),
        last_name: "B".into(),
        extension: "1001".into(),
        email: "alice@example.com".into(),
        im_and_presence: true,
        service_profile: "SPDefault.cnf.xml".into(),
        devices: vec!["CSFALICE".into()],
    }
}

#[test]
fn au1_full_flow_gives_authenticator_and_product_mode() {
    let mut s = start();
    let r = next_http(&mut s);
    assert_eq!(r.path, "/cucm-uds/clusterUser?username=alice");
    assert!(r.tls && r.basic.is_none(), "clusterUser needs no credentials");
    let h = "cucm1.example.com";
    s.handle_input(
        Time::ZERO,
        Input::Http { id: r.id, result: ok(uds_cluster_user("1", h, Some(("alice", h)))) },
    );
    let r = next_http(&mut s);
    assert_eq!(r.path, "/cucm-uds/user/alice");
    assert_eq!(r.basic, Some(("alice".into(), "lab".into())));
    s.handle_input(
        Time::ZERO,
        Input::Http { id: r.id, result: ok(uds_user("1", h, 6970, &user())) },
    );
    let r = next_http(&mut s);
    assert_eq!(r.path, "/cucm-uds/user/alice/devices");
    s.handle_input(
        Time::ZERO,
        Input::Http { id: r.id, result: ok(uds_devices("1", h, 6970, "alice", &user().devices)) },
    );
    let r = next_http(&mut s);
    assert_eq!((r.path.as_str(), r.tls, r.addr.port()), ("/SPDefault.cnf.xml", false, 6970));
    s.handle_input(
        Time::ZERO,
        Input::Http { id: r.id, result: ok(service_profile(ImpProductType::Cup, &[], &[])) },
    );
    let r = next_http(&mut s);
    assert_eq!((r.path.as_str(), r.addr.port()), ("/CSFALICE.cnf.xml", 6970));
    s.handle_input(Time::ZERO, Input::Http { id: r.id, result: ok(cnf(None)) });
    let r = next_http(&mut s);
    assert_eq!(r.path, "/jabber-config.xml");
    s.handle_input(Time::ZERO, Input::Http { id: r.id, result: ok(jabber_config(&[])) });
    let ev = events(&mut s);
    assert!(
        ev.contains(&ClientEvent::SignedIn {
            user: "alice".into(),
            home: h.into(),
            authenticator: "cup".into(),
            product_mode: "full-uc".into(),
            devices: "CSFALICE".into(),
        }),
        "{ev:?}"
    );
    assert!(s.is_done());
}

fn cnf(group: Option<&str>) -> String {
    let m = [CucmMember::new(0, "cucm1.example.com")];
    cnf_xml("CSFALICE", &m, None, "1001", group)
}

fn kv(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// Signs in up to the device configuration request, with `profile` as the service
/// profile's parameters.
fn to_device_config(s: &mut SignIn, profile: &[(&str, &str)]) -> HttpReq {
    let h = "cucm1.example.com";
    let answers = [
        uds_cluster_user("1", h, Some(("alice", h))),
        uds_user("1", h, 6970, &user()),
        uds_devices("1", h, 6970, "alice", &user().devices),
        service_profile(ImpProductType::Cup, &[], &kv(profile)),
    ];
    for body in answers {
        let r = next_http(s);
        s.handle_input(Time::ZERO, Input::Http { id: r.id, result: ok(body) });
    }
    let r = next_http(s);
    assert_eq!(r.path, "/CSFALICE.cnf.xml");
    r
}

fn drain(s: &mut SignIn) -> (Vec<HttpReq>, Vec<ClientEvent>) {
    let (mut reqs, mut ev) = (vec![], vec![]);
    while let Some(o) = s.poll_output() {
        match o {
            Emit::Out(Output::Http(r)) => reqs.push(r),
            Emit::Out(Output::Event(e)) => ev.push(e),
            Emit::Signal(Signal::SignInFailed { error, .. }) => {
                ev.push(ClientEvent::SignInFailed { reason: error.to_string() });
            }
            _ => {}
        }
    }
    (reqs, ev)
}

fn answer(s: &mut SignIn, r: &HttpReq, status: u16, body: String) {
    let result = Ok(HttpResp::new(status, body.into_bytes()));
    s.handle_input(Time::ZERO, Input::Http { id: r.id, result });
}

#[test]
fn cfg1_profile_wins_then_file_then_default() {
    let profile = kv(&[("A", "p"), ("B", ""), ("C", ""), ("DirectoryServerType", "")]);
    let file = kv(&[("A", "f"), ("B", "f"), ("C", " "), ("E", "f")]);
    let file: Vec<_> = file.into_iter().map(|(k, v)| (k, v.trim().to_owned())).collect();
    use SettingSource::*;
    let got = merge_settings(&profile, &file);
    let want = [
        ("A", "p", ServiceProfile),
        ("B", "f", ConfigFile),
        ("C", "", Default),
        ("DirectoryServerType", "UDS", Default),
        ("E", "f", ConfigFile),
    ];
    assert_eq!(got.len(), want.len(), "{got:?}");
    for ((k, v, s), (wk, wv, ws)) in got.iter().zip(want) {
        assert_eq!((k.as_str(), v.as_str(), *s), (wk, wv, ws));
    }
}

#[test]
fn cfg2_group_file_device_then_bootstrap_then_jabber_config() {
    // The device's Cisco Support Field wins over TFTP_FILE_NAME.
    let mut s = start().with_tftp_file_name(Some("boot.xml".into()));
    let r = to_device_config(&mut s, &[]);
    answer(&mut s, &r, 200, cnf(Some("groupa.xml")));
    assert_eq!(next_http(&mut s).path, "/groupa.xml");
    // No Support Field: TFTP_FILE_NAME.
    let mut s = start().with_tftp_file_name(Some("boot.xml".into()));
    let r = to_device_config(&mut s, &[]);
    answer(&mut s, &r, 200, cnf(None));
    assert_eq!(next_http(&mut s).path, "/boot.xml");
    // Neither: jabber-config.xml; the profile's value beats the file's.
    let mut s = start();
    let r = to_device_config(&mut s, &[("VoicemailPrimaryServer", "vm-profile")]);
    answer(&mut s, &r, 200, cnf(None));
    let r = next_http(&mut s);
    assert_eq!(r.path, "/jabber-config.xml");
    let file = jabber_config(&kv(&[
        ("Voicemail/VoicemailPrimaryServer", "vm-file"),
        ("Directory/DirectoryServerType", "EDI"),
    ]));
    answer(&mut s, &r, 200, file);
    let ev = events(&mut s);
    let value = |k: &str| {
        ev.iter().find_map(|e| match e {
            ClientEvent::ConfigValue { key, value, source } if key == k => {
                Some((value.clone(), source.clone()))
            }
            _ => None,
        })
    };
    assert_eq!(
        value("VoicemailPrimaryServer"),
        Some(("vm-profile".into(), "service-profile".into()))
    );
    assert_eq!(value("DirectoryServerType"), Some(("EDI".into(), "config-file".into())));
    assert!(matches!(ev.last(), Some(ClientEvent::SignedIn { .. })), "{ev:?}");
}

#[test]
fn cfg2_missing_or_broken_group_file_falls_back_and_sign_in_goes_on() {
    let mut s = start();
    let r = to_device_config(&mut s, &[]);
    answer(&mut s, &r, 200, cnf(Some("gone.xml")));
    let (r, mut ev) = drain(&mut s);
    answer(&mut s, &r[0], 404, String::new());
    let (r, more) = drain(&mut s);
    ev.extend(more);
    assert_eq!(r[0].path, "/jabber-config.xml");
    answer(&mut s, &r[0], 200, "<config><Policies><X>1</X></Polic".into());
    ev.extend(events(&mut s));
    assert!(ev.contains(&ClientEvent::ConfigFailed {
        file: "gone.xml".into(),
        reason: "HTTP 404".into()
    }));
    assert!(
        ev.iter().any(|e| matches!(e, ClientEvent::ConfigFailed { file, reason }
            if file == "jabber-config.xml" && reason.starts_with("malformed"))),
        "{ev:?}"
    );
    assert!(matches!(ev.last(), Some(ClientEvent::SignedIn { .. })), "{ev:?}");
    // A configuration server that never answers costs one timeout each, then sign-in ends.
    let mut s = start();
    let _ = to_device_config(&mut s, &[]);
    s.handle_timeout(HTTP_TIMEOUT);
    let _ = next_http(&mut s);
    s.handle_timeout(HTTP_TIMEOUT * 2);
    let ev = events(&mut s);
    assert!(matches!(ev.last(), Some(ClientEvent::SignedIn { .. })), "{ev:?}");
    assert!(s.is_done());
}

#[test]
fn au5_wrong_password_is_one_clear_failure() {
    let mut s = start();
    let r = next_http(&mut s);
    let h = "cucm1.example.com";
    s.handle_input(
        Time::ZERO,
        Input::Http { id: r.id, result: ok(uds_cluster_user("1", h, Some(("alice", h)))) },
    );
    let r = next_http(&mut s);
    s.handle_input(Time::ZERO, Input::Http { id: r.id, result: Ok(HttpResp::new(401, vec![])) });
    assert_eq!(events(&mut s), [ClientEvent::SignInFailed { reason: "wrong credentials".into() }]);
    assert!(s.is_done());
    assert_eq!(s.poll_timeout(), None, "nothing is retried");
}

#[test]
fn malformed_answers_and_timeouts_fail_clearly() {
    let mut s = start();
    let r = next_http(&mut s);
    s.handle_input(
        Time::ZERO,
        Input::Http { id: r.id, result: Ok(HttpResp::new(200, b"<clusterUser><result".to_vec())) },
    );
    let ev = events(&mut s);
    assert!(
        matches!(&ev[..], [ClientEvent::SignInFailed { reason }] if reason.starts_with("clusterUser: malformed")),
        "{ev:?}"
    );
    let mut s = start();
    let _ = next_http(&mut s);
    assert_eq!(s.poll_timeout(), Some(HTTP_TIMEOUT));
    s.handle_timeout(HTTP_TIMEOUT);
    assert_eq!(
        events(&mut s),
        [ClientEvent::SignInFailed { reason: "timeout at clusterUser".into() }]
    );
}

#[test]
fn au2_au3_tables() {
    assert_eq!(authenticator(true, ImpProductType::Cup), Authenticator::Webex);
    assert_eq!(authenticator(false, ImpProductType::Cup), Authenticator::Cup);
    assert_eq!(authenticator(false, ImpProductType::NotSet), Authenticator::Cucm);
    assert_eq!(product_mode(Authenticator::Cup, 1), "full-uc");
    assert_eq!(product_mode(Authenticator::Cup, 0), "im-only");
    assert_eq!(product_mode(Authenticator::Cucm, 1), "phone-only");
}

#[test]
fn uri_and_escape_helpers() {
    assert_eq!(
        parse_http_uri("http://h.example:6970/SP.cnf.xml"),
        Some(("h.example".into(), 6970, "/SP.cnf.xml".into()))
    );
    assert_eq!(parse_http_uri("https://x/"), None);
    assert_eq!(query_escape("a b&c@d"), "a%20b%26c@d");
}
