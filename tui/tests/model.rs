//! The model's behaviour: merging the status stream with cluster control, the event log across
//! reconnects and dispatcher restarts, throughput, the split grid, and keys becoming effects.

#![allow(clippy::unwrap_used)]

mod common;

use cachew_cluster::NodeState;
use cachew_proto::v1;
use cachew_tui::keys::Key;
use cachew_tui::model::{
    ActCommand, CheckpointSource, Control, DashboardEvent, Effect, EventLabel, Health, Link, Mode,
    Model, Overlay, SplitCell, Targets, Update,
};
use common::*;

fn names(m: &Model) -> Vec<String> {
    m.node_rows().into_iter().map(|r| r.name).collect()
}

fn row<'a>(rows: &'a [cachew_tui::model::NodeRow], name: &str) -> &'a cachew_tui::model::NodeRow {
    rows.iter().find(|r| r.name == name).unwrap()
}

#[test]
fn nodes_merge_control_and_status_by_address() {
    let m = healthy();
    assert_eq!(
        names(&m),
        [
            "dispatcher",
            "worker-1",
            "worker-2",
            "worker-3",
            "standby-1",
            "client-1"
        ]
    );
    let rows = m.node_rows();
    let w2 = row(&rows, "worker-2");
    assert_eq!(w2.worker_id, Some(2));
    assert_eq!(w2.pid, Some(41003));
    assert_eq!(w2.state, "alive");
    assert_eq!(w2.tasks, Some(2));
    let standby = row(&rows, "standby-1");
    assert_eq!(
        (standby.state.as_str(), standby.health),
        ("standby", Health::Idle)
    );
    assert_eq!(row(&rows, "dispatcher").state, "up");

    let dead = worker_dead();
    let rows = dead.node_rows();
    let w2 = row(&rows, "worker-2");
    assert_eq!(w2.state, "dead (killed)");
    assert_eq!(w2.health, Health::Bad);
    assert_eq!(w2.pid, None);
    assert_eq!(w2.heartbeat_ms, None, "a dead worker has no heartbeat age");
}

#[test]
fn attached_without_control_shows_what_the_dispatcher_knows_and_refuses_actions() {
    let mut m = Model::new(Mode::Attach, DISPATCHER, None, T0);
    assert_eq!(m.control(), &Control::Unknown);
    let (_, snap) = healthy_model(true, false);
    let mut status = snap.status();
    status.control_address.clear();
    m.apply(Update::Status(Box::new(status)), T0 + 10);
    assert_eq!(m.control(), &Control::Unavailable);
    assert_eq!(
        names(&m),
        [
            "dispatcher",
            "worker #1",
            "worker #2",
            "worker #3",
            "worker #4"
        ]
    );
    m.on_key(Key::Down);
    assert_eq!(m.on_key(Key::Kill), None);
    let notice = m.notice().unwrap();
    assert!(notice.text.contains("no cluster control"), "{notice:?}");
    // Quitting an attached dashboard asks nothing and stops nothing.
    assert_eq!(
        m.on_key(Key::Quit),
        Some(Effect::Quit {
            stop_cluster: false
        })
    );
}

#[test]
fn an_advertised_control_endpoint_is_used_when_attached() {
    let mut m = Model::new(Mode::Attach, DISPATCHER, None, T0);
    let (_, snap) = healthy_model(true, false);
    m.apply(Update::Status(Box::new(snap.status())), T0 + 10);
    assert_eq!(m.control_address(), Some(CONTROL));
}

#[test]
fn keys_become_control_commands() {
    let mut m = healthy();
    // The selection starts on the dispatcher; j moves to worker-1.
    m.on_key(Key::Down);
    let kill = m.on_key(Key::Kill);
    assert_eq!(
        kill,
        Some(Effect::Act(ActCommand {
            action: v1::Action::Kill,
            targets: Targets::Named(vec!["worker-1".into()]),
            label: "kill worker-1".into(),
        }))
    );
    assert_eq!(m.pending_actions(), 1);
    m.on_key(Key::Down);
    m.on_key(Key::Down);
    let Some(Effect::Act(restart)) = m.on_key(Key::Restart) else {
        panic!("no restart")
    };
    assert_eq!(
        restart.targets,
        Targets::Named(["worker-3"].map(String::from).to_vec())
    );
    assert_eq!(restart.action, v1::Action::Restart);
    let Some(Effect::Act(standby)) = m.on_key(Key::StartStandby) else {
        panic!("no standby")
    };
    assert_eq!(standby.action, v1::Action::StartStandby);
    // Movement stops at the ends.
    for _ in 0..10 {
        m.on_key(Key::Down);
    }
    let Some(Effect::Act(t)) = m.on_key(Key::Terminate) else {
        panic!()
    };
    assert_eq!(
        t.targets,
        Targets::Named(["client-1"].map(String::from).to_vec())
    );
    m.on_key(Key::First);
    let Some(Effect::Act(k)) = m.on_key(Key::Kill) else {
        panic!()
    };
    assert_eq!(
        k.targets,
        Targets::Named(["dispatcher"].map(String::from).to_vec())
    );
}

#[test]
fn pause_toggles_to_resume_on_a_paused_node() {
    let mut m = healthy();
    m.on_key(Key::Down);
    let Some(Effect::Act(p)) = m.on_key(Key::PauseResume) else {
        panic!()
    };
    assert_eq!(p.action, v1::Action::Pause);
    let mut nodes = healthy_nodes();
    set_state(&mut nodes[1], NodeState::Paused);
    m.apply(Update::Nodes(nodes), T0 + 500);
    assert_eq!(m.node_rows()[1].state, "alive (paused)");
    let Some(Effect::Act(r)) = m.on_key(Key::PauseResume) else {
        panic!()
    };
    assert_eq!(r.action, v1::Action::Resume);
}

#[test]
fn bulk_actions_ask_first_and_spare_the_clients() {
    let mut m = healthy();
    assert_eq!(m.on_key(Key::KillAll), None);
    assert!(matches!(m.overlay(), Overlay::Confirm { .. }));
    // Unrelated keys do nothing while the question is open.
    assert_eq!(m.on_key(Key::Kill), None);
    assert!(matches!(m.overlay(), Overlay::Confirm { .. }));
    assert_eq!(m.on_key(Key::No), None);
    assert_eq!(m.overlay(), &Overlay::None);
    m.on_key(Key::RestartAll);
    let Some(Effect::Act(all)) = m.on_key(Key::Yes) else {
        panic!("no action")
    };
    assert_eq!(all.action, v1::Action::Restart);
    let Targets::Named(all_nodes) = &all.targets else {
        panic!("{:?}", all.targets)
    };
    assert_eq!(
        *all_nodes,
        [
            "dispatcher",
            "worker-1",
            "worker-2",
            "worker-3",
            "standby-1"
        ]
    );
}

#[test]
fn quitting_a_demo_asks_whether_to_stop_the_cluster() {
    let mut m = healthy();
    assert_eq!(m.on_key(Key::Quit), None);
    assert_eq!(m.overlay(), &Overlay::Quit);
    assert_eq!(m.on_key(Key::Cancel), None);
    assert_eq!(m.overlay(), &Overlay::None);
    m.on_key(Key::Quit);
    assert_eq!(
        m.on_key(Key::Yes),
        Some(Effect::Quit { stop_cluster: true })
    );
    m.on_key(Key::Quit);
    assert_eq!(
        m.on_key(Key::No),
        Some(Effect::Quit {
            stop_cluster: false
        })
    );
    // Ctrl-C stops a demo without asking.
    assert_eq!(
        m.on_key(Key::Interrupt),
        Some(Effect::Quit { stop_cluster: true })
    );
}

#[test]
fn action_results_reach_the_status_line_and_the_log() {
    let mut m = healthy();
    m.on_key(Key::Down);
    m.on_key(Key::Kill);
    assert_eq!(m.notice().unwrap().text, "kill worker-1…");
    m.apply(
        Update::ActDone {
            label: "kill worker-1".into(),
            result: Ok(v1::ActResponse {
                nodes: healthy_nodes(),
                errors: vec!["worker-1: cannot signal worker-1: it is not running".into()],
            }),
        },
        T0 + 200,
    );
    assert_eq!(m.pending_actions(), 0);
    let notice = m.notice().unwrap();
    assert!(notice.text.contains("it is not running"), "{notice:?}");
    assert_eq!(
        m.events().last().unwrap().kind,
        EventLabel::Dashboard(DashboardEvent::ActionFailed)
    );
    // Errors stay until replaced; successes fade.
    m.tick(T0 + 60_000);
    assert!(m.notice().is_some());
    m.apply(
        Update::ActDone {
            label: "restart worker-1".into(),
            result: Err("connection refused".into()),
        },
        T0 + 60_100,
    );
    assert_eq!(
        m.notice().unwrap().text,
        "restart worker-1 failed: connection refused"
    );
}

#[test]
fn reconnecting_replays_no_event_twice_and_a_restarted_dispatcher_shows_its_new_ones() {
    let mut m = healthy();
    let before = m.events().len();
    assert_eq!(before, history(true).len());
    // The stream dies and comes back: the dispatcher replays its whole buffer.
    m.apply(
        Update::StreamDown {
            error: "stream reset".into(),
            attempt: 1,
            retry_in_ms: 250,
        },
        T0 + 1000,
    );
    assert!(matches!(m.link(), Link::Down { .. }));
    assert_eq!(
        m.events().last().unwrap().kind,
        EventLabel::Dashboard(DashboardEvent::LinkDown)
    );
    let (_, snap) = healthy_model(true, true);
    let mut replay = snap.status();
    replay.events = history(true);
    m.apply(Update::Status(Box::new(replay)), T0 + 1500);
    assert!(m.is_up());
    assert_eq!(
        m.events().last().unwrap().kind,
        EventLabel::Dashboard(DashboardEvent::LinkUp)
    );
    assert_eq!(
        m.events().len(),
        before + 2,
        "only link_down and link_up are new"
    );
    // A restarted dispatcher numbers its events from 1 again.
    let mut fresh = snap.status();
    fresh.dispatcher_start_unix_ms = T0 + 2000;
    fresh.events = vec![event(
        1,
        T0 + 2100,
        v1::EventKind::Registered,
        "worker 1 registered",
        1,
    )];
    m.apply(Update::Status(Box::new(fresh.clone())), T0 + 2200);
    assert_eq!(m.events().last().unwrap().message, "worker 1 registered");
    let n = m.events().len();
    m.apply(Update::Status(Box::new(fresh)), T0 + 2300);
    assert_eq!(m.events().len(), n);
}

#[test]
fn a_down_dispatcher_keeps_the_last_view() {
    let m = dispatcher_down();
    assert!(matches!(m.link(), Link::Down { attempt: 4, .. }));
    assert!(m.status().is_some(), "the last snapshot stays");
    assert_eq!(m.focus_job().unwrap().name, "demo");
    let rows = m.node_rows();
    let d = row(&rows, "dispatcher");
    assert_eq!(d.state, "down (killed)");
    assert_eq!(d.heartbeat_ms, Some(3995), "time since the last snapshot");
    let w1 = row(&rows, "worker-1");
    assert!(w1.stale);
    assert_eq!(w1.heartbeat_ms, Some(120 + 3995));
}

#[test]
fn throughput_comes_from_successive_delivered_totals() {
    let m = healthy();
    let rates: Vec<u64> = m.throughput(1).unwrap().rates().collect();
    assert_eq!(
        rates,
        [590, 610, 602, 615, 588, 605, 597, 560, 620, 603, 611]
    );
    // A total that goes back (a consumer started over) starts a new series, not a huge rate.
    let mut m = healthy();
    let (_, mut snap) = healthy_model(true, false);
    snap.at = T0 + 1000;
    snap.delivered = 10;
    snap.events.clear();
    m.apply(Update::Status(Box::new(snap.status())), T0 + 1000);
    snap.at = T0 + 2000;
    snap.delivered = 610;
    m.apply(Update::Status(Box::new(snap.status())), T0 + 2000);
    assert_eq!(m.throughput(1).unwrap().latest(), Some(600));
}

#[test]
fn split_cells_follow_the_cursor_and_the_assignments() {
    let m = healthy();
    let job = m.focus_job().unwrap();
    assert_eq!(Model::current_epoch(job), 7);
    let cells = m.split_cells(job, 7);
    assert_eq!(cells.len(), SPLITS as usize);
    assert!(cells[..20].iter().all(|c| *c == SplitCell::Delivered));
    assert_eq!(
        cells[20],
        SplitCell::Assigned {
            worker_id: 3,
            owner_ok: true,
            acked: 5,
            len: 64
        }
    );
    assert!(cells[28..].iter().all(|c| *c == SplitCell::Unassigned));

    // While the owner is suspect its splits are flagged.
    let mut m = healthy();
    let (_, mut snap) = healthy_model(true, false);
    snap.workers[0].state = v1::WorkerState::Suspect;
    snap.events.clear();
    m.apply(Update::Status(Box::new(snap.status())), T0 + 500);
    let job = m.focus_job().unwrap();
    let flagged: Vec<u32> = m
        .split_cells(job, 7)
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            matches!(
                c,
                SplitCell::Assigned {
                    owner_ok: false,
                    ..
                }
            )
        })
        .map(|(p, _)| p as u32)
        .collect();
    assert_eq!(flagged, [21, 24, 27]);

    // Worker 2's splits are released when it is declared dead.
    let dead = worker_dead();
    let job = dead.focus_job().unwrap();
    let cells = dead.split_cells(job, 7);
    assert_eq!(cells[22], SplitCell::Unassigned);
    assert_eq!(cells[25], SplitCell::Unassigned);
}

#[test]
fn verdicts_are_listed_newest_first() {
    let m = healthy();
    let verdicts = Model::verdicts(m.focus_job().unwrap());
    let epochs: Vec<u64> = verdicts.iter().map(|v| v.report.epoch).collect();
    assert_eq!(epochs, [6, 5, 4, 3, 2, 1, 0]);
    assert!(verdicts.iter().all(|v| v.passed() == Some(true)));
}

#[test]
fn checkpoints_from_a_directory_watcher_are_not_overwritten_by_older_heartbeat_facts() {
    let mut m = dispatcher_down();
    let address = worker_address(1);
    let newer = v1::CheckpointInfo {
        count: 50,
        last_unix_ms: T0 + 3500,
        last_bytes: 1600,
        last_duration_us: 200,
    };
    m.apply(
        Update::Checkpoints {
            source: CheckpointSource::Directory,
            rows: vec![(address.clone(), newer)],
        },
        T0 + 3600,
    );
    assert_eq!(m.checkpoints()[&address].info, newer);
    assert_eq!(
        m.checkpoints()[&address].source,
        CheckpointSource::Directory
    );
    // The dispatcher comes back with the (older) facts of its last heartbeat.
    let (_, snap) = healthy_model(true, false);
    let mut status = snap.status();
    status.events.clear();
    m.apply(Update::Status(Box::new(status)), T0 + 5000);
    assert_eq!(m.checkpoints()[&address].info, newer);
}

#[test]
fn while_the_dispatcher_is_down_a_dead_process_beats_a_stale_lifecycle() {
    let mut m = dispatcher_down();
    let mut nodes = healthy_nodes();
    set_state(&mut nodes[0], KILLED);
    nodes[0].pid = 0;
    set_state(&mut nodes[2], KILLED);
    nodes[2].pid = 0;
    m.apply(Update::Nodes(nodes), T0 + 4100);
    let rows = m.node_rows();
    let w2 = row(&rows, "worker-2");
    assert_eq!((w2.state.as_str(), w2.stale), ("killed", false));
    assert_eq!(w2.health, Health::Bad);
    let w1 = row(&rows, "worker-1");
    assert_eq!((w1.state.as_str(), w1.stale), ("alive", true));
}

#[test]
fn a_worker_whose_disk_fails_says_so_in_its_row() {
    let (mut m, snap) = healthy_model(true, false);
    let mut status = snap.status();
    status.workers[1].disks.push(v1::DiskCondition {
        store: "cache".into(),
        path: "/var/cache/cachew".into(),
        disk_full: true,
        error: "No space left on device".into(),
        fallback: "computes instead of caching".into(),
        since_unix_ms: 1,
        failures: 3,
    });
    let address = status.workers[1].address.clone();
    m.apply(Update::Status(Box::new(status)), T0 + 10);
    let rows = m.node_rows();
    let failing = rows.iter().find(|r| r.address == address).unwrap();
    assert_eq!(failing.disks.as_deref(), Some("cache full"));
    assert!(
        rows.iter()
            .filter(|r| r.address != address)
            .all(|r| r.disks.is_none())
    );
}

/// Drain goes to the dispatcher (by worker id), not to cluster control: it works attached to a
/// cluster the dashboard did not launch, on workers only, and its answer reaches the log.
#[test]
fn drain_asks_the_dispatcher_even_without_cluster_control() {
    let mut m = Model::new(Mode::Attach, DISPATCHER, None, T0);
    let (_, snap) = healthy_model(true, false);
    let mut status = snap.status();
    status.control_address.clear();
    m.apply(Update::Status(Box::new(status)), T0 + 10);
    assert_eq!(m.control(), &Control::Unavailable);
    // On the dispatcher row: refused, nothing to do.
    assert_eq!(m.on_key(Key::Drain), None);
    assert!(m.notice().unwrap().text.contains("only workers drain"));
    m.on_key(Key::Down);
    let rows = m.node_rows();
    let id = row(&rows, "worker #1").worker_id.unwrap();
    let Some(Effect::Drain { worker_id, label }) = m.on_key(Key::Drain) else {
        panic!("no drain")
    };
    assert_eq!(worker_id, id);
    assert_eq!(m.pending_actions(), 1);
    m.apply(
        Update::DrainDone {
            label: label.clone(),
            result: Ok(v1::DrainWorkerResponse {
                worker_id,
                state: v1::WorkerState::Draining.into(),
                moved: 3,
            }),
        },
        T0 + 200,
    );
    assert_eq!(m.pending_actions(), 0);
    assert_eq!(
        m.notice().unwrap().text,
        format!("{label}: 3 split(s) moved, worker draining")
    );
    assert_eq!(
        m.events().last().unwrap().kind,
        EventLabel::Dashboard(DashboardEvent::Action)
    );
}

/// `+` and `-` pin the worker count one away from what is wanted now, `a` unpins; each goes to
/// the dispatcher (`PinWorkers`) and its answer reaches the log. Never below 1.
#[test]
fn pin_keys_move_the_wanted_worker_count() {
    let mut m = Model::new(Mode::Attach, DISPATCHER, None, T0);
    let (_, snap) = healthy_model(false, false);
    let mut status = snap.status();
    status.autoscale = Some(v1::Autoscale {
        enabled: true,
        target: 3,
        active: 3,
        ..Default::default()
    });
    m.apply(Update::Status(Box::new(status.clone())), T0 + 10);
    let Some(Effect::Pin { workers, label }) = m.on_key(Key::PinMore) else {
        panic!("no pin")
    };
    assert_eq!(workers, Some(4));
    assert_eq!(m.pending_actions(), 1);
    m.apply(
        Update::PinDone {
            label: label.clone(),
            result: Ok(v1::Autoscale {
                target: 4,
                pinned: Some(4),
                active: 3,
                ..Default::default()
            }),
        },
        T0 + 20,
    );
    assert_eq!(m.pending_actions(), 0);
    assert_eq!(
        m.notice().unwrap().text,
        format!("{label}: target 4, 3 active")
    );
    let Some(Effect::Pin { workers, .. }) = m.on_key(Key::PinFewer) else {
        panic!("no pin")
    };
    assert_eq!(workers, Some(2));
    let Some(Effect::Pin { workers, .. }) = m.on_key(Key::Unpin) else {
        panic!("no unpin")
    };
    assert_eq!(workers, None);
    status.autoscale = Some(v1::Autoscale {
        target: 1,
        active: 1,
        ..Default::default()
    });
    m.apply(Update::Status(Box::new(status)), T0 + 30);
    assert_eq!(m.on_key(Key::PinFewer), None);
    assert!(m.notice().unwrap().text.contains("below 1"));
}

/// `c` cuts the selected node off its network through cluster control, and connects it again
/// once cluster control reports it cut off (shown in its state).
#[test]
fn cut_toggles_to_connect_on_a_node_cut_off() {
    let mut m = healthy();
    m.on_key(Key::Down);
    let Some(Effect::Act(c)) = m.on_key(Key::CutConnect) else {
        panic!()
    };
    assert_eq!(c.action, v1::Action::Disconnect);
    let mut nodes = healthy_nodes();
    nodes[1].disconnected = true;
    m.apply(Update::Nodes(nodes), T0 + 500);
    assert!(
        m.node_rows()[1].state.ends_with("(cut off)"),
        "{}",
        m.node_rows()[1].state
    );
    let Some(Effect::Act(r)) = m.on_key(Key::CutConnect) else {
        panic!()
    };
    assert_eq!(r.action, v1::Action::Connect);
    assert_eq!(r.targets, c.targets);
}
