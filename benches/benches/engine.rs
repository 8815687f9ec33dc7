//! Engine processing alone (no log, no network): one-service-task instances created, their jobs
//! activated and completed, in instances per second on one core; and the memory one waiting
//! instance holds.
//!
//! ```text
//! cargo bench -p sluice-benches --bench engine
//! ```
//!
//! The memory figure is printed before the benchmarks run: the heap bytes held per instance
//! that waits at its service task (instance, task, job, indexes), counted by a global
//! allocator wrapper over 20,000 instances.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice_engine::record::{
    DeploymentResource, DeploymentValue, JobBatchValue, JobValue, ProcessInstanceCreationValue,
    encode_records,
};
use sluice_engine::{Engine, EngineConfig, Intent, Output, Record, RecordValue, SideEffect};

/// Counts live heap bytes.
struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

#[expect(clippy::cast_possible_wrap, reason = "allocation sizes fit isize")]
// SAFETY: every method forwards to the system allocator with the caller's arguments; the
// counter is only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout, which the caller guarantees is valid.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: `ptr` was allocated by this allocator with `layout`; forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const ONE_TASK: &str = include_str!("../../engine/testdata/bpmn/one_task.bpmn");

fn deployed_engine() -> Engine {
    let mut engine = Engine::new(EngineConfig::new(1, 1));
    let mut out = Output::default();
    engine.process(
        Record::command(
            Intent::Create,
            RecordValue::Deployment(DeploymentValue {
                resources: vec![DeploymentResource {
                    resource_name: "one_task.bpmn".into(),
                    resource: ONE_TASK.into(),
                }],
                processes_metadata: Vec::new(),
            }),
        ),
        Some(0),
        0,
        &mut out,
    );
    assert!(
        out.records.iter().any(|r| r.intent == Intent::Created),
        "one_task.bpmn deploys"
    );
    engine
}

fn create_command() -> Record {
    Record::command(
        Intent::Create,
        RecordValue::ProcessInstanceCreation(ProcessInstanceCreationValue {
            bpmn_process_id: "one_task".into(),
            version: -1,
            process_definition_key: -1,
            process_instance_key: -1,
            variables: String::new().into(),
            fetch_variables: Vec::new(),
        }),
    )
}

fn activate_command(max: i32) -> Record {
    Record::command(
        Intent::Activate,
        RecordValue::JobBatch(JobBatchValue {
            job_type: "work".into(),
            worker: "bench".into(),
            timeout: 60_000,
            max_jobs_to_activate: max,
            ..JobBatchValue::default()
        }),
    )
}

/// Creates `count` instances, activates their jobs in batches of 32, completes them all.
/// Returns the records written (to keep the work observable).
fn run_instances(engine: &mut Engine, count: usize, now_ms: i64, out: &mut Output) -> usize {
    let mut records = 0;
    for request in 0..count {
        out.clear();
        engine.process(create_command(), Some(request as u64), now_ms, out);
        records += out.records.len();
    }
    let mut jobs = Vec::with_capacity(count);
    while jobs.len() < count {
        out.clear();
        engine.process(activate_command(32), Some(0), now_ms, out);
        records += out.records.len();
        let mut got = 0;
        for effect in &out.side_effects {
            if let SideEffect::Respond { record, .. } = effect
                && let RecordValue::JobBatch(batch) = &record.value
            {
                got += batch.job_keys.len();
                jobs.extend_from_slice(&batch.job_keys);
            }
        }
        assert!(got > 0, "every created instance has a job to activate");
    }
    for job in jobs {
        out.clear();
        engine.process(
            Record::command_for(job, Intent::Complete, RecordValue::Job(JobValue::default())),
            Some(0),
            now_ms,
            out,
        );
        records += out.records.len();
    }
    records
}

/// Heap bytes per instance waiting at its service task.
fn bytes_per_waiting_instance() -> f64 {
    const INSTANCES: usize = 20_000;
    let mut engine = deployed_engine();
    let mut out = Output::default();
    // Warm the maps so their growth is not charged to the first instances only.
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    for request in 0..INSTANCES {
        out.clear();
        engine.process(create_command(), Some(request as u64), 0, &mut out);
    }
    out = Output::default();
    let after = LIVE_BYTES.load(Ordering::Relaxed);
    black_box(&engine);
    drop(out);
    #[expect(clippy::cast_precision_loss, reason = "a ratio for a report")]
    let per = (after - before) as f64 / INSTANCES as f64;
    per
}

/// Instances per benchmark iteration.
const BATCH: usize = 1_000;

fn engine_benches(c: &mut Criterion) {
    let per_instance = bytes_per_waiting_instance();
    println!("engine: {per_instance:.0} heap bytes per waiting one-task instance (20,000 waiting)");

    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("one_task_instances", |b| {
        let mut engine = deployed_engine();
        let mut out = Output::default();
        b.iter(|| black_box(run_instances(&mut engine, BATCH, 1, &mut out)));
    });
    group.bench_function("one_task_instances_encoded", |b| {
        // The same work plus encoding every batch as the log would hold it.
        let mut engine = deployed_engine();
        let mut out = Output::default();
        b.iter(|| {
            let mut bytes = 0;
            for request in 0..BATCH {
                out.clear();
                engine.process(create_command(), Some(request as u64), 1, &mut out);
                bytes += encode_records(&out.records).len();
            }
            let mut done = 0;
            while done < BATCH {
                out.clear();
                engine.process(activate_command(32), Some(0), 1, &mut out);
                bytes += encode_records(&out.records).len();
                let keys: Vec<i64> = out
                    .side_effects
                    .iter()
                    .filter_map(|effect| match effect {
                        SideEffect::Respond { record, .. } => match &record.value {
                            RecordValue::JobBatch(batch) => Some(batch.job_keys.clone()),
                            _ => None,
                        },
                        _ => None,
                    })
                    .flatten()
                    .collect();
                for job in keys {
                    done += 1;
                    out.clear();
                    engine.process(
                        Record::command_for(
                            job,
                            Intent::Complete,
                            RecordValue::Job(JobValue::default()),
                        ),
                        Some(0),
                        1,
                        &mut out,
                    );
                    bytes += encode_records(&out.records).len();
                }
            }
            black_box(bytes)
        });
    });
    group.finish();
}

criterion_group!(benches, engine_benches);
criterion_main!(benches);
