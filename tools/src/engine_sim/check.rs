//! What the engine simulation checks: the committed log of each partition, as seen by any
//! replica, and the engine states of the replicas at the end.
//!
//! [`CommittedLog`] records each partition's committed entries once, in order, as replicas report
//! them committed, and indexes the records the checks need: which process instances were
//! activated and completed, which jobs completed, which messages were published, and a
//! fingerprint of every record so an acknowledged response can be found in the log.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::rc::Rc;

use sluice_engine::record::{BpmnElementType, decode_records, encode_records};
use sluice_engine::state::State;
use sluice_engine::{Intent, Key, Record, RecordType, RecordValue};

use super::replica::payload_hash;

/// What the committed log says about one process instance.
#[derive(Debug, Clone, Default)]
pub(crate) struct InstanceFacts {
    pub(crate) bpmn_process_id: String,
    /// `ELEMENT_ACTIVATING` events of the process element with this key.
    pub(crate) activating: u32,
    pub(crate) completed: bool,
    /// The `key` variable it was created with (the message correlation key).
    pub(crate) correlation_key: Option<String>,
}

/// One partition's committed log and what the checks need from it.
#[derive(Debug, Default)]
pub(crate) struct CommittedLog {
    pub(crate) partition: u32,
    /// Entry `i` has index `i + 1`.
    payloads: Vec<Rc<[u8]>>,
    pub(crate) instances: BTreeMap<Key, InstanceFacts>,
    /// `ELEMENT_ACTIVATING` events per element instance key (any element).
    element_activating: HashMap<Key, u32>,
    pub(crate) jobs_created: HashMap<Key, u32>,
    pub(crate) jobs_completed: HashMap<Key, u32>,
    pub(crate) messages_published: HashMap<Key, u32>,
    /// Process message subscriptions correlated (a message reached an instance).
    pub(crate) messages_correlated: u64,
    /// How often each record (by fingerprint) was committed.
    fingerprints: HashMap<u64, u32>,
    /// The first problem found while indexing (a key used twice, an undecodable entry).
    pub(crate) problem: Option<String>,
}

/// A record's fingerprint: the hash of its encoding.
pub(crate) fn fingerprint(record: &Record) -> u64 {
    payload_hash(&encode_records(std::slice::from_ref(record))).unwrap_or(0)
}

impl CommittedLog {
    pub(crate) fn new(partition: u32) -> Self {
        Self {
            partition,
            ..Self::default()
        }
    }

    /// The committed entries known so far.
    pub(crate) fn len(&self) -> u64 {
        self.payloads.len() as u64
    }

    pub(crate) fn payloads(&self) -> &[Rc<[u8]>] {
        &self.payloads
    }

    /// Appends the entry at index `len() + 1`.
    pub(crate) fn push(&mut self, payload: Rc<[u8]>) {
        let index = self.len() + 1;
        if !payload.is_empty() {
            match decode_records(&payload) {
                Ok(records) => {
                    for record in &records {
                        self.index_record(index, record);
                    }
                }
                Err(e) => self.note_problem(format!(
                    "partition {}: committed entry {index} does not decode: {e}",
                    self.partition
                )),
            }
        }
        self.payloads.push(payload);
    }

    fn note_problem(&mut self, problem: String) {
        self.problem.get_or_insert(problem);
    }

    fn index_record(&mut self, index: u64, record: &Record) {
        *self.fingerprints.entry(fingerprint(record)).or_default() += 1;
        if record.record_type != RecordType::Event {
            return;
        }
        let partition = self.partition;
        match (&record.value, record.intent) {
            (RecordValue::ProcessInstance(value), Intent::ElementActivating) => {
                let seen = self.element_activating.entry(record.key).or_default();
                *seen += 1;
                if *seen > 1 {
                    let problem = format!(
                        "partition {partition}: key {} activated twice (element {:?}, entry {index})",
                        record.key, value.element_id
                    );
                    self.note_problem(problem);
                }
                if value.bpmn_element_type == BpmnElementType::Process {
                    let facts = self.instances.entry(record.key).or_default();
                    facts.activating += 1;
                    facts.bpmn_process_id.clone_from(&value.bpmn_process_id);
                }
            }
            (RecordValue::ProcessInstance(value), Intent::ElementCompleted)
                if value.bpmn_element_type == BpmnElementType::Process =>
            {
                self.instances.entry(record.key).or_default().completed = true;
            }
            (RecordValue::Variable(value), Intent::Created)
                if value.name == "key" && value.scope_key == value.process_instance_key =>
            {
                let key = serde_json::from_str::<serde_json::Value>(&value.value)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned));
                self.instances
                    .entry(value.process_instance_key)
                    .or_default()
                    .correlation_key = key;
            }
            (RecordValue::Job(_), Intent::Created) => {
                let seen = self.jobs_created.entry(record.key).or_default();
                *seen += 1;
                if *seen > 1 {
                    let problem = format!(
                        "partition {partition}: job key {} created twice (entry {index})",
                        record.key
                    );
                    self.note_problem(problem);
                }
            }
            (RecordValue::Job(_), Intent::Completed) => {
                *self.jobs_completed.entry(record.key).or_default() += 1;
            }
            (RecordValue::Message(_), Intent::Published) => {
                *self.messages_published.entry(record.key).or_default() += 1;
            }
            (RecordValue::ProcessMessageSubscription(_), Intent::Correlated) => {
                self.messages_correlated += 1;
            }
            _ => {}
        }
    }

    /// How often `record` is in the committed log.
    pub(crate) fn count(&self, record: &Record) -> u32 {
        self.fingerprints
            .get(&fingerprint(record))
            .copied()
            .unwrap_or(0)
    }

    /// The committed records that mention `key` or `text`, as JSON lines with their entry
    /// index (for failure messages).
    pub(crate) fn records_mentioning(&self, key: Key, text: &str, limit: usize) -> Vec<String> {
        let key_text = key.to_string();
        let mut lines = Vec::new();
        for (i, payload) in self.payloads.iter().enumerate() {
            if payload.is_empty() {
                continue;
            }
            let Ok(records) = decode_records(payload) else {
                continue;
            };
            for record in records {
                let line = record.to_json_line();
                if line.contains(&key_text) || (!text.is_empty() && line.contains(text)) {
                    lines.push(format!("p{} #{}: {line}", self.partition, i + 1));
                    if lines.len() >= limit {
                        return lines;
                    }
                }
            }
        }
        lines
    }

    /// Process instances activated but not completed.
    pub(crate) fn incomplete(&self) -> impl Iterator<Item = (&Key, &InstanceFacts)> {
        self.instances
            .iter()
            .filter(|(_, f)| f.activating > 0 && !f.completed)
    }
}

/// A text digest of an engine state: everything replay determines, in a stable order. Fields the
/// leader changes without writing a record (`resent_at_ms`, the time of the last re-send of a
/// cross-partition command) are left out: they differ between leader and followers by design.
#[expect(
    clippy::too_many_lines,
    reason = "one short paragraph per field of the state"
)]
pub(crate) fn state_digest(state: &State) -> String {
    let mut d = String::new();
    let _ = writeln!(
        d,
        "partition {} next_key_counter {}",
        state.partition_id, state.next_key_counter
    );
    let processes: BTreeSet<_> = state
        .processes
        .values()
        .map(|p| {
            (
                p.key,
                p.bpmn_process_id.to_string(),
                p.version,
                p.checksum.clone(),
            )
        })
        .collect();
    let _ = writeln!(d, "processes {processes:?}");
    let mut versions: Vec<_> = state.process_versions.iter().collect();
    versions.sort();
    let _ = writeln!(d, "process_versions {versions:?}");
    let deployments: BTreeSet<_> = state.deployments.iter().collect();
    let _ = writeln!(d, "deployments {deployments:?}");
    let pending: BTreeMap<_, _> = state
        .pending_distributions
        .iter()
        .map(|(k, p)| (k, (&p.partitions, format!("{:?}", p.deployment))))
        .collect();
    let _ = writeln!(d, "pending_distributions {pending:?}");
    let instances: BTreeMap<_, _> = state
        .element_instances
        .iter()
        .map(|(k, v)| (k, format!("{v:?}")))
        .collect();
    let _ = writeln!(d, "element_instances {} {instances:?}", instances.len());
    let variables: BTreeMap<_, BTreeMap<_, _>> = state
        .variables
        .iter()
        .map(|(scope, vars)| {
            (
                scope,
                vars.iter()
                    .map(|(n, v)| (n, (v.key, v.value.to_string())))
                    .collect(),
            )
        })
        .collect();
    let _ = writeln!(d, "variables {} {variables:?}", variables.len());
    let jobs: BTreeMap<_, _> = state
        .jobs
        .iter()
        .map(|(k, v)| (k, format!("{v:?}")))
        .collect();
    let _ = writeln!(d, "jobs {} {jobs:?}", jobs.len());
    let activatable: BTreeMap<_, _> = state
        .activatable
        .iter()
        .map(|(t, keys)| (t.to_string(), keys))
        .collect();
    let _ = writeln!(d, "activatable {activatable:?}");
    let _ = writeln!(d, "job_deadlines {:?}", state.job_deadlines);
    let _ = writeln!(d, "job_backoffs {:?}", state.job_backoffs);
    let incidents: BTreeMap<_, _> = state
        .incidents
        .iter()
        .map(|(k, v)| (k, format!("{v:?}")))
        .collect();
    let _ = writeln!(d, "incidents {} {incidents:?}", incidents.len());
    let messages: BTreeMap<_, _> = state
        .messages
        .iter()
        .map(|(k, v)| (k, format!("{v:?}")))
        .collect();
    let _ = writeln!(d, "messages {} {messages:?}", messages.len());
    let mut by_correlation: Vec<_> = state.messages_by_correlation.iter().collect();
    by_correlation.sort();
    let _ = writeln!(d, "messages_by_correlation {by_correlation:?}");
    let _ = writeln!(d, "message_deadlines {:?}", state.message_deadlines);
    let subscriptions: BTreeMap<_, _> = state
        .message_subscriptions
        .iter()
        .map(|(k, v)| (k, (format!("{:?}", v.value), v.correlating_message)))
        .collect();
    let _ = writeln!(
        d,
        "message_subscriptions {} {subscriptions:?}",
        subscriptions.len()
    );
    let mut subscriptions_by: Vec<_> = state.subscriptions_by_correlation.iter().collect();
    subscriptions_by.sort();
    let _ = writeln!(d, "subscriptions_by_correlation {subscriptions_by:?}");
    let process_subscriptions: BTreeMap<_, _> = state
        .process_subscriptions
        .iter()
        .map(|(k, v)| (k, (v.key, format!("{:?} {:?}", v.state, v.value))))
        .collect();
    let _ = writeln!(
        d,
        "process_subscriptions {} {process_subscriptions:?}",
        process_subscriptions.len()
    );
    let start_subscriptions: BTreeMap<_, _> = state
        .message_start_subscriptions
        .iter()
        .map(|(k, v)| (k, format!("{v:?}")))
        .collect();
    let _ = writeln!(d, "message_start_subscriptions {start_subscriptions:?}");
    let timers: BTreeMap<_, _> = state
        .timers
        .iter()
        .map(|(k, v)| (k, format!("{v:?}")))
        .collect();
    let _ = writeln!(d, "timers {} {timers:?}", timers.len());
    let _ = writeln!(d, "timer_due {:?}", state.timer_due);
    d
}

/// Where two digests first differ: the field's line, around the first differing character.
pub(crate) fn first_difference(a: &str, b: &str) -> String {
    for (line_a, line_b) in a.lines().zip(b.lines()) {
        if line_a != line_b {
            let at = line_a
                .chars()
                .zip(line_b.chars())
                .take_while(|(x, y)| x == y)
                .count();
            let field: String = line_a.chars().take_while(|c| *c != ' ').collect();
            let cut = |s: &str| {
                s.chars()
                    .skip(at.saturating_sub(200))
                    .take(500)
                    .collect::<String>()
            };
            return format!(
                "\n  field {field}, from character {}:\n  replica:  ...{}\n  expected: ...{}",
                at.saturating_sub(200),
                cut(line_a),
                cut(line_b)
            );
        }
    }
    "(digests differ in length)".to_owned()
}
