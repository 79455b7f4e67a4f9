//! `tributary token add`: a new API token, stored hashed in the tokens file and
//! printed once.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::api::auth::{self, Scope, Tokens, TokensError};

/// `tributary token …`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum TokenCommand {
    /// Make a token: append `NAME SCOPES sha256:…` to the tokens file (created
    /// with mode 0600) and print the token (it is not stored anywhere else).
    Add {
        /// The tokens file (api.auth.tokens_file).
        #[arg(long, value_name = "FILE")]
        tokens_file: PathBuf,
        /// Who the token is for; shown in errors and logs.
        #[arg(long)]
        name: String,
        /// Comma-separated: read, commit, write, admin.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
    },
}

#[derive(Debug, Error)]
pub enum TokenError {
    #[error(transparent)]
    File(#[from] TokensError),
    #[error("unknown scope `{0}`: use read, commit, write or admin")]
    Scope(String),
    #[error("{}: a token named `{name}` exists already (remove its line to replace it)", path.display())]
    Exists { path: PathBuf, name: String },
    #[error("{}: cannot write", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the system's random number generator failed")]
    Random,
}

/// Run `tributary token`; returns the new token.
pub fn run(cmd: &TokenCommand) -> Result<String, TokenError> {
    match cmd {
        TokenCommand::Add {
            tokens_file,
            name,
            scopes,
        } => add(tokens_file, name, scopes),
    }
}

/// Append a token named `name` with `scopes` to `path`; returns the token.
pub fn add(path: &Path, name: &str, scopes: &[String]) -> Result<String, TokenError> {
    let mut list = Vec::new();
    for s in scopes {
        let scope = match s.trim() {
            "read" => Scope::Read,
            "commit" => Scope::Commit,
            "write" => Scope::Write,
            "admin" => Scope::Admin,
            other => return Err(TokenError::Scope(other.to_owned())),
        };
        list.push(scope);
    }
    let existing = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(TokenError::Write {
                path: path.to_owned(),
                source,
            });
        }
    };
    let token = auth::generate().map_err(|_| TokenError::Random)?;
    let line = auth::line(name, &list, &token);
    // The file with the new line must parse (name, duplicates) before it is written.
    let mut text = existing.clone();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&line);
    if existing
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
    {
        return Err(TokenError::Exists {
            path: path.to_owned(),
            name: name.to_owned(),
        });
    }
    Tokens::parse(&text, path)?;
    let write_err = |source| TokenError::Write {
        path: path.to_owned(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(write_err)?;
    let appended = if !existing.is_empty() && !existing.ends_with('\n') {
        format!("\n{line}")
    } else {
        line
    };
    f.write_all(appended.as_bytes()).map_err(write_err)?;
    f.sync_all().map_err(write_err)?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_tokens_are_found_and_names_stay_unique() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("tokens");
        let t = add(&f, "grafana", &["read".into()]).unwrap();
        let u = add(&f, "etl", &["read".into(), "commit".into()]).unwrap();
        let tokens = Tokens::load(&f).unwrap();
        assert_eq!(tokens.find(&t).unwrap().name, "grafana");
        assert!(tokens.find(&u).unwrap().has(Scope::Commit));
        assert!(matches!(
            add(&f, "grafana", &["read".into()]),
            Err(TokenError::Exists { .. })
        ));
        assert!(matches!(
            add(&f, "x", &["rw".into()]),
            Err(TokenError::Scope(_))
        ));
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(!text.contains(&t), "only the hash is stored");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
