//! The background group committer: a glommio task that flushes a journal by a [`FlushPolicy`].
//!
//! Appenders call [`Journal::append`] and then [`Journal::wait_durable`]; the flusher turns the
//! stream of appends into as few `fdatasync`s as the policy allows.
//!
//! **Sharing the shard.** glommio notices finished I/O only between task-queue runs or when its
//! preempt timer fires (100 ms by default). A CPU-bound task on the same executor (an appender in
//! a tight loop, later the engine) must therefore yield its task queue now and then
//! (`glommio::executor().yield_task_queue_now()`), or the flusher's completed writes wait to be
//! noticed and the disk idles. Do not shorten the preempt timer instead: with timers of a few
//! hundred microseconds, glommio 0.9's reactor loses wake-ups on this VM and the executor sleeps
//! forever (seen with `sluice-logbench`, also in the raw phase that uses no journal code).

use std::rc::Rc;
use std::time::Duration;

use crate::journal::Journal;
use crate::storage::Storage;

/// When the flusher starts a flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlushPolicy {
    /// As soon as there are unflushed appends and the previous flush has finished: every append
    /// made during a flush rides on the next one. The default; the lowest latency under load.
    #[default]
    Immediate,
    /// One flush per batch, no grouping: a baseline that shows what group commit saves.
    EveryBatch,
    /// Wait until the oldest unflushed append is `delay` old or `bytes` are pending, then flush
    /// everything: fewer, larger flushes at the price of latency.
    Delayed { delay: Duration, bytes: u64 },
}

/// Spawns the flusher on the current glommio executor. It stops after [`Journal::close`].
/// A failed flush is reported to waiters and retried after a short pause.
pub fn spawn_flusher<S: Storage + 'static>(
    journal: Rc<Journal<S>>,
    policy: FlushPolicy,
) -> glommio::task::JoinHandle<()> {
    glommio::spawn_local(async move { run_flusher(&journal, policy).await }).detach()
}

/// Pause after a failed flush before retrying, so a full disk is not hammered.
const RETRY_PAUSE: Duration = Duration::from_millis(10);

/// The flusher loop; [`spawn_flusher`] runs it as a task.
pub async fn run_flusher<S: Storage>(journal: &Journal<S>, policy: FlushPolicy) {
    loop {
        journal.wait_pending().await;
        if journal.is_closed() {
            // Flush what is left so a clean shutdown loses nothing.
            let _ = journal.flush().await;
            return;
        }
        let result = match policy {
            FlushPolicy::Immediate => journal.flush().await,
            FlushPolicy::EveryBatch => journal.flush_to(journal.durable_index() + 1).await,
            FlushPolicy::Delayed { delay, bytes } => {
                let deadline = std::time::Instant::now() + delay;
                while journal.pending_bytes() < bytes && !journal.is_closed() {
                    let now = std::time::Instant::now();
                    if now >= deadline {
                        break;
                    }
                    glommio::timer::sleep((deadline - now).min(Duration::from_micros(200))).await;
                }
                journal.flush().await
            }
        };
        if result.is_err() {
            glommio::timer::sleep(RETRY_PAUSE).await;
        }
    }
}
