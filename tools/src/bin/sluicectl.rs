//! `sluicectl`: a command-line client of the Zeebe gRPC gateway every Sluice broker serves.
//!
//! ```text
//! sluicectl [--gateway HOST:PORT] [--json] [--timeout SECONDS] <command>
//! ```
//!
//! Commands: `topology`, `deploy FILE...`, `create ID [--with-result]`, `publish NAME
//! --correlation-key KEY`, `activate TYPE`, `complete JOB_KEY`, `fail JOB_KEY --retries N`,
//! `throw-error JOB_KEY CODE`, `retries JOB_KEY N`, `resolve INCIDENT_KEY`, `cancel KEY`,
//! `set-variables KEY JSON`; `sluicectl --help` lists their options. Arguments are parsed and
//! checked by `sluice_tools::ctl` before anything is sent; this file connects, sends one
//! request and prints the answer (text, or one JSON object with `--json`).
//!
//! Exit status: 0 on success; 1 when the gateway refuses or cannot be reached, with
//! `sluicectl: CODE: message` on stderr; 2 for bad arguments, with the command's usage.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use sluice_broker::gateway::proto::gateway_protocol as pb;
use sluice_tools::ctl::{self, Command, GATEWAY_ENV, Invocation, Output, USAGE};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

type Client = pb::gateway_client::GatewayClient<Channel>;

/// Largest file `deploy` reads (the gateway takes 4 MiB messages).
const RESOURCE_BYTES_MAX: u64 = 4 << 20;
/// Extra time the client waits beyond the deadline it gives the gateway, so the gateway's own
/// answer (usually `DEADLINE_EXCEEDED` with a reason) arrives first.
const DEADLINE_MARGIN: Duration = Duration::from_secs(1);

/// An error for stderr: a gRPC code name and a one-line message.
#[derive(Debug)]
struct Failure {
    code: &'static str,
    message: String,
}

impl Failure {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    fn from_status(status: &Status, timeout: Duration) -> Self {
        // tonic's own client-side deadline surfaces as CANCELLED "Timeout expired".
        if status.code() == Code::Cancelled && status.message() == "Timeout expired" {
            return Self::deadline(timeout);
        }
        let message = with_sources(
            status.message().to_owned(),
            std::error::Error::source(status),
        );
        Failure::new(ctl::code_name(status.code()), message)
    }

    fn deadline(timeout: Duration) -> Self {
        Failure::new(
            "DEADLINE_EXCEEDED",
            format!(
                "no answer within {} s; raise --timeout if the work takes longer",
                timeout.as_secs()
            ),
        )
    }
}

/// `message` followed by each error of the `source` chain that it doesn't already say.
fn with_sources(mut message: String, mut source: Option<&dyn std::error::Error>) -> String {
    while let Some(error) = source {
        let text = error.to_string();
        if !message.ends_with(&text) {
            if !message.is_empty() {
                message.push_str(": ");
            }
            message.push_str(&text);
        }
        source = error.source();
    }
    message
}

async fn connect(invocation: &Invocation) -> Result<Client, Failure> {
    let endpoint = Endpoint::from_shared(invocation.gateway_url())
        .map_err(|error| Failure::new("INVALID_ARGUMENT", format!("--gateway: {error}")))?
        .connect_timeout(invocation.timeout);
    let connected = tokio::time::timeout(invocation.timeout + DEADLINE_MARGIN, endpoint.connect())
        .await
        .map_err(|_| Failure::deadline(invocation.timeout))?;
    let channel = connected.map_err(|error| {
        let message = with_sources(
            format!("cannot reach the gateway at {}", invocation.gateway),
            Some(&error),
        );
        Failure::new("UNAVAILABLE", message)
    })?;
    Ok(pb::gateway_client::GatewayClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX))
}

/// A request the gateway should answer within `timeout` (sent as `grpc-timeout`).
fn request<T>(body: T, timeout: Duration) -> Request<T> {
    let mut request = Request::new(body);
    request.set_timeout(timeout);
    request
}

/// Awaits `call`, giving up `DEADLINE_MARGIN` after `timeout`.
async fn within<T>(
    timeout: Duration,
    call: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(timeout + DEADLINE_MARGIN, call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(Failure::from_status(&status, timeout)),
        Err(_) => Err(Failure::deadline(timeout)),
    }
}

fn read_resource(path: &Path) -> Result<pb::Resource, Failure> {
    let name = path
        .file_name()
        .and_then(|name| name.to_str())
        .ok_or_else(|| {
            Failure::new(
                "INVALID_ARGUMENT",
                format!("{}: not a file name", path.display()),
            )
        })?
        .to_owned();
    let unreadable = |error: std::io::Error| {
        Failure::new(
            "INVALID_ARGUMENT",
            format!("reading {}: {error}", path.display()),
        )
    };
    let bytes = std::fs::metadata(path).map_err(unreadable)?.len();
    if bytes > RESOURCE_BYTES_MAX {
        return Err(Failure::new(
            "INVALID_ARGUMENT",
            format!(
                "{} has {bytes} bytes; the gateway takes at most {RESOURCE_BYTES_MAX}",
                path.display()
            ),
        ));
    }
    let content = std::fs::read(path).map_err(unreadable)?;
    Ok(pb::Resource { name, content })
}

#[expect(
    clippy::too_many_lines,
    reason = "one arm per command, each a request and its output"
)]
async fn run(invocation: &Invocation) -> Result<Output, Failure> {
    let timeout = invocation.timeout;
    // Read files before connecting, so a typo fails without a gateway.
    let resources = match &invocation.command {
        Command::Deploy { files } => files
            .iter()
            .map(|path| read_resource(path))
            .collect::<Result<Vec<_>, _>>()?,
        _ => Vec::new(),
    };
    let mut client = connect(invocation).await?;
    Ok(match &invocation.command {
        Command::Help => ctl::empty_output(USAGE.to_owned()),
        Command::Topology => {
            let response = within(
                timeout,
                client.topology(request(pb::TopologyRequest {}, timeout)),
            )
            .await?;
            ctl::topology_output(&response)
        }
        Command::Deploy { .. } => {
            let body = pb::DeployResourceRequest {
                resources,
                tenant_id: String::new(),
            };
            let response = within(timeout, client.deploy_resource(request(body, timeout))).await?;
            ctl::deploy_output(&response)
        }
        Command::Create {
            bpmn_process_id,
            version,
            variables,
            with_result,
            fetch_variables,
        } => {
            let create = pb::CreateProcessInstanceRequest {
                bpmn_process_id: bpmn_process_id.clone(),
                version: *version,
                variables: variables.clone(),
                ..Default::default()
            };
            if *with_result {
                let body = pb::CreateProcessInstanceWithResultRequest {
                    request: Some(create),
                    request_timeout: i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX),
                    fetch_variables: fetch_variables.clone(),
                };
                let response = within(
                    timeout,
                    client.create_process_instance_with_result(request(body, timeout)),
                )
                .await?;
                ctl::create_with_result_output(&response)
            } else {
                let response = within(
                    timeout,
                    client.create_process_instance(request(create, timeout)),
                )
                .await?;
                ctl::create_output(&response)
            }
        }
        Command::Publish {
            name,
            correlation_key,
            variables,
            time_to_live_ms,
            message_id,
        } => {
            let body = pb::PublishMessageRequest {
                name: name.clone(),
                correlation_key: correlation_key.clone(),
                time_to_live: *time_to_live_ms,
                message_id: message_id.clone(),
                variables: variables.clone(),
                tenant_id: String::new(),
            };
            let response = within(timeout, client.publish_message(request(body, timeout))).await?;
            ctl::publish_output(name, &response)
        }
        Command::Activate {
            job_type,
            max_jobs_to_activate,
            job_timeout_ms,
            worker,
            request_timeout_ms,
        } => {
            let body = pb::ActivateJobsRequest {
                r#type: job_type.clone(),
                worker: worker.clone(),
                timeout: *job_timeout_ms,
                max_jobs_to_activate: *max_jobs_to_activate,
                fetch_variable: Vec::new(),
                request_timeout: *request_timeout_ms,
                tenant_ids: Vec::new(),
            };
            // No grpc-timeout: the gateway long-polls for requestTimeout and then ends the
            // stream; this side only guards against a gateway that never does.
            let deadline = invocation.command.call_deadline(timeout);
            let jobs = tokio::time::timeout(deadline + DEADLINE_MARGIN, async {
                let mut stream = client
                    .activate_jobs(Request::new(body))
                    .await
                    .map_err(|status| Failure::from_status(&status, deadline))?
                    .into_inner();
                let mut jobs = Vec::new();
                while let Some(response) = stream
                    .message()
                    .await
                    .map_err(|status| Failure::from_status(&status, deadline))?
                {
                    jobs.extend(response.jobs);
                }
                Ok::<_, Failure>(jobs)
            })
            .await
            .map_err(|_| Failure::deadline(deadline))??;
            ctl::activate_output(job_type, &jobs)
        }
        Command::Complete { job_key, variables } => {
            let body = pb::CompleteJobRequest {
                job_key: *job_key,
                variables: variables.clone(),
            };
            within(timeout, client.complete_job(request(body, timeout))).await?;
            ctl::empty_output(format!("completed job {job_key}"))
        }
        Command::Fail {
            job_key,
            retries,
            error_message,
            retry_backoff_ms,
            variables,
        } => {
            let body = pb::FailJobRequest {
                job_key: *job_key,
                retries: *retries,
                error_message: error_message.clone(),
                retry_back_off: *retry_backoff_ms,
                variables: variables.clone(),
            };
            within(timeout, client.fail_job(request(body, timeout))).await?;
            ctl::empty_output(if *retries == 0 {
                format!("failed job {job_key}, no retries left: an incident is raised")
            } else {
                format!("failed job {job_key}, {retries} retries left")
            })
        }
        Command::ThrowError {
            job_key,
            error_code,
            error_message,
            variables,
        } => {
            let body = pb::ThrowErrorRequest {
                job_key: *job_key,
                error_code: error_code.clone(),
                error_message: error_message.clone(),
                variables: variables.clone(),
            };
            within(timeout, client.throw_error(request(body, timeout))).await?;
            ctl::empty_output(format!("threw error {error_code} from job {job_key}"))
        }
        Command::Retries { job_key, retries } => {
            let body = pb::UpdateJobRetriesRequest {
                job_key: *job_key,
                retries: *retries,
                operation_reference: None,
            };
            within(timeout, client.update_job_retries(request(body, timeout))).await?;
            ctl::empty_output(format!("set the retries of job {job_key} to {retries}"))
        }
        Command::Resolve { incident_key } => {
            let body = pb::ResolveIncidentRequest {
                incident_key: *incident_key,
                operation_reference: None,
            };
            within(timeout, client.resolve_incident(request(body, timeout))).await?;
            ctl::empty_output(format!("resolved incident {incident_key}"))
        }
        Command::Cancel {
            process_instance_key,
        } => {
            let body = pb::CancelProcessInstanceRequest {
                process_instance_key: *process_instance_key,
                operation_reference: None,
            };
            within(
                timeout,
                client.cancel_process_instance(request(body, timeout)),
            )
            .await?;
            ctl::empty_output(format!("canceled instance {process_instance_key}"))
        }
        Command::SetVariables {
            element_instance_key,
            variables,
            local,
        } => {
            let body = pb::SetVariablesRequest {
                element_instance_key: *element_instance_key,
                variables: variables.clone(),
                local: *local,
                operation_reference: None,
            };
            let response = within(timeout, client.set_variables(request(body, timeout))).await?;
            ctl::set_variables_output(*element_instance_key, &response)
        }
    })
}

fn main() -> ExitCode {
    let gateway_env = std::env::var(GATEWAY_ENV).ok();
    let invocation = match ctl::parse(std::env::args().skip(1), gateway_env.as_deref()) {
        Ok(invocation) => invocation,
        Err(error) => {
            eprintln!("sluicectl: {error}\n{}", error.usage());
            return ExitCode::from(2);
        }
    };
    if invocation.command == Command::Help {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("sluicectl: INTERNAL: starting the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&invocation)) {
        Ok(output) => {
            if invocation.json {
                println!("{}", output.json);
            } else {
                println!("{}", output.text);
            }
            ExitCode::SUCCESS
        }
        Err(failure) => {
            let message = failure
                .message
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            eprintln!("sluicectl: {}: {message}", failure.code);
            ExitCode::FAILURE
        }
    }
}
