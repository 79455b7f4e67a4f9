//! Who may use the HTTP API (and the Kafka API): bearer tokens with scopes.
//!
//! `api.auth.tokens_file` lists the tokens, one per line, as the SHA-256 of the
//! token, never the token itself:
//!
//! ```text
//! # name   scopes          sha256 of the token
//! grafana  read            sha256:5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8
//! etl      read,commit     sha256:…
//! ```
//! `tributary token add` writes such a line and prints the token once. Scopes:
//! `read` (topics, records, queries, committed offsets), `commit` (consumer-group
//! offsets, and group membership over Kafka), `write` (producing records over HTTP
//! or Kafka) and `admin` (all of them). The file is read again when it changes
//! (see [`tributary_common::reload`]); a file that does not parse keeps the tokens
//! in force and logs why.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use thiserror::Error;
use tributary_common::reload::Reloading;

use crate::metrics::Metrics;

/// One permission a token can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Read,
    Commit,
    Write,
    Admin,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Commit => "commit",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Scope> {
        Some(match s {
            "read" => Scope::Read,
            "commit" => Scope::Commit,
            "write" => Scope::Write,
            "admin" => Scope::Admin,
            _ => return None,
        })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A token that was presented and found: its name and scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub scopes: Vec<Scope>,
}

impl Principal {
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }

    pub fn scope_list(&self) -> String {
        let v: Vec<&str> = self.scopes.iter().map(|s| s.name()).collect();
        v.join(",")
    }
}

/// The tokens of a tokens file, by hash.
#[derive(Debug, Default)]
pub struct Tokens {
    by_hash: HashMap<[u8; 32], Principal>,
}

#[derive(Debug, Error)]
pub enum TokensError {
    #[error("{}: cannot read the tokens file", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// The hash a tokens file stores for `token`.
pub fn hash(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Names a token may have: what its owner is called in logs and errors.
fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

impl Tokens {
    /// Parse a tokens file's text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Tokens, TokensError> {
        let mut by_hash = HashMap::new();
        let mut names = std::collections::HashSet::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |message: String| TokensError::Line {
                path: path.to_owned(),
                line: i + 1,
                message,
            };
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [name, scopes, digest] = parts[..] else {
                return Err(err(
                    "expected `NAME SCOPES sha256:HEX` (write lines with `tributary token add`)"
                        .into(),
                ));
            };
            if !valid_name(name) {
                return Err(err(format!(
                    "token name `{name}`: use 1-64 characters from [A-Za-z0-9._@-]"
                )));
            }
            if !names.insert(name.to_owned()) {
                return Err(err(format!("token name `{name}` appears twice")));
            }
            let mut list = Vec::new();
            for s in scopes.split(',') {
                let scope = Scope::parse(s).ok_or_else(|| {
                    err(format!(
                        "unknown scope `{s}`: use read, commit, write or admin (comma-separated)"
                    ))
                })?;
                if !list.contains(&scope) {
                    list.push(scope);
                }
            }
            list.sort();
            let h = digest
                .strip_prefix("sha256:")
                .and_then(unhex)
                .ok_or_else(|| err("the hash must be `sha256:` and 64 hex digits".into()))?;
            if by_hash
                .insert(
                    h,
                    Principal {
                        name: name.to_owned(),
                        scopes: list,
                    },
                )
                .is_some()
            {
                return Err(err("this hash appears twice (one token, two names)".into()));
            }
        }
        Ok(Tokens { by_hash })
    }

    /// Read `path`.
    pub fn load(path: &Path) -> Result<Tokens, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            path: path.to_owned(),
            source,
        })?;
        Tokens::parse(&text, path)
    }

    /// Who `token` is, if it is one of these. The lookup is by hash, so the time
    /// it takes says nothing about how close a guess was.
    pub fn find(&self, token: &str) -> Option<&Principal> {
        self.by_hash.get(&hash(token))
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

/// The tokens file, followed as it changes.
pub type TokenStore = Arc<Reloading<Tokens, TokensError>>;

/// Load `path` and keep following it.
pub fn token_store(path: &Path) -> Result<TokenStore, TokensError> {
    let p = path.to_owned();
    Reloading::new("api.auth.tokens_file", vec![path.to_owned()], move || {
        Tokens::load(&p).map(Arc::new)
    })
}

/// A new random token (256 bits, hex) with a recognizable prefix.
pub fn generate() -> Result<String, ring::error::Unspecified> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut b)?;
    Ok(format!("trb_{}", hex(&b)))
}

/// The tokens-file line for `token`.
pub fn line(name: &str, scopes: &[Scope], token: &str) -> String {
    let s: Vec<&str> = scopes.iter().map(|s| s.name()).collect();
    format!("{name} {} sha256:{}\n", s.join(","), hex(&hash(token)))
}

/// `api.auth`, resolved.
pub struct ApiAuth {
    pub tokens: TokenStore,
    /// `/metrics` answers without a token (`api.auth.metrics: open`).
    pub open_metrics: bool,
}

/// The scope a request needs; `None`: open to anyone (`/healthz`, and `/metrics`
/// when configured so).
pub fn required_scope(method: &Method, path: &str, open_metrics: bool) -> Option<Scope> {
    if path == "/healthz" || (path == "/metrics" && open_metrics) {
        return None;
    }
    // The console's own files hold no data; what they fetch carries the token.
    if (*method == Method::GET || *method == Method::HEAD) && crate::console::is_asset(path) {
        return None;
    }
    let writes = *method != Method::GET && *method != Method::HEAD;
    if writes && path.starts_with("/v1/groups/") {
        return Some(Scope::Commit);
    }
    if writes && path.starts_with("/v1/topics/") && path.ends_with("/records") {
        return Some(Scope::Write);
    }
    if writes {
        return Some(Scope::Admin);
    }
    // Reads, and paths that do not exist (a 404 only for those who may read).
    Some(Scope::Read)
}

/// Add token checks in front of `router`.
pub fn guard(router: axum::Router, auth: Arc<ApiAuth>, metrics: Arc<Metrics>) -> axum::Router {
    router.layer(axum::middleware::from_fn_with_state((auth, metrics), check))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn deny(status: StatusCode, message: String) -> Response {
    let mut r = (status, axum::Json(serde_json::json!({ "error": message }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"tributary\""),
        );
    }
    r
}

async fn check(
    State((auth, metrics)): State<(Arc<ApiAuth>, Arc<Metrics>)>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(scope) = required_scope(req.method(), req.uri().path(), auth.open_metrics) else {
        return next.run(req).await;
    };
    let tokens = auth.tokens.current();
    let principal = match bearer(req.headers()) {
        None => {
            metrics.error("api_unauthenticated");
            return deny(
                StatusCode::UNAUTHORIZED,
                "this API needs a token: send `Authorization: Bearer <token>` (the CLI: --token or TRIBUTARY_TOKEN)".into(),
            );
        }
        Some(t) => match tokens.find(t) {
            Some(p) => p.clone(),
            None => {
                metrics.error("api_unauthenticated");
                return deny(
                    StatusCode::UNAUTHORIZED,
                    "unknown or revoked token (api.auth.tokens_file)".into(),
                );
            }
        },
    };
    if !principal.has(scope) {
        metrics.error("api_forbidden");
        return deny(
            StatusCode::FORBIDDEN,
            format!(
                "token `{}` has scope {}; {} {} needs `{scope}`",
                principal.name,
                principal.scope_list(),
                req.method(),
                req.uri().path()
            ),
        );
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_needs_its_scope() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(required_scope(&get, "/healthz", false), None);
        assert_eq!(required_scope(&get, "/metrics", true), None);
        assert_eq!(required_scope(&get, "/metrics", false), Some(Scope::Read));
        for p in [
            "/v1/topics",
            "/v1/topics/app/partitions/0/records",
            "/v1/query",
            "/v1/groups/g/offsets",
            "/nope",
        ] {
            assert_eq!(required_scope(&get, p, false), Some(Scope::Read), "{p}");
        }
        assert_eq!(
            required_scope(&post, "/v1/groups/g/offsets", false),
            Some(Scope::Commit)
        );
        assert_eq!(
            required_scope(&post, "/v1/topics/app/records", false),
            Some(Scope::Write)
        );
        assert_eq!(
            required_scope(&Method::DELETE, "/v1/topics/app", false),
            Some(Scope::Admin)
        );
    }

    #[test]
    fn lines_round_trip_and_only_the_hash_is_stored() {
        let t = generate().unwrap();
        assert!(t.starts_with("trb_") && t.len() == 68);
        let text = format!(
            "# comment\n\n{}{}",
            line("grafana", &[Scope::Read], &t),
            line("ops", &[Scope::Admin], "other-secret")
        );
        assert!(!text.contains(&t));
        let tokens = Tokens::parse(&text, Path::new("tokens")).unwrap();
        assert_eq!(tokens.len(), 2);
        let p = tokens.find(&t).unwrap();
        assert_eq!(p.name, "grafana");
        assert!(p.has(Scope::Read) && !p.has(Scope::Commit));
        let ops = tokens.find("other-secret").unwrap();
        assert!(ops.has(Scope::Commit) && ops.has(Scope::Write));
        assert!(tokens.find("trb_guess").is_none());
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let h = format!("sha256:{}", "ab".repeat(32));
        for (text, want) in [
            ("a read".to_owned(), "tokens:1: expected"),
            (format!("a reed {h}"), "unknown scope `reed`"),
            ("a read sha256:xyz".to_owned(), "64 hex digits"),
            (
                format!("a read {h}\na read {h}"),
                "tokens:2: token name `a` appears twice",
            ),
            (
                format!("a read {h}\nb read {h}"),
                "appears twice (one token",
            ),
            (format!("a/b read {h}"), "token name `a/b`"),
        ] {
            let e = Tokens::parse(&text, Path::new("tokens")).unwrap_err();
            assert!(e.to_string().contains(want), "{e} / {want}");
        }
    }
}
