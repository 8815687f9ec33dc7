//! The BPMN parser against Camunda Modeler-style files (`testdata/bpmn/`): the exact model for
//! each supported construct, one error per rejection path, and no panic on damaged input.

use std::fmt::Write as _;
use std::path::PathBuf;

use proptest::prelude::*;
use sluice_engine::bpmn::{self, NESTING_DEPTH_MAX, RESOURCE_BYTES_MAX};
use sluice_engine::model::{
    Element, ElementIndex, ElementKind, ErrorRef, EventTrigger, Expression, FlowIndex, Mapping,
    MessageRef, Process, SequenceFlow, TimerDefinition,
};

const VALID_FILES: &[&str] = &[
    "one_task.bpmn",
    "order.bpmn",
    "parallel.bpmn",
    "messages.bpmn",
    "timers.bpmn",
    "errors.bpmn",
    "subprocess.bpmn",
    "message_start.bpmn",
    "task_headers.bpmn",
    "two_processes.bpmn",
];

fn read(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/bpmn")
        .join(name);
    std::fs::read(&path).expect("test file is readable")
}

fn parse_file(name: &str) -> Vec<Process> {
    bpmn::parse(&read(name)).unwrap_or_else(|error| panic!("{name} parses: {error}"))
}

fn single(name: &str) -> Process {
    let mut processes = parse_file(name);
    assert_eq!(processes.len(), 1, "{name} holds one executable process");
    processes.pop().expect("one process")
}

fn expr(text: &str) -> Expression {
    Expression::new(text)
}

fn element(
    id: &str,
    kind: ElementKind,
    parent: ElementIndex,
    incoming: &[FlowIndex],
    outgoing: &[FlowIndex],
) -> Element {
    Element {
        id: id.to_owned(),
        name: None,
        kind,
        parent: Some(parent),
        incoming: incoming.to_vec(),
        outgoing: outgoing.to_vec(),
        inputs: Vec::new(),
        outputs: Vec::new(),
        boundary_events: Vec::new(),
    }
}

fn named(mut element: Element, name: &str) -> Element {
    element.name = Some(name.to_owned());
    element
}

fn process_element(id: &str, name: &str, kind: ElementKind) -> Element {
    Element {
        id: id.to_owned(),
        name: Some(name.to_owned()),
        kind,
        parent: None,
        incoming: Vec::new(),
        outgoing: Vec::new(),
        inputs: Vec::new(),
        outputs: Vec::new(),
        boundary_events: Vec::new(),
    }
}

fn none_started(start: ElementIndex) -> ElementKind {
    ElementKind::Process {
        none_start: Some(start),
        message_starts: Vec::new(),
        timer_starts: Vec::new(),
    }
}

fn flow(id: &str, source: ElementIndex, target: ElementIndex) -> SequenceFlow {
    SequenceFlow {
        id: id.to_owned(),
        source,
        target,
        condition: None,
    }
}

fn conditional(
    id: &str,
    source: ElementIndex,
    target: ElementIndex,
    condition: &str,
) -> SequenceFlow {
    SequenceFlow {
        condition: Some(expr(condition)),
        ..flow(id, source, target)
    }
}

fn service(job_type: &str, retries: &str) -> ElementKind {
    ElementKind::ServiceTask {
        job_type: expr(job_type),
        retries: expr(retries),
        headers: Vec::new(),
    }
}

fn start() -> ElementKind {
    ElementKind::StartEvent {
        trigger: EventTrigger::None,
    }
}

fn end() -> ElementKind {
    ElementKind::EndEvent { error: None }
}

fn error_end(code: &str) -> ElementKind {
    ElementKind::EndEvent {
        error: Some(ErrorRef {
            code: code.to_owned(),
        }),
    }
}

fn mapping(source: &str, target: &str) -> Mapping {
    Mapping {
        source: expr(source),
        target: target.to_owned(),
    }
}

fn timer(definition: TimerDefinition) -> EventTrigger {
    EventTrigger::Timer(definition)
}

/// Asserts element by element first, so a mismatch names the element.
fn assert_process(actual: &Process, expected: &Process) {
    assert_eq!(actual.bpmn_process_id, expected.bpmn_process_id);
    assert_eq!(actual.name, expected.name);
    assert_eq!(
        actual.elements.len(),
        expected.elements.len(),
        "element count of {}",
        expected.bpmn_process_id
    );
    for (actual, expected) in actual.elements.iter().zip(&expected.elements) {
        assert_eq!(actual, expected, "element {}", expected.id);
    }
    for (actual, expected) in actual.flows.iter().zip(&expected.flows) {
        assert_eq!(actual, expected, "flow {}", expected.id);
    }
    assert_eq!(actual, expected);
}

#[test]
fn one_task() {
    let expected = Process {
        bpmn_process_id: "one_task".into(),
        name: Some("One task".into()),
        elements: vec![
            process_element("one_task", "One task", none_started(1)),
            element("start", start(), 0, &[], &[0]),
            named(element("task", service("work", "3"), 0, &[0], &[1]), "Work"),
            element("end", end(), 0, &[1], &[]),
        ],
        flows: vec![flow("to_task", 1, 2), flow("to_end", 2, 3)],
    };
    assert_process(&single("one_task.bpmn"), &expected);
}

#[test]
fn order_with_exclusive_gateway() {
    let expected = Process {
        bpmn_process_id: "order".into(),
        name: Some("Order".into()),
        elements: vec![
            process_element("order", "Order", none_started(1)),
            named(
                element("order_placed", start(), 0, &[], &[0]),
                "Order placed",
            ),
            named(
                element("check_stock", service("check-stock", "3"), 0, &[0], &[1]),
                "Check stock",
            ),
            named(
                element(
                    "route",
                    ElementKind::ExclusiveGateway {
                        default_flow: Some(4),
                    },
                    0,
                    &[1],
                    &[2, 3, 4],
                ),
                "Route order?",
            ),
            named(
                element("review", service("review", "1"), 0, &[2], &[5]),
                "Review",
            ),
            named(
                element("ship_express", service("ship", "3"), 0, &[3], &[6]),
                "Ship express",
            ),
            named(element("ship", service("ship", "3"), 0, &[4], &[7]), "Ship"),
            element(
                "merge",
                ElementKind::ExclusiveGateway { default_flow: None },
                0,
                &[5, 6, 7],
                &[8],
            ),
            named(element("order_done", end(), 0, &[8], &[]), "Order done"),
        ],
        flows: vec![
            flow("Flow_0a1", 1, 2),
            flow("Flow_0a2", 2, 3),
            conditional("to_review", 3, 4, "=total > 1000"),
            conditional(
                "to_express",
                3,
                5,
                "=express = true and total <= 1000 and customer != \"&co\"",
            ),
            flow("to_ship", 3, 6),
            flow("Flow_0b1", 4, 7),
            flow("Flow_0b2", 5, 7),
            flow("Flow_0b3", 6, 7),
            flow("Flow_0c1", 7, 8),
        ],
    };
    assert_process(&single("order.bpmn"), &expected);
}

#[test]
fn parallel_fork_and_join() {
    let expected = Process {
        bpmn_process_id: "parallel".into(),
        name: Some("Parallel".into()),
        elements: vec![
            process_element("parallel", "Parallel", none_started(1)),
            element("start", start(), 0, &[], &[0]),
            element("fork", ElementKind::ParallelGateway, 0, &[0], &[1, 2]),
            named(
                element("charge", service("charge", "3"), 0, &[1], &[3]),
                "Charge",
            ),
            named(element("pack", service("pack", "3"), 0, &[2], &[4]), "Pack"),
            element("join", ElementKind::ParallelGateway, 0, &[3, 4], &[5]),
            element("end", end(), 0, &[5], &[]),
        ],
        flows: vec![
            flow("Flow_1", 1, 2),
            flow("Flow_2", 2, 3),
            flow("Flow_3", 2, 4),
            flow("Flow_4", 3, 5),
            flow("Flow_5", 4, 5),
            flow("Flow_6", 5, 6),
        ],
    };
    assert_process(&single("parallel.bpmn"), &expected);
}

#[test]
fn receive_task_and_message_catch_event() {
    let mut wait_payment = named(
        element(
            "wait_payment",
            ElementKind::ReceiveTask {
                message: MessageRef {
                    name: expr("payment"),
                    correlation_key: Some(expr("=orderId")),
                },
            },
            0,
            &[0],
            &[1],
        ),
        "Wait for payment",
    );
    wait_payment.outputs = vec![mapping("=amount", "paid_amount")];
    let expected = Process {
        bpmn_process_id: "messages".into(),
        name: Some("Messages".into()),
        elements: vec![
            process_element("messages", "Messages", none_started(1)),
            element("start", start(), 0, &[], &[0]),
            wait_payment,
            named(
                element(
                    "wait_shipment",
                    ElementKind::IntermediateCatchEvent {
                        trigger: EventTrigger::Message(MessageRef {
                            name: expr("=\"shipment-\" + region"),
                            correlation_key: Some(expr("=string(orderId)")),
                        }),
                    },
                    0,
                    &[1],
                    &[2],
                ),
                "Shipment confirmed",
            ),
            element("end", end(), 0, &[2], &[]),
        ],
        flows: vec![
            flow("Flow_1", 1, 2),
            flow("Flow_2", 2, 3),
            flow("Flow_3", 3, 4),
        ],
    };
    assert_process(&single("messages.bpmn"), &expected);
}

#[test]
fn timer_start_intermediate_and_boundary() {
    let mut poll = named(element("poll", service("poll", "5"), 0, &[1], &[2]), "Poll");
    poll.boundary_events = vec![5, 6];
    let boundary = |definition| ElementKind::BoundaryEvent {
        attached_to: 3,
        interrupting: true,
        trigger: timer(definition),
    };
    let expected = Process {
        bpmn_process_id: "timers".into(),
        name: Some("Timers".into()),
        elements: vec![
            process_element(
                "timers",
                "Timers",
                ElementKind::Process {
                    none_start: None,
                    message_starts: Vec::new(),
                    timer_starts: vec![1],
                },
            ),
            named(
                element(
                    "every_hour",
                    ElementKind::StartEvent {
                        trigger: timer(TimerDefinition::Cycle(expr("R/PT1H"))),
                    },
                    0,
                    &[],
                    &[0],
                ),
                "Every hour",
            ),
            named(
                element(
                    "settle",
                    ElementKind::IntermediateCatchEvent {
                        trigger: timer(TimerDefinition::Duration(expr("PT5M"))),
                    },
                    0,
                    &[0],
                    &[1],
                ),
                "Wait 5 minutes",
            ),
            poll,
            element("done", end(), 0, &[2], &[]),
            named(
                element(
                    "poll_deadline",
                    boundary(TimerDefinition::Date(expr("=deadline"))),
                    0,
                    &[],
                    &[3],
                ),
                "Deadline",
            ),
            named(
                element(
                    "poll_timeout",
                    boundary(TimerDefinition::Duration(expr("PT1M"))),
                    0,
                    &[],
                    &[4],
                ),
                "Timeout",
            ),
            named(element("late", end(), 0, &[3, 4], &[]), "Late"),
        ],
        flows: vec![
            flow("Flow_1", 1, 2),
            flow("Flow_2", 2, 3),
            flow("Flow_3", 3, 4),
            flow("Flow_4", 5, 7),
            flow("Flow_5", 6, 7),
        ],
    };
    assert_process(&single("timers.bpmn"), &expected);
}

#[test]
fn error_boundary_and_error_end_events() {
    let mut pay = named(
        element("pay", ElementKind::SubProcess { start: 3 }, 0, &[0], &[4]),
        "Pay",
    );
    pay.boundary_events = vec![9];
    let mut charge = named(
        element("charge", service("charge", "3"), 2, &[1], &[2]),
        "Charge card",
    );
    charge.boundary_events = vec![6];
    let expected = Process {
        bpmn_process_id: "payment".into(),
        name: Some("Payment".into()),
        elements: vec![
            process_element("payment", "Payment", none_started(1)),
            element("start", start(), 0, &[], &[0]),
            pay,
            element("pay_start", start(), 2, &[], &[1]),
            charge,
            element("pay_end", end(), 2, &[2], &[]),
            named(
                element(
                    "charge_failed",
                    ElementKind::BoundaryEvent {
                        attached_to: 4,
                        interrupting: true,
                        trigger: EventTrigger::Error(None),
                    },
                    2,
                    &[],
                    &[3],
                ),
                "Any error",
            ),
            named(
                element("declined", error_end("DECLINED"), 2, &[3], &[]),
                "Declined",
            ),
            element("end", end(), 0, &[4], &[]),
            named(
                element(
                    "pay_declined",
                    ElementKind::BoundaryEvent {
                        attached_to: 2,
                        interrupting: true,
                        trigger: EventTrigger::Error(Some(ErrorRef {
                            code: "DECLINED".into(),
                        })),
                    },
                    0,
                    &[],
                    &[5],
                ),
                "Declined",
            ),
            named(
                element("notify", service("notify", "3"), 0, &[5], &[6]),
                "Notify customer",
            ),
            named(
                element("failed", error_end("PAYMENT_FAILED"), 0, &[6], &[]),
                "Payment failed",
            ),
        ],
        flows: vec![
            flow("Flow_1", 1, 2),
            flow("Flow_3", 3, 4),
            flow("Flow_4", 4, 5),
            flow("Flow_5", 6, 7),
            flow("Flow_2", 2, 8),
            flow("Flow_6", 9, 10),
            flow("Flow_7", 10, 11),
        ],
    };
    assert_process(&single("errors.bpmn"), &expected);
}

#[test]
fn nested_subprocesses_with_io_mappings() {
    let mut outer = named(
        element("outer", ElementKind::SubProcess { start: 3 }, 0, &[0], &[5]),
        "Outer",
    );
    outer.inputs = vec![
        mapping("=items", "outer_items"),
        mapping("=customer.address", "shipping.address"),
    ];
    outer.outputs = vec![mapping("=outer_result", "result")];
    outer.boundary_events = vec![10];
    let mut inner_task = named(
        element("inner_task", service("inner-work", "3"), 4, &[2], &[3]),
        "Inner task",
    );
    inner_task.inputs = vec![mapping("=outer_items[1]", "item")];
    let mut inner_end = element("inner_end", end(), 4, &[3], &[]);
    inner_end.outputs = vec![mapping("=\"done\"", "outer_result")];
    let expected = Process {
        bpmn_process_id: "subprocess".into(),
        name: Some("Nested subprocesses".into()),
        elements: vec![
            process_element("subprocess", "Nested subprocesses", none_started(1)),
            element("start", start(), 0, &[], &[0]),
            outer,
            element("outer_start", start(), 2, &[], &[1]),
            named(
                element("inner", ElementKind::SubProcess { start: 5 }, 2, &[1], &[4]),
                "Inner",
            ),
            element("inner_start", start(), 4, &[], &[2]),
            inner_task,
            inner_end,
            element("outer_end", end(), 2, &[4], &[]),
            element("end", end(), 0, &[5], &[]),
            element(
                "outer_timeout",
                ElementKind::BoundaryEvent {
                    attached_to: 2,
                    interrupting: true,
                    trigger: timer(TimerDefinition::Duration(expr("PT1H"))),
                },
                0,
                &[],
                &[6],
            ),
            element("timed_out", end(), 0, &[6], &[]),
        ],
        flows: vec![
            flow("Flow_1", 1, 2),
            flow("Flow_3", 3, 4),
            flow("Flow_5", 5, 6),
            flow("Flow_6", 6, 7),
            flow("Flow_4", 4, 8),
            flow("Flow_2", 2, 9),
            flow("Flow_7", 10, 11),
        ],
    };
    assert_process(&single("subprocess.bpmn"), &expected);
}

#[test]
fn none_message_and_timer_start_events_together() {
    let expected = Process {
        bpmn_process_id: "message_start".into(),
        name: Some("Message start".into()),
        elements: vec![
            process_element(
                "message_start",
                "Message start",
                ElementKind::Process {
                    none_start: Some(1),
                    message_starts: vec![2],
                    timer_starts: vec![3],
                },
            ),
            named(
                element("by_command", start(), 0, &[], &[0]),
                "Started by command",
            ),
            named(
                element(
                    "order_placed",
                    ElementKind::StartEvent {
                        trigger: EventTrigger::Message(MessageRef {
                            name: expr("order-placed"),
                            correlation_key: None,
                        }),
                    },
                    0,
                    &[],
                    &[1],
                ),
                "Order placed",
            ),
            named(
                element(
                    "nightly",
                    ElementKind::StartEvent {
                        trigger: timer(TimerDefinition::Date(expr("2030-01-01T02:00:00Z"))),
                    },
                    0,
                    &[],
                    &[2],
                ),
                "Nightly",
            ),
            named(
                element("handle", service("handle", "3"), 0, &[0, 1, 2], &[3]),
                "Handle",
            ),
            element("end", end(), 0, &[3], &[]),
        ],
        flows: vec![
            flow("Flow_1", 1, 4),
            flow("Flow_2", 2, 4),
            flow("Flow_3", 3, 4),
            flow("Flow_4", 4, 5),
        ],
    };
    assert_process(&single("message_start.bpmn"), &expected);
}

#[test]
fn task_headers_and_expressions_in_task_definition() {
    let mut send_mail = named(
        element(
            "send_mail",
            ElementKind::ServiceTask {
                job_type: expr("=\"mail-\" + channel"),
                retries: expr("=maxRetries"),
                headers: vec![
                    ("template".into(), "welcome & onboarding".into()),
                    ("priority".into(), "high".into()),
                    ("empty".into(), String::new()),
                ],
            },
            0,
            &[0],
            &[1],
        ),
        "Send mail",
    );
    send_mail.inputs = vec![
        mapping("=customer.email", "to"),
        mapping("welcome", "template"),
    ];
    send_mail.outputs = vec![
        mapping("=messageId", "mail.id"),
        mapping("=now()", "mail.sentAt"),
    ];
    let expected = Process {
        bpmn_process_id: "task_headers".into(),
        name: Some("Task headers".into()),
        elements: vec![
            process_element("task_headers", "Task headers", none_started(1)),
            element("start", start(), 0, &[], &[0]),
            send_mail,
            element("end", end(), 0, &[1], &[]),
        ],
        flows: vec![flow("Flow_1", 1, 2), flow("Flow_2", 2, 3)],
    };
    let process = single("task_headers.bpmn");
    assert_process(&process, &expected);
    let ElementKind::ServiceTask { job_type, .. } = &process.element(2).kind else {
        panic!("send_mail is a service task");
    };
    assert!(job_type.feel.is_none(), "the parser does not compile FEEL");
}

#[test]
fn several_processes_only_executable_ones() {
    let processes = parse_file("two_processes.bpmn");
    let ids: Vec<&str> = processes
        .iter()
        .map(|process| process.bpmn_process_id.as_str())
        .collect();
    assert_eq!(ids, ["shop", "warehouse"]);
    assert_eq!(processes[1].elements.len(), 3);
    assert_eq!(processes[1].element_index("warehouse_end"), Some(2));
    assert_eq!(processes[1].flows, vec![flow("Flow_2", 1, 2)]);
}

#[test]
fn every_valid_file_compiles_its_expressions() {
    for name in VALID_FILES {
        for mut process in parse_file(name) {
            // `now()` is rejected by FEEL on purpose; the parser keeps it as written.
            if process.bpmn_process_id == "task_headers" {
                continue;
            }
            process
                .compile_expressions()
                .unwrap_or_else(|error| panic!("{name}: {error}"));
        }
    }
}

#[test]
fn namespace_prefix_does_not_matter() {
    let original = String::from_utf8(read("one_task.bpmn")).expect("UTF-8");
    let expected = bpmn::parse(original.as_bytes()).expect("one_task parses");
    let bpmn2 = original
        .replace("xmlns:bpmn=", "xmlns:bpmn2=")
        .replace("<bpmn:", "<bpmn2:")
        .replace("</bpmn:", "</bpmn2:");
    assert_eq!(bpmn::parse(bpmn2.as_bytes()), Ok(expected.clone()));
    let default = original
        .replace("xmlns:bpmn=", "xmlns=")
        .replace("<bpmn:", "<")
        .replace("</bpmn:", "</");
    assert_eq!(bpmn::parse(default.as_bytes()), Ok(expected.clone()));
    // The same local names in a foreign namespace are not BPMN.
    let foreign = original.replace(
        "http://www.omg.org/spec/BPMN/20100524/MODEL",
        "http://example.com/not-bpmn",
    );
    let error = bpmn::parse(foreign.as_bytes()).expect_err("foreign root is rejected");
    assert!(error.message.contains("root element"), "{error}");
}

#[test]
fn cdata_conditions_and_comments() {
    let xml = wrap(
        r#"<bpmn:startEvent id="s" />
        <!-- a comment -->
        <bpmn:exclusiveGateway id="g" default="f2" />
        <bpmn:endEvent id="e1" />
        <bpmn:endEvent id="e2" />
        <bpmn:sequenceFlow id="f0" sourceRef="s" targetRef="g" />
        <bpmn:sequenceFlow id="f1" sourceRef="g" targetRef="e1">
          <bpmn:conditionExpression xsi:type="bpmn:tFormalExpression"><![CDATA[=a < 3 && b]]></bpmn:conditionExpression>
        </bpmn:sequenceFlow>
        <bpmn:sequenceFlow id="f2" sourceRef="g" targetRef="e2" />"#,
    );
    let process = bpmn::parse(xml.as_bytes())
        .expect("parses")
        .pop()
        .expect("one process");
    assert_eq!(process.flow(1).condition, Some(expr("=a < 3 && b")));
    assert_eq!(
        process.element(2).kind,
        ElementKind::ExclusiveGateway {
            default_flow: Some(2)
        }
    );
}

// ---------------------------------------------------------------------------------------------
// Rejections

const HEADER: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:bpmndi="http://www.omg.org/spec/BPMN/20100524/DI" xmlns:dc="http://www.omg.org/spec/DD/20100524/DC" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" xmlns:di="http://www.omg.org/spec/DD/20100524/DI" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:modeler="http://camunda.org/schema/modeler/1.0" id="Definitions_1" targetNamespace="http://bpmn.io/schema/bpmn" exporter="Camunda Modeler" exporterVersion="5.31.0" modeler:executionPlatform="Camunda Cloud" modeler:executionPlatformVersion="8.6.0">"#;

const DEFINITIONS: &str = r#"
  <bpmn:message id="Message_ok" name="ok">
    <bpmn:extensionElements><zeebe:subscription correlationKey="=id" /></bpmn:extensionElements>
  </bpmn:message>
  <bpmn:message id="Message_no_key" name="no-key" />
  <bpmn:message id="Message_no_name" />
  <bpmn:error id="Error_ok" errorCode="E" />
  <bpmn:error id="Error_no_code" name="no code" />"#;

/// A resource with one executable process holding `body`.
fn wrap(body: &str) -> String {
    format!(
        "{HEADER}\n  <bpmn:process id=\"p\" isExecutable=\"true\">\n{body}\n  </bpmn:process>{DEFINITIONS}\n</bpmn:definitions>\n"
    )
}

/// `body` plus a start event `s` flowing into `first`.
fn started(first: &str, body: &str) -> String {
    wrap(&format!(
        "<bpmn:startEvent id=\"s\" />\n<bpmn:sequenceFlow id=\"f_s\" sourceRef=\"s\" targetRef=\"{first}\" />\n{body}"
    ))
}

fn service_task(id: &str) -> String {
    format!(
        "<bpmn:serviceTask id=\"{id}\"><bpmn:extensionElements><zeebe:taskDefinition type=\"t\" /></bpmn:extensionElements></bpmn:serviceTask>"
    )
}

fn rejection(xml: &[u8]) -> String {
    match bpmn::parse(xml) {
        Ok(processes) => panic!(
            "expected a rejection, parsed {} process(es)",
            processes.len()
        ),
        Err(error) => error.message,
    }
}

#[track_caller]
fn assert_rejected(xml: &str, fragments: &[&str]) {
    let message = rejection(xml.as_bytes());
    for fragment in fragments {
        assert!(
            message.contains(fragment),
            "error {message:?} should contain {fragment:?}"
        );
    }
}

#[test]
fn rejects_user_task_from_file() {
    let message = rejection(&read("reject_user_task.bpmn"));
    assert!(
        message.contains("element 'Task_approve' of type 'userTask' is not supported"),
        "{message}"
    );
}

#[test]
fn rejects_unsupported_element_types() {
    for kind in [
        "userTask",
        "scriptTask",
        "sendTask",
        "businessRuleTask",
        "callActivity",
        "inclusiveGateway",
        "eventBasedGateway",
        "intermediateThrowEvent",
        "complexGateway",
        "manualTask",
        "task",
        "transaction",
        "adHocSubProcess",
    ] {
        let xml = started("x", &format!("<bpmn:{kind} id=\"x\" />"));
        assert_rejected(
            &xml,
            &[&format!("element 'x' of type '{kind}' is not supported")],
        );
    }
}

#[test]
fn rejects_unsupported_event_definitions() {
    let cases = [
        (
            r#"<bpmn:startEvent id="x"><bpmn:signalEventDefinition id="d" /></bpmn:startEvent>"#,
            "startEvent",
            "signalEventDefinition",
        ),
        (
            r#"<bpmn:startEvent id="x"><bpmn:errorEventDefinition id="d" errorRef="Error_ok" /></bpmn:startEvent>"#,
            "startEvent",
            "errorEventDefinition",
        ),
        (
            r#"<bpmn:startEvent id="x"><bpmn:conditionalEventDefinition id="d" /></bpmn:startEvent>"#,
            "startEvent",
            "conditionalEventDefinition",
        ),
        (
            r#"<bpmn:endEvent id="x"><bpmn:terminateEventDefinition id="d" /></bpmn:endEvent>"#,
            "endEvent",
            "terminateEventDefinition",
        ),
        (
            r#"<bpmn:endEvent id="x"><bpmn:messageEventDefinition id="d" messageRef="Message_ok" /></bpmn:endEvent>"#,
            "endEvent",
            "messageEventDefinition",
        ),
        (
            r#"<bpmn:endEvent id="x"><bpmn:escalationEventDefinition id="d" /></bpmn:endEvent>"#,
            "endEvent",
            "escalationEventDefinition",
        ),
        (
            r#"<bpmn:endEvent id="x"><bpmn:compensateEventDefinition id="d" /></bpmn:endEvent>"#,
            "endEvent",
            "compensateEventDefinition",
        ),
        (
            r#"<bpmn:intermediateCatchEvent id="x"><bpmn:linkEventDefinition id="d" name="l" /></bpmn:intermediateCatchEvent>"#,
            "intermediateCatchEvent",
            "linkEventDefinition",
        ),
        (
            r#"<bpmn:intermediateCatchEvent id="x"><bpmn:signalEventDefinition id="d" /></bpmn:intermediateCatchEvent>"#,
            "intermediateCatchEvent",
            "signalEventDefinition",
        ),
    ];
    for (body, kind, definition) in cases {
        let xml = wrap(&format!("<bpmn:startEvent id=\"s0\" />{body}"));
        assert_rejected(
            &xml,
            &[
                &format!("element 'x' of type '{kind}'"),
                definition,
                "not supported",
            ],
        );
    }
}

#[test]
fn rejects_unsupported_boundary_events() {
    let cases = [
        (
            r#"<bpmn:messageEventDefinition id="d" messageRef="Message_ok" />"#,
            "messageEventDefinition",
        ),
        (
            r#"<bpmn:signalEventDefinition id="d" />"#,
            "signalEventDefinition",
        ),
        (
            r#"<bpmn:escalationEventDefinition id="d" />"#,
            "escalationEventDefinition",
        ),
        (
            r#"<bpmn:compensateEventDefinition id="d" />"#,
            "compensateEventDefinition",
        ),
        (
            r#"<bpmn:conditionalEventDefinition id="d" />"#,
            "conditionalEventDefinition",
        ),
        ("", "no event definition"),
    ];
    for (definition, fragment) in cases {
        let xml = started(
            "t",
            &format!(
                "{}<bpmn:boundaryEvent id=\"b\" attachedToRef=\"t\">{definition}</bpmn:boundaryEvent>",
                service_task("t")
            ),
        );
        assert_rejected(&xml, &["element 'b' of type 'boundaryEvent'", fragment]);
    }
}

#[test]
fn rejects_non_interrupting_boundary_event() {
    let xml = started(
        "t",
        &format!(
            r#"{}<bpmn:boundaryEvent id="b" cancelActivity="false" attachedToRef="t"><bpmn:timerEventDefinition id="d"><bpmn:timeDuration>PT1M</bpmn:timeDuration></bpmn:timerEventDefinition></bpmn:boundaryEvent>"#,
            service_task("t")
        ),
    );
    assert_rejected(
        &xml,
        &["element 'b' of type 'boundaryEvent'", "non-interrupting"],
    );
}

#[test]
fn rejects_time_cycle_outside_start_events() {
    let boundary = started(
        "t",
        &format!(
            r#"{}<bpmn:boundaryEvent id="b" attachedToRef="t"><bpmn:timerEventDefinition id="d"><bpmn:timeCycle>R3/PT1M</bpmn:timeCycle></bpmn:timerEventDefinition></bpmn:boundaryEvent>"#,
            service_task("t")
        ),
    );
    assert_rejected(
        &boundary,
        &["element 'b' of type 'boundaryEvent'", "timeCycle"],
    );
    let catch = started(
        "c",
        r#"<bpmn:intermediateCatchEvent id="c"><bpmn:timerEventDefinition id="d"><bpmn:timeCycle>R3/PT1M</bpmn:timeCycle></bpmn:timerEventDefinition></bpmn:intermediateCatchEvent>"#,
    );
    assert_rejected(
        &catch,
        &["element 'c' of type 'intermediateCatchEvent'", "timeCycle"],
    );
}

#[test]
fn rejects_timer_without_exactly_one_time() {
    let none = started(
        "c",
        r#"<bpmn:intermediateCatchEvent id="c"><bpmn:timerEventDefinition id="d" /></bpmn:intermediateCatchEvent>"#,
    );
    assert_rejected(
        &none,
        &[
            "element 'c' of type 'intermediateCatchEvent'",
            "exactly one",
        ],
    );
    let two = wrap(
        r#"<bpmn:startEvent id="s"><bpmn:timerEventDefinition id="d"><bpmn:timeDuration>PT1M</bpmn:timeDuration><bpmn:timeDate>2030-01-01T00:00:00Z</bpmn:timeDate></bpmn:timerEventDefinition></bpmn:startEvent>"#,
    );
    assert_rejected(&two, &["element 's' of type 'startEvent'", "exactly one"]);
    let empty = wrap(
        r#"<bpmn:startEvent id="s"><bpmn:timerEventDefinition id="d"><bpmn:timeDuration>  </bpmn:timeDuration></bpmn:timerEventDefinition></bpmn:startEvent>"#,
    );
    assert_rejected(
        &empty,
        &["element 's' of type 'startEvent'", "empty timeDuration"],
    );
}

#[test]
fn rejects_service_task_without_job_type() {
    let missing = started("t", r#"<bpmn:serviceTask id="t" />"#);
    assert_rejected(
        &missing,
        &["element 't' of type 'serviceTask'", "zeebe:taskDefinition"],
    );
    let empty = started(
        "t",
        r#"<bpmn:serviceTask id="t"><bpmn:extensionElements><zeebe:taskDefinition type=" " /></bpmn:extensionElements></bpmn:serviceTask>"#,
    );
    assert_rejected(
        &empty,
        &["element 't' of type 'serviceTask'", "empty job type"],
    );
}

#[test]
fn rejects_bad_message_references() {
    let no_ref = started("r", r#"<bpmn:receiveTask id="r" />"#);
    assert_rejected(
        &no_ref,
        &["element 'r' of type 'receiveTask'", "no message reference"],
    );
    let unknown = started("r", r#"<bpmn:receiveTask id="r" messageRef="Message_x" />"#);
    assert_rejected(
        &unknown,
        &["element 'r' of type 'receiveTask'", "'Message_x'"],
    );
    let no_key = started(
        "r",
        r#"<bpmn:receiveTask id="r" messageRef="Message_no_key" />"#,
    );
    assert_rejected(
        &no_key,
        &["element 'r' of type 'receiveTask'", "no correlation key"],
    );
    let no_name = started(
        "r",
        r#"<bpmn:receiveTask id="r" messageRef="Message_no_name" />"#,
    );
    assert_rejected(
        &no_name,
        &[
            "message 'Message_no_name'",
            "element 'r' of type 'receiveTask'",
            "no name",
        ],
    );
    let catch_no_ref = started(
        "c",
        r#"<bpmn:intermediateCatchEvent id="c"><bpmn:messageEventDefinition id="d" /></bpmn:intermediateCatchEvent>"#,
    );
    assert_rejected(
        &catch_no_ref,
        &[
            "element 'c' of type 'intermediateCatchEvent'",
            "no message reference",
        ],
    );
    let catch_no_key = started(
        "c",
        r#"<bpmn:intermediateCatchEvent id="c"><bpmn:messageEventDefinition id="d" messageRef="Message_no_key" /></bpmn:intermediateCatchEvent>"#,
    );
    assert_rejected(
        &catch_no_key,
        &[
            "element 'c' of type 'intermediateCatchEvent'",
            "no correlation key",
        ],
    );
    let start_no_name = wrap(
        r#"<bpmn:startEvent id="m"><bpmn:messageEventDefinition id="d" messageRef="Message_no_name" /></bpmn:startEvent>"#,
    );
    assert_rejected(
        &start_no_name,
        &["element 'm' of type 'startEvent'", "no name"],
    );
}

#[test]
fn rejects_flows_to_unknown_elements() {
    let source = wrap(
        r#"<bpmn:startEvent id="s" /><bpmn:endEvent id="e" /><bpmn:sequenceFlow id="f" sourceRef="ghost" targetRef="e" />"#,
    );
    assert_rejected(&source, &["sequence flow 'f'", "sourceRef 'ghost'"]);
    let target = wrap(
        r#"<bpmn:startEvent id="s" /><bpmn:sequenceFlow id="f" sourceRef="s" targetRef="ghost" />"#,
    );
    assert_rejected(&target, &["sequence flow 'f'", "targetRef 'ghost'"]);
    let missing = wrap(r#"<bpmn:startEvent id="s" /><bpmn:sequenceFlow id="f" sourceRef="s" />"#);
    assert_rejected(&missing, &["sequence flow 'f'", "no targetRef"]);
}

#[test]
fn rejects_flow_across_subprocess_boundary() {
    let xml = wrap(
        r#"<bpmn:startEvent id="s" />
        <bpmn:subProcess id="sub"><bpmn:startEvent id="sub_s" /><bpmn:endEvent id="sub_e" /></bpmn:subProcess>
        <bpmn:sequenceFlow id="f" sourceRef="s" targetRef="sub_e" />"#,
    );
    assert_rejected(&xml, &["sequence flow 'f'", "subprocess boundary"]);
}

#[test]
fn rejects_duplicate_ids() {
    let xml = wrap(r#"<bpmn:startEvent id="a" /><bpmn:endEvent id="a" />"#);
    assert_rejected(&xml, &["id 'a' is used twice", "startEvent", "endEvent"]);
}

#[test]
fn rejects_process_without_start_event_or_with_two_none_starts() {
    let none = wrap(r#"<bpmn:endEvent id="e" />"#);
    assert_rejected(&none, &["process 'p' has no start event"]);
    let two = wrap(r#"<bpmn:startEvent id="s1" /><bpmn:startEvent id="s2" />"#);
    assert_rejected(
        &two,
        &[
            "process 'p'",
            "more than one none start event",
            "'s1'",
            "'s2'",
        ],
    );
}

#[test]
fn rejects_default_flow_not_leaving_the_gateway() {
    let xml = wrap(
        r#"<bpmn:startEvent id="s" /><bpmn:exclusiveGateway id="g" default="f0" /><bpmn:endEvent id="e" />
        <bpmn:sequenceFlow id="f0" sourceRef="s" targetRef="g" />
        <bpmn:sequenceFlow id="f1" sourceRef="g" targetRef="e" />"#,
    );
    assert_rejected(
        &xml,
        &[
            "default flow 'f0'",
            "element 'g' of type 'exclusiveGateway'",
        ],
    );
}

#[test]
fn rejects_gateway_flow_without_condition() {
    let xml = wrap(
        r#"<bpmn:startEvent id="s" /><bpmn:exclusiveGateway id="g" /><bpmn:endEvent id="e1" /><bpmn:endEvent id="e2" />
        <bpmn:sequenceFlow id="f0" sourceRef="s" targetRef="g" />
        <bpmn:sequenceFlow id="f1" sourceRef="g" targetRef="e1"><bpmn:conditionExpression>=x</bpmn:conditionExpression></bpmn:sequenceFlow>
        <bpmn:sequenceFlow id="f2" sourceRef="g" targetRef="e2" />"#,
    );
    assert_rejected(
        &xml,
        &[
            "sequence flow 'f2'",
            "element 'g' of type 'exclusiveGateway'",
            "condition",
        ],
    );
}

#[test]
fn rejects_condition_not_leaving_an_exclusive_gateway() {
    let xml = started(
        "t",
        &format!(
            r#"{}<bpmn:endEvent id="e" /><bpmn:sequenceFlow id="f" sourceRef="t" targetRef="e"><bpmn:conditionExpression xsi:type="bpmn:tFormalExpression">=x &gt; 5</bpmn:conditionExpression></bpmn:sequenceFlow>"#,
            service_task("t")
        ),
    );
    assert_rejected(
        &xml,
        &[
            "sequence flow 'f'",
            "element 't' of type 'serviceTask'",
            "exclusive gateway",
        ],
    );
}

#[test]
fn rejects_default_flow_on_a_task() {
    let xml = started(
        "t",
        r#"<bpmn:serviceTask id="t" default="f"><bpmn:extensionElements><zeebe:taskDefinition type="t" /></bpmn:extensionElements></bpmn:serviceTask><bpmn:endEvent id="e" /><bpmn:sequenceFlow id="f" sourceRef="t" targetRef="e" />"#,
    );
    assert_rejected(&xml, &["element 't' of type 'serviceTask'", "default flow"]);
}

#[test]
fn rejects_boundary_event_attachments() {
    let unknown = started(
        "t",
        &format!(
            r#"{}<bpmn:boundaryEvent id="b" attachedToRef="ghost"><bpmn:errorEventDefinition id="d" /></bpmn:boundaryEvent>"#,
            service_task("t")
        ),
    );
    assert_rejected(
        &unknown,
        &["element 'b' of type 'boundaryEvent'", "'ghost'"],
    );
    let gateway = started(
        "g",
        r#"<bpmn:exclusiveGateway id="g" /><bpmn:boundaryEvent id="b" attachedToRef="g"><bpmn:errorEventDefinition id="d" /></bpmn:boundaryEvent>"#,
    );
    assert_rejected(
        &gateway,
        &[
            "element 'b' of type 'boundaryEvent'",
            "element 'g' of type 'exclusiveGateway'",
        ],
    );
    let missing = started(
        "t",
        &format!(
            r#"{}<bpmn:boundaryEvent id="b"><bpmn:errorEventDefinition id="d" /></bpmn:boundaryEvent>"#,
            service_task("t")
        ),
    );
    assert_rejected(
        &missing,
        &["element 'b' of type 'boundaryEvent'", "attachedToRef"],
    );
}

#[test]
fn rejects_bad_error_references() {
    let cases = [
        (
            r#"<bpmn:errorEventDefinition id="d" />"#,
            "no error reference",
        ),
        (
            r#"<bpmn:errorEventDefinition id="d" errorRef="Error_x" />"#,
            "'Error_x'",
        ),
        (
            r#"<bpmn:errorEventDefinition id="d" errorRef="Error_no_code" />"#,
            "no errorCode",
        ),
    ];
    for (definition, fragment) in cases {
        let xml = started(
            "e",
            &format!("<bpmn:endEvent id=\"e\">{definition}</bpmn:endEvent>"),
        );
        assert_rejected(&xml, &["element 'e' of type 'endEvent'", fragment]);
    }
    let boundary = started(
        "t",
        &format!(
            r#"{}<bpmn:boundaryEvent id="b" attachedToRef="t"><bpmn:errorEventDefinition id="d" errorRef="Error_no_code" /></bpmn:boundaryEvent>"#,
            service_task("t")
        ),
    );
    assert_rejected(
        &boundary,
        &["element 'b' of type 'boundaryEvent'", "no errorCode"],
    );
}

#[test]
fn rejects_event_subprocess_and_bad_subprocess_starts() {
    let message = rejection(&read("reject_event_subprocess.bpmn"));
    assert!(
        message.contains("element 'on_cancel' of type 'subProcess'")
            && message.contains("event subprocess"),
        "{message}"
    );
    let no_start = started(
        "sub",
        r#"<bpmn:subProcess id="sub"><bpmn:endEvent id="e" /></bpmn:subProcess>"#,
    );
    assert_rejected(
        &no_start,
        &["element 'sub' of type 'subProcess'", "0 start events"],
    );
    let timer_start = started(
        "sub",
        r#"<bpmn:subProcess id="sub"><bpmn:startEvent id="ts"><bpmn:timerEventDefinition id="d"><bpmn:timeDuration>PT1M</bpmn:timeDuration></bpmn:timerEventDefinition></bpmn:startEvent></bpmn:subProcess>"#,
    );
    assert_rejected(
        &timer_start,
        &[
            "element 'ts' of type 'startEvent'",
            "subprocess 'sub'",
            "none start event",
        ],
    );
    let two_starts = started(
        "sub",
        r#"<bpmn:subProcess id="sub"><bpmn:startEvent id="a" /><bpmn:startEvent id="b" /></bpmn:subProcess>"#,
    );
    assert_rejected(
        &two_starts,
        &[
            "element 'sub' of type 'subProcess'",
            "2 start events (a, b)",
        ],
    );
}

#[test]
fn rejects_loops_and_listeners() {
    let multi = started(
        "t",
        r#"<bpmn:serviceTask id="t"><bpmn:extensionElements><zeebe:taskDefinition type="t" /></bpmn:extensionElements><bpmn:multiInstanceLoopCharacteristics /></bpmn:serviceTask>"#,
    );
    assert_rejected(
        &multi,
        &["element 't' of type 'serviceTask'", "multi-instance"],
    );
    let listeners = started(
        "t",
        r#"<bpmn:serviceTask id="t"><bpmn:extensionElements><zeebe:taskDefinition type="t" /><zeebe:executionListeners><zeebe:executionListener eventType="start" type="l" /></zeebe:executionListeners></bpmn:extensionElements></bpmn:serviceTask>"#,
    );
    assert_rejected(
        &listeners,
        &["element 't' of type 'serviceTask'", "executionListeners"],
    );
}

#[test]
fn rejects_mapping_without_target() {
    let xml = started(
        "t",
        r#"<bpmn:serviceTask id="t"><bpmn:extensionElements><zeebe:taskDefinition type="t" /><zeebe:ioMapping><zeebe:input source="=a" /></zeebe:ioMapping></bpmn:extensionElements></bpmn:serviceTask>"#,
    );
    assert_rejected(&xml, &["element 't' of type 'serviceTask'", "zeebe:input"]);
}

#[test]
fn rejects_flows_into_start_and_out_of_end_events() {
    let into_start = wrap(
        r#"<bpmn:startEvent id="s" /><bpmn:endEvent id="e" /><bpmn:sequenceFlow id="f1" sourceRef="s" targetRef="s" />"#,
    );
    assert_rejected(
        &into_start,
        &["element 's' of type 'startEvent'", "incoming"],
    );
    let out_of_end = wrap(
        r#"<bpmn:startEvent id="s" /><bpmn:endEvent id="e" /><bpmn:sequenceFlow id="f1" sourceRef="e" targetRef="s" />"#,
    );
    // The start event is checked first: it is earlier in the document.
    assert_rejected(
        &out_of_end,
        &[
            "element 's' of type 'startEvent'",
            "incoming sequence flow 'f1'",
        ],
    );
    let out_of_end_only = wrap(
        r#"<bpmn:startEvent id="s" /><bpmn:endEvent id="e" /><bpmn:parallelGateway id="g" /><bpmn:sequenceFlow id="f1" sourceRef="e" targetRef="g" />"#,
    );
    assert_rejected(
        &out_of_end_only,
        &[
            "element 'e' of type 'endEvent'",
            "outgoing sequence flow 'f1'",
        ],
    );
}

#[test]
fn rejects_resources_without_executable_process() {
    let none_executable = format!(
        "{HEADER}<bpmn:process id=\"p\" isExecutable=\"false\"><bpmn:startEvent id=\"s\" /></bpmn:process></bpmn:definitions>"
    );
    assert_rejected(&none_executable, &["isExecutable=\"true\""]);
    let no_process = format!("{HEADER}{DEFINITIONS}</bpmn:definitions>");
    assert_rejected(&no_process, &["no <bpmn:process>"]);
}

#[test]
fn rejects_malformed_xml_with_its_position() {
    let mismatched = wrap("<bpmn:startEvent id=\"s\">\n</bpmn:endEvent>");
    assert_rejected(&mismatched, &["malformed XML at line 5"]);
    let original = read("one_task.bpmn");
    let truncated = &original[..original.len() / 2];
    let message = rejection(truncated);
    assert!(message.contains("malformed XML"), "{message}");
    let garbage = rejection(
        b"<bpmn:definitions xmlns:bpmn=\"http://www.omg.org/spec/BPMN/20100524/MODEL\"><<<",
    );
    assert!(garbage.contains("malformed XML at line 1"), "{garbage}");
    let undeclared = rejection(b"<bpmn:definitions><bpmn:process id=\"p\" /></bpmn:definitions>");
    assert!(
        undeclared.contains("namespace prefix 'bpmn' is not declared"),
        "{undeclared}"
    );
    let two_roots = format!("{HEADER}</bpmn:definitions><bpmn:definitions />");
    assert_rejected(&two_roots, &["second root element"]);
    let text_after = format!("{HEADER}</bpmn:definitions>trailing");
    assert_rejected(&text_after, &["text outside the root element"]);
    let bad_entity = wrap("<bpmn:startEvent id=\"s\" name=\"&nope;\" />");
    assert_rejected(&bad_entity, &["malformed XML"]);
}

#[test]
fn rejects_wrong_root_and_empty_input() {
    let html = rejection(b"<html><body /></html>");
    assert!(html.contains("root element is <html>"), "{html}");
    assert!(rejection(b"").contains("empty"));
    assert!(rejection(b" \n\t ").contains("empty"));
}

#[test]
fn rejects_oversized_resources() {
    let mut xml = wrap("<bpmn:startEvent id=\"s\" />").into_bytes();
    xml.extend(std::iter::repeat_n(b' ', RESOURCE_BYTES_MAX));
    let message = rejection(&xml);
    assert!(
        message.contains(&format!("maximum of {RESOURCE_BYTES_MAX} bytes")),
        "{message}"
    );
}

fn nested_subprocesses(depth: usize) -> String {
    let mut body = String::from("<bpmn:startEvent id=\"s\" />");
    for level in 0..depth {
        write!(
            body,
            "<bpmn:subProcess id=\"sub{level}\"><bpmn:startEvent id=\"start{level}\" />"
        )
        .expect("writing to a String succeeds");
    }
    for _ in 0..depth {
        body.push_str("</bpmn:subProcess>");
    }
    wrap(&body)
}

#[test]
fn bounds_element_nesting() {
    // definitions > process > subprocesses... > start event.
    let deepest = NESTING_DEPTH_MAX - 3;
    let process = bpmn::parse(nested_subprocesses(deepest).as_bytes())
        .expect("nesting within the bound parses")
        .pop()
        .expect("one process");
    assert_eq!(process.elements.len(), 1 + 1 + 2 * deepest);
    let innermost = process.element_index(&format!("start{}", deepest - 1));
    let innermost_sub = process.element_index(&format!("sub{}", deepest - 1));
    assert_eq!(
        process.element(innermost.expect("exists")).parent,
        innermost_sub
    );

    assert_rejected(
        &nested_subprocesses(NESTING_DEPTH_MAX - 2),
        &["nested deeper than 64 levels"],
    );
    let mut deep = String::from(HEADER);
    for _ in 0..100_000 {
        deep.push_str("<a>");
    }
    assert_rejected(&deep, &["nested deeper than 64 levels"]);
}

// ---------------------------------------------------------------------------------------------
// No panics on damaged input

fn valid_files() -> &'static [Vec<u8>] {
    static FILES: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    FILES.get_or_init(|| VALID_FILES.iter().map(|name| read(name)).collect())
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, mask: u8 },
    Set { at: usize, byte: u8 },
    Delete { at: usize, len: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Truncate { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let interesting = prop::sample::select(vec![
        b'<', b'>', b'/', b'"', b'=', b'&', b':', b'!', b'?', 0, 0xff,
    ]);
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        (any::<usize>(), interesting).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        (any::<usize>(), 1..64usize).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

fn apply(xml: &mut Vec<u8>, mutation: &Mutation) {
    if xml.is_empty() {
        return;
    }
    let len = xml.len();
    match mutation {
        Mutation::Flip { at, mask } => xml[at % len] ^= mask,
        Mutation::Set { at, byte } => xml[at % len] = *byte,
        Mutation::Delete { at, len: count } => {
            let start = at % len;
            let end = (start + count).min(len);
            xml.drain(start..end);
        }
        Mutation::Insert { at, bytes } => {
            let at = at % (len + 1);
            xml.splice(at..at, bytes.iter().copied());
        }
        Mutation::Truncate { at } => xml.truncate(at % len),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = bpmn::parse(&bytes);
    }

    #[test]
    fn mutated_files_never_panic(
        file in 0..VALID_FILES.len(),
        mutations in prop::collection::vec(mutation(), 1..8),
    ) {
        let mut xml = valid_files()[file].clone();
        for mutation in &mutations {
            apply(&mut xml, mutation);
        }
        // Ok or Err both fine; a parsed process must still be internally consistent.
        if let Ok(processes) = bpmn::parse(&xml) {
            for process in processes {
                check_indexes(&process);
            }
        }
    }
}

/// Every index in a parsed process points inside it.
fn check_indexes(process: &Process) {
    let elements = process.elements.len();
    let flows = process.flows.len();
    for element in &process.elements {
        assert!(
            element
                .parent
                .is_none_or(|parent| (parent as usize) < elements)
        );
        assert!(element.incoming.iter().all(|&flow| (flow as usize) < flows));
        assert!(element.outgoing.iter().all(|&flow| (flow as usize) < flows));
        assert!(
            element
                .boundary_events
                .iter()
                .all(|&event| (event as usize) < elements)
        );
    }
    for flow in &process.flows {
        assert!((flow.source as usize) < elements && (flow.target as usize) < elements);
    }
}

#[test]
fn rejects_elements_without_id() {
    let xml = started("t", "<bpmn:serviceTask name=\"no id\" />");
    assert_rejected(&xml, &["a 'serviceTask' element (line 6)", "has no id"]);
}
