//! The lab clients' server certificate verifiers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// How many chain checks [`Remembered`] keeps; when full it forgets them all.
pub(super) const REMEMBERED: usize = 64;

/// What a chain check depends on besides the verifier's roots: the second of the clock, the
/// name, the end-entity certificate, the intermediates and the OCSP response.
type Key = (u64, String, Vec<u8>, Vec<Vec<u8>>, Vec<u8>);

/// webpki's server certificate check, remembered (issue 19). The check is a function of the
/// chain, the name, the OCSP response and the clock's second, against the verifier's fixed
/// roots, so the same inputs give the same answer. In a sign-in storm thousands of clients
/// check the same few chains within the same seconds: the signature checks of the chain were
/// 5% of its time. The handshake's own signature (CertificateVerify, over that handshake's
/// transcript) is checked every time.
///
/// [`Remembered::any_name`] lets a certificate for other names through (the caller checks
/// the names).
#[derive(Debug)]
pub(super) struct Remembered {
    inner: Arc<WebPkiServerVerifier>,
    any_name: bool,
    seen: Mutex<BTreeMap<Key, Result<(), rustls::Error>>>,
}

impl Remembered {
    pub(super) fn new(inner: Arc<WebPkiServerVerifier>) -> Self {
        Self { inner, any_name: false, seen: Mutex::new(BTreeMap::new()) }
    }

    /// Checks the chain, signatures and validity like webpki and accepts a certificate
    /// whatever names it carries.
    pub(super) fn any_name(inner: Arc<WebPkiServerVerifier>) -> Self {
        Self { any_name: true, ..Self::new(inner) }
    }
}

impl ServerCertVerifier for Remembered {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let key: Key = (
            now.as_secs(),
            server_name.to_str().into_owned(),
            end_entity.to_vec(),
            intermediates.iter().map(|c| c.to_vec()).collect(),
            ocsp_response.to_vec(),
        );
        let known = self.seen.lock().unwrap_or_else(|e| e.into_inner()).get(&key).cloned();
        let r = match known {
            Some(r) => r,
            None => {
                let r = self
                    .inner
                    .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                    .map(|_| ());
                let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
                if seen.len() >= REMEMBERED {
                    seen.clear();
                }
                seen.insert(key, r.clone());
                r
            }
        };
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        match r {
            Err(rustls::Error::InvalidCertificate(
                NotValidForName | NotValidForNameContext { .. },
            )) if self.any_name => Ok(ServerCertVerified::assertion()),
            r => r.map(|()| ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{LabPki, sim_provider};

    #[test]
    fn remembered_answers_like_webpki_and_stays_bounded() {
        let pki = LabPki::new(7).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.ca()).unwrap();
        let webpki =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), sim_provider()).build();
        let webpki = webpki.unwrap();
        let memo = Remembered::new(webpki.clone());
        let (chain, _) = pki.issue(&["cucm1.example.com".to_owned()]).unwrap();
        let (other, _) = LabPki::new(8).unwrap().issue(&["cucm1.example.com".to_owned()]).unwrap();
        let in_2026 = UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_780_000_000));
        let in_2060 = UnixTime::since_unix_epoch(std::time::Duration::from_secs(2_840_000_000));
        let cases = [
            (&chain, "cucm1.example.com", in_2026),
            (&chain, "cucm2.example.com", in_2026),
            (&chain, "cucm1.example.com", in_2060),
            (&other, "cucm1.example.com", in_2026),
        ];
        let check = |chain: &Vec<CertificateDer<'static>>, name: &str, now: UnixTime| {
            let name = ServerName::try_from(name.to_owned()).unwrap();
            let want = webpki.verify_server_cert(&chain[0], &chain[1..], &name, &[], now);
            let got = memo.verify_server_cert(&chain[0], &chain[1..], &name, &[], now);
            assert_eq!(format!("{got:?}"), format!("{want:?}"), "{name:?} at {now:?}");
            want.is_ok()
        };
        // Each case twice: the second answer comes from what was remembered.
        for _ in 0..2 {
            let ok: Vec<bool> = cases.iter().map(|(c, n, t)| check(c, n, *t)).collect();
            assert_eq!(ok, [true, false, false, false], "a valid chain and three refusals");
        }
        assert_eq!(memo.seen.lock().unwrap().len(), cases.len());
        // Any name: only the wrong name passes.
        let any = Remembered::any_name(webpki.clone());
        let ok: Vec<bool> = cases
            .iter()
            .map(|(c, n, t)| {
                let name = ServerName::try_from(n.to_string()).unwrap();
                any.verify_server_cert(&c[0], &c[1..], &name, &[], *t).is_ok()
            })
            .collect();
        assert_eq!(ok, [true, true, false, false]);
        // Many seconds: the table stays bounded and the answers stay right.
        for s in 0..(2 * REMEMBERED as u64) {
            let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_780_000_000 + s));
            assert!(check(&chain, "cucm1.example.com", now));
            assert!(memo.seen.lock().unwrap().len() <= REMEMBERED);
        }
    }
}
