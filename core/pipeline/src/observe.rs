//! The per-op timing hook: [`OpObserver`] hears how long each op of the pipeline took on each
//! record, so a service can export it (the worker's `cachew_worker_op_seconds{op}`).
//!
//! Observing never changes an output byte: the hook only receives durations. Its cost is one
//! `Instant::now` per op per record, and none at all with [`NoObserver`] (the default of
//! [`Pipeline::produce`](crate::Pipeline::produce) and
//! [`Pipeline::produce_with`](crate::Pipeline::produce_with)).

use std::time::{Duration, Instant};

/// Names of the steps that are not ops of the spec but are observed too.
pub mod step {
    /// Reading a record's payload from its TFRecord file (the batched read of a chunk, shared
    /// evenly between its records).
    pub const READ: &str = "read";
    /// Looking a record's prefix output up in the cache (a hit or a miss).
    pub const CACHE_GET: &str = "cache_get";
    /// Handing a computed prefix output to the cache.
    pub const CACHE_PUT: &str = "cache_put";
}

/// Hears the time each op took on one record. `op` is the op's spec name
/// ([`OpSpec::name`](crate::spec::OpSpec::name)) or one of [`step`]'s names. Called on the
/// compute thread, once per op per record: keep it to a few atomic operations.
pub trait OpObserver: Sync {
    fn op_done(&self, op: &'static str, elapsed: Duration);

    /// Whether to measure at all (false: no clock is read).
    fn enabled(&self) -> bool {
        true
    }
}

/// Observes nothing and reads no clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoObserver;

impl OpObserver for NoObserver {
    fn op_done(&self, _: &'static str, _: Duration) {}

    fn enabled(&self) -> bool {
        false
    }
}

/// A stopwatch that is free when the observer is disabled: `lap` reports the time since the
/// previous lap (or the start) and starts the next one, one clock read per lap.
pub(crate) struct Laps<'a> {
    observer: &'a dyn OpObserver,
    last: Option<Instant>,
}

impl<'a> Laps<'a> {
    pub(crate) fn start(observer: &'a dyn OpObserver) -> Laps<'a> {
        let last = observer.enabled().then(Instant::now);
        Laps { observer, last }
    }

    pub(crate) fn lap(&mut self, op: &'static str) {
        if let Some(last) = self.last {
            let now = Instant::now();
            self.observer.op_done(op, now - last);
            self.last = Some(now);
        }
    }

    /// Restarts the stopwatch without reporting (time spent on something not observed).
    pub(crate) fn restart(&mut self) {
        if self.last.is_some() {
            self.last = Some(Instant::now());
        }
    }
}
