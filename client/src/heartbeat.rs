//! The consumer's heartbeat: it reports the cursor, the delivered count, epoch reports, failing
//! disks and the time spent waiting for data to the dispatcher, and long-polls the locations of
//! the splits the consumer reads next.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cachew_proto::Channel;
use cachew_proto::{DispatcherClient, v1};
use tokio::sync::{Notify, watch};

use crate::fetch::{Locations, WorkerPool};
use crate::metrics::WaitClock;
use crate::{ClientCursor, DiskReporter};

/// What a consumer reports with every heartbeat, shared between the [`JobClient`](crate::JobClient)
/// that updates it and the heartbeat loop that sends it.
#[derive(Debug, Clone)]
pub(crate) struct Reporting {
    /// The cursor of the next element to consume, and the examples delivered in total.
    pub cursor: Arc<Mutex<(ClientCursor, u64)>>,
    pub reports: Arc<Mutex<Vec<v1::EpochReport>>>,
    pub disks: DiskReporter,
    pub wait: Arc<WaitClock>,
}

/// A heartbeat of consumer (job, index, generation) carrying what it has to report now: its
/// cursor and delivered count, its epoch reports, its failing disks and its time waiting for
/// data (the input-bound signal).
pub(crate) fn heartbeat_request(
    (job_id, consumer_index, consumer_generation): (u64, u32, u64),
    reporting: &Reporting,
    known: Vec<v1::TaskLease>,
    wait_ms: u64,
) -> v1::ClientHeartbeatRequest {
    let (c, delivered) = *reporting.cursor.lock().unwrap_or_else(|p| p.into_inner());
    v1::ClientHeartbeatRequest {
        job_id,
        consumer_index,
        consumer_generation,
        cursor: Some(v1::Cursor::from(c.at)),
        wait_ms,
        known,
        delivered_examples: delivered,
        reports: reporting
            .reports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
        disks: reporting.disks.conditions(),
        unreachable_workers: Vec::new(),
        wait_seconds_total: reporting.wait.total_seconds(),
        input_wait_ratio: reporting.wait.ratio(),
    }
}

/// How long past its long-poll wait a heartbeat may take before it counts as failed.
const HEARTBEAT_GRACE: Duration = Duration::from_secs(5);

/// Reports the cursor to the dispatcher and keeps the split locations up to date.
pub(crate) async fn heartbeat_loop(
    (mut dispatcher, pool): (DispatcherClient<Channel>, WorkerPool),
    (job_id, consumer, generation): (u64, u32, u64),
    reporting: Reporting,
    locations: watch::Sender<Locations>,
    poke: Arc<Notify>,
) {
    let mut failures = 0u32;
    loop {
        let known = locations
            .borrow()
            .by_position
            .values()
            .map(|l| v1::TaskLease {
                epoch: l.epoch,
                position: l.position,
                lease: l.lease,
            })
            .collect();
        let mut req = heartbeat_request((job_id, consumer, generation), &reporting, known, 500);
        req.unreachable_workers = pool.unreachable();
        // A silent dispatcher (a cut link) must not hold the heartbeat forever.
        let deadline = Duration::from_millis(req.wait_ms) + HEARTBEAT_GRACE;
        let call = async {
            match tokio::time::timeout(deadline, dispatcher.client_heartbeat(req)).await {
                Ok(r) => r,
                Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                    "no answer within {} ms",
                    deadline.as_millis()
                ))),
            }
        };
        tokio::select! {
            result = call => match result {
                Ok(resp) => {
                    let resp = resp.into_inner();
                    if failures > 0 {
                        tracing::info!("dispatcher reachable again after {failures} failed heartbeat(s)");
                        failures = 0;
                    }
                    let superseded = resp.superseded;
                    locations.send_modify(|l| {
                        l.by_position = resp.locations.into_iter().map(|x| ((x.epoch, x.position), x)).collect();
                        l.finished = resp.job_finished;
                        l.superseded = superseded;
                        l.dispatcher_down = false;
                    });
                    if superseded {
                        tracing::warn!("another client took over consumer {consumer} of job {job_id}");
                        return;
                    }
                }
                Err(status) if cachew_proto::auth::is_refusal(&status) => {
                    tracing::error!("the dispatcher refused this client's heartbeat: {}", status.message());
                    locations.send_modify(|l| l.refused = Some(format!("the dispatcher: {}", status.message())));
                    return;
                }
                Err(status) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(20) {
                        tracing::warn!("client heartbeat failed ({failures} in a row): {}", status.message());
                    }
                    locations.send_modify(|l| l.dispatcher_down = true);
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(5)))).await;
                }
            },
            _ = poke.notified() => {}
        }
    }
}
