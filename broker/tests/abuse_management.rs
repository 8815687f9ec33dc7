//! The management API is safe by default, through real broker processes.
//!
//! `abuse_management`: three brokers with the `sluice dev` token; brokers 0 and 1 also have the
//! fault switch (`ZEEBE_BROKER_MANAGEMENT_FAULTS_ENABLED=true`), broker 2 not.
//! - `POST /actuator/rebalance` without a token and with a wrong one is 401 (with
//!   `WWW-Authenticate: Bearer`), also the fanned-out `?local=true` form; with the token it is
//!   200 and every peer answered the fan-out (which carries the token);
//! - what a web page on another site can send (a form POST: its content type and `Origin`, no
//!   `Authorization`; or the token beside another `Origin`, or a `text/plain` body) is 403, and
//!   nothing changes: the fault switch it aimed at blocks no datagram;
//! - the fault switch is 404 on broker 2, 401 without the token on broker 0, and with it really
//!   cuts broker 0 off from broker 1 until cleared;
//! - with broker 0 cut off until partition 1 (which prefers it) is led by another broker, and
//!   reconnected, a cross-site form asking any broker for a rebalance moves no leader; the
//!   request with the token moves it back to broker 0;
//! - a page in a real browser (headless Chromium, when installed) that posts a form and a
//!   `no-cors` fetch gets both refused;
//! - every read stays open, without CORS headers;
//! - `curl` sees the same (when installed);
//! - afterwards every broker is healthy and none exited.
//!
//! `changes_are_off_without_a_token`: one broker without a token answers every change 403 naming
//! the keys, and the fault switch 404; brokers with the fault switch but no token, a short token
//! or a missing token file refuse to start, naming the key.

mod common;

use std::net::SocketAddr;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{Cluster, HttpReply, http_request, test_env};
use serde_json::Value;
use sluice_broker::dev::DevOptions;

const PORT_OFFSET: u32 = 340;
const NO_TOKEN_PORT_OFFSET: u32 = 345;
const MISCONFIGURED_PORT_OFFSET: u32 = 348;
const PARTITIONS: u32 = 3;
const WAIT: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a misconfigured broker may take to exit.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long Chromium may take to load the page, run it and dump the DOM.
const CHROMIUM_TIMEOUT: Duration = Duration::from_mins(1);
/// Long enough for a set fault switch to drop heartbeats (every 100 ms in the tests).
const NOTHING_CHANGED_WINDOW: Duration = Duration::from_secs(1);
const FAULTS_ENABLED: &str = "ZEEBE_BROKER_MANAGEMENT_FAULTS_ENABLED";
const TOKEN_FILE: &str = "ZEEBE_BROKER_MANAGEMENT_SECURITY_TOKENFILE";
const TOKEN: &str = "ZEEBE_BROKER_MANAGEMENT_SECURITY_TOKEN";
const BLOCKED: &str = "sluice_transport_datagrams_blocked_total";
const REFUSED: &str = "sluice_management_requests_refused_total";
const ALIVE: &str = "sluice_cluster_members_alive";
const EVIL_ORIGIN: &str = "http://evil.example";
const FORM: &str = "application/x-www-form-urlencoded";
const WRONG_TOKEN: &str = "wrong-token-0123456789abcdef";

#[test]
fn abuse_management() {
    let options = DevOptions {
        dir: None,
        brokers: 3,
        partitions: PARTITIONS,
        replication_factor: 3,
        port_offset: PORT_OFFSET,
    };
    let cluster = Cluster::create("abuse_management", options);
    for index in [0, 1] {
        cluster.brokers[index]
            .env
            .borrow_mut()
            .push((FAULTS_ENABLED.to_owned(), "true".to_owned()));
    }
    for index in cluster.cluster_brokers() {
        cluster.spawn(index);
    }
    wait_converged(&cluster, "the cluster to converge");

    rebalance_needs_the_token(&cluster);
    browser_requests_change_nothing(&cluster);
    fault_switch(&cluster);
    only_the_token_moves_a_leader(&cluster);
    reads_stay_open(&cluster);
    with_curl(&cluster);

    wait_converged(&cluster, "the cluster to be whole after the abuse");
    for index in cluster.cluster_brokers() {
        let health = cluster.get(index, "/health");
        assert!(
            matches!(&health, Ok((200, _))),
            "broker {index}'s /health: {health:?}"
        );
    }
    cluster.assert_no_exits();
    cluster.terminate_all();
}

#[test]
fn changes_are_off_without_a_token() {
    let options = DevOptions {
        dir: None,
        brokers: 1,
        partitions: 1,
        replication_factor: 1,
        port_offset: NO_TOKEN_PORT_OFFSET,
    };
    let cluster = Cluster::create("abuse_management_no_token", options);
    // An empty variable unsets the token file `sluice dev` configured.
    cluster.brokers[0]
        .env
        .borrow_mut()
        .push((TOKEN_FILE.to_owned(), String::new()));
    cluster.spawn(0);
    cluster.wait_until("the broker to be ready", WAIT, || {
        match cluster.get(0, "/ready")? {
            (200, _) => Ok(()),
            (status, body) => Err(format!("/ready answered {status}: {body}")),
        }
    });
    let addr = cluster.brokers[0].management();
    for authorization in [None, Some(cluster.management_token.as_str())] {
        let reply = post(addr, "/actuator/rebalance", authorization, &[], "");
        assert_eq!(reply.status, 403, "{reply:?}");
        for needle in [
            "management.security.token",
            "ZEEBE_BROKER_MANAGEMENT_SECURITY_TOKEN",
        ] {
            assert!(reply.body.contains(needle), "{needle:?} missing: {reply:?}");
        }
    }
    let reply = post(
        addr,
        "/actuator/faults?block=127.0.0.1:1",
        Some(&cluster.management_token),
        &[],
        "",
    );
    assert_eq!(reply.status, 404, "{reply:?}");
    assert!(
        reply.body.contains("management.faults.enabled"),
        "{reply:?}"
    );
    assert!(matches!(cluster.get(0, "/health"), Ok((200, _))));
    cluster.assert_no_exits();

    let missing = cluster.dir.join("no-such-token");
    let missing = missing.display().to_string();
    for (name, env, needles) in [
        (
            "faults-without-token",
            vec![(TOKEN_FILE, ""), (FAULTS_ENABLED, "true")],
            &["management.faults.enabled", "management.security.token"][..],
        ),
        (
            "short-token",
            vec![(TOKEN_FILE, ""), (TOKEN, "short")],
            &["management.security.token", "5 bytes long"][..],
        ),
        (
            "missing-token-file",
            vec![(TOKEN_FILE, missing.as_str())],
            &["management.security.tokenFile", "cannot be opened"][..],
        ),
    ] {
        let (status, output) = start_misconfigured(&cluster, name, &env);
        let status = status.unwrap_or_else(|| {
            panic!("{name}: the broker kept running; it should refuse to start. Output: {output}")
        });
        assert!(!status.success(), "{name}: exited successfully: {output}");
        for needle in needles {
            assert!(
                output.contains(needle),
                "{name}: the output does not name {needle:?}: {output}"
            );
        }
        assert!(
            !output.contains("short\n") && !output.contains(": short"),
            "{name}: the token is quoted: {output}"
        );
    }
    cluster.terminate_all();
}

/// `POST path` to `addr` with `Authorization: Bearer token` if given, `headers` and `body`.
fn post(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpReply {
    let authorization = token.map(|token| format!("Bearer {token}"));
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    if let Some(authorization) = &authorization {
        all.push(("Authorization", authorization));
    }
    http_request(addr, "POST", path, &all, body, REQUEST_TIMEOUT)
        .unwrap_or_else(|error| panic!("{error}"))
}

/// Waits until every broker sees the two others alive and every partition has a settled leader.
fn wait_converged(cluster: &Cluster, what: &str) {
    cluster.wait_until(what, WAIT, || {
        for index in cluster.cluster_brokers() {
            let alive = cluster.metric(index, ALIVE)?;
            if (alive - 2.0).abs() > f64::EPSILON {
                return Err(format!("broker {index} sees {alive} other brokers alive"));
            }
        }
        for partition in 1..=PARTITIONS {
            cluster.settled_leader(partition)?;
        }
        Ok(())
    });
}

fn rebalance_needs_the_token(cluster: &Cluster) {
    let addr = cluster.brokers[0].management();
    let reply = post(addr, "/actuator/rebalance", None, &[], "");
    assert_eq!(reply.status, 401, "without a token: {reply:?}");
    assert!(
        reply
            .header("www-authenticate")
            .is_some_and(|value| value.starts_with("Bearer")),
        "{reply:?}"
    );
    assert!(reply.body.contains("Authorization: Bearer"), "{reply:?}");
    let reply = post(addr, "/actuator/rebalance", Some(WRONG_TOKEN), &[], "");
    assert_eq!(reply.status, 401, "with a wrong token: {reply:?}");
    assert!(
        reply
            .header("www-authenticate")
            .is_some_and(|value| value.contains("invalid_token")),
        "{reply:?}"
    );
    // The form the fan-out uses is guarded the same way.
    let peer = cluster.brokers[1].management();
    let reply = post(peer, "/actuator/rebalance?local=true", None, &[], "");
    assert_eq!(
        reply.status, 401,
        "local rebalance without a token: {reply:?}"
    );
    // Any method but GET and HEAD is a change.
    let reply = http_request(addr, "PUT", "/actuator/rebalance", &[], "", REQUEST_TIMEOUT)
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(reply.status, 401, "PUT without a token: {reply:?}");

    let (status, body) = cluster
        .post(0, "/actuator/rebalance", REQUEST_TIMEOUT)
        .expect("POST /actuator/rebalance");
    assert_eq!(status, 200, "with the token: {body}");
    let answer: Value = serde_json::from_str(&body).expect("rebalance answers JSON");
    let transfers = answer
        .get("transfers")
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("no transfers in {body}"));
    assert!(transfers.contains_key("0"), "{body}");
    for other in [1, 2] {
        let address = cluster.brokers[other].management().to_string();
        let reply = transfers
            .get(&address)
            .unwrap_or_else(|| panic!("not fanned out to broker {other}: {body}"));
        assert!(
            reply.get("error").is_none() && reply.get("transfers").is_some(),
            "broker {other} refused the fanned-out rebalance (the token must travel): {reply}"
        );
    }
    cluster.note(&format!(
        "rebalance with the token: {}",
        body.split_whitespace().collect::<String>()
    ));
}

/// A request a web page could make the operator's browser send.
#[derive(Debug)]
struct Attempt<'a> {
    path: &'a str,
    token: Option<&'a str>,
    headers: Vec<(&'a str, &'a str)>,
    body: &'a str,
}

fn browser_requests_change_nothing(cluster: &Cluster) {
    let addr = cluster.brokers[0].management();
    let target = cluster.brokers[1].internal_api();
    let block = format!("/actuator/faults?block={target}");
    let blocked_before = cluster.metric(0, BLOCKED).unwrap_or_else(|e| panic!("{e}"));
    let refused_before = cluster.metric(0, REFUSED).unwrap_or_else(|e| panic!("{e}"));
    let form_body = format!("block={target}");
    let token = cluster.management_token.as_str();
    let attempts = [
        // An HTML form on another site, posted in the operator's browser.
        Attempt {
            path: &block,
            token: None,
            headers: vec![("Origin", EVIL_ORIGIN), ("Content-Type", FORM)],
            body: &form_body,
        },
        Attempt {
            path: "/actuator/rebalance",
            token: None,
            headers: vec![("Origin", EVIL_ORIGIN), ("Content-Type", FORM)],
            body: "x=1",
        },
        // The token does not make another site's request acceptable.
        Attempt {
            path: &block,
            token: Some(token),
            headers: vec![("Origin", EVIL_ORIGIN)],
            body: "",
        },
        Attempt {
            path: &block,
            token: Some(token),
            headers: vec![("Sec-Fetch-Site", "cross-site")],
            body: "",
        },
        Attempt {
            path: &block,
            token: Some(token),
            headers: vec![("Content-Type", "text/plain")],
            body: "hello",
        },
    ];
    let mut sent = attempts.len();
    sent += from_a_browser(cluster, &block);
    for attempt in attempts {
        let reply = post(
            addr,
            attempt.path,
            attempt.token,
            &attempt.headers,
            attempt.body,
        );
        assert_eq!(reply.status, 403, "{attempt:?}: {reply:?}");
        assert!(reply.body.starts_with("refused"), "{reply:?}");
    }
    std::thread::sleep(NOTHING_CHANGED_WINDOW);
    let blocked_after = cluster.metric(0, BLOCKED).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        (blocked_after - blocked_before).abs() < f64::EPSILON,
        "a refused request set the fault switch: {BLOCKED} went from {blocked_before} to \
         {blocked_after}"
    );
    let alive = cluster.metric(0, ALIVE).unwrap_or_else(|e| panic!("{e}"));
    assert!((alive - 2.0).abs() < f64::EPSILON, "broker 0 sees {alive}");
    let refused_after = cluster.metric(0, REFUSED).unwrap_or_else(|e| panic!("{e}"));
    #[expect(clippy::cast_precision_loss, reason = "a handful of requests")]
    let sent = sent as f64;
    assert!(
        refused_after - refused_before >= sent,
        "{REFUSED} went from {refused_before} to {refused_after} after {sent} refusals"
    );
}

fn fault_switch(cluster: &Cluster) {
    let token = cluster.management_token.as_str();
    // Broker 2 was not given the switch: it does not exist there, token or not.
    let off = cluster.brokers[2].management();
    let target = cluster.brokers[0].internal_api();
    let reply = post(
        off,
        &format!("/actuator/faults?block={target}"),
        Some(token),
        &[],
        "",
    );
    assert_eq!(reply.status, 404, "{reply:?}");
    assert!(
        reply.body.contains("management.faults.enabled"),
        "{reply:?}"
    );
    let (status, _) = cluster.get(2, "/actuator/faults").expect("GET");
    assert_eq!(status, 404);

    let on = cluster.brokers[0].management();
    let target = cluster.brokers[1].internal_api();
    let block = format!("/actuator/faults?block={target}");
    let reply = post(on, &block, None, &[], "");
    assert_eq!(reply.status, 401, "{reply:?}");
    let reply = post(on, "/actuator/faults?block=nonsense", Some(token), &[], "");
    assert_eq!(reply.status, 400, "{reply:?}");

    let blocked_before = cluster.metric(0, BLOCKED).unwrap_or_else(|e| panic!("{e}"));
    let (status, body) = cluster.post(0, &block, REQUEST_TIMEOUT).expect("POST");
    assert_eq!(status, 200, "{body}");
    cluster.note(&format!("fault switch set: {}", body.trim()));
    let waited = Instant::now();
    cluster.wait_until(
        "broker 0 to drop traffic with broker 1",
        Duration::from_secs(10),
        || {
            let blocked = cluster.metric(0, BLOCKED)?;
            if blocked > blocked_before {
                Ok(())
            } else {
                Err(format!("{BLOCKED} is still {blocked}"))
            }
        },
    );
    cluster.note(&format!(
        "datagrams dropped after {:.2}s; clearing",
        waited.elapsed().as_secs_f64()
    ));
    let (status, body) = cluster
        .post(0, "/actuator/faults?block=", REQUEST_TIMEOUT)
        .expect("POST");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("blocked: []"), "{body}");
}

/// Cuts broker 0 off with its fault switch until partition 1 (which prefers broker 0) elects
/// another leader, reconnects it, and then asks for a rebalance the way a web page could (on
/// every broker): the other leader stays. Only the request with the token hands the leadership
/// back to broker 0.
fn only_the_token_moves_a_leader(cluster: &Cluster) {
    const PARTITION: u32 = 1;
    // The rebalance of `rebalance_needs_the_token` put every leader where it is preferred.
    let (_, view) = cluster.wait_until(
        "broker 0, its preferred leader, to lead partition 1",
        WAIT,
        || match cluster.settled_leader(PARTITION)? {
            (0, view) if view.preferred_leader == 0 => Ok((0, view)),
            (leader, view) => Err(format!(
                "led by broker {leader}, preferred is {}",
                view.preferred_leader
            )),
        },
    );
    let peers = format!(
        "{},{}",
        cluster.brokers[1].internal_api(),
        cluster.brokers[2].internal_api()
    );
    let (status, body) = cluster
        .post(
            0,
            &format!("/actuator/faults?block={peers}"),
            REQUEST_TIMEOUT,
        )
        .expect("POST");
    assert_eq!(status, 200, "{body}");
    cluster.wait_until(
        "brokers 1 and 2 to elect another leader of partition 1",
        WAIT,
        || {
            for index in [1, 2] {
                let seen = cluster.partition_view(index, PARTITION)?;
                if seen.term <= view.term || seen.leader.is_none_or(|leader| leader == 0) {
                    return Err(format!("broker {index} sees {seen:?}"));
                }
            }
            Ok(())
        },
    );
    let (status, body) = cluster
        .post(0, "/actuator/faults?block=", REQUEST_TIMEOUT)
        .expect("POST");
    assert_eq!(status, 200, "{body}");
    let (moved, _) = cluster.wait_until(
        "broker 0 to follow the new leader of partition 1",
        WAIT,
        || cluster.settled_leader(PARTITION),
    );
    assert_ne!(moved, 0, "broker 0 cannot lead with a shorter log");
    cluster.note(&format!(
        "partition {PARTITION} is led by broker {moved}; a page on another site asks for a \
         rebalance"
    ));

    for index in cluster.cluster_brokers() {
        let addr = cluster.brokers[index].management();
        for path in ["/actuator/rebalance", "/actuator/rebalance?local=true"] {
            let reply = post(
                addr,
                path,
                None,
                &[("Origin", EVIL_ORIGIN), ("Content-Type", FORM)],
                "",
            );
            assert_eq!(reply.status, 403, "broker {index} {path}: {reply:?}");
        }
    }
    std::thread::sleep(NOTHING_CHANGED_WINDOW);
    let (still, _) = cluster
        .settled_leader(PARTITION)
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        still, moved,
        "a refused rebalance moved the leadership of partition {PARTITION}"
    );

    let (status, body) = cluster
        .post(moved, "/actuator/rebalance", REQUEST_TIMEOUT)
        .expect("POST /actuator/rebalance");
    assert_eq!(status, 200, "{body}");
    cluster.wait_until(
        "broker 0 to lead partition 1 again after the rebalance",
        WAIT,
        || match cluster.settled_leader(PARTITION)? {
            (0, _) => Ok(()),
            (other, _) => Err(format!("led by broker {other}")),
        },
    );
    cluster.note("the rebalance with the token moved the leader back to broker 0");
}

fn reads_stay_open(cluster: &Cluster) {
    for index in cluster.cluster_brokers() {
        let addr = cluster.brokers[index].management();
        for path in [
            "/health",
            "/ready",
            "/metrics",
            "/actuator/cluster",
            "/actuator/partitions",
            "/dashboard",
            "/",
        ] {
            // Even when a page on another site asks: reading changes nothing, and without a
            // CORS header that page cannot see the answer.
            let reply = http_request(
                addr,
                "GET",
                path,
                &[("Origin", EVIL_ORIGIN)],
                "",
                REQUEST_TIMEOUT,
            )
            .unwrap_or_else(|error| panic!("{error}"));
            assert_eq!(reply.status, 200, "broker {index} GET {path}: {reply:?}");
            assert!(
                reply.header("access-control-allow-origin").is_none(),
                "broker {index} GET {path} allows other origins: {reply:?}"
            );
        }
    }
}

/// A page opened in a real browser (headless Chromium from `$SLUICE_CHROMIUM` or `PATH`) that
/// fires a bodied `no-cors` fetch at broker 0's rebalance and posts a form to its `path`: both
/// arrive and are refused (the page becomes the form's answer, which says so). Returns how many
/// requests it sent (0 without Chromium: skipped with a note).
fn from_a_browser(cluster: &Cluster, path: &str) -> usize {
    let chromium = std::env::var_os("SLUICE_CHROMIUM")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            let path = std::env::var_os("PATH").unwrap_or_default();
            std::env::split_paths(&path)
                .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
                .find(|candidate| candidate.is_file())
        });
    let Some(chromium) = chromium else {
        cluster.note("no Chromium (see scripts/browser.sh): the browser check is skipped");
        return 0;
    };
    let base = format!("http://{}", cluster.brokers[0].management());
    let page = cluster.dir.join("attack.html");
    std::fs::write(
        &page,
        format!(
            "<!DOCTYPE html><html><body>\n\
             <form id=\"f\" method=\"POST\" action=\"{base}{path}\">\
             <input name=\"x\" value=\"1\"></form>\n\
             <script>\n\
             fetch('{base}/actuator/rebalance',\n\
               {{ method: 'POST', mode: 'no-cors', body: 'x', keepalive: true }});\n\
             document.getElementById('f').submit();\n\
             </script></body></html>\n"
        ),
    )
    .expect("writing the page");
    let log = cluster.dir.join("chromium.log");
    let dom_path = cluster.dir.join("attack-dom.html");
    let refused_before = cluster.metric(0, REFUSED).unwrap_or_else(|e| panic!("{e}"));
    let mut child = Command::new(&chromium)
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--virtual-time-budget=10000",
        ])
        .arg(format!(
            "--user-data-dir={}",
            cluster.dir.join("chromium-profile").display()
        ))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&dom_path).expect("creating the DOM file"))
        .stderr(std::fs::File::create(&log).expect("creating the browser log"))
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
                "chromium did not finish within {CHROMIUM_TIMEOUT:?}; its log: {}",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let dom = std::fs::read_to_string(&dom_path).unwrap_or_default();
    // The page became the answer to its form.
    assert!(
        status.success() && dom.contains("refused: the Origin header names another site"),
        "chromium ({status}) does not show the refusal of the form: {dom}; its log: {}",
        log.display()
    );
    // Both arrived and were refused for their Origin (`null`, a file's).
    cluster.wait_until(
        "broker 0 to count the page's requests refused",
        WAIT,
        || {
            let refused = cluster.metric(0, REFUSED)?;
            if refused - refused_before >= 2.0 {
                Ok(())
            } else {
                Err(format!("{REFUSED} went from {refused_before} to {refused}"))
            }
        },
    );
    cluster.note(&format!(
        "a page in {} posted a form and a fetch: refused",
        chromium.display()
    ));
    2
}

/// The same through `curl`, a client the operator would use; skipped (with a note) without it.
fn with_curl(cluster: &Cluster) {
    let installed = Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !installed {
        cluster.note("curl is not installed: the curl checks are skipped");
        return;
    }
    let url = format!(
        "http://{}/actuator/rebalance",
        cluster.brokers[1].management()
    );
    let bearer = format!("Authorization: Bearer {}", cluster.management_token);
    let wrong = format!("Authorization: Bearer {WRONG_TOKEN}");
    let origin = format!("Origin: {EVIL_ORIGIN}");
    let health = format!("http://{}/health", cluster.brokers[1].management());
    for (what, args, expected) in [
        ("no token", vec!["-X", "POST", url.as_str()], "401"),
        (
            "a wrong token",
            vec!["-X", "POST", "-H", wrong.as_str(), url.as_str()],
            "401",
        ),
        (
            "the token",
            vec!["-X", "POST", "-H", bearer.as_str(), url.as_str()],
            "200",
        ),
        // `curl -d` is what a form sends: refused even with the token.
        (
            "a form body",
            vec!["-d", "", "-H", bearer.as_str(), url.as_str()],
            "403",
        ),
        (
            "a form from another site",
            vec!["-d", "x=1", "-H", origin.as_str(), url.as_str()],
            "403",
        ),
        ("a read", vec![health.as_str()], "200"),
    ] {
        let output = Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "10",
            ])
            .args(&args)
            .output()
            .unwrap_or_else(|error| panic!("running curl: {error}"));
        let code = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            code,
            expected,
            "curl with {what}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    cluster.note("curl agrees");
}

/// Starts the cluster's broker 0 configuration on other ports and data with `env` added and
/// waits up to [`REFUSAL_TIMEOUT`] for it to exit: its status (`None` if it kept running; then
/// it is killed) and its output.
fn start_misconfigured(
    cluster: &Cluster,
    name: &str,
    env: &[(&str, &str)],
) -> (Option<ExitStatus>, String) {
    /// Kills and reaps the broker however the test ends.
    struct Guard(std::process::Child);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let log = cluster.dir.join(format!("misconfigured-{name}.log"));
    let out = std::fs::File::create(&log).expect("creating the log");
    let err = out.try_clone().expect("cloning the log handle");
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command
        .arg("broker")
        .arg("--config")
        .arg(&cluster.brokers[0].config)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ZEEBE_") {
            command.env_remove(key);
        }
    }
    command
        .envs(test_env())
        .env(
            "ZEEBE_BROKER_NETWORK_PORTOFFSET",
            MISCONFIGURED_PORT_OFFSET.to_string(),
        )
        .env(
            "ZEEBE_BROKER_DATA_DIRECTORY",
            cluster.dir.join(format!("misconfigured-{name}")),
        )
        .envs(env.iter().copied());
    let mut broker = Guard(command.spawn().expect("starting a broker"));
    let deadline = Instant::now() + REFUSAL_TIMEOUT;
    let status = loop {
        if let Some(status) = broker.0.try_wait().expect("waiting for the broker") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(broker);
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    cluster.note(&format!(
        "misconfigured broker ({name}): {status:?}; output: {}",
        output.trim()
    ));
    (status, output)
}
