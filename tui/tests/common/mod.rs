//! Model states built from real wire messages: the `ClusterStatus` snapshots a dispatcher would
//! stream and the `NodeInfo` lists cluster control would answer, applied to a [`Model`] in the
//! order and at the times they would arrive.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;

use cachew_cluster::NodeState;
use cachew_cluster::control::process_state;
use cachew_proto::v1;
use cachew_tui::model::{Mode, Model, Update};

/// 2026-01-01 12:34:00 UTC.
pub const T0: u64 = 1_767_270_840_000;
pub const DISPATCHER: &str = "127.0.0.1:40461";
pub const CONTROL: &str = "127.0.0.1:40460";
pub const HEARTBEAT_MS: u64 = 200;
pub const TIMEOUT_MS: u64 = 2000;
pub const SPLITS: u32 = 32;
pub const RECORDS: u64 = 2048;
pub const SPLIT_RECORDS: u64 = 64;

pub fn worker_address(id: u64) -> String {
    format!("127.0.0.1:{}", 40461 + id)
}

/// One worker as the dispatcher reports it.
#[derive(Debug, Clone)]
pub struct W {
    pub id: u64,
    pub state: v1::WorkerState,
    pub age_ms: u64,
    pub standby: bool,
    pub incarnation: u64,
    /// (count, age of the last checkpoint in ms at T0, bytes, duration in µs).
    pub checkpoint: Option<(u64, u64, u64, u64)>,
}

/// One split assignment of the epoch in progress.
#[derive(Debug, Clone, Copy)]
pub struct A {
    pub position: u32,
    pub worker: u64,
    pub lease: u64,
    pub produced: u32,
    pub acked: u32,
}

/// What the dispatcher knows at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub at: u64,
    pub workers: Vec<W>,
    pub epoch: u64,
    pub ordinal: u32,
    pub index: u32,
    pub delivered: u64,
    pub assignments: Vec<A>,
    pub events: Vec<v1::Event>,
    pub journal: Option<v1::JournalStatus>,
    /// Epochs with a verdict (all verified exactly-once).
    pub verdicts: u64,
    /// The client's share of time waiting for data (None: a client that does not report it).
    pub wait_ratio: Option<f64>,
}

pub fn event(seq: u64, at: u64, kind: v1::EventKind, message: &str, worker: u64) -> v1::Event {
    v1::Event {
        seq,
        unix_ms: at,
        kind: kind.into(),
        message: message.to_string(),
        worker_id: worker,
        job_id: if worker == 0 { 1 } else { 0 },
    }
}

fn split_of(epoch: u64, position: u32) -> u32 {
    // Any fixed permutation will do for the view.
    ((position as u64 * 13 + epoch * 7) % SPLITS as u64) as u32
}

impl Snapshot {
    pub fn status(&self) -> v1::ClusterStatus {
        let assignments: Vec<v1::AssignmentStatus> = self
            .assignments
            .iter()
            .map(|a| v1::AssignmentStatus {
                job_id: 1,
                epoch: self.epoch,
                position: a.position,
                split: split_of(self.epoch, a.position),
                worker_id: a.worker,
                lease: a.lease,
                produced: a.produced,
                acked: a.acked,
                len: SPLIT_RECORDS as u32,
            })
            .collect();
        let workers = self
            .workers
            .iter()
            .map(|w| v1::WorkerStatus {
                elements_produced: 0,
                disks: Vec::new(),
                worker_id: w.id,
                address: worker_address(w.id),
                state: w.state.into(),
                heartbeat_age_ms: if w.state == v1::WorkerState::Dead {
                    0
                } else {
                    w.age_ms
                },
                standby: w.standby,
                incarnation: w.incarnation,
                tasks: self
                    .assignments
                    .iter()
                    .filter(|a| a.worker == w.id)
                    .map(|a| v1::TaskProgress {
                        key: Some(v1::TaskKey::new(1, self.epoch, a.position)),
                        lease: a.lease,
                        split: split_of(self.epoch, a.position),
                        produced: a.produced,
                        acked: a.acked,
                        len: SPLIT_RECORDS as u32,
                        idle: false,
                    })
                    .collect(),
                checkpoint: w
                    .checkpoint
                    .map(|(count, age, bytes, us)| v1::CheckpointInfo {
                        count,
                        last_unix_ms: if count == 0 { 0 } else { T0 - age },
                        last_bytes: bytes,
                        last_duration_us: us,
                    }),
                threads: 2,
            })
            .collect();
        let reports = (0..self.verdicts)
            .map(|e| v1::EpochReport {
                epoch: e,
                examples: RECORDS,
                skipped: 0,
                images_per_sec: 590.0 + (e * 37 % 40) as f64,
                verified: true,
                exactly_once: true,
                verdict: format!("exactly-once: {RECORDS} of {RECORDS} records"),
            })
            .collect();
        let job = v1::JobStatus {
            cache: None,
            job_id: 1,
            name: "demo".into(),
            dataset_id: "f4b0adff2205c1ed".into(),
            seed: 42,
            num_epochs: 0,
            num_splits: SPLITS,
            num_records: RECORDS,
            consumers: vec![v1::ConsumerStatus {
                disks: Vec::new(),
                index: 0,
                generation: 1,
                attached: true,
                cursor: Some(v1::Cursor {
                    epoch: self.epoch,
                    ordinal: self.ordinal,
                    index: self.index,
                }),
                delivered_examples: self.delivered,
                reports,
                wait_seconds_total: self.wait_ratio.map_or(0.0, |r| 60.0 * r),
                input_wait_ratio: self.wait_ratio.unwrap_or(0.0),
            }],
            epochs: vec![
                v1::EpochStatus {
                    epoch: self.epoch - 1,
                    splits_total: SPLITS,
                    splits_delivered: SPLITS,
                    splits_assigned: 0,
                },
                v1::EpochStatus {
                    epoch: self.epoch,
                    splits_total: SPLITS,
                    splits_delivered: self.ordinal,
                    splits_assigned: assignments.len() as u32,
                },
            ],
            finished: false,
        };
        v1::ClusterStatus {
            unix_ms: self.at,
            dispatcher_address: DISPATCHER.into(),
            dispatcher_start_unix_ms: T0 - 600_000,
            workers,
            jobs: vec![job],
            assignments,
            events: self.events.clone(),
            journal: self.journal,
            worker_timeout_ms: TIMEOUT_MS,
            heartbeat_interval_ms: HEARTBEAT_MS,
            control_address: CONTROL.into(),
            autoscale: None,
        }
    }
}

pub const RUNNING: NodeState = NodeState::Running;
/// SIGKILL'd.
pub const KILLED: NodeState = NodeState::Exited {
    code: None,
    signal: Some(9),
};

/// Sets a node's process state as cluster control reports it.
pub fn set_state(n: &mut v1::NodeInfo, state: NodeState) {
    n.state = process_state(state).into();
    (n.exit_code, n.signal) = match state {
        NodeState::Exited { code, signal } => (code, signal),
        _ => (None, None),
    };
}

/// Cluster control's answer: (name, pid, state, restarts).
pub fn nodes(standby: bool, states: &[(&str, u32, NodeState, u32)]) -> Vec<v1::NodeInfo> {
    let mut out = Vec::new();
    for &(name, pid, state, restarts) in states {
        let (role, address) = if name == "dispatcher" {
            (v1::NodeRole::Dispatcher, DISPATCHER.to_string())
        } else if let Some(n) = name.strip_prefix("worker-") {
            (v1::NodeRole::Worker, worker_address(n.parse().unwrap()))
        } else if name.starts_with("standby-") {
            (v1::NodeRole::Worker, worker_address(4))
        } else {
            (v1::NodeRole::Client, String::new())
        };
        if name.starts_with("standby-") && !standby {
            continue;
        }
        let mut node = v1::NodeInfo {
            name: name.into(),
            role: role.into(),
            address,
            pid,
            restarts,
            standby: name.starts_with("standby-"),
            log_path: format!("/tmp/runs/demo/logs/{name}.log"),
            ..Default::default()
        };
        set_state(&mut node, state);
        out.push(node);
    }
    out
}

pub fn healthy_nodes() -> Vec<v1::NodeInfo> {
    nodes(
        true,
        &[
            ("dispatcher", 41001, RUNNING, 0),
            ("worker-1", 41002, RUNNING, 0),
            ("worker-2", 41003, RUNNING, 0),
            ("worker-3", 41004, RUNNING, 0),
            ("standby-1", 41005, RUNNING, 0),
            ("client-1", 41006, RUNNING, 0),
        ],
    )
}

pub fn workers(standby: bool) -> Vec<W> {
    let mut w = vec![
        W {
            id: 1,
            state: v1::WorkerState::Alive,
            age_ms: 120,
            standby: false,
            incarnation: 1,
            checkpoint: Some((42, 1200, 1536, 230)),
        },
        W {
            id: 2,
            state: v1::WorkerState::Alive,
            age_ms: 80,
            standby: false,
            incarnation: 1,
            checkpoint: Some((41, 800, 1490, 190)),
        },
        W {
            id: 3,
            state: v1::WorkerState::Alive,
            age_ms: 150,
            standby: false,
            incarnation: 1,
            checkpoint: Some((40, 2600, 1610, 310)),
        },
    ];
    if standby {
        w.push(W {
            id: 4,
            state: v1::WorkerState::Standby,
            age_ms: 90,
            standby: true,
            incarnation: 1,
            checkpoint: Some((0, 0, 0, 0)),
        });
    }
    w
}

/// The in-flight window of epoch 7 from position 20: positions 20..28 round-robin on workers 1-3.
pub fn window(from: u32, owner: impl Fn(u32) -> u64) -> Vec<A> {
    (from..from + 8)
        .map(|p| A {
            position: p,
            worker: owner(p),
            lease: 200 + p as u64,
            produced: if p == from { 40 } else { 64 - (p - from) * 6 },
            acked: if p == from { 5 } else { 0 },
        })
        .collect()
}

pub fn round_robin(p: u32) -> u64 {
    (p % 3 + 1) as u64
}

/// The buffered events a fresh status stream starts with: workers registering, the job, and
/// seven verified epochs.
pub fn history(standby: bool) -> Vec<v1::Event> {
    let mut ev = Vec::new();
    let mut seq = 0;
    let mut push = |at: u64, kind: v1::EventKind, msg: String, worker: u64| {
        seq += 1;
        ev.push(event(seq, at, kind, &msg, worker));
    };
    let start = T0 - 30_000;
    for id in 1..=3 {
        push(
            start + id * 10,
            v1::EventKind::Registered,
            format!(
                "worker {id} at {} registered (incarnation 1)",
                worker_address(id)
            ),
            id,
        );
    }
    if standby {
        push(
            start + 40,
            v1::EventKind::Registered,
            format!(
                "standby worker 4 at {} registered (incarnation 1)",
                worker_address(4)
            ),
            4,
        );
    }
    push(
        start + 900,
        v1::EventKind::JobCreated,
        "job 1 `demo` created".into(),
        0,
    );
    push(
        start + 910,
        v1::EventKind::ConsumerAttached,
        "job 1 consumer 0 attached (generation 1) at epoch 0 split #0 index 0".into(),
        0,
    );
    for e in 0..7u64 {
        let at = start + 1000 + (e + 1) * 3400;
        push(
            at,
            v1::EventKind::EpochDone,
            format!("job 1 consumer 0 finished epoch {e}"),
            0,
        );
        push(
            at + 40,
            v1::EventKind::VerdictOk,
            format!(
                "job 1 consumer 0 epoch {e}: 2048 examples, {} images/s, exactly-once: 2048 of 2048 records",
                590 + e * 37 % 40
            ),
            0,
        );
    }
    ev
}

pub fn journal() -> Option<v1::JournalStatus> {
    Some(v1::JournalStatus {
        enabled: true,
        records: 1234,
        last_seq: 1234,
        last_snapshot_seq: 1000,
        last_snapshot_unix_ms: T0 - 45_000,
    })
}

/// Examples per second over the last eleven seconds before T0 (a demo client with a 50 ms
/// training step per batch of 32).
const RATES: [u64; 11] = [590, 610, 602, 615, 588, 605, 597, 560, 620, 603, 611];

/// A demo model fed a healthy cluster's stream from T0 - 11 s to T0: the buffered events, then a
/// snapshot a second, each with the node list cluster control answers at that moment.
pub fn healthy_model(standby: bool, journal_on: bool) -> (Model, Snapshot) {
    let mut model = Model::new(
        Mode::Demo {
            run_dir: PathBuf::from(".cachew/runs/demo-1767270800000"),
        },
        DISPATCHER,
        Some(CONTROL.into()),
        T0 - 12_000,
    );
    let delivered_at_t0 = 7 * RECORDS + 20 * SPLIT_RECORDS + 5;
    let total: u64 = RATES.iter().sum();
    let mut delivered = delivered_at_t0 - total;
    let node_list = if standby {
        healthy_nodes()
    } else {
        healthy_nodes().into_iter().filter(|n| !n.standby).collect()
    };
    let mut last = None;
    for k in 0..=11u64 {
        let at = T0 - 11_000 + k * 1000;
        if k > 0 {
            delivered += RATES[(k - 1) as usize];
        }
        let snap = Snapshot {
            at,
            workers: workers(standby),
            epoch: 7,
            ordinal: 20,
            index: 5,
            delivered,
            assignments: window(20, round_robin),
            events: if k == 0 { history(standby) } else { Vec::new() },
            journal: if journal_on { journal() } else { None },
            verdicts: 7,
            wait_ratio: None,
        };
        model.apply(Update::Nodes(node_list.clone()), at);
        model.apply(Update::Status(Box::new(snap.status())), at + 5);
        last = Some(snap);
    }
    model.tick(T0 + 100);
    (model, last.unwrap())
}

/// Healthy: three workers, a standby, a client in epoch 7 of a looping job, journal on.
pub fn healthy() -> Model {
    healthy_model(true, true).0
}

/// Healthy, but the trainer waits for data 37% of the time (its input pipeline is too slow).
pub fn input_bound() -> Model {
    let (mut model, mut snap) = healthy_model(true, true);
    snap.at += 1000;
    snap.delivered += 612;
    snap.wait_ratio = Some(0.37);
    model.apply(Update::Status(Box::new(snap.status())), snap.at + 5);
    model.tick(T0 + 1100);
    model
}

/// Worker 2 killed at T0 + 300 in a cluster without a standby: heartbeats missed, then declared
/// dead at T0 + 2400; its three splits are released and wait for a free worker.
pub fn worker_dead() -> Model {
    let (mut model, base) = healthy_model(false, false);
    model.tick(T0 + 300);
    let killed = nodes(
        false,
        &[
            ("dispatcher", 41001, RUNNING, 0),
            ("worker-1", 41002, RUNNING, 0),
            ("worker-2", 0, KILLED, 0),
            ("worker-3", 41004, RUNNING, 0),
            ("client-1", 41006, RUNNING, 0),
        ],
    );
    model.apply(
        Update::ActDone {
            label: "kill worker-2".into(),
            result: Ok(v1::ActResponse {
                nodes: killed.clone(),
                errors: vec![],
            }),
        },
        T0 + 320,
    );
    let seq = history(false).len() as u64;
    let mut snap = base.clone();
    snap.at = T0 + 1000;
    snap.delivered += 420;
    snap.index = 40;
    snap.workers[1].state = v1::WorkerState::Suspect;
    snap.workers[1].age_ms = 900;
    snap.events = vec![event(
        seq + 1,
        T0 + 950,
        v1::EventKind::HeartbeatMissed,
        "worker 2: heartbeat missed (820 ms since the last)",
        2,
    )];
    model.apply(Update::Nodes(killed.clone()), T0 + 1000);
    model.apply(Update::Status(Box::new(snap.status())), T0 + 1005);
    // Declared dead: its splits (positions 22, 25, 28... of the window) are released.
    let mut dead = snap.clone();
    dead.at = T0 + 2450;
    dead.workers[1].state = v1::WorkerState::Dead;
    dead.workers[1].age_ms = 0;
    dead.assignments.retain(|a| a.worker != 2);
    dead.events = vec![
        event(
            seq + 2,
            T0 + 2400,
            v1::EventKind::HeartbeatTimeout,
            "worker 2: no heartbeat for 2080 ms (timeout 2000 ms)",
            2,
        ),
        event(
            seq + 3,
            T0 + 2400,
            v1::EventKind::DeclaredDead,
            &format!("worker 2 at {} declared dead", worker_address(2)),
            2,
        ),
    ];
    for (i, a) in base
        .assignments
        .iter()
        .filter(|a| a.worker == 2)
        .enumerate()
    {
        dead.events.push(event(
            seq + 4 + i as u64,
            T0 + 2400,
            v1::EventKind::Failover,
            &format!(
                "job 1 epoch 7 split {} released by dead worker 2; next free worker resumes it at index {}",
                split_of(7, a.position),
                a.acked
            ),
            2,
        ));
    }
    model.apply(Update::Nodes(killed), T0 + 2450);
    model.apply(Update::Status(Box::new(dead.status())), T0 + 2455);
    model.tick(T0 + 2600);
    model
}

/// Worker 2 killed at T0 + 300 with a standby present: declared dead at T0 + 2400, the standby
/// promoted and handed worker 2's splits, resuming each at the index the client had fetched.
pub fn failover_in_progress() -> Model {
    let (mut model, base) = healthy_model(true, false);
    let killed = nodes(
        true,
        &[
            ("dispatcher", 41001, RUNNING, 0),
            ("worker-1", 41002, RUNNING, 0),
            ("worker-2", 0, KILLED, 0),
            ("worker-3", 41004, RUNNING, 0),
            ("standby-1", 41005, RUNNING, 0),
            ("client-1", 41006, RUNNING, 0),
        ],
    );
    model.apply(Update::Nodes(killed.clone()), T0 + 400);
    let seq = history(true).len() as u64;
    let mut suspect = base.clone();
    suspect.at = T0 + 1000;
    suspect.delivered += 380;
    suspect.index = 30;
    suspect.workers[1].state = v1::WorkerState::Suspect;
    suspect.workers[1].age_ms = 850;
    suspect.events = vec![event(
        seq + 1,
        T0 + 900,
        v1::EventKind::HeartbeatMissed,
        "worker 2: heartbeat missed (810 ms since the last)",
        2,
    )];
    model.apply(Update::Status(Box::new(suspect.status())), T0 + 1005);
    let mut stalled = suspect.clone();
    stalled.at = T0 + 2000;
    stalled.delivered += 60;
    stalled.index = 64;
    stalled.ordinal = 21;
    stalled.assignments.retain(|a| a.position != 20);
    stalled.workers[1].age_ms = 1850;
    stalled.events = Vec::new();
    model.apply(Update::Status(Box::new(stalled.status())), T0 + 2005);
    let mut promoted = stalled.clone();
    promoted.at = T0 + 2450;
    promoted.workers[1].state = v1::WorkerState::Dead;
    promoted.workers[3].state = v1::WorkerState::Alive;
    promoted.workers[3].standby = false;
    let mut events = vec![
        event(
            seq + 2,
            T0 + 2400,
            v1::EventKind::HeartbeatTimeout,
            "worker 2: no heartbeat for 2050 ms (timeout 2000 ms)",
            2,
        ),
        event(
            seq + 3,
            T0 + 2400,
            v1::EventKind::DeclaredDead,
            &format!("worker 2 at {} declared dead", worker_address(2)),
            2,
        ),
        event(
            seq + 4,
            T0 + 2400,
            v1::EventKind::StandbyPromoted,
            "standby worker 4 promoted to replace worker 2",
            4,
        ),
    ];
    let moved = promoted.assignments.iter_mut().filter(|a| a.worker == 2);
    for (n, a) in (seq + 5..).zip(moved) {
        a.worker = 4;
        a.lease += 100;
        a.produced = a.acked;
        events.push(event(
            n,
            T0 + 2400,
            v1::EventKind::Failover,
            &format!(
                "job 1 epoch 7 split {} moved from dead worker 2 to worker 4 at index {}",
                split_of(7, a.position),
                a.acked
            ),
            4,
        ));
    }
    promoted.events = events;
    model.apply(Update::Nodes(killed), T0 + 2450);
    model.apply(Update::Status(Box::new(promoted.status())), T0 + 2455);
    model.tick(T0 + 2600);
    model
}

/// Healthy until T0, then the dispatcher killed at T0 + 200: the stream fails, cluster control
/// shows the process gone, and three reconnect attempts have failed by T0 + 4000.
pub fn dispatcher_down() -> Model {
    let mut model = healthy();
    let killed = nodes(
        true,
        &[
            ("dispatcher", 0, KILLED, 0),
            ("worker-1", 41002, RUNNING, 0),
            ("worker-2", 41003, RUNNING, 0),
            ("worker-3", 41004, RUNNING, 0),
            ("standby-1", 41005, RUNNING, 0),
            ("client-1", 41006, RUNNING, 0),
        ],
    );
    model.apply(
        Update::StreamDown {
            error: "h2 protocol error: error reading a body from connection".into(),
            attempt: 1,
            retry_in_ms: 250,
        },
        T0 + 210,
    );
    model.apply(Update::Nodes(killed.clone()), T0 + 300);
    for (attempt, at, retry) in [
        (2, T0 + 700, 500),
        (3, T0 + 1700, 1000),
        (4, T0 + 3300, 2000),
    ] {
        model.apply(Update::Connecting, at - 20);
        model.apply(
            Update::StreamDown {
                error: "transport error: tcp connect error: Connection refused (os error 111)"
                    .into(),
                attempt,
                retry_in_ms: retry,
            },
            at,
        );
    }
    model.apply(Update::Nodes(killed), T0 + 3900);
    model.tick(T0 + 4000);
    model
}
