//! Where every produced element goes: the engine's [`Ledger`] of produced, served, resent and
//! discarded elements, kept under the engine lock, and [`Accounts`], one consistent snapshot of it
//! with the buffers and task states (what the metrics endpoint exposes, see `metrics.rs`).
//!
//! # The identity
//! Every element the pipeline produced is, at any moment, in exactly one of three places:
//! sent to a client at least once (`served`), removed without ever being sent (`discarded`, by
//! [`Discard`] reason), or held in a buffer and not sent yet (`buffered`):
//!
//! ```text
//! produced == served + sum(discarded) + buffered
//! ```
//!
//! A task keeps `sent_upto`, the end of the indices of its buffer already sent: a buffered
//! element below it was sent (and counted as served), one at or above it was not. A later send
//! of an element still buffered below `sent_upto` is a resend (a client re-fetching after a
//! broken stream), which does not change the identity. Elements computed again after a rewind
//! are new productions, served anew when sent. The ledger only counts; the engine decides.

/// Why produced elements were removed without ever being sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discard {
    /// The task's lease was fenced: the dispatcher moved the split to another worker (or gave
    /// this worker the split again under a newer lease).
    Fenced,
    /// The task was dropped for any other reason: its consumer was released, its job is gone,
    /// the worker drained or re-registered, or the dispatcher no longer assigns it.
    Dropped,
    /// The client went back: the buffer was cleared and is computed again from its cursor.
    Rewound,
    /// The client jumped past them (it had them from elsewhere).
    Skipped,
    /// Computed for a task or generation that was gone, or below the client's cursor, by the
    /// time the chunk finished (or computed twice after a retried range).
    Stale,
}

impl Discard {
    pub const ALL: [Discard; 5] = [
        Discard::Fenced,
        Discard::Dropped,
        Discard::Rewound,
        Discard::Skipped,
        Discard::Stale,
    ];

    /// Its `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Discard::Fenced => "fenced",
            Discard::Dropped => "dropped",
            Discard::Rewound => "rewound",
            Discard::Skipped => "skipped",
            Discard::Stale => "stale",
        }
    }
}

/// What a task is doing, for the `cachew_worker_tasks{state}` gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// It has room to compute (its buffer is not full).
    Computing,
    /// Its buffer is full: it waits for its client.
    Full,
    /// Full and unread for `--idle-task-ms` (its slot is free for other work).
    Idle,
    /// Its last element was sent.
    Sent,
    /// A record failed the pipeline (final for the task).
    Failed,
}

impl TaskState {
    pub const ALL: [TaskState; 5] = [
        TaskState::Computing,
        TaskState::Full,
        TaskState::Idle,
        TaskState::Sent,
        TaskState::Failed,
    ];

    /// Its `state` label.
    pub fn label(self) -> &'static str {
        match self {
            TaskState::Computing => "computing",
            TaskState::Full => "full",
            TaskState::Idle => "idle",
            TaskState::Sent => "sent",
            TaskState::Failed => "failed",
        }
    }
}

/// Element counts since the engine started (only grow).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ledger {
    pub produced: u64,
    /// First sends of produced elements.
    pub served: u64,
    /// Further sends of elements already sent.
    pub resent: u64,
    /// Bytes of every send (first sends and resends).
    pub served_bytes: u64,
    /// By [`Discard`], in the order of [`Discard::ALL`].
    pub discarded: [u64; 5],
}

impl Ledger {
    pub fn discard(&mut self, reason: Discard, n: u64) {
        if let Some(d) = self.discarded.get_mut(reason as usize) {
            *d += n;
        }
    }

    pub fn discarded(&self, reason: Discard) -> u64 {
        self.discarded.get(reason as usize).copied().unwrap_or(0)
    }

    pub fn discarded_total(&self) -> u64 {
        self.discarded.iter().sum()
    }

    /// Elements produced and then thrown away at once (`stale`).
    pub fn produced_stale(&mut self, n: u64) {
        self.produced += n;
        self.discard(Discard::Stale, n);
    }

    /// One send of an element: a first send when `first`, else a resend.
    pub fn sent(&mut self, first: bool, bytes: u64) {
        if first {
            self.served += 1;
        } else {
            self.resent += 1;
        }
        self.served_bytes += bytes;
    }
}

/// One consistent snapshot of the engine (taken under its lock).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accounts {
    pub ledger: Ledger,
    /// Produced elements held and not sent yet, over all tasks.
    pub buffered_elements: u64,
    /// Bytes of every element held (sent or not), over all tasks.
    pub buffered_bytes: u64,
    /// Tasks by [`TaskState`], in the order of [`TaskState::ALL`].
    pub tasks: [u64; 5],
}

impl Accounts {
    /// Whether the identity of this module's doc holds.
    pub fn balanced(&self) -> bool {
        self.ledger.produced
            == self.ledger.served + self.ledger.discarded_total() + self.buffered_elements
    }

    pub fn count_task(&mut self, state: TaskState) {
        if let Some(n) = self.tasks.get_mut(state as usize) {
            *n += 1;
        }
    }

    pub fn tasks_in(&self, state: TaskState) -> u64 {
        self.tasks.get(state as usize).copied().unwrap_or(0)
    }
}
