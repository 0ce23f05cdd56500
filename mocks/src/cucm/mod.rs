//! CUCM's HTTP services: UDS on HTTPS 8443 and TFTP-over-HTTP on 6970 (SPEC AU1, AU2, CFG1,
//! CFG2, CC2; WIRE.md). The cluster's state is a plain struct; the handlers are functions of it.
//!
//! UDS asks for HTTP Basic where the real service does (`user/{id}`, `user/{id}/devices`;
//! realm "Cisco Web Services Realm"), answers `clusterUser` for users of other clusters
//! through ILS, and gives 404/405/503 where real UDS does.
//!
//! The node kind's other service, the cluster's SIP line side (registrar, call routing, line
//! presence, conference bridge), is [`sip`].

pub mod sip;

use std::rc::Rc;

use uclab_proto::uds::{
    CucmMember, ImpProductType, UdsUser, cnf_xml_media, jabber_config, service_profile,
    uds_cluster_user, uds_devices, uds_error, uds_servers, uds_user, uds_users, uds_version,
};

use crate::http::{BasicAuth, Handler, Request, Response};

/// The Basic realm of UDS.
pub const REALM: &str = "Cisco Web Services Realm";
/// Most results a `users` search returns.
const MAX_SEARCH: usize = 64;

/// A user homed on this cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CucmUser {
    /// What UDS says about them.
    pub uds: UdsUser,
    /// Their password (LDAP or local).
    pub password: String,
    /// The group configuration file their CSF devices' Cisco Support Field names (CFG2).
    pub config_file: Option<String>,
}

/// One CUCM node's view of its cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CucmConfig {
    /// This node's FQDN.
    pub host: String,
    /// The TFTP-over-HTTP port URIs name (6970; the live port in live mode).
    pub tftp_port: u16,
    /// CUCM version reported by UDS.
    pub version: String,
    /// The cluster's nodes (FQDNs), publisher first.
    pub servers: Vec<String>,
    /// Users homed on this cluster.
    pub users: Vec<CucmUser>,
    /// ILS: users of other clusters, with their home cluster's UDS host.
    pub remote_users: Vec<(String, String)>,
    /// The service profile's IM&P product type and servers.
    pub product_type: ImpProductType,
    /// IM&P servers of the service profile.
    pub imp_servers: Vec<String>,
    /// SRST reference of the device pool (address and SIP port: 5060, or where `uclab serve`
    /// runs the SRST router).
    pub srst: Option<(String, u16)>,
    /// Each member's SIP and SIP-over-TLS ports, by FQDN (5060/5061 unless listed; `uclab
    /// serve` lists the live ones, so cnf.xml sends phones where the mocks listen).
    pub sip_ports: Vec<(String, u16, u16)>,
    /// Client settings of the service profile (CFG1).
    pub profile_options: Vec<(String, String)>,
    /// Parameters of jabber-config.xml (`Group/Param` or a bare `Policies` parameter; CFG1).
    /// `None`: the cluster has no jabber-config.xml (404).
    pub jabber_config: Option<Vec<(String, String)>>,
    /// Group configuration files by name, with their parameters (CFG2).
    pub group_files: Vec<(String, Vec<(String, String)>)>,
    /// Answer every UDS request with 503 (overloaded: the client should try another node).
    pub overloaded: bool,
    /// The SIP profile's media port range (SPEC MEDIA1).
    pub media_ports: (u16, u16),
    /// The devices' SIP transport (`transportLayerProtocol`: 1 UDP, 2 TCP, 3 TLS).
    pub sip_transport: u8,
    /// The credential policy's lockout, shared with every service that checks end users'
    /// passwords (issue 13); `None`: no lockout.
    pub lockout: Option<Rc<crate::lockout::Lockout>>,
}

impl CucmConfig {
    fn user(&self, id: &str) -> Option<&CucmUser> {
        self.users.iter().find(|u| u.uds.id.eq_ignore_ascii_case(id))
    }

    /// `clusterUser` lookup by username, email or user identifier.
    fn find(&self, req: &Request) -> Result<Option<(String, String)>, Response> {
        let by = |k| req.param(k).filter(|v| !v.is_empty());
        let (local, remote) = if let Some(u) = by("username").or_else(|| by("useridentifier")) {
            (self.user(u), self.remote_users.iter().find(|(id, _)| id.eq_ignore_ascii_case(u)))
        } else if let Some(m) = by("email") {
            let local = self.users.iter().find(|x| x.uds.email.eq_ignore_ascii_case(m));
            let user = m.split('@').next().unwrap_or("");
            (local, self.remote_users.iter().find(|(id, _)| id.eq_ignore_ascii_case(user)))
        } else {
            return Err(Response::xml(
                400,
                uds_error("400", "username, email or useridentifier is required"),
            ));
        };
        Ok(match (local, remote) {
            (Some(u), _) => Some((u.uds.id.clone(), self.host.clone())),
            (None, Some((id, home))) => Some((id.clone(), home.clone())),
            (None, None) => None,
        })
    }

    /// Checks Basic credentials for `id`'s resources.
    fn authorize(&self, req: &Request, id: &str) -> Result<&CucmUser, Response> {
        let (u, p) = match req.basic_auth() {
            BasicAuth::Credentials(u, p) => (u, p),
            BasicAuth::Missing | BasicAuth::Malformed => return Err(Response::unauthorized(REALM)),
        };
        // Issue 13: a locked account is refused whatever the password.
        let allowed = |cu: &CucmUser| {
            let right = cu.password == p && !p.is_empty();
            crate::lockout::check(self.lockout.as_deref(), &cu.uds.id, right)
                == crate::lockout::Verdict::Allowed
        };
        match self.user(&u) {
            Some(cu) if allowed(cu) => {
                if cu.uds.id.eq_ignore_ascii_case(id) {
                    Ok(cu)
                } else if self.user(id).is_none() {
                    Err(Response::xml(404, uds_error("404", "user not found")))
                } else {
                    Err(Response::xml(
                        403,
                        uds_error("403", "access to another user's resources is forbidden"),
                    ))
                }
            }
            // SPEC AU5: one clear failure, nothing that invites a retry storm.
            _ => Err(Response::unauthorized(REALM)),
        }
    }
}

fn method_not_allowed() -> Response {
    let mut r = Response::text(405, "Method Not Allowed");
    r.headers.push(("allow".into(), "GET".into()));
    r
}

/// Answers one UDS request (HTTPS 8443).
pub fn handle_uds(c: &CucmConfig, req: &Request) -> Response {
    let Some(rest) = req.path.strip_prefix("/cucm-uds/") else {
        return Response::xml(404, uds_error("404", "not found"));
    };
    if c.overloaded {
        let mut r = Response::xml(503, uds_error("503", "service overloaded"));
        r.headers.push(("retry-after".into(), "60".into()));
        return r;
    }
    if req.method != "GET" {
        return method_not_allowed();
    }
    let v = c.version.as_str();
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    match parts.as_slice() {
        ["version"] => Response::xml(200, uds_version(v, &c.host)),
        ["servers"] => Response::xml(200, uds_servers(v, &c.host, &c.servers)),
        ["clusterUser"] => match c.find(req) {
            Ok(found) => Response::xml(
                200,
                uds_cluster_user(v, &c.host, found.as_ref().map(|(u, h)| (u.as_str(), h.as_str()))),
            ),
            Err(r) => r,
        },
        ["user", id] => match c.authorize(req, id) {
            Ok(u) => Response::xml(200, uds_user(v, &c.host, c.tftp_port, &u.uds)),
            Err(r) => r,
        },
        ["user", id, "devices"] => match c.authorize(req, id) {
            Ok(u) => {
                Response::xml(200, uds_devices(v, &c.host, c.tftp_port, &u.uds.id, &u.uds.devices))
            }
            Err(r) => r,
        },
        ["users"] => {
            let q =
                req.param("name").or_else(|| req.param("last")).unwrap_or("").to_ascii_lowercase();
            let max = req
                .param("max")
                .and_then(|m| m.parse::<usize>().ok())
                .unwrap_or(MAX_SEARCH)
                .min(MAX_SEARCH);
            let found: Vec<&UdsUser> = c
                .users
                .iter()
                .map(|u| &u.uds)
                .filter(|u| {
                    q.is_empty()
                        || [&u.id, &u.first_name, &u.last_name, &u.email]
                            .iter()
                            .any(|f| f.to_ascii_lowercase().starts_with(&q))
                })
                .take(max)
                .collect();
            Response::xml(200, uds_users(v, &c.host, &found))
        }
        _ => Response::xml(404, uds_error("404", "not found")),
    }
}

/// Answers one TFTP-over-HTTP request (6970): service profile, device configuration,
/// jabber-config.xml and group files.
pub fn handle_tftp(c: &CucmConfig, req: &Request) -> Response {
    if req.method != "GET" {
        return method_not_allowed();
    }
    let file = req.path.trim_start_matches('/');
    if file.eq_ignore_ascii_case("SPDefault.cnf.xml") {
        return Response::xml(
            200,
            service_profile(c.product_type, &c.imp_servers, &c.profile_options),
        );
    }
    if file.eq_ignore_ascii_case("jabber-config.xml")
        && let Some(settings) = &c.jabber_config
    {
        return Response::xml(200, jabber_config(settings));
    }
    if let Some((_, settings)) = c.group_files.iter().find(|(n, _)| n.eq_ignore_ascii_case(file)) {
        return Response::xml(200, jabber_config(settings));
    }
    if let Some(dev) = file.strip_suffix(".cnf.xml") {
        let owner =
            c.users.iter().find(|u| u.uds.devices.iter().any(|d| d.eq_ignore_ascii_case(dev)));
        if let Some(u) = owner {
            let members: Vec<CucmMember> = c
                .servers
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let mut m = CucmMember::new(i as u8, s);
                    if let Some((_, p, t)) = c.sip_ports.iter().find(|(h, _, _)| h == s) {
                        (m.sip_port, m.sip_tls_port) = (*p, *t);
                    }
                    m
                })
                .collect();
            let srst = c.srst.as_ref().map(|(ip, port)| (ip.as_str(), *port));
            let group = u.config_file.as_deref();
            let (ext, media) = (&u.uds.extension, c.media_ports);
            let xml = cnf_xml_media(dev, &members, srst, ext, group, media, c.sip_transport);
            return Response::xml(200, xml);
        }
    }
    Response::text(404, "File not found")
}

/// The UDS handler for [`crate::http::serve`].
pub fn uds_handler(cfg: Rc<CucmConfig>) -> Handler {
    Rc::new(move |req| handle_uds(&cfg, req))
}

/// The TFTP-over-HTTP handler for [`crate::http::serve`].
pub fn tftp_handler(cfg: Rc<CucmConfig>) -> Handler {
    Rc::new(move |req| handle_tftp(&cfg, req))
}

/// A user for tests and the built-in lab.
pub fn lab_user(id: &str, first: &str, last: &str, ext: &str, domain: &str) -> CucmUser {
    CucmUser {
        uds: UdsUser {
            id: id.into(),
            first_name: first.into(),
            last_name: last.into(),
            extension: ext.into(),
            email: format!("{id}@{domain}"),
            im_and_presence: true,
            service_profile: "SPDefault.cnf.xml".into(),
            devices: vec![format!("CSF{}", id.to_ascii_uppercase())],
        },
        password: "lab".into(),
        config_file: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::base64_encode;

    fn cfg() -> CucmConfig {
        CucmConfig {
            lockout: None,
            host: "cucm1.example.com".into(),
            tftp_port: 6970,
            version: "12.5.1".into(),
            servers: vec!["cucm1.example.com".into(), "cucm2.example.com".into()],
            users: vec![
                lab_user("alice", "Alice", "Archer", "1001", "example.com"),
                lab_user("bob", "Bob", "Baker", "1002", "example.com"),
            ],
            remote_users: vec![("dave".into(), "cucm-b1.example.com".into())],
            product_type: ImpProductType::Cup,
            imp_servers: vec!["imp1.example.com".into()],
            srst: Some(("10.2.0.1".into(), 5060)),
            sip_ports: Vec::new(),
            profile_options: vec![],
            jabber_config: Some(vec![]),
            group_files: vec![(
                "groupa-config.xml".into(),
                vec![("Policies/EnableTelephony".into(), "false".into())],
            )],
            overloaded: false,
            media_ports: (16384, 32766),
            sip_transport: 2,
        }
    }

    fn body(r: &Response) -> String {
        String::from_utf8_lossy(&r.body).into_owned()
    }

    fn auth(u: &str, p: &str) -> String {
        format!("Basic {}", base64_encode(format!("{u}:{p}").as_bytes()))
    }

    #[test]
    fn version_and_servers_need_no_auth() {
        assert!(
            body(&handle_uds(&cfg(), &Request::get("/cucm-uds/version")))
                .contains("<version>12.5.1</version>")
        );
        let s = body(&handle_uds(&cfg(), &Request::get("/cucm-uds/servers")));
        assert!(s.contains("<server>cucm1.example.com</server><server>cucm2.example.com</server>"));
    }

    #[test]
    fn au1_cluster_user_local_remote_and_unknown() {
        let r = body(&handle_uds(&cfg(), &Request::get("/cucm-uds/clusterUser?username=alice")));
        assert!(r.contains("found=\"true\"") && r.contains(">cucm1.example.com</homeCluster>"));
        let r =
            body(&handle_uds(&cfg(), &Request::get("/cucm-uds/clusterUser?email=bob@example.com")));
        assert!(r.contains("user/bob"));
        // ILS: dave lives on another cluster.
        let r = body(&handle_uds(&cfg(), &Request::get("/cucm-uds/clusterUser?username=dave")));
        assert!(r.contains(">cucm-b1.example.com</homeCluster>"), "{r}");
        let r = body(&handle_uds(&cfg(), &Request::get("/cucm-uds/clusterUser?username=zed")));
        assert!(r.contains("found=\"false\""));
        assert_eq!(handle_uds(&cfg(), &Request::get("/cucm-uds/clusterUser")).status, 400);
    }

    #[test]
    fn au5_user_resources_need_the_right_credentials() {
        let c = cfg();
        let r = handle_uds(&c, &Request::get("/cucm-uds/user/alice"));
        assert_eq!(r.status, 401);
        assert!(r.headers.iter().any(|(k, v)| k == "www-authenticate" && v.contains(REALM)));
        let wrong = Request::get("/cucm-uds/user/alice")
            .with_header("Authorization", &auth("alice", "nope"));
        assert_eq!(handle_uds(&c, &wrong).status, 401);
        let junk = Request::get("/cucm-uds/user/alice").with_header("Authorization", "Basic %%%");
        assert_eq!(handle_uds(&c, &junk).status, 401);
        let other =
            Request::get("/cucm-uds/user/bob").with_header("Authorization", &auth("alice", "lab"));
        assert_eq!(handle_uds(&c, &other).status, 403);
        let ok = Request::get("/cucm-uds/user/alice")
            .with_header("Authorization", &auth("alice", "lab"));
        let r = handle_uds(&c, &ok);
        assert_eq!(r.status, 200);
        assert!(body(&r).contains(
            "<serviceProfile><uri>http://cucm1.example.com:6970/SPDefault.cnf.xml</uri>"
        ));
        let devs = Request::get("/cucm-uds/user/alice/devices")
            .with_header("Authorization", &auth("alice", "lab"));
        assert!(body(&handle_uds(&c, &devs)).contains("<name>CSFALICE</name>"));
    }

    #[test]
    fn statuses_real_uds_gives() {
        let mut c = cfg();
        assert_eq!(handle_uds(&c, &Request::get("/cucm-uds/nothing")).status, 404);
        assert_eq!(handle_uds(&c, &Request::get("/elsewhere")).status, 404);
        let mut post = Request::get("/cucm-uds/version");
        post.method = "POST".into();
        assert_eq!(handle_uds(&c, &post).status, 405);
        c.overloaded = true;
        assert_eq!(handle_uds(&c, &Request::get("/cucm-uds/version")).status, 503);
    }

    #[test]
    fn search_by_prefix_is_bounded() {
        let r = body(&handle_uds(&cfg(), &Request::get("/cucm-uds/users?name=ba&max=5")));
        assert!(
            r.contains("<userName>bob</userName>") && !r.contains("<userName>alice</userName>")
        );
        let r = body(&handle_uds(&cfg(), &Request::get("/cucm-uds/users?max=1")));
        assert!(r.contains("returnedCount=\"1\""));
    }

    #[test]
    fn cc2_tftp_serves_profile_device_config_and_config_file() {
        let c = cfg();
        let sp = body(&handle_tftp(&c, &Request::get("/SPDefault.cnf.xml")));
        assert!(sp.contains("<ProductType>CUP</ProductType>"));
        let cnf = body(&handle_tftp(&c, &Request::get("/CSFALICE.cnf.xml")));
        assert!(cnf.contains("<member priority=\"0\"><callManager><name>cucm1.example.com</name>"));
        assert!(cnf.contains("<member priority=\"1\"><callManager><name>cucm2.example.com</name>"));
        assert!(cnf.contains("<ipAddr1>10.2.0.1</ipAddr1>"));
        assert_eq!(handle_tftp(&c, &Request::get("/CSFNOBODY.cnf.xml")).status, 404);
        assert_eq!(handle_tftp(&c, &Request::get("/jabber-config.xml")).status, 200);
    }

    #[test]
    fn cfg2_group_files_and_support_field() {
        let mut c = cfg();
        c.users[0].config_file = Some("groupa-config.xml".into());
        let cnf = body(&handle_tftp(&c, &Request::get("/CSFALICE.cnf.xml")));
        assert!(cnf.contains("<ciscoSupportField>configurationFile=groupa-config.xml<"));
        let cnf = body(&handle_tftp(&c, &Request::get("/CSFBOB.cnf.xml")));
        assert!(!cnf.contains("ciscoSupportField"));
        let g = body(&handle_tftp(&c, &Request::get("/groupa-config.xml")));
        assert!(g.contains("<Policies><EnableTelephony>false</EnableTelephony></Policies>"));
        assert_eq!(handle_tftp(&c, &Request::get("/groupb-config.xml")).status, 404);
        c.jabber_config = None;
        assert_eq!(handle_tftp(&c, &Request::get("/jabber-config.xml")).status, 404);
    }
}
