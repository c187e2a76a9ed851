//! The status stream's event log. Event kinds are the protocol's `v1::EventKind` (their names
//! are in `cachew_proto::names`).
//!
//! The log is memory only: a bounded ring of the latest [`EVENT_LOG_CAPACITY`] events, numbered
//! from 1 so a status stream can ask for the events after the last one it saw. A message is cut
//! to [`EVENT_MESSAGE_MAX_BYTES`] (some quote what nodes sent: paths, errors, verdicts), so the
//! ring holds at most `EVENT_LOG_CAPACITY × EVENT_MESSAGE_MAX_BYTES` bytes of text.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use cachew_proto::names::Name;
use cachew_proto::v1;

use cachew_metrics::prometheus::IntCounterVec;

/// How many events the log keeps.
pub const EVENT_LOG_CAPACITY: usize = 1000;
/// The longest message kept, in bytes (a longer one is cut at a character boundary and ends
/// with `…`).
pub const EVENT_MESSAGE_MAX_BYTES: usize = 1024;

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
    /// Message bytes held.
    bytes: usize,
    /// Counts events by kind (`cachew_dispatcher_events_total`, label `kind`).
    counter: Option<IntCounterVec>,
}

impl EventLog {
    /// A log that counts its events by kind in `counter`.
    pub(crate) fn counted(counter: IntCounterVec) -> EventLog {
        EventLog {
            counter: Some(counter),
            ..EventLog::default()
        }
    }

    /// Appends an event (0 in `worker` / `job` ids means none), dropping the oldest beyond
    /// [`EVENT_LOG_CAPACITY`]. Every event is also logged (target `cachew_dispatcher::event`)
    /// with the fields of `v1::Event`: `seq`, `unix_ms`, `kind`, `message`, `worker_id`, `job_id`.
    pub fn push(
        &mut self,
        kind: v1::EventKind,
        message: String,
        worker: Option<u64>,
        job: Option<u64>,
    ) {
        let message = clip(message);
        self.bytes += message.len();
        self.last_seq += 1;
        let event = v1::Event {
            seq: self.last_seq,
            unix_ms: unix_ms(),
            kind: kind.into(),
            message,
            worker_id: worker.unwrap_or(0),
            job_id: job.unwrap_or(0),
        };
        tracing::info!(
            target: "cachew_dispatcher::event",
            seq = event.seq,
            unix_ms = event.unix_ms,
            kind = kind.name(),
            worker_id = event.worker_id,
            job_id = event.job_id,
            "{}",
            event.message
        );
        if let Some(c) = &self.counter {
            c.with_label_values(&[kind.name()]).inc();
        }
        self.events.push_back(event);
        while self.events.len() > EVENT_LOG_CAPACITY {
            if let Some(old) = self.events.pop_front() {
                self.bytes -= old.message.len();
            }
        }
    }

    /// How many events are kept.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Message bytes kept.
    pub fn bytes(&self) -> usize {
        self.bytes
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

/// `message`, cut to at most [`EVENT_MESSAGE_MAX_BYTES`] at a character boundary.
fn clip(mut message: String) -> String {
    if message.len() <= EVENT_MESSAGE_MAX_BYTES {
        return message;
    }
    const ELLIPSIS: char = '…';
    let mut end = EVENT_MESSAGE_MAX_BYTES - ELLIPSIS.len_utf8();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message.truncate(end);
    message.push(ELLIPSIS);
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_latest_events_and_cuts_long_messages() {
        let mut log = EventLog::default();
        for i in 0..EVENT_LOG_CAPACITY + 10 {
            log.push(v1::EventKind::Fenced, format!("event {i}"), None, None);
        }
        assert_eq!(log.len(), EVENT_LOG_CAPACITY);
        assert_eq!(log.after(0).first().map(|e| e.seq), Some(11));
        let kept: usize = log.after(0).iter().map(|e| e.message.len()).sum();
        assert_eq!(log.bytes(), kept);

        // A node's long error, with a multi-byte character across the cut.
        let long = format!(
            "{}é{}",
            "x".repeat(EVENT_MESSAGE_MAX_BYTES - 4),
            "y".repeat(5000)
        );
        log.push(v1::EventKind::DiskFailing, long, Some(1), None);
        let last = log.after(0).pop().map(|e| e.message).unwrap_or_default();
        assert!(last.len() <= EVENT_MESSAGE_MAX_BYTES, "{}", last.len());
        assert!(last.ends_with('…') && last.starts_with("xxx"), "{last}");
        for i in 0..2 * EVENT_LOG_CAPACITY {
            log.push(v1::EventKind::DiskFailing, "z".repeat(9000 + i), None, None);
        }
        assert!(log.bytes() <= EVENT_LOG_CAPACITY * EVENT_MESSAGE_MAX_BYTES);
    }
}
