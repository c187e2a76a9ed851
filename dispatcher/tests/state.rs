//! The state machine through its only entry, `State::apply`: assignment order and leases,
//! progress and job end, failover to a standby, restart claims, shared jobs, rejections that
//! change nothing, replay equal to the live state, superseding clients, and the memoized split
//! order.

#![allow(clippy::unwrap_used)]

mod common;

use cachew_dispatcher::state::{
    CacheDecision, CachePolicy, Command, Cursor, Rejection, State, TaskClaim, split_at, split_order,
};
use cachew_proto::v1;

use common::machine::{dataset, job, register, setup};

#[test]
fn memoized_split_orders_equal_the_plan_through_evictions() {
    let d = dataset(10_000, 64);
    let plan = d.plan();
    // More (seed, epoch) pairs than the memo keeps, visited twice in different orders.
    let keys: Vec<(u64, u64)> = (0..3).flat_map(|s| (0..9).map(move |e| (s, e))).collect();
    for pass in 0..2 {
        let visit: Vec<(u64, u64)> = if pass == 0 {
            keys.clone()
        } else {
            keys.iter().rev().copied().collect()
        };
        for (seed, epoch) in visit {
            let want = plan.split_order(seed, epoch);
            assert_eq!(*split_order(&d, seed, epoch), want);
            for position in [0u32, 1, 77, 156] {
                assert_eq!(split_at(&d, seed, epoch, position), want[position as usize]);
            }
        }
    }
    // A position past the end falls back to itself, as before.
    assert_eq!(split_at(&d, 0, 0, 10_000), 10_000);
}

#[test]
fn assignment_follows_the_consumer_window_in_order() {
    let (mut s, a, b, j, _) = setup();
    let out = s
        .apply(&Command::AssignTasks {
            worker: a,
            max: 2,
            window: 4,
        })
        .unwrap();
    let got: Vec<(u64, u32)> = out.assigned.iter().map(|x| (x.1, x.2)).collect();
    assert_eq!(got, vec![(0, 0), (0, 1)]);
    let out = s
        .apply(&Command::AssignTasks {
            worker: b,
            max: 5,
            window: 4,
        })
        .unwrap();
    let got: Vec<(u64, u32)> = out.assigned.iter().map(|x| (x.1, x.2)).collect();
    assert_eq!(got, vec![(0, 2), (0, 3)]);
    // Leases are unique and increasing.
    let leases: Vec<u64> = s.jobs[&j].assignments.values().map(|a| a.lease).collect();
    assert_eq!(leases, vec![1, 2, 3, 4]);
}

#[test]
fn progress_drops_delivered_positions_and_finishes_the_job() {
    let (mut s, a, _, j, g) = setup();
    s.apply(&Command::AssignTasks {
        worker: a,
        max: 3,
        window: 3,
    })
    .unwrap();
    s.apply(&Command::ConsumerProgress {
        job: j,
        consumer: 0,
        generation: g,
        cursor: Cursor {
            epoch: 0,
            ordinal: 2,
            index: 0,
        },
    })
    .unwrap();
    assert_eq!(
        s.jobs[&j].assignments.keys().copied().collect::<Vec<_>>(),
        vec![(0, 2)]
    );
    // Windows cross the epoch boundary.
    s.apply(&Command::ConsumerProgress {
        job: j,
        consumer: 0,
        generation: g,
        cursor: Cursor {
            epoch: 0,
            ordinal: 9,
            index: 3,
        },
    })
    .unwrap();
    let out = s
        .apply(&Command::AssignTasks {
            worker: a,
            max: 3,
            window: 3,
        })
        .unwrap();
    let got: Vec<(u64, u32)> = out.assigned.iter().map(|x| (x.1, x.2)).collect();
    assert_eq!(got, vec![(0, 9), (1, 0), (1, 1)]);
    assert_eq!(out.assigned[0].3.start_index, 3);
    let out = s
        .apply(&Command::ConsumerProgress {
            job: j,
            consumer: 0,
            generation: g,
            cursor: Cursor {
                epoch: 1,
                ordinal: 10,
                index: 0,
            },
        })
        .unwrap();
    assert!(
        out.events
            .iter()
            .any(|e| e.kind == v1::EventKind::JobFinished)
    );
    assert!(s.jobs[&j].finished && s.jobs[&j].assignments.is_empty());
}

#[test]
fn dead_worker_fails_over_to_a_standby_with_new_leases() {
    let (mut s, a, _, j, _) = setup();
    let standby = register(&mut s, "s:1", true);
    assert!(
        s.apply(&Command::AssignTasks {
            worker: standby,
            max: 3,
            window: 4
        })
        .unwrap()
        .assigned
        .is_empty()
    );
    let first = s
        .apply(&Command::AssignTasks {
            worker: a,
            max: 2,
            window: 4,
        })
        .unwrap()
        .assigned;
    let out = s
        .apply(&Command::DeclareDead {
            worker: a,
            resume_at: vec![((j, 0, 0), 17)],
        })
        .unwrap();
    assert_eq!(out.assigned.len(), 2);
    for (x, y) in first.iter().zip(&out.assigned) {
        assert_eq!((x.1, x.2), (y.1, y.2));
        assert_eq!(y.3.worker, standby);
        assert!(y.3.lease > x.3.lease);
    }
    assert_eq!(out.assigned[0].3.start_index, 17);
    assert!(!s.workers[&standby].standby);
    assert_eq!(
        s.apply(&Command::AssignTasks {
            worker: a,
            max: 1,
            window: 4
        }),
        Err(Rejection::DeadWorker(a))
    );
}

#[test]
fn restarted_worker_keeps_matching_claims_only() {
    let (mut s, a, b, j, _) = setup();
    let given = s
        .apply(&Command::AssignTasks {
            worker: a,
            max: 2,
            window: 4,
        })
        .unwrap()
        .assigned;
    let (_, e0, p0, a0) = given[0];
    let out = s
        .apply(&Command::RegisterWorker {
            address: "a:1".into(),
            standby: false,
            threads: 2,
            claims: vec![
                TaskClaim {
                    job: j,
                    epoch: e0,
                    position: p0,
                    lease: a0.lease,
                },
                TaskClaim {
                    job: j,
                    epoch: 0,
                    position: 5,
                    lease: 99,
                },
            ],
        })
        .unwrap();
    assert_eq!(out.worker, Some(a));
    assert_eq!(out.incarnation, 2);
    assert_eq!(out.kept.len(), 1);
    // The unclaimed second assignment went back to the pool; b picks it up first.
    let next = s
        .apply(&Command::AssignTasks {
            worker: b,
            max: 1,
            window: 4,
        })
        .unwrap()
        .assigned;
    assert_eq!((next[0].1, next[0].2), (given[1].1, given[1].2));
}

#[test]
fn shared_jobs_split_positions_between_consumers() {
    let mut s = State::default();
    s.apply(&Command::RegisterDataset(dataset(95, 10))).unwrap();
    let (j, _) = job(&mut s, 1, 2);
    let (j2, _) = job(&mut s, 1, 2);
    assert_eq!(j, j2);
    let job = &s.jobs[&j];
    assert_eq!(job.positions_per_epoch(0), 5);
    assert_eq!(job.positions_per_epoch(1), 5);
    assert_eq!(
        job.window(1, Cursor::default(), 10),
        (0..5).map(|m| (0, 1 + 2 * m)).collect::<Vec<_>>()
    );
    assert!(matches!(
        s.apply(&Command::GetOrCreateJob {
            name: "j".into(),
            dataset_id: "ds".into(),
            seed: 7,
            num_epochs: 1,
            num_consumers: 2,
            consumer_index: None,
            resume: None,
            cache_policy: CachePolicy::Compute
        }),
        Err(Rejection::NoFreeConsumer { .. })
    ));
    assert!(matches!(
        s.apply(&Command::GetOrCreateJob {
            name: "j".into(),
            dataset_id: "ds".into(),
            seed: 8,
            num_epochs: 1,
            num_consumers: 2,
            consumer_index: None,
            resume: None,
            cache_policy: CachePolicy::Compute
        }),
        Err(Rejection::JobMismatch { .. })
    ));
}

#[test]
fn rejected_commands_leave_the_state_unchanged() {
    let (mut s, a, _, j, g) = setup();
    s.apply(&Command::DeclareDead {
        worker: a,
        resume_at: vec![],
    })
    .unwrap();
    let before = s.clone();
    let rejected = [
        Command::GetOrCreateJob {
            name: "new".into(),
            dataset_id: "ds".into(),
            seed: 1,
            num_epochs: 1,
            num_consumers: 1,
            consumer_index: Some(3),
            resume: None,
            cache_policy: CachePolicy::Compute,
        },
        Command::GetOrCreateJob {
            name: "new".into(),
            dataset_id: "ds".into(),
            seed: 1,
            num_epochs: 1,
            num_consumers: 1,
            consumer_index: None,
            resume: Some(Cursor {
                epoch: 0,
                ordinal: 99,
                index: 0,
            }),
            cache_policy: CachePolicy::Compute,
        },
        Command::GetOrCreateJob {
            name: "j".into(),
            dataset_id: "nope".into(),
            seed: 7,
            num_epochs: 2,
            num_consumers: 1,
            consumer_index: None,
            resume: None,
            cache_policy: CachePolicy::Compute,
        },
        Command::GetOrCreateJob {
            name: "j".into(),
            dataset_id: "ds".into(),
            seed: 8,
            num_epochs: 2,
            num_consumers: 1,
            consumer_index: None,
            resume: None,
            cache_policy: CachePolicy::Compute,
        },
        Command::ConsumerProgress {
            job: j,
            consumer: 0,
            generation: g + 5,
            cursor: Cursor::default(),
        },
        Command::ConsumerProgress {
            job: 99,
            consumer: 0,
            generation: g,
            cursor: Cursor::default(),
        },
        Command::AssignTasks {
            worker: a,
            max: 2,
            window: 4,
        },
        Command::AssignTasks {
            worker: 77,
            max: 2,
            window: 4,
        },
        Command::DeclareDead {
            worker: 77,
            resume_at: vec![],
        },
    ];
    for c in &rejected {
        assert!(s.apply(c).is_err(), "{c:?} should be rejected");
        assert_eq!(
            s, before,
            "{c:?} changed the state although it was rejected"
        );
    }
}

#[test]
fn replaying_the_journaled_commands_rebuilds_the_live_state() {
    // A live sequence: every command that changed the state is journaled (serialized as the
    // journal does), then replayed into a fresh state machine.
    let mut live = State::default();
    let mut journal: Vec<String> = Vec::new();
    let mut run = |s: &mut State, c: Command| {
        if let Ok(out) = s.apply(&c)
            && !out.noop
        {
            journal.push(serde_json::to_string(&c).unwrap());
        }
    };
    run(&mut live, Command::RegisterDataset(dataset(100, 10)));
    for addr in ["a:1", "b:1", "s:1"] {
        run(
            &mut live,
            Command::RegisterWorker {
                address: addr.into(),
                standby: addr == "s:1",
                threads: 2,
                claims: vec![],
            },
        );
    }
    run(
        &mut live,
        Command::GetOrCreateJob {
            name: "j".into(),
            dataset_id: "ds".into(),
            seed: 7,
            num_epochs: 3,
            num_consumers: 1,
            consumer_index: None,
            resume: None,
            cache_policy: CachePolicy::Auto,
        },
    );
    for step in 0..25u32 {
        run(
            &mut live,
            Command::AssignTasks {
                worker: 1 + u64::from(step % 2),
                max: 2,
                window: 6,
            },
        );
        let progress = |index| Command::ConsumerProgress {
            job: 1,
            consumer: 0,
            generation: 1,
            cursor: Cursor {
                epoch: u64::from(step / 10),
                ordinal: step % 10,
                index,
            },
        };
        run(&mut live, progress(3));
        // A move within the split (not journaled) must leave the state alone.
        run(&mut live, progress(9));
        if step == 12 {
            run(
                &mut live,
                Command::DeclareDead {
                    worker: 1,
                    resume_at: vec![((1, 1, 3), 9)],
                },
            );
        }
        if step == 15 {
            run(
                &mut live,
                Command::RegisterWorker {
                    address: "a:1".into(),
                    standby: false,
                    threads: 2,
                    claims: vec![],
                },
            );
        }
        // The autoscaler's commands: a decision, a pin and its release, and a shrink that
        // drains worker 2 (its splits move, no standby is promoted) until it leaves.
        if step == 17 {
            run(
                &mut live,
                Command::Scale {
                    from: 3,
                    target: 2,
                    why: "trainer wait 0.1%".into(),
                },
            );
            run(&mut live, Command::PinWorkers { pinned: Some(4) });
            run(&mut live, Command::PinWorkers { pinned: None });
            run(
                &mut live,
                Command::Shrink {
                    worker: 2,
                    resume_at: vec![],
                },
            );
            assert_eq!(live.shrinking(), 1, "{:?}", live.scale);
        }
        if step == 20 {
            run(&mut live, Command::WorkerLeft { worker: 2 });
        }
    }
    run(
        &mut live,
        Command::GetOrCreateJob {
            name: "j".into(),
            dataset_id: "ds".into(),
            seed: 7,
            num_epochs: 3,
            num_consumers: 1,
            consumer_index: Some(0),
            resume: Some(Cursor {
                epoch: 1,
                ordinal: 4,
                index: 2,
            }),
            cache_policy: CachePolicy::Auto,
        },
    );
    run(
        &mut live,
        Command::DecideCache {
            job: 1,
            decision: CacheDecision {
                get: true,
                compute_ns_per_element: 120_000,
                read_ns_per_element: 6_000,
            },
        },
    );
    // The last cursor change is a move within the resumed split (index 2 -> 7), which is
    // not journaled: it must not change the state the next assignment reads.
    run(
        &mut live,
        Command::ConsumerProgress {
            job: 1,
            consumer: 0,
            generation: 2,
            cursor: Cursor {
                epoch: 1,
                ordinal: 4,
                index: 7,
            },
        },
    );
    run(
        &mut live,
        Command::AssignTasks {
            worker: 2,
            max: 3,
            window: 6,
        },
    );
    assert!(journal.len() > 30);
    let mut replayed = State::default();
    for line in &journal {
        let c: Command = serde_json::from_str(line).unwrap();
        replayed.apply(&c).unwrap();
    }
    assert_eq!(replayed, live);
    assert!(live.jobs[&1].cache_decision.is_some_and(|d| d.get));
    assert_eq!(live.scale.target, Some(2), "{:?}", live.scale);
    assert_eq!(live.shrinking(), 0, "worker 2 left: {:?}", live.scale);
    // A snapshot taken midway plus the rest of the journal gives the same state too.
    let mut half = State::default();
    for line in &journal[..journal.len() / 2] {
        half.apply(&serde_json::from_str(line).unwrap()).unwrap();
    }
    let mut from_snapshot: State =
        serde_json::from_str(&serde_json::to_string(&half).unwrap()).unwrap();
    for line in &journal[journal.len() / 2..] {
        from_snapshot
            .apply(&serde_json::from_str(line).unwrap())
            .unwrap();
    }
    assert_eq!(from_snapshot, live);
}

#[test]
fn a_newer_client_supersedes_the_old_one() {
    let (mut s, _, _, j, g) = setup();
    let out = s
        .apply(&Command::GetOrCreateJob {
            name: "j".into(),
            dataset_id: "ds".into(),
            seed: 7,
            num_epochs: 2,
            num_consumers: 1,
            consumer_index: Some(0),
            resume: Some(Cursor {
                epoch: 1,
                ordinal: 3,
                index: 4,
            }),
            cache_policy: CachePolicy::Compute,
        })
        .unwrap();
    assert_eq!(
        out.cursor,
        Some(Cursor {
            epoch: 1,
            ordinal: 3,
            index: 4
        })
    );
    let g2 = out.consumer.unwrap().1;
    assert!(g2 > g);
    assert!(matches!(
        s.apply(&Command::ConsumerProgress {
            job: j,
            consumer: 0,
            generation: g,
            cursor: Cursor::default()
        }),
        Err(Rejection::Superseded { .. })
    ));
}
