//! TLS for every HTTPS, SIP-TLS and XMPP hop: rustls with a lab PKI.
//!
//! In simulation the handshake bytes must repeat for a seed, so the crypto provider draws
//! every random value — client/server randoms, session ids, tickets, the X25519 key shares —
//! from the seeded stream of the node doing the handshake: each node's [`TlsContext`] has its
//! own, derived from the run seed and the node's name ([`TlsContext::for_node`]), so one extra
//! handshake on one node leaves every other node's bytes as they were (issue 15). A guard
//! installs the stream on the thread for the duration of each poll of a handshake or a TLS
//! stream and removes it after, panics included. Without a stream the provider fails the
//! handshake instead of falling back to OS randomness. Certificates use Ed25519 (deterministic signatures) with keys
//! derived from the seed, and the clock that checks their validity is the simulated one. Live
//! mode uses rustls' ring provider as it is. Every session's secrets go to the capture, which
//! writes them into the pcapng (Decryption Secrets Block) so Wireshark opens TLS decrypted.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rustls::client::danger::ServerCertVerifier;
use rustls::client::{
    ClientSessionStore, Resumption, Tls12ClientSessionValue, Tls13ClientSessionValue,
};
use rustls::crypto::{ActiveKeyExchange, CryptoProvider, SharedSecret, SupportedKxGroup};
pub use rustls::pki_types::CertificateDer as Certificate;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::time_provider::TimeProvider;
pub use rustls::{ClientConfig, ServerConfig};
use rustls::{KeyLog, NamedGroup, RootCertStore};

use self::verify::Remembered;
use crate::capture::Capture;
use crate::messages::{PlainTap, with_probe};
use crate::rng::{Entropy, derive_seed};

mod verify;

/// One node's TLS random stream.
type NodeRng = Arc<Mutex<ChaCha20Rng>>;

thread_local! {
    /// The stream of the node whose TLS is being polled on this thread, if any.
    static CURRENT: RefCell<Option<NodeRng>> = const { RefCell::new(None) };
}

/// Installs a node's stream on this thread until dropped, then puts back what was there.
struct Installed(Option<NodeRng>);

impl Installed {
    fn new(rng: Option<&NodeRng>) -> Self {
        Self(CURRENT.with(|c| c.replace(rng.cloned())))
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let prev = self.0.take();
        CURRENT.with(|c| *c.borrow_mut() = prev);
    }
}

fn fill(buf: &mut [u8]) -> Result<(), rustls::crypto::GetRandomFailed> {
    CURRENT.with(|c| match c.borrow().as_ref() {
        Some(rng) => {
            rng.lock().unwrap_or_else(|e| e.into_inner()).fill_bytes(buf);
            Ok(())
        }
        None => Err(rustls::crypto::GetRandomFailed),
    })
}

/// A handshake future or a TLS stream that draws TLS randomness from its node's stream
/// whenever it is polled.
pub struct Seeded<T> {
    rng: Option<NodeRng>,
    inner: T,
    /// Where the plaintext written goes (the capture's message log: issue 20), learnt from
    /// the tapped connection the handshake used.
    tap: Option<PlainTap>,
}

impl<T> fmt::Debug for Seeded<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Seeded").finish_non_exhaustive()
    }
}

impl<T> Seeded<T> {
    /// The wrapped stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<F: Future + Unpin> Future for Seeded<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _g = Installed::new(self.rng.as_ref());
        let this = &mut *self;
        let probe = if this.tap.is_none() { Some(None) } else { None };
        let (r, learnt) = with_probe(probe, || Pin::new(&mut this.inner).poll(cx));
        if let Some(Some(tap)) = learnt {
            this.tap = Some(tap);
        }
        r
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Seeded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let _g = Installed::new(self.rng.as_ref());
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Seeded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let _g = Installed::new(self.rng.as_ref());
        let this = &mut *self;
        let Some(tap) = &this.tap else { return Pin::new(&mut this.inner).poll_write(cx, buf) };
        tap.capture.plain_arm(tap.local, tap.peer);
        // A handshake polled around this one (TLS inside TLS) must not take this connection.
        let (r, _) = with_probe(None, || Pin::new(&mut this.inner).poll_write(cx, buf));
        let took = match &r {
            Poll::Ready(Ok(n)) => &buf[..*n],
            _ => &[],
        };
        tap.capture.plain(tap.local, tap.peer, took);
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let _g = Installed::new(self.rng.as_ref());
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let _g = Installed::new(self.rng.as_ref());
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[derive(Debug)]
struct SeededRandom;

impl rustls::crypto::SecureRandom for SeededRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), rustls::crypto::GetRandomFailed> {
        fill(buf)
    }
}

/// X25519 (RFC 7748) with the private key drawn from the seeded stream.
#[derive(Debug)]
struct SeededX25519;

struct X25519Share {
    secret: x25519_dalek::StaticSecret,
    public: x25519_dalek::PublicKey,
}

impl SupportedKxGroup for SeededX25519 {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, rustls::Error> {
        let mut k = [0u8; 32];
        fill(&mut k).map_err(|_| rustls::Error::FailedToGetRandomBytes)?;
        let secret = x25519_dalek::StaticSecret::from(k);
        let public = x25519_dalek::PublicKey::from(&secret);
        Ok(Box::new(X25519Share { secret, public }))
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

impl ActiveKeyExchange for X25519Share {
    fn complete(self: Box<Self>, peer: &[u8]) -> Result<SharedSecret, rustls::Error> {
        let peer: [u8; 32] = peer
            .try_into()
            .map_err(|_| rustls::Error::PeerMisbehaved(rustls::PeerMisbehaved::InvalidKeyShare))?;
        let shared = self.secret.diffie_hellman(&x25519_dalek::PublicKey::from(peer));
        // RFC 7748 §6.1: an all-zero result means a small-order peer key.
        if shared.as_bytes().iter().all(|b| *b == 0) {
            return Err(rustls::Error::PeerMisbehaved(rustls::PeerMisbehaved::InvalidKeyShare));
        }
        Ok(SharedSecret::from(&shared.as_bytes()[..]))
    }

    fn pub_key(&self) -> &[u8] {
        self.public.as_bytes()
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

static SEEDED_RANDOM: SeededRandom = SeededRandom;
static SEEDED_X25519: SeededX25519 = SeededX25519;

/// The simulation's provider: ring's cipher suites and signature checks, seeded randomness and
/// key exchange.
pub fn sim_provider() -> Arc<CryptoProvider> {
    let base = rustls::crypto::ring::default_provider();
    Arc::new(CryptoProvider {
        kx_groups: vec![&SEEDED_X25519],
        secure_random: &SEEDED_RANDOM,
        ..base
    })
}

/// The live provider: ring as it is.
pub fn live_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The clock certificates are checked against: the scenario epoch plus simulated time.
#[derive(Debug)]
pub struct SimClock {
    /// Scenario start after the Unix epoch.
    pub epoch: Duration,
}

impl TimeProvider for SimClock {
    fn current_time(&self) -> Option<UnixTime> {
        let t = self.epoch + turmoil::sim_elapsed().unwrap_or_default();
        Some(UnixTime::since_unix_epoch(t))
    }
}

/// Sends every TLS secret to the capture (NSS key log lines).
pub struct CaptureKeyLog(pub Capture);

impl fmt::Debug for CaptureKeyLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CaptureKeyLog")
    }
}

impl KeyLog for CaptureKeyLog {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        // One string, no allocation per byte (issue 19: five secrets per handshake).
        let mut line = format!("{label} ");
        uclab_proto::text::push_hex(&mut line, client_random);
        line.push(' ');
        uclab_proto::text::push_hex(&mut line, secret);
        self.0.tls_secret(line);
    }

    fn will_log(&self, _label: &str) -> bool {
        true
    }
}

/// Errors making certificates or configs (our bugs or a bad name in a scenario).
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// rcgen refused.
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    /// rustls refused.
    #[error("tls config: {0}")]
    Config(#[from] rustls::Error),
}

/// The lab's certificate authority: every node's certificate is issued by it, deterministically
/// from the seed, and clients trust it.
pub struct LabPki {
    master: Entropy,
    ca_der: CertificateDer<'static>,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl fmt::Debug for LabPki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LabPki").field("master", &self.master).finish_non_exhaustive()
    }
}

/// An Ed25519 key whose 32-byte seed comes from the run seed and a label (PKCS#8 v1,
/// RFC 8410 §7).
fn ed25519_pkcs8(master: &Entropy, label: &str) -> Vec<u8> {
    let mut rng = master.stream(label);
    let mut k = [0u8; 32];
    rng.fill_bytes(&mut k);
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(&k);
    der
}

fn key_pair(pkcs8: &[u8]) -> Result<rcgen::KeyPair, rcgen::Error> {
    let der = PrivatePkcs8KeyDer::from(pkcs8.to_vec());
    rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_ED25519)
}

fn serial(master: &Entropy, label: &str) -> rcgen::SerialNumber {
    let n = match master {
        Entropy::Seed(seed) => derive_seed(*seed, label),
        Entropy::Os(_) => master.stream(label).next_u64(),
    };
    let mut s = n.to_be_bytes().to_vec();
    s[0] &= 0x7f; // positive (RFC 5280 §4.1.2.2)
    rcgen::SerialNumber::from(s)
}

impl LabPki {
    /// The lab CA for `seed` (simulation, and live mode with `--seed`: every such process
    /// has the same CA, so it is for tests only).
    pub fn new(seed: u64) -> Result<Self, TlsSetupError> {
        Self::from_entropy(Entropy::Seed(seed))
    }

    /// The lab CA with keys from `master` ([`Entropy::Os`]: a CA no other process has).
    pub fn from_entropy(master: Entropy) -> Result<Self, TlsSetupError> {
        let key = key_pair(&ed25519_pkcs8(&master, "pki:ca"))?;
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name.push(rcgen::DnType::CommonName, "uclab lab CA");
        p.distinguished_name.push(rcgen::DnType::OrganizationName, "uclab");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2049, 12, 31);
        p.serial_number = Some(serial(&master, "pki:ca:serial"));
        let cert = p.self_signed(&key)?;
        let ca_der = cert.der().clone();
        Ok(Self { master, ca_der, issuer: rcgen::Issuer::new(p, key) })
    }

    /// The CA certificate (DER), to trust.
    pub fn ca(&self) -> CertificateDer<'static> {
        self.ca_der.clone()
    }

    /// The CA certificate as PEM (for curl's `--cacert`, a browser or a real client).
    pub fn ca_pem(&self) -> String {
        let b64 = uclab_proto::base64::encode(&self.ca_der);
        let mut s = String::from("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            s.push_str(&String::from_utf8_lossy(line));
            s.push('\n');
        }
        s.push_str("-----END CERTIFICATE-----\n");
        s
    }

    /// A certificate for `names` (DNS names or IP addresses) and its key. The same names give
    /// the same certificate for a seed.
    pub fn issue(
        &self,
        names: &[String],
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsSetupError> {
        let label = format!("pki:leaf:{}", names.join(","));
        let pkcs8 = ed25519_pkcs8(&self.master, &label);
        let key = key_pair(&pkcs8)?;
        let mut p = rcgen::CertificateParams::new(names.to_vec())?;
        if let Some(cn) = names.first() {
            p.distinguished_name.push(rcgen::DnType::CommonName, cn.as_str());
        }
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2049, 12, 31);
        p.serial_number = Some(serial(&self.master, &format!("{label}:serial")));
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(&key, &self.issuer)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8));
        Ok((vec![cert.der().clone(), self.ca_der.clone()], key))
    }
}

/// What a node needs to speak TLS: the provider, the clock, the lab PKI and the key log.
#[derive(Clone)]
pub struct TlsContext {
    provider: Arc<CryptoProvider>,
    time: Arc<dyn TimeProvider>,
    pki: Arc<LabPki>,
    keylog: Arc<CaptureKeyLog>,
    /// Roots clients trust instead of the lab CA (`uclab probe --ca`: another process's CA).
    roots: Option<Arc<Vec<CertificateDer<'static>>>>,
    /// This node's TLS random stream (simulation; see the module docs).
    rng: Option<NodeRng>,
    /// [`Self::client_config`] without extra roots, made once and shared by every node of the
    /// run (issue 19): nothing in it depends on the node, and a connection only reads it.
    plain_client: Arc<OnceLock<Arc<ClientConfig>>>,
}

impl fmt::Debug for TlsContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsContext").field("pki", &self.pki).finish_non_exhaustive()
    }
}

impl TlsContext {
    /// A context for simulation (seeded provider, simulated clock).
    pub fn sim(pki: Arc<LabPki>, capture: Capture, epoch: Duration) -> Self {
        Self {
            provider: sim_provider(),
            time: Arc::new(SimClock { epoch }),
            pki,
            keylog: Arc::new(CaptureKeyLog(capture)),
            roots: None,
            rng: None,
            plain_client: Arc::default(),
        }
    }

    /// A context for live mode (ring provider, system clock).
    pub fn live(pki: Arc<LabPki>, capture: Capture) -> Self {
        Self {
            provider: live_provider(),
            time: Arc::new(rustls::time_provider::DefaultTimeProvider),
            pki,
            keylog: Arc::new(CaptureKeyLog(capture)),
            roots: None,
            rng: None,
            plain_client: Arc::default(),
        }
    }

    /// The clock certificates are checked against, after the Unix epoch: the scenario
    /// epoch plus simulated time in simulation, the system clock live. Also what nodes stamp
    /// protocol timestamps with.
    pub fn unix_now(&self) -> Duration {
        self.time.current_time().map_or(Duration::ZERO, |t| Duration::from_secs(t.as_secs()))
    }

    /// This context for the node `name` of a run with `seed`: its TLS randomness comes from a
    /// stream of its own (simulation; live mode's provider ignores it).
    pub fn for_node(&self, seed: u64, name: &str) -> Self {
        let stream = ChaCha20Rng::seed_from_u64(derive_seed(seed, &format!("tls:{name}")));
        Self { rng: Some(Arc::new(Mutex::new(stream))), ..self.clone() }
    }

    /// Clients of this context trust `roots` instead of the lab CA (a CA read from another
    /// process's `--ca-pem`).
    pub fn trusting(mut self, roots: Vec<CertificateDer<'static>>) -> Self {
        self.roots = Some(Arc::new(roots));
        self.plain_client = Arc::default();
        self
    }

    /// The lab PKI.
    pub fn pki(&self) -> &LabPki {
        &self.pki
    }

    /// A client config that trusts the lab CA (plus `extra_roots`).
    pub fn client_config(
        &self,
        extra_roots: &[CertificateDer<'static>],
    ) -> Result<Arc<ClientConfig>, TlsSetupError> {
        if !extra_roots.is_empty() {
            return self.make_client_config(extra_roots);
        }
        if let Some(c) = self.plain_client.get() {
            return Ok(c.clone());
        }
        let c = self.make_client_config(&[])?;
        Ok(self.plain_client.get_or_init(|| c).clone())
    }

    fn make_client_config(
        &self,
        extra_roots: &[CertificateDer<'static>],
    ) -> Result<Arc<ClientConfig>, TlsSetupError> {
        let mut roots = RootCertStore::empty();
        match &self.roots {
            Some(r) => {
                for c in r.iter() {
                    roots.add(c.clone())?;
                }
            }
            None => roots.add(self.pki.ca())?,
        }
        for r in extra_roots {
            roots.add(r.clone())?;
        }
        let builder = ClientConfig::builder_with_details(self.provider.clone(), self.time.clone())
            .with_safe_default_protocol_versions()?;
        let mut c = if roots.is_empty() {
            // No root: webpki's builder refuses that, and every chain fails as it should.
            builder.with_root_certificates(roots).with_no_client_auth()
        } else {
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                self.provider.clone(),
            )
            .build()
            .map_err(|e| TlsSetupError::Config(rustls::Error::General(e.to_string())))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Remembered::new(webpki)))
                .with_no_client_auth()
        };
        c.key_log = self.keylog.clone();
        c.resumption = no_resumption();
        Ok(Arc::new(c))
    }

    /// A client config with a custom verifier (tests of certificate handling).
    pub fn client_config_with_verifier(
        &self,
        verifier: Arc<dyn ServerCertVerifier>,
    ) -> Result<Arc<ClientConfig>, TlsSetupError> {
        let mut c = ClientConfig::builder_with_details(self.provider.clone(), self.time.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        c.key_log = self.keylog.clone();
        c.resumption = no_resumption();
        Ok(Arc::new(c))
    }

    /// A server config presenting a lab certificate for `names`.
    pub fn server_config(&self, names: &[String]) -> Result<Arc<ServerConfig>, TlsSetupError> {
        let (chain, key) = self.pki.issue(names)?;
        let mut c = ServerConfig::builder_with_details(self.provider.clone(), self.time.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        c.key_log = self.keylog.clone();
        Ok(Arc::new(c))
    }

    /// A client config that trusts the lab CA and presents a lab certificate for `names`
    /// (mutual TLS: Expressway-C on the traversal zone, SPEC PORTS 7001).
    pub fn client_config_with_cert(
        &self,
        names: &[String],
    ) -> Result<Arc<ClientConfig>, TlsSetupError> {
        let verifier = self.lab_server_verifier()?;
        self.client_config_presenting(names, verifier)
    }

    /// A client config presenting a lab certificate for `names` that accepts a server
    /// certificate chaining to the lab CA whatever names it carries (XMPP server-to-server:
    /// a certificate that does not name the domain rules out SASL EXTERNAL, not Server
    /// Dialback, XEP-0220 §1.2); the caller checks the names after the handshake
    /// ([`cert_has_name`]).
    pub fn client_config_with_cert_any_name(
        &self,
        names: &[String],
    ) -> Result<Arc<ClientConfig>, TlsSetupError> {
        let verifier = Arc::new(Remembered::any_name(self.lab_server_verifier()?));
        self.client_config_presenting(names, verifier)
    }

    /// A server config presenting a lab certificate for `names` that requires a client
    /// certificate issued by the lab CA (the traversal zone's server end, Expressway-E). Which
    /// name the client's certificate must carry is checked after the handshake
    /// ([`cert_has_name`]).
    pub fn server_config_client_auth(
        &self,
        names: &[String],
    ) -> Result<Arc<ServerConfig>, TlsSetupError> {
        self.server_config_asking(names, true)
    }

    /// A server config presenting a lab certificate for `names` that asks for a client
    /// certificate and accepts a connection without one (XMPP server-to-server: a peer proves
    /// its domain with a certificate for SASL EXTERNAL, or by Server Dialback without one,
    /// RFC 6120 §13.7, XEP-0220). A certificate that is offered must chain to the lab CA;
    /// which names it carries is checked after the handshake ([`cert_has_name`]).
    pub fn server_config_optional_client_auth(
        &self,
        names: &[String],
    ) -> Result<Arc<ServerConfig>, TlsSetupError> {
        self.server_config_asking(names, false)
    }

    /// The lab CA as the only root.
    fn lab_roots(&self) -> Result<Arc<RootCertStore>, TlsSetupError> {
        let mut roots = RootCertStore::empty();
        roots.add(self.pki.ca())?;
        Ok(Arc::new(roots))
    }

    /// webpki's server certificate checks against the lab CA.
    fn lab_server_verifier(
        &self,
    ) -> Result<Arc<rustls::client::WebPkiServerVerifier>, TlsSetupError> {
        rustls::client::WebPkiServerVerifier::builder_with_provider(
            self.lab_roots()?,
            self.provider.clone(),
        )
        .build()
        .map_err(|e| TlsSetupError::Config(rustls::Error::General(e.to_string())))
    }

    /// A client config presenting a lab certificate for `names`, checking the server with
    /// `verifier`.
    fn client_config_presenting(
        &self,
        names: &[String],
        verifier: Arc<dyn ServerCertVerifier>,
    ) -> Result<Arc<ClientConfig>, TlsSetupError> {
        let (chain, key) = self.pki.issue(names)?;
        let mut c = ClientConfig::builder_with_details(self.provider.clone(), self.time.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(chain, key)?;
        c.key_log = self.keylog.clone();
        c.resumption = no_resumption();
        Ok(Arc::new(c))
    }

    /// A server config presenting a lab certificate for `names` that asks for a client
    /// certificate of the lab CA, and insists on one when `required`.
    fn server_config_asking(
        &self,
        names: &[String],
        required: bool,
    ) -> Result<Arc<ServerConfig>, TlsSetupError> {
        let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.lab_roots()?,
            self.provider.clone(),
        );
        let builder = if required { builder } else { builder.allow_unauthenticated() };
        let verifier = builder
            .build()
            .map_err(|e| TlsSetupError::Config(rustls::Error::General(e.to_string())))?;
        let (chain, key) = self.pki.issue(names)?;
        let mut c = ServerConfig::builder_with_details(self.provider.clone(), self.time.clone())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)?;
        c.key_log = self.keylog.clone();
        Ok(Arc::new(c))
    }

    /// Client side of TLS over an established stream.
    pub async fn connect<S>(
        &self,
        config: Arc<ClientConfig>,
        server_name: &str,
        stream: S,
    ) -> std::io::Result<Seeded<tokio_rustls::client::TlsStream<S>>>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        // The ClientHello's random and key share are drawn here, before the first poll.
        let connect = {
            let _g = Installed::new(self.rng.as_ref());
            tokio_rustls::TlsConnector::from(config).connect(name, stream)
        };
        let mut handshake = Seeded { rng: self.rng.clone(), inner: connect, tap: None };
        let inner = (&mut handshake).await?;
        Ok(Seeded { rng: self.rng.clone(), inner, tap: handshake.tap })
    }

    /// Server side of TLS over an accepted stream.
    pub async fn accept<S>(
        &self,
        config: Arc<ServerConfig>,
        stream: S,
    ) -> std::io::Result<Seeded<tokio_rustls::server::TlsStream<S>>>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let accept = {
            let _g = Installed::new(self.rng.as_ref());
            tokio_rustls::TlsAcceptor::from(config).accept(stream)
        };
        let mut handshake = Seeded { rng: self.rng.clone(), inner: accept, tap: None };
        let inner = (&mut handshake).await?;
        Ok(Seeded { rng: self.rng.clone(), inner, tap: handshake.tap })
    }
}

/// Whether the end-entity certificate of a peer's chain (`peer_certificates()` after a
/// handshake) is valid for `name`; false without one.
pub fn peer_cert_has_name(chain: Option<&[CertificateDer<'_>]>, name: &str) -> bool {
    chain.and_then(|c| c.first()).is_some_and(|c| cert_has_name(c, name))
}

/// Whether the end-entity certificate `cert` is valid for the DNS name (or IP address)
/// `name` (RFC 6125 matching by rustls-webpki, the check a TLS client makes of a server).
/// Used on a peer's certificate after a mutual-TLS handshake, where the handshake checked the
/// chain but not the name. Garbage, or a name that is not a name, is `false`.
pub fn cert_has_name(cert: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(parsed) = rustls::server::ParsedCertificate::try_from(cert) else { return false };
    let Ok(server_name) = ServerName::try_from(name) else { return false };
    rustls::client::verify_server_name(&parsed, &server_name).is_ok()
}

/// The certificates of a PEM text (`-----BEGIN CERTIFICATE-----` blocks), for `--ca` files.
pub fn certs_from_pem(text: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let body = &rest[start + "-----BEGIN CERTIFICATE-----".len()..];
        let end =
            body.find("-----END CERTIFICATE-----").ok_or("a certificate block is not closed")?;
        let b64: String = body[..end].chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let der = uclab_proto::base64::decode(&b64).ok_or("a certificate is not base64")?;
        out.push(CertificateDer::from(der));
        rest = &body[end..];
    }
    if out.is_empty() {
        return Err("no certificate in the file".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_has_name_checks_the_san() {
        let pki = LabPki::new(7).unwrap();
        let (chain, _) = pki.issue(&["expc.example.com".to_owned()]).unwrap();
        assert!(cert_has_name(&chain[0], "expc.example.com"));
        assert!(cert_has_name(&chain[0], "EXPC.example.com"), "DNS names are case-insensitive");
        assert!(!cert_has_name(&chain[0], "expe.example.com"));
        assert!(!cert_has_name(&chain[0], "not a name"));
        assert!(!cert_has_name(&CertificateDer::from(vec![1, 2, 3]), "expc.example.com"));
    }
}

/// Session resumption as rustls's default offers it, with a store that keeps nothing (issue 19,
/// memory). Each connection once had a config of its own, so a ticket stored there was never
/// used again; the store that keeps nothing made that independent of how configs are shared
/// (the run now shares one, [`TlsContext::client_config`]), without rustls's default cache of
/// 256 sessions (17 KiB) and with handshakes byte for byte the same.
fn no_resumption() -> Resumption {
    static STORE: OnceLock<Arc<NoSessions>> = OnceLock::new();
    Resumption::store(STORE.get_or_init(|| Arc::new(NoSessions)).clone())
}

/// A client session store that keeps nothing.
#[derive(Debug)]
struct NoSessions;

impl ClientSessionStore for NoSessions {
    fn set_kx_hint(&self, _: ServerName<'static>, _: NamedGroup) {}

    fn kx_hint(&self, _: &ServerName<'_>) -> Option<NamedGroup> {
        None
    }

    fn set_tls12_session(&self, _: ServerName<'static>, _: Tls12ClientSessionValue) {}

    fn tls12_session(&self, _: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        None
    }

    fn remove_tls12_session(&self, _: &ServerName<'static>) {}

    fn insert_tls13_ticket(&self, _: ServerName<'static>, _: Tls13ClientSessionValue) {}

    fn take_tls13_ticket(&self, _: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        None
    }
}
