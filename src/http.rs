//! Query parameters and errors of the workers' HTTP endpoints.
//!
//! Every endpoint says which parameters it takes; anything else, a repeated parameter or a value
//! out of range is a 400 that names the parameter and what is allowed. A typo such as
//! `?second=5` is an error, not a silent 30-second default. Requests too broken to reach an
//! endpoint get a body too: see [`ErrorBodies`].

use std::io;
use std::ops::RangeInclusive;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error response: a status and a plain-text message for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn internal(what: &str, err: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{what}: {err}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut message = self.message;
        message.push('\n');
        (self.status, message).into_response()
    }
}

/// A parsed, checked query string.
#[derive(Debug)]
pub struct Params {
    path: &'static str,
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Parses `query` for the endpoint at `path`, which accepts only the names in `allowed`.
    pub fn parse(
        path: &'static str,
        query: Option<&str>,
        allowed: &[&str],
    ) -> Result<Params, ApiError> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        for (i, (name, _)) in pairs.iter().enumerate() {
            if !allowed.contains(&name.as_str()) {
                let allowed = if allowed.is_empty() {
                    "none".to_owned()
                } else {
                    allowed.join(", ")
                };
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {name:?} for {path}; allowed: {allowed}"
                )));
            }
            if pairs[..i].iter().any(|(earlier, _)| earlier == name) {
                return Err(ApiError::bad_request(format!(
                    "query parameter {name:?} given more than once for {path}"
                )));
            }
        }
        Ok(Params { path, pairs })
    }

    /// Whether the query names `name`.
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A whole number in `range`, or `default` when absent. `unit` completes the message, as in
    /// "expected a whole number of seconds from 1 to 300".
    pub fn integer(
        &self,
        name: &str,
        range: RangeInclusive<u64>,
        default: u64,
        unit: &str,
    ) -> Result<u64, ApiError> {
        let Some(raw) = self.get(name) else {
            return Ok(default);
        };
        match raw.parse::<u64>() {
            Ok(value) if range.contains(&value) => Ok(value),
            _ => Err(ApiError::bad_request(format!(
                "invalid value {raw:?} for query parameter {name:?} of {}: expected a whole number{unit} from {} to {}",
                self.path,
                range.start(),
                range.end()
            ))),
        }
    }
}

/// A connection's byte stream that gives hyper's automatic error responses a body.
///
/// When a request cannot be parsed (a malformed request line or header, a URI longer than
/// 65534 bytes, a head larger than the server's limit), hyper answers by itself with a bare
/// `400`, `414` or `431` and `content-length: 0`, then closes the connection; it has no hook to
/// add a body. This wrapper recognises exactly that response as hyper writes it, in one piece
/// and with no body, and writes in its place the same status with a plain-text explanation.
/// Every other byte passes through untouched: the endpoints' own errors always have a body, so
/// they never match.
pub struct ErrorBodies<S> {
    inner: S,
    /// A replacement response still to be written, and how much of it has been.
    pending: Vec<u8>,
    written: usize,
}

impl<S> ErrorBodies<S> {
    pub fn new(inner: S) -> ErrorBodies<S> {
        ErrorBodies {
            inner,
            pending: Vec::new(),
            written: 0,
        }
    }
}

/// The explanation for one of hyper's bodyless parse-error responses, if `head` is one.
fn explain_bodyless_error(head: &[u8]) -> Option<(&'static str, &'static str)> {
    let text = std::str::from_utf8(head).ok()?;
    let status_line = text
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))?;
    let (status, message) = match status_line.get(..4)? {
        "400 " => (
            "400 Bad Request",
            "bad request: the request line or a header could not be parsed; expected a request \
             line such as `GET /metrics HTTP/1.1` followed by `Name: value` header lines",
        ),
        "414 " => (
            "414 URI Too Long",
            "URI too long: the request target is longer than 65534 bytes; this worker's \
             endpoints take at most two short query parameters",
        ),
        "431 " => (
            "431 Request Header Fields Too Large",
            // crate::server::MAX_HEADERS and MAX_REQUEST_HEAD: hyper gives the same 431 for both.
            "request head too large: more than 100 header lines, or a request line and headers \
             longer than this worker's 64 KiB head buffer (a head that arrives at once may pass \
             at up to about twice that); send fewer, shorter headers",
        ),
        _ => return None,
    };
    // Exactly one head and nothing after it, with an empty body: hyper's automatic response.
    let end = text.find("\r\n\r\n")? + 4;
    let bodyless = text[..end]
        .split("\r\n")
        .any(|line| line.eq_ignore_ascii_case("content-length: 0"));
    (end == text.len() && bodyless).then_some((status, message))
}

impl<S: AsyncWrite + Unpin> ErrorBodies<S> {
    /// Writes what is left of a replacement response; ready once it is all written.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ErrorBodies<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ErrorBodies<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        if let Some((status, message)) = explain_bodyless_error(buf) {
            this.pending = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{message}\n",
                message.len() + 1
            )
            .into_bytes();
            this.written = 0;
            // hyper's bytes count as written: it sees its response go out and closes.
            let _ = this.poll_pending(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    // Not vectored, so hyper hands over each response head in one buffer (its "flatten" mode),
    // which is what `explain_bodyless_error` looks at.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_only_hypers_bodyless_parse_errors() {
        let hyper_400 = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert_eq!(
            explain_bodyless_error(hyper_400).unwrap().0,
            "400 Bad Request"
        );
        let hyper_414 = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\r\n";
        assert!(
            explain_bodyless_error(hyper_414)
                .unwrap()
                .1
                .contains("65534")
        );
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 40\r\n\r\n";
        assert!(explain_bodyless_error(ours).is_none(), "has a body");
        let with_body = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nmore";
        assert!(explain_bodyless_error(with_body).is_none());
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert!(explain_bodyless_error(ok).is_none());
    }

    #[test]
    fn rejects_unknown_repeated_and_out_of_range_parameters() {
        let err = Params::parse("/p", Some("second=5"), &["seconds"]).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert!(err.message.contains("\"second\"") && err.message.contains("allowed: seconds"));

        let err = Params::parse("/p", Some("seconds=1&seconds=2"), &["seconds"]).unwrap_err();
        assert!(err.message.contains("more than once"), "{}", err.message);

        let p = Params::parse("/p", Some("seconds=0"), &["seconds"]).unwrap();
        let err = p
            .integer("seconds", 1..=300, 30, " of seconds")
            .unwrap_err();
        assert!(err.message.contains("\"0\"") && err.message.contains("from 1 to 300"));

        let p = Params::parse("/p", Some("seconds=%2012"), &["seconds"]).unwrap();
        assert!(
            p.integer("seconds", 1..=300, 30, "").is_err(),
            "no silent trimming"
        );
    }

    #[test]
    fn defaults_apply_when_absent() {
        let p = Params::parse("/p", None, &["seconds"]).unwrap();
        assert_eq!(p.integer("seconds", 1..=300, 30, "").unwrap(), 30);
        let p = Params::parse("/p", Some("seconds=7"), &["seconds"]).unwrap();
        assert_eq!(p.integer("seconds", 1..=300, 30, "").unwrap(), 7);
    }
}
