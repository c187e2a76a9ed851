//! Workers leaving on purpose, through `State::apply`: `DrainWorker` moves the splits at once
//! (to a standby under new leases, at the acked positions, or back to the pool), gives the
//! draining worker nothing more, and `WorkerLeft` / silence make it `Left`; a left worker that
//! registers again is a normal worker; replay rebuilds the same state.

#![allow(clippy::unwrap_used)]

mod common;

use cachew_dispatcher::state::{Command, State, WorkerLife};
use cachew_proto::v1::EventKind;

use common::machine::{dataset, register, setup};

fn kinds(out: &cachew_dispatcher::state::Outcome) -> Vec<EventKind> {
    out.events.iter().map(|e| e.kind).collect()
}

#[test]
fn a_drain_hands_the_splits_to_a_standby_at_the_acked_positions() {
    let (mut s, a, _, j, _) = setup();
    let standby = register(&mut s, "s:1", true);
    let first = s
        .apply(&Command::AssignTasks {
            worker: a,
            max: 2,
            window: 4,
        })
        .unwrap()
        .assigned;
    let out = s
        .apply(&Command::DrainWorker {
            worker: a,
            resume_at: vec![((j, 0, 1), 5)],
        })
        .unwrap();
    assert_eq!(s.workers[&a].life, WorkerLife::Draining);
    assert_eq!(
        kinds(&out),
        vec![
            EventKind::WorkerDraining,
            EventKind::StandbyPromoted,
            EventKind::Failover,
            EventKind::Failover
        ]
    );
    assert_eq!(out.assigned.len(), 2);
    for (old, new) in first.iter().zip(&out.assigned) {
        assert_eq!((old.1, old.2), (new.1, new.2));
        assert_eq!(new.3.worker, standby);
        assert!(new.3.lease > old.3.lease);
    }
    assert_eq!(out.assigned[1].3.start_index, 5);
    assert!(s.assignments_of(a).is_empty());
    // A draining worker takes nothing, and a second drain changes nothing.
    let none = s
        .apply(&Command::AssignTasks {
            worker: a,
            max: 4,
            window: 8,
        })
        .unwrap();
    assert!(none.noop && none.assigned.is_empty());
    assert!(
        s.apply(&Command::DrainWorker {
            worker: a,
            resume_at: vec![]
        })
        .unwrap()
        .noop
    );
}

#[test]
fn without_a_standby_the_splits_go_back_to_the_pool_for_the_other_workers() {
    let (mut s, a, b, _, _) = setup();
    let given = s
        .apply(&Command::AssignTasks {
            worker: a,
            max: 3,
            window: 4,
        })
        .unwrap()
        .assigned;
    s.apply(&Command::DrainWorker {
        worker: a,
        resume_at: vec![],
    })
    .unwrap();
    let taken = s
        .apply(&Command::AssignTasks {
            worker: b,
            max: 3,
            window: 4,
        })
        .unwrap()
        .assigned;
    let positions = |x: &[(u64, u64, u32, _)]| x.iter().map(|t| (t.1, t.2)).collect::<Vec<_>>();
    assert_eq!(positions(&taken), positions(&given));
}

#[test]
fn left_then_registered_again_is_a_normal_worker() {
    let (mut s, a, _, _, _) = setup();
    s.apply(&Command::AssignTasks {
        worker: a,
        max: 2,
        window: 4,
    })
    .unwrap();
    s.apply(&Command::DrainWorker {
        worker: a,
        resume_at: vec![],
    })
    .unwrap();
    let out = s.apply(&Command::WorkerLeft { worker: a }).unwrap();
    assert_eq!(kinds(&out), vec![EventKind::WorkerLeft]);
    assert_eq!(s.workers[&a].life, WorkerLife::Left);
    assert!(s.apply(&Command::WorkerLeft { worker: a }).unwrap().noop);
    // Death of a worker that left changes nothing.
    assert!(
        s.apply(&Command::DeclareDead {
            worker: a,
            resume_at: vec![]
        })
        .unwrap()
        .noop
    );
    assert_eq!(register(&mut s, "a:1", false), a);
    assert_eq!(s.workers[&a].life, WorkerLife::Alive);
    let back = s
        .apply(&Command::AssignTasks {
            worker: a,
            max: 1,
            window: 8,
        })
        .unwrap();
    assert_eq!(back.assigned.len(), 1);
}

#[test]
fn a_worker_silent_while_draining_left_and_one_that_left_at_once_drains_first() {
    let (mut s, a, b, _, _) = setup();
    s.apply(&Command::DrainWorker {
        worker: a,
        resume_at: vec![],
    })
    .unwrap();
    // The liveness timeout of a draining worker: it is gone, not dead.
    let out = s
        .apply(&Command::DeclareDead {
            worker: a,
            resume_at: vec![],
        })
        .unwrap();
    assert_eq!(kinds(&out), vec![EventKind::WorkerLeft]);
    assert_eq!(s.workers[&a].life, WorkerLife::Left);
    // `left` without a drain first: its splits move, then it is gone.
    s.apply(&Command::AssignTasks {
        worker: b,
        max: 2,
        window: 4,
    })
    .unwrap();
    let out = s.apply(&Command::WorkerLeft { worker: b }).unwrap();
    assert_eq!(
        kinds(&out),
        vec![
            EventKind::WorkerDraining,
            EventKind::Failover,
            EventKind::Failover,
            EventKind::WorkerLeft
        ]
    );
    assert!(s.assignments_of(b).is_empty());
    assert_eq!(s.workers[&b].life, WorkerLife::Left);
}

#[test]
fn replaying_drains_rebuilds_the_live_state() {
    let mut live = State::default();
    let mut journal = Vec::new();
    let mut apply = |s: &mut State, c: Command| {
        let out = s.apply(&c).unwrap();
        if !out.noop {
            journal.push(c);
        }
    };
    apply(&mut live, Command::RegisterDataset(dataset(100, 10)));
    let (a, b, c) = (
        register(&mut live, "a:1", false),
        register(&mut live, "b:1", false),
        register(&mut live, "c:1", true),
    );
    // The registrations above went around the journal: replay them first.
    let mut replayed = State::default();
    replayed
        .apply(&Command::RegisterDataset(dataset(100, 10)))
        .unwrap();
    for (addr, standby) in [("a:1", false), ("b:1", false), ("c:1", true)] {
        register(&mut replayed, addr, standby);
    }
    let (j, _) = common::machine::job(&mut live, 2, 1);
    common::machine::job(&mut replayed, 2, 1);
    for w in [a, b] {
        apply(
            &mut live,
            Command::AssignTasks {
                worker: w,
                max: 2,
                window: 8,
            },
        );
    }
    apply(
        &mut live,
        Command::DrainWorker {
            worker: a,
            resume_at: vec![((j, 0, 0), 3)],
        },
    );
    apply(&mut live, Command::WorkerLeft { worker: a });
    apply(
        &mut live,
        Command::DrainWorker {
            worker: b,
            resume_at: vec![],
        },
    );
    apply(
        &mut live,
        Command::AssignTasks {
            worker: c,
            max: 4,
            window: 8,
        },
    );
    for command in &journal {
        replayed.apply(command).unwrap();
    }
    assert_eq!(replayed, live);
    assert_eq!(live.workers[&b].life, WorkerLife::Draining);
}
