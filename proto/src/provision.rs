//! The provisioning URL (SPEC SD1–SD3): `ciscojabber://provision?ServicesDomain=D&
//! VoiceServicesDomain=V&ServiceDiscoveryExcludedServices=WEBEX,CUCM`. Parameter names and the
//! scheme are case-insensitive; `//` is optional.

use crate::text::percent_decode;

/// Services that discovery may skip (SPEC SD3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Excluded {
    /// Skip the CAS lookup.
    pub webex: bool,
    /// Skip `_cisco-uds` and `_cuplogin`.
    pub cucm: bool,
}

/// What a provisioning URL sets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Provision {
    /// `ServicesDomain`.
    pub services_domain: Option<String>,
    /// `VoiceServicesDomain` (SPEC SD2).
    pub voice_services_domain: Option<String>,
    /// `ServiceDiscoveryExcludedServices` (SPEC SD3), when present.
    pub excluded: Option<Excluded>,
}

impl Provision {
    /// SPEC SD3: with all three parameters set no discovery runs (manual settings).
    pub fn all_three(&self) -> bool {
        self.services_domain.is_some()
            && self.voice_services_domain.is_some()
            && self.excluded.is_some()
    }
}

/// Why a provisioning URL was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProvisionError {
    /// Not `ciscojabber://provision?…`.
    #[error("not a ciscojabber://provision URL")]
    NotProvision,
    /// A service name other than WEBEX, CUCM (or CUP, which CUCM covers).
    #[error("unknown excluded service `{0}` (WEBEX, CUCM)")]
    UnknownService(String),
    /// A parameter without a value.
    #[error("parameter `{0}` has no value")]
    Empty(String),
}

/// Parses a provisioning URL. Unknown parameters are ignored, as a client would.
pub fn parse(url: &str) -> Result<Provision, ProvisionError> {
    let url = url.trim();
    let (scheme, rest) = url.split_once(':').ok_or(ProvisionError::NotProvision)?;
    if !scheme.eq_ignore_ascii_case("ciscojabber") {
        return Err(ProvisionError::NotProvision);
    }
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let (action, query) = rest.split_once('?').unwrap_or((rest, ""));
    if !action.trim_end_matches('/').eq_ignore_ascii_case("provision") {
        return Err(ProvisionError::NotProvision);
    }
    let mut p = Provision::default();
    for pair in query.split('&').filter(|x| !x.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (percent_decode(k), percent_decode(v));
        let value = || {
            if v.trim().is_empty() {
                Err(ProvisionError::Empty(k.clone()))
            } else {
                Ok(v.trim().to_owned())
            }
        };
        if k.eq_ignore_ascii_case("ServicesDomain") {
            p.services_domain = Some(value()?);
        } else if k.eq_ignore_ascii_case("VoiceServicesDomain") {
            p.voice_services_domain = Some(value()?);
        } else if k.eq_ignore_ascii_case("ServiceDiscoveryExcludedServices") {
            p.excluded = Some(parse_excluded(&v)?);
        }
    }
    Ok(p)
}

/// Parses a list of excluded services (`WEBEX,CUCM`; CUP counts as CUCM), as the URL's
/// `ServiceDiscoveryExcludedServices` and the installer's `EXCLUDED_SERVICES` carry it.
pub fn parse_excluded(v: &str) -> Result<Excluded, ProvisionError> {
    let mut ex = Excluded::default();
    for s in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match s.to_ascii_uppercase().as_str() {
            "WEBEX" => ex.webex = true,
            "CUCM" | "CUP" => ex.cucm = true,
            _ => return Err(ProvisionError::UnknownService(s.to_owned())),
        }
    }
    Ok(ex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd1_parameters_case_insensitive_and_optional_slashes() {
        let p = parse("CiscoJabber://Provision?servicesdomain=example.com&VOICESERVICESDOMAIN=voice.example.com").unwrap();
        assert_eq!(p.services_domain.as_deref(), Some("example.com"));
        assert_eq!(p.voice_services_domain.as_deref(), Some("voice.example.com"));
        assert_eq!(p.excluded, None);
        assert!(!p.all_three());
        let p = parse("ciscojabber:provision?ServicesDomain=a.example").unwrap();
        assert_eq!(p.services_domain.as_deref(), Some("a.example"));
    }

    #[test]
    fn sd3_excluded_services_and_all_three() {
        let p = parse("ciscojabber://provision?ServicesDomain=e.com&ServiceDiscoveryExcludedServices=WEBEX%2Ccucm").unwrap();
        assert_eq!(p.excluded, Some(Excluded { webex: true, cucm: true }));
        let p = parse("ciscojabber://provision?ServicesDomain=e.com&VoiceServicesDomain=v.e.com&ServiceDiscoveryExcludedServices=WEBEX").unwrap();
        assert!(p.all_three());
    }

    #[test]
    fn bad_urls_are_refused() {
        assert_eq!(parse("https://provision?x=y"), Err(ProvisionError::NotProvision));
        assert_eq!(parse("ciscojabber://other?x=y"), Err(ProvisionError::NotProvision));
        assert!(matches!(
            parse("ciscojabber://provision?ServiceDiscoveryExcludedServices=FAX"),
            Err(ProvisionError::UnknownService(_))
        ));
        assert!(matches!(
            parse("ciscojabber://provision?ServicesDomain="),
            Err(ProvisionError::Empty(_))
        ));
        for junk in [
            "",
            ":",
            "ciscojabber",
            "ciscojabber://provision?%",
            "ciscojabber://provision?a=%e2%82",
        ] {
            let _ = parse(junk);
        }
    }
}
