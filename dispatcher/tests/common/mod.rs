//! Helpers shared by the dispatcher's integration tests: requests and calls through the gRPC
//! service here, the state machine's in [`machine`].

#![allow(dead_code, clippy::unwrap_used)]

pub mod machine;

use cachew_dispatcher::DispatcherService;
use cachew_proto::{Dispatcher, v1};
use tonic::Request;

/// The canonical JSON of the tf-sample pipeline spec (the dataset checked into fixtures/).
pub fn spec_json() -> String {
    let spec = format!(
        "{}/../fixtures/specs/tf-sample.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    cachew_pipeline::PipelineSpec::load(std::path::Path::new(&spec))
        .unwrap()
        .to_canonical_json()
}

/// A request for job `name` over the tf-sample spec: one epoch, one consumer, the lowest free
/// consumer index.
pub fn job_request(name: &str) -> v1::GetOrCreateJobRequest {
    v1::GetOrCreateJobRequest {
        job_name: name.into(),
        spec_json: spec_json(),
        seed: 1,
        num_epochs: 1,
        num_consumers: 1,
        consumer_index: -1,
        ..Default::default()
    }
}

/// Registers a worker at `address` (one thread) claiming `tasks`.
pub async fn register(
    svc: &DispatcherService,
    address: &str,
    tasks: Vec<v1::TaskProgress>,
) -> v1::RegisterWorkerResponse {
    svc.register_worker(Request::new(v1::RegisterWorkerRequest {
        address: address.into(),
        tasks,
        threads: 1,
        ..Default::default()
    }))
    .await
    .unwrap()
    .into_inner()
}

/// Consumer 0 of `job` reports to the dispatcher from the start of the job; returns the reply.
pub async fn client_heartbeat(
    svc: &DispatcherService,
    job: &v1::GetOrCreateJobResponse,
) -> v1::ClientHeartbeatResponse {
    svc.client_heartbeat(Request::new(v1::ClientHeartbeatRequest {
        job_id: job.job_id,
        consumer_index: 0,
        consumer_generation: job.consumer_generation,
        cursor: Some(v1::Cursor::default()),
        ..Default::default()
    }))
    .await
    .unwrap()
    .into_inner()
}
