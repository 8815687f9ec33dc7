//! Arbitrary commands never panic an engine, and never split its replicas.
//!
//! Structurally valid command records (any value type, any intent, keys that exist, keys of
//! other partitions, keys far ahead or impossible, broken and oversized documents, forged
//! deployments) are fed to the engines of a two-partition cluster that already holds
//! deployments, instances, jobs, timers and subscriptions; commands between the partitions are
//! delivered and the clock moves. Afterwards a follower that replayed each partition's log must
//! encode to the leader's snapshot, byte for byte.

mod common;

use common::{
    Cluster, activate, create_instance, deployment, receive_task_process, service_task_process,
    timer_process,
};
use proptest::prelude::*;
use sluice_engine::record::{
    CommandDistributionValue, DeploymentResource, DeploymentValue, IncidentValue, JobBatchValue,
    JobValue, KEY_COUNTER_LIMIT, Key, MessageStartEventSubscriptionValue, MessageSubscriptionValue,
    MessageValue, ProcessInstanceCreationValue, ProcessInstanceValue,
    ProcessMessageSubscriptionValue, ProcessMetadata, ProcessValue, TimerValue,
    VariableDocumentValue, VariableValue, encode_key,
};
use sluice_engine::{Intent, Record, RecordType, RecordValue, ValueType};

const STRINGS: &[&str] = &[
    "", "work", "p", "t", "r", "paid", "order-1", "x", "m", "\u{0}",
];
const INTS: &[i64] = &[
    -1,
    0,
    1,
    3,
    1_000,
    60_000,
    2_147_483_647,
    i64::MAX,
    i64::MIN,
];

fn documents() -> Vec<String> {
    vec![
        String::new(),
        "{}".into(),
        r#"{"key":"order-1","x":1}"#.into(),
        r#"{"x":2,"y":{"z":[1,2,3]}}"#.into(),
        r#"{"key":"order-1"}"#.into(),
        "{not json".into(),
        "[1,2]".into(),
        "null".into(),
        format!(r#"{{"x":{}{}}}"#, "[".repeat(120), "]".repeat(120)),
        format!(r#"{{"x":"{}"}}"#, "y".repeat(5_000)),
    ]
}

/// Every intent, so that internal and nonsensical combinations are tried too.
const INTENTS: &[Intent] = &[
    Intent::Create,
    Intent::Created,
    Intent::FullyDistributed,
    Intent::CreateWithAwaitingResult,
    Intent::Update,
    Intent::Updated,
    Intent::ActivateElement,
    Intent::CompleteElement,
    Intent::TerminateElement,
    Intent::ElementActivating,
    Intent::ElementActivated,
    Intent::ElementCompleting,
    Intent::ElementCompleted,
    Intent::ElementTerminating,
    Intent::ElementTerminated,
    Intent::SequenceFlowTaken,
    Intent::Cancel,
    Intent::Complete,
    Intent::Completed,
    Intent::Fail,
    Intent::Failed,
    Intent::TimeOut,
    Intent::TimedOut,
    Intent::UpdateRetries,
    Intent::RetriesUpdated,
    Intent::UpdateTimeout,
    Intent::TimeoutUpdated,
    Intent::ThrowError,
    Intent::ErrorThrown,
    Intent::RecurAfterBackoff,
    Intent::RecurredAfterBackoff,
    Intent::Canceled,
    Intent::Activate,
    Intent::Activated,
    Intent::Publish,
    Intent::Published,
    Intent::Expire,
    Intent::Expired,
    Intent::Creating,
    Intent::Correlate,
    Intent::Correlating,
    Intent::Correlated,
    Intent::Delete,
    Intent::Deleting,
    Intent::Deleted,
    Intent::Reject,
    Intent::Rejected,
    Intent::Trigger,
    Intent::Triggered,
    Intent::Resolve,
    Intent::Resolved,
    Intent::Started,
    Intent::Distributing,
    Intent::Acknowledge,
    Intent::Acknowledged,
    Intent::Finished,
];

/// The random parts of one command; turned into a record against the cluster's current keys.
#[derive(Debug, Clone)]
struct Fields {
    kind: u8,
    /// `None`: the intent the kind's senders use; `Some(i)`: `INTENTS[i]`.
    intent: Option<usize>,
    partition: u32,
    key: u8,
    other_key: u8,
    text: usize,
    other_text: usize,
    document: usize,
    number: usize,
    other_number: usize,
    flag: bool,
    /// 0: the record claims to be an event; 1: its value type contradicts its value.
    lie: u8,
}

fn fields() -> impl Strategy<Value = Fields> {
    (
        // Mostly the value types commands have; now and then the ones only events have.
        prop_oneof![9 => 0..12_u8, 1 => 12..15_u8],
        prop::option::weighted(0.1, 0..INTENTS.len()),
        1..=2_u32,
        any::<u8>(),
        any::<u8>(),
        (0..STRINGS.len(), 0..STRINGS.len(), 0..10_usize),
        (0..INTS.len(), 0..INTS.len(), any::<bool>(), 0..40_u8),
    )
        .prop_map(
            |(kind, intent, partition, key, other_key, texts, numbers)| Fields {
                kind,
                intent,
                partition,
                key,
                other_key,
                text: texts.0,
                other_text: texts.1,
                document: texts.2,
                number: numbers.0,
                other_number: numbers.1,
                flag: numbers.2,
                lie: numbers.3,
            },
        )
}

/// The keys a command of `kind` most likely names on `partition` (the entities it is about),
/// sorted so that a pick is reproducible; every known key when there are none.
fn known_keys(cluster: &Cluster, partition: u32, kind: u8) -> Vec<Key> {
    let state = cluster.engine(partition).state();
    let mut keys: Vec<Key> = match kind {
        1 => state.processes.keys().copied().collect(),
        2 => state
            .element_instances
            .values()
            .filter(|instance| instance.flow_scope_key < 0)
            .map(|instance| instance.key)
            .collect(),
        3 => state.jobs.keys().copied().collect(),
        5 | 6 => state.messages.keys().copied().collect(),
        7 | 10 => state.element_instances.keys().copied().collect(),
        8 => state.timers.keys().copied().collect(),
        9 => state.incidents.keys().copied().collect(),
        11 => state.pending_distributions.keys().copied().collect(),
        _ => Vec::new(),
    };
    if keys.is_empty() {
        for engine in &cluster.engines {
            let state = engine.state();
            keys.extend(state.jobs.keys());
            keys.extend(state.element_instances.keys());
            keys.extend(state.incidents.keys());
            keys.extend(state.timers.keys());
            keys.extend(state.messages.keys());
            keys.extend(state.processes.keys());
        }
    }
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Mostly a key the state knows; otherwise one of the keys that must be refused.
fn pick_key(pick: u8, known: &[Key], cluster: &Cluster, partition: u32) -> Key {
    let next = cluster.engine(partition).state().next_key_counter;
    match pick % 24 {
        0 => -1,
        1 => 0,
        2 => (1_i64 << 51) | KEY_COUNTER_LIMIT,
        3 => encode_key(partition % 2 + 1, 3),
        4 => encode_key(9, 1),
        5 => i64::MAX,
        6 => encode_key(partition, next + 5),
        7 => encode_key(partition, KEY_COUNTER_LIMIT - 1),
        _ if known.is_empty() => -1,
        _ => known[usize::from(pick) % known.len()],
    }
}

#[expect(clippy::too_many_lines, reason = "one arm per value type")]
fn command(fields: &Fields, cluster: &Cluster, documents: &[String]) -> (u32, Record) {
    let partition = fields.partition;
    let known = known_keys(cluster, partition, fields.kind);
    let key = pick_key(fields.key, &known, cluster, partition);
    let other_key = pick_key(fields.other_key, &known, cluster, partition);
    let text = STRINGS[fields.text].to_owned();
    let other_text = STRINGS[fields.other_text].to_owned();
    let document = documents[fields.document].as_str();
    let number = INTS[fields.number];
    let other_number = INTS[fields.other_number];
    let int = |n: i64| i32::try_from(n).unwrap_or(-1);
    let (value, intent) = match fields.kind {
        0 => {
            let xml = match fields.text % 3 {
                0 => service_task_process(&text, ""),
                1 => "<broken".to_owned(),
                _ => service_task_process("p", "").replace(r#"type="work""#, r#"type="=1 +""#),
            };
            (
                RecordValue::Deployment(DeploymentValue {
                    resources: vec![DeploymentResource {
                        resource_name: format!("{other_text}.bpmn"),
                        resource: xml.into(),
                    }],
                    processes_metadata: if fields.flag {
                        vec![ProcessMetadata {
                            bpmn_process_id: text.clone(),
                            version: int(number),
                            process_definition_key: other_key,
                            resource_name: format!("{other_text}.bpmn"),
                            checksum: other_text.clone(),
                            duplicate: fields.flag,
                        }]
                    } else {
                        Vec::new()
                    },
                }),
                Intent::Create,
            )
        }
        1 => (
            RecordValue::ProcessInstanceCreation(ProcessInstanceCreationValue {
                bpmn_process_id: text,
                version: int(number),
                process_definition_key: other_key,
                process_instance_key: -1,
                variables: document.into(),
                fetch_variables: vec![other_text],
            }),
            if fields.flag {
                Intent::CreateWithAwaitingResult
            } else {
                Intent::Create
            },
        ),
        2 => (
            RecordValue::ProcessInstance(ProcessInstanceValue {
                element_id: text,
                flow_scope_key: other_key,
                process_instance_key: key,
                ..ProcessInstanceValue::default()
            }),
            Intent::Cancel,
        ),
        3 => {
            let intents = [
                Intent::Complete,
                Intent::Fail,
                Intent::ThrowError,
                Intent::UpdateRetries,
                Intent::UpdateTimeout,
                Intent::TimeOut,
                Intent::RecurAfterBackoff,
            ];
            (
                RecordValue::Job(JobValue {
                    job_type: text,
                    retries: int(number),
                    timeout: other_number,
                    retry_backoff: number,
                    error_code: other_text,
                    variables: document.into(),
                    element_instance_key: other_key,
                    ..JobValue::default()
                }),
                intents[fields.number % intents.len()],
            )
        }
        4 => (
            RecordValue::JobBatch(JobBatchValue {
                job_type: text,
                worker: other_text,
                timeout: number,
                max_jobs_to_activate: int(other_number),
                fetch_variables: Vec::new(),
                job_keys: vec![other_key],
                jobs: Vec::new(),
                truncated: fields.flag,
            }),
            Intent::Activate,
        ),
        5 => (
            RecordValue::Message(MessageValue {
                name: text,
                correlation_key: other_text,
                time_to_live: number,
                message_id: String::new(),
                variables: document.into(),
                deadline: other_number,
            }),
            if fields.flag {
                Intent::Publish
            } else {
                Intent::Expire
            },
        ),
        6 => (
            RecordValue::MessageSubscription(MessageSubscriptionValue {
                process_instance_key: other_key,
                element_instance_key: other_key,
                bpmn_process_id: text,
                message_name: other_text,
                correlation_key: "order-1".into(),
                message_key: key,
                variables: document.into(),
                interrupting: fields.flag,
            }),
            [
                Intent::Create,
                Intent::Correlate,
                Intent::Delete,
                Intent::Reject,
            ][fields.number % 4],
        ),
        7 => (
            RecordValue::ProcessMessageSubscription(ProcessMessageSubscriptionValue {
                subscription_partition_id: u32::try_from(number).unwrap_or(0),
                process_instance_key: other_key,
                element_instance_key: if fields.flag { key } else { other_key },
                bpmn_process_id: text,
                element_id: String::new(),
                message_name: other_text,
                correlation_key: "order-1".into(),
                message_key: other_key,
                variables: document.into(),
                interrupting: true,
            }),
            [Intent::Create, Intent::Correlate, Intent::Delete][fields.number % 3],
        ),
        8 => (
            RecordValue::Timer(TimerValue {
                element_instance_key: other_key,
                process_instance_key: other_key,
                process_definition_key: other_key,
                due_date: number,
                target_element_id: text,
                repetitions: int(other_number),
                interval: other_text,
            }),
            Intent::Trigger,
        ),
        9 => (
            RecordValue::Incident(IncidentValue {
                element_instance_key: other_key,
                job_key: other_key,
                ..IncidentValue::default()
            }),
            Intent::Resolve,
        ),
        10 => (
            RecordValue::VariableDocument(VariableDocumentValue {
                scope_key: other_key,
                local: fields.flag,
                variables: document.into(),
            }),
            Intent::Update,
        ),
        11 => (
            RecordValue::CommandDistribution(CommandDistributionValue {
                partition_id: u32::try_from(number).unwrap_or(2),
                value_type: Some(ValueType::Deployment),
            }),
            Intent::Acknowledge,
        ),
        12 => (
            RecordValue::Process(ProcessValue {
                bpmn_process_id: text,
                version: int(number),
                process_definition_key: key,
                resource_name: other_text,
                checksum: String::new(),
                resource: "<broken".into(),
            }),
            Intent::Create,
        ),
        13 => (
            RecordValue::Variable(VariableValue {
                name: text,
                value: document.into(),
                scope_key: other_key,
                ..VariableValue::default()
            }),
            Intent::Create,
        ),
        _ => (
            RecordValue::MessageStartEventSubscription(MessageStartEventSubscriptionValue {
                process_definition_key: other_key,
                bpmn_process_id: text,
                message_name: other_text,
                ..MessageStartEventSubscriptionValue::default()
            }),
            Intent::Correlate,
        ),
    };
    let mut record = Record::command_for(key, fields.intent.map_or(intent, |i| INTENTS[i]), value);
    // Now and then a record that lies about what it is.
    match fields.lie {
        0 => record.record_type = RecordType::Event,
        1 => record.value_type = ValueType::Timer,
        _ => {}
    }
    (partition, record)
}

/// A cluster with something of everything: processes on both partitions, instances waiting
/// on jobs, timers and messages, an incident.
fn populated() -> Cluster {
    let mut cluster = Cluster::new(2);
    let task = service_task_process("p", r#"<zeebe:output source="=x + 1" target="y" />"#);
    let timer = timer_process("t", "PT1M");
    let receive = receive_task_process("r", "paid");
    cluster.submit(
        1,
        deployment(&[("p.bpmn", &task), ("t.bpmn", &timer), ("r.bpmn", &receive)]),
    );
    cluster.deliver_all();
    for partition in 1..=2 {
        cluster.submit(partition, create_instance("p", r#"{"x":1}"#));
        cluster.submit(partition, create_instance("p", r#"{"x":"text"}"#));
        cluster.submit(partition, create_instance("t", ""));
        cluster.submit(partition, create_instance("r", r#"{"key":"order-1"}"#));
        cluster.deliver_all();
        let out = cluster.submit(partition, activate("work"));
        if let Some(job) = common::activated_jobs(&out).last() {
            // "text" + 1 is null: fine; a failure without retries opens an incident.
            let fail =
                Record::command_for(*job, Intent::Fail, RecordValue::Job(JobValue::default()));
            cluster.submit(partition, fail);
        }
    }
    cluster.deliver_all();
    cluster
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_commands_never_panic_and_replicas_agree(
        steps in prop::collection::vec((fields(), 0..4_u8), 1..32)
    ) {
        let documents = documents();
        let mut cluster = populated();
        for (fields, clock) in &steps {
            let (partition, record) = command(fields, &cluster, &documents);
            cluster.submit(partition, record);
            cluster.deliver_all();
            if *clock == 0 {
                cluster.now_ms += 61_000;
                cluster.tick();
                cluster.deliver_all();
            }
        }
        cluster.assert_follower_agrees(1);
        cluster.assert_follower_agrees(2);
    }
}
