//! Why a version failed to load, as a type: each kind has one row in
//! [`FailureKind::mapping`] that decides the error kind (and so the HTTP
//! status and gRPC code), the audit action and the metric label. Failures the
//! repository's content causes answer 400 / INVALID_ARGUMENT; failures of the
//! server itself (executors that cannot start, the loader pool, a load task
//! that died) answer 500 / INTERNAL.

use std::fmt;

use crate::error::{Error, ErrorKind};

/// The step of the deploy pipeline that refused a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The model file cannot be read (missing, too large, not a regular file).
    Read,
    /// The config is invalid or disagrees with the model file (this also
    /// covers a malformed warm-up or golden-set file).
    Config,
    /// The runtime refused the model file.
    Model,
    /// The version's executors could not be built or started.
    Build,
    /// A warm-up request failed.
    Warmup,
    /// A golden case gave a wrong answer or failed.
    Golden,
    /// The golden set's latency budget was exceeded (or a budget run failed).
    Budget,
    /// The drift reference profile or drift settings are invalid.
    DriftReference,
    /// The server could not run the load (the loader pool closed, a load task died).
    Resources,
}

/// One row of the failure table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureMapping {
    /// What the client is answered (status code and gRPC code via [`ErrorKind::mapping`]).
    pub error: ErrorKind,
    /// The audit trail's action for the refusal.
    pub audit_action: &'static str,
    /// The `reason` label of the load-failure metric.
    pub label: &'static str,
}

impl FailureKind {
    /// The table: the only place where a load failure's consequences are decided.
    pub const fn mapping(self) -> FailureMapping {
        use ErrorKind::{Internal, InvalidArgument};
        let (error, audit_action, label) = match self {
            FailureKind::Read => (InvalidArgument, "load", "read"),
            FailureKind::Config => (InvalidArgument, "load", "config"),
            FailureKind::Model => (InvalidArgument, "load", "model"),
            FailureKind::Build => (Internal, "load", "build"),
            FailureKind::Warmup => (InvalidArgument, "load", "warmup"),
            FailureKind::Golden => (InvalidArgument, "validation_failed", "golden"),
            FailureKind::Budget => (InvalidArgument, "validation_failed", "budget"),
            FailureKind::DriftReference => (InvalidArgument, "load", "drift_reference"),
            FailureKind::Resources => (Internal, "load", "resources"),
        };
        FailureMapping {
            error,
            audit_action,
            label,
        }
    }
}

/// A version refused by the deploy pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadFailure {
    /// Which step refused it.
    pub kind: FailureKind,
    /// What went wrong, for the client, the index and the audit trail.
    pub message: String,
}

impl LoadFailure {
    /// A failure of `kind`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> LoadFailure {
        LoadFailure {
            kind,
            message: message.into(),
        }
    }

    /// The same failure, its message prefixed with the model and version.
    pub fn at(self, model: &str, version: i64) -> LoadFailure {
        LoadFailure {
            kind: self.kind,
            message: format!("model '{model}' version {version}: {}", self.message),
        }
    }

    /// This failure's row of the table.
    pub fn mapping(&self) -> FailureMapping {
        self.kind.mapping()
    }
}

impl fmt::Display for LoadFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<LoadFailure> for Error {
    fn from(f: LoadFailure) -> Error {
        Error::new(f.kind.mapping().error, f.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_faults_are_500_and_content_faults_400() {
        for kind in [FailureKind::Build, FailureKind::Resources] {
            assert_eq!(kind.mapping().error.mapping().http_status, 500, "{kind:?}");
            assert_eq!(kind.mapping().error.mapping().grpc_code, 13, "{kind:?}");
        }
        for kind in [
            FailureKind::Read,
            FailureKind::Config,
            FailureKind::Model,
            FailureKind::Warmup,
            FailureKind::Golden,
            FailureKind::Budget,
            FailureKind::DriftReference,
        ] {
            assert_eq!(kind.mapping().error.mapping().http_status, 400, "{kind:?}");
        }
        assert_eq!(FailureKind::Golden.mapping().audit_action, "validation_failed");
        assert_eq!(FailureKind::Budget.mapping().audit_action, "validation_failed");
        assert_eq!(FailureKind::Build.mapping().audit_action, "load");
    }
}
