//! `sluicectl`: its argument parsing and output rendering (`sluice_tools::ctl`, no server), and
//! one end-to-end run of the built binary against `sluice dev`'s gRPC gateway: topology,
//! deploy, create, activate and complete, a `--with-result` creation answered by a worker on
//! another thread, publish, cancel, fail with no retries left, throw-error, set-variables, and
//! the error lines and exit statuses of refused requests and bad arguments.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command as Process, Output as ProcessOutput};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_broker::gateway::proto::gateway_protocol as pb;
use sluice_tools::ctl::{
    self, ArgError, Command, GATEWAY_DEFAULT, Invocation, JOB_TIMEOUT_MS_DEFAULT,
    MESSAGE_TTL_MS_DEFAULT, USAGE,
};

// ---------------------------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------------------------

fn parse_with_env(args: &[&str], gateway_env: Option<&str>) -> Result<Invocation, ArgError> {
    ctl::parse(args.iter().map(|arg| (*arg).to_owned()), gateway_env)
}

fn parse(args: &[&str]) -> Invocation {
    parse_with_env(args, None).unwrap_or_else(|error| panic!("{args:?}: {error}"))
}

fn parse_error(args: &[&str]) -> ArgError {
    match parse_with_env(args, None) {
        Ok(invocation) => panic!("{args:?} parsed as {invocation:?}"),
        Err(error) => error,
    }
}

#[test]
fn global_options_have_defaults_and_may_follow_the_command() {
    let invocation = parse(&["topology"]);
    assert_eq!(invocation.gateway, GATEWAY_DEFAULT);
    assert_eq!(invocation.gateway_url(), "http://localhost:26500");
    assert!(!invocation.json);
    assert_eq!(invocation.timeout, Duration::from_secs(10));
    assert_eq!(invocation.command, Command::Topology);

    let invocation = parse(&[
        "topology",
        "--json",
        "--gateway",
        "10.0.0.1:26600",
        "--timeout=3",
    ]);
    assert_eq!(invocation.gateway, "10.0.0.1:26600");
    assert!(invocation.json);
    assert_eq!(invocation.timeout, Duration::from_secs(3));

    let url = parse(&["--gateway=http://h:1", "topology"]).gateway_url();
    assert_eq!(url, "http://h:1");
}

#[test]
fn the_environment_names_the_gateway_unless_the_flag_does() {
    let from_env = parse_with_env(&["topology"], Some("broker-2:26500")).expect("parses");
    assert_eq!(from_env.gateway, "broker-2:26500");
    let empty_env = parse_with_env(&["topology"], Some("  ")).expect("parses");
    assert_eq!(empty_env.gateway, GATEWAY_DEFAULT);
    let flag = parse_with_env(&["--gateway", "a:1", "topology"], Some("b:2")).expect("parses");
    assert_eq!(flag.gateway, "a:1");
    let bad_env = parse_with_env(&["topology"], Some("no-port")).expect_err("rejected");
    assert!(bad_env.message.contains("SLUICE_GATEWAY"), "{bad_env}");
    for bad in ["no-port", ":26500", "h:0", "h:99999", "https://h:1"] {
        let error = parse_error(&["--gateway", bad, "topology"]);
        assert!(error.message.starts_with("--gateway"), "{bad}: {error}");
    }
}

#[test]
fn help_and_missing_or_unknown_commands() {
    assert_eq!(parse(&["--help"]).command, Command::Help);
    assert_eq!(parse(&["help"]).command, Command::Help);
    assert_eq!(parse(&["create", "-h"]).command, Command::Help);
    let missing = parse_error(&[]);
    assert_eq!(missing.command, None);
    assert_eq!(missing.usage(), USAGE);
    assert!(
        parse_error(&["deploi"])
            .message
            .contains("unknown command \"deploi\"")
    );
    assert!(
        parse_error(&["--verbose", "topology"])
            .message
            .contains("unknown option")
    );
    assert!(
        parse_error(&["topology", "extra"])
            .message
            .contains("extra")
    );
    assert!(
        parse_error(&["--timeout", "0", "topology"])
            .message
            .contains("--timeout")
    );
    assert!(
        parse_error(&["--timeout"])
            .message
            .contains("needs a value")
    );
}

#[test]
fn deploy_takes_files() {
    assert_eq!(
        parse(&["deploy", "a.bpmn", "dir/b.bpmn"]).command,
        Command::Deploy {
            files: vec![PathBuf::from("a.bpmn"), PathBuf::from("dir/b.bpmn")]
        }
    );
    let error = parse_error(&["deploy"]);
    assert_eq!(error.command, Some("deploy"));
    assert!(error.message.contains("FILE"), "{error}");
}

#[test]
fn create_parses_version_variables_and_result_options() {
    assert_eq!(
        parse(&["create", "order"]).command,
        Command::Create {
            bpmn_process_id: "order".to_owned(),
            version: -1,
            variables: String::new(),
            with_result: false,
            fetch_variables: Vec::new(),
        }
    );
    assert_eq!(
        parse(&[
            "create",
            "order",
            "--version",
            "2",
            "--variables",
            r#"{"total": 7}"#,
            "--with-result",
            "--fetch",
            "total, status,",
        ])
        .command,
        Command::Create {
            bpmn_process_id: "order".to_owned(),
            version: 2,
            variables: r#"{"total": 7}"#.to_owned(),
            with_result: true,
            fetch_variables: vec!["total".to_owned(), "status".to_owned()],
        }
    );
    let error = parse_error(&["create", "order", "--fetch", "a"]);
    assert!(error.message.contains("--with-result"), "{error}");
    assert!(parse_error(&["create"]).message.contains("BPMN_PROCESS_ID"));
    assert!(
        parse_error(&["create", "order", "--version", "0"])
            .message
            .contains("--version")
    );
    assert!(
        parse_error(&["create", "order", "--with-result=yes"])
            .message
            .contains("no value")
    );
    let twice = parse_error(&["create", "order", "--version", "1", "--version", "2"]);
    assert!(twice.message.contains("twice"), "{twice}");
    let unknown = parse_error(&["create", "order", "--retries", "1"]);
    assert!(unknown.message.contains("\"--retries\""), "{unknown}");
}

#[test]
fn json_arguments_are_checked_before_sending() {
    let not_json = parse_error(&["create", "order", "--variables", "{total: 7}"]);
    assert_eq!(not_json.command, Some("create"));
    assert!(
        not_json
            .message
            .starts_with("--variables is not valid JSON"),
        "{not_json}"
    );
    let array = parse_error(&["complete", "1", "--variables", "[1, 2]"]);
    assert!(
        array.message.contains("must be a JSON object") && array.message.contains("array"),
        "{array}"
    );
    let scalar = parse_error(&["set-variables", "5", "3"]);
    assert!(
        scalar.message.starts_with("JSON must be a JSON object"),
        "{scalar}"
    );
    for (command, args) in [
        (
            "publish",
            &["publish", "m", "--correlation-key", "k", "--variables", "x"][..],
        ),
        (
            "fail",
            &["fail", "1", "--retries", "0", "--variables", "x"][..],
        ),
        (
            "throw-error",
            &["throw-error", "1", "E", "--variables", "x"][..],
        ),
    ] {
        let error = parse_error(args);
        assert_eq!(error.command, Some(command));
        assert!(error.message.contains("--variables"), "{error}");
    }
    // The usage printed with the error is the command's own.
    let usage = not_json.usage();
    assert!(
        usage.starts_with("usage: sluicectl [options] create BPMN_PROCESS_ID"),
        "{usage}"
    );
    assert!(!usage.contains("publish NAME"), "{usage}");
}

#[test]
fn publish_needs_a_correlation_key() {
    assert_eq!(
        parse(&["publish", "paid", "--correlation-key", "order-1"]).command,
        Command::Publish {
            name: "paid".to_owned(),
            correlation_key: "order-1".to_owned(),
            variables: String::new(),
            time_to_live_ms: MESSAGE_TTL_MS_DEFAULT,
            message_id: String::new(),
        }
    );
    assert_eq!(
        parse(&[
            "publish",
            "paid",
            "--correlation-key",
            "order-1",
            "--ttl",
            "0",
            "--message-id",
            "m-1",
            "--variables",
            "{}",
        ])
        .command,
        Command::Publish {
            name: "paid".to_owned(),
            correlation_key: "order-1".to_owned(),
            variables: "{}".to_owned(),
            time_to_live_ms: 0,
            message_id: "m-1".to_owned(),
        }
    );
    let error = parse_error(&["publish", "paid"]);
    assert!(error.message.contains("--correlation-key"), "{error}");
    assert!(
        parse_error(&["publish", "paid", "--correlation-key", "k", "--ttl", "-1"])
            .message
            .contains("--ttl")
    );
}

#[test]
fn activate_owns_timeout_after_the_command() {
    let invocation = parse(&["--timeout", "3", "activate", "work"]);
    assert_eq!(invocation.timeout, Duration::from_secs(3));
    assert_eq!(
        invocation.command,
        Command::Activate {
            job_type: "work".to_owned(),
            max_jobs_to_activate: 1,
            job_timeout_ms: JOB_TIMEOUT_MS_DEFAULT,
            worker: "sluicectl".to_owned(),
            request_timeout_ms: 0,
        }
    );
    // Long poll 0 means the gateway's 10 s, on top of the answer timeout.
    assert_eq!(
        invocation.command.call_deadline(invocation.timeout),
        Duration::from_secs(13)
    );
    let invocation = parse(&[
        "activate",
        "work",
        "--timeout",
        "5000",
        "--max",
        "32",
        "--worker",
        "w1",
        "--request-timeout",
        "-1",
        "--json",
    ]);
    assert!(invocation.json);
    assert_eq!(invocation.timeout, Duration::from_secs(10));
    assert_eq!(
        invocation.command,
        Command::Activate {
            job_type: "work".to_owned(),
            max_jobs_to_activate: 32,
            job_timeout_ms: 5000,
            worker: "w1".to_owned(),
            request_timeout_ms: -1,
        }
    );
    assert_eq!(
        invocation.command.call_deadline(invocation.timeout),
        Duration::from_secs(10)
    );
    assert!(
        parse_error(&["activate", "work", "--max", "0"])
            .message
            .contains("--max")
    );
    assert!(
        parse_error(&["activate", "work", "--max", "10001"])
            .message
            .contains("10000")
    );
    assert!(parse_error(&["activate"]).message.contains("TYPE"));
}

#[test]
fn job_and_instance_commands_take_keys() {
    assert_eq!(
        parse(&[
            "complete",
            "2251799813685257",
            "--variables",
            r#"{"ok":true}"#
        ])
        .command,
        Command::Complete {
            job_key: 2_251_799_813_685_257,
            variables: r#"{"ok":true}"#.to_owned(),
        }
    );
    assert_eq!(
        parse(&[
            "fail",
            "7",
            "--retries",
            "0",
            "--message",
            "boom",
            "--backoff",
            "500"
        ])
        .command,
        Command::Fail {
            job_key: 7,
            retries: 0,
            error_message: "boom".to_owned(),
            retry_backoff_ms: 500,
            variables: String::new(),
        }
    );
    assert_eq!(
        parse(&["throw-error", "7", "NO_STOCK", "--message", "none left"]).command,
        Command::ThrowError {
            job_key: 7,
            error_code: "NO_STOCK".to_owned(),
            error_message: "none left".to_owned(),
            variables: String::new(),
        }
    );
    assert_eq!(
        parse(&["retries", "7", "3"]).command,
        Command::Retries {
            job_key: 7,
            retries: 3
        }
    );
    assert_eq!(
        parse(&["resolve", "9"]).command,
        Command::Resolve { incident_key: 9 }
    );
    assert_eq!(
        parse(&["cancel", "11"]).command,
        Command::Cancel {
            process_instance_key: 11
        }
    );
    assert_eq!(
        parse(&["set-variables", "12", r#"{"a":1}"#, "--local"]).command,
        Command::SetVariables {
            element_instance_key: 12,
            variables: r#"{"a":1}"#.to_owned(),
            local: true,
        }
    );
    let missing_retries = parse_error(&["fail", "7"]);
    assert!(
        missing_retries.message.contains("--retries"),
        "{missing_retries}"
    );
    assert!(
        parse_error(&["fail", "7", "--retries", "-1"])
            .message
            .contains("--retries")
    );
    for bad in ["0", "abc", "-5", "99999999999999999999"] {
        let error = parse_error(&["cancel", "--", bad]);
        assert!(
            error.message.starts_with("PROCESS_INSTANCE_KEY"),
            "{bad}: {error}"
        );
    }
    assert!(
        parse_error(&["complete", "-5"])
            .message
            .contains("unknown option")
    );
    assert!(parse_error(&["retries", "7"]).message.contains("JOB_KEY N"));
    assert!(
        parse_error(&["retries", "7", "0"])
            .message
            .starts_with("N must be")
    );
    assert!(
        parse_error(&["throw-error", "7", ""])
            .message
            .contains("CODE")
    );
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

fn partition(partition_id: i32, role: i32, health: i32) -> pb::Partition {
    pb::Partition {
        partition_id,
        role,
        health,
    }
}

#[test]
fn topology_renders_a_table_and_gateway_field_names() {
    let response = pb::TopologyResponse {
        brokers: vec![
            pb::BrokerInfo {
                node_id: 1,
                host: "127.0.0.1".to_owned(),
                port: 26510,
                partitions: vec![partition(1, 1, 0), partition(2, 0, 1)],
                version: "0.1.0".to_owned(),
            },
            pb::BrokerInfo {
                node_id: 0,
                host: "127.0.0.1".to_owned(),
                port: 26500,
                partitions: vec![partition(1, 0, 0)],
                version: "0.1.0".to_owned(),
            },
        ],
        cluster_size: 2,
        partitions_count: 2,
        replication_factor: 2,
        gateway_version: "sluice 0.1.0".to_owned(),
    };
    let output = ctl::topology_output(&response);
    assert_eq!(
        output.text,
        "cluster size 2, 2 partitions, replication factor 2, gateway sluice 0.1.0\n\
         BROKER  ADDRESS          VERSION  P1        P2\n\
         0       127.0.0.1:26500  0.1.0    leader    -\n\
         1       127.0.0.1:26510  0.1.0    follower  leader(unhealthy)"
    );
    assert_eq!(output.json["clusterSize"], 2);
    assert_eq!(output.json["gatewayVersion"], "sluice 0.1.0");
    assert_eq!(output.json["brokers"][0]["nodeId"], 0);
    assert_eq!(
        output.json["brokers"][1]["partitions"][1],
        json!({"partitionId": 2, "role": "LEADER", "health": "UNHEALTHY"})
    );
}

#[test]
fn deploy_create_and_publish_render_one_line_each() {
    let deployed = ctl::deploy_output(&pb::DeployResourceResponse {
        key: 2_251_799_813_685_249,
        deployments: vec![pb::Deployment {
            metadata: Some(pb::deployment::Metadata::Process(pb::ProcessMetadata {
                bpmn_process_id: "order".to_owned(),
                version: 2,
                process_definition_key: 2_251_799_813_685_250,
                resource_name: "order.bpmn".to_owned(),
                tenant_id: "<default>".to_owned(),
            })),
        }],
        tenant_id: "<default>".to_owned(),
    });
    assert_eq!(deployed.text, "deployed order v2 (key 2251799813685250)");
    assert_eq!(deployed.json["key"], 2_251_799_813_685_249_i64);
    assert_eq!(
        deployed.json["deployments"][0]["process"]["resourceName"],
        "order.bpmn"
    );

    let created = ctl::create_output(&pb::CreateProcessInstanceResponse {
        process_definition_key: 2_251_799_813_685_250,
        bpmn_process_id: "order".to_owned(),
        version: 1,
        process_instance_key: 2_251_799_813_685_252,
        tenant_id: "<default>".to_owned(),
    });
    assert_eq!(
        created.text,
        "created instance 2251799813685252 of order v1"
    );
    assert_eq!(
        created.json["processInstanceKey"],
        2_251_799_813_685_252_i64
    );

    let result = ctl::create_with_result_output(&pb::CreateProcessInstanceWithResultResponse {
        process_instance_key: 5,
        bpmn_process_id: "order".to_owned(),
        version: 1,
        variables: r#"{"total":42}"#.to_owned(),
        ..Default::default()
    });
    assert_eq!(result.json["variables"], json!({"total": 42}));
    assert!(
        result.text.ends_with(r#"variables: {"total":42}"#),
        "{}",
        result.text
    );

    let published = ctl::publish_output(
        "paid",
        &pb::PublishMessageResponse {
            key: 9,
            tenant_id: String::new(),
        },
    );
    assert_eq!(published.text, "published message paid (key 9)");
    assert_eq!(published.json, json!({"key": 9, "tenantId": ""}));
    assert_eq!(
        ctl::empty_output("completed job 1".to_owned()).json,
        json!({})
    );
}

#[test]
fn activated_jobs_render_as_a_table_with_embedded_json() {
    let job = pb::ActivatedJob {
        key: 2_251_799_813_685_257,
        r#type: "work".to_owned(),
        process_instance_key: 2_251_799_813_685_252,
        bpmn_process_id: "one_task".to_owned(),
        element_id: "task".to_owned(),
        custom_headers: r#"{"priority":"high"}"#.to_owned(),
        retries: 3,
        variables: r#"{"a":1}"#.to_owned(),
        ..Default::default()
    };
    let output = ctl::activate_output("work", &[job]);
    assert_eq!(
        output.text,
        "KEY               TYPE  RETRIES  INSTANCE          ELEMENT        VARIABLES\n\
         2251799813685257  work  3        2251799813685252  one_task/task  {\"a\":1}"
    );
    assert_eq!(output.json["jobs"][0]["variables"], json!({"a": 1}));
    assert_eq!(output.json["jobs"][0]["customHeaders"]["priority"], "high");
    assert_eq!(output.json["jobs"][0]["elementId"], "task");
    let none = ctl::activate_output("work", &[]);
    assert_eq!(none.text, "no work jobs activated");
    assert_eq!(none.json, json!({"jobs": []}));
    assert_eq!(ctl::embedded_json(""), json!({}));
    assert_eq!(ctl::embedded_json("not json"), json!("not json"));
    assert_eq!(ctl::code_name(tonic::Code::NotFound), "NOT_FOUND");
    assert_eq!(
        ctl::code_name(tonic::Code::DeadlineExceeded),
        "DEADLINE_EXCEEDED"
    );
}

// ---------------------------------------------------------------------------------------------
// End to end
// ---------------------------------------------------------------------------------------------

/// Ports of broker i: the defaults + 10 * (`PORT_OFFSET` + i), away from other tests and from a
/// developer's `sluice dev`.
const PORT_OFFSET: u16 = 320;
/// How long the gateway may take to list a leader for every partition once the brokers are
/// ready.
const GATEWAY_DEADLINE: Duration = Duration::from_secs(30);

/// Runs `sluicectl --gateway <broker 0's gateway> args...`.
fn sluicectl(gateway: &str, args: &[&str]) -> ProcessOutput {
    Process::new(env!("CARGO_BIN_EXE_sluicectl"))
        .args(["--gateway", gateway])
        .args(args)
        .env_remove("SLUICE_GATEWAY")
        .output()
        .expect("running sluicectl")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("utf-8 output")
}

/// Runs `sluicectl --json args...`, expecting success and one JSON object.
fn json_of(gateway: &str, args: &[&str]) -> Value {
    let output = sluicectl(gateway, &[&["--json"], args].concat());
    assert!(
        output.status.success(),
        "sluicectl {args:?}: {}\n{}",
        output.status,
        text(&output.stderr)
    );
    let stdout = text(&output.stdout);
    assert_eq!(stdout.lines().count(), 1, "one line of JSON: {stdout}");
    let value: Value = serde_json::from_str(&stdout).expect("a JSON object");
    assert!(value.is_object(), "{value}");
    value
}

/// Runs `sluicectl args...`, expecting exit status `code` and one `sluicectl: ...` line on
/// stderr starting with `prefix`.
fn fails_with(gateway: &str, args: &[&str], code: i32, prefix: &str) {
    let output = sluicectl(gateway, args);
    let stderr = text(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(code),
        "sluicectl {args:?}: {stderr}"
    );
    assert!(output.stdout.is_empty(), "{}", text(&output.stdout));
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(prefix),
        "sluicectl {args:?}: expected {prefix:?}, got {stderr}"
    );
    if code == 1 {
        assert_eq!(stderr.lines().count(), 1, "one error line: {stderr}");
    }
}

fn key(value: &Value, field: &str) -> i64 {
    let key = value[field]
        .as_i64()
        .unwrap_or_else(|| panic!("no integer {field} in {value}"));
    assert!(key > 0, "{field} = {key}");
    key
}

/// Activates one `work` job, long-polling (the instance's job may not exist yet).
fn activate_one(gateway: &str) -> Value {
    let activated = json_of(
        gateway,
        &[
            "activate",
            "work",
            "--max",
            "1",
            "--request-timeout",
            "15000",
        ],
    );
    let jobs = activated["jobs"].as_array().expect("a jobs array");
    assert_eq!(jobs.len(), 1, "one job: {activated}");
    jobs[0].clone()
}

/// Waits until the gateway answers Topology with 3 brokers and a leader for each of the 3
/// partitions; returns that answer.
fn settled_topology(gateway: &str, dir: &Path) -> Value {
    let deadline = Instant::now() + GATEWAY_DEADLINE;
    loop {
        let output = sluicectl(gateway, &["--json", "--timeout", "2", "topology"]);
        let last = if output.status.success() {
            let topology: Value = serde_json::from_slice(&output.stdout).expect("topology is JSON");
            let leaders = (1..=3)
                .map(|partition_id| {
                    topology["brokers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .flat_map(|broker| broker["partitions"].as_array().into_iter().flatten())
                        .filter(|partition| {
                            partition["partitionId"] == partition_id
                                && partition["role"] == "LEADER"
                        })
                        .count()
                })
                .collect::<Vec<_>>();
            if leaders == [1, 1, 1] {
                return topology;
            }
            format!("leaders per partition {leaders:?}: {topology}")
        } else {
            text(&output.stderr)
        };
        assert!(
            Instant::now() < deadline,
            "the gRPC gateway at {gateway} did not list a leader for every partition within \
             {GATEWAY_DEADLINE:?} (is it serving?); last answer: {last}; logs in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
#[expect(clippy::too_many_lines, reason = "one scenario, step by step")]
fn sluicectl_drives_a_dev_cluster() {
    let dev = common::start_dev(
        &common::sluice_exe(env!("CARGO_BIN_EXE_sluicectl")),
        PORT_OFFSET,
        "sluicectl",
    );
    let dir = dev.dir.clone();
    let gateway = dev.gateway.clone();
    let gateway = gateway.as_str();

    // Topology: 3 brokers, 3 partitions, one leader each.
    let topology = settled_topology(gateway, &dir);
    assert_eq!(
        topology["brokers"].as_array().map(Vec::len),
        Some(3),
        "{topology}"
    );
    assert_eq!(topology["clusterSize"], 3);
    assert_eq!(topology["partitionsCount"], 3);
    assert_eq!(topology["replicationFactor"], 3);
    let table = sluicectl(gateway, &["topology"]);
    assert!(table.status.success());
    let table = text(&table.stdout);
    assert!(
        table.contains("BROKER") && table.contains("leader"),
        "{table}"
    );

    // Deploy, by file name.
    let bpmn = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../engine/testdata/bpmn/one_task.bpmn"
    );
    let deployed = json_of(gateway, &["deploy", bpmn]);
    key(&deployed, "key");
    let process = &deployed["deployments"][0]["process"];
    assert_eq!(process["bpmnProcessId"], "one_task", "{deployed}");
    assert_eq!(process["resourceName"], "one_task.bpmn", "{deployed}");
    assert_eq!(process["version"], 1, "{deployed}");
    let definition_key = key(process, "processDefinitionKey");

    // Create, activate, complete.
    let created = json_of(
        gateway,
        &["create", "one_task", "--variables", r#"{"n":1}"#],
    );
    let instance_key = key(&created, "processInstanceKey");
    assert_eq!(created["bpmnProcessId"], "one_task");
    assert_eq!(created["processDefinitionKey"], definition_key);
    let job = activate_one(gateway);
    assert_eq!(job["processInstanceKey"], instance_key, "{job}");
    assert_eq!(job["type"], "work");
    assert_eq!(job["elementId"], "task");
    assert_eq!(job["retries"], 3);
    assert_eq!(job["worker"], "sluicectl");
    assert_eq!(job["variables"], json!({"n": 1}));
    let job_key = key(&job, "key").to_string();
    assert_eq!(json_of(gateway, &["complete", &job_key]), json!({}));
    fails_with(
        gateway,
        &["complete", &job_key],
        1,
        "sluicectl: NOT_FOUND: ",
    );

    // The readable line of a creation; its job is completed right away.
    let line = sluicectl(gateway, &["create", "one_task"]);
    let line = text(&line.stdout);
    assert!(
        line.starts_with("created instance ") && line.trim_end().ends_with(" of one_task v1"),
        "{line}"
    );
    let job = activate_one(gateway);
    json_of(gateway, &["complete", &key(&job, "key").to_string()]);

    // With result: the creation waits on another thread while this one works the job.
    let with_result = {
        let gateway = gateway.to_owned();
        std::thread::spawn(move || {
            json_of(
                &gateway,
                &[
                    "--timeout",
                    "30",
                    "create",
                    "one_task",
                    "--with-result",
                    "--variables",
                    r#"{"order":7}"#,
                ],
            )
        })
    };
    let job = activate_one(gateway);
    assert_eq!(job["variables"], json!({"order": 7}), "{job}");
    let completed = json_of(
        gateway,
        &[
            "complete",
            &key(&job, "key").to_string(),
            "--variables",
            r#"{"total":42}"#,
        ],
    );
    assert_eq!(completed, json!({}));
    let result = with_result.join().expect("the with-result thread");
    assert_eq!(
        result["processInstanceKey"], job["processInstanceKey"],
        "{result}"
    );
    assert_eq!(
        result["variables"],
        json!({"order": 7, "total": 42}),
        "{result}"
    );

    // Publish; a duplicate message id is refused.
    let published = json_of(
        gateway,
        &[
            "publish",
            "ping",
            "--correlation-key",
            "c-1",
            "--message-id",
            "m-1",
        ],
    );
    key(&published, "key");
    fails_with(
        gateway,
        &[
            "publish",
            "ping",
            "--correlation-key",
            "c-1",
            "--message-id",
            "m-1",
        ],
        1,
        "sluicectl: ALREADY_EXISTS: ",
    );

    // Cancel; a second cancel finds nothing.
    let canceled = key(
        &json_of(gateway, &["create", "one_task"]),
        "processInstanceKey",
    );
    assert_eq!(
        json_of(gateway, &["cancel", &canceled.to_string()]),
        json!({})
    );
    fails_with(
        gateway,
        &["cancel", &canceled.to_string()],
        1,
        "sluicectl: NOT_FOUND: ",
    );

    // Fail with no retries left: the job raises an incident and is not activated again.
    let failing = key(
        &json_of(gateway, &["create", "one_task"]),
        "processInstanceKey",
    );
    let job = activate_one(gateway);
    assert_eq!(job["processInstanceKey"], failing, "{job}");
    let failed_key = key(&job, "key").to_string();
    let scope = key(&job, "elementInstanceKey").to_string();
    let set = json_of(
        gateway,
        &["set-variables", &scope, r#"{"note":"x"}"#, "--local"],
    );
    key(&set, "key");
    let failed = json_of(
        gateway,
        &["fail", &failed_key, "--retries", "0", "--message", "boom"],
    );
    assert_eq!(failed, json!({}));
    let none = json_of(gateway, &["activate", "work", "--request-timeout", "-1"]);
    assert_eq!(none, json!({"jobs": []}));
    fails_with(
        gateway,
        &["fail", &failed_key, "--retries", "0"],
        1,
        "sluicectl: FAILED_PRECONDITION: ",
    );

    // An error thrown by a job.
    json_of(gateway, &["create", "one_task"]);
    let job = activate_one(gateway);
    let thrown = json_of(
        gateway,
        &[
            "throw-error",
            &key(&job, "key").to_string(),
            "NO_STOCK",
            "--message",
            "none",
        ],
    );
    assert_eq!(thrown, json!({}));

    // Refusals and bad arguments.
    let missing = sluicectl(gateway, &["create", "missing"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        text(&missing.stderr),
        "sluicectl: NOT_FOUND: Expected to find process definition with process ID 'missing', \
         but none found\n"
    );
    fails_with(
        gateway,
        &["create", "one_task", "--variables", "[1]"],
        2,
        "sluicectl: --variables must be a JSON object",
    );
    fails_with(gateway, &["bogus"], 2, "sluicectl: unknown command");
    fails_with(
        "127.0.0.1:1",
        &["topology"],
        1,
        "sluicectl: UNAVAILABLE: cannot reach the gateway at 127.0.0.1:1",
    );

    drop(dev);
    let _ = std::fs::remove_dir_all(&dir);
}
