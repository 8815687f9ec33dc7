//! Any bytes given to the batch and segment-header decoders yield a value or a typed error,
//! never a panic; whatever decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_log::batch::{self, BatchMeta};
use sluice_log::segment::SegmentHeader;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = batch::decode(data) {
        let meta = BatchMeta {
            term: b.header.term,
            timestamp_ms: b.header.timestamp_ms,
            record_count: b.header.record_count,
        };
        let again = batch::encode(b.header.index, b.header.durable_index, meta, b.payload).expect("a decoded batch encodes");
        assert_eq!(&again[..], &data[..again.len()]);
    }
    let _ = batch::decode_header(data);
    let _ = SegmentHeader::decode(data);
});
