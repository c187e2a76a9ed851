//! Datasets ready to run: a task's pipeline, file index and split plan ([`Prepared`]), kept by
//! dataset id so that the tasks of one dataset share them ([`PreparedCache`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cachew_pipeline::{Dataset, Pipeline, SplitPlan};

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
}

impl PreparedCache {
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
