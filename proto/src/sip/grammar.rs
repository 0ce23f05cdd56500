//! The grammar of SIP header values (RFC 3261 §25.1): lists, name-addr, parameters, quoted
//! strings, hosts and URIs, Via.

use super::{Rejection, clip, is_token, parse_u32, reject};

/// A `name-addr` or `addr-spec` (§20.10, §25.1): display name, URI, header parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameAddr {
    /// Display name, unquoted.
    pub display: Option<String>,
    /// URI.
    pub uri: String,
    /// Parameters after the URI (`tag`, `expires`, …), names lower case.
    pub params: Vec<(String, Option<String>)>,
}

impl NameAddr {
    /// A parameter's value (`Some(None)` for a flag).
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_deref())
    }
}

/// Splits a header value at top-level commas (not inside quotes or `<>`).
pub fn split_list(v: &str) -> Result<Vec<&str>, Rejection> {
    let (mut out, mut start, mut quoted, mut angle, mut esc) = (Vec::new(), 0, false, false, false);
    for (i, c) in v.char_indices() {
        match c {
            _ if esc => esc = false,
            '\\' if quoted => esc = true,
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                out.push(v[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return Err(reject(400, "unbalanced quotes"));
    }
    if angle {
        return Err(reject(400, "unbalanced <>"));
    }
    out.push(v[start..].trim());
    Ok(out)
}

fn params(s: &str) -> Result<Vec<(String, Option<String>)>, Rejection> {
    let mut out = Vec::new();
    // `;` inside a quoted value (Kamailio's `received="sip:…;transport=tcp"`) is the value's.
    let mut parts = Vec::new();
    let mut rest = s;
    while let Some(i) = find_unquoted(rest, ';') {
        parts.push(&rest[..i]);
        rest = &rest[i + 1..];
    }
    parts.push(rest);
    for p in parts.into_iter().map(str::trim) {
        if p.is_empty() {
            return Err(reject(400, "empty parameter"));
        }
        let (k, v) = match p.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (p, None),
        };
        // gen-value = token / host / quoted-string (§25.1), read liberally: anything without
        // whitespace (RFC 4475 §3.1.1.2 has UTF-8 there; RFC 5118 §4.5 bare IPv6 addresses).
        let value_ok = v.is_none_or(|v| {
            (v.len() >= 2 && v.starts_with('"') && v.ends_with('"'))
                || (!v.is_empty() && !v.contains(|c: char| c.is_whitespace() || c == '"'))
        });
        if !is_token(k) || !value_ok {
            return Err(reject(400, format!("bad parameter {:?}", clip(p))));
        }
        out.push((k.to_ascii_lowercase(), v.map(str::to_owned)));
    }
    Ok(out)
}

/// Parses one name-addr / addr-spec (§25.1). Without `<>`, the URI may not carry `;`, `,` or
/// `?` of its own: they would be the header's (§20, "the URI ... MUST be enclosed in <>").
pub fn parse_name_addr(v: &str) -> Result<NameAddr, Rejection> {
    let v = v.trim();
    if let Some(lt) = find_unquoted(v, '<') {
        let gt = v[lt..].find('>').map(|i| i + lt).ok_or_else(|| reject(400, "missing >"))?;
        let display = v[..lt].trim();
        let display = if display.is_empty() {
            None
        } else if let Some(q) = display.strip_prefix('"') {
            let q = q.strip_suffix('"').filter(|_| display.len() >= 2);
            let q = q.ok_or_else(|| reject(400, "unbalanced quotes in display name"))?;
            Some(unquote(q)?)
        } else if display.split([' ', '\t']).filter(|w| !w.is_empty()).all(is_token) {
            Some(display.to_owned())
        } else {
            return Err(reject(
                400,
                format!("display name must be tokens or quoted: {}", clip(display)),
            ));
        };
        let uri = v[lt + 1..gt].to_owned();
        if uri.trim() != uri {
            return Err(reject(400, "spaces inside <> (RFC 4475 §3.1.2.14)"));
        }
        check_uri(&uri, false)?;
        let rest = v[gt + 1..].trim();
        let params = match rest.strip_prefix(';') {
            Some(p) => params(p)?,
            None if rest.is_empty() => Vec::new(),
            None => return Err(reject(400, "text after the URI")),
        };
        return Ok(NameAddr { display, uri, params });
    }
    if v.contains('"') {
        return Err(reject(400, "quoted display name without <URI>"));
    }
    let (uri, p) = v.split_once(';').unwrap_or((v, ""));
    let uri = uri.trim();
    if uri.contains(['?', ' ', ',']) {
        return Err(reject(
            400,
            format!("URI with `?`, `,` or spaces must be in <>: {}", clip(uri)),
        ));
    }
    check_uri(uri, false)?;
    let params = if p.is_empty() && !v.contains(';') { Vec::new() } else { params(p)? };
    Ok(NameAddr { display: None, uri: uri.to_owned(), params })
}

fn find_unquoted(s: &str, ch: char) -> Option<usize> {
    let (mut quoted, mut esc) = (false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if esc => esc = false,
            '\\' if quoted => esc = true,
            '"' => quoted = !quoted,
            c if c == ch && !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

fn unquote(q: &str) -> Result<String, Rejection> {
    let mut out = String::new();
    let mut it = q.chars();
    while let Some(c) = it.next() {
        match c {
            '\\' => out.push(it.next().ok_or_else(|| reject(400, "bad quoted pair"))?),
            '"' => return Err(reject(400, "unbalanced quotes")),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// A host: hostname, IPv4 or `[IPv6]` (RFC 3261 §25.1, RFC 5118).
pub fn is_host(h: &str) -> bool {
    if let Some(v6) = h.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
        return v6.parse::<std::net::Ipv6Addr>().is_ok() || tolerated_v6(v6);
    }
    if h.parse::<std::net::Ipv4Addr>().is_ok() {
        return true;
    }
    !h.is_empty()
        && h.len() <= 255
        && h.trim_end_matches('.').split('.').all(|l| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// RFC 5118 §4.10: `2001:db8:::192.0.2.1` (three colons, from an old ABNF bug) is tolerated.
fn tolerated_v6(v6: &str) -> bool {
    v6.contains(":::") && v6.replacen(":::", "::", 1).parse::<std::net::Ipv6Addr>().is_ok()
}

/// `host[:port]`.
pub fn is_hostport(hp: &str) -> bool {
    let (host, port) = match hp.rfind(':') {
        Some(i) if !hp[i..].contains(']') => (&hp[..i], Some(&hp[i + 1..])),
        _ => (hp, None),
    };
    is_host(host) && port.is_none_or(|p| parse_u32(p).is_some_and(|p| p <= 65_535))
}

/// A URI's scheme, lower case.
pub fn scheme(uri: &str) -> Option<String> {
    let (s, _) = uri.split_once(':')?;
    let ok = s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    ok.then(|| s.to_ascii_lowercase())
}

/// Checks a URI: any scheme's absolute URI, and for sip/sips the SIP-URI grammar (§19.1.1).
/// In a Request-URI (`request`), `?headers` and `<>` are not allowed.
pub fn check_uri(uri: &str, request: bool) -> Result<(), Rejection> {
    let Some(scheme) = scheme(uri) else {
        return Err(reject(400, format!("bad URI {:?}", clip(uri))));
    };
    if uri.contains(|c: char| c.is_whitespace() || c == '<' || c == '>' || c == '"') {
        return Err(reject(400, format!("bad characters in URI {:?}", clip(uri))));
    }
    if !matches!(scheme.as_str(), "sip" | "sips") {
        return Ok(());
    }
    let rest = &uri[scheme.len() + 1..];
    // The user part may hold `;`, `?` and `:` (RFC 3261 user-unreserved, password; RFC 4475
    // §3.1.1.2, §3.1.1.9): split at the last `@` first, then headers after the host.
    let after_user = match rest.rfind('@') {
        Some(i) => {
            let user = &rest[..i];
            if user.is_empty() || !escapes_ok(user) {
                return Err(reject(400, "bad user part"));
            }
            &rest[i + 1..]
        }
        None => rest,
    };
    let (hostparams, headers) =
        after_user.split_once('?').map_or((after_user, None), |(a, b)| (a, Some(b)));
    if headers.is_some() && request {
        return Err(reject(400, "headers (?) in the Request-URI"));
    }
    let (hostport, params) =
        hostparams.split_once(';').map_or((hostparams, None), |(a, b)| (a, Some(b)));
    if !is_hostport(hostport) {
        return Err(reject(400, format!("bad host {:?}", clip(hostport))));
    }
    if let Some(p) = params {
        for p in p.split(';') {
            let k = p.split('=').next().unwrap_or("");
            if k.is_empty() || !escapes_ok(p) {
                return Err(reject(400, "bad URI parameter"));
            }
        }
    }
    if let Some(h) = headers
        && !escapes_ok(h)
    {
        return Err(reject(400, "bad URI headers"));
    }
    Ok(())
}

/// `%XX` escapes are complete.
fn escapes_ok(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |j: usize| b.get(j).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

/// A Via value's parts (§20.42): transport, sent-by, parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Via {
    /// `UDP`, `TCP`, `TLS`, … upper case.
    pub transport: String,
    /// `host[:port]`.
    pub sent_by: String,
    /// Parameters, names lower case.
    pub params: Vec<(String, Option<String>)>,
}

impl Via {
    /// The branch parameter.
    pub fn branch(&self) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == "branch").and_then(|(_, v)| v.as_deref())
    }
}

/// Parses one Via value (not a comma list), with LWS allowed around `/` (RFC 4475 §3.1.1.1).
pub fn parse_via(v: &str) -> Result<Via, Rejection> {
    let bad = || reject(400, format!("bad Via {:?}", clip(v)));
    let mut it = v.splitn(3, '/');
    let (Some(proto), Some(version), Some(rest)) = (it.next(), it.next(), it.next()) else {
        return Err(bad());
    };
    if !proto.trim().eq_ignore_ascii_case("SIP") || version.trim() != "2.0" {
        return Err(bad());
    }
    let rest = rest.trim_start();
    let split = rest.find([' ', '\t']).ok_or_else(bad)?;
    let transport = rest[..split].to_ascii_uppercase();
    let rest = rest[split..].trim_start();
    let (sent_by, p) = rest.split_once(';').map_or((rest, None), |(a, b)| (a, Some(b)));
    let sent_by = sent_by.trim();
    if !is_token(&transport) || !is_hostport(sent_by) {
        return Err(bad());
    }
    let params = match p {
        Some(p) => params(p)?,
        None => Vec::new(),
    };
    Ok(Via { transport, sent_by: sent_by.to_owned(), params })
}
