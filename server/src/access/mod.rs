//! Who may call which API group. Groups and flags follow Triton's "Limit
//! Endpoint Access": `--http-restricted-api <groups>:<header>=<value>` and
//! `--grpc-restricted-protocol <groups>:<key>=<value>` (repeatable) make the
//! listed groups need a header; `--api-token-file <groups>:<path>` makes them
//! need `Authorization: Bearer <token>` with a token from that file (the
//! admin token machinery). A group may appear in one restriction of each
//! kind only. Unrestricted groups, health included, stay open.
//!
//! The decision is made here; the frontends map a request to its [`Group`]
//! (the tables [`http_group`] and [`grpc_group`]), pass a header lookup and
//! convert the [`Error`].
//!
//! [`admin`] decides who may run control actions (admin tokens, the admin
//! listener); [`Actor`] is who the audit trail names for an action.

use std::path::PathBuf;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

mod actor;
pub mod admin;

pub use actor::Actor;

use admin::{TokenSet, bearer};

use crate::error::{Error, ErrorKind, Result};
use crate::metrics::Protocol;

/// Triton's API groups (its "restricted categories").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    /// Liveness, readiness, model readiness; gRPC also `grpc.health.v1`.
    Health,
    /// Server and model metadata.
    Metadata,
    /// Inference (gRPC: also streaming).
    Inference,
    /// System and CUDA shared memory.
    SharedMemory,
    /// Model configuration.
    ModelConfig,
    /// Repository index, load, unload; here also labels, default and rollback.
    ModelRepository,
    /// Statistics; here also drift reports.
    Statistics,
    /// Trace settings.
    Trace,
    /// Log settings.
    Logging,
}

impl Group {
    /// Every group, in Triton's order.
    pub const ALL: [Group; 9] = [
        Group::Health,
        Group::Metadata,
        Group::Inference,
        Group::SharedMemory,
        Group::ModelConfig,
        Group::ModelRepository,
        Group::Statistics,
        Group::Trace,
        Group::Logging,
    ];

    /// Triton's name of the group (also the `group` metric label).
    pub const fn name(self) -> &'static str {
        match self {
            Group::Health => "health",
            Group::Metadata => "metadata",
            Group::Inference => "inference",
            Group::SharedMemory => "shared-memory",
            Group::ModelConfig => "model-config",
            Group::ModelRepository => "model-repository",
            Group::Statistics => "statistics",
            Group::Trace => "trace",
            Group::Logging => "logging",
        }
    }

    /// The group called `name`.
    pub fn parse(name: &str) -> Option<Group> {
        Group::ALL.into_iter().find(|g| g.name() == name)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Which group an HTTP route (axum's route template) belongs to.
///
/// Switchyard's own endpoints: labels (read and change), the default route
/// and rollback change what a model name serves, so they are
/// `model-repository` like load and unload, and so is the traffic policy
/// (read and override); drift and shadow reports describe the traffic a
/// model has served, so they are `statistics` (not `metadata`, which
/// describes the model itself, as its model card does), and so are the quality and fairness reports;
/// ground-truth feedback comes from the applications that call the model,
/// so it is `inference`.
pub fn http_group(route: &str) -> Option<Group> {
    let tail = route
        .strip_prefix("/v2/models/{model}/versions/{version}")
        .or_else(|| route.strip_prefix("/v2/models/{model}"));
    if let Some(tail) = tail {
        return match tail {
            "" | "/card" => Some(Group::Metadata),
            "/ready" => Some(Group::Health),
            "/config" => Some(Group::ModelConfig),
            "/stats" | "/drift" | "/shadow" | "/quality" | "/fairness" => Some(Group::Statistics),
            "/infer" | "/feedback" | "/explain" => Some(Group::Inference),
            "/labels" | "/labels/{label}" | "/default" | "/rollback" | "/traffic" => Some(Group::ModelRepository),
            "/trace/setting" => Some(Group::Trace),
            _ => None,
        };
    }
    match route {
        "/v2/health/live" | "/v2/health/ready" => Some(Group::Health),
        "/v2" => Some(Group::Metadata),
        "/v2/models/stats" => Some(Group::Statistics),
        "/v2/repository/index" | "/v2/repository/models/{model}/load" | "/v2/repository/models/{model}/unload" => {
            Some(Group::ModelRepository)
        }
        "/v2/trace/setting" => Some(Group::Trace),
        "/v2/logging" => Some(Group::Logging),
        r if r.starts_with("/v2/systemsharedmemory/") || r.starts_with("/v2/cudasharedmemory/") => {
            Some(Group::SharedMemory)
        }
        _ => None,
    }
}

/// Which group a gRPC method (`/<service>/<method>`) belongs to, as in Triton.
pub fn grpc_group(path: &str) -> Option<Group> {
    if path.starts_with("/grpc.health.v1.Health/") {
        return Some(Group::Health);
    }
    let method = path.strip_prefix("/inference.GRPCInferenceService/")?;
    Some(match method {
        "ServerLive" | "ServerReady" | "ModelReady" => Group::Health,
        "ServerMetadata" | "ModelMetadata" => Group::Metadata,
        "ModelInfer" | "ModelStreamInfer" => Group::Inference,
        "ModelConfig" => Group::ModelConfig,
        "ModelStatistics" => Group::Statistics,
        "RepositoryIndex" | "RepositoryModelLoad" | "RepositoryModelUnload" => Group::ModelRepository,
        "SystemSharedMemoryStatus"
        | "SystemSharedMemoryRegister"
        | "SystemSharedMemoryUnregister"
        | "CudaSharedMemoryStatus"
        | "CudaSharedMemoryRegister"
        | "CudaSharedMemoryUnregister" => Group::SharedMemory,
        "TraceSetting" => Group::Trace,
        "LogSettings" => Group::Logging,
        _ => return None,
    })
}

/// Splits `<groups>:<rest>` (Triton's format: up to the first `:`),
/// checking the comma-separated group names and refusing one named twice.
/// `feature` is Triton's word in its messages: "api" (HTTP) or "protocol" (gRPC).
fn split_groups<'a>(
    arg: &'a str,
    feature: &str,
    rest_name: &str,
) -> std::result::Result<(Vec<Group>, &'a str), String> {
    let (groups, rest) = arg
        .split_once(':')
        .ok_or_else(|| format!("the format is '<{feature} groups>:{rest_name}'"))?;
    let mut parsed = Vec::new();
    for name in groups.split(',').map(str::trim) {
        let group = Group::parse(name).ok_or_else(|| {
            let known: Vec<&str> = Group::ALL.iter().map(|g| g.name()).collect();
            format!("unknown restricted {feature} '{name}' (known: {})", known.join(", "))
        })?;
        if parsed.contains(&group) {
            return Err(duplicate(feature, group, None));
        }
        parsed.push(group);
    }
    Ok((parsed, rest))
}

/// Triton's message for a group in two restrictions.
fn duplicate(feature: &str, group: Group, flag: Option<&str>) -> String {
    let flag = flag.map(|f| format!(" (--{f})")).unwrap_or_default();
    format!(
        "restricted {feature} '{}' can not be specified in multiple config groups{flag}",
        group.name()
    )
}

/// One `<groups>:<key>=<value>` restriction. The value is a shared secret:
/// `Debug` does not show it (the configuration is logged at start).
#[derive(Clone, PartialEq, Eq)]
pub struct HeaderRestriction {
    /// The groups it covers.
    pub groups: Vec<Group>,
    /// The header (HTTP) or key (gRPC, sent as `triton-grpc-protocol-<key>`).
    pub key: String,
    /// The value the header must have.
    pub value: String,
}

impl std::fmt::Debug for HeaderRestriction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderRestriction")
            .field("groups", &self.groups)
            .field("key", &self.key)
            .field("value", &"<redacted>")
            .finish()
    }
}

impl HeaderRestriction {
    /// Parses `--http-restricted-api <groups>:<header>=<value>`.
    pub fn parse_http(arg: &str) -> std::result::Result<HeaderRestriction, String> {
        Self::parse(arg, "api")
    }

    /// Parses `--grpc-restricted-protocol <groups>:<key>=<value>`.
    pub fn parse_grpc(arg: &str) -> std::result::Result<HeaderRestriction, String> {
        Self::parse(arg, "protocol")
    }

    fn parse(arg: &str, feature: &str) -> std::result::Result<HeaderRestriction, String> {
        let format = || format!("the format is '<{feature} groups>:<key>=<value>'");
        let (groups, setting) = split_groups(arg, feature, "<key>=<value>")?;
        let (key, value) = setting.split_once('=').ok_or_else(format)?;
        let key = key.trim();
        let header = format!("{GRPC_HEADER_PREFIX}{key}");
        if key.is_empty() || http::HeaderName::from_bytes(header.as_bytes()).is_err() {
            return Err(format!("'{key}' is not a valid header name ({})", format()));
        }
        Ok(HeaderRestriction {
            groups,
            key: key.to_string(),
            value: value.to_string(),
        })
    }
}

/// One `<groups>:<path>` token file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFile {
    /// The groups it covers.
    pub groups: Vec<Group>,
    /// The file (`id:token` lines, as the admin token file).
    pub path: PathBuf,
}

impl TokenFile {
    /// Parses `<groups>:<path>` (clap's value parser).
    pub fn parse(arg: &str) -> std::result::Result<TokenFile, String> {
        let (groups, path) = split_groups(arg, "api", "<path>")?;
        if path.is_empty() {
            return Err("no file after the groups".into());
        }
        Ok(TokenFile {
            groups,
            path: PathBuf::from(path),
        })
    }
}

/// A header a group needs: the name clients send and the value's digest.
struct HeaderRule {
    /// The header name as sent, also quoted in refusals (gRPC: with Triton's prefix).
    header: String,
    digest: [u8; 32],
}

/// The policy of every group on both protocols.
#[derive(Default)]
pub struct Access {
    http: [Option<HeaderRule>; 9],
    grpc: [Option<HeaderRule>; 9],
    tokens: [Option<std::sync::Arc<TokenSet>>; 9],
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let named = |rules: &[Option<HeaderRule>; 9]| -> Vec<(&str, String)> {
            Group::ALL
                .iter()
                .filter_map(|g| rules[g.index()].as_ref().map(|r| (g.name(), r.header.clone())))
                .collect()
        };
        let tokens: Vec<(&str, Vec<&str>)> = Group::ALL
            .iter()
            .filter_map(|g| self.tokens[g.index()].as_ref().map(|t| (g.name(), t.ids().collect())))
            .collect();
        f.debug_struct("Access")
            .field("http", &named(&self.http))
            .field("grpc", &named(&self.grpc))
            .field("tokens", &tokens)
            .finish()
    }
}

/// Request extension set by the frontends: the id of the bearer token the
/// request passed its group's check with (audited as `token:<id>`).
#[derive(Debug, Clone)]
pub struct GrantedToken(pub String);

/// Prefix Triton puts before a gRPC restriction's key.
pub const GRPC_HEADER_PREFIX: &str = "triton-grpc-protocol-";

impl Access {
    /// The policy of the flags; reads the token files. A group named in two
    /// restrictions of the same flag is an error, as in Triton.
    pub fn new(
        http: &[HeaderRestriction],
        grpc: &[HeaderRestriction],
        token_files: &[TokenFile],
    ) -> anyhow::Result<Access> {
        let mut access = Access::default();
        let rules = |list: &[HeaderRestriction], flag: &str, prefix: &str, into: &mut [Option<HeaderRule>; 9]| {
            let feature = if prefix.is_empty() { "api" } else { "protocol" };
            for r in list {
                for g in &r.groups {
                    anyhow::ensure!(into[g.index()].is_none(), duplicate(feature, *g, Some(flag)));
                    into[g.index()] = Some(HeaderRule {
                        // HTTP/2 (gRPC) header names are lowercase.
                        header: if prefix.is_empty() {
                            r.key.clone()
                        } else {
                            format!("{prefix}{}", r.key.to_ascii_lowercase())
                        },
                        digest: Sha256::digest(r.value.as_bytes()).into(),
                    });
                }
            }
            Ok(())
        };
        rules(http, "http-restricted-api", "", &mut access.http)?;
        rules(grpc, "grpc-restricted-protocol", GRPC_HEADER_PREFIX, &mut access.grpc)?;
        for file in token_files {
            let set = std::sync::Arc::new(TokenSet::from_file(&file.path, "API")?);
            for g in &file.groups {
                anyhow::ensure!(
                    access.tokens[g.index()].is_none(),
                    duplicate("api", *g, Some("api-token-file"))
                );
                access.tokens[g.index()] = Some(set.clone());
            }
        }
        Ok(access)
    }

    /// Whether `group` has any restriction on `protocol`.
    pub fn restricted(&self, protocol: Protocol, group: Group) -> bool {
        self.header_rule(protocol, group).is_some() || self.tokens[group.index()].is_some()
    }

    fn header_rule(&self, protocol: Protocol, group: Group) -> Option<&HeaderRule> {
        match protocol {
            Protocol::Http => self.http[group.index()].as_ref(),
            Protocol::Grpc => self.grpc[group.index()].as_ref(),
        }
    }

    /// Allows or refuses a request to `group`; `header` looks a request
    /// header (gRPC: metadata) up by its lowercase name. Allowed: the id of
    /// the bearer token it presented, when the group needs one. Refusals are
    /// counted in `switchyard_auth_failures_total`.
    pub fn check<'a>(
        &self,
        protocol: Protocol,
        group: Group,
        header: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Option<String>> {
        let refuse = |reason: &'static str, error: Error| {
            crate::metrics::auth_failure(protocol, group.name(), reason);
            tracing::debug!(
                protocol = protocol.label(),
                group = group.name(),
                reason,
                "request refused"
            );
            Err(error)
        };
        if let Some(rule) = self.header_rule(protocol, group) {
            let presented = header(&rule.header.to_ascii_lowercase());
            // Compared on digests in constant time: timing tells nothing about the value.
            let ok = presented.is_some_and(|v| {
                let d: [u8; 32] = Sha256::digest(v.as_bytes()).into();
                bool::from(rule.digest.ct_eq(&d))
            });
            if !ok {
                // Triton's words, missing or wrong alike: HTTP "This API is
                // restricted, expecting header '<key>'" (403, JSON `error`),
                // gRPC "This protocol is restricted, expecting header
                // 'triton-grpc-protocol-<key>'" (UNAVAILABLE).
                let what = match protocol {
                    Protocol::Http => "API",
                    Protocol::Grpc => "protocol",
                };
                let reason = if presented.is_some() {
                    "wrong_header"
                } else {
                    "missing_header"
                };
                let message = format!("This {what} is restricted, expecting header '{}'", rule.header);
                return refuse(reason, Error::new(ErrorKind::Restricted, message));
            }
        }
        let Some(tokens) = &self.tokens[group.index()] else {
            return Ok(None);
        };
        let Some(presented) = bearer(header("authorization")) else {
            let message = format!("the '{}' API needs 'Authorization: Bearer <token>'", group.name());
            return refuse("missing_token", Error::new(ErrorKind::Unauthenticated, message));
        };
        match tokens.find(presented) {
            Some(id) => Ok(Some(id.to_string())),
            None => {
                let message = format!("invalid token for the '{}' API", group.name());
                refuse("invalid_token", Error::new(ErrorKind::Unauthenticated, message))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn lookup<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| *v)
    }

    #[test]
    fn flags_parse_like_triton() {
        let r = HeaderRestriction::parse_http("inference,health:infer-key=a=b").unwrap();
        assert_eq!(r.groups, [Group::Inference, Group::Health]);
        assert_eq!((r.key.as_str(), r.value.as_str()), ("infer-key", "a=b"));
        assert!(!format!("{r:?}").contains("a=b"), "value never printed");
        assert!(
            HeaderRestriction::parse_http("model-reposit:k=v")
                .unwrap_err()
                .contains("unknown restricted api 'model-reposit'")
        );
        assert!(
            HeaderRestriction::parse_http("inference,inference:k=v")
                .unwrap_err()
                .contains("restricted api 'inference' can not be specified in multiple config groups")
        );
        for bad in ["inference", "inference:k", "inference:=v", "inference:bad key=v"] {
            assert!(HeaderRestriction::parse_http(bad).is_err(), "{bad}");
        }
        let f = TokenFile::parse("inference,statistics:/etc/tokens").unwrap();
        assert_eq!(f.groups, [Group::Inference, Group::Statistics]);
        assert_eq!(f.path, Path::new("/etc/tokens"));
        assert!(TokenFile::parse("inference:").is_err());
    }

    #[test]
    fn a_group_in_two_restrictions_is_an_error() {
        let a = HeaderRestriction::parse_http("model-repository,health:k1=v1").unwrap();
        let b = HeaderRestriction::parse_http("metadata,health:k2=v2").unwrap();
        let err = Access::new(&[a.clone(), b.clone()], &[], &[]).unwrap_err().to_string();
        assert!(
            err.contains("restricted api 'health' can not be specified in multiple config groups"),
            "{err}"
        );
        let err = Access::new(&[], &[a.clone(), b], &[]).unwrap_err().to_string();
        assert!(
            err.contains("restricted protocol 'health' can not be specified in multiple config groups"),
            "{err}"
        );
        assert!(
            HeaderRestriction::parse_grpc("trace,trace:k=v")
                .unwrap_err()
                .contains("restricted protocol 'trace'")
        );
        // The same group on HTTP and on gRPC is fine: two flags, two protocols.
        assert!(Access::new(std::slice::from_ref(&a), std::slice::from_ref(&a), &[]).is_ok());
    }

    #[test]
    fn header_checks_follow_triton() {
        let r = HeaderRestriction::parse_http("inference:Infer-Key=secret-value").unwrap();
        let access = Access::new(std::slice::from_ref(&r), std::slice::from_ref(&r), &[]).unwrap();
        assert!(!access.restricted(Protocol::Http, Group::Health));
        assert_eq!(access.check(Protocol::Http, Group::Health, lookup(&[])), Ok(None));
        let e = access.check(Protocol::Http, Group::Inference, lookup(&[])).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Restricted);
        assert_eq!(e.kind.mapping().http_status, 403);
        assert_eq!(e.message, "This API is restricted, expecting header 'Infer-Key'");
        let wrong = [("infer-key", "other")];
        assert!(access.check(Protocol::Http, Group::Inference, lookup(&wrong)).is_err());
        let right = [("infer-key", "secret-value")];
        assert_eq!(access.check(Protocol::Http, Group::Inference, lookup(&right)), Ok(None));
        let e = access
            .check(Protocol::Grpc, Group::Inference, lookup(&right))
            .unwrap_err();
        assert_eq!(e.kind.mapping().grpc_code, 14, "UNAVAILABLE, as Triton");
        assert_eq!(
            e.message,
            "This protocol is restricted, expecting header 'triton-grpc-protocol-infer-key'"
        );
        let grpc_right = [("triton-grpc-protocol-infer-key", "secret-value")];
        assert_eq!(
            access.check(Protocol::Grpc, Group::Inference, lookup(&grpc_right)),
            Ok(None)
        );
        assert!(!format!("{access:?}").contains("secret-value"));
    }

    #[test]
    fn bearer_tokens_per_group() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "tokens", "app:app-token-0123456789\n");
        let files = [TokenFile::parse(&format!("inference,metadata:{}", path.display())).unwrap()];
        let access = Access::new(&[], &[], &files).unwrap();
        let ok = [("authorization", "Bearer app-token-0123456789")];
        for p in [Protocol::Http, Protocol::Grpc] {
            assert_eq!(access.check(p, Group::Inference, lookup(&ok)), Ok(Some("app".into())));
            assert_eq!(access.check(p, Group::Metadata, lookup(&ok)), Ok(Some("app".into())));
            let e = access.check(p, Group::Inference, lookup(&[])).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Unauthenticated);
            let bad = [("authorization", "Bearer wrong-token-0123456789")];
            let e = access.check(p, Group::Inference, lookup(&bad)).unwrap_err();
            assert_eq!(e.message, "invalid token for the 'inference' API");
            assert_eq!(access.check(p, Group::Statistics, lookup(&[])), Ok(None));
        }
        assert!(!format!("{access:?}").contains("app-token"));
        let twice = [files[0].clone(), files[0].clone()];
        assert!(Access::new(&[], &[], &twice).is_err());
    }

    #[test]
    fn every_route_and_rpc_has_a_group() {
        for route in [
            "/v2",
            "/v2/health/live",
            "/v2/health/ready",
            "/v2/models/stats",
            "/v2/models/{model}",
            "/v2/models/{model}/versions/{version}",
            "/v2/models/{model}/ready",
            "/v2/models/{model}/versions/{version}/ready",
            "/v2/models/{model}/config",
            "/v2/models/{model}/versions/{version}/config",
            "/v2/models/{model}/stats",
            "/v2/models/{model}/versions/{version}/stats",
            "/v2/models/{model}/infer",
            "/v2/models/{model}/versions/{version}/infer",
            "/v2/models/{model}/explain",
            "/v2/models/{model}/versions/{version}/explain",
            "/v2/repository/index",
            "/v2/repository/models/{model}/load",
            "/v2/repository/models/{model}/unload",
            "/v2/models/{model}/labels",
            "/v2/models/{model}/drift",
            "/v2/models/{model}/versions/{version}/drift",
            "/v2/models/{model}/labels/{label}",
            "/v2/models/{model}/default",
            "/v2/models/{model}/rollback",
            "/v2/models/{model}/traffic",
            "/v2/models/{model}/shadow",
            "/v2/models/{model}/feedback",
            "/v2/models/{model}/quality",
            "/v2/models/{model}/versions/{version}/fairness",
            "/v2/models/{model}/trace/setting",
            "/v2/trace/setting",
            "/v2/logging",
            "/v2/systemsharedmemory/status",
            "/v2/cudasharedmemory/region/{region}/register",
        ] {
            assert!(http_group(route).is_some(), "{route}");
        }
        assert_eq!(http_group("/v2/cudasharedmemory/status"), Some(Group::SharedMemory));
        assert_eq!(http_group("/v2/models/{model}/trace/setting"), Some(Group::Trace));
        assert_eq!(http_group("/v2/health/live"), Some(Group::Health));
        assert_eq!(http_group("/v2/models/{model}/feedback"), Some(Group::Inference));
        assert_eq!(http_group("/v2/models/{model}/quality"), Some(Group::Statistics));
        assert_eq!(http_group("/v2/models/{model}/drift"), Some(Group::Statistics));
        assert_eq!(http_group("/v2/models/{model}/explain"), Some(Group::Inference));
        assert_eq!(http_group("/v2/models/{model}/rollback"), Some(Group::ModelRepository));
        assert_eq!(http_group("/v2/models/{model}/card"), Some(Group::Metadata));
        assert_eq!(grpc_group("/grpc.health.v1.Health/Check"), Some(Group::Health));
        assert_eq!(
            grpc_group("/inference.GRPCInferenceService/ModelStreamInfer"),
            Some(Group::Inference)
        );
        assert_eq!(grpc_group("/inference.GRPCInferenceService/Nope"), None);
    }
}
