//! A minimal HTTP/1.1 server on glommio, for the management API (health, metrics, cluster
//! state). Small on purpose: no TLS, no chunked request bodies, no HTTP/2; every request is read
//! whole into memory within the bounds below, handed to a [`Handler`], and its [`HttpResponse`]
//! written with a `Content-Length`.
//!
//! # Using it
//!
//! Implement [`Handler`] (any `Fn(HttpRequest) -> impl Future<Output = HttpResponse>` closure
//! already does) and run [`serve`] as a task on the executor that owns the listener:
//!
//! ```no_run
//! use std::rc::Rc;
//! use glommio::net::TcpListener;
//! use sluice_broker::http::{Handler, HttpRequest, HttpResponse, serve};
//!
//! # fn main() -> std::io::Result<()> {
//! glommio::LocalExecutorBuilder::default()
//!     .spawn(|| async move {
//!         let listener = TcpListener::bind("127.0.0.1:9600").expect("the port is free");
//!         let handler: Rc<dyn Handler> = Rc::new(|request: HttpRequest| async move {
//!             match (request.method.as_str(), request.path.as_str()) {
//!                 ("GET", "/health") => HttpResponse::text(200, "ok\n"),
//!                 _ => HttpResponse::not_found(),
//!             }
//!         });
//!         serve(listener, handler).await; // Accepts until the task is dropped.
//!     })?
//!     .join()?;
//! # Ok(())
//! # }
//! ```
//!
//! # Behaviour and bounds
//!
//! - At most [`CONNECTIONS_MAX`] connections are served at once; one more is closed as soon as
//!   it is accepted (rather than left in the listen backlog, where a flood of idle connections
//!   would hold every later client for as long as it takes to time them all out). A failed
//!   `accept` (out of file descriptors) pauses accepting briefly.
//! - A request head (request line and headers) is at most [`HEAD_BYTES_MAX`] (else 431) with at
//!   most [`HEADERS_MAX`] headers (431); a body at most [`BODY_BYTES_MAX`], sent with
//!   `Content-Length` (else 413). `Transfer-Encoding` (chunked) request bodies get 501; the
//!   client must send `Content-Length`. `Expect: 100-continue` is answered.
//! - A request must arrive whole within [`READ_TIMEOUT`] of its first byte, or of the previous
//!   response on a kept-alive connection; a response must be written within [`WRITE_TIMEOUT`].
//!   An idle kept-alive connection is closed silently, a half-received request gets 408.
//! - HTTP/1.1 connections are kept alive unless the client sends `Connection: close`;
//!   HTTP/1.0 ones are closed unless it sends `Connection: keep-alive`. Pipelined requests are
//!   answered in order.
//! - A malformed request gets 400 (505 for another HTTP version) with a one-line text body, and
//!   the connection closes. A handler that panics gets its client a 500 and the connection
//!   closes; the server goes on.
//! - Request paths and queries are passed as received (not percent-decoded); header names are
//!   lower-cased. `HEAD` requests reach the handler as `HEAD`, and the body of its response is
//!   not sent.

use std::cell::Cell;
use std::fmt::Write as _;
use std::future::Future;
use std::net::Shutdown;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt as _, AsyncWriteExt as _, FutureExt as _, future};
use glommio::net::{TcpListener, TcpStream};

/// Largest request head (request line and headers, with line ends) in bytes.
pub const HEAD_BYTES_MAX: usize = 16 * 1024;

/// Largest request body in bytes.
pub const BODY_BYTES_MAX: usize = 1024 * 1024;

/// Most headers in a request.
pub const HEADERS_MAX: usize = 100;

/// Most connections [`serve`] serves at once; more are closed at once. With [`HEAD_BYTES_MAX`]
/// and [`BODY_BYTES_MAX`] it bounds the server's buffers to about 65 MiB.
pub const CONNECTIONS_MAX: usize = 64;

/// Time a client has to send a whole request (see the module docs).
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Time a client has to take a whole response.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// After an error response, the server stops sending and reads (and drops) what the client still
/// sends, for at most this long, so that the client sees the response rather than a reset.
const LINGER_TIMEOUT: Duration = Duration::from_secs(1);

/// Most bytes read and dropped while lingering.
const LINGER_BYTES_MAX: usize = 64 * 1024;

/// Most bytes read from the socket at once.
const READ_CHUNK_BYTES: usize = 8 * 1024;

/// Pause after a failed `accept` (out of file descriptors, say) before trying again.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// `Content-Type` of [`HttpResponse::text`].
pub const CONTENT_TYPE_TEXT: &str = "text/plain; charset=utf-8";

/// `Content-Type` of [`HttpResponse::json`].
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// `Content-Type` of [`HttpResponse::html`].
pub const CONTENT_TYPE_HTML: &str = "text/html; charset=utf-8";

/// A request, read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// The method as sent, e.g. `GET`.
    pub method: String,
    /// The path of the request target, before any `?`, not percent-decoded; starts with `/`.
    pub path: String,
    /// The query after `?`, without it; empty if none.
    pub query: String,
    /// The headers in order, names lower-cased, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The body (`Content-Length` bytes; empty without it).
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// The first header named `name` (case-insensitive).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// A response. The server adds `Content-Length` and `Connection`; `headers` are extra ones
/// (names that the server sets itself, or that are not valid, are dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code, 200..=999.
    pub status: u16,
    /// The `Content-Type` header.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
}

impl HttpResponse {
    /// A response with any content type.
    #[must_use]
    pub fn new(status: u16, content_type: &'static str, body: Vec<u8>) -> Self {
        HttpResponse {
            status,
            content_type,
            body,
            headers: Vec::new(),
        }
    }

    /// A UTF-8 plain-text response.
    #[must_use]
    pub fn text(status: u16, body: &str) -> Self {
        HttpResponse::new(status, CONTENT_TYPE_TEXT, body.as_bytes().to_vec())
    }

    /// A JSON response; `body` must already be JSON.
    #[must_use]
    pub fn json(status: u16, body: &str) -> Self {
        HttpResponse::new(status, CONTENT_TYPE_JSON, body.as_bytes().to_vec())
    }

    /// A UTF-8 HTML response.
    #[must_use]
    pub fn html(status: u16, body: &str) -> Self {
        HttpResponse::new(status, CONTENT_TYPE_HTML, body.as_bytes().to_vec())
    }

    /// 404 with a short text body.
    #[must_use]
    pub fn not_found() -> Self {
        HttpResponse::text(404, "not found\n")
    }

    /// 405 with a short text body and the `Allow` header listing `allowed` methods.
    #[must_use]
    pub fn method_not_allowed(allowed: &str) -> Self {
        HttpResponse::text(405, "method not allowed\n").with_header("Allow", allowed)
    }

    /// This response with one more header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// Answers requests. Single-threaded: the server holds it in an `Rc` on one executor.
///
/// Closures `Fn(HttpRequest) -> Fut` where `Fut: Future<Output = HttpResponse> + 'static`
/// implement it.
pub trait Handler {
    /// The response to `request`.
    fn handle(&self, request: HttpRequest) -> Pin<Box<dyn Future<Output = HttpResponse> + '_>>;
}

impl<F, Fut> Handler for F
where
    F: Fn(HttpRequest) -> Fut,
    Fut: Future<Output = HttpResponse> + 'static,
{
    fn handle(&self, request: HttpRequest) -> Pin<Box<dyn Future<Output = HttpResponse> + '_>> {
        Box::pin(self(request))
    }
}

/// The server's limits that tests and callers may tighten; [`Default`] gives the module's
/// constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerOptions {
    /// See [`READ_TIMEOUT`].
    pub read_timeout: Duration,
    /// See [`WRITE_TIMEOUT`].
    pub write_timeout: Duration,
    /// See [`CONNECTIONS_MAX`]; at least 1 is used.
    pub connections_max: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            read_timeout: READ_TIMEOUT,
            write_timeout: WRITE_TIMEOUT,
            connections_max: CONNECTIONS_MAX,
        }
    }
}

/// Accepts connections on `listener` forever (until the task running it is dropped), serving
/// each on its own local task with `handler`, with the default [`ServerOptions`].
pub async fn serve(listener: TcpListener, handler: Rc<dyn Handler>) {
    serve_with(listener, handler, ServerOptions::default()).await;
}

/// [`serve`] with explicit options.
pub async fn serve_with(listener: TcpListener, handler: Rc<dyn Handler>, options: ServerOptions) {
    let connections_max = options.connections_max.max(1);
    let open = Rc::new(Cell::new(0usize));
    loop {
        let Ok(stream) = listener.accept().await else {
            glommio::timer::sleep(ACCEPT_ERROR_BACKOFF).await;
            continue;
        };
        if open.get() >= connections_max {
            drop(stream);
            continue;
        }
        open.set(open.get() + 1);
        let handler = Rc::clone(&handler);
        let open = Rc::clone(&open);
        glommio::spawn_local(async move {
            serve_connection(stream, handler.as_ref(), options).await;
            open.set(open.get() - 1);
        })
        .detach();
    }
}

/// `future`'s output, or `None` if it takes longer than `duration`.
async fn with_timeout<T>(duration: Duration, future: impl Future<Output = T>) -> Option<T> {
    future::or(async { Some(future.await) }, async {
        glommio::timer::sleep(duration).await;
        None
    })
    .await
}

/// A request that cannot be served, with the status to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HttpError {
    status: u16,
    message: &'static str,
}

const fn http_error(status: u16, message: &'static str) -> HttpError {
    HttpError { status, message }
}

enum ReadError {
    /// Answer with this error and close.
    Http(HttpError),
    /// The client went away mid-request, or the socket failed: just close.
    Gone,
}

impl From<HttpError> for ReadError {
    fn from(error: HttpError) -> Self {
        ReadError::Http(error)
    }
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Head {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    content_length: usize,
    http_1_0: bool,
    keep_alive: bool,
    expect_continue: bool,
}

async fn serve_connection(mut stream: TcpStream, handler: &dyn Handler, options: ServerOptions) {
    // Only latency is affected if this fails.
    let _ = stream.set_nodelay(true);
    let mut buffer: Vec<u8> = Vec::with_capacity(READ_CHUNK_BYTES);
    let mut scratch = vec![0u8; READ_CHUNK_BYTES];
    loop {
        let read = with_timeout(
            options.read_timeout,
            read_request(&mut stream, &mut buffer, &mut scratch, options),
        )
        .await;
        let (head, body) = match read {
            Some(Ok(Some(request))) => request,
            Some(Ok(None) | Err(ReadError::Gone)) => return,
            Some(Err(ReadError::Http(error))) => {
                refuse(&mut stream, &error, options).await;
                return;
            }
            None if buffer.is_empty() => return,
            None => {
                let error = http_error(408, "the request did not arrive in time");
                refuse(&mut stream, &error, options).await;
                return;
            }
        };
        let mut keep_alive = head.keep_alive;
        let http_1_0 = head.http_1_0;
        let head_only = head.method == "HEAD";
        let request = HttpRequest {
            method: head.method,
            path: head.path,
            query: head.query,
            headers: head.headers,
            body,
        };
        let response = AssertUnwindSafe(async { handler.handle(request).await })
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                keep_alive = false;
                HttpResponse::text(500, "internal error: the handler failed\n")
            });
        let bytes = encode_response(&response, keep_alive, http_1_0, head_only);
        let written = with_timeout(options.write_timeout, async {
            stream.write_all(&bytes).await?;
            stream.flush().await
        })
        .await;
        if !matches!(written, Some(Ok(()))) {
            return;
        }
        if !keep_alive {
            linger(&mut stream).await;
            return;
        }
    }
}

/// Reads one request from `stream`, starting with what `buffer` holds; leaves in `buffer` what
/// follows it (a pipelined request). `Ok(None)` when the client closed between requests.
async fn read_request(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    scratch: &mut [u8],
    options: ServerOptions,
) -> Result<Option<(Head, Vec<u8>)>, ReadError> {
    let mut scanned = 0;
    let head_end = loop {
        // Empty lines before a request line are ignored (RFC 9112, 2.2).
        let blank = buffer
            .iter()
            .take_while(|byte| matches!(byte, b'\r' | b'\n'))
            .count();
        if blank > 0 {
            buffer.drain(..blank);
            scanned = 0;
        }
        if let Some(end) = find_head_end(buffer, scanned) {
            break end;
        }
        if buffer.len() >= HEAD_BYTES_MAX {
            return Err(http_error(431, "the request head is larger than 16384 bytes").into());
        }
        scanned = buffer.len().saturating_sub(3);
        if read_some(stream, buffer, scratch, HEAD_BYTES_MAX - buffer.len()).await? == 0 {
            return if buffer.is_empty() {
                Ok(None)
            } else {
                Err(ReadError::Gone)
            };
        }
    };
    let head = parse_head(&buffer[..head_end])?;
    let request_end = head_end + head.content_length;
    if head.expect_continue && buffer.len() < request_end {
        let interim = b"HTTP/1.1 100 Continue\r\n\r\n";
        match with_timeout(options.write_timeout, stream.write_all(interim)).await {
            Some(Ok(())) => {}
            _ => return Err(ReadError::Gone),
        }
    }
    while buffer.len() < request_end {
        if read_some(stream, buffer, scratch, request_end - buffer.len()).await? == 0 {
            return Err(ReadError::Gone);
        }
    }
    let body = buffer[head_end..request_end].to_vec();
    buffer.drain(..request_end);
    Ok(Some((head, body)))
}

/// Appends at most `limit` (and [`READ_CHUNK_BYTES`]) bytes from `stream` to `buffer`; 0 at the
/// end of the stream. Reads into `scratch` first, so that a read cancelled by a timeout leaves
/// `buffer` as it was.
async fn read_some(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    scratch: &mut [u8],
    limit: usize,
) -> Result<usize, ReadError> {
    let wanted = limit.clamp(1, scratch.len());
    let count = stream
        .read(&mut scratch[..wanted])
        .await
        .map_err(|_| ReadError::Gone)?;
    buffer.extend_from_slice(&scratch[..count]);
    Ok(count)
}

/// The index just past the empty line ending the head in `buffer`, searching from `from`.
/// Lines end with CRLF or a bare LF.
fn find_head_end(buffer: &[u8], from: usize) -> Option<usize> {
    (from..buffer.len())
        .filter(|&at| buffer[at] == b'\n')
        .find(|&at| {
            let before = &buffer[..at];
            before.ends_with(b"\n") || before.ends_with(b"\n\r")
        })
        .map(|at| at + 1)
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

fn is_token(text: &str) -> bool {
    !text.is_empty() && text.chars().all(is_token_char)
}

fn is_field_value(text: &str) -> bool {
    text.chars().all(|c| c == '\t' || !c.is_control())
}

/// Parses a request head (request line, headers, the empty line).
fn parse_head(head: &[u8]) -> Result<Head, HttpError> {
    const BAD_LINE: HttpError = http_error(400, "malformed request line");
    let text = std::str::from_utf8(head)
        .map_err(|_| http_error(400, "the request head is not valid UTF-8"))?;
    let mut lines = text
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line));
    let request_line = lines.next().ok_or(BAD_LINE)?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(BAD_LINE);
    };
    if !is_token(method) {
        return Err(BAD_LINE);
    }
    if !target.starts_with('/') || !target.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(http_error(
            400,
            "the request target must be a path such as /health",
        ));
    }
    let http_1_0 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ if version.starts_with("HTTP/") => {
            return Err(http_error(505, "only HTTP/1.1 and HTTP/1.0 are supported"));
        }
        _ => return Err(BAD_LINE),
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = Vec::new();
    for line in lines.by_ref() {
        if line.is_empty() {
            break;
        }
        if headers.len() >= HEADERS_MAX {
            return Err(http_error(431, "too many request headers"));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or(http_error(400, "malformed header line"))?;
        // No whitespace before the colon, no obsolete line folding (RFC 9112, 5.1 and 5.2).
        if !is_token(name) {
            return Err(http_error(400, "malformed header name"));
        }
        let value = value.trim_matches([' ', '\t']);
        if !is_field_value(value) {
            return Err(http_error(400, "malformed header value"));
        }
        headers.push((name.to_ascii_lowercase(), value.to_owned()));
    }
    let mut content_length: Option<usize> = None;
    let mut close = false;
    let mut keep_alive_asked = false;
    let mut expect_continue = false;
    for (name, value) in &headers {
        match name.as_str() {
            "content-length" => {
                let length = parse_content_length(value)?;
                if content_length.is_some_and(|earlier| earlier != length) {
                    return Err(http_error(400, "conflicting Content-Length headers"));
                }
                content_length = Some(length);
            }
            "transfer-encoding" => {
                return Err(http_error(
                    501,
                    "Transfer-Encoding (chunked) request bodies are not supported; send the \
                     body with Content-Length",
                ));
            }
            "connection" => {
                for option in value.split(',').map(str::trim) {
                    close |= option.eq_ignore_ascii_case("close");
                    keep_alive_asked |= option.eq_ignore_ascii_case("keep-alive");
                }
            }
            "expect" if value.eq_ignore_ascii_case("100-continue") => expect_continue = true,
            "expect" => return Err(http_error(417, "only Expect: 100-continue is supported")),
            _ => {}
        }
    }
    Ok(Head {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        headers,
        content_length: content_length.unwrap_or(0),
        http_1_0,
        keep_alive: !close && (!http_1_0 || keep_alive_asked),
        expect_continue,
    })
}

fn parse_content_length(value: &str) -> Result<usize, HttpError> {
    const BAD: HttpError = http_error(400, "malformed Content-Length");
    if value.is_empty() || !value.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(BAD);
    }
    // Past the bound, the exact (possibly huge) number does not matter.
    let too_large = http_error(413, "the request body is larger than 1048576 bytes");
    match value.parse::<usize>() {
        Ok(length) if length <= BODY_BYTES_MAX => Ok(length),
        _ => Err(too_large),
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Header names the server writes itself.
const RESERVED_HEADERS: [&str; 4] = [
    "content-length",
    "content-type",
    "connection",
    "transfer-encoding",
];

/// The bytes of `response`. An invalid status becomes 500; 204 and 304 carry no body.
fn encode_response(
    response: &HttpResponse,
    keep_alive: bool,
    http_1_0: bool,
    head_only: bool,
) -> Vec<u8> {
    let valid_status = (200..=999).contains(&response.status);
    let (status, content_type, body): (u16, &str, &[u8]) = if valid_status {
        (response.status, response.content_type, &response.body)
    } else {
        (
            500,
            CONTENT_TYPE_TEXT,
            b"internal error: the handler returned an invalid status\n",
        )
    };
    let content_type = if is_field_value(content_type) && !content_type.is_empty() {
        content_type
    } else {
        "application/octet-stream"
    };
    let bodiless = matches!(status, 204 | 304);
    let mut head = String::with_capacity(128);
    let _ = write!(head, "HTTP/1.1 {status} {}\r\n", reason_phrase(status));
    if !bodiless {
        let _ = write!(
            head,
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            body.len()
        );
    }
    if valid_status {
        for (name, value) in &response.headers {
            let reserved = RESERVED_HEADERS
                .iter()
                .any(|reserved| name.eq_ignore_ascii_case(reserved));
            if !reserved && is_token(name) && is_field_value(value) {
                let _ = write!(head, "{name}: {value}\r\n");
            }
        }
    }
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    } else if http_1_0 {
        head.push_str("Connection: keep-alive\r\n");
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    if !head_only && !bodiless {
        bytes.extend_from_slice(body);
    }
    bytes
}

/// Answers `error` and closes the connection.
async fn refuse(stream: &mut TcpStream, error: &HttpError, options: ServerOptions) {
    let response = HttpResponse::text(error.status, &format!("{}\n", error.message));
    let bytes = encode_response(&response, false, false, false);
    let written = with_timeout(options.write_timeout, async {
        stream.write_all(&bytes).await?;
        stream.flush().await
    })
    .await;
    if matches!(written, Some(Ok(()))) {
        linger(stream).await;
    }
}

/// Stops sending and drops what the client still sends for a while, so that closing does not
/// reset the connection before the client has read the response.
async fn linger(stream: &mut TcpStream) {
    if stream.shutdown(Shutdown::Write).await.is_err() {
        return;
    }
    with_timeout(LINGER_TIMEOUT, async {
        let mut scratch = vec![0u8; READ_CHUNK_BYTES];
        let mut dropped = 0;
        while dropped < LINGER_BYTES_MAX {
            match stream.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(count) => dropped += count,
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// How long a test client waits for the server.
    const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

    // ---- parsing, without sockets ----

    fn head(text: &str) -> Result<Head, HttpError> {
        parse_head(text.as_bytes())
    }

    #[test]
    fn a_request_head_parses() {
        let parsed = head(
            "POST /api/x?a=1&b=2 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nX-Thing:  v w \r\n\r\n",
        )
        .expect("valid");
        assert_eq!(parsed.method, "POST");
        assert_eq!(parsed.path, "/api/x");
        assert_eq!(parsed.query, "a=1&b=2");
        assert_eq!(parsed.content_length, 5);
        assert!(parsed.keep_alive);
        assert_eq!(
            parsed.headers,
            [
                ("host".to_owned(), "h".to_owned()),
                ("content-length".to_owned(), "5".to_owned()),
                ("x-thing".to_owned(), "v w".to_owned())
            ]
        );
        let parsed = head("GET / HTTP/1.0\n\n").expect("bare LF line ends");
        assert!(!parsed.keep_alive);
        let parsed = head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").expect("valid");
        assert!(parsed.keep_alive);
        let parsed = head("GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n").expect("valid");
        assert!(!parsed.keep_alive);
    }

    #[test]
    fn malformed_heads_are_refused_with_the_right_status() {
        for (text, status) in [
            ("GET\r\n\r\n", 400),
            ("GET / HTTP/1.1 extra\r\n\r\n", 400),
            ("GET  / HTTP/1.1\r\n\r\n", 400),
            ("G(T / HTTP/1.1\r\n\r\n", 400),
            ("GET nopath HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTX/1.1\r\n\r\n", 400),
            ("GET / HTTP/2.0\r\n\r\n", 505),
            ("GET / HTTP/1.1\r\nNo colon\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nName : v\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nA: b\x01c\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
            (
                "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                400,
            ),
            ("GET / HTTP/1.1\r\nContent-Length: 1048577\r\n\r\n", 413),
            (
                "GET / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                413,
            ),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
            ("POST / HTTP/1.1\r\nExpect: teapot\r\n\r\n", 417),
        ] {
            assert_eq!(
                head(text).map_err(|error| error.status),
                Err(status),
                "{text:?}"
            );
        }
        assert_eq!(
            parse_head(b"GET /\xff HTTP/1.1\r\n\r\n").map_err(|e| e.status),
            Err(400)
        );
        let mut many = String::new();
        for i in 0..=HEADERS_MAX {
            let _ = write!(many, "h{i}: v\r\n");
        }
        assert_eq!(
            head(&format!("GET / HTTP/1.1\r\n{many}\r\n")).map_err(|e| e.status),
            Err(431)
        );
    }

    #[test]
    fn the_head_end_is_found_with_either_line_end() {
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\nbody", 0), Some(18));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\n\nbody", 0), Some(16));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nA: b\r\n", 0), None);
        assert_eq!(
            find_head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\n", 20),
            Some(24)
        );
    }

    #[test]
    fn responses_are_encoded_with_length_and_connection() {
        let response = HttpResponse::text(200, "hi").with_header("X-A", "1");
        assert_eq!(
            String::from_utf8(encode_response(&response, true, false, false)).expect("ascii"),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 2\r\n\
             X-A: 1\r\n\r\nhi"
        );
        let response = HttpResponse::json(404, "{}")
            .with_header("Content-Length", "99")
            .with_header("Bad\r\nName", "x")
            .with_header("X-B", "evil\r\nInjected: 1");
        assert_eq!(
            String::from_utf8(encode_response(&response, false, false, true)).expect("ascii"),
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\
             Connection: close\r\n\r\n"
        );
        let response = HttpResponse::text(204, "ignored");
        assert_eq!(
            String::from_utf8(encode_response(&response, true, true, false)).expect("ascii"),
            "HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n"
        );
        let response = HttpResponse::text(42, "bad");
        assert!(
            String::from_utf8(encode_response(&response, true, false, false))
                .expect("ascii")
                .starts_with("HTTP/1.1 500 Internal Server Error\r\n")
        );
    }

    // ---- over sockets ----

    /// A server on its own executor thread, stopped when dropped.
    struct TestServer {
        addr: SocketAddr,
        stop: Arc<AtomicBool>,
        thread: Option<glommio::ExecutorJoinHandle<()>>,
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Release);
            if let Some(thread) = self.thread.take() {
                thread.join().expect("the server thread ends cleanly");
            }
        }
    }

    fn start(options: ServerOptions) -> TestServer {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let (addr_sender, addr_receiver) = std::sync::mpsc::channel();
        let thread = glommio::LocalExecutorBuilder::default()
            .io_memory(1 << 20)
            .name("http-test")
            .spawn(move || async move {
                let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
                addr_sender
                    .send(listener.local_addr().expect("bound"))
                    .expect("the test waits");
                let handler: Rc<dyn Handler> = Rc::new(test_handler);
                let stopper = async {
                    while !stop_flag.load(Ordering::Acquire) {
                        glommio::timer::sleep(Duration::from_millis(20)).await;
                    }
                };
                future::or(serve_with(listener, handler, options), stopper).await;
            })
            .expect("spawn the executor");
        let addr = addr_receiver
            .recv_timeout(CLIENT_TIMEOUT)
            .expect("the server binds");
        TestServer {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    async fn test_handler(request: HttpRequest) -> HttpResponse {
        match (request.method.as_str(), request.path.as_str()) {
            ("GET" | "HEAD", "/hello") => HttpResponse::text(200, "hello\n"),
            ("GET", "/query") => HttpResponse::text(200, &request.query),
            ("GET", "/json") => HttpResponse::json(200, r#"{"ok":true}"#),
            ("POST", "/echo") => {
                let echo = request.header("x-echo").map(str::to_owned);
                let response = HttpResponse::new(200, "application/octet-stream", request.body);
                match echo {
                    Some(value) => response.with_header("X-Echo", value),
                    None => response,
                }
            }
            ("GET", "/slow") => {
                glommio::timer::sleep(Duration::from_millis(50)).await;
                HttpResponse::text(200, "slow\n")
            }
            ("GET", "/panic") => panic!("a handler bug"),
            _ => HttpResponse::not_found(),
        }
    }

    fn connect(server: &TestServer) -> std::net::TcpStream {
        let stream = std::net::TcpStream::connect(server.addr).expect("connect");
        stream
            .set_read_timeout(Some(CLIENT_TIMEOUT))
            .expect("timeout");
        stream
            .set_write_timeout(Some(CLIENT_TIMEOUT))
            .expect("timeout");
        stream
    }

    /// A response as the test client reads it.
    #[derive(Debug)]
    struct Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(header, _)| header.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.as_str())
        }

        fn text(&self) -> &str {
            std::str::from_utf8(&self.body).expect("a text body")
        }
    }

    /// Reads one response (with `Content-Length`) from `stream`, keeping what follows in
    /// `pending`.
    fn read_reply(stream: &mut std::net::TcpStream, pending: &mut Vec<u8>) -> Reply {
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(end) = find_head_end(pending, 0) {
                break end;
            }
            let count = stream.read(&mut chunk).expect("the response arrives");
            assert!(count > 0, "the server closed before responding");
            pending.extend_from_slice(&chunk[..count]);
        };
        let head = std::str::from_utf8(&pending[..head_end])
            .expect("ASCII head")
            .to_owned();
        let mut lines = head.lines();
        let status_line = lines.next().expect("a status line");
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .expect("a status code");
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(": "))
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, value)| value.parse().expect("a length"));
        while pending.len() < head_end + length {
            let count = stream.read(&mut chunk).expect("the body arrives");
            assert!(count > 0, "the server closed mid-body");
            pending.extend_from_slice(&chunk[..count]);
        }
        let body = pending[head_end..head_end + length].to_vec();
        pending.drain(..head_end + length);
        Reply {
            status,
            headers,
            body,
        }
    }

    fn exchange(server: &TestServer, raw: &[u8]) -> (Reply, std::net::TcpStream) {
        let mut stream = connect(server);
        stream.write_all(raw).expect("send");
        let mut pending = Vec::new();
        let reply = read_reply(&mut stream, &mut pending);
        assert!(pending.is_empty(), "nothing after the response");
        (reply, stream)
    }

    /// Asserts the server closes `stream` (after anything already sent).
    fn assert_closed(stream: &mut std::net::TcpStream) {
        let mut rest = Vec::new();
        stream
            .read_to_end(&mut rest)
            .expect("the server closes the connection");
        assert!(rest.is_empty(), "unexpected bytes: {rest:?}");
    }

    #[test]
    fn get_and_post_reach_the_handler() {
        let server = start(ServerOptions::default());
        let (reply, _) = exchange(&server, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), "hello\n");
        assert_eq!(reply.header("content-type"), Some(CONTENT_TYPE_TEXT));
        assert_eq!(reply.header("connection"), None, "kept alive");
        let (reply, _) = exchange(&server, b"GET /query?a=1&b=%20 HTTP/1.1\r\n\r\n");
        assert_eq!(reply.text(), "a=1&b=%20");
        let (reply, _) = exchange(&server, b"GET /json HTTP/1.1\r\n\r\n");
        assert_eq!(reply.header("content-type"), Some(CONTENT_TYPE_JSON));
        assert_eq!(reply.text(), r#"{"ok":true}"#);
        let (reply, _) = exchange(
            &server,
            b"POST /echo HTTP/1.1\r\nContent-Length: 11\r\nX-Echo: yes\r\n\r\nhello world",
        );
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, b"hello world");
        assert_eq!(reply.header("x-echo"), Some("yes"));
        let (reply, _) = exchange(&server, b"GET /nothing HTTP/1.1\r\n\r\n");
        assert_eq!(reply.status, 404);
        assert_eq!(reply.text(), "not found\n");
    }

    #[test]
    fn head_requests_get_no_body() {
        let server = start(ServerOptions::default());
        let mut stream = connect(&server);
        stream
            .write_all(b"HEAD /hello HTTP/1.1\r\n\r\nGET /hello HTTP/1.1\r\n\r\n")
            .expect("send");
        let mut pending = Vec::new();
        // The HEAD reply announces 6 bytes but sends none: read its head only.
        let mut chunk = [0u8; 1024];
        let head_end = loop {
            if let Some(end) = find_head_end(&pending, 0) {
                break end;
            }
            let count = stream.read(&mut chunk).expect("read");
            assert!(count > 0, "the server closed before responding");
            pending.extend_from_slice(&chunk[..count]);
        };
        let head = String::from_utf8(pending[..head_end].to_vec()).expect("ascii");
        assert!(head.contains("Content-Length: 6\r\n"), "{head}");
        pending.drain(..head_end);
        let reply = read_reply(&mut stream, &mut pending);
        assert_eq!(reply.text(), "hello\n");
    }

    #[test]
    fn keep_alive_serves_several_requests_on_one_connection() {
        let server = start(ServerOptions::default());
        let mut stream = connect(&server);
        let mut pending = Vec::new();
        stream
            .write_all(b"GET /hello HTTP/1.1\r\n\r\n")
            .expect("send");
        assert_eq!(read_reply(&mut stream, &mut pending).text(), "hello\n");
        stream
            .write_all(b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
            .expect("send");
        assert_eq!(read_reply(&mut stream, &mut pending).body, b"abc");
        // Pipelined: two requests in one write, answered in order.
        stream
            .write_all(
                b"GET /slow HTTP/1.1\r\n\r\nPOST /echo HTTP/1.1\r\nContent-Length: 2\r\n\r\nxyGET /nothing HTTP/1.1\r\nConnection: close\r\n\r\n",
            )
            .expect("send");
        assert_eq!(read_reply(&mut stream, &mut pending).text(), "slow\n");
        assert_eq!(read_reply(&mut stream, &mut pending).body, b"xy");
        let last = read_reply(&mut stream, &mut pending);
        assert_eq!(last.status, 404);
        assert_eq!(last.header("connection"), Some("close"));
        assert!(pending.is_empty());
        assert_closed(&mut stream);
    }

    #[test]
    fn connection_close_and_http_1_0_close_after_the_response() {
        let server = start(ServerOptions::default());
        let (reply, mut stream) =
            exchange(&server, b"GET /hello HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("connection"), Some("close"));
        assert_closed(&mut stream);
        let (reply, mut stream) = exchange(&server, b"GET /hello HTTP/1.0\r\n\r\n");
        assert_eq!(reply.text(), "hello\n");
        assert_closed(&mut stream);
        // HTTP/1.0 with keep-alive stays open.
        let (reply, mut stream) = exchange(
            &server,
            b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        );
        assert_eq!(reply.header("connection"), Some("keep-alive"));
        stream
            .write_all(b"GET /hello HTTP/1.0\r\n\r\n")
            .expect("send");
        let reply = read_reply(&mut stream, &mut Vec::new());
        assert_eq!(reply.text(), "hello\n");
    }

    #[test]
    fn an_oversize_head_gets_431_and_the_connection_closes() {
        let server = start(ServerOptions::default());
        let mut raw = b"GET /hello HTTP/1.1\r\nX-Big: ".to_vec();
        raw.resize(HEAD_BYTES_MAX + 1024, b'a');
        raw.extend_from_slice(b"\r\n\r\n");
        let (reply, mut stream) = exchange(&server, &raw);
        assert_eq!(reply.status, 431);
        assert!(reply.text().contains("16384"), "{}", reply.text());
        assert_eq!(reply.header("connection"), Some("close"));
        assert_closed(&mut stream);
    }

    #[test]
    fn a_bad_request_line_gets_400_and_the_connection_closes() {
        let server = start(ServerOptions::default());
        for raw in [
            &b"HELLO\r\n\r\n"[..],
            b"GET / HTTP/1.1 x\r\n\r\n",
            b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
            b"\x00\x01\x02\r\n\r\n",
        ] {
            let (reply, mut stream) = exchange(&server, raw);
            assert_eq!(reply.status, 400, "{raw:?}");
            assert!(!reply.body.is_empty());
            assert_closed(&mut stream);
        }
        let (reply, _) = exchange(&server, b"GET / HTTP/2.0\r\n\r\n");
        assert_eq!(reply.status, 505);
    }

    #[test]
    fn oversize_and_chunked_bodies_are_refused() {
        let server = start(ServerOptions::default());
        let (reply, mut stream) = exchange(
            &server,
            b"POST /echo HTTP/1.1\r\nContent-Length: 2000000\r\n\r\nabc",
        );
        assert_eq!(reply.status, 413);
        assert_closed(&mut stream);
        let (reply, mut stream) = exchange(
            &server,
            b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        );
        assert_eq!(reply.status, 501);
        assert!(reply.text().contains("Content-Length"), "{}", reply.text());
        assert_closed(&mut stream);
    }

    #[test]
    fn a_large_body_within_the_bound_arrives_whole() {
        let server = start(ServerOptions::default());
        let body: Vec<u8> = (0..BODY_BYTES_MAX)
            .map(|i| u8::try_from(i % 251).expect("below 251"))
            .collect();
        let mut stream = connect(&server);
        stream
            .write_all(
                format!(
                    "POST /echo HTTP/1.1\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            )
            .expect("send the head");
        let mut pending = Vec::new();
        let interim = read_reply(&mut stream, &mut pending);
        assert_eq!(interim.status, 100);
        stream.write_all(&body).expect("send the body");
        let reply = read_reply(&mut stream, &mut pending);
        assert_eq!(reply.status, 200);
        assert!(reply.body == body, "the body comes back unchanged");
    }

    #[test]
    fn a_panicking_handler_gets_500_and_the_server_goes_on() {
        let server = start(ServerOptions::default());
        let (reply, mut stream) = exchange(&server, b"GET /panic HTTP/1.1\r\n\r\n");
        assert_eq!(reply.status, 500);
        assert_closed(&mut stream);
        let (reply, _) = exchange(&server, b"GET /hello HTTP/1.1\r\n\r\n");
        assert_eq!(reply.status, 200);
    }

    #[test]
    fn slow_and_idle_clients_are_timed_out() {
        let server = start(ServerOptions {
            read_timeout: Duration::from_millis(200),
            ..ServerOptions::default()
        });
        // Half a request: 408, then close.
        let mut stream = connect(&server);
        stream.write_all(b"GET /hello HTTP/1.1\r\n").expect("send");
        let reply = read_reply(&mut stream, &mut Vec::new());
        assert_eq!(reply.status, 408);
        assert_closed(&mut stream);
        // Idle after a response: closed silently.
        let (reply, mut stream) = exchange(&server, b"GET /hello HTTP/1.1\r\n\r\n");
        assert_eq!(reply.status, 200);
        assert_closed(&mut stream);
    }

    #[test]
    fn connections_beyond_the_bound_are_closed_at_once() {
        let server = start(ServerOptions {
            connections_max: 1,
            ..ServerOptions::default()
        });
        let (reply, first) = exchange(&server, b"GET /hello HTTP/1.1\r\n\r\n");
        assert_eq!(reply.status, 200);
        // The first connection is kept alive and holds the only slot.
        let mut second = connect(&server);
        let mut byte = [0u8; 1];
        let read = second.read(&mut byte);
        assert!(
            matches!(&read, Ok(0))
                || matches!(&read, Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset),
            "the connection over the bound is closed: {read:?}"
        );
        drop(first);
        // Its slot frees once the server noticed the close: a later connection is served.
        let deadline = std::time::Instant::now() + CLIENT_TIMEOUT;
        loop {
            let mut third = connect(&server);
            let _ = third.write_all(b"GET /hello HTTP/1.1\r\n\r\n");
            let mut pending = Vec::new();
            let mut chunk = [0u8; 256];
            match third.read(&mut chunk) {
                Ok(read) if read > 0 => {
                    pending.extend_from_slice(&chunk[..read]);
                    let reply = read_reply(&mut third, &mut pending);
                    assert_eq!(reply.text(), "hello\n");
                    return;
                }
                _ => assert!(
                    std::time::Instant::now() < deadline,
                    "the slot did not free after the first connection closed"
                ),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
