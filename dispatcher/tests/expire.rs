//! `Command::Expire` through `State::apply`: what may go goes, what may not is skipped (so the
//! same command replays to the same state), removed jobs are refused as expired, ids are never
//! reused, and a client resuming from a saved cursor of a removed job continues on a fresh job
//! exactly where it stopped.

#![allow(clippy::unwrap_used)]

mod common;

use cachew_dispatcher::state::{CachePolicy, Command, Cursor, Rejection, State};

use common::machine::setup;

fn expire(jobs: &[u64], workers: &[u64], datasets: &[&str]) -> Command {
    Command::Expire {
        jobs: jobs.to_vec(),
        workers: workers.to_vec(),
        datasets: datasets.iter().map(|d| d.to_string()).collect(),
    }
}

fn progress(job: u64, generation: u64, epoch: u64, ordinal: u32) -> Command {
    Command::ConsumerProgress {
        job,
        consumer: 0,
        generation,
        cursor: Cursor {
            epoch,
            ordinal,
            index: 0,
        },
    }
}

fn attach(resume: Option<Cursor>) -> Command {
    Command::GetOrCreateJob {
        name: "j".into(),
        dataset_id: "ds".into(),
        seed: 7,
        num_epochs: 2,
        num_consumers: 1,
        consumer_index: None,
        resume,
        cache_policy: CachePolicy::Compute,
    }
}

#[test]
fn only_what_rests_is_removed_and_the_rest_is_skipped() {
    let (mut s, a, b, j, g) = setup();
    s.apply(&Command::AssignTasks {
        worker: a,
        max: 2,
        window: 4,
    })
    .unwrap();
    // Nothing rests: the job runs, the workers live, the dataset is used.
    let before = s.clone();
    let out = s.apply(&expire(&[j], &[a, b], &["ds"])).unwrap();
    assert!(out.noop && out.events.is_empty());
    assert_eq!(s, before);

    // Worker b dies (it holds nothing): it may go; a is alive and stays.
    s.apply(&Command::DeclareDead {
        worker: b,
        resume_at: vec![],
    })
    .unwrap();
    let out = s.apply(&expire(&[j], &[a, b, 99], &["ds"])).unwrap();
    assert!(!out.noop);
    assert_eq!(out.events.len(), 1, "{:?}", out.events);
    assert!(!s.workers.contains_key(&b) && s.workers.contains_key(&a));

    // The job finishes: it goes, and with it the last use of the dataset, which goes in the
    // same command (jobs are removed first).
    s.apply(&progress(j, g, 2, 0)).unwrap();
    assert!(s.jobs[&j].finished);
    s.apply(&expire(&[j], &[], &["ds"])).unwrap();
    assert!(s.jobs.is_empty() && s.datasets.is_empty());
    assert_eq!(s.next_job_id, 1, "ids are kept, never reused");
}

#[test]
fn a_removed_job_is_refused_as_expired_and_its_name_gets_a_fresh_job() {
    let (mut s, _, _, j, g) = setup();
    s.apply(&Command::ReleaseConsumer {
        job: j,
        consumer: 0,
        generation: g,
        timed_out: false,
    })
    .unwrap();
    s.apply(&expire(&[j], &[], &[])).unwrap();
    assert_eq!(
        s.apply(&progress(j, g, 0, 1)).unwrap_err(),
        Rejection::ExpiredJob(j)
    );
    // An id never handed out is unknown, not expired.
    assert_eq!(
        s.apply(&progress(j + 5, 1, 0, 1)).unwrap_err(),
        Rejection::UnknownJob(j + 5)
    );
    let out = s.apply(&attach(None)).unwrap();
    assert!(out.created);
    assert_eq!(out.job, Some(j + 1));
    assert_eq!(out.cursor, Some(Cursor::default()));
}

#[test]
fn a_saved_cursor_of_a_removed_job_resumes_on_a_fresh_job_at_that_place() {
    let (mut s, a, _, j, g) = setup();
    s.apply(&progress(j, g, 1, 3)).unwrap();
    let window_before = s.jobs[&j].window(0, s.jobs[&j].consumers[0].cursor, 4);
    s.apply(&Command::ReleaseConsumer {
        job: j,
        consumer: 0,
        generation: g,
        timed_out: true,
    })
    .unwrap();
    s.apply(&expire(&[j], &[], &[])).unwrap();
    let saved = Cursor {
        epoch: 1,
        ordinal: 3,
        index: 5,
    };
    let out = s.apply(&attach(Some(saved))).unwrap();
    let fresh = out.job.unwrap();
    assert_ne!(fresh, j);
    assert_eq!(out.cursor, Some(saved));
    // The same seed, dataset and cursor: the same positions come next, and the head split
    // starts at the saved index.
    let job = &s.jobs[&fresh];
    assert_eq!(job.window(0, job.consumers[0].cursor, 4), window_before);
    let assigned = s
        .apply(&Command::AssignTasks {
            worker: a,
            max: 1,
            window: 4,
        })
        .unwrap()
        .assigned;
    assert_eq!(assigned.len(), 1);
    assert_eq!((assigned[0].1, assigned[0].3.start_index), (1, 5));
    assert_eq!(assigned[0].2, window_before[0].1);
}

/// Applies `c` to `s` and journals it if it changed something (as the service does).
fn run(s: &mut State, journal: &mut Vec<Command>, c: Command) -> Option<u64> {
    let out = s.apply(&c).ok()?;
    if !out.noop {
        journal.push(c);
    }
    out.worker.or(out.job)
}

#[test]
fn replaying_expiries_rebuilds_the_live_state() {
    let mut live = State::default();
    let journal = &mut Vec::new();
    for round in 0..20u64 {
        // The dataset went with the last job that used it: a new job registers it again.
        run(
            &mut live,
            journal,
            Command::RegisterDataset(common::machine::dataset(100, 10)),
        );
        let w = run(
            &mut live,
            journal,
            Command::RegisterWorker {
                address: format!("w{round}:1"),
                standby: false,
                threads: 2,
                claims: vec![],
            },
        )
        .unwrap();
        let name = format!("job-{round}");
        let create = Command::GetOrCreateJob {
            name,
            dataset_id: "ds".into(),
            seed: round,
            num_epochs: 1,
            num_consumers: 1,
            consumer_index: None,
            resume: None,
            cache_policy: CachePolicy::Compute,
        };
        let out = live.apply(&create).unwrap();
        journal.push(create);
        let (job, g) = (out.job.unwrap(), out.consumer.unwrap().1);
        run(
            &mut live,
            journal,
            Command::AssignTasks {
                worker: w,
                max: 3,
                window: 4,
            },
        );
        run(&mut live, journal, progress(job, g, 1, 0));
        run(
            &mut live,
            journal,
            Command::DeclareDead {
                worker: w,
                resume_at: vec![],
            },
        );
        // Expire everything seen so far: only what rests goes.
        let jobs: Vec<u64> = (1..=job).collect();
        let workers: Vec<u64> = (1..=w).collect();
        run(&mut live, journal, expire(&jobs, &workers, &["ds"]));
    }
    assert!(live.jobs.is_empty() && live.workers.is_empty() && live.datasets.is_empty());
    assert!(
        journal
            .iter()
            .filter(|c| matches!(c, Command::Expire { .. }))
            .count()
            >= 20
    );
    let mut replayed = State::default();
    for c in journal.iter() {
        replayed.apply(c).unwrap();
    }
    assert_eq!(replayed, live);
}
