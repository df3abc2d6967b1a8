//! Who asked for a control action: an API caller or the server itself.

/// Who asked for an action, as the audit trail names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A caller of the API: named by the token it presented (`token:<id>`),
    /// else by its peer address (`peer:<address>`), else `local`.
    Api {
        /// Id of the admin or API token it presented.
        token: Option<String>,
        /// The connection's peer address.
        peer: Option<String>,
    },
    /// Start-up loading.
    Startup,
    /// The repository poller.
    Poll,
    /// The automatic rollback after a promotion breached its budget.
    AutoRollback,
    /// The promotion gate of a shadow experiment.
    ShadowGate,
    /// Retiring every model at shutdown.
    Shutdown,
    /// `switchyard validate`.
    Validate,
}

impl Actor {
    /// The name written to the audit trail.
    pub fn name(&self) -> String {
        match self {
            Actor::Api { token: Some(id), .. } => format!("token:{id}"),
            Actor::Api { peer: Some(p), .. } => format!("peer:{p}"),
            Actor::Api { .. } => "local".into(),
            Actor::Startup => "startup".into(),
            Actor::Poll => "poll".into(),
            Actor::AutoRollback => "auto-rollback".into(),
            Actor::ShadowGate => "shadow-gate".into(),
            Actor::Shutdown => "shutdown".into(),
            Actor::Validate => "validate".into(),
        }
    }

    /// The connection's peer address, when it came over the network.
    pub fn peer(&self) -> Option<&str> {
        match self {
            Actor::Api { peer, .. } => peer.as_deref(),
            _ => None,
        }
    }
}
