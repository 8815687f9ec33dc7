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
//! effects are plain values. Modules: [`record`] (the log's records), [`bpmn`] (XML to
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
pub use record::{Intent, Key, Record, RecordType, RecordValue, RejectionType, ValueType};
