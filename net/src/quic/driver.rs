//! The driver task: the only code that touches the UDP socket.
//!
//! One loop on the transport's glommio executor:
//!
//! ```text
//! loop {
//!     send what the connections want sent (a bounded batch)   poll_transmit → send_to
//!     if the transport is closing and nothing is left: exit (the socket is released)
//!     wait for the first of: a datagram, a wake-up from send/recv/close/set_blocked,
//!                            the earliest connection timer
//!     feed the datagram and any more already queued at the socket    endpoint.handle
//!     run due timers, then process events, streams and lost connections
//! }
//! ```
//!
//! The receive future lives across iterations rather than being raced and dropped, so a
//! datagram that completes while the loop wakes for another reason is never lost.

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Instant;

use glommio::net::UdpSocket;
use glommio::timer::Timer;

use super::Shared;
use super::state::Outgoing;

/// Receive buffer size: the largest UDP payload, so no datagram is ever truncated.
pub(super) const RECV_BUFFER_BYTES: usize = 1 << 16;

/// Most datagrams sent in one pass before the loop checks the socket for incoming ones; keeps
/// acknowledgements flowing while a large transfer is being sent.
const TRANSMIT_BATCH_DATAGRAMS_MAX: usize = 64;

/// Most datagrams fed to the endpoint in one pass before the connections are processed.
const RECV_BATCH_DATAGRAMS_MAX: usize = 64;

/// A receive in progress; it hands its buffer back with the result.
type RecvFuture = Pin<Box<dyn Future<Output = Received>>>;
type Received = (Vec<u8>, glommio::Result<(usize, SocketAddr), ()>);

fn recv_future(socket: &Rc<UdpSocket>, mut buf: Vec<u8>) -> RecvFuture {
    let socket = Rc::clone(socket);
    Box::pin(async move {
        let result = socket.recv_from(&mut buf).await;
        (buf, result)
    })
}

pub(super) struct Driver {
    shared: Rc<Shared>,
    socket: Rc<UdpSocket>,
    recv: RecvFuture,
    /// Where connections write the datagram being sent.
    transmit_buf: Vec<u8>,
}

impl Driver {
    pub(super) fn new(shared: Rc<Shared>, socket: UdpSocket) -> Driver {
        let socket = Rc::new(socket);
        Driver {
            recv: recv_future(&socket, vec![0; RECV_BUFFER_BYTES]),
            shared,
            socket,
            transmit_buf: Vec::with_capacity(RECV_BUFFER_BYTES),
        }
    }

    pub(super) async fn run(mut self) {
        loop {
            let more_to_send = self.transmit().await;
            if self.shared.state.borrow().is_closing() {
                if more_to_send {
                    continue;
                }
                break;
            }
            let deadline = self.shared.state.borrow_mut().next_timeout();
            if let Some(received) = self.wait(deadline, more_to_send).await {
                self.receive(received).await;
            }
            let now = Instant::now();
            let mut state = self.shared.state.borrow_mut();
            state.handle_timeouts(now);
            state.process(now);
        }
        // Release the socket (and cancel the pending receive) before reporting the exit, so a
        // restarted transport can bind the same address.
        let Driver {
            shared,
            socket,
            recv,
            ..
        } = self;
        drop(recv);
        drop(socket);
        shared.state.borrow_mut().set_driver_exited();
    }

    /// Sends up to a batch of datagrams; true if the batch filled and more may be waiting.
    async fn transmit(&mut self) -> bool {
        for _ in 0..TRANSMIT_BATCH_DATAGRAMS_MAX {
            let outgoing = self
                .shared
                .state
                .borrow_mut()
                .poll_transmit(Instant::now(), &mut self.transmit_buf);
            match outgoing {
                Outgoing::Idle => return false,
                Outgoing::Dropped => {}
                Outgoing::Datagram(destination) => {
                    // A failed send is a lost datagram: QUIC retransmits (or, for an MTU probe
                    // too large for the path, learns the path's limit).
                    if self
                        .socket
                        .send_to(&self.transmit_buf, destination)
                        .await
                        .is_err()
                    {
                        self.shared.state.borrow_mut().count_socket_error();
                    }
                }
            }
        }
        true
    }

    /// Waits for a datagram, a wake-up or `deadline`; returns at once (after a look at the
    /// socket) when `immediately`.
    async fn wait(&mut self, deadline: Option<Instant>, immediately: bool) -> Option<Received> {
        let mut timer = deadline
            .filter(|_| !immediately)
            .map(|at| Timer::new(at.saturating_duration_since(Instant::now())));
        let shared = &self.shared;
        let recv = &mut self.recv;
        poll_fn(|cx| {
            if let Poll::Ready(received) = recv.as_mut().poll(cx) {
                return Poll::Ready(Some(received));
            }
            if shared.state.borrow_mut().take_driver_wake(cx.waker()) || immediately {
                return Poll::Ready(None);
            }
            if let Some(timer) = timer.as_mut()
                && Pin::new(timer).poll(cx).is_ready()
            {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await
    }

    /// Feeds a received datagram, and then any more the socket already holds, to the endpoint.
    async fn receive(&mut self, mut received: Received) {
        for handled in 1.. {
            let (buf, result) = received;
            {
                let mut state = self.shared.state.borrow_mut();
                match result {
                    Ok((length, from)) => {
                        state.handle_datagram(Instant::now(), from, &buf[..length]);
                    }
                    Err(_) => state.count_socket_error(),
                }
            }
            // Re-arm before anything else: a completed receive must never be polled again.
            self.recv = recv_future(&self.socket, buf);
            if handled == RECV_BATCH_DATAGRAMS_MAX {
                break;
            }
            // A fresh receive first tries a non-blocking read; pending means the socket is empty
            // and the future stays armed for the next wait.
            match futures_lite::future::poll_once(&mut self.recv).await {
                Some(next) => received = next,
                None => break,
            }
        }
    }
}
