//! A client request re-sent with the same request id (a gateway that lost the answer) is
//! answered from the first reply and runs only once: on the leader that processed it, on a
//! replica that replayed it from the log, and after a snapshot; replies are forgotten after the
//! retention window.

use sluice_engine::record::{DeploymentResource, DeploymentValue, ProcessInstanceCreationValue};
use sluice_engine::snapshot::{decode_snapshot, encode_snapshot};
use sluice_engine::state::CLIENT_REPLY_RETENTION_MS;
use sluice_engine::{
    Engine, EngineConfig, Intent, Output, Record, RecordType, RecordValue, RejectionType,
    SideEffect,
};

const START_MS: i64 = 1_700_000_000_000;

const ONE_TASK: &str = include_str!("../testdata/bpmn/one_task.bpmn");

fn engine() -> Engine {
    Engine::new(EngineConfig::new(1, 1))
}

fn deploy(engine: &mut Engine, log: &mut Vec<Record>) {
    let command = Record::command(
        Intent::Create,
        RecordValue::Deployment(DeploymentValue {
            resources: vec![DeploymentResource {
                resource_name: "one_task.bpmn".to_owned(),
                resource: ONE_TASK.into(),
            }],
            processes_metadata: Vec::new(),
        }),
    );
    run(engine, command, START_MS, log);
}

fn create(process: &str, request_id: u64) -> Record {
    Record {
        request_id,
        ..Record::command(
            Intent::Create,
            RecordValue::ProcessInstanceCreation(ProcessInstanceCreationValue {
                bpmn_process_id: process.to_owned(),
                version: -1,
                process_definition_key: -1,
                variables: r#"{"big":"xxxxxxxxxxxxxxxxxxxxxxxx"}"#.into(),
                ..Default::default()
            }),
        )
    }
}

/// Processes `command` as request 1, appends its records to `log`, returns the reply.
fn run(engine: &mut Engine, command: Record, now_ms: i64, log: &mut Vec<Record>) -> Record {
    let mut out = Output::default();
    engine.process(command, Some(1), now_ms, &mut out);
    log.extend(out.records.iter().cloned());
    out.side_effects
        .into_iter()
        .find_map(|effect| match effect {
            SideEffect::Respond { request: 1, record } => Some(record),
            _ => None,
        })
        .expect("the command is answered")
}

fn instances(log: &[Record]) -> usize {
    log.iter()
        .filter(|record| {
            record.record_type == RecordType::Event
                && record.intent == Intent::Created
                && matches!(record.value, RecordValue::ProcessInstanceCreation(_))
        })
        .count()
}

#[test]
fn a_resent_creation_runs_once_and_gets_the_first_answer() {
    let mut leader = engine();
    let mut log = Vec::new();
    deploy(&mut leader, &mut log);
    let first = run(&mut leader, create("one_task", 7), START_MS + 1, &mut log);
    assert_eq!(first.request_id, 7, "the reply names the request");
    let written = log.len();
    let again = run(&mut leader, create("one_task", 7), START_MS + 2, &mut log);
    assert_eq!(log.len(), written, "a re-sent request writes nothing");
    assert_eq!(again.key, first.key, "the same instance");
    assert_eq!(again.intent, Intent::Created);
    assert_eq!(instances(&log), 1);
    // Another request id is another instance.
    let other = run(&mut leader, create("one_task", 8), START_MS + 3, &mut log);
    assert_ne!(other.key, first.key);
    assert_eq!(instances(&log), 2);
}

#[test]
fn a_replica_that_replayed_the_log_and_a_snapshot_answer_the_same() {
    let mut leader = engine();
    let mut log = Vec::new();
    deploy(&mut leader, &mut log);
    let first = run(&mut leader, create("one_task", 7), START_MS + 1, &mut log);
    let rejected = run(&mut leader, create("nope", 9), START_MS + 2, &mut log);
    assert_eq!(
        rejected.rejection.as_ref().map(|r| r.rejection_type),
        Some(RejectionType::NotFound)
    );

    let mut replica = engine();
    for record in &log {
        replica.replay(record);
    }
    assert_eq!(
        encode_snapshot(replica.state()),
        encode_snapshot(leader.state()),
        "replay keeps the same replies as processing"
    );
    let restored = decode_snapshot(&encode_snapshot(replica.state())).expect("decodes");
    let mut from_snapshot = Engine::with_state(EngineConfig::new(1, 1), restored);
    for engine in [&mut replica, &mut from_snapshot] {
        let mut tail = Vec::new();
        let again = run(engine, create("one_task", 7), START_MS + 10, &mut tail);
        assert!(tail.is_empty(), "nothing runs again");
        assert_eq!(again.key, first.key);
        let again = run(engine, create("nope", 9), START_MS + 10, &mut tail);
        assert_eq!(again.rejection, rejected.rejection);
        assert!(tail.is_empty());
    }
}

#[test]
fn kept_replies_leave_out_large_texts_and_are_forgotten_after_the_window() {
    let mut leader = engine();
    let mut log = Vec::new();
    deploy(&mut leader, &mut log);
    let first = run(&mut leader, create("one_task", 7), START_MS + 1, &mut log);
    let kept = leader.state().client_reply(7).expect("kept").clone();
    let RecordValue::ProcessInstanceCreation(value) = &kept.value else {
        panic!("a creation reply: {kept:?}");
    };
    assert!(value.variables.is_empty(), "variables are not kept");
    assert_eq!(kept.key, first.key);
    // Past the window, another reply pushes the old one out: the request would run again.
    let later = START_MS + 1 + CLIENT_REPLY_RETENTION_MS + 1;
    run(&mut leader, create("one_task", 8), later, &mut log);
    assert!(leader.state().client_reply(7).is_none());
    assert!(leader.state().client_reply(8).is_some());
}
