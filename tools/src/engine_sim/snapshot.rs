//! Engine snapshots as the simulated replicas take, send and install them: the engine's own
//! canonical state image ([`sluice_engine::snapshot`]), taken at an applied index that equals
//! the commit index, so a snapshot never holds speculative state.

use std::rc::Rc;

use sluice_engine::snapshot::{decode_snapshot, encode_snapshot};
use sluice_engine::{Engine, EngineConfig};

/// A durable snapshot of one replica.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub(crate) index: u64,
    pub(crate) term: u64,
    pub(crate) bytes: Rc<[u8]>,
}

/// Encodes the snapshot of `engine`, whose state is the committed log up to the snapshot's
/// index.
pub(crate) fn encode(engine: &Engine) -> Vec<u8> {
    encode_snapshot(engine.state())
}

/// An engine over the state a snapshot holds.
pub(crate) fn restore(config: EngineConfig, bytes: &[u8]) -> Result<Engine, String> {
    let state = decode_snapshot(bytes).map_err(|e| format!("snapshot: {e}"))?;
    if state.partition_id != config.partition_id {
        return Err(format!(
            "snapshot of partition {} restored on partition {}",
            state.partition_id, config.partition_id
        ));
    }
    Ok(Engine::with_state(config, state))
}
