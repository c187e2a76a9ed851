//! The worker's data service: clients fetch elements with `GetElements`.

use std::time::Duration;

use cachew_proto::limits::Bounded;
use cachew_proto::v1;
use tonic::{Request, Response, Status};

use crate::engine::{Engine, FetchError, TaskKey};
use crate::metrics::{FetchMetrics, FetchOutcome};

/// Serves elements from the engine.
#[derive(Debug, Clone)]
pub struct WorkerService {
    engine: Engine,
    started: std::time::Instant,
    first_served: std::sync::Arc<std::sync::atomic::AtomicBool>,
    metrics: Option<FetchMetrics>,
}

impl WorkerService {
    /// `started` is when the process started (the first served element is logged against it).
    pub fn new(engine: Engine, started: std::time::Instant) -> WorkerService {
        WorkerService {
            engine,
            started,
            first_served: Default::default(),
            metrics: None,
        }
    }

    /// Times every call and counts its outcome in `metrics`.
    pub fn with_metrics(self, metrics: FetchMetrics) -> WorkerService {
        WorkerService {
            metrics: Some(metrics),
            ..self
        }
    }
}

/// The outcome label of a fetch's result.
fn outcome(result: &Result<Response<v1::GetElementsResponse>, Status>) -> FetchOutcome {
    match result {
        Ok(_) => FetchOutcome::Ok,
        Err(status) => match status.code() {
            tonic::Code::NotFound => FetchOutcome::UnknownTask,
            tonic::Code::OutOfRange => FetchOutcome::BadIndex,
            tonic::Code::InvalidArgument => FetchOutcome::BadRequest,
            // The held lease is attached to a wrong-lease refusal only.
            tonic::Code::FailedPrecondition
                if status
                    .metadata()
                    .contains_key(cachew_proto::HELD_LEASE_HEADER) =>
            {
                FetchOutcome::WrongLease
            }
            tonic::Code::FailedPrecondition => FetchOutcome::BadRequest,
            _ => FetchOutcome::Failed,
        },
    }
}

/// Largest response we assemble, in element bytes.
const MAX_RESPONSE_BYTES: u64 = 32 * 1024 * 1024;

#[tonic::async_trait]
impl cachew_proto::Worker for WorkerService {
    async fn get_elements(
        &self,
        request: Request<v1::GetElementsRequest>,
    ) -> Result<Response<v1::GetElementsResponse>, Status> {
        let started = std::time::Instant::now();
        let result = self.serve(request.into_inner()).await;
        if let Some(m) = &self.metrics {
            m.done(outcome(&result), started.elapsed());
        }
        result
    }
}

impl WorkerService {
    async fn serve(
        &self,
        req: v1::GetElementsRequest,
    ) -> Result<Response<v1::GetElementsResponse>, Status> {
        req.check_bounds()?;
        let key = TaskKey::from(
            req.key
                .ok_or_else(|| Status::invalid_argument("missing task key"))?,
        );
        let max_bytes = if req.max_bytes == 0 {
            MAX_RESPONSE_BYTES
        } else {
            req.max_bytes.min(MAX_RESPONSE_BYTES)
        };
        let wait = Duration::from_millis(req.wait_ms.min(10_000));
        let fetched = self
            .engine
            .fetch(
                key,
                req.lease,
                req.from_index,
                req.max_elements.max(1),
                max_bytes as usize,
                wait,
            )
            .await
            .map_err(|e| match e {
                FetchError::UnknownTask(_) => Status::not_found(e.to_string()),
                FetchError::WrongLease { held, .. } => {
                    // Leases only grow: the client compares to learn who is behind.
                    let mut status = Status::failed_precondition(e.to_string());
                    if let Ok(v) = held.to_string().parse() {
                        status
                            .metadata_mut()
                            .insert(cachew_proto::HELD_LEASE_HEADER, v);
                    }
                    status
                }
                FetchError::BadIndex { .. } => Status::out_of_range(e.to_string()),
                FetchError::Pipeline(failure) => {
                    v1::FetchFailure::deterministic(failure.record_id, failure.reason).into_status()
                }
            })?;
        if let Some(first) = fetched.elements.first()
            && first.id.split != req.split
            && req.split != u32::MAX
        {
            return Err(Status::failed_precondition(format!(
                "task serves split {}, request names split {}",
                first.id.split, req.split
            )));
        }
        if !fetched.elements.is_empty()
            && !self
                .first_served
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            let unix_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            tracing::info!(
                since_start_ms = self.started.elapsed().as_millis() as u64,
                unix_ms = unix_ms as u64,
                "first element served"
            );
        }
        Ok(Response::new(v1::GetElementsResponse {
            elements: fetched
                .elements
                .iter()
                .map(cachew_proto::element_to_wire)
                .collect(),
            end_of_split: fetched.end_of_split,
            split_len: fetched.len,
        }))
    }
}
