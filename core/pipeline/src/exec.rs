//! Running a pipeline: per-record processing, producing the elements of a split range, batching,
//! and whole-epoch runners (sequential canonical order, and parallel with ordered output).
//!
//! A record's output depends only on (spec, seed, epoch, record id, record bytes); this module is
//! where that property is kept. It owns no threads beyond the scoped ones of
//! [`run_epoch_parallel`] and never reorders elements.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::dataset::Dataset;
use crate::error::{PipelineError, Result};
use crate::example::{Example, Feature};
use crate::image::{Image, NormalizeTable, decode_jpeg, resize, sample_crop};
use crate::observe::{Laps, NoObserver, OpObserver, step};
use crate::order::{ElementId, SplitPlan};
use crate::rng::{RecordRng, Stream};
use crate::spec::{ErrorPolicy, FeatureType, OpSpec, PipelineSpec};
use crate::tensor::{DType, Tensor};

/// A feature's value while a record moves through the ops.
#[derive(Debug, Clone)]
pub enum Value {
    Bytes(Bytes),
    Image(Image),
    Tensor(Tensor),
}

impl Value {
    pub fn into_tensor(self) -> Option<Tensor> {
        match self {
            Value::Bytes(_) => None,
            Value::Image(img) => Some(img.to_tensor()),
            Value::Tensor(t) => Some(t),
        }
    }
}

/// The named features of one record.
#[derive(Debug, Clone, Default)]
pub struct Features {
    pub values: Vec<(String, Value)>,
}

impl Features {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    fn take(&mut self, name: &str) -> Option<Value> {
        let at = self.values.iter().position(|(n, _)| n == name)?;
        Some(self.values.swap_remove(at).1)
    }

    fn put(&mut self, name: &str, value: Value) {
        match self.values.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => self.values.push((name.to_string(), value)),
        }
    }
}

/// What a produced element carries: an example's output tensors, or the reason it was skipped.
#[derive(Debug, Clone, PartialEq)]
pub enum ElementBody {
    Example(Vec<Tensor>),
    /// Skipped under [`ErrorPolicy::Skip`]; the position stays so every record id is accounted.
    Skipped(String),
}

/// One element of an epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct Element {
    pub id: ElementId,
    pub record_id: u64,
    /// SHA-256 of the raw record payload (all zeros if the payload could not be read).
    pub record_sha256: [u8; 32],
    pub body: ElementBody,
}

impl Element {
    /// SHA-256 of the example bytes: each output tensor's bytes in spec order.
    pub fn example_sha256(&self) -> Option<[u8; 32]> {
        match &self.body {
            ElementBody::Example(tensors) => {
                let mut h = Sha256::new();
                for t in tensors {
                    h.update(&t.data);
                }
                Some(h.finalize().into())
            }
            ElementBody::Skipped(_) => None,
        }
    }
}

/// Per-record parameters that seed the random ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordCtx {
    pub seed: u64,
    pub epoch: u64,
    pub record_id: u64,
}

/// A validated, ready-to-run pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    spec: Arc<PipelineSpec>,
    normalize: Vec<Option<NormalizeTable>>,
    cache_point: Option<usize>,
    /// The decode budget: width x height x channels of one decoded JPEG.
    max_decode_pixels: u64,
}

impl Pipeline {
    pub fn new(spec: PipelineSpec) -> Result<Pipeline> {
        spec.validate()?;
        let normalize = spec
            .ops
            .iter()
            .map(|op| match op {
                OpSpec::Normalize { mean, std, .. } => Some(NormalizeTable::new(mean, std)),
                _ => None,
            })
            .collect();
        let cache_point = spec.cache_point();
        Ok(Pipeline {
            spec: Arc::new(spec),
            normalize,
            cache_point,
            max_decode_pixels: crate::limits::DEFAULT_MAX_DECODE_PIXELS,
        })
    }

    /// The same pipeline with another decode budget (width x height x channels of one decoded
    /// JPEG; the default is [`crate::limits::DEFAULT_MAX_DECODE_PIXELS`]). A JPEG over it is a
    /// bad record, handled by the spec's `on_error`.
    pub fn with_max_decode_pixels(self, max_decode_pixels: u64) -> Pipeline {
        Pipeline {
            max_decode_pixels,
            ..self
        }
    }

    pub fn spec(&self) -> &PipelineSpec {
        &self.spec
    }

    /// Whether the spec has a cache point (a deterministic prefix that can be cached).
    pub fn has_cache_point(&self) -> bool {
        self.cache_point.is_some()
    }

    /// Runs the whole pipeline on one record (everything but batching), every op with the
    /// record's own (seed, epoch, record id).
    pub fn process(&self, ctx: RecordCtx, payload: Bytes) -> Result<Vec<Tensor>> {
        self.process_observed(ctx, payload, &mut Laps::start(&NoObserver))
    }

    fn process_observed(
        &self,
        ctx: RecordCtx,
        payload: Bytes,
        laps: &mut Laps<'_>,
    ) -> Result<Vec<Tensor>> {
        let mut features = Features::default();
        self.run_ops(
            0..self.spec.ops.len(),
            ctx,
            Some(payload),
            &mut features,
            laps,
        )?;
        self.outputs(ctx.record_id, features)
    }

    /// Runs the deterministic prefix: the ops before the cache point. Only a spec with a cache
    /// point has one (validation keeps random ops out of it); without, this is an error.
    pub fn run_prefix(&self, record_id: u64, payload: Bytes) -> Result<Features> {
        self.run_prefix_observed(record_id, payload, &mut Laps::start(&NoObserver))
    }

    fn run_prefix_observed(
        &self,
        record_id: u64,
        payload: Bytes,
        laps: &mut Laps<'_>,
    ) -> Result<Features> {
        let Some(point) = self.cache_point else {
            return Err(PipelineError::spec(
                "ops",
                "the pipeline has no cache point, so it has no cacheable prefix",
            ));
        };
        let mut features = Features::default();
        // The prefix holds no random op, so its ctx's seed and epoch are never read.
        let ctx = RecordCtx {
            seed: 0,
            epoch: 0,
            record_id,
        };
        self.run_ops(0..point, ctx, Some(payload), &mut features, laps)?;
        Ok(features)
    }

    /// Runs the ops after the cache point on the prefix's output and extracts the outputs.
    pub fn run_suffix(&self, ctx: RecordCtx, features: Features) -> Result<Vec<Tensor>> {
        self.run_suffix_observed(ctx, features, &mut Laps::start(&NoObserver))
    }

    fn run_suffix_observed(
        &self,
        ctx: RecordCtx,
        mut features: Features,
        laps: &mut Laps<'_>,
    ) -> Result<Vec<Tensor>> {
        let after = self.cache_point.map_or(self.spec.ops.len(), |p| p + 1);
        self.run_ops(after..self.spec.ops.len(), ctx, None, &mut features, laps)?;
        self.outputs(ctx.record_id, features)
    }

    /// Takes the output tensors, in spec order.
    fn outputs(&self, record_id: u64, mut features: Features) -> Result<Vec<Tensor>> {
        self.spec
            .outputs
            .iter()
            .map(|name| {
                features
                    .take(name)
                    .and_then(Value::into_tensor)
                    .ok_or_else(|| PipelineError::BadExample {
                        record_id,
                        reason: format!("output `{name}` is missing or not a tensor"),
                    })
            })
            .collect()
    }

    fn run_ops(
        &self,
        ops: Range<usize>,
        ctx: RecordCtx,
        mut payload: Option<Bytes>,
        features: &mut Features,
        laps: &mut Laps<'_>,
    ) -> Result<()> {
        let record_id = ctx.record_id;
        let bad = |reason: String| PipelineError::BadExample { record_id, reason };
        for i in ops {
            let op = &self.spec.ops[i];
            let rng = || RecordRng::new(ctx.seed, ctx.epoch, record_id, Stream::Op(i as u32));
            match op {
                OpSpec::ParseExample { features: wanted } => {
                    let payload = payload
                        .take()
                        .ok_or_else(|| bad("parse_example has no record payload".into()))?;
                    let example = Example::decode(payload).map_err(|e| bad(e.to_string()))?;
                    for f in wanted {
                        let value = example
                            .get(&f.key)
                            .ok_or_else(|| bad(format!("feature `{}` is missing", f.key)))?;
                        let expected: usize = f.shape.iter().product();
                        let value = match (f.dtype, value) {
                            (FeatureType::Bytes, Feature::Bytes(list)) => match list.as_slice() {
                                [one] => Value::Bytes(one.clone()),
                                _ => {
                                    return Err(bad(format!(
                                        "feature `{}` has {} values, expected 1",
                                        f.key,
                                        list.len()
                                    )));
                                }
                            },
                            (FeatureType::Int64, Feature::Int64(list))
                                if list.len() == expected =>
                            {
                                Value::Tensor(Tensor::from_i64(list, f.shape.clone()))
                            }
                            (FeatureType::Float, Feature::Float(list))
                                if list.len() == expected =>
                            {
                                Value::Tensor(Tensor::from_f32(list, f.shape.clone()))
                            }
                            (_, other) => {
                                return Err(bad(format!(
                                    "feature `{}` is {} with {} values, expected {:?} with {expected}",
                                    f.key,
                                    other.kind(),
                                    match other {
                                        Feature::Bytes(l) => l.len(),
                                        Feature::Float(l) => l.len(),
                                        Feature::Int64(l) => l.len(),
                                    },
                                    f.dtype
                                )));
                            }
                        };
                        features.put(f.output_name(), value);
                    }
                }
                OpSpec::DecodeJpeg { feature, channels } => {
                    let Some(Value::Bytes(data)) = features.get(feature) else {
                        return Err(bad(format!("decode_jpeg: `{feature}` is not bytes")));
                    };
                    let img =
                        decode_jpeg(data, *channels, self.max_decode_pixels).map_err(|reason| {
                            PipelineError::BadImage {
                                record_id,
                                feature: feature.clone(),
                                reason,
                            }
                        })?;
                    features.put(feature, Value::Image(img));
                }
                OpSpec::RandomCrop {
                    feature,
                    area,
                    aspect_ratio,
                    attempts,
                } => {
                    let mut img = take_image(features, feature, record_id)?;
                    let (x, y, w, h) = sample_crop(
                        &mut rng(),
                        img.width(),
                        img.height(),
                        *area,
                        *aspect_ratio,
                        *attempts,
                    );
                    img.crop(x, y, w, h);
                    features.put(feature, Value::Image(img));
                }
                OpSpec::RandomFlip {
                    feature,
                    probability,
                } => {
                    let mut img = take_image(features, feature, record_id)?;
                    if rng().next_f64() < *probability {
                        img.flip_horizontal();
                    }
                    features.put(feature, Value::Image(img));
                }
                OpSpec::Resize {
                    feature,
                    height,
                    width,
                } => {
                    let img = take_image(features, feature, record_id)?;
                    let resized = resize(&img, *height as usize, *width as usize);
                    features.put(feature, Value::Image(resized));
                }
                OpSpec::Normalize { feature, .. } => {
                    let img = take_image(features, feature, record_id)?;
                    let table = self.normalize[i]
                        .as_ref()
                        .ok_or_else(|| bad("normalize table missing".into()))?;
                    features.put(feature, Value::Tensor(table.apply(&img)));
                }
                OpSpec::Cast { feature, dtype } => {
                    let t = features
                        .take(feature)
                        .and_then(Value::into_tensor)
                        .ok_or_else(|| bad(format!("cast: `{feature}` is not a tensor")))?;
                    features.put(feature, Value::Tensor(cast(t, *dtype)));
                }
                OpSpec::Cache | OpSpec::Batch { .. } => continue,
            }
            laps.lap(op.name());
        }
        Ok(())
    }

    /// Produces the elements at `positions` of `split` in `epoch`, given the split's record order
    /// (from [`SplitPlan::record_order`]). Record errors become skipped elements under
    /// [`ErrorPolicy::Skip`] and fail the call under `Fail`.
    pub fn produce(
        &self,
        dataset: &Dataset,
        seed: u64,
        epoch: u64,
        split: u32,
        order: &[u64],
        positions: Range<u32>,
    ) -> Result<Vec<Element>> {
        self.produce_with(dataset, seed, epoch, split, order, positions, &NoCache)
    }

    /// [`Pipeline::produce`] with a cache: records whose prefix output `cache` holds skip the
    /// source and the prefix; the others are read and computed, and their prefix output is handed
    /// to `cache`. The suffix always runs the same way, so the elements are identical either way.
    #[allow(clippy::too_many_arguments)]
    pub fn produce_with(
        &self,
        dataset: &Dataset,
        seed: u64,
        epoch: u64,
        split: u32,
        order: &[u64],
        positions: Range<u32>,
        cache: &dyn PrefixCache,
    ) -> Result<Vec<Element>> {
        self.produce_observed(
            dataset,
            seed,
            epoch,
            split,
            order,
            positions,
            cache,
            &NoObserver,
        )
    }

    /// [`Pipeline::produce_with`] that tells `observer` how long each op took on each record
    /// (and the read, cache look-up and cache hand-over steps, see [`crate::observe`]). The
    /// elements are the same whatever the observer.
    #[allow(clippy::too_many_arguments)]
    pub fn produce_observed(
        &self,
        dataset: &Dataset,
        seed: u64,
        epoch: u64,
        split: u32,
        order: &[u64],
        positions: Range<u32>,
        cache: &dyn PrefixCache,
        observer: &dyn OpObserver,
    ) -> Result<Vec<Element>> {
        let range = positions.start as usize..(positions.end as usize).min(order.len());
        let ids = order.get(range.clone()).unwrap_or(&[]);
        let mut laps = Laps::start(observer);
        // Only a spec with a cache point has a prefix to cache.
        let cached: Vec<Option<([u8; 32], Features)>> = if self.cache_point.is_some() {
            ids.iter()
                .map(|&id| {
                    let hit = cache.cached(id);
                    laps.lap(step::CACHE_GET);
                    hit
                })
                .collect()
        } else {
            vec![None; ids.len()]
        };
        let to_read: Vec<u64> = ids
            .iter()
            .zip(&cached)
            .filter(|(_, c)| c.is_none())
            .map(|(&id, _)| id)
            .collect();
        laps.restart();
        let read_started = observer.enabled().then(std::time::Instant::now);
        let mut payloads = dataset.read_records(&to_read).into_iter();
        if let Some(started) = read_started
            && !to_read.is_empty()
        {
            let each = started.elapsed() / to_read.len() as u32;
            for _ in &to_read {
                observer.op_done(step::READ, each);
            }
        }
        let mut out = Vec::with_capacity(ids.len());
        for ((pos, &record_id), hit) in range.zip(ids).zip(cached) {
            let id = ElementId {
                epoch,
                split,
                index: pos as u32,
            };
            let ctx = RecordCtx {
                seed,
                epoch,
                record_id,
            };
            let mut record_sha256 = [0u8; 32];
            laps.restart();
            let result = match hit {
                Some((sha, features)) => {
                    record_sha256 = sha;
                    self.run_suffix_observed(ctx, features, &mut laps)
                }
                None => {
                    let payload = payloads.next().unwrap_or_else(|| {
                        Err(PipelineError::NoSuchRecord {
                            record_id,
                            num_records: dataset.num_records(),
                        })
                    });
                    if self.cache_point.is_none() {
                        payload.and_then(|payload| {
                            record_sha256 = Sha256::digest(&payload).into();
                            laps.restart();
                            self.process_observed(ctx, payload, &mut laps)
                        })
                    } else {
                        let started = std::time::Instant::now();
                        let prefix = payload.and_then(|payload| {
                            record_sha256 = Sha256::digest(&payload).into();
                            laps.restart();
                            self.run_prefix_observed(record_id, payload, &mut laps)
                        });
                        match prefix {
                            Ok(features) => {
                                cache.computed(
                                    record_id,
                                    record_sha256,
                                    &features,
                                    started.elapsed(),
                                );
                                laps.lap(step::CACHE_PUT);
                                self.run_suffix_observed(ctx, features, &mut laps)
                            }
                            Err(e) => {
                                cache.lost(record_id, &e);
                                Err(e)
                            }
                        }
                    }
                }
            };
            let body = match result {
                Ok(tensors) => ElementBody::Example(tensors),
                Err(e) if e.is_record_error() && self.spec.on_error == ErrorPolicy::Skip => {
                    tracing::warn!(record_id, element = %id, "skipping record: {e}");
                    ElementBody::Skipped(e.to_string())
                }
                Err(e) => return Err(e),
            };
            out.push(Element {
                id,
                record_id,
                record_sha256,
                body,
            });
        }
        Ok(out)
    }
}

/// Where prefix outputs come from and go to (the Cachew cache of a split).
pub trait PrefixCache: Sync {
    /// The cached prefix output of a record and its source hash, if the cache has it.
    fn cached(&self, record_id: u64) -> Option<([u8; 32], Features)>;
    /// A prefix output computed from the source (with the time the prefix took).
    fn computed(
        &self,
        record_id: u64,
        record_sha256: [u8; 32],
        features: &Features,
        took: std::time::Duration,
    );
    /// The record's prefix output cannot be computed (the record is unreadable or its prefix
    /// failed), so no chunk of its split can be complete. Nothing by default.
    fn lost(&self, record_id: u64, error: &PipelineError) {
        let _ = (record_id, error);
    }
}

/// No cache: every record is computed from the source.
#[derive(Debug, Clone, Copy)]
pub struct NoCache;

impl PrefixCache for NoCache {
    fn cached(&self, _: u64) -> Option<([u8; 32], Features)> {
        None
    }
    fn computed(&self, _: u64, _: [u8; 32], _: &Features, _: std::time::Duration) {}
}

fn take_image(features: &mut Features, name: &str, record_id: u64) -> Result<Image> {
    match features.take(name) {
        Some(Value::Image(img)) => Ok(img),
        _ => Err(PipelineError::BadExample {
            record_id,
            reason: format!("`{name}` is not a decoded image"),
        }),
    }
}

fn cast(t: Tensor, to: DType) -> Tensor {
    if t.dtype == to {
        return t;
    }
    let data: Vec<u8> = match (t.dtype, to) {
        (DType::Uint8, DType::Float32) => t
            .data
            .iter()
            .flat_map(|&v| f32::from(v).to_le_bytes())
            .collect(),
        (DType::Uint8, DType::Int64) => t
            .data
            .iter()
            .flat_map(|&v| i64::from(v).to_le_bytes())
            .collect(),
        (DType::Int64, DType::Float32) => t
            .data
            .chunks_exact(8)
            .flat_map(|b| {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                (i64::from_le_bytes(a) as f32).to_le_bytes()
            })
            .collect(),
        // Validation only admits the widening casts above.
        _ => return t,
    };
    Tensor {
        dtype: to,
        shape: t.shape,
        data: Bytes::from(data),
    }
}

/// Identity and provenance of one example inside a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExampleMeta {
    pub id: ElementId,
    pub record_id: u64,
    pub record_sha256: [u8; 32],
}

/// What the application receives: a batch of consecutive examples of the epoch order (or one
/// unstacked example when the spec does not batch).
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub epoch: u64,
    /// Batch number within the epoch.
    pub index: u64,
    pub examples: Vec<ExampleMeta>,
    /// Output tensors in spec order; stacked along a leading batch dimension if `stacked`.
    pub tensors: Vec<Tensor>,
    pub stacked: bool,
}

impl Batch {
    /// The bytes of example `i`: each output tensor's slice, in spec order.
    pub fn example_bytes(&self, i: usize) -> Vec<Bytes> {
        if self.stacked {
            self.tensors.iter().filter_map(|t| t.row(i)).collect()
        } else {
            self.tensors.iter().map(|t| t.data.clone()).collect()
        }
    }

    /// SHA-256 of example `i`'s bytes (the hash log's second column).
    pub fn example_sha256(&self, i: usize) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in self.example_bytes(i) {
            h.update(&part);
        }
        h.finalize().into()
    }
}

/// Groups the examples of an epoch, in delivery order, into batches. Skipped elements are
/// counted, not batched.
#[derive(Debug)]
pub struct Batcher {
    epoch: u64,
    size: usize,
    drop_remainder: bool,
    stacked: bool,
    pending: Vec<(ExampleMeta, Vec<Tensor>)>,
    next_index: u64,
    skipped: u64,
}

impl Batcher {
    /// A batcher for the spec's batch op (batches of one, unstacked, if it has none).
    pub fn for_spec(spec: &PipelineSpec, epoch: u64) -> Batcher {
        let (size, drop_remainder, stacked) = match spec.batch() {
            Some((size, drop)) => (size.max(1), drop, true),
            None => (1, false, false),
        };
        Batcher {
            epoch,
            size,
            drop_remainder,
            stacked,
            pending: Vec::with_capacity(size),
            next_index: 0,
            skipped: 0,
        }
    }

    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Number the next batch gets (batches emitted so far in this epoch).
    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    /// Continues numbering after `n` batches (a resumed epoch).
    pub fn set_next_index(&mut self, n: u64) {
        self.next_index = n;
    }

    /// Adds the next element of the epoch; returns a batch when one is full.
    pub fn push(&mut self, element: Element) -> Result<Option<Batch>, String> {
        match element.body {
            ElementBody::Skipped(_) => {
                self.skipped += 1;
                Ok(None)
            }
            ElementBody::Example(tensors) => {
                let meta = ExampleMeta {
                    id: element.id,
                    record_id: element.record_id,
                    record_sha256: element.record_sha256,
                };
                self.pending.push((meta, tensors));
                if self.pending.len() == self.size {
                    self.emit().map(Some)
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// Ends the epoch: the last partial batch, unless the spec drops remainders.
    pub fn finish(&mut self) -> Result<Option<Batch>, String> {
        if self.pending.is_empty() || self.drop_remainder {
            self.pending.clear();
            return Ok(None);
        }
        self.emit().map(Some)
    }

    fn emit(&mut self) -> Result<Batch, String> {
        let pending = std::mem::take(&mut self.pending);
        let examples: Vec<ExampleMeta> = pending.iter().map(|(m, _)| *m).collect();
        let tensors = if self.stacked {
            let outputs = pending.first().map_or(0, |(_, t)| t.len());
            (0..outputs)
                .map(|k| {
                    let parts: Vec<&Tensor> =
                        pending.iter().filter_map(|(_, t)| t.get(k)).collect();
                    Tensor::stack(&parts)
                })
                .collect::<Result<Vec<_>, _>>()?
        } else {
            pending
                .into_iter()
                .next()
                .map(|(_, t)| t)
                .unwrap_or_default()
        };
        let batch = Batch {
            epoch: self.epoch,
            index: self.next_index,
            examples,
            tensors,
            stacked: self.stacked,
        };
        self.next_index += 1;
        Ok(batch)
    }
}

/// Elements per unit of work in the epoch runners.
pub const DEFAULT_CHUNK: u32 = 16;

/// The elements of an epoch in canonical order, one split at a time (the reference every
/// distributed run must reproduce).
pub fn canonical_elements(
    pipeline: &Pipeline,
    dataset: &Dataset,
    seed: u64,
    epoch: u64,
) -> impl Iterator<Item = Result<Element>> {
    let plan = plan_for(pipeline, dataset);
    plan.split_order(seed, epoch)
        .into_iter()
        .flat_map(move |split| {
            let order = plan.record_order(seed, epoch, split);
            let len = order.len() as u32;
            (0..len)
                .step_by(DEFAULT_CHUNK as usize)
                .flat_map(move |start| {
                    let end = (start + DEFAULT_CHUNK).min(len);
                    match pipeline.produce(dataset, seed, epoch, split, &order, start..end) {
                        Ok(elements) => elements.into_iter().map(Ok).collect::<Vec<_>>(),
                        Err(e) => vec![Err(e)],
                    }
                })
        })
}

/// The split plan of a pipeline over a dataset.
pub fn plan_for(pipeline: &Pipeline, dataset: &Dataset) -> SplitPlan {
    SplitPlan::new(
        dataset.num_records(),
        pipeline.spec().source.split_records,
        pipeline.spec().shuffle,
    )
}

/// Runs an epoch on `threads` threads and hands every element to `sink` in canonical order.
/// At most `4 * threads` chunks are held ahead of the sink, so memory stays bounded.
pub fn run_epoch_parallel(
    pipeline: &Pipeline,
    dataset: &Dataset,
    seed: u64,
    epoch: u64,
    threads: usize,
    mut sink: impl FnMut(Element) -> Result<()>,
) -> Result<()> {
    let plan = plan_for(pipeline, dataset);
    let mut work: Vec<(u32, Arc<Vec<u64>>, Range<u32>)> = Vec::new();
    for split in plan.split_order(seed, epoch) {
        let order = Arc::new(plan.record_order(seed, epoch, split));
        let len = order.len() as u32;
        for start in (0..len).step_by(DEFAULT_CHUNK as usize) {
            work.push((
                split,
                order.clone(),
                start..(start + DEFAULT_CHUNK).min(len),
            ));
        }
    }
    let threads = threads.max(1);
    let window = 4 * threads;
    let next = AtomicUsize::new(0);
    let state = Mutex::new(ReorderState {
        done: BTreeMap::new(),
        emitted: 0,
        failed: false,
    });
    let cond = Condvar::new();
    std::thread::scope(|scope| -> Result<()> {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((split, order, range)) = work.get(i) else {
                        break;
                    };
                    {
                        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                        while i >= st.emitted + window && !st.failed {
                            st = cond.wait(st).unwrap_or_else(|p| p.into_inner());
                        }
                        if st.failed {
                            break;
                        }
                    }
                    let result =
                        pipeline.produce(dataset, seed, epoch, *split, order, range.clone());
                    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                    st.done.insert(i, result);
                    cond.notify_all();
                }
            });
        }
        let mut outcome = Ok(());
        for i in 0..work.len() {
            let result = {
                let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    if let Some(r) = st.done.remove(&i) {
                        break r;
                    }
                    st = cond.wait(st).unwrap_or_else(|p| p.into_inner());
                }
            };
            let step = result.and_then(|elements| elements.into_iter().try_for_each(&mut sink));
            let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
            st.emitted = i + 1;
            if let Err(e) = step {
                st.failed = true;
                outcome = Err(e);
                cond.notify_all();
                break;
            }
            cond.notify_all();
        }
        outcome
    })
}

struct ReorderState {
    done: BTreeMap<usize, Result<Vec<Element>>>,
    emitted: usize,
    failed: bool,
}
