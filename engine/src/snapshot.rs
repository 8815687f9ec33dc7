//! Snapshots of a partition's [`State`]: a checksummed, canonical byte image.
//!
//! How to drive it: [`encode_snapshot`] turns a state into bytes to write next to the log
//! position they cover; [`decode_snapshot`] turns them back into a state to hand to
//! [`crate::Engine::with_state`], after which replay continues from that position. Damaged bytes
//! are a [`SnapshotError`], never a panic.
//!
//! Layout (integers little-endian):
//!
//! ```text
//! 0  magic "SLSN"            u32
//! 4  format version          u16
//! 6  reserved (zero)         u16
//! 8  payload length          u64
//! 16 crc32c of the payload   u32
//! 20 crc32c of bytes 0..20   u32
//! 24 payload: an rkyv archive of `SnapshotData`
//! ```
//!
//! The payload holds only plain data: what the appliers cannot derive. Processes are kept as
//! their deployed resource and re-parsed on decode through the same `PROCESS CREATED` applier
//! replay uses; the indexes (activatable jobs, deadlines, correlation lookups, process versions)
//! are rebuilt from the entities. Leader-local re-send times are not kept and decode as 0, so a
//! new leader re-sends unacknowledged commands at once.
//!
//! The encoding is canonical: every map is written sorted by key, so two states with the same
//! content give byte-identical snapshots (the simulator compares replicas this way), and
//! `encode(decode(encode(s))) == encode(s)`. The decoder rejects a payload whose collections are
//! not in canonical order. Vectors that are ordered by creation inside an element instance
//! (children, join tokens, timers) are kept in their order: replay produces the same order.
//! Variable values are stored as a token tree rather than JSON text, so every number (floats
//! included) comes back bit for bit.

use std::collections::HashMap;
use std::rc::Rc;

use rkyv::rancor;
use rkyv::util::AlignedVec;
use serde_json::{Map, Number, Value};

use crate::record::{
    DeploymentValue, IncidentValue, Intent, Key, MessageSubscriptionValue,
    ProcessMessageSubscriptionValue, ProcessValue, Record, RecordType, RecordValue, TimerValue,
    ValueType,
};
use crate::state::{
    BufferedMessage, DeployedProcess, ElementInstance, ElementState, Incident, Job, JobState,
    MessageStartSubscription, MessageSubscription, PendingDistribution, ProcessSubscription,
    ProcessSubscriptionState, State, Timer, Variable,
};

/// The first four bytes of every snapshot: `SLSN`.
pub const SNAPSHOT_MAGIC: u32 = u32::from_le_bytes(*b"SLSN");
/// The format version this build writes and reads.
pub const SNAPSHOT_VERSION: u16 = 2;
/// Bytes of the fixed header before the payload.
pub const SNAPSHOT_HEADER_BYTES: usize = 24;
/// Bytes of the header the header checksum covers (everything before it).
const HEADER_CHECKED_BYTES: usize = 20;
/// Deepest nesting of a variable value accepted on decode. Values in the state were parsed
/// from JSON text by `serde_json`, whose recursion limit (128) is well below this.
pub const JSON_DEPTH_MAX: usize = 512;

const _: () = assert!(HEADER_CHECKED_BYTES + 4 == SNAPSHOT_HEADER_BYTES);
const _: () = assert!(SNAPSHOT_HEADER_BYTES.is_multiple_of(8));

/// Why a snapshot could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The bytes do not start with `SLSN`.
    #[error(
        "not a Sluice snapshot: the bytes do not start with the magic \"SLSN\"; check that the \
         file is a snapshot"
    )]
    BadMagic,
    /// Written by a format version this build cannot read.
    #[error(
        "snapshot format version {found} is not supported (this build reads version \
         {SNAPSHOT_VERSION}); upgrade the broker or recover this partition from the log"
    )]
    UnsupportedVersion { found: u16 },
    /// Fewer bytes than the header or its payload length say.
    #[error(
        "snapshot is truncated: expected {expected} bytes, found {actual}; discard it and \
         recover from the log or another replica's snapshot"
    )]
    Truncated { expected: u64, actual: u64 },
    /// The header or the payload does not match its stored crc32c.
    #[error(
        "snapshot is damaged: stored crc32c {expected:#010x}, computed {actual:#010x} (header or \
         payload); discard it and recover from the log or another replica's snapshot"
    )]
    ChecksumMismatch { expected: u32, actual: u32 },
    /// The checksums match but the archive or its contents are not a valid state (a bug in the
    /// writer, or a resource this build no longer parses).
    #[error(
        "snapshot contents are invalid: {0}; recover this partition from the log or another \
         replica's snapshot"
    )]
    Invalid(String),
}

/// Encodes the state as a canonical, checksummed snapshot.
#[must_use]
pub fn encode_snapshot(state: &State) -> Vec<u8> {
    let data = SnapshotData::from_state(state);
    // Plain data only, so serialization cannot fail short of allocation failure.
    let payload =
        rkyv::to_bytes::<rancor::Error>(&data).expect("snapshot data is plain and serializes");
    let header = encode_header(&payload);
    let mut bytes = Vec::with_capacity(SNAPSHOT_HEADER_BYTES + payload.len());
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(&payload);
    bytes
}

/// Decodes a snapshot written by [`encode_snapshot`]: checks the header, both checksums and the
/// archive, then rebuilds the state and its indexes.
pub fn decode_snapshot(bytes: &[u8]) -> Result<State, SnapshotError> {
    let payload = check_frame(bytes)?;
    let mut aligned = AlignedVec::<16>::with_capacity(payload.len());
    aligned.extend_from_slice(payload);
    let data = rkyv::from_bytes::<SnapshotData, rancor::Error>(&aligned).map_err(|error| {
        SnapshotError::Invalid(format!("the payload is not an archive: {error}"))
    })?;
    data.into_state()
}

fn encode_header(payload: &[u8]) -> [u8; SNAPSHOT_HEADER_BYTES] {
    let mut header = [0_u8; SNAPSHOT_HEADER_BYTES];
    header[0..4].copy_from_slice(&SNAPSHOT_MAGIC.to_le_bytes());
    header[4..6].copy_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    header[8..16].copy_from_slice(&len_u64(payload.len()).to_le_bytes());
    header[16..20].copy_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    let header_crc = crc32c::crc32c(&header[..HEADER_CHECKED_BYTES]);
    header[HEADER_CHECKED_BYTES..].copy_from_slice(&header_crc.to_le_bytes());
    header
}

/// Checks the header and the payload checksum; returns the payload.
fn check_frame(bytes: &[u8]) -> Result<&[u8], SnapshotError> {
    if let Some(magic) = bytes.first_chunk::<4>()
        && u32::from_le_bytes(*magic) != SNAPSHOT_MAGIC
    {
        return Err(SnapshotError::BadMagic);
    }
    let Some((header, payload)) = bytes.split_first_chunk::<SNAPSHOT_HEADER_BYTES>() else {
        return Err(SnapshotError::Truncated {
            expected: len_u64(SNAPSHOT_HEADER_BYTES),
            actual: len_u64(bytes.len()),
        });
    };
    let stored_header_crc = u32::from_le_bytes(le_array(&header[HEADER_CHECKED_BYTES..]));
    let header_crc = crc32c::crc32c(&header[..HEADER_CHECKED_BYTES]);
    if stored_header_crc != header_crc {
        return Err(SnapshotError::ChecksumMismatch {
            expected: stored_header_crc,
            actual: header_crc,
        });
    }
    let version = u16::from_le_bytes(le_array(&header[4..6]));
    if version != SNAPSHOT_VERSION {
        return Err(SnapshotError::UnsupportedVersion { found: version });
    }
    if header[6..8] != [0, 0] {
        return Err(SnapshotError::Invalid(
            "the reserved header bytes are not zero".to_owned(),
        ));
    }
    let payload_len = u64::from_le_bytes(le_array(&header[8..16]));
    let actual_len = len_u64(payload.len());
    if actual_len < payload_len {
        return Err(SnapshotError::Truncated {
            expected: len_u64(SNAPSHOT_HEADER_BYTES).saturating_add(payload_len),
            actual: len_u64(bytes.len()),
        });
    }
    if actual_len > payload_len {
        return Err(SnapshotError::Invalid(format!(
            "{} bytes follow the payload",
            actual_len - payload_len
        )));
    }
    let stored_payload_crc = u32::from_le_bytes(le_array(&header[16..20]));
    let payload_crc = crc32c::crc32c(payload);
    if stored_payload_crc != payload_crc {
        return Err(SnapshotError::ChecksumMismatch {
            expected: stored_payload_crc,
            actual: payload_crc,
        });
    }
    Ok(payload)
}

fn le_array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    bytes.try_into().expect("header field ranges are constant")
}

fn len_u64(len: usize) -> u64 {
    u64::try_from(len).expect("a length fits u64")
}

fn invalid(message: impl Into<String>) -> SnapshotError {
    SnapshotError::Invalid(message.into())
}

/// Everything of a [`State`] that its indexes cannot be rebuilt from, sorted by key.
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct SnapshotData {
    partition_id: u32,
    next_key_counter: i64,
    /// By process definition key; the key is `ProcessValue::process_definition_key`.
    processes: Vec<ProcessValue>,
    deployments: Vec<Key>,
    pending_distributions: Vec<DistributionData>,
    element_instances: Vec<ElementInstanceData>,
    variables: Vec<ScopeVariablesData>,
    jobs: Vec<JobData>,
    incidents: Vec<IncidentData>,
    messages: Vec<MessageData>,
    message_subscriptions: Vec<MessageSubscriptionData>,
    process_subscriptions: Vec<ProcessSubscriptionData>,
    message_start_subscriptions: Vec<MessageStartSubscriptionData>,
    timers: Vec<TimerData>,
    /// In the order they were answered (oldest first), as `State::client_reply_order`.
    client_replies: Vec<ClientReplyData>,
}

#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct ClientReplyData {
    /// When it was answered (the reply's time).
    at_ms: i64,
    /// The reply, its `request_id` the request's.
    reply: Record,
}

#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct DistributionData {
    key: Key,
    deployment: DeploymentValue,
    /// Ascending.
    partitions: Vec<u32>,
}

#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct ElementInstanceData {
    key: Key,
    process_instance_key: Key,
    flow_scope_key: Key,
    process_definition_key: Key,
    element: u32,
    state: u8,
    children: Vec<Key>,
    join_tokens: Vec<JoinTokensData>,
    active_flows: u32,
    job_key: Option<Key>,
    timer_keys: Vec<Key>,
    subscription: bool,
}

#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct JoinTokensData {
    flow: u32,
    tokens: u32,
}

#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct ScopeVariablesData {
    scope_key: Key,
    /// By name.
    variables: Vec<VariableData>,
}

#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct VariableData {
    name: String,
    key: Key,
    /// The value in pre-order; see [`JsonToken`].
    value: Vec<JsonToken>,
}

/// One node of a JSON value written in pre-order: a container's token is followed by its
/// items (an object's by key-string/value pairs). Numbers keep their `serde_json` kind and
/// floats their bits, which JSON text re-parsed without `float_roundtrip` would not guarantee.
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
enum JsonToken {
    Null,
    Bool(bool),
    PosInt(u64),
    /// Always negative.
    NegInt(i64),
    Float(f64),
    String(String),
    /// Followed by this many values.
    Array(u32),
    /// Followed by this many (key `String`, value) pairs.
    Object(u32),
}

#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct JobData {
    key: Key,
    job_type: String,
    state: u8,
    retries: i32,
    deadline_ms: i64,
    recurring_time_ms: i64,
    worker: String,
    error_message: String,
    element_instance_key: Key,
    process_instance_key: Key,
    process_definition_key: Key,
}

#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct IncidentData {
    key: Key,
    value: IncidentValue,
}

#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct MessageData {
    key: Key,
    name: String,
    correlation_key: String,
    message_id: String,
    variables: String,
    deadline_ms: i64,
    correlated_to: Vec<String>,
}

#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct MessageSubscriptionData {
    key: Key,
    value: MessageSubscriptionValue,
    correlating_message: Option<Key>,
}

#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct ProcessSubscriptionData {
    /// The map key: the subscribing element instance.
    element_instance_key: Key,
    key: Key,
    state: u8,
    value: ProcessMessageSubscriptionValue,
}

#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct MessageStartSubscriptionData {
    key: Key,
    process_definition_key: Key,
    bpmn_process_id: String,
    start_event_id: String,
    message_name: String,
}

#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct TimerData {
    key: Key,
    value: TimerValue,
}

/// The entries of a map sorted by key.
fn sorted<K: Ord + Copy, V>(map: &HashMap<K, V>) -> Vec<(K, &V)> {
    let mut entries: Vec<(K, &V)> = map.iter().map(|(key, value)| (*key, value)).collect();
    entries.sort_unstable_by_key(|(key, _)| *key);
    entries
}

fn element_state_code(state: ElementState) -> u8 {
    match state {
        ElementState::Activating => 0,
        ElementState::Activated => 1,
        ElementState::Completing => 2,
        ElementState::Terminating => 3,
    }
}

fn element_state_from_code(code: u8) -> Option<ElementState> {
    Some(match code {
        0 => ElementState::Activating,
        1 => ElementState::Activated,
        2 => ElementState::Completing,
        3 => ElementState::Terminating,
        _ => return None,
    })
}

fn job_state_code(state: JobState) -> u8 {
    match state {
        JobState::Activatable => 0,
        JobState::Activated => 1,
        JobState::Failed => 2,
        JobState::BackingOff => 3,
        JobState::ErrorThrown => 4,
    }
}

fn job_state_from_code(code: u8) -> Option<JobState> {
    Some(match code {
        0 => JobState::Activatable,
        1 => JobState::Activated,
        2 => JobState::Failed,
        3 => JobState::BackingOff,
        4 => JobState::ErrorThrown,
        _ => return None,
    })
}

fn subscription_state_code(state: ProcessSubscriptionState) -> u8 {
    match state {
        ProcessSubscriptionState::Creating => 0,
        ProcessSubscriptionState::Opened => 1,
        ProcessSubscriptionState::Deleting => 2,
    }
}

fn subscription_state_from_code(code: u8) -> Option<ProcessSubscriptionState> {
    Some(match code {
        0 => ProcessSubscriptionState::Creating,
        1 => ProcessSubscriptionState::Opened,
        2 => ProcessSubscriptionState::Deleting,
        _ => return None,
    })
}

/// The replies kept for re-sent client requests, oldest first.
fn client_replies_data(
    replies: &HashMap<u64, Record>,
    order: &std::collections::VecDeque<(i64, u64)>,
) -> Vec<ClientReplyData> {
    order
        .iter()
        .filter_map(|&(at_ms, id)| {
            replies.get(&id).map(|reply| ClientReplyData {
                at_ms,
                reply: reply.clone(),
            })
        })
        .collect()
}

impl SnapshotData {
    fn from_state(state: &State) -> Self {
        // Destructured without `..`: a field added to `State` must be added here too (or
        // named as derived), or this stops compiling.
        let State {
            partition_id,
            next_key_counter,
            processes,
            process_versions: _,
            deployments,
            pending_distributions,
            element_instances,
            variables,
            jobs,
            activatable: _,
            job_deadlines: _,
            job_backoffs: _,
            incidents,
            messages,
            messages_by_correlation: _,
            message_deadlines: _,
            message_subscriptions,
            subscriptions_by_correlation: _,
            process_subscriptions,
            message_start_subscriptions,
            timers,
            timer_due: _,
            client_replies,
            client_reply_order,
        } = state;
        let mut deployments: Vec<Key> = deployments.iter().copied().collect();
        deployments.sort_unstable();
        Self {
            partition_id: *partition_id,
            next_key_counter: *next_key_counter,
            processes: sorted(processes)
                .into_iter()
                .map(|(key, process)| process_value(key, process))
                .collect(),
            deployments,
            pending_distributions: sorted(pending_distributions)
                .into_iter()
                .map(|(key, pending)| DistributionData {
                    key,
                    deployment: pending.deployment.clone(),
                    partitions: pending.partitions.iter().copied().collect(),
                })
                .collect(),
            element_instances: sorted(element_instances)
                .into_iter()
                .map(|(key, instance)| ElementInstanceData::from_instance(key, instance))
                .collect(),
            variables: sorted(variables)
                .into_iter()
                .map(|(scope_key, scope)| ScopeVariablesData::from_scope(scope_key, scope))
                .collect(),
            jobs: sorted(jobs)
                .into_iter()
                .map(|(key, job)| JobData::from_job(key, job))
                .collect(),
            incidents: sorted(incidents)
                .into_iter()
                .map(|(key, incident)| IncidentData {
                    key,
                    value: incident.value.clone(),
                })
                .collect(),
            messages: sorted(messages)
                .into_iter()
                .map(|(key, message)| MessageData::from_message(key, message))
                .collect(),
            message_subscriptions: sorted(message_subscriptions)
                .into_iter()
                .map(|(key, subscription)| MessageSubscriptionData {
                    key,
                    value: subscription.value.clone(),
                    correlating_message: subscription.correlating_message,
                })
                .collect(),
            process_subscriptions: sorted(process_subscriptions)
                .into_iter()
                .map(|(element_instance_key, subscription)| {
                    ProcessSubscriptionData::from_subscription(element_instance_key, subscription)
                })
                .collect(),
            message_start_subscriptions: sorted(message_start_subscriptions)
                .into_iter()
                .map(|(key, subscription)| {
                    MessageStartSubscriptionData::from_subscription(key, subscription)
                })
                .collect(),
            timers: sorted(timers)
                .into_iter()
                .map(|(key, timer)| TimerData {
                    key,
                    value: timer.value.clone(),
                })
                .collect(),
            client_replies: client_replies_data(client_replies, client_reply_order),
        }
    }

    fn into_state(self) -> Result<State, SnapshotError> {
        let Self {
            partition_id,
            next_key_counter,
            processes,
            deployments,
            pending_distributions,
            element_instances,
            variables,
            jobs,
            incidents,
            messages,
            message_subscriptions,
            process_subscriptions,
            message_start_subscriptions,
            timers,
            client_replies,
        } = self;
        if !(1..=crate::record::KEY_COUNTER_LIMIT).contains(&next_key_counter) {
            return Err(invalid(format!(
                "the next key counter is {next_key_counter}, outside 1..={}",
                crate::record::KEY_COUNTER_LIMIT
            )));
        }
        let mut state = State::new(partition_id);
        restore_processes(&mut state, processes)?;
        check_ascending("deployments", deployments.iter().copied())?;
        state.deployments = deployments.into_iter().collect();
        restore_distributions(&mut state, pending_distributions)?;
        restore_element_instances(&mut state, element_instances)?;
        restore_variables(&mut state, variables)?;
        restore_jobs(&mut state, jobs)?;
        check_ascending("incidents", incidents.iter().map(|incident| incident.key))?;
        state.incidents = incidents
            .into_iter()
            .map(|IncidentData { key, value }| (key, Incident { key, value }))
            .collect();
        restore_messages(&mut state, messages)?;
        restore_message_subscriptions(&mut state, message_subscriptions)?;
        restore_process_subscriptions(&mut state, process_subscriptions)?;
        restore_message_start_subscriptions(&mut state, message_start_subscriptions)?;
        restore_timers(&mut state, timers)?;
        restore_client_replies(&mut state, client_replies)?;
        // Last: applying `PROCESS CREATED` above advanced the counter past the process keys.
        state.next_key_counter = next_key_counter;
        Ok(state)
    }
}

fn process_value(key: Key, process: &DeployedProcess) -> ProcessValue {
    ProcessValue {
        bpmn_process_id: process.bpmn_process_id.to_string(),
        version: process.version,
        process_definition_key: key,
        resource_name: process.resource_name.clone(),
        checksum: process.checksum.clone(),
        resource: process.resource.to_string().into(),
    }
}

impl ProcessSubscriptionData {
    fn from_subscription(element_instance_key: Key, subscription: &ProcessSubscription) -> Self {
        Self {
            element_instance_key,
            key: subscription.key,
            state: subscription_state_code(subscription.state),
            value: subscription.value.clone(),
        }
    }
}

impl MessageStartSubscriptionData {
    fn from_subscription(key: Key, subscription: &MessageStartSubscription) -> Self {
        Self {
            key,
            process_definition_key: subscription.process_definition_key,
            bpmn_process_id: subscription.bpmn_process_id.clone(),
            start_event_id: subscription.start_event_id.clone(),
            message_name: subscription.message_name.clone(),
        }
    }
}

/// Restores the kept client replies in their order, checking each is one `remember_reply`
/// would keep.
fn restore_client_replies(
    state: &mut State,
    replies: Vec<ClientReplyData>,
) -> Result<(), SnapshotError> {
    if replies.len() > crate::state::CLIENT_REPLIES_MAX {
        return Err(invalid(format!(
            "{} client replies, more than the {} kept",
            replies.len(),
            crate::state::CLIENT_REPLIES_MAX
        )));
    }
    for ClientReplyData { at_ms, reply } in replies {
        let id = reply.request_id;
        if id == 0 || reply.record_type == RecordType::Command {
            return Err(invalid(format!(
                "a kept client reply is not a reply (request id {id}, {:?})",
                reply.record_type
            )));
        }
        if state.client_replies.insert(id, reply).is_some() {
            return Err(invalid(format!("client request {id} is kept twice")));
        }
        state.client_reply_order.push_back((at_ms, id));
    }
    Ok(())
}

/// Checks that keys are strictly ascending: canonical order, no duplicates.
fn check_ascending<K: Ord + Copy + std::fmt::Debug>(
    what: &str,
    keys: impl IntoIterator<Item = K>,
) -> Result<(), SnapshotError> {
    let mut previous: Option<K> = None;
    for key in keys {
        if let Some(previous) = previous
            && previous >= key
        {
            return Err(invalid(format!(
                "{what} are not in ascending key order ({previous:?} before {key:?})"
            )));
        }
        previous = Some(key);
    }
    Ok(())
}

/// Re-deploys every process through the `PROCESS CREATED` applier, after checking that its
/// resource still parses (the applier would skip one that does not, and the snapshot would
/// silently lose it).
fn restore_processes(state: &mut State, processes: Vec<ProcessValue>) -> Result<(), SnapshotError> {
    check_ascending(
        "processes",
        processes
            .iter()
            .map(|process| process.process_definition_key),
    )?;
    for process in processes {
        let parsed = crate::bpmn::parse(process.resource.as_bytes()).map_err(|error| {
            invalid(format!(
                "process {} (key {}) no longer parses: {error}",
                process.bpmn_process_id, process.process_definition_key
            ))
        })?;
        let mut model = parsed
            .into_iter()
            .find(|model| model.bpmn_process_id == process.bpmn_process_id)
            .ok_or_else(|| {
                invalid(format!(
                    "process {} (key {}) is not in its resource {}",
                    process.bpmn_process_id, process.process_definition_key, process.resource_name
                ))
            })?;
        model.compile_expressions().map_err(|error| {
            invalid(format!(
                "process {} (key {}) no longer compiles: {error}",
                process.bpmn_process_id, process.process_definition_key
            ))
        })?;
        let (key, id, version) = (
            process.process_definition_key,
            process.bpmn_process_id.clone(),
            process.version,
        );
        let record = Record {
            record_type: RecordType::Event,
            value_type: ValueType::Process,
            intent: Intent::Created,
            key,
            timestamp_ms: 0,
            rejection: None,
            value: RecordValue::Process(process),
            request_id: 0,
        };
        state.apply(&record);
        if state.process(key).is_none() {
            return Err(invalid(format!(
                "process {id} (key {key}) version {version} cannot be deployed: the key or \
                 version is not valid, or another process has that version"
            )));
        }
    }
    Ok(())
}

fn restore_distributions(
    state: &mut State,
    distributions: Vec<DistributionData>,
) -> Result<(), SnapshotError> {
    check_ascending(
        "pending distributions",
        distributions.iter().map(|pending| pending.key),
    )?;
    for DistributionData {
        key,
        deployment,
        partitions,
    } in distributions
    {
        check_ascending("distribution partitions", partitions.iter().copied())?;
        state.pending_distributions.insert(
            key,
            PendingDistribution {
                key,
                deployment,
                partitions: partitions.into_iter().collect(),
                resent_at_ms: 0,
            },
        );
    }
    Ok(())
}

impl ElementInstanceData {
    fn from_instance(key: Key, instance: &ElementInstance) -> Self {
        Self {
            key,
            process_instance_key: instance.process_instance_key,
            flow_scope_key: instance.flow_scope_key,
            process_definition_key: instance.process_definition_key,
            element: instance.element,
            state: element_state_code(instance.state),
            children: instance.children.clone(),
            join_tokens: instance
                .join_tokens
                .iter()
                .map(|&(flow, tokens)| JoinTokensData { flow, tokens })
                .collect(),
            active_flows: instance.active_flows,
            job_key: instance.job_key,
            timer_keys: instance.timer_keys.clone(),
            subscription: instance.subscription,
        }
    }
}

/// Restores element instances, checking that each names an element and flows of a deployed
/// process (the processors index the model with them).
fn restore_element_instances(
    state: &mut State,
    instances: Vec<ElementInstanceData>,
) -> Result<(), SnapshotError> {
    check_ascending("element instances", instances.iter().map(|i| i.key))?;
    for data in instances {
        let process = state
            .processes
            .get(&data.process_definition_key)
            .ok_or_else(|| {
                invalid(format!(
                    "element instance {} belongs to process {}, which is not deployed",
                    data.key, data.process_definition_key
                ))
            })?;
        let model = &process.model;
        let in_range = |index: u32, len: usize| usize::try_from(index).is_ok_and(|i| i < len);
        if !in_range(data.element, model.elements.len()) {
            return Err(invalid(format!(
                "element instance {} names element {} of process {}, which has {} elements",
                data.key,
                data.element,
                data.process_definition_key,
                model.elements.len()
            )));
        }
        if let Some(join) = data
            .join_tokens
            .iter()
            .find(|join| !in_range(join.flow, model.flows.len()))
        {
            return Err(invalid(format!(
                "element instance {} holds tokens of flow {}, which its process does not have",
                data.key, join.flow
            )));
        }
        let element_state = element_state_from_code(data.state).ok_or_else(|| {
            invalid(format!(
                "element instance {} has unknown state {}",
                data.key, data.state
            ))
        })?;
        state.element_instances.insert(
            data.key,
            ElementInstance {
                key: data.key,
                process_instance_key: data.process_instance_key,
                flow_scope_key: data.flow_scope_key,
                process_definition_key: data.process_definition_key,
                element: data.element,
                state: element_state,
                children: data.children,
                join_tokens: data
                    .join_tokens
                    .into_iter()
                    .map(|join| (join.flow, join.tokens))
                    .collect(),
                active_flows: data.active_flows,
                job_key: data.job_key,
                timer_keys: data.timer_keys,
                subscription: data.subscription,
            },
        );
    }
    Ok(())
}

impl ScopeVariablesData {
    fn from_scope(scope_key: Key, scope: &HashMap<String, Variable>) -> Self {
        let mut names: Vec<&String> = scope.keys().collect();
        names.sort_unstable();
        Self {
            scope_key,
            variables: names
                .into_iter()
                .map(|name| {
                    let variable = &scope[name];
                    let mut value = Vec::new();
                    json_tokens(&variable.value, &mut value);
                    VariableData {
                        name: name.clone(),
                        key: variable.key,
                        value,
                    }
                })
                .collect(),
        }
    }
}

fn restore_variables(
    state: &mut State,
    scopes: Vec<ScopeVariablesData>,
) -> Result<(), SnapshotError> {
    check_ascending(
        "variable scopes",
        scopes.iter().map(|scope| scope.scope_key),
    )?;
    for ScopeVariablesData {
        scope_key,
        variables,
    } in scopes
    {
        check_ascending(
            "variable names",
            variables.iter().map(|variable| variable.name.as_str()),
        )?;
        let mut scope = HashMap::with_capacity(variables.len());
        for VariableData { name, key, value } in variables {
            let value = json_value(&value).map_err(|message| {
                invalid(format!(
                    "variable {name} of scope {scope_key} is damaged: {message}"
                ))
            })?;
            scope.insert(name, Variable { key, value });
        }
        state.variables.insert(scope_key, scope);
    }
    Ok(())
}

fn json_tokens(value: &Value, out: &mut Vec<JsonToken>) {
    match value {
        Value::Null => out.push(JsonToken::Null),
        Value::Bool(value) => out.push(JsonToken::Bool(*value)),
        Value::Number(number) => out.push(number_token(number)),
        Value::String(text) => out.push(JsonToken::String(text.clone())),
        Value::Array(items) => {
            out.push(JsonToken::Array(
                u32::try_from(items.len()).expect("a JSON array has fewer than 2^32 items"),
            ));
            for item in items {
                json_tokens(item, out);
            }
        }
        Value::Object(entries) => {
            out.push(JsonToken::Object(
                u32::try_from(entries.len()).expect("a JSON object has fewer than 2^32 entries"),
            ));
            for (name, item) in entries {
                out.push(JsonToken::String(name.clone()));
                json_tokens(item, out);
            }
        }
    }
}

fn number_token(number: &Number) -> JsonToken {
    if let Some(value) = number.as_u64() {
        JsonToken::PosInt(value)
    } else if let Some(value) = number.as_i64() {
        JsonToken::NegInt(value)
    } else {
        JsonToken::Float(
            number
                .as_f64()
                .expect("a JSON number is a u64, an i64 or an f64"),
        )
    }
}

/// Rebuilds a value from its pre-order tokens; every token must be used.
fn json_value(tokens: &[JsonToken]) -> Result<Value, String> {
    let mut position = 0;
    let value = json_node(tokens, &mut position, 0)?;
    if position != tokens.len() {
        return Err(format!(
            "{} tokens follow the value",
            tokens.len() - position
        ));
    }
    Ok(value)
}

fn json_node(tokens: &[JsonToken], position: &mut usize, depth: usize) -> Result<Value, String> {
    let token = tokens
        .get(*position)
        .ok_or_else(|| "the value ends early".to_owned())?;
    *position += 1;
    let remaining = tokens.len() - *position;
    Ok(match token {
        JsonToken::Null => Value::Null,
        JsonToken::Bool(value) => Value::Bool(*value),
        JsonToken::PosInt(value) => Value::Number(Number::from(*value)),
        JsonToken::NegInt(value) => {
            if *value >= 0 {
                return Err(format!("negative integer token holds {value}"));
            }
            Value::Number(Number::from(*value))
        }
        JsonToken::Float(value) => Value::Number(
            Number::from_f64(*value).ok_or_else(|| format!("non-finite number {value}"))?,
        ),
        JsonToken::String(text) => Value::String(text.clone()),
        JsonToken::Array(len) => {
            if depth >= JSON_DEPTH_MAX {
                return Err(format!("nested deeper than {JSON_DEPTH_MAX}"));
            }
            let len = usize::try_from(*len).map_err(|error| error.to_string())?;
            let mut items = Vec::with_capacity(len.min(remaining));
            for _ in 0..len {
                items.push(json_node(tokens, position, depth + 1)?);
            }
            Value::Array(items)
        }
        JsonToken::Object(len) => {
            if depth >= JSON_DEPTH_MAX {
                return Err(format!("nested deeper than {JSON_DEPTH_MAX}"));
            }
            let len = usize::try_from(*len).map_err(|error| error.to_string())?;
            let mut entries = Map::with_capacity(len.min(remaining / 2));
            for _ in 0..len {
                let Some(JsonToken::String(name)) = tokens.get(*position) else {
                    return Err("an object entry has no name".to_owned());
                };
                *position += 1;
                let item = json_node(tokens, position, depth + 1)?;
                if entries.insert(name.clone(), item).is_some() {
                    return Err(format!("the object has two entries named {name:?}"));
                }
            }
            Value::Object(entries)
        }
    })
}

impl JobData {
    fn from_job(key: Key, job: &Job) -> Self {
        Self {
            key,
            job_type: job.job_type.to_string(),
            state: job_state_code(job.state),
            retries: job.retries,
            deadline_ms: job.deadline_ms,
            recurring_time_ms: job.recurring_time_ms,
            worker: job.worker.clone(),
            error_message: job.error_message.clone(),
            element_instance_key: job.element_instance_key,
            process_instance_key: job.process_instance_key,
            process_definition_key: job.process_definition_key,
        }
    }
}

/// Restores jobs and their indexes as the job appliers keep them: activatable jobs by type,
/// deadlines of activated jobs, recurring times of jobs backing off.
fn restore_jobs(state: &mut State, jobs: Vec<JobData>) -> Result<(), SnapshotError> {
    check_ascending("jobs", jobs.iter().map(|job| job.key))?;
    for data in jobs {
        let job_state = job_state_from_code(data.state)
            .ok_or_else(|| invalid(format!("job {} has unknown state {}", data.key, data.state)))?;
        let key = data.key;
        let job_type: Rc<str> = Rc::from(data.job_type);
        match job_state {
            JobState::Activatable => {
                state
                    .activatable
                    .entry(Rc::clone(&job_type))
                    .or_default()
                    .insert(key);
            }
            JobState::Activated => {
                state.job_deadlines.insert((data.deadline_ms, key));
            }
            JobState::BackingOff => {
                state.job_backoffs.insert((data.recurring_time_ms, key));
            }
            JobState::Failed | JobState::ErrorThrown => {}
        }
        state.jobs.insert(
            key,
            Job {
                key,
                job_type,
                state: job_state,
                retries: data.retries,
                deadline_ms: data.deadline_ms,
                recurring_time_ms: data.recurring_time_ms,
                worker: data.worker,
                error_message: data.error_message,
                element_instance_key: data.element_instance_key,
                process_instance_key: data.process_instance_key,
                process_definition_key: data.process_definition_key,
            },
        );
    }
    Ok(())
}

impl MessageData {
    fn from_message(key: Key, message: &BufferedMessage) -> Self {
        Self {
            key,
            name: message.name.clone(),
            correlation_key: message.correlation_key.clone(),
            message_id: message.message_id.clone(),
            variables: message.variables.to_string(),
            deadline_ms: message.deadline_ms,
            correlated_to: message.correlated_to.clone(),
        }
    }
}

/// Restores buffered messages with their correlation index (in key order, which is
/// publication order) and deadlines.
fn restore_messages(state: &mut State, messages: Vec<MessageData>) -> Result<(), SnapshotError> {
    check_ascending("messages", messages.iter().map(|message| message.key))?;
    for data in messages {
        let key = data.key;
        state
            .messages_by_correlation
            .entry((data.name.clone(), data.correlation_key.clone()))
            .or_default()
            .push(key);
        state.message_deadlines.insert((data.deadline_ms, key));
        state.messages.insert(
            key,
            BufferedMessage {
                key,
                name: data.name,
                correlation_key: data.correlation_key,
                message_id: data.message_id,
                variables: data.variables.into(),
                deadline_ms: data.deadline_ms,
                correlated_to: data.correlated_to,
            },
        );
    }
    Ok(())
}

fn restore_message_subscriptions(
    state: &mut State,
    subscriptions: Vec<MessageSubscriptionData>,
) -> Result<(), SnapshotError> {
    check_ascending(
        "message subscriptions",
        subscriptions.iter().map(|subscription| subscription.key),
    )?;
    for MessageSubscriptionData {
        key,
        value,
        correlating_message,
    } in subscriptions
    {
        state
            .subscriptions_by_correlation
            .entry((value.message_name.clone(), value.correlation_key.clone()))
            .or_default()
            .push(key);
        state.message_subscriptions.insert(
            key,
            MessageSubscription {
                key,
                value,
                correlating_message,
                resent_at_ms: 0,
            },
        );
    }
    Ok(())
}

fn restore_process_subscriptions(
    state: &mut State,
    subscriptions: Vec<ProcessSubscriptionData>,
) -> Result<(), SnapshotError> {
    check_ascending(
        "process subscriptions",
        subscriptions
            .iter()
            .map(|subscription| subscription.element_instance_key),
    )?;
    for data in subscriptions {
        let subscription_state = subscription_state_from_code(data.state).ok_or_else(|| {
            invalid(format!(
                "the subscription of element instance {} has unknown state {}",
                data.element_instance_key, data.state
            ))
        })?;
        state.process_subscriptions.insert(
            data.element_instance_key,
            ProcessSubscription {
                key: data.key,
                state: subscription_state,
                value: data.value,
                resent_at_ms: 0,
            },
        );
    }
    Ok(())
}

fn restore_message_start_subscriptions(
    state: &mut State,
    subscriptions: Vec<MessageStartSubscriptionData>,
) -> Result<(), SnapshotError> {
    check_ascending(
        "message start subscriptions",
        subscriptions.iter().map(|subscription| subscription.key),
    )?;
    for data in subscriptions {
        state.message_start_subscriptions.insert(
            data.key,
            MessageStartSubscription {
                key: data.key,
                process_definition_key: data.process_definition_key,
                bpmn_process_id: data.bpmn_process_id,
                start_event_id: data.start_event_id,
                message_name: data.message_name,
            },
        );
    }
    Ok(())
}

fn restore_timers(state: &mut State, timers: Vec<TimerData>) -> Result<(), SnapshotError> {
    check_ascending("timers", timers.iter().map(|timer| timer.key))?;
    for TimerData { key, value } in timers {
        state.timer_due.insert((value.due_date, key));
        state.timers.insert(key, Timer { key, value });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip_value(value: &Value) -> Value {
        let mut tokens = Vec::new();
        json_tokens(value, &mut tokens);
        json_value(&tokens).expect("tokens of a value decode")
    }

    #[test]
    fn json_values_round_trip_exactly() {
        let text = r#"{"z":1,"a":[-1,0.30000000000000004,-0.0,1e300,null,true,"s"],"m":{"k":{}},"u":18446744073709551615}"#;
        let value: Value = serde_json::from_str(text).expect("valid JSON");
        let back = round_trip_value(&value);
        assert_eq!(back, value);
        // Key order (preserve_order) survives.
        assert_eq!(
            serde_json::to_string(&back).expect("serializes"),
            serde_json::to_string(&value).expect("serializes")
        );
    }

    #[test]
    fn json_tokens_reject_damage() {
        assert!(json_value(&[]).is_err());
        assert!(json_value(&[JsonToken::Array(2), JsonToken::Null]).is_err());
        assert!(json_value(&[JsonToken::Null, JsonToken::Null]).is_err());
        assert!(json_value(&[JsonToken::Object(1), JsonToken::Null, JsonToken::Null]).is_err());
        assert!(json_value(&[JsonToken::NegInt(3)]).is_err());
        assert!(json_value(&[JsonToken::Float(f64::NAN)]).is_err());
        let duplicate = [
            JsonToken::Object(2),
            JsonToken::String("a".into()),
            JsonToken::Null,
            JsonToken::String("a".into()),
            JsonToken::Null,
        ];
        assert!(json_value(&duplicate).is_err());
        let deep: Vec<JsonToken> = (0..=JSON_DEPTH_MAX)
            .map(|_| JsonToken::Array(1))
            .chain(std::iter::once(JsonToken::Null))
            .collect();
        assert!(json_value(&deep).is_err());
        let allowed: Vec<JsonToken> = (0..JSON_DEPTH_MAX)
            .map(|_| JsonToken::Array(1))
            .chain(std::iter::once(JsonToken::Null))
            .collect();
        assert!(json_value(&allowed).is_ok());
    }

    #[test]
    fn empty_state_round_trips_and_header_is_checked() {
        let bytes = encode_snapshot(&State::new(3));
        assert_eq!(&bytes[..4], b"SLSN");
        let state = decode_snapshot(&bytes).expect("a fresh snapshot decodes");
        assert_eq!(state.partition_id, 3);
        assert_eq!(encode_snapshot(&state), bytes);

        let mut version = bytes.clone();
        version[4] = 3;
        let crc = crc32c::crc32c(&version[..HEADER_CHECKED_BYTES]);
        version[HEADER_CHECKED_BYTES..SNAPSHOT_HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            decode_snapshot(&version),
            Err(SnapshotError::UnsupportedVersion { found: 3 })
        ));

        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            decode_snapshot(&longer),
            Err(SnapshotError::Invalid(_))
        ));
        assert!(matches!(
            decode_snapshot(b"XXXXXXXX"),
            Err(SnapshotError::BadMagic)
        ));
        assert!(matches!(
            decode_snapshot(b"SL"),
            Err(SnapshotError::Truncated { .. })
        ));
    }
}
