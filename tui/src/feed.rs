//! The feeds: background tasks that turn the network into [`Update`]s for the model, and the
//! one function that sends an action to cluster control. They own the gRPC connections; they
//! never touch the model or the terminal (they only send on a channel), and they stop when the
//! channel's receiver is gone.

use std::time::Duration;

use cachew_cluster::follow::status_reason;
use cachew_cluster::{FollowOptions, Followed, StatusFollower};
use cachew_proto::Channel;
use cachew_proto::v1;
use cachew_proto::v1::cluster_control_client::ClusterControlClient;
use tokio::sync::{mpsc, watch};

use crate::model::{ActCommand, CheckpointSource, Update};

/// A status stream that says nothing for this long is treated as down (the dispatcher sends a
/// snapshot at least every second; a paused dispatcher keeps its socket open but goes silent).
pub const STALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How often cluster control is asked for its node list.
pub const NODES_INTERVAL: Duration = Duration::from_millis(500);
/// How long one cluster-control request may take (restarting a dispatcher waits until it
/// listens, up to 20 s).
pub(crate) const ACT_TIMEOUT: Duration = Duration::from_secs(60);
const LIST_TIMEOUT: Duration = Duration::from_secs(5);

/// How the status feed follows the dispatcher: 250 ms between attempts, doubling up to 4 s.
const FOLLOW: FollowOptions = FollowOptions {
    connect_timeout: STALL_TIMEOUT,
    stall_timeout: Some(STALL_TIMEOUT),
    first_retry: Duration::from_millis(250),
    max_retry: Duration::from_secs(4),
};

/// Follows the dispatcher's status stream at `target` forever, reconnecting with backoff.
pub async fn status_feed(target: String, tx: mpsc::Sender<Update>) {
    let mut follower = StatusFollower::new(&target, FOLLOW);
    loop {
        let update = match follower.next().await {
            Followed::Connecting => Update::Connecting,
            Followed::Up(status) => Update::Status(status),
            Followed::Down {
                reason,
                attempt,
                retry_in,
            } => Update::StreamDown {
                error: reason,
                attempt,
                retry_in_ms: retry_in.as_millis() as u64,
            },
        };
        if tx.send(update).await.is_err() {
            return;
        }
    }
}

fn control_client(address: &str) -> Result<ClusterControlClient<Channel>, String> {
    let endpoint = cachew_proto::endpoint(address).map_err(|e| e.to_string())?;
    Ok(ClusterControlClient::new(endpoint.connect_lazy()))
}

/// Polls cluster control's node list every [`NODES_INTERVAL`] at whatever address `address`
/// holds (none: idle until one is known).
pub async fn control_feed(mut address: watch::Receiver<Option<String>>, tx: mpsc::Sender<Update>) {
    let mut client: Option<(String, ClusterControlClient<Channel>)> = None;
    loop {
        let current = address.borrow_and_update().clone();
        let Some(addr) = current else {
            client = None;
            if address.changed().await.is_err() {
                return;
            }
            continue;
        };
        if client.as_ref().is_none_or(|(a, _)| *a != addr) {
            client = match control_client(&addr) {
                Ok(c) => Some((addr.clone(), c)),
                Err(e) => {
                    if tx.send(Update::ControlUnreachable(e)).await.is_err() {
                        return;
                    }
                    None
                }
            };
        }
        if let Some((_, c)) = &mut client {
            let update =
                match tokio::time::timeout(LIST_TIMEOUT, c.list_nodes(v1::ListNodesRequest {}))
                    .await
                {
                    Ok(Ok(r)) => Update::Nodes(r.into_inner().nodes),
                    Ok(Err(status)) => Update::ControlUnreachable(status_reason(&status)),
                    Err(_) => Update::ControlUnreachable(format!(
                        "no answer in {} s",
                        LIST_TIMEOUT.as_secs()
                    )),
                };
            if tx.send(update).await.is_err() {
                return;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(NODES_INTERVAL) => {}
            changed = address.changed() => if changed.is_err() { return },
        }
    }
}

/// Sends `command` to the control endpoint at `address`; the answer as an update.
pub async fn act(address: String, command: ActCommand) -> Update {
    let label = command.label.clone();
    let result = async {
        let mut client = control_client(&address)?;
        let request = command.targets.request(command.action);
        match tokio::time::timeout(ACT_TIMEOUT, client.act(request)).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(status)) => Err(status_reason(&status)),
            Err(_) => Err(format!("no answer in {} s", ACT_TIMEOUT.as_secs())),
        }
    }
    .await;
    Update::ActDone { label, result }
}

/// Asks the dispatcher at `dispatcher` to drain worker `worker_id`; the answer as an update.
pub async fn drain(dispatcher: String, worker_id: u64, label: String) -> Update {
    let request = v1::DrainWorkerRequest {
        worker_id,
        address: String::new(),
    };
    let result = cachew_cluster::control::drain_worker(&dispatcher, request, ACT_TIMEOUT).await;
    Update::DrainDone { label, result }
}

/// Lists (worker address, checkpoint directory) for the checkpoint watcher.
pub type CheckpointDirs =
    std::sync::Arc<dyn Fn() -> Vec<(String, std::path::PathBuf)> + Send + Sync>;

/// Watches a run directory (with `notify`) and, whenever something in it changes (and at least
/// every 2 s), reads each worker's checkpoint summary marker, so the checkpoint panel keeps
/// moving while the dispatcher is down. Reading the marker never touches the worker's store.
pub async fn checkpoint_feed(
    run_dir: std::path::PathBuf,
    dirs: CheckpointDirs,
    tx: mpsc::Sender<Update>,
) {
    use notify::Watcher;
    let (changed_tx, mut changed) = mpsc::channel::<()>(1);
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = changed_tx.try_send(());
        }
    })
    .and_then(|mut w| {
        w.watch(&run_dir, notify::RecursiveMode::Recursive)
            .map(|()| w)
    });
    let _watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(
                "cannot watch {}: {e}; polling checkpoints every 2 s",
                run_dir.display()
            );
            None
        }
    };
    loop {
        tokio::select! {
            _ = changed.recv() => {}
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        // Checkpoints come in bursts of file events: read once per burst.
        tokio::time::sleep(Duration::from_millis(150)).await;
        while changed.try_recv().is_ok() {}
        let dirs = dirs.clone();
        let rows = tokio::task::spawn_blocking(move || {
            dirs()
                .into_iter()
                .filter_map(|(address, dir)| {
                    let s = cachew_store::CheckpointStore::peek(&dir).ok()??;
                    Some((
                        address,
                        v1::CheckpointInfo {
                            count: s.count,
                            last_unix_ms: s.unix_ms,
                            last_bytes: s.payload_bytes,
                            last_duration_us: s.duration_us,
                        },
                    ))
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        if !rows.is_empty()
            && tx
                .send(Update::Checkpoints {
                    source: CheckpointSource::Directory,
                    rows,
                })
                .await
                .is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dead_dispatcher_is_reported_down_and_retried() {
        // A port nothing listens on.
        let port = cachew_cluster::free_port().unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let feed = tokio::spawn(status_feed(format!("127.0.0.1:{port}"), tx));
        let mut downs = Vec::new();
        while downs.len() < 2 {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
                Ok(Some(Update::StreamDown {
                    attempt,
                    retry_in_ms,
                    error,
                })) => downs.push((attempt, retry_in_ms, error)),
                Ok(Some(_)) => {}
                other => panic!("feed stopped: {other:?}"),
            }
        }
        assert_eq!(downs[0].0, 1);
        assert_eq!(downs[1].0, 2);
        assert!(downs[1].1 > downs[0].1, "backoff grows: {downs:?}");
        assert!(!downs[0].2.is_empty());
        drop(rx);
        // With the receiver gone the feed ends by itself.
        tokio::time::timeout(Duration::from_secs(10), feed)
            .await
            .unwrap()
            .unwrap();
    }
}
