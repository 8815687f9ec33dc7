//! Framing of the byte stream between two brokers.
//!
//! Every message travels as one frame: a fixed 16-byte header followed by the body. All header
//! integers are little-endian.
//!
//! ```text
//! offset  bytes  field
//!      0      4  magic         FRAME_MAGIC, the bytes "SLNF"
//!      4      1  version       FRAME_VERSION
//!      5      1  kind          a FrameKind
//!      6      2  reserved      0
//!      8      4  body_bytes    length of the body, at most FRAME_BODY_BYTES_MAX
//!     12      4  crc32c        CRC32C (Castagnoli) of header bytes 0..12, then the body
//!     16      …  body          body_bytes bytes
//! ```
//!
//! Every header field is checked on its own (magic, version, known kind, zero reserved field,
//! length bound) and the checksum covers the header fields before it as well as the body, so a
//! damaged byte anywhere in a frame is an error rather than a wrong message, even one that turns
//! the kind into the other valid kind.
//!
//! Sending: [`encode_frame`] appends a frame to a buffer the caller owns. Receiving: push the
//! bytes as they arrive into a [`FrameDecoder`] and drain it:
//!
//! ```text
//! let mut decoder = FrameDecoder::new();
//! loop {
//!     on bytes: decoder.push(&bytes);
//!               while let Some(frame) = decoder.next_frame()? { route(frame) }  // Err: close
//!     on end of stream: decoder.end_of_stream()?  // Err if the stream ended inside a frame
//! }
//! ```

use crate::{Error, Result};

/// The first four bytes of every frame.
pub const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"SLNF");
/// The frame format this broker writes and the only one it reads.
pub const FRAME_VERSION: u8 = 1;
/// Size of the frame header in bytes.
pub const FRAME_HEADER_BYTES: usize = 16;
/// Largest frame body accepted or sent, in bytes.
pub const FRAME_BODY_BYTES_MAX: u32 = 16 << 20;

/// The checksum of a frame: header bytes before the checksum field, then the body.
fn frame_crc(header: &[u8; FRAME_HEADER_BYTES], body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&header[..offset::CRC32C]), body)
}

/// Byte offsets of the header fields.
mod offset {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 4;
    pub const KIND: usize = 5;
    pub const RESERVED: usize = 6;
    pub const BODY_BYTES: usize = 8;
    pub const CRC32C: usize = 12;
    pub const END: usize = 16;
}

const _: () = assert!(offset::END == FRAME_HEADER_BYTES);
const _: () = assert!(
    offset::MAGIC + 4 == offset::VERSION
        && offset::VERSION + 1 == offset::KIND
        && offset::KIND + 1 == offset::RESERVED
        && offset::RESERVED + 2 == offset::BODY_BYTES
        && offset::BODY_BYTES + 4 == offset::CRC32C
        && offset::CRC32C + 4 == offset::END
);
// A whole frame's length must fit the u32 the decoder's arithmetic is checked against.
const _: () =
    assert!((FRAME_BODY_BYTES_MAX as u64) + (FRAME_HEADER_BYTES as u64) < u32::MAX as u64);

/// What a frame's body holds; decides which decoder reads it.
///
/// The values are pairwise at least two bits apart, so a single flipped bit never turns one
/// known kind into another (checked at compile time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// A [`crate::wire::RaftBatch`]: Raft messages of any partitions between two brokers.
    RaftBatch = 0x03,
    /// A [`crate::wire::SwimMessage`]: one gossip message.
    Swim = 0x05,
    /// An engine command forwarded to a partition's leader: `partition_id u32` little-endian,
    /// then the command payload (opaque to this crate).
    Command = 0x09,
    /// A client's request (from a gateway) for a partition's leader; the body is opaque to this
    /// crate (the broker's request format), answered by a [`FrameKind::Reply`].
    Request = 0x0A,
    /// The answer to a [`FrameKind::Request`]; the body is opaque to this crate.
    Reply = 0x0C,
}

impl FrameKind {
    /// Every kind, for lookups and the compile-time distance check.
    pub const ALL: [FrameKind; 5] = [
        FrameKind::RaftBatch,
        FrameKind::Swim,
        FrameKind::Command,
        FrameKind::Request,
        FrameKind::Reply,
    ];

    /// The kind with this wire value, if any.
    #[must_use]
    pub fn from_u8(value: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| *kind as u8 == value)
    }
}

const fn kinds_at_least_two_bits_apart() -> bool {
    let mut i = 0;
    while i < FrameKind::ALL.len() {
        // Zero is not a kind either: a zeroed header must not pass.
        if (FrameKind::ALL[i] as u8).count_ones() < 2 {
            return false;
        }
        let mut j = i + 1;
        while j < FrameKind::ALL.len() {
            if ((FrameKind::ALL[i] as u8) ^ (FrameKind::ALL[j] as u8)).count_ones() < 2 {
                return false;
            }
            j += 1;
        }
        i += 1;
    }
    true
}
const _: () = assert!(kinds_at_least_two_bits_apart());

/// One received frame: its kind and its checksum-verified body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// What the body holds.
    pub kind: FrameKind,
    /// The body, exactly as sent.
    pub body: Vec<u8>,
}

/// Appends one frame holding `body` to `out`. On an error `out` is left as it was.
pub fn encode_frame(kind: FrameKind, body: &[u8], out: &mut Vec<u8>) -> Result<()> {
    let body_bytes = u32::try_from(body.len())
        .ok()
        .filter(|&bytes| bytes <= FRAME_BODY_BYTES_MAX)
        .ok_or(Error::FrameTooLarge {
            body_bytes: body.len() as u64,
            body_bytes_max: FRAME_BODY_BYTES_MAX,
        })?;
    let mut header = [0_u8; FRAME_HEADER_BYTES];
    header[offset::MAGIC..offset::VERSION].copy_from_slice(&FRAME_MAGIC.to_le_bytes());
    header[offset::VERSION] = FRAME_VERSION;
    header[offset::KIND] = kind as u8;
    header[offset::RESERVED..offset::BODY_BYTES].copy_from_slice(&0_u16.to_le_bytes());
    header[offset::BODY_BYTES..offset::CRC32C].copy_from_slice(&body_bytes.to_le_bytes());
    let crc = frame_crc(&header, body);
    header[offset::CRC32C..offset::END].copy_from_slice(&crc.to_le_bytes());
    out.reserve(FRAME_HEADER_BYTES + body.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(body);
    Ok(())
}

/// A checked frame header.
struct Header {
    kind: FrameKind,
    body_bytes: usize,
    crc32c: u32,
}

fn read_u16(bytes: &[u8; FRAME_HEADER_BYTES], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn read_u32(bytes: &[u8; FRAME_HEADER_BYTES], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Checks every header field; the body length is checked before any of the body is awaited.
fn parse_header(bytes: &[u8; FRAME_HEADER_BYTES]) -> Result<Header> {
    let magic = read_u32(bytes, offset::MAGIC);
    if magic != FRAME_MAGIC {
        return Err(Error::BadMagic { magic });
    }
    let version = bytes[offset::VERSION];
    if version != FRAME_VERSION {
        return Err(Error::UnsupportedVersion { version });
    }
    let kind_byte = bytes[offset::KIND];
    let kind = FrameKind::from_u8(kind_byte).ok_or(Error::UnknownFrameKind { kind: kind_byte })?;
    let reserved = read_u16(bytes, offset::RESERVED);
    if reserved != 0 {
        return Err(Error::ReservedNotZero { reserved });
    }
    let body_bytes = read_u32(bytes, offset::BODY_BYTES);
    if body_bytes > FRAME_BODY_BYTES_MAX {
        return Err(Error::FrameTooLarge {
            body_bytes: u64::from(body_bytes),
            body_bytes_max: FRAME_BODY_BYTES_MAX,
        });
    }
    Ok(Header {
        kind,
        body_bytes: body_bytes as usize,
        crc32c: read_u32(bytes, offset::CRC32C),
    })
}

/// Cuts a byte stream, arriving in chunks of any size, into checked [`Frame`]s.
///
/// After the first error the decoder stays failed: every later [`FrameDecoder::next_frame`]
/// returns the same error and pushed bytes are dropped. A stream that lost its place cannot be
/// resynchronised safely; the caller closes it.
///
/// The decoder buffers only bytes not yet returned as frames. Drain it with `next_frame` until
/// `Ok(None)` after every `push`, so the buffer stays within one frame plus one chunk.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    /// Received bytes; `buffer[consumed..]` are not yet part of a returned frame.
    buffer: Vec<u8>,
    consumed: usize,
    failed: Option<Error>,
}

impl FrameDecoder {
    /// An empty decoder at the start of a stream.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds received bytes. Dropped once the decoder has failed.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        if self.consumed > 0 {
            self.buffer.drain(..self.consumed);
            self.consumed = 0;
        }
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete frame, `Ok(None)` until one has fully arrived, or the error that
    /// failed the stream.
    pub fn next_frame(&mut self) -> Result<Option<Frame>> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let pending = &self.buffer[self.consumed..];
        let Some(header_bytes) = pending.first_chunk::<FRAME_HEADER_BYTES>() else {
            return Ok(None);
        };
        let header = match parse_header(header_bytes) {
            Ok(header) => header,
            Err(error) => return Err(self.fail(error)),
        };
        let frame_bytes = FRAME_HEADER_BYTES + header.body_bytes;
        let Some(body) = pending.get(FRAME_HEADER_BYTES..frame_bytes) else {
            return Ok(None);
        };
        let actual = frame_crc(header_bytes, body);
        if actual != header.crc32c {
            return Err(self.fail(Error::ChecksumMismatch {
                expected: header.crc32c,
                actual,
            }));
        }
        let frame = Frame {
            kind: header.kind,
            body: body.to_vec(),
        };
        self.consumed += frame_bytes;
        Ok(Some(frame))
    }

    /// Bytes received but not yet returned as frames.
    #[must_use]
    pub fn buffered_bytes(&self) -> usize {
        self.buffer.len() - self.consumed
    }

    /// Call when the stream has ended: an error if it ended inside a frame or had failed.
    pub fn end_of_stream(&self) -> Result<()> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        match self.buffered_bytes() {
            0 => Ok(()),
            buffered_bytes => Err(Error::TruncatedFrame { buffered_bytes }),
        }
    }

    fn fail(&mut self, error: Error) -> Error {
        self.failed = Some(error.clone());
        self.buffer = Vec::new();
        self.consumed = 0;
        error
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small deterministic generator (`SplitMix64`) so failures replay from the seed.
    pub(crate) struct SplitMix64(pub(crate) u64);

    impl SplitMix64 {
        pub(crate) fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        /// Uniform enough in `0..bound` for tests; `bound` must not be 0.
        pub(crate) fn below(&mut self, bound: usize) -> usize {
            usize::try_from(self.next_u64() % bound as u64).expect("below a usize bound")
        }

        pub(crate) fn bytes(&mut self, length: usize) -> Vec<u8> {
            (0..length)
                .map(|_| self.next_u64().to_le_bytes()[0])
                .collect()
        }
    }

    fn sample_frames() -> Vec<Frame> {
        vec![
            Frame {
                kind: FrameKind::RaftBatch,
                body: b"hello raft".to_vec(),
            },
            Frame {
                kind: FrameKind::Swim,
                body: Vec::new(),
            },
            Frame {
                kind: FrameKind::RaftBatch,
                body: (0..5000_u32)
                    .map(|i| u8::try_from(i % 251).expect("below 256"))
                    .collect(),
            },
            Frame {
                kind: FrameKind::Swim,
                body: vec![0xAB; 3],
            },
        ]
    }

    fn encode_all(frames: &[Frame]) -> Vec<u8> {
        let mut out = Vec::new();
        for frame in frames {
            encode_frame(frame.kind, &frame.body, &mut out).expect("sample frames are small");
        }
        out
    }

    fn drain(decoder: &mut FrameDecoder, frames: &mut Vec<Frame>) {
        while let Some(frame) = decoder.next_frame().expect("valid stream") {
            frames.push(frame);
        }
    }

    #[test]
    fn frame_round_trip() {
        let frames = sample_frames();
        let bytes = encode_all(&frames);
        let mut decoder = FrameDecoder::new();
        decoder.push(&bytes);
        let mut received = Vec::new();
        drain(&mut decoder, &mut received);
        assert_eq!(received, frames);
        assert_eq!(decoder.buffered_bytes(), 0);
        decoder
            .end_of_stream()
            .expect("stream ended between frames");
    }

    #[test]
    fn header_layout_is_as_documented() {
        let mut out = Vec::new();
        encode_frame(FrameKind::Swim, b"abc", &mut out).expect("small body");
        assert_eq!(&out[0..4], b"SLNF");
        assert_eq!(out[4], FRAME_VERSION);
        assert_eq!(out[5], FrameKind::Swim as u8);
        assert_eq!(&out[6..8], &[0, 0]);
        assert_eq!(&out[8..12], &3_u32.to_le_bytes());
        let covered: Vec<u8> = out[..12].iter().chain(b"abc").copied().collect();
        assert_eq!(&out[12..16], &crc32c::crc32c(&covered).to_le_bytes());
        assert_eq!(&out[16..], b"abc");
    }

    #[test]
    fn a_kind_swapped_for_the_other_valid_kind_fails_the_checksum() {
        let mut out = Vec::new();
        encode_frame(FrameKind::Swim, b"abc", &mut out).expect("small body");
        out[5] = FrameKind::RaftBatch as u8;
        let mut decoder = FrameDecoder::new();
        decoder.push(&out);
        assert!(matches!(
            decoder.next_frame(),
            Err(Error::ChecksumMismatch { .. })
        ));
    }

    #[test]
    fn byte_by_byte_and_random_chunks_yield_the_same_frames() {
        let frames = sample_frames();
        let bytes = encode_all(&frames);

        let mut decoder = FrameDecoder::new();
        let mut received = Vec::new();
        for byte in &bytes {
            decoder.push(std::slice::from_ref(byte));
            drain(&mut decoder, &mut received);
        }
        assert_eq!(received, frames);

        for seed in 0..64 {
            let mut random = SplitMix64(seed);
            let mut decoder = FrameDecoder::new();
            let mut received = Vec::new();
            let mut rest = bytes.as_slice();
            while !rest.is_empty() {
                let chunk_bytes = 1 + random.below(rest.len().min(2 * FRAME_HEADER_BYTES + 40));
                let (chunk, tail) = rest.split_at(chunk_bytes);
                decoder.push(chunk);
                drain(&mut decoder, &mut received);
                rest = tail;
            }
            assert_eq!(received, frames, "seed {seed}");
            decoder.end_of_stream().expect("whole stream pushed");
        }
    }

    #[test]
    fn truncated_input_waits_until_complete() {
        let mut bytes = Vec::new();
        encode_frame(FrameKind::RaftBatch, b"a body of some length", &mut bytes)
            .expect("small body");
        for cut in 0..bytes.len() {
            let mut decoder = FrameDecoder::new();
            decoder.push(&bytes[..cut]);
            assert_eq!(decoder.next_frame(), Ok(None), "cut at {cut}");
            if cut > 0 {
                assert_eq!(
                    decoder.end_of_stream(),
                    Err(Error::TruncatedFrame {
                        buffered_bytes: cut
                    })
                );
            }
            decoder.push(&bytes[cut..]);
            let frame = decoder
                .next_frame()
                .expect("valid frame")
                .expect("frame complete");
            assert_eq!(frame.body, b"a body of some length");
            assert_eq!(decoder.next_frame(), Ok(None));
        }
    }

    #[test]
    fn every_flipped_byte_is_an_error() {
        let frames = sample_frames();
        for frame in &frames {
            let mut bytes = Vec::new();
            encode_frame(frame.kind, &frame.body, &mut bytes).expect("small body");
            for at in 0..bytes.len() {
                // Each single bit, and the whole byte inverted.
                for flip in (0..8).map(|bit| 1_u8 << bit).chain([0xFF]) {
                    let mut damaged = bytes.clone();
                    damaged[at] ^= flip;
                    let mut decoder = FrameDecoder::new();
                    decoder.push(&damaged);
                    // A longer announced length waits for bytes that never come: the error is
                    // then reported at the end of the stream.
                    let result = decoder
                        .next_frame()
                        .and_then(|frame| decoder.end_of_stream().map(|()| frame));
                    assert!(
                        result.is_err(),
                        "flip {flip:#04x} at byte {at} went unnoticed: {result:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn header_errors_are_typed() {
        let mut bytes = Vec::new();
        encode_frame(FrameKind::Swim, b"xyz", &mut bytes).expect("small body");
        let decode = |bytes: &[u8]| {
            let mut decoder = FrameDecoder::new();
            decoder.push(bytes);
            decoder.next_frame()
        };

        let mut damaged = bytes.clone();
        damaged[0] = b'X';
        assert!(matches!(decode(&damaged), Err(Error::BadMagic { .. })));

        let mut damaged = bytes.clone();
        damaged[offset::VERSION] = 2;
        assert_eq!(
            decode(&damaged),
            Err(Error::UnsupportedVersion { version: 2 })
        );

        let mut damaged = bytes.clone();
        damaged[offset::KIND] = 0;
        assert_eq!(decode(&damaged), Err(Error::UnknownFrameKind { kind: 0 }));

        let mut damaged = bytes.clone();
        damaged[offset::RESERVED + 1] = 1;
        assert_eq!(
            decode(&damaged),
            Err(Error::ReservedNotZero { reserved: 256 })
        );

        let mut damaged = bytes.clone();
        damaged[FRAME_HEADER_BYTES] ^= 0xFF;
        assert!(matches!(
            decode(&damaged),
            Err(Error::ChecksumMismatch { .. })
        ));
    }

    #[test]
    fn oversized_length_is_rejected_before_the_body_arrives() {
        let mut header = Vec::new();
        encode_frame(FrameKind::RaftBatch, &[], &mut header).expect("empty body");
        header[offset::BODY_BYTES..offset::CRC32C]
            .copy_from_slice(&(FRAME_BODY_BYTES_MAX + 1).to_le_bytes());
        let mut decoder = FrameDecoder::new();
        decoder.push(&header);
        let expected = Error::FrameTooLarge {
            body_bytes: u64::from(FRAME_BODY_BYTES_MAX) + 1,
            body_bytes_max: FRAME_BODY_BYTES_MAX,
        };
        assert_eq!(decoder.next_frame(), Err(expected.clone()));
        assert_eq!(decoder.buffered_bytes(), 0, "nothing kept after the error");

        // The decoder stays failed and buffers nothing more.
        decoder.push(&[0; 1024]);
        assert_eq!(decoder.buffered_bytes(), 0);
        assert_eq!(decoder.next_frame(), Err(expected.clone()));
        assert_eq!(decoder.end_of_stream(), Err(expected));
    }

    #[test]
    fn oversized_body_is_not_encoded() {
        let body = vec![0; FRAME_BODY_BYTES_MAX as usize + 1];
        let mut out = vec![7];
        assert_eq!(
            encode_frame(FrameKind::Swim, &body, &mut out),
            Err(Error::FrameTooLarge {
                body_bytes: u64::from(FRAME_BODY_BYTES_MAX) + 1,
                body_bytes_max: FRAME_BODY_BYTES_MAX,
            })
        );
        assert_eq!(out, vec![7]);
    }

    #[test]
    fn failed_decoder_stays_failed_even_after_valid_bytes() {
        let mut decoder = FrameDecoder::new();
        decoder.push(&[0xFF; FRAME_HEADER_BYTES]);
        let error = decoder.next_frame().expect_err("bad magic");
        let mut valid = Vec::new();
        encode_frame(FrameKind::Swim, b"ok", &mut valid).expect("small body");
        decoder.push(&valid);
        assert_eq!(decoder.next_frame(), Err(error));
    }
}
