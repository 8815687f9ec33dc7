//! Golden tests of the processors: each file under `testdata/golden/` is a script of commands,
//! each followed by the exact records and side effects it produced.
//!
//! ```text
//! # comment
//! partitions 2                      (optional, first line: engines for partitions 1..=2)
//! > deploy one_task.bpmn            (a command; `@2 create ...` sends it to partition 2)
//! C DEPLOYMENT CREATE -1 {...}      (expected output: records, then side effects)
//! E PROCESS CREATED K1.2 {...}
//! -> respond E DEPLOYMENT CREATED K1.1
//! ```
//!
//! Commands sent between partitions are delivered at once, after each command, until none is
//! left; their records follow, prefixed by `@N`. Keys print as `K<partition>.<counter>` and can
//! be written the same way in commands. `UPDATE_GOLDEN=1 cargo test --test golden` rewrites the
//! expected output (review the diff!).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sluice_engine::record::{
    DeploymentResource, DeploymentValue, JobBatchValue, JobValue, MessageValue,
    ProcessInstanceCreationValue, ProcessInstanceValue, VariableDocumentValue, encode_key,
    key_counter, key_partition,
};
use sluice_engine::{
    Engine, EngineConfig, Intent, Key, Output, Record, RecordType, RecordValue, SideEffect,
};

const START_MS: i64 = 1_000_000;

struct Cluster {
    engines: Vec<Engine>,
    now_ms: i64,
    next_request: u64,
    /// Activated jobs, for `complete first`.
    bpmn_dir: PathBuf,
}

fn render_key(key: Key) -> String {
    if key > 0 && key_partition(key) > 0 {
        format!("K{}.{}", key_partition(key), key_counter(key))
    } else {
        key.to_string()
    }
}

/// Replaces every integer that is a partition key with its `K` form.
fn render_keys(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut digits = String::new();
    let flush = |digits: &mut String, out: &mut String| {
        if !digits.is_empty() {
            match digits.parse::<i64>() {
                Ok(n) if n >= (1 << 51) => out.push_str(&render_key(n)),
                _ => out.push_str(digits),
            }
            digits.clear();
        }
    };
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            flush(&mut digits, &mut out);
            out.push(c);
        }
    }
    flush(&mut digits, &mut out);
    out
}

fn parse_key(text: &str) -> Key {
    if let Some(rest) = text.strip_prefix('K') {
        let (partition, counter) = rest.split_once('.').expect("K<partition>.<counter>");
        // An unparsable counter (a placeholder while writing a script) names no entity.
        encode_key(
            partition.parse().expect("partition number"),
            counter.parse().unwrap_or(0),
        )
    } else {
        text.parse().expect("a key")
    }
}

fn render_record(record: &Record) -> String {
    let kind = match record.record_type {
        RecordType::Command => "C",
        RecordType::Event => "E",
        RecordType::CommandRejection => "R",
    };
    let value_type = serde_json::to_value(record.value_type).expect("serializes");
    let intent = serde_json::to_value(record.intent).expect("serializes");
    let mut line = format!(
        "{kind} {} {} {}",
        value_type.as_str().unwrap_or_default(),
        intent.as_str().unwrap_or_default(),
        render_key(record.key)
    );
    if let Some(rejection) = &record.rejection {
        let rejection_type = serde_json::to_value(rejection.rejection_type).expect("serializes");
        let _ = write!(
            line,
            " !{} \"{}\"",
            rejection_type.as_str().unwrap_or_default(),
            rejection.reason.replace('\n', "\\n")
        );
    }
    let value = serde_json::to_string(&record.value).expect("serializes");
    let _ = write!(line, " {value}");
    render_keys(&line)
}

/// Kind, value type, intent and key (and the rejection type) without the value.
fn render_short(record: &Record) -> String {
    let full = render_record(record);
    let cut = full
        .find(" !")
        .map(|at| {
            at + full[at..]
                .find(' ')
                .map_or(0, |_| full[at + 1..].find(' ').unwrap_or(0) + 1)
        })
        .or_else(|| full.find(" {"))
        .unwrap_or(full.len());
    full[..cut].to_owned()
}

/// Splits `a b {"json": "with spaces"}` into words, keeping a trailing JSON object whole.
fn words(line: &str) -> (Vec<String>, Option<String>) {
    match line.find('{') {
        Some(at) => (
            line[..at].split_whitespace().map(str::to_owned).collect(),
            Some(line[at..].trim().to_owned()),
        ),
        None => (line.split_whitespace().map(str::to_owned).collect(), None),
    }
}

fn option<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter().find_map(|arg| {
        arg.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('='))
    })
}

impl Cluster {
    fn new(partitions: u32, bpmn_dir: PathBuf) -> Self {
        let engines = (1..=partitions)
            .map(|id| {
                let mut config = EngineConfig::new(id, partitions);
                config.resend_interval_ms = 10_000;
                Engine::new(config)
            })
            .collect();
        Self {
            engines,
            now_ms: START_MS,
            next_request: 1,
            bpmn_dir,
        }
    }

    #[expect(clippy::too_many_lines, reason = "one arm per script command")]
    fn command(&self, line: &str) -> (u32, Record) {
        let (line, partition) = match line.strip_prefix('@') {
            Some(rest) => {
                let (partition, rest) = rest.split_once(' ').expect("@N command");
                (rest, partition.parse().expect("partition number"))
            }
            None => (line, 1),
        };
        let (args, json) = words(line);
        let json = json.unwrap_or_default();
        let name = args.first().map(String::as_str).unwrap_or_default();
        let record = match name {
            "deploy" => {
                let resources = args[1..]
                    .iter()
                    .map(|file| DeploymentResource {
                        resource_name: file.clone(),
                        resource: std::fs::read_to_string(self.bpmn_dir.join(file))
                            .unwrap_or_else(|_| format!("<not found: {file}>"))
                            .into(),
                    })
                    .collect();
                Record::command(
                    Intent::Create,
                    RecordValue::Deployment(DeploymentValue {
                        resources,
                        processes_metadata: Vec::new(),
                    }),
                )
            }
            "create" | "create-with-result" => Record::command(
                if name == "create" {
                    Intent::Create
                } else {
                    Intent::CreateWithAwaitingResult
                },
                RecordValue::ProcessInstanceCreation(ProcessInstanceCreationValue {
                    bpmn_process_id: args[1].clone(),
                    version: option(&args, "version").map_or(-1, |v| v.parse().expect("number")),
                    process_definition_key: -1,
                    process_instance_key: -1,
                    variables: json.into(),
                    fetch_variables: Vec::new(),
                }),
            ),
            "cancel" => Record::command_for(
                parse_key(&args[1]),
                Intent::Cancel,
                RecordValue::ProcessInstance(ProcessInstanceValue::default()),
            ),
            "activate" => Record::command(
                Intent::Activate,
                RecordValue::JobBatch(JobBatchValue {
                    job_type: args[1].clone(),
                    worker: option(&args, "worker").unwrap_or("worker").to_owned(),
                    timeout: option(&args, "timeout").map_or(60_000, |v| v.parse().expect("ms")),
                    max_jobs_to_activate: option(&args, "max")
                        .map_or(10, |v| v.parse().expect("number")),
                    ..JobBatchValue::default()
                }),
            ),
            "complete" | "fail" | "throw" | "retries" | "timeout" => {
                let key = parse_key(&args[1]);
                let (intent, value) = match name {
                    "complete" => (
                        Intent::Complete,
                        JobValue {
                            variables: json.into(),
                            ..JobValue::default()
                        },
                    ),
                    "fail" => (
                        Intent::Fail,
                        JobValue {
                            retries: option(&args, "retries").map_or(0, |v| v.parse().expect("n")),
                            retry_backoff: option(&args, "backoff")
                                .map_or(0, |v| v.parse().expect("ms")),
                            error_message: option(&args, "message").unwrap_or("").to_owned(),
                            ..JobValue::default()
                        },
                    ),
                    "throw" => (
                        Intent::ThrowError,
                        JobValue {
                            error_code: args[2].clone(),
                            error_message: option(&args, "message").unwrap_or("").to_owned(),
                            ..JobValue::default()
                        },
                    ),
                    "retries" => (
                        Intent::UpdateRetries,
                        JobValue {
                            retries: args[2].parse().expect("retries"),
                            ..JobValue::default()
                        },
                    ),
                    _ => (
                        Intent::UpdateTimeout,
                        JobValue {
                            timeout: args[2].parse().expect("ms"),
                            ..JobValue::default()
                        },
                    ),
                };
                Record::command_for(key, intent, RecordValue::Job(value))
            }
            "resolve" => Record::command_for(
                parse_key(&args[1]),
                Intent::Resolve,
                RecordValue::Incident(sluice_engine::record::IncidentValue::default()),
            ),
            "publish" => Record::command(
                Intent::Publish,
                RecordValue::Message(MessageValue {
                    name: args[1].clone(),
                    correlation_key: args.get(2).cloned().unwrap_or_default(),
                    time_to_live: option(&args, "ttl").map_or(0, |v| v.parse().expect("ms")),
                    message_id: option(&args, "id").unwrap_or("").to_owned(),
                    variables: json.into(),
                    deadline: -1,
                }),
            ),
            "set-variables" => Record::command(
                Intent::Update,
                RecordValue::VariableDocument(VariableDocumentValue {
                    scope_key: parse_key(&args[1]),
                    local: args.iter().any(|arg| arg == "local"),
                    variables: json.into(),
                }),
            ),
            other => panic!("unknown golden command '{other}'"),
        };
        (partition, record)
    }

    /// Runs one script line; returns the output lines.
    fn run(&mut self, line: &str) -> Vec<String> {
        let mut lines = Vec::new();
        let mut queue: VecDeque<(u32, Record, Option<u64>)> = VecDeque::new();
        if let Some(ms) = line.strip_prefix("time +") {
            self.now_ms += ms.trim().parse::<i64>().expect("ms");
            for (index, engine) in self.engines.iter_mut().enumerate() {
                let mut out = Output::default();
                engine.tick(self.now_ms, &mut out);
                let prefix = if index == 0 {
                    String::new()
                } else {
                    format!("@{} ", index + 1)
                };
                Self::render_output(&prefix, &out, &mut lines, &mut queue);
            }
        } else {
            let (partition, command) = self.command(line);
            let request = self.next_request;
            self.next_request += 1;
            queue.push_back((partition, command, Some(request)));
        }
        let mut first = true;
        let mut delivered = 0;
        while let Some((partition, command, request)) = queue.pop_front() {
            delivered += 1;
            assert!(delivered < 1_000, "cross-partition commands never settle");
            let mut out = Output::default();
            self.engines[partition as usize - 1].process(command, request, self.now_ms, &mut out);
            let prefix = if partition == 1 && first {
                String::new()
            } else {
                format!("@{partition} ")
            };
            first = false;
            Self::render_output(&prefix, &out, &mut lines, &mut queue);
        }
        lines
    }

    fn render_output(
        prefix: &str,
        out: &Output,
        lines: &mut Vec<String>,
        queue: &mut VecDeque<(u32, Record, Option<u64>)>,
    ) {
        for record in &out.records {
            lines.push(format!("{prefix}{}", render_record(record)));
        }
        for effect in &out.side_effects {
            match effect {
                SideEffect::Respond { record, .. } => {
                    let mut line = format!("{prefix}-> respond {}", render_short(record));
                    if let RecordValue::JobBatch(batch) = &record.value {
                        let jobs: Vec<String> =
                            batch.job_keys.iter().map(|k| render_key(*k)).collect();
                        let _ = write!(line, " jobs=[{}]", jobs.join(","));
                    }
                    if let RecordValue::ProcessInstanceCreation(value) = &record.value
                        && !value.variables.is_empty()
                    {
                        let _ = write!(line, " variables={}", value.variables);
                    }
                    lines.push(line);
                }
                SideEffect::Send {
                    partition_id,
                    record,
                } => {
                    lines.push(format!(
                        "{prefix}-> send @{partition_id} {}",
                        render_short(record)
                    ));
                    queue.push_back((*partition_id, record.clone(), None));
                }
                SideEffect::JobsAvailable { job_type } => {
                    lines.push(format!("{prefix}-> jobs-available {job_type}"));
                }
            }
        }
    }
}

/// Runs one golden file; returns (expected, actual) texts.
fn run_file(path: &Path, bpmn_dir: &Path) -> (String, String) {
    let expected = std::fs::read_to_string(path).expect("golden file is readable");
    let mut actual = String::new();
    let mut partitions = 1;
    let mut commands: Vec<(Vec<String>, String)> = Vec::new();
    let mut comments = Vec::new();
    for line in expected.lines() {
        if let Some(count) = line.strip_prefix("partitions ") {
            partitions = count.trim().parse().expect("partition count");
            actual.push_str(line);
            actual.push('\n');
        } else if let Some(command) = line.strip_prefix("> ") {
            commands.push((std::mem::take(&mut comments), command.to_owned()));
        } else if line.starts_with('#') || (line.is_empty() && commands.is_empty()) {
            comments.push(line.to_owned());
        }
    }
    let mut cluster = Cluster::new(partitions, bpmn_dir.to_owned());
    for (comments, command) in commands {
        for comment in comments {
            actual.push_str(&comment);
            actual.push('\n');
        }
        actual.push_str("> ");
        actual.push_str(&command);
        actual.push('\n');
        for line in cluster.run(&command) {
            actual.push_str(&line);
            actual.push('\n');
        }
    }
    (expected, actual)
}

#[test]
fn golden_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let bpmn_dir = root.join("bpmn");
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("golden"))
        .expect("testdata/golden exists")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "txt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no golden files");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for file in &files {
        let (expected, actual) = run_file(file, &bpmn_dir);
        if expected == actual {
            continue;
        }
        if update {
            std::fs::write(file, &actual).expect("golden file is writable");
            continue;
        }
        let diff_line = expected
            .lines()
            .zip(actual.lines())
            .position(|(e, a)| e != a)
            .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
        failures.push(format!(
            "{}: first difference at line {}:\n  expected: {}\n  actual:   {}",
            file.display(),
            diff_line + 1,
            expected.lines().nth(diff_line).unwrap_or("<end>"),
            actual.lines().nth(diff_line).unwrap_or("<end>")
        ));
    }
    assert!(
        failures.is_empty(),
        "golden mismatches (UPDATE_GOLDEN=1 rewrites them; review the diff):\n{}",
        failures.join("\n")
    );
}
