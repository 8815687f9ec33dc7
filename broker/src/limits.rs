//! One size limit, end to end: `network.maxMessageSize` (Zeebe's key, default 4 MiB) bounds a
//! client's request, and every limit behind the gateway derives from it, so that nothing the
//! gateway accepts can make an entry the log refuses.
//!
//! ```text
//! gRPC request            <= message_bytes                      (the gateway refuses more)
//! engine command          <= command_bytes  = message + 64 KiB  (rkyv framing of the request)
//! reply to the gateway    <= reply_bytes    = message + 64 KiB  (a rejection carries its command)
//! log entry               <= entry_bytes    = 2 * message + 256 KiB
//! journal batch           <= entry_bytes + the 64-byte batch header
//! job batch (activation)  <= job_batch_bytes = message - 64 KiB (its reply must fit a message)
//! an instance's result    <= result_variables_bytes = message - 64 KiB of variables (likewise)
//! ```
//!
//! Why twice the message: a command's large texts (a resource, a variables document) are shared
//! by the records that repeat them (`sluice_engine::record::Text`), so the entry holds them once;
//! a variables document is also split into variable events, the second copy. Anything larger (a
//! command whose follow-up work is huge) is rolled back and rejected `EXCEEDED_BATCH_RECORD_SIZE`
//! by the replica (`crate::apply`), never proposed. The Raft and QUIC limits are fixed and
//! checked here at compile time against the largest allowed `maxMessageSize`.

use sluice_net::wire::RAFT_ENTRY_PAYLOAD_BYTES_MAX;

/// Default `network.maxMessageSize`: Zeebe's 4 MiB.
pub const MESSAGE_BYTES_DEFAULT: u64 = 4 << 20;
/// Smallest `network.maxMessageSize`: a job batch must hold one job with its headers.
pub const MESSAGE_BYTES_MIN: u64 = 256 << 10;
/// Largest `network.maxMessageSize`: two copies and the headroom must fit one Raft entry on the
/// wire.
pub const MESSAGE_BYTES_MAX: u64 = 7 << 20;

/// What a command or reply may add to the request it carries.
const FRAMING_BYTES: u64 = 64 << 10;
/// What an entry may hold besides two copies of a request: the events around them.
const ENTRY_HEADROOM_BYTES: u64 = 256 << 10;
/// Bytes of a journal batch header.
const BATCH_HEADER_BYTES: u64 = sluice_log::batch::HEADER_BYTES as u64;

const _: () = assert!(
    2 * MESSAGE_BYTES_MAX + ENTRY_HEADROOM_BYTES <= RAFT_ENTRY_PAYLOAD_BYTES_MAX as u64,
    "the largest entry must travel in one Raft message"
);
const _: () = assert!(MESSAGE_BYTES_MIN > 2 * FRAMING_BYTES);

/// Every size limit of a broker, derived from `network.maxMessageSize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeLimits {
    /// `network.maxMessageSize`: the largest gRPC request (and the largest answer sent).
    pub message_bytes: usize,
    /// The largest engine command (one encoded record) a broker accepts.
    pub command_bytes: usize,
    /// The largest encoded reply record a replica sends back.
    pub reply_bytes: usize,
    /// The largest log entry a replica proposes.
    pub entry_bytes: usize,
    /// The journal's `batch_bytes_max`: an entry plus its batch header.
    pub journal_batch_bytes: u64,
    /// The most bytes of jobs (variables, headers) in one activated batch.
    pub job_batch_bytes: usize,
    /// The most bytes of variables (as JSON) in the answer to a creation awaiting its result.
    pub result_variables_bytes: usize,
}

impl SizeLimits {
    /// The limits for `message_bytes` (`network.maxMessageSize`, within [`MESSAGE_BYTES_MIN`]
    /// ..= [`MESSAGE_BYTES_MAX`], which the configuration checks).
    #[must_use]
    pub fn new(message_bytes: u64) -> Self {
        assert!(
            (MESSAGE_BYTES_MIN..=MESSAGE_BYTES_MAX).contains(&message_bytes),
            "maxMessageSize {message_bytes} is validated by the configuration"
        );
        let entry_bytes = 2 * message_bytes + ENTRY_HEADROOM_BYTES;
        let size = |bytes: u64| usize::try_from(bytes).expect("at most a few MiB");
        SizeLimits {
            message_bytes: size(message_bytes),
            command_bytes: size(message_bytes + FRAMING_BYTES),
            reply_bytes: size(message_bytes + FRAMING_BYTES),
            entry_bytes: size(entry_bytes),
            journal_batch_bytes: entry_bytes + BATCH_HEADER_BYTES,
            job_batch_bytes: size(message_bytes - FRAMING_BYTES),
            result_variables_bytes: size(message_bytes - FRAMING_BYTES),
        }
    }

    /// The smallest `data.logSegmentSize` that holds the largest batch: the 4 KiB segment
    /// header plus one batch.
    #[must_use]
    pub fn segment_bytes_min(&self) -> u64 {
        sluice_log::segment::DATA_START + self.journal_batch_bytes
    }
}

impl Default for SizeLimits {
    fn default() -> Self {
        SizeLimits::new(MESSAGE_BYTES_DEFAULT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_nest() {
        for message in [MESSAGE_BYTES_MIN, MESSAGE_BYTES_DEFAULT, MESSAGE_BYTES_MAX] {
            let limits = SizeLimits::new(message);
            assert!(limits.command_bytes > limits.message_bytes);
            assert!(limits.entry_bytes >= 2 * limits.command_bytes);
            assert!(limits.job_batch_bytes < limits.message_bytes);
            assert!(limits.result_variables_bytes < limits.message_bytes);
            assert!(limits.journal_batch_bytes > limits.entry_bytes as u64);
            assert!(limits.entry_bytes as u64 <= u64::from(RAFT_ENTRY_PAYLOAD_BYTES_MAX));
        }
        assert_eq!(SizeLimits::default().entry_bytes, (8 << 20) + (256 << 10));
    }
}
