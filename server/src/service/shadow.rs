//! Shadow mirroring: a sampled share of a model's production requests is
//! also run on the policy's shadow target once the primary has answered, and
//! the two answers are compared.
//!
//! - **Planned before the primary runs** ([`Service::plan_shadow`]): the
//!   sample is drawn, the target resolved, its inputs checked against the
//!   primary's, load and the in-flight bound checked, and the request's
//!   tensors kept (their buffers are shared, not copied).
//! - **Launched after the primary's answer** ([`Service::launch_shadow`]): a
//!   task submits the copy as a shadow job (behind every other request of
//!   the target's queue, its own deadline), compares, and records the pair
//!   (metrics, the model's [`Report`], the prediction log through the
//!   observers, marked shadow, under the primary's request id). The primary's
//!   latency and errors never wait on it.
//! - **Batched**: a copy at the head of the target's queue waits up to the
//!   policy's `batch_wait_ms` for more copies to share its batch.
//! - **Shed first**: no copy while a request waits in the primary's or the
//!   target's queue, every primary instance is running, the process's CPU
//!   load is at `max_cpu_load`, or `in_flight` copies are running; a copy
//!   past its deadline is abandoned. Each is counted by reason.
//! - **The gate**, when the policy has one, decides once and applies its
//!   action as a traffic override (audited as `shadow_gate`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::observe::{self, Finished};
use super::{InferRequest, InferResponse, Param, Service};
use crate::access::Actor;
use crate::error::{Error, ErrorKind, Result};
use crate::metrics::{self, OutputCounts, Protocol, Traffic};
use crate::registry::VersionHandle;
use crate::tensor::Tensor;
use crate::traffic::compare::{self, OutputDiff};
use crate::traffic::report::{Outcome, Pair, Report};
use crate::traffic::{OnFail, OnPass, Shadow, TrafficPolicy};

/// One model's shadow experiment: the settings it runs under, its bound and its report.
#[derive(Debug)]
pub struct Experiment {
    /// The policy's `shadow` section; a different one starts a new experiment.
    spec: Shadow,
    permits: Arc<Semaphore>,
    report: Mutex<Report>,
    /// Set once the gate has decided.
    decided: AtomicBool,
    /// Copies not mirrored or not compared, by reason.
    dropped: Mutex<HashMap<&'static str, u64>>,
}

impl Experiment {
    fn new(spec: &Shadow) -> Experiment {
        Experiment {
            spec: spec.clone(),
            permits: Arc::new(Semaphore::new(spec.in_flight as usize)),
            report: Mutex::new(Report::new()),
            decided: AtomicBool::new(false),
            dropped: Mutex::new(HashMap::new()),
        }
    }

    fn drop_copy(&self, model: &str, reason: &'static str) {
        *self.dropped.lock().entry(reason).or_default() += 1;
        metrics::shadow_dropped(model, reason);
    }
}

/// The experiments of every model, by the primary's model name.
#[derive(Debug, Default)]
pub struct Mirror {
    experiments: Mutex<HashMap<String, Arc<Experiment>>>,
}

impl Mirror {
    /// The model's experiment under `spec`: the running one, or a new one
    /// (and a new report) when the settings changed.
    fn experiment(&self, model: &str, spec: &Shadow) -> Arc<Experiment> {
        let mut all = self.experiments.lock();
        match all.get(model) {
            Some(e) if e.spec == *spec => e.clone(),
            _ => {
                let e = Arc::new(Experiment::new(spec));
                all.insert(model.to_string(), e.clone());
                e
            }
        }
    }

    fn get(&self, model: &str) -> Option<Arc<Experiment>> {
        self.experiments.lock().get(model).cloned()
    }
}

/// A copy decided on before the primary runs.
#[derive(Debug)]
pub struct Planned {
    /// The primary's model.
    model: String,
    experiment: Arc<Experiment>,
    target: Arc<VersionHandle>,
    _permit: OwnedSemaphorePermit,
    inputs: Vec<Tensor>,
    outputs: Vec<String>,
    parameters: Vec<(String, Param)>,
    /// The id both records of the pair carry: the request's, or a generated one.
    pub id: String,
}

/// Requests waiting: the version has no spare capacity now, so no copy is
/// made. (A looser bound, more than a batch waiting, let a saturated server
/// spend ~40 % of its throughput on copies: `benches/shadow.sh`.)
fn busy(h: &VersionHandle) -> bool {
    h.queue.depth() > 0
}

/// The primary also counts as busy while every instance is running a batch
/// (the target's may be running the previous copy: that is what `in_flight`
/// bounds).
fn saturated(h: &VersionHandle) -> bool {
    busy(h) || h.queue.running() >= h.instances.max(1)
}

/// The target takes the primary's inputs: same names and datatypes.
fn same_inputs(a: &VersionHandle, b: &VersionHandle) -> bool {
    a.inputs.len() == b.inputs.len()
        && a.inputs.iter().all(|i| {
            b.inputs
                .iter()
                .any(|j| j.name == i.name && j.datatype == i.datatype && j.optional == i.optional)
        })
}

impl Service {
    /// Decides whether `request`, routed to `primary`, is mirrored; `None`
    /// when the model has no shadow, the draw missed, or the copy is shed
    /// (counted).
    pub(super) fn plan_shadow(&self, request: &InferRequest, primary: &Arc<VersionHandle>) -> Option<Planned> {
        if request.traffic != Traffic::Production {
            return None;
        }
        let registry = &self.inner.registry;
        let entry = registry.get(&request.model)?;
        let spec = entry.traffic()?.0.shadow.as_ref()?;
        if spec.sample_rate < 1.0 && fastrand::f64() >= spec.sample_rate {
            return None;
        }
        let experiment = self.inner.mirror.experiment(&request.model, spec);
        let model = request.model.as_str();
        let target = match &spec.model {
            None => entry.resolve(model, Some(&spec.target.as_request())),
            Some(other) => registry.resolve(other, Some(&spec.target.as_request())),
        };
        let Ok(target) = target else {
            experiment.drop_copy(model, "unavailable");
            return None;
        };
        if Arc::ptr_eq(&target, primary) {
            experiment.drop_copy(model, "same_target");
            return None;
        }
        if !same_inputs(primary, &target) {
            experiment.drop_copy(model, "signature");
            return None;
        }
        if saturated(primary) || busy(&target) {
            experiment.drop_copy(model, "load");
            return None;
        }
        if spec.max_cpu_load < 1.0 && crate::util::cpu::load() >= spec.max_cpu_load {
            experiment.drop_copy(model, "cpu");
            return None;
        }
        let Ok(permit) = experiment.permits.clone().try_acquire_owned() else {
            experiment.drop_copy(model, "in_flight");
            return None;
        };
        let id = if request.id.is_empty() {
            crate::util::hex(&fastrand::u128(..).to_le_bytes())
        } else {
            request.id.clone()
        };
        Some(Planned {
            model: model.to_string(),
            experiment,
            target,
            _permit: permit,
            inputs: request.inputs.clone(),
            outputs: request.outputs.clone(),
            parameters: request.parameters.clone(),
            id,
        })
    }

    /// Starts the copy once the primary has its answer; returns at once.
    pub(super) fn launch_shadow(
        &self,
        plan: Planned,
        primary: &Result<InferResponse>,
        primary_latency: Duration,
        primary_wanted: &[bool],
        protocol: Protocol,
    ) {
        let primary_side = match primary {
            // The tensors' buffers are shared with the response, not copied.
            Ok(r) => Ok((r.outputs.clone(), r.version.clone())),
            Err(e) => Err(e.message.clone()),
        };
        let received = SystemTime::now()
            .checked_sub(primary_latency)
            .unwrap_or_else(SystemTime::now);
        // Both sides' latency leaves out their time in the queue (copies wait
        // behind production and for their batch to fill).
        let queued = primary.as_ref().map_or(Duration::ZERO, |r| r.timings.queue);
        let primary_latency = primary_latency.saturating_sub(queued);
        let service = self.clone();
        let wanted = primary_wanted.to_vec();
        tokio::spawn(async move {
            service
                .mirror_one(plan, primary_side, primary_latency, received, wanted, protocol)
                .await;
        });
    }

    async fn mirror_one(
        &self,
        plan: Planned,
        primary: std::result::Result<(Vec<Tensor>, String), String>,
        primary_latency: Duration,
        received: SystemTime,
        primary_wanted: Vec<bool>,
        protocol: Protocol,
    ) {
        let Planned {
            model,
            experiment,
            target,
            _permit,
            inputs,
            outputs,
            parameters,
            id,
        } = plan;
        let observers = &self.inner.observers;
        let wanted: Vec<bool> = observers
            .iter()
            .zip(&primary_wanted)
            .map(|(o, &w)| o.wants_linked(&target, w))
            .collect();
        let kept = wanted.contains(&true).then(|| inputs.clone());
        let timeout = Duration::from_millis(experiment.spec.timeout_ms);
        let started = Instant::now();
        let run = self.run_shadow_job(&target, inputs, outputs, &parameters, started, &experiment.spec);
        let result = match tokio::time::timeout(timeout, run).await {
            Err(_) => Err(Error::new(ErrorKind::Timeout, "the shadow copy passed its deadline")),
            Ok(r) => r,
        };
        let queued = result.as_ref().map_or(Duration::ZERO, |r| r.timings.queue);
        let shadow_latency = started.elapsed().saturating_sub(queued);
        match &result {
            Err(e) if e.kind == ErrorKind::Timeout => return experiment.drop_copy(&model, "deadline"),
            Err(e) if e.kind == ErrorKind::Unavailable => return experiment.drop_copy(&model, "unavailable"),
            _ => {}
        }
        let result = result.map(|output| InferResponse {
            model: target.model.clone(),
            version: target.version_label.clone(),
            id: id.clone(),
            outputs: output.outputs,
            timings: output.timings,
            trace: None,
        });
        let (outcome, diffs, error, primary_version) = match (&primary, &result) {
            (Ok((p, v)), Ok(s)) => {
                let diffs = compare::compare(p, &s.outputs, &experiment.spec.compare);
                let outcome = if diffs.iter().all(OutputDiff::matches) {
                    Outcome::Match
                } else {
                    Outcome::Mismatch
                };
                (outcome, diffs, None, v.clone())
            }
            (Ok((_, v)), Err(e)) => (Outcome::ShadowError, Vec::new(), Some(e.message.clone()), v.clone()),
            (Err(m), Ok(_)) => (Outcome::PrimaryError, Vec::new(), Some(m.clone()), String::new()),
            (Err(_), Err(e)) => (Outcome::BothError, Vec::new(), Some(e.message.clone()), String::new()),
        };
        record_metrics(&model, outcome, &diffs, primary_latency, shadow_latency);
        let done = Finished {
            handle: &target,
            protocol,
            id: &id,
            label: None,
            elapsed: shadow_latency,
            result: &result,
            trace: None,
            parent: None,
            traffic: Traffic::Shadow,
            group: None,
        };
        observe::notify(observers, &wanted, &done, kept);
        let pair = Pair {
            id,
            time: received,
            primary_version,
            outcome,
            outputs: diffs,
            error,
            primary_latency,
            shadow_latency,
        };
        let gate = experiment.spec.promote.as_ref();
        // Read before the report's lock: each version's quality has its own.
        let quality = gate
            .filter(|g| g.min_labelled.is_some())
            .and_then(|_| self.quality_input(&model, &pair.primary_version, &target));
        let verdict = {
            let mut report = experiment.report.lock();
            report.add(&pair);
            let mut input = report.totals().gate_input();
            input.quality = quality;
            match gate.and_then(|g| g.decide(&input)) {
                Some(v) if !experiment.decided.swap(true, Ordering::AcqRel) => {
                    report.set_verdict(v.clone());
                    Some(v)
                }
                _ => None,
            }
        };
        if let Some(v) = verdict {
            self.apply_gate(&model, &experiment.spec, v.passed, &v.reason).await;
        }
    }

    /// Live quality of the pair's primary version and of the shadow's target, for the gate.
    fn quality_input(
        &self,
        model: &str,
        primary_version: &str,
        target: &VersionHandle,
    ) -> Option<crate::traffic::gate::QualityInput> {
        let primary = self.inner.registry.resolve(model, Some(primary_version)).ok()?;
        let p = primary.quality.as_ref()?.report().window;
        let s = target.quality.as_ref()?.report().window;
        Some(crate::traffic::gate::QualityInput {
            primary_labelled: p.labelled,
            shadow_labelled: s.labelled,
            primary_accuracy: p.accuracy,
            shadow_accuracy: s.accuracy,
            primary_mae: p.mae,
            shadow_mae: s.mae,
        })
    }

    async fn run_shadow_job(
        &self,
        target: &Arc<VersionHandle>,
        inputs: Vec<Tensor>,
        outputs: Vec<String>,
        parameters: &[(String, Param)],
        started: Instant,
        spec: &Shadow,
    ) -> Result<crate::batching::JobOutput> {
        let (mut job, rx) = crate::admission::prepare_job(
            target,
            inputs,
            outputs,
            parameters,
            started,
            self.inner.max_tensor_elements,
        )?;
        job.background = Some(crate::batching::Background::Shadow);
        job.timeout = Some(Duration::from_millis(spec.timeout_ms));
        job.batch_wait = Duration::from_millis(spec.batch_wait_ms);
        target.queue.submit(job)?;
        rx.await
            .map_err(|_| Error::internal("the executor stopped before answering"))?
    }

    /// Applies the gate's verdict: promote (the shadow target becomes the
    /// default; canaries and the shadow end) or stop (the shadow ends).
    async fn apply_gate(&self, model: &str, spec: &Shadow, passed: bool, reason: &str) {
        let Some(gate) = &spec.promote else { return };
        let Some(entry) = self.inner.registry.get(model) else {
            return;
        };
        let Some((current, _)) = entry.traffic() else { return };
        // The policy may have moved on since this pair was planned.
        if current.shadow.as_ref() != Some(spec) {
            return;
        }
        let next = match (passed, gate.on_pass, gate.on_fail) {
            (true, OnPass::Promote, _) => TrafficPolicy {
                default: Some(spec.target.clone()),
                canary: Vec::new(),
                sticky_key: current.sticky_key.clone(),
                shadow: None,
            },
            (false, _, OnFail::Stop) => TrafficPolicy {
                shadow: None,
                ..current.clone()
            },
            _ => {
                tracing::info!(model, verdict = reason, "shadow gate decided (report only)");
                return;
            }
        };
        let deployer = &self.inner.deployer;
        if let Err(e) = deployer.shadow_gate(model, next, &Actor::ShadowGate, reason).await {
            tracing::warn!(model, error = %e.message, "the shadow gate's action failed");
        }
    }

    /// The shadow report of a model: its experiment's totals, window, worst
    /// divergences and verdict, or `"active": false` when it never had one.
    pub fn shadow_report(&self, model: &str) -> Result<serde_json::Value> {
        let entry = self
            .inner
            .registry
            .get(model)
            .ok_or_else(|| Error::not_found(format!("model '{model}' is not loaded")))?;
        let spec = entry.traffic().and_then(|(p, _)| p.shadow.clone());
        let mut head = serde_json::Map::new();
        head.insert("model".into(), model.into());
        let experiment = self.inner.mirror.get(model);
        let active = spec.is_some() && experiment.as_ref().is_some_and(|e| Some(&e.spec) == spec.as_ref());
        head.insert("active".into(), active.into());
        let Some(e) = experiment else {
            head.insert("shadow".into(), serde_json::to_value(&spec).unwrap_or_default());
            return Ok(serde_json::Value::Object(head));
        };
        head.insert("shadow".into(), serde_json::to_value(&e.spec).unwrap_or_default());
        let in_flight = (e.spec.in_flight as usize).saturating_sub(e.permits.available_permits());
        head.insert("in_flight".into(), in_flight.into());
        let dropped: serde_json::Map<_, _> = e
            .dropped
            .lock()
            .iter()
            .map(|(k, v)| (k.to_string(), (*v).into()))
            .collect();
        head.insert("dropped".into(), dropped.into());
        Ok(e.report.lock().to_json(head))
    }
}

fn record_metrics(model: &str, outcome: Outcome, diffs: &[OutputDiff], primary: Duration, shadow: Duration) {
    let compared = matches!(outcome, Outcome::Match | Outcome::Mismatch);
    metrics::shadow_pair(
        model,
        outcome.label(),
        compared.then_some((primary.as_secs_f64(), shadow.as_secs_f64())),
    );
    for d in diffs {
        let result = match d {
            d if !d.present => "missing",
            d if !d.shape_match => "shape",
            d if !d.datatype_match => "datatype",
            d if d.matches() => "match",
            _ => "mismatch",
        };
        let counts = OutputCounts {
            result,
            exact: d.exact,
            within: d.within - d.exact,
            outside: d.elements - d.within,
            max_abs: (d.elements > 0).then_some(d.max_abs),
            top_k: (d.topk_agree, d.topk_rows - d.topk_agree),
        };
        metrics::shadow_output(model, &d.name, &counts);
    }
}
