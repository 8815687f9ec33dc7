//! The gateway's TCP connections: at most `gateway.network.maxConnections` open at once, each
//! with a deadline for its first bytes.
//!
//! [`Incoming`] wraps tonic's [`TcpIncoming`] (which sets `TCP_NODELAY` and TCP keep-alive on
//! each accepted socket) and is what the server accepts from:
//! - a connection accepted while [`ConnectionBounds::connections_max`] are open is closed at
//!   once (the client sees its connection end before any answer), and counted;
//! - a failed `accept` (out of file descriptors, say) pauses accepting for
//!   [`ACCEPT_ERROR_PAUSE`] instead of retrying in a tight loop;
//! - every accepted [`Connection`] holds its place until it is dropped, and fails its reads
//!   with `TimedOut` when nothing arrived within [`ConnectionBounds::handshake_timeout`] of
//!   accepting it: a client that connects and stays silent does not keep its place;
//! - a [`Connection`] fails its writes with `TimedOut` when one makes no progress for
//!   [`ConnectionBounds::write_stall_timeout`]: a client that reads nothing fills the socket's
//!   buffers, and then not even the server's GOAWAY could reach it, so the connection would
//!   never end otherwise.
//!
//! Once a connection has spoken, HTTP/2 keep-alive (a PING it must answer) notices a dead peer,
//! or one that reads its socket but ignores the protocol; that is configured on the server,
//! not here.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tokio_stream::Stream;
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};

/// Pause after a failed `accept` before the next.
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// The bounds [`Incoming`] enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionBounds {
    /// Connections open at once (`gateway.network.maxConnections`).
    pub connections_max: usize,
    /// Time a new connection has to send its first bytes (`gateway.network.handshakeTimeout`).
    pub handshake_timeout: Duration,
    /// Time a write may make no progress (`gateway.network.keepAliveTimeout`).
    pub write_stall_timeout: Duration,
}

/// Counts of the gateway's connections, shared with whoever reports them.
#[derive(Debug, Default)]
pub struct ConnectionCounts {
    /// Connections open now.
    pub open: AtomicUsize,
    /// Connections closed at once for being over the bound, since the start.
    pub refused: AtomicU64,
    /// Connections closed for staying silent, since the start.
    pub silent: AtomicU64,
    /// Connections closed because a write made no progress, since the start.
    pub stalled: AtomicU64,
}

/// The accepted connections, bounded. See the module docs.
pub struct Incoming {
    inner: TcpIncoming,
    bounds: ConnectionBounds,
    counts: Arc<ConnectionCounts>,
    /// Set after a failed `accept`: no accepting until it fires.
    paused: Option<Pin<Box<Sleep>>>,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("bounds", &self.bounds)
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
}

impl Incoming {
    /// Accepts from `inner` within `bounds`, counting in `counts`.
    #[must_use]
    pub fn new(
        inner: TcpIncoming,
        bounds: ConnectionBounds,
        counts: Arc<ConnectionCounts>,
    ) -> Self {
        Incoming {
            inner,
            bounds,
            counts,
            paused: None,
        }
    }
}

impl Stream for Incoming {
    type Item = io::Result<Connection>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(pause) = self.paused.as_mut() {
                ready!(pause.as_mut().poll(cx));
                self.paused = None;
            }
            match ready!(Pin::new(&mut self.inner).poll_next(cx)) {
                None => return Poll::Ready(None),
                Some(Err(_)) => {
                    self.paused = Some(Box::pin(tokio::time::sleep(ACCEPT_ERROR_PAUSE)));
                }
                Some(Ok(stream)) => {
                    let counts = &self.counts;
                    if counts.open.load(Ordering::Relaxed) >= self.bounds.connections_max {
                        counts.refused.fetch_add(1, Ordering::Relaxed);
                        drop(stream);
                        continue;
                    }
                    counts.open.fetch_add(1, Ordering::Relaxed);
                    let connection = Connection {
                        stream,
                        counts: Arc::clone(counts),
                        first_bytes_by: Some(Box::pin(tokio::time::sleep(
                            self.bounds.handshake_timeout,
                        ))),
                        write_stall_timeout: self.bounds.write_stall_timeout,
                        write_stalled_until: None,
                    };
                    return Poll::Ready(Some(Ok(connection)));
                }
            }
        }
    }
}

/// One accepted connection: holds its place among the open ones until dropped. See the module
/// docs.
pub struct Connection {
    stream: TcpStream,
    counts: Arc<ConnectionCounts>,
    /// Until the first bytes arrive: when they must have.
    first_bytes_by: Option<Pin<Box<Sleep>>>,
    write_stall_timeout: Duration,
    /// While a write waits for room in the socket: when it gives up.
    write_stalled_until: Option<Pin<Box<Sleep>>>,
}

impl Connection {
    /// A write that could not go on: fails it once it has waited too long since the last
    /// progress.
    fn write_pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let timeout = self.write_stall_timeout;
        let until = self
            .write_stalled_until
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if until.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.write_stalled_until = None;
        self.counts.stalled.fetch_add(1, Ordering::Relaxed);
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client read nothing for gateway.network.keepAliveTimeout",
        )))
    }

    /// What a write returned; progress resets the stall deadline.
    fn write_done<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Pending => self.write_pending(cx),
            ready @ Poll::Ready(_) => {
                self.write_stalled_until = None;
                ready
            }
        }
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("stream", &self.stream)
            .field("silent_so_far", &self.first_bytes_by.is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.counts.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let filled = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > filled {
                    self.first_bytes_by = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => {
                let silent_too_long = self
                    .first_bytes_by
                    .as_mut()
                    .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                if silent_too_long {
                    self.first_bytes_by = None;
                    self.counts.silent.fetch_add(1, Ordering::Relaxed);
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client sent nothing within gateway.network.handshakeTimeout",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.write_done(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.write_done(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_flush(cx);
        self.write_done(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio_stream::StreamExt as _;

    async fn incoming(bounds: ConnectionBounds) -> (Incoming, std::net::SocketAddr) {
        incoming_with(bounds, Arc::default()).await
    }

    async fn incoming_with(
        bounds: ConnectionBounds,
        counts: Arc<ConnectionCounts>,
    ) -> (Incoming, std::net::SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let addr = listener.local_addr().expect("bound");
        (
            Incoming::new(TcpIncoming::from(listener), bounds, counts),
            addr,
        )
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    }

    #[test]
    fn connections_over_the_bound_are_closed_at_once_and_places_free_on_drop() {
        runtime().block_on(async {
            let bounds = ConnectionBounds {
                connections_max: 2,
                handshake_timeout: Duration::from_mins(1),
                write_stall_timeout: Duration::from_mins(1),
            };
            let (mut incoming, addr) = incoming(bounds).await;
            let counts = Arc::clone(&incoming.counts);
            let mut clients = Vec::new();
            for _ in 0..3 {
                clients.push(TcpStream::connect(addr).await.expect("connects"));
            }
            let first = incoming.next().await.expect("open").expect("accepted");
            let second = incoming.next().await.expect("open").expect("accepted");
            assert_eq!(counts.open.load(Ordering::Relaxed), 2);
            // The third is accepted and closed: its client reads the end of the stream.
            let mut byte = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_secs(30), async {
                let accept = incoming.next();
                tokio::pin!(accept);
                tokio::select! {
                    read = clients[2].read(&mut byte) => read,
                    _ = &mut accept => panic!("a connection over the bound was handed out"),
                }
            })
            .await
            .expect("closed in time");
            assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
            assert_eq!(counts.refused.load(Ordering::Relaxed), 1);
            drop(first);
            assert_eq!(counts.open.load(Ordering::Relaxed), 1);
            let _fourth = TcpStream::connect(addr).await.expect("connects");
            let third = incoming.next().await.expect("open").expect("accepted");
            assert_eq!(counts.open.load(Ordering::Relaxed), 2);
            drop((second, third));
            assert_eq!(counts.open.load(Ordering::Relaxed), 0);
        });
    }

    #[test]
    fn a_silent_connection_times_out_and_a_talking_one_does_not() {
        runtime().block_on(async {
            let bounds = ConnectionBounds {
                connections_max: 8,
                handshake_timeout: Duration::from_millis(200),
                write_stall_timeout: Duration::from_mins(1),
            };
            let (mut incoming, addr) = incoming(bounds).await;
            let counts = Arc::clone(&incoming.counts);
            let _silent_client = TcpStream::connect(addr).await.expect("connects");
            let mut silent = incoming.next().await.expect("open").expect("accepted");
            let mut talking_client = TcpStream::connect(addr).await.expect("connects");
            let mut talking = incoming.next().await.expect("open").expect("accepted");
            talking_client.write_all(b"x").await.expect("sent");
            let mut buf = [0u8; 8];
            assert_eq!(talking.read(&mut buf).await.expect("read"), 1);
            let error = silent.read(&mut buf).await.expect_err("timed out");
            assert_eq!(error.kind(), io::ErrorKind::TimedOut);
            assert_eq!(counts.silent.load(Ordering::Relaxed), 1);
            // Past the deadline, the one that spoke still waits for more.
            let more = tokio::time::timeout(Duration::from_millis(400), talking.read(&mut buf));
            assert!(more.await.is_err(), "no deadline once the client spoke");
        });
    }

    #[test]
    fn a_write_to_a_client_that_reads_nothing_times_out() {
        runtime().block_on(async {
            let bounds = ConnectionBounds {
                connections_max: 8,
                handshake_timeout: Duration::from_mins(1),
                write_stall_timeout: Duration::from_millis(300),
            };
            let (mut incoming, addr) = incoming(bounds).await;
            let counts = Arc::clone(&incoming.counts);
            let _deaf_client = TcpStream::connect(addr).await.expect("connects");
            let mut server = incoming.next().await.expect("open").expect("accepted");
            let chunk = vec![0u8; 1 << 20];
            let mut written = 0usize;
            let error = loop {
                match server.write(&chunk).await {
                    Ok(count) => written += count,
                    Err(error) => break error,
                }
                assert!(written < 1 << 30, "the socket's buffers never filled");
            };
            assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
            assert_eq!(counts.stalled.load(Ordering::Relaxed), 1);
            // Writes that progress do not time out, however long they take in all.
            let (mut incoming, addr) = incoming_with(
                ConnectionBounds {
                    write_stall_timeout: Duration::from_secs(5),
                    ..bounds
                },
                Arc::clone(&counts),
            )
            .await;
            let mut reader = TcpStream::connect(addr).await.expect("connects");
            let mut writer = incoming.next().await.expect("open").expect("accepted");
            let drain = tokio::spawn(async move {
                let mut buf = vec![0u8; 64 << 10];
                let mut total = 0usize;
                while total < 64 << 20 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    match reader.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(read) => total += read,
                    }
                }
                total
            });
            for _ in 0..64 {
                writer
                    .write_all(&chunk)
                    .await
                    .expect("a slow reader is served");
            }
            drop(writer);
            assert_eq!(drain.await.expect("the reader"), 64 << 20);
            assert_eq!(counts.stalled.load(Ordering::Relaxed), 1);
        });
    }
}
