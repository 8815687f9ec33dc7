//! The bench's bookkeeping, a value with no I/O: which instances this run created, when, and
//! when their job was received and completed; RPC latencies; errors by code; counts per
//! second. Time is always an argument.
//!
//! A job may be pushed, and even completed, before the answer to the `CreateProcessInstance`
//! that started its instance reaches the creator, so the three events of an instance
//! ([`Tracker::handle_created`], [`Tracker::handle_job_received`],
//! [`Tracker::handle_completed`]) may arrive in any order. Jobs whose instance this run never
//! created (left over by an earlier run) are completed, kept for [`ORPHAN_AGE`] in case their
//! creation answer is late, then counted as leftovers.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Latency histograms cover 1 µs to an hour, 3 significant digits.
pub const HISTOGRAM_MAX_US: u64 = 3_600_000_000;
/// How long a job of an instance not (yet) known as created stays in the tracker.
pub const ORPHAN_AGE: Duration = Duration::from_secs(30);
/// Most instances tracked at once; creators wait above it.
pub const INSTANCES_TRACKED_MAX: usize = 1_000_000;
/// Seconds of per-second counts kept (the longest run is two hours plus its drain).
pub const SECONDS_MAX: usize = 2 * 3600 + 120;

/// The error "code" counted when the gateway answers one instance key to two creations.
pub const DUPLICATE_KEY: &str = "DUPLICATE_KEY";

/// The RPCs the bench measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rpc {
    /// `CreateProcessInstance`.
    CreateProcessInstance,
    /// `StreamActivatedJobs`: only its errors (a stream has no latency).
    StreamActivatedJobs,
    /// `ActivateJobs`: the long polls with `--activate poll`, the fallback polls otherwise.
    ActivateJobs,
    /// `CompleteJob`.
    CompleteJob,
}

impl Rpc {
    /// The gRPC method name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Rpc::CreateProcessInstance => "CreateProcessInstance",
            Rpc::StreamActivatedJobs => "StreamActivatedJobs",
            Rpc::ActivateJobs => "ActivateJobs",
            Rpc::CompleteJob => "CompleteJob",
        }
    }
}

/// A new latency histogram.
///
/// # Panics
///
/// Never: the bounds are constants that hdrhistogram accepts.
#[must_use]
pub fn new_histogram() -> Histogram<u64> {
    #[expect(clippy::expect_used, reason = "constant bounds, checked by the tests")]
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3).expect("valid histogram bounds")
}

/// Records `latency` in µs (at least 1, at most [`HISTOGRAM_MAX_US`]).
pub fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    histogram.saturating_record(micros.max(1));
}

#[derive(Debug, Clone, Copy, Default)]
#[expect(clippy::struct_field_names, reason = "each field is a moment")]
struct Instance {
    /// When the creation was scheduled (`--rate`) or sent: the start of its latency.
    started_at: Option<Instant>,
    job_received_at: Option<Instant>,
    completed_at: Option<Instant>,
    /// When the tracker first heard of it (for pruning orphans).
    seen_at: Option<Instant>,
}

/// Counters read once a second for the progress line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Instances created since the start (all of this run's, warm-up included).
    pub created: u64,
    /// Instances of this run completed since the start.
    pub completed: u64,
    /// Errors since the start.
    pub errors: u64,
    /// p99 instance latency since the last call, in µs (0 when none completed).
    pub interval_p99_us: u64,
}

/// Everything measured; see the module docs.
#[derive(Debug)]
pub struct Tracker {
    run_started: Instant,
    measure_from: Instant,
    measure_until: Instant,
    instances: HashMap<i64, Instance>,
    /// Instances created (answered) whose start lies in the measured window.
    created_measured: u64,
    created_total: u64,
    completed_total: u64,
    /// Instances created in the window and not completed yet.
    pending_measured: u64,
    /// Completions (of this run's instances) inside the measured window, for throughput.
    completed_in_window: u64,
    leftover_jobs: u64,
    fallback_jobs: u64,
    instance_latency: Histogram<u64>,
    interval_latency: Histogram<u64>,
    job_push_delay: Histogram<u64>,
    rpcs: BTreeMap<Rpc, Histogram<u64>>,
    errors: BTreeMap<(Rpc, &'static str), u64>,
    errors_total: u64,
    created_per_second: Vec<u64>,
    completed_per_second: Vec<u64>,
}

impl Tracker {
    /// A run started at `run_started`, measured from `measure_from` for `duration`.
    #[must_use]
    pub fn new(run_started: Instant, measure_from: Instant, duration: Duration) -> Self {
        assert!(measure_from >= run_started);
        Tracker {
            run_started,
            measure_from,
            measure_until: measure_from + duration,
            instances: HashMap::new(),
            created_measured: 0,
            created_total: 0,
            completed_total: 0,
            pending_measured: 0,
            completed_in_window: 0,
            leftover_jobs: 0,
            fallback_jobs: 0,
            instance_latency: new_histogram(),
            interval_latency: new_histogram(),
            job_push_delay: new_histogram(),
            rpcs: BTreeMap::new(),
            errors: BTreeMap::new(),
            errors_total: 0,
            created_per_second: Vec::new(),
            completed_per_second: Vec::new(),
        }
    }

    /// Starts the clock again: the run starts at `run_started` and is measured from
    /// `measure_from` for `duration`. Only for a tracker that has seen no creation yet (the
    /// jobs it holds are left over from earlier runs).
    pub fn restart(&mut self, run_started: Instant, measure_from: Instant, duration: Duration) {
        assert!(measure_from >= run_started);
        assert_eq!(self.created_total, 0, "restart after a creation");
        self.run_started = run_started;
        self.measure_from = measure_from;
        self.measure_until = measure_from + duration;
        self.completed_per_second.clear();
    }

    /// The start of the measured window.
    #[must_use]
    pub fn measure_from(&self) -> Instant {
        self.measure_from
    }

    /// The end of the measured window: no creation starts after it.
    #[must_use]
    pub fn measure_until(&self) -> Instant {
        self.measure_until
    }

    fn measured(&self, started_at: Instant) -> bool {
        started_at >= self.measure_from && started_at < self.measure_until
    }

    fn count_at(per_second: &mut Vec<u64>, run_started: Instant, at: Instant) {
        let second = usize::try_from(at.saturating_duration_since(run_started).as_secs())
            .unwrap_or(usize::MAX)
            .min(SECONDS_MAX - 1);
        if per_second.len() <= second {
            per_second.resize(second + 1, 0);
        }
        per_second[second] += 1;
    }

    /// `CreateProcessInstance` answered `key` for a creation started (scheduled or sent) at
    /// `started_at`; `now` is when the answer arrived.
    pub fn handle_created(&mut self, key: i64, started_at: Instant, now: Instant) {
        if self
            .instances
            .get(&key)
            .is_some_and(|instance| instance.started_at.is_some())
        {
            // A gateway fault, not ours: counted, and the first creation keeps the key.
            self.handle_error(Rpc::CreateProcessInstance, DUPLICATE_KEY);
            return;
        }
        self.created_total += 1;
        Self::count_at(&mut self.created_per_second, self.run_started, now);
        let measured = self.measured(started_at);
        if measured {
            self.created_measured += 1;
            self.pending_measured += 1;
        }
        let instance = self.instances.entry(key).or_default();
        instance.started_at = Some(started_at);
        let instance = *instance;
        if let Some(received_at) = instance.job_received_at
            && measured
        {
            record(
                &mut self.job_push_delay,
                received_at.saturating_duration_since(started_at),
            );
        }
        if let Some(completed_at) = instance.completed_at {
            self.instances.remove(&key);
            self.settle(started_at, completed_at);
        }
    }

    /// A worker received a job of instance `key` at `now`.
    pub fn handle_job_received(&mut self, key: i64, now: Instant) {
        let instance = self.instances.entry(key).or_default();
        if instance.job_received_at.is_some() {
            return; // activated again after a timeout: the first one counts
        }
        instance.job_received_at = Some(now);
        instance.seen_at.get_or_insert(now);
        if let Some(started_at) = instance.started_at
            && self.measured(started_at)
        {
            record(
                &mut self.job_push_delay,
                now.saturating_duration_since(started_at),
            );
        }
    }

    /// `CompleteJob` answered OK at `now` for a job of instance `key`: the instance is done.
    pub fn handle_completed(&mut self, key: i64, now: Instant) {
        let instance = self.instances.entry(key).or_default();
        if let Some(started_at) = instance.started_at {
            self.instances.remove(&key);
            self.settle(started_at, now);
        } else {
            instance.completed_at.get_or_insert(now);
            instance.seen_at.get_or_insert(now);
        }
    }

    fn settle(&mut self, started_at: Instant, completed_at: Instant) {
        self.completed_total += 1;
        Self::count_at(
            &mut self.completed_per_second,
            self.run_started,
            completed_at,
        );
        let latency = completed_at.saturating_duration_since(started_at);
        record(&mut self.interval_latency, latency);
        if self.measured(started_at) {
            record(&mut self.instance_latency, latency);
            self.pending_measured -= 1;
        }
        if completed_at >= self.measure_from && completed_at < self.measure_until {
            self.completed_in_window += 1;
        }
    }

    /// The fallback poll of a streaming run found `jobs` jobs that were not pushed.
    pub fn handle_fallback_jobs(&mut self, jobs: u64) {
        self.fallback_jobs += jobs;
    }

    /// One answered RPC took `latency`.
    pub fn handle_rpc(&mut self, rpc: Rpc, latency: Duration) {
        record(self.rpcs.entry(rpc).or_insert_with(new_histogram), latency);
    }

    /// One RPC failed with the gRPC code named `code`.
    pub fn handle_error(&mut self, rpc: Rpc, code: &'static str) {
        *self.errors.entry((rpc, code)).or_default() += 1;
        self.errors_total += 1;
    }

    /// Forgets jobs whose instance has not been heard of as created for [`ORPHAN_AGE`]: they
    /// belong to an earlier run (or to a creation whose answer was lost).
    pub fn prune(&mut self, now: Instant) {
        let mut leftovers = 0;
        self.instances.retain(|_, instance| {
            let orphan = instance.started_at.is_none()
                && instance
                    .seen_at
                    .is_some_and(|seen_at| now.saturating_duration_since(seen_at) >= ORPHAN_AGE);
            if orphan && instance.completed_at.is_some() {
                leftovers += 1;
            }
            !orphan
        });
        self.leftover_jobs += leftovers;
    }

    /// Instances tracked (created and not completed, or jobs not matched yet).
    #[must_use]
    pub fn tracked(&self) -> usize {
        self.instances.len()
    }

    /// This run's instances created and not completed yet.
    #[must_use]
    pub fn in_progress(&self) -> u64 {
        self.created_total.saturating_sub(self.completed_total)
    }

    /// Instances created in the measured window whose job is not completed yet.
    #[must_use]
    pub fn pending_measured(&self) -> u64 {
        self.pending_measured
    }

    /// The progress counters; restarts the interval p99.
    pub fn take_progress(&mut self) -> Progress {
        let interval_p99_us = if self.interval_latency.is_empty() {
            0
        } else {
            self.interval_latency.value_at_quantile(0.99)
        };
        self.interval_latency.reset();
        Progress {
            created: self.created_total,
            completed: self.completed_total,
            errors: self.errors_total,
            interval_p99_us,
        }
    }

    /// The final figures (the tracker stays usable, for tasks still finishing).
    #[must_use]
    pub fn finish(&self, now: Instant) -> Measurements {
        let leftovers_kept = self
            .instances
            .values()
            .filter(|instance| instance.started_at.is_none() && instance.completed_at.is_some())
            .count();
        let mut rpcs = self.rpcs.clone();
        rpcs.remove(&Rpc::StreamActivatedJobs);
        Measurements {
            window: self.measure_until.duration_since(self.measure_from),
            warmup: self.measure_from.duration_since(self.run_started),
            run: now.saturating_duration_since(self.run_started),
            created: self.created_measured,
            completed: self.instance_latency.len(),
            unfinished: self.pending_measured,
            completed_in_window: self.completed_in_window,
            leftover_jobs: self.leftover_jobs + u64::try_from(leftovers_kept).unwrap_or(u64::MAX),
            fallback_jobs: self.fallback_jobs,
            instance_latency: self.instance_latency.clone(),
            job_push_delay: self.job_push_delay.clone(),
            rpcs,
            errors: self.errors.clone(),
            created_per_second: self.created_per_second.clone(),
            completed_per_second: self.completed_per_second.clone(),
        }
    }
}

/// What a run measured; [`super::report`] renders it.
#[derive(Debug, Clone)]
pub struct Measurements {
    /// The measured window.
    pub window: Duration,
    /// The warm-up before it.
    pub warmup: Duration,
    /// The whole run, drain included.
    pub run: Duration,
    /// Instances started in the window and created.
    pub created: u64,
    /// Of those, the completed ones (the instance latency histogram's count).
    pub completed: u64,
    /// Of those, the ones still not completed when the run ended.
    pub unfinished: u64,
    /// Completions inside the window (of instances started at any time of this run).
    pub completed_in_window: u64,
    /// Jobs completed whose instance this run did not create.
    pub leftover_jobs: u64,
    /// Jobs not pushed but found by the fallback poll (`--activate stream` only).
    pub fallback_jobs: u64,
    /// Create sent (or scheduled) → job completed, of instances started in the window.
    pub instance_latency: Histogram<u64>,
    /// Create sent (or scheduled) → job received by a worker.
    pub job_push_delay: Histogram<u64>,
    /// Latency of each answered RPC.
    pub rpcs: BTreeMap<Rpc, Histogram<u64>>,
    /// Failed RPCs by method and gRPC code.
    pub errors: BTreeMap<(Rpc, &'static str), u64>,
    /// Instances created in each second of the run (warm-up, window, drain).
    pub created_per_second: Vec<u64>,
    /// Instances completed in each second of the run.
    pub completed_per_second: Vec<u64>,
}

impl Measurements {
    /// Completed instances per second over the window.
    #[must_use]
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    pub fn completed_per_s(&self) -> f64 {
        self.completed_in_window as f64 / self.window.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// Created instances per second over the window.
    #[must_use]
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    pub fn created_per_s(&self) -> f64 {
        self.created as f64 / self.window.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// All errors.
    #[must_use]
    pub fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Errors by gRPC code, summed over the methods.
    #[must_use]
    pub fn errors_by_code(&self) -> BTreeMap<&'static str, u64> {
        let mut by_code = BTreeMap::new();
        for ((_, code), count) in &self.errors {
            *by_code.entry(*code).or_default() += count;
        }
        by_code
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn tracker() -> (Tracker, Instant) {
        let t0 = Instant::now();
        (Tracker::new(t0, t0 + 1000 * MS, 2000 * MS), t0)
    }

    #[test]
    fn instance_latency_runs_from_the_start_to_the_completion_in_any_order() {
        let (mut tracker, t0) = tracker();
        // Created, pushed, completed.
        tracker.handle_created(1, t0 + 1000 * MS, t0 + 1002 * MS);
        tracker.handle_job_received(1, t0 + 1003 * MS);
        tracker.handle_completed(1, t0 + 1010 * MS);
        // Pushed and completed before the creator heard the answer.
        tracker.handle_job_received(2, t0 + 1101 * MS);
        tracker.handle_completed(2, t0 + 1105 * MS);
        assert_eq!(tracker.tracked(), 1);
        tracker.handle_created(2, t0 + 1100 * MS, t0 + 1106 * MS);
        assert_eq!(tracker.tracked(), 0);
        // Created in the warm-up: not measured, but shown in the per-second counts.
        tracker.handle_created(3, t0 + 10 * MS, t0 + 12 * MS);
        tracker.handle_completed(3, t0 + 20 * MS);
        // Created in the window, never completed.
        tracker.handle_created(4, t0 + 1200 * MS, t0 + 1201 * MS);
        assert_eq!(tracker.pending_measured(), 1);
        let progress = tracker.take_progress();
        assert_eq!(progress.created, 4);
        assert_eq!(progress.completed, 3);
        assert!(progress.interval_p99_us >= 9_000, "{progress:?}");
        assert_eq!(tracker.take_progress().interval_p99_us, 0);

        let done = tracker.finish(t0 + 4000 * MS);
        assert_eq!(done.created, 3);
        assert_eq!(done.completed, 2);
        assert_eq!(done.unfinished, 1);
        assert_eq!(done.completed_in_window, 2);
        assert_eq!(done.instance_latency.len(), 2);
        assert!(done.instance_latency.max() >= 9_990 && done.instance_latency.max() <= 10_010);
        assert!(done.instance_latency.min() >= 4_990 && done.instance_latency.min() <= 5_010);
        assert_eq!(done.job_push_delay.len(), 2);
        assert_eq!(done.created_per_second, vec![1, 3]);
        assert_eq!(done.completed_per_second, vec![1, 2]);
        assert!((done.completed_per_s() - 1.0).abs() < 1e-9);
        assert_eq!(done.leftover_jobs, 0);
    }

    #[test]
    fn jobs_of_other_runs_are_leftovers() {
        let (mut tracker, t0) = tracker();
        tracker.handle_job_received(77, t0 + 1000 * MS);
        tracker.handle_completed(77, t0 + 1001 * MS);
        tracker.handle_job_received(78, t0 + 1000 * MS);
        tracker.prune(t0 + 999 * MS + ORPHAN_AGE);
        assert_eq!(tracker.tracked(), 2);
        tracker.prune(t0 + 1000 * MS + ORPHAN_AGE);
        assert_eq!(tracker.tracked(), 0);
        tracker.handle_completed(79, t0 + 1500 * MS);
        let done = tracker.finish(t0 + 2000 * MS);
        assert_eq!(done.leftover_jobs, 2);
        assert_eq!(done.completed, 0);
        assert_eq!(done.completed_in_window, 0);
    }

    #[test]
    fn restart_moves_the_window_and_keeps_leftovers() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new(t0, t0, Duration::ZERO);
        tracker.handle_completed(9, t0 + MS);
        let t1 = t0 + 100 * MS;
        tracker.restart(t1, t1 + 1000 * MS, 1000 * MS);
        assert_eq!(tracker.measure_until(), t1 + 2000 * MS);
        tracker.handle_created(1, t1 + 1500 * MS, t1 + 1501 * MS);
        tracker.handle_completed(1, t1 + 1502 * MS);
        let done = tracker.finish(t1 + 2000 * MS);
        assert_eq!(
            (done.created, done.completed, done.leftover_jobs),
            (1, 1, 1)
        );
        assert_eq!(done.completed_per_second, vec![0, 1]);
    }

    #[test]
    fn errors_and_rpcs() {
        let (mut tracker, t0) = tracker();
        tracker.handle_error(Rpc::CreateProcessInstance, "RESOURCE_EXHAUSTED");
        tracker.handle_error(Rpc::CreateProcessInstance, "RESOURCE_EXHAUSTED");
        tracker.handle_error(Rpc::CompleteJob, "NOT_FOUND");
        tracker.handle_error(Rpc::StreamActivatedJobs, "RESOURCE_EXHAUSTED");
        tracker.handle_rpc(Rpc::CompleteJob, 3 * MS);
        assert_eq!(tracker.take_progress().errors, 4);
        let done = tracker.finish(t0);
        assert_eq!(done.errors_total(), 4);
        assert_eq!(
            done.errors_by_code().into_iter().collect::<Vec<_>>(),
            vec![("NOT_FOUND", 1), ("RESOURCE_EXHAUSTED", 3)]
        );
        assert_eq!(done.rpcs.len(), 1);
        assert_eq!(done.rpcs[&Rpc::CompleteJob].len(), 1);
    }

    #[test]
    fn histograms_hold_their_range() {
        let mut histogram = new_histogram();
        record(&mut histogram, Duration::ZERO);
        record(&mut histogram, Duration::from_hours(2));
        assert_eq!(histogram.min(), 1);
        assert!(histogram.max() >= HISTOGRAM_MAX_US);
    }
}
