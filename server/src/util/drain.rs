//! The loop of a background thread that drains a bounded queue fed by the
//! request path (prediction log sinks, the drift worker, the OTLP exporter).
//!
//! Idle, the thread blocks on the queue: it costs nothing until an item
//! arrives (or the deadline its owner asked for passes). While items flow,
//! it sleeps a short `tick` between passes and drains whatever queued up
//! meanwhile, instead of blocking: a blocked receiver is woken by every
//! send (a futex call on the request path and a context switch per item), a
//! sleeping one never is. After `linger` without an item it blocks again.
//! Once every sender is gone, the queue is drained, the owner's last pass
//! runs with `closing` set, and the loop returns.

use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

/// How a drain loop paces itself while items flow.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Sleep between passes while active.
    pub tick: Duration,
    /// How long after the last item the loop keeps ticking before it blocks.
    pub linger: Duration,
}

impl Pace {
    /// A 5 ms tick, lingering 1 s.
    pub const DEFAULT: Pace = Pace {
        tick: Duration::from_millis(5),
        linger: Duration::from_secs(1),
    };
}

/// What the owner of a drain loop does.
pub trait Drain<T> {
    /// Handles one item; returns whether it was work (work keeps the loop
    /// ticking for `linger`; a mere wake-up does not).
    fn item(&mut self, item: T) -> bool;

    /// Runs after every pass over the queue (the queue was empty, a deadline
    /// passed, or with `closing` when every sender is gone: the last call).
    /// Returns how long an idle loop may block before the next pass (`None`:
    /// until the next item).
    fn pass(&mut self, closing: bool) -> Option<Duration>;
}

/// Runs the loop until every sender of `rx` is gone and the queue is drained.
pub fn run<T, D: Drain<T>>(rx: &Receiver<T>, pace: Pace, owner: &mut D) {
    let mut last_work: Option<Instant> = None;
    let mut wait: Option<Duration> = None;
    loop {
        let mut closing = false;
        if last_work.is_some_and(|t| t.elapsed() < pace.linger) {
            std::thread::sleep(pace.tick);
        } else {
            let first = match wait {
                Some(w) => rx.recv_timeout(w),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match first {
                Ok(item) => {
                    if owner.item(item) {
                        last_work = Some(Instant::now());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => closing = true,
            }
        }
        while !closing {
            match rx.try_recv() {
                Ok(item) => {
                    if owner.item(item) {
                        last_work = Some(Instant::now());
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => closing = true,
            }
        }
        wait = owner.pass(closing);
        if closing {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[derive(Default)]
    struct Recorder {
        items: Vec<u32>,
        passes: usize,
        closed: bool,
    }

    impl Drain<u32> for Recorder {
        fn item(&mut self, item: u32) -> bool {
            self.items.push(item);
            item != 0
        }
        fn pass(&mut self, closing: bool) -> Option<Duration> {
            self.passes += 1;
            self.closed |= closing;
            None
        }
    }

    #[test]
    fn drains_everything_then_closes() {
        let (tx, rx) = mpsc::sync_channel(16);
        let worker = std::thread::spawn(move || {
            let mut r = Recorder::default();
            run(&rx, Pace::DEFAULT, &mut r);
            r
        });
        for i in 1..=10 {
            tx.send(i).unwrap();
        }
        drop(tx);
        let r = worker.join().unwrap();
        assert_eq!(r.items, (1..=10).collect::<Vec<_>>());
        assert!(r.closed);
    }

    #[test]
    fn an_idle_loop_blocks_instead_of_ticking() {
        let (tx, rx) = mpsc::sync_channel::<u32>(4);
        let worker = std::thread::spawn(move || {
            let mut r = Recorder::default();
            let pace = Pace {
                tick: Duration::from_millis(1),
                linger: Duration::ZERO,
            };
            run(&rx, pace, &mut r);
            r
        });
        std::thread::sleep(Duration::from_millis(100));
        drop(tx);
        let r = worker.join().unwrap();
        // One pass for the close, none while idle.
        assert_eq!(r.passes, 1);
    }
}
