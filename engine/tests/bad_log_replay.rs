//! Replaying a log that holds events no engine should have written.
//!
//! The bug: appliers trusted the log. A `PROCESS CREATED` whose resource did not parse hit an
//! `expect` and panicked every replica that replayed it, and so did an element life-cycle event
//! of an instance that was not live. Now such events are skipped, the same way on every
//! replica, and the replicas end in the same state and keep working.

mod common;

use common::{Cluster, activate, activated_jobs, complete_job, create_instance, deployment};
use sluice_engine::record::{
    BpmnElementType, IncidentValue, JobBatchValue, JobValue, MessageValue, ProcessInstanceValue,
    ProcessValue, TimerValue, VariableValue, encode_key,
};
use sluice_engine::snapshot::{decode_snapshot, encode_snapshot};
use sluice_engine::{Engine, Intent, Key, Output, Record, RecordType, RecordValue};

fn event(key: Key, intent: Intent, value: RecordValue) -> Record {
    Record {
        record_type: RecordType::Event,
        value_type: value.value_type(),
        intent,
        key,
        timestamp_ms: common::START_MS,
        rejection: None,
        value,
        request_id: 0,
    }
}

fn process_created(key: Key, id: &str, version: i32, resource: &str) -> Record {
    event(
        key,
        Intent::Created,
        RecordValue::Process(ProcessValue {
            bpmn_process_id: id.into(),
            version,
            process_definition_key: key,
            resource_name: format!("{id}.bpmn"),
            checksum: "00000000".into(),
            resource: resource.into(),
        }),
    )
}

fn element(
    key: Key,
    intent: Intent,
    definition: Key,
    instance: Key,
    scope: Key,
    id: &str,
) -> Record {
    event(
        key,
        intent,
        RecordValue::ProcessInstance(ProcessInstanceValue {
            bpmn_process_id: "p".into(),
            version: 1,
            process_definition_key: definition,
            process_instance_key: instance,
            element_id: id.into(),
            flow_scope_key: scope,
            bpmn_element_type: BpmnElementType::ServiceTask,
        }),
    )
}

fn job_created(key: Key, job_type: &str, element_instance_key: Key) -> Record {
    event(
        key,
        Intent::Created,
        RecordValue::Job(JobValue {
            job_type: job_type.into(),
            retries: 3,
            deadline: -1,
            element_instance_key,
            ..JobValue::default()
        }),
    )
}

/// A genuine log (a deployment, an instance waiting on its job) followed by events that do not
/// fit it.
#[expect(clippy::too_many_lines, reason = "one line or three per forged event")]
fn bad_log() -> (Vec<Record>, Key) {
    let mut cluster = Cluster::new(1);
    let xml = common::service_task_process("p", "");
    cluster.submit(1, deployment(&[("p.bpmn", &xml)]));
    cluster.submit(1, create_instance("p", ""));
    let definition = cluster
        .engine(1)
        .state()
        .latest_process("p")
        .expect("deployed")
        .key;
    let mut log = cluster.logs[0].clone();
    let k = |counter| encode_key(1, counter);
    let pi = k(900);
    log.extend([
        // Processes that cannot be deployed: XML that does not parse, a process its resource
        // lacks, expressions that do not compile, a version that is taken, a key no partition
        // makes.
        process_created(k(100), "bad", 1, "<definitely not bpmn"),
        process_created(k(101), "absent", 1, &xml),
        process_created(
            k(102),
            "p",
            2,
            &xml.replace(r#"type="work""#, r#"type="=1 +""#),
        ),
        process_created(k(103), "p", 1, &xml),
        process_created(encode_key(1, (1 << 51) - 1), "p", 7, &xml),
        // Life-cycle events of instances of processes that are not deployed or not live.
        element(pi, Intent::ElementActivating, k(100), pi, -1, "bad"),
        element(pi, Intent::ElementActivated, k(100), pi, -1, "bad"),
        element(
            k(901),
            Intent::ElementActivating,
            definition,
            pi,
            pi,
            "task",
        ),
        element(
            k(902),
            Intent::ElementActivating,
            definition,
            k(902),
            -1,
            "task",
        ),
        element(
            k(903),
            Intent::ElementCompleting,
            definition,
            pi,
            pi,
            "task",
        ),
        element(k(904), Intent::ElementCompleted, definition, pi, pi, "task"),
        element(
            k(905),
            Intent::ElementTerminated,
            definition,
            pi,
            pi,
            "task",
        ),
        element(
            k(906),
            Intent::SequenceFlowTaken,
            definition,
            pi,
            pi,
            "no-such-flow",
        ),
        element(k(907), Intent::SequenceFlowTaken, k(100), pi, pi, "a"),
        // A job created twice under one key with two types, then completed.
        job_created(k(910), "one", -1),
        job_created(k(910), "two", -1),
        event(
            k(910),
            Intent::Completed,
            RecordValue::Job(JobValue::default()),
        ),
        job_created(k(911), "one", k(999)),
        // Activation of jobs that do not exist.
        event(
            k(912),
            Intent::Activated,
            RecordValue::JobBatch(JobBatchValue {
                job_type: "one".into(),
                job_keys: vec![k(998), k(911)],
                jobs: vec![JobValue::default()],
                ..JobBatchValue::default()
            }),
        ),
        // A timer and a message created twice, a variable of no scope with broken JSON.
        event(
            k(920),
            Intent::Created,
            RecordValue::Timer(TimerValue {
                due_date: 5,
                ..TimerValue::default()
            }),
        ),
        event(
            k(920),
            Intent::Created,
            RecordValue::Timer(TimerValue {
                due_date: 9,
                ..TimerValue::default()
            }),
        ),
        event(
            k(921),
            Intent::Published,
            RecordValue::Message(MessageValue {
                name: "m".into(),
                time_to_live: 10,
                deadline: 1,
                ..MessageValue::default()
            }),
        ),
        event(
            k(921),
            Intent::Published,
            RecordValue::Message(MessageValue {
                name: "m".into(),
                time_to_live: 10,
                deadline: 2,
                ..MessageValue::default()
            }),
        ),
        event(
            k(922),
            Intent::Created,
            RecordValue::Variable(VariableValue {
                name: "v".into(),
                value: "{not json".into(),
                scope_key: k(999),
                ..VariableValue::default()
            }),
        ),
        event(
            k(923),
            Intent::Resolved,
            RecordValue::Incident(IncidentValue {
                job_key: k(911),
                ..IncidentValue::default()
            }),
        ),
    ]);
    (log, definition)
}

fn replay(log: &[Record]) -> Engine {
    let mut engine = Engine::new(sluice_engine::EngineConfig::new(1, 1));
    for record in log {
        engine.replay(record);
    }
    engine
}

#[test]
fn replicas_replaying_a_bad_log_do_not_panic_and_agree() {
    let (log, definition) = bad_log();
    let first = replay(&log);
    let second = replay(&log);
    let bytes = encode_snapshot(first.state());
    assert_eq!(bytes, encode_snapshot(second.state()), "replicas disagree");

    let state = first.state();
    // Only the genuine process was deployed.
    assert_eq!(state.processes.len(), 1);
    assert!(state.processes.contains_key(&definition));
    assert!(state.latest_process("bad").is_none());
    assert!(state.latest_process("absent").is_none());
    // No element instance of an undeployed process, none without its scope.
    assert!(
        state
            .element_instances
            .values()
            .all(|instance| instance.process_definition_key == definition)
    );
    assert!(!state.element_instances.contains_key(&encode_key(1, 901)));
    assert!(!state.element_instances.contains_key(&encode_key(1, 902)));
    // The first CREATED of a job, timer and message counts; the second is skipped.
    assert_eq!(
        state
            .jobs
            .get(&encode_key(1, 910))
            .map(|job| job.job_type.to_string()),
        None,
        "the job was completed"
    );
    assert!(!state.activatable.contains_key("two"));
    assert_eq!(state.timers[&encode_key(1, 920)].value.due_date, 5);
    assert_eq!(state.timer_due.len(), 1);
    assert_eq!(state.messages[&encode_key(1, 921)].deadline_ms, 1);
    assert_eq!(state.message_deadlines.len(), 1);
    // The counter moved with the events of possible keys only.
    assert_eq!(state.next_key_counter, 924);
    // The snapshot decodes to the same state.
    let decoded = decode_snapshot(&bytes).expect("the snapshot of a replayed state decodes");
    assert_eq!(encode_snapshot(&decoded), bytes);
}

#[test]
fn a_replica_that_replayed_a_bad_log_keeps_working() {
    let (log, _) = bad_log();
    let mut engine = replay(&log);
    let mut out = Output::default();
    let now = common::START_MS;
    // The clock work due now: the forged timer and message are long due.
    engine.tick(now + 3_600_000, &mut out);
    for job_type in ["one", "two", "work"] {
        let mut out = Output::default();
        engine.process(activate(job_type), Some(1), now, &mut out);
        for job in activated_jobs(&out) {
            let mut out = Output::default();
            engine.process(
                complete_job(job, r#"{"done":true}"#),
                Some(2),
                now,
                &mut out,
            );
        }
    }
    let mut out = Output::default();
    engine.process(create_instance("p", ""), Some(3), now, &mut out);
    assert!(common::event(&out, Intent::Created).is_some());
    let mut out = Output::default();
    engine.process(create_instance("bad", ""), Some(4), now, &mut out);
    assert!(common::rejection(&out).is_some());
}
