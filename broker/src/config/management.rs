//! `management`: the HTTP management API on port 9600, and who may change the cluster through it.
//!
//! ```yaml
//! management:
//!   host: 127.0.0.1          # default: network.host
//!   port: 9600               # before network.portOffset
//!   security:
//!     token: null            # or tokenFile; at least 16 printable ASCII characters, no spaces
//!     tokenFile: null        # a file holding the token (one line); read at start-up
//!   faults:
//!     enabled: false         # the test-only fault switch, POST /actuator/faults
//! ```
//!
//! The environment sets them as every other key: `ZEEBE_BROKER_MANAGEMENT_SECURITY_TOKEN`,
//! `ZEEBE_BROKER_MANAGEMENT_SECURITY_TOKENFILE`, `ZEEBE_BROKER_MANAGEMENT_FAULTS_ENABLED`.
//!
//! Reads (`GET`: health, readiness, metrics, cluster and partition views, the dashboard) are open
//! to anyone who reaches the port. Every other request changes the cluster or could, and is
//! served only with `Authorization: Bearer <token>` ([`crate::management`] has the rules):
//!
//! - without a token configured (the default), requests that change the cluster are off: 403
//!   with a message naming these keys;
//! - the fault switch exists only with `faults.enabled: true` (404 otherwise). Enabling it
//!   without a token is refused at start-up, since it could not be used anyway; never enable it
//!   on a production cluster: it cuts a broker off from its peers;
//! - every broker of a cluster must have the same token: a rebalance is fanned out to the other
//!   brokers with the token of the broker that received it;
//! - `token` and `tokenFile` are exclusive. A file keeps the secret out of the configuration
//!   and the process environment; it is at most [`TOKEN_FILE_BYTES_MAX`] bytes, and its
//!   trailing line end is ignored. `sluice dev` writes one per cluster.
//!
//! The token is never written back: [`super::BrokerConfig::to_yaml`] shows [`TOKEN_HIDDEN`] in
//! its place and `Debug` hides it too.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, Field, Leaf, U16, key, section};

/// Shortest management token, in bytes: 16 random characters are beyond guessing over HTTP.
pub const TOKEN_BYTES_MIN: usize = 16;

/// Longest management token, in bytes; a request head is at most 16 KiB.
pub const TOKEN_BYTES_MAX: usize = 1024;

/// Largest `management.security.tokenFile` read: a token and a line end.
pub const TOKEN_FILE_BYTES_MAX: u64 = 4096;

/// What [`super::BrokerConfig::to_yaml`] and `Debug` show instead of a token. Too short to be a
/// token, so a rendered configuration fed back to a broker is refused rather than used.
pub const TOKEN_HIDDEN: &str = "<hidden>";

const KEY_TOKEN: &str = "management.security.token";
const KEY_TOKEN_FILE: &str = "management.security.tokenFile";
const KEY_FAULTS_ENABLED: &str = "management.faults.enabled";

/// `management`: the HTTP management API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ManagementConfig {
    /// `management.host`; `None` takes `network.host`.
    pub host: Option<String>,
    /// `management.port`, before `network.portOffset`. Default 9600.
    pub port: u16,
    /// `management.security`: the token that requests changing the cluster must carry.
    pub security: ManagementSecurityConfig,
    /// `management.faults`: the fault-injection switch of the tests.
    pub faults: ManagementFaultsConfig,
}

impl Default for ManagementConfig {
    fn default() -> Self {
        ManagementConfig {
            host: None,
            port: 9_600,
            security: ManagementSecurityConfig::default(),
            faults: ManagementFaultsConfig::default(),
        }
    }
}

/// `management.security`. `Debug` does not show the token.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ManagementSecurityConfig {
    /// `management.security.token`: the bearer token. Default none: nothing can be changed.
    pub token: Option<String>,
    /// `management.security.tokenFile`: a file holding the token instead.
    pub token_file: Option<PathBuf>,
}

impl std::fmt::Debug for ManagementSecurityConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagementSecurityConfig")
            .field("token", &self.token.as_ref().map(|_| TOKEN_HIDDEN))
            .field("token_file", &self.token_file)
            .finish()
    }
}

/// `management.faults`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ManagementFaultsConfig {
    /// `management.faults.enabled`: serve `POST /actuator/faults`. Default false.
    pub enabled: bool,
}

const MANAGEMENT_SECURITY: &[Field] = &[key("token", Leaf::OptStr), key("tokenFile", Leaf::OptStr)];

const MANAGEMENT_FAULTS: &[Field] = &[key("enabled", Leaf::Bool)];

/// The keys of `management`.
pub(super) const MANAGEMENT: &[Field] = &[
    key("host", Leaf::OptStr),
    key("port", U16),
    section("security", MANAGEMENT_SECURITY),
    section("faults", MANAGEMENT_FAULTS),
];

impl ManagementConfig {
    /// Checks the keys of `management.security` and `management.faults` (the module docs list
    /// the rules); the token file is read by [`ManagementConfig::read_token`] at start-up.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let security = &self.security;
        if security.token.is_some() && security.token_file.is_some() {
            return Err(ConfigError::Invalid {
                key: KEY_TOKEN,
                reason: format!(
                    "and `{KEY_TOKEN_FILE}` are both set; keep one (the file keeps the token out \
                     of the configuration and the environment)"
                ),
            });
        }
        if let Some(token) = &security.token {
            check_token(token).map_err(|reason| ConfigError::Invalid {
                key: KEY_TOKEN,
                reason,
            })?;
        }
        if security
            .token_file
            .as_ref()
            .is_some_and(|path| path.as_os_str().is_empty())
        {
            return Err(ConfigError::Invalid {
                key: KEY_TOKEN_FILE,
                reason: "is empty; set it to the file that holds the management token, or unset \
                         it"
                .to_owned(),
            });
        }
        if self.faults.enabled && security.token.is_none() && security.token_file.is_none() {
            return Err(ConfigError::Invalid {
                key: KEY_FAULTS_ENABLED,
                reason: format!(
                    "is true but no management token is set, so nobody could use the fault \
                     switch; set `{KEY_TOKEN}` or `{KEY_TOKEN_FILE}` (every broker of the \
                     cluster the same), or set `{KEY_FAULTS_ENABLED}: false`"
                ),
            });
        }
        Ok(())
    }

    /// The management token: `management.security.token`, or the content of
    /// `management.security.tokenFile` without its line end, checked as the module docs say;
    /// `None` when neither is set. Call it at start-up: an unreadable file is an error naming
    /// the key and the file.
    pub fn read_token(&self) -> Result<Option<String>, ConfigError> {
        let security = &self.security;
        if let Some(token) = &security.token {
            return Ok(Some(token.clone()));
        }
        let Some(path) = &security.token_file else {
            return Ok(None);
        };
        let fail = |reason: String| ConfigError::Invalid {
            key: KEY_TOKEN_FILE,
            reason: format!("is {}, which {reason}", path.display()),
        };
        let file = std::fs::File::open(path).map_err(|error| {
            fail(format!(
                "cannot be opened ({error}); create it with the token (`sluice dev` writes one) \
                 or fix the path"
            ))
        })?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(file, TOKEN_FILE_BYTES_MAX + 1),
            &mut bytes,
        )
        .map_err(|error| fail(format!("cannot be read ({error}); check its permissions")))?;
        if u64::try_from(bytes.len()).map_or(true, |len| len > TOKEN_FILE_BYTES_MAX) {
            return Err(fail(format!(
                "is larger than {TOKEN_FILE_BYTES_MAX} bytes; it must hold the token alone"
            )));
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| fail("is not text; it must hold the token alone".to_owned()))?;
        let token = text.strip_suffix('\n').unwrap_or(&text);
        let token = token.strip_suffix('\r').unwrap_or(token);
        check_token(token).map_err(|reason| fail(format!("holds a token that {reason}")))?;
        Ok(Some(token.to_owned()))
    }

    /// A copy safe to show: the token replaced by [`TOKEN_HIDDEN`].
    #[must_use]
    pub(super) fn hidden(&self) -> ManagementConfig {
        let mut shown = self.clone();
        if shown.security.token.is_some() {
            shown.security.token = Some(TOKEN_HIDDEN.to_owned());
        }
        shown
    }
}

/// Why `token` cannot be a management token; the message never quotes it.
fn check_token(token: &str) -> Result<(), String> {
    if token.len() < TOKEN_BYTES_MIN || token.len() > TOKEN_BYTES_MAX {
        return Err(format!(
            "is {} bytes long; a token is {TOKEN_BYTES_MIN} to {TOKEN_BYTES_MAX} printable ASCII \
             characters (e.g. `openssl rand -hex 32`)",
            token.len()
        ));
    }
    if let Some(at) = token.bytes().position(|byte| !byte.is_ascii_graphic()) {
        return Err(format!(
            "has a space, control or non-ASCII character at byte {at}; a token is printable \
             ASCII without spaces (e.g. `openssl rand -hex 32`)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::BrokerConfig;
    use super::*;

    const TOKEN: &str = "0123456789abcdef-token";

    fn load(yaml: &str, vars: &[(&str, &str)]) -> Result<BrokerConfig, ConfigError> {
        let env: Vec<(String, String)> = vars
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        BrokerConfig::from_yaml_str(yaml, &env)
    }

    fn refused(yaml: &str, vars: &[(&str, &str)], needles: &[&str]) -> String {
        let message = load(yaml, vars)
            .expect_err("an invalid configuration")
            .to_string();
        for needle in needles {
            assert!(message.contains(needle), "{needle:?} missing in: {message}");
        }
        message
    }

    fn temp_file(name: &str, content: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sluice-management-config-{}-{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let path = dir.join("token");
        std::fs::write(&path, content).expect("writing the token file");
        path
    }

    #[test]
    fn by_default_nothing_can_be_changed_and_the_fault_switch_is_off() {
        let config = load("", &[]).expect("the defaults are valid");
        assert_eq!(config.management.security.token, None);
        assert_eq!(config.management.security.token_file, None);
        assert!(!config.management.faults.enabled);
        assert_eq!(
            config.management.read_token().expect("no file to read"),
            None
        );
    }

    #[test]
    fn the_keys_come_from_the_file_and_the_environment() {
        let yaml = format!(
            "management: {{ security: {{ token: {TOKEN} }}, faults: {{ enabled: true }} }}\n"
        );
        let config = load(&yaml, &[]).expect("valid");
        assert_eq!(config.management.security.token.as_deref(), Some(TOKEN));
        assert!(config.management.faults.enabled);
        assert_eq!(
            config.management.read_token().expect("inline"),
            Some(TOKEN.to_owned())
        );
        let config = load(
            "",
            &[
                (
                    "ZEEBE_BROKER_MANAGEMENT_SECURITY_TOKENFILE",
                    "/run/secrets/sluice",
                ),
                ("ZEEBE_BROKER_MANAGEMENT_FAULTS_ENABLED", "true"),
            ],
        )
        .expect("valid");
        assert_eq!(
            config.management.security.token_file,
            Some(PathBuf::from("/run/secrets/sluice"))
        );
        assert!(config.management.faults.enabled);
        // An empty variable unsets the file's token.
        let config = load(
            &yaml,
            &[
                ("ZEEBE_BROKER_MANAGEMENT_SECURITY_TOKEN", ""),
                ("ZEEBE_BROKER_MANAGEMENT_FAULTS_ENABLED", "false"),
            ],
        )
        .expect("valid");
        assert_eq!(config.management.security.token, None);
    }

    #[test]
    fn a_token_must_be_long_and_printable_and_is_never_quoted() {
        for (token, needle) in [
            ("short", "5 bytes long"),
            ("with a space inside it", "at byte 4"),
            ("0123456789abcdéf", "non-ASCII"),
        ] {
            let message = refused(
                "",
                &[("ZEEBE_BROKER_MANAGEMENT_SECURITY_TOKEN", token)],
                &[KEY_TOKEN, needle, "openssl rand"],
            );
            assert!(!message.contains(token), "the token is quoted: {message}");
        }
        let long = "x".repeat(TOKEN_BYTES_MAX + 1);
        refused(
            &format!("management: {{ security: {{ token: {long} }} }}\n"),
            &[],
            &[KEY_TOKEN, "1025 bytes"],
        );
        load(
            &format!(
                "management: {{ security: {{ token: '{}' }} }}\n",
                "~".repeat(16)
            ),
            &[],
        )
        .expect("16 printable characters are a token");
    }

    #[test]
    fn token_and_token_file_are_exclusive() {
        refused(
            &format!("management: {{ security: {{ token: {TOKEN}, tokenFile: /a/b }} }}\n"),
            &[],
            &[KEY_TOKEN, KEY_TOKEN_FILE, "keep one"],
        );
    }

    #[test]
    fn the_fault_switch_needs_a_token() {
        refused(
            "management: { faults: { enabled: true } }\n",
            &[],
            &[KEY_FAULTS_ENABLED, KEY_TOKEN, KEY_TOKEN_FILE, "false"],
        );
        load(
            "management: { faults: { enabled: true }, security: { tokenFile: /a } }\n",
            &[],
        )
        .expect("a token file counts");
    }

    #[test]
    fn a_token_file_is_read_without_its_line_end_and_checked() {
        let config = |path: &std::path::Path| ManagementConfig {
            security: ManagementSecurityConfig {
                token: None,
                token_file: Some(path.to_owned()),
            },
            ..ManagementConfig::default()
        };
        let path = temp_file("good", format!("{TOKEN}\r\n").as_bytes());
        assert_eq!(
            config(&path).read_token().expect("a good file"),
            Some(TOKEN.to_owned())
        );
        for (name, content, needle) in [
            ("short", &b"abc\n"[..], "3 bytes long"),
            ("two-lines", b"0123456789abcdef\nmore\n", "at byte 16"),
            ("binary", b"\xff\xfe0123456789abcdef", "not text"),
        ] {
            let path = temp_file(name, content);
            let message = config(&path)
                .read_token()
                .expect_err("a bad file")
                .to_string();
            for needle in [KEY_TOKEN_FILE, needle, &path.display().to_string()] {
                assert!(message.contains(needle), "{needle:?} missing in: {message}");
            }
        }
        let big = vec![b'a'; usize::try_from(TOKEN_FILE_BYTES_MAX).expect("small") + 1];
        let message = config(&temp_file("big", &big))
            .read_token()
            .expect_err("too large")
            .to_string();
        assert!(message.contains("larger than 4096 bytes"), "{message}");
        let missing = std::env::temp_dir().join("sluice-no-such-dir/token");
        let message = config(&missing)
            .read_token()
            .expect_err("missing")
            .to_string();
        assert!(
            message.contains("cannot be opened") && message.contains("sluice dev"),
            "{message}"
        );
    }

    #[test]
    fn the_token_is_hidden_from_to_yaml_and_debug() {
        let yaml = format!("management: {{ security: {{ token: {TOKEN} }} }}\n");
        let config = load(&yaml, &[]).expect("valid");
        let shown = config.to_yaml();
        assert!(!shown.contains(TOKEN), "{shown}");
        assert!(shown.contains(TOKEN_HIDDEN), "{shown}");
        let debug = format!("{config:?}");
        assert!(!debug.contains(TOKEN), "{debug}");
        // Fed back, the placeholder is refused rather than taken as the token.
        refused(&shown, &[], &[KEY_TOKEN, "bytes long"]);
    }
}
