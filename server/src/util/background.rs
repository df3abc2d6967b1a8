//! What the server runs beside its requests, owned by the server so that it
//! stops with it: async tasks (rollback watchers, gRPC stream readers) and
//! threads (each model version's executors).
//!
//! One [`Background`] per server, cloned into whatever starts work. At
//! shutdown, after the listeners closed and the models were retired,
//! [`Background::shutdown`] cancels the tasks that wait for a stop, waits
//! for every task to end and joins every thread, within a bound: work that
//! does not end in time is logged, and the process exits anyway.

use std::future::Future;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Tasks and threads of one server. Cloning shares them.
#[derive(Debug, Clone, Default)]
pub struct Background {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Cancelled when the server stops; long waits select on it.
    stop: CancellationToken,
    /// Every task spawned through [`Background::spawn`].
    tasks: TaskTracker,
    /// Threads adopted and not yet joined; finished ones are pruned on each
    /// adoption, so reloads do not grow the list. Written by whoever starts
    /// threads (the deploy pipeline), drained by `shutdown`.
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Background {
    /// An owner with nothing running.
    pub fn new() -> Background {
        Background::default()
    }

    /// Cancelled when the server stops: a task that would otherwise wait
    /// long (a rollback window) selects on it.
    pub fn stopping(&self) -> &CancellationToken {
        &self.inner.stop
    }

    /// Spawns `task` on the current runtime, tracked until it ends; `None`
    /// outside a runtime (then nothing runs).
    pub fn spawn<F>(&self, task: F) -> Option<tokio::task::JoinHandle<()>>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let rt = tokio::runtime::Handle::try_current().ok()?;
        Some(self.inner.tasks.spawn_on(task, &rt))
    }

    /// Takes ownership of `threads`: `shutdown` joins them.
    pub fn adopt(&self, threads: impl IntoIterator<Item = JoinHandle<()>>) {
        let mut held = self.inner.threads.lock();
        held.retain(|t| !t.is_finished());
        held.extend(threads);
    }

    /// Tasks running now (for tests and logs).
    pub fn tasks(&self) -> usize {
        self.inner.tasks.len()
    }

    /// Threads adopted and still running.
    pub fn threads(&self) -> usize {
        self.inner.threads.lock().iter().filter(|t| !t.is_finished()).count()
    }

    /// Cancels, waits for every task and joins every thread, for at most
    /// `timeout` in all; tells whether everything ended in time.
    pub async fn shutdown(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        self.inner.stop.cancel();
        self.inner.tasks.close();
        let tasks_done = tokio::time::timeout(timeout, self.inner.tasks.wait()).await.is_ok();
        if !tasks_done {
            tracing::warn!(tasks = self.inner.tasks.len(), "background tasks did not end in time");
        }
        let threads = std::mem::take(&mut *self.inner.threads.lock());
        let left = deadline.saturating_duration_since(Instant::now());
        let join = tokio::task::spawn_blocking(move || {
            for t in threads {
                if t.join().is_err() {
                    tracing::error!("a background thread panicked");
                }
            }
        });
        let threads_done = tokio::time::timeout(left, join).await.is_ok();
        if !threads_done {
            tracing::warn!("executor threads did not end in time (a batch still running)");
        }
        tasks_done && threads_done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_cancels_waits_and_joins() {
        let bg = Background::new();
        let stop = bg.stopping().clone();
        bg.spawn(async move { stop.cancelled().await }).unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let _ = rx.recv();
        });
        bg.adopt([thread]);
        assert_eq!((bg.tasks(), bg.threads()), (1, 1));
        drop(tx);
        assert!(bg.shutdown(Duration::from_secs(10)).await);
        assert_eq!((bg.tasks(), bg.threads()), (0, 0));
    }

    #[tokio::test]
    async fn shutdown_is_bounded_by_work_that_does_not_end() {
        let bg = Background::new();
        bg.spawn(std::future::pending()).unwrap();
        assert!(!bg.shutdown(Duration::from_millis(50)).await);
    }

    #[test]
    fn outside_a_runtime_nothing_is_spawned() {
        assert!(Background::new().spawn(async {}).is_none());
    }
}
