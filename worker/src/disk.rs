//! The worker's view of its disks (the checkpoint store, the cache): whether writes to each
//! fail, logged once when the condition starts, every [`REMINDER`] while it lasts, and once when
//! it ends, so a full disk is reported clearly without one line per failed write.
//!
//! A full disk (ENOSPC, EDQUOT) and any other write or fsync error are the same condition here:
//! the write is treated as not done (nothing is acknowledged or served from it), the worker goes
//! on serving, and the next write is tried afresh (never a second fsync of the same data).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a lasting condition is logged again.
pub const REMINDER: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
struct Failing {
    since: Option<Instant>,
    last_logged: Option<Instant>,
    failures: u64,
    /// The latest failure, for heartbeats.
    error: String,
    disk_full: bool,
    since_unix_ms: u64,
}

/// One disk a worker writes to.
#[derive(Debug)]
pub struct DiskAlarm {
    what: &'static str,
    path: PathBuf,
    /// What the worker does meanwhile ("computes instead of caching", ...).
    fallback: &'static str,
    state: Mutex<Failing>,
}

impl DiskAlarm {
    pub fn new(what: &'static str, path: &Path, fallback: &'static str) -> DiskAlarm {
        DiskAlarm {
            what,
            path: path.to_path_buf(),
            fallback,
            state: Mutex::new(Failing::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Failing> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True while writes fail.
    pub fn is_failing(&self) -> bool {
        self.lock().since.is_some()
    }

    /// The condition as heartbeats report it, while writes fail.
    pub fn condition(&self) -> Option<cachew_proto::v1::DiskCondition> {
        let st = self.lock();
        st.since?;
        Some(cachew_proto::v1::DiskCondition {
            store: self.what.to_string(),
            path: self.path.display().to_string(),
            disk_full: st.disk_full,
            error: st.error.clone(),
            fallback: self.fallback.to_string(),
            since_unix_ms: st.since_unix_ms,
            failures: st.failures,
        })
    }

    /// A write failed with `error`; `disk_full` says whether it was for want of space.
    pub fn failed(&self, error: &dyn std::fmt::Display, disk_full: bool) {
        let mut st = self.lock();
        st.failures += 1;
        st.error = error.to_string();
        st.disk_full = disk_full;
        if st.since.is_none() {
            st.since_unix_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
        }
        let now = Instant::now();
        let condition = if disk_full {
            "disk full"
        } else {
            "write failed"
        };
        match st.since {
            None => {
                st.since = Some(now);
                st.last_logged = Some(now);
                tracing::error!(
                    store = self.what,
                    path = %self.path.display(),
                    disk_full,
                    "{} {condition}: {error}; the worker keeps serving and {} until writes succeed again",
                    self.what,
                    self.fallback
                );
            }
            Some(since) if st.last_logged.is_none_or(|t| now - t >= REMINDER) => {
                st.last_logged = Some(now);
                tracing::error!(
                    store = self.what,
                    path = %self.path.display(),
                    disk_full,
                    failures = st.failures,
                    "{} still failing for {} s ({condition}): {error}",
                    self.what,
                    since.elapsed().as_secs()
                );
            }
            Some(_) => tracing::debug!(store = self.what, "{} {condition}: {error}", self.what),
        }
    }

    /// A write succeeded: ends the condition if there was one.
    pub fn succeeded(&self) {
        let mut st = self.lock();
        if let Some(since) = st.since.take() {
            tracing::warn!(
                store = self.what,
                path = %self.path.display(),
                failures = st.failures,
                "{} writable again after {} ms",
                self.what,
                since.elapsed().as_millis()
            );
            st.failures = 0;
            st.last_logged = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_condition_starts_on_a_failure_and_ends_on_a_success() {
        let alarm = DiskAlarm::new("cache", Path::new("/x"), "computes instead of caching");
        assert!(!alarm.is_failing());
        alarm.succeeded();
        assert!(!alarm.is_failing());
        assert_eq!(alarm.condition(), None);
        alarm.failed(&"No space left on device", true);
        alarm.failed(&"No space left on device", true);
        assert!(alarm.is_failing());
        assert_eq!(alarm.lock().failures, 2);
        let c = alarm.condition().expect("a condition while failing");
        assert_eq!((c.store.as_str(), c.path.as_str()), ("cache", "/x"));
        assert!(c.disk_full && c.error.contains("No space") && c.failures == 2);
        assert!(c.since_unix_ms > 0);
        alarm.succeeded();
        assert!(!alarm.is_failing());
        assert_eq!(alarm.condition(), None);
        assert_eq!(alarm.lock().failures, 0);
    }
}
