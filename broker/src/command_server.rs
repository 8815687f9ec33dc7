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
//! A connection keeps at most [`REQUESTS_IN_FLIGHT_MAX`] requests unanswered; beyond that the
//! reader stops reading until answers drain, so a fast client is slowed down, not dropped. A
//! malformed message closes the connection after an `Invalid` answer where one can be made.

use std::cell::{Cell, RefCell};
use std::os::fd::{AsRawFd, FromRawFd};
use std::rc::Rc;

use futures_lite::{AsyncReadExt, AsyncWriteExt, StreamExt};
use glommio::net::{TcpListener, TcpStream};

use crate::client_api::{Request, RequestDecoder, Response, encode_response};
use crate::node::Node;
use crate::notify::Notify;
use crate::requests::Origin;

/// Unanswered requests per connection before the server stops reading from it.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 4096;
/// Open connections before new ones are refused (closed at once).
pub const CONNECTIONS_MAX: usize = 1024;
/// Bytes read from a connection at a time.
const READ_CHUNK_BYTES: usize = 256 << 10;

struct Connection {
    out: RefCell<Vec<u8>>,
    out_ready: Notify,
    in_flight: Cell<usize>,
    /// Wakes the reader when in-flight requests dropped below the bound.
    drained: Notify,
    closed: Cell<bool>,
}

/// Accepts connections on `listener` forever.
pub async fn serve(node: Rc<Node>, listener: TcpListener) {
    let open = Rc::new(Cell::new(0usize));
    let mut incoming = listener.incoming();
    while let Some(stream) = incoming.next().await {
        let Ok(stream) = stream else { continue };
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
        let connection = Rc::new(Connection {
            out: RefCell::default(),
            out_ready: Notify::default(),
            in_flight: Cell::new(0),
            drained: Notify::default(),
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
        while connection.in_flight.get() >= REQUESTS_IN_FLIGHT_MAX {
            connection.drained.notified().await;
        }
        let read = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
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
        let in_flight = connection.in_flight.get() - 1;
        connection.in_flight.set(in_flight);
        if in_flight + 1 == REQUESTS_IN_FLIGHT_MAX {
            connection.drained.notify();
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
        if stream.write_all(&sending).await.is_err() || stream.flush().await.is_err() {
            connection.closed.set(true);
            return;
        }
        sending.clear();
    }
}
