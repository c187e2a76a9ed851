//! Dataset indexing: turns a pipeline spec into the [`DatasetEntry`] a job is created over (its
//! id is the hex of `Dataset::fingerprint`). Indexing reads every input file, so it runs on a
//! blocking thread, outside the service's lock, once per canonical spec.

use std::collections::HashMap;
use std::sync::Mutex;

use cachew_pipeline::{OpenedSpec, PipelineSpec};
use tonic::Status;

use crate::state::DatasetEntry;

/// The datasets already indexed: canonical spec -> (id, records).
#[derive(Debug, Default)]
pub struct DatasetIndex {
    indexed: Mutex<HashMap<String, (String, u64)>>,
}

impl DatasetIndex {
    /// Indexes the dataset of a canonical spec (once per spec) and returns its entry.
    pub async fn entry(&self, spec_json: &str) -> Result<DatasetEntry, Status> {
        if let Some((id, records)) = self.known(spec_json) {
            let spec = PipelineSpec::from_json(spec_json)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            return Ok(DatasetEntry {
                id,
                spec_json: spec_json.to_string(),
                num_records: records,
                split_records: spec.source.split_records,
                shuffle: spec.shuffle,
            });
        }
        let json = spec_json.to_string();
        let entry = tokio::task::spawn_blocking(move || -> Result<DatasetEntry, String> {
            let opened = OpenedSpec::from_json(&json).map_err(|e| e.to_string())?;
            Ok(DatasetEntry {
                id: opened.id,
                spec_json: json,
                num_records: opened.dataset.num_records(),
                split_records: opened.spec.source.split_records,
                shuffle: opened.spec.shuffle,
            })
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(Status::invalid_argument)?;
        self.lock()
            .insert(spec_json.to_string(), (entry.id.clone(), entry.num_records));
        Ok(entry)
    }

    fn known(&self, spec_json: &str) -> Option<(String, u64)> {
        self.lock().get(spec_json).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, u64)>> {
        self.indexed.lock().unwrap_or_else(|p| p.into_inner())
    }
}
