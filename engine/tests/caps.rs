//! The engine's caps on what it takes in and builds: message time to live, variables document
//! size and nesting, and the values FEEL expressions build. A command over a cap is rejected
//! `INVALID_ARGUMENT` with a message naming the limit; a value over a cap that arises while
//! processing (a mapping, a correlated message) raises an incident.

mod common;

use common::{
    Cluster, activate, activated_jobs, assert_rejected, complete_job, create_instance, deployment,
    publish, receive_task_process, service_task_process,
};
use sluice_engine::record::{
    BpmnElementType, ErrorType, IncidentValue, ProcessInstanceCreationValue, RecordType,
    RejectionType, ValueType, VariableDocumentValue,
};
use sluice_engine::{
    EngineConfig, Intent, Output, Record, RecordValue, SideEffect, subscription_partition,
};

fn incident(out: &Output) -> Option<IncidentValue> {
    out.records.iter().find_map(|record| match &record.value {
        RecordValue::Incident(value) if record.intent == Intent::Created => Some(value.clone()),
        _ => None,
    })
}

/// A string variable document `{"x": "xxx..."}` of about `bytes` bytes.
fn document_of(bytes: usize) -> String {
    format!(r#"{{"x":"{}"}}"#, "x".repeat(bytes))
}

/// `depth` nested arrays as a variable: `{"x":[[...]]}` (the object is one more level).
fn nested_document(depth: usize) -> String {
    format!(r#"{{"x":{}{}}}"#, "[".repeat(depth), "]".repeat(depth))
}

#[test]
fn a_message_time_to_live_above_the_maximum_is_rejected_naming_it() {
    let mut cluster = Cluster::new(1);
    let max = EngineConfig::new(1, 1).message_ttl_ms_max;
    assert_eq!(max, 7 * 24 * 3_600_000);
    let out = cluster.submit(1, publish("m", "k", max + 1, ""));
    assert_rejected(
        &out,
        RejectionType::InvalidArgument,
        &[
            "at most 604800000 ms (7d)",
            "604800001",
            "shorter time to live",
        ],
    );
    let out = cluster.submit(1, publish("m", "k", max, ""));
    assert!(common::event(&out, Intent::Published).is_some());

    let mut cluster = Cluster::with_config(1, |config| EngineConfig {
        message_ttl_ms_max: 90_000,
        ..config
    });
    let out = cluster.submit(1, publish("m", "k", 90_001, ""));
    assert_rejected(
        &out,
        RejectionType::InvalidArgument,
        &["at most 90000 ms (1m 30s)"],
    );
}

/// A cluster whose documents may hold `bytes` bytes and nest `nesting` levels, with the
/// one-task process `p` deployed and one instance waiting on its job (returned).
fn small_documents(bytes: usize, nesting: u32) -> (Cluster, i64) {
    let mut cluster = Cluster::with_config(1, |config| EngineConfig {
        variables_document_bytes_max: bytes,
        variables_nesting_max: nesting,
        ..config
    });
    let xml = service_task_process("p", "");
    cluster.submit(1, deployment(&[("p.bpmn", &xml)]));
    cluster.submit(1, create_instance("p", ""));
    let jobs = activated_jobs(&cluster.submit(1, activate("work")));
    (cluster, jobs[0])
}

#[test]
fn every_command_variables_document_is_bounded_in_size() {
    let (mut cluster, job) = small_documents(1_000, 64);
    let large = document_of(1_000);
    let parts: &[&str] = &[
        "at most 1000 bytes",
        "1008 bytes",
        "send fewer or smaller variables",
    ];
    assert_rejected(
        &cluster.submit(1, create_instance("p", &large)),
        RejectionType::InvalidArgument,
        parts,
    );
    assert_rejected(
        &cluster.submit(1, complete_job(job, &large)),
        RejectionType::InvalidArgument,
        parts,
    );
    assert_rejected(
        &cluster.submit(1, publish("m", "k", 0, &large)),
        RejectionType::InvalidArgument,
        parts,
    );
    let scope = cluster.engine(1).state().jobs[&job].process_instance_key;
    let update = Record::command(
        Intent::Update,
        RecordValue::VariableDocument(VariableDocumentValue {
            scope_key: scope,
            local: false,
            variables: large.as_str().into(),
        }),
    );
    assert_rejected(
        &cluster.submit(1, update),
        RejectionType::InvalidArgument,
        parts,
    );
    // Within the limit it goes through.
    let out = cluster.submit(1, complete_job(job, &document_of(900)));
    assert!(common::event(&out, Intent::Completed).is_some());
    cluster.assert_follower_agrees(1);
}

#[test]
fn every_command_variables_document_is_bounded_in_nesting() {
    let (mut cluster, job) = small_documents(1 << 20, 8);
    let deep = nested_document(8);
    let parts: &[&str] = &["at most 8 levels deep", "flatten"];
    assert_rejected(
        &cluster.submit(1, create_instance("p", &deep)),
        RejectionType::InvalidArgument,
        parts,
    );
    assert_rejected(
        &cluster.submit(1, complete_job(job, &deep)),
        RejectionType::InvalidArgument,
        parts,
    );
    assert_rejected(
        &cluster.submit(1, publish("m", "k", 0, &deep)),
        RejectionType::InvalidArgument,
        parts,
    );
    // Brackets inside strings are not nesting.
    let brackets = format!(r#"{{"x":"{}"}}"#, "[".repeat(100));
    let out = cluster.submit(1, complete_job(job, &brackets));
    assert!(common::event(&out, Intent::Completed).is_some());
}

#[test]
fn the_configured_nesting_is_capped_where_replicas_can_still_read_it() {
    let (mut cluster, job) = small_documents(1 << 20, 10_000);
    let ceiling = sluice_engine::processor::VARIABLES_NESTING_CEILING;
    let deep = nested_document(usize::try_from(ceiling).expect("fits"));
    assert_rejected(
        &cluster.submit(1, complete_job(job, &deep)),
        RejectionType::InvalidArgument,
        &[&format!("at most {ceiling} levels deep")],
    );
}

/// The process `p` whose task's output mapping is `source`, an instance of it with `variables`,
/// and the output of completing its job.
fn complete_with_output(
    configure: impl Fn(EngineConfig) -> EngineConfig,
    source: &str,
    variables: &str,
) -> (Cluster, Output) {
    let mut cluster = Cluster::with_config(1, configure);
    let xml = service_task_process(
        "p",
        &format!(r#"<zeebe:output source="{source}" target="y" />"#),
    );
    cluster.submit(1, deployment(&[("p.bpmn", &xml)]));
    let out = cluster.submit(1, create_instance("p", variables));
    assert!(
        common::rejection(&out).is_none(),
        "{:?}",
        common::rejection(&out)
    );
    let jobs = activated_jobs(&cluster.submit(1, activate("work")));
    let out = cluster.submit(1, complete_job(jobs[0], ""));
    (cluster, out)
}

#[test]
fn a_mapping_result_over_the_document_size_raises_an_incident() {
    let (cluster, out) = complete_with_output(
        |config| EngineConfig {
            variables_document_bytes_max: 1_000,
            ..config
        },
        "=x + x",
        &document_of(600),
    );
    let incident = incident(&out).expect("an incident");
    assert_eq!(incident.error_type, ErrorType::IoMappingError);
    assert!(
        incident.error_message.contains("variable 'y'"),
        "{}",
        incident.error_message
    );
    assert!(
        incident.error_message.contains("at most 1000 bytes"),
        "{}",
        incident.error_message
    );
    cluster.assert_follower_agrees(1);
}

#[test]
fn a_mapping_result_nested_too_deep_raises_an_incident() {
    let (cluster, out) = complete_with_output(
        |config| EngineConfig {
            variables_nesting_max: 8,
            ..config
        },
        "={a: {a: x}}",
        &nested_document(7),
    );
    let incident = incident(&out).expect("an incident");
    assert_eq!(incident.error_type, ErrorType::IoMappingError);
    assert!(
        incident.error_message.contains("at most 8 levels deep"),
        "{}",
        incident.error_message
    );
    cluster.assert_follower_agrees(1);
}

#[test]
fn a_feel_string_over_the_limit_is_an_evaluation_error_and_an_incident() {
    let (cluster, out) = complete_with_output(
        |config| EngineConfig {
            feel_value_bytes_max: 1_000,
            ..config
        },
        "=x + x",
        &document_of(600),
    );
    let incident = incident(&out).expect("an incident");
    assert_eq!(incident.error_type, ErrorType::IoMappingError);
    assert!(
        incident
            .error_message
            .contains("builds a string of 1200 bytes, more than the 1000 bytes"),
        "{}",
        incident.error_message
    );
    cluster.assert_follower_agrees(1);
}

#[test]
fn a_feel_list_over_the_limits_is_an_evaluation_error_and_an_incident() {
    let (_, out) = complete_with_output(
        |config| EngineConfig {
            feel_collection_items_max: 3,
            ..config
        },
        "=[x, x, x, x]",
        r#"{"x":1}"#,
    );
    let message = incident(&out).expect("an incident").error_message;
    assert!(
        message.contains("builds a list of 4 items, more than the 3 items"),
        "{message}"
    );

    let (_, out) = complete_with_output(
        |config| EngineConfig {
            feel_value_bytes_max: 1_000,
            ..config
        },
        "={a: x, b: x}",
        &document_of(600),
    );
    let message = incident(&out).expect("an incident").error_message;
    assert!(
        message.contains("builds a context of more than 1000 bytes"),
        "{message}"
    );
}

#[test]
fn a_correlated_message_over_the_instance_partitions_limit_raises_an_incident() {
    // The message partition takes large documents; the instance's partition does not.
    let mut cluster = Cluster::with_config(2, |config| EngineConfig {
        variables_document_bytes_max: if config.partition_id == 1 {
            1_000
        } else {
            1 << 20
        },
        ..config
    });
    let correlation_key = (0..100)
        .map(|n| format!("order-{n}"))
        .find(|key| subscription_partition(key, 2) == 2)
        .expect("some key hashes to partition 2");
    let xml = receive_task_process("r", "paid");
    cluster.submit(1, deployment(&[("r.bpmn", &xml)]));
    cluster.deliver_all();
    cluster.submit(
        1,
        create_instance("r", &format!(r#"{{"key":"{correlation_key}"}}"#)),
    );
    cluster.deliver_all();
    let out = cluster.submit(
        2,
        publish("paid", &correlation_key, 60_000, &document_of(2_000)),
    );
    assert!(common::rejection(&out).is_none());
    cluster.deliver_all();
    let incidents = &cluster.engine(1).state().incidents;
    assert_eq!(incidents.len(), 1);
    let incident = incidents.values().next().expect("one incident");
    assert_eq!(incident.value.error_type, ErrorType::IoMappingError);
    assert!(
        incident.value.error_message.contains("at most 1000 bytes"),
        "{}",
        incident.value.error_message
    );
    // The message was taken (acknowledged), so it is not offered again.
    assert!(cluster.engine(2).state().message_subscriptions.is_empty());

    // Resolving continues without the variables.
    let incident_key = incident.key;
    let out = cluster.submit(
        1,
        Record::command_for(
            incident_key,
            Intent::Resolve,
            RecordValue::Incident(IncidentValue::default()),
        ),
    );
    assert!(common::event(&out, Intent::ElementCompleted).is_some());
    cluster.assert_follower_agrees(1);
    cluster.assert_follower_agrees(2);
}

/// A creation of `p` awaiting its result with `variables`, fetching `fetch` (all when empty).
fn create_awaiting_result(variables: &str, fetch: &[&str]) -> Record {
    Record::command(
        Intent::CreateWithAwaitingResult,
        RecordValue::ProcessInstanceCreation(ProcessInstanceCreationValue {
            bpmn_process_id: "p".into(),
            version: -1,
            process_definition_key: -1,
            variables: variables.into(),
            fetch_variables: fetch.iter().map(|name| (*name).to_owned()).collect(),
            ..Default::default()
        }),
    )
}

/// The answer `out` gives the creator waiting for a result.
fn result_answer(out: &Output) -> Record {
    out.side_effects
        .iter()
        .find_map(|effect| match effect {
            SideEffect::Respond { record, .. }
                if record.value_type == ValueType::ProcessInstanceCreation =>
            {
                Some(record.clone())
            }
            _ => None,
        })
        .expect("the creator waiting for the result is answered")
}

#[test]
fn a_result_larger_than_an_answer_is_refused_saying_the_instance_completed() {
    let mut cluster = Cluster::with_config(1, |config| EngineConfig {
        result_variables_bytes_max: 1_000,
        ..config
    });
    let xml = service_task_process("p", "");
    cluster.submit(1, deployment(&[("p.bpmn", &xml)]));

    // 600 bytes at creation and 600 more from the worker: 1200 bytes of result.
    let created = cluster.submit(1, create_awaiting_result(&document_of(600), &[]));
    assert!(common::rejection(&created).is_none());
    let jobs = activated_jobs(&cluster.submit(1, activate("work")));
    let more = format!(r#"{{"y":"{}"}}"#, "y".repeat(600));
    let out = cluster.submit(1, complete_job(jobs[0], &more));
    assert!(
        out.records
            .iter()
            .any(|record| record.intent == Intent::ElementCompleted
                && matches!(&record.value, RecordValue::ProcessInstance(value)
                if value.bpmn_element_type == BpmnElementType::Process)),
        "the instance completes all the same"
    );
    let answer = result_answer(&out);
    assert_eq!(answer.record_type, RecordType::CommandRejection);
    let rejection = answer.rejection.expect("a rejection");
    assert_eq!(
        rejection.rejection_type,
        RejectionType::ExceededBatchRecordSize
    );
    for part in [
        "which completed",
        "1215 bytes",
        "1000 bytes",
        "fetchVariables",
    ] {
        assert!(
            rejection.reason.contains(part),
            "{part:?} missing in: {}",
            rejection.reason
        );
    }
    cluster.assert_follower_agrees(1);

    // Fetching only what fits, the result comes back.
    cluster.submit(1, create_awaiting_result(&document_of(600), &["y"]));
    let jobs = activated_jobs(&cluster.submit(1, activate("work")));
    let out = cluster.submit(1, complete_job(jobs[0], &more));
    let answer = result_answer(&out);
    assert_eq!(answer.record_type, RecordType::Event, "{answer:?}");
    let RecordValue::ProcessInstanceCreation(value) = &answer.value else {
        panic!("a creation: {answer:?}");
    };
    assert_eq!(value.variables.as_str(), more);
}
