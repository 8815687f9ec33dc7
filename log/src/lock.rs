//! A single-threaded async lock: serializes the journal's disk mutations (flush, truncate,
//! compact, reset) on one shard without any atomic or OS lock.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::task::{Poll, Waker};

#[derive(Debug, Default)]
pub(crate) struct LocalLock {
    held: Cell<bool>,
    waiters: RefCell<VecDeque<Waker>>,
}

#[derive(Debug)]
pub(crate) struct LocalGuard<'a> {
    lock: &'a LocalLock,
}

impl LocalLock {
    pub(crate) async fn lock(&self) -> LocalGuard<'_> {
        poll_fn(|cx| {
            if self.held.get() {
                self.waiters.borrow_mut().push_back(cx.waker().clone());
                Poll::Pending
            } else {
                self.held.set(true);
                Poll::Ready(())
            }
        })
        .await;
        LocalGuard { lock: self }
    }
}

impl Drop for LocalGuard<'_> {
    fn drop(&mut self) {
        self.lock.held.set(false);
        // Wake every waiter: one wins, the others queue again. Waiters are few (one per
        // concurrent flush caller), and waking all avoids losing a wake-up to a dropped future.
        let waiters: Vec<Waker> = self.lock.waiters.borrow_mut().drain(..).collect();
        for w in waiters {
            w.wake();
        }
    }
}
