//! Model lifecycle: everything between "a version is on disk" and "a version
//! takes traffic", and what happens after.
//!
//! - [`warmup`]: the config's `model_warmup` requests, or synthetic ones at the
//!   configured batch sizes, run on a new version before it is published.
//! - [`golden`]: a version's golden set (`<version>/validation/`) and latency
//!   budget: the gate a version must pass before promotion, and the offline
//!   `switchyard validate` check.
//! - [`audit`]: the append-only JSONL record of every control action.
//! - [`window`]: per-version error and latency counts that the automatic
//!   rollback watches after a promotion.

pub mod audit;
pub mod golden;
pub mod warmup;
pub mod window;

use std::time::{Duration, Instant};

use crate::batching::JobOutput;
use crate::registry::VersionHandle;
use crate::service::prepare_job;
use crate::tensor::Tensor;

/// Upper bound for one warm-up or validation request.
pub const DIRECT_RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs one request on a version's own queue, bypassing routing (the version
/// is not published yet): the same checks and executors as served traffic.
pub async fn run_direct(handle: &VersionHandle, inputs: Vec<Tensor>, max_elements: usize) -> Result<JobOutput, String> {
    let (job, rx) =
        prepare_job(handle, inputs, Vec::new(), &[], Instant::now(), max_elements).map_err(|e| e.message)?;
    handle.queue.submit(job).map_err(|e| e.message)?;
    match tokio::time::timeout(DIRECT_RUN_TIMEOUT, rx).await {
        Ok(Ok(result)) => result.map_err(|e| e.message),
        Ok(Err(_)) => Err("the executor stopped before answering".into()),
        Err(_) => Err(format!("no answer within {DIRECT_RUN_TIMEOUT:?}")),
    }
}
