//! Job activation through the gateway: `ActivateJobs` (rounds over the partitions, long-polled)
//! and `StreamActivatedJobs`, and the gateway's bounds on both.
//!
//! `ActivateJobs` asks every partition in turn (starting round-robin) for up to the jobs still
//! wanted and streams each non-empty batch. When none had any and the call long-polls, it asks
//! again after a pause that doubles from [`LONG_POLL_PAUSE_MIN`] up to [`LONG_POLL_PAUSE_MAX`],
//! until its deadline. The pauses of all the long polls of one gateway stretch together so that
//! they ask the partitions at most [`IDLE_ACTIVATIONS_PER_SECOND_MAX`] times a second in all: a
//! crowd of idle workers slows its own polling, not the cluster.
//!
//! `StreamActivatedJobs` keeps one poll parked at each partition's leader
//! ([`crate::client_api::Request::Poll`]) for as long as the client stays, streaming each job.
//!
//! Both are bounded per gateway ([`PollSlots`]): a long poll or a job stream beyond
//! `gateway.longPolling.maxPolls` or `gateway.jobStreams.maxStreams` is refused with
//! `RESOURCE_EXHAUSTED`. A job stream's slot is held until every poll it parked has come back,
//! so the polls one gateway keeps parked at a partition are bounded too. A partition whose
//! parked polls are at their own bound ([`crate::parked`]) answers `RESOURCE_EXHAUSTED`; the
//! stream asks again after a pause that grows to [`PARK_RETRY_PAUSE_MAX`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sluice_engine::Intent;
use sluice_engine::record::JobValue;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tonic::{Code, Status};

use super::super::client::ANSWER_TIMEOUT;
use super::super::mapping::{self, Activation};
use super::super::proto::gateway_protocol as pb;
use super::GatewayService;
use crate::partitioning::PartitionId;

/// Longest one activation command may wait for one partition before the round moves on.
const ACTIVATION_ATTEMPT_MAX: Duration = Duration::from_secs(5);
/// First pause of a long poll that found no job; it doubles after each empty round.
pub const LONG_POLL_PAUSE_MIN: Duration = Duration::from_millis(10);
/// Longest pause of a long poll while few poll (see [`IDLE_ACTIVATIONS_PER_SECOND_MAX`]).
pub const LONG_POLL_PAUSE_MAX: Duration = Duration::from_millis(100);
/// Activation commands a second the idle long polls of one gateway send in all, at most: with
/// more long polls open, each pauses longer.
pub const IDLE_ACTIVATIONS_PER_SECOND_MAX: u64 = 1_000;
/// Jobs a job stream asks each partition for per poll.
const STREAM_JOBS_PER_PARTITION: i32 = 32;
/// How long a job stream's poll stays parked at a partition leader before it is renewed.
const STREAM_POLL_WAIT: Duration = Duration::from_secs(10);
/// First pause before a stream's poll that failed is asked again; it doubles after each failure.
const PARK_RETRY_PAUSE_MIN: Duration = Duration::from_millis(10);
/// Longest pause before a stream's poll that failed is asked again.
pub const PARK_RETRY_PAUSE_MAX: Duration = Duration::from_secs(1);

/// The longest pause of one long poll when `open` long polls ask `partitions` partitions each:
/// [`LONG_POLL_PAUSE_MAX`], or longer so that together they stay within
/// [`IDLE_ACTIVATIONS_PER_SECOND_MAX`].
#[must_use]
pub fn long_poll_pause_max(open: usize, partitions: u32) -> Duration {
    let activations = u64::try_from(open)
        .unwrap_or(u64::MAX)
        .saturating_mul(u64::from(partitions.max(1)));
    let shared =
        Duration::from_millis(activations.saturating_mul(1_000) / IDLE_ACTIVATIONS_PER_SECOND_MAX);
    shared.max(LONG_POLL_PAUSE_MAX)
}

/// The long polls and job streams one gateway holds at once. Cheap to clone; clones share
/// the slots.
#[derive(Debug, Clone)]
pub struct PollSlots {
    long_polls: Arc<Semaphore>,
    long_polls_max: usize,
    long_polls_refused: Arc<AtomicU64>,
    job_streams: Arc<Semaphore>,
    job_streams_max: usize,
    job_streams_refused: Arc<AtomicU64>,
}

impl PollSlots {
    /// At most `long_polls_max` long polls and `job_streams_max` job streams at once.
    #[must_use]
    pub fn new(long_polls_max: usize, job_streams_max: usize) -> Self {
        PollSlots {
            long_polls: Arc::new(Semaphore::new(long_polls_max)),
            long_polls_max,
            long_polls_refused: Arc::default(),
            job_streams: Arc::new(Semaphore::new(job_streams_max)),
            job_streams_max,
            job_streams_refused: Arc::default(),
        }
    }

    /// Long polls open now (their polls not all back yet).
    #[must_use]
    pub fn long_polls_open(&self) -> usize {
        self.long_polls_max - self.long_polls.available_permits()
    }

    /// Long polls refused for the bound, since the start.
    #[must_use]
    pub fn long_polls_refused(&self) -> u64 {
        self.long_polls_refused.load(Ordering::Relaxed)
    }

    /// Job streams open now (their polls not all back yet).
    #[must_use]
    pub fn job_streams_open(&self) -> usize {
        self.job_streams_max - self.job_streams.available_permits()
    }

    /// Job streams refused for the bound, since the start.
    #[must_use]
    pub fn job_streams_refused(&self) -> u64 {
        self.job_streams_refused.load(Ordering::Relaxed)
    }

    /// A long poll's slot, or `RESOURCE_EXHAUSTED`.
    pub(super) fn long_poll(&self) -> Result<OwnedSemaphorePermit, Status> {
        Arc::clone(&self.long_polls)
            .try_acquire_owned()
            .map_err(|_| {
                self.long_polls_refused.fetch_add(1, Ordering::Relaxed);
                Status::resource_exhausted(format!(
                    "this gateway holds {} long polls, its bound (gateway.longPolling.maxPolls); \
                     retry shortly, or poll through another gateway",
                    self.long_polls_max
                ))
            })
    }

    /// A job stream's slot, or `RESOURCE_EXHAUSTED`.
    pub(super) fn job_stream(&self) -> Result<OwnedSemaphorePermit, Status> {
        Arc::clone(&self.job_streams)
            .try_acquire_owned()
            .map_err(|_| {
                self.job_streams_refused.fetch_add(1, Ordering::Relaxed);
                Status::resource_exhausted(format!(
                    "this gateway holds {} job streams, its bound \
                     (gateway.jobStreams.maxStreams); retry shortly, or open the stream through \
                     another gateway",
                    self.job_streams_max
                ))
            })
    }
}

/// What one `ActivateJobs` call asks for.
pub(super) struct ActivateCall {
    pub(super) activation: Activation,
    pub(super) max_jobs: i32,
    /// Its long poll's slot, held until it answers; `None` answers after one round.
    pub(super) long_poll: Option<OwnedSemaphorePermit>,
    /// When it answers empty.
    pub(super) deadline: Instant,
}

/// Sleeps for `pause` and doubles it up to [`PARK_RETRY_PAUSE_MAX`].
async fn retry_pause(pause: &mut Duration) {
    tokio::time::sleep(*pause).await;
    *pause = (*pause * 2).min(PARK_RETRY_PAUSE_MAX);
}

impl GatewayService {
    /// One activation round over every partition: sends `emit` each non-empty batch and
    /// returns the jobs handed out, or the error when every partition failed.
    async fn activation_round(
        &self,
        activation: &Activation,
        jobs_wanted: i32,
        deadline: Instant,
        emit: &mpsc::Sender<Result<pb::ActivateJobsResponse, Status>>,
    ) -> Result<i32, Status> {
        let mut activated = 0i32;
        let mut failures = 0usize;
        let mut last_error = None;
        let partitions = self.rotation();
        for &partition_id in &partitions {
            let wanted = jobs_wanted - activated;
            if wanted <= 0 || emit.is_closed() {
                break;
            }
            let attempt_deadline = deadline.min(Instant::now() + ACTIVATION_ATTEMPT_MAX);
            let command = mapping::activate_command(activation, wanted);
            let jobs = match self
                .client
                .activate(partition_id, &command, attempt_deadline)
                .await
            {
                Ok(reply) => mapping::activated_jobs(&reply),
                Err(status) => Err(status),
            };
            match jobs {
                Ok(jobs) if jobs.is_empty() => {}
                Ok(jobs) => {
                    activated += i32::try_from(jobs.len()).unwrap_or(i32::MAX);
                    if let Err(mpsc::error::SendError(Ok(response))) =
                        emit.send(Ok(pb::ActivateJobsResponse { jobs })).await
                    {
                        self.hand_back(partition_id, response.jobs.into_iter())
                            .await;
                        break;
                    }
                }
                Err(status) => {
                    // A partition without a leader, or at its backpressure limit, must not starve
                    // the others.
                    failures += 1;
                    if !matches!(
                        status.code(),
                        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted
                    ) {
                        return Err(status);
                    }
                    last_error = Some(status);
                }
            }
        }
        match last_error {
            Some(status) if failures == partitions.len() => Err(status),
            _ => Ok(activated),
        }
    }

    /// `ActivateJobs` after its checks: rounds until jobs are found, the deadline passes or
    /// the client leaves (one round without a long poll's slot); see the module docs.
    pub(super) async fn activate(
        self,
        call: ActivateCall,
        sender: mpsc::Sender<Result<pb::ActivateJobsResponse, Status>>,
    ) {
        let ActivateCall {
            activation,
            max_jobs,
            long_poll,
            deadline,
        } = call;
        let mut pause = LONG_POLL_PAUSE_MIN;
        loop {
            match self
                .activation_round(&activation, max_jobs, deadline, &sender)
                .await
            {
                Ok(activated) if activated > 0 => return,
                Ok(_) => {}
                // The poll's own time ran out while partitions were asked: an empty answer.
                Err(status)
                    if status.code() == Code::DeadlineExceeded && Instant::now() >= deadline => {}
                Err(status) => {
                    let _ = sender.send(Err(status)).await;
                    return;
                }
            }
            let now = Instant::now();
            if long_poll.is_none() || now >= deadline || sender.is_closed() {
                return;
            }
            let pause_max =
                long_poll_pause_max(self.slots.long_polls_open(), self.shape.partitions_count);
            pause = (pause * 2).min(pause_max);
            tokio::select! {
                () = tokio::time::sleep_until((now + pause).min(deadline)) => {}
                () = sender.closed() => return,
            }
        }
    }

    /// `StreamActivatedJobs`: one task per partition keeps a poll parked at its leader (see
    /// [`crate::client_api::Request::Poll`]); the leader activates a job for it right after the
    /// job's creation, so the job reaches the stream as its creation commits. The tasks end once
    /// the client has left and their poll returned (they hold `slot` until then); jobs a poll
    /// brings back after that are handed back to the partition.
    pub(super) fn stream(
        &self,
        activation: &Activation,
        slot: OwnedSemaphorePermit,
        sender: &mpsc::Sender<Result<pb::ActivatedJob, Status>>,
    ) {
        let command = Arc::new(mapping::activate_command(
            activation,
            STREAM_JOBS_PER_PARTITION,
        ));
        let slot = Arc::new(slot);
        for partition_id in 1..=self.shape.partitions_count {
            tokio::spawn(self.clone().stream_partition(
                partition_id,
                Arc::clone(&command),
                sender.clone(),
                Arc::clone(&slot),
            ));
        }
    }

    /// The job stream's poll loop on one partition.
    async fn stream_partition(
        self,
        partition_id: PartitionId,
        command: Arc<sluice_engine::Record>,
        sender: mpsc::Sender<Result<pb::ActivatedJob, Status>>,
        _slot: Arc<OwnedSemaphorePermit>,
    ) {
        let mut pause = PARK_RETRY_PAUSE_MIN;
        while !sender.is_closed() {
            let deadline = Instant::now() + STREAM_POLL_WAIT + ANSWER_TIMEOUT;
            let jobs = match self
                .client
                .poll(partition_id, &command, STREAM_POLL_WAIT, deadline)
                .await
            {
                Ok(reply) => mapping::activated_jobs(&reply),
                Err(status) => Err(status),
            };
            let Ok(jobs) = jobs else {
                // No leader, overloaded, or a broken connection: ask again after a pause.
                retry_pause(&mut pause).await;
                continue;
            };
            pause = PARK_RETRY_PAUSE_MIN;
            let mut jobs = jobs.into_iter();
            while let Some(job) = jobs.next() {
                if let Err(mpsc::error::SendError(Ok(job))) = sender.send(Ok(job)).await {
                    self.hand_back(partition_id, std::iter::once(job).chain(jobs))
                        .await;
                    return;
                }
            }
        }
    }

    /// Gives activated jobs nobody will receive back to their partition at once (a failure
    /// with their retries unchanged and no back-off), rather than leaving them locked until
    /// their timeout.
    async fn hand_back(
        &self,
        partition_id: PartitionId,
        jobs: impl Iterator<Item = pb::ActivatedJob>,
    ) {
        for job in jobs {
            let value = JobValue {
                retries: job.retries,
                error_message: "the job reached the gateway after its caller had left".to_owned(),
                ..JobValue::default()
            };
            let command = mapping::job_command(job.key, Intent::Fail, value);
            let deadline = Instant::now() + ANSWER_TIMEOUT;
            let _ = self.send(partition_id, &command, deadline).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_long_polls_share_a_bounded_rate() {
        assert_eq!(long_poll_pause_max(0, 3), LONG_POLL_PAUSE_MAX);
        assert_eq!(long_poll_pause_max(1, 3), LONG_POLL_PAUSE_MAX);
        assert_eq!(long_poll_pause_max(500, 3), Duration::from_millis(1_500));
        assert_eq!(long_poll_pause_max(4_096, 1), Duration::from_millis(4_096));
        assert_eq!(
            long_poll_pause_max(usize::MAX, u32::MAX),
            Duration::from_millis(u64::MAX / IDLE_ACTIVATIONS_PER_SECOND_MAX)
        );
        // Whatever the crowd, its rounds ask at most the bound a second.
        for open in [1u64, 10, 333, 1_000, 100_000] {
            let pause_ms = u64::try_from(
                long_poll_pause_max(usize::try_from(open).expect("small"), 3).as_millis(),
            )
            .expect("small");
            assert!(
                open * 3 * 1_000 <= IDLE_ACTIVATIONS_PER_SECOND_MAX * pause_ms + 1_000
                    || pause_ms == 100,
                "{open} polls pausing {pause_ms} ms"
            );
        }
    }
}
