//! Sign-in failover (SPEC SD6, SD7): the next SRV target after one that is overloaded or
//! does not answer, or a new discovery when a cached server is gone.

use uclab_net::derive_seed;

use super::Client;
use crate::Time;
use crate::event::ClientEvent;
use crate::io::{Output, Owner};
use crate::signin::{Retry, SignIn};

impl Client {
    /// A sign-in failed with `reason`: another server may do better. Returns whether a new
    /// attempt (or a new discovery) replaced the failed one.
    pub(super) fn fail_over(&mut self, now: Time, retry: Option<Retry>, reason: &str) -> bool {
        let Some(retry) = retry else { return false };
        let Some(mut a) = self.attempt.take() else { return false };
        // A cached server that is gone: forget it and discover again (SPEC SD7).
        if let (Retry::Unreachable, Some((key, cfg))) = (retry, a.from_cache.take()) {
            self.out.push_back(Output::Event(ClientEvent::TargetFailed {
                target: a.target,
                reason: format!("cached server unreachable ({reason}): discovering again"),
            }));
            self.cache.remove(&key);
            let seed = derive_seed(a.creds.seed, "rediscover");
            self.pending = Some(a.creds);
            self.begin(now, &cfg, seed);
            return true;
        }
        let Some(next) = a.alternates.pop_front() else { return false };
        let why = match retry {
            Retry::Overloaded => "HTTP 503 (overloaded)",
            Retry::Unreachable => "no answer",
        };
        self.out.push_back(Output::Event(ClientEvent::TargetFailed {
            target: a.target.clone(),
            reason: format!("{why}: trying {next}"),
        }));
        let (host, port) = host_port(&next);
        let c = &a.creds;
        let s = SignIn::start_by_name(
            now,
            &c.user,
            &c.password,
            a.cas_webex,
            (&host, port),
            self.dns_for(Owner::SignIn),
            derive_seed(c.seed, "next-target"),
        )
        .with_tftp_file_name(self.tftp_file_name());
        self.signin = Some(s);
        a.target = next;
        a.creds.seed = derive_seed(a.creds.seed, "next-target");
        self.attempt = Some(a);
        true
    }
}

/// An SRV target `host:port` (8443 when the port is missing or bad, as UDS and the edge use).
pub(super) fn host_port(target: &str) -> (String, u16) {
    match target.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.parse().unwrap_or(8443)),
        None => (target.to_owned(), 8443),
    }
}
