//! Batch encode/decode and raw crc32c throughput for small, medium and large payloads.
//!
//! `cargo bench -p sluice-benches -- --quick` for a fast pass.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sluice_log::BatchMeta;
use sluice_log::batch::{decode, encode, encode_into, encoded_bytes};

const PAYLOAD_SIZES: &[(usize, &str)] = &[(64, "64B"), (1024, "1KiB"), (64 << 10, "64KiB")];

const META: BatchMeta = BatchMeta {
    term: 7,
    timestamp_ms: 1_700_000_000_000,
    record_count: 16,
};

fn payload(bytes: usize) -> Vec<u8> {
    (0..bytes)
        .map(|i| u8::try_from(i % 251).expect("below 251"))
        .collect()
}

fn bytes_of(len: usize) -> Throughput {
    Throughput::Bytes(u64::try_from(len).expect("fits u64"))
}

fn bench_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch_encode");
    for &(bytes, name) in PAYLOAD_SIZES {
        let payload = payload(bytes);
        let mut out = Vec::with_capacity(encoded_bytes(bytes));
        group.throughput(bytes_of(bytes));
        group.bench_with_input(BenchmarkId::from_parameter(name), &payload, |b, payload| {
            b.iter(|| {
                out.clear();
                encode_into(42, 41, META, black_box(payload), &mut out).expect("encodes");
                black_box(out.len())
            });
        });
    }
    group.finish();
}

fn bench_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch_decode");
    for &(bytes, name) in PAYLOAD_SIZES {
        let encoded = encode(42, 41, META, &payload(bytes)).expect("encodes");
        group.throughput(bytes_of(bytes));
        group.bench_with_input(BenchmarkId::from_parameter(name), &encoded, |b, encoded| {
            b.iter(|| {
                let batch = decode(black_box(encoded)).expect("decodes");
                black_box(batch.header.index)
            });
        });
    }
    group.finish();
}

fn bench_crc32c(c: &mut Criterion) {
    let mut group = c.benchmark_group("crc32c");
    for &(bytes, name) in PAYLOAD_SIZES {
        let payload = payload(bytes);
        group.throughput(bytes_of(bytes));
        group.bench_with_input(BenchmarkId::from_parameter(name), &payload, |b, payload| {
            b.iter(|| crc32c::crc32c(black_box(payload)));
        });
    }
    group.finish();
}

criterion_group!(benches, bench_encode, bench_decode, bench_crc32c);
criterion_main!(benches);
