//! Client events: what scenarios assert on and the transcript shows.

use std::fmt;

/// How the services were discovered (SPEC SD5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Via {
    /// `_cisco-uds._tcp` → inside, CUCM UDS.
    CiscoUds,
    /// `_cuplogin._tcp` → legacy IM&P.
    Cuplogin,
    /// `_collab-edge._tls` → MRA through Expressway-E.
    CollabEdge,
    /// Nothing found: the user must enter settings by hand.
    Manual,
    /// The CAS says the domain is a Webex domain (SPEC SD4) and no SRV record was found.
    Webex,
    /// No discovery: the bootstrap named the servers (SPEC SD9).
    Bootstrap,
}

impl Via {
    /// The name used in scenario files and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CiscoUds => "cisco-uds",
            Self::Cuplogin => "cuplogin",
            Self::CollabEdge => "collab-edge",
            Self::Manual => "manual",
            Self::Webex => "webex",
            Self::Bootstrap => "bootstrap",
        }
    }

    /// The SRV service label.
    pub fn srv_label(self) -> &'static str {
        match self {
            Self::CiscoUds => "_cisco-uds._tcp",
            Self::Cuplogin => "_cuplogin._tcp",
            Self::CollabEdge => "_collab-edge._tls",
            Self::Manual | Self::Webex | Self::Bootstrap => "",
        }
    }
}

/// Something the client did or decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// The client noticed a new network (SPEC SD8): new DNS servers; cached services dropped.
    NetworkChanged {
        /// The new name servers, comma-separated.
        dns: String,
    },
    /// Discovery started for a services domain.
    DiscoveryStarted {
        /// Services domain.
        domain: String,
    },
    /// One SRV lookup finished.
    SrvResult {
        /// Record name queried.
        name: String,
        /// `targets` (comma separated, in try order), `none`, `not-available` or `error: …`.
        result: String,
    },
    /// The CAS lookup finished (SPEC SD4).
    CasResult {
        /// Domain asked about.
        org: String,
        /// `webex`, `not-webex`, or `error: …`.
        result: String,
    },
    /// Discovery answered from the cache, without any query (SPEC SD7).
    DiscoveryCached {
        /// How the cached service was found.
        via: Via,
        /// host:port.
        target: String,
    },
    /// Discovery decided which SRV record wins (SPEC SD5).
    DiscoveryResolved {
        /// The winning record.
        via: Via,
    },
    /// The client is trying a target.
    TargetTrying {
        /// host:port.
        target: String,
        /// Address it resolved to.
        addr: String,
    },
    /// A target failed; the next one is tried (SPEC SD6).
    TargetFailed {
        /// host:port.
        target: String,
        /// refused, timeout, unresolvable, …
        reason: String,
    },
    /// A service endpoint was reached.
    ServiceReached {
        /// How discovery found it.
        via: Via,
        /// host:port.
        target: String,
        /// ip:port.
        addr: String,
    },
    /// Every target failed, or none exists.
    DiscoveryFailed {
        /// Why.
        reason: String,
    },
    /// UDS named the user's home cluster (SPEC AU1).
    HomeCluster {
        /// The home cluster's UDS host.
        host: String,
    },
    /// The configuration file the client read (SPEC CFG2): `jabber-config.xml` or a group file.
    ConfigFile {
        /// File name on TFTP.
        file: String,
        /// Who named it: `device` (Cisco Support Field), `bootstrap` (`TFTP_FILE_NAME`),
        /// `default` (`jabber-config.xml`) or `fallback` (a named group file was missing).
        source: String,
        /// `loaded` or `absent` (HTTP 404: no file, so profile and defaults only).
        result: String,
    },
    /// A configuration download failed; sign-in goes on without it (SPEC CFG1, CFG2).
    ConfigFailed {
        /// File name on TFTP.
        file: String,
        /// Why.
        reason: String,
    },
    /// One effective client setting (SPEC CFG1).
    ConfigValue {
        /// Parameter name.
        key: String,
        /// Effective value (empty: not set).
        value: String,
        /// `service-profile`, `config-file` or `default`.
        source: String,
    },
    /// The installer ran again and wrote a bootstrap file (SPEC CFG3).
    BootstrapInstalled {
        /// The switches, `K=V` separated by spaces.
        switches: String,
        /// Whether `CLEAR` deleted the cache.
        clear: bool,
    },
    /// The installer's bootstrap file was read (first launch, SPEC CFG3).
    BootstrapRead {
        /// The switches, `K=V` separated by spaces.
        switches: String,
    },
    /// A newer bootstrap file was ignored: it is read at first launch only (SPEC CFG3).
    BootstrapIgnored {
        /// The switches in force, from the cache.
        cached: String,
    },
    /// The IM session moved to a state of SPEC HA1 (`SOAPCONNECT_P`, `XMPPCONNECT_P`,
    /// `XMPPCONNECTED`, …) at `node`.
    ImState {
        /// HA1 state.
        state: Ha1State,
        /// IM&P node involved.
        node: String,
    },
    /// IM&P named its home and backup nodes in the stream features (WIRE.md).
    ImNodes {
        /// The node the client is talking to.
        home: String,
        /// Its subcluster peer; empty if none was named.
        backup: String,
    },
    /// An IM&P failover began in a deployment Cisco does not support (SPEC HA4: high
    /// availability needs an LDAP contact source).
    ImHaUnsupported {
        /// The effective `DirectoryServerType`.
        contact_source: String,
        /// Why.
        reason: String,
    },
    /// After losing XMPP the client waits this long before signing in again (SPEC HA2).
    ImRelogin {
        /// Seconds, drawn between the server's re-login limits.
        wait_s: u64,
    },
    /// The IM session is signed in (SPEC AU4, IMP1).
    ImSignedIn {
        /// Full JID bound.
        jid: String,
    },
    /// The IM session gave up (SPEC AU5 for wrong credentials).
    ImFailed {
        /// Why.
        reason: String,
    },
    /// A chat message arrived (SPEC IMP1).
    ImMessage {
        /// Sender's full JID.
        from: String,
        /// Body text.
        body: String,
    },
    /// The roster arrived after sign-in (SPEC IMP1).
    ImRoster {
        /// Contacts whose presence the user sees (subscription `to` or `both`).
        contacts: usize,
        /// Items in all.
        items: usize,
    },
    /// The server pushed a roster change (RFC 6121 §2.1.6).
    ImContact {
        /// The contact's bare JID.
        jid: String,
        /// Subscription state (`none`, `to`, `from`, `both`, `remove`), with `+ask` while a
        /// request is pending.
        subscription: String,
    },
    /// A contact's presence changed (SPEC IMP3).
    ImPresence {
        /// The contact's full JID.
        from: String,
        /// `available`, `away`, `dnd`, `xa`, `chat` or `unavailable`.
        show: String,
    },
    /// A subscription stanza arrived: a request, an approval, a refusal (RFC 6121 §3).
    ImSubscription {
        /// Who from (bare JID).
        from: String,
        /// `subscribe`, `subscribed`, `unsubscribe` or `unsubscribed`.
        kind: String,
    },
    /// The server refused a request with a stanza error (SPEC IMP3 list limits and others).
    ImRefused {
        /// What was refused: the entity it was addressed to.
        to: String,
        /// The stanza error condition (`not-allowed`, `service-unavailable`, …).
        condition: String,
        /// The error's text, when the server gave one (RFC 6120 §8.3.2); shown only then.
        reason: String,
    },
    /// The user entered a group chat room (SPEC IMP5).
    ImRoomJoined {
        /// Room JID.
        room: String,
        /// The user's nick there.
        nick: String,
        /// Whether the room was made by this join.
        created: bool,
        /// Occupants already there.
        occupants: usize,
    },
    /// Someone entered, changed status in, or left a room the user is in (SPEC IMP5).
    ImRoomPresence {
        /// Room JID.
        room: String,
        /// Their nick.
        nick: String,
        /// `available`, `away`, …, or `unavailable` when they left.
        show: String,
    },
    /// A group message (SPEC IMP5); `history` when it is one of those replayed on join.
    ImRoomMessage {
        /// Room JID.
        room: String,
        /// Sender's nick.
        from: String,
        /// Body.
        body: String,
        /// Replayed history rather than a live message.
        history: bool,
    },
    /// The user left a room (the room said so).
    ImRoomLeft {
        /// Room JID.
        room: String,
    },
    /// The owner's room configuration was accepted (SPEC IMP5: persistent rooms).
    ImRoomConfigured {
        /// Room JID.
        room: String,
        /// Persistent.
        persistent: bool,
    },
    /// The softphone's registration changed (SPEC CC2, CC3, CC5): `registering`,
    /// `register-failed`, `failover`, `unregistered`, `refreshed`, `keepalive` (the backup answered),
    /// `keepalive-failed`, `cucm-reachable` (while on SRST), `leaving-srst`.
    PhoneState {
        /// What happened.
        state: String,
        /// The node it happened at.
        node: String,
        /// Why, for failures.
        reason: String,
    },
    /// The softphone is registered (SPEC CC1–CC3, CC5).
    PhoneRegistered {
        /// CUCM node or SRST router.
        node: String,
        /// Seconds granted.
        expires: u32,
        /// Registered to the SRST router.
        srst: bool,
    },
    /// A call changed state: `dialing`, `ringback`, `ringing`, `connected`, `held`, `resumed`,
    /// `held-by-peer`, `resumed-by-peer`, `muted`, `unmuted`, `ended`, `failed <code>`.
    CallState {
        /// The phone's call number.
        id: u32,
        /// The state.
        state: String,
        /// The other party.
        peer: String,
    },
    /// A call's media (SPEC MEDIA1): its audio port, from the lower half of the SIP profile's
    /// range, and the video half.
    CallMedia {
        /// The phone's call number.
        id: u32,
        /// Audio RTP port.
        audio_port: u16,
        /// The video range, `start-stop`.
        video: String,
    },
    /// DTMF digits sent (or, `peer` starting with `from`, received): `method` is `info` (SIP
    /// INFO) or `rfc4733` (telephone-event in the RTP stream).
    CallDtmf {
        /// The phone's call number.
        id: u32,
        /// Digits.
        digits: String,
        /// The other party.
        peer: String,
        /// How they travelled.
        method: String,
    },
    /// A call starts sending a medium (SPEC MEDIA2, MEDIA3): a few synthetic RTP packets of
    /// the negotiated codec to the peer's SDP address, with the medium's DSCP.
    CallRtp {
        /// The phone's call number.
        id: u32,
        /// `audio` or `video`.
        media: String,
        /// Codec (`G7221/16000`, `H264/90000`, …).
        codec: String,
        /// Where to (`ip:port`).
        to: String,
        /// DSCP (audio 46, video 34).
        dscp: u8,
    },
    /// A watched line's state (SPEC CC6): `idle`, `busy`, `unknown`, or `terminated` when
    /// the subscription ended.
    BlfState {
        /// The watched directory number.
        target: String,
        /// The state.
        state: String,
    },
    /// A presence subscription was refused (SPEC CC6: `<None>` calling search space is 404
    /// "user unknown", a presence group policy 403).
    BlfRefused {
        /// The watched directory number.
        target: String,
        /// The SIP status.
        code: u16,
        /// Its reason phrase.
        reason: String,
    },
    /// A call's media closed: RTP packets sent and received over the call.
    CallRtpEnd {
        /// The phone's call number.
        id: u32,
        /// Packets sent.
        sent: u32,
        /// Packets received.
        received: u32,
    },
    /// The phone refused what the user asked, and why (SPEC CC4, CC5).
    FeatureRefused {
        /// `hold`, `transfer`, `conference`, `video`, …
        feature: String,
        /// Why.
        reason: String,
    },
    /// SPEC MRA1: Expressway-E answered get_edge_config.
    EdgeConfig {
        /// The edge asked.
        edge: String,
        /// `userUdsServer`: the user's home UDS server (`host:port`).
        uds: String,
        /// What C found inside: `_cisco-uds=host:port,_cuplogin=NameError,…`.
        services: String,
        /// `set` when the answer carried the `X-Auth` cookie, `none` when it did not,
        /// `cached` when a later sign-in reuses an earlier answer (SPEC SD7).
        token: String,
        /// The token's lifetime in seconds (0: none given).
        expires_s: u64,
    },
    /// The edge token was renewed before it expired, or the renewal failed (SPEC MRA1).
    EdgeToken {
        /// `renewed`, or `renewal failed: …`.
        result: String,
        /// The new token's lifetime in seconds (0 after a failure).
        expires_s: u64,
    },
    /// SPEC MRA3: phone services cannot connect through the edge until the user gives
    /// their phone services credentials.
    PhoneServicesError {
        /// Why.
        reason: String,
    },
    /// Sign-in finished (SPEC AU1–AU3).
    SignedIn {
        /// User id.
        user: String,
        /// Home cluster host.
        home: String,
        /// `cup`, `webex` or `cucm` (SPEC AU2).
        authenticator: String,
        /// `full-uc`, `im-only` or `phone-only` (SPEC AU3).
        product_mode: String,
        /// Device names, comma separated.
        devices: String,
    },
    /// Sign-in failed, once and clearly (SPEC AU5).
    SignInFailed {
        /// Why.
        reason: String,
    },
}

impl ClientEvent {
    /// One event of every kind, with every field present: what scenario files are checked
    /// against (`fields` keys per kind, issue 14).
    pub fn examples() -> Vec<Self> {
        let s = || String::from("x");
        vec![
            Self::SrvResult { name: s(), result: s() },
            Self::CasResult { org: s(), result: s() },
            Self::DiscoveryCached { via: Via::CiscoUds, target: s() },
            Self::DiscoveryResolved { via: Via::CiscoUds },
            Self::TargetTrying { target: s(), addr: s() },
            Self::TargetFailed { target: s(), reason: s() },
            Self::ServiceReached { via: Via::CiscoUds, target: s(), addr: s() },
            Self::DiscoveryStarted { domain: s() },
            Self::DiscoveryFailed { reason: s() },
            Self::HomeCluster { host: s() },
            Self::NetworkChanged { dns: s() },
            Self::ConfigFile { file: s(), source: s(), result: s() },
            Self::ConfigFailed { file: s(), reason: s() },
            Self::ConfigValue { key: s(), value: s(), source: s() },
            Self::BootstrapInstalled { switches: s(), clear: true },
            Self::BootstrapRead { switches: s() },
            Self::BootstrapIgnored { cached: s() },
            Self::SignedIn {
                user: s(),
                home: s(),
                authenticator: s(),
                product_mode: s(),
                devices: s(),
            },
            Self::SignInFailed { reason: s() },
            Self::EdgeConfig { edge: s(), uds: s(), services: s(), token: s(), expires_s: 0 },
            Self::EdgeToken { result: s(), expires_s: 0 },
            Self::PhoneServicesError { reason: s() },
            Self::ImState { state: Ha1State::FAILOVER, node: s() },
            Self::ImSignedIn { jid: s() },
            Self::ImNodes { home: s(), backup: s() },
            Self::ImHaUnsupported { contact_source: s(), reason: s() },
            Self::ImRelogin { wait_s: 1 },
            Self::ImFailed { reason: s() },
            Self::ImMessage { from: s(), body: s() },
            Self::ImRoster { contacts: 0, items: 0 },
            Self::ImContact { jid: s(), subscription: s() },
            Self::ImPresence { from: s(), show: s() },
            Self::ImSubscription { from: s(), kind: s() },
            Self::ImRefused { to: s(), condition: s(), reason: s() },
            Self::ImRoomJoined { room: s(), nick: s(), created: true, occupants: 0 },
            Self::ImRoomPresence { room: s(), nick: s(), show: s() },
            Self::ImRoomMessage { room: s(), from: s(), body: s(), history: false },
            Self::ImRoomLeft { room: s() },
            Self::ImRoomConfigured { room: s(), persistent: true },
            Self::PhoneState { state: s(), node: s(), reason: s() },
            Self::PhoneRegistered { node: s(), expires: 120, srst: false },
            Self::CallState { id: 1, state: s(), peer: s() },
            Self::CallDtmf { id: 1, digits: s(), peer: s(), method: s() },
            Self::CallRtp { id: 1, media: s(), codec: s(), to: s(), dscp: 0 },
            Self::CallRtpEnd { id: 1, sent: 0, received: 0 },
            Self::BlfState { target: s(), state: s() },
            Self::BlfRefused { target: s(), code: 0, reason: s() },
            Self::CallMedia { id: 1, audio_port: 0, video: s() },
            Self::FeatureRefused { feature: s(), reason: s() },
        ]
    }

    /// The field names events of `kind` carry, or `None` for a kind with no example.
    pub fn field_names(kind: &str) -> Option<Vec<&'static str>> {
        let e = Self::examples().into_iter().find(|e| e.kind() == kind)?;
        Some(e.fields().into_iter().map(|(k, _)| k).collect())
    }

    /// Every kind [`ClientEvent::kind`] returns, in the order events usually come.
    pub const KINDS: &'static [&'static str] = &[
        "network-changed",
        "discovery-started",
        "srv-result",
        "cas-result",
        "discovery-cached",
        "discovery-resolved",
        "target-trying",
        "target-failed",
        "service-reached",
        "discovery-failed",
        "bootstrap-installed",
        "bootstrap-read",
        "bootstrap-ignored",
        "home-cluster",
        "config-file",
        "config-failed",
        "config-value",
        "edge-config",
        "edge-token",
        "phone-services-error",
        "signed-in",
        "sign-in-failed",
        "im-state",
        "im-signed-in",
        "im-nodes",
        "im-ha-unsupported",
        "im-relogin",
        "im-failed",
        "im-message",
        "im-roster",
        "im-contact",
        "im-presence",
        "im-subscription",
        "im-refused",
        "im-room-joined",
        "im-room-presence",
        "im-room-message",
        "im-room-left",
        "im-room-configured",
        "phone-state",
        "phone-registered",
        "call-state",
        "call-dtmf",
        "call-rtp",
        "call-rtp-end",
        "blf-state",
        "blf-refused",
        "call-media",
        "feature-refused",
    ];

    /// The event's kind, as written in scenario expectations.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NetworkChanged { .. } => "network-changed",
            Self::DiscoveryStarted { .. } => "discovery-started",
            Self::SrvResult { .. } => "srv-result",
            Self::CasResult { .. } => "cas-result",
            Self::DiscoveryCached { .. } => "discovery-cached",
            Self::DiscoveryResolved { .. } => "discovery-resolved",
            Self::TargetTrying { .. } => "target-trying",
            Self::TargetFailed { .. } => "target-failed",
            Self::ServiceReached { .. } => "service-reached",
            Self::DiscoveryFailed { .. } => "discovery-failed",
            Self::HomeCluster { .. } => "home-cluster",
            Self::ConfigFile { .. } => "config-file",
            Self::ConfigFailed { .. } => "config-failed",
            Self::ConfigValue { .. } => "config-value",
            Self::BootstrapInstalled { .. } => "bootstrap-installed",
            Self::BootstrapRead { .. } => "bootstrap-read",
            Self::BootstrapIgnored { .. } => "bootstrap-ignored",
            Self::SignedIn { .. } => "signed-in",
            Self::EdgeConfig { .. } => "edge-config",
            Self::EdgeToken { .. } => "edge-token",
            Self::PhoneServicesError { .. } => "phone-services-error",
            Self::ImState { .. } => "im-state",
            Self::ImSignedIn { .. } => "im-signed-in",
            Self::ImNodes { .. } => "im-nodes",
            Self::ImHaUnsupported { .. } => "im-ha-unsupported",
            Self::ImRelogin { .. } => "im-relogin",
            Self::ImFailed { .. } => "im-failed",
            Self::ImMessage { .. } => "im-message",
            Self::ImRoster { .. } => "im-roster",
            Self::ImContact { .. } => "im-contact",
            Self::ImPresence { .. } => "im-presence",
            Self::ImSubscription { .. } => "im-subscription",
            Self::ImRefused { .. } => "im-refused",
            Self::ImRoomJoined { .. } => "im-room-joined",
            Self::ImRoomPresence { .. } => "im-room-presence",
            Self::ImRoomMessage { .. } => "im-room-message",
            Self::ImRoomLeft { .. } => "im-room-left",
            Self::ImRoomConfigured { .. } => "im-room-configured",
            Self::PhoneState { .. } => "phone-state",
            Self::PhoneRegistered { .. } => "phone-registered",
            Self::CallState { .. } => "call-state",
            Self::CallDtmf { .. } => "call-dtmf",
            Self::CallRtp { .. } => "call-rtp",
            Self::CallRtpEnd { .. } => "call-rtp-end",
            Self::BlfState { .. } => "blf-state",
            Self::BlfRefused { .. } => "blf-refused",
            Self::CallMedia { .. } => "call-media",
            Self::FeatureRefused { .. } => "feature-refused",
            Self::SignInFailed { .. } => "sign-in-failed",
        }
    }

    /// The event's fields, as written in scenario expectations.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::DiscoveryStarted { domain } => vec![("domain", domain.clone())],
            Self::SrvResult { name, result } => {
                vec![("name", name.clone()), ("result", result.clone())]
            }
            Self::DiscoveryResolved { via } => vec![("via", via.as_str().into())],
            Self::CasResult { org, result } => {
                vec![("org", org.clone()), ("result", result.clone())]
            }
            Self::DiscoveryCached { via, target } => {
                vec![("via", via.as_str().into()), ("target", target.clone())]
            }
            Self::TargetTrying { target, addr } => {
                vec![("target", target.clone()), ("addr", addr.clone())]
            }
            Self::TargetFailed { target, reason } => {
                vec![("target", target.clone()), ("reason", reason.clone())]
            }
            Self::ServiceReached { via, target, addr } => vec![
                ("via", via.as_str().into()),
                ("target", target.clone()),
                ("addr", addr.clone()),
            ],
            Self::DiscoveryFailed { reason }
            | Self::SignInFailed { reason }
            | Self::PhoneServicesError { reason } => {
                vec![("reason", reason.clone())]
            }
            Self::HomeCluster { host } => vec![("host", host.clone())],
            Self::NetworkChanged { dns } => vec![("dns", dns.clone())],
            Self::ConfigFile { file, source, result } => {
                vec![("file", file.clone()), ("source", source.clone()), ("result", result.clone())]
            }
            Self::ConfigFailed { file, reason } => {
                vec![("file", file.clone()), ("reason", reason.clone())]
            }
            Self::ConfigValue { key, value, source } => {
                vec![("key", key.clone()), ("value", value.clone()), ("source", source.clone())]
            }
            Self::BootstrapInstalled { switches, clear } => {
                vec![("switches", switches.clone()), ("clear", clear.to_string())]
            }
            Self::BootstrapRead { switches } => vec![("switches", switches.clone())],
            Self::BootstrapIgnored { cached } => vec![("cached", cached.clone())],
            Self::ImState { state, node } => {
                vec![("state", state.as_str().into()), ("node", node.clone())]
            }
            Self::ImSignedIn { jid } => vec![("jid", jid.clone())],
            Self::ImNodes { home, backup } => {
                vec![("home", home.clone()), ("backup", backup.clone())]
            }
            Self::ImHaUnsupported { contact_source, reason } => {
                vec![("contact_source", contact_source.clone()), ("reason", reason.clone())]
            }
            Self::ImRelogin { wait_s } => vec![("wait_s", wait_s.to_string())],
            Self::ImFailed { reason } => vec![("reason", reason.clone())],
            Self::ImMessage { from, body } => vec![("from", from.clone()), ("body", body.clone())],
            Self::ImRoster { contacts, items } => {
                vec![("contacts", contacts.to_string()), ("items", items.to_string())]
            }
            Self::ImContact { jid, subscription } => {
                vec![("jid", jid.clone()), ("subscription", subscription.clone())]
            }
            Self::ImPresence { from, show } => vec![("from", from.clone()), ("show", show.clone())],
            Self::ImSubscription { from, kind } => {
                vec![("from", from.clone()), ("type", kind.clone())]
            }
            Self::ImRefused { to, condition, reason } => {
                let mut f = vec![("to", to.clone()), ("condition", condition.clone())];
                if !reason.is_empty() {
                    f.push(("reason", reason.clone()));
                }
                f
            }
            Self::ImRoomJoined { room, nick, created, occupants } => vec![
                ("room", room.clone()),
                ("nick", nick.clone()),
                ("created", created.to_string()),
                ("occupants", occupants.to_string()),
            ],
            Self::ImRoomPresence { room, nick, show } => {
                vec![("room", room.clone()), ("nick", nick.clone()), ("show", show.clone())]
            }
            Self::ImRoomMessage { room, from, body, history } => vec![
                ("room", room.clone()),
                ("from", from.clone()),
                ("body", body.clone()),
                ("history", history.to_string()),
            ],
            Self::ImRoomLeft { room } => vec![("room", room.clone())],
            Self::ImRoomConfigured { room, persistent } => {
                vec![("room", room.clone()), ("persistent", persistent.to_string())]
            }
            Self::PhoneState { state, node, reason } => {
                let mut f = vec![("state", state.clone()), ("node", node.clone())];
                if !reason.is_empty() {
                    f.push(("reason", reason.clone()));
                }
                f
            }
            Self::CallState { id, state, peer } => {
                vec![("id", id.to_string()), ("state", state.clone()), ("peer", peer.clone())]
            }
            Self::CallDtmf { id, digits, peer, method } => vec![
                ("id", id.to_string()),
                ("digits", digits.clone()),
                ("peer", peer.clone()),
                ("method", method.clone()),
            ],
            Self::CallRtp { id, media, codec, to, dscp } => vec![
                ("id", id.to_string()),
                ("media", media.clone()),
                ("codec", codec.clone()),
                ("to", to.clone()),
                ("dscp", dscp.to_string()),
            ],
            Self::BlfState { target, state } => {
                vec![("target", target.clone()), ("state", state.clone())]
            }
            Self::BlfRefused { target, code, reason } => vec![
                ("target", target.clone()),
                ("code", code.to_string()),
                ("reason", reason.clone()),
            ],
            Self::CallRtpEnd { id, sent, received } => vec![
                ("id", id.to_string()),
                ("sent", sent.to_string()),
                ("received", received.to_string()),
            ],
            Self::CallMedia { id, audio_port, video } => vec![
                ("id", id.to_string()),
                ("audio_port", audio_port.to_string()),
                ("video", video.clone()),
            ],
            Self::FeatureRefused { feature, reason } => {
                vec![("feature", feature.clone()), ("reason", reason.clone())]
            }
            Self::PhoneRegistered { node, expires, srst } => vec![
                ("node", node.clone()),
                ("expires", expires.to_string()),
                ("srst", srst.to_string()),
            ],
            Self::EdgeConfig { edge, uds, services, token, expires_s } => vec![
                ("edge", edge.clone()),
                ("uds", uds.clone()),
                ("services", services.clone()),
                ("token", token.clone()),
                ("expires_s", expires_s.to_string()),
            ],
            Self::EdgeToken { result, expires_s } => {
                vec![("result", result.clone()), ("expires_s", expires_s.to_string())]
            }
            Self::SignedIn { user, home, authenticator, product_mode, devices } => vec![
                ("user", user.clone()),
                ("home", home.clone()),
                ("authenticator", authenticator.clone()),
                ("product_mode", product_mode.clone()),
                ("devices", devices.clone()),
            ],
        }
    }
}

/// The IM session's states of SPEC HA1, spelled as the document spells them so they can be
/// grepped against it.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ha1State {
    /// SOAP login at the primary node.
    SOAPCONNECT_P,
    /// SOAP login at the secondary node.
    SOAPCONNECT_S,
    /// SOAP session (re-login after failover) at the primary node.
    SOAPCONNECT_SESSION_P,
    /// SOAP session at the secondary node.
    SOAPCONNECT_SESSION_S,
    /// XMPP connect to the primary node.
    XMPPCONNECT_P,
    /// XMPP connect to the secondary node.
    XMPPCONNECT_S,
    /// The XMPP session is up.
    XMPPCONNECTED,
    /// The node was lost; waiting to log in again.
    FAILOVER,
}

impl Ha1State {
    /// The name in SPEC HA1 (and in events).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SOAPCONNECT_P => "SOAPCONNECT_P",
            Self::SOAPCONNECT_S => "SOAPCONNECT_S",
            Self::SOAPCONNECT_SESSION_P => "SOAPCONNECT_SESSION_P",
            Self::SOAPCONNECT_SESSION_S => "SOAPCONNECT_SESSION_S",
            Self::XMPPCONNECT_P => "XMPPCONNECT_P",
            Self::XMPPCONNECT_S => "XMPPCONNECT_S",
            Self::XMPPCONNECTED => "XMPPCONNECTED",
            Self::FAILOVER => "FAILOVER",
        }
    }
}

impl fmt::Display for Ha1State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for ClientEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())?;
        for (k, v) in self.fields() {
            if v.contains(' ') {
                write!(f, " {k}=\"{v}\"")?;
            } else {
                write!(f, " {k}={v}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scenario files are checked against `KINDS`: every kind an event can have is in it.
    #[test]
    fn kinds_lists_every_event_kind() {
        let all = ClientEvent::examples();
        for k in ClientEvent::KINDS {
            assert!(all.iter().any(|e| e.kind() == *k), "{k} has no example");
        }
        for e in all {
            assert!(ClientEvent::KINDS.contains(&e.kind()), "{} missing", e.kind());
        }
    }
}
