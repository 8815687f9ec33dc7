//! Recovery over an arbitrary last segment: a valid segment header followed by fuzzer bytes.
//! Opening must return a journal or a typed error, never panic, and an opened journal must read
//! back every index it claims to hold.
#![no_main]

use futures_lite::future::block_on;
use libfuzzer_sys::fuzz_target;
use sluice_log::segment::{SegmentHeader, segment_name};
use sluice_log::{Journal, JournalConfig, MemStorage};

const SEGMENT_BYTES: u64 = 64 << 10;

fuzz_target!(|data: &[u8]| {
    let header = SegmentHeader { first_index: 1, generation: 0, segment_bytes: SEGMENT_BYTES };
    let mut file = header.encode();
    let room = SEGMENT_BYTES as usize - file.len();
    file.extend_from_slice(&data[..data.len().min(room)]);
    file.resize(SEGMENT_BYTES as usize, 0);
    let disk = MemStorage::new();
    disk.put_file(&segment_name(1), &file);
    let config = JournalConfig {
        segment_bytes: SEGMENT_BYTES,
        batch_bytes_max: 8 << 10,
        flush_bytes_max: 16 << 10,
        index_interval_bytes: 1024,
        ..JournalConfig::default()
    };
    block_on(async {
        if let Ok((journal, _report)) = Journal::open(disk, config).await {
            for index in journal.first_index()..journal.next_index() {
                journal.read(index).await.expect("a recovered index reads back");
            }
        }
    });
});
