//! Forged deployments distributed to a partition.
//!
//! The bug: a `DEPLOYMENT CREATE` whose key belonged to another partition was taken for a
//! distribution from partition 1 and only checked for XML that parses; `PROCESS CREATED` then
//! hit an `expect` in the applier when the process was not in its resource or its expressions
//! did not compile, so one crafted message panicked a broker. Now a distributed deployment is
//! checked like a client's (resources parse and compile) and its metadata against its
//! resources and keys; anything else is rejected, not acknowledged, and changes nothing.

mod common;

use common::{Cluster, assert_rejected, deployment, service_task_process};
use sluice_engine::record::{
    DeploymentResource, DeploymentValue, ProcessMetadata, RejectionType, encode_key,
};
use sluice_engine::snapshot::encode_snapshot;
use sluice_engine::{Intent, Record, RecordValue, SideEffect};

/// A two-process deployment made on partition 1 of `partitions`, and the distribution command
/// partition 1 sends partition 2 (held, not delivered).
fn distribution(partitions: u32) -> (Cluster, Record) {
    let mut cluster = Cluster::new(partitions);
    let first = service_task_process("first", "");
    let second = service_task_process("second", "");
    cluster.submit(
        1,
        deployment(&[("first.bpmn", &first), ("second.bpmn", &second)]),
    );
    let index = cluster
        .in_flight
        .iter()
        .position(|(partition, _)| *partition == 2)
        .expect("the deployment is distributed to partition 2");
    let (_, command) = cluster.in_flight.remove(index).expect("found above");
    (cluster, command)
}

/// A change to a distributed deployment's metadata.
type Mutation = Box<dyn Fn(&mut Vec<ProcessMetadata>)>;

fn value_of(command: &mut Record) -> &mut DeploymentValue {
    match &mut command.value {
        RecordValue::Deployment(value) => value,
        other => panic!("a deployment command, not {other:?}"),
    }
}

/// Submits a forged variant on partition 2 and checks it is rejected, unacknowledged, and
/// changes nothing; `parts` must appear in the reason.
fn assert_refused(cluster: &mut Cluster, command: Record, parts: &[&str]) {
    let before = encode_snapshot(cluster.engine(2).state());
    let out = cluster.submit(2, command);
    assert_rejected(&out, RejectionType::InvalidArgument, parts);
    assert!(
        !out.side_effects
            .iter()
            .any(|effect| matches!(effect, SideEffect::Send { .. })),
        "a refused deployment is not acknowledged"
    );
    assert_eq!(
        encode_snapshot(cluster.engine(2).state()),
        before,
        "a refused deployment changed the state"
    );
}

#[test]
fn a_genuine_distribution_is_accepted_after_every_forgery_is_refused() {
    let (mut cluster, genuine) = distribution(3);

    // A deployment key of another partition than 1.
    let mut forged = genuine.clone();
    forged.key = encode_key(3, 1);
    assert_refused(
        &mut cluster,
        forged,
        &["distributed from partition 1", "partition 3"],
    );

    // A resource that does not parse.
    let mut forged = genuine.clone();
    value_of(&mut forged).resources[0].resource = "<not-bpmn".into();
    assert_refused(&mut cluster, forged, &["first.bpmn"]);

    // A resource whose expressions do not compile (the process and its metadata still match).
    let mut forged = genuine.clone();
    let broken = service_task_process("first", "").replace(r#"type="work""#, r#"type="=1 +""#);
    value_of(&mut forged).resources[0].resource = broken.into();
    assert_refused(&mut cluster, forged, &["invalid expression"]);

    // Metadata that does not match the resources.
    let mutations: Vec<(&str, Mutation)> = vec![
        (
            "the checksum",
            Box::new(|m| m[0].checksum = "00000000".into()),
        ),
        (
            "resource",
            Box::new(|m| m[0].resource_name = "second.bpmn".into()),
        ),
        (
            "metadata describes 1",
            Box::new(|m| {
                m.pop();
            }),
        ),
        (
            "none of its resources holds",
            Box::new(|m| m[1].bpmn_process_id = "third".into()),
        ),
        ("versions start at 1", Box::new(|m| m[0].version = 0)),
        ("twice", Box::new(|m| m[1] = m[0].clone())),
        (
            "is not a key",
            Box::new(|m| m[0].process_definition_key = encode_key(2, 7)),
        ),
        (
            "is not a key",
            Box::new(|m| m[0].process_definition_key = encode_key(1, 0)),
        ),
        (
            "is not a key",
            Box::new(|m| m[1].process_definition_key = m[0].process_definition_key),
        ),
        ("is not a key", Box::new(|m| m[0].duplicate = true)),
    ];
    for (part, mutate) in mutations {
        let mut forged = genuine.clone();
        mutate(&mut value_of(&mut forged).processes_metadata);
        assert_refused(&mut cluster, forged, &[part]);
    }

    // No resources at all.
    let mut forged = genuine.clone();
    value_of(&mut forged).resources.clear();
    assert_refused(&mut cluster, forged, &["at least one resource"]);

    // The genuine one goes through, and is acknowledged to partition 1.
    let out = cluster.submit(2, genuine.clone());
    assert_eq!(
        out.records
            .iter()
            .filter(|record| record.intent == Intent::Created
                && matches!(record.value, RecordValue::Process(_)))
            .count(),
        2
    );
    assert!(out.side_effects.iter().any(|effect| matches!(
        effect,
        SideEffect::Send { partition_id: 1, record } if record.intent == Intent::Acknowledge
    )));
    assert!(cluster.engine(2).state().latest_process("first").is_some());
    cluster.assert_follower_agrees(2);
}

#[test]
fn a_forgery_contradicting_deployed_versions_is_refused() {
    let (mut cluster, genuine) = distribution(2);
    cluster.submit(2, genuine.clone());
    // A later deployment key claiming version 1 of `first` under a new key.
    let mut forged = genuine.clone();
    forged.key = encode_key(1, 1_000);
    let value = value_of(&mut forged);
    value.processes_metadata.truncate(1);
    value.resources.truncate(1);
    value.processes_metadata[0].process_definition_key = encode_key(1, 1_001);
    assert_refused(&mut cluster, forged, &["has that version under key"]);

    // And one giving an existing key to another version.
    let mut forged = genuine.clone();
    forged.key = encode_key(1, 2_000);
    let value = value_of(&mut forged);
    value.processes_metadata.truncate(1);
    value.resources.truncate(1);
    value.processes_metadata[0].version = 2;
    value.processes_metadata[0].duplicate = true;
    assert_refused(&mut cluster, forged, &["under that key"]);
    cluster.assert_follower_agrees(2);
}

#[test]
fn partition_1_refuses_a_deployment_keyed_by_another_partition() {
    let mut cluster = Cluster::new(2);
    let xml = service_task_process("p", "");
    let mut command = deployment(&[("p.bpmn", &xml)]);
    command.key = encode_key(2, 1);
    let out = cluster.submit(1, command);
    assert_rejected(
        &out,
        RejectionType::InvalidArgument,
        &["distributed from partition 1"],
    );
    assert!(cluster.engine(1).state().processes.is_empty());
}

#[test]
fn a_deployment_whose_process_is_missing_from_its_resource_is_refused_not_a_panic() {
    // The exact shape that used to panic in the applier: metadata naming a process the
    // resource does not hold.
    let (mut cluster, mut forged) = distribution(2);
    let value = value_of(&mut forged);
    value.resources = vec![DeploymentResource {
        resource_name: "first.bpmn".into(),
        resource: service_task_process("other", "").into(),
    }];
    value.processes_metadata.truncate(1);
    assert_refused(&mut cluster, forged, &["none of its resources holds"]);
}
