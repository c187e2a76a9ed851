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
use tonic::Code;

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
    // Admissions of an earlier registration hold leases the dispatcher voided.
    engine.admissions().clear();
    // The dispatcher answered a `draining` heartbeat: this worker's splits moved.
    let mut drain_heard = false;
    loop {
        let draining = drain.is_requested();
        if draining {
            lifecycle.draining();
            // A draining worker hands its splits over: none it has not started is kept.
            engine.admissions().clear();
        }
        // Tasks being prepared (or refused) count as held: otherwise the dispatcher would
        // answer every heartbeat at once with their assignment again.
        // Admissions first: a task that moves to the engine meanwhile is then in the engine's
        // reports (it is added there before it leaves the admissions), never in neither.
        let mut admitted = engine.admissions().reports();
        let running = engine.reports();
        admitted.retain(|a| !running.iter().any(|r| r.key == a.key));
        let tasks: Vec<v1::TaskProgress> = running
            .iter()
            .chain(&admitted)
            .map(report_to_wire)
            .collect();
        let left = draining && drain_heard && tasks.is_empty();
        // Reports travel at least once: a heartbeat that does not come back puts them back.
        let cache_reports = engine.take_cache_reports();
        let req = v1::WorkerHeartbeatRequest {
            cache: cache_reports.clone(),
            worker_id,
            tasks,
            free_slots: if draining { 0 } else { free_slots(engine) },
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
                        if free_slots(engine) > free {
                            break None;
                        }
                    }
                    // Tasks become idle with time (their clients stopped reading): their slots
                    // are free for other jobs without waiting for the long poll to end.
                    _ = tokio::time::sleep(IDLE_CHECK) => {
                        if free_slots(engine) > free {
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
            engine.admissions().clear();
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
            engine.admissions().forget(&key, d.lease);
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
            if engine.has_task(&spec.key, spec.lease) || !engine.admissions().begin(&spec) {
                continue;
            }
            // Prepare in the background so heartbeats keep flowing while a large dataset is
            // indexed.
            let (client, cache, engine, drain, me) = (
                client.clone(),
                cache.clone(),
                engine.clone(),
                drain.clone(),
                address.to_string(),
            );
            tokio::spawn(async move { admit(client, (&cache, &engine, &drain), &me, spec).await });
        }
    }
}

/// The engine's free slots less the admitted tasks' (`Admissions::slots`).
fn free_slots(engine: &Engine) -> u32 {
    engine
        .free_slots()
        .saturating_sub(engine.admissions().slots()) as u32
}

/// The longest pause between two attempts to prepare a task after a transient failure.
const PREPARE_RETRY_CAP: Duration = Duration::from_secs(10);

/// Attempts to prepare a task before a transient failure is taken as final (about 70 s with the
/// backoff): a file that stays unreadable ends the job with the reason instead of stalling it.
const PREPARE_ATTEMPTS: u32 = 12;

/// Prepares an admitted task's dataset and hands the task to the engine. A transient failure
/// (the dispatcher or a file unreachable) is retried with backoff while the task stays admitted,
/// up to [`PREPARE_ATTEMPTS`]; a final one ([`WorkerError::Refused`]), or the last attempt's,
/// refuses the task: its client is told why, naming this worker (`me`).
async fn admit(
    mut client: DispatcherClient<Channel>,
    (cache, engine, drain): (&Arc<PreparedCache>, &Engine, &Drain),
    me: &str,
    spec: TaskSpec,
) {
    let (key, lease) = (spec.key, spec.lease);
    let mut backoff = Backoff::new(Duration::from_millis(200), PREPARE_RETRY_CAP);
    loop {
        if drain.is_requested() {
            engine.admissions().finish(&key, lease);
            return; // a draining worker takes no new task
        }
        let prepared = prepare(&mut client, cache, &spec.dataset_id).await;
        if !engine.admissions().is_preparing(&key, lease) {
            return; // dropped or replaced meanwhile
        }
        let prepared = match prepared {
            Err(e)
                if !matches!(e, WorkerError::Refused(_))
                    && backoff.attempts() + 1 >= PREPARE_ATTEMPTS =>
            {
                Err(WorkerError::Refused(format!(
                    "{e} (gave up after {PREPARE_ATTEMPTS} attempts)"
                )))
            }
            other => other,
        };
        match prepared {
            // A drain that started meanwhile takes no new task.
            Ok(_) if drain.is_requested() => {}
            Ok(p) => engine.add_task(spec, p),
            Err(e @ WorkerError::Refused(_)) => {
                tracing::error!(dataset = %spec.dataset_id, ?key, lease, "task refused: {e}");
                let reason = format!("worker {me}: {e}");
                engine.admissions().refuse(&key, lease, reason);
                // Fetches waiting for the task to arrive hear the refusal now.
                engine.wake_fetches();
                return;
            }
            Err(e) => {
                let delay = backoff.next_delay();
                if backoff.attempts() == 1 || backoff.attempts().is_multiple_of(10) {
                    tracing::warn!(
                        dataset = %spec.dataset_id,
                        attempts = backoff.attempts(),
                        "cannot prepare dataset: {e}; retrying in {delay:?}"
                    );
                }
                tokio::time::sleep(delay).await;
                continue;
            }
        }
        engine.admissions().finish(&key, lease);
        return;
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
        .map_err(|s| match s.code() {
            // The dispatcher does not know the dataset, or refuses it: asking again will not help.
            Code::NotFound | Code::InvalidArgument | Code::FailedPrecondition => {
                WorkerError::Refused(format!(
                    "dataset {dataset_id}: the dispatcher answered: {}",
                    s.message()
                ))
            }
            _ => WorkerError::Dispatcher(s.message().to_string()),
        })?
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
        } = OpenedSpec::from_json_under(&spec_json, &bounds.data_root).map_err(|e| {
            // A file that cannot be read now may be readable later (a network file system);
            // a spec or a file that is wrong stays wrong.
            if e.is_io() {
                WorkerError::Pipeline(format!("dataset {id}: {e}"))
            } else {
                WorkerError::Refused(format!("dataset {id} refused: {e}"))
            }
        })?;
        if found != id {
            return Err(WorkerError::Refused(format!(
                "dataset {id} has fingerprint {found} on this host: the files differ from the dispatcher's"
            )));
        }
        let pipeline = Pipeline::new(spec)
            .map_err(|e| WorkerError::Refused(format!("dataset {id}: {e}")))?
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
