//! The dashboard's model: what the cluster looked like in the last status snapshot, what cluster
//! control says about the processes, the event log, throughput history, and the UI state
//! (selection, overlays, the status line).
//!
//! It changes only through [`Model::apply`] (an [`Update`] from a feed), [`Model::tick`] (the
//! clock) and [`Model::on_key`] (a key press, which may return an [`Effect`] for the caller to
//! perform). It never performs I/O and never reads a clock: every input carries its time, so the
//! same inputs give the same model and the view, a pure function of the model, can be
//! snapshot-tested.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;

use cachew_proto::{names, v1};

use cachew_cluster::NodeState;
pub use cachew_cluster::control::Targets;

mod keys;
mod rows;

use crate::fmt;
pub use crate::health::{
    DashboardEvent, EventLabel, Health, Lifecycle, LinkState, disk_summary, heartbeat_health,
    merge_state, short_process,
};

/// Events kept in the log (oldest dropped first).
pub const EVENT_CAPACITY: usize = 500;
/// Throughput samples kept per job.
pub const RATE_SAMPLES: usize = 240;
/// Shortest interval a throughput sample covers.
const RATE_MIN_INTERVAL_MS: u64 = 500;
/// How long a notice stays in the status line.
const NOTICE_MS: u64 = 8_000;

/// Whether the dashboard launched the cluster it shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// `cachew-tui demo`: this process supervises the cluster.
    Demo { run_dir: PathBuf },
    /// `cachew-tui --dispatcher`: attached to a cluster someone else runs.
    Attach,
}

/// The status stream's connection to the dispatcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    Connecting {
        since_ms: u64,
    },
    Up {
        since_ms: u64,
    },
    Down {
        since_ms: u64,
        error: String,
        attempt: u32,
        retry_at_ms: u64,
    },
}

/// How the dashboard reaches cluster control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Attached, and no status has said where control is yet.
    Unknown,
    /// A control endpoint; `error` is the last failure to reach it (cleared by the next success).
    Available {
        address: String,
        error: Option<String>,
    },
    /// The dispatcher advertises none and none was given.
    Unavailable,
}

/// Where checkpoint facts come from. The dispatcher relays what workers report in heartbeats; a
/// directory watcher (a later change) will read the workers' checkpoint directories directly so
/// the panel keeps working while the dispatcher is down, and feed them with
/// [`Update::Checkpoints`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointSource {
    Heartbeat,
    Directory,
}

/// The last checkpoint facts known about one worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointRow {
    pub source: CheckpointSource,
    pub info: v1::CheckpointInfo,
    /// When the dashboard learnt them.
    pub received_ms: u64,
}

/// Who wrote an event-log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Dispatcher,
    /// The dashboard's own observations: the link going down or up, results of actions.
    Dashboard,
}

/// One line of the event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedEvent {
    pub unix_ms: u64,
    pub kind: EventLabel,
    pub message: String,
    pub origin: Origin,
}

/// Which status-stream events have been logged, so a reconnect (which replays the dispatcher's
/// buffer) adds nothing twice and a restarted dispatcher's fresh sequence numbers still show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EventMark {
    dispatcher_start_ms: u64,
    seq: u64,
    unix_ms: u64,
}

/// Examples per second of one job, from successive `delivered_examples` totals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Throughput {
    last: Option<(u64, u64)>,
    rates: VecDeque<u64>,
}

impl Throughput {
    fn sample(&mut self, unix_ms: u64, delivered: u64) {
        match self.last {
            Some((t0, d0)) if delivered >= d0 => {
                if unix_ms >= t0 + RATE_MIN_INTERVAL_MS {
                    self.rates
                        .push_back((delivered - d0).saturating_mul(1000) / (unix_ms - t0));
                    while self.rates.len() > RATE_SAMPLES {
                        self.rates.pop_front();
                    }
                    self.last = Some((unix_ms, delivered));
                }
            }
            // First sample, or the total went back (a consumer or the dispatcher restarted).
            _ => self.last = Some((unix_ms, delivered)),
        }
    }

    /// Examples per second, oldest first.
    pub fn rates(&self) -> impl DoubleEndedIterator<Item = u64> + ExactSizeIterator + '_ {
        self.rates.iter().copied()
    }

    pub fn latest(&self) -> Option<u64> {
        self.rates.back().copied()
    }
}

/// An overlay over the dashboard that takes the keys while it is shown.
#[derive(Debug, Clone, PartialEq)]
pub enum Overlay {
    None,
    Help,
    /// A y/n question before a bulk action.
    Confirm {
        prompt: String,
        command: ActCommand,
    },
    /// Demo mode: stop the cluster on quit?
    Quit,
}

/// How important a notice is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Ok,
    Error,
}

/// The status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub text: String,
    pub level: Level,
    pub at_ms: u64,
}

/// A cluster-control request the caller should send.
#[derive(Debug, Clone, PartialEq)]
pub struct ActCommand {
    pub action: v1::Action,
    pub targets: Targets,
    /// What the status line calls it: `kill worker-1`.
    pub label: String,
}

/// What the caller should do after a key press.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Act(ActCommand),
    /// Ask the dispatcher to drain worker `worker_id` (`DrainWorker`; no cluster control).
    Drain {
        worker_id: u64,
        label: String,
    },
    /// Ask the dispatcher to pin the worker count (`PinWorkers`; None: unpin).
    Pin {
        workers: Option<u32>,
        label: String,
    },
    /// Leave the dashboard; in a demo, `stop_cluster` says whether to stop the nodes.
    Quit {
        stop_cluster: bool,
    },
}

/// Everything the feeds tell the model.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// The status stream is (re)connecting.
    Connecting,
    /// A snapshot from the status stream.
    Status(Box<v1::ClusterStatus>),
    /// The status stream failed; the next attempt is in `retry_in_ms`.
    StreamDown {
        error: String,
        attempt: u32,
        retry_in_ms: u64,
    },
    /// Cluster control's node list.
    Nodes(Vec<v1::NodeInfo>),
    /// Cluster control could not be reached.
    ControlUnreachable(String),
    /// The result of an [`ActCommand`].
    ActDone {
        label: String,
        result: Result<v1::ActResponse, String>,
    },
    /// The dispatcher's answer to a drain.
    DrainDone {
        label: String,
        result: Result<v1::DrainWorkerResponse, String>,
    },
    /// The dispatcher's answer to a pin.
    PinDone {
        label: String,
        result: Result<v1::Autoscale, String>,
    },
    /// Checkpoint facts by worker address from a source other than the status stream (the seam
    /// for the checkpoint-directory watcher).
    Checkpoints {
        source: CheckpointSource,
        rows: Vec<(String, v1::CheckpointInfo)>,
    },
}

/// A node's role, as the node list shows it (cluster control's).
pub use cachew_cluster::Role;

/// The role in a control-endpoint node listing (a role this build does not know is shown as a
/// worker).
fn role_of(n: &v1::NodeInfo) -> Role {
    Role::from_wire(n.role).unwrap_or(Role::Worker)
}

/// One row of the node list: cluster control's view of the process merged with the dispatcher's
/// view of the worker (matched by address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    /// Stable key of the row (for the selection).
    pub key: String,
    pub name: String,
    pub role: Role,
    pub address: String,
    /// Lifecycle from the status stream (alive, suspect, standby, dead) or the link (up, down,
    /// connecting) for the dispatcher.
    pub lifecycle: Option<Lifecycle>,
    /// Process state from cluster control (running, paused, killed, exited, ...).
    pub process: Option<NodeState>,
    /// The two merged: `alive`, `dead (killed)`, `suspect (paused)`.
    pub state: String,
    pub health: Health,
    /// Heartbeat age (workers) or time since the last status snapshot (dispatcher).
    pub heartbeat_ms: Option<u64>,
    pub heartbeat_health: Health,
    pub pid: Option<u32>,
    pub restarts: Option<u32>,
    pub worker_id: Option<u64>,
    pub incarnation: Option<u64>,
    pub tasks: Option<usize>,
    /// The name cluster control knows the node by (actions need it).
    pub control_name: Option<String>,
    /// The lifecycle comes from a snapshot taken before the dispatcher went down.
    pub stale: bool,
    /// The worker's disks that do not take writes, as `cache full`, `checkpoint store failing`.
    pub disks: Option<String>,
    /// Cluster control cut the node off its network (`c`).
    pub disconnected: bool,
}

/// State of one position of an epoch in the split grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitCell {
    Delivered,
    /// Assigned to a worker; `owner_ok` is false while its owner is suspect or dead.
    Assigned {
        worker_id: u64,
        owner_ok: bool,
        acked: u32,
        len: u32,
    },
    Unassigned,
}

/// A finished epoch's result as a consumer reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub consumer: u32,
    pub report: v1::EpochReport,
}

impl Verdict {
    pub fn passed(&self) -> Option<bool> {
        self.report.verified.then_some(self.report.exactly_once)
    }
}

/// The dashboard's model.
#[derive(Debug, Clone)]
pub struct Model {
    mode: Mode,
    /// The dispatcher address the status stream connects to.
    target: String,
    /// A control address given on the command line (demo, or `--control`).
    fixed_control: Option<String>,
    link: Link,
    status: Option<v1::ClusterStatus>,
    last_status_ms: Option<u64>,
    control: Control,
    nodes: Vec<v1::NodeInfo>,
    events: VecDeque<LoggedEvent>,
    event_mark: Option<EventMark>,
    throughput: BTreeMap<u64, Throughput>,
    checkpoints: BTreeMap<String, CheckpointRow>,
    now_ms: u64,
    selected: Option<String>,
    overlay: Overlay,
    notice: Option<Notice>,
    pending: usize,
}

impl Model {
    /// A model for a dashboard of the dispatcher at `target`; `control` is the control endpoint
    /// if known up front (a demo knows it; an attached dashboard learns it from the status).
    pub fn new(mode: Mode, target: &str, control: Option<String>, now_ms: u64) -> Model {
        Model {
            mode,
            target: target.to_string(),
            control: match &control {
                Some(address) => Control::Available {
                    address: address.clone(),
                    error: None,
                },
                None => Control::Unknown,
            },
            fixed_control: control,
            link: Link::Connecting { since_ms: now_ms },
            status: None,
            last_status_ms: None,
            nodes: Vec::new(),
            events: VecDeque::new(),
            event_mark: None,
            throughput: BTreeMap::new(),
            checkpoints: BTreeMap::new(),
            now_ms,
            selected: None,
            overlay: Overlay::None,
            notice: None,
            pending: 0,
        }
    }

    // ------------------------------------------------------------------ accessors

    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    pub fn link(&self) -> &Link {
        &self.link
    }

    pub fn is_up(&self) -> bool {
        matches!(self.link, Link::Up { .. })
    }

    /// The last status snapshot (its events are in [`Model::events`]).
    pub fn status(&self) -> Option<&v1::ClusterStatus> {
        self.status.as_ref()
    }

    pub fn last_status_ms(&self) -> Option<u64> {
        self.last_status_ms
    }

    pub fn control(&self) -> &Control {
        &self.control
    }

    /// The control endpoint actions and node lists go to, if any.
    pub fn control_address(&self) -> Option<&str> {
        match &self.control {
            Control::Available { address, .. } => Some(address),
            _ => None,
        }
    }

    pub fn events(&self) -> impl DoubleEndedIterator<Item = &LoggedEvent> + ExactSizeIterator {
        self.events.iter()
    }

    pub fn throughput(&self, job_id: u64) -> Option<&Throughput> {
        self.throughput.get(&job_id)
    }

    pub fn checkpoints(&self) -> &BTreeMap<String, CheckpointRow> {
        &self.checkpoints
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    pub fn overlay(&self) -> &Overlay {
        &self.overlay
    }

    pub fn notice(&self) -> Option<&Notice> {
        self.notice.as_ref()
    }

    /// Actions sent and not answered yet.
    pub fn pending_actions(&self) -> usize {
        self.pending
    }

    // ------------------------------------------------------------------ updates

    /// The clock moved on (ages in the view are relative to it).
    pub fn tick(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        if let Some(n) = &self.notice
            && n.level != Level::Error
            && self.now_ms > n.at_ms + NOTICE_MS
            && self.pending == 0
        {
            self.notice = None;
        }
    }

    /// Applies one update that arrived at `now_ms`.
    pub fn apply(&mut self, update: Update, now_ms: u64) {
        self.tick(now_ms);
        match update {
            Update::Connecting => {
                if !matches!(self.link, Link::Connecting { .. } | Link::Down { .. }) {
                    self.link = Link::Connecting { since_ms: now_ms };
                }
            }
            Update::Status(status) => self.apply_status(*status, now_ms),
            Update::StreamDown {
                error,
                attempt,
                retry_in_ms,
            } => {
                let since_ms = match &self.link {
                    Link::Down { since_ms, .. } => *since_ms,
                    Link::Up { .. } => {
                        self.log_local(
                            now_ms,
                            DashboardEvent::LinkDown,
                            format!("dispatcher down: {error}"),
                        );
                        now_ms
                    }
                    Link::Connecting { since_ms } => *since_ms,
                };
                self.link = Link::Down {
                    since_ms,
                    error,
                    attempt,
                    retry_at_ms: now_ms + retry_in_ms,
                };
            }
            Update::Nodes(nodes) => {
                self.nodes = nodes;
                if let Control::Available { error, .. } = &mut self.control {
                    *error = None;
                }
            }
            Update::ControlUnreachable(e) => {
                if let Control::Available { error, .. } = &mut self.control {
                    *error = Some(e);
                }
            }
            Update::PinDone { label, result } => {
                let result = result.map(|a| format!("target {}, {} active", a.target, a.active));
                self.dispatcher_answered(now_ms, &label, result);
            }
            Update::DrainDone { label, result } => {
                let result = result.map(|r| {
                    format!(
                        "{} split(s) moved, worker {}",
                        r.moved,
                        names::label::<v1::WorkerState>(r.state)
                    )
                });
                self.dispatcher_answered(now_ms, &label, result);
            }
            Update::ActDone { label, result } => {
                self.pending = self.pending.saturating_sub(1);
                match result {
                    Ok(response) => {
                        self.nodes = response.nodes;
                        if response.errors.is_empty() {
                            self.notify(Level::Ok, format!("{label}: done"));
                            self.log_local(
                                now_ms,
                                DashboardEvent::Action,
                                format!("{label}: done"),
                            );
                        } else {
                            let text = format!("{label}: {}", response.errors.join("; "));
                            self.log_local(now_ms, DashboardEvent::ActionFailed, text.clone());
                            self.notify(Level::Error, text);
                        }
                    }
                    Err(e) => {
                        let text = format!("{label} failed: {e}");
                        self.log_local(now_ms, DashboardEvent::ActionFailed, text.clone());
                        self.notify(Level::Error, text);
                    }
                }
            }
            Update::Checkpoints { source, rows } => {
                for (address, info) in rows {
                    self.checkpoints.insert(
                        address,
                        CheckpointRow {
                            source,
                            info,
                            received_ms: now_ms,
                        },
                    );
                }
            }
        }
    }

    fn apply_status(&mut self, mut status: v1::ClusterStatus, now_ms: u64) {
        match &self.link {
            Link::Up { .. } => {}
            Link::Down { since_ms, .. } => {
                let down_for = now_ms.saturating_sub(*since_ms);
                self.log_local(
                    now_ms,
                    DashboardEvent::LinkUp,
                    format!(
                        "dispatcher {} up again after {}",
                        status.dispatcher_address,
                        fmt::age_ms(down_for)
                    ),
                );
                self.link = Link::Up { since_ms: now_ms };
            }
            Link::Connecting { .. } => self.link = Link::Up { since_ms: now_ms },
        }
        let events = std::mem::take(&mut status.events);
        let start = status.dispatcher_start_unix_ms;
        let mark = self.event_mark;
        for e in &events {
            let fresh = match mark {
                None => true,
                // The same dispatcher: its sequence numbers order its events.
                Some(m) if m.dispatcher_start_ms == start => m.seq < e.seq,
                // Another incarnation: its numbering may restart, so go by time.
                Some(m) => e.unix_ms > m.unix_ms,
            };
            if fresh {
                self.push_event(LoggedEvent {
                    unix_ms: e.unix_ms,
                    kind: EventLabel::Cluster(e.kind()),
                    message: e.message.clone(),
                    origin: Origin::Dispatcher,
                });
            }
        }
        if let Some(last) = events.iter().max_by_key(|e| e.seq) {
            let seen_ms = events.iter().map(|e| e.unix_ms).max().unwrap_or(0);
            self.event_mark = Some(EventMark {
                dispatcher_start_ms: start,
                seq: last.seq,
                unix_ms: seen_ms.max(mark.map_or(0, |m| m.unix_ms)),
            });
        }
        for job in &status.jobs {
            let delivered = job.consumers.iter().map(|c| c.delivered_examples).sum();
            self.throughput
                .entry(job.job_id)
                .or_default()
                .sample(status.unix_ms, delivered);
        }
        for w in &status.workers {
            if let Some(info) = w.checkpoint {
                let newer = self.checkpoints.get(&w.address).is_none_or(|row| {
                    row.source == CheckpointSource::Heartbeat
                        || info.last_unix_ms >= row.info.last_unix_ms
                });
                if newer {
                    self.checkpoints.insert(
                        w.address.clone(),
                        CheckpointRow {
                            source: CheckpointSource::Heartbeat,
                            info,
                            received_ms: now_ms,
                        },
                    );
                }
            }
        }
        if self.fixed_control.is_none() {
            self.control = if status.control_address.is_empty() {
                Control::Unavailable
            } else {
                match &self.control {
                    Control::Available { address, error } if *address == status.control_address => {
                        Control::Available {
                            address: address.clone(),
                            error: error.clone(),
                        }
                    }
                    _ => Control::Available {
                        address: status.control_address.clone(),
                        error: None,
                    },
                }
            };
        }
        self.status = Some(status);
        self.last_status_ms = Some(now_ms);
    }

    fn push_event(&mut self, e: LoggedEvent) {
        self.events.push_back(e);
        while self.events.len() > EVENT_CAPACITY {
            self.events.pop_front();
        }
    }

    /// The dispatcher's answer to an admin request of the dashboard (drain, pin): the status
    /// line and the event log say what came of it.
    fn dispatcher_answered(&mut self, now_ms: u64, label: &str, result: Result<String, String>) {
        self.pending = self.pending.saturating_sub(1);
        let (kind, level, text) = match result {
            Ok(what) => (
                DashboardEvent::Action,
                Level::Ok,
                format!("{label}: {what}"),
            ),
            Err(e) => (
                DashboardEvent::ActionFailed,
                Level::Error,
                format!("{label}: {e}"),
            ),
        };
        self.log_local(now_ms, kind, text.clone());
        self.notify(level, text);
    }

    fn log_local(&mut self, now_ms: u64, kind: DashboardEvent, message: String) {
        self.push_event(LoggedEvent {
            unix_ms: now_ms,
            kind: EventLabel::Dashboard(kind),
            message,
            origin: Origin::Dashboard,
        });
    }

    fn notify(&mut self, level: Level, text: String) {
        self.notice = Some(Notice {
            text,
            level,
            at_ms: self.now_ms,
        });
    }

    // ------------------------------------------------------------------ derived views

    /// Heartbeat interval and worker timeout of the dispatcher (defaults before the first status).
    pub fn timing(&self) -> (u64, u64) {
        match &self.status {
            Some(s) if s.heartbeat_interval_ms > 0 && s.worker_timeout_ms > 0 => {
                (s.heartbeat_interval_ms, s.worker_timeout_ms)
            }
            _ => (500, 5000),
        }
    }

    /// A short name for a worker id: cluster control's name if known, else `w<id>`.
    pub fn worker_name(&self, worker_id: u64) -> String {
        let address = self
            .status
            .as_ref()
            .and_then(|s| s.workers.iter().find(|w| w.worker_id == worker_id))
            .map(|w| w.address.as_str());
        address
            .and_then(|a| self.nodes.iter().find(|n| n.address == a))
            .map_or_else(|| format!("w{worker_id}"), |n| n.name.clone())
    }

    /// One character per worker for the split grid, in node-list order: `1`-`9`, then `a`-`z`.
    pub fn worker_marks(&self) -> Vec<(u64, char)> {
        self.node_rows()
            .iter()
            .filter_map(|r| r.worker_id)
            .enumerate()
            .map(|(i, id)| {
                let mark = char::from_digit((i + 1) as u32, 36).unwrap_or('#');
                (id, mark)
            })
            .collect()
    }

    /// A short name for a worker address.
    pub fn address_name(&self, address: &str) -> String {
        if let Some(n) = self.nodes.iter().find(|n| n.address == address) {
            return n.name.clone();
        }
        self.status
            .as_ref()
            .and_then(|s| s.workers.iter().find(|w| w.address == address))
            .map_or_else(|| address.to_string(), |w| format!("w{}", w.worker_id))
    }

    /// The job the dashboard features: the first unfinished one, else the last.
    pub fn focus_job(&self) -> Option<&v1::JobStatus> {
        let jobs = &self.status.as_ref()?.jobs;
        jobs.iter().find(|j| !j.finished).or_else(|| jobs.last())
    }

    /// The epoch a job's consumers are in (the earliest of their cursors).
    pub fn current_epoch(job: &v1::JobStatus) -> u64 {
        let epoch = job
            .consumers
            .iter()
            .filter_map(|c| c.cursor.map(|c| c.epoch))
            .min()
            .unwrap_or(0);
        if job.num_epochs > 0 {
            epoch.min(job.num_epochs - 1)
        } else {
            epoch
        }
    }

    /// The state of every position of `epoch` of `job`.
    pub fn split_cells(&self, job: &v1::JobStatus, epoch: u64) -> Vec<SplitCell> {
        let Some(status) = &self.status else {
            return Vec::new();
        };
        let consumers = job.consumers.len().max(1) as u32;
        let alive = |id: u64| {
            status
                .workers
                .iter()
                .find(|w| w.worker_id == id)
                .is_some_and(|w| {
                    matches!(w.state(), v1::WorkerState::Alive | v1::WorkerState::Standby)
                })
        };
        (0..job.num_splits)
            .map(|p| {
                let consumer = job.consumers.iter().find(|c| c.index == p % consumers);
                let delivered = job.finished
                    || consumer
                        .and_then(|c| c.cursor)
                        .is_some_and(|cur| (epoch, p / consumers) < (cur.epoch, cur.ordinal));
                if delivered {
                    return SplitCell::Delivered;
                }
                match status
                    .assignments
                    .iter()
                    .find(|a| a.job_id == job.job_id && a.epoch == epoch && a.position == p)
                {
                    Some(a) => SplitCell::Assigned {
                        worker_id: a.worker_id,
                        owner_ok: alive(a.worker_id),
                        acked: a.acked,
                        len: a.len,
                    },
                    None => SplitCell::Unassigned,
                }
            })
            .collect()
    }

    /// Every consumer's epoch report of `job`, newest epoch first.
    pub fn verdicts(job: &v1::JobStatus) -> Vec<Verdict> {
        let mut out: Vec<Verdict> = job
            .consumers
            .iter()
            .flat_map(|c| {
                c.reports.iter().map(|r| Verdict {
                    consumer: c.index,
                    report: r.clone(),
                })
            })
            .collect();
        out.sort_by(|a, b| {
            b.report
                .epoch
                .cmp(&a.report.epoch)
                .then(a.consumer.cmp(&b.consumer))
        });
        out
    }

    /// The selected row's index in [`Model::node_rows`].
    pub fn selected_index(&self, rows: &[NodeRow]) -> usize {
        self.selected
            .as_ref()
            .and_then(|key| rows.iter().position(|r| &r.key == key))
            .unwrap_or(0)
    }
}
