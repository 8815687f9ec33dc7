//! The configuration through the crate's public API: a Zeebe-style file on disk, overridden by
//! the environment, as the broker loads it at start-up.

use std::path::{Path, PathBuf};

use sluice_broker::backpressure::{AimdConfig, LimiterConfig};
use sluice_broker::config::{BackpressureAlgorithm, BrokerConfig, ConfigError, SchemeName};

const ZEEBE_FILE: &str = "
zeebe:
  broker:
    cluster:
      nodeId: 0
      clusterSize: 3
      partitionsCount: 4
      replicationFactor: 3
      clusterName: it-cluster
      initialContactPoints: [ broker-1:26502, broker-2:26502 ]
      heartbeatInterval: 200ms
      electionTimeout: PT2S
    experimental:
      partitioning:
        scheme: ROUND_ROBIN
    network:
      advertisedHost: broker-0
      security:
        certificateAuthorityPath: certs/ca.pem
        certificateChainPath: certs/broker-0.pem
        privateKeyPath: certs/broker-0.key
    data:
      directory: /tmp/sluice-it
      logSegmentSize: 32MB
    backpressure:
      enabled: true
      algorithm: AIMD
      aimd:
        initialLimit: 40
        minLimit: 5
        maxLimit: 400
        requestTimeout: 1s
        backoffRatio: 0.8
";

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

#[test]
fn a_zeebe_file_with_environment_overrides_loads() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("sluice-config-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("application.yaml");
    std::fs::write(&path, ZEEBE_FILE)?;
    let vars = env(&[
        ("ZEEBE_BROKER_CLUSTER_NODEID", "1"),
        ("ZEEBE_BROKER_NETWORK_ADVERTISEDHOST", "broker-1"),
        ("ZEEBE_BROKER_NETWORK_PORTOFFSET", "1"),
        ("ZEEBE_BROKER_BACKPRESSURE_AIMD_MAXLIMIT", "80"),
        ("ZEEBE_BROKER_BACKPRESSURE_AIMD_REQUESTTIMEOUT", "PT0.3S"),
        ("HOME", "/root"),
    ]);
    let config = BrokerConfig::load(Some(&path), &vars)?;
    std::fs::remove_dir_all(&dir)?;

    assert_eq!(config.cluster.node_id, 1);
    assert_eq!(config.cluster.cluster_name, "it-cluster");
    assert_eq!(config.cluster.heartbeat_interval_ms, 200);
    assert_eq!(config.cluster.election_timeout_ms, 2_000);
    assert_eq!(config.partitioning.scheme, SchemeName::RoundRobin);
    assert_eq!(config.data.directory, Path::new("/tmp/sluice-it"));
    assert_eq!(config.data.log_segment_bytes, 32 << 20);
    assert_eq!(config.command_api_addr().to_string(), "127.0.0.1:26511");
    assert_eq!(config.internal_api_addr().to_string(), "0.0.0.0:26512");
    assert_eq!(config.gateway_addr().to_string(), "0.0.0.0:26510");
    assert_eq!(config.management_addr().to_string(), "0.0.0.0:9610");
    assert_eq!(config.advertised_internal_addr(), "broker-1:26512");
    assert_eq!(
        config.tls_paths()?,
        (
            PathBuf::from("certs/ca.pem"),
            PathBuf::from("certs/broker-0.pem"),
            PathBuf::from("certs/broker-0.key")
        )
    );
    assert_eq!(config.backpressure.algorithm, BackpressureAlgorithm::Aimd);
    assert_eq!(
        config.limiter(),
        LimiterConfig {
            enabled: true,
            aimd: AimdConfig {
                initial_limit: 40,
                min_limit: 5,
                max_limit: 80,
                request_timeout_ms: 300,
                backoff_ratio: 0.8,
            },
        }
    );
    let layout = config.partition_layout()?;
    assert_eq!(layout.partitions_of(1), [1, 2, 3, 4]);
    assert_eq!(layout.preferred_leader(2), Some(1));

    // The effective configuration, as logged, reads back the same.
    let logged = config.to_yaml();
    assert_eq!(BrokerConfig::from_yaml_str(&logged, &[])?, config);
    Ok(())
}

#[test]
fn a_typo_in_the_environment_stops_the_broker() {
    let error = BrokerConfig::load(None, &env(&[("ZEEBE_BROKER_CLUSTER_NODE_ID", "1")]))
        .expect_err("NODE_ID is not nodeId");
    assert!(matches!(error, ConfigError::UnknownEnv { .. }));
    let message = error.to_string();
    assert!(
        message.contains("ZEEBE_BROKER_CLUSTER_NODE_ID"),
        "{message}"
    );
}

#[test]
fn backpressure_settings_the_limiter_would_refuse_stop_the_broker() {
    for (vars, needles) in [
        (
            &[("ZEEBE_BROKER_BACKPRESSURE_AIMD_MINLIMIT", "0")][..],
            &["backpressure.aimd.minLimit"][..],
        ),
        (
            &[
                ("ZEEBE_BROKER_BACKPRESSURE_AIMD_INITIALLIMIT", "5"),
                ("ZEEBE_BROKER_BACKPRESSURE_AIMD_MAXLIMIT", "4"),
            ],
            &["backpressure.aimd.initialLimit", "1..=4"],
        ),
        (
            &[("ZEEBE_BROKER_BACKPRESSURE_AIMD_BACKOFFRATIO", "1.0")],
            &["backpressure.aimd.backoffRatio", "between 0 and 1"],
        ),
        (
            &[("ZEEBE_BROKER_BACKPRESSURE_ALGORITHM", "vegas")],
            &[
                "backpressure.algorithm",
                "ZEEBE_BROKER_BACKPRESSURE_ALGORITHM",
                "AIMD",
            ],
        ),
    ] {
        let error = BrokerConfig::load(None, &env(vars)).expect_err("refused");
        let message = error.to_string();
        for needle in needles {
            assert!(message.contains(needle), "{needle:?} missing in: {message}");
        }
    }
    let config = BrokerConfig::load(
        None,
        &env(&[("ZEEBE_BROKER_BACKPRESSURE_ENABLED", "false")]),
    )
    .expect("valid");
    assert!(!config.limiter().enabled);
}
