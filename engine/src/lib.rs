//! `sluice-engine`: the deterministic workflow engine of a partition.
//!
//! How to drive it (the broker's partition task does this on the leader):
//!
//! ```text
//! let mut engine = Engine::new(EngineConfig::new(partition_id, partition_count));
//! // recovery / follower: engine.replay(&record) for every committed record, in log order
//! // leader, for each command that arrives:
//! engine.process(command, Some(request_id), now_ms, &mut out);
//! //   append out.records as one log batch; once it commits, carry out out.side_effects
//! // leader, when engine.next_deadline_ms() has passed:
//! engine.tick(now_ms, &mut out);   // due timers, job deadlines, message expiry, re-sends
//! ```
//!
//! The engine reads no clock and does no I/O: `now_ms` is an argument, records and side
//! effects are plain values.
//!
//! The engine trusts nothing it did not make: a command from a client, another partition or
//! the log is checked like client input and a bad one is rejected (or, when the problem arises
//! while processing, raises an incident), never a panic; a replayed event that does not fit
//! the state is skipped the same way on every replica; the key counter moves only with this
//! partition's own events. A client may send only the commands [`client_may_send`] allows; the
//! broker refuses the rest at its door. Modules: [`record`] (the log's records), [`bpmn`] (XML to
//! [`model`]), [`feel`] and [`time`] (expressions, ISO-8601), [`state`] (event appliers),
//! [`processor`] (the engine itself).

pub mod bpmn;
pub mod feel;
pub mod model;
pub mod processor;
pub mod record;
pub mod snapshot;
pub mod state;
pub mod time;

pub use processor::{Engine, EngineConfig, Output, RequestId, SideEffect, subscription_partition};
pub use record::{
    Intent, Key, Record, RecordType, RecordValue, RejectionType, ValueType, client_may_send,
    partition_may_send,
};
