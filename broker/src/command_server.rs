//! The raw-append API: the log benchmark's appends ([`crate::client_api`] `Append` requests)
//! over TCP, on `network.commandApi` when `network.commandApi.enabled` is set (off by default,
//! loopback-only unless a host is configured). It carries no engine commands: clients reach the
//! engine through the gRPC gateway, gateways reach leaders over the cluster's QUIC transport
//! ([`crate::link`]); a `Command` or `Poll` here is answered `Invalid`.
//!
//! One reader and one writer task per connection. The reader decodes requests and hands each
//! append to the local replica of its partition ([`crate::requests::serve`]); the replica
//! answers through a responder that encodes the response into the connection's output buffer
//! and wakes the writer. Responses go out in commit order, not request order: clients match
//! them by `request_id`.
//!
//! # Bounds
//!
//! - At most [`CONNECTIONS_MAX`] connections; one more is closed as soon as it is accepted. A
//!   failed `accept` (out of file descriptors) pauses accepting for [`ACCEPT_ERROR_PAUSE`].
//! - A connection keeps at most [`REQUESTS_IN_FLIGHT_MAX`] requests unanswered and at most
//!   [`OUT_BYTES_MAX`] bytes of answers unsent; beyond either the reader stops reading until
//!   answers drain, so a fast client is slowed down, not dropped.
//! - A client that does not read its answers is disconnected: a write that makes no progress for
//!   [`WRITE_STALL_TIMEOUT`] closes the connection, and what was queued for it is dropped.
//! - A connection with nothing unanswered that sends nothing for [`IDLE_TIMEOUT`] is closed.
//! - A malformed message closes the connection after an `Invalid` answer where one can be made.

use std::cell::{Cell, RefCell};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd};
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt, StreamExt};
use glommio::net::{TcpListener, TcpStream};

use crate::client_api::{Request, RequestDecoder, Response, TEXT_BYTES_MAX, encode_response};
use crate::node::Node;
use crate::notify::Notify;
use crate::requests::Origin;

/// Unanswered requests per connection before the server stops reading from it.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 4096;
/// Bytes of answers queued for a connection before the server stops reading from it. Answers
/// to requests already in flight may still be added: a connection holds at most this plus
/// [`REQUESTS_IN_FLIGHT_MAX`] answers (each at most [`ANSWER_BYTES_MAX`]) queued, and as much
/// again being written.
pub const OUT_BYTES_MAX: usize = 1 << 20;
/// The largest answer this API gives (`Invalid` or `Unavailable` with the longest text).
pub const ANSWER_BYTES_MAX: usize = 64 + TEXT_BYTES_MAX;
const _: () = assert!(OUT_BYTES_MAX + REQUESTS_IN_FLIGHT_MAX * ANSWER_BYTES_MAX <= 8 << 20);
/// Open connections before new ones are refused (closed at once).
pub const CONNECTIONS_MAX: usize = 1024;
/// A write to a client that makes no progress for this long closes its connection.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with nothing unanswered that sends nothing for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_mins(1);
/// Pause after a failed `accept` before the next.
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// Bytes read from a connection at a time.
const READ_CHUNK_BYTES: usize = 256 << 10;

struct Connection {
    out: RefCell<Vec<u8>>,
    out_ready: Notify,
    in_flight: Cell<usize>,
    /// Wakes the reader when there may be room again: fewer requests in flight, answers taken
    /// by the writer, or the connection closed.
    room: Notify,
    closed: Cell<bool>,
}

impl Connection {
    fn has_room(&self) -> bool {
        self.in_flight.get() < REQUESTS_IN_FLIGHT_MAX && self.out.borrow().len() < OUT_BYTES_MAX
    }

    /// Whether the client waits for something from the server.
    fn busy(&self) -> bool {
        self.in_flight.get() > 0 || !self.out.borrow().is_empty()
    }

    fn close(&self) {
        self.closed.set(true);
        self.out.borrow_mut().clear();
        self.out_ready.notify();
        self.room.notify();
    }
}

/// Accepts connections on `listener` forever.
pub async fn serve(node: Rc<Node>, listener: TcpListener) {
    let open = Rc::new(Cell::new(0usize));
    let mut incoming = listener.incoming();
    while let Some(stream) = incoming.next().await {
        let Ok(stream) = stream else {
            glommio::timer::sleep(ACCEPT_ERROR_PAUSE).await;
            continue;
        };
        if open.get() >= CONNECTIONS_MAX {
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        // The writer needs its own handle on the socket: glommio streams do not split.
        // SAFETY: `dup` returns a new descriptor owned by nobody else, or -1 (checked).
        let fd = unsafe { libc::dup(stream.as_raw_fd()) };
        if fd < 0 {
            continue;
        }
        // SAFETY: `fd` is a fresh, valid, connected TCP socket descriptor that this stream
        // now owns and closes.
        let writer = unsafe { TcpStream::from_raw_fd(fd) };
        if stream.set_read_timeout(Some(IDLE_TIMEOUT)).is_err()
            || writer.set_write_timeout(Some(WRITE_STALL_TIMEOUT)).is_err()
        {
            continue;
        }
        let connection = Rc::new(Connection {
            out: RefCell::default(),
            out_ready: Notify::default(),
            in_flight: Cell::new(0),
            room: Notify::default(),
            closed: Cell::new(false),
        });
        open.set(open.get() + 1);
        glommio::spawn_local(write_loop(Rc::clone(&connection), writer)).detach();
        let node = Rc::clone(&node);
        let open = Rc::clone(&open);
        glommio::spawn_local(async move {
            read_loop(&node, &connection, stream).await;
            connection.closed.set(true);
            connection.out_ready.notify();
            open.set(open.get() - 1);
        })
        .detach();
    }
}

async fn read_loop(node: &Rc<Node>, connection: &Rc<Connection>, mut stream: TcpStream) {
    let mut decoder = RequestDecoder::new();
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    loop {
        while !connection.closed.get() && !connection.has_room() {
            connection.room.notified().await;
        }
        if connection.closed.get() {
            return;
        }
        let read = match stream.read(&mut buf).await {
            Ok(0) => return,
            Ok(read) => read,
            // Quiet while its answers are pending: the client is waiting, not idle.
            Err(error) if error.kind() == std::io::ErrorKind::TimedOut && connection.busy() => {
                continue;
            }
            Err(_) => return,
        };
        decoder.push(&buf[..read]);
        loop {
            match decoder.next_request() {
                Ok(Some(request)) => handle(node, connection, request),
                Ok(None) => break,
                Err(error) => {
                    let response = Response::Invalid {
                        request_id: 0,
                        message: format!("malformed request, closing the connection: {error}"),
                    };
                    encode_response(&response, &mut connection.out.borrow_mut());
                    connection.out_ready.notify();
                    return;
                }
            }
        }
    }
}

fn handle(node: &Rc<Node>, connection: &Rc<Connection>, request: Request) {
    connection.in_flight.set(connection.in_flight.get() + 1);
    let connection = Rc::clone(connection);
    crate::requests::serve(node, request, Origin::RawAppends, move |response| {
        connection.in_flight.set(connection.in_flight.get() - 1);
        connection.room.notify();
        if connection.closed.get() {
            // Nobody will read it.
            return;
        }
        encode_response(&response, &mut connection.out.borrow_mut());
        connection.out_ready.notify();
    });
}

async fn write_loop(connection: Rc<Connection>, mut stream: TcpStream) {
    let mut sending = Vec::new();
    loop {
        std::mem::swap(&mut sending, &mut *connection.out.borrow_mut());
        if sending.is_empty() {
            if connection.closed.get() {
                return;
            }
            connection.out_ready.notified().await;
            continue;
        }
        connection.room.notify();
        // A client that reads nothing stalls the write until WRITE_STALL_TIMEOUT.
        if stream.write_all(&sending).await.is_err() || stream.flush().await.is_err() {
            connection.close();
            // Ends the reader's read too: both handles share the socket.
            let _ = stream.shutdown(Shutdown::Both).await;
            return;
        }
        sending.clear();
        if sending.capacity() > OUT_BYTES_MAX {
            sending = Vec::new();
        }
    }
}
