//! The processors: one command and `now` in, follow-up records and side effects out.
//!
//! [`Engine::process`] handles one command: it writes the command and every event it causes
//! into [`Output::records`] (the driver appends them as one log batch) and lists in
//! [`Output::side_effects`] what must happen once that batch commits: the reply to the client,
//! commands to other partitions, a hint that jobs became activatable. Each event is applied to
//! the state as it is written ([`State::apply`]), so the state always equals "committed log plus
//! what is in flight"; a leader that loses its term rebuilds from the committed log.
//!
//! Internal follow-up commands (activate this element, complete that one) are processed in the
//! same step, in the order Zeebe would process them from the log, and are not themselves
//! written: the events they produce are what replay needs.
//!
//! [`Engine::tick`] turns the clock into commands (due timers, job deadlines, back-offs, message
//! expiry) and re-sends unacknowledged cross-partition commands; [`Engine::next_deadline_ms`] says
//! when to call it next.
//!
//! # Trust
//!
//! A command is checked like client input whoever sent it: a client through the gateway,
//! another partition, or the log. A command that cannot be carried out is rejected (a
//! `COMMAND_REJECTION` record and, for a request, a reply), never a panic. In particular:
//!
//! - a command whose key has this partition's id but a counter the partition has not reached
//!   names nothing that can exist, and is rejected `NOT_FOUND`; so is a command naming an
//!   entity of this partition by a key of another partition;
//! - a deployment distributed from partition 1 is validated like a client's deployment, and
//!   its metadata against its resources and keys;
//! - the clock's own commands (timer trigger, job time-out, back-off recurrence, message
//!   expiry) are carried out only when they are due; [`crate::record::client_may_send`] lists
//!   what a client may send at all;
//! - variables documents, message time-to-live and the values expressions build are bounded
//!   by [`EngineConfig`]'s caps.
//!
//! Problems that arise while processing, rather than in the command itself (a mapping whose
//! result is too large, a correlated message whose variables are over the limit), become
//! incidents, as FEEL errors do.

// The processors are long matches over a command's cases; split further they read worse.
#![allow(clippy::too_many_lines)]

mod deployment;
mod document;
mod instance;
mod job;
mod message;

pub use document::VARIABLES_NESTING_CEILING;

use std::collections::{HashMap, VecDeque};

use serde_json::Value;

use crate::model::{ElementIndex, Expression};
use crate::record::{
    Intent, Key, Record, RecordType, RecordValue, Rejection, RejectionType, ValueType,
    key_partition,
};
use crate::state::State;

/// Identifies a client request whose reply waits for a commit; chosen by the driver.
pub type RequestId = u64;

/// Limits and intervals of an engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    pub partition_id: u32,
    pub partition_count: u32,
    /// How long an unacknowledged cross-partition command waits before it is sent again.
    pub resend_interval_ms: i64,
    /// Most records one command may produce; a process looping without a wait state raises an
    /// incident instead of growing the batch forever.
    pub batch_records_max: usize,
    /// Most bytes of job variables in one activated batch.
    pub job_batch_bytes_max: usize,
    /// Most bytes of variables (as JSON) the answer to a creation awaiting its result may
    /// carry: the answer must fit the client's message limit. A completed instance whose
    /// variables are larger answers its creator with an `EXCEEDED_BATCH_RECORD_SIZE` rejection
    /// that says so (the instance completed all the same).
    pub result_variables_bytes_max: usize,
    /// Most due commands one [`Engine::tick`] processes.
    pub tick_commands_max: usize,
    /// Longest time to live a published message may ask for, in ms; a longer one is rejected
    /// `INVALID_ARGUMENT`. A buffered message stays in the partition's state (in memory and in
    /// every snapshot) until it expires, so an unbounded TTL lets one client grow the state
    /// without end; a TTL of more than a week is most often a unit mistake (seconds sent as
    /// milliseconds times a thousand). Default [`MESSAGE_TTL_MS_MAX_DEFAULT`] (7 days).
    pub message_ttl_ms_max: i64,
    /// Largest variables document the engine parses, in bytes: a command's variables (instance
    /// creation, job completion, message publication, set variables), a correlated message's
    /// variables, and the JSON of a single variable a mapping produces. A command over it is
    /// rejected `INVALID_ARGUMENT`; a value arising during processing raises an incident.
    /// Default [`VARIABLES_DOCUMENT_BYTES_MAX_DEFAULT`] (4 MiB, the request limit).
    pub variables_document_bytes_max: usize,
    /// Deepest nesting of objects and arrays in such a document or value (`{}` is 1 level),
    /// enforced like the size. Default [`VARIABLES_NESTING_MAX_DEFAULT`] (64); values above
    /// [`VARIABLES_NESTING_CEILING`] act as the ceiling.
    pub variables_nesting_max: u32,
    /// Largest string, list or context one FEEL evaluation may build, in bytes (a list or
    /// context as about its JSON size): string concatenation, `string()`, list and context
    /// literals, paths and filters over lists. Exceeding it is an evaluation error, which
    /// becomes an incident like every FEEL error. Default
    /// [`crate::feel::VALUE_BYTES_MAX_DEFAULT`] (4 MiB).
    pub feel_value_bytes_max: usize,
    /// Most items of a list, or entries of a context, one FEEL evaluation may build; handled like
    /// `feel_value_bytes_max`. Default [`crate::feel::COLLECTION_ITEMS_MAX_DEFAULT`] (100 000).
    pub feel_collection_items_max: usize,
}

/// Default of [`EngineConfig::message_ttl_ms_max`]: 7 days.
pub const MESSAGE_TTL_MS_MAX_DEFAULT: i64 = 7 * 24 * 60 * 60 * 1_000;
/// Default of [`EngineConfig::variables_document_bytes_max`]: 4 MiB.
pub const VARIABLES_DOCUMENT_BYTES_MAX_DEFAULT: usize = 4 << 20;
/// Default of [`EngineConfig::variables_nesting_max`].
pub const VARIABLES_NESTING_MAX_DEFAULT: u32 = 64;

const _: () = assert!(VARIABLES_NESTING_MAX_DEFAULT <= VARIABLES_NESTING_CEILING);

impl EngineConfig {
    #[must_use]
    pub fn new(partition_id: u32, partition_count: u32) -> Self {
        assert!(partition_id >= 1 && partition_id <= partition_count);
        Self {
            partition_id,
            partition_count,
            resend_interval_ms: 5_000,
            batch_records_max: 10_000,
            job_batch_bytes_max: 4 << 20,
            result_variables_bytes_max: 4 << 20,
            tick_commands_max: 1_000,
            message_ttl_ms_max: MESSAGE_TTL_MS_MAX_DEFAULT,
            variables_document_bytes_max: VARIABLES_DOCUMENT_BYTES_MAX_DEFAULT,
            variables_nesting_max: VARIABLES_NESTING_MAX_DEFAULT,
            feel_value_bytes_max: crate::feel::VALUE_BYTES_MAX_DEFAULT,
            feel_collection_items_max: crate::feel::COLLECTION_ITEMS_MAX_DEFAULT,
        }
    }

    /// The FEEL limits of this configuration.
    #[must_use]
    pub fn feel_limits(&self) -> crate::feel::Limits {
        crate::feel::Limits {
            value_bytes_max: self.feel_value_bytes_max,
            collection_items_max: self.feel_collection_items_max,
        }
    }
}

/// What must happen after the records of an [`Output`] commit.
#[derive(Debug, Clone, PartialEq)]
pub enum SideEffect {
    /// Reply to a client request.
    Respond { request: RequestId, record: Record },
    /// Deliver a command to another partition (or to this one, through the log).
    Send { partition_id: u32, record: Record },
    /// Jobs of this type became activatable (wake long-polling workers).
    JobsAvailable { job_type: String },
}

/// The records to append as one batch and what to do once they commit.
#[derive(Debug, Default)]
pub struct Output {
    pub records: Vec<Record>,
    pub side_effects: Vec<SideEffect>,
}

impl Output {
    pub fn clear(&mut self) {
        self.records.clear();
        self.side_effects.clear();
    }
}

/// An internal follow-up command.
#[derive(Debug)]
enum Step {
    /// Activate `element` inside the scope instance `scope_key`.
    Activate {
        scope_key: Key,
        element: ElementIndex,
    },
    /// Complete the element instance, merging `variables` first (job or message result).
    Complete {
        key: Key,
        variables: Option<serde_json::Map<String, Value>>,
    },
}

/// The engine of one partition.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    state: State,
    /// Process instances whose creator waits for the result: key → (request, variables to
    /// return). Leader-only: lost on failover, like Zeebe's.
    awaiting_results: HashMap<Key, (RequestId, Vec<String>)>,
    steps: VecDeque<Step>,
    now_ms: i64,
}

impl Engine {
    #[must_use]
    pub fn new(config: EngineConfig) -> Self {
        let state = State::new(config.partition_id);
        Self {
            config,
            state,
            awaiting_results: HashMap::new(),
            steps: VecDeque::new(),
            now_ms: 0,
        }
    }

    /// An engine over a state restored from a snapshot.
    ///
    /// # Panics
    ///
    /// When the state is another partition's; [`Self::try_with_state`] returns an error
    /// instead.
    #[must_use]
    pub fn with_state(config: EngineConfig, state: State) -> Self {
        assert_eq!(config.partition_id, state.partition_id);
        Self {
            state,
            ..Self::new(config)
        }
    }

    /// An engine over a state restored from a snapshot, or an error when the snapshot is
    /// another partition's (a snapshot read from disk is data, not a promise).
    pub fn try_with_state(config: EngineConfig, state: State) -> Result<Self, String> {
        if config.partition_id != state.partition_id {
            return Err(format!(
                "the snapshot holds the state of partition {}, but this is partition {}; \
                 restore this partition from its own snapshot or from its log",
                state.partition_id, config.partition_id
            ));
        }
        Ok(Self::with_state(config, state))
    }

    #[must_use]
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    #[must_use]
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Applies a committed record from the log (followers, recovery, a new leader catching up).
    pub fn replay(&mut self, record: &Record) {
        self.state.apply(record);
    }

    /// Processes one command (a client's, another partition's, or one of [`Self::tick`]'s).
    ///
    /// A record that is not a command is refused with a rejection and not written: an event
    /// slipped in here would be replayed by every follower as if this engine had made it.
    pub fn process(
        &mut self,
        mut command: Record,
        request: Option<RequestId>,
        now_ms: i64,
        out: &mut Output,
    ) {
        self.now_ms = now_ms;
        command.timestamp_ms = now_ms;
        command.rejection = None;
        if command.record_type != RecordType::Command {
            let reason = format!(
                "Expected a command, but got a record of type {:?}; only commands can be sent",
                command.record_type
            );
            self.reject(
                &command,
                request,
                RejectionType::InvalidArgument,
                reason,
                out,
            );
            return;
        }
        if command.request_id != 0
            && let Some(reply) = self.state.client_reply(command.request_id)
        {
            // A re-sent request: answered as the first time, nothing runs or is written. The
            // driver releases the answer once everything before it committed, the first
            // processing included.
            if let Some(request) = request {
                out.side_effects.push(SideEffect::Respond {
                    request,
                    record: reply.clone(),
                });
            }
            return;
        }
        let first = out.records.len();
        out.records.push(command.clone());
        if let Some((rejection_type, reason)) = self.precheck(&command) {
            self.reject(&command, request, rejection_type, reason, out);
        } else {
            self.dispatch(&command, request, out);
            self.run_steps(first, out);
        }
        if command.request_id != 0
            && let Some(request) = request
        {
            self.tag_reply(request, command.request_id, first, out);
        }
        if out.records.len() == first + 1 && !self.is_logged_without_events(&command) {
            // Nothing happened (an empty job activation): keep the log free of it.
            out.records.truncate(first);
        }
    }

    /// Marks the written record that answers `request` with the client's `request_id`, so
    /// that every replica keeps the reply ([`State::remember_reply`]) and a re-sent request is
    /// answered from it. A reply that is not written (an empty activation) is not kept.
    fn tag_reply(&mut self, request: RequestId, request_id: u64, first: usize, out: &mut Output) {
        let Some(reply) = out.side_effects.iter_mut().find_map(|effect| match effect {
            SideEffect::Respond {
                request: answered,
                record,
            } if *answered == request => Some(record),
            _ => None,
        }) else {
            return;
        };
        // The reply is a clone of a written record: texts compare by pointer first.
        let Some(written) = out.records[first + 1..]
            .iter_mut()
            .find(|record| *record == reply)
        else {
            return;
        };
        written.request_id = request_id;
        reply.request_id = request_id;
        self.state.remember_reply(written);
    }

    /// What every command must pass before its processor sees it.
    fn precheck(&self, command: &Record) -> Option<(RejectionType, String)> {
        if command.value_type != command.value.value_type() {
            return Some((
                RejectionType::InvalidArgument,
                format!(
                    "Expected a command whose value type {:?} matches its value, but the value is \
                     a {:?}",
                    command.value_type,
                    command.value.value_type()
                ),
            ));
        }
        if self.state.keys_exhausted() {
            return Some((
                RejectionType::ProcessingError,
                format!(
                    "Expected to process the command, but partition {} has used up its keys; \
                     send new work to the other partitions",
                    self.config.partition_id
                ),
            ));
        }
        if self.state.is_future_key(command.key) {
            return Some((
                RejectionType::NotFound,
                format!(
                    "Expected to find the entity with key '{}' of {:?} {:?}, but {}",
                    command.key,
                    command.value_type,
                    command.intent,
                    self.key_problem(command.key)
                        .unwrap_or_else(|| "it does not exist".to_owned())
                ),
            ));
        }
        None
    }

    /// Why `key` cannot name an entity of this partition (the tail of a rejection reason, after
    /// "but"), or `None` when it may: not a key at all, a key of another partition, or a key
    /// this partition has not handed out yet.
    fn key_problem(&self, key: Key) -> Option<String> {
        let partition_id = self.config.partition_id;
        if !crate::record::is_possible_key(key) {
            return Some(format!(
                "'{key}' is not a key any partition hands out; use a key the broker returned"
            ));
        }
        let owner = key_partition(key);
        if owner != partition_id {
            return Some(if owner > self.config.partition_count {
                format!(
                    "key '{key}' names partition {owner}, which this cluster of {} partitions \
                     does not have; use a key the broker returned",
                    self.config.partition_count
                )
            } else {
                format!(
                    "key '{key}' belongs to partition {owner}, not to this partition \
                     {partition_id}; send the command to partition {owner}"
                )
            });
        }
        if self.state.is_future_key(key) {
            return Some(format!(
                "partition {partition_id} has not handed out key '{key}' yet (its next key is \
                 '{}'), so nothing with this key can exist",
                self.state.next_key_peek()
            ));
        }
        None
    }

    /// Rejects `command` `NOT_FOUND` when `key` cannot name an entity of this partition
    /// (`action` says what the command wanted, e.g. "complete job"); returns whether it did.
    fn reject_foreign_key(
        &mut self,
        command: &Record,
        request: Option<RequestId>,
        action: &str,
        key: Key,
        out: &mut Output,
    ) -> bool {
        let Some(problem) = self.key_problem(key) else {
            return false;
        };
        let reason = format!("Expected to {action} with key '{key}', but {problem}");
        self.reject(command, request, RejectionType::NotFound, reason, out);
        true
    }

    /// Commands that are worth logging even when they caused no event.
    fn is_logged_without_events(&self, command: &Record) -> bool {
        let _ = self;
        command.value_type != ValueType::JobBatch
    }

    fn dispatch(&mut self, command: &Record, request: Option<RequestId>, out: &mut Output) {
        match (&command.value, command.intent) {
            (RecordValue::Deployment(value), Intent::Create) => {
                self.deploy(command, value, request, out);
            }
            (RecordValue::CommandDistribution(value), Intent::Acknowledge) => {
                self.acknowledge_distribution(command, value, out);
            }
            (
                RecordValue::ProcessInstanceCreation(value),
                Intent::Create | Intent::CreateWithAwaitingResult,
            ) => self.create_instance(command, value, request, out),
            (RecordValue::ProcessInstance(_), Intent::Cancel) => {
                self.cancel_instance(command, request, out);
            }
            (RecordValue::Job(value), _) => self.process_job(command, value, request, out),
            (RecordValue::JobBatch(value), Intent::Activate) => {
                self.activate_jobs(command, value, request, out);
            }
            (RecordValue::Message(value), Intent::Publish) => {
                self.publish_message(command, value, request, out);
            }
            (RecordValue::Message(_), Intent::Expire) => self.expire_message(command, out),
            (RecordValue::MessageSubscription(value), _) => {
                self.process_message_subscription(command, value, out);
            }
            (RecordValue::ProcessMessageSubscription(value), _) => {
                self.process_process_subscription(command, value, out);
            }
            (RecordValue::Timer(_), Intent::Trigger) => self.trigger_timer(command, out),
            (RecordValue::Incident(_), Intent::Resolve) => {
                self.resolve_incident(command, request, out);
            }
            (RecordValue::VariableDocument(value), Intent::Update) => {
                self.update_variables(command, value, request, out);
            }
            _ => self.reject(
                command,
                request,
                RejectionType::InvalidArgument,
                format!(
                    "Expected a command this broker processes, but got {:?} {:?}",
                    command.value_type, command.intent
                ),
                out,
            ),
        }
    }

    /// Writes an event: applies it to the state and appends it to the batch.
    fn write_event(&mut self, key: Key, intent: Intent, value: RecordValue, out: &mut Output) {
        let record = Record {
            record_type: RecordType::Event,
            value_type: value.value_type(),
            intent,
            key,
            timestamp_ms: self.now_ms,
            rejection: None,
            value,
            request_id: 0,
        };
        self.state.apply(&record);
        out.records.push(record);
    }

    /// Writes an event and replies with it.
    fn write_event_and_respond(
        &mut self,
        key: Key,
        intent: Intent,
        value: RecordValue,
        request: Option<RequestId>,
        out: &mut Output,
    ) {
        self.write_event(key, intent, value, out);
        if let Some(request) = request {
            let record = out.records.last().expect("just written").clone();
            out.side_effects
                .push(SideEffect::Respond { request, record });
        }
    }

    /// Rejects a command: writes the rejection and replies with it.
    fn reject(
        &mut self,
        command: &Record,
        request: Option<RequestId>,
        rejection_type: RejectionType,
        reason: String,
        out: &mut Output,
    ) {
        let record = Record {
            record_type: RecordType::CommandRejection,
            rejection: Some(Rejection {
                rejection_type,
                reason,
            }),
            timestamp_ms: self.now_ms,
            ..command.clone()
        };
        if let Some(request) = request {
            out.side_effects.push(SideEffect::Respond {
                request,
                record: record.clone(),
            });
        }
        out.records.push(record);
    }

    /// Sends a command to another partition once the batch commits. A partition id outside
    /// the cluster is dropped: the processors validate the ids they take from commands, so this
    /// only keeps a missed one from reaching the broker's routing.
    fn send(&mut self, partition_id: u32, command: Record, out: &mut Output) {
        if !self.is_partition(partition_id) {
            debug_assert!(
                false,
                "a command for partition {partition_id}, outside the cluster"
            );
            return;
        }
        out.side_effects.push(SideEffect::Send {
            partition_id,
            record: command,
        });
    }

    /// Whether `partition_id` is a partition of this cluster.
    fn is_partition(&self, partition_id: u32) -> bool {
        (1..=self.config.partition_count).contains(&partition_id)
    }

    /// Runs internal steps until none are left, or raises an incident when a command produces
    /// more records than a batch may hold.
    fn run_steps(&mut self, first: usize, out: &mut Output) {
        while let Some(step) = self.steps.pop_front() {
            if out.records.len() - first > self.config.batch_records_max {
                let pending: Vec<Step> =
                    std::iter::once(step).chain(self.steps.drain(..)).collect();
                self.abort_runaway(pending, out);
                return;
            }
            match step {
                Step::Activate { scope_key, element } => {
                    self.activate_element(scope_key, element, out);
                }
                Step::Complete { key, variables } => self.complete_element(key, variables, out),
            }
        }
    }

    /// The earliest time [`Self::tick`] has work: a timer, a job deadline or back-off, a
    /// message expiry, or a cross-partition command to re-send.
    #[must_use]
    pub fn next_deadline_ms(&self) -> Option<i64> {
        let state = &self.state;
        let resend = self.config.resend_interval_ms;
        [
            state.timer_due.first().map(|(due, _)| *due),
            state.job_deadlines.first().map(|(due, _)| *due),
            state.job_backoffs.first().map(|(due, _)| *due),
            state.message_deadlines.first().map(|(due, _)| *due),
            state
                .pending_distributions
                .values()
                .map(|pending| pending.resent_at_ms + resend)
                .min(),
            state
                .process_subscriptions
                .values()
                .filter(|subscription| {
                    subscription.state != crate::state::ProcessSubscriptionState::Opened
                })
                .map(|subscription| subscription.resent_at_ms + resend)
                .min(),
            state
                .message_subscriptions
                .values()
                .filter(|subscription| subscription.correlating_message.is_some())
                .map(|subscription| subscription.resent_at_ms + resend)
                .min(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Processes what is due at `now_ms` (at most `tick_commands_max` commands) and re-sends
    /// unacknowledged cross-partition commands. Returns whether due work is left.
    pub fn tick(&mut self, now_ms: i64, out: &mut Output) -> bool {
        self.now_ms = now_ms;
        self.resend_pending(now_ms, out);
        let mut due = Vec::new();
        let limit = self.config.tick_commands_max;
        let state = &self.state;
        for (_, key) in state.timer_due.iter().take_while(|(at, _)| *at <= now_ms) {
            if let Some(timer) = state.timers.get(key) {
                due.push(Record::command_for(
                    *key,
                    Intent::Trigger,
                    RecordValue::Timer(timer.value.clone()),
                ));
            }
        }
        for (_, key) in state
            .job_deadlines
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
        {
            due.push(Record::command_for(
                *key,
                Intent::TimeOut,
                RecordValue::Job(crate::record::JobValue::default()),
            ));
        }
        for (_, key) in state
            .job_backoffs
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
        {
            due.push(Record::command_for(
                *key,
                Intent::RecurAfterBackoff,
                RecordValue::Job(crate::record::JobValue::default()),
            ));
        }
        for (_, key) in state
            .message_deadlines
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
        {
            due.push(Record::command_for(
                *key,
                Intent::Expire,
                RecordValue::Message(crate::record::MessageValue::default()),
            ));
        }
        let more = due.len() > limit;
        for command in due.into_iter().take(limit) {
            self.process(command, None, now_ms, out);
        }
        more
    }

    /// Evaluates an expression in the scope `scope_key`: FEEL for `=` text, else the text.
    fn evaluate(&self, expression: &Expression, scope_key: Key) -> Result<Value, String> {
        match &expression.feel {
            Some(feel) => feel
                .evaluate_limited(
                    &ScopeView {
                        state: &self.state,
                        scope_key,
                    },
                    &self.config.feel_limits(),
                )
                .map_err(|error| {
                    format!(
                        "failed to evaluate expression '{}': {error}",
                        expression.text
                    )
                }),
            None => Ok(Value::String(expression.text.clone())),
        }
    }

    /// Evaluates to a string (numbers are turned into their text, as Zeebe does for keys).
    fn evaluate_string(&self, expression: &Expression, scope_key: Key) -> Result<String, String> {
        match self.evaluate(expression, scope_key)? {
            Value::String(text) => Ok(text),
            Value::Number(number) => Ok(number.to_string()),
            other => Err(format!(
                "expected expression '{}' to evaluate to a string, but it was {}",
                expression.text,
                describe(&other)
            )),
        }
    }
}

/// `null`, `a boolean`, ... for error messages.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string \"{s}\""),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a context".into(),
    }
}

/// The variables an expression sees.
struct ScopeView<'a> {
    state: &'a State,
    scope_key: Key,
}

impl crate::feel::Scope for ScopeView<'_> {
    fn variable(&self, name: &str) -> Option<&Value> {
        self.state.variable(self.scope_key, name)
    }
}

/// The partition a message with this correlation key lives on: a hash of the key (as Java's
/// `String.hashCode`) modulo the partition count, partitions counted from 1.
#[must_use]
pub fn subscription_partition(correlation_key: &str, partition_count: u32) -> u32 {
    assert!(partition_count >= 1);
    let mut hash: i32 = 0;
    for unit in correlation_key.encode_utf16() {
        hash = hash.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    let count = i32::try_from(partition_count).expect("partition count fits i32");
    (hash % count).unsigned_abs() + 1
}
