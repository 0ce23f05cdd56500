//! The sign-in engine after `_cisco-uds` discovery (SPEC AU1, AU2, AU3, AU5).
//!
//! AU1: ask UDS `clusterUser` (no credentials) where the user's home cluster is; then, with
//! HTTP Basic on the home cluster, the user (which names the service profile) and their
//! devices; then the service profile over TFTP-over-HTTP. AU2: the authenticator follows the
//! profile's IM&P product type unless a CAS hit already chose Webex. AU3: the product mode
//! follows from IM&P and devices. AU5: a 401 is one clear failure; nothing is retried.
//!
//! Then configuration (SPEC CFG1, CFG2), from the same TFTP-over-HTTP server: the CSF device's
//! `CSF<NAME>.cnf.xml`, whose Cisco Support Field may name a group configuration file; else
//! the bootstrap's `TFTP_FILE_NAME`; else `jabber-config.xml`. A missing group file falls back
//! to `jabber-config.xml`. Each effective setting is the service profile's when set, else the
//! file's, else the default. A configuration download that fails is an event, not a failed
//! sign-in (the client runs on the profile and defaults).
//!
//! Each step is a state that holds only what it needs; a response moves to the next state.
//! Polling order: after each `handle_*` call drain [`SignIn::poll_output`], then sleep until
//! [`SignIn::poll_timeout`] and call [`SignIn::handle_timeout`].

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use uclab_proto::dns::QType;
use uclab_proto::uds::{self, ImpProductType};

pub use self::error::SignInError;
use crate::Time;
use crate::edge::Transport;
use crate::event::ClientEvent;
use crate::io::{HttpId, HttpReq, HttpResp, Input, NetError, Output};
use crate::resolver::{Dns, QueryToken};
pub use crate::signal::{Authenticator, Retry};

mod error;
use crate::signal::{Emit, Signal};

/// How long one HTTP request may take (our choice; the documents give none).
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// UDS port.
const UDS_PORT: u16 = 8443;
/// TFTP-over-HTTP port when no service profile URI names one.
const TFTP_PORT: u16 = 6970;
/// The cluster-wide configuration file (SPEC CFG2: used when no group file is named).
pub const JABBER_CONFIG: &str = "jabber-config.xml";

/// Defaults for parameters blank in both the service profile and the configuration file
/// (SPEC CFG1 "service profile blank (default) value"). Parameters not listed default to
/// empty (not set). Our choice: the directory is UDS, as the client signed in through UDS.
const DEFAULTS: &[(&str, &str)] = &[("DirectoryServerType", "UDS")];

/// Where an effective setting came from (SPEC CFG1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SettingSource {
    /// The service profile set it.
    ServiceProfile,
    /// The profile left it blank and the configuration file set it.
    ConfigFile,
    /// Both left it blank.
    Default,
    /// SPEC MRA2: fixed by the edge path, whatever the profile and file say.
    Mra,
}

impl SettingSource {
    /// Name in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ServiceProfile => "service-profile",
            Self::ConfigFile => "config-file",
            Self::Default => "default",
            Self::Mra => "mra",
        }
    }
}

/// SPEC CFG1: merges the service profile's parameters with the configuration file's. Profile
/// set → profile; profile blank (or absent) and file set → file; both blank → default. Every
/// parameter either names appears once, in name order.
pub fn merge_settings(
    profile: &[(String, String)],
    file: &[(String, String)],
) -> Vec<(String, String, SettingSource)> {
    let mut keys: Vec<&str> = profile.iter().chain(file).map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    let set = |list: &[(String, String)], k: &str| {
        list.iter().find(|(n, v)| n == k && !v.is_empty()).map(|(_, v)| v.clone())
    };
    keys.into_iter()
        .map(|k| {
            let (v, src) = match (set(profile, k), set(file, k)) {
                (Some(v), _) => (v, SettingSource::ServiceProfile),
                (None, Some(v)) => (v, SettingSource::ConfigFile),
                (None, None) => {
                    let d = DEFAULTS.iter().find(|(n, _)| *n == k).map_or("", |(_, v)| v);
                    (d.to_owned(), SettingSource::Default)
                }
            };
            (k.to_owned(), v, src)
        })
        .collect()
}

/// What a sign-in deadline is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignInTimer {
    /// The HTTP request under way is overdue.
    Step,
    /// A DNS retransmission.
    Dns,
}

/// What sign-in has learnt by the time it reads configuration.
#[derive(Debug)]
struct Learnt {
    home: String,
    /// TFTP-over-HTTP server of the home cluster.
    tftp: SocketAddr,
    devices: Vec<String>,
    product: ImpProductType,
    /// Service profile parameters (CFG1).
    profile: Vec<(String, String)>,
}

/// SPEC AU2: a CAS hit decides Webex; otherwise the profile's product type.
pub fn authenticator(cas_webex: bool, product: ImpProductType) -> Authenticator {
    match (cas_webex, product) {
        (true, _) | (false, ImpProductType::Webex) => Authenticator::Webex,
        (false, ImpProductType::Cup) => Authenticator::Cup,
        (false, ImpProductType::NotSet) => Authenticator::Cucm,
    }
}

/// SPEC AU3: Full UC (IM&P and a device), IM only (IM&P, no device), Phone only (no IM&P).
pub fn product_mode(auth: Authenticator, devices: usize) -> &'static str {
    match (auth, devices) {
        (Authenticator::Cucm, _) => "phone-only",
        (_, 0) => "im-only",
        _ => "full-uc",
    }
}

#[derive(Debug)]
enum State {
    /// SPEC SD9: bootstrap names the CUCM; its address first.
    ResolveFirst {
        host: String,
        token: QueryToken,
    },
    ClusterUser {
        id: HttpId,
    },
    ResolveHome {
        home: String,
        token: QueryToken,
    },
    User {
        home: String,
        addr: SocketAddr,
        id: HttpId,
    },
    Devices {
        home: String,
        addr: SocketAddr,
        profile: Option<String>,
        id: HttpId,
    },
    Profile {
        home: String,
        tftp: SocketAddr,
        devices: Vec<String>,
        id: HttpId,
    },
    /// SPEC CFG2: the CSF device's configuration, for its Cisco Support Field.
    DeviceConfig {
        learnt: Learnt,
        file: String,
        id: HttpId,
    },
    /// SPEC CFG1, CFG2: the configuration file.
    ConfigFile {
        learnt: Learnt,
        file: String,
        source: &'static str,
        id: HttpId,
    },
    Done,
}

/// The sign-in engine for one user against one UDS node.
#[derive(Debug)]
pub struct SignIn {
    user: String,
    password: String,
    cas_webex: bool,
    /// SPEC SD9: `AUTHENTICATOR=CUCM` + `PRODUCT_MODE=phone_mode` from the bootstrap.
    phone_mode: bool,
    /// SPEC CFG2: the bootstrap's `TFTP_FILE_NAME`.
    tftp_file_name: Option<String>,
    /// Why sign-in failed, when another server might do better (see [`Retry`]).
    retry: Option<Retry>,
    /// IM&P servers of the service profile, once read (SPEC AU4).
    imp_servers: Vec<String>,
    /// The effective `DirectoryServerType` (SPEC CFG1), once the configuration is read.
    contact_source: String,
    /// The CSF device's configuration, once read (SPEC CC2): the softphone registers with it.
    device_config: Option<uds::DeviceConfig>,
    uds_host: String,
    uds_addr: SocketAddr,
    /// Straight to the UDS and TFTP hosts, or through the edge (SPEC MRA1).
    transport: Transport,
    resolver: Dns,
    state: State,
    deadline: Option<Time>,
    next_dns_id: u16,
    out: VecDeque<Emit>,
}

impl SignIn {
    fn new(
        user: &str,
        password: &str,
        uds_host: &str,
        uds_addr: SocketAddr,
        resolver: Dns,
        seed: u64,
    ) -> Self {
        Self {
            user: user.to_owned(),
            password: password.to_owned(),
            cas_webex: false,
            phone_mode: false,
            tftp_file_name: None,
            retry: None,
            imp_servers: Vec::new(),
            contact_source: String::new(),
            device_config: None,
            uds_host: uds_host.to_owned(),
            uds_addr,
            transport: Transport::Direct,
            resolver,
            state: State::Done,
            deadline: None,
            next_dns_id: (seed >> 16) as u16,
            out: VecDeque::new(),
        }
    }

    fn ask_cluster_user(&mut self, now: Time) {
        let path = format!("/cucm-uds/clusterUser?username={}", query_escape(&self.user));
        let (addr, host) = (self.uds_addr, self.uds_host.clone());
        let id = self.http(now, addr, &host, true, path, false);
        self.state = State::ClusterUser { id };
    }

    /// Starts sign-in of `user` at the UDS node `uds_host` reached at `uds_addr`.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        now: Time,
        user: &str,
        password: &str,
        cas_webex: bool,
        uds_host: &str,
        uds_addr: SocketAddr,
        resolver: Dns,
        seed: u64,
    ) -> Self {
        let mut s = Self::new(user, password, uds_host, uds_addr, resolver, seed);
        s.cas_webex = cas_webex;
        s.ask_cluster_user(now);
        s
    }

    /// SPEC SD9: phone-mode bootstrap. No service discovery: the CUCM named by the bootstrap
    /// (`CCMCIP`) is resolved and asked directly; CUCM authenticates and the client is phone
    /// only. There is one CUCM, so no failover.
    pub fn start_bootstrap(
        now: Time,
        user: &str,
        password: &str,
        cucm: &str,
        resolver: Dns,
        seed: u64,
    ) -> Self {
        let mut s =
            Self::start_by_name(now, user, password, false, (cucm, UDS_PORT), resolver, seed);
        s.phone_mode = true;
        s
    }

    /// Starts sign-in at the UDS node `(host, port)`, whose address is looked up first (the
    /// next SRV target after an overloaded one).
    pub fn start_by_name(
        now: Time,
        user: &str,
        password: &str,
        cas_webex: bool,
        (host, port): (&str, u16),
        resolver: Dns,
        seed: u64,
    ) -> Self {
        let cucm = host;
        let unknown = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), port);
        let mut s = Self::new(user, password, cucm, unknown, resolver, seed);
        s.cas_webex = cas_webex;
        let id = s.next_dns_id;
        s.next_dns_id = s.next_dns_id.wrapping_add(1);
        let token = s.resolver.query(now, cucm, QType::A, id);
        s.state = State::ResolveFirst { host: cucm.to_owned(), token };
        s.pump(now);
        s
    }

    /// SPEC CFG2: the group configuration file the bootstrap names (`TFTP_FILE_NAME`), used
    /// when the device's Cisco Support Field names none.
    pub fn with_tftp_file_name(mut self, name: Option<String>) -> Self {
        self.tftp_file_name = name.filter(|n| !n.is_empty());
        self
    }

    /// SPEC MRA1: every request goes through the edge. Sign-in starts at the user's home UDS
    /// server the edge named; internal names are never looked up (the edge's C does that).
    pub fn start_through_edge(
        now: Time,
        (user, password): (&str, &str),
        cas_webex: bool,
        (uds_host, port): (&str, u16),
        transport: Transport,
        resolver: Dns,
        seed: u64,
    ) -> Self {
        let unknown = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), port);
        let mut s = Self::new(user, password, uds_host, unknown, resolver, seed);
        s.cas_webex = cas_webex;
        s.transport = transport;
        s.ask_cluster_user(now);
        s
    }

    /// The CAS said Webex after sign-in started (SPEC AU2: it still wins).
    pub fn set_cas_webex(&mut self, webex: bool) {
        self.cas_webex = webex;
    }

    /// The CSF device's configuration (SPEC CC2), once read.
    pub fn device_config(&self) -> Option<&uds::DeviceConfig> {
        self.device_config.as_ref()
    }

    /// The IM&P servers the service profile names (empty before it is read, or without IM&P).
    pub fn imp_servers(&self) -> &[String] {
        &self.imp_servers
    }

    /// The effective contact source (`DirectoryServerType`: `UDS`, `EDI`, `BDI`), once the
    /// configuration is read (SPEC HA4 ties IM&P high availability to it).
    pub fn contact_source(&self) -> &str {
        &self.contact_source
    }

    /// After a failure: whether another UDS server might succeed, and why.
    pub fn retry(&self) -> Option<Retry> {
        self.retry
    }

    /// Whether sign-in has finished (signed in or failed).
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn http(
        &mut self,
        now: Time,
        addr: SocketAddr,
        host: &str,
        tls: bool,
        path: String,
        auth: bool,
    ) -> HttpId {
        let id = self.resolver.http_id();
        let basic = auth.then(|| (self.user.clone(), self.password.clone()));
        let req = self.transport.apply(HttpReq {
            id,
            addr,
            host: host.to_owned(),
            tls_name: None,
            tls,
            method: "GET",
            path,
            basic,
            headers: Vec::new(),
            body: Vec::new(),
        });
        self.push(Output::Http(req));
        self.deadline = Some(now + HTTP_TIMEOUT);
        id
    }

    /// Sign-in failed: the composite decides whether another server is tried or the user
    /// is told (`SignInFailed`).
    fn fail(&mut self, error: SignInError) {
        let retry = self.retry;
        self.out.push_back(Signal::SignInFailed { error, retry }.into());
        self.state = State::Done;
        self.deadline = None;
    }

    /// Feeds an input (DNS datagrams, HTTP results; others are ignored).
    pub fn handle_input(&mut self, now: Time, input: Input) {
        let Some(input) = self.resolver.take_input(now, input) else {
            return self.pump(now);
        };
        match input {
            Input::Datagram { .. } | Input::Unreachable { .. } | Input::TcpAnswer { .. } => {}
            Input::Http { id, result } => self.on_http(now, id, result),
            Input::Connected { .. }
            | Input::ConnectFailed { .. }
            | Input::StreamOpened { .. }
            | Input::StreamFailed { .. }
            | Input::StreamData { .. }
            | Input::StreamTls { .. }
            | Input::Media { .. } => {}
        }
        self.pump(now);
    }

    /// Time passed. Spurious calls no-op.
    pub fn handle_timeout(&mut self, now: Time) {
        self.resolver.handle_timeout(now);
        if self.deadline.is_some_and(|d| d <= now) && !self.is_done() {
            match self.state {
                // Configuration is optional: a timeout there is an event, and sign-in goes on.
                State::DeviceConfig { id, .. } | State::ConfigFile { id, .. } => {
                    self.on_http(now, id, Err(NetError::Timeout));
                }
                _ => {
                    let step = self.step_name();
                    if matches!(self.state, State::ClusterUser { .. }) {
                        self.retry = Some(Retry::Unreachable);
                    }
                    self.fail(SignInError::Timeout { step });
                }
            }
        }
        self.pump(now);
    }

    /// Next output, or signal for the composite.
    pub fn poll_output(&mut self) -> Option<Emit> {
        crate::io::next_out(&mut self.out)
    }

    fn push(&mut self, o: Output) {
        self.out.push_back(o.into());
    }

    /// Next deadline.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.next_timer().map(|(t, _)| t)
    }

    /// The next deadline and what it is for.
    pub fn next_timer(&self) -> Option<(Time, SignInTimer)> {
        [(self.deadline, SignInTimer::Step), (self.resolver.poll_timeout(), SignInTimer::Dns)]
            .into_iter()
            .filter_map(|(t, w)| Some((t?, w)))
            .min_by_key(|(t, _)| *t)
    }

    fn step_name(&self) -> &'static str {
        match self.state {
            State::ResolveFirst { .. } => "CUCM lookup",
            State::ClusterUser { .. } => "clusterUser",
            State::ResolveHome { .. } => "home cluster lookup",
            State::User { .. } => "user",
            State::Devices { .. } => "devices",
            State::Profile { .. } => "service profile",
            State::DeviceConfig { .. } => "device configuration",
            State::ConfigFile { .. } => "configuration file",
            State::Done => "done",
        }
    }

    fn on_http(&mut self, now: Time, id: HttpId, result: Result<HttpResp, NetError>) {
        let (State::ClusterUser { id: want }
        | State::User { id: want, .. }
        | State::Devices { id: want, .. }
        | State::Profile { id: want, .. }
        | State::DeviceConfig { id: want, .. }
        | State::ConfigFile { id: want, .. }) = self.state
        else {
            return;
        };
        if id != want {
            return;
        }
        if matches!(self.state, State::DeviceConfig { .. } | State::ConfigFile { .. }) {
            return self.on_config(now, result);
        }
        let step = self.step_name();
        let resp = match result {
            Ok(r) => r,
            Err(e) => {
                // The first server could not be reached: another might. A TLS failure (a
                // certificate refused) is not retried elsewhere: it is the user's to see.
                if matches!(self.state, State::ClusterUser { .. })
                    && matches!(e, NetError::Connect(_))
                {
                    self.retry = Some(Retry::Unreachable);
                }
                return self.fail(SignInError::Net { step, error: e });
            }
        };
        // WIRE.md: 503 means overloaded, try another server.
        if resp.status == 503 {
            self.retry = Some(Retry::Overloaded);
            return self.fail(SignInError::Overloaded { step });
        }
        // SPEC AU5: wrong credentials are one clear failure, not retried.
        if resp.status == 401 {
            return self.fail(SignInError::WrongCredentials);
        }
        if resp.status == 403 && self.transport.is_edge() {
            return self.fail(SignInError::EdgeRefused { step });
        }
        if resp.status != 200 {
            return self.fail(SignInError::Status { step, status: resp.status });
        }
        match std::mem::replace(&mut self.state, State::Done) {
            State::ClusterUser { .. } => match uds::parse_cluster_user(&resp.body) {
                Ok(None) => self.fail(SignInError::UnknownUser(self.user.clone())),
                Ok(Some(home)) => {
                    self.out.push_back(
                        Output::Event(ClientEvent::HomeCluster { host: home.clone() }).into(),
                    );
                    if home.eq_ignore_ascii_case(&self.uds_host) {
                        let addr = self.uds_addr;
                        self.request_user(now, home, addr);
                    } else if self.transport.is_edge() {
                        // Through the edge, C resolves the home cluster inside.
                        let addr =
                            SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), UDS_PORT);
                        self.request_user(now, home, addr);
                    } else {
                        let id = self.next_dns_id;
                        self.next_dns_id = self.next_dns_id.wrapping_add(1);
                        let token = self.resolver.query(now, &home, QType::A, id);
                        self.state = State::ResolveHome { home, token };
                        self.deadline = None;
                    }
                }
                Err(error) => self.fail(SignInError::Malformed { what: "clusterUser", error }),
            },
            State::User { home, addr, .. } => match uds::parse_user_profile_uri(&resp.body) {
                Ok(profile) => {
                    let path = format!("/cucm-uds/user/{}/devices", query_escape(&self.user));
                    let id = self.http(now, addr, &home, true, path, true);
                    self.state = State::Devices { home, addr, profile, id };
                }
                Err(error) => self.fail(SignInError::Malformed { what: "user", error }),
            },
            State::Devices { home, addr, profile, .. } => match uds::parse_devices(&resp.body) {
                Ok(devices) => match profile.as_deref().and_then(parse_http_uri) {
                    // The profile is served by the home cluster over TFTP-over-HTTP.
                    Some((host, port, path)) if host.eq_ignore_ascii_case(&home) => {
                        let tftp = SocketAddr::new(addr.ip(), port);
                        let id = self.http(now, tftp, &host, false, path, false);
                        self.state = State::Profile { home, tftp, devices, id };
                    }
                    _ => {
                        let tftp = SocketAddr::new(addr.ip(), TFTP_PORT);
                        let product = ImpProductType::NotSet;
                        let learnt = Learnt { home, tftp, devices, product, profile: vec![] };
                        self.read_device_config(now, learnt);
                    }
                },
                Err(error) => self.fail(SignInError::Malformed { what: "devices", error }),
            },
            State::Profile { home, tftp, devices, .. } => {
                match uds::parse_product_type(&resp.body)
                    .and_then(|p| Ok((p, uds::parse_profile_settings(&resp.body)?)))
                {
                    Ok((product, profile)) => {
                        self.imp_servers = uds::parse_imp_servers(&resp.body).unwrap_or_default();
                        let learnt = Learnt { home, tftp, devices, product, profile };
                        self.read_device_config(now, learnt);
                    }
                    Err(error) => {
                        self.fail(SignInError::Malformed { what: "service profile", error })
                    }
                }
            }
            s @ (State::ResolveFirst { .. }
            | State::ResolveHome { .. }
            | State::DeviceConfig { .. }
            | State::ConfigFile { .. }
            | State::Done) => self.state = s,
        }
    }

    /// SPEC CFG2: a CSF device's configuration names its group file; without a CSF device,
    /// straight to the configuration file.
    fn read_device_config(&mut self, now: Time, learnt: Learnt) {
        let csf = learnt.devices.iter().find(|d| {
            d.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("CSF"))
                && d.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
        match csf {
            Some(dev) => {
                let file = format!("{dev}.cnf.xml");
                let (tftp, home) = (learnt.tftp, learnt.home.clone());
                let id = self.http(now, tftp, &home, false, format!("/{file}"), false);
                self.state = State::DeviceConfig { learnt, file, id };
            }
            None => self.read_config_file(now, learnt, None),
        }
    }

    /// SPEC CFG2: the device's group file, else `TFTP_FILE_NAME`, else `jabber-config.xml`.
    fn read_config_file(&mut self, now: Time, learnt: Learnt, from_device: Option<String>) {
        let (file, source) = match (from_device, &self.tftp_file_name) {
            (Some(f), _) => (f, "device"),
            (None, Some(f)) => (f.clone(), "bootstrap"),
            (None, None) => (JABBER_CONFIG.to_owned(), "default"),
        };
        self.request_config_file(now, learnt, file, source);
    }

    fn request_config_file(
        &mut self,
        now: Time,
        learnt: Learnt,
        file: String,
        source: &'static str,
    ) {
        let path = format!("/{}", query_escape(&file));
        let (tftp, home) = (learnt.tftp, learnt.home.clone());
        let id = self.http(now, tftp, &home, false, path, false);
        self.state = State::ConfigFile { learnt, file, source, id };
    }

    /// A configuration answer (or its failure). Never fails sign-in.
    fn on_config(&mut self, now: Time, result: Result<HttpResp, NetError>) {
        match std::mem::replace(&mut self.state, State::Done) {
            State::DeviceConfig { learnt, file, .. } => {
                if let Ok(r) = &result
                    && r.status == 200
                {
                    self.device_config = uds::parse_cnf(&r.body).ok();
                }
                let group = match result {
                    Ok(r) if r.status == 200 => match uds::parse_cnf_config_file(&r.body) {
                        Ok(g) => g,
                        Err(e) => {
                            self.config_failed(file, e.to_string());
                            None
                        }
                    },
                    Ok(r) => {
                        self.config_failed(file, format!("HTTP {}", r.status));
                        None
                    }
                    Err(e) => {
                        self.config_failed(file, e.to_string());
                        None
                    }
                };
                self.read_config_file(now, learnt, group);
            }
            State::ConfigFile { learnt, file, source, .. } => {
                let group = file != JABBER_CONFIG;
                let settings = match result {
                    Ok(r) if r.status == 200 => match uds::parse_config_file(&r.body) {
                        Ok(s) => {
                            self.config_event(&file, source, "loaded");
                            s
                        }
                        Err(e) => {
                            self.config_failed(file.clone(), e.to_string());
                            if group {
                                return self.fall_back(now, learnt);
                            }
                            vec![]
                        }
                    },
                    // No such file: a named group file falls back to jabber-config.xml.
                    Ok(r) if r.status == 404 && group => {
                        self.config_failed(file, "HTTP 404".into());
                        return self.fall_back(now, learnt);
                    }
                    Ok(r) if r.status == 404 => {
                        self.config_event(&file, source, "absent");
                        vec![]
                    }
                    Ok(r) => {
                        self.config_failed(file, format!("HTTP {}", r.status));
                        vec![]
                    }
                    Err(e) => {
                        self.config_failed(file, e.to_string());
                        vec![]
                    }
                };
                for (key, mut value, mut src) in merge_settings(&learnt.profile, &settings) {
                    // SPEC MRA2: over MRA the contact source is UDS only.
                    if key == "DirectoryServerType"
                        && self.transport.is_edge()
                        && !value.eq_ignore_ascii_case("UDS")
                    {
                        value = "UDS".into();
                        src = SettingSource::Mra;
                    }
                    if key == "DirectoryServerType" {
                        self.contact_source.clone_from(&value);
                    }
                    self.push(Output::Event(ClientEvent::ConfigValue {
                        key,
                        value,
                        source: src.as_str().into(),
                    }));
                }
                self.finish(learnt.home, learnt.devices, learnt.product);
            }
            s => self.state = s,
        }
    }

    fn fall_back(&mut self, now: Time, learnt: Learnt) {
        self.request_config_file(now, learnt, JABBER_CONFIG.to_owned(), "fallback");
    }

    fn config_event(&mut self, file: &str, source: &str, result: &str) {
        self.push(Output::Event(ClientEvent::ConfigFile {
            file: file.to_owned(),
            source: source.to_owned(),
            result: result.to_owned(),
        }));
    }

    fn config_failed(&mut self, file: String, reason: String) {
        self.push(Output::Event(ClientEvent::ConfigFailed { file, reason }));
    }

    fn request_user(&mut self, now: Time, home: String, addr: SocketAddr) {
        let path = format!("/cucm-uds/user/{}", query_escape(&self.user));
        let id = self.http(now, addr, &home, true, path, true);
        self.state = State::User { home, addr, id };
    }

    fn finish(&mut self, home: String, devices: Vec<String>, product: ImpProductType) {
        let auth = if self.phone_mode {
            Authenticator::Cucm
        } else {
            authenticator(self.cas_webex, product)
        };
        self.push(Output::Event(ClientEvent::SignedIn {
            user: self.user.clone(),
            home,
            authenticator: auth.as_str().into(),
            product_mode: product_mode(auth, devices.len()).into(),
            devices: devices.join(","),
        }));
        self.out.push_back(Signal::SignedIn { authenticator: auth }.into());
        self.state = State::Done;
        self.deadline = None;
    }

    fn pump(&mut self, now: Time) {
        while let Some((token, res)) = self.resolver.next_answer(&mut self.out) {
            if let State::ResolveFirst { token: want, .. } = self.state
                && want == token
            {
                let State::ResolveFirst { host, .. } =
                    std::mem::replace(&mut self.state, State::Done)
                else {
                    unreachable!("matched above")
                };
                match res.map(|m| m.first_ipv4()) {
                    Ok(Some(ip)) => {
                        self.uds_addr = SocketAddr::new(IpAddr::V4(ip), self.uds_addr.port());
                        self.ask_cluster_user(now);
                    }
                    Ok(None) => self.fail(SignInError::NoAddress(host.clone())),
                    Err(reason) => self.fail(SignInError::Lookup { host: host.clone(), reason }),
                }
                continue;
            }
            let State::ResolveHome { token: want, .. } = self.state else { continue };
            if want != token {
                continue;
            }
            let State::ResolveHome { home, .. } = std::mem::replace(&mut self.state, State::Done)
            else {
                unreachable!("matched above")
            };
            match res.map(|m| m.first_ipv4()) {
                Ok(Some(ip)) => {
                    self.request_user(now, home, SocketAddr::new(IpAddr::V4(ip), UDS_PORT))
                }
                Ok(None) => self.fail(SignInError::HomeNoAddress(home.clone())),
                Err(reason) => self.fail(SignInError::HomeLookup(reason)),
            }
        }
    }
}

/// `http://host:port/path` → (host, port, path). Other schemes and forms: `None`.
fn parse_http_uri(uri: &str) -> Option<(String, u16, String)> {
    let rest = uri.strip_prefix("http://")?;
    let (authority, path) =
        rest.split_once('/').map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (authority, 80),
    };
    Some((host.to_owned(), port, path))
}

/// Escapes a query value (RFC 3986 unreserved characters pass).
fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'@' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests;
