//! How a node looks on the dashboard: its lifecycle (the dispatcher's word on a worker, or the
//! dashboard's link for the dispatcher itself), its process (cluster control's word), the two
//! merged into one label with a [`Health`] the view colours, and the event-log vocabulary. Pure
//! functions of typed values: no name is compared as a string here.

use cachew_cluster::{NodeState, Role};
use cachew_proto::names::Name;
use cachew_proto::v1;
use nix::sys::signal::Signal;

/// How healthy something looks, which the view turns into a colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Good,
    /// Idle by design (a standby worker).
    Idle,
    Warn,
    Bad,
    Unknown,
}

impl Health {
    fn rank(self) -> u8 {
        match self {
            Health::Bad => 4,
            Health::Warn => 3,
            Health::Unknown => 2,
            Health::Idle => 1,
            Health::Good => 0,
        }
    }

    /// The worse of two.
    pub fn worst(self, other: Health) -> Health {
        if self.rank() >= other.rank() {
            self
        } else {
            other
        }
    }
}

/// The dashboard's link to the dispatcher, which is the dispatcher row's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Connecting,
    Up,
    Down,
}

/// What the status stream (a worker) or the link (the dispatcher) says of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Worker(v1::WorkerState),
    Link(LinkState),
}

impl Lifecycle {
    pub fn name(self) -> &'static str {
        match self {
            Lifecycle::Worker(v1::WorkerState::Unspecified) => "unknown",
            Lifecycle::Worker(s) => s.name(),
            Lifecycle::Link(LinkState::Connecting) => "connecting",
            Lifecycle::Link(LinkState::Up) => "up",
            Lifecycle::Link(LinkState::Down) => "down",
        }
    }

    pub fn health(self) -> Health {
        match self {
            Lifecycle::Worker(v1::WorkerState::Alive) | Lifecycle::Link(LinkState::Up) => {
                Health::Good
            }
            Lifecycle::Worker(v1::WorkerState::Standby | v1::WorkerState::Left) => Health::Idle,
            Lifecycle::Worker(v1::WorkerState::Suspect | v1::WorkerState::Draining)
            | Lifecycle::Link(LinkState::Connecting) => Health::Warn,
            Lifecycle::Worker(v1::WorkerState::Dead) | Lifecycle::Link(LinkState::Down) => {
                Health::Bad
            }
            Lifecycle::Worker(v1::WorkerState::Unspecified) => Health::Unknown,
        }
    }
}

/// Colour class of a heartbeat age: within two intervals is fine, up to the timeout is late.
pub fn heartbeat_health(age_ms: u64, interval_ms: u64, timeout_ms: u64) -> Health {
    if age_ms <= interval_ms.saturating_mul(2) {
        Health::Good
    } else if age_ms <= timeout_ms {
        Health::Warn
    } else {
        Health::Bad
    }
}

/// A process state from cluster control, shortened for the node list: `killed`, `terminated`,
/// `exited 1`, `paused`.
pub fn short_process(state: NodeState) -> String {
    match state {
        NodeState::Exited {
            signal: Some(s), ..
        } => match Signal::try_from(s) {
            Ok(Signal::SIGKILL) => "killed".into(),
            Ok(Signal::SIGTERM) => "terminated".into(),
            Ok(sig) => format!("killed ({})", sig.as_str()),
            Err(_) => format!("killed ({s})"),
        },
        NodeState::Exited { code: Some(c), .. } => format!("exited {c}"),
        other => other.label(),
    }
}

fn process_health(state: NodeState) -> Health {
    match state {
        NodeState::Running => Health::Good,
        NodeState::Paused | NodeState::NotStarted => Health::Warn,
        NodeState::Exited { .. } => Health::Bad,
    }
}

/// Merges the lifecycle (status stream) and the process state (cluster control) into one label
/// and its health: `alive`, `dead (killed)`, `suspect (paused)`, `unregistered`.
pub fn merge_state(
    role: Role,
    lifecycle: Option<Lifecycle>,
    process: Option<NodeState>,
) -> (String, Health) {
    match (lifecycle, process) {
        (Some(l), Some(NodeState::Running)) | (Some(l), None) => (l.name().to_string(), l.health()),
        (Some(l), Some(p)) => (
            format!("{} ({})", l.name(), short_process(p)),
            l.health().worst(process_health(p)),
        ),
        // Running, but the dispatcher does not list it (yet): starting, or lost its registration.
        (None, Some(NodeState::Running)) if role == Role::Worker => {
            ("unregistered".into(), Health::Warn)
        }
        (None, Some(p)) => (short_process(p), process_health(p)),
        (None, None) => ("?".into(), Health::Unknown),
    }
}

/// A short account of failing disks for a node row: `cache full, checkpoint store failing`.
pub fn disk_summary(disks: &[v1::DiskCondition]) -> Option<String> {
    if disks.is_empty() {
        return None;
    }
    Some(
        disks
            .iter()
            .map(|d| {
                format!(
                    "{} {}",
                    d.store,
                    if d.disk_full { "full" } else { "failing" }
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
    )
}

/// What the dashboard itself logs (in italics, beside the dispatcher's events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DashboardEvent {
    LinkDown,
    LinkUp,
    Action,
    ActionFailed,
}

/// The kind of an event-log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventLabel {
    /// From the dispatcher's event log (`UNSPECIFIED` for a kind this build does not know).
    Cluster(v1::EventKind),
    Dashboard(DashboardEvent),
}

impl EventLabel {
    pub fn name(self) -> &'static str {
        match self {
            EventLabel::Cluster(v1::EventKind::Unspecified) => "unknown",
            EventLabel::Cluster(k) => k.name(),
            EventLabel::Dashboard(DashboardEvent::LinkDown) => "link_down",
            EventLabel::Dashboard(DashboardEvent::LinkUp) => "link_up",
            EventLabel::Dashboard(DashboardEvent::Action) => "action",
            EventLabel::Dashboard(DashboardEvent::ActionFailed) => "action_failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_label_names_the_signal() {
        let killed = |s: Signal| NodeState::Exited {
            code: None,
            signal: Some(s as i32),
        };
        assert_eq!(short_process(killed(Signal::SIGKILL)), "killed");
        assert_eq!(short_process(killed(Signal::SIGTERM)), "terminated");
        assert_eq!(short_process(killed(Signal::SIGSEGV)), "killed (SIGSEGV)");
        let exited = NodeState::Exited {
            code: Some(3),
            signal: None,
        };
        assert_eq!(short_process(exited), "exited 3");
        assert_eq!(short_process(NodeState::Paused), "paused");
    }

    #[test]
    fn a_dead_process_outranks_a_live_lifecycle() {
        let alive = Some(Lifecycle::Worker(v1::WorkerState::Alive));
        assert_eq!(
            merge_state(Role::Worker, alive, Some(NodeState::Running)),
            ("alive".into(), Health::Good)
        );
        assert_eq!(
            merge_state(Role::Worker, alive, Some(NodeState::Paused)),
            ("alive (paused)".into(), Health::Warn)
        );
        assert_eq!(
            merge_state(Role::Worker, None, Some(NodeState::Running)),
            ("unregistered".into(), Health::Warn)
        );
    }
}
