//! The unflushed end of a segment, held in write buffers the disk can take directly.
//!
//! Appends are copied once, into fixed-size chunks allocated by the storage (DMA memory for
//! `DmaStorage`). A full chunk never changes again, so a flush hands it to the write by sharing
//! it (a reference count, no copy); only the partial chunks at the edges of a flushed range are
//! copied. The chunk being filled is never shared, so appending to it needs no lock.

use std::collections::VecDeque;

use crate::storage::{BLOCK_BYTES, WRITE_CHUNK_BYTES, WriteBuffer};

const CHUNK: u64 = WRITE_CHUNK_BYTES as u64;

#[expect(clippy::cast_possible_truncation, reason = "bounded by the chunk size")]
fn us(v: u64) -> usize {
    v as usize
}

/// Bytes `[start, start + len)` of a segment, in chunks of [`WRITE_CHUNK_BYTES`]; chunk `i`
/// holds `[start + i * CHUNK, start + (i + 1) * CHUNK)`.
#[derive(Debug)]
pub(crate) struct Tail<B> {
    start: u64,
    len: u64,
    chunks: VecDeque<B>,
}

impl<B: WriteBuffer> Tail<B> {
    /// An empty tail starting at the block-aligned `start`.
    pub(crate) fn new(start: u64) -> Self {
        assert!(start.is_multiple_of(BLOCK_BYTES));
        Tail {
            start,
            len: 0,
            chunks: VecDeque::new(),
        }
    }

    /// A tail starting at `start` holding `bytes` (the partial last block, read from disk).
    pub(crate) fn load(start: u64, bytes: &[u8], alloc: &dyn Fn(usize) -> B) -> Self {
        let mut tail = Tail::new(start);
        tail.push(bytes, alloc);
        tail
    }

    pub(crate) fn start(&self) -> u64 {
        self.start
    }

    pub(crate) fn end(&self) -> u64 {
        self.start + self.len
    }

    /// Appends bytes, allocating chunks as needed.
    pub(crate) fn push(&mut self, mut bytes: &[u8], alloc: &dyn Fn(usize) -> B) {
        while !bytes.is_empty() {
            let used = self.len % CHUNK;
            if used == 0 && self.len / CHUNK == self.chunks.len() as u64 {
                self.chunks.push_back(alloc(WRITE_CHUNK_BYTES));
            }
            let chunk = self.chunks.back_mut().expect("a chunk to fill");
            let dst = chunk
                .get_mut()
                .expect("the chunk being filled is never shared");
            let n = bytes.len().min(us(CHUNK - used));
            dst[us(used)..us(used) + n].copy_from_slice(&bytes[..n]);
            self.len += n as u64;
            bytes = &bytes[n..];
        }
    }

    /// Copies out up to `len` bytes from `offset` (fewer at the end).
    pub(crate) fn read(&self, offset: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0; us((offset + len as u64).min(self.end()).saturating_sub(offset))];
        self.copy_to(offset, &mut out);
        out
    }

    /// Copies bytes from `offset` into `dst` and returns how many there were (fewer than
    /// `dst.len()` at the end).
    fn copy_to(&self, offset: u64, dst: &mut [u8]) -> usize {
        assert!(offset >= self.start);
        let end = (offset + dst.len() as u64).min(self.end());
        let mut at = offset;
        while at < end {
            let index = us((at - self.start) / CHUNK);
            let within = us((at - self.start) % CHUNK);
            let n = us(end - at).min(us(CHUNK) - within);
            let to = us(at - offset);
            dst[to..to + n].copy_from_slice(&self.chunks[index].as_ref()[within..within + n]);
            at += n as u64;
        }
        us(end.saturating_sub(offset))
    }

    /// The last chunk boundary at or below `offset` (the tail's start at least).
    pub(crate) fn chunk_boundary_at_or_below(&self, offset: u64) -> u64 {
        self.start + (offset.saturating_sub(self.start) / CHUNK) * CHUNK
    }

    /// Drops everything from `end` on.
    pub(crate) fn truncate(&mut self, end: u64) {
        assert!(end >= self.start && end <= self.end());
        self.len = end - self.start;
        let chunks = us(self.len.div_ceil(CHUNK));
        self.chunks.truncate(chunks);
        // The new last chunk gets appended to again: it must not be shared with anything.
        if let Some(last) = self.chunks.back_mut()
            && last.get_mut().is_none()
        {
            *last = last.deep_copy();
        }
    }

    /// Releases whole chunks that lie below `offset`.
    pub(crate) fn release_before(&mut self, offset: u64) {
        while self.chunks.len() > 1 && self.start + CHUNK <= offset {
            self.chunks.pop_front();
            self.start += CHUNK;
            self.len -= CHUNK;
        }
    }

    /// The buffers for writing `[from, to)` (block-aligned; `to` may run past the data, which is
    /// written as zeros): full chunks inside the range are shared, the edges copied.
    pub(crate) fn write_buffers(&self, from: u64, to: u64, alloc: &dyn Fn(usize) -> B) -> Vec<B> {
        assert!(
            from >= self.start
                && from.is_multiple_of(BLOCK_BYTES)
                && to.is_multiple_of(BLOCK_BYTES)
        );
        let mut buffers = Vec::new();
        let mut at = from;
        while at < to {
            let index = us((at - self.start) / CHUNK);
            let chunk_start = self.start + index as u64 * CHUNK;
            let chunk_end = chunk_start + CHUNK;
            let piece_end = to.min(chunk_end);
            if at == chunk_start && piece_end == chunk_end && chunk_end <= self.end() {
                buffers.push(self.chunks[index].clone());
            } else {
                let mut copy = alloc(us(piece_end - at));
                let dst = copy.get_mut().expect("a new buffer is not shared");
                let copied = self.copy_to(at, dst);
                dst[copied..].fill(0);
                buffers.push(copy);
            }
            at = piece_end;
        }
        buffers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemBuffer;

    fn alloc(len: usize) -> MemBuffer {
        MemBuffer::zeroed(len)
    }

    #[test]
    fn push_read_write_buffers_and_truncate_across_chunks() {
        let mut tail = Tail::new(4096);
        let data: Vec<u8> = (0..3 * WRITE_CHUNK_BYTES + 5000)
            .map(|i| u8::try_from(i % 251).expect("below 251"))
            .collect();
        for piece in data.chunks(70_001) {
            tail.push(piece, &alloc);
        }
        assert_eq!(tail.end(), 4096 + data.len() as u64);
        assert_eq!(tail.read(4096 + 10, 100), data[10..110].to_vec());
        let boundary = 4096 + CHUNK - 50;
        assert_eq!(
            tail.read(boundary, 100),
            data[us(CHUNK) - 50..us(CHUNK) + 50].to_vec()
        );
        // A write from the second block to past the end: edges copied, full chunks shared.
        let to = (tail.end()).div_ceil(BLOCK_BYTES) * BLOCK_BYTES;
        let buffers = tail.write_buffers(8192, to, &alloc);
        let written: Vec<u8> = buffers.iter().flat_map(|b| b.as_ref().to_vec()).collect();
        assert_eq!(written.len() as u64, to - 8192);
        assert_eq!(&written[..data.len() - 4096], &data[4096..]);
        assert!(written[data.len() - 4096..].iter().all(|b| *b == 0));
        assert!(
            buffers
                .iter()
                .any(|b| b.as_ref().len() == WRITE_CHUNK_BYTES),
            "a chunk is shared"
        );
        // Truncating into a shared chunk copies it before it is appended to again.
        tail.truncate(4096 + CHUNK + 10);
        drop(buffers);
        tail.push(b"xyz", &alloc);
        assert_eq!(tail.read(4096 + CHUNK + 10, 3), b"xyz");
        assert_eq!(
            tail.read(4096 + CHUNK, 10),
            data[us(CHUNK)..us(CHUNK) + 10].to_vec()
        );
        tail.release_before(4096 + CHUNK + 5);
        assert_eq!(tail.start(), 4096 + CHUNK);
        assert_eq!(tail.read(4096 + CHUNK + 10, 3), b"xyz");
    }
}
