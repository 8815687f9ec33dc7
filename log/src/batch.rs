//! The record-batch format: a fixed 64-byte little-endian header followed by an opaque payload.
//!
//! | offset | size | field            | meaning                                                  |
//! |-------:|-----:|------------------|----------------------------------------------------------|
//! |      0 |    4 | `magic`          | `0x5342_4C53`, the bytes `SLBS` on disk                  |
//! |      4 |    4 | `header_crc`     | crc32c of header bytes 8..64                             |
//! |      8 |    2 | `version`        | format version, currently 1                              |
//! |     10 |    2 | `flags`          | reserved, must be 0                                      |
//! |     12 |    4 | `payload_crc`    | crc32c of the payload                                    |
//! |     16 |    8 | `index`          | journal index of the batch (the first, and only, index)  |
//! |     24 |    8 | `term`           | Raft term in which the batch was created                 |
//! |     32 |    8 | `timestamp_ms`   | creation time, milliseconds since the Unix epoch         |
//! |     40 |    4 | `record_count`   | number of records in the payload                         |
//! |     44 |    4 | `payload_bytes`  | length of the payload                                    |
//! |     48 |    8 | `durable_index`  | the writer's durable index when this batch was appended  |
//! |     56 |    8 | reserved         | must be zero                                             |
//!
//! A batch is one journal entry and one Raft entry: the journal numbers batches, not records, so
//! `index` is both the first and the only index of the batch. The records inside the payload are
//! the engine's business; `record_count` tells readers how many there are without decoding them.
//!
//! `durable_index` is a proof carried for free: every batch up to it had been flushed before
//! this one was appended. Recovery uses it to tell a torn tail (cut it) from damage to flushed
//! data (refuse to open): a damaged batch that a later valid batch declares durable was flushed.
//!
//! The header checksum is checked before any length in the header is trusted, so a damaged
//! length never sends a reader past the end of its buffer.

use crate::error::{Error, Result};

/// `SLBS` read as a little-endian `u32`.
pub const BATCH_MAGIC: u32 = u32::from_le_bytes(*b"SLBS");
/// The format version this build writes and reads.
pub const BATCH_VERSION: u16 = 1;
/// The size of the fixed header.
pub const HEADER_BYTES: usize = 64;
/// The largest payload the format can describe; the journal enforces a smaller configurable cap.
pub const PAYLOAD_BYTES_MAX: u32 = 64 << 20;

const _: () = assert!(HEADER_BYTES == 64);
const _: () = assert!(HEADER_BYTES.is_multiple_of(8));

mod offset {
    pub const MAGIC: usize = 0;
    pub const HEADER_CRC: usize = 4;
    pub const VERSION: usize = 8;
    pub const FLAGS: usize = 10;
    pub const PAYLOAD_CRC: usize = 12;
    pub const INDEX: usize = 16;
    pub const TERM: usize = 24;
    pub const TIMESTAMP_MS: usize = 32;
    pub const RECORD_COUNT: usize = 40;
    pub const PAYLOAD_BYTES: usize = 44;
    pub const DURABLE_INDEX: usize = 48;
    pub const RESERVED: usize = 56;
    pub const CRC_START: usize = 8;
}
const _: () = assert!(offset::RESERVED + 8 == HEADER_BYTES);

/// The decoded header of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub index: u64,
    pub term: u64,
    pub timestamp_ms: u64,
    pub record_count: u32,
    pub payload_bytes: u32,
    pub payload_crc: u32,
    pub durable_index: u64,
}

impl BatchHeader {
    /// Header plus payload: the bytes this batch occupies on disk.
    #[must_use]
    pub fn batch_bytes(&self) -> u64 {
        HEADER_BYTES as u64 + u64::from(self.payload_bytes)
    }
}

/// A decoded batch borrowing its payload from the buffer it was decoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchRef<'a> {
    pub header: BatchHeader,
    pub payload: &'a [u8],
}

/// An owned batch, as returned by journal reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub index: u64,
    pub term: u64,
    pub timestamp_ms: u64,
    pub record_count: u32,
    pub payload: Vec<u8>,
}

impl From<BatchRef<'_>> for Batch {
    fn from(b: BatchRef<'_>) -> Self {
        Batch {
            index: b.header.index,
            term: b.header.term,
            timestamp_ms: b.header.timestamp_ms,
            record_count: b.header.record_count,
            payload: b.payload.to_vec(),
        }
    }
}

/// What an appender supplies; the journal assigns the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    pub term: u64,
    pub timestamp_ms: u64,
    pub record_count: u32,
}

/// The number of bytes a batch with this payload occupies.
#[must_use]
pub fn encoded_bytes(payload_bytes: usize) -> usize {
    HEADER_BYTES + payload_bytes
}

/// Encodes the header of a batch with this payload. `durable_index` is the writer's durable
/// index at the time of the append (0 when none).
///
/// # Errors
/// [`Error::BatchTooLarge`] if the payload exceeds [`PAYLOAD_BYTES_MAX`].
pub fn encode_header(
    index: u64,
    durable_index: u64,
    meta: BatchMeta,
    payload: &[u8],
) -> Result<[u8; HEADER_BYTES]> {
    let payload_bytes = u32::try_from(payload.len())
        .ok()
        .filter(|n| *n <= PAYLOAD_BYTES_MAX)
        .ok_or(Error::BatchTooLarge {
            bytes: payload.len() as u64,
            max: u64::from(PAYLOAD_BYTES_MAX),
        })?;
    let mut header = [0u8; HEADER_BYTES];
    put_u32(&mut header, offset::MAGIC, BATCH_MAGIC);
    put_u16(&mut header, offset::VERSION, BATCH_VERSION);
    put_u16(&mut header, offset::FLAGS, 0);
    put_u32(&mut header, offset::PAYLOAD_CRC, crc32c::crc32c(payload));
    put_u64(&mut header, offset::INDEX, index);
    put_u64(&mut header, offset::TERM, meta.term);
    put_u64(&mut header, offset::TIMESTAMP_MS, meta.timestamp_ms);
    put_u32(&mut header, offset::RECORD_COUNT, meta.record_count);
    put_u32(&mut header, offset::PAYLOAD_BYTES, payload_bytes);
    put_u64(&mut header, offset::DURABLE_INDEX, durable_index);
    let header_crc = crc32c::crc32c(&header[offset::CRC_START..HEADER_BYTES]);
    put_u32(&mut header, offset::HEADER_CRC, header_crc);
    Ok(header)
}

/// Appends the encoded batch to `out`.
///
/// # Errors
/// As [`encode_header`].
pub fn encode_into(
    index: u64,
    durable_index: u64,
    meta: BatchMeta,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<()> {
    let header = encode_header(index, durable_index, meta, payload)?;
    out.reserve(HEADER_BYTES + payload.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
    Ok(())
}

/// Encodes a batch into a new vector.
///
/// # Errors
/// As [`encode_header`].
pub fn encode(index: u64, durable_index: u64, meta: BatchMeta, payload: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(encoded_bytes(payload.len()));
    encode_into(index, durable_index, meta, payload, &mut out)?;
    Ok(out)
}

/// True when the first header-sized bytes are all zero: the clean end of written data in a
/// preallocated segment.
#[must_use]
pub fn is_zero_header(bytes: &[u8]) -> bool {
    bytes.len() >= HEADER_BYTES && bytes[..HEADER_BYTES].iter().all(|b| *b == 0)
}

/// Decodes and verifies a header (magic, version, checksum, reserved fields, length bound).
///
/// # Errors
/// A typed format or checksum error; never panics on any input.
pub fn decode_header(bytes: &[u8]) -> Result<BatchHeader> {
    if bytes.len() < HEADER_BYTES {
        return Err(Error::Truncated {
            what: "batch header",
            needed: HEADER_BYTES as u64,
            available: bytes.len() as u64,
        });
    }
    let header = &bytes[..HEADER_BYTES];
    let magic = get_u32(header, offset::MAGIC);
    if magic != BATCH_MAGIC {
        return Err(Error::BadMagic {
            what: "batch header",
            expected: BATCH_MAGIC,
            found: magic,
        });
    }
    let expected = get_u32(header, offset::HEADER_CRC);
    let actual = crc32c::crc32c(&header[offset::CRC_START..]);
    if expected != actual {
        return Err(Error::ChecksumMismatch {
            what: "batch header",
            expected,
            actual,
        });
    }
    let version = get_u16(header, offset::VERSION);
    if version != BATCH_VERSION {
        return Err(Error::UnsupportedVersion {
            what: "batch",
            found: version,
            supported: BATCH_VERSION,
        });
    }
    let flags = get_u16(header, offset::FLAGS);
    if flags != 0 {
        return Err(Error::InvalidField {
            what: "batch flags",
            reason: format!("reserved flags {flags:#06x} are set"),
        });
    }
    if header[offset::RESERVED..].iter().any(|b| *b != 0) {
        return Err(Error::InvalidField {
            what: "batch header",
            reason: "reserved bytes are not zero".into(),
        });
    }
    let payload_bytes = get_u32(header, offset::PAYLOAD_BYTES);
    if payload_bytes > PAYLOAD_BYTES_MAX {
        return Err(Error::InvalidField {
            what: "batch payload length",
            reason: format!("{payload_bytes} exceeds the format maximum {PAYLOAD_BYTES_MAX}"),
        });
    }
    Ok(BatchHeader {
        index: get_u64(header, offset::INDEX),
        term: get_u64(header, offset::TERM),
        timestamp_ms: get_u64(header, offset::TIMESTAMP_MS),
        record_count: get_u32(header, offset::RECORD_COUNT),
        payload_bytes,
        payload_crc: get_u32(header, offset::PAYLOAD_CRC),
        durable_index: get_u64(header, offset::DURABLE_INDEX),
    })
}

/// Decodes a whole batch from the start of `bytes` and verifies both checksums. Bytes after the
/// batch are ignored; use [`BatchHeader::batch_bytes`] to step to the next one.
///
/// # Errors
/// A typed format or checksum error; never panics on any input.
pub fn decode(bytes: &[u8]) -> Result<BatchRef<'_>> {
    let header = decode_header(bytes)?;
    let end = HEADER_BYTES + header.payload_bytes as usize;
    if bytes.len() < end {
        return Err(Error::Truncated {
            what: "batch payload",
            needed: end as u64,
            available: bytes.len() as u64,
        });
    }
    let payload = &bytes[HEADER_BYTES..end];
    let actual = crc32c::crc32c(payload);
    if actual != header.payload_crc {
        return Err(Error::ChecksumMismatch {
            what: "batch payload",
            expected: header.payload_crc,
            actual,
        });
    }
    Ok(BatchRef { header, payload })
}

fn put_u16(buf: &mut [u8], at: usize, v: u16) {
    buf[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn get_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([buf[at], buf[at + 1]])
}
pub(crate) fn get_u32(buf: &[u8], at: usize) -> u32 {
    let mut b = [0; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}
pub(crate) fn get_u64(buf: &[u8], at: usize) -> u64 {
    let mut b = [0; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn meta() -> BatchMeta {
        BatchMeta {
            term: 7,
            timestamp_ms: 1_700_000_000_000,
            record_count: 3,
        }
    }

    #[test]
    fn layout_is_as_documented() {
        let bytes = encode(42, 41, meta(), b"abc").expect("encode");
        assert_eq!(&bytes[0..4], b"SLBS");
        assert_eq!(get_u16(&bytes, 8), BATCH_VERSION);
        assert_eq!(get_u64(&bytes, 16), 42);
        assert_eq!(get_u64(&bytes, 24), 7);
        assert_eq!(get_u32(&bytes, 40), 3);
        assert_eq!(get_u32(&bytes, 44), 3);
        assert_eq!(get_u64(&bytes, 48), 41);
        assert_eq!(&bytes[64..], b"abc");
        assert_eq!(get_u32(&bytes, 12), crc32c::crc32c(b"abc"));
    }

    #[test]
    fn every_flipped_byte_is_a_typed_error() {
        let payload: Vec<u8> = (0..200u8).collect();
        let bytes = encode(9, 8, meta(), &payload).expect("encode");
        for at in 0..bytes.len() {
            for bit in [0x01u8, 0x80, 0xff] {
                let mut damaged = bytes.clone();
                damaged[at] ^= bit;
                let err = decode(&damaged).expect_err("a flipped byte must not decode");
                assert!(
                    matches!(
                        err,
                        Error::ChecksumMismatch { .. }
                            | Error::BadMagic { .. }
                            | Error::Truncated { .. }
                    ),
                    "byte {at} ^ {bit:#x}: unexpected error {err:?}"
                );
            }
        }
    }

    #[test]
    fn short_input_is_truncated_not_a_panic() {
        let bytes = encode(1, 0, meta(), &[5; 100]).expect("encode");
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err());
        }
    }

    #[test]
    fn zero_header_is_recognised() {
        assert!(is_zero_header(&[0; 64]));
        assert!(!is_zero_header(&[0; 63]));
        assert!(decode(&[0; 128]).is_err());
    }

    proptest! {
        #[test]
        fn round_trip(index: u64, durable_index: u64, term: u64, timestamp_ms: u64, record_count: u32,
                      payload in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let m = BatchMeta { term, timestamp_ms, record_count };
            let mut bytes = encode(index, durable_index, m, &payload).expect("encode");
            bytes.extend_from_slice(b"trailing bytes are not part of the batch");
            let b = decode(&bytes).expect("decode");
            prop_assert_eq!(b.header.index, index);
            prop_assert_eq!(b.header.term, term);
            prop_assert_eq!(b.header.durable_index, durable_index);
            prop_assert_eq!(b.header.timestamp_ms, timestamp_ms);
            prop_assert_eq!(b.header.record_count, record_count);
            prop_assert_eq!(b.payload, &payload[..]);
            prop_assert_eq!(b.header.batch_bytes(), encoded_bytes(payload.len()) as u64);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
        }
    }
}
