//! The internal command API: append a payload to a partition, or have the partition's engine
//! process a command, and be told when it is committed.
//!
//! Until the gRPC gateway exists, every broker listens for this minimal protocol on its
//! command-API port (`26501 + 10 * i` for broker `i` of `sluice dev`); the gateway will replace
//! it for clients. It carries three kinds of request, [`Request::Append`] (a raw payload, which
//! the engine ignores), [`Request::Command`] (an engine command record) and [`Request::Poll`]
//! (a job activation the leader may keep until jobs arrive), and six kinds of answer
//! ([`Response`]). A client may pipeline: it sends any number of requests on one
//! connection and matches the answers by `request_id`, which the client chooses and the broker
//! echoes.
//!
//! Command and response records are opaque bytes here: the broker encodes one
//! `sluice_engine::Record` with `sluice_engine::record::encode_records(&[record])` and decodes it
//! with `decode_records`. This module only bounds them, like an `Append` payload.
//!
//! # Framing
//!
//! Every message is one frame. All integers are little-endian; there is no `usize` on the wire.
//!
//! ```text
//! offset  bytes  field
//!      0      4  body_bytes   length of the body: 1 ..= MESSAGE_BYTES_MAX
//!      4      4  crc32c       CRC32C (Castagnoli) of the body
//!      8      …  body         byte 0 is the message type, then its fields
//! ```
//!
//! # Bodies
//!
//! ```text
//! type  message       fields after the type byte
//! 0x01  Append        request_id u64 | partition_id u32 | payload_bytes u32 | payload
//! 0x02  Command       request_id u64 | partition_id u32 | command_bytes u32 | command
//!                     (an encoded engine command record)
//! 0x03  Poll          request_id u64 | partition_id u32 | wait_ms u32 | command_bytes u32 |
//!                     command (a job activation command: when it finds no job, the leader
//!                     keeps it up to wait_ms and processes it again as soon as jobs of its
//!                     type become available; answered like a Command)
//! 0x81  Appended      request_id u64 | index u64
//! 0x82  NotLeader     request_id u64 | has_leader u8 (0 or 1)
//!                     [ if 1: node_id u32 | address_bytes u32 | address, UTF-8 "host:port" ]
//! 0x83  Unavailable   request_id u64 | message_bytes u32 | message, UTF-8
//! 0x84  Invalid       request_id u64 | message_bytes u32 | message, UTF-8
//! 0x85  Processed     request_id u64 | index u64 | response_bytes u32 | response
//!                     (the encoded response record; index = log index of the batch that
//!                     committed it, 0 if nothing was written)
//! 0x86  Overloaded    request_id u64 | message_bytes u32 | message, UTF-8
//!                     (the partition's backpressure limit is reached; nothing was written)
//! ```
//!
//! An `Append` is answered `Appended`, a `Command` or `Poll` is answered `Processed` (an engine rejection
//! is a response record too); either may instead be answered `NotLeader`, `Unavailable`,
//! `Invalid` or, for commands only, `Overloaded`.
//!
//! A body must hold exactly its fields: missing bytes, extra bytes, an unknown type, a flag other
//! than 0 or 1, a text that is not UTF-8 or longer than its bound are all
//! [`ClientApiError::Malformed`]. The decoders read the length prefix first and refuse a length
//! above [`MESSAGE_BYTES_MAX`] before buffering the body. An `Append` whose payload (or a
//! `Command` whose command) is larger than [`PAYLOAD_BYTES_MAX`] but still fits in a message
//! decodes: the server answers it with [`Response::Invalid`] (the connection stays usable). A
//! `Processed` response is bounded by [`PAYLOAD_BYTES_MAX`] too, and decodes likewise up to the
//! message limit.
//!
//! Any decoding error means the stream can no longer be trusted: close the connection. A decoder
//! that returned an error keeps returning one.
//!
//! # Receiving
//!
//! ```text
//! let mut decoder = RequestDecoder::new();
//! loop {
//!     on bytes: decoder.push(&bytes);
//!               while let Some(request) = decoder.next_request()? { serve(request) }  // Err: close
//!     on end of stream: decoder.end_of_stream()?  // Err if the stream ended inside a message
//! }
//! ```
//!
//! Draining the decoder after every push keeps its buffer below one frame plus one pushed chunk.
//!
//! # Clients
//!
//! [`AppendClient`] appends one payload or submits one command at a time and hides the cluster:
//! it follows [`Response::NotLeader`] hints, retries [`Response::Unavailable`] and connection
//! failures with a short backoff, and gives up with [`ClientApiError::Timeout`]. A retried request
//! may take effect more than once (see [`AppendClient::command`]). [`Connection`] is one raw,
//! pipelined connection to one broker, for benchmarks and tests.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Bytes of the frame header: body length, then body checksum.
pub const FRAME_HEADER_BYTES: usize = 8;
/// Largest payload of an [`Request::Append`], command of a [`Request::Command`] and response of
/// a [`Response::Processed`], in bytes: a command of the largest `network.maxMessageSize`
/// (partitions check their own configured limits).
pub const PAYLOAD_BYTES_MAX: usize = (7 << 20) + (64 << 10);
/// Largest message body accepted, in bytes: a maximal payload plus room for the fields.
pub const MESSAGE_BYTES_MAX: usize = PAYLOAD_BYTES_MAX + (4 << 10);
const _: () = assert!(
    PAYLOAD_BYTES_MAX as u64 >= crate::limits::MESSAGE_BYTES_MAX + (64 << 10),
    "the command API carries the largest command"
);
/// Largest text of [`Response::Unavailable`] and [`Response::Invalid`], in bytes; longer texts
/// are cut (at a character boundary) when encoded.
pub const TEXT_BYTES_MAX: usize = 1024;
/// Largest leader address in [`Response::NotLeader`], in bytes; longer ones are cut when
/// encoded (a valid host name has at most 253 bytes).
pub const ADDRESS_BYTES_MAX: usize = 300;

/// Message type of [`Request::Append`].
pub const TYPE_APPEND: u8 = 0x01;
/// Message type of [`Request::Command`].
pub const TYPE_COMMAND: u8 = 0x02;
/// Message type of [`Request::Poll`].
pub const TYPE_POLL: u8 = 0x03;
/// Longest wait of a [`Request::Poll`], in ms; longer waits are refused as invalid.
pub const POLL_WAIT_MS_MAX: u32 = 60_000;
/// Message type of [`Response::Appended`].
pub const TYPE_APPENDED: u8 = 0x81;
/// Message type of [`Response::NotLeader`].
pub const TYPE_NOT_LEADER: u8 = 0x82;
/// Message type of [`Response::Unavailable`].
pub const TYPE_UNAVAILABLE: u8 = 0x83;
/// Message type of [`Response::Invalid`].
pub const TYPE_INVALID: u8 = 0x84;
/// Message type of [`Response::Processed`].
pub const TYPE_PROCESSED: u8 = 0x85;
/// Ends the text of a [`Response::Unavailable`] answering a request that may have taken
/// effect (leadership was lost after it was proposed), so that a client does not resend it
/// blindly.
pub const MAYBE_COMMITTED: &str = "may or may not be committed";
/// Message type of [`Response::Overloaded`].
pub const TYPE_OVERLOADED: u8 = 0x86;

/// Bytes of an `Append` or `Command` body before the payload: type, `request_id`,
/// `partition_id`, `payload_bytes` (or `command_bytes`).
const APPEND_FIXED_BYTES: usize = 1 + 8 + 4 + 4;
/// Bytes of a `Processed` body before the response: type, `request_id`, `index`,
/// `response_bytes`.
const PROCESSED_FIXED_BYTES: usize = 1 + 8 + 8 + 4;
const _: () = assert!(APPEND_FIXED_BYTES + PAYLOAD_BYTES_MAX <= MESSAGE_BYTES_MAX);
const _: () = assert!(PROCESSED_FIXED_BYTES + PAYLOAD_BYTES_MAX <= MESSAGE_BYTES_MAX);
/// Consumed bytes at the front of a decoder's buffer that trigger moving the rest to the front,
/// even while fewer than the rest.
const DECODER_COMPACT_BYTES: usize = 1 << 20;

/// Bytes read from a socket at once by [`Connection::recv`].
const READ_CHUNK_BYTES: usize = 64 << 10;
/// [`Connection::send`] writes out its buffer once it holds this many bytes.
const SEND_BUFFER_FLUSH_BYTES: usize = 256 << 10;
/// How long one socket write may block before the connection counts as broken.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest timeout honoured anywhere in this module; longer ones are cut to it.
pub const TIMEOUT_MAX: Duration = Duration::from_hours(24);

/// Longest a single connection attempt of [`AppendClient`] may take.
const CLIENT_CONNECT_TIMEOUT_MAX: Duration = Duration::from_secs(2);
/// Longest [`AppendClient`] waits for one broker's answer before it tries another.
const CLIENT_ANSWER_TIMEOUT_MAX: Duration = Duration::from_secs(5);
/// First pause of [`AppendClient`] after a failed attempt; it doubles after each.
const CLIENT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause of [`AppendClient`] between attempts.
const CLIENT_BACKOFF_MAX: Duration = Duration::from_millis(200);
/// `NotLeader` hints [`AppendClient`] follows in a row without pausing (more mean the brokers
/// disagree, e.g. during an election).
const CLIENT_REDIRECTS_WITHOUT_BACKOFF: u32 = 3;
/// Connections one [`AppendClient`] keeps open; it closes all when it would exceed this.
const CLIENT_CONNECTIONS_MAX: usize = 64;
/// Partitions whose leader one [`AppendClient`] remembers; it forgets all when it would exceed
/// this.
const CLIENT_LEADER_HINTS_MAX: usize = 8192;

/// A request to a broker's command API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Append `payload` to the partition's log and answer once it is committed.
    Append {
        /// Chosen by the client, echoed in the response.
        request_id: u64,
        /// The partition, `1..=partitionsCount`.
        partition_id: u32,
        /// At most [`PAYLOAD_BYTES_MAX`] bytes.
        payload: Vec<u8>,
    },
    /// Have the partition's engine process `command` and answer with its response once the
    /// records it wrote are committed.
    Command {
        /// Chosen by the client, echoed in the response.
        request_id: u64,
        /// The partition, `1..=partitionsCount`.
        partition_id: u32,
        /// One encoded engine command record, opaque to this module; at most
        /// [`PAYLOAD_BYTES_MAX`] bytes.
        command: Vec<u8>,
    },
    /// Like `Command`, for a job activation: when it finds no job to hand out, the leader keeps
    /// it up to `wait_ms` and processes it again as soon as jobs of its type become available
    /// (job push without a polling loop). The answer is the activation's, possibly empty.
    Poll {
        /// Chosen by the client, echoed in the response.
        request_id: u64,
        /// The partition, `1..=partitionsCount`.
        partition_id: u32,
        /// How long the leader may keep the activation, at most [`POLL_WAIT_MS_MAX`].
        wait_ms: u32,
        /// One encoded job-batch activation command record; at most [`PAYLOAD_BYTES_MAX`]
        /// bytes.
        command: Vec<u8>,
    },
}

impl Request {
    /// The client's id of this request.
    #[must_use]
    pub fn request_id(&self) -> u64 {
        match self {
            Request::Append { request_id, .. }
            | Request::Command { request_id, .. }
            | Request::Poll { request_id, .. } => *request_id,
        }
    }
}

/// A broker's answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// The payload is committed at this log index of the partition.
    Appended {
        /// The request's id.
        request_id: u64,
        /// The log index of the committed entry.
        index: u64,
    },
    /// This broker does not lead the partition; `leader` is its best guess (node id and
    /// command-API address "host:port").
    NotLeader {
        /// The request's id.
        request_id: u64,
        /// The leader's node id and command-API address, if this broker knows one.
        leader: Option<(u32, String)>,
    },
    /// Cannot serve now (no leader known, leadership lost before commit, shutting down).
    /// Nothing is acknowledged; the append or command may or may not end up committed.
    Unavailable {
        /// The request's id.
        request_id: u64,
        /// Why, for people; at most [`TEXT_BYTES_MAX`] bytes are sent.
        message: String,
    },
    /// The request is invalid (unknown partition, payload too large): retrying will not help.
    Invalid {
        /// The request's id.
        request_id: u64,
        /// Why, for people; at most [`TEXT_BYTES_MAX`] bytes are sent.
        message: String,
    },
    /// The engine processed the command; `response` is its answer (an engine rejection too).
    Processed {
        /// The request's id.
        request_id: u64,
        /// The log index of the batch that committed the command's records, 0 if it wrote
        /// nothing.
        index: u64,
        /// One encoded engine response record, opaque to this module; at most
        /// [`PAYLOAD_BYTES_MAX`] bytes.
        response: Vec<u8>,
    },
    /// The partition has as many commands in flight as its backpressure limit allows; the
    /// command was not written. Retrying at once adds to the load: clients should back off
    /// (the gateway answers `RESOURCE_EXHAUSTED`).
    Overloaded {
        /// The request's id.
        request_id: u64,
        /// Why, for people; at most [`TEXT_BYTES_MAX`] bytes are sent.
        message: String,
    },
}

impl Response {
    /// The id of the request this answers.
    #[must_use]
    pub fn request_id(&self) -> u64 {
        match self {
            Response::Appended { request_id, .. }
            | Response::NotLeader { request_id, .. }
            | Response::Unavailable { request_id, .. }
            | Response::Invalid { request_id, .. }
            | Response::Processed { request_id, .. }
            | Response::Overloaded { request_id, .. } => *request_id,
        }
    }
}

/// What went wrong talking to a command API. Each message says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientApiError {
    /// A socket operation failed, or the peer closed the connection.
    #[error(
        "command API: {context}: {source}; check that the broker is running and reachable, \
         then reconnect"
    )]
    Io {
        /// What was being done, with the peer's address.
        context: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A message's body does not match its checksum: the stream is corrupt.
    #[error(
        "command API message checksum mismatch: header says {expected:#010x}, body has \
         {actual:#010x}; the stream is corrupt: close the connection and reconnect"
    )]
    ChecksumMismatch {
        /// The checksum in the frame header.
        expected: u32,
        /// The checksum of the body received.
        actual: u32,
    },
    /// A message or payload is above its bound; nothing was buffered or sent for it.
    #[error(
        "command API message or payload of {bytes} bytes exceeds the limit of {bytes_max} bytes; \
         split the data into payloads of at most {PAYLOAD_BYTES_MAX} bytes (if received: the \
         peer is not a Sluice command API, close the connection)"
    )]
    TooLarge {
        /// Its size.
        bytes: u64,
        /// Its bound.
        bytes_max: u64,
    },
    /// A message breaks the format (unknown type, truncated or extra fields, bad text).
    #[error(
        "malformed command API message: {reason}; the peer speaks another protocol or \
         version: close the connection and check both sides run the same Sluice version"
    )]
    Malformed {
        /// Which rule was broken.
        reason: String,
    },
    /// No answer came in time.
    #[error(
        "no answer from the command API within {waited_ms} ms (last problem: {last_problem}); \
         check that the cluster is running (`sluice dev`) and reachable, or allow a longer \
         timeout"
    )]
    Timeout {
        /// How long was waited, in milliseconds.
        waited_ms: u64,
        /// The last thing that went wrong before giving up.
        last_problem: String,
    },
    /// The broker answered [`Response::Invalid`]: retrying will not help.
    #[error("the broker rejected the request: {message}; fix the request, retrying will not help")]
    Rejected {
        /// The broker's reason.
        message: String,
    },
    /// [`AppendClient`] was given no broker address.
    #[error("no broker address given: pass the command-API addresses of the cluster's brokers")]
    NoBrokers,
}

fn malformed(reason: impl Into<String>) -> ClientApiError {
    ClientApiError::Malformed {
        reason: reason.into(),
    }
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

/// A length as a wire `u32`; lengths above `u32::MAX` saturate, which every receiver refuses as
/// too large (they are far above [`MESSAGE_BYTES_MAX`]).
fn wire_len(bytes: usize) -> u32 {
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// Reserves the frame header at the end of `out`; returns where the frame starts.
fn begin_frame(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    start
}

/// Fills in the header of the frame that starts at `start` and runs to the end of `out`.
fn finish_frame(out: &mut [u8], start: usize) {
    let (header, body) = out[start..].split_at_mut(FRAME_HEADER_BYTES);
    header[..4].copy_from_slice(&wire_len(body.len()).to_le_bytes());
    header[4..].copy_from_slice(&crc32c::crc32c(body).to_le_bytes());
}

/// The longest prefix of `text` of at most `bytes_max` bytes that ends at a character boundary.
fn truncate_text(text: &str, bytes_max: usize) -> &str {
    let mut end = text.len().min(bytes_max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn put_text(out: &mut Vec<u8>, text: &str, bytes_max: usize) {
    let text = truncate_text(text, bytes_max);
    out.extend_from_slice(&wire_len(text.len()).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// Appends the frame of an `Append` request to `out`, without building a [`Request`] (no copy of
/// the payload). A payload above [`PAYLOAD_BYTES_MAX`] is encoded as given; the receiver answers
/// it with [`Response::Invalid`], or refuses the whole stream if the message exceeds
/// [`MESSAGE_BYTES_MAX`] (check the size first: [`Connection::send`] does).
pub fn encode_append(request_id: u64, partition_id: u32, payload: &[u8], out: &mut Vec<u8>) {
    encode_partition_request(TYPE_APPEND, request_id, partition_id, payload, out);
}

/// Appends the frame of a `Command` request to `out`, without building a [`Request`] (no copy of
/// the command). Oversized commands are encoded as given, like payloads in [`encode_append`].
pub fn encode_command(request_id: u64, partition_id: u32, command: &[u8], out: &mut Vec<u8>) {
    encode_partition_request(TYPE_COMMAND, request_id, partition_id, command, out);
}

/// Appends the frame of a `Poll` request (see [`Request::Poll`]).
pub fn encode_poll(
    request_id: u64,
    partition_id: u32,
    wait_ms: u32,
    command: &[u8],
    out: &mut Vec<u8>,
) {
    out.reserve(FRAME_HEADER_BYTES + APPEND_FIXED_BYTES + 4 + command.len());
    let start = begin_frame(out);
    out.push(TYPE_POLL);
    out.extend_from_slice(&request_id.to_le_bytes());
    out.extend_from_slice(&partition_id.to_le_bytes());
    out.extend_from_slice(&wait_ms.to_le_bytes());
    out.extend_from_slice(&wire_len(command.len()).to_le_bytes());
    out.extend_from_slice(command);
    finish_frame(out, start);
}

/// `Append` and `Command` share their layout and differ in the type byte only.
fn encode_partition_request(
    message_type: u8,
    request_id: u64,
    partition_id: u32,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    out.reserve(FRAME_HEADER_BYTES + APPEND_FIXED_BYTES + payload.len());
    let start = begin_frame(out);
    out.push(message_type);
    out.extend_from_slice(&request_id.to_le_bytes());
    out.extend_from_slice(&partition_id.to_le_bytes());
    out.extend_from_slice(&wire_len(payload.len()).to_le_bytes());
    out.extend_from_slice(payload);
    finish_frame(out, start);
}

/// Appends the frame of `request` to `out`. See [`encode_append`] for oversized payloads.
pub fn encode_request(request: &Request, out: &mut Vec<u8>) {
    match request {
        Request::Append {
            request_id,
            partition_id,
            payload,
        } => encode_append(*request_id, *partition_id, payload, out),
        Request::Command {
            request_id,
            partition_id,
            command,
        } => encode_command(*request_id, *partition_id, command, out),
        Request::Poll {
            request_id,
            partition_id,
            wait_ms,
            command,
        } => encode_poll(*request_id, *partition_id, *wait_ms, command, out),
    }
}

/// Appends the frame of `response` to `out`. Texts longer than [`TEXT_BYTES_MAX`] and addresses
/// longer than [`ADDRESS_BYTES_MAX`] are cut at a character boundary. A `Processed` response
/// above [`PAYLOAD_BYTES_MAX`] is encoded as given, like a payload in [`encode_append`]; keep it
/// within the bound.
pub fn encode_response(response: &Response, out: &mut Vec<u8>) {
    let start = begin_frame(out);
    match response {
        Response::Appended { request_id, index } => {
            out.push(TYPE_APPENDED);
            out.extend_from_slice(&request_id.to_le_bytes());
            out.extend_from_slice(&index.to_le_bytes());
        }
        Response::NotLeader { request_id, leader } => {
            out.push(TYPE_NOT_LEADER);
            out.extend_from_slice(&request_id.to_le_bytes());
            match leader {
                None => out.push(0),
                Some((node_id, address)) => {
                    out.push(1);
                    out.extend_from_slice(&node_id.to_le_bytes());
                    put_text(out, address, ADDRESS_BYTES_MAX);
                }
            }
        }
        Response::Unavailable {
            request_id,
            message,
        } => {
            out.push(TYPE_UNAVAILABLE);
            out.extend_from_slice(&request_id.to_le_bytes());
            put_text(out, message, TEXT_BYTES_MAX);
        }
        Response::Invalid {
            request_id,
            message,
        } => {
            out.push(TYPE_INVALID);
            out.extend_from_slice(&request_id.to_le_bytes());
            put_text(out, message, TEXT_BYTES_MAX);
        }
        Response::Overloaded {
            request_id,
            message,
        } => {
            out.push(TYPE_OVERLOADED);
            out.extend_from_slice(&request_id.to_le_bytes());
            put_text(out, message, TEXT_BYTES_MAX);
        }
        Response::Processed {
            request_id,
            index,
            response,
        } => {
            out.reserve(PROCESSED_FIXED_BYTES + response.len());
            out.push(TYPE_PROCESSED);
            out.extend_from_slice(&request_id.to_le_bytes());
            out.extend_from_slice(&index.to_le_bytes());
            out.extend_from_slice(&wire_len(response.len()).to_le_bytes());
            out.extend_from_slice(response);
        }
    }
    finish_frame(out, start);
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

/// Reads the fields of one body front to back; every read checks the bytes are there.
struct Fields<'a> {
    bytes: &'a [u8],
    message: &'static str,
}

impl<'a> Fields<'a> {
    fn take(&mut self, count: usize, field: &str) -> Result<&'a [u8], ClientApiError> {
        if self.bytes.len() < count {
            return Err(malformed(format!(
                "truncated {} message: field {field} needs {count} bytes, {} left",
                self.message,
                self.bytes.len()
            )));
        }
        let (taken, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(taken)
    }

    fn u8(&mut self, field: &str) -> Result<u8, ClientApiError> {
        Ok(self.take(1, field)?[0])
    }

    fn u32(&mut self, field: &str) -> Result<u32, ClientApiError> {
        let mut bytes = [0; 4];
        bytes.copy_from_slice(self.take(4, field)?);
        Ok(u32::from_le_bytes(bytes))
    }

    fn u64(&mut self, field: &str) -> Result<u64, ClientApiError> {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(self.take(8, field)?);
        Ok(u64::from_le_bytes(bytes))
    }

    /// A `u32` length, then that many bytes; the length must not exceed `bytes_max`.
    fn sized(&mut self, field: &str, bytes_max: usize) -> Result<&'a [u8], ClientApiError> {
        let length = self.u32(field)?;
        let length = usize::try_from(length)
            .ok()
            .filter(|length| *length <= bytes_max)
            .ok_or_else(|| {
                malformed(format!(
                    "{} message: {field} of {length} bytes exceeds its limit of {bytes_max}",
                    self.message
                ))
            })?;
        self.take(length, field)
    }

    fn text(&mut self, field: &str, bytes_max: usize) -> Result<String, ClientApiError> {
        let bytes = self.sized(field, bytes_max)?;
        String::from_utf8(bytes.to_vec()).map_err(|error| {
            malformed(format!(
                "{} message: {field} is not UTF-8 ({error})",
                self.message
            ))
        })
    }

    fn finish(self) -> Result<(), ClientApiError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(malformed(format!(
                "{} message has {} bytes after its last field",
                self.message,
                self.bytes.len()
            )))
        }
    }
}

fn decode_request_body(body: &[u8]) -> Result<Request, ClientApiError> {
    let message_type = body[0];
    let (message, payload_field) = match message_type {
        TYPE_APPEND => ("Append", "payload"),
        TYPE_COMMAND => ("Command", "command"),
        TYPE_POLL => ("Poll", "command"),
        other => {
            return Err(malformed(format!(
                "unknown request type {other:#04x} (expected {TYPE_APPEND:#04x}, Append, \
                 {TYPE_COMMAND:#04x}, Command, or {TYPE_POLL:#04x}, Poll)"
            )));
        }
    };
    let mut fields = Fields {
        bytes: &body[1..],
        message,
    };
    let request_id = fields.u64("request_id")?;
    let partition_id = fields.u32("partition_id")?;
    let wait_ms = if message_type == TYPE_POLL {
        fields.u32("wait_ms")?
    } else {
        0
    };
    // Above PAYLOAD_BYTES_MAX still decodes: the server answers Invalid and keeps the stream.
    let payload = fields.sized(payload_field, MESSAGE_BYTES_MAX)?.to_vec();
    fields.finish()?;
    Ok(match message_type {
        TYPE_APPEND => Request::Append {
            request_id,
            partition_id,
            payload,
        },
        TYPE_COMMAND => Request::Command {
            request_id,
            partition_id,
            command: payload,
        },
        _ => Request::Poll {
            request_id,
            partition_id,
            wait_ms,
            command: payload,
        },
    })
}

fn decode_response_body(body: &[u8]) -> Result<Response, ClientApiError> {
    let message_type = body[0];
    let message = match message_type {
        TYPE_APPENDED => "Appended",
        TYPE_NOT_LEADER => "NotLeader",
        TYPE_UNAVAILABLE => "Unavailable",
        TYPE_INVALID => "Invalid",
        TYPE_PROCESSED => "Processed",
        TYPE_OVERLOADED => "Overloaded",
        other => {
            return Err(malformed(format!(
                "unknown response type {other:#04x} (expected {TYPE_APPENDED:#04x} ..= \
                 {TYPE_OVERLOADED:#04x})"
            )));
        }
    };
    let mut fields = Fields {
        bytes: &body[1..],
        message,
    };
    let request_id = fields.u64("request_id")?;
    let response = match message_type {
        TYPE_APPENDED => Response::Appended {
            request_id,
            index: fields.u64("index")?,
        },
        TYPE_NOT_LEADER => {
            let leader = match fields.u8("has_leader")? {
                0 => None,
                1 => {
                    let node_id = fields.u32("node_id")?;
                    Some((node_id, fields.text("address", ADDRESS_BYTES_MAX)?))
                }
                flag => {
                    return Err(malformed(format!(
                        "NotLeader message: has_leader is {flag}, must be 0 or 1"
                    )));
                }
            };
            Response::NotLeader { request_id, leader }
        }
        TYPE_UNAVAILABLE => Response::Unavailable {
            request_id,
            message: fields.text("message", TEXT_BYTES_MAX)?,
        },
        TYPE_INVALID => Response::Invalid {
            request_id,
            message: fields.text("message", TEXT_BYTES_MAX)?,
        },
        TYPE_OVERLOADED => Response::Overloaded {
            request_id,
            message: fields.text("message", TEXT_BYTES_MAX)?,
        },
        _ => Response::Processed {
            request_id,
            index: fields.u64("index")?,
            response: fields.sized("response", MESSAGE_BYTES_MAX)?.to_vec(),
        },
    };
    fields.finish()?;
    Ok(response)
}

/// Splits a byte stream into checksummed frame bodies; shared by both decoders.
#[derive(Debug, Default)]
struct FrameDecoder {
    buffer: Vec<u8>,
    /// Bytes at the front of `buffer` already decoded.
    consumed: usize,
    /// Set by the first error: the stream is out of step for good.
    failed: bool,
}

impl FrameDecoder {
    fn push(&mut self, bytes: &[u8]) {
        if self.failed {
            return;
        }
        if self.consumed == self.buffer.len() {
            self.buffer.clear();
            self.consumed = 0;
        } else if self.consumed >= DECODER_COMPACT_BYTES
            || self.consumed >= self.buffer.len() - self.consumed
        {
            // Moving the rest costs no more than the bytes consumed since the last move.
            self.buffer.drain(..self.consumed);
            self.consumed = 0;
        }
        self.buffer.extend_from_slice(bytes);
    }

    fn fail(&mut self, error: ClientApiError) -> ClientApiError {
        self.failed = true;
        self.buffer = Vec::new();
        self.consumed = 0;
        error
    }

    fn check_not_failed(&self) -> Result<(), ClientApiError> {
        if self.failed {
            Err(malformed(
                "the stream already failed to decode and is out of step",
            ))
        } else {
            Ok(())
        }
    }

    /// The next whole frame's body (at least one byte), or `None` until more bytes arrive.
    fn next_body(&mut self) -> Result<Option<&[u8]>, ClientApiError> {
        self.check_not_failed()?;
        let available = &self.buffer[self.consumed..];
        if available.len() < FRAME_HEADER_BYTES {
            return Ok(None);
        }
        let mut word = [0; 4];
        word.copy_from_slice(&available[..4]);
        let body_bytes = u32::from_le_bytes(word);
        word.copy_from_slice(&available[4..8]);
        let expected = u32::from_le_bytes(word);
        let body_len = match usize::try_from(body_bytes) {
            Ok(0) => return Err(self.fail(malformed("empty message (body length 0)"))),
            Ok(len) if len <= MESSAGE_BYTES_MAX => len,
            _ => {
                return Err(self.fail(ClientApiError::TooLarge {
                    bytes: u64::from(body_bytes),
                    bytes_max: MESSAGE_BYTES_MAX as u64,
                }));
            }
        };
        if available.len() - FRAME_HEADER_BYTES < body_len {
            return Ok(None);
        }
        let body_start = self.consumed + FRAME_HEADER_BYTES;
        let body_end = body_start + body_len;
        let actual = crc32c::crc32c(&self.buffer[body_start..body_end]);
        if actual != expected {
            return Err(self.fail(ClientApiError::ChecksumMismatch { expected, actual }));
        }
        self.consumed = body_end;
        Ok(Some(&self.buffer[body_start..body_end]))
    }

    fn end_of_stream(&mut self) -> Result<(), ClientApiError> {
        self.check_not_failed()?;
        let left = self.buffer.len() - self.consumed;
        if left == 0 {
            Ok(())
        } else {
            Err(self.fail(malformed(format!(
                "the stream ended inside a message ({left} bytes of it received)"
            ))))
        }
    }

    fn buffered_bytes(&self) -> usize {
        self.buffer.len() - self.consumed
    }
}

/// Decodes requests from a byte stream (the server side). See the [module docs](self).
#[derive(Debug, Default)]
pub struct RequestDecoder {
    frames: FrameDecoder,
}

impl RequestDecoder {
    /// An empty decoder for a new connection.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds received bytes. Drain with [`Self::next_request`] after each push.
    pub fn push(&mut self, bytes: &[u8]) {
        self.frames.push(bytes);
    }

    /// The next complete request, or `None` until more bytes arrive. After an error, close the
    /// connection: every later call fails too.
    pub fn next_request(&mut self) -> Result<Option<Request>, ClientApiError> {
        let Some(body) = self.frames.next_body()? else {
            return Ok(None);
        };
        match decode_request_body(body) {
            Ok(request) => Ok(Some(request)),
            Err(error) => Err(self.frames.fail(error)),
        }
    }

    /// Call when the peer closed the stream: an error if it stopped inside a message.
    pub fn end_of_stream(&mut self) -> Result<(), ClientApiError> {
        self.frames.end_of_stream()
    }

    /// Bytes received but not yet decoded.
    #[must_use]
    pub fn buffered_bytes(&self) -> usize {
        self.frames.buffered_bytes()
    }
}

/// Decodes responses from a byte stream (the client side). See the [module docs](self).
#[derive(Debug, Default)]
pub struct ResponseDecoder {
    frames: FrameDecoder,
}

impl ResponseDecoder {
    /// An empty decoder for a new connection.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds received bytes. Drain with [`Self::next_response`] after each push.
    pub fn push(&mut self, bytes: &[u8]) {
        self.frames.push(bytes);
    }

    /// The next complete response, or `None` until more bytes arrive. After an error, close the
    /// connection: every later call fails too.
    pub fn next_response(&mut self) -> Result<Option<Response>, ClientApiError> {
        let Some(body) = self.frames.next_body()? else {
            return Ok(None);
        };
        match decode_response_body(body) {
            Ok(response) => Ok(Some(response)),
            Err(error) => Err(self.frames.fail(error)),
        }
    }

    /// Call when the peer closed the stream: an error if it stopped inside a message.
    pub fn end_of_stream(&mut self) -> Result<(), ClientApiError> {
        self.frames.end_of_stream()
    }

    /// Bytes received but not yet decoded.
    #[must_use]
    pub fn buffered_bytes(&self) -> usize {
        self.frames.buffered_bytes()
    }
}

// ---------------------------------------------------------------------------------------------
// Connection
// ---------------------------------------------------------------------------------------------

fn check_payload(payload: &[u8]) -> Result<(), ClientApiError> {
    if payload.len() > PAYLOAD_BYTES_MAX {
        return Err(ClientApiError::TooLarge {
            bytes: payload.len() as u64,
            bytes_max: PAYLOAD_BYTES_MAX as u64,
        });
    }
    Ok(())
}

/// One blocking connection to one broker's command API, for pipelined use: send requests, flush,
/// then receive the answers in whatever order the broker sends them (match them by
/// `request_id`).
///
/// After any error other than [`ClientApiError::Timeout`] from [`Self::recv`] and
/// [`ClientApiError::TooLarge`] from [`Self::send`], the connection is broken: drop it and
/// connect anew.
#[derive(Debug)]
pub struct Connection {
    addr: SocketAddr,
    stream: TcpStream,
    outgoing: Vec<u8>,
    decoder: ResponseDecoder,
    read_chunk: Vec<u8>,
}

impl Connection {
    /// Connects to the command API at `addr`, waiting at most `timeout` (at least 1 ms).
    pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<Self, ClientApiError> {
        let timeout = timeout.clamp(Duration::from_millis(1), TIMEOUT_MAX);
        let io_error = |action: &str, source| ClientApiError::Io {
            context: format!("{action} {addr}"),
            source,
        };
        let stream = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|source| io_error("connecting to", source))?;
        stream
            .set_nodelay(true)
            .map_err(|source| io_error("setting TCP_NODELAY on the connection to", source))?;
        stream
            .set_write_timeout(Some(WRITE_TIMEOUT))
            .map_err(|source| io_error("setting the write timeout of the connection to", source))?;
        Ok(Self {
            addr,
            stream,
            outgoing: Vec::new(),
            decoder: ResponseDecoder::new(),
            read_chunk: vec![0; READ_CHUNK_BYTES],
        })
    }

    /// The broker's address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queues `request`; [`Self::flush`] writes the queue (it is also written once it holds
    /// 256 KiB). A payload or command above [`PAYLOAD_BYTES_MAX`] is refused with
    /// [`ClientApiError::TooLarge`] and nothing is queued.
    pub fn send(&mut self, request: &Request) -> Result<(), ClientApiError> {
        match request {
            Request::Append {
                request_id,
                partition_id,
                payload,
            } => self.send_append(*request_id, *partition_id, payload),
            Request::Command {
                request_id,
                partition_id,
                command,
            } => self.send_command(*request_id, *partition_id, command),
            Request::Poll {
                request_id,
                partition_id,
                wait_ms,
                command,
            } => {
                check_payload(command)?;
                encode_poll(
                    *request_id,
                    *partition_id,
                    *wait_ms,
                    command,
                    &mut self.outgoing,
                );
                self.flush_if_full()
            }
        }
    }

    /// [`Self::send`] of an `Append`, without building a [`Request`] (no copy of the payload).
    pub fn send_append(
        &mut self,
        request_id: u64,
        partition_id: u32,
        payload: &[u8],
    ) -> Result<(), ClientApiError> {
        check_payload(payload)?;
        encode_append(request_id, partition_id, payload, &mut self.outgoing);
        self.flush_if_full()
    }

    /// [`Self::send`] of a `Command`, without building a [`Request`] (no copy of the command).
    pub fn send_command(
        &mut self,
        request_id: u64,
        partition_id: u32,
        command: &[u8],
    ) -> Result<(), ClientApiError> {
        check_payload(command)?;
        encode_command(request_id, partition_id, command, &mut self.outgoing);
        self.flush_if_full()
    }

    fn flush_if_full(&mut self) -> Result<(), ClientApiError> {
        if self.outgoing.len() >= SEND_BUFFER_FLUSH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes every queued request to the socket.
    pub fn flush(&mut self) -> Result<(), ClientApiError> {
        if self.outgoing.is_empty() {
            return Ok(());
        }
        let result = self
            .stream
            .write_all(&self.outgoing)
            .and_then(|()| self.stream.flush());
        self.outgoing.clear();
        result.map_err(|source| ClientApiError::Io {
            context: format!("sending to {}", self.addr),
            source,
        })
    }

    /// The next response, waiting at most `timeout` for it. A timeout leaves the connection
    /// usable: a response that arrives later is returned by a later call.
    pub fn recv(&mut self, timeout: Duration) -> Result<Response, ClientApiError> {
        let started = Instant::now();
        let deadline = started + timeout.min(TIMEOUT_MAX);
        loop {
            if let Some(response) = self.decoder.next_response()? {
                return Ok(response);
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ClientApiError::Timeout {
                    waited_ms: duration_ms(started.elapsed()),
                    last_problem: format!("no response from {}", self.addr),
                });
            }
            let io_error = |source| ClientApiError::Io {
                context: format!("receiving from {}", self.addr),
                source,
            };
            self.stream
                .set_read_timeout(Some(remaining))
                .map_err(io_error)?;
            match self.stream.read(&mut self.read_chunk) {
                Ok(0) => {
                    return Err(io_error(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the broker closed the connection",
                    )));
                }
                Ok(read) => self.decoder.push(&self.read_chunk[..read]),
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(error) => return Err(io_error(error)),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// AppendClient
// ---------------------------------------------------------------------------------------------

/// What [`AppendClient`] submits: the body of an `Append` or of a `Command`.
#[derive(Debug, Clone, Copy)]
enum Submission<'a> {
    Append(&'a [u8]),
    Command(&'a [u8]),
}

impl<'a> Submission<'a> {
    fn payload(self) -> &'a [u8] {
        match self {
            Submission::Append(payload) | Submission::Command(payload) => payload,
        }
    }

    fn send(
        self,
        connection: &mut Connection,
        request_id: u64,
        partition_id: u32,
    ) -> Result<(), ClientApiError> {
        match self {
            Submission::Append(payload) => {
                connection.send_append(request_id, partition_id, payload)
            }
            Submission::Command(command) => {
                connection.send_command(request_id, partition_id, command)
            }
        }
    }
}

/// How one attempt of [`AppendClient::submit`] ended.
enum Attempt {
    /// Committed at this index; `response` is the engine's answer to a command (empty for an
    /// append).
    Committed {
        index: u64,
        response: Vec<u8>,
    },
    Rejected(String),
    /// The broker answered with the wrong kind of success (`Appended` to a command or
    /// `Processed` to an append): it speaks another version of the protocol.
    Mismatched(String),
    /// The broker pointed to another one.
    Redirect(SocketAddr),
    /// Try again after a pause. `forget_target`: the target is gone or not the leader.
    Retry {
        problem: String,
        forget_target: bool,
    },
}

/// Resolves a "host:port" leader address to its first socket address.
fn resolve(address: &str) -> Option<SocketAddr> {
    address.to_socket_addrs().ok()?.next()
}

/// Appends payloads to and submits engine commands to a cluster one at a time, hiding leaders,
/// redirects and retries.
///
/// It keeps one connection per broker it talked to and remembers each partition's leader.
#[derive(Debug)]
pub struct AppendClient {
    brokers: Vec<SocketAddr>,
    /// Which of `brokers` to try next when no leader is known.
    next_broker: usize,
    connections: HashMap<SocketAddr, Connection>,
    leaders: HashMap<u32, SocketAddr>,
    next_request_id: u64,
}

impl AppendClient {
    /// `brokers`: command-API addresses of any brokers of the cluster.
    #[must_use]
    pub fn new(brokers: Vec<SocketAddr>) -> Self {
        Self {
            brokers,
            next_broker: 0,
            connections: HashMap::new(),
            leaders: HashMap::new(),
            next_request_id: 1,
        }
    }

    /// The brokers given to [`Self::new`].
    #[must_use]
    pub fn brokers(&self) -> &[SocketAddr] {
        &self.brokers
    }

    /// The command-API address of the broker that last committed for, or was named leader of,
    /// `partition_id`.
    #[must_use]
    pub fn leader_of(&self, partition_id: u32) -> Option<SocketAddr> {
        self.leaders.get(&partition_id).copied()
    }

    /// Appends and waits until committed. Follows `NotLeader` hints (connecting to the named
    /// broker, resolving host:port), retries `Unavailable` and connection failures with a short
    /// backoff, rotating through `brokers` when no hint, until `timeout` elapses →
    /// `Err(Timeout)`. Returns the committed index.
    ///
    /// A retried append may be committed more than once (an `Unavailable` or a lost
    /// connection does not say whether the earlier try was committed).
    pub fn append(
        &mut self,
        partition_id: u32,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<u64, ClientApiError> {
        self.submit(partition_id, Submission::Append(payload), timeout)
            .map(|(index, _)| index)
    }

    /// Has the partition's engine process `command` (one encoded command record) and waits
    /// until the records it wrote are committed. Follows hints, retries and times out exactly
    /// like [`Self::append`]. Returns the log index of the batch that committed it (0 if the
    /// command wrote nothing) and the encoded response record.
    ///
    /// A retried command may be processed more than once: an `Unavailable`, a lost connection
    /// or a broker too slow to answer does not say whether the earlier try was processed, so a
    /// create whose answer was lost may create twice. The same holds for an
    /// `Err(Timeout)`: the command may have been processed.
    pub fn command(
        &mut self,
        partition_id: u32,
        command: &[u8],
        timeout: Duration,
    ) -> Result<(u64, Vec<u8>), ClientApiError> {
        self.submit(partition_id, Submission::Command(command), timeout)
    }

    /// The retry loop of [`Self::append`] and [`Self::command`].
    fn submit(
        &mut self,
        partition_id: u32,
        submission: Submission<'_>,
        timeout: Duration,
    ) -> Result<(u64, Vec<u8>), ClientApiError> {
        check_payload(submission.payload())?;
        if self.brokers.is_empty() {
            return Err(ClientApiError::NoBrokers);
        }
        let started = Instant::now();
        let deadline = started + timeout.min(TIMEOUT_MAX);
        let mut backoff = CLIENT_BACKOFF_MIN;
        let mut redirects_in_a_row = 0;
        let mut last_problem = String::from("no attempt could start");
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ClientApiError::Timeout {
                    waited_ms: duration_ms(started.elapsed()),
                    last_problem,
                });
            }
            let target = self
                .leaders
                .get(&partition_id)
                .copied()
                .unwrap_or(self.brokers[self.next_broker % self.brokers.len()]);
            match self.attempt(target, partition_id, submission, remaining) {
                Attempt::Committed { index, response } => {
                    self.remember_leader(partition_id, target);
                    return Ok((index, response));
                }
                Attempt::Rejected(message) => return Err(ClientApiError::Rejected { message }),
                Attempt::Mismatched(reason) => return Err(malformed(reason)),
                Attempt::Redirect(leader) => {
                    last_problem = format!(
                        "{target} does not lead partition {partition_id} and names {leader}"
                    );
                    self.remember_leader(partition_id, leader);
                    if redirects_in_a_row < CLIENT_REDIRECTS_WITHOUT_BACKOFF {
                        redirects_in_a_row += 1;
                        continue;
                    }
                }
                Attempt::Retry {
                    problem,
                    forget_target,
                } => {
                    last_problem = problem;
                    if forget_target {
                        self.leaders.remove(&partition_id);
                    }
                    // Without a (still valid) hint, the next attempt goes to the next broker.
                    self.next_broker = (self.next_broker + 1) % self.brokers.len();
                }
            }
            redirects_in_a_row = 0;
            let remaining = deadline.saturating_duration_since(Instant::now());
            std::thread::sleep(backoff.min(remaining));
            backoff = (backoff * 2).min(CLIENT_BACKOFF_MAX);
        }
    }

    fn remember_leader(&mut self, partition_id: u32, leader: SocketAddr) {
        if self.leaders.len() >= CLIENT_LEADER_HINTS_MAX
            && !self.leaders.contains_key(&partition_id)
        {
            self.leaders.clear();
        }
        self.leaders.insert(partition_id, leader);
    }

    /// One request to `target`, waiting at most `remaining` (and at most
    /// `CLIENT_ANSWER_TIMEOUT_MAX`) for its answer.
    fn attempt(
        &mut self,
        target: SocketAddr,
        partition_id: u32,
        submission: Submission<'_>,
        remaining: Duration,
    ) -> Attempt {
        let attempt_deadline = Instant::now() + remaining.min(CLIENT_ANSWER_TIMEOUT_MAX);
        if self.connections.len() >= CLIENT_CONNECTIONS_MAX
            && !self.connections.contains_key(&target)
        {
            self.connections.clear();
        }
        let connection = match self.connections.entry(target) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                match Connection::connect(target, remaining.min(CLIENT_CONNECT_TIMEOUT_MAX)) {
                    Ok(connection) => entry.insert(connection),
                    Err(error) => {
                        return Attempt::Retry {
                            problem: error.to_string(),
                            forget_target: true,
                        };
                    }
                }
            }
        };
        let request_id = self.next_request_id;
        self.next_request_id = self.next_request_id.wrapping_add(1);
        let answer = submission
            .send(connection, request_id, partition_id)
            .and_then(|()| connection.flush())
            .and_then(|()| {
                loop {
                    let wait = attempt_deadline.saturating_duration_since(Instant::now());
                    let response = connection.recv(wait)?;
                    // Answers to earlier attempts that timed out are skipped.
                    if response.request_id() == request_id {
                        break Ok(response);
                    }
                }
            });
        let response = match answer {
            Ok(response) => response,
            Err(error) => {
                // Broken, or silent for too long: start afresh, maybe elsewhere.
                self.connections.remove(&target);
                return Attempt::Retry {
                    problem: error.to_string(),
                    forget_target: true,
                };
            }
        };
        self.judge(target, partition_id, submission, response)
    }

    /// What the broker's `response` to `submission` means for the retry loop.
    fn judge(
        &mut self,
        target: SocketAddr,
        partition_id: u32,
        submission: Submission<'_>,
        response: Response,
    ) -> Attempt {
        match (submission, response) {
            (Submission::Append(_), Response::Appended { index, .. }) => Attempt::Committed {
                index,
                response: Vec::new(),
            },
            (
                Submission::Command(_),
                Response::Processed {
                    index, response, ..
                },
            ) => Attempt::Committed { index, response },
            (Submission::Command(_), Response::Appended { .. })
            | (Submission::Append(_), Response::Processed { .. }) => {
                // Not retried: the request took effect, and a retry would repeat it.
                self.connections.remove(&target);
                let (request, expected, got) = match submission {
                    Submission::Append(_) => ("Append", "Appended", "Processed"),
                    Submission::Command(_) => ("Command", "Processed", "Appended"),
                };
                Attempt::Mismatched(format!(
                    "{target} answered the {request} request to partition {partition_id} with \
                     {got} instead of {expected}"
                ))
            }
            (_, Response::Invalid { message, .. }) => Attempt::Rejected(message),
            (_, Response::Unavailable { message, .. }) => Attempt::Retry {
                problem: format!("{target} is unavailable: {message}"),
                forget_target: false,
            },
            (_, Response::Overloaded { message, .. }) => Attempt::Retry {
                problem: format!("{target} is overloaded: {message}"),
                forget_target: false,
            },
            (_, Response::NotLeader { leader: None, .. }) => Attempt::Retry {
                problem: format!(
                    "{target} does not lead partition {partition_id} nor know who does"
                ),
                forget_target: true,
            },
            (
                _,
                Response::NotLeader {
                    leader: Some((node_id, address)),
                    ..
                },
            ) => match resolve(&address) {
                Some(leader) if leader != target => Attempt::Redirect(leader),
                Some(_) => Attempt::Retry {
                    problem: format!(
                        "{target} does not lead partition {partition_id} yet names itself as leader"
                    ),
                    forget_target: true,
                },
                None => Attempt::Retry {
                    problem: format!(
                        "{target} names node {node_id} at {address:?} as leader of partition \
                         {partition_id}, but that address does not resolve"
                    ),
                    forget_target: true,
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::thread::JoinHandle;

    fn all_responses() -> Vec<Response> {
        vec![
            Response::Appended {
                request_id: 7,
                index: u64::MAX,
            },
            Response::NotLeader {
                request_id: 8,
                leader: None,
            },
            Response::NotLeader {
                request_id: u64::MAX,
                leader: Some((2, "broker-2.example:26521".to_owned())),
            },
            Response::Unavailable {
                request_id: 0,
                message: "no leader known for partition 3; retry shortly".to_owned(),
            },
            Response::Unavailable {
                request_id: 1,
                message: String::new(),
            },
            Response::Invalid {
                request_id: 9,
                message: "unknown partition 99 — there are 3".to_owned(),
            },
            Response::Overloaded {
                request_id: 11,
                message: "partition 2 has 40 commands in flight, its limit".to_owned(),
            },
            Response::Processed {
                request_id: 10,
                index: 12,
                response: b"\x01response record".to_vec(),
            },
            Response::Processed {
                request_id: u64::MAX,
                index: 0,
                response: Vec::new(),
            },
        ]
    }

    fn all_requests() -> Vec<Request> {
        vec![
            Request::Append {
                request_id: 1,
                partition_id: 3,
                payload: b"hello".to_vec(),
            },
            Request::Append {
                request_id: u64::MAX,
                partition_id: u32::MAX,
                payload: Vec::new(),
            },
            Request::Append {
                request_id: 0x0102_0304_0506_0708,
                partition_id: 1,
                payload: (0..=255).collect(),
            },
            Request::Command {
                request_id: 2,
                partition_id: 3,
                command: b"\x00command record".to_vec(),
            },
            Request::Command {
                request_id: u64::MAX,
                partition_id: u32::MAX,
                command: Vec::new(),
            },
            Request::Poll {
                request_id: 3,
                partition_id: 2,
                wait_ms: 10_000,
                command: b"\x00activate".to_vec(),
            },
            Request::Poll {
                request_id: u64::MAX,
                partition_id: u32::MAX,
                wait_ms: u32::MAX,
                command: Vec::new(),
            },
        ]
    }

    fn decode_requests(bytes: &[u8]) -> Result<Vec<Request>, ClientApiError> {
        let mut decoder = RequestDecoder::new();
        decoder.push(bytes);
        let mut requests = Vec::new();
        while let Some(request) = decoder.next_request()? {
            requests.push(request);
        }
        decoder.end_of_stream()?;
        Ok(requests)
    }

    fn decode_responses(bytes: &[u8]) -> Result<Vec<Response>, ClientApiError> {
        let mut decoder = ResponseDecoder::new();
        decoder.push(bytes);
        let mut responses = Vec::new();
        while let Some(response) = decoder.next_response()? {
            responses.push(response);
        }
        decoder.end_of_stream()?;
        Ok(responses)
    }

    /// A frame around `body` with a correct header.
    fn frame(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let start = begin_frame(&mut out);
        out.extend_from_slice(body);
        finish_frame(&mut out, start);
        out
    }

    #[test]
    fn client_api_roundtrip_every_variant() {
        for request in all_requests() {
            let mut bytes = Vec::new();
            encode_request(&request, &mut bytes);
            let decoded = decode_requests(&bytes).expect("a valid request decodes");
            assert_eq!(decoded, vec![request]);
        }
        for response in all_responses() {
            let mut bytes = Vec::new();
            encode_response(&response, &mut bytes);
            let decoded = decode_responses(&bytes).expect("a valid response decodes");
            assert_eq!(decoded, vec![response]);
        }
    }

    #[test]
    fn client_api_wire_layout_is_little_endian() {
        let mut bytes = Vec::new();
        encode_request(
            &Request::Append {
                request_id: 0x0102_0304_0506_0708,
                partition_id: 0x0A0B_0C0D,
                payload: vec![0xEE; 3],
            },
            &mut bytes,
        );
        let body: Vec<u8> = [
            vec![TYPE_APPEND],
            vec![8, 7, 6, 5, 4, 3, 2, 1],
            vec![0x0D, 0x0C, 0x0B, 0x0A],
            vec![3, 0, 0, 0],
            vec![0xEE; 3],
        ]
        .concat();
        assert_eq!(&bytes[..4], &20u32.to_le_bytes());
        assert_eq!(&bytes[4..8], &crc32c::crc32c(&body).to_le_bytes());
        assert_eq!(&bytes[8..], &body[..]);

        let mut bytes = Vec::new();
        encode_response(
            &Response::NotLeader {
                request_id: 5,
                leader: Some((2, "h:1".to_owned())),
            },
            &mut bytes,
        );
        let body: Vec<u8> = [
            vec![TYPE_NOT_LEADER],
            5u64.to_le_bytes().to_vec(),
            vec![1],
            2u32.to_le_bytes().to_vec(),
            3u32.to_le_bytes().to_vec(),
            b"h:1".to_vec(),
        ]
        .concat();
        assert_eq!(&bytes[8..], &body[..]);

        let mut bytes = Vec::new();
        encode_request(
            &Request::Command {
                request_id: 0x0102_0304_0506_0708,
                partition_id: 0x0A0B_0C0D,
                command: vec![0xCC; 2],
            },
            &mut bytes,
        );
        let body: Vec<u8> = [
            vec![TYPE_COMMAND],
            vec![8, 7, 6, 5, 4, 3, 2, 1],
            vec![0x0D, 0x0C, 0x0B, 0x0A],
            vec![2, 0, 0, 0],
            vec![0xCC; 2],
        ]
        .concat();
        assert_eq!(&bytes[..4], &19u32.to_le_bytes());
        assert_eq!(&bytes[4..8], &crc32c::crc32c(&body).to_le_bytes());
        assert_eq!(&bytes[8..], &body[..]);
        let mut direct = Vec::new();
        encode_command(0x0102_0304_0506_0708, 0x0A0B_0C0D, &[0xCC; 2], &mut direct);
        assert_eq!(direct, bytes);

        let mut bytes = Vec::new();
        encode_response(
            &Response::Processed {
                request_id: 5,
                index: 0x1112_1314_1516_1718,
                response: vec![0xAB; 3],
            },
            &mut bytes,
        );
        let body: Vec<u8> = [
            vec![TYPE_PROCESSED],
            5u64.to_le_bytes().to_vec(),
            vec![0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11],
            vec![3, 0, 0, 0],
            vec![0xAB; 3],
        ]
        .concat();
        assert_eq!(&bytes[..4], &24u32.to_le_bytes());
        assert_eq!(&bytes[8..], &body[..]);
    }

    #[test]
    fn client_api_byte_by_byte_feeding() {
        let mut stream = Vec::new();
        for request in all_requests() {
            encode_request(&request, &mut stream);
        }
        let mut decoder = RequestDecoder::new();
        let mut got = Vec::new();
        for byte in &stream {
            decoder.push(std::slice::from_ref(byte));
            while let Some(request) = decoder.next_request().expect("valid stream") {
                got.push(request);
            }
        }
        decoder
            .end_of_stream()
            .expect("the stream ended between messages");
        assert_eq!(got, all_requests());
        assert_eq!(decoder.buffered_bytes(), 0);

        let mut stream = Vec::new();
        for response in all_responses() {
            encode_response(&response, &mut stream);
        }
        let mut decoder = ResponseDecoder::new();
        let mut got = Vec::new();
        for byte in &stream {
            decoder.push(std::slice::from_ref(byte));
            while let Some(response) = decoder.next_response().expect("valid stream") {
                got.push(response);
            }
        }
        decoder
            .end_of_stream()
            .expect("the stream ended between messages");
        assert_eq!(got, all_responses());
    }

    /// Decodes a damaged message with `decode` (which pushes and drains). If the decoder waits
    /// for more bytes (a damaged length grew), completes the frame with zeros and drains again.
    /// Returns whether the damage was caught.
    fn damage_is_caught(
        damaged: &[u8],
        decode: &mut dyn FnMut(&[u8]) -> Result<usize, ClientApiError>,
    ) -> bool {
        match decode(damaged) {
            Err(_) => true,
            Ok(0) => {
                let mut length = [0; 4];
                length.copy_from_slice(&damaged[..4]);
                let frame_bytes = FRAME_HEADER_BYTES
                    + usize::try_from(u32::from_le_bytes(length)).expect("u32 fits usize");
                let missing = frame_bytes.saturating_sub(damaged.len());
                assert!(missing > 0, "a whole frame that decodes to nothing");
                decode(&vec![0; missing]).is_err()
            }
            Ok(_) => false,
        }
    }

    #[test]
    fn client_api_every_flipped_bit_or_byte_is_rejected() {
        let flips: Vec<u8> = (0..8).map(|bit| 1u8 << bit).chain([0xFF]).collect();
        for request in all_requests() {
            let mut bytes = Vec::new();
            encode_request(&request, &mut bytes);
            for position in 0..bytes.len() {
                for flip in &flips {
                    let mut damaged = bytes.clone();
                    damaged[position] ^= flip;
                    let mut decoder = RequestDecoder::new();
                    let mut decode = |bytes: &[u8]| -> Result<usize, ClientApiError> {
                        decoder.push(bytes);
                        let mut count = 0;
                        while decoder.next_request()?.is_some() {
                            count += 1;
                        }
                        Ok(count)
                    };
                    assert!(
                        damage_is_caught(&damaged, &mut decode),
                        "{request:?}: flipping {flip:#04x} at byte {position} went unnoticed"
                    );
                }
            }
        }
        for response in all_responses() {
            let mut bytes = Vec::new();
            encode_response(&response, &mut bytes);
            for position in 0..bytes.len() {
                for flip in &flips {
                    let mut damaged = bytes.clone();
                    damaged[position] ^= flip;
                    let mut decoder = ResponseDecoder::new();
                    let mut decode = |bytes: &[u8]| -> Result<usize, ClientApiError> {
                        decoder.push(bytes);
                        let mut count = 0;
                        while decoder.next_response()?.is_some() {
                            count += 1;
                        }
                        Ok(count)
                    };
                    assert!(
                        damage_is_caught(&damaged, &mut decode),
                        "{response:?}: flipping {flip:#04x} at byte {position} went unnoticed"
                    );
                }
            }
        }
    }

    #[test]
    fn client_api_oversized_length_is_refused_before_the_body() {
        let mut header = Vec::new();
        header.extend_from_slice(&wire_len(MESSAGE_BYTES_MAX + 1).to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        let mut decoder = RequestDecoder::new();
        decoder.push(&header);
        let error = decoder.next_request().expect_err("too large");
        assert!(
            matches!(error, ClientApiError::TooLarge { bytes, bytes_max }
                if bytes == MESSAGE_BYTES_MAX as u64 + 1 && bytes_max == MESSAGE_BYTES_MAX as u64),
            "{error:?}"
        );
        // The decoder stays failed and holds nothing.
        decoder.push(&[0; 64]);
        assert_eq!(decoder.buffered_bytes(), 0);
        assert!(decoder.next_request().is_err());

        let mut decoder = ResponseDecoder::new();
        decoder.push(&u32::MAX.to_le_bytes());
        decoder.push(&[0; 4]);
        assert!(matches!(
            decoder.next_response(),
            Err(ClientApiError::TooLarge { .. })
        ));
    }

    #[test]
    fn client_api_largest_payload_roundtrips_and_larger_is_refused_by_senders() {
        let request = Request::Append {
            request_id: 3,
            partition_id: 1,
            payload: vec![0x5A; PAYLOAD_BYTES_MAX],
        };
        let mut bytes = Vec::new();
        encode_request(&request, &mut bytes);
        assert!(bytes.len() - FRAME_HEADER_BYTES <= MESSAGE_BYTES_MAX);
        assert_eq!(
            decode_requests(&bytes).expect("largest payload"),
            vec![request]
        );

        // A payload between the payload and the message limit decodes (the server answers
        // Invalid); one beyond the message limit is refused by the length prefix.
        let mut bytes = Vec::new();
        encode_append(4, 1, &vec![0; PAYLOAD_BYTES_MAX + 1], &mut bytes);
        let decoded = decode_requests(&bytes).expect("fits in a message");
        assert!(
            matches!(&decoded[..], [Request::Append { payload, .. }] if payload.len() == PAYLOAD_BYTES_MAX + 1)
        );
        let mut bytes = Vec::new();
        encode_append(5, 1, &vec![0; MESSAGE_BYTES_MAX], &mut bytes);
        assert!(matches!(
            decode_requests(&bytes),
            Err(ClientApiError::TooLarge { .. })
        ));

        let mut client = AppendClient::new(vec![SocketAddr::from(([127, 0, 0, 1], 9))]);
        let error = client
            .append(1, &vec![0; PAYLOAD_BYTES_MAX + 1], Duration::from_secs(1))
            .expect_err("too large");
        assert!(
            matches!(error, ClientApiError::TooLarge { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn client_api_largest_command_and_response_roundtrip_and_larger_are_bounded() {
        let request = Request::Command {
            request_id: 3,
            partition_id: 1,
            command: vec![0x5A; PAYLOAD_BYTES_MAX],
        };
        let mut bytes = Vec::new();
        encode_request(&request, &mut bytes);
        assert!(bytes.len() - FRAME_HEADER_BYTES <= MESSAGE_BYTES_MAX);
        assert_eq!(
            decode_requests(&bytes).expect("largest command"),
            vec![request]
        );
        let response = Response::Processed {
            request_id: 3,
            index: 9,
            response: vec![0xA5; PAYLOAD_BYTES_MAX],
        };
        let mut bytes = Vec::new();
        encode_response(&response, &mut bytes);
        assert!(bytes.len() - FRAME_HEADER_BYTES <= MESSAGE_BYTES_MAX);
        assert_eq!(
            decode_responses(&bytes).expect("largest response"),
            vec![response]
        );

        // Between the payload and the message limit: decodes (the server answers Invalid).
        let mut bytes = Vec::new();
        encode_command(4, 1, &vec![0; PAYLOAD_BYTES_MAX + 1], &mut bytes);
        let decoded = decode_requests(&bytes).expect("fits in a message");
        assert!(
            matches!(&decoded[..], [Request::Command { command, .. }] if command.len() == PAYLOAD_BYTES_MAX + 1)
        );
        let mut bytes = Vec::new();
        encode_response(
            &Response::Processed {
                request_id: 4,
                index: 1,
                response: vec![0; PAYLOAD_BYTES_MAX + 1],
            },
            &mut bytes,
        );
        let decoded = decode_responses(&bytes).expect("fits in a message");
        assert!(
            matches!(&decoded[..], [Response::Processed { response, .. }] if response.len() == PAYLOAD_BYTES_MAX + 1)
        );
        // Beyond the message limit: refused by the length prefix.
        let mut bytes = Vec::new();
        encode_command(5, 1, &vec![0; MESSAGE_BYTES_MAX], &mut bytes);
        assert!(matches!(
            decode_requests(&bytes),
            Err(ClientApiError::TooLarge { .. })
        ));
        let mut bytes = Vec::new();
        encode_response(
            &Response::Processed {
                request_id: 5,
                index: 1,
                response: vec![0; MESSAGE_BYTES_MAX],
            },
            &mut bytes,
        );
        assert!(matches!(
            decode_responses(&bytes),
            Err(ClientApiError::TooLarge { .. })
        ));

        // Senders refuse an oversized command and queue nothing.
        let mut client = AppendClient::new(vec![SocketAddr::from(([127, 0, 0, 1], 9))]);
        let error = client
            .command(1, &vec![0; PAYLOAD_BYTES_MAX + 1], Duration::from_secs(1))
            .expect_err("too large");
        assert!(
            matches!(error, ClientApiError::TooLarge { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn client_api_malformed_request_bodies_are_errors() {
        let request_body = |message_type: u8, extra: &[u8]| -> Vec<u8> {
            let mut body = vec![message_type];
            body.extend_from_slice(&1u64.to_le_bytes());
            body.extend_from_slice(&2u32.to_le_bytes());
            body.extend_from_slice(extra);
            body
        };
        let append_body = |extra: &[u8]| request_body(TYPE_APPEND, extra);
        let command_body = |extra: &[u8]| request_body(TYPE_COMMAND, extra);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty body", Vec::new()),
            ("unknown type", vec![0x7F, 0, 0]),
            ("response type", frame_body_of_response()),
            ("truncated request_id", vec![TYPE_APPEND, 1, 2, 3]),
            ("truncated payload length", append_body(&[1, 0])),
            (
                "payload shorter than its length",
                append_body(&[5, 0, 0, 0, 1, 2]),
            ),
            ("trailing byte", append_body(&[1, 0, 0, 0, 9, 9])),
            (
                "payload length beyond the message limit",
                append_body(&u32::MAX.to_le_bytes()),
            ),
            ("truncated command request_id", vec![TYPE_COMMAND, 1, 2, 3]),
            (
                "truncated command partition_id",
                [vec![TYPE_COMMAND], 1u64.to_le_bytes().to_vec(), vec![2, 0]].concat(),
            ),
            ("truncated command length", command_body(&[1, 0])),
            (
                "command shorter than its length",
                command_body(&[5, 0, 0, 0, 1, 2]),
            ),
            ("command trailing byte", command_body(&[1, 0, 0, 0, 9, 9])),
            (
                "command length beyond the message limit",
                command_body(&u32::MAX.to_le_bytes()),
            ),
        ];
        for (name, body) in cases {
            let error = decode_requests(&frame(&body)).expect_err(name);
            assert!(
                matches!(error, ClientApiError::Malformed { .. }),
                "{name}: {error:?}"
            );
        }
    }

    #[test]
    fn client_api_malformed_response_bodies_are_errors() {
        let response_body = |message_type: u8, extra: &[u8]| -> Vec<u8> {
            let mut body = vec![message_type];
            body.extend_from_slice(&1u64.to_le_bytes());
            body.extend_from_slice(extra);
            body
        };
        let long_text = vec![b'a'; TEXT_BYTES_MAX + 1];
        let mut too_long = wire_len(long_text.len()).to_le_bytes().to_vec();
        too_long.extend_from_slice(&long_text);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("request type", response_body(TYPE_APPEND, &[0; 8])),
            ("truncated index", response_body(TYPE_APPENDED, &[0; 7])),
            ("trailing byte", response_body(TYPE_APPENDED, &[0; 9])),
            ("has_leader 2", response_body(TYPE_NOT_LEADER, &[2])),
            ("missing has_leader", response_body(TYPE_NOT_LEADER, &[])),
            (
                "truncated address",
                response_body(TYPE_NOT_LEADER, &[1, 2, 0, 0, 0, 9, 0, 0, 0, b'h']),
            ),
            (
                "message not UTF-8",
                response_body(TYPE_UNAVAILABLE, &[2, 0, 0, 0, 0xC3, 0x28]),
            ),
            ("message too long", response_body(TYPE_INVALID, &too_long)),
            (
                "unknown response type",
                response_body(TYPE_PROCESSED + 1, &[0; 8]),
            ),
            (
                "command as a response",
                response_body(TYPE_COMMAND, &[0; 12]),
            ),
            (
                "Processed without index",
                response_body(TYPE_PROCESSED, &[]),
            ),
            (
                "Processed truncated index",
                response_body(TYPE_PROCESSED, &[0; 7]),
            ),
            (
                "Processed truncated response length",
                response_body(TYPE_PROCESSED, &[0, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
            ),
            (
                "Processed response shorter than its length",
                response_body(TYPE_PROCESSED, &[0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 7]),
            ),
            (
                "Processed trailing byte",
                response_body(TYPE_PROCESSED, &[0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 7, 7]),
            ),
            (
                "Processed response length beyond the message limit",
                response_body(
                    TYPE_PROCESSED,
                    &[0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF],
                ),
            ),
        ];
        for (name, body) in cases {
            let error = decode_responses(&frame(&body)).expect_err(name);
            assert!(
                matches!(error, ClientApiError::Malformed { .. }),
                "{name}: {error:?}"
            );
        }
    }

    fn frame_body_of_response() -> Vec<u8> {
        let mut bytes = Vec::new();
        encode_response(
            &Response::Appended {
                request_id: 1,
                index: 2,
            },
            &mut bytes,
        );
        bytes.split_off(FRAME_HEADER_BYTES)
    }

    #[test]
    fn client_api_stream_ending_inside_a_message_is_an_error() {
        let mut bytes = Vec::new();
        encode_request(&all_requests()[0], &mut bytes);
        bytes.pop();
        let error = decode_requests(&bytes).expect_err("cut stream");
        assert!(
            matches!(error, ClientApiError::Malformed { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn client_api_long_texts_are_cut_at_a_character_boundary() {
        let response = Response::Unavailable {
            request_id: 1,
            message: "é".repeat(TEXT_BYTES_MAX),
        };
        let mut bytes = Vec::new();
        encode_response(&response, &mut bytes);
        let decoded = decode_responses(&bytes).expect("cut text decodes");
        let [Response::Unavailable { message, .. }] = &decoded[..] else {
            panic!("expected one Unavailable, got {decoded:?}");
        };
        assert_eq!(message.len(), TEXT_BYTES_MAX);
        assert!(message.chars().all(|c| c == 'é'));

        let response = Response::NotLeader {
            request_id: 1,
            leader: Some((1, "x".repeat(ADDRESS_BYTES_MAX + 10))),
        };
        let mut bytes = Vec::new();
        encode_response(&response, &mut bytes);
        let decoded = decode_responses(&bytes).expect("cut address decodes");
        assert!(
            matches!(&decoded[..], [Response::NotLeader { leader: Some((1, address)), .. }]
                if address.len() == ADDRESS_BYTES_MAX)
        );
    }

    #[test]
    fn client_api_decoder_buffer_stays_bounded() {
        let mut one = Vec::new();
        encode_request(&all_requests()[2], &mut one);
        let mut decoder = RequestDecoder::new();
        for _ in 0..10_000 {
            decoder.push(&one[..10]);
            assert!(decoder.next_request().expect("partial").is_none());
            decoder.push(&one[10..]);
            assert!(decoder.next_request().expect("whole").is_some());
            assert_eq!(decoder.buffered_bytes(), 0);
        }
        assert!(decoder.frames.buffer.capacity() <= 4 * one.len());
    }

    fn request_strategy() -> impl Strategy<Value = Request> {
        (
            any::<bool>(),
            any::<u64>(),
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..2048),
        )
            .prop_map(|(command, request_id, partition_id, payload)| {
                if command {
                    Request::Command {
                        request_id,
                        partition_id,
                        command: payload,
                    }
                } else {
                    Request::Append {
                        request_id,
                        partition_id,
                        payload,
                    }
                }
            })
    }

    fn response_strategy() -> impl Strategy<Value = Response> {
        prop_oneof![
            (any::<u64>(), any::<u64>())
                .prop_map(|(request_id, index)| Response::Appended { request_id, index }),
            (
                any::<u64>(),
                proptest::option::of((any::<u32>(), "[a-z0-9.-]{1,40}:[0-9]{1,5}"))
            )
                .prop_map(|(request_id, leader)| Response::NotLeader { request_id, leader }),
            (any::<u64>(), "\\PC{0,200}").prop_map(|(request_id, message)| {
                Response::Unavailable {
                    request_id,
                    message,
                }
            }),
            (any::<u64>(), "\\PC{0,200}").prop_map(|(request_id, message)| Response::Invalid {
                request_id,
                message
            }),
            (
                any::<u64>(),
                any::<u64>(),
                proptest::collection::vec(any::<u8>(), 0..512)
            )
                .prop_map(|(request_id, index, response)| Response::Processed {
                    request_id,
                    index,
                    response
                }),
        ]
    }

    proptest! {
        #[test]
        fn client_api_proptest_request_roundtrip(
            requests in proptest::collection::vec(request_strategy(), 1..8),
            chunk_bytes in 1usize..700,
        ) {
            let mut stream = Vec::new();
            for request in &requests {
                encode_request(request, &mut stream);
            }
            let mut decoder = RequestDecoder::new();
            let mut got = Vec::new();
            for chunk in stream.chunks(chunk_bytes) {
                decoder.push(chunk);
                while let Some(request) = decoder.next_request().expect("valid stream") {
                    got.push(request);
                }
            }
            decoder.end_of_stream().expect("ends between messages");
            prop_assert_eq!(got, requests);
        }

        #[test]
        fn client_api_proptest_response_roundtrip(
            responses in proptest::collection::vec(response_strategy(), 1..8),
            chunk_bytes in 1usize..300,
        ) {
            let mut stream = Vec::new();
            for response in &responses {
                encode_response(response, &mut stream);
            }
            let mut decoder = ResponseDecoder::new();
            let mut got = Vec::new();
            for chunk in stream.chunks(chunk_bytes) {
                decoder.push(chunk);
                while let Some(response) = decoder.next_response().expect("valid stream") {
                    got.push(response);
                }
            }
            decoder.end_of_stream().expect("ends between messages");
            prop_assert_eq!(got, responses);
        }

        #[test]
        fn client_api_proptest_garbage_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let _ = decode_requests(&bytes);
            let _ = decode_responses(&bytes);
            // Also with a valid header, so the body decoders see the garbage.
            if !bytes.is_empty() {
                let _ = decode_requests(&frame(&bytes));
                let _ = decode_responses(&frame(&bytes));
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Clients against fake brokers
    // -----------------------------------------------------------------------------------------

    /// How long a fake broker lives at most, so no test can hang on it.
    const FAKE_LIFETIME: Duration = Duration::from_secs(20);
    const FAKE_POLL: Duration = Duration::from_millis(5);
    const TEST_TIMEOUT: Duration = Duration::from_secs(10);

    /// A command-API server on 127.0.0.1 that answers each request with `respond`'s responses
    /// (none: stay silent), one connection at a time. It can hang up instead of answering the
    /// first requests, as if the answer were lost.
    struct FakeBroker {
        addr: SocketAddr,
        stop: Arc<AtomicBool>,
        thread: JoinHandle<Vec<Request>>,
    }

    type Responder = Box<dyn FnMut(&Request) -> Vec<Response> + Send>;

    impl FakeBroker {
        fn start(respond: Responder) -> Self {
            Self::start_hanging_up(0, respond)
        }

        /// Like [`Self::start`], but closes the connection instead of answering each of the
        /// first `hang_ups` requests (which it still records).
        fn start_hanging_up(hang_ups: usize, respond: Responder) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
            let addr = listener.local_addr().expect("bound address");
            listener
                .set_nonblocking(true)
                .expect("non-blocking listener");
            let stop = Arc::new(AtomicBool::new(false));
            let thread_stop = Arc::clone(&stop);
            let thread =
                std::thread::spawn(move || serve(&listener, &thread_stop, hang_ups, respond));
            Self { addr, stop, thread }
        }

        /// Stops the server; returns every request it received.
        fn finish(self) -> Vec<Request> {
            self.stop.store(true, Ordering::Relaxed);
            self.thread.join().expect("fake broker thread")
        }
    }

    fn serve(
        listener: &TcpListener,
        stop: &AtomicBool,
        mut hang_ups: usize,
        mut respond: Responder,
    ) -> Vec<Request> {
        let started = Instant::now();
        let mut received = Vec::new();
        while !stop.load(Ordering::Relaxed) && started.elapsed() < FAKE_LIFETIME {
            let Ok((mut stream, _)) = listener.accept() else {
                std::thread::sleep(FAKE_POLL);
                continue;
            };
            stream.set_nonblocking(false).expect("blocking stream");
            stream
                .set_read_timeout(Some(FAKE_POLL))
                .expect("read timeout");
            let mut decoder = RequestDecoder::new();
            let mut chunk = vec![0; 4096];
            while !stop.load(Ordering::Relaxed) && started.elapsed() < FAKE_LIFETIME {
                match stream.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(read) => decoder.push(&chunk[..read]),
                    Err(_) => continue,
                }
                let mut out = Vec::new();
                let mut hang_up = false;
                while let Some(request) = decoder.next_request().expect("client sends valid") {
                    if hang_ups > 0 {
                        hang_ups -= 1;
                        hang_up = true;
                        received.push(request);
                        break;
                    }
                    for response in respond(&request) {
                        encode_response(&response, &mut out);
                    }
                    received.push(request);
                }
                if hang_up || stream.write_all(&out).is_err() {
                    break;
                }
            }
        }
        received
    }

    fn appended(index: u64) -> Responder {
        Box::new(move |request| {
            vec![Response::Appended {
                request_id: request.request_id(),
                index,
            }]
        })
    }

    #[test]
    fn client_api_append_client_commits_at_the_leader() {
        let broker = FakeBroker::start(appended(42));
        let mut client = AppendClient::new(vec![broker.addr]);
        let index = client
            .append(3, b"payload", TEST_TIMEOUT)
            .expect("the fake commits");
        assert_eq!(index, 42);
        assert_eq!(client.leader_of(3), Some(broker.addr));
        assert_eq!(
            broker.finish(),
            vec![Request::Append {
                request_id: 1,
                partition_id: 3,
                payload: b"payload".to_vec()
            }]
        );
    }

    #[test]
    fn client_api_append_client_follows_not_leader_hints() {
        let leader = FakeBroker::start(appended(7));
        let leader_address = leader.addr.to_string();
        let follower = FakeBroker::start(Box::new(move |request| {
            vec![Response::NotLeader {
                request_id: request.request_id(),
                leader: Some((2, leader_address.clone())),
            }]
        }));
        let mut client = AppendClient::new(vec![follower.addr]);
        assert_eq!(client.append(1, b"a", TEST_TIMEOUT).expect("redirected"), 7);
        assert_eq!(client.leader_of(1), Some(leader.addr));
        // The second append goes straight to the leader.
        assert_eq!(client.append(1, b"b", TEST_TIMEOUT).expect("direct"), 7);
        assert_eq!(follower.finish().len(), 1);
        assert_eq!(leader.finish().len(), 2);
    }

    #[test]
    fn client_api_append_client_follows_host_port_hints() {
        let leader = FakeBroker::start(appended(8));
        let leader_address = format!("localhost:{}", leader.addr.port());
        // The fake listens on 127.0.0.1 only: if "localhost" resolves to ::1 first, the hint
        // cannot lead there, so this host-name case cannot be checked here.
        if !resolve(&leader_address).is_some_and(|addr| addr.is_ipv4()) {
            drop(leader.finish());
            return;
        }
        let follower = FakeBroker::start(Box::new(move |request| {
            vec![Response::NotLeader {
                request_id: request.request_id(),
                leader: Some((1, leader_address.clone())),
            }]
        }));
        let mut client = AppendClient::new(vec![follower.addr]);
        assert_eq!(
            client
                .append(1, b"a", TEST_TIMEOUT)
                .expect("redirected by host name"),
            8
        );
        assert_eq!(follower.finish().len(), 1);
        assert_eq!(leader.finish().len(), 1);
    }

    #[test]
    fn client_api_append_client_rotates_when_no_leader_is_known() {
        let lost = FakeBroker::start(Box::new(|request| {
            vec![Response::NotLeader {
                request_id: request.request_id(),
                leader: None,
            }]
        }));
        let leader = FakeBroker::start(appended(9));
        let mut client = AppendClient::new(vec![lost.addr, leader.addr]);
        assert_eq!(client.append(2, b"x", TEST_TIMEOUT).expect("rotated"), 9);
        assert_eq!(client.leader_of(2), Some(leader.addr));
        assert_eq!(lost.finish().len(), 1);
        assert_eq!(leader.finish().len(), 1);
    }

    #[test]
    fn client_api_append_client_retries_unavailable() {
        let mut calls = 0;
        let broker = FakeBroker::start(Box::new(move |request| {
            calls += 1;
            if calls <= 2 {
                vec![Response::Unavailable {
                    request_id: request.request_id(),
                    message: "electing a leader".to_owned(),
                }]
            } else {
                vec![Response::Appended {
                    request_id: request.request_id(),
                    index: 11,
                }]
            }
        }));
        let mut client = AppendClient::new(vec![broker.addr]);
        assert_eq!(client.append(1, b"x", TEST_TIMEOUT).expect("retried"), 11);
        assert_eq!(broker.finish().len(), 3);
    }

    #[test]
    fn client_api_append_client_skips_stale_answers() {
        let broker = FakeBroker::start(Box::new(|request| {
            vec![
                Response::Appended {
                    request_id: request.request_id() + 1000,
                    index: 1,
                },
                Response::Appended {
                    request_id: request.request_id(),
                    index: 2,
                },
            ]
        }));
        let mut client = AppendClient::new(vec![broker.addr]);
        assert_eq!(client.append(1, b"x", TEST_TIMEOUT).expect("answered"), 2);
        drop(broker.finish());
    }

    #[test]
    fn client_api_append_client_reports_invalid_as_rejected() {
        let broker = FakeBroker::start(Box::new(|request| {
            vec![Response::Invalid {
                request_id: request.request_id(),
                message: "unknown partition 99".to_owned(),
            }]
        }));
        let mut client = AppendClient::new(vec![broker.addr]);
        let error = client.append(99, b"x", TEST_TIMEOUT).expect_err("rejected");
        assert!(
            matches!(&error, ClientApiError::Rejected { message } if message == "unknown partition 99"),
            "{error:?}"
        );
        // Not retried.
        assert_eq!(broker.finish().len(), 1);
    }

    #[test]
    fn client_api_append_client_times_out_when_nobody_listens() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        drop(listener);
        let mut client = AppendClient::new(vec![addr]);
        let timeout = Duration::from_millis(300);
        let started = Instant::now();
        let error = client.append(1, b"x", timeout).expect_err("nobody there");
        let elapsed = started.elapsed();
        assert!(
            matches!(&error, ClientApiError::Timeout { waited_ms, .. } if *waited_ms >= 300),
            "{error:?}"
        );
        assert!(
            elapsed >= timeout && elapsed < timeout + Duration::from_secs(1),
            "{elapsed:?}"
        );
        assert!(error.to_string().contains("sluice dev"), "{error}");
    }

    #[test]
    fn client_api_append_client_times_out_when_the_broker_is_silent() {
        let broker = FakeBroker::start(Box::new(|_| Vec::new()));
        let mut client = AppendClient::new(vec![broker.addr]);
        let timeout = Duration::from_millis(300);
        let started = Instant::now();
        let error = client.append(1, b"x", timeout).expect_err("silent");
        assert!(matches!(error, ClientApiError::Timeout { .. }), "{error:?}");
        assert!(started.elapsed() < timeout + Duration::from_secs(1));
        assert!(!broker.finish().is_empty());
    }

    #[test]
    fn client_api_append_client_without_brokers() {
        let mut client = AppendClient::new(Vec::new());
        assert!(matches!(
            client.append(1, b"x", TEST_TIMEOUT),
            Err(ClientApiError::NoBrokers)
        ));
    }

    /// Answers each command with `Processed` at `index`, the response being the command
    /// reversed.
    fn processed(index: u64) -> Responder {
        Box::new(move |request| {
            let Request::Command { command, .. } = request else {
                panic!("expected a command, got {request:?}");
            };
            vec![Response::Processed {
                request_id: request.request_id(),
                index,
                response: command.iter().rev().copied().collect(),
            }]
        })
    }

    #[test]
    fn client_api_command_client_returns_the_engine_response() {
        let broker = FakeBroker::start(processed(42));
        let mut client = AppendClient::new(vec![broker.addr]);
        let (index, response) = client
            .command(3, b"command", TEST_TIMEOUT)
            .expect("the fake processes");
        assert_eq!((index, response.as_slice()), (42, &b"dnammoc"[..]));
        assert_eq!(client.leader_of(3), Some(broker.addr));
        assert_eq!(
            broker.finish(),
            vec![Request::Command {
                request_id: 1,
                partition_id: 3,
                command: b"command".to_vec()
            }]
        );
    }

    #[test]
    fn client_api_command_client_follows_hints_and_retries_unavailable() {
        let mut calls = 0;
        let mut answer = processed(0);
        let leader = FakeBroker::start(Box::new(move |request| {
            calls += 1;
            if calls == 1 {
                vec![Response::Unavailable {
                    request_id: request.request_id(),
                    message: "not yet processing".to_owned(),
                }]
            } else {
                answer(request)
            }
        }));
        let leader_address = leader.addr.to_string();
        let follower = FakeBroker::start(Box::new(move |request| {
            vec![Response::NotLeader {
                request_id: request.request_id(),
                leader: Some((2, leader_address.clone())),
            }]
        }));
        let mut client = AppendClient::new(vec![follower.addr]);
        // Index 0: the command wrote nothing (e.g. a rejection that is only answered).
        assert_eq!(
            client.command(1, b"ab", TEST_TIMEOUT).expect("redirected"),
            (0, b"ba".to_vec())
        );
        assert_eq!(client.leader_of(1), Some(leader.addr));
        assert_eq!(follower.finish().len(), 1);
        assert_eq!(leader.finish().len(), 2);
    }

    #[test]
    fn client_api_command_client_resends_after_a_lost_answer() {
        // The documented hazard: the first try may have been processed, the client cannot tell
        // and sends the command again.
        let broker = FakeBroker::start_hanging_up(1, processed(5));
        let mut client = AppendClient::new(vec![broker.addr]);
        assert_eq!(
            client.command(1, b"create", TEST_TIMEOUT).expect("retried"),
            (5, b"etaerc".to_vec())
        );
        let received = broker.finish();
        assert_eq!(received.len(), 2, "{received:?}");
        assert!(
            received.iter().all(|request| matches!(request,
                Request::Command { partition_id: 1, command, .. } if command == b"create")),
            "{received:?}"
        );
        assert_ne!(received[0].request_id(), received[1].request_id());
    }

    #[test]
    fn client_api_command_client_reports_invalid_and_mismatched_answers_without_retrying() {
        let broker = FakeBroker::start(Box::new(|request| {
            vec![Response::Invalid {
                request_id: request.request_id(),
                message: "not a command record".to_owned(),
            }]
        }));
        let mut client = AppendClient::new(vec![broker.addr]);
        let error = client.command(1, b"x", TEST_TIMEOUT).expect_err("rejected");
        assert!(
            matches!(&error, ClientApiError::Rejected { message } if message == "not a command record"),
            "{error:?}"
        );
        assert_eq!(broker.finish().len(), 1);

        // A broker of another version answers a command with Appended: the command took
        // effect, so it is not retried.
        let broker = FakeBroker::start(appended(3));
        let mut client = AppendClient::new(vec![broker.addr]);
        let error = client.command(1, b"x", TEST_TIMEOUT).expect_err("mismatch");
        assert!(
            matches!(&error, ClientApiError::Malformed { reason } if reason.contains("Appended instead of Processed")),
            "{error:?}"
        );
        assert_eq!(broker.finish().len(), 1);

        let broker = FakeBroker::start(Box::new(|request| {
            vec![Response::Processed {
                request_id: request.request_id(),
                index: 1,
                response: Vec::new(),
            }]
        }));
        let mut client = AppendClient::new(vec![broker.addr]);
        let error = client.append(1, b"x", TEST_TIMEOUT).expect_err("mismatch");
        assert!(
            matches!(&error, ClientApiError::Malformed { reason } if reason.contains("Processed instead of Appended")),
            "{error:?}"
        );
        assert_eq!(broker.finish().len(), 1);
    }

    #[test]
    fn client_api_command_client_times_out_and_needs_brokers() {
        let broker = FakeBroker::start(Box::new(|request| {
            vec![Response::Unavailable {
                request_id: request.request_id(),
                message: "replaying the log".to_owned(),
            }]
        }));
        let mut client = AppendClient::new(vec![broker.addr]);
        let error = client
            .command(1, b"x", Duration::from_millis(300))
            .expect_err("never available");
        assert!(
            matches!(&error, ClientApiError::Timeout { last_problem, .. } if last_problem.contains("replaying the log")),
            "{error:?}"
        );
        assert!(broker.finish().len() > 1);

        let mut client = AppendClient::new(Vec::new());
        assert!(matches!(
            client.command(1, b"x", TEST_TIMEOUT),
            Err(ClientApiError::NoBrokers)
        ));
    }

    #[test]
    fn client_api_connection_pipelines_commands() {
        let broker = FakeBroker::start(processed(7));
        let mut connection =
            Connection::connect(broker.addr, TEST_TIMEOUT).expect("connect to the fake");
        connection
            .send(&Request::Command {
                request_id: 1,
                partition_id: 2,
                command: b"one".to_vec(),
            })
            .expect("queue");
        connection.send_command(2, 2, b"two").expect("queue");
        let error = connection
            .send_command(3, 2, &vec![0; PAYLOAD_BYTES_MAX + 1])
            .expect_err("too large");
        assert!(
            matches!(error, ClientApiError::TooLarge { .. }),
            "{error:?}"
        );
        connection.flush().expect("flush");
        for (request_id, response) in [(1, b"eno"), (2, b"owt")] {
            assert_eq!(
                connection.recv(TEST_TIMEOUT).expect("answer"),
                Response::Processed {
                    request_id,
                    index: 7,
                    response: response.to_vec()
                }
            );
        }
        assert_eq!(broker.finish().len(), 2);
    }

    #[test]
    fn client_api_connection_pipelines() {
        let broker = FakeBroker::start(Box::new(|request| {
            let Request::Append { payload, .. } = request else {
                panic!("the test sends appends only, got {request:?}");
            };
            vec![Response::Appended {
                request_id: request.request_id(),
                index: payload.len() as u64,
            }]
        }));
        let mut connection =
            Connection::connect(broker.addr, TEST_TIMEOUT).expect("connect to the fake");
        assert_eq!(connection.addr(), broker.addr);
        for request_id in 0..50u64 {
            connection
                .send(&Request::Append {
                    request_id,
                    partition_id: 1,
                    payload: vec![0; usize::try_from(request_id).expect("small")],
                })
                .expect("queue");
        }
        connection.flush().expect("flush");
        for request_id in 0..50u64 {
            let response = connection.recv(TEST_TIMEOUT).expect("answer");
            assert_eq!(
                response,
                Response::Appended {
                    request_id,
                    index: request_id
                }
            );
        }
        // Nothing more: recv times out and the connection stays usable.
        let error = connection
            .recv(Duration::from_millis(50))
            .expect_err("no more answers");
        assert!(matches!(error, ClientApiError::Timeout { .. }), "{error:?}");
        connection.send_append(99, 1, b"abc").expect("queue");
        connection.flush().expect("flush");
        assert_eq!(
            connection.recv(TEST_TIMEOUT).expect("answer"),
            Response::Appended {
                request_id: 99,
                index: 3
            }
        );
        assert_eq!(broker.finish().len(), 51);
        // The fake is gone: the connection reports the close.
        let error = connection.recv(TEST_TIMEOUT).expect_err("closed");
        assert!(matches!(error, ClientApiError::Io { .. }), "{error:?}");
    }
}
