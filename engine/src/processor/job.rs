//! Jobs: activation in batches, completion, failure with retries and back-off, thrown errors,
//! retries and timeout updates, deadlines.

use super::{Engine, Output, RequestId, SideEffect, Step};
use crate::record::{
    ErrorType, Intent, JobBatchValue, JobValue, Key, Record, RecordValue, RejectionType, Text,
};
use crate::state::JobState;

impl Engine {
    pub(super) fn process_job(
        &mut self,
        command: &Record,
        value: &JobValue,
        request: Option<RequestId>,
        out: &mut Output,
    ) {
        let key = command.key;
        let action = match command.intent {
            Intent::Complete => "complete",
            Intent::Fail => "fail",
            Intent::ThrowError => "throw an error for",
            Intent::UpdateRetries => "update retries of",
            Intent::UpdateTimeout => "update the timeout of",
            Intent::TimeOut => "time out",
            Intent::RecurAfterBackoff => "recur",
            _ => {
                let reason = format!(
                    "Expected a job command, but got intent {:?}",
                    command.intent
                );
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
        if self.reject_foreign_key(command, request, &format!("{action} job"), key, out) {
            return;
        }
        let Some(job) = self.state.jobs.get(&key) else {
            let reason =
                format!("Expected to {action} job with key '{key}', but no such job was found");
            self.reject(command, request, RejectionType::NotFound, reason, out);
            return;
        };
        let job_state = job.state;
        // The clock's commands count only once due: sent early (from anywhere but the clock)
        // they would cut a worker's time short or end a back-off.
        let due_at = match command.intent {
            Intent::TimeOut => Some(job.deadline_ms),
            Intent::RecurAfterBackoff => Some(job.recurring_time_ms),
            _ => None,
        };
        let state_word = match job_state {
            JobState::Activatable => "activatable",
            JobState::Activated => "activated",
            JobState::Failed => "failed",
            JobState::BackingOff => "failed and backing off",
            JobState::ErrorThrown => "in error state",
        };
        let allowed = match command.intent {
            Intent::Complete | Intent::Fail | Intent::ThrowError => {
                matches!(job_state, JobState::Activatable | JobState::Activated)
            }
            Intent::TimeOut | Intent::UpdateTimeout => job_state == JobState::Activated,
            Intent::RecurAfterBackoff => job_state == JobState::BackingOff,
            _ => true,
        };
        if !allowed {
            let reason =
                format!("Expected to {action} job with key '{key}', but it is {state_word}");
            self.reject(command, request, RejectionType::InvalidState, reason, out);
            return;
        }
        if let Some(due_at) = due_at
            && due_at > self.now_ms
        {
            let reason = format!(
                "Expected to {action} job with key '{key}' once due, but it is due only at \
                 {due_at} ms (now is {} ms)",
                self.now_ms
            );
            self.reject(command, request, RejectionType::InvalidState, reason, out);
            return;
        }
        // Found above; a job without a value here would be a job of no process.
        let Some(current) = self.job_value(key) else {
            return;
        };
        match command.intent {
            Intent::Complete => self.complete_job(command, current, value, request, out),
            Intent::Fail => self.fail_job(command, current, value, request, out),
            Intent::ThrowError => self.throw_job_error(command, current, value, request, out),
            Intent::UpdateRetries => {
                if value.retries < 1 {
                    let reason = format!(
                        "Expected to update retries of job with key '{key}' with a positive \
                         amount of retries, but got {}",
                        value.retries
                    );
                    self.reject(
                        command,
                        request,
                        RejectionType::InvalidArgument,
                        reason,
                        out,
                    );
                    return;
                }
                let mut updated = current;
                updated.retries = value.retries;
                self.write_event_and_respond(
                    key,
                    Intent::RetriesUpdated,
                    RecordValue::Job(updated),
                    request,
                    out,
                );
            }
            Intent::UpdateTimeout => {
                let mut updated = current;
                updated.timeout = value.timeout;
                updated.deadline = self.now_ms.saturating_add(value.timeout);
                self.write_event_and_respond(
                    key,
                    Intent::TimeoutUpdated,
                    RecordValue::Job(updated),
                    request,
                    out,
                );
            }
            Intent::TimeOut => {
                let timed_out = current;
                let job_type = timed_out.job_type.clone();
                self.write_event(key, Intent::TimedOut, RecordValue::Job(timed_out), out);
                out.side_effects
                    .push(SideEffect::JobsAvailable { job_type });
            }
            Intent::RecurAfterBackoff => {
                let recurred = current;
                let job_type = recurred.job_type.clone();
                self.write_event(
                    key,
                    Intent::RecurredAfterBackoff,
                    RecordValue::Job(recurred),
                    out,
                );
                out.side_effects
                    .push(SideEffect::JobsAvailable { job_type });
            }
            // Every other intent was rejected above.
            _ => {}
        }
    }

    fn complete_job(
        &mut self,
        command: &Record,
        current: JobValue,
        value: &JobValue,
        request: Option<RequestId>,
        out: &mut Output,
    ) {
        let key = command.key;
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
        let mut completed = current;
        completed.variables.clone_from(&value.variables);
        let element_instance_key = completed.element_instance_key;
        self.write_event_and_respond(
            key,
            Intent::Completed,
            RecordValue::Job(completed),
            request,
            out,
        );
        self.steps.push_back(Step::Complete {
            key: element_instance_key,
            variables: Some(variables),
        });
    }

    fn fail_job(
        &mut self,
        command: &Record,
        current: JobValue,
        value: &JobValue,
        request: Option<RequestId>,
        out: &mut Output,
    ) {
        let key = command.key;
        if value.retry_backoff < 0 {
            let reason = format!(
                "Expected to fail job with key '{key}' with a non-negative back-off, but got {}",
                value.retry_backoff
            );
            self.reject(
                command,
                request,
                RejectionType::InvalidArgument,
                reason,
                out,
            );
            return;
        }
        let mut failed = current;
        failed.retries = value.retries;
        failed.error_message.clone_from(&value.error_message);
        failed.retry_backoff = value.retry_backoff;
        failed.recurring_time = if value.retries > 0 && value.retry_backoff > 0 {
            self.now_ms.saturating_add(value.retry_backoff)
        } else {
            -1
        };
        failed.deadline = -1;
        let job_type = failed.job_type.clone();
        let element_instance_key = failed.element_instance_key;
        let error_message = failed.error_message.clone();
        self.write_event_and_respond(key, Intent::Failed, RecordValue::Job(failed), request, out);
        if value.retries <= 0 {
            let message = if error_message.is_empty() {
                "No more retries left.".to_owned()
            } else {
                error_message
            };
            if self
                .state
                .element_instances
                .contains_key(&element_instance_key)
            {
                self.raise_incident(
                    element_instance_key,
                    ErrorType::JobNoRetries,
                    message,
                    key,
                    out,
                );
            }
        } else if value.retry_backoff == 0 {
            out.side_effects
                .push(SideEffect::JobsAvailable { job_type });
        }
    }

    fn throw_job_error(
        &mut self,
        command: &Record,
        current: JobValue,
        value: &JobValue,
        request: Option<RequestId>,
        out: &mut Output,
    ) {
        let key = command.key;
        if value.error_code.is_empty() {
            let reason = format!(
                "Expected to throw an error for job with key '{key}' with an error code, but it \
                 was empty"
            );
            self.reject(
                command,
                request,
                RejectionType::InvalidArgument,
                reason,
                out,
            );
            return;
        }
        let mut thrown = current;
        thrown.error_code.clone_from(&value.error_code);
        thrown.error_message.clone_from(&value.error_message);
        let element_instance_key = thrown.element_instance_key;
        self.write_event_and_respond(
            key,
            Intent::ErrorThrown,
            RecordValue::Job(thrown),
            request,
            out,
        );
        if !self.throw_error(element_instance_key, &value.error_code, out) {
            let message = format!(
                "Expected to throw an error event with the code '{}' with message '{}', but it \
                 was not caught. No error events are available in the scope.",
                value.error_code, value.error_message
            );
            self.raise_incident(
                element_instance_key,
                ErrorType::UnhandledErrorEvent,
                message,
                key,
                out,
            );
        }
    }

    pub(super) fn activate_jobs(
        &mut self,
        command: &Record,
        value: &JobBatchValue,
        request: Option<RequestId>,
        out: &mut Output,
    ) {
        let problem = if value.job_type.is_empty() {
            Some("Expected to activate jobs of a type, but the type is empty".to_owned())
        } else if value.max_jobs_to_activate < 1 {
            Some(format!(
                "Expected to activate at least one job, but max jobs to activate is {}",
                value.max_jobs_to_activate
            ))
        } else if value.timeout < 1 {
            Some(format!(
                "Expected to activate jobs with a positive timeout, but it is {}",
                value.timeout
            ))
        } else {
            None
        };
        if let Some(reason) = problem {
            self.reject(
                command,
                request,
                RejectionType::InvalidArgument,
                reason,
                out,
            );
            return;
        }
        let max = usize::try_from(value.max_jobs_to_activate).unwrap_or(usize::MAX);
        let candidates: Vec<Key> = self
            .state
            .activatable
            .get(value.job_type.as_str())
            .map(|keys| keys.iter().copied().take(max.saturating_add(1)).collect())
            .unwrap_or_default();
        let deadline = self.now_ms.saturating_add(value.timeout);
        let mut batch = JobBatchValue {
            job_keys: Vec::new(),
            jobs: Vec::new(),
            truncated: false,
            ..value.clone()
        };
        let mut bytes = 0_usize;
        for job_key in candidates {
            if batch.jobs.len() == max {
                batch.truncated = true;
                break;
            }
            let Some(mut job) = self.job_value(job_key) else {
                continue;
            };
            let visible = self.state.visible_variables(job.element_instance_key);
            let variables: serde_json::Map<String, serde_json::Value> =
                if value.fetch_variables.is_empty() {
                    visible
                } else {
                    visible
                        .into_iter()
                        .filter(|(name, _)| value.fetch_variables.contains(name))
                        .collect()
                };
            job.variables = serde_json::Value::Object(variables).to_string().into();
            job.deadline = deadline;
            job.worker.clone_from(&value.worker);
            job.timeout = value.timeout;
            let job_bytes = job_batch_bytes(&job);
            if job_bytes > self.config.job_batch_bytes_max {
                // Alone too large for a batch: it could never be handed out, and would block
                // every later job of its type. Zeebe's answer: fail it with an incident.
                self.fail_oversized_job(job_key, job, job_bytes, out);
                continue;
            }
            bytes += job_bytes;
            if bytes > self.config.job_batch_bytes_max && !batch.jobs.is_empty() {
                batch.truncated = true;
                break;
            }
            batch.job_keys.push(job_key);
            batch.jobs.push(job);
        }
        if batch.jobs.is_empty() {
            // Nothing to hand out: answer at once, write nothing (the command is dropped from
            // the batch by `process`).
            if let Some(request) = request {
                let mut record = command.clone();
                record.record_type = crate::record::RecordType::Event;
                record.intent = Intent::Activated;
                record.value = RecordValue::JobBatch(batch);
                out.side_effects
                    .push(SideEffect::Respond { request, record });
            }
            return;
        }
        let key = self.state.next_key();
        self.write_event_and_respond(
            key,
            Intent::Activated,
            RecordValue::JobBatch(batch),
            request,
            out,
        );
    }

    /// Fails the job `key` (no retries left) with a `MESSAGE_SIZE_EXCEEDED` incident: activated
    /// with its variables it takes `job_bytes`, more than one batch may hold. Resolving the
    /// incident after fewer variables are visible (or more retries) makes it activatable again.
    fn fail_oversized_job(
        &mut self,
        key: Key,
        mut job: JobValue,
        job_bytes: usize,
        out: &mut Output,
    ) {
        let message = format!(
            "The job with key '{key}' is too large to be activated: with its variables it takes \
             {job_bytes} bytes, more than the {} bytes a batch of activated jobs may hold \
             (maxMessageSize); fetch fewer variables or make them smaller",
            self.config.job_batch_bytes_max
        );
        let element_instance_key = job.element_instance_key;
        job.variables = Text::default();
        job.retries = 0;
        job.deadline = -1;
        job.recurring_time = -1;
        job.worker = String::new();
        job.error_message.clone_from(&message);
        self.write_event(key, Intent::Failed, RecordValue::Job(job), out);
        if self
            .state
            .element_instances
            .contains_key(&element_instance_key)
        {
            self.raise_incident(
                element_instance_key,
                ErrorType::MessageSizeExceeded,
                message,
                key,
                out,
            );
        }
    }
}

/// Bytes an activated job adds to a batch (and to its reply), generously estimated: its
/// variables, type, worker, headers and ids, plus room for the fixed fields.
fn job_batch_bytes(job: &JobValue) -> usize {
    const FIXED_BYTES: usize = 256;
    let headers: usize = job
        .custom_headers
        .iter()
        .map(|header| header.key.len() + header.value.len() + 16)
        .sum();
    FIXED_BYTES
        + job.variables.len()
        + job.job_type.len()
        + job.worker.len()
        + job.element_id.len()
        + job.bpmn_process_id.len()
        + job.error_message.len()
        + headers
}
