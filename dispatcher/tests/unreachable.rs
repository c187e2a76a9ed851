//! A client that cannot reach a worker the dispatcher still hears (`Command::ConsumerUnreachable`,
//! through `State::apply`): the consumer's splits move off the worker under new leases, the
//! worker gets none of them back while it is reported, and a report of every worker is ignored.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use cachew_dispatcher::state::{Command, State};

use common::machine::{register, setup};

fn assign(s: &mut State, worker: u64) -> Vec<(u64, u64, u32, u64)> {
    s.apply(&Command::AssignTasks {
        worker,
        max: 4,
        window: 8,
    })
    .unwrap()
    .assigned
    .iter()
    .map(|(j, e, p, a)| (*j, *e, *p, a.lease))
    .collect()
}

#[test]
fn a_consumers_splits_leave_a_worker_it_cannot_reach_and_stay_off_it() {
    let (mut s, a, b, j, g) = setup();
    let apply = |s: &mut State, c: Command| s.apply(&c).unwrap();
    let on_a = assign(&mut s, a);
    assert_eq!(on_a.len(), 4);
    let report = |workers: &[u64]| Command::ConsumerUnreachable {
        job: j,
        consumer: 0,
        generation: g,
        workers: workers.iter().copied().collect(),
    };
    let out = apply(&mut s, report(&[a]));
    assert!(!out.noop);
    assert_eq!(
        out.assigned.len(),
        4,
        "every split of the consumer on `a` moves"
    );
    for ((_, e, p, old), (_, e2, p2, moved)) in on_a.iter().zip(&out.assigned) {
        assert_eq!((e, p), (e2, p2));
        assert_eq!(moved.worker, b);
        assert!(moved.lease > *old);
    }
    assert_eq!(out.events.len(), 4);
    // While reported, `a` gets nothing of this consumer; `b` gets the rest of the window.
    assert!(assign(&mut s, a).is_empty());
    assert_eq!(assign(&mut s, b).len(), 4);
    // The same report again changes nothing (not journaled).
    assert!(s.apply(&report(&[a])).unwrap().noop);
    // A report of every live worker is the client's own link: ignored.
    let all = s.apply(&report(&[a, b])).unwrap();
    assert!(all.assigned.is_empty());
    assert!(s.jobs[&j].consumers[0].unreachable.is_empty());
    // Once the client reaches `a` again, it may get splits again.
    apply(&mut s, report(&[a]));
    apply(&mut s, report(&[]));
    assert!(s.jobs[&j].consumers[0].unreachable.is_empty());
    // A stale generation is ignored.
    let stale = Command::ConsumerUnreachable {
        job: j,
        consumer: 0,
        generation: g + 1,
        workers: BTreeSet::from([a]),
    };
    assert!(s.apply(&stale).unwrap().noop);
    // A standby is never a target.
    let standby = register(&mut s, "s:1", true);
    let out = s.apply(&report(&[b])).unwrap();
    assert!(out.assigned.iter().all(|x| x.3.worker != standby));
}

#[test]
fn a_released_consumer_forgets_what_its_client_could_not_reach() {
    let (mut s, a, _b, j, g) = setup();
    assign(&mut s, a);
    s.apply(&Command::ConsumerUnreachable {
        job: j,
        consumer: 0,
        generation: g,
        workers: BTreeSet::from([a]),
    })
    .unwrap();
    assert_eq!(s.jobs[&j].consumers[0].unreachable, BTreeSet::from([a]));
    s.apply(&Command::ReleaseConsumer {
        job: j,
        consumer: 0,
        generation: g,
        timed_out: true,
    })
    .unwrap();
    assert!(s.jobs[&j].consumers[0].unreachable.is_empty());
}
