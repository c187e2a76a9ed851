//! The local actuator of the autoscaler: it follows the dispatcher's status stream and starts
//! worker processes until the workers that count reach `ClusterStatus.autoscale.target`
//! (`worker-4`, `worker-5`, ... with the cluster's worker flags). It never stops one: a
//! smaller fleet is reached by the dispatcher, which drains the workers it chose (their splits
//! move at once), and a drained worker exits by itself.
//!
//! A worker counts while its process runs (or is paused) and the dispatcher lists it as alive
//! or suspect, not standby (a promoted standby counts; a draining, left or dead worker does
//! not); a process started but not registered yet counts too, unless it was started as a
//! standby, so one target never starts two processes. A worker process that died is not
//! counted: the actuator starts another, as an orchestrator would (the dispatcher does not
//! drain the newcomer meanwhile: it leaves suspect workers out of its count). A start that
//! fails is retried a second later.

use std::collections::HashMap;
use std::thread::JoinHandle;
use std::time::Duration;

use cachew_proto::v1;

use crate::cluster::NodeState;
use crate::control::SharedCluster;
use crate::follow::{FollowOptions, Followed, StatusFollower};
use crate::role::Role;

/// Follows one dispatcher and starts workers for it; stops (joins its thread) when dropped.
#[derive(Debug)]
pub struct LocalScaler {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl LocalScaler {
    /// Starts following `dispatcher`; new workers get `worker_flags`.
    pub fn spawn(
        cluster: SharedCluster,
        dispatcher: String,
        worker_flags: Vec<String>,
    ) -> std::io::Result<LocalScaler> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("local-scaler".into())
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::select! {
                        _ = stopped => {}
                        () = follow(cluster, dispatcher, worker_flags) => {}
                    }
                });
            })?;
        Ok(LocalScaler {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for LocalScaler {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn follow(cluster: SharedCluster, dispatcher: String, worker_flags: Vec<String>) {
    let mut follower = StatusFollower::new(
        &dispatcher,
        FollowOptions {
            connect_timeout: Duration::from_secs(2),
            stall_timeout: Some(Duration::from_secs(5)),
            first_retry: Duration::from_millis(100),
            max_retry: Duration::from_secs(1),
        },
    );
    loop {
        let Followed::Up(status) = follower.next().await else {
            continue;
        };
        let Some(autoscale) = status.autoscale.as_ref() else {
            continue;
        };
        if autoscale.target == 0 {
            continue;
        }
        let (counted, names) = {
            let mut c = cluster.lock().unwrap_or_else(|p| p.into_inner());
            (counted_workers(&mut c, &status), c.names(Role::Worker))
        };
        let missing = autoscale.target.saturating_sub(counted);
        if missing == 0 {
            continue;
        }
        let first = next_index(&names);
        for index in first..first + missing {
            let name = format!("worker-{index}");
            let started = cluster
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .add_worker(&name, &worker_flags);
            match started {
                Ok(()) => tracing::info!(
                    target = autoscale.target,
                    "autoscale: started {name} ({counted} counted)"
                ),
                Err(e) => {
                    tracing::warn!("autoscale: cannot start {name}: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
            }
        }
    }
}

/// Pins the worker count of the dispatcher at `dispatcher` (None: unpins) through its admin
/// `PinWorkers` RPC; returns the fleet as the dispatcher sees it after. The dashboard's keys
/// and the scenario step `pin` use it.
pub async fn pin_workers(
    dispatcher: &str,
    workers: Option<u32>,
    timeout: Duration,
) -> Result<v1::Autoscale, String> {
    let endpoint = cachew_proto::endpoint(dispatcher).map_err(|e| e.to_string())?;
    let mut client = cachew_proto::DispatcherClient::new(endpoint.connect_lazy());
    match tokio::time::timeout(
        timeout,
        client.pin_workers(v1::PinWorkersRequest { workers }),
    )
    .await
    {
        Ok(Ok(r)) => Ok(r.into_inner().autoscale.unwrap_or_default()),
        Ok(Err(status)) => Err(crate::follow::status_reason(&status)),
        Err(_) => Err(format!(
            "the dispatcher did not answer in {} s",
            timeout.as_secs()
        )),
    }
}

/// The workers that count toward the target (see the module doc).
fn counted_workers(cluster: &mut crate::cluster::Cluster, status: &v1::ClusterStatus) -> u32 {
    let by_address: HashMap<&str, &v1::WorkerStatus> = status
        .workers
        .iter()
        .map(|w| (w.address.as_str(), w))
        .collect();
    cluster
        .nodes()
        .into_iter()
        .filter(|n| n.role == Role::Worker && !n.standby)
        .filter(|n| matches!(n.state, NodeState::Running | NodeState::Paused))
        .filter(|n| {
            let known = n
                .listen
                .as_deref()
                .and_then(|a| by_address.get(a))
                .map(|w| w.state);
            let leaving = [
                v1::WorkerState::Draining,
                v1::WorkerState::Left,
                v1::WorkerState::Dead,
            ];
            !known.is_some_and(|s| leaving.iter().any(|l| *l as i32 == s))
        })
        .count() as u32
}

/// The number after the highest `worker-N`.
fn next_index(names: &[String]) -> u32 {
    names
        .iter()
        .filter_map(|n| n.strip_prefix("worker-")?.parse::<u32>().ok())
        .max()
        .unwrap_or(0)
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_workers_are_numbered_after_the_highest() {
        let names = ["worker-1", "worker-3", "standby-1", "worker-x"].map(String::from);
        assert_eq!(next_index(&names), 4);
        assert_eq!(next_index(&[]), 1);
    }
}
