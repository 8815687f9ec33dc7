//! Internal commands: what a client may send at all, and the clock's own commands sent early.
//!
//! The bug: internal intents (timer trigger, message expiry, job time-out, subscription
//! correlation, distribution acknowledgement) were carried out whatever their origin. The
//! engine now publishes which commands a client may send ([`client_may_send`]) so the broker
//! refuses the rest at its door, and carries out the clock's commands only once due.

mod common;

use common::{
    Cluster, activate, activated_jobs, assert_rejected, create_instance, deployment, publish,
    service_task_process, timer_process,
};
use sluice_engine::record::{
    CLIENT_COMMANDS, ENGINE_COMMANDS, JobValue, MessageValue, PARTITION_COMMANDS, RejectionType,
    TimerValue, client_may_send, partition_may_send,
};
use sluice_engine::{Intent, Record, RecordValue, ValueType};

/// Every value type; the match makes a new one a compile error here.
fn all_value_types() -> Vec<ValueType> {
    let all = vec![
        ValueType::Deployment,
        ValueType::Process,
        ValueType::ProcessInstance,
        ValueType::ProcessInstanceCreation,
        ValueType::Job,
        ValueType::JobBatch,
        ValueType::Message,
        ValueType::MessageSubscription,
        ValueType::ProcessMessageSubscription,
        ValueType::MessageStartEventSubscription,
        ValueType::Timer,
        ValueType::Incident,
        ValueType::Variable,
        ValueType::VariableDocument,
        ValueType::CommandDistribution,
    ];
    for value_type in &all {
        match value_type {
            ValueType::Deployment
            | ValueType::Process
            | ValueType::ProcessInstance
            | ValueType::ProcessInstanceCreation
            | ValueType::Job
            | ValueType::JobBatch
            | ValueType::Message
            | ValueType::MessageSubscription
            | ValueType::ProcessMessageSubscription
            | ValueType::MessageStartEventSubscription
            | ValueType::Timer
            | ValueType::Incident
            | ValueType::Variable
            | ValueType::VariableDocument
            | ValueType::CommandDistribution => {}
        }
    }
    all
}

/// Every intent; the match makes a new one a compile error here.
#[expect(clippy::too_many_lines, reason = "one line per intent, twice")]
fn all_intents() -> Vec<Intent> {
    use Intent as I;
    let all = vec![
        I::Create,
        I::Created,
        I::FullyDistributed,
        I::CreateWithAwaitingResult,
        I::Update,
        I::Updated,
        I::ActivateElement,
        I::CompleteElement,
        I::TerminateElement,
        I::ElementActivating,
        I::ElementActivated,
        I::ElementCompleting,
        I::ElementCompleted,
        I::ElementTerminating,
        I::ElementTerminated,
        I::SequenceFlowTaken,
        I::Cancel,
        I::Complete,
        I::Completed,
        I::Fail,
        I::Failed,
        I::TimeOut,
        I::TimedOut,
        I::UpdateRetries,
        I::RetriesUpdated,
        I::UpdateTimeout,
        I::TimeoutUpdated,
        I::ThrowError,
        I::ErrorThrown,
        I::RecurAfterBackoff,
        I::RecurredAfterBackoff,
        I::Canceled,
        I::Activate,
        I::Activated,
        I::Publish,
        I::Published,
        I::Expire,
        I::Expired,
        I::Creating,
        I::Correlate,
        I::Correlating,
        I::Correlated,
        I::Delete,
        I::Deleting,
        I::Deleted,
        I::Reject,
        I::Rejected,
        I::Trigger,
        I::Triggered,
        I::Resolve,
        I::Resolved,
        I::Started,
        I::Distributing,
        I::Acknowledge,
        I::Acknowledged,
        I::Finished,
    ];
    for intent in &all {
        match intent {
            I::Create
            | I::Created
            | I::FullyDistributed
            | I::CreateWithAwaitingResult
            | I::Update
            | I::Updated
            | I::ActivateElement
            | I::CompleteElement
            | I::TerminateElement
            | I::ElementActivating
            | I::ElementActivated
            | I::ElementCompleting
            | I::ElementCompleted
            | I::ElementTerminating
            | I::ElementTerminated
            | I::SequenceFlowTaken
            | I::Cancel
            | I::Complete
            | I::Completed
            | I::Fail
            | I::Failed
            | I::TimeOut
            | I::TimedOut
            | I::UpdateRetries
            | I::RetriesUpdated
            | I::UpdateTimeout
            | I::TimeoutUpdated
            | I::ThrowError
            | I::ErrorThrown
            | I::RecurAfterBackoff
            | I::RecurredAfterBackoff
            | I::Canceled
            | I::Activate
            | I::Activated
            | I::Publish
            | I::Published
            | I::Expire
            | I::Expired
            | I::Creating
            | I::Correlate
            | I::Correlating
            | I::Correlated
            | I::Delete
            | I::Deleting
            | I::Deleted
            | I::Reject
            | I::Rejected
            | I::Trigger
            | I::Triggered
            | I::Resolve
            | I::Resolved
            | I::Started
            | I::Distributing
            | I::Acknowledge
            | I::Acknowledged
            | I::Finished => {}
        }
    }
    all
}

#[test]
fn client_may_send_exactly_the_gateways_commands() {
    // What broker/src/gateway/mapping.rs makes of the gateway's requests: DeployResource,
    // CreateProcessInstance(WithResult), CancelProcessInstance, ActivateJobs / StreamActivatedJobs,
    // CompleteJob, FailJob, ThrowError, UpdateJobRetries, UpdateJobTimeout, PublishMessage,
    // SetVariables, ResolveIncident.
    let gateway = [
        (ValueType::Deployment, Intent::Create),
        (ValueType::ProcessInstanceCreation, Intent::Create),
        (
            ValueType::ProcessInstanceCreation,
            Intent::CreateWithAwaitingResult,
        ),
        (ValueType::ProcessInstance, Intent::Cancel),
        (ValueType::JobBatch, Intent::Activate),
        (ValueType::Job, Intent::Complete),
        (ValueType::Job, Intent::Fail),
        (ValueType::Job, Intent::ThrowError),
        (ValueType::Job, Intent::UpdateRetries),
        (ValueType::Job, Intent::UpdateTimeout),
        (ValueType::Message, Intent::Publish),
        (ValueType::VariableDocument, Intent::Update),
        (ValueType::Incident, Intent::Resolve),
    ];
    let mut allowed = Vec::new();
    for value_type in all_value_types() {
        for intent in all_intents() {
            if client_may_send(value_type, intent) {
                allowed.push((value_type, intent));
            }
        }
    }
    assert_eq!(allowed.len(), gateway.len(), "{allowed:?}");
    for command in gateway {
        assert!(allowed.contains(&command), "{command:?} must be allowed");
    }
    assert_eq!(CLIENT_COMMANDS.len(), gateway.len());

    // The internal ones are not, and the lists do not overlap except for the deployment
    // (a client's has no key; a distributed one carries partition 1's).
    for command in ENGINE_COMMANDS {
        assert!(!client_may_send(command.0, command.1), "{command:?}");
        assert!(!partition_may_send(command.0, command.1), "{command:?}");
    }
    for command in PARTITION_COMMANDS {
        assert_eq!(
            client_may_send(command.0, command.1),
            *command == (ValueType::Deployment, Intent::Create),
            "{command:?}"
        );
    }
    for internal in [
        (ValueType::Timer, Intent::Trigger),
        (ValueType::Message, Intent::Expire),
        (ValueType::Job, Intent::TimeOut),
        (ValueType::Job, Intent::RecurAfterBackoff),
        (ValueType::ProcessMessageSubscription, Intent::Correlate),
        (ValueType::MessageSubscription, Intent::Correlate),
        (ValueType::CommandDistribution, Intent::Acknowledge),
    ] {
        assert!(!client_may_send(internal.0, internal.1), "{internal:?}");
    }
}

#[test]
fn a_timer_triggered_before_it_is_due_is_refused() {
    let mut cluster = Cluster::new(1);
    let xml = timer_process("t", "PT1M");
    cluster.submit(1, deployment(&[("t.bpmn", &xml)]));
    cluster.submit(1, create_instance("t", ""));
    let (key, value) = {
        let timer = cluster
            .engine(1)
            .state()
            .timers
            .values()
            .next()
            .expect("a timer");
        (timer.key, timer.value.clone())
    };
    let trigger = Record::command_for(key, Intent::Trigger, RecordValue::Timer(value));
    assert_rejected(
        &cluster.submit(1, trigger.clone()),
        RejectionType::InvalidState,
        &["once due"],
    );
    assert_eq!(cluster.engine(1).state().timers.len(), 1);
    // Due, it fires.
    cluster.now_ms += 60_000;
    let out = cluster.submit(1, trigger);
    assert!(common::event(&out, Intent::Triggered).is_some());
    let not_a_timer = Record::command_for(
        key,
        Intent::Trigger,
        RecordValue::Timer(TimerValue::default()),
    );
    assert_rejected(
        &cluster.submit(1, not_a_timer),
        RejectionType::NotFound,
        &["no such timer"],
    );
}

#[test]
fn a_job_timed_out_before_its_deadline_is_refused() {
    let mut cluster = Cluster::new(1);
    let xml = service_task_process("p", "");
    cluster.submit(1, deployment(&[("p.bpmn", &xml)]));
    cluster.submit(1, create_instance("p", ""));
    let job = activated_jobs(&cluster.submit(1, activate("work")))[0];
    let time_out = Record::command_for(job, Intent::TimeOut, RecordValue::Job(JobValue::default()));
    assert_rejected(
        &cluster.submit(1, time_out.clone()),
        RejectionType::InvalidState,
        &["once due"],
    );
    cluster.now_ms += 60_000;
    let out = cluster.submit(1, time_out);
    assert!(common::event(&out, Intent::TimedOut).is_some());
}

#[test]
fn a_message_expired_before_its_time_is_refused() {
    let mut cluster = Cluster::new(1);
    let out = cluster.submit(1, publish("m", "k", 60_000, ""));
    let key = common::event(&out, Intent::Published)
        .expect("published")
        .key;
    let expire = Record::command_for(
        key,
        Intent::Expire,
        RecordValue::Message(MessageValue::default()),
    );
    assert_rejected(
        &cluster.submit(1, expire.clone()),
        RejectionType::InvalidState,
        &["once due"],
    );
    assert_eq!(cluster.engine(1).state().messages.len(), 1);
    cluster.now_ms += 60_000;
    let out = cluster.submit(1, expire.clone());
    assert!(common::event(&out, Intent::Expired).is_some());
    assert_rejected(
        &cluster.submit(1, expire),
        RejectionType::NotFound,
        &["no such message"],
    );
    cluster.assert_follower_agrees(1);
}

#[test]
fn commands_of_no_sender_are_rejected() {
    let mut cluster = Cluster::new(1);
    for (value, intent) in [
        (RecordValue::Job(JobValue::default()), Intent::Created),
        (RecordValue::Timer(TimerValue::default()), Intent::Created),
        (
            RecordValue::Message(MessageValue::default()),
            Intent::Published,
        ),
    ] {
        let out = cluster.submit(1, Record::command(intent, value));
        assert!(
            common::rejection(&out).is_some(),
            "{intent:?} was not rejected"
        );
    }
}
