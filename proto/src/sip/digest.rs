//! HTTP digest authentication as SIP uses it (RFC 2617, RFC 3261 §22.4): the challenge and
//! credentials parameters, and the response hash. One implementation for the softphone, which
//! answers challenges, and the call manager, which checks the answers.

use std::collections::BTreeMap;

use super::split_list;

/// Lower-case hex MD5 of `s`, the hash of SIP digest authentication (RFC 2617).
pub fn md5_hex(s: &str) -> String {
    use md5::Digest as _;
    crate::text::hex_lower(&md5::Md5::digest(s.as_bytes()))
}

/// The parameters of a `Digest k=v, k="v", …` challenge or credentials (RFC 2617 §3.2.1,
/// §3.2.2), names lower-cased, one pair of quotes taken off each value. `None` when it is not
/// a digest header or a parameter has no `=`.
pub fn params(v: &str) -> Option<BTreeMap<String, String>> {
    let rest = v.trim().strip_prefix("Digest").or_else(|| v.trim().strip_prefix("digest"))?;
    let mut out = BTreeMap::new();
    for part in split_list(rest).ok()? {
        let (k, v) = part.split_once('=')?;
        let v = v.trim();
        let v = v.strip_prefix('"').and_then(|x| x.strip_suffix('"')).unwrap_or(v);
        out.insert(k.trim().to_ascii_lowercase(), v.to_owned());
    }
    Some(out)
}

/// The `response` of RFC 2617 §3.2.2.1 with MD5: without `qop`, or with `qop=auth` and its
/// nonce count and client nonce.
pub fn response(
    (user, realm, password): (&str, &str, &str),
    (method, uri): (&str, &str),
    nonce: &str,
    qop_auth: Option<(&str, &str)>,
) -> String {
    let ha1 = md5_hex(&format!("{user}:{realm}:{password}"));
    let ha2 = md5_hex(&format!("{method}:{uri}"));
    match qop_auth {
        Some((nc, cnonce)) => md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")),
        None => md5_hex(&format!("{ha1}:{nonce}:{ha2}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2617 §3.5's example (HTTP, qop=auth).
    #[test]
    fn rfc_2617_example() {
        let r = response(
            ("Mufasa", "testrealm@host.com", "Circle Of Life"),
            ("GET", "/dir/index.html"),
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            Some(("00000001", "0a4f113b")),
        );
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn params_take_quotes_off_and_refuse_other_schemes() {
        let p = params(r#"Digest realm="ccmsipline", nonce="abc", qop="auth,auth-int""#).unwrap();
        assert_eq!(p["realm"], "ccmsipline");
        assert_eq!(p["qop"], "auth,auth-int");
        assert!(params("Basic xyz").is_none());
    }
}
