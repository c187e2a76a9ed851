//! Helpers for tests that drive the state machine directly through `State::apply`.

use cachew_dispatcher::state::{CachePolicy, Command, DatasetEntry, JobId, State, WorkerId};

/// A dataset `ds` of `records` records in splits of `split`, shuffled.
pub fn dataset(records: u64, split: u32) -> DatasetEntry {
    DatasetEntry {
        id: "ds".into(),
        spec_json: "{}".into(),
        num_records: records,
        split_records: split,
        shuffle: true,
    }
}

/// Registers a worker at `addr` (two threads, no claims); returns its id.
pub fn register(s: &mut State, addr: &str, standby: bool) -> WorkerId {
    s.apply(&Command::RegisterWorker {
        address: addr.into(),
        standby,
        threads: 2,
        claims: vec![],
    })
    .unwrap()
    .worker
    .unwrap()
}

/// Attaches the lowest free consumer of job `j` over `ds` (seed 7, computing); returns the job
/// and the consumer's generation.
pub fn job(s: &mut State, epochs: u64, consumers: u32) -> (JobId, u64) {
    let out = s
        .apply(&Command::GetOrCreateJob {
            name: "j".into(),
            dataset_id: "ds".into(),
            seed: 7,
            num_epochs: epochs,
            num_consumers: consumers,
            consumer_index: None,
            resume: None,
            cache_policy: CachePolicy::Compute,
        })
        .unwrap();
    (out.job.unwrap(), out.consumer.unwrap().1)
}

/// A dataset of 100 records in splits of 10, workers `a:1` and `b:1`, and a two-epoch job of one
/// consumer: (state, a, b, job, generation).
pub fn setup() -> (State, WorkerId, WorkerId, JobId, u64) {
    let mut s = State::default();
    s.apply(&Command::RegisterDataset(dataset(100, 10)))
        .unwrap();
    let a = register(&mut s, "a:1", false);
    let b = register(&mut s, "b:1", false);
    let (j, g) = job(&mut s, 2, 1);
    (s, a, b, j, g)
}
