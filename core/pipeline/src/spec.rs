//! The declarative pipeline spec: a TOML file naming the source files, the split size, the ops
//! with their parameters, the outputs and the error policy.
//!
//! ```toml
//! name = "tf-sample"
//! seed = 42                      # default job seed; a job may override it
//! outputs = ["image", "label"]   # output tensors, in this order (also the hash-log order)
//! on_error = "fail"              # or "skip": count and skip bad records
//!
//! [source]
//! format = "tfrecord"
//! files = ["data/train-*"]       # relative to the spec file; `*` and `?` in the last component
//! split_records = 50
//!
//! [[ops]]
//! op = "parse_example"
//! features = [
//!   { key = "image/encoded", dtype = "bytes", name = "image" },
//!   { key = "image/class/label", dtype = "int64", name = "label" },
//! ]
//!
//! [[ops]]
//! op = "decode_jpeg"
//! feature = "image"
//!
//! [[ops]]
//! op = "cache"
//!
//! [[ops]]
//! op = "random_crop"
//! feature = "image"
//! area = [0.08, 1.0]
//! aspect_ratio = [0.75, 1.3333333]
//!
//! [[ops]]
//! op = "random_flip"
//! feature = "image"
//!
//! [[ops]]
//! op = "resize"
//! feature = "image"
//! height = 64
//! width = 64
//!
//! [[ops]]
//! op = "normalize"
//! feature = "image"
//! mean = [0.485, 0.456, 0.406]
//! std = [0.229, 0.224, 0.225]
//!
//! [[ops]]
//! op = "batch"
//! size = 64
//! ```
//! Validation infers every feature's dtype and shape op by op and rejects an unknown op, a
//! feature that does not exist at that point, or a bad parameter, with a message naming the field
//! (`ops[3].height: ...`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{PipelineError, Result};
use crate::limits::{self, check_at_most};
use crate::patterns::{expand_pattern, lexical};
use crate::tensor::DType;

/// What to do with a record that cannot be read, parsed or decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorPolicy {
    /// Stop with an error naming the file and offset (or the record and feature).
    #[default]
    Fail,
    /// Skip the record, log a warning and count it in the element stream as a skipped element,
    /// so the epoch still accounts for every record id.
    Skip,
}

/// Source format. Only TFRecord files of `tf.train.Example` for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceFormat {
    #[default]
    Tfrecord,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    #[serde(default)]
    pub format: SourceFormat,
    /// File patterns; after loading, the resolved, sorted, absolute file list.
    pub files: Vec<String>,
    /// Records per split, the unit of dynamic sharding.
    pub split_records: u32,
}

/// Value type of a parsed Example feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeatureType {
    Bytes,
    Int64,
    Float,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    /// Key in the Example's feature map.
    pub key: String,
    pub dtype: FeatureType,
    /// Name of the feature in the pipeline (defaults to the key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Shape of a numeric feature; `[]` (the default) is a scalar. Bytes features have no shape.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shape: Vec<usize>,
}

impl FeatureSpec {
    pub fn output_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.key)
    }
}

fn default_channels() -> u8 {
    3
}
fn default_area() -> [f64; 2] {
    [0.08, 1.0]
}
fn default_aspect() -> [f64; 2] {
    [3.0 / 4.0, 4.0 / 3.0]
}
fn default_attempts() -> u32 {
    10
}
fn default_probability() -> f64 {
    0.5
}

/// One operation of the pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum OpSpec {
    /// Parses the record as a `tf.train.Example` and extracts features. Must be the first op.
    ParseExample { features: Vec<FeatureSpec> },
    /// Decodes a JPEG bytes feature into a uint8 `[height, width, channels]` image.
    DecodeJpeg {
        feature: String,
        #[serde(default = "default_channels")]
        channels: u8,
    },
    /// Inception-style random crop: area fraction and log-uniform aspect ratio, up to `attempts`
    /// tries, falling back to the whole image.
    RandomCrop {
        feature: String,
        #[serde(default = "default_area")]
        area: [f64; 2],
        #[serde(default = "default_aspect")]
        aspect_ratio: [f64; 2],
        #[serde(default = "default_attempts")]
        attempts: u32,
    },
    /// Horizontal flip with the given probability.
    RandomFlip {
        feature: String,
        #[serde(default = "default_probability")]
        probability: f64,
    },
    /// Bilinear resize (half-pixel centres, fixed-point arithmetic) to `height` x `width`.
    Resize {
        feature: String,
        height: u32,
        width: u32,
    },
    /// `(x / 255 - mean[c]) / std[c]` per channel, producing float32.
    Normalize {
        feature: String,
        mean: Vec<f32>,
        std: Vec<f32>,
    },
    /// Converts a tensor to another dtype (uint8 to int64 or float32, int64 to float32).
    Cast { feature: String, dtype: DType },
    /// The cache point: everything before it is deterministic and may be cached.
    Cache,
    /// Batches consecutive examples of the epoch order. Must be the last op.
    Batch {
        size: u32,
        #[serde(default)]
        drop_remainder: bool,
    },
}

impl OpSpec {
    pub fn name(&self) -> &'static str {
        match self {
            OpSpec::ParseExample { .. } => "parse_example",
            OpSpec::DecodeJpeg { .. } => "decode_jpeg",
            OpSpec::RandomCrop { .. } => "random_crop",
            OpSpec::RandomFlip { .. } => "random_flip",
            OpSpec::Resize { .. } => "resize",
            OpSpec::Normalize { .. } => "normalize",
            OpSpec::Cast { .. } => "cast",
            OpSpec::Cache => "cache",
            OpSpec::Batch { .. } => "batch",
        }
    }

    /// Whether the op draws random numbers (and so may not stand before the cache point).
    pub fn is_random(&self) -> bool {
        matches!(self, OpSpec::RandomCrop { .. } | OpSpec::RandomFlip { .. })
    }

    /// Every op's name in a spec (`cache` and `batch` included: they mark points, they do not
    /// run per record).
    pub const NAMES: &'static [&'static str] = &[
        "parse_example",
        "decode_jpeg",
        "random_crop",
        "random_flip",
        "resize",
        "normalize",
        "cast",
        "cache",
        "batch",
    ];
}

/// A complete pipeline spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Default seed of jobs that do not choose one.
    #[serde(default)]
    pub seed: u64,
    /// Shuffle splits and records each epoch (default true). Without it, epochs follow file order.
    #[serde(default = "default_true")]
    pub shuffle: bool,
    pub outputs: Vec<String>,
    #[serde(default)]
    pub on_error: ErrorPolicy,
    pub source: SourceSpec,
    pub ops: Vec<OpSpec>,
}

fn default_true() -> bool {
    true
}

/// Static shape of a feature while validating: `None` is a dimension only known per record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FeatureKind {
    Bytes,
    Tensor {
        dtype: DType,
        shape: Vec<Option<usize>>,
    },
}

impl std::fmt::Display for FeatureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FeatureKind::Bytes => f.write_str("bytes"),
            FeatureKind::Tensor { dtype, shape } => {
                let dims: Vec<String> = shape
                    .iter()
                    .map(|d| d.map_or("?".to_string(), |d| d.to_string()))
                    .collect();
                write!(f, "{dtype} [{}]", dims.join(", "))
            }
        }
    }
}

pub use crate::limits::MAX_IMAGE_SIDE;

impl PipelineSpec {
    /// Reads, parses, resolves and validates a spec file. Relative file patterns are resolved
    /// against the spec file's directory.
    pub fn load(path: &Path) -> Result<PipelineSpec> {
        let text = std::fs::read_to_string(path).map_err(|e| PipelineError::io(path, e))?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        PipelineSpec::from_toml(&text, base).map_err(|e| match e {
            PipelineError::Spec { field, reason } => PipelineError::Spec {
                field: format!("{} {field}", path.display()),
                reason,
            },
            other => other,
        })
    }

    /// Parses TOML text, resolves file patterns against `base_dir`, validates.
    pub fn from_toml(text: &str, base_dir: &Path) -> Result<PipelineSpec> {
        let table: toml::Table =
            toml::from_str(text).map_err(|e| PipelineError::spec("(syntax)", e.to_string()))?;
        let mut spec = PipelineSpec::from_table(table)?;
        spec.resolve_files(base_dir)?;
        spec.validate()?;
        Ok(spec)
    }

    /// Parses the canonical JSON form (as sent between processes); files must be resolved.
    pub fn from_json(text: &str) -> Result<PipelineSpec> {
        let spec: PipelineSpec =
            serde_json::from_str(text).map_err(|e| PipelineError::spec("(json)", e.to_string()))?;
        for f in &spec.source.files {
            if !Path::new(f).is_absolute() {
                return Err(PipelineError::spec(
                    "source.files",
                    format!("`{f}` is not an absolute path in a canonical spec"),
                ));
            }
        }
        spec.validate()?;
        Ok(spec)
    }

    /// The canonical JSON form: resolved absolute files, every default spelled out. Two specs
    /// with equal canonical forms run identically.
    pub fn to_canonical_json(&self) -> String {
        // Serializing plain data to JSON cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses ops one by one so errors name the op (`ops[2]`) as well as the field.
    fn from_table(mut table: toml::Table) -> Result<PipelineSpec> {
        let ops_value = table.remove("ops").ok_or_else(|| {
            PipelineError::spec("ops", "missing: a pipeline needs at least parse_example")
        })?;
        let toml::Value::Array(raw_ops) = ops_value else {
            return Err(PipelineError::spec(
                "ops",
                "must be an array of tables ([[ops]])",
            ));
        };
        let mut ops = Vec::with_capacity(raw_ops.len());
        for (i, raw) in raw_ops.into_iter().enumerate() {
            let field = format!("ops[{i}]");
            let toml::Value::Table(t) = raw else {
                return Err(PipelineError::spec(field, "must be a table"));
            };
            match t.get("op") {
                None => return Err(PipelineError::spec(field, "missing `op`")),
                Some(toml::Value::String(name)) if !OpSpec::NAMES.contains(&name.as_str()) => {
                    return Err(PipelineError::spec(
                        format!("{field}.op"),
                        format!(
                            "unknown op `{name}`; known ops: {}",
                            OpSpec::NAMES.join(", ")
                        ),
                    ));
                }
                _ => {}
            }
            let op: OpSpec = toml::Value::Table(t)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    PipelineError::spec(field, e.message().to_string())
                })?;
            ops.push(op);
        }
        table.insert("ops".into(), toml::Value::Array(Vec::new()));
        let mut spec: PipelineSpec =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    PipelineError::spec("(top level)", e.message().to_string())
                })?;
        spec.ops = ops;
        Ok(spec)
    }

    fn resolve_files(&mut self, base_dir: &Path) -> Result<()> {
        let mut resolved = Vec::new();
        for (i, pattern) in self.source.files.iter().enumerate() {
            let field = format!("source.files[{i}]");
            let full = if Path::new(pattern).is_absolute() {
                PathBuf::from(pattern)
            } else {
                base_dir.join(pattern)
            };
            let matches = expand_pattern(&full).map_err(|e| PipelineError::spec(&field, e))?;
            if matches.is_empty() {
                return Err(PipelineError::spec(
                    field,
                    format!("`{}` matches no file", full.display()),
                ));
            }
            resolved.extend(matches);
        }
        resolved.sort();
        resolved.dedup();
        self.source.files = resolved
            .into_iter()
            .map(|p| {
                lexical(&std::path::absolute(&p).unwrap_or(p))
                    .display()
                    .to_string()
            })
            .collect();
        Ok(())
    }

    /// Checks the spec and infers each feature's type op by op.
    pub fn validate(&self) -> Result<()> {
        self.infer_features().map(|_| ())
    }

    /// Index of the cache op, if any.
    pub fn cache_point(&self) -> Option<usize> {
        self.ops.iter().position(|op| matches!(op, OpSpec::Cache))
    }

    /// The batch op's size and remainder policy, if the spec batches.
    pub fn batch(&self) -> Option<(usize, bool)> {
        self.ops.iter().find_map(|op| match op {
            OpSpec::Batch {
                size,
                drop_remainder,
            } => Some((*size as usize, *drop_remainder)),
            _ => None,
        })
    }

    pub(crate) fn infer_features(&self) -> Result<BTreeMap<String, FeatureKind>> {
        if self.source.files.is_empty() {
            return Err(PipelineError::spec(
                "source.files",
                "must name at least one file",
            ));
        }
        if self.source.split_records == 0 {
            return Err(PipelineError::spec(
                "source.split_records",
                "must be at least 1",
            ));
        }
        self.check_bounds()?;
        let mut features: BTreeMap<String, FeatureKind> = BTreeMap::new();
        let mut seen_cache = None;
        let mut first_random: Option<(usize, &str)> = None;
        let last = self.ops.len().saturating_sub(1);
        for (i, op) in self.ops.iter().enumerate() {
            let at = |field: &str| format!("ops[{i}].{field}");
            if i == 0 && !matches!(op, OpSpec::ParseExample { .. }) {
                return Err(PipelineError::spec(
                    "ops[0].op",
                    format!("the first op must be parse_example, not {}", op.name()),
                ));
            }
            if op.is_random() && first_random.is_none() {
                first_random = Some((i, op.name()));
            }
            match op {
                OpSpec::ParseExample { features: list } => {
                    if i != 0 {
                        return Err(PipelineError::spec(
                            at("op"),
                            "parse_example may only be the first op",
                        ));
                    }
                    if list.is_empty() {
                        return Err(PipelineError::spec(
                            at("features"),
                            "must list at least one feature",
                        ));
                    }
                    for (j, f) in list.iter().enumerate() {
                        let name = f.output_name().to_string();
                        if features.contains_key(&name) {
                            return Err(PipelineError::spec(
                                format!("ops[{i}].features[{j}].name"),
                                format!("feature name `{name}` is used twice"),
                            ));
                        }
                        let kind = match f.dtype {
                            FeatureType::Bytes => {
                                if !f.shape.is_empty() {
                                    return Err(PipelineError::spec(
                                        format!("ops[{i}].features[{j}].shape"),
                                        "bytes features have no shape",
                                    ));
                                }
                                FeatureKind::Bytes
                            }
                            FeatureType::Int64 | FeatureType::Float => {
                                if f.shape.contains(&0) {
                                    return Err(PipelineError::spec(
                                        format!("ops[{i}].features[{j}].shape"),
                                        "dimensions must be at least 1",
                                    ));
                                }
                                FeatureKind::Tensor {
                                    dtype: if f.dtype == FeatureType::Int64 {
                                        DType::Int64
                                    } else {
                                        DType::Float32
                                    },
                                    shape: f.shape.iter().map(|&d| Some(d)).collect(),
                                }
                            }
                        };
                        features.insert(name, kind);
                    }
                }
                OpSpec::DecodeJpeg { feature, channels } => {
                    match lookup(&features, feature, &at("feature"))? {
                        FeatureKind::Bytes => {}
                        other => {
                            return Err(PipelineError::spec(
                                at("feature"),
                                format!(
                                    "decode_jpeg needs a bytes feature; `{feature}` is {other}"
                                ),
                            ));
                        }
                    }
                    if *channels != 1 && *channels != 3 {
                        return Err(PipelineError::spec(
                            at("channels"),
                            format!("must be 1 or 3, not {channels}"),
                        ));
                    }
                    features.insert(
                        feature.clone(),
                        FeatureKind::Tensor {
                            dtype: DType::Uint8,
                            shape: vec![None, None, Some(usize::from(*channels))],
                        },
                    );
                }
                OpSpec::RandomCrop {
                    feature,
                    area,
                    aspect_ratio,
                    attempts,
                } => {
                    expect_image(&features, feature, &at("feature"), "random_crop")?;
                    let [lo, hi] = *area;
                    if !(lo > 0.0 && lo <= hi && hi <= 1.0) {
                        return Err(PipelineError::spec(
                            at("area"),
                            format!("must satisfy 0 < min <= max <= 1, got [{lo}, {hi}]"),
                        ));
                    }
                    let [lo, hi] = *aspect_ratio;
                    if !(lo > 0.0 && lo <= hi && hi.is_finite()) {
                        return Err(PipelineError::spec(
                            at("aspect_ratio"),
                            format!("must satisfy 0 < min <= max, got [{lo}, {hi}]"),
                        ));
                    }
                    if *attempts == 0 {
                        return Err(PipelineError::spec(at("attempts"), "must be at least 1"));
                    }
                    check_at_most(at("attempts"), *attempts, limits::MAX_CROP_ATTEMPTS)?;
                    let c = image_channels(&features, feature);
                    features.insert(
                        feature.clone(),
                        FeatureKind::Tensor {
                            dtype: DType::Uint8,
                            shape: vec![None, None, c],
                        },
                    );
                }
                OpSpec::RandomFlip {
                    feature,
                    probability,
                } => {
                    expect_image(&features, feature, &at("feature"), "random_flip")?;
                    if !(0.0..=1.0).contains(probability) {
                        return Err(PipelineError::spec(
                            at("probability"),
                            format!("must be in [0, 1], got {probability}"),
                        ));
                    }
                }
                OpSpec::Resize {
                    feature,
                    height,
                    width,
                } => {
                    expect_image(&features, feature, &at("feature"), "resize")?;
                    for (name, v) in [("height", height), ("width", width)] {
                        if *v == 0 || *v > MAX_IMAGE_SIDE {
                            return Err(PipelineError::spec(
                                at(name),
                                format!("must be in 1..={MAX_IMAGE_SIDE}, got {v}"),
                            ));
                        }
                    }
                    let c = image_channels(&features, feature);
                    let values = u64::from(*height) * u64::from(*width) * c.map_or(1, |c| c as u64);
                    check_at_most(
                        format!("ops[{i}].height x width x channels"),
                        values,
                        limits::MAX_RESIZE_VALUES,
                    )?;
                    features.insert(
                        feature.clone(),
                        FeatureKind::Tensor {
                            dtype: DType::Uint8,
                            shape: vec![Some(*height as usize), Some(*width as usize), c],
                        },
                    );
                }
                OpSpec::Normalize { feature, mean, std } => {
                    expect_image(&features, feature, &at("feature"), "normalize")?;
                    let c = image_channels(&features, feature).unwrap_or(0);
                    if mean.len() != c {
                        return Err(PipelineError::spec(
                            at("mean"),
                            format!("needs {c} values (one per channel), got {}", mean.len()),
                        ));
                    }
                    if std.len() != c {
                        return Err(PipelineError::spec(
                            at("std"),
                            format!("needs {c} values (one per channel), got {}", std.len()),
                        ));
                    }
                    if let Some(bad) = std.iter().find(|s| !(**s > 0.0 && s.is_finite())) {
                        return Err(PipelineError::spec(
                            at("std"),
                            format!("values must be positive and finite, got {bad}"),
                        ));
                    }
                    if let Some(bad) = mean.iter().find(|m| !m.is_finite()) {
                        return Err(PipelineError::spec(
                            at("mean"),
                            format!("values must be finite, got {bad}"),
                        ));
                    }
                    if let Some(FeatureKind::Tensor { dtype, .. }) = features.get_mut(feature) {
                        *dtype = DType::Float32;
                    }
                }
                OpSpec::Cast { feature, dtype } => {
                    let from = match lookup(&features, feature, &at("feature"))? {
                        FeatureKind::Tensor { dtype, .. } => *dtype,
                        FeatureKind::Bytes => {
                            return Err(PipelineError::spec(
                                at("feature"),
                                format!("cannot cast bytes feature `{feature}`; decode it first"),
                            ));
                        }
                    };
                    let allowed = from == *dtype
                        || matches!(
                            (from, dtype),
                            (DType::Uint8, DType::Int64 | DType::Float32)
                                | (DType::Int64, DType::Float32)
                        );
                    if !allowed {
                        return Err(PipelineError::spec(
                            at("dtype"),
                            format!("cannot cast {from} to {dtype} (only widening casts)"),
                        ));
                    }
                    if let Some(FeatureKind::Tensor { dtype: d, .. }) = features.get_mut(feature) {
                        *d = *dtype;
                    }
                }
                OpSpec::Cache => {
                    if let Some(prev) = seen_cache {
                        return Err(PipelineError::spec(
                            at("op"),
                            format!("a pipeline has one cache point; ops[{prev}] is already one"),
                        ));
                    }
                    if let Some((j, name)) = first_random {
                        return Err(PipelineError::spec(
                            at("op"),
                            format!(
                                "random op `{name}` at ops[{j}] stands before the cache point; \
                                 the cached prefix must be deterministic"
                            ),
                        ));
                    }
                    seen_cache = Some(i);
                }
                OpSpec::Batch { size, .. } => {
                    if i != last {
                        return Err(PipelineError::spec(at("op"), "batch must be the last op"));
                    }
                    if *size == 0 {
                        return Err(PipelineError::spec(at("size"), "must be at least 1"));
                    }
                    check_at_most(at("size"), *size, limits::MAX_BATCH_SIZE)?;
                    for out in &self.outputs {
                        if let Some(kind @ FeatureKind::Tensor { shape, .. }) = features.get(out)
                            && shape.iter().any(Option::is_none)
                        {
                            return Err(PipelineError::spec(
                                at("op"),
                                format!(
                                    "output `{out}` has a per-record shape ({kind}) and cannot be \
                                     batched; add a resize before batch"
                                ),
                            ));
                        }
                    }
                    let example_bytes: u64 = self
                        .outputs
                        .iter()
                        .filter_map(|out| match features.get(out) {
                            Some(FeatureKind::Tensor { dtype, shape }) => Some(
                                shape.iter().flatten().map(|&d| d as u64).product::<u64>()
                                    * dtype.size() as u64,
                            ),
                            _ => None,
                        })
                        .sum();
                    check_at_most(
                        format!("ops[{i}].size x example bytes"),
                        u64::from(*size).saturating_mul(example_bytes),
                        limits::MAX_BATCH_BYTES,
                    )?;
                }
            }
        }
        if self.outputs.is_empty() {
            return Err(PipelineError::spec(
                "outputs",
                "must name at least one feature",
            ));
        }
        for (i, out) in self.outputs.iter().enumerate() {
            let field = format!("outputs[{i}]");
            match lookup(&features, out, &field)? {
                FeatureKind::Bytes => {
                    return Err(PipelineError::spec(
                        field,
                        format!("`{out}` is still encoded bytes; outputs must be tensors"),
                    ));
                }
                FeatureKind::Tensor { .. } => {}
            }
            if self.outputs[..i].contains(out) {
                return Err(PipelineError::spec(
                    field,
                    format!("`{out}` is listed twice"),
                ));
            }
        }
        Ok(features)
    }
}

impl PipelineSpec {
    /// The bounds of the spec's lists, names and numeric shapes (the per-op bounds are checked
    /// where `infer_features` checks each op). Runs before anything else reads these.
    pub(crate) fn check_bounds(&self) -> Result<()> {
        check_at_most(
            "source.files (count)",
            self.source.files.len(),
            limits::MAX_SPEC_FILES,
        )?;
        for (i, f) in self.source.files.iter().enumerate() {
            check_at_most(
                format!("source.files[{i}] (bytes)"),
                f.len(),
                limits::MAX_PATH_BYTES,
            )?;
        }
        check_at_most(
            "source.split_records",
            self.source.split_records,
            limits::MAX_SPLIT_RECORDS,
        )?;
        if let Some(name) = &self.name {
            check_at_most("name (bytes)", name.len(), limits::MAX_NAME_BYTES)?;
        }
        check_at_most("ops (count)", self.ops.len(), limits::MAX_OPS)?;
        check_at_most("outputs (count)", self.outputs.len(), limits::MAX_FEATURES)?;
        for (i, out) in self.outputs.iter().enumerate() {
            check_at_most(
                format!("outputs[{i}] (bytes)"),
                out.len(),
                limits::MAX_NAME_BYTES,
            )?;
        }
        for (i, op) in self.ops.iter().enumerate() {
            let OpSpec::ParseExample { features } = op else {
                continue;
            };
            check_at_most(
                format!("ops[{i}].features (count)"),
                features.len(),
                limits::MAX_FEATURES,
            )?;
            for (j, f) in features.iter().enumerate() {
                let at = |field: &str| format!("ops[{i}].features[{j}].{field}");
                check_at_most(at("key (bytes)"), f.key.len(), limits::MAX_NAME_BYTES)?;
                check_at_most(
                    at("name (bytes)"),
                    f.output_name().len(),
                    limits::MAX_NAME_BYTES,
                )?;
                let values = f
                    .shape
                    .iter()
                    .try_fold(1usize, |n, &d| n.checked_mul(d))
                    .unwrap_or(usize::MAX);
                check_at_most(at("shape (values)"), values, limits::MAX_FEATURE_VALUES)?;
            }
        }
        Ok(())
    }
}

fn lookup<'a>(
    features: &'a BTreeMap<String, FeatureKind>,
    name: &str,
    field: &str,
) -> Result<&'a FeatureKind> {
    features.get(name).ok_or_else(|| {
        let known: Vec<&str> = features.keys().map(String::as_str).collect();
        PipelineError::spec(
            field,
            format!(
                "no feature named `{name}` at this point; available: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        )
    })
}

fn expect_image(
    features: &BTreeMap<String, FeatureKind>,
    name: &str,
    field: &str,
    op: &str,
) -> Result<()> {
    match lookup(features, name, field)? {
        FeatureKind::Tensor {
            dtype: DType::Uint8,
            shape,
        } if shape.len() == 3 => Ok(()),
        other => Err(PipelineError::spec(
            field,
            format!(
                "{op} needs a decoded uint8 image [height, width, channels]; `{name}` is {other}"
            ),
        )),
    }
}

fn image_channels(features: &BTreeMap<String, FeatureKind>, name: &str) -> Option<usize> {
    match features.get(name) {
        Some(FeatureKind::Tensor { shape, .. }) => shape.get(2).copied().flatten(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patterns::name_matcher;

    const GOOD: &str = r#"
outputs = ["image", "label"]
[source]
files = ["data-*"]
split_records = 10
[[ops]]
op = "parse_example"
features = [
  { key = "image/encoded", dtype = "bytes", name = "image" },
  { key = "image/class/label", dtype = "int64", name = "label" },
]
[[ops]]
op = "decode_jpeg"
feature = "image"
[[ops]]
op = "cache"
[[ops]]
op = "random_crop"
feature = "image"
[[ops]]
op = "random_flip"
feature = "image"
[[ops]]
op = "resize"
feature = "image"
height = 8
width = 8
[[ops]]
op = "normalize"
feature = "image"
mean = [0.5, 0.5, 0.5]
std = [0.25, 0.25, 0.25]
[[ops]]
op = "batch"
size = 4
"#;

    fn dir_with_files() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for n in ["data-1", "data-0", "other"] {
            std::fs::write(dir.path().join(n), b"").unwrap();
        }
        dir
    }

    fn parse(text: &str) -> Result<PipelineSpec> {
        let dir = dir_with_files();
        PipelineSpec::from_toml(text, dir.path())
    }

    fn spec_error(text: &str) -> (String, String) {
        match parse(text) {
            Err(PipelineError::Spec { field, reason }) => (field, reason),
            other => panic!("expected a spec error, got {other:?}"),
        }
    }

    #[test]
    fn good_spec_resolves_and_round_trips_through_json() {
        let dir = dir_with_files();
        let spec = PipelineSpec::from_toml(GOOD, dir.path()).unwrap();
        assert_eq!(spec.source.files.len(), 2);
        assert!(spec.source.files[0].ends_with("data-0"));
        assert_eq!(spec.cache_point(), Some(2));
        assert_eq!(spec.batch(), Some((4, false)));
        let json = spec.to_canonical_json();
        assert_eq!(PipelineSpec::from_json(&json).unwrap(), spec);
    }

    #[test]
    fn unknown_op_is_named() {
        let (field, reason) =
            spec_error(&GOOD.replace("op = \"random_flip\"", "op = \"random_flop\""));
        assert_eq!(field, "ops[4].op");
        assert!(reason.contains("unknown op `random_flop`"), "{reason}");
    }

    #[test]
    fn missing_feature_is_named() {
        let (field, reason) = spec_error(&GOOD.replace(
            "op = \"resize\"\nfeature = \"image\"",
            "op = \"resize\"\nfeature = \"img\"",
        ));
        assert_eq!(field, "ops[5].feature");
        assert!(reason.contains("no feature named `img`"), "{reason}");
        assert!(reason.contains("image, label"), "{reason}");
    }

    #[test]
    fn bad_parameters_are_named() {
        let (field, reason) = spec_error(&GOOD.replace("height = 8", "height = 0"));
        assert_eq!(field, "ops[5].height");
        assert!(reason.contains("1..="), "{reason}");
        let (field, _) =
            spec_error(&GOOD.replace("std = [0.25, 0.25, 0.25]", "std = [0.25, 0.0, 0.25]"));
        assert_eq!(field, "ops[6].std");
        let (field, _) = spec_error(&GOOD.replace("mean = [0.5, 0.5, 0.5]", "mean = [0.5]"));
        assert_eq!(field, "ops[6].mean");
        let (field, reason) = spec_error(&GOOD.replace(
            "op = \"random_crop\"\nfeature = \"image\"",
            "op = \"random_crop\"\nfeature = \"image\"\naera = [0.1, 1.0]",
        ));
        assert_eq!(field, "ops[3]");
        assert!(reason.contains("aera"), "{reason}");
        let (field, _) = spec_error(&GOOD.replace("split_records = 10", "split_records = 0"));
        assert_eq!(field, "source.split_records");
        let (field, reason) = spec_error(&GOOD.replace("data-*", "nothing-*"));
        assert_eq!(field, "source.files[0]");
        assert!(reason.contains("matches no file"), "{reason}");
    }

    #[test]
    fn random_op_before_cache_is_rejected() {
        let text = GOOD.replace("[[ops]]\nop = \"cache\"\n", "").replace(
            "[[ops]]\nop = \"resize\"",
            "[[ops]]\nop = \"cache\"\n[[ops]]\nop = \"resize\"",
        );
        let (field, reason) = spec_error(&text);
        assert_eq!(field, "ops[4].op");
        assert!(
            reason.contains("random op `random_crop` at ops[2]"),
            "{reason}"
        );
        assert!(reason.contains("before the cache point"), "{reason}");
    }

    #[test]
    fn batch_needs_fixed_shapes_and_outputs_must_exist() {
        let (field, reason) = spec_error(&GOOD.replace(
            "[[ops]]\nop = \"resize\"\nfeature = \"image\"\nheight = 8\nwidth = 8\n",
            "",
        ));
        assert_eq!(field, "ops[6].op");
        assert!(reason.contains("add a resize"), "{reason}");
        let (field, _) = spec_error(&GOOD.replace(
            "outputs = [\"image\", \"label\"]",
            "outputs = [\"image\", \"lbl\"]",
        ));
        assert_eq!(field, "outputs[1]");
    }

    fn wildcard_match(pattern: &str, name: &str) -> bool {
        name_matcher(pattern).unwrap().is_match(name)
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("train-*", "train-00001-of-00002"));
        assert!(wildcard_match("*-of-*", "train-00001-of-00002"));
        assert!(wildcard_match("a?c", "abc"));
        assert!(!wildcard_match("a?c", "abbc"));
        assert!(!wildcard_match("train-*", "MANIFEST"));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("*", ".hidden"));
        assert!(wildcard_match("*.tfrecord", "a.b.tfrecord"));
        assert!(!wildcard_match("*.tfrecord", "a.tfrecord.tmp"));
        // Only `*` and `?` are wildcards: brackets, braces and backslashes are literal.
        assert!(wildcard_match("[ab]-*", "[ab]-1"));
        assert!(!wildcard_match("[ab]-*", "a-1"));
        assert!(wildcard_match("{x,y}?", "{x,y}1"));
        assert!(!wildcard_match("{x,y}?", "x1"));
        assert!(wildcard_match("a\\b*", "a\\bc"));
        assert!(wildcard_match("]!*", "]!z"));
    }

    #[test]
    fn expanding_a_pattern_lists_matching_files_sorted() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["train-2", "train-10", "train-1", "eval-1"] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        std::fs::create_dir(dir.path().join("train-dir")).unwrap();
        let names = |pattern: &str| -> Vec<String> {
            expand_pattern(&dir.path().join(pattern))
                .unwrap()
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(names("train-*"), ["train-1", "train-10", "train-2"]);
        assert_eq!(names("*-1"), ["eval-1", "train-1"]);
        assert_eq!(names("train-?"), ["train-1", "train-2"]);
        assert_eq!(names("train-1"), ["train-1"]);
        assert!(
            names("train-3").is_empty(),
            "a path without wildcards must exist"
        );
        assert!(names("test-*").is_empty());
        let err = expand_pattern(&dir.path().join("t*").join("train-1")).unwrap_err();
        assert!(err.contains("last path component"), "{err}");
    }
}
