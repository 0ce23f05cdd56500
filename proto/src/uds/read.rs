//! Reading UDS, CAS and TFTP documents (the client side): bounded input, no DTDs, element
//! paths as the vendor documents give them.

use super::ImpProductType;

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
    use crate::uds::*;

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
