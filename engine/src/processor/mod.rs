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

// The processors are long matches over a command's cases; split further they read worse.
#![allow(clippy::too_many_lines)]

mod deployment;
mod instance;
mod job;
mod message;

use std::collections::{HashMap, VecDeque};

use serde_json::Value;

use crate::model::{ElementIndex, Expression};
use crate::record::{
    Intent, Key, Record, RecordType, RecordValue, Rejection, RejectionType, ValueType,
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
    /// Most due commands one [`Engine::tick`] processes.
    pub tick_commands_max: usize,
}

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
            tick_commands_max: 1_000,
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
    #[must_use]
    pub fn with_state(config: EngineConfig, state: State) -> Self {
        assert_eq!(config.partition_id, state.partition_id);
        Self {
            state,
            ..Self::new(config)
        }
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
    pub fn process(
        &mut self,
        mut command: Record,
        request: Option<RequestId>,
        now_ms: i64,
        out: &mut Output,
    ) {
        assert_eq!(
            command.record_type,
            RecordType::Command,
            "only commands are processed"
        );
        self.now_ms = now_ms;
        command.timestamp_ms = now_ms;
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
        self.state.apply(&command);
        self.dispatch(&command, request, out);
        self.run_steps(first, out);
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

    fn send(&mut self, partition_id: u32, command: Record, out: &mut Output) {
        let _ = self;
        out.side_effects.push(SideEffect::Send {
            partition_id,
            record: command,
        });
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
            due.push(Record::command_for(
                *key,
                Intent::Trigger,
                RecordValue::Timer(state.timers[key].value.clone()),
            ));
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
                .evaluate(&ScopeView {
                    state: &self.state,
                    scope_key,
                })
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

/// Parses a JSON object of variables; empty text is no variables.
fn parse_variables(text: &str) -> Result<serde_json::Map<String, Value>, String> {
    if text.trim().is_empty() {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(format!(
            "Expected document to be a root level object, but was '{}'",
            describe(&other)
        )),
        Err(error) => Err(format!(
            "Expected variables to be a JSON object, but it is not valid JSON: {error}"
        )),
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
