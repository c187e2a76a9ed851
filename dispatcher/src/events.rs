//! The status stream's event log. Event kinds are the protocol's `v1::EventKind` (their names
//! are in `cachew_proto::names`).
//!
//! The log is memory only: a bounded ring of the latest [`EVENT_LOG_CAPACITY`] events, numbered
//! from 1 so a status stream can ask for the events after the last one it saw.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use cachew_proto::v1;

/// How many events the log keeps.
pub const EVENT_LOG_CAPACITY: usize = 1000;

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The latest events, oldest first.
#[derive(Debug, Default)]
pub struct EventLog {
    events: VecDeque<v1::Event>,
    last_seq: u64,
}

impl EventLog {
    /// Appends an event (0 in `worker` / `job` ids means none), dropping the oldest beyond
    /// [`EVENT_LOG_CAPACITY`].
    pub fn push(
        &mut self,
        kind: v1::EventKind,
        message: String,
        worker: Option<u64>,
        job: Option<u64>,
    ) {
        self.last_seq += 1;
        self.events.push_back(v1::Event {
            seq: self.last_seq,
            unix_ms: unix_ms(),
            kind: kind.into(),
            message,
            worker_id: worker.unwrap_or(0),
            job_id: job.unwrap_or(0),
        });
        while self.events.len() > EVENT_LOG_CAPACITY {
            self.events.pop_front();
        }
    }

    /// The events numbered after `seq` that are still kept.
    pub fn after(&self, seq: u64) -> Vec<v1::Event> {
        self.events
            .iter()
            .filter(|e| e.seq > seq)
            .cloned()
            .collect()
    }
}
