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
    /// A frame did not start with [`crate::frame::FRAME_MAGIC`]: the peer is not a Sluice broker
    /// or the stream lost its place.
    BadMagic {
        /// The four bytes found where the magic belongs, read little-endian.
        magic: u32,
    },
    /// A frame carries a format version this broker does not speak.
    UnsupportedVersion {
        /// The version in the frame header.
        version: u8,
    },
    /// A frame header names a kind this broker does not know.
    UnknownFrameKind {
        /// The kind byte in the frame header.
        kind: u8,
    },
    /// The reserved field of a frame header is not zero.
    ReservedNotZero {
        /// The value found.
        reserved: u16,
    },
    /// A frame body is longer than [`crate::frame::FRAME_BODY_BYTES_MAX`]; nothing of it was
    /// buffered (receiving) or written (sending).
    FrameTooLarge {
        /// The body length announced or offered.
        body_bytes: u64,
        /// The maximum, [`crate::frame::FRAME_BODY_BYTES_MAX`].
        body_bytes_max: u32,
    },
    /// A frame does not match the CRC32C in its header: the bytes were damaged.
    ChecksumMismatch {
        /// The checksum in the header.
        expected: u32,
        /// The checksum as received (over the header fields before it and the body).
        actual: u32,
    },
    /// The stream ended inside a frame.
    TruncatedFrame {
        /// The bytes of the incomplete frame that were received.
        buffered_bytes: usize,
    },
    /// A frame of one kind was handed to the decoder of another.
    UnexpectedFrameKind {
        /// The kind the decoder reads.
        expected: crate::frame::FrameKind,
        /// The kind of the frame.
        actual: crate::frame::FrameKind,
    },
    /// A frame body failed rkyv validation: it is not an archived message of its kind.
    InvalidBody {
        /// The kind of the frame.
        kind: crate::frame::FrameKind,
        /// What the validator found.
        reason: String,
    },
    /// A message breaks a bound of the wire format (counts, sizes, lengths).
    OutOfBounds {
        /// The bounded quantity.
        field: &'static str,
        /// Its value in the message.
        value: u64,
        /// The largest value allowed.
        value_max: u64,
    },
    /// A [`crate::quic::TransportConfig`] field is out of range; nothing was bound.
    InvalidTransportConfig {
        /// The offending field, as spelled in the struct.
        field: &'static str,
        /// What is wrong and which range is accepted.
        reason: String,
    },
    /// A certificate or key file could not be read, parsed or written.
    TlsFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The TLS identity does not make a valid configuration (for example the key does not
    /// match the certificate, or the CA certificate is not a usable trust anchor).
    TlsConfig {
        /// What rustls or the verifier reported.
        reason: String,
    },
    /// A development certificate or key could not be generated.
    CertificateGeneration {
        /// What failed.
        reason: String,
    },
    /// A certificate is not one parsable X.509 certificate (DER), so its node id cannot be read.
    CertificateUnreadable {
        /// What the parser reported.
        reason: String,
    },
    /// A broker certificate names no node: it has no subject alternative name URI
    /// `urn:sluice:node:<id>` (see [`crate::tls::node_id`]).
    NodeIdMissing,
    /// A broker certificate names several nodes, so which node it is would be ambiguous.
    NodeIdAmbiguous {
        /// How many `urn:sluice:node:` names it carries.
        count: usize,
    },
    /// A `urn:sluice:node:` subject alternative name is not followed by a decimal node id.
    NodeIdInvalid {
        /// The name (its first 128 characters).
        uri: String,
    },
    /// The broker is configured as one node and its certificate is issued for another.
    NodeIdMismatch {
        /// The configured node id.
        configured: u32,
        /// The node id in the certificate.
        certificate: u32,
    },
    /// A peer presented a certificate for this broker's own node id: two brokers run with the
    /// same id. The peer was refused in the handshake.
    PeerHasOwnNodeId {
        /// The node id both claim.
        node_id: u32,
    },
    /// The transport's UDP socket could not be set up.
    Bind {
        /// The address it was to be bound to.
        addr: std::net::SocketAddr,
        /// What the operating system reported.
        reason: String,
    },
}

impl fmt::Display for Error {
    #[expect(
        clippy::too_many_lines,
        reason = "one arm per variant: a flat table of messages reads best whole"
    )]
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
            Self::BadMagic { magic } => write!(
                f,
                "frame magic is {magic:#010x}, expected {:#010x}; the peer is not a Sluice \
                 broker or the stream is corrupt, close the connection",
                crate::frame::FRAME_MAGIC
            ),
            Self::UnsupportedVersion { version } => write!(
                f,
                "frame format version {version} is not supported (this broker speaks {}); \
                 run the same Sluice version on every broker",
                crate::frame::FRAME_VERSION
            ),
            Self::UnknownFrameKind { kind } => write!(
                f,
                "frame kind {kind} is unknown; run the same Sluice version on every broker"
            ),
            Self::ReservedNotZero { reserved } => write!(
                f,
                "frame header reserved field is {reserved}, must be 0; the stream is corrupt \
                 or the peer runs a newer format, close the connection"
            ),
            Self::FrameTooLarge {
                body_bytes,
                body_bytes_max,
            } => write!(
                f,
                "frame body is {body_bytes} bytes, more than the {body_bytes_max} allowed; \
                 send smaller batches"
            ),
            Self::ChecksumMismatch { expected, actual } => write!(
                f,
                "frame body checksum is {actual:#010x}, header says {expected:#010x}; the bytes \
                 were damaged in transit, close the connection"
            ),
            Self::TruncatedFrame { buffered_bytes } => write!(
                f,
                "the stream ended {buffered_bytes} bytes into a frame; the peer closed mid-send"
            ),
            Self::UnexpectedFrameKind { expected, actual } => write!(
                f,
                "expected a {expected:?} frame, got a {actual:?} frame; route frames by kind"
            ),
            Self::InvalidBody { kind, reason } => write!(
                f,
                "the body of a {kind:?} frame is not a valid message ({reason}); the peer runs \
                 an incompatible version or has a bug"
            ),
            Self::OutOfBounds {
                field,
                value,
                value_max,
            } => write!(
                f,
                "{field} is {value}, more than the {value_max} the wire format allows; split \
                 the message or check the peer's version"
            ),
            Self::InvalidTransportConfig { field, reason } => {
                write!(f, "invalid transport configuration `{field}`: {reason}")
            }
            Self::TlsFile { path, reason } => write!(f, "{}: {reason}", path.display()),
            Self::TlsConfig { reason } => write!(
                f,
                "invalid TLS identity: {reason}; check the CA, certificate and key files belong \
                 together"
            ),
            Self::CertificateGeneration { reason } => {
                write!(f, "cannot generate a development certificate: {reason}")
            }
            Self::CertificateUnreadable { reason } => write!(
                f,
                "cannot read the certificate as X.509 ({reason}); use a PEM certificate issued by \
                 the cluster CA"
            ),
            Self::NodeIdMissing => write!(
                f,
                "the certificate names no node; issue each broker a certificate with the subject \
                 alternative name URI `{}<node id>` (`sluice certs` makes such development \
                 certificates)",
                crate::tls::NODE_ID_URI_PREFIX
            ),
            Self::NodeIdAmbiguous { count } => write!(
                f,
                "the certificate names {count} nodes (`{}` names); issue it with exactly one, the \
                 broker's node id",
                crate::tls::NODE_ID_URI_PREFIX
            ),
            Self::NodeIdInvalid { uri } => write!(
                f,
                "the certificate's subject alternative name `{uri}` is not `{}` followed by a \
                 decimal node id (0 to {}, no leading zeros); reissue the certificate",
                crate::tls::NODE_ID_URI_PREFIX,
                u32::MAX
            ),
            Self::NodeIdMismatch {
                configured,
                certificate,
            } => write!(
                f,
                "this broker is configured as node {configured} (cluster.nodeId) but its \
                 certificate is issued for node {certificate}; set cluster.nodeId to \
                 {certificate} or give the broker node {configured}'s certificate"
            ),
            Self::PeerHasOwnNodeId { node_id } => write!(
                f,
                "a peer presented a certificate for node {node_id}, this broker's own id; two \
                 brokers run as node {node_id}, give each its own node id and certificate"
            ),
            Self::Bind { addr, reason } => write!(
                f,
                "cannot bind the broker transport to UDP {addr}: {reason}; is another broker \
                 using the port?"
            ),
        }
    }
}

impl std::error::Error for Error {}
