//! Fuzz tests of what a worker decodes: `GetElements` requests (arbitrary bytes and mutated
//! valid requests, decoded with prost and served by the real `WorkerService` over an engine that
//! holds a tf-sample task), the task definitions a dispatcher sends (`TaskSpec::from_def` on
//! decoded heartbeat responses), and its checkpoint payloads (`checkpoint::open` on a store
//! holding a mutated checkpoint, then every recovered task's `spec` and `progress`). See
//! `cachew_fuzzing` for what is asserted.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cachew_fuzzing::{bounded, bytes, config, json, mutated};
use cachew_pipeline::{Dataset, Pipeline, PipelineSpec};
use cachew_proto::{Worker, v1};
use cachew_store::CheckpointStore;
use cachew_worker::cache::CacheMode;
use cachew_worker::checkpoint::{self, TaskCheckpoint, WorkerCheckpoint};
use cachew_worker::engine::{Engine, EngineThreads, TaskKey, TaskSpec};
use cachew_worker::prepared::Prepared;
use cachew_worker::service::WorkerService;
use cachew_worker::task::EngineConfig;
use proptest::prelude::*;
use prost::Message;
use tonic::Request;

#[global_allocator]
static ALLOCATOR: cachew_fuzzing::Allocator =
    cachew_fuzzing::allocator(cachew_fuzzing::MEMORY_LIMIT);

/// The task the engine holds.
const KEY: TaskKey = TaskKey {
    job: 1,
    epoch: 0,
    position: 0,
};
const LEASE: u64 = 5;

/// The longest wait a fuzz case asks for (the service caps waits at 10 s itself).
const MAX_CASE_WAIT_MS: u64 = 20;

/// One engine for the whole binary with the first split of tf-sample, as a worker serving many
/// clients keeps one.
fn engine() -> &'static (Engine, EngineThreads, u32) {
    static ENGINE: OnceLock<(Engine, EngineThreads, u32)> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/specs/tf-sample.toml");
        let spec = PipelineSpec::load(&path).unwrap();
        let dataset = Dataset::for_spec(&spec).unwrap();
        let pipeline = Pipeline::new(spec).unwrap();
        let plan = cachew_pipeline::exec::plan_for(&pipeline, &dataset);
        let split = plan.split_order(9, 0)[0];
        let (engine, threads) = Engine::start(EngineConfig {
            threads: 1,
            max_tasks: 4,
            ahead: 16,
            chunk: 4,
            idle_after: Duration::from_secs(60),
            max_elements_per_sec: 0,
        });
        engine.add_task(
            TaskSpec {
                key: KEY,
                lease: LEASE,
                split,
                seed: 9,
                dataset_id: "tf-sample".into(),
                start_index: 0,
                cache_mode: CacheMode::Compute,
            },
            Arc::new(Prepared {
                pipeline,
                dataset,
                plan,
            }),
        );
        (engine, threads, split)
    })
}

fn valid_fetch() -> v1::GetElementsRequest {
    v1::GetElementsRequest {
        key: Some(KEY.into()),
        lease: LEASE,
        split: engine().2,
        from_index: 2,
        max_elements: 2,
        max_bytes: 0,
        wait_ms: MAX_CASE_WAIT_MS,
    }
}

fn serve_fetch(data: Vec<u8>) {
    let engine = engine().0.clone();
    bounded("GetElements", move || {
        let Ok(mut req) = v1::GetElementsRequest::decode(&data[..]) else {
            return;
        };
        req.wait_ms = req.wait_ms.min(MAX_CASE_WAIT_MS);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let service = WorkerService::new(engine, std::time::Instant::now());
        match runtime.block_on(service.get_elements(Request::new(req))) {
            Ok(reply) => {
                let reply = reply.into_inner();
                assert!(reply.elements.len() <= req.max_elements.max(1) as usize);
                for e in reply.elements {
                    assert!(cachew_proto::element_from_wire(e).is_ok());
                }
            }
            Err(status) => {
                assert!(
                    !matches!(status.code(), tonic::Code::Internal | tonic::Code::Unknown),
                    "a fetch answered as a server fault: {status:?}"
                );
                assert!(!status.message().is_empty());
            }
        }
    });
}

fn valid_heartbeat_reply() -> v1::WorkerHeartbeatResponse {
    v1::WorkerHeartbeatResponse {
        new_tasks: vec![v1::TaskDef {
            key: Some(KEY.into()),
            lease: LEASE,
            split: 3,
            seed: 9,
            dataset_id: "abc".into(),
            start_index: 7,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn valid_checkpoint() -> serde_json::Value {
    serde_json::to_value(WorkerCheckpoint {
        format: 1,
        address: "127.0.0.1:5051".into(),
        tasks: vec![TaskCheckpoint {
            key: KEY,
            split: 3,
            lease: LEASE,
            seed: 9,
            dataset_id: "abc".into(),
            acked: 7,
            produced: 9,
            len: 50,
            cache_mode: "put".into(),
        }],
    })
    .unwrap()
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn arbitrary_fetches(data in bytes(64)) {
        serve_fetch(data);
    }

    #[test]
    fn mutated_fetches(data in mutated(valid_fetch().encode_to_vec())) {
        serve_fetch(data);
    }

    #[test]
    fn task_definitions(data in prop_oneof![bytes(96), mutated(valid_heartbeat_reply().encode_to_vec())]) {
        bounded("TaskSpec::from_def", move || {
            if let Ok(reply) = v1::WorkerHeartbeatResponse::decode(&data[..]) {
                for def in reply.new_tasks {
                    if let Err(reason) = TaskSpec::from_def(def) {
                        assert!(!reason.is_empty());
                    }
                }
            }
        });
    }
}

proptest! {
    // Each case writes and opens a checkpoint store.
    #![proptest_config(config(40))]

    #[test]
    fn mutated_checkpoints(
        payload in prop_oneof![
            json::mutated(valid_checkpoint()).prop_map(|v| v.to_string().into_bytes()),
            mutated(valid_checkpoint().to_string().into_bytes()),
        ],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("checkpoints");
        {
            let (mut cp, _) = CheckpointStore::open(&store).unwrap();
            cp.write(&payload).unwrap();
        }
        bounded("checkpoint::open", move || match checkpoint::open(&store, "127.0.0.1:5051") {
            Ok((_, tasks)) => {
                for task in tasks {
                    let _ = task.progress();
                    if let Err(reason) = task.spec() {
                        assert!(!reason.is_empty());
                    }
                }
            }
            Err(e) => assert!(e.to_string().contains("checkpoint"), "{e}"),
        });
    }
}

#[test]
fn the_valid_fetch_is_served() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let service = WorkerService::new(engine().0.clone(), std::time::Instant::now());
    let mut req = valid_fetch();
    req.wait_ms = 5_000;
    let reply = runtime
        .block_on(service.get_elements(Request::new(req)))
        .unwrap()
        .into_inner();
    assert!(!reply.elements.is_empty());
}
