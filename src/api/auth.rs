//! API authentication and request limits.
//!
//! Bearer tokens are configured as SHA-256 hashes with scopes `read`,
//! `submit` and `admin` (admin implies the others); a presented token is
//! hashed and compared with every configured hash in constant time. Each
//! route declares its [`Access`] in the route table (`api::table`);
//! `/health` and `/health/ready` are always open, `/metrics` and
//! `/health/info` as configured. Tokens never reach logs or
//! responses. Per-token rate limits use a token bucket (twice the rate).

use std::sync::Mutex;
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::config::AuthConfig;

/// What calling a route needs; each route declares one in the route table
/// (`api::access`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Always open (`/health`, `/health/ready`).
    Open,
    /// A token with this scope (when auth is on).
    Scope(Scope),
    /// `read`, when `auth.protect_metrics` is set.
    Metrics,
    /// `read`, when `auth.protect_info` is set.
    Info,
}

/// A token's right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Read,
    Submit,
    Admin,
}

impl Scope {
    fn parse(s: &str) -> Option<Scope> {
        match s {
            "read" => Some(Scope::Read),
            "submit" => Some(Scope::Submit),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Submit => "submit",
            Scope::Admin => "admin",
        }
    }
}

struct Token {
    name: String,
    hash: [u8; 32],
    scopes: Vec<Scope>,
    /// Rate-limit bucket: (level, last refill).
    bucket: Mutex<(f64, Instant)>,
}

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No or unknown token (401).
    Unauthorized(String),
    /// A known token without the scope (403).
    Forbidden(String),
    /// Over the token's rate (429).
    RateLimited(String),
}

/// The node's authenticator.
pub struct Auth {
    enabled: bool,
    protect_metrics: bool,
    protect_info: bool,
    tokens: Vec<Token>,
    rate_per_s: f64,
}

/// Lower-case hex SHA-256 of a token, as the tokens file stores it.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
    }
    Some(out)
}

/// Equal in constant time for equal lengths.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Auth {
    pub fn new(cfg: &AuthConfig, rate_per_s: u64) -> Auth {
        Auth {
            enabled: cfg.enabled,
            protect_metrics: cfg.protect_metrics,
            protect_info: cfg.protect_info,
            tokens: cfg
                .tokens
                .iter()
                .filter_map(|t| {
                    Some(Token {
                        name: t.name.clone(),
                        hash: unhex(&t.sha256)?,
                        scopes: t.scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
                        bucket: Mutex::new((rate_per_s as f64 * 2.0, Instant::now())),
                    })
                })
                .collect(),
            rate_per_s: rate_per_s as f64,
        }
    }

    /// The scope a route's access needs on this node, or None when open.
    pub fn required(&self, access: Access) -> Option<Scope> {
        if !self.enabled {
            return None;
        }
        match access {
            Access::Open => None,
            Access::Scope(s) => Some(s),
            Access::Metrics => self.protect_metrics.then_some(Scope::Read),
            Access::Info => self.protect_info.then_some(Scope::Read),
        }
    }

    /// Checks an `Authorization` header value against `scope`. The scheme
    /// name is case-insensitive (RFC 9110), the token is not.
    pub fn check(&self, header: Option<&str>, scope: Scope) -> Result<(), Denied> {
        let t = self.token(header)?;
        if !(t.scopes.contains(&scope) || t.scopes.contains(&Scope::Admin)) {
            return Err(Denied::Forbidden(format!(
                "token `{}` lacks the `{}` scope this call needs",
                t.name,
                scope.as_str()
            )));
        }
        self.take(t)
    }

    /// The configured token an `Authorization` header presents.
    fn token(&self, header: Option<&str>) -> Result<&Token, Denied> {
        let presented = header
            .and_then(bearer_credentials)
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Denied::Unauthorized("missing bearer token (Authorization: Bearer <token>)".into())
            })?;
        let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Compare with every token, so timing does not tell which matched.
        let mut found: Option<&Token> = None;
        for t in &self.tokens {
            if ct_eq(&t.hash, &hash) {
                found = Some(t);
            }
        }
        found.ok_or_else(|| Denied::Unauthorized("unknown bearer token".into()))
    }

    /// What a caller may do: (auth on, the token's name, its scopes), admin
    /// expanded to all three. Auth off: every scope and no name. An unknown
    /// token gets no scope (the guard refused it before any route ran).
    pub fn who(&self, header: Option<&str>) -> (bool, Option<String>, Vec<Scope>) {
        let all = vec![Scope::Read, Scope::Submit, Scope::Admin];
        if !self.enabled {
            return (false, None, all);
        }
        let found = self.token(header).ok();
        match found {
            None => (true, None, Vec::new()),
            Some(t) if t.scopes.contains(&Scope::Admin) => (true, Some(t.name.clone()), all),
            Some(t) => (
                true,
                Some(t.name.clone()),
                all.into_iter().filter(|s| t.scopes.contains(s)).collect(),
            ),
        }
    }

    fn take(&self, t: &Token) -> Result<(), Denied> {
        let mut b = t.bucket.lock().expect("bucket lock");
        let cap = self.rate_per_s * 2.0;
        let now = Instant::now();
        let (level, at) = &mut *b;
        *level = (*level + now.duration_since(*at).as_secs_f64() * self.rate_per_s).min(cap);
        *at = now;
        if *level < 1.0 {
            return Err(Denied::RateLimited(format!(
                "token `{}` is over its rate of {} requests/s (limits.per_token_rate_per_s)",
                t.name, self.rate_per_s
            )));
        }
        *level -= 1.0;
        Ok(())
    }
}

/// The credentials of an `Authorization: Bearer <token>` value, the scheme
/// matched without regard to case.
fn bearer_credentials(h: &str) -> Option<&str> {
    let (scheme, rest) = h.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(rest)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::TokenSpec;

    /// What a call with `header` to a route needing `access` gets.
    pub(crate) fn check(a: &Auth, access: Access, header: Option<&str>) -> &'static str {
        match a.required(access) {
            None => "open",
            Some(scope) => match a.check(header, scope) {
                Ok(_) => "ok",
                Err(Denied::Unauthorized(_)) => "401",
                Err(Denied::Forbidden(_)) => "403",
                Err(Denied::RateLimited(_)) => "429",
            },
        }
    }

    pub(crate) fn auth(rate: u64) -> Auth {
        let tok = |name: &str, secret: &str, scopes: &[&str]| TokenSpec {
            name: name.into(),
            sha256: hash_token(secret),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
        };
        Auth::new(
            &AuthConfig {
                enabled: true,
                tokens: vec![
                    tok("reader", "r-secret", &["read"]),
                    tok("writer", "w-secret", &["read", "submit"]),
                    tok("ops", "a-secret", &["admin"]),
                ],
                ..AuthConfig::default()
            },
            rate,
        )
    }

    #[test]
    fn token_by_scope_table() {
        let a = auth(1000);
        // (access, token, expected: open / ok / 401 / 403); the route of
        // each access is tested in api::table.
        let read = Access::Scope(Scope::Read);
        let submit = Access::Scope(Scope::Submit);
        let admin = Access::Scope(Scope::Admin);
        let cases = [
            (Access::Open, None, "open"),
            (Access::Metrics, None, "open"),
            (Access::Info, None, "open"),
            (read, None, "401"),
            (read, Some("Bearer nope"), "401"),
            (read, Some("Basic r-secret"), "401"),
            (read, Some("Bearer r-secret"), "ok"),
            (read, Some("bearer r-secret"), "ok"),
            (read, Some("BEARER r-secret"), "ok"),
            (read, Some("Bearer R-SECRET"), "401"),
            (submit, Some("Bearer r-secret"), "403"),
            (submit, Some("Bearer w-secret"), "ok"),
            (admin, Some("Bearer w-secret"), "403"),
            (admin, Some("Bearer a-secret"), "ok"),
            (read, Some("Bearer a-secret"), "ok"),
        ];
        for (access, header, want) in cases {
            assert_eq!(check(&a, access, header), want, "{access:?} {header:?}");
        }
    }

    #[test]
    fn whoami_names_the_token_and_expands_admin() {
        let a = auth(1000);
        let names = |h: Option<&str>| {
            let (on, name, scopes) = a.who(h);
            let s: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
            (on, name, s.join(","))
        };
        assert_eq!(
            names(Some("Bearer r-secret")),
            (true, Some("reader".into()), "read".into())
        );
        assert_eq!(
            names(Some("Bearer w-secret")),
            (true, Some("writer".into()), "read,submit".into())
        );
        assert_eq!(
            names(Some("Bearer a-secret")),
            (true, Some("ops".into()), "read,submit,admin".into())
        );
        assert_eq!(names(Some("Bearer nope")), (true, None, "".into()));
        let off = Auth::new(
            &AuthConfig {
                enabled: false,
                ..AuthConfig::default()
            },
            10,
        );
        let (on, name, scopes) = off.who(None);
        assert_eq!((on, name, scopes.len()), (false, None, 3));
    }

    #[test]
    fn rate_limit_per_token() {
        let a = auth(5);
        let ok = (0..30)
            .filter(|_| a.check(Some("Bearer r-secret"), Scope::Read).is_ok())
            .count();
        assert!((10..=11).contains(&ok), "{ok} allowed from a bucket of 10");
        // Another token has its own bucket.
        assert!(a.check(Some("Bearer w-secret"), Scope::Read).is_ok());
    }

    #[test]
    fn disabled_auth_opens_everything_and_hashes_are_hex() {
        let a = Auth::new(
            &AuthConfig {
                enabled: false,
                ..AuthConfig::default()
            },
            10,
        );
        assert_eq!(a.required(Access::Scope(Scope::Admin)), None);
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
