//! The client's own disks that do not take writes (its hash log, its cursor file), as the
//! heartbeat reports them to the dispatcher.

use std::sync::{Arc, Mutex};

use cachew_proto::v1;
use tokio::sync::Notify;

/// The client's own disks that do not take writes (its hash log, its cursor file), reported to
/// the dispatcher with every heartbeat so the condition shows in the status stream and the
/// dashboard. Cloned handles share one list (a default one reports to nobody).
#[derive(Debug, Clone, Default)]
pub struct DiskReporter {
    pub(crate) conditions: Arc<Mutex<Vec<v1::DiskCondition>>>,
    pub(crate) poke: Arc<Notify>,
}

impl DiskReporter {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<v1::DiskCondition>> {
        self.conditions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A write to `store` at `path` failed (`disk_full`: for want of space); the client
    /// `fallback`s meanwhile.
    pub fn failing(&self, store: &str, path: &str, error: &str, disk_full: bool, fallback: &str) {
        let mut list = self.lock();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let is_new = !list.iter().any(|c| c.store == store);
        if is_new {
            list.push(v1::DiskCondition {
                store: store.to_string(),
                path: path.to_string(),
                since_unix_ms: now_ms,
                fallback: fallback.to_string(),
                ..Default::default()
            });
        }
        if let Some(c) = list.iter_mut().find(|c| c.store == store) {
            c.error = error.to_string();
            c.disk_full = disk_full;
            c.failures += 1;
        }
        drop(list);
        if is_new {
            self.poke.notify_one();
        }
    }

    /// A write to `store` went through: its condition ends.
    pub fn recovered(&self, store: &str) {
        let mut list = self.lock();
        let before = list.len();
        list.retain(|c| c.store != store);
        let changed = list.len() != before;
        drop(list);
        if changed {
            self.poke.notify_one();
        }
    }

    /// The conditions now.
    pub fn conditions(&self) -> Vec<v1::DiskCondition> {
        self.lock().clone()
    }
}
