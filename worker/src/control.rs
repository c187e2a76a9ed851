//! The worker's control loop: registers with the dispatcher, heartbeats progress and free slots,
//! takes new tasks (preparing their datasets) and drops the ones the dispatcher says to drop.
//! Re-registers when the dispatcher does not know this worker (declared dead, or restarted).
//! While draining (`drain.rs`) it takes no task, says `draining`, and ends once it said `left`.

use std::sync::Arc;
use std::time::Duration;

use cachew_pipeline::exec::plan_for;
use cachew_pipeline::{OpenedSpec, Pipeline};
use cachew_proto::Channel;
use cachew_proto::backoff::Backoff;
use cachew_proto::{DispatcherClient, names, v1};

use crate::WorkerError;
use crate::checkpoint::{SharedInfo, TaskCheckpoint};
use crate::disk::DiskAlarm;
use crate::drain::{Drain, Origin};
use crate::engine::{Engine, Prepared, PreparedCache, TaskKey, TaskReport, TaskSpec};
use crate::ledger::Discard;
use crate::metrics::Lifecycle;

/// How the control loop reaches the dispatcher and presents this worker.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    pub dispatcher: String,
    /// Address clients use to reach this worker.
    pub advertise: String,
    pub standby: bool,
    /// How long to keep trying to reach the dispatcher at start-up before giving up.
    pub connect_timeout: Duration,
}

pub(crate) async fn connect(
    dispatcher: &str,
    timeout: Duration,
) -> Result<DispatcherClient<Channel>, WorkerError> {
    let backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
    Ok(cachew_proto::connect_dispatcher(dispatcher, timeout, backoff).await?)
}

fn report_to_wire(r: &TaskReport) -> v1::TaskProgress {
    v1::TaskProgress {
        key: Some(r.key.into()),
        lease: r.lease,
        split: r.split,
        produced: r.produced,
        acked: r.acked,
        len: r.len,
        idle: r.idle,
    }
}

/// How long connecting may take before `/readyz` says the dispatcher is unreachable.
const UNREACHABLE_AFTER: Duration = Duration::from_secs(1);

/// How often a heartbeat in flight checks whether idle tasks freed slots.
const IDLE_CHECK: Duration = Duration::from_millis(250);

/// What the control loop works with besides its configuration.
#[derive(Debug)]
pub struct ControlParts {
    pub engine: Engine,
    pub cache: Arc<PreparedCache>,
    pub restored: Vec<TaskCheckpoint>,
    pub checkpoint: SharedInfo,
    pub disks: Vec<Arc<DiskAlarm>>,
    pub drain: Drain,
    /// Readiness and the registered / draining gauges.
    pub lifecycle: Lifecycle,
}

/// Runs until the worker has drained: register, then heartbeat. Returns once the dispatcher
/// heard `left`, or at once when a drain starts before this worker registered (it holds
/// nothing to hand over).
pub async fn control_loop(config: ControlConfig, parts: ControlParts) -> Result<(), WorkerError> {
    let ControlParts {
        engine,
        cache,
        mut restored,
        checkpoint,
        disks,
        drain,
        lifecycle,
    } = parts;
    let connecting = connect(&config.dispatcher, config.connect_timeout);
    tokio::pin!(connecting);
    let mut slow = false;
    let mut client = loop {
        tokio::select! {
            c = &mut connecting => break c?,
            _ = drain.requested() => return Ok(()),
            // Still no answer after a while: say why this worker is not ready.
            _ = tokio::time::sleep(UNREACHABLE_AFTER), if !slow => {
                slow = true;
                lifecycle.unreachable();
            }
        }
    };
    loop {
        if drain.is_requested() {
            return Ok(());
        }
        lifecycle.registering();
        let registered = register(&mut client, &config, &engine, &mut restored, &cache).await;
        let (worker_id, incarnation, interval) = match registered {
            Ok(r) => r,
            Err(status) if cachew_proto::auth::is_refusal(&status) => {
                return Err(WorkerError::Dispatcher(format!(
                    "the dispatcher at {} refused to register this worker (check --token-file \
                     and the TLS certificates): {}",
                    config.dispatcher,
                    status.message()
                )));
            }
            Err(e) => {
                lifecycle.unreachable();
                tracing::warn!("registration failed: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        tracing::info!(worker_id, incarnation, address = %config.advertise, standby = config.standby, "registered with dispatcher {}", config.dispatcher);
        lifecycle.registered();
        let ended = heartbeat_loop(
            &mut client,
            &engine,
            &cache,
            Registration {
                worker_id,
                incarnation,
                interval,
                address: &config.advertise,
            },
            &checkpoint,
            &disks,
            (&drain, &lifecycle),
        )
        .await;
        match ended {
            Ended::Left => return Ok(()),
            Ended::Refused(reason) => {
                return Err(WorkerError::Dispatcher(format!(
                    "the dispatcher at {} refused this worker's heartbeat (check --token-file \
                     and the TLS certificates): {reason}",
                    config.dispatcher
                )));
            }
            Ended::Reregister => {}
        }
        tracing::warn!(
            worker_id,
            "the dispatcher asked this worker to register again"
        );
    }
}

async fn register(
    client: &mut DispatcherClient<Channel>,
    config: &ControlConfig,
    engine: &Engine,
    restored: &mut Vec<TaskCheckpoint>,
    cache: &Arc<PreparedCache>,
) -> Result<(u64, u64, Duration), tonic::Status> {
    let mut tasks: Vec<v1::TaskProgress> = engine.reports().iter().map(report_to_wire).collect();
    tasks.extend(restored.iter().map(TaskCheckpoint::progress));
    let resp = client
        .register_worker(v1::RegisterWorkerRequest {
            address: config.advertise.clone(),
            standby: config.standby,
            tasks,
            threads: engine.config().threads as u32,
            worker_id: 0,
        })
        .await?
        .into_inner();
    // Resume the restored tasks the dispatcher still gives us, at their delivered position.
    let kept = |key: TaskKey| resp.kept.iter().any(|&k| TaskKey::from(k) == key);
    for t in std::mem::take(restored) {
        if !kept(t.key) {
            tracing::info!(
                key = ?t.key,
                "checkpointed task is no longer this worker's (delivered or reassigned meanwhile); dropped"
            );
            continue;
        }
        let spec = match t.spec() {
            Ok(spec) => spec,
            Err(e) => {
                tracing::warn!(key = ?t.key, "checkpointed task not resumed: {e}");
                continue;
            }
        };
        match prepare(client, cache, &spec.dataset_id).await {
            Ok(p) => {
                tracing::info!(key = ?t.key, at = t.acked, "recovered task from the checkpoint");
                engine.add_task(spec, p);
            }
            Err(e) => {
                tracing::error!(dataset = %spec.dataset_id, "cannot prepare a recovered task: {e}")
            }
        }
    }
    // Keep only the tasks the dispatcher still gives us.
    for r in engine.reports() {
        if !kept(r.key) {
            engine.drop_task(&r.key, r.lease);
        }
    }
    Ok((
        resp.worker_id,
        resp.incarnation,
        Duration::from_millis(resp.heartbeat_interval_ms.max(10)),
    ))
}

/// Who this worker is for the dispatcher, after registering.
#[derive(Debug, Clone, Copy)]
struct Registration<'a> {
    worker_id: u64,
    incarnation: u64,
    interval: Duration,
    address: &'a str,
}

/// Why [`heartbeat_loop`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ended {
    /// The dispatcher refused this worker's credentials: final.
    Refused(String),
    /// The dispatcher does not know this worker (any more): register again.
    Reregister,
    /// Drained: the dispatcher heard `left` (or no longer knows this draining worker).
    Left,
}

/// Heartbeats until the dispatcher asks for re-registration or the drain is done.
async fn heartbeat_loop(
    client: &mut DispatcherClient<Channel>,
    engine: &Engine,
    cache: &Arc<PreparedCache>,
    me: Registration<'_>,
    checkpoint: &SharedInfo,
    disks: &[Arc<DiskAlarm>],
    (drain, lifecycle): (&Drain, &Lifecycle),
) -> Ended {
    let Registration {
        worker_id,
        incarnation,
        interval,
        address,
    } = me;
    let mut failures = 0u32;
    let pending = Arc::new(Pending::default());
    // The dispatcher answered a `draining` heartbeat: this worker's splits moved.
    let mut drain_heard = false;
    loop {
        let draining = drain.is_requested();
        if draining {
            lifecycle.draining();
        }
        let tasks: Vec<v1::TaskProgress> = engine.reports().iter().map(report_to_wire).collect();
        let left = draining && drain_heard && tasks.is_empty();
        // Reports travel at least once: a heartbeat that does not come back puts them back.
        let cache_reports = engine.take_cache_reports();
        let req = v1::WorkerHeartbeatRequest {
            cache: cache_reports.clone(),
            worker_id,
            tasks,
            free_slots: if draining {
                0
            } else {
                engine.free_slots() as u32
            },
            wait_ms: if draining {
                0
            } else {
                interval.as_millis() as u64
            },
            checkpoint: *checkpoint.lock().unwrap_or_else(|p| p.into_inner()),
            incarnation,
            elements_produced: engine.elements_produced(),
            address: address.to_string(),
            disks: engine
                .disk_conditions()
                .into_iter()
                .chain(disks.iter().filter_map(|d| d.condition()))
                .collect(),
            draining,
            left,
        };
        let free = req.free_slots;
        let result = {
            let call = tokio::time::timeout(
                interval * 4 + Duration::from_secs(1),
                client.worker_heartbeat(req),
            );
            tokio::pin!(call);
            loop {
                tokio::select! {
                    r = &mut call => break Some(r),
                    // A slot freed while the dispatcher holds our long poll: ask again at once.
                    _ = engine.slot_freed(), if !draining => {
                        if engine.free_slots() as u32 > free {
                            break None;
                        }
                    }
                    // Tasks become idle with time (their clients stopped reading): their slots
                    // are free for other jobs without waiting for the long poll to end.
                    _ = tokio::time::sleep(IDLE_CHECK) => {
                        if engine.free_slots() as u32 > free {
                            break None;
                        }
                    }
                    // A drain started while the dispatcher holds our long poll: say so now.
                    _ = drain.requested(), if !draining => break None,
                }
            }
        };
        if !matches!(result, Some(Ok(Ok(_)))) {
            engine.put_back_cache_reports(cache_reports);
        }
        let Some(result) = result else { continue };
        let resp = match result {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(status)) if cachew_proto::auth::is_refusal(&status) => {
                lifecycle.unreachable();
                return Ended::Refused(status.message().to_string());
            }
            Ok(Err(status)) => {
                lifecycle.unreachable();
                failures += 1;
                if failures == 1 || failures.is_multiple_of(20) {
                    tracing::warn!(
                        "heartbeat failed ({failures} in a row): {}",
                        status.message()
                    );
                }
                tokio::time::sleep(interval.min(Duration::from_millis(200))).await;
                continue;
            }
            Err(_) => {
                lifecycle.unreachable();
                failures += 1;
                tracing::warn!("heartbeat timed out ({failures} in a row)");
                continue;
            }
        };
        if failures > 0 {
            tracing::info!("heartbeats to the dispatcher work again after {failures} failure(s)");
            failures = 0;
            lifecycle.registered();
        }
        if resp.reregister {
            // The dispatcher no longer counts this worker alive (declared dead, or restarted
            // without it): every lease it held is void, its tasks fenced.
            engine.drop_all(crate::ledger::Discard::Fenced);
            // A draining worker the dispatcher no longer knows has nothing to hand over.
            return if draining {
                Ended::Left
            } else {
                Ended::Reregister
            };
        }
        if resp.drain {
            if drain.request(Origin::Dispatcher) {
                tracing::warn!(worker_id, "the dispatcher asked this worker to drain");
            }
            if left {
                tracing::info!(worker_id, "drained: the dispatcher knows this worker left");
                return Ended::Left;
            }
            drain_heard = draining;
        }
        for d in resp.dropped {
            let Some(key) = d.key.map(TaskKey::from) else {
                continue;
            };
            let discard = if d.reason() == v1::DropReason::Fenced {
                tracing::warn!(
                    ?key,
                    lease = d.lease,
                    "task fenced: another worker owns it now"
                );
                Discard::Fenced
            } else {
                let reason = names::label::<v1::DropReason>(d.reason);
                tracing::debug!(?key, %reason, "task dropped");
                Discard::Dropped
            };
            engine.drop_task_for(&key, d.lease, discard);
        }
        if drain.is_requested() {
            if !resp.new_tasks.is_empty() {
                tracing::info!(count = resp.new_tasks.len(), "draining: new tasks refused");
            }
            if drain_heard && !engine.reports().is_empty() {
                // Tasks still held (one was being prepared): ask again shortly.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            continue;
        }
        for t in resp.new_tasks {
            let spec = match TaskSpec::from_def(t) {
                Ok(spec) => spec,
                Err(e) => {
                    tracing::error!("task refused: {e}");
                    continue;
                }
            };
            if engine.has_task(&spec.key, spec.lease) || !pending.insert((spec.key, spec.lease)) {
                continue;
            }
            // Prepare in the background so heartbeats keep flowing while a large dataset is
            // indexed.
            let (mut client, cache, engine, pending, drain) = (
                client.clone(),
                cache.clone(),
                engine.clone(),
                pending.clone(),
                drain.clone(),
            );
            tokio::spawn(async move {
                match prepare(&mut client, &cache, &spec.dataset_id).await {
                    // A drain that started meanwhile takes no new task.
                    Ok(_) if drain.is_requested() => {}
                    Ok(p) => engine.add_task(spec.clone(), p),
                    Err(e) => {
                        tracing::error!(dataset = %spec.dataset_id, "cannot prepare dataset: {e}")
                    }
                }
                pending.remove((spec.key, spec.lease));
            });
        }
    }
}

/// Tasks being prepared, so a repeated assignment does not prepare twice.
#[derive(Debug, Default)]
struct Pending(std::sync::Mutex<std::collections::HashSet<(TaskKey, u64)>>);

impl Pending {
    fn insert(&self, k: (TaskKey, u64)) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(k)
    }
    fn remove(&self, k: (TaskKey, u64)) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(&k);
    }
}

/// Loads (once) the pipeline and index of a dataset.
pub(crate) async fn prepare(
    client: &mut DispatcherClient<Channel>,
    cache: &Arc<PreparedCache>,
    dataset_id: &str,
) -> Result<Arc<Prepared>, WorkerError> {
    if let Some(p) = cache.get(dataset_id) {
        return Ok(p);
    }
    let gate = cache.gate(dataset_id);
    let _preparing = gate.lock().await;
    // Another task of the same dataset may have prepared it while this one waited.
    if let Some(p) = cache.get(dataset_id) {
        return Ok(p);
    }
    let spec_json = client
        .get_dataset(v1::GetDatasetRequest {
            dataset_id: dataset_id.to_string(),
        })
        .await
        .map_err(|s| WorkerError::Dispatcher(s.message().to_string()))?
        .into_inner()
        .spec_json;
    let id = dataset_id.to_string();
    let bounds = cache.bounds().clone();
    let prepared = tokio::task::spawn_blocking(move || -> Result<Prepared, WorkerError> {
        // A spec naming a file outside the data root is refused before any file is opened.
        let OpenedSpec {
            spec,
            dataset,
            id: found,
        } = OpenedSpec::from_json_under(&spec_json, &bounds.data_root)
            .map_err(|e| WorkerError::Pipeline(format!("dataset {id} refused: {e}")))?;
        if found != id {
            return Err(WorkerError::Pipeline(format!(
                "dataset {id} has fingerprint {found} on this host: the files differ from the dispatcher's"
            )));
        }
        let pipeline = Pipeline::new(spec)
            .map_err(|e| WorkerError::Pipeline(e.to_string()))?
            .with_max_decode_pixels(bounds.max_decode_pixels);
        let plan = plan_for(&pipeline, &dataset);
        Ok(Prepared { pipeline, dataset, plan })
    })
    .await
    .map_err(|e| WorkerError::Pipeline(e.to_string()))??;
    let prepared = Arc::new(prepared);
    cache.insert(dataset_id, prepared.clone());
    tracing::info!(
        dataset = dataset_id,
        records = prepared.dataset.num_records(),
        "dataset prepared"
    );
    Ok(prepared)
}
