//! `engine`: the caps the engine puts on what clients hand it, so that no single request can make
//! a partition's state, a log entry or one expression evaluation grow without bound.
//!
//! ```yaml
//! engine:
//!   messages:
//!     ttlMax: 7d                  # longest time to live a published message may ask for
//!   variables:
//!     documentSizeMax: null       # largest variables document; null: network.maxMessageSize
//!     nestingMax: 64              # deepest nesting of objects and arrays, at most 100
//!   feel:
//!     valueSizeMax: 4MB           # largest string, list or context one evaluation builds
//!     collectionItemsMax: 100000  # most items of a list or context one evaluation builds
//! ```
//!
//! The environment sets them as every other key: `ZEEBE_BROKER_ENGINE_MESSAGES_TTLMAX=1d`,
//! `ZEEBE_BROKER_ENGINE_VARIABLES_DOCUMENTSIZEMAX=1MB`, `ZEEBE_BROKER_ENGINE_VARIABLES_NESTINGMAX`,
//! `ZEEBE_BROKER_ENGINE_FEEL_VALUESIZEMAX`, `ZEEBE_BROKER_ENGINE_FEEL_COLLECTIONITEMSMAX`.
//! Zeebe has no such keys; every broker of a cluster should have the same values, since a
//! command's fate must not depend on which replica leads.
//!
//! What each cap does and its range: [`EngineCapsConfig`].
//!
//! Zero is refused everywhere: a cap of zero would refuse every request rather than none.

use serde::{Deserialize, Serialize};
use sluice_engine::EngineConfig;
use sluice_engine::feel::{COLLECTION_ITEMS_MAX_DEFAULT, VALUE_BYTES_MAX_DEFAULT};
use sluice_engine::processor::{
    MESSAGE_TTL_MS_MAX_DEFAULT, VARIABLES_DOCUMENT_BYTES_MAX_DEFAULT, VARIABLES_NESTING_CEILING,
    VARIABLES_NESTING_MAX_DEFAULT,
};

use super::{
    ConfigError, Field, Leaf, key, section, serialize_duration_ms, serialize_opt_size_bytes,
    serialize_size_bytes,
};

/// Largest `engine.messages.ttlMax`: 365 days.
pub const MESSAGE_TTL_MS_CEILING: u64 = 365 * 24 * 60 * 60 * 1_000;

/// Smallest `engine.variables.documentSizeMax` and `engine.feel.valueSizeMax`: a smaller cap is a
/// unit mistake (a plain number is bytes).
pub const SIZE_BYTES_MIN: u64 = 1 << 10;

/// Largest `engine.feel.valueSizeMax`: 64 MiB.
pub const FEEL_VALUE_BYTES_CEILING: u64 = 64 << 20;

/// Largest `engine.feel.collectionItemsMax`.
pub const FEEL_COLLECTION_ITEMS_CEILING: u64 = 10_000_000;

const KEY_TTL_MAX: &str = "engine.messages.ttlMax";
const KEY_DOCUMENT_SIZE_MAX: &str = "engine.variables.documentSizeMax";
const KEY_NESTING_MAX: &str = "engine.variables.nestingMax";
const KEY_VALUE_SIZE_MAX: &str = "engine.feel.valueSizeMax";
const KEY_COLLECTION_ITEMS_MAX: &str = "engine.feel.collectionItemsMax";

const _: () = assert!(MESSAGE_TTL_MS_MAX_DEFAULT.unsigned_abs() <= MESSAGE_TTL_MS_CEILING);
const _: () =
    assert!(VARIABLES_DOCUMENT_BYTES_MAX_DEFAULT as u64 == crate::limits::MESSAGE_BYTES_DEFAULT);
const _: () = assert!(
    VALUE_BYTES_MAX_DEFAULT as u64 >= SIZE_BYTES_MIN
        && VALUE_BYTES_MAX_DEFAULT as u64 <= FEEL_VALUE_BYTES_CEILING
);
const _: () = assert!(COLLECTION_ITEMS_MAX_DEFAULT as u64 <= FEEL_COLLECTION_ITEMS_CEILING);
const _: () = assert!(crate::limits::MESSAGE_BYTES_MIN >= SIZE_BYTES_MIN);

/// `engine`: the engine's caps. Zero is refused for every one.
///
/// What each cap does ([`EngineConfig`] has the details):
///
/// - `messages.ttlMax`: a `PublishMessage` asking for a longer time to live is refused
///   `INVALID_ARGUMENT` naming the limit. A buffered message stays in the partition's state and
///   in every snapshot until it expires. At most [`MESSAGE_TTL_MS_CEILING`] (365 days).
/// - `variables.documentSizeMax`: a command whose variables document is larger (instance
///   creation, job completion, message publication, set variables) is refused
///   `INVALID_ARGUMENT`; a correlated message's variables or a mapping's result that is larger
///   raises an incident. Unset, it is `network.maxMessageSize`, and it may not be above it: no
///   request could carry such a document, and a variable that large could not be handed to a
///   job worker (an activated job must fit one answer). At least [`SIZE_BYTES_MIN`].
/// - `variables.nestingMax`: handled like the size, within `1..=`
///   [`VARIABLES_NESTING_CEILING`] (replicas must be able to read back what the leader wrote).
/// - `feel.valueSizeMax` and `feel.collectionItemsMax`: exceeding one is an evaluation error,
///   an incident like every FEEL error. Within [`SIZE_BYTES_MIN`]`..=`
///   [`FEEL_VALUE_BYTES_CEILING`] and `1..=`[`FEEL_COLLECTION_ITEMS_CEILING`]: one evaluation
///   runs on the partition's shard, and everything else on it waits.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EngineCapsConfig {
    /// `engine.messages`.
    pub messages: MessageCapsConfig,
    /// `engine.variables`.
    pub variables: VariableCapsConfig,
    /// `engine.feel`.
    pub feel: FeelCapsConfig,
}

/// `engine.messages`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MessageCapsConfig {
    /// `engine.messages.ttlMax`: the longest time to live a message may be published with.
    /// Default 7 days.
    #[serde(rename = "ttlMax", serialize_with = "serialize_duration_ms")]
    pub ttl_max_ms: u64,
}

impl Default for MessageCapsConfig {
    fn default() -> Self {
        MessageCapsConfig {
            ttl_max_ms: MESSAGE_TTL_MS_MAX_DEFAULT.unsigned_abs(),
        }
    }
}

/// `engine.variables`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VariableCapsConfig {
    /// `engine.variables.documentSizeMax`: the largest variables document. Default `None`:
    /// `network.maxMessageSize` (4 MiB by default).
    #[serde(
        rename = "documentSizeMax",
        serialize_with = "serialize_opt_size_bytes"
    )]
    pub document_bytes_max: Option<u64>,
    /// `engine.variables.nestingMax`: the deepest nesting of objects and arrays. Default 64.
    pub nesting_max: u32,
}

impl Default for VariableCapsConfig {
    fn default() -> Self {
        VariableCapsConfig {
            document_bytes_max: None,
            nesting_max: VARIABLES_NESTING_MAX_DEFAULT,
        }
    }
}

/// `engine.feel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FeelCapsConfig {
    /// `engine.feel.valueSizeMax`: the largest string, list or context one evaluation builds.
    /// Default 4 MiB.
    #[serde(rename = "valueSizeMax", serialize_with = "serialize_size_bytes")]
    pub value_bytes_max: u64,
    /// `engine.feel.collectionItemsMax`: the most items of a list, or entries of a context, one
    /// evaluation builds. Default 100,000.
    pub collection_items_max: u64,
}

impl Default for FeelCapsConfig {
    fn default() -> Self {
        FeelCapsConfig {
            value_bytes_max: VALUE_BYTES_MAX_DEFAULT as u64,
            collection_items_max: COLLECTION_ITEMS_MAX_DEFAULT as u64,
        }
    }
}

const MESSAGES: &[Field] = &[key("ttlMax", Leaf::LongDurationMs)];

const VARIABLES: &[Field] = &[
    key("documentSizeMax", Leaf::OptSizeBytes),
    key("nestingMax", Leaf::UInt(u32::MAX as u64)),
];

const FEEL: &[Field] = &[
    key("valueSizeMax", Leaf::SizeBytes),
    key("collectionItemsMax", Leaf::UInt(u32::MAX as u64)),
];

/// The keys of `engine`.
pub(super) const ENGINE: &[Field] = &[
    section("messages", MESSAGES),
    section("variables", VARIABLES),
    section("feel", FEEL),
];

/// The engine's caps of a validated configuration, as every replica's engine runs with them
/// ([`super::BrokerConfig::engine_caps`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineCaps {
    /// [`EngineConfig::message_ttl_ms_max`].
    pub message_ttl_ms_max: i64,
    /// [`EngineConfig::variables_document_bytes_max`].
    pub variables_document_bytes_max: usize,
    /// [`EngineConfig::variables_nesting_max`].
    pub variables_nesting_max: u32,
    /// [`EngineConfig::feel_value_bytes_max`].
    pub feel_value_bytes_max: usize,
    /// [`EngineConfig::feel_collection_items_max`].
    pub feel_collection_items_max: usize,
}

impl Default for EngineCaps {
    /// The engine's own defaults (those of the default configuration).
    fn default() -> Self {
        let defaults = EngineConfig::new(1, 1);
        EngineCaps {
            message_ttl_ms_max: defaults.message_ttl_ms_max,
            variables_document_bytes_max: defaults.variables_document_bytes_max,
            variables_nesting_max: defaults.variables_nesting_max,
            feel_value_bytes_max: defaults.feel_value_bytes_max,
            feel_collection_items_max: defaults.feel_collection_items_max,
        }
    }
}

impl EngineCaps {
    /// `config` with these caps.
    #[must_use]
    pub fn apply(self, mut config: EngineConfig) -> EngineConfig {
        config.message_ttl_ms_max = self.message_ttl_ms_max;
        config.variables_document_bytes_max = self.variables_document_bytes_max;
        config.variables_nesting_max = self.variables_nesting_max;
        config.feel_value_bytes_max = self.feel_value_bytes_max;
        config.feel_collection_items_max = self.feel_collection_items_max;
        config
    }
}

impl EngineCapsConfig {
    /// Checks every cap against its range (the module docs list them); `max_message_bytes` is
    /// `network.maxMessageSize`, which bounds `variables.documentSizeMax`.
    pub(super) fn validate(&self, max_message_bytes: u64) -> Result<(), ConfigError> {
        super::in_range(
            KEY_TTL_MAX,
            self.messages.ttl_max_ms,
            1,
            MESSAGE_TTL_MS_CEILING,
            "ms",
        )?;
        if let Some(bytes) = self.variables.document_bytes_max {
            super::in_range(
                KEY_DOCUMENT_SIZE_MAX,
                bytes,
                SIZE_BYTES_MIN,
                u64::MAX,
                "bytes",
            )?;
            if bytes > max_message_bytes {
                return Err(ConfigError::Invalid {
                    key: KEY_DOCUMENT_SIZE_MAX,
                    reason: format!(
                        "is {bytes} bytes, above `network.maxMessageSize` ({max_message_bytes} \
                         bytes): no request could carry such a document, and a variable that \
                         large could not be handed to a job worker; lower it, unset it (it then \
                         follows network.maxMessageSize) or raise network.maxMessageSize"
                    ),
                });
            }
        }
        super::in_range(
            KEY_NESTING_MAX,
            u64::from(self.variables.nesting_max),
            1,
            u64::from(VARIABLES_NESTING_CEILING),
            "levels",
        )?;
        super::in_range(
            KEY_VALUE_SIZE_MAX,
            self.feel.value_bytes_max,
            SIZE_BYTES_MIN,
            FEEL_VALUE_BYTES_CEILING,
            "bytes",
        )?;
        super::in_range(
            KEY_COLLECTION_ITEMS_MAX,
            self.feel.collection_items_max,
            1,
            FEEL_COLLECTION_ITEMS_CEILING,
            "items",
        )?;
        Ok(())
    }

    /// The caps for the engine; `max_message_bytes` is `network.maxMessageSize`. Valid when the
    /// configuration passed [`super::BrokerConfig::validate`].
    pub(super) fn caps(&self, max_message_bytes: u64) -> EngineCaps {
        let size = |bytes: u64| usize::try_from(bytes).expect("validated: at most 64 MiB");
        EngineCaps {
            message_ttl_ms_max: i64::try_from(self.messages.ttl_max_ms)
                .expect("validated: at most 365 days"),
            variables_document_bytes_max: size(
                self.variables
                    .document_bytes_max
                    .unwrap_or(max_message_bytes),
            ),
            variables_nesting_max: self.variables.nesting_max,
            feel_value_bytes_max: size(self.feel.value_bytes_max),
            feel_collection_items_max: size(self.feel.collection_items_max),
        }
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

    fn refused(yaml: &str, vars: &[(&str, &str)], needles: &[&str]) {
        let message = load(yaml, vars)
            .expect_err("an invalid configuration")
            .to_string();
        for needle in needles {
            assert!(message.contains(needle), "{needle:?} missing in: {message}");
        }
    }

    #[test]
    fn the_defaults_are_the_engines() {
        let config = load("", &[]).expect("the defaults are valid");
        assert_eq!(config.engine, EngineCapsConfig::default());
        assert_eq!(config.engine_caps(), EngineCaps::default());
        let applied = config.engine_caps().apply(EngineConfig::new(2, 3));
        assert_eq!(applied, EngineConfig::new(2, 3));
        let yaml = config.to_yaml();
        for line in [
            "ttlMax: 7d",
            "documentSizeMax: null",
            "nestingMax: 64",
            "valueSizeMax: 4MB",
            "collectionItemsMax: 100000",
        ] {
            assert!(yaml.contains(line), "{line:?} missing in:\n{yaml}");
        }
    }

    #[test]
    fn the_keys_come_from_the_file_and_the_environment() {
        let yaml = "
engine:
  messages: { ttlMax: PT36H }
  variables: { documentSizeMax: 512KB, nestingMax: 10 }
  feel: { valueSizeMax: 1MB, collectionItemsMax: 5000 }
";
        let config = load(yaml, &[]).expect("valid");
        let caps = config.engine_caps();
        assert_eq!(
            caps,
            EngineCaps {
                message_ttl_ms_max: 36 * 60 * 60 * 1_000,
                variables_document_bytes_max: 512 << 10,
                variables_nesting_max: 10,
                feel_value_bytes_max: 1 << 20,
                feel_collection_items_max: 5_000,
            }
        );
        assert_eq!(load(&config.to_yaml(), &[]).expect("round trip"), config);
        let config = load(
            yaml,
            &[
                ("ZEEBE_BROKER_ENGINE_MESSAGES_TTLMAX", "30d"),
                ("ZEEBE_BROKER_ENGINE_VARIABLES_DOCUMENTSIZEMAX", "2MB"),
                ("ZEEBE_BROKER_ENGINE_VARIABLES_NESTINGMAX", "100"),
                ("ZEEBE_BROKER_ENGINE_FEEL_VALUESIZEMAX", "16MB"),
                ("ZEEBE_BROKER_ENGINE_FEEL_COLLECTIONITEMSMAX", "1000000"),
            ],
        )
        .expect("valid");
        assert_eq!(
            config.engine_caps(),
            EngineCaps {
                message_ttl_ms_max: 30 * 24 * 60 * 60 * 1_000,
                variables_document_bytes_max: 2 << 20,
                variables_nesting_max: 100,
                feel_value_bytes_max: 16 << 20,
                feel_collection_items_max: 1_000_000,
            }
        );
        // An empty variable unsets the file's document size: it follows maxMessageSize again.
        let config = load(
            "network: { maxMessageSize: 1MB }\nengine: { variables: { documentSizeMax: 512KB } }\n",
            &[("ZEEBE_BROKER_ENGINE_VARIABLES_DOCUMENTSIZEMAX", "")],
        )
        .expect("valid");
        assert_eq!(config.engine.variables.document_bytes_max, None);
        assert_eq!(config.engine_caps().variables_document_bytes_max, 1 << 20);
    }

    #[test]
    fn the_document_size_follows_max_message_size_and_stays_within_it() {
        let config = load("network: { maxMessageSize: 7MB }\n", &[]).expect("valid");
        assert_eq!(config.engine_caps().variables_document_bytes_max, 7 << 20);
        let config = load("network: { maxMessageSize: 1MB }\n", &[]).expect("valid");
        assert_eq!(config.engine_caps().variables_document_bytes_max, 1 << 20);
        refused(
            "network: { maxMessageSize: 1MB }\nengine: { variables: { documentSizeMax: 2MB } }\n",
            &[],
            &[
                "engine.variables.documentSizeMax",
                "2097152 bytes",
                "network.maxMessageSize",
                "1048576 bytes",
            ],
        );
        refused(
            "",
            &[("ZEEBE_BROKER_ENGINE_VARIABLES_DOCUMENTSIZEMAX", "8MB")],
            &["engine.variables.documentSizeMax", "network.maxMessageSize"],
        );
    }

    #[test]
    fn zero_and_out_of_range_caps_are_refused_naming_the_key() {
        for (var, value, needles) in [
            (
                "ZEEBE_BROKER_ENGINE_MESSAGES_TTLMAX",
                "0",
                &["engine.messages.ttlMax", "1..=31536000000 ms"][..],
            ),
            (
                "ZEEBE_BROKER_ENGINE_MESSAGES_TTLMAX",
                "366d",
                &["engine.messages.ttlMax", "31622400000 ms"][..],
            ),
            (
                "ZEEBE_BROKER_ENGINE_VARIABLES_DOCUMENTSIZEMAX",
                "0",
                &["engine.variables.documentSizeMax", "0 bytes", "1024.."][..],
            ),
            (
                "ZEEBE_BROKER_ENGINE_VARIABLES_DOCUMENTSIZEMAX",
                "4",
                &["engine.variables.documentSizeMax", "4 bytes"][..],
            ),
            (
                "ZEEBE_BROKER_ENGINE_VARIABLES_NESTINGMAX",
                "0",
                &["engine.variables.nestingMax", "1..=100 levels"][..],
            ),
            (
                "ZEEBE_BROKER_ENGINE_VARIABLES_NESTINGMAX",
                "101",
                &["engine.variables.nestingMax", "101 levels"][..],
            ),
            (
                "ZEEBE_BROKER_ENGINE_FEEL_VALUESIZEMAX",
                "0",
                &["engine.feel.valueSizeMax", "0 bytes"][..],
            ),
            (
                "ZEEBE_BROKER_ENGINE_FEEL_VALUESIZEMAX",
                "65MB",
                &["engine.feel.valueSizeMax", "67108864 bytes"][..],
            ),
            (
                "ZEEBE_BROKER_ENGINE_FEEL_COLLECTIONITEMSMAX",
                "0",
                &["engine.feel.collectionItemsMax", "1..=10000000 items"][..],
            ),
        ] {
            refused("", &[(var, value)], needles);
        }
        refused(
            "engine: { messages: { ttlMax: soon } }\n",
            &[],
            &["engine.messages.ttlMax", "\"soon\"", "duration"],
        );
        refused(
            "",
            &[("ZEEBE_BROKER_ENGINE_FEEL_COLLECTIONITEMSMAX", "many")],
            &[
                "engine.feel.collectionItemsMax",
                "ZEEBE_BROKER_ENGINE_FEEL_COLLECTIONITEMSMAX",
                "whole number",
            ],
        );
        refused(
            "engine: { variables: { depth: 3 } }\n",
            &[],
            &["engine.variables.depth", "documentSizeMax, nestingMax"],
        );
        // The largest of each is accepted.
        load(
            "",
            &[
                ("ZEEBE_BROKER_ENGINE_MESSAGES_TTLMAX", "365d"),
                ("ZEEBE_BROKER_ENGINE_VARIABLES_DOCUMENTSIZEMAX", "4MB"),
                ("ZEEBE_BROKER_ENGINE_VARIABLES_NESTINGMAX", "100"),
                ("ZEEBE_BROKER_ENGINE_FEEL_VALUESIZEMAX", "64MB"),
                ("ZEEBE_BROKER_ENGINE_FEEL_COLLECTIONITEMSMAX", "10000000"),
            ],
        )
        .expect("every cap at its ceiling");
    }
}
