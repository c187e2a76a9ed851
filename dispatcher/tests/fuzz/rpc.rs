//! Every dispatcher RPC: its request decoded with prost from arbitrary bytes and from mutated
//! encodings of valid requests, then served by the real handler on a dispatcher that holds a
//! session (workers, a job, assignments). A reply or a status that names what was wrong; after
//! it, the state still serves a status snapshot, runs the liveness and retention policies and
//! round-trips through a journal snapshot.

use std::time::Duration;

use cachew_dispatcher::durable;
use cachew_fuzzing::{bounded, bytes, config, mutated};
use cachew_proto::{Dispatcher, v1};
use proptest::prelude::*;
use prost::Message;
use tokio_stream::StreamExt;
use tonic::{Request, Status};

use crate::session::{self, Requests};

/// The dispatcher's RPCs.
#[derive(Debug, Clone, Copy)]
pub enum Rpc {
    RegisterWorker,
    WorkerHeartbeat,
    GetDataset,
    GetOrCreateJob,
    ClientHeartbeat,
    ReleaseConsumer,
    DrainWorker,
    PinWorkers,
    WatchStatus,
}

const ALL: [Rpc; 9] = [
    Rpc::RegisterWorker,
    Rpc::WorkerHeartbeat,
    Rpc::GetDataset,
    Rpc::GetOrCreateJob,
    Rpc::ClientHeartbeat,
    Rpc::ReleaseConsumer,
    Rpc::DrainWorker,
    Rpc::PinWorkers,
    Rpc::WatchStatus,
];

/// The longest long poll a fuzz case waits. The handlers cap a heartbeat's `wait_ms` themselves
/// (`long_poll::MAX_WAIT`, 10 s); waiting that long per case would only make the test slow.
const MAX_CASE_WAIT_MS: u64 = 20;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The valid requests of a fresh session (ids are counters: every fresh session has the same).
pub fn seeds() -> &'static Requests {
    static SEEDS: std::sync::OnceLock<Requests> = std::sync::OnceLock::new();
    SEEDS.get_or_init(|| {
        runtime().block_on(async {
            let s = session::fresh().await;
            session::requests(s.workers, &s.job)
        })
    })
}

fn seed(rpc: Rpc) -> Vec<u8> {
    let r = seeds();
    match rpc {
        Rpc::RegisterWorker => r.register.encode_to_vec(),
        Rpc::WorkerHeartbeat => r.worker_heartbeat.encode_to_vec(),
        Rpc::GetDataset => r.dataset.encode_to_vec(),
        Rpc::GetOrCreateJob => r.job.encode_to_vec(),
        Rpc::ClientHeartbeat => r.client_heartbeat.encode_to_vec(),
        Rpc::ReleaseConsumer => r.release.encode_to_vec(),
        Rpc::DrainWorker => r.drain.encode_to_vec(),
        Rpc::PinWorkers => r.pin.encode_to_vec(),
        Rpc::WatchStatus => r.watch.encode_to_vec(),
    }
}

/// Decodes `bytes` as `rpc`'s request and serves it. `None` if it does not decode (prost's
/// error is checked to say why).
async fn serve(
    svc: &cachew_dispatcher::DispatcherService,
    rpc: Rpc,
    bytes: &[u8],
) -> Option<Result<(), Status>> {
    fn decode<M: Message + Default>(bytes: &[u8]) -> Option<M> {
        match M::decode(bytes) {
            Ok(m) => Some(m),
            Err(e) => {
                assert!(!e.to_string().is_empty());
                None
            }
        }
    }
    fn done<T>(r: Result<T, Status>) -> Result<(), Status> {
        r.map(|_| ())
    }
    Some(match rpc {
        Rpc::RegisterWorker => done(svc.register_worker(Request::new(decode(bytes)?)).await),
        Rpc::WorkerHeartbeat => {
            let mut req: v1::WorkerHeartbeatRequest = decode(bytes)?;
            req.wait_ms = req.wait_ms.min(MAX_CASE_WAIT_MS);
            done(svc.worker_heartbeat(Request::new(req)).await)
        }
        Rpc::GetDataset => done(svc.get_dataset(Request::new(decode(bytes)?)).await),
        Rpc::GetOrCreateJob => {
            let req: v1::GetOrCreateJobRequest = decode(bytes)?;
            done(svc.get_or_create_job(Request::new(req)).await)
        }
        Rpc::ClientHeartbeat => {
            let mut req: v1::ClientHeartbeatRequest = decode(bytes)?;
            req.wait_ms = req.wait_ms.min(MAX_CASE_WAIT_MS);
            done(svc.client_heartbeat(Request::new(req)).await)
        }
        Rpc::ReleaseConsumer => done(svc.release_consumer(Request::new(decode(bytes)?)).await),
        Rpc::DrainWorker => done(svc.drain_worker(Request::new(decode(bytes)?)).await),
        Rpc::PinWorkers => done(svc.pin_workers(Request::new(decode(bytes)?)).await),
        Rpc::WatchStatus => match svc.watch_status(Request::new(decode(bytes)?)).await {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
                    .await
                    .expect("the status stream sends a snapshot at once");
                first.expect("the status stream ended at once").map(|_| ())
            }
            Err(status) => Err(status),
        },
    })
}

/// Serves one fuzzed request on a fresh session and checks what is left.
fn check(rpc: Rpc, bytes: Vec<u8>) {
    bounded("dispatcher RPC", move || {
        runtime().block_on(async {
            let s = session::fresh().await;
            if let Some(Err(status)) = serve(&s.svc, rpc, &bytes).await {
                assert!(
                    !matches!(status.code(), tonic::Code::Internal | tonic::Code::Unknown),
                    "{rpc:?}: a request was answered as a server fault: {status:?}"
                );
                assert!(
                    !status.message().is_empty(),
                    "{rpc:?}: a status without a reason"
                );
            }
            // The state the request left is still a state the dispatcher can serve and keep.
            let _ = s.svc.status(0);
            s.svc.check_liveness();
            s.svc.check_retention();
            let state = s.svc.state();
            let snapshot = durable::encode_snapshot(&state).unwrap();
            assert_eq!(durable::decode_snapshot(1, &snapshot).unwrap(), state);
        });
    });
}

fn rpc() -> impl Strategy<Value = Rpc> {
    proptest::sample::select(ALL.to_vec())
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn arbitrary_requests(rpc in rpc(), data in bytes(96)) {
        check(rpc, data);
    }

    #[test]
    fn requests_with_arbitrary_fields((rpc, data) in crate::fields::request(seeds())) {
        check(rpc, data);
    }

    #[test]
    fn mutated_requests(
        (rpc, data) in rpc().prop_flat_map(|rpc| (Just(rpc), mutated(seed(rpc)))),
    ) {
        check(rpc, data);
    }
}

#[test]
fn every_seed_is_served() {
    // The seeds are valid requests: each is served without error on a fresh session, so the
    // mutations start from requests that reach deep into the handlers.
    for rpc in ALL {
        let data = seed(rpc);
        runtime().block_on(async {
            let s = session::fresh().await;
            let served = serve(&s.svc, rpc, &data).await.unwrap();
            assert!(served.is_ok(), "{rpc:?}: {served:?}");
        });
    }
}
