//! The status stream's event log, and the names the dispatcher sends as strings: every event
//! kind ([`kind`]) and every worker state ([`worker_state`]). They are defined here only, so that
//! turning them into protocol enums touches one place.
//!
//! The log is memory only: a bounded ring of the latest [`EVENT_LOG_CAPACITY`] events, numbered
//! from 1 so a status stream can ask for the events after the last one it saw.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use cachew_proto::v1;

/// Kinds of `v1::Event` (`Event.kind`).
pub mod kind {
    /// A worker registered for the first time.
    pub const REGISTERED: &str = "registered";
    /// A known worker registered again (a restart or a comeback).
    pub const REREGISTERED: &str = "reregistered";
    /// A restarted worker kept tasks from its checkpoint.
    pub const RECOVERED: &str = "recovered";
    /// A worker was told to drop tasks it holds under a stale lease (or must register again).
    pub const FENCED: &str = "fenced";
    pub const JOB_CREATED: &str = "job_created";
    pub const JOB_FINISHED: &str = "job_finished";
    pub const CONSUMER_ATTACHED: &str = "consumer_attached";
    pub const CONSUMER_RELEASED: &str = "consumer_released";
    /// A consumer went silent for the consumer timeout; its splits are released.
    pub const CONSUMER_TIMEOUT: &str = "consumer_timeout";
    pub const EPOCH_DONE: &str = "epoch_done";
    pub const DECLARED_DEAD: &str = "declared_dead";
    pub const STANDBY_PROMOTED: &str = "standby_promoted";
    /// A dead worker's split moved to another worker or went back to the pool.
    pub const FAILOVER: &str = "failover";
    pub const HEARTBEAT_MISSED: &str = "heartbeat_missed";
    pub const HEARTBEAT_RESUMED: &str = "heartbeat_resumed";
    pub const HEARTBEAT_TIMEOUT: &str = "heartbeat_timeout";
    /// The dispatcher itself did not run for a while; heartbeat ages exclude that gap.
    pub const DISPATCHER_STALLED: &str = "dispatcher_stalled";
    /// `auto` chose between get and compute.
    pub const CACHE_DECISION: &str = "cache_decision";
    pub const CACHE_REPAIRED: &str = "cache_repaired";
    pub const CACHE_COMPLETE: &str = "cache_complete";
    pub const DISK_FAILING: &str = "disk_failing";
    pub const DISK_RECOVERED: &str = "disk_recovered";
    pub const JOURNAL_REPLAYED: &str = "journal_replayed";
    /// Emitted by the journal writer (`durable.rs`) through `WriterHost::event`.
    pub const JOURNAL_UNAVAILABLE: &str = "journal_unavailable";
    /// Emitted by the journal writer (`durable.rs`) through `WriterHost::event`.
    pub const JOURNAL_RECOVERED: &str = "journal_recovered";
    /// A client's epoch report without a verification.
    pub const EPOCH_REPORT: &str = "epoch_report";
    /// A client verified an epoch: exactly once.
    pub const VERDICT_OK: &str = "verdict_ok";
    /// A client verified an epoch: not exactly once.
    pub const VERDICT_FAILED: &str = "verdict_failed";
}

/// States of a worker in the status stream (`WorkerStatus.state`).
pub mod worker_state {
    pub const ALIVE: &str = "alive";
    /// Alive, but its heartbeats are late.
    pub const SUSPECT: &str = "suspect";
    pub const STANDBY: &str = "standby";
    pub const DEAD: &str = "dead";
}

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
    pub fn push(&mut self, kind: &str, message: String, worker: Option<u64>, job: Option<u64>) {
        self.last_seq += 1;
        self.events.push_back(v1::Event {
            seq: self.last_seq,
            unix_ms: unix_ms(),
            kind: kind.to_string(),
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
