//! How large the entry of one command is: a large text a command carries (a resource, a
//! variables document) is shared by every record that repeats it, so the encoded entry holds it
//! once; job activations are cut to the batch's byte budget, and a job too large for any batch
//! fails with a `MESSAGE_SIZE_EXCEEDED` incident instead of blocking its type.

use sluice_engine::record::{
    DeploymentResource, DeploymentValue, ErrorType, JobBatchValue, ProcessInstanceCreationValue,
    encode_records,
};
use sluice_engine::{Engine, EngineConfig, Intent, Output, Record, RecordValue, SideEffect};

const NOW_MS: i64 = 1_700_000_000_000;
const MIB: usize = 1 << 20;

/// A one-service-task process whose documentation is `padding_bytes` long.
fn padded_process(padding_bytes: usize) -> String {
    let padding = "d".repeat(padding_bytes);
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="d" targetNamespace="t">
  <bpmn:process id="padded" isExecutable="true">
    <bpmn:documentation>{padding}</bpmn:documentation>
    <bpmn:startEvent id="start"><bpmn:outgoing>a</bpmn:outgoing></bpmn:startEvent>
    <bpmn:sequenceFlow id="a" sourceRef="start" targetRef="task" />
    <bpmn:serviceTask id="task">
      <bpmn:extensionElements><zeebe:taskDefinition type="work" /></bpmn:extensionElements>
      <bpmn:incoming>a</bpmn:incoming><bpmn:outgoing>b</bpmn:outgoing>
    </bpmn:serviceTask>
    <bpmn:sequenceFlow id="b" sourceRef="task" targetRef="end" />
    <bpmn:endEvent id="end"><bpmn:incoming>b</bpmn:incoming></bpmn:endEvent>
  </bpmn:process>
</bpmn:definitions>"#
    )
}

fn engine(job_batch_bytes_max: usize) -> Engine {
    Engine::new(EngineConfig {
        job_batch_bytes_max,
        ..EngineConfig::new(1, 3)
    })
}

/// Processes `command` and returns its output and the encoded size of its entry.
fn process(engine: &mut Engine, command: Record) -> (Output, usize) {
    let mut out = Output::default();
    engine.process(command, Some(1), NOW_MS, &mut out);
    let bytes = encode_records(&out.records).len();
    (out, bytes)
}

fn deploy(engine: &mut Engine, xml: String) -> usize {
    let command = Record::command(
        Intent::Create,
        RecordValue::Deployment(DeploymentValue {
            resources: vec![DeploymentResource {
                resource_name: "padded.bpmn".to_owned(),
                resource: xml.into(),
            }],
            processes_metadata: Vec::new(),
        }),
    );
    let (out, bytes) = process(engine, command);
    assert!(
        out.records
            .iter()
            .any(|r| r.intent == Intent::Created && matches!(r.value, RecordValue::Process(_))),
        "deployed: {:?}",
        out.records.iter().map(|r| r.intent).collect::<Vec<_>>()
    );
    bytes
}

fn create(engine: &mut Engine, variables: String) -> usize {
    let command = Record::command(
        Intent::Create,
        RecordValue::ProcessInstanceCreation(ProcessInstanceCreationValue {
            bpmn_process_id: "padded".to_owned(),
            version: -1,
            process_definition_key: -1,
            variables: variables.into(),
            ..Default::default()
        }),
    );
    let (out, bytes) = process(engine, command);
    assert!(
        out.records.iter().any(|r| r.rejection.is_none()
            && matches!(r.value, RecordValue::ProcessInstanceCreation(_))
            && r.intent == Intent::Created),
        "created"
    );
    bytes
}

fn activate(engine: &mut Engine, max_jobs_to_activate: i32) -> Output {
    let command = Record::command(
        Intent::Activate,
        RecordValue::JobBatch(JobBatchValue {
            job_type: "work".to_owned(),
            worker: "w".to_owned(),
            timeout: 60_000,
            max_jobs_to_activate,
            ..Default::default()
        }),
    );
    process(engine, command).0
}

fn activated_batch(out: &Output) -> JobBatchValue {
    out.side_effects
        .iter()
        .find_map(|effect| match effect {
            SideEffect::Respond { record, .. } => match &record.value {
                RecordValue::JobBatch(batch) => Some(batch.clone()),
                _ => None,
            },
            _ => None,
        })
        .expect("the activation is answered")
}

#[test]
fn a_deployed_resource_takes_its_size_once_in_the_entry() {
    let mut engine = engine(4 * MIB);
    let xml = padded_process(3 * MIB);
    let resource_bytes = xml.len();
    let entry_bytes = deploy(&mut engine, xml);
    // The command, the process event and the deployment event all carry the resource.
    assert!(
        entry_bytes < resource_bytes + 64 * 1024,
        "a {resource_bytes}-byte resource made a {entry_bytes}-byte entry"
    );
}

#[test]
fn a_variables_document_takes_its_size_at_most_twice_in_the_entry() {
    let mut engine = engine(4 * MIB);
    deploy(&mut engine, padded_process(16));
    let variables = format!(
        r#"{{"a":"{}","b":"{}","n":7}}"#,
        "x".repeat(MIB),
        "y".repeat(2 * MIB)
    );
    let document_bytes = variables.len();
    let entry_bytes = create(&mut engine, variables);
    // The command and the creation event share the document; the variable events repeat it.
    assert!(
        entry_bytes < 2 * document_bytes + 64 * 1024,
        "a {document_bytes}-byte document made a {entry_bytes}-byte entry"
    );
}

#[test]
fn activations_are_cut_to_the_batch_byte_budget() {
    let mut engine = engine(MIB);
    deploy(&mut engine, padded_process(16));
    for _ in 0..5 {
        create(
            &mut engine,
            format!(r#"{{"payload":"{}"}}"#, "p".repeat(300 * 1024)),
        );
    }
    let first = activated_batch(&activate(&mut engine, 10));
    assert_eq!(first.jobs.len(), 3, "three 300 KiB jobs fit in 1 MiB");
    assert!(first.truncated);
    let second = activated_batch(&activate(&mut engine, 10));
    assert_eq!(second.jobs.len(), 2);
    assert!(!second.truncated);
}

#[test]
fn a_job_too_large_for_any_batch_raises_an_incident_and_lets_the_others_through() {
    let mut engine = engine(MIB);
    deploy(&mut engine, padded_process(16));
    create(
        &mut engine,
        format!(r#"{{"payload":"{}"}}"#, "p".repeat(2 * MIB)),
    );
    create(&mut engine, r#"{"small":true}"#.to_owned());
    let out = activate(&mut engine, 10);
    let batch = activated_batch(&out);
    assert_eq!(batch.jobs.len(), 1, "the small job is handed out");
    assert_eq!(batch.jobs[0].variables.as_str(), r#"{"small":true}"#);
    let incident = out
        .records
        .iter()
        .find_map(|record| match &record.value {
            RecordValue::Incident(incident) if record.intent == Intent::Created => {
                Some(incident.clone())
            }
            _ => None,
        })
        .expect("an incident for the large job");
    assert_eq!(incident.error_type, ErrorType::MessageSizeExceeded);
    assert!(
        incident.error_message.contains("too large to be activated"),
        "{}",
        incident.error_message
    );
    // The large job is failed: a later activation finds nothing.
    let later = activated_batch(&activate(&mut engine, 10));
    assert!(later.jobs.is_empty(), "{later:?}");
}
