//! The gRPC surface: [`cachew_proto::Dispatcher`] for [`DispatcherService`]. Each handler takes
//! its request apart, calls the part of the service that owns the concern ([`crate::workers`],
//! [`crate::clients`], `status`), and replies only once the state it reveals is durable.

use std::pin::Pin;
use std::time::Duration;

use cachew_proto::limits::Bounded;
use cachew_proto::v1;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::clients::known_leases;
use crate::service::DispatcherService;

type StatusStream = Pin<Box<dyn Stream<Item = Result<v1::ClusterStatus, Status>> + Send>>;

#[tonic::async_trait]
impl cachew_proto::Dispatcher for DispatcherService {
    async fn register_worker(
        &self,
        request: Request<v1::RegisterWorkerRequest>,
    ) -> Result<Response<v1::RegisterWorkerResponse>, Status> {
        let req = request.into_inner();
        req.check_bounds()?;
        let (response, visible) = self.register(&req)?;
        self.durable(visible).await?;
        Ok(Response::new(response))
    }

    async fn worker_heartbeat(
        &self,
        request: Request<v1::WorkerHeartbeatRequest>,
    ) -> Result<Response<v1::WorkerHeartbeatResponse>, Status> {
        let req = request.into_inner();
        req.check_bounds()?;
        let response = self
            .long_poll(req.wait_ms, |core, look| {
                self.worker_round(core, &req, look)
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn get_dataset(
        &self,
        request: Request<v1::GetDatasetRequest>,
    ) -> Result<Response<v1::GetDatasetResponse>, Status> {
        let req = request.into_inner();
        req.check_bounds()?;
        let id = req.dataset_id;
        let spec_json = {
            let core = self.lock();
            let d = core
                .state
                .datasets
                .get(&id)
                .ok_or_else(|| Status::not_found(format!("unknown dataset {id}")))?;
            d.spec_json.clone()
        };
        // A dataset registered before the data root changed (replayed from the journal) is not
        // handed out if it names a file outside it.
        self.datasets().check_root(&spec_json).await?;
        Ok(Response::new(v1::GetDatasetResponse { spec_json }))
    }

    async fn get_or_create_job(
        &self,
        request: Request<v1::GetOrCreateJobRequest>,
    ) -> Result<Response<v1::GetOrCreateJobResponse>, Status> {
        let req = request.into_inner();
        req.check_bounds()?;
        let (response, visible) = self.attach_consumer(&req).await?;
        self.durable(visible).await?;
        Ok(Response::new(response))
    }

    async fn client_heartbeat(
        &self,
        request: Request<v1::ClientHeartbeatRequest>,
    ) -> Result<Response<v1::ClientHeartbeatResponse>, Status> {
        let req = request.into_inner();
        req.check_bounds()?;
        let known = known_leases(&req);
        let response = self
            .long_poll(req.wait_ms, |core, look| {
                self.client_round(core, &req, &known, look)
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn release_consumer(
        &self,
        request: Request<v1::ReleaseConsumerRequest>,
    ) -> Result<Response<v1::ReleaseConsumerResponse>, Status> {
        let visible = self.release(&request.into_inner())?;
        self.durable(visible).await?;
        Ok(Response::new(v1::ReleaseConsumerResponse {}))
    }

    async fn drain_worker(
        &self,
        request: Request<v1::DrainWorkerRequest>,
    ) -> Result<Response<v1::DrainWorkerResponse>, Status> {
        let req = request.into_inner();
        req.check_bounds()?;
        let (response, visible) = self.drain(&req)?;
        self.durable(visible).await?;
        Ok(Response::new(response))
    }

    async fn pin_workers(
        &self,
        request: Request<v1::PinWorkersRequest>,
    ) -> Result<Response<v1::PinWorkersResponse>, Status> {
        let (response, visible) = self.pin(&request.into_inner())?;
        self.durable(visible).await?;
        Ok(Response::new(response))
    }

    type WatchStatusStream = StatusStream;

    /// A snapshot at once, then one per change: at most 10 a second, at least one a second.
    async fn watch_status(
        &self,
        request: Request<v1::WatchStatusRequest>,
    ) -> Result<Response<Self::WatchStatusStream>, Status> {
        let mut events_after = request.into_inner().events_after;
        let svc = self.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            loop {
                let seen = svc.version();
                let status = svc.status(events_after);
                if let Some(last) = status.events.last() {
                    events_after = last.seq;
                }
                if tx.send(Ok(status)).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                svc.wait_change(
                    seen,
                    tokio::time::Instant::now() + Duration::from_millis(900),
                )
                .await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
