//! Inference: route (the registry picks the version), run (admission, the
//! version's queue, its executors), observe (statistics, spans, drift, the
//! prediction log through [`super::observe`]); a sampled share is mirrored
//! to the policy's shadow after the answer ([`super::shadow`]).

use std::sync::Arc;

use tracing::Instrument;

use super::observe::{self, Finished};
use super::{InferRequest, InferResponse, Param, Service};
use crate::admission::prepare_job;
use crate::error::{Error, Result};
use crate::metrics::{self, Protocol, Traffic};
use crate::registry::VersionHandle;
use crate::trace::TraceContext;
use crate::traffic::TrafficPolicy;

/// One rule for both protocols: the policy's header (HTTP header or gRPC
/// metadata) or request parameter (string, integer or boolean value).
fn sticky_key(policy: &TrafficPolicy, request: &InferRequest) -> Option<String> {
    policy.key_of(
        |h| request.headers.as_ref()?.get(h)?.to_str().ok(),
        |name| parameter_text(request, name),
    )
}

/// A request parameter's value as text (string, integer or boolean).
fn parameter_text(request: &InferRequest, name: &str) -> Option<String> {
    request
        .parameters
        .iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| match v {
            Param::Str(s) => Some(s.clone()),
            Param::Int(i) => Some(i.to_string()),
            Param::Uint(u) => Some(u.to_string()),
            Param::Bool(b) => Some(b.to_string()),
            Param::Double(_) => None,
        })
}

impl Service {
    /// Runs an inference request.
    pub async fn infer(&self, mut request: InferRequest) -> Result<InferResponse> {
        let (protocol, traffic) = (request.protocol, request.traffic);
        let routed = self
            .inner
            .registry
            .route(&request.model, request.version.as_deref(), |p| sticky_key(p, &request));
        let handle = match routed {
            Ok((h, reason)) => {
                h.metrics.routed(reason.slot(), reason.label());
                h
            }
            Err(e) => {
                metrics::unrouted_failure(protocol, traffic, e.kind);
                return Err(e);
            }
        };
        if let Some(body) = request.raw_input.take() {
            match crate::admission::raw_input(&handle, body) {
                Ok(t) => request.inputs = vec![t],
                Err(e) => {
                    metrics::unrouted_failure(protocol, traffic, e.kind);
                    return Err(e);
                }
            }
        }
        let _inflight = handle.metrics.start_request();
        // Decided before the inputs move into the queue: copied only when an observer takes them.
        let observers = &self.inner.observers;
        let wanted: Vec<bool> = observers.iter().map(|o| o.wants_payload(&handle)).collect();
        let inputs = wanted.contains(&true).then(|| request.inputs.clone());
        let mut group = None;
        if let Some(q) = &handle.quality {
            // Feedback names the request by its id: one is made when the client sent none (and answered).
            if request.id.is_empty() {
                request.id = crate::util::hex(&fastrand::u128(..).to_le_bytes());
            }
            group = q.group_parameter().and_then(|name| parameter_text(&request, name));
        }
        let mirror = self.plan_shadow(&request, &handle);
        let (id, received, parent) = (request.id.clone(), request.received, request.trace);
        // A mirrored pair's records share one id: the request's, or one made for it.
        let id = mirror.as_ref().map_or(id, |m| m.id.clone());
        let label = request.version.clone().filter(|v| v.parse::<i64>().is_err());
        let trace = match parent {
            Some(p) => Some(p.child()),
            None if self.inner.otlp.enabled() => Some(TraceContext::root()),
            None => None,
        };
        let span = match (&trace, &parent) {
            (Some(t), Some(parent)) => tracing::debug_span!("infer", model = %handle.model, version = handle.version,
                id = %id, trace_id = %t.trace_id_hex(), span_id = %t.span_id_hex(),
                parent_id = %parent.span_id_hex()),
            _ => tracing::debug_span!("infer", model = %handle.model, version = handle.version, id = %id),
        };
        let result = self.run(&handle, request, trace).instrument(span).await;
        let elapsed = received.elapsed();
        if let Some(plan) = mirror {
            self.launch_shadow(plan, &result, elapsed, &wanted, protocol);
        }
        let done = Finished {
            handle: &handle,
            protocol,
            id: &id,
            label: label.as_deref(),
            elapsed,
            result: &result,
            trace,
            parent,
            traffic,
            group,
        };
        observe::notify(observers, &wanted, &done, inputs);
        result
    }

    /// Counts a request the frontend could not decode: a failure that never
    /// reached a model. Returns `decoded` as it was.
    pub fn decoded<T>(&self, protocol: Protocol, traffic: Traffic, decoded: Result<T>) -> Result<T> {
        decoded.inspect_err(|e| metrics::unrouted_failure(protocol, traffic, e.kind))
    }

    async fn run(
        &self,
        handle: &Arc<VersionHandle>,
        request: InferRequest,
        trace: Option<TraceContext>,
    ) -> Result<InferResponse> {
        let (mut job, rx) = prepare_job(
            handle,
            request.inputs,
            request.outputs,
            &request.parameters,
            request.received,
            self.inner.max_tensor_elements,
        )?;
        job.trace = trace;
        handle.queue.submit_or_run(job).await?;
        let output = rx
            .await
            .map_err(|_| Error::internal("the executor stopped before answering"))??;
        let mut outputs = output.outputs;
        let batch_rank = usize::from(handle.max_batch_size > 0);
        for t in &mut outputs {
            if t.shape.len() == batch_rank && handle.outputs.iter().any(|o| o.scalar && o.name == t.name) {
                // A model scalar is `[1]` in the config, and so in the answer.
                t.shape.push(1);
            }
        }
        Ok(InferResponse {
            model: handle.model.clone(),
            version: handle.version_label.clone(),
            id: request.id,
            outputs,
            timings: output.timings,
            trace,
        })
    }
}
