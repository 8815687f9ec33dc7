//! `sluicectl`'s arguments and output, kept apart from the binary so they test without a server.
//!
//! ```text
//! let invocation = ctl::parse(std::env::args().skip(1), std::env::var(GATEWAY_ENV).ok().as_deref())?;
//! ...                                          // the binary sends invocation.command over gRPC
//! let output = ctl::topology_output(&response);
//! println!("{}", if invocation.json { output.json.to_string() } else { output.text });
//! ```
//!
//! [`parse`] turns the command line into an [`Invocation`]: the global options and one
//! [`Command`] whose numbers are parsed and whose JSON arguments are checked to be JSON objects,
//! so a typo fails here with the argument's name rather than at the broker. An [`ArgError`]
//! names the command it belongs to, so the binary can print that command's usage line.
//!
//! The `*_output` functions render one gRPC response twice: a short text for people and a JSON
//! object whose field names are the gRPC (camelCase) field names. JSON documents carried as
//! strings by the protocol (`variables`, `customHeaders`) are embedded as JSON values.

use std::fmt;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use sluice_broker::gateway::proto::gateway_protocol as pb;

/// The gateway asked when neither `--gateway` nor [`GATEWAY_ENV`] names one.
pub const GATEWAY_DEFAULT: &str = "localhost:26500";
/// The environment variable naming the gateway, `HOST:PORT`.
pub const GATEWAY_ENV: &str = "SLUICE_GATEWAY";
/// `--timeout`'s default, in seconds.
pub const TIMEOUT_S_DEFAULT: u64 = 10;
/// Longest `--timeout` (a day, the gateway's own maximum).
pub const TIMEOUT_S_MAX: u64 = 86_400;
/// `activate --max`'s default (as zbctl's).
pub const ACTIVATE_MAX_DEFAULT: i32 = 1;
/// Most jobs one activation may ask for (the gateway's limit).
pub const ACTIVATE_MAX_MAX: i32 = 10_000;
/// `activate --timeout`'s default: how long an activated job stays with this worker, in ms.
pub const JOB_TIMEOUT_MS_DEFAULT: i64 = 300_000;
/// `activate --worker`'s default.
pub const WORKER_DEFAULT: &str = "sluicectl";
/// `publish --ttl`'s default in ms: one hour, as the Zeebe Java client's.
pub const MESSAGE_TTL_MS_DEFAULT: i64 = 3_600_000;
/// How long the gateway long-polls an activation sent with `requestTimeout` 0.
pub const GATEWAY_LONG_POLL_DEFAULT: Duration = Duration::from_secs(10);

/// The whole usage text (`sluicectl --help`).
pub const USAGE: &str = "\
usage: sluicectl [--gateway HOST:PORT] [--json] [--timeout SECONDS] <command>

commands:
  topology                       brokers and the role of each partition replica
  deploy FILE...                 deploy BPMN files, each named by its file name
  create BPMN_PROCESS_ID [--version N] [--variables JSON] [--with-result] [--fetch NAME,...]
                                 start an instance of the latest (or given) version;
                                 --with-result waits for it to complete (up to --timeout) and
                                 prints its variables, or only the --fetch ones
  publish NAME --correlation-key KEY [--variables JSON] [--ttl MS] [--message-id ID]
                                 publish a message (ttl default 1 hour)
  activate TYPE [--max N] [--timeout MS] [--worker NAME] [--request-timeout MS]
                                 activate up to N jobs (default 1) of TYPE for --timeout ms
                                 (default 300000); the gateway waits up to --request-timeout
                                 ms for jobs (0, the default: 10 s; negative: not at all)
  complete JOB_KEY [--variables JSON]
  fail JOB_KEY --retries N [--message TEXT] [--backoff MS] [--variables JSON]
  throw-error JOB_KEY CODE [--message TEXT] [--variables JSON]
  retries JOB_KEY N              set a job's retries
  resolve INCIDENT_KEY
  cancel PROCESS_INSTANCE_KEY
  set-variables ELEMENT_INSTANCE_KEY JSON [--local]

options:
  --gateway HOST:PORT   the Zeebe gateway (default localhost:26500, or $SLUICE_GATEWAY)
  --json                print one JSON object, with the gRPC field names
  --timeout SECONDS     how long to wait for the gateway's answer (default 10); after the
                        `activate` command, --timeout is the job's timeout instead
  -h, --help            this text

Global options may come before or after the command. JSON arguments must be JSON objects.
Errors print the gRPC status on stderr and exit with 1; bad arguments exit with 2.";

/// What one run of `sluicectl` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The gateway, `HOST:PORT`.
    pub gateway: String,
    /// Print JSON instead of text.
    pub json: bool,
    /// How long to wait for each answer.
    pub timeout: Duration,
    /// The command.
    pub command: Command,
}

impl Invocation {
    /// The gateway's URL for tonic.
    #[must_use]
    pub fn gateway_url(&self) -> String {
        if self.gateway.starts_with("http://") {
            self.gateway.clone()
        } else {
            format!("http://{}", self.gateway)
        }
    }
}

/// One command, its arguments parsed and checked. Variables are `""` when not given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `-h`, `--help`, `help`: print [`USAGE`].
    Help,
    /// `topology`.
    Topology,
    /// `deploy FILE...`.
    Deploy {
        /// At least one file.
        files: Vec<PathBuf>,
    },
    /// `create`.
    Create {
        /// The process to start.
        bpmn_process_id: String,
        /// `-1` for the latest.
        version: i32,
        /// A JSON object, or `""`.
        variables: String,
        /// Wait for the instance to complete.
        with_result: bool,
        /// With `with_result`: the variables to return (all when empty).
        fetch_variables: Vec<String>,
    },
    /// `publish`.
    Publish {
        /// The message name.
        name: String,
        /// The correlation key.
        correlation_key: String,
        /// A JSON object, or `""`.
        variables: String,
        /// How long the message waits to be correlated, in ms.
        time_to_live_ms: i64,
        /// Unique per buffered message when not empty.
        message_id: String,
    },
    /// `activate`.
    Activate {
        /// The job type.
        job_type: String,
        /// `1..=ACTIVATE_MAX_MAX`.
        max_jobs_to_activate: i32,
        /// How long the activated jobs stay locked to this worker, in ms.
        job_timeout_ms: i64,
        /// The worker name recorded on the jobs.
        worker: String,
        /// The gateway's long poll: 0 its default, negative none, in ms.
        request_timeout_ms: i64,
    },
    /// `complete`.
    Complete {
        /// The job.
        job_key: i64,
        /// A JSON object, or `""`.
        variables: String,
    },
    /// `fail`.
    Fail {
        /// The job.
        job_key: i64,
        /// Retries left; 0 raises an incident.
        retries: i32,
        /// Why it failed.
        error_message: String,
        /// Wait before the job may be activated again, in ms.
        retry_backoff_ms: i64,
        /// A JSON object, or `""`.
        variables: String,
    },
    /// `throw-error`.
    ThrowError {
        /// The job.
        job_key: i64,
        /// The BPMN error code.
        error_code: String,
        /// A message for the incident when nothing catches the error.
        error_message: String,
        /// A JSON object, or `""`.
        variables: String,
    },
    /// `retries`.
    Retries {
        /// The job.
        job_key: i64,
        /// Its new retries.
        retries: i32,
    },
    /// `resolve`.
    Resolve {
        /// The incident.
        incident_key: i64,
    },
    /// `cancel`.
    Cancel {
        /// The instance.
        process_instance_key: i64,
    },
    /// `set-variables`.
    SetVariables {
        /// The scope.
        element_instance_key: i64,
        /// A JSON object (required).
        variables: String,
        /// Set them on the scope itself rather than where they are defined.
        local: bool,
    },
}

impl Command {
    /// How long the whole call may take: `timeout`, plus the gateway's long poll for `activate`.
    #[must_use]
    pub fn call_deadline(&self, timeout: Duration) -> Duration {
        match self {
            Command::Activate {
                request_timeout_ms, ..
            } => {
                let long_poll = match u64::try_from(*request_timeout_ms) {
                    Ok(0) => GATEWAY_LONG_POLL_DEFAULT,
                    Ok(ms) => Duration::from_millis(ms),
                    Err(_) => Duration::ZERO,
                };
                timeout + long_poll
            }
            _ => timeout,
        }
    }
}

/// A bad command line: exit status 2 and the usage of `command` (all usage when `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgError {
    /// What is wrong, naming the argument.
    pub message: String,
    /// The command whose arguments were wrong, when known.
    pub command: Option<&'static str>,
}

impl ArgError {
    fn new(command: Option<&'static str>, message: impl Into<String>) -> Self {
        ArgError {
            message: message.into(),
            command,
        }
    }

    /// The usage to print after the message: the command's lines, or all of [`USAGE`].
    #[must_use]
    pub fn usage(&self) -> String {
        let Some(command) = self.command else {
            return USAGE.to_owned();
        };
        let mut lines = USAGE.lines().skip_while(|line| {
            !line.starts_with(&format!("  {command} ")) && *line != format!("  {command}")
        });
        let mut usage = String::from("usage: sluicectl [options] ");
        if let Some(first) = lines.next() {
            usage.push_str(first.trim());
        }
        // Continuation lines of the same entry are indented deeper than the command names.
        for line in lines.take_while(|line| line.starts_with("       ")) {
            usage.push_str("\n    ");
            usage.push_str(line.trim());
        }
        usage.push_str("\n(sluicectl --help lists every command)");
        usage
    }
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ArgError {}

/// The command names, as typed.
const COMMANDS: &[&str] = &[
    "topology",
    "deploy",
    "create",
    "publish",
    "activate",
    "complete",
    "fail",
    "throw-error",
    "retries",
    "resolve",
    "cancel",
    "set-variables",
];

/// Parses `sluicectl`'s arguments (without the program name). `gateway_env` is
/// [`GATEWAY_ENV`]'s value; `--gateway` wins over it.
pub fn parse(
    args: impl IntoIterator<Item = String>,
    gateway_env: Option<&str>,
) -> Result<Invocation, ArgError> {
    let mut gateway = match gateway_env.map(str::trim) {
        Some(value) if !value.is_empty() => check_gateway(None, GATEWAY_ENV, value)?,
        _ => GATEWAY_DEFAULT.to_owned(),
    };
    let mut json = false;
    let mut timeout_s = TIMEOUT_S_DEFAULT;
    let mut command: Option<&'static str> = None;
    let mut rest = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = split_inline(&arg);
        // After `activate`, --timeout is the job's timeout.
        let global = match flag {
            "--gateway" | "--json" => true,
            "--timeout" => command != Some("activate"),
            "-h" | "--help" => return Ok(help(gateway, json, timeout_s)),
            _ => false,
        };
        if global {
            match flag {
                "--json" => {
                    if inline.is_some() {
                        return Err(ArgError::new(command, "--json takes no value"));
                    }
                    json = true;
                }
                "--gateway" => {
                    gateway = check_gateway(
                        command,
                        "--gateway",
                        &value_of(command, flag, inline, &mut args)?,
                    )?;
                }
                _ => {
                    let value = value_of(command, flag, inline, &mut args)?;
                    timeout_s = integer(command, flag, &value, 1, TIMEOUT_S_MAX)?;
                }
            }
            continue;
        }
        if command.is_some() {
            rest.push(arg);
            continue;
        }
        if arg == "help" {
            return Ok(help(gateway, json, timeout_s));
        }
        if arg.starts_with('-') {
            return Err(ArgError::new(None, format!("unknown option {arg:?}")));
        }
        command = Some(
            COMMANDS
                .iter()
                .copied()
                .find(|name| *name == arg)
                .ok_or_else(|| ArgError::new(None, format!("unknown command {arg:?}")))?,
        );
    }
    let Some(name) = command else {
        return Err(ArgError::new(
            None,
            "name a command, e.g. `sluicectl topology`",
        ));
    };
    Ok(Invocation {
        gateway,
        json,
        timeout: Duration::from_secs(timeout_s),
        command: parse_command(name, rest)?,
    })
}

fn help(gateway: String, json: bool, timeout_s: u64) -> Invocation {
    Invocation {
        gateway,
        json,
        timeout: Duration::from_secs(timeout_s),
        command: Command::Help,
    }
}

/// `--flag=value` as `("--flag", Some("value"))`.
fn split_inline(arg: &str) -> (&str, Option<&str>) {
    match arg.split_once('=') {
        Some((flag, value)) if flag.starts_with("--") => (flag, Some(value)),
        _ => (arg, None),
    }
}

fn value_of(
    command: Option<&'static str>,
    flag: &str,
    inline: Option<&str>,
    args: &mut impl Iterator<Item = String>,
) -> Result<String, ArgError> {
    match inline {
        Some(value) => Ok(value.to_owned()),
        None => args
            .next()
            .ok_or_else(|| ArgError::new(command, format!("{flag} needs a value"))),
    }
}

fn check_gateway(
    command: Option<&'static str>,
    what: &str,
    gateway: &str,
) -> Result<String, ArgError> {
    let address = gateway.strip_prefix("http://").unwrap_or(gateway);
    let port = address
        .rsplit_once(':')
        .map(|(host, port)| (host, port.parse::<u16>()));
    match port {
        Some((host, Ok(port))) if !host.is_empty() && port > 0 && !address.contains('/') => {
            Ok(gateway.to_owned())
        }
        _ if gateway.starts_with("https://") => Err(ArgError::new(
            command,
            format!("{what}: TLS is not supported yet; give a plaintext HOST:PORT"),
        )),
        _ => Err(ArgError::new(
            command,
            format!("{what}: expected HOST:PORT, got {gateway:?}"),
        )),
    }
}

fn integer<T: TryFrom<i128>>(
    command: Option<&'static str>,
    what: &str,
    value: &str,
    min: T,
    max: T,
) -> Result<T, ArgError>
where
    i128: From<T>,
{
    let (min, max) = (i128::from(min), i128::from(max));
    let parsed: i128 = value
        .parse()
        .map_err(|_| ArgError::new(command, format!("{what}: {value:?} is not a whole number")))?;
    if !(min..=max).contains(&parsed) {
        return Err(ArgError::new(
            command,
            format!("{what} must be between {min} and {max}, got {parsed}"),
        ));
    }
    T::try_from(parsed)
        .map_err(|_| ArgError::new(command, format!("{what}: {parsed} is out of range")))
}

/// Checks a JSON argument is a JSON object; returns it unchanged.
pub fn check_json_object(what: &str, text: &str) -> Result<String, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(_)) => Ok(text.to_owned()),
        Ok(other) => Err(format!(
            "{what} must be a JSON object like {{\"name\": 1}}, got a JSON {}",
            json_kind(&other)
        )),
        Err(error) => Err(format!("{what} is not valid JSON: {error}")),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A command's own arguments: positionals, and flags from its specification.
struct CommandArgs {
    command: &'static str,
    positionals: Vec<String>,
    flags: Vec<(&'static str, Option<String>)>,
}

impl CommandArgs {
    /// Splits `rest` by `spec`: each flag and whether it takes a value.
    fn split(
        command: &'static str,
        rest: Vec<String>,
        spec: &[(&'static str, bool)],
    ) -> Result<Self, ArgError> {
        let mut parsed = CommandArgs {
            command,
            positionals: Vec::new(),
            flags: Vec::new(),
        };
        let mut rest = rest.into_iter();
        while let Some(arg) = rest.next() {
            if arg == "--" {
                parsed.positionals.extend(rest.by_ref());
                break;
            }
            if !arg.starts_with("--") {
                if arg.starts_with('-') && arg.len() > 1 {
                    return Err(ArgError::new(
                        Some(command),
                        format!("unknown option {arg:?}"),
                    ));
                }
                parsed.positionals.push(arg);
                continue;
            }
            let (flag, inline) = split_inline(&arg);
            let Some(&(name, takes_value)) = spec.iter().find(|(name, _)| *name == flag) else {
                return Err(ArgError::new(
                    Some(command),
                    format!("unknown option {flag:?} for {command}"),
                ));
            };
            if parsed.flags.iter().any(|(seen, _)| *seen == name) {
                return Err(ArgError::new(Some(command), format!("{name} given twice")));
            }
            let value = if takes_value {
                Some(value_of(Some(command), name, inline, &mut rest)?)
            } else if inline.is_some() {
                return Err(ArgError::new(
                    Some(command),
                    format!("{name} takes no value"),
                ));
            } else {
                None
            };
            parsed.flags.push((name, value));
        }
        Ok(parsed)
    }

    fn error(&self, message: impl Into<String>) -> ArgError {
        ArgError::new(Some(self.command), message)
    }

    /// Exactly `names.len()` positionals.
    fn positionals(&mut self, names: &[&str]) -> Result<Vec<String>, ArgError> {
        if self.positionals.len() != names.len() {
            let wanted = names.join(" ");
            return Err(if self.positionals.len() < names.len() {
                self.error(format!("{} needs {wanted}", self.command))
            } else {
                self.error(format!(
                    "{} takes {wanted}, got extra arguments {:?}",
                    self.command,
                    &self.positionals[names.len()..]
                ))
            });
        }
        Ok(std::mem::take(&mut self.positionals))
    }

    fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|(seen, _)| *seen == name)
    }

    fn text(&self, name: &str) -> Option<String> {
        self.flags
            .iter()
            .find(|(seen, _)| *seen == name)
            .and_then(|(_, value)| value.clone())
    }

    fn number<T: TryFrom<i128> + Copy>(
        &self,
        name: &str,
        min: T,
        max: T,
    ) -> Result<Option<T>, ArgError>
    where
        i128: From<T>,
    {
        self.text(name)
            .map(|value| integer(Some(self.command), name, &value, min, max))
            .transpose()
    }

    fn key(&self, what: &str, value: &str) -> Result<i64, ArgError> {
        integer(Some(self.command), what, value, 1, i64::MAX)
    }

    fn json(&self, what: &str, value: &str) -> Result<String, ArgError> {
        check_json_object(what, value).map_err(|message| self.error(message))
    }

    /// `--variables`, checked, or `""`.
    fn variables(&self) -> Result<String, ArgError> {
        self.text("--variables")
            .map(|value| self.json("--variables", &value))
            .transpose()
            .map(Option::unwrap_or_default)
    }

    fn non_empty(&self, what: &str, value: String) -> Result<String, ArgError> {
        if value.trim().is_empty() {
            return Err(self.error(format!("{what} must not be empty")));
        }
        Ok(value)
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "one arm per command, read side by side with USAGE"
)]
fn parse_command(command: &'static str, rest: Vec<String>) -> Result<Command, ArgError> {
    let spec: &[(&'static str, bool)] = match command {
        "create" => &[
            ("--version", true),
            ("--variables", true),
            ("--with-result", false),
            ("--fetch", true),
        ],
        "publish" => &[
            ("--correlation-key", true),
            ("--variables", true),
            ("--ttl", true),
            ("--message-id", true),
        ],
        "activate" => &[
            ("--max", true),
            ("--timeout", true),
            ("--worker", true),
            ("--request-timeout", true),
        ],
        "complete" => &[("--variables", true)],
        "fail" => &[
            ("--retries", true),
            ("--message", true),
            ("--backoff", true),
            ("--variables", true),
        ],
        "throw-error" => &[("--message", true), ("--variables", true)],
        "set-variables" => &[("--local", false)],
        _ => &[],
    };
    let mut args = CommandArgs::split(command, rest, spec)?;
    Ok(match command {
        "topology" => {
            args.positionals(&[])?;
            Command::Topology
        }
        "deploy" => {
            if args.positionals.is_empty() {
                return Err(args.error("deploy needs at least one FILE"));
            }
            Command::Deploy {
                files: args.positionals.drain(..).map(PathBuf::from).collect(),
            }
        }
        "create" => {
            let [id] = take(args.positionals(&["BPMN_PROCESS_ID"])?);
            let with_result = args.flag("--with-result");
            let fetch_variables: Vec<String> = args
                .text("--fetch")
                .map(|names| {
                    names
                        .split(',')
                        .map(str::trim)
                        .filter(|name| !name.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            if args.flag("--fetch") && !with_result {
                return Err(args.error("--fetch needs --with-result"));
            }
            Command::Create {
                bpmn_process_id: args.non_empty("BPMN_PROCESS_ID", id)?,
                version: args.number("--version", 1, i32::MAX)?.unwrap_or(-1),
                variables: args.variables()?,
                with_result,
                fetch_variables,
            }
        }
        "publish" => {
            let [name] = take(args.positionals(&["NAME"])?);
            let correlation_key = args
                .text("--correlation-key")
                .ok_or_else(|| args.error("publish needs --correlation-key KEY"))?;
            Command::Publish {
                name: args.non_empty("NAME", name)?,
                correlation_key,
                variables: args.variables()?,
                time_to_live_ms: args
                    .number("--ttl", 0, i64::MAX)?
                    .unwrap_or(MESSAGE_TTL_MS_DEFAULT),
                message_id: args.text("--message-id").unwrap_or_default(),
            }
        }
        "activate" => {
            let [job_type] = take(args.positionals(&["TYPE"])?);
            Command::Activate {
                job_type: args.non_empty("TYPE", job_type)?,
                max_jobs_to_activate: args
                    .number("--max", 1, ACTIVATE_MAX_MAX)?
                    .unwrap_or(ACTIVATE_MAX_DEFAULT),
                job_timeout_ms: args
                    .number("--timeout", 1, i64::MAX)?
                    .unwrap_or(JOB_TIMEOUT_MS_DEFAULT),
                worker: args
                    .text("--worker")
                    .unwrap_or_else(|| WORKER_DEFAULT.to_owned()),
                request_timeout_ms: args.number("--request-timeout", -1, i64::MAX)?.unwrap_or(0),
            }
        }
        "complete" => {
            let [key] = take(args.positionals(&["JOB_KEY"])?);
            Command::Complete {
                job_key: args.key("JOB_KEY", &key)?,
                variables: args.variables()?,
            }
        }
        "fail" => {
            let [key] = take(args.positionals(&["JOB_KEY"])?);
            Command::Fail {
                job_key: args.key("JOB_KEY", &key)?,
                retries: args
                    .number("--retries", 0, i32::MAX)?
                    .ok_or_else(|| args.error("fail needs --retries N (0 raises an incident)"))?,
                error_message: args.text("--message").unwrap_or_default(),
                retry_backoff_ms: args.number("--backoff", 0, i64::MAX)?.unwrap_or(0),
                variables: args.variables()?,
            }
        }
        "throw-error" => {
            let [key, code] = take(args.positionals(&["JOB_KEY", "CODE"])?);
            Command::ThrowError {
                job_key: args.key("JOB_KEY", &key)?,
                error_code: args.non_empty("CODE", code)?,
                error_message: args.text("--message").unwrap_or_default(),
                variables: args.variables()?,
            }
        }
        "retries" => {
            let [key, retries] = take(args.positionals(&["JOB_KEY", "N"])?);
            Command::Retries {
                job_key: args.key("JOB_KEY", &key)?,
                retries: integer(Some(command), "N", &retries, 1, i32::MAX)?,
            }
        }
        "resolve" => {
            let [key] = take(args.positionals(&["INCIDENT_KEY"])?);
            Command::Resolve {
                incident_key: args.key("INCIDENT_KEY", &key)?,
            }
        }
        "cancel" => {
            let [key] = take(args.positionals(&["PROCESS_INSTANCE_KEY"])?);
            Command::Cancel {
                process_instance_key: args.key("PROCESS_INSTANCE_KEY", &key)?,
            }
        }
        "set-variables" => {
            let [key, variables] = take(args.positionals(&["ELEMENT_INSTANCE_KEY", "JSON"])?);
            Command::SetVariables {
                element_instance_key: args.key("ELEMENT_INSTANCE_KEY", &key)?,
                variables: args.json("JSON", &variables)?,
                local: args.flag("--local"),
            }
        }
        other => unreachable!("{other} is in COMMANDS but has no parser"),
    })
}

/// The `N` positionals [`CommandArgs::positionals`] checked there are.
fn take<const N: usize>(values: Vec<String>) -> [String; N] {
    values
        .try_into()
        .unwrap_or_else(|values: Vec<String>| panic!("expected {N} values, got {}", values.len()))
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

/// One answer, rendered for people (`text`, no trailing newline) and for programs (`json`).
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// Short aligned text.
    pub text: String,
    /// One JSON object with the gRPC field names.
    pub json: Value,
}

/// A JSON document sent as a string, as a JSON value (the string itself when it doesn't parse;
/// `{}` when empty).
#[must_use]
pub fn embedded_json(text: &str) -> Value {
    if text.trim().is_empty() {
        return json!({});
    }
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

fn role_name(role: i32) -> String {
    pb::partition::PartitionBrokerRole::try_from(role)
        .map_or_else(|_| role.to_string(), |role| role.as_str_name().to_owned())
}

fn health_name(health: i32) -> String {
    pb::partition::PartitionBrokerHealth::try_from(health).map_or_else(
        |_| health.to_string(),
        |health| health.as_str_name().to_owned(),
    )
}

/// Lays out rows in columns two spaces apart; the last column is not padded.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter()
                .filter_map(|row| row.get(column))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut text = String::new();
    for row in rows {
        let mut line = String::new();
        for (column, cell) in row.iter().enumerate() {
            if column + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[column]);
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text.pop();
    text
}

/// `topology`: a line about the cluster, then a table of brokers with each partition's role.
#[must_use]
pub fn topology_output(response: &pb::TopologyResponse) -> Output {
    let mut brokers: Vec<&pb::BrokerInfo> = response.brokers.iter().collect();
    brokers.sort_by_key(|broker| broker.node_id);
    let mut partition_ids: Vec<i32> = brokers
        .iter()
        .flat_map(|broker| {
            broker
                .partitions
                .iter()
                .map(|partition| partition.partition_id)
        })
        .collect();
    partition_ids.sort_unstable();
    partition_ids.dedup();
    let mut rows = vec![
        ["BROKER", "ADDRESS", "VERSION"]
            .into_iter()
            .map(str::to_owned)
            .chain(partition_ids.iter().map(|id| format!("P{id}")))
            .collect::<Vec<_>>(),
    ];
    for broker in &brokers {
        let mut row = vec![
            broker.node_id.to_string(),
            format!("{}:{}", broker.host, broker.port),
            broker.version.clone(),
        ];
        for id in &partition_ids {
            row.push(
                broker
                    .partitions
                    .iter()
                    .find(|partition| partition.partition_id == *id)
                    .map_or_else(
                        || "-".to_owned(),
                        |partition| {
                            let role = role_name(partition.role).to_lowercase();
                            match partition.health {
                                0 => role,
                                health => format!("{role}({})", health_name(health).to_lowercase()),
                            }
                        },
                    ),
            );
        }
        rows.push(row);
    }
    let text = format!(
        "cluster size {}, {} partitions, replication factor {}, gateway {}\n{}",
        response.cluster_size,
        response.partitions_count,
        response.replication_factor,
        response.gateway_version,
        table(&rows)
    );
    let json = json!({
        "brokers": brokers.iter().map(|broker| json!({
            "nodeId": broker.node_id,
            "host": broker.host,
            "port": broker.port,
            "partitions": broker.partitions.iter().map(|partition| json!({
                "partitionId": partition.partition_id,
                "role": role_name(partition.role),
                "health": health_name(partition.health),
            })).collect::<Vec<_>>(),
            "version": broker.version,
        })).collect::<Vec<_>>(),
        "clusterSize": response.cluster_size,
        "partitionsCount": response.partitions_count,
        "replicationFactor": response.replication_factor,
        "gatewayVersion": response.gateway_version,
    });
    Output { text, json }
}

/// `deploy`: one line per deployed resource.
#[must_use]
pub fn deploy_output(response: &pb::DeployResourceResponse) -> Output {
    use pb::deployment::Metadata;
    let mut lines = Vec::new();
    let mut deployments = Vec::new();
    for deployment in &response.deployments {
        let (line, value) = match &deployment.metadata {
            Some(Metadata::Process(process)) => (
                format!(
                    "deployed {} v{} (key {})",
                    process.bpmn_process_id, process.version, process.process_definition_key
                ),
                json!({"process": {
                    "bpmnProcessId": process.bpmn_process_id,
                    "version": process.version,
                    "processDefinitionKey": process.process_definition_key,
                    "resourceName": process.resource_name,
                    "tenantId": process.tenant_id,
                }}),
            ),
            Some(Metadata::Decision(decision)) => (
                format!(
                    "deployed decision {} v{} (key {})",
                    decision.dmn_decision_id, decision.version, decision.decision_key
                ),
                json!({"decision": {
                    "dmnDecisionId": decision.dmn_decision_id,
                    "dmnDecisionName": decision.dmn_decision_name,
                    "version": decision.version,
                    "decisionKey": decision.decision_key,
                    "dmnDecisionRequirementsId": decision.dmn_decision_requirements_id,
                    "decisionRequirementsKey": decision.decision_requirements_key,
                    "tenantId": decision.tenant_id,
                }}),
            ),
            Some(Metadata::DecisionRequirements(requirements)) => (
                format!(
                    "deployed decision requirements {} v{} (key {})",
                    requirements.dmn_decision_requirements_id,
                    requirements.version,
                    requirements.decision_requirements_key
                ),
                json!({"decisionRequirements": {
                    "dmnDecisionRequirementsId": requirements.dmn_decision_requirements_id,
                    "dmnDecisionRequirementsName": requirements.dmn_decision_requirements_name,
                    "version": requirements.version,
                    "decisionRequirementsKey": requirements.decision_requirements_key,
                    "resourceName": requirements.resource_name,
                    "tenantId": requirements.tenant_id,
                }}),
            ),
            Some(Metadata::Form(form)) => (
                format!(
                    "deployed form {} v{} (key {})",
                    form.form_id, form.version, form.form_key
                ),
                json!({"form": {
                    "formId": form.form_id,
                    "version": form.version,
                    "formKey": form.form_key,
                    "resourceName": form.resource_name,
                    "tenantId": form.tenant_id,
                }}),
            ),
            None => (
                "deployed a resource of an unknown kind".to_owned(),
                json!({}),
            ),
        };
        lines.push(line);
        deployments.push(value);
    }
    if lines.is_empty() {
        lines.push(format!("deployment {} holds no resources", response.key));
    }
    Output {
        text: lines.join("\n"),
        json: json!({
            "key": response.key,
            "deployments": deployments,
            "tenantId": response.tenant_id,
        }),
    }
}

/// `create`.
#[must_use]
pub fn create_output(response: &pb::CreateProcessInstanceResponse) -> Output {
    Output {
        text: format!(
            "created instance {} of {} v{}",
            response.process_instance_key, response.bpmn_process_id, response.version
        ),
        json: json!({
            "processDefinitionKey": response.process_definition_key,
            "bpmnProcessId": response.bpmn_process_id,
            "version": response.version,
            "processInstanceKey": response.process_instance_key,
            "tenantId": response.tenant_id,
        }),
    }
}

/// `create --with-result`.
#[must_use]
pub fn create_with_result_output(response: &pb::CreateProcessInstanceWithResultResponse) -> Output {
    let variables = embedded_json(&response.variables);
    Output {
        text: format!(
            "completed instance {} of {} v{}\nvariables: {variables}",
            response.process_instance_key, response.bpmn_process_id, response.version
        ),
        json: json!({
            "processDefinitionKey": response.process_definition_key,
            "bpmnProcessId": response.bpmn_process_id,
            "version": response.version,
            "processInstanceKey": response.process_instance_key,
            "variables": variables,
            "tenantId": response.tenant_id,
        }),
    }
}

/// `publish`.
#[must_use]
pub fn publish_output(name: &str, response: &pb::PublishMessageResponse) -> Output {
    Output {
        text: format!("published message {name} (key {})", response.key),
        json: json!({"key": response.key, "tenantId": response.tenant_id}),
    }
}

/// `activate`: a table of the jobs (or a line saying there were none).
#[must_use]
pub fn activate_output(job_type: &str, jobs: &[pb::ActivatedJob]) -> Output {
    let text = if jobs.is_empty() {
        format!("no {job_type} jobs activated")
    } else {
        let mut rows = vec![
            ["KEY", "TYPE", "RETRIES", "INSTANCE", "ELEMENT", "VARIABLES"]
                .map(str::to_owned)
                .to_vec(),
        ];
        rows.extend(jobs.iter().map(|job| {
            vec![
                job.key.to_string(),
                job.r#type.clone(),
                job.retries.to_string(),
                job.process_instance_key.to_string(),
                format!("{}/{}", job.bpmn_process_id, job.element_id),
                embedded_json(&job.variables).to_string(),
            ]
        }));
        table(&rows)
    };
    let json = json!({
        "jobs": jobs.iter().map(|job| json!({
            "key": job.key,
            "type": job.r#type,
            "processInstanceKey": job.process_instance_key,
            "bpmnProcessId": job.bpmn_process_id,
            "processDefinitionVersion": job.process_definition_version,
            "processDefinitionKey": job.process_definition_key,
            "elementId": job.element_id,
            "elementInstanceKey": job.element_instance_key,
            "customHeaders": embedded_json(&job.custom_headers),
            "worker": job.worker,
            "retries": job.retries,
            "deadline": job.deadline,
            "variables": embedded_json(&job.variables),
            "tenantId": job.tenant_id,
        })).collect::<Vec<_>>(),
    });
    Output { text, json }
}

/// `set-variables`.
#[must_use]
pub fn set_variables_output(
    element_instance_key: i64,
    response: &pb::SetVariablesResponse,
) -> Output {
    Output {
        text: format!(
            "set variables on element instance {element_instance_key} (key {})",
            response.key
        ),
        json: json!({"key": response.key}),
    }
}

/// A command whose gRPC answer is empty: `text` for people, `{}` for programs.
#[must_use]
pub fn empty_output(text: String) -> Output {
    Output {
        text,
        json: json!({}),
    }
}

/// The canonical name of a gRPC status code, as in `NOT_FOUND`.
#[must_use]
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
