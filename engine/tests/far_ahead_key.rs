//! A command naming a key far ahead of the partition's key generator.
//!
//! The bug: the state applied every record's key to the key counter, commands included. A
//! `COMPLETE` of job `(1 << 51) | (2^51 - 1)` was answered `NOT_FOUND`, yet moved partition 1's
//! counter to 2^51, so the next instance created on partition 1 got key 4503599627370496:
//! partition 2's first key. Replay and snapshots kept the damage. Now only this partition's own
//! events move the counter, and a command naming a key the generator has not reached is
//! rejected `NOT_FOUND` (it cannot exist).

mod common;

use common::{
    Cluster, activate, activated_jobs, assert_rejected, complete_job, create_instance, deployment,
    service_task_process, timer_process,
};
use sluice_engine::record::{
    CommandDistributionValue, IncidentValue, JobValue, KEY_COUNTER_LIMIT, MessageValue,
    ProcessInstanceValue, ProcessMessageSubscriptionValue, RejectionType, TimerValue,
    VariableDocumentValue, encode_key, key_counter, key_partition,
};
use sluice_engine::{Intent, Key, Output, Record, RecordType, RecordValue, ValueType};

/// A one-task process deployed and one instance of it waiting on its job.
fn cluster_with_a_job() -> (Cluster, Key) {
    let mut cluster = Cluster::new(2);
    let xml = service_task_process("p", "");
    cluster.submit(1, deployment(&[("p.bpmn", &xml)]));
    cluster.deliver_all();
    cluster.submit(1, create_instance("p", ""));
    let jobs = activated_jobs(&cluster.submit(1, activate("work")));
    assert_eq!(jobs.len(), 1);
    (cluster, jobs[0])
}

#[test]
fn completing_a_job_with_an_overflowing_key_is_not_found_and_moves_no_counter() {
    let (mut cluster, _) = cluster_with_a_job();
    let next_before = cluster.engine(1).state().next_key_counter;
    let far = (1_i64 << 51) | KEY_COUNTER_LIMIT;
    assert_eq!(far, encode_key(1, (1 << 51) - 1));

    let out = cluster.submit(1, complete_job(far, ""));
    assert_rejected(
        &out,
        RejectionType::NotFound,
        &["not a key any partition hands out"],
    );
    assert_eq!(cluster.engine(1).state().next_key_counter, next_before);

    // The next instance gets partition 1's next key, not partition 2's first.
    let out = cluster.submit(1, create_instance("p", ""));
    let created = common::event(&out, Intent::Created).expect("the instance is created");
    assert_eq!(key_partition(created.key), 1);
    assert_eq!(key_counter(created.key), next_before);
    cluster.assert_follower_agrees(1);
}

#[test]
fn a_far_ahead_key_of_this_partition_is_not_found_and_moves_no_counter() {
    let (mut cluster, _) = cluster_with_a_job();
    let next_before = cluster.engine(1).state().next_key_counter;
    let far = encode_key(1, next_before + 1_000_000);

    let out = cluster.submit(1, complete_job(far, ""));
    let reason = assert_rejected(&out, RejectionType::NotFound, &["has not handed out key"]);
    assert!(
        reason.contains("nothing with this key can exist"),
        "{reason}"
    );
    assert_eq!(cluster.engine(1).state().next_key_counter, next_before);
    cluster.assert_follower_agrees(1);
}

/// Every command that names an entity by key, with a key of partition 1 its generator has not
/// reached.
fn commands_naming(key: Key) -> Vec<Record> {
    let job = |intent| Record::command_for(key, intent, RecordValue::Job(JobValue::default()));
    vec![
        job(Intent::Complete),
        job(Intent::Fail),
        job(Intent::ThrowError),
        job(Intent::UpdateRetries),
        job(Intent::UpdateTimeout),
        job(Intent::TimeOut),
        job(Intent::RecurAfterBackoff),
        Record::command_for(
            key,
            Intent::Cancel,
            RecordValue::ProcessInstance(ProcessInstanceValue::default()),
        ),
        Record::command_for(
            key,
            Intent::Resolve,
            RecordValue::Incident(IncidentValue::default()),
        ),
        Record::command(
            Intent::Update,
            RecordValue::VariableDocument(VariableDocumentValue {
                scope_key: key,
                local: false,
                variables: r#"{"a":1}"#.into(),
            }),
        ),
        Record::command_for(
            key,
            Intent::Trigger,
            RecordValue::Timer(TimerValue::default()),
        ),
        Record::command_for(
            key,
            Intent::Expire,
            RecordValue::Message(MessageValue::default()),
        ),
        Record::command_for(
            key,
            Intent::Acknowledge,
            RecordValue::CommandDistribution(CommandDistributionValue {
                partition_id: 2,
                value_type: Some(ValueType::Deployment),
            }),
        ),
        Record::command_for(
            key,
            Intent::Correlate,
            RecordValue::ProcessMessageSubscription(ProcessMessageSubscriptionValue {
                subscription_partition_id: 2,
                element_instance_key: key,
                process_instance_key: key,
                message_name: "m".into(),
                ..ProcessMessageSubscriptionValue::default()
            }),
        ),
    ]
}

#[test]
fn every_command_naming_a_key_beyond_the_generator_is_not_found() {
    let (mut cluster, _) = cluster_with_a_job();
    let next_before = cluster.engine(1).state().next_key_counter;
    let beyond = encode_key(1, next_before + 10);
    for command in commands_naming(beyond) {
        let what = format!("{:?} {:?}", command.value_type, command.intent);
        let out = cluster.submit(1, command);
        let reason = assert_rejected(&out, RejectionType::NotFound, &["has not handed out key"]);
        let next_key = encode_key(1, next_before).to_string();
        assert!(reason.contains(&next_key), "{what}: {reason}");
        assert!(cluster.in_flight.is_empty(), "{what} sent a command");
        assert_eq!(
            cluster.engine(1).state().next_key_counter,
            next_before,
            "{what} moved the counter"
        );
    }
    cluster.assert_follower_agrees(1);
}

#[test]
fn keys_of_another_partition_are_not_found_with_the_owner_named() {
    let (mut cluster, _) = cluster_with_a_job();
    let out = cluster.submit(1, complete_job(encode_key(2, 5), ""));
    assert_rejected(
        &out,
        RejectionType::NotFound,
        &["belongs to partition 2", "send the command to partition 2"],
    );
    let out = cluster.submit(1, complete_job(encode_key(9, 5), ""));
    assert_rejected(
        &out,
        RejectionType::NotFound,
        &["names partition 9", "2 partitions"],
    );
    let cancel = Record::command_for(
        encode_key(2, 3),
        Intent::Cancel,
        RecordValue::ProcessInstance(ProcessInstanceValue::default()),
    );
    assert_rejected(
        &cluster.submit(1, cancel),
        RejectionType::NotFound,
        &["belongs to partition 2"],
    );
    cluster.assert_follower_agrees(1);
}

#[test]
fn replaying_commands_and_rejections_with_far_keys_moves_no_counter() {
    let (cluster, job_key) = cluster_with_a_job();
    let mut follower = cluster.follower(1);
    let next_before = follower.state().next_key_counter;
    let far = encode_key(1, KEY_COUNTER_LIMIT - 1);
    let mut command = complete_job(far, "");
    follower.replay(&command);
    command.record_type = RecordType::CommandRejection;
    follower.replay(&command);
    // An event keyed beyond the reserve (no engine makes one) moves nothing either.
    let mut event = complete_job(job_key, "");
    event.record_type = RecordType::Event;
    event.intent = Intent::RetriesUpdated;
    event.key = encode_key(1, KEY_COUNTER_LIMIT - 2);
    follower.replay(&event);
    assert_eq!(follower.state().next_key_counter, next_before);
}

#[test]
fn an_event_sent_as_a_command_is_refused_and_not_written() {
    let (mut cluster, _) = cluster_with_a_job();
    let next_before = cluster.engine(1).state().next_key_counter;
    let forged = Record {
        record_type: RecordType::Event,
        value_type: ValueType::Job,
        intent: Intent::Created,
        key: encode_key(1, next_before + 5),
        timestamp_ms: 0,
        rejection: None,
        value: RecordValue::Job(JobValue {
            job_type: "forged".into(),
            retries: 3,
            ..JobValue::default()
        }),
        request_id: 0,
    };
    let out = cluster.submit(1, forged);
    assert_rejected(
        &out,
        RejectionType::InvalidArgument,
        &["Expected a command"],
    );
    assert!(!cluster.engine(1).state().activatable.contains_key("forged"));
    assert_eq!(cluster.engine(1).state().next_key_counter, next_before);
    cluster.assert_follower_agrees(1);
}

#[test]
fn a_command_whose_value_type_contradicts_its_value_is_refused() {
    let (mut cluster, job_key) = cluster_with_a_job();
    let mut command = complete_job(job_key, "");
    command.value_type = ValueType::Timer;
    let out = cluster.submit(1, command);
    assert_rejected(&out, RejectionType::InvalidArgument, &["matches its value"]);
    // The job is still there to complete.
    let out: Output = cluster.submit(1, complete_job(job_key, ""));
    assert!(common::event(&out, Intent::Completed).is_some());
}

#[test]
fn timer_keys_beyond_the_generator_do_not_fire() {
    let mut cluster = Cluster::new(1);
    let xml = timer_process("t", "PT1M");
    cluster.submit(1, deployment(&[("t.bpmn", &xml)]));
    cluster.submit(1, create_instance("t", ""));
    let next = cluster.engine(1).state().next_key_counter;
    let trigger = Record::command_for(
        encode_key(1, next),
        Intent::Trigger,
        RecordValue::Timer(TimerValue::default()),
    );
    assert_rejected(
        &cluster.submit(1, trigger),
        RejectionType::NotFound,
        &["has not handed out"],
    );
    assert_eq!(cluster.engine(1).state().timers.len(), 1);
}
