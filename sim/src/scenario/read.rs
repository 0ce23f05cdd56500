//! Reading a scenario file for `uclab check` (issue 14): every schema error, not just the
//! first; errors that only follow from another dropped; serde's wording made plain.

use std::collections::BTreeSet;

use super::{CheckError, File, Src};

pub(super) fn parse_file(src: &Src<'_>) -> Result<File, CheckError> {
    toml::from_str::<File>(src.text).map_err(|e| {
        let at = e.span().map_or(0, |s| s.start);
        src.err(at, plain_words(e.message().trim()))
    })
}

/// Reads the file and reports every schema error in it (issue 14), not just the first: after
/// each unknown key or badly typed value, that line is blanked out (positions stay) and the
/// text read again. What is left is returned with the errors, so that the names and values
/// can be checked too. A TOML syntax error or a missing key ends the reading.
pub(super) fn parse_file_all(src: &Src<'_>) -> Result<Schema, Vec<CheckError>> {
    let mut text = src.text.as_bytes().to_vec();
    let mut errs = Vec::new();
    let mut broken = Vec::new();
    for _ in 0..200 {
        let Ok(s) = std::str::from_utf8(&text) else { break };
        let e = match toml::from_str::<File>(s) {
            Ok(file) => return Ok(Schema { file, errs, broken }),
            Err(e) => e,
        };
        let at = e.span().map_or(0, |s| s.start);
        let message = e.message().trim().to_owned();
        // A key missing because we blanked its misspelling: the whole entry goes instead
        // (a cascade, not reported).
        if message.starts_with("missing field")
            && let Some(&(t0, t1)) = broken.iter().find(|(a, b)| (*a..=*b).contains(&at))
        {
            if text[t0..t1].iter().all(u8::is_ascii_whitespace) {
                break;
            }
            for b in &mut text[t0..t1] {
                if *b != b'\n' {
                    *b = b' ';
                }
            }
            continue;
        }
        let schema = message.starts_with("unknown field")
            || message.starts_with("invalid type")
            || message.starts_with("invalid value")
            || message.starts_with("data did not match");
        if !schema && !broken.is_empty() {
            // Once a line is blanked, any other kind of error may be of our making (the rest
            // of a multi-line value whose key was misspelt): nothing more is read.
            break;
        }
        errs.push(src.err(at, with_hint(&plain_words(&message))));
        let Some(span) = e.span().filter(|_| schema) else { break };
        // The whole line(s) of the entry; a line already blank means no progress.
        let start = text[..span.start].iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let end = text[span.end.min(text.len())..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(text.len(), |i| span.end + i);
        if text[start..end].iter().all(u8::is_ascii_whitespace) {
            break;
        }
        // Inside a multi-line value (an inline table or array) blanking the line would break
        // the syntax: stop there.
        let line = &text[start..end];
        if !line.contains(&b'=') || line.starts_with(b"[") {
            break;
        }
        // The table the line is in: from its header to the next one.
        let header = |b: &[u8], at: usize| b.get(at).is_some_and(|c| *c == b'[');
        let mut t0 = start;
        while t0 > 0 && !header(&text, t0) {
            t0 = text[..t0 - 1].iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        }
        let mut t1 = end;
        while t1 < text.len() && !header(&text, t1 + 1) {
            t1 = text[t1 + 1..].iter().position(|b| *b == b'\n').map_or(text.len(), |i| t1 + 1 + i);
        }
        broken.push((t0, t1));
        for b in &mut text[start..end] {
            if *b != b'\n' {
                *b = b' ';
            }
        }
    }
    Err(errs)
}

/// A file as read, with its schema errors and the byte ranges of the tables that had one.
pub(super) struct Schema {
    pub(super) file: File,
    pub(super) errs: Vec<CheckError>,
    pub(super) broken: Vec<(usize, usize)>,
}

/// The errors in line order, without those that only follow from another (issue 14): a name
/// the file defines (`name = "x"`) but whose definition failed is not also "unknown" where
/// it is used.
pub(super) fn without_cascades(
    schema: Vec<CheckError>,
    mut errs: Vec<CheckError>,
    src: &Src<'_>,
    broken: &[(usize, usize)],
) -> Vec<CheckError> {
    let names = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.trim().strip_prefix("name"))
            .filter_map(|r| r.trim_start().strip_prefix('='))
            .filter_map(|r| Some(r.trim().strip_prefix('"')?.split('"').next()?.to_owned()))
            .collect()
    };
    // What the file defines, per kind of table: `name` (or a user's `id`) under its header.
    let mut defined: BTreeSet<(String, String)> = BTreeSet::new();
    let mut kind = String::new();
    for line in src.text.lines().map(str::trim) {
        if let Some(h) = line.strip_prefix("[[").and_then(|h| h.split("]]").next()) {
            kind = h.trim().to_owned();
            continue;
        }
        let key = if kind == "user" { "id" } else { "name" };
        if let Some(v) = line
            .strip_prefix(key)
            .and_then(|r| r.trim_start().strip_prefix('='))
            .and_then(|r| r.trim().strip_prefix('"')?.split('"').next())
        {
            defined.insert((kind.clone(), v.to_owned()));
        }
    }
    let is = |kinds: &[&str], n: &str| {
        kinds.iter().any(|k| defined.contains(&((*k).to_owned(), n.to_owned())))
    };
    // Names whose definition had a schema error, and the lines of those tables.
    let broken_names: BTreeSet<String> =
        broken.iter().flat_map(|(a, b)| names(&src.text[*a..*b])).collect();
    let broken_lines: Vec<(usize, usize)> =
        broken.iter().map(|(a, b)| (src.pos(*a).0, src.pos(*b).0)).collect();
    let cascade = |e: &CheckError| {
        let unknown_but_defined = [
            ("unknown zone `", &["zone"][..]),
            ("unknown node `", &["node"][..]),
            ("unknown client `", &["client"][..]),
            ("unknown host `", &["node", "client"][..]),
            ("unknown contact `", &["user"][..]),
        ]
        .iter()
        .filter_map(|(p, kinds)| Some((e.message.strip_prefix(p)?.split('`').next()?, *kinds)))
        .any(|(n, kinds)| is(kinds, n));
        let names_a_broken_one = broken_names.iter().any(|n| e.message.contains(&format!("`{n}`")));
        let missing_in_a_broken_table = (e.message.contains("needs")
            || e.message.contains("has no"))
            && e.file == src.name
            && broken_lines.iter().any(|(a, b)| (*a..=*b).contains(&e.line));
        unknown_but_defined || names_a_broken_one || missing_in_a_broken_table
    };
    if !schema.is_empty() || errs.iter().any(|e| !cascade(e)) {
        errs.retain(|e| !cascade(e));
    }
    errs.extend(schema);
    errs.sort_by(|a, b| (&a.file, a.line, a.col).cmp(&(&b.file, b.line, b.col)));
    errs.dedup_by(|a, b| a.line == b.line && a.col == b.col && a.message == b.message);
    errs
}

/// "unknown field `clinet`, expected one of `at`, `client`, …" with the likely one named
/// first: "unknown field `clinet` (did you mean `client`?), expected one of …".
fn with_hint(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else { return message.to_owned() };
    let Some((word, tail)) = rest.split_once('`') else { return message.to_owned() };
    let candidates: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
    match did_you_mean(word, &candidates) {
        Some(m) => format!("unknown field `{word}` (did you mean `{m}`?){tail}"),
        None => message.to_owned(),
    }
}

/// serde's type names in the words a scenario author uses (issue 14).
fn plain_words(message: &str) -> String {
    let mut m = message.to_owned();
    for (from, to) in [
        ("expected usize", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected u32", "expected a whole number"),
        ("expected u16", "expected a whole number"),
        ("expected u8", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected a boolean", "expected true or false"),
        ("expected a string", "expected text in quotes"),
        ("invalid type: string", "got the text"),
        ("invalid type: integer", "got the number"),
        ("invalid type: boolean", "got"),
        ("expected a sequence", "expected a list [..]"),
    ] {
        m = m.replace(from, to);
    }
    m
}

/// The candidate closest to `word` by edit distance, if it is close (a typo).
pub(super) fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let cur = row[j + 1];
                row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
                prev = cur;
            }
        }
        row[b.len()]
    }
    candidates
        .iter()
        .map(|c| (distance(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min()
        .map(|(_, c)| c)
}
