//! The durable entities of the state machine and their pure queries: workers, datasets, jobs
//! with their consumers and cursors, assignments under leases, and the cache policy. Their serde
//! form is the journal's snapshot format.

use std::collections::{BTreeMap, BTreeSet};

use cachew_pipeline::{ConsumerOrder, SplitPlan};
use cachew_proto::names::{Name, UnknownValue};
use cachew_proto::v1::CacheMode;
use serde::{Deserialize, Serialize};

pub type WorkerId = u64;
pub type JobId = u64;

/// A consumer's place: epoch, the n-th of its positions in that epoch, index in that split. The
/// one cursor type, shared with the client (its JSON form is part of the journal).
pub use cachew_pipeline::ConsumerCursor as Cursor;

/// Lifecycle of a worker as the dispatcher sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerLife {
    Alive,
    Dead,
    /// Leaving (`DrainWorker`): its splits moved away; it heartbeats but takes no task.
    Draining,
    /// Drained and gone (`WorkerLeft`). Registering again makes it alive.
    Left,
}

impl WorkerLife {
    /// Whether the worker is expected to heartbeat (alive or still draining).
    pub fn heartbeats(self) -> bool {
        matches!(self, WorkerLife::Alive | WorkerLife::Draining)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerEntry {
    pub id: WorkerId,
    pub address: String,
    pub standby: bool,
    pub life: WorkerLife,
    pub incarnation: u64,
    pub threads: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetEntry {
    pub id: String,
    pub spec_json: String,
    pub num_records: u64,
    pub split_records: u32,
    pub shuffle: bool,
}

impl DatasetEntry {
    pub fn plan(&self) -> SplitPlan {
        SplitPlan::new(self.num_records, self.split_records, self.shuffle)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consumer {
    pub index: u32,
    pub generation: u64,
    pub attached: bool,
    pub cursor: Cursor,
    /// Released for silence (not by the client): attached again when it reports.
    #[serde(default)]
    pub parked: bool,
    /// Workers this consumer's client reported it cannot reach: its splits stay off them
    /// (`state/unreachable.rs`).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub unreachable: BTreeSet<WorkerId>,
}

/// Who serves one position of an epoch, under which lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub split: u32,
    pub worker: WorkerId,
    pub lease: u64,
    pub start_index: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub name: String,
    pub dataset_id: String,
    pub seed: u64,
    /// 0 = unbounded.
    pub num_epochs: u64,
    pub num_splits: u32,
    pub num_consumers: u32,
    pub consumers: Vec<Consumer>,
    /// Assigned positions ahead of their consumer's cursor: (epoch, position) -> assignment.
    #[serde(with = "assignment_list")]
    pub assignments: BTreeMap<(u64, u32), Assignment>,
    pub finished: bool,
    #[serde(default)]
    pub cache_policy: CachePolicy,
    #[serde(default)]
    pub cache_decision: Option<CacheDecision>,
}

impl Job {
    /// How the tasks of `epoch` use the cache: compute, put or get.
    pub fn cache_mode(&self, epoch: u64) -> CacheMode {
        match (self.cache_policy, self.cache_decision) {
            (CachePolicy::Compute, _) => CacheMode::Compute,
            (CachePolicy::Put, _) => CacheMode::Put,
            (CachePolicy::Get, _) => CacheMode::Get,
            (CachePolicy::Auto, None) => CacheMode::Put,
            (CachePolicy::Auto, Some(d)) if !d.get => CacheMode::Compute,
            (CachePolicy::Auto, Some(_)) if epoch == 0 => CacheMode::Put,
            (CachePolicy::Auto, Some(_)) => CacheMode::Get,
        }
    }

    /// The consumer that owns `position`.
    pub fn consumer_of(&self, position: u32) -> u32 {
        position % self.num_consumers.max(1)
    }

    /// Forgets the assignments of consumer `c`'s positions; they are assigned again when wanted.
    pub(super) fn forget_assignments_of(&mut self, c: u32) {
        let stale: Vec<(u64, u32)> = self
            .assignments
            .keys()
            .copied()
            .filter(|&(_, p)| self.consumer_of(p) == c)
            .collect();
        for key in stale {
            self.assignments.remove(&key);
        }
    }

    /// Consumer `c`'s sequence of positions: the arithmetic below is [`ConsumerOrder`]'s, the
    /// same the client fetches with.
    pub fn consumer_order(&self, c: u32) -> ConsumerOrder {
        ConsumerOrder::new(self.num_splits, c, self.num_consumers, self.num_epochs)
    }

    /// Number of positions consumer `c` has per epoch.
    pub fn positions_per_epoch(&self, c: u32) -> u32 {
        self.consumer_order(c).positions_per_epoch()
    }

    /// Position of the `ordinal`-th split of consumer `c`.
    pub fn position(&self, c: u32, ordinal: u32) -> u32 {
        self.consumer_order(c).position(ordinal)
    }

    /// Normalizes a cursor that stands at the end of an epoch to the start of the next.
    pub fn normalize(&self, c: u32, cursor: Cursor) -> Cursor {
        self.consumer_order(c).normalize(cursor)
    }

    /// Whether consumer `c` at `cursor` has consumed every epoch.
    pub fn consumer_done(&self, c: u32, cursor: Cursor) -> bool {
        self.consumer_order(c).is_done(cursor)
    }

    /// The next `window` (epoch, position) pairs of consumer `c` from `cursor` on.
    pub fn window(&self, c: u32, cursor: Cursor, window: u32) -> Vec<(u64, u32)> {
        self.consumer_order(c)
            .window(cursor)
            .take(window as usize)
            .map(|slot| (slot.epoch, slot.position))
            .collect()
    }

    /// Whether (epoch, position) lies before its consumer's cursor (already delivered).
    pub fn is_delivered(&self, epoch: u64, position: u32) -> bool {
        let c = self.consumer_of(position);
        let Some(consumer) = self.consumers.get(c as usize) else {
            return false;
        };
        let order = self.consumer_order(c);
        order.is_before(epoch, order.ordinal_of(position), consumer.cursor)
    }
}

/// Serializes the assignment map as a list of entries (snapshot formats such as JSON only allow
/// string map keys).
mod assignment_list {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Assignment;

    #[derive(Serialize, Deserialize)]
    struct Entry {
        epoch: u64,
        position: u32,
        #[serde(flatten)]
        assignment: Assignment,
    }

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<(u64, u32), Assignment>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let entries: Vec<Entry> = map
            .iter()
            .map(|(&(epoch, position), &assignment)| Entry {
                epoch,
                position,
                assignment,
            })
            .collect();
        entries.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<(u64, u32), Assignment>, D::Error> {
        let entries = Vec::<Entry>::deserialize(d)?;
        Ok(entries
            .into_iter()
            .map(|e| ((e.epoch, e.position), e.assignment))
            .collect())
    }
}

/// How a job uses the cache of its pipeline's deterministic prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CachePolicy {
    /// Never touch the cache.
    #[default]
    Compute,
    /// Compute the prefix and write the chunks that are not in the cache yet.
    Put,
    /// Read the prefix's output from the cache (recomputing missing or corrupt chunks).
    Get,
    /// Put during the first epoch while measuring; then get or compute, whichever is cheaper.
    Auto,
}

impl CachePolicy {
    /// The policy of a request's raw wire value (UNSPECIFIED is compute); a value this
    /// dispatcher does not know is an error, never a silent compute.
    pub fn from_wire(raw: i32) -> Result<CachePolicy, UnknownValue> {
        match CacheMode::try_from(raw) {
            Ok(CacheMode::Unspecified | CacheMode::Compute) => Ok(CachePolicy::Compute),
            Ok(CacheMode::Put) => Ok(CachePolicy::Put),
            Ok(CacheMode::Get) => Ok(CachePolicy::Get),
            Ok(CacheMode::Auto) => Ok(CachePolicy::Auto),
            Err(_) => Err(UnknownValue {
                what: "cache policy",
                value: raw,
            }),
        }
    }

    pub fn to_wire(self) -> CacheMode {
        match self {
            CachePolicy::Compute => CacheMode::Compute,
            CachePolicy::Put => CacheMode::Put,
            CachePolicy::Get => CacheMode::Get,
            CachePolicy::Auto => CacheMode::Auto,
        }
    }

    pub fn name(self) -> &'static str {
        self.to_wire().name()
    }
}

/// What `auto` chose, with the measurements it chose on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheDecision {
    pub get: bool,
    pub compute_ns_per_element: u64,
    pub read_ns_per_element: u64,
}
