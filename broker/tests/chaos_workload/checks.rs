//! What the chaos test concludes from the clients' [`Records`] and the times each broker was
//! down or frozen ([`Window`]s). Pure functions: no cluster, no clock.
//!
//! The rules, and why each one holds for a correct cluster:
//! - **No creation refused by a live gateway.** A creation whose gateway's broker was neither
//!   down nor frozen at any moment between sending it and its answer must succeed: at most one
//!   broker is ever hurt, so every partition keeps a quorum, and the gateway waits out an
//!   election or hops to a partition with a leader within the deadline.
//! - **Every acknowledged creation's job is completed.** Its instance's job was handed out, with
//!   the creation's own `creation` variable, and a completion of that job was answered `OK`, or
//!   answered `NOT_FOUND` after another completion of it that may have run had been sent.
//! - **Exactly one instance per creation.** The gateway re-sends a command whose answer was lost
//!   under the same request id, and the engine answers it once: no creation makes two instances.
//! - **No acknowledged completion lost.** Once a completion was answered `OK` (or the job
//!   `NOT_FOUND`), no activation sent after that answer hands the job out again. A completion
//!   acknowledged but lost would leave the job activatable, or activated with a lock that
//!   expires after the job timeout, and the test goes on polling past that.
//! - **No job vanishes.** `NOT_FOUND` for a job is explained only by another completion of it
//!   that may have run before the answer.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::Instant;

use tonic::Code;

use super::workload::{CompletionAttempt, Creation, Records, Refusal};

/// Violations listed in full, per rule; the rest are counted.
const LISTED_MAX: usize = 15;

/// A time broker `broker` was down (killed, until its gateway accepted connections again) or
/// frozen (SIGSTOP to SIGCONT): its gateway could not answer.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// The broker (its position in the cluster).
    pub broker: usize,
    /// When the signal was about to be sent.
    pub start: Instant,
    /// When its gateway could answer again.
    pub end: Instant,
}

/// Whether creation `creation` overlapped a window of its gateway's broker.
fn gateway_hurt(creation: &Creation, windows: &[Window]) -> bool {
    windows.iter().any(|window| {
        window.broker == creation.gateway
            && creation.sent <= window.end
            && creation.answered >= window.start
    })
}

/// How a job's completion is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completed {
    /// A completion was answered `OK`.
    Acknowledged,
    /// A completion was answered `NOT_FOUND` after another that may have run was sent.
    Gone,
}

/// Whether a completion's answer leaves open that it ran.
fn may_have_run(outcome: &Result<(), Refusal>) -> bool {
    match outcome {
        Ok(()) => true,
        Err(refusal) => matches!(
            refusal.code,
            None | Some(
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
            )
        ),
    }
}

fn is_not_found(outcome: &Result<(), Refusal>) -> bool {
    matches!(outcome, Err(refusal) if refusal.code == Some(Code::NotFound))
}

/// Completion attempts by job, in the order they were sent.
fn attempts_by_job(records: &Records) -> HashMap<i64, Vec<&CompletionAttempt>> {
    let mut by_job: HashMap<i64, Vec<&CompletionAttempt>> = HashMap::new();
    for attempt in &records.completions {
        by_job.entry(attempt.job_key).or_default().push(attempt);
    }
    for attempts in by_job.values_mut() {
        attempts.sort_by_key(|attempt| attempt.sent);
    }
    by_job
}

/// For one job's attempts: how its completion is known and the answer that made it known, and
/// the `NOT_FOUND` answers nothing explains.
fn judge_job<'a>(
    attempts: &[&'a CompletionAttempt],
) -> (
    Option<(Completed, &'a CompletionAttempt)>,
    Vec<&'a CompletionAttempt>,
) {
    let mut known: Option<(Completed, &CompletionAttempt)> = None;
    let mut unexplained = Vec::new();
    for (index, attempt) in attempts.iter().enumerate() {
        if attempt.outcome.is_ok() {
            if known.is_none_or(|(how, _)| how != Completed::Acknowledged) {
                known = Some((Completed::Acknowledged, attempt));
            }
        } else if is_not_found(&attempt.outcome) {
            let explained = attempts.iter().enumerate().any(|(other, earlier)| {
                other != index && earlier.sent < attempt.answered && may_have_run(&earlier.outcome)
            });
            if explained {
                if known.is_none() {
                    known = Some((Completed::Gone, attempt));
                }
            } else {
                unexplained.push(*attempt);
            }
        }
    }
    (known, unexplained)
}

/// Instances whose job's completion is known, with how and when that became known.
fn completed_instances(records: &Records) -> HashMap<i64, (Completed, Instant)> {
    let mut done = HashMap::new();
    for attempts in attempts_by_job(records).values() {
        if let (Some((how, attempt)), _) = judge_job(attempts) {
            done.insert(attempt.instance_key, (how, attempt.answered));
        }
    }
    done
}

/// Acknowledged creations whose instance's job is not known to be completed yet.
#[must_use]
pub fn pending(records: &Records) -> Vec<&Creation> {
    let done = completed_instances(records);
    records
        .creations
        .iter()
        .filter(|creation| {
            creation
                .outcome
                .as_ref()
                .is_ok_and(|key| !done.contains_key(key))
        })
        .collect()
}

/// When the last completion was answered `OK`.
#[must_use]
pub fn last_acknowledged_completion(records: &Records) -> Option<Instant> {
    records
        .completions
        .iter()
        .filter(|attempt| attempt.outcome.is_ok())
        .map(|attempt| attempt.answered)
        .max()
}

/// The counts of a run.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    /// Creations sent.
    pub attempted: usize,
    /// Creations answered with an instance key.
    pub acknowledged: usize,
    /// Creations that failed although their gateway's broker was live throughout.
    pub refused_live: usize,
    /// Creations that failed while their gateway's broker was down or frozen.
    pub failed_hurt_gateway: usize,
    /// Their codes.
    pub failed_hurt_codes: BTreeMap<String, usize>,
    /// Creations answered with an instance key although their gateway's broker was down or
    /// frozen for part of the call.
    pub acknowledged_hurt_gateway: usize,
    /// Jobs handed out (distinct).
    pub jobs_activated: usize,
    /// Times jobs were handed out (a job whose lock expired is handed out again).
    pub handouts: usize,
    /// Activation calls that failed.
    pub failed_activations: u64,
    /// Completion attempts.
    pub completion_attempts: usize,
    /// Jobs completed with an `OK` answer.
    pub completed_acknowledged: usize,
    /// Jobs known completed from `NOT_FOUND` after an attempt that may have run.
    pub completed_gone: usize,
    /// Completion attempts whose outcome was unknown (sent again).
    pub completion_attempts_unknown: usize,
    /// Instances whose creation was not acknowledged but took effect (their jobs showed up).
    pub instances_of_unacknowledged: usize,
}

/// Counts and broken rules.
#[derive(Debug, Default)]
pub struct Verdict {
    /// The counts.
    pub counts: Counts,
    /// Each broken rule, with the cases.
    pub violations: Vec<String>,
}

/// Collects up to [`LISTED_MAX`] cases of one rule.
struct Rule {
    name: &'static str,
    cases: Vec<String>,
    count: usize,
}

impl Rule {
    fn new(name: &'static str) -> Rule {
        Rule {
            name,
            cases: Vec::new(),
            count: 0,
        }
    }

    fn broken(&mut self, case: impl FnOnce() -> String) {
        self.count += 1;
        if self.cases.len() < LISTED_MAX {
            self.cases.push(case());
        }
    }

    fn report(self, violations: &mut Vec<String>) {
        if self.count == 0 {
            return;
        }
        let mut text = format!("{} ({} cases):", self.name, self.count);
        for case in &self.cases {
            let _ = write!(text, "\n    {case}");
        }
        if self.count > self.cases.len() {
            let _ = write!(text, "\n    ... and {} more", self.count - self.cases.len());
        }
        violations.push(text);
    }
}

/// Seconds since `origin`, for messages.
fn at(origin: Instant, instant: Instant) -> String {
    format!(
        "+{:.3}s",
        instant.saturating_duration_since(origin).as_secs_f64()
    )
}

/// Checks every rule of the module docs; times print relative to `origin`.
#[must_use]
pub fn judge(records: &Records, windows: &[Window], origin: Instant) -> Verdict {
    let mut counts = Counts {
        attempted: records.creations.len(),
        failed_activations: records.failed_activations,
        completion_attempts: records.completions.len(),
        ..Counts::default()
    };
    let mut violations = Vec::new();

    let mut refused = Rule::new("creations refused by a gateway whose broker was live");
    for creation in &records.creations {
        let hurt = gateway_hurt(creation, windows);
        match (&creation.outcome, hurt) {
            (Ok(_), false) => counts.acknowledged += 1,
            (Ok(_), true) => {
                counts.acknowledged += 1;
                counts.acknowledged_hurt_gateway += 1;
            }
            (Err(refusal), true) => {
                counts.failed_hurt_gateway += 1;
                *counts
                    .failed_hurt_codes
                    .entry(refusal.code_name())
                    .or_default() += 1;
            }
            (Err(refusal), false) => {
                counts.refused_live += 1;
                refused.broken(|| {
                    let hurt_then: Vec<usize> = windows
                        .iter()
                        .filter(|w| creation.sent <= w.end && creation.answered >= w.start)
                        .map(|w| w.broker)
                        .collect();
                    format!(
                        "creation {} through broker {}'s gateway, sent {} answered {}: {} {:?} \
                         (brokers down or frozen meanwhile: {hurt_then:?})",
                        creation.id,
                        creation.gateway,
                        at(origin, creation.sent),
                        at(origin, creation.answered),
                        refusal.code_name(),
                        refusal.message
                    )
                });
            }
        }
    }
    refused.report(&mut violations);

    check_jobs(records, origin, &mut counts, &mut violations);
    Verdict { counts, violations }
}

/// The rules about instances, jobs and completions.
fn check_jobs(
    records: &Records,
    origin: Instant,
    counts: &mut Counts,
    violations: &mut Vec<String>,
) {
    let acked: HashMap<i64, &Creation> = records
        .creations
        .iter()
        .filter_map(|creation| creation.outcome.as_ref().ok().map(|&key| (key, creation)))
        .collect();
    let job_keys: HashSet<i64> = records.activations.iter().map(|a| a.job_key).collect();
    counts.jobs_activated = job_keys.len();
    counts.handouts = records.activations.len();
    counts.completion_attempts_unknown = records
        .completions
        .iter()
        .filter(|attempt| attempt.outcome.is_err() && may_have_run(&attempt.outcome))
        .count();
    check_instances(records, &acked, counts, violations);
    check_completions(records, origin, counts, violations);
    check_unfinished(records, &acked, origin, violations);
}

/// Each instance's jobs carry its creation's variable, and no creation made two instances.
fn check_instances(
    records: &Records,
    acked: &HashMap<i64, &Creation>,
    counts: &mut Counts,
    violations: &mut Vec<String>,
) {
    let acked_ids: HashMap<u64, i64> = acked.iter().map(|(&key, c)| (c.id, key)).collect();
    let mut identity = Rule::new("jobs carrying another creation's variable than their instance's");
    let mut duplicates = Rule::new("creations that made more than one instance");
    let mut instances_of: BTreeMap<u64, HashSet<i64>> = BTreeMap::new();
    for activation in &records.activations {
        if let Some(creation) = acked.get(&activation.instance_key)
            && activation.creation != Some(creation.id)
        {
            identity.broken(|| {
                format!(
                    "job {} of instance {} (creation {}) carries creation {:?}",
                    activation.job_key, activation.instance_key, creation.id, activation.creation
                )
            });
        }
        if let Some(id) = activation.creation {
            instances_of
                .entry(id)
                .or_default()
                .insert(activation.instance_key);
        }
    }
    for (id, instances) in &instances_of {
        if !acked_ids.contains_key(id) {
            counts.instances_of_unacknowledged += instances.len();
        }
        if instances.len() > 1 {
            duplicates.broken(|| {
                format!(
                    "creation {id} (acknowledged as {:?}) made instances {instances:?}",
                    acked_ids.get(id)
                )
            });
        }
    }
    identity.report(violations);
    duplicates.report(violations);
}

/// How each job's completion is known; `NOT_FOUND` that nothing explains; jobs handed out by an
/// activation sent after their completion was known (a lost completion).
fn check_completions(
    records: &Records,
    origin: Instant,
    counts: &mut Counts,
    violations: &mut Vec<String>,
) {
    let mut vanished = Rule::new("jobs answered NOT_FOUND that no completion could have removed");
    let mut known_at: HashMap<i64, (Completed, &CompletionAttempt)> = HashMap::new();
    for (job_key, attempts) in attempts_by_job(records) {
        let (known, unexplained) = judge_job(&attempts);
        for attempt in unexplained {
            vanished.broken(|| {
                format!(
                    "job {job_key} of instance {}: completion through broker {}'s gateway sent {} \
                     answered {} NOT_FOUND, with no other completion of it sent before",
                    attempt.instance_key,
                    attempt.gateway,
                    at(origin, attempt.sent),
                    at(origin, attempt.answered)
                )
            });
        }
        if let Some((how, attempt)) = known {
            match how {
                Completed::Acknowledged => counts.completed_acknowledged += 1,
                Completed::Gone => counts.completed_gone += 1,
            }
            known_at.insert(job_key, (how, attempt));
        }
    }
    vanished.report(violations);

    let mut lost = Rule::new("jobs handed out again after their completion was acknowledged");
    for activation in &records.activations {
        if let Some((how, attempt)) = known_at.get(&activation.job_key)
            && activation.requested > attempt.answered
        {
            lost.broken(|| {
                format!(
                    "job {} of instance {}: completion answered {} at {} (through broker {}'s \
                     gateway); handed out through broker {}'s gateway by an activation sent at {}",
                    activation.job_key,
                    activation.instance_key,
                    match how {
                        Completed::Acknowledged => "OK",
                        Completed::Gone => "NOT_FOUND",
                    },
                    at(origin, attempt.answered),
                    attempt.gateway,
                    activation.gateway,
                    at(origin, activation.requested)
                )
            });
        }
    }
    lost.report(violations);
}

/// Acknowledged creations whose job's completion is not known.
fn check_unfinished(
    records: &Records,
    acked: &HashMap<i64, &Creation>,
    origin: Instant,
    violations: &mut Vec<String>,
) {
    let done = completed_instances(records);
    let handed_out: HashSet<i64> = records.activations.iter().map(|a| a.instance_key).collect();
    let mut unfinished = Rule::new("acknowledged creations whose job was not completed");
    let mut missing: Vec<(i64, &Creation)> = acked
        .iter()
        .filter(|(key, _)| !done.contains_key(key))
        .map(|(&key, &creation)| (key, creation))
        .collect();
    missing.sort_by_key(|(_, creation)| creation.id);
    for (key, creation) in missing {
        unfinished.broken(|| {
            format!(
                "creation {} through broker {}'s gateway acknowledged at {} as instance {key} \
                 (partition {}); its job was {}",
                creation.id,
                creation.gateway,
                at(origin, creation.answered),
                sluice_engine::record::key_partition(key),
                if handed_out.contains(&key) {
                    "handed out but no completion of it is known"
                } else {
                    "never handed out"
                }
            )
        });
    }
    unfinished.report(violations);
}

/// The counts as report lines.
#[must_use]
pub fn describe(counts: &Counts) -> Vec<String> {
    vec![
        format!(
            "creations: {} attempted, {} acknowledged, {} refused by a live gateway, {} failed at \
             a gateway whose broker was down or frozen {:?} ({} more were acknowledged across \
             such a window)",
            counts.attempted,
            counts.acknowledged,
            counts.refused_live,
            counts.failed_hurt_gateway,
            counts.failed_hurt_codes,
            counts.acknowledged_hurt_gateway
        ),
        format!(
            "jobs: {} activated ({} hand-outs, {} failed activation calls), {} completed with OK, \
             {} known completed from NOT_FOUND after an unanswered attempt; {} completion \
             attempts, {} of them unanswered or unavailable and sent again",
            counts.jobs_activated,
            counts.handouts,
            counts.failed_activations,
            counts.completed_acknowledged,
            counts.completed_gone,
            counts.completion_attempts,
            counts.completion_attempts_unknown
        ),
        format!(
            "instances of creations not acknowledged (they took effect): {}",
            counts.instances_of_unacknowledged
        ),
    ]
}

#[cfg(test)]
mod planted {
    //! Each rule catches the bug it is there for, on made-up records.

    use std::time::{Duration, Instant};

    use tonic::Code;

    use super::{Window, judge, pending};
    use crate::workload::{Activation, CompletionAttempt, Creation, Records, Refusal};

    fn at(origin: Instant, ms: u64) -> Instant {
        origin + Duration::from_millis(ms)
    }

    fn refusal(code: Code) -> Refusal {
        Refusal {
            code: Some(code),
            message: "planted".to_owned(),
        }
    }

    /// Creation `id` through gateway 0, sent at `ms`, answered 10 ms later.
    fn creation(origin: Instant, id: u64, ms: u64, outcome: Result<i64, Refusal>) -> Creation {
        Creation {
            id,
            gateway: 0,
            sent: at(origin, ms),
            answered: at(origin, ms + 10),
            outcome,
        }
    }

    fn activation(
        origin: Instant,
        ms: u64,
        job_key: i64,
        instance_key: i64,
        id: u64,
    ) -> Activation {
        Activation {
            gateway: 1,
            requested: at(origin, ms),
            job_key,
            instance_key,
            creation: Some(id),
        }
    }

    fn completion(
        origin: Instant,
        ms: u64,
        job_key: i64,
        instance_key: i64,
        outcome: Result<(), Refusal>,
    ) -> CompletionAttempt {
        CompletionAttempt {
            gateway: 2,
            job_key,
            instance_key,
            sent: at(origin, ms),
            answered: at(origin, ms + 10),
            outcome,
        }
    }

    /// Creation 1 → instance 100, job 1000, completed OK; creation 2 → instance 200, job 2000,
    /// whose first completion went unanswered and the second found the job gone.
    fn clean(origin: Instant) -> Records {
        Records {
            creations: vec![
                creation(origin, 1, 0, Ok(100)),
                creation(origin, 2, 5, Ok(200)),
            ],
            activations: vec![
                activation(origin, 20, 1000, 100, 1),
                activation(origin, 20, 2000, 200, 2),
            ],
            completions: vec![
                completion(origin, 40, 1000, 100, Ok(())),
                completion(origin, 40, 2000, 200, Err(refusal(Code::DeadlineExceeded))),
                completion(origin, 60, 2000, 200, Err(refusal(Code::NotFound))),
            ],
            failed_activations: 0,
        }
    }

    fn broken_rules(records: &Records, windows: &[Window], origin: Instant) -> Vec<String> {
        judge(records, windows, origin)
            .violations
            .iter()
            .map(|violation| violation.split(" (").next().unwrap_or_default().to_owned())
            .collect()
    }

    #[test]
    fn a_clean_history_breaks_nothing() {
        let origin = Instant::now();
        let records = clean(origin);
        assert!(pending(&records).is_empty());
        let verdict = judge(&records, &[], origin);
        assert!(verdict.violations.is_empty(), "{:?}", verdict.violations);
        assert_eq!(verdict.counts.acknowledged, 2);
        assert_eq!(verdict.counts.completed_acknowledged, 1);
        assert_eq!(verdict.counts.completed_gone, 1);
    }

    #[test]
    fn a_refusal_counts_against_the_gateway_only_while_its_broker_is_live() {
        let origin = Instant::now();
        let mut records = clean(origin);
        records.creations.push(creation(
            origin,
            3,
            100,
            Err(refusal(Code::DeadlineExceeded)),
        ));
        assert_eq!(
            broken_rules(&records, &[], origin),
            ["creations refused by a gateway whose broker was live"]
        );
        let hurt = Window {
            broker: 0,
            start: at(origin, 105),
            end: at(origin, 500),
        };
        let verdict = judge(&records, &[hurt], origin);
        assert!(verdict.violations.is_empty(), "{:?}", verdict.violations);
        assert_eq!(verdict.counts.failed_hurt_gateway, 1);
        let elsewhere = Window { broker: 1, ..hurt };
        assert_eq!(broken_rules(&records, &[elsewhere], origin).len(), 1);
    }

    #[test]
    fn an_acknowledged_creation_without_a_completed_job_is_caught() {
        let origin = Instant::now();
        let mut records = clean(origin);
        records.creations.push(creation(origin, 3, 100, Ok(300)));
        assert_eq!(pending(&records).len(), 1);
        records
            .activations
            .push(activation(origin, 120, 3000, 300, 3));
        records.completions.push(completion(
            origin,
            130,
            3000,
            300,
            Err(refusal(Code::Unavailable)),
        ));
        assert_eq!(pending(&records).len(), 1);
        assert_eq!(
            broken_rules(&records, &[], origin),
            ["acknowledged creations whose job was not completed"]
        );
    }

    #[test]
    fn a_lost_completion_is_caught() {
        let origin = Instant::now();
        let mut records = clean(origin);
        // Job 1000's completion was answered OK at 50 ms; an activation sent later gets it.
        records
            .activations
            .push(activation(origin, 51, 1000, 100, 1));
        assert_eq!(
            broken_rules(&records, &[], origin),
            ["jobs handed out again after their completion was acknowledged"]
        );
        // Sent before that answer, the activation may hand it out: not a loss.
        let mut records = clean(origin);
        records
            .activations
            .push(activation(origin, 49, 1000, 100, 1));
        assert!(broken_rules(&records, &[], origin).is_empty());
    }

    #[test]
    fn a_job_gone_without_a_completion_is_caught() {
        let origin = Instant::now();
        let mut records = clean(origin);
        records.completions.remove(1);
        assert_eq!(
            broken_rules(&records, &[], origin),
            [
                "jobs answered NOT_FOUND that no completion could have removed",
                "acknowledged creations whose job was not completed"
            ]
        );
    }

    #[test]
    fn two_instances_of_one_creation_are_caught() {
        let origin = Instant::now();
        let mut records = clean(origin);
        records
            .activations
            .push(activation(origin, 30, 4000, 400, 1));
        records
            .completions
            .push(completion(origin, 40, 4000, 400, Ok(())));
        assert_eq!(
            broken_rules(&records, &[], origin),
            ["creations that made more than one instance"]
        );
    }

    #[test]
    fn a_job_with_another_creations_variable_is_caught() {
        let origin = Instant::now();
        let mut records = clean(origin);
        records.activations[1].creation = Some(1);
        let rules = broken_rules(&records, &[], origin);
        assert!(
            rules.contains(
                &"jobs carrying another creation's variable than their instance's".to_owned()
            ),
            "{rules:?}"
        );
    }
}
