//! The gRPC services: [`GatewayService`] (`gateway_protocol.Gateway`) and [`HealthService`]
//! (`grpc.health.v1.Health`).
//!
//! Each unary RPC validates its request, builds the engine command ([`super::mapping`]), picks
//! the partition (DESIGN.md: instances round-robin, messages by correlation-key hash,
//! deployments on partition 1, everything keyed by the partition bits of its key) and sends it
//! with [`CommandClient`] within the call's deadline (`grpc-timeout`, else 10 s).
//!
//! `ActivateJobs` and `StreamActivatedJobs` are in [`activation`]. An `ActivateJobs` long-polls
//! for its `requestTimeout` (`gateway.longPolling.timeout` when 0, one round when negative or
//! when `gateway.longPolling.enabled` is false), shortened to
//! `gateway.longPolling.maxRequestTimeout` and to a little less than its gRPC deadline.

mod activation;

pub use activation::{
    IDLE_ACTIVATIONS_PER_SECOND_MAX, LONG_POLL_PAUSE_MAX, LONG_POLL_PAUSE_MIN,
    PARK_RETRY_PAUSE_MAX, PollSlots, long_poll_pause_max,
};

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sluice_engine::record::JobValue;
use sluice_engine::{Intent, Record, RejectionType, subscription_partition};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::client::CommandClient;
use super::mapping::{
    self, Activation, DEFAULT_REQUEST_TIMEOUT, REQUEST_TIMEOUT_MAX, check_activation,
    partition_of_key,
};
use super::proto::gateway_protocol as pb;
use super::proto::health as hpb;
use super::{ClusterShapeView, SharedGatewayView, read_view};
use crate::partitioning::PartitionId;
use crate::topology::Role;

/// The partition deployments go to.
const DEPLOYMENT_PARTITION: PartitionId = 1;
/// Responses buffered per streaming call before the poll waits for the client.
const STREAM_BUFFER: usize = 16;
/// Most jobs one `ActivateJobs` call may ask for.
const MAX_JOBS_TO_ACTIVATE_MAX: i32 = 10_000;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// `gateway_protocol.Gateway`. See the module docs.
#[derive(Debug, Clone)]
pub struct GatewayService {
    client: CommandClient,
    view: SharedGatewayView,
    shape: ClusterShapeView,
    next_partition: Arc<AtomicU32>,
    polling: LongPolling,
    slots: PollSlots,
}

/// How `ActivateJobs` long-polls (`gateway.longPolling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongPolling {
    /// `enabled`: false answers after one round.
    pub enabled: bool,
    /// `timeout`: the long poll of a `requestTimeout` of 0.
    pub timeout: Duration,
    /// `maxRequestTimeout`: a longer `requestTimeout` is shortened to this.
    pub request_timeout_max: Duration,
}

impl Default for LongPolling {
    fn default() -> Self {
        LongPolling {
            enabled: true,
            timeout: DEFAULT_REQUEST_TIMEOUT,
            request_timeout_max: Duration::from_hours(1),
        }
    }
}

/// How long before the client's gRPC deadline a long poll answers empty.
const LONG_POLL_MARGIN: Duration = Duration::from_millis(50);
/// Longest a call gives up before its `grpc-timeout`: tonic ends a call whose `grpc-timeout`
/// passed with `CANCELLED`, so the gateway answers `DEADLINE_EXCEEDED` (Zeebe's code) just
/// before that.
const DEADLINE_MARGIN_MAX: Duration = Duration::from_millis(20);

/// The deadline of a call: its `grpc-timeout` less a margin (a tenth of it, at most
/// [`DEADLINE_MARGIN_MAX`]), else `default`; bounded by [`REQUEST_TIMEOUT_MAX`].
fn deadline_of<T>(request: &Request<T>, default: Duration) -> Instant {
    let timeout = request
        .metadata()
        .get("grpc-timeout")
        .and_then(|value| value.to_str().ok())
        .and_then(mapping::parse_grpc_timeout)
        .map_or(default, |timeout| {
            timeout.saturating_sub((timeout / 10).min(DEADLINE_MARGIN_MAX))
        })
        .min(REQUEST_TIMEOUT_MAX);
    Instant::now() + timeout
}

impl GatewayService {
    /// A service routing by `view` over a cluster of `shape`.
    #[must_use]
    pub fn new(
        shape: ClusterShapeView,
        view: SharedGatewayView,
        limits: crate::limits::SizeLimits,
        link: crate::link::Link,
        node_id: crate::partitioning::NodeId,
        polling: LongPolling,
        slots: PollSlots,
    ) -> Self {
        GatewayService {
            client: CommandClient::new(Arc::clone(&view), link, limits.command_bytes, node_id),
            view,
            shape,
            next_partition: Arc::new(AtomicU32::new(0)),
            polling,
            slots,
        }
    }

    /// The next partition of the round-robin.
    fn round_robin(&self) -> PartitionId {
        self.next_partition.fetch_add(1, Ordering::Relaxed) % self.shape.partitions_count.max(1) + 1
    }

    async fn send(
        &self,
        partition_id: PartitionId,
        record: &Record,
        deadline: Instant,
    ) -> Result<Record, Status> {
        self.client.command(partition_id, record, deadline).await
    }

    /// Creates an instance on the next partition of the round-robin (or the next one with a
    /// leader). A process a deployment has been acknowledged for is on the deployment partition
    /// at once and on the others once distributed: a creation the partition answers `NOT_FOUND`
    /// is asked of the deployment partition, so a process can be instantiated as soon as its
    /// deployment is answered.
    async fn create(&self, command: &Record, deadline: Instant) -> Result<Record, Status> {
        let (partition_id, reply) = self
            .client
            .create(
                self.round_robin(),
                self.shape.partitions_count,
                command,
                deadline,
            )
            .await?;
        let not_found = reply
            .rejection
            .as_ref()
            .is_some_and(|rejection| rejection.rejection_type == RejectionType::NotFound);
        if not_found && partition_id != DEPLOYMENT_PARTITION {
            return self
                .client
                .create(DEPLOYMENT_PARTITION, 1, command, deadline)
                .await
                .map(|(_, reply)| reply);
        }
        Ok(reply)
    }

    async fn deploy(
        &self,
        resources: Vec<(String, Vec<u8>)>,
        deadline: Instant,
    ) -> Result<(i64, Vec<pb::ProcessMetadata>), Status> {
        let command = mapping::deploy_command(resources)?;
        let reply = self.send(DEPLOYMENT_PARTITION, &command, deadline).await?;
        mapping::deployed_processes(&reply)
    }

    /// Sends a job command to the job's partition and checks it was accepted.
    async fn job_command(
        &self,
        job_key: i64,
        intent: Intent,
        value: JobValue,
        deadline: Instant,
    ) -> Result<(), Status> {
        let partition_id = partition_of_key("job key", job_key, self.shape.partitions_count)?;
        let reply = self
            .send(
                partition_id,
                &mapping::job_command(job_key, intent, value),
                deadline,
            )
            .await?;
        mapping::expect_accepted(&reply)
    }

    /// The partitions in round-robin order starting at the next one.
    fn rotation(&self) -> Vec<PartitionId> {
        let count = self.shape.partitions_count.max(1);
        let first = self.round_robin();
        (0..count).map(|i| (first - 1 + i) % count + 1).collect()
    }
}

#[tonic::async_trait]
impl pb::gateway_server::Gateway for GatewayService {
    async fn topology(
        &self,
        _request: Request<pb::TopologyRequest>,
    ) -> Result<Response<pb::TopologyResponse>, Status> {
        let brokers = read_view(&self.view, |view| {
            view.brokers
                .iter()
                .map(|broker| {
                    let (host, port) = match broker.gateway.rsplit_once(':') {
                        Some((host, port)) => (host.to_owned(), port.parse().unwrap_or(0)),
                        None => (broker.gateway.clone(), 0),
                    };
                    let partitions = view
                        .partitions
                        .iter()
                        .filter_map(|partition| {
                            let role = partition
                                .replicas
                                .iter()
                                .find(|(node_id, _)| *node_id == broker.node_id)?
                                .1;
                            let role = match role {
                                Role::Leader => pb::partition::PartitionBrokerRole::Leader,
                                Role::Follower => pb::partition::PartitionBrokerRole::Follower,
                                Role::Inactive => pb::partition::PartitionBrokerRole::Inactive,
                            };
                            // An inactive replica is down: it failed and is being reopened.
                            let health = if role == pb::partition::PartitionBrokerRole::Inactive {
                                pb::partition::PartitionBrokerHealth::Unhealthy
                            } else {
                                pb::partition::PartitionBrokerHealth::Healthy
                            };
                            Some(pb::Partition {
                                partition_id: i32::try_from(partition.partition_id)
                                    .unwrap_or(i32::MAX),
                                role: role.into(),
                                health: health.into(),
                            })
                        })
                        .collect();
                    pb::BrokerInfo {
                        node_id: i32::try_from(broker.node_id).unwrap_or(i32::MAX),
                        host,
                        port,
                        partitions,
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                    }
                })
                .collect()
        });
        let count = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
        Ok(Response::new(pb::TopologyResponse {
            brokers,
            cluster_size: count(self.shape.cluster_size),
            partitions_count: count(self.shape.partitions_count),
            replication_factor: count(self.shape.replication_factor),
            gateway_version: format!("sluice {}", env!("CARGO_PKG_VERSION")),
        }))
    }

    async fn deploy_resource(
        &self,
        request: Request<pb::DeployResourceRequest>,
    ) -> Result<Response<pb::DeployResourceResponse>, Status> {
        let deadline = deadline_of(&request, DEFAULT_REQUEST_TIMEOUT);
        let request = request.into_inner();
        mapping::check_tenant(&request.tenant_id)?;
        let resources = request
            .resources
            .into_iter()
            .map(|resource| (resource.name, resource.content))
            .collect();
        let (key, processes) = self.deploy(resources, deadline).await?;
        Ok(Response::new(pb::DeployResourceResponse {
            key,
            deployments: processes
                .into_iter()
                .map(|process| pb::Deployment {
                    metadata: Some(pb::deployment::Metadata::Process(process)),
                })
                .collect(),
            tenant_id: mapping::DEFAULT_TENANT.to_owned(),
        }))
    }

    async fn deploy_process(
        &self,
        request: Request<pb::DeployProcessRequest>,
    ) -> Result<Response<pb::DeployProcessResponse>, Status> {
        let deadline = deadline_of(&request, DEFAULT_REQUEST_TIMEOUT);
        let resources = request
            .into_inner()
            .processes
            .into_iter()
            .map(|process| (process.name, process.definition))
            .collect();
        let (key, processes) = self.deploy(resources, deadline).await?;
        Ok(Response::new(pb::DeployProcessResponse { key, processes }))
    }

    async fn create_process_instance(
        &self,
        request: Request<pb::CreateProcessInstanceRequest>,
    ) -> Result<Response<pb::CreateProcessInstanceResponse>, Status> {
        let deadline = deadline_of(&request, DEFAULT_REQUEST_TIMEOUT);
        let command = mapping::create_command(request.get_ref(), false, Vec::new())?;
        let reply = self.create(&command, deadline).await?;
        Ok(Response::new(mapping::create_response(&reply)?))
    }

    async fn create_process_instance_with_result(
        &self,
        request: Request<pb::CreateProcessInstanceWithResultRequest>,
    ) -> Result<Response<pb::CreateProcessInstanceWithResultResponse>, Status> {
        // `requestTimeout` bounds the wait for the result, within the call's own deadline.
        let deadline = match u64::try_from(request.get_ref().request_timeout) {
            Ok(ms) if ms > 0 => {
                let timeout = Duration::from_millis(ms).min(REQUEST_TIMEOUT_MAX);
                deadline_of(&request, timeout).min(Instant::now() + timeout)
            }
            _ => deadline_of(&request, DEFAULT_REQUEST_TIMEOUT),
        };
        let request = request.into_inner();
        let Some(create) = request.request else {
            return Err(Status::invalid_argument(
                "Expected the creation request in 'request', but it is missing",
            ));
        };
        let command = mapping::create_command(&create, true, request.fetch_variables)?;
        let reply = self.create(&command, deadline).await?;
        Ok(Response::new(mapping::create_with_result_response(&reply)?))
    }

    async fn cancel_process_instance(
        &self,
        request: Request<pb::CancelProcessInstanceRequest>,
    ) -> Result<Response<pb::CancelProcessInstanceResponse>, Status> {
        let deadline = deadline_of(&request, DEFAULT_REQUEST_TIMEOUT);
        let key = request.get_ref().process_instance_key;
        let partition_id =
            partition_of_key("process instance key", key, self.shape.partitions_count)?;
        let reply = self
            .send(partition_id, &mapping::cancel_command(key), deadline)
            .await?;
        mapping::expect_accepted(&reply)?;
        Ok(Response::new(pb::CancelProcessInstanceResponse {}))
    }

    async fn modify_process_instance(
        &self,
        _request: Request<pb::ModifyProcessInstanceRequest>,
    ) -> Result<Response<pb::ModifyProcessInstanceResponse>, Status> {
        Err(mapping::unimplemented("ModifyProcessInstance"))
    }

    async fn migrate_process_instance(
        &self,
        _request: Request<pb::MigrateProcessInstanceRequest>,
    ) -> Result<Response<pb::MigrateProcessInstanceResponse>, Status> {
        Err(mapping::unimplemented("MigrateProcessInstance"))
    }

    type ActivateJobsStream = BoxStream<pb::ActivateJobsResponse>;

    async fn activate_jobs(
        &self,
        request: Request<pb::ActivateJobsRequest>,
    ) -> Result<Response<Self::ActivateJobsStream>, Status> {
        let body = request.get_ref();
        let long_poll = self.polling.enabled && body.request_timeout >= 0;
        let poll_for = match u64::try_from(body.request_timeout) {
            Ok(ms) if ms > 0 => Duration::from_millis(ms).min(self.polling.request_timeout_max),
            _ => self.polling.timeout,
        };
        // The long poll ends after requestTimeout, and a little before the client's own gRPC
        // deadline when that is shorter (an empty answer, not DEADLINE_EXCEEDED, which workers
        // count as a broken connection).
        let client_deadline = deadline_of(&request, poll_for);
        let answer_by = client_deadline
            .checked_sub(LONG_POLL_MARGIN)
            .unwrap_or(client_deadline);
        let deadline = (Instant::now() + poll_for).min(answer_by);
        let body = request.into_inner();
        check_activation(&body.r#type, body.timeout, &body.tenant_ids)?;
        if !(1..=MAX_JOBS_TO_ACTIVATE_MAX).contains(&body.max_jobs_to_activate) {
            return Err(Status::invalid_argument(format!(
                "Expected maxJobsToActivate between 1 and {MAX_JOBS_TO_ACTIVATE_MAX}, but got {}",
                body.max_jobs_to_activate
            )));
        }
        let long_poll = if long_poll {
            Some(self.slots.long_poll()?)
        } else {
            None
        };
        let call = activation::ActivateCall {
            activation: Activation {
                job_type: body.r#type,
                worker: body.worker,
                timeout_ms: body.timeout,
                fetch_variables: body.fetch_variable,
            },
            max_jobs: body.max_jobs_to_activate,
            long_poll,
            deadline,
        };
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(self.clone().activate(call, sender));
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    type StreamActivatedJobsStream = BoxStream<pb::ActivatedJob>;

    async fn stream_activated_jobs(
        &self,
        request: Request<pb::StreamActivatedJobsRequest>,
    ) -> Result<Response<Self::StreamActivatedJobsStream>, Status> {
        let body = request.into_inner();
        check_activation(&body.r#type, body.timeout, &body.tenant_ids)?;
        let slot = self.slots.job_stream()?;
        let activation = Activation {
            job_type: body.r#type,
            worker: body.worker,
            timeout_ms: body.timeout,
            fetch_variables: body.fetch_variable,
        };
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        self.stream(&activation, slot, &sender);
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn complete_job(
        &self,
        request: Request<pb::CompleteJobRequest>,
    ) -> Result<Response<pb::CompleteJobResponse>, Status> {
        let deadline = deadline_of(&request, DEFAULT_REQUEST_TIMEOUT);
        let body = request.into_inner();
        let value = JobValue {
            variables: mapping::check_variables("variables", &body.variables)?.into(),
            ..JobValue::default()
        };
        self.job_command(body.job_key, Intent::Complete, value, deadline)
            .await?;
        Ok(Response::new(pb::CompleteJobResponse {}))
    }

    async fn fail_job(
        &self,
        request: Request<pb::FailJobRequest>,
    ) -> Result<Response<pb::FailJobResponse>, Status> {
        let deadline = deadline_of(&request, DEFAULT_REQUEST_TIMEOUT);
        let body = request.into_inner();
        if body.retry_back_off < 0 {
            return Err(Status::invalid_argument(format!(
                "Expected a retry back-off of 0 ms or more, but got {}",
                body.retry_back_off
            )));
        }
        let value = JobValue {
            retries: body.retries,
            error_message: body.error_message,
            retry_backoff: body.retry_back_off,
            variables: mapping::check_variables("variables", &body.variables)?.into(),
            ..JobValue::default()
        };
        self.job_command(body.job_key, Intent::Fail, value, deadline)
            .await?;
        Ok(Response::new(pb::FailJobResponse {}))
    }

    async fn throw_error(
        &self,
        request: Request<pb::ThrowErrorRequest>,
    ) -> Result<Response<pb::ThrowErrorResponse>, Status> {
        let deadline = deadline_of(&request, DEFAULT_REQUEST_TIMEOUT);
        let body = request.into_inner();
        if body.error_code.is_empty() {
            return Err(Status::invalid_argument(
                "Expected an error code to throw, but it is empty",
            ));
        }
        let value = JobValue {
            error_code: body.error_code,
            error_message: body.error_message,
            variables: mapping::check_variables("variables", &body.variables)?.into(),
            ..JobValue::default()
        };
        self.job_command(body.job_key, Intent::ThrowError, value, deadline)
            .await?;
        Ok(Response::new(pb::ThrowErrorResponse {}))
    }

    async fn update_job_retries(
        &self,
        request: Request<pb::UpdateJobRetriesRequest>,
    ) -> Result<Response<pb::UpdateJobRetriesResponse>, Status> {
        let deadline = deadline_of(&request, DEFAULT_REQUEST_TIMEOUT);
        let body = request.into_inner();
        if body.retries < 1 {
            return Err(Status::invalid_argument(format!(
                "Expected retries to be at least 1, but got {}",
                body.retries
            )));
        }
        let value = JobValue {
            retries: body.retries,
            ..JobValue::default()
        };
        self.job_command(body.job_key, Intent::UpdateRetries, value, deadline)
            .await?;
        Ok(Response::new(pb::UpdateJobRetriesResponse {}))
    }

    async fn update_job_timeout(
        &self,
        request: Request<pb::UpdateJobTimeoutRequest>,
    ) -> Result<Response<pb::UpdateJobTimeoutResponse>, Status> {
        let deadline = deadline_of(&request, DEFAULT_REQUEST_TIMEOUT);
        let body = request.into_inner();
        if body.timeout < 0 {
            return Err(Status::invalid_argument(format!(
                "Expected a timeout of 0 ms or more, but got {}",
                body.timeout
            )));
        }
        let value = JobValue {
            timeout: body.timeout,
            ..JobValue::default()
        };
        self.job_command(body.job_key, Intent::UpdateTimeout, value, deadline)
            .await?;
        Ok(Response::new(pb::UpdateJobTimeoutResponse {}))
    }

    async fn publish_message(
        &self,
        request: Request<pb::PublishMessageRequest>,
    ) -> Result<Response<pb::PublishMessageResponse>, Status> {
        let deadline = deadline_of(&request, DEFAULT_REQUEST_TIMEOUT);
        let body = request.into_inner();
        let command = mapping::publish_command(&body)?;
        let partition_id =
            subscription_partition(&body.correlation_key, self.shape.partitions_count.max(1));
        let reply = self.send(partition_id, &command, deadline).await?;
        mapping::expect_event(&reply, Intent::Published)?;
        Ok(Response::new(pb::PublishMessageResponse {
            key: reply.key,
            tenant_id: mapping::DEFAULT_TENANT.to_owned(),
        }))
    }

    async fn broadcast_signal(
        &self,
        _request: Request<pb::BroadcastSignalRequest>,
    ) -> Result<Response<pb::BroadcastSignalResponse>, Status> {
        Err(mapping::unimplemented("BroadcastSignal"))
    }

    async fn set_variables(
        &self,
        request: Request<pb::SetVariablesRequest>,
    ) -> Result<Response<pb::SetVariablesResponse>, Status> {
        let deadline = deadline_of(&request, DEFAULT_REQUEST_TIMEOUT);
        let body = request.into_inner();
        let partition_id = partition_of_key(
            "element instance key",
            body.element_instance_key,
            self.shape.partitions_count,
        )?;
        let command = mapping::set_variables_command(&body)?;
        let reply = self.send(partition_id, &command, deadline).await?;
        mapping::expect_event(&reply, Intent::Updated)?;
        Ok(Response::new(pb::SetVariablesResponse { key: reply.key }))
    }

    async fn resolve_incident(
        &self,
        request: Request<pb::ResolveIncidentRequest>,
    ) -> Result<Response<pb::ResolveIncidentResponse>, Status> {
        let deadline = deadline_of(&request, DEFAULT_REQUEST_TIMEOUT);
        let key = request.get_ref().incident_key;
        let partition_id = partition_of_key("incident key", key, self.shape.partitions_count)?;
        let reply = self
            .send(partition_id, &mapping::resolve_command(key), deadline)
            .await?;
        mapping::expect_event(&reply, Intent::Resolved)?;
        Ok(Response::new(pb::ResolveIncidentResponse {}))
    }

    async fn evaluate_decision(
        &self,
        _request: Request<pb::EvaluateDecisionRequest>,
    ) -> Result<Response<pb::EvaluateDecisionResponse>, Status> {
        Err(mapping::unimplemented("EvaluateDecision"))
    }

    async fn delete_resource(
        &self,
        _request: Request<pb::DeleteResourceRequest>,
    ) -> Result<Response<pb::DeleteResourceResponse>, Status> {
        Err(mapping::unimplemented("DeleteResource"))
    }
}

/// `grpc.health.v1.Health`: SERVING for the server and the gateway service once the gateway
/// is up.
#[derive(Debug, Clone, Copy)]
pub struct HealthService;

const GATEWAY_SERVICE_NAME: &str = "gateway_protocol.Gateway";

fn serving(service: &str) -> Option<hpb::HealthCheckResponse> {
    (service.is_empty() || service == GATEWAY_SERVICE_NAME).then(|| hpb::HealthCheckResponse {
        status: hpb::health_check_response::ServingStatus::Serving.into(),
    })
}

#[tonic::async_trait]
impl hpb::health_server::Health for HealthService {
    async fn check(
        &self,
        request: Request<hpb::HealthCheckRequest>,
    ) -> Result<Response<hpb::HealthCheckResponse>, Status> {
        let service = &request.get_ref().service;
        serving(service).map(Response::new).ok_or_else(|| {
            Status::not_found(format!(
                "unknown service '{service}'; this server knows '' and '{GATEWAY_SERVICE_NAME}'"
            ))
        })
    }

    type WatchStream = BoxStream<hpb::HealthCheckResponse>;

    async fn watch(
        &self,
        request: Request<hpb::HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        use tokio_stream::StreamExt as _;
        let status = serving(&request.get_ref().service).unwrap_or(hpb::HealthCheckResponse {
            status: hpb::health_check_response::ServingStatus::ServiceUnknown.into(),
        });
        // The status never changes while the gateway runs: send it, then hold the call open.
        let stream = tokio_stream::once(Ok(status)).chain(tokio_stream::pending());
        Ok(Response::new(Box::pin(stream)))
    }
}
