//! The gateway workload's command line: `sluice-bench [gateway] [options]`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The gateway asked when `--gateway` is not given.
pub const GATEWAY_DEFAULT: &str = "localhost:26500";
/// `--duration`'s default, in seconds.
pub const DURATION_S_DEFAULT: f64 = 10.0;
/// `--warmup`'s default, in seconds.
pub const WARMUP_S_DEFAULT: f64 = 2.0;
/// Longest `--duration` and `--warmup`: an hour each.
pub const SECONDS_MAX: f64 = 3600.0;
/// `--workers`'s default.
pub const WORKERS_DEFAULT: u32 = 4;
/// Most `--workers`.
pub const WORKERS_MAX: u32 = 256;
/// Highest `--rate`, in instances per second.
pub const RATE_MAX: u32 = 1_000_000;
/// `--in-flight`'s default.
pub const IN_FLIGHT_DEFAULT: u32 = 256;
/// Most `--in-flight`.
pub const IN_FLIGHT_MAX: u32 = 4096;
/// `--report`'s default.
pub const REPORT_DEFAULT: &str = "target/sluice-bench/report.html";

/// The gateway workload's part of `sluice-bench --help`.
pub const USAGE: &str = "\
sluice-bench [gateway] [--gateway HOST:PORT] [--duration SECONDS] [--warmup SECONDS]
                       [--workers N] [--rate N] [--in-flight N] [--activate stream|poll]
                       [--json] [--report PATH]
  Deploys a one-service-task process (bpmnProcessId sluice-bench, job type bench-task)
  through the Zeebe gRPC gateway, starts instances and completes their jobs; measures
  instance latency (create sent, or scheduled with --rate, to job completed) and each RPC.
  --gateway     the Zeebe gateway (default localhost:26500; an http:// prefix is accepted)
  --duration    measured seconds (default 10)
  --warmup      seconds run first and not counted (default 2)
  --workers     job workers (default 4), each with up to 32 jobs in hand
  --rate        instances started per second, on a fixed schedule; 0 (the default): as fast
                the --in-flight bound allows
  --in-flight   with --rate 0, instances started and not yet completed (default 256)
  --activate    stream (the default): jobs pushed by StreamActivatedJobs;
                poll: ActivateJobs long polling (32 jobs, 10 s)
  --json        one JSON object on stdout, the table on stderr
  --report      where the HTML report goes (default target/sluice-bench/report.html)";

/// How workers get their jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `StreamActivatedJobs`: the gateway pushes jobs as they are created.
    Stream,
    /// `ActivateJobs` long polling.
    Poll,
}

impl Activation {
    /// The `--activate` word.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Activation::Stream => "stream",
            Activation::Poll => "poll",
        }
    }
}

/// One run of the gateway workload.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayArgs {
    /// `HOST:PORT`, possibly with an `http://` prefix.
    pub gateway: String,
    /// Measured seconds.
    pub duration_s: f64,
    /// Seconds run before measuring.
    pub warmup_s: f64,
    /// Job workers.
    pub workers: u32,
    /// Instances per second; 0 for as fast as possible.
    pub rate: u32,
    /// Creations awaiting their answer when `rate` is 0.
    pub in_flight: u32,
    /// How workers get their jobs.
    pub activation: Activation,
    /// One JSON object on stdout.
    pub json: bool,
    /// Where the HTML report goes.
    pub report: PathBuf,
}

impl Default for GatewayArgs {
    fn default() -> Self {
        GatewayArgs {
            gateway: GATEWAY_DEFAULT.to_owned(),
            duration_s: DURATION_S_DEFAULT,
            warmup_s: WARMUP_S_DEFAULT,
            workers: WORKERS_DEFAULT,
            rate: 0,
            in_flight: IN_FLIGHT_DEFAULT,
            activation: Activation::Stream,
            json: false,
            report: PathBuf::from(REPORT_DEFAULT),
        }
    }
}

impl GatewayArgs {
    /// The gateway's URL for tonic.
    #[must_use]
    pub fn gateway_url(&self) -> String {
        if self.gateway.starts_with("http://") {
            self.gateway.clone()
        } else {
            format!("http://{}", self.gateway)
        }
    }

    /// The measured window.
    #[must_use]
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration_s)
    }

    /// The unmeasured start.
    #[must_use]
    pub fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.warmup_s)
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// `-h`, `--help`.
    Help,
    /// Run the workload.
    Run(GatewayArgs),
}

/// A command line that cannot be run; printed with the usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgError(pub String);

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ArgError {}

fn error(message: impl Into<String>) -> ArgError {
    ArgError(message.into())
}

fn whole(flag: &str, value: &str, min: u32, max: u32) -> Result<u32, ArgError> {
    let parsed: u64 = value
        .parse()
        .map_err(|_| error(format!("{flag}: {value:?} is not a whole number")))?;
    u32::try_from(parsed)
        .ok()
        .filter(|parsed| (min..=max).contains(parsed))
        .ok_or_else(|| {
            error(format!(
                "{flag} must be between {min} and {max}, got {parsed}"
            ))
        })
}

fn seconds(flag: &str, value: &str, zero_allowed: bool) -> Result<f64, ArgError> {
    let parsed: f64 = value
        .parse()
        .map_err(|_| error(format!("{flag}: {value:?} is not a number of seconds")))?;
    let low_ok = if zero_allowed {
        parsed >= 0.0
    } else {
        parsed > 0.0
    };
    if !(low_ok && parsed <= SECONDS_MAX) {
        let low = if zero_allowed {
            "at least 0"
        } else {
            "above 0"
        };
        return Err(error(format!(
            "{flag} must be {low} and at most {SECONDS_MAX}, got {value}"
        )));
    }
    Ok(parsed)
}

fn check_gateway(value: &str) -> Result<String, ArgError> {
    if value.starts_with("https://") {
        return Err(error(
            "--gateway: TLS is not supported yet; give a plaintext HOST:PORT",
        ));
    }
    let address = value.strip_prefix("http://").unwrap_or(value);
    match address.rsplit_once(':') {
        Some((host, port))
            if !host.is_empty()
                && !address.contains('/')
                && port.parse::<u16>().is_ok_and(|port| port > 0) =>
        {
            Ok(value.to_owned())
        }
        _ => Err(error(format!(
            "--gateway: expected HOST:PORT, got {value:?}"
        ))),
    }
}

/// Parses the options after the workload word (`gateway`, or none). Options take their value
/// as the next argument or after `=`.
///
/// # Errors
///
/// An [`ArgError`] naming the option at fault.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Parsed, ArgError> {
    let mut parsed = GatewayArgs::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), Some(value)),
            _ => (arg.clone(), None),
        };
        let takes_value = match flag.as_str() {
            "--json" | "-h" | "--help" => false,
            "--gateway" | "--duration" | "--warmup" | "--workers" | "--rate" | "--in-flight"
            | "--activate" | "--report" => true,
            other => return Err(error(format!("unknown option {other:?}"))),
        };
        if !takes_value && inline.is_some() {
            return Err(error(format!("{flag} takes no value")));
        }
        let value = if takes_value {
            match inline {
                Some(value) => value.to_owned(),
                None => args
                    .next()
                    .ok_or_else(|| error(format!("{flag} needs a value")))?,
            }
        } else {
            String::new()
        };
        match flag.as_str() {
            "--gateway" => parsed.gateway = check_gateway(&value)?,
            "--duration" => parsed.duration_s = seconds(&flag, &value, false)?,
            "--warmup" => parsed.warmup_s = seconds(&flag, &value, true)?,
            "--workers" => parsed.workers = whole(&flag, &value, 1, WORKERS_MAX)?,
            "--rate" => parsed.rate = whole(&flag, &value, 0, RATE_MAX)?,
            "--in-flight" => parsed.in_flight = whole(&flag, &value, 1, IN_FLIGHT_MAX)?,
            "--activate" => {
                parsed.activation = match value.as_str() {
                    "stream" => Activation::Stream,
                    "poll" => Activation::Poll,
                    other => {
                        return Err(error(format!(
                            "--activate: {other:?} is neither stream nor poll"
                        )));
                    }
                };
            }
            "--report" => {
                if value.is_empty() {
                    return Err(error("--report: give a file path"));
                }
                parsed.report = PathBuf::from(value);
            }
            "--json" => parsed.json = true,
            "-h" | "--help" => return Ok(Parsed::Help),
            other => unreachable!("{other} is checked above"),
        }
    }
    Ok(Parsed::Run(parsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> GatewayArgs {
        match parse(args.iter().map(|arg| (*arg).to_owned())) {
            Ok(Parsed::Run(parsed)) => parsed,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    fn fails(args: &[&str]) -> String {
        match parse(args.iter().map(|arg| (*arg).to_owned())) {
            Err(ArgError(message)) => message,
            other => panic!("{args:?} parsed as {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let parsed = run(&[]);
        assert_eq!(parsed, GatewayArgs::default());
        assert_eq!(parsed.gateway, "localhost:26500");
        assert_eq!(parsed.gateway_url(), "http://localhost:26500");
        assert_eq!(parsed.duration(), Duration::from_secs(10));
        assert_eq!(parsed.warmup(), Duration::from_secs(2));
        assert_eq!(parsed.workers, 4);
        assert_eq!(parsed.rate, 0);
        assert_eq!(parsed.in_flight, IN_FLIGHT_DEFAULT);
        assert_eq!(parsed.activation, Activation::Stream);
        assert!(!parsed.json);
        assert_eq!(
            parsed.report,
            PathBuf::from("target/sluice-bench/report.html")
        );
    }

    #[test]
    fn every_option() {
        let parsed = run(&[
            "--gateway",
            "http://10.0.0.1:29900",
            "--duration",
            "2.5",
            "--warmup=0",
            "--workers",
            "8",
            "--rate",
            "50",
            "--in-flight",
            "16",
            "--activate",
            "poll",
            "--json",
            "--report",
            "/tmp/x/r.html",
        ]);
        assert_eq!(parsed.gateway_url(), "http://10.0.0.1:29900");
        assert!((parsed.duration_s - 2.5).abs() < f64::EPSILON);
        assert_eq!(parsed.warmup(), Duration::ZERO);
        assert_eq!(parsed.workers, 8);
        assert_eq!(parsed.rate, 50);
        assert_eq!(parsed.in_flight, 16);
        assert_eq!(parsed.activation, Activation::Poll);
        assert!(parsed.json);
        assert_eq!(parsed.report, PathBuf::from("/tmp/x/r.html"));
        assert_eq!(run(&["--activate=stream"]).activation, Activation::Stream);
        assert_eq!(
            parse(["--rate".to_owned(), "5".to_owned(), "-h".to_owned()]),
            Ok(Parsed::Help)
        );
    }

    #[test]
    fn bad_options_say_which() {
        let cases: [(&[&str], &str); 14] = [
            (&["--nope"], "unknown option \"--nope\""),
            (&["--workers"], "--workers needs a value"),
            (&["--workers", "0"], "--workers must be between 1 and 256"),
            (&["--workers", "x"], "not a whole number"),
            (&["--rate", "-1"], "not a whole number"),
            (&["--rate", "1000001"], "--rate must be between 0 and"),
            (&["--in-flight", "0"], "--in-flight must be between 1"),
            (&["--duration", "0"], "--duration must be above 0"),
            (&["--duration", "soon"], "not a number of seconds"),
            (&["--warmup", "-1"], "--warmup must be at least 0"),
            (&["--activate", "push"], "neither stream nor poll"),
            (&["--gateway", "no-port"], "expected HOST:PORT"),
            (&["--gateway", "https://h:1"], "TLS is not supported"),
            (&["--json=yes"], "--json takes no value"),
        ];
        for (args, expected) in cases {
            let message = fails(args);
            assert!(message.contains(expected), "{args:?}: {message}");
        }
        for bad in ["h:0", ":26500", "h:99999", "h:1/x"] {
            assert!(fails(&["--gateway", bad]).starts_with("--gateway"), "{bad}");
        }
    }
}
