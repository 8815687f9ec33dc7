//! Deployments: validated and versioned on partition 1, distributed to every other partition
//! with the same keys and versions, re-sent until each acknowledges.
//!
//! A distributed deployment is a command from another partition and is checked like a client's:
//! its key must be partition 1's, its resources must parse and compile, and its metadata must
//! describe exactly those resources, with keys of partition 1 that fit the deployment key and
//! versions that do not contradict what this partition already has. Otherwise it is rejected
//! and not acknowledged.

use super::{Engine, Output, RequestId};
use crate::model::{ElementKind, EventTrigger};
use crate::record::{
    CommandDistributionValue, DeploymentValue, Intent, Key, MessageStartEventSubscriptionValue,
    ProcessMetadata, ProcessValue, Record, RecordValue, RejectionType, TimerValue, ValueType,
    is_possible_key, key_partition,
};

/// The partition that processes client deployments and distributes them.
pub const DEPLOYMENT_PARTITION: u32 = 1;

/// Largest resource accepted: the parser's bound (the gateway's `maxMessageSize` is lower).
pub const RESOURCE_BYTES_MAX: usize = crate::bpmn::RESOURCE_BYTES_MAX;

impl Engine {
    pub(super) fn deploy(
        &mut self,
        command: &Record,
        value: &DeploymentValue,
        request: Option<RequestId>,
        out: &mut Output,
    ) {
        if command.key > 0 && key_partition(command.key) != self.config.partition_id {
            self.receive_distributed_deployment(command, value, out);
            return;
        }
        if self.config.partition_id != DEPLOYMENT_PARTITION {
            let reason = format!(
                "Expected to process deployments on partition {DEPLOYMENT_PARTITION}, but this is \
                 partition {}",
                self.config.partition_id
            );
            self.reject(command, request, RejectionType::InvalidState, reason, out);
            return;
        }
        let parsed = match validate_resources(value) {
            Ok(parsed) => parsed,
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
        let deployment_key = self.state.next_key();
        let mut metadata = Vec::new();
        let mut new_processes = Vec::new();
        for (resource, bpmn_process_id) in parsed {
            let checksum = format!("{:08x}", crc32c::crc32c(resource.resource.as_bytes()));
            let latest = self
                .state
                .latest_process(&bpmn_process_id)
                .map(|process| (process.key, process.version, process.checksum.clone()));
            match latest {
                Some((key, version, existing)) if existing == checksum => {
                    metadata.push(ProcessMetadata {
                        bpmn_process_id,
                        version,
                        process_definition_key: key,
                        resource_name: resource.resource_name.clone(),
                        checksum,
                        duplicate: true,
                    });
                }
                latest => {
                    let version = latest.map_or(1, |(_, version, _)| version + 1);
                    let key = self.state.next_key();
                    metadata.push(ProcessMetadata {
                        bpmn_process_id: bpmn_process_id.clone(),
                        version,
                        process_definition_key: key,
                        resource_name: resource.resource_name.clone(),
                        checksum: checksum.clone(),
                        duplicate: false,
                    });
                    new_processes.push(ProcessValue {
                        bpmn_process_id,
                        version,
                        process_definition_key: key,
                        resource_name: resource.resource_name.clone(),
                        checksum,
                        resource: resource.resource.clone(),
                    });
                }
            }
        }
        for process in &new_processes {
            self.write_event(
                process.process_definition_key,
                Intent::Created,
                RecordValue::Process(process.clone()),
                out,
            );
        }
        let deployment = DeploymentValue {
            resources: value.resources.clone(),
            processes_metadata: metadata,
        };
        let others: Vec<u32> = (1..=self.config.partition_count)
            .filter(|partition| *partition != self.config.partition_id)
            .collect();
        if !others.is_empty() {
            self.write_event(
                deployment_key,
                Intent::Started,
                RecordValue::CommandDistribution(CommandDistributionValue {
                    partition_id: self.config.partition_id,
                    value_type: Some(ValueType::Deployment),
                }),
                out,
            );
            for partition in &others {
                self.write_event(
                    deployment_key,
                    Intent::Distributing,
                    RecordValue::CommandDistribution(CommandDistributionValue {
                        partition_id: *partition,
                        value_type: Some(ValueType::Deployment),
                    }),
                    out,
                );
            }
        }
        self.write_event_and_respond(
            deployment_key,
            Intent::Created,
            RecordValue::Deployment(deployment.clone()),
            request,
            out,
        );
        for partition in others {
            let command = Record::command_for(
                deployment_key,
                Intent::Create,
                RecordValue::Deployment(deployment.clone()),
            );
            self.send(partition, command, out);
        }
        for process in &new_processes {
            self.open_start_events(process.process_definition_key, out);
        }
    }

    /// A deployment distributed from partition 1: create its processes with the same keys and
    /// versions (once), and acknowledge (every time, since the acknowledgement may be lost).
    fn receive_distributed_deployment(
        &mut self,
        command: &Record,
        value: &DeploymentValue,
        out: &mut Output,
    ) {
        let deployment_key = command.key;
        if self.config.partition_id == DEPLOYMENT_PARTITION
            || key_partition(deployment_key) != DEPLOYMENT_PARTITION
            || !is_possible_key(deployment_key)
        {
            let reason = format!(
                "Expected a deployment distributed from partition {DEPLOYMENT_PARTITION} with a \
                 key of that partition, but got key '{deployment_key}' (partition {}) on \
                 partition {}; deploy through the gateway instead",
                key_partition(deployment_key),
                self.config.partition_id
            );
            self.reject(command, None, RejectionType::InvalidArgument, reason, out);
            return;
        }
        if !self.state.deployments.contains(&deployment_key) {
            let processes = match self.check_distributed(deployment_key, value) {
                Ok(processes) => processes,
                Err(problem) => {
                    let reason = format!(
                        "Expected a valid deployment distributed from partition \
                         {DEPLOYMENT_PARTITION} with key '{deployment_key}', but {problem}"
                    );
                    self.reject(command, None, RejectionType::InvalidArgument, reason, out);
                    return;
                }
            };
            let mut created = Vec::new();
            for process in processes {
                self.write_event(
                    process.process_definition_key,
                    Intent::Created,
                    RecordValue::Process(process.clone()),
                    out,
                );
                created.push(process.process_definition_key);
            }
            self.write_event(
                deployment_key,
                Intent::Created,
                RecordValue::Deployment(value.clone()),
                out,
            );
            for key in created {
                self.open_start_events(key, out);
            }
        }
        let ack = Record::command_for(
            deployment_key,
            Intent::Acknowledge,
            RecordValue::CommandDistribution(CommandDistributionValue {
                partition_id: self.config.partition_id,
                value_type: Some(ValueType::Deployment),
            }),
        );
        self.send(key_partition(deployment_key), ack, out);
    }

    /// Checks a distributed deployment that this partition has not seen: the resources as a
    /// client's deployment, the metadata against them. Returns the processes to create (those
    /// whose keys this partition does not have yet), in metadata order.
    fn check_distributed(
        &self,
        deployment_key: Key,
        value: &DeploymentValue,
    ) -> Result<Vec<ProcessValue>, String> {
        let parsed = validate_resources(value)?;
        if value.processes_metadata.len() != parsed.len() {
            return Err(format!(
                "its resources hold {} processes and its metadata describes {}",
                parsed.len(),
                value.processes_metadata.len()
            ));
        }
        let mut processes = Vec::new();
        let mut keys = std::collections::BTreeSet::new();
        let mut ids = std::collections::BTreeSet::new();
        for metadata in &value.processes_metadata {
            let id = &metadata.bpmn_process_id;
            let key = metadata.process_definition_key;
            if !ids.insert(id.as_str()) {
                return Err(format!("its metadata describes process '{id}' twice"));
            }
            let Some((resource, _)) = parsed.iter().find(|(_, parsed_id)| parsed_id == id) else {
                return Err(format!(
                    "its metadata names process '{id}', which none of its resources holds"
                ));
            };
            if resource.resource_name != metadata.resource_name {
                return Err(format!(
                    "its metadata places process '{id}' in resource '{}', but it is in '{}'",
                    metadata.resource_name, resource.resource_name
                ));
            }
            let checksum = format!("{:08x}", crc32c::crc32c(resource.resource.as_bytes()));
            if metadata.checksum != checksum {
                return Err(format!(
                    "its metadata gives process '{id}' the checksum '{}', but its resource's is \
                     '{checksum}'",
                    metadata.checksum
                ));
            }
            if metadata.version < 1 {
                return Err(format!(
                    "its metadata gives process '{id}' version {}, but versions start at 1",
                    metadata.version
                ));
            }
            // New processes get keys after the deployment's; a duplicate keeps an older key.
            let fits = key_partition(key) == DEPLOYMENT_PARTITION
                && is_possible_key(key)
                && if metadata.duplicate {
                    key < deployment_key
                } else {
                    key > deployment_key
                };
            if !fits || !keys.insert(key) {
                return Err(format!(
                    "its metadata gives process '{id}' the key '{key}', which is not a key \
                     partition {DEPLOYMENT_PARTITION} gives a {} process of this deployment",
                    if metadata.duplicate {
                        "duplicate"
                    } else {
                        "new"
                    }
                ));
            }
            if let Some(existing) = self.state.process(key) {
                if *existing.bpmn_process_id != **id
                    || existing.version != metadata.version
                    || existing.checksum != checksum
                {
                    return Err(format!(
                        "its metadata gives key '{key}' to version {} of process '{id}', but \
                         this partition has version {} of process '{}' under that key",
                        metadata.version, existing.version, existing.bpmn_process_id
                    ));
                }
                continue;
            }
            if let Some(existing) = self.state.process_version(id, metadata.version) {
                return Err(format!(
                    "its metadata gives version {} of process '{id}' the key '{key}', but this \
                     partition has that version under key '{}'",
                    metadata.version, existing.key
                ));
            }
            processes.push(ProcessValue {
                bpmn_process_id: id.clone(),
                version: metadata.version,
                process_definition_key: key,
                resource_name: metadata.resource_name.clone(),
                checksum,
                resource: resource.resource.clone(),
            });
        }
        Ok(processes)
    }

    pub(super) fn acknowledge_distribution(
        &mut self,
        command: &Record,
        value: &CommandDistributionValue,
        out: &mut Output,
    ) {
        if self.reject_foreign_key(command, None, "acknowledge distribution", command.key, out) {
            return;
        }
        let Some(pending) = self.state.pending_distributions.get(&command.key) else {
            return;
        };
        if !pending.partitions.contains(&value.partition_id) {
            return;
        }
        self.write_event(
            command.key,
            Intent::Acknowledged,
            RecordValue::CommandDistribution(value.clone()),
            out,
        );
        let Some(pending) = self.state.pending_distributions.get(&command.key) else {
            return;
        };
        if pending.partitions.is_empty() {
            let deployment = pending.deployment.clone();
            self.write_event(
                command.key,
                Intent::Finished,
                RecordValue::CommandDistribution(CommandDistributionValue {
                    partition_id: self.config.partition_id,
                    value_type: Some(ValueType::Deployment),
                }),
                out,
            );
            self.write_event(
                command.key,
                Intent::FullyDistributed,
                RecordValue::Deployment(deployment),
                out,
            );
        }
    }

    /// Opens the message start subscriptions (every partition) and start timers (partition 1)
    /// of a newly deployed version, closing those of the versions before it.
    fn open_start_events(&mut self, definition_key: Key, out: &mut Output) {
        let Some(definition) = self.definition(definition_key) else {
            return;
        };
        let bpmn_process_id = definition.bpmn_process_id.to_string();
        // Element 0 is always the process (the parser builds it so).
        let ElementKind::Process {
            message_starts,
            timer_starts,
            ..
        } = &definition.model.element(0).kind
        else {
            return;
        };
        let mut old_subscriptions: Vec<(Key, MessageStartEventSubscriptionValue)> = self
            .state
            .message_start_subscriptions
            .values()
            .filter(|s| {
                s.bpmn_process_id == bpmn_process_id && s.process_definition_key != definition_key
            })
            .map(|s| {
                (
                    s.key,
                    MessageStartEventSubscriptionValue {
                        process_definition_key: s.process_definition_key,
                        bpmn_process_id: s.bpmn_process_id.clone(),
                        start_event_id: s.start_event_id.clone(),
                        message_name: s.message_name.clone(),
                        ..MessageStartEventSubscriptionValue::default()
                    },
                )
            })
            .collect();
        old_subscriptions.sort_by_key(|(key, _)| *key);
        for (key, value) in old_subscriptions {
            self.write_event(
                key,
                Intent::Deleted,
                RecordValue::MessageStartEventSubscription(value),
                out,
            );
        }
        for start in message_starts {
            let element = definition.model.element(*start);
            let ElementKind::StartEvent {
                trigger: EventTrigger::Message(message),
            } = &element.kind
            else {
                continue;
            };
            let Ok(message_name) = self.evaluate_string(&message.name, -1) else {
                continue;
            };
            let key = self.state.next_key();
            self.write_event(
                key,
                Intent::Created,
                RecordValue::MessageStartEventSubscription(MessageStartEventSubscriptionValue {
                    process_definition_key: definition_key,
                    bpmn_process_id: bpmn_process_id.clone(),
                    start_event_id: element.id.clone(),
                    message_name,
                    ..MessageStartEventSubscriptionValue::default()
                }),
                out,
            );
        }
        if self.config.partition_id != DEPLOYMENT_PARTITION {
            return;
        }
        let mut old_timers: Vec<(Key, TimerValue)> = self
            .state
            .timers
            .values()
            .filter(|timer| {
                timer.value.element_instance_key < 0
                    && timer.value.process_definition_key != definition_key
                    && self
                        .state
                        .process(timer.value.process_definition_key)
                        .is_some_and(|p| *p.bpmn_process_id == *bpmn_process_id)
            })
            .map(|timer| (timer.key, timer.value.clone()))
            .collect();
        old_timers.sort_by_key(|(key, _)| *key);
        for (key, value) in old_timers {
            self.write_event(key, Intent::Canceled, RecordValue::Timer(value), out);
        }
        for start in timer_starts {
            let element = definition.model.element(*start);
            let ElementKind::StartEvent {
                trigger: EventTrigger::Timer(timer),
            } = &element.kind
            else {
                continue;
            };
            let Ok((due, repetitions, interval)) = self.timer_due(timer, -1) else {
                continue;
            };
            let key = self.state.next_key();
            self.write_event(
                key,
                Intent::Created,
                RecordValue::Timer(TimerValue {
                    element_instance_key: -1,
                    process_instance_key: -1,
                    process_definition_key: definition_key,
                    due_date: due,
                    target_element_id: element.id.clone(),
                    repetitions,
                    interval,
                }),
                out,
            );
        }
    }

    /// Re-sends deployments that some partition has not acknowledged yet.
    pub(super) fn resend_distributions(&mut self, now_ms: i64, out: &mut Output) {
        let interval = self.config.resend_interval_ms;
        let mut due: Vec<Key> = self
            .state
            .pending_distributions
            .values()
            .filter(|pending| pending.resent_at_ms + interval <= now_ms)
            .map(|pending| pending.key)
            .collect();
        due.sort_unstable();
        for key in due {
            let Some(pending) = self.state.pending_distributions.get_mut(&key) else {
                continue;
            };
            pending.resent_at_ms = now_ms;
            let deployment = pending.deployment.clone();
            let partitions: Vec<u32> = pending.partitions.iter().copied().collect();
            for partition in partitions {
                let command = Record::command_for(
                    key,
                    Intent::Create,
                    RecordValue::Deployment(deployment.clone()),
                );
                self.send(partition, command, out);
            }
        }
    }
}

/// Parses every resource; all or nothing. Returns each process with its resource.
fn validate_resources(
    value: &DeploymentValue,
) -> Result<Vec<(crate::record::DeploymentResource, String)>, String> {
    if value.resources.is_empty() {
        return Err("Expected to deploy at least one resource, but none given".to_owned());
    }
    let mut errors = Vec::new();
    let mut processes = Vec::new();
    for resource in &value.resources {
        let name = &resource.resource_name;
        let extension = std::path::Path::new(name)
            .extension()
            .and_then(|extension| extension.to_str())
            .unwrap_or_default();
        if !(extension.eq_ignore_ascii_case("bpmn") || extension.eq_ignore_ascii_case("xml")) {
            errors.push(format!(
                "'{name}': expected a BPMN resource ('.bpmn' or '.xml'), but the name has \
                 neither extension"
            ));
            continue;
        }
        if resource.resource.len() > RESOURCE_BYTES_MAX {
            errors.push(format!(
                "'{name}': the resource has {} bytes, more than the {RESOURCE_BYTES_MAX} allowed",
                resource.resource.len()
            ));
            continue;
        }
        match crate::bpmn::parse(resource.resource.as_bytes()) {
            Ok(parsed) => {
                for mut process in parsed {
                    if let Err(error) = process.compile_expressions() {
                        errors.push(format!("'{name}': {error}"));
                        continue;
                    }
                    if processes.iter().any(
                        |(_, id): &(crate::record::DeploymentResource, String)| {
                            *id == process.bpmn_process_id
                        },
                    ) {
                        errors.push(format!(
                            "'{name}': duplicated process id '{}' in this deployment",
                            process.bpmn_process_id
                        ));
                        continue;
                    }
                    processes.push((resource.clone(), process.bpmn_process_id));
                }
            }
            Err(error) => errors.push(format!("'{name}': {error}")),
        }
    }
    if errors.is_empty() {
        Ok(processes)
    } else {
        Err(format!(
            "Expected to deploy new resources, but encountered the following errors:\n{}",
            errors.join("\n")
        ))
    }
}
