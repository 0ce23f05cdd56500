//! XML documents of Webex CAS, CUCM UDS and TFTP (WIRE.md), built with quick-xml's escaping.
//!
//! Element names are case-sensitive as the vendor documents give them. Builders return whole
//! documents; parsers (for the client) take bounded input and refuse DTDs, so no entity trick
//! can expand.

use quick_xml::escape::escape;

/// XML declaration every document starts with.
const DECL: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>";

fn e(s: &str) -> std::borrow::Cow<'_, str> {
    escape(s)
}

/// SPEC SD4 / WIRE.md "Webex CAS lookup": the `FederatedSSO` answer. A Webex domain answers
/// errorcode 7 (provisioned in Webex Messenger, no SSO); any other domain errorcode 1 with the
/// reason "SSO protocol error.". The exact body is inferred (WIRE.md).
pub fn cas_login_response(webex_domain: bool) -> String {
    let (code, reason) = if webex_domain {
        (7, "Domain is provisioned in Webex Messenger.")
    } else {
        (1, "SSO protocol error.")
    };
    format!(
        "{DECL}<LoginResponse><response><result>FAILURE</result><errorcode>{code}</errorcode>\
         <reason>{}</reason></response></LoginResponse>",
        e(reason)
    )
}

/// `GET /cucm-uds/version`.
pub fn uds_version(version: &str, host: &str) -> String {
    format!(
        "{DECL}<versionInformation version=\"{v}\" uri=\"https://{h}:8443/cucm-uds/version\">\
         <version>{v}</version><capabilities><usersResourceAuthEnabled>false</usersResourceAuthEnabled>\
         </capabilities></versionInformation>",
        v = e(version),
        h = e(host)
    )
}

/// `GET /cucm-uds/servers`: the cluster's nodes, publisher first.
pub fn uds_servers(version: &str, host: &str, servers: &[String]) -> String {
    let mut s = format!(
        "{DECL}<servers version=\"{}\" uri=\"https://{}:8443/cucm-uds/servers\">",
        e(version),
        e(host)
    );
    for sv in servers {
        s.push_str(&format!("<server>{}</server>", e(sv)));
    }
    s.push_str("</servers>");
    s
}

/// `GET /cucm-uds/clusterUser?username=U`: where the user's home cluster is.
pub fn uds_cluster_user(version: &str, host: &str, found: Option<(&str, &str)>) -> String {
    let head = format!(
        "{DECL}<clusterUser version=\"{}\" uri=\"https://{}:8443/cucm-uds/clusterUser\">",
        e(version),
        e(host)
    );
    match found {
        None => format!("{head}<result found=\"false\"/></clusterUser>"),
        Some((user, home)) => format!(
            "{head}<result found=\"true\" uri=\"https://{h}:8443/cucm-uds/user/{u}\"/>\
             <homeCluster serversUri=\"https://{h}:8443/cucm-uds/servers\">{h}</homeCluster>\
             <homeClusterDetails><selfProvisioningSecureMode>false</selfProvisioningSecureMode>\
             <adminProvisionMode>false</adminProvisionMode></homeClusterDetails></clusterUser>",
            u = e(user),
            h = e(home)
        ),
    }
}

/// A user as UDS describes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdsUser {
    /// User id (`alice`).
    pub id: String,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// Primary extension.
    pub extension: String,
    /// Email (`alice@example.com`).
    pub email: String,
    /// IM&P enabled on the home cluster.
    pub im_and_presence: bool,
    /// The service profile's TFTP file name.
    pub service_profile: String,
    /// Device names (`CSFALICE`).
    pub devices: Vec<String>,
}

/// `GET /cucm-uds/user/U` (HTTP Basic). The service profile is on `host`'s TFTP-over-HTTP
/// port `tftp_port` (6970).
pub fn uds_user(version: &str, host: &str, tftp_port: u16, u: &UdsUser) -> String {
    format!(
        "{DECL}<user version=\"{v}\" uri=\"https://{h}:8443/cucm-uds/user/{id}\">\
         <id>{id}</id><userName>{id}</userName><firstName>{f}</firstName><lastName>{l}</lastName>\
         <displayName>{f} {l}</displayName><phoneNumber>{x}</phoneNumber><email>{m}</email>\
         <directoryUri>{m}</directoryUri><msUri></msUri><accountType useLdapAuth=\"false\">0</accountType>\
         <homeCluster enableImAndPresence=\"{imp}\">{h}</homeCluster>\
         <primaryExtension><directoryNumber>{x}</directoryNumber></primaryExtension>\
         <devices uri=\"https://{h}:8443/cucm-uds/user/{id}/devices\"/>\
         <serviceProfile><uri>http://{h}:{tftp_port}/{sp}</uri></serviceProfile></user>",
        v = e(version),
        h = e(host),
        id = e(&u.id),
        f = e(&u.first_name),
        l = e(&u.last_name),
        x = e(&u.extension),
        m = e(&u.email),
        imp = u.im_and_presence,
        sp = e(&u.service_profile),
    )
}

/// `GET /cucm-uds/user/U/devices`. A single device also carries its provisioning URI (on
/// the TFTP-over-HTTP port `tftp_port`).
pub fn uds_devices(
    version: &str,
    host: &str,
    tftp_port: u16,
    user: &str,
    devices: &[String],
) -> String {
    let mut s = format!(
        "{DECL}<devices version=\"{}\" uri=\"https://{}:8443/cucm-uds/user/{}/devices\">",
        e(version),
        e(host),
        e(user)
    );
    for d in devices {
        s.push_str(&format!(
            "<device uri=\"https://{h}:8443/cucm-uds/user/{u}/device/{d}\"><id>{d}</id><name>{d}</name>\
             <type>Phone</type><model>Cisco Unified Client Services Framework</model>\
             <description editable=\"true\"/><protocol>SIP</protocol>",
            h = e(host),
            u = e(user),
            d = e(d)
        ));
        if devices.len() == 1 {
            s.push_str(&format!(
                "<provision><uri>http://{}:{tftp_port}/{}.cnf.xml</uri></provision>",
                e(host),
                e(d)
            ));
        }
        s.push_str("</device>");
    }
    s.push_str("</devices>");
    s
}

/// `GET /cucm-uds/users?name=…`: contact search results.
pub fn uds_users(version: &str, host: &str, users: &[&UdsUser]) -> String {
    let mut s = format!(
        "{DECL}<users version=\"{}\" uri=\"https://{}:8443/cucm-uds/users\" start=\"0\" requestedCount=\"{n}\" returnedCount=\"{n}\" totalCount=\"{n}\">",
        e(version),
        e(host),
        n = users.len()
    );
    for u in users {
        s.push_str(&format!(
            "<user uri=\"https://{h}:8443/cucm-uds/user/{id}\"><id>{id}</id><userName>{id}</userName>\
             <firstName>{f}</firstName><lastName>{l}</lastName><phoneNumber>{x}</phoneNumber>\
             <email>{m}</email><directoryUri>{m}</directoryUri></user>",
            h = e(host),
            id = e(&u.id),
            f = e(&u.first_name),
            l = e(&u.last_name),
            x = e(&u.extension),
            m = e(&u.email)
        ));
    }
    s.push_str("</users>");
    s
}

/// A UDS error body (`<errors><error code>…`), with the HTTP status it goes with.
pub fn uds_error(code: &str, message: &str) -> String {
    format!("{DECL}<errors><error code=\"{}\" message=\"{}\"/></errors>", e(code), e(message))
}

/// One CUCM group member of a device's configuration (CC2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CucmMember {
    /// 0 = primary.
    pub priority: u8,
    /// Node name or address.
    pub name: String,
    /// SIP port (UDP and TCP; 5060, a live port in `uclab serve`).
    pub sip_port: u16,
    /// SIP over TLS port (5061).
    pub sip_tls_port: u16,
}

impl CucmMember {
    /// A member on the standard ports.
    pub fn new(priority: u8, name: &str) -> Self {
        Self { priority, name: name.to_owned(), sip_port: 5060, sip_tls_port: 5061 }
    }
}

/// `CSF<NAME>.cnf.xml` (WIRE.md "TFTP-over-HTTP"): CUCM group members in priority order, the
/// SRST reference, SIP ports and timers.
///
/// `config_file` is the device's Cisco Support Field group configuration file (SPEC CFG2),
/// written as `configurationFile=<name>`.
pub fn cnf_xml(
    device: &str,
    members: &[CucmMember],
    srst: Option<&str>,
    line: &str,
    config_file: Option<&str>,
) -> String {
    let srst = srst.map(|ip| (ip, 5060));
    cnf_xml_media(device, members, srst, line, config_file, (16384, 32766), 2)
}

/// [`cnf_xml`] with the SIP profile's media port range (SPEC MEDIA1) and the device's SIP
/// transport (`transportLayerProtocol`: 1 UDP, 2 TCP, 3 TLS; TLS comes with the "encrypted"
/// device security mode, 3).
pub fn cnf_xml_media(
    device: &str,
    members: &[CucmMember],
    srst: Option<(&str, u16)>,
    line: &str,
    config_file: Option<&str>,
    (start, stop): (u16, u16),
    transport: u8,
) -> String {
    let security = if transport == 3 { 3 } else { 1 };
    let mut s = format!(
        "{DECL}<device><fullConfig>true</fullConfig><deviceProtocol>SIP</deviceProtocol>\
        <deviceSecurityMode>{security}</deviceSecurityMode>\
        <transportLayerProtocol>{transport}</transportLayerProtocol>"
    );
    if let Some(f) = config_file {
        s.push_str(&format!("<ciscoSupportField>configurationFile={}</ciscoSupportField>", e(f)));
    }
    s.push_str("<devicePool><name>Default</name><callManagerGroup><name>Default</name><members>");
    for m in members {
        s.push_str(&format!(
            "<member priority=\"{}\"><callManager><name>{n}</name><ports><sipPort>{}</sipPort>\
             <securedSipPort>{}</securedSipPort><sipOAuthPort>5090</sipOAuthPort>\
             <sipMRAOAuthPort>5091</sipMRAOAuthPort></ports><processNodeName>{n}</processNodeName>\
             </callManager></member>",
            m.priority,
            m.sip_port,
            m.sip_tls_port,
            n = e(&m.name)
        ));
    }
    s.push_str("</members></callManagerGroup>");
    match srst {
        Some((ip, port)) => s.push_str(&format!(
            "<srstInfo><srstOption>User Specific</srstOption><ipAddr1>{}</ipAddr1><port1>{port}</port1></srstInfo>",
            e(ip)
        )),
        None => s.push_str("<srstInfo><srstOption>Disable</srstOption></srstInfo>"),
    }
    s.push_str(&format!(
        "<connectionMonitorDuration>120</connectionMonitorDuration></devicePool>\
         <sipProfile><sipLines><line><name>{l}</name><contact>{l}</contact></line></sipLines>\
         <sipStack><timerRegisterExpires>3600</timerRegisterExpires><timerRegisterDelta>5</timerRegisterDelta>\
         <timerKeepAliveExpires>120</timerKeepAliveExpires><timerT1>500</timerT1><timerT2>4000</timerT2>\
         </sipStack><startMediaPort>{start}</startMediaPort><stopMediaPort>{stop}</stopMediaPort></sipProfile>\
         <sipOAuthMode>1</sipOAuthMode><name>{d}</name></device>",
        l = e(line),
        d = e(device)
    ));
    s
}

/// Product type of the service profile's IM&P profile (SPEC AU2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImpProductType {
    /// Unified CM (IM and Presence Service): IM&P authenticates.
    Cup,
    /// Webex (IM and Presence Service): Webex authenticates.
    Webex,
    /// Not set: CUCM authenticates (phone mode).
    NotSet,
}

/// `SPDefault.cnf.xml`: the service profile (SPEC AU2, CFG1). `options` are the profile's
/// client settings (blank values mean "not set": CFG1's precedence falls to jabber-config.xml).
pub fn service_profile(
    product: ImpProductType,
    imp_servers: &[String],
    options: &[(String, String)],
) -> String {
    let product = match product {
        ImpProductType::Cup => "CUP",
        ImpProductType::Webex => "Webex",
        ImpProductType::NotSet => "",
    };
    let mut s = format!(
        "{DECL}<config version=\"1.0\"><ServiceProfile><Presence><ProductType>{product}</ProductType>"
    );
    for (i, sv) in imp_servers.iter().enumerate() {
        s.push_str(&format!("<Server{n}>{}</Server{n}>", e(sv), n = i + 1));
    }
    s.push_str("</Presence><Client>");
    for (k, v) in options {
        if k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !k.is_empty() {
            s.push_str(&format!("<{k}>{}</{k}>", e(v)));
        }
    }
    s.push_str("</Client></ServiceProfile></config>");
    s
}

/// `jabber-config.xml` (or a group file, CFG2): `<config version="1.0">` with groups. A key is
/// `Group/Parameter` or a bare parameter, which goes in `Policies`. Groups appear in the order
/// of their first parameter; names that are not XML-safe are left out.
pub fn jabber_config(settings: &[(String, String)]) -> String {
    let ok = |k: &str| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let mut groups: Vec<(&str, Vec<(&str, &str)>)> = Vec::new();
    for (k, v) in settings {
        let (g, p) = k.split_once('/').unwrap_or(("Policies", k));
        if !ok(g) || !ok(p) {
            continue;
        }
        match groups.iter_mut().find(|(name, _)| *name == g) {
            Some((_, ps)) => ps.push((p, v)),
            None => groups.push((g, vec![(p, v)])),
        }
    }
    let mut s = format!("{DECL}<config version=\"1.0\">");
    for (g, ps) in groups {
        s.push_str(&format!("<{g}>"));
        for (p, v) in ps {
            s.push_str(&format!("<{p}>{}</{p}>", e(v)));
        }
        s.push_str(&format!("</{g}>"));
    }
    s.push_str("</config>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every document is well-formed XML (quick-xml reads it to the end without error).
    fn well_formed(doc: &str) {
        let mut r = quick_xml::Reader::from_str(doc);
        let mut depth = 0i32;
        loop {
            match r.read_event() {
                Ok(quick_xml::events::Event::Start(_)) => depth += 1,
                Ok(quick_xml::events::Event::End(_)) => depth -= 1,
                Ok(quick_xml::events::Event::Eof) => break,
                Ok(_) => {}
                Err(err) => panic!("not well-formed: {err}\n{doc}"),
            }
        }
        assert_eq!(depth, 0, "unbalanced: {doc}");
    }

    fn alice() -> UdsUser {
        UdsUser {
            id: "alice".into(),
            first_name: "Alice".into(),
            last_name: "Archer & Co <x>".into(),
            extension: "1001".into(),
            email: "alice@example.com".into(),
            im_and_presence: true,
            service_profile: "SPDefault.cnf.xml".into(),
            devices: vec!["CSFALICE".into()],
        }
    }

    #[test]
    fn documents_are_well_formed_and_escaped() {
        let u = alice();
        for d in [
            cas_login_response(true),
            cas_login_response(false),
            uds_version("12.5.1", "cucm1.example.com"),
            uds_servers(
                "12.5.1",
                "cucm1.example.com",
                &["cucm1.example.com".into(), "cucm2.example.com".into()],
            ),
            uds_cluster_user("12.5.1", "cucm1.example.com", Some(("alice", "cucm1.example.com"))),
            uds_cluster_user("12.5.1", "cucm1.example.com", None),
            uds_user("12.5.1", "cucm1.example.com", 6970, &u),
            uds_devices("12.5.1", "cucm1.example.com", 6970, "alice", &u.devices),
            uds_users("12.5.1", "cucm1.example.com", &[&u]),
            uds_error("404", "user <nobody> not found"),
            cnf_xml(
                "CSFALICE",
                &[CucmMember::new(0, "cucm1")],
                Some("10.2.0.1"),
                "1001",
                Some("group<a>.xml"),
            ),
            service_profile(
                ImpProductType::Cup,
                &["imp1.example.com".into()],
                &[("Foo".into(), "a&b".into())],
            ),
            jabber_config(&[("ServiceDiscoveryExcludedServices".into(), "WEBEX".into())]),
        ] {
            well_formed(&d);
        }
        assert!(uds_user("1", "h", 6970, &u).contains("Archer &amp; Co &lt;x&gt;"));
    }

    #[test]
    fn sd4_cas_error_codes() {
        assert!(cas_login_response(true).contains("<errorcode>7</errorcode>"));
        let other = cas_login_response(false);
        assert!(
            other.contains("<errorcode>1</errorcode>") && other.contains("SSO protocol error.")
        );
    }

    #[test]
    fn single_device_carries_its_provisioning_uri() {
        assert!(
            uds_devices("1", "h", 6970, "a", &["CSFA".into()])
                .contains("<provision><uri>http://h:6970/CSFA.cnf.xml</uri>")
        );
        assert!(
            !uds_devices("1", "h", 6970, "a", &["CSFA".into(), "SEP1".into()])
                .contains("<provision>")
        );
    }
}

mod read;
pub use read::*;
