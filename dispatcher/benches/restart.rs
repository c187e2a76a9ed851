//! Restart time: how long a dispatcher takes from `durable::open` (journal open, fjall recovery,
//! record checks) through the replay of every record after the snapshot into the state machine,
//! for journals of a few sizes.
//!
//! Method: a state of `LIVE_JOBS` running jobs (8 consumers each, 2,000 splits, with their
//! assignments) over 16 workers is the snapshot. After it come N records of the commands a busy
//! dispatcher journals, produced by the real state machine: rounds of `AssignTasks` for every
//! worker and `ConsumerProgress` of every consumer, with a worker dying and registering again now
//! and then. They are written in batches of 1,000 with no snapshot in between (as a dispatcher
//! with `snapshot_every` = N would leave them), the journal is closed, and `durable::open` is
//! timed three times (warm page cache; the median is reported), checking the replayed state
//! equals the state that wrote the journal. The decode step alone is also timed: parsing every
//! record once, as replay does now, against probing its format first and then parsing it (as
//! replay did before).
//!
//! A live dispatcher snapshots every `durable::SNAPSHOT_EVERY` (2,000) records, so N = 2,000 is
//! what a restart replays at most; larger N are journals from dispatchers run with snapshots far
//! apart. Run with `cargo bench -p cachew-dispatcher --bench restart`; `cargo test --benches`
//! runs a quick pass. `CACHEW_BENCH_DIR` sets where the journals are written.

use std::path::Path;
use std::time::{Duration, Instant};

use cachew_dispatcher::durable;
use cachew_dispatcher::state::{CachePolicy, Command, Cursor, DatasetEntry, State};
use cachew_store::{Journal, JournalOptions};
use serde::Deserialize;

const LIVE_JOBS: u64 = 32;
const CONSUMERS: u32 = 8;
const WORKERS: u64 = 16;

fn apply(state: &mut State, records: &mut Vec<Vec<u8>>, command: Command) {
    if let Ok(out) = state.apply(&command)
        && !out.noop
    {
        records.push(durable::encode(&command).expect("encode"));
    }
}

/// The snapshot state and the commands that follow it (at least `n`).
fn workload(n: usize) -> (State, State, Vec<Vec<u8>>) {
    let mut state = State::default();
    let mut setup = Vec::new();
    apply(
        &mut state,
        &mut setup,
        Command::RegisterDataset(DatasetEntry {
            id: "ds".into(),
            spec_json: "{\"name\":\"bench\"}".into(),
            num_records: 128_000,
            split_records: 64,
            shuffle: true,
        }),
    );
    for w in 0..WORKERS {
        apply(
            &mut state,
            &mut setup,
            Command::RegisterWorker {
                address: format!("10.0.0.{w}:7000"),
                standby: false,
                threads: 8,
                claims: vec![],
            },
        );
    }
    let mut consumers = Vec::new();
    for j in 0..LIVE_JOBS {
        for c in 0..CONSUMERS {
            let out = state
                .apply(&Command::GetOrCreateJob {
                    name: format!("job-{j}"),
                    dataset_id: "ds".into(),
                    seed: j,
                    num_epochs: 0,
                    num_consumers: CONSUMERS,
                    consumer_index: Some(c),
                    resume: None,
                    cache_policy: CachePolicy::Compute,
                })
                .expect("job");
            let (job, generation) = (out.job.expect("job id"), out.consumer.expect("consumer").1);
            consumers.push((job, c, generation, 0u32, 0u64));
        }
    }
    let snapshot = state.clone();
    let mut records = Vec::new();
    let mut round = 0u64;
    while records.len() < n {
        round += 1;
        for w in 1..=WORKERS {
            apply(
                &mut state,
                &mut records,
                Command::AssignTasks {
                    worker: w,
                    max: 4,
                    window: 16,
                },
            );
        }
        for (job, c, generation, ordinal, epoch) in &mut consumers {
            *ordinal += 1;
            if *ordinal >= 250 {
                *ordinal = 0;
                *epoch += 1;
            }
            apply(
                &mut state,
                &mut records,
                Command::ConsumerProgress {
                    job: *job,
                    consumer: *c,
                    generation: *generation,
                    cursor: Cursor {
                        epoch: *epoch,
                        ordinal: *ordinal,
                        index: 0,
                    },
                },
            );
        }
        if round.is_multiple_of(10) {
            let w = round / 10 % WORKERS + 1;
            apply(
                &mut state,
                &mut records,
                Command::DeclareDead {
                    worker: w,
                    resume_at: vec![],
                },
            );
            apply(
                &mut state,
                &mut records,
                Command::RegisterWorker {
                    address: format!("10.0.0.{}:7000", w - 1),
                    standby: false,
                    threads: 8,
                    claims: vec![],
                },
            );
        }
    }
    // Exactly n records: the state they lead to is the replay of those n.
    records.truncate(n);
    let mut end = snapshot.clone();
    for (i, r) in records.iter().enumerate() {
        let command = durable::decode_record(i as u64 + 1, r).expect("decode");
        end.apply(&command).expect("apply");
    }
    (snapshot, end, records)
}

fn write_journal(dir: &Path, snapshot: &State, records: &[Vec<u8>]) {
    let (mut journal, _) = Journal::open(dir, JournalOptions { snapshot_every: 0 }).expect("open");
    journal
        .snapshot(&durable::encode_snapshot(snapshot).expect("snapshot"))
        .expect("write snapshot");
    for chunk in records.chunks(1_000) {
        let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
        journal.append(&refs).expect("append");
    }
}

/// The format probe replay used to run before parsing each record.
#[derive(Deserialize)]
struct FormatOnly {
    #[allow(dead_code)]
    format: Option<u32>,
}

fn decode_times(records: &[Vec<u8>]) -> (Duration, Duration) {
    let started = Instant::now();
    for (i, r) in records.iter().enumerate() {
        std::hint::black_box(durable::decode_record(i as u64 + 1, r).expect("decode"));
    }
    let once = started.elapsed();
    let started = Instant::now();
    for (i, r) in records.iter().enumerate() {
        std::hint::black_box(serde_json::from_slice::<FormatOnly>(r).expect("probe"));
        std::hint::black_box(durable::decode_record(i as u64 + 1, r).expect("decode"));
    }
    (once, started.elapsed())
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let sizes: &[usize] = if quick {
        &[2_000]
    } else {
        &[2_000, 20_000, 200_000]
    };
    let base = std::env::var_os("CACHEW_BENCH_DIR").map(std::path::PathBuf::from);
    let work = match &base {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .expect("temporary directory");
    println!("restart bench in {}", work.path().display());
    for &n in sizes {
        let (snapshot, end, records) = workload(n);
        let bytes: usize = records.iter().map(Vec::len).sum();
        let snapshot_bytes = durable::encode_snapshot(&snapshot).expect("snapshot").len();
        let dir = work.path().join(format!("journal-{n}"));
        write_journal(&dir, &snapshot, &records);
        let mut times = Vec::new();
        for _ in 0..3 {
            let started = Instant::now();
            let (journal, state, _) = durable::open(&dir, 0).expect("open");
            times.push(started.elapsed());
            assert_eq!(journal.last_seq(), n as u64, "records after the snapshot");
            assert!(
                state == end,
                "the replayed state differs from the one written"
            );
            drop(journal);
        }
        times.sort();
        let started = Instant::now();
        let (journal, recovery) =
            Journal::open(&dir, JournalOptions { snapshot_every: 0 }).expect("open");
        let store_open = started.elapsed();
        drop(journal);
        let started = Instant::now();
        let _ = durable::replay(&recovery).expect("replay");
        let replay = started.elapsed();
        let (once, probed) = decode_times(&records);
        println!(
            "restart: snapshot of {snapshot_bytes} B + {n} records ({:.1} MB): open + replay \
             {:.0} ms (median of 3; journal open {:.0} ms, replay {:.0} ms); decode alone {:.0} ms \
             parsed once, {:.0} ms probed then parsed",
            bytes as f64 / 1e6,
            times[1].as_secs_f64() * 1e3,
            store_open.as_secs_f64() * 1e3,
            replay.as_secs_f64() * 1e3,
            once.as_secs_f64() * 1e3,
            probed.as_secs_f64() * 1e3,
        );
    }
}
