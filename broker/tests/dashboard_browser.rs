//! The management port's dashboard in a real browser: three brokers, three partitions,
//! replication factor 3; broker 0 leads a partition, raw appends reach every partition and a
//! deployment and instances created round-robin through broker 0's gRPC gateway give every
//! partition engine commands; then headless Chromium loads broker 0's `/dashboard`,
//! runs its script for five seconds of virtual time and dumps the DOM, which must show the
//! script polled, the partition table with every partition's leader, and filled latency
//! histograms with percentiles.
//!
//! Chromium comes from `bash scripts/browser.sh` (or `$SLUICE_CHROMIUM`); without it this test
//! fails and says so rather than skipping.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::gateway::{self, Client};
use common::{Cluster, index_of, node_of};
use sluice_broker::client_api::AppendClient;
use sluice_broker::dev::DevOptions;

const PORT_OFFSET: u32 = 280;
const PARTITIONS: u32 = 3;
const APPENDS_PER_PARTITION: usize = 40;
const INSTANCES: usize = 10;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long Chromium may take to load the page, run it and dump the DOM.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(90);

#[test]
fn dashboard_browser() {
    let chromium = find_chromium();
    let options = DevOptions {
        dir: None,
        brokers: 3,
        partitions: PARTITIONS,
        replication_factor: 3,
        port_offset: PORT_OFFSET,
    };
    let cluster = Cluster::start("dashboard_browser", options);
    cluster.note(&format!("browser: {}", chromium.display()));
    wait_for_broker_0_to_lead(&cluster);

    let mut client = AppendClient::new(cluster.command_apis());
    for partition_id in 1..=PARTITIONS {
        for i in 0..APPENDS_PER_PARTITION {
            let payload = format!("dashboard {partition_id}/{i}");
            client
                .append(partition_id, payload.as_bytes(), REQUEST_TIMEOUT)
                .unwrap_or_else(|error| panic!("append to partition {partition_id}: {error}"));
        }
    }
    run_commands();
    let leaders = leaders(&cluster);
    let commits = cluster
        .metric(0, "sluice_commit_latency_seconds_count")
        .unwrap_or_else(|error| panic!("{error}"));
    let commands = cluster
        .metric(0, "sluice_command_latency_seconds_count")
        .unwrap_or_else(|error| panic!("{error}"));
    cluster.note(&format!(
        "leaders {leaders:?}; broker 0 counts {commits} commits and {commands} commands"
    ));
    assert!(
        commits > 0.0 && commands > 0.0,
        "broker 0's /metrics should count its partitions' commits and commands"
    );

    let url = format!("http://{}/dashboard", cluster.brokers[0].management());
    let dom = dump_dom(&chromium, &url, &cluster.dir);
    // What the script rendered; the script's own text (its templates) follows.
    let dom = &dom[..dom.find("<script>").unwrap_or(dom.len())];
    check_status(dom);
    check_roles(dom, &leaders);
    let commit_count = check_histogram(dom, "commit");
    let command_count = check_histogram(dom, "command");
    // The page's window starts from zero (fewer polls than it keeps), so it counts at least
    // what /metrics counted before it loaded (background commands may add some).
    assert!(
        f64::from(commit_count) >= commits && f64::from(command_count) >= commands,
        "the page counts {commit_count} commits and {command_count} commands, broker 0's \
         /metrics counted {commits} and {commands} before"
    );
    cluster.terminate_all();
}

/// Waits for every partition to settle on a leader and for broker 0 to lead one (asking for a
/// rebalance if it leads none: priority election makes partition 1's first replica, node 0,
/// its preferred leader).
fn wait_for_broker_0_to_lead(cluster: &Cluster) {
    let leaders = leaders(cluster);
    if leaders.values().any(|&node| index_of(node) == 0) {
        return;
    }
    cluster.note(&format!("leaders {leaders:?}: asking for a rebalance"));
    let answer = cluster.post(0, "/actuator/rebalance", Duration::from_secs(5));
    cluster.note(&format!("rebalance: {answer:?}"));
    cluster.wait_until(
        "broker 0 to lead a partition after the rebalance",
        Duration::from_secs(30),
        || {
            let (leader, _) = cluster.settled_leader(1)?;
            if leader == 0 {
                Ok(())
            } else {
                Err(format!("partition 1 is led by broker {leader}"))
            }
        },
    );
}

/// Every partition's settled leader, by partition.
fn leaders(cluster: &Cluster) -> BTreeMap<u32, u32> {
    (1..=PARTITIONS)
        .map(|partition_id| {
            let (leader, _) = cluster.wait_until(
                &format!("partition {partition_id} to settle on a leader"),
                Duration::from_secs(30),
                || cluster.settled_leader(partition_id),
            );
            (partition_id, node_of(leader))
        })
        .collect()
}

/// Deploys `one_task` (on partition 1) and starts instances of it round-robin over the
/// partitions, through broker 0's gateway.
fn run_commands() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let endpoint = gateway::plain_endpoint(PORT_OFFSET, 0, 2 * REQUEST_TIMEOUT);
        let mut client = Client::new(gateway::connect(&endpoint, REQUEST_TIMEOUT).await);
        let deployed = gateway::deploy(&mut client, &["one_task.bpmn"], REQUEST_TIMEOUT).await;
        assert_eq!(deployed.deployments.len(), 1, "{deployed:?}");
        for _ in 0..INSTANCES {
            gateway::create(&mut client, "one_task", "{}", REQUEST_TIMEOUT).await;
        }
    });
}

// ---------------------------------------------------------------------------------------------
// The browser
// ---------------------------------------------------------------------------------------------

/// `$SLUICE_CHROMIUM`, else `chromium` or `chromium-browser` on `PATH`; fails the test when
/// there is none.
fn find_chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("SLUICE_CHROMIUM") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "SLUICE_CHROMIUM={} is not a file; unset it and run `bash scripts/browser.sh`",
            path.display()
        );
        return path;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no headless browser for the dashboard test: neither `chromium` nor \
                 `chromium-browser` is on PATH. Run `bash scripts/browser.sh` (as root it \
                 installs Chromium with apt-get), or set SLUICE_CHROMIUM to a Chromium binary."
            )
        })
}

/// Loads `url` in headless Chromium, lets its script run five seconds of virtual time, and
/// returns the DOM it dumps.
fn dump_dom(chromium: &Path, url: &str, dir: &Path) -> String {
    let dom_path = dir.join("dashboard-dom.html");
    let log_path = dir.join("chromium.log");
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--virtual-time-budget=5000",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.join("chromium-profile").display()
        ))
        .args(["--dump-dom", url])
        .stdin(Stdio::null())
        .stdout(File::create(&dom_path).expect("creating the DOM file"))
        .stderr(File::create(&log_path).expect("creating the browser log"))
        .spawn()
        .unwrap_or_else(|error| panic!("starting {}: {error}", chromium.display()));
    let deadline = Instant::now() + CHROMIUM_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for chromium") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium did not dump {url} within {CHROMIUM_TIMEOUT:?}; its log: {}",
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let dom = std::fs::read_to_string(&dom_path).expect("reading the dumped DOM");
    assert!(
        status.success() && !dom.is_empty(),
        "chromium exited {status} with {} bytes of DOM; its log: {}",
        dom.len(),
        log_path.display()
    );
    dom
}

// ---------------------------------------------------------------------------------------------
// The DOM
// ---------------------------------------------------------------------------------------------

/// The opening tag of the element with `id`, and what follows it.
fn element<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element #{id} in the DOM:\n{dom}"));
    let start = dom[..at].rfind('<').expect("an id sits inside a tag");
    &dom[start..]
}

/// The value of attribute `name` in the tag `tag` starts with.
fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let tag = &tag[..tag.find('>')?];
    let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    tag[at..].split('"').next()
}

/// The opening tag `element` starts with.
fn tag(element: &str) -> &str {
    &element[..element.find('>').map_or(element.len(), |at| at + 1)]
}

/// The text after the opening tag `element` starts with, up to the next tag.
fn text(element: &str) -> &str {
    let after = &element[element.find('>').map_or(element.len(), |at| at + 1)..];
    &after[..after.find('<').unwrap_or(after.len())]
}

fn check_status(dom: &str) {
    let status = element(dom, "status");
    let polls: u32 = attribute(status, "data-polls")
        .and_then(|polls| polls.parse().ok())
        .unwrap_or_else(|| panic!("#status has no data-polls count: {}", tag(status)));
    assert_eq!(
        text(status),
        "live",
        "the page's status after {polls} polls"
    );
    assert!(polls >= 1, "the page never completed a poll");
    if polls >= 2 {
        assert!(
            dom.contains("class=\"series-appends\""),
            "after {polls} polls the throughput chart should draw the appends series"
        );
    }
}

/// One row per partition, each naming the leader `/actuator/partitions` agrees on.
fn check_roles(dom: &str, leaders: &BTreeMap<u32, u32>) {
    let mut shown = BTreeMap::new();
    for (at, _) in dom.match_indices("<tr data-partition=") {
        let row = &dom[at..];
        let partition: u32 = attribute(row, "data-partition")
            .and_then(|p| p.parse().ok())
            .expect("a numeric data-partition");
        let leader = attribute(row, "data-leader").unwrap_or_default();
        assert!(
            !leader.is_empty(),
            "partition {partition} shows no leader: {}",
            &row[..row.find("</tr>").unwrap_or(row.len())]
        );
        shown.insert(partition, leader.parse::<u32>().expect("a numeric leader"));
    }
    assert_eq!(&shown, leaders, "partition leaders in the page's table");
}

/// The all-partitions panel of histogram `key` has bars whose counts add up to its total and
/// p50/p99 text; returns that total.
fn check_histogram(dom: &str, key: &str) -> u32 {
    let id = format!("latency-{key}-total");
    let panel = element(dom, &id);
    // Up to the next panel or histogram.
    let opening = tag(panel).len();
    let panel = &panel[..panel[opening..]
        .find("id=\"latency-")
        .map_or(panel.len(), |end| opening + end)];
    let count: u32 = attribute(panel, "data-count")
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("#{id} has no data-count"));
    assert!(count > 0, "#{id} shows no samples: {panel}");
    let bars: Vec<u32> = panel
        .match_indices("<div class=\"bar\"")
        .map(|(at, _)| {
            attribute(&panel[at..], "data-count")
                .and_then(|count| count.parse().ok())
                .expect("every bar has a data-count")
        })
        .collect();
    assert_eq!(bars.len(), 17, "#{id}: one bar per bucket bound and +Inf");
    assert_eq!(bars.iter().sum::<u32>(), count, "#{id}: bars {bars:?}");
    let percentiles = &panel[panel.find("class=\"pct\"").expect("a percentile line") - 5..];
    let p50: f64 = attribute(percentiles, "data-p50")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("#{id}: no p50 in {percentiles}"));
    let p99: f64 = attribute(percentiles, "data-p99")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("#{id}: no p99 in {percentiles}"));
    assert!(
        0.0 < p50 && p50 <= p99 && p99 <= 1.0,
        "#{id}: p50 {p50} s, p99 {p99} s"
    );
    let line = text(percentiles);
    assert!(
        line.starts_with("p50 ")
            && line.contains(" · p99 ")
            && line.contains(&format!("n = {count}")),
        "#{id}: percentile text {line:?}"
    );
    count
}
