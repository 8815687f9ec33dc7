//! Messages and their subscriptions across partitions.
//!
//! A message lives on the partition its correlation key hashes to
//! ([`super::subscription_partition`]); an element instance that waits for a message lives on its
//! instance's partition. The two talk with commands sent after commit:
//!
//! ```text
//! instance partition                          message partition
//! PROCESS_MESSAGE_SUBSCRIPTION CREATING  ──▶  MESSAGE_SUBSCRIPTION CREATE → CREATED
//! PROCESS_MESSAGE_SUBSCRIPTION CREATED   ◀──  (ack)
//!                                        ◀──  CORRELATING (a message matched)
//! PROCESS_MESSAGE_SUBSCRIPTION CORRELATED ──▶ MESSAGE_SUBSCRIPTION CORRELATED (ack)
//! ```
//!
//! Every unacknowledged step is re-sent by [`Engine::tick`] until its answer arrives; every
//! handler is idempotent, so a duplicate does nothing twice.

use super::{Engine, Output, RequestId, Step, subscription_partition};
use crate::model::MessageRef;
use crate::record::{
    ErrorType, Intent, Key, MessageStartEventSubscriptionValue, MessageSubscriptionValue,
    MessageValue, ProcessMessageSubscriptionValue, Record, RecordValue, RejectionType,
    key_partition,
};
use crate::state::{ElementState, ProcessSubscriptionState};

impl Engine {
    pub(super) fn publish_message(
        &mut self,
        command: &Record,
        value: &MessageValue,
        request: Option<RequestId>,
        out: &mut Output,
    ) {
        if value.name.is_empty() {
            let reason = "Expected to publish a message with a name, but the name is empty";
            self.reject(
                command,
                request,
                RejectionType::InvalidArgument,
                reason.into(),
                out,
            );
            return;
        }
        if value.time_to_live < 0 {
            let reason = format!(
                "Expected to publish a message with a non-negative time to live, but got {}",
                value.time_to_live
            );
            self.reject(
                command,
                request,
                RejectionType::InvalidArgument,
                reason,
                out,
            );
            return;
        }
        let ttl_max = self.config.message_ttl_ms_max;
        if value.time_to_live > ttl_max {
            let reason = format!(
                "Expected to publish a message with a time to live of at most {ttl_max} ms \
                 ({}), but got {} ms; publish it with a shorter time to live (the limit is the \
                 broker's engine.messages.ttlMax)",
                describe_ms(ttl_max),
                value.time_to_live
            );
            self.reject(
                command,
                request,
                RejectionType::InvalidArgument,
                reason,
                out,
            );
            return;
        }
        let variables = match self.parse_document(&value.variables) {
            Ok(variables) => variables,
            Err(reason) => {
                self.reject(
                    command,
                    request,
                    RejectionType::InvalidArgument,
                    reason,
                    out,
                );
                return;
            }
        };
        if !value.message_id.is_empty() {
            let index = (value.name.clone(), value.correlation_key.clone());
            let duplicate = self
                .state
                .messages_by_correlation
                .get(&index)
                .is_some_and(|keys| {
                    keys.iter().any(|key| {
                        self.state
                            .messages
                            .get(key)
                            .is_some_and(|message| message.message_id == value.message_id)
                    })
                });
            if duplicate {
                let reason = format!(
                    "Expected to publish a new message with id '{}', but a message with that id \
                     was already published",
                    value.message_id
                );
                self.reject(command, request, RejectionType::AlreadyExists, reason, out);
                return;
            }
        }
        let key = self.state.next_key();
        let published = MessageValue {
            deadline: self.now_ms.saturating_add(value.time_to_live),
            ..value.clone()
        };
        self.write_event_and_respond(
            key,
            Intent::Published,
            RecordValue::Message(published.clone()),
            request,
            out,
        );
        let mut correlated: Vec<String> = Vec::new();
        // Waiting instances: at most one instance per process.
        let index = (value.name.clone(), value.correlation_key.clone());
        let mut subscriptions: Vec<Key> = self
            .state
            .subscriptions_by_correlation
            .get(&index)
            .cloned()
            .unwrap_or_default();
        subscriptions.sort_unstable();
        for subscription_key in subscriptions {
            let Some(subscription) = self.state.message_subscriptions.get(&subscription_key) else {
                continue;
            };
            if subscription.correlating_message.is_some()
                || correlated.contains(&subscription.value.bpmn_process_id)
            {
                continue;
            }
            correlated.push(subscription.value.bpmn_process_id.clone());
            self.correlate(subscription_key, key, &published, out);
        }
        // Message start events: one new instance per process.
        let mut starts: Vec<(Key, Key, String, String)> = self
            .state
            .message_start_subscriptions
            .values()
            .filter(|s| s.message_name == value.name)
            .map(|s| {
                (
                    s.key,
                    s.process_definition_key,
                    s.bpmn_process_id.clone(),
                    s.start_event_id.clone(),
                )
            })
            .collect();
        starts.sort_unstable();
        for (subscription_key, definition_key, bpmn_process_id, start_event_id) in starts {
            if correlated.contains(&bpmn_process_id) {
                continue;
            }
            let Some(definition) = self.definition(definition_key) else {
                continue;
            };
            let Some(start) = definition.model.element_index(&start_event_id) else {
                continue;
            };
            correlated.push(bpmn_process_id.clone());
            let process_instance_key = self.state.next_key_peek();
            self.write_event(
                subscription_key,
                Intent::Correlated,
                RecordValue::MessageStartEventSubscription(MessageStartEventSubscriptionValue {
                    process_definition_key: definition_key,
                    bpmn_process_id,
                    start_event_id,
                    message_name: value.name.clone(),
                    correlation_key: value.correlation_key.clone(),
                    message_key: key,
                    process_instance_key,
                    variables: published.variables.clone(),
                }),
                out,
            );
            let started = self.start_instance(&definition, start, variables.clone(), out);
            debug_assert_eq!(started, process_instance_key);
        }
    }

    /// Marks a subscription as correlating a message and tells the instance's partition.
    fn correlate(
        &mut self,
        subscription_key: Key,
        message_key: Key,
        message: &MessageValue,
        out: &mut Output,
    ) {
        let Some(subscription) = self.state.message_subscriptions.get(&subscription_key) else {
            return;
        };
        let mut value = subscription.value.clone();
        value.message_key = message_key;
        value.variables.clone_from(&message.variables);
        self.write_event(
            subscription_key,
            Intent::Correlating,
            RecordValue::MessageSubscription(value.clone()),
            out,
        );
        self.send_correlate(&value, out);
    }

    fn send_correlate(&mut self, value: &MessageSubscriptionValue, out: &mut Output) {
        let command = Record::command_for(
            value.element_instance_key,
            Intent::Correlate,
            RecordValue::ProcessMessageSubscription(ProcessMessageSubscriptionValue {
                subscription_partition_id: self.config.partition_id,
                process_instance_key: value.process_instance_key,
                element_instance_key: value.element_instance_key,
                bpmn_process_id: value.bpmn_process_id.clone(),
                element_id: String::new(),
                message_name: value.message_name.clone(),
                correlation_key: value.correlation_key.clone(),
                message_key: value.message_key,
                variables: value.variables.clone(),
                interrupting: true,
            }),
        );
        self.send(key_partition(value.process_instance_key), command, out);
    }

    pub(super) fn expire_message(&mut self, command: &Record, out: &mut Output) {
        if self.reject_foreign_key(command, None, "expire message", command.key, out) {
            return;
        }
        let Some(message) = self.state.messages.get(&command.key) else {
            let reason = format!(
                "Expected to expire message with key '{}', but no such message is buffered",
                command.key
            );
            self.reject(command, None, RejectionType::NotFound, reason, out);
            return;
        };
        // Only the clock expires a message, and only once its time to live has passed.
        if message.deadline_ms > self.now_ms {
            let reason = format!(
                "Expected to expire message with key '{}' once due, but it lives until {} ms (now \
                 is {} ms)",
                command.key, message.deadline_ms, self.now_ms
            );
            self.reject(command, None, RejectionType::InvalidState, reason, out);
            return;
        }
        let value = MessageValue {
            name: message.name.clone(),
            correlation_key: message.correlation_key.clone(),
            message_id: message.message_id.clone(),
            variables: message.variables.clone(),
            deadline: message.deadline_ms,
            time_to_live: 0,
        };
        self.write_event(
            command.key,
            Intent::Expired,
            RecordValue::Message(value),
            out,
        );
    }

    /// The subscription of the element instance `element_key` among those of (name, key).
    fn find_subscription(&self, value: &MessageSubscriptionValue) -> Option<Key> {
        let index = (value.message_name.clone(), value.correlation_key.clone());
        self.state
            .subscriptions_by_correlation
            .get(&index)?
            .iter()
            .copied()
            .find(|key| {
                self.state
                    .message_subscriptions
                    .get(key)
                    .is_some_and(|subscription| {
                        subscription.value.element_instance_key == value.element_instance_key
                    })
            })
    }

    /// Why a message-subscription command from an instance's partition cannot be carried out
    /// here: the instance's keys must name one partition of this cluster (the one answers go
    /// to), and a message key must be this partition's.
    fn message_subscription_problem(
        &self,
        command: &Record,
        value: &MessageSubscriptionValue,
    ) -> Option<String> {
        let instance_partition = key_partition(value.process_instance_key);
        if !crate::record::is_possible_key(value.process_instance_key)
            || !self.is_partition(instance_partition)
            || key_partition(value.element_instance_key) != instance_partition
        {
            return Some(format!(
                "Expected a message subscription of an element instance of this cluster, but \
                 process instance key '{}' and element instance key '{}' do not name one \
                 partition of it",
                value.process_instance_key, value.element_instance_key
            ));
        }
        if matches!(command.intent, Intent::Correlate | Intent::Reject)
            && let Some(problem) = self.key_problem(value.message_key)
        {
            return Some(format!(
                "Expected a message subscription command naming a message of this partition, \
                 but {problem}"
            ));
        }
        None
    }

    /// Commands on the message partition's side.
    pub(super) fn process_message_subscription(
        &mut self,
        command: &Record,
        value: &MessageSubscriptionValue,
        out: &mut Output,
    ) {
        if matches!(
            command.intent,
            Intent::Create | Intent::Correlate | Intent::Delete | Intent::Reject
        ) && let Some(reason) = self.message_subscription_problem(command, value)
        {
            self.reject(command, None, RejectionType::InvalidArgument, reason, out);
            return;
        }
        match command.intent {
            Intent::Create => {
                if self.find_subscription(value).is_none() {
                    let key = self.state.next_key();
                    self.write_event(
                        key,
                        Intent::Created,
                        RecordValue::MessageSubscription(value.clone()),
                        out,
                    );
                    // A buffered message not yet correlated to this process?
                    let index = (value.message_name.clone(), value.correlation_key.clone());
                    let now = self.now_ms;
                    let buffered =
                        self.state
                            .messages_by_correlation
                            .get(&index)
                            .and_then(|keys| {
                                keys.iter().copied().find(|message_key| {
                                    self.state.messages.get(message_key).is_some_and(|message| {
                                        message.deadline_ms > now
                                            && !message
                                                .correlated_to
                                                .contains(&value.bpmn_process_id)
                                    })
                                })
                            });
                    if let Some(message_key) = buffered
                        && let Some(message) = self.state.messages.get(&message_key)
                    {
                        let message = MessageValue {
                            name: message.name.clone(),
                            correlation_key: message.correlation_key.clone(),
                            variables: message.variables.clone(),
                            ..MessageValue::default()
                        };
                        self.correlate(key, message_key, &message, out);
                    }
                }
                let ack = Record::command_for(
                    value.element_instance_key,
                    Intent::Create,
                    RecordValue::ProcessMessageSubscription(ProcessMessageSubscriptionValue {
                        subscription_partition_id: self.config.partition_id,
                        process_instance_key: value.process_instance_key,
                        element_instance_key: value.element_instance_key,
                        bpmn_process_id: value.bpmn_process_id.clone(),
                        message_name: value.message_name.clone(),
                        correlation_key: value.correlation_key.clone(),
                        interrupting: value.interrupting,
                        ..ProcessMessageSubscriptionValue::default()
                    }),
                );
                self.send(key_partition(value.process_instance_key), ack, out);
            }
            Intent::Correlate => {
                if let Some(key) = self.find_subscription(value)
                    && let Some(subscription) = self.state.message_subscriptions.get(&key)
                {
                    let mut correlated = subscription.value.clone();
                    correlated.message_key = value.message_key;
                    self.write_event(
                        key,
                        Intent::Correlated,
                        RecordValue::MessageSubscription(correlated),
                        out,
                    );
                }
            }
            Intent::Delete => {
                if let Some(key) = self.find_subscription(value)
                    && let Some(subscription) = self.state.message_subscriptions.get(&key)
                {
                    let deleted = subscription.value.clone();
                    self.write_event(
                        key,
                        Intent::Deleted,
                        RecordValue::MessageSubscription(deleted),
                        out,
                    );
                }
                let ack = Record::command_for(
                    value.element_instance_key,
                    Intent::Delete,
                    RecordValue::ProcessMessageSubscription(ProcessMessageSubscriptionValue {
                        subscription_partition_id: self.config.partition_id,
                        process_instance_key: value.process_instance_key,
                        element_instance_key: value.element_instance_key,
                        bpmn_process_id: value.bpmn_process_id.clone(),
                        message_name: value.message_name.clone(),
                        correlation_key: value.correlation_key.clone(),
                        ..ProcessMessageSubscriptionValue::default()
                    }),
                );
                self.send(key_partition(value.process_instance_key), ack, out);
            }
            Intent::Reject => {
                // The instance could not take the message: it may go to another instance of
                // the same process.
                let subscription = self.find_subscription(value);
                if let Some(key) = subscription
                    && let Some(found) = self.state.message_subscriptions.get(&key)
                {
                    let deleted = found.value.clone();
                    self.write_event(
                        key,
                        Intent::Deleted,
                        RecordValue::MessageSubscription(deleted),
                        out,
                    );
                }
                let key = subscription.unwrap_or(command.key);
                self.write_event(
                    key,
                    Intent::Rejected,
                    RecordValue::MessageSubscription(value.clone()),
                    out,
                );
                let Some(message) = self.state.messages.get(&value.message_key) else {
                    return;
                };
                let message = MessageValue {
                    name: message.name.clone(),
                    correlation_key: message.correlation_key.clone(),
                    variables: message.variables.clone(),
                    ..MessageValue::default()
                };
                let index = (value.message_name.clone(), value.correlation_key.clone());
                let mut candidates: Vec<Key> = self
                    .state
                    .subscriptions_by_correlation
                    .get(&index)
                    .cloned()
                    .unwrap_or_default();
                candidates.sort_unstable();
                let next = candidates.into_iter().find(|key| {
                    self.state
                        .message_subscriptions
                        .get(key)
                        .is_some_and(|subscription| {
                            subscription.correlating_message.is_none()
                                && subscription.value.bpmn_process_id == value.bpmn_process_id
                        })
                });
                if let Some(next) = next {
                    self.correlate(next, value.message_key, &message, out);
                }
            }
            _ => {
                let reason = format!(
                    "Expected a message subscription command, but got intent {:?}",
                    command.intent
                );
                self.reject(command, None, RejectionType::InvalidArgument, reason, out);
            }
        }
    }

    /// Commands on the instance partition's side.
    pub(super) fn process_process_subscription(
        &mut self,
        command: &Record,
        value: &ProcessMessageSubscriptionValue,
        out: &mut Output,
    ) {
        let element_key = value.element_instance_key;
        if self.reject_foreign_key(
            command,
            None,
            "handle the message subscription of element instance",
            element_key,
            out,
        ) {
            return;
        }
        let subscription = self
            .state
            .process_subscriptions
            .get(&element_key)
            .map(|s| (s.key, s.state, s.value.clone()));
        match command.intent {
            Intent::Create => {
                if let Some((key, ProcessSubscriptionState::Creating, current)) = subscription {
                    self.write_event(
                        key,
                        Intent::Created,
                        RecordValue::ProcessMessageSubscription(current),
                        out,
                    );
                }
            }
            Intent::Correlate => {
                let waiting = self
                    .state
                    .element_instances
                    .get(&element_key)
                    .is_some_and(|instance| instance.state == ElementState::Activated);
                match subscription {
                    Some((
                        key,
                        ProcessSubscriptionState::Creating | ProcessSubscriptionState::Opened,
                        current,
                    )) if waiting
                        && current.message_name == value.message_name
                        && current.correlation_key == value.correlation_key
                        && current.subscription_partition_id == value.subscription_partition_id =>
                    {
                        // The message partition checked the variables when the message was
                        // published, possibly under other limits: checked again here, and a
                        // document over this partition's limits becomes an incident (the
                        // message is taken either way, so it is not offered again).
                        let variables = self.parse_document(&value.variables);
                        let correlated = ProcessMessageSubscriptionValue {
                            message_key: value.message_key,
                            variables: value.variables.clone(),
                            ..current
                        };
                        self.write_event(
                            key,
                            Intent::Correlated,
                            RecordValue::ProcessMessageSubscription(correlated.clone()),
                            out,
                        );
                        let ack = Record::command_for(
                            key,
                            Intent::Correlate,
                            RecordValue::MessageSubscription(MessageSubscriptionValue {
                                process_instance_key: correlated.process_instance_key,
                                element_instance_key: element_key,
                                bpmn_process_id: correlated.bpmn_process_id.clone(),
                                message_name: correlated.message_name.clone(),
                                correlation_key: correlated.correlation_key.clone(),
                                message_key: value.message_key,
                                variables: crate::record::Text::default(),
                                interrupting: true,
                            }),
                        );
                        self.send(current.subscription_partition_id, ack, out);
                        match variables {
                            Ok(variables) => self.steps.push_back(Step::Complete {
                                key: element_key,
                                variables: Some(variables),
                            }),
                            Err(problem) => {
                                let message = format!(
                                    "The correlated message's variables cannot be taken: \
                                     {problem}. Resolve the incident to continue without them."
                                );
                                self.raise_incident(
                                    element_key,
                                    ErrorType::IoMappingError,
                                    message,
                                    -1,
                                    out,
                                );
                            }
                        }
                    }
                    _ => {
                        let reason = format!(
                            "Expected to correlate a message to the element instance '{element_key}', \
                             but it no longer waits for it"
                        );
                        self.reject(command, None, RejectionType::InvalidState, reason, out);
                        if !self.is_partition(value.subscription_partition_id) {
                            return;
                        }
                        let reject = Record::command_for(
                            command.key,
                            Intent::Reject,
                            RecordValue::MessageSubscription(MessageSubscriptionValue {
                                process_instance_key: value.process_instance_key,
                                element_instance_key: element_key,
                                bpmn_process_id: value.bpmn_process_id.clone(),
                                message_name: value.message_name.clone(),
                                correlation_key: value.correlation_key.clone(),
                                message_key: value.message_key,
                                variables: crate::record::Text::default(),
                                interrupting: true,
                            }),
                        );
                        self.send(value.subscription_partition_id, reject, out);
                    }
                }
            }
            Intent::Delete => {
                if let Some((key, ProcessSubscriptionState::Deleting, current)) = subscription {
                    self.write_event(
                        key,
                        Intent::Deleted,
                        RecordValue::ProcessMessageSubscription(current),
                        out,
                    );
                }
            }
            _ => {
                let reason = format!(
                    "Expected a process message subscription command, but got intent {:?}",
                    command.intent
                );
                self.reject(command, None, RejectionType::InvalidArgument, reason, out);
            }
        }
    }

    /// The message name and correlation key an element waits for.
    pub(super) fn subscription_for(
        &self,
        message: &MessageRef,
        key: Key,
    ) -> Result<(String, String), String> {
        let name = self.evaluate_string(&message.name, key)?;
        let Some(correlation_key) = &message.correlation_key else {
            return Err(format!("message '{name}' has no correlation key"));
        };
        let correlation_key = self
            .evaluate_string(correlation_key, key)
            .map_err(|error| {
                format!(
                    "failed to extract the correlation key for '{}': {error}",
                    correlation_key.text
                )
            })?;
        Ok((name, correlation_key))
    }

    /// Opens the subscription of a waiting element on the message's partition.
    pub(super) fn open_subscription(
        &mut self,
        element_key: Key,
        message_name: String,
        correlation_key: String,
        out: &mut Output,
    ) {
        let Some((instance, definition)) = self.instance_definition(element_key) else {
            return;
        };
        let value = ProcessMessageSubscriptionValue {
            subscription_partition_id: subscription_partition(
                &correlation_key,
                self.config.partition_count,
            ),
            process_instance_key: instance.process_instance_key,
            element_instance_key: element_key,
            bpmn_process_id: definition.bpmn_process_id.to_string(),
            element_id: definition.model.element(instance.element).id.clone(),
            message_name,
            correlation_key,
            message_key: -1,
            variables: crate::record::Text::default(),
            interrupting: true,
        };
        let key = self.state.next_key();
        self.write_event(
            key,
            Intent::Creating,
            RecordValue::ProcessMessageSubscription(value.clone()),
            out,
        );
        self.send_subscription_command(&value, Intent::Create, out);
    }

    fn send_subscription_command(
        &mut self,
        value: &ProcessMessageSubscriptionValue,
        intent: Intent,
        out: &mut Output,
    ) {
        let command = Record::command_for(
            -1,
            intent,
            RecordValue::MessageSubscription(MessageSubscriptionValue {
                process_instance_key: value.process_instance_key,
                element_instance_key: value.element_instance_key,
                bpmn_process_id: value.bpmn_process_id.clone(),
                message_name: value.message_name.clone(),
                correlation_key: value.correlation_key.clone(),
                message_key: -1,
                variables: crate::record::Text::default(),
                interrupting: value.interrupting,
            }),
        );
        self.send(value.subscription_partition_id, command, out);
    }

    /// Closes the subscription of an element that stops waiting.
    pub(super) fn close_subscription(&mut self, element_key: Key, out: &mut Output) {
        let Some(subscription) = self.state.process_subscriptions.get(&element_key) else {
            return;
        };
        if subscription.state == ProcessSubscriptionState::Deleting {
            return;
        }
        let (key, value) = (subscription.key, subscription.value.clone());
        self.write_event(
            key,
            Intent::Deleting,
            RecordValue::ProcessMessageSubscription(value.clone()),
            out,
        );
        self.send_subscription_command(&value, Intent::Delete, out);
    }

    /// Re-sends every cross-partition command still waiting for its answer.
    pub(super) fn resend_pending(&mut self, now_ms: i64, out: &mut Output) {
        self.resend_distributions(now_ms, out);
        let interval = self.config.resend_interval_ms;
        let mut due: Vec<Key> = self
            .state
            .process_subscriptions
            .values()
            .filter(|s| {
                s.state != ProcessSubscriptionState::Opened && s.resent_at_ms + interval <= now_ms
            })
            .map(|s| s.value.element_instance_key)
            .collect();
        due.sort_unstable();
        for element_key in due {
            let Some(subscription) = self.state.process_subscriptions.get_mut(&element_key) else {
                continue;
            };
            subscription.resent_at_ms = now_ms;
            let (state, value) = (subscription.state, subscription.value.clone());
            let intent = if state == ProcessSubscriptionState::Creating {
                Intent::Create
            } else {
                Intent::Delete
            };
            self.send_subscription_command(&value, intent, out);
        }
        let mut correlating: Vec<Key> = self
            .state
            .message_subscriptions
            .values()
            .filter(|s| s.correlating_message.is_some() && s.resent_at_ms + interval <= now_ms)
            .map(|s| s.key)
            .collect();
        correlating.sort_unstable();
        for key in correlating {
            let Some(subscription) = self.state.message_subscriptions.get_mut(&key) else {
                continue;
            };
            subscription.resent_at_ms = now_ms;
            let value = subscription.value.clone();
            self.send_correlate(&value, out);
        }
    }
}

/// A duration in ms as days, hours, minutes and seconds for messages (`7d`, `1h 30m`).
fn describe_ms(ms: i64) -> String {
    let seconds = ms / 1_000;
    let parts = [
        (seconds / 86_400, "d"),
        (seconds / 3_600 % 24, "h"),
        (seconds / 60 % 60, "m"),
        (seconds % 60, "s"),
    ];
    let text: Vec<String> = parts
        .iter()
        .filter(|(amount, _)| *amount > 0)
        .map(|(amount, unit)| format!("{amount}{unit}"))
        .collect();
    if text.is_empty() {
        format!("{ms} ms")
    } else {
        text.join(" ")
    }
}
