//! Repository and routing control as both frontends offer it: the load
//! request's parameters (`config`, refused `file:` ones), explicit control
//! mode, admin authorization (every refusal audited), then the deploy
//! pipeline (`lifecycle`).

use switchyard_proto::inference::ModelConfig;

use super::Service;
use crate::access::Actor;
use crate::access::admin::Caller;
use crate::config::ControlMode;
use crate::error::{Error, Result};
use crate::lifecycle::LoadReport;
use crate::lifecycle::audit::Event;
use crate::repository;
use crate::traffic::TrafficPolicy;

/// One parameter of a load request, as the frontend decoded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadParam {
    /// A string value.
    Str(String),
    /// Any other type of value.
    Other,
}

/// The `config` override of a load request, if any. `file:` parameters
/// (model files sent through the API) are refused as unsupported; `config`
/// must be a string holding the config as JSON.
pub fn load_config(parameters: &[(String, LoadParam)]) -> Result<Option<&str>> {
    if parameters.iter().any(|(k, _)| k.starts_with("file:")) {
        return Err(Error::unsupported(
            "loading model files through the API ('file:' parameters) is not supported",
        ));
    }
    match parameters.iter().find(|(k, _)| k == "config") {
        None => Ok(None),
        Some((_, LoadParam::Str(c))) => Ok(Some(c)),
        Some((_, LoadParam::Other)) => Err(Error::invalid("parameter 'config' must be a JSON string")),
    }
}

impl Service {
    /// Loads or reloads a model (explicit mode only, admin) with the load
    /// request's parameters as the frontend decoded them (see [`load_config`]).
    pub async fn load_model(&self, model: &str, parameters: &[(String, LoadParam)], caller: &Caller) -> Result<()> {
        let config_json = load_config(parameters)?;
        let actor = self.authorize(caller, "load", model)?;
        self.require_explicit()?;
        repository::validate_model_name(model)?;
        let override_config = config_json
            .map(|j| {
                repository::config::parse_json(j)
                    .map_err(|e| Error::invalid(format!("model '{model}': invalid 'config' parameter: {e}")))
            })
            .transpose()?;
        // The load runs as a task of its own: a client that disconnects does
        // not abandon it half-way; it finishes (or fails) and is audited either way.
        let (service, model) = (self.clone(), model.to_string());
        let load = tokio::spawn(async move { service.load_now(&model, override_config, &actor).await });
        tokio::select! {
            r = load => r.map_err(|e| Error::internal(format!("the load task failed: {e}")))?.map(|_| ()),
            _ = self.inner.stopping.cancelled() => Err(Error::unavailable(
                "the server is shutting down: the load was abandoned",
            )),
        }
    }

    /// Stops routing to every model (at shutdown): in-flight requests finish,
    /// then queues close and executor threads exit.
    pub async fn retire_all(&self) {
        let actor = Actor::Shutdown;
        for name in self.inner.registry.snapshot().keys() {
            let _ = self.inner.deployer.unload(name, &actor).await;
        }
    }

    /// Loads a model whatever the control mode (start-up and polling).
    pub async fn load_now(
        &self,
        model: &str,
        override_config: Option<ModelConfig>,
        actor: &Actor,
    ) -> Result<LoadReport> {
        self.inner
            .deployer
            .load(&self.inner.repo, model, override_config, actor)
            .await
    }

    /// Unloads a model (explicit mode only, admin).
    pub async fn unload_model(&self, model: &str, caller: &Caller) -> Result<()> {
        let actor = self.authorize(caller, "unload", model)?;
        self.require_explicit()?;
        let (service, model) = (self.clone(), model.to_string());
        tokio::spawn(async move { service.inner.deployer.unload(&model, &actor).await })
            .await
            .map_err(|e| Error::internal(format!("the unload task failed: {e}")))?
    }

    /// Points a label at a loaded version (admin).
    pub async fn set_label(&self, model: &str, label: &str, version: &str, caller: &Caller) -> Result<()> {
        let actor = self.authorize(caller, "label", model)?;
        let v = parse_version(version)?;
        self.inner.deployer.set_label(model, label, v, &actor).await
    }

    /// Removes a label (admin).
    pub async fn delete_label(&self, model: &str, label: &str, caller: &Caller) -> Result<()> {
        let actor = self.authorize(caller, "label", model)?;
        self.inner.deployer.delete_label(model, label, &actor).await
    }

    /// Overrides a model's traffic policy with `policy` (JSON of the
    /// `traffic.yaml` structure), or with `None` goes back to the file (admin).
    pub async fn set_traffic(&self, model: &str, policy: Option<&[u8]>, caller: &Caller) -> Result<()> {
        let actor = self.authorize(caller, "traffic", model)?;
        let policy = policy
            .map(|body| {
                let text = std::str::from_utf8(body).map_err(|_| Error::invalid("the policy is not UTF-8"))?;
                TrafficPolicy::from_json(text, "override").map_err(Error::invalid)
            })
            .transpose()?;
        self.inner.deployer.set_traffic(model, policy, &actor).await
    }

    /// A model's effective traffic policy and where it comes from.
    pub fn traffic(&self, model: &str) -> Result<TrafficView> {
        let entry = self
            .inner
            .registry
            .get(model)
            .ok_or_else(|| Error::not_found(format!("model '{model}' is not loaded")))?;
        let (policy, source) = match entry.traffic() {
            Some((p, s)) => (Some(p.clone()), s),
            None => (None, "none"),
        };
        Ok(TrafficView {
            model: model.to_string(),
            source,
            policy,
            file: entry.traffic_file.clone(),
        })
    }

    /// Pins the default route to a version, or `latest` to follow the newest again (admin).
    pub async fn set_default(&self, model: &str, version: &str, caller: &Caller) -> Result<()> {
        let actor = self.authorize(caller, "promote", model)?;
        let v = if version == "latest" {
            None
        } else {
            Some(parse_version(version)?)
        };
        self.inner.deployer.set_default(model, v, &actor).await
    }

    /// Points the default route (or a label) back to a previous version (admin);
    /// returns the version now served.
    pub async fn rollback(&self, model: &str, label: Option<&str>, to: Option<&str>, caller: &Caller) -> Result<i64> {
        let actor = self.authorize(caller, "rollback", model)?;
        let to = to.map(parse_version).transpose()?;
        self.inner.deployer.rollback(model, label, to, &actor, "").await
    }

    fn authorize(&self, caller: &Caller, action: &str, model: &str) -> Result<Actor> {
        let (actor, verdict) = self.inner.admin.authorize(caller);
        if let Err(e) = &verdict {
            self.inner.deployer.audit().record(
                &actor,
                Event {
                    action: "denied",
                    model,
                    version: None,
                    digest: None,
                    ok: false,
                    reason: &format!("{action}: {}", e.message),
                },
            );
        }
        verdict.map(|()| actor)
    }

    fn require_explicit(&self) -> Result<()> {
        if self.inner.control_mode == ControlMode::Explicit {
            Ok(())
        } else {
            Err(Error::unavailable(
                "explicit model load / unload is not allowed unless --model-control-mode=explicit",
            ))
        }
    }
}

/// A model's traffic policy as the admin API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrafficView {
    /// Model name.
    pub model: String,
    /// `override`, `file` or `none`.
    pub source: &'static str,
    /// The effective policy.
    pub policy: Option<TrafficPolicy>,
    /// The policy of `traffic.yaml` (shown also while an override wins).
    pub file: Option<TrafficPolicy>,
}

fn parse_version(v: &str) -> Result<i64> {
    v.parse::<i64>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| Error::invalid(format!("'{}' is not a version number", v.escape_debug())))
}
