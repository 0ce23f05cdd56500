//! XMPP addresses (RFC 7622) as the lab handles them: `[local@]domain[/resource]`, keyed by
//! their lower-cased bare part. One home for the IM&P node, its router and rooms, and the
//! client.

/// A JID's bare part, lower case (the form rosters and sessions are keyed by).
pub fn bare(jid: &str) -> String {
    jid.split('/').next().unwrap_or(jid).to_ascii_lowercase()
}

/// A JID's domain part, lower case (`partner.example.org` of `bob@partner.example.org/pc`).
pub fn domain(jid: &str) -> String {
    let b = jid.split('/').next().unwrap_or(jid);
    b.rsplit_once('@').map_or(b, |(_, d)| d).to_ascii_lowercase()
}

/// A JID's resource, if it has one.
pub fn resource(jid: &str) -> Option<&str> {
    jid.split_once('/').map(|(_, r)| r)
}

/// A bare JID a client may put in a roster: `local@domain`, no resource, printable, short.
pub fn valid_bare(jid: &str) -> bool {
    let Some((local, domain)) = jid.split_once('@') else { return false };
    !local.is_empty()
        && !domain.is_empty()
        && jid.len() <= 3071
        && !domain.contains('@')
        && !jid.contains('/')
        && jid.chars().all(|c| !c.is_control() && !c.is_whitespace() && !"\"&'<>:".contains(c))
}

/// Any address a client may send to: `[local@]domain[/resource]`, each part present when
/// its separator is, printable, within RFC 7622's 3071 bytes.
pub fn valid_jid(jid: &str) -> bool {
    let (bare, res) = match jid.split_once('/') {
        Some((b, r)) => (b, Some(r)),
        None => (jid, None),
    };
    let domain_ok =
        |d: &str| !d.is_empty() && d.chars().all(|c| c.is_alphanumeric() || ".-_[]:".contains(c));
    let bare_ok = match bare.split_once('@') {
        Some(_) => valid_bare(bare),
        None => domain_ok(bare),
    };
    bare_ok
        && jid.len() <= 3071
        && res.is_none_or(|r| !r.is_empty() && r.chars().all(|c| !c.is_control()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_and_validity() {
        assert_eq!(bare("Alice@Example.com/Jabber"), "alice@example.com");
        assert_eq!(domain("Bob@Partner.Example.org/pc"), "partner.example.org");
        assert_eq!(domain("partner.example.org/x@y"), "partner.example.org");
        assert_eq!(domain("example.com"), "example.com");
        assert_eq!(resource("alice@example.com/jabber/x"), Some("jabber/x"));
        assert!(valid_bare("alice@example.com"));
        assert!(!valid_bare("alice@example.com/r"));
        assert!(!valid_bare("a<b@example.com"));
        assert!(valid_jid("example.com") && valid_jid("alice@example.com/r"));
        assert!(!valid_jid("alice@example.com/") && !valid_jid("bad domain"));
    }
}
