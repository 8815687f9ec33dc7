//! A broker's disk fills up while it writes snapshots: three brokers, two partitions,
//! replication factor 3, a snapshot every 100 records; broker 2's data directory is a small ext4
//! file system on a loop device (so the test needs root, `mkfs.ext4` and a free loop device, as
//! CI has).
//!
//! Instances with 16 KiB of variables are created through the gRPC gateway until broker 2 has
//! snapshotted; then a filler file takes all but a sliver of its disk: enough for the journal
//! segments it already preallocated and for small files, far too little for a snapshot. More
//! instances are created: broker 2's snapshot writes fail. The partitions must go on (a leader,
//! creations answered), broker 2's replicas must keep applying the leader's commits, no
//! `*.tmp` file may stay on its disk, its `/actuator/partitions` and `/metrics` must report the
//! failed snapshots and its `/health` must say why it is unhealthy. Then the filler is deleted:
//! broker 2 must take a snapshot again and report healthy. At the end every partition still
//! serves 30 creations, `/health` is truthful on every broker, and no broker process died.

mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::gateway::{self, Client};
use common::{Cluster, serving};
use serde_json::Value;
use sluice_broker::dev::DevOptions;
use sluice_broker::gateway::proto::gateway_protocol as pb;
use sluice_broker::partitioning::PartitionId;
use sluice_engine::record::key_partition;
use tonic::Code;

const PORT_OFFSET: u32 = 360;
const PARTITIONS: u32 = 2;
/// The broker whose data directory is on the small disk.
const VICTIM: usize = 2;
/// The small disk: room for both partitions' first journal segments, snapshots and a filler.
const IMAGE_BYTES: u64 = 64 << 20;
/// Free space the filler leaves: small files (the Raft state, the topology) fit, a snapshot
/// of the state below does not.
const MARGIN_BYTES: u64 = 128 << 10;
/// Variables of every instance: the engine state grows by about this much per waiting instance.
const PADDING_BYTES: usize = 16 << 10;
/// Instances created while the disk is full (spread over the partitions). With the ones before,
/// each partition's log stays well inside its first 5 MB segment.
const CREATIONS_WHILE_FULL: usize = 20;
/// Creations every partition must still serve at the end.
const FINAL_CREATIONS: usize = 30;
const WAIT: Duration = Duration::from_secs(30);
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("running {command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed (this test needs root, mkfs.ext4 and a loop device): {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Where this test's disks live, one folder per test process: `<prefix><pid>`.
const DISK_DIR_PREFIX: &str = "sluice-snapshot-disk-full-";

/// A loop-mounted ext4 file system, unmounted and removed on drop (on every exit path: it is
/// created before the cluster, so it is dropped after the brokers are killed).
struct SmallDisk {
    base: PathBuf,
    mount: PathBuf,
}

impl SmallDisk {
    fn new() -> Self {
        let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        remove_stale_disks(&tmp);
        let base = tmp.join(format!("{DISK_DIR_PREFIX}{}", std::process::id()));
        // The guard exists before anything is made, so a failing step below cleans up too.
        let disk = SmallDisk {
            mount: base.join("mnt"),
            base,
        };
        std::fs::create_dir_all(&disk.mount).expect("the mount point");
        let image = disk.base.join("fs.img");
        let file = std::fs::File::create(&image).expect("the image");
        file.set_len(IMAGE_BYTES).expect("the image's size");
        drop(file);
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image));
        // `-o loop` attaches a loop device that the unmount detaches again.
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&disk.mount));
        disk
    }

    fn filler(&self) -> PathBuf {
        self.mount.join("filler")
    }

    /// Fills the file system but for about `margin` bytes; the bytes written.
    fn fill(&self, margin: u64) -> u64 {
        let mut file = std::fs::File::create(self.filler()).expect("the filler");
        let mut written = 0u64;
        for chunk in [1 << 20, 4 << 10] {
            let buffer = vec![0x5a_u8; chunk];
            while file.write_all(&buffer).is_ok() {
                written += chunk as u64;
            }
        }
        // What a failed write_all left partly written is counted by the file's length.
        let _ = file.sync_all();
        let length = file.metadata().expect("the filler's size").len();
        file.set_len(length.saturating_sub(margin))
            .expect("shrinking the filler");
        file.sync_all().expect("syncing the filler");
        written.max(length)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        unmount_and_remove(&self.base);
    }
}

/// Whether something is mounted at `path`.
fn is_mounted(path: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let path = path.to_string_lossy();
    mounts
        .lines()
        .any(|line| line.split(' ').nth(1) == Some(path.as_ref()))
}

/// Unmounts `base`/mnt if mounted (lazily if it is busy) and removes `base`.
fn unmount_and_remove(base: &Path) {
    let mount = base.join("mnt");
    if is_mounted(&mount) {
        let unmounted = Command::new("umount")
            .arg(&mount)
            .status()
            .is_ok_and(|status| status.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&mount).status();
        }
    }
    if is_mounted(&mount) {
        eprintln!(
            "{} is still mounted; not removing {}",
            mount.display(),
            base.display()
        );
        return;
    }
    let _ = std::fs::remove_dir_all(base);
}

/// Removes the disks of earlier runs whose process is gone (killed before its guard ran).
fn remove_stale_disks(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix(DISK_DIR_PREFIX))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            unmount_and_remove(&entry.path());
        }
    }
}

/// Every `*.tmp` file under `dir`.
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                pending.push(path);
            } else if path.to_string_lossy().ends_with(".tmp") {
                found.push(path);
            }
        }
    }
    found
}

/// Broker `index`'s `/actuator/partitions` as JSON, by partition id.
fn partitions_json(
    cluster: &Cluster,
    index: usize,
) -> Result<BTreeMap<PartitionId, Value>, String> {
    let body = cluster.get_ok(index, "/actuator/partitions")?;
    let views: BTreeMap<String, Value> =
        serde_json::from_str(&body).map_err(|error| format!("{error}: {body}"))?;
    views
        .into_iter()
        .map(|(id, view)| Ok((id.parse().map_err(|_| format!("partition {id}"))?, view)))
        .collect()
}

fn field_u64(view: &Value, name: &str) -> u64 {
    view[name].as_u64().unwrap_or_default()
}

fn create_request(n: usize) -> pb::CreateProcessInstanceRequest {
    let padding = "x".repeat(PADDING_BYTES);
    pb::CreateProcessInstanceRequest {
        bpmn_process_id: "one_task".to_owned(),
        version: -1,
        variables: format!(r#"{{"n":{n},"padding":"{padding}"}}"#),
        ..pb::CreateProcessInstanceRequest::default()
    }
}

/// Creates one instance (retrying `NOT_FOUND` while the deployment travels); its partition.
async fn create(client: &mut Client, n: usize) -> PartitionId {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match client.create_process_instance(create_request(n)).await {
            Ok(created) => return key_partition(created.into_inner().process_instance_key),
            Err(status)
                if status.code() == Code::NotFound && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("creating instance {n}: {status:?}"),
        }
    }
}

/// Creates `count` instances; how many landed on each partition.
async fn create_many(
    client: &mut Client,
    first: usize,
    count: usize,
) -> BTreeMap<PartitionId, usize> {
    let mut landed = BTreeMap::new();
    for n in first..first + count {
        *landed.entry(create(client, n).await).or_default() += 1;
    }
    landed
}

/// Waits until broker `index` has applied what each partition's leader has committed.
fn wait_applied(cluster: &Cluster, index: usize, what: &str) {
    cluster.wait_until(what, Duration::from_mins(1), || {
        for partition_id in 1..=PARTITIONS {
            let (leader, leader_view) = cluster.settled_leader(partition_id)?;
            let view = cluster.partition_view(index, partition_id)?;
            if view.applied_index < leader_view.commit_index {
                return Err(format!(
                    "partition {partition_id}: broker {index} applied {} of leader {leader}'s \
                     commit index {}",
                    view.applied_index, leader_view.commit_index
                ));
            }
        }
        Ok(())
    });
}

#[test]
#[expect(clippy::too_many_lines, reason = "one scenario, told step by step")]
fn a_full_disk_fails_snapshots_but_stops_nothing() {
    let disk = SmallDisk::new();
    let data_dir = disk.mount.join("data");
    let options = DevOptions {
        dir: None,
        brokers: 3,
        partitions: PARTITIONS,
        replication_factor: 3,
        port_offset: PORT_OFFSET,
    };
    let cluster = Cluster::create("abuse_snapshot_disk_full", options);
    for (index, broker) in cluster.brokers.iter().enumerate() {
        let mut env = broker.env.borrow_mut();
        env.retain(|(key, _)| key != "ZEEBE_BROKER_DATA_LOGSEGMENTSIZE");
        env.push(("ZEEBE_BROKER_DATA_LOGSEGMENTSIZE".into(), "5MB".into()));
        // Small segments hold the largest entry only with a smaller message limit.
        env.push(("ZEEBE_BROKER_NETWORK_MAXMESSAGESIZE".into(), "1MB".into()));
        env.push(("ZEEBE_BROKER_DATA_SNAPSHOTRECORDS".into(), "100".into()));
        if index == VICTIM {
            env.push((
                "ZEEBE_BROKER_DATA_DIRECTORY".into(),
                data_dir.display().to_string(),
            ));
        }
    }
    cluster.spawn_all_and_elect(WAIT);
    let runtime = serving::runtime();
    let mut client = runtime.block_on(async {
        let endpoint = gateway::plain_endpoint(PORT_OFFSET, 0, CALL_TIMEOUT);
        let mut client = Client::new(gateway::connect(&endpoint, WAIT).await);
        gateway::settled_topology(&mut client, 3, WAIT).await;
        client
            .deploy_resource(pb::DeployResourceRequest {
                resources: vec![pb::Resource {
                    name: "one_task.bpmn".to_owned(),
                    content: gateway::bpmn("one_task.bpmn"),
                }],
                tenant_id: String::new(),
            })
            .await
            .expect("the deployment");
        client
    });
    let mut created = 0;

    // Before the disk fills: instances pile up (they wait at their task) until broker 2 has
    // snapshotted every partition, so its state is worth a snapshot larger than the margin.
    cluster.wait_until(
        "broker 2 to snapshot every partition",
        Duration::from_mins(2),
        || {
            runtime.block_on(create_many(&mut client, created, 4));
            created += 4;
            let views = partitions_json(&cluster, VICTIM)?;
            let taken: Vec<u64> = views
                .values()
                .map(|view| field_u64(view, "snapshotsTaken"))
                .collect();
            if taken.len() == PARTITIONS as usize && taken.iter().all(|n| *n >= 1) {
                Ok(())
            } else {
                Err(format!("snapshots taken per partition: {taken:?}"))
            }
        },
    );
    wait_applied(
        &cluster,
        VICTIM,
        "broker 2 to apply everything before the fill",
    );
    let filled = disk.fill(MARGIN_BYTES);
    cluster.note(&format!(
        "{created} instances created; the filler took {} MiB of broker 2's disk, leaving about \
         {} KiB",
        filled >> 20,
        MARGIN_BYTES >> 10
    ));

    // The disk is full: snapshot writes fail, nothing stops.
    let landed = runtime.block_on(create_many(&mut client, created, CREATIONS_WHILE_FULL));
    created += CREATIONS_WHILE_FULL;
    cluster.note(&format!(
        "while the disk is full, creations landed on {landed:?}"
    ));
    let failed = cluster.wait_until(
        "broker 2 to report a failed snapshot",
        Duration::from_mins(1),
        || {
            // Keep the log growing so snapshots stay due.
            runtime.block_on(create_many(&mut client, created, 2));
            created += 2;
            let views = partitions_json(&cluster, VICTIM)?;
            views
                .iter()
                .find_map(|(partition_id, view)| {
                    view["snapshotError"]
                        .as_str()
                        .map(|error| (*partition_id, error.to_owned()))
                })
                .ok_or_else(|| format!("no snapshot error yet: {views:?}"))
        },
    );
    cluster.note(&format!(
        "partition {} on broker 2 reports: {}",
        failed.0, failed.1
    ));
    assert!(
        failed.1.contains("disk is full") || failed.1.contains("No space left"),
        "the error says the disk is full: {}",
        failed.1
    );
    let failures = cluster
        .metric(VICTIM, "sluice_snapshot_write_failures_total")
        .expect("the metric");
    assert!(failures >= 1.0, "the failures are counted: {failures}");
    cluster.wait_until(
        "no temporary file on broker 2's full disk",
        Duration::from_secs(10),
        || {
            let found = temp_files(&data_dir);
            if found.is_empty() {
                Ok(())
            } else {
                Err(format!("left behind: {found:?}"))
            }
        },
    );
    let (status, body) = cluster.get(VICTIM, "/health").expect("/health answers");
    assert_eq!(
        status, 503,
        "broker 2 is unhealthy while it cannot snapshot: {body}"
    );
    assert!(body.contains("snapshot"), "and says why: {body}");
    for partition_id in 1..=PARTITIONS {
        cluster
            .settled_leader(partition_id)
            .unwrap_or_else(|error| {
                panic!("partition {partition_id} has a leader while the disk is full: {error}")
            });
    }
    // Broker 2's replicas were not stopped: they still apply what their leaders commit.
    let landed = runtime.block_on(create_many(&mut client, created, 10));
    created += 10;
    cluster.note(&format!("ten more creations landed on {landed:?}"));
    wait_applied(
        &cluster,
        VICTIM,
        "broker 2 to keep applying on the full disk",
    );
    let taken_while_full: BTreeMap<PartitionId, u64> = partitions_json(&cluster, VICTIM)
        .expect("broker 2's partitions")
        .iter()
        .map(|(id, view)| (*id, field_u64(view, "snapshotsTaken")))
        .collect();

    // Space is freed: a snapshot is taken again and the error clears.
    std::fs::remove_file(disk.filler()).expect("removing the filler");
    cluster.note("the filler is deleted");
    cluster.wait_until(
        "broker 2 to snapshot again after space was freed",
        Duration::from_mins(2),
        || {
            runtime.block_on(create_many(&mut client, created, 2));
            created += 2;
            let views = partitions_json(&cluster, VICTIM)?;
            let again = views.iter().any(|(id, view)| {
                field_u64(view, "snapshotsTaken") > taken_while_full.get(id).copied().unwrap_or(0)
            });
            let errors: Vec<&Value> = views.values().map(|view| &view["snapshotError"]).collect();
            if again && errors.iter().all(|error| error.is_null()) {
                Ok(())
            } else {
                Err(format!(
                    "taken while full {taken_while_full:?}; now {views:?}"
                ))
            }
        },
    );

    // Every partition still serves 30 creations, /health is truthful, no process died.
    let mut served: BTreeMap<PartitionId, usize> = BTreeMap::new();
    while served.len() < PARTITIONS as usize
        || served.values().any(|count| *count < FINAL_CREATIONS)
    {
        assert!(
            served.values().sum::<usize>() < 4 * FINAL_CREATIONS * PARTITIONS as usize,
            "creations do not reach every partition: {served:?}"
        );
        let partition_id = runtime.block_on(create(&mut client, created));
        created += 1;
        *served.entry(partition_id).or_default() += 1;
    }
    cluster.note(&format!("final creations per partition: {served:?}"));
    wait_applied(&cluster, VICTIM, "broker 2 to apply the final creations");
    for index in cluster.cluster_brokers() {
        cluster.wait_until(
            &format!("broker {index} to report healthy"),
            WAIT,
            || match cluster.get(index, "/health")? {
                (200, _) => Ok(()),
                (status, body) => Err(format!("{status}: {body}")),
            },
        );
    }
    let left = temp_files(&data_dir);
    assert!(left.is_empty(), "no temporary file stays: {left:?}");
    cluster.assert_no_exits();
    cluster.terminate_all();
    cluster.note(&format!("{created} instances created in all"));
}
