//! Explanations of one row (`POST /v2/models/{m}/explain`): the request is
//! checked like an inference request, its settings read from its parameters,
//! the reference point taken from the version's drift reference profile, and
//! the method's perturbed rows ([`crate::explain::Plan`]) run through the
//! version's own queue and batcher as background work.
//!
//! - **Yields to traffic**: the rows go in jobs of at most `max_batch_size`
//!   rows, marked [`Background::Explanation`]: queued behind every production
//!   request, at most [`IN_FLIGHT_JOBS`] of them queued or running per call,
//!   so a production request waits for one batch at most, and paced
//!   (`pace::Pace`): a call works at most [`SHARE`] of its time.
//! - **Bounded**: at most [`MAX_CONCURRENT`] calls per server (more: 503 at
//!   once); evaluations per call by `max_evaluations` (at most
//!   [`MAX_EVALUATIONS`]; a method that needs more is refused before any
//!   work); time per call by `timeout_ms` (at most [`MAX_TIMEOUT_MS`]): past
//!   it the call answers 504 and its jobs leave the queue (their replies are
//!   dropped, and each carries the call's deadline).
//! - **Counted apart**: not in Triton's statistics, the request metrics, the
//!   rollback window, drift or the prediction log; in
//!   `switchyard_explanations_total` and
//!   `switchyard_explanation_evaluations_total`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{Semaphore, oneshot};

use super::{InferRequest, Param, Service};
use crate::admission::prepare_job;
use crate::batching::{Background, JobOutput};
use crate::error::{Error, ErrorKind, Result};
use crate::explain::{Method, Plan, ROW_REFERENCE, ROW_X, default_target};
use crate::metrics;
use crate::registry::VersionHandle;
use crate::tensor::{DataType, Tensor, TensorData};
use pace::Pace;

mod pace;
pub use pace::{SHARE, YIELD_CPU_LOAD};

/// Explanation calls running at once per server.
pub const MAX_CONCURRENT: usize = 2;
/// `max_evaluations` when the request sets none.
pub const DEFAULT_EVALUATIONS: u64 = 1024;
/// Largest `max_evaluations` a request may set.
pub const MAX_EVALUATIONS: u64 = 16_384;
/// `timeout_ms` when the request sets none.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// Largest `timeout_ms` a request may set.
pub const MAX_TIMEOUT_MS: u64 = 60_000;
/// Jobs of one call queued or running at once: one computing, one ready
/// behind it.
pub const IN_FLIGHT_JOBS: usize = 2;

/// The request parameters an explanation reads (others are refused).
const PARAMETERS: &[&str] = &[
    "method",
    "input",
    "output",
    "target",
    "max_evaluations",
    "timeout_ms",
    "seed",
];

/// The server's bound on concurrent explanations.
#[derive(Debug)]
pub struct Explanations {
    /// [`MAX_CONCURRENT`] permits; a call holds one while it runs and fails
    /// at once when none is left.
    permits: Arc<Semaphore>,
}

impl Default for Explanations {
    fn default() -> Explanations {
        Explanations {
            permits: Arc::new(Semaphore::new(MAX_CONCURRENT)),
        }
    }
}

/// One feature's attribution.
#[derive(Debug, Clone, Serialize)]
pub struct FeatureAttribution {
    /// Flat index within the input's row.
    pub feature: usize,
    /// Its value in the explained row.
    pub value: f64,
    /// Its reference value (the profile's mean).
    pub reference: f64,
    /// Its share of `prediction - baseline` (Shapley), or what replacing it
    /// by the reference takes away (occlusion).
    pub attribution: f64,
}

/// An explanation, as the HTTP frontend returns it.
#[derive(Debug, Clone, Serialize)]
pub struct ExplainResponse {
    /// Model name.
    pub model_name: String,
    /// The version that computed it.
    pub model_version: String,
    /// The request's id (left out when empty).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// `occlusion` or `shapley`.
    pub method: &'static str,
    /// The explained input.
    pub input: String,
    /// The output whose element is explained.
    pub output: String,
    /// Element index within the output's row.
    pub target: usize,
    /// f(x)[target].
    pub prediction: f64,
    /// f(reference)[target].
    pub baseline: f64,
    /// Per feature of the input's row.
    pub attributions: Vec<FeatureAttribution>,
    /// Shapley: permutations sampled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permutations: Option<usize>,
    /// Shapley: the seed that drew them (send it back to reproduce them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Rows the model evaluated.
    pub evaluations: usize,
    /// Time the call took.
    pub elapsed_ms: f64,
}

/// What the request's parameters ask for.
struct Settings {
    method: Method,
    input: Option<String>,
    output: Option<String>,
    target: Option<u64>,
    budget: usize,
    timeout: Duration,
    seed: Option<u64>,
}

fn settings(parameters: &[(String, Param)]) -> Result<Settings> {
    let get = |key: &str| parameters.iter().find(|(k, _)| k == key).map(|(_, v)| v);
    if let Some((k, _)) = parameters.iter().find(|(k, _)| !PARAMETERS.contains(&k.as_str())) {
        return Err(Error::invalid(format!(
            "unknown explanation parameter '{}'; known: {}",
            crate::tensor::echo(k),
            PARAMETERS.join(", ")
        )));
    }
    let text = |key: &str| -> Result<Option<String>> {
        match get(key) {
            None => Ok(None),
            Some(Param::Str(s)) => Ok(Some(s.clone())),
            Some(_) => Err(Error::invalid(format!("parameter '{key}' must be a string"))),
        }
    };
    let number = |key: &str| -> Result<Option<u64>> {
        get(key)
            .map(|v| {
                v.as_u64()
                    .ok_or_else(|| Error::invalid(format!("parameter '{key}' must be a non-negative integer")))
            })
            .transpose()
    };
    let method = match text("method")? {
        None => Method::Occlusion,
        Some(m) => Method::parse(&m).ok_or_else(|| {
            Error::invalid(format!(
                "unknown explanation method '{}'; known: occlusion, shapley",
                crate::tensor::echo(&m)
            ))
        })?,
    };
    let budget = number("max_evaluations")?.unwrap_or(DEFAULT_EVALUATIONS);
    if budget > MAX_EVALUATIONS {
        return Err(Error::invalid(format!(
            "max_evaluations {budget} is above the server's limit of {MAX_EVALUATIONS}"
        )));
    }
    let timeout_ms = number("timeout_ms")?.unwrap_or(DEFAULT_TIMEOUT_MS);
    if timeout_ms == 0 || timeout_ms > MAX_TIMEOUT_MS {
        return Err(Error::invalid(format!(
            "timeout_ms {timeout_ms} is outside 1..={MAX_TIMEOUT_MS}"
        )));
    }
    Ok(Settings {
        method,
        input: text("input")?,
        output: text("output")?,
        target: number("target")?,
        budget: budget as usize,
        timeout: Duration::from_millis(timeout_ms),
        seed: number("seed")?,
    })
}

/// What one call works on, checked.
struct Subject {
    handle: Arc<VersionHandle>,
    /// The request's inputs, as sent (one row each).
    inputs: Vec<Tensor>,
    /// Position of the explained input in `inputs`.
    explained: usize,
    output: String,
    max_elements: usize,
    deadline: Instant,
}

impl Service {
    /// Explains one row: attributions of the features of one input to one
    /// element of one output, against the version's reference means.
    pub async fn explain(&self, request: InferRequest) -> Result<ExplainResponse> {
        let handle = self
            .inner
            .registry
            .resolve(&request.model, request.version.as_deref())?;
        let method = match get_method(&request.parameters) {
            Some(m) => m.label(),
            None => "unknown",
        };
        let result = self.explain_on(&handle, request).await;
        let outcome = match &result {
            Ok(_) => "success",
            Err(e) => outcome_of(e),
        };
        metrics::explanation(&handle.model, method, outcome);
        result.map_err(|e| e.error)
    }

    async fn explain_on(
        &self,
        handle: &Arc<VersionHandle>,
        mut request: InferRequest,
    ) -> std::result::Result<ExplainResponse, Refusal> {
        let started = Instant::now();
        let settings = settings(&request.parameters)?;
        let Ok(_permit) = self.inner.explanations.permits.clone().try_acquire_owned() else {
            return Err(Refusal::new(
                "busy",
                Error::unavailable(format!(
                    "the server is running {MAX_CONCURRENT} explanations already; retry later"
                )),
            ));
        };
        if let Some(body) = request.raw_input.take() {
            request.inputs = vec![crate::admission::raw_input(handle, body)?];
        }
        let subject = subject(
            handle,
            request.inputs,
            &settings,
            self.inner.max_tensor_elements,
            started,
        )?;
        let input = &subject.inputs[subject.explained];
        let x = input.values_f64().ok_or_else(|| {
            Error::invalid(format!(
                "input '{}' is BYTES: it has no features to perturb",
                input.name
            ))
        })?;
        if x.is_empty() {
            return Err(Error::invalid(format!("input '{}' has no elements", input.name)).into());
        }
        let reference = reference_means(handle, &input.name, input.datatype, x.len())
            .map_err(|e| Refusal::new("no_reference", e))?;
        let seed = settings.seed.unwrap_or_else(|| fastrand::u64(..));
        let plan = Plan::new(settings.method, x, reference, settings.budget, seed).map_err(|needed| {
            Refusal::new(
                "over_budget",
                Error::invalid(format!(
                    "{} of {} features needs at least {needed} evaluations; max_evaluations is {} (at most \
                     {MAX_EVALUATIONS})",
                    settings.method.label(),
                    plan_features(&subject),
                    settings.budget
                )),
            )
        })?;
        let run = evaluate(&subject, &plan, settings.target);
        let (target, values) = match tokio::time::timeout_at(subject.deadline.into(), run).await {
            Ok(r) => r?,
            Err(_) => return Err(deadline(&settings).into()),
        };
        let attributions = plan.attributions(&values);
        let shapley = settings.method == Method::Shapley;
        Ok(ExplainResponse {
            model_name: handle.model.clone(),
            model_version: handle.version_label.clone(),
            id: request.id,
            method: settings.method.label(),
            input: subject.inputs[subject.explained].name.clone(),
            output: subject.output.clone(),
            target,
            prediction: values[ROW_X],
            baseline: values[ROW_REFERENCE],
            attributions: (0..plan.features())
                .map(|i| FeatureAttribution {
                    feature: i,
                    value: plan.x()[i],
                    reference: plan.reference()[i],
                    attribution: attributions[i],
                })
                .collect(),
            permutations: shapley.then(|| plan.permutations()),
            seed: shapley.then_some(seed),
            evaluations: plan.rows(),
            elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }
}

/// A failed call and its `outcome` label, when more specific than the error's.
struct Refusal {
    outcome: Option<&'static str>,
    error: Error,
}

impl Refusal {
    fn new(outcome: &'static str, error: Error) -> Refusal {
        Refusal {
            outcome: Some(outcome),
            error,
        }
    }
}

impl From<Error> for Refusal {
    fn from(error: Error) -> Refusal {
        Refusal { outcome: None, error }
    }
}

fn outcome_of(r: &Refusal) -> &'static str {
    r.outcome.unwrap_or(r.error.kind.mapping().label)
}

fn get_method(parameters: &[(String, Param)]) -> Option<Method> {
    match parameters.iter().find(|(k, _)| k == "method").map(|(_, v)| v) {
        None => Some(Method::Occlusion),
        Some(Param::Str(s)) => Method::parse(s),
        Some(_) => None,
    }
}

fn plan_features(s: &Subject) -> usize {
    s.inputs[s.explained].data_elements()
}

fn deadline(settings: &Settings) -> Error {
    Error::timeout(format!(
        "the explanation did not finish within timeout_ms {}; its remaining work was dropped",
        settings.timeout.as_millis()
    ))
}

/// Checks the request like an inference request (the explained row is
/// admitted as a job would be) and picks the input and output.
fn subject(
    handle: &Arc<VersionHandle>,
    inputs: Vec<Tensor>,
    settings: &Settings,
    max_elements: usize,
    started: Instant,
) -> Result<Subject> {
    let model = &handle.model;
    let output = match &settings.output {
        Some(o) => o.clone(),
        None => handle
            .outputs
            .first()
            .map(|o| o.name.clone())
            .ok_or_else(|| Error::invalid(format!("model '{model}' has no outputs")))?,
    };
    let (job, _) = prepare_job(handle, inputs.clone(), vec![output.clone()], &[], started, max_elements)?;
    if job.rows != 1 {
        return Err(Error::invalid(format!(
            "an explanation is of one row; the request has {} (batch size of its inputs)",
            job.rows
        )));
    }
    let spec = handle.outputs.iter().find(|o| o.name == output);
    if spec.is_some_and(|o| o.datatype == DataType::Bytes) {
        return Err(Error::invalid(format!(
            "output '{output}' is BYTES: it has no element to explain"
        )));
    }
    let explained = match &settings.input {
        Some(name) => inputs.iter().position(|t| t.name == *name).ok_or_else(|| {
            Error::invalid(format!(
                "input '{}' is not in the request for model '{model}'",
                crate::tensor::echo(name)
            ))
        })?,
        None if inputs.len() == 1 => 0,
        None => {
            return Err(Error::invalid(format!(
                "model '{model}' takes {} inputs: name the one to explain in parameter 'input' (the others are \
                 held fixed)",
                inputs.len()
            )));
        }
    };
    Ok(Subject {
        handle: handle.clone(),
        inputs,
        explained,
        output,
        max_elements,
        deadline: started + settings.timeout,
    })
}

/// The reference point: the profile's means of the input's features
/// (rounded for integer inputs, whose rows cannot hold a fraction).
fn reference_means(handle: &VersionHandle, input: &str, datatype: DataType, features: usize) -> Result<Vec<f64>> {
    let refused = |why: &str| {
        Error::new(
            ErrorKind::FailedPrecondition,
            format!(
                "model '{}' version {} cannot be explained: {why}; ship validation/profile.json (a drift reference \
                 profile with the mean of each of the input's {features} features) or a golden set in the \
                 version's directory",
                handle.model, handle.version
            ),
        )
    };
    let drift = handle
        .drift
        .as_ref()
        .ok_or_else(|| refused("it has no drift reference profile"))?;
    let means = drift.reference_means(input, features).map_err(|why| refused(&why))?;
    let integer = !matches!(
        datatype,
        DataType::Fp16 | DataType::Bf16 | DataType::Fp32 | DataType::Fp64
    );
    Ok(if integer {
        means.iter().map(|m| m.round()).collect()
    } else {
        means
    })
}

/// Runs every row of `plan` through the version's queue; returns the target
/// (the request's, or the argmax of f(x)'s row) and its value on each row.
async fn evaluate(s: &Subject, plan: &Plan, target: Option<u64>) -> Result<(usize, Vec<f64>)> {
    let rows = plan.rows();
    let chunk = s.handle.max_batch_size.max(1);
    let mut values = Vec::with_capacity(rows);
    // x and the reference first (one job when the model batches): f(x) decides the target.
    let head = ROW_REFERENCE + 1;
    let mut first = Vec::with_capacity(head);
    let mut next = 0;
    while next < head {
        let end = (next + chunk).min(head);
        first.push(submit(s, plan, next..end)?);
        next = end;
    }
    let (mut per_row, mut first_values) = (0, Vec::new());
    for rx in first {
        let answer = receive(s, rx).await?;
        per_row = answer.per_row;
        first_values.extend(answer.values);
    }
    let target = match target {
        Some(t) => usize::try_from(t).ok().filter(|&t| t < per_row).ok_or_else(|| {
            Error::invalid(format!(
                "target {t} is outside output '{}', whose rows have {per_row} elements",
                s.output
            ))
        })?,
        None => default_target(&first_values[..per_row]),
    };
    values.extend(first_values.chunks(per_row).map(|r| r[target]));
    let mut in_flight = VecDeque::with_capacity(IN_FLIGHT_JOBS);
    let mut pace = Pace::new(Instant::now());
    while values.len() < rows {
        while in_flight.len() < IN_FLIGHT_JOBS && next < rows {
            pace.wait(s).await;
            let end = (next + chunk).min(rows);
            in_flight.push_back(submit(s, plan, next..end)?);
            next = end;
        }
        let Some(rx) = in_flight.pop_front() else { break };
        let output = receive(s, rx).await?;
        values.extend(output.values.chunks(output.per_row).map(|r| r[target]));
    }
    Ok((target, values))
}

/// The rows of one job's answer.
struct Answer {
    values: Vec<f64>,
    /// Elements per row.
    per_row: usize,
}

type Pending = (usize, oneshot::Receiver<Result<JobOutput>>);

/// Queues rows `range` of `plan` as one background job.
fn submit(s: &Subject, plan: &Plan, range: std::ops::Range<usize>) -> Result<Pending> {
    let batching = s.handle.max_batch_size > 0;
    let rows = range.len();
    let n = plan.features();
    let mut inputs = Vec::with_capacity(s.inputs.len());
    for (i, t) in s.inputs.iter().enumerate() {
        let mut shape = t.shape.clone();
        if batching {
            shape[0] = rows as i64;
        }
        let tensor = if i == s.explained {
            let mut values = vec![0.0; rows * n];
            for (k, row) in range.clone().zip(values.chunks_mut(n)) {
                plan.fill_row(k, row);
            }
            Tensor::from_f64(&t.name, t.datatype, shape, &values)
                .ok_or_else(|| Error::internal(format!("cannot build rows of input '{}'", t.name)))?
        } else {
            repeated(t, shape, rows)
        };
        inputs.push(tensor);
    }
    let (mut job, rx) = prepare_job(
        &s.handle,
        inputs,
        vec![s.output.clone()],
        &[],
        Instant::now(),
        s.max_elements,
    )?;
    job.background = Some(Background::Explanation);
    job.timeout = Some(s.deadline.saturating_duration_since(Instant::now()));
    s.handle.queue.submit(job)?;
    Ok((rows, rx))
}

/// A held-fixed input, its one row repeated `rows` times.
fn repeated(t: &Tensor, shape: Vec<i64>, rows: usize) -> Tensor {
    let data = match &t.data {
        TensorData::Fixed(b) if rows == 1 => TensorData::Fixed(b.clone()),
        TensorData::Fixed(b) => TensorData::Fixed(b.repeat(rows).into()),
        TensorData::Bytes(v) => TensorData::Bytes(v.iter().cycle().take(v.len() * rows).cloned().collect()),
    };
    Tensor {
        name: t.name.clone(),
        datatype: t.datatype,
        shape,
        data,
    }
}

/// Waits for one job and reads its output's values.
async fn receive(s: &Subject, (rows, rx): Pending) -> Result<Answer> {
    let output = rx
        .await
        .map_err(|_| Error::internal("the executor stopped before answering"))?
        .map_err(|e| match e.kind {
            ErrorKind::Timeout => Error::timeout("the explanation passed its deadline (timeout_ms) in the queue"),
            _ => e,
        })?;
    metrics::explanation_evaluations(&s.handle.model, rows as u64);
    let tensor = output
        .outputs
        .into_iter()
        .find(|t| t.name == s.output)
        .ok_or_else(|| Error::internal(format!("the model did not return output '{}'", s.output)))?;
    let values = tensor
        .values_f64()
        .ok_or_else(|| Error::internal(format!("output '{}' is not numeric", s.output)))?;
    let per_row = values.len() / rows.max(1);
    if per_row == 0 || values.len() != per_row * rows {
        return Err(Error::internal(format!(
            "output '{}' has {} elements for {rows} rows",
            s.output,
            values.len()
        )));
    }
    Ok(Answer { values, per_row })
}
