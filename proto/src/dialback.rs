//! Server Dialback keys (XEP-0220, issue 18, SPEC FED1): what an initiating server puts in its
//! `<db:result/>` and what an authoritative server checks a `<db:verify/>` against.
//!
//! The key is the one XEP-0220 §2.1.1 takes from XEP-0185 §2: HMAC-SHA256 keyed with the
//! lowercase hex SHA-256 of the secret, over `receiving ' ' originating ' ' stream-id`, as
//! lowercase hex. A key never goes into a transcript.

use ring::{digest, hmac};

/// The dialback key for a stream from `originating` to `receiving` whose id (the one the
/// receiving server gave in its header) is `stream_id` (XEP-0185 §2).
pub fn key(secret: &str, receiving: &str, originating: &str, stream_id: &str) -> String {
    // XEP-0185 §2: "the Secret SHOULD be hashed via SHA256" and used as its hex form.
    let hashed =
        crate::text::hex_lower(digest::digest(&digest::SHA256, secret.as_bytes()).as_ref());
    let k = hmac::Key::new(hmac::HMAC_SHA256, hashed.as_bytes());
    let tag = hmac::sign(&k, format!("{receiving} {originating} {stream_id}").as_bytes());
    crate::text::hex_lower(tag.as_ref())
}

/// Whether two keys are the same, in a time that depends on their length only (a peer must not
/// learn how much of a forged key was right).
pub fn keys_equal(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cr3tf0rd14lb4ck";

    /// XEP-0220 §2.1.1 (Example 1) and §2.2.2 (Example 13): the keys the XEP prints.
    #[test]
    fn dialback_key_matches_the_xep_0220_examples() {
        assert_eq!(
            key(SECRET, "montague.example", "capulet.example", "D60000229F"),
            "b4835385f37fe2895af6c196b59097b16862406db80559900d96bf6fa7d23df3"
        );
        assert_eq!(
            key("d14lb4ck43v3r", "capulet.example", "montague.example", "417GAF25"),
            "225cc5aa6a071133249d25fef42ae516fc7a86c523aa1c6980a7f73e784c972d"
        );
    }

    /// XEP-0185 §2's example, and the older example with example.net and example.com (the
    /// vector Twisted Words tests against); also checked with Python's hashlib and hmac.
    #[test]
    fn dialback_key_matches_the_xep_0185_examples() {
        assert_eq!(
            key(SECRET, "xmpp.example.com", "example.org", "D60000229F"),
            "37c69b1cf07a3f67c04a5ef5902fa5114f2c76fe4a2686482ba5b89323075643"
        );
        assert_eq!(
            key(SECRET, "example.net", "example.com", "D60000229F"),
            "008c689ff366b50c63d69a3e2d2c0e0e1f8404b0118eb688a0102c87cb691bdc"
        );
    }

    #[test]
    fn dialback_key_binds_every_input_and_compares_exactly() {
        let k = key(SECRET, "a.example", "b.example", "id1");
        assert_eq!(k.len(), 64);
        for other in [
            key("other", "a.example", "b.example", "id1"),
            key(SECRET, "b.example", "a.example", "id1"),
            key(SECRET, "a.example", "b.example", "id2"),
        ] {
            assert!(!keys_equal(&k, &other));
        }
        assert!(keys_equal(&k, &k.clone()));
        assert!(!keys_equal(&k, &k[..63]), "a prefix is not the key");
        assert!(!keys_equal(&k, ""));
        assert!(keys_equal("", ""));
    }
}
