//! Fetching one split from whichever worker currently owns it.
//!
//! A fetcher pulls elements of one (epoch, position) in index order from its owner, following
//! the owner as the dispatcher moves the split (failover, restart): on any error it waits for a
//! newer lease and resumes at its own cursor, so every element reaches the consumer exactly once
//! and in order. Elements are checked against the identity the consumer expects.
//!
//! A worker that stays silent (no answer past the fetch's long-poll wait plus the keepalive
//! detection time, `cachew_proto::net`) while the dispatcher may still hear it, as when only the
//! path between this client and the worker is cut, is *suspected*: the heartbeat reports it in
//! `unreachable_workers` for [`SUSPECT_FOR`] after its last silent fetch, and the dispatcher moves
//! this consumer's splits off it. The fetcher then follows the new lease as after a failover.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cachew_pipeline::Element;
use cachew_proto::Channel;
use cachew_proto::backoff::Backoff;
use cachew_proto::{MAX_MESSAGE_BYTES, WorkerClient, v1};
use tokio::sync::{mpsc, watch};

use crate::ClientError;
use crate::metrics::JobMetrics;

/// Where the dispatcher says each upcoming split is served.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Locations {
    pub by_position: BTreeMap<(u64, u32), v1::SplitLocation>,
    pub finished: bool,
    pub superseded: bool,
    /// Set when the dispatcher refused this client's credentials (final).
    pub refused: Option<String>,
    /// Set when the dispatcher could not be reached for a while (for diagnostics).
    pub dispatcher_down: bool,
}

/// Connections to workers, by address, and the workers that went silent.
#[derive(Debug, Default, Clone)]
pub struct WorkerPool {
    channels: Arc<Mutex<HashMap<String, WorkerClient<Channel>>>>,
    suspects: Arc<Mutex<HashMap<String, Instant>>>,
}

/// How long a worker stays suspected after its last silent fetch. Past it the dispatcher may
/// give this consumer splits there again (a healed link); a worker still cut off is suspected
/// again after one more silent fetch.
pub const SUSPECT_FOR: Duration = Duration::from_secs(10);

/// How long a fetch waits on the worker for elements (a long poll).
const FETCH_WAIT: Duration = Duration::from_millis(1000);

impl WorkerPool {
    /// Marks `address` silent now.
    fn suspect(&self, address: &str) {
        let mut s = self.suspects.lock().unwrap_or_else(|p| p.into_inner());
        if s.insert(address.to_string(), Instant::now()).is_none() {
            tracing::warn!(
                worker = address,
                "worker silent: asking the dispatcher to move this consumer's splits off it"
            );
        }
    }

    /// `address` answered: it is reachable.
    fn answered(&self, address: &str) {
        let mut s = self.suspects.lock().unwrap_or_else(|p| p.into_inner());
        if s.remove(address).is_some() {
            tracing::info!(worker = address, "worker reachable again");
        }
    }

    /// The workers suspected now (for the heartbeat), sorted.
    pub fn unreachable(&self) -> Vec<String> {
        let mut s = self.suspects.lock().unwrap_or_else(|p| p.into_inner());
        s.retain(|_, at| at.elapsed() < SUSPECT_FOR);
        let mut v: Vec<String> = s.keys().cloned().collect();
        v.sort();
        v
    }

    fn get(&self, address: &str) -> Result<WorkerClient<Channel>, ClientError> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(address) {
            return Ok(c.clone());
        }
        let channel = cachew_proto::endpoint(address)
            .map_err(|e| ClientError::Protocol(e.to_string()))?
            .connect_lazy();
        let client = WorkerClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        map.insert(address.to_string(), client.clone());
        Ok(client)
    }

    /// Forgets a connection that failed, so the next attempt reconnects.
    fn forget(&self, address: &str) {
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(address);
    }
}

/// Longest a fetch may take: the worker's long poll plus the time keepalive pings take to
/// notice a silent connection (a connect to a silent address fails within that too).
fn fetch_deadline() -> Duration {
    FETCH_WAIT + cachew_proto::net::timeouts().detection()
}

/// Whether a failed fetch that took `elapsed` was silence rather than a refusal: a worker that
/// is up answers within its long poll, a dead one refuses at once.
fn silent(elapsed: Duration) -> bool {
    elapsed > FETCH_WAIT + Duration::from_millis(200)
}

/// Resolves once the location of `position` carries a lease other than `lease` (never, if the
/// locations feed ends).
async fn moved_from(locations: &mut watch::Receiver<Locations>, position: (u64, u32), lease: u64) {
    loop {
        if locations.changed().await.is_err() {
            return std::future::pending().await;
        }
        let now = locations
            .borrow_and_update()
            .by_position
            .get(&position)
            .map(|l| l.lease);
        if now.is_some_and(|l| l != 0 && l != lease) {
            return;
        }
    }
}

/// What a fetcher needs to know about its split.
#[derive(Debug, Clone)]
pub struct SplitJob {
    pub job_id: u64,
    pub epoch: u64,
    pub position: u32,
    pub split: u32,
    pub len: u32,
    pub start: u32,
    pub max_elements: u32,
}

/// Fetches `job`'s split into `out` from `start` to its end. Returns when done, when the
/// consumer went away, or on a fatal error (sent through `out` as well). Counts each fetch's
/// duration, retries, and the elements received (and those it drops) into `counts`.
pub async fn fetch_split(
    job: SplitJob,
    pool: WorkerPool,
    mut locations: watch::Receiver<Locations>,
    poke: Arc<tokio::sync::Notify>,
    counts: JobMetrics,
    out: mpsc::Sender<Result<Vec<Element>, ClientError>>,
) {
    let key = v1::TaskKey::new(job.job_id, job.epoch, job.position);
    let mut next = job.start;
    let mut failed_lease = 0u64;
    let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(100));
    while next < job.len {
        // Wait for an owner with a lease we have not seen fail.
        let loc = loop {
            let current = locations
                .borrow_and_update()
                .by_position
                .get(&(job.epoch, job.position))
                .cloned();
            match current {
                Some(l) if l.lease != 0 && l.lease != failed_lease => break l,
                _ => {
                    poke.notify_one();
                    if tokio::time::timeout(Duration::from_millis(500), locations.changed())
                        .await
                        .is_ok_and(|r| r.is_err())
                    {
                        return;
                    }
                    if out.is_closed() {
                        return;
                    }
                }
            }
        };
        if loc.split != job.split {
            let _ = out
                .send(Err(ClientError::Protocol(format!(
                    "dispatcher says epoch {} position {} is split {}, the epoch order says {}",
                    job.epoch, job.position, loc.split, job.split
                ))))
                .await;
            return;
        }
        let mut client = match pool.get(&loc.worker_address) {
            Ok(c) => c,
            Err(e) => {
                let _ = out.send(Err(e)).await;
                return;
            }
        };
        let req = v1::GetElementsRequest {
            key: Some(key),
            lease: loc.lease,
            split: job.split,
            from_index: next,
            max_elements: job.max_elements,
            max_bytes: 0,
            wait_ms: FETCH_WAIT.as_millis() as u64,
        };
        let sent = Instant::now();
        // The call ends early if the split moves meanwhile: a frozen or cut-off owner never
        // answers, and its replacement is known as soon as the dispatcher fails the split over.
        let moved = moved_from(&mut locations, (job.epoch, job.position), loc.lease);
        let result = tokio::select! {
            r = tokio::time::timeout(fetch_deadline(), client.get_elements(req)) => r,
            () = moved => {
                counts.fetch_retries.inc();
                tracing::debug!(worker = %loc.worker_address, lease = loc.lease, "{key} moved while fetching; following it");
                continue;
            }
        };
        counts.fetch.observe(sent.elapsed().as_secs_f64());
        match result {
            Ok(Ok(resp)) => {
                backoff.reset();
                pool.answered(&loc.worker_address);
                let resp = resp.into_inner();
                // The consumer counts an answer as received when it takes it from the channel
                // (or drains it, discarded, when the split is dropped). One that goes no
                // further counts as received and discarded here. An answer pushed into a channel
                // already drained and dropped counts nowhere, so received == delivered +
                // discarded holds exactly.
                let arrived = resp.elements.len() as u64;
                let dropped = || {
                    counts.received.inc_by(arrived);
                    counts.discarded.inc_by(arrived);
                };
                if resp.split_len != 0 && resp.split_len != job.len {
                    let _ = out
                        .send(Err(ClientError::Protocol(format!(
                            "worker {} says split {} has {} elements, the plan says {}",
                            loc.worker_address, job.split, resp.split_len, job.len
                        ))))
                        .await;
                    dropped();
                    return;
                }
                let mut batch = Vec::with_capacity(resp.elements.len());
                for wire in resp.elements {
                    let e = match cachew_proto::element_from_wire(wire) {
                        Ok(e) => e,
                        Err(err) => {
                            let _ = out.send(Err(ClientError::Protocol(err.to_string()))).await;
                            dropped();
                            return;
                        }
                    };
                    if (e.id.epoch, e.id.split, e.id.index) != (job.epoch, job.split, next) {
                        let _ = out
                            .send(Err(ClientError::Protocol(format!(
                                "worker {} sent element {} where epoch {} split {} index {next} was due",
                                loc.worker_address, e.id, job.epoch, job.split
                            ))))
                            .await;
                        dropped();
                        return;
                    }
                    next += 1;
                    batch.push(e);
                }
                if !batch.is_empty() && out.send(Ok(batch)).await.is_err() {
                    dropped();
                    return;
                }
            }
            Ok(Err(status)) => {
                // Only a failure the worker marks as final (a record that fails the pipeline
                // under `on_error = "fail"`) ends the split. Everything else, whatever its code
                // (a torn HTTP/2 stream reports Internal, a reset Unknown or Unavailable), is
                // about the transport or the worker's state: retry, following the owner.
                if let Some(failure) = v1::FetchFailure::from_status(&status)
                    && failure.is_final()
                {
                    let _ = out.send(Err(ClientError::Pipeline(failure.reason))).await;
                    return;
                }
                // The worker refused this client's token or certificate: no retry can change
                // that, and retrying forever would hide it.
                if cachew_proto::auth::is_refusal(&status) {
                    let reason = format!("worker {}: {}", loc.worker_address, status.message());
                    let _ = out.send(Err(ClientError::CredentialsRefused(reason))).await;
                    return;
                }
                counts.fetch_retries.inc();
                tracing::debug!(worker = %loc.worker_address, lease = loc.lease, code = ?status.code(), "fetch of {key} failed: {}", status.message());
                match status.code() {
                    // The worker holds another lease. Leases only grow: if the worker's is older it
                    // has not received the new assignment yet (try again); if it is newer, our
                    // location is stale (wait for the new owner).
                    tonic::Code::FailedPrecondition => {
                        let held = status
                            .metadata()
                            .get(cachew_proto::HELD_LEASE_HEADER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<u64>().ok());
                        if held.is_none_or(|h| h > loc.lease) {
                            failed_lease = loc.lease;
                        }
                    }
                    // The worker answered about its own state (the task is not there yet, or the
                    // index is ahead of what it knows): the connection is fine, try again.
                    tonic::Code::NotFound | tonic::Code::OutOfRange => {}
                    // Down, restarting in place, or the connection broke: reconnect next time.
                    // If it broke after a silence (keepalive pings unanswered, a connect that
                    // timed out), the worker is suspected.
                    _ => {
                        pool.forget(&loc.worker_address);
                        if silent(sent.elapsed()) {
                            pool.suspect(&loc.worker_address);
                        }
                    }
                }
                tokio::time::sleep(backoff.next_delay()).await;
                poke.notify_one();
            }
            Err(_) => {
                counts.fetch_retries.inc();
                tracing::debug!(worker = %loc.worker_address, "fetch of {key} timed out");
                pool.forget(&loc.worker_address);
                pool.suspect(&loc.worker_address);
                poke.notify_one();
            }
        }
        if out.is_closed() {
            return;
        }
    }
}
