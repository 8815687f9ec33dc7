//! Builds one [`Process`] from a `bpmn:process` node of the element tree.
//!
//! Four passes: collect the flow nodes of every scope (pre-order, so a subprocess's elements
//! follow it), connect the sequence flows, give every element its kind (resolving messages,
//! errors, timers and attachments), then check the scopes' start events and the flows'
//! conditions.

use std::collections::HashMap;

use crate::model::{
    Element, ElementIndex, ElementKind, ErrorRef, EventTrigger, Expression, FlowIndex, Mapping,
    MessageRef, Process, SequenceFlow, TimerDefinition,
};

use super::xml::{Document, Namespace, NodeId};
use super::{BpmnError, Definitions};

/// Flow nodes the engine runs.
const SUPPORTED: &[&str] = &[
    "startEvent",
    "endEvent",
    "serviceTask",
    "receiveTask",
    "exclusiveGateway",
    "parallelGateway",
    "intermediateCatchEvent",
    "boundaryEvent",
    "subProcess",
];

/// BPMN children of a scope that do not affect execution.
const IGNORED_IN_SCOPE: &[&str] = &[
    "documentation",
    "extensionElements",
    "laneSet",
    "textAnnotation",
    "association",
    "group",
    "dataObject",
    "dataObjectReference",
    "dataStoreReference",
    "property",
    "ioSpecification",
    // Children of a subprocess that describe the subprocess itself.
    "incoming",
    "outgoing",
    "dataInputAssociation",
    "dataOutputAssociation",
    // Rejected with a specific message when the element is resolved.
    "multiInstanceLoopCharacteristics",
    "standardLoopCharacteristics",
];

const SUPPORTED_HINT: &str = "use a service task, receive task, exclusive or parallel gateway, \
                              embedded subprocess, or a start, end, intermediate catch or \
                              boundary event";

/// Builds the process of `process_node`.
pub(super) fn build(
    document: &Document,
    definitions: &Definitions,
    process_node: NodeId,
) -> Result<Process, BpmnError> {
    let node = document.node(process_node);
    let Some(process_id) = node.attribute("id").filter(|id| !id.trim().is_empty()) else {
        return Err(BpmnError::new(format!(
            "a <bpmn:process> (line {}) has no id; set the process id",
            node.line
        )));
    };
    let mut builder = Builder {
        document,
        definitions,
        process_id,
        elements: vec![Element {
            id: process_id.to_owned(),
            name: node.attribute("name").map(str::to_owned),
            kind: ElementKind::Process {
                none_start: None,
                message_starts: Vec::new(),
                timer_starts: Vec::new(),
            },
            parent: None,
            incoming: Vec::new(),
            outgoing: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            boundary_events: Vec::new(),
        }],
        element_nodes: vec![process_node],
        flow_nodes: Vec::new(),
        flows: Vec::new(),
        index_by_id: HashMap::new(),
    };
    builder.collect_scope(process_node, 0)?;
    builder.connect_flows()?;
    for index in 1..builder.elements.len() {
        builder.resolve_element(index)?;
    }
    builder.check_scopes()?;
    builder.check_flows()?;
    Ok(Process {
        bpmn_process_id: process_id.to_owned(),
        name: node.attribute("name").map(str::to_owned),
        elements: builder.elements,
        flows: builder.flows,
    })
}

struct Builder<'d> {
    document: &'d Document,
    definitions: &'d Definitions,
    process_id: &'d str,
    elements: Vec<Element>,
    /// The tree node of each element (same index).
    element_nodes: Vec<NodeId>,
    /// Each `sequenceFlow` node with the scope it is declared in.
    flow_nodes: Vec<(NodeId, ElementIndex)>,
    flows: Vec<crate::model::SequenceFlow>,
    /// Flow nodes (not the process) by id.
    index_by_id: HashMap<&'d str, ElementIndex>,
}

impl<'d> Builder<'d> {
    /// `element 'Task_1' of type 'serviceTask'`, for error messages.
    fn describe(&self, node: NodeId) -> String {
        let node = self.document.node(node);
        match node.attribute("id") {
            Some(id) => format!("element '{id}' of type '{}'", node.name),
            None => format!(
                "an element of type '{}' without id (line {})",
                node.name, node.line
            ),
        }
    }

    fn describe_element(&self, index: usize) -> String {
        self.describe(self.element_nodes[index])
    }

    fn collect_scope(&mut self, scope_node: NodeId, scope: ElementIndex) -> Result<(), BpmnError> {
        let document = self.document;
        for child in document.children_in(scope_node, Namespace::Bpmn) {
            let node = document.node(child);
            let name = node.name.as_str();
            if name == "sequenceFlow" {
                self.flow_nodes.push((child, scope));
            } else if name == "subProcess" {
                if node.attribute("triggeredByEvent") == Some("true") {
                    return Err(BpmnError::new(format!(
                        "{} is an event subprocess (triggeredByEvent=\"true\"), which is not \
                         supported; use an embedded subprocess with boundary events instead",
                        self.describe(child)
                    )));
                }
                let index = self.add_element(child, scope)?;
                self.collect_scope(child, index)?;
            } else if SUPPORTED.contains(&name) {
                self.add_element(child, scope)?;
            } else if !IGNORED_IN_SCOPE.contains(&name) {
                return Err(BpmnError::new(format!(
                    "{} is not supported; {SUPPORTED_HINT}",
                    self.describe(child)
                )));
            }
        }
        Ok(())
    }

    fn add_element(
        &mut self,
        node_id: NodeId,
        scope: ElementIndex,
    ) -> Result<ElementIndex, BpmnError> {
        let node = self.document.node(node_id);
        let Some(id) = node.attribute("id").filter(|id| !id.trim().is_empty()) else {
            return Err(BpmnError::new(format!(
                "a '{}' element (line {}) in process '{}' has no id; give it an id",
                node.name, node.line, self.process_id
            )));
        };
        let index = to_index(self.elements.len())?;
        self.index_by_id.insert(id, index);
        self.element_nodes.push(node_id);
        self.elements.push(Element {
            id: id.to_owned(),
            name: node.attribute("name").map(str::to_owned),
            // Placeholder until `resolve_element`, which needs every element and flow.
            kind: ElementKind::ParallelGateway,
            parent: Some(scope),
            incoming: Vec::new(),
            outgoing: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            boundary_events: Vec::new(),
        });
        Ok(index)
    }

    fn connect_flows(&mut self) -> Result<(), BpmnError> {
        for &(node_id, scope) in &self.flow_nodes {
            let node = self.document.node(node_id);
            let Some(id) = node.attribute("id").filter(|id| !id.trim().is_empty()) else {
                return Err(BpmnError::new(format!(
                    "a sequence flow (line {}) in process '{}' has no id; give it an id",
                    node.line, self.process_id
                )));
            };
            let source = self.flow_end(node_id, id, "sourceRef")?;
            let target = self.flow_end(node_id, id, "targetRef")?;
            for end in [source, target] {
                if self.elements[end as usize].parent != Some(scope) {
                    return Err(BpmnError::new(format!(
                        "sequence flow '{id}' connects '{}' and '{}', which are not both in the \
                         scope the flow is declared in; a sequence flow cannot cross a \
                         subprocess boundary",
                        self.elements[source as usize].id, self.elements[target as usize].id
                    )));
                }
            }
            let condition =
                match self
                    .document
                    .child(node_id, Namespace::Bpmn, "conditionExpression")
                {
                    None => None,
                    Some(expression) => {
                        let text = self.document.node(expression).text.trim();
                        if text.is_empty() {
                            return Err(BpmnError::new(format!(
                                "sequence flow '{id}' has an empty conditionExpression; write a \
                             condition such as '=amount > 100' or remove it"
                            )));
                        }
                        Some(Expression::new(text))
                    }
                };
            let flow_index: FlowIndex = to_index(self.flows.len())?;
            self.flows.push(SequenceFlow {
                id: id.to_owned(),
                source,
                target,
                condition,
            });
            self.elements[source as usize].outgoing.push(flow_index);
            self.elements[target as usize].incoming.push(flow_index);
        }
        Ok(())
    }

    fn flow_end(
        &self,
        node_id: NodeId,
        id: &str,
        attribute: &str,
    ) -> Result<ElementIndex, BpmnError> {
        let node = self.document.node(node_id);
        let Some(reference) = node.attribute(attribute).filter(|r| !r.is_empty()) else {
            return Err(BpmnError::new(format!(
                "sequence flow '{id}' has no {attribute}; connect both of its ends"
            )));
        };
        self.index_by_id.get(reference).copied().ok_or_else(|| {
            BpmnError::new(format!(
                "sequence flow '{id}' has {attribute} '{reference}', which is not a flow node of \
                 process '{}'; connect it to an existing element",
                self.process_id
            ))
        })
    }

    /// Sets the kind, mappings and attachments of the element at `index`.
    fn resolve_element(&mut self, index: usize) -> Result<(), BpmnError> {
        let document = self.document;
        let node_id = self.element_nodes[index];
        let node = document.node(node_id);
        for child in document.children_in(node_id, Namespace::Bpmn) {
            let child_name = document.node(child).name.as_str();
            if child_name == "multiInstanceLoopCharacteristics"
                || child_name == "standardLoopCharacteristics"
            {
                return Err(BpmnError::new(format!(
                    "{} is a multi-instance or loop activity ({child_name}), which is not \
                     supported; remove the loop marker",
                    self.describe(node_id)
                )));
            }
        }
        if node.attribute("isForCompensation") == Some("true") {
            return Err(BpmnError::new(format!(
                "{} is a compensation handler (isForCompensation=\"true\"), which is not \
                 supported",
                self.describe(node_id)
            )));
        }
        if node.name != "exclusiveGateway"
            && let Some(default) = node.attribute("default")
        {
            return Err(BpmnError::new(format!(
                "{} has a default flow '{default}'; default flows are only supported on \
                 exclusive gateways",
                self.describe(node_id)
            )));
        }
        let (inputs, outputs) = self.io_mapping(node_id)?;
        let kind = match node.name.as_str() {
            "startEvent" => self.start_event(index)?,
            "endEvent" => self.end_event(index)?,
            "serviceTask" => self.service_task(node_id)?,
            "receiveTask" => ElementKind::ReceiveTask {
                message: self.message_ref(node_id, node_id, true)?,
            },
            "exclusiveGateway" => self.exclusive_gateway(index)?,
            "parallelGateway" => ElementKind::ParallelGateway,
            "intermediateCatchEvent" => self.intermediate_catch_event(node_id)?,
            "boundaryEvent" => self.boundary_event(index)?,
            // The start event is found by `check_scopes` once every element is resolved.
            "subProcess" => ElementKind::SubProcess { start: 0 },
            other => unreachable!("collect_scope only adds supported elements, not {other}"),
        };
        let element = &mut self.elements[index];
        element.kind = kind;
        element.inputs = inputs;
        element.outputs = outputs;
        Ok(())
    }

    /// The `zeebe:` children of the element's `extensionElements`.
    fn zeebe_extensions(&self, node_id: NodeId) -> impl Iterator<Item = NodeId> + 'd {
        let document = self.document;
        document
            .children_in(node_id, Namespace::Bpmn)
            .filter(move |&child| document.node(child).name == "extensionElements")
            .flat_map(move |extensions| document.children_in(extensions, Namespace::Zeebe))
    }

    fn zeebe_extension(&self, node_id: NodeId, name: &str) -> Option<NodeId> {
        self.zeebe_extensions(node_id)
            .find(|&child| self.document.node(child).name == name)
    }

    fn io_mapping(&self, node_id: NodeId) -> Result<(Vec<Mapping>, Vec<Mapping>), BpmnError> {
        let document = self.document;
        let mut inputs = Vec::new();
        let mut outputs = Vec::new();
        for extension in self.zeebe_extensions(node_id) {
            let extension_name = document.node(extension).name.as_str();
            match extension_name {
                "ioMapping" => {}
                "executionListeners" | "taskListeners" => {
                    return Err(BpmnError::new(format!(
                        "{} has zeebe:{extension_name}, which are not supported; remove them",
                        self.describe(node_id)
                    )));
                }
                _ => continue,
            }
            for mapping in document.children_in(extension, Namespace::Zeebe) {
                let mapping_node = document.node(mapping);
                let list = match mapping_node.name.as_str() {
                    "input" => &mut inputs,
                    "output" => &mut outputs,
                    _ => continue,
                };
                let kind = mapping_node.name.as_str();
                let source = mapping_node.attribute("source").unwrap_or_default();
                let target = mapping_node.attribute("target").unwrap_or_default();
                if source.trim().is_empty() || target.trim().is_empty() {
                    return Err(BpmnError::new(format!(
                        "{} has a zeebe:{kind} mapping without source or target \
                         (source '{source}', target '{target}'); set both",
                        self.describe(node_id)
                    )));
                }
                list.push(Mapping {
                    source: Expression::new(source),
                    target: target.to_owned(),
                });
            }
        }
        Ok((inputs, outputs))
    }

    /// The single event definition of an event, if any.
    fn event_definition(&self, node_id: NodeId) -> Result<Option<NodeId>, BpmnError> {
        let document = self.document;
        let mut found = document
            .children_in(node_id, Namespace::Bpmn)
            .filter(|&child| {
                let name = document.node(child).name.as_str();
                name.ends_with("EventDefinition") || name == "eventDefinitionRef"
            });
        let first = found.next();
        let more = found.count();
        if more > 0 {
            return Err(BpmnError::new(format!(
                "{} has {} event definitions; only one per event is supported",
                self.describe(node_id),
                more + 1
            )));
        }
        Ok(first)
    }

    fn start_event(&self, index: usize) -> Result<ElementKind, BpmnError> {
        let node_id = self.element_nodes[index];
        let definition = self.event_definition(node_id)?;
        let trigger = match definition.map(|d| (d, self.document.node(d).name.as_str())) {
            None => EventTrigger::None,
            Some((definition, "messageEventDefinition")) => {
                EventTrigger::Message(self.message_ref(node_id, definition, false)?)
            }
            Some((definition, "timerEventDefinition")) => {
                EventTrigger::Timer(self.timer(node_id, definition, true)?)
            }
            Some((_, other)) => {
                return Err(BpmnError::new(format!(
                    "{} has a {other}, which is not supported on start events; use a none, \
                     message or timer start event",
                    self.describe(node_id)
                )));
            }
        };
        let scope = self.elements[index].parent.unwrap_or(0);
        if scope != 0 && trigger != EventTrigger::None {
            return Err(BpmnError::new(format!(
                "{} is inside subprocess '{}' but is not a none start event; an embedded \
                 subprocess starts at a single none start event",
                self.describe(node_id),
                self.elements[scope as usize].id
            )));
        }
        if let Some(&flow) = self.elements[index].incoming.first() {
            return Err(BpmnError::new(format!(
                "{} has incoming sequence flow '{}'; a start event cannot have incoming flows",
                self.describe(node_id),
                self.flows[flow as usize].id
            )));
        }
        Ok(ElementKind::StartEvent { trigger })
    }

    fn end_event(&self, index: usize) -> Result<ElementKind, BpmnError> {
        let node_id = self.element_nodes[index];
        if let Some(&flow) = self.elements[index].outgoing.first() {
            return Err(BpmnError::new(format!(
                "{} has outgoing sequence flow '{}'; an end event cannot have outgoing flows",
                self.describe(node_id),
                self.flows[flow as usize].id
            )));
        }
        let definition = self.event_definition(node_id)?;
        match definition.map(|d| (d, self.document.node(d).name.as_str())) {
            None => Ok(ElementKind::EndEvent { error: None }),
            Some((definition, "errorEventDefinition")) => Ok(ElementKind::EndEvent {
                error: self.error_ref(node_id, definition, true)?,
            }),
            Some((_, other)) => Err(BpmnError::new(format!(
                "{} has a {other}, which is not supported on end events; use a none or error \
                 end event",
                self.describe(node_id)
            ))),
        }
    }

    fn service_task(&self, node_id: NodeId) -> Result<ElementKind, BpmnError> {
        let document = self.document;
        let Some(definition) = self.zeebe_extension(node_id, "taskDefinition") else {
            return Err(BpmnError::new(format!(
                "{} has no zeebe:taskDefinition; set the task definition type (the job type \
                 workers subscribe to)",
                self.describe(node_id)
            )));
        };
        let definition = document.node(definition);
        let job_type = definition.attribute("type").unwrap_or_default();
        if job_type.trim().is_empty() {
            return Err(BpmnError::new(format!(
                "{} has an empty job type; set zeebe:taskDefinition type",
                self.describe(node_id)
            )));
        }
        let retries = definition
            .attribute("retries")
            .filter(|retries| !retries.trim().is_empty())
            .unwrap_or("3");
        let mut headers = Vec::new();
        if let Some(task_headers) = self.zeebe_extension(node_id, "taskHeaders") {
            for header in document.children_in(task_headers, Namespace::Zeebe) {
                let header = document.node(header);
                if header.name != "header" {
                    continue;
                }
                let Some(key) = header.attribute("key").filter(|key| !key.is_empty()) else {
                    return Err(BpmnError::new(format!(
                        "{} has a zeebe:header without a key; set the header's key",
                        self.describe(node_id)
                    )));
                };
                let value = header.attribute("value").unwrap_or_default();
                headers.push((key.to_owned(), value.to_owned()));
            }
        }
        Ok(ElementKind::ServiceTask {
            job_type: Expression::new(job_type),
            retries: Expression::new(retries),
            headers,
        })
    }

    fn exclusive_gateway(&self, index: usize) -> Result<ElementKind, BpmnError> {
        let node_id = self.element_nodes[index];
        let element = &self.elements[index];
        let default_flow = match self.document.node(node_id).attribute("default") {
            None => None,
            Some(default) => {
                let found = element
                    .outgoing
                    .iter()
                    .copied()
                    .find(|&flow| self.flows[flow as usize].id == default);
                let Some(flow) = found else {
                    return Err(BpmnError::new(format!(
                        "the default flow '{default}' of {} is not one of its outgoing sequence \
                         flows; pick one of the gateway's outgoing flows as default",
                        self.describe(node_id)
                    )));
                };
                Some(flow)
            }
        };
        if element.outgoing.len() > 1 {
            for &flow in &element.outgoing {
                let flow_ref = &self.flows[flow as usize];
                if flow_ref.condition.is_none() && Some(flow) != default_flow {
                    return Err(BpmnError::new(format!(
                        "sequence flow '{}' leaving {} has no conditionExpression and is not \
                         the gateway's default flow; add a condition or make it the default",
                        flow_ref.id,
                        self.describe(node_id)
                    )));
                }
            }
        }
        Ok(ElementKind::ExclusiveGateway { default_flow })
    }

    fn intermediate_catch_event(&self, node_id: NodeId) -> Result<ElementKind, BpmnError> {
        let definition = self.event_definition(node_id)?;
        let trigger = match definition.map(|d| (d, self.document.node(d).name.as_str())) {
            None => {
                return Err(BpmnError::new(format!(
                    "{} has no event definition; an intermediate catch event needs a message \
                     or timer definition",
                    self.describe(node_id)
                )));
            }
            Some((definition, "messageEventDefinition")) => {
                EventTrigger::Message(self.message_ref(node_id, definition, true)?)
            }
            Some((definition, "timerEventDefinition")) => {
                EventTrigger::Timer(self.timer(node_id, definition, false)?)
            }
            Some((_, other)) => {
                return Err(BpmnError::new(format!(
                    "{} has a {other}, which is not supported on intermediate catch events; \
                     use a message or timer event",
                    self.describe(node_id)
                )));
            }
        };
        Ok(ElementKind::IntermediateCatchEvent { trigger })
    }

    fn boundary_event(&mut self, index: usize) -> Result<ElementKind, BpmnError> {
        let node_id = self.element_nodes[index];
        let node = self.document.node(node_id);
        let describe = self.describe(node_id);
        let Some(attached_id) = node.attribute("attachedToRef").filter(|id| !id.is_empty()) else {
            return Err(BpmnError::new(format!(
                "{describe} has no attachedToRef; attach it to a service task, receive task or \
                 subprocess"
            )));
        };
        let Some(&attached_to) = self.index_by_id.get(attached_id) else {
            return Err(BpmnError::new(format!(
                "{describe} is attached to '{attached_id}', which is not an element of process \
                 '{}'; attach it to a service task, receive task or subprocess",
                self.process_id
            )));
        };
        let attached_node = self.element_nodes[attached_to as usize];
        let attached_type = self.document.node(attached_node).name.as_str();
        if !matches!(attached_type, "serviceTask" | "receiveTask" | "subProcess") {
            return Err(BpmnError::new(format!(
                "{describe} is attached to {}; boundary events can only be attached to service \
                 tasks, receive tasks and subprocesses",
                self.describe(attached_node)
            )));
        }
        if self.elements[attached_to as usize].parent != self.elements[index].parent {
            return Err(BpmnError::new(format!(
                "{describe} is declared in another scope than '{attached_id}', the activity it \
                 is attached to; declare it next to the activity"
            )));
        }
        if let Some(&flow) = self.elements[index].incoming.first() {
            return Err(BpmnError::new(format!(
                "{describe} has incoming sequence flow '{}'; a boundary event cannot have \
                 incoming flows",
                self.flows[flow as usize].id
            )));
        }
        match node.attribute("cancelActivity") {
            None | Some("true") => {}
            Some("false") => {
                return Err(BpmnError::new(format!(
                    "{describe} is non-interrupting (cancelActivity=\"false\"), which is not \
                     supported; make it interrupting"
                )));
            }
            Some(other) => {
                return Err(BpmnError::new(format!(
                    "{describe} has cancelActivity=\"{other}\"; expected \"true\" or \"false\""
                )));
            }
        }
        let definition = self.event_definition(node_id)?;
        let trigger = match definition.map(|d| (d, self.document.node(d).name.as_str())) {
            None => {
                return Err(BpmnError::new(format!(
                    "{describe} has no event definition; a boundary event needs a timer or \
                     error definition"
                )));
            }
            Some((definition, "timerEventDefinition")) => {
                EventTrigger::Timer(self.timer(node_id, definition, false)?)
            }
            Some((definition, "errorEventDefinition")) => {
                EventTrigger::Error(self.error_ref(node_id, definition, false)?)
            }
            Some((_, other)) => {
                return Err(BpmnError::new(format!(
                    "{describe} has a {other}, which is not supported on boundary events; use a \
                     timer or error boundary event"
                )));
            }
        };
        let boundary = to_index(index)?;
        self.elements[attached_to as usize]
            .boundary_events
            .push(boundary);
        Ok(ElementKind::BoundaryEvent {
            attached_to,
            interrupting: true,
            trigger,
        })
    }

    /// The message referenced by `holder`'s `messageRef`, with its correlation key when
    /// `needs_correlation_key` (the key is read from the message's `zeebe:subscription`, or the
    /// element's own).
    fn message_ref(
        &self,
        element: NodeId,
        holder: NodeId,
        needs_correlation_key: bool,
    ) -> Result<MessageRef, BpmnError> {
        let document = self.document;
        let describe = self.describe(element);
        let Some(message_id) = document
            .node(holder)
            .attribute("messageRef")
            .filter(|id| !id.is_empty())
        else {
            return Err(BpmnError::new(format!(
                "{describe} has no message reference; select or create a message (with a name \
                 and a correlation key) for it"
            )));
        };
        let Some(&message) = self.definitions.messages.get(message_id) else {
            return Err(BpmnError::new(format!(
                "{describe} refers to message '{message_id}', which is not defined; add a \
                 <bpmn:message id=\"{message_id}\" name=\"...\"> to the definitions"
            )));
        };
        let name = document.node(message).attribute("name").unwrap_or_default();
        if name.trim().is_empty() {
            return Err(BpmnError::new(format!(
                "message '{message_id}' used by {describe} has no name; set the message name"
            )));
        }
        let correlation_key = if needs_correlation_key {
            let subscription = self
                .zeebe_extension(element, "subscription")
                .or_else(|| self.zeebe_extension(message, "subscription"));
            let key = subscription
                .and_then(|subscription| document.node(subscription).attribute("correlationKey"))
                .unwrap_or_default();
            if key.trim().is_empty() {
                return Err(BpmnError::new(format!(
                    "{describe} has no correlation key; set zeebe:subscription correlationKey on \
                     message '{message_id}' (for example \"=orderId\")"
                )));
            }
            Some(Expression::new(key))
        } else {
            None
        };
        Ok(MessageRef {
            name: Expression::new(name),
            correlation_key,
        })
    }

    fn timer(
        &self,
        element: NodeId,
        definition: NodeId,
        allow_cycle: bool,
    ) -> Result<TimerDefinition, BpmnError> {
        let document = self.document;
        let describe = self.describe(element);
        let found: Vec<NodeId> = document
            .children_in(definition, Namespace::Bpmn)
            .filter(|&child| {
                matches!(
                    document.node(child).name.as_str(),
                    "timeDuration" | "timeDate" | "timeCycle"
                )
            })
            .collect();
        let [value] = found.as_slice() else {
            return Err(BpmnError::new(format!(
                "{describe} has a timer definition with {} of timeDuration, timeDate and \
                 timeCycle; set exactly one",
                found.len()
            )));
        };
        let value = document.node(*value);
        let text = value.text.trim();
        if text.is_empty() {
            return Err(BpmnError::new(format!(
                "{describe} has an empty {}; write a duration such as PT5M, a date such as \
                 2030-01-01T00:00:00Z, or a cycle such as R3/PT1H",
                value.name
            )));
        }
        let expression = Expression::new(text);
        match value.name.as_str() {
            "timeDuration" => Ok(TimerDefinition::Duration(expression)),
            "timeDate" => Ok(TimerDefinition::Date(expression)),
            _ if allow_cycle => Ok(TimerDefinition::Cycle(expression)),
            _ => Err(BpmnError::new(format!(
                "{describe} uses timeCycle, which is only supported on timer start events; use \
                 timeDuration or timeDate"
            ))),
        }
    }

    /// The error of an error event definition; `required` for error end events.
    fn error_ref(
        &self,
        element: NodeId,
        definition: NodeId,
        required: bool,
    ) -> Result<Option<ErrorRef>, BpmnError> {
        let describe = self.describe(element);
        let reference = self
            .document
            .node(definition)
            .attribute("errorRef")
            .filter(|id| !id.is_empty());
        let Some(error_id) = reference else {
            if required {
                return Err(BpmnError::new(format!(
                    "{describe} has no error reference; select or create an error with an \
                     error code"
                )));
            }
            return Ok(None);
        };
        let Some(&error) = self.definitions.errors.get(error_id) else {
            return Err(BpmnError::new(format!(
                "{describe} refers to error '{error_id}', which is not defined; add a \
                 <bpmn:error id=\"{error_id}\" errorCode=\"...\"> to the definitions"
            )));
        };
        let code = self
            .document
            .node(error)
            .attribute("errorCode")
            .unwrap_or_default();
        if code.trim().is_empty() {
            return Err(BpmnError::new(format!(
                "error '{error_id}' used by {describe} has no errorCode; set the error code"
            )));
        }
        Ok(Some(ErrorRef {
            code: code.to_owned(),
        }))
    }

    /// Fills the start events of the process and of every subprocess.
    fn check_scopes(&mut self) -> Result<(), BpmnError> {
        let mut starts: Vec<Vec<ElementIndex>> = vec![Vec::new(); self.elements.len()];
        for (index, element) in self.elements.iter().enumerate().skip(1) {
            if matches!(element.kind, ElementKind::StartEvent { .. }) {
                let scope = element.parent.unwrap_or(0) as usize;
                starts[scope].push(to_index(index)?);
            }
        }
        let mut none_start = None;
        let mut message_starts = Vec::new();
        let mut timer_starts = Vec::new();
        for &start in &starts[0] {
            let ElementKind::StartEvent { trigger } = &self.elements[start as usize].kind else {
                continue;
            };
            match trigger {
                EventTrigger::None => {
                    if let Some(first) = none_start {
                        return Err(BpmnError::new(format!(
                            "process '{}' has more than one none start event ('{}' and '{}'); \
                             keep one, other start events must be message or timer start events",
                            self.process_id,
                            self.elements[first as usize].id,
                            self.elements[start as usize].id
                        )));
                    }
                    none_start = Some(start);
                }
                EventTrigger::Message(message) => {
                    let duplicate = message_starts.iter().find(|&&other: &&ElementIndex| {
                        matches!(
                            &self.elements[other as usize].kind,
                            ElementKind::StartEvent { trigger: EventTrigger::Message(other) }
                                if other.name == message.name
                        )
                    });
                    if let Some(&other) = duplicate {
                        return Err(BpmnError::new(format!(
                            "message start events '{}' and '{}' of process '{}' wait for the \
                             same message '{}'; use different messages",
                            self.elements[other as usize].id,
                            self.elements[start as usize].id,
                            self.process_id,
                            message.name.text
                        )));
                    }
                    message_starts.push(start);
                }
                EventTrigger::Timer(_) => timer_starts.push(start),
                EventTrigger::Error(_) => {}
            }
        }
        if starts[0].is_empty() {
            return Err(BpmnError::new(format!(
                "process '{}' has no start event; add a start event",
                self.process_id
            )));
        }
        self.elements[0].kind = ElementKind::Process {
            none_start,
            message_starts,
            timer_starts,
        };
        for (index, scope_starts) in starts.iter().enumerate().skip(1) {
            if !matches!(self.elements[index].kind, ElementKind::SubProcess { .. }) {
                continue;
            }
            let [start] = scope_starts.as_slice() else {
                let ids: Vec<&str> = scope_starts
                    .iter()
                    .map(|&start| self.elements[start as usize].id.as_str())
                    .collect();
                return Err(BpmnError::new(format!(
                    "{} has {} start events ({}); an embedded subprocess needs exactly one none \
                     start event",
                    self.describe_element(index),
                    ids.len(),
                    if ids.is_empty() {
                        "none".to_owned()
                    } else {
                        ids.join(", ")
                    }
                )));
            };
            self.elements[index].kind = ElementKind::SubProcess { start: *start };
        }
        Ok(())
    }

    /// Conditions only on flows leaving exclusive gateways.
    fn check_flows(&self) -> Result<(), BpmnError> {
        for flow in &self.flows {
            if flow.condition.is_none() {
                continue;
            }
            let source = flow.source as usize;
            if !matches!(
                self.elements[source].kind,
                ElementKind::ExclusiveGateway { .. }
            ) {
                return Err(BpmnError::new(format!(
                    "sequence flow '{}' has a conditionExpression but leaves {}; conditions are \
                     only supported on flows leaving an exclusive gateway (put an exclusive \
                     gateway after the element)",
                    flow.id,
                    self.describe_element(source)
                )));
            }
        }
        Ok(())
    }
}

fn to_index(len: usize) -> Result<u32, BpmnError> {
    u32::try_from(len)
        .map_err(|_| BpmnError::new("the process has more than 2^32 elements or flows"))
}
