//! A small harness for the scenario tests of untrusted input: engines of every partition with
//! their logs, cross-partition commands held until delivered, followers rebuilt by replaying a
//! log, and the commands and BPMN the scenarios send.

#![allow(
    dead_code,
    reason = "every test binary compiles this module and uses a different part of it"
)]

use std::collections::VecDeque;

use sluice_engine::record::{
    DeploymentResource, DeploymentValue, JobBatchValue, JobValue, MessageValue,
    ProcessInstanceCreationValue, Rejection, RejectionType,
};
use sluice_engine::snapshot::encode_snapshot;
use sluice_engine::{
    Engine, EngineConfig, Intent, Key, Output, Record, RecordType, RecordValue, SideEffect,
};

pub const START_MS: i64 = 1_700_000_000_000;

/// Engines of partitions `1..=n`, their logs, and the commands on their way between them.
pub struct Cluster {
    pub engines: Vec<Engine>,
    pub logs: Vec<Vec<Record>>,
    pub in_flight: VecDeque<(u32, Record)>,
    pub now_ms: i64,
    next_request: u64,
}

impl Cluster {
    pub fn new(partition_count: u32) -> Self {
        Self::with_config(partition_count, |config| config)
    }

    /// A cluster whose engines' configurations `configure` adjusts.
    pub fn with_config(
        partition_count: u32,
        configure: impl Fn(EngineConfig) -> EngineConfig,
    ) -> Self {
        Self {
            engines: (1..=partition_count)
                .map(|id| Engine::new(configure(EngineConfig::new(id, partition_count))))
                .collect(),
            logs: (1..=partition_count).map(|_| Vec::new()).collect(),
            in_flight: VecDeque::new(),
            now_ms: START_MS,
            next_request: 1,
        }
    }

    fn index(partition_id: u32) -> usize {
        usize::try_from(partition_id - 1).expect("partition index fits usize")
    }

    pub fn engine(&self, partition_id: u32) -> &Engine {
        &self.engines[Self::index(partition_id)]
    }

    /// Processes one command on a partition as a request; returns what it produced. Commands
    /// it sends to other partitions wait in `in_flight`.
    pub fn submit(&mut self, partition_id: u32, command: Record) -> Output {
        let mut out = Output::default();
        let request = self.next_request;
        self.next_request += 1;
        let index = Self::index(partition_id);
        self.engines[index].process(command, Some(request), self.now_ms, &mut out);
        self.absorb(index, &out);
        out
    }

    /// Runs the clock work of every partition at `now_ms`.
    pub fn tick(&mut self) {
        for index in 0..self.engines.len() {
            let mut out = Output::default();
            self.engines[index].tick(self.now_ms, &mut out);
            self.absorb(index, &out);
        }
    }

    fn absorb(&mut self, index: usize, out: &Output) {
        self.logs[index].extend(out.records.iter().cloned());
        for effect in &out.side_effects {
            if let SideEffect::Send {
                partition_id,
                record,
            } = effect
            {
                self.in_flight.push_back((*partition_id, record.clone()));
            }
        }
    }

    /// Delivers cross-partition commands until none is left.
    pub fn deliver_all(&mut self) {
        let mut delivered = 0;
        while let Some((partition_id, record)) = self.in_flight.pop_front() {
            delivered += 1;
            assert!(delivered < 10_000, "cross-partition commands never settle");
            let mut out = Output::default();
            let index = Self::index(partition_id);
            self.engines[index].process(record, None, self.now_ms, &mut out);
            self.absorb(index, &out);
        }
    }

    /// A replica of a partition rebuilt by replaying its log.
    pub fn follower(&self, partition_id: u32) -> Engine {
        let index = Self::index(partition_id);
        let mut follower = Engine::new(self.engines[index].config().clone());
        for record in &self.logs[index] {
            follower.replay(record);
        }
        follower
    }

    /// Checks that a follower that replayed a partition's log has the leader's state, byte for
    /// byte (snapshots are canonical).
    pub fn assert_follower_agrees(&self, partition_id: u32) {
        let follower = self.follower(partition_id);
        assert_eq!(
            encode_snapshot(follower.state()),
            encode_snapshot(self.engine(partition_id).state()),
            "a follower of partition {partition_id} that replayed the log differs from the leader"
        );
    }
}

/// The rejection of an output, if it has one.
pub fn rejection(out: &Output) -> Option<&Rejection> {
    out.records
        .iter()
        .find(|record| record.record_type == RecordType::CommandRejection)
        .and_then(|record| record.rejection.as_ref())
}

/// Asserts that the output is a rejection of this type whose reason contains every `parts`;
/// returns the reason.
pub fn assert_rejected(out: &Output, rejection_type: RejectionType, parts: &[&str]) -> String {
    let Some(rejection) = rejection(out) else {
        panic!(
            "expected a {rejection_type:?} rejection, but got {:#?}",
            out.records
        );
    };
    assert_eq!(
        rejection.rejection_type, rejection_type,
        "rejection: {}",
        rejection.reason
    );
    for part in parts {
        assert!(
            rejection.reason.contains(part),
            "the reason '{}' should mention '{part}'",
            rejection.reason
        );
    }
    assert!(
        out.records
            .iter()
            .all(|record| record.record_type != RecordType::Event),
        "a rejected command wrote events: {:#?}",
        out.records
    );
    rejection.reason.clone()
}

/// The first event of `intent` in an output.
pub fn event(out: &Output, intent: Intent) -> Option<&Record> {
    out.records
        .iter()
        .find(|record| record.record_type == RecordType::Event && record.intent == intent)
}

pub fn deployment(resources: &[(&str, &str)]) -> Record {
    Record::command(
        Intent::Create,
        RecordValue::Deployment(DeploymentValue {
            resources: resources
                .iter()
                .map(|(name, xml)| DeploymentResource {
                    resource_name: (*name).to_owned(),
                    resource: (*xml).into(),
                })
                .collect(),
            processes_metadata: vec![],
        }),
    )
}

pub fn create_instance(bpmn_process_id: &str, variables: &str) -> Record {
    Record::command(
        Intent::Create,
        RecordValue::ProcessInstanceCreation(ProcessInstanceCreationValue {
            bpmn_process_id: bpmn_process_id.into(),
            version: -1,
            process_definition_key: -1,
            variables: variables.into(),
            ..Default::default()
        }),
    )
}

pub fn activate(job_type: &str) -> Record {
    Record::command(
        Intent::Activate,
        RecordValue::JobBatch(JobBatchValue {
            job_type: job_type.into(),
            worker: "w".into(),
            timeout: 60_000,
            max_jobs_to_activate: 10,
            ..Default::default()
        }),
    )
}

/// The keys of the jobs an output activated.
pub fn activated_jobs(out: &Output) -> Vec<Key> {
    out.records
        .iter()
        .filter_map(|record| match &record.value {
            RecordValue::JobBatch(batch) if record.intent == Intent::Activated => {
                Some(batch.job_keys.clone())
            }
            _ => None,
        })
        .flatten()
        .collect()
}

pub fn complete_job(key: Key, variables: &str) -> Record {
    Record::command_for(
        key,
        Intent::Complete,
        RecordValue::Job(JobValue {
            variables: variables.into(),
            ..JobValue::default()
        }),
    )
}

pub fn publish(name: &str, correlation_key: &str, time_to_live: i64, variables: &str) -> Record {
    Record::command(
        Intent::Publish,
        RecordValue::Message(MessageValue {
            name: name.into(),
            correlation_key: correlation_key.into(),
            time_to_live,
            variables: variables.into(),
            ..Default::default()
        }),
    )
}

/// A process `id` of one service task of type `work`, with the given `<zeebe:ioMapping>`
/// children (empty for none).
pub fn service_task_process(id: &str, io_mapping: &str) -> String {
    let extension = if io_mapping.is_empty() {
        String::new()
    } else {
        format!("<zeebe:ioMapping>{io_mapping}</zeebe:ioMapping>")
    };
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="d" targetNamespace="t">
  <bpmn:process id="{id}" isExecutable="true">
    <bpmn:startEvent id="start"><bpmn:outgoing>a</bpmn:outgoing></bpmn:startEvent>
    <bpmn:sequenceFlow id="a" sourceRef="start" targetRef="task" />
    <bpmn:serviceTask id="task">
      <bpmn:extensionElements><zeebe:taskDefinition type="work" />{extension}</bpmn:extensionElements>
      <bpmn:incoming>a</bpmn:incoming><bpmn:outgoing>b</bpmn:outgoing>
    </bpmn:serviceTask>
    <bpmn:sequenceFlow id="b" sourceRef="task" targetRef="end" />
    <bpmn:endEvent id="end"><bpmn:incoming>b</bpmn:incoming></bpmn:endEvent>
  </bpmn:process>
</bpmn:definitions>"#
    )
}

/// A process `id` that waits in a receive task for the message `name` correlated by the
/// variable `key`, then ends.
pub fn receive_task_process(id: &str, name: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="d" targetNamespace="t">
  <bpmn:process id="{id}" isExecutable="true">
    <bpmn:startEvent id="start"><bpmn:outgoing>a</bpmn:outgoing></bpmn:startEvent>
    <bpmn:sequenceFlow id="a" sourceRef="start" targetRef="wait" />
    <bpmn:receiveTask id="wait" messageRef="m">
      <bpmn:incoming>a</bpmn:incoming><bpmn:outgoing>b</bpmn:outgoing>
    </bpmn:receiveTask>
    <bpmn:sequenceFlow id="b" sourceRef="wait" targetRef="end" />
    <bpmn:endEvent id="end"><bpmn:incoming>b</bpmn:incoming></bpmn:endEvent>
  </bpmn:process>
  <bpmn:message id="m" name="{name}">
    <bpmn:extensionElements><zeebe:subscription correlationKey="=key" /></bpmn:extensionElements>
  </bpmn:message>
</bpmn:definitions>"#
    )
}

/// A process `id` whose intermediate timer catch event waits `duration` (ISO-8601).
pub fn timer_process(id: &str, duration: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="d" targetNamespace="t">
  <bpmn:process id="{id}" isExecutable="true">
    <bpmn:startEvent id="start"><bpmn:outgoing>a</bpmn:outgoing></bpmn:startEvent>
    <bpmn:sequenceFlow id="a" sourceRef="start" targetRef="wait" />
    <bpmn:intermediateCatchEvent id="wait">
      <bpmn:incoming>a</bpmn:incoming><bpmn:outgoing>b</bpmn:outgoing>
      <bpmn:timerEventDefinition><bpmn:timeDuration>{duration}</bpmn:timeDuration></bpmn:timerEventDefinition>
    </bpmn:intermediateCatchEvent>
    <bpmn:sequenceFlow id="b" sourceRef="wait" targetRef="end" />
    <bpmn:endEvent id="end"><bpmn:incoming>b</bpmn:incoming></bpmn:endEvent>
  </bpmn:process>
</bpmn:definitions>"#
    )
}
