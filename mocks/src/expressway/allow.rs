//! Expressway-C's HTTP allow list (SPEC MRA1, MRA2): which internal hosts, ports, schemes,
//! paths and methods a request through the edge may reach.
//!
//! Like the product, C writes rules of its own for the servers it discovered (the
//! `_cisco-uds`, `_cuplogin` and `_cisco-phone-tftp` SRV targets; a user's home cluster
//! found only through ILS is not among them and needs an administrator's rule): UDS `GET /cucm-uds/…` over HTTPS 8443 and TFTP-over-HTTP `GET /…` on 6970 on CUCM,
//! EPAS SOAP `POST /EPASSoap/service/v80` over HTTPS 8443 on IM&P. A scenario adds more
//! (`[[node.allow]]`). Managed file transfer is refused whatever a rule says (SPEC MRA2,
//! IMP7: no file transfer over MRA).

use std::collections::BTreeSet;

use uclab_proto::edge::Scheme;

/// Paths of managed file transfer (SPEC IMP7), refused over MRA (SPEC MRA2) even when a rule
/// would allow them. IM&P's MFT service is not mocked yet; `/mft` is where the lab puts it.
pub const MFT_PREFIXES: &[&str] = &["/mft"];
/// Hosts C remembers per kind (discovered servers): far above any lab cluster.
pub const MAX_HOSTS: usize = 256;

/// How a rule's path matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathMatch {
    /// The path is the rule's path.
    Exact,
    /// The path starts with the rule's path.
    Prefix,
}

/// One rule of the allow list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowRule {
    /// Internal host (FQDN, compared case-insensitively).
    pub host: String,
    /// Port.
    pub port: u16,
    /// HTTP or HTTPS.
    pub scheme: Scheme,
    /// Path (or path prefix).
    pub path: String,
    /// Exact or prefix.
    pub matching: PathMatch,
    /// Methods allowed (`GET`, `POST`, …).
    pub methods: Vec<String>,
}

impl AllowRule {
    /// Whether the rule lets `method scheme://host:port path` through.
    pub fn allows(&self, method: &str, scheme: Scheme, host: &str, port: u16, path: &str) -> bool {
        let path_ok = match self.matching {
            PathMatch::Exact => path == self.path,
            PathMatch::Prefix => path.starts_with(&self.path),
        };
        path_ok
            && self.port == port
            && self.scheme == scheme
            && self.host.eq_ignore_ascii_case(host)
            && self.methods.iter().any(|m| m.eq_ignore_ascii_case(method))
    }
}

/// What the allow list says of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Forward it.
    Allowed,
    /// No rule allows it.
    NotListed,
    /// Managed file transfer (SPEC MRA2).
    FileTransfer,
}

/// The allow list: discovered servers and the scenario's rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList {
    /// CUCM nodes C discovered (UDS and TFTP rules).
    cucm: BTreeSet<String>,
    /// IM&P nodes C discovered (SOAP rule).
    imp: BTreeSet<String>,
    /// The scenario's rules.
    pub extra: Vec<AllowRule>,
}

fn remember(set: &mut BTreeSet<String>, host: &str) {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    if h.is_empty() || h == "." {
        return;
    }
    if set.len() < MAX_HOSTS || set.contains(&h) {
        set.insert(h);
    }
}

impl AllowList {
    /// An allow list with the scenario's `rules` and nothing discovered yet.
    pub fn new(extra: Vec<AllowRule>) -> Self {
        Self { extra, ..Self::default() }
    }

    /// A CUCM node seen through `_cisco-uds` or `_cisco-phone-tftp`.
    pub fn add_cucm(&mut self, host: &str) {
        remember(&mut self.cucm, host);
    }

    /// An IM&P node seen through `_cuplogin`.
    pub fn add_imp(&mut self, host: &str) {
        remember(&mut self.imp, host);
    }

    /// Whether C has discovered any CUCM node yet.
    pub fn knows_cucm(&self) -> bool {
        !self.cucm.is_empty()
    }

    /// Whether SIP through the edge may go to `host`: a CUCM node C discovered, or a host an
    /// administrator's rule names (a home cluster found only through ILS, added by hand as
    /// the product's Unified CM server list is).
    pub fn is_cucm(&self, host: &str) -> bool {
        let h = host.trim_end_matches('.').to_ascii_lowercase();
        self.cucm.contains(&h) || self.extra.iter().any(|r| r.host.eq_ignore_ascii_case(&h))
    }

    /// The automatic rules, then the scenario's.
    pub fn rules(&self) -> Vec<AllowRule> {
        let rule = |host: &str, port, scheme, path: &str, matching, method: &str| AllowRule {
            host: host.to_owned(),
            port,
            scheme,
            path: path.to_owned(),
            matching,
            methods: vec![method.to_owned()],
        };
        let mut out = Vec::new();
        for h in &self.cucm {
            out.push(rule(h, 8443, Scheme::Https, "/cucm-uds/", PathMatch::Prefix, "GET"));
            out.push(rule(h, 6970, Scheme::Http, "/", PathMatch::Prefix, "GET"));
        }
        for h in &self.imp {
            out.push(rule(
                h,
                8443,
                Scheme::Https,
                "/EPASSoap/service/v80",
                PathMatch::Exact,
                "POST",
            ));
        }
        out.extend(self.extra.iter().cloned());
        out
    }

    /// The verdict on `method scheme://host:port path`.
    pub fn check(
        &self,
        method: &str,
        scheme: Scheme,
        host: &str,
        port: u16,
        path: &str,
    ) -> Verdict {
        let lower = path.to_ascii_lowercase();
        // SPEC MRA2: no file transfer over MRA, whatever the rules say.
        if MFT_PREFIXES.iter().any(|p| lower == *p || lower.starts_with(&format!("{p}/"))) {
            return Verdict::FileTransfer;
        }
        // A path that is not in its plain form (`//`, `/./`, `/../`) is never listed: a
        // server would read it as another path than the rules (and the file transfer check
        // above) see.
        let segments: Vec<&str> = path.split('/').skip(1).collect();
        let inner = &segments[..segments.len().saturating_sub(1)];
        if !path.starts_with('/')
            || segments.iter().any(|s| *s == "." || *s == "..")
            || inner.iter().any(|s| s.is_empty())
        {
            return Verdict::NotListed;
        }
        if self.rules().iter().any(|r| r.allows(method, scheme, host, port, path)) {
            Verdict::Allowed
        } else {
            Verdict::NotListed
        }
    }
}
