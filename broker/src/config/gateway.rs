//! `gateway`: the embedded gRPC gateway, its TLS, and the bounds of what clients may hold open.
//!
//! ```yaml
//! gateway:
//!   enable: true
//!   network:
//!     host: null                 # default: network.host
//!     port: 26500                # before network.portOffset
//!     maxConnections: 10000      # open connections; a new one beyond is closed at once
//!     maxConcurrentStreams: 1024 # calls open at once on one connection (HTTP/2 setting)
//!     keepAliveInterval: 30s     # HTTP/2 PING to every connection this often ...
//!     keepAliveTimeout: 20s      # ... closed if the answer, or any progress writing, takes longer
//!     tcpKeepAlive: 60s          # TCP keep-alive probes after this long without traffic
//!     handshakeTimeout: 10s      # a new connection's first bytes (and TLS) within this
//!   longPolling:
//!     enabled: true              # false: ActivateJobs answers after one round
//!     timeout: 10s               # the long poll of an ActivateJobs whose requestTimeout is 0
//!     maxRequestTimeout: 1h      # a longer requestTimeout is shortened to this
//!     maxPolls: 4096             # long polls open at once on this gateway
//!   jobStreams:
//!     maxStreams: 1024           # StreamActivatedJobs calls open at once on this gateway
//!   security:
//!     enabled: false
//!     certificateChainPath: null
//!     privateKeyPath: null
//! ```
//!
//! The environment sets them as every other key (`ZEEBE_BROKER_GATEWAY_NETWORK_MAXCONNECTIONS`,
//! `ZEEBE_BROKER_GATEWAY_LONGPOLLING_MAXPOLLS`, ...).
//!
//! Over a bound a client hears `RESOURCE_EXHAUSTED` (a long poll or job stream beyond
//! `maxPolls` or `maxStreams`) or finds its connection closed (beyond `maxConnections`, silent
//! past `handshakeTimeout`, deaf to keep-alive). A call beyond `maxConcurrentStreams` waits in
//! its client until one of the connection's calls ends (HTTP/2 flow control).
//!
//! An `ActivateJobs` `requestTimeout` above `maxRequestTimeout` is shortened, not refused: a
//! long poll may always end early with no job, and workers then simply ask again.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{
    ConfigError, DURATION_MS_MAX, Field, Leaf, U16, U32, in_range, key, section,
    serialize_duration_ms,
};

/// Most `gateway.network.maxConnections`.
pub const GATEWAY_CONNECTIONS_MAX: u64 = 1_000_000;
/// Most `gateway.network.maxConcurrentStreams`.
pub const GATEWAY_STREAMS_PER_CONNECTION_MAX: u64 = 65_536;
/// Most `gateway.longPolling.maxPolls` and `gateway.jobStreams.maxStreams`.
pub const GATEWAY_POLLS_MAX: u64 = 1_000_000;
/// Shortest `gateway.longPolling.maxRequestTimeout`.
pub const MAX_REQUEST_TIMEOUT_MS_MIN: u64 = 1_000;

/// `gateway`: the embedded gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GatewayConfig {
    /// `gateway.enable`. Default true.
    pub enable: bool,
    /// `gateway.network`: where it listens and how its connections are bounded.
    pub network: GatewayNetworkConfig,
    /// `gateway.longPolling`: `ActivateJobs` long polls.
    pub long_polling: LongPollingConfig,
    /// `gateway.jobStreams`: `StreamActivatedJobs` calls.
    pub job_streams: JobStreamsConfig,
    /// `gateway.security`: TLS for clients. Default off (plaintext).
    pub security: GatewaySecurityConfig,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            enable: true,
            network: GatewayNetworkConfig::default(),
            long_polling: LongPollingConfig::default(),
            job_streams: JobStreamsConfig::default(),
            security: GatewaySecurityConfig::default(),
        }
    }
}

/// `gateway.network`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GatewayNetworkConfig {
    /// `host`: the IP address to bind to; `None` takes `network.host`.
    pub host: Option<String>,
    /// `port`, before `network.portOffset`. Default 26500.
    pub port: u16,
    /// `maxConnections`: connections open at once; one more is closed as soon as it is
    /// accepted. Default 10,000.
    pub max_connections: u32,
    /// `maxConcurrentStreams`: calls open at once on one connection (HTTP/2
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`). Default 1024.
    pub max_concurrent_streams: u32,
    /// `keepAliveInterval`: how often an HTTP/2 PING goes to every connection. Default 30 s.
    #[serde(rename = "keepAliveInterval", serialize_with = "serialize_duration_ms")]
    pub keep_alive_interval_ms: u64,
    /// `keepAliveTimeout`: a connection whose PING is not answered within this, or whose
    /// writes make no progress for this long (its client reads nothing), is closed. Default 20 s.
    #[serde(rename = "keepAliveTimeout", serialize_with = "serialize_duration_ms")]
    pub keep_alive_timeout_ms: u64,
    /// `tcpKeepAlive`: TCP keep-alive probes start after this long without traffic. Default
    /// 60 s.
    #[serde(rename = "tcpKeepAlive", serialize_with = "serialize_duration_ms")]
    pub tcp_keep_alive_ms: u64,
    /// `handshakeTimeout`: a new connection that sends nothing (or does not finish its TLS
    /// handshake) within this is closed. Default 10 s.
    #[serde(rename = "handshakeTimeout", serialize_with = "serialize_duration_ms")]
    pub handshake_timeout_ms: u64,
}

impl Default for GatewayNetworkConfig {
    fn default() -> Self {
        GatewayNetworkConfig {
            host: None,
            port: 26_500,
            max_connections: 10_000,
            max_concurrent_streams: 1_024,
            keep_alive_interval_ms: 30_000,
            keep_alive_timeout_ms: 20_000,
            tcp_keep_alive_ms: 60_000,
            handshake_timeout_ms: 10_000,
        }
    }
}

/// `gateway.longPolling` (Zeebe's `enabled` and `timeout`, and Sluice's bounds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LongPollingConfig {
    /// `enabled`: false answers every `ActivateJobs` after one round over the partitions.
    /// Default true.
    pub enabled: bool,
    /// `timeout`: the long poll of an `ActivateJobs` whose `requestTimeout` is 0. Default 10 s.
    #[serde(rename = "timeout", serialize_with = "serialize_duration_ms")]
    pub timeout_ms: u64,
    /// `maxRequestTimeout`: a longer `requestTimeout` is shortened to this. Default 1 h.
    #[serde(rename = "maxRequestTimeout", serialize_with = "serialize_duration_ms")]
    pub max_request_timeout_ms: u64,
    /// `maxPolls`: long polls open at once on this gateway; one more is answered
    /// `RESOURCE_EXHAUSTED`. Default 4096.
    pub max_polls: u32,
}

impl Default for LongPollingConfig {
    fn default() -> Self {
        LongPollingConfig {
            enabled: true,
            timeout_ms: 10_000,
            max_request_timeout_ms: 60 * 60 * 1_000,
            max_polls: 4_096,
        }
    }
}

/// `gateway.jobStreams`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JobStreamsConfig {
    /// `maxStreams`: `StreamActivatedJobs` calls open at once on this gateway; one more is
    /// answered `RESOURCE_EXHAUSTED`. Default 1024.
    pub max_streams: u32,
}

impl Default for JobStreamsConfig {
    fn default() -> Self {
        JobStreamsConfig { max_streams: 1_024 }
    }
}

/// `gateway.security`: TLS between clients and the gateway (Zeebe's key names). See
/// [`super::BrokerConfig::gateway_tls_paths`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GatewaySecurityConfig {
    /// `gateway.security.enabled`: serve gRPC over TLS. Default false (plaintext).
    pub enabled: bool,
    /// `gateway.security.certificateChainPath`: the gateway's certificate chain (PEM).
    pub certificate_chain_path: Option<PathBuf>,
    /// `gateway.security.privateKeyPath`: the gateway's private key (PEM).
    pub private_key_path: Option<PathBuf>,
}

const GATEWAY_NETWORK: &[Field] = &[
    key("host", Leaf::OptStr),
    key("port", U16),
    key("maxConnections", U32),
    key("maxConcurrentStreams", U32),
    key("keepAliveInterval", Leaf::DurationMs),
    key("keepAliveTimeout", Leaf::DurationMs),
    key("tcpKeepAlive", Leaf::DurationMs),
    key("handshakeTimeout", Leaf::DurationMs),
];

const LONG_POLLING: &[Field] = &[
    key("enabled", Leaf::Bool),
    key("timeout", Leaf::DurationMs),
    key("maxRequestTimeout", Leaf::DurationMs),
    key("maxPolls", U32),
];

const JOB_STREAMS: &[Field] = &[key("maxStreams", U32)];

const GATEWAY_SECURITY: &[Field] = &[
    key("enabled", Leaf::Bool),
    key("certificateChainPath", Leaf::OptStr),
    key("privateKeyPath", Leaf::OptStr),
];

/// The keys of `gateway`.
pub(super) const GATEWAY: &[Field] = &[
    key("enable", Leaf::Bool),
    section("network", GATEWAY_NETWORK),
    section("longPolling", LONG_POLLING),
    section("jobStreams", JOB_STREAMS),
    section("security", GATEWAY_SECURITY),
];

impl GatewayConfig {
    /// Checks the bounds of `gateway.network`, `gateway.longPolling` and `gateway.jobStreams`
    /// (the TLS files are checked by [`super::BrokerConfig::gateway_tls_paths`]).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let network = &self.network;
        let polling = &self.long_polling;
        in_range(
            "gateway.network.maxConnections",
            u64::from(network.max_connections),
            1,
            GATEWAY_CONNECTIONS_MAX,
            "connections",
        )?;
        in_range(
            "gateway.network.maxConcurrentStreams",
            u64::from(network.max_concurrent_streams),
            1,
            GATEWAY_STREAMS_PER_CONNECTION_MAX,
            "streams",
        )?;
        for (key, ms) in [
            (
                "gateway.network.keepAliveInterval",
                network.keep_alive_interval_ms,
            ),
            (
                "gateway.network.keepAliveTimeout",
                network.keep_alive_timeout_ms,
            ),
            ("gateway.network.tcpKeepAlive", network.tcp_keep_alive_ms),
            (
                "gateway.network.handshakeTimeout",
                network.handshake_timeout_ms,
            ),
        ] {
            in_range(key, ms, 1, DURATION_MS_MAX, "ms")?;
        }
        if network.tcp_keep_alive_ms < 1_000 {
            return Err(ConfigError::Invalid {
                key: "gateway.network.tcpKeepAlive",
                reason: format!(
                    "is {} ms; the kernel counts TCP keep-alive in whole seconds, so set at \
                     least 1s",
                    network.tcp_keep_alive_ms
                ),
            });
        }
        in_range(
            "gateway.longPolling.maxRequestTimeout",
            polling.max_request_timeout_ms,
            MAX_REQUEST_TIMEOUT_MS_MIN,
            DURATION_MS_MAX,
            "ms",
        )?;
        in_range(
            "gateway.longPolling.timeout",
            polling.timeout_ms,
            1,
            polling.max_request_timeout_ms,
            "ms (at most gateway.longPolling.maxRequestTimeout)",
        )?;
        in_range(
            "gateway.longPolling.maxPolls",
            u64::from(polling.max_polls),
            1,
            GATEWAY_POLLS_MAX,
            "polls",
        )?;
        in_range(
            "gateway.jobStreams.maxStreams",
            u64::from(self.job_streams.max_streams),
            1,
            GATEWAY_POLLS_MAX,
            "streams",
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::BrokerConfig;
    use super::*;

    fn load(yaml: &str, vars: &[(&str, &str)]) -> Result<BrokerConfig, ConfigError> {
        let env: Vec<(String, String)> = vars
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        BrokerConfig::from_yaml_str(yaml, &env)
    }

    #[test]
    fn the_defaults_bound_every_client_facing_queue() {
        let config = load("", &[]).expect("the defaults are valid");
        let gateway = &config.gateway;
        assert_eq!(gateway.network.port, 26_500);
        assert_eq!(gateway.network.max_connections, 10_000);
        assert_eq!(gateway.network.max_concurrent_streams, 1_024);
        assert_eq!(gateway.network.keep_alive_interval_ms, 30_000);
        assert_eq!(gateway.network.keep_alive_timeout_ms, 20_000);
        assert_eq!(gateway.network.tcp_keep_alive_ms, 60_000);
        assert_eq!(gateway.network.handshake_timeout_ms, 10_000);
        assert!(gateway.long_polling.enabled);
        assert_eq!(gateway.long_polling.timeout_ms, 10_000);
        assert_eq!(gateway.long_polling.max_request_timeout_ms, 3_600_000);
        assert_eq!(gateway.long_polling.max_polls, 4_096);
        assert_eq!(gateway.job_streams.max_streams, 1_024);
        let yaml = config.to_yaml();
        for line in [
            "maxConnections: 10000",
            "keepAliveInterval: 30s",
            "maxRequestTimeout: 1h",
            "maxPolls: 4096",
            "maxStreams: 1024",
        ] {
            assert!(yaml.contains(line), "{line} in\n{yaml}");
        }
    }

    #[test]
    fn the_file_and_the_environment_set_the_bounds() {
        let yaml = "gateway:\n  network:\n    maxConnections: 50\n    keepAliveInterval: 5s\n  \
                    longPolling: { timeout: 2s, maxRequestTimeout: PT1M, enabled: false }\n";
        let config = load(
            yaml,
            &[
                ("ZEEBE_BROKER_GATEWAY_LONGPOLLING_MAXPOLLS", "7"),
                ("ZEEBE_BROKER_GATEWAY_JOBSTREAMS_MAXSTREAMS", "3"),
                ("ZEEBE_BROKER_GATEWAY_NETWORK_MAXCONCURRENTSTREAMS", "9"),
                ("ZEEBE_BROKER_GATEWAY_NETWORK_HANDSHAKETIMEOUT", "250ms"),
            ],
        )
        .expect("valid");
        let gateway = &config.gateway;
        assert_eq!(gateway.network.max_connections, 50);
        assert_eq!(gateway.network.keep_alive_interval_ms, 5_000);
        assert_eq!(gateway.network.max_concurrent_streams, 9);
        assert_eq!(gateway.network.handshake_timeout_ms, 250);
        assert!(!gateway.long_polling.enabled);
        assert_eq!(gateway.long_polling.timeout_ms, 2_000);
        assert_eq!(gateway.long_polling.max_request_timeout_ms, 60_000);
        assert_eq!(gateway.long_polling.max_polls, 7);
        assert_eq!(gateway.job_streams.max_streams, 3);
    }

    #[test]
    fn out_of_range_bounds_are_refused_with_their_key() {
        for (yaml, key) in [
            (
                "gateway: { network: { maxConnections: 0 } }",
                "gateway.network.maxConnections",
            ),
            (
                "gateway: { network: { maxConcurrentStreams: 100000 } }",
                "gateway.network.maxConcurrentStreams",
            ),
            (
                "gateway: { network: { keepAliveTimeout: 0ms } }",
                "gateway.network.keepAliveTimeout",
            ),
            (
                "gateway: { network: { tcpKeepAlive: 500ms } }",
                "gateway.network.tcpKeepAlive",
            ),
            (
                "gateway: { longPolling: { maxRequestTimeout: 10ms } }",
                "gateway.longPolling.maxRequestTimeout",
            ),
            (
                "gateway: { longPolling: { timeout: 2h } }",
                "gateway.longPolling.timeout",
            ),
            (
                "gateway: { longPolling: { maxPolls: 0 } }",
                "gateway.longPolling.maxPolls",
            ),
            (
                "gateway: { jobStreams: { maxStreams: 0 } }",
                "gateway.jobStreams.maxStreams",
            ),
        ] {
            let error = load(yaml, &[]).expect_err(yaml);
            assert!(error.to_string().contains(key), "{yaml}: {error}");
        }
        let error = load("gateway: { longPolling: { maxPoll: 3 } }", &[]).expect_err("a typo");
        assert!(
            error.to_string().contains("gateway.longPolling.maxPoll"),
            "{error}"
        );
    }
}
