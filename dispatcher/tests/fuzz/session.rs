//! A dispatcher with something in it (two workers, a job of two consumers, assignments, client
//! progress), built through the real service; and the valid requests that built it, as seeds.

use cachew_dispatcher::{DispatcherConfig, DispatcherService};
use cachew_pipeline::ConsumerCursor;
use cachew_proto::{Dispatcher, v1};
use tonic::Request;

use crate::common;

/// The service and the ids it handed out.
pub struct Session {
    pub svc: DispatcherService,
    pub workers: [u64; 2],
    pub job: v1::GetOrCreateJobResponse,
}

/// The requests of a session, with the ids a fresh service hands out (the same every time: ids
/// are counters).
pub struct Requests {
    pub register: v1::RegisterWorkerRequest,
    pub job: v1::GetOrCreateJobRequest,
    pub worker_heartbeat: v1::WorkerHeartbeatRequest,
    pub client_heartbeat: v1::ClientHeartbeatRequest,
    pub release: v1::ReleaseConsumerRequest,
    pub drain: v1::DrainWorkerRequest,
    pub pin: v1::PinWorkersRequest,
    pub dataset: v1::GetDatasetRequest,
    pub watch: v1::WatchStatusRequest,
}

pub fn requests(workers: [u64; 2], job: &v1::GetOrCreateJobResponse) -> Requests {
    Requests {
        register: v1::RegisterWorkerRequest {
            address: "10.0.0.1:5051".into(),
            threads: 2,
            ..Default::default()
        },
        job: v1::GetOrCreateJobRequest {
            num_consumers: 2,
            consumer_index: 1,
            ..common::job_request("train")
        },
        worker_heartbeat: v1::WorkerHeartbeatRequest {
            worker_id: workers[0],
            address: "10.0.0.1:5051".into(),
            free_slots: 2,
            ..Default::default()
        },
        client_heartbeat: v1::ClientHeartbeatRequest {
            job_id: job.job_id,
            consumer_index: 0,
            consumer_generation: job.consumer_generation,
            cursor: Some(
                ConsumerCursor {
                    epoch: 0,
                    ordinal: 1,
                    index: 3,
                }
                .into(),
            ),
            delivered_examples: 53,
            ..Default::default()
        },
        release: v1::ReleaseConsumerRequest {
            job_id: job.job_id,
            consumer_index: 0,
            consumer_generation: job.consumer_generation,
        },
        drain: v1::DrainWorkerRequest {
            worker_id: workers[1],
            address: String::new(),
        },
        pin: v1::PinWorkersRequest { workers: Some(3) },
        dataset: v1::GetDatasetRequest {
            dataset_id: job.dataset_id.clone(),
        },
        watch: v1::WatchStatusRequest { events_after: 0 },
    }
}

/// Builds a session on a fresh service (no journal unless `svc` has one).
pub async fn build(svc: DispatcherService) -> Session {
    let a = common::register(&svc, "10.0.0.1:5051", vec![])
        .await
        .worker_id;
    let b = common::register(&svc, "10.0.0.2:5051", vec![])
        .await
        .worker_id;
    let job = svc
        .get_or_create_job(Request::new(v1::GetOrCreateJobRequest {
            num_consumers: 2,
            consumer_index: 0,
            ..common::job_request("train")
        }))
        .await
        .unwrap()
        .into_inner();
    for (worker, address) in [(a, "10.0.0.1:5051"), (b, "10.0.0.2:5051")] {
        svc.worker_heartbeat(Request::new(v1::WorkerHeartbeatRequest {
            worker_id: worker,
            address: address.into(),
            free_slots: 2,
            ..Default::default()
        }))
        .await
        .unwrap();
    }
    let reqs = requests([a, b], &job);
    svc.client_heartbeat(Request::new(reqs.client_heartbeat.clone()))
        .await
        .unwrap();
    Session {
        svc,
        workers: [a, b],
        job,
    }
}

/// A fresh journal-less service with a session in it.
pub async fn fresh() -> Session {
    build(DispatcherService::new(
        DispatcherConfig::default(),
        Default::default(),
    ))
    .await
}
