//! Segment files: a preallocated file named by the index of its first batch, opening with one
//! 4 KiB header block, then batches back to back, then zeros.
//!
//! Header block layout (little-endian; bytes 64..4096 are zero):
//!
//! | offset | size | field           | meaning                                             |
//! |-------:|-----:|-----------------|-----------------------------------------------------|
//! |      0 |    4 | `magic`         | the bytes `SLSG`                                    |
//! |      4 |    4 | `header_crc`    | crc32c of bytes 8..64                               |
//! |      8 |    2 | `version`       | format version, currently 1                         |
//! |     10 |    6 | reserved        | zero                                                |
//! |     16 |    8 | `first_index`   | index of the first batch; also the file name        |
//! |     24 |    8 | `generation`    | bumped by every `reset`; older generations are void |
//! |     32 |    8 | `segment_bytes` | the preallocated size of the file                   |
//! |     40 |   24 | reserved        | zero                                                |
//!
//! Files are named `{first_index:020}.seg`; a segment is created as `….seg.tmp`, its header
//! written and synced, and only then renamed into place, so a `.seg` file always has a valid
//! header and a leftover `.seg.tmp` is garbage from a crash.

use crate::batch::{get_u16, get_u32, get_u64};
use crate::error::{Error, Result};
use crate::storage::BLOCK_BYTES;

/// `SLSG` as a little-endian `u32`.
pub const SEGMENT_MAGIC: u32 = u32::from_le_bytes(*b"SLSG");
/// The segment format version this build writes and reads.
pub const SEGMENT_VERSION: u16 = 1;
/// Batches start here, right after the header block.
pub const DATA_START: u64 = BLOCK_BYTES;
const HEADER_USED_BYTES: usize = 64;
const _: () = assert!(HEADER_USED_BYTES as u64 <= DATA_START);

/// The decoded header of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub first_index: u64,
    pub generation: u64,
    pub segment_bytes: u64,
}

impl SegmentHeader {
    /// The full header block, ready to write at offset 0.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        #[expect(clippy::cast_possible_truncation, reason = "DATA_START is one block")]
        let mut block = vec![0u8; DATA_START as usize];
        block[0..4].copy_from_slice(&SEGMENT_MAGIC.to_le_bytes());
        block[8..10].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
        block[16..24].copy_from_slice(&self.first_index.to_le_bytes());
        block[24..32].copy_from_slice(&self.generation.to_le_bytes());
        block[32..40].copy_from_slice(&self.segment_bytes.to_le_bytes());
        let crc = crc32c::crc32c(&block[8..HEADER_USED_BYTES]);
        block[4..8].copy_from_slice(&crc.to_le_bytes());
        block
    }

    /// Decodes and verifies a header block.
    ///
    /// # Errors
    /// A typed error saying why the bytes are not a segment header.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < HEADER_USED_BYTES {
            return Err(Error::Truncated {
                what: "segment header",
                needed: HEADER_USED_BYTES as u64,
                available: bytes.len() as u64,
            });
        }
        let magic = get_u32(bytes, 0);
        if magic != SEGMENT_MAGIC {
            return Err(Error::BadMagic {
                what: "segment header",
                expected: SEGMENT_MAGIC,
                found: magic,
            });
        }
        let expected = get_u32(bytes, 4);
        let actual = crc32c::crc32c(&bytes[8..HEADER_USED_BYTES]);
        if expected != actual {
            return Err(Error::ChecksumMismatch {
                what: "segment header",
                expected,
                actual,
            });
        }
        let version = get_u16(bytes, 8);
        if version != SEGMENT_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "segment",
                found: version,
                supported: SEGMENT_VERSION,
            });
        }
        Ok(SegmentHeader {
            first_index: get_u64(bytes, 16),
            generation: get_u64(bytes, 24),
            segment_bytes: get_u64(bytes, 32),
        })
    }
}

/// The file name of the segment whose first batch has `first_index`.
#[must_use]
pub fn segment_name(first_index: u64) -> String {
    format!("{first_index:020}.seg")
}

/// The temporary name a segment is created under.
#[must_use]
pub fn temp_name(first_index: u64) -> String {
    format!("{first_index:020}.seg.tmp")
}

/// The first index encoded in a segment file name, or `None` if the name is not one.
#[must_use]
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_every_flip_fails() {
        let h = SegmentHeader {
            first_index: 77,
            generation: 3,
            segment_bytes: 1 << 20,
        };
        let block = h.encode();
        assert_eq!(SegmentHeader::decode(&block).expect("decode"), h);
        for at in 0..HEADER_USED_BYTES {
            let mut damaged = block.clone();
            damaged[at] ^= 0x10;
            assert!(SegmentHeader::decode(&damaged).is_err(), "flip at {at}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(segment_name(5), "00000000000000000005.seg");
        assert_eq!(parse_segment_name(&segment_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_segment_name("5.seg"), None);
        assert_eq!(parse_segment_name("00000000000000000005.seg.tmp"), None);
        assert_eq!(parse_segment_name("0000000000000000000x.seg"), None);
    }
}
