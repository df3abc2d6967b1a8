//! Who may change what is served. Admin operations (load, unload, labels,
//! rollback) can require a bearer token, and can be confined to a separate
//! admin listener. Tokens are compared in constant time on their SHA-256
//! digests and are never logged; the audit trail names a token by its id.

use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::audit::Actor;
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
}

/// The admin policy.
#[derive(Default)]
pub struct AdminAuth {
    /// (id, SHA-256 of the token).
    tokens: Vec<(String, [u8; 32])>,
    /// Admin operations only on the admin listener.
    separate_listener: bool,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAuth")
            .field("tokens", &self.tokens.iter().map(|(id, _)| id).collect::<Vec<_>>())
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
        let mut tokens = Vec::new();
        if let Some(path) = token_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read the admin token file {}: {e}", path.display()))?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let (id, token) = match line.split_once(':') {
                    Some((id, token)) if !id.is_empty() => (id.trim().to_string(), token.trim()),
                    _ => (format!("line{}", n + 1), line),
                };
                tokens.push((id, digest(token, path)?));
            }
            anyhow::ensure!(
                !tokens.is_empty(),
                "the admin token file {} holds no token",
                path.display()
            );
        }
        if let Some(token) = env_token.filter(|t| !t.is_empty()) {
            tokens.push(("env".into(), digest(token, Path::new("SWITCHYARD_ADMIN_TOKEN"))?));
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
        let anonymous = Actor {
            name: peer
                .as_ref()
                .map_or_else(|| "local".to_string(), |p| format!("peer:{p}")),
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
        let presented = caller
            .authorization
            .as_deref()
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .map(str::trim);
        let Some(presented) = presented else {
            return (
                anonymous,
                Err(Error::new(
                    ErrorKind::Unauthenticated,
                    "admin operation needs 'Authorization: Bearer <token>'",
                )),
            );
        };
        let d: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Every token is compared, so timing does not tell which one matched.
        let mut matched: Option<&str> = None;
        for (id, want) in &self.tokens {
            if bool::from(want.ct_eq(&d)) {
                matched = Some(id);
            }
        }
        match matched {
            Some(id) => (
                Actor {
                    name: format!("token:{id}"),
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

fn digest(token: &str, source: &Path) -> anyhow::Result<[u8; 32]> {
    anyhow::ensure!(
        token.len() >= MIN_TOKEN_LEN,
        "an admin token in {} is shorter than {MIN_TOKEN_LEN} characters",
        source.display()
    );
    Ok(Sha256::digest(token.as_bytes()).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(auth: Option<&str>, admin_listener: bool) -> Caller {
        Caller {
            peer: Some("10.0.0.1:5000".into()),
            authorization: auth.map(str::to_string),
            admin_listener,
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
        assert_eq!(actor.name, "token:ci");
        assert_eq!(actor.peer.as_deref(), Some("10.0.0.1:5000"));
        let (actor, ok) = auth.authorize(&caller(Some("Bearer env-token-0123456789"), false));
        assert!(ok.is_ok());
        assert_eq!(actor.name, "token:env");
        let (actor, err) = auth.authorize(&caller(Some("Bearer wrong-token-0123456789"), false));
        assert_eq!(err.unwrap_err().kind, ErrorKind::Unauthenticated);
        assert_eq!(actor.name, "peer:10.0.0.1:5000");
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
