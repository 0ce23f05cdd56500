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

// ---- parsers (client side) ----

/// Largest document the client reads.
pub const MAX_DOC: usize = 1 << 20;
/// Deepest element nesting accepted.
const MAX_DEPTH: usize = 32;

/// Why a document was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// Larger than [`MAX_DOC`].
    #[error("document too large ({0} bytes)")]
    TooLarge(usize),
    /// Nested deeper than the limit.
    #[error("document nested too deeply")]
    TooDeep,
    /// A DTD (entity declarations are refused outright: no expansion tricks).
    #[error("DTD not allowed")]
    Dtd,
    /// Not well-formed.
    #[error("malformed XML: {0}")]
    Malformed(String),
    /// Well-formed, but not the expected document.
    #[error("expected <{expected}>, got <{got}>")]
    WrongRoot {
        /// Root wanted.
        expected: &'static str,
        /// Root found.
        got: String,
    },
}

/// One element of a [`Doc`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Element {
    /// Path below the root (`a/b/c`).
    pub path: String,
    /// Attributes, in order.
    pub attrs: Vec<(String, String)>,
    /// Text content (entities resolved).
    pub text: String,
}

/// A parsed document reduced to what the client uses: the root name and every element, in
/// document order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Doc {
    /// Root element name.
    pub root: String,
    /// Elements below the root.
    pub elements: Vec<Element>,
}

impl Doc {
    /// Parses a document with the limits above.
    pub fn parse(bytes: &[u8]) -> Result<Self, XmlError> {
        use quick_xml::events::Event;
        if bytes.len() > MAX_DOC {
            return Err(XmlError::TooLarge(bytes.len()));
        }
        let mut r = quick_xml::Reader::from_reader(bytes);
        r.config_mut().check_end_names = true;
        let mut stack: Vec<String> = Vec::new();
        let mut doc = Self::default();
        let mut buf = Vec::new();
        let mut open: Vec<usize> = Vec::new();
        loop {
            let ev = r.read_event_into(&mut buf).map_err(|e| XmlError::Malformed(e.to_string()))?;
            match ev {
                Event::DocType(_) => return Err(XmlError::Dtd),
                Event::Start(ref s) | Event::Empty(ref s) => {
                    let name = String::from_utf8_lossy(s.local_name().as_ref()).into_owned();
                    let attrs = s
                        .attributes()
                        .map(|a| {
                            let a = a.map_err(|e| XmlError::Malformed(e.to_string()))?;
                            let v = a
                                .unescape_value()
                                .map_err(|e| XmlError::Malformed(e.to_string()))?;
                            Ok((
                                String::from_utf8_lossy(a.key.local_name().as_ref()).into_owned(),
                                v.into_owned(),
                            ))
                        })
                        .collect::<Result<Vec<_>, XmlError>>()?;
                    if stack.is_empty() && doc.root.is_empty() {
                        doc.root = name.clone();
                    } else if stack.is_empty() {
                        return Err(XmlError::Malformed("more than one root element".into()));
                    }
                    stack.push(name);
                    if stack.len() > MAX_DEPTH {
                        return Err(XmlError::TooDeep);
                    }
                    let path = stack[1..].join("/");
                    doc.elements.push(Element { path, attrs, text: String::new() });
                    open.push(doc.elements.len() - 1);
                    if matches!(ev, Event::Empty(_)) {
                        stack.pop();
                        open.pop();
                    }
                }
                Event::End(_) => {
                    stack.pop();
                    open.pop();
                }
                Event::Text(t) => {
                    let t = t.decode().map_err(|e| XmlError::Malformed(e.to_string()))?;
                    if let Some(&i) = open.last() {
                        doc.elements[i].text.push_str(&t);
                    }
                }
                Event::GeneralRef(r) => {
                    let text = crate::text::xml_reference(&r).map_err(XmlError::Malformed)?;
                    if let Some(&i) = open.last() {
                        doc.elements[i].text.push_str(&text);
                    }
                }
                Event::CData(c) => {
                    if let Some(&i) = open.last() {
                        doc.elements[i].text.push_str(&String::from_utf8_lossy(&c));
                    }
                }
                Event::Eof => break,
                _ => {}
            }
            buf.clear();
        }
        if !stack.is_empty() || doc.root.is_empty() {
            return Err(XmlError::Malformed("truncated document".into()));
        }
        Ok(doc)
    }

    /// Parses and checks the root element.
    pub fn expect(bytes: &[u8], root: &'static str) -> Result<Self, XmlError> {
        let d = Self::parse(bytes)?;
        if d.root != root {
            return Err(XmlError::WrongRoot { expected: root, got: d.root });
        }
        Ok(d)
    }

    /// Text of the first element at `path`.
    pub fn text(&self, path: &str) -> Option<&str> {
        self.elements.iter().find(|e| e.path == path).map(|e| e.text.trim())
    }

    /// Texts of every element at `path`.
    pub fn texts(&self, path: &str) -> Vec<&str> {
        self.elements.iter().filter(|e| e.path == path).map(|e| e.text.trim()).collect()
    }

    /// An attribute of the first element at `path`.
    pub fn attr(&self, path: &str, name: &str) -> Option<&str> {
        self.elements
            .iter()
            .find(|e| e.path == path)
            .and_then(|e| e.attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()))
    }
}

/// SPEC SD4: whether the CAS answer says "Webex domain" (errorcode 7).
pub fn parse_cas(bytes: &[u8]) -> Result<bool, XmlError> {
    let d = Doc::expect(bytes, "LoginResponse")?;
    Ok(d.text("response/errorcode") == Some("7"))
}

/// `clusterUser`: the home cluster's host, or `None` when the user is not found.
pub fn parse_cluster_user(bytes: &[u8]) -> Result<Option<String>, XmlError> {
    let d = Doc::expect(bytes, "clusterUser")?;
    if d.attr("result", "found") != Some("true") {
        return Ok(None);
    }
    Ok(d.text("homeCluster").filter(|h| !h.is_empty()).map(str::to_owned))
}

/// `user/{id}`: the service profile's URI.
pub fn parse_user_profile_uri(bytes: &[u8]) -> Result<Option<String>, XmlError> {
    let d = Doc::expect(bytes, "user")?;
    Ok(d.text("serviceProfile/uri").filter(|u| !u.is_empty()).map(str::to_owned))
}

/// `user/{id}/devices`: device names.
pub fn parse_devices(bytes: &[u8]) -> Result<Vec<String>, XmlError> {
    let d = Doc::expect(bytes, "devices")?;
    Ok(d.texts("device/name").into_iter().map(str::to_owned).collect())
}

/// The service profile's IM&P product type (SPEC AU2).
pub fn parse_product_type(bytes: &[u8]) -> Result<ImpProductType, XmlError> {
    let d = Doc::expect(bytes, "config")?;
    Ok(match d.text("ServiceProfile/Presence/ProductType").unwrap_or("") {
        t if t.eq_ignore_ascii_case("CUP") => ImpProductType::Cup,
        t if t.eq_ignore_ascii_case("Webex") => ImpProductType::Webex,
        _ => ImpProductType::NotSet,
    })
}

/// The IM&P servers of the service profile (`Presence/Server1`, `Server2`, …), in order.
pub fn parse_imp_servers(bytes: &[u8]) -> Result<Vec<String>, XmlError> {
    let d = Doc::expect(bytes, "config")?;
    let mut servers: Vec<(u32, String)> = d
        .elements
        .iter()
        .filter_map(|e| {
            let n = e.path.strip_prefix("ServiceProfile/Presence/Server")?.parse().ok()?;
            let v = e.text.trim();
            (!v.is_empty()).then(|| (n, v.to_owned()))
        })
        .collect();
    servers.sort_by_key(|(n, _)| *n);
    Ok(servers.into_iter().map(|(_, s)| s).collect())
}

/// The parameters of a service profile (SPEC CFG1): every `ServiceProfile/<Group>/<Param>`
/// except the IM&P server group, which sign-in reads for AU2. Values are trimmed; a blank
/// value is kept (CFG1 treats it as "not set").
pub fn parse_profile_settings(bytes: &[u8]) -> Result<Vec<(String, String)>, XmlError> {
    let d = Doc::expect(bytes, "config")?;
    Ok(leaves(&d, 3, |p| {
        p.starts_with("ServiceProfile/") && !p.starts_with("ServiceProfile/Presence/")
    }))
}

/// The parameters of `jabber-config.xml` or a group file (SPEC CFG1): every
/// `<config><Group><Param>`, by parameter name.
pub fn parse_config_file(bytes: &[u8]) -> Result<Vec<(String, String)>, XmlError> {
    let d = Doc::expect(bytes, "config")?;
    Ok(leaves(&d, 2, |_| true))
}

/// Elements `depth` levels below the root with no children, as (last name, trimmed text).
fn leaves(d: &Doc, depth: usize, keep: impl Fn(&str) -> bool) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, el) in d.elements.iter().enumerate() {
        if el.path.split('/').count() != depth || !keep(&el.path) {
            continue;
        }
        let parent =
            d.elements.get(i + 1).is_some_and(|n| n.path.starts_with(&format!("{}/", el.path)));
        if parent {
            continue;
        }
        let name = el.path.rsplit('/').next().unwrap_or_default();
        out.push((name.to_owned(), el.text.trim().to_owned()));
    }
    out
}

/// The group configuration file a CSF device's Cisco Support Field names (SPEC CFG2):
/// `configurationFile=<name>` among `;`- or `,`-separated settings.
pub fn parse_cnf_config_file(bytes: &[u8]) -> Result<Option<String>, XmlError> {
    let d = Doc::expect(bytes, "device")?;
    let field = d.text("ciscoSupportField").unwrap_or("");
    Ok(field
        .split([';', ','])
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("configurationFile"))
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty()))
}

/// What a CSF device's `cnf.xml` says about SIP (SPEC CC2, CC3, CC5, MEDIA1; WIRE.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceConfig {
    /// Device name.
    pub device: String,
    /// CUCM group members in priority order (0 first): (host, SIP port, secure SIP port).
    pub members: Vec<(String, u16, u16)>,
    /// SRST reference: address and port, when SRST is enabled.
    pub srst: Option<(String, u16)>,
    /// Seconds to stay on SRST after CUCM is back before returning (CC5).
    pub connection_monitor: u32,
    /// The line's directory number.
    pub line: String,
    /// Expires asked for in REGISTER (`timerRegisterExpires`).
    pub register_expires: u32,
    /// Refresh this long before expiry (`timerRegisterDelta`).
    pub register_delta: u32,
    /// Keepalive interval to the backup node (`timerKeepAliveExpires`).
    pub keepalive: u32,
    /// SIP T1 and T2, milliseconds.
    pub t1_t2: (u32, u32),
    /// Media port range (`startMediaPort`, `stopMediaPort`; MEDIA1).
    pub media_ports: (u16, u16),
    /// `transportLayerProtocol`: 1 UDP, 2 TCP, 3 TLS, 4 TCP preferred.
    pub transport: u8,
    /// `deviceSecurityMode`: 1 none, 2 authenticated, 3 encrypted.
    pub security_mode: u8,
}

impl DeviceConfig {
    /// The product's defaults for device `device` on `line`, registering to `members` (host,
    /// SIP port, TLS port) in order: what a phone uses when no cnf.xml configures it (`uclab
    /// probe-sip`, the REGISTER bench).
    pub fn defaults(device: String, members: Vec<(String, u16, u16)>, line: String) -> Self {
        Self {
            device,
            members,
            srst: None,
            connection_monitor: 120,
            line,
            register_expires: 3600,
            register_delta: 5,
            keepalive: 120,
            t1_t2: (500, 4000),
            media_ports: (16384, 32766),
            transport: 2,
            security_mode: 1,
        }
    }
}

/// Reads a device's `cnf.xml` (WIRE.md "TFTP-over-HTTP"). Missing numbers take the
/// product's defaults; a device without a CUCM group is an error.
pub fn parse_cnf(bytes: &[u8]) -> Result<DeviceConfig, XmlError> {
    let d = Doc::expect(bytes, "device")?;
    let num = |path: &str, default: u32| {
        d.text(path).and_then(|v| v.parse::<u32>().ok()).unwrap_or(default)
    };
    let group = "devicePool/callManagerGroup/members/member";
    let mut members: Vec<(u32, String, u16, u16)> = Vec::new();
    let mut current: Option<(u32, String, u16, u16)> = None;
    for e in &d.elements {
        if e.path == group {
            if let Some(m) = current.take() {
                members.push(m);
            }
            let prio =
                e.attrs.iter().find(|(k, _)| k == "priority").and_then(|(_, v)| v.parse().ok());
            current = Some((prio.unwrap_or(members.len() as u32), String::new(), 5060, 5061));
        } else if let Some(m) = current.as_mut() {
            let t = e.text.trim();
            match e.path.strip_prefix(group) {
                Some("/callManager/name") => m.1 = t.to_owned(),
                Some("/callManager/ports/sipPort") => m.2 = t.parse().unwrap_or(5060),
                Some("/callManager/ports/securedSipPort") => m.3 = t.parse().unwrap_or(5061),
                _ => {}
            }
        }
    }
    members.extend(current);
    members.retain(|m| !m.1.is_empty());
    members.sort_by_key(|m| m.0);
    if members.is_empty() {
        return Err(XmlError::Malformed("no CUCM group member".into()));
    }
    let srst =
        match (d.text("devicePool/srstInfo/srstOption"), d.text("devicePool/srstInfo/ipAddr1")) {
            (Some(o), Some(ip)) if !o.eq_ignore_ascii_case("Disable") && !ip.is_empty() => {
                Some((ip.to_owned(), num("devicePool/srstInfo/port1", 5060) as u16))
            }
            _ => None,
        };
    let stack = "sipProfile/sipStack";
    Ok(DeviceConfig {
        device: d.text("name").unwrap_or("").to_owned(),
        members: members.into_iter().map(|(_, n, p, s)| (n, p, s)).collect(),
        srst,
        connection_monitor: num("devicePool/connectionMonitorDuration", 120),
        line: d.text("sipProfile/sipLines/line/name").unwrap_or("").to_owned(),
        register_expires: num(&format!("{stack}/timerRegisterExpires"), 3600),
        register_delta: num(&format!("{stack}/timerRegisterDelta"), 5),
        keepalive: num(&format!("{stack}/timerKeepAliveExpires"), 120),
        t1_t2: (num(&format!("{stack}/timerT1"), 500), num(&format!("{stack}/timerT2"), 4000)),
        media_ports: (
            num("sipProfile/startMediaPort", 16384) as u16,
            num("sipProfile/stopMediaPort", 32766) as u16,
        ),
        transport: num("transportLayerProtocol", 2) as u8,
        security_mode: num("deviceSecurityMode", 1) as u8,
    })
}

#[cfg(test)]
mod parse_tests {
    use super::*;

    #[test]
    fn cnf_reads_group_srst_timers_and_ports() {
        let members =
            [CucmMember::new(1, "cucm2.example.com"), CucmMember::new(0, "cucm1.example.com")];
        let c =
            parse_cnf(cnf_xml("CSFALICE", &members, Some("10.1.0.40"), "1001", None).as_bytes())
                .unwrap();
        assert_eq!(c.members[0], ("cucm1.example.com".into(), 5060, 5061));
        assert_eq!(c.members[1].0, "cucm2.example.com");
        assert_eq!(c.srst, Some(("10.1.0.40".into(), 5060)));
        assert_eq!((c.register_expires, c.register_delta, c.keepalive), (3600, 5, 120));
        assert_eq!((c.line.as_str(), c.device.as_str()), ("1001", "CSFALICE"));
        assert_eq!(c.media_ports, (16384, 32766));
        assert_eq!(c.transport, 2);
        let none = parse_cnf(cnf_xml("CSFALICE", &members, None, "1001", None).as_bytes()).unwrap();
        assert_eq!(none.srst, None);
        assert!(parse_cnf(b"<device><name>x</name></device>").is_err());
    }

    #[test]
    fn parsers_read_what_the_builders_write() {
        assert!(parse_cas(cas_login_response(true).as_bytes()).unwrap());
        assert!(!parse_cas(cas_login_response(false).as_bytes()).unwrap());
        let cu = uds_cluster_user("1", "c1", Some(("alice", "cucm-b1.example.com")));
        assert_eq!(
            parse_cluster_user(cu.as_bytes()).unwrap().as_deref(),
            Some("cucm-b1.example.com")
        );
        assert_eq!(parse_cluster_user(uds_cluster_user("1", "c1", None).as_bytes()).unwrap(), None);
        let sp = service_profile(ImpProductType::Webex, &[], &[]);
        assert_eq!(parse_product_type(sp.as_bytes()).unwrap(), ImpProductType::Webex);
        let d = uds_devices("1", "h", 6970, "a", &["CSFA".into(), "SEP1".into()]);
        assert_eq!(parse_devices(d.as_bytes()).unwrap(), ["CSFA", "SEP1"]);
        let sp = service_profile(
            ImpProductType::Cup,
            &["imp1".into()],
            &[("VoicemailPrimaryServer".into(), "vm1".into()), ("Blank".into(), " ".into())],
        );
        assert_eq!(
            parse_profile_settings(sp.as_bytes()).unwrap(),
            [("VoicemailPrimaryServer".into(), "vm1".into()), ("Blank".into(), String::new())]
        );
        assert_eq!(parse_imp_servers(sp.as_bytes()).unwrap(), ["imp1"]);
        let jc = jabber_config(&[
            ("Directory/DirectoryServerType".into(), "UDS".into()),
            ("ServiceDiscoveryExcludedServices".into(), "WEBEX".into()),
            ("Directory/PresenceDomain".into(), "example.com".into()),
        ]);
        assert!(
            jc.contains(
                "<Directory><DirectoryServerType>UDS</DirectoryServerType><PresenceDomain>"
            )
        );
        assert_eq!(
            parse_config_file(jc.as_bytes()).unwrap(),
            [
                ("DirectoryServerType".into(), "UDS".into()),
                ("PresenceDomain".into(), "example.com".into()),
                ("ServiceDiscoveryExcludedServices".into(), "WEBEX".into()),
            ]
        );
        let m = [CucmMember::new(0, "cucm1")];
        let cnf = cnf_xml("CSFA", &m, None, "1001", Some("groupa-config.xml"));
        assert_eq!(
            parse_cnf_config_file(cnf.as_bytes()).unwrap().as_deref(),
            Some("groupa-config.xml")
        );
        let cnf = cnf_xml("CSFA", &m, None, "1001", None);
        assert_eq!(parse_cnf_config_file(cnf.as_bytes()).unwrap(), None);
        let d = Doc::parse(b"<device><ciscoSupportField>a=b; configurationFile = g.xml</ciscoSupportField></device>").unwrap();
        assert_eq!(d.root, "device");
        assert_eq!(
            parse_cnf_config_file(b"<device><ciscoSupportField>a=b; configurationFile = g.xml</ciscoSupportField></device>").unwrap().as_deref(),
            Some("g.xml")
        );
        let doc = Doc::parse(b"<a><b>x &amp; y &#65;&lt;</b></a>").unwrap();
        assert_eq!(doc.text("b"), Some("x & y A<"));
    }

    #[test]
    fn hostile_documents_are_refused_cleanly() {
        let bomb = "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;\">]><clusterUser>&lol2;</clusterUser>";
        assert_eq!(Doc::parse(bomb.as_bytes()), Err(XmlError::Dtd));
        let deep = format!("{}{}", "<a>".repeat(100), "</a>".repeat(100));
        assert_eq!(Doc::parse(deep.as_bytes()), Err(XmlError::TooDeep));
        let full = uds_version("1", "h");
        for cut in [10, full.len() / 2, full.len() - 3] {
            assert!(Doc::parse(&full.as_bytes()[..cut]).is_err(), "truncated at {cut} accepted");
        }
        assert!(matches!(
            parse_cas(uds_version("1", "h").as_bytes()),
            Err(XmlError::WrongRoot { .. })
        ));
        assert!(matches!(Doc::parse(b"<a>&unknown;</a>"), Err(XmlError::Malformed(_))));
        assert!(matches!(Doc::parse(&vec![b' '; MAX_DOC + 1]), Err(XmlError::TooLarge(_))));
        // Random bytes never panic.
        let mut x: u64 = 77;
        for n in 0..300 {
            let b: Vec<u8> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    b"<>/a=\"&; x"[(x % 10) as usize]
                })
                .collect();
            let _ = Doc::parse(&b);
        }
    }
}
