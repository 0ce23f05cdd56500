//! What a user (or a scenario timeline) asks the client to do, and how the composite takes it.

use std::net::SocketAddr;

use crate::Time;
use crate::client::{Bootstrap, Client};
use crate::discovery::DiscoveryConfig;

/// What a user (or a scenario timeline) asks the client to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserAction {
    /// Discover services (SPEC SD1–SD5).
    Discover {
        /// Domain, VoiceServicesDomain, exclusions.
        discovery: DiscoveryConfig,
    },
    /// Something done in the IM window: a message, a subscription, a status (SPEC IMP1).
    Im(crate::im::ImAction),
    /// Sign in to a plain XMPP server directly (SASL PLAIN, no SOAP, no discovery).
    ImDirect {
        /// The server's address.
        server: SocketAddr,
        /// The XMPP domain (the certificate must name it).
        domain: String,
        /// User (local part).
        user: String,
        /// Password.
        password: String,
    },
    /// Does something with calls (SPEC CC4, CC5).
    Call(crate::sip::call::CallAction),
    /// Registers the softphone straight to a SIP registrar (no discovery, no UDS): how the
    /// client core meets a real registrar (`uclab probe-sip`).
    PhoneDirect {
        /// Registrar, then an optional backup (gets the keepalive REGISTER).
        servers: Vec<SocketAddr>,
        /// Digest user.
        user: String,
        /// Password.
        password: String,
        /// Directory number to register.
        line: String,
        /// Answer incoming calls at once.
        auto_answer: bool,
        /// SIP over UDP instead of TCP (the device's `transportLayerProtocol` 1).
        udp: bool,
    },
    /// The machine joined another network (SPEC SD8): new name servers from DHCP.
    NetworkChanged {
        /// The new name servers.
        dns: Vec<SocketAddr>,
    },
    /// Run the installer again with new bootstrap switches (SPEC CFG3).
    Install {
        /// The switches.
        bootstrap: Bootstrap,
    },
    /// A feature the lab's client does not carry out but must refuse clearly: managed file
    /// transfer (`file-transfer`, SPEC IMP7) and deskphone control (`deskphone-control`).
    /// Through the edge each is refused for MRA2's reason.
    Feature {
        /// `file-transfer` or `deskphone-control`.
        name: String,
    },
    /// SPEC MRA3: the user types their phone services credentials (Options, Phone accounts).
    PhoneCredentials {
        /// User id.
        user: String,
        /// Password (never logged).
        password: String,
    },
    /// Discover, then sign in (SPEC AU1).
    SignIn {
        /// Domain, VoiceServicesDomain, exclusions.
        discovery: DiscoveryConfig,
        /// User id.
        user: String,
        /// Password (never logged).
        password: String,
    },
}

impl Client {
    /// Carries out a user action at `now`; `seed` feeds whatever it starts (DNS ids, SRV
    /// weighting, SIP tags).
    pub fn handle_action(&mut self, now: Time, action: UserAction, seed: u64) {
        self.clock = now;
        match action {
            UserAction::Discover { discovery } => self.discover(now, &discovery, seed),
            UserAction::SignIn { discovery, user, password } => {
                self.sign_in_user(now, &discovery, &user, &password, seed);
            }
            UserAction::Install { bootstrap } => self.install(bootstrap),
            UserAction::Im(a) => self.im_action(&a),
            UserAction::Call(a) => self.call_action(now, &a),
            UserAction::ImDirect { server, domain, user, password } => {
                self.im_direct(now, server, &domain, (&user, &password), seed);
            }
            UserAction::NetworkChanged { dns } => self.network_changed(now, dns, seed),
            UserAction::Feature { name } => self.refuse_feature(&name),
            UserAction::PhoneCredentials { user, password } => {
                self.enter_phone_credentials(now, &user, &password);
            }
            UserAction::PhoneDirect { servers, user, password, line, auto_answer, udp } => {
                let creds = (user.as_str(), password.as_str());
                self.phone_direct(now, &servers, creds, (&line, udp, auto_answer), seed);
            }
        }
    }
}
