//! The processes the simulated workload deploys.

/// `one_task`: start → service task of type `work` → end.
pub(crate) const ONE_TASK: &str = include_str!("../../../engine/testdata/bpmn/one_task.bpmn");

/// The process id of [`ONE_TASK`].
pub(crate) const ONE_TASK_ID: &str = "one_task";

/// The job type of [`ONE_TASK`]'s service task.
pub(crate) const JOB_TYPE: &str = "work";

/// The process id of [`WAIT_MESSAGE`].
pub(crate) const WAIT_MESSAGE_ID: &str = "wait_message";

/// The message [`WAIT_MESSAGE`] waits for, correlated by its `key` variable.
pub(crate) const MESSAGE_NAME: &str = "msg";

/// `wait_message`: start → receive task (message `msg`, correlation key `=key`) → end, as the
/// Camunda Modeler writes it. The message usually lives on another partition than the instance,
/// so every instance exercises the cross-partition subscription protocol.
pub(crate) const WAIT_MESSAGE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:bpmndi="http://www.omg.org/spec/BPMN/20100524/DI" xmlns:dc="http://www.omg.org/spec/DD/20100524/DC" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" xmlns:di="http://www.omg.org/spec/DD/20100524/DI" xmlns:modeler="http://camunda.org/schema/modeler/1.0" id="Definitions_sim" targetNamespace="http://bpmn.io/schema/bpmn" exporter="Camunda Modeler" exporterVersion="5.31.0" modeler:executionPlatform="Camunda Cloud" modeler:executionPlatformVersion="8.6.0">
  <bpmn:process id="wait_message" name="Wait for a message" isExecutable="true">
    <bpmn:startEvent id="start">
      <bpmn:outgoing>to_wait</bpmn:outgoing>
    </bpmn:startEvent>
    <bpmn:sequenceFlow id="to_wait" sourceRef="start" targetRef="wait" />
    <bpmn:receiveTask id="wait" name="Wait" messageRef="Message_msg">
      <bpmn:incoming>to_wait</bpmn:incoming>
      <bpmn:outgoing>to_end</bpmn:outgoing>
    </bpmn:receiveTask>
    <bpmn:sequenceFlow id="to_end" sourceRef="wait" targetRef="end" />
    <bpmn:endEvent id="end">
      <bpmn:incoming>to_end</bpmn:incoming>
    </bpmn:endEvent>
  </bpmn:process>
  <bpmn:message id="Message_msg" name="msg">
    <bpmn:extensionElements>
      <zeebe:subscription correlationKey="=key" />
    </bpmn:extensionElements>
  </bpmn:message>
  <bpmndi:BPMNDiagram id="BPMNDiagram_1">
    <bpmndi:BPMNPlane id="BPMNPlane_1" bpmnElement="wait_message">
      <bpmndi:BPMNShape id="start_di" bpmnElement="start">
        <dc:Bounds x="180" y="142" width="36" height="36" />
      </bpmndi:BPMNShape>
      <bpmndi:BPMNShape id="wait_di" bpmnElement="wait">
        <dc:Bounds x="276" y="120" width="100" height="80" />
      </bpmndi:BPMNShape>
      <bpmndi:BPMNShape id="end_di" bpmnElement="end">
        <dc:Bounds x="436" y="142" width="36" height="36" />
      </bpmndi:BPMNShape>
      <bpmndi:BPMNEdge id="to_wait_di" bpmnElement="to_wait">
        <di:waypoint x="216" y="160" />
        <di:waypoint x="276" y="160" />
      </bpmndi:BPMNEdge>
      <bpmndi:BPMNEdge id="to_end_di" bpmnElement="to_end">
        <di:waypoint x="376" y="160" />
        <di:waypoint x="436" y="160" />
      </bpmndi:BPMNEdge>
    </bpmndi:BPMNPlane>
  </bpmndi:BPMNDiagram>
</bpmn:definitions>
"#;
