//! Expressway MRA on the wire (SPEC MRA1, MRA2; WIRE.md "Expressway MRA"): the edge's request
//! paths and the `getEdgeConfigResponse` document, shared by the client and the mocks.
//!
//! Two path forms reach Expressway-E's HTTPS port:
//! - `/<base64(domain), no '='>/get_edge_config/?service_name=…`: the edge configuration;
//! - `/<base64url-nopad("<domain>/<http|https>/<host>/<port>")>/<path>`: a request E carries
//!   over the traversal zone to C, and C to `host:port` inside.
//!
//! Later requests are authorised by the `X-Auth` cookie the edge configuration answer sets
//! (`Set-Cookie: X-Auth=<token>; Max-Age=<s>`), or by the same Basic credentials. The cookie's
//! name comes from vendor test tooling (WIRE.md: likely, not confirmed); the token and its
//! lifetime are the lab's choice (docs/decisions.md).

use crate::base64;
use crate::text::xml_escape;
use crate::uds::{Doc, XmlError};

/// Expressway-E's HTTPS port for MRA (`_collab-edge._tls` names it).
pub const EDGE_PORT: u16 = 8443;
/// The traversal zone: Expressway-C connects out to E here (SPEC PORTS).
pub const TRAVERSAL_PORT: u16 = 7001;
/// The Basic realm of the edge's 401.
pub const REALM: &str = "Cisco-Edge";
/// The edge's `Server` header.
pub const SERVER: &str = "CE_C ECS";
/// The cookie that authorises requests after get_edge_config.
pub const AUTH_COOKIE: &str = "X-Auth";
/// The services a client asks for (WIRE.md).
pub const SERVICES: &[&str] = &["_cisco-uds", "_cuplogin"];
/// Longest path the edge decodes.
pub const MAX_PATH: usize = 2048;

/// `base64(domain)` without padding: the first segment of get_edge_config.
pub fn domain_segment(domain: &str) -> String {
    base64::encode(domain.to_ascii_lowercase().as_bytes()).trim_end_matches('=').to_owned()
}

/// The get_edge_config path and query for `domain` (WIRE.md).
pub fn get_edge_config_path(domain: &str) -> String {
    let services: Vec<String> = SERVICES.iter().map(|s| format!("service_name={s}")).collect();
    format!("/{}/get_edge_config/?{}", domain_segment(domain), services.join("&"))
}

/// HTTP or HTTPS from C to the internal host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP (TFTP-over-HTTP on 6970).
    Http,
    /// HTTPS (UDS, SOAP on 8443).
    Https,
}

impl Scheme {
    /// As the path spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }
}

/// Where a proxied request goes inside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyTarget {
    /// The enterprise domain the client signed in to.
    pub domain: String,
    /// HTTP or HTTPS.
    pub scheme: Scheme,
    /// Internal host name.
    pub host: String,
    /// Internal port.
    pub port: u16,
}

impl ProxyTarget {
    /// The encoded first segment.
    pub fn segment(&self) -> String {
        let plain = format!("{}/{}/{}/{}", self.domain, self.scheme.as_str(), self.host, self.port);
        base64::encode_url_nopad(plain.as_bytes())
    }

    /// The edge path for `rest` (path and query on the internal host, starting with `/`).
    pub fn path(&self, rest: &str) -> String {
        format!("/{}{rest}", self.segment())
    }
}

/// What a path on the edge asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EdgePath {
    /// get_edge_config for `domain`.
    GetEdgeConfig {
        /// The decoded domain.
        domain: String,
    },
    /// A request for an internal host.
    Proxy {
        /// Where it goes.
        target: ProxyTarget,
        /// Path on the internal host (starts with `/`).
        rest: String,
    },
}

/// Why a path is not one the edge serves.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Longer than [`MAX_PATH`].
    #[error("path too long")]
    TooLong,
    /// No first segment.
    #[error("no encoded segment")]
    Empty,
    /// The first segment is not base64.
    #[error("segment is not base64")]
    NotBase64,
    /// The decoded segment is not text.
    #[error("segment is not UTF-8")]
    NotUtf8,
    /// Not `<domain>/<scheme>/<host>/<port>`.
    #[error("segment is not domain/scheme/host/port")]
    Form,
    /// A scheme other than http and https.
    #[error("unknown scheme {0:?}")]
    Scheme(String),
    /// A port that is not 1–65535.
    #[error("bad port {0:?}")]
    Port(String),
    /// A name with characters no host name has.
    #[error("bad name {0:?}")]
    Name(String),
}

fn check_name(name: &str) -> Result<(), PathError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_'));
    if ok { Ok(()) } else { Err(PathError::Name(name.chars().take(64).collect())) }
}

/// Reads a path (without the query) on Expressway-E.
pub fn parse_path(path: &str) -> Result<EdgePath, PathError> {
    if path.len() > MAX_PATH {
        return Err(PathError::TooLong);
    }
    let p = path.strip_prefix('/').ok_or(PathError::Empty)?;
    let (seg, rest) = p.split_once('/').map_or((p, ""), |(s, r)| (s, r));
    if seg.is_empty() {
        return Err(PathError::Empty);
    }
    if rest == "get_edge_config" || rest == "get_edge_config/" {
        let raw = base64::decode(seg).ok_or(PathError::NotBase64)?;
        let domain = String::from_utf8(raw).map_err(|_| PathError::NotUtf8)?;
        check_name(&domain)?;
        return Ok(EdgePath::GetEdgeConfig { domain: domain.to_ascii_lowercase() });
    }
    let raw = base64::decode_url(seg).ok_or(PathError::NotBase64)?;
    let plain = String::from_utf8(raw).map_err(|_| PathError::NotUtf8)?;
    let parts: Vec<&str> = plain.split('/').collect();
    let [domain, scheme, host, port] = parts[..] else { return Err(PathError::Form) };
    check_name(domain)?;
    check_name(host)?;
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        s => return Err(PathError::Scheme(s.chars().take(16).collect())),
    };
    let port = match port.parse::<u16>() {
        Ok(p) if p > 0 => p,
        _ => return Err(PathError::Port(port.chars().take(16).collect())),
    };
    let target = ProxyTarget {
        domain: domain.to_ascii_lowercase(),
        scheme,
        host: host.to_ascii_lowercase(),
        port,
    };
    Ok(EdgePath::Proxy { target, rest: format!("/{rest}") })
}

/// One SRV target of a service (`<server>` in `serviceConfig`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrvServer {
    /// Priority.
    pub priority: u16,
    /// Weight.
    pub weight: u16,
    /// Port.
    pub port: u16,
    /// Target host.
    pub address: String,
}

/// What C found for one service inside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceAnswer {
    /// Its SRV targets, in the order C found them.
    Servers(Vec<SrvServer>),
    /// Host names (the `tftpServer` form).
    Addresses(Vec<String>),
    /// No such record (`NameError`).
    Error(String),
}

/// One `<service>` of `serviceConfig`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// `_cisco-uds`, `_cuplogin`, `tftpServer`.
    pub name: String,
    /// What C found.
    pub answer: ServiceAnswer,
}

/// One `<server>` of an `edgeConfig` element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeServer {
    /// Host name.
    pub address: String,
    /// Its port (`tlsPort`, or `udpPort` for TURN).
    pub port: u16,
}

/// The `getEdgeConfigResponse` (WIRE.md).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EdgeConfig {
    /// `serviceConfig`.
    pub services: Vec<Service>,
    /// `sipEdgeServer`.
    pub sip_edge: Vec<EdgeServer>,
    /// `sipRequest/route` (a Route header value).
    pub sip_route: Option<String>,
    /// `xmppEdgeServer`.
    pub xmpp_edge: Vec<EdgeServer>,
    /// `httpEdgeServer`.
    pub http_edge: Vec<EdgeServer>,
    /// `turnEdgeServer`.
    pub turn_edge: Vec<EdgeServer>,
    /// `userUdsServer`: the user's home cluster (empty: "no UDS server address").
    pub user_uds: Vec<EdgeServer>,
}

impl EdgeConfig {
    /// A service by name.
    pub fn service(&self, name: &str) -> Option<&ServiceAnswer> {
        self.services.iter().find(|s| s.name.eq_ignore_ascii_case(name)).map(|s| &s.answer)
    }

    /// The SRV targets of `name`, when it has any.
    pub fn servers(&self, name: &str) -> &[SrvServer] {
        match self.service(name) {
            Some(ServiceAnswer::Servers(s)) => s,
            _ => &[],
        }
    }

    /// Renders the document.
    pub fn render(&self) -> String {
        let mut o = String::from(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><getEdgeConfigResponse version=\"1.0\"><serviceConfig>",
        );
        for s in &self.services {
            o.push_str(&format!("<service><name>{}</name>", xml_escape(&s.name)));
            match &s.answer {
                ServiceAnswer::Servers(list) => {
                    for v in list {
                        o.push_str(&format!(
                            "<server><priority>{}</priority><weight>{}</weight><port>{}</port><address>{}</address></server>",
                            v.priority,
                            v.weight,
                            v.port,
                            xml_escape(&v.address)
                        ));
                    }
                }
                ServiceAnswer::Addresses(list) => {
                    for a in list {
                        o.push_str(&format!("<address>{}</address>", xml_escape(a)));
                    }
                }
                ServiceAnswer::Error(e) => o.push_str(&format!("<error>{}</error>", xml_escape(e))),
            }
            o.push_str("</service>");
        }
        o.push_str("</serviceConfig><edgeConfig>");
        let servers = |o: &mut String, tag: &str, port_tag: &str, list: &[EdgeServer]| {
            if list.is_empty() {
                o.push_str(&format!("<{tag}/>"));
                return;
            }
            o.push_str(&format!("<{tag}>"));
            for s in list {
                o.push_str(&format!(
                    "<server><address>{}</address><{port_tag}>{}</{port_tag}></server>",
                    xml_escape(&s.address),
                    s.port
                ));
            }
            o.push_str(&format!("</{tag}>"));
        };
        servers(&mut o, "sipEdgeServer", "tlsPort", &self.sip_edge);
        match &self.sip_route {
            Some(r) => {
                o.push_str(&format!("<sipRequest><route>{}</route></sipRequest>", xml_escape(r)))
            }
            None => o.push_str("<sipRequest/>"),
        }
        servers(&mut o, "xmppEdgeServer", "tlsPort", &self.xmpp_edge);
        servers(&mut o, "httpEdgeServer", "tlsPort", &self.http_edge);
        servers(&mut o, "turnEdgeServer", "udpPort", &self.turn_edge);
        servers(&mut o, "userUdsServer", "tlsPort", &self.user_uds);
        o.push_str("</edgeConfig></getEdgeConfigResponse>");
        o
    }

    /// Reads the document (bounded, no DTD: [`Doc::parse`]).
    pub fn parse(bytes: &[u8]) -> Result<Self, XmlError> {
        let d = Doc::expect(bytes, "getEdgeConfigResponse")?;
        let mut c = Self::default();
        let bad = |what: &str, v: &str| {
            XmlError::Malformed(format!("{what} {:?}", v.chars().take(32).collect::<String>()))
        };
        let num = |what: &str, v: &str| v.trim().parse::<u16>().map_err(|_| bad(what, v));
        for e in &d.elements {
            let text = e.text.trim();
            match e.path.as_str() {
                "serviceConfig/service" => c.services.push(Service {
                    name: String::new(),
                    answer: ServiceAnswer::Servers(Vec::new()),
                }),
                p if p.starts_with("serviceConfig/service/") => {
                    let Some(s) = c.services.last_mut() else { continue };
                    match (&p["serviceConfig/service/".len()..], &mut s.answer) {
                        ("name", _) => s.name = text.to_owned(),
                        ("error", a) => *a = ServiceAnswer::Error(text.to_owned()),
                        ("address", ServiceAnswer::Addresses(l)) => l.push(text.to_owned()),
                        ("address", a) => *a = ServiceAnswer::Addresses(vec![text.to_owned()]),
                        ("server", ServiceAnswer::Servers(l)) => l.push(SrvServer {
                            priority: 0,
                            weight: 0,
                            port: 0,
                            address: String::new(),
                        }),
                        (field, ServiceAnswer::Servers(l)) => {
                            let Some(v) = l.last_mut() else { continue };
                            match field {
                                "server/priority" => v.priority = num("priority", text)?,
                                "server/weight" => v.weight = num("weight", text)?,
                                "server/port" => v.port = num("port", text)?,
                                "server/address" => v.address = text.to_owned(),
                                _ => {}
                            }
                        }
                        _ => {}
                    }
                }
                "edgeConfig/sipRequest/route" => c.sip_route = Some(text.to_owned()),
                p => {
                    let Some(rest) = p.strip_prefix("edgeConfig/") else { continue };
                    let (tag, field) = rest.split_once('/').unwrap_or((rest, ""));
                    let list = match tag {
                        "sipEdgeServer" => &mut c.sip_edge,
                        "xmppEdgeServer" => &mut c.xmpp_edge,
                        "httpEdgeServer" => &mut c.http_edge,
                        "turnEdgeServer" => &mut c.turn_edge,
                        "userUdsServer" => &mut c.user_uds,
                        _ => continue,
                    };
                    match field {
                        "server" => list.push(EdgeServer { address: String::new(), port: 0 }),
                        "server/address" => {
                            if let Some(s) = list.last_mut() {
                                s.address = text.to_owned();
                            }
                        }
                        "server/tlsPort" | "server/udpPort" | "server/tcpPort" => {
                            if let Some(s) = list.last_mut() {
                                s.port = num("port", text)?;
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        // A server without an address says nothing: drop it (an empty userUdsServer is how
        // the product says "no UDS server").
        for l in
            [&mut c.sip_edge, &mut c.xmpp_edge, &mut c.http_edge, &mut c.turn_edge, &mut c.user_uds]
        {
            l.retain(|s| !s.address.is_empty());
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_edge_config_path_matches_wire() {
        // base64("example.com") = ZXhhbXBsZS5jb20= → no padding.
        assert_eq!(
            get_edge_config_path("example.com"),
            "/ZXhhbXBsZS5jb20/get_edge_config/?service_name=_cisco-uds&service_name=_cuplogin"
        );
        assert_eq!(
            parse_path("/ZXhhbXBsZS5jb20/get_edge_config/"),
            Ok(EdgePath::GetEdgeConfig { domain: "example.com".into() })
        );
    }

    #[test]
    fn proxy_paths_round_trip() {
        let t = ProxyTarget {
            domain: "example.com".into(),
            scheme: Scheme::Https,
            host: "cucm1.example.com".into(),
            port: 8443,
        };
        let p = t.path("/cucm-uds/user/carol?x=1");
        let EdgePath::Proxy { target, rest } = parse_path(p.split('?').next().unwrap()).unwrap()
        else {
            panic!("not a proxy path")
        };
        assert_eq!(target, t);
        assert_eq!(rest, "/cucm-uds/user/carol");
        let tftp = ProxyTarget { scheme: Scheme::Http, port: 6970, ..t };
        let EdgePath::Proxy { target, .. } = parse_path(&tftp.path("/CSFCAROL.cnf.xml")).unwrap()
        else {
            panic!("not a proxy path")
        };
        assert_eq!(target.scheme, Scheme::Http);
    }

    #[test]
    fn bad_paths_are_errors() {
        let enc = |s: &str| format!("/{}/x", base64::encode_url_nopad(s.as_bytes()));
        assert_eq!(parse_path("/"), Err(PathError::Empty));
        assert_eq!(parse_path("nope"), Err(PathError::Empty));
        assert_eq!(parse_path("/!!!/x"), Err(PathError::NotBase64));
        assert_eq!(
            parse_path(&format!("/{}/x", base64::encode_url_nopad(&[0xff]))),
            Err(PathError::NotUtf8)
        );
        assert_eq!(parse_path(&enc("example.com/https/h")), Err(PathError::Form));
        assert_eq!(parse_path(&enc("example.com/ftp/h/21")), Err(PathError::Scheme("ftp".into())));
        assert_eq!(parse_path(&enc("example.com/https/h/0")), Err(PathError::Port("0".into())));
        assert!(matches!(parse_path(&enc("example.com/https/h p/1")), Err(PathError::Name(_))));
        assert_eq!(parse_path(&"/a".repeat(MAX_PATH)), Err(PathError::TooLong));
    }

    fn sample() -> EdgeConfig {
        EdgeConfig {
            services: vec![
                Service {
                    name: "_cisco-uds".into(),
                    answer: ServiceAnswer::Servers(vec![SrvServer {
                        priority: 1,
                        weight: 10,
                        port: 8443,
                        address: "cucm1.example.com".into(),
                    }]),
                },
                Service {
                    name: "_cuplogin".into(),
                    answer: ServiceAnswer::Error("NameError".into()),
                },
                Service {
                    name: "tftpServer".into(),
                    answer: ServiceAnswer::Addresses(vec!["cucm1.example.com".into()]),
                },
            ],
            sip_edge: vec![EdgeServer { address: "expe.example.com".into(), port: 5061 }],
            sip_route: Some("<sip:10.1.0.30:5061;transport=tls;zone-id=3;directed;lr>".into()),
            xmpp_edge: vec![EdgeServer { address: "expe.example.com".into(), port: 5222 }],
            http_edge: vec![EdgeServer { address: "expe.example.com".into(), port: 8443 }],
            turn_edge: vec![],
            user_uds: vec![EdgeServer { address: "cucm1.example.com".into(), port: 8443 }],
        }
    }

    #[test]
    fn edge_config_round_trips() {
        let c = sample();
        let xml = c.render();
        assert!(xml.contains("<name>_cuplogin</name><error>NameError</error>"), "{xml}");
        assert!(xml.contains("&lt;sip:10.1.0.30:5061"), "{xml}");
        assert_eq!(EdgeConfig::parse(xml.as_bytes()), Ok(c));
    }

    #[test]
    fn wire_md_sample_parses() {
        let xml = "<getEdgeConfigResponse version=\"1.0\"><serviceConfig><service><name>_cisco-uds</name><server><priority>1</priority><weight>1</weight><port>8443</port><address>cucm1.example.com</address></server></service><service><name>_cuplogin</name><error>NameError</error></service><service><name>tftpServer</name><address>cucm1.example.com</address></service></serviceConfig><edgeConfig><sipEdgeServer><server><address>expe.example.com</address><tlsPort>5061</tlsPort></server></sipEdgeServer><sipRequest><route>&lt;sip:10.0.0.5:5061;transport=tls;zone-id=3;directed;lr&gt;</route></sipRequest><xmppEdgeServer><server><address>expe.example.com</address><tlsPort>5222</tlsPort></server></xmppEdgeServer><httpEdgeServer><server><address>expe.example.com</address><tlsPort>8443</tlsPort></server></httpEdgeServer><turnEdgeServer/><userUdsServer><server><address>cucm1.example.com</address><tlsPort>8443</tlsPort></server></userUdsServer></edgeConfig></getEdgeConfigResponse>";
        let c = EdgeConfig::parse(xml.as_bytes()).unwrap();
        assert_eq!(c.servers("_cisco-uds")[0].address, "cucm1.example.com");
        assert_eq!(c.service("_cuplogin"), Some(&ServiceAnswer::Error("NameError".into())));
        assert_eq!(c.user_uds[0].port, 8443);
        assert!(c.turn_edge.is_empty());
        assert_eq!(
            c.sip_route.as_deref(),
            Some("<sip:10.0.0.5:5061;transport=tls;zone-id=3;directed;lr>")
        );
        let empty = xml.replace(
            "<userUdsServer><server><address>cucm1.example.com</address><tlsPort>8443</tlsPort></server></userUdsServer>",
            "<userUdsServer/>",
        );
        assert!(EdgeConfig::parse(empty.as_bytes()).unwrap().user_uds.is_empty());
    }

    #[test]
    fn bad_documents_are_errors() {
        assert!(EdgeConfig::parse(b"<x/>").is_err());
        assert!(EdgeConfig::parse(b"<getEdgeConfigResponse><serviceConfig>").is_err());
        let bad_port = sample().render().replace("<port>8443</port>", "<port>99999</port>");
        assert!(EdgeConfig::parse(bad_port.as_bytes()).is_err());
    }
}
