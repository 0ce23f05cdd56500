//! The installer's bootstrap switches (WIRE.md "jabber-config.xml and bootstrap"; SPEC SD1–SD3,
//! SD9, CFG2, CFG3).

use crate::discovery::DiscoveryConfig;

/// Installer bootstrap switches (WIRE.md "jabber-config.xml and bootstrap"; SPEC SD9).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bootstrap {
    /// `AUTHENTICATOR` (`CUCM`, `CUP`, `WEBEX`).
    pub authenticator: Option<String>,
    /// `CCMCIP`: the CUCM to ask.
    pub ccmcip: Option<String>,
    /// `TFTP`.
    pub tftp: Option<String>,
    /// `PRODUCT_MODE` (`phone_mode`).
    pub product_mode: Option<String>,
    /// `TFTP_FILE_NAME`: the group configuration file (SPEC CFG2).
    pub tftp_file_name: Option<String>,
    /// `SERVICES_DOMAIN` (SPEC SD1): discovered instead of the typed address's domain.
    pub services_domain: Option<String>,
    /// `VOICE_SERVICES_DOMAIN` (SPEC SD2).
    pub voice_services_domain: Option<String>,
    /// `EXCLUDED_SERVICES` (SPEC SD3).
    pub excluded: Option<uclab_proto::provision::Excluded>,
    /// `CLEAR`: the installer deletes the cache and the old bootstrap (SPEC CFG3).
    pub clear: bool,
}

impl Bootstrap {
    /// SPEC SD9: `AUTHENTICATOR=CUCM` with `PRODUCT_MODE=phone_mode` and a CUCM: no discovery.
    pub fn phone_mode_cucm(&self) -> Option<&str> {
        let cucm = self.authenticator.as_deref().is_some_and(|a| a.eq_ignore_ascii_case("CUCM"));
        let phone =
            self.product_mode.as_deref().is_some_and(|p| p.eq_ignore_ascii_case("phone_mode"));
        if cucm && phone { self.ccmcip.as_deref().or(self.tftp.as_deref()) } else { None }
    }

    /// The switches as `K=V` separated by spaces, in a fixed order (`CLEAR` is an installer
    /// action, not a setting, and is left out).
    pub fn describe(&self) -> String {
        let excluded = self.excluded.map(|e| {
            let names = [(e.cucm, "CUCM"), (e.webex, "WEBEX")];
            names.iter().filter(|(on, _)| *on).map(|(_, n)| *n).collect::<Vec<_>>().join(",")
        });
        [
            ("AUTHENTICATOR", &self.authenticator),
            ("CCMCIP", &self.ccmcip),
            ("EXCLUDED_SERVICES", &excluded),
            ("PRODUCT_MODE", &self.product_mode),
            ("SERVICES_DOMAIN", &self.services_domain),
            ("TFTP", &self.tftp),
            ("TFTP_FILE_NAME", &self.tftp_file_name),
            ("VOICE_SERVICES_DOMAIN", &self.voice_services_domain),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join(" ")
    }

    /// SPEC SD1–SD3: the bootstrap's domains and exclusions replace what the typed address
    /// gives; a provisioning URL, applied later by the user, wins over both.
    pub fn apply(&self, cfg: &DiscoveryConfig) -> DiscoveryConfig {
        let mut c = cfg.clone();
        if cfg.from_url {
            return c;
        }
        if let Some(d) = &self.services_domain {
            c.services_domain = d.clone();
        }
        if let Some(v) = &self.voice_services_domain {
            c.voice_domain = Some(v.clone());
        }
        if let Some(e) = self.excluded {
            c.excluded = e;
        }
        c
    }

    /// The settings, without the installer's `CLEAR`.
    pub(crate) fn settings(&self) -> Self {
        Self { clear: false, ..self.clone() }
    }
}
