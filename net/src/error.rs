//! The crate's one error type.

use std::fmt;

/// The result of a fallible `sluice-net` call.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in `sluice-net`.
///
/// Programmer errors (time running backwards, broken internal invariants) panic instead; these
/// variants are operating errors: bad configuration, bad input, bad bytes from the network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// A [`crate::swim::SwimConfig`] field is out of range; nothing was started.
    InvalidConfig {
        /// The offending field, as spelled in the struct.
        field: &'static str,
        /// What is wrong and which range is accepted.
        reason: String,
    },
    /// Member metadata is larger than `SwimConfig::metadata_bytes_max`.
    MetadataTooLarge {
        /// The size that was offered.
        bytes: usize,
        /// The configured maximum.
        bytes_max: u32,
    },
    /// A member address is empty or longer than [`crate::swim::ADDRESS_BYTES_MAX`].
    InvalidAddress {
        /// The length of the offending address in bytes.
        address_bytes: usize,
    },
    /// Too many initial contact points were given to `Swim::join`.
    TooManyContactPoints {
        /// How many were given.
        count: usize,
        /// The maximum, [`crate::swim::CONTACT_POINTS_MAX`].
        count_max: usize,
    },
    /// The member has left the cluster with `Swim::leave`; create a new `Swim` to rejoin.
    Left,
    /// An incoming message broke a protocol bound or rule; it was dropped and counted in
    /// `SwimStats::messages_dropped`.
    MalformedMessage {
        /// Which rule the message broke.
        reason: &'static str,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidConfig { field, reason } => {
                write!(f, "invalid gossip configuration `{field}`: {reason}")
            }
            Self::MetadataTooLarge { bytes, bytes_max } => write!(
                f,
                "member metadata is {bytes} bytes, more than the {bytes_max} allowed; \
                 shrink it or raise `metadata_bytes_max` on every broker"
            ),
            Self::InvalidAddress { address_bytes } => write!(
                f,
                "member address is {address_bytes} bytes; it must be 1 to {} bytes",
                crate::swim::ADDRESS_BYTES_MAX
            ),
            Self::TooManyContactPoints { count, count_max } => write!(
                f,
                "{count} initial contact points given, at most {count_max} are used; \
                 list a few stable brokers instead of the whole cluster"
            ),
            Self::Left => write!(
                f,
                "this member has left the cluster; start a new membership instance to rejoin"
            ),
            Self::MalformedMessage { reason } => {
                write!(f, "dropped a malformed gossip message: {reason}")
            }
        }
    }
}

impl std::error::Error for Error {}
