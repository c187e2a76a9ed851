//! The node list: cluster control's processes merged with the dispatcher's workers (matched by
//! address) into [`NodeRow`]s with one label and health each.

use cachew_cluster::NodeState;
use cachew_cluster::control::node_state_from_wire;
use cachew_proto::v1;

use super::{Link, Model, NodeRow, Role, role_of};
use crate::health::{Health, Lifecycle, LinkState, disk_summary, heartbeat_health, merge_state};

impl Model {
    /// The node list: cluster control's nodes in launch order (workers matched to the
    /// dispatcher's by address), then workers only the dispatcher knows.
    pub fn node_rows(&self) -> Vec<NodeRow> {
        let workers: &[v1::WorkerStatus] = self.status.as_ref().map_or(&[], |s| &s.workers);
        let stale = !self.is_up();
        let mut rows = Vec::new();
        let mut matched = vec![false; workers.len()];
        let mut have_dispatcher = false;
        for n in &self.nodes {
            let role = role_of(n);
            // The dispatcher keeps one entry per address; should it ever hold several, the
            // live one (then the latest incarnation) describes the process.
            let worker = (role == Role::Worker)
                .then(|| {
                    workers
                        .iter()
                        .enumerate()
                        .filter(|(_, w)| !n.address.is_empty() && w.address == n.address)
                        .max_by_key(|(_, w)| {
                            (
                                w.state() != v1::WorkerState::Dead,
                                w.incarnation,
                                w.worker_id,
                            )
                        })
                })
                .flatten();
            if let Some((i, _)) = worker
                && let Some(m) = matched.get_mut(i)
            {
                *m = true;
            }
            let process = node_state_from_wire(n);
            let (lifecycle, heartbeat_ms) = match role {
                Role::Dispatcher => {
                    have_dispatcher = true;
                    (Some(Lifecycle::Link(self.link_state())), self.status_age())
                }
                Role::Worker => match worker {
                    Some((_, w)) => (Some(Lifecycle::Worker(w.state())), worker_age(w)),
                    None => (None, None),
                },
                Role::Client => (None, None),
            };
            let w = worker.map(|(_, w)| w);
            let heartbeat_ms = if stale && w.is_some() {
                heartbeat_ms.map(|a| a + self.status_age().unwrap_or(0))
            } else {
                heartbeat_ms
            };
            rows.push(self.row(RowParts {
                key: format!("node:{}", n.name),
                name: n.name.clone(),
                role,
                address: if n.address.is_empty() && role == Role::Dispatcher {
                    self.target.clone()
                } else {
                    n.address.clone()
                },
                lifecycle,
                process,
                heartbeat_ms,
                pid: (n.pid != 0).then_some(n.pid),
                restarts: Some(n.restarts),
                worker: w,
                control_name: Some(n.name.clone()),
                stale: stale && role == Role::Worker && w.is_some(),
                disconnected: n.disconnected,
            }));
        }
        if !have_dispatcher {
            let address = self
                .status
                .as_ref()
                .map(|s| s.dispatcher_address.clone())
                .filter(|a| !a.is_empty())
                .unwrap_or_else(|| self.target.clone());
            rows.insert(
                0,
                self.row(RowParts {
                    key: "dispatcher".into(),
                    name: "dispatcher".into(),
                    role: Role::Dispatcher,
                    address,
                    lifecycle: Some(Lifecycle::Link(self.link_state())),
                    process: None,
                    heartbeat_ms: self.status_age(),
                    pid: None,
                    restarts: None,
                    worker: None,
                    control_name: None,
                    stale: false,
                    disconnected: false,
                }),
            );
        }
        for (w, seen) in workers.iter().zip(matched) {
            if seen {
                continue;
            }
            rows.push(self.row(RowParts {
                key: format!("worker:{}", w.worker_id),
                name: format!("worker #{}", w.worker_id),
                role: Role::Worker,
                address: w.address.clone(),
                lifecycle: Some(Lifecycle::Worker(w.state())),
                process: None,
                heartbeat_ms: worker_age(w).map(|a| {
                    if stale {
                        a + self.status_age().unwrap_or(0)
                    } else {
                        a
                    }
                }),
                pid: None,
                restarts: None,
                worker: Some(w),
                control_name: None,
                stale,
                disconnected: false,
            }));
        }
        rows
    }

    fn row(&self, mut p: RowParts<'_>) -> NodeRow {
        // While the dispatcher is down its last word on a worker is stale; if cluster control
        // knows the process is gone, that is the fresher fact.
        if p.stale && p.process.is_some_and(|s| s != NodeState::Running) {
            p.stale = false;
            p.lifecycle = None;
        }
        let (mut state, health) = merge_state(p.role, p.lifecycle, p.process);
        if p.disconnected {
            state.push_str(" (cut off)");
        }
        let (interval, timeout) = self.timing();
        let heartbeat_health = match (p.role, p.heartbeat_ms) {
            (_, None) => Health::Unknown,
            (Role::Dispatcher, Some(ms)) => {
                if ms <= 2000 {
                    Health::Good
                } else if ms <= 5000 {
                    Health::Warn
                } else {
                    Health::Bad
                }
            }
            (_, Some(ms)) => heartbeat_health(ms, interval, timeout),
        };
        NodeRow {
            key: p.key,
            name: p.name,
            role: p.role,
            address: p.address,
            lifecycle: p.lifecycle,
            process: p.process,
            state,
            health,
            heartbeat_ms: p.heartbeat_ms,
            heartbeat_health,
            pid: p.pid,
            restarts: p.restarts,
            worker_id: p.worker.map(|w| w.worker_id),
            incarnation: p.worker.map(|w| w.incarnation),
            tasks: p.worker.map(|w| w.tasks.len()),
            control_name: p.control_name,
            stale: p.stale,
            disconnected: p.disconnected,
            disks: p.worker.and_then(|w| disk_summary(&w.disks)),
        }
    }

    fn link_state(&self) -> LinkState {
        match self.link {
            Link::Up { .. } => LinkState::Up,
            Link::Down { .. } => LinkState::Down,
            Link::Connecting { .. } => LinkState::Connecting,
        }
    }

    /// Time since the last status snapshot.
    fn status_age(&self) -> Option<u64> {
        self.last_status_ms.map(|t| self.now_ms.saturating_sub(t))
    }
}

struct RowParts<'a> {
    key: String,
    name: String,
    role: Role,
    address: String,
    lifecycle: Option<Lifecycle>,
    process: Option<NodeState>,
    heartbeat_ms: Option<u64>,
    pid: Option<u32>,
    restarts: Option<u32>,
    worker: Option<&'a v1::WorkerStatus>,
    control_name: Option<String>,
    stale: bool,
    disconnected: bool,
}

fn worker_age(w: &v1::WorkerStatus) -> Option<u64> {
    (w.state() != v1::WorkerState::Dead).then_some(w.heartbeat_age_ms)
}
