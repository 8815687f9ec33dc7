//! Records: commands, events and rejections, with Zeebe's value types and intents.
//!
//! A record is what a partition's log holds. The leader writes a command together with the
//! events (and follow-up commands) that processing it produced, as one log batch; followers and
//! recovery apply only the events. Values are plain data: variables travel as JSON text.
//!
//! Records are serialized with rkyv into the log ([`encode_records`] / [`decode_records`]) and
//! with serde as JSON for golden tests and tools.

use std::sync::Arc;

use rkyv::rancor;
use rkyv::util::AlignedVec;
use serde::Serialize;

/// A Zeebe key: `partition_id << 51` plus a per-partition counter.
pub type Key = i64;

/// Shared, immutable text for the values that can be large (resources, variable documents,
/// variable values). Cloning shares the allocation, and the log's encoder writes a shared
/// allocation once: a deployment's resource appears in its command, its process events and its
/// deployment event, yet takes its size once in the entry (rkyv's shared pointers).
#[derive(
    Clone,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct Text(Arc<str>);

impl Text {
    /// The text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Text {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<String> for Text {
    fn from(text: String) -> Self {
        Text(Arc::from(text))
    }
}

impl From<&str> for Text {
    fn from(text: &str) -> Self {
        Text(Arc::from(text))
    }
}

impl From<Arc<str>> for Text {
    fn from(text: Arc<str>) -> Self {
        Text(text)
    }
}

impl From<Text> for Arc<str> {
    fn from(text: Text) -> Self {
        text.0
    }
}

impl From<Text> for String {
    fn from(text: Text) -> Self {
        text.0.as_ref().to_owned()
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<String> for Text {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::fmt::Display for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&*self.0, f)
    }
}

impl Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Bits of a key below the partition id.
pub const KEY_PARTITION_SHIFT: u32 = 51;

/// The exclusive upper bound of a key's counter part: a partition hands out counters
/// `1..KEY_COUNTER_LIMIT`. A key whose counter part is at or above it (`2^51 - 1`, the all-ones
/// counter) cannot have been made by any partition: one more and the counter would carry into
/// the partition bits, naming the next partition's first key.
pub const KEY_COUNTER_LIMIT: i64 = (1_i64 << KEY_PARTITION_SHIFT) - 1;

/// The key of the `counter`-th entity created on `partition_id`.
#[must_use]
pub fn encode_key(partition_id: u32, counter: i64) -> Key {
    (i64::from(partition_id) << KEY_PARTITION_SHIFT) + counter
}

/// Whether `key` is one a partition can have handed out: positive, with a partition id of at
/// least 1 and a counter in `1..KEY_COUNTER_LIMIT`.
#[must_use]
pub fn is_possible_key(key: Key) -> bool {
    key > 0 && key_partition(key) >= 1 && (1..KEY_COUNTER_LIMIT).contains(&key_counter(key))
}

/// The partition a key was created on (0 for keys that are not partition keys, like `-1`).
#[must_use]
pub fn key_partition(key: Key) -> u32 {
    if key <= 0 {
        return 0;
    }
    u32::try_from(key >> KEY_PARTITION_SHIFT).unwrap_or(0)
}

/// The counter part of a key.
#[must_use]
pub fn key_counter(key: Key) -> i64 {
    key & ((1_i64 << KEY_PARTITION_SHIFT) - 1)
}

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RecordType {
    Command,
    Event,
    CommandRejection,
}

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ValueType {
    Deployment,
    Process,
    ProcessInstance,
    ProcessInstanceCreation,
    Job,
    JobBatch,
    Message,
    MessageSubscription,
    ProcessMessageSubscription,
    MessageStartEventSubscription,
    Timer,
    Incident,
    Variable,
    VariableDocument,
    CommandDistribution,
}

/// Intents of every value type, named as Zeebe names them.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Intent {
    // Deployment, process, creation, variables.
    Create,
    Created,
    FullyDistributed,
    CreateWithAwaitingResult,
    Update,
    Updated,
    // Process instance.
    ActivateElement,
    CompleteElement,
    TerminateElement,
    ElementActivating,
    ElementActivated,
    ElementCompleting,
    ElementCompleted,
    ElementTerminating,
    ElementTerminated,
    SequenceFlowTaken,
    Cancel,
    // Jobs.
    Complete,
    Completed,
    Fail,
    Failed,
    TimeOut,
    TimedOut,
    UpdateRetries,
    RetriesUpdated,
    UpdateTimeout,
    TimeoutUpdated,
    ThrowError,
    ErrorThrown,
    RecurAfterBackoff,
    RecurredAfterBackoff,
    Canceled,
    // Job batch.
    Activate,
    Activated,
    // Messages.
    Publish,
    Published,
    Expire,
    Expired,
    // Subscriptions.
    Creating,
    Correlate,
    Correlating,
    Correlated,
    Delete,
    Deleting,
    Deleted,
    Reject,
    Rejected,
    // Timers.
    Trigger,
    Triggered,
    // Incidents.
    Resolve,
    Resolved,
    // Command distribution.
    Started,
    Distributing,
    Acknowledge,
    Acknowledged,
    Finished,
}

/// The commands a gateway client may send: the gateway maps every client request to one of
/// these (deploy, create an instance with or without its result, cancel, activate jobs,
/// complete / fail / throw an error for / update the retries or timeout of a job, publish a
/// message, set variables, resolve an incident). Every other command is internal.
pub const CLIENT_COMMANDS: &[(ValueType, Intent)] = &[
    (ValueType::Deployment, Intent::Create),
    (ValueType::ProcessInstanceCreation, Intent::Create),
    (
        ValueType::ProcessInstanceCreation,
        Intent::CreateWithAwaitingResult,
    ),
    (ValueType::ProcessInstance, Intent::Cancel),
    (ValueType::JobBatch, Intent::Activate),
    (ValueType::Job, Intent::Complete),
    (ValueType::Job, Intent::Fail),
    (ValueType::Job, Intent::ThrowError),
    (ValueType::Job, Intent::UpdateRetries),
    (ValueType::Job, Intent::UpdateTimeout),
    (ValueType::Message, Intent::Publish),
    (ValueType::VariableDocument, Intent::Update),
    (ValueType::Incident, Intent::Resolve),
];

/// The internal commands one partition's engine sends another (as
/// [`crate::SideEffect::Send`]): a deployment distributed from partition 1 (`DEPLOYMENT CREATE`
/// with the deployment's key) and its acknowledgement, and the message-subscription exchange
/// between an instance's partition and a message's partition. The broker accepts these only
/// from another broker of the cluster, never from a client.
pub const PARTITION_COMMANDS: &[(ValueType, Intent)] = &[
    (ValueType::Deployment, Intent::Create),
    (ValueType::CommandDistribution, Intent::Acknowledge),
    (ValueType::MessageSubscription, Intent::Create),
    (ValueType::MessageSubscription, Intent::Correlate),
    (ValueType::MessageSubscription, Intent::Delete),
    (ValueType::MessageSubscription, Intent::Reject),
    (ValueType::ProcessMessageSubscription, Intent::Create),
    (ValueType::ProcessMessageSubscription, Intent::Correlate),
    (ValueType::ProcessMessageSubscription, Intent::Delete),
];

/// The internal commands only the engine itself makes, from the clock ([`crate::Engine::tick`]):
/// a timer fires, an activated job times out, a backed-off job recurs, a buffered message
/// expires. They are processed where they are made and reach the log only inside the batch
/// they start; the broker accepts them from nobody.
pub const ENGINE_COMMANDS: &[(ValueType, Intent)] = &[
    (ValueType::Timer, Intent::Trigger),
    (ValueType::Job, Intent::TimeOut),
    (ValueType::Job, Intent::RecurAfterBackoff),
    (ValueType::Message, Intent::Expire),
];

/// Whether a gateway client may send this command ([`CLIENT_COMMANDS`]). The broker refuses
/// every other command that arrives from a client: internal intents (a timer trigger, a
/// message expiry, a subscription correlation, a distribution acknowledgement, a job time-out)
/// would otherwise let a client drive the engine's own bookkeeping.
#[must_use]
pub fn client_may_send(value_type: ValueType, intent: Intent) -> bool {
    CLIENT_COMMANDS.contains(&(value_type, intent))
}

/// Whether another partition may send this command ([`PARTITION_COMMANDS`]).
#[must_use]
pub fn partition_may_send(value_type: ValueType, intent: Intent) -> bool {
    PARTITION_COMMANDS.contains(&(value_type, intent))
}

/// Why a command was rejected; the gateway maps these to gRPC status codes.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RejectionType {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    InvalidState,
    ProcessingError,
    ExceededBatchRecordSize,
}

/// One record of the log.
#[derive(Debug, Clone, PartialEq, Serialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub record_type: RecordType,
    pub value_type: ValueType,
    pub intent: Intent,
    /// The key of the entity the record is about, `-1` when it has none yet.
    pub key: Key,
    /// Set by the engine: the time processing saw, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejection: Option<Rejection>,
    pub value: RecordValue,
    /// On a client's command, the gateway's id of its request; on the record that answers the
    /// command, the same id (Zeebe's `requestId`). 0 for none. A command carrying the id of a
    /// request already answered is answered again from the first reply instead of running
    /// twice, so a gateway can re-send a command whose answer it lost.
    #[serde(skip_serializing_if = "is_zero")]
    pub request_id: u64,
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_zero(value: &u64) -> bool {
    *value == 0
}

#[derive(Debug, Clone, PartialEq, Serialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejection {
    pub rejection_type: RejectionType,
    pub reason: String,
}

impl Record {
    /// A command with no key yet.
    #[must_use]
    pub fn command(intent: Intent, value: RecordValue) -> Self {
        Self {
            record_type: RecordType::Command,
            value_type: value.value_type(),
            intent,
            key: -1,
            timestamp_ms: 0,
            rejection: None,
            value,
            request_id: 0,
        }
    }

    /// A command about the entity `key`.
    #[must_use]
    pub fn command_for(key: Key, intent: Intent, value: RecordValue) -> Self {
        Self {
            key,
            ..Self::command(intent, value)
        }
    }

    /// This record as kept to answer a re-sent request: without the large texts (resources and
    /// variables), which no reply of a command needs.
    #[must_use]
    pub fn slim_reply(&self) -> Record {
        // Cloning shares the texts (`Text` is reference-counted); they are dropped below.
        let mut reply = self.clone();
        match &mut reply.value {
            RecordValue::Deployment(deployment) => {
                for resource in &mut deployment.resources {
                    resource.resource = Text::default();
                }
            }
            RecordValue::Process(process) => process.resource = Text::default(),
            RecordValue::ProcessInstanceCreation(creation) => creation.variables = Text::default(),
            RecordValue::Job(job) => job.variables = Text::default(),
            RecordValue::JobBatch(batch) => {
                for job in &mut batch.jobs {
                    job.variables = Text::default();
                }
            }
            RecordValue::Message(message) => message.variables = Text::default(),
            RecordValue::MessageSubscription(subscription) => {
                subscription.variables = Text::default();
            }
            RecordValue::ProcessMessageSubscription(subscription) => {
                subscription.variables = Text::default();
            }
            RecordValue::MessageStartEventSubscription(subscription) => {
                subscription.variables = Text::default();
            }
            RecordValue::VariableDocument(document) => document.variables = Text::default(),
            RecordValue::Variable(variable) => variable.value = Text::default(),
            RecordValue::ProcessInstance(_)
            | RecordValue::Timer(_)
            | RecordValue::Incident(_)
            | RecordValue::CommandDistribution(_) => {}
        }
        reply
    }

    /// This record as one line of JSON (for golden tests and tools).
    #[must_use]
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|error| format!("{{\"error\":\"{error}\"}}"))
    }
}

/// The value of a record, one variant per value type.
#[derive(Debug, Clone, PartialEq, Serialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[serde(untagged)]
pub enum RecordValue {
    Deployment(DeploymentValue),
    Process(ProcessValue),
    ProcessInstance(ProcessInstanceValue),
    ProcessInstanceCreation(ProcessInstanceCreationValue),
    Job(JobValue),
    JobBatch(JobBatchValue),
    Message(MessageValue),
    MessageSubscription(MessageSubscriptionValue),
    ProcessMessageSubscription(ProcessMessageSubscriptionValue),
    MessageStartEventSubscription(MessageStartEventSubscriptionValue),
    Timer(TimerValue),
    Incident(IncidentValue),
    Variable(VariableValue),
    VariableDocument(VariableDocumentValue),
    CommandDistribution(CommandDistributionValue),
}

impl RecordValue {
    #[must_use]
    pub fn value_type(&self) -> ValueType {
        match self {
            Self::Deployment(_) => ValueType::Deployment,
            Self::Process(_) => ValueType::Process,
            Self::ProcessInstance(_) => ValueType::ProcessInstance,
            Self::ProcessInstanceCreation(_) => ValueType::ProcessInstanceCreation,
            Self::Job(_) => ValueType::Job,
            Self::JobBatch(_) => ValueType::JobBatch,
            Self::Message(_) => ValueType::Message,
            Self::MessageSubscription(_) => ValueType::MessageSubscription,
            Self::ProcessMessageSubscription(_) => ValueType::ProcessMessageSubscription,
            Self::MessageStartEventSubscription(_) => ValueType::MessageStartEventSubscription,
            Self::Timer(_) => ValueType::Timer,
            Self::Incident(_) => ValueType::Incident,
            Self::Variable(_) => ValueType::Variable,
            Self::VariableDocument(_) => ValueType::VariableDocument,
            Self::CommandDistribution(_) => ValueType::CommandDistribution,
        }
    }
}

/// A resource of a deployment (a `.bpmn` file).
#[derive(
    Debug, Clone, PartialEq, Default, Serialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentResource {
    pub resource_name: String,
    /// The XML text (resources must be UTF-8).
    #[serde(skip)]
    pub resource: Text,
}

#[derive(
    Debug, Clone, PartialEq, Default, Serialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentValue {
    pub resources: Vec<DeploymentResource>,
    pub processes_metadata: Vec<ProcessMetadata>,
}

/// What a deployment says about each process it (re)deployed.
#[derive(
    Debug, Clone, PartialEq, Default, Serialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct ProcessMetadata {
    pub bpmn_process_id: String,
    pub version: i32,
    pub process_definition_key: Key,
    pub resource_name: String,
    /// crc32c of the resource, hex.
    pub checksum: String,
    /// The same resource was deployed before: no new version.
    pub duplicate: bool,
}

#[derive(
    Debug, Clone, PartialEq, Default, Serialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct ProcessValue {
    pub bpmn_process_id: String,
    pub version: i32,
    pub process_definition_key: Key,
    pub resource_name: String,
    pub checksum: String,
    #[serde(skip)]
    pub resource: Text,
}

/// The BPMN element type of a process-instance record, as Zeebe spells it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    Serialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BpmnElementType {
    #[default]
    Process,
    SubProcess,
    StartEvent,
    EndEvent,
    ServiceTask,
    ReceiveTask,
    ExclusiveGateway,
    ParallelGateway,
    IntermediateCatchEvent,
    BoundaryEvent,
    SequenceFlow,
}

#[derive(
    Debug, Clone, PartialEq, Default, Serialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct ProcessInstanceValue {
    pub bpmn_process_id: String,
    pub version: i32,
    pub process_definition_key: Key,
    pub process_instance_key: Key,
    pub element_id: String,
    /// The element instance that contains this one; `-1` for the process instance.
    pub flow_scope_key: Key,
    pub bpmn_element_type: BpmnElementType,
}

#[derive(
    Debug, Clone, PartialEq, Default, Serialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct ProcessInstanceCreationValue {
    pub bpmn_process_id: String,
    /// `-1` for the latest version.
    pub version: i32,
    pub process_definition_key: Key,
    pub process_instance_key: Key,
    /// A JSON object, or empty for none.
    pub variables: Text,
    /// With result: the variables to return (all when empty).
    pub fetch_variables: Vec<String>,
}

/// A `zeebe:header`.
#[derive(
    Debug, Clone, PartialEq, Default, Serialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct Header {
    pub key: String,
    pub value: String,
}

#[derive(
    Debug, Clone, PartialEq, Default, Serialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct JobValue {
    #[serde(rename = "type")]
    pub job_type: String,
    pub retries: i32,
    /// Epoch ms until which the activated job belongs to its worker; `-1` when not activated.
    pub deadline: i64,
    pub worker: String,
    pub custom_headers: Vec<Header>,
    /// JSON object: on activation the job's variables, on completion the result.
    pub variables: Text,
    pub error_code: String,
    pub error_message: String,
    /// Back-off in ms before a failed job becomes activatable again.
    pub retry_backoff: i64,
    /// Epoch ms when a backed-off job recurs.
    pub recurring_time: i64,
    /// Activation timeout in ms (for `UPDATE_TIMEOUT` the new one).
    pub timeout: i64,
    pub process_instance_key: Key,
    pub element_instance_key: Key,
    pub element_id: String,
    pub bpmn_process_id: String,
    pub process_definition_key: Key,
    pub process_definition_version: i32,
}

#[derive(
    Debug, Clone, PartialEq, Default, Serialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct JobBatchValue {
    #[serde(rename = "type")]
    pub job_type: String,
    pub worker: String,
    pub timeout: i64,
    pub max_jobs_to_activate: i32,
    /// Only these variables (all when empty).
    pub fetch_variables: Vec<String>,
    pub job_keys: Vec<Key>,
    pub jobs: Vec<JobValue>,
    /// More jobs were activatable than fit.
    pub truncated: bool,
}

#[derive(
    Debug, Clone, PartialEq, Default, Serialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct MessageValue {
    pub name: String,
    pub correlation_key: String,
    /// In ms; 0 correlates only to subscriptions open now.
    pub time_to_live: i64,
    /// Empty for none; otherwise unique among the buffered messages of the same name and key.
    pub message_id: String,
    pub variables: Text,
    /// Epoch ms at which the buffered message expires.
    pub deadline: i64,
}

#[derive(
    Debug, Clone, PartialEq, Default, Serialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct MessageSubscriptionValue {
    pub process_instance_key: Key,
    pub element_instance_key: Key,
    pub bpmn_process_id: String,
    pub message_name: String,
    pub correlation_key: String,
    pub message_key: Key,
    pub variables: Text,
    pub interrupting: bool,
}

#[derive(
    Debug, Clone, PartialEq, Default, Serialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct ProcessMessageSubscriptionValue {
    /// The partition that holds the message subscription (the correlation key's).
    pub subscription_partition_id: u32,
    pub process_instance_key: Key,
    pub element_instance_key: Key,
    pub bpmn_process_id: String,
    pub element_id: String,
    pub message_name: String,
    pub correlation_key: String,
    pub message_key: Key,
    pub variables: Text,
    pub interrupting: bool,
}

#[derive(
    Debug, Clone, PartialEq, Default, Serialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct MessageStartEventSubscriptionValue {
    pub process_definition_key: Key,
    pub bpmn_process_id: String,
    pub start_event_id: String,
    pub message_name: String,
    pub correlation_key: String,
    pub message_key: Key,
    pub process_instance_key: Key,
    pub variables: Text,
}

#[derive(
    Debug, Clone, PartialEq, Default, Serialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct TimerValue {
    /// `-1` for a timer start event.
    pub element_instance_key: Key,
    pub process_instance_key: Key,
    pub process_definition_key: Key,
    /// Epoch ms.
    pub due_date: i64,
    pub target_element_id: String,
    /// Firings left for a cycle (`-1` forever); 1 for a one-off timer.
    pub repetitions: i32,
    /// The cycle's interval text, empty for one-off timers (a start-event cycle re-arms with it).
    pub interval: String,
}

/// Why an incident was raised, as Zeebe names it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    Serialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorType {
    #[default]
    Unknown,
    JobNoRetries,
    ExtractValueError,
    ConditionError,
    UnhandledErrorEvent,
    IoMappingError,
    CalledElementError,
    /// A job too large to be activated within the message size limit.
    MessageSizeExceeded,
}

#[derive(
    Debug, Clone, PartialEq, Default, Serialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct IncidentValue {
    pub error_type: ErrorType,
    pub error_message: String,
    pub bpmn_process_id: String,
    pub process_definition_key: Key,
    pub process_instance_key: Key,
    pub element_id: String,
    pub element_instance_key: Key,
    /// `-1` unless the incident is about a job.
    pub job_key: Key,
    pub variable_scope_key: Key,
}

#[derive(
    Debug, Clone, PartialEq, Default, Serialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct VariableValue {
    pub name: String,
    /// JSON text.
    pub value: Text,
    pub scope_key: Key,
    pub process_instance_key: Key,
    pub process_definition_key: Key,
    pub bpmn_process_id: String,
}

#[derive(
    Debug, Clone, PartialEq, Default, Serialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct VariableDocumentValue {
    pub scope_key: Key,
    /// Set the variables on the scope itself, not where they already exist above it.
    pub local: bool,
    pub variables: Text,
}

#[derive(
    Debug, Clone, PartialEq, Default, Serialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct CommandDistributionValue {
    /// The partition the command goes to (or acknowledges from).
    pub partition_id: u32,
    pub value_type: Option<ValueType>,
}

/// Errors decoding records from a log batch payload.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("record payload is not a valid archive: {0}")]
    Invalid(String),
}

/// Encodes the records of one batch as its payload.
#[must_use]
pub fn encode_records(records: &[Record]) -> AlignedVec {
    // Every type here is plain data, so serialization cannot fail short of allocation failure.
    rkyv::to_bytes::<rancor::Error>(&records.to_vec())
        .expect("records are plain data and always serialize")
}

/// Decodes a batch payload written by [`encode_records`]. Checks the archive first; a damaged
/// payload is an error, never a panic.
pub fn decode_records(payload: &[u8]) -> Result<Vec<Record>, DecodeError> {
    let mut aligned = AlignedVec::<16>::with_capacity(payload.len());
    aligned.extend_from_slice(payload);
    rkyv::from_bytes::<Vec<Record>, rancor::Error>(&aligned)
        .map_err(|error| DecodeError::Invalid(error.to_string()))
}
