//! The executable model of a BPMN process: what the parser (`crate::bpmn`) produces and the
//! processors walk.
//!
//! Elements and sequence flows live in flat vectors and refer to each other by index, so an
//! element instance in the state names its element with a `u32` rather than a string. Element 0
//! is always the process itself.

/// Index of an element in [`Process::elements`].
pub type ElementIndex = u32;
/// Index of a sequence flow in [`Process::flows`].
pub type FlowIndex = u32;

/// An expression as written in the XML: `=` followed by FEEL, or a static value.
#[derive(Debug, Clone, PartialEq)]
pub struct Expression {
    /// The attribute's text exactly as written (including a leading `=`).
    pub text: String,
    /// The parsed FEEL expression when `text` starts with `=`; filled by
    /// [`Process::compile_expressions`].
    pub feel: Option<crate::feel::Expression>,
}

impl Expression {
    #[must_use]
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            feel: None,
        }
    }

    /// Whether the text is a FEEL expression (starts with `=`).
    #[must_use]
    pub fn is_feel(&self) -> bool {
        self.text.trim_start().starts_with('=')
    }

    /// The text when it is a static value.
    #[must_use]
    pub fn static_text(&self) -> Option<&str> {
        (!self.is_feel()).then_some(self.text.as_str())
    }
}

/// One executable process of a deployed resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Process {
    /// The `id` attribute of `bpmn:process`.
    pub bpmn_process_id: String,
    pub name: Option<String>,
    /// Element 0 is the process itself ([`ElementKind::Process`]).
    pub elements: Vec<Element>,
    pub flows: Vec<SequenceFlow>,
}

/// A flow node, the process, or an embedded subprocess.
#[derive(Debug, Clone, PartialEq)]
pub struct Element {
    /// The `id` attribute.
    pub id: String,
    pub name: Option<String>,
    pub kind: ElementKind,
    /// The flow scope that contains this element (the process or a subprocess); `None` for the
    /// process. A boundary event's scope is the scope of the activity it is attached to.
    pub parent: Option<ElementIndex>,
    pub incoming: Vec<FlowIndex>,
    pub outgoing: Vec<FlowIndex>,
    /// `zeebe:ioMapping` inputs, applied in order when the element is activated.
    pub inputs: Vec<Mapping>,
    /// `zeebe:ioMapping` outputs, applied in order when the element completes.
    pub outputs: Vec<Mapping>,
    /// Boundary events attached to this activity, in document order.
    pub boundary_events: Vec<ElementIndex>,
}

/// `<zeebe:input source="=expr" target="path"/>` (or output).
#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    pub source: Expression,
    /// A variable name, or a dotted path (`a.b`) into a context variable.
    pub target: String,
}

/// What kind of element, with what it needs to run.
#[derive(Debug, Clone, PartialEq)]
pub enum ElementKind {
    /// The process (element 0). Its start events are among its children.
    Process {
        /// The none start event, if any (an instance created by command starts here).
        none_start: Option<ElementIndex>,
        /// Message start events.
        message_starts: Vec<ElementIndex>,
        /// Timer start events.
        timer_starts: Vec<ElementIndex>,
    },
    /// An embedded subprocess; starts at its none start event.
    SubProcess {
        start: ElementIndex,
    },
    StartEvent {
        trigger: EventTrigger,
    },
    /// A none end event (`error: None`) or an error end event.
    EndEvent {
        error: Option<ErrorRef>,
    },
    ServiceTask {
        /// `zeebe:taskDefinition type`.
        job_type: Expression,
        /// `zeebe:taskDefinition retries` (default `"3"`).
        retries: Expression,
        /// `zeebe:taskHeaders`, in document order.
        headers: Vec<(String, String)>,
    },
    ReceiveTask {
        message: MessageRef,
    },
    ExclusiveGateway {
        default_flow: Option<FlowIndex>,
    },
    ParallelGateway,
    IntermediateCatchEvent {
        trigger: EventTrigger,
    },
    BoundaryEvent {
        attached_to: ElementIndex,
        /// `cancelActivity` (only interrupting boundary events are supported; the parser
        /// rejects non-interrupting ones).
        interrupting: bool,
        trigger: EventTrigger,
    },
}

/// The event definition of a start, catch or boundary event.
#[derive(Debug, Clone, PartialEq)]
pub enum EventTrigger {
    None,
    Message(MessageRef),
    Timer(TimerDefinition),
    /// An error event definition; `None` catches every error (no `errorRef`).
    Error(Option<ErrorRef>),
}

/// A `bpmn:message` with its `zeebe:subscription`.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageRef {
    /// The message's `name` attribute (static or `=` expression).
    pub name: Expression,
    /// `zeebe:subscription correlationKey`; absent on message start events.
    pub correlation_key: Option<Expression>,
}

/// A `bpmn:error`.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorRef {
    /// The `errorCode` attribute.
    pub code: String,
}

/// `timeDuration`, `timeDate` or `timeCycle`.
#[derive(Debug, Clone, PartialEq)]
pub enum TimerDefinition {
    Duration(Expression),
    Date(Expression),
    Cycle(Expression),
}

/// A sequence flow.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceFlow {
    pub id: String,
    pub source: ElementIndex,
    pub target: ElementIndex,
    /// `conditionExpression` (only meaningful out of an exclusive gateway).
    pub condition: Option<Expression>,
}

impl Process {
    /// The element with this index.
    #[must_use]
    pub fn element(&self, index: ElementIndex) -> &Element {
        &self.elements[index as usize]
    }

    /// The flow with this index.
    #[must_use]
    pub fn flow(&self, index: FlowIndex) -> &SequenceFlow {
        &self.flows[index as usize]
    }

    /// The index of the element with this `id`.
    #[must_use]
    pub fn element_index(&self, id: &str) -> Option<ElementIndex> {
        self.elements
            .iter()
            .position(|element| element.id == id)
            .and_then(|index| u32::try_from(index).ok())
    }

    /// Every expression of the process, mutably, with the element or flow id it belongs to.
    pub fn expressions_mut(&mut self) -> Vec<(&str, &mut Expression)> {
        let mut all = Vec::new();
        for element in &mut self.elements {
            let id = element.id.as_str();
            for mapping in element.inputs.iter_mut().chain(element.outputs.iter_mut()) {
                all.push((id, &mut mapping.source));
            }
            match &mut element.kind {
                ElementKind::ServiceTask {
                    job_type, retries, ..
                } => {
                    all.push((id, job_type));
                    all.push((id, retries));
                }
                ElementKind::ReceiveTask { message } => push_message(&mut all, id, message),
                ElementKind::StartEvent { trigger }
                | ElementKind::IntermediateCatchEvent { trigger }
                | ElementKind::BoundaryEvent { trigger, .. } => match trigger {
                    EventTrigger::Message(message) => push_message(&mut all, id, message),
                    EventTrigger::Timer(
                        TimerDefinition::Duration(expression)
                        | TimerDefinition::Date(expression)
                        | TimerDefinition::Cycle(expression),
                    ) => all.push((id, expression)),
                    EventTrigger::None | EventTrigger::Error(_) => {}
                },
                ElementKind::Process { .. }
                | ElementKind::SubProcess { .. }
                | ElementKind::EndEvent { .. }
                | ElementKind::ExclusiveGateway { .. }
                | ElementKind::ParallelGateway => {}
            }
        }
        for flow in &mut self.flows {
            if let Some(condition) = &mut flow.condition {
                all.push((flow.id.as_str(), condition));
            }
        }
        all
    }

    /// Parses every `=` expression of the process. Errors name the element and the expression.
    pub fn compile_expressions(&mut self) -> Result<(), String> {
        for (id, expression) in self.expressions_mut() {
            if !expression.is_feel() {
                continue;
            }
            let source = expression.text.trim_start().trim_start_matches('=');
            match crate::feel::parse(source) {
                Ok(parsed) => expression.feel = Some(parsed),
                Err(error) => {
                    return Err(format!(
                        "element '{id}': invalid expression '{}': {error}",
                        expression.text
                    ));
                }
            }
        }
        Ok(())
    }
}

fn push_message<'a>(
    all: &mut Vec<(&'a str, &'a mut Expression)>,
    id: &'a str,
    message: &'a mut MessageRef,
) {
    all.push((id, &mut message.name));
    if let Some(key) = &mut message.correlation_key {
        all.push((id, key));
    }
}
