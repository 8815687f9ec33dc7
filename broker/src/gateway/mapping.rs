//! The gateway's pure conversions: gRPC requests to engine command records, reply records to
//! gRPC responses, and engine rejections and bad input to gRPC status codes with Zeebe's
//! meanings. No I/O here; [`super::service`] calls these around the command API.

use std::time::Duration;

use sluice_engine::record::{
    DeploymentResource, DeploymentValue, Header, IncidentValue, JobBatchValue, JobValue,
    MessageValue, ProcessInstanceCreationValue, ProcessInstanceValue, VariableDocumentValue,
    key_partition,
};
use sluice_engine::{Intent, Key, Record, RecordType, RecordValue, RejectionType};
use tonic::Status;

use super::proto::gateway_protocol as pb;
use crate::partitioning::PartitionId;

/// The tenant every record belongs to: multi-tenancy is not supported.
pub const DEFAULT_TENANT: &str = "<default>";
/// Deadline of a unary call that sets none.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest deadline honoured.
pub const REQUEST_TIMEOUT_MAX: Duration = Duration::from_hours(24);

/// Accepts the default tenant (empty or `<default>`) and refuses others.
pub fn check_tenant(tenant_id: &str) -> Result<(), Status> {
    if tenant_id.is_empty() || tenant_id == DEFAULT_TENANT {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "tenant '{tenant_id}' is not supported: Sluice has no multi-tenancy; leave the \
             tenant id empty or use '{DEFAULT_TENANT}'"
        )))
    }
}

/// Checks that `variables` is empty or a JSON object; returns the text to send.
pub fn check_variables(field: &str, variables: &str) -> Result<String, Status> {
    if variables.trim().is_empty() {
        return Ok(String::new());
    }
    match serde_json::from_str::<serde_json::Value>(variables) {
        Ok(serde_json::Value::Object(_)) => Ok(variables.to_owned()),
        Ok(other) => Err(Status::invalid_argument(format!(
            "Expected to set variables from '{field}', but it is a JSON {} and not a JSON \
             object; send a document like {{\"name\": value}}",
            json_kind(&other)
        ))),
        Err(error) => Err(Status::invalid_argument(format!(
            "Expected '{field}' to be a JSON object, but it does not parse: {error}"
        ))),
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// The partition of `key` (named `what` in the message), checked against the cluster.
pub fn partition_of_key(
    what: &str,
    key: Key,
    partitions_count: u32,
) -> Result<PartitionId, Status> {
    let partition_id = key_partition(key);
    if (1..=partitions_count).contains(&partition_id) {
        Ok(partition_id)
    } else {
        Err(Status::invalid_argument(format!(
            "Expected a valid {what}, but got {key}, which names no partition of this cluster \
             (partitions 1..={partitions_count}); use a key returned by the broker"
        )))
    }
}

/// The status of an engine reply that is a rejection, or `None` for an event.
#[must_use]
pub fn rejection_status(reply: &Record) -> Option<Status> {
    if reply.record_type != RecordType::CommandRejection {
        return None;
    }
    let (kind, reason) = match &reply.rejection {
        Some(rejection) => (Some(rejection.rejection_type), rejection.reason.clone()),
        None => (None, "the command was rejected".to_owned()),
    };
    Some(match kind {
        Some(RejectionType::NotFound) => Status::not_found(reason),
        Some(RejectionType::InvalidArgument) => Status::invalid_argument(reason),
        Some(RejectionType::AlreadyExists) => Status::already_exists(reason),
        Some(RejectionType::InvalidState) => Status::failed_precondition(reason),
        Some(RejectionType::ExceededBatchRecordSize) => Status::resource_exhausted(reason),
        Some(RejectionType::ProcessingError) | None => Status::internal(reason),
    })
}

/// Fails with the rejection's status, or with `INTERNAL` if the reply is not the expected event.
pub fn expect_event(reply: &Record, intent: Intent) -> Result<(), Status> {
    if let Some(status) = rejection_status(reply) {
        return Err(status);
    }
    if reply.record_type == RecordType::Event && reply.intent == intent {
        Ok(())
    } else {
        Err(unexpected(reply))
    }
}

fn unexpected(reply: &Record) -> Status {
    Status::internal(format!(
        "the broker replied with an unexpected record {:?} {:?} {:?}; check that every broker \
         runs the same Sluice version",
        reply.record_type, reply.value_type, reply.intent
    ))
}

/// The `DEPLOYMENT CREATE` command of the resources `(name, content)`.
pub fn deploy_command(resources: Vec<(String, Vec<u8>)>) -> Result<Record, Status> {
    if resources.is_empty() {
        return Err(Status::invalid_argument(
            "Expected to deploy at least one resource, but none given",
        ));
    }
    let resources = resources
        .into_iter()
        .map(|(name, content)| {
            let resource = String::from_utf8(content).map_err(|_| {
                Status::invalid_argument(format!(
                    "Expected resource '{name}' to be UTF-8 text (BPMN XML), but it is not"
                ))
            })?;
            Ok(DeploymentResource {
                resource_name: name,
                resource: resource.into(),
            })
        })
        .collect::<Result<Vec<_>, Status>>()?;
    Ok(Record::command(
        Intent::Create,
        RecordValue::Deployment(DeploymentValue {
            resources,
            processes_metadata: Vec::new(),
        }),
    ))
}

/// The deployment key and the processes of a `DEPLOYMENT CREATED` reply.
pub fn deployed_processes(reply: &Record) -> Result<(Key, Vec<pb::ProcessMetadata>), Status> {
    expect_event(reply, Intent::Created)?;
    let RecordValue::Deployment(deployment) = &reply.value else {
        return Err(unexpected(reply));
    };
    let processes = deployment
        .processes_metadata
        .iter()
        .map(|process| pb::ProcessMetadata {
            bpmn_process_id: process.bpmn_process_id.clone(),
            version: process.version,
            process_definition_key: process.process_definition_key,
            resource_name: process.resource_name.clone(),
            tenant_id: DEFAULT_TENANT.to_owned(),
        })
        .collect();
    Ok((reply.key, processes))
}

/// The `PROCESS_INSTANCE_CREATION` command of a create request.
pub fn create_command(
    request: &pb::CreateProcessInstanceRequest,
    with_result: bool,
    fetch_variables: Vec<String>,
) -> Result<Record, Status> {
    check_tenant(&request.tenant_id)?;
    if !request.start_instructions.is_empty() {
        return Err(Status::invalid_argument(
            "start instructions are not supported by Sluice yet; create the instance without \
             them (it starts at the process's none start event)",
        ));
    }
    if request.process_definition_key <= 0 && request.bpmn_process_id.is_empty() {
        return Err(Status::invalid_argument(
            "Expected either a bpmnProcessId or a processDefinitionKey, but neither is set",
        ));
    }
    let variables = check_variables("variables", &request.variables)?;
    Ok(Record::command(
        if with_result {
            Intent::CreateWithAwaitingResult
        } else {
            Intent::Create
        },
        RecordValue::ProcessInstanceCreation(ProcessInstanceCreationValue {
            bpmn_process_id: request.bpmn_process_id.clone(),
            version: if request.version > 0 {
                request.version
            } else {
                -1
            },
            process_definition_key: if request.process_definition_key > 0 {
                request.process_definition_key
            } else {
                -1
            },
            process_instance_key: -1,
            variables: variables.into(),
            fetch_variables,
        }),
    ))
}

/// The creation event of a create reply.
pub fn created_instance(reply: &Record) -> Result<&ProcessInstanceCreationValue, Status> {
    expect_event(reply, Intent::Created)?;
    match &reply.value {
        RecordValue::ProcessInstanceCreation(value) => Ok(value),
        _ => Err(unexpected(reply)),
    }
}

/// `CreateProcessInstanceResponse` of a create reply.
pub fn create_response(reply: &Record) -> Result<pb::CreateProcessInstanceResponse, Status> {
    let value = created_instance(reply)?;
    Ok(pb::CreateProcessInstanceResponse {
        process_definition_key: value.process_definition_key,
        bpmn_process_id: value.bpmn_process_id.clone(),
        version: value.version,
        process_instance_key: reply.key,
        tenant_id: DEFAULT_TENANT.to_owned(),
    })
}

/// `CreateProcessInstanceWithResultResponse` of a with-result reply.
pub fn create_with_result_response(
    reply: &Record,
) -> Result<pb::CreateProcessInstanceWithResultResponse, Status> {
    let value = created_instance(reply)?;
    Ok(pb::CreateProcessInstanceWithResultResponse {
        process_definition_key: value.process_definition_key,
        bpmn_process_id: value.bpmn_process_id.clone(),
        version: value.version,
        process_instance_key: reply.key,
        variables: json_object_or_empty(&value.variables),
        tenant_id: DEFAULT_TENANT.to_owned(),
    })
}

fn json_object_or_empty(variables: &str) -> String {
    if variables.trim().is_empty() {
        "{}".to_owned()
    } else {
        variables.to_owned()
    }
}

/// `PROCESS_INSTANCE CANCEL` of an instance.
#[must_use]
pub fn cancel_command(process_instance_key: Key) -> Record {
    Record::command_for(
        process_instance_key,
        Intent::Cancel,
        RecordValue::ProcessInstance(ProcessInstanceValue::default()),
    )
}

/// Fails with the rejection of a reply, accepting any event.
pub fn expect_accepted(reply: &Record) -> Result<(), Status> {
    if let Some(status) = rejection_status(reply) {
        return Err(status);
    }
    if reply.record_type == RecordType::Event {
        Ok(())
    } else {
        Err(unexpected(reply))
    }
}

/// A `JOB` command about `job_key`.
#[must_use]
pub fn job_command(job_key: Key, intent: Intent, value: JobValue) -> Record {
    Record::command_for(job_key, intent, RecordValue::Job(value))
}

/// What an activation asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activation {
    /// The job type.
    pub job_type: String,
    /// The worker's name.
    pub worker: String,
    /// How long the jobs belong to the worker, in ms.
    pub timeout_ms: i64,
    /// Only these variables (all when empty).
    pub fetch_variables: Vec<String>,
}

/// Checks the fields every activation needs.
pub fn check_activation(
    job_type: &str,
    timeout_ms: i64,
    tenant_ids: &[String],
) -> Result<(), Status> {
    if job_type.trim().is_empty() {
        return Err(Status::invalid_argument(
            "Expected a job type to activate, but it is empty",
        ));
    }
    if timeout_ms < 1 {
        return Err(Status::invalid_argument(format!(
            "Expected a job timeout of at least 1 ms, but got {timeout_ms}; give workers time \
             to finish a job"
        )));
    }
    for tenant_id in tenant_ids {
        check_tenant(tenant_id)?;
    }
    Ok(())
}

/// The `JOB_BATCH ACTIVATE` command for up to `max_jobs` jobs.
#[must_use]
pub fn activate_command(activation: &Activation, max_jobs: i32) -> Record {
    Record::command(
        Intent::Activate,
        RecordValue::JobBatch(JobBatchValue {
            job_type: activation.job_type.clone(),
            worker: activation.worker.clone(),
            timeout: activation.timeout_ms,
            max_jobs_to_activate: max_jobs,
            fetch_variables: activation.fetch_variables.clone(),
            ..JobBatchValue::default()
        }),
    )
}

/// The jobs of a `JOB_BATCH ACTIVATED` reply.
pub fn activated_jobs(reply: &Record) -> Result<Vec<pb::ActivatedJob>, Status> {
    expect_event(reply, Intent::Activated)?;
    let RecordValue::JobBatch(batch) = &reply.value else {
        return Err(unexpected(reply));
    };
    if batch.job_keys.len() != batch.jobs.len() {
        return Err(Status::internal(format!(
            "the broker activated {} job keys but {} jobs",
            batch.job_keys.len(),
            batch.jobs.len()
        )));
    }
    Ok(batch
        .job_keys
        .iter()
        .zip(&batch.jobs)
        .map(|(&key, job)| activated_job(key, job))
        .collect())
}

/// One activated job as the gateway protocol spells it.
#[must_use]
pub fn activated_job(key: Key, job: &JobValue) -> pb::ActivatedJob {
    pb::ActivatedJob {
        key,
        r#type: job.job_type.clone(),
        process_instance_key: job.process_instance_key,
        bpmn_process_id: job.bpmn_process_id.clone(),
        process_definition_version: job.process_definition_version,
        process_definition_key: job.process_definition_key,
        element_id: job.element_id.clone(),
        element_instance_key: job.element_instance_key,
        custom_headers: headers_json(&job.custom_headers),
        worker: job.worker.clone(),
        retries: job.retries,
        deadline: job.deadline,
        variables: json_object_or_empty(&job.variables),
        tenant_id: DEFAULT_TENANT.to_owned(),
    }
}

/// Custom headers as one JSON object of strings (a later duplicate key wins).
#[must_use]
pub fn headers_json(headers: &[Header]) -> String {
    let object: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|header| {
            (
                header.key.clone(),
                serde_json::Value::String(header.value.clone()),
            )
        })
        .collect();
    serde_json::Value::Object(object).to_string()
}

/// The `MESSAGE PUBLISH` command of a publish request.
pub fn publish_command(request: &pb::PublishMessageRequest) -> Result<Record, Status> {
    check_tenant(&request.tenant_id)?;
    if request.name.is_empty() {
        return Err(Status::invalid_argument(
            "Expected a message name, but it is empty",
        ));
    }
    if request.time_to_live < 0 {
        return Err(Status::invalid_argument(format!(
            "Expected a time to live of 0 ms or more, but got {}",
            request.time_to_live
        )));
    }
    let variables = check_variables("variables", &request.variables)?;
    Ok(Record::command(
        Intent::Publish,
        RecordValue::Message(MessageValue {
            name: request.name.clone(),
            correlation_key: request.correlation_key.clone(),
            time_to_live: request.time_to_live,
            message_id: request.message_id.clone(),
            variables: variables.into(),
            deadline: -1,
        }),
    ))
}

/// The `VARIABLE_DOCUMENT UPDATE` command of a set-variables request.
pub fn set_variables_command(request: &pb::SetVariablesRequest) -> Result<Record, Status> {
    let variables = check_variables("variables", &request.variables)?;
    if variables.is_empty() {
        return Err(Status::invalid_argument(
            "Expected variables to set, but the document is empty; send a JSON object",
        ));
    }
    Ok(Record::command(
        Intent::Update,
        RecordValue::VariableDocument(VariableDocumentValue {
            scope_key: request.element_instance_key,
            local: request.local,
            variables: variables.into(),
        }),
    ))
}

/// The `INCIDENT RESOLVE` command of an incident.
#[must_use]
pub fn resolve_command(incident_key: Key) -> Record {
    Record::command_for(
        incident_key,
        Intent::Resolve,
        RecordValue::Incident(IncidentValue::default()),
    )
}

/// A gRPC timeout header (`grpc-timeout`: digits and a unit `H M S m u n`) as a duration.
#[must_use]
pub fn parse_grpc_timeout(text: &str) -> Option<Duration> {
    if text.len() < 2 || text.len() > 9 {
        return None;
    }
    let (digits, unit) = text.split_at(text.len() - 1);
    if !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value.saturating_mul(3600)),
        "M" => Duration::from_secs(value.saturating_mul(60)),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

/// The name of an RPC Sluice does not implement, as `UNIMPLEMENTED`.
#[must_use]
pub fn unimplemented(rpc: &str) -> Status {
    Status::unimplemented(format!(
        "{rpc} is not supported by Sluice yet; the gateway implements Topology, DeployResource, \
         DeployProcess, CreateProcessInstance(WithResult), CancelProcessInstance, ActivateJobs, \
         StreamActivatedJobs, CompleteJob, FailJob, ThrowError, UpdateJobRetries, \
         UpdateJobTimeout, PublishMessage, SetVariables and ResolveIncident"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_engine::ValueType;
    use sluice_engine::record::{ProcessMetadata, Rejection, encode_key};
    use tonic::Code;

    fn rejection(kind: RejectionType) -> Record {
        Record {
            record_type: RecordType::CommandRejection,
            value_type: ValueType::Job,
            intent: Intent::Complete,
            key: encode_key(1, 8),
            timestamp_ms: 0,
            rejection: Some(Rejection {
                rejection_type: kind,
                reason: "Expected to complete job with key '1', but no such job was found"
                    .to_owned(),
            }),
            value: RecordValue::Job(JobValue::default()),
            request_id: 0,
        }
    }

    fn event(intent: Intent, key: Key, value: RecordValue) -> Record {
        Record {
            record_type: RecordType::Event,
            intent,
            key,
            ..Record::command(intent, value)
        }
    }

    #[test]
    fn rejections_map_to_zeebe_status_codes_with_the_reason() {
        for (kind, code) in [
            (RejectionType::NotFound, Code::NotFound),
            (RejectionType::InvalidArgument, Code::InvalidArgument),
            (RejectionType::AlreadyExists, Code::AlreadyExists),
            (RejectionType::InvalidState, Code::FailedPrecondition),
            (RejectionType::ProcessingError, Code::Internal),
            (
                RejectionType::ExceededBatchRecordSize,
                Code::ResourceExhausted,
            ),
        ] {
            let status = rejection_status(&rejection(kind)).expect("a rejection");
            assert_eq!(status.code(), code, "{kind:?}");
            assert!(status.message().contains("no such job"), "{status:?}");
        }
        let completed = event(Intent::Completed, 1, RecordValue::Job(JobValue::default()));
        assert!(rejection_status(&completed).is_none());
        assert!(expect_event(&completed, Intent::Completed).is_ok());
        let status = expect_event(&completed, Intent::Failed).expect_err("wrong intent");
        assert_eq!(status.code(), Code::Internal);
    }

    #[test]
    fn variables_must_be_a_json_object() {
        assert_eq!(check_variables("variables", "").expect("none"), "");
        assert_eq!(check_variables("variables", "  ").expect("none"), "");
        assert_eq!(
            check_variables("variables", r#"{"a":1}"#).expect("object"),
            r#"{"a":1}"#
        );
        for bad in ["[1,2]", "42", "\"text\"", "null", "{\"a\":", "{a:1}"] {
            let status = check_variables("variables", bad).expect_err(bad);
            assert_eq!(status.code(), Code::InvalidArgument, "{bad}");
            assert!(status.message().contains("JSON object"), "{status:?}");
        }
    }

    #[test]
    fn tenants_other_than_the_default_are_refused() {
        assert!(check_tenant("").is_ok());
        assert!(check_tenant("<default>").is_ok());
        let status = check_tenant("acme").expect_err("other tenant");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("acme"));
    }

    #[test]
    fn keys_route_by_their_partition_bits() {
        assert_eq!(
            partition_of_key("job key", encode_key(3, 17), 3).expect("ok"),
            3
        );
        for bad in [0, -1, encode_key(4, 1)] {
            let status = partition_of_key("job key", bad, 3).expect_err("invalid");
            assert_eq!(status.code(), Code::InvalidArgument);
            assert!(status.message().contains("job key"), "{status:?}");
            assert!(status.message().contains(&bad.to_string()), "{status:?}");
        }
    }

    #[test]
    fn create_requests_become_creation_commands() {
        let request = pb::CreateProcessInstanceRequest {
            bpmn_process_id: "one_task".to_owned(),
            version: 0,
            variables: r#"{"order":42}"#.to_owned(),
            ..pb::CreateProcessInstanceRequest::default()
        };
        let record = create_command(&request, false, Vec::new()).expect("valid");
        assert_eq!(record.intent, Intent::Create);
        let RecordValue::ProcessInstanceCreation(value) = &record.value else {
            panic!("{record:?}");
        };
        assert_eq!(value.version, -1, "0 asks for the latest version");
        assert_eq!(value.process_definition_key, -1);
        assert_eq!(value.variables, r#"{"order":42}"#);
        let record = create_command(&request, true, vec!["a".to_owned()]).expect("with result");
        assert_eq!(record.intent, Intent::CreateWithAwaitingResult);
        let bad = pb::CreateProcessInstanceRequest {
            variables: "[]".to_owned(),
            ..request.clone()
        };
        assert_eq!(
            create_command(&bad, false, Vec::new())
                .expect_err("array")
                .code(),
            Code::InvalidArgument
        );
        let neither = pb::CreateProcessInstanceRequest::default();
        assert_eq!(
            create_command(&neither, false, Vec::new())
                .expect_err("empty")
                .code(),
            Code::InvalidArgument
        );
        let tenant = pb::CreateProcessInstanceRequest {
            tenant_id: "acme".to_owned(),
            ..request
        };
        assert_eq!(
            create_command(&tenant, false, Vec::new())
                .expect_err("tenant")
                .code(),
            Code::InvalidArgument
        );
    }

    #[test]
    fn replies_become_responses() {
        let key = encode_key(2, 3);
        let created = event(
            Intent::Created,
            key,
            RecordValue::ProcessInstanceCreation(ProcessInstanceCreationValue {
                bpmn_process_id: "one_task".to_owned(),
                version: 1,
                process_definition_key: encode_key(1, 2),
                process_instance_key: key,
                variables: r#"{"a":1,"b":2}"#.to_owned().into(),
                fetch_variables: Vec::new(),
            }),
        );
        let response = create_response(&created).expect("created");
        assert_eq!(response.process_instance_key, key);
        assert_eq!(response.version, 1);
        assert_eq!(response.process_definition_key, encode_key(1, 2));
        let with_result = create_with_result_response(&created).expect("created");
        assert_eq!(with_result.variables, r#"{"a":1,"b":2}"#);

        let deployed = event(
            Intent::Created,
            encode_key(1, 1),
            RecordValue::Deployment(DeploymentValue {
                resources: Vec::new(),
                processes_metadata: vec![ProcessMetadata {
                    bpmn_process_id: "one_task".to_owned(),
                    version: 1,
                    process_definition_key: encode_key(1, 2),
                    resource_name: "one_task.bpmn".to_owned(),
                    checksum: String::new(),
                    duplicate: false,
                }],
            }),
        );
        let (deployment_key, processes) = deployed_processes(&deployed).expect("deployed");
        assert_eq!(deployment_key, encode_key(1, 1));
        assert_eq!(processes[0].resource_name, "one_task.bpmn");
        assert_eq!(processes[0].tenant_id, DEFAULT_TENANT);
    }

    #[test]
    fn activated_jobs_carry_every_field() {
        let job = JobValue {
            job_type: "work".to_owned(),
            retries: 3,
            deadline: 1_060_000,
            worker: "w".to_owned(),
            custom_headers: vec![Header {
                key: "priority".to_owned(),
                value: "high".to_owned(),
            }],
            variables: String::new().into(),
            process_instance_key: encode_key(1, 3),
            element_instance_key: encode_key(1, 7),
            element_id: "task".to_owned(),
            bpmn_process_id: "one_task".to_owned(),
            process_definition_key: encode_key(1, 2),
            process_definition_version: 1,
            ..JobValue::default()
        };
        let batch = event(
            Intent::Activated,
            encode_key(1, 9),
            RecordValue::JobBatch(JobBatchValue {
                job_keys: vec![encode_key(1, 8)],
                jobs: vec![job],
                ..JobBatchValue::default()
            }),
        );
        let jobs = activated_jobs(&batch).expect("activated");
        assert_eq!(jobs.len(), 1);
        let job = &jobs[0];
        assert_eq!(job.key, encode_key(1, 8));
        assert_eq!(job.custom_headers, r#"{"priority":"high"}"#);
        assert_eq!(job.variables, "{}");
        assert_eq!(job.deadline, 1_060_000);
        assert_eq!(job.retries, 3);
        assert_eq!(job.worker, "w");
        assert_eq!(job.element_instance_key, encode_key(1, 7));
        assert_eq!(job.process_definition_version, 1);
        assert_eq!(headers_json(&[]), "{}");
    }

    #[test]
    fn deployments_need_utf8_resources() {
        let status =
            deploy_command(vec![("x.bpmn".to_owned(), vec![0xff, 0xfe])]).expect_err("not UTF-8");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("x.bpmn"));
        assert_eq!(
            deploy_command(Vec::new()).expect_err("none").code(),
            Code::InvalidArgument
        );
        let record = deploy_command(vec![("a.bpmn".to_owned(), b"<xml/>".to_vec())]).expect("ok");
        assert_eq!(record.intent, Intent::Create);
    }

    #[test]
    fn publish_and_set_variables_validate_their_input() {
        let request = pb::PublishMessageRequest {
            name: "payment".to_owned(),
            correlation_key: "o-1".to_owned(),
            time_to_live: 1000,
            message_id: "m-1".to_owned(),
            variables: r#"{"amount":1}"#.to_owned(),
            tenant_id: String::new(),
        };
        let record = publish_command(&request).expect("valid");
        let RecordValue::Message(message) = &record.value else {
            panic!("{record:?}");
        };
        assert_eq!(message.deadline, -1);
        assert_eq!(message.message_id, "m-1");
        let nameless = pb::PublishMessageRequest {
            name: String::new(),
            ..request.clone()
        };
        assert_eq!(
            publish_command(&nameless).expect_err("no name").code(),
            Code::InvalidArgument
        );
        let bad = pb::PublishMessageRequest {
            variables: "{".to_owned(),
            ..request
        };
        assert_eq!(
            publish_command(&bad).expect_err("bad json").code(),
            Code::InvalidArgument
        );
        let empty = pb::SetVariablesRequest {
            element_instance_key: encode_key(1, 3),
            ..pb::SetVariablesRequest::default()
        };
        assert_eq!(
            set_variables_command(&empty).expect_err("empty").code(),
            Code::InvalidArgument
        );
    }

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("10S"), Some(Duration::from_secs(10)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_hours(2)));
        assert_eq!(parse_grpc_timeout("5u"), Some(Duration::from_micros(5)));
        for bad in ["", "S", "10", "10x", "-1S", "1234567890S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
        assert_eq!(unimplemented("BroadcastSignal").code(), Code::Unimplemented);
        assert!(
            unimplemented("BroadcastSignal")
                .message()
                .contains("BroadcastSignal")
        );
    }
}
