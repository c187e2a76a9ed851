//! Many jobs on one worker through `State::apply`: `AssignFairly` shares a worker's slots
//! between jobs, gives none to a job whose tasks sit idle while another job wants them, and
//! replays from the journal exactly as it was decided live. The old `AssignTasks` keeps its
//! urgency order (older journals replay as written).

#![allow(clippy::unwrap_used)]

mod common;

use cachew_dispatcher::durable::{decode_record, encode};
use cachew_dispatcher::state::{CachePolicy, Command, JobId, State};

use common::machine::{dataset, register};

/// Attaches a consumer of a new job `name` (one consumer, 2 epochs).
fn job(s: &mut State, name: &str) -> JobId {
    s.apply(&Command::GetOrCreateJob {
        name: name.into(),
        dataset_id: "ds".into(),
        seed: 7,
        num_epochs: 2,
        num_consumers: 1,
        consumer_index: None,
        resume: None,
        cache_policy: CachePolicy::Compute,
    })
    .unwrap()
    .job
    .unwrap()
}

fn jobs_of(out: &cachew_dispatcher::state::Outcome) -> Vec<JobId> {
    out.assigned.iter().map(|a| a.0).collect()
}

#[test]
fn a_stalled_job_does_not_keep_a_shared_worker_from_another_job() {
    let mut s = State::default();
    s.apply(&Command::RegisterDataset(dataset(100, 10)))
        .unwrap();
    let w = register(&mut s, "w:1", false);
    let a = job(&mut s, "a");
    let fairly = |max: u32, idle: Vec<(JobId, u32)>| Command::AssignFairly {
        worker: w,
        max,
        window: 8,
        idle,
    };
    // Job a alone takes every slot.
    let mut journal = vec![fairly(4, vec![])];
    let out = s.apply(&journal[0]).unwrap();
    assert_eq!(jobs_of(&out), [a, a, a, a]);
    // Job b arrives; a's client stops reading: the worker reports a's 4 tasks idle and gives
    // their slots back. Every slot goes to b, although a is older and has candidates left.
    let b = job(&mut s, "b");
    let cmd = fairly(4, vec![(a, 4)]);
    let out = s.apply(&cmd).unwrap();
    journal.push(cmd);
    assert_eq!(jobs_of(&out), [b, b, b, b]);
    // Both read: a slot that frees goes to the job that holds fewer busy tasks, whatever its id.
    let cmd = fairly(1, vec![]);
    let out = s.apply(&cmd).unwrap();
    journal.push(cmd);
    assert_eq!(out.assigned.len(), 1);
    // Replay through the journal's encoding rebuilds the same state.
    let mut replayed = State::default();
    replayed
        .apply(&Command::RegisterDataset(dataset(100, 10)))
        .unwrap();
    register(&mut replayed, "w:1", false);
    job(&mut replayed, "a");
    let decoded: Vec<Command> = journal
        .iter()
        .enumerate()
        .map(|(i, c)| decode_record(i as u64, &encode(c).unwrap()).unwrap())
        .collect();
    assert_eq!(decoded, journal);
    replayed.apply(&decoded[0]).unwrap();
    job(&mut replayed, "b");
    for c in &decoded[1..] {
        replayed.apply(c).unwrap();
    }
    assert_eq!(replayed, s);
}

#[test]
fn the_old_assign_tasks_still_takes_the_most_urgent_first() {
    let mut s = State::default();
    s.apply(&Command::RegisterDataset(dataset(100, 10)))
        .unwrap();
    let w = register(&mut s, "w:1", false);
    let a = job(&mut s, "a");
    let b = job(&mut s, "b");
    let out = s
        .apply(&Command::AssignTasks {
            worker: w,
            max: 4,
            window: 8,
        })
        .unwrap();
    // By rank, then job id: a, b, a, b.
    assert_eq!(jobs_of(&out), [a, b, a, b]);
    // A standby or a full worker gets nothing from either command.
    let sb = register(&mut s, "s:1", true);
    for c in [
        Command::AssignFairly {
            worker: sb,
            max: 4,
            window: 8,
            idle: vec![],
        },
        Command::AssignFairly {
            worker: w,
            max: 0,
            window: 8,
            idle: vec![],
        },
    ] {
        let out = s.apply(&c).unwrap();
        assert!(out.noop && out.assigned.is_empty());
    }
}
