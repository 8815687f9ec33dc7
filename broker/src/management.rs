//! The management API on port 9600: readiness, health, metrics and the actuator endpoints.
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /`, `GET /dashboard` | the live dashboard: one self-contained HTML page polling the rest |
//! | `GET /ready` | 200 once every local replica knows its partition's leader, else 503 |
//! | `GET /health` | 200 unless a local replica is stopped or its last flush failed, else 503 |
//! | `GET /metrics` | Prometheus text: commit and flush latency histograms, roles, counters |
//! | `GET /actuator/cluster` | the topology: brokers, their state, partition roles (JSON) |
//! | `GET /actuator/partitions` | this broker's replicas: role, term, indexes (JSON) |
//! | `POST /actuator/rebalance` | leadership moves to the priority-preferred replicas (JSON); token |
//! | `POST /actuator/faults?block=a:p,b:q` | test switch: drop traffic with these peers (empty clears); token, and only with `management.faults.enabled` |
//! | `POST /actuator/faults?failStorage=P&reopenFailures=K` | test switch: the local replica of partition P fails as on a storage error, and its next K reopenings fail; `healStorage=P` lets the next one succeed; same conditions |
//!
//! # Safe by default
//!
//! Reads are open; everything else needs the management token, and the fault switch exists only
//! when configured. Before routing, [`Access::check`] decides on every request (the rules are in
//! [`access`]); a refused one gets 401 (no or wrong `Authorization: Bearer`), 403 (no token
//! configured, or signs of a web page on another site: `Origin`, `Sec-Fetch-Site`, a form's
//! content type) or 404 (the fault switch is off), never reaches a handler, and is counted in
//! `sluice_management_requests_refused_total{reason}`. The keys are `management.security.token`
//! (or `tokenFile`) and `management.faults.enabled` ([`crate::config::ManagementConfig`]):
//!
//! ```sh
//! curl -X POST -H "Authorization: Bearer $(cat management-token)" \
//!     http://127.0.0.1:9600/actuator/rebalance
//! ```
//!
//! `sluice dev` writes a random token to `management-token` in its directory and prints it.
//!
//! The dashboard (`dashboard.html`, built into the binary) loads nothing from elsewhere: its
//! script polls `/metrics`, `/actuator/partitions` and `/actuator/cluster` every second and draws
//! latency histograms, throughput and partition roles from them. It only reads: it has no
//! control that changes the cluster (rebalance from a shell, as above), so it needs no token.
//!
//! A rebalance request is fanned out to every live broker (with `?local=true`), since only a
//! partition's leader can hand its leadership over; the fanned-out requests carry this broker's
//! token, so every broker of a cluster must have the same one.

pub mod access;

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use serde_json::{Value, json};
use sluice_log::raft::Role as RaftRole;

pub use access::{Access, CrossSite, FAULTS_PATH, Verdict};

use crate::http::{Handler, HttpRequest, HttpResponse};
use crate::metrics::PrometheusText;
use crate::node::Node;
use crate::partition::StorageFault;
use crate::topology::{MemberState, Role};

/// Latency histogram bucket bounds, in microseconds.
const LATENCY_BUCKETS_US: [u64; 16] = [
    100, 200, 300, 500, 750, 1_000, 1_500, 2_000, 3_000, 5_000, 10_000, 20_000, 50_000, 100_000,
    500_000, 1_000_000,
];
/// The dashboard page: HTML with inline CSS and script, no external resources.
const DASHBOARD_HTML: &str = include_str!("dashboard.html");
/// Time allowed for one fanned-out rebalance request.
const FAN_OUT_TIMEOUT: Duration = Duration::from_secs(2);

/// The management API of one node.
#[derive(Debug)]
pub struct Management {
    node: Rc<Node>,
    access: Access,
    /// The broker's gRPC gateway's counts, when it runs one.
    gateway: Option<Arc<crate::gateway::GatewayStats>>,
    /// Requests refused, by position in [`Verdict::REFUSALS`].
    refused: [Cell<u64>; Verdict::REFUSALS.len()],
}

impl Management {
    /// Serves `node` (and the counts of its broker's `gateway`); `access` decides who may
    /// change it.
    #[must_use]
    pub fn new(
        node: Rc<Node>,
        access: Access,
        gateway: Option<Arc<crate::gateway::GatewayStats>>,
    ) -> Self {
        Management {
            node,
            access,
            gateway,
            refused: Default::default(),
        }
    }

    async fn route(&self, request: HttpRequest) -> HttpResponse {
        let verdict = self
            .access
            .check(&request.method, &request.path, &request.headers);
        if let Some(response) = verdict.refusal() {
            if let Some(count) = Verdict::REFUSALS
                .iter()
                .position(|refusal| *refusal == verdict)
                .and_then(|at| self.refused.get(at))
            {
                count.set(count.get().saturating_add(1));
            }
            return response;
        }
        if let Some(response) = page(&request.method, &request.path) {
            return response;
        }
        match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/ready") => self.ready(),
            ("GET", "/health") => self.health(),
            ("GET", "/metrics") => HttpResponse::text(200, &self.metrics()),
            ("GET", "/actuator/cluster") => json_response(&self.cluster()),
            ("GET", "/actuator/partitions") => json_response(&self.partitions()),
            ("POST", "/actuator/rebalance") => self.rebalance(&request.query).await,
            ("POST", FAULTS_PATH) => self.faults(&request.query),
            (
                _,
                "/ready" | "/health" | "/metrics" | "/actuator/cluster" | "/actuator/partitions",
            ) => HttpResponse::text(405, "use GET\n"),
            (_, "/actuator/rebalance" | FAULTS_PATH) => HttpResponse::text(405, "use POST\n"),
            _ => HttpResponse::text(
                404,
                "not found; see /dashboard, /ready, /health, /metrics, /actuator/cluster, \
                 /actuator/partitions\n",
            ),
        }
    }

    fn ready(&self) -> HttpResponse {
        let statuses = self.node.replica_statuses();
        let down: Vec<u32> = statuses
            .iter()
            .filter(|(status, _)| status.down.is_some())
            .map(|(status, _)| status.partition_id)
            .collect();
        if !down.is_empty() {
            return HttpResponse::text(
                503,
                &format!("not ready: the replicas of partitions {down:?} are down\n"),
            );
        }
        let waiting: Vec<u32> = statuses
            .iter()
            .filter(|(status, _)| status.leader.is_none())
            .map(|(status, _)| status.partition_id)
            .collect();
        if waiting.is_empty() {
            HttpResponse::text(200, "ready\n")
        } else {
            HttpResponse::text(
                503,
                &format!("not ready: no leader known yet for partitions {waiting:?}\n"),
            )
        }
    }

    fn health(&self) -> HttpResponse {
        let failing: Vec<String> = self
            .node
            .replica_statuses()
            .into_iter()
            .flat_map(|(status, _)| {
                let id = status.partition_id;
                let down = status
                    .down
                    .map(|reason| format!("partition {id}: the replica is down: {reason}"));
                let flush = status
                    .flush_error
                    .map(|error| format!("partition {id}: flushing the journal fails: {error}"));
                let raft_state = status
                    .hard_state_error
                    .map(|error| format!("partition {id}: writing the Raft state fails: {error}"));
                let snapshot = status
                    .snapshot_error
                    .map(|error| format!("partition {id}: writing a snapshot fails: {error}"));
                down.into_iter()
                    .chain(flush)
                    .chain(raft_state)
                    .chain(snapshot)
            })
            .collect();
        let mut failing = failing;
        if self.node.shard_failed() {
            failing.push("a shard stopped; its replicas are down".to_owned());
        }
        if failing.is_empty() {
            HttpResponse::text(200, "healthy\n")
        } else {
            HttpResponse::text(503, &format!("unhealthy:\n{}\n", failing.join("\n")))
        }
    }

    fn cluster(&self) -> Value {
        let topology = self.node.topology();
        let shape = topology.shape();
        let peers = self.node.peers();
        let brokers: Vec<Value> = topology
            .members()
            .iter()
            .map(|member| {
                let metadata = if member.node_id == self.node.node_id() {
                    let settings = self.node.settings();
                    Some(crate::node::MemberMetadata {
                        command_api: settings.command_api_advertised.clone(),
                        management: settings.management_advertised.clone(),
                        gateway: settings.gateway_advertised.clone(),
                        ..crate::node::MemberMetadata::default()
                    })
                } else {
                    peers
                        .iter()
                        .find(|p| p.node_id == member.node_id)
                        .and_then(|p| p.metadata.clone())
                };
                let state = if member.node_id == self.node.node_id() {
                    "ALIVE"
                } else {
                    member_state(member.state)
                };
                let partitions: Vec<Value> = shape
                    .partition_ids()
                    .filter_map(|partition_id| {
                        let replica = topology
                            .replicas_of(partition_id)?
                            .iter()
                            .find(|r| r.node_id == member.node_id)?;
                        Some(json!({
                            "partitionId": partition_id,
                            "role": role(replica.role),
                            "term": replica.term,
                        }))
                    })
                    .collect();
                json!({
                    "nodeId": member.node_id,
                    "address": member.address,
                    "state": state,
                    "commandApi": metadata.as_ref().map(|m| m.command_api.clone()),
                    "management": metadata.as_ref().map(|m| m.management.clone()),
                    "partitions": partitions,
                })
            })
            .collect();
        json!({
            "clusterSize": shape.cluster_size(),
            "partitionsCount": shape.partitions_count(),
            "replicationFactor": shape.replication_factor(),
            "topologyVersion": topology.version(),
            "brokers": brokers,
        })
    }

    fn partitions(&self) -> Value {
        let mut out = serde_json::Map::new();
        for (status, preferred_leader) in self.node.replica_statuses() {
            out.insert(
                status.partition_id.to_string(),
                json!({
                    "role": raft_role(status.role),
                    "term": status.term,
                    "leader": status.leader,
                    "preferredLeader": preferred_leader,
                    "commitIndex": status.commit_index,
                    "lastIndex": status.last_index,
                    "durableIndex": status.durable_index,
                    "appliedIndex": status.applied_index,
                    "snapshotsTaken": status.snapshots_taken,
                    "snapshotsInstalled": status.snapshots_installed,
                    "commandsProcessed": status.commands_processed,
                    "backpressureLimit": status.backpressure_limit,
                    "commandsInFlight": status.commands_in_flight,
                    "commandsRefused": status.commands_refused,
                    "jobPollsParked": status.job_polls_parked,
                    "jobPollsRefused": status.job_polls_refused,
                    "engineRebuilds": status.engine_rebuilds,
                    "appendsCommitted": status.appends_committed,
                    "appendsFailed": status.appends_failed,
                    "flushError": status.flush_error,
                    "down": status.down,
                    "failures": status.failures,
                    "snapshotError": status.snapshot_error,
                    "snapshotFailures": status.snapshot_failures,
                    "raftStateError": status.hard_state_error,
                    "raftStateFailures": status.hard_state_failures,
                    "commitLatencyUs": percentiles(&status.commit_latency_us),
                    "commandLatencyUs": percentiles(&status.command_latency_us),
                    "flushLatencyUs": percentiles(&status.flush_latency_us),
                    "localDurableLatencyUs": percentiles(&status.local_durable_latency_us),
                }),
            );
        }
        Value::Object(out)
    }

    async fn rebalance(&self, query: &str) -> HttpResponse {
        let mut result = serde_json::Map::new();
        result.insert(
            self.node.node_id().to_string(),
            json!(self.node.rebalance_local()),
        );
        if !query.split('&').any(|pair| pair == "local=true") {
            let token = self.access.token().unwrap_or_default();
            for address in self.node.peer_management_addresses() {
                let answer = match post_local_rebalance(&address, token).await {
                    Ok(body) => serde_json::from_str::<Value>(&body)
                        .unwrap_or_else(|_| json!({ "error": body })),
                    Err(error) => json!({ "error": error.to_string() }),
                };
                result.insert(address, answer);
            }
        }
        json_response(&json!({ "transfers": result }))
    }

    fn faults(&self, query: &str) -> HttpResponse {
        let mut blocked = Vec::new();
        let reopen_failures = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("reopenFailures="))
            .map_or(Ok(0), str::parse::<u32>);
        let Ok(reopen_failures) = reopen_failures else {
            return HttpResponse::text(400, "reopenFailures must be a whole number\n");
        };
        for pair in query.split('&') {
            let storage = [
                ("failStorage=", StorageFault::Fail { reopen_failures }),
                ("healStorage=", StorageFault::Heal),
            ]
            .into_iter()
            .find_map(|(key, fault)| pair.strip_prefix(key).map(|value| (value, fault)));
            if let Some((partition, fault)) = storage {
                let Ok(partition_id) = partition.parse::<u32>() else {
                    return HttpResponse::text(
                        400,
                        &format!("`{partition}` is not a partition id\n"),
                    );
                };
                if !self.node.storage_fault(partition_id, fault) {
                    return HttpResponse::text(
                        404,
                        &format!("this broker holds no replica of partition {partition_id}\n"),
                    );
                }
                return HttpResponse::text(
                    200,
                    &format!("partition {partition_id}: storage fault {fault:?} injected\n"),
                );
            }
            if let Some(list) = pair.strip_prefix("block=") {
                for item in list.split(',').filter(|s| !s.is_empty()) {
                    match item.parse::<SocketAddr>() {
                        Ok(address) => blocked.push(address),
                        Err(_) => {
                            return HttpResponse::text(
                                400,
                                &format!("`{item}` is not an ip:port address\n"),
                            );
                        }
                    }
                }
            }
        }
        let answer = format!("blocked: {blocked:?}\n");
        self.node.transport().set_blocked(blocked);
        HttpResponse::text(200, &answer)
    }

    #[expect(
        clippy::too_many_lines,
        reason = "one metric after another; split up it would only scatter them"
    )]
    fn metrics(&self) -> String {
        let mut text = PrometheusText::new();
        let node = self.node.node_id().to_string();
        for (status, _) in self.node.replica_statuses() {
            let id = status.partition_id.to_string();
            let labels = [("node", node.as_str()), ("partition", id.as_str())];
            text.gauge(
                "sluice_partition_role",
                "1 if this replica leads its partition, else 0",
                &labels,
                if status.role == RaftRole::Leader {
                    1.0
                } else {
                    0.0
                },
            );
            text.gauge(
                "sluice_partition_term",
                "Raft term",
                &labels,
                as_f64(status.term),
            );
            text.gauge(
                "sluice_partition_down",
                "1 while this replica is down (a storage error; it is being reopened from disk)",
                &labels,
                if status.down.is_some() { 1.0 } else { 0.0 },
            );
            text.counter(
                "sluice_partition_failures_total",
                "Times this replica went down after a storage error",
                &labels,
                status.failures,
            );
            text.gauge(
                "sluice_partition_commit_index",
                "Highest committed log index known",
                &labels,
                as_f64(status.commit_index),
            );
            text.gauge(
                "sluice_partition_durable_index",
                "Highest log index flushed on this replica",
                &labels,
                as_f64(status.durable_index),
            );
            text.gauge(
                "sluice_partition_applied_index",
                "Highest log index whose records are in this replica's engine",
                &labels,
                as_f64(status.applied_index),
            );
            text.counter(
                "sluice_snapshots_taken_total",
                "Engine snapshots written by this replica",
                &labels,
                status.snapshots_taken,
            );
            text.counter(
                "sluice_snapshots_installed_total",
                "Snapshots received from a leader and installed",
                &labels,
                status.snapshots_installed,
            );
            text.counter(
                "sluice_snapshot_write_failures_total",
                "Snapshot writes (own or a leader's) that failed and are retried later",
                &labels,
                status.snapshot_failures,
            );
            text.counter(
                "sluice_raft_state_write_failures_total",
                "Writes of the Raft term and vote that failed and were retried",
                &labels,
                status.hard_state_failures,
            );
            text.counter(
                "sluice_commands_processed_total",
                "Engine commands processed by this replica as leader",
                &labels,
                status.commands_processed,
            );
            text.gauge(
                "sluice_backpressure_limit",
                "Engine commands this partition accepts at once (AIMD)",
                &labels,
                f64::from(status.backpressure_limit),
            );
            text.gauge(
                "sluice_commands_in_flight",
                "Engine commands accepted and not yet committed",
                &labels,
                f64::from(status.commands_in_flight),
            );
            text.counter(
                "sluice_commands_refused_total",
                "Engine commands refused by backpressure",
                &labels,
                status.commands_refused,
            );
            #[expect(clippy::cast_precision_loss, reason = "a count of parked requests")]
            text.gauge(
                "sluice_job_polls_parked",
                "Job activations parked until jobs of their type are available",
                &labels,
                status.job_polls_parked as f64,
            );
            text.counter(
                "sluice_job_polls_refused_total",
                "Job activations refused because the parked ones were at their bound",
                &labels,
                status.job_polls_refused,
            );
            text.counter(
                "sluice_engine_rebuilds_total",
                "Engine rebuilds from the committed log after leadership was lost",
                &labels,
                status.engine_rebuilds,
            );
            text.counter(
                "sluice_appends_committed_total",
                "Appends answered committed by this leader",
                &labels,
                status.appends_committed,
            );
            text.counter(
                "sluice_appends_failed_total",
                "Appends answered unavailable",
                &labels,
                status.appends_failed,
            );
            text.counter(
                "sluice_raft_messages_dropped_total",
                "Raft messages dropped because the replica's inbox was full",
                &labels,
                status.messages_dropped,
            );
            text.histogram_from_hdr(
                "sluice_commit_latency_seconds",
                "Time from an append's arrival on the leader to its commit",
                &labels,
                &status.commit_latency_us,
                &LATENCY_BUCKETS_US,
                1e-6,
            );
            text.histogram_from_hdr(
                "sluice_command_latency_seconds",
                "Time from an engine command's arrival on the leader to its reply (processed \
                 and committed)",
                &labels,
                &status.command_latency_us,
                &LATENCY_BUCKETS_US,
                1e-6,
            );
            text.histogram_from_hdr(
                "sluice_flush_latency_seconds",
                "Time of one journal flush (write and fdatasync)",
                &labels,
                &status.flush_latency_us,
                &LATENCY_BUCKETS_US,
                1e-6,
            );
        }
        self.node_metrics(&mut text, &node);
        text.finish()
    }

    fn node_metrics(&self, text: &mut PrometheusText, node: &str) {
        let labels = [("node", node)];
        let counters = self.node.counters();
        text.counter(
            "sluice_raft_frames_sent_total",
            "Raft frames sent to peers (all partitions batched)",
            &labels,
            counters.raft_frames_sent.get(),
        );
        text.counter(
            "sluice_raft_messages_sent_total",
            "Raft messages sent to peers",
            &labels,
            counters.raft_messages_sent.get(),
        );
        text.counter(
            "sluice_raft_messages_unroutable_total",
            "Raft messages dropped because the peer's address was unknown",
            &labels,
            counters.raft_unroutable.get(),
        );
        text.counter(
            "sluice_raft_messages_misrouted_total",
            "Raft messages from peers for a partition this broker does not host, or addressed \
             to another replica",
            &labels,
            counters.raft_misrouted.get(),
        );
        text.counter(
            "sluice_frames_malformed_total",
            "Frames from peers that failed to decode",
            &labels,
            counters.frames_malformed.get(),
        );
        for (kind, count) in [
            ("raft", &counters.raft_sender_mismatch),
            ("gossip", &counters.gossip_sender_mismatch),
        ] {
            text.counter(
                "sluice_messages_sender_mismatch_total",
                "Raft and gossip messages from peers dropped because they claim a sender other \
                 than the node named in the sending broker's certificate",
                &[("node", node), ("kind", kind)],
                count.get(),
            );
        }
        self.request_metrics(text, &labels);
        self.gossip_metrics(text, &labels);
        let alive = self
            .node
            .peers()
            .iter()
            .filter(|p| p.state == MemberState::Alive)
            .count();
        text.gauge(
            "sluice_cluster_members_alive",
            "Other brokers this broker sees alive",
            &labels,
            as_f64(alive as u64),
        );
        self.transport_metrics(text, node);
        self.gateway_metrics(text, &labels);
        for (verdict, count) in Verdict::REFUSALS.iter().zip(&self.refused) {
            text.counter(
                "sluice_management_requests_refused_total",
                "Management API requests refused before reaching a handler: no or a wrong \
                 token, changes off, signs of a page on another site, the fault switch off",
                &[("node", node), ("reason", verdict.label())],
                count.get(),
            );
        }
    }

    /// Commands between partitions, and client requests between gateways and leaders.
    fn request_metrics(&self, text: &mut PrometheusText, labels: &[(&str, &str)]) {
        let counters = self.node.counters();
        for (name, help, count) in [
            (
                "sluice_internal_commands_forwarded_total",
                "Commands between partitions sent to the broker leading their partition",
                &counters.commands_forwarded,
            ),
            (
                "sluice_internal_commands_unroutable_total",
                "Commands between partitions dropped because no leader of their partition was \
                 known (the sending partition sends them again)",
                &counters.commands_unroutable,
            ),
            (
                "sluice_internal_commands_dropped_total",
                "Command frames from peers dropped unread: not a partition's internal command, \
                 or for a partition this broker does not host",
                &counters.peer_commands_dropped,
            ),
            (
                "sluice_internal_commands_refused_total",
                "Commands from peers' partitions refused as invalid: malformed, or a kind no \
                 partition sends",
                &counters.peer_commands_refused,
            ),
            (
                "sluice_requests_replies_unmatched_total",
                "Replies from other brokers that answered no request waiting here (it aged out, \
                 or the reply named another broker's request) or did not decode",
                &counters.replies_unmatched,
            ),
        ] {
            text.counter(name, help, labels, count.get());
        }
        text.gauge(
            "sluice_requests_forwarded_in_flight",
            "Client requests this broker's gateway sent to other brokers' leaders and not yet \
             answered",
            labels,
            as_f64(self.node.forwards().len() as u64),
        );
    }

    fn gossip_metrics(&self, text: &mut PrometheusText, labels: &[(&str, &str)]) {
        let swim = self.node.swim_stats();
        for (name, help, value) in [
            (
                "sluice_gossip_messages_received_total",
                "Gossip messages received",
                swim.messages_received,
            ),
            (
                "sluice_gossip_messages_dropped_total",
                "Gossip messages dropped as malformed",
                swim.messages_dropped,
            ),
            (
                "sluice_gossip_transmits_dropped_total",
                "Outgoing gossip messages dropped because the send queue was full",
                swim.transmits_dropped,
            ),
            (
                "sluice_gossip_events_dropped_total",
                "Membership events dropped because the event queue was full",
                swim.events_dropped,
            ),
            (
                "sluice_gossip_members_rejected_total",
                "Gossip updates about new members ignored because the member table was full",
                swim.members_rejected,
            ),
        ] {
            text.counter(name, help, labels, value);
        }
    }

    fn gateway_metrics(&self, text: &mut PrometheusText, labels: &[(&str, &str)]) {
        let Some(gateway) = &self.gateway else {
            return;
        };
        let connections = &gateway.connections;
        let slots = &gateway.slots;
        for (name, help, value) in [
            (
                "sluice_gateway_connections_open",
                "gRPC gateway connections open",
                connections.open.load(Ordering::Relaxed),
            ),
            (
                "sluice_gateway_long_polls_open",
                "ActivateJobs long polls the gateway holds",
                slots.long_polls_open(),
            ),
            (
                "sluice_gateway_job_streams_open",
                "StreamActivatedJobs calls the gateway holds",
                slots.job_streams_open(),
            ),
        ] {
            text.gauge(name, help, labels, as_f64(value as u64));
        }
        for (name, help, value) in [
            (
                "sluice_gateway_connections_refused_total",
                "gRPC gateway connections closed at once: gateway.network.maxConnections were open",
                connections.refused.load(Ordering::Relaxed),
            ),
            (
                "sluice_gateway_connections_silent_total",
                "gRPC gateway connections closed for sending nothing within \
                 gateway.network.handshakeTimeout",
                connections.silent.load(Ordering::Relaxed),
            ),
            (
                "sluice_gateway_connections_stalled_total",
                "gRPC gateway connections closed because a write made no progress for \
                 gateway.network.keepAliveTimeout (the client read nothing)",
                connections.stalled.load(Ordering::Relaxed),
            ),
            (
                "sluice_gateway_long_polls_refused_total",
                "ActivateJobs long polls refused: gateway.longPolling.maxPolls were open",
                slots.long_polls_refused(),
            ),
            (
                "sluice_gateway_job_streams_refused_total",
                "StreamActivatedJobs calls refused: gateway.jobStreams.maxStreams were open",
                slots.job_streams_refused(),
            ),
        ] {
            text.counter(name, help, labels, value);
        }
    }

    fn transport_metrics(&self, text: &mut PrometheusText, node: &str) {
        let labels = &[("node", node)];
        let transport = self.node.transport().stats();
        text.gauge(
            "sluice_transport_connections_open",
            "QUIC connections open to other brokers",
            labels,
            as_f64(transport.connections_open),
        );
        text.gauge(
            "sluice_transport_incoming_handshakes_open",
            "Incoming QUIC connections from validated addresses in their handshake now",
            labels,
            as_f64(transport.incoming_handshakes_open),
        );
        for (name, help, value) in [
            (
                "connections_established",
                "QUIC connections whose mutual-TLS handshake succeeded",
                transport.connections_established,
            ),
            (
                "connections_refused",
                "QUIC connections refused or failed during the handshake (certificates from another CA among them)",
                transport.connections_refused,
            ),
            (
                "retries_sent",
                "QUIC Retry packets sent to incoming attempts from addresses not yet validated \
                 (no connection state is kept until the peer answers)",
                transport.retries_sent,
            ),
            (
                "connect_timeouts",
                "QUIC connection attempts that got no answer",
                transport.connect_timeouts,
            ),
            (
                "connections_lost",
                "QUIC connections lost after being established",
                transport.connections_lost,
            ),
            (
                "frames_sent",
                "Frames sent to other brokers",
                transport.frames_sent,
            ),
            (
                "frame_bytes_sent",
                "Frame bytes sent to other brokers",
                transport.frame_bytes_sent,
            ),
            (
                "frames_received",
                "Frames received from other brokers",
                transport.frames_received,
            ),
            (
                "frame_bytes_received",
                "Frame bytes received from other brokers",
                transport.frame_bytes_received,
            ),
            (
                "frames_dropped",
                "Frames dropped: a full send queue or a lost connection",
                transport.frames_dropped,
            ),
            (
                "malformed_streams",
                "Streams closed because a frame was malformed",
                transport.malformed_streams,
            ),
            (
                "datagrams_sent",
                "UDP datagrams sent",
                transport.datagrams_sent,
            ),
            (
                "datagrams_received",
                "UDP datagrams received",
                transport.datagrams_received,
            ),
            (
                "datagrams_blocked",
                "UDP datagrams dropped by the fault switch",
                transport.datagrams_blocked,
            ),
            (
                "socket_errors",
                "UDP socket sends or receives that failed",
                transport.socket_errors,
            ),
        ] {
            text.counter(
                &format!("sluice_transport_{name}_total"),
                help,
                labels,
                value,
            );
        }
        refusal_metrics(text, node, &transport);
    }
}

impl Handler for Management {
    fn handle(&self, request: HttpRequest) -> Pin<Box<dyn Future<Output = HttpResponse> + '_>> {
        Box::pin(self.route(request))
    }
}

/// Answers the requests that need no node state (the dashboard page); `None` for the others.
fn page(method: &str, path: &str) -> Option<HttpResponse> {
    match (method, path) {
        ("GET", "/" | "/dashboard") => Some(HttpResponse::html(200, DASHBOARD_HTML)),
        (_, "/" | "/dashboard") => Some(HttpResponse::text(405, "use GET\n")),
        _ => None,
    }
}

/// The parts of `sluice_transport_connections_refused_total` with a known cause, each a metric
/// of its own so that a sum over labels counts none twice.
fn refusal_metrics(
    text: &mut PrometheusText,
    node: &str,
    transport: &sluice_net::quic::TransportStats,
) {
    for (limit, value) in [
        ("per_source", transport.connections_refused_per_source),
        ("capacity", transport.connections_refused_at_capacity),
    ] {
        text.counter(
            "sluice_transport_connections_refused_at_limit_total",
            "Incoming QUIC connections from validated addresses refused at a limit: \
             per_source (connections or handshakes from one address), capacity (all \
             incoming connections or handshakes, or the broker is closing)",
            &[("node", node), ("limit", limit)],
            value,
        );
    }
    for (reason, value) in [
        ("no_node_id", transport.peers_refused_without_node_id),
        ("own_node_id", transport.peers_refused_own_node_id),
    ] {
        text.counter(
            "sluice_transport_peers_refused_total",
            "QUIC handshakes failed because the peer's CA-signed certificate names no node \
             (no_node_id: none, several or a malformed id) or this broker's own id \
             (own_node_id: two brokers run with one id)",
            &[("node", node), ("reason", reason)],
            value,
        );
    }
}

#[expect(
    clippy::cast_precision_loss,
    reason = "metrics tolerate rounding above 2^53"
)]
fn as_f64(value: u64) -> f64 {
    value as f64
}

/// Count, p50, p99 and max of a latency histogram.
fn percentiles(histogram: &hdrhistogram::Histogram<u64>) -> Value {
    json!({
        "count": histogram.len(),
        "p50": histogram.value_at_quantile(0.5),
        "p99": histogram.value_at_quantile(0.99),
        "max": histogram.max(),
    })
}

fn json_response(value: &Value) -> HttpResponse {
    let mut body = serde_json::to_string_pretty(value).expect("JSON values serialize");
    body.push('\n');
    HttpResponse::json(200, &body)
}

fn member_state(state: MemberState) -> &'static str {
    match state {
        MemberState::Alive => "ALIVE",
        MemberState::Suspect => "SUSPECT",
        MemberState::Dead => "DEAD",
        MemberState::Left => "LEFT",
    }
}

fn role(role: Role) -> &'static str {
    match role {
        Role::Leader => "LEADER",
        Role::Follower => "FOLLOWER",
        Role::Inactive => "INACTIVE",
    }
}

fn raft_role(role: RaftRole) -> &'static str {
    match role {
        RaftRole::Leader => "LEADER",
        RaftRole::Follower => "FOLLOWER",
        RaftRole::PreCandidate | RaftRole::Candidate => "CANDIDATE",
    }
}

/// `POST /actuator/rebalance?local=true` to a peer's management API with `token`; the answer's
/// body.
async fn post_local_rebalance(address: &str, token: &str) -> anyhow::Result<String> {
    let request = async {
        let mut stream = glommio::net::TcpStream::connect(address)
            .await
            .map_err(|error| anyhow::anyhow!("connecting to {address}: {error}"))?;
        let head = format!(
            "POST /actuator/rebalance?local=true HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await?;
        stream.flush().await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let body = answer
            .split_once("\r\n\r\n")
            .map_or(String::new(), |(_, body)| body.to_owned());
        Ok::<String, anyhow::Error>(body)
    };
    futures_lite::future::or(request, async {
        glommio::timer::sleep(FAN_OUT_TIMEOUT).await;
        anyhow::bail!("no answer within {FAN_OUT_TIMEOUT:?}")
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::CONTENT_TYPE_HTML;

    fn dashboard(path: &str) -> String {
        let response = page("GET", path).expect("the dashboard is routed");
        assert_eq!(response.status, 200, "GET {path}");
        assert_eq!(response.content_type, CONTENT_TYPE_HTML, "GET {path}");
        String::from_utf8(response.body).expect("the page is UTF-8")
    }

    #[test]
    fn root_and_dashboard_serve_the_same_html_page() {
        let root = dashboard("/");
        assert_eq!(root, dashboard("/dashboard"));
        assert!(root.starts_with("<!DOCTYPE html>"), "{}", &root[..40]);
        assert_eq!(CONTENT_TYPE_HTML, "text/html; charset=utf-8");
    }

    #[test]
    fn dashboard_polls_the_management_api() {
        let page = dashboard("/dashboard");
        for endpoint in [
            "'/metrics'",
            "'/actuator/partitions'",
            "'/actuator/cluster'",
        ] {
            assert!(page.contains(endpoint), "the page never fetches {endpoint}");
        }
        for metric in [
            "sluice_commit_latency_seconds",
            "sluice_command_latency_seconds",
            "sluice_commands_processed_total",
            "sluice_appends_committed_total",
        ] {
            assert!(page.contains(metric), "the page never reads {metric}");
        }
        assert!(page.contains(r#"<span id="status" data-polls="0">"#));
    }

    #[test]
    fn dashboard_loads_nothing_from_elsewhere() {
        let page = dashboard("/");
        for external in ["src=", "<link", "@import", "url(", "https://", "//cdn"] {
            assert!(
                !page.contains(external),
                "the page must be self-contained, yet contains `{external}`"
            );
        }
        // The only absolute URLs are links to the other brokers' dashboards.
        for (at, _) in page.match_indices("http://") {
            assert!(
                page[..at].ends_with("<a href=\""),
                "absolute URL outside a link at byte {at}"
            );
        }
    }

    #[test]
    fn dashboard_answers_only_get() {
        for path in ["/", "/dashboard"] {
            let response = page("POST", path).expect("routed");
            assert_eq!(response.status, 405);
        }
        assert!(page("GET", "/dashboard.html").is_none());
        assert!(page("GET", "/metrics").is_none());
    }

    #[test]
    fn refusals_with_a_known_cause_are_metrics_of_their_own() {
        let stats = sluice_net::quic::TransportStats {
            connections_refused: 9,
            connections_refused_per_source: 2,
            connections_refused_at_capacity: 1,
            peers_refused_without_node_id: 3,
            peers_refused_own_node_id: 1,
            ..sluice_net::quic::TransportStats::default()
        };
        let mut text = PrometheusText::new();
        refusal_metrics(&mut text, "4", &stats);
        let page = text.finish();
        for sample in [
            "sluice_transport_connections_refused_at_limit_total{node=\"4\",limit=\"per_source\"} 2\n",
            "sluice_transport_connections_refused_at_limit_total{node=\"4\",limit=\"capacity\"} 1\n",
            "sluice_transport_peers_refused_total{node=\"4\",reason=\"no_node_id\"} 3\n",
            "sluice_transport_peers_refused_total{node=\"4\",reason=\"own_node_id\"} 1\n",
        ] {
            assert!(page.contains(sample), "{sample} missing from:\n{page}");
        }
        // The total keeps its own name: summing a name over its labels counts nothing twice.
        assert!(!page.contains("connections_refused_total"), "{page}");
        assert_eq!(page.matches("# HELP").count(), 2, "{page}");
    }

    #[test]
    fn metric_names_in_the_page_match_the_exposition() {
        // The page parses what `metrics()` writes: same names, `le` bounds, one `+Inf` bucket.
        let mut text = PrometheusText::new();
        let mut latency_us = hdrhistogram::Histogram::<u64>::new(3).expect("3 significant digits");
        latency_us.record(1_200).expect("in range");
        text.histogram_from_hdr(
            "sluice_commit_latency_seconds",
            "help",
            &[("node", "0"), ("partition", "1")],
            &latency_us,
            &LATENCY_BUCKETS_US,
            1e-6,
        );
        let body = text.finish();
        assert!(body.contains(
            "sluice_commit_latency_seconds_bucket{node=\"0\",partition=\"1\",le=\"0.0015\"} 1\n"
        ));
        assert!(body.contains(
            "sluice_commit_latency_seconds_bucket{node=\"0\",partition=\"1\",le=\"+Inf\"} 1\n"
        ));
        // The page's bars grid has one column per bound plus `+Inf`.
        let columns = format!("repeat({}, 1fr)", LATENCY_BUCKETS_US.len() + 1);
        assert!(
            dashboard("/").contains(&columns),
            "bars grid is not {columns}"
        );
    }
}
