//! Process instances: creation, the element life cycle (activate, complete, terminate), sequence
//! flows and gateways, errors, incidents, variables and timers.

use std::rc::Rc;

use serde_json::Value;

use super::{Engine, Output, RequestId, SideEffect, Step, describe};
use crate::model::{
    ElementIndex, ElementKind, EventTrigger, FlowIndex, Mapping, Process, TimerDefinition,
};
use crate::record::{
    BpmnElementType, ErrorType, IncidentValue, Intent, JobValue, Key, ProcessInstanceCreationValue,
    ProcessInstanceValue, Record, RecordType, RecordValue, RejectionType, TimerValue,
    VariableDocumentValue, VariableValue, key_partition,
};
use crate::state::{ElementState, ProcessSubscriptionState};

/// A timer's due date, its repetitions left (`-1` forever) and a cycle's text.
pub(super) type TimerDue = (i64, i32, String);

/// What the processors need of a deployed process, detached from the state's borrow.
#[derive(Debug, Clone)]
pub(super) struct Definition {
    pub key: Key,
    pub bpmn_process_id: Rc<str>,
    pub version: i32,
    pub model: Rc<Process>,
}

fn element_type(kind: &ElementKind) -> BpmnElementType {
    match kind {
        ElementKind::Process { .. } => BpmnElementType::Process,
        ElementKind::SubProcess { .. } => BpmnElementType::SubProcess,
        ElementKind::StartEvent { .. } => BpmnElementType::StartEvent,
        ElementKind::EndEvent { .. } => BpmnElementType::EndEvent,
        ElementKind::ServiceTask { .. } => BpmnElementType::ServiceTask,
        ElementKind::ReceiveTask { .. } => BpmnElementType::ReceiveTask,
        ElementKind::ExclusiveGateway { .. } => BpmnElementType::ExclusiveGateway,
        ElementKind::ParallelGateway => BpmnElementType::ParallelGateway,
        ElementKind::IntermediateCatchEvent { .. } => BpmnElementType::IntermediateCatchEvent,
        ElementKind::BoundaryEvent { .. } => BpmnElementType::BoundaryEvent,
    }
}

impl Engine {
    pub(super) fn definition(&self, key: Key) -> Option<Definition> {
        let process = self.state.process(key)?;
        Some(Definition {
            key,
            bpmn_process_id: Rc::clone(&process.bpmn_process_id),
            version: process.version,
            model: Rc::clone(&process.model),
        })
    }

    fn instance_value(
        definition: &Definition,
        process_instance_key: Key,
        flow_scope_key: Key,
        element: ElementIndex,
    ) -> ProcessInstanceValue {
        let element = definition.model.element(element);
        ProcessInstanceValue {
            bpmn_process_id: definition.bpmn_process_id.to_string(),
            version: definition.version,
            process_definition_key: definition.key,
            process_instance_key,
            element_id: element.id.clone(),
            flow_scope_key,
            bpmn_element_type: element_type(&element.kind),
        }
    }

    /// The live element instance `key` and its process. `None` when it is not live; the
    /// appliers admit an element instance only of a deployed process, and processes are never
    /// removed, so a live one always has its definition.
    pub(super) fn instance_definition(
        &self,
        key: Key,
    ) -> Option<(&crate::state::ElementInstance, Definition)> {
        let instance = self.state.element_instances.get(&key)?;
        let definition = self.definition(instance.process_definition_key)?;
        Some((instance, definition))
    }

    /// Writes a life-cycle event of the element instance `key` (nothing when it is not live).
    fn write_element_event(&mut self, key: Key, intent: Intent, out: &mut Output) {
        let Some((instance, definition)) = self.instance_definition(key) else {
            return;
        };
        let value = Self::instance_value(
            &definition,
            instance.process_instance_key,
            instance.flow_scope_key,
            instance.element,
        );
        self.write_event(key, intent, RecordValue::ProcessInstance(value), out);
    }

    // ---------------------------------------------------------------- creation and cancel

    pub(super) fn create_instance(
        &mut self,
        command: &Record,
        value: &ProcessInstanceCreationValue,
        request: Option<RequestId>,
        out: &mut Output,
    ) {
        if value.process_definition_key > 0
            && key_partition(value.process_definition_key)
                != super::deployment::DEPLOYMENT_PARTITION
        {
            let reason = format!(
                "Expected to find process definition with key '{}', but process definitions are \
                 made by partition {} and this key belongs to partition {}; use a key the \
                 deployment returned",
                value.process_definition_key,
                super::deployment::DEPLOYMENT_PARTITION,
                key_partition(value.process_definition_key)
            );
            self.reject(command, request, RejectionType::NotFound, reason, out);
            return;
        }
        let found = if value.process_definition_key > 0 {
            self.state.process(value.process_definition_key)
        } else if value.version > 0 {
            self.state
                .process_version(&value.bpmn_process_id, value.version)
        } else {
            self.state.latest_process(&value.bpmn_process_id)
        };
        let Some(definition) = found.and_then(|process| self.definition(process.key)) else {
            let reason = if value.process_definition_key > 0 {
                format!(
                    "Expected to find process definition with key '{}', but none found",
                    value.process_definition_key
                )
            } else if value.version > 0 {
                format!(
                    "Expected to find process definition with process ID '{}' and version '{}', \
                     but none found",
                    value.bpmn_process_id, value.version
                )
            } else {
                format!(
                    "Expected to find process definition with process ID '{}', but none found",
                    value.bpmn_process_id
                )
            };
            self.reject(command, request, RejectionType::NotFound, reason, out);
            return;
        };
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
        let none_start = match definition.model.element(0).kind {
            ElementKind::Process { none_start, .. } => none_start,
            _ => None,
        };
        let Some(start) = none_start else {
            let reason = format!(
                "Expected to create instance of process with none start event, but process '{}' \
                 has no none start event",
                definition.bpmn_process_id
            );
            self.reject(command, request, RejectionType::InvalidState, reason, out);
            return;
        };
        let process_instance_key = self.start_instance(&definition, start, variables, out);
        let created = ProcessInstanceCreationValue {
            bpmn_process_id: definition.bpmn_process_id.to_string(),
            version: definition.version,
            process_definition_key: definition.key,
            process_instance_key,
            variables: crate::record::Text::default(),
            fetch_variables: value.fetch_variables.clone(),
        };
        if command.intent == Intent::CreateWithAwaitingResult {
            self.write_event(
                process_instance_key,
                Intent::Created,
                RecordValue::ProcessInstanceCreation(created),
                out,
            );
            if let Some(request) = request {
                self.awaiting_results.insert(
                    process_instance_key,
                    (request, value.fetch_variables.clone()),
                );
            }
        } else {
            self.write_event_and_respond(
                process_instance_key,
                Intent::Created,
                RecordValue::ProcessInstanceCreation(created),
                request,
                out,
            );
        }
    }

    /// Activates a new process instance and queues the activation of `start`.
    pub(super) fn start_instance(
        &mut self,
        definition: &Definition,
        start: ElementIndex,
        variables: serde_json::Map<String, Value>,
        out: &mut Output,
    ) -> Key {
        let key = self.state.next_key();
        let value = Self::instance_value(definition, key, -1, 0);
        self.write_event(
            key,
            Intent::ElementActivating,
            RecordValue::ProcessInstance(value.clone()),
            out,
        );
        for (name, value) in variables {
            self.set_variable(key, &name, &value, out);
        }
        self.write_event(
            key,
            Intent::ElementActivated,
            RecordValue::ProcessInstance(value),
            out,
        );
        self.steps.push_back(Step::Activate {
            scope_key: key,
            element: start,
        });
        key
    }

    pub(super) fn cancel_instance(
        &mut self,
        command: &Record,
        request: Option<RequestId>,
        out: &mut Output,
    ) {
        let key = command.key;
        if self.reject_foreign_key(command, request, "cancel a process instance", key, out) {
            return;
        }
        let root_state = self
            .state
            .element_instances
            .get(&key)
            .filter(|instance| instance.flow_scope_key < 0)
            .map(|instance| instance.state);
        let Some(root_state) = root_state else {
            let reason = format!(
                "Expected to cancel a process instance with key '{key}', but no such process was \
                 found"
            );
            self.reject(command, request, RejectionType::NotFound, reason, out);
            return;
        };
        if root_state == ElementState::Terminating {
            let reason = format!(
                "Expected to cancel a process instance with key '{key}', but it is already being \
                 canceled"
            );
            self.reject(command, request, RejectionType::InvalidState, reason, out);
            return;
        }
        let first = out.records.len();
        self.terminate_element(key, out);
        if let Some(request) = request
            && let Some(record) = out.records.get(first).cloned()
        {
            out.side_effects
                .push(SideEffect::Respond { request, record });
        }
        if let Some((request, _)) = self.awaiting_results.remove(&key) {
            let record = Record {
                record_type: RecordType::CommandRejection,
                rejection: Some(crate::record::Rejection {
                    rejection_type: RejectionType::InvalidState,
                    reason: format!(
                        "Expected to return the result of process instance '{key}', but it was \
                         canceled"
                    ),
                }),
                ..Record::command_for(
                    key,
                    Intent::CreateWithAwaitingResult,
                    RecordValue::ProcessInstanceCreation(ProcessInstanceCreationValue::default()),
                )
            };
            out.side_effects
                .push(SideEffect::Respond { request, record });
        }
    }

    // ---------------------------------------------------------------- element life cycle

    /// Activates `element` inside the live scope instance `scope_key`.
    pub(super) fn activate_element(
        &mut self,
        scope_key: Key,
        element: ElementIndex,
        out: &mut Output,
    ) {
        let Some(scope) = self.state.element_instances.get(&scope_key) else {
            return;
        };
        if scope.state == ElementState::Terminating {
            return;
        }
        let pi = scope.process_instance_key;
        let Some(definition) = self.definition(scope.process_definition_key) else {
            return;
        };
        let key = self.state.next_key();
        let value = Self::instance_value(&definition, pi, scope_key, element);
        self.write_event(
            key,
            Intent::ElementActivating,
            RecordValue::ProcessInstance(value),
            out,
        );
        self.continue_activation(key, out);
    }

    /// Everything after `ELEMENT_ACTIVATING`: inputs, then what the element kind needs. Also
    /// the retry after an incident raised during activation is resolved.
    pub(super) fn continue_activation(&mut self, key: Key, out: &mut Output) {
        let Some((instance, definition)) = self.instance_definition(key) else {
            return;
        };
        let element = definition.model.element(instance.element);
        if let Err(message) = self.apply_inputs(key, &element.inputs, out) {
            self.raise_incident(key, ErrorType::IoMappingError, message, -1, out);
            return;
        }
        match &element.kind {
            ElementKind::SubProcess { start } => {
                self.write_element_event(key, Intent::ElementActivated, out);
                self.steps.push_back(Step::Activate {
                    scope_key: key,
                    element: *start,
                });
            }
            ElementKind::StartEvent { .. }
            | ElementKind::BoundaryEvent { .. }
            | ElementKind::ParallelGateway
            | ElementKind::ExclusiveGateway { .. }
            | ElementKind::EndEvent { error: None } => {
                self.write_element_event(key, Intent::ElementActivated, out);
                self.steps.push_back(Step::Complete {
                    key,
                    variables: None,
                });
            }
            ElementKind::EndEvent { error: Some(error) } => {
                let code = error.code.clone();
                if !self.throw_error(key, &code, out) {
                    let message = format!(
                        "Expected to throw an error event with the code '{code}', but it was not \
                         caught. No error events are available in the scope."
                    );
                    self.raise_incident(key, ErrorType::UnhandledErrorEvent, message, -1, out);
                }
            }
            ElementKind::ServiceTask {
                job_type,
                retries,
                headers,
            } => {
                let job = self
                    .evaluate_string(job_type, key)
                    .and_then(|job_type| {
                        if job_type.is_empty() {
                            Err("expected a non-empty job type".to_owned())
                        } else {
                            Ok(job_type)
                        }
                    })
                    .and_then(|job_type| {
                        let retries = self.evaluate_retries(retries, key)?;
                        Ok((job_type, retries))
                    });
                let timers =
                    self.boundary_timers(&definition, element.boundary_events.as_slice(), key);
                let ((job_type, retries), timers) = match (job, timers) {
                    (Ok(job), Ok(timers)) => (job, timers),
                    (Err(message), _) | (_, Err(message)) => {
                        self.raise_incident(key, ErrorType::ExtractValueError, message, -1, out);
                        return;
                    }
                };
                self.create_timers(key, timers, out);
                let Some(instance) = self.state.element_instances.get(&key) else {
                    return;
                };
                let value = JobValue {
                    job_type: job_type.clone(),
                    retries,
                    deadline: -1,
                    custom_headers: headers
                        .iter()
                        .map(|(key, value)| crate::record::Header {
                            key: key.clone(),
                            value: value.clone(),
                        })
                        .collect(),
                    retry_backoff: 0,
                    recurring_time: -1,
                    process_instance_key: instance.process_instance_key,
                    element_instance_key: key,
                    element_id: element.id.clone(),
                    bpmn_process_id: definition.bpmn_process_id.to_string(),
                    process_definition_key: definition.key,
                    process_definition_version: definition.version,
                    ..JobValue::default()
                };
                let job_key = self.state.next_key();
                self.write_event(job_key, Intent::Created, RecordValue::Job(value), out);
                self.write_element_event(key, Intent::ElementActivated, out);
                out.side_effects
                    .push(SideEffect::JobsAvailable { job_type });
            }
            ElementKind::ReceiveTask { message } => {
                let opened = self
                    .subscription_for(message, key)
                    .and_then(|subscription| {
                        let timers = self.boundary_timers(
                            &definition,
                            element.boundary_events.as_slice(),
                            key,
                        )?;
                        Ok((subscription, timers))
                    });
                match opened {
                    Ok(((name, correlation_key), timers)) => {
                        self.create_timers(key, timers, out);
                        self.open_subscription(key, name, correlation_key, out);
                        self.write_element_event(key, Intent::ElementActivated, out);
                    }
                    Err(message) => {
                        self.raise_incident(key, ErrorType::ExtractValueError, message, -1, out);
                    }
                }
            }
            ElementKind::IntermediateCatchEvent { trigger } => match trigger {
                EventTrigger::Message(message) => match self.subscription_for(message, key) {
                    Ok((name, correlation_key)) => {
                        self.open_subscription(key, name, correlation_key, out);
                        self.write_element_event(key, Intent::ElementActivated, out);
                    }
                    Err(message) => {
                        self.raise_incident(key, ErrorType::ExtractValueError, message, -1, out);
                    }
                },
                EventTrigger::Timer(timer) => match self.timer_due(timer, key) {
                    Ok(due) => {
                        let target = element.id.clone();
                        self.create_timers(key, vec![(target, due)], out);
                        self.write_element_event(key, Intent::ElementActivated, out);
                    }
                    Err(message) => {
                        self.raise_incident(key, ErrorType::ExtractValueError, message, -1, out);
                    }
                },
                EventTrigger::None | EventTrigger::Error(_) => {
                    self.write_element_event(key, Intent::ElementActivated, out);
                    self.steps.push_back(Step::Complete {
                        key,
                        variables: None,
                    });
                }
            },
            // A process instance is started, not activated: its events are written by
            // `start_instance`, and the appliers admit element 0 only as a process instance.
            ElementKind::Process { .. } => {}
        }
    }

    fn evaluate_retries(
        &self,
        expression: &crate::model::Expression,
        scope_key: Key,
    ) -> Result<i32, String> {
        let value = self.evaluate(expression, scope_key)?;
        let number = match &value {
            Value::Number(number) => number.as_i64(),
            Value::String(text) => text.trim().parse::<i64>().ok(),
            _ => None,
        };
        number.and_then(|n| i32::try_from(n).ok()).ok_or_else(|| {
            format!(
                "expected retries '{}' to evaluate to a number, but it was {}",
                expression.text,
                describe(&value)
            )
        })
    }

    /// The due dates of the timer boundary events of an activity: (boundary id, timer).
    fn boundary_timers(
        &self,
        definition: &Definition,
        boundary_events: &[ElementIndex],
        key: Key,
    ) -> Result<Vec<(String, TimerDue)>, String> {
        let mut timers = Vec::new();
        for boundary in boundary_events {
            let element = definition.model.element(*boundary);
            if let ElementKind::BoundaryEvent {
                trigger: EventTrigger::Timer(timer),
                ..
            } = &element.kind
            {
                timers.push((element.id.clone(), self.timer_due(timer, key)?));
            }
        }
        Ok(timers)
    }

    /// (due date, repetitions, cycle interval text) of a timer definition.
    pub(super) fn timer_due(
        &self,
        timer: &TimerDefinition,
        scope_key: Key,
    ) -> Result<TimerDue, String> {
        let now = self.now_ms;
        match timer {
            TimerDefinition::Duration(expression) => {
                let text = self.evaluate_string(expression, scope_key)?;
                let duration = crate::time::parse_duration(&text)
                    .map_err(|error| format!("invalid timer duration '{text}': {error}"))?;
                Ok((duration.add_to(now), 1, String::new()))
            }
            TimerDefinition::Date(expression) => {
                let text = self.evaluate_string(expression, scope_key)?;
                let due = crate::time::parse_date_time(&text)
                    .map_err(|error| format!("invalid timer date '{text}': {error}"))?;
                Ok((due, 1, String::new()))
            }
            TimerDefinition::Cycle(expression) => {
                let text = self.evaluate_string(expression, scope_key)?;
                let cycle = crate::time::parse_cycle(&text)
                    .map_err(|error| format!("invalid timer cycle '{text}': {error}"))?;
                let due = cycle.start_ms.unwrap_or_else(|| cycle.interval.add_to(now));
                let repetitions = cycle
                    .repetitions
                    .map_or(-1, |n| i32::try_from(n).unwrap_or(i32::MAX));
                Ok((due, repetitions, text))
            }
        }
    }

    /// Writes `TIMER CREATED` for each (target element id, (due, repetitions, interval)).
    fn create_timers(&mut self, key: Key, timers: Vec<(String, TimerDue)>, out: &mut Output) {
        if timers.is_empty() {
            return;
        }
        let Some(instance) = self.state.element_instances.get(&key) else {
            return;
        };
        let (pi, definition_key) = (
            instance.process_instance_key,
            instance.process_definition_key,
        );
        for (target, (due, repetitions, interval)) in timers {
            let timer_key = self.state.next_key();
            let value = TimerValue {
                element_instance_key: key,
                process_instance_key: pi,
                process_definition_key: definition_key,
                due_date: due,
                target_element_id: target,
                repetitions,
                interval,
            };
            self.write_event(timer_key, Intent::Created, RecordValue::Timer(value), out);
        }
    }

    /// Completes a live, activated element instance: merges a job's or message's variables,
    /// picks the outgoing flow of an exclusive gateway, then runs the completion.
    pub(super) fn complete_element(
        &mut self,
        key: Key,
        variables: Option<serde_json::Map<String, Value>>,
        out: &mut Output,
    ) {
        let Some((instance, definition)) = self.instance_definition(key) else {
            return;
        };
        if instance.state != ElementState::Activated {
            return;
        }
        let flow_scope_key = instance.flow_scope_key;
        let element = definition.model.element(instance.element);
        if let ElementKind::ExclusiveGateway { .. } = element.kind
            && let Err(message) = self.choose_flow(&definition, key, instance.element)
        {
            self.raise_incident(key, ErrorType::ConditionError, message, -1, out);
            return;
        }
        if let Some(variables) = variables {
            if element.outputs.is_empty() {
                self.propagate_variables(flow_scope_key, variables, out);
            } else {
                for (name, value) in variables {
                    self.set_variable(key, &name, &value, out);
                }
            }
        }
        self.write_element_event(key, Intent::ElementCompleting, out);
        self.continue_completion(key, out);
    }

    /// Everything after `ELEMENT_COMPLETING`: outputs, clean-up, `ELEMENT_COMPLETED`, then the
    /// outgoing flows (or the scope's completion). Also the retry after an output incident.
    pub(super) fn continue_completion(&mut self, key: Key, out: &mut Output) {
        let Some((instance, definition)) = self.instance_definition(key) else {
            return;
        };
        let flow_scope_key = instance.flow_scope_key;
        let element_index = instance.element;
        let element = definition.model.element(element_index);
        let outputs = match self.evaluate_mappings(key, &element.outputs) {
            Ok(outputs) => outputs,
            Err(message) => {
                self.raise_incident(key, ErrorType::IoMappingError, message, -1, out);
                return;
            }
        };
        for (target, value) in outputs {
            let read_scope = if flow_scope_key < 0 {
                key
            } else {
                flow_scope_key
            };
            if let Err(message) =
                self.propagate_path(read_scope, flow_scope_key, &target, value, out)
            {
                self.raise_incident(key, ErrorType::IoMappingError, message, -1, out);
                return;
            }
        }
        self.cancel_waits(key, out);
        if flow_scope_key < 0 {
            // The process instance completes: answer a creator waiting for the result.
            let result = self.awaiting_results.remove(&key).map(|(request, fetch)| {
                let all = self.state.visible_variables(key);
                let variables: serde_json::Map<String, Value> = if fetch.is_empty() {
                    all
                } else {
                    all.into_iter()
                        .filter(|(name, _)| fetch.contains(name))
                        .collect()
                };
                (request, variables)
            });
            self.write_element_event(key, Intent::ElementCompleted, out);
            if let Some((request, variables)) = result {
                let variables = Value::Object(variables).to_string();
                let bytes_max = self.config.result_variables_bytes_max;
                let record = if variables.len() > bytes_max {
                    result_too_large(key, variables.len(), bytes_max)
                } else {
                    Record {
                        record_type: RecordType::Event,
                        timestamp_ms: self.now_ms,
                        ..Record::command_for(
                            key,
                            Intent::Created,
                            RecordValue::ProcessInstanceCreation(ProcessInstanceCreationValue {
                                bpmn_process_id: definition.bpmn_process_id.to_string(),
                                version: definition.version,
                                process_definition_key: definition.key,
                                process_instance_key: key,
                                variables: variables.into(),
                                fetch_variables: Vec::new(),
                            }),
                        )
                    }
                };
                out.side_effects
                    .push(SideEffect::Respond { request, record });
            }
            return;
        }
        let flows = match element.kind {
            ElementKind::ExclusiveGateway { .. } => {
                match self.choose_flow(&definition, key, element_index) {
                    Ok(flow) => vec![flow],
                    Err(_) => Vec::new(),
                }
            }
            _ => element.outgoing.clone(),
        };
        self.write_element_event(key, Intent::ElementCompleted, out);
        if flows.is_empty() {
            self.complete_scope_if_done(flow_scope_key);
            return;
        }
        let Some(pi) = self
            .state
            .element_instances
            .get(&flow_scope_key)
            .map(|scope| scope.process_instance_key)
        else {
            return;
        };
        for flow in flows {
            self.take_flow(&definition, pi, flow_scope_key, flow, out);
        }
    }

    /// Queues the completion of a scope once nothing is left running in it.
    fn complete_scope_if_done(&mut self, scope_key: Key) {
        if let Some(scope) = self.state.element_instances.get(&scope_key)
            && scope.state == ElementState::Activated
            && scope.children.is_empty()
            && scope.active_flows == 0
        {
            self.steps.push_back(Step::Complete {
                key: scope_key,
                variables: None,
            });
        }
    }

    fn take_flow(
        &mut self,
        definition: &Definition,
        pi: Key,
        scope_key: Key,
        flow: FlowIndex,
        out: &mut Output,
    ) {
        let sequence_flow = definition.model.flow(flow);
        let key = self.state.next_key();
        let value = ProcessInstanceValue {
            bpmn_process_id: definition.bpmn_process_id.to_string(),
            version: definition.version,
            process_definition_key: definition.key,
            process_instance_key: pi,
            element_id: sequence_flow.id.clone(),
            flow_scope_key: scope_key,
            bpmn_element_type: BpmnElementType::SequenceFlow,
        };
        self.write_event(
            key,
            Intent::SequenceFlowTaken,
            RecordValue::ProcessInstance(value),
            out,
        );
        let target = definition.model.element(sequence_flow.target);
        if matches!(target.kind, ElementKind::ParallelGateway) && target.incoming.len() > 1 {
            let Some(scope) = self.state.element_instances.get(&scope_key) else {
                return;
            };
            let ready = target.incoming.iter().all(|incoming| {
                scope
                    .join_tokens
                    .iter()
                    .any(|(f, tokens)| f == incoming && *tokens > 0)
            });
            if !ready {
                return;
            }
        }
        self.steps.push_back(Step::Activate {
            scope_key,
            element: sequence_flow.target,
        });
    }

    /// The flow an exclusive gateway takes: the first whose condition is true, else the default.
    fn choose_flow(
        &self,
        definition: &Definition,
        key: Key,
        gateway: ElementIndex,
    ) -> Result<FlowIndex, String> {
        let element = definition.model.element(gateway);
        let ElementKind::ExclusiveGateway { default_flow } = element.kind else {
            return Err(format!(
                "Expected element '{}' to be an exclusive gateway choosing a flow, but it is not",
                element.id
            ));
        };
        for flow in &element.outgoing {
            if Some(*flow) == default_flow {
                continue;
            }
            let Some(condition) = &definition.model.flow(*flow).condition else {
                if element.outgoing.len() == 1 {
                    return Ok(*flow);
                }
                continue;
            };
            match self.evaluate(condition, key)? {
                Value::Bool(true) => return Ok(*flow),
                Value::Bool(false) => {}
                other => {
                    return Err(format!(
                        "Expected result of the expression '{}' to be 'BOOLEAN', but was {}",
                        condition.text,
                        describe(&other)
                    ));
                }
            }
        }
        default_flow.ok_or_else(|| {
            format!(
                "Expected at least one condition to evaluate to true, or to have a default flow \
                 at gateway '{}'",
                element.id
            )
        })
    }

    /// Terminates an element instance and everything inside it, depth first.
    pub(super) fn terminate_element(&mut self, key: Key, out: &mut Output) {
        let Some(instance) = self.state.element_instances.get(&key) else {
            return;
        };
        if instance.state == ElementState::Terminating {
            return;
        }
        self.write_element_event(key, Intent::ElementTerminating, out);
        let children = instance_children(&self.state, key);
        for child in children {
            self.terminate_element(child, out);
        }
        self.cancel_waits(key, out);
        let incidents: Vec<(Key, IncidentValue)> = self
            .state
            .incidents
            .values()
            .filter(|incident| incident.value.element_instance_key == key)
            .map(|incident| (incident.key, incident.value.clone()))
            .collect();
        for (incident_key, value) in incidents {
            self.write_event(
                incident_key,
                Intent::Resolved,
                RecordValue::Incident(value),
                out,
            );
        }
        self.write_element_event(key, Intent::ElementTerminated, out);
    }

    /// Cancels what an element instance waits on: its job, timers and message subscription.
    fn cancel_waits(&mut self, key: Key, out: &mut Output) {
        let Some(instance) = self.state.element_instances.get(&key) else {
            return;
        };
        let job_key = instance.job_key;
        let timer_keys = instance.timer_keys.clone();
        let subscription = instance.subscription;
        if let Some(job_key) = job_key
            && let Some(value) = self.job_value(job_key)
        {
            self.write_event(job_key, Intent::Canceled, RecordValue::Job(value), out);
        }
        for timer_key in timer_keys {
            let Some(timer) = self.state.timers.get(&timer_key) else {
                continue;
            };
            let value = timer.value.clone();
            self.write_event(timer_key, Intent::Canceled, RecordValue::Timer(value), out);
        }
        if subscription {
            self.close_subscription(key, out);
        }
    }

    /// Throws an error from the element instance `key`: the innermost boundary error event
    /// that catches `code` on it or an enclosing scope terminates that activity and is
    /// activated. Returns false when nothing catches it.
    pub(super) fn throw_error(&mut self, key: Key, code: &str, out: &mut Output) -> bool {
        let mut current = key;
        loop {
            let Some((instance, definition)) = self.instance_definition(current) else {
                return false;
            };
            let element = definition.model.element(instance.element);
            let catcher = element.boundary_events.iter().copied().find(|boundary| {
                matches!(
                    &definition.model.element(*boundary).kind,
                    ElementKind::BoundaryEvent { trigger: EventTrigger::Error(error), .. }
                        if error.as_ref().is_none_or(|error| error.code == code)
                )
            });
            let flow_scope_key = instance.flow_scope_key;
            if let Some(boundary) = catcher {
                self.terminate_element(current, out);
                self.steps.push_back(Step::Activate {
                    scope_key: flow_scope_key,
                    element: boundary,
                });
                return true;
            }
            if flow_scope_key < 0 {
                return false;
            }
            current = flow_scope_key;
        }
    }

    /// A boundary event of the activity `key` was triggered: the activity terminates and the
    /// boundary event is activated in its place.
    pub(super) fn trigger_boundary(&mut self, key: Key, boundary: ElementIndex, out: &mut Output) {
        let Some(instance) = self.state.element_instances.get(&key) else {
            return;
        };
        let flow_scope_key = instance.flow_scope_key;
        self.terminate_element(key, out);
        self.steps.push_back(Step::Activate {
            scope_key: flow_scope_key,
            element: boundary,
        });
    }

    // ---------------------------------------------------------------- incidents

    pub(super) fn raise_incident(
        &mut self,
        key: Key,
        error_type: ErrorType,
        message: String,
        job_key: Key,
        out: &mut Output,
    ) {
        let Some((instance, definition)) = self.instance_definition(key) else {
            return;
        };
        let value = IncidentValue {
            error_type,
            error_message: message,
            bpmn_process_id: definition.bpmn_process_id.to_string(),
            process_definition_key: definition.key,
            process_instance_key: instance.process_instance_key,
            element_id: definition.model.element(instance.element).id.clone(),
            element_instance_key: key,
            job_key,
            variable_scope_key: key,
        };
        let incident_key = self.state.next_key();
        self.write_event(
            incident_key,
            Intent::Created,
            RecordValue::Incident(value),
            out,
        );
    }

    pub(super) fn resolve_incident(
        &mut self,
        command: &Record,
        request: Option<RequestId>,
        out: &mut Output,
    ) {
        if self.reject_foreign_key(command, request, "resolve incident", command.key, out) {
            return;
        }
        let Some(incident) = self.state.incidents.get(&command.key) else {
            let reason = format!(
                "Expected to resolve incident with key '{}', but no such incident was found",
                command.key
            );
            self.reject(command, request, RejectionType::NotFound, reason, out);
            return;
        };
        let value = incident.value.clone();
        if value.job_key > 0
            && let Some(job) = self.state.jobs.get(&value.job_key)
            && job.retries <= 0
        {
            let reason = format!(
                "Expected to resolve incident with key '{}', but job with key '{}' has no retries left: update its retries first",
                command.key, value.job_key
            );
            self.reject(command, request, RejectionType::InvalidState, reason, out);
            return;
        }
        self.write_event_and_respond(
            command.key,
            Intent::Resolved,
            RecordValue::Incident(value.clone()),
            request,
            out,
        );
        if value.job_key > 0 {
            if let Some(job) = self.state.jobs.get(&value.job_key)
                && job.state == crate::state::JobState::Activatable
            {
                out.side_effects.push(SideEffect::JobsAvailable {
                    job_type: job.job_type.to_string(),
                });
            }
            return;
        }
        let key = value.element_instance_key;
        match self.state.element_instances.get(&key).map(|i| i.state) {
            Some(ElementState::Activating) => self.continue_activation(key, out),
            Some(ElementState::Activated) => self.steps.push_back(Step::Complete {
                key,
                variables: None,
            }),
            Some(ElementState::Completing) => self.continue_completion(key, out),
            Some(ElementState::Terminating) | None => {}
        }
    }

    /// A command produced more records than one batch may hold: the instance is probably
    /// looping without a wait state. Each pending step stops with an incident; resolving it
    /// continues.
    pub(super) fn abort_runaway(&mut self, pending: Vec<Step>, out: &mut Output) {
        let message = format!(
            "Processing stopped after {} records in one batch: the process seems to loop without \
             a wait state. Resolve the incident to continue.",
            self.config.batch_records_max
        );
        for step in pending {
            match step {
                Step::Activate { scope_key, element } => {
                    let Some(scope) = self.state.element_instances.get(&scope_key) else {
                        continue;
                    };
                    let pi = scope.process_instance_key;
                    let Some(definition) = self.definition(scope.process_definition_key) else {
                        continue;
                    };
                    let key = self.state.next_key();
                    let value = Self::instance_value(&definition, pi, scope_key, element);
                    self.write_event(
                        key,
                        Intent::ElementActivating,
                        RecordValue::ProcessInstance(value),
                        out,
                    );
                    self.raise_incident(key, ErrorType::Unknown, message.clone(), -1, out);
                }
                Step::Complete { key, .. } => {
                    if self.state.element_instances.contains_key(&key) {
                        self.raise_incident(key, ErrorType::Unknown, message.clone(), -1, out);
                    }
                }
            }
        }
    }

    // ---------------------------------------------------------------- timers

    pub(super) fn trigger_timer(&mut self, command: &Record, out: &mut Output) {
        if self.reject_foreign_key(command, None, "trigger timer", command.key, out) {
            return;
        }
        let Some(timer) = self.state.timers.get(&command.key) else {
            let reason = format!(
                "Expected to trigger timer with key '{}', but no such timer was found",
                command.key
            );
            self.reject(command, None, RejectionType::NotFound, reason, out);
            return;
        };
        // Only the clock fires a timer, and only once it is due.
        if timer.value.due_date > self.now_ms {
            let reason = format!(
                "Expected to trigger timer with key '{}' once due, but it is due only at {} ms \
                 (now is {} ms)",
                command.key, timer.value.due_date, self.now_ms
            );
            self.reject(command, None, RejectionType::InvalidState, reason, out);
            return;
        }
        let value = timer.value.clone();
        self.write_event(
            command.key,
            Intent::Triggered,
            RecordValue::Timer(value.clone()),
            out,
        );
        if value.element_instance_key < 0 {
            self.fire_start_timer(&value, out);
            return;
        }
        let Some((instance, definition)) = self.instance_definition(value.element_instance_key)
        else {
            return;
        };
        let Some(target) = definition.model.element_index(&value.target_element_id) else {
            return;
        };
        if target == instance.element {
            // An intermediate timer catch event.
            self.steps.push_back(Step::Complete {
                key: value.element_instance_key,
                variables: None,
            });
        } else {
            self.trigger_boundary(value.element_instance_key, target, out);
        }
    }

    /// A timer start event fired: start an instance and re-arm a cycle.
    fn fire_start_timer(&mut self, value: &TimerValue, out: &mut Output) {
        let Some(definition) = self.definition(value.process_definition_key) else {
            return;
        };
        let Some(start) = definition.model.element_index(&value.target_element_id) else {
            return;
        };
        self.start_instance(&definition, start, serde_json::Map::new(), out);
        let remaining = if value.repetitions < 0 {
            -1
        } else {
            value.repetitions - 1
        };
        if remaining != 0
            && let Ok(cycle) = crate::time::parse_cycle(&value.interval)
        {
            let next = TimerValue {
                due_date: cycle.interval.add_to(value.due_date),
                repetitions: remaining,
                ..value.clone()
            };
            let key = self.state.next_key();
            self.write_event(key, Intent::Created, RecordValue::Timer(next), out);
        }
    }

    // ---------------------------------------------------------------- variables

    /// Sets a variable on exactly this scope (created or updated).
    pub(super) fn set_variable(
        &mut self,
        scope_key: Key,
        name: &str,
        value: &Value,
        out: &mut Output,
    ) {
        let existing = self
            .state
            .variables
            .get(&scope_key)
            .and_then(|vars| vars.get(name))
            .map(|variable| (variable.key, variable.value == *value));
        let (key, intent) = match existing {
            Some((_, true)) => return,
            Some((key, false)) => (key, Intent::Updated),
            None => (self.state.next_key(), Intent::Created),
        };
        let (pi, definition_key) =
            self.state
                .element_instances
                .get(&scope_key)
                .map_or((scope_key, -1), |instance| {
                    (
                        instance.process_instance_key,
                        instance.process_definition_key,
                    )
                });
        let bpmn_process_id = self
            .state
            .process(definition_key)
            .map(|process| process.bpmn_process_id.to_string())
            .unwrap_or_default();
        let record = VariableValue {
            name: name.to_owned(),
            value: value.to_string().into(),
            scope_key,
            process_instance_key: pi,
            process_definition_key: definition_key,
            bpmn_process_id,
        };
        self.write_event(key, intent, RecordValue::Variable(record), out);
    }

    /// Sets each variable where it already exists, looking outwards from `scope_key`, or on the
    /// process instance when no scope has it.
    pub(super) fn propagate_variables(
        &mut self,
        scope_key: Key,
        variables: serde_json::Map<String, Value>,
        out: &mut Output,
    ) {
        for (name, value) in variables {
            let target = self.propagation_target(scope_key, &name);
            self.set_variable(target, &name, &value, out);
        }
    }

    fn propagation_target(&self, scope_key: Key, name: &str) -> Key {
        let mut scope = scope_key;
        loop {
            if self
                .state
                .variables
                .get(&scope)
                .is_some_and(|vars| vars.contains_key(name))
            {
                return scope;
            }
            match self.state.element_instances.get(&scope) {
                Some(instance) if instance.flow_scope_key >= 0 => scope = instance.flow_scope_key,
                Some(instance) => return instance.key,
                None => return scope,
            }
        }
    }

    /// Writes an output mapping's value to `target` (a name or dotted path), propagated from
    /// `scope_key`.
    fn propagate_path(
        &mut self,
        read_scope: Key,
        scope_key: Key,
        target: &str,
        value: Value,
        out: &mut Output,
    ) -> Result<(), String> {
        let (root, nested) = match target.split_once('.') {
            Some((root, rest)) => (root, Some(rest)),
            None => (target, None),
        };
        let value = match nested {
            None => value,
            Some(path) => {
                let existing = self.state.variable(read_scope, root).cloned();
                merge_path(existing, path, value)
            }
        };
        self.check_variable_value(root, &value)?;
        let destination = if scope_key < 0 {
            read_scope
        } else {
            self.propagation_target(scope_key, root)
        };
        self.set_variable(destination, root, &value, out);
        Ok(())
    }

    /// Applies input mappings: each becomes a local variable of the element instance.
    fn apply_inputs(
        &mut self,
        key: Key,
        inputs: &[Mapping],
        out: &mut Output,
    ) -> Result<(), String> {
        let values = self.evaluate_mappings(key, inputs)?;
        for (target, value) in values {
            let (root, nested) = match target.split_once('.') {
                Some((root, rest)) => (root.to_owned(), Some(rest.to_owned())),
                None => (target.clone(), None),
            };
            let value = match nested {
                None => value,
                Some(path) => {
                    let existing = self
                        .state
                        .variables
                        .get(&key)
                        .and_then(|vars| vars.get(&root))
                        .map(|variable| variable.value.clone());
                    merge_path(existing, &path, value)
                }
            };
            self.check_variable_value(&root, &value)?;
            self.set_variable(key, &root, &value, out);
        }
        Ok(())
    }

    fn evaluate_mappings(
        &self,
        key: Key,
        mappings: &[Mapping],
    ) -> Result<Vec<(String, Value)>, String> {
        mappings
            .iter()
            .map(|mapping| {
                let value = if mapping.source.is_feel() {
                    self.evaluate(&mapping.source, key)?
                } else {
                    Value::String(mapping.source.text.clone())
                };
                self.check_variable_value(&mapping.target, &value)?;
                Ok((mapping.target.clone(), value))
            })
            .collect()
    }

    pub(super) fn update_variables(
        &mut self,
        command: &Record,
        value: &VariableDocumentValue,
        request: Option<RequestId>,
        out: &mut Output,
    ) {
        if self.reject_foreign_key(
            command,
            request,
            "update variables for element",
            value.scope_key,
            out,
        ) {
            return;
        }
        if !self.state.element_instances.contains_key(&value.scope_key) {
            let reason = format!(
                "Expected to update variables for element with key '{}', but no such element was \
                 found",
                value.scope_key
            );
            self.reject(command, request, RejectionType::NotFound, reason, out);
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
        if value.local {
            for (name, variable) in variables {
                self.set_variable(value.scope_key, &name, &variable, out);
            }
        } else {
            self.propagate_variables(value.scope_key, variables, out);
        }
        let key = self.state.next_key();
        self.write_event_and_respond(
            key,
            Intent::Updated,
            RecordValue::VariableDocument(value.clone()),
            request,
            out,
        );
    }

    /// The current value of a job as a record value; `None` when there is no such job.
    pub(super) fn job_value(&self, job_key: Key) -> Option<JobValue> {
        let job = self.state.jobs.get(&job_key)?;
        let instance = self.state.element_instances.get(&job.element_instance_key);
        let definition = self.definition(job.process_definition_key);
        let (element_id, headers) = match (instance, &definition) {
            (Some(instance), Some(definition)) => {
                let element = definition.model.element(instance.element);
                let headers = match &element.kind {
                    ElementKind::ServiceTask { headers, .. } => headers
                        .iter()
                        .map(|(key, value)| crate::record::Header {
                            key: key.clone(),
                            value: value.clone(),
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                (element.id.clone(), headers)
            }
            _ => (String::new(), Vec::new()),
        };
        Some(JobValue {
            job_type: job.job_type.to_string(),
            retries: job.retries,
            deadline: job.deadline_ms,
            worker: job.worker.clone(),
            custom_headers: headers,
            variables: crate::record::Text::default(),
            error_code: String::new(),
            error_message: job.error_message.clone(),
            retry_backoff: 0,
            recurring_time: job.recurring_time_ms,
            timeout: 0,
            process_instance_key: job.process_instance_key,
            element_instance_key: job.element_instance_key,
            element_id,
            bpmn_process_id: definition
                .as_ref()
                .map(|d| d.bpmn_process_id.to_string())
                .unwrap_or_default(),
            process_definition_key: job.process_definition_key,
            process_definition_version: definition.as_ref().map_or(0, |d| d.version),
        })
    }

    /// Whether a process subscription of `key` is waiting for an acknowledgement.
    #[allow(dead_code)]
    fn subscription_pending(&self, key: Key) -> bool {
        self.state
            .process_subscriptions
            .get(&key)
            .is_some_and(|s| s.state != ProcessSubscriptionState::Opened)
    }
}

/// The live children of the element instance `key` (none when it is not live).
fn instance_children(state: &crate::state::State, key: Key) -> Vec<Key> {
    state
        .element_instances
        .get(&key)
        .map(|instance| instance.children.clone())
        .unwrap_or_default()
}

/// Sets `path` (dotted) inside `existing` (made an object when it is not one) to `value`.
fn merge_path(existing: Option<Value>, path: &str, value: Value) -> Value {
    let mut root = match existing {
        Some(Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    match path.split_once('.') {
        None => {
            root.insert(path.to_owned(), value);
        }
        Some((head, rest)) => {
            let inner = root.remove(head);
            root.insert(head.to_owned(), merge_path(inner, rest, value));
        }
    }
    Value::Object(root)
}

/// The answer to a creation awaiting the result of instance `key`, which completed with
/// `bytes` bytes of variables, more than the `bytes_max` an answer may carry.
fn result_too_large(key: Key, bytes: usize, bytes_max: usize) -> Record {
    Record {
        record_type: RecordType::CommandRejection,
        rejection: Some(crate::record::Rejection {
            rejection_type: RejectionType::ExceededBatchRecordSize,
            reason: format!(
                "Expected to return the result of process instance '{key}', which completed, but \
                 its variables take {bytes} bytes as JSON, more than the {bytes_max} bytes an \
                 answer may carry (the broker's network.maxMessageSize); fetch fewer variables \
                 (fetchVariables), or create the instance without awaiting its result"
            ),
        }),
        ..Record::command_for(
            key,
            Intent::CreateWithAwaitingResult,
            RecordValue::ProcessInstanceCreation(ProcessInstanceCreationValue::default()),
        )
    }
}
