//! Expressway-C's `X-Auth` tokens (SPEC MRA1; WIRE.md "Expressway MRA"): set by a successful
//! get_edge_config, they authorise later requests through the edge until they expire in
//! simulated time. The table is bounded; when full, the token that expires first goes.
//!
//! A token remembers the Basic credentials it was issued for, in memory only, so that a
//! request that carries only the cookie can still reach UDS, which wants Basic (the product
//! uses its own authorisation towards CUCM there; the lab passes the user's). They are never
//! written to a transcript or a capture in clear text: the zone and the inside hop are TLS.

use std::collections::BTreeMap;
use std::time::Duration;

/// Tokens held at most (the oldest to expire is evicted first).
pub const MAX_TOKENS: usize = 10_000;
/// Default lifetime (`token_lifetime`).
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// What a token stands for.
#[derive(Clone, PartialEq, Eq)]
pub struct Grant {
    /// The enterprise domain it was issued for.
    pub domain: String,
    /// User and password it was issued to.
    pub user: (String, String),
    /// When it stops being valid (time since the scenario epoch).
    pub expires: Duration,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("Grant")
            .field("domain", &self.domain)
            .field("user", &self.user.0)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// The token table.
#[derive(Debug, Default)]
pub struct Tokens {
    by_token: BTreeMap<String, Grant>,
    /// (expiry, token): the eviction order.
    by_expiry: BTreeMap<(Duration, String), ()>,
    max: usize,
}

/// 128 bits as 32 lower-case hex digits (the cookie value).
pub fn token_text(hi: u64, lo: u64) -> String {
    format!("{hi:016x}{lo:016x}")
}

impl Tokens {
    /// A table of at most `max` tokens.
    pub fn new(max: usize) -> Self {
        Self { max: max.max(1), ..Self::default() }
    }

    /// Holds `token` for `grant`, evicting expired tokens and, when still full, the one that
    /// expires first.
    pub fn insert(&mut self, now: Duration, token: String, grant: Grant) {
        self.expire(now);
        while self.by_token.len() >= self.max {
            let Some(((_, t), ())) = self.by_expiry.pop_first() else { break };
            self.by_token.remove(&t);
        }
        if let Some(old) = self.by_token.remove(&token) {
            self.by_expiry.remove(&(old.expires, token.clone()));
        }
        self.by_expiry.insert((grant.expires, token.clone()), ());
        self.by_token.insert(token, grant);
    }

    /// The grant of `token` for `domain`, if it is known and has not expired.
    pub fn get(&self, now: Duration, token: &str, domain: &str) -> Option<&Grant> {
        self.by_token
            .get(token)
            .filter(|g| now < g.expires && g.domain.eq_ignore_ascii_case(domain))
    }

    /// Drops every token expired at `now`.
    pub fn expire(&mut self, now: Duration) {
        while let Some(((exp, _), ())) = self.by_expiry.first_key_value() {
            if *exp > now {
                break;
            }
            let Some(((_, t), ())) = self.by_expiry.pop_first() else { break };
            self.by_token.remove(&t);
        }
    }

    /// Tokens held.
    pub fn len(&self) -> usize {
        self.by_token.len()
    }

    /// No token held.
    pub fn is_empty(&self) -> bool {
        self.by_token.is_empty()
    }
}

/// The `X-Auth` token of a `Cookie` header, if any.
pub fn cookie_token(cookie: &str) -> Option<&str> {
    cookie.split(';').find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k.trim() == uclab_proto::edge::AUTH_COOKIE).then(|| v.trim()).filter(|v| !v.is_empty())
    })
}

/// The `Set-Cookie` value for `token` (RFC 6265 §4.1).
pub fn set_cookie(token: &str, lifetime: Duration) -> String {
    format!(
        "{}={token}; Path=/; Max-Age={}; Secure; HttpOnly",
        uclab_proto::edge::AUTH_COOKIE,
        lifetime.as_secs()
    )
}
