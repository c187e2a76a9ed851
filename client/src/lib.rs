//! `cachew-client`: the training-side library. It registers (or joins) a job with the
//! dispatcher, fetches splits from the workers that serve them, merges them into the canonical
//! epoch order, batches, and hands the application each example exactly once.
//!
//! # Layout
//! - [`JobClient`]: the async client (`next()` yields batches and epoch ends) and
//!   [`BlockingClient`], a blocking iterator over it.
//! - [`fetch`]: per-split fetchers that follow a split across owners.
//! - [`cli`]: the `cachew-client` consumer binary (hash log, verdicts, throughput).
//! - [`leave`]: [`JobClient::leave`], releasing the consumer on every way out.
//! - [`metrics`]: [`ClientMetrics`] (what a trainer exports) and the time spent waiting for data.
//! - `heartbeat`: the consumer's reports to the dispatcher and the split locations it learns.
//!
//! Guarantees: elements are yielded strictly in the consumer's sequence (splits in epoch order,
//! indices in split order); an element whose identity is not the one due is an error, never a
//! silent duplicate or gap. Memory is bounded by `prefetch_splits x split_buffer` elements.

pub mod cli;
pub mod cursor;
mod disks;
pub mod fetch;
mod heartbeat;
pub mod leave;
pub mod metrics;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cachew_pipeline::order::ConsumerSlot;
use cachew_pipeline::{
    Batch, Batcher, ConsumerOrder, Element, ElementBody, PipelineSpec, SplitPlan,
};
use cachew_proto::Channel;
use cachew_proto::backoff::Backoff;
use cachew_proto::{ConnectError, DispatcherClient, v1};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, watch};

pub use disks::DiskReporter;
use fetch::{Locations, SplitJob, WorkerPool, fetch_split};
use heartbeat::{Reporting, heartbeat_loop, heartbeat_request};
pub use metrics::ClientMetrics;
use metrics::{JobMetrics, WaitClock};

/// The place inside a [`ClientCursor`] (the dispatcher keeps the same type).
pub use cachew_pipeline::ConsumerCursor;

/// Errors of the client library. Each is final and one a person can act on: transport
/// failures and whatever a worker or the dispatcher says about its own state are retried inside
/// the client (following a split to its new owner), never returned once the job is attached.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The dispatcher could not be reached within `connect_timeout` at start-up.
    #[error("{0}")]
    Unreachable(String),
    /// The dispatcher refused the request itself (a bad spec, a job that conflicts).
    #[error("the dispatcher refused: {0}")]
    Refused(String),
    /// A peer answered something the protocol does not allow (wrong element, wrong plan).
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A record failed the pipeline under `on_error = "fail"`, as the worker's typed
    /// [`v1::FetchFailure`] says: deterministic, so no other worker could do better.
    #[error("the pipeline failed on a worker: {0}")]
    Pipeline(String),
    #[error("another client took over this consumer")]
    Superseded,
    /// A server refused this client's token or certificate (`Unauthenticated`,
    /// `PermissionDenied`): final, no retry can change it.
    #[error("refused this client's credentials: {0}")]
    CredentialsRefused(String),
    #[error("bad configuration: {0}")]
    Config(String),
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub dispatcher: String,
    pub job_name: String,
    /// The pipeline, loaded and resolved (its canonical form is sent to the dispatcher).
    pub spec: PipelineSpec,
    pub seed: u64,
    /// 0 = unbounded.
    pub num_epochs: u64,
    pub num_consumers: u32,
    pub consumer_index: Option<u32>,
    /// How long to keep trying to reach the dispatcher at start-up.
    pub connect_timeout: Duration,
    /// Splits fetched concurrently ahead of the one being consumed.
    pub prefetch_splits: usize,
    /// Elements buffered per split in the client.
    pub split_buffer: usize,
    /// Elements per fetch request.
    pub fetch_elements: u32,
    /// Resume a consumer where a saved cursor says.
    pub resume: Option<ClientCursor>,
    /// How the job uses the cache of its pipeline's prefix: compute, put, get or auto.
    pub cache_policy: v1::CacheMode,
    /// Where the client counts (see [`metrics`]): the trainer's own, registered once on its
    /// exporter, or `None` for one on a private exporter ([`JobClient::metrics`]).
    pub metrics: Option<ClientMetrics>,
}

impl ClientConfig {
    pub fn new(
        dispatcher: impl Into<String>,
        job_name: impl Into<String>,
        spec: PipelineSpec,
    ) -> ClientConfig {
        let seed = spec.seed;
        ClientConfig {
            dispatcher: dispatcher.into(),
            job_name: job_name.into(),
            spec,
            seed,
            num_epochs: 1,
            num_consumers: 1,
            consumer_index: None,
            connect_timeout: Duration::from_secs(60),
            prefetch_splits: 8,
            split_buffer: 64,
            fetch_elements: 16,
            resume: None,
            cache_policy: v1::CacheMode::Compute,
            metrics: None,
        }
    }
}

/// Where a consumer stands, at a batch boundary: what a trainer saves with its model checkpoint.
/// Its place is the [`ConsumerCursor`] the dispatcher keeps too; it is flattened in the JSON form
/// (which the cursor file holds), so that form is the one it always was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientCursor {
    pub consumer_index: u32,
    /// The epoch, the n-th of this consumer's splits in it, and the index within that split of
    /// the next element to deliver.
    #[serde(flatten)]
    pub at: ConsumerCursor,
    /// Examples delivered in this epoch before the cursor.
    pub examples: u64,
    /// Batches delivered in this epoch before the cursor.
    pub batches: u64,
}

/// End-of-epoch figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochSummary {
    pub epoch: u64,
    pub examples: u64,
    pub batches: u64,
    pub skipped: u64,
    pub elapsed: Duration,
}

/// What the client yields.
#[derive(Debug, Clone)]
pub enum ClientEvent {
    Batch(Batch),
    EpochEnd(EpochSummary),
}

/// One split being fetched.
#[derive(Debug)]
struct InFlight {
    epoch: u64,
    ordinal: u32,
    len: u32,
    next: u32,
    rx: mpsc::Receiver<Result<Vec<Element>, ClientError>>,
    pending: VecDeque<Element>,
    task: tokio::task::JoinHandle<()>,
    /// Counts what this split's channel still holds when it is dropped unread (as received
    /// and discarded) and what its taken buffer still holds (discarded).
    received: cachew_metrics::prometheus::IntCounter,
    discarded: cachew_metrics::prometheus::IntCounter,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.task.abort();
        // Closed first: a fetcher still running then fails to send (and counts its answer as
        // received and discarded itself), or, if it already held a slot, its answer is dropped
        // with the channel uncounted: never received by this client.
        self.rx.close();
        let mut drained = 0;
        while let Ok(message) = self.rx.try_recv() {
            drained += message.map_or(0, |elements| elements.len());
        }
        self.received.inc_by(drained as u64);
        self.discarded.inc_by((drained + self.pending.len()) as u64);
    }
}

/// The async client of one consumer of one job.
#[derive(Debug)]
pub struct JobClient {
    config: ClientConfig,
    job_id: u64,
    consumer: u32,
    generation: u64,
    /// This consumer's sequence of positions (one per split it reads), epoch after epoch.
    order: ConsumerOrder,
    plan: SplitPlan,
    split_orders: BTreeMap<u64, Arc<Vec<u32>>>,
    /// The next element to consume.
    head_cursor: ClientCursor,
    /// The cursor after the last batch handed out.
    delivered: ClientCursor,
    in_flight: VecDeque<InFlight>,
    batcher: Batcher,
    epoch_started: Instant,
    pool: WorkerPool,
    locations: watch::Receiver<Locations>,
    reporting: Reporting,
    metrics: ClientMetrics,
    counts: JobMetrics,
    /// Blocked on fetched data, and assembling, since the last batch handed out.
    batch_wait: Duration,
    batching: Duration,
    /// Examples in the batcher not yet handed out in a batch.
    undelivered: u64,
    poke: Arc<Notify>,
    heartbeat: tokio::task::JoinHandle<()>,
    dispatcher: DispatcherClient<Channel>,
    finished: bool,
    pending_epoch_end: Option<EpochSummary>,
    total_examples: u64,
}

impl Drop for JobClient {
    fn drop(&mut self) {
        self.heartbeat.abort();
        self.ended();
    }
}

async fn connect_dispatcher(
    address: &str,
    timeout: Duration,
) -> Result<DispatcherClient<Channel>, ClientError> {
    let backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(500));
    Ok(cachew_proto::connect_dispatcher(address, timeout, backoff).await?)
}

impl From<ConnectError> for ClientError {
    fn from(e: ConnectError) -> ClientError {
        match e {
            ConnectError::BadAddress(e) => ClientError::Config(e.to_string()),
            e @ ConnectError::Unreachable { .. } => ClientError::Unreachable(e.to_string()),
        }
    }
}

fn to_wire(c: &ClientCursor) -> v1::Cursor {
    v1::Cursor::from(c.at)
}

/// A dispatcher's answer: a refusal it means (the request itself is wrong, or conflicts with the
/// job) is final; every other status, whatever its code, may be the transport (a torn stream
/// reports Internal or Unknown) or a dispatcher restarting, and is worth retrying.
fn refused(status: tonic::Status) -> ClientError {
    use tonic::Code;
    match status.code() {
        Code::PermissionDenied | Code::Unauthenticated => {
            ClientError::CredentialsRefused(format!("the dispatcher: {}", status.message()))
        }
        Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::Unimplemented => ClientError::Refused(status.message().to_string()),
        _ => ClientError::Unreachable(status.message().to_string()),
    }
}

impl JobClient {
    /// Connects (waiting up to `connect_timeout` for the dispatcher), then gets or creates the
    /// job and attaches as a consumer.
    pub async fn connect(config: ClientConfig) -> Result<JobClient, ClientError> {
        if config.prefetch_splits == 0 || config.split_buffer == 0 || config.fetch_elements == 0 {
            return Err(ClientError::Config(
                "prefetch, buffer and fetch sizes must be at least 1".into(),
            ));
        }
        let most = cachew_proto::limits::MAX_FETCH_ELEMENTS;
        if config.fetch_elements > most {
            return Err(ClientError::Config(format!(
                "fetch elements: {} is over the bound {most} (workers refuse larger fetches)",
                config.fetch_elements
            )));
        }
        let most = cachew_proto::limits::MAX_CONSUMERS;
        if config.num_consumers > most {
            return Err(ClientError::Config(format!(
                "num consumers: {} is over the bound {most} (the dispatcher refuses more)",
                config.num_consumers
            )));
        }
        // -1 on the wire asks for the lowest free index: an index past `i32::MAX` (a damaged
        // cursor file) must not turn into that request.
        let consumer_index = match config
            .resume
            .map(|c| c.consumer_index)
            .or(config.consumer_index)
        {
            None => -1,
            Some(c) => i32::try_from(c).map_err(|_| {
                ClientError::Config(format!(
                    "consumer index {c} is past the largest the protocol carries ({})",
                    i32::MAX
                ))
            })?,
        };
        let metrics = config
            .metrics
            .clone()
            .unwrap_or_else(|| ClientMetrics::register(&cachew_metrics::Exporter::new("client")));
        metrics.exporter().health().set_not_ready("connecting");
        let deadline = Instant::now() + config.connect_timeout;
        let mut dispatcher = connect_dispatcher(&config.dispatcher, config.connect_timeout).await?;
        let resume = config.resume;
        let req = v1::GetOrCreateJobRequest {
            job_name: config.job_name.clone(),
            spec_json: config.spec.to_canonical_json(),
            seed: config.seed,
            num_epochs: config.num_epochs,
            num_consumers: config.num_consumers.max(1),
            consumer_index,
            resume: resume.is_some(),
            cursor: resume.as_ref().map(to_wire),
            cache_policy: config.cache_policy.into(),
        };
        let resp = loop {
            match dispatcher.get_or_create_job(req.clone()).await {
                Ok(r) => break r.into_inner(),
                Err(status) => match refused(status) {
                    ClientError::Unreachable(msg) if Instant::now() < deadline => {
                        tracing::info!("dispatcher not ready ({msg}); retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    e => return Err(e),
                },
            }
        };
        let plan = SplitPlan::new(resp.num_records, resp.split_records, config.spec.shuffle);
        if plan.num_splits() != resp.num_splits {
            return Err(ClientError::Protocol(format!(
                "dispatcher has {} splits, the local plan {}",
                resp.num_splits,
                plan.num_splits()
            )));
        }
        let start = ConsumerCursor::from(resp.cursor.unwrap_or_default());
        let cursor = match resume {
            // Where the dispatcher placed us (a cursor at the end of an epoch is normalized to
            // the start of the next), with the saved counts if that is still the saved epoch.
            Some(c) => {
                let same_epoch = c.at.epoch == start.epoch;
                ClientCursor {
                    at: start,
                    examples: if same_epoch { c.examples } else { 0 },
                    batches: if same_epoch { c.batches } else { 0 },
                    ..c
                }
            }
            None => ClientCursor {
                consumer_index: resp.consumer_index,
                at: start,
                examples: 0,
                batches: 0,
            },
        };
        tracing::info!(
            job = resp.job_id,
            consumer = resp.consumer_index,
            created = resp.created,
            records = resp.num_records,
            splits = resp.num_splits,
            "attached to job `{}` at epoch {} split #{} index {}",
            config.job_name,
            cursor.at.epoch,
            cursor.at.ordinal,
            cursor.at.index
        );
        let (loc_tx, loc_rx) = watch::channel(Locations::default());
        let poke = Arc::new(Notify::new());
        let reporting = Reporting {
            cursor: Arc::new(Mutex::new((cursor, 0))),
            reports: Arc::new(Mutex::new(Vec::new())),
            disks: DiskReporter {
                conditions: Arc::default(),
                poke: poke.clone(),
            },
            wait: Arc::new(WaitClock::default()),
        };
        let counts = metrics.for_job(&config.job_name, &reporting.wait);
        metrics.exporter().health().set_ready();
        let pool = WorkerPool::default();
        let heartbeat = tokio::spawn(heartbeat_loop(
            (dispatcher.clone(), pool.clone()),
            (resp.job_id, resp.consumer_index, resp.consumer_generation),
            reporting.clone(),
            loc_tx,
            poke.clone(),
        ));
        let mut batcher = Batcher::for_spec(&config.spec, cursor.at.epoch);
        batcher.set_next_index(cursor.batches);
        Ok(JobClient {
            job_id: resp.job_id,
            consumer: resp.consumer_index,
            generation: resp.consumer_generation,
            order: ConsumerOrder::new(
                plan.num_splits(),
                resp.consumer_index,
                resp.num_consumers,
                resp.num_epochs,
            ),
            plan,
            split_orders: BTreeMap::new(),
            head_cursor: cursor,
            delivered: cursor,
            in_flight: VecDeque::new(),
            batcher,
            epoch_started: Instant::now(),
            pool,
            locations: loc_rx,
            reporting,
            metrics,
            counts,
            batch_wait: Duration::ZERO,
            batching: Duration::ZERO,
            undelivered: 0,
            poke,
            heartbeat,
            dispatcher,
            finished: false,
            pending_epoch_end: None,
            total_examples: 0,
            config,
        })
    }

    pub fn job_id(&self) -> u64 {
        self.job_id
    }

    pub fn consumer_index(&self) -> u32 {
        self.consumer
    }

    pub fn num_consumers(&self) -> u32 {
        self.order.num_consumers()
    }

    pub fn num_epochs(&self) -> u64 {
        self.order.num_epochs()
    }

    /// Where to report the client's own disks failing (the dispatcher shows them).
    pub fn disks(&self) -> DiskReporter {
        self.reporting.disks.clone()
    }

    /// The metrics this client counts into (see [`metrics`]): serve or encode
    /// `metrics().exporter()`, or pass your own in [`ClientConfig::metrics`].
    pub fn metrics(&self) -> &ClientMetrics {
        &self.metrics
    }

    /// The cursor after the last batch handed out: save it with a model checkpoint and pass it
    /// as [`ClientConfig::resume`] to continue exactly there.
    pub fn cursor(&self) -> ClientCursor {
        self.delivered
    }

    /// Tells the dispatcher (and so the dashboard) how a finished epoch went; the latest
    /// [`cachew_proto::EPOCH_REPORTS_KEPT`] reports travel with every heartbeat until the client
    /// exits.
    pub fn report_epoch(&self, report: v1::EpochReport) {
        self.counts.epoch_reported(&report);
        let mut reports = self
            .reporting
            .reports
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        reports.retain(|r| r.epoch != report.epoch);
        reports.push(report);
        let excess = reports
            .len()
            .saturating_sub(cachew_proto::EPOCH_REPORTS_KEPT);
        reports.drain(..excess);
        drop(reports);
        self.poke.notify_one();
    }

    /// (split, length) at `slot`'s position of its epoch.
    fn split_of(&mut self, slot: ConsumerSlot) -> (u32, u32) {
        let (plan, seed, epoch) = (self.plan, self.config.seed, slot.epoch);
        let order = self
            .split_orders
            .entry(epoch)
            .or_insert_with(|| Arc::new(plan.split_order(seed, epoch)))
            .clone();
        let split = order
            .get(slot.position as usize)
            .copied()
            .unwrap_or(slot.position);
        (split, self.plan.split_len(split))
    }

    /// Starts fetchers for the next splits until `prefetch_splits` are in flight.
    fn fill_window(&mut self) {
        let from = match self.in_flight.back() {
            Some(last) => ConsumerCursor {
                epoch: last.epoch,
                ordinal: last.ordinal + 1,
                index: 0,
            },
            None => self.head_cursor.at,
        };
        let wanted = self
            .config
            .prefetch_splits
            .saturating_sub(self.in_flight.len());
        let head = self.head_cursor.at;
        for slot in self.order.window(from).take(wanted) {
            let ConsumerSlot {
                epoch,
                ordinal,
                position,
            } = slot;
            let (split, len) = self.split_of(slot);
            let start = if (epoch, ordinal) == (head.epoch, head.ordinal) {
                head.index.min(len)
            } else {
                0
            };
            let capacity = self
                .config
                .split_buffer
                .div_ceil(self.config.fetch_elements as usize)
                .max(1);
            let (tx, rx) = mpsc::channel(capacity);
            let task = tokio::spawn(fetch_split(
                SplitJob {
                    job_id: self.job_id,
                    epoch,
                    position,
                    split,
                    len,
                    start,
                    max_elements: self.config.fetch_elements,
                },
                self.pool.clone(),
                self.locations.clone(),
                self.poke.clone(),
                self.counts.clone(),
                tx,
            ));
            self.in_flight.push_back(InFlight {
                epoch,
                ordinal,
                len,
                next: start,
                rx,
                pending: VecDeque::new(),
                task,
                received: self.counts.received.clone(),
                discarded: self.counts.discarded.clone(),
            });
        }
    }

    fn publish_cursor(&self) {
        let mut shared = self
            .reporting
            .cursor
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *shared = (self.head_cursor, self.total_examples);
    }

    /// Ends the current epoch: flushes the last batch and moves to the next epoch.
    fn end_epoch(&mut self) -> Option<Batch> {
        let assembling = Instant::now();
        let last = self.batcher.finish().ok().flatten();
        self.batching += assembling.elapsed();
        let summary = EpochSummary {
            epoch: self.head_cursor.at.epoch,
            // Every example pushed into the batcher is in a batch now.
            examples: self.head_cursor.examples,
            batches: self.batcher.next_index(),
            skipped: self.batcher.skipped(),
            elapsed: self.epoch_started.elapsed(),
        };
        self.total_examples += last.as_ref().map_or(0, |b| b.examples.len() as u64);
        if let Some(b) = &last {
            self.handed_out(b);
        }
        // A dropped remainder (or a batch that failed to assemble) never reaches the trainer.
        self.counts.discarded.inc_by(self.undelivered);
        self.undelivered = 0;
        self.counts.epoch_ended(summary.epoch, summary.elapsed);
        self.head_cursor = ClientCursor {
            consumer_index: self.consumer,
            at: ConsumerCursor {
                epoch: self.head_cursor.at.epoch + 1,
                ordinal: 0,
                index: 0,
            },
            examples: 0,
            batches: 0,
        };
        self.delivered = self.head_cursor;
        let epoch = self.head_cursor.at.epoch;
        self.split_orders.retain(|&e, _| e + 1 >= epoch);
        self.batcher = Batcher::for_spec(&self.config.spec, epoch);
        self.epoch_started = Instant::now();
        self.pending_epoch_end = Some(summary);
        self.publish_cursor();
        self.poke.notify_one();
        last
    }

    /// The next batch or epoch end; `None` when the job has delivered all its epochs.
    pub async fn next(&mut self) -> Result<Option<ClientEvent>, ClientError> {
        loop {
            if let Some(summary) = self.pending_epoch_end.take() {
                return Ok(Some(ClientEvent::EpochEnd(summary)));
            }
            if self.finished {
                return Ok(None);
            }
            if self.locations.borrow().superseded {
                self.metrics.exporter().health().set_not_ready("superseded");
                return Err(ClientError::Superseded);
            }
            if let Some(reason) = self.locations.borrow().refused.clone() {
                return Err(ClientError::CredentialsRefused(reason));
            }
            let num_epochs = self.order.num_epochs();
            if num_epochs > 0 && self.head_cursor.at.epoch >= num_epochs {
                self.finished = true;
                self.metrics.exporter().health().set_not_ready("finished");
                self.release().await;
                continue;
            }
            if self.order.positions_per_epoch() == 0 {
                if let Some(b) = self.end_epoch() {
                    return Ok(Some(ClientEvent::Batch(b)));
                }
                continue;
            }
            self.fill_window();
            let Some(head) = self.in_flight.front_mut() else {
                return Err(ClientError::Protocol("no split in flight".into()));
            };
            if head.next >= head.len {
                self.in_flight.pop_front();
                self.head_cursor.at.ordinal += 1;
                self.head_cursor.at.index = 0;
                if self.head_cursor.at.ordinal >= self.order.positions_per_epoch() {
                    if let Some(b) = self.end_epoch() {
                        return Ok(Some(ClientEvent::Batch(b)));
                    }
                } else {
                    // Publish first, then wake the heartbeat, so it reports the new cursor.
                    self.publish_cursor();
                    self.poke.notify_one();
                }
                continue;
            }
            if head.pending.is_empty() {
                // Only the time blocked on an empty buffer is waiting for data.
                let received = match head.rx.try_recv() {
                    Ok(r) => Some(r),
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        let waiting = self.reporting.wait.waiting();
                        let r = head.rx.recv().await;
                        self.batch_wait += waiting.end();
                        r
                    }
                };
                match received {
                    Some(Ok(elements)) => {
                        self.counts.received.inc_by(elements.len() as u64);
                        head.pending.extend(elements);
                    }
                    Some(Err(e)) => return Err(e),
                    // A fetcher stops without a word only when the locations feed ended, which
                    // it does when another client took over this consumer.
                    None if self.locations.borrow().superseded => {
                        return Err(ClientError::Superseded);
                    }
                    None if self.locations.borrow().refused.is_some() => {
                        let reason = self.locations.borrow().refused.clone();
                        return Err(ClientError::CredentialsRefused(reason.unwrap_or_default()));
                    }
                    None => {
                        return Err(ClientError::Protocol(format!(
                            "fetcher of epoch {} split #{} stopped at index {} of {}",
                            head.epoch, head.ordinal, head.next, head.len
                        )));
                    }
                }
                continue;
            }
            let Some(element) = head.pending.pop_front() else {
                continue;
            };
            if element.id.index != head.next {
                return Err(ClientError::Protocol(format!(
                    "element {} arrived where index {} was due",
                    element.id, head.next
                )));
            }
            head.next += 1;
            self.head_cursor.at.index = head.next;
            let is_example = matches!(element.body, ElementBody::Example(_));
            let assembling = Instant::now();
            let batch = self
                .batcher
                .push(element)
                .map_err(|e| ClientError::Protocol(format!("cannot batch: {e}")))?;
            self.batching += assembling.elapsed();
            if is_example {
                self.head_cursor.examples += 1;
                self.undelivered += 1;
            } else {
                // A record the pipeline skipped: received, never handed out.
                self.counts.discarded.inc();
            }
            if let Some(b) = batch {
                self.head_cursor.batches = self.batcher.next_index();
                self.total_examples += b.examples.len() as u64;
                self.delivered = self.head_cursor;
                self.publish_cursor();
                self.handed_out(&b);
                return Ok(Some(ClientEvent::Batch(b)));
            }
        }
    }

    /// Counts batch `b` handed to the trainer, with the waiting and assembling behind it.
    fn handed_out(&mut self, b: &Batch) {
        let examples = b.examples.len() as u64;
        self.counts.delivered.inc_by(examples);
        self.counts.batches.inc();
        self.undelivered = self.undelivered.saturating_sub(examples);
        self.counts.wait.observe(self.batch_wait.as_secs_f64());
        self.counts.batching.observe(self.batching.as_secs_f64());
        self.batch_wait = Duration::ZERO;
        self.batching = Duration::ZERO;
    }

    /// The client ends (it leaves or is dropped): what it still holds is discarded, an epoch
    /// without a verdict is unverified. Safe to call twice.
    fn ended(&mut self) {
        self.in_flight.clear();
        self.counts.discarded.inc_by(self.undelivered);
        self.undelivered = 0;
        self.reporting.wait.end();
        self.counts.ratio.set(self.reporting.wait.ratio());
        self.counts.client_ended();
    }

    /// Tells the dispatcher this consumer leaves (best effort).
    async fn release(&mut self) {
        // No report may follow the release (the dispatcher ignores one, but need not see it).
        self.heartbeat.abort();
        // The final cursor (past the last epoch) goes first, or the dispatcher may release a
        // consumer it last saw inside the final epoch and never count the job as finished.
        let last = heartbeat_request(
            (self.job_id, self.consumer, self.generation),
            &self.reporting,
            Vec::new(),
            0,
        );
        if let Err(e) = tokio::time::timeout(
            Duration::from_secs(2),
            self.dispatcher.client_heartbeat(last),
        )
        .await
        .map_err(|_| "no answer within 2 s".to_string())
        .and_then(|r| r.map_err(|s| s.message().to_string()))
        {
            tracing::warn!("could not report the final cursor: {e}");
        }
        let req = v1::ReleaseConsumerRequest {
            job_id: self.job_id,
            consumer_index: self.consumer,
            consumer_generation: self.generation,
        };
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            self.dispatcher.release_consumer(req),
        )
        .await;
    }
}

/// A blocking iterator over a [`JobClient`], for training loops that are not async.
#[derive(Debug)]
pub struct BlockingClient {
    runtime: tokio::runtime::Runtime,
    client: JobClient,
}

impl BlockingClient {
    pub fn connect(config: ClientConfig) -> Result<BlockingClient, ClientError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| ClientError::Config(format!("cannot start a runtime: {e}")))?;
        let client = runtime.block_on(JobClient::connect(config))?;
        Ok(BlockingClient { runtime, client })
    }

    pub fn cursor(&self) -> ClientCursor {
        self.client.cursor()
    }
}

impl Iterator for BlockingClient {
    type Item = Result<ClientEvent, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.runtime.block_on(self.client.next()).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dispatcher's refusal of the request itself is final; any other status (a torn stream
    /// reports Internal or Unknown, a restarting dispatcher Unavailable) is worth retrying.
    #[test]
    fn only_refusals_of_the_request_itself_are_final() {
        use tonic::Code;
        for code in [
            Code::InvalidArgument,
            Code::NotFound,
            Code::AlreadyExists,
            Code::FailedPrecondition,
            Code::OutOfRange,
            Code::Unimplemented,
        ] {
            assert!(
                matches!(
                    refused(tonic::Status::new(code, "x")),
                    ClientError::Refused(_)
                ),
                "{code:?}"
            );
        }
        for code in [Code::PermissionDenied, Code::Unauthenticated] {
            assert!(
                matches!(
                    refused(tonic::Status::new(code, "x")),
                    ClientError::CredentialsRefused(_)
                ),
                "{code:?}"
            );
        }
        for code in [
            Code::Internal,
            Code::Unknown,
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Cancelled,
            Code::Aborted,
            Code::ResourceExhausted,
            Code::DataLoss,
        ] {
            assert!(
                matches!(
                    refused(tonic::Status::new(code, "x")),
                    ClientError::Unreachable(_)
                ),
                "{code:?}"
            );
        }
    }
}
