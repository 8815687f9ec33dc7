//! Snapshots of engine states built by driving real engines: canonical round trips, replicas
//! that replayed the log encode to the leader's bytes, a decoded state keeps processing like the
//! original, and damaged snapshots are errors, never panics.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

use proptest::prelude::*;
use sluice_engine::record::{
    DeploymentResource, DeploymentValue, JobBatchValue, JobValue, MessageValue,
    ProcessInstanceCreationValue,
};
use sluice_engine::snapshot::{
    SNAPSHOT_HEADER_BYTES, SnapshotError, decode_snapshot, encode_snapshot,
};
use sluice_engine::state::State;
use sluice_engine::{
    Engine, EngineConfig, Intent, Key, Output, Record, RecordValue, SideEffect,
    subscription_partition,
};

const START_MS: i64 = 1_700_000_000_000;

fn bpmn(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/bpmn")
        .join(name);
    std::fs::read_to_string(&path).expect("the test BPMN file exists")
}

fn deployment(resources: &[(&str, String)]) -> Record {
    Record::command(
        Intent::Create,
        RecordValue::Deployment(DeploymentValue {
            resources: resources
                .iter()
                .map(|(name, xml)| DeploymentResource {
                    resource_name: (*name).to_owned(),
                    resource: xml.clone().into(),
                })
                .collect(),
            processes_metadata: vec![],
        }),
    )
}

fn create_instance(bpmn_process_id: &str, variables: &str) -> Record {
    Record::command(
        Intent::Create,
        RecordValue::ProcessInstanceCreation(ProcessInstanceCreationValue {
            bpmn_process_id: bpmn_process_id.into(),
            version: -1,
            process_definition_key: -1,
            variables: variables.into(),
            ..Default::default()
        }),
    )
}

fn activate(job_type: &str, max_jobs_to_activate: i32) -> Record {
    Record::command(
        Intent::Activate,
        RecordValue::JobBatch(JobBatchValue {
            job_type: job_type.into(),
            worker: "w".into(),
            timeout: 60_000,
            max_jobs_to_activate,
            ..Default::default()
        }),
    )
}

fn job_command(key: Key, intent: Intent, value: JobValue) -> Record {
    Record::command_for(key, intent, RecordValue::Job(value))
}

fn publish(name: &str, correlation_key: &str, time_to_live: i64, variables: &str) -> Record {
    Record::command(
        Intent::Publish,
        RecordValue::Message(MessageValue {
            name: name.into(),
            correlation_key: correlation_key.into(),
            time_to_live,
            variables: variables.into(),
            ..Default::default()
        }),
    )
}

/// The job keys a batch of records activated.
fn activated_jobs(records: &[Record]) -> Vec<Key> {
    records
        .iter()
        .filter(|record| record.intent == Intent::Activated)
        .filter_map(|record| match &record.value {
            RecordValue::JobBatch(batch) => Some(batch.job_keys.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// Engines of every partition with their logs; cross-partition commands wait in `in_flight`
/// until delivered.
struct Cluster {
    engines: Vec<Engine>,
    logs: Vec<Vec<Record>>,
    in_flight: VecDeque<(u32, Record)>,
    now_ms: i64,
    next_request: u64,
}

impl Cluster {
    fn new(partition_count: u32) -> Self {
        Self {
            engines: (1..=partition_count)
                .map(|id| Engine::new(EngineConfig::new(id, partition_count)))
                .collect(),
            logs: (1..=partition_count).map(|_| Vec::new()).collect(),
            in_flight: VecDeque::new(),
            now_ms: START_MS,
            next_request: 1,
        }
    }

    fn index(partition_id: u32) -> usize {
        usize::try_from(partition_id - 1).expect("partition index fits usize")
    }

    /// Processes one command on a partition; returns the records it wrote.
    fn submit(&mut self, partition_id: u32, command: Record) -> Vec<Record> {
        let mut out = Output::default();
        let request = self.next_request;
        self.next_request += 1;
        let index = Self::index(partition_id);
        self.engines[index].process(command, Some(request), self.now_ms, &mut out);
        self.absorb(index, &out);
        out.records
    }

    fn absorb(&mut self, index: usize, out: &Output) {
        self.logs[index].extend(out.records.iter().cloned());
        for effect in &out.side_effects {
            if let SideEffect::Send {
                partition_id,
                record,
            } = effect
            {
                self.in_flight.push_back((*partition_id, record.clone()));
            }
        }
    }

    /// Delivers cross-partition commands until none is left.
    fn deliver_all(&mut self) {
        while let Some((partition_id, record)) = self.in_flight.pop_front() {
            let mut out = Output::default();
            let index = Self::index(partition_id);
            self.engines[index].process(record, None, self.now_ms, &mut out);
            self.absorb(index, &out);
        }
    }

    fn state(&self, partition_id: u32) -> &State {
        self.engines[Self::index(partition_id)].state()
    }

    /// A replica of a partition rebuilt by replaying its log.
    fn follower(&self, partition_id: u32) -> Engine {
        let index = Self::index(partition_id);
        let mut follower = Engine::new(self.engines[index].config().clone());
        for record in &self.logs[index] {
            follower.replay(record);
        }
        follower
    }
}

/// The derived indexes of a state, in comparable form.
fn indexes(state: &State) -> String {
    let activatable: BTreeMap<String, &BTreeSet<Key>> = state
        .activatable
        .iter()
        .map(|(job_type, keys)| (job_type.to_string(), keys))
        .collect();
    let process_versions: BTreeMap<&String, &Vec<(i32, Key)>> =
        state.process_versions.iter().collect();
    let messages: BTreeMap<&(String, String), &Vec<Key>> =
        state.messages_by_correlation.iter().collect();
    let subscriptions: BTreeMap<&(String, String), &Vec<Key>> =
        state.subscriptions_by_correlation.iter().collect();
    format!(
        "partition {} next {}\nactivatable {activatable:?}\ndeadlines {:?}\nbackoffs {:?}\n\
         versions {process_versions:?}\nmessages {messages:?}\nmessage deadlines {:?}\n\
         subscriptions {subscriptions:?}\ntimers {:?}",
        state.partition_id,
        state.next_key_counter,
        state.job_deadlines,
        state.job_backoffs,
        state.message_deadlines,
        state.timer_due,
    )
}

/// Round-trips a state and checks the snapshot is canonical and the indexes are rebuilt
/// exactly as the appliers kept them.
fn assert_round_trip(state: &State) -> Vec<u8> {
    let bytes = encode_snapshot(state);
    assert_eq!(encode_snapshot(state), bytes, "encoding is deterministic");
    let decoded = decode_snapshot(&bytes).expect("a fresh snapshot decodes");
    assert_eq!(
        encode_snapshot(&decoded),
        bytes,
        "re-encoding gives the same bytes"
    );
    assert_eq!(
        indexes(&decoded),
        indexes(state),
        "indexes are rebuilt as kept"
    );
    assert_eq!(decoded.processes.len(), state.processes.len());
    assert_eq!(
        decoded.element_instances.len(),
        state.element_instances.len()
    );
    for (key, process) in &state.processes {
        let restored = &decoded.processes[key];
        assert_eq!(restored.model, process.model);
        assert_eq!(restored.element_ids, process.element_ids);
    }
    for (scope, variables) in &state.variables {
        for (name, variable) in variables {
            let restored = &decoded.variables[scope][name];
            assert_eq!(restored.key, variable.key);
            assert_eq!(restored.value, variable.value, "variable {name} is exact");
        }
    }
    bytes
}

/// A two-partition cluster in a state with something of everything: two versions of a
/// process, a pending distribution, waiting instances, activatable, activated, failed and
/// backing-off jobs, an incident, a waiting parallel join, message subscriptions on both sides,
/// buffered messages, a message start subscription and timers.
fn rich_cluster() -> Cluster {
    let mut cluster = Cluster::new(2);
    cluster.submit(
        1,
        deployment(&[
            ("one_task.bpmn", bpmn("one_task.bpmn")),
            ("messages.bpmn", bpmn("messages.bpmn")),
            ("parallel.bpmn", bpmn("parallel.bpmn")),
            ("message_start.bpmn", bpmn("message_start.bpmn")),
            ("timers.bpmn", bpmn("timers.bpmn")),
        ]),
    );
    cluster.deliver_all();
    cluster.now_ms += 10;
    for variables in [
        r#"{"a":1}"#,
        r#"{"a":2,"f":0.30000000000000004,"tiny":1e-7,"neg":-5}"#,
        r#"{"nested":{"z":[1,-2,3.5,null,true,"s"],"a":{}},"big":18446744073709551615}"#,
        r#"{"a":4}"#,
        r#"{"a":5}"#,
    ] {
        let records = cluster.submit(1, create_instance("one_task", variables));
        assert!(
            records.iter().all(|record| record.rejection.is_none()),
            "instance created: {records:?}"
        );
    }
    cluster.now_ms += 10;
    let jobs = activated_jobs(&cluster.submit(1, activate("work", 3)));
    assert_eq!(jobs.len(), 3, "three jobs activated");
    cluster.submit(
        1,
        job_command(
            jobs[0],
            Intent::Fail,
            JobValue {
                retries: 0,
                error_message: "boom".into(),
                ..Default::default()
            },
        ),
    );
    cluster.submit(
        1,
        job_command(
            jobs[1],
            Intent::Fail,
            JobValue {
                retries: 2,
                retry_backoff: 30_000,
                ..Default::default()
            },
        ),
    );
    // A parallel instance with one branch done: a token waits at the join.
    cluster.submit(1, create_instance("parallel", "{}"));
    let charge = activated_jobs(&cluster.submit(1, activate("charge", 1)));
    assert_eq!(charge.len(), 1);
    cluster.submit(
        1,
        job_command(charge[0], Intent::Complete, JobValue::default()),
    );
    // Instances waiting for messages, correlated on both partitions.
    for order in ["o-1", "o-2", "o-3"] {
        cluster.submit(
            1,
            create_instance(
                "messages",
                &format!(r#"{{"orderId":"{order}","region":"eu"}}"#),
            ),
        );
    }
    cluster.deliver_all();
    cluster.now_ms += 10;
    for (name, key) in [("payment", "nobody"), ("payment", "nobody"), ("other", "x")] {
        let partition = subscription_partition(key, 2);
        cluster.submit(partition, publish(name, key, 3_600_000, r#"{"amount":10}"#));
    }
    cluster.deliver_all();
    // A new version whose distribution to partition 2 is still in flight.
    let v2 = bpmn("one_task.bpmn").replace("name=\"One task\"", "name=\"One task v2\"");
    cluster.submit(1, deployment(&[("one_task.bpmn", v2)]));
    cluster
}

#[test]
fn empty_state_round_trips() {
    for partition_id in [1, 2, 7] {
        let state = State::new(partition_id);
        let bytes = assert_round_trip(&state);
        let decoded = decode_snapshot(&bytes).expect("decodes");
        assert_eq!(decoded.partition_id, partition_id);
        assert_eq!(decoded.next_key_counter, 1);
    }
}

#[test]
fn deployed_state_round_trips() {
    let mut cluster = Cluster::new(1);
    let records = cluster.submit(1, deployment(&[("one_task.bpmn", bpmn("one_task.bpmn"))]));
    assert!(records.iter().all(|record| record.rejection.is_none()));
    assert_eq!(cluster.state(1).processes.len(), 1);
    assert_round_trip(cluster.state(1));
}

#[test]
fn rich_states_round_trip() {
    let cluster = rich_cluster();
    let state = cluster.state(1);
    // The scenario reached what it means to cover.
    assert!(state.process_versions["one_task"].len() == 2);
    assert!(!state.pending_distributions.is_empty());
    assert!(!state.activatable.is_empty());
    assert!(!state.job_deadlines.is_empty());
    assert!(!state.job_backoffs.is_empty());
    assert!(!state.incidents.is_empty());
    assert!(!state.timers.is_empty());
    assert!(!state.message_start_subscriptions.is_empty());
    assert!(!state.process_subscriptions.is_empty());
    assert!(
        state
            .element_instances
            .values()
            .any(|instance| !instance.join_tokens.is_empty()),
        "a token waits at the join"
    );
    let all = |f: fn(&State) -> usize| f(cluster.state(1)) + f(cluster.state(2));
    assert!(all(|s| s.messages.len()) >= 3, "messages are buffered");
    assert!(all(|s| s.message_subscriptions.len()) >= 3);
    for partition_id in [1, 2] {
        assert_round_trip(cluster.state(partition_id));
    }
}

#[test]
fn replayed_followers_encode_to_the_leaders_bytes() {
    let cluster = rich_cluster();
    for partition_id in [1, 2] {
        let follower = cluster.follower(partition_id);
        assert_eq!(
            indexes(follower.state()),
            indexes(cluster.state(partition_id))
        );
        assert!(
            encode_snapshot(follower.state()) == encode_snapshot(cluster.state(partition_id)),
            "partition {partition_id}: the follower's snapshot differs from the leader's"
        );
    }
}

/// Runs the same commands on two engines; returns both outputs.
fn run_both(
    original: &mut Engine,
    restored: &mut Engine,
    command: &Record,
    now_ms: i64,
) -> (Output, Output) {
    let mut a = Output::default();
    let mut b = Output::default();
    original.process(command.clone(), Some(99), now_ms, &mut a);
    restored.process(command.clone(), Some(99), now_ms, &mut b);
    (a, b)
}

#[test]
fn a_decoded_state_keeps_processing_like_the_original() {
    let mut cluster = Cluster::new(1);
    cluster.submit(
        1,
        deployment(&[
            ("one_task.bpmn", bpmn("one_task.bpmn")),
            ("parallel.bpmn", bpmn("parallel.bpmn")),
        ]),
    );
    for a in 0..3 {
        cluster.submit(1, create_instance("one_task", &format!(r#"{{"a":{a}}}"#)));
    }
    cluster.submit(1, create_instance("parallel", r#"{"x":0.1}"#));
    let jobs = activated_jobs(&cluster.submit(1, activate("work", 2)));
    assert_eq!(jobs.len(), 2);
    let charge = activated_jobs(&cluster.submit(1, activate("charge", 1)));
    cluster.submit(
        1,
        job_command(charge[0], Intent::Complete, JobValue::default()),
    );

    let bytes = encode_snapshot(cluster.state(1));
    let decoded = decode_snapshot(&bytes).expect("decodes");
    let mut restored = Engine::with_state(EngineConfig::new(1, 1), decoded);
    let mut original = cluster.engines.remove(0);
    let now_ms = cluster.now_ms + 1_000;

    let complete = job_command(
        jobs[0],
        Intent::Complete,
        JobValue {
            variables: r#"{"result":"done","n":1.5}"#.into(),
            ..Default::default()
        },
    );
    let (a, b) = run_both(&mut original, &mut restored, &complete, now_ms);
    assert!(
        a.records
            .iter()
            .any(|r| r.intent == Intent::ElementCompleted)
    );
    assert_eq!(
        a.records, b.records,
        "completing a job writes the same records"
    );
    assert_eq!(a.side_effects, b.side_effects);

    let pack = activate("pack", 5);
    let (a, b) = run_both(&mut original, &mut restored, &pack, now_ms + 1);
    assert_eq!(a.records, b.records, "activating writes the same records");
    let pack_jobs = activated_jobs(&a.records);
    assert_eq!(pack_jobs.len(), 1);
    let complete_pack = job_command(pack_jobs[0], Intent::Complete, JobValue::default());
    let (a, b) = run_both(&mut original, &mut restored, &complete_pack, now_ms + 2);
    assert_eq!(a.records, b.records, "the join completes the same way");
    assert_eq!(
        encode_snapshot(original.state()),
        encode_snapshot(restored.state())
    );

    // Past the activation timeout: both time the other job out alike.
    let late_ms = now_ms + 3_600_000;
    assert_eq!(original.next_deadline_ms(), restored.next_deadline_ms());
    let mut a = Output::default();
    let mut b = Output::default();
    original.tick(late_ms, &mut a);
    restored.tick(late_ms, &mut b);
    assert!(a.records.iter().any(|r| r.intent == Intent::TimedOut));
    assert_eq!(a.records, b.records, "ticks write the same records");
    assert_eq!(a.side_effects, b.side_effects);
    assert_eq!(
        encode_snapshot(original.state()),
        encode_snapshot(restored.state())
    );
}

#[test]
fn every_single_byte_flip_and_truncation_is_an_error() {
    let cluster = rich_cluster();
    let bytes = encode_snapshot(cluster.state(1));
    for at in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x5a;
        assert!(decode_snapshot(&damaged).is_err(), "flip at byte {at}");
    }
    for len in 0..bytes.len() {
        match decode_snapshot(&bytes[..len]) {
            Err(SnapshotError::Truncated { expected, actual }) => {
                assert_eq!(actual, u64::try_from(len).expect("fits"));
                assert!(expected > actual);
            }
            other => panic!("truncated to {len}: {other:?}"),
        }
    }
    let mut magic = bytes.clone();
    magic[0] = b'X';
    assert!(matches!(
        decode_snapshot(&magic),
        Err(SnapshotError::BadMagic)
    ));
    let mut payload = bytes;
    let last = payload.len() - 1;
    payload[last] ^= 1;
    assert!(matches!(
        decode_snapshot(&payload),
        Err(SnapshotError::ChecksumMismatch { .. })
    ));
}

#[test]
fn an_unparsable_resource_is_invalid_not_a_panic() {
    let mut cluster = Cluster::new(1);
    cluster.submit(1, deployment(&[("one_task.bpmn", bpmn("one_task.bpmn"))]));
    let bytes = encode_snapshot(cluster.state(1));
    // Break the XML inside the payload (same length), then fix both checksums.
    let needle = b"<bpmn:serviceTask";
    let at = bytes
        .windows(needle.len())
        .position(|window| window == needle)
        .expect("the resource is in the snapshot");
    let mut damaged = bytes.clone();
    damaged[at + 1] = b'!';
    let damaged = with_fixed_checksums(damaged);
    assert!(matches!(
        decode_snapshot(&damaged),
        Err(SnapshotError::Invalid(_))
    ));
}

/// Recomputes the payload and header checksums of a (damaged) snapshot.
fn with_fixed_checksums(mut bytes: Vec<u8>) -> Vec<u8> {
    let payload_crc = crc32c::crc32c(&bytes[SNAPSHOT_HEADER_BYTES..]);
    bytes[16..20].copy_from_slice(&payload_crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&bytes[..20]);
    bytes[20..24].copy_from_slice(&header_crc.to_le_bytes());
    bytes
}

fn rich_snapshot() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| encode_snapshot(rich_cluster().state(1)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random flips and a truncation: an error, or (a flip back to the same byte) the same
    /// state; never a panic.
    #[test]
    fn damaged_snapshots_are_errors(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let original = rich_snapshot();
        let mut bytes = original.to_vec();
        for (at, mask) in &flips {
            bytes[at.index(original.len())] ^= mask;
        }
        if truncate {
            bytes.truncate(cut.index(original.len()));
        }
        match decode_snapshot(&bytes) {
            Ok(state) => {
                prop_assert_eq!(&bytes[..], original);
                prop_assert_eq!(encode_snapshot(&state), original.to_vec());
            }
            Err(_) => prop_assert!(bytes != original),
        }
    }

    /// Damage behind valid checksums (a writer bug): the checked archive and the content checks
    /// turn it into an error or a state that encodes again; never a panic.
    #[test]
    fn damage_behind_valid_checksums_never_panics(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let original = rich_snapshot();
        let payload_len = original.len() - SNAPSHOT_HEADER_BYTES;
        let mut bytes = original.to_vec();
        for (at, mask) in &flips {
            bytes[SNAPSHOT_HEADER_BYTES + at.index(payload_len)] ^= mask;
        }
        let bytes = with_fixed_checksums(bytes);
        if let Ok(state) = decode_snapshot(&bytes) {
            let again = encode_snapshot(&state);
            prop_assert!(decode_snapshot(&again).is_ok());
        }
    }
}

#[test]
fn snapshot_bytes_per_waiting_instance() {
    const INSTANCES: usize = 1_000;
    let mut cluster = Cluster::new(1);
    cluster.submit(1, deployment(&[("one_task.bpmn", bpmn("one_task.bpmn"))]));
    let deployed = encode_snapshot(cluster.state(1)).len();
    for _ in 0..INSTANCES {
        cluster.submit(1, create_instance("one_task", r#"{"a":1}"#));
    }
    let waiting = encode_snapshot(cluster.state(1)).len();
    let jobs = activated_jobs(&cluster.submit(1, activate("work", 1_000)));
    let activated = encode_snapshot(cluster.state(1)).len();
    println!(
        "snapshot: {deployed} bytes after deploying one_task; {} bytes per waiting one-task \
         instance (process instance, service task, job, one variable) over {INSTANCES}; {} more \
         bytes per activated job ({} activated)",
        (waiting - deployed) / INSTANCES,
        (activated - waiting) / jobs.len().max(1),
        jobs.len()
    );
    assert_round_trip(cluster.state(1));
}
