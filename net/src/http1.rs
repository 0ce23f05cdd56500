//! One HTTP/1.1 request over an established stream (TCP or TLS): what the client core's driver
//! and Expressway-C's requests inside both send. The caller writes the transcript line and
//! picks the stream; this writes the request and reads the answer, bounded.

use http_body_util::{BodyExt, Full, Limited};

/// Why an exchange failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Http1Error {
    /// The HTTP exchange failed (the peer's HTTP was not HTTP, the connection dropped).
    #[error("{0}")]
    Http(String),
    /// The response body could not be read (too long, cut short).
    #[error("{0}")]
    Body(String),
}

/// An answer: status, headers (names lower-cased, at most `max_headers`) and body.
pub type Answer = (u16, Vec<(String, String)>, Vec<u8>);

/// Sends `method target` with `headers` (in order; `Host` among them) and `body` over `io`,
/// and reads the answer: at most `max_headers` headers and `max_body` bytes of body.
pub async fn exchange<I>(
    io: I,
    (method, target): (&str, &str),
    headers: &[(String, String)],
    body: Vec<u8>,
    (max_headers, max_body): (usize, usize),
) -> Result<Answer, Http1Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
{
    let http = |e: &dyn std::fmt::Display| Http1Error::Http(e.to_string());
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(io).await.map_err(|e| http(&e))?;
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    let mut b = hyper::Request::builder().method(method).uri(target);
    for (k, v) in headers {
        b = b.header(k.as_str(), v.as_str());
    }
    let request = b.body(Full::new(bytes::Bytes::from(body))).map_err(|e| http(&e))?;
    let resp = sender.send_request(request).await.map_err(|e| http(&e))?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .take(max_headers)
        .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let body = Limited::new(resp.into_body(), max_body)
        .collect()
        .await
        .map_err(|e| Http1Error::Body(e.to_string()))?
        .to_bytes()
        .to_vec();
    Ok((status, headers, body))
}
