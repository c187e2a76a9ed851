//! Datasets ready to run: a task's pipeline, file index and split plan ([`Prepared`]), kept by
//! dataset id so that the tasks of one dataset share them ([`PreparedCache`]), and the bounds
//! every preparation applies ([`InputBounds`]: the data root and the decode budget).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cachew_pipeline::{DataRoot, Dataset, Pipeline, SplitPlan};

/// What a worker may read and decode: a task whose spec names a file outside `data_root` is
/// refused (`--data-root`); a JPEG over `max_decode_pixels` is a bad record
/// (`--max-decode-pixels`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputBounds {
    pub data_root: DataRoot,
    pub max_decode_pixels: u64,
}

impl Default for InputBounds {
    /// Anywhere (the binary's default is its working directory), the default decode budget.
    fn default() -> Self {
        InputBounds {
            data_root: DataRoot::anywhere(),
            max_decode_pixels: cachew_pipeline::limits::DEFAULT_MAX_DECODE_PIXELS,
        }
    }
}

/// A dataset ready to run: its pipeline, index and split plan.
#[derive(Debug)]
pub struct Prepared {
    pub pipeline: Pipeline,
    pub dataset: Dataset,
    pub plan: SplitPlan,
}

/// Datasets this worker has prepared, by id.
#[derive(Debug, Default)]
pub struct PreparedCache {
    by_id: Mutex<HashMap<String, Arc<Prepared>>>,
    /// One gate per dataset: tasks of a dataset arriving together wait for one preparation
    /// (indexing every file of a large dataset) instead of each starting its own.
    gates: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    bounds: InputBounds,
}

impl PreparedCache {
    /// An empty cache whose preparations apply `bounds`.
    pub fn new(bounds: InputBounds) -> PreparedCache {
        PreparedCache {
            bounds,
            ..PreparedCache::default()
        }
    }

    /// The bounds every preparation applies.
    pub fn bounds(&self) -> &InputBounds {
        &self.bounds
    }

    /// The gate to hold while preparing dataset `id`.
    pub fn gate(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.gates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Prepared>> {
        self.by_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    pub fn insert(&self, id: &str, p: Arc<Prepared>) {
        self.by_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), p);
    }
}

/// The tf-sample pipeline (it has a cache point) over the dataset checked into fixtures/.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn tf_sample_prepared() -> Arc<Prepared> {
    let spec_path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/specs/tf-sample.toml");
    let spec = cachew_pipeline::PipelineSpec::load(&spec_path).unwrap();
    let dataset = Dataset::for_spec(&spec).unwrap();
    let pipeline = Pipeline::new(spec).unwrap();
    let plan = cachew_pipeline::exec::plan_for(&pipeline, &dataset);
    Arc::new(Prepared {
        pipeline,
        dataset,
        plan,
    })
}
