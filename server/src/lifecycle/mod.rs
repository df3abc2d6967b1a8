//! Model lifecycle: everything between "a version is on disk" and "a version
//! takes traffic", and what happens after.
//!
//! - [`deploy`]: loads, unloads and routing changes of a model, serialized
//!   per model, audited, published to the `registry` in one swap.
//! - [`pipeline`]: the steps one version passes (read, build, warm-up,
//!   golden set, drift reference), with [`build`] holding the blocking ones;
//!   executors come from a `model::Backend`.
//! - [`failure`]: why a version was refused, typed, with one mapping to
//!   status code, audit action and metric label.
//! - [`rollback`]: the automatic rollback watcher after a promotion.
//! - [`warmup`]: the config's `model_warmup` requests, or synthetic ones at the
//!   configured batch sizes, run on a new version before it is published.
//! - [`golden`]: a version's golden set (`<version>/validation/`) and latency
//!   budget: the gate a version must pass before promotion, and the offline
//!   `switchyard validate` check.
//! - [`audit`]: the append-only JSONL record of every control action.
//! - [`card`]: the model card taken into the entry on load, audited when it changes.
//!
//! The per-version error and latency counts the rollback watches live with
//! the version, in `registry::window`.

pub mod audit;
pub mod build;
pub mod card;
pub mod deploy;
pub mod failure;
pub mod golden;
pub mod pipeline;
pub mod rollback;
pub mod state;
pub mod warmup;

#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

pub use deploy::{Deployer, LoadReport};
pub use failure::{FailureKind, LoadFailure};
pub use pipeline::LoadSettings;
pub use rollback::RollbackPolicy;

use crate::admission::prepare_job;
use crate::batching::JobOutput;
use crate::error::{Error, Result};
use crate::registry::VersionHandle;
use crate::tensor::Tensor;

/// Upper bound for one warm-up or validation request.
pub const DIRECT_RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs one request on a version's own queue, bypassing routing (the version
/// is not published yet): the same checks and executors as served traffic.
pub async fn run_direct(handle: &VersionHandle, inputs: Vec<Tensor>, max_elements: usize) -> Result<JobOutput> {
    let (job, rx) = prepare_job(handle, inputs, Vec::new(), &[], Instant::now(), max_elements)?;
    handle.queue.submit(job)?;
    match tokio::time::timeout(DIRECT_RUN_TIMEOUT, rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(Error::internal("the executor stopped before answering")),
        Err(_) => Err(Error::timeout(format!("no answer within {DIRECT_RUN_TIMEOUT:?}"))),
    }
}
