//! The partition's state, changed only by applying events.
//!
//! Processing and replay share [`State::apply`]: the leader applies each event as it writes it,
//! followers and recovery apply the same events from the committed log, so the two cannot
//! drift apart.
//!
//! Appliers trust nothing: the log is data from outside like a client's command. An event that
//! does not fit the state (a process whose resource does not parse, an element of a process
//! that is not deployed, a second `CREATED` for a live key, a life-cycle step of an element
//! instance that is not live) is skipped whole, never half-applied and never a panic. Whether an
//! event is skipped depends only on the state and the event, so every replica (the leader as
//! it writes, followers and recovery as they replay) skips the same events and ends in the same
//! state.
//!
//! Keys: the counter of the next key moves only with this partition's own events
//! ([`State::apply`] of a `RecordType::Event` whose key has this partition's id and a counter
//! below [`KEY_COUNTER_RESERVED`]). Commands and rejections carry keys that someone else chose
//! and move nothing.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::rc::Rc;

use serde_json::Value;

use crate::model::{ElementIndex, ElementKind, FlowIndex, Process};
use crate::record::{
    DeploymentValue, Intent, KEY_COUNTER_LIMIT, Key, Record, RecordType, RecordValue, key_counter,
    key_partition,
};

/// Counters at and above this are never observed from the log, and a partition whose counter
/// reaches it refuses further commands ([`State::keys_exhausted`]): the last `2^40` counters
/// below [`KEY_COUNTER_LIMIT`] stay in reserve so that no single command, however many keys it
/// takes, can run the counter into the next partition's keys. (`2^51 - 2^40` keys is some
/// seventy years at a million keys a second.)
pub const KEY_COUNTER_RESERVED: i64 = KEY_COUNTER_LIMIT - (1_i64 << 40);

/// A deployed process version.
#[derive(Debug, Clone)]
pub struct DeployedProcess {
    pub key: Key,
    pub bpmn_process_id: Rc<str>,
    pub version: i32,
    pub resource_name: String,
    pub checksum: String,
    /// The resource's XML, kept for snapshots.
    pub resource: Rc<str>,
    pub model: Rc<Process>,
    pub element_ids: HashMap<String, ElementIndex>,
}

impl DeployedProcess {
    #[must_use]
    pub fn element_index(&self, id: &str) -> Option<ElementIndex> {
        self.element_ids.get(id).copied()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElementState {
    Activating,
    Activated,
    Completing,
    Terminating,
}

/// A live element instance (the process instance itself included).
#[derive(Debug, Clone)]
pub struct ElementInstance {
    pub key: Key,
    pub process_instance_key: Key,
    /// `-1` for the process instance.
    pub flow_scope_key: Key,
    pub process_definition_key: Key,
    pub element: ElementIndex,
    pub state: ElementState,
    /// Live child element instances (scopes only).
    pub children: Vec<Key>,
    /// Taken sequence flows waiting at a parallel join of this scope: (flow, tokens).
    pub join_tokens: Vec<(FlowIndex, u32)>,
    /// Sequence flows taken inside this scope whose target has not been activated yet (join
    /// tokens included): the scope completes only when this is 0 and no child is live.
    pub active_flows: u32,
    /// The job of a service task.
    pub job_key: Option<Key>,
    /// Timers of this element (catch event or boundary timers).
    pub timer_keys: Vec<Key>,
    /// The message subscription of this element (receive task or message catch event).
    pub subscription: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Activatable,
    Activated,
    /// Failed with no retries left (an incident is open) or failing with back-off.
    Failed,
    BackingOff,
    ErrorThrown,
}

/// A job of a service task.
#[derive(Debug, Clone)]
pub struct Job {
    pub key: Key,
    pub job_type: Rc<str>,
    pub state: JobState,
    pub retries: i32,
    pub deadline_ms: i64,
    pub recurring_time_ms: i64,
    pub worker: String,
    pub error_message: String,
    pub element_instance_key: Key,
    pub process_instance_key: Key,
    pub process_definition_key: Key,
}

/// An open incident.
#[derive(Debug, Clone)]
pub struct Incident {
    pub key: Key,
    pub value: crate::record::IncidentValue,
}

/// A buffered message (on the correlation key's partition).
#[derive(Debug, Clone)]
pub struct BufferedMessage {
    pub key: Key,
    pub name: String,
    pub correlation_key: String,
    pub message_id: String,
    pub variables: crate::record::Text,
    pub deadline_ms: i64,
    /// Processes (bpmn process ids) this message was correlated to: at most once each.
    pub correlated_to: Vec<String>,
}

/// A message subscription on the message's partition.
#[derive(Debug, Clone)]
pub struct MessageSubscription {
    pub key: Key,
    pub value: crate::record::MessageSubscriptionValue,
    /// A message is on its way to the instance, waiting for its acknowledgement.
    pub correlating_message: Option<Key>,
    pub resent_at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessSubscriptionState {
    /// Asked the message partition to open it; not yet acknowledged.
    Creating,
    Opened,
    /// Asked the message partition to delete it; not yet acknowledged.
    Deleting,
}

/// A message subscription of an element instance, on the instance's partition.
#[derive(Debug, Clone)]
pub struct ProcessSubscription {
    pub key: Key,
    pub state: ProcessSubscriptionState,
    pub value: crate::record::ProcessMessageSubscriptionValue,
    pub resent_at_ms: i64,
}

/// A message start event of the latest version of a process.
#[derive(Debug, Clone)]
pub struct MessageStartSubscription {
    pub key: Key,
    pub process_definition_key: Key,
    pub bpmn_process_id: String,
    pub start_event_id: String,
    pub message_name: String,
}

/// A timer waiting to fire.
#[derive(Debug, Clone)]
pub struct Timer {
    pub key: Key,
    pub value: crate::record::TimerValue,
}

/// A deployment being distributed to other partitions (on partition 1).
#[derive(Debug, Clone)]
pub struct PendingDistribution {
    pub key: Key,
    pub deployment: DeploymentValue,
    pub partitions: BTreeSet<u32>,
    pub resent_at_ms: i64,
}

/// A variable of a scope.
#[derive(Debug, Clone)]
pub struct Variable {
    pub key: Key,
    pub value: Value,
}

/// Everything a partition knows, rebuilt from events.
#[derive(Debug, Default)]
pub struct State {
    pub partition_id: u32,
    /// The counter of the next key this partition hands out.
    pub next_key_counter: i64,
    pub processes: HashMap<Key, DeployedProcess>,
    /// bpmn process id → (version → key), the latest last.
    pub process_versions: HashMap<String, Vec<(i32, Key)>>,
    pub deployments: HashSet<Key>,
    pub pending_distributions: HashMap<Key, PendingDistribution>,
    pub element_instances: HashMap<Key, ElementInstance>,
    /// scope key → variables by name.
    pub variables: HashMap<Key, HashMap<String, Variable>>,
    pub jobs: HashMap<Key, Job>,
    /// Activatable jobs by type, in creation order.
    pub activatable: HashMap<Rc<str>, BTreeSet<Key>>,
    /// (deadline, job) of activated jobs.
    pub job_deadlines: BTreeSet<(i64, Key)>,
    /// (recurring time, job) of jobs backing off.
    pub job_backoffs: BTreeSet<(i64, Key)>,
    pub incidents: HashMap<Key, Incident>,
    pub messages: HashMap<Key, BufferedMessage>,
    /// (name, correlation key) → buffered messages in publication order.
    pub messages_by_correlation: HashMap<(String, String), Vec<Key>>,
    pub message_deadlines: BTreeSet<(i64, Key)>,
    pub message_subscriptions: HashMap<Key, MessageSubscription>,
    /// (name, correlation key) → subscriptions.
    pub subscriptions_by_correlation: HashMap<(String, String), Vec<Key>>,
    /// element instance key → its subscription.
    pub process_subscriptions: HashMap<Key, ProcessSubscription>,
    pub message_start_subscriptions: HashMap<Key, MessageStartSubscription>,
    pub timers: HashMap<Key, Timer>,
    pub timer_due: BTreeSet<(i64, Key)>,
    /// Replies to client requests by request id ([`Record::request_id`]), without their large
    /// texts: a request re-sent by a gateway that lost the answer is answered from here.
    pub client_replies: HashMap<u64, Record>,
    /// The ids of `client_replies` in the order they were answered, with the reply's time;
    /// the oldest go first ([`CLIENT_REPLIES_MAX`], [`CLIENT_REPLY_RETENTION_MS`]).
    pub client_reply_order: VecDeque<(i64, u64)>,
}

/// Most client replies kept to answer re-sent requests.
pub const CLIENT_REPLIES_MAX: usize = 200_000;
/// How long a client reply is kept, by the replies' own times: a gateway re-sends a request
/// only within this window after it first sent it.
pub const CLIENT_REPLY_RETENTION_MS: i64 = 5 * 60 * 1000;

fn parse_json(text: &str) -> Value {
    if text.is_empty() {
        return Value::Null;
    }
    serde_json::from_str(text).unwrap_or(Value::Null)
}

impl State {
    #[must_use]
    pub fn new(partition_id: u32) -> Self {
        Self {
            partition_id,
            next_key_counter: 1,
            ..Self::default()
        }
    }

    /// Hands out the next key of this partition.
    ///
    /// # Panics
    ///
    /// When the counter reaches [`KEY_COUNTER_LIMIT`]: the processors refuse every command once
    /// [`Self::keys_exhausted`], and the reserve above [`KEY_COUNTER_RESERVED`] is far more
    /// than one command can take, so this is a bug, never data.
    pub fn next_key(&mut self) -> Key {
        assert!(
            self.next_key_counter < KEY_COUNTER_LIMIT,
            "partition {} ran its key counter into the next partition's keys",
            self.partition_id
        );
        let key = crate::record::encode_key(self.partition_id, self.next_key_counter);
        self.next_key_counter += 1;
        key
    }

    /// Whether the partition has used up its keys (short of the reserve): it must not process
    /// further commands.
    #[must_use]
    pub fn keys_exhausted(&self) -> bool {
        self.next_key_counter >= KEY_COUNTER_RESERVED
    }

    /// Whether `key` has this partition's id but a counter this partition has not reached yet:
    /// nothing with that key can exist here.
    #[must_use]
    pub fn is_future_key(&self, key: Key) -> bool {
        key > 0
            && key_partition(key) == self.partition_id
            && key_counter(key) >= self.next_key_counter
    }

    /// The key [`Self::next_key`] will hand out next.
    #[must_use]
    pub fn next_key_peek(&self) -> Key {
        crate::record::encode_key(self.partition_id, self.next_key_counter)
    }

    /// Keeps the key counter ahead of every key this partition's events carry, so a replica
    /// that replayed the log hands out the same next keys as the leader did. Called for events
    /// only: a command or a rejection carries whatever key its sender wrote, and must not move
    /// the counter (a far-ahead key would skip counters, or carry into the next partition's
    /// keys). Counters outside `1..KEY_COUNTER_RESERVED` move nothing either.
    fn observe_event_key(&mut self, key: Key) {
        if key > 0 && key_partition(key) == self.partition_id {
            let counter = key_counter(key);
            if (1..KEY_COUNTER_RESERVED).contains(&counter) {
                self.next_key_counter = self.next_key_counter.max(counter + 1);
            }
        }
    }

    /// The deployed process with this key.
    #[must_use]
    pub fn process(&self, key: Key) -> Option<&DeployedProcess> {
        self.processes.get(&key)
    }

    /// The latest version of a process.
    #[must_use]
    pub fn latest_process(&self, bpmn_process_id: &str) -> Option<&DeployedProcess> {
        let versions = self.process_versions.get(bpmn_process_id)?;
        let (_, key) = versions.last()?;
        self.processes.get(key)
    }

    /// A given version of a process.
    #[must_use]
    pub fn process_version(&self, bpmn_process_id: &str, version: i32) -> Option<&DeployedProcess> {
        let versions = self.process_versions.get(bpmn_process_id)?;
        let (_, key) = versions.iter().find(|(v, _)| *v == version)?;
        self.processes.get(key)
    }

    /// Looks a variable up from `scope_key` outwards.
    #[must_use]
    pub fn variable(&self, scope_key: Key, name: &str) -> Option<&Value> {
        let mut scope = scope_key;
        loop {
            if let Some(variable) = self.variables.get(&scope).and_then(|vars| vars.get(name)) {
                return Some(&variable.value);
            }
            scope = self.element_instances.get(&scope)?.flow_scope_key;
            if scope < 0 {
                return None;
            }
        }
    }

    /// Every variable visible from `scope_key` (inner scopes shadow outer ones).
    #[must_use]
    pub fn visible_variables(&self, scope_key: Key) -> serde_json::Map<String, Value> {
        let mut chain = Vec::new();
        let mut scope = scope_key;
        while scope >= 0 {
            chain.push(scope);
            match self.element_instances.get(&scope) {
                Some(instance) => scope = instance.flow_scope_key,
                None => break,
            }
        }
        let mut all = serde_json::Map::new();
        for scope in chain.iter().rev() {
            if let Some(vars) = self.variables.get(scope) {
                let mut names: Vec<&String> = vars.keys().collect();
                names.sort();
                for name in names {
                    all.insert(name.clone(), vars[name].value.clone());
                }
            }
        }
        all
    }

    /// Keeps `reply` (an event or rejection answering the client request `reply.request_id`)
    /// to answer the request again if it is re-sent, forgetting the oldest replies beyond the
    /// bounds. Deterministic: it depends only on the replies applied, in log order.
    pub fn remember_reply(&mut self, reply: &Record) {
        let id = reply.request_id;
        if id == 0
            || reply.record_type == RecordType::Command
            || self.client_replies.contains_key(&id)
        {
            return;
        }
        let now = reply.timestamp_ms;
        while let Some(&(at, oldest)) = self.client_reply_order.front() {
            if self.client_reply_order.len() < CLIENT_REPLIES_MAX
                && at >= now.saturating_sub(CLIENT_REPLY_RETENTION_MS)
            {
                break;
            }
            self.client_reply_order.pop_front();
            self.client_replies.remove(&oldest);
        }
        self.client_replies.insert(id, reply.slim_reply());
        self.client_reply_order.push_back((now, id));
    }

    /// The reply already given to the client request `request_id`, if it is still kept.
    #[must_use]
    pub fn client_reply(&self, request_id: u64) -> Option<&Record> {
        self.client_replies.get(&request_id)
    }

    /// Applies one record: events change the state (and advance the key counter); commands
    /// and rejections change nothing. An event that does not fit the state is skipped (see the
    /// module documentation); it still advances the counter, as it did on the replica that
    /// wrote it.
    pub fn apply(&mut self, record: &Record) {
        self.remember_reply(record);
        if record.record_type != RecordType::Event {
            return;
        }
        self.observe_event_key(record.key);
        match &record.value {
            RecordValue::Process(value) => {
                if record.intent == Intent::Created {
                    self.apply_process_created(record.key, value);
                }
            }
            RecordValue::Deployment(value) => {
                if record.intent == Intent::Created {
                    self.deployments.insert(record.key);
                    if let Some(pending) = self.pending_distributions.get_mut(&record.key) {
                        pending.deployment = value.clone();
                    }
                }
            }
            RecordValue::CommandDistribution(value) => self.apply_distribution(record, value),
            RecordValue::ProcessInstance(value) => self.apply_process_instance(record, value),
            RecordValue::Variable(value) => {
                let vars = self.variables.entry(value.scope_key).or_default();
                vars.insert(
                    value.name.clone(),
                    Variable {
                        key: record.key,
                        value: parse_json(&value.value),
                    },
                );
            }
            RecordValue::Job(value) => self.apply_job(record, value),
            RecordValue::JobBatch(value) => {
                if record.intent == Intent::Activated {
                    for (job_key, job_value) in value.job_keys.iter().zip(&value.jobs) {
                        self.apply_job_activated(*job_key, job_value.deadline, &value.worker);
                    }
                }
            }
            RecordValue::Incident(value) => self.apply_incident(record, value),
            RecordValue::Timer(value) => self.apply_timer(record, value),
            RecordValue::Message(value) => self.apply_message(record, value),
            RecordValue::MessageSubscription(value) => {
                self.apply_message_subscription(record, value);
            }
            RecordValue::ProcessMessageSubscription(value) => {
                self.apply_process_subscription(record, value);
            }
            RecordValue::MessageStartEventSubscription(value) => match record.intent {
                Intent::Created => {
                    self.message_start_subscriptions.insert(
                        record.key,
                        MessageStartSubscription {
                            key: record.key,
                            process_definition_key: value.process_definition_key,
                            bpmn_process_id: value.bpmn_process_id.clone(),
                            start_event_id: value.start_event_id.clone(),
                            message_name: value.message_name.clone(),
                        },
                    );
                }
                Intent::Deleted => {
                    self.message_start_subscriptions.remove(&record.key);
                }
                Intent::Correlated => {
                    if let Some(message) = self.messages.get_mut(&value.message_key) {
                        message.correlated_to.push(value.bpmn_process_id.clone());
                    }
                }
                _ => {}
            },
            RecordValue::ProcessInstanceCreation(_) | RecordValue::VariableDocument(_) => {}
        }
    }

    /// Deploys a process. Skipped when the key is taken or not a possible key, the version is
    /// not positive or already taken by another key, or the resource does not yield the process
    /// (does not parse, lacks it, or its expressions do not compile).
    fn apply_process_created(&mut self, key: Key, value: &crate::record::ProcessValue) {
        if self.processes.contains_key(&key)
            || !crate::record::is_possible_key(key)
            || value.version < 1
            || self
                .process_version(&value.bpmn_process_id, value.version)
                .is_some()
        {
            return;
        }
        let Ok(processes) = crate::bpmn::parse(value.resource.as_bytes()) else {
            return;
        };
        let Some(mut model) = processes
            .into_iter()
            .find(|process| process.bpmn_process_id == value.bpmn_process_id)
        else {
            return;
        };
        if model.compile_expressions().is_err() {
            return;
        }
        let element_ids = model
            .elements
            .iter()
            .enumerate()
            .filter_map(|(index, element)| {
                u32::try_from(index)
                    .ok()
                    .map(|index| (element.id.clone(), index))
            })
            .collect();
        self.processes.insert(
            key,
            DeployedProcess {
                key,
                bpmn_process_id: Rc::from(value.bpmn_process_id.as_str()),
                version: value.version,
                resource_name: value.resource_name.clone(),
                checksum: value.checksum.clone(),
                resource: Rc::from(value.resource.as_str()),
                model: Rc::new(model),
                element_ids,
            },
        );
        let versions = self
            .process_versions
            .entry(value.bpmn_process_id.clone())
            .or_default();
        versions.push((value.version, key));
        versions.sort_unstable();
    }

    fn apply_distribution(
        &mut self,
        record: &Record,
        value: &crate::record::CommandDistributionValue,
    ) {
        match record.intent {
            Intent::Started => {
                // The deployment itself is attached by its `DEPLOYMENT CREATED`, which follows.
                self.pending_distributions
                    .entry(record.key)
                    .or_insert_with(|| PendingDistribution {
                        key: record.key,
                        deployment: DeploymentValue::default(),
                        partitions: BTreeSet::new(),
                        resent_at_ms: record.timestamp_ms,
                    });
            }
            Intent::Distributing => {
                if let Some(pending) = self.pending_distributions.get_mut(&record.key) {
                    pending.partitions.insert(value.partition_id);
                }
            }
            Intent::Acknowledged => {
                if let Some(pending) = self.pending_distributions.get_mut(&record.key) {
                    pending.partitions.remove(&value.partition_id);
                }
            }
            Intent::Finished => {
                self.pending_distributions.remove(&record.key);
            }
            _ => {}
        }
    }

    fn apply_process_instance(
        &mut self,
        record: &Record,
        value: &crate::record::ProcessInstanceValue,
    ) {
        let key = record.key;
        match record.intent {
            Intent::ElementActivating => self.apply_element_activating(key, value),
            Intent::ElementActivated => self.set_element_state(key, ElementState::Activated),
            Intent::ElementCompleting => self.set_element_state(key, ElementState::Completing),
            Intent::ElementTerminating => self.set_element_state(key, ElementState::Terminating),
            Intent::ElementCompleted | Intent::ElementTerminated => {
                let Some(instance) = self.element_instances.remove(&key) else {
                    return;
                };
                self.variables.remove(&key);
                if let Some(scope) = self.element_instances.get_mut(&instance.flow_scope_key) {
                    scope.children.retain(|child| *child != key);
                }
            }
            Intent::SequenceFlowTaken => {
                let Some(process) = self.processes.get(&value.process_definition_key) else {
                    return;
                };
                let model = Rc::clone(&process.model);
                let Some(flow) = model
                    .flows
                    .iter()
                    .position(|flow| flow.id == value.element_id)
                else {
                    return;
                };
                let Ok(flow_index) = u32::try_from(flow) else {
                    return;
                };
                let target = model.element(model.flow(flow_index).target);
                let Some(scope) = self.element_instances.get_mut(&value.flow_scope_key) else {
                    return;
                };
                scope.active_flows = scope.active_flows.saturating_add(1);
                if matches!(target.kind, ElementKind::ParallelGateway) && target.incoming.len() > 1
                {
                    {
                        match scope.join_tokens.iter_mut().find(|(f, _)| *f == flow_index) {
                            Some(tokens) => tokens.1 = tokens.1.saturating_add(1),
                            None => scope.join_tokens.push((flow_index, 1)),
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// A new element instance. Skipped unless the key is free, the process deployed, the
    /// element in it, and the instance a process instance (element 0, no scope) or inside a
    /// live scope.
    fn apply_element_activating(&mut self, key: Key, value: &crate::record::ProcessInstanceValue) {
        if self.element_instances.contains_key(&key) {
            return;
        }
        let Some(process) = self.processes.get(&value.process_definition_key) else {
            return;
        };
        let Some(element) = process.element_index(&value.element_id) else {
            return;
        };
        let is_root = value.flow_scope_key < 0;
        if is_root != (element == 0)
            || (!is_root && !self.element_instances.contains_key(&value.flow_scope_key))
        {
            return;
        }
        let model = Rc::clone(&process.model);
        self.element_instances.insert(
            key,
            ElementInstance {
                key,
                process_instance_key: value.process_instance_key,
                flow_scope_key: value.flow_scope_key,
                process_definition_key: value.process_definition_key,
                element,
                state: ElementState::Activating,
                children: Vec::new(),
                join_tokens: Vec::new(),
                active_flows: 0,
                job_key: None,
                timer_keys: Vec::new(),
                subscription: false,
            },
        );
        if let Some(scope) = self.element_instances.get_mut(&value.flow_scope_key) {
            scope.children.push(key);
            let element = model.element(element);
            // Start and boundary events start without a flow; a join consumes one token
            // of each incoming flow; every other element the flow that reached it.
            let consumed = match element.kind {
                ElementKind::StartEvent { .. } | ElementKind::BoundaryEvent { .. } => 0,
                ElementKind::ParallelGateway if element.incoming.len() > 1 => {
                    element.incoming.len()
                }
                _ => 1,
            };
            scope.active_flows = scope
                .active_flows
                .saturating_sub(u32::try_from(consumed).unwrap_or(u32::MAX));
            if matches!(element.kind, ElementKind::ParallelGateway) && element.incoming.len() > 1 {
                for flow in &element.incoming {
                    if let Some(tokens) = scope.join_tokens.iter_mut().find(|(f, _)| f == flow) {
                        tokens.1 = tokens.1.saturating_sub(1);
                    }
                }
                scope.join_tokens.retain(|(_, tokens)| *tokens > 0);
            }
        }
    }

    /// Skipped when the element instance is not live.
    fn set_element_state(&mut self, key: Key, state: ElementState) {
        if let Some(instance) = self.element_instances.get_mut(&key) {
            instance.state = state;
        }
    }

    fn apply_job(&mut self, record: &Record, value: &crate::record::JobValue) {
        let key = record.key;
        match record.intent {
            Intent::Created => {
                // A second `CREATED` for a live job would leave the first one's index entries
                // pointing at a job of another type.
                if self.jobs.contains_key(&key) {
                    return;
                }
                let job_type: Rc<str> = Rc::from(value.job_type.as_str());
                self.activatable
                    .entry(Rc::clone(&job_type))
                    .or_default()
                    .insert(key);
                self.jobs.insert(
                    key,
                    Job {
                        key,
                        job_type,
                        state: JobState::Activatable,
                        retries: value.retries,
                        deadline_ms: -1,
                        recurring_time_ms: -1,
                        worker: String::new(),
                        error_message: String::new(),
                        element_instance_key: value.element_instance_key,
                        process_instance_key: value.process_instance_key,
                        process_definition_key: value.process_definition_key,
                    },
                );
                if let Some(instance) = self.element_instances.get_mut(&value.element_instance_key)
                {
                    instance.job_key = Some(key);
                }
            }
            Intent::Completed | Intent::Canceled => {
                if let Some(job) = self.remove_job_indexes(key) {
                    self.jobs.remove(&key);
                    if let Some(instance) =
                        self.element_instances.get_mut(&job.element_instance_key)
                    {
                        instance.job_key = None;
                    }
                }
            }
            Intent::Failed => {
                self.remove_job_indexes(key);
                let Some(job) = self.jobs.get_mut(&key) else {
                    return;
                };
                job.retries = value.retries;
                job.error_message.clone_from(&value.error_message);
                job.deadline_ms = -1;
                if value.retries <= 0 {
                    job.state = JobState::Failed;
                } else if value.retry_backoff > 0 {
                    job.state = JobState::BackingOff;
                    job.recurring_time_ms = value.recurring_time;
                    self.job_backoffs.insert((value.recurring_time, key));
                } else {
                    self.make_activatable(key);
                }
            }
            Intent::TimedOut | Intent::RecurredAfterBackoff => {
                self.remove_job_indexes(key);
                self.make_activatable(key);
            }
            Intent::RetriesUpdated => {
                if let Some(job) = self.jobs.get_mut(&key) {
                    job.retries = value.retries;
                }
            }
            Intent::TimeoutUpdated => {
                if let Some(job) = self.jobs.get_mut(&key)
                    && job.state == JobState::Activated
                {
                    self.job_deadlines.remove(&(job.deadline_ms, key));
                    job.deadline_ms = value.deadline;
                    self.job_deadlines.insert((value.deadline, key));
                }
            }
            Intent::ErrorThrown => {
                self.remove_job_indexes(key);
                if let Some(job) = self.jobs.get_mut(&key) {
                    job.state = JobState::ErrorThrown;
                    job.error_message.clone_from(&value.error_message);
                }
            }
            _ => {}
        }
    }

    /// Takes a job out of every index (activatable, deadlines, back-offs); returns a copy.
    fn remove_job_indexes(&mut self, key: Key) -> Option<Job> {
        let job = self.jobs.get(&key)?.clone();
        if let Some(keys) = self.activatable.get_mut(&job.job_type) {
            keys.remove(&key);
            if keys.is_empty() {
                self.activatable.remove(&job.job_type);
            }
        }
        self.job_deadlines.remove(&(job.deadline_ms, key));
        self.job_backoffs.remove(&(job.recurring_time_ms, key));
        Some(job)
    }

    fn make_activatable(&mut self, key: Key) {
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        job.state = JobState::Activatable;
        job.deadline_ms = -1;
        job.recurring_time_ms = -1;
        job.worker.clear();
        self.activatable
            .entry(Rc::clone(&job.job_type))
            .or_default()
            .insert(key);
    }

    fn apply_job_activated(&mut self, key: Key, deadline_ms: i64, worker: &str) {
        self.remove_job_indexes(key);
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        job.state = JobState::Activated;
        job.deadline_ms = deadline_ms;
        worker.clone_into(&mut job.worker);
        self.job_deadlines.insert((deadline_ms, key));
    }

    fn apply_incident(&mut self, record: &Record, value: &crate::record::IncidentValue) {
        match record.intent {
            Intent::Created => {
                self.incidents.insert(
                    record.key,
                    Incident {
                        key: record.key,
                        value: value.clone(),
                    },
                );
            }
            Intent::Resolved => {
                self.incidents.remove(&record.key);
                // A job incident is resolved: the job is activatable again if it has retries.
                if value.job_key > 0
                    && let Some(job) = self.jobs.get(&value.job_key)
                    && job.state == JobState::Failed
                    && job.retries > 0
                {
                    self.make_activatable(value.job_key);
                }
            }
            _ => {}
        }
    }

    fn apply_timer(&mut self, record: &Record, value: &crate::record::TimerValue) {
        match record.intent {
            Intent::Created => {
                // A second `CREATED` would leave a due entry without its timer.
                if self.timers.contains_key(&record.key) {
                    return;
                }
                self.timer_due.insert((value.due_date, record.key));
                self.timers.insert(
                    record.key,
                    Timer {
                        key: record.key,
                        value: value.clone(),
                    },
                );
                if let Some(instance) = self.element_instances.get_mut(&value.element_instance_key)
                {
                    instance.timer_keys.push(record.key);
                }
            }
            Intent::Triggered | Intent::Canceled => {
                if let Some(timer) = self.timers.remove(&record.key) {
                    self.timer_due.remove(&(timer.value.due_date, record.key));
                    if let Some(instance) = self
                        .element_instances
                        .get_mut(&timer.value.element_instance_key)
                    {
                        instance.timer_keys.retain(|key| *key != record.key);
                    }
                }
            }
            _ => {}
        }
    }

    fn apply_message(&mut self, record: &Record, value: &crate::record::MessageValue) {
        match record.intent {
            Intent::Published => {
                // A second `PUBLISHED` would leave a deadline entry without its message.
                if value.time_to_live <= 0 || self.messages.contains_key(&record.key) {
                    return;
                }
                self.messages.insert(
                    record.key,
                    BufferedMessage {
                        key: record.key,
                        name: value.name.clone(),
                        correlation_key: value.correlation_key.clone(),
                        message_id: value.message_id.clone(),
                        variables: value.variables.clone(),
                        deadline_ms: value.deadline,
                        correlated_to: Vec::new(),
                    },
                );
                self.messages_by_correlation
                    .entry((value.name.clone(), value.correlation_key.clone()))
                    .or_default()
                    .push(record.key);
                self.message_deadlines.insert((value.deadline, record.key));
            }
            Intent::Expired => {
                if let Some(message) = self.messages.remove(&record.key) {
                    self.message_deadlines
                        .remove(&(message.deadline_ms, record.key));
                    let index = (message.name, message.correlation_key);
                    if let Some(keys) = self.messages_by_correlation.get_mut(&index) {
                        keys.retain(|key| *key != record.key);
                        if keys.is_empty() {
                            self.messages_by_correlation.remove(&index);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn apply_message_subscription(
        &mut self,
        record: &Record,
        value: &crate::record::MessageSubscriptionValue,
    ) {
        match record.intent {
            Intent::Created => {
                // A second `CREATED` would index the key twice.
                if self.message_subscriptions.contains_key(&record.key) {
                    return;
                }
                self.message_subscriptions.insert(
                    record.key,
                    MessageSubscription {
                        key: record.key,
                        value: value.clone(),
                        correlating_message: None,
                        resent_at_ms: record.timestamp_ms,
                    },
                );
                self.subscriptions_by_correlation
                    .entry((value.message_name.clone(), value.correlation_key.clone()))
                    .or_default()
                    .push(record.key);
            }
            Intent::Correlating => {
                if let Some(subscription) = self.message_subscriptions.get_mut(&record.key) {
                    subscription.correlating_message = Some(value.message_key);
                    subscription.value.variables.clone_from(&value.variables);
                    subscription.value.message_key = value.message_key;
                    subscription.resent_at_ms = record.timestamp_ms;
                }
                if let Some(message) = self.messages.get_mut(&value.message_key) {
                    message.correlated_to.push(value.bpmn_process_id.clone());
                }
            }
            Intent::Rejected => {
                if let Some(message) = self.messages.get_mut(&value.message_key)
                    && let Some(position) = message
                        .correlated_to
                        .iter()
                        .position(|id| *id == value.bpmn_process_id)
                {
                    message.correlated_to.remove(position);
                }
            }
            Intent::Correlated | Intent::Deleted => {
                if let Some(subscription) = self.message_subscriptions.remove(&record.key) {
                    let index = (
                        subscription.value.message_name,
                        subscription.value.correlation_key,
                    );
                    if let Some(keys) = self.subscriptions_by_correlation.get_mut(&index) {
                        keys.retain(|key| *key != record.key);
                        if keys.is_empty() {
                            self.subscriptions_by_correlation.remove(&index);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn apply_process_subscription(
        &mut self,
        record: &Record,
        value: &crate::record::ProcessMessageSubscriptionValue,
    ) {
        let element_key = value.element_instance_key;
        match record.intent {
            Intent::Creating => {
                self.process_subscriptions.insert(
                    element_key,
                    ProcessSubscription {
                        key: record.key,
                        state: ProcessSubscriptionState::Creating,
                        value: value.clone(),
                        resent_at_ms: record.timestamp_ms,
                    },
                );
                if let Some(instance) = self.element_instances.get_mut(&element_key) {
                    instance.subscription = true;
                }
            }
            Intent::Created => {
                if let Some(subscription) = self.process_subscriptions.get_mut(&element_key)
                    && subscription.state == ProcessSubscriptionState::Creating
                {
                    subscription.state = ProcessSubscriptionState::Opened;
                }
            }
            Intent::Deleting => {
                if let Some(subscription) = self.process_subscriptions.get_mut(&element_key) {
                    subscription.state = ProcessSubscriptionState::Deleting;
                    subscription.resent_at_ms = record.timestamp_ms;
                }
                if let Some(instance) = self.element_instances.get_mut(&element_key) {
                    instance.subscription = false;
                }
            }
            Intent::Correlated | Intent::Deleted => {
                self.process_subscriptions.remove(&element_key);
                if let Some(instance) = self.element_instances.get_mut(&element_key) {
                    instance.subscription = false;
                }
            }
            _ => {}
        }
    }
}
