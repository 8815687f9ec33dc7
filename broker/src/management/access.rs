//! Who may change the cluster through the management API: one pure decision per request.
//!
//! [`Access::check`] takes a request's method, path and headers and returns a [`Verdict`];
//! anything but [`Verdict::Allow`] is answered by [`Verdict::refusal`] before any handler runs,
//! so a refused request changes nothing. The rules, in order:
//!
//! 1. `/actuator/faults` (any method) is 404 unless `management.faults.enabled` is set: the
//!    fault switch does not exist on a broker that did not ask for it.
//! 2. `GET` and `HEAD` are allowed: health, readiness, metrics, the cluster views and the
//!    dashboard are open to whoever reaches the port. The answers carry no CORS header, so a
//!    page on another site cannot read them.
//! 3. Every other method may change something, so:
//!    - without a configured token, 403: changes are off (the message names the keys);
//!    - a request a browser could send from another site without a CORS preflight is 403,
//!      token or not: an `Origin` that is not this very host (`http://` + the `Host` header),
//!      a `Sec-Fetch-Site` other than `same-origin` or `none`, or a form's content type
//!      (`application/x-www-form-urlencoded`, `multipart/form-data`, `text/plain`): send no
//!      body, or JSON;
//!    - without `Authorization: Bearer <token>`, or with another token (compared in constant
//!      time), 401 with `WWW-Authenticate: Bearer`.
//!
//! A browser adds `Authorization` to a cross-site request only after a preflight, which this
//! server never grants (it answers `OPTIONS` like any other change: refused), and it never
//! remembers a bearer token the way it remembers cookies or basic credentials: so no web page
//! an operator opens can change the cluster, even one served from a name that resolves to the
//! broker (DNS rebinding), since it cannot know the token.

use subtle::ConstantTimeEq as _;

use crate::config::{ConfigError, ManagementConfig};
use crate::http::HttpResponse;

/// The path of the fault switch.
pub const FAULTS_PATH: &str = "/actuator/faults";

/// `WWW-Authenticate` of a 401.
const CHALLENGE: &str = "Bearer realm=\"sluice-management\"";

/// Content types a browser form (or a script without preflight) can send cross-site.
const FORM_CONTENT_TYPES: [&str; 3] = [
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "text/plain",
];

/// What may change the cluster on this broker: its token and whether the fault switch exists.
#[derive(Clone, PartialEq, Eq)]
pub struct Access {
    token: Option<String>,
    faults_enabled: bool,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .field("faults_enabled", &self.faults_enabled)
            .finish()
    }
}

/// The decision on one request; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it.
    Allow,
    /// 404: the fault switch is not enabled.
    FaultsOff,
    /// 403: no token is configured, so nothing may change.
    ChangesOff,
    /// 403: it may come from a web page on another site.
    CrossSite(CrossSite),
    /// 401: no `Authorization: Bearer` header.
    MissingToken,
    /// 401: a token that is not this broker's (or more than one `Authorization` header).
    WrongToken,
}

/// Which sign of a cross-site browser request was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrossSite {
    /// An `Origin` header that is not `http://` + the `Host` header.
    Origin,
    /// A `Sec-Fetch-Site` header other than `same-origin` or `none`.
    FetchSite,
    /// A content type a form can send.
    FormContentType,
}

impl Verdict {
    /// Every refusal, in the order [`Verdict::label`] counts them.
    pub const REFUSALS: [Verdict; 7] = [
        Verdict::FaultsOff,
        Verdict::ChangesOff,
        Verdict::CrossSite(CrossSite::Origin),
        Verdict::CrossSite(CrossSite::FetchSite),
        Verdict::CrossSite(CrossSite::FormContentType),
        Verdict::MissingToken,
        Verdict::WrongToken,
    ];

    /// The status this verdict is answered with (200 for [`Verdict::Allow`]: the handler's).
    #[must_use]
    pub fn status(self) -> u16 {
        match self {
            Verdict::Allow => 200,
            Verdict::FaultsOff => 404,
            Verdict::ChangesOff | Verdict::CrossSite(_) => 403,
            Verdict::MissingToken | Verdict::WrongToken => 401,
        }
    }

    /// A short name for metrics: `faults_off`, `changes_off`, `cross_site_origin`, ...
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::FaultsOff => "faults_off",
            Verdict::ChangesOff => "changes_off",
            Verdict::CrossSite(CrossSite::Origin) => "cross_site_origin",
            Verdict::CrossSite(CrossSite::FetchSite) => "cross_site_fetch",
            Verdict::CrossSite(CrossSite::FormContentType) => "form_content_type",
            Verdict::MissingToken => "missing_token",
            Verdict::WrongToken => "wrong_token",
        }
    }

    /// The answer to a refused request, saying what to do; `None` for [`Verdict::Allow`].
    #[must_use]
    pub fn refusal(self) -> Option<HttpResponse> {
        let status = self.status();
        let message = match self {
            Verdict::Allow => return None,
            Verdict::FaultsOff => {
                "the fault switch is off on this broker: it exists only with \
                 management.faults.enabled: true (ZEEBE_BROKER_MANAGEMENT_FAULTS_ENABLED=true) and \
                 a management token; it cuts brokers off from each other, so enable it for tests \
                 only\n"
            }
            Verdict::ChangesOff => {
                "changing the cluster through the management API is off on this broker: no \
                 token is configured. Set management.security.token or management.security.\
                 tokenFile (ZEEBE_BROKER_MANAGEMENT_SECURITY_TOKEN or _TOKENFILE; 16 to 1024 \
                 printable characters, the same on every broker), restart it, and send \
                 `Authorization: Bearer <token>`\n"
            }
            Verdict::CrossSite(CrossSite::Origin) => {
                "refused: the Origin header names another site than this broker, so a web page \
                 may have sent this; send the request from a shell (curl -X POST -H \
                 'Authorization: Bearer <token>' ...) without an Origin header\n"
            }
            Verdict::CrossSite(CrossSite::FetchSite) => {
                "refused: Sec-Fetch-Site says a page on another site sent this; send the \
                 request from a shell (curl -X POST -H 'Authorization: Bearer <token>' ...)\n"
            }
            Verdict::CrossSite(CrossSite::FormContentType) => {
                "refused: a form's content type (application/x-www-form-urlencoded, \
                 multipart/form-data or text/plain), which any web page can send; send no body \
                 (curl -X POST rather than curl -d) or a JSON one\n"
            }
            Verdict::MissingToken => {
                "this request changes the cluster and needs `Authorization: Bearer <token>` \
                 with the broker's management token (management.security.token or the file \
                 management.security.tokenFile names; `sluice dev` prints it)\n"
            }
            Verdict::WrongToken => {
                "the token in `Authorization: Bearer <token>` is not this broker's management \
                 token (management.security.token or the file management.security.tokenFile \
                 names); send exactly one Authorization header with it\n"
            }
        };
        let response = HttpResponse::text(status, message);
        Some(match self {
            Verdict::MissingToken => response.with_header("WWW-Authenticate", CHALLENGE),
            Verdict::WrongToken => response.with_header(
                "WWW-Authenticate",
                format!("{CHALLENGE}, error=\"invalid_token\""),
            ),
            _ => response,
        })
    }
}

impl Access {
    /// `token` (checked by the configuration) and whether the fault switch exists.
    #[must_use]
    pub fn new(token: Option<String>, faults_enabled: bool) -> Access {
        Access {
            token,
            faults_enabled,
        }
    }

    /// From `management`, reading the token file if one is named (an error names the key).
    pub fn from_config(config: &ManagementConfig) -> Result<Access, ConfigError> {
        Ok(Access::new(config.read_token()?, config.faults.enabled))
    }

    /// The token, for requests this broker sends to its peers (a fanned-out rebalance).
    #[must_use]
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Whether `POST /actuator/faults` is served.
    #[must_use]
    pub fn faults_enabled(&self) -> bool {
        self.faults_enabled
    }

    /// The decision on a request; see the module docs. `headers` as [`crate::http`] gives
    /// them: names lower-cased, values trimmed.
    #[must_use]
    pub fn check(&self, method: &str, path: &str, headers: &[(String, String)]) -> Verdict {
        if path == FAULTS_PATH && !self.faults_enabled {
            return Verdict::FaultsOff;
        }
        if matches!(method, "GET" | "HEAD") {
            return Verdict::Allow;
        }
        let Some(expected) = &self.token else {
            return Verdict::ChangesOff;
        };
        if let Some(sign) = cross_site(headers) {
            return Verdict::CrossSite(sign);
        }
        let mut authorizations = headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("authorization"));
        let Some((_, authorization)) = authorizations.next() else {
            return Verdict::MissingToken;
        };
        if authorizations.next().is_some() {
            return Verdict::WrongToken;
        }
        match bearer_token(authorization) {
            Some(given) if token_matches(given.as_bytes(), expected.as_bytes()) => Verdict::Allow,
            _ => Verdict::WrongToken,
        }
    }
}

/// The first sign that a browser sent the request from another site, if any.
fn cross_site(headers: &[(String, String)]) -> Option<CrossSite> {
    let header = |wanted: &str| {
        headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
            .map(|(_, value)| value.trim())
    };
    if let Some(origin) = header("origin") {
        let host = header("host").unwrap_or("");
        let same = strip_prefix_ignore_case(origin, "http://")
            .or_else(|| strip_prefix_ignore_case(origin, "https://"))
            .is_some_and(|authority| !host.is_empty() && authority.eq_ignore_ascii_case(host));
        if !same {
            return Some(CrossSite::Origin);
        }
    }
    if let Some(site) = header("sec-fetch-site")
        && !site.eq_ignore_ascii_case("same-origin")
        && !site.eq_ignore_ascii_case("none")
    {
        return Some(CrossSite::FetchSite);
    }
    if let Some(content_type) = header("content-type") {
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        if FORM_CONTENT_TYPES
            .iter()
            .any(|form| media_type.eq_ignore_ascii_case(form))
        {
            return Some(CrossSite::FormContentType);
        }
    }
    None
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// The token of an `Authorization: Bearer <token>` value (scheme case-insensitive).
fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// Whether `given` is `expected`, in time that depends on `expected`'s length only.
fn token_matches(given: &[u8], expected: &[u8]) -> bool {
    let mut padded = vec![0u8; expected.len()];
    let common = given.len().min(expected.len());
    padded[..common].copy_from_slice(&given[..common]);
    let same_length = (given.len() as u64).ct_eq(&(expected.len() as u64));
    bool::from(padded.ct_eq(expected) & same_length)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "s3cret-token-0123456789";
    const HOST: &str = "127.0.0.1:9600";

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), (*value).to_owned()))
            .collect()
    }

    fn bearer() -> String {
        format!("Bearer {TOKEN}")
    }

    fn with_token() -> Access {
        Access::new(Some(TOKEN.to_owned()), false)
    }

    fn with_faults() -> Access {
        Access::new(Some(TOKEN.to_owned()), true)
    }

    #[test]
    fn reads_are_open_whatever_the_configuration() {
        for access in [Access::new(None, false), with_token(), with_faults()] {
            for path in [
                "/",
                "/dashboard",
                "/health",
                "/ready",
                "/metrics",
                "/actuator/cluster",
                "/actuator/partitions",
                "/actuator/rebalance",
                "/nothing",
            ] {
                for method in ["GET", "HEAD"] {
                    // Even from another site: a read changes nothing and its answer is unreadable
                    // there (no CORS header).
                    let sent = headers(&[("Host", HOST), ("Origin", "http://evil.example")]);
                    assert_eq!(access.check(method, path, &sent), Verdict::Allow, "{path}");
                    assert_eq!(access.check(method, path, &[]), Verdict::Allow, "{path}");
                }
            }
        }
    }

    #[test]
    fn the_fault_switch_exists_only_when_enabled() {
        let authorized = headers(&[("Host", HOST), ("Authorization", &bearer())]);
        for access in [Access::new(None, false), with_token()] {
            for method in ["GET", "POST", "PUT", "OPTIONS"] {
                let verdict = access.check(method, FAULTS_PATH, &authorized);
                assert_eq!(verdict, Verdict::FaultsOff, "{method}");
                let response = verdict.refusal().expect("refused");
                assert_eq!(response.status, 404);
                let body = String::from_utf8(response.body).expect("text");
                assert!(body.contains("management.faults.enabled"), "{body}");
                assert!(
                    body.contains("ZEEBE_BROKER_MANAGEMENT_FAULTS_ENABLED"),
                    "{body}"
                );
            }
        }
        let access = with_faults();
        assert_eq!(
            access.check("POST", FAULTS_PATH, &authorized),
            Verdict::Allow
        );
        assert_eq!(
            access.check("POST", FAULTS_PATH, &headers(&[("Host", HOST)])),
            Verdict::MissingToken
        );
    }

    #[test]
    fn without_a_token_nothing_changes() {
        let access = Access::new(None, false);
        for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
            for sent in [
                headers(&[]),
                headers(&[("Authorization", &bearer())]),
                headers(&[("Authorization", "Bearer ")]),
            ] {
                let verdict = access.check(method, "/actuator/rebalance", &sent);
                assert_eq!(verdict, Verdict::ChangesOff, "{method} {sent:?}");
            }
        }
        let response = Verdict::ChangesOff.refusal().expect("refused");
        assert_eq!(response.status, 403);
        let body = String::from_utf8(response.body).expect("text");
        for needle in [
            "management.security.token",
            "tokenFile",
            "ZEEBE_BROKER_MANAGEMENT_SECURITY_TOKEN",
            "Authorization: Bearer",
        ] {
            assert!(body.contains(needle), "{needle:?} missing in {body}");
        }
    }

    #[test]
    fn the_right_bearer_token_allows_a_change() {
        let access = with_token();
        for authorization in [
            bearer(),
            format!("bearer {TOKEN}"),
            format!("BEARER   {TOKEN} "),
        ] {
            for sent in [
                headers(&[("Authorization", &authorization)]),
                headers(&[("Host", HOST), ("Authorization", &authorization)]),
                // The broker's own page, or a tool that says where it comes from.
                headers(&[
                    ("Host", HOST),
                    ("Origin", "http://127.0.0.1:9600"),
                    ("Sec-Fetch-Site", "same-origin"),
                    ("Content-Type", "application/json"),
                    ("Authorization", &authorization),
                ]),
                headers(&[
                    ("Sec-Fetch-Site", "none"),
                    ("Authorization", &authorization),
                ]),
            ] {
                assert_eq!(
                    access.check("POST", "/actuator/rebalance", &sent),
                    Verdict::Allow,
                    "{sent:?}"
                );
            }
        }
    }

    #[test]
    fn a_missing_or_wrong_token_is_401_with_a_challenge() {
        let access = with_token();
        let verdict = access.check("POST", "/actuator/rebalance", &headers(&[("Host", HOST)]));
        assert_eq!(verdict, Verdict::MissingToken);
        let response = verdict.refusal().expect("refused");
        assert_eq!(response.status, 401);
        assert_eq!(
            response.headers,
            [(
                "WWW-Authenticate".to_owned(),
                "Bearer realm=\"sluice-management\"".to_owned()
            )]
        );
        let wrong_tokens = [
            "Bearer wrong-token-0123456789".to_owned(),
            format!("Bearer {TOKEN}x"),
            format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]),
            format!("Bearer {}", TOKEN.to_uppercase()),
            format!("Basic {TOKEN}"),
            TOKEN.to_owned(),
            "Bearer".to_owned(),
            "Bearer ".to_owned(),
            String::new(),
        ];
        for authorization in &wrong_tokens {
            let sent = headers(&[("Authorization", authorization)]);
            assert_eq!(
                access.check("POST", "/actuator/rebalance", &sent),
                Verdict::WrongToken,
                "{authorization:?}"
            );
        }
        // Two Authorization headers, one of them right: refused.
        let sent = headers(&[
            ("Authorization", "Bearer wrong-token-0123456789"),
            ("Authorization", &bearer()),
        ]);
        assert_eq!(
            access.check("POST", "/actuator/rebalance", &sent),
            Verdict::WrongToken
        );
        let response = Verdict::WrongToken.refusal().expect("refused");
        assert_eq!(response.status, 401);
        assert!(response.headers[0].1.contains("invalid_token"));
        // Every other method is a change too.
        for method in ["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"] {
            assert_eq!(
                access.check(method, "/health", &[]),
                Verdict::MissingToken,
                "{method}"
            );
        }
    }

    /// Request headers as written.
    type Headers = &'static [(&'static str, &'static str)];

    /// Requests a page on another site can make a browser send without a preflight, each with
    /// the sign that gives it away; `true` when it also carries the right token.
    const CROSS_SITE: [(Headers, bool, CrossSite); 10] = [
        // A form posted from another site: its content type, its Origin, no token.
        (
            &[
                ("Host", HOST),
                ("Origin", "http://evil.example"),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            false,
            CrossSite::Origin,
        ),
        // Even with the token (a browser would have asked first): another Origin.
        (
            &[("Host", HOST), ("Origin", "http://evil.example:9600")],
            true,
            CrossSite::Origin,
        ),
        (
            &[("Host", HOST), ("Origin", "null")],
            true,
            CrossSite::Origin,
        ),
        (
            &[("Origin", "http://127.0.0.1:9600")],
            true,
            CrossSite::Origin,
        ),
        (
            &[("Host", HOST), ("Origin", "http://127.0.0.1:9610")],
            true,
            CrossSite::Origin,
        ),
        (
            &[("Sec-Fetch-Site", "cross-site")],
            true,
            CrossSite::FetchSite,
        ),
        (
            &[("Sec-Fetch-Site", "same-site")],
            true,
            CrossSite::FetchSite,
        ),
        (
            &[("Content-Type", "text/plain;charset=UTF-8")],
            true,
            CrossSite::FormContentType,
        ),
        (
            &[("Content-Type", "Multipart/Form-Data; boundary=x")],
            true,
            CrossSite::FormContentType,
        ),
        (
            &[("Content-Type", "application/x-www-form-urlencoded")],
            true,
            CrossSite::FormContentType,
        ),
    ];

    #[test]
    fn what_a_page_on_another_site_can_send_never_changes_anything() {
        let access = with_token();
        let bearer = bearer();
        for (pairs, with_bearer, sign) in CROSS_SITE {
            let mut sent = headers(pairs);
            if with_bearer {
                sent.push(("authorization".to_owned(), bearer.clone()));
            }
            for path in ["/actuator/rebalance", "/anything"] {
                let verdict = access.check("POST", path, &sent);
                assert_eq!(verdict, Verdict::CrossSite(sign), "{sent:?}");
                assert_eq!(verdict.refusal().expect("refused").status, 403);
            }
        }
        // The fault switch refuses the same way once it exists.
        let sent = headers(&[
            ("Origin", "http://evil.example"),
            ("Authorization", &bearer),
        ]);
        assert_eq!(
            with_faults().check("POST", FAULTS_PATH, &sent),
            Verdict::CrossSite(CrossSite::Origin)
        );
    }

    #[test]
    fn every_refusal_has_a_distinct_label_and_a_message() {
        let mut labels: Vec<&str> = Verdict::REFUSALS.iter().map(|v| v.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), Verdict::REFUSALS.len());
        for verdict in Verdict::REFUSALS {
            let response = verdict.refusal().expect("a refusal");
            assert_eq!(response.status, verdict.status());
            assert!(response.body.len() > 40, "{verdict:?}");
        }
        assert!(Verdict::Allow.refusal().is_none());
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(token_matches(b"abcdefghijklmnop", b"abcdefghijklmnop"));
        assert!(!token_matches(b"abcdefghijklmno", b"abcdefghijklmnop"));
        assert!(!token_matches(b"abcdefghijklmnopq", b"abcdefghijklmnop"));
        assert!(!token_matches(b"abcdefghijklmnoP", b"abcdefghijklmnop"));
        assert!(!token_matches(b"", b"abcdefghijklmnop"));
        // A prefix padded with zeros is not the token.
        assert!(!token_matches(b"abc", b"abc\0"));
    }

    #[test]
    fn debug_hides_the_token() {
        let shown = format!("{:?}", with_token());
        assert!(!shown.contains(TOKEN), "{shown}");
    }
}
