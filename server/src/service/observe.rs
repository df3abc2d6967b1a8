//! What happens after a request ran: statistics and the rollback window,
//! the OTLP span, drift monitoring and the prediction log, each an
//! [`Observer`]. Mirrored (shadow) requests feed the metrics under
//! `traffic="shadow"`, their own statistics counters, spans and the
//! prediction log (marked), never Triton's counts, the rollback window or
//! drift. Before the request runs, each observer says whether it needs the
//! request's tensors; only then are they copied, once per observer that
//! takes them (the last one takes the originals).

use std::time::{Duration, SystemTime};

use crate::error::Result;
use crate::metrics::{Protocol, Traffic};
use crate::otlp;
use crate::predlog::{PredictionLog, PredictionRecord};
use crate::registry::VersionHandle;
use crate::tensor::Tensor;
use crate::trace::TraceContext;

use super::InferResponse;

/// A finished request, as observers see it.
#[derive(Debug)]
pub struct Finished<'a> {
    /// The version that ran it.
    pub handle: &'a VersionHandle,
    /// Its frontend.
    pub protocol: Protocol,
    /// The request's id.
    pub id: &'a str,
    /// The label the request named instead of a version number, if any.
    pub label: Option<&'a str>,
    /// Time since the frontend started on it.
    pub elapsed: Duration,
    /// The outcome.
    pub result: &'a Result<InferResponse>,
    /// The server's span, if traced.
    pub trace: Option<TraceContext>,
    /// The caller's span, if it sent one.
    pub parent: Option<TraceContext>,
    /// Production, or a mirrored copy.
    pub traffic: Traffic,
    /// The request's fairness group, when its version reads it from a request parameter.
    pub group: Option<String>,
}

/// The tensors of a finished request, for an observer that asked for them.
#[derive(Debug, Clone, Default)]
pub struct Payload {
    /// The request's inputs.
    pub inputs: Vec<Tensor>,
    /// The outputs (empty when the request failed).
    pub outputs: Vec<Tensor>,
}

/// One consumer of finished requests.
pub trait Observer: Send + Sync {
    /// Asked once per request before it runs: whether [`Observer::observe`]
    /// will need its tensors. A `true` answer may be a sampling decision.
    fn wants_payload(&self, handle: &VersionHandle) -> bool;

    /// Asked for a shadow copy of a request whose primary got
    /// `primary_wanted` from this observer: by default sampled anew; an
    /// observer whose records are linked follows the primary.
    fn wants_linked(&self, handle: &VersionHandle, primary_wanted: bool) -> bool {
        let _ = primary_wanted;
        self.wants_payload(handle)
    }

    /// Called once per finished request; `payload` is there exactly when
    /// [`Observer::wants_payload`] said so for this request.
    fn observe(&self, done: &Finished<'_>, payload: Option<Payload>);
}

/// Triton's statistics, Prometheus metrics and the rollback window.
#[derive(Debug)]
pub struct Statistics;

impl Observer for Statistics {
    fn wants_payload(&self, _: &VersionHandle) -> bool {
        false
    }

    fn observe(&self, done: &Finished<'_>, _: Option<Payload>) {
        let (h, elapsed, traffic) = (done.handle, done.elapsed, done.traffic);
        let production = traffic == Traffic::Production;
        if production {
            h.health.record(elapsed, done.result.as_ref().err().map(|e| e.kind));
        }
        match done.result {
            Ok(_) => {
                if production {
                    &h.stats.success
                } else {
                    &h.stats.shadow_success
                }
                .record(elapsed);
                h.metrics.success(done.protocol, traffic, elapsed.as_secs_f64());
            }
            Err(e) => {
                if production {
                    &h.stats.fail
                } else {
                    &h.stats.shadow_fail
                }
                .record(elapsed);
                h.metrics.failure(done.protocol, traffic, e.kind, elapsed.as_secs_f64());
            }
        }
    }
}

/// The request's span, exported over OTLP when it is sampled.
#[derive(Debug)]
pub struct Spans(pub otlp::Exporter);

impl Observer for Spans {
    fn wants_payload(&self, _: &VersionHandle) -> bool {
        false
    }

    fn observe(&self, done: &Finished<'_>, _: Option<Payload>) {
        if !self.0.enabled() {
            return;
        }
        let Some(t) = done.trace.filter(TraceContext::sampled) else {
            return;
        };
        let end = SystemTime::now();
        let mut attributes = vec![
            ("model", done.handle.model.clone()),
            ("model.version", done.handle.version_label.clone()),
            ("request.id", done.id.to_string()),
            ("protocol", done.protocol.label().to_string()),
            ("switchyard.traffic", done.traffic.label().to_string()),
        ];
        if let Ok(r) = done.result {
            let us = |d: Duration| d.as_micros().to_string();
            attributes.extend([
                ("queue_us", us(r.timings.queue)),
                ("compute_infer_us", us(r.timings.compute_infer)),
                ("batch_rows", r.timings.batch_rows.to_string()),
            ]);
        }
        self.0.export(otlp::SpanData {
            context: t,
            parent: done.parent.map(|p| p.span_id),
            start: end.checked_sub(done.elapsed).unwrap_or(end),
            end,
            attributes,
            error: done.result.as_ref().err().map(|e| e.message.clone()),
        });
    }
}

/// The version's drift monitor: its sampler decides before the run, so a
/// request it does not sample is never copied; only successful production
/// requests are analysed (a shadow's sample is taken but not submitted).
#[derive(Debug)]
pub struct Drift;

impl Observer for Drift {
    fn wants_payload(&self, handle: &VersionHandle) -> bool {
        handle.drift.as_ref().is_some_and(|d| d.sample())
    }

    fn observe(&self, done: &Finished<'_>, payload: Option<Payload>) {
        if done.traffic == Traffic::Shadow {
            return;
        }
        if let (Some(drift), Ok(_), Some(p)) = (&done.handle.drift, done.result, payload) {
            drift.submit(p.inputs, p.outputs);
        }
    }
}

/// The prediction log, for versions that opted in, sampled per request.
pub struct Predictions(pub PredictionLog);

impl std::fmt::Debug for Predictions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Predictions")
    }
}

impl Observer for Predictions {
    fn wants_payload(&self, handle: &VersionHandle) -> bool {
        handle.log_policy.as_ref().is_some_and(|p| self.0.sample(p))
    }

    /// A shadow copy is logged exactly when its primary was (and its
    /// version logs at all), so the pair's two records are both there.
    fn wants_linked(&self, handle: &VersionHandle, primary_wanted: bool) -> bool {
        primary_wanted && handle.log_policy.is_some()
    }

    fn observe(&self, done: &Finished<'_>, payload: Option<Payload>) {
        let (Some(policy), Some(p)) = (&done.handle.log_policy, payload) else {
            return;
        };
        let now = SystemTime::now();
        self.0.submit(
            policy,
            PredictionRecord {
                time: now.checked_sub(done.elapsed).unwrap_or(now),
                id: done.id.to_string(),
                model: done.handle.model.clone(),
                version: done.handle.version_label.clone(),
                label: done.label.map(str::to_string),
                protocol: done.protocol,
                outcome: done
                    .result
                    .as_ref()
                    .map(|_| ())
                    .map_err(|e| (e.kind, e.message.clone())),
                latency: done.elapsed,
                inputs: p.inputs,
                outputs: p.outputs,
                trace_id: done.trace.map(|t| t.trace_id_hex()),
                traffic: done.traffic,
                fairness: fairness_reader(done),
            },
        );
    }
}

/// The version's fairness reading of a logged record's rows (run later, on the log's thread).
fn fairness_reader(done: &Finished<'_>) -> Option<crate::predlog::Fairness> {
    let q = done.handle.quality.as_ref().filter(|q| q.has_fairness())?.clone();
    let group = done.group.clone();
    Some(crate::predlog::Fairness(std::sync::Arc::new(move |outputs, inputs| {
        q.rows(outputs, inputs, group.as_deref())
            .into_iter()
            .map(|r| crate::predlog::RowFairness {
                group: r.group,
                favourable: r.favourable,
            })
            .collect()
    })))
}

/// Quality and fairness: the version's predictions go to the quality worker
/// (joined with feedback later; counted per group). A shadow copy is kept
/// whenever its primary was, so both versions can be judged on the same ids.
pub struct Quality(pub std::sync::Arc<crate::quality::Monitor>);

impl std::fmt::Debug for Quality {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Quality")
    }
}

impl Observer for Quality {
    fn wants_payload(&self, handle: &VersionHandle) -> bool {
        handle.quality.as_ref().is_some_and(|q| q.sample())
    }

    fn wants_linked(&self, handle: &VersionHandle, primary_wanted: bool) -> bool {
        primary_wanted && handle.quality.is_some()
    }

    fn observe(&self, done: &Finished<'_>, payload: Option<Payload>) {
        let (Some(q), Some(p), Ok(_)) = (&done.handle.quality, payload, done.result) else {
            return;
        };
        if done.id.is_empty() {
            return;
        }
        let inputs = if q.needs_inputs() { p.inputs } else { Vec::new() };
        self.0.submit(crate::quality::monitor::Observation {
            quality: q.clone(),
            id: done.id.to_string(),
            shadow: done.traffic == Traffic::Shadow,
            outputs: p.outputs,
            inputs,
            group: done.group.clone(),
        });
    }
}

/// Hands `done` to every observer; `wanted[i]` is observer `i`'s answer to
/// [`Observer::wants_payload`], `inputs` the copy taken when any said yes.
pub fn notify(observers: &[Box<dyn Observer>], wanted: &[bool], done: &Finished<'_>, inputs: Option<Vec<Tensor>>) {
    let last = wanted.iter().rposition(|&w| w);
    let mut payload = inputs.map(|inputs| Payload {
        inputs,
        outputs: done.result.as_ref().map(|r| r.outputs.clone()).unwrap_or_default(),
    });
    for (i, observer) in observers.iter().enumerate() {
        let given = match (wanted[i], Some(i) == last) {
            (false, _) => None,
            (true, true) => payload.take(),
            (true, false) => payload.clone(),
        };
        observer.observe(done, given);
    }
}
