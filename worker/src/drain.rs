//! Graceful shutdown: draining a worker before it exits.
//!
//! A drain starts on the first SIGINT or SIGTERM or when the dispatcher's
//! heartbeat reply says `drain` (an operator's `DrainWorker`); `cachew_proto::daemon::
//! graceful_stop_signal` watches the signals. From then on the control loop
//! (`control.rs`) reports no free slot, takes no new task, and sends `draining` heartbeats
//! without long-polling: the dispatcher moves this worker's splits at once (resuming at the
//! positions reported acked, the same as a failover, without waiting for the heartbeat timeout)
//! and answers by dropping them. Fetches in flight on a dropped task fail with a transient
//! status and the client follows the split's new owner. Once the worker holds no task it sends
//! a last heartbeat with `left`, and `run` stops the data service and returns.
//!
//! The whole drain is bounded by [`Drain::timeout`] (`--drain-timeout-ms`), also when the
//! dispatcher is unreachable: the worker then exits anyway and the dispatcher's heartbeat
//! timeout fails its splits over as for a crash. A second SIGINT or SIGTERM exits at once.
//!
//! This module owns the drain's shared flag and its clock; it never talks to the dispatcher
//! itself.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// Who asked for the drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// SIGINT or SIGTERM to this process (or the `shutdown` future given to `run`).
    Signal,
    /// The dispatcher (its heartbeat reply said `drain`).
    Dispatcher,
}

/// The drain's shared state: whether it was requested, by whom and when.
#[derive(Debug, Clone)]
pub struct Drain {
    requested: watch::Sender<Option<Origin>>,
    since: Arc<Mutex<Option<Instant>>>,
    timeout: Duration,
}

impl Drain {
    /// A drain that may take up to `timeout` once requested.
    pub fn new(timeout: Duration) -> Drain {
        Drain {
            requested: watch::Sender::new(None),
            since: Arc::default(),
            timeout,
        }
    }

    /// How long a drain may take before the worker stops anyway.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Starts the drain; true if this call started it (later calls change nothing).
    pub fn request(&self, origin: Origin) -> bool {
        // Held while the flag flips, so a waiter that wakes on it reads the start time.
        let mut since = self.since.lock().unwrap_or_else(|p| p.into_inner());
        let started = self.requested.send_if_modified(|r| {
            if r.is_some() {
                return false;
            }
            *r = Some(origin);
            true
        });
        if started {
            *since = Some(Instant::now());
            drop(since);
            tracing::info!(
                ?origin,
                timeout_ms = self.timeout.as_millis() as u64,
                "draining: handing this worker's splits over, then exiting"
            );
        }
        started
    }

    pub fn is_requested(&self) -> bool {
        self.requested.borrow().is_some()
    }

    /// Resolves once the drain is requested.
    pub async fn requested(&self) {
        let mut rx = self.requested.subscribe();
        let _ = rx.wait_for(Option::is_some).await;
    }

    /// Resolves when a requested drain has used up its time.
    pub async fn expired(&self) {
        self.requested().await;
        tokio::time::sleep(self.remaining()).await;
    }

    /// Time left of the drain's budget (all of it before the drain starts).
    pub fn remaining(&self) -> Duration {
        match *self.since.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(since) => self.timeout.saturating_sub(since.elapsed()),
            None => self.timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_the_first_request_starts_the_drain_and_its_clock() {
        let drain = Drain::new(Duration::from_secs(5));
        assert!(!drain.is_requested());
        assert_eq!(drain.remaining(), Duration::from_secs(5));
        assert!(drain.request(Origin::Dispatcher));
        assert!(!drain.request(Origin::Signal));
        assert!(drain.is_requested());
        assert_eq!(*drain.requested.borrow(), Some(Origin::Dispatcher));
        drain.requested().await;
        assert!(drain.remaining() <= Duration::from_secs(5));
    }

    #[tokio::test]
    async fn expired_resolves_after_the_timeout_once_requested() {
        let drain = Drain::new(Duration::from_millis(50));
        let waiter = {
            let drain = drain.clone();
            tokio::spawn(async move { drain.expired().await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiter.is_finished(), "no drain was requested");
        drain.request(Origin::Signal);
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the drain's time ran out")
            .expect("the waiter ran");
        assert_eq!(drain.remaining(), Duration::ZERO);
    }
}
