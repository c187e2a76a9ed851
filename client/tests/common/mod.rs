//! Helpers of the client's integration tests: the tf-sample pipeline prepared as a worker holds
//! it, a one-thread engine, its tasks and the locations a fetcher follows.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cachew_client::ClientError;
use cachew_client::fetch::{Locations, SplitJob, WorkerPool, fetch_split};
use cachew_client::metrics::{ClientMetrics, WaitClock};
use cachew_pipeline::Element;
use cachew_proto::v1;
use cachew_worker::cache::CacheMode;
use cachew_worker::engine::{Engine, EngineConfig, EngineThreads, Prepared, TaskKey, TaskSpec};
use tokio::sync::{Notify, mpsc, watch};

pub fn tf_sample_spec() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/specs/tf-sample.toml")
}

/// The pipeline, dataset and split plan of the spec at `spec_path`.
pub fn prepared(spec_path: &Path) -> Arc<Prepared> {
    let spec = cachew_pipeline::PipelineSpec::load(spec_path).unwrap();
    let dataset = cachew_pipeline::Dataset::for_spec(&spec).unwrap();
    let pipeline = cachew_pipeline::Pipeline::new(spec).unwrap();
    let plan = cachew_pipeline::exec::plan_for(&pipeline, &dataset);
    Arc::new(Prepared {
        pipeline,
        dataset,
        plan,
    })
}

/// An engine with one compute thread (keep the threads handle alive while it runs).
pub fn engine() -> (Engine, EngineThreads) {
    Engine::start(EngineConfig {
        threads: 1,
        max_tasks: 2,
        ahead: 64,
        chunk: 8,
        idle_after: Duration::from_secs(1),
        max_elements_per_sec: 0,
    })
}

/// Job 1, epoch 0, position 0 of seed 42: split `split` under `lease`.
pub fn task(lease: u64, split: u32) -> TaskSpec {
    TaskSpec {
        key: TaskKey {
            job: 1,
            epoch: 0,
            position: 0,
        },
        lease,
        split,
        seed: 42,
        dataset_id: "d".into(),
        start_index: 0,
        cache_mode: CacheMode::Compute,
    }
}

/// Where the dispatcher says epoch 0 position 0 (split `split`) is served.
pub fn location(split: u32, lease: u64, worker_address: String) -> v1::SplitLocation {
    v1::SplitLocation {
        epoch: 0,
        position: 0,
        split,
        lease,
        worker_address,
        worker_id: 1,
        start_index: 0,
    }
}

/// A fetcher of epoch 0 position 0 (split `split`, `len` elements, from index 0) following
/// `locations`, as the client starts one; returns its task and what it sends the consumer.
pub fn spawn_fetch(
    split: u32,
    len: u32,
    locations: watch::Receiver<Locations>,
) -> (
    tokio::task::JoinHandle<()>,
    mpsc::Receiver<Result<Vec<Element>, ClientError>>,
) {
    let (out_tx, out_rx) = mpsc::channel(64);
    let job = SplitJob {
        job_id: 1,
        epoch: 0,
        position: 0,
        split,
        len,
        start: 0,
        max_elements: 16,
    };
    let counts = ClientMetrics::register(&cachew_metrics::Exporter::new("client"))
        .for_job("test", &Arc::new(WaitClock::default()));
    let fetcher = tokio::spawn(fetch_split(
        job,
        WorkerPool::default(),
        locations,
        Arc::new(Notify::new()),
        counts,
        out_tx,
    ));
    (fetcher, out_rx)
}
