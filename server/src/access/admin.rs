//! Who may change what is served. Admin operations (load, unload, labels,
//! rollback) can require a bearer token, and can be confined to a separate
//! admin listener. Tokens are compared in constant time on their SHA-256
//! digests and are never logged; the audit trail names a token by its id.

use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Actor;
use crate::error::{Error, ErrorKind, Result};

/// How an admin request arrived.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// Peer address of the connection.
    pub peer: Option<String>,
    /// The `Authorization` header (HTTP) or metadata (gRPC) value.
    pub authorization: Option<String>,
    /// Whether it came through the admin listener.
    pub admin_listener: bool,
    /// Id of the API token the request passed its group's check with
    /// (`--api-token-file`), if any.
    pub api_token: Option<String>,
}

/// A set of bearer tokens, each known by an id; only SHA-256 digests are kept.
#[derive(Default, Clone)]
pub struct TokenSet {
    /// (id, SHA-256 of the token).
    tokens: Vec<(String, [u8; 32])>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.ids()).finish()
    }
}

impl TokenSet {
    /// Tokens from a file: `id:token` or a bare token (id `line<N>`) per
    /// line, `#` comments. `what` names the file in errors ("admin", "API").
    pub fn from_file(path: &Path, what: &str) -> anyhow::Result<TokenSet> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read the {what} token file {}: {e}", path.display()))?;
        let mut set = TokenSet::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (id, token) = match line.split_once(':') {
                Some((id, token)) if !id.is_empty() => (id.trim().to_string(), token.trim()),
                _ => (format!("line{}", n + 1), line),
            };
            set.add(id, token, path, what)?;
        }
        anyhow::ensure!(
            !set.is_empty(),
            "the {what} token file {} holds no token",
            path.display()
        );
        Ok(set)
    }

    /// Adds one token (at least [`MIN_TOKEN_LEN`] characters).
    pub fn add(&mut self, id: String, token: &str, source: &Path, what: &str) -> anyhow::Result<()> {
        anyhow::ensure!(
            token.len() >= MIN_TOKEN_LEN,
            "an {what} token in {} is shorter than {MIN_TOKEN_LEN} characters",
            source.display()
        );
        self.tokens.push((id, Sha256::digest(token.as_bytes()).into()));
        Ok(())
    }

    /// No token at all.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The ids (safe to print).
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.tokens.iter().map(|(id, _)| id.as_str())
    }

    /// The id of the token `presented` is, if any. Every token is compared
    /// (in constant time, on digests), so timing does not tell which matched.
    pub fn find(&self, presented: &str) -> Option<&str> {
        let d: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut matched: Option<&str> = None;
        for (id, want) in &self.tokens {
            if bool::from(want.ct_eq(&d)) {
                matched = Some(id);
            }
        }
        matched
    }
}

/// The token of an `Authorization: Bearer <token>` value.
pub fn bearer(authorization: Option<&str>) -> Option<&str> {
    authorization
        .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
        .map(str::trim)
}

/// The admin policy.
#[derive(Default)]
pub struct AdminAuth {
    tokens: TokenSet,
    /// Admin operations only on the admin listener.
    separate_listener: bool,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAuth")
            .field("tokens", &self.tokens)
            .field("separate_listener", &self.separate_listener)
            .finish()
    }
}

/// Shortest token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

impl AdminAuth {
    /// Tokens from a file (`id:token` or a bare token per line; `#` comments)
    /// and/or one bare token from the environment (id `env`).
    pub fn new(token_file: Option<&Path>, env_token: Option<&str>, separate_listener: bool) -> anyhow::Result<Self> {
        let mut tokens = match token_file {
            Some(path) => TokenSet::from_file(path, "admin")?,
            None => TokenSet::default(),
        };
        if let Some(token) = env_token.filter(|t| !t.is_empty()) {
            tokens.add("env".into(), token, Path::new("SWITCHYARD_ADMIN_TOKEN"), "admin")?;
        }
        Ok(AdminAuth {
            tokens,
            separate_listener,
        })
    }

    /// Whether any restriction is configured.
    pub fn restricted(&self) -> bool {
        !self.tokens.is_empty() || self.separate_listener
    }

    /// Allows or refuses an admin operation; the actor to audit either way.
    pub fn authorize(&self, caller: &Caller) -> (Actor, Result<()>) {
        let peer = caller.peer.clone();
        // Without admin tokens, a caller that passed an API group's token
        // (`--api-token-file`) is still named by that token's id.
        let anonymous = Actor::Api {
            token: caller.api_token.clone(),
            peer: peer.clone(),
        };
        if self.separate_listener && !caller.admin_listener {
            return (
                anonymous,
                Err(Error::new(
                    ErrorKind::PermissionDenied,
                    "admin operations are served on the admin address only (--admin-http-port)",
                )),
            );
        }
        if self.tokens.is_empty() {
            return (anonymous, Ok(()));
        }
        let Some(presented) = bearer(caller.authorization.as_deref()) else {
            return (
                anonymous,
                Err(Error::new(
                    ErrorKind::Unauthenticated,
                    "admin operation needs 'Authorization: Bearer <token>'",
                )),
            );
        };
        match self.tokens.find(presented) {
            Some(id) => (
                Actor::Api {
                    token: Some(id.to_string()),
                    peer,
                },
                Ok(()),
            ),
            None => (
                anonymous,
                Err(Error::new(ErrorKind::Unauthenticated, "invalid admin token")),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(auth: Option<&str>, admin_listener: bool) -> Caller {
        Caller {
            peer: Some("10.0.0.1:5000".into()),
            authorization: auth.map(str::to_string),
            admin_listener,
            api_token: None,
        }
    }

    #[test]
    fn tokens_from_file_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(&file, "# deployers\nci:0123456789abcdef0123\n").unwrap();
        let auth = AdminAuth::new(Some(&file), Some("env-token-0123456789"), false).unwrap();
        let (actor, ok) = auth.authorize(&caller(Some("Bearer 0123456789abcdef0123"), false));
        assert!(ok.is_ok());
        assert_eq!(actor.name(), "token:ci");
        assert_eq!(actor.peer(), Some("10.0.0.1:5000"));
        let (actor, ok) = auth.authorize(&caller(Some("Bearer env-token-0123456789"), false));
        assert!(ok.is_ok());
        assert_eq!(actor.name(), "token:env");
        let (actor, err) = auth.authorize(&caller(Some("Bearer wrong-token-0123456789"), false));
        assert_eq!(err.unwrap_err().kind, ErrorKind::Unauthenticated);
        assert_eq!(actor.name(), "peer:10.0.0.1:5000");
        assert_eq!(
            auth.authorize(&caller(None, false)).1.unwrap_err().kind,
            ErrorKind::Unauthenticated
        );
        assert!(
            !format!("{auth:?}").contains("0123456789abcdef"),
            "tokens never printed"
        );
    }

    #[test]
    fn short_tokens_and_empty_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(&file, "short\n").unwrap();
        assert!(AdminAuth::new(Some(&file), None, false).is_err());
        std::fs::write(&file, "# nothing\n").unwrap();
        assert!(AdminAuth::new(Some(&file), None, false).is_err());
    }

    #[test]
    fn separate_listener_confines_admin() {
        let auth = AdminAuth::new(None, None, true).unwrap();
        assert_eq!(
            auth.authorize(&caller(None, false)).1.unwrap_err().kind,
            ErrorKind::PermissionDenied
        );
        assert!(auth.authorize(&caller(None, true)).1.is_ok());
        let open = AdminAuth::default();
        assert!(!open.restricted());
        assert!(open.authorize(&caller(None, false)).1.is_ok());
    }
}
