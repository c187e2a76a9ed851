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

    /// A write failed with `error`; `disk_full` says whether it was for want of space.
    pub fn failed(&self, error: &dyn std::fmt::Display, disk_full: bool) {
        let mut st = self.lock();
        st.failures += 1;
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
        alarm.failed(&"No space left on device", true);
        alarm.failed(&"No space left on device", true);
        assert!(alarm.is_failing());
        assert_eq!(alarm.lock().failures, 2);
        alarm.succeeded();
        assert!(!alarm.is_failing());
        assert_eq!(alarm.lock().failures, 0);
    }
}
